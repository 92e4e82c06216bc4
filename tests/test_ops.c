/*
 * test_ops.c - every op family (conv2d, maxpool, relu, linear, softmax
 * cross-entropy) checked three ways:
 *   - the fast float kernels against the double reference twins on seeded
 *     random inputs over many shapes, with 1 and 2 threads;
 *   - the reference gradients against central differences in double;
 *   - one small case per op whose values are worked out by hand below.
 * Plus determinism of the threaded conv2d backward and NaN propagation through
 * max-pooling. Every buffer is malloc'ed at its exact size (so ASan sees any
 * overrun) and outputs are pre-filled with NaN (so an element a kernel forgets
 * to write fails the comparison). Exits non-zero if any check fails.
 */
#include "ops/ops.h"
#include "test_util.h"

/* Fast float vs double reference: |a - b| <= FAST_TOL * (s + |b|) where s is
 * the largest |b| of the tensor (at least 1), i.e. float rounding relative to
 * the tensor's magnitude. A real indexing bug gives errors near 1. */
#define FAST_TOL 1e-4
/* Central differences: |num - ana| <= FD_TOL * max(1, |num|, |ana|). */
#define FD_TOL 1e-6
#define FD_EPS 1e-6

/* ------------------------------------------------------------ helpers */

static float *fvec_nan(size_t n) {
    float *v = fvec(n);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    return v;
}

static double *dvec_zero(size_t n) {
    double *v = dvec(n);
    for (size_t i = 0; i < n; i++) v[i] = 0.0;
    return v;
}

/* Worst case seen across the configurations of one check. */
typedef struct {
    double e[4];        /* per compared tensor */
    int configs, bad;
    char first_bad[160];
} agg;

static void agg_add(agg *g, const double *e, int count, double tol, const char *cfg) {
    int ok = 1;
    for (int i = 0; i < count; i++) {
        if (!(e[i] <= tol)) ok = 0;
        if (!(e[i] <= g->e[i])) g->e[i] = e[i]; /* NaN sticks */
    }
    g->configs++;
    if (!ok && g->bad++ == 0) snprintf(g->first_bad, sizeof g->first_bad, "%s", cfg);
}

/* ------------------------------------------------------------ conv2d */

typedef struct {
    int n, C, H, W, K, R, S, sh, sw, ph, pw, bias, relu;
} conv_cfg;

static nn_conv2d_desc conv_desc(const conv_cfg *c) {
    nn_conv2d_desc d;
    memset(&d, 0, sizeof d);
    d.C = c->C, d.H = c->H, d.W = c->W, d.K = c->K, d.R = c->R, d.S = c->S;
    d.stride_h = c->sh, d.stride_w = c->sw, d.pad_h = c->ph, d.pad_w = c->pw;
    d.P = (c->H + 2 * c->ph - c->R) / c->sh + 1;
    d.Q = (c->W + 2 * c->pw - c->S) / c->sw + 1;
    d.has_bias = c->bias;
    d.relu = c->relu;
    return d;
}

static void conv_cfg_str(const conv_cfg *c, int threads, char *buf, size_t size) {
    snprintf(buf, size, "n=%d C=%d %dx%d K=%d k=%dx%d s=%dx%d p=%dx%d bias=%d relu=%d T=%d", c->n,
             c->C, c->H, c->W, c->K, c->R, c->S, c->sh, c->sw, c->ph, c->pw, c->bias, c->relu,
             threads);
}

/* Runs one configuration through the fast kernels and through the reference
 * (conv, then ReLU when fused), comparing y, dx, dw, db. dw and db start from
 * random values to check that backward accumulates; dx starts as NaN to check
 * that it is overwritten. Where the pre-activation lies within 1e-4 of 0 the
 * fused ReLU's mask is ambiguous between float and double, so dy is zeroed
 * there. e_fwd[0] gets the y error, e_bwd[0..2] the dx, dw, db errors. */
