/*
 * test_depthwise.c - the direct depthwise kernels (conv2d_depthwise.c), the
 * 1x1 GEMM kernels (conv2d.c "pointwise") and the stride-2 phase kernels
 * (conv2d_phase_avx2.c, AVX2 loops only): against the double reference on
 * random inputs (odd sizes, strides 1 to 4, padding up to beyond the kernel,
 * batches of 1 and 3, fused ReLU, with and without bias), with the portable
 * and the AVX-512 loops, on 1 and 2 threads: through nn_conv2d_forward and
 * _backward with a guard band after the workspace, and through the depthwise
 * entry points with a workspace of exactly the size they ask for (the
 * sanitizer build catches any access past it). The reference's depthwise
 * gradients against central finite differences, and one hand-computed case.
 */
#include "test_util.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

typedef struct {
    const char *what;
    int C, H, W, K, R, S, sh, sw, ph, pw, groups, relu, bias, n;
} conv_case;

static nn_conv2d_desc desc_of(const conv_case *c) {
    nn_conv2d_desc d = {0};
    d.C = c->C, d.H = c->H, d.W = c->W, d.K = c->K, d.R = c->R, d.S = c->S;
    d.stride_h = c->sh, d.stride_w = c->sw, d.pad_h = c->ph, d.pad_w = c->pw;
    d.P = (c->H + 2 * c->ph - c->R) / c->sh + 1;
    d.Q = (c->W + 2 * c->pw - c->S) / c->sw + 1;
    d.groups = c->groups;
    d.has_bias = c->bias;
    d.relu = c->relu;
    return d;
}

static float *nan_vec(size_t n) {
    float *v = fvec(n);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    return v;
}

#define GUARD 64 /* floats after the workspace that no kernel may write */

/* Forward and backward through nn_conv2d_forward/backward (which must pick
 * `kernel`) and, for depthwise shapes, through the depthwise entry points
 * with an exact workspace; all against the reference. y and dx start as NaN
 * so that an output left unwritten fails. */
