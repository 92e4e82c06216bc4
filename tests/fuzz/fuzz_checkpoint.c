/*
 * fuzz_checkpoint.c - libFuzzer harness of the safetensors reader and the
 * checkpoint loader (nn_checkpoint_load into a small net, FUZZ_CKPT_MODEL).
 * Input: one mode byte (FUZZ_CKPT_*: weights only, or a resume into SGD with
 * momentum or Adam with a train state), then the file. A failed load must
 * leave a one-line message naming the file.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fresh net and optimizer per input: a load that succeeds changes them. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return -1;
    int mode = data[0] % FUZZ_CKPT_MODES;
    nn_ctx *ctx = fuzz_ctx();
    const char *path = fuzz_path("checkpoint.safetensors");
    fuzz_write(path, data + 1, size - 1);

    nn_net *net = NULL;
    if (nn_net_parse(ctx, FUZZ_CKPT_MODEL, "fuzz", &net) != NN_OK)
        fuzz_die("the harness model does not load", nn_ctx_error(ctx));
    nn_optimizer *opt = NULL;
    if (mode != FUZZ_CKPT_WEIGHTS) {
        nn_optim_config cfg = nn_optim_defaults(mode == FUZZ_CKPT_SGD ? NN_OPTIM_SGD : NN_OPTIM_ADAM);
        cfg.momentum = 0.9f;
        if (nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt) != NN_OK)
            fuzz_die("nn_optim_new", nn_ctx_error(ctx));
    }
    nn_train_state st;
    memset(&st, 0, sizeof st);
    nn_ctx_clear_error(ctx);
    nn_status s = nn_checkpoint_load(ctx, path, net, opt, opt ? &st : NULL);
    if (s != NN_OK) fuzz_check_message(nn_ctx_error(ctx), path);

    /* the same file through the plain safetensors reader */
    nn_st_file *f = NULL;
    nn_ctx_clear_error(ctx);
    if (nn_safetensors_open(ctx, path, &f) == NN_OK) {
        if (s == NN_OK && !f) fuzz_die("nn_safetensors_open returned no file", path);
        for (int i = 0; i < nn_safetensors_count(f); i++) {
            const nn_st_tensor *t = nn_safetensors_get(f, i);
            if (nn_safetensors_find(f, t->name) != t) fuzz_die("tensor not found by name", t->name);
            int64_t n = nn_shape_numel(&t->shape);
            volatile float sum = 0;
            for (int64_t k = 0; k < n; k++) sum += t->data[k]; /* every byte readable */
            (void)sum;
        }
        nn_safetensors_meta(f, "format_version");
        nn_safetensors_close(f);
    } else {
        if (s == NN_OK) fuzz_die("checkpoint loaded but the safetensors reader refuses it", path);
        fuzz_check_message(nn_ctx_error(ctx), path);
    }
    nn_optim_free(opt);
    nn_net_free(net);
    return 0;
}
