/*
 * model_expand.c - the text level of the model format (docs/model-format.md):
 * comments, block definitions and their expansion into layer lines, which
 * model_file.c turns into graph nodes.
 *
 *     block basic C S=1          # a block with parameters C (required), S
 *     conv2d name=conv1 out=$C kernel=3 pad=1 stride=$S
 *     ...
 *     add    name=sum in=bn2,$in # $in: the layer that feeds the block
 *     end
 *     use    basic name=b1 C=16  # one instance: layers b1_conv1, ...
 *     repeat 3 basic name=s C=32 # three: s_0_conv1, ..., s_2_sum
 *
 * Inside a block, layer names and in= references are local: they get the
 * instance's prefix. Layers outside the block are reached through $in or a
 * parameter whose value names them. Blocks may use blocks defined before
 * them. Every expanded layer line is kept (nn_net_model_text) so a model
 * written with blocks can be printed flat.
 */
#include "core/graph.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_PARAMS = 16,     /* parameters of one block */
    MAX_DEPTH = 16,      /* blocks using blocks */
    MAX_REPEAT = 10000,  /* instances of one repeat line */
    MAX_LAYERS = 10000,  /* layers of an expanded model */
    LINE_MAX_LEN = 2048, /* a line after substitution */
};

typedef struct {
    char *text; /* trimmed, comment removed, non-empty */
    int line;
} src_line;

typedef struct {
    char name[64];
    int num_params;
    char param[MAX_PARAMS][32];
    char def[MAX_PARAMS][128]; /* default value; "" for required */
    int first, count;          /* body: lines[first .. first + count) */
    int line;                  /* of the 'block' keyword */
    int uses;                  /* instances so far, for default names */
} block_def;

typedef struct {
    nn_net *net;
    src_line *lines;
    int num_lines;
    block_def *blocks;
    int num_blocks;
    char *flat; /* expanded layer lines */
    size_t flat_len, flat_cap;
    int last_line; /* number of lines in the file */
    block_def top;                 /* the model's own parameters ('params' line) */
    int has_top;
    const char *const *overrides;  /* "NAME=VALUE" for the model's parameters */
    int num_overrides;
} expander;

/* One block instance (or the top level, where block is NULL). */
typedef struct {
    const block_def *block;
    const char (*value)[128]; /* parameter values, block->param order */
    char prefix[64];          /* instance name; layer names get "<prefix>_" */
    char in_name[64];         /* $in */
    int emitted;              /* layers and instances written so far */
    int depth;
} scope;

