/*
 * activation.cu - the CUDA twin of activation.c: relu, leaky_relu, gelu,
 * silu, sigmoid, tanh, relu6, hardswish, forward and backward, with the CPU
 * kernels' float formulas (the same order of operations; CUDA's expf, erff
 * and tanhf are within 2 ulp of glibc's, so results agree to a few ulp).
 * Backward overwrites dx; relu, sigmoid and tanh take their output y, the
 * others their input x, as on the CPU.
 */
#include "ops/cuda/ops_cuda.h"

#define GELU_ALPHA 0.70710678118654752440f /* 1/sqrt(2) */
#define GELU_BETA 0.39894228040143267794f  /* 1/sqrt(2 pi) */

__device__ __forceinline__ float act_forward(nn_op_type op, float v, float slope) {
    switch (op) {
    case NN_OP_RELU: return nn_relu_f(v);
    case NN_OP_LEAKY_RELU: return v > 0.0f ? v : v * slope;
    case NN_OP_GELU: return v * 0.5f * (1.0f + erff(v * GELU_ALPHA));
    case NN_OP_SILU: return v / (1.0f + expf(-v));
    case NN_OP_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case NN_OP_TANH: return tanhf(v);
    case NN_OP_RELU6: return v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v;
    case NN_OP_HARDSWISH: {
        float r = v + 3.0f;
        r = r < 0.0f ? 0.0f : r > 6.0f ? 6.0f : r;
        return v * r / 6.0f;
    }
    default: return v;
    }
}

/* u is the output y (relu, sigmoid, tanh) or the input x (the others) */
__device__ __forceinline__ float act_backward(nn_op_type op, float g, float u, float slope) {
    switch (op) {
    case NN_OP_RELU: return u > 0.0f ? g : 0.0f;
    case NN_OP_LEAKY_RELU: return u > 0.0f ? g : g * slope;
    case NN_OP_GELU: {
        const float cdf = 0.5f * (1.0f + erff(u * GELU_ALPHA));
        const float pdf = GELU_BETA * expf(-0.5f * u * u);
        return g * (cdf + u * pdf);
    }
    case NN_OP_SILU: {
        const float s = 1.0f / (1.0f + expf(-u));
        return g * s * (1.0f + u * (1.0f - s));
    }
    case NN_OP_SIGMOID: return g * (1.0f - u) * u;
    case NN_OP_TANH: return g * (1.0f - u * u);
    case NN_OP_RELU6: return (u <= 0.0f || u >= 6.0f) ? 0.0f : g;
    case NN_OP_HARDSWISH: return u < -3.0f ? 0.0f : u <= 3.0f ? g * (u / 3.0f + 0.5f) : g;
    default: return g;
    }
}

__global__ void act_forward_kernel(nn_op_type op, float *y, const float *x, float slope,
                                   size_t n) {
    NN_CUDA_FOR(i, n) y[i] = act_forward(op, x[i], slope);
}

__global__ void act_backward_kernel(nn_op_type op, float *dx, const float *dy, const float *u,
                                    float slope, size_t n) {
    NN_CUDA_FOR(i, n) dx[i] = act_backward(op, dy[i], u[i], slope);
}

static float slope_of(const nn_op_args *a) {
    return a->node->op == NN_OP_LEAKY_RELU ? a->node->d.act.slope : 0.0f;
}

static void act_fwd(const nn_op_args *a) {
    const size_t n = nn_cuda_count(a);
    act_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->node->op, a->y, a->x, slope_of(a), n);
    nn_cuda_check_launch("activation forward");
}

static void act_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_op_type op = a->node->op;
    const int uses_y = op == NN_OP_RELU || op == NN_OP_SIGMOID || op == NN_OP_TANH;
    const size_t n = nn_cuda_count(a);
    act_backward_kernel<<<NN_CUDA_GRID(n)>>>(op, a->dx, a->dy, uses_y ? a->y : a->x, slope_of(a),
                                             n);
    nn_cuda_check_launch("activation backward");
}

#define ACT_TABLE(k) extern "C" const nn_op_kernels nn_##k##_cuda = {act_fwd, act_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
ACT_TABLE(relu)
ACT_TABLE(leaky_relu)
ACT_TABLE(gelu)
ACT_TABLE(silu)
ACT_TABLE(sigmoid)
ACT_TABLE(tanh)
ACT_TABLE(relu6)
ACT_TABLE(hardswish)
