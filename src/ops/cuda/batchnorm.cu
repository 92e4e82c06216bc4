/*
 * batchnorm.cu - the CUDA twin of batchnorm.c. Per-channel sums run in
 * double over slices of each channel, one block per (slice, channel), and
 * the slices' partial sums are added in a fixed order (the CPU sums rows in
 * float lanes, then double: results agree to rounding); the per-channel
 * scalars (mean, 1/std,
 * the running statistics' update, the normalizing alpha and beta) are
 * computed in double exactly as on the CPU, and the element-wise passes use
 * the CPU's float expressions. The node's aux holds mean (C), 1/std (C) and
 * the mode of the forward that wrote them; its buffers the running mean (C),
 * running variance (C) and num_batches_tracked (1).
 *
 * Workspace: the reducer's doubles in the CPU's layout (forward: sums (C),
 * count (1), squared deviations (C); backward: sums of g (C), of g (x -
 * mean) (C), count (1)), the slices' partial sums, then the per-channel
 * float coefficients. With the
 * net's reducer (synchronized batch norm) those doubles are handed to it as
 * device pointers between the passes: a communicator must then reduce device
 * memory (NCCL does; an MPI one would need CUDA-aware MPI).
 */
#include "ops/cuda/ops_cuda.h"

#include <math.h>

#define BN_THREADS 256

/* part[c S + s] = the sum over slice s of channel c of (x - mean)^2, with
 * mean = acc[c] / acc[C] as a float, as the CPU (the plain sums:
 * nn_cuda_channel_sum_part_kernel) */
template <typename I>
__global__ void bn_sqdev_part_kernel(double *part, const double *acc, const float *x, I C, I HW,
                                     I n) {
    __shared__ double sh[BN_THREADS];
    const I c = blockIdx.y, M = n * HW;
    I lo, hi;
    nn_cuda_slice(M, lo, hi);
    const float mean = (float)(acc[c] / acc[C]);
    double s = 0.0;
    for (I e = lo + threadIdx.x; e < hi; e += BN_THREADS) {
        const float t = x[nn_cuda_channel_at(c, e, C, HW)] - mean;
        s += t * t;
    }
    s = nn_cuda_block_sum<BN_THREADS>(s, sh);
    if (threadIdx.x == 0) part[(size_t)c * gridDim.x + blockIdx.x] = s;
}

/* out[c] = the S partial sums of channel c added in slice order; with_count:
 * out[C] = count as well */
__global__ void bn_sum_final_kernel(double *out, const double *part, int C, int S,
                                    double count, int with_count) {
    NN_CUDA_FOR(c, C) {
        out[c] = nn_cuda_slices_total(part, c, S);
        if (c == 0 && with_count) out[C] = count;
    }
}

/* Per channel: the statistics (training: from acc; eval: the running ones),
 * the running update, save, and y's alpha and beta. */
__global__ void bn_coef_kernel(float *alpha, float *beta, float *save, float *running,
                               const float *w, const float *b, const double *acc, int C,
                               float eps, float momentum, int training) {
    float *run_mean = running, *run_var = running + C; /* (C), (C) */
    NN_CUDA_FOR(c, C) {
        double mean, invstd;
        if (training) {
            const double M = acc[C], ss = acc[C + 1 + c];
            mean = acc[c] / M;
            const double var = ss / M; /* biased, for normalizing */
            invstd = 1.0 / sqrt(var + eps);
            const double mom = momentum;
            const double unbiased = M > 1 ? ss / (M - 1) : NAN;
            run_mean[c] = (float)((1.0 - mom) * run_mean[c] + mom * mean);
            run_var[c] = (float)((1.0 - mom) * run_var[c] + mom * unbiased);
        } else {
            mean = run_mean[c];
            invstd = 1.0 / sqrt((double)run_var[c] + eps);
        }
        save[c] = (float)mean;
        save[C + c] = (float)invstd;
        alpha[c] = (float)(invstd * w[c]);
        beta[c] = (float)(b[c] - mean * invstd * w[c]);
        if (c == 0) {
            if (training) running[2 * C] += 1.0f; /* num_batches_tracked */
            save[2 * C] = training ? 1.0f : 0.0f;
        }
    }
}

/* y = x alpha + beta (plus r, a fused residual add's other input, when not
 * NULL), then the fused ReLU */
template <typename I>
__global__ void bn_normalize_kernel(float *y, const float *x, const float *r, const float *alpha,
                                    const float *beta, I C, I HW, int relu, I n) {
    for (I j = blockIdx.x * (I)blockDim.x + threadIdx.x; j < n; j += (I)gridDim.x * blockDim.x) {
        const I c = j / HW % C;
        float v = x[j] * alpha[c] + beta[c];
        if (r) v = v + r[j];
        y[j] = relu ? nn_relu_f(v) : v;
    }
}

/* Block (slice s, channel c): the slice's sums of g and g (x - mean) into
 * part[c S + s] and part[C S + c S + s], g = dy masked by the fused ReLU's
 * output y (NULL: none), g also stored in dr (a fused residual add's input
 * gradient) when not NULL. */
