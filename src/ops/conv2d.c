/*
 * conv2d.c - 2-D convolution (cross-correlation, as PyTorch): model-file
 * definition and CPU kernels. im2col + GEMM per image; the batch is split
 * evenly across threads, each with its own column buffer and private weight
 * gradient that are summed in a fixed order (deterministic per thread count).
 */
#include "ops/ops.h"

#include <string.h>

static nn_status conv2d_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    nn_conv2d_desc *d = &node->d.conv;
    nn_status st;
    int bias;
    if (in->ndim != 3)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d needs a CxHxW input, got a %d-dimensional one",
                           kv->source, kv->line, in->ndim);
    if ((st = nn_kv_int(kv, "out", 0, 1, &d->K)) ||
        (st = nn_kv_pair(kv, "kernel", 0, 1, &d->R, &d->S)) ||
        (st = nn_kv_pair(kv, "stride", 1, 0, &d->stride_h, &d->stride_w)) ||
        (st = nn_kv_pair(kv, "pad", 0, 0, &d->pad_h, &d->pad_w)) ||
        (st = nn_kv_int(kv, "bias", 1, 0, &bias)))
        return st;
    d->C = (int)in->dim[0];
    d->H = (int)in->dim[1];
    d->W = (int)in->dim[2];
    if (d->K <= 0 || d->K > 65536 || d->R <= 0 || d->S <= 0 || d->R > 1024 || d->S > 1024 ||
        d->stride_h <= 0 || d->stride_w <= 0 || d->pad_h < 0 || d->pad_w < 0 ||
        d->pad_h > 1024 || d->pad_w > 1024 || (bias != 0 && bias != 1))
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d needs out>0, kernel>0, stride>0, pad>=0, bias=0|1",
                           kv->source, kv->line);
    int hp = d->H + 2 * d->pad_h, wp = d->W + 2 * d->pad_w;
    if (d->R > hp || d->S > wp)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d kernel %dx%d is larger than the padded input %dx%d",
                           kv->source, kv->line, d->R, d->S, hp, wp);
    d->P = (hp - d->R) / d->stride_h + 1;
    d->Q = (wp - d->S) / d->stride_w + 1;
    d->has_bias = bias;
    node->out = (nn_shape){3, {d->K, d->P, d->Q, 0}};
    node->num_params = bias ? 2 : 1;
    node->param_shape[0] = (nn_shape){4, {d->K, d->C, d->R, d->S}};
    node->param_suffix[0] = "weight";
    node->param_shape[1] = (nn_shape){1, {d->K, 0, 0, 0}};
    node->param_suffix[1] = "bias";
    node->param_fan_in = d->C * d->R * d->S;
    return NN_OK;
}

static int64_t conv2d_flops(const nn_node *node) {
    const nn_conv2d_desc *d = &node->d.conv;
    return 2LL * d->K * d->P * d->Q * d->C * d->R * d->S;
}

const nn_op_def nn_conv2d_def = {"conv2d", 1, conv2d_configure, conv2d_flops};

/* 1x1, stride 1, no padding: the image itself is the column matrix. */
static int is_pointwise(const nn_conv2d_desc *d) {
    return d->R == 1 && d->S == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

/* col (C*R*S, P*Q) from one image x (C, H, W); zero where the window is in padding */
static void im2col(float *col, const float *x, const nn_conv2d_desc *d) {
    const int PQ = d->P * d->Q;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                float *row = col + (size_t)((c * d->R + r) * d->S + s) * PQ;
                const float *xc = x + (size_t)c * d->H * d->W;
                for (int p = 0; p < d->P; p++) {
                    float *out = row + p * d->Q;
                    int ih = p * d->stride_h - d->pad_h + r;
                    if (ih < 0 || ih >= d->H) {
                        memset(out, 0, (size_t)d->Q * sizeof(float));
                        continue;
                    }
                    const float *xr = xc + (size_t)ih * d->W;
                    int iw0 = s - d->pad_w;
                    if (d->stride_w == 1) {
                        /* q range with 0 <= q + iw0 < W */
                        int q0 = iw0 < 0 ? -iw0 : 0;
                        int q1 = d->W - iw0 < d->Q ? d->W - iw0 : d->Q;
                        if (q1 < q0) q1 = q0;
                        for (int q = 0; q < q0; q++) out[q] = 0.0f;
                        memcpy(out + q0, xr + q0 + iw0, (size_t)(q1 - q0) * sizeof(float));
                        for (int q = q1; q < d->Q; q++) out[q] = 0.0f;
                    } else {
                        for (int q = 0; q < d->Q; q++) {
                            int iw = q * d->stride_w + iw0;
                            out[q] = (iw >= 0 && iw < d->W) ? xr[iw] : 0.0f;
                        }
                    }
                }
            }
}

