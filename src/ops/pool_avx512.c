/*
 * pool_avx512.c - AVX-512 kernels for the common 2x2 stride-2 max-pool, one
 * plane at a time: 32 input columns of two rows make 16 outputs (vertical max,
 * then even/odd lanes split by permutes). Same results as the portable code in
 * pool.c: a NaN in a window gives NaN; backward sends each gradient to the
 * first window element equal to the output. Chosen at run time.
 */
#include "ops/ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#define AVX512 __attribute__((target("avx512f")))

/* max that propagates NaN: the plain max instruction returns its second
 * operand when either is NaN */
AVX512 static inline __m512 max_nan(__m512 a, __m512 b) {
    __m512 m = _mm512_max_ps(a, b);
    __mmask16 nan = _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    return _mm512_mask_add_ps(m, nan, a, b);
}

static __mmask32 mask32(int n) { return n >= 32 ? 0xffffffffu : (((__mmask32)1 << n) - 1); }

AVX512 void nn_maxpool2x2_plane_avx512(float *y, const float *x, int H, int W, int P, int Q) {
    const __m512i even = nn_idx_even(), odd = nn_idx_odd();
    (void)H;
    for (int p = 0; p < P; p++) {
        const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
        for (int q0 = 0; q0 < Q; q0 += 16) {
            const int cols = 2 * (Q - q0 < 16 ? Q - q0 : 16);
            const __mmask32 m = mask32(cols);
            const __m512 a0 = _mm512_maskz_loadu_ps((__mmask16)m, r0 + 2 * q0);
            const __m512 a1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), r0 + 2 * q0 + 16);
            const __m512 b0 = _mm512_maskz_loadu_ps((__mmask16)m, r1 + 2 * q0);
            const __m512 b1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), r1 + 2 * q0 + 16);
            const __m512 v0 = max_nan(a0, b0), v1 = max_nan(a1, b1);
            const __m512 out = max_nan(_mm512_permutex2var_ps(v0, even, v1),
                                       _mm512_permutex2var_ps(v0, odd, v1));
            _mm512_mask_storeu_ps(y + (size_t)p * Q + q0, (__mmask16)((1u << (cols / 2)) - 1u), out);
        }
    }
}

/* lanes where v is the window's output m (equal, or both NaN) */
AVX512 static inline __mmask16 hit(__m512 v, __m512 m) {
    return _mm512_cmp_ps_mask(v, m, _CMP_EQ_OQ) |
           (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q));
}

AVX512 void nn_maxpool2x2_plane_backward_avx512(float *dx, const float *dy, const float *x,
                                                const float *y, int H, int W, int P, int Q,
                                                int relu_mask) {
    const __m512i even = nn_idx_even(), odd = nn_idx_odd();
    const __m512i lo = nn_idx_interleave_lo(), hi = nn_idx_interleave_hi();
    if (H != 2 * P || W != 2 * Q) memset(dx, 0, (size_t)H * W * sizeof(float));
    const __m512 zero = _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
        float *d0 = dx + (size_t)2 * p * W, *d1 = d0 + W;
        for (int q0 = 0; q0 < Q; q0 += 16) {
            const int outs = Q - q0 < 16 ? Q - q0 : 16;
            const __mmask32 m = mask32(2 * outs);
            const __mmask16 mo = (__mmask16)((1u << outs) - 1u);
            const __m512 a0 = _mm512_maskz_loadu_ps((__mmask16)m, r0 + 2 * q0);
            const __m512 a1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), r0 + 2 * q0 + 16);
            const __m512 b0 = _mm512_maskz_loadu_ps((__mmask16)m, r1 + 2 * q0);
            const __m512 b1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), r1 + 2 * q0 + 16);
            const __m512 ym = _mm512_maskz_loadu_ps(mo, y + (size_t)p * Q + q0);
            const __mmask16 mg =
                relu_mask ? _mm512_mask_cmp_ps_mask(mo, ym, zero, _CMP_GT_OQ) : mo;
            const __m512 g = _mm512_maskz_loadu_ps(mg, dy + (size_t)p * Q + q0);
            /* window elements in scan order: top-left, top-right, bottom-left; the
             * bottom-right one takes whatever the first three did not */
            const __m512 tl = _mm512_permutex2var_ps(a0, even, a1), tr = _mm512_permutex2var_ps(a0, odd, a1);
            const __m512 bl = _mm512_permutex2var_ps(b0, even, b1);
            const __mmask16 h0 = hit(tl, ym);
            const __mmask16 h1 = hit(tr, ym) & ~h0;
            const __mmask16 h2 = hit(bl, ym) & ~(h0 | h1);
            const __mmask16 h3 = ~(h0 | h1 | h2);
            const __m512 gtl = _mm512_mask_mov_ps(zero, h0, g), gtr = _mm512_mask_mov_ps(zero, h1, g);
            const __m512 gbl = _mm512_mask_mov_ps(zero, h2, g), gbr = _mm512_mask_mov_ps(zero, h3, g);
            _mm512_mask_storeu_ps(d0 + 2 * q0, (__mmask16)m, _mm512_permutex2var_ps(gtl, lo, gtr));
            _mm512_mask_storeu_ps(d0 + 2 * q0 + 16, (__mmask16)(m >> 16), _mm512_permutex2var_ps(gtl, hi, gtr));
            _mm512_mask_storeu_ps(d1 + 2 * q0, (__mmask16)m, _mm512_permutex2var_ps(gbl, lo, gbr));
            _mm512_mask_storeu_ps(d1 + 2 * q0 + 16, (__mmask16)(m >> 16), _mm512_permutex2var_ps(gbl, hi, gbr));
        }
    }
}

