/*
 * test_st_torch.c - safetensors files written by the real `safetensors`
 * package (safetensors.torch.save_file) load into nnopt, and nnopt's
 * checkpoints keep PyTorch's dtypes. Fixtures from scripts/make_st_fixtures.py:
 *   - st_dtypes: F16, BF16, F64, I32 and I64 tensors read as float32, bit for
 *     bit as PyTorch's .to(torch.float32) (rounding ties, overflow,
 *     subnormals, signed zeros, NaN);
 *   - st_torch_bn: the state_dict of tests/fixtures/bn_tiny.nn trained 3 steps
 *     in PyTorch (I64 num_batches_tracked = 3) loads with nn_checkpoint_load
 *     and gives PyTorch's eval-mode logits;
 *   - nnopt saves num_batches_tracked as I64 and reads it back; F32 counters
 *     (nnopt's checkpoints before) still load, non-integer counts do not;
 *   - the writer's I64 checks.
 */
#include "nnopt.h"
#include "test_util.h"

#include <stdint.h>

#define FIXTURES NN_SOURCE_DIR "/tests/fixtures/"
#define EVAL_N 2     /* images in the logits fixture */
#define EVAL_STREAM 200
#define EVAL_SCALE 1.5f

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ------------------------------------------------------------ dtypes */

static void test_dtypes(nn_ctx *ctx) {
    nn_st_file *f = NULL;
    nn_status s = nn_safetensors_open(ctx, FIXTURES "st_dtypes.safetensors", &f);
    check(s == NN_OK, "open st_dtypes.safetensors (F16, BF16, F64, I32, I64 by save_file)", "%s",
          ctx_err(ctx, s));
    FILE *txt = fopen(FIXTURES "st_dtypes.txt", "r");
    check(txt != NULL, "open st_dtypes.txt", NULL);
    if (s != NN_OK || !txt) {
        if (txt) fclose(txt);
        nn_safetensors_close(f);
        return;
    }
    char line[4096];
    int tensors = 0;
    while (fgets(line, sizeof line, txt)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[64], dtype[16];
        int ndim, used, n;
        const char *p = line;
        if (sscanf(p, "%63s %15s %d%n", name, dtype, &ndim, &used) != 3 || ndim < 0 ||
            ndim > NN_MAX_DIMS) {
            check(0, "st_dtypes.txt line", "%s", line);
            break;
        }
        p += used;
        nn_shape want = {ndim, {0}};
        for (int d = 0; d < ndim; d++) {
            long long v;
            sscanf(p, "%lld%n", &v, &used);
            want.dim[d] = v;
            p += used;
        }
        sscanf(p, "%d%n", &n, &used);
        p += used;
        const nn_st_tensor *t = nn_safetensors_find(f, name);
        int shape_ok = t && t->shape.ndim == ndim && nn_shape_numel(&t->shape) == n;
        for (int d = 0; t && shape_ok && d < ndim; d++) shape_ok = t->shape.dim[d] == want.dim[d];
        int bad = -1;
        uint32_t got = 0, exp = 0;
        for (int i = 0; shape_ok && i < n; i++) {
            unsigned v;
            sscanf(p, "%x%n", &v, &used);
            p += used;
            if (bad < 0 && f32_bits(t->data[i]) != v) bad = i, got = f32_bits(t->data[i]), exp = v;
        }
        const char *dn = t ? nn_st_dtype_name(t->dtype) : NULL;
        char why[96] = "";
        if (!shape_ok) snprintf(why, sizeof why, ": %s", t ? "wrong shape" : "missing");
        else if (bad >= 0)
            snprintf(why, sizeof why, ": element %d is 0x%08x, torch 0x%08x", bad, got, exp);
        check(shape_ok && dn && !strcmp(dn, dtype) && bad < 0,
              "tensor read as float32 bit for bit as torch", "%s %s (%d values)%s", name, dtype, n,
              why);
        tensors++;
    }
    fclose(txt);
    check(tensors == nn_safetensors_count(f) && tensors >= 7, "every dtype tensor checked",
          "%d of %d", tensors, nn_safetensors_count(f));
    nn_safetensors_close(f);
}