/* dx (C, H, W) += scatter of dcol (C*R*S, P*Q); dx must be zeroed first */
static void col2im(float *dx, const float *dcol, const nn_conv2d_desc *d) {
    const int PQ = d->P * d->Q;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                const float *row = dcol + (size_t)((c * d->R + r) * d->S + s) * PQ;
                float *xc = dx + (size_t)c * d->H * d->W;
                for (int p = 0; p < d->P; p++) {
                    int ih = p * d->stride_h - d->pad_h + r;
                    if (ih < 0 || ih >= d->H) continue;
                    float *xr = xc + (size_t)ih * d->W;
                    const float *in = row + p * d->Q;
                    for (int q = 0; q < d->Q; q++) {
                        int iw = q * d->stride_w - d->pad_w + s;
                        if (iw >= 0 && iw < d->W) xr[iw] += in[q];
                    }
                }
            }
}

static size_t col_floats(const nn_conv2d_desc *d) {
    return (size_t)d->C * d->R * d->S * d->P * d->Q;
}

size_t nn_conv2d_workspace(const nn_conv2d_desc *d, int threads) {
    size_t per_thread = 2 * col_floats(d) + (size_t)d->K * d->C * d->R * d->S + (size_t)d->K;
    return (size_t)threads * ((per_thread + 15) & ~(size_t)15);
}

static size_t thread_stride(const nn_conv2d_desc *d) {
    return nn_conv2d_workspace(d, 1);
}

void nn_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int PQ = d->P * d->Q, CRS = d->C * d->R * d->S;
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * PQ;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        float *col = ws + (size_t)t * thread_stride(d);
        for (int i = n * t / T; i < n * (t + 1) / T; i++) {
            const float *xi = x + i * xs;
            float *yi = y + i * ys;
            const float *B = xi;
            if (!is_pointwise(d)) {
                im2col(col, xi, d);
                B = col;
            }
            if (b)
                for (int k = 0; k < d->K; k++)
                    for (int j = 0; j < PQ; j++) yi[(size_t)k * PQ + j] = b[k];
            nn_sgemm(0, 0, d->K, PQ, CRS, 1.0f, w, CRS, B, PQ, b ? 1.0f : 0.0f, yi, PQ);
        }
    }
}

void nn_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int PQ = d->P * d->Q, CRS = d->C * d->R * d->S;
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * PQ;
    const size_t wn = (size_t)d->K * CRS;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        float *col = ws + (size_t)t * thread_stride(d);
        float *dcol = col + col_floats(d);
        float *dwt = dcol + col_floats(d);    /* (K, CRS) this thread's share */
        float *dbt = dwt + wn;                /* (K) */
        memset(dwt, 0, (wn + (size_t)d->K) * sizeof(float));
        for (int i = n * t / T; i < n * (t + 1) / T; i++) {
            const float *xi = x + i * xs;
            const float *dyi = dy + i * ys;
            const float *B = xi;
            if (!is_pointwise(d)) {
                im2col(col, xi, d);
                B = col;
            }
            nn_sgemm(0, 1, d->K, CRS, PQ, 1.0f, dyi, PQ, B, PQ, 1.0f, dwt, CRS);
            for (int k = 0; k < d->K; k++) {
                float s = 0.0f;
                for (int j = 0; j < PQ; j++) s += dyi[(size_t)k * PQ + j];
                dbt[k] += s;
            }
            if (dx) {
                float *dxi = dx + i * xs;
                if (is_pointwise(d)) {
                    nn_sgemm(1, 0, CRS, PQ, d->K, 1.0f, w, CRS, dyi, PQ, 0.0f, dxi, PQ);
                } else {
                    nn_sgemm(1, 0, CRS, PQ, d->K, 1.0f, w, CRS, dyi, PQ, 0.0f, dcol, PQ);
                    memset(dxi, 0, xs * sizeof(float));
                    col2im(dxi, dcol, d);
                }
            }
        }
    }
    /* sum the per-thread partial gradients in thread order */
    for (int t = 0; t < T; t++) {
        const float *dwt = ws + (size_t)t * thread_stride(d) + 2 * col_floats(d);
        for (size_t j = 0; j < wn; j++) dw[j] += dwt[j];
        if (db)
            for (int k = 0; k < d->K; k++) db[k] += dwt[wn + k];
    }
}

static void conv2d_fwd(const nn_op_args *a) {
    nn_conv2d_forward(a->y, a->x, a->w, a->b, &a->node->d.conv, a->n, a->ws, a->ctx);
}

static void conv2d_bwd(const nn_op_args *a) {
    nn_conv2d_backward(a->dx, a->dw, a->db, a->dy, a->x, a->w, &a->node->d.conv, a->n, a->ws,
                       a->ctx);
}

static size_t conv2d_ws(const nn_node *node, int max_batch, int threads) {
    (void)max_batch;
    return nn_conv2d_workspace(&node->d.conv, threads);
}

const nn_op_kernels nn_conv2d_cpu = {conv2d_fwd, conv2d_bwd, conv2d_ws};
