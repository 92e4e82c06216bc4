/*
 * test_search.c - the search engine without training: space files (and every
 * malformed one refused with file:line), values and conditions, the grid's
 * points, the samplers' ranges, TPE finding a known optimum faster than random
 * search, the pruners' decisions, Pareto ranks, and the SQLite study (round
 * trip, a changed space refused, two processes adding trials at once never
 * sharing an id).
 */
#include "nnopt.h"
#include "search/search.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const SPACE =
    "# a test space\n"                                      /* 1 */
    "[search]\n"                                            /* 2 */
    "model = m.nn\n"                                        /* 3 */
    "objectives = maximize val_accuracy, minimize latency_ms\n" /* 4 */
    "constraint = latency_ms <= 0.5\n"                      /* 5 */
    "val = 100\n"                                           /* 6 */
    "[model]\n"                                             /* 7 */
    "W = int 4 64 log\n"                                    /* 8 */
    "D = int 1 9 step 4\n"                                  /* 9 */
    "[optimizer]\n"                                         /* 10 */
    "name = choice sgd adamw   # two optimizers\n"          /* 11 */
    "lr = float 0.001 0.1 log\n"                            /* 12 */
    "momentum = float 0.8 0.99 if name == sgd\n"            /* 13 */
    "beta1 = float 0.8 0.95 if optimizer.name in adamw\n"   /* 14 */
    "[train]\n"                                             /* 15 */
    "epochs = 4\n";                                         /* 16 */

static nn_space *parse_space(nn_ctx *ctx, const char *text, const char *what) {
    nn_space *sp = NULL;
    nn_status st = sp_parse(ctx, text, "dir/s.space", &sp);
    check(st == NN_OK, what, "%s", ctx_err(ctx, st));
    return sp;
}

static void test_space_file(nn_ctx *ctx) {
    nn_space *sp = parse_space(ctx, SPACE, "space: a full file parses");
    if (!sp) return;
    check(sp->num_params == 7 && !strcmp(sp->model, "dir/m.nn") && sp->num_objectives == 2 &&
              sp->objective[0].maximize && !sp->objective[1].maximize &&
              sp->objective[1].metric == M_LATENCY_MS && sp->num_constraints == 1 &&
              sp->constraint[0].less && sp->constraint[0].bound == 0.5 && sp->val == 100,
          "space: parameters, model path relative to the file, objectives, constraint", "%d params, model %s",
          sp->num_params, sp->model);
    int w = sp_find(sp, "model.W"), d = sp_find(sp, "model.D"), name = sp_find(sp, "optimizer.name"),
        mom = sp_find(sp, "optimizer.momentum"), beta = sp_find(sp, "optimizer.beta1"),
        ep = sp_find(sp, "train.epochs");
    check(w >= 0 && sp->param[w].kind == SP_INT && sp->param[w].log && d >= 0 &&
              sp->param[d].step == 4 && name >= 0 && sp->param[name].num_choices == 2 &&
              mom >= 0 && sp->param[mom].cond == name && beta >= 0 && sp->param[beta].cond == name &&
              ep >= 0 && sp->param[ep].kind == SP_FIXED && !strcmp(sp->param[ep].choice[0], "4"),
          "space: kinds, log, step, conditions (same-section and full names), fixed values", "%s", "");
    /* conditions */
    double v[SP_MAX_PARAMS] = {0};
    unsigned char a[SP_MAX_PARAMS];
    v[name] = 0; /* sgd */
    sp_activate(sp, v, a);
    int sgd_ok = a[mom] && !a[beta];
    v[name] = 1; /* adamw */
    sp_activate(sp, v, a);
    check(sgd_ok && !a[mom] && a[beta] && a[w], "space: momentum only for sgd, beta1 only for adamw",
          "%s", "");
    /* values as text and back */
    char text[96];
    double back;
    int round_trip = 1;
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        double x = p->kind == SP_FLOAT ? p->lo + 0.37 * (p->hi - p->lo) : p->kind == SP_INT ? p->hi : 0;
        if (p->kind == SP_CHOICE) x = p->num_choices - 1;
        sp_value_text(p, x, text, sizeof text);
        round_trip &= sp_value_parse(p, text, &back) == 0 && fabs(back - x) <= 1e-5 * fabs(x);
    }
    check(round_trip && sp_value_parse(&sp->param[name], "sgdx", &back) != 0 &&
              sp_value_parse(&sp->param[w], "65", &back) != 0 &&
              sp_value_parse(&sp->param[w], "4.5", &back) != 0,
          "space: values print and read back; words and numbers outside the space are refused", "%s", "");
    sp_free(sp);
}

