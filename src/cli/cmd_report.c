/*
 * cmd_report.c - `nnopt report STUDY`: what a search found, read from its
 * study (opened read-only, so a running search is not disturbed) and written
 * as one self-contained HTML page (tables, five inline SVG charts, inline CSS,
 * no scripts, nothing fetched) and a Markdown summary, or also printed as one
 * JSON object: trials by state, the best trials (one objective) or the Pareto
 * front (several), objective against objective, the best value so far,
 * learning curves, where pruned trials stopped, and each parameter's
 * measured importance (docs/search.md, "Reports").
 */
#include "cli/cli.h"
#include "search/search.h"
#include "tools/svg.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BEST_MAX 10        /* rows of the best table with one objective */
#define TABLE_ROWS_MAX 100 /* Pareto-front rows shown (the JSON has them all) */
#define FAILED_MAX 20      /* failed trials listed with their error */
#define CELL 288           /* a table cell: a trial's error (256) fits */
#define TABLE_COLS (16 + SP_MAX_PARAMS)
#define NO_VALUE "\xe2\x80\x93" /* an en dash: not measured, or not active */
#define PARETO_COLOR 3     /* red in svg.c's palette */

/* How a metric is shown: plots and tables in these units. */
typedef struct {
    const char *label; /* axis label */
    const char *head;  /* table column */
    double scale;      /* stored value times this */
    int decimals;
} metric_fmt;

static const metric_fmt METRIC_FMT[M_COUNT] = {
    [M_VAL_ACCURACY] = {"validation accuracy (%)", "val acc %", 100.0, 2},
    [M_VAL_LOSS] = {"validation loss", "val loss", 1.0, 4},
    [M_LATENCY_MS] = {"latency per image (ms)", "latency ms", 1.0, 3},
    [M_LATENCY_BATCH_MS] = {"latency per batch (ms)", "batch latency ms", 1.0, 2},
    [M_TRAIN_SECONDS] = {"training time (s)", "train s", 1.0, 1},
    [M_PARAMS] = {"trainable parameters", "params", 1.0, 0},
    [M_FLOPS] = {"forward MFLOPs per image", "MFLOPs", 1e-6, 2},
    [M_MEMORY_MB] = {"planned memory (MiB)", "memory MiB", 1.0, 1},
};

#define NUM_STATES (TRIAL_STOPPED + 1)
/* the summary's order */
static const trial_state STATE_ORDER[NUM_STATES] = {TRIAL_COMPLETE, TRIAL_PRUNED,
                                                    TRIAL_INFEASIBLE, TRIAL_FAILED,
                                                    TRIAL_STOPPED, TRIAL_RUNNING};

/* The study read and analysed once; the writers only format it. */
typedef struct {
    nn_ctx *ctx;
    const char *study, *html_path, *md_path;
    nn_space *sp;
    trial *t;
    int n;
    char sampler[128], pruner[128], space_path[4096];
    int count[NUM_STATES];
    int m;                              /* objectives, >= 1 */
    sp_objective obj[SP_MAX_OBJECTIVES];
    double *objv;                       /* (n, m) values to minimize; NAN where unknown */
    unsigned char *good;                /* (n) complete, feasible, every objective measured */
    int ngood;
    int *best, nbest;                   /* the best table's trials (indices), best first */
    int *front, nfront;                 /* the Pareto front (rank 0), by the first objective */
    double first_start, last_finish;    /* Unix seconds; NAN when unknown */
    double importance[SP_MAX_PARAMS];   /* in [0, 1]; NAN where not measurable */
    int imp_trials[SP_MAX_PARAMS];      /* complete trials it was measured over */
    const char *imp_measure[SP_MAX_PARAMS];
    char generated[64];                 /* when this report was made, UTC */
} report;

/* ------------------------------------------------------------------ text */

/* Text from the study into HTML (element text or a quoted attribute):
 * markup characters escaped, bad bytes as '?', line breaks as spaces. */
static void html_put(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        int n = nn_svg_char_len(p);
        if (n == 0) {
            fputc('?', f);
            p++;
            continue;
        }
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        case '\n': case '\r': case '\t': fputc(' ', f); break;
        default: fwrite(p, 1, (size_t)n, f);
        }
        p += n;
    }
}

/* Text into a Markdown table cell: nothing in it can end the cell, start
 * markup or raw HTML (an underscore inside a word, as in val_accuracy, is
 * left alone: it emphasizes nothing). */
static void md_put(FILE *f, const char *s) {
    const unsigned char *start = (const unsigned char *)(s ? s : ""), *p = start;
    while (*p) {
        int n = nn_svg_char_len(p);
        if (n == 0) {
            fputc('?', f);
            p++;
            continue;
        }
        if (*p == '\n' || *p == '\r' || *p == '\t') fputc(' ', f);
        else if (*p == '<') fputs("&lt;", f);
        else if (*p == '>') fputs("&gt;", f);
        else if (*p == '&') fputs("&amp;", f);
        else if (strchr("|\\`*[]~", *p) ||
                 (*p == '_' && (p == start || !isalnum(p[-1]) || !isalnum(p[1]))))
            fprintf(f, "\\%c", *p);
        else fwrite(p, 1, (size_t)n, f);
        p += n;
    }
}

static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.10g", v);
    else fputs("null", f);
}

static int have_time(double t) { return isfinite(t) && t > 0; }

static void utc_text(char *buf, size_t size, double t) {
    time_t s = (time_t)t;
    struct tm tm;
    if (!have_time(t) || !gmtime_r(&s, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, size, "%s", NO_VALUE);
}

static void duration_text(char *buf, size_t size, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, size, "%s", NO_VALUE);
    else if (s < 60) snprintf(buf, size, "%.1f s", s);
    else if (s < 3600) snprintf(buf, size, "%d min %02d s", (int)(s / 60), (int)fmod(s, 60));
    else if (s < 48 * 3600.0)
        snprintf(buf, size, "%d h %02d min", (int)(s / 3600), (int)fmod(s / 60, 60));
    else snprintf(buf, size, "%d d %02d h", (int)(s / 86400), (int)fmod(s / 3600, 24));
}

/* A trial's metric in display units (accuracy in %), NAN if not measured. */
static double shown(const trial *t, sp_metric m) {
    return t->metric[m] * METRIC_FMT[m].scale;
}

static void metric_text(char *buf, size_t size, sp_metric m, double raw) {
    if (!isfinite(raw)) snprintf(buf, size, "%s", NO_VALUE);
    else snprintf(buf, size, "%.*f", METRIC_FMT[m].decimals, raw * METRIC_FMT[m].scale);
}

/* ------------------------------------------------------------------ analysis */

typedef struct {
    double key;
    int64_t id;
    int index;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The trial's values to minimize for the report's objectives; 0 if one is
 * not measured. A space without objectives is read as maximizing accuracy. */
static int objectives_of(const report *r, const trial *t, double *o) {
    if (r->sp->num_objectives > 0) {
        if (!trial_objectives(r->sp, t, o)) return 0;
    } else
        o[0] = -t->metric[M_VAL_ACCURACY];
    for (int k = 0; k < r->m; k++)
        if (!isfinite(o[k])) return 0;
    return 1;
}

/* Average ranks (ties share their mean rank) of v[0..n). */
static void ranks(const double *v, int n, keyed *tmp, double *rank) {
    for (int i = 0; i < n; i++) tmp[i] = (keyed){v[i], i, i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_keyed);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && tmp[j + 1].key == tmp[i].key) j++;
        for (int k = i; k <= j; k++) rank[tmp[k].index] = 0.5 * (i + j);
        i = j + 1;
    }
}

