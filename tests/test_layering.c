/*
 * test_layering.c - the layering of src/ (docs/architecture.md, "Layers"):
 * reads every #include "..." line of every .c, .h and .cu file under src/ and
 * fails when a file includes one from a higher layer, one from another part
 * of its own layer, or a .c file, and when a file under src/ belongs to no
 * layer. Since every include then points strictly downward (or stays within
 * one part), there can be no include cycle between the parts.
 *
 * The table below is the layering; a new folder or core file gets a line.
 */
#include "test_util.h"

#include <dirent.h>
#include <sys/stat.h>

/* Bottom first. A path under src/ belongs to the first entry it starts with. */
static const struct {
    const char *prefix;
    const char *part;
    int layer;
} layers[] = {
    /* core: the context, its settings, the CPU probe, memory, the RNG */
    {"nn_internal.h", "core", 0},
    {"core/context.c", "core", 0},
    {"core/cpu.c", "core", 0},
    {"core/file.c", "core", 0},
    {"core/memory.c", "core", 0},
    {"core/rng.c", "core", 0},
    /* kernels that ops share: the sgemm wrapper, the bf16 GEMM, SIMD helpers,
     * the FMA peak loop */
    {"backend/blas.c", "kernels", 1},
    {"backend/gemm_bf16.", "kernels", 1},
    {"backend/simd_avx512.h", "kernels", 1},
    {"backend/simd_avx2.h", "kernels", 1},
    {"backend/peak.c", "kernels", 1},
    /* the CUDA kernels' shared pieces: the cuBLAS handle and GEMM, checks */
    {"backend/cuda_blas.", "kernels", 1},
    /* and cuDNN's convolutions, opened at run time */
    {"backend/cuda_dnn.", "kernels", 1},
    /* ops: definitions, CPU kernels, reference twins */
    {"ops/", "ops", 2},
    /* backends: the device interface and each device's kernel table */
    {"backend/", "backend", 3},
    /* the graph: model files, nodes, plan, forward and backward */
    {"core/graph.", "graph", 4},
    {"core/model_expand.c", "graph", 4},
    {"core/model_file.c", "graph", 4},
    {"optim/", "optim", 5},
    {"data/", "data", 5},
    {"io/", "io", 5},
    {"train/", "train", 6},
    /* dist: communicators (MPI) that fill in the trainer's nn_comm through
     * the public header; beside train, neither includes the other */
    {"dist/", "dist", 6},
    {"tools/", "tools", 7},
    /* search: spaces, samplers, pruners, the study (SQLite); through the
     * public header only, beside tools */
    {"search/", "search", 7},
    {"cli/", "cli", 8},
};

/* Includes that go up today and are known: core/graph.h holds the op
 * interface (op types, descriptors, nn_node, the kernel table types) with the
 * net, so ops and the backend table read it; the op registry splits it. An
 * entry that no longer occurs fails too, so the list only shrinks. */
static const struct {
    const char *from, *to;
} known[] = {
    {"ops/ops.h", "core/graph.h"},
    {"backend/backend.h", "core/graph.h"},
};
#define NKNOWN (int)(sizeof known / sizeof known[0])
static int known_seen[NKNOWN];

/* Index into layers[] of a path relative to src/, or -1. */
static int layer_of(const char *rel) {
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        if (strncmp(rel, layers[i].prefix, strlen(layers[i].prefix)) == 0) return (int)i;
    return -1;
}

/* Whether `from` may include `to` (paths relative to src/): 1 yes, 0 no with
 * the reason in why. */
