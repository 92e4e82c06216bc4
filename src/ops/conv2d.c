/*
 * conv2d.c - 2-D convolution (cross-correlation, as PyTorch): model-file
 * definition and CPU kernels: im2col + GEMM over groups of images (one wide
 * GEMM per group), and 1x1 stride-1 convolutions as GEMMs on each image in
 * place; the batch is split evenly across threads, each with its own buffers
 * and private weight gradient, summed in a fixed order, so results are
 * deterministic for a given thread count. kernel_order (below) chooses
 * between these and the direct kernels of the other conv2d_*.c files.
 */
#include "ops/ops.h"
#include "backend/gemm_bf16.h"

#include <string.h>

/* Limits of the model-file keys: output channels, kernel side and padding,
 * and the products C/groups * R * S, which index the kernels' int-sized GEMMs
 * and im2col rows. */
#define CONV_MAX_OUT 65536
#define CONV_MAX_SIDE 1024
#define CONV_MAX_FAN_IN (1 << 24)

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
        (st = nn_kv_int(kv, "bias", 1, 0, &bias)) ||
        (st = nn_kv_int(kv, "groups", 1, 0, &d->groups)))
        return st;
    if ((st = nn_kv_pair(kv, "dilation", 1, 0, &d->dil_h, &d->dil_w))) return st;
    d->C = (int)in->dim[0];
    d->H = (int)in->dim[1];
    d->W = (int)in->dim[2];
    if (d->groups < 1 || d->C % d->groups || d->K % d->groups)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d groups=%d must divide both the %d input and %d output "
                           "channels",
                           kv->source, kv->line, d->groups, d->C, d->K);
    /* each key's own range, named in its message */
    if (d->K <= 0 || d->K > CONV_MAX_OUT)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d out=%d: expected 1..%d output "
                           "channels", kv->source, kv->line, d->K, CONV_MAX_OUT);
    if (d->R <= 0 || d->S <= 0 || d->R > CONV_MAX_SIDE || d->S > CONV_MAX_SIDE)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d kernel=%dx%d: expected 1..%d on "
                           "each side", kv->source, kv->line, d->R, d->S, CONV_MAX_SIDE);
    if (d->stride_h <= 0 || d->stride_w <= 0)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d stride=%dx%d: expected 1 or more "
                           "on each side", kv->source, kv->line, d->stride_h, d->stride_w);
    if (d->pad_h < 0 || d->pad_w < 0 || d->pad_h > CONV_MAX_SIDE || d->pad_w > CONV_MAX_SIDE)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d pad=%dx%d: expected 0..%d on each "
                           "side", kv->source, kv->line, d->pad_h, d->pad_w, CONV_MAX_SIDE);
    if (bias != 0 && bias != 1)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d bias=%d: expected 0 or 1",
                           kv->source, kv->line, bias);
    if (d->dil_h < 1 || d->dil_w < 1 || d->dil_h > 1024 || d->dil_w > 1024)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d needs dilation in 1..1024, got %dx%d",
                           kv->source, kv->line, d->dil_h, d->dil_w);
    /* C/groups*R*S (the fan-in, the GEMM's inner size) in 64 bits: up to
     * 65536 * 1024 * 1024 before this check */
    const int64_t fan_in = (int64_t)(d->C / d->groups) * d->R * d->S;
    if (fan_in > CONV_MAX_FAN_IN)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: conv2d sums %lld inputs per output "
                           "(%d channels x %dx%d kernel), more than %d", kv->source, kv->line,
                           (long long)fan_in, d->C / d->groups, d->R, d->S, CONV_MAX_FAN_IN);
    int hp = d->H + 2 * d->pad_h, wp = d->W + 2 * d->pad_w;
    /* the input rows and columns one output reads: (R - 1) dilation + 1 */
    const int eh = (d->R - 1) * d->dil_h + 1, ew = (d->S - 1) * d->dil_w + 1;
    if (!nn_conv2d_dilated(d) && (d->R > hp || d->S > wp))
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d kernel %dx%d is larger than the padded input %dx%d",
                           kv->source, kv->line, d->R, d->S, hp, wp);
    if (eh > hp || ew > wp)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: conv2d kernel %dx%d with dilation %dx%d spans %dx%d, more than "
                           "the padded input %dx%d",
                           kv->source, kv->line, d->R, d->S, d->dil_h, d->dil_w, eh, ew, hp, wp);
    d->P = (hp - eh) / d->stride_h + 1;
    d->Q = (wp - ew) / d->stride_w + 1;
    d->has_bias = bias;
    node->out = (nn_shape){3, {d->K, d->P, d->Q, 0}};
    node->num_params = bias ? 2 : 1;
    node->param_shape[0] = (nn_shape){4, {d->K, d->C / d->groups, d->R, d->S}};
    node->param_suffix[0] = "weight";
    node->param_shape[1] = (nn_shape){1, {d->K, 0, 0, 0}};
    node->param_suffix[1] = "bias";
    node->param_fan_in = (int)fan_in;
    return NN_OK;
}

static int64_t conv2d_flops(const nn_node *node) {
    const nn_conv2d_desc *d = &node->d.conv;
    return 2LL * d->K * d->P * d->Q * (d->C / (d->groups > 1 ? d->groups : 1)) * d->R * d->S;
}

/* the weight gradient costs one forward pass, the input gradient another */
static int64_t conv2d_backward_flops(const nn_node *node) {
    return (node->needs_dx & 1u ? 2 : 1) * conv2d_flops(node);
}

static int conv2d_fuse_epilogue(nn_node *node, nn_epilogue e) {
    if (e != NN_EPILOGUE_RELU) return 0;
    node->d.conv.relu = 1;
    return 1;
}

/* eval mode: a batch norm after it folded into its weights and bias (graph.c) */
static int conv2d_absorb_affine(nn_node *copy, int relu) {
    nn_conv2d_desc *d = &copy->d.conv;
    if (d->relu) return 0; /* a ReLU already sits between it and the map */
    d->has_bias = 1;
    d->relu = relu;
    d->relu_masked_later = 0;
    return d->K;
}

/* the fused ReLU's mask is applied by the layer that reads the output (a
 * max-pool, nn_pool_desc.relu_mask) */
static void conv2d_epilogue_masked_later(nn_node *node) { node->d.conv.relu_masked_later = 1; }

/* bf16 for the dense convolutions whose sums are long enough for the bf16
 * GEMM to pay (a first layer on one input channel, C*R*S = 9, stays fp32);
 * dilated ones stay fp32 too (their bf16 kernels are not written) */
static int bf16_for(const nn_conv2d_desc *d, nn_precision p) {
    return p == NN_PRECISION_BF16 && d->groups <= 1 && d->C * d->R * d->S >= 32 &&
           !nn_conv2d_dilated(d);
}

static void conv2d_set_precision(nn_node *node, nn_precision p) {
    node->d.conv.bf16 = bf16_for(&node->d.conv, p);
}

/* The layer as nn_net_plan will run it: the fusion decisions are made when
 * the net is built, before the plan applies the context's precision, and
 * the kernel (so whether it takes a prologue) depends on it: a 1x1
 * convolution in bf16 runs im2col, which normalizes no input (MobileNet-small
 * with --precision bf16 had read a batch norm's unwritten output: NaN at
 * the first step). */
static nn_conv2d_desc as_planned(const nn_node *node, const nn_ctx *ctx) {
    nn_conv2d_desc d = node->d.conv;
    d.bf16 = bf16_for(&d, ctx->precision);
    return d;
}

/* The output columns [q0, q1) whose input column q stride_w + iw0 lies in
 * the image. */
static void inside_columns(const nn_conv2d_desc *d, int iw0, int *q0, int *q1) {
    const int sw = d->stride_w;
    int a = iw0 < 0 ? (-iw0 + sw - 1) / sw : 0;
    int b = iw0 < d->W ? (d->W - 1 - iw0) / sw + 1 : 0;
    if (b > d->Q) b = d->Q;
    if (a > b) a = b;
    *q0 = a, *q1 = b;
}

/* col[:, 0..P*Q) with row stride ld, from one image x (C, H, W): row
 * (c, r, s) holds the input under kernel tap (r, s) for every output (p, q),
 * zero where the window lies in the padding. Elements are esz bytes: floats
 * (4) or bf16 (2); zero is all-zero bits in both. */
/* GCC would turn the short zero-fill loops back into memset calls */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void im2col_any(void *col, size_t ld, const void *x, const nn_conv2d_desc *d, size_t esz) {
    char *colb = col;
    const char *xb = x;
    const int dh = nn_conv2d_dil_h(d), dw = nn_conv2d_dil_w(d), sw = d->stride_w;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                char *row = colb + (size_t)((c * d->R + r) * d->S + s) * ld * esz;
                const char *xc = xb + (size_t)c * d->H * d->W * esz;
                /* the columns inside the image, once per tap (the divisions
                 * once per row took a third of a stride-2 layer's time) */
                const int iw0 = s * dw - d->pad_w;
                int q0, q1;
                inside_columns(d, iw0, &q0, &q1);
                for (int p = 0; p < d->P; p++) {
                    char *out = row + (size_t)p * d->Q * esz;
                    int ih = p * d->stride_h - d->pad_h + r * dh;
                    if (ih < 0 || ih >= d->H) {
                        memset(out, 0, (size_t)d->Q * esz);
                        continue;
                    }
                    const char *xr = xc + (size_t)ih * d->W * esz;
                    /* the padding columns, 0 to 2 elements: stores, not memset
                     * calls; the inside by memcpy (stride 1) or a gather */
                    if (esz == sizeof(float)) {
                        float *o = (float *)out;
                        const float *in = (const float *)xr;
                        for (int q = 0; q < q0; q++) o[q] = 0.0f;
                        if (sw == 1)
                            memcpy(o + q0, in + q0 + iw0, (size_t)(q1 - q0) * sizeof(float));
                        else if (sw == 2)
                            for (int q = q0; q < q1; q++) o[q] = in[2 * q + iw0];
                        else
                            for (int q = q0; q < q1; q++) o[q] = in[q * sw + iw0];
                        for (int q = q1; q < d->Q; q++) o[q] = 0.0f;
                    } else {
                        uint16_t *o = (uint16_t *)out;
                        const uint16_t *in = (const uint16_t *)xr;
                        for (int q = 0; q < q0; q++) o[q] = 0;
                        if (sw == 1)
                            memcpy(o + q0, in + q0 + iw0, (size_t)(q1 - q0) * sizeof(uint16_t));
                        else
                            for (int q = q0; q < q1; q++) o[q] = in[q * sw + iw0];
                        for (int q = q1; q < d->Q; q++) o[q] = 0;
                    }
                }
            }
}

