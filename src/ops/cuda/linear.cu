/*
 * linear.cu - the CUDA twin of linear.c: y (n, out) = x (n, in) W^T + b with
 * W (out, in), through cuBLAS (fp32, no TF32). Backward masks dy by the
 * fused ReLU into the workspace, overwrites dx = dy W and accumulates
 * dW += dy^T x and db += the column sums of dy (one thread per output, over
 * the batch in order, as the CPU).
 */
#include "ops/cuda/ops_cuda.h"

/* y (n, out) += b, then the fused ReLU */
__global__ void bias_relu_kernel(float *y, const float *b, int out, int relu, size_t n) {
    NN_CUDA_FOR(j, n) {
        float v = y[j];
        if (b) v += b[j % out];
        y[j] = relu ? nn_relu_f(v) : v;
    }
}

/* (declared in ops_cuda.h: the convolutions use it too) */
__global__ void relu_mask_kernel(float *g, const float *dy, const float *y, size_t n) {
    NN_CUDA_FOR(j, n) g[j] = nn_relu_mask_f(dy[j], y[j]);
}

/* db (out) += sum over the batch of dy (n, out) */
__global__ void column_sums_kernel(float *db, const float *dy, int out, int n) {
    NN_CUDA_FOR(o, out) {
        float s = 0.0f;
        for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
        db[o] += s;
    }
}

static void linear_fwd(const nn_op_args *a) {
    const nn_linear_desc *d = &a->node->d.linear;
    /* y = x W^T: (n, in) x (in, out) */
    nn_cuda_sgemm(0, 1, a->n, d->out, d->in, 1.0f, a->x, d->in, 0, a->w, d->in, 0, 0.0f, a->y,
                  d->out, 0, 1);
    if (a->b || d->relu) {
        const size_t n = (size_t)a->n * d->out;
        bias_relu_kernel<<<NN_CUDA_GRID(n)>>>(a->y, a->b, d->out, d->relu, n);
        nn_cuda_check_launch("linear forward");
    }
}

static void linear_bwd(const nn_op_args *a) {
    const nn_linear_desc *d = &a->node->d.linear;
    const float *dy = a->dy; /* (n, out) */
    if (d->relu) {
        const size_t n = (size_t)a->n * d->out;
        relu_mask_kernel<<<NN_CUDA_GRID(n)>>>(a->ws, a->dy, a->y, n);
        nn_cuda_check_launch("linear backward");
        dy = a->ws;
    }
    /* dx (n, in) = dy (n, out) W (out, in) */
    if (a->dx)
        nn_cuda_sgemm(0, 0, a->n, d->in, d->out, 1.0f, dy, d->out, 0, a->w, d->in, 0, 0.0f, a->dx,
                      d->in, 0, 1);
    /* dW (out, in) += dy^T (out, n) x (n, in) */
    nn_cuda_sgemm(1, 0, d->out, d->in, a->n, 1.0f, dy, d->out, 0, a->x, d->in, 0, 1.0f, a->dw,
                  d->in, 0, 1);
    if (a->db) {
        column_sums_kernel<<<NN_CUDA_GRID(d->out)>>>(a->db, dy, d->out, a->n);
        nn_cuda_check_launch("linear backward (bias)");
    }
}

static size_t linear_ws(const nn_node *node, int max_batch, int threads) {
    (void)threads;
    return node->d.linear.relu ? (size_t)max_batch * node->d.linear.out : 0;
}

extern "C" const nn_op_kernels nn_linear_cuda = {linear_fwd, linear_bwd, linear_ws, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
