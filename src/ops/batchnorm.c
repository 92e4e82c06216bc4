/*
 * batchnorm.c - batch normalization (torch.nn.BatchNorm2d on C x H x W inputs,
 * BatchNorm1d on flat C inputs): model-file definition and CPU kernels.
 *
 * Training mode normalizes each channel with the batch's mean and biased
 * variance over (N, H, W) and updates the running statistics with the unbiased
 * variance, as PyTorch; eval mode uses the running statistics. Each row of
 * HW values is summed in 16 float lanes (so the loop vectorizes) and the row
 * sums are added in double, one channel per loop iteration, so results do
 * not depend on the thread count. Forward keeps each channel's mean and 1/std in
 * the node's fixed aux memory for backward, with the mode it ran in.
 *
 * With the net's reducer set (synchronized batch norm over data-parallel
 * ranks, nn_net_set_reducer) training mode takes the statistics over every
 * rank's batch: the channels' sums, value counts and squared deviations, and
 * in backward the sums of dy and dy (x - mean), travel through the shared
 * workspace as doubles and are summed over the ranks between per-channel
 * passes. Without one the per-channel arithmetic is the same as ever, in one
 * pass per channel.
 */
#include "ops/ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A finite number from key (def when absent) in [lo, hi]; lo excluded when
 * open_lo. */
static nn_status kv_real(nn_kvlist *kv, const char *key, double def, double lo, int open_lo,
                         double hi, float *out) {
    const char *s = nn_kv_str(kv, key);
    double v = def;
    if (s) {
        char *end;
        errno = 0;
        v = strtod(s, &end);
        if (end == s || *end != '\0' || errno || !isfinite(v))
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: batchnorm %s expects a finite number, got '%s'",
                               kv->source, kv->line, key, s);
    }
    if (v > hi || v < lo || (open_lo && v == lo))
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: batchnorm %s must be in %c%g, %g], got %g",
                           kv->source, kv->line, key, open_lo ? '(' : '[', lo, hi, v);
    *out = (float)v;
    return NN_OK;
}

/* The aux's fixed part, in floats: the statistics (mean, 1/std: 2C), the
 * forward's mode (1), the normalizing map (scales, shifts: 2C), whether the
 * last backward left dx to the producer (1), and then its coefficients
 * (g_mean, mean, scale, ks: 4C); the reader's gradient sums start after
 * them, at a double. */
static size_t aux_map_offset(int C) { return 2 * (size_t)C + 1; }
static size_t aux_deferred_offset(int C) { return 4 * (size_t)C + 1; }
static size_t aux_sums_offset(int C) { return (8 * (size_t)C + 3) & ~(size_t)1; }

static nn_status batchnorm_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    nn_bn_desc *d = &node->d.bn;
    nn_status st;
    if (in->ndim < 1 || in->ndim > 3)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: batchnorm needs a C, CxL or CxHxW input, got a "
                           "%d-dimensional one", kv->source, kv->line, in->ndim);
    if ((st = kv_real(kv, "eps", 1e-5, 0.0, 1, 1.0, &d->eps))) return st;
    if ((st = kv_real(kv, "momentum", 0.1, 0.0, 0, 1.0, &d->momentum))) return st;
    d->C = (int)in->dim[0];
    d->HW = 1;
    for (int i = 1; i < in->ndim; i++) d->HW *= (int)in->dim[i];
    node->out = *in;
    node->num_params = 2;
    for (int j = 0; j < 2; j++) {
        node->param_shape[j] = (nn_shape){1, {d->C, 0, 0, 0}};
        node->param_init[j] = NN_INIT_CONSTANT;
    }
    node->param_suffix[0] = "weight";
    node->param_suffix[1] = "bias";
    node->param_init_value[0] = 1.0f;
    node->param_init_value[1] = 0.0f;
    node->param_fan_in = d->C;
    node->num_buffers = 3;
    node->buffer_shape[0] = node->buffer_shape[1] = (nn_shape){1, {d->C, 0, 0, 0}};
    node->buffer_shape[2] = (nn_shape){0, {0, 0, 0, 0}};
    node->buffer_suffix[0] = "running_mean";
    node->buffer_suffix[1] = "running_var";
    node->buffer_suffix[2] = "num_batches_tracked";
    node->buffer_init[0] = 0.0f;
    node->buffer_init[1] = 1.0f;
    node->buffer_init[2] = 0.0f;
    /* the fixed part (aux_sums_offset: statistics, mode, map, the deferred
     * dx's coefficients), then per sample the reader's gradient sums (C
     * pairs of doubles; see give_grad_sums) */
    node->aux_fixed_bytes = aux_sums_offset(d->C) * sizeof(float);
    node->aux_bytes = 2 * (size_t)d->C * sizeof(double);
    return NN_OK;
}

static int64_t batchnorm_flops(const nn_node *node) {
    return 4 * nn_shape_numel(&node->out); /* stats (2) and the scale and shift (2) */
}

/* as PyTorch: batch statistics need more than one value per channel */
static nn_status batchnorm_check_batch(const nn_node *node, int n, int training,
                                       const char *source, nn_ctx *ctx) {
    if (training && (int64_t)n * node->d.bn.HW < 2)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "%s:%d: batchnorm '%s' in training mode needs more than one value "
                           "per channel (batch %d of %d-element channels); use eval mode",
                           source, node->line, node->name, n, node->d.bn.HW);
    return NN_OK;
}


