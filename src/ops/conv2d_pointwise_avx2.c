/*
 * conv2d_pointwise_avx2.c - the three products of a 1x1 convolution on one
 * image with AVX2 + FMA and no BLAS, for CPUs without AVX-512 (the method
 * is conv2d_pointwise_avx512.c's):
 *
 *     forward       y  (K, HW) = W (K, C) x x (C, HW)
 *     input grad    dx (C, HW) = W^T x dy (K, HW)
 *     weight grad   dW (K, C) += dy x x^T
 *
 * all through nn_gemm4_avx2 (gemm_avx2.h), which broadcasts W, W^T or dy
 * from the rows they lie in, so nothing is packed; the weight gradient
 * transposes the image to (HW, C) first, so that C lies along the lanes.
 *
 * Why not BLAS: at these sizes (C, K <= 128, HW 49-784 in MobileNet-small)
 * OpenBLAS spends its time packing, zeroing C and in short kernels: on a
 * Zen 3, 1 thread, the kernel here ran 56-67 GFLOP/s against OpenBLAS's
 * 30-52 on the shapes of MobileNet-small's pw1 and pw2, side by side.
 */
#include "ops/ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"
#include "ops/gemm_avx2.h"
#define AVX2 __attribute__((target("avx2,fma")))

static int pointwise_avx2_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return ctx->isa >= NN_ISA_AVX2 && d->groups <= 1 && d->C % 8 == 0 &&
           d->K % NN_GEMM4_ROWS == 0;
}

/* C (M, N) (+)= A (M, depth) x B (depth, N): nn_gemm_rows4_avx2 with B's
 * rows at a stride */
AVX2 static void gemm_rows4(float *c, size_t ldc, const float *a, size_t ar, size_t ap,
                            const float *b, size_t ldb, int M, int N, size_t depth,
                            int accumulate) {
    nn_gemm_rows4_avx2(c, ldc, a, ar, ap, b, ldb, NULL, M, N, depth, accumulate);
}

AVX2 static void forward(float *y, const float *x, const float *w, int K, int C, int HW,
                         nn_line_feed *feed) {
    (void)feed;
    gemm_rows4(y, (size_t)HW, w, (size_t)C, 1, x, (size_t)HW, K, HW, (size_t)C, 0);
}

AVX2 static void input_grad(float *dx, const float *dy, const float *w, int K, int C, int HW,
                            nn_line_feed *feed) {
    (void)feed; /* none asked for */
    gemm_rows4(dx, (size_t)HW, w, 1, (size_t)C, dy, (size_t)HW, C, HW, (size_t)K, 0);
}

AVX2 static void weight_grad_rows(float *dw, const float *dy, const float *xt, int rows, int C,
                                  int HW, nn_line_feed *feed) {
    (void)feed;
    gemm_rows4(dw, (size_t)C, dy, (size_t)HW, 1, xt, (size_t)C, rows, C, (size_t)HW, 1);
}

AVX2 static void transpose(float *xt, const float *x, int C, int HW) {
    nn_avx2_transpose_image(xt, x, C, HW);
}

/* dst (C, HW) = x (C, HW) through a prologue's map: the batch norm's output,
 * bit for bit */
AVX2 static void map_image(float *dst, const float *x, const nn_conv2d_map *map, int C, int HW) {
    for (int c = 0; c < C; c++) {
        const float *src = x + (size_t)c * HW;
        float *out = dst + (size_t)c * HW;
        const __m256 a = _mm256_set1_ps(map->scale[c]), b = _mm256_set1_ps(map->shift[c]);
        for (int j = 0; j < HW; j += 8)
            nn_avx2_store_n(out + j, HW - j,
                            nn_avx2_map(nn_avx2_load_n(src + j, HW - j), a, b, map->relu));
    }
}

const nn_pointwise_kernels nn_pointwise_avx2 = {
    .ok = pointwise_avx2_ok,
    .rows = NN_GEMM4_ROWS,
    .forward = forward,
    .input_grad = input_grad,
    .transpose = transpose,
    .weight_grad_rows = weight_grad_rows,
    .map = map_image,
};

#else /* not x86-64 GCC/clang: never chosen */

static int pointwise_avx2_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    (void)d, (void)ctx;
    return 0;
}

const nn_pointwise_kernels nn_pointwise_avx2 = {.ok = pointwise_avx2_ok};

#endif
