/*
 * ops.h - kernels of every op family, callable directly (tests, benchmarks) as
 * well as through the backend table. Signature order: outputs, const inputs,
 * descriptor, batch size, workspace, context. Backward overwrites dx (if not
 * NULL) and accumulates into dw and db.
 *
 * The reference twins in src/ops/ref compute the same in double with plain
 * loops; tests check the fast kernels against them and the reference gradients
 * against finite differences.
 */
#ifndef NN_OPS_H
#define NN_OPS_H

#include "core/graph.h"

/* The CUDA kernels of every op (src/ops/cuda/<family>.cu, nn_<op>_cuda), in
 * builds with NN_HAVE_CUDA; NN_CUDA_KERNELS(op) puts them in the op's
 * registry entry beside the CPU's: .kernels = {[NN_KERNELS_CPU] = &relu_cpu,
 * NN_CUDA_KERNELS(relu)}. Without CUDA it adds nothing. */
#if NN_HAVE_CUDA
#define NN_OP_CUDA_EXTERN_(E, k) extern const nn_op_kernels nn_##k##_cuda;
NN_OP_LIST(NN_OP_CUDA_EXTERN_)
#undef NN_OP_CUDA_EXTERN_
#define NN_CUDA_KERNELS(k) [NN_KERNELS_CUDA] = &nn_##k##_cuda,
#else
#define NN_CUDA_KERNELS(k)
#endif

/* conv2d: x (N, C, H, W), w (K, C, R, S), b (K), y (N, K, P, Q) */
void nn_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* y is read only when d->relu (the ReLU mask) */
void nn_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const float *x, const float *w, const nn_conv2d_desc *d, int n, float *ws,
                        nn_ctx *ctx);
size_t nn_conv2d_workspace(const nn_conv2d_desc *d, int threads);
/* which kernels nn_conv2d_forward runs for d: "depthwise", "winograd",
 * "direct", "rows", "pointwise" (1x1: GEMMs on the image) or "im2col" (+ GEMM) */
const char *nn_conv2d_kernel_name(const nn_conv2d_desc *d, const nn_ctx *ctx);

/* AVX-512 direct kernels for stride 1, 6..9 taps, pad < kernel; each
 * nn_conv2d_*_ok says whether its kernels take a shape, and
 * nn_conv2d_forward/backward use the first that does:
 *  - conv2d_avx512.c: channels-last tiles, 16 channels per vector (C and K
 *    fill at least 3/4 of their last 16-lane block);
 *  - conv2d_avx512_rows.c: 16 pixels of an output row per vector (rows fill
 *    at least 70% of the lanes; e.g. a first layer on a one-channel image). */
