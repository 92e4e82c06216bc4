/* test_cpu.c - the CPU-feature probe (nn_cpu_probe) against the compiler's
 * own run-time checks, which also ask CPUID and the OS's saved register state
 * (XGETBV), and the kernels' ISA that a context picks from it; the shares
 * with stealing; the huge-page advice of the host allocator. */
#include "nnopt.h"
#include "nn_internal.h"

#include "test_util.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Switches OpenBLAS to core type `name` the way nnopt's main() does; returns
 * the core it runs afterwards. */
static const char *switch_core(const char *name) {
    setenv("OPENBLAS_CORETYPE", name, 1);
    nn_status st = nn_blas_rechoose();
    unsetenv("OPENBLAS_CORETYPE");
    return st == NN_OK ? nn_blas_core() : NULL;
}

/* The advice and the re-choice behind main()'s check of OpenBLAS's kernels:
 * an SSE3-era core (what an OpenBLAS older than the CPU falls back to) is
 * replaced by the best core the CPU runs, a modern one is kept. Runs before
 * any GEMM, as main() does, and puts OpenBLAS's own choice back. */
static void test_blas_advice(const nn_cpu_features *f) {
    char own[32];
    snprintf(own, sizeof own, "%s", nn_blas_core() ? nn_blas_core() : "?");
    check(nn_blas_replaced_core() == NULL, "no core replaced before nn_blas_rechoose", NULL);
    if (!f->avx2 || !f->fma || getenv("OPENBLAS_CORETYPE")) {
        printf("SKIP OpenBLAS advice: no AVX2+FMA, or OPENBLAS_CORETYPE set\n");
        return;
    }
    const char *best = f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512cd
                           ? (f->avx512_bf16 ? "Cooperlake" : "SkylakeX")
                           : "Haswell";
    const char *core = switch_core("Prescott");
    if (!core) {
        printf("SKIP OpenBLAS advice: this OpenBLAS cannot choose again (no DYNAMIC_ARCH)\n");
        return;
    }
    check(strcmp(core, "Prescott") == 0, "OPENBLAS_CORETYPE + nn_blas_rechoose switch the kernels",
          "core %s", core);
    check(nn_blas_replaced_core() && strcmp(nn_blas_replaced_core(), own) == 0,
          "nn_blas_replaced_core names the kernels before", "%s vs %s",
          nn_blas_replaced_core() ? nn_blas_replaced_core() : "NULL", own);
    const char *advised = nn_blas_advised_core();
    check(advised && strcmp(advised, best) == 0, "SSE3 kernels on this CPU: the best core advised",
          "%s vs %s", advised ? advised : "NULL", best);
    /* AVX2 kernels: replaced on an AVX-512 CPU, kept on an AVX2 one */
    core = switch_core("Haswell");
    advised = nn_blas_advised_core();
    if (strcmp(best, "Haswell") == 0)
        check(core && strcmp(core, "Haswell") == 0 && advised == NULL,
              "Haswell kernels on an AVX2 CPU are kept (no advice)", "core %s", core ? core : "?");
    else
        check(core && strcmp(core, "Haswell") == 0 && advised && strcmp(advised, best) == 0,
              "Haswell kernels on an AVX-512 CPU: the best core advised", "core %s, advised %s",
              core ? core : "?", advised ? advised : "NULL");
    /* the best set itself, and on an AVX-512 CPU the other AVX-512 set, are kept */
    core = switch_core(best);
    check(core && strcmp(core, best) == 0 && nn_blas_advised_core() == NULL,
          "the best core is kept (no advice)", "core %s", core ? core : "?");
    if (strcmp(best, "Cooperlake") == 0) {
        core = switch_core("SkylakeX");
        check(core && strcmp(core, "SkylakeX") == 0 && nn_blas_advised_core() == NULL,
              "SkylakeX kernels on a BF16 CPU are kept (the same sgemm)", "core %s",
              core ? core : "?");
    }
    core = switch_core(own);
    check(core && strcmp(core, own) == 0, "OpenBLAS's own choice back", "core %s", core ? core : "?");
    /* the kernels run: a product through nnopt's GEMM */
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return;
    double g = nn_measure_sgemm_gflops(ctx, 64, 1);
    nn_ctx_free(ctx);
    check(g > 0.0, "sgemm runs after the switches", "%.1f GFLOP/s", g);
}