/* Stride 2 across the row, undilated, fp32: each input row a window reads is
 * split into its even and odd columns, between zero margins, and each tap
 * (r, s) takes its Q columns whole from one half: s - pad_w = 2 shift +
 * phase. The gathers, one per tap and row, had taken a fifth of ResNet-20's
 * downsampling layers (im2col twice a step, col2im once). A half row holds
 * SPLIT_MAX floats with its margins; wider rows take im2col_any. */
#define SPLIT_MAX 512

typedef struct {
    int margin, len; /* floats before column 0 of a half, floats in one */
} row_split;

static int split_ok(const nn_conv2d_desc *d, row_split *rs) {
    if (d->stride_w != 2 || nn_conv2d_dilated(d)) return 0;
    rs->margin = (d->pad_w + 1) / 2;               /* the most negative shift */
    rs->len = rs->margin + d->Q + (d->S - 1) / 2 + 1; /* and the largest */
    return rs->len + (d->W + 1) / 2 <= SPLIT_MAX;
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void im2col_split(float *col, size_t ld, const float *x, const nn_conv2d_desc *d,
                         const row_split *rs) {
    float half[2][SPLIT_MAX];
    memset(half, 0, sizeof half); /* the margins and past the row stay zero */
    const int Q = d->Q;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++) {
            float *rows = col + (size_t)(c * d->R + r) * d->S * ld;
            for (int p = 0; p < d->P; p++) {
                const int ih = p * d->stride_h - d->pad_h + r;
                const int inside = ih >= 0 && ih < d->H;
                if (inside) /* its halves after rs->margin zeros */
                    nn_row_deinterleave(half[0] + rs->margin, half[1] + rs->margin,
                                        x + ((size_t)c * d->H + ih) * d->W, d->W);
                for (int s = 0; s < d->S; s++) {
                    float *out = rows + (size_t)s * ld + (size_t)p * Q;
                    const int at = s - d->pad_w + 2 * rs->margin; /* >= 0 */
                    /* copies of a few dozen bytes: a loop, not libc calls */
                    const float *in = half[at & 1] + at / 2;
                    if (inside)
                        for (int q = 0; q < Q; q++) out[q] = in[q];
                    else
                        for (int q = 0; q < Q; q++) out[q] = 0.0f;
                }
            }
        }
}

static void im2col(float *col, size_t ld, const float *x, const nn_conv2d_desc *d) {
    row_split rs;
    if (split_ok(d, &rs))
        im2col_split(col, ld, x, d, &rs);
    else
        im2col_any(col, ld, x, d, sizeof(float));
}

/* im2col of a stride-1 convolution from a zero-padded bf16 image
 * (C, Hp, Wp): row (c, r, s), output row p is xp[c][p + r][s .. s + Q). */
static void im2col_s1_bf16(uint16_t *col, size_t ld, const uint16_t *xp, int Hp, int Wp,
                           const nn_conv2d_desc *d) {
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                uint16_t *row = col + (size_t)((c * d->R + r) * d->S + s) * ld;
                for (int p = 0; p < d->P; p++) {
                    const uint16_t *src = xp + ((size_t)c * Hp + p + r) * Wp + s;
                    uint16_t *dst = row + (size_t)p * d->Q;
                    for (int q = 0; q < d->Q; q++) dst[q] = src[q];
                }
            }
}

/* The bf16 column matrix of a group of images (image g at x + g*xs, its
 * channel planes cs floats apart), in the packed-A layout of the bf16 GEMM
 * (rows of ldp = ld rounded up to even, CRS rounded up to NN_BF16_MR rows):
 * so it is the B of the forward GEMM and, as is, the A of the
 * weight-gradient GEMM. xb holds one image converted to bf16 (zero-padded
 * for stride 1). */
static void im2col_bf16_strided(uint16_t *colb, uint16_t *xb, const float *x, size_t xs,
                                size_t cs, int gc, const nn_conv2d_desc *d) {
    const size_t PQ = (size_t)d->P * d->Q, ld = (size_t)gc * PQ, ldp = (ld + 1) & ~(size_t)1;
    const size_t HW = (size_t)d->H * d->W;
    const int CRS = d->C * d->R * d->S;
    const int rows = (CRS + NN_BF16_MR - 1) / NN_BF16_MR * NN_BF16_MR;
    if (d->stride_h == 1 && d->stride_w == 1 && !nn_conv2d_dilated(d)) {
        /* into a zero-padded image, then every row of the column matrix is a
         * plain copy of Q elements (no bounds, no memcpy call per row) */
        const int Hp = d->H + 2 * d->pad_h, Wp = d->W + 2 * d->pad_w;
        memset(xb, 0, (size_t)d->C * Hp * Wp * sizeof *xb);
        for (int g = 0; g < gc; g++) {
            for (int c = 0; c < d->C; c++)
                for (int h = 0; h < d->H; h++) {
                    const float *xr = x + (size_t)g * xs + (size_t)c * cs + (size_t)h * d->W;
                    uint16_t *br = xb + ((size_t)c * Hp + h + d->pad_h) * Wp + d->pad_w;
                    for (int w = 0; w < d->W; w++) br[w] = nn_to_bf16(xr[w]);
                }
            im2col_s1_bf16(colb + (size_t)g * PQ, ldp, xb, Hp, Wp, d);
        }
    } else {
        for (int g = 0; g < gc; g++) {
            for (int c = 0; c < d->C; c++) {
                const float *xc = x + (size_t)g * xs + (size_t)c * cs;
                uint16_t *bc = xb + (size_t)c * HW;
                for (size_t j = 0; j < HW; j++) bc[j] = nn_to_bf16(xc[j]);
            }
            im2col_any(colb + (size_t)g * PQ, ldp, xb, d, sizeof(uint16_t));
        }
    }
    if (ldp != ld)
        for (int r = 0; r < CRS; r++) colb[(size_t)r * ldp + ld] = 0;
    memset(colb + (size_t)CRS * ldp, 0, (size_t)(rows - CRS) * ldp * sizeof(uint16_t));
}

/* The same for images whose channel planes lie H*W apart. */
static void im2col_bf16(uint16_t *colb, uint16_t *xb, const float *x, size_t xs, int gc,
                        const nn_conv2d_desc *d) {
    im2col_bf16_strided(colb, xb, x, xs, (size_t)d->H * d->W, gc, d);
}

/* The input gradient of a stride-1 convolution with pad < kernel is itself a
 * stride-1 correlation: of dy, padded by R-1-pad, with the kernel turned
 * 180 degrees and its in/out channels swapped (K -> C). The bf16 path runs it
 * as one (im2col + GEMM), writing dx directly, instead of a GEMM into a
 * column matrix of CRS x P*Q floats folded back by col2im (measured with
 * `nnopt bench models/conv_heavy.nn --precision bf16` on an AMX Xeon). */
static int dx_as_correlation(const nn_conv2d_desc *d) {
    /* when K > C dy's column matrix (K*R*S rows) outgrows the one col2im
     * reads (C*R*S rows): conv_heavy's 64 -> 128 and 128 -> 256 layers ran
     * slower this way (7.7 -> 9.6 ms), its K = C layers faster (17.1 -> 14.9) */
    return d->bf16 && d->groups <= 1 && d->stride_h == 1 && d->stride_w == 1 &&
           d->pad_h <= d->R - 1 && d->pad_w <= d->S - 1 && d->K <= d->C &&
           !nn_conv2d_dilated(d);
}

static nn_conv2d_desc dx_desc(const nn_conv2d_desc *d) {
    nn_conv2d_desc t = *d;
    t.C = d->K, t.H = d->P, t.W = d->Q, t.K = d->C;
    t.pad_h = d->R - 1 - d->pad_h, t.pad_w = d->S - 1 - d->pad_w;
    t.P = d->H, t.Q = d->W;
    t.has_bias = 0, t.relu = 0;
    return t;
}

/* The A of that GEMM: rows c of the flipped kernel, W'[c][k][r][s] =
 * W[k][c][R-1-r][S-1-s], in nn_bf16_pack_a's layout (K*R*S rounded up to
 * even, rows rounded up to NN_BF16_MR, zeros in the padding). */
