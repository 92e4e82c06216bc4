/* cpu.c - the CPU backend: host memory and the CPU kernels of every op (each
 * op's registry entry holds them, as kernels[NN_KERNELS_CPU]). */
#include "backend/backend.h"

#include <cblas.h>

static const nn_backend cpu_backend = {
    .name = "cpu",
    .device = NN_DEVICE_CPU,
    .alloc = nn_alloc_aligned,
    .free = nn_free_aligned,
    .kernels = NN_KERNELS_CPU,
    .allreduce = NULL,
};

const nn_backend *nn_backend_cpu(void) { return &cpu_backend; }

void nn_backend_cpu_init(nn_ctx *ctx) {
    (void)ctx;
    nn_blas_init();
    /* nnopt parallelizes around BLAS calls itself (NN_PARALLEL_FOR), so each
     * sgemm runs single-threaded in its caller's thread; BLAS's own threads
     * would oversubscribe the cores. */
    openblas_set_num_threads(1);
}
