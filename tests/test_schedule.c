/*
 * test_schedule.c - learning-rate schedules against torch.optim.lr_scheduler.
 *
 * scripts/make_schedule_fixtures.py ran each schedule in PyTorch 1.13 (a dummy
 * parameter, SGD; per-epoch schedulers stepped at the end of each epoch,
 * OneCycleLR and the LinearLR warm-up after every optimizer step) and stored
 * the lr of every optimizer step in tests/fixtures/sched_<case>.txt. This test
 * rebuilds each config from the fixture's "config" line, feeds plateau the
 * same per-epoch metrics, and compares nn_sched_lr within 1e-6 relative. It
 * also checks the defaults against PyTorch's (sched_defaults.txt), the names,
 * validation messages, and a few properties (steps past onecycle's end,
 * cosine periodicity, plateau state only changing through observe).
 * Exits non-zero if any check fails.
 */
#include "nnopt.h"
#include "test_util.h"

#define FIXTURE_DIR NN_SOURCE_DIR "/tests/fixtures/"

static const double LR_RTOL = 1e-6;

static const char *const CASES[] = {
    "constant_warmup", "step",     "step_warmup",      "multistep",
    "exponential",     "cosine",   "cosine_warmup",    "cosine_restarts",
    "cosine_restarts1", "onecycle", "onecycle_odd",     "plateau",
};

/* ------------------------------------------------------------ config text */

/* Sets one field from key=value; returns 0 if the key is unknown. */
static int set_field(nn_sched_config *c, const char *key, const char *val) {
    if (!strcmp(key, "kind") || !strcmp(key, "base_lr")) return 1;   /* read first */
    if (!strcmp(key, "gamma")) c->gamma = strtof(val, NULL);
    else if (!strcmp(key, "step_size")) c->step_size = atoi(val);
    else if (!strcmp(key, "milestones")) {
        c->num_milestones = 0;
        for (const char *p = val; *p && c->num_milestones < NN_MAX_MILESTONES;) {
            char *end;
            c->milestones[c->num_milestones++] = (int)strtol(p, &end, 10);
            p = *end == ',' ? end + 1 : end;
            if (end == p && *p) return 0;
        }
    } else if (!strcmp(key, "t_max")) c->t_max = atoi(val);
    else if (!strcmp(key, "t_0")) c->t_0 = atoi(val);
    else if (!strcmp(key, "t_mult")) c->t_mult = atoi(val);
    else if (!strcmp(key, "eta_min")) c->eta_min = strtof(val, NULL);
    else if (!strcmp(key, "total_steps")) c->total_steps = atoll(val);
    else if (!strcmp(key, "pct_start")) c->pct_start = strtof(val, NULL);
    else if (!strcmp(key, "div_factor")) c->div_factor = strtof(val, NULL);
    else if (!strcmp(key, "final_div_factor")) c->final_div_factor = strtof(val, NULL);
    else if (!strcmp(key, "factor")) c->factor = strtof(val, NULL);
    else if (!strcmp(key, "threshold")) c->threshold = strtof(val, NULL);
    else if (!strcmp(key, "min_lr")) c->min_lr = strtof(val, NULL);
    else if (!strcmp(key, "patience")) c->patience = atoi(val);
    else if (!strcmp(key, "cooldown")) c->cooldown = atoi(val);
    else if (!strcmp(key, "warmup_steps")) c->warmup_steps = atoll(val);
    else if (!strcmp(key, "warmup_start_factor")) c->warmup_start_factor = strtof(val, NULL);
    else return 0;
    return 1;
}

/* "kind=<name> [base_lr=v] key=v ..." -> nn_sched_defaults(kind, base_lr or 0.1)
 * with the given fields. Returns 0 on an unknown kind or key. */