/* ------------------------------------------------------------ a BN state_dict */

/* bn_tiny.nn planned for EVAL_N images, or NULL after a failed check. */
static nn_net *load_model(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status s = nn_net_load(ctx, FIXTURES "bn_tiny.nn", &net);
    if (s == NN_OK) s = nn_net_plan(net, EVAL_N);
    if (s != NN_OK) {
        check(0, "load bn_tiny.nn", "%s", nn_ctx_error(ctx));
        nn_net_free(net);
        return NULL;
    }
    return net;
}

/* Reads "<tag> <count> <values>" from the text fixture into a new array. */
static float *read_tagged(const char *path, const char *tag, int want) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char word[64];
    float *v = NULL;
    while (fscanf(f, "%63s", word) == 1) {
        if (word[0] == '#') {
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        int n;
        if (strcmp(word, tag) != 0 || fscanf(f, "%d", &n) != 1 || n != want) continue;
        v = fvec((size_t)n);
        for (int i = 0; i < n; i++)
            if (fscanf(f, "%f", &v[i]) != 1) {
                free(v);
                v = NULL;
                break;
            }
        break;
    }
    fclose(f);
    return v;
}

/* 1 if every "*.num_batches_tracked" buffer of net holds count. */
static int counters_are(nn_net *net, float count, int *found) {
    int ok = 1;
    *found = 0;
    for (int b = 0; b < nn_net_num_buffer_tensors(net); b++) {
        const nn_param_info *info = nn_net_buffer_info(net, b);
        if (!strstr(info->name, ".num_batches_tracked")) continue;
        (*found)++;
        ok &= nn_net_buffers(net)[info->offset] == count;
    }
    return ok;
}