static void pack_flipped_bf16(uint16_t *Ap, const float *w, const nn_conv2d_desc *d) {
    const int R = d->R, S = d->S, KRS = d->K * R * S, Kp = (KRS + 1) & ~1;
    const int rows = (d->C + NN_BF16_MR - 1) / NN_BF16_MR * NN_BF16_MR;
    memset(Ap, 0, (size_t)rows * Kp * sizeof *Ap);
    for (int c = 0; c < d->C; c++)
        for (int k = 0; k < d->K; k++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                    Ap[(size_t)c * Kp + (k * R + r) * S + s] = nn_to_bf16(
                        w[(((size_t)k * d->C + c) * R + (R - 1 - r)) * S + (S - 1 - s)]);
}

/* col2im_any for split_ok's convolutions: the taps of one input row are
 * summed into its two halves, then added to the row interleaved */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void col2im_split(float *dx, const float *dcol, size_t ld, const nn_conv2d_desc *d,
                         const row_split *rs) {
    float half[2][SPLIT_MAX];
    const int Q = d->Q, W = d->W;
    const int used = rs->len > rs->margin + (W + 1) / 2 ? rs->len : rs->margin + (W + 1) / 2;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++) {
            const float *rows = dcol + (size_t)(c * d->R + r) * d->S * ld;
            for (int p = 0; p < d->P; p++) {
                const int ih = p * d->stride_h - d->pad_h + r;
                if (ih < 0 || ih >= d->H) continue;
                for (int j = 0; j < used; j++) half[0][j] = half[1][j] = 0.0f;
                for (int s = 0; s < d->S; s++) {
                    const float *in = rows + (size_t)s * ld + (size_t)p * Q;
                    const int at = s - d->pad_w + 2 * rs->margin;
                    float *h = half[at & 1] + at / 2;
                    for (int q = 0; q < Q; q++) h[q] += in[q];
                }
                nn_row_interleave(dx + ((size_t)c * d->H + ih) * W, half[0] + rs->margin,
                                  half[1] + rs->margin, W, 1);
            }
        }
}

/* dx (C, H, W) += the columns dcol[:, 0..P*Q) (row stride ld) folded back
 * onto the image; dx must be zeroed first. */
static void col2im(float *dx, const float *dcol, size_t ld, const nn_conv2d_desc *d) {
    row_split rs;
    if (split_ok(d, &rs)) {
        col2im_split(dx, dcol, ld, d, &rs);
        return;
    }
    const int dh = nn_conv2d_dil_h(d), dw = nn_conv2d_dil_w(d), sw = d->stride_w;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                const float *row = dcol + (size_t)((c * d->R + r) * d->S + s) * ld;
                float *xc = dx + (size_t)c * d->H * d->W;
                const int iw0 = s * dw - d->pad_w;
                int q0, q1;
                inside_columns(d, iw0, &q0, &q1); /* as im2col: once per tap */
                for (int p = 0; p < d->P; p++) {
                    int ih = p * d->stride_h - d->pad_h + r * dh;
                    if (ih < 0 || ih >= d->H) continue;
                    float *xr = xc + (size_t)ih * d->W;
                    const float *in = row + p * d->Q;
                    if (sw == 1)
                        for (int q = q0; q < q1; q++) xr[q + iw0] += in[q];
                    else if (sw == 2)
                        for (int q = q0; q < q1; q++) xr[2 * q + iw0] += in[q];
                    else
                        for (int q = q0; q < q1; q++) xr[q * sw + iw0] += in[q];
                }
            }
}

/* Sum with 8 independent partial sums: vectorizes without -ffast-math and
 * still gives the same result on every run. */
static float sum_row(const float *v, int count) {
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= count; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += v[j + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < count; j++) s += v[j];
    return s;
}

/* Images per GEMM: as many as keep one column buffer near 512 KiB, so each
 * GEMM is wide (G*P*Q columns) while its operands stay in the L2 cache. The
 * bf16 GEMM packs its operands into half the bytes and needs deeper sums for
 * the weight gradient (k = G*P*Q): 2 MiB. */
static int group_size(const nn_conv2d_desc *d) {
    size_t per_image = (size_t)d->C * d->R * d->S * d->P * d->Q * sizeof(float);
    size_t g = ((d->bf16 ? 2048u : 512u) << 10) / (per_image ? per_image : 1);
    return g < 1 ? 1 : g > 64 ? 64 : (int)g;
}

/* Groups handed to whichever thread is free: at most G images, and at least
 * 4 groups per thread so that the work can even out. */
static int shared_group_size(int G, int n, int T) {
    const int per = n / (4 * T);
    return per < 1 ? 1 : per < G ? per : G;
}

static size_t round16(size_t floats) { return (floats + 15) & ~(size_t)15; }

static size_t bf16_floats(size_t bf16_elems) { return round16((bf16_elems + 1) / 2); }

/* Workspace layout, in floats: a shared part (bf16: the packed weights),
 * then one block per thread. */
typedef struct {
    size_t shared;                   /* floats before the first thread's block */
    size_t col, dcol, yg, dw, db;    /* offsets in a thread's block */
    size_t bscratch, colb, xb, dwt;  /* bf16 only: packed B blocks, bf16 col, bf16
                                        image, dW^T */
    size_t total;                    /* floats per thread */
} conv_ws;

static conv_ws ws_layout(const nn_conv2d_desc *d) {
    const size_t G = (size_t)group_size(d), PQ = (size_t)d->P * d->Q;
    const size_t CRS = (size_t)d->C * d->R * d->S;
    conv_ws l;
    l.shared = 0;
    l.col = 0;
    l.dcol = l.col + (d->bf16 ? 0 : round16(CRS * G * PQ)); /* bf16: colb instead */
    l.yg = l.dcol + round16(CRS * G * PQ);
    l.dw = l.yg + round16((size_t)d->K * G * PQ);
    l.db = l.dw + round16((size_t)d->K * CRS);
    l.total = l.db + round16((size_t)d->K);
    l.bscratch = l.colb = l.xb = l.dwt = l.total;
    if (d->bf16) {
        /* bf16 runs dense convolutions only: CRS is the fan-in, at most 2^24 */
        size_t fwd = nn_bf16_packed_a_size(d->K, (int)CRS);
        size_t bwd = nn_bf16_packed_a_size((int)CRS, d->K);
        size_t cols = nn_bf16_packed_a_size((int)CRS, (int)(G * PQ));
        /* one image in bf16, zero-padded for stride-1 convolutions */
        size_t image = (size_t)d->C * (d->H + 2 * d->pad_h) * (d->W + 2 * d->pad_w);
        if (dx_as_correlation(d)) { /* dy's column matrix and flipped kernel too */
            const size_t HW = (size_t)d->H * d->W, KRS = (size_t)d->K * d->R * d->S;
            size_t flip = nn_bf16_packed_a_size(d->C, (int)KRS);
            size_t dcols = nn_bf16_packed_a_size((int)KRS, (int)(G * HW));
            bwd = bwd > flip ? bwd : flip;
            cols = cols > dcols ? cols : dcols;
            const nn_conv2d_desc t = dx_desc(d);
            const size_t dimage = (size_t)t.C * (t.H + 2 * t.pad_h) * (t.W + 2 * t.pad_w);
            image = image > dimage ? image : dimage;
        }
        l.shared = bf16_floats(fwd > bwd ? fwd : bwd);
        l.bscratch = l.total;
        l.colb = l.bscratch + bf16_floats(nn_bf16_gemm_scratch_size());
        l.xb = l.colb + bf16_floats(cols);
        l.dwt = l.xb + bf16_floats(image);
        l.total = l.dwt + round16(CRS * (size_t)d->K);
    }
    return l;
}

size_t nn_conv2d_workspace(const nn_conv2d_desc *d, int threads) {
    const conv_ws l = ws_layout(d);
    size_t gemm = l.shared + (size_t)threads * l.total;
    size_t direct = nn_conv2d_direct_workspace(d, threads);
    size_t rows = nn_conv2d_rows_workspace(d, threads);
    size_t wino = nn_conv2d_winograd_workspace(d, threads);
    size_t depthwise = nn_conv2d_depthwise_workspace(d, threads);
    size_t phase = nn_conv2d_phase_workspace(d, threads);
    size_t most = gemm > direct ? gemm : direct;
    most = most > depthwise ? most : depthwise;
    most = most > rows ? most : rows;
    most = most > phase ? most : phase;
    return most > wino ? most : wino;
}

/* One channel group of a (grouped) convolution: group gi maps input channels
 * gi*C/groups.. to outputs gi*K/groups..; desc is the convolution of one
 * group, crs its im2col rows, slice its input floats per image. */
typedef struct {
    nn_conv2d_desc desc;
    int count, crs;
    size_t slice;
} conv_group;

static conv_group channel_group(const nn_conv2d_desc *d) {
    conv_group g;
    g.count = d->groups > 1 ? d->groups : 1;
    g.desc = *d;
    g.desc.C = d->C / g.count;
    g.desc.K = d->K / g.count;
    g.crs = g.desc.C * d->R * d->S;
    g.slice = (size_t)g.desc.C * d->H * d->W;
    return g;
}

/* the widest own (BLAS-free) 1x1 kernels that take d, NULL: BLAS */
static const nn_pointwise_kernels *own_pointwise(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    if (nn_pointwise_avx512.ok(d, ctx)) return &nn_pointwise_avx512;
    if (nn_pointwise_avx2.ok(d, ctx)) return &nn_pointwise_avx2;
    return NULL;
}

/* The own 1x1 kernels also run im2col's three products in fp32: a group's
 * column matrix (C/g*R*S, G*P*Q) is the image of a 1x1 convolution with
 * C/g*R*S channels. At ResNet-20's stride-2 shapes (C*R*S 144 and 288, 196
 * or 49 columns per image) OpenBLAS packed and zeroed more than it
 * multiplied (see docs/performance.md). NULL: OpenBLAS. */
