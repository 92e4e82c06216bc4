/*
 * schedule.c - learning-rate schedules with torch.optim.lr_scheduler (1.13)
 * semantics, written as functions of (epoch, step) so that a resumed run gets
 * the same numbers without replaying history. Only ReduceLROnPlateau needs
 * state (nn_sched_state), advanced by nn_sched_observe once per epoch.
 *
 * Stepping, as in the PyTorch loop the fixtures come from
 * (scripts/make_schedule_fixtures.py):
 *  - step, multistep, exponential, cosine, cosine_restarts, plateau: the
 *    scheduler steps once at the END of every epoch, so epoch e (0-based) uses
 *    the value after e scheduler steps and ignores `step`;
 *  - onecycle: the scheduler steps after every optimizer step, so optimizer
 *    step s uses OneCycleLR's value at last_epoch = s. Steps past
 *    total_steps - 1 (where PyTorch would raise) keep the last value.
 *  - linear warm-up (any kind, warmup_steps > 0): the lr is MULTIPLIED by
 *    f(s) = start + (1 - start) * min(s, warmup_steps) / warmup_steps, the
 *    factor of LinearLR(start_factor, end_factor=1, total_iters=warmup_steps)
 *    stepped once per optimizer step. The combination is multiplicative by
 *    definition. It equals chaining both PyTorch schedulers on one optimizer
 *    only when the schedule itself is multiplicative (StepLR, MultiStepLR,
 *    ExponentialLR, CosineAnnealingLR with eta_min = 0); PyTorch's closed-form
 *    ones (OneCycleLR, CosineAnnealingWarmRestarts) would overwrite the warm-up.
 *
 * CosineAnnealingLR's get_lr() is recursive (chainable); as a lone scheduler
 * it equals the closed form eta_min + (lr - eta_min)(1 + cos(pi e / T_max)) / 2
 * for every epoch, including past T_max (period 2 T_max), which is used here.
 * All arithmetic is in double, as in Python, and rounded to float at the end.
 *
 * Defaults (nn_sched_defaults) are PyTorch's constructor defaults: gamma 0.1
 * (step, multistep); exponential 0.95 (PyTorch has none); eta_min 0; T_mult 1;
 * pct_start 0.3, div_factor 25, final_div_factor 1e4; plateau factor 0.1,
 * patience 10, threshold 1e-4, cooldown 0, min_lr 0; warmup_start_factor 1/3
 * (LinearLR's start_factor), warmup_steps 0. Options PyTorch requires
 * (step_size, milestones, T_max, T_0, total_steps) are left 0 and
 * nn_sched_validate asks for them.
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

static const char *const SCHED_NAMES[NN_SCHED_COUNT] = {
    [NN_SCHED_CONSTANT] = "constant",
    [NN_SCHED_STEP] = "step",
    [NN_SCHED_MULTISTEP] = "multistep",
    [NN_SCHED_EXPONENTIAL] = "exponential",
    [NN_SCHED_COSINE] = "cosine",
    [NN_SCHED_COSINE_RESTARTS] = "cosine_restarts",
    [NN_SCHED_ONECYCLE] = "onecycle",
    [NN_SCHED_PLATEAU] = "plateau",
};

const char *nn_sched_name(nn_sched_kind kind) {
    return (int)kind >= 0 && kind < NN_SCHED_COUNT ? SCHED_NAMES[kind] : NULL;
}

int nn_sched_kind_from_name(const char *name) {
    if (!name) return -1;
    for (int k = 0; k < NN_SCHED_COUNT; k++)
        if (strcmp(name, SCHED_NAMES[k]) == 0) return k;
    return -1;
}

nn_sched_config nn_sched_defaults(nn_sched_kind kind, float base_lr) {
    nn_sched_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.base_lr = base_lr;
    c.gamma = kind == NN_SCHED_EXPONENTIAL ? 0.95f : 0.1f;
    c.t_mult = 1;
    c.eta_min = 0.0f;
    c.pct_start = 0.3f;
    c.div_factor = 25.0f;
    c.final_div_factor = 1e4f;
    c.factor = 0.1f;
    c.patience = 10;
    c.threshold = 1e-4f;
    c.cooldown = 0;
    c.min_lr = 0.0f;
    c.warmup_steps = 0;
    c.warmup_start_factor = 1.0f / 3.0f;
    return c;
}

/* ------------------------------------------------------------ validation */

