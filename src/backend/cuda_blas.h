/*
 * cuda_blas.h - what every CUDA kernel shares (layer 1, beside blas.c; built
 * only with NN_HAVE_CUDA): the process's cuBLAS handle behind row-major
 * GEMMs shaped like nn_sgemm's, and the check after a launch or call.
 *
 * A failing CUDA call cannot be reported through a kernel (kernels return
 * nothing), so it is an invariant failure: the check prints "nnopt: CUDA
 * error in <what>: <reason>" and aborts, as NN_ASSERT does.
 */
#ifndef NN_CUDA_BLAS_H
#define NN_CUDA_BLAS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* err is a cudaError_t; aborts with what and the reason unless 0 (success). */
void nn_cuda_check(int err, const char *what);
/* The check after a kernel launch (cudaGetLastError). */
void nn_cuda_check_launch(const char *what);

/* Row-major, as nn_sgemm: C (M, N) = alpha op(A) op(B) + beta C, where op(A)
 * is (M, K) and op(B) is (K, N), repeated over `batch` matrices that lie sa,
 * sb and sc floats apart (batch 1: one GEMM). fp32 arithmetic (cuBLAS's
 * default math mode: no TF32). */
void nn_cuda_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, long long sa, const float *B, int ldb, long long sb, float beta,
                   float *C, int ldc, long long sc, int batch);

/* Row-major C (M, N) = A (M, K) B (K, N) with A, B and C bf16 (raw 16-bit
 * values) and fp32 sums, on the tensor cores (the GPU's bf16 peak,
 * cuda_peak.cu). */
void nn_cuda_gemm_bf16(int M, int N, int K, const void *A, const void *B, void *C);

/* Blocks of `threads` for a grid-stride loop over n elements (at least 1). */
unsigned nn_cuda_blocks(size_t n, unsigned threads);

#ifdef __cplusplus
}
#endif

#endif /* NN_CUDA_BLAS_H */
