/*
 * test_data.c - IDX loading (raw and gzip, every malformed-file path), the
 * dataset directory lookup, gather/normalize, permutation, split and truncate.
 * Test files are written into a fresh mkdtemp directory and removed at the end.
 * Exits non-zero if any check fails.
 */
#include "nn_internal.h"
#include "test_util.h"

#include <time.h>
#include <zlib.h>

/* ------------------------------------------------------------ file helpers */

/* "<tmp_dir>/<name>" into buf (PATH-sized). */
static const char *tpath(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

static int write_file(const char *path, const void *data, size_t len, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f) return -1;
        int ok = len == 0 || gzwrite(f, data, (unsigned)len) == (int)len;
        return gzclose(f) == Z_OK && ok ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* Reads a whole file into a new buffer. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    *len = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    return buf;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX file in memory: header words then payload bytes. */
typedef struct {
    uint8_t *data;
    size_t len;
} blob;

static blob make_idx(const uint32_t *words, int nwords, const uint8_t *payload, size_t plen) {
    blob b;
    b.len = (size_t)nwords * 4 + plen;
    b.data = malloc(b.len ? b.len : 1);
    for (int i = 0; i < nwords; i++) put_be32(b.data + 4 * i, words[i]);
    if (plen) memcpy(b.data + (size_t)nwords * 4, payload, plen);
    return b;
}

/* ------------------------------------------------------------ fixtures */

#define TN 5
#define TH 3
#define TW 4
static const int32_t t_labels[TN] = {3, 1, 4, 1, 5};

static void fill_pixels(uint8_t *px) {
    for (int i = 0; i < TN * TH * TW; i++) px[i] = (uint8_t)(i * 37 + 11);
    px[0] = 0;
    px[1] = 255;
}

static blob good_images(void) {
    uint8_t px[TN * TH * TW];
    fill_pixels(px);
    uint32_t w[4] = {0x803, TN, TH, TW};
    return make_idx(w, 4, px, sizeof px);
}

static blob good_labels(void) {
    uint8_t lb[TN];
    for (int i = 0; i < TN; i++) lb[i] = (uint8_t)t_labels[i];
    uint32_t w[2] = {0x801, TN};
    return make_idx(w, 2, lb, sizeof lb);
}

static int dataset_matches(const nn_dataset *d) {
    uint8_t px[TN * TH * TW];
    fill_pixels(px);
    return d->n == TN && d->c == 1 && d->h == TH && d->w == TW && d->num_classes == 6 &&
           d->pixels && d->labels && memcmp(d->pixels, px, sizeof px) == 0 &&
           memcmp(d->labels, t_labels, sizeof t_labels) == 0;
}

/* A failed load: the status, a message starting with (or holding) the file
 * path and holding `needle`, and an output left empty. */
static void expect_error(const char *name, nn_ctx *ctx, nn_status got, nn_status want,
                         const char *path, const char *needle, const nn_dataset *d) {
    const char *err = nn_ctx_error(ctx);
    int ok = got == want && strncmp(err, path, strlen(path)) == 0 &&
             (!needle || strstr(err, needle) != NULL) && strchr(err, '\n') == NULL &&
             d->n == 0 && d->pixels == NULL && d->labels == NULL;
    char detail[NN_ERRMSG_SIZE + 64];
    snprintf(detail, sizeof detail, "%s: %s", nn_status_str(got), err);
    check_msg(ok, name, detail);
}

/* Writes good images/labels files, then `bad` under bad_name, loads the pair
 * (bad one in place of images or labels) and expects an error naming it. */
static void bad_file_case(nn_ctx *ctx, const char *name, const blob *bad, int gz,
                          int as_labels, nn_status want, const char *needle) {
    char img[256], lab[256], badp[256], fname[128];
    snprintf(fname, sizeof fname, "%s.idx%s", name, gz ? ".gz" : "");
    tpath(badp, sizeof badp, fname);
    tpath(img, sizeof img, "good-images");
    tpath(lab, sizeof lab, "good-labels");
    if (write_file(badp, bad->data, bad->len, gz) != 0) {
        check_msg(0, name, "cannot write test file");
        return;
    }
    nn_dataset d;
    nn_ctx_clear_error(ctx);
    nn_status st = as_labels ? nn_idx_load(ctx, img, badp, &d) : nn_idx_load(ctx, badp, lab, &d);
    expect_error(name, ctx, st, want, badp, needle, &d);
    nn_dataset_free(&d);
}

/* ------------------------------------------------------------ IDX tests */

static void test_good_loads(nn_ctx *ctx) {
    blob im = good_images(), lb = good_labels();
    char img[256], lab[256], imgz[256], labz[256];
    tpath(img, sizeof img, "good-images");
    tpath(lab, sizeof lab, "good-labels");
    tpath(imgz, sizeof imgz, "good-images.gz");
    tpath(labz, sizeof labz, "good-labels.gz");
    write_file(img, im.data, im.len, 0);
    write_file(lab, lb.data, lb.len, 0);
    write_file(imgz, im.data, im.len, 1);
    write_file(labz, lb.data, lb.len, 1);

    nn_dataset d;
    nn_status st = nn_idx_load(ctx, img, lab, &d);
    check_msg(st == NN_OK && dataset_matches(&d), "idx raw load", ctx_err(ctx, st));
    nn_dataset_free(&d);
    check_msg(d.n == 0 && d.pixels == NULL && d.labels == NULL, "dataset_free zeroes", NULL);
    nn_dataset_free(&d); /* twice is harmless */
    nn_dataset_free(NULL);

    st = nn_idx_load(ctx, imgz, labz, &d);
    check_msg(st == NN_OK && dataset_matches(&d), "idx gzip load (same content)", ctx_err(ctx, st));
    nn_dataset_free(&d);

    st = nn_idx_load(ctx, imgz, lab, &d);
    check_msg(st == NN_OK && dataset_matches(&d), "idx gzip images + raw labels", ctx_err(ctx, st));
    nn_dataset_free(&d);
    free(im.data);
    free(lb.data);
}

/* A file larger than the reader's first allocation and its read chunk. */
static void test_large_gz(nn_ctx *ctx) {
    const uint32_t n = 30000, h = 28, w = 28;
    size_t np = (size_t)n * h * w;
    uint8_t *px = malloc(np);
    uint8_t *lb = malloc(n);
    if (!px || !lb) {
        check_msg(0, "idx gzip load of 23 MB (chunked, growing buffer)", "out of memory");
        free(px);
        free(lb);
        return;
    }
    for (size_t i = 0; i < np; i++) px[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (uint32_t i = 0; i < n; i++) lb[i] = (uint8_t)(i % 7);
    uint32_t wi[4] = {0x803, n, h, w}, wl[2] = {0x801, n};
    blob bi = make_idx(wi, 4, px, np), bl = make_idx(wl, 2, lb, n);
    char img[256], lab[256];
    tpath(img, sizeof img, "large-images.gz");
    tpath(lab, sizeof lab, "large-labels.gz");
    int wr = write_file(img, bi.data, bi.len, 1) | write_file(lab, bl.data, bl.len, 1);
    nn_dataset d;
    nn_status st = wr ? NN_EIO : nn_idx_load(ctx, img, lab, &d);
    int ok = st == NN_OK && d.n == n && d.h == 28 && d.w == 28 && d.num_classes == 7 &&
             memcmp(d.pixels, px, np) == 0 && d.labels[n - 1] == (int32_t)((n - 1) % 7);
    check_msg(ok, "idx gzip load of 23 MB (chunked, growing buffer)", ctx_err(ctx, st));
    if (st == NN_OK) nn_dataset_free(&d);
    free(px);
    free(lb);
    free(bi.data);
    free(bl.data);
}

static void test_bad_headers(nn_ctx *ctx) {
    blob im = good_images(), lb = good_labels();
    blob b;

    /* wrong magic, both files, and the two swapped */
    uint32_t w_bad_img[4] = {0x0803FFFFu, TN, TH, TW};
    b = make_idx(w_bad_img, 4, im.data + 16, im.len - 16);
    bad_file_case(ctx, "images wrong magic", &b, 0, 0, NN_EFORMAT, "expected 0x00000803");
    bad_file_case(ctx, "images wrong magic (gz)", &b, 1, 0, NN_EFORMAT, "found 0x0803FFFF");
    free(b.data);
    uint32_t w_bad_lab[2] = {0x00000802u, TN};
    b = make_idx(w_bad_lab, 2, lb.data + 8, lb.len - 8);
    bad_file_case(ctx, "labels wrong magic", &b, 0, 1, NN_EFORMAT, "expected 0x00000801");
    free(b.data);
    bad_file_case(ctx, "labels file given as images", &lb, 0, 0, NN_EFORMAT, "labels file");
    bad_file_case(ctx, "images file given as labels", &im, 0, 1, NN_EFORMAT, "images file");

    /* zero and absurd dimensions */
    struct {
        const char *name;
        uint32_t n, rows, cols;
        const char *needle;
    } dims[] = {
        {"images n = 0", 0, TH, TW, "bad dimensions"},
        {"images rows = 0", TN, 0, TW, "bad dimensions"},
        {"images cols = 0", TN, TH, 0, "bad dimensions"},
        {"images rows = 5000", TN, 5000, TW, "bad dimensions"},
        {"images n = 200 million", 200000000u, TH, TW, "bad dimensions"},
        {"images n = 2^32-1", 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, "bad dimensions"},
        /* legal maximum dimensions, 1.6 PB claimed, 60 bytes present: must say
         * truncated, not try to allocate it all */
        {"images 1e8 x 4096 x 4096 in a tiny file", 100000000u, 4096, 4096, "truncated"},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        uint32_t w[4] = {0x803, dims[i].n, dims[i].rows, dims[i].cols};
        b = make_idx(w, 4, im.data + 16, im.len - 16);
        bad_file_case(ctx, dims[i].name, &b, 0, 0, NN_EFORMAT, dims[i].needle);
        free(b.data);
    }
    uint32_t w_l0[2] = {0x801, 0};
    b = make_idx(w_l0, 2, NULL, 0);
    bad_file_case(ctx, "labels n = 0", &b, 0, 1, NN_EFORMAT, "bad label count");
    free(b.data);

    /* empty file and short headers */
    b = make_idx(NULL, 0, NULL, 0);
    bad_file_case(ctx, "empty images file", &b, 0, 0, NN_EFORMAT, "truncated");
    bad_file_case(ctx, "empty labels file (gz)", &b, 1, 1, NN_EFORMAT, "truncated");
    free(b.data);
    b = make_idx(NULL, 0, im.data, 10);
    bad_file_case(ctx, "images header cut at 10 bytes", &b, 0, 0, NN_EFORMAT,
                  "expected 12 bytes of header, got 6");
    free(b.data);
    free(im.data);
    free(lb.data);
}

static void test_bad_lengths(nn_ctx *ctx) {
    blob im = good_images(), lb = good_labels();
    blob b;
    char msg[128];

    b = make_idx(NULL, 0, im.data, im.len - 7);
    snprintf(msg, sizeof msg, "truncated: expected %d bytes of pixel data, got %d", TN * TH * TW,
             TN * TH * TW - 7);
    bad_file_case(ctx, "images truncated (raw)", &b, 0, 0, NN_EFORMAT, msg);
    free(b.data);
    b = make_idx(NULL, 0, lb.data, lb.len - 1);
    bad_file_case(ctx, "labels truncated (raw)", &b, 0, 1, NN_EFORMAT,
                  "expected 5 bytes of label data, got 4");
    free(b.data);
    /* a well-formed gzip stream of a short file */
    b = make_idx(NULL, 0, im.data, im.len - 7);
    bad_file_case(ctx, "images truncated (complete gz of a short file)", &b, 1, 0, NN_EFORMAT,
                  msg);
    free(b.data);

    /* trailing garbage */
    b = make_idx(NULL, 0, im.data, im.len);
    b.data = realloc(b.data, b.len + 3);
    memcpy(b.data + b.len, "xyz", 3);
    b.len += 3;
    bad_file_case(ctx, "images trailing garbage (raw)", &b, 0, 0, NN_EFORMAT,
                  "unexpected data after");
    bad_file_case(ctx, "images trailing garbage (gz)", &b, 1, 0, NN_EFORMAT,
                  "unexpected data after");
    free(b.data);
    b = make_idx(NULL, 0, lb.data, lb.len);
    b.data = realloc(b.data, b.len + 1);
    b.data[b.len++] = 0;
    bad_file_case(ctx, "labels trailing garbage (raw)", &b, 0, 1, NN_EFORMAT,
                  "unexpected data after");
    free(b.data);

    /* count mismatch: 4 labels for 5 images */
    uint32_t w4[2] = {0x801, TN - 1};
    b = make_idx(w4, 2, lb.data + 8, TN - 1);
    char img[256], lab[256];
    tpath(img, sizeof img, "good-images");
    tpath(lab, sizeof lab, "four-labels");
    write_file(lab, b.data, b.len, 0);
    nn_dataset d;
    nn_status st = nn_idx_load(ctx, img, lab, &d);
    expect_error("image/label count mismatch names images file", ctx, st, NN_EFORMAT, img,
                 "5 images", &d);
    check_msg(strstr(nn_ctx_error(ctx), lab) != NULL && strstr(nn_ctx_error(ctx), "4 labels"),
              "image/label count mismatch names labels file", NULL);
    free(b.data);
    free(im.data);
    free(lb.data);
}

/* gzip streams damaged in the ways downloads and disks damage them. */
static void test_bad_gzip(nn_ctx *ctx) {
    blob im = good_images();
    char good[256], bad[256];
    tpath(good, sizeof good, "gz-source.gz");
    write_file(good, im.data, im.len, 1);
    size_t zlen = 0;
    uint8_t *z = read_file(good, &zlen);
    nn_dataset d;
    char lab[256];
    tpath(lab, sizeof lab, "good-labels");
    nn_status st;

    /* cut the compressed file in half */
    tpath(bad, sizeof bad, "gz-half.gz");
    write_file(bad, z, zlen / 2, 0);
    st = nn_idx_load(ctx, bad, lab, &d);
    expect_error("gz cut in half", ctx, st, NN_EFORMAT, bad, "truncated", &d);

    /* all data present, only the 8-byte CRC/length trailer missing */
    tpath(bad, sizeof bad, "gz-no-trailer.gz");
    write_file(bad, z, zlen - 8, 0);
    st = nn_idx_load(ctx, bad, lab, &d);
    expect_error("gz trailer missing", ctx, st, NN_EFORMAT, bad, "truncated gzip stream", &d);

    /* a flipped CRC byte */
    uint8_t *zc = malloc(zlen);
    memcpy(zc, z, zlen);
    zc[zlen - 8] ^= 0x5a;
    tpath(bad, sizeof bad, "gz-bad-crc.gz");
    write_file(bad, zc, zlen, 0);
    st = nn_idx_load(ctx, bad, lab, &d);
    expect_error("gz bad CRC", ctx, st, NN_EFORMAT, bad, "corrupt gzip data", &d);
    free(zc);

    /* a valid gzip header followed by garbage (0xff: reserved block type) */
    uint8_t garbage[10 + 64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memset(garbage + 10, 0xff, 64);
    tpath(bad, sizeof bad, "gz-garbage.gz");
    write_file(bad, garbage, sizeof garbage, 0);
    st = nn_idx_load(ctx, bad, lab, &d);
    expect_error("gz header then garbage", ctx, st, NN_EFORMAT, bad, "corrupt gzip data", &d);

    /* gzip header then pseudo-random bytes: whatever zlib makes of them, an error */
    nn_rng rng;
    nn_rng_seed(&rng, 7, 0);
    int all_ok = 1;
    for (int trial = 0; trial < 50; trial++) {
        for (size_t i = 10; i < sizeof garbage; i++) garbage[i] = (uint8_t)nn_rng_u32(&rng);
        write_file(bad, garbage, sizeof garbage, 0);
        st = nn_idx_load(ctx, bad, lab, &d);
        if (st != NN_EFORMAT || strncmp(nn_ctx_error(ctx), bad, strlen(bad)) != 0 ||
            d.pixels != NULL) {
            all_ok = 0;
            printf("  trial %d: %s: %s\n", trial, nn_status_str(st), nn_ctx_error(ctx));
        }
        nn_dataset_free(&d);
    }
    check_msg(all_ok, "gz header then random bytes (50 trials)", NULL);

    /* every prefix of the gzip file fails cleanly */
    all_ok = 1;
    tpath(bad, sizeof bad, "gz-prefix.gz");
    for (size_t cut = 0; cut < zlen; cut++) {
        write_file(bad, z, cut, 0);
        st = nn_idx_load(ctx, bad, lab, &d);
        if (st != NN_EFORMAT || strncmp(nn_ctx_error(ctx), bad, strlen(bad)) != 0) {
            all_ok = 0;
            printf("  cut %zu: %s: %s\n", cut, nn_status_str(st), nn_ctx_error(ctx));
        }
        nn_dataset_free(&d);
    }
    check_msg(all_ok, "gz every prefix is an error", NULL);
    free(z);
    free(im.data);
}

static void test_missing(nn_ctx *ctx) {
    char img[256], lab[256], nope[256];
    tpath(img, sizeof img, "good-images");
    tpath(lab, sizeof lab, "good-labels");
    tpath(nope, sizeof nope, "does-not-exist");
    nn_dataset d;
    nn_status st = nn_idx_load(ctx, nope, lab, &d);
    expect_error("missing images file", ctx, st, NN_EIO, nope, "cannot open", &d);
    st = nn_idx_load(ctx, img, nope, &d);
    expect_error("missing labels file", ctx, st, NN_EIO, nope, "cannot open", &d);
    st = nn_idx_load(ctx, tmp_dir, lab, &d);
    expect_error("directory as images file", ctx, st, NN_EIO, tmp_dir, NULL, &d);
}

static void test_load_dir(nn_ctx *ctx) {
    blob im = good_images(), lb = good_labels();
    char dir[256], p[512];
    nn_dataset d;
    nn_status st;

    tpath(dir, sizeof dir, "dir-gz");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_file(p, im.data, im.len, 1);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_file(p, lb.data, lb.len, 1);
    st = nn_dataset_load_dir(ctx, dir, "train", &d);
    check_msg(st == NN_OK && dataset_matches(&d), "load_dir finds .gz files", ctx_err(ctx, st));
    nn_dataset_free(&d);
    snprintf(p, sizeof p, "%s/", dir);
    st = nn_dataset_load_dir(ctx, p, "train", &d);
    check_msg(st == NN_OK && dataset_matches(&d), "load_dir with trailing slash", ctx_err(ctx, st));
    nn_dataset_free(&d);

    st = nn_dataset_load_dir(ctx, dir, "t10k", &d);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte[.gz]: no such file", dir);
    check_msg(st == NN_EIO && strcmp(nn_ctx_error(ctx), p) == 0 && d.pixels == NULL,
              "load_dir missing prefix: EIO and exact message", nn_ctx_error(ctx));

    tpath(dir, sizeof dir, "dir-raw");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    write_file(p, im.data, im.len, 0);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir);
    write_file(p, lb.data, lb.len, 0);
    st = nn_dataset_load_dir(ctx, dir, "t10k", &d);
    check_msg(st == NN_OK && dataset_matches(&d), "load_dir finds raw files", ctx_err(ctx, st));
    nn_dataset_free(&d);

    /* both present: .gz wins (the raw ones here hold 2 samples) */
    tpath(dir, sizeof dir, "dir-both");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_file(p, im.data, im.len, 1);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_file(p, lb.data, lb.len, 1);
    uint32_t wi[4] = {0x803, 2, TH, TW}, wl[2] = {0x801, 2};
    blob si = make_idx(wi, 4, im.data + 16, 2 * TH * TW), sl = make_idx(wl, 2, lb.data + 8, 2);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_file(p, si.data, si.len, 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", dir);
    write_file(p, sl.data, sl.len, 0);
    st = nn_dataset_load_dir(ctx, dir, "train", &d);
    check_msg(st == NN_OK && dataset_matches(&d), "load_dir prefers .gz over raw",
              ctx_err(ctx, st));
    nn_dataset_free(&d);
    free(si.data);
    free(sl.data);

    /* images present, labels absent */
    tpath(dir, sizeof dir, "dir-nolabels");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_file(p, im.data, im.len, 1);
    st = nn_dataset_load_dir(ctx, dir, "train", &d);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte[.gz]: no such file", dir);
    check_msg(st == NN_EIO && strcmp(nn_ctx_error(ctx), p) == 0 && d.pixels == NULL,
              "load_dir missing labels names labels file", nn_ctx_error(ctx));

    /* a malformed file found by load_dir is reported under its real name */
    tpath(dir, sizeof dir, "dir-bad");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_file(p, lb.data, lb.len, 0);
    char lp[512];
    snprintf(lp, sizeof lp, "%s/train-labels-idx1-ubyte.gz", dir);
    write_file(lp, lb.data, lb.len, 1);
    st = nn_dataset_load_dir(ctx, dir, "train", &d);
    expect_error("load_dir bad file names it", ctx, st, NN_EFORMAT, p, "bad magic", &d);

    free(im.data);
    free(lb.data);
}

/* ------------------------------------------------------------ in-memory ops */

static void make_dataset(nn_dataset *d, int64_t n, int h, int w) {
    d->n = n;
    d->c = 1;
    d->h = h;
    d->w = w;
    d->pixels = malloc((size_t)(n * h * w));
    d->labels = malloc((size_t)n * sizeof *d->labels);
    for (int64_t i = 0; i < n * h * w; i++) d->pixels[i] = (uint8_t)(i % 256);
    for (int64_t i = 0; i < n; i++) d->labels[i] = (int32_t)(i % 10);
    d->num_classes = 10;
}

static void test_gather(void) {
    nn_dataset d;
    make_dataset(&d, 3, 16, 16); /* sample 0 holds every byte value 0..255 */
    nn_normalize norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD};
    float x[3 * 256];
    int32_t y[3];
    nn_dataset_gather(&d, NULL, 0, 1, &norm, x, y);

    int exact = 1;
    for (int p = 0; p < 256; p++) {
        float want = ((float)p / 255.0f - norm.mean) / norm.std;
        if (memcmp(&x[p], &want, sizeof want) != 0) exact = 0;
    }
    check_msg(exact, "gather normalize bit-identical to (p/255 - mean)/std, all 256 values", NULL);
    char detail[96];
    snprintf(detail, sizeof detail, "x(0) = %.9g, x(255) = %.9g", x[0], x[255]);
    check_msg(fabs(x[0] - -0.2860 / 0.3530) < 1e-6 && fabs(x[255] - 0.7140 / 0.3530) < 1e-6,
              "gather normalize x(0) = -0.286/0.353, x(255) = 0.714/0.353", detail);

    nn_dataset_gather(&d, NULL, 0, 1, NULL, x, y);
    exact = 1;
    for (int p = 0; p < 256; p++) {
        float want = (float)p / 255.0f;
        if (memcmp(&x[p], &want, sizeof want) != 0) exact = 0;
    }
    check_msg(exact && x[0] == 0.0f && x[255] == 1.0f, "gather without norm is p/255", NULL);

    int64_t idx[3] = {2, 0, 1};
    nn_dataset_gather(&d, idx, 0, 3, NULL, x, y);
    int ok = y[0] == 2 && y[1] == 0 && y[2] == 1;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 256; k++)
            if (x[i * 256 + k] != (float)d.pixels[idx[i] * 256 + k] / 255.0f) ok = 0;
    check_msg(ok, "gather by index list", NULL);
    nn_dataset_gather(&d, NULL, 1, 2, NULL, x, y);
    ok = y[0] == 1 && y[1] == 2 && x[0] == (float)d.pixels[256] / 255.0f &&
         x[511] == (float)d.pixels[3 * 256 - 1] / 255.0f;
    check_msg(ok, "gather by range first..first+count", NULL);
    nn_dataset_free(&d);
}

static void test_permutation(void) {
    enum { N = 1000 };
    static int64_t a[N], b[N], r[N];
    int seen[N] = {0};
    nn_rng rng1, rng2, rng3;
    nn_rng_seed(&rng1, 42, 1);
    nn_rng_seed(&rng2, 42, 1);
    nn_rng_seed(&rng3, 43, 1);
    nn_permutation(a, N, &rng1);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        if (a[i] < 0 || a[i] >= N || seen[a[i]]++) ok = 0;
    }
    check_msg(ok, "permutation holds each of 0..n-1 once", NULL);
    nn_permutation(b, N, &rng2);
    check_msg(memcmp(a, b, sizeof a) == 0 && rng1.state == rng2.state,
              "permutation deterministic for a seed", NULL);
    nn_permutation(b, N, &rng3);
    check_msg(memcmp(a, b, sizeof a) != 0, "permutation differs for another seed", NULL);
    int moved = 0;
    for (int i = 0; i < N; i++) moved += a[i] != i;
    check_msg(moved > N / 2, "permutation is not the identity", NULL);

    /* the exact Fisher-Yates sequence: i = n-1..1, j = below(i+1), swap */
    nn_rng_seed(&rng1, 42, 1);
    for (int i = 0; i < N; i++) r[i] = i;
    for (int i = N - 1; i >= 1; i--) {
        uint32_t j = nn_rng_below(&rng1, (uint32_t)i + 1);
        int64_t t = r[i];
        r[i] = r[j];
        r[j] = t;
    }
    check_msg(memcmp(a, r, sizeof a) == 0, "permutation follows the specified Fisher-Yates draws",
              NULL);

    nn_rng_seed(&rng1, 5, 0);
    nn_rng_seed(&rng2, 5, 0);
    int64_t one = -1;
    nn_permutation(&one, 1, &rng1);
    nn_permutation(NULL, 0, &rng1);
    check_msg(one == 0 && rng1.state == rng2.state, "permutation n = 1 and n = 0 draw nothing",
              NULL);
}

