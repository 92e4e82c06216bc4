/*
 * test_safetensors.c - the safetensors reader and writer (round trip, atomic
 * write, hostile files written byte by byte) and checkpoints of the seed CNN
 * (parameter names and shapes, bad files, resume with SGD state and train
 * state). Exits non-zero on any failure.
 */
#include "nnopt.h"
#include "test_util.h"

#include <fcntl.h>

static int g_checks, g_failures;

static void check_at(int ok, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    g_checks++;
    if (!ok) g_failures++;
    printf("%s ", ok ? "ok  " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (!ok) printf("  (%s:%d)", file, line);
    printf("\n");
}
#define CHECK(cond, ...) check_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* A safetensors file: 8-byte length of header, header text, then data_len
 * bytes 0, 1, 2, ... */
static void write_st(const char *path, uint64_t header_len, const char *header,
                     size_t data_len) {
    size_t hl = strlen(header);
    unsigned char *b = malloc(8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(header_len >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)i;
    write_bytes(path, b, 8 + hl + data_len);
    free(b);
}

static void write_st_auto(const char *path, const char *header, size_t data_len) {
    write_st(path, strlen(header), header, data_len);
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* Opens path expecting failure with status want and a message naming path. */
static void expect_open_fail(nn_ctx *ctx, const char *what, const char *path, nn_status want,
                             const char *substr) {
    nn_st_file *f = (nn_st_file *)&f; /* must be reset to NULL */
    nn_ctx_clear_error(ctx);
    nn_status s = nn_safetensors_open(ctx, path, &f);
    const char *msg = nn_ctx_error(ctx);
    CHECK(s == want && f == NULL && strstr(msg, path) && !strchr(msg, '\n') &&
              (!substr || strstr(msg, substr)),
          "reject %s: status %s (want %s): %s", what, nn_status_str(s), nn_status_str(want), msg);
    if (s == NN_OK) nn_safetensors_close(f);
}

/* ------------------------------------------------------------------ raw files */

static void test_round_trip(nn_ctx *ctx) {
    float a[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-40f}; /* (2, 3), with a denormal */
    float b[5] = {NAN, INFINITY, -INFINITY, 3.4028235e38f, -1.17549435e-38f};
    float sc[1] = {42.0f};
    nn_st_tensor t[5];
    memset(t, 0, sizeof t);
    strcpy(t[0].name, "layer.a");
    t[0].shape = (nn_shape){2, {2, 3}};
    t[0].data = a;
    strcpy(t[1].name, "b \"quoted\" \\ name\t\xc3\xa9");
    t[1].shape = (nn_shape){1, {5}};
    t[1].data = b;
    strcpy(t[2].name, "scalar");
    t[2].shape = (nn_shape){0, {0}};
    t[2].data = sc;
    strcpy(t[3].name, "empty");
    t[3].shape = (nn_shape){2, {0, 4}};
    t[3].data = NULL;
    strcpy(t[4].name, "four.d");
    t[4].shape = (nn_shape){4, {1, 2, 1, 3}};
    t[4].data = a;
    const char *keys[] = {"format", "note\n\"x\""};
    const char *vals[] = {"nnopt", "caf\xc3\xa9 \\ \"y\"\x01"};
    const char *path = tmp_path("round.safetensors");

    nn_status s = nn_safetensors_write(ctx, path, t, 5, keys, vals, 2);
    CHECK(s == NN_OK, "write 5 tensors and 2 metadata entries: %s", ctx_err(ctx, s));

    /* raw layout: header length, JSON starting '{', data 8-byte aligned */
    FILE *fp = fopen(path, "rb");
    unsigned char raw[4096];
    size_t n = fp ? fread(raw, 1, sizeof raw, fp) : 0;
    if (fp) fclose(fp);
    uint64_t hl = 0;
    for (int i = 0; i < 8 && n >= 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
    CHECK(n >= 8 && hl + 8 <= n && raw[8] == '{', "header length %llu, JSON object first",
          (unsigned long long)hl);
    CHECK((8 + hl) % 8 == 0, "data section starts 8-byte aligned (at byte %llu)",
          (unsigned long long)(8 + hl));
    CHECK(n == 8 + hl + (6 + 5 + 1 + 0 + 6) * 4, "file size %zu = header + 18 floats", n);
    size_t last = 8 + hl;
    while (last > 8 && raw[last - 1] == ' ') last--;
    CHECK(last > 8 && raw[last - 1] == '}', "header is JSON then %zu padding spaces",
          (size_t)(8 + hl - last));

    nn_st_file *f = NULL;
    s = nn_safetensors_open(ctx, path, &f);
    CHECK(s == NN_OK && f, "open round-trip file: %s", ctx_err(ctx, s));
    if (!f) return;
    CHECK(nn_safetensors_count(f) == 5, "5 tensors read back");
    int order_ok = 1, shapes_ok = 1;
    for (int i = 0; i < 5 && i < nn_safetensors_count(f); i++) {
        const nn_st_tensor *r = nn_safetensors_get(f, i);
        order_ok &= strcmp(r->name, t[i].name) == 0;
        shapes_ok &= r->shape.ndim == t[i].shape.ndim;
        for (int d = 0; d < t[i].shape.ndim; d++) shapes_ok &= r->shape.dim[d] == t[i].shape.dim[d];
        if (nn_shape_numel(&r->shape) > 0) shapes_ok &= ((uintptr_t)r->data % 4) == 0;
    }
    CHECK(order_ok, "names (with quotes, backslash, tab, UTF-8) read back in write order");
    CHECK(shapes_ok, "shapes (2-D, 1-D, scalar, empty, 4-D) read back; data float-aligned");
    const nn_st_tensor *ra = nn_safetensors_find(f, "layer.a");
    const nn_st_tensor *rb = nn_safetensors_find(f, t[1].name);
    const nn_st_tensor *rs = nn_safetensors_find(f, "scalar");
    CHECK(ra && memcmp(ra->data, a, sizeof a) == 0, "layer.a values bit-identical");
    CHECK(rb && memcmp(rb->data, b, sizeof b) == 0, "NaN/Inf/extreme values bit-identical");
    CHECK(rs && rs->data[0] == 42.0f, "scalar value");
    CHECK(nn_safetensors_find(f, "nope") == NULL, "find of a missing name is NULL");
    CHECK(nn_safetensors_meta(f, "format") && strcmp(nn_safetensors_meta(f, "format"), "nnopt") == 0,
          "metadata 'format' read back");
    CHECK(nn_safetensors_meta(f, keys[1]) && strcmp(nn_safetensors_meta(f, keys[1]), vals[1]) == 0,
          "metadata with escapes and UTF-8 read back");
    CHECK(nn_safetensors_meta(f, "missing") == NULL, "missing metadata is NULL");
    nn_safetensors_close(f);

    /* no tensors, no metadata */
    s = nn_safetensors_write(ctx, path, NULL, 0, NULL, NULL, 0);
    f = NULL;
    if (s == NN_OK) s = nn_safetensors_open(ctx, path, &f);
    CHECK(s == NN_OK && f && nn_safetensors_count(f) == 0, "empty file round trip");
    nn_safetensors_close(f);
    unlink(path);
}

static void test_atomic_write(nn_ctx *ctx) {
    float v[3] = {1, 2, 3};
    nn_st_tensor t = {"v", {1, {3}}, v, NN_ST_F32};
    const char *path = tmp_path("atomic.safetensors");
    int before = count_dir_entries(tmp_dir);
    nn_status s = nn_safetensors_write(ctx, path, &t, 1, NULL, NULL, 0);
    CHECK(s == NN_OK && count_dir_entries(tmp_dir) == before + 1,
          "write adds exactly one file to the directory (no temp file left)");
    v[0] = 7;
    s = nn_safetensors_write(ctx, path, &t, 1, NULL, NULL, 0);
    nn_st_file *f = NULL;
    if (s == NN_OK) s = nn_safetensors_open(ctx, path, &f);
    CHECK(s == NN_OK && f && nn_safetensors_get(f, 0)->data[0] == 7.0f &&
              count_dir_entries(tmp_dir) == before + 1,
          "overwrite replaces the file and leaves no temp file");
    nn_safetensors_close(f);
    unlink(path);

    const char *bad = tmp_path("no-such-dir/x.safetensors");
    nn_ctx_clear_error(ctx);
    s = nn_safetensors_write(ctx, bad, &t, 1, NULL, NULL, 0);
    CHECK(s == NN_EIO && strstr(nn_ctx_error(ctx), bad), "write into a missing directory: %s",
          nn_ctx_error(ctx));

    /* target is a directory: the rename fails and the temp file is removed */
    const char *dirpath = tmp_path("a-directory");
    mkdir(dirpath, 0700);
    before = count_dir_entries(tmp_dir);
    nn_ctx_clear_error(ctx);
    s = nn_safetensors_write(ctx, dirpath, &t, 1, NULL, NULL, 0);
    CHECK(s == NN_EIO && strstr(nn_ctx_error(ctx), dirpath) &&
              count_dir_entries(tmp_dir) == before,
          "failed rename removes the temp file: %s", nn_ctx_error(ctx));
    rmdir(dirpath);

    nn_st_tensor dup[2] = {t, t};
    s = nn_safetensors_write(ctx, path, dup, 2, NULL, NULL, 0);
    CHECK(s == NN_EINVAL && !file_exists(path), "duplicate names refused before writing: %s",
          nn_ctx_error(ctx));
    nn_st_tensor neg = {"neg", {1, {-1}}, v, NN_ST_F32};
    s = nn_safetensors_write(ctx, path, &neg, 1, NULL, NULL, 0);
    CHECK(s == NN_EINVAL && !file_exists(path), "negative dimension refused: %s",
          nn_ctx_error(ctx));
}

static void test_hostile_files(nn_ctx *ctx) {
    const char *p = tmp_path("bad.safetensors");
    const char *okt = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];

    write_bytes(p, "\x05\0\0\0\0", 5);
    expect_open_fail(ctx, "5-byte file", p, NN_EFORMAT, "too short");
    write_bytes(p, "", 0);
    expect_open_fail(ctx, "empty file", p, NN_EFORMAT, NULL);

    write_st(p, 100, "{}", 0);
    expect_open_fail(ctx, "header length beyond the file", p, NN_EFORMAT, "header length 100");
    write_st(p, (uint64_t)1 << 63, "{}", 16);
    expect_open_fail(ctx, "header length 2^63", p, NN_EFORMAT, "header length");
    write_st(p, UINT64_MAX, "{}", 16);
    expect_open_fail(ctx, "header length 2^64-1", p, NN_EFORMAT, "header length");
    {
        /* a sparse 101 MB file so the length fits the file but breaks the limit */
        write_st(p, 100000001, "{}", 0);
        int fd = open(p, O_WRONLY);
        int ok = fd >= 0 && ftruncate(fd, 101000000) == 0;
        if (fd >= 0) close(fd);
        if (ok) expect_open_fail(ctx, "header length over 100 MB", p, NN_EFORMAT, "limit");
    }
    write_st(p, 0, "", 0);
    expect_open_fail(ctx, "empty header", p, NN_EFORMAT, "JSON");

    write_st_auto(p, "{\"t\":", 0);
    expect_open_fail(ctx, "truncated JSON", p, NN_EFORMAT, "JSON");
    write_st_auto(p, "{} x", 0);
    expect_open_fail(ctx, "garbage after the JSON", p, NN_EFORMAT, "JSON");
    write_st_auto(p, "[1,2]", 0);
    expect_open_fail(ctx, "JSON array header", p, NN_EFORMAT, "not a JSON object");
    write_st_auto(p, "\"str\"", 0);
    expect_open_fail(ctx, "JSON string header", p, NN_EFORMAT, "not a JSON object");
    {
        unsigned char b[14] = {6, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 'x', 'y', 'z'};
        write_bytes(p, b, sizeof b);
        expect_open_fail(ctx, "NUL byte inside the header", p, NN_EFORMAT, "NUL");
    }
    write_st_auto(p, "{\"\xff\xfe\":{}}", 0);
    expect_open_fail(ctx, "invalid UTF-8 in the header", p, NN_EFORMAT, "UTF-8");
    {
        /* 5000 nested arrays: beyond cJSON's nesting limit, must not overflow the stack */
        char *deep = malloc(10002);
        for (int i = 0; i < 5000; i++) deep[i] = '[', deep[5000 + i] = ']';
        deep[10000] = '\0';
        write_st_auto(p, deep, 0);
        free(deep);
        expect_open_fail(ctx, "deeply nested JSON", p, NN_EFORMAT, NULL);
    }

    write_st_auto(p, "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_open_fail(ctx, "missing dtype", p, NN_EFORMAT, "'t'");
    write_st_auto(p, "{\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    expect_open_fail(ctx, "dtype U8", p, NN_EUNSUPPORTED, "U8");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    expect_open_fail(ctx, "dtype F8_E4M3", p, NN_EUNSUPPORTED, "F8_E4M3");
    /* byte counts follow the dtype's element size */
    write_st_auto(p, "{\"t\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_open_fail(ctx, "F16 with 4 bytes per element", p, NN_EFORMAT, "of F16 needs 4");
    write_st_auto(p, "{\"t\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "I64 with 4 bytes", p, NN_EFORMAT, "of I64 needs 8");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "unknown dtype", p, NN_EFORMAT, "F33");
    write_st_auto(p, "{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "numeric dtype", p, NN_EFORMAT, "dtype");
    write_st_auto(p, "{\"t\":[1,2]}", 0);
    expect_open_fail(ctx, "tensor entry not an object", p, NN_EFORMAT, "'t'");

    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "negative shape", p, NN_EFORMAT, "shape");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "fractional shape", p, NN_EFORMAT, "shape");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8);
    expect_open_fail(ctx, "string in shape", p, NN_EFORMAT, "shape");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8);
    expect_open_fail(ctx, "shape not an array", p, NN_EFORMAT, "shape");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "5-D shape", p, NN_EFORMAT, "dimensions");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail(ctx, "shape 1e300", p, NN_EFORMAT, "shape");
    write_st_auto(p,
                  "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                  "\"data_offsets\":[0,4]}}",
                  4);
    expect_open_fail(ctx, "shape whose element count overflows", p, NN_EFORMAT, "too many");

    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
    expect_open_fail(ctx, "data_offsets begin > end", p, NN_EFORMAT, "[8,4]");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 200);
    expect_open_fail(ctx, "data_offsets beyond the data", p, NN_EFORMAT,
                     "tensor 't' data_offsets [0,400] exceed the data section (200 bytes)");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    expect_open_fail(ctx, "size not numel*4", p, NN_EFORMAT, "hold 8 bytes but shape [3] of F32 needs 12");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
    expect_open_fail(ctx, "data_offsets with one entry", p, NN_EFORMAT, "data_offsets");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4);
    expect_open_fail(ctx, "negative data_offsets", p, NN_EFORMAT, "data_offsets");
    write_st_auto(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    expect_open_fail(ctx, "missing data_offsets", p, NN_EFORMAT, "data_offsets");
    write_st_auto(p,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12);
    expect_open_fail(ctx, "overlapping tensors", p, NN_EFORMAT, "overlap");
    write_st_auto(p,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                  16);
    expect_open_fail(ctx, "tensor inside another", p, NN_EFORMAT, "overlap");
    write_st_auto(p,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                  16);
    expect_open_fail(ctx, "duplicate tensor name", p, NN_EFORMAT, "twice");
    {
        char name[200];
        memset(name, 'n', 150);
        name[150] = '\0';
        snprintf(h, sizeof h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                 name);
        write_st_auto(p, h, 4);
        expect_open_fail(ctx, "150-byte tensor name", p, NN_EFORMAT, "longer than");
    }

    snprintf(h, sizeof h, "{\"__metadata__\":{\"k\":1},%s}", okt);
    write_st_auto(p, h, 8);
    expect_open_fail(ctx, "metadata with a number value", p, NN_EFORMAT, "'k'");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"k\":null},%s}", okt);
    write_st_auto(p, h, 8);
    expect_open_fail(ctx, "metadata with a null value", p, NN_EFORMAT, "'k'");
    snprintf(h, sizeof h, "{\"__metadata__\":[\"k\"],%s}", okt);
    write_st_auto(p, h, 8);
    expect_open_fail(ctx, "metadata not an object", p, NN_EFORMAT, "__metadata__");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"},%s}", okt);
    write_st_auto(p, h, 8);
    expect_open_fail(ctx, "duplicate metadata key", p, NN_EFORMAT, "twice");

    expect_open_fail(ctx, "nonexistent file", tmp_path("does-not-exist.safetensors"), NN_EIO,
                     NULL);
    expect_open_fail(ctx, "a directory", tmp_dir, NN_EIO, NULL);
    unlink(p);
}