/* Max |logit - torch's| over the fixture's images, in eval mode; INFINITY on error. */
static double logits_error(nn_net *net, const float *want) {
    int per = 28 * 28, classes = nn_net_num_classes(net);
    float *x = fvec((size_t)EVAL_N * per); /* (EVAL_N, 1, 28, 28) */
    for (int i = 0; i < EVAL_N * per; i++) x[i] = hash_signed(EVAL_STREAM, (uint32_t)i, EVAL_SCALE);
    nn_net_set_training(net, 0);
    nn_status s = nn_net_forward(net, x, NULL, EVAL_N, NULL);
    nn_net_set_training(net, 1);
    free(x);
    if (s != NN_OK) return INFINITY;
    const float *y = nn_net_logits(net); /* (EVAL_N, classes) */
    double e = 0.0;
    for (int i = 0; i < EVAL_N * classes; i++) {
        double d = fabs((double)y[i] - want[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
    }
    return e;
}

/* Rewrites src as dst with every tensor in the given dtype for counters
 * (num_batches_tracked) and F32 for the rest, a value set on the counters. */
static nn_status rewrite_counters(nn_ctx *ctx, const char *src, const char *dst, nn_st_dtype dt,
                                  const float *value) {
    nn_st_file *f = NULL;
    nn_status s = nn_safetensors_open(ctx, src, &f);
    if (s != NN_OK) return s;
    int n = nn_safetensors_count(f);
    nn_st_tensor *t = xmalloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++) {
        t[i] = *nn_safetensors_get(f, i);
        int counter = strstr(t[i].name, ".num_batches_tracked") != NULL;
        t[i].dtype = counter ? dt : NN_ST_F32;
        if (counter && value) t[i].data = value;
    }
    s = nn_safetensors_write(ctx, dst, t, n, NULL, NULL, 0);
    free(t);
    nn_safetensors_close(f);
    return s;
}

static void test_torch_bn(nn_ctx *ctx) {
    const char *fixture = FIXTURES "st_torch_bn.safetensors";
    nn_net *net = load_model(ctx), *back = load_model(ctx);
    float *want = read_tagged(FIXTURES "st_torch_bn.txt", "logits", EVAL_N * 10);
    check(want != NULL, "st_torch_bn.txt logits", NULL);
    if (!net || !back || !want) goto done;

    /* PyTorch's state_dict, as save_file wrote it, loads (weights and --init) */
    nn_status s = nn_checkpoint_load(ctx, fixture, net, NULL, NULL);
    check(s == NN_OK, "load a torch BN state_dict (I64 num_batches_tracked)", "%s",
          ctx_err(ctx, s));
    int found = 0, counted = s == NN_OK && counters_are(net, 3.0f, &found);
    check(counted && found == 3, "num_batches_tracked = 3 in all 3 batch norms", "found %d",
          found);
    double e = s == NN_OK ? logits_error(net, want) : INFINITY;
    check(e < 1e-5, "eval-mode logits match PyTorch's", "max |diff| %.3g", e);

    /* nnopt's checkpoint: I64 counters, the rest F32; reads back the same */
    const char *saved = tmp_path("bn_tiny.st");
    s = nn_checkpoint_save(ctx, saved, net, NULL, NULL);
    check(s == NN_OK, "save the loaded model", "%s", ctx_err(ctx, s));
    nn_st_file *f = NULL;
    if (s == NN_OK) s = nn_safetensors_open(ctx, saved, &f);
    if (s == NN_OK) {
        int i64 = 0, f32 = 0, ok = 1;
        for (int i = 0; i < nn_safetensors_count(f); i++) {
            const nn_st_tensor *t = nn_safetensors_get(f, i);
            if (strstr(t->name, ".num_batches_tracked")) {
                i64 += t->dtype == NN_ST_I64;
                ok &= t->shape.ndim == 0 && t->data[0] == 3.0f;
            } else {
                f32 += t->dtype == NN_ST_F32;
            }
        }
        check(ok && i64 == 3 && f32 == nn_safetensors_count(f) - 3,
              "saved num_batches_tracked are I64 scalars = 3, the rest F32", "%d I64, %d F32 of %d",
              i64, f32, nn_safetensors_count(f));
        nn_safetensors_close(f);
    }
    if (s == NN_OK) s = nn_checkpoint_load(ctx, saved, back, NULL, NULL);
    check(s == NN_OK &&
              !memcmp(nn_net_params(back), nn_net_params(net),
                      nn_net_num_params(net) * sizeof(float)) &&
              !memcmp(nn_net_buffers(back), nn_net_buffers(net),
                      nn_net_num_buffers(net) * sizeof(float)),
          "nnopt's checkpoint reads back bit for bit", "%s", ctx_err(ctx, s));

    /* nnopt's checkpoints before I64 counters had F32 ones: still load */
    const char *old = tmp_path("old_f32.st");
    s = rewrite_counters(ctx, fixture, old, NN_ST_F32, NULL);
    if (s == NN_OK) s = nn_checkpoint_load(ctx, old, back, NULL, NULL);
    counted = s == NN_OK && counters_are(back, 3.0f, &found);
    check(counted && found == 3,
          "an F32 num_batches_tracked (older nnopt checkpoints) still loads", "%s",
          ctx_err(ctx, s));

    /* a counter that is no count is refused, and nothing changes */
    const float bad[] = {2.5f, -1.0f, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.st", i);
        const char *p = tmp_path(name);
        s = rewrite_counters(ctx, fixture, p, NN_ST_F32, &bad[i]);
        float before = nn_net_params(back)[0];
        nn_status l = s == NN_OK ? nn_checkpoint_load(ctx, p, back, NULL, NULL) : NN_OK;
        /* (NaN and infinity may be refused by a finiteness check first) */
        int named = i >= 2 || strstr(nn_ctx_error(ctx), "not a count");
        counted = counters_are(back, 3.0f, &found);
        check(s == NN_OK && l == NN_EFORMAT && named && nn_net_params(back)[0] == before &&
                  counted,
              "num_batches_tracked that is not a count is refused", "%g: %s", (double)bad[i],
              nn_ctx_error(ctx));
    }

done:
    free(want);
    nn_net_free(net);
    nn_net_free(back);
}

/* ------------------------------------------------------------ writer */

static void test_write_i64(nn_ctx *ctx) {
    const float ok_vals[] = {0.0f, -1.0f, 16777216.0f, 0x1p40f, -0x1p63f, 0x1p62f, -0.0f};
    nn_st_tensor t = {"n", {1, {7}}, ok_vals, NN_ST_I64};
    const char *p = tmp_path("i64.st");
    nn_status s = nn_safetensors_write(ctx, p, &t, 1, NULL, NULL, 0);
    nn_st_file *f = NULL;
    if (s == NN_OK) s = nn_safetensors_open(ctx, p, &f);
    const nn_st_tensor *r = s == NN_OK ? nn_safetensors_find(f, "n") : NULL;
    int same = r && r->dtype == NN_ST_I64 && nn_shape_numel(&r->shape) == 7;
    for (int i = 0; same && i < 7; i++) same = r->data[i] == ok_vals[i];
    check(same, "I64 write and read back (0, -1, 2^24, 2^40, -2^63, 2^62, -0)", "%s",
          ctx_err(ctx, s));
    nn_safetensors_close(f);

    /* the raw bytes are little-endian int64 */
    FILE *fp = fopen(p, "rb");
    unsigned char len8[8], raw[8];
    uint64_t hlen = 0;
    int raw_ok = fp && fread(len8, 1, 8, fp) == 8;
    for (int i = 0; raw_ok && i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    raw_ok = raw_ok && fseek(fp, (long)(8 + hlen + 8), SEEK_SET) == 0 && fread(raw, 1, 8, fp) == 8;
    for (int i = 0; raw_ok && i < 8; i++) raw_ok = raw[i] == 0xff; /* -1 */
    if (fp) fclose(fp);
    check(raw_ok, "I64 data is little-endian two's complement", NULL);

    const float bad[] = {2.5f, NAN, INFINITY, 0x1p63f, -0x1p64f};
    for (int i = 0; i < 5; i++) {
        nn_st_tensor b = {"c", {0, {0}}, &bad[i], NN_ST_I64};
        s = nn_safetensors_write(ctx, tmp_path("bad_i64.st"), &b, 1, NULL, NULL, 0);
        check(s == NN_EINVAL && strstr(nn_ctx_error(ctx), "'c'"),
              "I64 write of a value that is no int64 refused", "%g: %s", (double)bad[i],
              ctx_err(ctx, s));
    }
    const float one = 1.0f;
    nn_st_tensor h = {"h", {0, {0}}, &one, NN_ST_F16};
    s = nn_safetensors_write(ctx, tmp_path("f16.st"), &h, 1, NULL, NULL, 0);
    check(s == NN_EINVAL && strstr(nn_ctx_error(ctx), "F16"), "F16 write refused (F32, I64 only)",
          "%s", ctx_err(ctx, s));
    check(nn_st_dtype_name(NN_ST_BF16) && !strcmp(nn_st_dtype_name(NN_ST_BF16), "BF16") &&
              nn_st_dtype_name(NN_ST_NUM_DTYPES) == NULL,
          "nn_st_dtype_name", NULL);
}

int main(void) {
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return 2;
    tmp_dir_create("st_torch");
    test_dtypes(ctx);
    test_torch_bn(ctx);
    test_write_i64(ctx);
    remove_tree(tmp_dir);
    nn_ctx_free(ctx);
    return test_summary();
}