static int parse_config(const char *text, nn_sched_config *c) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    int kind = -1;
    float base_lr = 0.1f;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        if (!strncmp(t, "kind=", 5)) kind = nn_sched_kind_from_name(t + 5);
        else if (!strncmp(t, "base_lr=", 8)) base_lr = strtof(t + 8, NULL);
    }
    if (kind < 0) return 0;
    *c = nn_sched_defaults((nn_sched_kind)kind, base_lr);
    snprintf(buf, sizeof buf, "%s", text);
    for (char *t = strtok_r(buf, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) return 0;
        *eq = '\0';
        if (!set_field(c, t, eq + 1)) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ fixtures */

static double rel_err(double a, double b) {
    double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
    return s < 1e-30 ? d : d / s;
}

static void test_fixture(const char *name) {
    char path[512], line[1024], what[96];
    snprintf(path, sizeof path, FIXTURE_DIR "sched_%s.txt", name);
    snprintf(what, sizeof what, "%s matches PyTorch", name);
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, what, "cannot open %s", path);
        return;
    }
    nn_ctx *ctx = test_ctx_new(1);
    nn_sched_config cfg;
    nn_sched_state st;
    int have_cfg = 0, spe = 0, nmetrics = 0, rows = 0, bad_rows = 0, cur_epoch = 0;
    double metrics[64], worst = 0.0;
    long worst_step = -1;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (!strncmp(line, "config ", 7)) {
            have_cfg = parse_config(line + 7, &cfg);
            nn_status s = have_cfg ? nn_sched_validate(ctx, &cfg) : NN_EINVAL;
            check(have_cfg && s == NN_OK, "fixture config parses and validates", "%s%s%s", name,
                  have_cfg && s == NN_OK ? "" : ": ",
                  have_cfg ? ctx_err(ctx, s) : "bad config line");
            if (have_cfg) nn_sched_state_init(&cfg, &st);
        } else if (!strncmp(line, "steps_per_epoch ", 16)) {
            spe = atoi(line + 16);
        } else if (!strncmp(line, "metrics ", 8)) {
            char *p = line + 8, *end;
            while (nmetrics < 64) {
                double v = strtod(p, &end);
                if (end == p) break;
                metrics[nmetrics++] = v;
                p = end;
            }
        } else {
            long step, epoch;
            double lr;
            if (!have_cfg || sscanf(line, "%ld %ld %lf", &step, &epoch, &lr) != 3) {
                bad_rows++;
                continue;
            }
            if (spe <= 0 || epoch != step / spe) bad_rows++;
            /* the end of every finished epoch reports its metric (plateau) */
            for (; cur_epoch < epoch; cur_epoch++)
                if (cur_epoch < nmetrics) nn_sched_observe(&cfg, &st, metrics[cur_epoch]);
            double e = rel_err((double)nn_sched_lr(&cfg, &st, epoch, step), lr);
            if (e > worst) {
                worst = e;
                worst_step = step;
            }
            rows++;
        }
    }
    fclose(f);
    check(have_cfg && rows > 0 && bad_rows == 0 && worst <= LR_RTOL, what,
          "%d steps, max rel err %.2g (step %ld)%s", rows, worst, worst_step < 0 ? 0 : worst_step,
          bad_rows ? ", malformed rows" : "");
    nn_ctx_free(ctx);
}