static void fast_vs_ref(nn_ctx *ctx, nn_rng *rng, const conv_case *c, const char *kernel,
                        const char *variant) {
    const nn_conv2d_desc d = desc_of(c);
    const int n = c->n;
    const size_t xn = (size_t)n * d.C * d.H * d.W, yn = (size_t)n * d.K * d.P * d.Q;
    const size_t wn = (size_t)d.K * (d.C / d.groups) * d.R * d.S;
    float *x = fvec(xn), *w = fvec(wn), *b = fvec((size_t)d.K), *dy = fvec(yn);
    fill(x, xn, rng, -1, 1);
    fill(w, wn, rng, -1, 1);
    fill(b, (size_t)d.K, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    double *X = to_d(x, xn), *Wd = to_d(w, wn), *B = to_d(b, (size_t)d.K), *Y = dvec(yn);
    double *DX = dvec(xn), *DW = dvec(wn), *DB = dvec((size_t)d.K);
    nn_ref_conv2d_forward(Y, X, Wd, c->bias ? B : NULL, &d, n);
    if (d.relu)
        for (size_t i = 0; i < yn; i++) {
            Y[i] = Y[i] > 0 ? Y[i] : 0;
            if (Y[i] <= 1e-4) dy[i] = 0.0f; /* away from the kink; the kernel masks it too */
        }
    double *DY = to_d(dy, yn);
    memset(DW, 0, wn * sizeof(double));
    memset(DB, 0, (size_t)d.K * sizeof(double));
    nn_ref_conv2d_backward(DX, DW, DB, DY, X, Wd, &d, n);

    const int depthwise = strcmp(kernel, "depthwise") == 0;
    for (int path = 0; path < 1 + depthwise; path++) {
        const int T = nn_ctx_threads(ctx);
        const size_t wsn = path ? nn_conv2d_depthwise_workspace(&d, T) : nn_conv2d_workspace(&d, T);
        /* the exact workspace has no guard band, so that the sanitizer build
         * catches a read past its end as well */
        const size_t guard = path ? 0 : GUARD;
        float *ws = fvec(wsn + guard);
        for (size_t i = 0; i < guard; i++) ws[wsn + i] = 12345.0f;
        float *y = nan_vec(yn), *dx = nan_vec(xn), *dw = fvec(wn), *db = fvec((size_t)d.K);
        /* dw and db accumulate: start from 1 and take it off afterwards */
        for (size_t i = 0; i < wn; i++) dw[i] = 1.0f;
        for (int k = 0; k < d.K; k++) db[k] = 1.0f;
        const float *bias = c->bias ? b : NULL;
        float *dbias = c->bias ? db : NULL;
        if (path) {
            nn_conv2d_forward_depthwise(y, x, w, bias, &d, n, ws, ctx);
            nn_conv2d_backward_depthwise(dx, dw, dbias, dy, y, x, w, &d, n, ws, ctx);
        } else {
            nn_conv2d_forward(y, x, w, bias, &d, n, ws, ctx);
            nn_conv2d_backward(dx, dw, dbias, dy, y, x, w, &d, n, ws, ctx);
        }
        for (size_t i = 0; i < wn; i++) dw[i] -= 1.0f;
        for (int k = 0; k < d.K; k++) db[k] -= 1.0f;
        int guard_ok = 1;
        for (size_t i = 0; i < guard; i++) guard_ok &= ws[wsn + i] == 12345.0f;
        const double ey = max_err(y, Y, yn), ex = max_err(dx, DX, xn), ew = max_err(dw, DW, wn);
        const double eb = c->bias ? max_err(db, DB, (size_t)d.K) : 0.0;
        const char *ran = nn_conv2d_kernel_name(&d, ctx);
        char name[200];
        snprintf(name, sizeof name, "%s %s (%s, T=%d%s)", kernel, c->what, variant, T,
                 path ? ", exact workspace" : "");
        check(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5 && guard_ok &&
                  strcmp(ran, kernel) == 0,
              name, "errors y %.2g dx %.2g dw %.2g db %.2g, guard %s, kernel %s", ey, ex, ew, eb,
              guard_ok ? "intact" : "OVERWRITTEN", ran);
        /* the same dw without dx (a first layer's backward) */
        for (size_t i = 0; i < wn; i++) dw[i] = 0.0f;
        if (path) nn_conv2d_backward_depthwise(NULL, dw, NULL, dy, y, x, w, &d, n, ws, ctx);
        else nn_conv2d_backward(NULL, dw, NULL, dy, y, x, w, &d, n, ws, ctx);
        const double ew0 = max_err(dw, DW, wn);
        check(ew0 < 1e-5, name, "without dx: dw error %.2g", ew0);
        free(ws), free(y), free(dx), free(dw), free(db);
    }
    free(x), free(w), free(b), free(dy), free(X), free(Wd), free(B), free(Y), free(DY);
    free(DX), free(DW), free(DB);
}

/* y and dx of the depthwise kernels do not depend on the thread count (each
 * plane is one thread's), and dw and db are the same on every run. */
static void thread_invariance(nn_ctx *c1, nn_ctx *c2, nn_rng *rng) {
    const conv_case c = {"", 24, 13, 11, 24, 3, 3, 2, 2, 1, 1, 24, 1, 1, 3};
    const nn_conv2d_desc d = desc_of(&c);
    const size_t xn = (size_t)c.n * d.C * d.H * d.W, yn = (size_t)c.n * d.K * d.P * d.Q;
    const size_t wn = (size_t)d.K * d.R * d.S;
    float *x = fvec(xn), *w = fvec(wn), *b = fvec((size_t)d.K), *dy = fvec(yn);
    fill(x, xn, rng, -1, 1), fill(w, wn, rng, -1, 1), fill(b, (size_t)d.K, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    float *y[3], *dx[3], *dw[3];
    nn_ctx *ctxs[3] = {c1, c2, c2};
    for (int r = 0; r < 3; r++) {
        float *ws = fvec(nn_conv2d_workspace(&d, nn_ctx_threads(ctxs[r])));
        y[r] = fvec(yn), dx[r] = fvec(xn), dw[r] = fvec(wn);
        memset(dw[r], 0, wn * sizeof(float));
        nn_conv2d_forward(y[r], x, w, b, &d, c.n, ws, ctxs[r]);
        nn_conv2d_backward(dx[r], dw[r], NULL, dy, y[r], x, w, &d, c.n, ws, ctxs[r]);
        free(ws);
    }
    check(!memcmp(y[0], y[1], yn * 4) && !memcmp(dx[0], dx[1], xn * 4),
          "depthwise y and dx: the same bits on 1 and 2 threads", "they differ");
    check(!memcmp(dw[1], dw[2], wn * 4), "depthwise dw: the same bits on two runs", "they differ");
    for (int r = 0; r < 3; r++) free(y[r]), free(dx[r]), free(dw[r]);
    free(x), free(w), free(b), free(dy);
}

/* Two channels of 3x3 input 1..9, 3x3 kernels of ones (channel 0) and twos
 * (channel 1), stride 2, pad 1: each output is the sum of its 2x2 corner. */
static void hand_case(nn_ctx *ctx) {
    const conv_case c = {"", 2, 3, 3, 2, 3, 3, 2, 2, 1, 1, 2, 0, 0, 1};
    const nn_conv2d_desc d = desc_of(&c);
    float x[18], w[18], y[8];
    for (int i = 0; i < 9; i++) x[i] = x[9 + i] = (float)(i + 1), w[i] = 1.0f, w[9 + i] = 2.0f;
    float *ws = fvec(nn_conv2d_workspace(&d, nn_ctx_threads(ctx)));
    nn_conv2d_forward(y, x, w, NULL, &d, 1, ws, ctx);
    const float want[8] = {12, 16, 24, 28, 24, 32, 48, 56};
    check(!memcmp(y, want, sizeof want), "depthwise 3x3 stride 2 pad 1 by hand",
          "got %g %g %g %g | %g %g %g %g", y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]);
    /* dy = ones: dx counts how often each input is read, times the weight */
    float dy[8], dx[18], dw[18] = {0};
    for (int i = 0; i < 8; i++) dy[i] = 1.0f;
    nn_conv2d_backward(dx, dw, NULL, dy, y, x, w, &d, 1, ws, ctx);
    const float reads[9] = {1, 2, 1, 2, 4, 2, 1, 2, 1};
    int ok = 1;
    for (int i = 0; i < 9; i++) ok &= dx[i] == reads[i] && dx[9 + i] == 2 * reads[i];
    /* dw[r][s] = the sum of the inputs tap (r, s) reads over the 4 outputs */
    const float dw0[9] = {5, 10, 5, 10, 20, 10, 5, 10, 5};
    for (int i = 0; i < 9; i++) ok &= dw[i] == dw0[i] && dw[9 + i] == dw0[i];
    check(ok, "depthwise 3x3 stride 2 pad 1 gradients by hand", "dx[4] %g dw[0] %g dw[4] %g",
          dx[4], dw[0], dw[4]);
    free(ws);
}

/* The reference's depthwise dx and dw against central differences of
 * sum(y * r), stride 2 with padding and an odd width. */
static void finite_differences(nn_rng *rng) {
    const conv_case c = {"", 3, 5, 6, 3, 3, 3, 2, 2, 1, 1, 3, 0, 1, 2};
    const nn_conv2d_desc d = desc_of(&c);
    const int n = c.n;
    const size_t xn = (size_t)n * 3 * 30, yn = (size_t)n * 3 * d.P * d.Q, wn = 27;
    double *x = dvec(xn), *w = dvec(wn), *b = dvec(3), *y = dvec(yn), *r = dvec(yn);
    double *dx = dvec(xn), *dw = dvec(wn), *db = dvec(3);
    fill_d(x, xn, rng, -0.5, 0.5), fill_d(w, wn, rng, -0.5, 0.5), fill_d(b, 3, rng, -0.5, 0.5);
    fill_d(r, yn, rng, -0.5, 0.5);
    memset(dw, 0, wn * 8), memset(db, 0, 3 * 8);
    nn_ref_conv2d_backward(dx, dw, db, r, x, w, &d, n);
    double worst = 0.0, norm = 0.0;
    for (int which = 0; which < 2; which++) {
        double *v = which ? w : x, *grad = which ? dw : dx;
        const size_t count = which ? wn : xn;
        for (size_t i = 0; i < count; i++) {
            const double keep = v[i];
            double lp = 0, lm = 0;
            v[i] = keep + 1e-6;
            nn_ref_conv2d_forward(y, x, w, b, &d, n);
            for (size_t j = 0; j < yn; j++) lp += y[j] * r[j];
            v[i] = keep - 1e-6;
            nn_ref_conv2d_forward(y, x, w, b, &d, n);
            for (size_t j = 0; j < yn; j++) lm += y[j] * r[j];
            v[i] = keep;
            const double fd = (lp - lm) / 2e-6;
            worst = fmax(worst, fabs(fd - grad[i]) / fmax(1.0, fabs(fd)));
            norm += fabs(grad[i]);
        }
    }
    check(worst < 1e-6 && norm > 0, "depthwise reference: dx and dw = finite differences",
          "worst %.2g, |grad| %.3g", worst, norm);
    free(x), free(w), free(b), free(y), free(r), free(dx), free(dw), free(db);
}

static const conv_case depthwise_cases[] = {
    /* what                          C   H   W   K  R  S sh sw ph pw  g relu bias n */
    {"3x3 s1 p1 7x9, batch 1",       5,  7,  9,  5, 3, 3, 1, 1, 1, 1, 5, 0, 1, 1},
    {"3x3 s1 p1 28x28 + ReLU",       4, 28, 28,  4, 3, 3, 1, 1, 1, 1, 4, 1, 0, 3},
    {"3x3 s2 p1 9x11, batch 3",      6,  9, 11,  6, 3, 3, 2, 2, 1, 1, 6, 0, 1, 3},
    {"3x3 s2 p1 14x14 (7x7 out)",    8, 14, 14,  8, 3, 3, 2, 2, 1, 1, 8, 0, 0, 3},
    {"3x3 s2 p1 37x35 (two chunks)", 3, 37, 35,  3, 3, 3, 2, 2, 1, 1, 3, 1, 1, 1},
    {"3x3 s1 p0 10x17",              3, 10, 17,  3, 3, 3, 1, 1, 0, 0, 3, 0, 1, 3},
    {"3x3 s2 p0 10x10",              3, 10, 10,  3, 3, 3, 2, 2, 0, 0, 3, 0, 1, 1},
    {"3x3 s2 p2",                    2,  8,  9,  2, 3, 3, 2, 2, 2, 2, 2, 0, 1, 3},
    {"3x3 s1 p3 (pad past kernel)",  2,  5,  6,  2, 3, 3, 1, 1, 3, 3, 2, 0, 1, 1},
    {"5x5 s1 p2 12x13",              3, 12, 13,  3, 5, 5, 1, 1, 2, 2, 3, 1, 1, 3},
    {"5x5 s2 p2 11x16",              3, 11, 16,  3, 5, 5, 2, 2, 2, 2, 3, 0, 1, 1},
    {"7x7 s1 p3",                    2,  9, 10,  2, 7, 7, 1, 1, 3, 3, 2, 0, 1, 1},
    {"1x3 s1x2 p0x1",                3,  6, 11,  3, 1, 3, 1, 2, 0, 1, 3, 0, 1, 3},
    {"3x1 s2x1 p1x0",                3,  9,  5,  3, 3, 1, 2, 1, 1, 0, 3, 0, 1, 1},
    {"3x3 s3 p1",                    2, 10, 11,  2, 3, 3, 3, 3, 1, 1, 2, 0, 1, 3},
    {"2x2 s4 p1",                    2,  9,  9,  2, 2, 2, 4, 4, 1, 1, 2, 0, 1, 1},
    {"3x3 s1 p1 1x1 image",          4,  1,  1,  4, 3, 3, 1, 1, 1, 1, 4, 0, 1, 3},
    {"3x3 s1 p1 33 channels",       33,  6,  6, 33, 3, 3, 1, 1, 1, 1, 33, 1, 1, 3},
};

static const conv_case pointwise_cases[] = {
    {"1x1 32 -> 48, 28x28, batch 3", 32, 28, 28, 48, 1, 1, 1, 1, 0, 0, 1, 0, 1, 3},
    {"1x1 7 -> 5, 7x9 + ReLU",        7,  7,  9,  5, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1},
    {"1x1 16 -> 16, 1x1 image",      16,  1,  1, 16, 1, 1, 1, 1, 0, 0, 1, 0, 0, 3},
    {"1x1 groups=4 8 -> 12 + ReLU",   8,  5,  6, 12, 1, 1, 1, 1, 0, 0, 4, 1, 1, 3},
    /* AVX-512's own GEMMs (C % 16, K % 8): 7x7 ends a 48-column slab inside
     * its first vector, 13x5 inside its second (masked loads and stores),
     * 64 -> 8 leaves a single 8-row block */
    {"1x1 16 -> 24, 7x7 + ReLU",     16,  7,  7, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1, 3},
    {"1x1 48 -> 40, 13x5",           48, 13,  5, 40, 1, 1, 1, 1, 0, 0, 1, 0, 1, 2},
    {"1x1 64 -> 8, 9x11 + ReLU",     64,  9, 11,  8, 1, 1, 1, 1, 0, 0, 1, 1, 0, 3},
};

/* strided 1x1 convolutions go to the pointwise kernel with its own AVX-512
 * or AVX2 GEMMs only (every stride-th pixel, as ResNet's projections) */
static const conv_case strided_pointwise_cases[] = {
    {"1x1 s2 16 -> 32, 14x14",       16, 14, 14, 32, 1, 1, 2, 2, 0, 0, 1, 0, 0, 3},
    {"1x1 s2x3 32 -> 8, 9x11 + ReLU",32,  9, 11,  8, 1, 1, 2, 3, 0, 0, 1, 1, 1, 2},
    /* odd sizes: the last row and column are read, no row after them */
    {"1x1 s2 16 -> 16, 13x11",       16, 13, 11, 16, 1, 1, 2, 2, 0, 0, 1, 0, 1, 2},
};

/* stride 2 with R, S >= 2 goes to the phase kernels with AVX2: odd and
 * even sizes, padding 0 to 2, 2x2 to 5x5 and a 3x5 kernel, a 1x1 input,
 * outputs whose rows are not whole vectors */
static const conv_case phase_cases[] = {
    {"3x3 s2 16 -> 32, 13x13 pad 1 + ReLU", 16, 13, 13, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 3},
    {"3x3 s2 8 -> 4, 9x11 pad 0",           8,  9, 11,  4, 3, 3, 2, 2, 0, 0, 1, 0, 0, 2},
    {"5x5 s2 8 -> 12, 10x7 pad 2 + ReLU",   8, 10,  7, 12, 5, 5, 2, 2, 2, 2, 1, 1, 1, 3},
    {"2x2 s2 16 -> 8, 8x8",                16,  8,  8,  8, 2, 2, 2, 2, 0, 0, 1, 0, 1, 2},
    {"3x5 s2 8 -> 4, 6x9 pad 1x2",          8,  6,  9,  4, 3, 5, 2, 2, 1, 2, 1, 0, 1, 1},
    {"3x3 s2 24 -> 8, 1x1 pad 1 + ReLU",   24,  1,  1,  8, 3, 3, 2, 2, 1, 1, 1, 1, 0, 3},
    {"3x3 s2 32 -> 64, 14x14 pad 1",       32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 0, 0, 3},
};

/* 3x3 stride 2 goes to the direct kernels with AVX-512, which add their
 * input gradient too (ResNet-20's downsampling shapes, and odd sizes) */
static const conv_case direct_cases[] = {
    {"3x3 s2 16 -> 32, 28x28 pad 1", 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 0, 0, 2},
    {"3x3 s2 32 -> 64, 14x14 pad 1", 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 0, 0, 3},
    {"3x3 s2 16 -> 16, 13x11 pad 1", 16, 13, 11, 16, 3, 3, 2, 2, 1, 1, 1, 0, 1, 2},
};

/* 3x3 stride 1 'same' goes to Winograd (AVX2 and up), which adds its input
 * gradient too: F(4x4) with 2 tile rows per vector (28 wide), 4 (14), 8
 * (7, its output rows 7 floats apart), and a width F(4x4) leaves to
 * F(2x2) */
static const conv_case winograd_cases[] = {
    {"3x3 16 -> 16, 28x28",  16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 3},
    {"3x3 32 -> 16, 14x14",  32, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 3},
    {"3x3 16 -> 32, 7x7",    16,  7,  7, 32, 3, 3, 1, 1, 1, 1, 1, 0, 0, 5},
    {"3x3 16 -> 16, 9x33",   16,  9, 33, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 2},
};

/* A convolution's input gradient added into what dx holds (d.dx_add, which
 * conv2d_accumulates_dx grants the strided 1x1 and the phase kernels): the
 * bytes of the gradient written alone plus what was there, and the pixels
 * no window reads keep their value. */
static void dx_add_exact(nn_ctx *ctx, nn_rng *rng, const conv_case *c, const char *kernel) {
    nn_conv2d_desc d = desc_of(c);
    const int n = c->n;
    const size_t xn = (size_t)n * d.C * d.H * d.W, yn = (size_t)n * d.K * d.P * d.Q;
    const size_t wn = (size_t)d.K * d.C * d.R * d.S;
    const size_t wsn = nn_conv2d_workspace(&d, nn_ctx_threads(ctx));
    float *x = fvec(xn), *w = fvec(wn), *dy = fvec(yn), *ws = fvec(wsn);
    float *alone = fvec(xn), *added = fvec(xn), *was = fvec(xn), *dw = fvec(wn);
    fill(x, xn, rng, -1, 1);
    fill(w, wn, rng, -1, 1);
    fill(dy, yn, rng, -1, 1);
    fill(was, xn, rng, -1, 1);
    memcpy(added, was, xn * sizeof(float));
    nn_conv2d_backward(alone, dw, NULL, dy, NULL, x, w, &d, n, ws, ctx);
    d.dx_add = 1;
    nn_conv2d_backward(added, dw, NULL, dy, NULL, x, w, &d, n, ws, ctx);
    size_t bad = 0;
    for (size_t i = 0; i < xn; i++) bad += added[i] != was[i] + alone[i];
    char name[160];
    snprintf(name, sizeof name, "%s %s: dx added into dx = what was there + dx alone, bit for bit",
             kernel, c->what);
    check(bad == 0 && strcmp(nn_conv2d_kernel_name(&d, ctx), kernel) == 0, name,
          "%zu of %zu differ, kernel %s", bad, xn, nn_conv2d_kernel_name(&d, ctx));
    free(x), free(w), free(dy), free(ws), free(alone), free(added), free(was), free(dw);
}

/* F(4x4) Winograd shapes for the formed backward: 28 wide (groups of two
 * images, the last one short), 14 and 7 wide, 8 wide (AVX2's F(4x4) too),
 * 13 wide (4 tile columns) */
static const conv_case formed_cases[] = {
    {"3x3 16 -> 16, 28x28",  16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 7},
    {"3x3 32 -> 32, 14x14",  32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 0, 0, 9},
    {"3x3 64 -> 64, 7x7",    64,  7,  7, 64, 3, 3, 1, 1, 1, 1, 1, 0, 1, 11},
    {"3x3 32 -> 16, 8x8",    32,  8,  8, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 6},
    {"3x3 16 -> 24, 13x13",  16, 13, 13, 24, 3, 3, 1, 1, 1, 1, 1, 0, 1, 5},
};

/* The Winograd backward that forms its dy from the batch norm after it
 * (nn_conv2d_backward_winograd_formed) against the batch norm's dx
 * (nn_batchnorm_form_dx image by image) followed by the plain input and
 * weight gradients, bit for bit: dx, dw, db, and in mode 2 the prologue's
 * gradient sums. Mode 0: the batch norm's mask from its map, no prologue;
 * 1: no mask (a residual add's g), dx added into what is there; 2: a
 * prologue with its gradient sums; 3: no dx (a first layer). */
static void formed_exact(nn_ctx *ctx, nn_rng *rng, const conv_case *c, int mode) {
    const nn_conv2d_desc d0 = desc_of(c);
    nn_conv2d_desc d = d0;
    d.dx_add = mode == 1;
    const int n = c->n, K = d.K, C = d.C, len = d.H * d.W;
    const size_t xn = (size_t)n * C * len, yn = (size_t)n * K * len, wn = (size_t)K * C * 9;
    const size_t wsn = nn_conv2d_workspace(&d, nn_ctx_threads(ctx));
    float *x = fvec(xn), *w = fvec(wn), *g = fvec(yn), *yb = fvec(yn), *dy = fvec(yn);
    float *ws = fvec(wsn + GUARD), *coef = fvec(6 * (size_t)K), *io = fvec(4 * (size_t)C);
    float *dx[2] = {fvec(xn), fvec(xn)}, *dw[2] = {fvec(wn), fvec(wn)};
    float *db[2] = {fvec((size_t)K), fvec((size_t)K)};
    double *sums[2] = {dvec(2 * (size_t)n * C), dvec(2 * (size_t)n * C)};
    fill(x, xn, rng, -1, 1), fill(w, wn, rng, -1, 1), fill(g, yn, rng, -1, 1);
    fill(yb, yn, rng, -1, 1), fill(coef, 6 * (size_t)K, rng, -0.5f, 0.5f);
    fill(io, 4 * (size_t)C, rng, -0.5f, 0.5f);
    for (int i = 0; i < 2; i++) {
        fill(dx[i], xn, rng, -1, 1), fill(dw[i], wn, rng, -1, 1), fill(db[i], (size_t)K, rng, -1, 1);
        memset(sums[i], 0, 2 * (size_t)n * C * sizeof(double));
    }
    memcpy(dx[1], dx[0], xn * sizeof(float)), memcpy(dw[1], dw[0], wn * sizeof(float));
    memcpy(db[1], db[0], (size_t)K * sizeof(float));
    for (size_t i = 0; i < GUARD; i++) ws[wsn + i] = 7.0f;
    const nn_bn_dx bn = {coef, coef + K, coef + 2 * K, coef + 3 * K,
                         mode == 0 ? coef + 4 * K : NULL, mode == 0 ? coef + 5 * K : NULL};
    nn_conv2d_map maps[2] = {{io, io + C, 1, sums[0], io + 2 * C, NULL, NULL},
                             {io, io + C, 1, sums[1], io + 2 * C, NULL, NULL}};
    /* the batch norm's pass, then the plain gradients */
    for (int i = 0; i < n; i++)
        nn_batchnorm_form_dx(dy + (size_t)i * K * len, g + (size_t)i * K * len,
                             yb + (size_t)i * K * len, 0, K, len, &bn, ctx);
    const nn_conv2d_map *m0 = mode == 2 ? &maps[0] : NULL;
    if (mode != 3) nn_conv2d_backward_data_winograd_mapped(dx[0], dy, NULL, x, m0, w, &d, n, ws, ctx);
    nn_conv2d_backward_weights_winograd_mapped(dw[0], db[0], dy, NULL, x, m0, &d, n, ws, ctx);
    /* formed */
    nn_conv2d_backward_winograd_formed(mode == 3 ? NULL : dx[1], dw[1], db[1], g, yb, x,
                                       mode == 2 ? &maps[1] : NULL, NULL, &bn, w, &d, n, ws, ctx);
    size_t bad = 0, guard = 0;
    for (size_t i = 0; i < xn; i++) bad += memcmp(&dx[0][i], &dx[1][i], sizeof(float)) != 0;
    for (size_t i = 0; i < wn; i++) bad += memcmp(&dw[0][i], &dw[1][i], sizeof(float)) != 0;
    for (int k = 0; k < K; k++) bad += memcmp(&db[0][k], &db[1][k], sizeof(float)) != 0;
    for (size_t i = 0; i < 2 * (size_t)n * C; i++) bad += sums[0][i] != sums[1][i];
    for (size_t i = 0; i < GUARD; i++) guard += ws[wsn + i] != 7.0f;
    static const char *modes[] = {"masked dy", "unmasked dy, dx added", "prologue and its sums",
                                  "no dx"};
    char name[200];
    snprintf(name, sizeof name,
             "winograd formed backward %s, %s, %d thread(s): the batch norm's dx pass + plain "
             "gradients, bit for bit", c->what, modes[mode], nn_ctx_threads(ctx));
    check(bad == 0 && guard == 0 && nn_conv2d_winograd_forms_dy(&d, ctx), name,
          "%zu values differ, %zu guard floats written, forms_dy %d", bad, guard,
          nn_conv2d_winograd_forms_dy(&d, ctx));
    free(x), free(w), free(g), free(yb), free(dy), free(ws), free(coef), free(io);
    for (int i = 0; i < 2; i++) free(dx[i]), free(dw[i]), free(db[i]), free(sums[i]);
}

int main(void) {
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);
    nn_rng rng;
    nn_rng_seed(&rng, 16, 2);
    nn_ctx *ctxs[2] = {c1, c2};
    const nn_isa isas[3] = {NN_ISA_GENERIC, NN_ISA_AVX2, NN_ISA_AVX512};
    const nn_isa best = nn_ctx_isa(c1);
    for (int v = 0; v < 3; v++) {
        if (isas[v] > best) {
            printf("SKIP %s loops: the CPU or NNOPT_ISA does not allow them\n", nn_isa_name(isas[v]));
            continue;
        }
        nn_ctx_set_isa(c1, isas[v]);
        nn_ctx_set_isa(c2, isas[v]);
        printf("== %s loops\n", nn_isa_name(isas[v]));
        for (int t = 0; t < 2; t++) {
            for (size_t i = 0; i < sizeof depthwise_cases / sizeof *depthwise_cases; i++)
                fast_vs_ref(ctxs[t], &rng, &depthwise_cases[i], "depthwise", nn_isa_name(isas[v]));
            for (size_t i = 0; i < sizeof pointwise_cases / sizeof *pointwise_cases; i++)
                fast_vs_ref(ctxs[t], &rng, &pointwise_cases[i], "pointwise", nn_isa_name(isas[v]));
            for (size_t i = 0; isas[v] >= NN_ISA_AVX2 && i < sizeof strided_pointwise_cases /
                                                                 sizeof *strided_pointwise_cases;
                 i++)
                fast_vs_ref(ctxs[t], &rng, &strided_pointwise_cases[i], "pointwise",
                            nn_isa_name(isas[v]));
            for (int i = 0; isas[v] >= NN_ISA_AVX2 && i < 3; i += 2) /* no ReLU */
                dx_add_exact(ctxs[t], &rng, &strided_pointwise_cases[i], "pointwise");
            for (size_t i = 0; isas[v] == NN_ISA_AVX2 && i < sizeof phase_cases / sizeof *phase_cases;
                 i++)
                fast_vs_ref(ctxs[t], &rng, &phase_cases[i], "phase", nn_isa_name(isas[v]));
            for (size_t i = 1; isas[v] == NN_ISA_AVX2 && i < 7; i += 2 + (i == 3)) /* no ReLU */
                dx_add_exact(ctxs[t], &rng, &phase_cases[i], "phase");
            for (size_t i = 0; isas[v] >= NN_ISA_AVX2 &&
                               i < sizeof winograd_cases / sizeof *winograd_cases;
                 i++)
                dx_add_exact(ctxs[t], &rng, &winograd_cases[i], "winograd");
            for (size_t i = 0; isas[v] == NN_ISA_AVX512 &&
                               i < sizeof direct_cases / sizeof *direct_cases;
                 i++)
                dx_add_exact(ctxs[t], &rng, &direct_cases[i], "direct");
            for (size_t i = 0; isas[v] >= NN_ISA_AVX2 &&
                               i < sizeof formed_cases / sizeof *formed_cases;
                 i++) {
                const nn_conv2d_desc fd = desc_of(&formed_cases[i]);
                for (int mode = 0; mode < 4 && nn_conv2d_winograd4_ok(&fd, ctxs[t]); mode++)
                    formed_exact(ctxs[t], &rng, &formed_cases[i], mode);
            }
        }
        hand_case(c1);
        thread_invariance(c1, c2, &rng);
    }
    nn_ctx_set_isa(c1, best);
    /* shapes the new kernels leave to others */
    conv_case other = {"", 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 4, 0, 1, 1}; /* multiplier 2 */
    nn_conv2d_desc d = desc_of(&other);
    check(strcmp(nn_conv2d_kernel_name(&d, c1), "depthwise") != 0,
          "a channel multiplier of 2 is not depthwise", "%s", nn_conv2d_kernel_name(&d, c1));
    /* 1x1 stride 2 with 4 channels: not the own kernels' shape */
    other = (conv_case){"", 4, 6, 6, 8, 1, 1, 2, 2, 0, 0, 1, 0, 1, 1};
    d = desc_of(&other);
    check(strcmp(nn_conv2d_kernel_name(&d, c1), "pointwise") != 0,
          "a 1x1 convolution with stride 2 is not pointwise", "%s", nn_conv2d_kernel_name(&d, c1));
    d = desc_of(&depthwise_cases[0]);
    d.dil_h = d.dil_w = 2, d.P = 3, d.Q = 5;
    check(strcmp(nn_conv2d_kernel_name(&d, c1), "im2col") == 0,
          "a dilated depthwise convolution runs im2col", "%s", nn_conv2d_kernel_name(&d, c1));
    finite_differences(&rng);
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    return test_summary();
}
