/*
 * pool.c - max-pooling: model-file definition and CPU kernels. Forward keeps
 * the argmax of each window (first maximum, NaN wins, as PyTorch) so backward
 * is a scatter.
 */
#include "ops/ops.h"

#include <math.h>
#include <string.h>

static nn_status maxpool_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    nn_pool_desc *d = &node->d.pool;
    nn_status st;
    if (in->ndim != 3)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: maxpool needs a CxHxW input, got a %d-dimensional one",
                           kv->source, kv->line, in->ndim);
    if ((st = nn_kv_pair(kv, "size", 0, 1, &d->R, &d->S))) return st;
    if ((st = nn_kv_pair(kv, "stride", d->R, 0, &d->stride_h, &d->stride_w))) return st;
    if (!nn_kv_str(kv, "stride")) d->stride_w = d->S;
    if ((st = nn_kv_pair(kv, "pad", 0, 0, &d->pad_h, &d->pad_w))) return st;
    d->C = (int)in->dim[0];
    d->H = (int)in->dim[1];
    d->W = (int)in->dim[2];
    if (d->R <= 0 || d->S <= 0 || d->stride_h <= 0 || d->stride_w <= 0 || d->pad_h < 0 ||
        d->pad_w < 0)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: maxpool needs size>0, stride>0, pad>=0",
                           kv->source, kv->line);
    if (2 * d->pad_h > d->R || 2 * d->pad_w > d->S)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: maxpool pad must be at most half the window size",
                           kv->source, kv->line);
    if (d->R > d->H + 2 * d->pad_h || d->S > d->W + 2 * d->pad_w)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: maxpool window %dx%d is larger than the input %dx%d",
                           kv->source, kv->line, d->R, d->S, d->H, d->W);
    d->P = (d->H + 2 * d->pad_h - d->R) / d->stride_h + 1;
    d->Q = (d->W + 2 * d->pad_w - d->S) / d->stride_w + 1;
    node->out = (nn_shape){3, {d->C, d->P, d->Q, 0}};
    node->aux_bytes = (size_t)d->C * d->P * d->Q * sizeof(int32_t);
    return NN_OK;
}

static int64_t maxpool_flops(const nn_node *node) {
    const nn_pool_desc *d = &node->d.pool;
    return (int64_t)d->C * d->P * d->Q * d->R * d->S; /* one compare per window element */
}

const nn_op_def nn_maxpool_def = {"maxpool", 1, maxpool_configure, maxpool_flops};

void nn_maxpool_forward(float *y, int32_t *argmax, const float *x, const nn_pool_desc *d, int n,
                        nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * HW;
        float *yp = y + (size_t)pl * PQ;
        int32_t *ap = argmax + (size_t)pl * PQ;
        if (d->R == 2 && d->S == 2 && d->stride_h == 2 && d->stride_w == 2 && d->pad_h == 0 &&
            d->pad_w == 0) {
            /* the common 2x2/2 case, unrolled */
            for (int p = 0; p < d->P; p++) {
                const float *r0 = xp + 2 * p * d->W, *r1 = r0 + d->W;
                for (int q = 0; q < d->Q; q++) {
                    int i0 = 2 * p * d->W + 2 * q;
                    float best = r0[2 * q];
                    int bi = i0;
                    if (r0[2 * q + 1] > best || isnan(r0[2 * q + 1])) best = r0[2 * q + 1], bi = i0 + 1;
                    if (r1[2 * q] > best || isnan(r1[2 * q])) best = r1[2 * q], bi = i0 + d->W;
                    if (r1[2 * q + 1] > best || isnan(r1[2 * q + 1]))
                        best = r1[2 * q + 1], bi = i0 + d->W + 1;
                    yp[p * d->Q + q] = best;
                    ap[p * d->Q + q] = bi;
                }
            }
            continue;
        }
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                float best = -INFINITY;
                int bi = -1;
                for (int r = 0; r < d->R; r++) {
                    int ih = p * d->stride_h - d->pad_h + r;
                    if (ih < 0 || ih >= d->H) continue;
                    for (int s = 0; s < d->S; s++) {
                        int iw = q * d->stride_w - d->pad_w + s;
                        if (iw < 0 || iw >= d->W) continue;
                        float v = xp[ih * d->W + iw];
                        if (bi < 0 || v > best || isnan(v)) {
                            best = v;
                            bi = ih * d->W + iw;
                        }
                        if (isnan(v)) goto done;
                    }
                }
            done:
                yp[p * d->Q + q] = best;
                ap[p * d->Q + q] = bi;
            }
    }
}

void nn_maxpool_backward(float *dx, const float *dy, const int32_t *argmax,
                         const nn_pool_desc *d, int n, nn_ctx *ctx) {
    const int planes = n * d->C;
    const int HW = d->H * d->W, PQ = d->P * d->Q;
    NN_PARALLEL_FOR(ctx->threads)
    for (int pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * HW;
        const float *dyp = dy + (size_t)pl * PQ;
        const int32_t *ap = argmax + (size_t)pl * PQ;
        memset(dxp, 0, (size_t)HW * sizeof(float));
        for (int j = 0; j < PQ; j++) dxp[ap[j]] += dyp[j];
    }
}

static void maxpool_fwd(const nn_op_args *a) {
    nn_maxpool_forward(a->y, a->aux, a->x, &a->node->d.pool, a->n, a->ctx);
}

static void maxpool_bwd(const nn_op_args *a) {
    if (a->dx) nn_maxpool_backward(a->dx, a->dy, a->aux, &a->node->d.pool, a->n, a->ctx);
}

const nn_op_kernels nn_maxpool_cpu = {maxpool_fwd, maxpool_bwd, NULL};
