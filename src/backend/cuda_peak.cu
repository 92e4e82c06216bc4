/*
 * cuda_peak.cu - the GPU's limits, measured, for `nnopt bench --device cuda`
 * (nn_measure_device_peaks): the fp32 FMA peak of its cores (independent
 * fmaf chains in registers, every multiprocessor full), and what cuBLAS
 * reaches on an 8192^3 product in fp32 (no TF32) and in bf16 on the tensor
 * cores (fp32 accumulation): the figures a model's rate is read against, as
 * bench/peak and peak.c do for the CPU. Random operands (zeros run faster).
 * The GEMMs go through cuda_blas.c, the path the kernels use.
 * About half a second on an H200.
 */
extern "C" {
#include "backend/backend.h"
#include "backend/cuda_blas.h"
}

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>

#define FMA_CHAINS 8
#define FMA_ITERS 8192
#define GEMM_N 8192

__global__ void fma_kernel(float *out, float a, float b) {
    float acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = (float)(threadIdx.x + i);
    for (int it = 0; it < FMA_ITERS; it++)
#pragma unroll
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = fmaf(acc[i], a, b);
    float s = 0.0f;
    for (int i = 0; i < FMA_CHAINS; i++) s += acc[i];
    if (s == 12345.0f) out[0] = s; /* keeps the chains alive */
}

/* x (n) = uniform in [-1, 1) from a hash of the index */
__global__ void fill_kernel(float *x, __nv_bfloat16 *xb, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        const float v = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
        if (x) x[i] = v;
        if (xb) xb[i] = __float2bfloat16(v);
    }
}

/* seconds per call of f, the best of `repeats` after one warm-up */
template <typename F>
static double best_seconds(F f, int repeats) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    f();
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        cudaEventRecord(e0);
        f();
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms = 0.0f;
        cudaEventElapsedTime(&ms, e0, e1);
        if (ms * 1e-3 < best) best = ms * 1e-3;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return best;
}

extern "C" int nn_cuda_peaks(nn_device_peaks *p, int measure) {
    memset(p, 0, sizeof *p);
    int dev = 0, sms = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return -1;
    snprintf(p->name, sizeof p->name, "%.127s", prop.name);
    sms = prop.multiProcessorCount;
    if (!measure) return 0;
    float *sink = NULL;
    nn_cuda_check((int)cudaMalloc(&sink, sizeof(float)), "cudaMalloc (peak)");
    const int blocks = sms * 8, threads = 256;
    const double t =
        best_seconds([&] { fma_kernel<<<blocks, threads>>>(sink, 0.999999f, 1e-7f); }, 3);
    nn_cuda_check_launch("peak FMA kernel");
    p->fma_gflops = 2.0 * FMA_CHAINS * FMA_ITERS * (double)blocks * threads / t * 1e-9;
    cudaFree(sink);

    const size_t n2 = (size_t)GEMM_N * GEMM_N;
    float *a = NULL, *c = NULL;
    __nv_bfloat16 *ab = NULL, *cb = NULL;
    if (cudaMalloc(&a, n2 * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&c, n2 * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&ab, n2 * sizeof(__nv_bfloat16)) != cudaSuccess ||
        cudaMalloc(&cb, n2 * sizeof(__nv_bfloat16)) != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFree(a), cudaFree(c), cudaFree(ab), cudaFree(cb);
        return 0; /* the FMA figure alone */
    }
    fill_kernel<<<4096, 256>>>(a, ab, n2);
    nn_cuda_check_launch("peak fill");
    const double flop = 2.0 * GEMM_N * (double)GEMM_N * GEMM_N;
    const double ts = best_seconds([&] {
        nn_cuda_sgemm(0, 0, GEMM_N, GEMM_N, GEMM_N, 1.0f, a, GEMM_N, 0, a, GEMM_N, 0, 0.0f, c,
                      GEMM_N, 0, 1);
    }, 3);
    const double tb = best_seconds([&] { nn_cuda_gemm_bf16(GEMM_N, GEMM_N, GEMM_N, ab, ab, cb); },
                                   5);
    nn_cuda_check_launch("peak GEMMs");
    p->sgemm_gflops = flop / ts * 1e-9;
    p->bf16_gemm_gflops = flop / tb * 1e-9;
    cudaFree(a), cudaFree(c), cudaFree(ab), cudaFree(cb);
    return 0;
}
