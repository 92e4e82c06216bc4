/* cpu.c - the CPU backend: host memory and the CPU kernels of every op (each
 * op's registry entry holds them, as kernels[NN_KERNELS_CPU]). */
#include "backend/backend.h"

static const nn_backend cpu_backend = {
    .name = "cpu",
    .device = NN_DEVICE_CPU,
    .alloc = nn_alloc_aligned,
    .free = nn_free_aligned,
    .kernels = NN_KERNELS_CPU,
    .allreduce = NULL,
};

const nn_backend *nn_backend_cpu(void) { return &cpu_backend; }
