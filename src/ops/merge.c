/*
 * merge.c - layers that join two or more earlier layers: add (residual
 * connections, y = a + b + ... with equal shapes) and concat (channel
 * concatenation, as torch.cat(dim=1)). Definitions and CPU kernels.
 */
#include "ops/ops.h"

#include <string.h>

/* below this many elements a parallel region costs more than it saves */
#define PARALLEL_MIN 32768

static nn_status add_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const nn_shape *a = &in[0];
    for (int k = 1; k < node->num_inputs; k++) {
        const nn_shape *b = &in[k];
        int same = a->ndim == b->ndim;
        for (int i = 0; same && i < a->ndim; i++) same = a->dim[i] == b->dim[i];
        if (!same) {
            char sa[64], sb[64];
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: add needs inputs of the same shape, got %s and %s",
                               kv->source, kv->line, nn_shape_str(a, sa, sizeof sa),
                               nn_shape_str(b, sb, sizeof sb));
        }
    }
    node->out = *a;
    return NN_OK;
}

/* one add per element and input after the first */
static int64_t add_flops(const nn_node *node) {
    return (node->num_inputs - 1) * nn_shape_numel(&node->out);
}

/* y = x[0] + x[1] + ... + x[m-1], added left to right as torch's a + b + c */
void nn_add_forward_n(float *y, const float *const *x, int m, size_t count, nn_ctx *ctx) {
    const int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        const size_t lo = count * t / T, hi = count * (t + 1) / T;
        for (size_t i = lo; i < hi; i++) y[i] = x[0][i] + x[1][i];
        for (int k = 2; k < m; k++)
            for (size_t i = lo; i < hi; i++) y[i] += x[k][i];
    }
}

void nn_add_backward_n(float *const *dx, const float *dy, int m, size_t count) {
    for (int k = 0; k < m; k++)
        if (dx[k]) memcpy(dx[k], dy, count * sizeof(float));
}

void nn_add_forward(float *y, const float *a, const float *b, size_t count, nn_ctx *ctx) {
    const float *const x[2] = {a, b};
    nn_add_forward_n(y, x, 2, count, ctx);
}

void nn_add_backward(float *da, float *db, const float *dy, size_t count) {
    float *const dx[2] = {da, db};
    nn_add_backward_n(dx, dy, 2, count);
}

/* With a fused ReLU (a residual block's add + ReLU): the sum and the ReLU
 * in one pass, as relu's forward (NaN passes); each input's gradient is dy
 * where the output is > 0, as relu's backward masks it. */
static void add_relu_forward(float *y, const float *const *x, int m, size_t count, nn_ctx *ctx) {
    const int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        const size_t lo = count * t / T, hi = count * (t + 1) / T;
        const float *a = x[0], *b = x[1];
        if (m == 2) { /* a residual block's add: one vector loop */
            for (size_t i = lo; i < hi; i++) {
                const float v = a[i] + b[i];
                y[i] = (v > 0.0f || v != v) ? v : 0.0f;
            }
            continue;
        }
        for (size_t i = lo; i < hi; i++) y[i] = a[i] + b[i];
        for (int k = 2; k < m; k++)
            for (size_t i = lo; i < hi; i++) y[i] += x[k][i];
        for (size_t i = lo; i < hi; i++) {
            const float v = y[i];
            y[i] = (v > 0.0f || v != v) ? v : 0.0f;
        }
    }
}

static void add_relu_backward(float *const *dx, const float *dy, const float *y, int m,
                              size_t count, nn_ctx *ctx) {
    const int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        const size_t lo = count * t / T, hi = count * (t + 1) / T;
        for (int k = 0; k < m; k++) {
            float *d = dx[k];
            if (!d) continue;
            for (size_t i = lo; i < hi; i++) {
                const float g = dy[i]; /* loaded either way: a blend, vectorized */
                d[i] = y[i] > 0.0f ? g : 0.0f;
            }
        }
    }
}

static void add_fwd(const nn_op_args *a) {
    const size_t count = (size_t)a->n * (size_t)nn_shape_numel(&a->node->out);
    if (a->node->d.add.relu) add_relu_forward(a->y, a->xs, a->node->num_inputs, count, a->ctx);
    else nn_add_forward_n(a->y, a->xs, a->node->num_inputs, count, a->ctx);
}

static void add_bwd(const nn_op_args *a) {
    const size_t count = (size_t)a->n * (size_t)nn_shape_numel(&a->node->out);
    if (a->node->d.add.relu)
        add_relu_backward(a->dxs, a->dy, a->y, a->node->num_inputs, count, a->ctx);
    else nn_add_backward_n(a->dxs, a->dy, a->node->num_inputs, count);
}

static int add_fuse_epilogue(nn_node *node, nn_epilogue e) {
    if (e != NN_EPILOGUE_RELU) return 0;
    node->d.add.relu = 1;
    return 1;
}

static const nn_op_kernels add_cpu = {.forward = add_fwd, .backward = add_bwd};

