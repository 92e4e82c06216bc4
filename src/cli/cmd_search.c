/*
 * cmd_search.c - `nnopt search SPACE`: structure, recipe and hardware settings
 * searched together under a budget (docs/search.md). The engine
 * (src/search/) proposes each trial's values and decides on pruning; this
 * file turns the values into a model (--params) and a recipe (the same
 * option table as `nnopt train`), trains each trial with the library trainer
 * on a validation split carved from the training set, measures it (latency,
 * parameters, FLOPs, memory, time), records everything in the study, and at
 * the end measures the finalists on the test set and can export the best
 * one as files that `nnopt train` and `nnopt eval` take.
 *
 * Trials checkpoint every epoch in the study's trial folder: a trial stopped
 * by the budget, a signal or a killed worker is resumed from its checkpoint
 * by the next worker that finds it, so no finished work is lost and no trial
 * runs twice.
 */
#include "cli/cli.h"
#include "search/search.h"

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* What every worker shares: the space, the study's path, the data. */
typedef struct {
    const cli_env *env;
    const nn_space *sp;
    const char *study_path;
    char trials_dir[4096];
    const char *data;
    sampler_kind sampler;
    pruner_cfg pruner;
    double budget_s;    /* wall seconds from the search's start */
    double start;
    int max_trials;     /* trials in the study at most (0: no limit) */
    int threads;        /* per worker, unless the trial sets train.threads */
    int threads_given;  /* --threads: the tuning cache is not consulted */
    cli_share *share;   /* this worker's entry in the registry of nnopt processes */
    int workers;
    uint64_t seed;
    int json, tty;
    nn_dataset train, val, test;
} search_run;

/* --- a trial's recipe and model from its values --- */

/* The recipe options of a trial: the defaults of `nnopt train`, the search's
 * data split, then every active non-model parameter. */
typedef struct {
    cli_train_opts o;
    cli_opt table[CLI_TRAIN_OPTS_MAX + 1];
    cli_strings keep;
    char params[2048];  /* "W=16,DEPTH=2": the model's parameters */
} trial_recipe;

static const cli_opt *find_ini(const cli_opt *t, const char *name) {
    for (; t->name; t++)
        if (t->ini && !strcmp(t->ini, name)) return t;
    return NULL;
}

/* Keys a space may not set: the search owns the data split. */
static int reserved_key(const char *name) {
    return !strncmp(name, "data.", 5) || !strcmp(name, "model.params");
}

static int recipe_build(const search_run *run, const double *value, const unsigned char *active,
                        trial_recipe *r, char *err, size_t errsz) {
    memset(r, 0, sizeof *r);
    cli_train_opts_init(&r->o);
    int n = cli_train_opts_table(&r->o, r->table);
    r->table[n] = (cli_opt){0};
    r->o.data = run->data;
    r->o.val = run->sp->val;
    r->o.train_limit = run->sp->train_limit;
    for (int i = 0; i < run->sp->num_params; i++)
        for (int j = 0; active[i] && j < i; j++)
            if (active[j] && !strcmp(run->sp->param[i].key, run->sp->param[j].key)) {
                snprintf(err, errsz, "%.200s:%d: %s and %s both apply to one trial (their "
                         "conditions overlap)",
                         run->sp->path, run->sp->param[i].line, run->sp->param[j].name,
                         run->sp->param[i].name);
                return 1;
            }
    size_t len = 0;
    for (int i = 0; i < run->sp->num_params; i++) {
        if (!active[i]) continue;
        const sp_param *p = &run->sp->param[i];
        char text[SP_WORD + 32];
        sp_value_text(p, value[i], text, sizeof text);
        if (!strncmp(p->key, "model.", 6)) {
            int w = snprintf(r->params + len, sizeof r->params - len, "%s%s=%s", len ? "," : "",
                             p->key + 6, text);
            if (w < 0 || (size_t)w >= sizeof r->params - len) {
                snprintf(err, errsz, "%.200s:%d: too many model parameters", run->sp->path, p->line);
                return 1;
            }
            len += (size_t)w;
            continue;
        }
        const cli_opt *o = find_ini(r->table, p->key);
        if (!o || reserved_key(p->key)) {
            snprintf(err, errsz, "%.200s:%d: %s is not a recipe key a search can set (the keys of "
                     "nnopt train's recipe files, data.* excepted; docs/search.md)",
                     run->sp->path, p->line, p->name);
            return 1;
        }
        /* strings must outlive the options: keep a copy */
        if (r->keep.count == r->keep.cap) {
            int cap = r->keep.cap ? 2 * r->keep.cap : 16;
            char **items = realloc(r->keep.items, (size_t)cap * sizeof *items);
            if (!items) {
                snprintf(err, errsz, "out of memory");
                return 1;
            }
            r->keep.items = items;
            r->keep.cap = cap;
        }
        char *copy = strdup(text);
        if (!copy) {
            snprintf(err, errsz, "out of memory");
            return 1;
        }
        r->keep.items[r->keep.count++] = copy;
        char why[256];
        if (cli_opt_set(o, copy, why, sizeof why)) {
            snprintf(err, errsz, "%.200s:%d: %s = %s: %.150s", run->sp->path, p->line, p->name, text, why);
            return 1;
        }
    }
    return 0;
}

static void recipe_free(trial_recipe *r) { cli_strings_free(&r->keep); }

/* --- measuring --- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ms of an eval-mode forward pass of n images (the first of d, repeated). */
static nn_status forward_ms(nn_net *net, const nn_dataset *d, const nn_normalize *norm, int n,
                            double *ms) {
    nn_status st = nn_net_plan(net, n);
    if (st) return st;
    size_t per = (size_t)d->c * d->h * d->w;
    float *x = malloc(sizeof(float) * per * (size_t)n);
    if (!x) return NN_ENOMEM;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < per; k++)
            x[i * per + k] = ((float)d->pixels[((size_t)i % (size_t)d->n) * per + k] / 255.0f -
                              norm->mean) / norm->std;
    int was = nn_net_training(net);
    nn_net_set_training(net, 0);
    /* small batches are quick and noisy: time more of them */
    double t[51];
    const int runs = n == 1 ? 51 : 15;
    for (int r = -3; r < runs && !st; r++) {
        double t0 = nn_wall_time();
        st = nn_net_forward(net, x, NULL, n, NULL);
        if (r >= 0) t[r] = (nn_wall_time() - t0) * 1e3;
    }
    nn_net_set_training(net, was);
    free(x);
    if (st) return st;
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    *ms = t[runs / 2];
    return NN_OK;
}

