/*
 * cmd_profile.c - `nnopt profile MODEL`: runs a few training steps and writes
 * a Chrome trace-event JSON file (open it in https://ui.perfetto.dev or
 * chrome://tracing) with one slice per layer forward and backward, plus the
 * optimizer update and each whole step.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    FILE *f;
    const nn_net *net;
    double origin;
    double last_end;   /* end of the latest layer slice */
    int events;
} trace;

static void emit(trace *t, const char *name, const char *cat, const char *op, int tid, double t0,
                 double t1) {
    fprintf(t->f, "%s{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":1,\"tid\":%d,"
                  "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"op\":\"%s\"}}",
            t->events++ ? ",\n" : "", name, cat, tid, (t0 - t->origin) * 1e6, (t1 - t0) * 1e6, op);
}

static void on_layer(void *user, int layer, int backward, double t0, double t1) {
    trace *t = user;
    nn_layer_info li;
    nn_net_layer_info(t->net, layer, &li);
    char name[96];
    snprintf(name, sizeof name, "%s %s", li.name, backward ? "backward" : "forward");
    emit(t, name, backward ? "backward" : "forward", li.op, 2, t0, t1);
    t->last_end = t1;
}

int cmd_profile(int argc, char **argv, const cli_env *env) {
    const char *device = NULL;
    const char *precision = "fp32", *data = NULL;
    int batch = 64, threads = 0, steps = 5, warmup = 3;
    const char *out = "trace.json";
    const cli_opt opts[] = {
        {"--data", CLI_STR, &data, "DIR", "train on the first 32 batches of DIR's training set, "
         "cycled (default: one random batch)", 0, 0, NULL},
        {"--out", CLI_STR, &out, "FILE", "trace file to write (default trace.json)", 0, 0, NULL},
        {"--batch", CLI_INT, &batch, "N", "batch size (default 64)", 1, 65536, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--device", CLI_STR, &device, "DEV", CLI_DEVICE_HELP, 0, 0, NULL},
        {"--precision", CLI_STR, &precision, "P", "convolution arithmetic: fp32 (default) or bf16", 0, 0, NULL},
        {"--steps", CLI_INT, &steps, "N", "traced training steps (default 5)", 1, 10000, NULL},
        {"--warmup", CLI_INT, &warmup, "N", "untraced steps first (default 3)", 0, 10000, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("profile", "MODEL [options]",
                      "Writes a Chrome trace-event JSON file of a few training steps on in-memory\n"
                      "batches (random, or real ones with --data): one slice per layer forward\n"
                      "and backward.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    cli_env denv; /* env with --device */
    if (cli_device_env(env, device, &denv)) return 2;
    env = &denv;
    if (npos != 1) {
        fprintf(stderr, "nnopt profile: expected one MODEL file (see nnopt profile --help)\n");
        return 2;
    }
    nn_precision prec;
    if (cli_parse_precision("profile", env, precision, &prec)) return 2;
    cli_workload w;
    int rc = 1;
    trace t = {0};
    if (cli_workload_new(&w, env, pos[0], NULL, data, batch, threads, prec)) goto done;
    for (int i = 0; i < warmup; i++)
        if (cli_workload_step(&w)) goto done;
    t.f = fopen(out, "w");
    if (!t.f) {
        nn_ctx_fail(w.ctx, NN_EIO, "%s: cannot open for writing", out);
        goto done;
    }
    t.net = w.net;
    t.origin = nn_wall_time();
    fprintf(t.f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    nn_net_set_hook(w.net, on_layer, &t);
    for (int s = 0; s < steps; s++) {
        double t0 = nn_wall_time();
        if (cli_workload_step(&w)) goto done;
        double t2 = nn_wall_time();
        /* the trainer's step: layers, then the optimizer after the last backward */
        emit(&t, "sgd update", "optimizer", "sgd", 2, t.last_end, t2);
        char name[32];
        snprintf(name, sizeof name, "step %d", s + 1);
        emit(&t, name, "step", "step", 1, t0, t2);
    }
    fprintf(t.f, "\n],\"metadata\":{\"model\":");
    cli_json_string(t.f, pos[0]);
    fprintf(t.f, ",\"batch\":%d,\"threads\":%d}}\n", batch, nn_ctx_threads(w.ctx));
    if (fclose(t.f) != 0) {
        t.f = NULL;
        nn_ctx_fail(w.ctx, NN_EIO, "%s: write failed", out);
        goto done;
    }
    t.f = NULL;
    fprintf(stderr, "nnopt: wrote %d trace events of %d steps to %s\n", t.events, steps, out);
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", w.ctx ? nn_ctx_error(w.ctx) : "out of memory");
    if (t.f) fclose(t.f);
    cli_workload_free(&w);
    return rc;
}