/* The fraction of the first objective's variance that parameter p explains,
 * over the good trials where it is active: between-group over total sum of
 * squares for a choice (eta squared), the squared Spearman correlation for a
 * number (log scale or not: ranks do not change). */
static void measure_importance(report *r, int p, double *x, double *y, keyed *tmp, double *rx,
                               double *ry) {
    const sp_param *par = &r->sp->param[p];
    int k = 0;
    for (int i = 0; i < r->n; i++)
        if (r->good[i] && r->t[i].active[p]) {
            x[k] = r->t[i].value[p];
            y[k++] = r->objv[(size_t)i * r->m];
        }
    r->imp_trials[p] = k;
    r->importance[p] = NAN;
    r->imp_measure[p] = par->kind == SP_CHOICE ? "eta squared" : "Spearman rho squared";
    if (k < 3) return;
    double mean = 0, total = 0;
    for (int i = 0; i < k; i++) mean += y[i];
    mean /= k;
    for (int i = 0; i < k; i++) total += (y[i] - mean) * (y[i] - mean);
    if (!(total > 0)) return;
    if (par->kind == SP_CHOICE) {
        double between = 0;
        for (int c = 0; c < par->num_choices; c++) {
            double sum = 0;
            int nc = 0;
            for (int i = 0; i < k; i++)
                if ((int)x[i] == c) sum += y[i], nc++;
            if (nc) between += nc * (sum / nc - mean) * (sum / nc - mean);
        }
        r->importance[p] = fmin(1.0, between / total);
        return;
    }
    ranks(x, k, tmp, rx);
    ranks(y, k, tmp, ry);
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < k; i++) mx += rx[i], my += ry[i];
    mx /= k;
    my /= k;
    for (int i = 0; i < k; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    r->importance[p] = sxx > 0 && syy > 0 ? fmin(1.0, sxy * sxy / (sxx * syy)) : 0.0;
}

/* Counts, objectives, the front, the best trials and the importances. */
static nn_status analyse(report *r) {
    const int n = r->n;
    r->m = r->sp->num_objectives;
    if (r->m < 1) {
        r->m = 1;
        r->obj[0] = (sp_objective){M_VAL_ACCURACY, 1};
    } else
        memcpy(r->obj, r->sp->objective, sizeof r->obj);
    const int m = r->m;
    size_t cap = (size_t)n + 1;
    r->objv = malloc(cap * (size_t)m * sizeof *r->objv);
    r->good = calloc(cap, 1);
    r->best = malloc(cap * sizeof *r->best);
    r->front = malloc(cap * sizeof *r->front);
    double *pts = malloc(cap * (size_t)m * sizeof *pts), *x = malloc(cap * sizeof *x),
           *y = malloc(cap * sizeof *y), *rx = malloc(cap * sizeof *rx),
           *ry = malloc(cap * sizeof *ry);
    int *rank = malloc(cap * sizeof *rank), *idx = malloc(cap * sizeof *idx);
    keyed *key = malloc(cap * sizeof *key);
    nn_status st = NN_OK;
    if (!r->objv || !r->good || !r->best || !r->front || !pts || !x || !y || !rx || !ry ||
        !rank || !idx || !key) {
        st = nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->study);
        goto out;
    }
    r->first_start = r->last_finish = NAN;
    int g = 0;
    for (int i = 0; i < n; i++) {
        const trial *t = &r->t[i];
        r->count[t->state < NUM_STATES ? t->state : TRIAL_FAILED]++;
        double o[SP_MAX_OBJECTIVES];
        int ok = objectives_of(r, t, o);
        for (int k = 0; k < m; k++) r->objv[(size_t)i * m + k] = ok ? o[k] : NAN;
        r->good[i] = t->state == TRIAL_COMPLETE && ok && trial_feasible(r->sp, t);
        if (r->good[i]) {
            memcpy(pts + (size_t)g * m, o, (size_t)m * sizeof *o);
            idx[g++] = i;
        }
        if (have_time(t->started) && !(t->started >= r->first_start)) r->first_start = t->started;
        if (have_time(t->finished) && !(t->finished <= r->last_finish)) r->last_finish = t->finished;
    }
    r->ngood = g;
    if (g) pareto_ranks(pts, g, m, rank);
    int nf = 0;
    for (int j = 0; j < g; j++)
        if (rank[j] == 0) key[nf++] = (keyed){pts[(size_t)j * m], r->t[idx[j]].id, idx[j]};
    qsort(key, (size_t)nf, sizeof *key, cmp_keyed);
    for (int j = 0; j < nf; j++) r->front[j] = key[j].index;
    r->nfront = nf;
    if (m == 1) {
        for (int j = 0; j < g; j++) key[j] = (keyed){pts[(size_t)j * m], r->t[idx[j]].id, idx[j]};
        qsort(key, (size_t)g, sizeof *key, cmp_keyed);
        r->nbest = g < BEST_MAX ? g : BEST_MAX;
        for (int j = 0; j < r->nbest; j++) r->best[j] = key[j].index;
    } else {
        memcpy(r->best, r->front, (size_t)nf * sizeof *r->best);
        r->nbest = nf;
    }
    for (int p = 0; p < r->sp->num_params; p++)
        if (r->sp->param[p].kind != SP_FIXED) measure_importance(r, p, x, y, key, rx, ry);
out:
    free(pts);
    free(x);
    free(y);
    free(rx);
    free(ry);
    free(rank);
    free(idx);
    free(key);
    return st;
}

/* ------------------------------------------------------------------ tables */

typedef struct {
    int rows, cols;              /* rows include the header */
    char (*cell)[CELL];          /* (rows, cols) */
    unsigned char num[TABLE_COLS]; /* right-aligned columns */
} table;

static char *cell(table *tb, int row, int col) { return tb->cell[(size_t)row * tb->cols + col]; }

static int table_new(table *tb, int rows, int cols) {
    tb->rows = rows;
    tb->cols = cols;
    memset(tb->num, 0, sizeof tb->num);
    tb->cell = calloc((size_t)rows * cols, CELL);
    return tb->cell ? 0 : 1;
}