template <typename I>
__global__ void bn_grad_part_kernel(double *part, float *dr, const float *dy, const float *y,
                                    const float *x, const float *save, I C, I HW, I n) {
    __shared__ double sh[BN_THREADS];
    const I c = blockIdx.y, M = n * HW;
    I lo, hi;
    nn_cuda_slice(M, lo, hi);
    const float mean = save[c];
    double sg = 0.0, sd = 0.0;
    for (I e = lo + threadIdx.x; e < hi; e += BN_THREADS) {
        const I j = nn_cuda_channel_at(c, e, C, HW);
        const float g = y ? nn_relu_mask_f(dy[j], y[j]) : dy[j];
        if (dr) dr[j] = g;
        sg += g;
        sd += (double)g * (x[j] - mean);
    }
    sg = nn_cuda_block_sum<BN_THREADS>(sg, sh);
    __syncthreads();
    sd = nn_cuda_block_sum<BN_THREADS>(sd, sh);
    if (threadIdx.x == 0) {
        part[(size_t)c * gridDim.x + blockIdx.x] = sg;
        part[((size_t)C + c) * gridDim.x + blockIdx.x] = sd;
    }
}

/* Per channel: the slices' sums in order; dw, db accumulate; the sums times
 * weight (the reducer's weighting: the samples n, else 1) and the count go
 * to acc. */
__global__ void bn_grad_final_kernel(double *acc, float *dw, float *db, const double *part,
                                     const float *save, int C, int S, double count,
                                     double weight) {
    NN_CUDA_FOR(c, C) {
        const double sg = nn_cuda_slices_total(part, c, S);
        const double sd = nn_cuda_slices_total(part, C + c, S);
        const double invstd = save[C + c];
        dw[c] += (float)(sd * invstd);
        db[c] += (float)sg;
        acc[c] = sg * weight;
        acc[C + c] = sd * weight;
        if (c == 0) acc[2 * C] = count;
    }
}

/* Per channel: dx's float coefficients, as channel_dx in batchnorm.c
 * (training: g_mean = mean(g), k = mean(g (x - mean)) invstd^2; eval: 0). */
__global__ void bn_dx_coef_kernel(float *coef, const double *acc, const float *save,
                                  const float *w, int C, double weight) {
    const int training = save[2 * C] != 0.0f;
    NN_CUDA_FOR(c, C) {
        const double mean = save[c], invstd = save[C + c];
        const double Mn = acc[2 * C] * weight;
        const double g_mean = training ? acc[c] / Mn : 0.0;
        const double k = training ? acc[C + c] * invstd * invstd / Mn : 0.0;
        const double scale = invstd * w[c];
        coef[c] = (float)g_mean;
        coef[C + c] = (float)mean;
        coef[2 * C + c] = (float)scale;
        coef[3 * C + c] = (float)(k * scale);
    }
}

template <typename I>
__global__ void bn_dx_kernel(float *dx, const float *dy, const float *y, const float *x,
                             const float *coef, I C, I HW, I n) {
    for (I j = blockIdx.x * (I)blockDim.x + threadIdx.x; j < n; j += (I)gridDim.x * blockDim.x) {
        const I c = j / HW % C;
        const float g = y ? nn_relu_mask_f(dy[j], y[j]) : dy[j];
        dx[j] = (g - coef[c]) * coef[2 * C + c] - (x[j] - coef[C + c]) * coef[3 * C + c];
    }
}

/* The workspace: the reducer's 2C + 1 doubles, the slices' partial sums
 * (2 C NN_CUDA_SLICES_MAX doubles), then the per-channel float coefficients. */
static double *partials(const nn_op_args *a) {
    return (double *)a->ws + 2 * (size_t)a->node->d.bn.C + 1;
}
static float *coefs(const nn_op_args *a) {
    const size_t C = (size_t)a->node->d.bn.C;
    return a->ws + 2 * (2 * C + 1 + 2 * C * NN_CUDA_SLICES_MAX);
}

/* 32-bit index arithmetic where every index of the tensor fits */
static int small_tensor(const nn_op_args *a) { return nn_cuda_count(a) < ((size_t)1 << 31); }

/* acc[0..C) = the channel sums of x (mean NULL) or of its squared
 * deviations from acc's mean (mean = acc), acc[C] = the count if asked */
static void channel_sums(const nn_op_args *a, double *out, const double *mean_acc, int with_count) {
    const nn_bn_desc *d = &a->node->d.bn;
    const int C = d->C;
    const size_t M = (size_t)a->n * d->HW;
    double *part = partials(a);
    int S;
    if (!mean_acc) {
        S = nn_cuda_channel_sum_parts(part, a->x, C, d->HW, a->n);
    } else {
        S = nn_cuda_channel_slices(C, M);
        const dim3 grid(S, C);
        if (small_tensor(a))
            bn_sqdev_part_kernel<unsigned><<<grid, BN_THREADS>>>(part, mean_acc, a->x, C, d->HW,
                                                                 a->n);
        else
            bn_sqdev_part_kernel<size_t><<<grid, BN_THREADS>>>(part, mean_acc, a->x, C, d->HW,
                                                               a->n);
    }
    bn_sum_final_kernel<<<NN_CUDA_GRID(C)>>>(out, part, C, S, (double)M, with_count);
    nn_cuda_check_launch("batchnorm forward");
}

