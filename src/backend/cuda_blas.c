/*
 * cuda_blas.c - the cuBLAS handle of the process (made on first use, for the
 * device the CUDA backend selected), row-major GEMMs through it, and the
 * check after CUDA calls. One device per process: the handle, like the CUDA
 * runtime's current device, is process state.
 *
 * cuBLAS is opened on first use (dlopen of NN_CUBLAS_SONAME, the toolkit's
 * libcublas.so.N, found on the loader's path), as cuda_dnn.cu opens cuDNN:
 * loading it and cuBLASLt with the binary cost every command about 0.05 s
 * of start-up, GPU or not.
 */
#include "backend/cuda_blas.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void nn_cuda_check(int err, const char *what) {
    if (err == (int)cudaSuccess) return;
    fprintf(stderr, "nnopt: CUDA error in %s: %s\n", what, cudaGetErrorString((cudaError_t)err));
    abort();
}

void nn_cuda_check_launch(const char *what) { nn_cuda_check((int)cudaGetLastError(), what); }

/* The cuBLAS calls nnopt makes. cublas_v2.h names several by macro
 * (cublasCreate is cublasCreate_v2): NAME_OF expands it to the symbol. */
#define CUBLAS_FUNCS(X)          \
    X(cublasCreate)              \
    X(cublasSetMathMode)         \
    X(cublasSgemm)               \
    X(cublasSgemmStridedBatched) \
    X(cublasGemmEx)
#define NAME_OF_(f) #f
#define NAME_OF(f) NAME_OF_(f)

static struct {
#define DECLARE_(f) __typeof__(&f) f;
    CUBLAS_FUNCS(DECLARE_)
#undef DECLARE_
} cb;

static pthread_once_t handle_once = PTHREAD_ONCE_INIT;
static cublasHandle_t handle;
static cublasStatus_t handle_status;
static char load_error[320]; /* why cuBLAS could not be opened, or empty */

static void make_handle(void) {
    void *lib = dlopen(NN_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot open %s: %s", NN_CUBLAS_SONAME, dlerror());
        return;
    }
#define LOOKUP_(f)                                                                             \
    if (!(*(void **)&cb.f = dlsym(lib, NAME_OF(f)))) {                                         \
        snprintf(load_error, sizeof load_error, "%s not found in %s", NAME_OF(f),              \
                 NN_CUBLAS_SONAME);                                                            \
        return;                                                                                \
    }
    CUBLAS_FUNCS(LOOKUP_)
#undef LOOKUP_
    handle_status = cb.cublasCreate(&handle);
    /* fp32 stays fp32: no TF32 tensor-core rounding (issue 19: TF32 is an
     * option, off by default) */
    if (handle_status == CUBLAS_STATUS_SUCCESS)
        handle_status = cb.cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);
}

static cublasHandle_t blas(void) {
    pthread_once(&handle_once, make_handle);
    if (load_error[0]) {
        fprintf(stderr, "nnopt: cuBLAS: %s\n", load_error);
        abort();
    }
    if (handle_status != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "nnopt: cuBLAS: cublasCreate failed (status %d)\n", (int)handle_status);
        abort();
    }
    return handle;
}

/* cuBLAS is column-major: the row-major C = op(A) op(B) is the column-major
 * C^T = op(B)^T op(A)^T, that is the same call with A and B swapped. */
void nn_cuda_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, long long sa, const float *B, int ldb, long long sb, float beta,
                   float *C, int ldc, long long sc, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    const cublasOperation_t ob = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t oa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (batch == 1)
        st = cb.cublasSgemm(blas(), ob, oa, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc);
    else
        st = cb.cublasSgemmStridedBatched(blas(), ob, oa, N, M, K, &alpha, B, ldb, sb, A, lda,
                                          sa, &beta, C, ldc, sc, batch);
    if (st != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "nnopt: cuBLAS: sgemm %dx%dx%d (batch %d) failed (status %d)\n", M, N, K,
                batch, (int)st);
        abort();
    }
}

void nn_cuda_gemm_bf16(int M, int N, int K, const void *A, const void *B, void *C) {
    const float one = 1.0f, zero = 0.0f;
    /* column-major C^T = B^T A^T, as nn_cuda_sgemm */
    const cublasStatus_t st =
        cb.cublasGemmEx(blas(), CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one, B, CUDA_R_16BF, N, A,
                        CUDA_R_16BF, K, &zero, C, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "nnopt: cuBLAS: bf16 GEMM %dx%dx%d failed (status %d)\n", M, N, K,
                (int)st);
        abort();
    }
}

unsigned nn_cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > (1u << 20)) b = 1u << 20; /* grid-stride loops do the rest */
    return b ? (unsigned)b : 1u;
}