/* Valid but unusual files written by other tools. */
static void test_unusual_valid_files(nn_ctx *ctx) {
    const char *p = tmp_path("odd.safetensors");
    /* a 2-byte hole puts 'u' at an offset that is not float-aligned */
    unsigned char b[256];
    const char *h = "{\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[3,3]}}";
    size_t hl = strlen(h);
    memset(b, 0, sizeof b);
    b[0] = (unsigned char)hl;
    memcpy(b + 8, h, hl);
    float v = 1.5f;
    memcpy(b + 8 + hl + 2, &v, 4);
    write_bytes(p, b, 8 + hl + 6);
    nn_st_file *f = NULL;
    nn_status s = nn_safetensors_open(ctx, p, &f);
    const nn_st_tensor *u = f ? nn_safetensors_find(f, "u") : NULL;
    CHECK(s == NN_OK && u && ((uintptr_t)u->data % 4) == 0 && u->data[0] == 1.5f &&
              nn_safetensors_count(f) == 2,
          "misaligned offset and an empty tensor inside the data are accepted: %s",
          ctx_err(ctx, s));
    nn_safetensors_close(f);

    /* header padded with trailing spaces and unknown top-level metadata */
    write_st_auto(p,
                  "{\"__metadata__\":{},\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[0,8]}}      ",
                  8);
    f = NULL;
    s = nn_safetensors_open(ctx, p, &f);
    CHECK(s == NN_OK && f && nn_safetensors_count(f) == 1 &&
              nn_safetensors_meta(f, "format") == NULL,
          "space padding and empty metadata accepted: %s", ctx_err(ctx, s));
    nn_safetensors_close(f);
    unlink(p);
}

