/*
 * test_layers.c - the "model structure" layers: activations leaky_relu, gelu,
 * silu, sigmoid, tanh; average pooling (avgpool) and global average pooling
 * (gap). Each is checked
 *   - fast float kernels against the double reference twins on seeded random
 *     inputs (several shapes, odd sizes, batch 1/3/13, 1 and 2 threads);
 *   - reference gradients against central differences in double;
 *   - on one hand-computed case;
 *   - against PyTorch 1.13 (tests/fixtures/layers_<op>.txt, made by
 *     scripts/make_layer_fixtures.py) through the model parser and the CPU
 *     kernel table;
 * plus NaN propagation, parse errors, and a whole model using every new layer:
 * its per-layer shapes and forward + backward against the composition of the
 * references. Buffers are malloc'ed at their exact size and outputs pre-filled
 * with NaN. Exits non-zero if any check fails.
 */
#include "backend/backend.h"
#include "ops/ops.h"
#include "test_util.h"
#include "test_graph_ref.h"

#define FAST_TOL 1e-4   /* fast vs reference, relative to the tensor's magnitude */
#define FD_TOL 1e-6     /* central differences, relative */
#define FD_EPS 1e-6
#define TORCH_TOL 1e-5  /* fast vs PyTorch, relative to the tensor's magnitude */

/* ------------------------------------------------------------ helpers */

static float *fvec_nan(size_t n) {
    float *v = fvec(n);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    return v;
}

/* ------------------------------------------------------------ activations */

typedef struct {
    const char *name;
    nn_op_type op;
    float slope;    /* leaky_relu only */
} act_kind;

static const act_kind ACTS[] = {
    {"leaky_relu", NN_OP_LEAKY_RELU, 0.01f}, {"leaky_relu slope=0.2", NN_OP_LEAKY_RELU, 0.2f},
    {"leaky_relu slope=-1.5", NN_OP_LEAKY_RELU, -1.5f}, {"gelu", NN_OP_GELU, 0.0f},
    {"silu", NN_OP_SILU, 0.0f}, {"sigmoid", NN_OP_SIGMOID, 0.0f}, {"tanh", NN_OP_TANH, 0.0f},
};
#define NUM_ACTS (sizeof ACTS / sizeof ACTS[0])

static void act_forward(const act_kind *k, float *y, const float *x, size_t n, nn_ctx *ctx) {
    switch (k->op) {
    case NN_OP_LEAKY_RELU: nn_leaky_relu_forward(y, x, k->slope, n, ctx); break;
    case NN_OP_GELU: nn_gelu_forward(y, x, n, ctx); break;
    case NN_OP_SILU: nn_silu_forward(y, x, n, ctx); break;
    case NN_OP_SIGMOID: nn_sigmoid_forward(y, x, n, ctx); break;
    default: nn_tanh_forward(y, x, n, ctx); break;
    }
}

/* x is the input, y the output of the forward */
static void act_backward(const act_kind *k, float *dx, const float *dy, const float *x,
                         const float *y, size_t n, nn_ctx *ctx) {
    switch (k->op) {
    case NN_OP_LEAKY_RELU: nn_leaky_relu_backward(dx, dy, x, k->slope, n, ctx); break;
    case NN_OP_GELU: nn_gelu_backward(dx, dy, x, n, ctx); break;
    case NN_OP_SILU: nn_silu_backward(dx, dy, x, n, ctx); break;
    case NN_OP_SIGMOID: nn_sigmoid_backward(dx, dy, y, n, ctx); break;
    default: nn_tanh_backward(dx, dy, y, n, ctx); break;
    }
}

static void test_act_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    /* per-sample sizes: 3x5x7, 37, 1x70x70 (x13 = 63700, past the parallel threshold) */
    static const size_t per[] = {105, 37, 4900};
    static const int batches[] = {1, 3, 13};
    for (size_t a = 0; a < NUM_ACTS; a++) {
        double ey = 0.0, edx = 0.0;
        int configs = 0, same_threads = 1;
        for (int si = 0; si < 3; si++)
            for (int bi = 0; bi < 3; bi++) {
                const size_t n = per[si] * (size_t)batches[bi];
                float *x = fvec(n), *dy = fvec(n);
                fill(x, n, rng, -8.0f, 8.0f);
                fill(dy, n, rng, -1.0f, 1.0f);
                double *xd = to_d(x, n), *dyd = to_d(dy, n), *yr = dvec(n), *dxr = dvec(n);
                ref_act_forward(ACTS[a].op, ACTS[a].slope, yr, xd, n);
                ref_act_backward(ACTS[a].op, ACTS[a].slope, dxr, dyd, xd, n);
                float *yt[2], *dxt[2];
                for (int t = 0; t < 2; t++) {
                    yt[t] = fvec_nan(n), dxt[t] = fvec_nan(n);
                    act_forward(&ACTS[a], yt[t], x, n, ctxs[t]);
                    act_backward(&ACTS[a], dxt[t], dy, x, yt[t], n, ctxs[t]);
                    ey = fmax(ey, max_err(yt[t], yr, n));
                    edx = fmax(edx, max_err(dxt[t], dxr, n));
                    configs++;
                }
                if (memcmp(yt[0], yt[1], n * sizeof(float)) ||
                    memcmp(dxt[0], dxt[1], n * sizeof(float)))
                    same_threads = 0;
                free(x), free(dy), free(xd), free(dyd), free(yr), free(dxr);
                for (int t = 0; t < 2; t++) free(yt[t]), free(dxt[t]);
            }
        char name[160];
        snprintf(name, sizeof name, "%s fast==ref (3 shapes, n=1,3,13, T=1,2)", ACTS[a].name);
        check(ey <= FAST_TOL && edx <= FAST_TOL && same_threads, name,
              "%d configs, max err y=%.2e dx=%.2e, T=1 and T=2 bit-identical: %s", configs, ey,
              edx, same_threads ? "yes" : "no");
    }
}