static const nn_pointwise_kernels *own_im2col(const conv_group *cg, const nn_ctx *ctx) {
    if (cg->desc.bf16) return NULL;
    nn_conv2d_desc p = cg->desc;
    p.C = cg->crs, p.R = p.S = 1, p.groups = 1;
    return own_pointwise(&p, ctx);
}

/*
 * Forward, in groups of up to G images handed to whichever thread is free
 * (at least 4 groups per thread): im2col of the group into col (CRS, G*PQ), one GEMM
 * Yg (K, G*PQ) = W (K, CRS) x col, then bias and ReLU while scattering Yg
 * back to the (N, K, P, Q) layout.
 */
static void forward_im2col(float *y, const float *x, const float *w, const float *b,
                           const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int PQ = d->P * d->Q, G = group_size(d), Gd = shared_group_size(G, n, T);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * PQ;
    const conv_ws L = ws_layout(d);
    const conv_group cg = channel_group(d);
    const nn_conv2d_desc dg = cg.desc;
    const int ng = cg.count, CRSg = cg.crs;
    const size_t slice = cg.slice;
    const nn_pointwise_kernels *own = own_im2col(&cg, ctx);
    uint16_t *wpack = (uint16_t *)ws; /* bf16: W (K, CRS), packed once */
    if (d->bf16) nn_bf16_pack_a(ctx->isa, w, CRSg, 0, d->K, CRSg, wpack);
    NN_PARALLEL(T) {
        float *base = ws + L.shared + (size_t)nn_thread_id() * L.total;
        float *col = base + L.col, *yg = base + L.yg;
        uint16_t *bscratch = (uint16_t *)(base + L.bscratch), *colb = (uint16_t *)(base + L.colb);
        uint16_t *xb = (uint16_t *)(base + L.xb);
        NN_FOR_DYNAMIC /* groups of Gd images to whichever thread is free */
        for (int i0 = 0; i0 < n; i0 += Gd) {
            const int gc = n - i0 < Gd ? n - i0 : Gd;
            const size_t ld = (size_t)gc * PQ;
            if (d->bf16) { /* dense: one channel group */
                im2col_bf16(colb, xb, x + i0 * xs, xs, gc, d);
                nn_gemm_bf16_bh(ctx->isa, d->K, (int)ld, CRSg, wpack, colb, (int)((ld + 1) & ~1u),
                                yg, (int)ld, 0, bscratch);
            }
            for (int gi = 0; gi < ng && !d->bf16; gi++) {
                const float *wg = w + (size_t)gi * dg.K * CRSg;
                float *ygi = yg + (size_t)gi * dg.K * ld;
                for (int g = 0; g < gc; g++)
                    im2col(col + (size_t)g * PQ, ld, x + (i0 + g) * xs + gi * slice, &dg);
                if (own)
                    own->forward(ygi, col, wg, dg.K, CRSg, (int)ld, NULL);
                else
                    nn_sgemm(0, 0, dg.K, (int)ld, CRSg, 1.0f, wg, CRSg, col, (int)ld, 0.0f, ygi,
                             (int)ld);
            }
            for (int g = 0; g < gc; g++)
                for (int k = 0; k < d->K; k++) {
                    const float *src = yg + (size_t)k * ld + (size_t)g * PQ;
                    float *dst = y + (i0 + g) * ys + (size_t)k * PQ;
                    const float bk = b ? b[k] : 0.0f;
                    if (d->relu)
                        for (int j = 0; j < PQ; j++) {
                            float v = src[j] + bk;
                            dst[j] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN passes */
                        }
                    else
                        for (int j = 0; j < PQ; j++) dst[j] = src[j] + bk;
                }
        }
    }
}

/* dyg (K, gc*PQ) = the output gradients of images i0.. i0+gc-1, image by
 * image along each row, zero where the fused ReLU's output y <= 0. */
static void gather_dy(float *dyg, const float *dy, const float *y, int i0, int gc, int K, int PQ) {
    const size_t ys = (size_t)K * PQ, ld = (size_t)gc * PQ;
    for (int g = 0; g < gc; g++)
        for (int k = 0; k < K; k++) {
            const float *src = dy + (i0 + g) * ys + (size_t)k * PQ;
            float *dst = dyg + (size_t)k * ld + (size_t)g * PQ;
            if (y) {
                const float *yk = y + (i0 + g) * ys + (size_t)k * PQ;
                /* both loads unconditional so the select vectorizes */
                for (int j = 0; j < PQ; j++) {
                    float gj = src[j];
                    dst[j] = yk[j] > 0.0f ? gj : 0.0f;
                }
            } else {
                memcpy(dst, src, (size_t)PQ * sizeof(float));
            }
        }
}

/*
 * Backward, in groups of images: gather dy (masked by the fused ReLU) into
 * dYg (K, G*PQ); dW += dYg x col^T and db += row sums into the thread's own
 * share, over a fixed range of images per thread; then, group by group to
 * whichever thread is free, dcol = W^T x dYg folded back by col2im. The
 * shares are added to dw and db in thread order, so results depend only on
 * the thread count.
 */
static void backward_im2col(float *dx, float *dw, float *db, const float *dy, const float *y,
                            const float *x, const float *w, const nn_conv2d_desc *d, int n,
                            float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int PQ = d->P * d->Q, G = group_size(d), Gd = shared_group_size(G, n, T);
    const size_t xs = (size_t)d->C * d->H * d->W;
    const conv_group cg = channel_group(d);
    const nn_conv2d_desc dg = cg.desc;
    const int ng = cg.count, CRSg = cg.crs;
    const size_t slice = cg.slice;
    const size_t wn = (size_t)d->K * CRSg; /* weight (K, C/groups, R, S) */
    const conv_ws L = ws_layout(d);
    const nn_pointwise_kernels *own = own_im2col(&cg, ctx); /* dW: col^T in dcol */
    /* bf16: W^T (CRS, K), or the flipped kernel (C, KRS), packed once */
    uint16_t *wtpack = (uint16_t *)ws;
    const int dx_corr = dx && dx_as_correlation(d);
    const nn_conv2d_desc dxd = dx_desc(d);
    if (dx_corr) pack_flipped_bf16(wtpack, w, d);
    else if (d->bf16 && dx) nn_bf16_pack_a(ctx->isa, w, CRSg, 1, CRSg, d->K, wtpack);
    /* the weight gradient over a fixed share of the images per thread (its
     * sums in a fixed order), then the input gradient group by group to
     * whichever thread is free */
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        float *base = ws + L.shared + (size_t)t * L.total;
        float *col = base + L.col, *dcol = base + L.dcol, *dyg = base + L.yg;
        float *dwt = base + L.dw, *dbt = base + L.db;
        uint16_t *bscratch = (uint16_t *)(base + L.bscratch), *colb = (uint16_t *)(base + L.colb);
        uint16_t *xb = (uint16_t *)(base + L.xb);
        float *dw_t = base + L.dwt; /* bf16: dW^T (CRS, K) of this thread */
        memset(dwt, 0, wn * sizeof(float));
        if (d->bf16) memset(dw_t, 0, wn * sizeof(float));
        memset(dbt, 0, (size_t)d->K * sizeof(float));
        const int end = n * (t + 1) / T;
        for (int i0 = n * t / T; i0 < end; i0 += G) {
            const int gc = end - i0 < G ? end - i0 : G;
            const size_t ld = (size_t)gc * PQ;
            gather_dy(dyg, dy, d->relu ? y : NULL, i0, gc, d->K, PQ);
            for (int k = 0; db && k < d->K; k++) dbt[k] += sum_row(dyg + (size_t)k * ld, (int)ld);
            for (int gi = 0; gi < ng; gi++) {
                const float *dyk = dyg + (size_t)gi * dg.K * ld;
                if (d->bf16) {
                    /* dW^T (CRS, K) += col (CRS, ld) x dYg^T; colb is packed already */
                    im2col_bf16(colb, xb, x + i0 * xs, xs, gc, d);
                    nn_gemm_bf16(ctx->isa, CRSg, d->K, (int)ld, colb, dyk, (int)ld, 1, dw_t, d->K,
                                 0, 1, bscratch);
                } else {
                    for (int g = 0; g < gc; g++)
                        im2col(col + (size_t)g * PQ, ld, x + (i0 + g) * xs + gi * slice, &dg);
                    float *dwg = dwt + (size_t)gi * dg.K * CRSg;
                    if (own) {
                        own->transpose(dcol, col, CRSg, (int)ld);
                        own->weight_grad_rows(dwg, dyk, dcol, dg.K, CRSg, (int)ld, NULL);
                    } else
                        nn_sgemm(0, 1, dg.K, CRSg, (int)ld, 1.0f, dyk, (int)ld, col, (int)ld, 1.0f,
                                 dwg, CRSg);
                }
            }
        }
        if (d->bf16)
            for (int k = 0; k < d->K; k++)
                for (int j = 0; j < CRSg; j++) dwt[(size_t)k * CRSg + j] += dw_t[(size_t)j * d->K + k];
        if (dx) {
            NN_FOR_DYNAMIC
            for (int i0 = 0; i0 < n; i0 += Gd) {
                const int gc = n - i0 < Gd ? n - i0 : Gd;
                const size_t ld = (size_t)gc * PQ;
                gather_dy(dyg, dy, d->relu ? y : NULL, i0, gc, d->K, PQ);
                if (dx_corr) {
                    /* dx of each image = W' (C, KRS) x the columns of its dy */
                    const size_t HW = (size_t)d->H * d->W, ldx = (size_t)gc * HW;
                    im2col_bf16_strided(colb, xb, dyg, (size_t)PQ, ld, gc, &dxd);
                    for (int g = 0; g < gc; g++)
                        nn_gemm_bf16_bh(ctx->isa, d->C, (int)HW, d->K * d->R * d->S, wtpack,
                                        colb + (size_t)g * HW, (int)((ldx + 1) & ~(size_t)1),
                                        dx + (i0 + g) * xs, (int)HW, 0, bscratch);
                    continue;
                }
                if (!d->dx_add) /* else col2im adds to the gradient already there */
                    for (int g = 0; g < gc; g++) memset(dx + (i0 + g) * xs, 0, xs * sizeof(float));
                for (int gi = 0; gi < ng; gi++) {
                    const float *dyk = dyg + (size_t)gi * dg.K * ld;
                    const float *wk = w + (size_t)gi * dg.K * CRSg;
                    if (d->bf16)
                        nn_gemm_bf16(ctx->isa, CRSg, (int)ld, d->K, wtpack, dyk, (int)ld, 0, dcol,
                                     (int)ld, 0, 0, bscratch);
                    else if (own)
                        own->input_grad(dcol, dyk, wk, dg.K, CRSg, (int)ld, NULL);
                    else
                        nn_sgemm(1, 0, CRSg, (int)ld, dg.K, 1.0f, wk, CRSg, dyk, (int)ld, 0.0f,
                                 dcol, (int)ld);
                    for (int g = 0; g < gc; g++)
                        col2im(dx + (i0 + g) * xs + gi * slice, dcol + (size_t)g * PQ, ld, &dg);
                }
            }
        }
    }

    /* add the per-thread shares in thread order */
    for (int t = 0; t < T; t++) {
        const float *dwt = ws + L.shared + (size_t)t * L.total + L.dw;
        const float *dbt = ws + L.shared + (size_t)t * L.total + L.db;
        for (size_t j = 0; j < wn; j++) dw[j] += dwt[j];
        if (db)
            for (int k = 0; k < d->K; k++) db[k] += dbt[k];
    }
}

