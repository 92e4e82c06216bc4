/*
 * loss.c - softmax cross-entropy with mean reduction (PyTorch's
 * CrossEntropyLoss): definition and CPU kernels. Forward keeps the
 * probabilities for backward.
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
    node->out = *in;
    return NN_OK;
}

static int64_t softmax_ce_flops(const nn_node *node) { return 4LL * node->d.loss.classes; }

const nn_op_def nn_softmax_ce_def = {"softmax_ce", 1, "", softmax_ce_configure, softmax_ce_flops};

float nn_softmax_ce_forward(float *prob, const float *logits, const int32_t *labels, int classes,
                            int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        float *p = prob + (size_t)i * classes;
        float m = z[0];
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        float sum = 0.0f;
        for (int c = 0; c < classes; c++) sum += (p[c] = expf(z[c] - m));
        float logsum = logf(sum);
        for (int c = 0; c < classes; c++) p[c] /= sum;
        total += (double)(logsum - (z[labels[i]] - m));
    }
    return (float)(total / n);
}

void nn_softmax_ce_backward(float *dlogits, const float *prob, const int32_t *labels,
                            int classes, int n) {
    const float scale = 1.0f / (float)n;
    for (int i = 0; i < n; i++) {
        const float *p = prob + (size_t)i * classes;
        float *g = dlogits + (size_t)i * classes;
        for (int c = 0; c < classes; c++) g[c] = (p[c] - (c == labels[i] ? 1.0f : 0.0f)) * scale;
    }
}

static void softmax_ce_fwd(const nn_op_args *a) {
    *a->loss = nn_softmax_ce_forward(a->y, a->x, a->labels, a->node->d.loss.classes, a->n);
}

static void softmax_ce_bwd(const nn_op_args *a) {
    if (a->dx) nn_softmax_ce_backward(a->dx, a->y, a->labels, a->node->d.loss.classes, a->n);
}

const nn_op_kernels nn_softmax_ce_cpu = {softmax_ce_fwd, softmax_ce_bwd, NULL};
