/* memory.c - the aligned host allocator every layer uses (core: the bottom
 * of the layering). Device memory goes through a backend's alloc instead. */
#include "nn_internal.h"

void *nn_alloc_aligned(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

void nn_free_aligned(void *p) { free(p); }
