/* cmd_plot.c - `nnopt plot LOG.csv... --out FILE.svg`: training curves from the
 * CSV logs that `nnopt train --log` writes, as one SVG with two panels (loss and
 * accuracy against epoch), one colour per run. */
#include "cli/cli.h"
#include "tools/svg.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RUNS 64

enum { F_EPOCH, F_STEP, F_TRAIN_LOSS, F_TEST_LOSS, F_TEST_ACC, F_VAL_LOSS, F_VAL_ACC, F_SECONDS,
       F_IPS, F_COUNT };

static const char *const field_name[F_COUNT] = {
    "epoch", "step", "train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy",
    "seconds", "images_per_s"};

#define HEADER "epoch,step,train_loss,test_loss,test_accuracy,seconds,images_per_s"
#define HEADER_VAL \
    "epoch,step,train_loss,test_loss,test_accuracy,val_loss,val_accuracy,seconds,images_per_s"

/* One training log, column by column. */
typedef struct {
    const char *path;
    const char *name;        /* legend text: file name without directory and extension */
    char *name_buf;
    int has_val;
    int n, cap;              /* rows kept */
    double *col[F_COUNT];    /* (cap) each; the val columns stay NULL without validation */
} run_log;

static void run_free(run_log *r) {
    for (int i = 0; i < F_COUNT; i++) free(r->col[i]);
    free(r->name_buf);
}

/* Parses one field; 0 or 1 after printing the error. */
static int parse_field(const char *path, long line, int f, const char *s, double *out) {
    char *end;
    errno = 0;
    const char *why = NULL;
    double v = 0;
    if (!*s || *s == ' ' || *s == '\t') why = "expected a number";
    else if (f == F_EPOCH || f == F_STEP) {
        long long x = strtoll(s, &end, 10);
        if (*end || errno || x < 0) why = "expected a non-negative integer";
        v = (double)x;
    } else {
        v = strtod(s, &end);
        if (*end || errno == ERANGE || !isfinite(v)) why = "expected a finite number";
        else if ((f == F_TEST_ACC || f == F_VAL_ACC) && (v < 0 || v > 100))
            why = "expected a percentage in [0, 100]";
        else if (v < 0)
            why = "expected a non-negative number";
    }
    if (why) {
        fprintf(stderr, "nnopt plot: %s:%ld: %s is '%.40s', %s\n", path, line, field_name[f], s,
                why);
        return 1;
    }
    *out = v;
    return 0;
}

static int run_push(run_log *r) {
    if (r->n < r->cap) return 0;
    int cap = r->cap ? r->cap * 2 : 64;
    for (int i = 0; i < F_COUNT; i++) {
        if (!r->has_val && (i == F_VAL_LOSS || i == F_VAL_ACC)) continue;
        double *p = realloc(r->col[i], (size_t)cap * sizeof *p);
        if (!p) return 1;
        r->col[i] = p;
    }
    r->cap = cap;
    return 0;
}

/* Reads and checks a log; 0, or 1 after printing one line "FILE[:LINE]: problem".
 * A row whose epoch is not above the previous one replaces the rows from that
 * epoch on: a run resumed from an earlier checkpoint appends epochs again. */