static void table_html(FILE *f, table *tb, const char *cls) {
    fprintf(f, "<table class=\"%s\">\n<thead><tr>", cls);
    for (int c = 0; c < tb->cols; c++) {
        fputs(tb->num[c] ? "<th class=\"num\">" : "<th>", f);
        html_put(f, cell(tb, 0, c));
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    for (int r = 1; r < tb->rows; r++) {
        fputs("<tr>", f);
        for (int c = 0; c < tb->cols; c++) {
            fputs(tb->num[c] ? "<td class=\"num\">" : "<td>", f);
            html_put(f, cell(tb, r, c));
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void table_md(FILE *f, table *tb) {
    for (int r = 0; r < tb->rows; r++) {
        fputs("|", f);
        for (int c = 0; c < tb->cols; c++) {
            fputc(' ', f);
            md_put(f, cell(tb, r, c));
            fputs(" |", f);
        }
        fputc('\n', f);
        if (r == 0) {
            fputs("|", f);
            for (int c = 0; c < tb->cols; c++) fputs(tb->num[c] ? "---:|" : "---|", f);
            fputc('\n', f);
        }
    }
}

static void objectives_text(const report *r, char *buf, size_t size) {
    buf[0] = '\0';
    for (int k = 0; k < r->m; k++) {
        size_t len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s %s", k ? ", " : "",
                 r->obj[k].maximize ? "maximize" : "minimize", sp_metric_name(r->obj[k].metric));
    }
}

/* "latency_ms <= 0.041 (seed_cnn.nn's)": a reference model's bound as the
 * search measured it. */
static void constraints_text(const report *r, char *buf, size_t size) {
    snprintf(buf, size, "%s", r->sp->num_constraints ? "" : "none");
    for (int k = 0; k < r->sp->num_constraints; k++) {
        const sp_constraint *c = &r->sp->constraint[k];
        const char *ref = strrchr(c->reference, '/');
        ref = ref ? ref + 1 : c->reference;
        size_t len = strlen(buf);
        char bound[64];
        if (isfinite(c->bound)) snprintf(bound, sizeof bound, "%g", c->bound);
        else snprintf(bound, sizeof bound, "not measured yet");
        snprintf(buf + len, size - len, "%s%s %s %s%s%.40s%s", k ? ", " : "",
                 sp_metric_name(c->metric), c->less ? "<=" : ">=", bound, ref[0] ? " (" : "", ref,
                 ref[0] ? "'s)" : "");
    }
}

/* The best trial(s) in one line. */
static void best_text(const report *r, char *buf, size_t size) {
    if (r->nbest == 0) {
        snprintf(buf, size, "none yet (no feasible complete trial)");
        return;
    }
    if (r->m == 1) {
        const trial *t = &r->t[r->best[0]];
        char v[64];
        metric_text(v, sizeof v, r->obj[0].metric, t->metric[r->obj[0].metric]);
        snprintf(buf, size, "trial %lld: %s %s", (long long)t->id,
                 METRIC_FMT[r->obj[0].metric].head, v);
        return;
    }
    int len = snprintf(buf, size, "Pareto front of %d trial%s:", r->nfront,
                       r->nfront == 1 ? "" : "s");
    for (int j = 0; j < r->nfront && len > 0 && (size_t)len < size; j++) {
        if ((size_t)len > size - 16) {
            snprintf(buf + len, size - (size_t)len, " ...");
            break;
        }
        len += snprintf(buf + len, size - (size_t)len, "%s #%lld", j ? "," : "",
                        (long long)r->t[r->front[j]].id);
    }
}

static int summary_table(const report *r, table *tb) {
    if (table_new(tb, 17, 2)) return 1;
    int row = 0;
    snprintf(cell(tb, row, 0), CELL, "item");
    snprintf(cell(tb, row++, 1), CELL, "value");
    snprintf(cell(tb, row, 0), CELL, "trials");
    snprintf(cell(tb, row++, 1), CELL, "%d", r->n);
    for (int s = 0; s < NUM_STATES; s++) {
        snprintf(cell(tb, row, 0), CELL, "%s", trial_state_name(STATE_ORDER[s]));
        snprintf(cell(tb, row++, 1), CELL, "%d", r->count[STATE_ORDER[s]]);
    }
    snprintf(cell(tb, row, 0), CELL, "objectives");
    objectives_text(r, cell(tb, row++, 1), CELL);
    snprintf(cell(tb, row, 0), CELL, "constraints");
    constraints_text(r, cell(tb, row++, 1), CELL);
    snprintf(cell(tb, row, 0), CELL, "sampler");
    snprintf(cell(tb, row++, 1), CELL, "%s", r->sampler[0] ? r->sampler : NO_VALUE);
    snprintf(cell(tb, row, 0), CELL, "pruner");
    snprintf(cell(tb, row++, 1), CELL, "%s", r->pruner[0] ? r->pruner : NO_VALUE);
    snprintf(cell(tb, row, 0), CELL, "space file");
    snprintf(cell(tb, row++, 1), CELL, "%.280s", r->space_path[0] ? r->space_path : NO_VALUE);
    snprintf(cell(tb, row, 0), CELL, "first trial started");
    utc_text(cell(tb, row++, 1), CELL, r->first_start);
    snprintf(cell(tb, row, 0), CELL, "last trial finished");
    utc_text(cell(tb, row++, 1), CELL, r->last_finish);
    snprintf(cell(tb, row, 0), CELL, "wall time spanned");
    duration_text(cell(tb, row++, 1), CELL, r->last_finish - r->first_start);
    snprintf(cell(tb, row, 0), CELL, r->m == 1 ? "best trial" : "best trials");
    best_text(r, cell(tb, row++, 1), CELL);
    tb->rows = row;
    return 0;
}

/* id, the objectives, the other main metrics, test accuracy where measured,
 * and every parameter's value (rows: the best table, at most TABLE_ROWS_MAX). */
static int best_table(const report *r, table *tb) {
    const nn_space *sp = r->sp;
    int rows = r->nbest < TABLE_ROWS_MAX ? r->nbest : TABLE_ROWS_MAX;
    int is_obj[M_COUNT] = {0}, any_test = 0;
    for (int k = 0; k < r->m; k++) is_obj[r->obj[k].metric] = 1;
    for (int j = 0; j < rows; j++) any_test |= isfinite(r->t[r->best[j]].test_accuracy);
    static const sp_metric extra[] = {M_VAL_ACCURACY, M_LATENCY_MS, M_PARAMS, M_TRAIN_SECONDS};
    int cols = 1 + r->m + any_test;
    for (int k = 0; k < 4; k++) cols += !is_obj[extra[k]];
    for (int p = 0; p < sp->num_params; p++) cols += sp->param[p].kind != SP_FIXED;
    if (table_new(tb, rows + 1, cols)) return 1;
    int c = 0;
    snprintf(cell(tb, 0, c), CELL, "trial");
    tb->num[c] = 1;
    for (int j = 0; j < rows; j++)
        snprintf(cell(tb, j + 1, c), CELL, "%lld", (long long)r->t[r->best[j]].id);
    c++;
    for (int k = 0; k < r->m + 4; k++) {
        sp_metric mt = k < r->m ? r->obj[k].metric : extra[k - r->m];
        if (k >= r->m && is_obj[mt]) continue;
        if (k < r->m)
            snprintf(cell(tb, 0, c), CELL, "%s %s", METRIC_FMT[mt].head,
                     r->obj[k].maximize ? "\xe2\x86\x91" : "\xe2\x86\x93");
        else
            snprintf(cell(tb, 0, c), CELL, "%s", METRIC_FMT[mt].head);
        tb->num[c] = 1;
        for (int j = 0; j < rows; j++)
            metric_text(cell(tb, j + 1, c), CELL, mt, r->t[r->best[j]].metric[mt]);
        c++;
        if (mt == M_VAL_ACCURACY && any_test) {
            snprintf(cell(tb, 0, c), CELL, "test acc %%");
            tb->num[c] = 1;
            for (int j = 0; j < rows; j++)
                metric_text(cell(tb, j + 1, c), CELL, M_VAL_ACCURACY, r->t[r->best[j]].test_accuracy);
            c++;
            any_test = 0;
        }
    }
    for (int p = 0; p < sp->num_params; p++) {
        if (sp->param[p].kind == SP_FIXED) continue;
        snprintf(cell(tb, 0, c), CELL, "%s", sp->param[p].name);
        tb->num[c] = sp->param[p].kind != SP_CHOICE;
        for (int j = 0; j < rows; j++) {
            const trial *t = &r->t[r->best[j]];
            if (t->active[p]) sp_value_text(&sp->param[p], t->value[p], cell(tb, j + 1, c), CELL);
            else snprintf(cell(tb, j + 1, c), CELL, "%s", NO_VALUE);
        }
        c++;
    }
    return 0;
}

/* Parameters by importance, the unmeasurable last. */
static int importance_order(const report *r, int *order) {
    keyed key[SP_MAX_PARAMS];
    int k = 0;
    for (int p = 0; p < r->sp->num_params; p++)
        if (r->sp->param[p].kind != SP_FIXED)
            key[k++] = (keyed){isfinite(r->importance[p]) ? -r->importance[p] : INFINITY, p, p};
    qsort(key, (size_t)k, sizeof *key, cmp_keyed);
    for (int i = 0; i < k; i++) order[i] = key[i].index;
    return k;
}

static const char *kind_name(const sp_param *p) {
    switch (p->kind) {
    case SP_CHOICE: return "choice";
    case SP_INT: return p->log ? "int, log" : "int";
    case SP_FLOAT: return p->log ? "float, log" : "float";
    default: return "fixed";
    }
}

static int importance_table(const report *r, table *tb) {
    int order[SP_MAX_PARAMS], k = importance_order(r, order);
    if (table_new(tb, k + 1, 5)) return 1;
    const char *head[5] = {"parameter", "kind", "importance", "measure", "trials"};
    for (int c = 0; c < 5; c++) snprintf(cell(tb, 0, c), CELL, "%s", head[c]);
    tb->num[2] = tb->num[4] = 1;
    for (int i = 0; i < k; i++) {
        int p = order[i];
        snprintf(cell(tb, i + 1, 0), CELL, "%s", r->sp->param[p].name);
        snprintf(cell(tb, i + 1, 1), CELL, "%s", kind_name(&r->sp->param[p]));
        if (isfinite(r->importance[p])) snprintf(cell(tb, i + 1, 2), CELL, "%.3f", r->importance[p]);
        else snprintf(cell(tb, i + 1, 2), CELL, "%s", NO_VALUE);
        snprintf(cell(tb, i + 1, 3), CELL, "%s", r->imp_measure[p]);
        snprintf(cell(tb, i + 1, 4), CELL, "%d", r->imp_trials[p]);
    }
    return 0;
}

static int failed_table(const report *r, table *tb) {
    int k = 0;
    if (table_new(tb, FAILED_MAX + 1, 2)) return 1;
    snprintf(cell(tb, 0, 0), CELL, "trial");
    snprintf(cell(tb, 0, 1), CELL, "error");
    tb->num[0] = 1;
    for (int i = 0; i < r->n && k < FAILED_MAX; i++) {
        if (r->t[i].state != TRIAL_FAILED) continue;
        k++;
        snprintf(cell(tb, k, 0), CELL, "%lld", (long long)r->t[i].id);
        snprintf(cell(tb, k, 1), CELL, "%s", r->t[i].error[0] ? r->t[i].error : NO_VALUE);
    }
    tb->rows = k + 1;
    return 0;
}

/* ------------------------------------------------------------------ charts */

/* Writes a chart into the page as an inline <svg>: without the XML
 * declaration, and with the clip-path ids made unique to this figure (every
 * chart of svg.c names its own plot0, plot1, ...). */
static int put_chart(report *r, FILE *f, const nn_svg_chart *c, int fig) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) {
        nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
        return 1;
    }
    nn_status st = nn_svg_write_file(r->ctx, mem, r->html_path, c);
    if (fclose(mem) && !st) st = nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
    if (st) {
        free(buf);
        return 1;
    }
    const char *p = buf;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strchr(p, '\n');
        p = p ? p + 1 : buf + len;
    }
    while (*p) {
        if (strncmp(p, "id=\"plot", 8) == 0) {
            fprintf(f, "id=\"fig%d-plot", fig);
            p += 8;
        } else if (strncmp(p, "url(#plot", 9) == 0) {
            fprintf(f, "url(#fig%d-plot", fig);
            p += 9;
        } else
            fputc(*p++, f);
    }
    free(buf);
    return 0;
}

