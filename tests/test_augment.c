/*
 * test_augment.c - nn_dataset_gather_augmented (off = plain gather, per-sample
 * determinism, random crop, horizontal flip, random erasing) and the background
 * loader (same batches as gathering synchronously, partial last batch, resumed
 * epochs, restarts, freeing mid-epoch, bad arguments). Synthetic data sets are
 * built by hand; Fashion-MNIST is used for a smoke test when installed.
 * Exits non-zero if any check fails.
 */
#include "nn_internal.h"

#include "test_util.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

static const nn_normalize fashion_norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};

/* ------------------------------------------------------------ data helpers */

/* n samples of (c, h, w) random pixels and labels 0..9 drawn from seed. */
static nn_dataset random_dataset(int64_t n, int c, int h, int w, uint64_t seed) {
    nn_dataset d = {.n = n, .c = c, .h = h, .w = w, .num_classes = 10};
    size_t sb = (size_t)c * h * w;
    d.pixels = malloc((size_t)n * sb);
    d.labels = malloc((size_t)n * sizeof *d.labels);
    NN_ASSERT(d.pixels && d.labels);
    nn_rng r;
    nn_rng_seed(&r, seed, 7);
    for (size_t k = 0; k < (size_t)n * sb; k++) d.pixels[k] = (uint8_t)nn_rng_u32(&r);
    for (int64_t i = 0; i < n; i++) d.labels[i] = (int32_t)nn_rng_below(&r, 10);
    return d;
}

/* n copies of one image whose pixels are all distinct and nonzero:
 * pixel k (in (c, h, w) order) is 1 + k. c * h * w <= 255. */
static nn_dataset copies_dataset(int64_t n, int c, int h, int w) {
    NN_ASSERT(c * h * w <= 255);
    nn_dataset d = {.n = n, .c = c, .h = h, .w = w, .num_classes = 1};
    size_t sb = (size_t)c * h * w;
    d.pixels = malloc((size_t)n * sb);
    d.labels = calloc((size_t)n, sizeof *d.labels);
    NN_ASSERT(d.pixels && d.labels);
    for (int64_t i = 0; i < n; i++)
        for (size_t k = 0; k < sb; k++) d.pixels[(size_t)i * sb + k] = (uint8_t)(1 + k);
    return d;
}

/* The normalization table nn_dataset_gather uses. */
static void make_lut(const nn_normalize *norm, float lut[256]) {
    for (int p = 0; p < 256; p++) {
        float v = (float)p / 255.0f;
        lut[p] = norm ? (v - norm->mean) / norm->std : v;
    }
}

/* Image img (c, h, w) cropped at top-left (i, j) of its copy zero-padded by pad,
 * then mirrored if flip, normalized with lut, into out (c, h, w). */
static void expected_crop(const uint8_t *img, int c, int h, int w, int pad, int i, int j, int flip,
                          const float lut[256], float *out) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int cx = flip ? w - 1 - x : x;
                int sy = y + i - pad, sx = cx + j - pad;
                uint8_t v = sy >= 0 && sy < h && sx >= 0 && sx < w
                                ? img[((size_t)ch * h + sy) * w + sx]
                                : 0;
                out[((size_t)ch * h + y) * w + x] = lut[v];
            }
}

static int64_t *iota(int64_t n) {
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    NN_ASSERT(idx);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    return idx;
}

/* ------------------------------------------------------------ augmentation */

static void test_off(void) {
    nn_dataset d = random_dataset(40, 3, 5, 7, 1);
    size_t sb = (size_t)d.c * d.h * d.w;
    int64_t idx[17];
    nn_rng r;
    nn_rng_seed(&r, 3, 0);
    for (int i = 0; i < 17; i++) idx[i] = nn_rng_below(&r, (uint32_t)d.n);
    float *xa = malloc(17 * sb * sizeof(float)), *xb = malloc(17 * sb * sizeof(float));
    int32_t ya[17], yb[17];
    const nn_augment off = {0, 0, 0.0f};
    const nn_normalize *norms[2] = {&fashion_norm, NULL};
    for (int k = 0; k < 2; k++) {
        nn_dataset_gather(&d, idx, 0, 17, norms[k], xa, ya);
        nn_dataset_gather_augmented(&d, idx, 17, norms[k], NULL, 42, 5, xb, yb);
        int ok = !memcmp(xa, xb, 17 * sb * sizeof(float)) && !memcmp(ya, yb, sizeof ya);
        memset(xb, 0, 17 * sb * sizeof(float));
        nn_dataset_gather_augmented(&d, idx, 17, norms[k], &off, 42, 5, xb, yb);
        ok = ok && !memcmp(xa, xb, 17 * sb * sizeof(float)) && !memcmp(ya, yb, sizeof ya);
        check_msg(ok,
                  k == 0 ? "augment off (NULL and all-zero) = plain gather, normalized"
                         : "augment off (NULL and all-zero) = plain gather, no normalization",
                  NULL);
    }
    free(xa);
    free(xb);
    nn_dataset_free(&d);
}

