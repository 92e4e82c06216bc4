/*
 * cmd_compare.c - `nnopt compare MODEL...`: the structure axis as one command.
 * Every model is trained by the library trainer with the same data, recipe
 * (any of nnopt train's options; default SGD lr 0.01, momentum 0.9, 1 epoch),
 * batch and seeds, then measured: parameters, forward FLOPs, activation
 * memory, training seconds per epoch, inference latency at batch 1 and 256
 * (eval mode, medians), test accuracy. Prints a table (or JSON) and writes an
 * SVG of test accuracy against batch-1 latency, one labelled point per model.
 */
#include "cli/cli.h"
#include "tools/svg.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#define MAX_MODELS 32

typedef struct {
    const char *path;
    char name[64];
    int64_t params, flops, act_bytes;
    double train_s, lat1_ms, lat256_ms, accuracy, accuracy_sd, test_loss;
    int has_lat256;     /* the test set holds 256 images */
} result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of an eval-mode forward pass on a batch of n. */
static nn_status latency_ms(nn_net *net, int n, const float *x, int runs, double *ms) {
    nn_status st = nn_net_plan(net, n);
    if (st) return st;
    int was = nn_net_training(net);
    nn_net_set_training(net, 0);
    double t[64];
    for (int r = -2; r < runs; r++) { /* two warm-up runs */
        double t0 = nn_wall_time();
        if ((st = nn_net_forward(net, x, NULL, n, NULL))) break;
        if (r >= 0) t[r] = (nn_wall_time() - t0) * 1e3;
    }
    nn_net_set_training(net, was);
    if (st) return st;
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    *ms = t[runs / 2];
    return NN_OK;
}

/* What compare prints while it trains: a progress bar per epoch, and a CSV
 * log per model and seed when --save-dir is given. */
typedef struct {
    cli_progress bar;
    int tty;
    char label[32];
    int64_t first_batch;
    FILE *log;
} compare_view;

static void on_epoch_start(void *user, int64_t epoch, int64_t first_batch, int64_t batches) {
    compare_view *v = user;
    char label[48];
    snprintf(label, sizeof label, "%.20s e%lld", v->label, (long long)epoch + 1);
    v->first_batch = first_batch;
    cli_progress_start(&v->bar, stderr, v->tty, batches - first_batch, label);
}

static void on_batch(void *user, const nn_batch_report *r) {
    compare_view *v = user;
    cli_progress_update(&v->bar, r->batch - v->first_batch, r->mean_loss);
}

static int on_epoch(void *user, const nn_epoch_report *r) {
    compare_view *v = user;
    cli_progress_clear(&v->bar);
    if (v->log) {
        fprintf(v->log, "%lld,%lld,%.6f,", (long long)r->epoch, (long long)r->step, r->train_loss);
        if (r->has_val) fprintf(v->log, "%.6f,%.4f,", r->val_loss, 100.0 * r->val_accuracy);
        fprintf(v->log, "%.3f,%.1f\n", r->seconds, r->images_per_s);
        fflush(v->log);
    }
    return 0;
}

/* Trains one model with one seed; the test set is evaluated after training
 * only. Accuracy and seconds per epoch into acc and train_s; with --save-dir
 * the checkpoint and the log are kept as DIR/NAME.seedS.st and .csv. */
static nn_status train_once(nn_ctx *ctx, nn_net *net, const nn_train_config *cfg,
                            const nn_dataset *train, const nn_dataset *val,
                            const nn_dataset *test, const char *save_dir, const char *name,
                            int tty, double *acc, double *loss, double *train_s) {
    nn_trainer *t = NULL;
    compare_view v = {.tty = tty};
    char ckpt[4096], log[4096];
    nn_train_config c = *cfg;
    snprintf(v.label, sizeof v.label, "%s s%llu", name, (unsigned long long)cfg->seed);
    nn_rng rng;
    nn_rng_seed(&rng, cfg->seed, 1);
    nn_net_init_params(net, &rng);
    if (save_dir) {
        snprintf(ckpt, sizeof ckpt, "%s/%s.seed%llu.st", save_dir, name, (unsigned long long)cfg->seed);
        snprintf(log, sizeof log, "%s/%s.seed%llu.csv", save_dir, name, (unsigned long long)cfg->seed);
        c.save = ckpt;
        if (!(v.log = fopen(log, "w")))
            return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open the log for writing", log);
        fprintf(v.log, "epoch,step,train_loss,%sseconds,images_per_s\n",
                val && val->n ? "val_loss,val_accuracy," : "");
    }
    nn_status st = nn_trainer_new(net, &c, train, val, NULL, &t);
    if (!st) {
        nn_train_callbacks cb = {on_epoch_start, on_batch, on_epoch, &v};
        nn_trainer_set_callbacks(t, &cb);
        double t0 = nn_wall_time();
        st = nn_trainer_run(t);
        *train_s = (nn_wall_time() - t0) / cfg->epochs;
    }
    cli_progress_clear(&v.bar);
    if (!st) st = nn_trainer_evaluate(t, test, loss, acc);
    nn_trainer_free(t);
    if (v.log && fclose(v.log) && !st) st = nn_ctx_fail(ctx, NN_EIO, "%s: write error", log);
    return st;
}