/* What a model costs before training: parameters, FLOPs, batch-1 latency
 * on one thread (as one image is served; a tiny model's parallel regions
 * cost more than they save, and on a busy machine they wait on the other
 * threads' time slices), batch-n latency with the net's threads, memory
 * planned for batch n (the net is left planned for n). model and params
 * load the one-thread copy. */
static nn_status measure_model(const search_run *run, const char *model, const char *params,
                               nn_precision precision, nn_net *net, const nn_normalize *norm, int n,
                               double *metric) {
    int64_t flops = 0;
    for (int i = 0; i < nn_net_num_layers(net); i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        flops += li.flops;
    }
    metric[M_PARAMS] = (double)nn_net_num_params(net);
    metric[M_FLOPS] = (double)flops;
    const nn_dataset *probe = run->val.n ? &run->val : &run->train;
    nn_ctx *one = cli_ctx_new(run->env, 1);
    if (!one) return NN_ENOMEM;
    nn_ctx_set_precision(one, precision);
    nn_net *single = NULL;
    nn_status st = cli_net_load(one, model, params, &single);
    if (!st) st = forward_ms(single, probe, norm, 1, &metric[M_LATENCY_MS]);
    nn_net_free(single);
    nn_ctx_free(one);
    if (st) return st;
    if ((st = forward_ms(net, probe, norm, n, &metric[M_LATENCY_BATCH_MS])) ||
        (st = nn_net_plan(net, n)))
        return st;
    metric[M_MEMORY_MB] = (double)nn_net_planned_bytes(net) / (1 << 20);
    return NN_OK;
}

/* Constraints against a reference model ("latency_ms <= seed_cnn.nn"): its
 * metric, measured now as the trials' are, becomes the bound. */
static int measure_references(search_run *run, nn_space *sp, nn_study *study, nn_ctx *main_ctx) {
    for (int k = 0; k < sp->num_constraints; k++) {
        sp_constraint *c = &sp->constraint[k];
        if (!c->reference[0]) continue;
        nn_ctx *ctx = cli_ctx_new(run->env, run->threads);
        nn_net *net = NULL;
        double metric[M_COUNT];
        nn_normalize norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};
        nn_status st = ctx ? nn_net_load(ctx, c->reference, &net) : NN_ENOMEM;
        if (!st) st = measure_model(run, c->reference, NULL, NN_PRECISION_FP32, net, &norm, 64, metric);
        if (st) {
            fprintf(stderr, "nnopt: %s:%d: the constraint's reference: %s\n", sp->path, c->line,
                    ctx ? nn_ctx_error(ctx) : "out of memory");
            nn_net_free(net);
            nn_ctx_free(ctx);
            return 1;
        }
        c->bound = metric[c->metric];
        nn_net_free(net);
        nn_ctx_free(ctx);
        char key[32], value[4200];
        snprintf(key, sizeof key, "bound_%d", k);
        snprintf(value, sizeof value, "%.9g", c->bound);
        if (study_set(study, key, value)) {
            fprintf(stderr, "nnopt: %s\n", nn_ctx_error(main_ctx));
            return 1;
        }
        if (!run->json)
            printf("constraint %s %s %.4g: %s measured now\n", sp_metric_name(c->metric),
                   c->less ? "<=" : ">=", c->bound, c->reference);
    }
    return 0;
}

/* --- one trial --- */

typedef struct {
    search_run *run;
    nn_study *study;
    trial self;             /* this trial, its curve growing */
    double seconds_before;  /* training seconds of earlier (interrupted) runs */
    double t0;
    int pruned, over_budget;
    nn_trainer *trainer;
    cli_progress bar;
    int64_t first_batch;
    nn_status err;
    cli_share *share;       /* followed between steps (NULL: the threads are fixed) */
} trial_view;

static void on_epoch_start(void *user, int64_t epoch, int64_t first_batch, int64_t batches) {
    trial_view *v = user;
    cli_share_poll(v->share);
    char label[48];
    snprintf(label, sizeof label, "trial %lld e%lld", (long long)v->self.id, (long long)epoch + 1);
    v->first_batch = first_batch;
    cli_progress_start(&v->bar, stderr, v->run->tty, batches - first_batch, label);
}

static void on_batch(void *user, const nn_batch_report *r) {
    trial_view *v = user;
    cli_share_poll(v->share);
    cli_progress_update(&v->bar, r->batch - v->first_batch, r->mean_loss);
    if (v->run->budget_s > 0 && nn_wall_time() - v->run->start > v->run->budget_s &&
        !v->over_budget) {
        v->over_budget = 1;
        nn_trainer_request_stop(v->trainer);
    }
}

static int on_epoch(void *user, const nn_epoch_report *r) {
    trial_view *v = user;
    cli_progress_clear(&v->bar);
    trial *t = &v->self;
    int e = (int)r->epoch;
    if (e > t->epochs) {
        size_t bytes = (size_t)e * sizeof(double);
        double *a = realloc(t->val_accuracy, bytes);
        if (a) t->val_accuracy = a;
        double *l = a ? realloc(t->val_loss, bytes) : NULL;
        if (l) t->val_loss = l;
        double *s = l ? realloc(t->epoch_seconds, bytes) : NULL;
        if (!s) {
            v->err = NN_ENOMEM;
            return 1;
        }
        t->epoch_seconds = s;
        for (int k = t->epochs; k < e; k++) t->val_accuracy[k] = t->val_loss[k] = t->epoch_seconds[k] = NAN;
        t->epochs = e;
    }
    double secs = v->seconds_before + (nn_wall_time() - v->t0);
    t->val_accuracy[e - 1] = r->val_accuracy;
    t->val_loss[e - 1] = r->val_loss;
    t->epoch_seconds[e - 1] = secs;
    if ((v->err = study_epoch(v->study, t->id, e, r->val_accuracy, r->val_loss, secs))) return 1;
    if (v->run->pruner.kind == PRUNER_NONE) return 0;
    trial *all = NULL;
    int n = 0;
    if ((v->err = study_load(v->study, &all, &n))) return 1;
    v->pruned = pruner_should_stop(&v->run->pruner, t, all, n);
    study_trials_free(all, n);
    return v->pruned;
}