static void figure_open(FILE *f, const char *id) { fprintf(f, "<figure id=\"%s\">\n", id); }

static void figure_close(FILE *f, const char *caption) {
    fputs("<figcaption>", f);
    html_put(f, caption);
    fputs("</figcaption>\n</figure>\n", f);
}

/* Points of the trade-off plot, in display units. */
typedef struct {
    double *x, *y;
    const char **label;
    int n;
} points;

static int points_new(points *p, int cap) {
    p->x = malloc((size_t)cap * sizeof *p->x);
    p->y = malloc((size_t)cap * sizeof *p->y);
    p->label = calloc((size_t)cap, sizeof *p->label);
    p->n = 0;
    return p->x && p->y && p->label ? 0 : 1;
}

static void points_free(points *p) {
    free(p->x);
    free(p->y);
    free(p->label);
}

/* (1) the first objective against the second (with one objective: validation
 * accuracy against latency): every feasible complete trial, the Pareto front
 * in red (joined when it is the front of exactly these two), infeasible ones
 * in grey. */
static int plot_tradeoff(report *r, FILE *f) {
    const int n = r->n, two = r->m >= 2;
    sp_metric mx = two ? r->obj[1].metric : M_LATENCY_MS;
    sp_metric my = two ? r->obj[0].metric : M_VAL_ACCURACY;
    points good = {0}, bad = {0}, front = {0};
    char (*names)[24] = malloc(((size_t)n + 1) * sizeof *names);
    keyed *key = malloc(((size_t)n + 1) * sizeof *key);
    double *pts = malloc(((size_t)n + 1) * 2 * sizeof *pts);
    int *rank = malloc(((size_t)n + 1) * sizeof *rank), *idx = malloc(((size_t)n + 1) * sizeof *idx);
    int rc = 1;
    if (!names || !key || !pts || !rank || !idx || points_new(&good, n + 1) ||
        points_new(&bad, n + 1) || points_new(&front, n + 1)) {
        nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
        goto out;
    }
    int nc = 0;
    for (int i = 0; i < n; i++) {
        const trial *t = &r->t[i];
        double x = shown(t, mx), y = shown(t, my);
        if (!isfinite(x) || !isfinite(y)) continue;
        if (r->good[i]) {
            good.x[good.n] = x;
            good.y[good.n++] = y;
            /* the front of accuracy (up) and latency (down) without objectives to use */
            pts[2 * nc] = -y;
            pts[2 * nc + 1] = x;
            idx[nc++] = i;
        } else if (t->state == TRIAL_INFEASIBLE ||
                   (t->state == TRIAL_COMPLETE && !trial_feasible(r->sp, t))) {
            bad.x[bad.n] = x;
            bad.y[bad.n++] = y;
        }
    }
    int nk = 0;
    if (two)
        for (int j = 0; j < r->nfront; j++) {
            const trial *t = &r->t[r->front[j]];
            key[nk++] = (keyed){shown(t, mx), t->id, r->front[j]};
        }
    else {
        if (nc) pareto_ranks(pts, nc, 2, rank);
        for (int j = 0; j < nc; j++)
            if (rank[j] == 0) key[nk++] = (keyed){pts[2 * j + 1], r->t[idx[j]].id, idx[j]};
    }
    qsort(key, (size_t)nk, sizeof *key, cmp_keyed);
    for (int j = 0; j < nk; j++) {
        const trial *t = &r->t[key[j].index];
        front.x[j] = shown(t, mx);
        front.y[j] = shown(t, my);
        snprintf(names[j], sizeof names[j], "#%lld", (long long)t->id);
        front.label[j] = names[j];
    }
    front.n = nk;
    nn_svg_series series[3 + SP_MAX_CONSTRAINTS] = {
        {good.x, good.y, good.n, 0, NN_SVG_SOLID, 0, 1, NULL},
        {bad.x, bad.y, bad.n, NN_SVG_GREY, NN_SVG_SOLID, 0, 1, NULL},
        {front.x, front.y, front.n, PARETO_COLOR, NN_SVG_SOLID, r->m <= 2, 1, front.label},
    };
    nn_svg_legend legend[4] = {
        {"feasible complete trial", 0, NN_SVG_SOLID, 0, 1},
        {"Pareto front", PARETO_COLOR, NN_SVG_SOLID, r->m <= 2, 1},
        {"infeasible", NN_SVG_GREY, NN_SVG_SOLID, 0, 1},
        {"constraint bound", NN_SVG_GREY, NN_SVG_DASHED, 1, 0},
    };
    /* each measured constraint on one of the two axes: a dashed line at its
     * bound across the other axis's range of the trials */
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int k = 0; k < good.n + bad.n; k++) {
        const double x = k < good.n ? good.x[k] : bad.x[k - good.n];
        const double y = k < good.n ? good.y[k] : bad.y[k - good.n];
        lo[0] = fmin(lo[0], x), hi[0] = fmax(hi[0], x);
        lo[1] = fmin(lo[1], y), hi[1] = fmax(hi[1], y);
    }
    double bound_xy[SP_MAX_CONSTRAINTS][4];
    int nseries = 3;
    for (int k = 0; k < r->sp->num_constraints && good.n + bad.n > 0; k++) {
        const sp_constraint *c = &r->sp->constraint[k];
        if (!isfinite(c->bound) || (c->metric != mx && c->metric != my)) continue;
        const double b = c->bound * METRIC_FMT[c->metric].scale;
        double *xy = bound_xy[k];
        if (c->metric == mx) /* x: the vertical line x = b */
            xy[0] = xy[1] = b, xy[2] = lo[1], xy[3] = hi[1];
        else
            xy[0] = lo[0], xy[1] = hi[0], xy[2] = xy[3] = b;
        series[nseries++] = (nn_svg_series){xy, xy + 2, 2, NN_SVG_GREY, NN_SVG_DASHED, 1, 0, NULL};
    }
    char title[256];
    snprintf(title, sizeof title, "%s against %s", METRIC_FMT[my].label, METRIC_FMT[mx].label);
    nn_svg_panel panel = {NULL, METRIC_FMT[mx].label, METRIC_FMT[my].label, series, nseries, 0, 0, 0, 0, 0};
    nn_svg_chart chart = {title, &panel, 1, legend, nseries > 3 ? 4 : 3, 760, 440};
    figure_open(f, "tradeoff");
    if (put_chart(r, f, &chart, 1)) goto out;
    char caption[512];
    snprintf(caption, sizeof caption,
             "%s. Red: the Pareto front%s, labelled with trial ids; grey: trials that broke a "
             "constraint; dashed: the constraints' bounds on these axes.",
             title, two ? (r->m == 2 ? " of the two objectives" : " of all the objectives")
                        : " of accuracy and latency");
    figure_close(f, caption);
    rc = 0;