static void test_determinism(void) {
    const int64_t n = 30;
    nn_dataset d = random_dataset(n, 2, 9, 8, 2);
    size_t sb = (size_t)d.c * d.h * d.w;
    const nn_augment aug = {2, 1, 0.5f};
    int64_t *all = iota(n);
    float *ref = malloc((size_t)n * sb * sizeof(float));
    int32_t *yref = malloc((size_t)n * sizeof(int32_t));
    nn_dataset_gather_augmented(&d, all, n, &fashion_norm, &aug, 1234, 3, ref, yref);

    /* Reversed order, in batches of 7, with every sample twice. */
    int64_t idx[2 * 30];
    for (int64_t i = 0; i < n; i++) idx[i] = idx[n + i] = n - 1 - i;
    float *x = malloc(7 * sb * sizeof(float));
    int32_t y[7];
    int same = 1;
    for (int64_t b = 0; b < 2 * n; b += 7) {
        int64_t cnt = 2 * n - b < 7 ? 2 * n - b : 7;
        nn_dataset_gather_augmented(&d, idx + b, cnt, &fashion_norm, &aug, 1234, 3, x, y);
        for (int64_t k = 0; k < cnt; k++) {
            int64_t s = idx[b + k];
            same &= !memcmp(x + k * sb, ref + s * sb, sb * sizeof(float));
            same &= y[k] == yref[s] && y[k] == d.labels[s];
        }
    }
    check_msg(same, "same (seed, epoch, index) -> same output whatever the batch, order or size",
              NULL);

    /* Another epoch or another seed changes the augmentation. */
    float *other = malloc((size_t)n * sb * sizeof(float));
    int32_t *yo = malloc((size_t)n * sizeof(int32_t));
    nn_dataset_gather_augmented(&d, all, n, &fashion_norm, &aug, 1234, 4, other, yo);
    int diff_epoch = 0;
    for (int64_t s = 0; s < n; s++) diff_epoch += memcmp(other + s * sb, ref + s * sb, sb * 4) != 0;
    nn_dataset_gather_augmented(&d, all, n, &fashion_norm, &aug, 1235, 3, other, yo);
    int diff_seed = 0;
    for (int64_t s = 0; s < n; s++) diff_seed += memcmp(other + s * sb, ref + s * sb, sb * 4) != 0;
    char detail[96];
    snprintf(detail, sizeof detail, "%d/%d samples differ across epochs, %d/%d across seeds",
             diff_epoch, (int)n, diff_seed, (int)n);
    check_msg(diff_epoch > n / 2 && diff_seed > n / 2,
              "another epoch or seed gives other augmentations", detail);
    free(all);
    free(ref);
    free(yref);
    free(x);
    free(other);
    free(yo);
    nn_dataset_free(&d);
}

/* Gathers n copies of one distinct-pixel image with crop (pad) and/or flip and
 * finds, for each output, every (i, j, flip) that reproduces it exactly.
 * hits[(i * (2 pad + 1) + j) * 2 + flip] counts samples matched by exactly
 * one; returns the number of samples that matched none or several. */
