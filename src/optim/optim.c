/*
 * optim.c - the optimizer family's common part: names, PyTorch defaults,
 * validation, state buffers, the parallel step loop and gradient clipping.
 * The update rules live in sgd.c, adam.c (Adam, AdamW), rmsprop.c, adagrad.c.
 *
 * Each state buffer is one flat array the size of the parameter buffer. As in
 * PyTorch, whose state is created lazily by the first step, the buffers are
 * (re)initialized by a step taken at step count 0, so setting the count to 0
 * (a checkpoint saved before the first step) restarts from fresh state.
 */
#include "optim.h"
#include "backend/backend.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Below this many parameters a step runs in the calling thread. */
#define OPTIM_PARALLEL_MIN 65536
/* nn_clip_grad_norm sums squares in this many fixed chunks, so the result does
 * not depend on the thread count. */
#define CLIP_CHUNKS 64

static const char *const KIND_NAMES[NN_OPTIM_COUNT] = {"sgd", "adam", "adamw", "rmsprop",
                                                       "adagrad"};

const char *nn_optim_name(nn_optim_kind kind) {
    return (unsigned)kind < NN_OPTIM_COUNT ? KIND_NAMES[kind] : NULL;
}

int nn_optim_kind_from_name(const char *name) {
    if (!name) return -1;
    for (int k = 0; k < NN_OPTIM_COUNT; k++)
        if (strcmp(name, KIND_NAMES[k]) == 0) return k;
    return -1;
}

nn_optim_config nn_optim_defaults(nn_optim_kind kind) {
    nn_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    switch (kind) {
    case NN_OPTIM_SGD:
        c.lr = 0.01f; /* torch has no default; momentum 0 as in torch */
        break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW:
        c.lr = 1e-3f;
        c.beta1 = 0.9f;
        c.beta2 = 0.999f;
        c.eps = 1e-8f;
        c.weight_decay = kind == NN_OPTIM_ADAMW ? 1e-2f : 0.0f;
        break;
    case NN_OPTIM_RMSPROP:
        c.lr = 1e-2f;
        c.alpha = 0.99f;
        c.eps = 1e-8f;
        break;
    case NN_OPTIM_ADAGRAD:
        c.lr = 1e-2f;
        c.eps = 1e-10f;
        break;
    default:
        break;
    }
    return c;
}

/* ------------------------------------------------------------------ validation */

/* NN_OK if v is finite and >= 0, else an error naming the option. */
static nn_status check_nonneg(nn_ctx *ctx, const char *kind, const char *option, float v) {
    if (v >= 0.0f && isfinite(v)) return NN_OK;
    return nn_ctx_fail(ctx, NN_EINVAL, "%s optimizer: %s is %g, expected a finite number >= 0",
                       kind, option, (double)v);
}

/* NN_OK if lo <= v < hi (hi_open) or lo <= v <= hi. */
static nn_status check_range(nn_ctx *ctx, const char *kind, const char *option, float v,
                             float lo, float hi, int hi_open) {
    if (v >= lo && (hi_open ? v < hi : v <= hi)) return NN_OK;
    return nn_ctx_fail(ctx, NN_EINVAL, "%s optimizer: %s is %g, expected %g <= %s %s %g", kind,
                       option, (double)v, (double)lo, option, hi_open ? "<" : "<=", (double)hi);
}