static int edge_ok(const char *from, const char *to, char *why, size_t size) {
    const int a = layer_of(from), b = layer_of(to);
    if (a < 0 || b < 0) {
        snprintf(why, size, "src/%s belongs to no layer (table in tests/test_layering.c)",
                 a < 0 ? from : to);
        return 0;
    }
    if (strcmp(layers[a].part, layers[b].part) == 0 || layers[b].layer < layers[a].layer)
        return 1;
    snprintf(why, size, "%s (layer %d) may not include %s (layer %d)", layers[a].part,
             layers[a].layer, layers[b].part, layers[b].layer);
    return 0;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int n_files, n_edges;

/* Checks the #include "..." lines of src/<rel>. */
static void check_file(const char *root, const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/src/%s", root, rel);
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, "readable", "cannot open %s", path);
        return;
    }
    n_files++;
    if (layer_of(rel) < 0) check(0, rel, "src/%s belongs to no layer", rel);
    char line[1024];
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p++ != '#') continue;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, "include", 7) != 0) continue;
        p += 7;
        while (*p == ' ' || *p == '\t') p++;
        if (*p++ != '"') continue; /* <system> headers */
        const char *end = strchr(p, '"');
        if (!end) continue;
        char inc[256];
        snprintf(inc, sizeof inc, "%.*s", (int)(end - p), p);
        /* resolved as the compiler does: beside the file, then src/, then include/ */
        char dir[512], cand[1024], to[512] = "";
        snprintf(dir, sizeof dir, "%s", rel);
        char *slash = strrchr(dir, '/');
        if (slash) slash[1] = '\0';
        else dir[0] = '\0';
        snprintf(cand, sizeof cand, "%s/src/%s%s", root, dir, inc);
        if (exists(cand)) snprintf(to, sizeof to, "%s%s", dir, inc);
        else {
            snprintf(cand, sizeof cand, "%s/src/%s", root, inc);
            if (exists(cand)) snprintf(to, sizeof to, "%s", inc);
        }
        char name[600];
        snprintf(name, sizeof name, "src/%s:%d includes \"%s\"", rel, lineno, inc);
        if (!to[0]) {
            snprintf(cand, sizeof cand, "%s/include/%s", root, inc);
            if (!exists(cand)) check(0, name, "found neither beside it, in src/ nor in include/");
            continue; /* the public header: every layer may include it */
        }
        n_edges++;
        const size_t n = strlen(to);
        if (n > 2 && strcmp(to + n - 2, ".c") == 0) {
            check(0, name, "a .c file: include its header and link it instead");
            continue;
        }
        char why[256];
        if (edge_ok(rel, to, why, sizeof why)) continue;
        int k = 0;
        while (k < NKNOWN && !(strcmp(known[k].from, rel) == 0 && strcmp(known[k].to, to) == 0))
            k++;
        if (k < NKNOWN) known_seen[k] = 1;
        else check(0, name, "%s", why);
    }
    fclose(f);
}

/* Every .c, .h and .cu file under src/<rel>, recursively. */
static void walk(const char *root, const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/src/%s", root, rel);
    DIR *d = opendir(path);
    if (!d) {
        check(0, "src/ readable", "cannot open %s", path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[512], full[1024];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/src/%s", root, sub);
        struct stat st;
        if (stat(full, &st) != 0) continue;
        const size_t n = strlen(sub);
        if (S_ISDIR(st.st_mode)) walk(root, sub);
        else if ((n > 2 && (strcmp(sub + n - 2, ".c") == 0 || strcmp(sub + n - 2, ".h") == 0)) ||
                 (n > 3 && strcmp(sub + n - 3, ".cu") == 0))
            check_file(root, sub);
    }
    closedir(d);
}

/* The rule itself, on includes the tree does not have. */
static void test_rule(void) {
    static const struct {
        const char *from, *to;
        int ok;
    } cases[] = {
        {"core/context.c", "backend/backend.h", 0}, /* the cycle this test was written for */
        {"core/context.c", "core/graph.h", 0},
        {"core/cpu.c", "nn_internal.h", 1},
        {"ops/conv2d.c", "backend/gemm_bf16.h", 1},
        {"backend/cpu.c", "ops/ops.h", 1},
        {"backend/blas.c", "ops/ops.h", 0},
        {"core/graph.c", "backend/backend.h", 1},
        {"data/loader.c", "io/checkpoint.c", 0}, /* same layer, another part */
        {"optim/optim.c", "optim/optim.h", 1},
        {"train/train.c", "core/graph.h", 1},
        {"io/checkpoint.c", "train/train.h", 0},
        {"cli/main.c", "tools/svg.h", 1},
        {"tools/svg.c", "cli/cli.h", 0},
        {"dist/mpi.c", "nn_internal.h", 1},
        {"dist/mpi.c", "train/trainer.c", 0}, /* beside train, not above it */
        {"cluster/ssh.c", "nn_internal.h", 0}, /* a folder the table lacks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[256] = "", name[256];
        const int ok = edge_ok(cases[i].from, cases[i].to, why, sizeof why);
        snprintf(name, sizeof name, "rule: %s -> %s %s", cases[i].from, cases[i].to,
                 cases[i].ok ? "allowed" : "refused");
        check(ok == cases[i].ok, name, "%s", why);
    }
}

int main(void) {
    test_rule();
    walk(NN_SOURCE_DIR, "");
    check(n_files > 50 && n_edges > 50, "src/ walked", "%d files, %d includes", n_files, n_edges);
    for (int k = 0; k < NKNOWN; k++)
        check(known_seen[k], "known upward include still there (else drop it from the list)",
              "src/%s -> src/%s", known[k].from, known[k].to);
    if (n_fail == 0) printf("PASS every include under src/ points down the layers\n");
    return test_summary();
}