static void trial_file(const search_run *run, int64_t id, const char *ext, char *buf, size_t size) {
    snprintf(buf, size, "%s/trial_%06lld.%s", run->trials_dir, (long long)id, ext);
}

/* Prints a finished trial's line (or JSON object). */
/* Where the search stands: trials by state, the best so far, time left. */
typedef struct {
    int count[TRIAL_STOPPED + 1];
    double best;
    int64_t best_id;
} search_status;

static void print_trial(const search_run *run, const trial *t, const trial_recipe *r,
                        const search_status *ss) {
    double best = ss->best;
    int64_t best_id = ss->best_id;
    const nn_space *sp = run->sp;
    if (run->json) {
        printf("{\"trial\":%lld,\"state\":\"%s\",\"epochs\":%d", (long long)t->id,
               trial_state_name(t->state), t->epochs);
        for (int m = 0; m < M_COUNT; m++)
            if (isfinite(t->metric[m])) printf(",\"%s\":%.6g", sp_metric_name((sp_metric)m), t->metric[m]);
        printf(",\"params\":{");
        int first = 1;
        for (int i = 0; i < sp->num_params; i++) {
            if (!t->active[i] || sp->param[i].kind == SP_FIXED) continue;
            char text[SP_WORD + 32];
            sp_value_text(&sp->param[i], t->value[i], text, sizeof text);
            printf("%s", first ? "" : ",");
            cli_json_string(stdout, sp->param[i].name);
            printf(":");
            cli_json_string(stdout, text);
            first = 0;
        }
        printf("}");
        if (t->error[0]) {
            printf(",\"error\":");
            cli_json_string(stdout, t->error);
        }
        printf("}\n");
    } else {
        printf("trial %3lld %-10s", (long long)t->id, trial_state_name(t->state));
        double acc = t->epochs > 0 ? t->val_accuracy[t->epochs - 1] : NAN;
        if (isfinite(acc)) printf(" val %6.2f%% (%d ep)", 100 * acc, t->epochs);
        if (isfinite(t->metric[M_LATENCY_MS])) printf("  %.3f ms", t->metric[M_LATENCY_MS]);
        if (isfinite(t->metric[M_TRAIN_SECONDS])) printf("  %.1f s", t->metric[M_TRAIN_SECONDS]);
        if (best_id > 0) printf("  | best %.2f%% (#%lld)", 100 * best, (long long)best_id);
        /* the live view: how far the search is (a line per trial, which a
         * log file keeps as well as a terminal) */
        printf("  [%d done, %d pruned, %d running", ss->count[TRIAL_COMPLETE] +
               ss->count[TRIAL_PRUNED] + ss->count[TRIAL_INFEASIBLE] + ss->count[TRIAL_FAILED],
               ss->count[TRIAL_PRUNED], ss->count[TRIAL_RUNNING]);
        if (run->budget_s > 0) {
            double left = run->budget_s - (nn_wall_time() - run->start);
            printf(", %.0f min left", left > 0 ? left / 60 : 0);
        }
        printf("]");
        printf("  %s%s", r ? r->params : "", r && r->params[0] ? " " : "");
        for (int i = 0; i < sp->num_params; i++) {
            if (!t->active[i] || sp->param[i].kind == SP_FIXED ||
                !strncmp(sp->param[i].name, "model.", 6))
                continue;
            char text[SP_WORD + 32];
            sp_value_text(&sp->param[i], t->value[i], text, sizeof text);
            printf("%s=%s ", sp->param[i].name, text);
        }
        if (t->error[0]) printf(" (%s)", t->error);
        printf("\n");
    }
    fflush(stdout);
}

/* The best feasible complete trial on the first objective: its value and id. */
static void best_so_far(const nn_space *sp, const trial *t, int n, double *best, int64_t *id) {
    *id = 0;
    *best = NAN;
    for (int i = 0; i < n; i++) {
        double obj[SP_MAX_OBJECTIVES];
        if (t[i].state != TRIAL_COMPLETE || !trial_feasible(sp, &t[i]) ||
            !trial_objectives(sp, &t[i], obj))
            continue;
        if (*id == 0 || obj[0] < (sp->objective[0].maximize ? -*best : *best)) {
            *best = sp->objective[0].maximize ? -obj[0] : obj[0];
            *id = t[i].id;
        }
    }
}

