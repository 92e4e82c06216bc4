/*
 * pool_avx2.c - the 2x2 stride-2 max-pool of pool_avx512.c for CPUs with
 * AVX2 (8 outputs from 16 input columns of two rows: vertical max, then the
 * even and odd lanes split by shuffles). The same results as the portable
 * code in pool.c: a NaN in a window gives NaN; backward sends each gradient
 * to the first window element equal to the output. Chosen at run time.
 */
#include "ops/ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

/* max that propagates NaN: the plain max instruction returns its second
 * operand when either is NaN, so NaN lanes take a + b instead */
INLINE_AVX2 __m256 max_nan(__m256 a, __m256 b) {
    const __m256 nan = _mm256_cmp_ps(a, b, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_max_ps(a, b), _mm256_add_ps(a, b), nan);
}

/* lanes where v is the window's output m (equal, or both NaN) */
INLINE_AVX2 __m256 hit(__m256 v, __m256 m) {
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_EQ_OQ),
                        _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q),
                                      _mm256_cmp_ps(m, m, _CMP_UNORD_Q)));
}

AVX2 void nn_maxpool2x2_plane_avx2(float *y, const float *x, int H, int W, int P, int Q) {
    (void)H;
    for (int p = 0; p < P; p++) {
        const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
        for (int q0 = 0; q0 < Q; q0 += 8) {
            const int outs = Q - q0 < 8 ? Q - q0 : 8, cols = 2 * outs;
            const __m256 a0 = nn_avx2_load_n(r0 + 2 * q0, cols), a1 = nn_avx2_load_n(r0 + 2 * q0 + 8, cols - 8);
            const __m256 b0 = nn_avx2_load_n(r1 + 2 * q0, cols), b1 = nn_avx2_load_n(r1 + 2 * q0 + 8, cols - 8);
            const __m256 v0 = max_nan(a0, b0), v1 = max_nan(a1, b1);
            nn_avx2_store_n(y + (size_t)p * Q + q0, outs, max_nan(nn_avx2_even(v0, v1), nn_avx2_odd(v0, v1)));
        }
    }
}

AVX2 void nn_maxpool2x2_plane_backward_avx2(float *dx, const float *dy, const float *x,
                                            const float *y, int H, int W, int P, int Q,
                                            int relu_mask) {
    if (H != 2 * P || W != 2 * Q) memset(dx, 0, (size_t)H * W * sizeof(float));
    const __m256 zero = _mm256_setzero_ps(), ones = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int p = 0; p < P; p++) {
        const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
        float *d0 = dx + (size_t)2 * p * W, *d1 = d0 + W;
        for (int q0 = 0; q0 < Q; q0 += 8) {
            const int outs = Q - q0 < 8 ? Q - q0 : 8, cols = 2 * outs;
            const __m256 a0 = nn_avx2_load_n(r0 + 2 * q0, cols), a1 = nn_avx2_load_n(r0 + 2 * q0 + 8, cols - 8);
            const __m256 b0 = nn_avx2_load_n(r1 + 2 * q0, cols), b1 = nn_avx2_load_n(r1 + 2 * q0 + 8, cols - 8);
            const __m256 ym = nn_avx2_load_n(y + (size_t)p * Q + q0, outs);
            __m256 g = nn_avx2_load_n(dy + (size_t)p * Q + q0, outs);
            if (relu_mask) g = _mm256_and_ps(g, _mm256_cmp_ps(ym, zero, _CMP_GT_OQ));
            /* window elements in scan order: top-left, top-right, bottom-left; the
             * bottom-right one takes whatever the first three did not */
            const __m256 h0 = hit(nn_avx2_even(a0, a1), ym);
            const __m256 h1 = _mm256_andnot_ps(h0, hit(nn_avx2_odd(a0, a1), ym));
            const __m256 h2 = _mm256_andnot_ps(_mm256_or_ps(h0, h1), hit(nn_avx2_even(b0, b1), ym));
            const __m256 h3 = _mm256_andnot_ps(_mm256_or_ps(_mm256_or_ps(h0, h1), h2), ones);
            const __m256 gtl = _mm256_and_ps(h0, g), gtr = _mm256_and_ps(h1, g);
            const __m256 gbl = _mm256_and_ps(h2, g), gbr = _mm256_and_ps(h3, g);
            /* interleave (left, right) of each row back into 16 columns */
            const __m256 tlo = _mm256_unpacklo_ps(gtl, gtr), thi = _mm256_unpackhi_ps(gtl, gtr);
            const __m256 blo = _mm256_unpacklo_ps(gbl, gbr), bhi = _mm256_unpackhi_ps(gbl, gbr);
            nn_avx2_store_n(d0 + 2 * q0, cols, _mm256_permute2f128_ps(tlo, thi, 0x20));
            nn_avx2_store_n(d0 + 2 * q0 + 8, cols - 8, _mm256_permute2f128_ps(tlo, thi, 0x31));
            nn_avx2_store_n(d1 + 2 * q0, cols, _mm256_permute2f128_ps(blo, bhi, 0x20));
            nn_avx2_store_n(d1 + 2 * q0 + 8, cols - 8, _mm256_permute2f128_ps(blo, bhi, 0x31));
        }
    }
}

#else

void nn_maxpool2x2_plane_avx2(float *y, const float *x, int H, int W, int P, int Q) {
    (void)y, (void)x, (void)H, (void)W, (void)P, (void)Q;
    NN_ASSERT(!"AVX2 pooling kernels are not built");
}

void nn_maxpool2x2_plane_backward_avx2(float *dx, const float *dy, const float *x, const float *y,
                                       int H, int W, int P, int Q, int relu_mask) {
    (void)dx, (void)dy, (void)x, (void)y, (void)H, (void)W, (void)P, (void)Q, (void)relu_mask;
    NN_ASSERT(!"AVX2 pooling kernels are not built");
}

#endif
