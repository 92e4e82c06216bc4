/* simd_avx2.h - small AVX2 helpers shared by the AVX2 kernels
 * (conv2d_winograd_avx2.c, conv2d_rows_avx2.c, conv2d_depthwise.c,
 * conv2d_pointwise_avx2.c, pool_avx2.c): lane masks for vmaskmov, loads and
 * stores of the first n floats (ReLU-masked loads), the even/odd split of 16
 * floats, the batch norm's map, an 8x8 transpose, a horizontal sum. Include
 * after <immintrin.h>, on x86-64 GCC/clang only. */
#ifndef NN_SIMD_AVX2_H
#define NN_SIMD_AVX2_H

#include <stdint.h>

#define NN_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

/* lanes [0, n) of 8 set (all for n >= 8, none for n <= 0), as vmaskmov masks */
NN_AVX2_INLINE __m256i nn_avx2_lanes(int n) {
    static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(table + 8 - n));
}

/* the first n floats of src, the other lanes zero (a plain load for n >= 8) */
NN_AVX2_INLINE __m256 nn_avx2_load_n(const float *src, int n) {
    return n >= 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, nn_avx2_lanes(n));
}

/* the first n lanes of v to dst: a part as plain stores of 4, 2 and 1
 * floats, not vmaskmovps (a store by mask took 7.3 ns against 0.7 for a
 * whole one on a Zen 3: ~25 cycles; its loads by mask cost no more than
 * plain ones) */
NN_AVX2_INLINE void nn_avx2_store_n(float *dst, int n, __m256 v) {
    if (n >= 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m128 part = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(dst, part);
        part = _mm256_extractf128_ps(v, 1);
        dst += 4, n -= 4;
    }
    if (n >= 2) {
        _mm_storel_pi((__m64 *)dst, part);
        part = _mm_movehl_ps(part, part);
        dst += 2, n -= 2;
    }
    if (n >= 1) _mm_store_ss(dst, part);
}

/* nn_avx2_load_n, also zero where the ReLU mask (a layer's output) is <= 0;
 * mask NULL: none */
NN_AVX2_INLINE __m256 nn_avx2_load_relu_masked(const float *src, const float *mask, int n) {
    const __m256 v = nn_avx2_load_n(src, n);
    if (!mask) return v;
    return _mm256_and_ps(v, _mm256_cmp_ps(nn_avx2_load_n(mask, n), _mm256_setzero_ps(), _CMP_GT_OQ));
}

/* floats 0, 2, ..., 14 and 1, 3, ..., 15 of the pair (lo, hi) */
NN_AVX2_INLINE __m256 nn_avx2_even(__m256 lo, __m256 hi) {
    const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}
NN_AVX2_INLINE __m256 nn_avx2_odd(__m256 lo, __m256 hi) {
    const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* a batch norm's normalizing map on 8 floats, in its arithmetic: v = x a +
 * b (a multiply, then an add), then with relu the ReLU that keeps v > 0 and
 * NaN: max(+0, v) + 0, as nn_map_lanes_v (simd_avx512.h) */
NN_AVX2_INLINE __m256 nn_avx2_map(__m256 x, __m256 a, __m256 b, int relu) {
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(x, a), b);
    if (!relu) return v;
    return _mm256_add_ps(_mm256_max_ps(_mm256_setzero_ps(), v), _mm256_setzero_ps());
}

/* r[i][j] = r[j][i]: an 8x8 block of floats transposed in registers */
NN_AVX2_INLINE void nn_avx2_transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* xt (HW, C) = x (C, HW)^T, C a multiple of 8: 8x8 blocks in registers, the
 * last columns of x loaded under a mask (nothing read past the image) */
NN_AVX2_INLINE void nn_avx2_transpose_image(float *xt, const float *x, int C, int HW) {
    for (int c0 = 0; c0 < C; c0 += 8)
        for (int t0 = 0; t0 < HW; t0 += 8) {
            const int tn = HW - t0 < 8 ? HW - t0 : 8;
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = nn_avx2_load_n(x + (size_t)(c0 + i) * HW + t0, tn);
            nn_avx2_transpose8(r);
            for (int j = 0; j < tn; j++) _mm256_storeu_ps(xt + (size_t)(t0 + j) * C + c0, r[j]);
        }
}

NN_AVX2_INLINE float nn_avx2_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif /* NN_SIMD_AVX2_H */
