/*
 * cmd_tune.c - `nnopt tune MODEL`: the hardware axis measured rather than
 * guessed. For each batch size, trains a few steps of the model with every
 * thread count worth trying, each convolution kernel family (Winograd or
 * direct, where the CPU runs both) and each arithmetic (fp32, and bf16 where
 * the CPU has it), and keeps the fastest fp32 setting per batch size in the
 * per-machine cache (tune_cache.c) that `nnopt train` and `nnopt search` read
 * when no thread count is given. The settings run with the plane-by-plane
 * kernels' software prefetch chosen per layer (nn_ctx_set_prefetch's auto);
 * the fastest fp32 one is then measured once more with it on for every
 * layer and once with it off, and the fastest of the three kept. bf16
 * changes the arithmetic, so it is never applied behind the user's back: its
 * best rate is reported and cached for the record, and `--precision bf16`
 * (or a search over train.precision) chooses it.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One measured setting: a row of the table, or an object of --json's
 * "settings" (*first: none printed yet for this batch size). */
static void print_setting(int json, int *first, int batch, int threads, const char *conv,
                          int bf16, int prefetch, double rate) {
    if (json) {
        printf("%s{\"threads\":%d,\"conv\":\"%s\",\"precision\":\"%s\",\"prefetch\":\"%s\","
               "\"images_per_s\":%.1f}",
               *first ? "" : ",", threads, conv, bf16 ? "bf16" : "fp32",
               cli_prefetch_name(prefetch), rate);
        *first = 0;
    } else {
        printf("%6d %8d %9s %10s %9s %12.0f\n", batch, threads, conv, bf16 ? "bf16" : "fp32",
               cli_prefetch_name(prefetch), rate);
    }
    fflush(stdout);
}

/* Images/s of one setting: warm-up, then 3 repeats of as many steps as fill
 * about `seconds` (3 at least); the median. 0 with an error in *w. */
static double measure(const cli_env *env, const char *model, const char *params, const char *data,
                      int batch, int threads, nn_precision prec, double seconds, char *err,
                      size_t errsz) {
    cli_workload w;
    double rate = 0;
    if (cli_workload_new(&w, env, model, params, data, batch, threads, prec)) {
        snprintf(err, errsz, "%s", w.ctx ? nn_ctx_error(w.ctx) : "out of memory");
        cli_workload_free(&w);
        return 0;
    }
    double t0 = nn_wall_time();
    int warm = 0;
    while (warm < 2 || (warm < 50 && nn_wall_time() - t0 < 0.3 * seconds)) {
        if (cli_workload_step(&w)) goto fail;
        warm++;
    }
    double per_step = (nn_wall_time() - t0) / warm;
    int steps = (int)(seconds / 3 / (per_step > 1e-6 ? per_step : 1e-6));
    if (steps < 3) steps = 3;
    double r[3];
    for (int k = 0; k < 3; k++) {
        double s0 = nn_wall_time();
        for (int i = 0; i < steps; i++)
            if (cli_workload_step(&w)) goto fail;
        r[k] = (double)steps * batch / (nn_wall_time() - s0);
    }
    qsort(r, 3, sizeof r[0], cmp_double);
    rate = r[1];
    cli_workload_free(&w);
    return rate;
fail:
    snprintf(err, errsz, "%s", nn_ctx_error(w.ctx));
    cli_workload_free(&w);
    return 0;
}