static int read_log(const char *path, run_log *r) {
    const char *why;
    int fd = nn_open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) why = strerror(errno), close(fd);
        fprintf(stderr, "nnopt plot: %s: cannot open: %s\n", path, why);
        return 1;
    }
    char *buf = NULL;
    size_t size = 0;
    long line = 0;
    int rc = 1;
    ssize_t len;
    while ((len = getline(&buf, &size, f)) >= 0) {
        line++;
        if ((size_t)len != strlen(buf)) {
            fprintf(stderr, "nnopt plot: %s:%ld: NUL byte; not a CSV training log\n", path, line);
            goto done;
        }
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
        if (line == 1) {
            if (strcmp(buf, HEADER) == 0) r->has_val = 0;
            else if (strcmp(buf, HEADER_VAL) == 0) r->has_val = 1;
            else {
                fprintf(stderr, "nnopt plot: %s:1: header '%.60s%s' is not a training log's "
                                "(expected '" HEADER "', with val_loss,val_accuracy optional "
                                "before seconds)\n",
                        path, buf, len > 60 ? "..." : "");
                goto done;
            }
            continue;
        }
        int expect = r->has_val ? 9 : 7;
        int nf = 1;
        for (char *p = buf; *p; p++) nf += *p == ',';
        if (len == 0) {
            fprintf(stderr, "nnopt plot: %s:%ld: empty line, expected %d fields as in the header\n",
                    path, line, expect);
            goto done;
        }
        if (nf != expect) {
            fprintf(stderr, "nnopt plot: %s:%ld: %d field%s, expected %d as in the header\n", path,
                    line, nf, nf == 1 ? "" : "s", expect);
            goto done;
        }
        double v[F_COUNT] = {0};
        char *p = buf;
        for (int i = 0; i < nf; i++) {
            int fi = (!r->has_val && i >= F_VAL_LOSS) ? i + 2 : i;
            char *comma = strchr(p, ',');
            if (comma) *comma = '\0';
            if (parse_field(path, line, fi, p, &v[fi])) goto done;
            p = comma ? comma + 1 : p + strlen(p);
        }
        while (r->n > 0 && r->col[F_EPOCH][r->n - 1] >= v[F_EPOCH]) r->n--;
        if (run_push(r)) {
            fprintf(stderr, "nnopt plot: %s:%ld: out of memory\n", path, line);
            goto done;
        }
        for (int i = 0; i < F_COUNT; i++)
            if (r->col[i]) r->col[i][r->n] = v[i];
        r->n++;
    }
    if (ferror(f)) {
        fprintf(stderr, "nnopt plot: %s: read error: %s\n", path, strerror(errno));
        goto done;
    }
    if (line == 0) {
        fprintf(stderr, "nnopt plot: %s: empty file, expected a training log (CSV header '"
                        HEADER "')\n", path);
        goto done;
    }
    if (r->n == 0) {
        fprintf(stderr, "nnopt plot: %s: header but no epoch rows\n", path);
        goto done;
    }
    rc = 0;
done:
    free(buf);
    fclose(f);
    return rc;
}

/* File name without directory and extension, or the whole path when two runs
 * would otherwise share a name. */
static int set_names(run_log *runs, int n) {
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(runs[i].path, '/');
        base = base ? base + 1 : runs[i].path;
        size_t len = strlen(base);
        const char *dot = strrchr(base, '.');
        if (dot && dot != base) len = (size_t)(dot - base);
        if (!(runs[i].name_buf = malloc(len + 1))) return 1;
        memcpy(runs[i].name_buf, base, len);
        runs[i].name_buf[len] = '\0';
        runs[i].name = runs[i].name_buf;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && strcmp(runs[i].name_buf, runs[j].name_buf) == 0)
                runs[i].name = runs[i].path;
    return 0;
}