static nn_status validate(nn_ctx *ctx, const nn_optim_config *c) {
    const char *k = nn_optim_name(c->kind);
    if (!k)
        return nn_ctx_fail(ctx, NN_EINVAL, "optimizer kind %d is unknown (expected sgd, adam, "
                           "adamw, rmsprop or adagrad)", (int)c->kind);
    nn_status s;
    if ((s = check_nonneg(ctx, k, "lr", c->lr)) != NN_OK ||
        (s = check_nonneg(ctx, k, "weight_decay", c->weight_decay)) != NN_OK)
        return s;
    switch (c->kind) {
    case NN_OPTIM_SGD:
        if ((s = check_nonneg(ctx, k, "momentum", c->momentum)) != NN_OK ||
            (s = check_range(ctx, k, "dampening", c->dampening, 0.0f, 1.0f, 0)) != NN_OK)
            return s;
        if (c->nesterov && (c->momentum <= 0.0f || c->dampening != 0.0f))
            return nn_ctx_fail(ctx, NN_EINVAL, "sgd optimizer: nesterov requires momentum > 0 "
                               "and dampening 0 (momentum %g, dampening %g)",
                               (double)c->momentum, (double)c->dampening);
        return NN_OK;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW:
        if ((s = check_range(ctx, k, "beta1", c->beta1, 0.0f, 1.0f, 1)) != NN_OK ||
            (s = check_range(ctx, k, "beta2", c->beta2, 0.0f, 1.0f, 1)) != NN_OK ||
            (s = check_nonneg(ctx, k, "eps", c->eps)) != NN_OK)
            return s;
        return NN_OK;
    case NN_OPTIM_RMSPROP:
        if ((s = check_range(ctx, k, "alpha", c->alpha, 0.0f, 1.0f, 0)) != NN_OK ||
            (s = check_nonneg(ctx, k, "eps", c->eps)) != NN_OK ||
            (s = check_nonneg(ctx, k, "momentum", c->momentum)) != NN_OK)
            return s;
        return NN_OK;
    case NN_OPTIM_ADAGRAD:
        if ((s = check_nonneg(ctx, k, "lr_decay", c->lr_decay)) != NN_OK ||
            (s = check_nonneg(ctx, k, "initial_accumulator_value",
                              c->initial_accumulator_value)) != NN_OK ||
            (s = check_nonneg(ctx, k, "eps", c->eps)) != NN_OK)
            return s;
        return NN_OK;
    default:
        return NN_OK;
    }
}

/* ------------------------------------------------------------------ lifetime */

/* State buffer names of a valid config, PyTorch's state-dict order. */
static int state_names(const nn_optim_config *c, const char **names) {
    int n = 0;
    switch (c->kind) {
    case NN_OPTIM_SGD:
        if (c->momentum != 0.0f) names[n++] = "momentum_buffer";
        break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW:
        names[n++] = "exp_avg";
        names[n++] = "exp_avg_sq";
        if (c->amsgrad) names[n++] = "max_exp_avg_sq";
        break;
    case NN_OPTIM_RMSPROP:
        names[n++] = "square_avg";
        if (c->momentum > 0.0f) names[n++] = "momentum_buffer";
        if (c->centered) names[n++] = "grad_avg";
        break;
    case NN_OPTIM_ADAGRAD:
        names[n++] = "sum";
        break;
    default:
        break;
    }
    NN_ASSERT(n <= NN_OPTIM_MAX_STATES);
    return n;
}

/* The value state buffer s starts from. */
static float state_init(const nn_optimizer *opt, int s) {
    return strcmp(opt->state_name[s], "sum") == 0 ? opt->cfg.initial_accumulator_value : 0.0f;
}

static void init_states(nn_optimizer *opt, size_t lo, size_t hi) {
    for (int s = 0; s < opt->num_states; s++) {
        const float v = state_init(opt, s);
        float *b = opt->state[s]; /* (n) */
        for (size_t i = lo; i < hi; i++) b[i] = v;
    }
}