static void test_split_truncate(nn_ctx *ctx) {
    nn_dataset d, orig, val;
    make_dataset(&d, 10, 2, 3);
    make_dataset(&orig, 10, 2, 3);
    nn_status st = nn_dataset_split(ctx, &d, 4, &val);
    int ok = st == NN_OK && d.n == 6 && val.n == 4 && val.c == 1 && val.h == 2 && val.w == 3 &&
             val.num_classes == 10 && d.num_classes == 10 &&
             memcmp(d.pixels, orig.pixels, 6 * 6) == 0 &&
             memcmp(val.pixels, orig.pixels + 6 * 6, 4 * 6) == 0 &&
             memcmp(d.labels, orig.labels, 6 * sizeof(int32_t)) == 0 &&
             memcmp(val.labels, orig.labels + 6, 4 * sizeof(int32_t)) == 0 &&
             val.pixels != d.pixels;
    check_msg(ok, "split moves the last n_val samples", ctx_err(ctx, st));
    nn_dataset_free(&val);

    int64_t bad[3] = {0, 6, -1};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "split n_val = %lld rejected", (long long)bad[i]);
        val.n = 99;
        st = nn_dataset_split(ctx, &d, bad[i], &val);
        check_msg(st == NN_EINVAL && d.n == 6 && val.n == 0 && val.pixels == NULL &&
                      strstr(nn_ctx_error(ctx), "expected 1..5") != NULL,
                  name, nn_ctx_error(ctx));
    }

    nn_dataset_truncate(&d, 100);
    check_msg(d.n == 6, "truncate above n keeps everything", NULL);
    nn_dataset_truncate(&d, 2);
    ok = d.n == 2 && memcmp(d.pixels, orig.pixels, 2 * 6) == 0 && d.labels[1] == 1;
    check_msg(ok, "truncate keeps the first n", NULL);
    nn_dataset_truncate(&d, 0);
    check_msg(d.n == 0, "truncate to 0", NULL);
    nn_dataset_free(&d);
    nn_dataset_free(&orig);
}

