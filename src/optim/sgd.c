/*
 * sgd.c - stochastic gradient descent with momentum, dampening, Nesterov and
 * weight decay, following torch.optim.SGD step for step:
 *   g = grad + weight_decay * p
 *   buf = g                                  (first step)
 *   buf = momentum * buf + (1 - dampening) * g  (later steps)
 *   g = nesterov ? g + momentum * buf : buf
 *   p = p - lr * g
 * State: "momentum_buffer" (only when momentum != 0).
 * Unlike the other optimizers these loops do not fuse multiply-adds as
 * torch's kernels do (optim.h), so results can differ from torch.optim.SGD in
 * the last bit; fast is unused.
 */
#include "optim.h"

void nn_sgd_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                   size_t hi, int fast) {
    const float lr = opt->cfg.lr, mu = opt->cfg.momentum, wd = opt->cfg.weight_decay;
    const float keep = 1.0f - opt->cfg.dampening;
    const int first = opt->steps == 0, nesterov = opt->cfg.nesterov;
    float *buf = nn_optim_buffer(opt, "momentum_buffer"); /* (n) or NULL */
    (void)fast;
    /* one branch-free loop per case so that each vectorizes */
    if (!buf) {
        for (size_t i = lo; i < hi; i++) params[i] = params[i] - lr * (grads[i] + wd * params[i]);
    } else if (first) {
        for (size_t i = lo; i < hi; i++) {
            float g = grads[i] + wd * params[i];
            buf[i] = g;
            params[i] = params[i] - lr * (nesterov ? g + mu * g : g);
        }
    } else if (nesterov) {
        for (size_t i = lo; i < hi; i++) {
            float g = grads[i] + wd * params[i];
            float m = mu * buf[i] + keep * g;
            buf[i] = m;
            params[i] = params[i] - lr * (g + mu * m);
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            float g = grads[i] + wd * params[i];
            float m = mu * buf[i] + keep * g;
            buf[i] = m;
            params[i] = params[i] - lr * m;
        }
    }
}
