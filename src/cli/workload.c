/* workload.c - a model with random weights and in-memory batches, for
 * `nnopt bench` and `nnopt profile`: the library trainer's step (the seed
 * recipe's SGD) on batches held in memory. With a data directory they are
 * the training set's first batches, normalized as training normalizes them
 * and cycled (bench/torch_model_bench.py --data feeds PyTorch the same ones):
 * a random batch makes some libraries slower than real data does. */
#include "cli/cli.h"

#include <stdlib.h>

/* The first num_batches x batch samples of the training set in dir. */
static int load_batches(cli_workload *w, const char *model, const char *dir) {
    nn_dataset d = {0};
    if (nn_dataset_load_dir(w->ctx, dir, "train", &d) ||
        cli_check_data(w->ctx, model, w->net, &d, dir)) {
        nn_dataset_free(&d);
        return 1;
    }
    if (d.n < w->batch) {
        nn_ctx_fail(w->ctx, NN_EINVAL, "%s: %lld training images, fewer than one batch of %d",
                    dir, (long long)d.n, w->batch);
        nn_dataset_free(&d);
        return 1;
    }
    const int64_t fit = d.n / w->batch;
    w->num_batches = fit < CLI_WORKLOAD_BATCHES ? (int)fit : CLI_WORKLOAD_BATCHES;
    const int64_t count = (int64_t)w->num_batches * w->batch;
    w->x = malloc((size_t)count * w->per * sizeof(float));
    w->y = malloc((size_t)count * sizeof(int32_t));
    if (!w->x || !w->y) {
        nn_dataset_free(&d);
        nn_ctx_fail(w->ctx, NN_ENOMEM, "out of memory for %d batches", w->num_batches);
        return 1;
    }
    const nn_normalize norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};
    nn_dataset_gather(&d, NULL, 0, count, &norm, w->x, w->y);
    nn_dataset_free(&d);
    return 0;
}

int cli_workload_new(cli_workload *w, const cli_env *env, const char *model, const char *params,
                     const char *data, int batch, int threads, nn_precision precision) {
    *w = (cli_workload){0};
    w->ctx = cli_ctx_new(env, threads);
    w->batch = batch;
    if (!w->ctx) return 1;
    nn_ctx_set_precision(w->ctx, precision);
    if (cli_net_load(w->ctx, model, params, &w->net) || nn_net_plan(w->net, batch)) return 1;
    nn_rng rng;
    nn_rng_seed(&rng, 1, 1);
    nn_net_init_params(w->net, &rng);
    nn_train_config cfg = nn_train_config_defaults();
    cfg.batch = batch;
    if (nn_trainer_new(w->net, &cfg, NULL, NULL, NULL, &w->trainer)) return 1;
    nn_shape in = nn_net_input_shape(w->net);
    const size_t per = (size_t)nn_shape_numel(&in);
    w->per = per;
    if (data) return load_batches(w, model, data);
    w->num_batches = 1;
    w->x = malloc((size_t)batch * per * sizeof(float));
    w->y = malloc((size_t)batch * sizeof(int32_t));
    if (!w->x || !w->y) {
        nn_ctx_fail(w->ctx, NN_ENOMEM, "out of memory for the batch");
        return 1;
    }
    /* normalized-looking pixels: (u - 0.286) / 0.353 */
    for (size_t i = 0; i < (size_t)batch * per; i++)
        w->x[i] = (nn_rng_uniform(&rng) - 0.286f) / 0.353f;
    int classes = nn_net_num_classes(w->net);
    for (int i = 0; i < batch; i++) w->y[i] = (int32_t)nn_rng_below(&rng, (uint32_t)classes);
    return 0;
}

int cli_workload_step(cli_workload *w) {
    const size_t at = (size_t)w->next * (size_t)w->batch;
    w->next = (w->next + 1) % w->num_batches;
    return nn_trainer_step_batch(w->trainer, w->x + at * w->per, w->y + at, w->batch, NULL) ? 1
                                                                                             : 0;
}

void cli_workload_free(cli_workload *w) {
    free(w->x);
    free(w->y);
    nn_trainer_free(w->trainer);
    nn_net_free(w->net);
    nn_ctx_free(w->ctx);
    *w = (cli_workload){0};
}
