/* workload.c - a model with random weights and random in-memory batches, for
 * `nnopt bench` and `nnopt profile`: the training step without the data set. */
#include "cli/cli.h"

#include <stdlib.h>

int cli_workload_new(cli_workload *w, const char *model, int batch, int threads,
                     nn_precision precision) {
    *w = (cli_workload){0};
    w->ctx = nn_ctx_new(threads);
    w->batch = batch;
    if (!w->ctx) return 1;
    nn_ctx_set_precision(w->ctx, precision);
    if (nn_net_load(w->ctx, model, &w->net) || nn_net_plan(w->net, batch)) return 1;
    nn_rng rng;
    nn_rng_seed(&rng, 1, 1);
    nn_net_init_params(w->net, &rng);
    nn_optim_config cfg = {.kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.9f};
    if (nn_optim_new(w->ctx, &cfg, nn_net_num_params(w->net), &w->opt)) return 1;
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
    float loss;
    nn_net_zero_grad(w->net);
    if (nn_net_forward(w->net, w->x, w->y, w->batch, &loss) || nn_net_backward(w->net)) return 1;
    nn_optim_step(w->opt, w->ctx, nn_net_params(w->net), nn_net_grads(w->net));
    return 0;
}

void cli_workload_free(cli_workload *w) {
    free(w->x);
    free(w->y);
    nn_optim_free(w->opt);
    nn_net_free(w->net);
    nn_ctx_free(w->ctx);
    *w = (cli_workload){0};
}
