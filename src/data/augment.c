/*
 * augment.c - training-time augmentation while gathering a batch, following
 * torchvision's RandomCrop(size, padding) -> RandomHorizontalFlip -> ToTensor ->
 * Normalize -> RandomErasing.
 *
 * Every sample draws its random numbers from its own nn_rng, seeded from
 * (seed, epoch, sample index) alone, so a sample's augmentation does not depend
 * on the batch it lands in, its position there, the batch size or the number of
 * threads. Draws, in this order, only for the steps that are on:
 *   crop:  i = below(2 * pad + 1) (row), then j = below(2 * pad + 1) (column):
 *          the top-left corner of the crop in the zero-padded image;
 *   flip:  uniform() < 0.5 mirrors left-right;
 *   erase: uniform() < erase_prob decides; then up to 10 attempts of
 *          area = H * W * U(0.02, 0.33) and ratio = exp(U(log 0.3, log 3.3))
 *          (one uniform() each), h = round(sqrt(area * ratio)),
 *          w = round(sqrt(area / ratio)) (round half to even, as Python);
 *          the first attempt with h < H and w < W draws the corner
 *          i = below(H - h + 1), then j = below(W - w + 1), and that rectangle
 *          is set to 0 in every channel. If all 10 fail nothing is erased
 *          (torchvision then returns the image unchanged too).
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* splitmix64's finalizer: a bijection that spreads every input bit over the
 * output, so nearby (seed, epoch, index) triples get unrelated streams. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The stream of one sample in one epoch: the state from all three values,
 * the PCG stream (increment) from the sample index. */
static void sample_rng(nn_rng *r, uint64_t seed, int64_t epoch, int64_t s) {
    uint64_t key = mix64(seed ^ mix64((uint64_t)epoch));
    nn_rng_seed(r, mix64(key ^ (uint64_t)s), (uint64_t)s);
}

/* Random erasing of one normalized sample x (c, h, w), torchvision's
 * RandomErasing.get_params with scale (0.02, 0.33), ratio (0.3, 3.3), value 0. */
static void random_erase(float *x, int c, int h, int w, float prob, nn_rng *r) {
    if (!(nn_rng_uniform(r) < prob)) return;
    const double area = (double)h * (double)w;
    const double log_lo = log(0.3), log_hi = log(3.3);
    for (int attempt = 0; attempt < 10; attempt++) {
        double erase_area = area * (0.02 + (0.33 - 0.02) * (double)nn_rng_uniform(r));
        double ratio = exp(log_lo + (log_hi - log_lo) * (double)nn_rng_uniform(r));
        int eh = (int)nearbyint(sqrt(erase_area * ratio));
        int ew = (int)nearbyint(sqrt(erase_area / ratio));
        if (!(eh < h && ew < w)) continue;
        int i0 = (int)nn_rng_below(r, (uint32_t)(h - eh + 1));
        int j0 = (int)nn_rng_below(r, (uint32_t)(w - ew + 1));
        for (int ch = 0; ch < c; ch++)
            for (int y = i0; y < i0 + eh; y++)
                memset(x + ((size_t)ch * h + y) * w + j0, 0, (size_t)ew * sizeof *x);
        return;
    }
}

void nn_dataset_gather_augmented(const nn_dataset *d, const int64_t *idx, int64_t count,
                                 const nn_normalize *norm, const nn_augment *aug, uint64_t seed,
                                 int64_t epoch, float *x, int32_t *y) {
    /* x: (count, c, h, w)   y: (count) */
    int pad = aug ? aug->crop_pad : 0;
    int hflip = aug ? aug->hflip != 0 : 0;
    float erase = aug ? aug->erase_prob : 0.0f;
    NN_ASSERT(d != NULL && (idx != NULL || count == 0) && count >= 0 && pad >= 0);
    if (pad == 0 && !hflip && !(erase > 0.0f)) {
        nn_dataset_gather(d, idx, 0, count, norm, x, y);
        return;
    }
    /* The same table as nn_dataset_gather, so unchanged pixels are bit-identical. */
    float lut[256];
    for (int p = 0; p < 256; p++) {
        float v = (float)p / 255.0f;
        lut[p] = norm ? (v - norm->mean) / norm->std : v;
    }
    const int C = d->c, H = d->h, W = d->w;
    const size_t sb = (size_t)C * H * W;
    for (int64_t n = 0; n < count; n++) {
        int64_t s = idx[n];
        NN_ASSERT(s >= 0 && s < d->n);
        const uint8_t *src = d->pixels + (size_t)s * sb; /* (C, H, W) */
        float *dst = x + (size_t)n * sb;                 /* (C, H, W) */
        nn_rng r;
        sample_rng(&r, seed, epoch, s);
        /* Output (y, x) reads the original image at (y + di, x' + dj), x' = x or
         * W - 1 - x when flipped; outside the image is the zero padding. */
        int di = 0, dj = 0;
        if (pad > 0) {
            di = (int)nn_rng_below(&r, (uint32_t)(2 * pad + 1)) - pad;
            dj = (int)nn_rng_below(&r, (uint32_t)(2 * pad + 1)) - pad;
        }
        int flip = hflip && nn_rng_uniform(&r) < 0.5f;
        for (int ch = 0; ch < C; ch++) {
            for (int row = 0; row < H; row++) {
                float *out = dst + ((size_t)ch * H + row) * W;
                int sy = row + di;
                if (sy < 0 || sy >= H) {
                    for (int col = 0; col < W; col++) out[col] = lut[0];
                    continue;
                }
                const uint8_t *in = src + ((size_t)ch * H + sy) * W;
                for (int col = 0; col < W; col++) {
                    int sx = (flip ? W - 1 - col : col) + dj;
                    out[col] = lut[sx >= 0 && sx < W ? in[sx] : 0];
                }
            }
        }
        if (erase > 0.0f) random_erase(dst, C, H, W, erase, &r);
        if (y) y[n] = d->labels[s];
    }
}