out:
    points_free(&good);
    points_free(&bad);
    points_free(&front);
    free(names);
    free(key);
    free(pts);
    free(rank);
    free(idx);
    return rc;
}

/* A best-so-far step line through the good trials in key order (x = key). */
static int best_steps(const report *r, const keyed *key, int nk, double *sx, double *sy) {
    int k = 0;
    double best = INFINITY, shown_best = NAN;
    sp_metric mt = r->obj[0].metric;
    for (int j = 0; j < nk; j++) {
        int i = key[j].index;
        double v = r->objv[(size_t)i * r->m];
        if (k > 0) {
            sx[k] = key[j].key;
            sy[k++] = shown_best;
        }
        if (v < best) {
            best = v;
            shown_best = shown(&r->t[i], mt);
        }
        sx[k] = key[j].key;
        sy[k++] = shown_best;
    }
    return k;
}

/* (2) the best value of the first objective so far, against trial id and
 * against the time since the first trial started. */
static int plot_progress(report *r, FILE *f) {
    const int n = r->n;
    sp_metric mt = r->obj[0].metric;
    size_t cap = (size_t)n + 1;
    keyed *by_id = malloc(cap * sizeof *by_id), *by_time = malloc(cap * sizeof *by_time);
    double *buf = malloc(cap * 12 * sizeof *buf);
    int rc = 1;
    if (!by_id || !by_time || !buf) {
        nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
        goto out;
    }
    double span = r->last_finish - r->first_start, unit = 1;
    const char *uname = "s";
    if (span > 2 * 3600.0) unit = 3600, uname = "h";
    else if (span > 120) unit = 60, uname = "min";
    int ni = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        if (!r->good[i]) continue;
        by_id[ni++] = (keyed){(double)r->t[i].id, r->t[i].id, i};
        if (have_time(r->t[i].finished) && have_time(r->first_start))
            by_time[nt++] = (keyed){(r->t[i].finished - r->first_start) / unit, r->t[i].id, i};
    }
    qsort(by_time, (size_t)nt, sizeof *by_time, cmp_keyed);
    double *ax = buf, *ay = buf + cap, *sx = buf + 2 * cap, *sy = buf + 4 * cap;
    double *bx = buf + 6 * cap, *by = buf + 7 * cap, *tx = buf + 8 * cap, *ty = buf + 10 * cap;
    for (int j = 0; j < ni; j++) ax[j] = by_id[j].key, ay[j] = shown(&r->t[by_id[j].index], mt);
    for (int j = 0; j < nt; j++) bx[j] = by_time[j].key, by[j] = shown(&r->t[by_time[j].index], mt);
    int ns = best_steps(r, by_id, ni, sx, sy), nts = best_steps(r, by_time, nt, tx, ty);
    nn_svg_series s1[2] = {{ax, ay, ni, NN_SVG_GREY, NN_SVG_SOLID, 0, 1, NULL},
                           {sx, sy, ns, 0, NN_SVG_SOLID, 1, 0, NULL}};
    nn_svg_series s2[2] = {{bx, by, nt, NN_SVG_GREY, NN_SVG_SOLID, 0, 1, NULL},
                           {tx, ty, nts, 0, NN_SVG_SOLID, 1, 0, NULL}};
    char xlabel[96];
    snprintf(xlabel, sizeof xlabel, "time since the first trial started (%s)", uname);
    nn_svg_panel panels[2] = {
        {"by trial", "trial id", METRIC_FMT[mt].label, s1, 2, 1, 0, 0, 0, 0},
        {"by time", xlabel, METRIC_FMT[mt].label, s2, 2, 0, 0, 0, 0, 0}};
    nn_svg_legend legend[2] = {{"best so far", 0, NN_SVG_SOLID, 1, 0},
                               {"feasible complete trial", NN_SVG_GREY, NN_SVG_SOLID, 0, 1}};
    char title[160];
    snprintf(title, sizeof title, "best %s so far", METRIC_FMT[mt].label);
    nn_svg_chart chart = {title, panels, 2, legend, 2, 520, 380};
    figure_open(f, "progress");
    if (put_chart(r, f, &chart, 2)) goto out;
    figure_close(f, "The best value of the first objective so far, by trial id and by the time "
                    "each trial finished; grey points are the trials' own values.");
    rc = 0;
out:
    free(by_id);
    free(by_time);
    free(buf);
    return rc;
}

/* (3) validation accuracy per epoch of every trial: complete ones in colour,
 * pruned ones grey and dashed, the rest (running, stopped, failed) dotted. */