/* Every truncation of a valid file fails cleanly; random byte flips never
 * crash or leak (run under ASan to see it). */
static void test_mutations(nn_ctx *ctx) {
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = (float)i;
    nn_st_tensor t[2] = {{"w", {2, {3, 2}}, v, NN_ST_F32}, {"b", {1, {6}}, v + 6, NN_ST_F32}};
    const char *k[] = {"format"}, *val[] = {"nnopt"};
    const char *src = tmp_path("mut-src.safetensors");
    const char *p = tmp_path("mut.safetensors");
    if (nn_safetensors_write(ctx, src, t, 2, k, val, 1) != NN_OK) {
        CHECK(0, "write mutation source: %s", nn_ctx_error(ctx));
        return;
    }
    unsigned char orig[1024], buf[1024];
    FILE *fp = fopen(src, "rb");
    size_t n = fread(orig, 1, sizeof orig, fp);
    fclose(fp);

    int trunc_ok = 1;
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, orig, len);
        nn_st_file *f = NULL;
        nn_status s = nn_safetensors_open(ctx, p, &f);
        if (s == NN_OK || f || !strstr(nn_ctx_error(ctx), p)) trunc_ok = 0;
        nn_safetensors_close(f);
    }
    CHECK(trunc_ok, "all %zu truncations of a %zu-byte file are rejected", n, n);

    nn_rng rng;
    nn_rng_seed(&rng, 1234, 7);
    int accepted = 0, rejected = 0, msg_ok = 1;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)nn_rng_below(&rng, 3);
        for (int j = 0; j < flips; j++) {
            /* mostly the header, where the parser lives */
            size_t at = nn_rng_below(&rng, 4) ? nn_rng_below(&rng, (uint32_t)(n - 48))
                                              : nn_rng_below(&rng, 8);
            buf[at] = (unsigned char)nn_rng_u32(&rng);
        }
        write_bytes(p, buf, n);
        nn_st_file *f = NULL;
        nn_status s = nn_safetensors_open(ctx, p, &f);
        if (s == NN_OK) {
            accepted++;
            for (int i = 0; i < nn_safetensors_count(f); i++) {
                const nn_st_tensor *x = nn_safetensors_get(f, i);
                volatile float sum = 0; /* reads every element: ASan sees any overrun */
                for (int64_t e = 0; e < nn_shape_numel(&x->shape); e++) sum += x->data[e];
                (void)sum;
            }
        } else {
            rejected++;
            if (!strstr(nn_ctx_error(ctx), p) || strchr(nn_ctx_error(ctx), '\n')) msg_ok = 0;
        }
        nn_safetensors_close(f);
    }
    CHECK(msg_ok && rejected > 0, "3000 random mutations: %d accepted, %d rejected, messages "
          "one line naming the file", accepted, rejected);
    unlink(p);
    unlink(src);
}

