/* backend.c - choosing a backend by name, and the public copies between host
 * memory and a backend's memory. */
#include "backend/backend.h"

const nn_backend *nn_backend_find(const char *name) {
    const nn_backend *all[] = {nn_backend_cpu(), nn_backend_guard()};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0) return all[i];
    return NULL;
}

const nn_backend *nn_ctx_backend_of(nn_ctx *ctx) {
    if (!ctx->backend) ctx->backend = nn_backend_cpu();
    return ctx->backend;
}

nn_status nn_ctx_set_backend(nn_ctx *ctx, const char *name) {
    const nn_backend *be = nn_backend_find(name);
    if (!be)
        return nn_ctx_fail(ctx, NN_EINVAL, "backend '%s' is unknown; expected cpu or guard",
                           name ? name : "(null)");
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
