/*
 * activation.c - element-wise activations (relu, leaky_relu, gelu, silu,
 * sigmoid, tanh): model-file definitions and CPU kernels. The formulas are
 * PyTorch's CPU ones in float32, so a NaN input gives a NaN output.
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

const nn_op_def nn_relu_def = {"relu", 1, "", relu_configure, relu_flops};

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

const nn_op_kernels nn_relu_cpu = {relu_fwd, relu_bwd, NULL};

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

const nn_op_def nn_leaky_relu_def = {"leaky_relu", 1, "slope", leaky_relu_configure,
                                     leaky_relu_flops};
const nn_op_def nn_gelu_def = {"gelu", 1, "", same_shape, gelu_flops};
const nn_op_def nn_silu_def = {"silu", 1, "", same_shape, silu_flops};
const nn_op_def nn_sigmoid_def = {"sigmoid", 1, "", same_shape, sigmoid_flops};
const nn_op_def nn_tanh_def = {"tanh", 1, "", same_shape, tanh_flops};

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

const nn_op_kernels nn_leaky_relu_cpu = {leaky_relu_fwd, leaky_relu_bwd, NULL};
const nn_op_kernels nn_gelu_cpu = {gelu_fwd, gelu_bwd, NULL};
const nn_op_kernels nn_silu_cpu = {silu_fwd, silu_bwd, NULL};
const nn_op_kernels nn_sigmoid_cpu = {sigmoid_fwd, sigmoid_bwd, NULL};
const nn_op_kernels nn_tanh_cpu = {tanh_fwd, tanh_bwd, NULL};