static void conv_compare(const conv_cfg *c, nn_ctx *ctx, nn_rng *rng, double *e_fwd,
                         double *e_bwd) {
    const nn_conv2d_desc d = conv_desc(c);
    const size_t xn = (size_t)c->n * d.C * d.H * d.W, wn = (size_t)d.K * d.C * d.R * d.S;
    const size_t yn = (size_t)c->n * d.K * d.P * d.Q, bn = (size_t)d.K;
    /* x (N, C, H, W), w (K, C, R, S), b (K), y and dy (N, K, P, Q) */
    float *x = fvec(xn), *w = fvec(wn), *b = c->bias ? fvec(bn) : NULL;
    float *y = fvec_nan(yn), *dy = fvec(yn), *dx = fvec_nan(xn);
    float *dw = fvec(wn), *db = fvec(bn);
    fill(x, xn, rng, -1, 1);
    fill(w, wn, rng, -1, 1);
    if (b) fill(b, bn, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    fill(dw, wn, rng, -1, 1);
    fill(db, bn, rng, -1, 1);
    double *xd = to_d(x, xn), *wd = to_d(w, wn), *bd = to_d(b, bn);
    double *dwd = to_d(dw, wn), *dbd = to_d(db, bn);
    double *z = dvec(yn), *yr = dvec(yn), *dxd = dvec(xn), *dz = dvec(yn);

    const size_t wsn = nn_conv2d_workspace(&d, ctx->threads);
    float *ws = fvec(wsn);
    nn_conv2d_forward(y, x, w, b, &d, c->n, ws, ctx);
    nn_ref_conv2d_forward(z, xd, wd, bd, &d, c->n);
    if (c->relu) {
        nn_ref_relu_forward(yr, z, yn);
        for (size_t i = 0; i < yn; i++)
            if (fabs(z[i]) < 1e-4) dy[i] = 0.0f;
    } else {
        memcpy(yr, z, yn * sizeof(double));
    }
    e_fwd[0] = max_err(y, yr, yn);

    double *dyd = to_d(dy, yn);
    nn_conv2d_backward(dx, dw, c->bias ? db : NULL, dy, y, x, w, &d, c->n, ws, ctx);
    if (c->relu) nn_ref_relu_backward(dz, dyd, z, yn);
    else memcpy(dz, dyd, yn * sizeof(double));
    nn_ref_conv2d_backward(dxd, dwd, c->bias ? dbd : NULL, dz, xd, wd, &d, c->n);
    e_bwd[0] = max_err(dx, dxd, xn);
    e_bwd[1] = max_err(dw, dwd, wn);
    e_bwd[2] = c->bias ? max_err(db, dbd, bn) : 0.0;
    /* without a bias, db must be left alone */
    if (!c->bias)
        for (size_t k = 0; k < bn; k++)
            if ((double)db[k] != dbd[k]) e_bwd[2] = INFINITY;

    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(ws);
    free(xd), free(wd), free(bd), free(dwd), free(dbd), free(z), free(yr), free(dxd), free(dz);
    free(dyd);
}

static void conv_report(const char *what, const agg *f, const agg *g) {
    char name[200];
    snprintf(name, sizeof name, "conv2d fast==ref forward %s", what);
    check(f->bad == 0, name, "%d configs, max err y=%.2e%s%s", f->configs, f->e[0],
          f->bad ? "; first failing: " : "", f->bad ? f->first_bad : "");
    snprintf(name, sizeof name, "conv2d fast==ref backward %s", what);
    check(g->bad == 0, name, "%d configs, max err dx=%.2e dw=%.2e db=%.2e%s%s", g->configs,
          g->e[0], g->e[1], g->e[2], g->bad ? "; first failing: " : "",
          g->bad ? g->first_bad : "");
}

static void conv_run_into(const conv_cfg *c, nn_ctx *const ctxs[2], nn_rng *rng, agg *f,
                          agg *g) {
    for (int t = 0; t < 2; t++) {
        double ef[1], eb[3];
        char cfg[160];
        conv_compare(c, ctxs[t], rng, ef, eb);
        conv_cfg_str(c, ctxs[t]->threads, cfg, sizeof cfg);
        agg_add(f, ef, 1, FAST_TOL, cfg);
        agg_add(g, eb, 3, FAST_TOL, cfg);
    }
}

/* A shape checked on its own, under a name */
typedef struct {
    const char *what;
    conv_cfg c;
} named_conv;

static void conv_run_named(const named_conv *nc, nn_ctx *const ctxs[2], nn_rng *rng) {
    agg f, g;
    memset(&f, 0, sizeof f);
    memset(&g, 0, sizeof g);
    conv_run_into(&nc->c, ctxs, rng, &f, &g);
    conv_report(nc->what, &f, &g);
}

static int pointwise_chosen(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return strcmp(nn_conv2d_kernel_name(d, ctx), "pointwise") == 0;
}

/* Each shape against the reference, and (on AVX-512) a check that the
 * kernels `ok` stands for take it. */
static void conv_run_chosen(const named_conv *shapes, size_t count,
                            int (*ok)(const nn_conv2d_desc *, const nn_ctx *), const char *chosen,
                            nn_ctx *const ctxs[2], nn_rng *rng) {
    for (size_t i = 0; i < count; i++) {
        conv_run_named(&shapes[i], ctxs, rng);
        if (ctxs[0]->isa < NN_ISA_AVX512) continue;
        const nn_conv2d_desc d = conv_desc(&shapes[i].c);
        check(ok(&d, ctxs[0]), chosen, "%s", shapes[i].what);
    }
}

static void test_conv_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const int kernels[][2] = {{1, 1}, {3, 3}, {5, 3}};
    static const int strides[] = {1, 2};
    static const int pads[][2] = {{0, 0}, {1, 1}, {2, 1}};
    static const int ck[][2] = {{1, 2}, {3, 5}};     /* C, K */
    static const int hw[][2] = {{7, 9}, {8, 6}};     /* H, W */
    static const int batches[] = {1, 3, 13};
    for (int ki = 0; ki < 3; ki++)
        for (int si = 0; si < 2; si++)
            for (int pi = 0; pi < 3; pi++) {
                agg f, g;
                memset(&f, 0, sizeof f);
                memset(&g, 0, sizeof g);
                for (int ci = 0; ci < 2; ci++)
                    for (int hi = 0; hi < 2; hi++)
                        for (int bi = 0; bi < 3; bi++)
                            for (int bias = 0; bias < 2; bias++)
                                for (int relu = 0; relu < 2; relu++) {
                                    conv_cfg c = {batches[bi], ck[ci][0], hw[hi][0], hw[hi][1],
                                                  ck[ci][1], kernels[ki][0], kernels[ki][1],
                                                  strides[si], strides[si], pads[pi][0],
                                                  pads[pi][1], bias, relu};
                                    conv_run_into(&c, ctxs, rng, &f, &g);
                                }
                char what[120];
                snprintf(what, sizeof what,
                         "k=%dx%d stride=%d pad=%dx%d "
                         "(C=1,3; 7x9,8x6; n=1,3,13; bias; relu; T=1,2)",
                         kernels[ki][0], kernels[ki][1], strides[si], pads[pi][0], pads[pi][1]);
                conv_report(what, &f, &g);
            }

    /* Shapes the grid above misses, one check each (both thread counts). */
    static const named_conv special[] = {
        /* per-image columns of ~260 KiB: two images per GEMM group, so each
         * thread walks several groups and a short last one */
        {"several GEMM groups per thread", {7, 8, 30, 30, 6, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* direct kernels: several and partial 16-channel blocks, K not a multiple of 3,
         * rows wider than one 16-lane vector with a partial tail */
        {"K=19 (partial channel blocks), 9x37 input", {3, 5, 9, 37, 19, 3, 3, 1, 1, 1, 1, 1, 1}},
        {"K=33, C=17, 14x14 input (seed conv2-like)", {4, 17, 14, 14, 33, 3, 3, 1, 1, 1, 1, 1, 0}},
        {"3x3 no padding, K=2, 20x18 input", {3, 4, 20, 18, 2, 3, 3, 1, 1, 0, 0, 0, 1}},
        {"one image per GEMM group", {5, 16, 28, 28, 4, 3, 3, 1, 1, 1, 1, 1, 0}},
        {"stride 2x1", {3, 2, 9, 7, 3, 3, 3, 2, 1, 1, 1, 1, 1}},
        {"stride 1x2", {3, 2, 9, 7, 3, 3, 3, 1, 2, 1, 1, 1, 0}},
        {"pad_w > pad_h", {3, 2, 7, 9, 3, 3, 5, 1, 1, 0, 2, 1, 1}},
        {"kernel 3x5 stride 3", {4, 3, 11, 13, 2, 3, 5, 3, 3, 1, 2, 0, 0}},
        {"5x5 stride 2, pad 3 (more than the stride)", {3, 2, 9, 8, 3, 5, 5, 2, 2, 3, 3, 1, 1}},
        {"kernel as large as the input", {3, 2, 5, 4, 3, 5, 4, 1, 1, 0, 0, 1, 0}},
        /* a kernel much wider than the input with 'same' padding: some taps
         * see only padding for every output */
        {"width-1 input, 1x5 kernel, pad_w=2", {3, 2, 6, 1, 3, 1, 5, 1, 1, 0, 2, 1, 1}},
        {"width-2 input, 3x7 kernel, pad=1x3", {2, 2, 5, 2, 2, 3, 7, 1, 1, 1, 3, 1, 0}},
        {"height-1 input, 5x1 kernel, pad_h=2", {3, 2, 1, 6, 3, 5, 1, 1, 1, 2, 0, 1, 0}},
        {"1x1 input, 3x3 kernel, pad 1", {13, 4, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1}},
        {"batch 2 with 2 threads (one image each)", {2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* ResNet's downsampling 3x3s: the phase kernels on AVX2, im2col
         * with the own 1x1 GEMM kernels on AVX-512 (C*R*S a multiple of 16,
         * K of 8); 49 and 16 columns per image (partial vectors), several
         * images per group */
        {"3x3 stride 2, C=16 K=32, 13x13", {5, 16, 13, 13, 32, 3, 3, 2, 2, 1, 1, 1, 1}},
        {"3x3 stride 2, C=32 K=8, 8x8", {9, 32, 8, 8, 8, 3, 3, 2, 2, 1, 1, 0, 0}},
        /* im2col with the own GEMM kernels on AVX2 too (stride 3: no phases) */
        {"3x3 stride 3, C=16 K=8, 11x13 (im2col, own GEMM)",
         {4, 16, 11, 13, 8, 3, 3, 3, 3, 1, 1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        conv_run_named(&special[i], ctxs, rng);

    /* the row kernels take the shapes with too few channels for the channels-last ones */
    if (ctxs[0]->isa >= NN_ISA_AVX2)
        for (size_t i = 1; i <= 3; i++) {
            const nn_conv2d_desc d = conv_desc(&special[i].c);
            check(nn_conv2d_rows_ok(&d, ctxs[0]) && !nn_conv2d_direct_ok(&d, ctxs[0]),
                  "conv2d row kernels chosen for", "%s", special[i].what);
        }

    /* Shapes for the channels-last direct kernels (AVX-512: at least 12 of 16
     * lanes of the last block on both channel sides): several passes over the
     * channel blocks, partial blocks, each tile width (6, 7, 8) and a row that
     * is not a whole number of tiles, padding 0..2, a 2x3 kernel. */
    static const named_conv direct[] = {
        {"direct-sized: C=16 K=40 (3 blocks, last partial), 7x7",
         {3, 16, 7, 7, 40, 3, 3, 1, 1, 1, 1, 1, 1}},
        {"direct-sized: C=24 K=70 (5 blocks in 2 passes), 9x13 (tile 7, 13 = 7+6)",
         {3, 24, 9, 13, 70, 3, 3, 1, 1, 1, 1, 1, 0}},
        {"direct-sized: C=36 K=16, 14x14 no padding (12x12 out, tile 6)",
         {2, 36, 14, 14, 16, 3, 3, 1, 1, 0, 0, 0, 1}},
        {"direct-sized: C=K=24, 2x3 kernel pad 1, 11x17 (tile 8 and 6)",
         {3, 24, 11, 17, 24, 2, 3, 1, 1, 1, 1, 1, 1}},
        {"direct-sized: C=48 K=50, pad 2, 5x6 input", {2, 48, 5, 6, 50, 3, 3, 1, 1, 2, 2, 1, 0}},
        {"direct-sized: C=K=64, 28x28 (conv_heavy conv2)", {2, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1, 1, 1}},
        {"direct-sized: C=K=256, 7x7 (conv_heavy conv6)", {3, 256, 7, 7, 256, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* stride 2: the forward tiles read every other pixel, the input
         * gradient runs in phases (row and column parity) */
        {"direct stride 2: C=16 K=32, 28x28 (ResNet-20 stage 2's first conv)",
         {2, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 0, 0}},
        {"direct stride 2: C=32 K=64, 14x14, relu (stage 3's)", {3, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1}},
        {"direct stride 2: C=16 K=40, odd 9x13 (phases of unequal size)",
         {3, 16, 9, 13, 40, 3, 3, 2, 2, 1, 1, 1, 0}},
        {"direct stride 2: no padding, 7x7 (3x3 out), one image", {1, 16, 7, 7, 16, 3, 3, 2, 2, 0, 0, 1, 1}},
        {"direct stride 2: pad 2 (more than the stride), C=24 K=16, 8x9",
         {2, 24, 8, 9, 16, 3, 3, 2, 2, 2, 2, 1, 1}},
        {"direct stride 2x1: 2x3 kernel, no padding, 11x10", {2, 24, 11, 10, 24, 2, 3, 2, 1, 0, 0, 0, 1}},
        {"direct stride 1x2: 3x3 pad 1, C=K=16, 6x15", {2, 16, 6, 15, 16, 3, 3, 1, 2, 1, 1, 1, 0}},
    };
    conv_run_chosen(direct, sizeof direct / sizeof direct[0], nn_conv2d_direct_ok,
                    "conv2d direct kernels chosen for", ctxs, rng);

    /* 1x1 convolutions through the own GEMM kernels (AVX-512: C a multiple
     * of 16, K of 8; AVX2: 8 and 4), whose backward goes band by band of
     * output channels: several bands, a fused ReLU (each band masked), a
     * bias, neither (dy as it is), stride 2, and rows with masked tails */
    static const named_conv pointwise[] = {
        {"1x1: C=32 K=24 (3 bands), 10x10, bias and relu",
         {3, 32, 10, 10, 24, 1, 1, 1, 1, 0, 0, 1, 1}},
        {"1x1: C=16 K=64 (8 bands), 28x28, relu", {2, 16, 28, 28, 64, 1, 1, 1, 1, 0, 0, 0, 1}},
        {"1x1: C=64 K=40, 7x7, neither bias nor relu", {4, 64, 7, 7, 40, 1, 1, 1, 1, 0, 0, 0, 0}},
        {"1x1 stride 2: C=32 K=16, 9x9, bias and relu", {3, 32, 9, 9, 16, 1, 1, 2, 2, 0, 0, 1, 1}},
    };
    conv_run_chosen(pointwise, sizeof pointwise / sizeof pointwise[0], pointwise_chosen,
                    "conv2d 1x1 kernel chosen for", ctxs, rng);

    /* dx == NULL skips the input gradient but still gives dw and db, bit for
     * bit: im2col-sized, row-kernel-sized (the weight gradient then reads dy
     * and the ReLU mask unpadded), channels-last-sized */
    static const conv_cfg no_dx[] = {{5, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1},
                                     {5, 1, 12, 28, 5, 3, 3, 1, 1, 1, 1, 1, 1},
                                     {3, 2, 12, 12, 4, 3, 3, 1, 1, 1, 1, 0, 0},
                                     {3, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof no_dx / sizeof no_dx[0]; i++) {
        const conv_cfg c = no_dx[i];
        const nn_conv2d_desc d = conv_desc(&c);
        size_t xn = (size_t)c.n * d.C * d.H * d.W, wn = (size_t)d.K * d.C * d.R * d.S;
        size_t yn = (size_t)c.n * d.K * d.P * d.Q;
        float *x = fvec(xn), *w = fvec(wn), *b = fvec(d.K), *y = fvec(yn), *dy = fvec(yn);
        float *dx = fvec(xn), *dw1 = fvec(wn), *db1 = fvec(d.K), *dw2 = fvec(wn),
              *db2 = fvec(d.K);
        fill(x, xn, rng, -1, 1), fill(w, wn, rng, -1, 1), fill(b, d.K, rng, -1, 1);
        fill(dy, yn, rng, -1, 1);
        const size_t wb = wn * sizeof(float), bb = (size_t)d.K * sizeof(float);
        memset(dw1, 0, wb), memset(dw2, 0, wb), memset(db1, 0, bb), memset(db2, 0, bb);
        float *ws = fvec(nn_conv2d_workspace(&d, ctxs[1]->threads));
        nn_conv2d_forward(y, x, w, c.bias ? b : NULL, &d, c.n, ws, ctxs[1]);
        nn_conv2d_backward(dx, dw1, c.bias ? db1 : NULL, dy, y, x, w, &d, c.n, ws, ctxs[1]);
        nn_conv2d_backward(NULL, dw2, c.bias ? db2 : NULL, dy, y, x, w, &d, c.n, ws, ctxs[1]);
        check(memcmp(dw1, dw2, wb) == 0 && memcmp(db1, db2, bb) == 0,
              "conv2d backward with dx=NULL gives the same dw, db", "C=%d K=%d %dx%d relu %d",
              d.C, d.K, d.H, d.W, c.relu);
        if (c.relu) { /* the ReLU's mask applied downstream (by a max-pool): the same */
            nn_conv2d_desc dm = d;
            dm.relu_masked_later = 1;
            float *dx3 = fvec(xn);
            for (size_t j = 0; j < yn; j++) dy[j] = y[j] > 0.0f ? dy[j] : 0.0f;
            memset(dw2, 0, wb), memset(db2, 0, bb);
            nn_conv2d_backward(dx3, dw2, c.bias ? db2 : NULL, dy, y, x, w, &dm, c.n, ws,
                               ctxs[1]);
            check(memcmp(dw1, dw2, wb) == 0 && memcmp(db1, db2, bb) == 0 &&
                      memcmp(dx, dx3, xn * sizeof(float)) == 0,
                  "conv2d backward of a pre-masked dy with relu_masked_later: same dx, dw, db",
                  "C=%d K=%d %dx%d", d.C, d.K, d.H, d.W);
            free(dx3);
        }
        free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw1), free(db1), free(dw2),
            free(db2), free(ws);
    }
    {
        conv_cfg c = {3, 3, 7, 9, 4, 5, 3, 2, 2, 2, 1, 1, 0};
        const nn_conv2d_desc d = conv_desc(&c);
        check(nn_conv2d_workspace(&d, 2) == 2 * nn_conv2d_workspace(&d, 1) &&
                  nn_conv2d_workspace(&d, 1) > 0,
              "conv2d workspace is per thread", "%zu floats per thread",
              nn_conv2d_workspace(&d, 1));
    }
}

/* ------------------------------------------------------------ maxpool */

typedef struct {
    int n, C, H, W, R, S, sh, sw, ph, pw;
} pool_cfg;

static nn_pool_desc pool_desc(const pool_cfg *c) {
    nn_pool_desc d;
    memset(&d, 0, sizeof d);
    d.C = c->C, d.H = c->H, d.W = c->W, d.R = c->R, d.S = c->S;
    d.stride_h = c->sh, d.stride_w = c->sw, d.pad_h = c->ph, d.pad_w = c->pw;
    d.P = (c->H + 2 * c->ph - c->R) / c->sh + 1;
    d.Q = (c->W + 2 * c->pw - c->S) / c->sw + 1;
    return d;
}

/* e[0]: y (must be exact: max-pooling only selects), e[1]: dx, e[2]: dx
 * with relu_mask on a ReLU's output (many all-zero windows) against the
 * reference max-pool backward followed by the ReLU's backward. */
static void pool_compare(const pool_cfg *c, nn_ctx *ctx, nn_rng *rng, double *e) {
    const nn_pool_desc d = pool_desc(c);
    const size_t xn = (size_t)c->n * d.C * d.H * d.W, yn = (size_t)c->n * d.C * d.P * d.Q;
    float *x = fvec(xn), *y = fvec_nan(yn), *dy = fvec(yn), *dx = fvec_nan(xn);
    fill(x, xn, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    double *xd = to_d(x, xn), *dyd = to_d(dy, yn), *yr = dvec(yn), *dxd = dvec(xn);
    nn_maxpool_forward(y, x, &d, c->n, ctx);
    nn_ref_maxpool_forward(yr, xd, &d, c->n);
    e[0] = 0.0;
    for (size_t i = 0; i < yn; i++)
        if ((double)y[i] != yr[i]) e[0] = INFINITY;
    nn_maxpool_backward(dx, dy, x, y, &d, c->n, ctx);
    nn_ref_maxpool_backward(dxd, dyd, xd, &d, c->n);
    e[1] = max_err(dx, dxd, xn);
    nn_pool_desc dm = d;
    dm.relu_mask = 1;
    for (size_t i = 0; i < xn; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f, xd[i] = x[i];
    nn_maxpool_forward(y, x, &dm, c->n, ctx);
    nn_maxpool_backward(dx, dy, x, y, &dm, c->n, ctx);
    nn_ref_maxpool_backward(dxd, dyd, xd, &d, c->n);
    for (size_t i = 0; i < xn; i++) dxd[i] = xd[i] > 0.0 ? dxd[i] : 0.0;
    e[2] = max_err(dx, dxd, xn);
    free(x), free(y), free(dy), free(dx), free(xd), free(dyd), free(yr), free(dxd);
}

static void test_pool_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const struct {
        const char *what;
        int H, W, R, S, sh, sw, ph, pw;
    } shapes[] = {
        {"2x2/2 even 8x6", 8, 6, 2, 2, 2, 2, 0, 0},
        {"2x2/2 odd 7x9", 7, 9, 2, 2, 2, 2, 0, 0},
        {"2x2/2 odd 5x5", 5, 5, 2, 2, 2, 2, 0, 0},
        {"2x2/2 28x28", 28, 28, 2, 2, 2, 2, 0, 0},
        {"3x3/2 pad 1 on 7x9", 7, 9, 3, 3, 2, 2, 1, 1},
        {"3x3/2 pad 1 on 8x6", 8, 6, 3, 3, 2, 2, 1, 1},
        {"3x3/1 on 7x9", 7, 9, 3, 3, 1, 1, 0, 0},
        {"3x3/1 pad 1 on 6x8", 6, 8, 3, 3, 1, 1, 1, 1},
        {"2x2/1 on 7x9", 7, 9, 2, 2, 1, 1, 0, 0},
        {"2x2/2 pad 1 on 7x8", 7, 8, 2, 2, 2, 2, 1, 1},
        {"3x2 stride 2x1 pad 1x0 on 7x9", 7, 9, 3, 2, 2, 1, 1, 0},
        {"window = whole 5x7 input", 5, 7, 5, 7, 1, 1, 0, 0},
    };
    static const int batches[] = {1, 3, 13}, chans[] = {1, 3};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        agg g;
        memset(&g, 0, sizeof g);
        for (int bi = 0; bi < 3; bi++)
            for (int ci = 0; ci < 2; ci++)
                for (int t = 0; t < 2; t++) {
                    pool_cfg c = {batches[bi], chans[ci], shapes[s].H, shapes[s].W,
                                  shapes[s].R, shapes[s].S, shapes[s].sh, shapes[s].sw,
                                  shapes[s].ph, shapes[s].pw};
                    double e[3];
                    char cfg[160];
                    pool_compare(&c, ctxs[t], rng, e);
                    snprintf(cfg, sizeof cfg, "n=%d C=%d T=%d", c.n, c.C, ctxs[t]->threads);
                    agg_add(&g, e, 3, FAST_TOL, cfg);
                }
        char name[160];
        snprintf(name, sizeof name, "maxpool fast==ref %s (C=1,3; n=1,3,13; T=1,2)",
                 shapes[s].what);
        check(g.bad == 0, name, "%d configs, y exact: %s, max err dx=%.2e, with the ReLU mask %.2e%s%s",
              g.configs, g.e[0] == 0.0 ? "yes" : "no", g.e[1], g.e[2], g.bad ? "; first failing: " : "",
              g.bad ? g.first_bad : "");
    }
}

/* ------------------------------------------------------------ relu */

static void test_relu_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const size_t counts[] = {1, 7, 1000, 32767, 32768, 40000};
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        const size_t n = counts[ci];
        int ok = 1;
        for (int t = 0; t < 2; t++) {
            float *x = fvec(n), *y = fvec_nan(n), *dy = fvec(n), *dx = fvec_nan(n);
            fill(x, n, rng, -1, 1);
            fill(dy, n, rng, -1, 1);
            if (n > 3) x[0] = 0.0f, x[1] = -0.0f, x[2] = 1e-30f; /* the edges of the mask */
            double *xd = to_d(x, n), *dyd = to_d(dy, n), *yr = dvec(n), *dxd = dvec(n);
            nn_relu_forward(y, x, n, ctxs[t]);
            nn_relu_backward(dx, dy, y, n, ctxs[t]);
            nn_ref_relu_forward(yr, xd, n);
            nn_ref_relu_backward(dxd, dyd, xd, n);
            for (size_t i = 0; i < n; i++)
                if ((double)y[i] != yr[i] || (double)dx[i] != dxd[i]) ok = 0;
            free(x), free(y), free(dy), free(dx), free(xd), free(dyd), free(yr), free(dxd);
        }
        char name[96];
        snprintf(name, sizeof name, "relu fast==ref count=%zu (T=1,2)", n);
        check(ok, name, "y and dx exact");
    }
}

/* ------------------------------------------------------------ linear */

typedef struct {
    int n, in, out, bias, relu;
} lin_cfg;

/* e[0]: y; e[1..3]: dx, dw, db. Same conventions as conv_compare. */
static void linear_compare(const lin_cfg *c, nn_ctx *ctx, nn_rng *rng, int with_dx, double *e) {
    nn_linear_desc d = {c->in, c->out, c->bias, c->relu};
    const size_t xn = (size_t)c->n * c->in, wn = (size_t)c->out * c->in;
    const size_t yn = (size_t)c->n * c->out, bn = (size_t)c->out;
    /* x (N, in), w (out, in), b (out), y and dy (N, out) */
    float *x = fvec(xn), *w = fvec(wn), *b = c->bias ? fvec(bn) : NULL;
    float *y = fvec_nan(yn), *dy = fvec(yn), *dx = fvec_nan(xn);
    float *dw = fvec(wn), *db = fvec(bn), *ws = c->relu ? fvec(yn) : NULL;
    fill(x, xn, rng, -1, 1);
    fill(w, wn, rng, -1, 1);
    if (b) fill(b, bn, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    fill(dw, wn, rng, -1, 1);
    fill(db, bn, rng, -1, 1);
    double *xd = to_d(x, xn), *wd = to_d(w, wn), *bd = to_d(b, bn);
    double *dwd = to_d(dw, wn), *dbd = to_d(db, bn);
    double *z = dvec(yn), *yr = dvec(yn), *dxd = dvec(xn), *dz = dvec(yn);
    nn_linear_forward(y, x, w, b, &d, c->n, ctx);
    nn_ref_linear_forward(z, xd, wd, bd, &d, c->n);
    if (c->relu) {
        nn_ref_relu_forward(yr, z, yn);
        for (size_t i = 0; i < yn; i++)
            if (fabs(z[i]) < 1e-4) dy[i] = 0.0f;
    } else {
        memcpy(yr, z, yn * sizeof(double));
    }
    e[0] = max_err(y, yr, yn);
    double *dyd = to_d(dy, yn);
    nn_linear_backward(with_dx ? dx : NULL, dw, c->bias ? db : NULL, dy, y, x, w, &d, c->n, ws,
                       ctx);
    if (c->relu) nn_ref_relu_backward(dz, dyd, z, yn);
    else memcpy(dz, dyd, yn * sizeof(double));
    nn_ref_linear_backward(dxd, dwd, c->bias ? dbd : NULL, dz, xd, wd, &d, c->n);
    e[1] = with_dx ? max_err(dx, dxd, xn) : 0.0;
    e[2] = max_err(dw, dwd, wn);
    e[3] = c->bias ? max_err(db, dbd, bn) : 0.0;
    if (!c->bias)
        for (size_t k = 0; k < bn; k++)
            if ((double)db[k] != dbd[k]) e[3] = INFINITY;
    if (!with_dx)
        for (size_t i = 0; i < xn; i++)
            if (!isnan(dx[i])) e[1] = INFINITY; /* dx == NULL: nothing written */
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(ws);
    free(xd), free(wd), free(bd), free(dwd), free(dbd), free(z), free(yr), free(dxd), free(dz);
    free(dyd);
}

static void test_linear_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    /* (300, 40) at n=13 is large enough for nn_sgemm_parallel to split the
     * GEMMs across threads, by columns for y and dx and by rows for dw */
    static const int dims[][2] = {{37, 11}, {300, 40}, {1, 5}, {1568, 128}};
    static const int batches[] = {1, 3, 13};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        agg f, g;
        memset(&f, 0, sizeof f);
        memset(&g, 0, sizeof g);
        for (int bi = 0; bi < 3; bi++)
            for (int bias = 0; bias < 2; bias++)
                for (int relu = 0; relu < 2; relu++)
                    for (int t = 0; t < 2; t++) {
                        lin_cfg c = {batches[bi], dims[di][0], dims[di][1], bias, relu};
                        double e[4];
                        char cfg[160];
                        linear_compare(&c, ctxs[t], rng, 1, e);
                        snprintf(cfg, sizeof cfg, "n=%d bias=%d relu=%d T=%d", c.n, bias, relu,
                                 ctxs[t]->threads);
                        agg_add(&f, e, 1, FAST_TOL, cfg);
                        agg_add(&g, e + 1, 3, FAST_TOL, cfg);
                    }
        char name[160];
        snprintf(name, sizeof name,
                 "linear fast==ref forward in=%d out=%d (n=1,3,13; bias; relu; T=1,2)",
                 dims[di][0], dims[di][1]);
        check(f.bad == 0, name, "%d configs, max err y=%.2e%s%s", f.configs, f.e[0],
              f.bad ? "; first failing: " : "", f.bad ? f.first_bad : "");
        snprintf(name, sizeof name,
                 "linear fast==ref backward in=%d out=%d (n=1,3,13; bias; relu; T=1,2)",
                 dims[di][0], dims[di][1]);
        check(g.bad == 0, name, "%d configs, max err dx=%.2e dw=%.2e db=%.2e%s%s", g.configs,
              g.e[0], g.e[1], g.e[2], g.bad ? "; first failing: " : "",
              g.bad ? g.first_bad : "");
    }
    {
        lin_cfg c = {13, 300, 40, 1, 1};
        double e[4];
        linear_compare(&c, ctxs[1], rng, 0, e);
        check(e[1] == 0.0 && e[2] <= FAST_TOL && e[3] <= FAST_TOL,
              "linear backward with dx=NULL writes no dx, still gives dw, db",
              "dw=%.2e db=%.2e", e[2], e[3]);
    }
}

/* ------------------------------------------------------------ softmax CE */

static void test_softmax_fast_vs_ref(nn_rng *rng) {
    static const int classes[] = {2, 10, 37}, batches[] = {1, 3, 13};
    /* logits scale, offset: the large ones overflow expf without the max
     * subtraction */
    static const float ranges[][2] = {{1.0f, 0.0f}, {30.0f, 1000.0f}, {80.0f, -500.0f}};
    for (int ri = 0; ri < 3; ri++) {
        agg g;
        memset(&g, 0, sizeof g);
        for (int ci = 0; ci < 3; ci++)
            for (int bi = 0; bi < 3; bi++) {
                const int k = classes[ci], n = batches[bi];
                const size_t zn = (size_t)n * k;
                float *z = fvec(zn), *prob = fvec_nan(zn), *dz = fvec_nan(zn);
                int32_t *labels = xmalloc((size_t)n * sizeof *labels);
                fill(z, zn, rng, -ranges[ri][0], ranges[ri][0]);
                for (size_t i = 0; i < zn; i++) z[i] += ranges[ri][1];
                for (int i = 0; i < n; i++) labels[i] = (int32_t)nn_rng_below(rng, (uint32_t)k);
                double *zd = to_d(z, zn), *dzd = dvec(zn);
                float loss = nn_softmax_ce_forward(prob, z, labels, k, n);
                nn_softmax_ce_backward(dz, prob, labels, k, n);
                double lref = nn_ref_softmax_ce_forward(zd, labels, k, n);
                nn_ref_softmax_ce_backward(dzd, zd, labels, k, n);
                double e[2] = {max_err(&loss, &lref, 1), max_err(dz, dzd, zn)};
                /* the probabilities of each row sum to 1 */
                for (int i = 0; i < n; i++) {
                    double s = 0.0;
                    for (int c = 0; c < k; c++) s += prob[(size_t)i * k + c];
                    if (!(fabs(s - 1.0) <= 1e-5)) e[1] = INFINITY;
                }
                char cfg[96];
                snprintf(cfg, sizeof cfg, "classes=%d n=%d", k, n);
                agg_add(&g, e, 2, FAST_TOL, cfg);
                free(z), free(prob), free(dz), free(labels), free(zd), free(dzd);
            }
        char name[160];
        snprintf(name, sizeof name,
                 "softmax_ce fast==ref logits %g +- %g (classes=2,10,37; n=1,3,13)",
                 (double)ranges[ri][1], (double)ranges[ri][0]);
        check(g.bad == 0, name, "%d configs, max err loss=%.2e dlogits=%.2e%s%s", g.configs,
              g.e[0], g.e[1], g.bad ? "; first failing: " : "", g.bad ? g.first_bad : "");
    }
}

/* ------------------------------------------------------------ finite differences */

/* A scalar function of the reference kernels' inputs. */
typedef struct fd_problem fd_problem;
struct fd_problem {
    double (*eval)(fd_problem *p);
    int op; /* 0 conv, 1 pool, 2 relu, 3 linear, 4 softmax */
    nn_conv2d_desc conv;
    nn_pool_desc pool;
    nn_linear_desc lin;
    int n, classes;
    size_t xn, yn;
    double *x, *w, *b, *r, *y;
    int32_t *labels;
};

/* L = sum(y * r) for the layer ops, the mean loss for softmax CE. */
static double fd_eval(fd_problem *p) {
    switch (p->op) {
    case 0: nn_ref_conv2d_forward(p->y, p->x, p->w, p->b, &p->conv, p->n); break;
    case 1: nn_ref_maxpool_forward(p->y, p->x, &p->pool, p->n); break;
    case 2: nn_ref_relu_forward(p->y, p->x, p->xn); break;
    case 3: nn_ref_linear_forward(p->y, p->x, p->w, p->b, &p->lin, p->n); break;
    default: return nn_ref_softmax_ce_forward(p->x, p->labels, p->classes, p->n);
    }
    double s = 0.0;
    for (size_t i = 0; i < p->yn; i++) s += p->y[i] * p->r[i];
    return s;
}

/* Compares grad (analytic) with central differences of L in v, at every
 * element. Returns the max error; *gmax gets max |grad|. */
static double fd_compare(fd_problem *p, double *v, const double *grad, size_t n, double *gmax) {
    double e = 0.0;
    *gmax = max_abs(grad, n);
    for (size_t i = 0; i < n; i++) {
        const double v0 = v[i];
        v[i] = v0 + FD_EPS;
        double lp = p->eval(p);
        v[i] = v0 - FD_EPS;
        double lm = p->eval(p);
        v[i] = v0;
        double num = (lp - lm) / (2 * FD_EPS);
        double d = fabs(num - grad[i]) / fmax(1.0, fmax(fabs(num), fabs(grad[i])));
        if (!(d <= e)) e = d;
    }
    return e;
}

/* One check per gradient: within FD_TOL and not all zero. */
static void fd_report(const char *op, const char *what, const char *tensor, double e,
                      double gmax) {
    char name[200];
    snprintf(name, sizeof name, "%s finite differences %s %s", op, what, tensor);
    check(e <= FD_TOL && gmax > 1e-3, name, "max err %.2e, max |grad| %.3g", e, gmax);
}

static void test_conv_fd(nn_rng *rng) {
    static const struct {
        const char *what;
        conv_cfg c;
    } cases[] = {
        {"3x3 s1 p1", {2, 2, 5, 6, 3, 3, 3, 1, 1, 1, 1, 1, 0}},
        {"5x3 s2 p2x1", {2, 3, 7, 5, 2, 5, 3, 2, 2, 2, 1, 1, 0}},
        {"1x1 s2 p0 (skips pixels)", {2, 2, 6, 5, 2, 1, 1, 2, 2, 0, 0, 1, 0}},
        {"3x3 s2x1 p0x2 no bias", {1, 2, 6, 4, 3, 3, 3, 2, 1, 0, 2, 0, 0}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_cfg *c = &cases[ci].c;
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.eval = fd_eval;
        p.op = 0;
        p.conv = conv_desc(c);
        p.n = c->n;
        p.xn = (size_t)c->n * c->C * c->H * c->W;
        p.yn = (size_t)c->n * c->K * p.conv.P * p.conv.Q;
        const size_t wn = (size_t)c->K * c->C * c->R * c->S;
        p.x = dvec(p.xn), p.w = dvec(wn), p.b = c->bias ? dvec(c->K) : NULL;
        p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_d(p.x, p.xn, rng, -1, 1), fill_d(p.w, wn, rng, -1, 1), fill_d(p.r, p.yn, rng, -1, 1);
        if (p.b) fill_d(p.b, c->K, rng, -1, 1);
        double *dx = dvec(p.xn), *dw = dvec_zero(wn), *db = dvec_zero(c->K), gmax;
        nn_ref_conv2d_backward(dx, dw, p.b ? db : NULL, p.r, p.x, p.w, &p.conv, p.n);
        double e = fd_compare(&p, p.x, dx, p.xn, &gmax);
        fd_report("conv2d", cases[ci].what, "dx", e, gmax);
        e = fd_compare(&p, p.w, dw, wn, &gmax);
        fd_report("conv2d", cases[ci].what, "dw", e, gmax);
        if (p.b) {
            e = fd_compare(&p, p.b, db, c->K, &gmax);
            fd_report("conv2d", cases[ci].what, "db", e, gmax);
        }
        free(p.x), free(p.w), free(p.b), free(p.r), free(p.y), free(dx), free(dw), free(db);
    }
}

/* Distinct inputs 0.01 apart (far more than FD_EPS), shuffled, so every
 * window has one strict maximum and max-pooling is differentiable. */
static void fill_distinct(double *x, size_t n, nn_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = -0.5 * (double)n * 0.01 + 0.01 * (double)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = nn_rng_below(rng, (uint32_t)i);
        double t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
}

static void test_pool_relu_fd(nn_rng *rng) {
    static const struct {
        const char *what;
        pool_cfg c;
    } cases[] = {
        {"2x2/2 on 7x9", {2, 2, 7, 9, 2, 2, 2, 2, 0, 0}},
        {"3x3/2 pad 1 on 7x8", {2, 2, 7, 8, 3, 3, 2, 2, 1, 1}},
        {"3x3/1 on 6x7", {1, 2, 6, 7, 3, 3, 1, 1, 0, 0}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const pool_cfg *c = &cases[ci].c;
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.eval = fd_eval;
        p.op = 1;
        p.pool = pool_desc(c);
        p.n = c->n;
        p.xn = (size_t)c->n * c->C * c->H * c->W;
        p.yn = (size_t)c->n * c->C * p.pool.P * p.pool.Q;
        p.x = dvec(p.xn), p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_distinct(p.x, p.xn, rng);
        fill_d(p.r, p.yn, rng, -1, 1);
        double *dx = dvec(p.xn), gmax;
        nn_ref_maxpool_backward(dx, p.r, p.x, &p.pool, p.n);
        double e = fd_compare(&p, p.x, dx, p.xn, &gmax);
        fd_report("maxpool", cases[ci].what, "dx", e, gmax);
        free(p.x), free(p.r), free(p.y), free(dx);
    }
    {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.eval = fd_eval;
        p.op = 2;
        p.xn = p.yn = 200;
        p.x = dvec(p.xn), p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_distinct(p.x, p.xn, rng); /* -1 .. 0.99 step 0.01: 0.0 itself is avoided below */
        for (size_t i = 0; i < p.xn; i++)
            if (fabs(p.x[i]) < 1e-3) p.x[i] = 0.005;
        fill_d(p.r, p.yn, rng, -1, 1);
        double *dx = dvec(p.xn), gmax;
        nn_ref_relu_backward(dx, p.r, p.x, p.xn);
        double e = fd_compare(&p, p.x, dx, p.xn, &gmax);
        fd_report("relu", "200 values", "dx", e, gmax);
        free(p.x), free(p.r), free(p.y), free(dx);
    }
}

static void test_linear_softmax_fd(nn_rng *rng) {
    for (int bias = 1; bias >= 0; bias--) {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.eval = fd_eval;
        p.op = 3;
        p.lin = (nn_linear_desc){7, 5, bias, 0};
        p.n = 3;
        p.xn = 3 * 7, p.yn = 3 * 5;
        p.x = dvec(p.xn), p.w = dvec(35), p.b = bias ? dvec(5) : NULL;
        p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_d(p.x, p.xn, rng, -1, 1), fill_d(p.w, 35, rng, -1, 1), fill_d(p.r, p.yn, rng, -1, 1);
        if (p.b) fill_d(p.b, 5, rng, -1, 1);
        double *dx = dvec(p.xn), *dw = dvec_zero(35), *db = dvec_zero(5), gmax;
        nn_ref_linear_backward(dx, dw, p.b ? db : NULL, p.r, p.x, p.w, &p.lin, p.n);
        const char *what = bias ? "in=7 out=5 n=3" : "in=7 out=5 n=3 no bias";
        double e = fd_compare(&p, p.x, dx, p.xn, &gmax);
        fd_report("linear", what, "dx", e, gmax);
        e = fd_compare(&p, p.w, dw, 35, &gmax);
        fd_report("linear", what, "dw", e, gmax);
        if (p.b) {
            e = fd_compare(&p, p.b, db, 5, &gmax);
            fd_report("linear", what, "db", e, gmax);
        }
        free(p.x), free(p.w), free(p.b), free(p.r), free(p.y), free(dx), free(dw), free(db);
    }
    for (int big = 0; big < 2; big++) {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.eval = fd_eval;
        p.op = 4;
        p.n = 4, p.classes = 6;
        p.xn = 24;
        p.x = dvec(p.xn);
        fill_d(p.x, p.xn, rng, big ? -20 : -2, big ? 20 : 2);
        int32_t labels[4] = {0, 5, 2, 2};
        p.labels = labels;
        double *dz = dvec(p.xn), gmax;
        nn_ref_softmax_ce_backward(dz, p.x, labels, p.classes, p.n);
        double e = fd_compare(&p, p.x, dz, p.xn, &gmax);
        fd_report("softmax_ce", big ? "6 classes n=4 logits +-20" : "6 classes n=4 logits +-2",
                  "dlogits", e, gmax);
        free(p.x), free(dz);
    }
}

/* ------------------------------------------------------------ hand-computed */

static int same_f(const float *a, const double *want, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (!(fabs((double)a[i] - want[i]) <= tol)) return 0;
    return 1;
}

static int same_d(const double *a, const double *want, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (!(fabs(a[i] - want[i]) <= tol)) return 0;
    return 1;
}

static void test_conv_hand(nn_ctx *ctx) {
    /* x (1,1,3,3) = 1 2 3 / 4 5 6 / 7 8 9, w (1,1,2,2) = 1 2 / 3 4, b = 0.5,
     * stride 1, pad 0 -> y (1,1,2,2):
     *   y00 = 1*1 + 2*2 + 4*3 + 5*4 + 0.5 = 37.5   y01 = 2+6+15+24 + 0.5 = 47.5
     *   y10 = 4+10+21+32 + 0.5 = 67.5              y11 = 5+12+24+36 + 0.5 = 77.5
     * backward with dy = 1 everywhere:
     *   db = 4; dw[r][s] = sum of the inputs tap (r,s) sees:
     *   dw = 1+2+4+5, 2+3+5+6 / 4+5+7+8, 5+6+8+9 = 12 16 / 24 28
     *   dx = the sum of w over the windows covering each pixel:
     *   dx = 1 3 2 / 4 10 6 / 3 7 4 */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 2, 3, 4}, b[1] = {0.5f};
    const float ones[4] = {1, 1, 1, 1};
    const double y_want[4] = {37.5, 47.5, 67.5, 77.5}, dw_want[4] = {12, 16, 24, 28};
    const double dx_want[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4}, db_want[1] = {4};
    nn_conv2d_desc d = {1, 3, 3, 1, 2, 2, 2, 2, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0};
    float y[4], dx[9], dw[4] = {0}, db[1] = {0};
    float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
    nn_conv2d_forward(y, x, w, b, &d, 1, ws, ctx);
    nn_conv2d_backward(dx, dw, db, ones, y, x, w, &d, 1, ws, ctx);
    check(same_f(y, y_want, 4, 1e-5), "conv2d hand case 2x2 kernel: fast forward",
          "y = %g %g %g %g", y[0], y[1], y[2], y[3]);
    check(same_f(dx, dx_want, 9, 1e-5) && same_f(dw, dw_want, 4, 1e-5) &&
              same_f(db, db_want, 1, 1e-5),
          "conv2d hand case 2x2 kernel: fast backward", "db = %g", db[0]);
    double xd[9], wd[4], bd[1] = {0.5}, yd[4], dxd[9], dwd[4] = {0}, dbd[1] = {0}, onesd[4];
    for (int i = 0; i < 9; i++) xd[i] = x[i];
    for (int i = 0; i < 4; i++) wd[i] = w[i], onesd[i] = 1.0;
    nn_ref_conv2d_forward(yd, xd, wd, bd, &d, 1);
    nn_ref_conv2d_backward(dxd, dwd, dbd, onesd, xd, wd, &d, 1);
    check(same_d(yd, y_want, 4, 1e-12) && same_d(dxd, dx_want, 9, 1e-12) &&
              same_d(dwd, dw_want, 4, 1e-12) && same_d(dbd, db_want, 1, 1e-12),
          "conv2d hand case 2x2 kernel: reference forward and backward", NULL);

    /* Fused ReLU, b = -50: pre-activations 37-50 = -13, -3, 17, 27, so
     * y = 0 0 17 27 and dy = 1 passes only at the bottom row of outputs:
     *   db = 2; dw = 4+5, 5+6 / 7+8, 8+9 = 9 11 / 15 17
     *   dx = 0 0 0 / 1 3 2 / 3 7 4 */
    {
        const float bneg[1] = {-50.0f};
        const double yr_want[4] = {0, 0, 17, 27}, dwr_want[4] = {9, 11, 15, 17};
        const double dxr_want[9] = {0, 0, 0, 1, 3, 2, 3, 7, 4}, dbr_want[1] = {2};
        d.relu = 1;
        float dwr[4] = {0}, dbr[1] = {0};
        nn_conv2d_forward(y, x, w, bneg, &d, 1, ws, ctx);
        nn_conv2d_backward(dx, dwr, dbr, ones, y, x, w, &d, 1, ws, ctx);
        check(same_f(y, yr_want, 4, 1e-5) && same_f(dx, dxr_want, 9, 1e-5) &&
                  same_f(dwr, dwr_want, 4, 1e-5) && same_f(dbr, dbr_want, 1, 1e-5),
              "conv2d hand case fused ReLU (bias -50): forward and masked backward",
              "y = %g %g %g %g", y[0], y[1], y[2], y[3]);
        d.relu = 0;
    }
    free(ws);

    /* Same x, w = 3x3 of ones, no bias, stride 2, pad 1 -> P = Q = (3+2-3)/2+1
     * = 2; each window covers a 2x2 corner of x:
     *   y = 1+2+4+5, 2+3+5+6 / 4+5+7+8, 5+6+8+9 = 12 16 / 24 28 */
    {
        nn_conv2d_desc d2 = {1, 3, 3, 1, 3, 3, 2, 2, 2, 2, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0};
        const float w9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
        const double want[4] = {12, 16, 24, 28};
        float y2[4];
        float *ws2 = fvec(nn_conv2d_workspace(&d2, ctx->threads));
        nn_conv2d_forward(y2, x, w9, NULL, &d2, 1, ws2, ctx);
        check(same_f(y2, want, 4, 1e-5), "conv2d hand case 3x3 ones, stride 2, pad 1",
              "y = %g %g %g %g", y2[0], y2[1], y2[2], y2[3]);
        free(ws2);
    }
}

static void test_pool_hand(nn_ctx *ctx) {
    /* x (1,1,4,4) =  1 5 2  0
     *                3 4 8  6
     *                7 9 1  2
     *                0 3 4 11
     * 2x2/2: y = 5 8 / 9 11; dy = 1 2 / 3 4 goes to each window's maximum:
     *   dx = 0 1 0 0 / 0 0 2 0 / 0 3 0 0 / 0 0 0 4
     * 3x3/1: y = 9 9 / 9 11 (9 at (2,1) is in three windows); dy = 1:
     *   dx(2,1) = 3, dx(3,3) = 1, the rest 0 */
    const float x[16] = {1, 5, 2, 0, 3, 4, 8, 6, 7, 9, 1, 2, 0, 3, 4, 11};
    const float dy[4] = {1, 2, 3, 4}, ones[4] = {1, 1, 1, 1};
    nn_pool_desc d2 = {1, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0, 0}, d3 = {1, 4, 4, 2, 2, 3, 3, 1, 1, 0, 0, 0};
    const double y2_want[4] = {5, 8, 9, 11}, dx2_want[16] = {0, 1, 0, 0, 0, 0, 2, 0,
                                                              0, 3, 0, 0, 0, 0, 0, 4};
    const double y3_want[4] = {9, 9, 9, 11}, dx3_want[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                              0, 3, 0, 0, 0, 0, 0, 1};
    float y[4], dx[16];
    nn_maxpool_forward(y, x, &d2, 1, ctx);
    nn_maxpool_backward(dx, dy, x, y, &d2, 1, ctx);
    check(same_f(y, y2_want, 4, 0) && same_f(dx, dx2_want, 16, 0),
          "maxpool hand case 4x4, 2x2/2: fast", "y = %g %g %g %g", y[0], y[1], y[2], y[3]);
    nn_maxpool_forward(y, x, &d3, 1, ctx);
    nn_maxpool_backward(dx, ones, x, y, &d3, 1, ctx);
    check(same_f(y, y3_want, 4, 0) && same_f(dx, dx3_want, 16, 0),
          "maxpool hand case 4x4, 3x3/1: fast (gradients of shared maxima add)",
          "y = %g %g %g %g, dx(2,1) = %g", y[0], y[1], y[2], y[3], dx[9]);
    double xd[16], yd[4], dxd[16], dyd[4], onesd[4] = {1, 1, 1, 1};
    for (int i = 0; i < 16; i++) xd[i] = x[i];
    for (int i = 0; i < 4; i++) dyd[i] = dy[i];
    nn_ref_maxpool_forward(yd, xd, &d2, 1);
    nn_ref_maxpool_backward(dxd, dyd, xd, &d2, 1);
    int ok = same_d(yd, y2_want, 4, 0) && same_d(dxd, dx2_want, 16, 0);
    nn_ref_maxpool_forward(yd, xd, &d3, 1);
    nn_ref_maxpool_backward(dxd, onesd, xd, &d3, 1);
    ok = ok && same_d(yd, y3_want, 4, 0) && same_d(dxd, dx3_want, 16, 0);
    check(ok, "maxpool hand case 4x4: reference 2x2/2 and 3x3/1", NULL);

    /* Ties go to the first maximum in row-major order (as PyTorch):
     * windows 2 2 / 2 2 -> (0,0); 1 3 / 3 0 -> (0,1); 0 0 / 4 4 -> (1,0) */
    {
        const float xt[12] = {2, 2, 1, 3, 0, 0, 2, 2, 3, 0, 4, 4};
        nn_pool_desc dt = {1, 2, 6, 1, 3, 2, 2, 2, 2, 0, 0, 0};
        const double dx_want[12] = {1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0};
        const float g[3] = {1, 2, 3};
        float yt[3], dxt[12];
        nn_maxpool_forward(yt, xt, &dt, 1, ctx);
        nn_maxpool_backward(dxt, g, xt, yt, &dt, 1, ctx);
        double xtd[12], gd[3] = {1, 2, 3}, dxtd[12];
        for (int i = 0; i < 12; i++) xtd[i] = xt[i];
        nn_ref_maxpool_backward(dxtd, gd, xtd, &dt, 1);
        /* the same ties through the generic (non-2x2) path: 2x2 stride 1 */
        nn_pool_desc ds = {1, 2, 2, 1, 1, 2, 2, 1, 1, 0, 0, 0};
        const float xs[4] = {2, 2, 2, 2}, gs[1] = {1};
        const double dxs_want[4] = {1, 0, 0, 0};
        float ys[1], dxs[4];
        nn_maxpool_forward(ys, xs, &ds, 1, ctx);
        nn_maxpool_backward(dxs, gs, xs, ys, &ds, 1, ctx);
        check(same_f(dxt, dx_want, 12, 0) && same_d(dxtd, dx_want, 12, 0) &&
                  same_f(dxs, dxs_want, 4, 0),
              "maxpool ties: the gradient goes to the first maximum (fast 2x2, generic, ref)",
              NULL);
    }
}

static void test_relu_linear_softmax_hand(nn_ctx *ctx) {
    /* relu(-2, -0.5, 0, 0.5, 3) = 0 0 0 0.5 3; with dy = 1, dx = 0 0 0 1 1
     * (the derivative at 0 is taken as 0, as in PyTorch) */
    {
        const float x[5] = {-2, -0.5f, 0, 0.5f, 3}, ones[5] = {1, 1, 1, 1, 1};
        const double y_want[5] = {0, 0, 0, 0.5, 3}, dx_want[5] = {0, 0, 0, 1, 1};
        float y[5], dx[5];
        double xd[5], yd[5], dxd[5], od[5] = {1, 1, 1, 1, 1};
        for (int i = 0; i < 5; i++) xd[i] = x[i];
        nn_relu_forward(y, x, 5, ctx);
        nn_relu_backward(dx, ones, y, 5, ctx);
        nn_ref_relu_forward(yd, xd, 5);
        nn_ref_relu_backward(dxd, od, xd, 5);
        check(same_f(y, y_want, 5, 0) && same_f(dx, dx_want, 5, 0) && same_d(yd, y_want, 5, 0) &&
                  same_d(dxd, dx_want, 5, 0),
              "relu hand case (-2, -0.5, 0, 0.5, 3): fast and reference", NULL);
    }
    /* linear: x = (1, 2, 3), w = 1 0 -1 / 2 1 0, b = (0.5, -1):
     *   y = (1 - 3 + 0.5, 2 + 2 - 1) = (-1.5, 3)
     * dy = (1, 1): dx = w^T dy = (3, 1, -1), dw = dy x^T = 1 2 3 / 1 2 3,
     *   db = (1, 1)
     * fused ReLU: y = (0, 3), masked dy = (0, 1): dx = (2, 1, 0),
     *   dw = 0 0 0 / 1 2 3, db = (0, 1) */
    {
        const float x[3] = {1, 2, 3}, w[6] = {1, 0, -1, 2, 1, 0}, b[2] = {0.5f, -1};
        const float ones[2] = {1, 1};
        const double y_want[2] = {-1.5, 3}, dx_want[3] = {3, 1, -1};
        const double dw_want[6] = {1, 2, 3, 1, 2, 3}, db_want[2] = {1, 1};
        const double yr_want[2] = {0, 3}, dxr_want[3] = {2, 1, 0};
        const double dwr_want[6] = {0, 0, 0, 1, 2, 3}, dbr_want[2] = {0, 1};
        nn_linear_desc d = {3, 2, 1, 0};
        float y[2], dx[3], dw[6] = {0}, db[2] = {0}, ws[2];
        nn_linear_forward(y, x, w, b, &d, 1, ctx);
        nn_linear_backward(dx, dw, db, ones, y, x, w, &d, 1, NULL, ctx);
        check(same_f(y, y_want, 2, 1e-6) && same_f(dx, dx_want, 3, 1e-6) &&
                  same_f(dw, dw_want, 6, 1e-6) && same_f(db, db_want, 2, 1e-6),
              "linear hand case in=3 out=2: fast", "y = %g %g", y[0], y[1]);
        double xd[3] = {1, 2, 3}, wd[6] = {1, 0, -1, 2, 1, 0}, bd[2] = {0.5, -1}, od[2] = {1, 1};
        double yd[2], dxd[3], dwd[6] = {0}, dbd[2] = {0};
        nn_ref_linear_forward(yd, xd, wd, bd, &d, 1);
        nn_ref_linear_backward(dxd, dwd, dbd, od, xd, wd, &d, 1);
        check(same_d(yd, y_want, 2, 1e-12) && same_d(dxd, dx_want, 3, 1e-12) &&
                  same_d(dwd, dw_want, 6, 1e-12) && same_d(dbd, db_want, 2, 1e-12),
              "linear hand case in=3 out=2: reference", NULL);
        d.relu = 1;
        memset(dw, 0, sizeof dw), memset(db, 0, sizeof db);
        nn_linear_forward(y, x, w, b, &d, 1, ctx);
        nn_linear_backward(dx, dw, db, ones, y, x, w, &d, 1, ws, ctx);
        check(same_f(y, yr_want, 2, 1e-6) && same_f(dx, dxr_want, 3, 1e-6) &&
                  same_f(dw, dwr_want, 6, 1e-6) && same_f(db, dbr_want, 2, 1e-6),
              "linear hand case in=3 out=2: fused ReLU", "y = %g %g", y[0], y[1]);
    }
    /* softmax CE: logits (0, ln 3) with label 1: p = (1/4, 3/4),
     *   loss = -ln(3/4) = ln(4/3), dlogits = p - onehot = (1/4, -1/4).
     * A batch adding logits (0, 0) with label 0 (p = 1/2, 1/2, loss ln 2):
     *   loss = (ln(4/3) + ln 2) / 2, dlogits = (1/8, -1/8, -1/4, 1/4). */
    {
        const float z[4] = {0.0f, (float)log(3.0), 0.0f, 0.0f};
        const int32_t labels[2] = {1, 0};
        float p[4], dz[4];
        double zd[4], dzd[4];
        for (int i = 0; i < 4; i++) zd[i] = z[i];
        const double g1[2] = {0.25, -0.25}, g2[4] = {0.125, -0.125, -0.25, 0.25};
        float l1 = nn_softmax_ce_forward(p, z, labels, 2, 1);
        nn_softmax_ce_backward(dz, p, labels, 2, 1);
        double lr1 = nn_ref_softmax_ce_forward(zd, labels, 2, 1);
        nn_ref_softmax_ce_backward(dzd, zd, labels, 2, 1);
        check(fabs(l1 - log(4.0 / 3.0)) <= 1e-6 && same_f(dz, g1, 2, 1e-6) &&
                  fabs(lr1 - log(4.0 / 3.0)) <= 1e-7 && same_d(dzd, g1, 2, 1e-7),
              "softmax_ce hand case logits (0, ln 3), label 1: loss ln(4/3)",
              "fast %.7f ref %.9f want %.9f", (double)l1, lr1, log(4.0 / 3.0));
        float l2 = nn_softmax_ce_forward(p, z, labels, 2, 2);
        nn_softmax_ce_backward(dz, p, labels, 2, 2);
        double lr2 = nn_ref_softmax_ce_forward(zd, labels, 2, 2);
        nn_ref_softmax_ce_backward(dzd, zd, labels, 2, 2);
        const double want = (log(4.0 / 3.0) + log(2.0)) / 2;
        check(fabs(l2 - want) <= 1e-6 && same_f(dz, g2, 4, 1e-6) && fabs(lr2 - want) <= 1e-7 &&
                  same_d(dzd, g2, 4, 1e-7),
              "softmax_ce hand case batch of 2: mean loss, gradients divided by n",
              "fast %.7f ref %.9f want %.9f", (double)l2, lr2, want);
    }
}

/* ------------------------------------------------------------ determinism, NaN */

/* Two runs give bit-identical results whatever thread took which image
 * (images go to whichever thread is free); the direct kernels' y and dx do not
 * even depend on the thread count. */
static void conv_determinism_case(const conv_cfg *c, const char *what, int direct,
                                  nn_ctx *const ctxs[2], nn_rng *rng) {
    const nn_conv2d_desc d = conv_desc(c);
    const size_t xn = (size_t)c->n * d.C * d.H * d.W, wn = (size_t)d.K * d.C * d.R * d.S;
    const size_t yn = (size_t)c->n * d.K * d.P * d.Q, f = sizeof(float);
    float *x = fvec(xn), *w = fvec(wn), *b = fvec(d.K), *dy = fvec(yn);
    fill(x, xn, rng, -1, 1), fill(w, wn, rng, -1, 1), fill(b, d.K, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    float *y[2][2], *dx[2][2];
    for (int t = 0; t < 2; t++) {
        nn_ctx *ctx = ctxs[t];
        float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
        float *dw[2], *db[2];
        for (int run = 0; run < 2; run++) {
            y[t][run] = fvec(yn), dx[t][run] = fvec(xn), dw[run] = fvec(wn), db[run] = fvec(d.K);
            memset(dw[run], 0, wn * f);
            memset(db[run], 0, d.K * f);
            nn_conv2d_forward(y[t][run], x, w, b, &d, c->n, ws, ctx);
            nn_conv2d_backward(dx[t][run], dw[run], db[run], dy, y[t][run], x, w, &d, c->n, ws,
                               ctx);
        }
        char name[160];
        snprintf(name, sizeof name, "conv2d deterministic (%s): two runs bit-identical, %d thread%s",
                 what, ctx->threads, ctx->threads > 1 ? "s" : "");
        check(memcmp(y[t][0], y[t][1], yn * f) == 0 && memcmp(dx[t][0], dx[t][1], xn * f) == 0 &&
                  memcmp(dw[0], dw[1], wn * f) == 0 && memcmp(db[0], db[1], d.K * f) == 0,
              name, "y, dx, dw, db of n=%d C=%d %dx%d K=%d", c->n, d.C, d.H, d.W, d.K);
        for (int run = 0; run < 2; run++) free(dw[run]), free(db[run]);
        free(ws);
    }
    if (direct) {
        char name[160];
        snprintf(name, sizeof name, "conv2d %s kernels: y and dx the same for 1 and 2 threads",
                 what);
        check(memcmp(y[0][0], y[1][0], yn * f) == 0 && memcmp(dx[0][0], dx[1][0], xn * f) == 0,
              name, "n=%d C=%d K=%d", c->n, d.C, d.K);
    }
    for (int t = 0; t < 2; t++)
        for (int run = 0; run < 2; run++) free(y[t][run]), free(dx[t][run]);
    free(x), free(w), free(b), free(dy);
}

/* Winograd's forward pass and input gradient of an image do not depend on
 * where it lies in the batch (which vector lanes and groups its tiles take):
 * the last 2 of 5 images alone give the same bytes as among the 5. Data
 * parallelism relies on it (a rank's images are a slice of the batch). */
static void test_conv_batch_place(nn_ctx *ctx, nn_rng *rng) {
    static const conv_cfg shapes[] = {{5, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1},
                                      {5, 32, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1},
                                      {5, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const conv_cfg *c = &shapes[i];
        nn_conv2d_desc d = conv_desc(c);
        if (!nn_conv2d_winograd_ok(&d, ctx)) continue;
        const size_t xs = (size_t)c->C * c->H * c->W, ys = (size_t)c->K * c->H * c->W;
        float *x = fvec(5 * xs), *w = fvec((size_t)c->K * c->C * 9), *b = fvec(c->K);
        float *dy = fvec(5 * ys), *y5 = fvec(5 * ys), *y2 = fvec(2 * ys);
        float *dx5 = fvec(5 * xs), *dx2 = fvec(2 * xs);
        fill(x, 5 * xs, rng, -1, 1), fill(w, (size_t)c->K * c->C * 9, rng, -0.3f, 0.3f);
        fill(b, c->K, rng, -0.1f, 0.1f), fill(dy, 5 * ys, rng, -1, 1);
        float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
        nn_conv2d_forward(y5, x, w, b, &d, 5, ws, ctx);
        nn_conv2d_forward(y2, x + 3 * xs, w, b, &d, 2, ws, ctx);
        nn_conv2d_backward_data_winograd(dx5, dy, y5, w, &d, 5, ws, ctx);
        nn_conv2d_backward_data_winograd(dx2, dy + 3 * ys, y2, w, &d, 2, ws, ctx);
        check(memcmp(y5 + 3 * ys, y2, 2 * ys * sizeof(float)) == 0 &&
                  memcmp(dx5 + 3 * xs, dx2, 2 * xs * sizeof(float)) == 0,
              "conv2d Winograd: an image's y and dx do not depend on its place in the batch",
              "C=%d K=%d %dx%d, %d thread%s", c->C, c->K, c->H, c->W, ctx->threads,
              ctx->threads > 1 ? "s" : "");
        free(x), free(w), free(b), free(dy), free(y5), free(y2), free(dx5), free(dx2), free(ws);
    }
}

static void test_conv_determinism(nn_ctx *const ctxs[2], nn_rng *rng) {
    /* im2col + GEMM: two images per group, 13 images over 2 threads */
    const conv_cfg generic = {13, 8, 30, 30, 6, 3, 3, 1, 1, 1, 1, 1, 1};
    conv_determinism_case(&generic, "im2col", 0, ctxs, rng);
    /* the channels-last direct kernels, where the CPU has them */
    const conv_cfg direct = {13, 32, 9, 9, 48, 3, 3, 1, 1, 1, 1, 1, 1};
    const nn_conv2d_desc d = conv_desc(&direct);
    if (nn_conv2d_winograd_ok(&d, ctxs[0])) {
        conv_determinism_case(&direct, "Winograd", 1, ctxs, rng);
        /* groups of tile rows that start mid-image and span two images */
        const conv_cfg wide = {5, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1, 1, 1};
        conv_determinism_case(&wide, "Winograd, 28x28", 1, ctxs, rng);
    } else if (nn_conv2d_direct_ok(&d, ctxs[0])) {
        conv_determinism_case(&direct, "direct", 1, ctxs, rng);
    }
}

/* Winograd F(2x2,3x3) against the reference: the shapes its tiles find
 * hardest, and which shapes take it. */
static void test_conv_winograd(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const named_conv shapes[] = {
        /* odd sizes: the last tile row and column half outside */
        {"Winograd: C=24 K=40, 9x13 (odd rows and columns)",
         {3, 24, 9, 13, 40, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* 19 tiles per row: two 16-tile vectors, a column carried across them */
        {"Winograd: C=16 K=24, 7x37 (two tile vectors per row)",
         {2, 16, 7, 37, 24, 3, 3, 1, 1, 1, 1, 1, 0}},
        {"Winograd: C=16 K=16, 6x64 (two full tile vectors)",
         {2, 16, 6, 64, 16, 3, 3, 1, 1, 1, 1, 0, 1}},
        {"Winograd: C=16 K=32, 1x1 input",
         {3, 16, 1, 1, 32, 3, 3, 1, 1, 1, 1, 1, 1}},
        {"Winograd: C=32 K=16, 2x2 input",
         {3, 32, 2, 2, 16, 3, 3, 1, 1, 1, 1, 1, 0}},
        /* K = 8 mod 16: a half block of packed weights */
        {"Winograd: C=40 K=24, 14x14 (seed conv2-like)",
         {4, 40, 14, 14, 24, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* groups of 8 tile rows: two 7x7 images and a part of a third per group */
        {"Winograd: C=K=256, 7x7, 5 images",
         {5, 256, 7, 7, 256, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* F(4x4) with AVX-512: two rows of 7 tiles per vector */
        {"Winograd: C=16 K=16, 28x28, 3 images (F(4x4): 2 tile rows of 7 per vector)",
         {3, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* three rows of 5 tiles, the last tile column 1 wide, 11 tile rows */
        {"Winograd: C=32 K=24, 41x17 (F(4x4): 3 tile rows of 5 per vector)",
         {2, 32, 41, 17, 24, 3, 3, 1, 1, 1, 1, 0, 1}},
        /* 25 wide: 7 tiles, the last one 1 column */
        {"Winograd: C=24 K=32, 6x25 (F(4x4): the last tile 1 column wide)",
         {3, 24, 6, 25, 32, 3, 3, 1, 1, 1, 1, 1, 0}},
        /* F(4x4) with AVX2: 8-lane vectors of 2 rows of 4 tiles, column 15
         * (the last tile's fifth) inside the image */
        {"Winograd: C=16 K=24, 10x16, 3 images (F(4x4) AVX2: 2 tile rows of 4, w = 4 tw)",
         {3, 16, 10, 16, 24, 3, 3, 1, 1, 1, 1, 1, 1}},
        /* 4 rows of 2 tiles per 8 lanes, w = 4 tw; 5 tile rows: a part vector */
        {"Winograd: C=24 K=16, 18x8, 1 image (F(4x4) AVX2: 4 tile rows of 2, a part vector)",
         {1, 24, 18, 8, 16, 3, 3, 1, 1, 1, 1, 0, 1}},
    };
    conv_run_chosen(shapes, sizeof shapes / sizeof shapes[0], nn_conv2d_winograd_ok,
                    "conv2d Winograd chosen for", ctxs, rng);
    /* not taken: stride 2, pad 0, 5x3, channels not a multiple of 8, bf16 */
    static const conv_cfg others[] = {{1, 16, 8, 8, 16, 3, 3, 2, 2, 1, 1, 1, 1},
                                      {1, 16, 8, 8, 16, 3, 3, 1, 1, 0, 0, 1, 1},
                                      {1, 16, 8, 8, 16, 5, 3, 1, 1, 1, 1, 1, 1},
                                      {1, 12, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1},
                                      {1, 16, 8, 8, 20, 3, 3, 1, 1, 1, 1, 1, 1}};
    int taken = 0;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const nn_conv2d_desc d = conv_desc(&others[i]);
        taken += nn_conv2d_winograd_ok(&d, ctxs[0]);
    }
    nn_conv2d_desc b = conv_desc(&shapes[0].c);
    b.bf16 = 1;
    taken += nn_conv2d_winograd_ok(&b, ctxs[0]);
    check(taken == 0, "conv2d Winograd not chosen for shapes it does not take",
          "%d of 6 taken", taken);
}

static void test_pool_nan(nn_ctx *ctx) {
    /* 2x2/2 on 4x4 (the vectorized path): NaN first in window (0,0), last in
     * window (0,1), second in window (1,0); window (1,1) has none */
    {
        float x[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        x[0] = NAN, x[7] = NAN, x[9] = NAN;
        nn_pool_desc d = {1, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0, 0};
        const float dy[4] = {1, 2, 3, 4};
        float y[4], dx[16];
        nn_maxpool_forward(y, x, &d, 1, ctx);
        check(isnan(y[0]) && isnan(y[1]) && isnan(y[2]) && y[3] == 16.0f,
              "maxpool NaN: 2x2/2 window with a NaN (first, last, middle) gives NaN",
              "y = %g %g %g %g", y[0], y[1], y[2], y[3]);
        nn_maxpool_backward(dx, dy, x, y, &d, 1, ctx);
        check(dx[0] == 1 && dx[7] == 2 && dx[9] == 3 && dx[15] == 4 && dx[1] == 0 &&
                  dx[4] == 0 && dx[5] == 0 && dx[6] == 0 && dx[8] == 0,
              "maxpool NaN: 2x2/2 gradient goes to the NaN element", NULL);
    }
    /* the generic path: 3x3/2 pad 1 on 5x5 with NaN at the centre (2,2), in
     * window (1,1) only; and NaN as the last element after larger values */
    {
        float x[25];
        for (int i = 0; i < 25; i++) x[i] = (float)i;
        x[12] = NAN;
        nn_pool_desc d = {1, 5, 5, 3, 3, 3, 3, 2, 2, 1, 1, 0};
        float y[9], dx[25], dy[9];
        for (int i = 0; i < 9; i++) dy[i] = 1.0f;
        nn_maxpool_forward(y, x, &d, 1, ctx);
        int ok = isnan(y[4]);
        for (int i = 0; i < 9; i++)
            if (i != 4 && isnan(y[i])) ok = 0;
        check(ok, "maxpool NaN: 3x3/2 pad 1, NaN only in the windows that contain it",
              "y(1,1) = %g, y(0,0) = %g", y[4], y[0]);
        nn_maxpool_backward(dx, dy, x, y, &d, 1, ctx);
        check(dx[12] == 1.0f, "maxpool NaN: 3x3/2 pad 1 gradient goes to the NaN element",
              "dx(2,2) = %g", dx[12]);
        float x3[9] = {9, 8, 7, 6, 5, 4, 3, 2, NAN}, y3[1];
        nn_pool_desc d3 = {1, 3, 3, 1, 1, 3, 3, 1, 1, 0, 0, 0};
        nn_maxpool_forward(y3, x3, &d3, 1, ctx);
        check(isnan(y3[0]), "maxpool NaN: 3x3 window with NaN last (after larger values)",
              "y = %g", y3[0]);
    }
    /* several planes and threads: only the plane holding the NaN is affected */
    {
        nn_ctx *c2 = test_ctx_new(2);
        nn_ctx_set_isa(c2, nn_ctx_isa(ctx));
        nn_pool_desc d = {3, 6, 6, 3, 3, 2, 2, 2, 2, 0, 0, 0};
        float x[2 * 3 * 36], y[2 * 3 * 9];
        for (int i = 0; i < 216; i++) x[i] = (float)(i % 17);
        x[4 * 36 + 7] = NAN; /* image 1, channel 1, (1,1): window (0,0) */
        nn_maxpool_forward(y, x, &d, 2, c2);
        int ok = 1;
        for (int i = 0; i < 54; i++)
            if ((i == 4 * 9) != (isnan(y[i]) != 0)) ok = 0;
        check(ok, "maxpool NaN: batch of 2 x 3 channels on 2 threads, one NaN output", NULL);
        nn_ctx_free(c2);
    }
}

/* The GEMM behind linear layers and the im2col convolutions runs OpenBLAS
 * kernels fit for the CPU: on a CPU with AVX2 and FMA, kernels of that level or
 * wider, even where OpenBLAS's own choice was older (nn_blas_core). */
static void test_blas_core(void) {
    const char *core = nn_blas_core(), *replaced = nn_blas_replaced_core();
    printf("OpenBLAS core %s%s%s\n", core ? core : "?", replaced ? ", replacing " : "",
           replaced ? replaced : "");
    const nn_cpu_features *f = nn_cpu_probe();
    if (getenv("OPENBLAS_CORETYPE") || !f->avx2 || !f->fma) {
        printf("SKIP OpenBLAS core check: OPENBLAS_CORETYPE set or no AVX2+FMA\n");
        return;
    }
    static const char *const wide[] = {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids",
                                       "Zen", "Excavator", "Steamroller"};
    int ok = 0;
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (core && strncmp(core, wide[i], strlen(wide[i])) == 0) ok = 1;
    check(ok, "OpenBLAS runs AVX2-or-wider kernels on this AVX2 CPU", "core %s", core ? core : "?");
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512cd && replaced)
        check(strcmp(core, "SkylakeX") == 0 || strcmp(core, "Cooperlake") == 0,
              "a replaced core uses AVX-512 on an AVX-512 CPU", "core %s", core);
}

/* nn_sgemm with one row of C (a matrix-vector product inside): every
 * transpose combination, padded leading dimensions, beta 0 over a C that
 * holds NaN (never read) and beta 0.5, against a double product. */
static void test_sgemm_one_row(nn_rng *rng) {
    enum { N = 37, K = 53, PAD = 3 };
    double worst = 0.0;
    int nan_seen = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bz = 0; bz < 2; bz++) {
                const int lda = (ta ? 1 : K) + PAD, ldb = (tb ? K : N) + PAD;
                float A[(K + PAD) * (K + PAD)], B[(K + PAD) * (N + PAD)], C[N];
                fill(A, sizeof A / sizeof A[0], rng, -1.0f, 1.0f);
                fill(B, sizeof B / sizeof B[0], rng, -1.0f, 1.0f);
                fill(C, N, rng, -1.0f, 1.0f);
                if (bz)
                    for (int j = 0; j < N; j++) C[j] = NAN;
                double want[N];
                const float alpha = 0.7f, beta = bz ? 0.0f : 0.5f;
                for (int j = 0; j < N; j++) {
                    double s = 0.0;
                    for (int k = 0; k < K; k++)
                        s += (double)(ta ? A[k * lda] : A[k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    want[j] = alpha * s + (bz ? 0.0 : beta * (double)C[j]);
                }
                nn_sgemm(ta, tb, 1, N, K, alpha, A, lda, B, ldb, beta, C, N);
                for (int j = 0; j < N; j++) {
                    if (isnan(C[j])) nan_seen = 1;
                    worst = fmax(worst, fabs(C[j] - want[j]) / (1.0 + fabs(want[j])));
                }
            }
    check(!nan_seen && worst < 1e-5,
          "nn_sgemm with one row of C (gemv): every transpose, padded strides, beta 0 over NaN",
          "max error %.2e%s", worst, nan_seen ? ", NaN in C" : "");
}

/* The prologue's map in SIMD lanes (nn_map_lanes_v, nn_avx2_map: a batch
 * norm's normalizing pass read by the next layer's loads) against the scalar
 * nn_map_value, bit for bit, on the values where a ReLU may go wrong: -0 and
 * +0 results (x a = -0 with b = -0 gives -0, which the ReLU makes +0), NaN
 * (kept), infinities, denormals. The fused and unfused passes of a model
 * must give the same bytes (test_fusion), and random data seldom lands on
 * these. With AVX-512 also the lanes outside keep: zero. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"
#include "backend/simd_avx512.h"

static const float MAP_X[16] = {0.0f, -0.0f, 1.0f, -1.0f, 3.5f, -2.25f, 1e-40f, -1e-40f,
                                INFINITY, -INFINITY, NAN, -NAN, 1e30f, -1e30f, 0.5f, -7.0f};
static const float MAP_AB[7][2] = {{1.0f, 0.0f},  {1.0f, -0.0f}, {-1.0f, -0.0f}, {0.5f, -1.0f},
                                   {-2.0f, 1.0f}, {0.0f, -0.0f}, {1e-20f, 1e-45f}};

/* the scalar map as it runs (not folded by the compiler, which may drop a
 * NaN's sign where the CPU keeps it) */
static __attribute__((noinline)) float map_scalar(float x, float a, float b, int relu) {
    volatile float vx = x;
    return nn_map_value(vx, a, b, relu);
}

static uint32_t bits_of(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

__attribute__((target("avx512f"))) static int map_avx512_mismatches(int relu, __mmask16 keep) {
    int bad = 0;
    for (int k = 0; k < 7; k++) {
        float got[16];
        const __m512 v = nn_map_lanes_v(_mm512_loadu_ps(MAP_X), _mm512_set1_ps(MAP_AB[k][0]),
                                        _mm512_set1_ps(MAP_AB[k][1]), relu, keep);
        _mm512_storeu_ps(got, v);
        for (int l = 0; l < 16; l++) {
            const float want =
                keep >> l & 1 ? map_scalar(MAP_X[l], MAP_AB[k][0], MAP_AB[k][1], relu) : 0.0f;
            bad += bits_of(got[l]) != bits_of(want);
        }
    }
    return bad;
}

__attribute__((target("avx2,fma"))) static int map_avx2_mismatches(int relu) {
    int bad = 0;
    for (int k = 0; k < 7; k++)
        for (int h = 0; h < 2; h++) {
            float got[8];
            _mm256_storeu_ps(got, nn_avx2_map(_mm256_loadu_ps(MAP_X + 8 * h),
                                              _mm256_set1_ps(MAP_AB[k][0]),
                                              _mm256_set1_ps(MAP_AB[k][1]), relu));
            for (int l = 0; l < 8; l++)
                bad += bits_of(got[l]) !=
                       bits_of(map_scalar(MAP_X[8 * h + l], MAP_AB[k][0], MAP_AB[k][1], relu));
        }
    return bad;
}
#endif

static void test_prologue_map_bits(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    /* the cases must include a -0 result and a NaN one */
    check(bits_of(map_scalar(MAP_X[1], MAP_AB[1][0], MAP_AB[1][1], 0)) == 0x80000000u &&
              bits_of(map_scalar(MAP_X[1], MAP_AB[1][0], MAP_AB[1][1], 1)) == 0u &&
              isnan(map_scalar(MAP_X[10], 1.0f, 0.0f, 1)),
          "prologue map cases: a -0 result (made +0 by the ReLU) and a NaN (kept)", NULL);
    if (__builtin_cpu_supports("avx512f"))
        for (int relu = 0; relu < 2; relu++) {
            const int all = map_avx512_mismatches(relu, 0xFFFF);
            const int some = map_avx512_mismatches(relu, 0x5A3C);
            check(all == 0,
                  relu ? "AVX-512 prologue map + ReLU: the scalar map's bits"
                       : "AVX-512 prologue map: the scalar map's bits",
                  "%d of 112 lanes differ", all);
            check(some == 0, "AVX-512 prologue map: zero outside keep", "%d of 112 lanes differ",
                  some);
        }
    else
        printf("SKIP AVX-512 prologue map: no AVX-512\n");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        for (int relu = 0; relu < 2; relu++) {
            const int bad = map_avx2_mismatches(relu);
            check(bad == 0,
                  relu ? "AVX2 prologue map + ReLU: the scalar map's bits"
                       : "AVX2 prologue map: the scalar map's bits",
                  "%d of 112 lanes differ", bad);
        }
    else
        printf("SKIP AVX2 prologue map: no AVX2 + FMA\n");
#else
    printf("SKIP prologue map: no x86-64 SIMD kernels in this build\n");
#endif
}

int main(void) {
    nn_ctx *ctx1 = test_ctx_new(1), *ctx2 = test_ctx_new(2);
    if (!ctx1 || !ctx2) return 2;
    nn_ctx *const ctxs[2] = {ctx1, ctx2};
    nn_rng rng;
    nn_rng_seed(&rng, 20240607, 11);

    test_blas_core();
    test_prologue_map_bits();
    test_sgemm_one_row(&rng);
    test_relu_linear_softmax_hand(ctx1);

    test_conv_fd(&rng);
    test_pool_relu_fd(&rng);
    test_linear_softmax_fd(&rng);

    /* every conv2d kernel variant this CPU can run: the portable im2col+GEMM
     * path, Winograd with AVX2 for the 3x3 'same' shapes it takes (F(2x2)
     * alone, then F(4x4) where the widths fit; the rest stays portable at
     * that level) and, where the CPU has AVX-512, the direct kernels alone
     * and with AVX-512 Winograd */
    static const struct {
        nn_isa isa;
        int winograd; /* nn_ctx_set_winograd: 2 = F(2x2, 3x3) alone */
    } variants[6] = {{NN_ISA_GENERIC, 0}, {NN_ISA_AVX2, 2},   {NN_ISA_AVX2, 1},
                     {NN_ISA_AVX512, 0},  {NN_ISA_AVX512, 2}, {NN_ISA_AVX512, 1}};
    for (int v = 0; v < 6; v++) {
        if (nn_ctx_set_isa(ctx1, variants[v].isa) || nn_ctx_set_isa(ctx2, variants[v].isa)) {
            printf("SKIP conv2d %s kernels: %s\n", nn_isa_name(variants[v].isa),
                   nn_ctx_error(ctx1));
            continue;
        }
        nn_ctx_set_winograd(ctx1, variants[v].winograd);
        nn_ctx_set_winograd(ctx2, variants[v].winograd);
        printf("== conv2d and max-pool with %s kernels%s\n", nn_isa_name(variants[v].isa),
               variants[v].winograd == 2 ? " and Winograd F(2x2, 3x3) alone"
               : variants[v].winograd    ? " and Winograd"
                                         : "");
        test_conv_hand(ctx1);
        test_conv_fast_vs_ref(ctxs, &rng);
        test_conv_determinism(ctxs, &rng);
        if (variants[v].winograd) {
            test_conv_winograd(ctxs, &rng);
            for (int t = 0; t < 2; t++) test_conv_batch_place(ctxs[t], &rng);
            if (variants[v].isa != NN_ISA_AVX2 || variants[v].winograd == 1)
                continue; /* the max-pool kernels are the same as above */
        }
        test_pool_hand(ctx1);
        test_pool_fast_vs_ref(ctxs, &rng);
        test_pool_nan(ctx1);
    }
    test_relu_fast_vs_ref(ctxs, &rng);
    test_linear_fast_vs_ref(ctxs, &rng);
    test_softmax_fast_vs_ref(&rng);

    nn_ctx_free(ctx1);
    nn_ctx_free(ctx2);
    return test_summary();
}
