/*
 * space.c - search-space files (docs/search.md): INI files, parsed by inih,
 * whose [search] section says what to train and optimize and whose other
 * sections name a model's parameters ([model] W = ...) and recipe keys
 * ([optimizer] lr = ...) with the values a trial may draw:
 *
 *     [search]
 *     model = ../models/search_cnn.nn      # relative to this file
 *     objectives = maximize val_accuracy, minimize latency_ms
 *     constraint = latency_ms <= 0.2
 *     [model]
 *     W = int 8 32 log
 *     [optimizer]
 *     name = choice sgd adamw
 *     lr = float 1e-3 0.3 log
 *     momentum = float 0.8 0.99 if name == sgd
 *     [train]
 *     epochs = 8                           # a fixed value for every trial
 *
 * Errors name path:line and the problem, one line each.
 */
#include "search/search.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPACE_MAX_BYTES ((size_t)1 << 20)

static const char *const METRIC_NAMES[M_COUNT] = {
    "val_accuracy", "val_loss", "latency_ms", "latency_batch_ms",
    "train_seconds", "params", "flops", "memory_mb"};

const char *sp_metric_name(sp_metric m) {
    return (unsigned)m < M_COUNT ? METRIC_NAMES[m] : "?";
}

int sp_metric_from_name(const char *name) {
    for (int m = 0; m < M_COUNT; m++)
        if (strcmp(name, METRIC_NAMES[m]) == 0) return m;
    return -1;
}

typedef struct {
    nn_space *sp;
    const char *text;
    size_t pos;
    int line;
    int err_line;
    char err[384];
    int seen_search_key[16]; /* lines of [search] keys given once */
} space_parse;