nn_status nn_optim_new(nn_ctx *ctx, const nn_optim_config *cfg, size_t num_params,
                       nn_optimizer **out) {
    *out = NULL;
    nn_status s = validate(ctx, cfg);
    if (s != NN_OK) return s;
    if (num_params > SIZE_MAX / sizeof(float))
        return nn_ctx_fail(ctx, NN_ENOMEM, "%zu parameters are too many for optimizer state",
                           num_params);
    /* the state buffers are filled right away: refuse what cannot fit first */
    const char *names[NN_OPTIM_MAX_STATES];
    const uint64_t bytes =
        nn_size_mul(nn_size_mul((uint64_t)state_names(cfg, names), num_params), sizeof(float));
    s = nn_memory_check(ctx, 0, bytes, "the %s optimizer's state for %zu parameters needs "
                        "%.1f MiB", nn_optim_name(cfg->kind), num_params, NN_MIB(bytes));
    if (s != NN_OK) return s;
    nn_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the optimizer");
    opt->cfg = *cfg;
    opt->n = num_params;
    opt->be = nn_ctx_backend_of(ctx);
    opt->num_states = state_names(cfg, opt->state_name);
    for (int i = 0; i < opt->num_states; i++) {
        opt->state[i] = opt->be->alloc(num_params * sizeof(float));
        if (!opt->state[i]) {
            const char *name = opt->state_name[i];
            nn_optim_free(opt);
            return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the %s optimizer's %s buffer "
                               "(%zu floats)", nn_optim_name(cfg->kind), name, num_params);
        }
    }
    nn_dev_begin(opt->be);
    for (int i = 0; i < opt->num_states; i++)
        nn_dev_fill(opt->be, opt->state[i], num_params, state_init(opt, i));
    nn_dev_end(opt->be);
    *out = opt;
    return NN_OK;
}

void nn_optim_free(nn_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->num_states; i++) opt->be->free(opt->state[i]);
    free(opt);
}

/* ------------------------------------------------------------------ step */

void nn_optim_step(nn_optimizer *opt, nn_ctx *ctx, float *params, const float *grads) {
    const size_t n = opt->n;
    const int T = n >= OPTIM_PARALLEL_MIN ? ctx->threads : 1;
    const int first = opt->steps == 0;
    /* the FMA-instruction copies of the loops need AVX2+FMA, which every CPU
     * above the generic ISA level has; both copies give the same results */
    const int fast = ctx->isa != NN_ISA_GENERIC;
    void (*update)(const nn_optimizer *, float *, const float *, size_t, size_t, int) = NULL;
    switch (opt->cfg.kind) {
    case NN_OPTIM_SGD: update = nn_sgd_update; break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW: update = nn_adam_update; break;
    case NN_OPTIM_RMSPROP: update = nn_rmsprop_update; break;
    case NN_OPTIM_ADAGRAD: update = nn_adagrad_update; break;
    default: break;
    }
    NN_ASSERT(update);
#if NN_HAVE_CUDA
    if (opt->be->kernels == NN_KERNELS_CUDA) {
        nn_dev_begin(opt->be);
        for (int i = 0; first && i < opt->num_states; i++)
            nn_dev_fill(opt->be, opt->state[i], n, state_init(opt, i));
        nn_optim_step_cuda(opt, params, grads);
        nn_dev_end(opt->be);
        opt->steps++;
        return;
    }
#endif
    /* Element-wise updates: each thread owns one contiguous chunk, so the
     * result is the same for any thread count. */
    nn_dev_begin(opt->be);
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        const size_t lo = n * (size_t)t / (size_t)T, hi = n * (size_t)(t + 1) / (size_t)T;
        if (first) init_states(opt, lo, hi);
        update(opt, params, grads, lo, hi, fast);
    }
    nn_dev_end(opt->be);
    opt->steps++;
}

/* ------------------------------------------------------------------ accessors */

float *nn_optim_buffer(const nn_optimizer *opt, const char *name) {
    for (int i = 0; i < opt->num_states; i++)
        if (strcmp(opt->state_name[i], name) == 0) return opt->state[i];
    return NULL;
}

int nn_optim_num_states(const nn_optimizer *opt) { return opt->num_states; }

float *nn_optim_state(nn_optimizer *opt, int i, const char **name) {
    if (i < 0 || i >= opt->num_states) return NULL;
    if (name) *name = opt->state_name[i];
    return opt->state[i];
}

