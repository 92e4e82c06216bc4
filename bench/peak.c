/*
 * peak.c - the machine's limits, so every speed figure has one beside it:
 *  - FMA peak: nn_measure_fma_gflops (src/backend/peak.c) on 1 thread and
 *    all threads;
 *  - OpenBLAS sgemm on an n x n x n product, 1 thread and all threads, with
 *    the kernels nnopt makes OpenBLAS use (nn_blas_core: its own choice is
 *    replaced where it is older than the CPU).
 * Prints one JSON object per line.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "nnopt.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

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
    /* as nnopt's main() does: where OpenBLAS's own choice is older than the
     * CPU (and OPENBLAS_CORETYPE does not pin one), the kernels nnopt advises */
    const char *advised = getenv("OPENBLAS_CORETYPE") ? NULL : nn_blas_advised_core();
    if (advised) {
        setenv("OPENBLAS_CORETYPE", advised, 1);
        nn_blas_rechoose();
        unsetenv("OPENBLAS_CORETYPE");
    }
    const char *replaced = nn_blas_replaced_core();
    for (int t = 1; t <= maxt; t *= 2) {
        const char *isa;
        nn_ctx *ctx = nn_ctx_new(t);
        double f = ctx ? nn_measure_fma_gflops(ctx, &isa) : 0.0;
        nn_ctx_free(ctx);
        double s = sgemm_peak(t, 2048);
        printf("{\"threads\":%d,\"fma_isa\":\"%s\",\"fma_peak_gflops\":%.1f,"
               "\"openblas_sgemm_gflops\":%.1f,\"openblas_core\":\"%s\",\"openblas_replaced\":\"%s\"}\n",
               t, isa, f, s, nn_blas_core(), replaced ? replaced : "");
        if (t * 2 > maxt && t != maxt) t = maxt / 2;
    }
    return 0;
}