static int64_t crop_flip_hits(int c, int h, int w, int pad, int hflip, int64_t n,
                              const nn_normalize *norm, int64_t *hits) {
    nn_dataset d = copies_dataset(n, c, h, w);
    size_t sb = (size_t)c * h * w;
    const nn_augment aug = {pad, hflip, 0.0f};
    int64_t *idx = iota(n);
    float *x = malloc((size_t)n * sb * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    nn_dataset_gather_augmented(&d, idx, n, norm, &aug, 99, 0, x, y);
    float lut[256];
    make_lut(norm, lut);
    int side = 2 * pad + 1;
    float *cand = malloc((size_t)side * side * 2 * sb * sizeof(float));
    for (int i = 0; i < side; i++)
        for (int j = 0; j < side; j++)
            for (int f = 0; f < 2; f++)
                expected_crop(d.pixels, c, h, w, pad, i, j, f, lut,
                              cand + ((size_t)(i * side + j) * 2 + f) * sb);
    memset(hits, 0, (size_t)side * side * 2 * sizeof *hits);
    int64_t bad = 0;
    for (int64_t s = 0; s < n; s++) {
        int found = 0, which = -1;
        for (int k = 0; k < side * side * 2; k++)
            if (!memcmp(x + s * sb, cand + (size_t)k * sb, sb * sizeof(float))) {
                found++;
                which = k;
            }
        if (found == 1) hits[which]++;
        else bad++;
    }
    free(cand);
    free(idx);
    free(x);
    free(y);
    nn_dataset_free(&d);
    return bad;
}

static void test_crop(void) {
    const int pad = 2, side = 2 * pad + 1;
    const int64_t n = 5000;
    int64_t hits[5 * 5 * 2];
    char detail[160];
    const nn_normalize *norms[2] = {NULL, &fashion_norm};
    for (int k = 0; k < 2; k++) {
        int64_t bad = crop_flip_hits(2, 8, 7, pad, 0, n, norms[k], hits);
        int64_t lo = n, hi = 0, mirrored = 0;
        for (int o = 0; o < side * side; o++) {
            lo = hits[2 * o] < lo ? hits[2 * o] : lo;
            hi = hits[2 * o] > hi ? hits[2 * o] : hi;
            mirrored += hits[2 * o + 1];
        }
        double expect = (double)n / (side * side);
        snprintf(detail, sizeof detail,
                 "%lld unmatched, %lld mirrored; each of 25 offsets %lld..%lld times, expected %.0f",
                 (long long)bad, (long long)mirrored, (long long)lo, (long long)hi, expect);
        check_msg(bad == 0 && mirrored == 0 && lo > 0.7 * expect && hi < 1.3 * expect,
                  k == 0
                      ? "crop = shifted image, zeros from the border, offsets uniform in [0, 2p]^2"
                      : "crop with normalization: border is normalized 0",
                  detail);
    }
}

static void test_flip(void) {
    const int64_t n = 10000;
    int64_t hits[2];
    int64_t bad = crop_flip_hits(3, 4, 5, 0, 1, n, &fashion_norm, hits);
    double freq = (double)hits[1] / n;
    char detail[96];
    snprintf(detail, sizeof detail, "%lld unmatched, mirrored %.4f of %lld", (long long)bad, freq,
             (long long)n);
    check_msg(bad == 0 && fabs(freq - 0.5) < 0.03,
              "flip = exact mirror image with frequency 0.5 +- 0.03", detail);

    int64_t both[5 * 5 * 2];
    bad = crop_flip_hits(1, 6, 6, 2, 1, 4000, NULL, both);
    int64_t mirrored = 0, reached = 0;
    for (int k = 0; k < 50; k++) {
        mirrored += k % 2 ? both[k] : 0;
        reached += both[k] > 0;
    }
    snprintf(detail, sizeof detail, "%lld unmatched, %lld/50 (offset, flip) pairs seen, %.3f mirrored",
             (long long)bad, (long long)reached, (double)mirrored / 4000);
    check_msg(bad == 0 && reached == 50 && fabs((double)mirrored / 4000 - 0.5) < 0.04,
              "crop + flip = mirrored crop, all 50 combinations reached", detail);
}

/* Random erasing on n copies of a (c, h, w) image with every pixel nonzero (so
 * only erased values are 0), without normalization. Checks that the zeros form
 * one rectangle, the same in every channel, that everything else is the plain
 * gather, and that the rectangle's area fraction is within (0.02, 0.33) up to
 * the rounding of its sides. */
static void test_erase_case(int c, int h, int w, float prob, int64_t n) {
    nn_dataset d = random_dataset(n, c, h, w, 11);
    size_t sb = (size_t)c * h * w;
    for (size_t k = 0; k < (size_t)n * sb; k++) d.pixels[k] |= 1;
    const nn_augment aug = {0, 0, prob};
    const int64_t chunk = 500;
    int64_t *idx = iota(n);
    float *x = malloc((size_t)chunk * sb * sizeof(float));
    float *plain = malloc((size_t)chunk * sb * sizeof(float));
    int32_t *y = malloc((size_t)chunk * sizeof(int32_t));
    /* |round(a) * round(b) - a b| <= (a + b) / 2 + 1/4 with a b = area and
     * a / b = ratio in (0.3, 3.3): a + b <= sqrt(area) (sqrt 3.3 + 1 / sqrt 3.3). */
    const double hw = (double)h * w, k_round = 0.5 * (sqrt(3.3) + 1.0 / sqrt(3.3));
    const double amin = 0.02 * hw - k_round * sqrt(0.02 * hw);
    const double amax = 0.33 * hw + k_round * sqrt(0.33 * hw) + 0.25;
    int64_t erased = 0, bad_shape = 0, bad_area = 0;
    double fmin = 1, fmax = 0;
    for (int64_t b = 0; b < n; b += chunk) {
        int64_t cnt = n - b < chunk ? n - b : chunk;
        nn_dataset_gather_augmented(&d, idx + b, cnt, NULL, &aug, 5, 0, x, y);
        nn_dataset_gather(&d, idx + b, 0, cnt, NULL, plain, NULL);
        for (int64_t s = 0; s < cnt; s++) {
            const float *o = x + s * sb, *p = plain + s * sb;
            int y0 = h, y1 = -1, x0 = w, x1 = -1;
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++)
                    if (o[yy * w + xx] == 0.0f) {
                        y0 = yy < y0 ? yy : y0;
                        y1 = yy > y1 ? yy : y1;
                        x0 = xx < x0 ? xx : x0;
                        x1 = xx > x1 ? xx : x1;
                    }
            if (y1 >= 0) erased++;
            int ok = 1;
            for (int ch = 0; ch < c; ch++)
                for (int yy = 0; yy < h; yy++)
                    for (int xx = 0; xx < w; xx++) {
                        size_t k = ((size_t)ch * h + yy) * w + xx;
                        int inside = yy >= y0 && yy <= y1 && xx >= x0 && xx <= x1;
                        ok &= inside ? o[k] == 0.0f && !signbit(o[k]) : o[k] == p[k];
                    }
            bad_shape += !ok;
            if (y1 >= 0) {
                double area = (double)(y1 - y0 + 1) * (x1 - x0 + 1);
                fmin = area / hw < fmin ? area / hw : fmin;
                fmax = area / hw > fmax ? area / hw : fmax;
                bad_area += area < amin || area > amax;
            }
        }
    }
    double freq = (double)erased / n;
    char name[96], detail[200];
    snprintf(name, sizeof name, "erase p=%.2f on %dx%dx%d: one zero rectangle, frequency p +- 0.03",
             (double)prob, c, h, w);
    snprintf(detail, sizeof detail,
             "erased %.4f of %lld; %lld not a clean rectangle; area fraction %.4f..%.4f "
             "(allowed %.4f..%.4f with rounding), %lld outside",
             freq, (long long)n, (long long)bad_shape, fmin, fmax, amin / hw, amax / hw,
             (long long)bad_area);
    check_msg(fabs(freq - prob) < 0.03 && bad_shape == 0 && bad_area == 0, name, detail);
    free(idx);
    free(x);
    free(plain);
    free(y);
    nn_dataset_free(&d);
}

