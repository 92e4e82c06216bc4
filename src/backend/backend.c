/* backend.c - choosing a backend by name, and the public copies between host
 * memory and a backend's memory. */
#include "backend/backend.h"

#include <stdio.h>

#if !NN_HAVE_CUDA
const nn_backend *nn_backend_cuda(int device, char *why, size_t size) {
    (void)device;
    snprintf(why, size, "built without CUDA (nvcc and cuBLAS were not found when it was "
             "configured, or -DNN_CUDA=OFF)");
    return NULL;
}
#endif

/* "cuda" (device 0) or "cuda:N": the device, else -1 (-2: "cuda:" and no number). */
static int cuda_device_of(const char *name) {
    if (strncmp(name, "cuda", 4) != 0) return -1;
    if (name[4] == '\0') return 0;
    if (name[4] != ':' || name[5] < '0' || name[5] > '9') return -2;
    long d = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || d > 1000000) return -2;
        d = d * 10 + (*p - '0');
    }
    return (int)d;
}

const nn_backend *nn_backend_find_why(const char *name, char *why, size_t size) {
    if (size) why[0] = '\0';
    if (!name) return NULL;
    const nn_backend *all[] = {nn_backend_cpu(), nn_backend_guard()};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0) return all[i];
    const int device = cuda_device_of(name);
    char local[256];
    if (device >= 0) return nn_backend_cuda(device, size ? why : local, size ? size : sizeof local);
    if (size)
        snprintf(why, size, "backend '%s' is unknown; expected cpu, guard, cuda or cuda:N", name);
    return NULL;
}

const nn_backend *nn_backend_find(const char *name) { return nn_backend_find_why(name, NULL, 0); }

const nn_backend *nn_ctx_backend_of(nn_ctx *ctx) {
    if (!ctx->backend) ctx->backend = nn_backend_cpu();
    return ctx->backend;
}

int nn_measure_device_peaks(nn_ctx *ctx, int measure, nn_device_peaks *out) {
    const nn_backend *be = nn_ctx_backend_of(ctx);
    memset(out, 0, sizeof *out);
    if (!be->peaks) return -1;
    nn_dev_begin(be);
    const int rc = be->peaks(out, measure);
    nn_dev_end(be);
    return rc;
}

nn_status nn_ctx_set_backend(nn_ctx *ctx, const char *name) {
    char why[256];
    const nn_backend *be = nn_backend_find_why(name, why, sizeof why);
    if (!be)
        return nn_ctx_fail(ctx, name && cuda_device_of(name) >= 0 ? NN_EUNSUPPORTED : NN_EINVAL,
                           "%s",
                           name ? why : "backend (null) is unknown; expected cpu, guard, cuda or "
                           "cuda:N");
    if (ctx->backend && ctx->backend != be)
        return nn_ctx_fail(ctx, NN_EINVAL, "the backend is chosen before the context's first "
                           "network or optimizer (it uses %s)", ctx->backend->name);
    ctx->backend = be;
    return NN_OK;
}

const char *nn_ctx_backend(nn_ctx *ctx) { return nn_ctx_backend_of(ctx)->name; }

void nn_ctx_download(nn_ctx *ctx, void *host, const void *dev, size_t bytes) {
    nn_dev_download(nn_ctx_backend_of(ctx), host, dev, bytes);
}

void nn_ctx_upload(nn_ctx *ctx, void *dev, const void *host, size_t bytes) {
    nn_dev_upload(nn_ctx_backend_of(ctx), dev, host, bytes);
}