/* Trains (or resumes) trial t; records its metrics and final state. */
static nn_status run_trial(search_run *run, nn_study *study, trial *t, int resume) {
    const nn_space *sp = run->sp;
    trial_recipe r;
    char err[512] = "";
    nn_ctx *ctx = NULL;
    nn_net *net = NULL;
    nn_trainer *trainer = NULL;
    trial_view v = {.run = run, .study = study};
    nn_status st = NN_OK, fatal = NN_OK;
    for (int m = 0; m < M_COUNT; m++) t->metric[m] = NAN;
    nn_precision precision = NN_PRECISION_FP32;
    nn_train_config cfg;
    if (!(ctx = cli_ctx_new(run->env, 1))) {
        snprintf(err, sizeof err, "out of memory");
        fatal = NN_ENOMEM;
        goto done;
    }
    if (recipe_build(run, t->value, t->active, &r, err, sizeof err)) {
        /* a value the recipe refuses (out of an option's range): this
         * trial fails, the search goes on */
        nn_ctx_fail(ctx, NN_EINVAL, "%s", err);
        goto failed;
    }
    nn_ctx_free(ctx);
    /* threads: the trial's own, else --threads, else this machine's tuned
     * settings for the trial's model and batch (one worker), else the
     * worker's share of the cores: followed through the registry of nnopt
     * processes (share.c) while it trains, or the cores / workers without it */
    cli_env tuned_env = *run->env;
    if (!r.o.threads && !run->threads_given && run->workers == 1)
        cli_tuned_settings(run->env, sp->model, r.params, r.o.batch, &r.o.threads, &tuned_env);
    const int shared = !r.o.threads && run->share && run->share->fd >= 0;
    if (!r.o.threads && !shared) r.o.threads = run->threads;
    if (!(ctx = cli_ctx_new(&tuned_env, r.o.threads))) {
        snprintf(err, sizeof err, "out of memory");
        fatal = NN_ENOMEM;
        goto done;
    }
    if (cli_parse_precision("search", run->env, r.o.precision, &precision)) {
        snprintf(err, sizeof err, "precision '%s'", r.o.precision);
        goto done;
    }
    nn_ctx_set_precision(ctx, precision);
    if ((st = cli_train_config(ctx, &r.o, &cfg)) ||
        (st = cli_net_load(ctx, sp->model, r.params, &net)) ||
        (st = cli_check_data(ctx, sp->model, net, &run->train, run->data)))
        goto failed;
    /* the measures that need no training; constraints on them are checked
     * before any training is spent */
    if ((st = measure_model(run, sp->model, r.params, precision, net, &cfg.norm, r.o.batch,
                            t->metric)))
        goto failed;
    if (!trial_feasible(sp, t)) {
        t->state = TRIAL_INFEASIBLE;
        goto record;
    }
    nn_rng init_rng;
    nn_rng_seed(&init_rng, r.o.seed, 1);
    nn_net_init_params(net, &init_rng);
    char ckpt[4200];
    trial_file(run, t->id, "st", ckpt, sizeof ckpt);
    cfg.save = ckpt;
    if ((st = nn_trainer_new(net, &cfg, &run->train, run->val.n ? &run->val : NULL, NULL, &trainer)))
        goto failed;
    if (resume) {
        /* a worker killed while it wrote a checkpoint leaves its temporary file */
        char pattern[4300];
        glob_t g;
        snprintf(pattern, sizeof pattern, "%s.tmp.*", ckpt);
        if (glob(pattern, 0, NULL, &g) == 0)
            for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
        globfree(&g);
    }
    if (resume && access(ckpt, F_OK) == 0) {
        if ((st = nn_trainer_resume(trainer, ckpt))) goto failed;
        /* the epochs reported before the interruption count */
        if (t->epochs > 0 && isfinite(t->epoch_seconds[t->epochs - 1]))
            v.seconds_before = t->epoch_seconds[t->epochs - 1];
        if (t->epochs > (int)nn_trainer_state(trainer)->epoch)
            t->epochs = (int)nn_trainer_state(trainer)->epoch;
    } else {
        t->epochs = 0;
    }
    v.self = *t;
    v.trainer = trainer;
    if (shared) {
        cli_share_follow(run->share, ctx);
        v.share = run->share;
    }
    v.t0 = nn_wall_time();
    nn_train_callbacks cb = {on_epoch_start, on_batch, on_epoch, &v};
    nn_trainer_set_callbacks(trainer, &cb);
    cli_catch_stop_signals(trainer);
    st = nn_trainer_run(trainer);
    cli_catch_stop_signals(NULL);
    cli_progress_clear(&v.bar);
    /* the curve as the callbacks grew it */
    t->val_accuracy = v.self.val_accuracy;
    t->val_loss = v.self.val_loss;
    t->epoch_seconds = v.self.epoch_seconds;
    t->epochs = v.self.epochs;
    if (v.err) {
        st = v.err;
        snprintf(err, sizeof err, "%s", nn_ctx_error(ctx));
        fatal = st; /* the study itself failed */
        goto done;
    }
    t->metric[M_TRAIN_SECONDS] = v.seconds_before + (nn_wall_time() - v.t0);
    if (t->epochs > 0) {
        t->metric[M_VAL_ACCURACY] = t->val_accuracy[t->epochs - 1];
        t->metric[M_VAL_LOSS] = t->val_loss[t->epochs - 1];
    }
    if (st == NN_ESTOPPED) {
        t->state = TRIAL_STOPPED;
        snprintf(err, sizeof err, "%s", v.over_budget ? "budget" : "signal");
        if (!v.over_budget) fatal = NN_ESTOPPED;
    } else if (st) {
        goto failed;
    } else {
        t->state = v.pruned ? TRIAL_PRUNED : TRIAL_COMPLETE;
        if (t->state == TRIAL_COMPLETE && !trial_feasible(sp, t)) t->state = TRIAL_INFEASIBLE;
    }
    goto record;
failed:
    t->state = TRIAL_FAILED;
    snprintf(err, sizeof err, "%s", nn_ctx_error(ctx));
record:
    snprintf(t->error, sizeof t->error, "%s", err);
    if ((st = study_metrics(study, t->id, t->metric)) ||
        (st = study_finish(study, t->id, t->state, err)))
        fatal = st;
done:
    if (fatal && fatal != NN_ESTOPPED) {
        /* a broken recipe or study stops the search: say why */
        fprintf(stderr, "nnopt: %s\n", err[0] ? err : nn_ctx_error(ctx));
    } else {
        trial *all = NULL;
        int n = 0;
        search_status ss = {.best = NAN};
        if (!study_load(study, &all, &n)) {
            best_so_far(sp, all, n, &ss.best, &ss.best_id);
            for (int i = 0; i < n; i++) ss.count[all[i].state]++;
        }
        study_trials_free(all, n);
        print_trial(run, t, &r, &ss);
    }
    nn_trainer_free(trainer);
    nn_net_free(net);
    if (v.share) v.share->ctx = NULL; /* the context goes now */
    nn_ctx_free(ctx);
    recipe_free(&r);
    return fatal;
}

/* --- workers --- */

/* One worker: claims or proposes trials and runs them until the budget, the
 * trial count or the grid is used up. Returns 0, or 1 after a message. */