/* ------------------------------------------------------------------ checkpoints */

static nn_net *seed_net(nn_ctx *ctx, uint64_t seed) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, SEED_MODEL, "seed", &net) != NN_OK) {
        CHECK(0, "parse the seed model: %s", nn_ctx_error(ctx));
        return NULL;
    }
    nn_rng rng;
    nn_rng_seed(&rng, seed, 0);
    nn_net_init_params(net, &rng);
    return net;
}

static int params_equal(nn_net *a, nn_net *b) {
    return nn_net_num_params(a) == nn_net_num_params(b) &&
           memcmp(nn_net_params(a), nn_net_params(b), nn_net_num_params(a) * sizeof(float)) == 0;
}

/* Writes the net's parameters with one changed: skip drops it, new_shape
 * (if not NULL) replaces its shape, and extra adds a tensor. */
static nn_status write_variant(nn_ctx *ctx, const char *path, nn_net *net, const char *target,
                               int skip, const nn_shape *new_shape, const char *extra) {
    int np = nn_net_num_param_tensors(net);
    nn_st_tensor *t = calloc((size_t)np + 1, sizeof *t);
    float *big = calloc(128 * 1568, sizeof(float));
    int n = 0;
    for (int i = 0; i < np; i++) {
        const nn_param_info *info = nn_net_param_info(net, i);
        if (skip && strcmp(info->name, target) == 0) continue;
        snprintf(t[n].name, sizeof t[n].name, "%s", info->name);
        t[n].shape = info->shape;
        t[n].data = nn_net_params(net) + info->offset;
        if (new_shape && strcmp(info->name, target) == 0) {
            t[n].shape = *new_shape;
            t[n].data = big;
        }
        n++;
    }
    if (extra) {
        snprintf(t[n].name, sizeof t[n].name, "%s", extra);
        t[n].shape = (nn_shape){1, {4}};
        t[n].data = big;
        n++;
    }
    nn_status s = nn_safetensors_write(ctx, path, t, n, NULL, NULL, 0);
    free(t);
    free(big);
    return s;
}

