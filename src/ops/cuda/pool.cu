/*
 * pool.cu - the CUDA twin of pool.c: max-pooling, average pooling (count
 * includes the padding: divisor R*S) and global average pooling. Forward is
 * one thread per output; backward one thread per input element, which
 * gathers from every window that covers it in the CPU's (p, q) order, so no
 * atomics and the same sums. Max-pooling's backward finds each window's
 * maximum again from x (first maximum, NaN wins, as the CPU) and applies the
 * fused ReLU's gradient mask (relu_mask) at the maximum.
 */
#include "ops/cuda/ops_cuda.h"

/* Flat index (ih * W + iw) in its plane of the maximum of window (p, q). */
__device__ int window_argmax(const float *xp, nn_pool_desc d, int p, int q) {
    float best = 0.0f;
    int bi = -1;
    for (int r = 0; r < d.R; r++) {
        const int ih = p * d.stride_h - d.pad_h + r;
        if (ih < 0 || ih >= d.H) continue;
        for (int s = 0; s < d.S; s++) {
            const int iw = q * d.stride_w - d.pad_w + s;
            if (iw < 0 || iw >= d.W) continue;
            const float v = xp[ih * d.W + iw];
            if (bi < 0 || v > best || (v != v && best == best)) {
                best = v;
                bi = ih * d.W + iw;
            }
        }
    }
    return bi;
}

/* The outputs along one axis whose window covers input i: [lo, hi]. */
__device__ __forceinline__ void covering(int i, int pad, int size, int stride, int out, int *lo,
                                         int *hi) {
    const int a = i + pad - size + 1; /* p * stride >= a */
    *lo = a <= 0 ? 0 : (a + stride - 1) / stride;
    const int b = (i + pad) / stride; /* p * stride <= i + pad */
    *hi = b < out - 1 ? b : out - 1;
}

__global__ void maxpool_forward_kernel(float *y, const float *x, nn_pool_desc d, size_t n) {
    const int PQ = d.P * d.Q;
    NN_CUDA_FOR(o, n) {
        const size_t plane = o / PQ;
        const int pq = (int)(o % PQ);
        const float *xp = x + plane * d.H * d.W; /* (H, W) */
        y[o] = xp[window_argmax(xp, d, pq / d.Q, pq % d.Q)];
    }
}

__global__ void maxpool_backward_kernel(float *dx, const float *dy, const float *x,
                                        nn_pool_desc d, size_t n) {
    const int HW = d.H * d.W, PQ = d.P * d.Q;
    NN_CUDA_FOR(e, n) {
        const size_t plane = e / HW;
        const int at = (int)(e % HW), h = at / d.W, w = at % d.W;
        const float *xp = x + plane * HW;   /* (H, W) */
        const float *dyp = dy + plane * PQ; /* (P, Q) */
        int p0, p1, q0, q1;
        covering(h, d.pad_h, d.R, d.stride_h, d.P, &p0, &p1);
        covering(w, d.pad_w, d.S, d.stride_w, d.Q, &q0, &q1);
        float g = 0.0f;
        for (int p = p0; p <= p1; p++)
            for (int q = q0; q <= q1; q++)
                if (window_argmax(xp, d, p, q) == at && (!d.relu_mask || xp[at] > 0.0f))
                    g += dyp[p * d.Q + q];
        dx[e] = g;
    }
}

__global__ void avgpool_forward_kernel(float *y, const float *x, nn_pool_desc d, size_t n) {
    const int PQ = d.P * d.Q;
    const float div = (float)(d.R * d.S);
    NN_CUDA_FOR(o, n) {
        const size_t plane = o / PQ;
        const int pq = (int)(o % PQ), p = pq / d.Q, q = pq % d.Q;
        const float *xp = x + plane * d.H * d.W; /* (H, W) */
        const int a = p * d.stride_h - d.pad_h, b = q * d.stride_w - d.pad_w;
        const int h0 = a < 0 ? 0 : a, h1 = a + d.R > d.H ? d.H : a + d.R;
        const int w0 = b < 0 ? 0 : b, w1 = b + d.S > d.W ? d.W : b + d.S;
        float s = 0.0f;
        for (int h = h0; h < h1; h++)
            for (int w = w0; w < w1; w++) s += xp[h * d.W + w];
        y[o] = s / div;
    }
}

