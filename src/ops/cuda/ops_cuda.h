/*
 * ops_cuda.h - what the CUDA twins of the op families (the .cu files in
 * src/ops/cuda) share: the C declarations (ops.h, the cuBLAS GEMM), the
 * grid-stride loop, the launch check and the element helpers whose NaN
 * handling follows the CPU kernels. CUDA C++ only; each .cu defines its ops'
 * nn_<op>_cuda tables (declared in ops.h) with C linkage.
 */
#ifndef NN_OPS_CUDA_H
#define NN_OPS_CUDA_H

#ifndef __CUDACC__
#error "ops_cuda.h is for the CUDA kernels (.cu files)"
#endif

extern "C" {
#include "ops/ops.h"
#include "backend/cuda_blas.h"
}

#include <cuda_runtime.h>
#include <stdint.h>

#define NN_CUDA_THREADS 256

/* i over [0, n) in a grid-stride loop */
#define NN_CUDA_FOR(i, n)                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

/* <<<blocks, threads>>> for n elements */
#define NN_CUDA_GRID(n) nn_cuda_blocks((size_t)(n), NN_CUDA_THREADS), NN_CUDA_THREADS

/* relu's forward: NaN passes, as in PyTorch and the CPU kernels */
__device__ __forceinline__ float nn_relu_f(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }
/* relu's gradient mask from its output y */
__device__ __forceinline__ float nn_relu_mask_f(float g, float y) { return y > 0.0f ? g : 0.0f; }

/* g (n) = dy where the fused ReLU's output y > 0, else 0 (linear.cu) */
__global__ void relu_mask_kernel(float *g, const float *dy, const float *y, size_t n);

/* ---- per-channel sums over (n, C, HW) tensors (batch norm, bias gradients)
 * A channel's n HW values are cut into slices, one block of threads each on
 * a (slices, C) grid; the blocks' partial sums (double) are then added in
 * slice order by a second kernel: enough blocks to fill the GPU when there
 * are few channels, and the same order, so the same bits, on every run. */
#define NN_CUDA_SLICES_MAX 64

/* Slices per channel for M values each: about 4 blocks per multiprocessor
 * of a large GPU in all, at least 2048 values per slice. */
static inline int nn_cuda_channel_slices(int C, size_t M) {
    size_t s = (528 + (size_t)C - 1) / (size_t)C;
    const size_t by_size = (M + 2047) / 2048;
    if (s > by_size) s = by_size;
    if (s > NN_CUDA_SLICES_MAX) s = NN_CUDA_SLICES_MAX;
    return s < 1 ? 1 : (int)s;
}

/* This block's values [lo, hi) of its channel's M (slice blockIdx.x of
 * gridDim.x). I: the index type (32-bit where the tensor allows). */
template <typename I>
__device__ __forceinline__ void nn_cuda_slice(I M, I &lo, I &hi) {
    const I chunk = (M + gridDim.x - 1) / gridDim.x;
    lo = (I)blockIdx.x * chunk;
    hi = lo + chunk < M ? lo + chunk : M;
}

/* element e (of n HW) of channel c in x (n, C, HW) */
template <typename I>
__device__ __forceinline__ I nn_cuda_channel_at(I c, I e, I C, I HW) {
    const I i = e / HW;
    return (i * C + c) * HW + (e - i * HW);
}

/* The block's total of v (THREADS threads, sh of THREADS doubles) in a
 * fixed tree order; valid in thread 0. */
template <unsigned THREADS>
__device__ double nn_cuda_block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned h = THREADS / 2; h > 0; h /= 2) {
        if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
        __syncthreads();
    }
    return sh[0];
}

/* The total of channel c's S partial sums (part[c S .. c S + S)), added in
 * slice order */
__device__ __forceinline__ double nn_cuda_slices_total(const double *part, size_t c, int S) {
    double s = 0.0;
    for (int k = 0; k < S; k++) s += part[c * S + k];
    return s;
}

/* Block (slice s, channel c) of a (S, C) grid of NN_CUDA_THREADS threads:
 * part[c S + s] = the sum of that slice of channel c of x (n, C, HW) */
template <typename I>
__global__ void nn_cuda_channel_sum_part_kernel(double *part, const float *x, I C, I HW, I n) {
    __shared__ double sh[NN_CUDA_THREADS];
    const I c = blockIdx.y, M = n * HW;
    I lo, hi;
    nn_cuda_slice(M, lo, hi);
    double s = 0.0;
    for (I e = lo + threadIdx.x; e < hi; e += NN_CUDA_THREADS)
        s += x[nn_cuda_channel_at(c, e, C, HW)];
    s = nn_cuda_block_sum<NN_CUDA_THREADS>(s, sh);
    if (threadIdx.x == 0) part[(size_t)c * gridDim.x + blockIdx.x] = s;
}

/* The partial sums of every channel of x (n, C, HW) into part (C slices
 * doubles, slices = nn_cuda_channel_slices(C, n HW), which it returns), on
 * 32-bit indices where the tensor allows */
static inline int nn_cuda_channel_sum_parts(double *part, const float *x, int C, int HW, int n) {
    const int S = nn_cuda_channel_slices(C, (size_t)n * HW);
    const dim3 grid(S, C);
    if ((size_t)n * C * HW < ((size_t)1 << 31))
        nn_cuda_channel_sum_part_kernel<unsigned><<<grid, NN_CUDA_THREADS>>>(part, x, C, HW, n);
    else
        nn_cuda_channel_sum_part_kernel<size_t><<<grid, NN_CUDA_THREADS>>>(part, x, C, HW, n);
    return S;
}

/* elements of one sample of the node's output, and of a batch call */
static inline size_t nn_cuda_count(const nn_op_args *a) {
    return (size_t)a->n * (size_t)nn_shape_numel(&a->node->out);
}

#endif /* NN_OPS_CUDA_H */