/*
 * Row kernels: one row of HW values of one channel and sample, in loops
 * over blocks of 16 floats that the compiler vectorizes. batchnorm_rows.h
 * holds them; it is compiled three times, for the portable baseline (4
 * lanes), AVX2 (8) and AVX-512 (16), and the set matching ctx->isa is chosen
 * per call (bn_rows_for). Every variant does the same float operations in
 * the same order, so the results are identical whichever runs. Each kernel
 * is its own function (noinline): inlined into the channel loops, GCC 12
 * made scalar code with a branch per element of the masked sums (4x slower).
 */

/* the center of a row: its mean rounded to a float */
static inline float row_center(double s, int len) { return (float)(s / len); }

/* the fused ReLU on one value: v where v > 0 or v is NaN, else 0 */
static inline float relu1(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

/* dy where the fused ReLU's output y > 0, else 0 */
static inline float masked(const float *dy, const float *y, int j) {
    return y[j] > 0.0f ? dy[j] : 0.0f;
}

/* one compiled set of the row kernels */
typedef struct {
    double (*sum)(const float *x, int len);
    double (*sq_dev)(const float *x, int len, float mean);
    void (*stats)(const float *x, int len, double *s, double *m2);
    void (*apply)(float *y, const float *x, const float *r, int len, float alpha, float beta,
                  int relu, int stream);
    void (*grad_sums_xmask)(const float *dy, const float *x, int len, float mean, float alpha,
                            float beta, double *sum_g, double *dot);
    void (*grad_sums)(const float *dy, const float *y, const float *x, int len, float mean,
                      double *sum_g, double *dot, float *gout, int stream);
    void (*dx)(float *dx, const float *dy, const float *y, const float *x, int map, float alpha,
               float beta, int len, float g_mean, float mean, float scale, float ks, int stream);
} bn_rows;

typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));

#define ROWS_ISA generic
#define ROWS_TARGET
#define ROWS_VF v4f
#define ROWS_VI v4i
#define ROWS_VL 4
#include "ops/batchnorm_rows.h"
#if defined(__x86_64__) && defined(__GNUC__)
#define ROWS_ISA avx2
#define ROWS_TARGET __attribute__((target("avx2")))
#define ROWS_VF v8f
#define ROWS_VI v8i
#define ROWS_VL 8
#include "ops/batchnorm_rows.h"
#define ROWS_ISA avx512
#define ROWS_TARGET __attribute__((target("avx512f")))
#define ROWS_VF v16f
#define ROWS_VI v16i
#define ROWS_VL 16
#include "ops/batchnorm_rows.h"
#endif

static const bn_rows *bn_rows_for(const nn_ctx *ctx) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (ctx->isa >= NN_ISA_AVX512) return &bn_rows_avx512;
    if (ctx->isa >= NN_ISA_AVX2) return &bn_rows_avx2;
#endif
    (void)ctx;
    return &bn_rows_generic;
}

void nn_batchnorm_row_stats(const float *x, int rows, int len, double *pairs,
                            const nn_ctx *ctx) {
    const bn_rows *k = bn_rows_for(ctx);
    for (int q = 0; q < rows; q++)
        k->stats(x + (size_t)q * len, len, &pairs[2 * q], &pairs[2 * q + 1]);
}

void nn_batchnorm_grad_sums_row(const float *dy, const float *x, int len, float mean,
                                float alpha, float beta, int relu, double *sum_g, double *dot,
                                const nn_ctx *ctx) {
    const bn_rows *k = bn_rows_for(ctx);
    *sum_g = *dot = 0.0;
    if (relu)
        k->grad_sums_xmask(dy, x, len, mean, alpha, beta, sum_g, dot);
    else
        k->grad_sums(dy, NULL, x, len, mean, sum_g, dot, NULL, 0);
}

/*
 * The passes over the batch. Sums are taken per channel, each row's sum
 * (a row kernel's value, in double) added to the channel's in sample order,
 * so they do not depend on how the rows were visited. The element-wise
 * passes (the normalizing pass, dx) use per-channel coefficients made
 * once, and visit the rows in memory order, split between the threads in
 * contiguous ranges: a channel's rows lie a sample apart, and visiting them
 * that way ran these passes at half the speed (short rows of 49 or 196
 * floats, a stride of kilobytes between them, prefetchers left behind).
 * The row sums take the same route: each row's sums land in its slot of
 * the workspace, and the slots of a channel are added in sample order, the
 * per-channel loop's own additions.
 */

/* The workspace, in floats: the reducer's 2C + 1 doubles, the per-channel
 * coefficients of an element-wise pass (4C floats, padded to a double), then
 * a pair of doubles per row of the batch (n C rows). */
static size_t ws_coef_offset(int C) { return 2 * (2 * (size_t)C + 1); }
static size_t ws_rows_offset(int C) { return ws_coef_offset(C) + ((4 * (size_t)C + 1) & ~(size_t)1); }
static size_t ws_floats_for(int C, int n) { return ws_rows_offset(C) + 4 * (size_t)n * C; }