/* ------------------------------------------------------------ the real data */

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_fashion_mnist(nn_ctx *ctx) {
    struct stat sb;
    if (stat(NN_DEFAULT_DATA_DIR, &sb) != 0) {
        printf("SKIP fashion-mnist: %s not present\n", NN_DEFAULT_DATA_DIR);
        return;
    }
    const char *prefix[2] = {"train", "t10k"};
    const int64_t count[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        nn_dataset d;
        double t0 = seconds();
        nn_status st = nn_dataset_load_dir(ctx, NN_DEFAULT_DATA_DIR, prefix[s], &d);
        double dt = seconds() - t0;
        int64_t hist[10] = {0};
        int ok = st == NN_OK && d.n == count[s] && d.c == 1 && d.h == 28 && d.w == 28 &&
                 d.num_classes == 10;
        for (int64_t i = 0; ok && i < d.n; i++) {
            if (d.labels[i] < 0 || d.labels[i] > 9) ok = 0;
            else hist[d.labels[i]]++;
        }
        for (int k = 0; ok && k < 10; k++)
            if (hist[k] != count[s] / 10) ok = 0;
        char name[96], detail[NN_ERRMSG_SIZE + 64];
        snprintf(name, sizeof name, "fashion-mnist %s: %lld x 1x28x28, 10 balanced classes",
                 prefix[s], (long long)count[s]);
        snprintf(detail, sizeof detail, "%.3f s%s%s", dt, st ? ", " : "",
                 st ? nn_ctx_error(ctx) : "");
        check_msg(ok, name, detail);
        nn_dataset_free(&d);
    }
}

int main(void) {
    nn_ctx *ctx = test_ctx_new(1);
    if (!ctx) {
        fprintf(stderr, "nn_ctx_new failed\n");
        return 1;
    }
    tmp_dir_create("data");
    test_good_loads(ctx);
    test_large_gz(ctx);
    test_bad_headers(ctx);
    test_bad_lengths(ctx);
    test_bad_gzip(ctx);
    test_missing(ctx);
    test_load_dir(ctx);
    test_gather();
    test_permutation();
    test_split_truncate(ctx);
    test_fashion_mnist(ctx);
    remove_tree(tmp_dir);
    nn_ctx_free(ctx);
    return test_summary();
}