/* sched_defaults.txt: "default <kind> <field> <value>" with PyTorch's defaults. */
static void test_defaults(void) {
    FILE *f = fopen(FIXTURE_DIR "sched_defaults.txt", "r");
    if (!f) {
        check(0, "defaults match PyTorch's", "cannot open sched_defaults.txt");
        return;
    }
    char line[256], kind[64], field[64];
    double v;
    int n = 0, bad = 0;
    char detail[512] = "";
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "default %63s %63s %lf", kind, field, &v) != 3) continue;
        int k = nn_sched_kind_from_name(kind);
        nn_sched_config c = nn_sched_defaults(k < 0 ? NN_SCHED_CONSTANT : (nn_sched_kind)k, 0.1f);
        double got = NAN;
        if (!strcmp(field, "gamma")) got = c.gamma;
        else if (!strcmp(field, "eta_min")) got = c.eta_min;
        else if (!strcmp(field, "t_mult")) got = c.t_mult;
        else if (!strcmp(field, "pct_start")) got = c.pct_start;
        else if (!strcmp(field, "div_factor")) got = c.div_factor;
        else if (!strcmp(field, "final_div_factor")) got = c.final_div_factor;
        else if (!strcmp(field, "factor")) got = c.factor;
        else if (!strcmp(field, "patience")) got = c.patience;
        else if (!strcmp(field, "threshold")) got = c.threshold;
        else if (!strcmp(field, "cooldown")) got = c.cooldown;
        else if (!strcmp(field, "min_lr")) got = c.min_lr;
        else if (!strcmp(field, "warmup_start_factor")) got = c.warmup_start_factor;
        n++;
        if (k < 0 || !(got == (double)(float)v)) {
            bad++;
            size_t len = strlen(detail);
            snprintf(detail + len, sizeof detail - len, " %s.%s=%g (torch %g)", kind, field, got,
                     v);
        }
    }
    fclose(f);
    check(n >= 10 && bad == 0, "defaults match PyTorch's (float32)", "%d fields%s", n, detail);
    nn_sched_config e = nn_sched_defaults(NN_SCHED_EXPONENTIAL, 0.1f);
    nn_sched_config s = nn_sched_defaults(NN_SCHED_STEP, 0.5f);
    check(e.gamma == 0.95f && s.base_lr == 0.5f && s.warmup_steps == 0 && s.step_size == 0,
          "exponential gamma 0.95, base_lr kept, no warm-up, required fields 0", NULL);
}

static void test_names(void) {
    int ok = 1;
    for (int k = 0; k < NN_SCHED_COUNT; k++) {
        const char *nm = nn_sched_name((nn_sched_kind)k);
        ok &= nm != NULL && nn_sched_kind_from_name(nm) == k;
    }
    const char *const expect[] = {"constant", "step",            "multistep", "exponential",
                                  "cosine",   "cosine_restarts", "onecycle",  "plateau"};
    for (int k = 0; k < NN_SCHED_COUNT && k < 8; k++)
        ok &= !strcmp(nn_sched_name((nn_sched_kind)k), expect[k]);
    ok &= NN_SCHED_COUNT == 8;
    ok &= nn_sched_name(NN_SCHED_COUNT) == NULL && nn_sched_kind_from_name("cosine_warm") == -1 &&
          nn_sched_kind_from_name("") == -1 && nn_sched_kind_from_name(NULL) == -1;
    check(ok, "schedule names round-trip; unknown names give -1, unknown kinds NULL", NULL);
}

/* ------------------------------------------------------------ validation */

