/*
 * conv2d.cu - the CUDA twin of conv2d.c: every convolution (dense, grouped,
 * depthwise, 1x1, strided, dilated), fp32 with FMA arithmetic only (no TF32).
 *
 * cuDNN where it is (backend/cuda_dnn.h: loaded at run time, its algorithms
 * measured once per shape and batch size, deterministic ones only):
 *   forward:  y = conv(x), then y += b and the fused ReLU in one pass
 *   backward: g = dy masked by the fused ReLU (in the workspace; unless the
 *             max-pool after it masks: relu_masked_later); db += the
 *             per-channel sums of g (sliced, in double, fixed order);
 *             dw += conv_wgrad(x, g); dx = conv_dgrad(w, g)
 *   bf16 (--precision bf16, d->bf16): the same on the tensor cores, with x,
 *             w and g rounded to bf16 copies in the workspace, fp32 sums;
 *             cuDNN's bf16 outputs (y, the weight and input gradients)
 *             widened back into the fp32 tensors (dw accumulating), so
 *             parameters, optimizer and every other op stay fp32. Without
 *             cuDNN a bf16 convolution runs in fp32.
 * else, or when a call's workspace cannot hold a measured algorithm's, the
 * first version below: im2col + cuBLAS GEMMs over chunks of images, one
 * strided-batched GEMM over the channel groups.
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

#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/cuda_dnn.h"
}

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
    s = nn_cuda_block_sum<ROW_THREADS>(s, sh);
    if (threadIdx.x == 0) db[blockIdx.x] += (float)s;
}

__device__ __forceinline__ float as_float(float v) { return v; }
__device__ __forceinline__ float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }

/* y (n, K, PQ) = src + b[k], then the fused ReLU (b NULL: none; src may be y) */
template <typename I, typename T>
__global__ void bias_relu_kernel(float *y, const T *src, const float *b, I K, I PQ, int relu,
                                 I n) {
    for (I j = blockIdx.x * (I)blockDim.x + threadIdx.x; j < n; j += (I)gridDim.x * blockDim.x) {
        float v = as_float(src[j]);
        if (b) v = v + b[j / PQ % K];
        y[j] = relu ? nn_relu_f(v) : v;
    }
}

