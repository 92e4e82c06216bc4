/*
 * adagrad.c - Adagrad with learning-rate decay, following torch.optim.Adagrad
 * 1.13's single-tensor (dense) step bit for bit (fma(a, b, c) = a * b + c
 * rounded once, where torch's kernels fuse; see optim.h); t = steps + 1:
 *   g = fma(p, weight_decay, grad)              (if weight_decay != 0)
 *   clr = lr / (1 + (t - 1) * lr_decay)         (double)
 *   sum = fma(g, g, sum)
 *   p = p + (-clr * g) / (sqrt(sum) + eps)
 * State: "sum", which starts at initial_accumulator_value.
 */
#include "optim.h"

#include <math.h>

typedef struct {
    nn_adagrad_scalars s;
    float *sum; /* (n) */
} adagrad_coefs;

NN_OPTIM_INLINE void adagrad_range(const adagrad_coefs *k, float *params, const float *grads,
                                   size_t lo, size_t hi) {
    float *sum = k->sum;
    const float neg_clr = k->s.neg_clr, wd = k->s.wd, eps = k->s.eps;
    const int l2 = k->s.l2;
    for (size_t i = lo; i < hi; i++) {
        float g = l2 ? fmaf(params[i], wd, grads[i]) : grads[i];
        float s = fmaf(g, g, sum[i]);
        sum[i] = s;
        params[i] = params[i] + neg_clr * g / (sqrtf(s) + eps);
    }
}

static void adagrad_portable(const adagrad_coefs *k, float *params, const float *grads,
                             size_t lo, size_t hi) {
    adagrad_range(k, params, grads, lo, hi);
}

#if NN_OPTIM_HAVE_FMA_COPY
NN_OPTIM_FMA_TARGET static void adagrad_fma(const adagrad_coefs *k, float *params,
                                            const float *grads, size_t lo, size_t hi) {
    adagrad_range(k, params, grads, lo, hi);
}
#endif

void nn_adagrad_scalars_of(const nn_optimizer *opt, nn_adagrad_scalars *k) {
    const nn_optim_config *c = &opt->cfg;
    const double clr = (double)c->lr / (1.0 + (double)opt->steps * (double)c->lr_decay);
    k->neg_clr = (float)-clr;
    k->wd = c->weight_decay;
    k->l2 = c->weight_decay != 0.0f;
    k->eps = c->eps;
}

void nn_adagrad_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                       size_t hi, int fast) {
    adagrad_coefs k;
    nn_adagrad_scalars_of(opt, &k.s);
    k.sum = nn_optim_buffer(opt, "sum");
    NN_ASSERT(k.sum);
#if NN_OPTIM_HAVE_FMA_COPY
    if (fast) {
        adagrad_fma(&k, params, grads, lo, hi);
        return;
    }
#endif
    (void)fast;
    adagrad_portable(&k, params, grads, lo, hi);
}
