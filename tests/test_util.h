/*
 * test_util.h - helpers shared by the tests/test_*.c binaries: the PASS/FAIL
 * reporter and its counters, allocation and string helpers, the seed CNN's
 * model text, tensor-comparison and shape helpers, and a per-binary temporary
 * directory.
 *
 * Header-only: every helper is static and marked TU_UNUSED, so a test that
 * includes this file and uses only part of it compiles without warnings.
 * Include it once, from the test's .c file, after the project headers.
 */
#ifndef NN_TEST_UTIL_H
#define NN_TEST_UTIL_H

#include "nnopt.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef NN_SOURCE_DIR
#define NN_SOURCE_DIR "."
#endif

#if defined(__GNUC__)
#define TU_UNUSED __attribute__((unused))
#define TU_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define TU_UNUSED
#define TU_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------ reporting */

static int n_pass TU_UNUSED, n_fail TU_UNUSED;

/* Counts one check and prints "PASS name" or "FAIL name", followed by
 * "  [detail]" when detail is neither NULL nor empty. */
static TU_UNUSED void check_msg(int ok, const char *name, const char *detail) {
    if (ok) n_pass++;
    else n_fail++;
    printf("%s %s%s%s%s\n", ok ? "PASS" : "FAIL", name, detail && *detail ? "  [" : "",
           detail ? detail : "", detail && *detail ? "]" : "");
}

/* check_msg with a printf-formatted detail; fmt may be NULL for none. */
static TU_UNUSED TU_PRINTF(3, 4) void check(int ok, const char *name, const char *fmt, ...) {
    char detail[768] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    check_msg(ok, name, detail);
}

/* Prints the final "N passed, M failed" line; returns the exit status. */
static TU_UNUSED int test_summary(void) {
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

/* The context's message when st is a failure, "" otherwise. */
static TU_UNUSED const char *ctx_err(const nn_ctx *ctx, nn_status st) {
    return st == NN_OK ? "" : nn_ctx_error(ctx);
}

/* ------------------------------------------------------------ contexts */

/* The value of an environment variable for the settings below, exiting with
 * status 2 when it is set to none of the `n` accepted names; returns the
 * index of the name, or -1 when unset or empty. */
static TU_UNUSED int tu_env_choice(const char *var, const char *const *names, int n) {
    const char *v = getenv(var);
    if (!v || !*v) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) return i;
    fprintf(stderr, "test: %s=%s is not a value nnopt knows\n", var, v);
    exit(2);
}

/* ------------------------------------------------------------ fixture data */

/* The integer hash of the PyTorch fixture scripts (scripts/make_*.py), uint32
 * arithmetic wrapping as in Python's masked version, and the values drawn from
 * it: uniform in [0, 1) with 24 bits (exact in float32), and
 * float32(float32(2u - 1) * scale). */
static TU_UNUSED uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
static TU_UNUSED uint32_t hash_value(uint32_t stream, uint32_t index) {
    return hash32(index ^ hash32(stream));
}
static TU_UNUSED float hash_uniform(uint32_t stream, uint32_t index) {
    return (float)(hash_value(stream, index) >> 8) / 16777216.0f;
}
static TU_UNUSED float hash_signed(uint32_t stream, uint32_t i, float scale) {
    return (2.0f * hash_uniform(stream, i) - 1.0f) * scale;
}

/* Runs one_case on every "case ..." header line of tests/fixtures/<file>
 * (a PyTorch fixture written by scripts/make_layer_fixtures.py; '#' lines and
 * blank lines skipped), each reading its values from f after its header; stops
 * at the first case that returns 0. Checks that the file holds cases. */
typedef int (*tu_fixture_case)(FILE *f, const char *header, nn_ctx *ctx, const char *file);
static TU_UNUSED void tu_fixture_cases(const char *file, tu_fixture_case one_case, nn_ctx *ctx) {
    char path[512], line[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", NN_SOURCE_DIR, file);
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, file, "cannot open %s", path);
        return;
    }
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (strncmp(line, "case ", 5)) {
            check(0, file, "unexpected line '%.40s'", line);
            break;
        }
        if (!one_case(f, line, ctx, file)) break;
        cases++;
        int c = fgetc(f); /* the newline after the case's last values */
        if (c != '\n' && c != EOF) ungetc(c, f);
    }
    fclose(f);
    char name[96];
    snprintf(name, sizeof name, "%s holds PyTorch cases", file);
    check(cases > 0, name, "%d cases", cases);
}

