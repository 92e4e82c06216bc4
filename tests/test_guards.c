/*
 * test_guards.c - nothing non-finite or absurd passes through a checkpoint:
 * nn_checkpoint_save refuses NaN/Inf parameters, buffers, optimizer state and
 * train state (and leaves the previous file as it was); nn_checkpoint_load
 * refuses the same in a file, and counters near INT64_MAX, naming the file
 * and the tensor or field. Sizes: nn_shape_numel saturates, and model keys
 * beyond their limits are refused with the limit in the message. Memory:
 * models, plans and optimizer state beyond the cap (nn_ctx_set_max_memory)
 * or the memory available are refused before anything is allocated. Files:
 * readers refuse FIFOs and directories without blocking; IDX files whose
 * header claims more data than the file can hold fail before a buffer grows.
 */
#include "nnopt.h"

#include "test_util.h"

#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <zlib.h>

/* conv + batch norm + linear: parameters, buffers (running statistics). */
static const char *const BN_MODEL = "input shape=1x6x6\n"
                                    "conv2d name=conv out=4 kernel=3\n"
                                    "batchnorm name=bn\n"
                                    "relu\n"
                                    "flatten\n"
                                    "linear name=fc out=3\n"
                                    "softmax_ce\n";

static nn_net *bn_net(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status s = nn_net_parse(ctx, BN_MODEL, "bn", &net);
    check(s == NN_OK, "parse the batchnorm model", "%s", ctx_err(ctx, s));
    if (!net) return NULL;
    nn_rng rng;
    nn_rng_seed(&rng, 7, 0);
    nn_net_init_params(net, &rng);
    return net;
}

/* The whole file as bytes (n in *len); NULL if unreadable. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = xmalloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static int same_file(const char *path, const char *bytes, size_t len) {
    size_t n = 0;
    char *now = slurp(path, &n);
    int same = now && n == len && memcmp(now, bytes, len) == 0;
    free(now);
    return same;
}

/* A state whose every field is plausible. */
static nn_train_state good_state(void) {
    nn_train_state st = {.epoch = 2, .step = 10, .batch_in_epoch = 3, .loss_sum = 12.5,
                         .seen = 24, .seed = 1, .best_val = INFINITY, .bad_epochs = 0};
    nn_rng_seed(&st.rng, 1, 2);
    st.sched.best = INFINITY;
    st.sched.plateau_lr = 0.01f;
    return st;
}

/* Saving with one value spoiled fails with status want, names the path and
 * needle, and leaves the good checkpoint at path byte for byte. */
static void expect_save_refused(nn_ctx *ctx, const char *what, const char *path, nn_net *net,
                                nn_optimizer *opt, const nn_train_state *st, nn_status want,
                                const char *needle) {
    size_t len = 0;
    char *before = slurp(path, &len);
    nn_ctx_clear_error(ctx);
    nn_status s = nn_checkpoint_save(ctx, path, net, opt, st);
    const char *msg = nn_ctx_error(ctx);
    check(s == want && contains(msg, path) && contains(msg, needle) && !strchr(msg, '\n') &&
              before && same_file(path, before, len),
          what, "status %d, %s", (int)s, msg);
    free(before);
}

