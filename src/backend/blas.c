/* blas.c - the single GEMM entry point (OpenBLAS sgemm) and its row-split
 * parallel form. */
#include "nn_internal.h"

#include <cblas.h>
#include <omp.h>

void nn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                ldc);
}

/* Splits C by rows (or by columns when it has few rows) into one block per
 * thread; each block is an independent sgemm, so results do not depend on
 * timing. */
void nn_sgemm_parallel(nn_ctx *ctx, int trans_a, int trans_b, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc) {
    int T = ctx->threads;
    if (T <= 1 || (double)M * N * K < 1e5) {
        nn_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int by_rows = M >= 8 * T || M >= N;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        if (by_rows) {
            int m0 = M * t / T, m1 = M * (t + 1) / T;
            if (m1 == m0) continue;
            const float *At = trans_a ? A + m0 : A + (size_t)m0 * lda;
            nn_sgemm(trans_a, trans_b, m1 - m0, N, K, alpha, At, lda, B, ldb, beta,
                     C + (size_t)m0 * ldc, ldc);
        } else {
            int n0 = N * t / T, n1 = N * (t + 1) / T;
            if (n1 == n0) continue;
            const float *Bt = trans_b ? B + (size_t)n0 * ldb : B + n0;
            nn_sgemm(trans_a, trans_b, M, n1 - n0, K, alpha, A, lda, Bt, ldb, beta, C + n0, ldc);
        }
    }
}

double nn_measure_sgemm_gflops(nn_ctx *ctx, int n, int repeats) {
    size_t nn = (size_t)n * n;
    float *a = nn_alloc_aligned(nn * sizeof(float)), *b = nn_alloc_aligned(nn * sizeof(float));
    float *c = nn_alloc_aligned(nn * sizeof(float));
    double best = 0.0;
    if (a && b && c) {
        for (size_t i = 0; i < nn; i++) {
            a[i] = (float)(i % 17) * 0.01f;
            b[i] = (float)(i % 13) * 0.01f;
        }
        nn_sgemm_parallel(ctx, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
        for (int r = 0; r < repeats; r++) {
            double t0 = omp_get_wtime();
            nn_sgemm_parallel(ctx, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double g = 2.0 * n * (double)nn / (omp_get_wtime() - t0) * 1e-9;
            if (g > best) best = g;
        }
    }
    nn_free_aligned(a);
    nn_free_aligned(b);
    nn_free_aligned(c);
    return best;
}
