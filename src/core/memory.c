/* memory.c - the aligned host allocator every layer uses (core: the bottom
 * of the layering). Device memory goes through a backend's alloc instead. */
#include "nn_internal.h"

#include <stdint.h>

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
    return n ? align_block(malloc(n)) : NULL;
}

void *nn_calloc_aligned(size_t bytes) {
    size_t n = block_size(bytes);
    return n ? align_block(calloc(1, n)) : NULL;
}

void nn_free_aligned(void *p) {
    if (p) free(((void **)p)[-1]);
}
