/*
 * dataset.c - an nn_dataset in memory: free, split off a validation set,
 * truncate, gather a normalized float batch, and the shuffling permutation.
 */
#include "nn_internal.h"

#include <string.h>

void nn_dataset_free(nn_dataset *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static size_t sample_bytes(const nn_dataset *d) {
    return (size_t)d->c * (size_t)d->h * (size_t)d->w;
}

/* Gives back memory after d shrank to n samples; keeps the old blocks if
 * realloc fails (they are still valid, just larger). */
static void shrink(nn_dataset *d, int64_t n) {
    if (n <= 0) return;
    uint8_t *p = realloc(d->pixels, (size_t)n * sample_bytes(d));
    if (p) d->pixels = p;
    int32_t *l = realloc(d->labels, (size_t)n * sizeof *d->labels);
    if (l) d->labels = l;
}

/* val keeps d's num_classes: the task's classes do not change because the
 * last samples happen not to contain the highest label. */
nn_status nn_dataset_split(nn_ctx *ctx, nn_dataset *d, int64_t n_val, nn_dataset *val) {
    NN_ASSERT(d != NULL && val != NULL && val != d);
    memset(val, 0, sizeof *val);
    if (n_val <= 0 || n_val >= d->n)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "validation size %lld: expected 1..%lld (the data set has %lld samples)",
                           (long long)n_val, (long long)(d->n - 1), (long long)d->n);
    int64_t n_keep = d->n - n_val;
    size_t sb = sample_bytes(d);
    uint8_t *pixels = malloc((size_t)n_val * sb);   /* (n_val, c, h, w) */
    int32_t *labels = malloc((size_t)n_val * sizeof *labels);
    if (!pixels || !labels) {
        free(pixels);
        free(labels);
        return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory splitting off %lld validation samples",
                           (long long)n_val);
    }
    memcpy(pixels, d->pixels + (size_t)n_keep * sb, (size_t)n_val * sb);
    memcpy(labels, d->labels + n_keep, (size_t)n_val * sizeof *labels);
    *val = *d;
    val->n = n_val;
    val->pixels = pixels;
    val->labels = labels;
    d->n = n_keep;
    shrink(d, n_keep);
    return NN_OK;
}

/* n larger than d->n leaves d as it is, so a "--limit" above the data set size
 * simply uses all of it. */
void nn_dataset_truncate(nn_dataset *d, int64_t n) {
    NN_ASSERT(d != NULL && n >= 0);
    if (n >= d->n) return;
    d->n = n;
    shrink(d, n);
}

void nn_dataset_gather(const nn_dataset *d, const int64_t *idx, int64_t first,
                       int64_t count, const nn_normalize *norm, float *x, int32_t *y) {
    /* x: (count, c, h, w)   y: (count) */
    float lut[256];
    /* The same float32 operations, in the same order, as torchvision's
     * ToTensor (p / 255) then Normalize (sub mean, div std): bit-identical. */
    for (int p = 0; p < 256; p++) {
        float v = (float)p / 255.0f;
        lut[p] = norm ? (v - norm->mean) / norm->std : v;
    }
    size_t sb = sample_bytes(d);
    for (int64_t i = 0; i < count; i++) {
        int64_t s = idx ? idx[i] : first + i;
        NN_ASSERT(s >= 0 && s < d->n);
        const uint8_t *src = d->pixels + (size_t)s * sb;
        float *dst = x + (size_t)i * sb;
        for (size_t k = 0; k < sb; k++) dst[k] = lut[src[k]];
        if (y) y[i] = d->labels[s];
    }
}

void nn_permutation(int64_t *perm, int64_t n, nn_rng *rng) {
    NN_ASSERT(n >= 0 && n <= (int64_t)UINT32_MAX);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i >= 1; i--) {
        int64_t j = nn_rng_below(rng, (uint32_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