static const struct {
    const char *config;
    const char *message;   /* NULL: must validate */
} VALIDATE_CASES[] = {
    {"kind=constant", NULL},
    {"kind=step step_size=3", NULL},
    {"kind=multistep milestones=3,3,7", NULL},
    {"kind=exponential", NULL},
    {"kind=cosine t_max=10", NULL},
    {"kind=cosine_restarts t_0=5", NULL},
    {"kind=onecycle total_steps=100", NULL},
    {"kind=plateau", NULL},
    {"kind=constant warmup_steps=0 warmup_start_factor=0", NULL},
    {"kind=constant warmup_steps=5 warmup_start_factor=1", NULL},
    {"kind=step step_size=0", "schedule step: step_size must be > 0, got 0"},
    {"kind=step step_size=3 gamma=-0.5",
     "schedule step: gamma must be a finite number > 0, got -0.5"},
    {"kind=exponential gamma=0", "schedule exponential: gamma must be"},
    {"kind=multistep gamma=nan milestones=2", "schedule multistep: gamma must be"},
    {"kind=multistep", "schedule multistep: num_milestones must be in [1, 16], got 0"},
    {"kind=multistep milestones=5,3",
     "schedule multistep: milestones must be sorted, got 3 after 5"},
    {"kind=multistep milestones=-1,3", "schedule multistep: milestones[0] must be >= 0, got -1"},
    {"kind=cosine", "schedule cosine: t_max must be > 0, got 0"},
    {"kind=cosine t_max=-4", "schedule cosine: t_max must be > 0, got -4"},
    {"kind=cosine t_max=5 eta_min=-0.1", "schedule cosine: eta_min must be"},
    {"kind=cosine_restarts", "schedule cosine_restarts: t_0 must be > 0, got 0"},
    {"kind=cosine_restarts t_0=2 t_mult=0", "schedule cosine_restarts: t_mult must be >= 1, got 0"},
    {"kind=onecycle", "schedule onecycle: total_steps must be > 0, got 0"},
    {"kind=onecycle total_steps=10 pct_start=0",
     "schedule onecycle: pct_start must be in (0, 1), got 0"},
    {"kind=onecycle total_steps=10 pct_start=1",
     "schedule onecycle: pct_start must be in (0, 1), got 1"},
    {"kind=onecycle total_steps=4 pct_start=0.25",
     "schedule onecycle: pct_start * total_steps must not be 1"},
    {"kind=onecycle total_steps=10 div_factor=0", "schedule onecycle: div_factor must be"},
    {"kind=onecycle total_steps=10 final_div_factor=-1",
     "schedule onecycle: final_div_factor must be"},
    {"kind=plateau factor=1", "schedule plateau: factor must be in [0, 1), got 1"},
    {"kind=plateau factor=-0.5", "schedule plateau: factor must be in [0, 1), got -0.5"},
    {"kind=plateau patience=-1", "schedule plateau: patience must be >= 0, got -1"},
    {"kind=plateau cooldown=-2", "schedule plateau: cooldown must be >= 0, got -2"},
    {"kind=plateau threshold=-0.1", "schedule plateau: threshold must be in [0, 1)"},
    {"kind=plateau min_lr=-1", "schedule plateau: min_lr must be"},
    {"kind=constant base_lr=-0.1",
     "schedule constant: base_lr must be a finite number >= 0, got -0.1"},
    {"kind=step step_size=2 base_lr=inf", "schedule step: base_lr must be"},
    {"kind=cosine t_max=5 warmup_steps=-1", "schedule cosine: warmup_steps must be >= 0, got -1"},
    {"kind=cosine t_max=5 warmup_steps=10 warmup_start_factor=0",
     "schedule cosine: warmup_start_factor must be in (0, 1], got 0"},
    {"kind=cosine t_max=5 warmup_steps=10 warmup_start_factor=1.5",
     "schedule cosine: warmup_start_factor must be in (0, 1], got 1.5"},
};