static int worker(search_run *run, nn_ctx *ctx, int worker_id) {
    nn_study *study = NULL;
    if (study_open(ctx, run->study_path, run->sp, &study)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        return 1;
    }
    /* the worker counts among the nnopt processes on this machine while it
     * trains (a forked worker: its own entry) */
    cli_share share;
    cli_share_join(&share, run->env);
    run->share = &share;
    int rc = 0;
    for (;;) {
        if (run->budget_s > 0 && nn_wall_time() - run->start >= run->budget_s) break;
        if (study_begin(study)) {
            rc = 1;
            break;
        }
        trial *all = NULL;
        int n = 0;
        if (study_load(study, &all, &n)) {
            study_rollback(study);
            rc = 1;
            break;
        }
        trial t;
        memset(&t, 0, sizeof t);
        int resume = 0, stop = 0;
        /* interrupted work first: a trial stopped by the budget or a signal,
         * or one whose worker died, continues from its checkpoint */
        for (int i = 0; i < n && !resume; i++)
            if (all[i].state == TRIAL_STOPPED ||
                (all[i].state == TRIAL_RUNNING && study_owner_gone(&all[i], 3600))) {
                t = all[i];
                all[i].val_accuracy = all[i].val_loss = all[i].epoch_seconds = NULL;
                resume = 1;
            }
        if (resume) {
            if (study_claim(study, t.id)) rc = 1;
        } else if (run->max_trials > 0 && n >= run->max_trials) {
            stop = 1;
        } else {
            nn_rng rng;
            nn_rng_seed(&rng, run->seed, 1000 + (uint64_t)n);
            if (sampler_propose(run->sampler, run->sp, all, n, &rng, t.value, t.active)) {
                stop = 1; /* the grid is done */
            } else {
                int64_t next = n ? all[n - 1].id + 1 : 1;
                t.bracket = pruner_bracket(&run->pruner, next);
                if (study_insert(study, t.value, t.active, t.bracket, &t.id)) rc = 1;
            }
        }
        study_trials_free(all, n);
        if (rc || study_commit(study)) {
            study_rollback(study);
            rc = 1;
            free(t.val_accuracy), free(t.val_loss), free(t.epoch_seconds);
            break;
        }
        if (stop) break;
        nn_status st = run_trial(run, study, &t, resume);
        free(t.val_accuracy), free(t.val_loss), free(t.epoch_seconds);
        if (st == NN_ESTOPPED) {
            rc = 128 + cli_stop_signal();
            break;
        }
        if (st) {
            rc = 1;
            break;
        }
    }
    if (rc == 1 && nn_ctx_error(ctx)[0]) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    (void)worker_id;
    run->share = NULL;
    cli_share_leave(&share);
    study_close(study);
    return rc;
}

/* --- after the search --- */

/* The finalists: the Pareto front (one objective: the best `k`), feasible
 * complete trials, best first. Returns how many (at most max). */
static int finalists(const nn_space *sp, const trial *t, int n, int k, int *out, int max) {
    int m = sp->num_objectives, c = 0;
    double *obj = malloc(sizeof(double) * (size_t)(n ? n : 1) * (size_t)m);
    int *idx = malloc(sizeof(int) * (size_t)(n ? n : 1)), *rank = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!obj || !idx || !rank) {
        free(obj), free(idx), free(rank);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (t[i].state == TRIAL_COMPLETE && trial_feasible(sp, &t[i]) &&
            trial_objectives(sp, &t[i], obj + (size_t)c * m))
            idx[c++] = i;
    pareto_ranks(obj, c, m, rank);
    int count = 0;
    /* several objectives: the front; one: the k best (rank by sorting) */
    for (int pass = 0; pass < c && count < max; pass++) {
        int best = -1;
        for (int j = 0; j < c; j++) {
            int taken = 0;
            for (int q = 0; q < count; q++) taken |= out[q] == idx[j];
            if (taken || (m > 1 && rank[j] != 0)) continue;
            if (best < 0 || obj[(size_t)j * m] < obj[(size_t)best * m]) best = j;
        }
        if (best < 0 || (m == 1 && count >= k)) break;
        out[count++] = idx[best];
    }
    free(obj), free(idx), free(rank);
    return count;
}

/* Loads trial t's model with its checkpoint's weights. */
static nn_status load_trained(search_run *run, nn_ctx *ctx, const trial *t, trial_recipe *r,
                              nn_net **net) {
    char err[512], ckpt[4200];
    if (recipe_build(run, t->value, t->active, r, err, sizeof err))
        return nn_ctx_fail(ctx, NN_EINVAL, "%s", err);
    trial_file(run, t->id, "st", ckpt, sizeof ckpt);
    nn_status st = cli_net_load(ctx, run->sp->model, r->params, net);
    if (!st) st = nn_net_plan(*net, 256);
    if (!st) st = nn_checkpoint_load(ctx, ckpt, *net, NULL, NULL);
    return st;
}

/* Test accuracy of the finalists that have none yet. */
static int measure_finalists(search_run *run, nn_ctx *ctx, nn_study *study, const trial *t,
                             const int *fin, int nf) {
    for (int f = 0; f < nf; f++) {
        const trial *tr = &t[fin[f]];
        if (isfinite(tr->test_accuracy)) continue;
        char ckpt[4200];
        trial_file(run, tr->id, "st", ckpt, sizeof ckpt);
        if (access(ckpt, R_OK) != 0) {
            /* trained on another machine whose trials folder is not shared */
            fprintf(stderr, "nnopt: trial %lld: no checkpoint %s here (trained elsewhere?); its "
                    "test accuracy is not measured\n", (long long)tr->id, ckpt);
            continue;
        }
        trial_recipe r;
        nn_net *net = NULL;
        double loss, acc;
        float *x = malloc(sizeof(float) * 256 * (size_t)run->test.c * run->test.h * run->test.w);
        int32_t *y = malloc(sizeof(int32_t) * 256);
        nn_normalize norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};
        nn_status st = !x || !y ? nn_ctx_fail(ctx, NN_ENOMEM, "out of memory")
                                : load_trained(run, ctx, tr, &r, &net);
        if (!st) {
            norm = (nn_normalize){r.o.mean, r.o.std};
            st = nn_evaluate(net, &run->test, &norm, 256, x, y, &loss, &acc);
        }
        if (!st) st = study_test_accuracy(study, tr->id, acc);
        free(x);
        free(y);
        nn_net_free(net);
        recipe_free(&r);
        if (st) {
            fprintf(stderr, "nnopt: trial %lld: %s\n", (long long)tr->id, nn_ctx_error(ctx));
            return 1;
        }
    }
    return 0;
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    int bad = !a || !b;
    char buf[1 << 16];
    size_t n;
    while (!bad && (n = fread(buf, 1, sizeof buf, a)) > 0) bad = fwrite(buf, 1, n, b) != n;
    if (a) bad |= ferror(a), fclose(a);
    if (b) bad |= fclose(b) != 0;
    return bad;
}

