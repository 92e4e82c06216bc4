/* simd_avx512.h - small AVX-512 helpers shared by the convolution kernels
 * (conv2d_avx512.c, conv2d_avx512_rows.c, conv2d_winograd.c), the max-pool
 * and the bf16 GEMM's packing: lane masks, ReLU-masked loads, a prologue's
 * map, permute index vectors, a 16x16 transpose of 32-bit elements. Include
 * after <immintrin.h>, on x86-64 GCC/clang only. */
#ifndef NN_SIMD_AVX512_H
#define NN_SIMD_AVX512_H

/* The first n of 16 lanes (all 16 for n >= 16). */
static inline __mmask16 nn_first_lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* The first n floats of src (the other lanes zero), zero also where the ReLU
 * mask (a layer's output) is <= 0; mask NULL: no mask. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 nn_load_relu_masked(
    const float *src, const float *mask, int n) {
    __mmask16 m = nn_first_lanes(n);
    if (mask)
        m = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, mask), _mm512_setzero_ps(),
                                    _CMP_GT_OQ);
    return _mm512_maskz_loadu_ps(m, src);
}

/* A batch norm's map read by the layer after it (a prologue), each lane's
 * own a and b: x a + b (a multiply, then an add) in the lanes of keep, zero elsewhere; with relu
 * also zero where that is not > 0 and not NaN. The batch norm's normalizing
 * pass and its fused ReLU give the same values, bit for bit (nn_map_value).
 * The ReLU in two instructions, not two compares, mask logic and a move:
 * max(+0, v) returns its second operand v where v is NaN or not below +0,
 * so it is v where v > 0 or NaN, +0 where v < 0, and -0 where v is -0;
 * adding +0 turns that -0 into +0 and changes nothing else. On a Zen 4 the
 * Winograd input transforms that map their loads ran 1.07-1.10x as fast. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 nn_map_lanes_v(
    __m512 x, __m512 a, __m512 b, int relu, __mmask16 keep) {
    const __m512 v = _mm512_add_ps(_mm512_mul_ps(x, a), b);
    if (relu)
        return _mm512_maskz_add_ps(keep, _mm512_max_ps(_mm512_setzero_ps(), v),
                                   _mm512_setzero_ps());
    return _mm512_maskz_mov_ps(keep, v);
}

/* the same with one map for every lane */
__attribute__((target("avx512f"), always_inline)) static inline __m512 nn_map_lanes(
    __m512 x, float a, float b, int relu, __mmask16 keep) {
    return nn_map_lanes_v(x, _mm512_set1_ps(a), _mm512_set1_ps(b), relu, keep);
}

/* Index vectors for _mm512_permutex2var_ps over a pair (lo, hi) of 32
 * floats: the even and the odd elements (a de-interleave), and the
 * interleave of two vectors a, b into a0 b0 a1 b1 ... (lo: lanes 0-7 of
 * each, hi: lanes 8-15). */
__attribute__((target("avx512f"), always_inline)) static inline __m512i nn_idx_even(void) {
    return _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
}
__attribute__((target("avx512f"), always_inline)) static inline __m512i nn_idx_odd(void) {
    return _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
}
__attribute__((target("avx512f"), always_inline)) static inline __m512i nn_idx_interleave_lo(void) {
    return _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
}
__attribute__((target("avx512f"), always_inline)) static inline __m512i nn_idx_interleave_hi(void) {
    return _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
}
/* lane * stride, for gathers and scatters */
__attribute__((target("avx512f"), always_inline)) static inline __m512i nn_idx_strided(int stride) {
    return _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                              _mm512_set1_epi32(stride));
}

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

#endif /* NN_SIMD_AVX512_H */
