/*
 * sampler.c - proposing a trial's values from the trials so far.
 *
 * random: every active parameter uniform (in log space for log ranges).
 * grid:   the cartesian product of the choices and of 3 points per numeric
 *         range (ends and middle), in order; inactive parameters do not
 *         multiply the grid.
 * tpe:    the Tree-structured Parzen Estimator (Bergstra et al. 2011), in its
 *         multivariate form (Falkner et al. 2018, Optuna's multivariate=True):
 *         the trials are split into the best gamma share ("good") and the
 *         rest; candidates are drawn around good trials, each parameter from
 *         a kernel centred on that trial's value, and the candidate with the
 *         largest l(x)/g(x) wins, l and g being mixtures of product kernels
 *         over the good and the other trials (plus the prior). Conditional
 *         parameters: a kernel factor only for parameters active in both the
 *         candidate and the trial, the prior's density otherwise. Pruned
 *         trials rank below complete ones by how far they got, infeasible
 *         ones last; several objectives rank by Pareto front.
 * nsga2:  NSGA-II (Deb et al. 2002) for several objectives, asynchronous as
 *         in Optuna: the population is the best NSGA2_POPULATION finished
 *         trials by Pareto front and crowding distance; a new trial is the
 *         uniform crossover of two parents won in binary tournaments, each
 *         parameter then redrawn with probability 1/parameters (mutation).
 */
#include "search/search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { TPE_STARTUP = 10, TPE_CANDIDATES = 24, GRID_POINTS = 3, NSGA2_POPULATION = 20 };

const char *sampler_name(sampler_kind k) {
    return k == SAMPLER_GRID ? "grid" : k == SAMPLER_TPE ? "tpe" : k == SAMPLER_NSGA2 ? "nsga2" : "random";
}

int sampler_from_name(const char *name) {
    for (int k = SAMPLER_RANDOM; k <= SAMPLER_NSGA2; k++)
        if (!strcmp(name, sampler_name((sampler_kind)k))) return k;
    return -1;
}

/* Uniform in (0, 1), 32 random bits, never 0 or 1. */
static double unif(nn_rng *rng) { return ((double)nn_rng_u32(rng) + 0.5) / 4294967296.0; }

/* A numeric parameter's value in the space it is sampled in (log or linear). */
static double to_unit(const sp_param *p, double v) { return p->log ? log(v) : v; }
static double from_unit(const sp_param *p, double u) { return p->log ? exp(u) : u; }

/* Rounds and clamps a drawn number onto the parameter's values. */
static double snap(const sp_param *p, double v) {
    if (v < p->lo) v = p->lo;
    if (v > p->hi) v = p->hi;
    if (p->kind == SP_INT) {
        v = p->lo + p->step * floor((v - p->lo) / p->step + 0.5);
        if (v > p->hi) v -= p->step;
    }
    return v;
}

static double uniform_value(const sp_param *p, nn_rng *rng) {
    switch (p->kind) {
    case SP_FIXED: return 0;
    case SP_CHOICE: return (double)(nn_rng_below(rng, (uint32_t)p->num_choices));
    default: {
        double lo = p->lo, hi = p->hi;
        if (p->kind == SP_INT) {
            /* widen by half a step so that both ends are as likely as the rest */
            lo -= 0.5 * p->step;
            hi += 0.5 * p->step;
            if (p->log && lo <= 0) lo = 0.5 * p->lo;
        }
        double u = unif(rng);
        double v = p->log ? exp(log(lo) + (log(hi) - log(lo)) * u) : lo + (hi - lo) * u;
        return snap(p, v);
    }
    }
}

static void sample_random(const nn_space *sp, nn_rng *rng, double *value, unsigned char *active) {
    /* draw in order: a parameter's condition depends only on earlier ones */
    for (int i = 0; i < sp->num_params; i++) value[i] = uniform_value(&sp->param[i], rng);
    sp_activate(sp, value, active);
    for (int i = 0; i < sp->num_params; i++)
        if (!active[i]) value[i] = 0;
}

static int grid_size(const sp_param *p) {
    if (p->kind == SP_FIXED) return 1;
    if (p->kind == SP_CHOICE) return p->num_choices;
    if (p->kind == SP_INT) {
        double n = floor((p->hi - p->lo) / p->step) + 1;
        return n < GRID_POINTS ? (int)n : GRID_POINTS;
    }
    return p->lo == p->hi ? 1 : GRID_POINTS;
}

static double grid_value(const sp_param *p, int k) {
    int n = grid_size(p);
    if (p->kind == SP_FIXED || p->kind == SP_CHOICE) return k;
    if (n == 1) return p->lo;
    double lo = to_unit(p, p->lo), hi = to_unit(p, p->hi);
    return snap(p, from_unit(p, lo + (hi - lo) * k / (n - 1)));
}