int nn_conv2d_direct_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
size_t nn_conv2d_direct_workspace(const nn_conv2d_desc *d, int threads);
void nn_conv2d_forward_direct(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* the same, writing with stats not NULL each output row's statistics for the
 * batch norm after it (nn_batchnorm_row_stats: the pair stats[2 (image K +
 * channel)]) while the image is in cache; so does the rows kernel */
void nn_conv2d_forward_direct_stats(float *y, const float *x, double *stats, const float *w,
                                    const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                    nn_ctx *ctx);
void nn_conv2d_backward_direct(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const float *x, const float *w, const nn_conv2d_desc *d, int n,
                               float *ws, nn_ctx *ctx);
/* Shared by both: the interior of dst (C, rows, ld) = src (C, H, W) placed at
 * (ph, pw), the zero border being there already (each kernel writes it once
 * per call); with a mask, values where mask <= 0 become 0 (a fused ReLU). */
void nn_conv2d_pad_interior(float *dst, const float *src, const float *mask, int C, int H, int W,
                            int ph, int pw, int rows, int ld);
/* A row of W floats split into its even columns (e) and its odd ones (o),
 * and back (add: added to what the row holds): the column phases of the
 * stride-2 kernels (im2col's row split, conv2d_phase_avx2.c). */
static inline void nn_row_deinterleave(float *e, float *o, const float *row, int W) {
    int j = 0;
    for (; 2 * j + 1 < W; j++) e[j] = row[2 * j], o[j] = row[2 * j + 1];
    if (2 * j < W) e[j] = row[2 * j];
}

static inline void nn_row_interleave(float *row, const float *e, const float *o, int W, int add) {
    int j = 0;
    if (add) {
        for (; 2 * j + 1 < W; j++) row[2 * j] += e[j], row[2 * j + 1] += o[j];
        if (2 * j < W) row[2 * j] += e[j];
    } else {
        for (; 2 * j + 1 < W; j++) row[2 * j] = e[j], row[2 * j + 1] = o[j];
        if (2 * j < W) row[2 * j] = e[j];
    }
}

/* A convolution's prologue (nn_op_args.in_scale): x is the input of the
 * batch norm before, whose output (what the convolution reads) is max(0 if
 * relu, x scale[c] + shift[c]), made while loading (map NULL: x as it is). */
typedef struct {
    const float *scale, *shift;
    int relu;
    /* not NULL: the backward pass also writes, for each (image, channel)
     * plane of x, the batch norm's sums of g and g (x - mean[c]) over it,
     * g = dx where the ReLU passes (nn_batchnorm_grad_sums_row), as the pair
     * grad_sums[2 (image C + channel)] (the depthwise kernels) */
    double *grad_sums;
    const float *mean;
    /* forward only (nn_conv2d_winograd_writes_input): out, not NULL, is
     * where the mapped values are written (the batch norm's output, which
     * later layers read too), res, not NULL, a residual add fused into the
     * batch norm, added before the ReLU: (x scale + shift) + res */
    const float *res;
    float *out;
} nn_conv2d_map;

/* One value through a prologue's map, as the batch norm's normalizing pass
 * writes it: x a + b (a multiply, then an add), then with relu zero unless
 * that is > 0 or NaN (the same bits) */
static inline float nn_map_value(float x, float a, float b, int relu) {
    const float v = x * a + b;
    return relu && !(v > 0.0f || v != v) ? 0.0f : v;
}

/* conv2d_winograd.c: Winograd F(2x2,3x3), and with AVX-512 F(4x4,3x3) on
 * images up to 28 wide (conv2d_winograd4.c), for fp32 3x3 stride-1 pad-1
 * convolutions with C and K multiples of 8 (at least 16), when
 * ctx->winograd: the forward pass, the input gradient and the weight gradient. */
int nn_conv2d_winograd_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
/* whether the shape takes F(4x4, 3x3) (AVX-512, images up to 28 wide) */
int nn_conv2d_winograd4_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
size_t nn_conv2d_winograd_workspace(const nn_conv2d_desc *d, int threads);
void nn_conv2d_forward_winograd(float *y, const float *x, const float *w, const float *b,
                                const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* the forward and the weight gradient with a prologue (map; NULL: none);
 * the forward writes, with stats not NULL (only where
 * nn_conv2d_winograd_stats_in_cache), each output row's statistics for the
 * batch norm after it (nn_batchnorm_row_stats: the pair stats[2 (image K +
 * channel)]) while its groups of whole images are in cache */
void nn_conv2d_forward_winograd_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                       double *stats, const float *w, const float *b,
                                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* whether the forward can write the statistics in its groups (AVX-512's
 * F(4x4)) */
int nn_conv2d_winograd_stats_in_cache(const nn_conv2d_desc *d, const nn_ctx *ctx);
/* whether the mapped forward takes map->out and map->res itself (AVX-512's
 * F(4x4): the batch norm's pass over each group of whole images, into the
 * cache, right before the group's input transform reads it); elsewhere
 * conv2d.c writes out first */
int nn_conv2d_winograd_writes_input(const nn_conv2d_desc *d, const nn_ctx *ctx);
void nn_conv2d_backward_weights_winograd_mapped(float *dw, float *db, const float *dy,
                                                const float *y, const float *x,
                                                const nn_conv2d_map *map, const nn_conv2d_desc *d,
                                                int n, float *ws, nn_ctx *ctx);
/* whether the backward can form its dy from the batch norm after the layer
 * (forms_dy: F(4x4), no fused ReLU) */
int nn_conv2d_winograd_forms_dy(const nn_conv2d_desc *d, const nn_ctx *ctx);
/* dx (NULL: none; d->dx_add: added in), dw and db with dy formed from the
 * batch norm after the layer (bn; g its output gradient, y this layer's
 * output) in the cache, group by group: one sweep where the plain backward
 * makes two over dy, and dy never written out. map (NULL: none) is the
 * layer's prologue, as in the mapped input and weight gradients (its
 * grad_sums too). rows (NULL: none): the sums pass of the batch norm whose
 * output x is, on dx (nn_batchnorm_grad_rows), group by group. The bytes of
 * nn_batchnorm_form_dx into dy, then the plain input and weight gradients
 * (then that pass). */
void nn_conv2d_backward_winograd_formed(float *dx, float *dw, float *db, const float *g,
                                        const float *y, const float *x, const nn_conv2d_map *map,
                                        const nn_bn_grad_rows *rows, const nn_bn_dx *bn,
                                        const float *w, const nn_conv2d_desc *d, int n, float *ws,
                                        nn_ctx *ctx);
/* dx from dy (masked where y <= 0 when d->relu) */
void nn_conv2d_backward_data_winograd(float *dx, const float *dy, const float *y, const float *w,
                                      const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* the same, with map->grad_sums (map not NULL; d->dx_add 0): dx is the
 * gradient of the batch norm's output whose prologue the convolution takes,
 * and the batch norm's gradient sums of each (image, channel) row
 * (nn_batchnorm_grad_sums_row over x, its input) are written while the
 * rows are in cache (F(4x4); F(2x2): in a pass after) */
void nn_conv2d_backward_data_winograd_mapped(float *dx, const float *dy, const float *y,
                                             const float *x, const nn_conv2d_map *map,
                                             const float *w, const nn_conv2d_desc *d, int n,
                                             float *ws, nn_ctx *ctx);
/* dw += and db += (db may be NULL) from dy (masked where y <= 0 when d->relu) and x */
void nn_conv2d_backward_weights_winograd(float *dw, float *db, const float *dy, const float *y,
                                         const float *x, const nn_conv2d_desc *d, int n,
                                         float *ws, nn_ctx *ctx);
/* Cache lines a kernel asks for while it computes, per_step (1 or 2; 0
 * counts as 1) per step of its innermost loop: a caller's next inputs or the
 * lines it is about to write, at[0] (lines[0] of them), then at[1], then
 * at[2], so that they arrive while the arithmetic runs instead of in a pass
 * of their own that waits on memory. NULL: none. */
#define NN_FEED_RANGES 3
typedef struct {
    const char *at[NN_FEED_RANGES];
    size_t lines[NN_FEED_RANGES];
    int per_step;
} nn_line_feed;

/* The products of a 1x1 convolution on one image without BLAS, for the
 * shapes `ok` accepts (one group; conv2d_pointwise_avx512.c: AVX-512, C a
 * multiple of 16, K of 8; conv2d_pointwise_avx2.c: AVX2, C of 8, K of 4):
 * y (K, HW) = W x; dx (C, HW) = W^T dy; dw (K, C) += dy x^T through xt (HW
 * x C floats of scratch); map: dst (C, HW) = x mapped by a prologue (as the
 * batch norm would write it). The feeds (NULL: none) are asked for while
 * the products run (the AVX2 kernels take none). */
typedef struct {
    int (*ok)(const nn_conv2d_desc *d, const nn_ctx *ctx);
    int rows; /* weight_grad_rows takes rows in multiples of this */
    void (*forward)(float *y, const float *x, const float *w, int K, int C, int HW,
                    nn_line_feed *feed);
    void (*input_grad)(float *dx, const float *dy, const float *w, int K, int C, int HW,
                       nn_line_feed *feed);
    /* dw in two steps: xt (HW, C) = x^T once per image, then dw (rows, C)
     * += dy (rows, HW) x xt for a band of rows (all K of them, or fewer) */
    void (*transpose)(float *xt, const float *x, int C, int HW);
    void (*weight_grad_rows)(float *dw, const float *dy, const float *xt, int rows, int C, int HW,
                             nn_line_feed *feed);
    void (*map)(float *dst, const float *x, const nn_conv2d_map *map, int C, int HW);
    /* optional: forward for outputs larger than the caches, stored past
     * them, 8 rows at a time through band (8 HW floats of scratch), with
     * the batch norm's statistics of each row (stats: a pair per row as
     * nn_batchnorm_row_stats writes, NULL: none) taken from the band */
    void (*forward_streamed)(float *y, const float *x, const float *w, int K, int C, int HW,
                             float *band, double *stats, const nn_ctx *ctx, nn_line_feed *feed);
} nn_pointwise_kernels;
extern const nn_pointwise_kernels nn_pointwise_avx512, nn_pointwise_avx2;
/* conv2d.c: the 1x1 kernel with a prologue (nn_pointwise_kernels, stride 1;
 * map->grad_sums as the depthwise kernels fill it); backward with bn (NULL:
 * none) forms its dy from the batch norm after it (forms_dy): dy is then
 * that batch norm's output gradient */
void nn_conv2d_forward_pointwise_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                        double *stats, const float *w, const float *b,
                                        const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
void nn_conv2d_backward_pointwise_mapped(float *dx, float *dw, float *db, const float *dy,
                                         const float *y, const float *x, const nn_conv2d_map *map,
                                         const nn_bn_dx *bn, const float *w,
                                         const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* conv2d_depthwise.c: depthwise convolutions (groups = C = K, kernels up to
 * 7x7, strides up to 4, undilated, fp32) as direct sums over each plane,
 * portable and AVX-512 */
int nn_conv2d_depthwise_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
size_t nn_conv2d_depthwise_workspace(const nn_conv2d_desc *d, int threads);
void nn_conv2d_forward_depthwise(float *y, const float *x, const float *w, const float *b,
                                 const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
void nn_conv2d_backward_depthwise(float *dx, float *dw, float *db, const float *dy, const float *y,
                                  const float *x, const float *w, const nn_conv2d_desc *d, int n,
                                  float *ws, nn_ctx *ctx);
/* the same with a prologue (map, NULL: none), mapped plane by plane, and
 * (stats, NULL: none) the batch norm's row statistics of each output plane
 * while it is in cache; backward with bn (NULL: none) forms each plane's dy
 * from the batch norm after it, as the 1x1 kernel does */
void nn_conv2d_forward_depthwise_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                        double *stats, const float *w, const float *b,
                                        const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
void nn_conv2d_backward_depthwise_mapped(float *dx, float *dw, float *db, const float *dy,
                                         const float *y, const float *x, const nn_conv2d_map *map,
                                         const nn_bn_dx *bn, const float *w,
                                         const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
int nn_conv2d_rows_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
size_t nn_conv2d_rows_workspace(const nn_conv2d_desc *d, int threads);
void nn_conv2d_forward_rows(float *y, const float *x, const float *w, const float *b,
                            const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
void nn_conv2d_forward_rows_stats(float *y, const float *x, double *stats, const float *w,
                                  const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                  nn_ctx *ctx);
void nn_conv2d_backward_rows(float *dx, float *dw, float *db, const float *dy, const float *y,
                             const float *x, const float *w, const nn_conv2d_desc *d, int n,
                             float *ws, nn_ctx *ctx);
/* dw and db (no dx: a first layer's) with dy formed from the batch norm
 * after the layer (bn; g its output gradient, y this layer's output), each
 * image's whole planes at a time (forms_dy) */
void nn_conv2d_backward_rows_formed(float *dw, float *db, const float *g, const float *y,
                                    const float *x, const nn_bn_dx *bn, const float *w,
                                    const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
/* conv2d_phase_avx2.c: stride 2 (R, S of 2..7, C a multiple of 8, K of 4,
 * fp32, one group) as implicit GEMMs over the input's four phase images */
int nn_conv2d_phase_ok(const nn_conv2d_desc *d, const nn_ctx *ctx);
size_t nn_conv2d_phase_workspace(const nn_conv2d_desc *d, int threads);
void nn_conv2d_forward_phase(float *y, const float *x, const float *w, const float *b,
                             const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx);
void nn_conv2d_forward_phase_stats(float *y, const float *x, double *stats, const float *w,
                                   const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                   nn_ctx *ctx);
void nn_conv2d_backward_phase(float *dx, float *dw, float *db, const float *dy, const float *y,
                              const float *x, const float *w, const nn_conv2d_desc *d, int n,
                              float *ws, nn_ctx *ctx);

/* max-pool: x (N, C, H, W), y (N, C, P, Q); backward reads x and y to find
 * each window's maximum */
void nn_maxpool_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx);
void nn_maxpool_backward(float *dx, const float *dy, const float *x, const float *y,
                         const nn_pool_desc *d, int n, nn_ctx *ctx);

/* AVX-512 planes of the 2x2/2 case (pool_avx512.c), used when ctx->isa allows */
void nn_maxpool2x2_plane_avx512(float *y, const float *x, int H, int W, int P, int Q);
/* relu_mask: the gradient only where the window's maximum is > 0 (see
 * nn_pool_desc.relu_mask) */
void nn_maxpool2x2_plane_backward_avx512(float *dx, const float *dy, const float *x,
                                         const float *y, int H, int W, int P, int Q,
                                         int relu_mask);
/* ... and AVX2's (pool_avx2.c), the same results */
/* global average pooling of np <= 16 consecutive planes at once, in the
 * portable loop's order (pool.c's gap; a: its prologue's map, NULL: none) */
void nn_gap_planes_avx512(float *y, const float *x, int np, int HW, const float *a,
                          const float *b, int relu);
void nn_maxpool2x2_plane_avx2(float *y, const float *x, int H, int W, int P, int Q);
void nn_maxpool2x2_plane_backward_avx2(float *dx, const float *dy, const float *x, const float *y,
                                       int H, int W, int P, int Q, int relu_mask);

/* add: y = a + b over count elements; backward copies dy to da and db */
void nn_add_forward(float *y, const float *a, const float *b, size_t count, nn_ctx *ctx);
void nn_add_backward(float *da, float *db, const float *dy, size_t count);
/* the same for m >= 2 inputs x[0..m): y = x[0] + x[1] + ... (left to right);
 * backward copies dy to every dx[k] that is not NULL */
void nn_add_forward_n(float *y, const float *const *x, int m, size_t count, nn_ctx *ctx);
void nn_add_backward_n(float *const *dx, const float *dy, int m, size_t count);

/* concat (torch.cat(dim=1)): a (N, C1, inner), b (N, C2, inner), y (N, C1+C2, inner)
 * with inner = H*W (1 for flat inputs); backward splits dy into da and db
 * (either may be NULL to skip) */
void nn_concat_forward(float *y, const float *a, const float *b, const nn_concat_desc *d, int n,
                       nn_ctx *ctx);
void nn_concat_backward(float *da, float *db, const float *dy, const nn_concat_desc *d, int n,
                        nn_ctx *ctx);
/* the same for d->count inputs x[k] (N, C[k], inner) (two, C1 and C2, when
 * d->count is 0 or 2); a NULL dx[k] skips input k */
void nn_concat_forward_n(float *y, const float *const *x, const nn_concat_desc *d, int n,
                         nn_ctx *ctx);
void nn_concat_backward_n(float *const *dx, const float *dy, const nn_concat_desc *d, int n,
                          nn_ctx *ctx);

/* dropout on count elements of one batch call, p in [0, 1). Training: element i
 * is kept when nn_dropout_keep(seed, node_index, i, p), then y = x / (1-p)
 * (times the float 1/(1-p)), else 0; mask (count bytes) gets 1 for kept, 0 for
 * dropped. Eval: y = x and mask = 1. Backward: dx = mask ? dy / (1-p) : 0 in
 * training, dx = dy in eval; training must be the forward's mode. */
int nn_dropout_keep(uint64_t seed, int node_index, size_t i, float p);
void nn_dropout_forward(float *y, uint8_t *mask, const float *x, float p, uint64_t seed,
                        int node_index, size_t count, int training, nn_ctx *ctx);
void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, float p, size_t count,
                         int training, nn_ctx *ctx);

/* relu on count elements; backward uses the output y */
void nn_relu_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_relu_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx);

/* element-wise activations on count elements, y = f(x) (PyTorch's formulas):
 *   leaky_relu  x > 0 ? x : slope x        backward reads x
 *   gelu        x/2 (1 + erf(x/sqrt 2))    backward reads x
 *   silu        x / (1 + exp(-x))          backward reads x
 *   sigmoid     1 / (1 + exp(-x))          backward reads the output y
 *   tanh        tanh(x)                    backward reads the output y
 * A NaN input gives a NaN output. */
void nn_leaky_relu_forward(float *y, const float *x, float slope, size_t count, nn_ctx *ctx);
void nn_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope, size_t count,
                            nn_ctx *ctx);
void nn_gelu_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_gelu_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx);
void nn_silu_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_silu_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx);
void nn_sigmoid_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_sigmoid_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx);
void nn_tanh_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_tanh_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx);
/*   relu6       min(max(x, 0), 6)          backward reads x: dy where 0 < x < 6
 *   hardswish   x relu6(x + 3) / 6         backward reads x: 0 below -3, dy (x/3 + 1/2)
 *                                          up to 3, dy above */