/* y[l] = the mean of plane l (HW floats at x + l HW) for l < np <= 16, 16
 * planes side by side: each lane sums its plane's values in order, as the
 * portable loop does, 16 columns at a time through a 16x16 transpose. With
 * a (not NULL) each value is first mapped as a batch norm's pass writes its
 * output: x a[l] + b[l] (a multiply, then an add), then, with relu, zero
 * where that is not > 0 and not NaN. */
AVX512 void nn_gap_planes_avx512(float *y, const float *x, int np, int HW, const float *a,
                                 const float *b, int relu) {
    const __mmask16 planes = nn_first_lanes(np);
    const __m512 av = a ? _mm512_maskz_loadu_ps(planes, a) : _mm512_setzero_ps();
    const __m512 bv = a ? _mm512_maskz_loadu_ps(planes, b) : _mm512_setzero_ps();
    __m512 s = _mm512_setzero_ps();
    for (int j0 = 0; j0 < HW; j0 += 16) {
        const int cols = HW - j0 < 16 ? HW - j0 : 16;
        const __mmask16 m = nn_first_lanes(cols);
        __m512 r[16];
        for (int l = 0; l < 16; l++)
            r[l] = l < np ? _mm512_maskz_loadu_ps(m, x + (size_t)l * HW + j0) : _mm512_setzero_ps();
        transpose16(r); /* r[j]: column j0 + j of every plane */
        for (int j = 0; j < cols; j++) {
            s = _mm512_add_ps(s, a ? nn_map_lanes_v(r[j], av, bv, relu, 0xFFFF) : r[j]);
        }
    }
    _mm512_mask_storeu_ps(y, planes, _mm512_div_ps(s, _mm512_set1_ps((float)HW)));
}

#else

void nn_maxpool2x2_plane_avx512(float *y, const float *x, int H, int W, int P, int Q) {
    (void)y, (void)x, (void)H, (void)W, (void)P, (void)Q;
    NN_ASSERT(!"AVX-512 pooling kernels are not built");
}

void nn_maxpool2x2_plane_backward_avx512(float *dx, const float *dy, const float *x,
                                         const float *y, int H, int W, int P, int Q,
                                         int relu_mask) {
    (void)dx, (void)dy, (void)x, (void)y, (void)H, (void)W, (void)P, (void)Q, (void)relu_mask;
    NN_ASSERT(!"AVX-512 pooling kernels are not built");
}

void nn_gap_planes_avx512(float *y, const float *x, int np, int HW, const float *a,
                          const float *b, int relu) {
    (void)y, (void)x, (void)np, (void)HW, (void)a, (void)b, (void)relu;
    NN_ASSERT(!"AVX-512 pooling kernels are not built");
}

#endif