static int same_values(const nn_space *sp, const double *a, const unsigned char *aa, const trial *t) {
    for (int i = 0; i < sp->num_params; i++) {
        if (aa[i] != t->active[i]) return 0;
        if (!aa[i]) continue;
        double x = a[i], y = t->value[i];
        if (fabs(x - y) > 1e-6 * fmax(1.0, fabs(x))) return 0;
    }
    return 1;
}

/* The first grid point no trial has taken yet (points that differ only in
 * an inactive parameter are one point). Returns 1 if none is left. */
static int sample_grid(const nn_space *sp, const trial *trials, int n, double *value,
                       unsigned char *active) {
    int idx[SP_MAX_PARAMS] = {0};
    for (;;) {
        for (int i = 0; i < sp->num_params; i++) value[i] = grid_value(&sp->param[i], idx[i]);
        sp_activate(sp, value, active);
        int canonical = 1;
        for (int i = 0; i < sp->num_params; i++)
            if (!active[i]) {
                canonical &= idx[i] == 0;
                value[i] = 0;
            }
        int taken = 0;
        for (int t = 0; canonical && !taken && t < n; t++)
            taken = same_values(sp, value, active, &trials[t]);
        if (canonical && !taken) return 0;
        /* next index, odometer style */
        int i = sp->num_params - 1;
        while (i >= 0 && ++idx[i] == grid_size(&sp->param[i])) idx[i--] = 0;
        if (i < 0) return 1;
    }
}

/* --- TPE --- */

typedef struct {
    const trial *t;
    int group;      /* 0..: lower is better */
    double key;     /* within the group, lower is better */
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->group != y->group) return x->group - y->group;
    return (x->key > y->key) - (x->key < y->key);
}

/* Orders the trials that carry information, best first; returns how many. */
static int rank_trials(const nn_space *sp, const trial *trials, int n, ranked *out) {
    int m = sp->num_objectives, count = 0;
    double *obj = malloc(sizeof(double) * (size_t)(n ? n : 1) * (size_t)m);
    int *idx = malloc(sizeof(int) * (size_t)(n ? n : 1)), *rank = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int nc = 0;
    if (!obj || !idx || !rank) {
        free(obj), free(idx), free(rank);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (trials[i].state == TRIAL_COMPLETE && trial_feasible(sp, &trials[i]) &&
            trial_objectives(sp, &trials[i], obj + (size_t)nc * m))
            idx[nc++] = i;
    pareto_ranks(obj, nc, m, rank);
    int fronts = 0;
    for (int c = 0; c < nc; c++) {
        out[count++] = (ranked){&trials[idx[c]], rank[c], obj[(size_t)c * m]};
        if (rank[c] + 1 > fronts) fronts = rank[c] + 1;
    }
    for (int i = 0; i < n; i++) {
        const trial *t = &trials[i];
        if (t->state == TRIAL_PRUNED && t->epochs > 0) {
            /* after every complete trial: further is better, then accuracy */
            double acc = t->val_accuracy[t->epochs - 1];
            out[count++] = (ranked){t, fronts + 1, -(double)t->epochs * 10.0 - (isfinite(acc) ? acc : 0)};
        } else if (t->state == TRIAL_INFEASIBLE ||
                   (t->state == TRIAL_COMPLETE && !trial_feasible(sp, t))) {
            out[count++] = (ranked){t, fronts + 2, 0};
        }
    }
    qsort(out, (size_t)count, sizeof *out, cmp_ranked);
    free(obj), free(idx), free(rank);
    return count;
}

/* The kernel bandwidth of a numeric parameter over k observations (Scott's
 * rule on the range, with a floor so that a kernel never collapses). */
static double bandwidth(const sp_param *p, int k, int d) {
    double range = to_unit(p, p->hi) - to_unit(p, p->lo);
    if (range <= 0) return 1;
    /* 0.2: the magnitude Optuna's multivariate TPE uses */
    double bw = range * pow((double)(k > 0 ? k : 1), -1.0 / (d + 4)) * 0.2;
    return fmax(bw, range * 0.02);
}

static double log_normal_pdf(double x, double mu, double sigma) {
    double z = (x - mu) / sigma;
    return -0.5 * z * z - log(sigma) - 0.9189385332046727;
}

/* log density of the prior for one parameter at its value */
static double log_prior(const sp_param *p) {
    if (p->kind == SP_CHOICE) return -log((double)p->num_choices);
    if (p->kind == SP_FIXED) return 0;
    double range = to_unit(p, p->hi) - to_unit(p, p->lo);
    return range > 0 ? -log(range) : 0;
}

/* log of a product kernel centred at trial c, at (value, active); numeric
 * bandwidths bw[], categorical smoothing eps. */
static double log_kernel(const nn_space *sp, const trial *c, const double *value,
                         const unsigned char *active, const double *bw, double eps) {
    double s = 0;
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        if (!active[i] || p->kind == SP_FIXED) continue;
        if (!c->active[i]) {
            s += log_prior(p);
            continue;
        }
        if (p->kind == SP_CHOICE) {
            double k = p->num_choices;
            s += log((int)value[i] == (int)c->value[i] ? 1 - eps + eps / k : eps / k);
        } else {
            s += log_normal_pdf(to_unit(p, value[i]), to_unit(p, c->value[i]), bw[i]);
        }
    }
    return s;
}