/* db[k] += channel k's S partial sums, added in slice order */
__global__ void bias_grad_final_kernel(float *db, const double *part, int K, int S) {
    NN_CUDA_FOR(k, K) db[k] += (float)nn_cuda_slices_total(part, k, S);
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

/* d's shape for cuDNN at batch n */
static nn_cudnn_shape dnn_shape(const nn_conv2d_desc *d, int n) {
    nn_cudnn_shape s;
    s.n = n, s.C = d->C, s.H = d->H, s.W = d->W, s.K = d->K, s.R = d->R, s.S = d->S;
    s.P = d->P, s.Q = d->Q, s.stride_h = d->stride_h, s.stride_w = d->stride_w;
    s.pad_h = d->pad_h, s.pad_w = d->pad_w;
    s.dil_h = nn_conv2d_dil_h(d), s.dil_w = nn_conv2d_dil_w(d);
    s.groups = d->groups > 1 ? d->groups : 1;
    s.bf16 = d->bf16;
    return s;
}

/* The cuDNN path's workspace, in floats from a->ws, each part rounded up to
 * 64 floats: the masked gradient g (n, K, P, Q), the bias's partial sums;
 * for bf16 the bf16 copies of x, w, g (or y), dx and dw; then cuDNN's own
 * workspace from `total` on. */
typedef struct {
    size_t g, part, xb, wb, gb, dxb, dwb, total;
} dnn_layout;

static size_t r64(size_t f) { return (f + 63) / 64 * 64; }

static size_t weight_count(const nn_conv2d_desc *d) {
    return (size_t)d->K * (d->C / (d->groups > 1 ? d->groups : 1)) * d->R * d->S;
}

static dnn_layout layout_of(const nn_conv2d_desc *d, int n) {
    const size_t nx = (size_t)n * d->C * d->H * d->W, ny = (size_t)n * d->K * d->P * d->Q;
    const size_t nw = weight_count(d);
    dnn_layout l;
    size_t off = 0;
    l.g = off, off += r64(ny);
    l.part = off, off += r64(2 * (size_t)d->K * NN_CUDA_SLICES_MAX); /* doubles */
    l.xb = l.wb = l.gb = l.dxb = l.dwb = off;
    if (d->bf16) { /* two bf16 values per float */
        l.xb = off, off += r64((nx + 1) / 2);
        l.wb = off, off += r64((nw + 1) / 2);
        l.gb = off, off += r64((ny + 1) / 2);
        l.dxb = off, off += r64((nx + 1) / 2);
        l.dwb = off, off += r64((nw + 1) / 2);
    }
    l.total = off;
    return l;
}

__global__ void to_bf16_kernel(__nv_bfloat16 *o, const float *x, size_t n) {
    NN_CUDA_FOR(j, n) o[j] = __float2bfloat16(x[j]);
}

/* o = x (add 0) or o += x (add 1) */
__global__ void from_bf16_kernel(float *o, const __nv_bfloat16 *x, int add, size_t n) {
    NN_CUDA_FOR(j, n) o[j] = add ? o[j] + __bfloat162float(x[j]) : __bfloat162float(x[j]);
}

static __nv_bfloat16 *bf16_at(const nn_op_args *a, size_t off) {
    return (__nv_bfloat16 *)(a->ws + off);
}

static void to_bf16(__nv_bfloat16 *o, const float *x, size_t n) {
    to_bf16_kernel<<<NN_CUDA_GRID(n)>>>(o, x, n);
    nn_cuda_check_launch("conv2d (to bf16)");
}

static void from_bf16(float *o, const __nv_bfloat16 *x, int add, size_t n) {
    from_bf16_kernel<<<NN_CUDA_GRID(n)>>>(o, x, add, n);
    nn_cuda_check_launch("conv2d (from bf16)");
}

/* A call's cuDNN plan and workspace: the layout's parts, then cuDNN's own
 * (ws, ws_bytes). 0 if there is a plan and room for the parts. */
typedef struct {
    const nn_cudnn_conv *p;
    dnn_layout l;
    float *ws;
    size_t ws_bytes;
} dnn_call;

static int dnn_call_of(const nn_op_args *a, dnn_call *c) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    const nn_cudnn_shape shape = dnn_shape(d, a->n);
    c->p = nn_cudnn_conv_plan(&shape);
    c->l = layout_of(d, a->n);
    if (!c->p || a->ws_floats < c->l.total) return -1;
    c->ws = a->ws + c->l.total;
    c->ws_bytes = (a->ws_floats - c->l.total) * sizeof(float);
    return 0;
}

/* the cuDNN forward; 0 if it ran */
static int cudnn_fwd(const nn_op_args *a) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    dnn_call c;
    if (dnn_call_of(a, &c)) return -1;
    const size_t n = nn_cuda_count(a);
    const int PQ = d->P * d->Q;
    if (d->bf16) {
        __nv_bfloat16 *xb = bf16_at(a, c.l.xb), *wb = bf16_at(a, c.l.wb), *yb = bf16_at(a, c.l.gb);
        if (!nn_cudnn_conv_forward_fits(c.p, c.ws_bytes)) return -1;
        to_bf16(xb, a->x, (size_t)a->n * d->C * d->H * d->W);
        to_bf16(wb, a->w, weight_count(d));
        nn_cudnn_conv_forward(c.p, xb, wb, yb, c.ws, c.ws_bytes);
        bias_relu_kernel<size_t, __nv_bfloat16><<<NN_CUDA_GRID(n)>>>(a->y, yb, a->b, d->K, PQ,
                                                                      d->relu, n);
        nn_cuda_check_launch("conv2d forward (bf16 to fp32, bias, relu)");
        return 0;
    }
    if (nn_cudnn_conv_forward(c.p, a->x, a->w, a->y, c.ws, c.ws_bytes)) return -1;
    if (a->b || d->relu) {
        if (n < ((size_t)1 << 31))
            bias_relu_kernel<unsigned, float><<<NN_CUDA_GRID(n)>>>(a->y, a->y, a->b, d->K, PQ,
                                                                   d->relu, (unsigned)n);
        else
            bias_relu_kernel<size_t, float><<<NN_CUDA_GRID(n)>>>(a->y, a->y, a->b, d->K, PQ,
                                                                 d->relu, n);
        nn_cuda_check_launch("conv2d forward (bias, relu)");
    }
    return 0;
}

