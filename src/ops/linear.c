/*
 * linear.c - fully connected layer, y = x W^T + b with W (out, in) as PyTorch:
 * definition and CPU kernels (GEMMs split across threads by rows).
 */
#include "ops/ops.h"

static nn_status linear_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    nn_linear_desc *d = &node->d.linear;
    nn_status st;
    int bias;
    if ((st = nn_kv_int(kv, "out", 0, 1, &d->out)) || (st = nn_kv_int(kv, "bias", 1, 0, &bias)))
        return st;
    if (in->ndim != 1)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: linear needs a flat input; add 'flatten' before it (input "
                           "has %d dimensions)",
                           kv->source, kv->line, in->ndim);
    if (d->out <= 0 || d->out > (1 << 24))
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: linear out=%d: expected 1..%d outputs",
                           kv->source, kv->line, d->out, 1 << 24);
    if (bias != 0 && bias != 1)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: linear bias=%d: expected 0 or 1",
                           kv->source, kv->line, bias);
    if (in->dim[0] > (1 << 24))
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: linear input of %lld features is too large",
                           kv->source, kv->line, (long long)in->dim[0]);
    d->in = (int)in->dim[0];
    d->has_bias = bias;
    node->out = (nn_shape){1, {d->out, 0, 0, 0}};
    node->num_params = bias ? 2 : 1;
    node->param_shape[0] = (nn_shape){2, {d->out, d->in, 0, 0}};
    node->param_suffix[0] = "weight";
    node->param_shape[1] = (nn_shape){1, {d->out, 0, 0, 0}};
    node->param_suffix[1] = "bias";
    node->param_fan_in = d->in;
    return NN_OK;
}

static int64_t linear_flops(const nn_node *node) {
    return 2LL * node->d.linear.in * node->d.linear.out;
}

/* the weight gradient costs one forward pass, the input gradient another */
static int64_t linear_backward_flops(const nn_node *node) {
    return (node->needs_dx & 1u ? 2 : 1) * linear_flops(node);
}

static int linear_fuse_epilogue(nn_node *node, nn_epilogue e) {
    if (e != NN_EPILOGUE_RELU) return 0;
    node->d.linear.relu = 1;
    return 1;
}


void nn_linear_forward(float *y, const float *x, const float *w, const float *b,
                       const nn_linear_desc *d, int n, nn_ctx *ctx) {
    if (b)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < d->out; o++) y[(size_t)i * d->out + o] = b[o];
    nn_sgemm_parallel(ctx, 0, 1, n, d->out, d->in, 1.0f, x, d->in, w, d->in, b ? 1.0f : 0.0f, y,
                      d->out);
    if (d->relu)
        for (size_t j = 0; j < (size_t)n * d->out; j++) {
            float v = y[j];
            y[j] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN passes, as in PyTorch */
        }
}

void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const float *x, const float *w, const nn_linear_desc *d, int n, float *ws,
                        nn_ctx *ctx) {
    if (d->relu) {
        for (size_t j = 0; j < (size_t)n * d->out; j++) {
            float g = dy[j];
            ws[j] = y[j] > 0.0f ? g : 0.0f;
        }
        dy = ws;
    }
    if (dx) nn_sgemm_parallel(ctx, 0, 0, n, d->in, d->out, 1.0f, dy, d->out, w, d->in, 0.0f, dx, d->in);
    nn_sgemm_parallel(ctx, 1, 0, d->out, d->in, n, 1.0f, dy, d->out, x, d->in, 1.0f, dw, d->in);
    if (db)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < d->out; o++) db[o] += dy[(size_t)i * d->out + o];
}

static void linear_fwd(const nn_op_args *a) {
    nn_linear_forward(a->y, a->x, a->w, a->b, &a->node->d.linear, a->n, a->ctx);
}

static void linear_bwd(const nn_op_args *a) {
    nn_linear_backward(a->dx, a->dw, a->db, a->dy, a->y, a->x, a->w, &a->node->d.linear, a->n,
                       a->ws, a->ctx);
}

static size_t linear_ws(const nn_node *node, int max_batch, int threads) {
    (void)threads;
    return node->d.linear.relu ? (size_t)max_batch * node->d.linear.out : 0;
}

static const nn_op_kernels linear_cpu = {.forward = linear_fwd, .backward = linear_bwd, .workspace = linear_ws};

const nn_op_def nn_linear_def = {
    .name = "linear",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "out bias",
    .configure = linear_configure,
    .flops = linear_flops,
    .kernels = {[NN_KERNELS_CPU] = &linear_cpu, NN_CUDA_KERNELS(linear)},
    .backward_flops = linear_backward_flops,
    .fuse_epilogue = linear_fuse_epilogue,
};