static void test_save_refuses(nn_ctx *ctx) {
    nn_net *net = bn_net(ctx);
    nn_optim_config cfg = nn_optim_defaults(NN_OPTIM_SGD);
    cfg.momentum = 0.9f;
    nn_optimizer *opt = NULL;
    if (!net || nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt) != NN_OK) {
        check(0, "set up net and optimizer", "%s", nn_ctx_error(ctx));
        nn_net_free(net);
        return;
    }
    nn_optim_set_steps(opt, 3);
    const char *msname = NULL;
    float *mom = nn_optim_state(opt, 0, &msname); /* (num_params) */
    for (size_t i = 0; mom && i < nn_net_num_params(net); i++) mom[i] = 0.5f;
    char path[256]; /* tmp_path's buffers are reused */
    snprintf(path, sizeof path, "%s", tmp_path("good.st"));
    nn_train_state st = good_state();
    nn_status s = nn_checkpoint_save(ctx, path, net, opt, &st);
    check(s == NN_OK, "save a good resume checkpoint", "%s", ctx_err(ctx, s));

    float *w = nn_net_params(net);
    const nn_param_info *fc = nn_net_param_info(net, nn_net_find_param(net, "fc.weight"));
    float keep = w[fc->offset + 5];
    w[fc->offset + 5] = NAN;
    expect_save_refused(ctx, "save: NaN weight refused, file kept", path, net, opt, &st,
                        NN_ENUMERIC, "'fc.weight'");
    w[fc->offset + 5] = keep;

    float *buf = nn_net_buffers(net);
    const nn_param_info *rv = nn_net_buffer_info(net, nn_net_find_buffer(net, "bn.running_var"));
    keep = buf[rv->offset + 1];
    buf[rv->offset + 1] = INFINITY;
    expect_save_refused(ctx, "save: Inf running variance refused, file kept", path, net, opt,
                        &st, NN_ENUMERIC, "'bn.running_var'");
    buf[rv->offset + 1] = keep;

    if (mom) {
        const nn_param_info *cb = nn_net_param_info(net, nn_net_find_param(net, "conv.bias"));
        mom[cb->offset] = -NAN;
        expect_save_refused(ctx, "save: NaN momentum refused, file kept", path, net, opt, &st,
                            NN_ENUMERIC, "'optimizer.conv.bias.momentum_buffer'");
        mom[cb->offset] = 0.5f;
    }

    nn_train_state bad = st;
    bad.loss_sum = NAN;
    expect_save_refused(ctx, "save: loss_sum NaN refused, file kept", path, net, opt, &bad,
                        NN_ENUMERIC, "loss_sum");
    bad = st;
    bad.step = INT64_MAX;
    expect_save_refused(ctx, "save: step INT64_MAX refused, file kept", path, net, opt, &bad,
                        NN_EINVAL, "'step'");
    bad = st;
    bad.sched.plateau_lr = INFINITY;
    expect_save_refused(ctx, "save: infinite plateau lr refused, file kept", path, net, opt, &bad,
                        NN_ENUMERIC, "sched_plateau_lr");

    /* weights-only saves are checked too */
    const char *wpath = tmp_path("weights.st");
    s = nn_checkpoint_save(ctx, wpath, net, NULL, NULL);
    check(s == NN_OK, "save good weights", "%s", ctx_err(ctx, s));
    w[0] = INFINITY;
    expect_save_refused(ctx, "save: Inf weight refused in a weights-only save", wpath, net, NULL,
                        NULL, NN_ENUMERIC, "'conv.weight'");
    nn_optim_free(opt);
    nn_net_free(net);
}

/* Metadata of a resume checkpoint, for rewriting with one value changed. */
static const char *const META_KEYS[] = {
    "format", "format_version", "nnopt_version", "optimizer", "optimizer_steps", "lr",
    "momentum", "dampening", "weight_decay", "nesterov", "epoch", "step", "batch_in_epoch",
    "seen", "seed", "loss_sum", "rng_state", "rng_inc", "best_val", "bad_epochs",
    "sched_best", "sched_bad_epochs", "sched_cooldown_left", "sched_plateau_lr"};
#define NUM_META_KEYS ((int)(sizeof META_KEYS / sizeof META_KEYS[0]))

/* Copies checkpoint src to dst with metadata key set to val (key NULL: none
 * changed) and, if tensor is not NULL, that tensor's element 0 set to x. */