static void test_bad_spaces(nn_ctx *ctx) {
    static const struct {
        const char *what, *text;
        int line;
        const char *word;
    } bad[] = {
        {"no model", "[search]\nval = 5\n", 0, "model = MODEL_FILE is missing"},
        {"key before a section", "model = x\n", 1, "before any [section]"},
        {"unknown search key", "[search]\nmodel = m\nbudgets = 3\n", 3, "unknown key 'budgets'"},
        {"model twice", "[search]\nmodel = m\nmodel = n\n", 3, "set again"},
        {"bad objective", "[search]\nmodel = m\nobjectives = maximize speed\n", 3, "objectives"},
        {"objective twice", "[search]\nmodel = m\nobjectives = maximize val_accuracy, minimize val_accuracy\n", 3, "named twice"},
        {"bad constraint", "[search]\nmodel = m\nconstraint = latency_ms < 1\n", 3, "constraint"},
        {"bad val", "[search]\nmodel = m\nval = -1\n", 3, "val: expected an integer"},
        {"reversed range", "[search]\nmodel = m\n[o]\nlr = float 1 0.1\n", 4, "LO <= HI"},
        {"log from zero", "[search]\nmodel = m\n[o]\nlr = float 0 1 log\n", 4, "LO > 0"},
        {"int with a fraction", "[search]\nmodel = m\n[o]\nn = int 1.5 4\n", 4, "integers"},
        {"unknown word", "[search]\nmodel = m\n[o]\nn = int 1 4 cubic\n", 4, "unexpected 'cubic'"},
        {"empty choice", "[search]\nmodel = m\n[o]\nn = choice\n", 4, "choice A B"},
        {"choice twice", "[search]\nmodel = m\n[o]\nn = choice a a\n", 4, "listed twice"},
        {"two words", "[search]\nmodel = m\n[o]\nn = a b\n", 4, "neither"},
        {"parameter twice", "[search]\nmodel = m\n[o]\nn = 1\nn = 2\n", 5, "set again"},
        {"condition on nothing", "[search]\nmodel = m\n[o]\nn = 1 if x == y\n", 4, "defined above"},
        {"condition on a later key", "[search]\nmodel = m\n[o]\nn = 1 if k == a\nk = choice a b\n", 4, "defined above"},
        {"condition value unknown", "[search]\nmodel = m\n[o]\nk = choice a b\nn = 1 if k == c\n", 5, "not one of"},
        {"condition syntax", "[search]\nmodel = m\n[o]\nk = choice a b\nn = 1 if k = a\n", 5, "if KEY == VALUE"},
        {"not key = value", "[search]\nmodel = m\njunk\n", 3, "expected '[section]'"},
        {"bad key", "[search]\nmodel = m\n[o]\nl-r = 1\n", 4, "bad key"},
        {"a $ in a value", "[search]\nmodel = m\n[o]\nn = $x\n", 4, "no $"},
        {"a variant without a condition", "[search]\nmodel = m\n[o]\nlr@b = float 1 2\n", 4, "needs an 'if'"},
        {"a variant in [search]", "[search]\nmodel = m\nval@x = 3\n", 3, "bad key"},
        {"a reference for a trained metric", "[search]\nmodel = m\nconstraint = val_accuracy >= s.nn\n", 3, "needs a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nn_space *sp = NULL;
        nn_ctx_clear_error(ctx);
        nn_status st = sp_parse(ctx, bad[i].text, "bad.space", &sp);
        const char *msg = nn_ctx_error(ctx);
        char where[32], name[128];
        if (bad[i].line) snprintf(where, sizeof where, "bad.space:%d:", bad[i].line);
        else snprintf(where, sizeof where, "bad.space:");
        snprintf(name, sizeof name, "bad space: %s", bad[i].what);
        check(st != NN_OK && !sp && strstr(msg, where) && strstr(msg, bad[i].word) &&
                  !strchr(msg, '\n'),
              name, "wants '%s' and '%s': %s", where, bad[i].word, msg);
        sp_free(sp);
    }
}

/* a trial with the given values and state */
static trial make_trial(const nn_space *sp, int64_t id, const double *v, trial_state state) {
    trial t;
    memset(&t, 0, sizeof t);
    t.id = id;
    t.state = state;
    memcpy(t.value, v, sizeof(double) * (size_t)sp->num_params);
    sp_activate(sp, t.value, t.active);
    for (int m = 0; m < M_COUNT; m++) t.metric[m] = NAN;
    t.test_accuracy = NAN;
    return t;
}

static void test_samplers(nn_ctx *ctx) {
    nn_space *sp = parse_space(ctx, SPACE, "samplers: the space parses");
    if (!sp) return;
    /* random: inside every range, on the int step grid, inactive ones zero */
    nn_rng rng;
    nn_rng_seed(&rng, 7, 0);
    int ok = 1, seen_lo = 0, seen_hi = 0;
    int d = sp_find(sp, "model.D");
    for (int k = 0; k < 2000; k++) {
        double v[SP_MAX_PARAMS];
        unsigned char a[SP_MAX_PARAMS];
        sampler_propose(SAMPLER_RANDOM, sp, NULL, 0, &rng, v, a);
        for (int i = 0; i < sp->num_params; i++) {
            const sp_param *p = &sp->param[i];
            if (!a[i]) ok &= v[i] == 0;
            else if (p->kind == SP_INT || p->kind == SP_FLOAT) ok &= v[i] >= p->lo && v[i] <= p->hi;
            else if (p->kind == SP_CHOICE) ok &= v[i] >= 0 && v[i] < p->num_choices;
        }
        ok &= fmod(v[d] - 1, 4) == 0;
        seen_lo |= v[d] == 1;
        seen_hi |= v[d] == 9;
    }
    check(ok && seen_lo && seen_hi, "random: values inside their ranges and steps, both ends drawn", "%s", "");
    /* grid: every point once, then done */
    static const char *const GRID = "[search]\nmodel = m\n[o]\nk = choice a b c\n"
                                    "x = float 1 100 log if k in a,b\nn = int 1 2\n";
    nn_space *g = parse_space(ctx, GRID, "grid: its space parses");
    if (g) {
        trial t[64];
        int n = 0, done = 0;
        while (n < 64 && !(done = sampler_propose(SAMPLER_GRID, g, t, n, &rng, t[n].value, t[n].active))) {
            double v[SP_MAX_PARAMS];
            memcpy(v, t[n].value, sizeof v);
            t[n] = make_trial(g, n + 1, v, TRIAL_COMPLETE);
            n++;
        }
        /* k=a,b: 3 x-points x 2 n; k=c: x inactive, 2 n: 12 + 2 */
        int mid = 0;
        for (int i = 0; i < n; i++) mid |= fabs(t[i].value[1] - 10) < 1e-6;
        check(done && n == 14 && mid, "grid: 14 distinct points (inactive x not multiplied), then done",
              "%d points", n);
        sp_free(g);
    }
    sp_free(sp);
}

/* TPE against random search on a known function of a small space: the best
 * of 40 trials, averaged over seeds, is closer to the optimum. */
static void test_tpe(nn_ctx *ctx) {
    static const char *const TEXT =
        "[search]\nmodel = m\n[o]\nx = float 0.001 1 log\ny = float -5 5\nk = choice a b c d\n";
    nn_space *sp = parse_space(ctx, TEXT, "tpe: its space parses");
    if (!sp) return;
    double gap[2] = {0, 0};
    for (int kind = 0; kind < 2; kind++)
        for (uint64_t seed = 1; seed <= 8; seed++) {
            trial t[40];
            double best = -INFINITY;
            for (int n = 0; n < 40; n++) {
                nn_rng rng;
                nn_rng_seed(&rng, seed, 1000 + (uint64_t)n);
                double v[SP_MAX_PARAMS];
                unsigned char a[SP_MAX_PARAMS];
                sampler_propose(kind ? SAMPLER_TPE : SAMPLER_RANDOM, sp, t, n, &rng, v, a);
                t[n] = make_trial(sp, n + 1, v, TRIAL_COMPLETE);
                /* optimum 1 at x = 0.03, y = 1.5, k = c */
                double lx = log10(v[0] / 0.03), f = 1 - 0.3 * lx * lx - 0.05 * (v[1] - 1.5) * (v[1] - 1.5) -
                                                    (v[2] == 2 ? 0 : 0.3);
                t[n].metric[M_VAL_ACCURACY] = f;
                if (f > best) best = f;
            }
            gap[kind] += (1 - best) / 8;
        }
    check(gap[1] < 0.7 * gap[0], "tpe: closer to the optimum than random search after 40 trials",
          "mean gap tpe %.4f, random %.4f", gap[1], gap[0]);
    sp_free(sp);
}

/* NSGA-II against random search on a two-objective problem (ZDT1-like: the
 * front is y = 0.5 for every x): the first front after 100 trials lies
 * closer to the true one. */
static void test_nsga2(nn_ctx *ctx) {
    static const char *const TEXT = "[search]\nmodel = m\nobjectives = minimize params, minimize flops\n"
                                    "[o]\nx = float 0 1\ny = float 0 1\nz = float 0 1\n";
    nn_space *sp = parse_space(ctx, TEXT, "nsga2: its space parses");
    if (!sp) return;
    double dist[2] = {0, 0};
    int in_range = 1;
    for (int kind = 0; kind < 2; kind++)
        for (uint64_t seed = 1; seed <= 6; seed++) {
            trial t[100];
            for (int n = 0; n < 100; n++) {
                nn_rng rng;
                nn_rng_seed(&rng, seed, 1000 + (uint64_t)n);
                double v[SP_MAX_PARAMS];
                unsigned char a[SP_MAX_PARAMS];
                sampler_propose(kind ? SAMPLER_NSGA2 : SAMPLER_RANDOM, sp, t, n, &rng, v, a);
                for (int i = 0; i < 3; i++) in_range &= v[i] >= 0 && v[i] <= 1;
                t[n] = make_trial(sp, n + 1, v, TRIAL_COMPLETE);
                double g = 1 + 9 * ((v[1] - 0.5) * (v[1] - 0.5) + (v[2] - 0.5) * (v[2] - 0.5));
                t[n].metric[M_PARAMS] = v[0];
                t[n].metric[M_FLOPS] = g * (1 - sqrt(v[0] / g));
            }
            double obj[200];
            int rank[100], k = 0;
            double sum = 0;
            for (int n = 0; n < 100; n++) trial_objectives(sp, &t[n], obj + 2 * n);
            pareto_ranks(obj, 100, 2, rank);
            for (int n = 0; n < 100; n++)
                if (rank[n] == 0) {
                    sum += (t[n].value[1] - 0.5) * (t[n].value[1] - 0.5) +
                           (t[n].value[2] - 0.5) * (t[n].value[2] - 0.5);
                    k++;
                }
            dist[kind] += sum / k / 6;
        }
    check(in_range && dist[1] < 0.7 * dist[0],
          "nsga2: its first front closer to the true Pareto front than random search's",
          "mean squared distance nsga2 %.4f, random %.4f", dist[1], dist[0]);
    sp_free(sp);
}

static void test_pruners(nn_ctx *ctx) {
    nn_space *sp = parse_space(ctx, "[search]\nmodel = m\n[o]\nx = float 0 1\n", "pruners: space");
    if (!sp) return;
    /* five trials with curves over 9 epochs: accuracies 0.5 .. 0.9 */
    trial t[6];
    double acc[6][9];
    for (int i = 0; i < 6; i++) {
        double v[1] = {0};
        t[i] = make_trial(sp, i + 1, v, i < 5 ? TRIAL_COMPLETE : TRIAL_RUNNING);
        for (int e = 0; e < 9; e++) acc[i][e] = 0.5 + 0.1 * i + 0.001 * e;
        t[i].val_accuracy = acc[i];
        t[i].epochs = i < 5 ? 9 : 1;
    }
    pruner_cfg asha = {PRUNER_ASHA, 1, 9, 3, 5};
    /* the new trial (6) at epoch 1: best so far, kept; made the worst, pruned */
    int keep_best = !pruner_should_stop(&asha, &t[5], t, 6);
    acc[5][0] = 0.55;
    int prune_low = pruner_should_stop(&asha, &t[5], t, 6);
    /* epoch 2 is no rung: no decision */
    t[5].epochs = 2;
    acc[5][1] = 0.1;
    int no_rung = !pruner_should_stop(&asha, &t[5], t, 6);
    /* epoch 3 is a rung: with 6 trials, the best 2 go on */
    t[5].epochs = 3;
    acc[5][2] = 0.75; /* third best of 6 */
    int third = pruner_should_stop(&asha, &t[5], t, 6);
    acc[5][2] = 0.95;
    int first = !pruner_should_stop(&asha, &t[5], t, 6);
    check(keep_best && prune_low && no_rung && third && first,
          "asha: rungs at 1, 3, 9 epochs; the best 1/eta go on", "%d %d %d %d %d", keep_best,
          prune_low, no_rung, third, first);
    /* median: below the median of the others at the same epoch */
    pruner_cfg med = {PRUNER_MEDIAN, 1, 9, 3, 5};
    t[5].epochs = 2;
    acc[5][1] = 0.69;
    int below = pruner_should_stop(&med, &t[5], t, 6);
    acc[5][1] = 0.71;
    int above = !pruner_should_stop(&med, &t[5], t, 6);
    med.startup = 6; /* too few others: never */
    acc[5][1] = 0.1;
    int startup = !pruner_should_stop(&med, &t[5], t, 6);
    check(below && above && startup, "median: prune below the others' median, after the startup",
          "%d %d %d", below, above, startup);
    /* hyperband: several brackets used, each trial always in the same one */
    pruner_cfg hb = {PRUNER_HYPERBAND, 1, 27, 3, 0};
    int count[8] = {0}, stable = 1;
    for (int64_t id = 1; id <= 300; id++) {
        int b = pruner_bracket(&hb, id);
        if (b >= 0 && b < 8) count[b]++;
        stable &= b == pruner_bracket(&hb, id);
    }
    check(stable && count[0] > count[1] && count[1] > count[2] && count[2] > count[3] &&
              count[3] > 0 && count[4] == 0,
          "hyperband: 4 brackets for 1..27 epochs, more trials where the first rung is early",
          "%d %d %d %d %d", count[0], count[1], count[2], count[3], count[4]);
    sp_free(sp);
}

static void test_pareto(void) {
    /* minimize both: (1,5) (2,2) (5,1) front; (3,3) second; (4,4) third */
    double obj[] = {1, 5, 3, 3, 2, 2, 4, 4, 5, 1, 2, 2};
    int rank[6];
    pareto_ranks(obj, 6, 2, rank);
    check(rank[0] == 0 && rank[2] == 0 && rank[4] == 0 && rank[5] == 0 && rank[1] == 1 &&
              rank[3] == 2,
          "pareto: fronts peeled in order, equal points share a front", "%d %d %d %d %d %d",
          rank[0], rank[1], rank[2], rank[3], rank[4], rank[5]);
}

static void test_study(nn_ctx *ctx) {
    nn_space *sp = parse_space(ctx, SPACE, "study: the space parses");
    if (!sp) return;
    char path[256];
    snprintf(path, sizeof path, "%s/test_search_%ld.study", NN_BINARY_DIR, (long)getpid());
    unlink(path);
    nn_study *s = NULL;
    nn_status st = study_open(ctx, path, sp, &s);
    check(st == NN_OK, "study: created", "%s", ctx_err(ctx, st));
    if (st) {
        sp_free(sp);
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 3, 0);
    double v[SP_MAX_PARAMS];
    unsigned char a[SP_MAX_PARAMS];
    sampler_propose(SAMPLER_RANDOM, sp, NULL, 0, &rng, v, a);
    int64_t id = 0;
    double metric[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) metric[m] = m == M_VAL_ACCURACY ? 0.9 : m == M_LATENCY_MS ? 0.2 : NAN;
    st = study_begin(s);
    if (!st) st = study_insert(s, v, a, 2, &id);
    if (!st) st = study_commit(s);
    if (!st) st = study_epoch(s, id, 1, 0.5, 1.5, 10);
    if (!st) st = study_epoch(s, id, 2, 0.9, 0.5, 20);
    if (!st) st = study_metrics(s, id, metric);
    if (!st) st = study_test_accuracy(s, id, 0.88);
    if (!st) st = study_finish(s, id, TRIAL_COMPLETE, NULL);
    check(st == NN_OK && id == 1, "study: a trial inserted, its epochs, metrics and state recorded",
          "%s", ctx_err(ctx, st));
    trial *t = NULL;
    int n = 0;
    st = study_load(s, &t, &n);
    int same = st == NN_OK && n == 1;
    for (int i = 0; same && i < sp->num_params; i++) {
        same &= t[0].active[i] == a[i];
        if (a[i]) same &= fabs(t[0].value[i] - v[i]) <= 1e-5 * fmax(1, fabs(v[i]));
    }
    check(same && t[0].state == TRIAL_COMPLETE && t[0].bracket == 2 && t[0].epochs == 2 &&
              t[0].val_accuracy[1] == 0.9 && t[0].val_loss[0] == 1.5 &&
              t[0].metric[M_LATENCY_MS] == 0.2 && isnan(t[0].metric[M_PARAMS]) &&
              t[0].test_accuracy == 0.88 && t[0].pid == (long)getpid(),
          "study: loads back the values, curve, metrics and owner", "%s", ctx_err(ctx, st));
    check(n == 1 && !study_owner_gone(&t[0], 1), "study: this process's trial is not orphaned", "%s", "");
    study_trials_free(t, n);
    study_close(s);
    /* another space: refused */
    nn_space *other = parse_space(ctx, "[search]\nmodel = m\n[o]\nx = float 0 1\n", "study: other space");
    s = NULL;
    nn_ctx_clear_error(ctx);
    st = study_open(ctx, path, other, &s);
    check(st != NN_OK && strstr(nn_ctx_error(ctx), "another search space"),
          "study: a study made with another space is refused", "%s", nn_ctx_error(ctx));
    study_close(s);
    sp_free(other);
    /* two processes adding 40 trials each at once: 81 trials, ids distinct */
    pid_t kid[2];
    for (int k = 0; k < 2; k++) {
        kid[k] = fork();
        if (kid[k] == 0) {
            nn_ctx *c = nn_ctx_new(1);
            nn_study *ks = NULL;
            if (!c || study_open(c, path, sp, &ks)) _exit(1);
            for (int i = 0; i < 40; i++) {
                int64_t kid_id;
                trial *all = NULL;
                int na = 0;
                if (study_begin(ks) || study_load(ks, &all, &na) ||
                    study_insert(ks, v, a, 0, &kid_id) || study_commit(ks))
                    _exit(2);
                study_trials_free(all, na);
            }
            study_close(ks);
            nn_ctx_free(c);
            _exit(0);
        }
    }
    int kids_ok = 1;
    for (int k = 0; k < 2; k++) {
        int status;
        kids_ok &= kid[k] > 0 && waitpid(kid[k], &status, 0) == kid[k] && WIFEXITED(status) &&
                   WEXITSTATUS(status) == 0;
    }
    s = NULL;
    t = NULL;
    n = 0;
    int distinct = 1;
    if (!study_open(ctx, path, sp, &s) && !study_load(s, &t, &n))
        for (int i = 1; i < n; i++) distinct &= t[i].id > t[i - 1].id;
    check(kids_ok && n == 81 && distinct, "study: two processes adding trials at once: 81, ids distinct",
          "%d trials", n);
    study_trials_free(t, n);
    study_close(s);
    unlink(path);
    sp_free(sp);
}

int main(void) {
    nn_ctx *ctx = test_ctx_new(1);
    if (!ctx) return 2;
    test_space_file(ctx);
    test_bad_spaces(ctx);
    test_samplers(ctx);
    test_tpe(ctx);
    test_nsga2(ctx);
    test_pruners(ctx);
    test_pareto();
    test_study(ctx);
    nn_ctx_free(ctx);
    return test_summary();
}
