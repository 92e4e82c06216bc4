/*
 * gemm_avx512.h - the register-blocked AVX-512 GEMM kernel behind the
 * Winograd products (conv2d_winograd.c) and the 1x1 convolutions
 * (conv2d_pointwise_avx512.c): 8 rows of C, each as nt <= 3 vectors of 16
 * columns, in 24 accumulators at most:
 *
 *     c[i][j] (+)= sum over p < depth of a[i ar + p ap] * b[p ldb + j]
 *
 * for i < 8 and j < 16 nt. A's elements are broadcast from memory at any
 * strides (a packed [8][p] block, a plain row-major matrix or its
 * transpose), B's rows are loaded whole; `last` masks the columns of the
 * last vector (loads and stores), so B and C need no padding. Each sum runs
 * over p in order, one fused multiply-add per term, so the result does not
 * depend on how the callers block the columns.
 *
 * With feed (nn_line_feed, ops.h; NULL: none) each step of the sum also
 * asks for one or two cache lines of the caller's next inputs.
 *
 * Include after ops/ops.h, <immintrin.h> and backend/simd_avx512.h, on
 * x86-64 GCC/clang only. The callers instantiate it with constant nt (1, 2, 3) so
 * that the accumulators stay in registers.
 */
#ifndef NN_GEMM_AVX512_H
#define NN_GEMM_AVX512_H

#define NN_GEMM8_ROWS 8 /* rows of C per call */
#define NN_GEMM8_VECS 3 /* 16-column vectors of C per call, at most */

__attribute__((target("avx512f"), always_inline)) static inline void nn_gemm8_avx512(
    float *c, size_t ldc, const float *a, size_t ar, size_t ap, const float *b, size_t ldb,
    size_t depth, const int nt, __mmask16 last, int accumulate, nn_line_feed *feed) {
    __m512 acc[NN_GEMM8_ROWS][NN_GEMM8_VECS];
    const char *at = feed ? feed->at[0] : NULL;
    size_t lines = feed ? feed->lines[0] : 0;
    int range = 0; /* feed's range that at points into */
    const int per_step = feed && feed->per_step > 1 ? 2 : 1;
    _Pragma("GCC unroll 8") for (int i = 0; i < NN_GEMM8_ROWS; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) {
        const __mmask16 m = v == nt - 1 ? last : (__mmask16)0xFFFF;
        acc[i][v] = accumulate ? _mm512_maskz_loadu_ps(m, c + i * ldc + v * 16)
                               : _mm512_setzero_ps();
    }
    for (size_t p = 0; p < depth; p++, a += ap, b += ldb) {
        if (feed)
            for (int k = 0; k < per_step; k++) {
                while (!lines && range + 1 < NN_FEED_RANGES) { /* the next range */
                    feed->lines[range] = 0;
                    range++;
                    at = feed->at[range], lines = feed->lines[range];
                }
                if (lines) _mm_prefetch(at, _MM_HINT_T0), at += 64, lines--;
            }
        __m512 bv[NN_GEMM8_VECS];
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) bv[v] =
            _mm512_maskz_loadu_ps(v == nt - 1 ? last : (__mmask16)0xFFFF, b + v * 16);
        _Pragma("GCC unroll 8") for (int i = 0; i < NN_GEMM8_ROWS; i++) {
            const __m512 ai = _mm512_set1_ps(a[i * ar]);
            _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) acc[i][v] =
                _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    if (feed) feed->at[range] = at, feed->lines[range] = lines;
    _Pragma("GCC unroll 8") for (int i = 0; i < NN_GEMM8_ROWS; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++)
            _mm512_mask_storeu_ps(c + i * ldc + v * 16, v == nt - 1 ? last : (__mmask16)0xFFFF,
                                  acc[i][v]);
}

#endif /* NN_GEMM_AVX512_H */
