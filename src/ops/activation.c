/* activation.c - elementwise activations (ReLU): definition and CPU kernels. */
#include "ops/ops.h"

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
