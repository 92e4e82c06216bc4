/*
 * loss.c - softmax cross-entropy with mean reduction and optional label
 * smoothing (PyTorch's CrossEntropyLoss(label_smoothing=eps)): definition and
 * CPU kernels. Forward keeps the probabilities for backward. The smoothing
 * eps lives in the node descriptor (nn_net_set_label_smoothing), 0 by default.
 */
#include "ops/ops.h"

#include <math.h>

static nn_status softmax_ce_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    if (in->ndim != 1)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: softmax_ce needs flat logits (add 'flatten'/'linear' before it)",
                           kv->source, kv->line);
    if (in->dim[0] < 2)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: softmax_ce needs at least 2 classes",
                           kv->source, kv->line);
    node->d.loss.classes = (int)in->dim[0];
    node->d.loss.smoothing = 0.0f;   /* nn_net_set_label_smoothing changes it */
    node->out = *in;
    return NN_OK;
}

static int64_t softmax_ce_flops(const nn_node *node) { return 4LL * node->d.loss.classes; }


/* Per sample: m = max_c z, logsum = log sum_c exp(z_c - m) (float, as
 * before smoothing existed), nll = logsum - (z_y - m) and, when eps > 0, the
 * uniform part logsum - mean_c (z_c - m) = mean_c(-log p_c) (mean in double). */
float nn_softmax_ce_forward_smooth(float *prob, const float *logits, const int32_t *labels,
                                   int classes, float smoothing, int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;   /* (classes) */
        float *p = prob + (size_t)i * classes;           /* (classes) */
        float m = z[0];
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        float sum = 0.0f;
        for (int c = 0; c < classes; c++) sum += (p[c] = expf(z[c] - m));
        float logsum = logf(sum);
        for (int c = 0; c < classes; c++) p[c] /= sum;
        double li = (double)(logsum - (z[labels[i]] - m));
        if (smoothing != 0.0f) {
            double zsum = 0.0;
            for (int c = 0; c < classes; c++) zsum += (double)(z[c] - m);
            const double uniform = (double)logsum - zsum / classes;
            li = (1.0 - (double)smoothing) * li + (double)smoothing * uniform;
        }
        total += li;
    }
    return (float)(total / n);
}

float nn_softmax_ce_forward(float *prob, const float *logits, const int32_t *labels, int classes,
                            int n) {
    return nn_softmax_ce_forward_smooth(prob, logits, labels, classes, 0.0f, n);
}

/* dlogits = (p - target) / n, target = (1 - eps) onehot(y) + eps / classes;
 * eps = 0 gives target exactly onehot(y). */
void nn_softmax_ce_backward_smooth(float *dlogits, const float *prob, const int32_t *labels,
                                   int classes, float smoothing, int n) {
    const float scale = 1.0f / (float)n;
    const float off = smoothing / (float)classes;
    const float on = 1.0f - smoothing + off;
    for (int i = 0; i < n; i++) {
        const float *p = prob + (size_t)i * classes;   /* (classes) */
        float *g = dlogits + (size_t)i * classes;      /* (classes) */
        for (int c = 0; c < classes; c++) g[c] = (p[c] - (c == labels[i] ? on : off)) * scale;
    }
}

void nn_softmax_ce_backward(float *dlogits, const float *prob, const int32_t *labels,
                            int classes, int n) {
    nn_softmax_ce_backward_smooth(dlogits, prob, labels, classes, 0.0f, n);
}

static void softmax_ce_fwd(const nn_op_args *a) {
    const nn_loss_desc *d = &a->node->d.loss;
    *a->loss = nn_softmax_ce_forward_smooth(a->y, a->x, a->labels, d->classes, d->smoothing, a->n);
}

static void softmax_ce_bwd(const nn_op_args *a) {
    const nn_loss_desc *d = &a->node->d.loss;
    if (a->dx)
        nn_softmax_ce_backward_smooth(a->dx, a->y, a->labels, d->classes, d->smoothing, a->n);
}

static const nn_op_kernels softmax_ce_cpu = {.forward = softmax_ce_fwd, .backward = softmax_ce_bwd};

const nn_op_def nn_softmax_ce_def = {
    .name = "softmax_ce",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = softmax_ce_configure,
    .flops = softmax_ce_flops,
    .kernels = {[NN_KERNELS_CPU] = &softmax_ce_cpu, NN_CUDA_KERNELS(softmax_ce)},
    .is_loss = 1,
};
