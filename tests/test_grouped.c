/*
 * test_grouped.c - grouped and depthwise convolution (conv2d groups=G): the
 * CPU kernels against the double reference on random inputs (1 and 2
 * threads, with and without the fused ReLU), the reference against central
 * finite differences, and the model-file rules (weight shape (K, C/G, R, S),
 * groups must divide both channel counts).
 */
#include "test_util.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

static nn_conv2d_desc desc(int C, int H, int W, int K, int R, int stride, int pad, int groups,
                           int relu) {
    nn_conv2d_desc d = {0};
    d.C = C, d.H = H, d.W = W, d.K = K, d.R = R, d.S = R;
    d.stride_h = d.stride_w = stride;
    d.pad_h = d.pad_w = pad;
    d.P = (H + 2 * pad - R) / stride + 1;
    d.Q = (W + 2 * pad - R) / stride + 1;
    d.has_bias = 1;
    d.relu = relu;
    d.groups = groups;
    return d;
}

static void fill_both(nn_rng *rng, float *f, double *g, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = f[i] = 2.0f * nn_rng_uniform(rng) - 1.0f;
}

static double rel_err(const float *a, const double *b, size_t n) {
    double scale = 1.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]) / scale);
    return worst;
}

static void fast_vs_ref(nn_ctx *ctx, nn_rng *rng, nn_conv2d_desc d, int n, const char *what) {
    const size_t xn = (size_t)n * d.C * d.H * d.W, yn = (size_t)n * d.K * d.P * d.Q;
    const size_t wn = (size_t)d.K * (d.C / d.groups) * d.R * d.S;
    float *x = xmalloc(xn * 4), *w = xmalloc(wn * 4), *b = xmalloc(d.K * 4), *y = xmalloc(yn * 4);
    float *dy = xmalloc(yn * 4), *dx = xmalloc(xn * 4), *dw = xmalloc(wn * 4), *db = xmalloc(d.K * 4);
    double *X = xmalloc(xn * 8), *Wt = xmalloc(wn * 8), *B = xmalloc(d.K * 8), *Y = xmalloc(yn * 8);
    double *DY = xmalloc(yn * 8), *DX = xmalloc(xn * 8), *DW = xmalloc(wn * 8), *DB = xmalloc(d.K * 8);
    fill_both(rng, x, X, xn);
    fill_both(rng, w, Wt, wn);
    fill_both(rng, b, B, (size_t)d.K);
    fill_both(rng, dy, DY, yn);
    float *ws = xmalloc(nn_conv2d_workspace(&d, nn_ctx_threads(ctx)) * 4);
    nn_conv2d_forward(y, x, w, b, &d, n, ws, ctx);
    nn_ref_conv2d_forward(Y, X, Wt, B, &d, n);
    if (d.relu)
        for (size_t i = 0; i < yn; i++) {
            Y[i] = Y[i] > 0 ? Y[i] : 0;
            if (Y[i] <= 1e-4) DY[i] = dy[i] = 0.0f; /* away from the kink */
        }
    memset(dw, 0, wn * 4);
    memset(db, 0, (size_t)d.K * 4);
    memset(DW, 0, wn * 8);
    memset(DB, 0, (size_t)d.K * 8);
    nn_conv2d_backward(dx, dw, db, dy, y, x, w, &d, n, ws, ctx);
    nn_ref_conv2d_backward(DX, DW, DB, DY, X, Wt, &d, n);
    double ey = rel_err(y, Y, yn), ex = rel_err(dx, DX, xn), ew = rel_err(dw, DW, wn),
           eb = rel_err(db, DB, (size_t)d.K);
    check(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5, what,
          "errors y %.2g dx %.2g dw %.2g db %.2g", ey, ex, ew, eb);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(ws);
    free(X), free(Wt), free(B), free(Y), free(DY), free(DX), free(DW), free(DB);
}

