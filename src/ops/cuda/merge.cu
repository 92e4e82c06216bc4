/*
 * merge.cu - the CUDA twin of merge.c: add (y = x0 + x1 + ..., added left to
 * right, with the fused ReLU: gradients masked where y <= 0) and concat
 * (along channels, as torch.cat(dim=1)). Inputs travel to the kernels by
 * value, up to NN_MAX_INPUTS pointers.
 */
#include "ops/cuda/ops_cuda.h"

typedef struct {
    const float *x[NN_MAX_INPUTS];
} inputs;

typedef struct {
    float *dx[NN_MAX_INPUTS];
} grads;

typedef struct {
    int C[NN_MAX_INPUTS]; /* channels of input k */
    int m;                /* inputs */
} chans;

__global__ void add_forward_kernel(float *y, inputs in, int m, int relu, size_t n) {
    NN_CUDA_FOR(i, n) {
        float v = in.x[0][i] + in.x[1][i];
        for (int k = 2; k < m; k++) v += in.x[k][i];
        y[i] = relu ? nn_relu_f(v) : v;
    }
}

/* dx[k] = dy (masked by the fused ReLU's output y, unless y is NULL) */
__global__ void add_backward_kernel(grads g, const float *dy, const float *y, int m, size_t n) {
    NN_CUDA_FOR(i, n) {
        const float v = y ? nn_relu_mask_f(dy[i], y[i]) : dy[i];
        for (int k = 0; k < m; k++)
            if (g.dx[k]) g.dx[k][i] = v;
    }
}

/* Output element j of the concatenation, y (n, sum C, inner): its input *k
 * and the offset there. */
__device__ static size_t concat_source(const chans &c, int inner, size_t j, int *k) {
    int total = 0;
    for (int m = 0; m < c.m; m++) total += c.C[m];
    const size_t per = (size_t)total * inner, i = j / per;
    int ch = (int)(j % per / inner), m = 0;
    while (ch >= c.C[m]) ch -= c.C[m++];
    *k = m;
    return (i * c.C[m] + ch) * inner + j % inner;
}

/* y from the inputs' blocks; one thread per output */
__global__ void concat_forward_kernel(float *y, inputs in, chans c, int inner, size_t n) {
    NN_CUDA_FOR(j, n) {
        int k;
        const size_t at = concat_source(c, inner, j, &k);
        y[j] = in.x[k][at];
    }
}

__global__ void concat_backward_kernel(grads g, const float *dy, chans c, int inner, size_t n) {
    NN_CUDA_FOR(j, n) {
        int k;
        const size_t at = concat_source(c, inner, j, &k);
        if (g.dx[k]) g.dx[k][at] = dy[j];
    }
}

static void add_fwd(const nn_op_args *a) {
    inputs in;
    for (int k = 0; k < NN_MAX_INPUTS; k++) in.x[k] = a->xs[k];
    const size_t n = nn_cuda_count(a);
    add_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->y, in, a->node->num_inputs, a->node->d.add.relu, n);
    nn_cuda_check_launch("add forward");
}

static void add_bwd(const nn_op_args *a) {
    grads g;
    for (int k = 0; k < NN_MAX_INPUTS; k++) g.dx[k] = k < a->node->num_inputs ? a->dxs[k] : NULL;
    const size_t n = nn_cuda_count(a);
    add_backward_kernel<<<NN_CUDA_GRID(n)>>>(g, a->dy, a->node->d.add.relu ? a->y : NULL,
                                             a->node->num_inputs, n);
    nn_cuda_check_launch("add backward");
}

/* The inputs' channels, as concat_inputs in merge.c (count <= 2: C1, C2). */
static chans channels_of(const nn_concat_desc *d) {
    chans c;
    for (int k = 0; k < NN_MAX_INPUTS; k++) c.C[k] = 0;
    if (d->count <= 2) {
        c.C[0] = d->C1, c.C[1] = d->C2, c.m = 2;
    } else {
        for (int k = 0; k < d->count; k++) c.C[k] = d->C[k];
        c.m = d->count;
    }
    return c;
}

static void concat_fwd(const nn_op_args *a) {
    inputs in;
    for (int k = 0; k < NN_MAX_INPUTS; k++) in.x[k] = a->xs[k];
    const size_t n = nn_cuda_count(a);
    concat_forward_kernel<<<NN_CUDA_GRID(n)>>>(a->y, in, channels_of(&a->node->d.concat),
                                               a->node->d.concat.inner, n);
    nn_cuda_check_launch("concat forward");
}

static void concat_bwd(const nn_op_args *a) {
    grads g;
    for (int k = 0; k < NN_MAX_INPUTS; k++) g.dx[k] = k < a->node->num_inputs ? a->dxs[k] : NULL;
    const size_t n = nn_cuda_count(a);
    concat_backward_kernel<<<NN_CUDA_GRID(n)>>>(g, a->dy, channels_of(&a->node->d.concat),
                                                a->node->d.concat.inner, n);
    nn_cuda_check_launch("concat backward");
}

extern "C" const nn_op_kernels nn_add_cuda = {add_fwd, add_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
extern "C" const nn_op_kernels nn_concat_cuda = {concat_fwd, concat_bwd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