void nn_relu6_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_relu6_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx);
void nn_hardswish_forward(float *y, const float *x, size_t count, nn_ctx *ctx);
void nn_hardswish_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx);

/* average pooling: x (N, C, H, W), y (N, C, P, Q); padding counts as zeros in
 * the divisor R*S (AvgPool2d's count_include_pad=True, ceil_mode=False) */
void nn_avgpool_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx);
void nn_avgpool_backward(float *dx, const float *dy, const nn_pool_desc *d, int n, nn_ctx *ctx);

/* global average pooling: x (N, C, H, W), y (N, C): the mean of each plane */
void nn_gap_forward(float *y, const float *x, const nn_pool_desc *d, int n, nn_ctx *ctx);
void nn_gap_backward(float *dx, const float *dy, const nn_pool_desc *d, int n, nn_ctx *ctx);

/* linear: x (N, in), w (out, in), b (out), y (N, out) */
void nn_linear_forward(float *y, const float *x, const float *w, const float *b,
                       const nn_linear_desc *d, int n, nn_ctx *ctx);
/* y is read only when d->relu; ws holds (n, out) floats for the masked dy */
void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const float *x, const float *w, const nn_linear_desc *d, int n, float *ws,
                        nn_ctx *ctx);

/* softmax cross-entropy, mean over the batch: logits (N, classes), prob (N, classes),
 * labels (N) in [0, classes). With label smoothing eps in [0, 1] (PyTorch's
 * CrossEntropyLoss(label_smoothing=eps)):
 *   loss = mean_i [(1 - eps) (-log prob[i, y_i]) + eps mean_c (-log prob[i, c])]
 *   dlogits = (prob - ((1 - eps) onehot(y) + eps / classes)) / N
 * The plain forms are the smooth ones with eps = 0, bit for bit. */