/* DIR/model.nn (the trial's model, expanded), DIR/recipe.ini, DIR/weights.st. */
static int export_best(search_run *run, nn_ctx *ctx, const trial *t, const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "nnopt: %s: cannot create the export folder: %s\n", dir, strerror(errno));
        return 1;
    }
    trial_recipe r;
    nn_net *net = NULL;
    char path[4200], ckpt[4200], header[512];
    int rc = 1;
    if (load_trained(run, ctx, t, &r, &net)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    snprintf(path, sizeof path, "%s/model.nn", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "nnopt: %s: cannot write: %s\n", path, strerror(errno));
        goto out;
    }
    fprintf(f, "# trial %lld of the search %s (model %s%s%s), expanded\n%s", (long long)t->id,
            run->study_path, run->sp->model, r.params[0] ? " with " : "", r.params,
            nn_net_model_text(net));
    if (fclose(f) != 0) {
        fprintf(stderr, "nnopt: %s: write error\n", path);
        goto out;
    }
    /* the recipe trains on the whole training set: no validation split; and
     * on the machine's own threads unless the space chose them */
    r.o.val = 0;
    r.o.train_limit = 0;
    if (!r.o.threads) r.o.threads = CLI_UNSET_I;
    snprintf(path, sizeof path, "%s/recipe.ini", dir);
    snprintf(header, sizeof header,
             "trial %lld of the search %.150s; train it with: nnopt train %.100s/model.nn --config %.150s",
             (long long)t->id, run->study_path, dir, path);
    if (cli_recipe_write(path, r.table, header)) goto out;
    trial_file(run, t->id, "st", ckpt, sizeof ckpt);
    snprintf(path, sizeof path, "%s/weights.st", dir);
    if (copy_file(ckpt, path)) {
        fprintf(stderr, "nnopt: %s: cannot copy the checkpoint %s\n", path, ckpt);
        goto out;
    }
    printf("exported trial %lld to %s/: model.nn, recipe.ini, weights.st (nnopt eval %s/model.nn "
           "--weights %s/weights.st)\n",
           (long long)t->id, dir, dir, dir);
    rc = 0;
out:
    nn_net_free(net);
    recipe_free(&r);
    return rc;
}

static void print_summary(const search_run *run, const trial *t, int n, const int *fin, int nf) {
    int count[TRIAL_STOPPED + 1] = {0};
    for (int i = 0; i < n; i++) count[t[i].state]++;
    if (run->json) {
        printf("{\"summary\":{\"trials\":%d", n);
        for (int s = 0; s <= TRIAL_STOPPED; s++)
            printf(",\"%s\":%d", trial_state_name((trial_state)s), count[s]);
        printf(",\"finalists\":[");
        for (int f = 0; f < nf; f++) {
            const trial *tr = &t[fin[f]];
            printf("%s{\"trial\":%lld,\"val_accuracy\":%.6g", f ? "," : "", (long long)tr->id,
                   tr->metric[M_VAL_ACCURACY]);
            if (isfinite(tr->test_accuracy)) printf(",\"test_accuracy\":%.6g", tr->test_accuracy);
            printf(",\"latency_ms\":%.6g}", tr->metric[M_LATENCY_MS]);
        }
        printf("]}}\n");
        return;
    }
    printf("\n%d trials: %d complete, %d pruned, %d infeasible, %d failed, %d stopped, %d running\n",
           n, count[TRIAL_COMPLETE], count[TRIAL_PRUNED], count[TRIAL_INFEASIBLE],
           count[TRIAL_FAILED], count[TRIAL_STOPPED], count[TRIAL_RUNNING]);
    if (!nf) {
        printf("no complete trial yet\n");
        return;
    }
    printf("%s:\n  trial   val acc  test acc  latency ms   params  train s\n",
           run->sp->num_objectives > 1 ? "Pareto front" : "best trials");
    for (int f = 0; f < nf; f++) {
        const trial *tr = &t[fin[f]];
        printf("  %5lld  %7.2f%%  ", (long long)tr->id, 100 * tr->metric[M_VAL_ACCURACY]);
        if (isfinite(tr->test_accuracy)) printf("%7.2f%%", 100 * tr->test_accuracy);
        else printf("%8s", "-");
        printf("  %10.3f  %7.0f  %7.0f\n", tr->metric[M_LATENCY_MS], tr->metric[M_PARAMS],
               tr->metric[M_TRAIN_SECONDS]);
    }
}

/* "30m", "2h", "90s", "600": seconds; -1 if not a duration. */
static double parse_duration(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !isfinite(v)) return -1;
    if (!*end || !strcmp(end, "s")) return v;
    if (!strcmp(end, "m")) return v * 60;
    if (!strcmp(end, "h")) return v * 3600;
    return -1;
}

/* Every parameter at its first value (a choice's first word, a range's low
 * end), conditions applied: the trial that decides the full training's
 * epochs when the space does not search them. */
static void first_values(const nn_space *sp, double *value, unsigned char *active) {
    for (int i = 0; i < sp->num_params; i++)
        value[i] = sp->param[i].kind == SP_INT || sp->param[i].kind == SP_FLOAT ? sp->param[i].lo : 0;
    sp_activate(sp, value, active);
}

/* The model parameters and recipe keys of the space exist, and every value
 * of a choice or fixed parameter is one its option takes: checked once, with
 * the space's line, before any trial. */