typedef struct {
    double *acc; /* the reducer's sums (2C + 1) */
    float *coef; /* per-channel coefficients (4C) */
    double *rows; /* per-row pairs (n C) */
} bn_ws;

/* ws as planned (batchnorm_workspace: the whole batch, which batch norm
 * always runs on, couples_batch) */
static bn_ws ws_split(float *ws, size_t floats, int C, int n) {
    NN_ASSERT(floats >= ws_floats_for(C, n));
    return (bn_ws){(double *)ws, ws + ws_coef_offset(C), (double *)(ws + ws_rows_offset(C))};
}

/* the per-sample pairs in a node's aux after its fixed part: the reader's
 * gradient sums (give_grad_sums) and the producer's statistics
 * (give_input_stats), one after the other in a step */
static double *aux_rows(const void *aux, int C) {
    return (double *)((float *)aux + aux_sums_offset(C));
}

/* Channel c's sum of the row values in slot k of pairs (n rows of C
 * channels), in sample order. */
static double slots_total(const double *pairs, int k, int C, int n, int c) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += pairs[2 * ((size_t)i * C + c) + k];
    return s;
}

/* Channel c's sum of squared deviations from mean over the batch, from
 * each row's sum s and squared deviations m2 from its center t (row_stats,
 * in slots 0 and 1 of pairs), in sample order: sum (x - mean)^2 = m2 +
 * 2 (t - mean) (s - HW t) + HW (t - mean)^2 per row, exactly, whatever t;
 * a row's own mean keeps m2 free of the cancellation that squaring
 * deviations from a distant center invites. */
static double rows_sq_dev(const double *pairs, const nn_bn_desc *d, int n, int c, double mean) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        const double *p = pairs + 2 * ((size_t)i * d->C + c);
        const double t = row_center(p[0], d->HW), dt = t - mean;
        ss += p[1] + dt * (2.0 * (p[0] - d->HW * t) + d->HW * dt);
    }
    return ss;
}

/* Channel c's sum over the batch: x (n, C, HW). */
static double channel_sum(const bn_rows *k, const float *x, const nn_bn_desc *d, int n, int c) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += k->sum(x + ((size_t)i * d->C + c) * d->HW, d->HW);
    return s;
}

/* Channel c's sum of squared deviations from mean. */
static double channel_sq_dev(const bn_rows *k, const float *x, const nn_bn_desc *d, int n, int c,
                             double mean) {
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += k->sq_dev(x + ((size_t)i * d->C + c) * d->HW, d->HW, (float)mean);
    return ss;
}

/* Channel c after its statistics are known (training: the mean and the sum
 * of squared deviations ss of M values; eval: the running ones): the running
 * update, save (the map's float scale and shift too), and the normalizing
 * pass's scale and shift in coef (coef[c], coef[C + c]). keep_map: save has
 * room for the map (4C + 1 floats: the graph's aux, not the bare kernel
 * API's 2C), which a prologue's reader applies (give_prologue) and backward
 * masks by. */
static void channel_coefs(float *coef, float *save, float *running, const float *w,
                          const float *b, const nn_bn_desc *d, int training, int keep_map, int c,
                          double mean, double ss, double M) {
    const int C = d->C;
    float *run_mean = running, *run_var = running + C; /* (C), (C) */
    double invstd;
    if (training) {
        const double var = ss / M; /* biased, for normalizing */
        invstd = 1.0 / sqrt(var + d->eps);
        const double mom = d->momentum;
        const double unbiased = M > 1 ? ss / (M - 1) : NAN;
        run_mean[c] = (float)((1.0 - mom) * run_mean[c] + mom * mean);
        run_var[c] = (float)((1.0 - mom) * run_var[c] + mom * unbiased);
    } else {
        mean = run_mean[c];
        invstd = 1.0 / sqrt((double)run_var[c] + d->eps);
    }
    save[c] = (float)mean;
    save[C + c] = (float)invstd;
    const float alpha = (float)(invstd * w[c]);
    const float beta = (float)(b[c] - mean * invstd * w[c]);
    if (keep_map) {
        save[aux_map_offset(C) + c] = alpha;
        save[aux_map_offset(C) + C + c] = beta;
    }
    coef[c] = alpha;
    coef[C + c] = beta;
}

/* Whether a pass writes `rows` rows of HW floats at y with stores past the
 * caches (the row kernels' R(put)): rows aligned to 64 bytes, and more of
 * them than the threads' L2 caches hold. ResNet-20's residual batch norms
 * (add and ReLU fused) on a Zen 4, 2 threads, batch 256: 1,080 -> 1,183
 * images/s (4 alternating pairs); 1 thread, batch 64: 717 -> 742. */
static int stream_rows(const float *y, int64_t rows, int HW, int threads) {
    return HW % 16 == 0 && ((uintptr_t)y & 63) == 0 &&
           nn_larger_than_l2((size_t)rows * (size_t)HW * sizeof(float), threads);
}

