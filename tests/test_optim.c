/*
 * test_optim.c - the optimizer family (SGD, Adam, AdamW, RMSprop, Adagrad),
 * gradient clipping and optimizer checkpoints.
 *
 * Parity: scripts/make_optim_fixtures.py ran 30 steps of a tiny CNN with each
 * torch.optim optimizer (PyTorch 1.13, float32, one thread, single-tensor
 * path) for ten option combinations, and stored per-step losses, final
 * parameter statistics and final optimizer-state statistics in
 * tests/fixtures/optim_<case>.txt. Weights and data are not stored: both sides
 * derive them from the exact uint32 hash of scripts/make_parity_fixture.py.
 * Each case runs with 1 and 2 threads; the two runs must agree within 1e-6.
 *
 * Bit-exactness: optim_bitexact.txt holds hashes of the bits torch produced
 * for 5 steps on one flat tensor with given gradients; Adam, AdamW, RMSprop
 * and Adagrad must reproduce them exactly with both copies of their loops
 * (FMA instructions and portable), SGD (not fused like torch) within 1e-6.
 *
 * Also: nn_optim_defaults against torch's constructor defaults
 * (optim_defaults.txt), names, rejected configs, state buffer names,
 * nn_optim_set_lr, a double-precision reference twin of every update rule,
 * bit-identical steps for 1 and 2 threads on a large buffer, nn_clip_grad_norm
 * against hand computations, and checkpoint save/load/resume of every kind.
 */
#include "nnopt.h"
#include "test_util.h"

#include <stddef.h>

#define FIXTURE_DIR NN_SOURCE_DIR "/tests/fixtures/"

enum { STEPS = 30, BATCH = 16, SIDE = 8, PIXELS = SIDE * SIDE, NUM_BATCHES = 4 };
enum { NUM_TENSORS = 4, NUM_FIRST = 4, MAX_STATE_LINES = 16 };
enum { DATA_STREAM = 1000, LABEL_STREAM = 2000 };

/* Tolerances of the parity comparison. Sums are compared relative to the
 * tensor's abssum because a sum may be near 0. */
static const double LOSS_RTOL = 1e-4;
static const double SUM_TOL = 1e-5;
static const double ABSSUM_RTOL = 1e-5;
static const double FIRST_RTOL = 1e-4, FIRST_ATOL = 1e-6;
static const double THREADS_TOL = 1e-6;

static const char *const MODEL_TEXT = "input shape=1x8x8\n"
                                      "conv2d name=conv1 out=4 kernel=3 pad=1\n"
                                      "relu\n"
                                      "maxpool size=2\n"
                                      "flatten\n"
                                      "linear name=fc1 out=10\n"
                                      "softmax_ce\n";

/* Parameter tensors in hash-stream order: tensor i uses stream i + 1. */
static const char *const PARAM_NAMES[NUM_TENSORS] = {"conv1.weight", "conv1.bias",
                                                     "fc1.weight", "fc1.bias"};

/* tests/fixtures/optim_<case>.txt */
static const char *const CASES[] = {"sgd_nesterov",
                                    "sgd_dampening_wd",
                                    "adam",
                                    "adam_amsgrad_wd",
                                    "adamw",
                                    "adamw_amsgrad",
                                    "rmsprop",
                                    "rmsprop_centered_momentum_wd",
                                    "adagrad",
                                    "adagrad_decay_wd_init"};
enum { NUM_CASES = (int)(sizeof CASES / sizeof CASES[0]) };

/* ------------------------------------------------------------ config fields */

typedef struct {
    const char *name;
    size_t offset;
    int is_int;
} field_desc;

#define FLOAT_FIELD(f) {#f, offsetof(nn_optim_config, f), 0}
#define INT_FIELD(f) {#f, offsetof(nn_optim_config, f), 1}
static const field_desc FIELDS[] = {
    FLOAT_FIELD(lr),       FLOAT_FIELD(momentum), FLOAT_FIELD(dampening),
    FLOAT_FIELD(weight_decay), INT_FIELD(nesterov), FLOAT_FIELD(beta1),
    FLOAT_FIELD(beta2),    FLOAT_FIELD(eps),      INT_FIELD(amsgrad),
    FLOAT_FIELD(alpha),    INT_FIELD(centered),   FLOAT_FIELD(lr_decay),
    FLOAT_FIELD(initial_accumulator_value)};
enum { NUM_FIELDS = (int)(sizeof FIELDS / sizeof FIELDS[0]) };

/* The fields each kind uses, as the checkpoint metadata and the fixtures list
 * them. */