static void rewrite(nn_ctx *ctx, const char *src, const char *dst, const char *key,
                    const char *val, const char *tensor, float x) {
    nn_st_file *f = NULL;
    if (nn_safetensors_open(ctx, src, &f) != NN_OK) {
        check(0, "reopen the good checkpoint", "%s", nn_ctx_error(ctx));
        return;
    }
    const char *keys[NUM_META_KEYS], *vals[NUM_META_KEYS];
    int m = 0;
    for (int i = 0; i < NUM_META_KEYS; i++) {
        const char *v = key && !strcmp(META_KEYS[i], key) ? val : nn_safetensors_meta(f, META_KEYS[i]);
        if (v) keys[m] = META_KEYS[i], vals[m++] = v;
    }
    const int n = nn_safetensors_count(f);
    nn_st_tensor *t = xmalloc((size_t)n * sizeof *t);
    float *copy = NULL;
    for (int i = 0; i < n; i++) {
        t[i] = *nn_safetensors_get(f, i);
        if (tensor && !strcmp(t[i].name, tensor)) {
            size_t numel = (size_t)nn_shape_numel(&t[i].shape);
            copy = fvec(numel);
            memcpy(copy, t[i].data, numel * sizeof(float));
            copy[0] = x;
            t[i].data = copy;
        }
    }
    nn_status s = nn_safetensors_write(ctx, dst, t, n, keys, vals, m);
    check(s == NN_OK, "write a spoiled variant", "%s %s", dst, ctx_err(ctx, s));
    free(copy);
    free(t);
    nn_safetensors_close(f);
}

/* Loading path fails naming it and needle; net, opt and st stay as they were. */
static void expect_load_refused(nn_ctx *ctx, const char *what, const char *path, nn_net *net,
                                nn_optimizer *opt, nn_train_state *st, const char *needle) {
    size_t n = nn_net_num_params(net), nb = nn_net_num_buffers(net);
    float *p0 = fvec(n), *b0 = fvec(nb);
    memcpy(p0, nn_net_params(net), n * sizeof(float));
    memcpy(b0, nn_net_buffers(net), nb * sizeof(float));
    nn_train_state st0 = st ? *st : (nn_train_state){0};
    int64_t steps0 = opt ? nn_optim_steps(opt) : 0;
    nn_ctx_clear_error(ctx);
    nn_status s = nn_checkpoint_load(ctx, path, net, opt, st);
    const char *msg = nn_ctx_error(ctx);
    int untouched = !memcmp(p0, nn_net_params(net), n * sizeof(float)) &&
                    !memcmp(b0, nn_net_buffers(net), nb * sizeof(float)) &&
                    (!st || !memcmp(&st0, st, sizeof st0)) &&
                    (!opt || nn_optim_steps(opt) == steps0);
    check(s != NN_OK && contains(msg, path) && contains(msg, needle) && untouched, what,
          "%s%s", msg, untouched ? "" : " (state changed)");
    free(p0);
    free(b0);
}