nn_status nn_sched_validate(nn_ctx *ctx, const nn_sched_config *cfg) {
    const char *name = nn_sched_name(cfg->kind);
    if (!name) return nn_ctx_fail(ctx, NN_EINVAL, "schedule: unknown kind %d", (int)cfg->kind);
#define BAD(...) nn_ctx_fail(ctx, NN_EINVAL, __VA_ARGS__)
    if (!(cfg->base_lr >= 0.0f) || !isfinite(cfg->base_lr))
        return BAD("schedule %s: base_lr must be a finite number >= 0, got %g", name,
                   cfg->base_lr);
    switch (cfg->kind) {
    case NN_SCHED_CONSTANT: break;
    case NN_SCHED_STEP:
    case NN_SCHED_MULTISTEP:
    case NN_SCHED_EXPONENTIAL:
        if (!(cfg->gamma > 0.0f) || !isfinite(cfg->gamma))
            return BAD("schedule %s: gamma must be a finite number > 0, got %g", name, cfg->gamma);
        if (cfg->kind == NN_SCHED_STEP && cfg->step_size <= 0)
            return BAD("schedule %s: step_size must be > 0, got %d", name, cfg->step_size);
        if (cfg->kind == NN_SCHED_MULTISTEP) {
            if (cfg->num_milestones < 1 || cfg->num_milestones > NN_MAX_MILESTONES)
                return BAD("schedule %s: num_milestones must be in [1, %d], got %d", name,
                           NN_MAX_MILESTONES, cfg->num_milestones);
            for (int i = 0; i < cfg->num_milestones; i++) {
                if (cfg->milestones[i] < 0)
                    return BAD("schedule %s: milestones[%d] must be >= 0, got %d", name, i,
                               cfg->milestones[i]);
                /* equal neighbours are allowed: PyTorch then applies gamma twice */
                if (i > 0 && cfg->milestones[i] < cfg->milestones[i - 1])
                    return BAD("schedule %s: milestones must be sorted, got %d after %d", name,
                               cfg->milestones[i], cfg->milestones[i - 1]);
            }
        }
        break;
    case NN_SCHED_COSINE:
    case NN_SCHED_COSINE_RESTARTS:
        if (cfg->kind == NN_SCHED_COSINE && cfg->t_max <= 0)
            return BAD("schedule %s: t_max must be > 0, got %d", name, cfg->t_max);
        if (cfg->kind == NN_SCHED_COSINE_RESTARTS) {
            if (cfg->t_0 <= 0) return BAD("schedule %s: t_0 must be > 0, got %d", name, cfg->t_0);
            if (cfg->t_mult < 1)
                return BAD("schedule %s: t_mult must be >= 1, got %d", name, cfg->t_mult);
        }
        if (!(cfg->eta_min >= 0.0f) || !isfinite(cfg->eta_min))
            return BAD("schedule %s: eta_min must be a finite number >= 0, got %g", name,
                       cfg->eta_min);
        break;
    case NN_SCHED_ONECYCLE:
        if (cfg->total_steps <= 0)
            return BAD("schedule %s: total_steps must be > 0, got %lld", name,
                       (long long)cfg->total_steps);
        if (!(cfg->pct_start > 0.0f && cfg->pct_start < 1.0f))
            return BAD("schedule %s: pct_start must be in (0, 1), got %g", name, cfg->pct_start);
        /* the warm-up phase would span zero steps: PyTorch divides by zero */
        if ((double)cfg->pct_start * (double)cfg->total_steps - 1.0 == 0.0)
            return BAD("schedule %s: pct_start * total_steps must not be 1 (got %g * %lld)", name,
                       cfg->pct_start, (long long)cfg->total_steps);
        if (!(cfg->div_factor > 0.0f) || !isfinite(cfg->div_factor))
            return BAD("schedule %s: div_factor must be a finite number > 0, got %g", name,
                       cfg->div_factor);
        if (!(cfg->final_div_factor > 0.0f) || !isfinite(cfg->final_div_factor))
            return BAD("schedule %s: final_div_factor must be a finite number > 0, got %g", name,
                       cfg->final_div_factor);
        break;
    case NN_SCHED_PLATEAU:
        if (!(cfg->factor >= 0.0f && cfg->factor < 1.0f))
            return BAD("schedule %s: factor must be in [0, 1), got %g", name, cfg->factor);
        if (cfg->patience < 0)
            return BAD("schedule %s: patience must be >= 0, got %d", name, cfg->patience);
        if (cfg->cooldown < 0)
            return BAD("schedule %s: cooldown must be >= 0, got %d", name, cfg->cooldown);
        if (!(cfg->threshold >= 0.0f && cfg->threshold < 1.0f))
            return BAD("schedule %s: threshold must be in [0, 1), got %g", name, cfg->threshold);
        if (!(cfg->min_lr >= 0.0f) || !isfinite(cfg->min_lr))
            return BAD("schedule %s: min_lr must be a finite number >= 0, got %g", name,
                       cfg->min_lr);
        break;
    default: break;
    }
    if (cfg->warmup_steps < 0)
        return BAD("schedule %s: warmup_steps must be >= 0, got %lld", name,
                   (long long)cfg->warmup_steps);
    if (cfg->warmup_steps > 0 &&
        !(cfg->warmup_start_factor > 0.0f && cfg->warmup_start_factor <= 1.0f))
        return BAD("schedule %s: warmup_start_factor must be in (0, 1], got %g", name,
                   cfg->warmup_start_factor);
#undef BAD
    return NN_OK;
}

/* ------------------------------------------------------------ values */