static nn_status run_model(nn_ctx *ctx, result *r, const char *model_params,
                           const nn_train_config *cfg, int seeds,
                           const nn_dataset *train, const nn_dataset *val,
                           const nn_dataset *test, const char *data_dir, const char *save_dir,
                           int tty) {
    nn_net *net = NULL;
    float *x = NULL;
    nn_status st;
    if ((st = cli_net_load(ctx, r->path, model_params, &net)) ||
        (st = cli_check_data(ctx, r->path, net, train, data_dir)) ||
        (st = nn_net_plan(net, cfg->batch)))
        goto out;
    for (int i = 0; i < nn_net_num_layers(net); i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        r->params += li.params;
        r->flops += li.flops;
        r->act_bytes += li.act_bytes;
    }
    double sum = 0.0, sum2 = 0.0, secs = 0.0, loss_sum = 0.0;
    for (int s = 0; s < seeds; s++) {
        nn_train_config c = *cfg;
        c.seed = cfg->seed + (uint64_t)s;
        double acc = 0.0, loss = 0.0, train_s = 0.0;
        if ((st = train_once(ctx, net, &c, train, val, test, save_dir, r->name, tty, &acc, &loss,
                             &train_s)))
            goto out;
        sum += acc;
        sum2 += acc * acc;
        secs += train_s;
        loss_sum += loss;
    }
    r->accuracy = sum / seeds;
    r->accuracy_sd = seeds > 1 ? sqrt(fmax(0.0, (sum2 - sum * sum / seeds) / (seeds - 1))) : 0.0;
    r->test_loss = loss_sum / seeds;
    r->train_s = secs / seeds;
    /* latency of the last seed's weights, in eval mode */
    size_t per = (size_t)train->c * train->h * train->w;
    int32_t *y = NULL;
    x = malloc((size_t)256 * per * sizeof(float));
    y = malloc((size_t)256 * sizeof(int32_t));
    if (!x || !y) {
        free(y);
        st = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory");
        goto out;
    }
    nn_dataset_gather(test, NULL, 0, test->n < 256 ? test->n : 256, &cfg->norm, x, y);
    free(y);
    r->has_lat256 = test->n >= 256;
    if (r->has_lat256 && (st = latency_ms(net, 256, x, 9, &r->lat256_ms))) goto out;
    st = latency_ms(net, 1, x, 41, &r->lat1_ms);
out:
    free(x);
    nn_net_free(net);
    return st;
}

static nn_status write_plot(nn_ctx *ctx, const char *path, result *res, int n) {
    double xs[MAX_MODELS], ys[MAX_MODELS];
    const char *labels[MAX_MODELS];
    for (int i = 0; i < n; i++) {
        xs[i] = res[i].lat1_ms;
        ys[i] = 100.0 * res[i].accuracy;
        labels[i] = res[i].name;
    }
    nn_svg_series s = {xs, ys, n, 0, NN_SVG_SOLID, 0, 1, labels};
    nn_svg_panel p = {"test accuracy against inference latency", "latency at batch 1 (ms)",
                      "test accuracy (%)", &s, 1, 0, 0, 0, 0, 0};
    nn_svg_chart c = {"nnopt compare", &p, 1, NULL, 0, 640, 420};
    return nn_svg_write(ctx, path, &c);
}

/* A number, or n/a when it was not measured. */
static void print_ms(double ms, int measured, const char *fmt) {
    if (measured) printf(fmt, ms);
    else printf(" %11s", "n/a");
}

