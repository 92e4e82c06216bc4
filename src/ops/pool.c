/*
 * pool.c - max-pooling, average pooling and global average pooling: model-file
 * definitions and CPU kernels. Max-pooling's backward finds
 * each window's maximum again by comparing the input with the output (first
 * maximum, NaN wins, as PyTorch) instead of storing argmax indices: the 2x2
 * case then vectorizes and needs no extra memory.
 */
#include "ops/ops.h"

#include <math.h>
#include <string.h>

/* Window layers (maxpool, avgpool): keys size, stride (default: size), pad
 * (at most half the window); errors name the layer type. */
static nn_status window_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in,
                                  const char *op) {
    nn_pool_desc *d = &node->d.pool;
    nn_status st;
    if (in->ndim != 3)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: %s needs a CxHxW input, got a %d-dimensional one",
                           kv->source, kv->line, op, in->ndim);
    if ((st = nn_kv_pair(kv, "size", 0, 1, &d->R, &d->S))) return st;
    if ((st = nn_kv_pair(kv, "stride", d->R, 0, &d->stride_h, &d->stride_w))) return st;
    if (!nn_kv_str(kv, "stride")) d->stride_w = d->S;
    if ((st = nn_kv_pair(kv, "pad", 0, 0, &d->pad_h, &d->pad_w))) return st;
    d->C = (int)in->dim[0];
    d->H = (int)in->dim[1];
    d->W = (int)in->dim[2];
    if (d->R <= 0 || d->S <= 0 || d->R > 65536 || d->S > 65536)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: %s size=%dx%d: expected 1..65536 on "
                           "each side", kv->source, kv->line, op, d->R, d->S);
    if (d->stride_h <= 0 || d->stride_w <= 0 || d->pad_h < 0 || d->pad_w < 0)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: %s needs stride>0 and pad>=0 (stride=%dx%d, "
                           "pad=%dx%d)", kv->source, kv->line, op, d->stride_h, d->stride_w,
                           d->pad_h, d->pad_w);
    if (d->pad_h > d->R / 2 || d->pad_w > d->S / 2) /* the sums below then fit an int */
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: %s pad must be at most half the window size", kv->source,
                           kv->line, op);
    if (d->R > d->H + 2 * d->pad_h || d->S > d->W + 2 * d->pad_w)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: %s window %dx%d is larger than the padded input %dx%d",
                           kv->source, kv->line, op, d->R, d->S, d->H + 2 * d->pad_h,
                           d->W + 2 * d->pad_w);
    d->P = (d->H + 2 * d->pad_h - d->R) / d->stride_h + 1;
    d->Q = (d->W + 2 * d->pad_w - d->S) / d->stride_w + 1;
    node->out = (nn_shape){3, {d->C, d->P, d->Q, 0}};
    return NN_OK;
}

static nn_status maxpool_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    return window_configure(node, kv, in, "maxpool");
}

static int64_t maxpool_flops(const nn_node *node) {
    const nn_pool_desc *d = &node->d.pool;
    return (int64_t)d->C * d->P * d->Q * d->R * d->S; /* one compare per window element */
}

static int is_2x2(const nn_pool_desc *d) {
    return d->R == 2 && d->S == 2 && d->stride_h == 2 && d->stride_w == 2 && d->pad_h == 0 &&
           d->pad_w == 0;
}

/* The common 2x2/2 window as straight-line selects that vectorize; a NaN in a
 * window makes the output NaN, as in PyTorch. */
static void pool2x2_plane(float *y, const float *x, const nn_pool_desc *d) {
    for (int p = 0; p < d->P; p++) {
        const float *r0 = x + 2 * p * d->W, *r1 = r0 + d->W;
        float *yr = y + p * d->Q;
        for (int q = 0; q < d->Q; q++) {
            float a = r0[2 * q], b = r0[2 * q + 1], c = r1[2 * q], e = r1[2 * q + 1];
            float m0 = a > b ? a : b, m1 = c > e ? c : e;
            float m = m0 > m1 ? m0 : m1;
            int nan = (a != a) | (b != b) | (c != c) | (e != e);
            yr[q] = nan ? a + b + c + e : m;
        }
    }
}

/* Whether window element v is the one that produced output m: the first equal
 * to it (or the first NaN when m is NaN). */
#define POOL_HIT(v, m) (((v) == (m)) | (((m) != (m)) & ((v) != (v))))