float nn_softmax_ce_forward_smooth(float *prob, const float *logits, const int32_t *labels,
                                   int classes, float smoothing, int n);
void nn_softmax_ce_backward_smooth(float *dlogits, const float *prob, const int32_t *labels,
                                   int classes, float smoothing, int n);
float nn_softmax_ce_forward(float *prob, const float *logits, const int32_t *labels, int classes,
                            int n);
void nn_softmax_ce_backward(float *dlogits, const float *prob, const int32_t *labels,
                            int classes, int n);

/* batch normalization: x, y (N, C, HW) with HW = H*W (1 for flat inputs), w b (C),
 * running (2C + 1): running_mean (C), running_var (C), num_batches_tracked (1).
 * Training mode normalizes with the batch's mean and biased variance and
 * updates running (unbiased variance; n*HW must be > 1); eval mode uses it.
 * save (2C) gets the mean and 1/sqrt(var + eps) used, which backward reads. */
void nn_batchnorm_forward(float *y, float *save, float *running, const float *x, const float *w,
                          const float *b, const nn_bn_desc *d, int n, int training, nn_ctx *ctx);
/* training must be the mode of the forward that wrote save */
/* The sums of batch norm's backward over one row of len values: sum_g = the
 * sum of g, dot = the sum of g (x - mean), g = dy, or with relu dy where x
 * alpha + beta > 0 (the forward's map; its ReLU). The sums pass's own
 * arithmetic, so a reader that sums rows for it (give_grad_sums) gives the
 * same bits. */
