/*
 * activation.c - element-wise activations (relu, leaky_relu, gelu, silu,
 * sigmoid, tanh, relu6, hardswish): model-file definitions and CPU kernels.
 * The formulas are PyTorch's CPU ones in float32, so a NaN input gives a NaN
 * output.
 */
#include "ops/ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static nn_status relu_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    (void)kv;
    node->out = *in;
    return NN_OK;
}

static int64_t relu_flops(const nn_node *node) { return nn_shape_numel(&node->out); }

/* below this many elements a parallel region costs more than it saves */
#define PARALLEL_MIN 32768

void nn_relu_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        size_t lo = count * t / T, hi = count * (t + 1) / T;
        for (size_t i = lo; i < hi; i++) {
            float v = x[i];
            y[i] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN passes, as in PyTorch */
        }
    }
}

void nn_relu_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx) {
    int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        size_t lo = count * t / T, hi = count * (t + 1) / T;
        for (size_t i = lo; i < hi; i++) {
            float g = dy[i];
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
    }
}

static void relu_fwd(const nn_op_args *a) {
    nn_relu_forward(a->y, a->x, (size_t)a->n * (size_t)nn_shape_numel(&a->node->out), a->ctx);
}

static void relu_bwd(const nn_op_args *a) {
    if (a->dx)
        nn_relu_backward(a->dx, a->dy, a->y, (size_t)a->n * (size_t)nn_shape_numel(&a->node->out),
                         a->ctx);
}

static const nn_op_kernels relu_cpu = {.forward = relu_fwd, .backward = relu_bwd};
const nn_op_def nn_relu_def = {
    .name = "relu",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = relu_configure,
    .flops = relu_flops,
    .kernels = {[NN_KERNELS_CPU] = &relu_cpu, NN_CUDA_KERNELS(relu)},
    .epilogue = NN_EPILOGUE_RELU, /* fused into a conv2d or linear before it */
};

/* ------------------------------------------------------------ other activations */

/* Runs the statement list for i in [0, count): one contiguous chunk per thread
 * (a single chunk for small tensors). */
#define FOR_EACH_ELEMENT(i, count, ctx, ...)                                     \
    do {                                                                         \
        const size_t n_ = (count);                                               \
        const int T_ = n_ >= PARALLEL_MIN ? (ctx)->threads : 1;                  \
        NN_PARALLEL_FOR(T_)                                                      \
        for (int t_ = 0; t_ < T_; t_++) {                                        \
            const size_t lo_ = n_ * t_ / T_, hi_ = n_ * (t_ + 1) / T_;           \
            for (size_t i = lo_; i < hi_; i++) { __VA_ARGS__; }                  \
        }                                                                        \
    } while (0)

/* Element-wise ops keep their input's shape; FLOPs count per element the
 * arithmetic ops with exp/erf/tanh as one. */
static nn_status same_shape(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    (void)kv;
    node->out = *in;
    return NN_OK;
}

static nn_status leaky_relu_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const char *s = nn_kv_str(kv, "slope");
    node->d.act.slope = 0.01f; /* torch.nn.LeakyReLU's negative_slope */
    if (s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || *end != '\0' || errno || !isfinite(v) || fabs(v) > 1e30)
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: leaky_relu slope expects a finite number, got '%s'",
                               kv->source, kv->line, s);
        node->d.act.slope = (float)v;
    }
    node->out = *in;
    return NN_OK;
}

static int64_t leaky_relu_flops(const nn_node *node) { return nn_shape_numel(&node->out); }
static int64_t gelu_flops(const nn_node *node) { return 5 * nn_shape_numel(&node->out); }
static int64_t silu_flops(const nn_node *node) { return 4 * nn_shape_numel(&node->out); }
static int64_t sigmoid_flops(const nn_node *node) { return 3 * nn_shape_numel(&node->out); }
static int64_t tanh_flops(const nn_node *node) { return nn_shape_numel(&node->out); }
static int64_t relu6_flops(const nn_node *node) { return 2 * nn_shape_numel(&node->out); }
static int64_t hardswish_flops(const nn_node *node) { return 5 * nn_shape_numel(&node->out); }