__global__ void avgpool_backward_kernel(float *dx, const float *dy, nn_pool_desc d, size_t n) {
    const int HW = d.H * d.W, PQ = d.P * d.Q;
    const float div = (float)(d.R * d.S);
    NN_CUDA_FOR(e, n) {
        const size_t plane = e / HW;
        const int at = (int)(e % HW), h = at / d.W, w = at % d.W;
        const float *dyp = dy + plane * PQ; /* (P, Q) */
        int p0, p1, q0, q1;
        covering(h, d.pad_h, d.R, d.stride_h, d.P, &p0, &p1);
        covering(w, d.pad_w, d.S, d.stride_w, d.Q, &q0, &q1);
        float g = 0.0f;
        for (int p = p0; p <= p1; p++)
            for (int q = q0; q <= q1; q++) g += dyp[p * d.Q + q] / div;
        dx[e] = g;
    }
}

/* one thread per (sample, channel) plane: the CPU's sequential sum */
__global__ void gap_forward_kernel(float *y, const float *x, int HW, size_t planes) {
    const float div = (float)HW;
    NN_CUDA_FOR(pl, planes) {
        const float *xp = x + pl * HW; /* (HW) */
        float s = 0.0f;
        for (int j = 0; j < HW; j++) s += xp[j];
        y[pl] = s / div; /* y (N, C) */
    }
}

__global__ void gap_backward_kernel(float *dx, const float *dy, int HW, size_t n) {
    const float div = (float)HW;
    NN_CUDA_FOR(e, n) dx[e] = dy[e / HW] / div;
}

static size_t planes(const nn_op_args *a) { return (size_t)a->n * (size_t)a->node->d.pool.C; }

static void maxpool_fwd(const nn_op_args *a) {
    const nn_pool_desc d = a->node->d.pool;
    const size_t n = planes(a) * d.P * d.Q;
    maxpool_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->y, a->x, d, n);
    nn_cuda_check_launch("maxpool forward");
}

static void maxpool_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_pool_desc d = a->node->d.pool;
    const size_t n = planes(a) * d.H * d.W;
    maxpool_backward_kernel<<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, a->x, d, n);
    nn_cuda_check_launch("maxpool backward");
}

static void avgpool_fwd(const nn_op_args *a) {
    const nn_pool_desc d = a->node->d.pool;
    const size_t n = planes(a) * d.P * d.Q;
    avgpool_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->y, a->x, d, n);
    nn_cuda_check_launch("avgpool forward");
}

static void avgpool_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_pool_desc d = a->node->d.pool;
    const size_t n = planes(a) * d.H * d.W;
    avgpool_backward_kernel<<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, d, n);
    nn_cuda_check_launch("avgpool backward");
}

static void gap_fwd(const nn_op_args *a) {
    const nn_pool_desc d = a->node->d.pool;
    gap_forward_kernel<<<NN_CUDA_GRID(planes(a))>>>(a->y, a->x, d.H * d.W, planes(a));
    nn_cuda_check_launch("gap forward");
}

static void gap_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_pool_desc d = a->node->d.pool;
    const size_t n = planes(a) * d.H * d.W;
    gap_backward_kernel<<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, d.H * d.W, n);
    nn_cuda_check_launch("gap backward");
}

extern "C" const nn_op_kernels nn_maxpool_cuda = {maxpool_fwd, maxpool_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
extern "C" const nn_op_kernels nn_avgpool_cuda = {avgpool_fwd, avgpool_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
extern "C" const nn_op_kernels nn_gap_cuda = {gap_fwd, gap_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
