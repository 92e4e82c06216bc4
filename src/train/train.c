/* train.c - one plain SGD-style epoch (no accumulation, clipping or schedule):
 * the building block of `nnopt compare`; `nnopt train` runs its own loop with
 * every option. */
#include "core/graph.h"

#include <math.h>

nn_status nn_train_epoch(nn_net *net, nn_optimizer *opt, const nn_dataset *d,
                         const int64_t *perm, int batch, const nn_normalize *norm, float *x,
                         int32_t *y, double *mean_loss) {
    double sum = 0.0;
    for (int64_t first = 0; first < d->n; first += batch) {
        int n = (int)(d->n - first < batch ? d->n - first : batch);
        nn_dataset_gather(d, perm ? perm + first : NULL, perm ? 0 : first, n, norm, x, y);
        float loss;
        nn_net_zero_grad(net);
        nn_status st = nn_net_forward(net, x, y, n, &loss);
        if (st) return st;
        if (!isfinite(loss))
            return nn_ctx_fail(net->ctx, NN_ENUMERIC, "%s: loss is not finite at sample %lld",
                               net->source, (long long)first);
        if ((st = nn_net_backward(net))) return st;
        nn_optim_step(opt, net->ctx, nn_net_params(net), nn_net_grads(net));
        sum += (double)loss * n;
    }
    *mean_loss = d->n ? sum / (double)d->n : 0.0;
    return NN_OK;
}
