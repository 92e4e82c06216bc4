/* gemm_bf16.h - the bf16 GEMM behind `--precision bf16` (gemm_bf16.c). */
#ifndef NN_GEMM_BF16_H
#define NN_GEMM_BF16_H

#include "nn_internal.h"

#include <stddef.h>
#include <stdint.h>

/* bf16 elements of A (M x K) packed by nn_bf16_pack_a. */
size_t nn_bf16_packed_a_size(int M, int K);
/* Packs op(A): A[i][k] = trans ? A[k * lda + i] : A[i * lda + k], rounded to bf16. */
void nn_bf16_pack_a(nn_isa isa, const float *A, int lda, int trans, int M, int K, uint16_t *Ap);
/* bf16 elements of the scratch buffer nn_gemm_bf16 packs B into. */
size_t nn_bf16_gemm_scratch_size(void);
/* C (M x N) = Ap x op(B) (+ C when accumulate), single-threaded; op(B)[k][n] =
 * trans_b ? B[n * ldb + k] : B[k * ldb + n]; C[m][n] is stored at
 * trans_c ? C[n * ldc + m] : C[m * ldc + n]. B is rounded to bf16, products
 * summed in float32. */
void nn_gemm_bf16(nn_isa isa, int M, int N, int K, const uint16_t *Ap, const float *B, int ldb,
                  int trans_b, float *C, int ldc, int trans_c, int accumulate, uint16_t *scratch);

#endif /* NN_GEMM_BF16_H */
