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
 * Three backends exist. "cpu" (cpu.c) is the reference and default: host
 * memory, copies are memcpy, the window costs nothing, and forward reads the
 * caller's batch in place. "guard" (guard.c) runs the same CPU kernels on
 * memory that is mprotect()ed outside the window, so any host code that
 * touches device memory directly faults at once, with a message: it proves
 * the seam. "cuda" (cuda.c, built with NN_HAVE_CUDA) is an NVIDIA GPU: its
 * own kernel kind (src/ops/cuda/), cudaMalloc, cudaMemcpy, and device
 * versions of the few loops that run between begin and end outside an op
 * (fill, zero, add, scale, sum of squares below; lerp: nn_weight_average). Distributed training plugs
 * in at the trainer's communicator (nn_comm), which receives device pointers.
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
    /* The loops on device memory that are not an op's kernel (zeroing
     * gradients, gradient sums, scaling, clipping, optimizer state): called
     * inside the window. NULL: the host loop of nn_dev_fill etc. below, which
     * the CPU and guard backends run on their own memory. */
    void (*zero)(void *dev, size_t bytes);
    void (*fill)(float *dev, size_t n, float value);
    void (*add)(float *dst, const float *src, size_t n);   /* dst += src */
    void (*scale)(float *dev, size_t n, float s);          /* dev *= s */
    void (*lerp)(float *dst, const float *src, size_t n, float w); /* dst += w (src - dst) */
    double (*sum_squares)(const float *dev, size_t n);     /* sum of dev[i]^2 in double */
    /* The device's name and, if measure, its own limits, measured
     * (nn_measure_device_peaks); NULL on the CPU, whose peaks peak.c and
     * blas.c measure. 0 when filled. */
    int (*peaks)(nn_device_peaks *out, int measure);
} nn_backend;

/* The kernels of op on backend be; NULL: the op cannot run there. */
static inline const nn_op_kernels *nn_backend_kernels(const nn_backend *be, nn_op_type op) {
    return nn_op_def_get(op)->kernels[be->kernels];
}

const nn_backend *nn_backend_cpu(void);
const nn_backend *nn_backend_guard(void);
/* The CUDA backend on device `device` (cuda.c): selects that device for the
 * process (one device per process, as NCCL's one process per GPU) and
 * returns the backend, or NULL with the reason in why ("no CUDA device
 * (cudaGetDeviceCount: ...)", "built without CUDA", ...). */
const nn_backend *nn_backend_cuda(int device, char *why, size_t size);
#if NN_HAVE_CUDA
int nn_cuda_peaks(nn_device_peaks *out, int measure); /* cuda_peak.cu */
#endif
/* The backend called name ("cpu", "guard", "cuda" or "cuda:N"), or NULL; a
 * CUDA name only where the build has CUDA and the device exists, with the
 * reason in why (size 0: none wanted). */
const nn_backend *nn_backend_find_why(const char *name, char *why, size_t size);
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

/* The loops below run inside the window (between nn_dev_begin and _end). */
static inline void nn_dev_zero(const nn_backend *be, void *dev, size_t bytes) {
    if (!bytes) return;
    if (be->zero) be->zero(dev, bytes);
    else memset(dev, 0, bytes);
}
static inline void nn_dev_fill(const nn_backend *be, float *dev, size_t n, float value) {
    if (!n) return;
    if (be->fill) be->fill(dev, n, value);
    else for (size_t i = 0; i < n; i++) dev[i] = value;
}
/* dst (n) += src (n) */
static inline void nn_dev_add(const nn_backend *be, float *dst, const float *src, size_t n) {
    if (!n) return;
    if (be->add) be->add(dst, src, n);
    else for (size_t i = 0; i < n; i++) dst[i] += src[i];
}
static inline void nn_dev_scale(const nn_backend *be, float *dev, size_t n, float s) {
    if (!n) return;
    if (be->scale) be->scale(dev, n, s);
    else for (size_t i = 0; i < n; i++) dev[i] *= s;
}

#endif /* NN_BACKEND_H */
