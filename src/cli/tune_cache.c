/*
 * tune_cache.c - the per-machine cache of `nnopt tune` (as cuDNN's benchmark
 * mode keeps the fastest algorithm per layer shape): for a machine, a model
 * (its expanded layer text, so --params count) and a batch size, the thread
 * count and convolution kernels that trained fastest. `nnopt train` and
 * `nnopt search` read it when no thread count is given.
 *
 * One tab-separated line per entry, newest last (a later line wins):
 *   machine  model_hash  batch  threads  conv  images_per_s  bf16_images_per_s  tuned_at
 *   prefetch
 * (prefetch, "on" or "off", is absent from lines written before it: on)
 * machine is the CPU model, its processors and the kernels' ISA; the file is
 * rewritten whole, atomically (a temporary file, then rename), under a lock.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cli_tune_machine(nn_ctx *ctx, char *buf, size_t size) {
    char model[256];
    cli_cpu_model(model, sizeof model);
    for (char *c = model; *c; c++)
        if (*c == '\t') *c = ' ';
    snprintf(buf, size, "%s|%d cpus|%s", model, nn_cpu_probe()->cpus,
             nn_isa_name(nn_ctx_isa(ctx)));
}

uint64_t cli_tune_model_hash(const nn_net *net) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)nn_net_model_text(net); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* Reads the entry for (machine, hash, batch) from the cache; 1 if found. */
int cli_tune_lookup(const cli_env *env, const char *machine, uint64_t hash, int batch,
                    cli_tune_entry *out) {
    if (!env->tune_cache[0]) return 0;
    FILE *f = fopen(env->tune_cache, "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char *field[9], *save = NULL;
        int n = 0;
        line[strcspn(line, "\n")] = '\0';
        for (char *t = strtok_r(line, "\t", &save); t && n < 9; t = strtok_r(NULL, "\t", &save))
            field[n++] = t;
        if (n < 7 || strcmp(field[0], machine) != 0) continue;
        if (strtoull(field[1], NULL, 16) != hash || atoi(field[2]) != batch) continue;
        cli_tune_entry e = {.batch = batch, .threads = atoi(field[3]),
                            .winograd = strcmp(field[4], "winograd") == 0,
                            .prefetch = NN_PREFETCH_AUTO,
                            .images_per_s = atof(field[5]), .bf16_images_per_s = atof(field[6])};
        if (e.threads < 1 || e.threads > 1024) continue;
        if (n == 9 && cli_prefetch_parse(field[8], &e.prefetch)) continue;
        *out = e; /* the last line for the key wins */
        found = 1;
    }
    fclose(f);
    return found;
}

/* mkdir -p of the cache file's folder */
static int make_parent(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0777) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(dir, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

int cli_tune_store(const cli_env *env, const char *machine, uint64_t hash,
                   const cli_tune_entry *e) {
    if (!env->tune_cache[0]) {
        fprintf(stderr, "nnopt: no tuning cache (NNOPT_TUNE_CACHE=off, or no HOME)\n");
        return 1;
    }
    const char *path = env->tune_cache;
    if (make_parent(path) != 0) {
        fprintf(stderr, "nnopt: %s: cannot create its folder: %s\n", path, strerror(errno));
        return 1;
    }
    char lock[4200], tmp[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int lfd = open(lock, O_RDWR | O_CREAT, 0666);
    if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
        fprintf(stderr, "nnopt: %s: cannot lock the tuning cache: %s\n", lock, strerror(errno));
        if (lfd >= 0) close(lfd);
        return 1;
    }
    FILE *out = fopen(tmp, "w"), *in = fopen(path, "r");
    int bad = !out;
    char line[1024];
    /* keep every other entry; drop the old one for this key */
    while (!bad && in && fgets(line, sizeof line, in)) {
        char copy[1024], *save = NULL;
        snprintf(copy, sizeof copy, "%s", line);
        const char *m = strtok_r(copy, "\t", &save), *h = strtok_r(NULL, "\t", &save),
                   *b = strtok_r(NULL, "\t", &save);
        if (m && h && b && !strcmp(m, machine) && strtoull(h, NULL, 16) == hash && atoi(b) == e->batch)
            continue;
        bad = fputs(line, out) == EOF;
    }
    if (in) fclose(in);
    if (!bad)
        bad = fprintf(out, "%s\t%016llx\t%d\t%d\t%s\t%.1f\t%.1f\t%lld\t%s\n", machine,
                      (unsigned long long)hash, e->batch, e->threads,
                      e->winograd ? "winograd" : "direct", e->images_per_s, e->bf16_images_per_s,
                      (long long)time(NULL), cli_prefetch_name(e->prefetch)) < 0;
    if (out && fclose(out) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        fprintf(stderr, "nnopt: %s: cannot write the tuning cache: %s\n", path, strerror(errno));
        unlink(tmp);
        close(lfd);
        return 1;
    }
    close(lfd);
    return 0;
}

int cli_tuned_settings(const cli_env *env, const char *model, const char *params, int batch,
                       int *threads, cli_env *tuned) {
    *tuned = *env;
    if (!env->tune_cache[0] || access(env->tune_cache, R_OK) != 0) return 0;
    nn_ctx *ctx = cli_ctx_new(env, 1);
    nn_net *net = NULL;
    int found = 0;
    if (ctx && cli_net_load(ctx, model, params, &net) == NN_OK) {
        char machine[512];
        cli_tune_machine(ctx, machine, sizeof machine);
        cli_tune_entry e;
        if (cli_tune_lookup(env, machine, cli_tune_model_hash(net), batch, &e)) {
            *threads = e.threads;
            if (!env->conv_set) tuned->winograd = e.winograd;
            if (!env->prefetch_set) tuned->prefetch = e.prefetch;
            found = 1;
        }
    }
    nn_net_free(net);
    nn_ctx_free(ctx);
    return found;
}