int cmd_compare(int argc, char **argv, const cli_env *env) {
    cli_train_opts o;
    cli_train_opts_init(&o);
    o.epochs = 1;
    const char *config = NULL, *out = "compare.svg", *save_dir = NULL;
    int json = 0, quiet = 0, seeds = 1;
    cli_opt opts[CLI_TRAIN_OPTS_MAX + 10];
    int k = 0;
    opts[k++] = (cli_opt){"--config", CLI_STR, &config, "FILE", "read a recipe file first; flags override it", 0, 0, NULL};
    k += cli_train_opts_table(&o, opts + k);
    opts[k++] = (cli_opt){"--seeds", CLI_INT, &seeds, "N", "train each model with N seeds (seed, seed+1, ...): accuracy as mean and standard deviation", 1, 1000, NULL};
    opts[k++] = (cli_opt){"--save-dir", CLI_STR, &save_dir, "DIR", "keep each model's checkpoint and log there (NAME.seedS.st, .csv)", 0, 0, NULL};
    opts[k++] = (cli_opt){"--out", CLI_STR, &out, "FILE", "SVG of accuracy against latency (default compare.svg)", 0, 0, NULL};
    opts[k++] = (cli_opt){"--json", CLI_FLAG, &json, NULL, "one JSON object per model instead of the table", 0, 0, NULL};
    opts[k++] = (cli_opt){"--quiet", CLI_FLAG, &quiet, NULL, "no progress bar", 0, 0, NULL};
    opts[k] = (cli_opt){NULL, 0, NULL, NULL, NULL, 0, 0, NULL};
    const char *pos[MAX_MODELS];
    int npos, rc = 2;
    cli_strings keep = {0};
    nn_ctx *ctx = NULL;
    nn_dataset train = {0}, test = {0}, val = {0};
    nn_train_config cfg;
    nn_precision precision = NN_PRECISION_FP32;
    result res[MAX_MODELS];
    memset(res, 0, sizeof res);
    if (cli_load_configs(argc, argv, opts, &keep)) goto out;
    int r = cli_parse("compare", "MODEL... [options]",
                      "Trains every model with the same data, recipe (default: SGD lr 0.01, momentum\n"
                      "0.9, 1 epoch; every option of nnopt train), batch and seeds, and prints\n"
                      "parameters, FLOPs, activation memory, seconds per epoch, inference latency at\n"
                      "batch 1 and 256 and test accuracy; writes an SVG of accuracy against latency.",
                      argc, argv, opts, pos, MAX_MODELS, &npos);
    if (r) {
        rc = r == 2 ? 0 : 2;
        goto out;
    }
    if (npos < 1) {
        fprintf(stderr, "nnopt compare: expected one or more MODEL files (see nnopt compare --help)\n");
        goto out;
    }
    if (cli_parse_precision("compare", env, o.precision, &precision)) goto out;
    if (o.early_stop && !o.val) {
        fprintf(stderr, "nnopt compare: --early-stop needs a validation split (--val N)\n");
        goto out;
    }
    rc = 1;
    if (!(ctx = cli_ctx_new(env, o.threads))) goto out;
    nn_ctx_set_precision(ctx, precision);
    if (cli_train_config(ctx, &o, &cfg)) {
        fprintf(stderr, "nnopt: %s%s%s\n", config ? config : "", config ? ": " : "", nn_ctx_error(ctx));
        rc = 2;
        goto out;
    }
    if (cli_load_splits(ctx, &o, &train, &val, &test)) goto fail;
    if (!json)
        printf("%-20s %10s %12s %12s %10s %11s %12s %9s%s\n", "model", "params", "MFLOPs", "act KB",
               "s/epoch", "ms @1", "ms @256", "test acc", seeds > 1 ? "  (sd)" : "");
    const int tty = isatty(fileno(stderr)) && !quiet;
    for (int i = 0; i < npos; i++) {
        result *m = &res[i];
        m->path = pos[i];
        const char *base = strrchr(pos[i], '/');
        snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : pos[i]);
        char *dot = strrchr(m->name, '.');
        if (dot && dot != m->name) *dot = '\0';
        if (run_model(ctx, m, o.model_params, &cfg, seeds, &train, &val, &test, o.data, save_dir, tty)) goto fail;
        if (json) {
            printf("{\"model\":");
            cli_json_string(stdout, m->path);
            printf(",\"params\":%lld,\"flops\":%lld,\"activation_bytes\":%lld,\"seconds_per_epoch\":%.3f,"
                   "\"latency_ms_batch1\":%.4f,\"latency_ms_batch256\":",
                   (long long)m->params, (long long)m->flops, (long long)m->act_bytes, m->train_s,
                   m->lat1_ms);
            if (m->has_lat256) printf("%.3f", m->lat256_ms);
            else printf("null");
            printf(",\"test_accuracy\":%.4f,\"test_accuracy_sd\":%.4f,\"seeds\":%d,"
                   "\"test_loss\":%.6f}\n",
                   100.0 * m->accuracy, 100.0 * m->accuracy_sd, seeds, m->test_loss);
        } else {
            printf("%-20s %10lld %12.2f %12.1f %10.2f %11.3f", m->name, (long long)m->params,
                   (double)m->flops / 1e6, (double)m->act_bytes / 1e3, m->train_s, m->lat1_ms);
            print_ms(m->lat256_ms, m->has_lat256, " %11.2f");
            printf(" %8.2f%%", 100.0 * m->accuracy);
            if (seeds > 1) printf("  (%.2f)", 100.0 * m->accuracy_sd);
            printf("\n");
        }
        fflush(stdout);
    }
    if (write_plot(ctx, out, res, npos)) goto fail;
    if (!json) printf("wrote %s\n", out);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
out:
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    nn_dataset_free(&val);
    nn_ctx_free(ctx);
    cli_strings_free(&keep);
    return rc;
}