static int plot_curves(report *r, FILE *f) {
    const int n = r->n;
    int max_e = 0, total = 0, ns = 0, others = 0;
    for (int i = 0; i < n; i++) {
        if (r->t[i].epochs > max_e) max_e = r->t[i].epochs;
        total += r->t[i].epochs;
    }
    double *xs = malloc(((size_t)max_e + 1) * sizeof *xs);
    double *ys = malloc(((size_t)total + 1) * sizeof *ys); /* every curve, one after another */
    nn_svg_series *series = malloc(((size_t)n + 1) * sizeof *series);
    int rc = 1;
    if (!xs || !ys || !series) {
        nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
        goto out;
    }
    for (int e = 0; e < max_e; e++) xs[e] = e + 1;
    double *y = ys;
    int color = 0;
    /* grey first, so that the coloured curves are drawn on top */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const trial *t = &r->t[i];
            int complete = t->state == TRIAL_COMPLETE;
            if (t->epochs < 1 || complete != pass) continue;
            for (int e = 0; e < t->epochs; e++) y[e] = 100.0 * t->val_accuracy[e];
            nn_svg_series s = {xs, y, t->epochs, NN_SVG_GREY, NN_SVG_DOTTED, 1, 0, NULL};
            if (complete) s.color = color++, s.dash = NN_SVG_SOLID;
            else if (t->state == TRIAL_PRUNED) s.dash = NN_SVG_DASHED;
            else others = 1;
            series[ns++] = s;
            y += t->epochs;
        }
    nn_svg_legend legend[3] = {{"complete (one colour each)", 0, NN_SVG_SOLID, 1, 0},
                               {"pruned", NN_SVG_GREY, NN_SVG_DASHED, 1, 0},
                               {"running, stopped or failed", NN_SVG_GREY, NN_SVG_DOTTED, 1, 0}};
    nn_svg_panel panel = {NULL, "epoch", "validation accuracy (%)", series, ns, 1, 0, 0, 0, 0};
    nn_svg_chart chart = {"learning curves: validation accuracy per epoch", &panel, 1, legend,
                          2 + others, 760, 440};
    figure_open(f, "curves");
    if (put_chart(r, f, &chart, 3)) goto out;
    figure_close(f, "Validation accuracy after each epoch of every trial.");
    rc = 0;
out:
    free(xs);
    free(ys);
    free(series);
    return rc;
}

/* (4) the epoch at which each pruned trial stopped, as a stem from 0, beside
 * the epochs the complete trials trained. */
static int plot_pruned(report *r, FILE *f) {
    const int n = r->n;
    size_t cap = (size_t)n + 1;
    double *buf = malloc(cap * 8 * sizeof *buf);
    nn_svg_series *series = malloc((cap + 2) * sizeof *series);
    int rc = 1;
    if (!buf || !series) {
        nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
        goto out;
    }
    double *px = buf, *py = buf + cap, *cx = buf + 2 * cap, *cy = buf + 3 * cap, *stem = buf + 4 * cap;
    int np = 0, ncx = 0, ns = 0, max_e = 1;
    for (int i = 0; i < n; i++) {
        const trial *t = &r->t[i];
        if (t->epochs > max_e) max_e = t->epochs;
        if (t->state == TRIAL_PRUNED) {
            px[np] = (double)t->id;
            py[np++] = t->epochs;
        } else if (t->state == TRIAL_COMPLETE) {
            cx[ncx] = (double)t->id;
            cy[ncx++] = t->epochs;
        }
    }
    for (int j = 0; j < np; j++) {
        stem[4 * j] = stem[4 * j + 1] = px[j]; /* x: the id twice, then y: 0 and the epoch */
        stem[4 * j + 2] = 0;
        stem[4 * j + 3] = py[j];
        series[ns++] = (nn_svg_series){stem + 4 * j, stem + 4 * j + 2, 2, 1, NN_SVG_SOLID, 1, 0, NULL};
    }
    series[ns++] = (nn_svg_series){cx, cy, ncx, NN_SVG_GREY, NN_SVG_SOLID, 0, 1, NULL};
    series[ns++] = (nn_svg_series){px, py, np, 1, NN_SVG_SOLID, 0, 1, NULL};
    nn_svg_legend legend[2] = {{"pruned: epochs trained before it was stopped", 1, NN_SVG_SOLID, 1, 1},
                               {"complete: epochs trained", NN_SVG_GREY, NN_SVG_SOLID, 0, 1}};
    nn_svg_panel panel = {NULL, "trial id", "epochs trained", series, ns, 1, 0, 0, 0, max_e + 1.0};
    char title[128];
    snprintf(title, sizeof title, "where pruned trials stopped (%d pruned)", np);
    nn_svg_chart chart = {title, &panel, 1, legend, 2, 760, 380};
    figure_open(f, "pruned");
    if (put_chart(r, f, &chart, 4)) goto out;
    figure_close(f, "The epoch at which the pruner stopped each pruned trial, beside the epochs "
                    "the complete trials trained.");
    rc = 0;
out:
    free(buf);
    free(series);
    return rc;
}

/* (5) parameter importance as horizontal bars, drawn here: svg.h has lines
 * and points only. */
static void plot_importance(report *r, FILE *f) {
    int order[SP_MAX_PARAMS], k = importance_order(r, order);
    const double row_h = 28, top = 58, width = 760;
    size_t longest = 8;
    for (int i = 0; i < k; i++) {
        size_t len = strlen(r->sp->param[order[i]].name);
        if (len > longest) longest = len;
    }
    double left = 40 + 7.0 * (double)(longest > 40 ? 40 : longest), plot_w = width - left - 130;
    double plot_h = row_h * (k ? k : 1), height = top + plot_h + 56;
    const char *mname = sp_metric_name(r->obj[0].metric);
    fputs("<figure id=\"importance\">\n", f);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n<title>parameter "
               "importance</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            width, height, width, height);
    fprintf(f, "<text x=\"%.2f\" y=\"25\" text-anchor=\"middle\" font-size=\"16\" "
               "font-weight=\"bold\">parameter importance for ", width / 2);
    html_put(f, mname);
    fputs("</text>\n", f);
    fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#fcfcfc\" "
               "stroke=\"#444444\" stroke-width=\"1\"/>\n", left, top, plot_w, plot_h);
    fputs("<g font-size=\"11\" fill=\"#333333\">\n", f);
    for (int t = 0; t <= 4; t++) {
        double x = left + plot_w * t / 4.0;
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e3e3e3\"/>\n"
                   "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%.2f</text>\n",
                x, top, x, top + plot_h, x, top + plot_h + 16, t / 4.0);
    }
    fputs("</g>\n", f);
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\">fraction of "
               "the variance of ", left + plot_w / 2, top + plot_h + 38);
    html_put(f, mname);
    fputs(" explained (choices: eta squared; numbers: Spearman rho squared)</text>\n", f);
    fprintf(f, "<text x=\"16\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\" "
               "transform=\"rotate(-90 16 %.2f)\">parameter</text>\n",
            top + plot_h / 2, top + plot_h / 2);
    if (k == 0)
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\">no "
                   "parameters to measure</text>\n", left + plot_w / 2, top + row_h / 2 + 4);
    for (int i = 0; i < k; i++) {
        int p = order[i];
        double y = top + i * row_h, v = r->importance[p];
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" font-size=\"12\">", left - 8,
                y + row_h / 2 + 4);
        html_put(f, r->sp->param[p].name);
        fputs("</text>\n", f);
        if (isfinite(v)) {
            fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n"
                       "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\">%.3f (%d trials)</text>\n",
                    left, y + 5, plot_w * v, row_h - 10, nn_svg_color(0), left + plot_w * v + 5,
                    y + row_h / 2 + 4, v, r->imp_trials[p]);
        } else {
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" fill=\"#777777\">not "
                       "measurable (%d complete trial%s)</text>\n", left + 5, y + row_h / 2 + 4,
                    r->imp_trials[p], r->imp_trials[p] == 1 ? "" : "s");
        }
    }
    fputs("</svg>\n", f);
    figure_close(f, "How much of the first objective's variance over the feasible complete "
                    "trials each parameter explains: a rough measure that ignores interactions "
                    "and noise; few trials make it large by chance.");
}