static int check_space(search_run *run, nn_ctx *ctx) {
    const nn_space *sp = run->sp;
    trial_recipe r;
    memset(&r, 0, sizeof r);
    cli_train_opts_init(&r.o);
    int n = cli_train_opts_table(&r.o, r.table);
    r.table[n] = (cli_opt){0};
    char params[2048] = "";
    size_t len = 0;
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        char text[SP_WORD + 32];
        sp_value_text(p, p->kind == SP_INT || p->kind == SP_FLOAT ? p->lo : 0, text, sizeof text);
        if (!strncmp(p->key, "model.", 6)) {
            /* the first variant of each model parameter, for the model check */
            int seen = 0;
            for (int j = 0; j < i; j++) seen |= !strcmp(sp->param[j].key, p->key);
            int w = seen ? 0 : snprintf(params + len, sizeof params - len, "%s%s=%s", len ? "," : "",
                                        p->key + 6, text);
            if (w < 0 || (size_t)w >= sizeof params - len) {
                fprintf(stderr, "nnopt: %s:%d: too many model parameters\n", sp->path, p->line);
                return 1;
            }
            len += (size_t)w;
            continue;
        }
        const cli_opt *o = find_ini(r.table, p->key);
        if (!o || reserved_key(p->key)) {
            fprintf(stderr, "nnopt: %s:%d: %s is not a recipe key a search can set (the keys of "
                    "nnopt train's recipe files, data.* excepted; docs/search.md)\n",
                    sp->path, p->line, p->key);
            return 1;
        }
        for (int k = 0; k < p->num_choices; k++) {
            cli_train_opts scratch = r.o;
            cli_opt probe = *o;
            probe.dst = (char *)&scratch + ((char *)o->dst - (char *)&r.o);
            char why[256];
            if (cli_opt_set(&probe, p->choice[k], why, sizeof why)) {
                fprintf(stderr, "nnopt: %s:%d: %s = %s: %s\n", sp->path, p->line, p->name,
                        p->choice[k], why);
                return 1;
            }
        }
    }
    nn_net *net = NULL;
    if (cli_net_load(ctx, sp->model, params, &net)) {
        fprintf(stderr, "nnopt: %s: %s\n", sp->path, nn_ctx_error(ctx));
        return 1;
    }
    nn_net_free(net);
    return 0;
}

