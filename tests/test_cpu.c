/* test_cpu.c - the CPU-feature probe (nn_cpu_probe) against the compiler's
 * own run-time checks, which also ask CPUID and the OS's saved register state
 * (XGETBV), and the kernels' ISA that a context picks from it. */
#include "nnopt.h"

#include "test_util.h"

#include <omp.h>

int main(void) {
    const nn_cpu_features *f = nn_cpu_probe();
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
    /* the context's ISA follows the probe: AVX-512 needs F; bf16 also BW, VL
     * and BF16; AMX the tiles */
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return 2;
    const nn_isa want = f->avx512f && f->avx512bw && f->avx512vl && f->avx512_bf16
                            ? (f->amx_tile && f->amx_bf16 ? NN_ISA_AMX : NN_ISA_AVX512BF16)
                        : f->avx512f ? NN_ISA_AVX512
                                     : NN_ISA_GENERIC;
    check(nn_ctx_isa(ctx) == want, "a new context takes the best ISA the probe allows", "%s vs %s",
          nn_isa_name(nn_ctx_isa(ctx)), nn_isa_name(want));
    check(nn_ctx_set_isa(ctx, NN_ISA_AMX) == (want == NN_ISA_AMX ? NN_OK : NN_EUNSUPPORTED),
          "an ISA above the CPU's is refused", "%s", nn_ctx_error(ctx));
    printf("cpu: avx2 %d fma %d avx512 f%d bw%d vl%d dq%d cd%d vnni %d bf16 %d amx %d/%d, %d cpus\n",
           f->avx2, f->fma, f->avx512f, f->avx512bw, f->avx512vl, f->avx512dq, f->avx512cd,
           f->avx512_vnni, f->avx512_bf16, f->amx_tile, f->amx_bf16, f->cpus);
    nn_ctx_free(ctx);
    return test_summary();
}
