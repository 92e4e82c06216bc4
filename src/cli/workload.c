/* workload.c - a model with random weights and random in-memory batches, for
 * `nnopt bench` and `nnopt profile`: the library trainer's step (the seed
 * recipe's SGD) on a batch held in memory. */
#include "cli/cli.h"

#include <stdlib.h>

int cli_workload_new(cli_workload *w, const cli_env *env, const char *model, int batch,
                     int threads, nn_precision precision) {
    *w = (cli_workload){0};
    w->ctx = cli_ctx_new(env, threads);
    w->batch = batch;
    if (!w->ctx) return 1;
    nn_ctx_set_precision(w->ctx, precision);
    if (nn_net_load(w->ctx, model, &w->net) || nn_net_plan(w->net, batch)) return 1;
    nn_rng rng;
    nn_rng_seed(&rng, 1, 1);
    nn_net_init_params(w->net, &rng);
    nn_train_config cfg = nn_train_config_defaults();
    cfg.batch = batch;
    if (nn_trainer_new(w->net, &cfg, NULL, NULL, NULL, &w->trainer)) return 1;
    nn_shape in = nn_net_input_shape(w->net);
    size_t per = (size_t)nn_shape_numel(&in);
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
    return nn_trainer_step_batch(w->trainer, w->x, w->y, w->batch, NULL) ? 1 : 0;
}

void cli_workload_free(cli_workload *w) {
    free(w->x);
    free(w->y);
    nn_trainer_free(w->trainer);
    nn_net_free(w->net);
    nn_ctx_free(w->ctx);
    *w = (cli_workload){0};
}
