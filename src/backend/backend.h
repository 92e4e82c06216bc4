/*
 * backend.h - the device interface. The graph executor never calls a kernel
 * directly: it asks for the op's kernels of the context's backend kind
 * (nn_backend_kernels), which every op's registry entry holds. Every buffer
 * the graph, the optimizer and the trainer use (parameters, gradients,
 * buffers, activations, workspace, optimizer state, the best weights of early
 * stopping) is device memory from the backend's alloc. Host code reaches it
 * only through explicit copies (nn_dev_upload / nn_dev_download: the batch at
 * forward, the logits at evaluation and prediction, the weights and state at
 * checkpoints); kernels reach it between nn_dev_begin and nn_dev_end.
 *
 * Two backends exist. "cpu" (cpu.c) is the reference and default: host
 * memory, copies are memcpy, the window costs nothing, and forward reads the
 * caller's batch in place. "guard" (guard.c) runs the same CPU kernels on
 * memory that is mprotect()ed outside the window, so any host code that
 * touches device memory directly faults at once, with a message: it proves
 * the seam that a CUDA backend (its own kernel kind, cudaMalloc, cudaMemcpy)
 * slots into. Distributed training plugs in at the trainer's communicator
 * (nn_comm), which receives device pointers.
 */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include "nn_internal.h"
#include "core/graph.h"

#include <string.h>

typedef struct nn_backend {
    const char *name;
    nn_device device;
    /* Which of each op's kernel tables this backend runs (nn_op_def.kernels). */
    nn_kernel_kind kernels;
    /* Host code may read and write this memory directly (the CPU): forward
     * then reads the caller's batch in place instead of uploading it. */
    int host_visible;
    /* Zero-filled, 64-byte aligned device memory; NULL if out of memory. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    /* Host <-> device and device <-> device copies. */
    void (*upload)(void *dev, const void *host, size_t bytes);
    void (*download)(void *host, const void *dev, size_t bytes);
    void (*copy)(void *dev_dst, const void *dev_src, size_t bytes);
    /* Kernels run between begin and end (calls nest); NULL: nothing to do. */
    void (*begin)(void);
    void (*end)(void);
} nn_backend;

/* The kernels of op on backend be; NULL: the op cannot run there. */
static inline const nn_op_kernels *nn_backend_kernels(const nn_backend *be, nn_op_type op) {
    return nn_op_def_get(op)->kernels[be->kernels];
}

const nn_backend *nn_backend_cpu(void);
const nn_backend *nn_backend_guard(void);
/* The backend called name ("cpu", "guard"), or NULL. */
const nn_backend *nn_backend_find(const char *name);
/* The context's backend: the one set by nn_ctx_set_backend, else the CPU. */
const nn_backend *nn_ctx_backend_of(nn_ctx *ctx);

static inline void nn_dev_begin(const nn_backend *be) {
    if (be->begin) be->begin();
}
static inline void nn_dev_end(const nn_backend *be) {
    if (be->end) be->end();
}
static inline void nn_dev_upload(const nn_backend *be, void *dev, const void *host, size_t bytes) {
    if (bytes) be->upload(dev, host, bytes);
}
static inline void nn_dev_download(const nn_backend *be, void *host, const void *dev,
                                   size_t bytes) {
    if (bytes) be->download(host, dev, bytes);
}
static inline void nn_dev_copy(const nn_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) be->copy(dst, src, bytes);
}

#endif /* NN_BACKEND_H */