/* Host copies of the backend's memory (nn_net_params, nn_net_grads,
 * nn_net_buffers, nn_net_logits, nn_optim_state point there): the tests that
 * also run on the guard backend read and write it only through these. */
static TU_UNUSED float *tu_download(nn_ctx *ctx, const float *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) {
        fprintf(stderr, "test: out of memory\n");
        exit(1);
    }
    nn_ctx_download(ctx, h, dev, n * sizeof *h);
    return h;
}
static TU_UNUSED float tu_get(nn_ctx *ctx, const float *dev) {
    float v;
    nn_ctx_download(ctx, &v, dev, sizeof v);
    return v;
}
static TU_UNUSED void tu_set(nn_ctx *ctx, float *dev, float v) { nn_ctx_upload(ctx, dev, &v, sizeof v); }

/* nn_ctx_new(threads) with the settings that tests/CMakeLists.txt gives some
 * tests through nnopt's environment variables, applied as nnopt's main()
 * applies them (the library reads no environment): NNOPT_ISA caps the
 * kernels' ISA, NNOPT_CONV=direct turns Winograd off, NNOPT_FUSE=off turns
 * epilogue fusion off, NNOPT_LOADER forces the
 * batch loader's mode, NNOPT_BACKEND=guard runs on the guard backend (and
 * NNOPT_BACKEND=cuda on the GPU, skipping with exit 77 where there is none). The
 * first call also has OpenBLAS choose kernels fit for
 * this CPU where its own choice is older, unless OPENBLAS_CORETYPE pins one,
 * as main() does. NULL only if out of memory. */
static TU_UNUSED nn_ctx *test_ctx_new(int threads) {
    static int blas_fitted;
    if (!blas_fitted) {
        blas_fitted = 1;
        const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : nn_blas_advised_core();
        if (core) {
            setenv("OPENBLAS_CORETYPE", core, 1);
            nn_blas_rechoose();
            unsetenv("OPENBLAS_CORETYPE");
        }
    }
    static const char *const isas[] = {"generic", "avx2", "avx512", "avx512bf16", "amx"};
    static const char *const convs[] = {"winograd", "direct"};
    static const char *const loaders[] = {"auto", "thread", "sync"};
    const int isa = tu_env_choice("NNOPT_ISA", isas, 5);
    const int conv = tu_env_choice("NNOPT_CONV", convs, 2);
    const int loader = tu_env_choice("NNOPT_LOADER", loaders, 3);
    static const char *const fuses[] = {"on", "off"};
    const int fuse = tu_env_choice("NNOPT_FUSE", fuses, 2);
    static const char *const backends[] = {"cpu", "guard", "cuda"};
    const int backend = tu_env_choice("NNOPT_BACKEND", backends, 3);
    nn_ctx *ctx = nn_ctx_new(threads);
    if (!ctx) return NULL;
    /* a backend asked for and not there (cuda without a device) skips the
     * test (exit 77) rather than quietly testing the CPU */
    if (backend >= 0 && nn_ctx_set_backend(ctx, backends[backend]) != NN_OK) {
        printf("SKIP: NNOPT_BACKEND=%s: %s\n", backends[backend], nn_ctx_error(ctx));
        exit(77);
    }
    nn_isa cap;
    if (isa >= 0 && nn_isa_parse(isas[isa], &cap) == NN_OK && cap < nn_ctx_isa(ctx))
        nn_ctx_set_isa(ctx, cap);
    if (conv >= 0) nn_ctx_set_winograd(ctx, conv == 0);
    if (fuse >= 0) nn_ctx_set_fusion(ctx, fuse == 0);
    if (loader >= 0)
        nn_ctx_set_loader_mode(ctx, loader == 1   ? NN_LOADER_THREAD
                                    : loader == 2 ? NN_LOADER_SYNC
                                                  : NN_LOADER_AUTO);
    return ctx;
}