/* log of the mixture: the kernels of group[0..k) and the prior (weight 1). */
static double log_mixture(const nn_space *sp, const ranked *group, int k, const double *value,
                          const unsigned char *active, const double *bw, double eps) {
    double prior = 0;
    for (int i = 0; i < sp->num_params; i++)
        if (active[i]) prior += log_prior(&sp->param[i]);
    double mx = prior, terms[512];
    int nt = k < 511 ? k : 511;
    for (int j = 0; j < nt; j++) {
        terms[j] = log_kernel(sp, group[j].t, value, active, bw, eps);
        if (terms[j] > mx) mx = terms[j];
    }
    double sum = exp(prior - mx);
    for (int j = 0; j < nt; j++) sum += exp(terms[j] - mx);
    return mx + log(sum) - log((double)nt + 1);
}

static double normal(nn_rng *rng) {
    double u1 = unif(rng), u2 = unif(rng);
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A candidate drawn around trial c: each active parameter from its kernel,
 * the prior where c does not have it. */
static void draw_around(const nn_space *sp, const trial *c, nn_rng *rng, const double *bw,
                        double eps, double *value, unsigned char *active) {
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        /* conditions depend on earlier parameters only: activate as we go */
        sp_activate(sp, value, active);
        if (!active[i] && i > 0) {
            value[i] = 0;
            continue;
        }
        if (!c->active[i] || p->kind == SP_FIXED) {
            value[i] = uniform_value(p, rng);
        } else if (p->kind == SP_CHOICE) {
            value[i] = unif(rng) < eps ? uniform_value(p, rng) : c->value[i];
        } else {
            /* a kernel truncated to the range: redraw what falls outside
             * (clamping would pile the draws up at the ends) */
            double lo = to_unit(p, p->lo), hi = to_unit(p, p->hi), u;
            int tries = 0;
            do u = to_unit(p, c->value[i]) + bw[i] * normal(rng);
            while ((u < lo || u > hi) && ++tries < 32);
            value[i] = snap(p, from_unit(p, u));
        }
    }
    sp_activate(sp, value, active);
    for (int i = 0; i < sp->num_params; i++)
        if (!active[i]) value[i] = 0;
}

static void sample_tpe(const nn_space *sp, const trial *trials, int n, nn_rng *rng, double *value,
                       unsigned char *active) {
    ranked *r = malloc(sizeof *r * (size_t)(n ? n : 1));
    int count = r ? rank_trials(sp, trials, n, r) : 0;
    if (count < TPE_STARTUP) {
        free(r);
        sample_random(sp, rng, value, active);
        return;
    }
    /* Optuna's default split: the best ceil(0.1 n), at most 25 */
    int good = (int)ceil(0.1 * count);
    if (good > 25) good = 25;
    if (good < 1) good = 1;
    int d = 0;
    for (int i = 0; i < sp->num_params; i++) d += sp->param[i].kind != SP_FIXED;
    double bw_good[SP_MAX_PARAMS], bw_bad[SP_MAX_PARAMS];
    for (int i = 0; i < sp->num_params; i++) {
        bw_good[i] = bandwidth(&sp->param[i], good, d);
        bw_bad[i] = bandwidth(&sp->param[i], count - good, d);
    }
    double eps_good = 1.0 / (good + 2.0), eps_bad = 1.0 / (count - good + 2.0);
    double best = -INFINITY, cand[SP_MAX_PARAMS];
    unsigned char cand_active[SP_MAX_PARAMS];
    for (int c = 0; c < TPE_CANDIDATES; c++) {
        const trial *centre = r[nn_rng_below(rng, (uint32_t)good)].t;
        memset(cand, 0, sizeof cand);
        draw_around(sp, centre, rng, bw_good, fmax(eps_good, 0.1), cand, cand_active);
        double score = log_mixture(sp, r, good, cand, cand_active, bw_good, eps_good) -
                       log_mixture(sp, r + good, count - good, cand, cand_active, bw_bad, eps_bad);
        if (score > best) {
            best = score;
            memcpy(value, cand, sizeof(double) * (size_t)sp->num_params);
            memcpy(active, cand_active, (size_t)sp->num_params);
        }
    }
    free(r);
}

/* --- NSGA-II --- */

typedef struct {
    const trial *t;
    int rank;
    double crowding;
} member;