static void test_load_refuses(nn_ctx *ctx) {
    nn_net *a = bn_net(ctx), *b = bn_net(ctx);
    nn_optim_config cfg = nn_optim_defaults(NN_OPTIM_ADAM);
    nn_optimizer *oa = NULL, *ob = NULL;
    if (!a || !b || nn_optim_new(ctx, &cfg, nn_net_num_params(a), &oa) != NN_OK ||
        nn_optim_new(ctx, &cfg, nn_net_num_params(b), &ob) != NN_OK) {
        check(0, "set up nets and optimizers", "%s", nn_ctx_error(ctx));
        goto out;
    }
    nn_optim_set_steps(oa, 4);
    for (int i = 0; i < nn_optim_num_states(oa); i++) {
        float *x = nn_optim_state(oa, i, NULL);
        for (size_t j = 0; x && j < nn_net_num_params(a); j++) x[j] = 0.25f;
    }
    char good[256]; /* tmp_path's buffers are reused */
    snprintf(good, sizeof good, "%s", tmp_path("resume.st"));
    nn_train_state st = good_state();
    nn_status s = nn_checkpoint_save(ctx, good, a, oa, &st);
    check(s == NN_OK, "save a good Adam checkpoint", "%s", ctx_err(ctx, s));
    nn_train_state sb = good_state();
    s = nn_checkpoint_load(ctx, good, b, ob, &sb);
    check(s == NN_OK && sb.step == 10 && nn_optim_steps(ob) == 4,
          "the good checkpoint loads (weights, Adam state, train state)", "%s", ctx_err(ctx, s));

    static const struct {
        const char *what, *tensor;
        float x;
        int resume; /* loaded with optimizer and train state */
        const char *needle;
    } tensors[] = {
        {"load: NaN weight refused (weights only)", "fc.weight", NAN, 0, "'fc.weight'"},
        {"load: Inf bias refused (resume)", "conv.bias", -INFINITY, 1, "'conv.bias'"},
        {"load: NaN running mean refused", "bn.running_mean", NAN, 0, "'bn.running_mean'"},
        {"load: Inf exp_avg_sq refused (resume)", "optimizer.fc.bias.exp_avg_sq", INFINITY, 1,
         "'optimizer.fc.bias.exp_avg_sq'"},
    };
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) {
        const char *path = tmp_path("spoiled.st");
        rewrite(ctx, good, path, NULL, NULL, tensors[i].tensor, tensors[i].x);
        expect_load_refused(ctx, tensors[i].what, path, b, tensors[i].resume ? ob : NULL,
                            tensors[i].resume ? &sb : NULL, tensors[i].needle);
    }
    /* a weights-only load ignores optimizer tensors, however bad */
    rewrite(ctx, good, tmp_path("badopt.st"), NULL, NULL, "optimizer.fc.bias.exp_avg", NAN);
    s = nn_checkpoint_load(ctx, tmp_path("badopt.st"), b, NULL, NULL);
    check(s == NN_OK, "load: weights only ignore the optimizer tensors", "%s", ctx_err(ctx, s));

    static const struct {
        const char *what, *key, *val, *needle;
    } metas[] = {
        {"load: loss_sum nan refused", "loss_sum", "nan", "loss_sum"},
        {"load: loss_sum inf refused", "loss_sum", "inf", "loss_sum"},
        {"load: step near INT64_MAX refused", "step", "9223372036854775806", "'step'"},
        {"load: epoch near INT64_MAX refused", "epoch", "9223372036854775000", "'epoch'"},
        {"load: negative seen refused", "seen", "-3", "'seen'"},
        {"load: optimizer_steps near INT64_MAX refused", "optimizer_steps",
         "9223372036854775807", "optimizer_steps"},
        {"load: best_val nan refused", "best_val", "nan", "best_val"},
        {"load: plateau lr inf refused", "sched_plateau_lr", "inf", "sched_plateau_lr"},
    };
    for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
        const char *path = tmp_path("meta.st");
        rewrite(ctx, good, path, metas[i].key, metas[i].val, NULL, 0.0f);
        expect_load_refused(ctx, metas[i].what, path, b, ob, &sb, metas[i].needle);
    }
out:
    nn_optim_free(oa);
    nn_optim_free(ob);
    nn_net_free(a);
    nn_net_free(b);
}

/* ------------------------------------------------------------------ sizes */

/* Parsing text fails with a message holding every needle (NULL ends them). */
static void expect_parse_error(nn_ctx *ctx, const char *what, const char *text, ...) {
    nn_net *net = NULL;
    nn_ctx_clear_error(ctx);
    nn_status s = nn_net_parse(ctx, text, "limits.nn", &net);
    const char *msg = nn_ctx_error(ctx);
    int ok = s != NN_OK && !net && contains(msg, "limits.nn:");
    va_list ap;
    va_start(ap, text);
    for (const char *n = va_arg(ap, const char *); n; n = va_arg(ap, const char *))
        ok = ok && contains(msg, n);
    va_end(ap);
    check(ok, what, "%s", msg);
    nn_net_free(net);
}