/* y = x alpha + beta (+ r, then the fused ReLU), the rows in memory order */
void nn_batchnorm_map_rows(float *y, const float *x, const float *r, const float *scale,
                           const float *shift, int relu, int C, int HW, int n, int threads,
                           const nn_ctx *ctx) {
    const bn_rows *k = bn_rows_for(ctx);
    const int64_t rows = (int64_t)n * C;
    const int stream = stream_rows(y, rows, HW, threads);
    NN_PARALLEL_FOR(threads)
    for (int64_t q = 0; q < rows; q++) {
        const int c = (int)(q % C);
        const size_t at = (size_t)q * HW;
        k->apply(y + at, x + at, r ? r + at : NULL, HW, scale[c], shift[c], relu, stream);
    }
}

void nn_batchnorm_grad_rows(const float *dy, long row0, long nrows, long batch_rows,
                            const nn_bn_grad_rows *s, int threads, const nn_ctx *ctx) {
    const bn_rows *k = bn_rows_for(ctx);
    const int C = s->C, HW = s->HW;
    /* past the caches as the whole pass would store */
    const int stream_dr = s->dr && stream_rows(s->dr, batch_rows, HW, ctx->threads);
    NN_PARALLEL_FOR(threads)
    for (int64_t q = row0; q < row0 + nrows; q++) {
        const int c = (int)(q % C);
        const size_t at = (size_t)q * HW;
        double *pair = s->rows + 2 * q;
        pair[0] = pair[1] = 0.0;
        if (s->scale)
            k->grad_sums_xmask(dy + at, s->x + at, HW, s->mean[c], s->scale[c], s->shift[c],
                               &pair[0], &pair[1]);
        else
            k->grad_sums(dy + at, s->y ? s->y + at : NULL, s->x + at, HW, s->mean[c], &pair[0],
                         &pair[1], s->dr ? s->dr + at : NULL, stream_dr);
    }
}

/* The batch as shards (nn_net_set_shards): shard s is samples
 * bounds[s]..bounds[s+1]; one shard (bounds NULL) is the whole batch. */
typedef struct {
    int count;
    const int *bounds;
} bn_shards;

static int shard_lo(const bn_shards *sh, int s) { return sh->bounds ? sh->bounds[s] : 0; }
static int shard_n(const bn_shards *sh, int s, int n) {
    return sh->bounds ? sh->bounds[s + 1] - sh->bounds[s] : n;
}

/* Channel c's sum, and its sum of squared deviations from mean, over the
 * batch: each shard's in shard order (one shard: channel_sum's order). */
static double shards_sum(const bn_rows *k, const float *x, const nn_bn_desc *d, int n, int c,
                         const bn_shards *sh) {
    const size_t sample = (size_t)d->C * d->HW;
    double s = 0.0;
    for (int i = 0; i < sh->count; i++) {
        const double part = channel_sum(k, x + (size_t)shard_lo(sh, i) * sample, d,
                                        shard_n(sh, i, n), c);
        s = i ? s + part : part;
    }
    return s;
}

static double shards_sq_dev(const bn_rows *k, const float *x, const nn_bn_desc *d, int n, int c,
                            double mean, const bn_shards *sh) {
    const size_t sample = (size_t)d->C * d->HW;
    double s = 0.0;
    for (int i = 0; i < sh->count; i++) {
        const double part = channel_sq_dev(k, x + (size_t)shard_lo(sh, i) * sample, d,
                                           shard_n(sh, i, n), c, mean);
        s = i ? s + part : part;
    }
    return s;
}
/* The forward pass; with reduce or shards (training mode only) the
 * statistics are over every rank's and every shard's samples: the channels'
 * sums and the value count, then the squared deviations from the global
 * mean, each a sum of the shards' in shard order, summed over the ranks.
 * ws->acc holds them while they travel. */
static void bn_forward(float *y, float *save, float *running, const float *x, const float *r,
                       const float *w, const float *b, const nn_bn_desc *d, int n, int training,
                       int keep_map, const double *given, const bn_ws *ws, nn_reducer reduce,
                       void *user, const bn_shards *sh, nn_ctx *ctx) {
    const int C = d->C, HW = d->HW;
    const double M = (double)n * HW;
    const bn_rows *k = bn_rows_for(ctx);
    float *coef = ws->coef;
    /* the reader normalizes (give_prologue), and writes y (give_written_prologue) */
    if (training && (d->out_virtual || d->out_by_reader)) y = NULL;
    if (!training) {
        for (int c = 0; c < C; c++)
            channel_coefs(coef, save, running, w, b, d, 0, keep_map, c, 0.0, 0.0, M);
    } else if (!reduce && sh->count <= 1) {
        /* each row's sum and squared deviations from its own mean, in one
         * visit (or as the producer gave them: given), then per channel in
         * sample order */
        const double *rs = given ? given : ws->rows;
        const int64_t rows = (int64_t)n * C;
        if (!given) {
            double *slot = ws->rows;
            NN_PARALLEL_FOR(ctx->threads)
            for (int64_t q = 0; q < rows; q++)
                k->stats(x + (size_t)q * HW, HW, &slot[2 * q], &slot[2 * q + 1]);
        }
        NN_PARALLEL_FOR(ctx->threads)
        for (int c = 0; c < C; c++) {
            const double mean = slots_total(rs, 0, C, n, c) / M;
            double ss = rows_sq_dev(rs, d, n, c, mean);
            if (ss < 0.0) ss = 0.0; /* rounding, in a constant channel */
            channel_coefs(coef, save, running, w, b, d, 1, keep_map, c, mean, ss, M);
        }
    } else {
        double *sum = ws->acc, *count = sum + C, *sq = sum + C + 1; /* (C), (1), (C) */
        NN_PARALLEL_FOR(ctx->threads)
        for (int c = 0; c < C; c++) sum[c] = shards_sum(k, x, d, n, c, sh);
        *count = M;
        if (reduce) reduce(user, sum, (size_t)C + 1);
        const double Mg = *count;
        NN_PARALLEL_FOR(ctx->threads)
        for (int c = 0; c < C; c++) sq[c] = shards_sq_dev(k, x, d, n, c, sum[c] / Mg, sh);
        if (reduce) reduce(user, sq, (size_t)C);
        for (int c = 0; c < C; c++)
            channel_coefs(coef, save, running, w, b, d, 1, keep_map, c, sum[c] / Mg, sq[c], Mg);
    }
    if (y) nn_batchnorm_map_rows(y, x, r, coef, coef + C, d->relu, C, HW, n, ctx->threads, ctx);
    if (training) running[2 * C] += 1.0f; /* num_batches_tracked */
}