int cmd_tune(int argc, char **argv, const cli_env *env) {
    const char *batches = "64,128,256", *data = NULL, *params = NULL;
    int json = 0, no_save = 0;
    float seconds = 1.5f;
    const cli_opt opts[] = {
        {"--batches", CLI_STR, &batches, "N,N,..", "batch sizes to tune (default 64,128,256)", 0, 0, NULL},
        {"--params", CLI_STR, &params, "K=V,..", "values of the model's parameters (its 'params' line)", 0, 0, NULL},
        {"--data", CLI_STR, &data, "DIR", "time on the first 32 batches of DIR's training set (default: one random batch)", 0, 0, NULL},
        {"--seconds", CLI_FLOAT, &seconds, "S", "timing per setting (default 1.5)", 0.05, 600, NULL},
        {"--no-save", CLI_FLAG, &no_save, NULL, "measure and print only; leave the cache alone", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("tune", "MODEL [options]",
                      "Measures training speed on this machine for every thread count worth\n"
                      "trying, Winograd or direct convolutions, and fp32 or bf16, per batch\n"
                      "size, then the fastest fp32 setting again with the depthwise and\n"
                      "max-pool prefetch on and off for every layer, not picked per layer\n"
                      "(NNOPT_PREFETCH=auto, the default), and stores the fastest\n"
                      "fp32 threads and kernels in the per-machine cache (NNOPT_TUNE_CACHE,\n"
                      "default ~/.cache/nnopt/tune.tsv) that nnopt train and nnopt search use\n"
                      "when no --threads is given.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "nnopt tune: expected one MODEL file (see nnopt tune --help)\n");
        return 2;
    }
    int batch[16], nb = 0;
    {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof buf, "%s", batches);
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *end;
            long b = strtol(t, &end, 10);
            if (*end || b < 1 || b > 65536 || nb == 16) {
                fprintf(stderr, "nnopt tune: --batches: expected up to 16 sizes from 1 to 65536, "
                        "got '%s'\n", batches);
                return 2;
            }
            batch[nb++] = (int)b;
        }
        if (!nb) {
            fprintf(stderr, "nnopt tune: --batches: no batch size given\n");
            return 2;
        }
    }
    /* the model's identity and the machine's */
    nn_ctx *ctx = cli_ctx_new(env, 1);
    nn_net *net = NULL;
    if (!ctx || cli_net_load(ctx, pos[0], params, &net)) {
        fprintf(stderr, "nnopt: %s\n", ctx ? nn_ctx_error(ctx) : "out of memory");
        nn_ctx_free(ctx);
        return 1;
    }
    char machine[512];
    cli_tune_machine(ctx, machine, sizeof machine);
    const uint64_t hash = cli_tune_model_hash(net);
    nn_net_free(net);
    const nn_cpu_features *cpu = nn_cpu_probe();
    const int cores = nn_cpu_cores();
    /* thread counts: all up to 4, else 1, 2, half and all */
    int tc[8], nt = 0;
    if (cores <= 4) {
        for (int t = 1; t <= cores; t++) tc[nt++] = t;
    } else {
        tc[nt++] = 1;
        tc[nt++] = 2;
        if (cores / 2 > 2) tc[nt++] = cores / 2;
        tc[nt++] = cores;
    }
    /* Winograd runs only with AVX-512 kernels: elsewhere there is nothing to choose */
    nn_ctx_set_winograd(ctx, 1);
    const int convs = nn_ctx_winograd(ctx) && !env->conv_set ? 2 : 1;
    const int bf16 = (cpu->avx512_bf16 || cpu->amx_bf16) && nn_ctx_isa(ctx) >= NN_ISA_AVX512BF16;
    nn_ctx_free(ctx);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"machine\":");
        cli_json_string(stdout, machine);
        printf(",\"batches\":[");
    } else {
        printf("tuning %s on %s\n%6s %8s %9s %10s %9s %12s\n", pos[0], machine, "batch",
               "threads", "conv", "precision", "prefetch", "images/s");
    }
    int rc = 0;
    for (int b = 0; b < nb && !rc; b++) {
        cli_tune_entry best = {.batch = batch[b], .prefetch = env->prefetch};
        if (json) printf("%s{\"batch\":%d,\"settings\":[", b ? "," : "", batch[b]);
        int first = 1;
        for (int t = 0; t < nt && !rc; t++)
            for (int c = 0; c < convs && !rc; c++)
                for (int p = 0; p <= bf16 && !rc; p++) {
                    cli_env e = *env;
                    if (convs == 2) e.winograd = c == 0;
                    char err[512] = "";
                    double rate = measure(&e, pos[0], params, data, batch[b], tc[t],
                                          p ? NN_PRECISION_BF16 : NN_PRECISION_FP32, seconds, err,
                                          sizeof err);
                    if (rate <= 0) {
                        fprintf(stderr, "nnopt: %s\n", err);
                        rc = 1;
                        break;
                    }
                    const char *conv = e.winograd && convs == 2 ? "winograd" : "direct";
                    print_setting(json, &first, batch[b], tc[t], conv, p, env->prefetch, rate);
                    if (p) {
                        if (rate > best.bf16_images_per_s) best.bf16_images_per_s = rate;
                    } else if (rate > best.images_per_s) {
                        best.images_per_s = rate;
                        best.threads = tc[t];
                        best.winograd = e.winograd && convs == 2;
                    }
                }
        /* the fastest fp32 setting with the prefetch on and off for every
         * layer, against each layer's own pick (the default, auto) */
        for (int pf = 1; pf >= 0 && !rc && !env->prefetch_set && best.threads > 0; pf--) {
            cli_env e = *env;
            if (convs == 2) e.winograd = best.winograd;
            e.prefetch = pf;
            char err[512] = "";
            const double rate = measure(&e, pos[0], params, data, batch[b], best.threads,
                                        NN_PRECISION_FP32, seconds, err, sizeof err);
            if (rate <= 0) {
                fprintf(stderr, "nnopt: %s\n", err);
                rc = 1;
            } else {
                print_setting(json, &first, batch[b], best.threads,
                              best.winograd ? "winograd" : "direct", 0, e.prefetch, rate);
                if (rate > best.images_per_s) best.images_per_s = rate, best.prefetch = e.prefetch;
            }
        }
        if (rc) break;
        if (json) {
            printf("],\"best\":{\"threads\":%d,\"conv\":\"%s\",\"prefetch\":\"%s\","
                   "\"images_per_s\":%.1f",
                   best.threads, best.winograd ? "winograd" : "direct",
                   cli_prefetch_name(best.prefetch), best.images_per_s);
            if (bf16) printf(",\"bf16_images_per_s\":%.1f", best.bf16_images_per_s);
            printf("}}");
        } else {
            printf("batch %d: fastest fp32 is %d thread%s, %s convolutions, prefetch %s, %.0f "
                   "images/s",
                   batch[b], best.threads, best.threads > 1 ? "s" : "",
                   best.winograd ? "Winograd" : "direct", cli_prefetch_name(best.prefetch),
                   best.images_per_s);
            if (bf16)
                printf(" (bf16 at best %.0f images/s: %.2fx; --precision bf16 to use it)",
                       best.bf16_images_per_s, best.bf16_images_per_s / best.images_per_s);
            printf("\n");
        }
        if (!no_save && cli_tune_store(env, machine, hash, &best)) rc = 1;
    }
    if (json) printf("],\"cache\":%s}\n", no_save || !env->tune_cache[0] ? "null" : "\"saved\"");
    else if (!rc && !no_save) printf("saved in %s\n", env->tune_cache);
    return rc;
}