void nn_leaky_relu_forward(float *y, const float *x, float slope, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i]; y[i] = v > 0.0f ? v : v * slope);
}

void nn_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope, size_t count,
                            nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * slope);
}

/* GELU's constants: 1/sqrt(2) and 1/sqrt(2 pi) */
#define GELU_ALPHA 0.70710678118654752440f
#define GELU_BETA 0.39894228040143267794f

void nn_gelu_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i];
                     y[i] = v * 0.5f * (1.0f + erff(v * GELU_ALPHA)));
}

/* d/dx = Phi(x) + x phi(x) */
void nn_gelu_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i];
                     float cdf = 0.5f * (1.0f + erff(v * GELU_ALPHA));
                     float pdf = GELU_BETA * expf(-0.5f * v * v);
                     dx[i] = dy[i] * (cdf + v * pdf));
}

void nn_silu_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i]; y[i] = v / (1.0f + expf(-v)));
}

/* d/dx = s (1 + x (1 - s)) with s = sigmoid(x) */
void nn_silu_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i]; float s = 1.0f / (1.0f + expf(-v));
                     dx[i] = dy[i] * s * (1.0f + v * (1.0f - s)));
}

void nn_sigmoid_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, y[i] = 1.0f / (1.0f + expf(-x[i])));
}

void nn_sigmoid_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, dx[i] = dy[i] * (1.0f - y[i]) * y[i]);
}

void nn_tanh_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, y[i] = tanhf(x[i]));
}

void nn_tanh_backward(float *dx, const float *dy, const float *y, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, dx[i] = dy[i] * (1.0f - y[i] * y[i]));
}

/* torch.nn.ReLU6 (hardtanh between 0 and 6): the comparisons let NaN through */
void nn_relu6_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i]; y[i] = v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v);
}

/* hardtanh's backward: no gradient at or beyond the two ends */
void nn_relu6_backward(float *dx, const float *dy, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i];
                     dx[i] = (v <= 0.0f || v >= 6.0f) ? 0.0f : dy[i]);
}

/* torch.nn.Hardswish: x min(max(x + 3, 0), 6) / 6, in that order */
void nn_hardswish_forward(float *y, const float *x, size_t count, nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i]; float r = v + 3.0f;
                     r = r < 0.0f ? 0.0f : r > 6.0f ? 6.0f : r; y[i] = v * r / 6.0f);
}

/* PyTorch's hardswish_backward: 0 below -3, dy (x/3 + 1/2) up to 3, dy above */
void nn_hardswish_backward(float *dx, const float *dy, const float *x, size_t count,
                           nn_ctx *ctx) {
    FOR_EACH_ELEMENT(i, count, ctx, float v = x[i];
                     dx[i] = v < -3.0f ? 0.0f : v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i]);
}

static size_t act_count(const nn_op_args *a) {
    return (size_t)a->n * (size_t)nn_shape_numel(&a->node->out);
}

