/*
 * fuzz_recipe.c - libFuzzer harness of the recipe reader (cli_recipe_load,
 * src/cli/recipe.c + args.c, INI through inih), with an option table of the
 * same sections, keys, types and ranges as `nnopt train`'s (cmd_train.c keeps
 * its table inside the command, so it is restated here; keep them in step).
 * What the reader prints on stderr is captured: a refused file must give
 * exactly one non-empty line naming the file, an accepted one nothing. An
 * accepted recipe is written back (cli_recipe_write) and must load again to
 * the same values.
 */
#include "cli/cli.h"
#include "fuzz_common.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_INT = 17, N_FLOAT = 24, N_STR = 5, N_FLAG = 5, MAX_OPTS = 64 };

typedef struct {
    int ints[N_INT];
    float floats[N_FLOAT];
    const char *strs[N_STR];
    int flags[N_FLAG];
    uint64_t seed;
} recipe_values;

#define OPT(type, dst, lo, hi, ini) {"--" ini, type, dst, NULL, "", lo, hi, ini}

/* The option table over v, in cmd_train's order; every number starts at its
 * lowest accepted value, so that an untouched option writes back valid. */
static void make_opts(cli_opt *opts, recipe_values *v) {
    const cli_opt table[] = {
        OPT(CLI_STR, &v->strs[0], 0, 0, "data.dir"),
        OPT(CLI_INT, &v->ints[0], 0, 1 << 30, "data.val"),
        OPT(CLI_INT, &v->ints[1], 0, 1 << 30, "data.train_limit"),
        OPT(CLI_INT, &v->ints[2], 0, 1 << 30, "data.test_limit"),
        OPT(CLI_FLOAT, &v->floats[0], -1e6, 1e6, "data.mean"),
        OPT(CLI_FLOAT, &v->floats[1], 1e-9, 1e6, "data.std"),
        OPT(CLI_FLAG, &v->flags[0], 0, 0, "data.no_shuffle"),
        OPT(CLI_INT, &v->ints[3], 1, 1000000, "train.epochs"),
        OPT(CLI_INT, &v->ints[4], 1, 65536, "train.batch"),
        OPT(CLI_INT, &v->ints[5], 1, 65536, "train.accumulate"),
        OPT(CLI_U64, &v->seed, 0, 0, "train.seed"),
        OPT(CLI_INT, &v->ints[6], 1, 1024, "train.threads"),
        OPT(CLI_STR, &v->strs[1], 0, 0, "train.precision"),
        OPT(CLI_INT, &v->ints[7], 0, 1000000, "train.early_stop"),
        OPT(CLI_FLOAT, &v->floats[2], 0, 1e6, "train.min_delta"),
        OPT(CLI_STR, &v->strs[2], 0, 0, "optimizer.name"),
        OPT(CLI_FLOAT, &v->floats[3], 0, 1e6, "optimizer.lr"),
        OPT(CLI_FLOAT, &v->floats[4], 0, 1e6, "optimizer.momentum"),
        OPT(CLI_FLOAT, &v->floats[5], 0, 1, "optimizer.dampening"),
        OPT(CLI_FLAG, &v->flags[1], 0, 0, "optimizer.nesterov"),
        OPT(CLI_FLOAT, &v->floats[6], 0, 1e6, "optimizer.weight_decay"),
        OPT(CLI_FLOAT, &v->floats[7], 0, 1, "optimizer.beta1"),
        OPT(CLI_FLOAT, &v->floats[8], 0, 1, "optimizer.beta2"),
        OPT(CLI_FLOAT, &v->floats[9], 0, 1, "optimizer.eps"),
        OPT(CLI_FLAG, &v->flags[2], 0, 0, "optimizer.amsgrad"),
        OPT(CLI_FLOAT, &v->floats[10], 0, 1, "optimizer.alpha"),
        OPT(CLI_FLAG, &v->flags[3], 0, 0, "optimizer.centered"),
        OPT(CLI_FLOAT, &v->floats[11], 0, 1e6, "optimizer.lr_decay"),
        OPT(CLI_STR, &v->strs[3], 0, 0, "schedule.name"),
        OPT(CLI_INT, &v->ints[8], 0, 1000000, "schedule.step_size"),
        OPT(CLI_FLOAT, &v->floats[12], 0, 1e6, "schedule.gamma"),
        OPT(CLI_STR, &v->strs[4], 0, 0, "schedule.milestones"),
        OPT(CLI_INT, &v->ints[9], 0, 1000000, "schedule.t_max"),
        OPT(CLI_INT, &v->ints[10], 0, 1000000, "schedule.t_0"),
        OPT(CLI_INT, &v->ints[11], 0, 1000, "schedule.t_mult"),
        OPT(CLI_FLOAT, &v->floats[13], 0, 1e6, "schedule.eta_min"),
        OPT(CLI_INT, &v->ints[12], 0, 1 << 30, "schedule.total_steps"),
        OPT(CLI_FLOAT, &v->floats[14], 0, 1, "schedule.pct_start"),
        OPT(CLI_FLOAT, &v->floats[15], 1e-9, 1e9, "schedule.div_factor"),
        OPT(CLI_FLOAT, &v->floats[16], 1e-9, 1e12, "schedule.final_div_factor"),
        OPT(CLI_FLOAT, &v->floats[17], 0, 1, "schedule.plateau_factor"),
        OPT(CLI_INT, &v->ints[13], 0, 1000000, "schedule.plateau_patience"),
        OPT(CLI_FLOAT, &v->floats[18], 0, 1, "schedule.plateau_threshold"),
        OPT(CLI_INT, &v->ints[14], 0, 1000000, "schedule.plateau_cooldown"),
        OPT(CLI_FLOAT, &v->floats[19], 0, 1e6, "schedule.min_lr"),
        OPT(CLI_INT, &v->ints[15], 0, 1 << 30, "schedule.warmup_steps"),
        OPT(CLI_FLOAT, &v->floats[20], 0, 1, "schedule.warmup_start_factor"),
        OPT(CLI_FLOAT, &v->floats[21], 0, 1, "regularization.label_smoothing"),
        OPT(CLI_FLOAT, &v->floats[22], 0, 1e9, "regularization.clip_grad_norm"),
        OPT(CLI_INT, &v->ints[16], 0, 64, "augment.crop_pad"),
        OPT(CLI_FLAG, &v->flags[4], 0, 0, "augment.hflip"),
        OPT(CLI_FLOAT, &v->floats[23], 0, 1, "augment.erase_prob"),
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    if (sizeof table > MAX_OPTS * sizeof *opts) fuzz_die("option table", "too long");
    memcpy(opts, table, sizeof table);
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->type == CLI_INT) *(int *)o->dst = (int)o->min;
        if (o->type == CLI_FLOAT) *(float *)o->dst = (float)o->min;
    }
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
 * 190 bytes or more is split; and a ';' after a blank starts a comment, so a
 * string value that starts with ';' (written after "key = ") or holds one
 * after a blank loses its tail. */