/* The statistics pass's per-row values for rows consecutive rows of len
 * values at x: each row's sum and sum of squared deviations from its own
 * mean, a pair of doubles per row into pairs. A producer that writes them
 * for its batch norm (give_input_stats) gives the same bits. */
void nn_batchnorm_row_stats(const float *x, int rows, int len, double *pairs,
                            const nn_ctx *ctx);
void nn_batchnorm_grad_sums_row(const float *dy, const float *x, int len, float mean,
                                float alpha, float beta, int relu, double *sum_g, double *dot,
                                const nn_ctx *ctx);
/* dx of the rows (channels c0.. c0+rows-1 of one sample, len values each) of
 * a batch norm whose backward left its input gradient to its producer
 * (deferred_dx), from its output gradient g and its input x: the dx pass's
 * own arithmetic, so a producer that forms its dy this way (forms_dy) gets
 * the same bits. */
void nn_batchnorm_form_dx(float *dx, const float *g, const float *x, int c0, int rows, int len,
                          const nn_bn_dx *bn, const nn_ctx *ctx);
/* The sums pass of a batch norm whose output a layer wrote (writes_from),
 * left to that layer's input gradient, which completes the output's
 * gradient dy: for rows row0.. row0 + nrows - 1 (image C + channel, HW
 * values each) the sums of g and g (x - mean[c]) into the pair rows[2 row],
 * g = dy where the fused ReLU passed (x scale + shift > 0 with the map,
 * scale not NULL; y > 0 with y not NULL; else everywhere), g also into dr
 * (not NULL: a fused residual add's input gradient), past the caches where
 * the whole pass's (batch_rows rows) would be. The pass's own row
 * arithmetic, so the same bits (nn_bn_grad_rows: graph.h). */
