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

/* elements of one sample of the node's output, and of a batch call */
static inline size_t nn_cuda_count(const nn_op_args *a) {
    return (size_t)a->n * (size_t)nn_shape_numel(&a->node->out);
}

#endif /* NN_OPS_CUDA_H */
