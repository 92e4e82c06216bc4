/* cmd_eval.c - `nnopt eval MODEL --weights FILE`: test loss and accuracy. */
#include "cli/cli.h"

#include <stdlib.h>

int cmd_eval(int argc, char **argv, const cli_env *env) {
    const char *device = NULL;
    const char *weights = NULL, *data = NN_DEFAULT_DATA_DIR, *model_params = NULL;
    int json = 0, batch = 256, threads = 0;
    float mean = NN_FASHION_MNIST_MEAN, std = NN_FASHION_MNIST_STD;
    const cli_opt opts[] = {
        {"--weights", CLI_STR, &weights, "FILE", "safetensors checkpoint to evaluate (required)", 0, 0, NULL},
        {"--params", CLI_STR, &model_params, "K=V,..", "values of the model's parameters (its 'params' line)", 0, 0, NULL},
        {"--data", CLI_STR, &data, "DIR", "directory with the IDX files (default " NN_DEFAULT_DATA_DIR ")", 0, 0, NULL},
        {"--batch", CLI_INT, &batch, "N", "evaluation batch size (default 256)", 1, 65536, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--device", CLI_STR, &device, "DEV", CLI_DEVICE_HELP, 0, 0, NULL},
        {"--mean", CLI_FLOAT, &mean, "M", "normalization mean (default 0.2860)", -1e6, 1e6, NULL},
        {"--std", CLI_FLOAT, &std, "S", "normalization std (default 0.3530)", 1e-9, 1e6, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("eval", "MODEL --weights FILE [options]",
                      "Evaluates saved weights on the test set (t10k files) and prints the\n"
                      "mean loss and accuracy.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    cli_env denv; /* env with --device */
    if (cli_device_env(env, device, &denv)) return 2;
    env = &denv;
    if (npos != 1 || !weights) {
        fprintf(stderr, "nnopt eval: expected MODEL and --weights FILE (see nnopt eval --help)\n");
        return 2;
    }
    nn_ctx *ctx = cli_ctx_new(env, threads);
    nn_net *net = NULL;
    nn_dataset test = {0};
    float *x = NULL;
    int32_t *y = NULL;
    int rc = 1;
    double loss, acc;
    nn_normalize norm = {mean, std};
    if (cli_net_load(ctx, pos[0], model_params, &net) || nn_net_plan(net, batch) ||
        nn_checkpoint_load(ctx, weights, net, NULL, NULL) ||
        nn_dataset_load_dir(ctx, data, "t10k", &test))
        goto fail;
    if (cli_check_data(ctx, pos[0], net, &test, data)) goto fail;
    nn_shape in = nn_net_input_shape(net);
    x = malloc((size_t)batch * (size_t)nn_shape_numel(&in) * sizeof(float));
    y = malloc((size_t)batch * sizeof(int32_t));
    if (!x || !y) {
        nn_ctx_fail(ctx, NN_ENOMEM, "out of memory");
        goto fail;
    }
    if (nn_evaluate(net, &test, &norm, batch, x, y, &loss, &acc)) goto fail;
    if (json)
        printf("{\"test_loss\":%.6f,\"test_accuracy\":%.4f,\"samples\":%lld}\n", loss, 100.0 * acc,
               (long long)test.n);
    else
        printf("test_loss %.4f  test_accuracy %.2f%%  (%lld images)\n", loss, 100.0 * acc,
               (long long)test.n);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    free(x);
    free(y);
    nn_dataset_free(&test);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return rc;
}
