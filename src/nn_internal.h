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
    int threads;            /* threads the kernels use now, 1..max_threads */
    int max_threads;        /* the count the context was made with: what nn_net_plan
                               sizes per-thread workspace for (nn_ctx_set_threads
                               never goes above it) */
    nn_isa isa;             /* kernels to use, <= what the CPU supports */
    nn_precision precision; /* of the convolutions */
    int winograd;           /* Winograd where it applies: 0 off, 2 F(2x2,3x3)
                               alone, 4 F(4x4,3x3) too (nn_ctx_set_winograd) */
    int fuse;               /* element-wise epilogues fused into their producers */
    int prefetch;           /* plane-by-plane kernels ask for the next plane: what
                               they read (the graph sets it per layer under
                               NN_PREFETCH_AUTO) */
    int prefetch_mode;      /* nn_ctx_set_prefetch: 0 off, 1 on, NN_PREFETCH_AUTO
                               (the default) */
    nn_loader_mode loader_mode; /* where nn_loader prepares batches */
    uint64_t max_memory;    /* bytes one network may take (nn_ctx_set_max_memory), 0 = no cap */
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

/* Shares with stealing, for loops whose iterations write only their own
 * outputs and whose kernels ask for the next iteration's inputs while they
 * compute (they must know which comes next): thread t owns the contiguous
 * share n t / T .. n (t + 1) / T and takes it from the front; a thread that
 * has run out takes from the back of another's, so a thread the machine
 * slows down does not hold up the rest (what NN_FOR_DYNAMIC gives). cells:
 * T words shared by the threads, a share's front and back (n < 2^31). */
static inline uint64_t nn_share_cell(long front, long back) {
    return (uint64_t)(uint32_t)front | (uint64_t)(uint32_t)back << 32;
}

static inline void nn_shares_init(uint64_t *cells, int T, long n) {
    for (int t = 0; t < T; t++) cells[t] = nn_share_cell(n * t / T, n * (t + 1) / T);
}

/* One iteration for thread t, or -1 when none is left; *next: the one it
 * will most likely take after it (its share's next; -1: none) */
static inline long nn_shares_take(uint64_t *cells, int T, int t, long *next) {
    for (int k = 0; k < T; k++) {
        uint64_t *cell = &cells[(t + k) % T];
        uint64_t old = __atomic_load_n(cell, __ATOMIC_ACQUIRE);
        for (;;) {
            const long front = (long)(uint32_t)old, back = (long)(old >> 32);
            if (front >= back) break;
            const uint64_t taken = k == 0 ? nn_share_cell(front + 1, back)  /* own: the front */
                                          : nn_share_cell(front, back - 1); /* another's: the back */
            if (__atomic_compare_exchange_n(cell, &old, taken, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                *next = k == 0 && front + 1 < back ? front + 1 : -1;
                return k == 0 ? front : back - 1;
            }
        }
    }
    *next = -1;
    return -1;
}

/* Whether `bytes` written by `threads` threads are more than their L2 caches
 * hold together: then stores past the caches (non-temporal) pay, as the
 * lines would be evicted before anything read them again. 0 when the L2
 * size is unknown. */
static inline int nn_larger_than_l2(size_t bytes, int threads) {
    const size_t l2 = nn_cpu_probe()->l2_bytes;
    return l2 && bytes > (size_t)threads * l2;
}

/* Asks for n floats at p a cache line at a time, to be read (or written):
 * kernels that go plane by plane call it on the next plane while they work
 * on one. A plane of a few KB is too short for the hardware prefetchers to
 * be ahead at its start; on a Zen 4 the first loads of each plane then
 * waited on memory for most of a depthwise layer's time. */
static inline void nn_prefetch_read(const float *p, size_t n) {
    for (size_t j = 0; j < n; j += 16) __builtin_prefetch(p + j, 0, 3);
}
static inline void nn_prefetch_write(float *p, size_t n) {
    for (size_t j = 0; j < n; j += 16) __builtin_prefetch(p + j, 1, 3);
}

/* Row-major C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C, single-threaded
 * in the calling thread. All GEMM in nnopt goes through here (or through
 * nn_sgemm_parallel, which splits the rows of C across the context's threads). */
void nn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
void nn_sgemm_parallel(nn_ctx *ctx, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc);

/* Saturating 64-bit size arithmetic: UINT64_MAX when the result does not
 * fit, which then exceeds every memory limit. */
uint64_t nn_size_add(uint64_t a, uint64_t b);
uint64_t nn_size_mul(uint64_t a, uint64_t b);

/* Bytes the system can still give this process: MemAvailable from
 * /proc/meminfo, else the free pages sysconf reports; 0 if unknown. */
uint64_t nn_memory_available(void);

/* Checks a request before it is allocated: total bytes against the context's
 * cap (nn_ctx_set_max_memory), and the fresh bytes among them (those not
 * allocated yet) against the memory available. NN_OK, or NN_ENOMEM with the
 * message "<what>, more than the N MiB ..." where what is printf-formatted
 * and should name the file and give the figure in MiB. */
nn_status nn_memory_check(nn_ctx *ctx, uint64_t total, uint64_t fresh, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Bytes as MiB, for messages. */
#define NN_MIB(bytes) ((double)(bytes) / 1048576.0)

/* Host memory aligned to 64 bytes (a cache line, an AVX-512 vector), size
 * rounded up to a multiple of 64; NULL on failure (callers report NN_ENOMEM).
 * core/memory.c, at the bottom of the layering: everything may use it. */
void *nn_alloc_aligned(size_t bytes);
/* The same, zero-filled (by calloc: a large block is not touched until used). */
void *nn_calloc_aligned(size_t bytes);
void nn_free_aligned(void *p);

#endif /* NN_INTERNAL_H */