static void pool2x2_plane_backward(float *dx, const float *dy, const float *x, const float *y,
                                   const nn_pool_desc *d) {
    if (d->H != 2 * d->P || d->W != 2 * d->Q)
        memset(dx, 0, (size_t)d->H * d->W * sizeof(float)); /* odd edge rows/cols */
    for (int p = 0; p < d->P; p++) {
        const float *r0 = x + 2 * p * d->W, *r1 = r0 + d->W;
        float *d0 = dx + 2 * p * d->W, *d1 = d0 + d->W;
        const float *yr = y + p * d->Q, *gr = dy + p * d->Q;
        for (int q = 0; q < d->Q; q++) {
            float m = yr[q], g = gr[q];
            if (d->relu_mask && !(m > 0.0f)) g = 0.0f; /* the fused ReLU's mask */
            int ta = POOL_HIT(r0[2 * q], m);
            int tb = (!ta) & POOL_HIT(r0[2 * q + 1], m);
            int tc = (!ta) & (!tb) & POOL_HIT(r1[2 * q], m);
            int te = (!ta) & (!tb) & (!tc);
            d0[2 * q] = ta ? g : 0.0f;
            d0[2 * q + 1] = tb ? g : 0.0f;
            d1[2 * q] = tc ? g : 0.0f;
            d1[2 * q + 1] = te ? g : 0.0f;
        }
    }
}

/* Any window: index of the window's maximum (first one; NaN wins). */
static int window_argmax(const float *x, const nn_pool_desc *d, int p, int q) {
    float best = 0.0f;
    int bi = -1;
    for (int r = 0; r < d->R; r++) {
        int ih = p * d->stride_h - d->pad_h + r;
        if (ih < 0 || ih >= d->H) continue;
        for (int s = 0; s < d->S; s++) {
            int iw = q * d->stride_w - d->pad_w + s;
            if (iw < 0 || iw >= d->W) continue;
            float v = x[ih * d->W + iw];
            if (bi < 0 || v > best || (v != v && best == best)) {
                best = v;
                bi = ih * d->W + iw;
            }
        }
    }
    return bi;
}

void nn_maxpool_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    const int fast = is_2x2(d), simd = fast && ctx->isa >= NN_ISA_AVX512;
    const int avx2 = fast && ctx->isa == NN_ISA_AVX2;
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * HW;
        float *yp = y + (size_t)pl * PQ;
        if (pl + 1 < planes && ctx->prefetch) { /* the next plane (nn_prefetch_read) */
            nn_prefetch_read(xp + HW, (size_t)HW);
            nn_prefetch_write(yp + PQ, (size_t)PQ);
        }
        if (simd) {
            nn_maxpool2x2_plane_avx512(yp, xp, d->H, d->W, d->P, d->Q);
            continue;
        }
        if (avx2) {
            nn_maxpool2x2_plane_avx2(yp, xp, d->H, d->W, d->P, d->Q);
            continue;
        }
        if (fast) {
            pool2x2_plane(yp, xp, d);
            continue;
        }
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) yp[p * d->Q + q] = xp[window_argmax(xp, d, p, q)];
    }
}

void nn_maxpool_backward(float *dx, const float *dy, const float *x, const float *y,
                         const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    const int fast = is_2x2(d), simd = fast && ctx->isa >= NN_ISA_AVX512;
    const int avx2 = fast && ctx->isa == NN_ISA_AVX2;
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * HW;
        const float *xp = x + (size_t)pl * HW;
        const float *dyp = dy + (size_t)pl * PQ, *yp = y + (size_t)pl * PQ;
        if (pl + 1 < planes && ctx->prefetch) { /* the next plane (nn_prefetch_read) */
            nn_prefetch_read(xp + HW, (size_t)HW);
            nn_prefetch_read(dyp + PQ, (size_t)PQ);
            nn_prefetch_read(yp + PQ, (size_t)PQ);
            nn_prefetch_write(dxp + HW, (size_t)HW);
        }
        if (simd) {
            nn_maxpool2x2_plane_backward_avx512(dxp, dyp, xp, yp, d->H, d->W, d->P, d->Q,
                                                d->relu_mask);
            continue;
        }
        if (avx2) {
            nn_maxpool2x2_plane_backward_avx2(dxp, dyp, xp, yp, d->H, d->W, d->P, d->Q,
                                              d->relu_mask);
            continue;
        }
        if (fast) {
            pool2x2_plane_backward(dxp, dyp, xp, yp, d);
            continue;
        }
        memset(dxp, 0, (size_t)HW * sizeof(float));
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                const int at = window_argmax(xp, d, p, q);
                if (!d->relu_mask || xp[at] > 0.0f) dxp[at] += dyp[p * d->Q + q];
            }
    }
}

static void maxpool_fwd(const nn_op_args *a) {
    nn_maxpool_forward(a->y, a->x, &a->node->d.pool, a->n, a->ctx);
}

static void maxpool_bwd(const nn_op_args *a) {
    if (a->dx) nn_maxpool_backward(a->dx, a->dy, a->x, a->y, &a->node->d.pool, a->n, a->ctx);
}