const nn_op_def nn_add_def = {
    .name = "add",
    .min_inputs = 2,
    .max_inputs = NN_MAX_INPUTS,
    .keys = "",
    .configure = add_configure,
    .flops = add_flops,
    .kernels = {[NN_KERNELS_CPU] = &add_cpu, NN_CUDA_KERNELS(add)},
    .epilogue = NN_EPILOGUE_ADD,
    .fuse_epilogue = add_fuse_epilogue,
};

/* concat: inputs C1xHxW, C2xHxW, ... (or flat C1, C2, ...), output
 * (C1+C2+...)xHxW */
static nn_status concat_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const nn_shape *a = &in[0];
    nn_concat_desc *d = &node->d.concat;
    int64_t channels = 0;
    for (int k = 0; k < node->num_inputs; k++) {
        const nn_shape *b = &in[k];
        int same = a->ndim == b->ndim && a->ndim >= 1;
        for (int i = 1; same && i < a->ndim; i++) same = a->dim[i] == b->dim[i];
        if (!same) {
            char sa[64], sb[64];
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: concat needs inputs that differ only in channels (the "
                               "first dimension), got %s and %s",
                               kv->source, kv->line, nn_shape_str(a, sa, sizeof sa),
                               nn_shape_str(b, sb, sizeof sb));
        }
        d->C[k] = (int)b->dim[0];
        channels += b->dim[0];
    }
    d->count = node->num_inputs;
    d->C1 = d->C[0];
    d->C2 = d->C[1];
    d->inner = 1;
    for (int i = 1; i < a->ndim; i++) d->inner *= (int)a->dim[i];
    node->out = *a;
    node->out.dim[0] = channels;
    return NN_OK;
}

static int64_t concat_flops(const nn_node *node) { (void)node; return 0; }

/* The inputs' channels (into C) and their number. */
static int concat_inputs(const nn_concat_desc *d, int C[NN_MAX_INPUTS]) {
    if (d->count <= 2) {
        C[0] = d->C1, C[1] = d->C2;
        return 2;
    }
    for (int k = 0; k < d->count; k++) C[k] = d->C[k];
    return d->count;
}

/* Each sample's output is the inputs' blocks in order: y[i] = (x0[i] (C0*inner),
 * x1[i] (C1*inner), ...). Backward splits dy the same way; a NULL dx[k]
 * skips input k. */
void nn_concat_forward_n(float *y, const float *const *x, const nn_concat_desc *d, int n,
                         nn_ctx *ctx) {
    int C[NN_MAX_INPUTS];
    const int m = concat_inputs(d, C);
    size_t total = 0;
    for (int k = 0; k < m; k++) total += (size_t)C[k] * (size_t)d->inner;
    const int T = (size_t)n * total >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * total;
        for (int k = 0; k < m; k++) {
            const size_t nk = (size_t)C[k] * (size_t)d->inner;
            memcpy(yi, x[k] + (size_t)i * nk, nk * sizeof(float));
            yi += nk;
        }
    }
}

void nn_concat_backward_n(float *const *dx, const float *dy, const nn_concat_desc *d, int n,
                          nn_ctx *ctx) {
    int C[NN_MAX_INPUTS];
    const int m = concat_inputs(d, C);
    size_t total = 0;
    for (int k = 0; k < m; k++) total += (size_t)C[k] * (size_t)d->inner;
    const int T = (size_t)n * total >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * total;
        for (int k = 0; k < m; k++) {
            const size_t nk = (size_t)C[k] * (size_t)d->inner;
            if (dx[k]) memcpy(dx[k] + (size_t)i * nk, dyi, nk * sizeof(float));
            dyi += nk;
        }
    }
}

void nn_concat_forward(float *y, const float *a, const float *b, const nn_concat_desc *d, int n,
                       nn_ctx *ctx) {
    const float *const x[2] = {a, b};
    nn_concat_desc two = *d;
    two.count = 2;
    nn_concat_forward_n(y, x, &two, n, ctx);
}

void nn_concat_backward(float *da, float *db, const float *dy, const nn_concat_desc *d, int n,
                        nn_ctx *ctx) {
    float *const dx[2] = {da, db};
    nn_concat_desc two = *d;
    two.count = 2;
    nn_concat_backward_n(dx, dy, &two, n, ctx);
}

static void concat_fwd(const nn_op_args *a) {
    nn_concat_forward_n(a->y, a->xs, &a->node->d.concat, a->n, a->ctx);
}

static void concat_bwd(const nn_op_args *a) {
    nn_concat_backward_n(a->dxs, a->dy, &a->node->d.concat, a->n, a->ctx);
}

static const nn_op_kernels concat_cpu = {.forward = concat_fwd, .backward = concat_bwd};

const nn_op_def nn_concat_def = {
    .name = "concat",
    .min_inputs = 2,
    .max_inputs = NN_MAX_INPUTS,
    .keys = "",
    .configure = concat_configure,
    .flops = concat_flops,
    .kernels = {[NN_KERNELS_CPU] = &concat_cpu, NN_CUDA_KERNELS(concat)},
};
