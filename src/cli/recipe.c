/*
 * recipe.c - recipe files (`nnopt train --config FILE`): plain INI files whose
 * "[section] key = value" lines set the same options as the command-line
 * flags (each option's `ini` name in its cli_opt entry), parsed by inih. Flags
 * given on the command line are applied afterwards and win. The effective
 * recipe of a run is written back in the same format beside its log, so any
 * result can be reproduced from its files. Comments start with '#' or ';' at
 * the start of a line or after a blank; each key may be given once; a value
 * is one line (indentation is ignored).
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Recipe files are small; anything larger is not one. */
#define RECIPE_MAX_BYTES ((size_t)1 << 20)

typedef struct {
    const cli_opt *opts;
    cli_strings *keep;
    int *set_on;        /* per option: the line that set it, 0 if none yet */
    const char *text;   /* the whole file, NUL-terminated */
    size_t pos;         /* where the next line starts */
    int line;           /* number of the line last handed to inih */
    int err_line;       /* line of err, 0 if none */
    char err[384];
} recipe_parse;

static const cli_opt *find_ini(const cli_opt *opts, const char *section, const char *key) {
    size_t sl = strlen(section);
    for (const cli_opt *o = opts; o->name; o++)
        if (o->ini && strncmp(o->ini, section, sl) == 0 && o->ini[sl] == '.' &&
            strcmp(o->ini + sl + 1, key) == 0)
            return o;
    return NULL;
}

static const char *keep_string(cli_strings *keep, const char *s) {
    if (keep->count == keep->cap) {
        int cap = keep->cap ? 2 * keep->cap : 16;
        char **items = realloc(keep->items, (size_t)cap * sizeof *items);
        if (!items) return NULL;
        keep->items = items;
        keep->cap = cap;
    }
    char *copy = strdup(s);
    if (copy) keep->items[keep->count++] = copy;
    return copy;
}

