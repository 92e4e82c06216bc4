/*
 * cpu.c - the one CPU-feature probe (nn_cpu_probe): what the CPU has and the
 * operating system lets a process use, asked once per process. Every choice
 * that depends on the CPU (the kernels' ISA, OpenBLAS's core type, the FMA
 * peak loop, the AMX tiles) reads this struct.
 *
 * An instruction set counts only when the OS saves its registers on a context
 * switch: XCR0 (read by XGETBV, valid when CPUID says OSXSAVE) must enable the
 * SSE and AVX state for AVX2/FMA, also the opmask and both halves of the upper
 * zmm state for AVX-512, and the tile configuration and data for AMX. Linux
 * (5.16 and later) also gives a process the AMX tile data only on request, so
 * the probe asks for it (arch_prctl ARCH_REQ_XCOMP_PERM) and reports AMX only
 * when the kernel grants it.
 */
#define _GNU_SOURCE /* syscall() for the AMX permission */
#include "nn_internal.h"

#include <omp.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* XCR0 bits: the register state the OS saves */
#define XCR0_SSE (1u << 1)
#define XCR0_AVX (1u << 2)
#define XCR0_AVX512 (7u << 5)  /* opmask, ZMM_Hi256, Hi16_ZMM */
#define XCR0_AMX (3u << 17)    /* XTILECFG, XTILEDATA */

static unsigned xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return lo;
}

static void probe_x86(nn_cpu_features *f) {
    unsigned a, b, c, d;
    const unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1) return;
    __cpuid(1, a, b, c, d);
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    const unsigned xcr = osxsave ? xcr0() : 0;
    const int os_avx = (xcr & (XCR0_SSE | XCR0_AVX)) == (XCR0_SSE | XCR0_AVX);
    const int os_avx512 = os_avx && (xcr & XCR0_AVX512) == XCR0_AVX512;
    const int os_amx = (xcr & XCR0_AMX) == XCR0_AMX;
    f->fma = os_avx && avx && fma;
    /* leaf 7 exists only from max_leaf 7 on; below it a CPU answers with the
     * highest leaf it has, whose bits mean something else */
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    f->avx2 = os_avx && avx && ((b >> 5) & 1);
    f->avx512f = os_avx512 && ((b >> 16) & 1);
    f->avx512dq = os_avx512 && ((b >> 17) & 1);
    f->avx512cd = os_avx512 && ((b >> 28) & 1);
    f->avx512bw = os_avx512 && ((b >> 30) & 1);
    f->avx512vl = os_avx512 && ((b >> 31) & 1);
    f->avx512_vnni = os_avx512 && ((c >> 11) & 1);
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (max_sub >= 1) {
        unsigned a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        f->avx512_bf16 = os_avx512 && ((a1 >> 5) & 1);
    }
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000006) {
        __cpuid(0x80000006, a, b, c, d);
        f->l2_bytes = (size_t)(c >> 16) * 1024; /* KB per core, AMD and Intel alike */
    }
    if (amx_tile && os_amx &&
        syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) {
        f->amx_tile = 1;
        f->amx_bf16 = amx_bf16;
    }
}
#endif

static nn_cpu_features cpu;

static void probe(void) {
    memset(&cpu, 0, sizeof cpu);
#if defined(__x86_64__) && defined(__GNUC__)
    probe_x86(&cpu);
#endif
    cpu.cpus = omp_get_num_procs();
}

const nn_cpu_features *nn_cpu_probe(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, probe);
    return &cpu;
}