static void leaky_relu_fwd(const nn_op_args *a) {
    nn_leaky_relu_forward(a->y, a->x, a->node->d.act.slope, act_count(a), a->ctx);
}
static void leaky_relu_bwd(const nn_op_args *a) {
    if (a->dx)
        nn_leaky_relu_backward(a->dx, a->dy, a->x, a->node->d.act.slope, act_count(a), a->ctx);
}
static void gelu_fwd(const nn_op_args *a) { nn_gelu_forward(a->y, a->x, act_count(a), a->ctx); }
static void gelu_bwd(const nn_op_args *a) {
    if (a->dx) nn_gelu_backward(a->dx, a->dy, a->x, act_count(a), a->ctx);
}
static void silu_fwd(const nn_op_args *a) { nn_silu_forward(a->y, a->x, act_count(a), a->ctx); }
static void silu_bwd(const nn_op_args *a) {
    if (a->dx) nn_silu_backward(a->dx, a->dy, a->x, act_count(a), a->ctx);
}
static void sigmoid_fwd(const nn_op_args *a) {
    nn_sigmoid_forward(a->y, a->x, act_count(a), a->ctx);
}
static void sigmoid_bwd(const nn_op_args *a) {
    if (a->dx) nn_sigmoid_backward(a->dx, a->dy, a->y, act_count(a), a->ctx);
}
static void tanh_fwd(const nn_op_args *a) { nn_tanh_forward(a->y, a->x, act_count(a), a->ctx); }
static void tanh_bwd(const nn_op_args *a) {
    if (a->dx) nn_tanh_backward(a->dx, a->dy, a->y, act_count(a), a->ctx);
}
static void relu6_fwd(const nn_op_args *a) { nn_relu6_forward(a->y, a->x, act_count(a), a->ctx); }
static void relu6_bwd(const nn_op_args *a) {
    if (a->dx) nn_relu6_backward(a->dx, a->dy, a->x, act_count(a), a->ctx);
}
static void hardswish_fwd(const nn_op_args *a) {
    nn_hardswish_forward(a->y, a->x, act_count(a), a->ctx);
}
static void hardswish_bwd(const nn_op_args *a) {
    if (a->dx) nn_hardswish_backward(a->dx, a->dy, a->x, act_count(a), a->ctx);
}
static const nn_op_kernels leaky_relu_cpu = {.forward = leaky_relu_fwd, .backward = leaky_relu_bwd};
static const nn_op_kernels gelu_cpu = {.forward = gelu_fwd, .backward = gelu_bwd};
static const nn_op_kernels silu_cpu = {.forward = silu_fwd, .backward = silu_bwd};
static const nn_op_kernels sigmoid_cpu = {.forward = sigmoid_fwd, .backward = sigmoid_bwd};
static const nn_op_kernels tanh_cpu = {.forward = tanh_fwd, .backward = tanh_bwd};

const nn_op_def nn_leaky_relu_def = {
    .name = "leaky_relu",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "slope",
    .configure = leaky_relu_configure,
    .flops = leaky_relu_flops,
    .kernels = {[NN_KERNELS_CPU] = &leaky_relu_cpu, NN_CUDA_KERNELS(leaky_relu)},
};

const nn_op_def nn_gelu_def = {
    .name = "gelu",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = gelu_flops,
    .kernels = {[NN_KERNELS_CPU] = &gelu_cpu, NN_CUDA_KERNELS(gelu)},
};

const nn_op_def nn_silu_def = {
    .name = "silu",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = silu_flops,
    .kernels = {[NN_KERNELS_CPU] = &silu_cpu, NN_CUDA_KERNELS(silu)},
};

const nn_op_def nn_sigmoid_def = {
    .name = "sigmoid",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = sigmoid_flops,
    .kernels = {[NN_KERNELS_CPU] = &sigmoid_cpu, NN_CUDA_KERNELS(sigmoid)},
};

const nn_op_def nn_tanh_def = {
    .name = "tanh",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = tanh_flops,
    .kernels = {[NN_KERNELS_CPU] = &tanh_cpu, NN_CUDA_KERNELS(tanh)},
};

static const nn_op_kernels relu6_cpu = {.forward = relu6_fwd, .backward = relu6_bwd};

const nn_op_def nn_relu6_def = {
    .name = "relu6",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = relu6_flops,
    .kernels = {[NN_KERNELS_CPU] = &relu6_cpu, NN_CUDA_KERNELS(relu6)},
};

static const nn_op_kernels hardswish_cpu = {.forward = hardswish_fwd, .backward = hardswish_bwd};

const nn_op_def nn_hardswish_def = {
    .name = "hardswish",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = same_shape,
    .flops = hardswish_flops,
    .kernels = {[NN_KERNELS_CPU] = &hardswish_cpu, NN_CUDA_KERNELS(hardswish)},
};
