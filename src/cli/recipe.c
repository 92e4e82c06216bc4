/*
 * recipe.c - recipe files (`nnopt train --config FILE`): plain INI files whose
 * "[section] key = value" lines set the same options as the command-line
 * flags (each option's `ini` name in its cli_opt entry), parsed by inih. Flags
 * given on the command line are applied afterwards and win. The effective
 * recipe of a run is written back in the same format beside its log, so any
 * result can be reproduced from its files.
 */
#include "cli/cli.h"

#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const cli_opt *opts;
    cli_strings *keep;
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
    if (keep->count == (int)(sizeof keep->items / sizeof keep->items[0])) return NULL;
    char *copy = strdup(s);
    if (copy) keep->items[keep->count++] = copy;
    return copy;
}

/* inih calls this for every key; returning 0 stops with that line's number */
static int on_key(void *user, const char *section, const char *key, const char *value) {
    recipe_parse *r = user;
    const cli_opt *o = find_ini(r->opts, section, key);
    if (!o) {
        snprintf(r->err, sizeof r->err, "unknown key '%s' in section [%s]", key, section);
        return 0;
    }
    if (o->type == CLI_STR && !(value = keep_string(r->keep, value))) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return 0;
    }
    char why[256];
    if (cli_opt_set(o, value, why, sizeof why)) {
        snprintf(r->err, sizeof r->err, "[%s] %s: %s", section, key, why);
        return 0;
    }
    return 1;
}

int cli_recipe_load(const char *path, const cli_opt *opts, cli_strings *keep) {
    recipe_parse r = {opts, keep, ""};
    int line = ini_parse(path, on_key, &r);
    if (line == 0) return 0;
    /* keys and values are quoted in the message: one line, as nn_ctx_fail's */
    for (char *c = r.err; *c; c++)
        if (*c == '\r' || *c == '\n') *c = ' ';
    if (line == -1) fprintf(stderr, "nnopt: %s: cannot open recipe file\n", path);
    else if (line == -2) fprintf(stderr, "nnopt: %s: out of memory\n", path);
    else if (r.err[0]) fprintf(stderr, "nnopt: %s:%d: %s\n", path, line, r.err);
    else fprintf(stderr, "nnopt: %s:%d: expected '[section]' or 'key = value'\n", path, line);
    return 1;
}

void cli_strings_free(cli_strings *keep) {
    for (int i = 0; i < keep->count; i++) free(keep->items[i]);
    keep->count = 0;
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
    char section[64] = "", num[32];
    for (const cli_opt *o = opts; o->name; o++) {
        if (!o->ini) continue;
        const char *key = strchr(o->ini, '.') + 1;
        char value[4096];
        switch (o->type) {
        case CLI_FLAG:
            if (!*(int *)o->dst) continue;
            snprintf(value, sizeof value, "true");
            break;
        case CLI_INT:
            if (*(int *)o->dst == CLI_UNSET_I) continue;
            snprintf(value, sizeof value, "%d", *(int *)o->dst);
            break;
        case CLI_U64: snprintf(value, sizeof value, "%llu", (unsigned long long)*(uint64_t *)o->dst); break;
        case CLI_FLOAT:
            if (isnan(*(float *)o->dst)) continue;
            snprintf(value, sizeof value, "%s", cli_float_str(num, sizeof num, *(float *)o->dst));
            break;
        case CLI_STR:
            if (!*(const char **)o->dst) continue;
            snprintf(value, sizeof value, "%s", *(const char **)o->dst);
            break;
        }
        size_t sl = (size_t)(key - 1 - o->ini);
        if (strlen(section) != sl || strncmp(section, o->ini, sl) != 0) {
            snprintf(section, sizeof section, "%.*s", (int)sl, o->ini);
            fprintf(f, "\n[%s]\n", section);
        }
        fprintf(f, "%s = %s\n", key, value);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "nnopt: %s: write error\n", path);
        return 1;
    }
    return 0;
}
