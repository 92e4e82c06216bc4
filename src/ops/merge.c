/*
 * merge.c - layers that join two earlier layers: add (residual connections,
 * y = a + b with equal shapes) and concat (channel concatenation, as
 * torch.cat(dim=1)). Definitions and CPU kernels.
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

static const nn_op_kernels add_cpu = {.forward = add_fwd, .backward = add_bwd};

const nn_op_def nn_add_def = {
    .name = "add",
    .min_inputs = 2,
    .max_inputs = 2,
    .keys = "",
    .configure = add_configure,
    .flops = add_flops,
    .kernels = {[NN_KERNELS_CPU] = &add_cpu},
};

/* concat: inputs C1xHxW and C2xHxW (or flat C1 and C2), output (C1+C2)xHxW */
static nn_status concat_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const nn_shape *a = &in[0], *b = &in[1];
    int same = a->ndim == b->ndim && a->ndim >= 1;
    for (int i = 1; same && i < a->ndim; i++) same = a->dim[i] == b->dim[i];
    if (!same) {
        char sa[64], sb[64];
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: concat needs inputs that differ only in channels (the first "
                           "dimension), got %s and %s",
                           kv->source, kv->line, nn_shape_str(a, sa, sizeof sa),
                           nn_shape_str(b, sb, sizeof sb));
    }
    nn_concat_desc *d = &node->d.concat;
    d->C1 = (int)a->dim[0];
    d->C2 = (int)b->dim[0];
    d->inner = 1;
    for (int i = 1; i < a->ndim; i++) d->inner *= (int)a->dim[i];
    node->out = *a;
    node->out.dim[0] = a->dim[0] + b->dim[0];
    return NN_OK;
}

static int64_t concat_flops(const nn_node *node) { (void)node; return 0; }

/* Each sample's output is a's block then b's: y[i] = (a[i] (C1*inner), b[i] (C2*inner)). */
void nn_concat_forward(float *y, const float *a, const float *b, const nn_concat_desc *d, int n,
                       nn_ctx *ctx) {
    const size_t na = (size_t)d->C1 * (size_t)d->inner, nb = (size_t)d->C2 * (size_t)d->inner;
    const int T = (size_t)n * (na + nb) >= 32768 ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * (na + nb);
        memcpy(yi, a + (size_t)i * na, na * sizeof(float));
        memcpy(yi + na, b + (size_t)i * nb, nb * sizeof(float));
    }
}

void nn_concat_backward(float *da, float *db, const float *dy, const nn_concat_desc *d, int n,
                        nn_ctx *ctx) {
    const size_t na = (size_t)d->C1 * (size_t)d->inner, nb = (size_t)d->C2 * (size_t)d->inner;
    const int T = (size_t)n * (na + nb) >= 32768 ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * (na + nb);
        if (da) memcpy(da + (size_t)i * na, dyi, na * sizeof(float));
        if (db) memcpy(db + (size_t)i * nb, dyi + na, nb * sizeof(float));
    }
}

static void concat_fwd(const nn_op_args *a) {
    nn_concat_forward(a->y, a->x, a->x2, &a->node->d.concat, a->n, a->ctx);
}

static void concat_bwd(const nn_op_args *a) {
    nn_concat_backward(a->dx, a->dx2, a->dy, &a->node->d.concat, a->n, a->ctx);
}

static const nn_op_kernels concat_cpu = {.forward = concat_fwd, .backward = concat_bwd};

const nn_op_def nn_concat_def = {
    .name = "concat",
    .min_inputs = 2,
    .max_inputs = 2,
    .keys = "",
    .configure = concat_configure,
    .flops = concat_flops,
    .kernels = {[NN_KERNELS_CPU] = &concat_cpu},
};