/* ------------------------------------------------------------------ documents */

static const char *const CSS =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;"
    "max-width:1180px;padding:0 1em;color:#222;line-height:1.4}"
    "h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;"
    "padding-bottom:.2em}.meta{color:#555;margin-top:0}code{background:#f3f3f3;padding:0 .25em;"
    "border-radius:3px;word-break:break-all}"
    "table{border-collapse:collapse;margin:.6em 0;font-size:.92em}"
    "th,td{border:1px solid #d6d6d6;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f2f4f7;white-space:nowrap}td.num{white-space:nowrap}"
    "tbody tr:nth-child(even){background:#fafafa}"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".wide{overflow-x:auto}figure{margin:1.2em 0}svg{max-width:100%;height:auto;display:block}"
    "figcaption{color:#555;font-size:.9em;margin-top:.3em}.empty{font-size:1.2em;color:#a33}";

static int write_html(report *r, FILE *f) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<title>nnopt report: ", f);
    html_put(f, r->study);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>Search report</h1>\n"
               "<p class=\"meta\">Study <code>", CSS);
    html_put(f, r->study);
    fprintf(f, "</code>, generated %s by <code>nnopt report</code>.</p>\n", r->generated);
    if (r->n == 0)
        fputs("<p class=\"empty\">no trials yet: run <code>nnopt search</code> on this study, "
              "then make the report again.</p>\n", f);
    table tb;
    fputs("<h2>Summary</h2>\n", f);
    if (summary_table(r, &tb)) goto nomem;
    table_html(f, &tb, "summary");
    free(tb.cell);
    if (r->n == 0) goto end;

    fprintf(f, "<h2>%s</h2>\n", r->m == 1 ? "Best trials" : "Pareto front");
    if (r->nbest == 0) fputs("<p>No feasible complete trial yet.</p>\n", f);
    else {
        if (r->m == 1)
            fprintf(f, "<p>The %d best feasible complete trials by %s.</p>\n", r->nbest,
                    METRIC_FMT[r->obj[0].metric].label);
        else
            fprintf(f, "<p>The %d feasible complete trial%s that no other beats on every "
                       "objective, by the first objective.%s</p>\n",
                    r->nfront, r->nfront == 1 ? "" : "s",
                    r->nbest > TABLE_ROWS_MAX ? " The first 100 are shown." : "");
        if (best_table(r, &tb)) goto nomem;
        fputs("<div class=\"wide\">\n", f);
        table_html(f, &tb, "best");
        fputs("</div>\n", f);
        free(tb.cell);
    }

    fputs("<h2>Plots</h2>\n", f);
    if (plot_tradeoff(r, f) || plot_progress(r, f) || plot_curves(r, f) || plot_pruned(r, f))
        return 1;
    fputs("<h2>Parameter importance</h2>\n", f);
    plot_importance(r, f);
    if (importance_table(r, &tb)) goto nomem;
    table_html(f, &tb, "importance");
    free(tb.cell);
    if (r->count[TRIAL_FAILED]) {
        fputs("<h2>Failed trials</h2>\n", f);
        if (failed_table(r, &tb)) goto nomem;
        table_html(f, &tb, "failed");
        free(tb.cell);
    }
end:
    fputs("</body>\n</html>\n", f);
    return 0;
nomem:
    nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->html_path);
    return 1;
}

static int write_markdown(report *r, FILE *f) {
    fputs("# Search report: ", f);
    md_put(f, r->study);
    fprintf(f, "\n\nGenerated %s by `nnopt report`; the plots are in the HTML report ", r->generated);
    md_put(f, r->html_path);
    fputs(".\n\n", f);
    if (r->n == 0) fputs("**no trials yet**\n\n", f);
    table tb;
    fputs("## Summary\n\n", f);
    if (summary_table(r, &tb)) goto nomem;
    table_md(f, &tb);
    free(tb.cell);
    if (r->n == 0) return 0;
    fprintf(f, "\n## %s\n\n", r->m == 1 ? "Best trials" : "Pareto front");
    if (r->nbest == 0) fputs("No feasible complete trial yet.\n", f);
    else {
        if (best_table(r, &tb)) goto nomem;
        table_md(f, &tb);
        free(tb.cell);
    }
    fputs("\n## Parameter importance\n\nThe fraction of the first objective's variance over the "
          "feasible complete trials that each parameter explains.\n\n", f);
    if (importance_table(r, &tb)) goto nomem;
    table_md(f, &tb);
    free(tb.cell);
    if (r->count[TRIAL_FAILED]) {
        fputs("\n## Failed trials\n\n", f);
        if (failed_table(r, &tb)) goto nomem;
        table_md(f, &tb);
        free(tb.cell);
    }
    return 0;
nomem:
    nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->md_path);
    return 1;
}

static void json_trial(const report *r, FILE *f, int i) {
    const trial *t = &r->t[i];
    fprintf(f, "{\"id\":%lld,\"state\":\"%s\",\"epochs\":%d", (long long)t->id,
            trial_state_name(t->state), t->epochs);
    for (int m = 0; m < M_COUNT; m++) {
        fputc(',', f);
        cli_json_string(f, sp_metric_name((sp_metric)m));
        fputc(':', f);
        json_num(f, t->metric[m]);
    }
    fputs(",\"test_accuracy\":", f);
    json_num(f, t->test_accuracy);
    fputs(",\"config\":{", f);
    int first = 1;
    for (int p = 0; p < r->sp->num_params; p++) {
        if (!t->active[p]) continue;
        char v[SP_WORD + 32];
        sp_value_text(&r->sp->param[p], t->value[p], v, sizeof v);
        fputs(first ? "" : ",", f);
        cli_json_string(f, r->sp->param[p].name);
        fputc(':', f);
        cli_json_string(f, v);
        first = 0;
    }
    fputs("}}", f);
}