/* The bare kernel API: its workspace from the heap. */
static float *bare_ws(int C, int n, nn_ctx *ctx, bn_ws *out) {
    const size_t floats = ws_floats_for(C, n);
    float *ws = malloc(floats * sizeof(float));
    if (!ws) {
        nn_ctx_fail(ctx, NN_ENOMEM, "batchnorm: out of memory for a %zu-float workspace", floats);
        return NULL;
    }
    *out = ws_split(ws, floats, C, n);
    return ws;
}

void nn_batchnorm_forward(float *y, float *save, float *running, const float *x, const float *w,
                          const float *b, const nn_bn_desc *d, int n, int training, nn_ctx *ctx) {
    const bn_shards whole = {1, NULL};
    bn_ws ws;
    float *mem = bare_ws(d->C, n, ctx, &ws);
    if (!mem) return;
    bn_forward(y, save, running, x, NULL, w, b, d, n, training, 0, NULL, &ws, NULL, NULL, &whole,
               ctx);
    free(mem);
}

/* Channel c's sums over the batch: g, g (x - mean), g = masked(dy, y)
 * (y NULL: no fused ReLU); g also into dr (a fused residual add's input
 * gradient) when not NULL. */
static void channel_grad_sums(const bn_rows *k, const float *dy, const float *y, const float *x,
                              float *dr, const float *map, const nn_bn_desc *d, int n, int c,
                              float mean, double *sum_dy, double *dot) {
    *sum_dy = *dot = 0.0;
    for (int i = 0; i < n; i++) {
        const size_t row = ((size_t)i * d->C + c) * d->HW;
        if (map) /* a ReLU masked by x (out_virtual) */
            k->grad_sums_xmask(dy + row, x + row, d->HW, mean, map[c], map[d->C + c], sum_dy, dot);
        else
            k->grad_sums(dy + row, y ? y + row : NULL, x + row, d->HW, mean, sum_dy, dot,
                         dr ? dr + row : NULL, 0);
    }
}

/* dx of channel c: w invstd (dy - g_mean) - (x - mean) k w invstd, where
 * training passes g_mean = mean(dy) and kk = mean(dy (x - mean)) invstd^2
 * (eval: both 0). */
static void channel_dx(const bn_rows *k, float *dx, const float *dy, const float *y,
                       const float *x, const float *w, const float *map, const nn_bn_desc *d,
                       int n, int c, double mean, double invstd, double g_mean, double kk) {
    const int C = d->C, HW = d->HW;
    const double scale = invstd * w[c];
    const float alpha = map ? map[c] : 0.0f, beta = map ? map[C + c] : 0.0f;
    for (int i = 0; i < n; i++) {
        const size_t row = ((size_t)i * C + c) * HW;
        k->dx(dx + row, dy + row, y ? y + row : NULL, x + row, map != NULL, alpha, beta, HW,
              (float)g_mean, (float)mean, (float)scale, (float)(kk * scale), 0);
    }
}

/* The backward pass; with reduce or shards (training mode) mean(dy) and
 * mean(dy (x - mean)) are over every rank's and shard's samples. A rank's
 * (or shard's) dy is the gradient of its own mean loss, so each one's sums
 * are weighted by its samples n (the objective is the mean over all the
 * samples), summed with the value count, and divided by (the global count x
 * n) again for each one. dw and db stay each one's: shard s's at dw, db + s
 * stride. ws->acc carries the sums. has_map: save holds the forward's map
 * (channel_coefs's keep_map). rows: the reader's per-row gradient sums
 * (give_grad_sums), or NULL. defer (4C floats; NULL: no): where a whole-batch
 * training pass whose gradient mask (if any) comes from the map, or is in
 * dr already (a residual add's: g there, masked), leaves dx to the producer
 * (forms_dy), putting dx's coefficients there instead; returns 1 if it did. */
