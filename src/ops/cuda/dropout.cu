/*
 * dropout.cu - the CUDA twin of dropout.c. Element i of a batch call is kept
 * when the same hash of (the net's dropout seed, the layer's position, i) as
 * on the CPU is at least p, so the masks are the CPU's bit for bit; the mask
 * (one byte per element) goes to the node's aux memory for backward. Eval
 * mode is the identity.
 */
#include "ops/cuda/ops_cuda.h"

/* splitmix64's finalizer, as dropout.c (host: the layer's key; device: each element's) */
__host__ __device__ static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t layer_key(uint64_t seed, int node_index) {
    return mix64(seed ^ mix64(0x9e3779b97f4a7c15ULL * (uint64_t)(node_index + 1)));
}

__global__ void dropout_forward_kernel(float *y, uint8_t *mask, const float *x, float p,
                                       float scale, uint64_t key, size_t n) {
    NN_CUDA_FOR(i, n) {
        const uint64_t h = mix64(key + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
        const int k = (float)(h >> 40) * 0x1p-24f >= p; /* 24-bit uniform in [0, 1) */
        mask[i] = (uint8_t)k;
        y[i] = k ? x[i] * scale : 0.0f;
    }
}

__global__ void dropout_backward_kernel(float *dx, const float *dy, const uint8_t *mask,
                                        float scale, size_t n) {
    NN_CUDA_FOR(i, n) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

static void dropout_fwd(const nn_op_args *a) {
    const size_t n = nn_cuda_count(a);
    uint8_t *mask = (uint8_t *)a->aux; /* (n) */
    if (!a->training) {
        nn_cuda_check((int)cudaMemcpyAsync(a->y, a->x, n * sizeof(float),
                                           cudaMemcpyDeviceToDevice, 0), "dropout (eval)");
        nn_cuda_check((int)cudaMemsetAsync(mask, 1, n, 0), "dropout (eval)");
        return;
    }
    const float p = a->node->d.dropout.p;
    dropout_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->y, mask, a->x, p, 1.0f / (1.0f - p),
                                                layer_key(a->dropout_seed, a->node_index), n);
    nn_cuda_check_launch("dropout forward");
}

static void dropout_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const size_t n = nn_cuda_count(a);
    if (!a->training) {
        nn_cuda_check((int)cudaMemcpyAsync(a->dx, a->dy, n * sizeof(float),
                                           cudaMemcpyDeviceToDevice, 0), "dropout (eval)");
        return;
    }
    const float p = a->node->d.dropout.p;
    dropout_backward_kernel<<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, (const uint8_t *)a->aux,
                                                 1.0f / (1.0f - p), n);
    nn_cuda_check_launch("dropout backward");
}

extern "C" const nn_op_kernels nn_dropout_cuda = {dropout_fwd, dropout_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
