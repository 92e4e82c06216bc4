/*
 * gemm_avx2.h - the register-blocked AVX2 + FMA GEMM kernel behind the
 * Winograd products (conv2d_winograd_avx2.c) and the 1x1 convolutions
 * (conv2d_pointwise_avx2.c) on CPUs without AVX-512 (the AVX-512 twin is
 * gemm_avx512.h): 4 rows of C, each as nt <= 3 vectors of 8 columns, in 12
 * accumulators at most (with the 3 vectors of B and the broadcast, all 16
 * ymm registers):
 *
 *     c[i][j] (+)= sum over p < depth of a[i ar + p ap] * b[p ldb + j]
 *
 * for i < 4 and j < 8 nt. A's elements are broadcast from memory at any
 * strides (a packed block, a row-major matrix or its transpose), B's rows are
 * loaded whole; the last vector holds `last` columns (loads by mask, which
 * cost no more than plain ones; stores of the part without a mask:
 * nn_avx2_store_n), so B and C need no padding; a constant last of 8 leaves
 * plain loads and stores. Each sum runs over p in order, one fused
 * multiply-add per term, so the result does not depend on how the callers
 * block the columns.
 *
 * Include after <immintrin.h> and backend/simd_avx2.h, on x86-64 GCC/clang
 * only. The callers instantiate it with constant nt (1, 2, 3) so that the
 * accumulators stay in registers.
 *
 * brow, when not NULL, places B's rows anywhere: row p at b + brow[p]
 * instead of b + p ldb (an implicit GEMM over the taps of a convolution,
 * conv2d_phase_avx2.c). Callers pass a constant NULL otherwise, which
 * compiles to the plain stride.
 */
#ifndef NN_GEMM_AVX2_H
#define NN_GEMM_AVX2_H

#define NN_GEMM4_ROWS 4 /* rows of C per call */
#define NN_GEMM4_VECS 3 /* 8-column vectors of C per call, at most */

__attribute__((target("avx2,fma"), always_inline)) static inline void nn_gemm4_avx2(
    float *c, size_t ldc, const float *a, size_t ar, size_t ap, const float *b, size_t ldb,
    const size_t *brow, size_t depth, const int nt, int last, int accumulate) {
    const __m256i keep = nn_avx2_lanes(last);
    __m256 acc[NN_GEMM4_ROWS][NN_GEMM4_VECS];
    _Pragma("GCC unroll 4") for (int i = 0; i < NN_GEMM4_ROWS; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) {
        const float *ci = c + i * ldc + v * 8;
        acc[i][v] = !accumulate                 ? _mm256_setzero_ps()
                    : v == nt - 1 && last < 8 ? _mm256_maskload_ps(ci, keep)
                                              : _mm256_loadu_ps(ci);
    }
    for (size_t p = 0; p < depth; p++, a += ap) {
        const float *bp = brow ? b + brow[p] : b + p * ldb;
        __m256 bv[NN_GEMM4_VECS];
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) bv[v] =
            v == nt - 1 && last < 8 ? _mm256_maskload_ps(bp + v * 8, keep)
                                    : _mm256_loadu_ps(bp + v * 8);
        _Pragma("GCC unroll 4") for (int i = 0; i < NN_GEMM4_ROWS; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + i * ar);
            _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++) acc[i][v] =
                _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < NN_GEMM4_ROWS; i++)
        _Pragma("GCC unroll 3") for (int v = 0; v < nt; v++)
            nn_avx2_store_n(c + i * ldc + v * 8, v == nt - 1 ? last : 8, acc[i][v]);
}

/* C (M, N) (+)= A (M, depth) x B (depth, N), M a multiple of 4, A's element
 * (i, p) at a[i ar + p ap], B's rows as nn_gemm4_avx2 takes them: 24
 * columns at a time (B's slab stays in cache while every 4 rows pass over
 * it) */
__attribute__((target("avx2,fma"), always_inline)) static inline void nn_gemm_rows4_avx2(
    float *c, size_t ldc, const float *a, size_t ar, size_t ap, const float *b, size_t ldb,
    const size_t *brow, int M, int N, size_t depth, int accumulate) {
    const int slab = 8 * NN_GEMM4_VECS;
    for (int j0 = 0; j0 < N; j0 += slab) {
        const int cols = N - j0 < slab ? N - j0 : slab, nt = (cols + 7) / 8;
        const int last = cols - 8 * (nt - 1);
        for (int i0 = 0; i0 < M; i0 += NN_GEMM4_ROWS) {
            float *ci = c + (size_t)i0 * ldc + j0;
            const float *ai = a + (size_t)i0 * ar, *bj = b + j0;
            if (nt == 3)
                nn_gemm4_avx2(ci, ldc, ai, ar, ap, bj, ldb, brow, depth, 3, last, accumulate);
            else if (nt == 2)
                nn_gemm4_avx2(ci, ldc, ai, ar, ap, bj, ldb, brow, depth, 2, last, accumulate);
            else
                nn_gemm4_avx2(ci, ldc, ai, ar, ap, bj, ldb, brow, depth, 1, last, accumulate);
        }
    }
}

#endif /* NN_GEMM_AVX2_H */