static int bn_backward(float *dx, float *dr, float *dw, float *db, const float *dy,
                        const float *y, const float *x, const float *w, const float *save,
                        int has_map, const double *rows, const nn_bn_desc *d, int n, int training,
                        const bn_ws *ws, nn_reducer reduce, void *user, const bn_shards *sh,
                        size_t stride, float *defer, nn_ctx *ctx) {
    const int C = d->C, HW = d->HW;
    if (!d->relu) y = NULL; /* y masks the gradient only under a fused ReLU */
    /* ... and after a training pass without a residual add, x through the
     * forward's map does (x alpha + beta > 0 exactly where y > 0: the same
     * floats and test): one array read less in each pass, and the only way
     * when the output was not written (out_virtual) */
    const float *map =
        d->relu && !d->residual && training && has_map ? save + aux_map_offset(C) : NULL;
    if (map) y = NULL;
    const double M = (double)n * HW;
    const bn_rows *k = bn_rows_for(ctx);
    if (!training || (!reduce && sh->count <= 1)) {
        const int64_t nrows = (int64_t)n * C;
        if (!rows) { /* each row's sums in its slot */
            const nn_bn_grad_rows s = {ws->rows, save, x, y, map, map ? map + C : NULL, dr, C, HW};
            nn_batchnorm_grad_rows(dy, 0, nrows, nrows, &s, ctx->threads, ctx);
            rows = ws->rows;
        }
        /* dx's coefficients: g_mean, mean, scale, ks (C each) */
        float *g_mean = ws->coef, *mean = g_mean + C, *scale = mean + C, *ks = scale + C;
        NN_PARALLEL_FOR(ctx->threads)
        for (int c = 0; c < C; c++) {
            const double invstd = save[C + c];
            const double sum_dy = slots_total(rows, 0, C, n, c); /* sum dy */
            const double dot = slots_total(rows, 1, C, n, c);    /* sum dy (x - mean) */
            dw[c] += (float)(dot * invstd);
            db[c] += (float)sum_dy;
            const double sc = invstd * w[c];
            const double kk = training ? dot * invstd * invstd / M : 0.0;
            g_mean[c] = (float)(training ? sum_dy / M : 0.0);
            mean[c] = (float)(double)save[c];
            scale[c] = (float)sc;
            ks[c] = (float)(kk * sc);
        }
        if (!dx) return 0;
        if (defer && training && (dr || !d->relu || map)) {
            memcpy(defer, g_mean, 4 * (size_t)C * sizeof(float));
            return 1;
        }
        /* with dr: g is there already, masked (one array less to read) */
        const float *g = dr ? dr : dy, *gy = dr ? NULL : y;
        const int stream_dx = stream_rows(dx, nrows, HW, ctx->threads);
        NN_PARALLEL_FOR(ctx->threads)
        for (int64_t q = 0; q < nrows; q++) {
            const int c = (int)(q % C);
            const size_t at = (size_t)q * HW;
            k->dx(dx + at, g + at, gy ? gy + at : NULL, x + at, map != NULL, map ? map[c] : 0.0f,
                  map ? map[C + c] : 0.0f, HW, g_mean[c], mean[c], scale[c], ks[c], stream_dx);
        }
        return 0;
    }
    /* shard s's rows: its samples' offset into every per-sample array */
#define AT(p, s, per) ((p) ? (p) + (size_t)shard_lo(sh, s) * (per) : NULL)
    const size_t sample = (size_t)C * HW;
    double *sum = ws->acc, *dots = sum + C, *count = sum + 2 * C; /* (C), (C), (1) */
    NN_PARALLEL_FOR(ctx->threads)
    for (int c = 0; c < C; c++) {
        const double invstd = save[C + c];
        for (int s = 0; s < sh->count; s++) {
            const int ns = shard_n(sh, s, n);
            const double *srows = AT(rows, s, 2 * (size_t)C);
            double sum_dy, dot;
            if (srows) {
                sum_dy = slots_total(srows, 0, C, ns, c);
                dot = slots_total(srows, 1, C, ns, c);
            } else {
                channel_grad_sums(k, AT(dy, s, sample), AT(y, s, sample), AT(x, s, sample),
                                  AT(dr, s, sample), map, d, ns, c, save[c], &sum_dy, &dot);
            }
            dw[(size_t)s * stride + c] += (float)(dot * invstd);
            db[(size_t)s * stride + c] += (float)sum_dy;
            sum[c] = s ? sum[c] + sum_dy * ns : sum_dy * ns;
            dots[c] = s ? dots[c] + dot * ns : dot * ns;
        }
    }
    *count = M;
    if (reduce) reduce(user, sum, 2 * (size_t)C + 1);
    if (!dx) return 0;
    NN_PARALLEL_FOR(ctx->threads)
    for (int c = 0; c < C; c++) {
        const double invstd = save[C + c];
        for (int s = 0; s < sh->count; s++) {
            const int ns = shard_n(sh, s, n);
            const double Mn = *count * ns;
            channel_dx(k, AT(dx, s, sample), dr ? AT(dr, s, sample) : AT(dy, s, sample),
                       dr ? NULL : AT(y, s, sample), AT(x, s, sample), w, map, d, ns, c, save[c],
                       invstd, sum[c] / Mn, dots[c] * invstd * invstd / Mn);
        }
    }
#undef AT
    return 0;
}