static void test_sizes(nn_ctx *ctx) {
    const int64_t big = (int64_t)1 << 40;
    const nn_shape over = {2, {big, big}}, zero = {3, {big, big, 0}}, neg = {2, {4, -2}};
    const nn_shape fits = {4, {65536, 65536, 1024, 1024}}, scalar = {0, {0}};
    check(nn_shape_numel(&over) == INT64_MAX, "numel: a product beyond int64 saturates", NULL);
    check(nn_shape_numel(&zero) == 0, "numel: a zero size gives 0 whatever the others", NULL);
    check(nn_shape_numel(&neg) == -1, "numel: a negative size gives -1", NULL);
    check(nn_shape_numel(&fits) == (int64_t)1 << 52 && nn_shape_numel(&scalar) == 1,
          "numel: 2^52 and a scalar's 1", NULL);

    expect_parse_error(ctx, "conv2d out=100000 names the limit 65536",
                       "input shape=1x8x8\nconv2d out=100000 kernel=3\nflatten\n"
                       "linear out=2\nsoftmax_ce\n", "out=100000", "65536", NULL);
    expect_parse_error(ctx, "conv2d kernel=2000 names the limit 1024",
                       "input shape=1x8x8\nconv2d out=4 kernel=2000 pad=1000\nflatten\n"
                       "linear out=2\nsoftmax_ce\n", "kernel=2000x2000", "1024", NULL);
    /* 65536 channels x 1024x1024 taps: 2^36 inputs per output, which
     * overflowed the int fan-in (UBSan) and the weight's size */
    expect_parse_error(ctx, "conv2d fan-in of 2^36 refused",
                       "input shape=65536x1x1\nconv2d out=1 kernel=1024 pad=512\nflatten\n"
                       "linear out=2\nsoftmax_ce\n", "68719476736", "inputs per output", NULL);
    expect_parse_error(ctx, "maxpool size=2^31-1 refused (the padded size overflowed)",
                       "input shape=1x8x8\nmaxpool size=2147483647 pad=1073741823\nflatten\n"
                       "linear out=2\nsoftmax_ce\n", "size=2147483647", "65536", NULL);
    expect_parse_error(ctx, "linear out=2^25 names the limit",
                       "input shape=4\nlinear out=33554432\nsoftmax_ce\n", "out=33554432",
                       "16777216", NULL);
}

/* ------------------------------------------------------------------ memory */

/* The model of issue 14: 2^24 inputs into 125 outputs, 2097152125 parameters,
 * 16000 MiB with their gradients. */
static const char *const HUGE_MODEL = "input shape=1x4096x4096\n"
                                      "flatten\n"
                                      "linear name=fc out=125\n"
                                      "softmax_ce\n";

/* Parsing text is refused with NN_ENOMEM, quickly (nothing zero-filled), and
 * a message holding needle. */
static void expect_too_big(nn_ctx *ctx, const char *what, const char *text, const char *needle) {
    nn_net *net = NULL;
    double t0 = nn_wall_time();
    nn_status s = nn_net_parse(ctx, text, "big.nn", &net);
    double dt = nn_wall_time() - t0;
    const char *msg = nn_ctx_error(ctx);
    check(s == NN_ENOMEM && !net && dt < 0.5 && contains(msg, "big.nn: ") &&
              contains(msg, needle) && contains(msg, "MiB"),
          what, "%.3f s: %s", dt, msg);
    nn_net_free(net);
}

static void test_memory(void) {
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return;
    check(nn_ctx_max_memory(ctx) == 0, "no memory cap by default", NULL);
    nn_ctx_set_max_memory(ctx, (uint64_t)1024 << 20);
    expect_too_big(ctx, "issue 14's model refused under a 1024 MiB cap, in milliseconds",
                   HUGE_MODEL, "need 16000.0 MiB, more than the memory limit of 1024.0 MiB");
    nn_ctx_set_max_memory(ctx, 0);
    /* 2^24 x 4096 weights: 512 GiB with their gradients, beyond any test
     * machine's memory */
    expect_too_big(ctx, "a 512 GiB model refused by the memory available, in milliseconds",
                   "input shape=1x4096x4096\nflatten\nlinear out=4096\nsoftmax_ce\n",
                   "of memory available");

    /* the plan: parameters, gradients, activations and workspace together */
    nn_net *net = NULL;
    nn_status s = nn_net_parse(ctx, SEED_MODEL, "seed.nn", &net);
    check(s == NN_OK, "parse the seed model", "%s", ctx_err(ctx, s));
    if (net) {
        nn_ctx_set_max_memory(ctx, (uint64_t)64 << 20);
        s = nn_net_plan(net, 512);
        const char *msg = nn_ctx_error(ctx);
        check(s == NN_ENOMEM && nn_net_planned_bytes(net) == 0 && contains(msg, "seed.nn: ") &&
                  contains(msg, "batch 512 needs") && contains(msg, "limit of 64.0 MiB"),
              "a plan over the cap is refused with its size", "%s", msg);
        s = nn_net_plan(net, 8);
        check(s == NN_OK && nn_net_planned_bytes(net) > 0, "a plan under the cap is made", "%s",
              ctx_err(ctx, s));
        nn_ctx_set_max_memory(ctx, 0);
        s = nn_net_plan(net, 512);
        check(s == NN_OK, "the same plan without the cap is made", "%s", ctx_err(ctx, s));
        nn_net_free(net);
    }

    /* optimizer state beyond the memory available: refused before allocating */
    nn_optimizer *opt = NULL;
    nn_optim_config cfg = nn_optim_defaults(NN_OPTIM_ADAM);
    s = nn_optim_new(ctx, &cfg, (size_t)1 << 40, &opt);
    check(s == NN_ENOMEM && !opt && contains(nn_ctx_error(ctx), "adam") &&
              contains(nn_ctx_error(ctx), "MiB"),
          "8 TiB of Adam state refused with its size", "%s", nn_ctx_error(ctx));
    nn_optim_free(opt);
    nn_ctx_free(ctx);
}

