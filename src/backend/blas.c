/* blas.c - the single GEMM entry point (OpenBLAS sgemm) and its row-split
 * parallel form. */
#include "nn_internal.h"

#include <cblas.h>

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
