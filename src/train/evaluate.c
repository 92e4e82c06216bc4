/* evaluate.c - mean loss and accuracy of a network over a data set, in eval
 * mode (batchnorm uses its running statistics); the caller's mode is restored. */
#include "core/graph.h"
#include "backend/backend.h"

#include <stdlib.h>

nn_status nn_evaluate(nn_net *net, const nn_dataset *d, const nn_normalize *norm, int batch,
                      float *x_buf, int32_t *y_buf, double *loss, double *accuracy) {
    if (batch <= 0 || batch > net->max_batch) batch = net->max_batch;
    double loss_sum = 0.0;
    int64_t correct = 0;
    const int classes = nn_net_num_classes(net);
    const int was_training = nn_net_training(net);
    /* the logits come back to the host for the accuracy */
    float *z = malloc((size_t)batch * (size_t)classes * sizeof(float));
    if (!z) return nn_ctx_fail(net->ctx, NN_ENOMEM, "out of memory for %d logits", batch * classes);
    nn_net_set_training(net, 0);
    for (int64_t first = 0; first < d->n; first += batch) {
        int n = (int)(d->n - first < batch ? d->n - first : batch);
        nn_dataset_gather(d, NULL, first, n, norm, x_buf, y_buf);
        float l;
        nn_status st = nn_net_forward(net, x_buf, y_buf, n, &l);
        if (st) {
            nn_net_set_training(net, was_training);
            free(z);
            return st;
        }
        loss_sum += (double)l * n;
        nn_dev_download(net->ctx->backend, z, nn_net_logits(net),
                        (size_t)n * (size_t)classes * sizeof(float));
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int c = 1; c < classes; c++)
                if (z[(size_t)i * classes + c] > z[(size_t)i * classes + best]) best = c;
            correct += best == y_buf[i];
        }
    }
    nn_net_set_training(net, was_training);
    free(z);
    *loss = d->n ? loss_sum / (double)d->n : 0.0;
    *accuracy = d->n ? (double)correct / (double)d->n : 0.0;
    return NN_OK;
}