/* ------------------------------------------------------------ memory, strings */

/* malloc that exits with status 2 when out of memory; 0 bytes gives a valid
 * pointer. */
static TU_UNUSED void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

/* Case-insensitive substring test. */
/* Vectors for kernel tests: float/double arrays (exit on out of memory),
 * uniform random fill in [lo, hi), a double copy (NULL stays NULL), max |v|. */
static TU_UNUSED float *fvec(size_t n) { return xmalloc(n * sizeof(float)); }
static TU_UNUSED double *dvec(size_t n) { return xmalloc(n * sizeof(double)); }

static TU_UNUSED void fill(float *v, size_t n, nn_rng *rng, float lo, float hi) {
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * nn_rng_uniform(rng);
}

static TU_UNUSED void fill_d(double *v, size_t n, nn_rng *rng, double lo, double hi) {
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * nn_rng_uniform(rng);
}

static TU_UNUSED double *to_d(const float *v, size_t n) {
    if (!v) return NULL;
    double *d = dvec(n);
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

static TU_UNUSED double max_abs(const double *v, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = m > fabs(v[i]) ? m : fabs(v[i]);
    return m;
}

static TU_UNUSED int contains(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return 1;
    }
    return n == 0;
}

/* ------------------------------------------------------------ models, tensors */

/* The seed CNN (models/seed_cnn.nn without its comments and alignment). */
static const char *const SEED_MODEL TU_UNUSED = "input shape=1x28x28\n"
                                                "conv2d name=conv1 out=16 kernel=3 pad=1\n"
                                                "relu\n"
                                                "maxpool size=2\n"
                                                "conv2d name=conv2 out=32 kernel=3 pad=1\n"
                                                "relu\n"
                                                "maxpool size=2\n"
                                                "flatten\n"
                                                "linear name=fc1 out=128\n"
                                                "relu\n"
                                                "linear name=fc2 out=10\n"
                                                "softmax_ce\n";

/* s has ndim dimensions d0, d1, ... (the unused trailing ones are ignored). */
static TU_UNUSED int shape_is(const nn_shape *s, int ndim, int64_t d0, int64_t d1, int64_t d2,
                              int64_t d3) {
    const int64_t d[4] = {d0, d1, d2, d3};
    if (s->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (s->dim[i] != d[i]) return 0;
    return 1;
}

/* Fast float vs double reference: max_i |a_i - b_i| / (s + |b_i|) with
 * s = max(1, max_j |b_j|), i.e. float rounding relative to the tensor's
 * magnitude; INFINITY if a holds a NaN or Inf. */
static TU_UNUSED double max_err(const float *a, const double *b, size_t n) {
    double s = 1.0, e = 0.0;
    for (size_t j = 0; j < n; j++) s = fmax(s, fabs(b[j]));
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = fabs((double)a[i] - b[i]) / (s + fabs(b[i]));
        if (d > e) e = d;
    }
    return e;
}

/* ------------------------------------------------------------ files */

/* The binary's temporary directory, set by tmp_dir_create. */
static char tmp_dir[64] TU_UNUSED;

/* Creates a fresh /tmp/nnopt_test_<tag>_XXXXXX as tmp_dir; exits with status
 * 2 if it cannot. */
static TU_UNUSED void tmp_dir_create(const char *tag) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/nnopt_test_%s_XXXXXX", tag);
    if (!mkdtemp(tmp_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", tmp_dir, strerror(errno));
        exit(2);
    }
}

/* "<tmp_dir>/<name>" in a static ring of buffers, so a few can be live at once. */
static TU_UNUSED const char *tmp_path(const char *name) {
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_dir, name);
    return b;
}

/* Removes path: a file, or a directory with everything below it. */
static TU_UNUSED void remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *dir = opendir(path);
        struct dirent *e;
        while (dir && (e = readdir(dir)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[512];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            remove_tree(child);
        }
        if (dir) closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Writes n bytes to path (replacing it); exits with status 2 on failure. */
static TU_UNUSED void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

#endif /* NN_TEST_UTIL_H */
