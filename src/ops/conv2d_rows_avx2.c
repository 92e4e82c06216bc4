/*
 * conv2d_rows_avx2.c - the kernels of the output-row direct convolution
 * (conv2d_avx512_rows.c: the method and the drivers) for CPUs with AVX2 and
 * FMA: 8 pixels of an output row per vector. With 16 vector registers the
 * forward kernel holds 8 output channels (half a block of the packed
 * weights) per pass and the weight gradient one output channel's 9 taps.
 */
#include "ops/conv2d_rows.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define VEC 8

AVX2 static void conv_plane(float *out, const float *in, int inc, int in_rows, int ld, int outc,
                            int R, int S, int P, int Q, const float *wpk, const float *bias,
                            int relu) {
    const __m256 zero = _mm256_setzero_ps();
    for (int o0 = 0; o0 < outc; o0 += 8) { /* half a block of 16 */
        const int on = outc - o0 < 8 ? outc - o0 : 8;
        const float *wb = wpk + (size_t)(o0 / ROWS_KBLK) * inc * R * S * ROWS_KBLK + o0 % ROWS_KBLK;
        for (int p = 0; p < P; p++)
            for (int q0 = 0; q0 < Q; q0 += VEC) {
                __m256 a[8];
                for (int j = 0; j < 8; j++) a[j] = zero;
                for (int i = 0; i < inc; i++)
                    for (int r = 0; r < R; r++) {
                        const float *xr = in + ((size_t)i * in_rows + p + r) * ld + q0;
                        const float *w = wb + (size_t)(i * R + r) * S * ROWS_KBLK;
                        for (int s = 0; s < S; s++, w += ROWS_KBLK) {
                            const __m256 xv = _mm256_loadu_ps(xr + s);
                            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) a[j] =
                                _mm256_fmadd_ps(_mm256_broadcast_ss(w + j), xv, a[j]);
                        }
                    }
                const int qn = Q - q0 < VEC ? Q - q0 : VEC;
                /* constant indices with the run-time count as a test: looped
                 * to `on`, GCC 12 kept a[] on the stack and moved every
                 * accumulator through memory on each multiply-add above */
                _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
                    if (j >= on) break;
                    __m256 v = a[j];
                    if (bias) v = _mm256_add_ps(v, _mm256_set1_ps(bias[o0 + j]));
                    /* max(0, v) returns v when v is NaN: NaN passes, as in PyTorch */
                    if (relu) v = _mm256_max_ps(zero, v);
                    float *dst = out + ((size_t)(o0 + j) * P + p) * Q + q0;
                    nn_avx2_store_n(dst, qn, v);
                }
            }
    }
}

AVX2 static void weight_grad(float *dwt, float *dbt, const float *xg, dy_view v, int gc,
                             const nn_conv2d_desc *d, const direct_geom *g) {
    const int R = d->R, S = d->S, taps = R * S;
    int off[ROWS_MAX_TAPS];
    for (int t = 0; t < ROWS_MAX_TAPS; t++) {
        const int tt = t < taps ? t : 0; /* unused taps repeat tap 0 and are dropped */
        off[t] = (tt / S) * g->wp + tt % S;
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int k = 0; k < d->K; k++)
        for (int c = 0; c < d->C; c++) {
            __m256 a[ROWS_MAX_TAPS];
            for (int t = 0; t < ROWS_MAX_TAPS; t++) a[t] = zero;
            for (int im = 0; im < gc; im++) {
                const float *x = xg + (size_t)im * g->x_floats + (size_t)c * g->hp * g->wp;
                const size_t o0 = (size_t)im * v.image + (size_t)k * v.plane;
                for (int p = 0; p < d->P; p++)
                    for (int q0 = 0; q0 < d->Q; q0 += VEC) {
                        const size_t o = o0 + (size_t)p * v.row + q0;
                        const __m256 u = nn_avx2_load_relu_masked(v.at + o, v.y ? v.y + o : NULL, d->Q - q0);
                        const float *xp = x + (size_t)p * g->wp + q0;
                        _Pragma("GCC unroll 9") for (int t = 0; t < ROWS_MAX_TAPS; t++) a[t] =
                            _mm256_fmadd_ps(u, _mm256_loadu_ps(xp + off[t]), a[t]);
                    }
            }
            /* reduced with constant indices first (indexed by the run-time tap
             * count, the accumulators went to the stack and back on every
             * step of the loops above with GCC 12) */
            float sum[ROWS_MAX_TAPS];
            for (int t = 0; t < ROWS_MAX_TAPS; t++) sum[t] = nn_avx2_sum(a[t]);
            for (int t = 0; t < taps; t++) dwt[((size_t)k * d->C + c) * taps + t] += sum[t];
        }
    for (int k = 0; k < d->K; k++) { /* the bias gradient: row sums of dy */
        __m256 s = zero;
        for (int im = 0; im < gc; im++) {
            const size_t ok = (size_t)im * v.image + (size_t)k * v.plane;
            for (int p = 0; p < d->P; p++)
                for (int q0 = 0; q0 < d->Q; q0 += VEC) {
                    const size_t o = ok + (size_t)p * v.row + q0;
                    s = _mm256_add_ps(s, nn_avx2_load_relu_masked(v.at + o, v.y ? v.y + o : NULL, d->Q - q0));
                }
        }
        dbt[k] += nn_avx2_sum(s);
    }
}

/* the interior of dst (C, rows, ld) = src (C, H, W) at (ph, pw), zero where
 * mask <= 0 (mask NULL: none) */
AVX2 static void pad_interior(float *dst, const float *src, const float *mask, int C, int H, int W,
                              int ph, int pw, int rows, int ld) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            float *o = dst + ((size_t)c * rows + h + ph) * ld + pw;
            const size_t at = ((size_t)c * H + h) * W;
            int w = 0;
            for (; w + VEC <= W; w += VEC)
                _mm256_storeu_ps(o + w, nn_avx2_load_relu_masked(src + at + w, mask ? mask + at + w : NULL,
                                                         VEC));
            for (; w < W; w++) o[w] = !mask || mask[at + w] > 0.0f ? src[at + w] : 0.0f;
        }
}

const rows_kernels nn_rows_avx2 = {VEC, conv_plane, weight_grad, pad_interior};

#endif