static void test_erase(void) {
    test_erase_case(3, 32, 32, 0.5f, 10000);
    test_erase_case(1, 20, 36, 0.25f, 10000);
    test_erase_case(2, 28, 28, 1.0f, 4000);
}

/* ------------------------------------------------------------ loader */

/* Runs the loader over epoch from first_batch and compares every batch with a
 * synchronous gather of the same slice of perm. Returns the number of
 * mismatches (wrong count, data or labels, or a wrong number of batches). */
static int loader_epoch_diff(nn_loader *l, const nn_dataset *d, int batch,
                             const nn_normalize *norm, const nn_augment *aug, uint64_t seed,
                             int64_t epoch, const int64_t *perm, int64_t first_batch,
                             int64_t *nbatches_seen) {
    size_t sb = (size_t)d->c * d->h * d->w;
    float *xs = malloc((size_t)batch * sb * sizeof(float));
    int32_t *ys = malloc((size_t)batch * sizeof(int32_t));
    int bad = nn_loader_start(l, epoch, perm, first_batch) != NN_OK;
    int64_t nb = (d->n + batch - 1) / batch, seen = 0;
    for (int64_t b = first_batch; b < nb; b++) {
        const float *x;
        const int32_t *y;
        int cnt = nn_loader_next(l, &x, &y);
        int64_t want = d->n - b * batch < batch ? d->n - b * batch : batch;
        if (cnt != want) {
            bad++;
            break;
        }
        seen++;
        nn_dataset_gather_augmented(d, perm + b * batch, want, norm, aug, seed, epoch, xs, ys);
        bad += memcmp(x, xs, (size_t)want * sb * sizeof(float)) != 0;
        bad += memcmp(y, ys, (size_t)want * sizeof(int32_t)) != 0;
    }
    const float *x;
    const int32_t *y;
    bad += nn_loader_next(l, &x, &y) != 0 || x != NULL || y != NULL;
    bad += nn_loader_next(l, &x, &y) != 0;
    if (nbatches_seen) *nbatches_seen = seen;
    free(xs);
    free(ys);
    return bad;
}

