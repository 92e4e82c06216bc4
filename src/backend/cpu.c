/* cpu.c - the CPU backend: host memory and the CPU kernels of every op (each
 * op's registry entry holds them, as kernels[NN_KERNELS_CPU]). */
#include "backend/backend.h"

static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static const nn_backend cpu_backend = {
    .name = "cpu",
    .device = NN_DEVICE_CPU,
    .kernels = NN_KERNELS_CPU,
    .host_visible = 1,
    .alloc = nn_calloc_aligned,
    .free = nn_free_aligned,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
};

const nn_backend *nn_backend_cpu(void) { return &cpu_backend; }