static int cmp_member(const void *a, const void *b) {
    const member *x = a, *y = b;
    if (x->rank != y->rank) return x->rank - y->rank;
    return (x->crowding < y->crowding) - (x->crowding > y->crowding);
}

/* Crowding distance of the members of one front (obj rows of m values). */
static void crowding(member *mem, const double *obj, const int *row, int k, int m) {
    for (int i = 0; i < k; i++) mem[i].crowding = 0;
    int *order = malloc(sizeof(int) * (size_t)k);
    if (!order) return;
    for (int o = 0; o < m; o++) {
        for (int i = 0; i < k; i++) order[i] = i;
        for (int i = 1; i < k; i++) /* insertion sort: fronts are small */
            for (int j = i; j > 0 && obj[row[order[j]] * m + o] < obj[row[order[j - 1]] * m + o]; j--) {
                int tmp = order[j];
                order[j] = order[j - 1];
                order[j - 1] = tmp;
            }
        double lo = obj[row[order[0]] * m + o], hi = obj[row[order[k - 1]] * m + o];
        mem[order[0]].crowding = mem[order[k - 1]].crowding = INFINITY;
        if (hi <= lo) continue;
        for (int i = 1; i + 1 < k; i++)
            mem[order[i]].crowding +=
                (obj[row[order[i + 1]] * m + o] - obj[row[order[i - 1]] * m + o]) / (hi - lo);
    }
    free(order);
}

static const trial *tournament(const member *pop, int n, nn_rng *rng) {
    const member *a = &pop[nn_rng_below(rng, (uint32_t)n)], *b = &pop[nn_rng_below(rng, (uint32_t)n)];
    return cmp_member(a, b) <= 0 ? a->t : b->t;
}

static void sample_nsga2(const nn_space *sp, const trial *trials, int n, nn_rng *rng, double *value,
                         unsigned char *active) {
    int m = sp->num_objectives, c = 0;
    double *obj = malloc(sizeof(double) * (size_t)(n ? n : 1) * (size_t)m);
    int *row = malloc(sizeof(int) * (size_t)(n ? n : 1)), *rank = malloc(sizeof(int) * (size_t)(n ? n : 1));
    member *mem = malloc(sizeof(member) * (size_t)(n ? n : 1));
    if (obj && row && rank && mem)
        for (int i = 0; i < n; i++)
            if (trials[i].state == TRIAL_COMPLETE && trial_feasible(sp, &trials[i]) &&
                trial_objectives(sp, &trials[i], obj + (size_t)c * m)) {
                row[c] = c;
                mem[c].t = &trials[i];
                c++;
            }
    if (c < NSGA2_POPULATION) {
        free(obj), free(row), free(rank), free(mem);
        sample_random(sp, rng, value, active);
        return;
    }
    pareto_ranks(obj, c, m, rank);
    /* crowding within each front */
    int *idx = malloc(sizeof(int) * (size_t)c);
    member *front = malloc(sizeof(member) * (size_t)c);
    for (int f = 0; idx && front; f++) {
        int k = 0;
        for (int i = 0; i < c; i++)
            if (rank[i] == f) idx[k++] = i;
        if (k == 0) break;
        crowding(front, obj, idx, k, m);
        for (int j = 0; j < k; j++) mem[idx[j]] = (member){mem[idx[j]].t, f, front[j].crowding};
    }
    free(idx), free(front);
    qsort(mem, (size_t)c, sizeof *mem, cmp_member);
    int pop = c < NSGA2_POPULATION ? c : NSGA2_POPULATION;
    const trial *a = tournament(mem, pop, rng), *b = tournament(mem, pop, rng);
    double mutate = 1.0 / (sp->num_params > 0 ? sp->num_params : 1);
    for (int i = 0; i < sp->num_params; i++) {
        const trial *p = unif(rng) < 0.5 ? a : b, *q = p == a ? b : a;
        if (!p->active[i]) p = q;
        value[i] = p->active[i] && unif(rng) >= mutate ? p->value[i] : uniform_value(&sp->param[i], rng);
    }
    sp_activate(sp, value, active);
    for (int i = 0; i < sp->num_params; i++)
        if (!active[i]) value[i] = 0;
    free(obj), free(row), free(rank), free(mem);
}

int sampler_propose(sampler_kind k, const nn_space *sp, const trial *trials, int n, nn_rng *rng,
                    double *value, unsigned char *active) {
    switch (k) {
    case SAMPLER_GRID: return sample_grid(sp, trials, n, value, active);
    case SAMPLER_TPE: sample_tpe(sp, trials, n, rng, value, active); return 0;
    case SAMPLER_NSGA2: sample_nsga2(sp, trials, n, rng, value, active); return 0;
    default: sample_random(sp, rng, value, active); return 0;
    }
}