/* ------------------------------------------------------------ 1x1 */

/* A 1x1 convolution with stride 1 and no padding is a matrix product on each
 * image as it lies in memory: x (C, H*W) is already the column matrix, so the
 * GEMMs read the image itself instead of an im2col copy of it. With the
 * own AVX-512 or AVX2 kernels (conv2d_pointwise_avx512.c,
 * conv2d_pointwise_avx2.c) a strided one (ResNet's stride-2 projections) is
 * taken too: its columns are every stride-th pixel, copied per image into
 * the thread's col buffer. */
static int pointwise_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    if (d->R != 1 || d->S != 1 || d->pad_h != 0 || d->pad_w != 0 || nn_conv2d_dilated(d) ||
        d->bf16)
        return 0;
    return (d->stride_h == 1 && d->stride_w == 1) || own_pointwise(d, ctx);
}

static int strided(const nn_conv2d_desc *d) { return d->stride_h != 1 || d->stride_w != 1; }

/* xs (C, P*Q) = the pixels of image x (C, H, W) a 1x1 convolution reads;
 * stride 2 (ResNet's projections) with the stride a constant, which the
 * compiler vectorizes (a variable stride left it a scalar loop: with the
 * scatter below and a memset of dx, a third of the 16 -> 32 projection's
 * time on a Xeon) */
static void subsample(float *xs, const float *x, const nn_conv2d_desc *d) {
    const int Q = d->Q;
    for (int c = 0; c < d->C; c++)
        for (int p = 0; p < d->P; p++) {
            const float *row = x + ((size_t)c * d->H + (size_t)p * d->stride_h) * d->W;
            float *dst = xs + ((size_t)c * d->P + p) * Q;
            if (d->stride_w == 2)
                for (int q = 0; q < Q; q++) dst[q] = row[2 * q];
            else
                for (int q = 0; q < Q; q++) dst[q] = row[(size_t)q * d->stride_w];
        }
}

/* image dx (C, H, W) from dxs (C, P*Q): each pixel gets its one term (added
 * to what is there when d->dx_add, as the scratch and the graph's add would
 * give it: one add), the pixels no window reads 0 (untouched when dx_add).
 * Row by row, each row written once. */
static void scatter_dx(float *dx, const float *dxs, const nn_conv2d_desc *d) {
    const int W = d->W, Q = d->Q, sw = d->stride_w;
    for (int c = 0; c < d->C; c++)
        for (int u = 0; u < d->H; u++) {
            float *row = dx + ((size_t)c * d->H + u) * W;
            const int p = u / d->stride_h;
            if (u % d->stride_h != 0 || p >= d->P) { /* a row no window reads */
                if (!d->dx_add) memset(row, 0, (size_t)W * sizeof(float));
                continue;
            }
            const float *src = dxs + ((size_t)c * d->P + p) * Q;
            if (d->dx_add) {
                for (int q = 0; q < Q; q++) row[(size_t)q * sw] += src[q];
            } else if (sw == 2 && W == 2 * Q) {
                for (int q = 0; q < Q; q++) row[2 * q] = src[q], row[2 * q + 1] = 0.0f;
            } else {
                memset(row, 0, (size_t)W * sizeof(float));
                for (int q = 0; q < Q; q++) row[(size_t)q * sw] = src[q];
            }
        }
}

/* Per image, one GEMM per channel group: y (K/g, PQ) = W (K/g, C/g) x x
 * (C/g, PQ), then bias and ReLU in place; a contiguous share of the images
 * per thread, the own kernels asking for the next image's x while they
 * multiply (MobileNet-small's pw1 as in backward_pointwise_image: 45-53 ->
 * 44-49 us per image; pw2 and pw3 read x from the caches already).
 * With neither, an output larger than the caches goes past them (the own
 * AVX-512 kernel's forward_streamed): on MobileNet-small's pw1 shape at
 * batch 64, 1 thread, the GEMMs alone took 2.16 ms against 2.85 ms with
 * plain stores (which read each line of y in before writing it). */
void nn_conv2d_forward_pointwise_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                        double *stats, const float *w, const float *b,
                                        const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int HW = d->H * d->W, PQ = d->P * d->Q, ng = d->groups > 1 ? d->groups : 1;
    const int Cg = d->C / ng, Kg = d->K / ng;
    const size_t xs = (size_t)d->C * HW, ys = (size_t)d->K * PQ;
    const conv_ws L = ws_layout(d); /* col: a strided one's pixels */
    const nn_pointwise_kernels *own = own_pointwise(d, ctx);
    /* an output more than twice as large as the threads' L2 caches, read
     * next by another layer: stored past the caches, the statistics taken
     * on the way. One less large stays in the caches (the L3's: MobileNet-
     * small's pw3, 1.6 MB at batch 64, 1 thread on a Zen 4: its forward and
     * the pooling's that reads it 0.15 ms faster than streamed). */
    const int streamed = own && own->forward_streamed && !b && !d->relu &&
                         nn_larger_than_l2((size_t)n * ys * sizeof(float), 2 * T);
    uint64_t cells[T];
    nn_shares_init(cells, T, n);
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        float *col = ws + L.shared + (size_t)t * L.total + L.col;
        float *band = ws + L.shared + (size_t)t * L.total + L.yg;
        /* a contiguous share of the images per thread (stolen from the back
         * by a thread that has run out), so that each image's GEMMs can ask
         * for the next one's x (the own kernels) */
        long i, in;
        while ((i = nn_shares_take(cells, T, t, &in)) >= 0) {
            float *yi = y + i * ys;
            const float *xi = x + i * xs;
            nn_line_feed next = {.at = {in >= 0 ? (const char *)(x + in * xs) : NULL},
                                 .lines = {in >= 0 ? (xs * sizeof(float) + 63) / 64 : 0}};
            if (strided(d)) subsample(col, xi, d), xi = col;
            if (map) own->map(col, xi, map, d->C, PQ), xi = col;
            if (streamed) {
                own->forward_streamed(yi, xi, w, d->K, d->C, PQ, band,
                                      stats ? stats + 2 * (size_t)i * d->K : NULL, ctx, &next);
                continue;
            }
            if (own) own->forward(yi, xi, w, d->K, d->C, PQ, &next);
            for (int gi = 0; !own && gi < ng; gi++)
                nn_sgemm(0, 0, Kg, HW, Cg, 1.0f, w + (size_t)gi * Kg * Cg, Cg,
                         xi + (size_t)gi * Cg * HW, HW, 0.0f, yi + (size_t)gi * Kg * HW, HW);
            for (int k = 0; k < d->K; k++) {
                float *yk = yi + (size_t)k * PQ;
                const float bk = b ? b[k] : 0.0f;
                if (d->relu)
                    for (int j = 0; j < PQ; j++) {
                        const float v = yk[j] + bk;
                        yk[j] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN passes */
                    }
                else if (b)
                    for (int j = 0; j < PQ; j++) yk[j] += bk;
            }
            if (stats) /* the batch norm's rows of this image, in cache */
                nn_batchnorm_row_stats(yi, d->K, PQ, stats + 2 * (size_t)i * d->K, ctx);
        }
    }
}

static void forward_pointwise(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_forward_pointwise_mapped(y, x, NULL, NULL, w, b, d, n, ws, ctx);
}

static void forward_pointwise_stats(float *y, const float *x, double *stats, const float *w,
                                    const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                    nn_ctx *ctx) {
    nn_conv2d_forward_pointwise_mapped(y, x, NULL, stats, w, b, d, n, ws, ctx);
}

static void forward_depthwise_stats(float *y, const float *x, double *stats, const float *w,
                                    const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                    nn_ctx *ctx) {
    nn_conv2d_forward_depthwise_mapped(y, x, NULL, stats, w, b, d, n, ws, ctx);
}