static nn_status fail(expander *ex, int line, const char *fmt, ...) {
    char msg[NN_ERRMSG_SIZE - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nn_ctx_fail(ex->net->ctx, NN_EINVAL, "%s:%d: %s", ex->net->source, line, msg);
}

static const block_def *find_block(const expander *ex, const char *name) {
    for (int i = 0; i < ex->num_blocks; i++)
        if (strcmp(ex->blocks[i].name, name) == 0) return &ex->blocks[i];
    return NULL;
}

/* Appends s to out (cap bytes, *len used); 0 when it does not fit. */
static int append(char *out, size_t cap, size_t *len, const char *s, size_t n) {
    if (*len + n + 1 > cap) return 0;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
    return 1;
}

/* Copies text to out replacing every $NAME by the scope's value. */
static nn_status substitute(expander *ex, const scope *sc, int line, const char *text, char *out,
                            size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (const char *p = text; *p;) {
        if (*p != '$') {
            size_t n = strcspn(p, "$");
            if (!append(out, cap, &len, p, n)) return fail(ex, line, "line too long after expansion");
            p += n;
            continue;
        }
        size_t n = 1;
        while (isalnum((unsigned char)p[n]) || p[n] == '_') n++;
        char var[64];
        if (n == 1 || n - 1 >= sizeof var)
            return fail(ex, line, "'$' must be followed by a parameter name");
        memcpy(var, p + 1, n - 1);
        var[n - 1] = '\0';
        const char *val = NULL;
        if (!sc->block) {
            /* the top level: the model's parameters, declared by 'params' */
            if (!ex->has_top)
                return fail(ex, line,
                            "$%s: parameters can only be used inside a block or after a "
                            "'params %s=DEFAULT' line",
                            var, var);
            for (int i = 0; i < ex->top.num_params; i++)
                if (strcmp(ex->top.param[i], var) == 0) val = ex->top.def[i];
            if (!val) return fail(ex, line, "the model has no parameter $%s ('params' line %d)", var,
                                  ex->top.line);
        } else {
            if (strcmp(var, "in") == 0) val = sc->in_name;
            for (int i = 0; !val && i < sc->block->num_params; i++)
                if (strcmp(sc->block->param[i], var) == 0) val = sc->value[i];
            if (!val) return fail(ex, line, "block '%s' has no parameter $%s", sc->block->name, var);
        }
        if (!append(out, cap, &len, val, strlen(val)))
            return fail(ex, line, "line too long after expansion");
        p += n;
    }
    return NN_OK;
}

/* A name local to the scope, as the graph knows it. */
static nn_status local_name(expander *ex, const scope *sc, int line, const char *name, char *out,
                            size_t cap) {
    int n = sc->block ? snprintf(out, cap, "%s_%s", sc->prefix, name) : snprintf(out, cap, "%s", name);
    if (n < 0 || (size_t)n >= cap) return fail(ex, line, "layer name '%s_%s' is too long", sc->prefix, name);
    return NN_OK;
}

/* Rewrites an in= list: $NAME items are substituted as they are (names from
 * outside), other items are local names. */
static nn_status rewrite_in(expander *ex, const scope *sc, int line, const char *list, char *out,
                            size_t cap) {
    char items[LINE_MAX_LEN];
    snprintf(items, sizeof items, "%s", list);
    size_t len = 0;
    out[0] = '\0';
    char *save = NULL;
    int first = 1;
    for (char *it = strtok_r(items, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        char name[LINE_MAX_LEN];
        nn_status st = it[0] == '$' ? substitute(ex, sc, line, it, name, sizeof name)
                                    : local_name(ex, sc, line, it, name, sizeof name);
        if (st) return st;
        if ((!first && !append(out, cap, &len, ",", 1)) || !append(out, cap, &len, name, strlen(name)))
            return fail(ex, line, "line too long after expansion");
        first = 0;
    }
    return NN_OK;
}

/* Name of the layer a new layer or instance reads by default. */
static const char *default_input(const expander *ex, const scope *sc) {
    if (sc->block && sc->emitted == 0) return sc->in_name;
    return ex->net->num_nodes ? ex->net->nodes[ex->net->num_nodes - 1].name : NULL;
}

static nn_status keep_flat(expander *ex, const char *text) {
    size_t n = strlen(text);
    if (ex->flat_len + n + 2 > ex->flat_cap) {
        size_t cap = ex->flat_cap ? 2 * ex->flat_cap : 4096;
        while (cap < ex->flat_len + n + 2) cap *= 2;
        char *p = realloc(ex->flat, cap);
        if (!p) return nn_ctx_fail(ex->net->ctx, NN_ENOMEM, "%s: out of memory", ex->net->source);
        ex->flat = p;
        ex->flat_cap = cap;
    }
    memcpy(ex->flat + ex->flat_len, text, n);
    ex->flat_len += n;
    ex->flat[ex->flat_len++] = '\n';
    ex->flat[ex->flat_len] = '\0';
    return NN_OK;
}

static nn_status expand_line(expander *ex, scope *sc, const src_line *ln);

/* One instance of block b named prefix reading in_name. */
static nn_status expand_instance(expander *ex, const scope *outer, const block_def *b,
                                 const char (*value)[128], const char *prefix,
                                 const char *in_name, int line) {
    scope sc = {.block = b, .value = value, .emitted = 0, .depth = outer->depth + 1};
    snprintf(sc.prefix, sizeof sc.prefix, "%s", prefix);
    snprintf(sc.in_name, sizeof sc.in_name, "%s", in_name);
    for (int i = 0; i < b->count; i++) {
        nn_status st = expand_line(ex, &sc, &ex->lines[b->first + i]);
        if (st) {
            /* say which use of the block the failing body line came from */
            nn_ctx *ctx = ex->net->ctx;
            size_t len = strlen(ctx->error);
            snprintf(ctx->error + len, sizeof ctx->error - len, " (in block '%s' used at line %d)",
                     b->name, line);
            return st;
        }
    }
    return NN_OK;
}

/* use BLOCK [name=P] [in=X] K=V...   or   repeat N BLOCK [name=P] [in=X] K=V...
 * with parameters substituted and in= resolved by expand_line. */
static nn_status expand_use(expander *ex, scope *sc, char **tok, int ntok, int repeat, int line) {
    const char *kw = repeat ? "repeat" : "use";
    int first_kv = repeat ? 3 : 2;
    if (ntok < first_kv)
        return fail(ex, line, repeat ? "expected 'repeat N BLOCK key=value...'"
                                     : "expected 'use BLOCK key=value...'");
    long count = 1;
    if (repeat) {
        char *end;
        count = strtol(tok[1], &end, 10);
        if (end == tok[1] || *end || count < 1 || count > MAX_REPEAT)
            return fail(ex, line, "repeat count must be an integer from 1 to %d, got '%s'",
                        MAX_REPEAT, tok[1]);
    }
    const char *bname = tok[first_kv - 1];
    block_def *b = (block_def *)find_block(ex, bname);
    if (!b) return fail(ex, line, "%s: no block named '%s' is defined above", kw, bname);
    if (sc->depth + 1 > MAX_DEPTH)
        return fail(ex, line, "blocks nest deeper than %d (does block '%s' use itself?)", MAX_DEPTH,
                    bname);
    char value[MAX_PARAMS][128];
    int given[MAX_PARAMS] = {0};
    const char *name = NULL, *in = NULL;
    for (int t = first_kv; t < ntok; t++) {
        char *eq = strchr(tok[t], '=');
        if (!eq || eq == tok[t] || !eq[1])
            return fail(ex, line, "expected key=value, found '%s'", tok[t]);
        *eq = '\0';
        const char *key = tok[t], *val = eq + 1;
        if (strcmp(key, "name") == 0 || strcmp(key, "in") == 0) {
            const char **slot = key[0] == 'n' ? &name : &in;
            if (*slot) return fail(ex, line, "key '%s' given twice", key);
            *slot = val;
            continue;
        }
        int k = 0;
        while (k < b->num_params && strcmp(b->param[k], key) != 0) k++;
        if (k == b->num_params)
            return fail(ex, line, "block '%s' has no parameter '%s'", b->name, key);
        if (given[k]) return fail(ex, line, "key '%s' given twice", key);
        if (strlen(val) >= sizeof value[k]) return fail(ex, line, "value of '%s' is too long", key);
        strcpy(value[k], val);
        given[k] = 1;
    }
    for (int k = 0; k < b->num_params; k++)
        if (!given[k]) {
            if (!b->def[k][0])
                return fail(ex, line, "block '%s' needs %s=VALUE", b->name, b->param[k]);
            strcpy(value[k], b->def[k]);
        }
    char base[64], local[128];
    if (name && !nn_model_valid_name(name))
        return fail(ex, line, "bad instance name '%s' (letters, digits and _ only)", name);
    if (!name) {
        snprintf(local, sizeof local, "%s%d", b->name, ++b->uses);
        name = local;
    }
    nn_status st = local_name(ex, sc, line, name, base, sizeof base);
    if (st) return st;
    char in_name[LINE_MAX_LEN];
    if (in) {
        /* resolved by expand_line; one existing layer */
        if (nn_model_find_layer(ex->net, in) < 0)
            return fail(ex, line, "%s: in=%s names no earlier layer", kw, in);
        snprintf(in_name, sizeof in_name, "%s", in);
    } else {
        const char *d = default_input(ex, sc);
        if (!d) return fail(ex, line, "%s: no earlier layer to read", kw);
        snprintf(in_name, sizeof in_name, "%s", d);
    }
    for (long r = 0; r < count; r++) {
        char prefix[64];
        int n = repeat ? snprintf(prefix, sizeof prefix, "%s_%ld", base, r)
                       : snprintf(prefix, sizeof prefix, "%s", base);
        if (n < 0 || (size_t)n >= sizeof prefix)
            return fail(ex, line, "instance name '%s' is too long", base);
        /* each repetition reads the previous one's last layer */
        const char *src = r == 0 ? in_name : ex->net->nodes[ex->net->num_nodes - 1].name;
        char src_copy[sizeof ex->net->nodes[0].name];
        snprintf(src_copy, sizeof src_copy, "%.*s", (int)sizeof src_copy - 1, src);
        if ((st = expand_instance(ex, sc, b, (const char(*)[128])value, prefix, src_copy, line)))
            return st;
    }
    sc->emitted++;
    return NN_OK;
}

/* A layer line, or a use/repeat line, in scope sc. */
static nn_status expand_line(expander *ex, scope *sc, const src_line *ln) {
    char buf[LINE_MAX_LEN];
    snprintf(buf, sizeof buf, "%s", ln->text);
    char *tok[NN_MAX_KV + 4];
    int ntok = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (ntok == (int)(sizeof tok / sizeof tok[0]))
            return fail(ex, ln->line, "more than %d keys on one line", NN_MAX_KV);
        tok[ntok++] = t;
    }
    if (strcmp(tok[0], "block") == 0)
        return fail(ex, ln->line, "block definitions cannot be nested; close the open block with 'end' first");
    if (strcmp(tok[0], "end") == 0) return fail(ex, ln->line, "'end' without an open block");
    if (strcmp(tok[0], "params") == 0)
        return fail(ex, ln->line, "'params' declares the model's parameters at the top level, "
                                  "not inside a block");
    /* substitute parameters in every token except in= lists */
    char subst[NN_MAX_KV + 4][LINE_MAX_LEN / 4];
    int has_in = 0;
    for (int t = 0; t < ntok; t++) {
        nn_status st;
        if (strncmp(tok[t], "in=", 3) == 0) {
            has_in = 1;
            char list[LINE_MAX_LEN];
            if ((st = rewrite_in(ex, sc, ln->line, tok[t] + 3, list, sizeof list))) return st;
            if (snprintf(subst[t], sizeof subst[t], "in=%s", list) >= (int)sizeof subst[t])
                return fail(ex, ln->line, "line too long after expansion");
        } else if ((st = substitute(ex, sc, ln->line, tok[t], subst[t], sizeof subst[t]))) {
            return st;
        }
        tok[t] = subst[t];
    }
    if (strcmp(tok[0], "use") == 0 || strcmp(tok[0], "repeat") == 0)
        return expand_use(ex, sc, tok, ntok, tok[0][0] == 'r', ln->line);
    /* a layer: local name, default input of the block's first layer */
    char line[LINE_MAX_LEN];
    size_t len = 0;
    line[0] = '\0';
    for (int t = 0; t < ntok; t++) {
        char piece[LINE_MAX_LEN + 8];
        if (sc->block && strncmp(tok[t], "name=", 5) == 0) {
            char full[LINE_MAX_LEN];
            nn_status st = local_name(ex, sc, ln->line, tok[t] + 5, full, sizeof full);
            if (st) return st;
            snprintf(piece, sizeof piece, "name=%s", full);
        } else {
            snprintf(piece, sizeof piece, "%s", tok[t]);
        }
        if ((t && !append(line, sizeof line, &len, " ", 1)) ||
            !append(line, sizeof line, &len, piece, strlen(piece)))
            return fail(ex, ln->line, "line too long after expansion");
    }
    if (sc->block && sc->emitted == 0 && !has_in && strcmp(tok[0], "input") != 0) {
        char piece[LINE_MAX_LEN];
        snprintf(piece, sizeof piece, " in=%s", sc->in_name);
        if (!append(line, sizeof line, &len, piece, strlen(piece)))
            return fail(ex, ln->line, "line too long after expansion");
    }
    if (ex->net->num_nodes >= MAX_LAYERS)
        return fail(ex, ln->line, "the model expands to more than %d layers", MAX_LAYERS);
    nn_status st = keep_flat(ex, line);
    if (!st) st = nn_model_add_layer(ex->net, line, ln->line);
    if (!st) sc->emitted++;
    return st;
}

/* Splits text into trimmed, comment-free, non-empty lines (in place). */
static nn_status split_lines(expander *ex, char *text) {
    int lineno = 0, cap = 0;
    char *p = text;
    while (*p) {
        lineno++;
        char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len >= 1024) return fail(ex, lineno, "line longer than 1023 characters");
        char *next = eol ? eol + 1 : p + len;
        p[len] = '\0';
        char *hash = strchr(p, '#');
        if (hash) *hash = '\0';
        for (char *c = p; *c; c++)
            if (*c == '\r') *c = ' ';
            else if (!isprint((unsigned char)*c) && *c != '\t')
                return fail(ex, lineno, "unexpected byte 0x%02x (model files are plain text)",
                            (unsigned char)*c);
        while (*p == ' ' || *p == '\t') p++;
        char *e = p + strlen(p);
        while (e > p && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
        if (*p) {
            if (ex->num_lines == cap) {
                cap = cap ? 2 * cap : 64;
                src_line *l = realloc(ex->lines, (size_t)cap * sizeof *l);
                if (!l) return nn_ctx_fail(ex->net->ctx, NN_ENOMEM, "%s: out of memory", ex->net->source);
                ex->lines = l;
            }
            ex->lines[ex->num_lines++] = (src_line){p, lineno};
        }
        p = next;
    }
    ex->last_line = lineno;
    return NN_OK;
}

static int first_word_is(const char *text, const char *word) {
    size_t n = strlen(word);
    return strncmp(text, word, n) == 0 && (text[n] == '\0' || text[n] == ' ' || text[n] == '\t');
}

/* The parameter list of a 'block' or 'params' line (the tokens after save):
 * NAME or NAME=default; every one needs a default when need_default. */
static nn_status parse_param_list(expander *ex, block_def *b, char **save, int line,
                                  int need_default) {
    for (char *t = strtok_r(NULL, " \t", save); t; t = strtok_r(NULL, " \t", save)) {
        char *eq = strchr(t, '=');
        if (eq) *eq = '\0';
        if (!nn_model_valid_name(t) || strlen(t) >= sizeof b->param[0])
            return fail(ex, line, "bad parameter name '%s' (letters, digits and _ only)", t);
        if (!strcmp(t, "name") || !strcmp(t, "in"))
            return fail(ex, line, "'%s' cannot be a parameter (every use takes it)", t);
        for (int k = 0; k < b->num_params; k++)
            if (!strcmp(b->param[k], t)) return fail(ex, line, "parameter '%s' given twice", t);
        if (b->num_params == MAX_PARAMS)
            return fail(ex, line, "at most %d parameters on one line", MAX_PARAMS);
        if (eq && (!eq[1] || strlen(eq + 1) >= sizeof b->def[0] || strchr(eq + 1, '$')))
            return fail(ex, line, "parameter '%s' needs a plain default value", t);
        if (!eq && need_default)
            return fail(ex, line, "model parameter '%s' needs a default: %s=VALUE", t, t);
        strcpy(b->param[b->num_params], t);
        if (eq) strcpy(b->def[b->num_params], eq + 1);
        b->num_params++;
    }
    return NN_OK;
}

/* params NAME=default ...: the model's own parameters, $NAME at the top
 * level; the caller's overrides (nn_net_parse_with) replace the defaults. */
static nn_status define_model_params(expander *ex, const src_line *ln) {
    if (ex->has_top)
        return fail(ex, ln->line, "a second 'params' line (the first is line %d)", ex->top.line);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", ln->text);
    char *save = NULL;
    strtok_r(buf, " \t", &save);
    block_def *b = &ex->top;
    memset(b, 0, sizeof *b);
    strcpy(b->name, "model");
    b->line = ln->line;
    nn_status st = parse_param_list(ex, b, &save, ln->line, 1);
    if (st) return st;
    if (b->num_params == 0) return fail(ex, ln->line, "expected 'params NAME=DEFAULT ...'");
    for (int i = 0; i < ex->num_overrides; i++) {
        const char *o = ex->overrides[i], *eq = strchr(o, '=');
        size_t n = eq ? (size_t)(eq - o) : strlen(o);
        int k = 0;
        while (k < b->num_params && (strlen(b->param[k]) != n || strncmp(b->param[k], o, n)))
            k++;
        if (!eq || !eq[1] || k == b->num_params || strlen(eq + 1) >= sizeof b->def[0] ||
            strpbrk(eq + 1, "$ \t#"))
            continue; /* reported once the file is read (nn_model_parse_lines) */
        strcpy(b->def[k], eq + 1);
    }
    ex->has_top = 1;
    return NN_OK;
}

/* block NAME PARAM PARAM=default ... at lines[at]; its body runs to 'end'.
 * Returns the index of the 'end' line in *end. */
static nn_status define_block(expander *ex, int at, int *end) {
    const src_line *ln = &ex->lines[at];
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", ln->text);
    char *save = NULL;
    strtok_r(buf, " \t", &save);
    const char *name = strtok_r(NULL, " \t", &save);
    if (!name) return fail(ex, ln->line, "expected 'block NAME PARAM PARAM=default ...'");
    if (!nn_model_valid_name(name) || strlen(name) >= sizeof ex->blocks[0].name)
        return fail(ex, ln->line, "bad block name '%s' (letters, digits and _ only)", name);
    if (nn_op_def_find(name) || !strcmp(name, "use") || !strcmp(name, "repeat") ||
        !strcmp(name, "block") || !strcmp(name, "end") || !strcmp(name, "params"))
        return fail(ex, ln->line, "block name '%s' is a keyword of the model format", name);
    if (find_block(ex, name)) return fail(ex, ln->line, "block '%s' is already defined", name);
    block_def *nb = realloc(ex->blocks, (size_t)(ex->num_blocks + 1) * sizeof *nb);
    if (!nb) return nn_ctx_fail(ex->net->ctx, NN_ENOMEM, "%s: out of memory", ex->net->source);
    ex->blocks = nb;
    block_def *b = &ex->blocks[ex->num_blocks];
    memset(b, 0, sizeof *b);
    strcpy(b->name, name);
    b->line = ln->line;
    nn_status st = parse_param_list(ex, b, &save, ln->line, 0);
    if (st) return st;
    b->first = at + 1;
    int i = at + 1;
    for (; i < ex->num_lines; i++) {
        if (first_word_is(ex->lines[i].text, "end")) break;
        if (first_word_is(ex->lines[i].text, "block"))
            return fail(ex, ex->lines[i].line,
                        "block definitions cannot be nested (block '%s' opened at line %d has no 'end')",
                        name, ln->line);
    }
    if (i == ex->num_lines)
        return fail(ex, ln->line, "block '%s' has no 'end'", name);
    if (strcmp(ex->lines[i].text, "end") != 0)
        return fail(ex, ex->lines[i].line, "'end' takes nothing after it");
    b->count = i - b->first;
    if (b->count == 0) return fail(ex, ln->line, "block '%s' is empty", name);
    ex->num_blocks++;
    *end = i;
    return NN_OK;
}

/* Each override must be NAME=VALUE for a parameter the 'params' line declares,
 * with a plain value. */
static nn_status check_overrides(expander *ex) {
    for (int i = 0; i < ex->num_overrides; i++) {
        const char *o = ex->overrides[i], *eq = strchr(o, '=');
        if (!eq || eq == o || !eq[1])
            return nn_ctx_fail(ex->net->ctx, NN_EINVAL, "%s: model parameter '%s' is not NAME=VALUE",
                               ex->net->source, o);
        if (strlen(eq + 1) >= sizeof ex->top.def[0] || strpbrk(eq + 1, "$ \t#"))
            return nn_ctx_fail(ex->net->ctx, NN_EINVAL,
                               "%s: model parameter '%s': the value must be one plain word",
                               ex->net->source, o);
        int n = (int)(eq - o), k = 0;
        if (!ex->has_top)
            return nn_ctx_fail(ex->net->ctx, NN_EINVAL,
                               "%s: model parameter %.*s given, but the model declares none (no "
                               "'params' line)",
                               ex->net->source, n, o);
        while (k < ex->top.num_params &&
               ((int)strlen(ex->top.param[k]) != n || strncmp(ex->top.param[k], o, (size_t)n)))
            k++;
        if (k == ex->top.num_params)
            return nn_ctx_fail(ex->net->ctx, NN_EINVAL,
                               "%s: the model has no parameter '%.*s' (its 'params' line is line %d)",
                               ex->net->source, n, o, ex->top.line);
    }
    return NN_OK;
}

nn_status nn_model_parse_lines(nn_net *net, const char *text, const char *const *overrides,
                               int num_overrides) {
    expander ex = {.net = net, .overrides = overrides, .num_overrides = num_overrides};
    char *copy = strdup(text);
    if (!copy) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
    nn_status st = split_lines(&ex, copy);
    scope top = {.block = NULL, .depth = 0};
    for (int i = 0; !st && i < ex.num_lines; i++) {
        if (first_word_is(ex.lines[i].text, "block"))
            st = define_block(&ex, i, &i);
        else if (first_word_is(ex.lines[i].text, "params"))
            st = define_model_params(&ex, &ex.lines[i]);
        else
            st = expand_line(&ex, &top, &ex.lines[i]);
    }
    if (!st) st = check_overrides(&ex);
    if (!st) st = nn_model_check(net, ex.last_line);
    if (!st) {
        net->model_text = ex.flat;
        ex.flat = NULL;
    }
    free(ex.flat);
    free(ex.blocks);
    free(ex.lines);
    free(copy);
    return st;
}