void nn_batchnorm_grad_rows(const float *dy, long row0, long nrows, long batch_rows,
                            const nn_bn_grad_rows *s, int threads, const nn_ctx *ctx);

/* The normalizing pass of a batch norm whose first reader writes its output
 * (give_written_prologue), for a reader whose kernel at run time does not
 * (conv2d.c), or whose kernel runs it group by group (F(4x4) Winograd):
 * y = x through the map (nn_map_value; with r, a residual add's other input,
 * (x scale + shift) + r before the ReLU) for n samples of C planes of HW
 * values, on `threads` threads; the pass's own row kernel, so the same bits. */
void nn_batchnorm_map_rows(float *y, const float *x, const float *r, const float *scale,
                           const float *shift, int relu, int C, int HW, int n, int threads,
                           const nn_ctx *ctx);
void nn_batchnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *save, const nn_bn_desc *d, int n,
                           int training, nn_ctx *ctx);

/* reference twins, double precision, plain loops */
void nn_ref_conv2d_forward(double *y, const double *x, const double *w, const double *b,
                           const nn_conv2d_desc *d, int n);
void nn_ref_conv2d_backward(double *dx, double *dw, double *db, const double *dy,
                            const double *x, const double *w, const nn_conv2d_desc *d, int n);
void nn_ref_maxpool_forward(double *y, const double *x, const nn_pool_desc *d, int n);
void nn_ref_maxpool_backward(double *dx, const double *dy, const double *x,
                             const nn_pool_desc *d, int n);
