/*
 * test_batchnorm.c - batch normalization (batchnorm layer) in training and
 * eval mode:
 *   - fast float kernels against the double reference (4-D and flat inputs,
 *     batch 3 and 13 in training mode, batch 1 in eval mode, 1 and 2 threads,
 *     bit-identical across thread counts), including the running statistics;
 *   - the row kernels' portable, AVX2 and AVX-512 variants bit-identical
 *     (plain and with the fused ReLU, NaN inputs included), each the CPU has;
 *   - reference gradients w.r.t. x, weight and bias against central
 *     differences in double in training mode (loss = sum(y * r));
 *   - PyTorch 1.13 parity (tests/fixtures/layers_batchnorm.txt, made by
 *     scripts/make_bn_fixtures.py): output, dx, dweight, dbias and running
 *     statistics after two training passes, and the eval-mode output;
 *   - parsing, parameter/buffer declaration and init (weight 1, bias 0, no
 *     RNG draws), the batch-1 training error;
 *   - a whole model (conv2d -> batchnorm -> relu -> ... -> softmax_ce) trained a
 *     few SGD steps, nn_evaluate in eval mode, and a checkpoint round trip
 *     including the buffers.
 * Exits non-zero if any check fails.
 */
#include "backend/backend.h"
#include "ops/ops.h"
#include "test_util.h"

#define FAST_TOL 1e-5   /* fast vs reference, relative to the tensor's magnitude */
#define FD_TOL 1e-6
#define FD_EPS 1e-6
#define TORCH_TOL 1e-5

static float *fvec_nan(size_t n) {
    float *v = fvec(n);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    return v;
}

static nn_bn_desc make_desc(int C, int HW, float eps, float momentum) {
    nn_bn_desc d = {C, HW, eps, momentum, 0, 0, 0, 0, 0, 0};
    return d;
}

/* ------------------------------------------------------------ fast vs reference */

static void test_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const struct {
        int C, HW;
        const char *what;
    } shapes[] = {{3, 20, "4-D 3x4x5"}, {7, 1, "2-D 7"}, {4, 9, "4-D 4x3x3"},
                  {5, 49, "4-D 5x7x7"}, {2, 64, "4-D 2x8x8"}}; /* rows of 16-lane vectors */
    static const struct {
        int n, training;
    } runs[] = {{3, 1}, {13, 1}, {1, 0}, {3, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double ey = 0, edx = 0, edw = 0, edb = 0, erun = 0;
        int same = 1, configs = 0;
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
            const int C = shapes[s].C, n = runs[r].n, tr = runs[r].training;
            const nn_bn_desc d = make_desc(C, shapes[s].HW, 1e-5f, 0.1f);
            const size_t xn = (size_t)n * C * d.HW, rn = 2 * (size_t)C + 1;
            float *x = fvec(xn), *dy = fvec(xn), *w = fvec(C), *b = fvec(C), *run0 = fvec(rn);
            fill(x, xn, rng, -2.0f, 3.0f);
            fill(dy, xn, rng, -1.0f, 1.0f);
            fill(w, C, rng, 0.5f, 1.5f);
            fill(b, C, rng, -0.5f, 0.5f);
            fill(run0, 2 * (size_t)C, rng, 0.2f, 1.0f); /* running mean and var */
            run0[2 * C] = 4.0f;
            double *xd = to_d(x, xn), *dyd = to_d(dy, xn), *wd = to_d(w, C), *bd = to_d(b, C);
            double *rund = to_d(run0, rn), *yr = dvec(xn), *dxr = dvec(xn);
            double *dwr = calloc(C, sizeof(double)), *dbr = calloc(C, sizeof(double));
            nn_ref_batchnorm_backward(dxr, dwr, dbr, dyd, xd, wd, rund, &d, n, tr);
            nn_ref_batchnorm_forward(yr, rund, xd, wd, bd, &d, n, tr);
            float *yt[2], *dxt[2], *dwt[2], *dbt[2], *runt[2];
            for (int t = 0; t < 2; t++) {
                float *save = fvec_nan(2 * (size_t)C);
                yt[t] = fvec_nan(xn), dxt[t] = fvec_nan(xn);
                dwt[t] = calloc(C, sizeof(float)), dbt[t] = calloc(C, sizeof(float));
                runt[t] = fvec(rn);
                memcpy(runt[t], run0, rn * sizeof(float));
                nn_batchnorm_forward(yt[t], save, runt[t], x, w, b, &d, n, tr, ctxs[t]);
                nn_batchnorm_backward(dxt[t], dwt[t], dbt[t], dy, x, w, save, &d, n, tr, ctxs[t]);
                ey = fmax(ey, max_err(yt[t], yr, xn));
                edx = fmax(edx, max_err(dxt[t], dxr, xn));
                edw = fmax(edw, max_err(dwt[t], dwr, C));
                edb = fmax(edb, max_err(dbt[t], dbr, C));
                erun = fmax(erun, max_err(runt[t], rund, rn));
                configs++;
                free(save);
            }
            same &= !memcmp(yt[0], yt[1], xn * sizeof(float)) &&
                    !memcmp(dxt[0], dxt[1], xn * sizeof(float)) &&
                    !memcmp(dwt[0], dwt[1], C * sizeof(float)) &&
                    !memcmp(runt[0], runt[1], rn * sizeof(float));
            free(x), free(dy), free(w), free(b), free(run0), free(xd), free(dyd), free(wd);
            free(bd), free(rund), free(yr), free(dxr), free(dwr), free(dbr);
            for (int t = 0; t < 2; t++) free(yt[t]), free(dxt[t]), free(dwt[t]), free(dbt[t]), free(runt[t]);
        }
        char name[160];
        snprintf(name, sizeof name, "batchnorm fast==ref %s (train n=3,13; eval n=1,3; T=1,2)",
                 shapes[s].what);
        check(ey <= FAST_TOL && edx <= FAST_TOL && edw <= FAST_TOL && edb <= FAST_TOL &&
                  erun <= FAST_TOL && same,
              name, "%d configs, max err y=%.2e dx=%.2e dw=%.2e db=%.2e running=%.2e, T=1==T=2: %s",
              configs, ey, edx, edw, edb, erun, same ? "yes" : "no");
    }
}