static void test_act_nan(nn_ctx *ctx) {
    const float x[4] = {NAN, -1.0f, NAN, 2.0f};
    for (size_t a = 0; a < NUM_ACTS; a++) {
        float y[4];
        act_forward(&ACTS[a], y, x, 4, ctx);
        char name[160];
        snprintf(name, sizeof name, "%s: NaN input gives NaN output", ACTS[a].name);
        check(isnan(y[0]) && isnan(y[2]) && !isnan(y[1]) && !isnan(y[3]), name,
              "y = %g %g %g %g", (double)y[0], (double)y[1], (double)y[2], (double)y[3]);
    }
}

/* ------------------------------------------------------------ finite differences */

typedef struct {
    int kind;               /* 0 activation, 1 avgpool, 2 gap */
    nn_op_type op;
    double slope;
    nn_pool_desc pool;
    int n;
    size_t xn, yn;
    double *x, *r, *y;
} fd_problem;

/* L = sum(y * r) */
static double fd_eval(fd_problem *p) {
    if (p->kind == 0) ref_act_forward(p->op, p->slope, p->y, p->x, p->xn);
    else if (p->kind == 1) nn_ref_avgpool_forward(p->y, p->x, &p->pool, p->n);
    else nn_ref_gap_forward(p->y, p->x, &p->pool, p->n);
    double s = 0.0;
    for (size_t i = 0; i < p->yn; i++) s += p->y[i] * p->r[i];
    return s;
}

static void fd_check(fd_problem *p, const char *what) {
    double *dx = dvec(p->xn);
    if (p->kind == 0) ref_act_backward(p->op, p->slope, dx, p->r, p->x, p->xn);
    else if (p->kind == 1) nn_ref_avgpool_backward(dx, p->r, &p->pool, p->n);
    else nn_ref_gap_backward(dx, p->r, &p->pool, p->n);
    double e = 0.0, gmax = max_abs(dx, p->xn);
    for (size_t i = 0; i < p->xn; i++) {
        const double v0 = p->x[i];
        p->x[i] = v0 + FD_EPS;
        double lp = fd_eval(p);
        p->x[i] = v0 - FD_EPS;
        double lm = fd_eval(p);
        p->x[i] = v0;
        double num = (lp - lm) / (2 * FD_EPS);
        double d = fabs(num - dx[i]) / fmax(1.0, fmax(fabs(num), fabs(dx[i])));
        if (!(d <= e)) e = d;
    }
    char name[200];
    snprintf(name, sizeof name, "%s finite differences dx", what);
    check(e <= FD_TOL && gmax > 1e-3, name, "max err %.2e, max |grad| %.3g", e, gmax);
    free(dx);
}

static nn_pool_desc make_pool(int C, int H, int W, int R, int S, int sh, int sw, int ph, int pw) {
    nn_pool_desc d;
    memset(&d, 0, sizeof d);
    d.C = C, d.H = H, d.W = W, d.R = R, d.S = S;
    d.stride_h = sh, d.stride_w = sw, d.pad_h = ph, d.pad_w = pw;
    d.P = (H + 2 * ph - R) / sh + 1;
    d.Q = (W + 2 * pw - S) / sw + 1;
    return d;
}

static nn_pool_desc make_gap(int C, int H, int W) {
    nn_pool_desc d = make_pool(C, H, W, H, W, 1, 1, 0, 0);
    return d;
}

