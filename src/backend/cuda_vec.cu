/*
 * cuda_vec.cu - the CUDA backend's vector loops (cuda_vec.h): grid-stride
 * kernels on the default stream, so they are ordered with every other kernel
 * and copy. The sum of squares (gradient clipping) is deterministic: a fixed
 * grid, each block's partial sum by a fixed tree, then one block adds the
 * partials in order.
 */
#include "backend/cuda_vec.h"
#include "backend/cuda_blas.h"

#include <cuda_runtime.h>
#include <pthread.h>

#define THREADS 256
#define SUM_BLOCKS 256

__global__ void fill_kernel(float *x, size_t n, float v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

__global__ void add_kernel(float *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] += src[i];
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

__global__ void lerp_kernel(float *dst, const float *src, size_t n, float w) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] += w * (src[i] - dst[i]);
}

/* Block b's sum of squares into part[b]; then (second launch, one block)
 * the partials in order into part[SUM_BLOCKS]. */
__global__ void sumsq_kernel(double *part, const float *x, size_t n) {
    __shared__ double acc[THREADS];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * (double)x[i];
    acc[threadIdx.x] = s;
    __syncthreads();
    for (unsigned h = THREADS / 2; h > 0; h /= 2) {
        if (threadIdx.x < h) acc[threadIdx.x] += acc[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = acc[0];
}

__global__ void sum_parts_kernel(double *part) {
    double s = 0.0;
    for (int b = 0; b < SUM_BLOCKS; b++) s += part[b];
    part[SUM_BLOCKS] = s;
}

extern "C" void nn_cuda_zero(void *dev, size_t bytes) {
    nn_cuda_check((int)cudaMemsetAsync(dev, 0, bytes, 0), "cudaMemsetAsync");
}

extern "C" void nn_cuda_fill(float *dev, size_t n, float value) {
    fill_kernel<<<nn_cuda_blocks(n, THREADS), THREADS>>>(dev, n, value);
    nn_cuda_check_launch("fill");
}

extern "C" void nn_cuda_add(float *dst, const float *src, size_t n) {
    add_kernel<<<nn_cuda_blocks(n, THREADS), THREADS>>>(dst, src, n);
    nn_cuda_check_launch("add");
}

extern "C" void nn_cuda_scale(float *dev, size_t n, float s) {
    scale_kernel<<<nn_cuda_blocks(n, THREADS), THREADS>>>(dev, n, s);
    nn_cuda_check_launch("scale");
}

extern "C" void nn_cuda_lerp(float *dst, const float *src, size_t n, float w) {
    lerp_kernel<<<nn_cuda_blocks(n, THREADS), THREADS>>>(dst, src, n, w);
    nn_cuda_check_launch("lerp");
}

/* the partial sums: SUM_BLOCKS + 1 doubles, made once per process */
static pthread_once_t parts_once = PTHREAD_ONCE_INIT;
static double *parts;

static void make_parts(void) {
    nn_cuda_check((int)cudaMalloc((void **)&parts, (SUM_BLOCKS + 1) * sizeof(double)),
                  "cudaMalloc (sum of squares)");
}

extern "C" double nn_cuda_sum_squares(const float *dev, size_t n) {
    pthread_once(&parts_once, make_parts);
    sumsq_kernel<<<SUM_BLOCKS, THREADS>>>(parts, dev, n);
    nn_cuda_check_launch("sum of squares");
    sum_parts_kernel<<<1, 1>>>(parts);
    nn_cuda_check_launch("sum of squares");
    double s = 0.0;
    nn_cuda_check((int)cudaMemcpy(&s, parts + SUM_BLOCKS, sizeof s, cudaMemcpyDeviceToHost),
                  "cudaMemcpy (sum of squares)");
    return s;
}