/* max-pool asks for the next plane while it works on one (nn_maxpool_*) */
static int maxpool_uses_prefetch(const nn_node *node, const nn_ctx *ctx) {
    (void)node, (void)ctx;
    return 1;
}

static const nn_op_kernels maxpool_cpu = {
    .forward = maxpool_fwd, .backward = maxpool_bwd, .uses_prefetch = maxpool_uses_prefetch};

/* The only reader of a ReLU fused into the layer before (a conv2d): backward
 * applies the ReLU's gradient mask itself, since the gradient reaches only the
 * window's maximum, which is masked exactly when it is not > 0. */
static int maxpool_mask_epilogue(nn_node *node, nn_epilogue e) {
    if (e != NN_EPILOGUE_RELU) return 0;
    node->d.pool.relu_mask = 1;
    return 1;
}

const nn_op_def nn_maxpool_def = {
    .name = "maxpool",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "size stride pad",
    .configure = maxpool_configure,
    .flops = maxpool_flops,
    .kernels = {[NN_KERNELS_CPU] = &maxpool_cpu, NN_CUDA_KERNELS(maxpool)},
    .mask_epilogue = maxpool_mask_epilogue,
};

/* ------------------------------------------------------------ average pooling */

/* torch.nn.AvgPool2d(size, stride, pad) with its defaults count_include_pad=True
 * and ceil_mode=False: every window lies inside the padded input, so the
 * divisor is always R*S. */
static nn_status avgpool_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    return window_configure(node, kv, in, "avgpool");
}

static int64_t avgpool_flops(const nn_node *node) {
    const nn_pool_desc *d = &node->d.pool;
    return (int64_t)d->C * d->P * d->Q * d->R * d->S; /* R*S - 1 adds and one divide */
}

/* First and one-past-last input row (or column) of output position p, clipped
 * to the input. */
static void window_range(int p, int stride, int pad, int size, int limit, int *lo, int *hi) {
    int a = p * stride - pad, b = a + size;
    *lo = a < 0 ? 0 : a;
    *hi = b > limit ? limit : b;
}

void nn_avgpool_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    const float div = (float)(d->R * d->S);
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * HW;   /* (H, W) */
        float *yp = y + (size_t)pl * PQ;         /* (P, Q) */
        for (int p = 0; p < d->P; p++) {
            int h0, h1;
            window_range(p, d->stride_h, d->pad_h, d->R, d->H, &h0, &h1);
            for (int q = 0; q < d->Q; q++) {
                int w0, w1;
                window_range(q, d->stride_w, d->pad_w, d->S, d->W, &w0, &w1);
                float s = 0.0f;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) s += xp[h * d->W + w];
                yp[p * d->Q + q] = s / div;
            }
        }
    }
}

void nn_avgpool_backward(float *dx, const float *dy, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    const float div = (float)(d->R * d->S);
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * HW;          /* (H, W) */
        const float *dyp = dy + (size_t)pl * PQ;    /* (P, Q) */
        memset(dxp, 0, (size_t)HW * sizeof(float));
        for (int p = 0; p < d->P; p++) {
            int h0, h1;
            window_range(p, d->stride_h, d->pad_h, d->R, d->H, &h0, &h1);
            for (int q = 0; q < d->Q; q++) {
                int w0, w1;
                window_range(q, d->stride_w, d->pad_w, d->S, d->W, &w0, &w1);
                const float g = dyp[p * d->Q + q] / div;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) dxp[h * d->W + w] += g;
            }
        }
    }
}

static void avgpool_fwd(const nn_op_args *a) {
    nn_avgpool_forward(a->y, a->x, &a->node->d.pool, a->n, a->ctx);
}

static void avgpool_bwd(const nn_op_args *a) {
    if (a->dx) nn_avgpool_backward(a->dx, a->dy, &a->node->d.pool, a->n, a->ctx);
}

static const nn_op_kernels avgpool_cpu = {.forward = avgpool_fwd, .backward = avgpool_bwd};

const nn_op_def nn_avgpool_def = {
    .name = "avgpool",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "size stride pad",
    .configure = avgpool_configure,
    .flops = avgpool_flops,
    .kernels = {[NN_KERNELS_CPU] = &avgpool_cpu, NN_CUDA_KERNELS(avgpool)},
};

/* ------------------------------------------------------------ global average pooling */

/* torch.nn.AdaptiveAvgPool2d(1) followed by flatten: C x H x W -> C. */
static nn_status gap_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    nn_pool_desc *d = &node->d.pool;
    if (in->ndim != 3)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: gap needs a CxHxW input, got a %d-dimensional one",
                           kv->source, kv->line, in->ndim);
    memset(d, 0, sizeof *d);
    d->C = (int)in->dim[0];
    d->H = d->R = (int)in->dim[1];
    d->W = d->S = (int)in->dim[2];
    d->P = d->Q = 1;
    d->stride_h = d->stride_w = 1;
    node->out = (nn_shape){1, {d->C, 0, 0, 0}};
    return NN_OK;
}