/* Shares with stealing (nn_shares_take): one thread takes its share front to
 * back, each index the `next` it was told before; with 4 threads, one
 * starting 20 ms late, every index is taken once and the others take (part
 * of) the late thread's share, from its back. */
static void test_shares(void) {
    enum { N = 997, T = 4 };
    uint64_t cells[T];
    nn_shares_init(cells, 1, N);
    long i, next, expect = 0, bad = 0;
    while ((i = nn_shares_take(cells, 1, 0, &next)) >= 0) {
        bad += i != expect;
        expect = next >= 0 ? next : -1;
    }
    check(!bad && expect == -1, "one thread takes its share in order, told each next one",
          "%ld out of order", bad);
    static int taken[N];
    long own[T] = {0}, own_bad[T] = {0};
    int team = 0;
    nn_shares_init(cells, T, N);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        if (t == 0) { /* late by 20 ms */
            team = omp_get_num_threads();
            nanosleep(&(struct timespec){0, 20000000}, NULL);
        }
        long k, nx, want = (long)N * t / T;
        while ((k = nn_shares_take(cells, T, t, &nx)) >= 0) {
            __atomic_add_fetch(&taken[k], 1, __ATOMIC_RELAXED);
            if (k >= (long)N * t / T && k < (long)N * (t + 1) / T) { /* its own share */
                own_bad[t] += k != want;
                own[t]++, want = k + 1;
            }
        }
    }
    if (team != T) {
        printf("SKIP shares with stealing: %d threads, not %d\n", team, T);
        return;
    }
    int once = 1;
    for (int k = 0; k < N; k++) once &= taken[k] == 1;
    check(once, "4 threads, one late: every index taken exactly once", NULL);
    check(!own_bad[0] && !own_bad[1] && !own_bad[2] && !own_bad[3],
          "each thread takes its own share front first", NULL);
    check(own[0] < N / T, "the others took (part of) the late thread's share",
          "it took %ld of %d", own[0], N / T);
}

/* Whether the mapping holding p carries VmFlags token `flag` in
 * /proc/self/smaps: 1 yes, 0 no, -1 no such file or mapping. */
