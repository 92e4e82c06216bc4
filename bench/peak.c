/*
 * peak.c - the machine's limits, so every speed figure has one beside it:
 *  - FMA peak: independent chains of fused multiply-adds per core (AVX-512 if
 *    the CPU has it, else AVX2+FMA, else SSE), one chain set per thread;
 *  - OpenBLAS sgemm on an n x n x n product, 1 thread and all threads, with
 *    the kernels nnopt makes OpenBLAS use (nn_blas_core: its own choice is
 *    replaced where it is older than the CPU).
 * Prints one JSON object per line.
 */
#include "nnopt.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define FMA_ITERS 20000000L

/* 12 independent accumulators hide the FMA latency (4 cycles x 2 ports). */
__attribute__((target("avx512f"))) static double fma_avx512(void) {
    __m512 acc[12];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < FMA_ITERS; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float sink = 0;
    for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(acc[i]);
    if (sink == 12345.0f) puts("");
    return 2.0 * 16 * 12 * (double)FMA_ITERS;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(void) {
    __m256 acc[12];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < FMA_ITERS; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float out[8], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(out, acc[i]);
        sink += out[0];
    }
    if (sink == 12345.0f) puts("");
    return 2.0 * 8 * 12 * (double)FMA_ITERS;
}

static double fma_sse(void) {
    __m128 acc[12];
    const __m128 a = _mm_set1_ps(0.999999f), b = _mm_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm_set1_ps((float)i);
    for (long it = 0; it < FMA_ITERS; it++)
        for (int i = 0; i < 12; i++) acc[i] = _mm_add_ps(_mm_mul_ps(acc[i], a), b);
    float out[4], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm_storeu_ps(out, acc[i]);
        sink += out[0];
    }
    if (sink == 12345.0f) puts("");
    return 2.0 * 4 * 12 * (double)FMA_ITERS;
}

static double fma_peak(int threads, const char **isa) {
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    *isa = avx512 ? "avx512" : avx2 ? "avx2+fma" : "sse";
    double flops = 0.0, t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += avx512 ? fma_avx512() : avx2 ? fma_avx2() : fma_sse();
    return flops / (omp_get_wtime() - t0) * 1e-9;
}

static double sgemm_peak(int threads, int n) {
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * 4), *b = malloc(nn * 4), *c = malloc(nn * 4);
    if (!a || !b || !c) return 0.0;
    for (size_t i = 0; i < nn; i++) a[i] = b[i] = (float)(i % 7) * 0.01f;
    double best = 0.0;
    for (int r = 0; r < 6; r++) {
        double t0 = omp_get_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * (double)n * nn / (omp_get_wtime() - t0) * 1e-9;
        if (r > 0 && g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

int main(int argc, char **argv) {
    int maxt = argc > 1 ? atoi(argv[1]) : omp_get_num_procs();
    if (maxt < 1) maxt = 1;
    nn_ctx_free(nn_ctx_new(1)); /* the first context checks OpenBLAS's kernel choice */
    const char *replaced = nn_blas_replaced_core();
    for (int t = 1; t <= maxt; t *= 2) {
        const char *isa;
        double f = fma_peak(t, &isa);
        double s = sgemm_peak(t, 2048);
        printf("{\"threads\":%d,\"fma_isa\":\"%s\",\"fma_peak_gflops\":%.1f,"
               "\"openblas_sgemm_gflops\":%.1f,\"openblas_core\":\"%s\",\"openblas_replaced\":\"%s\"}\n",
               t, isa, f, s, nn_blas_core(), replaced ? replaced : "");
        if (t * 2 > maxt && t != maxt) t = maxt / 2;
    }
    return 0;
}