static void recipe_error(recipe_parse *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void recipe_error(recipe_parse *r, const char *fmt, ...) {
    if (r->err_line) return; /* the first error is the one reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    r->err_line = r->line;
}

/* inih's line reader (fgets-like) over the file in memory. Each line goes to
 * inih without its leading blanks, so an indented line is a line of its own,
 * never the continuation of the value above (values are one line), and
 * without a '#' comment that follows a blank: inih itself drops ';' comments
 * after a blank and '#' or ';' comments that start a line. */
static char *next_line(char *str, int num, void *stream) {
    recipe_parse *r = stream;
    const char *p = r->text + r->pos;
    if (!*p || r->err_line) return NULL; /* end of file, or stop after our error */
    r->line++;
    size_t len = strcspn(p, "\n");
    r->pos += len + (p[len] == '\n');
    while (len && isspace((unsigned char)*p)) p++, len--;
    for (size_t i = 1; i < len; i++) /* blanks as inih's own rule for ';' */
        if (p[i] == '#' && isspace((unsigned char)p[i - 1])) {
            len = i;
            break;
        }
    if (len + 2 > (size_t)num) {
        recipe_error(r, "line longer than %d characters", num - 2);
        return NULL;
    }
    memcpy(str, p, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

/* inih calls this for every key; returning 0 marks that line as an error */
static int on_key(void *user, const char *section, const char *key, const char *value) {
    recipe_parse *r = user;
    if (r->err_line) return 1;
    const cli_opt *o = find_ini(r->opts, section, key);
    if (!o) {
        recipe_error(r, "unknown key '%s' in section [%s]", key, section);
        return 0;
    }
    int *first = &r->set_on[o - r->opts];
    if (*first) {
        recipe_error(r, "[%s] %s is set again (first on line %d); give each key once", section,
                     key, *first);
        return 0;
    }
    *first = r->line;
    if (o->type == CLI_STR && !(value = keep_string(r->keep, value))) {
        recipe_error(r, "out of memory");
        return 0;
    }
    char why[256];
    if (cli_opt_set(o, value, why, sizeof why)) {
        recipe_error(r, "[%s] %s: %s", section, key, why);
        return 0;
    }
    return 1;
}

/* The file as one NUL-terminated string in *text (regular files only, up to
 * RECIPE_MAX_BYTES, no NUL bytes); 0, or 1 after printing the problem. */
static int read_recipe(const char *path, char **text) {
    const char *why;
    int fd = nn_open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) why = strerror(errno), close(fd);
        fprintf(stderr, "nnopt: %s: cannot open recipe file: %s\n", path, why);
        return 1;
    }
    char *buf = malloc(RECIPE_MAX_BYTES + 1);
    size_t len = buf ? fread(buf, 1, RECIPE_MAX_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    const char *problem = !buf                       ? "out of memory"
                          : bad                      ? "read error"
                          : len > RECIPE_MAX_BYTES   ? "larger than 1 MiB; not a recipe file"
                          : memchr(buf, '\0', len) ? "contains a NUL byte; not a recipe file"
                                                     : NULL;
    if (problem) {
        fprintf(stderr, "nnopt: %s: %s\n", path, problem);
        free(buf);
        return 1;
    }
    buf[len] = '\0';
    *text = buf;
    return 0;
}

int cli_recipe_load(const char *path, const cli_opt *opts, cli_strings *keep) {
    char *text = NULL;
    if (read_recipe(path, &text)) return 1;
    int nopts = 0;
    while (opts[nopts].name) nopts++;
    recipe_parse r = {.opts = opts, .keep = keep, .text = text};
    r.set_on = calloc((size_t)nopts + 1, sizeof *r.set_on);
    if (!r.set_on) {
        free(text);
        fprintf(stderr, "nnopt: %s: out of memory\n", path);
        return 1;
    }
    int line = ini_parse_stream(next_line, &r, on_key, &r);
    free(r.set_on);
    free(text);
    /* keys and values are quoted in the message: one line, as nn_ctx_fail's */
    for (char *c = r.err; *c; c++)
        if (*c == '\r' || *c == '\n') *c = ' ';
    /* inih reports its first bad line, ours may come later or stop it early */
    if (r.err_line && (line <= 0 || line >= r.err_line))
        fprintf(stderr, "nnopt: %s:%d: %s\n", path, r.err_line, r.err);
    else if (line == -2)
        fprintf(stderr, "nnopt: %s: out of memory\n", path);
    else if (line > 0)
        fprintf(stderr, "nnopt: %s:%d: expected '[section]' or 'key = value'\n", path, line);
    else
        return 0;
    return 1;
}

void cli_strings_free(cli_strings *keep) {
    for (int i = 0; i < keep->count; i++) free(keep->items[i]);
    free(keep->items);
    keep->items = NULL;
    keep->count = keep->cap = 0;
}

/* Length of "section" in "section.key". */
static size_t section_len(const char *ini) { return (size_t)(strchr(ini, '.') - ini); }

/* o's value as a recipe writes it; 0 when it is unset (left to the default). */
static int opt_value(const cli_opt *o, char *value, size_t size) {
    char num[32];
    switch (o->type) {
    case CLI_FLAG:
        if (!*(int *)o->dst) return 0;
        snprintf(value, size, "true");
        return 1;
    case CLI_INT:
        if (*(int *)o->dst == CLI_UNSET_I) return 0;
        snprintf(value, size, "%d", *(int *)o->dst);
        return 1;
    case CLI_U64:
        snprintf(value, size, "%llu", (unsigned long long)*(uint64_t *)o->dst);
        return 1;
    case CLI_FLOAT:
        if (isnan(*(float *)o->dst)) return 0;
        snprintf(value, size, "%s", cli_float_str(num, sizeof num, *(float *)o->dst));
        return 1;
    case CLI_STR:
        if (!*(const char **)o->dst) return 0;
        snprintf(value, size, "%s", *(const char **)o->dst);
        return 1;
    }
    return 0;
}

/* Writes the options that hold a value (set numbers, true flags, strings) as
 * a recipe, atomically: a temporary file beside it, then rename. */
int cli_recipe_write(const char *path, const cli_opt *opts, const char *header) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "nnopt: %s: cannot write the recipe\n", path);
        return 1;
    }
    fprintf(f, "# %s\n", header);
    /* one block per section, in the order the sections first appear in the
     * table, each with its keys in table order */
    for (const cli_opt *o = opts; o->name; o++) {
        if (!o->ini) continue;
        const size_t sl = section_len(o->ini);
        const cli_opt *e = opts;
        while (e != o && !(e->ini && section_len(e->ini) == sl && !strncmp(e->ini, o->ini, sl)))
            e++;
        if (e != o) continue; /* the section was written */
        int header_done = 0;
        for (e = o; e->name; e++) {
            char value[4096];
            if (!e->ini || section_len(e->ini) != sl || strncmp(e->ini, o->ini, sl) ||
                !opt_value(e, value, sizeof value))
                continue;
            if (!header_done) fprintf(f, "\n[%.*s]\n", (int)sl, o->ini);
            header_done = 1;
            fprintf(f, "%s = %s\n", e->ini + sl + 1, value);
        }
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "nnopt: %s: write error\n", path);
        return 1;
    }
    return 0;
}