/* A batch larger than any two cores' L2 caches (8.4 MB per tensor, rows of
 * 784 floats, 64-byte aligned): the normalizing pass and dx go through
 * stores past the caches (batchnorm_rows.h's R(put)). The results against
 * the double-precision reference, on 1 and 2 threads (the same bits), and
 * at every ISA this CPU runs (the generic bits). */
static void test_streamed(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const nn_isa isas[] = {NN_ISA_GENERIC, NN_ISA_AVX2, NN_ISA_AVX512};
    const int C = 8, n = 336;
    for (int relu = 0; relu <= 1; relu++) {
        nn_bn_desc d = make_desc(C, 784, 1e-5f, 0.1f);
        d.relu = relu;
        const size_t xn = (size_t)n * C * d.HW, rn = 2 * (size_t)C + 1;
        float *x = fvec(xn), *dy = fvec(xn), *w = fvec(C), *b = fvec(C);
        fill(x, xn, rng, -2.0f, 3.0f);
        fill(dy, xn, rng, -1.0f, 1.0f);
        fill(w, C, rng, 0.5f, 1.5f);
        fill(b, C, rng, -0.5f, 0.5f);
        double *xd = to_d(x, xn), *dyd = to_d(dy, xn), *wd = to_d(w, C), *bd = to_d(b, C);
        double *yr = dvec(xn), *dxr = dvec(xn), *rund = calloc(rn, sizeof(double));
        double *dwr = calloc(C, sizeof(double)), *dbr = calloc(C, sizeof(double));
        for (int c = 0; c < C; c++) rund[C + c] = 1.0;
        nn_ref_batchnorm_forward(yr, rund, xd, wd, bd, &d, n, 1);
        for (size_t i = 0; relu && i < xn; i++) yr[i] = yr[i] > 0.0 ? yr[i] : 0.0;
        if (!relu) nn_ref_batchnorm_backward(dxr, dwr, dbr, dyd, xd, wd, rund, &d, n, 1);
        /* 64-byte aligned, as a planned net's buffers (nn_alloc_aligned) */
        const size_t bytes = xn * sizeof(float);
        float *y0 = aligned_alloc(64, bytes), *dx0 = aligned_alloc(64, bytes);
        float *y = aligned_alloc(64, bytes), *dx = aligned_alloc(64, bytes);
        double ey = 0.0, edx = 0.0;
        int same = 1, runs = 0;
        for (int t = 0; t < 2; t++)
            for (size_t v = 0; v < sizeof isas / sizeof isas[0]; v++) {
                const nn_isa saved = nn_ctx_isa(ctxs[t]);
                if (nn_ctx_set_isa(ctxs[t], isas[v]) != NN_OK) continue;
                const int first = !runs;
                float *run = calloc(rn, sizeof(float)), *save = fvec(2 * (size_t)C);
                float *dw = calloc(C, sizeof(float)), *db = calloc(C, sizeof(float));
                for (int c = 0; c < C; c++) run[C + c] = 1.0f;
                nn_batchnorm_forward(first ? y0 : y, save, run, x, w, b, &d, n, 1, ctxs[t]);
                if (!relu)
                    nn_batchnorm_backward(first ? dx0 : dx, dw, db, dy, x, w, save, &d, n, 1,
                                          ctxs[t]);
                ey = fmax(ey, max_err(first ? y0 : y, yr, xn));
                if (!relu) edx = fmax(edx, max_err(first ? dx0 : dx, dxr, xn));
                if (!first) {
                    same &= !memcmp(y, y0, xn * sizeof(float));
                    if (!relu) same &= !memcmp(dx, dx0, xn * sizeof(float));
                }
                runs++;
                nn_ctx_set_isa(ctxs[t], saved);
                free(run), free(save), free(dw), free(db);
            }
        check(ey <= FAST_TOL && edx <= FAST_TOL && same && runs >= 2,
              relu ? "batchnorm + relu, 8.4 MB batch (streamed stores): fast == ref, every "
                     "thread count and ISA the same bits"
                   : "batchnorm forward and backward, 8.4 MB batch (streamed stores): fast == "
                     "ref, every thread count and ISA the same bits",
              "%d runs, max err y=%.2e dx=%.2e, identical: %s", runs, ey, edx,
              same ? "yes" : "no");
        free(x), free(dy), free(w), free(b), free(xd), free(dyd), free(wd), free(bd);
        free(yr), free(dxr), free(rund), free(dwr), free(dbr);
        free(y0), free(dx0), free(y), free(dx);
    }
}

/* The statistics of channels far from zero: each row's squared deviations
 * from its own mean, combined per channel (rows_sq_dev), keep the variance
 * of 1000 +- 1 values to float accuracy, where sum x^2 - (sum x)^2 / M
 * would lose every digit; and a constant channel gets a variance of 0, no
 * negative rounding, so its running variance decays exactly. */