static void test_fd(nn_rng *rng) {
    for (size_t a = 0; a < NUM_ACTS; a++) {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.kind = 0, p.op = ACTS[a].op, p.slope = ACTS[a].slope;
        p.xn = p.yn = 200;
        p.x = dvec(p.xn), p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_d(p.x, p.xn, rng, -5.0, 5.0);
        fill_d(p.r, p.yn, rng, -1.0, 1.0);
        for (size_t i = 0; i < p.xn; i++) /* leaky_relu's kink at 0 */
            if (fabs(p.x[i]) < 1e-2) p.x[i] = p.x[i] < 0 ? -0.05 : 0.05;
        char what[160];
        snprintf(what, sizeof what, "%s (200 values in [-5, 5])", ACTS[a].name);
        fd_check(&p, what);
        free(p.x), free(p.r), free(p.y);
    }
    static const struct {
        const char *what;
        int n, C, H, W, R, S, sh, sw, ph, pw;
    } pools[] = {
        {"avgpool 2x2/2 on 7x9", 2, 2, 7, 9, 2, 2, 2, 2, 0, 0},
        {"avgpool 3x3/2 pad 1 on 7x8", 2, 2, 7, 8, 3, 3, 2, 2, 1, 1},
        {"avgpool 3x2 stride 1x2 pad 1x0 on 5x6", 1, 3, 5, 6, 3, 2, 1, 2, 1, 0},
    };
    for (size_t c = 0; c < sizeof pools / sizeof pools[0]; c++) {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.kind = 1;
        p.pool = make_pool(pools[c].C, pools[c].H, pools[c].W, pools[c].R, pools[c].S,
                           pools[c].sh, pools[c].sw, pools[c].ph, pools[c].pw);
        p.n = pools[c].n;
        p.xn = (size_t)p.n * p.pool.C * p.pool.H * p.pool.W;
        p.yn = (size_t)p.n * p.pool.C * p.pool.P * p.pool.Q;
        p.x = dvec(p.xn), p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_d(p.x, p.xn, rng, -1.0, 1.0);
        fill_d(p.r, p.yn, rng, -1.0, 1.0);
        fd_check(&p, pools[c].what);
        free(p.x), free(p.r), free(p.y);
    }
    {
        fd_problem p;
        memset(&p, 0, sizeof p);
        p.kind = 2;
        p.pool = make_gap(3, 5, 7);
        p.n = 2;
        p.xn = 2 * 3 * 5 * 7, p.yn = 2 * 3;
        p.x = dvec(p.xn), p.r = dvec(p.yn), p.y = dvec(p.yn);
        fill_d(p.x, p.xn, rng, -1.0, 1.0);
        fill_d(p.r, p.yn, rng, -1.0, 1.0);
        /* |dx| = |r| / 35 < 1e-3 would fail the not-zero check: scale r up */
        for (size_t i = 0; i < p.yn; i++) p.r[i] *= 35.0;
        fd_check(&p, "gap 3x5x7");
        free(p.x), free(p.r), free(p.y);
    }
}

/* ------------------------------------------------------------ pooling fast vs ref */

static void test_pool_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const struct {
        const char *what;
        int H, W, R, S, sh, sw, ph, pw;   /* R = 0: gap */
    } shapes[] = {
        {"avgpool 2x2/2 even 8x6", 8, 6, 2, 2, 2, 2, 0, 0},
        {"avgpool 2x2/2 odd 7x9", 7, 9, 2, 2, 2, 2, 0, 0},
        {"avgpool 3x3/2 pad 1 on 7x9", 7, 9, 3, 3, 2, 2, 1, 1},
        {"avgpool 3x3/1 pad 1 on 6x8", 6, 8, 3, 3, 1, 1, 1, 1},
        {"avgpool 2x2/2 pad 1 on 7x8", 7, 8, 2, 2, 2, 2, 1, 1},
        {"avgpool 3x2 stride 2x1 pad 1x0 on 7x9", 7, 9, 3, 2, 2, 1, 1, 0},
        {"avgpool 3x3/3 on 28x28 (edge rows unused)", 28, 28, 3, 3, 3, 3, 0, 0},
        {"avgpool window = whole 5x7 input", 5, 7, 5, 7, 1, 1, 0, 0},
        {"gap 1x1", 1, 1, 0, 0, 0, 0, 0, 0},
        {"gap 5x7", 5, 7, 0, 0, 0, 0, 0, 0},
        {"gap 28x28", 28, 28, 0, 0, 0, 0, 0, 0},
    };
    static const int batches[] = {1, 3, 13}, chans[] = {1, 3};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int gap = shapes[s].R == 0;
        double ey = 0.0, edx = 0.0;
        int configs = 0, same_threads = 1;
        for (int bi = 0; bi < 3; bi++)
            for (int ci = 0; ci < 2; ci++) {
                const int n = batches[bi], C = chans[ci];
                nn_pool_desc d = gap ? make_gap(C, shapes[s].H, shapes[s].W)
                                     : make_pool(C, shapes[s].H, shapes[s].W, shapes[s].R,
                                                 shapes[s].S, shapes[s].sh, shapes[s].sw,
                                                 shapes[s].ph, shapes[s].pw);
                const size_t xn = (size_t)n * C * d.H * d.W, yn = (size_t)n * C * d.P * d.Q;
                float *x = fvec(xn), *dy = fvec(yn);
                fill(x, xn, rng, -1.0f, 1.0f);
                fill(dy, yn, rng, -1.0f, 1.0f);
                double *xd = to_d(x, xn), *dyd = to_d(dy, yn), *yr = dvec(yn), *dxr = dvec(xn);
                if (gap) {
                    nn_ref_gap_forward(yr, xd, &d, n);
                    nn_ref_gap_backward(dxr, dyd, &d, n);
                } else {
                    nn_ref_avgpool_forward(yr, xd, &d, n);
                    nn_ref_avgpool_backward(dxr, dyd, &d, n);
                }
                float *yt[2], *dxt[2];
                for (int t = 0; t < 2; t++) {
                    yt[t] = fvec_nan(yn), dxt[t] = fvec_nan(xn);
                    if (gap) {
                        nn_gap_forward(yt[t], x, &d, n, ctxs[t]);
                        nn_gap_backward(dxt[t], dy, &d, n, ctxs[t]);
                    } else {
                        nn_avgpool_forward(yt[t], x, &d, n, ctxs[t]);
                        nn_avgpool_backward(dxt[t], dy, &d, n, ctxs[t]);
                    }
                    ey = fmax(ey, max_err(yt[t], yr, yn));
                    edx = fmax(edx, max_err(dxt[t], dxr, xn));
                    configs++;
                }
                if (memcmp(yt[0], yt[1], yn * sizeof(float)) ||
                    memcmp(dxt[0], dxt[1], xn * sizeof(float)))
                    same_threads = 0;
                free(x), free(dy), free(xd), free(dyd), free(yr), free(dxr);
                for (int t = 0; t < 2; t++) free(yt[t]), free(dxt[t]);
            }
        char name[160];
        snprintf(name, sizeof name, "%s fast==ref (C=1,3; n=1,3,13; T=1,2)", shapes[s].what);
        check(ey <= FAST_TOL && edx <= FAST_TOL && same_threads, name,
              "%d configs, max err y=%.2e dx=%.2e, T=1 and T=2 bit-identical: %s", configs, ey,
              edx, same_threads ? "yes" : "no");
    }
}