void nn_ref_relu_forward(double *y, const double *x, size_t count);
void nn_ref_relu_backward(double *dx, const double *dy, const double *x, size_t count);
/* activation references: backward reads the input x for every one */
void nn_ref_leaky_relu_forward(double *y, const double *x, double slope, size_t count);
void nn_ref_leaky_relu_backward(double *dx, const double *dy, const double *x, double slope,
                                size_t count);
void nn_ref_gelu_forward(double *y, const double *x, size_t count);
void nn_ref_gelu_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_silu_forward(double *y, const double *x, size_t count);
void nn_ref_silu_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_sigmoid_forward(double *y, const double *x, size_t count);
void nn_ref_sigmoid_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_tanh_forward(double *y, const double *x, size_t count);
void nn_ref_tanh_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_relu6_forward(double *y, const double *x, size_t count);
void nn_ref_relu6_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_hardswish_forward(double *y, const double *x, size_t count);
void nn_ref_hardswish_backward(double *dx, const double *dy, const double *x, size_t count);
void nn_ref_avgpool_forward(double *y, const double *x, const nn_pool_desc *d, int n);
void nn_ref_avgpool_backward(double *dx, const double *dy, const nn_pool_desc *d, int n);
void nn_ref_gap_forward(double *y, const double *x, const nn_pool_desc *d, int n);
void nn_ref_gap_backward(double *dx, const double *dy, const nn_pool_desc *d, int n);
void nn_ref_linear_forward(double *y, const double *x, const double *w, const double *b,
                           const nn_linear_desc *d, int n);