static void test_offset_statistics(nn_ctx *ctx, nn_rng *rng) {
    const int n = 4, C = 3;
    const nn_bn_desc d = make_desc(C, 49, 1e-5f, 0.1f);
    const size_t xn = (size_t)n * C * d.HW, rn = 2 * (size_t)C + 1;
    float *x = fvec(xn), *y = fvec_nan(xn), *w = fvec(C), *b = fvec(C), *run = fvec(rn);
    float *save = fvec_nan(2 * (size_t)C);
    fill(x, xn, rng, -1.0f, 1.0f);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            for (int j = 0; j < d.HW; j++) {
                float *v = &x[((size_t)i * C + c) * d.HW + j];
                *v = c == 2 ? 7.25f : *v + (c ? -1000.0f : 1000.0f); /* channel 2: constant */
            }
    for (int c = 0; c < C; c++) w[c] = 1.0f, b[c] = 0.0f, run[c] = 0.0f, run[C + c] = 1.0f;
    run[2 * C] = 0.0f;
    double *xd = to_d(x, xn), *wd = to_d(w, C), *bd = to_d(b, C), *rund = to_d(run, rn);
    double *yr = dvec(xn);
    nn_ref_batchnorm_forward(yr, rund, xd, wd, bd, &d, n, 1);
    nn_batchnorm_forward(y, save, run, x, w, b, &d, n, 1, ctx);
    double evar = 0.0, var0 = 0.0; /* the batch variance, through 1/std (save) */
    for (int c = 0; c < 2; c++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d.HW; j++) m += xd[((size_t)i * C + c) * d.HW + j];
        m /= (double)n * d.HW;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d.HW; j++) {
                const double t = xd[((size_t)i * C + c) * d.HW + j] - m;
                v += t * t;
            }
        v /= (double)n * d.HW;
        const double got = 1.0 / ((double)save[C + c] * save[C + c]) - d.eps;
        evar = fmax(evar, fabs(got - v) / v);
        var0 = c ? var0 : v;
    }
    const int constant_ok = run[C + 2] == 0.9f && run[2] == (float)(0.1 * 7.25);
    check(evar <= FAST_TOL && constant_ok && isfinite(y[xn - 1]),
          "batchnorm statistics of channels at +-1000 (spread 1) and of a constant channel",
          "batch variance rel err %.2e (channel 0: %.6f), constant channel: running var %.9g "
          "mean %.9g", evar, var0, (double)run[C + 2], (double)run[2]);
    free(x), free(y), free(w), free(b), free(run), free(save), free(xd), free(wd), free(bd);
    free(rund), free(yr);
}

/* ------------------------------------------------------------ ISA variants */

/* forward (plain and with the fused ReLU) and backward at every ISA this CPU
 * runs give the generic kernels' bits exactly; rows of 49 and 64 values take
 * the 16-lane vector loops and their scalar tails */
static void test_isa_variants(nn_ctx *ctx, nn_rng *rng) {
    static const nn_isa isas[] = {NN_ISA_GENERIC, NN_ISA_AVX2, NN_ISA_AVX512};
    const nn_isa saved = nn_ctx_isa(ctx);
    const int C = 3, n = 5;
    int same = 1, ran = 0;
    for (int hw = 49; hw <= 64; hw += 15)
        for (int relu = 0; relu <= 1; relu++) {
            nn_bn_desc d = make_desc(C, hw, 1e-5f, 0.1f);
            d.relu = relu;
            const size_t xn = (size_t)n * C * hw, rn = 2 * (size_t)C + 1;
            float *x = fvec(xn), *dy = fvec(xn), *w = fvec(C), *b = fvec(C);
            fill(x, xn, rng, -2.0f, 3.0f);
            fill(dy, xn, rng, -1.0f, 1.0f);
            fill(w, C, rng, 0.5f, 1.5f);
            fill(b, C, rng, -0.5f, 0.5f);
            float *y0 = fvec(xn), *dx0 = fvec(xn), *y = fvec(xn), *dx = fvec(xn);
            for (size_t v = 0; v < sizeof isas / sizeof isas[0]; v++) {
                if (nn_ctx_set_isa(ctx, isas[v]) != NN_OK) continue;
                float *run = calloc(rn, sizeof(float)), *save = fvec(2 * (size_t)C);
                float *dw = calloc(C, sizeof(float)), *db = calloc(C, sizeof(float));
                for (int c = 0; c < C; c++) run[C + c] = 1.0f; /* running var, as initialized */
                nn_batchnorm_forward(v ? y : y0, save, run, x, w, b, &d, n, 1, ctx);
                if (!relu) /* backward has no fused-ReLU entry point here */
                    nn_batchnorm_backward(v ? dx : dx0, dw, db, dy, x, w, save, &d, n, 1, ctx);
                /* a NaN input passes the fused ReLU in every variant (eval
                 * mode, from the running statistics the pass above updated) */
                float *xnan = fvec(xn), *ynan = fvec(xn);
                memcpy(xnan, x, xn * sizeof(float));
                xnan[17] = NAN;
                nn_batchnorm_forward(ynan, save, run, xnan, w, b, &d, 1, 0, ctx);
                same &= isnan(ynan[17]) != 0;
                if (v) {
                    same &= !memcmp(y, y0, xn * sizeof(float));
                    if (!relu) same &= !memcmp(dx, dx0, xn * sizeof(float));
                }
                ran++;
                free(run), free(save), free(dw), free(db), free(xnan), free(ynan);
            }
            free(x), free(dy), free(w), free(b), free(y0), free(dx0), free(y), free(dx);
        }
    nn_ctx_set_isa(ctx, saved);
    check(same && ran >= 4, "batchnorm kernels: every ISA variant gives the generic bits",
          "%d runs (HW 49, 64; plain and fused ReLU), identical and NaN passing: %s", ran,
          same ? "yes" : "no");
}