/* ------------------------------------------------------------ hand-computed cases */

static int close_f(const float *a, const double *want, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (!(fabs((double)a[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])))) return 0;
    return 1;
}

static int close_d(const double *a, const double *want, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (!(fabs(a[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])))) return 0;
    return 1;
}

static void hand_act(nn_ctx *ctx, const act_kind *k, const float *x, const float *dy,
                     const double *wy, const double *wdx, int n) {
    float y[8], dx[8];
    double xd[8], dyd[8], yr[8], dxr[8];
    act_forward(k, y, x, (size_t)n, ctx);
    act_backward(k, dx, dy, x, y, (size_t)n, ctx);
    for (int i = 0; i < n; i++) xd[i] = x[i], dyd[i] = dy[i];
    ref_act_forward(k->op, k->slope, yr, xd, (size_t)n);
    ref_act_backward(k->op, k->slope, dxr, dyd, xd, (size_t)n);
    char name[160];
    snprintf(name, sizeof name, "%s hand-computed values (fast and reference)", k->name);
    check(close_f(y, wy, n, 1e-6) && close_f(dx, wdx, n, 1e-6) && close_d(yr, wy, n, 1e-12) &&
              close_d(dxr, wdx, n, 1e-12),
          name, "y[1] %.9g dx[1] %.9g", (double)y[1], (double)dx[1]);
}

