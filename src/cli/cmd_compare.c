/*
 * cmd_compare.c - `nnopt compare MODEL...`: the structure axis as one command.
 * Every model is trained with the same data, recipe (SGD lr 0.01, momentum
 * 0.9), batch and seed, then measured: parameters, forward FLOPs, activation
 * memory, training seconds per epoch, inference latency at batch 1 and 256
 * (eval mode, medians), test accuracy. Prints a table (or JSON) and writes an
 * SVG of test accuracy against batch-1 latency, one labelled point per model.
 */
#include "cli/cli.h"
#include "tools/svg.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 32

typedef struct {
    const char *path;
    char name[64];
    int64_t params, flops, act_bytes;
    double train_s, lat1_ms, lat256_ms, accuracy, test_loss;
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

static nn_status run_model(nn_ctx *ctx, result *r, const nn_dataset *train, const nn_dataset *test,
                           const nn_normalize *norm, int epochs, int batch, uint64_t seed,
                           const char *data_dir) {
    nn_net *net = NULL;
    nn_optimizer *opt = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    int64_t *perm = NULL;
    nn_status st;
    if ((st = nn_net_load(ctx, r->path, &net)) ||
        (st = cli_check_data(ctx, r->path, net, train, data_dir)) || (st = nn_net_plan(net, batch)))
        goto out;
    for (int i = 0; i < nn_net_num_layers(net); i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        r->params += li.params;
        r->flops += li.flops;
        r->act_bytes += li.act_bytes;
    }
    nn_rng rng;
    nn_rng_seed(&rng, seed, 1);
    nn_net_init_params(net, &rng);
    nn_optim_config cfg = nn_optim_defaults(NN_OPTIM_SGD);
    cfg.lr = 0.01f;
    cfg.momentum = 0.9f;
    if ((st = nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt))) goto out;
    size_t per = (size_t)train->c * train->h * train->w;
    int big = batch > 256 ? batch : 256;
    x = malloc((size_t)big * per * sizeof(float));
    y = malloc((size_t)big * sizeof(int32_t));
    perm = malloc((size_t)train->n * sizeof(int64_t));
    if (!x || !y || !perm) {
        st = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory");
        goto out;
    }
    nn_rng shuffle;
    nn_rng_seed(&shuffle, seed, 2);
    double t0 = nn_wall_time(), loss;
    for (int e = 0; e < epochs; e++) {
        nn_permutation(perm, train->n, &shuffle);
        if ((st = nn_train_epoch(net, opt, train, perm, batch, norm, x, y, &loss))) goto out;
    }
    r->train_s = (nn_wall_time() - t0) / epochs;
    if ((st = nn_evaluate(net, test, norm, batch, x, y, &r->test_loss, &r->accuracy))) goto out;
    nn_dataset_gather(test, NULL, 0, test->n < big ? test->n : big, norm, x, y);
    if (test->n >= 256 && (st = latency_ms(net, 256, x, 9, &r->lat256_ms))) goto out;
    st = latency_ms(net, 1, x, 41, &r->lat1_ms);
out:
    free(x);
    free(y);
    free(perm);
    nn_optim_free(opt);
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

int cmd_compare(int argc, char **argv) {
    const char *data = NN_DEFAULT_DATA_DIR, *out = "compare.svg";
    int epochs = 1, batch = 64, threads = 0, train_limit = 0, test_limit = 0, json = 0;
    uint64_t seed = 1;
    const cli_opt opts[] = {
        {"--epochs", CLI_INT, &epochs, "N", "epochs per model (default 1)", 1, 100000, NULL},
        {"--batch", CLI_INT, &batch, "N", "batch size (default 64)", 1, 65536, NULL},
        {"--seed", CLI_U64, &seed, "S", "seed (default 1)", 0, 0, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--data", CLI_STR, &data, "DIR", "IDX data directory (default " NN_DEFAULT_DATA_DIR ")", 0, 0, NULL},
        {"--train-limit", CLI_INT, &train_limit, "N", "use only the first N training images", 0, 1 << 30, NULL},
        {"--test-limit", CLI_INT, &test_limit, "N", "use only the first N test images", 0, 1 << 30, NULL},
        {"--out", CLI_STR, &out, "FILE", "SVG of accuracy against latency (default compare.svg)", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "one JSON object per model instead of the table", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[MAX_MODELS];
    int npos;
    int r = cli_parse("compare", "MODEL... [options]",
                      "Trains every model with the same data, recipe (SGD lr 0.01, momentum 0.9),\n"
                      "batch and seed, and prints parameters, FLOPs, activation memory, seconds\n"
                      "per epoch, inference latency at batch 1 and 256 and test accuracy; writes\n"
                      "an SVG of accuracy against latency.",
                      argc, argv, opts, pos, MAX_MODELS, &npos);
    if (r) return r == 2 ? 0 : 2;
    if (npos < 1) {
        fprintf(stderr, "nnopt compare: expected one or more MODEL files (see nnopt compare --help)\n");
        return 2;
    }
    nn_ctx *ctx = nn_ctx_new(threads);
    nn_dataset train = {0}, test = {0};
    nn_normalize norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};
    result res[MAX_MODELS];
    memset(res, 0, sizeof res);
    int rc = 1;
    if (nn_dataset_load_dir(ctx, data, "train", &train) || nn_dataset_load_dir(ctx, data, "t10k", &test))
        goto done;
    if (train_limit && train_limit < train.n) nn_dataset_truncate(&train, train_limit);
    if (test_limit && test_limit < test.n) nn_dataset_truncate(&test, test_limit);
    if (!json)
        printf("%-20s %10s %12s %12s %10s %11s %12s %9s\n", "model", "params", "MFLOPs", "act KB",
               "s/epoch", "ms @1", "ms @256", "test acc");
    for (int i = 0; i < npos; i++) {
        result *m = &res[i];
        m->path = pos[i];
        const char *base = strrchr(pos[i], '/');
        snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : pos[i]);
        char *dot = strrchr(m->name, '.');
        if (dot && dot != m->name) *dot = '\0';
        if (run_model(ctx, m, &train, &test, &norm, epochs, batch, seed, data)) goto done;
        if (json) {
            printf("{\"model\":");
            cli_json_string(stdout, m->path);
            printf(",\"params\":%lld,\"flops\":%lld,\"activation_bytes\":%lld,\"seconds_per_epoch\":%.3f,"
                   "\"latency_ms_batch1\":%.4f,\"latency_ms_batch256\":%.3f,\"test_accuracy\":%.4f,"
                   "\"test_loss\":%.6f}\n",
                   (long long)m->params, (long long)m->flops, (long long)m->act_bytes, m->train_s,
                   m->lat1_ms, m->lat256_ms, 100.0 * m->accuracy, m->test_loss);
        } else {
            printf("%-20s %10lld %12.2f %12.1f %10.2f %11.3f %12.2f %8.2f%%\n", m->name,
                   (long long)m->params, (double)m->flops / 1e6, (double)m->act_bytes / 1e3,
                   m->train_s, m->lat1_ms, m->lat256_ms, 100.0 * m->accuracy);
        }
        fflush(stdout);
    }
    if (write_plot(ctx, out, res, npos)) goto done;
    if (!json) printf("wrote %s\n", out);
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    nn_ctx_free(ctx);
    return rc;
}
