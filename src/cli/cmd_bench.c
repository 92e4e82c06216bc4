/*
 * cmd_bench.c - `nnopt bench MODEL`: training-step speed on in-memory data.
 * Warm-up, then `repeats` timed runs of `steps` steps each; reports medians:
 * images/s, ms/step, achieved GFLOP/s (forward + backward FLOPs of every
 * layer; backward skips the image gradient) and its share of the FMA and
 * sgemm peaks measured in the same run (the FMA limit sampled between the
 * timed steps), and a per-layer forward/backward table.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#define FMA_BURST_ITERS 1000000L /* 12M FMAs per thread: about 2 ms */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ,"key":v with two decimals, or ,"key":null when the figure was not measured
 * (--no-peak) or the measurement failed. */
static void json_figure(const char *key, double v, int measured) {
    if (measured && v > 0.0) printf(",\"%s\":%.2f", key, v);
    else printf(",\"%s\":null", key);
}

int cmd_bench(int argc, char **argv, const cli_env *env) {
    const char *device = NULL;
    const char *precision = "fp32", *data = NULL;
    int batch = 64, threads = 0, steps = 50, warmup = 10, repeats = 5, json = 0, no_peak = 0;
    const cli_opt opts[] = {
        {"--data", CLI_STR, &data, "DIR", "train on the first 32 batches of DIR's training set, "
         "cycled (default: one random batch)", 0, 0, NULL},
        {"--batch", CLI_INT, &batch, "N", "batch size (default 64)", 1, 65536, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--device", CLI_STR, &device, "DEV", CLI_DEVICE_HELP, 0, 0, NULL},
        {"--precision", CLI_STR, &precision, "P", "convolution arithmetic: fp32 (default) or bf16", 0, 0, NULL},
        {"--steps", CLI_INT, &steps, "N", "timed steps per repeat (default 50)", 1, 1000000, NULL},
        {"--warmup", CLI_INT, &warmup, "N", "untimed steps first (default 10)", 0, 1000000, NULL},
        {"--repeats", CLI_INT, &repeats, "N", "timed repeats; medians are reported (default 5)", 1, 1000, NULL},
        {"--no-peak", CLI_FLAG, &no_peak, NULL, "skip the FMA and sgemm peak measurements", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("bench", "MODEL [options]",
                      "Times SGD training steps (forward, backward, update) of a model on\n"
                      "in-memory batches (one random batch, or real ones with --data) and reports images/s, ms/step, GFLOP/s against\n"
                      "the FMA and sgemm peaks measured in the same run, and a per-layer table\n"
                      "naming each convolution's kernels. Rates count the model's FLOPs, so\n"
                      "Winograd layers (NNOPT_CONV=direct turns them off) can pass the peak.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    cli_env denv; /* env with --device */
    if (cli_device_env(env, device, &denv)) return 2;
    env = &denv;
    if (npos != 1) {
        fprintf(stderr, "nnopt bench: expected one MODEL file (see nnopt bench --help)\n");
        return 2;
    }
    nn_precision prec;
    if (cli_parse_precision("bench", env, precision, &prec)) return 2;
    cli_workload w;
    int rc = 1;
    double *times = calloc((size_t)repeats, sizeof(double));
    double *peaks = calloc((size_t)repeats, sizeof(double));
    double *shares = calloc((size_t)repeats, sizeof(double));
    if (cli_workload_new(&w, env, pos[0], NULL, data, batch, threads, prec) || !times || !peaks ||
        !shares)
        goto done;
    int layers = nn_net_num_layers(w.net);
    for (int i = 0; i < warmup; i++)
        if (cli_workload_step(&w)) goto done;
    int64_t train_flops = 0;
    for (int i = 0; i < layers; i++) {
        nn_layer_info li;
        nn_net_layer_info(w.net, i, &li);
        train_flops += li.flops + li.bwd_flops;
    }
    /* The FMA limit is sampled over the same seconds as the steps: a short
     * burst of register-only FMA chains after every timed step (no cache
     * effect on the next step), each repeat's share read against the rate of
     * its own bursts. On a VM whose speed moves by 2x within seconds, a peak
     * measured once, before or after, says more about that moment than
     * about the run. */
    /* A GPU's limits are its own (cuda_peak.cu), measured once here, before
     * the timed steps; the CPU's FMA limit is sampled between them. */
    nn_device_peaks dev;
    const int on_device = nn_measure_device_peaks(w.ctx, !no_peak, &dev) == 0;
    nn_net_set_timing(w.net, 1);
    for (int rep = 0; rep < repeats; rep++) {
        double step_time = 0.0, fma_gflop = 0.0, fma_time = 0.0;
        for (int i = 0; i < steps; i++) {
            double t0 = nn_wall_time();
            if (cli_workload_step(&w)) goto done;
            step_time += nn_wall_time() - t0;
            if (no_peak || on_device) continue;
            double sec;
            fma_gflop += nn_fma_burst(w.ctx, FMA_BURST_ITERS, &sec, NULL);
            fma_time += sec;
        }
        times[rep] = step_time / steps;
        if (no_peak) continue;
        peaks[rep] = on_device ? dev.fma_gflops : fma_time > 0 ? fma_gflop / fma_time : 0.0;
        shares[rep] = peaks[rep] > 0 ? 100.0 * (double)train_flops * batch / times[rep] * 1e-9 /
                                           peaks[rep]
                                     : 0.0;
    }
    qsort(times, (size_t)repeats, sizeof(double), cmp_double);
    qsort(peaks, (size_t)repeats, sizeof(double), cmp_double);
    qsort(shares, (size_t)repeats, sizeof(double), cmp_double);
    double step_s = times[repeats / 2];
    double ips = batch / step_s;
    double gflops = (double)train_flops * ips * 1e-9;
    double peak = no_peak     ? 0.0
                  : on_device ? dev.sgemm_gflops
                              : nn_measure_sgemm_gflops(w.ctx, 1024, 5);
    const double fma = peaks[repeats / 2], fma_share = shares[repeats / 2];
    const double total_steps = (double)steps * repeats;
    const char *prec_name = prec == NN_PRECISION_BF16 ? "bf16" : "fp32";
    if (json) {
        /* the peaks and shares are null with --no-peak: not measured, not zero */
        printf("{\"model\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"precision\":\"%s\",\"batch\":%d,\"threads\":%d,\"data\":",
               prec_name, batch, nn_ctx_threads(w.ctx));
        if (data) cli_json_string(stdout, data);
        else printf("null");
        printf(",\"batches\":%d,\"images_per_s\":%.1f,\"ms_per_step\":%.4f,\"gflops\":%.2f",
               w.num_batches, ips, step_s * 1e3, gflops);
        json_figure("sgemm_peak_gflops", peak, !no_peak);
        json_figure("percent_of_peak", peak > 0 ? 100.0 * gflops / peak : 0.0, !no_peak);
        json_figure("fma_peak_gflops", fma, !no_peak);
        json_figure("percent_of_fma_peak", fma_share, !no_peak && fma > 0);
        json_figure("percent_of_fma_peak_min", shares[0], !no_peak && fma > 0);
        json_figure("percent_of_fma_peak_max", shares[repeats - 1], !no_peak && fma > 0);
        printf(",\"device\":");
        cli_json_string(stdout, on_device ? dev.name : "cpu");
        json_figure("bf16_gemm_peak_gflops", dev.bf16_gemm_gflops, on_device && !no_peak);
        json_figure("percent_of_bf16_gemm_peak",
                    dev.bf16_gemm_gflops > 0 ? 100.0 * gflops / dev.bf16_gemm_gflops : 0.0,
                    on_device && !no_peak);
        printf(",\"kernel_isa\":\"%s\",\"openblas_core\":\"%s\",\"layers\":[",
               nn_isa_name(nn_ctx_isa(w.ctx)), nn_blas_core());
    } else {
        printf("nnopt bench %s: %s, batch %d, %d threads, median of %d x %d steps, ", pos[0],
               prec_name, batch, nn_ctx_threads(w.ctx), repeats, steps);
        if (data) printf("%d batches of %s cycled\n", w.num_batches, data);
        else printf("one random batch\n");
        const char *replaced = nn_blas_replaced_core();
        printf("kernels %s, OpenBLAS core %s%s%s%s\n", nn_isa_name(nn_ctx_isa(w.ctx)), nn_blas_core(),
               replaced ? " (replacing its own choice, " : "", replaced ? replaced : "",
               replaced ? ")" : "");
        if (on_device) {
            printf("device %s", dev.name);
            if (!no_peak)
                printf(": fp32 FMA peak %.0f GFLOP/s, cuBLAS 8192^3 fp32 %.0f and bf16 %.0f GFLOP/s",
                       dev.fma_gflops, dev.sgemm_gflops, dev.bf16_gemm_gflops);
            printf("\n");
        }
        printf("%.0f images/s  %.3f ms/step  %.1f GFLOP/s", ips, step_s * 1e3, gflops);
        if (peak > 0 && fma > 0)
            printf("  (%.0f%% of the %.1f GFLOP/s FMA peak, %.0f%% of the %.1f GFLOP/s sgemm)",
                   fma_share, fma, 100.0 * gflops / peak, peak);
        if (peak > 0 && fma > 0 && repeats > 1 && !on_device) /* how the repeats' shares moved */
            printf("\nshare of the FMA peak over the %d repeats: %.0f%% to %.0f%%", repeats,
                   shares[0], shares[repeats - 1]);
        printf("\n\n%-12s %-10s %-9s %10s %10s %7s %9s %9s\n", "layer", "type", "kernel",
               "fwd ms", "bwd ms", "% step", "fwd GF/s", "bwd GF/s");
    }
    int first = 1, winograd = 0;
    /* nn_layer_info.prefetch + 1: none (or not picked yet), off, on */
    static const char *const pf_json[3] = {"null", "false", "true"};
    static const char *const pf_text[3] = {"?", "off", "on"};
    char picks[1024] = ""; /* the layers' prefetch, for the note under the table */
    size_t picks_len = 0;
    for (int i = 0; i < layers; i++) {
        nn_layer_info li;
        nn_net_layer_info(w.net, i, &li);
        double f, b;
        nn_net_layer_time(w.net, i, &f, &b);
        f /= total_steps;
        b /= total_steps;
        if (f == 0.0 && b == 0.0 && li.flops == 0) continue;
        winograd += strncmp(li.kernel, "winograd", 8) == 0;
        double gf = f > 0 ? (double)li.flops * batch / f * 1e-9 : 0.0;
        double gb = b > 0 ? (double)li.bwd_flops * batch / b * 1e-9 : 0.0;
        if (json)
            printf("%s{\"name\":\"%s\",\"type\":\"%s\",\"kernel\":\"%s\",\"forward_ms\":%.4f,"
                   "\"backward_ms\":%.4f,\"forward_gflops\":%.2f,\"backward_gflops\":%.2f,"
                   "\"prefetch\":[%s,%s]}",
                   first ? "" : ",", li.name, li.op, li.kernel, f * 1e3, b * 1e3, gf, gb,
                   pf_json[li.prefetch[0] + 1], pf_json[li.prefetch[1] + 1]);
        else
            printf("%-12s %-10s %-9s %10.3f %10.3f %6.1f%% %9.1f %9.1f\n", li.name, li.op,
                   li.kernel[0] ? li.kernel : "-", f * 1e3, b * 1e3, 100.0 * (f + b) / step_s, gf,
                   gb);
        first = 0;
        if ((li.prefetch[0] >= 0 || li.prefetch[1] >= 0) && picks_len < sizeof picks - 64) {
            const int w = snprintf(picks + picks_len, sizeof picks - picks_len, "%s%s %s/%s",
                                   picks_len ? ", " : "", li.name, pf_text[li.prefetch[0] + 1],
                                   pf_text[li.prefetch[1] + 1]);
            if (w > 0) picks_len += (size_t)w;
        }
    }
    if (json) printf("]}\n");
    else {
        printf("(fused ReLUs run inside the layer before them; the rest of the step is the optimizer)\n");
        if (picks_len) /* NNOPT_PREFETCH: the per-layer picks, or the forced setting */
            printf("(software prefetch of the next plane, forward/backward: %s)\n", picks);
        if (winograd) /* say what the rates count */
            printf("(GFLOP/s and peak shares count each layer's direct-method FLOPs; the %d winograd\n"
                   " layers do 2.25x fewer multiply-adds per whole 2x2 output tile (winograd4: 4x per\n"
                   " 4x4 tile), so their rates and the step's share can pass 100%%; NNOPT_CONV=direct\n"
                   " runs without them, NNOPT_CONV=winograd2 without winograd4)\n",
                   winograd);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", w.ctx ? nn_ctx_error(w.ctx) : "out of memory");
    free(times);
    free(peaks);
    free(shares);
    cli_workload_free(&w);
    return rc;
}