/* ------------------------------------------------------------------ files */

/* Every reader refuses a FIFO (a plain open would block until a writer came:
 * the alarm in main ends the test then) and a directory, naming the file. */
static void test_regular_files(nn_ctx *ctx) {
    char fifo[256], dir[256];
    snprintf(fifo, sizeof fifo, "%s", tmp_path("fifo"));
    snprintf(dir, sizeof dir, "%s", tmp_path("dir"));
    if (mkfifo(fifo, 0600) != 0 || mkdir(dir, 0700) != 0) {
        check(0, "make a FIFO and a directory", "%s", strerror(errno));
        return;
    }
    const char *why = NULL;
    int fd = nn_open_regular(fifo, &why);
    check(fd < 0 && contains(why, "FIFO"), "nn_open_regular refuses a FIFO", "%s", why);
    fd = nn_open_regular(dir, &why);
    check(fd < 0 && contains(why, "directory"), "nn_open_regular refuses a directory", "%s", why);
    fd = nn_open_regular(tmp_path("none"), &why);
    check(fd < 0 && contains(why, "no such file"), "nn_open_regular: a missing file", "%s", why);
    write_bytes(tmp_path("plain"), "abc", 3);
    fd = nn_open_regular(tmp_path("plain"), &why);
    char buf[4] = "";
    check(fd >= 0 && read(fd, buf, 4) == 3 && !memcmp(buf, "abc", 3),
          "nn_open_regular opens a regular file for blocking reads", "%s", why);
    if (fd >= 0) close(fd);

    const char *paths[2] = {fifo, dir};
    for (int i = 0; i < 2; i++) {
        const char *p = paths[i], *kind = i ? "directory" : "FIFO";
        char name[128];
        nn_net *net = NULL;
        nn_status s = nn_net_load(ctx, p, &net);
        snprintf(name, sizeof name, "nn_net_load refuses a %s", kind);
        check(s == NN_EIO && contains(nn_ctx_error(ctx), p) && contains(nn_ctx_error(ctx), kind),
              name, "%s", nn_ctx_error(ctx));
        nn_net_free(net);
        nn_st_file *f = NULL;
        s = nn_safetensors_open(ctx, p, &f);
        snprintf(name, sizeof name, "nn_safetensors_open refuses a %s", kind);
        check(s == NN_EIO && contains(nn_ctx_error(ctx), kind), name, "%s", nn_ctx_error(ctx));
        nn_safetensors_close(f);
        nn_dataset d;
        s = nn_idx_load(ctx, p, NULL, &d);
        snprintf(name, sizeof name, "nn_idx_load refuses a %s", kind);
        check(s == NN_EIO && contains(nn_ctx_error(ctx), kind), name, "%s", nn_ctx_error(ctx));
        s = nn_png_load(ctx, p, &d);
        snprintf(name, sizeof name, "nn_png_load refuses a %s", kind);
        check(s == NN_EIO && contains(nn_ctx_error(ctx), kind), name, "%s", nn_ctx_error(ctx));
    }
}

/* ------------------------------------------------------------------ IDX sizes */

/* Writes a gzip IDX images file: a header stating n 28x28 images, then
 * zeros bytes of zeros. */
