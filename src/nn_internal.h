/*
 * nn_internal.h - declarations shared between libnnopt's source files but not
 * exported: the context layout, assertions, the sgemm wrapper and the parallel-for
 * macro. Nothing here is part of the public API.
 */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include "nnopt.h"

#include <stdio.h>
#include <stdlib.h>

#define NN_ERRMSG_SIZE 512

struct nn_backend;

struct nn_ctx {
    int threads;
    nn_isa isa;             /* kernels to use, <= what the CPU supports */
    nn_precision precision; /* of the convolutions */
    int winograd;           /* Winograd F(2x2,3x3) where it applies */
    nn_loader_mode loader_mode; /* where nn_loader prepares batches */
    char error[NN_ERRMSG_SIZE];
    /* The device's allocator and kernels. NULL until the first net is made:
     * the graph then sets the CPU backend, which core (below the backend in
     * the layering, docs/architecture.md) cannot name. */
    const struct nn_backend *backend;
};

/* Invariant check: prints file:line and aborts. For programming errors only;
 * bad input is reported through nn_status. */
#define NN_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "nnopt: internal error at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                          \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* The one place OpenMP parallelizes a loop: the outermost independent loop,
 * static schedule so results are deterministic for a fixed thread count. */
#define NN_STR_(x) #x
#define NN_PRAGMA_(x) _Pragma(NN_STR_(x))
#define NN_PARALLEL_FOR(nthreads) NN_PRAGMA_(omp parallel for schedule(static) num_threads(nthreads))

/* A parallel region (nn_thread_id() tells each thread its index, for its own
 * scratch buffers) and, inside it, a loop whose iterations go to whichever
 * thread is free, one at a time, with no barrier after it. For work where
 * each iteration writes only its own outputs (one image's activations or
 * input gradient): the results do not depend on which thread ran what, and a
 * thread slowed down by the machine (a busy neighbour on a VM) no longer
 * holds up the others at the end of the layer. */
#define NN_PARALLEL(nthreads) NN_PRAGMA_(omp parallel num_threads(nthreads))
#define NN_FOR_DYNAMIC NN_PRAGMA_(omp for schedule(dynamic, 1) nowait)
int nn_thread_id(void);

/* Row-major C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C, single-threaded
 * in the calling thread. All GEMM in nnopt goes through here (or through
 * nn_sgemm_parallel, which splits the rows of C across the context's threads). */
void nn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
void nn_sgemm_parallel(nn_ctx *ctx, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc);

/* Host memory aligned to 64 bytes (a cache line, an AVX-512 vector), size
 * rounded up to a multiple of 64; NULL on failure (callers report NN_ENOMEM).
 * core/memory.c, at the bottom of the layering: everything may use it. */
void *nn_alloc_aligned(size_t bytes);
void nn_free_aligned(void *p);

#endif /* NN_INTERNAL_H */
