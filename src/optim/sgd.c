/*
 * sgd.c - stochastic gradient descent with momentum, dampening, Nesterov and
 * weight decay, following torch.optim.SGD step for step:
 *   g = grad + weight_decay * p
 *   buf = g                                  (first step)
 *   buf = momentum * buf + (1 - dampening) * g  (later steps)
 *   g = nesterov ? g + momentum * buf : buf
 *   p = p - lr * g
 * The momentum buffer is one flat array matching the parameter buffer.
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

struct nn_optimizer {
    nn_optim_config cfg;
    size_t n;
    float *momentum;     /* (n) */
    int64_t steps;
};

nn_status nn_optim_new(nn_ctx *ctx, const nn_optim_config *cfg, size_t num_params,
                       nn_optimizer **out) {
    *out = NULL;
    if (cfg->kind != NN_OPTIM_SGD)
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "optimizer kind %d is not supported", cfg->kind);
    if (!(cfg->lr >= 0.0f) || !isfinite(cfg->lr))
        return nn_ctx_fail(ctx, NN_EINVAL, "learning rate %g must be a finite number >= 0", cfg->lr);
    if (!(cfg->momentum >= 0.0f) || !isfinite(cfg->momentum))
        return nn_ctx_fail(ctx, NN_EINVAL, "momentum %g must be a finite number >= 0", cfg->momentum);
    if (!(cfg->weight_decay >= 0.0f) || !isfinite(cfg->weight_decay))
        return nn_ctx_fail(ctx, NN_EINVAL, "weight decay %g must be a finite number >= 0",
                           cfg->weight_decay);
    if (!(cfg->dampening >= 0.0f && cfg->dampening <= 1.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "dampening %g must be in [0, 1]", cfg->dampening);
    if (cfg->nesterov && (cfg->momentum <= 0.0f || cfg->dampening != 0.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "Nesterov momentum requires a momentum and zero dampening");
    nn_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the optimizer");
    opt->cfg = *cfg;
    opt->n = num_params;
    if (cfg->momentum != 0.0f) {
        opt->momentum = nn_alloc_aligned(num_params * sizeof(float));
        if (!opt->momentum) {
            free(opt);
            return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the momentum buffer");
        }
        memset(opt->momentum, 0, num_params * sizeof(float));
    }
    *out = opt;
    return NN_OK;
}

void nn_optim_free(nn_optimizer *opt) {
    if (!opt) return;
    nn_free_aligned(opt->momentum);
    free(opt);
}

void nn_optim_step(nn_optimizer *opt, nn_ctx *ctx, float *params, const float *grads) {
    const float lr = opt->cfg.lr, mu = opt->cfg.momentum, wd = opt->cfg.weight_decay;
    const float keep = 1.0f - opt->cfg.dampening;
    const int first = opt->steps == 0, nesterov = opt->cfg.nesterov;
    float *buf = opt->momentum;
    const size_t n = opt->n;
    const int T = n >= 65536 ? ctx->threads : 1;
    /* one branch-free loop per case so that each vectorizes */
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        const size_t lo = n * t / T, hi = n * (t + 1) / T;
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
    opt->steps++;
}

int nn_optim_num_states(const nn_optimizer *opt) { return opt->momentum ? 1 : 0; }

float *nn_optim_state(nn_optimizer *opt, int i, const char **name) {
    if (i != 0 || !opt->momentum) return NULL;
    if (name) *name = "momentum_buffer";
    return opt->momentum;
}

int64_t nn_optim_steps(const nn_optimizer *opt) { return opt->steps; }
void nn_optim_set_steps(nn_optimizer *opt, int64_t steps) { opt->steps = steps; }
const nn_optim_config *nn_optim_get_config(const nn_optimizer *opt) { return &opt->cfg; }
