/*
 * fuzz_common.h - shared pieces of the libFuzzer harnesses (docs/fuzzing.md):
 * one context per process, a private temporary directory for the files the
 * readers open, and the check that an error message is one non-empty line
 * that names the file. A failed check aborts, which libFuzzer reports as a
 * crash with the input that caused it.
 */
#ifndef NN_FUZZ_COMMON_H
#define NN_FUZZ_COMMON_H

#include "nnopt.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The net the checkpoint harness loads into, and make_corpus saves from:
 * parameters (conv, batchnorm, linear), batchnorm buffers, under 150 floats. */
#define FUZZ_CKPT_MODEL                                                                 \
    "input shape=1x4x4\n"                                                               \
    "conv2d name=conv out=2 kernel=3 pad=1\n"                                           \
    "batchnorm name=bn\n"                                                               \
    "relu\n"                                                                            \
    "flatten\n"                                                                         \
    "linear name=fc out=3\n"                                                            \
    "softmax_ce\n"

/* The first input byte of the checkpoint harness picks how it loads: weights
 * only, or a resume into an optimizer of this kind with a train state. */
enum { FUZZ_CKPT_WEIGHTS = 0, FUZZ_CKPT_SGD = 1, FUZZ_CKPT_ADAM = 2, FUZZ_CKPT_MODES = 3 };

/* The IDX harness's input: a mode byte (bit 0: a labels file is given), the
 * images file, then FUZZ_IDX_SPLIT and the labels file. */
#define FUZZ_IDX_SPLIT "\n--labels--\n"

/* ASan's settings for every harness (also when one is run by hand on a
 * file): an allocation over 128 MB fails, as it would on a machine short of
 * memory, so the readers' out-of-memory paths run too and a model that asks
 * for gigabytes (issue 14, item 4) is refused instead of zero-filled until
 * the fuzzer's time or memory limit. Environment ASAN_OPTIONS come after these. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=128";
}

static inline _Noreturn void fuzz_die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz: %s: %s\n", what, detail);
    abort();
}

/* One context for the process: the readers only record errors in it. */
static inline nn_ctx *fuzz_ctx(void) {
    static nn_ctx *ctx;
    if (!ctx && !(ctx = nn_ctx_new(1))) fuzz_die("nn_ctx_new", "out of memory");
    return ctx;
}

static char fuzz_dir[256];

/* Removes the temporary directory and its files at exit. */
static inline void fuzz_remove_dir(void) {
    DIR *d = opendir(fuzz_dir);
    if (!d) return;
    char path[512];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", fuzz_dir, e->d_name);
        remove(path);
    }
    closedir(d);
    rmdir(fuzz_dir);
}

/* "<private temporary directory>/<name>" in a static buffer. The directory is
 * made once per process (several fuzzing jobs may run side by side), in
 * /dev/shm when there is one, so the files stay in memory. */
static inline const char *fuzz_path(const char *name) {
    static char path[512];
    if (!fuzz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/nnopt-fuzz-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(fuzz_dir)) fuzz_die("mkdtemp", fuzz_dir);
        atexit(fuzz_remove_dir);
    }
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    return path;
}

/* Replaces the file at path with data[0..size). */
static inline void fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) fuzz_die("cannot write", path);
    if ((size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        fuzz_die("cannot write", path);
}

/* The rule for every reader's error: one non-empty line (no line break
 * anywhere; the caller prints the newline) that names the file. */
static inline void fuzz_check_message(const char *msg, const char *path) {
    if (!msg || !msg[0]) fuzz_die("empty error message for", path);
    if (strpbrk(msg, "\n\r")) fuzz_die("error message of more than one line", msg);
    if (!strstr(msg, path)) fuzz_die("error message does not name the file", msg);
}

#endif /* NN_FUZZ_COMMON_H */