static void test_loader(nn_ctx *ctx) {
    const int64_t n = 37;
    nn_dataset d = random_dataset(n, 2, 6, 5, 21);
    const nn_augment aug = {1, 1, 0.5f};
    const uint64_t seed = 77;
    int64_t perm[37], perm2[37];
    nn_rng r;
    nn_rng_seed(&r, seed, 1);
    nn_permutation(perm, n, &r);
    nn_permutation(perm2, n, &r);
    char detail[128];

    nn_loader *l = NULL;
    nn_status st = nn_loader_new(ctx, &d, 8, &fashion_norm, &aug, seed, &l);
    check_msg(st == NN_OK && l != NULL, "loader_new", st == NN_OK ? NULL : nn_ctx_error(ctx));
    if (st != NN_OK) {
        nn_dataset_free(&d);
        return;
    }
    const float *x;
    const int32_t *y;
    check_msg(nn_loader_next(l, &x, &y) == 0, "loader: next before any start returns 0", NULL);

    int64_t seen;
    int bad = loader_epoch_diff(l, &d, 8, &fashion_norm, &aug, seed, 0, perm, 0, &seen);
    snprintf(detail, sizeof detail, "%lld batches (4 x 8 + 5), %d mismatches", (long long)seen, bad);
    check_msg(bad == 0 && seen == 5, "loader epoch 0 = synchronous gather, partial last batch",
              detail);
    bad = loader_epoch_diff(l, &d, 8, &fashion_norm, &aug, seed, 1, perm2, 2, &seen);
    snprintf(detail, sizeof detail, "%lld batches, %d mismatches", (long long)seen, bad);
    check_msg(bad == 0 && seen == 3, "loader epoch 1 from first_batch 2 = synchronous gather",
              detail);
    bad = loader_epoch_diff(l, &d, 8, &fashion_norm, &aug, seed, 2, perm, 5, &seen);
    check_msg(bad == 0 && seen == 0, "loader first_batch = number of batches: empty epoch", NULL);

    /* Restart in the middle of an epoch, while the worker prefetches. */
    nn_loader_start(l, 3, perm, 0);
    nn_loader_next(l, &x, &y);
    bad = loader_epoch_diff(l, &d, 8, &fashion_norm, &aug, seed, 4, perm2, 1, &seen);
    check_msg(bad == 0 && seen == 4, "loader restarted mid-epoch = synchronous gather", NULL);

    /* Errors. */
    st = nn_loader_start(l, 0, perm, 6);
    check_msg(st == NN_EINVAL, "loader_start first_batch past the end -> NN_EINVAL",
              nn_ctx_error(ctx));
    int64_t badperm[37];
    memcpy(badperm, perm, sizeof badperm);
    badperm[9] = 37;
    st = nn_loader_start(l, 0, badperm, 0);
    check_msg(st == NN_EINVAL, "loader_start perm entry out of range -> NN_EINVAL",
              nn_ctx_error(ctx));
    nn_loader_free(l);

    nn_loader *l2 = (nn_loader *)&d;
    st = nn_loader_new(ctx, &d, 0, NULL, NULL, 0, &l2);
    check_msg(st == NN_EINVAL && l2 == NULL, "loader_new batch 0 -> NN_EINVAL, out NULL",
              nn_ctx_error(ctx));
    const nn_augment bad_aug = {0, 0, 1.5f};
    st = nn_loader_new(ctx, &d, 4, NULL, &bad_aug, 0, &l2);
    check_msg(st == NN_EINVAL, "loader_new erase_prob 1.5 -> NN_EINVAL", nn_ctx_error(ctx));

    /* Batch sizes 1, 37 and larger than the data set; no augmentation. */
    const int sizes[3] = {1, 37, 64};
    for (int k = 0; k < 3; k++) {
        const nn_augment *a = k == 2 ? NULL : &aug;
        st = nn_loader_new(ctx, &d, sizes[k], k == 1 ? NULL : &fashion_norm, a, seed, &l);
        bad = st != NN_OK;
        if (st == NN_OK) {
            bad += loader_epoch_diff(l, &d, sizes[k], k == 1 ? NULL : &fashion_norm, a, seed, 9,
                                     perm, 0, &seen);
            nn_loader_free(l);
        }
        snprintf(detail, sizeof detail, "batch %d: %lld batches, %d mismatches", sizes[k],
                 (long long)seen, bad);
        check_msg(bad == 0 && seen == (n + sizes[k] - 1) / sizes[k], "loader batch sizes 1, n, > n",
                  detail);
    }

    /* Many short epochs with batch 3: hand-offs for the race detectors. */
    st = nn_loader_new(ctx, &d, 3, &fashion_norm, &aug, seed, &l);
    bad = st != NN_OK;
    for (int64_t e = 0; e < 40 && st == NN_OK; e++) {
        nn_permutation(perm2, n, &r);
        bad += loader_epoch_diff(l, &d, 3, &fashion_norm, &aug, seed, e, perm2, e % 13, NULL);
    }
    if (st == NN_OK) nn_loader_free(l);
    snprintf(detail, sizeof detail, "%d mismatches", bad);
    check_msg(bad == 0, "loader 40 epochs, batch 3, varying first_batch", detail);

    /* Freeing at every stage: never started, just started, mid-epoch, after. */
    int ok = 1;
    for (int stage = 0; stage < 4; stage++) {
        st = nn_loader_new(ctx, &d, 8, &fashion_norm, &aug, seed, &l);
        ok &= st == NN_OK;
        if (st != NN_OK) break;
        if (stage >= 1) nn_loader_start(l, 0, perm, 0);
        if (stage >= 2) ok &= nn_loader_next(l, &x, &y) == 8;
        if (stage >= 3)
            while (nn_loader_next(l, &x, &y) > 0) {}
        nn_loader_free(l);
    }
    nn_loader_free(NULL);
    check_msg(ok, "loader_free before start, after start, mid-epoch, after the epoch, NULL", NULL);
    nn_dataset_free(&d);
}