int64_t nn_optim_steps(const nn_optimizer *opt) { return opt->steps; }
void nn_optim_set_steps(nn_optimizer *opt, int64_t steps) { opt->steps = steps; }
const nn_optim_config *nn_optim_get_config(const nn_optimizer *opt) { return &opt->cfg; }
void nn_optim_set_lr(nn_optimizer *opt, float lr) { opt->cfg.lr = lr; }

/* ------------------------------------------------------------------ clipping */

/* Sum of squares in double: fixed chunks, four interleaved accumulators per
 * chunk (for speed), combined in a fixed order. Inside the backend's window. */
static double sum_squares(const nn_backend *be, const float *grads, size_t n, nn_ctx *ctx) {
    if (be->sum_squares) return be->sum_squares(grads, n); /* a device's own reduction */
    const int T = n >= OPTIM_PARALLEL_MIN ? ctx->threads : 1;
    double part[CLIP_CHUNKS];
    NN_PARALLEL_FOR(T)
    for (int c = 0; c < CLIP_CHUNKS; c++) {
        const size_t lo = n * (size_t)c / CLIP_CHUNKS, hi = n * (size_t)(c + 1) / CLIP_CHUNKS;
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
            double g0 = grads[i], g1 = grads[i + 1], g2 = grads[i + 2], g3 = grads[i + 3];
            a0 += g0 * g0;
            a1 += g1 * g1;
            a2 += g2 * g2;
            a3 += g3 * g3;
        }
        for (; i < hi; i++) a0 += (double)grads[i] * grads[i];
        part[c] = (a0 + a1) + (a2 + a3);
    }
    double sq = 0.0;
    for (int c = 0; c < CLIP_CHUNKS; c++) sq += part[c];
    return sq;
}

double nn_grad_sum_squares(const float *grads, size_t n, nn_ctx *ctx) {
    const nn_backend *be = nn_ctx_backend_of(ctx);
    nn_dev_begin(be);
    const double sq = sum_squares(be, grads, n, ctx);
    nn_dev_end(be);
    return sq;
}

double nn_clip_grad_scale(float *grads, size_t n, double norm, double max_norm, nn_ctx *ctx) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return norm;
    const nn_backend *be = nn_ctx_backend_of(ctx);
    const int T = n >= OPTIM_PARALLEL_MIN ? ctx->threads : 1;
    const float cf = (float)coef;
    nn_dev_begin(be);
    if (be->scale) {
        be->scale(grads, n, cf);
    } else {
        NN_PARALLEL_FOR(T)
        for (int t = 0; t < T; t++) {
            const size_t lo = n * (size_t)t / (size_t)T, hi = n * (size_t)(t + 1) / (size_t)T;
            for (size_t i = lo; i < hi; i++) grads[i] *= cf;
        }
    }
    nn_dev_end(be);
    return norm;
}

void nn_weight_average(float *avg, const float *params, size_t n, float w, nn_ctx *ctx) {
    const nn_backend *be = nn_ctx_backend_of(ctx);
    const int T = n >= OPTIM_PARALLEL_MIN ? ctx->threads : 1;
    nn_dev_begin(be);
    if (be->lerp) {
        be->lerp(avg, params, n, w);
    } else {
        NN_PARALLEL_FOR(T)
        for (int t = 0; t < T; t++) {
            const size_t lo = n * (size_t)t / (size_t)T, hi = n * (size_t)(t + 1) / (size_t)T;
            float *restrict a = avg + lo;
            const float *restrict p = params + lo;
            for (size_t i = 0; i < hi - lo; i++) a[i] += w * (p[i] - a[i]);
        }
    }
    nn_dev_end(be);
}

double nn_clip_grad_norm(float *grads, size_t n, double max_norm, nn_ctx *ctx) {
    return nn_clip_grad_scale(grads, n, sqrt(nn_grad_sum_squares(grads, n, ctx)), max_norm, ctx);
}