int cmd_search(int argc, char **argv, const cli_env *env) {
    const char *study_path = NULL, *sampler = "tpe", *pruner = "asha", *budget = NULL,
               *export_dir = NULL, *data = NN_DEFAULT_DATA_DIR;
    const char *trials_dir = NULL;
    int trials = 0, workers = 1, threads = 0, json = 0, finalist_count = 3, min_epochs = 0;
    uint64_t seed = 1;
    const cli_opt opts[] = {
        {"--study", CLI_STR, &study_path, "FILE|URI", "the study: an SQLite file (default: the space's name with .study) or a postgresql:// URI — an existing one is continued", 0, 0, NULL},
        {"--trials-dir", CLI_STR, &trials_dir, "DIR", "the trials' checkpoints (default: the study's file with .trials; PostgreSQL: DATABASE[.SCHEMA].trials here)", 0, 0, NULL},
        {"--budget", CLI_STR, &budget, "TIME", "wall time for this run: 30m, 2h, 600 (seconds); trials still training then stop and resume next time", 0, 0, NULL},
        {"--trials", CLI_INT, &trials, "N", "stop once the study holds N trials", 0, 1 << 30, NULL},
        {"--sampler", CLI_STR, &sampler, "NAME", "tpe (default), nsga2 (several objectives), random or grid", 0, 0, NULL},
        {"--pruner", CLI_STR, &pruner, "NAME", "asha (default), hyperband, median or none", 0, 0, NULL},
        {"--min-epochs", CLI_INT, &min_epochs, "E", "the pruners' first rung (default: the space's min_epochs, 1)", 1, 1000000, NULL},
        {"--workers", CLI_INT, &workers, "N", "trials trained at once by N processes sharing the study (default 1)", 1, 256, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads per worker (default: the cores / workers), unless the space sets train.threads", 1, 1024, NULL},
        {"--seed", CLI_U64, &seed, "S", "the samplers' seed (default 1)", 0, 0, NULL},
        {"--data", CLI_STR, &data, "DIR", "IDX data set (default " NN_DEFAULT_DATA_DIR ")", 0, 0, NULL},
        {"--finalists", CLI_INT, &finalist_count, "K", "best trials measured on the test set at the end (default 3; several objectives: the Pareto front)", 0, 100, NULL},
        {"--export", CLI_STR, &export_dir, "DIR", "write the best trial's model.nn, recipe.ini and weights.st into DIR", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "one JSON object per trial, then a summary object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int pr = cli_parse("search", "SPACE [options]",
                       "Searches a model's structure, its training recipe and hardware settings\n"
                       "together (docs/search.md): each trial draws values from the space file,\n"
                       "trains on a validation split carved from the training set, and is pruned\n"
                       "early when it falls behind. Every trial is kept in the study (SQLite, or\n"
                       "PostgreSQL for workers on several machines):\n"
                       "run the same command again to continue a search that was stopped or\n"
                       "killed; run it on several machines against one study to share it.\n"
                       "Finalists are measured on the test set at the end.",
                       argc, argv, opts, pos, 1, &npos);
    if (pr) return pr == 2 ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "nnopt search: expected one SPACE file (see nnopt search --help)\n");
        return 2;
    }
    search_run run = {.env = env, .data = data, .seed = seed, .json = json};
    int sk = sampler_from_name(sampler), pk = pruner_from_name(pruner);
    if (sk < 0 || pk < 0) {
        fprintf(stderr, "nnopt search: unknown %s '%s' (expected %s)\n", sk < 0 ? "sampler" : "pruner",
                sk < 0 ? sampler : pruner,
                sk < 0 ? "tpe, nsga2, random or grid" : "asha, hyperband, median or none");
        return 2;
    }
    run.sampler = (sampler_kind)sk;
    if (budget && (run.budget_s = parse_duration(budget)) < 0) {
        fprintf(stderr, "nnopt search: --budget: expected a time such as 30m, 2h or 600, got '%s'\n",
                budget);
        return 2;
    }
    run.max_trials = trials;
    int cores = nn_cpu_cores();
    run.threads = threads ? threads : (cores / workers > 0 ? cores / workers : 1);
    run.threads_given = threads > 0;
    run.workers = workers;
    run.tty = isatty(fileno(stderr)) && !json;
    nn_ctx *ctx = cli_ctx_new(env, 1);
    nn_space *sp = NULL;
    nn_study *study = NULL;
    trial *all = NULL;
    int n = 0, rc = 1;
    char default_study[4096];
    if (!ctx) {
        fprintf(stderr, "nnopt: out of memory\n");
        return 1;
    }
    if (sp_load(ctx, pos[0], &sp)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    run.sp = sp;
    if (!study_path) {
        const char *base = strrchr(pos[0], '/') ? strrchr(pos[0], '/') + 1 : pos[0];
        const char *dot = strrchr(base, '.');
        snprintf(default_study, sizeof default_study, "%.*s.study",
                 (int)(dot && dot != base ? dot - base : (long)strlen(base)), base);
        study_path = default_study;
    }
    run.study_path = study_path;
    if (trials_dir) {
        if (snprintf(run.trials_dir, sizeof run.trials_dir, "%s", trials_dir) >=
            (int)sizeof run.trials_dir) {
            fprintf(stderr, "nnopt: %s: path too long\n", trials_dir);
            goto out;
        }
    } else if (study_trials_dir(ctx, study_path, run.trials_dir, sizeof run.trials_dir)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    run.pruner = (pruner_cfg){(pruner_kind)pk, min_epochs ? min_epochs : sp->min_epochs, 0,
                              sp->eta, 5};
    /* the full training of a trial: the space's train.epochs, else train's default */
    {
        double v[SP_MAX_PARAMS];
        unsigned char a[SP_MAX_PARAMS];
        first_values(sp, v, a);
        trial_recipe r;
        char err[512];
        if (recipe_build(&run, v, a, &r, err, sizeof err) == 0) run.pruner.max_epochs = r.o.epochs;
        int e = sp_find(sp, "train.epochs");
        if (e >= 0 && sp->param[e].kind == SP_INT) run.pruner.max_epochs = (int)sp->param[e].hi;
        for (int k = 0; e >= 0 && sp->param[e].kind == SP_CHOICE && k < sp->param[e].num_choices; k++)
            if (atoi(sp->param[e].choice[k]) > run.pruner.max_epochs)
                run.pruner.max_epochs = atoi(sp->param[e].choice[k]);
        recipe_free(&r);
    }
    if (check_space(&run, ctx)) goto out;
    if (study_open(ctx, study_path, sp, &study) || study_set(study, "sampler", sampler) ||
        study_set(study, "pruner", pruner)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    /* after the study opened: an unreachable server leaves no folder behind */
    if (mkdir(run.trials_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "nnopt: %s: cannot create the trials folder: %s\n", run.trials_dir,
                strerror(errno));
        goto out;
    }
    {
        cli_train_opts o;
        cli_train_opts_init(&o);
        o.data = data;
        o.val = sp->val;
        o.train_limit = sp->train_limit;
        if (cli_load_splits(ctx, &o, &run.train, &run.val, &run.test)) {
            fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
            goto out;
        }
    }
    char shown[4096];
    study_display_path(study_path, shown, sizeof shown);
    if (!json)
        printf("search %s: study %s, sampler %s, pruner %s, %d worker%s x %d thread%s, "
               "%lld training / %lld validation images%s%s\n",
               pos[0], shown, sampler, pruner, workers, workers > 1 ? "s" : "", run.threads,
               run.threads > 1 ? "s" : "", (long long)run.train.n, (long long)run.val.n,
               budget ? ", budget " : "", budget ? budget : "");
    fflush(stdout);
    if (measure_references(&run, sp, study, ctx)) goto out;
    fflush(stdout);
    run.start = nn_wall_time();
    if (workers == 1) {
        int w = worker(&run, ctx, 0);
        if (w) {
            rc = w;
            goto out;
        }
    } else {
        /* each worker its own process, sharing the study through SQLite's locks */
        pid_t pid[256];
        int started = 0;
        for (int w = 0; w < workers; w++) {
            fflush(NULL);
            pid[w] = fork();
            if (pid[w] == 0) {
                nn_ctx *wctx = cli_ctx_new(env, 1);
                _exit(wctx ? worker(&run, wctx, w) : 1);
            }
            if (pid[w] < 0) {
                fprintf(stderr, "nnopt: cannot start worker %d: %s\n", w, strerror(errno));
                break;
            }
            started++;
        }
        /* Ctrl-C reaches the workers, which stop their trials resumably;
         * this process waits for them */
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        int failed = 0;
        for (int w = 0; w < started; w++) {
            int status;
            while (waitpid(pid[w], &status, 0) < 0 && errno == EINTR) {}
            failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        }
        if (failed || started < workers) goto out;
    }
    if (study_load(study, &all, &n)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    int fin[100];
    int nf = finalists(sp, all, n, finalist_count, fin, finalist_count > 0 ? 100 : 0);
    if (measure_finalists(&run, ctx, study, all, fin, nf)) goto out;
    study_trials_free(all, n);
    all = NULL;
    if (study_load(study, &all, &n)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        goto out;
    }
    print_summary(&run, all, n, fin, nf);
    if (export_dir) {
        int best[1];
        if (!finalists(sp, all, n, 1, best, 1)) {
            fprintf(stderr, "nnopt: %s: no complete feasible trial to export\n", study_path);
            goto out;
        }
        if (export_best(&run, ctx, &all[best[0]], export_dir)) goto out;
    }
    rc = 0;
out:
    study_trials_free(all, n);
    study_close(study);
    nn_dataset_free(&run.train);
    nn_dataset_free(&run.val);
    nn_dataset_free(&run.test);
    sp_free(sp);
    nn_ctx_free(ctx);
    return rc;
}