static int64_t gap_flops(const nn_node *node) {
    const nn_pool_desc *d = &node->d.pool;
    return (int64_t)d->C * d->H * d->W; /* H*W - 1 adds and one divide per channel */
}

/* y (N, C) = the mean of each (H, W) plane of x, in order; with scale (not
 * NULL) of the planes' batch norm outputs, mapped from its input x (the same
 * sums as over its output: a training pass writes none). With AVX-512, 16
 * planes at a time in the lanes of one vector (the same sums). */
static void gap_forward(float *y, const float *x, const float *scale, const float *shift,
                        int relu, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C, HW = d->H * d->W;
    const float div = (float)HW;
    if (ctx->isa >= NN_ISA_AVX512) {
        const int blocks = (planes + 15) / 16;
        NN_PARALLEL_FOR(ctx->threads)
        for (int bi = 0; bi < blocks; bi++) {
            const int p0 = 16 * bi, np = planes - p0 < 16 ? planes - p0 : 16;
            float a[16], b[16]; /* each plane's channel's map */
            for (int l = 0, c = p0 % d->C; scale && l < np; l++, c = c + 1 < d->C ? c + 1 : 0)
                a[l] = scale[c], b[l] = shift[c];
            nn_gap_planes_avx512(y + p0, x + (size_t)p0 * HW, np, HW, scale ? a : NULL,
                                 scale ? b : NULL, relu);
        }
        return;
    }
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * HW;   /* (H, W) */
        float s = 0.0f;
        if (scale) {
            const int c = pl % d->C;
            for (int j = 0; j < HW; j++) s += nn_map_value(xp[j], scale[c], shift[c], relu);
        } else {
            for (int j = 0; j < HW; j++) s += xp[j];
        }
        y[pl] = s / div;                         /* y (N, C) */
    }
}

void nn_gap_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    gap_forward(y, x, NULL, NULL, 0, d, n, ctx);
}

/* dx = dy / (H W) over each plane; with grad_sums (not NULL) also the batch
 * norm's per-row gradient sums of each plane (nn_batchnorm_grad_sums_row
 * over dx and x, its input) while the plane is in cache */
static void gap_backward(float *dx, const float *dy, const float *x, const nn_conv2d_map *map,
                         const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C, HW = d->H * d->W;
    const float div = (float)HW;
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * HW;       /* (H, W) */
        const float g = dy[pl] / div;
        for (int j = 0; j < HW; j++) dxp[j] = g;
        if (map) {
            const int c = pl % d->C;
            nn_batchnorm_grad_sums_row(dxp, x + (size_t)pl * HW, HW, map->mean[c], map->scale[c],
                                       map->shift[c], map->relu, &map->grad_sums[2 * (size_t)pl],
                                       &map->grad_sums[2 * (size_t)pl + 1], ctx);
        }
    }
}

void nn_gap_backward(float *dx, const float *dy, const nn_pool_desc *d, int n, nn_ctx *ctx) {
    gap_backward(dx, dy, NULL, NULL, d, n, ctx);
}

static void gap_fwd(const nn_op_args *a) {
    gap_forward(a->y, a->x, a->in_scale, a->in_shift, a->in_relu, &a->node->d.pool, a->n, a->ctx);
}

static void gap_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_conv2d_map m = {a->in_scale, a->in_shift, a->in_relu, a->in_grad_sums,
                             a->in_mean,  NULL,         NULL};
    gap_backward(a->dx, a->dy, a->x, a->in_scale && a->in_grad_sums ? &m : NULL,
                 &a->node->d.pool, a->n, a->ctx);
}

/* a batch norm (and its ReLU) before the pooling, read by nothing else:
 * the pooling maps each value it sums (training passes; the batch norm
 * writes no output) and sums the rows of the batch norm's gradient for it
 * (MobileNet-small's pw3_bn: its two passes, 0.9% of the step) */
static int gap_takes_prologue(const nn_node *node, const nn_ctx *ctx) {
    (void)node, (void)ctx;
    return 1;
}

static const nn_op_kernels gap_cpu = {.forward = gap_fwd,
                                      .backward = gap_bwd,
                                      .takes_prologue = gap_takes_prologue,
                                      .sums_prologue_grad = gap_takes_prologue};

const nn_op_def nn_gap_def = {
    .name = "gap",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = gap_configure,
    .flops = gap_flops,
    .kernels = {[NN_KERNELS_CPU] = &gap_cpu, NN_CUDA_KERNELS(gap)},
};