/* ------------------------------------------------------------ finite differences */

typedef struct {
    nn_bn_desc d;
    int n, training;
    size_t xn;
    double *x, *w, *b, *r, *y, *running;
} fd_problem;

static double fd_loss(fd_problem *p) {
    nn_ref_batchnorm_forward(p->y, p->training ? NULL : p->running, p->x, p->w, p->b, &p->d, p->n,
                             p->training);
    double s = 0.0;
    for (size_t i = 0; i < p->xn; i++) s += p->y[i] * p->r[i];
    return s;
}

/* central differences of fd_loss over v[0..count) against g */
static double fd_err(fd_problem *p, double *v, const double *g, size_t count) {
    double e = 0.0;
    for (size_t i = 0; i < count; i++) {
        const double v0 = v[i];
        v[i] = v0 + FD_EPS;
        double lp = fd_loss(p);
        v[i] = v0 - FD_EPS;
        double lm = fd_loss(p);
        v[i] = v0;
        double num = (lp - lm) / (2 * FD_EPS);
        double d = fabs(num - g[i]) / fmax(1.0, fmax(fabs(num), fabs(g[i])));
        if (!(d <= e)) e = d;
    }
    return e;
}

static void test_fd(nn_rng *rng) {
    static const struct {
        int n, C, HW, training;
    } cases[] = {{3, 2, 5, 1}, {4, 3, 1, 1}, {2, 2, 3, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fd_problem p;
        p.d = make_desc(cases[k].C, cases[k].HW, 1e-3f, 0.1f);
        p.n = cases[k].n, p.training = cases[k].training;
        const int C = p.d.C;
        p.xn = (size_t)p.n * C * p.d.HW;
        p.x = dvec(p.xn), p.r = dvec(p.xn), p.y = dvec(p.xn);
        p.w = dvec(C), p.b = dvec(C), p.running = dvec(2 * (size_t)C + 1);
        for (size_t i = 0; i < p.xn; i++) p.x[i] = 4.0 * nn_rng_uniform(rng) - 1.5;
        for (size_t i = 0; i < p.xn; i++) p.r[i] = 2.0 * nn_rng_uniform(rng) - 1.0;
        for (int c = 0; c < C; c++) {
            p.w[c] = 0.5 + nn_rng_uniform(rng);
            p.b[c] = nn_rng_uniform(rng) - 0.5;
            p.running[c] = nn_rng_uniform(rng) - 0.5;
            p.running[C + c] = 0.5 + nn_rng_uniform(rng);
        }
        double *dx = dvec(p.xn), *dw = calloc(C, sizeof(double)), *db = calloc(C, sizeof(double));
        nn_ref_batchnorm_backward(dx, dw, db, p.r, p.x, p.w, p.running, &p.d, p.n, p.training);
        double ex = fd_err(&p, p.x, dx, p.xn), ew = fd_err(&p, p.w, dw, C),
               eb = fd_err(&p, p.b, db, C);
        double gmin = fmin(max_abs(dx, p.xn), fmin(max_abs(dw, C), max_abs(db, C)));
        char name[160];
        snprintf(name, sizeof name, "batchnorm reference finite differences (%s, n=%d C=%d HW=%d)",
                 p.training ? "train" : "eval", p.n, C, p.d.HW);
        check(ex <= FD_TOL && ew <= FD_TOL && eb <= FD_TOL && gmin > 1e-3, name,
              "max err dx=%.2e dw=%.2e db=%.2e, min max|grad| %.3g", ex, ew, eb, gmin);
        free(p.x), free(p.r), free(p.y), free(p.w), free(p.b), free(p.running);
        free(dx), free(dw), free(db);
    }
}

/* ------------------------------------------------------------ hand-computed */

static void test_hand(nn_ctx *ctx) {
    /* one channel, x = 1 2 3 4 (n=4): mean 2.5, biased var 1.25, unbiased 5/3 */
    const nn_bn_desc d = make_desc(1, 1, 0.0f + 1e-5f, 0.5f);
    const float x[4] = {1, 2, 3, 4}, w[1] = {2}, b[1] = {1};
    float y[4], save[2], run[3] = {0, 1, 0};
    nn_batchnorm_forward(y, save, run, x, w, b, &d, 4, 1, ctx);
    const double is = 1.0 / sqrt(1.25 + 1e-5);
    double want[4];
    for (int i = 0; i < 4; i++) want[i] = (x[i] - 2.5) * is * 2 + 1;
    double e = max_err(y, want, 4);
    const double want_run[3] = {1.25, 0.5 + 0.5 * 5.0 / 3.0, 1};
    double er = max_err(run, want_run, 3);
    check(e < 1e-6 && er < 1e-6, "batchnorm hand-computed (x=1..4, momentum 0.5)",
          "err y=%.2e running=%.2e", e, er);
}

/* ------------------------------------------------------------ PyTorch parity */

static void hash_fill(float *v, size_t n, uint32_t stream, float scale) {
    for (size_t i = 0; i < n; i++) v[i] = hash_signed(stream, (uint32_t)i, scale);
}

static float *read_values(FILE *f, const char *tag, size_t want) {
    char t[32];
    size_t count;
    if (fscanf(f, "%31s %zu", t, &count) != 2 || strcmp(t, tag) || count != want) return NULL;
    float *v = fvec(count);
    for (size_t i = 0; i < count; i++)
        if (fscanf(f, "%f", &v[i]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

static double err_vs(const float *a, const float *torch, size_t n) {
    double *t = to_d(torch, n);
    double e = max_err(a, t, n);
    free(t);
    return e;
}

/* One case through the parser (for the default keys) and the CPU kernel table,
 * with the net's buffers and a local aux. Returns 0 if the file is unreadable. */
static int parity_case(FILE *f, const char *header, nn_ctx *ctx) {
    int n;
    char dims[32];
    unsigned xs, gs, ws;
    float scale;
    const char *bar = strchr(header, '|');
    if (sscanf(header, "case %d %31s %u %f %u %u", &n, dims, &xs, &scale, &gs, &ws) != 6 || !bar) {
        check(0, "batchnorm parity", "bad case line '%s'", header);
        return 0;
    }
    char layer[128];
    snprintf(layer, sizeof layer, "%s", bar + 2);
    layer[strcspn(layer, "\n")] = '\0';
    char text[512];
    snprintf(text, sizeof text, "input shape=%s\n%s name=bn\nflatten\nlinear out=2\nsoftmax_ce\n",
             dims, layer);
    char name[256];
    snprintf(name, sizeof name, "PyTorch parity '%s' on n=%d x %s", layer, n, dims);
    nn_net *net = NULL;
    if (nn_net_parse(ctx, text, "bn_parity.nn", &net)) {
        check(0, name, "%s", nn_ctx_error(ctx));
        return 1;
    }
    const nn_node *node = &net->nodes[1];
    const int C = node->d.bn.C;
    const size_t per = (size_t)nn_shape_numel(&node->out), xn = (size_t)n * per;
    float *w = nn_net_params(net) + net->params[node->param_index].offset;
    float *b = nn_net_params(net) + net->params[node->param_index + 1].offset;
    float *dw = nn_net_grads(net) + net->params[node->param_index].offset;
    float *db = nn_net_grads(net) + net->params[node->param_index + 1].offset;
    hash_fill(w, C, ws, 0.5f);
    for (int c = 0; c < C; c++) w[c] += 1.0f;
    hash_fill(b, C, ws + 1, 0.5f);
    float *x = fvec(xn), *dy = fvec(xn), *y = fvec_nan(xn), *dx = fvec_nan(xn);
    /* the aux the graph gives the node (statistics, map, the reader's sums) */
    float *aux = fvec_nan((node->aux_fixed_bytes + node->aux_bytes * (size_t)n + 3) / 4);
    nn_op_args a;
    memset(&a, 0, sizeof a);
    a.node = node, a.n = n, a.y = y, a.x = x, a.dy = dy, a.dx = dx, a.ctx = ctx;
    a.w = w, a.b = b, a.dw = dw, a.db = db, a.aux = aux, a.training = 1;
    a.buf = nn_net_buffers(net);
    const nn_op_kernels *k = nn_backend_kernels(ctx->backend, node->op);
    a.ws_floats = k->workspace ? k->workspace(node, n, nn_ctx_threads(ctx)) : 0; /* as planned */
    a.ws = a.ws_floats ? fvec_nan(a.ws_floats) : NULL;
    hash_fill(x, xn, xs, scale);
    k->forward(&a);
    hash_fill(x, xn, xs + 1, scale);
    hash_fill(dy, xn, gs, 1.0f);
    k->forward(&a);
    k->backward(&a);
    float *ty = read_values(f, "y", xn), *tdx = read_values(f, "dx", xn);
    float *tdw = read_values(f, "dw", C), *tdb = read_values(f, "db", C);
    float *trm = read_values(f, "running_mean", C), *trv = read_values(f, "running_var", C);
    float *tnb = read_values(f, "num_batches_tracked", 1), *tye = read_values(f, "ye", per);
    int ok = ty && tdx && tdw && tdb && trm && trv && tnb && tye;
    if (!ok) {
        check(0, name, "value lines missing or of the wrong size");
    } else {
        const float *run = nn_net_buffers(net);
        double ey = err_vs(y, ty, xn), edx = err_vs(dx, tdx, xn), edw = err_vs(dw, tdw, C),
               edb = err_vs(db, tdb, C), erm = err_vs(run, trm, C), erv = err_vs(run + C, trv, C);
        int nbt_ok = run[2 * C] == tnb[0] && tnb[0] == 2.0f;
        check(ey <= TORCH_TOL && edx <= TORCH_TOL && edw <= TORCH_TOL && edb <= TORCH_TOL &&
                  erm <= TORCH_TOL && erv <= TORCH_TOL && nbt_ok,
              name, "train: max err y=%.2e dx=%.2e dw=%.2e db=%.2e running_mean=%.2e "
              "running_var=%.2e num_batches_tracked %g", ey, edx, edw, edb, erm, erv,
              (double)run[2 * C]);
        /* eval mode on one sample */
        float *ye = fvec_nan(per);
        a.n = 1, a.y = ye, a.training = 0;
        hash_fill(x, per, xs + 2, scale);
        k->forward(&a);
        double eye = err_vs(ye, tye, per);
        char ename[300];
        snprintf(ename, sizeof ename, "%s (eval mode, n=1)", name);
        check(eye <= TORCH_TOL && run[2 * C] == 2.0f, ename, "max err y=%.2e", eye);
        free(ye);
    }
    free(x), free(dy), free(y), free(dx), free(aux), free(a.ws), free(ty), free(tdx), free(tdw);
    free(tdb);
    free(trm), free(trv), free(tnb), free(tye);
    nn_net_free(net);
    return ok;
}

static void test_parity(nn_ctx *ctx) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/layers_batchnorm.txt", NN_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    if (!f) {
        check(0, "batchnorm parity fixture", "cannot open %s", path);
        return;
    }
    char line[512];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (strncmp(line, "case ", 5)) {
            check(0, "batchnorm parity fixture", "unexpected line '%.40s'", line);
            break;
        }
        if (!parity_case(f, line, ctx)) break;
        cases++;
        int c = fgetc(f);
        if (c != '\n' && c != EOF) ungetc(c, f);
    }
    fclose(f);
    check(cases == 3, "batchnorm parity fixture has 3 cases", "%d", cases);
}

/* ------------------------------------------------------------ parsing, init */

static void test_parse(nn_ctx *ctx) {
    static const struct {
        const char *layer, *want;
    } bad[] = {{"batchnorm eps=0", "eps must be in"},
               {"batchnorm eps=-1e-5", "eps must be in"},
               {"batchnorm eps=abc", "finite number"},
               {"batchnorm eps=inf", "finite number"},
               {"batchnorm momentum=1.5", "momentum must be in"},
               {"batchnorm momentum=-0.1", "momentum must be in"},
               {"batchnorm affine=0", "unknown key 'affine'"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "input shape=2x3x3\n%s\nflatten\nlinear out=2\nsoftmax_ce\n",
                 bad[i].layer);
        nn_net *net = NULL;
        nn_status st = nn_net_parse(ctx, text, "bad.nn", &net);
        char name[160];
        snprintf(name, sizeof name, "parse error: '%s'", bad[i].layer);
        check(st == NN_EINVAL && !net && contains(nn_ctx_error(ctx), bad[i].want) &&
                  contains(nn_ctx_error(ctx), "bad.nn:2"),
              name, "%s", ctx_err(ctx, st));
        nn_net_free(net);
    }
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, "input shape=3x2x2\nbatchnorm\nflatten\nlinear out=2\n"
                                "softmax_ce\n", "x.nn", &net);
    check(st == NN_OK && net->nodes[1].d.bn.eps == 1e-5f && net->nodes[1].d.bn.momentum == 0.1f &&
              net->nodes[1].d.bn.C == 3 && net->nodes[1].d.bn.HW == 4,
          "batchnorm defaults eps=1e-5 momentum=0.1, C=3 HW=4", "%s", ctx_err(ctx, st));
    if (!st) {
        const nn_param_info *w = nn_net_param_info(net, 0), *b = nn_net_param_info(net, 1);
        const nn_param_info *rm = nn_net_buffer_info(net, 0), *rv = nn_net_buffer_info(net, 1);
        const nn_param_info *nb = nn_net_buffer_info(net, 2);
        check(!strcmp(w->name, "batchnorm1.weight") && !strcmp(b->name, "batchnorm1.bias") &&
                  shape_is(&w->shape, 1, 3, 0, 0, 0) && nn_net_num_buffer_tensors(net) == 3 &&
                  !strcmp(rm->name, "batchnorm1.running_mean") &&
                  !strcmp(rv->name, "batchnorm1.running_var") &&
                  !strcmp(nb->name, "batchnorm1.num_batches_tracked") && nb->shape.ndim == 0 &&
                  nb->numel == 1 && nn_net_num_buffers(net) == 7 && !nn_net_buffer_info(net, 3) &&
                  nn_net_find_buffer(net, "batchnorm1.running_var") == 1,
              "batchnorm declares weight, bias (C) and buffers running_mean, running_var (C), "
              "num_batches_tracked (scalar)", NULL);
        const float *buf = nn_net_buffers(net);
        check(buf[0] == 0 && buf[2] == 0 && buf[3] == 1 && buf[5] == 1 && buf[6] == 0 &&
                  nn_net_training(net) == 1,
              "buffers start at running_mean 0, running_var 1, count 0; training mode by default",
              NULL);
        nn_net_free(net);
    }
    /* 1-element channels cannot be normalized with batch statistics */
    st = nn_net_parse(ctx, "input shape=4\nbatchnorm name=b\nlinear out=2\nsoftmax_ce\n", "f.nn", &net);
    if (!st) st = nn_net_plan(net, 2);
    if (!st) {
        float x[8] = {0};
        int32_t y[2] = {0, 1};
        nn_status s1 = nn_net_forward(net, x, y, 1, NULL);
        int msg = contains(nn_ctx_error(ctx), "more than one value per channel");
        nn_net_set_training(net, 0);
        nn_status s2 = nn_net_forward(net, x, y, 1, NULL);
        nn_net_set_training(net, 1);
        nn_status s3 = nn_net_forward(net, x, y, 2, NULL);
        check(s1 == NN_EINVAL && msg && s2 == NN_OK && s3 == NN_OK,
              "flat batchnorm: training batch 1 is an error (as PyTorch), eval batch 1 and "
              "training batch 2 run", "%d %d %d", s1, s2, s3);
    } else {
        check(0, "flat batchnorm model", "%s", nn_ctx_error(ctx));
    }
    nn_net_free(net);
}