/* A feed of the rows k0.. k0+rows-1 of an image's dy (PQ floats each) and,
 * where the backward reads it (y not NULL: a ReLU's mask or the batch norm
 * after), of y */
static nn_line_feed rows_feed(const float *dy, const float *y, int k0, int rows, int PQ) {
    const size_t at = (size_t)k0 * PQ, lines = ((size_t)rows * PQ * sizeof(float) + 63) / 64;
    nn_line_feed f = {.at = {(const char *)(dy + at), y ? (const char *)(y + at) : NULL},
                      .lines = {lines, y ? lines : 0}};
    return f;
}

/* One image's dW, db and dx with the own kernels (own), band by band:
 * x first (subsampled, mapped, transposed); then for each band of own->rows
 * rows of dY (formed from the batch norm after, ReLU-masked, or dy as it
 * is) its share of dW, while the next band's rows of dy and y are asked for
 * (the next image's first band after the last: next_dy, next_y; NULL: none);
 * dx = W^T dY while the next image's x is (next_x); then the prologue's
 * batch norm sums over dx. The same sums as a whole image at a time: each
 * value of dW is one row of dY against one column of x^T, in order. Batch
 * 64, 1 thread, a Zen 4, per image: MobileNet-small's pw1 (32 -> 64 at
 * 28x28) took 93-98 us with its loads in passes of their own (72 with one
 * image in cache), 79-82 fed; pw2 (64 -> 128 at 14x14) 80-85, then 70-72. */
static void backward_pointwise_image(float *dxi, float *dwt, float *dbt, const float *dyi,
                                     const float *yi, const float *xi, const float *next_dy,
                                     const float *next_y, const float *next_x,
                                     const nn_pointwise_kernels *own, const nn_conv2d_map *map,
                                     const nn_bn_dx *bn, const float *w, const nn_conv2d_desc *d,
                                     float *base, const conv_ws *L, nn_ctx *ctx) {
    const int HW = d->H * d->W, PQ = d->P * d->Q, K = d->K, rows = own->rows;
    const float *xraw = xi, *masky = bn || d->relu ? yi : NULL;
    float *dyg = base + L->yg;
    if (strided(d)) subsample(base + L->dcol, xi, d), xi = base + L->dcol;
    if (map) {
        own->map(base + L->dcol, xi, map, d->C, PQ);
        xi = base + L->dcol;
    }
    own->transpose(base + L->col, xi, d->C, PQ);
    const float *dY = bn || d->relu ? dyg : dyi;
    for (int k0 = 0; k0 < K; k0 += rows) {
        const size_t at = (size_t)k0 * PQ;
        if (bn)
            nn_batchnorm_form_dx(dyg + at, dyi + at, yi + at, k0, rows, PQ, bn, ctx);
        else if (d->relu)
            gather_dy(dyg + at, dyi + at, yi + at, 0, 1, rows, PQ);
        nn_line_feed next = k0 + rows < K ? rows_feed(dyi, masky, k0 + rows, rows, PQ)
                            : next_dy     ? rows_feed(next_dy, masky ? next_y : NULL, 0, rows, PQ)
                                          : (nn_line_feed){.per_step = 0};
        own->weight_grad_rows(dwt + (size_t)k0 * d->C, dY + at, base + L->col, rows, d->C, PQ,
                              &next);
    }
    for (int k = 0; dbt && k < K; k++) dbt[k] += sum_row(dY + (size_t)k * PQ, PQ);
    if (!dxi) return;
    const size_t xs = (size_t)d->C * HW;
    /* dx's lines (ahead of the stores that fill them), then the next x */
    const size_t xl = (xs * sizeof(float) + 63) / 64;
    nn_line_feed nx = {.at = {(const char *)dxi, (const char *)next_x},
                       .lines = {xl, next_x ? xl : 0}};
    if (strided(d)) {
        own->input_grad(base + L->dcol, dY, w, K, d->C, PQ, &nx);
        scatter_dx(dxi, base + L->dcol, d);
    } else {
        own->input_grad(dxi, dY, w, K, d->C, PQ, &nx);
    }
    for (int c = 0; map && map->grad_sums && c < d->C; c++) /* in cache */
        nn_batchnorm_grad_sums_row(dxi + (size_t)c * HW, xraw + (size_t)c * HW, HW, map->mean[c],
                                   map->scale[c], map->shift[c], map->relu,
                                   &map->grad_sums[2 * (size_t)c],
                                   &map->grad_sums[2 * (size_t)c + 1], ctx);
}

/* Backward per image: dW (K/g, C/g) += dY (K/g, PQ) x x^T over a fixed share
 * of the images per thread (its own dW and db, added in thread order, as
 * backward_im2col), then dx (C/g, PQ) = W^T x dY image by image.
 * dY is the layer's dy itself, its ReLU-masked copy, or (bn) the batch
 * norm's input gradient formed from its output gradient dy and y. The own
 * kernels take an image at a time (backward_pointwise_image); BLAS a
 * channel group at a time. */
void nn_conv2d_backward_pointwise_mapped(float *dx, float *dw, float *db, const float *dy,
                                         const float *y, const float *x, const nn_conv2d_map *map,
                                         const nn_bn_dx *bn, const float *w,
                                         const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int T = ctx->threads < n ? ctx->threads : n;
    const int HW = d->H * d->W, PQ = d->P * d->Q, ng = d->groups > 1 ? d->groups : 1;
    const int Cg = d->C / ng, Kg = d->K / ng;
    const size_t xs = (size_t)d->C * HW, ys = (size_t)d->K * PQ, wn = (size_t)d->K * Cg;
    /* its yg holds one image's dY, dw and db the shares; for the own
     * kernels col the transposed image, dcol a strided one's pixels or the
     * mapped image and then a strided one's gradient */
    const conv_ws L = ws_layout(d);
    const nn_pointwise_kernels *own = own_pointwise(d, ctx);
    /* each thread its share of the images, each image's dy read (and masked)
     * once for the weight gradient and the input gradient both, while in
     * cache */
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        float *base = ws + L.shared + (size_t)t * L.total;
        float *dyg = base + L.yg, *dwt = base + L.dw, *dbt = base + L.db;
        memset(dwt, 0, wn * sizeof(float));
        memset(dbt, 0, (size_t)d->K * sizeof(float));
        const int end = n * (t + 1) / T;
        for (int i = n * t / T; i < end; i++) {
            const float *dyi = dy + i * ys;
            if (own) {
                const int more = i + 1 < end;
                nn_conv2d_map mi; /* the map with this image's rows of the sums */
                if (map) {
                    mi = *map;
                    if (map->grad_sums) mi.grad_sums = map->grad_sums + 2 * (size_t)i * d->C;
                }
                backward_pointwise_image(dx ? dx + i * xs : NULL, dwt, db ? dbt : NULL, dyi,
                                         y + i * ys, x + i * xs, more ? dy + (i + 1) * ys : NULL,
                                         more ? y + (i + 1) * ys : NULL,
                                         more ? x + (i + 1) * xs : NULL, own, map ? &mi : NULL, bn,
                                         w, d, base, &L, ctx);
                continue;
            }
            if (bn) {
                nn_batchnorm_form_dx(dyg, dyi, y + i * ys, 0, d->K, PQ, bn, ctx);
                dyi = dyg;
            } else if (d->relu) {
                gather_dy(dyg, dy, y, i, 1, d->K, PQ);
                dyi = dyg;
            }
            for (int k = 0; db && k < d->K; k++) dbt[k] += sum_row(dyi + (size_t)k * PQ, PQ);
            for (int gi = 0; gi < ng; gi++)
                nn_sgemm(0, 1, Kg, Cg, HW, 1.0f, dyi + (size_t)gi * Kg * HW, HW,
                         x + i * xs + (size_t)gi * Cg * HW, HW, 1.0f, dwt + (size_t)gi * Kg * Cg,
                         Cg);
            for (int gi = 0; dx && gi < ng; gi++)
                nn_sgemm(1, 0, Cg, HW, Kg, 1.0f, w + (size_t)gi * Kg * Cg, Cg,
                         dyi + (size_t)gi * Kg * HW, HW, 0.0f, dx + i * xs + (size_t)gi * Cg * HW,
                         HW);
        }
    }
    for (int t = 0; t < T; t++) {
        const float *dwt = ws + L.shared + (size_t)t * L.total + L.dw;
        const float *dbt = ws + L.shared + (size_t)t * L.total + L.db;
        for (size_t j = 0; j < wn; j++) dw[j] += dwt[j];
        if (db)
            for (int k = 0; k < d->K; k++) db[k] += dbt[k];
    }
}

static void backward_pointwise(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const float *x, const float *w, const nn_conv2d_desc *d, int n,
                               float *ws, nn_ctx *ctx) {
    nn_conv2d_backward_pointwise_mapped(dx, dw, db, dy, y, x, NULL, NULL, w, d, n, ws, ctx);
}

/* ------------------------------------------------------------ kernel order */

static int always(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    (void)d, (void)ctx;
    return 1;
}

/* Winograd's input gradient, then its weight gradient */
static void backward_winograd(float *dx, float *dw, float *db, const float *dy, const float *y,
                              const float *x, const float *w, const nn_conv2d_desc *d, int n,
                              float *ws, nn_ctx *ctx) {
    if (dx) nn_conv2d_backward_data_winograd(dx, dy, y, w, d, n, ws, ctx);
    nn_conv2d_backward_weights_winograd(dw, db, dy, y, x, d, n, ws, ctx);
}

