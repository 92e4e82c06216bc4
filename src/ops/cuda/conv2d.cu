/*
 * conv2d.cu - the CUDA twin of conv2d.c: every convolution (dense, grouped,
 * depthwise, 1x1, strided, dilated) as im2col + cuBLAS GEMMs over chunks of
 * images, one strided-batched GEMM over the channel groups (fp32, no TF32).
 * A first version, chosen for being right on every shape: cuDNN with its
 * algorithm measured per shape (issue 19) is to come, and depthwise layers
 * run as C GEMMs of one row each, far from the GPU's speed.
 *
 * Per chunk of gc images (ld = gc P Q columns):
 *   forward:  col (C R S, ld) = im2col(x); Yg (K, ld) = W (K, C/g R S) col per
 *             group; y = Yg + b, fused ReLU, scattered to (N, K, P, Q)
 *   backward: dYg (K, ld) = dy masked by the fused ReLU (unless the max-pool
 *             after it masks: relu_masked_later); db += row sums of dYg;
 *             dW += dYg col^T per group; col = W^T dYg per group; dx =
 *             col2im(col), gathered per input element (no atomics)
 * Backward overwrites dx and accumulates into dw and db, as on the CPU.
 */
#include "ops/cuda/ops_cuda.h"

/* the chunk's buffers stay within this many floats (128 MiB) unless one
 * image alone needs more */
#define CONV_CHUNK_FLOATS ((size_t)1 << 25)
#define ROW_THREADS 256

static size_t floats_per_image(const nn_conv2d_desc *d) {
    return ((size_t)d->C * d->R * d->S + (size_t)d->K) * (size_t)d->P * d->Q;
}

/* images per chunk for a batch of n */
static int chunk_images(const nn_conv2d_desc *d, int n) {
    size_t g = CONV_CHUNK_FLOATS / floats_per_image(d);
    if (g < 1) g = 1;
    return g < (size_t)n ? (int)g : n;
}

/* col (C R S, ld) from images x (gc, C, H, W); zero in the padding */
__global__ void im2col_kernel(float *col, const float *x, nn_conv2d_desc d, int ld, size_t n) {
    const int PQ = d.P * d.Q;
    const int dh = d.dil_h > 1 ? d.dil_h : 1, dw = d.dil_w > 1 ? d.dil_w : 1;
    NN_CUDA_FOR(j, n) {
        const int row = (int)(j / ld), at = (int)(j % ld);
        const int s = row % d.S, r = row / d.S % d.R, c = row / (d.R * d.S);
        const int g = at / PQ, pq = at % PQ, p = pq / d.Q, q = pq % d.Q;
        const int ih = p * d.stride_h - d.pad_h + r * dh, iw = q * d.stride_w - d.pad_w + s * dw;
        col[j] = (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
                     ? x[(((size_t)g * d.C + c) * d.H + ih) * d.W + iw]
                     : 0.0f;
    }
}

/* dx (gc, C, H, W) = the sum of the col entries every input element fed */
__global__ void col2im_kernel(float *dx, const float *col, nn_conv2d_desc d, int ld, size_t n) {
    const int PQ = d.P * d.Q;
    const int dh = d.dil_h > 1 ? d.dil_h : 1, dw = d.dil_w > 1 ? d.dil_w : 1;
    NN_CUDA_FOR(j, n) {
        const int w = (int)(j % d.W), h = (int)(j / d.W % d.H), c = (int)(j / ((size_t)d.W * d.H) % d.C);
        const int g = (int)(j / ((size_t)d.W * d.H * d.C));
        float sum = 0.0f;
        for (int r = 0; r < d.R; r++) {
            const int hp = h + d.pad_h - r * dh;
            if (hp < 0 || hp % d.stride_h) continue;
            const int p = hp / d.stride_h;
            if (p >= d.P) continue;
            for (int s = 0; s < d.S; s++) {
                const int wp = w + d.pad_w - s * dw;
                if (wp < 0 || wp % d.stride_w) continue;
                const int q = wp / d.stride_w;
                if (q >= d.Q) continue;
                sum += col[(size_t)((c * d.R + r) * d.S + s) * ld + g * PQ + p * d.Q + q];
            }
        }
        dx[j] = sum;
    }
}

/* y (gc, K, PQ) = Yg (K, ld) + b, with the fused ReLU */
__global__ void scatter_kernel(float *y, const float *yg, const float *b, int K, int PQ, int ld,
                               int relu, size_t n) {
    NN_CUDA_FOR(j, n) {
        const int pq = (int)(j % PQ), k = (int)(j / PQ % K), g = (int)(j / ((size_t)PQ * K));
        const float v = yg[(size_t)k * ld + g * PQ + pq] + (b ? b[k] : 0.0f);
        y[j] = relu ? nn_relu_f(v) : v;
    }
}

/* dYg (K, ld) from dy (gc, K, PQ), masked where the fused ReLU's y <= 0 (y NULL: no mask) */
__global__ void gather_dy_kernel(float *dyg, const float *dy, const float *y, int K, int PQ,
                                 int ld, size_t n) {
    NN_CUDA_FOR(j, n) {
        const int pq = (int)(j % PQ), k = (int)(j / PQ % K), g = (int)(j / ((size_t)PQ * K));
        dyg[(size_t)k * ld + g * PQ + pq] = y ? nn_relu_mask_f(dy[j], y[j]) : dy[j];
    }
}

/* db[k] += the sum of row k of dYg (K, ld): one block per row, in double */
__global__ void row_sums_kernel(float *db, const float *dyg, int ld) {
    __shared__ double sh[ROW_THREADS];
    const float *row = dyg + (size_t)blockIdx.x * ld;
    double s = 0.0;
    for (int j = threadIdx.x; j < ld; j += ROW_THREADS) s += row[j];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (unsigned h = ROW_THREADS / 2; h > 0; h /= 2) {
        if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[blockIdx.x] += (float)sh[0];
}

/* The GEMMs' shapes: groups, and per group K, C R S. */
typedef struct {
    int groups, Kg, CRSg;
} conv_gemm;

static conv_gemm gemm_of(const nn_conv2d_desc *d) {
    conv_gemm g;
    g.groups = d->groups > 1 ? d->groups : 1;
    g.Kg = d->K / g.groups;
    g.CRSg = d->C / g.groups * d->R * d->S;
    return g;
}

static void im2col(float *col, const float *x, const nn_conv2d_desc *d, int ld) {
    const size_t n = (size_t)d->C * d->R * d->S * ld;
    im2col_kernel<<<NN_CUDA_GRID(n)>>>(col, x, *d, ld, n);
    nn_cuda_check_launch("conv2d im2col");
}

static void conv2d_fwd(const nn_op_args *a) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    const conv_gemm m = gemm_of(d);
    const int PQ = d->P * d->Q, G = chunk_images(d, a->n);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * PQ;
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int gc = a->n - i0 < G ? a->n - i0 : G, ld = gc * PQ;
        float *col = a->ws;                                /* (C R S, ld) */
        float *yg = col + (size_t)d->C * d->R * d->S * ld; /* (K, ld) */
        im2col(col, a->x + i0 * xs, d, ld);
        nn_cuda_sgemm(0, 0, m.Kg, ld, m.CRSg, 1.0f, a->w, m.CRSg, (long long)m.Kg * m.CRSg, col,
                      ld, (long long)m.CRSg * ld, 0.0f, yg, ld, (long long)m.Kg * ld, m.groups);
        const size_t n = (size_t)gc * ys;
        scatter_kernel<<<NN_CUDA_GRID(n)>>>(a->y + i0 * ys, yg, a->b, d->K, PQ, ld, d->relu, n);
        nn_cuda_check_launch("conv2d forward");
    }
}