static void space_error(space_parse *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void space_error(space_parse *r, const char *fmt, ...) {
    if (r->err_line) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    for (char *c = r->err; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    r->err_line = r->line;
}

/* inih's line reader over the text, counting lines; leading blanks and '#'
 * comments after a blank are dropped (values are one line). */
static char *next_line(char *str, int num, void *stream) {
    space_parse *r = stream;
    const char *p = r->text + r->pos;
    if (!*p || r->err_line) return NULL;
    r->line++;
    size_t len = strcspn(p, "\n");
    r->pos += len + (p[len] == '\n');
    while (len && isspace((unsigned char)*p)) p++, len--;
    for (size_t i = 1; i < len; i++)
        if (p[i] == '#' && isspace((unsigned char)p[i - 1])) {
            len = i;
            break;
        }
    if (len + 2 > (size_t)num) {
        space_error(r, "line longer than %d characters", num - 2);
        return NULL;
    }
    memcpy(str, p, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

/* Splits s (modified) into blank-separated words; returns how many (at most max). */
static int split_words(char *s, char **w, int max) {
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
        if (n == max) return max + 1;
        w[n++] = t;
    }
    return n;
}

static int parse_number(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && !*end && errno == 0 && isfinite(*v);
}

/* A path relative to the space file's directory unless absolute. */
static int resolve_path(space_parse *r, const char *value, char *out, size_t size) {
    const char *path = r->sp->path;
    int n;
    if (value[0] == '/' || !strchr(path, '/'))
        n = snprintf(out, size, "%s", value);
    else
        n = snprintf(out, size, "%.*s/%s", (int)(strrchr(path, '/') - path), path, value);
    if (n < 0 || (size_t)n >= size) {
        space_error(r, "path '%s' too long", value);
        return 0;
    }
    return 1;
}

/* "latency_ms <= 0.2" or "latency_ms <= ../models/seed_cnn.nn" */
static int parse_constraint(space_parse *r, const char *value) {
    nn_space *sp = r->sp;
    if (sp->num_constraints == SP_MAX_CONSTRAINTS) {
        space_error(r, "more than %d constraints", SP_MAX_CONSTRAINTS);
        return 0;
    }
    char buf[256], *w[4];
    snprintf(buf, sizeof buf, "%s", value);
    int n = split_words(buf, w, 3);
    int m = n == 3 ? sp_metric_from_name(w[0]) : -1;
    if (n != 3 || m < 0 || (strcmp(w[1], "<=") && strcmp(w[1], ">="))) {
        space_error(r, "constraint: expected 'METRIC <= VALUE' or 'METRIC >= VALUE' (VALUE a number "
                       "or a model file) with METRIC one of val_accuracy, val_loss, latency_ms, "
                       "latency_batch_ms, train_seconds, params, flops, memory_mb; got '%s'",
                    value);
        return 0;
    }
    sp_constraint *c = &sp->constraint[sp->num_constraints];
    memset(c, 0, sizeof *c);
    *c = (sp_constraint){.metric = (sp_metric)m, .less = w[1][0] == '<', .line = r->line};
    if (!parse_number(w[2], &c->bound)) {
        /* a model: its metric, measured when the search starts, is the bound */
        if (m == M_VAL_ACCURACY || m == M_VAL_LOSS || m == M_TRAIN_SECONDS) {
            space_error(r, "constraint: %s needs a number (a model's %s is not measured without "
                           "training it)",
                        w[0], w[0]);
            return 0;
        }
        if (!resolve_path(r, w[2], c->reference, sizeof c->reference)) return 0;
        c->bound = NAN;
    }
    sp->num_constraints++;
    return 1;
}

/* "maximize val_accuracy, minimize latency_ms" */
static int parse_objectives(space_parse *r, const char *value) {
    nn_space *sp = r->sp;
    char buf[256], *w[2 * SP_MAX_OBJECTIVES + 2];
    snprintf(buf, sizeof buf, "%s", value);
    int n = split_words(buf, w, 2 * SP_MAX_OBJECTIVES);
    if (n < 2 || n % 2 || n > 2 * SP_MAX_OBJECTIVES) {
        space_error(r, "objectives: expected 'maximize METRIC[, minimize METRIC ...]' (1 to %d), "
                       "got '%s'",
                    SP_MAX_OBJECTIVES, value);
        return 0;
    }
    sp->num_objectives = 0;
    for (int i = 0; i < n; i += 2) {
        int dir = !strcmp(w[i], "maximize") ? 1 : !strcmp(w[i], "minimize") ? 0 : -1;
        int m = sp_metric_from_name(w[i + 1]);
        if (dir < 0 || m < 0) {
            space_error(r, "objectives: '%s %s' is not 'maximize|minimize METRIC' (METRIC one of "
                           "val_accuracy, val_loss, latency_ms, latency_batch_ms, train_seconds, "
                           "params, flops, memory_mb)",
                        w[i], w[i + 1]);
            return 0;
        }
        for (int k = 0; k < sp->num_objectives; k++)
            if (sp->objective[k].metric == (sp_metric)m) {
                space_error(r, "objectives: %s is named twice", w[i + 1]);
                return 0;
            }
        sp->objective[sp->num_objectives++] = (sp_objective){(sp_metric)m, dir};
    }
    return 1;
}

static int parse_int_setting(space_parse *r, const char *key, const char *value, int lo, int hi,
                             int *out) {
    double v;
    if (!parse_number(value, &v) || v != floor(v) || v < lo || v > hi) {
        space_error(r, "%s: expected an integer from %d to %d, got '%s'", key, lo, hi, value);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int set_model(space_parse *r, const char *value) {
    return resolve_path(r, value, r->sp->model, sizeof r->sp->model);
}

static int on_search_key(space_parse *r, const char *key, const char *value) {
    static const char *const once[] = {"model", "objectives", "val", "train_limit", "min_epochs",
                                       "eta"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        if (!strcmp(key, once[i])) {
            if (r->seen_search_key[i]) {
                space_error(r, "[search] %s is set again (first on line %d)", key,
                            r->seen_search_key[i]);
                return 0;
            }
            r->seen_search_key[i] = r->line;
        }
    nn_space *sp = r->sp;
    if (!strcmp(key, "model")) return set_model(r, value);
    if (!strcmp(key, "objectives")) return parse_objectives(r, value);
    if (!strcmp(key, "constraint")) return parse_constraint(r, value);
    if (!strcmp(key, "val")) return parse_int_setting(r, key, value, 1, 1 << 30, &sp->val);
    if (!strcmp(key, "train_limit"))
        return parse_int_setting(r, key, value, 0, 1 << 30, &sp->train_limit);
    if (!strcmp(key, "min_epochs"))
        return parse_int_setting(r, key, value, 1, 1000000, &sp->min_epochs);
    if (!strcmp(key, "eta")) return parse_int_setting(r, key, value, 2, 100, &sp->eta);
    space_error(r, "unknown key '%s' in [search] (expected model, objectives, constraint, val, "
                   "train_limit, min_epochs or eta)",
                key);
    return 0;
}

static int copy_word(space_parse *r, char *dst, const char *src, const char *what) {
    if (strlen(src) >= SP_WORD || strpbrk(src, "$\"'")) {
        space_error(r, "%s '%s': at most %d characters, no $ or quotes", what, src, SP_WORD - 1);
        return 0;
    }
    strcpy(dst, src);
    return 1;
}

/* "... if KEY == V" or "... if KEY in V1,V2": the condition (cut off value). */
static int parse_condition(space_parse *r, sp_param *p, const char *section, char *value) {
    p->cond = -1;
    char *at = strstr(value, " if ");
    if (!at) return 1;
    *at = '\0';
    char *w[SP_MAX_COND_VALUES + 4];
    int n = split_words(at + 4, w, SP_MAX_COND_VALUES + 2);
    if (n < 3 || (strcmp(w[1], "==") && strcmp(w[1], "in")) || (w[1][0] == '=' && n != 3) ||
        n - 2 > SP_MAX_COND_VALUES) {
        space_error(r, "%s: expected 'if KEY == VALUE' or 'if KEY in VALUE,VALUE...' (up to %d)",
                    p->name, SP_MAX_COND_VALUES);
        return 0;
    }
    char full[128];
    if (strchr(w[0], '.')) snprintf(full, sizeof full, "%s", w[0]);
    else snprintf(full, sizeof full, "%s.%s", section, w[0]);
    int c = sp_find(r->sp, full);
    if (c < 0 || r->sp->param[c].kind != SP_CHOICE) {
        space_error(r, "%s: the condition's %s must be a choice defined above", p->name, full);
        return 0;
    }
    p->cond = c;
    for (int i = 2; i < n; i++) {
        int known = 0;
        for (int k = 0; k < r->sp->param[c].num_choices; k++)
            known |= !strcmp(r->sp->param[c].choice[k], w[i]);
        if (!known) {
            space_error(r, "%s: the condition's value '%s' is not one of %s's choices", p->name,
                        w[i], full);
            return 0;
        }
        if (!copy_word(r, p->cond_value[p->num_cond_values++], w[i], "condition value")) return 0;
    }
    return 1;
}

/* "choice A B", "int LO HI [log] [step S]", "float LO HI [log]", or a fixed value. */
static int parse_param(space_parse *r, const char *section, const char *key, const char *value) {
    nn_space *sp = r->sp;
    if (sp->num_params == SP_MAX_PARAMS) {
        space_error(r, "more than %d parameters", SP_MAX_PARAMS);
        return 0;
    }
    sp_param *p = &sp->param[sp->num_params];
    memset(p, 0, sizeof *p);
    p->line = r->line;
    if (snprintf(p->name, sizeof p->name, "%s.%s", section, key) >= (int)sizeof p->name) {
        space_error(r, "[%s] %s: name too long", section, key);
        return 0;
    }
    strcpy(p->key, p->name); /* same size */
    if (strchr(p->key, '@')) *strchr(p->key, '@') = '\0';
    int prev = sp_find(sp, p->name);
    if (prev >= 0) {
        space_error(r, "[%s] %s is set again (first on line %d)", section, key, sp->param[prev].line);
        return 0;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", value);
    if (!parse_condition(r, p, section, buf)) return 0;
    char *w[SP_MAX_CHOICES + 2];
    int n = split_words(buf, w, SP_MAX_CHOICES + 1);
    if (n == 0) {
        space_error(r, "[%s] %s: no value", section, key);
        return 0;
    }
    if (!strcmp(w[0], "choice")) {
        if (n < 2 || n - 1 > SP_MAX_CHOICES) {
            space_error(r, "%s: expected 'choice A B ...' with 1 to %d words", p->name,
                        SP_MAX_CHOICES);
            return 0;
        }
        p->kind = SP_CHOICE;
        for (int i = 1; i < n; i++) {
            for (int k = 0; k < p->num_choices; k++)
                if (!strcmp(p->choice[k], w[i])) {
                    space_error(r, "%s: choice '%s' is listed twice", p->name, w[i]);
                    return 0;
                }
            if (!copy_word(r, p->choice[p->num_choices++], w[i], "choice")) return 0;
        }
    } else if (!strcmp(w[0], "int") || !strcmp(w[0], "float")) {
        p->kind = w[0][0] == 'i' ? SP_INT : SP_FLOAT;
        p->step = p->kind == SP_INT ? 1 : 0;
        if (n < 3 || !parse_number(w[1], &p->lo) || !parse_number(w[2], &p->hi) || p->lo > p->hi) {
            space_error(r, "%s: expected '%s LO HI [log]%s' with LO <= HI", p->name, w[0],
                        p->kind == SP_INT ? " [step S]" : "");
            return 0;
        }
        for (int i = 3; i < n; i++) {
            if (!strcmp(w[i], "log")) p->log = 1;
            else if (p->kind == SP_INT && !strcmp(w[i], "step") && i + 1 < n &&
                     parse_number(w[i + 1], &p->step) && p->step >= 1 && p->step == floor(p->step))
                i++;
            else {
                space_error(r, "%s: unexpected '%s' (expected log%s)", p->name, w[i],
                            p->kind == SP_INT ? " or step S" : "");
                return 0;
            }
        }
        if (p->kind == SP_INT && (p->lo != floor(p->lo) || p->hi != floor(p->hi) ||
                                  fabs(p->lo) > 1e9 || fabs(p->hi) > 1e9)) {
            space_error(r, "%s: int bounds must be integers up to 1e9", p->name);
            return 0;
        }
        if (p->log && !(p->lo > 0)) {
            space_error(r, "%s: a log range needs LO > 0", p->name);
            return 0;
        }
        if (p->log && p->kind == SP_INT && p->step != 1) {
            space_error(r, "%s: log and step cannot be combined", p->name);
            return 0;
        }
    } else {
        if (n != 1) {
            space_error(r, "%s: '%s' is neither 'choice ...', 'int LO HI', 'float LO HI' nor one "
                           "fixed value",
                        p->name, value);
            return 0;
        }
        p->kind = SP_FIXED;
        p->num_choices = 1;
        if (!copy_word(r, p->choice[0], w[0], "value")) return 0;
    }
    if (strcmp(p->key, p->name) && p->cond < 0) {
        space_error(r, "%s: a variant (@) needs an 'if' condition saying when it applies", p->name);
        return 0;
    }
    sp->num_params++;
    return 1;
}

/* Letters, digits and _; a key may carry one @variant ("lr@adamw"). */
static int valid_key(const char *s, int variant_ok) {
    if (!*s || *s == '@') return 0;
    int ats = 0;
    for (const char *c = s; *c; c++)
        if (*c == '@') ats++;
        else if (!isalnum((unsigned char)*c) && *c != '_') return 0;
    return ats == 0 || (variant_ok && ats == 1 && s[strlen(s) - 1] != '@');
}

static int on_key(void *user, const char *section, const char *key, const char *value) {
    space_parse *r = user;
    if (r->err_line) return 1;
    if (!section[0]) {
        space_error(r, "key '%s' before any [section]", key);
        return 0;
    }
    if (!valid_key(key, strcmp(section, "search") != 0) || !valid_key(section, 0)) {
        space_error(r, "bad key [%s] %s (letters, digits and _, and one @variant)", section, key);
        return 0;
    }
    if (!strcmp(section, "search")) return on_search_key(r, key, value);
    return parse_param(r, section, key, value);
}

int sp_find(const nn_space *sp, const char *name) {
    for (int i = 0; i < sp->num_params; i++)
        if (!strcmp(sp->param[i].name, name)) return i;
    return -1;
}

nn_status sp_parse(nn_ctx *ctx, const char *text, const char *path, nn_space **out) {
    *out = NULL;
    nn_space *sp = calloc(1, sizeof *sp);
    if (!sp || !(sp->text = strdup(text))) {
        free(sp);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    snprintf(sp->path, sizeof sp->path, "%s", path);
    sp->min_epochs = 1;
    sp->eta = 3;
    space_parse r = {.sp = sp, .text = text};
    int line = ini_parse_stream(next_line, &r, on_key, &r);
    nn_status st = NN_OK;
    if (r.err_line && (line <= 0 || line >= r.err_line))
        st = nn_ctx_fail(ctx, NN_EINVAL, "%s:%d: %s", path, r.err_line, r.err);
    else if (line == -2)
        st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    else if (line > 0)
        st = nn_ctx_fail(ctx, NN_EINVAL, "%s:%d: expected '[section]' or 'key = value'", path, line);
    else if (!sp->model[0])
        st = nn_ctx_fail(ctx, NN_EINVAL, "%s: [search] model = MODEL_FILE is missing", path);
    if (st) {
        sp_free(sp);
        return st;
    }
    if (sp->num_objectives == 0) sp->objective[sp->num_objectives++] = (sp_objective){M_VAL_ACCURACY, 1};
    *out = sp;
    return NN_OK;
}

nn_status sp_load(nn_ctx *ctx, const char *path, nn_space **out) {
    *out = NULL;
    const char *why;
    int fd = nn_open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) why = strerror(errno), close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open search space: %s", path, why);
    }
    char *buf = malloc(SPACE_MAX_BYTES + 1);
    size_t len = buf ? fread(buf, 1, SPACE_MAX_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    const char *problem = !buf                      ? "out of memory"
                          : bad                     ? "read error"
                          : len > SPACE_MAX_BYTES   ? "larger than 1 MiB; not a search space"
                          : memchr(buf, '\0', len) ? "contains a NUL byte; not a search space"
                                                    : NULL;
    if (problem) {
        free(buf);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: %s", path, problem);
    }
    buf[len] = '\0';
    nn_status st = sp_parse(ctx, buf, path, out);
    free(buf);
    return st;
}

void sp_free(nn_space *sp) {
    if (!sp) return;
    free(sp->text);
    free(sp);
}

void sp_value_text(const sp_param *p, double v, char *buf, size_t size) {
    switch (p->kind) {
    case SP_FIXED: snprintf(buf, size, "%s", p->choice[0]); break;
    case SP_CHOICE: {
        int i = (int)v;
        snprintf(buf, size, "%s", i >= 0 && i < p->num_choices ? p->choice[i] : "?");
        break;
    }
    case SP_INT: snprintf(buf, size, "%.0f", v); break;
    case SP_FLOAT: snprintf(buf, size, "%.6g", v); break;
    }
}

int sp_value_parse(const sp_param *p, const char *text, double *v) {
    switch (p->kind) {
    case SP_FIXED: *v = 0; return strcmp(text, p->choice[0]) ? -1 : 0;
    case SP_CHOICE:
        for (int i = 0; i < p->num_choices; i++)
            if (!strcmp(text, p->choice[i])) {
                *v = i;
                return 0;
            }
        return -1;
    case SP_INT:
    case SP_FLOAT: {
        double x;
        /* %.6g text of a float may round just past an end */
        double slack = p->kind == SP_FLOAT ? 1e-5 * fmax(fabs(p->lo), fabs(p->hi)) : 0;
        if (!parse_number(text, &x) || x < p->lo - slack || x > p->hi + slack ||
            (p->kind == SP_INT && x != floor(x)))
            return -1;
        *v = x;
        return 0;
    }
    }
    return -1;
}

void sp_activate(const nn_space *sp, const double *value, unsigned char *active) {
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        active[i] = 1;
        if (p->cond < 0) continue;
        const sp_param *c = &sp->param[p->cond];
        int on = 0;
        if (active[p->cond]) {
            int k = (int)value[p->cond];
            for (int j = 0; j < p->num_cond_values && k >= 0 && k < c->num_choices; j++)
                on |= !strcmp(c->choice[k], p->cond_value[j]);
        }
        active[i] = (unsigned char)on;
    }
}

int trial_objectives(const nn_space *sp, const trial *t, double *obj) {
    for (int k = 0; k < sp->num_objectives; k++) {
        double v = t->metric[sp->objective[k].metric];
        if (!isfinite(v)) return 0;
        obj[k] = sp->objective[k].maximize ? -v : v;
    }
    return 1;
}

int trial_feasible(const nn_space *sp, const trial *t) {
    for (int k = 0; k < sp->num_constraints; k++) {
        const sp_constraint *c = &sp->constraint[k];
        double v = t->metric[c->metric];
        if (!isfinite(v) || isnan(c->bound)) continue;
        if (c->less ? v > c->bound : v < c->bound) return 0;
    }
    return 1;
}

void pareto_ranks(const double *obj, int n, int m, int *rank) {
    for (int i = 0; i < n; i++) rank[i] = -1;
    /* peel off fronts: O(n^2 m) per front, fine for thousands of trials */
    for (int front = 0, left = n; left > 0; front++) {
        int found = 0;
        for (int i = 0; i < n; i++) {
            if (rank[i] >= 0) continue;
            int dominated = 0;
            for (int j = 0; j < n && !dominated; j++) {
                if (j == i || (rank[j] >= 0 && rank[j] < front)) continue;
                int no_worse = 1, better = 0;
                for (int k = 0; k < m; k++) {
                    if (obj[j * m + k] > obj[i * m + k]) no_worse = 0;
                    if (obj[j * m + k] < obj[i * m + k]) better = 1;
                }
                dominated = no_worse && better;
            }
            if (!dominated) rank[i] = -2 - front; /* mark; set after the pass */
        }
        for (int i = 0; i < n; i++)
            if (rank[i] <= -2) {
                rank[i] = -2 - rank[i];
                left--;
                found++;
            }
        if (!found) break; /* cannot happen with finite values; guards NaN */
    }
    for (int i = 0; i < n; i++)
        if (rank[i] < 0) rank[i] = n;
}
