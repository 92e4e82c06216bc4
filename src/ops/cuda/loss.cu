/*
 * loss.cu - the CUDA twin of loss.c: softmax cross-entropy with mean
 * reduction and label smoothing. Forward: one thread per sample computes its
 * probabilities (kept in y for backward) and its loss in double, with the
 * CPU's float arithmetic in the CPU's order; one thread then adds the losses
 * in sample order, and the mean comes back to the host scalar *a->loss (a
 * copy, which waits for the kernels). Backward: dlogits = (p - target) / n.
 */
#include "ops/cuda/ops_cuda.h"

__global__ void softmax_ce_sample_kernel(double *li, float *prob, const float *logits,
                                         const int32_t *labels, int classes, float smoothing,
                                         int n) {
    NN_CUDA_FOR(i, n) {
        const float *z = logits + i * classes; /* (classes) */
        float *p = prob + i * classes;         /* (classes) */
        float m = z[0];
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        float sum = 0.0f;
        for (int c = 0; c < classes; c++) sum += (p[c] = expf(z[c] - m));
        const float logsum = logf(sum);
        for (int c = 0; c < classes; c++) p[c] /= sum;
        double l = (double)(logsum - (z[labels[i]] - m));
        if (smoothing != 0.0f) {
            double zsum = 0.0;
            for (int c = 0; c < classes; c++) zsum += (double)(z[c] - m);
            const double uniform = (double)logsum - zsum / classes;
            l = (1.0 - (double)smoothing) * l + (double)smoothing * uniform;
        }
        li[i] = l;
    }
}

/* out = (float)(sum of li (n), in order, / n) */
__global__ void mean_kernel(float *out, const double *li, int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) total += li[i];
    *out = (float)(total / n);
}

__global__ void softmax_ce_backward_kernel(float *dlogits, const float *prob,
                                           const int32_t *labels, int classes, float smoothing,
                                           int n) {
    const float scale = 1.0f / (float)n;
    const float off = smoothing / (float)classes;
    const float on = 1.0f - smoothing + off;
    NN_CUDA_FOR(j, (size_t)n * classes) {
        const size_t i = j / classes;
        const int c = (int)(j % classes);
        dlogits[j] = (prob[j] - (c == labels[i] ? on : off)) * scale;
    }
}

static void softmax_ce_fwd(const nn_op_args *a) {
    const nn_loss_desc *d = &a->node->d.loss;
    double *li = (double *)a->ws;          /* (n) */
    float *mean = (float *)(li + a->n);    /* (1) */
    softmax_ce_sample_kernel<<<NN_CUDA_GRID(a->n)>>>(li, a->y, a->x, a->labels, d->classes,
                                                     d->smoothing, a->n);
    mean_kernel<<<1, 1>>>(mean, li, a->n);
    nn_cuda_check_launch("softmax_ce forward");
    nn_cuda_check((int)cudaMemcpy(a->loss, mean, sizeof(float), cudaMemcpyDeviceToHost),
                  "cudaMemcpy (the loss)");
}

static void softmax_ce_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    const nn_loss_desc *d = &a->node->d.loss;
    softmax_ce_backward_kernel<<<NN_CUDA_GRID((size_t)a->n * d->classes)>>>(
        a->dx, a->y, a->labels, d->classes, d->smoothing, a->n);
    nn_cuda_check_launch("softmax_ce backward");
}

/* n doubles of per-sample losses and the mean */
static size_t softmax_ce_ws(const nn_node *node, int max_batch, int threads) {
    (void)node;
    (void)threads;
    return 2 * (size_t)max_batch + 2;
}

extern "C" const nn_op_kernels nn_softmax_ce_cuda = {softmax_ce_fwd, softmax_ce_bwd,
                                                     softmax_ce_ws, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