static void test_init(nn_ctx *ctx) {
    const char *with = "input shape=2x4x4\nconv2d name=c out=3 kernel=3\nbatchnorm name=bn\n"
                       "relu\nflatten\nlinear name=fc out=5\nsoftmax_ce\n";
    const char *without = "input shape=2x4x4\nconv2d name=c out=3 kernel=3\n"
                          "relu\nflatten\nlinear name=fc out=5\nsoftmax_ce\n";
    nn_net *a = NULL, *b = NULL;
    if (nn_net_parse(ctx, with, "with.nn", &a) || nn_net_parse(ctx, without, "without.nn", &b)) {
        check(0, "init models", "%s", nn_ctx_error(ctx));
        nn_net_free(a);
        return;
    }
    nn_rng r1, r2;
    nn_rng_seed(&r1, 5, 1);
    nn_rng_seed(&r2, 5, 1);
    float *buf = nn_net_buffers(a);
    buf[0] = 7.0f; /* init resets buffers too */
    nn_net_init_params(a, &r1);
    nn_net_init_params(b, &r2);
    const nn_param_info *bw = nn_net_param_info(a, nn_net_find_param(a, "bn.weight"));
    const nn_param_info *bb = nn_net_param_info(a, nn_net_find_param(a, "bn.bias"));
    const nn_param_info *fa = nn_net_param_info(a, nn_net_find_param(a, "fc.weight"));
    const nn_param_info *fb = nn_net_param_info(b, nn_net_find_param(b, "fc.weight"));
    int ok = bw->init == NN_INIT_CONSTANT && bb->init == NN_INIT_CONSTANT &&
             fa->init == NN_INIT_DEFAULT && buf[0] == 0.0f;
    for (int c = 0; c < 3; c++)
        ok &= nn_net_params(a)[bw->offset + c] == 1.0f && nn_net_params(a)[bb->offset + c] == 0.0f;
    ok &= !memcmp(nn_net_params(a) + fa->offset, nn_net_params(b) + fb->offset,
                  fa->numel * sizeof(float));
    ok &= r1.state == r2.state;
    check(ok, "init: batchnorm weight 1, bias 0, no RNG draws (later layers match a model "
              "without batchnorm); buffers reset", NULL);
    nn_net_free(a);
    nn_net_free(b);
}