static const char *const KIND_FIELDS[NN_OPTIM_COUNT][7] = {
    {"lr", "momentum", "dampening", "weight_decay", "nesterov", NULL},
    {"lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", NULL},
    {"lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", NULL},
    {"lr", "alpha", "eps", "weight_decay", "momentum", "centered", NULL},
    {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", NULL}};

static const field_desc *find_field(const char *name) {
    for (int i = 0; i < NUM_FIELDS; i++)
        if (strcmp(FIELDS[i].name, name) == 0) return &FIELDS[i];
    return NULL;
}

static float *field_float(nn_optim_config *c, const field_desc *f) {
    return (float *)((char *)c + f->offset);
}

static int *field_int(nn_optim_config *c, const field_desc *f) {
    return (int *)((char *)c + f->offset);
}

/* Sets the named field from text; 0 if the name or the value is bad. */
static int set_field(nn_optim_config *c, const char *name, const char *val) {
    const field_desc *f = find_field(name);
    char *end;
    if (!f || !*val) return 0;
    errno = 0;
    if (f->is_int) {
        long v = strtol(val, &end, 10);
        if (*end || errno) return 0;
        *field_int(c, f) = (int)v;
    } else {
        float v = strtof(val, &end);
        if (*end || errno) return 0;
        *field_float(c, f) = v;
    }
    return 1;
}

/* "<kind> key=value ..." into *c, starting from nn_optim_defaults(kind).
 * Returns 0 and prints where on a malformed line. */
static int parse_config(const char *text, nn_optim_config *c, const char *where) {
    char kind[32];
    int off = 0;
    if (sscanf(text, "%31s%n", kind, &off) != 1 || nn_optim_kind_from_name(kind) < 0) {
        printf("%s: unknown optimizer in '%s'\n", where, text);
        return 0;
    }
    *c = nn_optim_defaults((nn_optim_kind)nn_optim_kind_from_name(kind));
    const char *p = text + off;
    char tok[96];
    int n;
    while (sscanf(p, "%95s%n", tok, &n) == 1) {
        p += n;
        char *eq = strchr(tok, '=');
        if (!eq) {
            printf("%s: '%s' is not key=value\n", where, tok);
            return 0;
        }
        *eq = '\0';
        if (!set_field(c, tok, eq + 1)) {
            printf("%s: bad field '%s=%s'\n", where, tok, eq + 1);
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------ hash data */

/* Step t's batch. x: (BATCH, 1, 8, 8) normalized; labels: (BATCH). */
static void make_batch(int t, float *x, int32_t *labels) {
    const uint32_t b = (uint32_t)(t % NUM_BATCHES);
    for (uint32_t i = 0; i < (uint32_t)(BATCH * PIXELS); i++) {
        float byte = (float)(hash_value(DATA_STREAM + b, i) >> 24);
        x[i] = (byte / 255.0f - 0.2860f) / 0.3530f;
    }
    for (uint32_t j = 0; j < BATCH; j++)
        labels[j] = (int32_t)(hash_value(LABEL_STREAM + b, j) % 10U);
}

/* ------------------------------------------------------------ fixture */

typedef struct {
    char name[64];
    long numel;
    double sum, abssum;
    double first[NUM_FIRST];
} param_stats;

typedef struct {
    char state[32];
    char param[64];
    long numel;
    double sum, abssum;
} state_stats;

typedef struct {
    char path[256];
    nn_optim_config cfg;
    int have_cfg;
    param_stats init[NUM_TENSORS], final[NUM_TENSORS];
    int n_init, n_final;
    double loss[STEPS];
    int have_loss[STEPS];
    double data_xsum;
    int data_labels[BATCH];
    int have_data;
    state_stats states[MAX_STATE_LINES];
    int n_states;
    long steps; /* -1 if the fixture has no steps line */
} fixture;

static int parse_stats(const char *rest, param_stats *p) {
    return sscanf(rest, "%63s %ld %lf %lf %lf %lf %lf %lf", p->name, &p->numel, &p->sum,
                  &p->abssum, &p->first[0], &p->first[1], &p->first[2], &p->first[3]) == 8;
}

static int parse_data(const char *rest, fixture *fx) {
    char *end;
    if (strtol(rest, &end, 10) != 0 || end == rest) return 0;
    fx->data_xsum = strtod(end, &end);
    for (int j = 0; j < BATCH; j++) {
        const char *start = end;
        fx->data_labels[j] = (int)strtol(start, &end, 10);
        if (end == start) return 0;
    }
    return 1;
}

/* Reads a fixture; returns 0 and prints path:line on a malformed line. */
static int fixture_load(const char *path, fixture *fx) {
    memset(fx, 0, sizeof *fx);
    fx->steps = -1;
    snprintf(fx->path, sizeof fx->path, "%s", path);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%s: cannot open fixture (run scripts/make_optim_fixtures.py)\n", path);
        return 0;
    }
    char line[512], where[300];
    int lineno = 0, ok = 1;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        line[strcspn(line, "\n")] = '\0';
        int t;
        double v;
        if (line[0] == '#' || line[0] == '\0') continue;
        if (strncmp(line, "config ", 7) == 0) {
            ok = fx->have_cfg = parse_config(line + 7, &fx->cfg, where);
        } else if (strncmp(line, "init ", 5) == 0) {
            ok = fx->n_init < NUM_TENSORS && parse_stats(line + 5, &fx->init[fx->n_init++]);
        } else if (strncmp(line, "param ", 6) == 0) {
            ok = fx->n_final < NUM_TENSORS && parse_stats(line + 6, &fx->final[fx->n_final++]);
        } else if (strncmp(line, "data ", 5) == 0) {
            ok = fx->have_data = parse_data(line + 5, fx);
        } else if (sscanf(line, "loss %d %lf", &t, &v) == 2) {
            ok = t >= 0 && t < STEPS;
            if (ok) fx->loss[t] = v, fx->have_loss[t] = 1;
        } else if (strncmp(line, "state ", 6) == 0) {
            state_stats *s = &fx->states[fx->n_states];
            ok = fx->n_states < MAX_STATE_LINES &&
                 sscanf(line + 6, "%31s %63s %ld %lf %lf", s->state, s->param, &s->numel, &s->sum,
                        &s->abssum) == 5;
            fx->n_states++;
        } else if (sscanf(line, "steps %ld", &fx->steps) == 1) {
            ok = fx->steps >= 0;
        } else {
            ok = 0;
        }
        if (!ok) printf("%s: malformed fixture line: %s\n", where, line);
    }
    fclose(f);
    if (!ok) return 0;
    for (int t = 0; t < STEPS; t++) {
        if (!fx->have_loss[t]) {
            printf("%s: no loss line for step %d\n", path, t);
            return 0;
        }
    }
    if (!fx->have_cfg || !fx->have_data || fx->n_init != NUM_TENSORS ||
        fx->n_final != NUM_TENSORS) {
        printf("%s: expected a config line, a data line, %d init and %d param lines\n", path,
               NUM_TENSORS, NUM_TENSORS);
        return 0;
    }
    return 1;
}

static const param_stats *find_stats(const param_stats *list, const char *name) {
    for (int i = 0; i < NUM_TENSORS; i++)
        if (strcmp(list[i].name, name) == 0) return &list[i];
    return NULL;
}

static void sums(const float *p, size_t n, double *sum, double *abssum) {
    double s = 0.0, a = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += p[i];
        a += fabs(p[i]);
    }
    *sum = s;
    *abssum = a;
}

/* ------------------------------------------------------------ the tiny CNN */

/* The tiny CNN planned for BATCH with its hash-derived weights, or NULL. */
static nn_net *tiny_net(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, MODEL_TEXT, "test_optim:model", &net);
    if (st == NN_OK) st = nn_net_plan(net, BATCH);
    if (st != NN_OK || nn_net_num_param_tensors(net) != NUM_TENSORS) {
        check(0, "build the tiny CNN", "%s", ctx_err(ctx, st));
        nn_net_free(net);
        return NULL;
    }
    float *params = nn_net_params(net);
    for (int s = 0; s < NUM_TENSORS; s++) {
        const nn_param_info *info = nn_net_param_info(net, nn_net_find_param(net, PARAM_NAMES[s]));
        float bound = (float)(1.0 / sqrt((double)info->fan_in));
        float *p = params + info->offset;
        for (size_t i = 0; i < info->numel; i++)
            p[i] = (2.0f * hash_uniform((uint32_t)s + 1U, (uint32_t)i) - 1.0f) * bound;
    }
    return net;
}

/* One training step on step t's batch; returns the loss (NaN on failure). */
static float train_step(nn_net *net, nn_optimizer *opt, nn_ctx *ctx, int t) {
    float x[BATCH * PIXELS]; /* (BATCH, 1, 8, 8) */
    int32_t labels[BATCH];
    float loss = NAN;
    make_batch(t, x, labels);
    nn_net_zero_grad(net);
    nn_status st = nn_net_forward(net, x, labels, BATCH, &loss);
    if (st == NN_OK) st = nn_net_backward(net);
    if (st != NN_OK) {
        check(0, "training step", "%s", nn_ctx_error(ctx));
        return NAN;
    }
    nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
    return loss;
}

/* ------------------------------------------------------------ parity */

/* Largest errors of one run against its fixture. */
typedef struct {
    double loss;      /* |loss - ref| / |ref| */
    double sum;       /* |sum - ref| / ref abssum, parameters */
    double abssum;    /* |abssum - ref| / ref abssum, parameters */
    double first;     /* |v - ref| / |ref|, first values */
    double st_sum;    /* the same two for the state buffers */
    double st_abssum;
} run_errors;

typedef struct {
    double loss[STEPS];
    float *params; /* final flat parameters, owned */
    size_t n;
} run_result;

/* Compares a tensor with a fixture line; updates *e_sum, *e_abs. */
static int stats_close(const float *p, size_t numel, double ref_sum, double ref_abssum,
                       double *e_sum, double *e_abs) {
    double s, a;
    sums(p, numel, &s, &a);
    double es = fabs(s - ref_sum) / ref_abssum, ea = fabs(a - ref_abssum) / ref_abssum;
    if (ref_abssum == 0.0) es = s == 0.0 ? 0.0 : INFINITY, ea = a == 0.0 ? 0.0 : INFINITY;
    *e_sum = fmax(*e_sum, es);
    *e_abs = fmax(*e_abs, ea);
    return es <= SUM_TOL && ea <= ABSSUM_RTOL;
}

/* Runs a fixture's 30 steps with `threads` threads and compares. */
static void run_case(const char *name, const fixture *fx, int threads, run_errors *err,
                     run_result *res) {
    memset(err, 0, sizeof *err);
    memset(res, 0, sizeof *res);
    char label[96];
    snprintf(label, sizeof label, "%s, %d thread(s)", name, threads);
    nn_ctx *ctx = test_ctx_new(threads);
    nn_net *net = ctx ? tiny_net(ctx) : NULL;
    nn_optimizer *opt = NULL;
    if (!net) goto out;

    /* regenerated weights and step 0's batch match the fixture */
    int init_ok = 1;
    for (int s = 0; s < NUM_TENSORS; s++) {
        const nn_param_info *info = nn_net_param_info(net, nn_net_find_param(net, PARAM_NAMES[s]));
        const param_stats *ref = find_stats(fx->init, PARAM_NAMES[s]);
        double es = 0.0, ea = 0.0;
        init_ok &= ref && (long)info->numel == ref->numel;
        if (ref) {
            stats_close(nn_net_params(net) + info->offset, info->numel, ref->sum, ref->abssum, &es,
                        &ea);
            init_ok &= es <= 1e-8 && ea <= 1e-8;
        }
    }
    {
        float x[BATCH * PIXELS];
        int32_t y[BATCH];
        double xsum = 0.0;
        make_batch(0, x, y);
        for (int i = 0; i < BATCH * PIXELS; i++) xsum += x[i];
        init_ok &= fabs(xsum - fx->data_xsum) <= 1e-9 * fabs(fx->data_xsum) + 1e-6;
        for (int j = 0; j < BATCH; j++) init_ok &= y[j] == fx->data_labels[j];
    }
    if (!init_ok) {
        check(0, label, "regenerated weights or data differ from the fixture's init/data lines");
        goto out;
    }

    nn_status st = nn_optim_new(ctx, &fx->cfg, nn_net_num_params(net), &opt);
    if (st != NN_OK) {
        check(0, label, "nn_optim_new: %s", nn_ctx_error(ctx));
        goto out;
    }
    int loss_ok = 1, worst = 0;
    for (int t = 0; t < STEPS; t++) {
        res->loss[t] = train_step(net, opt, ctx, t);
        double rel = fabs(res->loss[t] - fx->loss[t]) / fabs(fx->loss[t]);
        if (!(rel <= err->loss)) err->loss = rel, worst = t; /* NaN lands here too */
        loss_ok &= rel <= LOSS_RTOL;
    }
    char what[160];
    snprintf(what, sizeof what, "%s: %d losses within %.0e of torch", label, STEPS, LOSS_RTOL);
    check(loss_ok, what, "max rel err %.3g at step %d (%.7f vs %.7f)", err->loss, worst,
          res->loss[worst], fx->loss[worst]);

    /* final parameters */
    const float *params = nn_net_params(net);
    int param_ok = 1;
    for (int s = 0; s < NUM_TENSORS; s++) {
        const nn_param_info *info = nn_net_param_info(net, nn_net_find_param(net, PARAM_NAMES[s]));
        const param_stats *ref = find_stats(fx->final, PARAM_NAMES[s]);
        if (!ref) {
            param_ok = 0;
            continue;
        }
        const float *p = params + info->offset;
        param_ok &= stats_close(p, info->numel, ref->sum, ref->abssum, &err->sum, &err->abssum);
        for (int k = 0; k < NUM_FIRST; k++) {
            double d = fabs(p[k] - ref->first[k]), rel = d / fabs(ref->first[k]);
            if (!(rel <= err->first)) err->first = rel;
            param_ok &= d <= FIRST_ATOL || rel <= FIRST_RTOL;
        }
    }
    snprintf(what, sizeof what, "%s: final parameters match torch", label);
    check(param_ok, what, "max |sum err|/abssum %.3g, abssum rel %.3g, first values rel %.3g",
          err->sum, err->abssum, err->first);

    /* final optimizer state: names in torch's state_dict order, then values */
    const char *torch_names[MAX_STATE_LINES];
    int nt = 0;
    for (int i = 0; i < fx->n_states && !strcmp(fx->states[i].param, fx->states[0].param); i++)
        torch_names[nt++] = fx->states[i].state;
    int names_ok = nn_optim_num_states(opt) == nt;
    for (int i = 0; names_ok && i < nt; i++) {
        const char *sn = NULL;
        names_ok = nn_optim_state(opt, i, &sn) && sn && !strcmp(sn, torch_names[i]);
    }
    snprintf(what, sizeof what, "%s: state buffers are torch's (%d)", label, nt);
    check(names_ok && fx->n_states == nt * NUM_TENSORS, what, "nnopt has %d",
          nn_optim_num_states(opt));
    int state_ok = names_ok;
    for (int i = 0; names_ok && i < fx->n_states; i++) {
        const state_stats *ss = &fx->states[i];
        int pi = nn_net_find_param(net, ss->param), si = -1;
        for (int k = 0; k < nt; k++)
            if (!strcmp(torch_names[k], ss->state)) si = k;
        if (pi < 0 || si < 0) {
            state_ok = 0;
            continue;
        }
        const nn_param_info *info = nn_net_param_info(net, pi);
        const float *buf = nn_optim_state(opt, si, NULL) + info->offset;
        state_ok &= (long)info->numel == ss->numel &&
                    stats_close(buf, info->numel, ss->sum, ss->abssum, &err->st_sum,
                                &err->st_abssum);
    }
    snprintf(what, sizeof what, "%s: final optimizer state matches torch", label);
    check(state_ok, what, "max |sum err|/abssum %.3g, abssum rel %.3g", err->st_sum,
          err->st_abssum);
    snprintf(what, sizeof what, "%s: nn_optim_steps is %d", label, STEPS);
    check(nn_optim_steps(opt) == STEPS && (fx->steps < 0 || fx->steps == STEPS), what,
          fx->steps < 0 ? "%lld (torch's state has no step)" : "%lld (torch %ld)",
          (long long)nn_optim_steps(opt), fx->steps);

    res->n = nn_net_num_params(net);
    res->params = xmalloc(res->n * sizeof(float));
    memcpy(res->params, params, res->n * sizeof(float));
out:
    nn_optim_free(opt);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static void test_parity(void) {
    printf("-- parity with torch.optim (fixtures in tests/fixtures/optim_*.txt)\n");
    run_errors summary[NUM_CASES];
    for (int c = 0; c < NUM_CASES; c++) {
        char path[300];
        fixture fx;
        snprintf(path, sizeof path, FIXTURE_DIR "optim_%s.txt", CASES[c]);
        memset(&summary[c], 0, sizeof summary[c]);
        if (!fixture_load(path, &fx)) {
            check(0, CASES[c], "fixture %s unreadable", path);
            continue;
        }
        run_errors e1, e2;
        run_result r1, r2;
        run_case(CASES[c], &fx, 1, &e1, &r1);
        run_case(CASES[c], &fx, 2, &e2, &r2);
        double dl = 0.0, dp = 0.0;
        if (r1.params && r2.params && r1.n == r2.n) {
            for (int t = 0; t < STEPS; t++) dl = fmax(dl, fabs(r1.loss[t] - r2.loss[t]));
            for (size_t i = 0; i < r1.n; i++)
                dp = fmax(dp, fabs((double)r1.params[i] - r2.params[i]));
        } else {
            dl = dp = INFINITY;
        }
        char what[128];
        snprintf(what, sizeof what, "%s: 1 and 2 threads agree within %.0e", CASES[c],
                 THREADS_TOL);
        check(dl <= THREADS_TOL && dp <= THREADS_TOL, what,
              "max |loss diff| %.3g, |param diff| %.3g", dl, dp);
        free(r1.params);
        free(r2.params);
        summary[c].loss = fmax(e1.loss, e2.loss);
        summary[c].sum = fmax(e1.sum, e2.sum);
        summary[c].abssum = fmax(e1.abssum, e2.abssum);
        summary[c].first = fmax(e1.first, e2.first);
        summary[c].st_sum = fmax(e1.st_sum, e2.st_sum);
        summary[c].st_abssum = fmax(e1.st_abssum, e2.st_abssum);
    }
    printf("%-30s %10s %10s %10s %10s %10s %10s\n", "case (max over 1, 2 threads)", "loss rel",
           "p sum", "p abssum", "p first", "st sum", "st abssum");
    for (int c = 0; c < NUM_CASES; c++)
        printf("%-30s %10.2e %10.2e %10.2e %10.2e %10.2e %10.2e\n", CASES[c], summary[c].loss,
               summary[c].sum, summary[c].abssum, summary[c].first, summary[c].st_sum,
               summary[c].st_abssum);
}

/* ------------------------------------------------------------ names, defaults */

static void test_names_defaults(void) {
    printf("-- names and defaults\n");
    static const char *const names[NN_OPTIM_COUNT] = {"sgd", "adam", "adamw", "rmsprop",
                                                      "adagrad"};
    int ok = 1;
    for (int k = 0; k < NN_OPTIM_COUNT; k++) {
        const char *nm = nn_optim_name((nn_optim_kind)k);
        ok &= nm && !strcmp(nm, names[k]) && nn_optim_kind_from_name(names[k]) == k;
    }
    check(ok, "nn_optim_name / nn_optim_kind_from_name round trip", NULL);
    check(!nn_optim_name(NN_OPTIM_COUNT) && !nn_optim_name((nn_optim_kind)-1) &&
              nn_optim_kind_from_name("Adam") == -1 && nn_optim_kind_from_name("") == -1 &&
              nn_optim_kind_from_name("sgdx") == -1 && nn_optim_kind_from_name(NULL) == -1,
          "unknown kinds and names are rejected", NULL);

    const char *path = FIXTURE_DIR "optim_defaults.txt";
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, "open optim_defaults.txt", "%s", path);
        return;
    }
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "defaults ", 9) != 0) continue;
        nn_optim_config want;
        if (!parse_config(line + 9, &want, path)) {
            check(0, "parse optim_defaults.txt", "%s", line);
            continue;
        }
        /* parse_config started from nn_optim_defaults and overwrote the fields
         * torch lists; the result must equal nn_optim_defaults exactly. */
        nn_optim_config got = nn_optim_defaults(want.kind);
        char bad[256] = "";
        for (int i = 0; i < NUM_FIELDS; i++) {
            const field_desc *fd = &FIELDS[i];
            int same = fd->is_int ? *field_int(&got, fd) == *field_int(&want, fd)
                                  : *field_float(&got, fd) == *field_float(&want, fd);
            if (!same)
                snprintf(bad + strlen(bad), sizeof bad - strlen(bad), " %s", fd->name);
        }
        char what[96];
        snprintf(what, sizeof what, "nn_optim_defaults(%s) equals torch's defaults",
                 nn_optim_name(want.kind));
        check(!bad[0] && got.kind == want.kind, what, bad[0] ? "differs in%s" : NULL, bad);
        seen++;
    }
    fclose(f);
    check(seen == NN_OPTIM_COUNT, "optim_defaults.txt lists every kind", "%d", seen);
    nn_optim_config sgd = nn_optim_defaults(NN_OPTIM_SGD);
    check(sgd.lr == 0.01f && sgd.momentum == 0.0f && !sgd.nesterov,
          "SGD defaults: lr 0.01 (torch has none), momentum 0", NULL);
}