/* the cuDNN backward; 0 if it ran (nothing is written unless every part fits) */
static int cudnn_bwd(const nn_op_args *a) {
    const nn_conv2d_desc *d = &a->node->d.conv;
    dnn_call c;
    if (dnn_call_of(a, &c)) return -1;
    if (!nn_cudnn_conv_backward_fits(c.p, c.ws_bytes, a->dx != NULL)) return -1;
    const size_t n = nn_cuda_count(a);
    const float *g = a->dy;
    if (d->relu && !d->relu_masked_later) {
        relu_mask_kernel<<<NN_CUDA_GRID(n)>>>(a->ws + c.l.g, a->dy, a->y, n);
        nn_cuda_check_launch("conv2d backward (relu mask)");
        g = a->ws + c.l.g;
    }
    if (a->db) {
        double *part = (double *)(a->ws + c.l.part);
        const int S = nn_cuda_channel_sum_parts(part, g, d->K, d->P * d->Q, a->n);
        bias_grad_final_kernel<<<NN_CUDA_GRID(d->K)>>>(a->db, part, d->K, S);
        nn_cuda_check_launch("conv2d backward (bias)");
    }
    if (d->bf16) {
        const size_t nx = (size_t)a->n * d->C * d->H * d->W, nw = weight_count(d);
        __nv_bfloat16 *xb = bf16_at(a, c.l.xb), *wb = bf16_at(a, c.l.wb);
        __nv_bfloat16 *gb = bf16_at(a, c.l.gb);
        __nv_bfloat16 *dxb = bf16_at(a, c.l.dxb), *dwb = bf16_at(a, c.l.dwb);
        to_bf16(gb, g, n);
        to_bf16(xb, a->x, nx);
        /* the weight gradient in bf16, added into the fp32 one */
        nn_cudnn_conv_backward_filter(c.p, xb, gb, dwb, 0.0f, c.ws, c.ws_bytes);
        from_bf16(a->dw, dwb, 1, nw);
        if (a->dx) {
            to_bf16(wb, a->w, nw);
            nn_cudnn_conv_backward_data(c.p, wb, gb, dxb, c.ws, c.ws_bytes);
            from_bf16(a->dx, dxb, 0, nx);
        }
        return 0;
    }
    nn_cudnn_conv_backward_filter(c.p, a->x, g, a->dw, 1.0f, c.ws, c.ws_bytes);
    if (a->dx) nn_cudnn_conv_backward_data(c.p, a->w, g, a->dx, c.ws, c.ws_bytes);
    return 0;
}