/* ------------------------------------------------------------ whole model */

static const char *const BN_MODEL = "input shape=1x8x8\n"
                                    "conv2d name=conv1 out=4 kernel=3 pad=1\n"
                                    "batchnorm name=bn1\n"
                                    "relu\n"
                                    "maxpool size=2\n"
                                    "flatten\n"
                                    "linear name=fc1 out=16\n"
                                    "batchnorm name=bn2 momentum=0.2\n"
                                    "relu\n"
                                    "linear name=fc2 out=3\n"
                                    "softmax_ce\n";

static void test_model(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, BN_MODEL, "bn.nn", &net);
    if (!st) st = nn_net_plan(net, 16);
    if (st) {
        check(0, "batchnorm model", "%s", nn_ctx_error(ctx));
        nn_net_free(net);
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 11, 3);
    nn_net_init_params(net, &rng);
    /* a small data set: class = which third of the image is brightest */
    nn_dataset ds = {.n = 40, .c = 1, .h = 8, .w = 8, .num_classes = 3};
    ds.pixels = xmalloc((size_t)ds.n * 64);
    ds.labels = xmalloc((size_t)ds.n * sizeof(int32_t));
    for (int64_t i = 0; i < ds.n; i++) {
        ds.labels[i] = (int32_t)(i % 3);
        for (int j = 0; j < 64; j++) {
            int third = (j % 8) * 3 / 8;
            ds.pixels[i * 64 + j] = (uint8_t)(nn_rng_uniform(&rng) * 100 + (third == ds.labels[i]) * 150);
        }
    }
    const nn_normalize norm = {0.5f, 0.25f};
    float *x = fvec(16 * 64);
    int32_t y[16];
    float first = 0, last = 0;
    int ok = 1, steps = 8;
    for (int s = 0; s < steps && ok; s++) {
        nn_dataset_gather(&ds, NULL, (s * 16) % 24, 16, &norm, x, y);
        float loss;
        nn_net_zero_grad(net);
        ok &= nn_net_forward(net, x, y, 16, &loss) == NN_OK && nn_net_backward(net) == NN_OK &&
              isfinite(loss);
        float *p = nn_net_params(net), *g = nn_net_grads(net);
        for (size_t j = 0; j < nn_net_num_params(net); j++) p[j] -= 0.1f * g[j];
        if (s == 0) first = loss;
        last = loss;
    }
    const float *buf = nn_net_buffers(net);
    const nn_param_info *nb1 = nn_net_buffer_info(net, nn_net_find_buffer(net, "bn1.num_batches_tracked"));
    const nn_param_info *nb2 = nn_net_buffer_info(net, nn_net_find_buffer(net, "bn2.num_batches_tracked"));
    check(ok && buf[nb1->offset] == (float)steps && buf[nb2->offset] == (float)steps,
          "conv2d->batchnorm->relu->...->batchnorm(1-D)->softmax_ce: 8 SGD steps", "loss %.4f -> %.4f, "
          "num_batches_tracked %g %g%s%s", (double)first, (double)last, (double)buf[nb1->offset],
          (double)buf[nb2->offset], ok ? "" : ": ", ok ? "" : nn_ctx_error(ctx));

    /* nn_evaluate uses eval mode: it changes no buffer, depends on the running
     * statistics, and restores training mode */
    float *saved = fvec(nn_net_num_buffers(net));
    memcpy(saved, buf, nn_net_num_buffers(net) * sizeof(float));
    double l1, a1, l2, a2, l3, a3;
    nn_status s1 = nn_evaluate(net, &ds, &norm, 16, x, y, &l1, &a1);
    int unchanged = !memcmp(saved, buf, nn_net_num_buffers(net) * sizeof(float));
    int mode_back = nn_net_training(net) == 1;
    nn_dataset_gather(&ds, NULL, 0, 16, &norm, x, y);
    float t1, t2;
    nn_status s2 = nn_net_forward(net, x, y, 16, &t1);
    memcpy(nn_net_buffers(net), saved, nn_net_num_buffers(net) * sizeof(float)); /* undo update */
    const nn_param_info *rm = nn_net_buffer_info(net, nn_net_find_buffer(net, "bn1.running_mean"));
    for (size_t c = 0; c < rm->numel; c++) nn_net_buffers(net)[rm->offset + c] += 0.5f;
    nn_status s3 = nn_evaluate(net, &ds, &norm, 16, x, y, &l2, &a2);
    memcpy(saved, buf, nn_net_num_buffers(net) * sizeof(float));
    nn_dataset_gather(&ds, NULL, 0, 16, &norm, x, y);
    nn_status s4 = nn_net_forward(net, x, y, 16, &t2);
    memcpy(nn_net_buffers(net), saved, nn_net_num_buffers(net) * sizeof(float));
    nn_net_set_training(net, 0);
    nn_status s5 = nn_evaluate(net, &ds, &norm, 16, x, y, &l3, &a3);
    int stays_eval = nn_net_training(net) == 0;
    check(!s1 && !s2 && !s3 && !s4 && !s5 && unchanged && mode_back && stays_eval &&
              l1 != l2 && t1 == t2 && l2 == l3 && isfinite(l1),
          "nn_evaluate runs in eval mode: running stats change its loss, not the training "
          "forward; buffers untouched; caller's mode restored",
          "eval loss %.6f -> %.6f (acc %.2f), train loss %.6f == %.6f", l1, l2, a1, (double)t1,
          (double)t2);
    free(saved);

    /* checkpoint round trip including buffers */
    tmp_dir_create("bn");
    const char *path = tmp_path("bn.safetensors");
    st = nn_checkpoint_save(ctx, path, net, NULL, NULL);
    nn_net *net2 = NULL;
    nn_status st2 = st ? st : nn_net_parse(ctx, BN_MODEL, "bn.nn", &net2);
    if (!st2) st2 = nn_checkpoint_load(ctx, path, net2, NULL, NULL);
    check(!st && !st2 &&
              !memcmp(nn_net_buffers(net), nn_net_buffers(net2),
                      nn_net_num_buffers(net) * sizeof(float)) &&
              !memcmp(nn_net_params(net), nn_net_params(net2),
                      nn_net_num_params(net) * sizeof(float)),
          "checkpoint round trip restores parameters and buffers bit for bit", "%s",
          st ? nn_ctx_error(ctx) : ctx_err(ctx, st2));
    /* a model whose batchnorm has another name misses the buffers */
    nn_net *net3 = NULL;
    const char *renamed = "input shape=1x8x8\nconv2d name=conv1 out=4 kernel=3 pad=1\n"
                          "batchnorm name=bn1\nrelu\nmaxpool size=2\nflatten\n"
                          "linear name=fc1 out=16\nbatchnorm name=bnx\nrelu\n"
                          "linear name=fc2 out=3\nsoftmax_ce\n";
    nn_status st3 = nn_net_parse(ctx, renamed, "r.nn", &net3);
    if (!st3) st3 = nn_checkpoint_load(ctx, path, net3, NULL, NULL);
    check(st3 == NN_EFORMAT && contains(nn_ctx_error(ctx), "missing tensor 'bnx.weight'"),
          "checkpoint into a model with other batchnorm names fails", "%s", ctx_err(ctx, st3));
    /* a model without batchnorm rejects the extra tensors */
    nn_net *net4 = NULL;
    nn_status st4 = nn_net_parse(ctx, "input shape=1x8x8\nconv2d name=conv1 out=4 kernel=3 pad=1\n"
                                 "relu\nmaxpool size=2\nflatten\nlinear name=fc1 out=16\nrelu\n"
                                 "linear name=fc2 out=3\nsoftmax_ce\n", "p.nn", &net4);
    if (!st4) st4 = nn_checkpoint_load(ctx, path, net4, NULL, NULL);
    check(st4 == NN_EFORMAT && contains(nn_ctx_error(ctx), "unexpected tensor 'bn"),
          "checkpoint with batchnorm tensors into a model without them fails", "%s",
          ctx_err(ctx, st4));
    nn_net_free(net2), nn_net_free(net3), nn_net_free(net4);
    remove_tree(tmp_dir);
    free(x), free(ds.pixels), free(ds.labels);
    nn_net_free(net);
}

int main(void) {
    nn_ctx *ctx1 = test_ctx_new(1), *ctx2 = test_ctx_new(2);
    if (!ctx1 || !ctx2) return 2;
    nn_ctx *const ctxs[2] = {ctx1, ctx2};
    nn_rng rng;
    nn_rng_seed(&rng, 2025, 9);

    test_fast_vs_ref(ctxs, &rng);
    test_offset_statistics(ctxs[1], &rng);
    test_streamed(ctxs, &rng);
    test_isa_variants(ctx1, &rng);
    test_fd(&rng);
    test_hand(ctx1);
    test_parity(ctx1);
    test_parse(ctx1);
    test_init(ctx1);
    test_model(ctx2);

    nn_ctx_free(ctx1);
    nn_ctx_free(ctx2);
    return test_summary();
}