static void test_fashion_mnist(nn_ctx *ctx) {
    struct stat sbuf;
    if (stat(NN_DEFAULT_DATA_DIR, &sbuf) != 0) {
        printf("SKIP fashion-mnist: %s not present\n", NN_DEFAULT_DATA_DIR);
        return;
    }
    nn_dataset d;
    nn_status st = nn_dataset_load_dir(ctx, NN_DEFAULT_DATA_DIR, "train", &d);
    check_msg(st == NN_OK, "fashion-mnist train loads", st == NN_OK ? NULL : nn_ctx_error(ctx));
    if (st != NN_OK) return;
    const nn_augment aug = {2, 1, 0.25f};
    const int batch = 256;
    int64_t *perm = malloc((size_t)d.n * sizeof *perm);
    nn_rng r;
    nn_rng_seed(&r, 1, 0);
    nn_permutation(perm, d.n, &r);
    nn_loader *l;
    st = nn_loader_new(ctx, &d, batch, &fashion_norm, &aug, 1, &l);
    int64_t seen = 0;
    int bad = st != NN_OK;
    double t0 = nn_wall_time();
    if (st == NN_OK) {
        bad += loader_epoch_diff(l, &d, batch, &fashion_norm, &aug, 1, 0, perm, 0, &seen);
        nn_loader_free(l);
    }
    double t = nn_wall_time() - t0;
    char detail[128];
    snprintf(detail, sizeof detail, "%lld batches, %d mismatches, %.2f s with the checks",
             (long long)seen, bad, t);
    check_msg(bad == 0 && seen == (d.n + batch - 1) / batch,
              "fashion-mnist: loader epoch (crop 2, flip, erase 0.25) = synchronous gather",
              detail);
    free(perm);
    nn_dataset_free(&d);
}

int main(void) {
    nn_ctx *ctx = test_ctx_new(1); /* NNOPT_LOADER=thread or sync runs the loader that way */
    if (!ctx) return 1;
    test_off();
    test_determinism();
    test_crop();
    test_flip();
    test_erase();
    test_loader(ctx);
    test_fashion_mnist(ctx);
    nn_ctx_free(ctx);
    return test_summary();
}