/* The Winograd weight gradient holds C in vectors of 16 with AVX-512; with a
 * single vector F(2x2)'s kernel waits on loads and the kernels after it do as
 * well (the seed's conv2, C = 16), but F(4x4)'s, with 2.25x as many points
 * per tile, beat the direct kernel there (ResNet-20's 16-channel 28x28
 * layers: 5-10% less backward time in alternating runs). The AVX2 kernels
 * hold 8 channels per vector, so C = 16 is two, and the kernel after them is
 * im2col: Winograd takes C = 16 there. */
static int winograd_weights_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return d->C >= 32 || (ctx->isa < NN_ISA_AVX512 && d->C >= 16) ||
           nn_conv2d_winograd4_ok(d, ctx);
}

/*
 * The kernels, in the order they are tried: forward, backward and
 * nn_conv2d_kernel_name all take the first whose ok() accepts the shape.
 * An entry whose weights_ok() declines computes only the input gradient
 * (backward_data); the weight gradient then comes from the next entry in
 * this order that accepts the shape. im2col + GEMM takes every shape.
 */
typedef struct {
    const char *name;
    int (*ok)(const nn_conv2d_desc *d, const nn_ctx *ctx);
    void (*forward)(float *y, const float *x, const float *w, const float *b,
                    const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
    /* dx (NULL: skip), dw and db; dy masked where y <= 0 when d->relu */
    void (*backward)(float *dx, float *dw, float *db, const float *dy, const float *y,
                     const float *x, const float *w, const nn_conv2d_desc *d, int n, float *ws,
                     nn_ctx *ctx);
    int (*weights_ok)(const nn_conv2d_desc *d, const nn_ctx *ctx); /* NULL: always */
    void (*backward_data)(float *dx, const float *dy, const float *y, const float *w,
                          const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
    /* NULL, or the forward writing the batch norm's row statistics of its
     * output while they are in cache (stats_in_cache) */
    void (*forward_stats)(float *y, const float *x, double *stats, const float *w,
                          const float *b, const nn_conv2d_desc *d, int n, float *ws,
                          nn_ctx *ctx);
} conv_kernel;

static void forward_winograd_stats(float *y, const float *x, double *stats, const float *w,
                                   const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                   nn_ctx *ctx) {
    nn_conv2d_forward_winograd_mapped(y, x, NULL, stats, w, b, d, n, ws, ctx);
}

static const conv_kernel kernel_order[] = {
    {"depthwise", nn_conv2d_depthwise_ok, nn_conv2d_forward_depthwise,
     nn_conv2d_backward_depthwise, NULL, NULL, forward_depthwise_stats},
    {"winograd", nn_conv2d_winograd_ok, nn_conv2d_forward_winograd, backward_winograd,
     winograd_weights_ok, nn_conv2d_backward_data_winograd, forward_winograd_stats},
    {"direct", nn_conv2d_direct_ok, nn_conv2d_forward_direct, nn_conv2d_backward_direct, NULL,
     NULL, nn_conv2d_forward_direct_stats},
    {"rows", nn_conv2d_rows_ok, nn_conv2d_forward_rows, nn_conv2d_backward_rows, NULL, NULL,
     nn_conv2d_forward_rows_stats},
    {"phase", nn_conv2d_phase_ok, nn_conv2d_forward_phase, nn_conv2d_backward_phase, NULL, NULL,
     nn_conv2d_forward_phase_stats},
    {"pointwise", pointwise_ok, forward_pointwise, backward_pointwise, NULL, NULL,
     forward_pointwise_stats},
    {"im2col", always, forward_im2col, backward_im2col, NULL, NULL, NULL},
};

/* whether d's forward kernel writes the batch norm's statistics of its
 * output in cache: the direct, rows, phase and 1x1 kernels image by image,
 * the depthwise ones plane by plane, Winograd in F(4x4)'s groups of whole
 * images */
static int stats_in_cache(const nn_conv2d_desc *d, const nn_ctx *ctx);

/* Index of the first kernel from entry `from` on that takes d. */
static int first_kernel(const nn_conv2d_desc *d, const nn_ctx *ctx, int from) {
    const int last = (int)(sizeof kernel_order / sizeof kernel_order[0]) - 1;
    int k = from;
    while (k < last && !kernel_order[k].ok(d, ctx)) k++;
    return k;
}

const char *nn_conv2d_kernel_name(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return kernel_order[first_kernel(d, ctx, 0)].name;
}

/* The first kernel in kernel_order that takes the shape. */
void nn_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    kernel_order[first_kernel(d, ctx, 0)].forward(y, x, w, b, d, n, ws, ctx);
}

/* The forward's kernel, and for the weight gradient the next one in
 * kernel_order when the forward's declines it. */
/* d, or in *tmp d without its ReLU mask when dy arrives masked (graph.c) */
static const nn_conv2d_desc *backward_desc(const nn_conv2d_desc *d, nn_conv2d_desc *tmp) {
    if (!(d->relu && d->relu_masked_later)) return d;
    *tmp = *d;
    tmp->relu = 0;
    return tmp;
}

void nn_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const float *x, const float *w, const nn_conv2d_desc *d, int n, float *ws,
                        nn_ctx *ctx) {
    nn_conv2d_desc unmasked;
    d = backward_desc(d, &unmasked);
    int k = first_kernel(d, ctx, 0);
    if (kernel_order[k].weights_ok && !kernel_order[k].weights_ok(d, ctx)) {
        if (dx) kernel_order[k].backward_data(dx, dy, y, w, d, n, ws, ctx);
        dx = NULL; /* done: only dw and db from the next kernel that takes d */
        k = first_kernel(d, ctx, k + 1);
    }
    kernel_order[k].backward(dx, dw, db, dy, y, x, w, d, n, ws, ctx);
}

/* A prologue (a->in_scale: x is a batch norm's input) runs only where
 * takes_prologue said so: in the depthwise kernels, the own 1x1 kernels
 * (AVX-512 or AVX2, stride 1) and Winograd. */
static int is_depthwise(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return strcmp(nn_conv2d_kernel_name(d, ctx), "depthwise") == 0;
}

static int is_mapped_pointwise(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return strcmp(nn_conv2d_kernel_name(d, ctx), "pointwise") == 0 && !strided(d) &&
           own_pointwise(d, ctx);
}

static int is_rows(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return strcmp(nn_conv2d_kernel_name(d, ctx), "rows") == 0;
}

static int is_winograd(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return strcmp(nn_conv2d_kernel_name(d, ctx), "winograd") == 0;
}

static int stats_in_cache(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    const conv_kernel *k = &kernel_order[first_kernel(d, ctx, 0)];
    return k->forward_stats &&
           (strcmp(k->name, "winograd") != 0 || nn_conv2d_winograd_stats_in_cache(d, ctx));
}

/* a->out_stats (sums_output_stats): the forward kernel writes them in cache
 * (stats_in_cache); after any other kernel (a context changed since
 * planning), a pass of their own */
static void conv2d_fwd(const nn_op_args *a) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    double *stats = a->out_stats;
    double *in_cache = stats && stats_in_cache(d, a->ctx) ? stats : NULL;
    if (a->in_out && !(is_winograd(d, a->ctx) && nn_conv2d_winograd_writes_input(d, a->ctx))) {
        /* the batch norm's output to write (writes_from), and a kernel now
         * (a context changed since planning) that does not: its pass, then
         * the output read as it is */
        nn_batchnorm_map_rows(a->in_out, a->x, a->in_res, a->in_scale, a->in_shift, a->in_relu,
                              d->C, d->H * d->W, a->n, a->ctx->threads, a->ctx);
        nn_op_args plain = *a;
        plain.x = plain.xs[0] = a->in_out;
        plain.in_scale = plain.in_shift = plain.in_res = NULL;
        plain.in_out = NULL;
        conv2d_fwd(&plain);
        return;
    }
    if (a->in_scale) {
        const nn_conv2d_map m = {a->in_scale, a->in_shift, a->in_relu, NULL,
                                 NULL,        a->in_res,   a->in_out};
        if (is_depthwise(d, a->ctx))
            nn_conv2d_forward_depthwise_mapped(a->y, a->x, &m, in_cache, a->w, a->b, d, a->n,
                                               a->ws, a->ctx);
        else if (is_mapped_pointwise(d, a->ctx))
            nn_conv2d_forward_pointwise_mapped(a->y, a->x, &m, in_cache, a->w, a->b, d, a->n,
                                               a->ws, a->ctx);
        else
            nn_conv2d_forward_winograd_mapped(a->y, a->x, &m, in_cache, a->w, a->b, d, a->n,
                                              a->ws, a->ctx);
        if (in_cache) stats = NULL;
    } else if (in_cache) {
        kernel_order[first_kernel(d, a->ctx, 0)].forward_stats(a->y, a->x, in_cache, a->w, a->b,
                                                               d, a->n, a->ws, a->ctx);
        stats = NULL;
    } else {
        nn_conv2d_forward(a->y, a->x, a->w, a->b, d, a->n, a->ws, a->ctx);
    }
    if (stats) {
        const size_t image = (size_t)d->K * d->P * d->Q;
        NN_PARALLEL_FOR(a->ctx->threads)
        for (int i = 0; i < a->n; i++)
            nn_batchnorm_row_stats(a->y + i * image, d->K, d->P * d->Q,
                                   stats + 2 * (size_t)i * d->K, a->ctx);
    }
}

/* With a prologue (a->in_scale) or a batch norm's input gradient to form
 * (a->bn_dy, forms_dy: a first layer's rows kernel, the depthwise, 1x1 and
 * F(4x4) Winograd kernels, the only ones it names) the kernels that take
 * them run directly. */
