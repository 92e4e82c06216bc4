/*
 * backend.h - the device interface. The graph executor never calls a kernel
 * directly: it asks the context's backend for the op's kernels. The CPU backend
 * (cpu.c) is the reference and default; a CUDA backend provides the same table
 * with device memory, and distributed training hooks gradient all-reduce here.
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
    /* Kernels per op type; NULL entries mean the op is not supported here. */
    const nn_op_kernels *kernels[NN_OP_COUNT];
    /* Sums gradients across workers; NULL when training on one process. */
    void (*allreduce)(float *buf, size_t n, nn_ctx *ctx);
} nn_backend;

const nn_backend *nn_backend_cpu(void);

#endif /* NN_BACKEND_H */
