/*
 * cuda.c - the CUDA backend: device memory from cudaMalloc (zero-filled),
 * copies through cudaMemcpy, the kernels of every op's CUDA table
 * (src/ops/cuda/, kernels[NN_KERNELS_CUDA]) on the default stream, and the
 * device loops of cuda_vec.cu. The window's end synchronizes with the device
 * and checks for errors, so a failed kernel is named at the layer that ran it.
 *
 * One device per process (cuda:N selects it with cudaSetDevice, as NCCL's
 * one process per GPU): the CUDA runtime's current device and the cuBLAS
 * handle (cuda_blas.c) are process state, so a second context may use the
 * same device but not another.
 */
#include "backend/backend.h"
#include "backend/cuda_blas.h"
#include "backend/cuda_vec.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>

static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is not sticky: clear it */
        return NULL;
    }
    nn_cuda_check((int)cudaMemset(p, 0, bytes), "cudaMemset");
    return p;
}

static void cuda_free(void *p) {
    if (p) nn_cuda_check((int)cudaFree(p), "cudaFree");
}

static void cuda_upload(void *dev, const void *host, size_t bytes) {
    nn_cuda_check((int)cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice),
                  "cudaMemcpy (host to device)");
}

static void cuda_download(void *host, const void *dev, size_t bytes) {
    nn_cuda_check((int)cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost),
                  "cudaMemcpy (device to host)");
}

static void cuda_copy(void *dst, const void *src, size_t bytes) {
    nn_cuda_check((int)cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice),
                  "cudaMemcpy (device to device)");
}

static void cuda_end(void) { nn_cuda_check((int)cudaDeviceSynchronize(), "a kernel"); }

static const nn_backend cuda_backend = {
    .name = "cuda",
    .device = NN_DEVICE_CUDA,
    .kernels = NN_KERNELS_CUDA,
    .host_visible = 0,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .end = cuda_end,
    .zero = nn_cuda_zero,
    .fill = nn_cuda_fill,
    .add = nn_cuda_add,
    .scale = nn_cuda_scale,
    .lerp = nn_cuda_lerp,
    .sum_squares = nn_cuda_sum_squares,
    .peaks = nn_cuda_peaks,
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int selected = -1; /* the process's device, -1 before the first choice */

const nn_backend *nn_backend_cuda(int device, char *why, size_t size) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(why, size, "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        (void)cudaGetLastError();
        return NULL;
    }
    if (device < 0 || device >= count) {
        snprintf(why, size, "CUDA device %d does not exist (this machine has %d: 0..%d)", device,
                 count, count - 1);
        return NULL;
    }
    pthread_mutex_lock(&lock);
    const nn_backend *be = NULL;
    if (selected >= 0 && selected != device) {
        snprintf(why, size, "this process already uses CUDA device %d (one device per process)",
                 selected);
    } else if ((e = cudaSetDevice(device)) != cudaSuccess) {
        snprintf(why, size, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        (void)cudaGetLastError();
    } else {
        selected = device;
        be = &cuda_backend;
    }
    pthread_mutex_unlock(&lock);
    return be;
}
