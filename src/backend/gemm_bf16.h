/* gemm_bf16.h - the bf16 GEMM behind `--precision bf16` (gemm_bf16.c). */
#ifndef NN_GEMM_BF16_H
#define NN_GEMM_BF16_H

#include "nn_internal.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* float -> bf16 bits, rounded to nearest even; NaN stays NaN. Branch-free so
 * loops over it vectorize. */
static inline uint16_t nn_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u >> 16) | (nan << 6));
}

/* bf16 elements of A (M x K) packed by nn_bf16_pack_a: rows of K rounded up to
 * even, M rounded up to a multiple of NN_BF16_MR, row-major. A bf16 matrix
 * in that shape (zero padding) is its own packed form. */
#define NN_BF16_MR 12
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

/* The same with B given in bf16 (not transposed; ldb elements per row). */
void nn_gemm_bf16_bh(nn_isa isa, int M, int N, int K, const uint16_t *Ap, const uint16_t *Bh,
                     int ldb, float *C, int ldc, int accumulate, uint16_t *scratch);

#endif /* NN_GEMM_BF16_H */
