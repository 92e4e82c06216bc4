/* memory.c - the aligned host allocator every layer uses (core: the bottom
 * of the layering). Device memory goes through a backend's alloc instead. */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include "nn_internal.h"

#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Blocks of HUGE_MIN bytes or more (a network's activations, gradients and
 * parameters: one arena each) ask Linux for transparent huge pages over
 * their whole 2 MiB pages (MADV_HUGEPAGE): Linux's THP mode "madvise" (the
 * machines measured here) gives them only to regions that ask. The passes
 * over activations then walk 2 MiB pages, not 4 KiB ones: far fewer TLB
 * misses, whose page walks cost twice over in a virtual machine. Training
 * steps on a 2-vCPU Zen 4 VM, alternating pairs: 1-5% more images/s
 * (docs/performance.md). Same bytes either way; nn_set_huge_pages(0) turns
 * it off. Smaller blocks stay as they come. */
#define HUGE_PAGE ((uintptr_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)
static int huge_pages = 1;

void nn_set_huge_pages(int on) { __atomic_store_n(&huge_pages, on != 0, __ATOMIC_RELAXED); }
int nn_huge_pages(void) { return __atomic_load_n(&huge_pages, __ATOMIC_RELAXED); }

static void *advise_huge(void *block, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (block && bytes >= HUGE_MIN && nn_huge_pages()) {
        const uintptr_t lo = ((uintptr_t)block + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        const uintptr_t hi = ((uintptr_t)block + bytes) & ~(HUGE_PAGE - 1);
        if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* a hint: may fail */
    }
#else
    (void)bytes;
#endif
    return block;
}

/* A 64-byte aligned block inside raw, the pointer malloc or calloc returned
 * kept just below it for nn_free_aligned. calloc lets zero-filled blocks come
 * from fresh kernel pages, which cost no time and no memory until written
 * (nnopt info on a model with gigabytes of parameters touches none of them).
 * The usable size is rounded up to a multiple of 64 as before. */
static void *align_block(void *raw) {
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)a)[-1] = raw;
    return (void *)a;
}

/* bytes rounded up to 64 (0 to 64), plus room for the alignment and the
 * pointer; 0 if that does not fit a size_t */
static size_t block_size(size_t bytes) {
    const size_t extra = 64 + sizeof(void *);
    if (bytes > SIZE_MAX - 63 - extra) return 0;
    bytes = bytes ? (bytes + 63) & ~(size_t)63 : 64;
    return bytes + extra;
}

void *nn_alloc_aligned(size_t bytes) {
    size_t n = block_size(bytes);
    return n ? advise_huge(align_block(malloc(n)), bytes) : NULL;
}

void *nn_calloc_aligned(size_t bytes) {
    size_t n = block_size(bytes);
    return n ? advise_huge(align_block(calloc(1, n)), bytes) : NULL;
}

void nn_free_aligned(void *p) {
    if (p) free(((void **)p)[-1]);
}