void nn_ref_linear_backward(double *dx, double *dw, double *db, const double *dy,
                            const double *x, const double *w, const nn_linear_desc *d, int n);
double nn_ref_softmax_ce_forward_smooth(const double *logits, const int32_t *labels, int classes,
                                        double smoothing, int n);
void nn_ref_softmax_ce_backward_smooth(double *dlogits, const double *logits,
                                       const int32_t *labels, int classes, double smoothing,
                                       int n);
/* running as in nn_batchnorm_forward; NULL in training mode skips the update.
 * Backward recomputes the statistics from x (training) or reads running (eval). */
void nn_ref_batchnorm_forward(double *y, double *running, const double *x, const double *w,
                              const double *b, const nn_bn_desc *d, int n, int training);
void nn_ref_batchnorm_backward(double *dx, double *dw, double *db, const double *dy,
                               const double *x, const double *w, const double *running,
                               const nn_bn_desc *d, int n, int training);
void nn_ref_concat_forward(double *y, const double *a, const double *b, const nn_concat_desc *d,
                           int n);
void nn_ref_concat_backward(double *da, double *db, const double *dy, const nn_concat_desc *d,
                            int n);
/* n-ary twins: concat of d->count inputs (as nn_concat_forward_n), add of m */
void nn_ref_concat_forward_n(double *y, const double *const *x, const nn_concat_desc *d, int n);
void nn_ref_concat_backward_n(double *const *dx, const double *dy, const nn_concat_desc *d, int n);
void nn_ref_add_forward_n(double *y, const double *const *x, int m, size_t count);
void nn_ref_add_backward_n(double *const *dx, const double *dy, int m, size_t count);
/* dropout recomputing the keep decisions from nn_dropout_keep (no mask) */
void nn_ref_dropout_forward(double *y, const double *x, double p, uint64_t seed, int node_index,
                            size_t count, int training);
void nn_ref_dropout_backward(double *dx, const double *dy, double p, uint64_t seed,
                             int node_index, size_t count, int training);
double nn_ref_softmax_ce_forward(const double *logits, const int32_t *labels, int classes, int n);
void nn_ref_softmax_ce_backward(double *dlogits, const double *logits, const int32_t *labels,
                                int classes, int n);

#endif /* NN_OPS_H */
