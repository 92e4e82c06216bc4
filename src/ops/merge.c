/*
 * merge.c - layers that join two earlier layers: add (residual connections,
 * y = a + b with equal shapes). Definition and CPU kernels.
 */
#include "ops/ops.h"

#include <string.h>

static nn_status add_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const nn_shape *a = &in[0], *b = &in[1];
    int same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++) same = a->dim[i] == b->dim[i];
    if (!same) {
        char sa[64], sb[64];
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: add needs inputs of the same shape, got %s and %s",
                           kv->source, kv->line, nn_shape_str(a, sa, sizeof sa),
                           nn_shape_str(b, sb, sizeof sb));
    }
    node->out = *a;
    return NN_OK;
}

static int64_t add_flops(const nn_node *node) { return nn_shape_numel(&node->out); }

const nn_op_def nn_add_def = {"add", 2, "", add_configure, add_flops};

void nn_add_forward(float *y, const float *a, const float *b, size_t count, nn_ctx *ctx) {
    const int T = count >= 32768 ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++)
        for (size_t i = count * t / T; i < count * (t + 1) / T; i++) y[i] = a[i] + b[i];
}

void nn_add_backward(float *da, float *db, const float *dy, size_t count) {
    if (da) memcpy(da, dy, count * sizeof(float));
    if (db) memcpy(db, dy, count * sizeof(float));
}

static void add_fwd(const nn_op_args *a) {
    nn_add_forward(a->y, a->x, a->x2, (size_t)a->n * (size_t)nn_shape_numel(&a->node->out), a->ctx);
}

static void add_bwd(const nn_op_args *a) {
    nn_add_backward(a->dx, a->dx2, a->dy, (size_t)a->n * (size_t)nn_shape_numel(&a->node->out));
}

const nn_op_kernels nn_add_cpu = {add_fwd, add_bwd, NULL};