void nn_sched_state_init(const nn_sched_config *cfg, nn_sched_state *st) {
    st->best = INFINITY;    /* ReduceLROnPlateau's mode_worse for 'min' */
    st->bad_epochs = 0;
    st->cooldown_left = 0;
    st->plateau_lr = cfg->base_lr;
}

/* OneCycleLR.get_lr() at last_epoch = s, two phases, cosine annealing. */
static double onecycle_lr(const nn_sched_config *cfg, int64_t s) {
    const double max_lr = cfg->base_lr;
    const double initial = max_lr / (double)cfg->div_factor;
    const double min_lr = initial / (double)cfg->final_div_factor;
    const double end1 = (double)cfg->pct_start * (double)cfg->total_steps - 1.0;
    const double end2 = (double)cfg->total_steps - 1.0;
    if (s > cfg->total_steps - 1) s = cfg->total_steps - 1;
    double start_lr, end_lr, pct;
    if ((double)s <= end1) {
        start_lr = initial;
        end_lr = max_lr;
        pct = end1 > 0.0 ? (double)s / end1 : 0.0;   /* end1 == 0 is refused by validate */
    } else {
        start_lr = max_lr;
        end_lr = min_lr;
        pct = end2 > end1 ? ((double)s - end1) / (end2 - end1) : 1.0;
    }
    return end_lr + (start_lr - end_lr) / 2.0 * (cos(PI * pct) + 1.0);
}

/* CosineAnnealingWarmRestarts stepped once per epoch: T_cur and T_i after
 * `epoch` steps (T_i grows by t_mult at every restart). */
static double restarts_lr(const nn_sched_config *cfg, int64_t epoch) {
    int64_t t_i = cfg->t_0 > 0 ? cfg->t_0 : 1, t_cur = epoch;
    if (cfg->t_mult <= 1) {
        t_cur = epoch % t_i;
    } else {
        while (t_cur >= t_i) {
            t_cur -= t_i;
            t_i *= cfg->t_mult;
        }
    }
    const double eta = cfg->eta_min;
    return eta + ((double)cfg->base_lr - eta) * (1.0 + cos(PI * (double)t_cur / (double)t_i)) / 2.0;
}

float nn_sched_lr(const nn_sched_config *cfg, const nn_sched_state *st, int64_t epoch,
                  int64_t step) {
    if (epoch < 0) epoch = 0;
    if (step < 0) step = 0;
    const double base = cfg->base_lr;
    double lr = base;
    switch (cfg->kind) {
    case NN_SCHED_STEP:
        if (cfg->step_size > 0)
            lr = base * pow((double)cfg->gamma, (double)(epoch / cfg->step_size));
        break;
    case NN_SCHED_MULTISTEP: {
        int k = 0;
        for (int i = 0; i < cfg->num_milestones && i < NN_MAX_MILESTONES; i++)
            k += cfg->milestones[i] <= epoch;
        lr = base * pow((double)cfg->gamma, (double)k);
        break;
    }
    case NN_SCHED_EXPONENTIAL: lr = base * pow((double)cfg->gamma, (double)epoch); break;
    case NN_SCHED_COSINE:
        if (cfg->t_max > 0) {
            /* periodic with period 2 T_max; reducing first keeps cos accurate */
            const double e = (double)(epoch % (2 * (int64_t)cfg->t_max));
            const double eta = cfg->eta_min;
            lr = eta + (base - eta) * (1.0 + cos(PI * e / (double)cfg->t_max)) / 2.0;
        }
        break;
    case NN_SCHED_COSINE_RESTARTS: lr = restarts_lr(cfg, epoch); break;
    case NN_SCHED_ONECYCLE:
        if (cfg->total_steps > 0) lr = onecycle_lr(cfg, step);
        break;
    case NN_SCHED_PLATEAU: lr = st ? st->plateau_lr : base; break;
    default: break;
    }
    if (cfg->warmup_steps > 0) {
        const double sf = cfg->warmup_start_factor;
        const int64_t s = step < cfg->warmup_steps ? step : cfg->warmup_steps;
        lr *= sf + (1.0 - sf) * (double)s / (double)cfg->warmup_steps;
    }
    return (float)lr;
}

/* ReduceLROnPlateau.step(metric) with mode 'min', threshold_mode 'rel' and
 * eps 1e-8 (a reduction smaller than eps is skipped). */
void nn_sched_observe(const nn_sched_config *cfg, nn_sched_state *st, double metric) {
    if (cfg->kind != NN_SCHED_PLATEAU) return;
    if (metric < st->best * (1.0 - (double)cfg->threshold)) {
        st->best = metric;
        st->bad_epochs = 0;
    } else {
        st->bad_epochs++;
    }
    if (st->cooldown_left > 0) {
        st->cooldown_left--;
        st->bad_epochs = 0;
    }
    if (st->bad_epochs > cfg->patience) {
        const double old_lr = st->plateau_lr;
        const double new_lr = fmax(old_lr * (double)cfg->factor, (double)cfg->min_lr);
        if (old_lr - new_lr > 1e-8) st->plateau_lr = (float)new_lr;
        st->cooldown_left = cfg->cooldown;
        st->bad_epochs = 0;
    }
}
