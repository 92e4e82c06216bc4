/*
 * pruner.c - stopping poor trials after an epoch, on their validation
 * accuracy (higher is better), from every trial's per-epoch curve in the
 * study. A decision is asynchronous: it compares against whatever the other
 * trials have reported so far, so workers never wait for each other.
 *
 * median:    after min_epochs epochs, stop a trial whose accuracy at this
 *            epoch is below the median of the other trials' at the same
 *            epoch (once `startup` trials have reported it).
 * asha:      asynchronous successive halving (Li et al. 2020): rungs at
 *            min_epochs * eta^k epochs; at a rung a trial goes on only if it
 *            is among the best 1/eta of the trials that reached that rung
 *            (the best one at least).
 * hyperband: several ASHA brackets (Li et al. 2018), bracket s starting its
 *            rungs at min_epochs * eta^s; each new trial joins one bracket,
 *            the brackets weighted so that each gets a similar budget, and
 *            is compared only within it.
 */
#include "search/search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *pruner_name(pruner_kind k) {
    static const char *const names[] = {"none", "median", "asha", "hyperband"};
    return (unsigned)k < 4 ? names[k] : "none";
}

int pruner_from_name(const char *name) {
    for (int k = PRUNER_NONE; k <= PRUNER_HYPERBAND; k++)
        if (!strcmp(name, pruner_name((pruner_kind)k))) return k;
    return -1;
}

/* Brackets: s = 0 .. s_max, bracket s's first rung min_epochs * eta^s at
 * most max_epochs (the last one trains every trial fully). */
static int hyperband_brackets(const pruner_cfg *p) {
    int n = 0;
    for (double r = p->min_epochs; r <= p->max_epochs; r *= p->eta) n++;
    return n > 0 ? n : 1;
}

int pruner_bracket(const pruner_cfg *p, int64_t trial_id) {
    if (p->kind != PRUNER_HYPERBAND) return 0;
    int nb = hyperband_brackets(p);
    /* Hyperband's trial counts (Li et al. 2018, Algorithm 1): with S = nb - 1,
     * the bracket whose rungs start eta^s above the first gets
     * eta^(S-s) / (S-s+1) of them, so that each bracket spends a similar budget */
    double w[64], total = 0;
    int S = nb - 1;
    for (int s = 0; s < nb && s < 64; s++) total += w[s] = pow(p->eta, S - s) / (S - s + 1);
    /* a fixed, well-spread point in [0, total) per trial: the golden ratio's
     * sequence, so consecutive trials cycle through the brackets */
    double u = fmod((double)trial_id * 0.6180339887498949, 1.0) * total;
    for (int s = 0; s < nb && s < 64; s++) {
        if (u < w[s]) return s;
        u -= w[s];
    }
    return nb - 1;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Accuracies at epoch e (1-based) of the trials (in bracket, if >= 0) that
 * reached it, self excluded; returns how many. */
static int values_at(const trial *trials, int n, const trial *self, int e, int bracket,
                     double *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        const trial *t = &trials[i];
        if (t->id == self->id || t->epochs < e || (bracket >= 0 && t->bracket != bracket)) continue;
        if (t->state == TRIAL_FAILED) continue;
        double v = t->val_accuracy[e - 1];
        if (isfinite(v)) out[k++] = v;
    }
    return k;
}

static int rung_stop(const pruner_cfg *p, const trial *self, const trial *trials, int n,
                     int first_rung, int bracket) {
    int e = self->epochs;
    /* is e a rung: first_rung * eta^k? */
    int is_rung = 0;
    for (double r = first_rung; r <= e; r *= p->eta)
        if ((int)r == e) is_rung = 1;
    if (!is_rung || e >= p->max_epochs) return 0;
    double mine = self->val_accuracy[e - 1];
    if (!isfinite(mine)) return 1;
    double *v = malloc(sizeof(double) * (size_t)(n + 1));
    if (!v) return 0;
    int k = values_at(trials, n, self, e, bracket, v);
    v[k++] = mine;
    qsort(v, (size_t)k, sizeof *v, cmp_desc);
    int keep = k / p->eta;
    if (keep < 1) keep = 1;
    int stop = mine < v[keep - 1];
    free(v);
    return stop;
}

int pruner_should_stop(const pruner_cfg *p, const trial *self, const trial *trials, int n) {
    int e = self->epochs;
    if (e < 1) return 0;
    switch (p->kind) {
    case PRUNER_MEDIAN: {
        if (e < p->min_epochs || e >= p->max_epochs) return 0;
        double mine = self->val_accuracy[e - 1];
        if (!isfinite(mine)) return 1;
        double *v = malloc(sizeof(double) * (size_t)(n + 1));
        if (!v) return 0;
        int k = values_at(trials, n, self, e, -1, v);
        int stop = 0;
        if (k >= (p->startup > 0 ? p->startup : 1)) {
            qsort(v, (size_t)k, sizeof *v, cmp_desc);
            double median = k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
            stop = mine < median;
        }
        free(v);
        return stop;
    }
    case PRUNER_ASHA: return rung_stop(p, self, trials, n, p->min_epochs, -1);
    case PRUNER_HYPERBAND: {
        int first = p->min_epochs;
        for (int s = 0; s < self->bracket; s++) first *= p->eta;
        return rung_stop(p, self, trials, n, first, self->bracket);
    }
    default: return 0;
    }
}