void nn_batchnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *save, const nn_bn_desc *d, int n,
                           int training, nn_ctx *ctx) {
    const bn_shards whole = {1, NULL};
    bn_ws ws;
    float *mem = bare_ws(d->C, n, ctx, &ws);
    if (!mem) return;
    bn_backward(dx, NULL, dw, db, dy, NULL, x, w, save, 0, NULL, d, n, training, &ws, NULL, NULL,
                &whole, 0, NULL, ctx);
    free(mem);
}

/* the reducer's sums, the coefficients and the rows' sums (ws_floats_for) */
static size_t batchnorm_workspace(const nn_node *node, int max_batch, int threads) {
    (void)threads;
    return ws_floats_for(node->d.bn.C, max_batch);
}

static void batchnorm_fwd(const nn_op_args *a) {
    const nn_bn_desc *d = &a->node->d.bn;
    float *save = a->aux; /* (2C + 1) */
    const bn_shards sh = {a->shards > 1 ? a->shards : 1, a->shards > 1 ? a->shard_bounds : NULL};
    const bn_ws ws = ws_split(a->ws, a->ws_floats, d->C, a->n);
    /* the producer summed the rows in training passes (give_input_stats) */
    const double *given = d->stats_by_producer && a->training ? aux_rows(save, d->C) : NULL;
    bn_forward(a->y, save, a->buf, a->x, d->residual ? a->xs[1] : NULL, a->w, a->b, d, a->n,
               a->training, 1, given, &ws, a->reduce, a->reduce_user, &sh, a->ctx);
    save[2 * d->C] = a->training ? 1.0f : 0.0f;
}

static void batchnorm_bwd(const nn_op_args *a) {
    const nn_bn_desc *d = &a->node->d.bn;
    const float *save = a->aux;
    const int training = save[2 * d->C] != 0.0f;
    /* the reader summed the rows only in training passes (its prologue), and
     * the writer of the output where the graph says so (written_grad_rows,
     * rows_given) */
    const double *rows =
        (d->sums_by_reader || a->rows_given) && training ? aux_rows(save, d->C) : NULL;
    const bn_shards sh = {a->shards > 1 ? a->shards : 1, a->shards > 1 ? a->shard_bounds : NULL};
    const bn_ws ws = ws_split(a->ws, a->ws_floats, d->C, a->n);
    float *deferred = (float *)a->aux + aux_deferred_offset(d->C);
    deferred[0] = (float)bn_backward(a->dx, d->residual ? a->dxs[1] : NULL, a->dw, a->db, a->dy,
                                     a->y, a->x, a->w, save, 1, rows, d, a->n, training, &ws,
                                     a->reduce, a->reduce_user, &sh, a->grad_stride,
                                     a->defer_dx ? deferred + 1 : NULL, a->ctx);
}

/* A ReLU after the batch norm (its only reader) is applied in the same pass
 * over the output, and its gradient mask inside the backward pass. So is a
 * residual add (a ResNet block's last batch norm + add + ReLU: one pass
 * forward, and the add's gradient written by the batch norm's sums pass). */
static int batchnorm_fuse_epilogue(nn_node *node, nn_epilogue e) {
    if (e == NN_EPILOGUE_RELU) {
        node->d.bn.relu = 1;
        return 1;
    }
    if (e == NN_EPILOGUE_ADD && !node->d.bn.residual && !node->d.bn.relu) {
        node->d.bn.residual = 1;
        return 1;
    }
    return 0;
}

/* Its only reader may normalize while loading (a depthwise convolution's
 * prologue): training passes then write no output. Not with a residual add
 * fused in (the sum is the output). Synchronized statistics work alike: the
 * map is made after the reduction. */
static int batchnorm_give_prologue(nn_node *node) {
    if (node->d.bn.residual) return 0;
    node->d.bn.out_virtual = 1;
    return 1;
}

/* Its first reader may write its output while normalizing (a Winograd
 * convolution's prologue), where the output has later readers too (the
 * next block's residual add) or the sum with a residual add is the output:
 * training forward passes then make only the map, and backward reads the
 * output as written. */
static int batchnorm_give_written_prologue(nn_node *node) {
    if (node->d.bn.out_virtual) return 0;
    node->d.bn.out_by_reader = 1;
    return 1;
}

/* The sums pass left to the writer of the output (nn_batchnorm_grad_rows),
 * x and y its input and output, dr its residual input's gradient: the
 * same mask as bn_backward's (the map without a residual add, else the
 * output), into the per-sample rows of aux. */
static void batchnorm_written_grad_rows(const nn_node *node, const float *x, const float *y,
                                        float *dr, nn_bn_grad_rows *s) {
    const nn_bn_desc *d = &node->d.bn;
    const float *save = node->aux, *map = save + aux_map_offset(d->C);
    const int by_map = d->relu && !d->residual;
    *s = (nn_bn_grad_rows){aux_rows(save, d->C),     save,  x, d->relu && !by_map ? y : NULL,
                           by_map ? map : NULL,      by_map ? map + d->C : NULL,
                           d->residual ? dr : NULL,  d->C,  d->HW};
}

static const float *batchnorm_prologue_coefs(const nn_node *node, const float **shift, int *relu) {
    const float *map = (const float *)node->aux + aux_map_offset(node->d.bn.C);
    *shift = map + node->d.bn.C;
    *relu = node->d.bn.relu;
    return map;
}