static void write_json(const report *r, FILE *f) {
    fputs("{\"study\":", f);
    cli_json_string(f, r->study);
    fputs(",\"html\":", f);
    cli_json_string(f, r->html_path);
    fputs(",\"markdown\":", f);
    cli_json_string(f, r->md_path);
    fprintf(f, ",\"trials\":%d,\"states\":{", r->n);
    for (int s = 0; s < NUM_STATES; s++)
        fprintf(f, "%s\"%s\":%d", s ? "," : "", trial_state_name(STATE_ORDER[s]),
                r->count[STATE_ORDER[s]]);
    fputs("},\"sampler\":", f);
    cli_json_string(f, r->sampler);
    fputs(",\"pruner\":", f);
    cli_json_string(f, r->pruner);
    fputs(",\"space\":", f);
    cli_json_string(f, r->space_path);
    fputs(",\"objectives\":[", f);
    for (int k = 0; k < r->m; k++) {
        fprintf(f, "%s{\"metric\":", k ? "," : "");
        cli_json_string(f, sp_metric_name(r->obj[k].metric));
        fprintf(f, ",\"goal\":\"%s\"}", r->obj[k].maximize ? "maximize" : "minimize");
    }
    fputs("],\"first_started\":", f);
    json_num(f, r->first_start);
    fputs(",\"last_finished\":", f);
    json_num(f, r->last_finish);
    fputs(",\"wall_seconds\":", f);
    json_num(f, r->last_finish - r->first_start);
    /* best: the first objective's top ten, whatever the number of objectives */
    keyed *key = malloc(((size_t)r->ngood + 1) * sizeof *key);
    int nk = 0;
    for (int i = 0; key && i < r->n; i++)
        if (r->good[i]) key[nk++] = (keyed){r->objv[(size_t)i * r->m], r->t[i].id, i};
    if (key) qsort(key, (size_t)nk, sizeof *key, cmp_keyed);
    fputs(",\"best\":[", f);
    for (int j = 0; j < nk && j < BEST_MAX; j++) {
        fputs(j ? "," : "", f);
        json_trial(r, f, key[j].index);
    }
    free(key);
    fputs("],\"pareto_front\":[", f);
    for (int j = 0; j < r->nfront; j++) {
        fputs(j ? "," : "", f);
        json_trial(r, f, r->front[j]);
    }
    fputs("],\"importance\":[", f);
    int order[SP_MAX_PARAMS], np = importance_order(r, order);
    for (int i = 0; i < np; i++) {
        fputs(i ? ",{\"parameter\":" : "{\"parameter\":", f);
        cli_json_string(f, r->sp->param[order[i]].name);
        fputs(",\"importance\":", f);
        json_num(f, r->importance[order[i]]);
        fprintf(f, ",\"trials\":%d}", r->imp_trials[order[i]]);
    }
    fputs("]}\n", f);
}

/* ------------------------------------------------------------------ command */

/* The study's path with its extension (if any) replaced by ext. */
static char *beside(const char *study, const char *ext) {
    char named[4096];
    if (!strncmp(study, "postgresql://", 13) || !strncmp(study, "postgres://", 11)) {
        /* a PostgreSQL study: named as its trials folder is (DATABASE[.SCHEMA]) */
        nn_ctx *ctx = nn_ctx_new(1);
        if (ctx && study_trials_dir(ctx, study, named, sizeof named) == NN_OK) {
            size_t n = strlen(named);
            if (n > 7 && !strcmp(named + n - 7, ".trials")) named[n - 7] = '\0';
            study = named;
        }
        nn_ctx_free(ctx);
    }
    const char *base = strrchr(study, '/');
    base = base ? base + 1 : study;
    const char *dot = strrchr(base, '.');
    size_t len = dot && dot != base ? (size_t)(dot - study) : strlen(study);
    char *p = malloc(len + strlen(ext) + 1);
    if (p) {
        memcpy(p, study, len);
        strcpy(p + len, ext);
    }
    return p;
}

/* Builds a document in memory with write, then replaces path with it. */
static int write_doc(report *r, const char *path, int (*write)(report *, FILE *)) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) {
        fprintf(stderr, "nnopt: %s: out of memory\n", path);
        return 1;
    }
    int bad = write(r, mem);
    if (fclose(mem) && !bad) {
        fprintf(stderr, "nnopt: %s: out of memory\n", path);
        free(buf);
        return 1;
    }
    if (bad) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(r->ctx));
        free(buf);
        return 1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "nnopt: %s: cannot open for writing: %s\n", path, strerror(errno));
        free(buf);
        return 1;
    }
    int werr = fwrite(buf, 1, len, f) != len ? errno : 0;
    if (fclose(f) && !werr) werr = errno ? errno : EIO;
    free(buf);
    if (werr) {
        fprintf(stderr, "nnopt: %s: write failed: %s\n", path, strerror(werr));
        remove(path);
        return 1;
    }
    return 0;
}

int cmd_report(int argc, char **argv, const cli_env *env) {
    const char *out = NULL, *md = NULL;
    int json = 0;
    const cli_opt opts[] = {
        {.name = "--out", .type = CLI_STR, .dst = &out, .metavar = "FILE.html",
         .help = "HTML page to write (default: the study's path with .html for its extension)"},
        {.name = "--markdown", .type = CLI_STR, .dst = &md, .metavar = "FILE.md",
         .help = "Markdown summary to write (default: the study's path with .md)"},
        {.name = "--json", .type = CLI_FLAG, .dst = &json,
         .help = "also print the counts, best trials and Pareto front as one JSON object"},
        {0}};
    const char *pos[1];
    int npos;
    int rc = cli_parse("report", "STUDY [--out FILE.html] [--markdown FILE.md] [--json]",
                       "Reads a study of `nnopt search` (read-only: a running search goes on) and\n"
                       "writes one self-contained HTML page (summary, best trials or Pareto front,\n"
                       "five plots: objectives, best so far, learning curves, pruned trials,\n"
                       "parameter importance) and a Markdown summary of the same tables.",
                       argc, argv, opts, pos, 1, &npos);
    if (rc) return rc == 2 ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "nnopt report: expected one STUDY file (see nnopt report --help)\n");
        return 2;
    }
    report r = {.study = pos[0]};
    char *html_buf = out ? NULL : beside(r.study, ".html");
    char *md_buf = md ? NULL : beside(r.study, ".md");
    r.html_path = out ? out : html_buf;
    r.md_path = md ? md : md_buf;
    nn_study *s = NULL;
    rc = 1;
    if (!r.html_path || !r.md_path || !(r.ctx = cli_ctx_new(env, 1))) {
        fprintf(stderr, "nnopt report: out of memory\n");
        goto out;
    }
    rc = 2;
    if (strcmp(r.html_path, r.study) == 0 || strcmp(r.md_path, r.study) == 0) {
        fprintf(stderr, "nnopt report: %s: the report would overwrite the study (give --out "
                        "and --markdown)\n", r.study);
        goto out;
    }
    if (strcmp(r.html_path, r.md_path) == 0) {
        fprintf(stderr, "nnopt report: %s: --out and --markdown name the same file\n", r.html_path);
        goto out;
    }
    rc = 1;
    if (study_open_existing(r.ctx, r.study, &s, &r.sp) || study_load(s, &r.t, &r.n) ||
        study_get(s, "sampler", r.sampler, sizeof r.sampler) ||
        study_get(s, "pruner", r.pruner, sizeof r.pruner) ||
        study_get(s, "space_path", r.space_path, sizeof r.space_path)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(r.ctx));
        goto out;
    }
    study_close(s);
    s = NULL;
    if (analyse(&r)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(r.ctx));
        goto out;
    }
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) ||
        !strftime(r.generated, sizeof r.generated, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(r.generated, sizeof r.generated, "at an unknown time");
    if (write_doc(&r, r.html_path, write_html)) goto out;
    if (write_doc(&r, r.md_path, write_markdown)) {
        remove(r.html_path);
        goto out;
    }
    if (json) write_json(&r, stdout);
    else if (r.n == 0)
        printf("wrote %s and %s: no trials yet\n", r.html_path, r.md_path);
    else
        printf("wrote %s and %s: %d trials (%d complete, %d pruned, %d infeasible, %d failed, %d "
               "stopped, %d running)\n", r.html_path, r.md_path, r.n, r.count[TRIAL_COMPLETE],
               r.count[TRIAL_PRUNED], r.count[TRIAL_INFEASIBLE], r.count[TRIAL_FAILED],
               r.count[TRIAL_STOPPED], r.count[TRIAL_RUNNING]);
    rc = 0;
out:
    study_close(s);
    study_trials_free(r.t, r.n);
    if (r.sp) sp_free(r.sp);
    free(r.objv);
    free(r.good);
    free(r.best);
    free(r.front);
    free(html_buf);
    free(md_buf);
    nn_ctx_free(r.ctx);
    return rc;
}