/* ------------------------------------------------------------ validation */

static void test_invalid(void) {
    printf("-- invalid configurations\n");
    static const struct {
        nn_optim_kind kind;
        const char *field, *val, *also, *also_val; /* optional second field */
        const char *expect;
    } bad[] = {
        {NN_OPTIM_SGD, "lr", "-0.1", NULL, NULL, "lr"},
        {NN_OPTIM_SGD, "lr", "nan", NULL, NULL, "lr"},
        {NN_OPTIM_SGD, "lr", "inf", NULL, NULL, "lr"},
        {NN_OPTIM_SGD, "momentum", "-0.5", NULL, NULL, "momentum"},
        {NN_OPTIM_SGD, "dampening", "1.5", NULL, NULL, "dampening"},
        {NN_OPTIM_SGD, "weight_decay", "-1e-4", NULL, NULL, "weight_decay"},
        {NN_OPTIM_SGD, "nesterov", "1", NULL, NULL, "nesterov"},
        {NN_OPTIM_SGD, "nesterov", "1", "momentum", "0.9", "nesterov"}, /* + dampening below */
        {NN_OPTIM_ADAM, "beta1", "1", NULL, NULL, "beta1"},
        {NN_OPTIM_ADAM, "beta1", "-0.1", NULL, NULL, "beta1"},
        {NN_OPTIM_ADAM, "beta2", "1.5", NULL, NULL, "beta2"},
        {NN_OPTIM_ADAM, "eps", "-1e-8", NULL, NULL, "eps"},
        {NN_OPTIM_ADAM, "lr", "-1e-3", NULL, NULL, "lr"},
        {NN_OPTIM_ADAMW, "weight_decay", "-0.01", NULL, NULL, "weight_decay"},
        {NN_OPTIM_ADAMW, "beta2", "nan", NULL, NULL, "beta2"},
        {NN_OPTIM_RMSPROP, "alpha", "1.01", NULL, NULL, "alpha"},
        {NN_OPTIM_RMSPROP, "alpha", "-0.5", NULL, NULL, "alpha"},
        {NN_OPTIM_RMSPROP, "momentum", "-0.9", NULL, NULL, "momentum"},
        {NN_OPTIM_RMSPROP, "eps", "inf", NULL, NULL, "eps"},
        {NN_OPTIM_ADAGRAD, "lr_decay", "-0.1", NULL, NULL, "lr_decay"},
        {NN_OPTIM_ADAGRAD, "initial_accumulator_value", "-1", NULL, NULL,
         "initial_accumulator_value"},
        {NN_OPTIM_ADAGRAD, "eps", "-1e-10", NULL, NULL, "eps"},
    };
    nn_ctx *ctx = test_ctx_new(1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nn_optim_config c = nn_optim_defaults(bad[i].kind);
        set_field(&c, bad[i].field, bad[i].val);
        if (bad[i].also) {
            set_field(&c, bad[i].also, bad[i].also_val);
            c.dampening = 0.1f; /* nesterov with momentum but dampening */
        }
        nn_optimizer *opt = (nn_optimizer *)&c; /* must be reset to NULL */
        nn_ctx_clear_error(ctx);
        nn_status s = nn_optim_new(ctx, &c, 100, &opt);
        const char *msg = nn_ctx_error(ctx);
        char what[128];
        snprintf(what, sizeof what, "reject %s %s=%s%s", nn_optim_name(bad[i].kind),
                 bad[i].field, bad[i].val, bad[i].also ? " (momentum 0.9, dampening 0.1)" : "");
        check(s == NN_EINVAL && opt == NULL && strstr(msg, bad[i].expect) &&
                  strstr(msg, nn_optim_name(bad[i].kind)),
              what, "%s", msg);
        if (s == NN_OK) nn_optim_free(opt);
    }
    nn_optim_config c = nn_optim_defaults(NN_OPTIM_ADAM);
    c.kind = (nn_optim_kind)42;
    nn_optimizer *opt = NULL;
    nn_status s = nn_optim_new(ctx, &c, 100, &opt);
    check(s == NN_EINVAL && !opt && strstr(nn_ctx_error(ctx), "kind 42"), "reject kind 42", "%s",
          nn_ctx_error(ctx));

    /* edges torch accepts, and fields the kind does not use */
    static const struct {
        nn_optim_kind kind;
        const char *field, *val;
    } good[] = {{NN_OPTIM_ADAM, "beta1", "0"},     {NN_OPTIM_ADAM, "beta2", "0"},
                {NN_OPTIM_ADAM, "eps", "0"},       {NN_OPTIM_RMSPROP, "alpha", "1"},
                {NN_OPTIM_RMSPROP, "alpha", "0"},  {NN_OPTIM_SGD, "dampening", "1"},
                {NN_OPTIM_SGD, "lr", "0"},         {NN_OPTIM_SGD, "beta1", "7"},
                {NN_OPTIM_SGD, "eps", "-1"},       {NN_OPTIM_ADAM, "momentum", "-1"},
                {NN_OPTIM_ADAGRAD, "alpha", "nan"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        nn_optim_config g = nn_optim_defaults(good[i].kind);
        set_field(&g, good[i].field, good[i].val);
        opt = NULL;
        s = nn_optim_new(ctx, &g, 0, &opt);
        char what[128];
        snprintf(what, sizeof what, "accept %s %s=%s", nn_optim_name(good[i].kind),
                 good[i].field, good[i].val);
        check(s == NN_OK && opt, what, "%s", ctx_err(ctx, s));
        nn_optim_free(opt);
    }
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ state names */

static void test_state_names(void) {
    printf("-- state buffers\n");
    static const struct {
        const char *config;
        const char *names[4];
    } cases[] = {
        {"sgd", {NULL}},
        {"sgd momentum=0.9", {"momentum_buffer", NULL}},
        {"adam", {"exp_avg", "exp_avg_sq", NULL}},
        {"adam amsgrad=1", {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", NULL}},
        {"adamw", {"exp_avg", "exp_avg_sq", NULL}},
        {"adamw amsgrad=1", {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", NULL}},
        {"rmsprop", {"square_avg", NULL}},
        {"rmsprop momentum=0.5", {"square_avg", "momentum_buffer", NULL}},
        {"rmsprop centered=1", {"square_avg", "grad_avg", NULL}},
        {"rmsprop momentum=0.5 centered=1", {"square_avg", "momentum_buffer", "grad_avg", NULL}},
        {"adagrad", {"sum", NULL}},
        {"adagrad initial_accumulator_value=0.25", {"sum", NULL}},
    };
    nn_ctx *ctx = test_ctx_new(1);
    const size_t n = 37;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nn_optim_config c;
        nn_optimizer *opt = NULL;
        if (!parse_config(cases[i].config, &c, "test_state_names") ||
            nn_optim_new(ctx, &c, n, &opt) != NN_OK) {
            check(0, cases[i].config, "%s", nn_ctx_error(ctx));
            continue;
        }
        int want = 0;
        while (cases[i].names[want]) want++;
        int ok = nn_optim_num_states(opt) == want && !nn_optim_state(opt, want, NULL) &&
                 !nn_optim_state(opt, -1, NULL);
        char got[160] = "";
        for (int k = 0; k < nn_optim_num_states(opt); k++) {
            const char *sn = NULL;
            float *b = nn_optim_state(opt, k, &sn); /* (n) */
            snprintf(got + strlen(got), sizeof got - strlen(got), " %s", sn ? sn : "(null)");
            ok &= b && sn && k < want && !strcmp(sn, cases[i].names[k]);
            /* fresh buffers hold the initial value (Adagrad's accumulator) */
            float init = !strcmp(sn ? sn : "", "sum") ? c.initial_accumulator_value : 0.0f;
            for (size_t j = 0; b && j < n; j++) ok &= b[j] == init;
        }
        char what[128];
        snprintf(what, sizeof what, "'%s': %d state buffer(s), initialized", cases[i].config,
                 want);
        check(ok, what, "got%s", got[0] ? got : " none");
        nn_optim_free(opt);
    }
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ reference twin */

/* One step of every update rule on one element in double, written from the
 * torch.optim documentation. s[] holds the element's state in the order of
 * the kind's buffers; t counts from 1. */
static double ref_step(const nn_optim_config *c, double p, double g, double *s, int t) {
    const double lr = c->lr, wd = c->weight_decay;
    switch (c->kind) {
    case NN_OPTIM_SGD:
        g += wd * p;
        if (c->momentum != 0.0f) {
            s[0] = t == 1 ? g : c->momentum * s[0] + (1.0 - c->dampening) * g;
            g = c->nesterov ? g + c->momentum * s[0] : s[0];
        }
        return p - lr * g;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW: {
        if (c->kind == NN_OPTIM_ADAMW) p *= 1.0 - lr * wd;
        else g += wd * p;
        s[0] = c->beta1 * s[0] + (1.0 - c->beta1) * g;
        s[1] = c->beta2 * s[1] + (1.0 - c->beta2) * g * g;
        double v = s[1];
        if (c->amsgrad) v = s[2] = fmax(s[2], s[1]);
        double bc1 = 1.0 - pow(c->beta1, t), bc2 = 1.0 - pow(c->beta2, t);
        return p - lr * (s[0] / bc1) / (sqrt(v / bc2) + c->eps);
    }
    case NN_OPTIM_RMSPROP: {
        g += wd * p;
        s[0] = c->alpha * s[0] + (1.0 - c->alpha) * g * g;
        int k = 1;
        double *buf = c->momentum > 0.0f ? &s[k++] : NULL;
        double *ga = c->centered ? &s[k++] : NULL;
        double v = s[0];
        if (ga) {
            *ga = c->alpha * *ga + (1.0 - c->alpha) * g;
            v -= *ga * *ga;
        }
        double avg = sqrt(v) + c->eps;
        if (buf) {
            *buf = c->momentum * *buf + g / avg;
            return p - lr * *buf;
        }
        return p - lr * g / avg;
    }
    case NN_OPTIM_ADAGRAD: {
        g += wd * p;
        double clr = lr / (1.0 + (t - 1) * c->lr_decay);
        s[0] += g * g;
        return p - clr * g / (sqrt(s[0]) + c->eps);
    }
    default:
        return NAN;
    }
}

static void test_reference(void) {
    printf("-- every update rule against a double-precision twin\n");
    enum { N = 5, T = 6 };
    static const float P0[N] = {1.0f, -0.5f, 0.25f, 2.0f, 0.0f};
    static const float G[T][N] = {{0.5f, -0.25f, 1e-3f, 0.0f, -1.0f},
                                  {0.4f, 0.3f, -2e-3f, 1e-6f, -0.5f},
                                  {-0.1f, 0.2f, 1e-3f, 0.0f, 0.25f},
                                  {0.3f, -0.3f, 5e-4f, 0.0f, 0.0f},
                                  {0.2f, 0.1f, -1e-3f, 2e-6f, 0.1f},
                                  {-0.2f, 0.05f, 2e-3f, 0.0f, -0.2f}};
    nn_ctx *ctx = test_ctx_new(1);
    for (int c = 0; c < NUM_CASES; c++) {
        char path[300];
        fixture fx;
        snprintf(path, sizeof path, FIXTURE_DIR "optim_%s.txt", CASES[c]);
        if (!fixture_load(path, &fx)) continue;
        nn_optim_config cfg = fx.cfg;
        cfg.lr *= 10.0f; /* large steps so the state matters */
        nn_optimizer *opt = NULL;
        if (nn_optim_new(ctx, &cfg, N, &opt) != NN_OK) {
            check(0, CASES[c], "%s", nn_ctx_error(ctx));
            continue;
        }
        float p[N];
        double rp[N], rs[N][3];
        for (int i = 0; i < N; i++) {
            p[i] = rp[i] = P0[i];
            for (int k = 0; k < 3; k++)
                rs[i][k] = cfg.kind == NN_OPTIM_ADAGRAD ? cfg.initial_accumulator_value : 0.0;
        }
        double worst = 0.0;
        for (int t = 0; t < T; t++) {
            nn_optim_step(opt, ctx, p, G[t]);
            for (int i = 0; i < N; i++) {
                rp[i] = ref_step(&cfg, rp[i], G[t][i], rs[i], t + 1);
                double d = fabs(p[i] - rp[i]) / fmax(1.0, fabs(rp[i]));
                if (!(d <= worst)) worst = d;
            }
        }
        for (int k = 0; k < nn_optim_num_states(opt); k++) {
            const float *b = nn_optim_state(opt, k, NULL);
            for (int i = 0; i < N; i++) {
                double d = fabs(b[i] - rs[i][k]) / fmax(1e-3, fabs(rs[i][k]));
                if (!(d <= worst)) worst = d;
            }
        }
        char what[128];
        snprintf(what, sizeof what, "%s (lr x10): %d steps match the double twin within 1e-5",
                 CASES[c], T);
        check(worst <= 1e-5, what, "max rel err %.3g", worst);
        nn_optim_free(opt);
    }
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ set_lr */

static void test_set_lr(void) {
    printf("-- nn_optim_set_lr\n");
    nn_ctx *ctx = test_ctx_new(1);
    enum { N = 8 };
    float g[N], p[N], want[N];
    for (int i = 0; i < N; i++) {
        g[i] = hash_uniform(77, (uint32_t)i) - 0.5f;
        p[i] = want[i] = hash_uniform(78, (uint32_t)i);
    }
    nn_optim_config c = nn_optim_defaults(NN_OPTIM_SGD);
    c.lr = 0.1f;
    nn_optimizer *opt = NULL;
    if (nn_optim_new(ctx, &c, N, &opt) == NN_OK) {
        nn_optim_step(opt, ctx, p, g);
        nn_optim_set_lr(opt, 0.5f);
        nn_optim_step(opt, ctx, p, g);
        int ok = nn_optim_get_config(opt)->lr == 0.5f;
        for (int i = 0; i < N; i++) {
            want[i] = want[i] - 0.1f * g[i];
            want[i] = want[i] - 0.5f * g[i];
            ok &= p[i] == want[i];
        }
        check(ok, "SGD: the step after set_lr(0.5) uses 0.5 (bit-exact)", NULL);
        nn_optim_set_lr(opt, 0.0f);
        memcpy(want, p, sizeof p);
        nn_optim_step(opt, ctx, p, g);
        check(!memcmp(p, want, sizeof p), "SGD: set_lr(0) freezes the parameters", NULL);
        nn_optim_free(opt);
    }

    /* every kind: created with lr a, or created with lr b then set to a */
    for (int k = 0; k < NN_OPTIM_COUNT; k++) {
        nn_optim_config ca = nn_optim_defaults((nn_optim_kind)k), cb = ca;
        ca.lr = 0.02f;
        cb.lr = 0.7f;
        nn_optimizer *oa = NULL, *ob = NULL;
        float pa[N], pb[N];
        for (int i = 0; i < N; i++) pa[i] = pb[i] = hash_uniform(79, (uint32_t)i);
        if (nn_optim_new(ctx, &ca, N, &oa) != NN_OK || nn_optim_new(ctx, &cb, N, &ob) != NN_OK) {
            check(0, "create optimizers", "%s", nn_ctx_error(ctx));
        } else {
            nn_optim_set_lr(ob, 0.02f);
            for (int t = 0; t < 4; t++) {
                for (int i = 0; i < N; i++)
                    g[i] = hash_uniform(80 + (uint32_t)t, (uint32_t)i) - 0.5f;
                nn_optim_step(oa, ctx, pa, g);
                nn_optim_step(ob, ctx, pb, g);
            }
            char what[96];
            snprintf(what, sizeof what, "%s: lr 0.7 then set_lr(0.02) == lr 0.02 (bit-exact)",
                     nn_optim_name((nn_optim_kind)k));
            check(!memcmp(pa, pb, sizeof pa) && nn_optim_get_config(ob)->lr == 0.02f, what,
                  NULL);
        }
        nn_optim_free(oa);
        nn_optim_free(ob);
    }
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ bit-exact */

enum { BIT_N = 1031, BIT_STEPS = 5, BIT_PARAM_STREAM = 11, BIT_GRAD_STREAM = 20 };

/* FNV-1a 64 of the little-endian bytes of a float32 array. */
static uint64_t fnv1a64(const float *a, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &a[i], sizeof u);
        for (int b = 0; b < 4; b++) h = (h ^ ((u >> (8 * b)) & 0xffU)) * 0x100000001b3ULL;
    }
    return h;
}

/* optim_bitexact.txt: 5 steps on one flat tensor with the hash gradients of
 * the script; the final parameters and state must have torch's exact bits,
 * with the FMA-instruction loops and with the portable ones (generic ISA).
 * SGD is not fused like torch (src/optim/sgd.c) and is held to 1e-6. */
static void test_bitexact(void) {
    printf("-- bit-exact steps (tests/fixtures/optim_bitexact.txt)\n");
    const char *path = FIXTURE_DIR "optim_bitexact.txt";
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, "open optim_bitexact.txt", "%s", path);
        return;
    }
    static char lines[64][256];
    int nl = 0;
    while (nl < 64 && fgets(lines[nl], sizeof lines[nl], f))
        if (lines[nl][0] != '#') lines[nl][strcspn(lines[nl], "\n")] = '\0', nl++;
    fclose(f);

    float p0[BIT_N], g[BIT_STEPS][BIT_N], p[BIT_N];
    for (uint32_t i = 0; i < BIT_N; i++) {
        p0[i] = 2.0f * hash_uniform(BIT_PARAM_STREAM, i) - 1.0f;
        for (int t = 0; t < BIT_STEPS; t++)
            g[t][i] = (2.0f * hash_uniform(BIT_GRAD_STREAM + (uint32_t)t, i) - 1.0f) *
                      ldexpf(1.0f, -(int)(i % 16));
    }
    nn_ctx *ctx = test_ctx_new(1);
    const nn_isa isas[2] = {nn_ctx_isa(ctx), NN_ISA_GENERIC};
    int cases = 0;
    for (int l = 0; l < nl; l++) {
        char name[64];
        int off = 0;
        nn_optim_config cfg;
        if (sscanf(lines[l], "config %63s %n", name, &off) != 1 || !off) continue;
        if (!parse_config(lines[l] + off, &cfg, path)) {
            check(0, "parse optim_bitexact.txt", "%s", lines[l]);
            continue;
        }
        cases++;
        const int is_sgd = cfg.kind == NN_OPTIM_SGD;
        for (int v = 0; v < (isas[0] == NN_ISA_GENERIC ? 1 : 2); v++) {
            nn_optimizer *opt = NULL;
            nn_ctx_set_isa(ctx, isas[v]);
            if (nn_optim_new(ctx, &cfg, BIT_N, &opt) != NN_OK) {
                check(0, name, "%s", nn_ctx_error(ctx));
                continue;
            }
            memcpy(p, p0, sizeof p);
            for (int t = 0; t < BIT_STEPS; t++) nn_optim_step(opt, ctx, p, g[t]);
            /* the case's bits lines, in order: params, then the states */
            int k = -1, ok = 1, nbits = 0, exact = 1;
            double worst = 0.0;
            for (int m = l + 1; m < nl && strncmp(lines[m], "config ", 7); m++) {
                char cs[64], tn[64], hex[32];
                double sum;
                if (sscanf(lines[m], "bits %63s %63s %31s %lf", cs, tn, hex, &sum) != 4 ||
                    strcmp(cs, name)) {
                    ok = 0;
                    continue;
                }
                const char *sn = "params";
                const float *a = k < 0 ? p : nn_optim_state(opt, k, &sn);
                k++;
                nbits++;
                if (!a || strcmp(sn, tn)) {
                    ok = 0;
                    continue;
                }
                char got[32];
                snprintf(got, sizeof got, "%016llx", (unsigned long long)fnv1a64(a, BIT_N));
                exact &= !strcmp(got, hex);
                double s2 = 0.0, abs2 = 0.0;
                for (int i = 0; i < BIT_N; i++) s2 += a[i], abs2 += fabs(a[i]);
                worst = fmax(worst, fabs(s2 - sum) / fmax(abs2, 1e-30));
            }
            ok &= nbits == 1 + nn_optim_num_states(opt);
            char what[160];
            snprintf(what, sizeof what, "%s (%s loops): %s", name,
                     isas[v] == NN_ISA_GENERIC ? "portable" : "FMA",
                     is_sgd ? "sums within 1e-6 of torch (SGD is not fused)"
                            : "params and state bit-identical to torch");
            check(ok && (is_sgd ? worst <= 1e-6 : exact), what, "%s, max |sum err|/abssum %.3g",
                  exact ? "bits equal" : "bits differ", worst);
            nn_optim_free(opt);
        }
    }
    check(cases == NUM_CASES, "optim_bitexact.txt has every case", "%d", cases);
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ threads */

/* Every fixture config on a large synthetic buffer (so the step runs on
 * several threads): 1 and 2 threads give bit-identical parameters and state,
 * because the update is element-wise. */
static void test_threads(void) {
    printf("-- 1 vs 2 threads on %d parameters\n", 200003);
    const size_t n = 200003;
    float *g = xmalloc(n * sizeof(float)), *p1 = xmalloc(n * sizeof(float)),
          *p2 = xmalloc(n * sizeof(float));
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);
    for (int c = 0; c < NUM_CASES; c++) {
        char path[300];
        fixture fx;
        snprintf(path, sizeof path, FIXTURE_DIR "optim_%s.txt", CASES[c]);
        if (!fixture_load(path, &fx)) continue;
        nn_optimizer *o1 = NULL, *o2 = NULL;
        if (nn_optim_new(c1, &fx.cfg, n, &o1) != NN_OK ||
            nn_optim_new(c2, &fx.cfg, n, &o2) != NN_OK) {
            check(0, CASES[c], "%s", nn_ctx_error(c1));
            nn_optim_free(o1);
            continue;
        }
        for (size_t i = 0; i < n; i++) p1[i] = p2[i] = 2.0f * hash_uniform(5, (uint32_t)i) - 1.0f;
        for (int t = 0; t < 4; t++) {
            for (size_t i = 0; i < n; i++) g[i] = hash_uniform(6 + (uint32_t)t, (uint32_t)i) - 0.5f;
            nn_optim_step(o1, c1, p1, g);
            nn_optim_step(o2, c2, p2, g);
        }
        int same = !memcmp(p1, p2, n * sizeof(float)) && memcmp(p1, g, n * sizeof(float));
        for (int k = 0; k < nn_optim_num_states(o1); k++)
            same &= !memcmp(nn_optim_state(o1, k, NULL), nn_optim_state(o2, k, NULL),
                            n * sizeof(float));
        char what[128];
        snprintf(what, sizeof what, "%s: 4 steps, 1 and 2 threads bit-identical (params, state)",
                 CASES[c]);
        check(same, what, NULL);
        nn_optim_free(o1);
        nn_optim_free(o2);
    }
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    free(g);
    free(p1);
    free(p2);
}

/* ------------------------------------------------------------ clipping */

static void test_clip(void) {
    printf("-- nn_clip_grad_norm\n");
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);

    float g[2] = {3.0f, 4.0f};
    double norm = nn_clip_grad_norm(g, 2, 1.0, c1);
    float coef = (float)(1.0 / (5.0 + 1e-6));
    check(norm == 5.0 && g[0] == 3.0f * coef && g[1] == 4.0f * coef &&
              fabs(g[0] - 0.6) < 1e-6 && fabs(g[1] - 0.8) < 1e-6,
          "{3, 4}, max_norm 1: returns 5, grads scaled by 1/(5 + 1e-6)", "norm %.17g, %.9g %.9g",
          norm, g[0], g[1]);
    float h[3] = {3.0f, -4.0f, 12.0f}; /* norm 13 */
    norm = nn_clip_grad_norm(h, 3, 13.5, c1);
    check(norm == 13.0 && h[0] == 3.0f && h[1] == -4.0f && h[2] == 12.0f,
          "{3, -4, 12}, max_norm 13.5: returns 13, grads untouched", "norm %.17g", norm);
    norm = nn_clip_grad_norm(h, 3, 13.0, c1);
    coef = (float)(13.0 / (13.0 + 1e-6));
    check(norm == 13.0 && h[0] == 3.0f * coef && h[2] == 12.0f * coef && h[2] < 12.0f,
          "{3, -4, 12}, max_norm 13 (= norm): scaled by 13/(13 + 1e-6) < 1, as torch",
          "h[2] %.9g", h[2]);
    float z[4] = {0};
    norm = nn_clip_grad_norm(z, 4, 1.0, c1);
    check(norm == 0.0 && z[0] == 0.0f, "all-zero gradients: norm 0, unchanged", NULL);
    check(nn_clip_grad_norm(NULL, 0, 1.0, c1) == 0.0, "empty buffer: norm 0", NULL);

    /* a large buffer: hand computation in long double, then 1 vs 2 threads */
    const size_t n = 300007;
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
    long double sq = 0.0L;
    for (size_t i = 0; i < n; i++) {
        a[i] = b[i] = (hash_uniform(9, (uint32_t)i) - 0.5f) * (i % 1000 == 0 ? 100.0f : 1.0f);
        sq += (long double)a[i] * a[i];
    }
    const double ref = (double)sqrtl(sq);
    double n1 = nn_clip_grad_norm(a, n, 0.5 * ref, c1);
    double n2 = nn_clip_grad_norm(b, n, 0.5 * ref, c2);
    check(fabs(n1 - ref) <= 1e-12 * ref, "300007 values: norm matches long-double sum within 1e-12",
          "%.17g vs %.17g", n1, ref);
    check(n1 == n2 && !memcmp(a, b, n * sizeof(float)),
          "1 and 2 threads: bit-identical norm and clipped gradients", "%.17g vs %.17g", n1, n2);
    double after = nn_clip_grad_norm(a, n, 1e30, c2);
    check(fabs(after - 0.5 * ref) <= 1e-6 * ref, "clipped norm is max_norm (within 1e-6)",
          "%.9g vs %.9g", after, 0.5 * ref);
    free(a);
    free(b);
    nn_ctx_free(c1);
    nn_ctx_free(c2);
}

/* ------------------------------------------------------------ checkpoints */

static int bufs_equal(nn_optimizer *a, nn_optimizer *b, size_t n) {
    if (nn_optim_num_states(a) != nn_optim_num_states(b)) return 0;
    for (int k = 0; k < nn_optim_num_states(a); k++)
        if (memcmp(nn_optim_state(a, k, NULL), nn_optim_state(b, k, NULL), n * sizeof(float)))
            return 0;
    return 1;
}

/* Loads path into a fresh net and an optimizer made from config, expecting
 * failure with a message holding substr. */
static void expect_ckpt_fail(nn_ctx *ctx, const char *path, const char *config,
                             const char *substr) {
    nn_optim_config c;
    nn_net *net = tiny_net(ctx);
    nn_optimizer *opt = NULL;
    if (!net || !parse_config(config, &c, "expect_ckpt_fail") ||
        nn_optim_new(ctx, &c, nn_net_num_params(net), &opt) != NN_OK) {
        check(0, config, "setup: %s", nn_ctx_error(ctx));
    } else {
        nn_ctx_clear_error(ctx);
        nn_status s = nn_checkpoint_load(ctx, path, net, opt, NULL);
        char what[160];
        snprintf(what, sizeof what, "load into '%s' rejected", config);
        check(s != NN_OK && strstr(nn_ctx_error(ctx), substr) && nn_optim_steps(opt) == 0, what,
              "%s", nn_ctx_error(ctx));
    }
    nn_optim_free(opt);
    nn_net_free(net);
}

static void test_checkpoint(void) {
    printf("-- checkpoints\n");
    static const char *const configs[] = {
        "sgd momentum=0.9 nesterov=1",
        "adam lr=0.01 amsgrad=1 weight_decay=0.01",
        "adamw lr=0.01",
        "rmsprop lr=0.001 momentum=0.9 centered=1 weight_decay=0.01",
        "adagrad lr=0.05 lr_decay=0.01 initial_accumulator_value=0.1",
    };
    nn_ctx *ctx = test_ctx_new(2);
    for (size_t ci = 0; ci < sizeof configs / sizeof configs[0]; ci++) {
        nn_optim_config c;
        nn_net *a = tiny_net(ctx), *b = tiny_net(ctx);
        nn_optimizer *oa = NULL, *ob = NULL;
        char path[300], what[200];
        snprintf(path, sizeof path, "%s", tmp_path("resume.safetensors"));
        if (!a || !b || !parse_config(configs[ci], &c, "test_checkpoint") ||
            nn_optim_new(ctx, &c, nn_net_num_params(a), &oa) != NN_OK ||
            nn_optim_new(ctx, &c, nn_net_num_params(b), &ob) != NN_OK) {
            check(0, configs[ci], "setup: %s", nn_ctx_error(ctx));
            goto next;
        }
        const size_t n = nn_net_num_params(a);
        for (int t = 0; t < 3; t++) train_step(a, oa, ctx, t);
        nn_status s = nn_checkpoint_save(ctx, path, a, oa, NULL);
        snprintf(what, sizeof what, "'%s': save after 3 steps", configs[ci]);
        check(s == NN_OK, what, "%s", ctx_err(ctx, s));

        /* metadata: kind, steps and each field the kind uses; state tensors */
        nn_st_file *f = NULL;
        if (nn_safetensors_open(ctx, path, &f) == NN_OK) {
            const char *kind = nn_safetensors_meta(f, "optimizer");
            const char *steps = nn_safetensors_meta(f, "optimizer_steps");
            int ok = kind && !strcmp(kind, nn_optim_name(c.kind)) && steps && !strcmp(steps, "3");
            char missing[160] = "";
            for (int k = 0; KIND_FIELDS[c.kind][k]; k++) {
                const char *key = KIND_FIELDS[c.kind][k];
                const char *v = nn_safetensors_meta(f, key);
                const field_desc *fd = find_field(key);
                char want[32];
                if (fd->is_int) snprintf(want, sizeof want, "%d", *field_int(&c, fd));
                else snprintf(want, sizeof want, "%.9g", (double)*field_float(&c, fd));
                if (!v || strcmp(v, want))
                    snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s",
                             key);
            }
            int ns = nn_optim_num_states(oa);
            ok &= !missing[0] && nn_safetensors_count(f) == NUM_TENSORS * (1 + ns);
            for (int k = 0; k < ns; k++) {
                const char *sn = NULL;
                char tname[160];
                nn_optim_state(oa, k, &sn);
                snprintf(tname, sizeof tname, "optimizer.fc1.weight.%s", sn);
                const nn_st_tensor *t = nn_safetensors_find(f, tname);
                ok &= t && shape_is(&t->shape, 2, 10, 64, 0, 0);
            }
            snprintf(what, sizeof what,
                     "'%s': metadata optimizer=%s, optimizer_steps=3, its fields; %d state "
                     "tensor(s) per parameter", configs[ci], nn_optim_name(c.kind), ns);
            check(ok, what, missing[0] ? "missing or wrong:%s" : NULL, missing);
            nn_safetensors_close(f);
        }

        /* resume: b's parameters differ, then load and continue both */
        float *pb = nn_net_params(b);
        for (size_t i = 0; i < n; i++) pb[i] *= 0.5f;
        s = nn_checkpoint_load(ctx, path, b, ob, NULL);
        snprintf(what, sizeof what, "'%s': load restores params, step count, state bit-exactly",
                 configs[ci]);
        check(s == NN_OK && nn_optim_steps(ob) == 3 && bufs_equal(oa, ob, n) &&
                  !memcmp(nn_net_params(a), pb, n * sizeof(float)),
              what, "%s", ctx_err(ctx, s));
        for (int t = 3; t < 6; t++) {
            train_step(a, oa, ctx, t);
            train_step(b, ob, ctx, t);
        }
        snprintf(what, sizeof what, "'%s': 3 more steps after resume are bit-identical",
                 configs[ci]);
        check(!memcmp(nn_net_params(a), pb, n * sizeof(float)) && bufs_equal(oa, ob, n), what,
              NULL);
    next:
        nn_optim_free(oa);
        nn_optim_free(ob);
        nn_net_free(a);
        nn_net_free(b);
    }

    /* mismatched optimizers */
    nn_optim_config c;
    nn_net *net = tiny_net(ctx);
    nn_optimizer *opt = NULL;
    const char *p_ams = tmp_path("adam-amsgrad.safetensors");
    const char *p_plain = tmp_path("adam.safetensors");
    if (net && parse_config("adam amsgrad=1", &c, "test_checkpoint") &&
        nn_optim_new(ctx, &c, nn_net_num_params(net), &opt) == NN_OK) {
        train_step(net, opt, ctx, 0);
        nn_checkpoint_save(ctx, p_ams, net, opt, NULL);
        nn_optim_free(opt);
        opt = NULL;
        c.amsgrad = 0;
        if (nn_optim_new(ctx, &c, nn_net_num_params(net), &opt) == NN_OK) {
            train_step(net, opt, ctx, 0);
            nn_checkpoint_save(ctx, p_plain, net, opt, NULL);
        }
        expect_ckpt_fail(ctx, p_ams, "adamw amsgrad=1",
                         "checkpoint optimizer is 'adam', not 'adamw'");
        expect_ckpt_fail(ctx, p_ams, "sgd momentum=0.9",
                         "checkpoint optimizer is 'adam', not 'sgd'");
        expect_ckpt_fail(ctx, p_ams, "adam",
                         "unexpected tensor 'optimizer.conv1.weight.max_exp_avg_sq'");
        expect_ckpt_fail(ctx, p_plain, "adam amsgrad=1",
                         "missing tensor 'optimizer.conv1.weight.max_exp_avg_sq'");
    }
    nn_optim_free(opt);
    opt = NULL;

    /* a checkpoint from before the first step restores step 0, and the next
     * step starts from fresh state (Adagrad's accumulator back at its
     * initial value), as a fresh torch optimizer would */
    const char *p0 = tmp_path("step0.safetensors");
    nn_net *fresh = tiny_net(ctx);
    nn_optimizer *ofresh = NULL;
    if (net && fresh && parse_config("adagrad lr=0.05 initial_accumulator_value=0.1", &c, "t") &&
        nn_optim_new(ctx, &c, nn_net_num_params(net), &opt) == NN_OK &&
        nn_optim_new(ctx, &c, nn_net_num_params(net), &ofresh) == NN_OK) {
        nn_checkpoint_save(ctx, p0, fresh, ofresh, NULL);
        for (int t = 0; t < 3; t++) train_step(net, opt, ctx, t);
        nn_status s = nn_checkpoint_load(ctx, p0, net, opt, NULL);
        train_step(net, opt, ctx, 0);
        train_step(fresh, ofresh, ctx, 0);
        const size_t n = nn_net_num_params(net);
        check(s == NN_OK && nn_optim_steps(opt) == 1 && bufs_equal(opt, ofresh, n) &&
                  !memcmp(nn_net_params(net), nn_net_params(fresh), n * sizeof(float)),
              "step-0 checkpoint: the next step re-initializes the state (Adagrad sum)", "%s",
              ctx_err(ctx, s));
    }
    nn_optim_free(opt);
    nn_optim_free(ofresh);
    nn_net_free(fresh);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

int main(void) {
    tmp_dir_create("optim");
    test_names_defaults();
    test_invalid();
    test_state_names();
    test_reference();
    test_set_lr();
    test_clip();
    test_bitexact();
    test_threads();
    test_checkpoint();
    test_parity();
    remove_tree(tmp_dir);
    return test_summary();
}