static void im2col_fwd(const nn_op_args *a) {
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

static void im2col_bwd(const nn_op_args *a) {
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

/* cuDNN for this call, unless the planning measured im2col + cuBLAS faster
 * for the shape (fp32 layers only: bf16 asks for cuDNN's tensor cores) */
static int prefers_cudnn(const nn_conv2d_desc *d) {
    if (d->bf16) return 1;
    const nn_cudnn_shape shape = dnn_shape(d, 0);
    return nn_cudnn_conv_shape_choice(&shape) != 0;
}

static void conv2d_fwd(const nn_op_args *a) {
    if (prefers_cudnn(&a->node->d.conv) && cudnn_fwd(a) == 0) return;
    im2col_fwd(a);
}

static void conv2d_bwd(const nn_op_args *a) {
    if (prefers_cudnn(&a->node->d.conv) && cudnn_bwd(a) == 0) return;
    im2col_bwd(a);
}

/* Seconds of `reps` training passes (forward + backward) of the cuDNN path
 * (dnn 1) or the im2col path on a's buffers, after one untimed pass; a
 * negative value if cuDNN declined. */
static double time_path(const nn_op_args *a, int dnn, int reps) {
    cudaEvent_t e0, e1;
    nn_cuda_check((int)cudaEventCreate(&e0), "cudaEventCreate");
    nn_cuda_check((int)cudaEventCreate(&e1), "cudaEventCreate");
    double sec = -1.0;
    for (int r = -1; r < reps; r++) {
        if (r == 0) nn_cuda_check((int)cudaEventRecord(e0), "cudaEventRecord");
        if (dnn) {
            if (cudnn_fwd(a) || cudnn_bwd(a)) goto out;
        } else {
            im2col_fwd(a);
            im2col_bwd(a);
        }
    }
    nn_cuda_check((int)cudaEventRecord(e1), "cudaEventRecord");
    nn_cuda_check((int)cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms;
    nn_cuda_check((int)cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    sec = ms * 1e-3;
out:
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return sec;
}

/* Which path is faster for node at batch n with ws_floats of workspace: both
 * timed on scratch buffers (zeros) of the layer's sizes, and the answer kept
 * in the cuDNN plan (NNOPT_CUDA_CONV=cudnn: cuDNN without timing). */
static void choose_path(const nn_node *node, int n, const nn_cudnn_conv *p, size_t ws_floats) {
    const nn_conv2d_desc *d = &node->d.conv;
    const char *force = getenv("NNOPT_CUDA_CONV");
    if (d->bf16 || nn_cudnn_conv_choice(p) >= 0) return;
    if (force && strcmp(force, "cudnn") == 0) {
        nn_cudnn_conv_set_choice(p, 1);
        return;
    }
    const size_t nx = (size_t)n * d->C * d->H * d->W, ny = (size_t)n * d->K * d->P * d->Q;
    const size_t nw = weight_count(d), nb = (size_t)d->K;
    const size_t total = 2 * nx + 2 * ny + 2 * nw + 2 * nb + ws_floats;
    float *buf = NULL;
    if (cudaMalloc(&buf, total * sizeof(float)) != cudaSuccess) {
        (void)cudaGetLastError(); /* no room to measure: cuDNN, as without timing */
        nn_cudnn_conv_set_choice(p, 1);
        return;
    }
    nn_cuda_check((int)cudaMemset(buf, 0, total * sizeof(float)), "cudaMemset");
    nn_op_args a;
    memset(&a, 0, sizeof a);
    float *x = buf, *dx = x + nx, *y = dx + nx, *dy = y + ny, *w = dy + ny, *dw = w + nw;
    float *b = dw + nw, *db = b + nb;
    a.node = node, a.n = n, a.training = 1;
    a.x = a.xs[0] = x, a.dx = a.dxs[0] = dx, a.y = y, a.dy = dy, a.w = w, a.dw = dw;
    a.b = d->has_bias ? b : NULL, a.db = d->has_bias ? db : NULL;
    a.ws = db + nb, a.ws_floats = ws_floats;
    const double t_dnn = time_path(&a, 1, 3), t_gemm = time_path(&a, 0, 3);
    nn_cudnn_conv_set_choice(p, t_dnn >= 0.0 && t_dnn <= t_gemm ? 1 : 0);
    nn_cuda_check((int)cudaFree(buf), "cudaFree");
}

/* the im2col path's chunk, or the cuDNN path's scratch and workspace (its
 * algorithms measured here, at planning, for the largest batch, and then
 * the faster of the two paths) */
static size_t conv2d_ws(const nn_node *node, int max_batch, int threads) {
    (void)threads;
    const nn_conv2d_desc *d = &node->d.conv;
    const size_t im2col = (size_t)chunk_images(d, max_batch) * floats_per_image(d);
    const nn_cudnn_shape shape = dnn_shape(d, max_batch);
    const nn_cudnn_conv *p = nn_cudnn_conv_plan(&shape);
    if (!p) return im2col;
    const size_t dnn = layout_of(d, max_batch).total +
                       (nn_cudnn_conv_ws_bytes(p) + sizeof(float) - 1) / sizeof(float);
    const size_t ws = dnn > im2col ? dnn : im2col;
    choose_path(node, max_batch, p, ws);
    return ws;
}

static const char *conv2d_kernel_name(const nn_node *node, const nn_ctx *ctx) {
    (void)ctx;
    const nn_cudnn_shape shape = dnn_shape(&node->d.conv, 0);
    return prefers_cudnn(&node->d.conv) ? nn_cudnn_conv_algos(nn_cudnn_conv_latest(&shape))
                                        : "im2col+cublas";
}

extern "C" const nn_op_kernels nn_conv2d_cuda = {conv2d_fwd, conv2d_bwd, conv2d_ws,
                                                 conv2d_kernel_name, NULL, NULL, NULL, NULL, NULL, NULL};