static int mapping_has_flag(const void *p, const char *flag) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int inside = 0, found = -1;
    const uintptr_t at = (uintptr_t)p;
    while (found < 0 && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = at >= lo && at < hi;
        } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            found = 0;
            for (char *tok = strtok(line + 8, " \n"); tok; tok = strtok(NULL, " \n"))
                if (strcmp(tok, flag) == 0) found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Blocks of 4 MiB or more ask for transparent huge pages over their whole
 * 2 MiB pages (Linux's "hg" flag on that mapping), unless turned off;
 * smaller ones never. Where the kernel has no transparent huge pages the
 * advice is refused and the test says so. */
static void test_huge_pages(void) {
    const size_t big = (size_t)8 << 20;
    check(nn_huge_pages() == 1, "huge pages are on by default", NULL);
    char *on = nn_calloc_aligned(big);
    if (!on) {
        check(0, "an 8 MiB block is allocated", NULL);
        return;
    }
    const uintptr_t page = (uintptr_t)2 << 20;
    const char *inner = (const char *)(((uintptr_t)on + page - 1) & ~(page - 1));
    const int has = mapping_has_flag(inner, "hg");
    if (has < 0 || (has == 0 && access("/sys/kernel/mm/transparent_hugepage", F_OK) != 0)) {
        printf("SKIP huge pages: no /proc/self/smaps or no transparent huge pages\n");
        nn_free_aligned(on);
        return;
    }
    check(has == 1, "an 8 MiB block's whole 2 MiB pages ask for huge pages", NULL);
    on[0] = on[big - 1] = 1; /* usable from end to end */
    nn_set_huge_pages(0);
    char *off = nn_calloc_aligned(big);
    check(off != NULL, "an 8 MiB block is allocated", NULL);
    const char *inner_off = (const char *)(((uintptr_t)off + page - 1) & ~(page - 1));
    check(mapping_has_flag(inner_off, "hg") == 0, "turned off: an 8 MiB block asks for none",
          NULL);
    nn_set_huge_pages(1);
    char *small = nn_calloc_aligned((size_t)1 << 20);
    check(mapping_has_flag(small, "hg") != 1, "a 1 MiB block asks for none", NULL);
    nn_free_aligned(small);
    nn_free_aligned(off);
    nn_free_aligned(on);
}

int main(void) {
    test_shares();
    test_huge_pages();
    const nn_cpu_features *f = nn_cpu_probe();
    test_blas_advice(f);
    check(f == nn_cpu_probe(), "the probe runs once: the same struct every call", NULL);
    check(f->cpus == omp_get_num_procs(), "cpus is what OpenMP may use", "%d vs %d", f->cpus,
          omp_get_num_procs());
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    static const struct {
        const char *name;
        size_t offset;
    } flags[] = {
        {"avx2", offsetof(nn_cpu_features, avx2)},
        {"fma", offsetof(nn_cpu_features, fma)},
        {"avx512f", offsetof(nn_cpu_features, avx512f)},
        {"avx512bw", offsetof(nn_cpu_features, avx512bw)},
        {"avx512vl", offsetof(nn_cpu_features, avx512vl)},
        {"avx512dq", offsetof(nn_cpu_features, avx512dq)},
        {"avx512cd", offsetof(nn_cpu_features, avx512cd)},
    };
    int gcc[sizeof flags / sizeof flags[0]] = {
        __builtin_cpu_supports("avx2"),     __builtin_cpu_supports("fma"),
        __builtin_cpu_supports("avx512f"),  __builtin_cpu_supports("avx512bw"),
        __builtin_cpu_supports("avx512vl"), __builtin_cpu_supports("avx512dq"),
        __builtin_cpu_supports("avx512cd"),
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const int ours = *(const int *)((const char *)f + flags[i].offset);
        check(ours == (gcc[i] != 0), flags[i].name, "probe %d, compiler %d", ours, gcc[i] != 0);
    }
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10
    check(f->avx512_bf16 == (__builtin_cpu_supports("avx512bf16") != 0), "avx512bf16",
          "probe %d", f->avx512_bf16);
    check(f->avx512_vnni == (__builtin_cpu_supports("avx512vnni") != 0), "avx512vnni",
          "probe %d", f->avx512_vnni);
#endif
#endif
    /* the context's ISA follows the probe: AVX2 needs AVX2 and FMA; AVX-512
     * F; bf16 also BW, VL and BF16; AMX the tiles */
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return 2;
    const nn_isa want = f->avx512f && f->avx512bw && f->avx512vl && f->avx512_bf16
                            ? (f->amx_tile && f->amx_bf16 ? NN_ISA_AMX : NN_ISA_AVX512BF16)
                        : f->avx512f       ? NN_ISA_AVX512
                        : f->avx2 && f->fma ? NN_ISA_AVX2
                                            : NN_ISA_GENERIC;
    check(nn_ctx_isa(ctx) == want, "a new context takes the best ISA the probe allows", "%s vs %s",
          nn_isa_name(nn_ctx_isa(ctx)), nn_isa_name(want));
    check(nn_ctx_set_isa(ctx, NN_ISA_AMX) == (want == NN_ISA_AMX ? NN_OK : NN_EUNSUPPORTED),
          "an ISA above the CPU's is refused", "%s", nn_ctx_error(ctx));
    /* the L2 size (CPUID 0x80000006) against Linux's reading of the caches */
    FILE *lvf = fopen("/sys/devices/system/cpu/cpu0/cache/index2/level", "r");
    int level = 0;
    if (lvf && fscanf(lvf, "%d", &level) != 1) level = 0;
    if (lvf) fclose(lvf);
    FILE *l2f = level == 2 ? fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r") : NULL;
    unsigned long kb = 0;
    if (l2f && fscanf(l2f, "%luK", &kb) == 1 && f->l2_bytes)
        check(f->l2_bytes == kb * 1024, "the L2 size is the one Linux reports", "probe %zu, sysfs %lu KB",
              f->l2_bytes, kb);
    if (l2f) fclose(l2f);
    printf("cpu: avx2 %d fma %d avx512 f%d bw%d vl%d dq%d cd%d vnni %d bf16 %d amx %d/%d, %d cpus, "
           "L2 %zu KB\n",
           f->avx2, f->fma, f->avx512f, f->avx512bw, f->avx512vl, f->avx512dq, f->avx512cd,
           f->avx512_vnni, f->avx512_bf16, f->amx_tile, f->amx_bf16, f->cpus, f->l2_bytes / 1024);
    nn_ctx_free(ctx);
    return test_summary();
}
