/* transpose_avx512.h - a 16x16 transpose of 32-bit elements in AVX-512
 * registers, shared by the channels-last convolution kernels (floats) and
 * the bf16 GEMM's packing (pairs of bf16 per element). Include after
 * <immintrin.h>, on x86-64 GCC/clang only. */
#ifndef NN_TRANSPOSE_AVX512_H
#define NN_TRANSPOSE_AVX512_H

/* r[i] = row i of a 16x16 block; afterwards r[j] = column j. */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(
    __m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* a0 b0 a1 b1 per lane */
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* a2 b2 a3 b3 */
    }
    for (int i = 0; i < 4; i++) { /* u[4i + j], lane L: rows 4i..4i+3 at column 4L + j */
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 v = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);  /* lanes 0, 2 */
        __m512 w = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);  /* lanes 1, 3 */
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(v, v2, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(w, w2, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(v, v2, 0xDD);
        r[12 + j] = _mm512_shuffle_f32x4(w, w2, 0xDD);
    }
}

#endif /* NN_TRANSPOSE_AVX512_H */
