/*
 * fuzz_recipe.c - libFuzzer harness of the recipe reader (cli_recipe_load,
 * src/cli/recipe.c + args.c, INI through inih) with `nnopt train`'s option
 * table (cli_train_opts_table, train_options.c). What the reader prints on
 * stderr is captured: a refused file must give exactly one non-empty line
 * naming the file, an accepted one nothing. An accepted recipe then goes the
 * way `nnopt train` takes it: cli_train_config checks it and resolves the
 * defaults, and the recipe written beside the log (cli_recipe_write) must
 * load again to the same values.
 */
#include "cli/cli.h"
#include "fuzz_common.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    cli_train_opts o;
    cli_opt table[CLI_TRAIN_OPTS_MAX + 1];
    int n;
    cli_strings keep;
} recipe;

static void recipe_init(recipe *r) {
    memset(r, 0, sizeof *r);
    cli_train_opts_init(&r->o);
    r->n = cli_train_opts_table(&r->o, r->table);
    r->table[r->n] = (cli_opt){NULL, 0, NULL, NULL, NULL, 0, 0, NULL};
}

/* Runs cli_recipe_load with stderr sent to a file; what it printed goes to
 * out (NUL-terminated, cut at size - 1). */
static int load_captured(const char *path, const cli_opt *opts, cli_strings *keep, char *out,
                         size_t size) {
    static int capture_fd = -1, saved_fd = -1;
    if (capture_fd < 0) {
        capture_fd = open(fuzz_path("stderr.txt"), O_RDWR | O_CREAT | O_TRUNC, 0600);
        saved_fd = dup(2);
        if (capture_fd < 0 || saved_fd < 0) fuzz_die("cannot capture stderr", path);
    }
    fflush(stderr);
    if (ftruncate(capture_fd, 0) != 0 || lseek(capture_fd, 0, SEEK_SET) != 0 ||
        dup2(capture_fd, 2) < 0)
        fuzz_die("cannot capture stderr", path);
    int r = cli_recipe_load(path, opts, keep);
    fflush(stderr);
    if (dup2(saved_fd, 2) < 0) abort();
    ssize_t n = pread(capture_fd, out, size - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    return r;
}

/* Two limits of the format that the writer does not guard against, known and
 * not checked here (docs/fuzzing.md): inih reads lines into a buffer of this
 * many bytes (Debian's build), so a written line of a string value of about
 * 190 bytes or more is refused; and a ';' or '#' after a blank starts a
 * comment, so a string value that starts with one (written after "key = ")
 * or holds one after a blank loses its tail. */
#define INIH_MAX_LINE 200

static int comment_inside(const recipe *r) {
    for (int i = 0; i < r->n; i++) {
        if (r->table[i].type != CLI_STR) continue;
        const char *s = *(const char **)r->table[i].dst;
        for (size_t k = 0; s && s[k]; k++)
            if ((s[k] == ';' || s[k] == '#') && (k == 0 || isspace((unsigned char)s[k - 1])))
                return 1;
    }
    return 0;
}

static size_t longest_line(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fuzz_die("cannot read", path);
    size_t longest = 0, len = 0;
    for (int c; (c = getc(f)) != EOF;) {
        len = c == '\n' ? 0 : len + 1;
        if (len > longest) longest = len;
    }
    fclose(f);
    return longest + 1; /* with its newline */
}

/* The option with a recipe key that differs between a and b, or NULL. */
static const char *first_difference(const recipe *a, const recipe *b) {
    for (int i = 0; i < a->n; i++) {
        const cli_opt *x = &a->table[i], *y = &b->table[i];
        if (!x->ini) continue;
        int same = 1;
        switch (x->type) {
        case CLI_FLAG:
        case CLI_INT: same = *(int *)x->dst == *(int *)y->dst; break;
        case CLI_U64: same = *(uint64_t *)x->dst == *(uint64_t *)y->dst; break;
        case CLI_FLOAT: same = memcmp(x->dst, y->dst, sizeof(float)) == 0; break;
        case CLI_STR: {
            const char *s = *(const char **)x->dst, *t = *(const char **)y->dst;
            same = (!s && !t) || (s && t && strcmp(s, t) == 0);
            break;
        }
        }
        if (!same) return x->ini;
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_path("recipe.ini");
    char path[512], written[512], printed[4096];
    snprintf(path, sizeof path, "%s", p);
    snprintf(written, sizeof written, "%s", fuzz_path("written.recipe.ini"));
    fuzz_write(path, data, size);

    static recipe r, again;
    recipe_init(&r);
    if (load_captured(path, r.table, &r.keep, printed, sizeof printed)) {
        size_t len = strlen(printed);
        if (len < 2 || printed[len - 1] != '\n') fuzz_die("recipe error is not one line", printed);
        printed[len - 1] = '\0';
        fuzz_check_message(printed, path);
        cli_strings_free(&r.keep);
        return 0;
    }
    if (printed[0]) fuzz_die("an accepted recipe printed", printed);

    nn_ctx *ctx = fuzz_ctx();
    nn_train_config cfg;
    nn_ctx_clear_error(ctx);
    if (cli_train_config(ctx, &r.o, &cfg) != NN_OK) { /* refused as nnopt train refuses it */
        const char *msg = nn_ctx_error(ctx);
        if (!msg[0] || strpbrk(msg, "\n\r")) fuzz_die("bad configuration message", msg);
        cli_strings_free(&r.keep);
        return 0;
    }
    if (r.o.threads == 0) r.o.threads = 1; /* cmd_train records the count it used */
    if (cli_recipe_write(written, r.table, "fuzz") != 0) fuzz_die("cannot write the recipe", written);
    if (longest_line(written) >= INIH_MAX_LINE || comment_inside(&r)) { /* known, see above */
        cli_strings_free(&r.keep);
        return 0;
    }
    recipe_init(&again);
    if (load_captured(written, again.table, &again.keep, printed, sizeof printed))
        fuzz_die("a written recipe does not load", printed);
    const char *diff = first_difference(&r, &again);
    if (diff) fuzz_die("a written recipe loads a different value of", diff);
    cli_strings_free(&r.keep);
    cli_strings_free(&again.keep);
    return 0;
}