static int conv2d_bwd_kernels(const nn_op_args *a);

/* a->in_rows (writes_from): the batch norm's sums pass on dx, complete
 * now, where the kernel did not run it group by group */
static void conv2d_bwd(const nn_op_args *a) {
    if (conv2d_bwd_kernels(a) || !a->in_rows.rows) return;
    const nn_conv2d_desc *d = &a->node->d.conv;
    const long rows = (long)a->n * d->C;
    nn_batchnorm_grad_rows(a->dx, 0, rows, rows, &a->in_rows, a->ctx->threads, a->ctx);
}

/* returns 1 if the kernel ran a->in_rows */
static int conv2d_bwd_kernels(const nn_op_args *a) {
    nn_conv2d_desc d = a->node->d.conv;
    d.dx_add = (a->dx_add & 1u) != 0; /* accumulates_dx said this kernel adds into dx */
    const nn_bn_dx *bn = a->bn_dy ? &a->bn_dx : NULL;
    if (a->in_scale || bn) {
        const nn_conv2d_map m = {a->in_scale, a->in_shift, a->in_relu, a->in_grad_sums,
                                 a->in_mean,  NULL,        NULL};
        const nn_conv2d_map *map = a->in_scale ? &m : NULL;
        const float *dy = bn ? a->bn_dy : a->dy;
        nn_conv2d_desc unmasked;
        const nn_conv2d_desc *dd = backward_desc(&d, &unmasked);
        if (bn && is_winograd(dd, a->ctx)) { /* F(4x4) (conv2d_forms_dy) */
            const nn_bn_grad_rows *rows = a->in_rows.rows && a->dx ? &a->in_rows : NULL;
            nn_conv2d_backward_winograd_formed(a->dx, a->dw, a->db, dy, a->y, a->x, map, rows, bn,
                                               a->w, dd, a->n, a->ws, a->ctx);
            return rows != NULL;
        } else if (bn && is_rows(dd, a->ctx)) { /* a first layer: no dx (conv2d_forms_dy) */
            nn_conv2d_backward_rows_formed(a->dw, a->db, dy, a->y, a->x, bn, a->w, dd, a->n,
                                           a->ws, a->ctx);
        } else if (is_depthwise(dd, a->ctx)) {
            nn_conv2d_backward_depthwise_mapped(a->dx, a->dw, a->db, dy, a->y, a->x, map, bn,
                                                a->w, dd, a->n, a->ws, a->ctx);
        } else if (!map || is_mapped_pointwise(dd, a->ctx)) {
            nn_conv2d_backward_pointwise_mapped(a->dx, a->dw, a->db, dy, a->y, a->x, map, bn,
                                                a->w, dd, a->n, a->ws, a->ctx);
        } else { /* Winograd (takes_prologue): dx reads no x */
            if (a->dx)
                nn_conv2d_backward_data_winograd_mapped(a->dx, a->dy, a->y, a->x, &m, a->w, dd,
                                                        a->n, a->ws, a->ctx);
            nn_conv2d_backward_weights_winograd_mapped(a->dw, a->db, a->dy, a->y, a->x, &m, dd,
                                                       a->n, a->ws, a->ctx);
        }
        return 0;
    }
    if (d.dx_add) {
        nn_conv2d_backward(a->dx, a->dw, a->db, a->dy, a->y, a->x, a->w, &d, a->n, a->ws, a->ctx);
        return 0;
    }
    nn_conv2d_backward(a->dx, a->dw, a->db, a->dy, a->y, a->x, a->w, &a->node->d.conv, a->n, a->ws,
                       a->ctx);
    return 0;
}

/* The Winograd and direct input gradients and im2col's fp32 col2im add into
 * dx when d->dx_add (a residual block's input, whose gradient the block's
 * add wrote first; the input of a downsampling block's stride-2 3x3
 * convolution, whose projection wrote it first): no scratch copy and no
 * separate pass to add it. All give the bytes of the scratch and the add:
 * Winograd and the direct kernels add each finished value, and col2im (and
 * the strided 1x1 kernel's scatter) add only where the windows do not
 * overlap (stride >= kernel, as a 1x1 projection with stride 2), one term
 * per input; where they overlap, adding the terms one by one to what is
 * there would round otherwise. */
static int conv2d_accumulates_dx(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc *d = &node->d.conv;
    const char *k = nn_conv2d_kernel_name(d, ctx);
    const int disjoint = d->R <= d->stride_h && d->S <= d->stride_w && !nn_conv2d_dilated(d);
    return !d->bf16 &&
           (strcmp(k, "winograd") == 0 || strcmp(k, "direct") == 0 ||
            (strcmp(k, "im2col") == 0 && !dx_as_correlation(d) && disjoint) ||
            (strcmp(k, "pointwise") == 0 && strided(d)) || strcmp(k, "phase") == 0);
}

/* the depthwise and the Winograd kernels normalize a batch norm's input
 * while loading it (Winograd: where it computes the weight gradient too, so
 * that every pass that reads x is its own); the own 1x1 kernels (AVX-512
 * or AVX2) map each image into their scratch before its GEMMs */
static int conv2d_takes_prologue(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx), *d = &planned;
    return is_depthwise(d, ctx) || is_mapped_pointwise(d, ctx) ||
           (strcmp(nn_conv2d_kernel_name(d, ctx), "winograd") == 0 && winograd_weights_ok(d, ctx));
}

/* F(4x4) Winograd on AVX-512 writes the batch norm's output group by group
 * (conv2d_fwd writes it first for any other kernel) */
static int conv2d_writes_prologue(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx), *d = &planned;
    return conv2d_takes_prologue(node, ctx) && is_winograd(d, ctx) &&
           nn_conv2d_winograd_writes_input(d, ctx);
}

/* the depthwise and those 1x1 kernels also sum the rows of the batch norm's
 * gradient while each image's dx is in their cache (give_grad_sums), and so
 * does the F(4x4) Winograd input gradient in its groups of whole images */
static int conv2d_sums_prologue_grad(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx), *d = &planned;
    return is_depthwise(d, ctx) || is_mapped_pointwise(d, ctx) ||
           (is_winograd(d, ctx) && stats_in_cache(d, ctx));
}

/* the depthwise kernels and the 1x1 kernel (any stride; with a prologue,
 * its own AVX-512 or AVX2 GEMMs) take their dy one image at a time, and
 * form it there from the batch norm after them (nn_batchnorm_form_dx); so
 * does the rows kernel of a first layer (no input gradient, no fused ReLU:
 * the stems of ResNet-20 and MobileNet-small), a group of images at a time
 * where its padded copies of dy would be; and F(4x4) Winograd, its weight
 * gradient's groups of whole images at a time, for its input and weight
 * gradients at once (nn_conv2d_backward_winograd_formed) */
static int conv2d_forms_dy(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx), *d = &planned;
    if (is_depthwise(d, ctx)) return 1;
    if (is_winograd(d, ctx)) return nn_conv2d_winograd_forms_dy(d, ctx);
    if (is_rows(d, ctx)) return !(node->needs_dx & 1u) && !d->relu;
    return strcmp(nn_conv2d_kernel_name(d, ctx), "pointwise") == 0 &&
           (node->prologue_from < 0 || is_mapped_pointwise(d, ctx));
}

/* the direct, rows, phase and 1x1 kernels sum each output row of an image,
 * the depthwise ones each plane, the F(4x4) Winograd forward its groups of
 * whole images, while they are in cache, for the batch norm after it */
static int conv2d_sums_output_stats(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx);
    return stats_in_cache(&planned, ctx);
}

/* the depthwise kernels ask for the next plane while they work on one */
static int conv2d_uses_prefetch(const nn_node *node, const nn_ctx *ctx) {
    const nn_conv2d_desc planned = as_planned(node, ctx);
    return is_depthwise(&planned, ctx);
}

static size_t conv2d_ws(const nn_node *node, int max_batch, int threads) {
    (void)max_batch;
    return nn_conv2d_workspace(&node->d.conv, threads);
}

/* the name layer info shows: "winograd4" where Winograd runs F(4x4, 3x3) */
static const char *conv2d_kernel_name(const nn_node *node, const nn_ctx *ctx) {
    const char *k = nn_conv2d_kernel_name(&node->d.conv, ctx);
    return strcmp(k, "winograd") == 0 && nn_conv2d_winograd4_ok(&node->d.conv, ctx) ? "winograd4"
                                                                                     : k;
}

static const nn_op_kernels conv2d_cpu = {
    .forward = conv2d_fwd,
    .backward = conv2d_bwd,
    .workspace = conv2d_ws,
    .kernel_name = conv2d_kernel_name,
    .takes_prologue = conv2d_takes_prologue,
    .writes_prologue = conv2d_writes_prologue,
    .sums_prologue_grad = conv2d_sums_prologue_grad,
    .sums_output_stats = conv2d_sums_output_stats,
    .forms_dy = conv2d_forms_dy,
    .accumulates_dx = conv2d_accumulates_dx,
    .uses_prefetch = conv2d_uses_prefetch,
};

const nn_op_def nn_conv2d_def = {
    .name = "conv2d",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "out kernel stride pad bias groups dilation",
    .configure = conv2d_configure,
    .flops = conv2d_flops,
    .backward_flops = conv2d_backward_flops,
    .kernels = {[NN_KERNELS_CPU] = &conv2d_cpu, NN_CUDA_KERNELS(conv2d)},
    .fuse_epilogue = conv2d_fuse_epilogue,
    .epilogue_masked_later = conv2d_epilogue_masked_later,
    .absorb_affine = conv2d_absorb_affine,
    .set_precision = conv2d_set_precision,
};