/* Its prologue's reader may also sum, in its backward pass, each row of
 * the gradient reaching the normalized value (nn_batchnorm_grad_sums_row,
 * the same arithmetic as the sums pass), while that row is in its cache:
 * training backward passes then skip their own sums pass over dy and x.
 * prologue_grad_sums: where the reader writes them ((n, C) pairs of
 * doubles) and the batch mean they need. */
static int batchnorm_give_grad_sums(nn_node *node) {
    if (!node->d.bn.out_virtual) return 0;
    node->d.bn.sums_by_reader = 1;
    return 1;
}

static double *batchnorm_prologue_grad_sums(const nn_node *node, const float **mean) {
    *mean = NULL;
    if (!node->d.bn.sums_by_reader) return NULL;
    *mean = (const float *)node->aux;
    return aux_rows(node->aux, node->d.bn.C);
}

/* Its producer may sum each row of its output for it while the row is in
 * the producer's cache (sums_output_stats: nn_batchnorm_row_stats, the
 * statistics pass's own arithmetic), into the per-sample pairs the
 * reader's gradient sums use later in the step: training forward passes
 * then skip their statistics pass. */
static int batchnorm_give_input_stats(nn_node *node) {
    node->d.bn.stats_by_producer = 1;
    return 1;
}

static double *batchnorm_input_stats(const nn_node *node) {
    return aux_rows(node->aux, node->d.bn.C);
}

/* Its producer may form its input gradient while loading that as its own
 * dy (forms_dy: nn_batchnorm_form_dx, the dx pass's own arithmetic): a
 * training backward asked to (defer_dx) then makes only the coefficients.
 * The ReLU's mask comes from the forward's map, x alpha + beta > 0; with a
 * residual add fused in, g is the add's input gradient (dr, the second
 * input's), which the sums pass wrote masked by the output: no mask then. */
static const float *batchnorm_deferred_dx(const nn_node *node, nn_bn_dx *dx) {
    const int C = node->d.bn.C;
    const float *aux = node->aux, *coef = aux + aux_deferred_offset(C) + 1;
    const int masked = node->d.bn.relu && !node->d.bn.residual;
    dx->g_mean = coef, dx->mean = coef + C, dx->scale = coef + 2 * C, dx->ks = coef + 3 * C;
    dx->alpha = masked ? aux + aux_map_offset(C) : NULL;
    dx->beta = masked ? aux + aux_map_offset(C) + C : NULL;
    return aux + aux_deferred_offset(C);
}

void nn_batchnorm_form_dx(float *dx, const float *g, const float *x, int c0, int rows, int len,
                          const nn_bn_dx *bn, const nn_ctx *ctx) {
    const bn_rows *k = bn_rows_for(ctx);
    for (int q = 0; q < rows; q++) {
        const int c = c0 + q;
        const size_t at = (size_t)q * len;
        k->dx(dx + at, g + at, NULL, x + at, bn->alpha != NULL, bn->alpha ? bn->alpha[c] : 0.0f,
              bn->alpha ? bn->beta[c] : 0.0f, len, bn->g_mean[c], bn->mean[c], bn->scale[c],
              bn->ks[c], 0);
    }
}

static const nn_op_kernels batchnorm_cpu = {
    .forward = batchnorm_fwd, .backward = batchnorm_bwd, .workspace = batchnorm_workspace};

/* eval mode as an affine map, with the same float rounding of alpha and beta
 * as the normalizing pass (channel_normalize), for folding into the
 * convolution before it (graph.c) */
static int batchnorm_eval_affine(const nn_node *node, const float *w, const float *b,
                                 const float *buf, float *scale, float *shift, int *relu) {
    const nn_bn_desc *d = &node->d.bn;
    const float *run_mean = buf, *run_var = buf + d->C; /* (C), (C) */
    for (int c = 0; c < d->C; c++) {
        const double mean = run_mean[c], invstd = 1.0 / sqrt((double)run_var[c] + d->eps);
        scale[c] = (float)(invstd * w[c]);
        shift[c] = (float)(b[c] - mean * invstd * w[c]);
    }
    *relu = d->relu;
    return d->C;
}

const nn_op_def nn_batchnorm_def = {
    .name = "batchnorm",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "eps momentum",
    .configure = batchnorm_configure,
    .flops = batchnorm_flops,
    .kernels = {[NN_KERNELS_CPU] = &batchnorm_cpu, NN_CUDA_KERNELS(batchnorm)},
    .check_batch = batchnorm_check_batch,
    .couples_batch = 1,
    .fuse_epilogue = batchnorm_fuse_epilogue,
    .give_prologue = batchnorm_give_prologue,
    .give_written_prologue = batchnorm_give_written_prologue,
    .written_grad_rows = batchnorm_written_grad_rows,
    .prologue_coefs = batchnorm_prologue_coefs,
    .give_grad_sums = batchnorm_give_grad_sums,
    .prologue_grad_sums = batchnorm_prologue_grad_sums,
    .give_input_stats = batchnorm_give_input_stats,
    .input_stats = batchnorm_input_stats,
    .deferred_dx = batchnorm_deferred_dx,
    .eval_affine = batchnorm_eval_affine,
};
