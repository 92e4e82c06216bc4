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

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

/* lanes [0, n) of 8 set, as vmaskmov masks */
INLINE_AVX2 __m256i first_lanes(int n) {
    static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(table + 8 - n));
}

INLINE_AVX2 __m256 load_n(const float *src, int n) {
    return n >= 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, first_lanes(n));
}

INLINE_AVX2 void store_n(float *dst, int n, __m256 v) {
    if (n >= 8) _mm256_storeu_ps(dst, v);
    else if (n > 0) _mm256_maskstore_ps(dst, first_lanes(n), v);
}

/* floats 0, 2, ..., 14 and 1, 3, ..., 15 of the pair (lo, hi) */
INLINE_AVX2 __m256 even_of(__m256 lo, __m256 hi) {
    const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}
INLINE_AVX2 __m256 odd_of(__m256 lo, __m256 hi) {
    const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

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
            const __m256 a0 = load_n(r0 + 2 * q0, cols), a1 = load_n(r0 + 2 * q0 + 8, cols - 8);
            const __m256 b0 = load_n(r1 + 2 * q0, cols), b1 = load_n(r1 + 2 * q0 + 8, cols - 8);
            const __m256 v0 = max_nan(a0, b0), v1 = max_nan(a1, b1);
            store_n(y + (size_t)p * Q + q0, outs, max_nan(even_of(v0, v1), odd_of(v0, v1)));
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
            const __m256 a0 = load_n(r0 + 2 * q0, cols), a1 = load_n(r0 + 2 * q0 + 8, cols - 8);
            const __m256 b0 = load_n(r1 + 2 * q0, cols), b1 = load_n(r1 + 2 * q0 + 8, cols - 8);
            const __m256 ym = load_n(y + (size_t)p * Q + q0, outs);
            __m256 g = load_n(dy + (size_t)p * Q + q0, outs);
            if (relu_mask) g = _mm256_and_ps(g, _mm256_cmp_ps(ym, zero, _CMP_GT_OQ));
            /* window elements in scan order: top-left, top-right, bottom-left; the
             * bottom-right one takes whatever the first three did not */
            const __m256 h0 = hit(even_of(a0, a1), ym);
            const __m256 h1 = _mm256_andnot_ps(h0, hit(odd_of(a0, a1), ym));
            const __m256 h2 = _mm256_andnot_ps(_mm256_or_ps(h0, h1), hit(even_of(b0, b1), ym));
            const __m256 h3 = _mm256_andnot_ps(_mm256_or_ps(_mm256_or_ps(h0, h1), h2), ones);
            const __m256 gtl = _mm256_and_ps(h0, g), gtr = _mm256_and_ps(h1, g);
            const __m256 gbl = _mm256_and_ps(h2, g), gbr = _mm256_and_ps(h3, g);
            /* interleave (left, right) of each row back into 16 columns */
            const __m256 tlo = _mm256_unpacklo_ps(gtl, gtr), thi = _mm256_unpackhi_ps(gtl, gtr);
            const __m256 blo = _mm256_unpacklo_ps(gbl, gbr), bhi = _mm256_unpackhi_ps(gbl, gbr);
            store_n(d0 + 2 * q0, cols, _mm256_permute2f128_ps(tlo, thi, 0x20));
            store_n(d0 + 2 * q0 + 8, cols - 8, _mm256_permute2f128_ps(tlo, thi, 0x31));
            store_n(d1 + 2 * q0, cols, _mm256_permute2f128_ps(blo, bhi, 0x20));
            store_n(d1 + 2 * q0 + 8, cols - 8, _mm256_permute2f128_ps(blo, bhi, 0x31));
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
