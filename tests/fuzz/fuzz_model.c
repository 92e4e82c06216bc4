/*
 * fuzz_model.c - libFuzzer harness of the model-file reader (nn_net_load:
 * comments, blocks, `use`/`repeat`, $parameters, layer lines, shapes).
 * The input is written to a file and loaded as the CLI loads one. A model
 * that loads must also load again from its expanded text (nn_net_model_text)
 * with the same layers and parameter count; a failure must leave a one-line
 * message naming the file.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nn_ctx *ctx = fuzz_ctx();
    const char *path = fuzz_path("model.nn");
    fuzz_write(path, data, size);
    nn_ctx_clear_error(ctx);
    nn_net *net = NULL;
    if (nn_net_load(ctx, path, &net) != NN_OK) {
        if (net) fuzz_die("nn_net_load failed but returned a net", path);
        fuzz_check_message(nn_ctx_error(ctx), path);
        return 0;
    }

    int layers = nn_net_num_layers(net);
    for (int i = 0; i < layers; i++) {
        nn_layer_info info;
        nn_net_layer_info(net, i, &info);
    }
    for (int p = 0; p < nn_net_num_param_tensors(net); p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        if (nn_net_find_param(net, info->name) != p) fuzz_die("parameter not found by name", info->name);
    }

    /* the expanded text builds the same graph */
    nn_net *again = NULL;
    if (nn_net_parse(ctx, nn_net_model_text(net), "expanded", &again) != NN_OK)
        fuzz_die("the expanded model does not load", nn_ctx_error(ctx));
    if (nn_net_num_layers(again) != layers || nn_net_num_params(again) != nn_net_num_params(net) ||
        nn_net_num_buffers(again) != nn_net_num_buffers(net))
        fuzz_die("the expanded model differs", path);
    nn_net_free(again);
    nn_net_free(net);
    return 0;
}