static void test_validate(void) {
    nn_ctx *ctx = test_ctx_new(1);
    for (size_t i = 0; i < sizeof VALIDATE_CASES / sizeof VALIDATE_CASES[0]; i++) {
        nn_sched_config c;
        if (!parse_config(VALIDATE_CASES[i].config, &c)) {
            check(0, "validate case parses", "%s", VALIDATE_CASES[i].config);
            continue;
        }
        nn_ctx_clear_error(ctx);
        nn_status st = nn_sched_validate(ctx, &c);
        if (!VALIDATE_CASES[i].message)
            check(st == NN_OK, "validate accepts", "%s%s%s", VALIDATE_CASES[i].config,
                  st == NN_OK ? "" : ": ", ctx_err(ctx, st));
        else
            check(st == NN_EINVAL && contains(nn_ctx_error(ctx), VALIDATE_CASES[i].message),
                  "validate refuses", "%s -> \"%s\"", VALIDATE_CASES[i].config,
                  ctx_err(ctx, st));
    }
    nn_sched_config c = nn_sched_defaults(NN_SCHED_CONSTANT, 0.1f);
    c.kind = NN_SCHED_COUNT;
    nn_status st = nn_sched_validate(ctx, &c);
    check(st == NN_EINVAL && contains(nn_ctx_error(ctx), "unknown kind"),
          "validate refuses an unknown kind", "\"%s\"", ctx_err(ctx, st));
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------ properties */

static void test_properties(void) {
    nn_sched_config c;
    /* onecycle: steps past the end keep the final value (PyTorch would raise) */
    parse_config("kind=onecycle total_steps=50", &c);
    float last = nn_sched_lr(&c, NULL, 0, 49);
    check(nn_sched_lr(&c, NULL, 0, 50) == last && nn_sched_lr(&c, NULL, 3, 1000) == last &&
              rel_err(last, 0.1 / 25 / 1e4) <= 1e-6,
          "onecycle: final lr max_lr / div / final_div, kept after total_steps", "%.9g", last);
    check(rel_err(nn_sched_lr(&c, NULL, 0, 0), 0.1 / 25) <= 1e-6, "onecycle starts at max_lr / div",
          NULL);
    /* epoch-based schedules ignore the step; cosine is periodic past T_max */
    parse_config("kind=cosine t_max=7 eta_min=0.01", &c);
    int ok = 1;
    for (int e = 0; e < 14; e++)
        ok &= nn_sched_lr(&c, NULL, e, 0) == nn_sched_lr(&c, NULL, e, 12345) &&
              rel_err(nn_sched_lr(&c, NULL, e, 0), nn_sched_lr(&c, NULL, e + 14 * 1000003, 0)) <=
                  1e-6;
    check(ok, "cosine: step ignored, period 2 T_max", NULL);
    check(nn_sched_lr(&c, NULL, 7, 0) == 0.01f, "cosine reaches eta_min at T_max", NULL);
    /* warm-up: start factor at step 0, linear, 1 from warmup_steps on */
    parse_config("kind=constant base_lr=0.2 warmup_steps=4 warmup_start_factor=0.5", &c);
    check(rel_err(nn_sched_lr(&c, NULL, 0, 0), 0.1) <= 1e-7 &&
              rel_err(nn_sched_lr(&c, NULL, 0, 2), 0.15) <= 1e-7 &&
              nn_sched_lr(&c, NULL, 0, 4) == 0.2f && nn_sched_lr(&c, NULL, 9, 400) == 0.2f,
          "warm-up factor 0.5 -> 1 over 4 steps", NULL);
    /* plateau: observe changes only plateau's state; other kinds ignore it */
    nn_sched_state st, st0;
    parse_config("kind=step step_size=2", &c);
    nn_sched_state_init(&c, &st);
    st0 = st;
    for (int i = 0; i < 30; i++) nn_sched_observe(&c, &st, 1.0);
    check(!memcmp(&st, &st0, sizeof st), "observe is a no-op for non-plateau kinds", NULL);
    parse_config("kind=plateau patience=0 factor=0.5", &c);
    nn_sched_state_init(&c, &st);
    nn_sched_observe(&c, &st, 1.0);    /* improvement over +inf */
    float a = nn_sched_lr(&c, &st, 1, 0);
    nn_sched_observe(&c, &st, 1.0);    /* no improvement, patience 0: halve */
    float b = nn_sched_lr(&c, &st, 2, 0);
    nn_sched_observe(&c, &st, NAN);    /* NaN never improves */
    float d = nn_sched_lr(&c, &st, 3, 0);
    check(a == 0.1f && rel_err(b, 0.05) <= 1e-7 && rel_err(d, 0.025) <= 1e-7 && st.best == 1.0,
          "plateau: patience 0 halves on each bad epoch, NaN counts as bad", "%g %g %g", a, b, d);
}

int main(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) test_fixture(CASES[i]);
    test_defaults();
    test_names();
    test_validate();
    test_properties();
    return test_summary();
}
