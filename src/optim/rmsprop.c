/*
 * rmsprop.c - RMSprop with optional momentum and centering, following
 * torch.optim.RMSprop 1.13's single-tensor step bit for bit (fma(a, b, c) =
 * a * b + c rounded once, where torch's kernels fuse; see optim.h):
 *   g = fma(p, weight_decay, grad)              (if weight_decay != 0)
 *   s = fma((1 - alpha) * g, g, s * alpha)
 *   centered: a = fma(g, 1 - alpha, a * alpha);  avg = sqrt(fma(-a, a, s)) + eps
 *   else:     avg = sqrt(s) + eps
 *   momentum > 0: buf = g / avg + buf * momentum;  p = fma(buf, -lr, p)
 *   else:         p = p + (-lr * g) / avg
 * State: "square_avg", then "momentum_buffer" (momentum > 0), then "grad_avg"
 * (centered), PyTorch's state-dict order.
 */
#include "optim.h"

#include <math.h>

typedef struct {
    nn_rmsprop_scalars s;
    float *sq, *buf, *ga;  /* (n); buf, ga NULL when not used */
} rmsprop_coefs;

NN_OPTIM_INLINE void rmsprop_range(const rmsprop_coefs *k, float *params, const float *grads,
                                   size_t lo, size_t hi) {
    float *sq = k->sq, *buf = k->buf, *ga = k->ga;
    const float neg_lr = k->s.neg_lr, wd = k->s.wd, eps = k->s.eps, mu = k->s.mu;
    const float alpha = k->s.alpha, one_alpha = k->s.one_alpha;
    const int l2 = k->s.l2;
    for (size_t i = lo; i < hi; i++) {
        float g = l2 ? fmaf(params[i], wd, grads[i]) : grads[i];
        float s = fmaf(one_alpha * g, g, sq[i] * alpha);
        sq[i] = s;
        float avg;
        if (ga) {
            float a = fmaf(g, one_alpha, ga[i] * alpha);
            ga[i] = a;
            avg = sqrtf(fmaf(-a, a, s)) + eps;
        } else {
            avg = sqrtf(s) + eps;
        }
        if (buf) {
            float b = g / avg + buf[i] * mu;
            buf[i] = b;
            params[i] = fmaf(b, neg_lr, params[i]);
        } else {
            params[i] = params[i] + neg_lr * g / avg;
        }
    }
}

static void rmsprop_portable(const rmsprop_coefs *k, float *params, const float *grads,
                             size_t lo, size_t hi) {
    rmsprop_range(k, params, grads, lo, hi);
}

#if NN_OPTIM_HAVE_FMA_COPY
NN_OPTIM_FMA_TARGET static void rmsprop_fma(const rmsprop_coefs *k, float *params,
                                            const float *grads, size_t lo, size_t hi) {
    rmsprop_range(k, params, grads, lo, hi);
}
#endif

void nn_rmsprop_scalars_of(const nn_optimizer *opt, nn_rmsprop_scalars *k) {
    const nn_optim_config *c = &opt->cfg;
    k->neg_lr = -c->lr;
    k->wd = c->weight_decay;
    k->l2 = c->weight_decay != 0.0f;
    k->eps = c->eps;
    k->mu = c->momentum;
    k->alpha = c->alpha;
    k->one_alpha = (float)(1.0 - (double)c->alpha);
}

void nn_rmsprop_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                       size_t hi, int fast) {
    rmsprop_coefs k;
    nn_rmsprop_scalars_of(opt, &k.s);
    k.sq = nn_optim_buffer(opt, "square_avg");
    k.buf = nn_optim_buffer(opt, "momentum_buffer");
    k.ga = nn_optim_buffer(opt, "grad_avg");
    NN_ASSERT(k.sq);
#if NN_OPTIM_HAVE_FMA_COPY
    if (fast) {
        rmsprop_fma(&k, params, grads, lo, hi);
        return;
    }
#endif
    (void)fast;
    rmsprop_portable(&k, params, grads, lo, hi);
}