static void write_zero_idx(const char *path, uint32_t n, size_t zeros) {
    gzFile f = gzopen(path, "wb9");
    const uint8_t hdr[16] = {0, 0, 8, 3, n >> 24, n >> 16 & 255, n >> 8 & 255, n & 255,
                             0, 0, 0, 28, 0, 0, 0, 28};
    static const uint8_t block[1 << 16];
    int ok = f && gzwrite(f, hdr, sizeof hdr) == (int)sizeof hdr;
    for (size_t done = 0; ok && done < zeros; done += sizeof block) {
        unsigned len = (unsigned)(zeros - done < sizeof block ? zeros - done : sizeof block);
        ok = gzwrite(f, block, len) == (int)len;
    }
    if (!f || gzclose(f) != Z_OK || !ok) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* Loads path in a child process; returns how far its peak resident memory
 * grew (KiB) or -1, and the message (or "" after success) in msg. */
static long load_in_child(const char *path, char *msg, size_t size) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct rusage before, after;
        getrusage(RUSAGE_SELF, &before);
        nn_ctx *ctx = nn_ctx_new(1);
        nn_dataset d;
        nn_status s = nn_idx_load(ctx, path, NULL, &d);
        getrusage(RUSAGE_SELF, &after);
        char out[600];
        int len = snprintf(out, sizeof out, "%ld %s", after.ru_maxrss - before.ru_maxrss,
                           s == NN_OK ? "" : nn_ctx_error(ctx));
        if (write(fds[1], out, (size_t)len) != len) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    char buf[600] = "";
    ssize_t got = pid > 0 ? read(fds[0], buf, sizeof buf - 1) : -1;
    close(fds[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    if (got <= 0) return -1;
    buf[got] = '\0';
    char *sp = strchr(buf, ' ');
    snprintf(msg, size, "%s", sp ? sp + 1 : "");
    return strtol(buf, NULL, 10);
}

/* 64 MiB of zeros (a 64 KiB gzip file) under headers that claim more: the
 * reader says "truncated" without growing a buffer to the 64 MiB first. */
static void test_idx_sizes(void) {
    const size_t zeros = (size_t)81920 * 784; /* 81920 images */
    char path[256], msg[600];
    snprintf(path, sizeof path, "%s", tmp_path("zeros.gz"));
    write_zero_idx(path, 100000000, zeros);
    long kib = load_in_child(path, msg, sizeof msg);
    check(kib >= 0 && kib < 16384 && contains(msg, "truncated") &&
              contains(msg, "more than a") && contains(msg, "gzip file can hold"),
          "idx: 1e8 images stated in a 64 KiB gzip file: refused from the header", "%ld KiB, %s",
          kib, msg);
    write_zero_idx(path, 81921, zeros); /* one image more than the data */
    kib = load_in_child(path, msg, sizeof msg);
    check(kib >= 0 && kib < 16384 && contains(msg, "truncated") &&
              contains(msg, "expected 64226064 bytes") && contains(msg, "got 64225280"),
          "idx: one image missing from 64 MiB of zeros: refused without a 64 MiB buffer",
          "%ld KiB, %s", kib, msg);
    write_zero_idx(path, 81920, zeros);
    kib = load_in_child(path, msg, sizeof msg);
    check(kib >= 0 && !msg[0], "idx: the same data under the right header loads", "%s", msg);
    /* a raw file: its size decides */
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
    uint8_t raw[16 + 2 * 784] = {0};
    memcpy(raw, hdr, sizeof hdr);
    snprintf(path, sizeof path, "%s", tmp_path("short.raw"));
    write_bytes(path, raw, sizeof raw);
    kib = load_in_child(path, msg, sizeof msg);
    check(contains(msg, "truncated") && contains(msg, "expected 2352 bytes") &&
              contains(msg, "got 1568"),
          "idx: a raw file shorter than its header states", "%s", msg);
}

int main(void) {
    tmp_dir_create("guards");
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) return 2;
    test_save_refuses(ctx);
    test_load_refuses(ctx);
    test_sizes(ctx);
    alarm(60); /* a reader that blocks on a FIFO ends the test */
    test_regular_files(ctx);
    alarm(0);
    nn_ctx_free(ctx);
    test_memory();
    test_idx_sizes();
    remove_tree(tmp_dir);
    return test_summary();
}
