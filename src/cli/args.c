/* args.c - table-driven option parsing with strict number checks and --help,
 * and the warning for more threads than cores. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f, const char *cmd, const char *synopsis, const char *about,
                  const cli_opt *opts) {
    fprintf(f, "usage: nnopt %s %s\n\n%s\n\noptions:\n", cmd, synopsis, about);
    for (const cli_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(f, "  %-24s %s\n", left, o->help);
    }
    fprintf(f, "  %-24s %s\n", "-h, --help", "show this help");
}

int cli_opt_set(const cli_opt *o, const char *v, char *err, size_t errsz) {
    char *end;
    errno = 0;
    /* strto* skip leading blanks (and strtoull accepts "-5"): refuse both */
    if (o->type != CLI_STR && o->type != CLI_FLAG && (isspace((unsigned char)*v) || !*v)) {
        snprintf(err, errsz, "expected a number, got '%s'", v);
        return 1;
    }
    switch (o->type) {
    case CLI_FLAG:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
            strcmp(v, "on") == 0)
            *(int *)o->dst = 1;
        else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
                 strcmp(v, "off") == 0)
            *(int *)o->dst = 0;
        else {
            snprintf(err, errsz, "expected true or false, got '%s'", v);
            return 1;
        }
        return 0;
    case CLI_STR:
        if (!*v) {
            snprintf(err, errsz, "expected a value, got an empty string");
            return 1;
        }
        *(const char **)o->dst = v;
        return 0;
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno || x < o->min || x > o->max) {
            snprintf(err, errsz, "expected an integer in [%.0f, %.0f], got '%s'", o->min, o->max, v);
            return 1;
        }
        *(int *)o->dst = (int)x;
        return 0;
    }
    case CLI_U64: {
        unsigned long long x = *v == '-' ? 0 : strtoull(v, &end, 10);
        if (*v == '-' || end == v || *end || errno) {
            snprintf(err, errsz, "expected a non-negative integer, got '%s'", v);
            return 1;
        }
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case CLI_FLOAT: {
        double x = strtod(v, &end);
        /* the range is checked on the float kept, against float bounds: a
         * value accepted here is accepted again when a recipe writes it back
         * (1e-9 is kept as 9.99999972e-10, below the double 1e-9) */
        float f = (float)x;
        if (end == v || *end || errno || !isfinite(x) || f < (float)o->min || f > (float)o->max) {
            snprintf(err, errsz, "expected a number in [%g, %g], got '%s'", o->min, o->max, v);
            return 1;
        }
        *(float *)o->dst = f;
        return 0;
    }
    }
    snprintf(err, errsz, "unknown option type");
    return 1;
}

static int set_value(const char *cmd, const cli_opt *o, const char *v) {
    char err[256];
    if (cli_opt_set(o, v, err, sizeof err) == 0) return 0;
    fprintf(stderr, "nnopt %s: %s: %s\n", cmd, o->name, err);
    return 1;
}

/* --threads above the cores this process may use is kept (results are
 * bit-identical only for the same thread count, so a run can be reproduced
 * on a smaller machine) but warned about once, when the options are final:
 * every parallel loop then waits on threads that share a core, many times
 * slower. */
static void warn_threads(const char *cmd, const cli_opt *opts) {
    for (const cli_opt *o = opts; o->name; o++) {
        if (strcmp(o->name, "--threads") != 0 || o->type != CLI_INT) continue;
        const int threads = *(const int *)o->dst, cores = nn_cpu_cores();
        if (threads > cores)
            fprintf(stderr, "nnopt %s: warning: --threads %d is more than the %d core%s this "
                    "process may use; threads will wait on each other (often many times "
                    "slower)\n", cmd, threads, cores, cores == 1 ? "" : "s");
    }
}

int cli_parse(const char *cmd, const char *synopsis, const char *about, int argc, char **argv,
              const cli_opt *opts, const char **pos, int max_pos, int *npos) {
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, cmd, synopsis, about, opts);
            return 2;
        }
        if (a[0] == '-' && a[1] != '\0') {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            const cli_opt *o = NULL;
            for (const cli_opt *k = opts; k->name; k++)
                if (strlen(k->name) == len && strncmp(k->name, a, len) == 0) o = k;
            if (!o) {
                fprintf(stderr, "nnopt %s: unknown option '%.*s' (see nnopt %s --help)\n", cmd,
                        (int)len, a, cmd);
                return 1;
            }
            if (o->type == CLI_FLAG) {
                if (eq) {
                    fprintf(stderr, "nnopt %s: %s takes no value\n", cmd, o->name);
                    return 1;
                }
                *(int *)o->dst = 1;
                continue;
            }
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "nnopt %s: %s needs a value (%s)\n", cmd, o->name,
                        o->metavar ? o->metavar : "VALUE");
                return 1;
            }
            if (set_value(cmd, o, v)) return 1;
            continue;
        }
        if (*npos >= max_pos) {
            fprintf(stderr, "nnopt %s: unexpected argument '%s' (see nnopt %s --help)\n", cmd, a,
                    cmd);
            return 1;
        }
        pos[(*npos)++] = a;
    }
    warn_threads(cmd, opts);
    return 0;
}
