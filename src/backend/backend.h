/*
 * backend.h - the device interface. The graph executor never calls a kernel
 * directly: it asks for the op's kernels of the context's backend kind
 * (nn_backend_kernels), which every op's registry entry holds. The CPU backend
 * (cpu.c) is the reference and default; a CUDA backend names its own kind of
 * kernels, which the entries then provide, with device memory, and
 * distributed training hooks gradient all-reduce here.
 */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include "nn_internal.h"
#include "core/graph.h"

typedef struct nn_backend {
    const char *name;
    nn_device device;
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    /* Which of each op's kernel tables this backend runs (nn_op_def.kernels). */
    nn_kernel_kind kernels;
    /* Sums gradients across workers; NULL when training on one process. */
    void (*allreduce)(float *buf, size_t n, nn_ctx *ctx);
} nn_backend;

/* The kernels of op on backend be; NULL: the op cannot run there. */
static inline const nn_op_kernels *nn_backend_kernels(const nn_backend *be, nn_op_type op) {
    return nn_op_def_get(op)->kernels[be->kernels];
}

const nn_backend *nn_backend_cpu(void);

#endif /* NN_BACKEND_H */