static void expect_load_fail(nn_ctx *ctx, const char *what, const char *path, nn_net *net,
                             nn_optimizer *opt, nn_train_state *st, const char *substr) {
    size_t n = nn_net_num_params(net);
    float *before = malloc(n * sizeof(float));
    memcpy(before, nn_net_params(net), n * sizeof(float));
    nn_ctx_clear_error(ctx);
    nn_status s = nn_checkpoint_load(ctx, path, net, opt, st);
    const char *msg = nn_ctx_error(ctx);
    CHECK(s != NN_OK && strstr(msg, path) && strstr(msg, substr) &&
              memcmp(before, nn_net_params(net), n * sizeof(float)) == 0,
          "checkpoint %s rejected, params untouched: %s", what, msg);
    free(before);
}

/* Copies checkpoint src to dst with metadata key set to val (NULL drops it)
 * and without tensor drop (if not NULL). */
static void rewrite(nn_ctx *ctx, const char *src, const char *dst, const char *key,
                    const char *val, const char *drop) {
    static const char *const known[] = {
        "format", "format_version", "nnopt_version", "optimizer", "optimizer_steps", "lr",
        "momentum", "dampening", "weight_decay", "nesterov", "epoch", "step",
        "batch_in_epoch", "seen", "seed", "loss_sum", "rng_state", "rng_inc"};
    const int nk = (int)(sizeof known / sizeof known[0]);
    const char *keys[32], *vals[32];
    int m = 0;
    nn_st_file *f = NULL;
    if (nn_safetensors_open(ctx, src, &f) != NN_OK) return;
    for (int i = 0; i < nk; i++) {
        const char *v = strcmp(known[i], key) == 0 ? val : nn_safetensors_meta(f, known[i]);
        if (v) keys[m] = known[i], vals[m++] = v;
    }
    int n = 0;
    nn_st_tensor *t = malloc((size_t)nn_safetensors_count(f) * sizeof *t);
    for (int i = 0; i < nn_safetensors_count(f); i++)
        if (!drop || strcmp(nn_safetensors_get(f, i)->name, drop) != 0)
            t[n++] = *nn_safetensors_get(f, i);
    nn_safetensors_write(ctx, dst, t, n, keys, vals, m);
    free(t);
    nn_safetensors_close(f);
}

