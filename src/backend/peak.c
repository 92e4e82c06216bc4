/* peak.c - the machine's FMA limit, measured: independent chains of fused
 * multiply-adds (AVX-512 if the CPU has it, else AVX2+FMA, else SSE
 * multiply + add), one set of chains per thread, in registers only. The
 * speed figures of `nnopt bench` and bench/peak are read against it. */
#include "nn_internal.h"

#include <omp.h>
#include <stdio.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define FMA_ITERS 20000000L /* about 40 ms at 3 GHz */

/* 12 independent accumulators hide the FMA latency (4 cycles x 2 ports). */
__attribute__((target("avx512f"))) static double fma_avx512(long iters) {
    __m512 acc[12];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float sink = 0;
    for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(acc[i]);
    if (sink == 12345.0f) puts("");
    return 2.0 * 16 * 12 * (double)iters;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters) {
    __m256 acc[12];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float out[8], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(out, acc[i]);
        sink += out[0];
    }
    if (sink == 12345.0f) puts("");
    return 2.0 * 8 * 12 * (double)iters;
}

static double fma_sse(long iters) {
    __m128 acc[12];
    const __m128 a = _mm_set1_ps(0.999999f), b = _mm_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm_add_ps(_mm_mul_ps(acc[i], a), b);
    float out[4], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm_storeu_ps(out, acc[i]);
        sink += out[0];
    }
    if (sink == 12345.0f) puts("");
    return 2.0 * 4 * 12 * (double)iters;
}

double nn_fma_burst(nn_ctx *ctx, long iters, double *seconds, const char **isa) {
    const int threads = ctx->threads;
    const nn_cpu_features *f = nn_cpu_probe();
    const int avx512 = f->avx512f, avx2 = f->avx2 && f->fma;
    if (isa) *isa = avx512 ? "avx512" : avx2 ? "avx2+fma" : "sse";
    double flops = 0.0, t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += avx512 ? fma_avx512(iters) : avx2 ? fma_avx2(iters) : fma_sse(iters);
    *seconds = omp_get_wtime() - t0;
    return flops * 1e-9;
}

double nn_measure_fma_gflops(nn_ctx *ctx, const char **isa) {
    double seconds, gflop = nn_fma_burst(ctx, FMA_ITERS, &seconds, isa);
    return gflop / seconds;
}
#else
double nn_fma_burst(nn_ctx *ctx, long iters, double *seconds, const char **isa) {
    (void)ctx, (void)iters;
    *seconds = 0.0;
    if (isa) *isa = "none";
    return 0.0;
}

double nn_measure_fma_gflops(nn_ctx *ctx, const char **isa) {
    (void)ctx;
    *isa = "none";
    return 0.0;
}
#endif
