/*
 * adam.c - Adam and AdamW (with AMSGrad), following torch.optim.Adam/AdamW
 * 1.13's single-tensor step bit for bit (fma(a, b, c) = a * b + c rounded
 * once, where torch's kernels fuse; see optim.h); t = steps + 1:
 *   Adam:  g = fma(p, weight_decay, grad)       (L2 penalty, if weight_decay != 0)
 *   AdamW: p = p * (1 - lr * weight_decay)      (decoupled decay), g = grad
 *   m = fma(g, 1 - beta1, m * beta1)
 *   v = fma((1 - beta2) * g, g, v * beta2)
 *   vmax = max(vmax, v), v = vmax               (amsgrad)
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *   p = p + (-(lr / (1 - beta1^t)) * m) / denom
 * State: "exp_avg", "exp_avg_sq", and "max_exp_avg_sq" with amsgrad.
 */
#include "optim.h"

#include <math.h>

typedef struct {
    nn_adam_scalars s;
    float *m, *v, *vmax; /* (n); vmax NULL without amsgrad */
} adam_coefs;

NN_OPTIM_INLINE void adam_range(const adam_coefs *k, float *params, const float *grads,
                                size_t lo, size_t hi) {
    float *m = k->m, *v = k->v, *vmax = k->vmax;
    const float neg_step = k->s.neg_step, bc2_sqrt = k->s.bc2_sqrt, eps = k->s.eps;
    const float b1 = k->s.b1, b2 = k->s.b2, one_b1 = k->s.one_b1, one_b2 = k->s.one_b2;
    const float wd = k->s.wd, decay = k->s.decay;
    const int l2 = k->s.l2;
    /* decay is 1 for Adam: multiplying by it is exact */
    if (!vmax) {
        for (size_t i = lo; i < hi; i++) {
            float g = l2 ? fmaf(params[i], wd, grads[i]) : grads[i];
            float p = params[i] * decay;
            float mi = fmaf(g, one_b1, m[i] * b1);
            float vi = fmaf(one_b2 * g, g, v[i] * b2);
            m[i] = mi;
            v[i] = vi;
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            params[i] = p + neg_step * mi / denom;
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            float g = l2 ? fmaf(params[i], wd, grads[i]) : grads[i];
            float p = params[i] * decay;
            float mi = fmaf(g, one_b1, m[i] * b1);
            float vi = fmaf(one_b2 * g, g, v[i] * b2);
            m[i] = mi;
            v[i] = vi;
            /* torch.maximum: NaN wins */
            float vm = (vi > vmax[i] || vi != vi) ? vi : vmax[i];
            vmax[i] = vm;
            float denom = sqrtf(vm) / bc2_sqrt + eps;
            params[i] = p + neg_step * mi / denom;
        }
    }
}

static void adam_portable(const adam_coefs *k, float *params, const float *grads, size_t lo,
                          size_t hi) {
    adam_range(k, params, grads, lo, hi);
}

#if NN_OPTIM_HAVE_FMA_COPY
NN_OPTIM_FMA_TARGET static void adam_fma(const adam_coefs *k, float *params,
                                         const float *grads, size_t lo, size_t hi) {
    adam_range(k, params, grads, lo, hi);
}
#endif

void nn_adam_scalars_of(const nn_optimizer *opt, nn_adam_scalars *k) {
    const nn_optim_config *c = &opt->cfg;
    const int adamw = c->kind == NN_OPTIM_ADAMW;
    /* Python-side scalars of torch's step, in double, then rounded to float. */
    const double t = (double)(opt->steps + 1);
    const double bc1 = 1.0 - pow((double)c->beta1, t);
    const double bc2 = 1.0 - pow((double)c->beta2, t);
    k->neg_step = (float)-((double)c->lr / bc1);
    k->bc2_sqrt = (float)sqrt(bc2);
    k->b1 = c->beta1;
    k->b2 = c->beta2;
    k->one_b1 = (float)(1.0 - (double)c->beta1);
    k->one_b2 = (float)(1.0 - (double)c->beta2);
    k->eps = c->eps;
    k->wd = c->weight_decay;
    k->l2 = !adamw && c->weight_decay != 0.0f;
    k->decay = adamw ? (float)(1.0 - (double)c->lr * (double)c->weight_decay) : 1.0f;
}

void nn_adam_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                    size_t hi, int fast) {
    adam_coefs k;
    nn_adam_scalars_of(opt, &k.s);
    k.m = nn_optim_buffer(opt, "exp_avg");
    k.v = nn_optim_buffer(opt, "exp_avg_sq");
    k.vmax = nn_optim_buffer(opt, "max_exp_avg_sq");
    NN_ASSERT(k.m && k.v);
#if NN_OPTIM_HAVE_FMA_COPY
    if (fast) {
        adam_fma(&k, params, grads, lo, hi);
        return;
    }
#endif
    (void)fast;
    adam_portable(&k, params, grads, lo, hi);
}