int cmd_plot(int argc, char **argv, const cli_env *env) {
    const char *out = NULL, *title = NULL;
    int json = 0;
    const cli_opt opts[] = {
        {.name = "--out", .type = CLI_STR, .dst = &out, .metavar = "FILE.svg",
         .help = "SVG file to write (required)"},
        {.name = "--title", .type = CLI_STR, .dst = &title, .metavar = "T",
         .help = "chart title (default: the run names)"},
        {.name = "--json", .type = CLI_FLAG, .dst = &json,
         .help = "print {\"out\", \"runs\", \"epochs\": rows per run} as JSON"},
        {0}};
    const char *pos[MAX_RUNS];
    int npos;
    int r = cli_parse("plot", "LOG.csv [LOG2.csv ...] --out FILE.svg [options]",
                      "Draws the CSV logs of `nnopt train --log` as one SVG: loss (train solid,\n"
                      "test dashed, validation dotted) and test accuracy against epoch, one\n"
                      "colour per run, named after its file. Up to 64 logs.",
                      argc, argv, opts, pos, MAX_RUNS, &npos);
    if (r) return r == 2 ? 0 : 2;
    if (npos < 1) {
        fprintf(stderr, "nnopt plot: expected one or more LOG.csv files (see nnopt plot --help)\n");
        return 2;
    }
    if (!out) {
        fprintf(stderr, "nnopt plot: --out FILE.svg is required (see nnopt plot --help)\n");
        return 2;
    }
    for (int i = 0; i < npos; i++)
        if (strcmp(out, pos[i]) == 0) {
            fprintf(stderr, "nnopt plot: %s: --out would overwrite an input log\n", out);
            return 2;
        }

    int rc = 1, nruns = npos, any_val = 0;
    run_log runs[MAX_RUNS];
    memset(runs, 0, sizeof runs);
    nn_ctx *ctx = NULL;
    nn_svg_series *loss = NULL, *acc = NULL;
    nn_svg_legend *legend = NULL;
    char *auto_title = NULL;
    for (int i = 0; i < nruns; i++) {
        runs[i].path = pos[i];
        if (read_log(pos[i], &runs[i])) goto done;
        any_val |= runs[i].has_val;
    }
    loss = calloc((size_t)nruns * 3, sizeof *loss);
    acc = calloc((size_t)nruns * 2, sizeof *acc);
    legend = calloc((size_t)nruns + 3, sizeof *legend);
    ctx = cli_ctx_new(env, 1);
    if (!loss || !acc || !legend || !ctx || set_names(runs, nruns)) {
        fprintf(stderr, "nnopt plot: out of memory\n");
        goto done;
    }

    /* loss: train solid, test dashed, val dotted; accuracy: test dashed, val dotted */
    int nl = 0, na = 0, ng = 0;
    for (int i = 0; i < nruns; i++) {
        const run_log *g = &runs[i];
        const double *x = g->col[F_EPOCH];
        loss[nl++] = (nn_svg_series){.x = x, .y = g->col[F_TRAIN_LOSS], .n = g->n, .color = i,
                                     .dash = NN_SVG_SOLID, .line = 1};
        loss[nl++] = (nn_svg_series){.x = x, .y = g->col[F_TEST_LOSS], .n = g->n, .color = i,
                                     .dash = NN_SVG_DASHED, .line = 1};
        acc[na++] = (nn_svg_series){.x = x, .y = g->col[F_TEST_ACC], .n = g->n, .color = i,
                                    .dash = NN_SVG_DASHED, .line = 1};
        if (g->has_val) {
            loss[nl++] = (nn_svg_series){.x = x, .y = g->col[F_VAL_LOSS], .n = g->n, .color = i,
                                         .dash = NN_SVG_DOTTED, .line = 1};
            acc[na++] = (nn_svg_series){.x = x, .y = g->col[F_VAL_ACC], .n = g->n, .color = i,
                                        .dash = NN_SVG_DOTTED, .line = 1};
        }
        legend[ng++] = (nn_svg_legend){.label = g->name, .color = i, .line = 1};
    }
    legend[ng++] = (nn_svg_legend){.label = "train", .color = NN_SVG_GREY, .dash = NN_SVG_SOLID,
                                   .line = 1};
    legend[ng++] = (nn_svg_legend){.label = "test", .color = NN_SVG_GREY, .dash = NN_SVG_DASHED,
                                   .line = 1};
    if (any_val)
        legend[ng++] = (nn_svg_legend){.label = "validation", .color = NN_SVG_GREY,
                                       .dash = NN_SVG_DOTTED, .line = 1};

    if (!title) {
        size_t len = 32;
        for (int i = 0; i < nruns; i++) len += strlen(runs[i].name) + 4;
        if (!(auto_title = malloc(len))) {
            fprintf(stderr, "nnopt plot: out of memory\n");
            goto done;
        }
        auto_title[0] = '\0';
        if (nruns > 4) snprintf(auto_title, len, "training curves of %d runs", nruns);
        else
            for (int i = 0; i < nruns; i++) {
                if (i) strcat(auto_title, i == nruns - 1 ? " vs " : ", ");
                strcat(auto_title, runs[i].name);
            }
        title = auto_title;
    }
    const nn_svg_panel panels[2] = {
        {.title = "loss", .xlabel = "epoch", .ylabel = "cross-entropy loss", .series = loss,
         .nseries = nl, .x_integer = 1},
        {.title = "accuracy", .xlabel = "epoch", .ylabel = "accuracy (%)", .series = acc,
         .nseries = na, .x_integer = 1}};
    const nn_svg_chart chart = {.title = title, .panels = panels, .npanels = 2,
                                .legend = legend, .nlegend = ng};
    if (nn_svg_write(ctx, out, &chart)) {
        fprintf(stderr, "nnopt plot: %s\n", nn_ctx_error(ctx));
        goto done;
    }
    if (json) {
        printf("{\"out\":");
        cli_json_string(stdout, out);
        printf(",\"runs\":%d,\"epochs\":[", nruns);
        for (int i = 0; i < nruns; i++) printf("%s%d", i ? "," : "", runs[i].n);
        printf("]}\n");
    } else {
        printf("wrote %s: loss and accuracy of %d run%s (", out, nruns, nruns == 1 ? "" : "s");
        for (int i = 0; i < nruns; i++)
            printf("%s%s %d epoch%s", i ? ", " : "", runs[i].name, runs[i].n,
                   runs[i].n == 1 ? "" : "s");
        printf(")\n");
    }
    rc = 0;
done:
    for (int i = 0; i < nruns; i++) run_free(&runs[i]);
    free(loss);
    free(acc);
    free(legend);
    free(auto_title);
    nn_ctx_free(ctx);
    return rc;
}