static void test_hand(nn_ctx *ctx) {
    const double l3 = log(3.0);             /* sigmoid(ln 3) = 3/4 */
    const double ath = 0.5 * log(3.0);      /* atanh(1/2) */
    const double phi1 = 0.24197072451914337;    /* standard normal density at 1 */
    const double Phi1 = 0.8413447460685429;     /* its CDF at 1 */
    {
        const act_kind k = {"leaky_relu slope=0.25", NN_OP_LEAKY_RELU, 0.25f};
        const float x[4] = {-2.0f, -0.5f, 0.0f, 3.0f}, dy[4] = {1, 2, 3, 4};
        /* x <= 0: slope * x and slope * dy (PyTorch's x > 0 test) */
        const double wy[4] = {-0.5, -0.125, 0.0, 3.0}, wdx[4] = {0.25, 0.5, 0.75, 4.0};
        hand_act(ctx, &k, x, dy, wy, wdx, 4);
    }
    {
        const act_kind k = {"gelu", NN_OP_GELU, 0};
        const float x[3] = {0.0f, 1.0f, -1.0f}, dy[3] = {1, 2, 1};
        /* gelu(x) = x Phi(x), gelu'(x) = Phi(x) + x phi(x); Phi(-1) = 1 - Phi(1) */
        const double wy[3] = {0.0, Phi1, -(1.0 - Phi1)};
        const double wdx[3] = {0.5, 2.0 * (Phi1 + phi1), (1.0 - Phi1) - phi1};
        hand_act(ctx, &k, x, dy, wy, wdx, 3);
    }
    {
        const act_kind k = {"silu", NN_OP_SILU, 0};
        const float x[2] = {0.0f, (float)l3}, dy[2] = {1, 1};
        /* silu(ln 3) = (3/4) ln 3; silu' = s (1 + x (1 - s)) = 3/4 (1 + ln3 / 4) */
        const double xl = (float)l3;
        const double wy[2] = {0.0, 0.75 * xl};
        const double wdx[2] = {0.5, 0.75 * (1.0 + xl * 0.25)};
        /* x is float(ln 3), so sigmoid(x) is 3/4 only to float precision */
        float y[2], dx[2];
        act_forward(&k, y, x, 2, ctx);
        act_backward(&k, dx, dy, x, y, 2, ctx);
        check(close_f(y, wy, 2, 1e-6) && close_f(dx, wdx, 2, 1e-6),
              "silu hand-computed values (0 and ln 3)", "y %.9g dx %.9g", (double)y[1],
              (double)dx[1]);
    }
    {
        const act_kind k = {"sigmoid", NN_OP_SIGMOID, 0};
        const float x[2] = {0.0f, (float)l3}, dy[2] = {1, 2};
        const double wy[2] = {0.5, 0.75}, wdx[2] = {0.25, 2.0 * 0.1875};
        float y[2], dx[2];
        act_forward(&k, y, x, 2, ctx);
        act_backward(&k, dx, dy, x, y, 2, ctx);
        check(close_f(y, wy, 2, 1e-6) && close_f(dx, wdx, 2, 1e-6),
              "sigmoid hand-computed values (0 and ln 3)", "y %.9g dx %.9g", (double)y[1],
              (double)dx[1]);
    }
    {
        const act_kind k = {"tanh", NN_OP_TANH, 0};
        const float x[2] = {0.0f, (float)ath}, dy[2] = {1, 2};
        const double wy[2] = {0.0, 0.5}, wdx[2] = {1.0, 2.0 * 0.75};
        float y[2], dx[2];
        act_forward(&k, y, x, 2, ctx);
        act_backward(&k, dx, dy, x, y, 2, ctx);
        check(close_f(y, wy, 2, 1e-6) && close_f(dx, wdx, 2, 1e-6),
              "tanh hand-computed values (0 and atanh 1/2)", "y %.9g dx %.9g", (double)y[1],
              (double)dx[1]);
    }
    {
        /* 3x3 input 1..9 */
        const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[4] = {1, 1, 1, 1};
        double xd[9], od[4] = {1, 1, 1, 1}, yr[4], dxr[9];
        for (int i = 0; i < 9; i++) xd[i] = x[i];
        float y[4], dx[9];
        /* size 2 stride 1: window means 12/4, 16/4, 24/4, 28/4 */
        nn_pool_desc d = make_pool(1, 3, 3, 2, 2, 1, 1, 0, 0);
        const double wy1[4] = {3, 4, 6, 7}, wdx1[9] = {.25, .5, .25, .5, 1, .5, .25, .5, .25};
        nn_avgpool_forward(y, x, &d, 1, ctx);
        nn_avgpool_backward(dx, ones, &d, 1, ctx);
        nn_ref_avgpool_forward(yr, xd, &d, 1);
        nn_ref_avgpool_backward(dxr, od, &d, 1);
        check(close_f(y, wy1, 4, 1e-6) && close_f(dx, wdx1, 9, 1e-6) && close_d(yr, wy1, 4, 1e-12) &&
                  close_d(dxr, wdx1, 9, 1e-12),
              "avgpool hand-computed 2x2/1 on 3x3", "y %g %g %g %g", (double)y[0], (double)y[1],
              (double)y[2], (double)y[3]);
        /* size 3 stride 2 pad 1: the zero padding counts, divisor 9 everywhere */
        d = make_pool(1, 3, 3, 3, 3, 2, 2, 1, 1);
        const double wy2[4] = {12.0 / 9, 16.0 / 9, 24.0 / 9, 28.0 / 9};
        const double wdx2[9] = {1.0 / 9, 2.0 / 9, 1.0 / 9, 2.0 / 9, 4.0 / 9,
                                2.0 / 9, 1.0 / 9, 2.0 / 9, 1.0 / 9};
        nn_avgpool_forward(y, x, &d, 1, ctx);
        nn_avgpool_backward(dx, ones, &d, 1, ctx);
        nn_ref_avgpool_forward(yr, xd, &d, 1);
        nn_ref_avgpool_backward(dxr, od, &d, 1);
        check(close_f(y, wy2, 4, 1e-6) && close_f(dx, wdx2, 9, 1e-6) && close_d(yr, wy2, 4, 1e-12) &&
                  close_d(dxr, wdx2, 9, 1e-12),
              "avgpool hand-computed 3x3/2 pad 1 on 3x3 (padding counted)", "y %g %g %g %g",
              (double)y[0], (double)y[1], (double)y[2], (double)y[3]);
    }
    {
        /* 2 channels of 2x2: means 2.5 and 1; dx = dy / 4 */
        const float x[8] = {1, 2, 3, 4, -1, 0, 0, 5}, dy[2] = {4, -2};
        double xd[8], dyd[2] = {4, -2}, yr[2], dxr[8];
        for (int i = 0; i < 8; i++) xd[i] = x[i];
        const double wy[2] = {2.5, 1.0}, wdx[8] = {1, 1, 1, 1, -.5, -.5, -.5, -.5};
        nn_pool_desc d = make_gap(2, 2, 2);
        float y[2], dx[8];
        nn_gap_forward(y, x, &d, 1, ctx);
        nn_gap_backward(dx, dy, &d, 1, ctx);
        nn_ref_gap_forward(yr, xd, &d, 1);
        nn_ref_gap_backward(dxr, dyd, &d, 1);
        check(close_f(y, wy, 2, 1e-6) && close_f(dx, wdx, 8, 1e-6) && close_d(yr, wy, 2, 1e-12) &&
                  close_d(dxr, wdx, 8, 1e-12),
              "gap hand-computed 2x2x2", "y %g %g", (double)y[0], (double)y[1]);
    }
}