#define INIH_MAX_LINE 200

static int comment_inside(const recipe_values *v) {
    for (int i = 0; i < N_STR; i++) {
        const char *s = v->strs[i];
        for (size_t k = 0; s && s[k]; k++)
            if (s[k] == ';' && (k == 0 || isspace((unsigned char)s[k - 1]))) return 1;
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

static int same_values(const recipe_values *a, const recipe_values *b) {
    for (int i = 0; i < N_STR; i++)
        if (!a->strs[i] != !b->strs[i] || (a->strs[i] && strcmp(a->strs[i], b->strs[i]) != 0))
            return 0;
    return memcmp(a->ints, b->ints, sizeof a->ints) == 0 &&
           memcmp(a->floats, b->floats, sizeof a->floats) == 0 &&
           memcmp(a->flags, b->flags, sizeof a->flags) == 0 && a->seed == b->seed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_path("recipe.ini");
    char path[512], written[512], printed[4096];
    snprintf(path, sizeof path, "%s", p);
    snprintf(written, sizeof written, "%s", fuzz_path("written.recipe.ini"));
    fuzz_write(path, data, size);

    recipe_values v, again;
    memset(&v, 0, sizeof v);
    memset(&again, 0, sizeof again);
    cli_opt opts[MAX_OPTS], opts_again[MAX_OPTS];
    make_opts(opts, &v);
    make_opts(opts_again, &again);
    cli_strings keep = {0}, keep_again = {0};

    if (load_captured(path, opts, &keep, printed, sizeof printed)) {
        size_t len = strlen(printed);
        if (len < 2 || printed[len - 1] != '\n') fuzz_die("recipe error is not one line", printed);
        printed[len - 1] = '\0';
        fuzz_check_message(printed, path);
        cli_strings_free(&keep);
        return 0;
    }
    if (printed[0]) fuzz_die("an accepted recipe printed", printed);

    if (cli_recipe_write(written, opts, "fuzz") != 0) fuzz_die("cannot write the recipe", written);
    if (longest_line(written) >= INIH_MAX_LINE || comment_inside(&v)) { /* known, see above */
        cli_strings_free(&keep);
        return 0;
    }
    if (load_captured(written, opts_again, &keep_again, printed, sizeof printed))
        fuzz_die("a written recipe does not load", printed);
    if (!same_values(&v, &again)) fuzz_die("a written recipe loads different values", written);
    cli_strings_free(&keep);
    cli_strings_free(&keep_again);
    return 0;
}