static void batchnorm_fwd(const nn_op_args *a) {
    const nn_bn_desc *d = &a->node->d.bn;
    const int C = d->C;
    double *acc = (double *)a->ws; /* sums (C), count (1), squared deviations (C) */
    float *alpha = coefs(a), *beta = alpha + C;
    if (a->training) {
        channel_sums(a, acc, NULL, 1);
        if (a->reduce) a->reduce(a->reduce_user, acc, (size_t)C + 1);
        channel_sums(a, acc + C + 1, acc, 0);
        if (a->reduce) a->reduce(a->reduce_user, acc + C + 1, (size_t)C);
    }
    bn_coef_kernel<<<NN_CUDA_GRID(C)>>>(alpha, beta, (float *)a->aux, a->buf, a->w, a->b, acc, C,
                                        d->eps, d->momentum, a->training);
    const size_t n = nn_cuda_count(a);
    const float *r = d->residual ? a->xs[1] : NULL;
    if (small_tensor(a))
        bn_normalize_kernel<unsigned><<<NN_CUDA_GRID(n)>>>(a->y, a->x, r, alpha, beta, C, d->HW,
                                                           d->relu, (unsigned)n);
    else
        bn_normalize_kernel<size_t><<<NN_CUDA_GRID(n)>>>(a->y, a->x, r, alpha, beta, C, d->HW,
                                                         d->relu, n);
    nn_cuda_check_launch("batchnorm forward");
}

static void batchnorm_bwd(const nn_op_args *a) {
    const nn_bn_desc *d = &a->node->d.bn;
    const int C = d->C;
    const float *save = (const float *)a->aux; /* mean (C), 1/std (C), mode (1) */
    const float *y = d->relu ? a->y : NULL;    /* y masks the gradient only under a fused ReLU */
    double *acc = (double *)a->ws;             /* sums (C), dots (C), count (1) */
    /* the mode lives on the device; only the reducer's path needs it here */
    float mode = 0.0f;
    if (a->reduce)
        nn_cuda_check((int)cudaMemcpy(&mode, save + 2 * C, sizeof mode, cudaMemcpyDeviceToHost),
                      "cudaMemcpy (batchnorm mode)");
    const int reduce = a->reduce && mode != 0.0f;
    const double weight = reduce ? (double)a->n : 1.0;
    const size_t M = (size_t)a->n * d->HW;
    const int S = nn_cuda_channel_slices(C, M);
    double *part = partials(a);
    float *dr = d->residual ? a->dxs[1] : NULL;
    const dim3 grid(S, C);
    if (small_tensor(a))
        bn_grad_part_kernel<unsigned><<<grid, BN_THREADS>>>(part, dr, a->dy, y, a->x, save, C,
                                                            d->HW, a->n);
    else
        bn_grad_part_kernel<size_t><<<grid, BN_THREADS>>>(part, dr, a->dy, y, a->x, save, C,
                                                          d->HW, a->n);
    bn_grad_final_kernel<<<NN_CUDA_GRID(C)>>>(acc, a->dw, a->db, part, save, C, S, (double)M,
                                              weight);
    nn_cuda_check_launch("batchnorm backward");
    if (reduce) a->reduce(a->reduce_user, acc, 2 * (size_t)C + 1);
    if (!a->dx) return;
    float *coef = coefs(a); /* g_mean, mean, scale, k scale: (4, C) */
    bn_dx_coef_kernel<<<NN_CUDA_GRID(C)>>>(coef, acc, save, a->w, C, weight);
    const size_t n = nn_cuda_count(a);
    if (small_tensor(a))
        bn_dx_kernel<unsigned><<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, y, a->x, coef, C, d->HW,
                                                    (unsigned)n);
    else
        bn_dx_kernel<size_t><<<NN_CUDA_GRID(n)>>>(a->dx, a->dy, y, a->x, coef, C, d->HW, n);
    nn_cuda_check_launch("batchnorm backward");
}

/* 2C + 1 doubles, 2 C NN_CUDA_SLICES_MAX doubles, then 4C floats */
static size_t batchnorm_ws(const nn_node *node, int max_batch, int threads) {
    (void)max_batch;
    (void)threads;
    const size_t C = (size_t)node->d.bn.C;
    return 2 * (2 * C + 1 + 2 * C * NN_CUDA_SLICES_MAX) + 4 * C;
}

extern "C" const nn_op_kernels nn_batchnorm_cuda = {batchnorm_fwd, batchnorm_bwd, batchnorm_ws,
                                                    NULL, NULL, NULL, NULL, NULL, NULL, NULL};