static void test_checkpoint_weights(nn_ctx *ctx) {
    nn_net *a = seed_net(ctx, 1), *b = seed_net(ctx, 2);
    if (!a || !b) {
        nn_net_free(a);
        nn_net_free(b);
        return;
    }
    static const struct {
        const char *name;
        int ndim;
        int64_t d[4];
    } want[] = {{"conv1.weight", 4, {16, 1, 3, 3}}, {"conv1.bias", 1, {16}},
                {"conv2.weight", 4, {32, 16, 3, 3}}, {"conv2.bias", 1, {32}},
                {"fc1.weight", 2, {128, 1568}},     {"fc1.bias", 1, {128}},
                {"fc2.weight", 2, {10, 128}},       {"fc2.bias", 1, {10}}};
    const char *path = tmp_path("weights.safetensors");
    nn_status s = nn_checkpoint_save(ctx, path, a, NULL, NULL);
    CHECK(s == NN_OK, "save seed-model weights: %s", ctx_err(ctx, s));

    nn_st_file *f = NULL;
    s = nn_safetensors_open(ctx, path, &f);
    CHECK(s == NN_OK && f && nn_safetensors_count(f) == 8, "weights file holds 8 tensors: %s",
          ctx_err(ctx, s));
    if (f) {
        int names_ok = nn_safetensors_count(f) == 8;
        for (int i = 0; names_ok && i < 8; i++) {
            const nn_st_tensor *t = nn_safetensors_get(f, i);
            names_ok = strcmp(t->name, want[i].name) == 0 &&
                       shape_is(&t->shape, want[i].ndim, want[i].d[0], want[i].d[1],
                                want[i].d[2], want[i].d[3]);
        }
        CHECK(names_ok, "tensors are conv1.weight [16,1,3,3] ... fc2.bias [10], in order");
        const char *fmt = nn_safetensors_meta(f, "format");
        const char *ver = nn_safetensors_meta(f, "format_version");
        const char *nv = nn_safetensors_meta(f, "nnopt_version");
        CHECK(fmt && ver && nv && !strcmp(fmt, "nnopt") && !strcmp(ver, "1") &&
                  !strcmp(nv, NN_VERSION) && !nn_safetensors_meta(f, "optimizer") &&
                  !nn_safetensors_meta(f, "epoch"),
              "metadata: format nnopt, format_version 1, nnopt_version; no resume fields");
        nn_safetensors_close(f);
    }

    CHECK(!params_equal(a, b), "two seeds give different parameters");
    s = nn_checkpoint_load(ctx, path, b, NULL, NULL);
    CHECK(s == NN_OK && params_equal(a, b), "load restores parameters bit-identically: %s",
          ctx_err(ctx, s));

    nn_net *c = seed_net(ctx, 3);
    const char *bad = tmp_path("bad-ckpt.safetensors");
    write_variant(ctx, bad, a, "fc2.bias", 1, NULL, NULL);
    expect_load_fail(ctx, "missing fc2.bias", bad, c, NULL, NULL, "missing tensor 'fc2.bias'");
    nn_shape wrong = {2, {128, 1500}};
    write_variant(ctx, bad, a, "fc1.weight", 0, &wrong, NULL);
    expect_load_fail(ctx, "with fc1.weight 128x1500", bad, c, NULL, NULL,
                     "tensor 'fc1.weight' has shape 128x1500, model expects 128x1568");
    write_variant(ctx, bad, a, "", 0, NULL, "fc3.weight");
    expect_load_fail(ctx, "with an extra tensor", bad, c, NULL, NULL,
                     "unexpected tensor 'fc3.weight' (not in the model)");
    write_bytes(bad, "garbage", 7);
    expect_load_fail(ctx, "that is not safetensors", bad, c, NULL, NULL, "too short");
    expect_load_fail(ctx, "that does not exist", tmp_path("none.safetensors"), c, NULL, NULL,
                     "cannot open");

    nn_optim_config cfg = {.kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.9f,
                           .dampening = 0.0f, .weight_decay = 0.0f, .nesterov = 0};
    nn_optimizer *opt = NULL;
    if (nn_optim_new(ctx, &cfg, nn_net_num_params(c), &opt) == NN_OK) {
        expect_load_fail(ctx, "without optimizer state, loaded for resume", path, c, opt, NULL,
                         "not a resume checkpoint (no optimizer state)");
        nn_optim_free(opt);
    }
    s = nn_checkpoint_save(ctx, tmp_path("no-dir/x.safetensors"), a, NULL, NULL);
    CHECK(s == NN_EIO, "save into a missing directory fails with NN_EIO: %s", nn_ctx_error(ctx));

    unlink(bad);
    unlink(path);
    nn_net_free(a);
    nn_net_free(b);
    nn_net_free(c);
}