/* ------------------------------------------------------------ PyTorch parity */

/* Reads "<tag> <count> v..." into a new buffer; NULL on a mismatch. */
static float *read_values(FILE *f, const char *tag, size_t want) {
    char t[16];
    size_t count;
    if (fscanf(f, "%15s %zu", t, &count) != 2 || strcmp(t, tag) || count != want) return NULL;
    float *v = fvec(count);
    for (size_t i = 0; i < count; i++)
        if (fscanf(f, "%f", &v[i]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

/* One fixture case: builds "input shape=..; <layer>; ..." with the parser (so
 * default keys are those of the model file), runs the layer through the CPU
 * kernel table and compares with PyTorch's y and dx. Returns 0 when the file
 * could not be read. */
static int parity_case(FILE *f, const char *header, nn_ctx *ctx, const char *file) {
    int n, C, H, W;
    unsigned xs, gs;
    float scale;
    const char *bar = strchr(header, '|');
    if (sscanf(header, "case %d %dx%dx%d %u %f %u", &n, &C, &H, &W, &xs, &scale, &gs) != 7 ||
        !bar) {
        check(0, file, "bad case line '%s'", header);
        return 0;
    }
    char layer[128];
    snprintf(layer, sizeof layer, "%s", bar + 2);
    layer[strcspn(layer, "\n")] = '\0';
    char text[512];
    snprintf(text, sizeof text,
             "input shape=%dx%dx%d\n%s\nflatten\nlinear name=f out=2\nsoftmax_ce\n", C, H, W,
             layer);
    nn_net *net = NULL;
    char name[320];
    snprintf(name, sizeof name, "PyTorch parity %s: '%s' on %dx%dx%dx%d", file, layer, n, C, H, W);
    nn_status st = nn_net_parse(ctx, text, "parity.nn", &net);
    if (st) {
        check(0, name, "%s", nn_ctx_error(ctx));
        return 1;
    }
    const nn_node *node = &net->nodes[1];
    const size_t xn = (size_t)n * C * H * W, yn = (size_t)n * (size_t)nn_shape_numel(&node->out);
    float *x = fvec(xn), *dy = fvec(yn), *y = fvec_nan(yn), *dx = fvec_nan(xn);
    for (size_t i = 0; i < xn; i++) x[i] = hash_signed(xs, (uint32_t)i, scale);
    for (size_t i = 0; i < yn; i++) dy[i] = hash_signed(gs, (uint32_t)i, 1.0f);
    float *ty = read_values(f, "y", yn), *tdx = read_values(f, "dx", xn);
    if (!ty || !tdx) {
        check(0, name, "y/dx lines missing or of the wrong size (expected %zu and %zu)", yn, xn);
    } else {
        nn_op_args a;
        memset(&a, 0, sizeof a);
        a.node = node, a.n = n, a.y = y, a.x = x, a.dy = dy, a.dx = dx, a.ctx = ctx;
        const nn_op_kernels *k = nn_backend_kernels(ctx->backend, node->op);
        k->forward(&a);
        k->backward(&a);
        double *tyd = to_d(ty, yn), *tdxd = to_d(tdx, xn);
        double ey = max_err(y, tyd, yn), edx = max_err(dx, tdxd, xn);
        check(ey <= TORCH_TOL && edx <= TORCH_TOL && max_abs(tdxd, xn) > 1e-3, name,
              "max err y=%.2e dx=%.2e", ey, edx);
        free(tyd), free(tdxd);
    }
    free(x), free(dy), free(y), free(dx), free(ty), free(tdx);
    nn_net_free(net);
    return ty && tdx;
}

static void test_parity(nn_ctx *ctx) {
    static const char *const ops[] = {"leaky_relu", "gelu", "silu", "sigmoid",
                                      "tanh",       "avgpool", "gap"};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        char file[64];
        snprintf(file, sizeof file, "layers_%s.txt", ops[o]);
        tu_fixture_cases(file, parity_case, ctx);
    }
}

/* ------------------------------------------------------------ model files */

static void test_parse_errors(nn_ctx *ctx) {
    static const struct {
        const char *text, *expect;
    } bad[] = {
        {"input shape=1x4x4\nswish\n", "leaky_relu, gelu"},
        {"input shape=1x4x4\nleaky_relu slope=abc\n", "slope"},
        {"input shape=1x4x4\nleaky_relu slope=nan\n", "finite"},
        {"input shape=1x4x4\ngelu slope=0.1\n", "unknown key 'slope'"},
        {"input shape=1x4x4\navgpool\n", "size"},
        {"input shape=1x4x4\navgpool size=2 pad=2\n", "half"},
        {"input shape=1x4x4\navgpool size=7\n", "larger"},
        {"input shape=16\navgpool size=2\n", "CxHxW"},
        {"input shape=16\ngap\n", "CxHxW"},
        {"input shape=1x4x4\ngap size=2\n", "unknown key 'size'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nn_net *net = NULL;
        nn_status st = nn_net_parse(ctx, bad[i].text, "bad.nn", &net);
        const char *msg = st ? nn_ctx_error(ctx) : "";
        char name[160];
        snprintf(name, sizeof name, "model error mentions '%s' (line 2)", bad[i].expect);
        check(st != NN_OK && contains(msg, bad[i].expect) && contains(msg, "bad.nn:2"), name,
              "%s", st ? msg : "accepted");
        nn_net_free(net);
    }
}

/* Every new layer in one model (two of them read by in=). */
static const char *const ALL_LAYERS_MODEL = "input shape=1x8x8\n"
                                            "conv2d name=c1 out=4 kernel=3 pad=1\n"
                                            "leaky_relu slope=0.1\n"
                                            "avgpool size=2\n"
                                            "conv2d name=c2 out=6 kernel=3 pad=1\n"
                                            "gelu\n"
                                            "avgpool size=3 stride=1 pad=1\n"
                                            "sigmoid\n"
                                            "gap\n"
                                            "linear name=f1 out=8\n"
                                            "silu\n"
                                            "linear name=f2 out=7\n"
                                            "tanh\n"
                                            "linear name=f3 out=5\n"
                                            "leaky_relu\n"
                                            "softmax_ce\n";

static void test_model_shapes(nn_ctx *ctx) {
    static const struct {
        const char *op;
        int ndim, d0, d1, d2;
    } want[] = {
        {"input", 3, 1, 8, 8},   {"conv2d", 3, 4, 8, 8},  {"leaky_relu", 3, 4, 8, 8},
        {"avgpool", 3, 4, 4, 4}, {"conv2d", 3, 6, 4, 4},  {"gelu", 3, 6, 4, 4},
        {"avgpool", 3, 6, 4, 4}, {"sigmoid", 3, 6, 4, 4}, {"gap", 1, 6, 0, 0},
        {"linear", 1, 8, 0, 0},  {"silu", 1, 8, 0, 0},    {"linear", 1, 7, 0, 0},
        {"tanh", 1, 7, 0, 0},    {"linear", 1, 5, 0, 0},  {"leaky_relu", 1, 5, 0, 0},
    };
    const int nw = (int)(sizeof want / sizeof want[0]);
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, ALL_LAYERS_MODEL, "all.nn", &net);
    check(st == NN_OK, "model with every new layer parses", "%s", ctx_err(ctx, st));
    if (st) return;
    int bad = -1;
    for (int i = 0; i < nw && bad < 0; i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        if (strcmp(li.op, want[i].op) ||
            !shape_is(&li.out, want[i].ndim, want[i].d0, want[i].d1, want[i].d2, 0) ||
            (i > 0 && li.flops <= 0))
            bad = i;
    }
    check(nn_net_num_layers(net) == nw + 1 && bad < 0,
          "nn_net_layer_info: every layer's op, output shape and FLOPs > 0",
          "%d layers; first wrong: %d (-1: none)", nn_net_num_layers(net), bad);
    nn_layer_info li;
    nn_net_layer_info(net, 3, &li);
    const nn_node *lr = &net->nodes[2], *lr2 = &net->nodes[14];
    check(lr->d.act.slope == 0.1f && lr2->d.act.slope == 0.01f &&
              net->nodes[3].d.pool.stride_h == 2 && net->nodes[3].d.pool.stride_w == 2 &&
              li.flops == 4 * 4 * 4 * 4,
          "keys and defaults: slope=0.1, default 0.01, avgpool stride = size, FLOPs",
          "slopes %g %g, avgpool flops %lld", (double)lr->d.act.slope, (double)lr2->d.act.slope,
          (long long)li.flops);
    nn_net_free(net);
}

static void graph_vs_ref(const char *what, const char *text, nn_ctx *const ctxs[2]) {
    for (int t = 0; t < 2; t++) {
        char name[200];
        snprintf(name, sizeof name, "graph == reference composition: %s, %d thread%s", what,
                 ctxs[t]->threads, ctxs[t]->threads > 1 ? "s" : "");
        nn_net *net = NULL;
        const int n = 13;
        nn_status st = nn_net_parse(ctxs[t], text, "test.nn", &net);
        if (st == NN_OK) st = nn_net_plan(net, n);
        if (st) {
            check(0, name, "%s", nn_ctx_error(ctxs[t]));
            nn_net_free(net);
            continue;
        }
        const int classes = nn_net_num_classes(net);
        nn_shape in = nn_net_input_shape(net);
        const size_t xn = (size_t)n * (size_t)nn_shape_numel(&in);
        nn_rng rng;
        nn_rng_seed(&rng, 99, 5);
        nn_net_init_params(net, &rng);
        float *x = xmalloc(xn * sizeof(float));
        for (size_t i = 0; i < xn; i++) x[i] = 4.0f * nn_rng_uniform(&rng) - 2.0f;
        int32_t labels[13];
        for (int i = 0; i < n; i++) labels[i] = (int32_t)nn_rng_below(&rng, (uint32_t)classes);
        const size_t np = nn_net_num_params(net);
        double *grads = xmalloc(np * sizeof(double));
        double *logits = xmalloc((size_t)n * classes * sizeof(double));
        const double lref = ref_run(net, x, labels, n, logits, grads);

        float loss = NAN;
        nn_net_zero_grad(net);
        st = nn_net_forward(net, x, labels, n, &loss);
        if (st == NN_OK) st = nn_net_backward(net);
        double e_loss = max_err(&loss, &lref, 1);
        double e_logits = max_err(nn_net_logits(net), logits, (size_t)n * classes);
        double e_grad = 0.0, gmin = INFINITY;
        char worst[128] = "";
        for (int i = 0; i < nn_net_num_param_tensors(net); i++) {
            const nn_param_info *p = nn_net_param_info(net, i);
            double e = max_err(nn_net_grads(net) + p->offset, grads + p->offset, p->numel);
            gmin = fmin(gmin, max_abs(grads + p->offset, p->numel));
            if (!(e <= e_grad)) {
                e_grad = e;
                snprintf(worst, sizeof worst, "%s", p->name);
            }
        }
        check(st == NN_OK && e_loss <= 1e-4 && e_logits <= 1e-4 && e_grad <= 1e-4 && gmin > 1e-6,
              name,
              "loss %.6f ref %.6f; max err logits %.2e, grads %.2e (%s); smallest tensor max "
              "|grad| %.2e%s%s",
              (double)loss, lref, e_logits, e_grad, worst, gmin, st ? ": " : "",
              st ? nn_ctx_error(ctxs[t]) : "");
        free(x), free(grads), free(logits);
        nn_net_free(net);
    }
}

static void test_graphs(nn_ctx *const ctxs[2]) {
    graph_vs_ref("every new layer (conv, leaky_relu, avgpool, gelu, sigmoid, gap, silu, tanh)",
                 ALL_LAYERS_MODEL, ctxs);
    graph_vs_ref("activations on the input and after gap, avgpool with odd sizes and in=",
                 "input shape=2x7x9\n"
                 "tanh name=t0\n"
                 "conv2d name=c1 out=3 kernel=3x2 stride=1x2 pad=1x0\n"
                 "silu name=s1\n"
                 "avgpool name=p1 size=3x2 stride=2x1 pad=1x0\n"
                 "gelu name=g1 in=p1\n"
                 "gap name=gp\n"
                 "sigmoid\n"
                 "leaky_relu slope=-0.5\n"
                 "linear name=f out=4\n"
                 "softmax_ce\n",
                 ctxs);
}

int main(void) {
    nn_ctx *ctx1 = test_ctx_new(1), *ctx2 = test_ctx_new(2);
    if (!ctx1 || !ctx2) return 2;
    nn_ctx *const ctxs[2] = {ctx1, ctx2};
    nn_rng rng;
    nn_rng_seed(&rng, 2024, 7);

    test_act_fast_vs_ref(ctxs, &rng);
    test_act_nan(ctx1);
    test_pool_fast_vs_ref(ctxs, &rng);
    test_fd(&rng);
    test_hand(ctx1);
    test_parity(ctx1);
    test_parse_errors(ctx1);
    test_model_shapes(ctx1);
    test_graphs(ctxs);

    nn_ctx_free(ctx1);
    nn_ctx_free(ctx2);
    return test_summary();
}
