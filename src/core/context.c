/* context.c - the nn_ctx (threads, settings, last error) and status strings. */
#include "nn_internal.h"

#include <omp.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

const char *nn_status_str(nn_status s) {
    switch (s) {
    case NN_OK: return "ok";
    case NN_EINVAL: return "invalid argument";
    case NN_EIO: return "i/o error";
    case NN_EFORMAT: return "bad format";
    case NN_ENOMEM: return "out of memory";
    case NN_ENUMERIC: return "numerical error";
    case NN_EUNSUPPORTED: return "unsupported";
    case NN_ESTOPPED: return "stopped on request";
    }
    return "unknown status";
}

/* The best kernel ISA this CPU runs (checked at run time: builds stay
 * portable). Each level needs what its kernels' target attributes name: the
 * AVX2 kernels AVX2 and FMA; the AVX-512 fp32 kernels only AVX-512F; the bf16 ones also BW, VL and BF16; AMX the
 * tiles with bf16 products, usable by this process. */
static nn_isa cpu_isa(void) {
    const nn_cpu_features *f = nn_cpu_probe();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512_bf16)
        return f->amx_tile && f->amx_bf16 ? NN_ISA_AMX : NN_ISA_AVX512BF16;
    if (f->avx512f) return NN_ISA_AVX512;
    if (f->avx2 && f->fma) return NN_ISA_AVX2;
    return NN_ISA_GENERIC;
}

nn_isa nn_ctx_isa(const nn_ctx *ctx) { return ctx->isa; }

nn_status nn_ctx_set_isa(nn_ctx *ctx, nn_isa isa) {
    if (isa > cpu_isa())
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "this CPU does not support %s kernels",
                           nn_isa_name(isa));
    ctx->isa = isa;
    return NN_OK;
}

const char *nn_isa_name(nn_isa isa) {
    return isa == NN_ISA_AMX          ? "amx"
           : isa == NN_ISA_AVX512BF16 ? "avx512bf16"
           : isa == NN_ISA_AVX512     ? "avx512"
           : isa == NN_ISA_AVX2       ? "avx2"
                                      : "generic";
}

nn_status nn_isa_parse(const char *name, nn_isa *isa) {
    static const nn_isa all[] = {NN_ISA_GENERIC, NN_ISA_AVX2, NN_ISA_AVX512, NN_ISA_AVX512BF16,
                                 NN_ISA_AMX};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (name && strcmp(name, nn_isa_name(all[i])) == 0) {
            *isa = all[i];
            return NN_OK;
        }
    return NN_EINVAL;
}

void nn_ctx_set_precision(nn_ctx *ctx, nn_precision p) { ctx->precision = p; }

nn_precision nn_ctx_precision(const nn_ctx *ctx) { return ctx->precision; }

/* 0: off; 2: F(2x2, 3x3) alone; anything else: F(4x4, 3x3) where it takes the
 * shape, F(2x2) elsewhere (the default) */
void nn_ctx_set_winograd(nn_ctx *ctx, int on) { ctx->winograd = on == 0 ? 0 : on == 2 ? 2 : 4; }

void nn_ctx_set_fusion(nn_ctx *ctx, int on) { ctx->fuse = on != 0; }

void nn_ctx_set_prefetch(nn_ctx *ctx, int mode) {
    ctx->prefetch_mode = mode == NN_PREFETCH_AUTO ? NN_PREFETCH_AUTO : mode != 0;
    ctx->prefetch = mode != 0; /* kernels called outside a net: on unless off */
}

int nn_ctx_prefetch(const nn_ctx *ctx) { return ctx->prefetch_mode; }

int nn_ctx_fusion(const nn_ctx *ctx) { return ctx->fuse; }

int nn_ctx_winograd(const nn_ctx *ctx) { return ctx->winograd && ctx->isa >= NN_ISA_AVX2; }

void nn_ctx_set_loader_mode(nn_ctx *ctx, nn_loader_mode mode) { ctx->loader_mode = mode; }

nn_loader_mode nn_ctx_loader_mode(const nn_ctx *ctx) { return ctx->loader_mode; }

nn_ctx *nn_ctx_new(int threads) {
    nn_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->threads = threads > 0 ? threads : nn_cpu_probe()->cpus;
    ctx->max_threads = ctx->threads;
    ctx->isa = cpu_isa();
    ctx->winograd = 4;
    ctx->fuse = 1;
    ctx->prefetch = 1;
    ctx->prefetch_mode = NN_PREFETCH_AUTO;
    ctx->loader_mode = NN_LOADER_AUTO;
    return ctx;
}

void nn_ctx_free(nn_ctx *ctx) { free(ctx); }

void nn_ctx_set_max_memory(nn_ctx *ctx, uint64_t bytes) { ctx->max_memory = bytes; }

uint64_t nn_ctx_max_memory(const nn_ctx *ctx) { return ctx->max_memory; }

int nn_cpu_cores(void) { return omp_get_num_procs(); }

uint64_t nn_size_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

uint64_t nn_size_mul(uint64_t a, uint64_t b) {
    return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t nn_memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        unsigned long long kib;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
                fclose(f);
                return nn_size_mul(kib, 1024);
            }
        fclose(f);
    }
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return nn_size_mul((uint64_t)pages, (uint64_t)page);
#endif
    return 0;
}

nn_status nn_memory_check(nn_ctx *ctx, uint64_t total, uint64_t fresh, const char *fmt, ...) {
    uint64_t avail = 0;
    const int capped = ctx->max_memory && total > ctx->max_memory;
    if (!capped && (!fresh || (avail = nn_memory_available()) == 0 || fresh <= avail))
        return NN_OK;
    char what[NN_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (capped)
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s, more than the memory limit of %.1f MiB", what,
                           NN_MIB(ctx->max_memory));
    return nn_ctx_fail(ctx, NN_ENOMEM, "%s, more than the %.1f MiB of memory available", what,
                       NN_MIB(avail));
}

int nn_ctx_threads(const nn_ctx *ctx) { return ctx->threads; }

int nn_ctx_max_threads(const nn_ctx *ctx) { return ctx->max_threads; }

nn_status nn_ctx_set_threads(nn_ctx *ctx, int n) {
    if (n < 1 || n > ctx->max_threads)
        return nn_ctx_fail(ctx, NN_EINVAL, "threads %d out of range (1..%d, the count the context "
                           "was made with)", n, ctx->max_threads);
    ctx->threads = n;
    return NN_OK;
}

const char *nn_ctx_error(const nn_ctx *ctx) { return ctx->error; }

void nn_ctx_clear_error(nn_ctx *ctx) { ctx->error[0] = '\0'; }

nn_status nn_ctx_fail(nn_ctx *ctx, nn_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    /* keep messages to one line */
    for (char *p = ctx->error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return s;
}

int64_t nn_shape_numel(const nn_shape *s) {
    int64_t n = 1;
    int big = 0;
    for (int i = 0; i < s->ndim; i++) {
        const int64_t d = s->dim[i];
        if (d < 0) return -1;
        if (d == 0) return 0;
        if (n > INT64_MAX / d) big = 1; /* keep looking for a 0 or a negative size */
        else n *= d;
    }
    return big ? INT64_MAX : n;
}

char *nn_shape_str(const nn_shape *s, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? "x%lld" : "%lld",
                                 (long long)s->dim[i]);
    return buf;
}

int nn_thread_id(void) { return omp_get_thread_num(); }