static void conv2d_bwd(const nn_op_args *a) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    const conv_gemm m = gemm_of(d);
    const int PQ = d->P * d->Q, G = chunk_images(d, a->n);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * PQ;
    /* the fused ReLU's mask, unless the max-pool after it applied it (graph.c) */
    const int mask = d->relu && !d->relu_masked_later;
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int gc = a->n - i0 < G ? a->n - i0 : G, ld = gc * PQ;
        float *col = a->ws;                                 /* (C R S, ld) */
        float *dyg = col + (size_t)d->C * d->R * d->S * ld; /* (K, ld) */
        const size_t n = (size_t)gc * ys;
        gather_dy_kernel<<<NN_CUDA_GRID(n)>>>(dyg, a->dy + i0 * ys, mask ? a->y + i0 * ys : NULL,
                                              d->K, PQ, ld, n);
        nn_cuda_check_launch("conv2d backward");
        if (a->db) {
            row_sums_kernel<<<d->K, ROW_THREADS>>>(a->db, dyg, ld);
            nn_cuda_check_launch("conv2d backward (bias)");
        }
        im2col(col, a->x + i0 * xs, d, ld);
        /* dW (Kg, CRSg) += dYg (Kg, ld) col^T (ld, CRSg), per group */
        nn_cuda_sgemm(0, 1, m.Kg, m.CRSg, ld, 1.0f, dyg, ld, (long long)m.Kg * ld, col, ld,
                      (long long)m.CRSg * ld, 1.0f, a->dw, m.CRSg, (long long)m.Kg * m.CRSg,
                      m.groups);
        if (!a->dx) continue;
        /* col (CRSg, ld) = W^T (CRSg, Kg) dYg (Kg, ld), per group */
        nn_cuda_sgemm(1, 0, m.CRSg, ld, m.Kg, 1.0f, a->w, m.CRSg, (long long)m.Kg * m.CRSg, dyg,
                      ld, (long long)m.Kg * ld, 0.0f, col, ld, (long long)m.CRSg * ld, m.groups);
        const size_t nx = (size_t)gc * xs;
        col2im_kernel<<<NN_CUDA_GRID(nx)>>>(a->dx + i0 * xs, col, *d, ld, nx);
        nn_cuda_check_launch("conv2d col2im");
    }
}

static size_t conv2d_ws(const nn_node *node, int max_batch, int threads) {
    (void)threads;
    return (size_t)chunk_images(&node->d.conv, max_batch) * floats_per_image(&node->d.conv);
}

static const char *conv2d_kernel_name(const nn_node *node, const nn_ctx *ctx) {
    (void)node;
    (void)ctx;
    return "im2col+cublas";
}

extern "C" const nn_op_kernels nn_conv2d_cuda = {conv2d_fwd, conv2d_bwd, conv2d_ws,
                                                 conv2d_kernel_name, NULL, NULL};