/* reference gradient of sum(y * r) against central differences */
static void finite_differences(nn_rng *rng) {
    nn_conv2d_desc d = desc(4, 5, 5, 6, 3, 1, 1, 2, 0);
    const int n = 2;
    const size_t xn = (size_t)n * 4 * 25, yn = (size_t)n * 6 * 25, wn = 6 * 2 * 9;
    double *x = xmalloc(xn * 8), *w = xmalloc(wn * 8), *b = xmalloc(6 * 8), *y = xmalloc(yn * 8);
    double *r = xmalloc(yn * 8), *dx = xmalloc(xn * 8), *dw = xmalloc(wn * 8), *db = xmalloc(6 * 8);
    for (size_t i = 0; i < xn; i++) x[i] = nn_rng_uniform(rng) - 0.5;
    for (size_t i = 0; i < wn; i++) w[i] = nn_rng_uniform(rng) - 0.5;
    for (int i = 0; i < 6; i++) b[i] = nn_rng_uniform(rng) - 0.5;
    for (size_t i = 0; i < yn; i++) r[i] = nn_rng_uniform(rng) - 0.5;
    memset(dw, 0, wn * 8);
    memset(db, 0, 6 * 8);
    nn_ref_conv2d_backward(dx, dw, db, r, x, w, &d, n);
    double worst = 0.0, norm = 0.0;
    for (size_t i = 0; i < wn; i++) {
        double keep = w[i], lp = 0, lm = 0;
        w[i] = keep + 1e-6;
        nn_ref_conv2d_forward(y, x, w, b, &d, n);
        for (size_t j = 0; j < yn; j++) lp += y[j] * r[j];
        w[i] = keep - 1e-6;
        nn_ref_conv2d_forward(y, x, w, b, &d, n);
        for (size_t j = 0; j < yn; j++) lm += y[j] * r[j];
        w[i] = keep;
        double fd = (lp - lm) / 2e-6;
        worst = fmax(worst, fabs(fd - dw[i]) / fmax(1.0, fabs(fd)));
        norm += fabs(dw[i]);
    }
    check(worst < 1e-6 && norm > 0, "grouped reference: weight gradient = finite differences",
          "worst %.2g, |dw| %.3g", worst, norm);
    free(x), free(w), free(b), free(y), free(r), free(dx), free(dw), free(db);
}

int main(void) {
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);
    nn_rng rng;
    nn_rng_seed(&rng, 5, 9);
    nn_ctx *ctxs[2] = {c1, c2};
    for (int t = 0; t < 2; t++) {
        char name[96];
        snprintf(name, sizeof name, "groups=2 3x3 pad 1 (T=%d)", t + 1);
        fast_vs_ref(ctxs[t], &rng, desc(4, 7, 9, 6, 3, 1, 1, 2, 0), 3, name);
        snprintf(name, sizeof name, "depthwise 3x3 stride 2 + ReLU (T=%d)", t + 1);
        fast_vs_ref(ctxs[t], &rng, desc(8, 9, 9, 8, 3, 2, 1, 8, 1), 5, name);
        snprintf(name, sizeof name, "depthwise multiplier 2, 1x1 groups=4 (T=%d)", t + 1);
        fast_vs_ref(ctxs[t], &rng, desc(4, 6, 6, 8, 3, 1, 1, 4, 0), 2, name);
        fast_vs_ref(ctxs[t], &rng, desc(8, 6, 6, 8, 1, 1, 0, 4, 0), 4, "pointwise groups=4");
        fast_vs_ref(ctxs[t], &rng, desc(6, 14, 14, 12, 3, 1, 1, 1, 1), 3, "groups=1 unchanged");
    }
    finite_differences(&rng);
    /* model file: a depthwise-separable block */
    nn_net *net = NULL;
    nn_status st = nn_net_parse(c1,
                                "input shape=8x6x6\nconv2d name=dw out=8 kernel=3 pad=1 groups=8\n"
                                "relu\nconv2d name=pw out=16 kernel=1\nrelu\ngap\nlinear out=3\n"
                                "softmax_ce\n",
                                "dws.nn", &net);
    check(st == NN_OK, "depthwise-separable block parses", "%s", ctx_err(c1, st));
    if (st == NN_OK) {
        const nn_param_info *p = nn_net_param_info(net, 0);
        check(shape_is(&p->shape, 4, 8, 1, 3, 3) && p->fan_in == 9,
              "depthwise weight is (K, C/groups, R, S) with fan-in C/groups*R*S", "fan_in %d", p->fan_in);
        nn_layer_info li;
        nn_net_layer_info(net, 1, &li);
        check(li.flops == 2LL * 8 * 36 * 9 && li.params == 8 * 9 + 8, "depthwise FLOPs and parameters",
              "%lld FLOPs, %lld params", (long long)li.flops, (long long)li.params);
        nn_net_free(net);
    }
    net = NULL;
    st = nn_net_parse(c1, "input shape=6x4x4\nconv2d out=8 kernel=3 groups=4\nflatten\nlinear out=2\nsoftmax_ce\n",
                      "bad.nn", &net);
    check(st != NN_OK && contains(nn_ctx_error(c1), "bad.nn:2") && contains(nn_ctx_error(c1), "groups=4"),
          "groups that do not divide the channels are refused", "%s", nn_ctx_error(c1));
    nn_net_free(net);
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    return test_summary();
}