static void test_checkpoint_resume(nn_ctx *ctx) {
    nn_net *a = seed_net(ctx, 11), *b = seed_net(ctx, 12);
    nn_optim_config cfg = {.kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.9f,
                           .dampening = 0.0f, .weight_decay = 0.0f, .nesterov = 0};
    nn_optimizer *oa = NULL, *ob = NULL;
    if (!a || !b || nn_optim_new(ctx, &cfg, nn_net_num_params(a), &oa) != NN_OK ||
        nn_optim_new(ctx, &cfg, nn_net_num_params(b), &ob) != NN_OK) {
        CHECK(0, "set up nets and SGD optimizers: %s", nn_ctx_error(ctx));
        goto out;
    }
    size_t n = nn_net_num_params(a);
    const char *path = tmp_path("resume.safetensors");
    const char *sname = NULL;

    /* steps 0: no state tensors, steps restored as 0 */
    nn_status s = nn_checkpoint_save(ctx, path, a, oa, NULL);
    nn_st_file *f = NULL;
    if (s == NN_OK) s = nn_safetensors_open(ctx, path, &f);
    CHECK(s == NN_OK && f && nn_safetensors_count(f) == 8 &&
              nn_safetensors_meta(f, "optimizer_steps") &&
              !strcmp(nn_safetensors_meta(f, "optimizer_steps"), "0") &&
              !strcmp(nn_safetensors_meta(f, "optimizer"), "sgd"),
          "optimizer with 0 steps: no state tensors, optimizer_steps \"0\": %s",
          ctx_err(ctx, s));
    nn_safetensors_close(f);
    nn_optim_set_steps(ob, 5);
    s = nn_checkpoint_load(ctx, path, b, ob, NULL);
    CHECK(s == NN_OK && nn_optim_steps(ob) == 0, "loading it sets the step count to 0: %s",
          ctx_err(ctx, s));

    /* steps 7 with a recognizable momentum buffer */
    nn_optim_set_steps(oa, 7);
    float *ma = nn_optim_state(oa, 0, &sname); /* (num_params) */
    CHECK(nn_optim_num_states(oa) == 1 && ma && sname && !strcmp(sname, "momentum_buffer"),
          "SGD with momentum has one state, momentum_buffer");
    if (!ma) goto out;
    nn_rng rng;
    nn_rng_seed(&rng, 99, 3);
    for (size_t i = 0; i < n; i++) ma[i] = nn_rng_uniform(&rng) - 0.5f;
    nn_train_state sa = {.epoch = 3,
                         .step = 7,
                         .batch_in_epoch = 2,
                         .loss_sum = 123.456789012345678 / 3.0,
                         .seen = 16,
                         .seed = UINT64_MAX,
                         .rng = {0}};
    nn_rng_seed(&sa.rng, 5, 9);
    nn_rng_u32(&sa.rng);
    s = nn_checkpoint_save(ctx, path, a, oa, &sa);
    CHECK(s == NN_OK, "save resume checkpoint: %s", ctx_err(ctx, s));

    f = NULL;
    if (nn_safetensors_open(ctx, path, &f) == NN_OK) {
        const nn_st_tensor *m = nn_safetensors_find(f, "optimizer.fc1.weight.momentum_buffer");
        const char *lr = nn_safetensors_meta(f, "lr"), *mo = nn_safetensors_meta(f, "momentum");
        const char *ls = nn_safetensors_meta(f, "loss_sum");
        CHECK(nn_safetensors_count(f) == 16 && m && shape_is(&m->shape, 2, 128, 1568, 0, 0),
              "16 tensors, optimizer.fc1.weight.momentum_buffer [128,1568]");
        CHECK(lr && mo && !strcmp(lr, "0.00999999978") && !strcmp(mo, "0.899999976") &&
                  nn_safetensors_meta(f, "nesterov") && nn_safetensors_meta(f, "dampening") &&
                  nn_safetensors_meta(f, "weight_decay"),
              "optimizer config metadata (lr %s, momentum %s)", lr ? lr : "-", mo ? mo : "-");
        CHECK(ls && strtod(ls, NULL) == sa.loss_sum &&
                  !strcmp(nn_safetensors_meta(f, "seed"), "18446744073709551615"),
              "loss_sum %s and seed as exact decimals", ls ? ls : "-");
        nn_safetensors_close(f);
    }

    nn_train_state sb;
    memset(&sb, 0xab, sizeof sb); /* every field the file restores is overwritten */
    sb.best = sb.ema = NULL;      /* the caller's: where copies would go, none here */
    s = nn_checkpoint_load(ctx, path, b, ob, &sb);
    float *mb = nn_optim_state(ob, 0, NULL);
    CHECK(s == NN_OK, "load resume checkpoint: %s", ctx_err(ctx, s));
    CHECK(params_equal(a, b), "params bit-identical after resume");
    CHECK(mb && memcmp(ma, mb, n * sizeof(float)) == 0, "momentum buffer bit-identical");
    CHECK(nn_optim_steps(ob) == 7, "optimizer steps restored (%lld)",
          (long long)nn_optim_steps(ob));
    CHECK(sb.epoch == 3 && sb.step == 7 && sb.batch_in_epoch == 2 && sb.seen == 16 &&
              sb.seed == UINT64_MAX && sb.loss_sum == sa.loss_sum &&
              sb.rng.state == sa.rng.state && sb.rng.inc == sa.rng.inc,
          "train state restored exactly (epoch, step, batch, seen, seed, loss_sum, rng)");

    /* the resumed RNG continues the same stream */
    nn_rng ra = sa.rng, rb = sb.rng;
    int same = 1;
    for (int i = 0; i < 100; i++) same &= nn_rng_u32(&ra) == nn_rng_u32(&rb);
    CHECK(same, "restored RNG continues the same sequence");

    /* weights only from a resume checkpoint */
    nn_net *c = seed_net(ctx, 13);
    if (c) {
        s = nn_checkpoint_load(ctx, path, c, NULL, NULL);
        CHECK(s == NN_OK && params_equal(a, c), "resume checkpoint loads as weights only: %s",
              ctx_err(ctx, s));
        nn_net_free(c);
    }

    /* a resume checkpoint without train state, loaded with st */
    const char *p2 = tmp_path("resume-nost.safetensors");
    nn_checkpoint_save(ctx, p2, a, oa, NULL);
    expect_load_fail(ctx, "without train state, loaded with st", p2, b, ob, &sb,
                     "metadata 'epoch' is missing");
    /* damaged metadata: each error names the key */
    static const struct {
        const char *key, *val, *msg;
    } bad[] = {{"epoch", "1x", "metadata 'epoch' is '1x'"},
               {"seen", "-3", "metadata 'seen' is '-3'"},
               {"rng_state", "18446744073709551616", "metadata 'rng_state'"},
               {"rng_inc", "4", "metadata 'rng_inc' is even"},
               {"loss_sum", " 1.5", "metadata 'loss_sum'"},
               {"loss_sum", "1.5e", "metadata 'loss_sum'"},
               {"seed", NULL, "metadata 'seed' is missing"},
               {"optimizer_steps", "", "metadata 'optimizer_steps' is ''"},
               {"optimizer", "adam", "checkpoint optimizer is 'adam'"},
               {"optimizer", NULL, "not a resume checkpoint"},
               {"format_version", "2", "format_version '2' is not supported"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "with %s = %s%s%s", bad[i].key, bad[i].val ? "'" : "",
                 bad[i].val ? bad[i].val : "(none)", bad[i].val ? "'" : "");
        rewrite(ctx, path, p2, bad[i].key, bad[i].val, NULL);
        int64_t steps = nn_optim_steps(ob);
        expect_load_fail(ctx, what, p2, b, ob, &sb, bad[i].msg);
        CHECK(nn_optim_steps(ob) == steps, "  ... optimizer step count untouched");
    }
    rewrite(ctx, path, p2, "", NULL, "optimizer.conv2.bias.momentum_buffer");
    expect_load_fail(ctx, "without one momentum tensor", p2, b, ob, &sb,
                     "missing tensor 'optimizer.conv2.bias.momentum_buffer'");
    unlink(p2);

    /* an optimizer without momentum has no state, so the momentum tensors are unexpected */
    nn_optim_config plain = {.kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.0f,
                             .dampening = 0.0f, .weight_decay = 0.0f, .nesterov = 0};
    nn_optimizer *op = NULL;
    if (nn_optim_new(ctx, &plain, n, &op) == NN_OK) {
        expect_load_fail(ctx, "with momentum, loaded into momentum-free SGD", path, b, op, NULL,
                         "unexpected tensor 'optimizer.");
        nn_optim_free(op);
    }
    unlink(path);

out:
    nn_optim_free(oa);
    nn_optim_free(ob);
    nn_net_free(a);
    nn_net_free(b);
}

int main(void) {
    tmp_dir_create("st");
    nn_ctx *ctx = test_ctx_new(1);
    if (!ctx) return 2;

    test_round_trip(ctx);
    test_atomic_write(ctx);
    test_hostile_files(ctx);
    test_unusual_valid_files(ctx);
    test_mutations(ctx);
    test_checkpoint_weights(ctx);
    test_checkpoint_resume(ctx);

    nn_ctx_free(ctx);
    remove_tree(tmp_dir);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
