/*
 * test_registry.c - the op registry and the layer kinds added through it:
 *   - the registry: every op's entry is complete and found by its keyword,
 *     the unknown-layer error lists every keyword, and the graph, the model
 *     parser and the CPU backend name no op (NN_OP_*) in their source;
 *   - relu6 and hardswish, conv2d with dilation=, add and concat of more
 *     than two inputs, each: fast kernels against the double references on
 *     seeded random inputs (1 and 2 threads), the references' gradients
 *     against central differences in double (and not zero), a hand-computed
 *     case, model-file parsing and errors, and PyTorch
 *     (tests/fixtures/layers_<op>.txt from scripts/make_layer_fixtures.py)
 *     through the parser and the CPU kernels of each registry entry (and
 *     so for depthwise and 1x1 convolutions, layers_conv2d_separable.txt);
 *   - tests/fixtures/model_registry.nn, every new kind in one graph (one
 *     input read twice by an add, a ReLU fused into a dilated convolution and
 *     masked by the max-pool after it): one training step's loss, logits and
 *     every parameter gradient against PyTorch (model_registry.txt).
 * Exits non-zero if any check fails.
 */
#include "backend/backend.h"
#include "ops/ops.h"
#include "test_util.h"

#define FAST_TOL 1e-5   /* fast vs reference, relative to the tensor's magnitude */
#define FD_TOL 1e-6     /* central differences, relative */
#define FD_EPS 1e-6
#define TORCH_TOL 1e-5  /* fast vs PyTorch, relative to the tensor's magnitude */

static float *fvec_nan(size_t n) {
    float *v = fvec(n);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    return v;
}

/* ------------------------------------------------------------ the registry */

static char *read_text(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", NN_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xmalloc((size_t)len + 1);
    size_t got = fread(text, 1, (size_t)len, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static void test_registry(nn_ctx *ctx) {
    int bad = 0, inputs = 0, losses = 0;
    char first[160] = "";
#define REG_FAIL(...)                                                              \
    do {                                                                           \
        if (!bad++) snprintf(first, sizeof first, __VA_ARGS__);                   \
    } while (0)
    for (int op = 0; op < NN_OP_COUNT; op++) {
        const nn_op_def *def = nn_op_def_get((nn_op_type)op);
        if (!def || !def->name || !*def->name) {
            REG_FAIL("op %d has no entry or no name", op);
            continue;
        }
        if (nn_op_find(def->name) != op || nn_op_def_find(def->name) != def)
            REG_FAIL("'%s' is not found by its keyword", def->name);
        if (!def->configure || !def->keys) REG_FAIL("'%s' has no configure or keys", def->name);
        if (def->min_inputs < 0 || def->min_inputs > def->max_inputs ||
            def->max_inputs > NN_MAX_INPUTS)
            REG_FAIL("'%s' takes %d..%d inputs", def->name, def->min_inputs, def->max_inputs);
        inputs += def->max_inputs == 0;
        losses += def->is_loss;
        const nn_op_kernels *k = def->kernels[NN_KERNELS_CPU];
        const int runs = def->max_inputs > 0 && !def->aliases_input;
        if (runs && (!k || !k->forward || !k->backward))
            REG_FAIL("'%s' has no CPU forward and backward", def->name);
        if (!runs && k) REG_FAIL("'%s' runs no kernel but has some", def->name);
        if (nn_backend_kernels(nn_backend_cpu(), (nn_op_type)op) != k)
            REG_FAIL("the CPU backend does not run '%s's CPU kernels", def->name);
        /* a residual add may be an epilogue and take one (its ReLU then goes
         * on to the producer that took the add); element-wise ones not */
        if ((def->mask_epilogue || def->epilogue_masked_later || def->fuse_epilogue) &&
            def->epilogue != NN_EPILOGUE_NONE && def->epilogue != NN_EPILOGUE_ADD)
            REG_FAIL("'%s' both is an epilogue and takes one", def->name);
    }
    check(!bad && inputs == 1 && losses == 1,
          "registry: every op has a complete entry, found by its keyword; one input, one loss",
          "%d problems (%s), %d input ops, %d loss ops", bad, first, inputs, losses);
    if (nn_op_def_get(NN_OP_COUNT) || nn_op_find("nosuchop") >= 0 || nn_op_def_find(""))
        check(0, "registry: unknown ops are not found", NULL);

    /* the unknown-layer error lists every keyword, from the registry */
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, "input shape=1x4x4\nnosuchlayer\n", "u.nn", &net);
    const char *msg = st ? nn_ctx_error(ctx) : "";
    int listed = st != NN_OK && contains(msg, "u.nn:2: unknown layer type 'nosuchlayer'");
    for (int op = 0; op < NN_OP_COUNT && listed; op++) {
        char word[40];
        snprintf(word, sizeof word,
                 op == NN_OP_COUNT - 1 ? " or %s)" : op == NN_OP_COUNT - 2 ? " %s or" : " %s,",
                 nn_op_def_get((nn_op_type)op)->name);
        if (op == 0) snprintf(word, sizeof word, "(expected %s,", nn_op_def_get(0)->name);
        listed = contains(msg, word);
    }
    check(listed, "unknown-layer error lists every registered layer type", "%s", msg);
    nn_net_free(net);

    /* the graph, the parser and the CPU backend only walk the registry */
    static const char *const files[] = {"src/core/graph.c", "src/core/model_file.c",
                                        "src/core/model_expand.c", "src/backend/cpu.c"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *text = read_text(files[i]);
        char name[128];
        snprintf(name, sizeof name, "%s names no op (no NN_OP_ in its source)", files[i]);
        check(text && !strstr(text, "NN_OP_"), name, text ? NULL : "cannot read it");
        free(text);
    }
}

/* ------------------------------------------------------------ relu6, hardswish */

typedef struct {
    const char *name;
    void (*fwd)(float *, const float *, size_t, nn_ctx *);
    void (*bwd)(float *, const float *, const float *, size_t, nn_ctx *);
    void (*ref_fwd)(double *, const double *, size_t);
    void (*ref_bwd)(double *, const double *, const double *, size_t);
    double kinks[2];        /* where the derivative jumps */
} act;

static const act ACTS[] = {
    {"relu6", nn_relu6_forward, nn_relu6_backward, nn_ref_relu6_forward, nn_ref_relu6_backward,
     {0.0, 6.0}},
    {"hardswish", nn_hardswish_forward, nn_hardswish_backward, nn_ref_hardswish_forward,
     nn_ref_hardswish_backward, {-3.0, 3.0}},
};

static int near_kink(const act *a, double v, double gap) {
    return fabs(v - a->kinks[0]) < gap || fabs(v - a->kinks[1]) < gap;
}

static void test_activations(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const size_t counts[] = {1, 7, 1000, 70001}; /* the last above the threaded size */
    for (size_t ai = 0; ai < sizeof ACTS / sizeof ACTS[0]; ai++) {
        const act *a = &ACTS[ai];
        double ey = 0, edx = 0;
        int same = 1;
        for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
            const size_t n = counts[ci];
            float *x = fvec(n), *dy = fvec(n);
            fill(x, n, rng, -9.0f, 9.0f);
            fill(dy, n, rng, -1.0f, 1.0f);
            for (size_t i = 0; i < n; i++) /* float and double differ only at a kink */
                while (near_kink(a, x[i], 1e-3)) x[i] = -9.0f + 18.0f * nn_rng_uniform(rng);
            double *xd = to_d(x, n), *dyd = to_d(dy, n), *yr = dvec(n), *dxr = dvec(n);
            a->ref_fwd(yr, xd, n);
            a->ref_bwd(dxr, dyd, xd, n);
            float *y[2], *dx[2];
            for (int t = 0; t < 2; t++) {
                y[t] = fvec_nan(n), dx[t] = fvec_nan(n);
                a->fwd(y[t], x, n, ctxs[t]);
                a->bwd(dx[t], dy, x, n, ctxs[t]);
                ey = fmax(ey, max_err(y[t], yr, n));
                edx = fmax(edx, max_err(dx[t], dxr, n));
            }
            same &= !memcmp(y[0], y[1], n * sizeof(float)) && !memcmp(dx[0], dx[1], n * sizeof(float));
            free(x), free(dy), free(xd), free(dyd), free(yr), free(dxr);
            for (int t = 0; t < 2; t++) free(y[t]), free(dx[t]);
        }
        char name[128];
        snprintf(name, sizeof name, "%s fast==ref on [-9, 9] (1 to 70001 elements, T=1,2)", a->name);
        check(ey <= FAST_TOL && edx <= FAST_TOL && same, name,
              "max err y=%.2e dx=%.2e, threads bit-identical: %s", ey, edx, same ? "yes" : "no");

        /* central differences of L = sum(ref(x) r), away from the kinks */
        const size_t n = 64;
        double *x = dvec(n), *r = dvec(n), *y = dvec(n), *dx = dvec(n);
        fill_d(x, n, rng, -8.0, 8.0);
        fill_d(r, n, rng, -1.0, 1.0);
        for (size_t i = 0; i < n; i++)
            while (near_kink(a, x[i], 1e-3)) x[i] = -8.0 + 16.0 * nn_rng_uniform(rng);
        a->ref_bwd(dx, r, x, n);
        double e = 0.0;
        for (size_t i = 0; i < n; i++) {
            double v0 = x[i], lp = 0, lm = 0;
            x[i] = v0 + FD_EPS;
            a->ref_fwd(y, x, n);
            for (size_t j = 0; j < n; j++) lp += y[j] * r[j];
            x[i] = v0 - FD_EPS;
            a->ref_fwd(y, x, n);
            for (size_t j = 0; j < n; j++) lm += y[j] * r[j];
            x[i] = v0;
            e = fmax(e, fabs((lp - lm) / (2 * FD_EPS) - dx[i]) / fmax(1.0, fabs(dx[i])));
        }
        snprintf(name, sizeof name, "%s reference gradient == central differences (not zero)",
                 a->name);
        check(e <= FD_TOL && max_abs(dx, n) > 0.1, name, "max err %.2e, max |dx| %.3g", e,
              max_abs(dx, n));
        free(x), free(r), free(y), free(dx);
    }

    /* hand-computed, with PyTorch's choices at the kinks, and NaN passing */
    nn_ctx *ctx = ctxs[0];
    {
        const float x[6] = {-1, 0, 3, 6, 7, NAN}, dy[6] = {1, 1, 2, 1, 1, 1};
        const float wy[5] = {0, 0, 3, 6, 6}, wdx[6] = {0, 0, 2, 0, 0, 1};
        float y[6], dx[6];
        double xd[5], dyd[5], yr[5], dxr[5];
        nn_relu6_forward(y, x, 6, ctx);
        nn_relu6_backward(dx, dy, x, 6, ctx);
        for (int i = 0; i < 5; i++) xd[i] = x[i], dyd[i] = dy[i];
        nn_ref_relu6_forward(yr, xd, 5);
        nn_ref_relu6_backward(dxr, dyd, xd, 5);
        int ok = isnan(y[5]) && dx[5] == 1.0f;
        for (int i = 0; i < 5; i++)
            ok &= y[i] == wy[i] && dx[i] == wdx[i] && yr[i] == wy[i] && dxr[i] == wdx[i];
        check(ok, "relu6 hand-computed: -1 0 3 6 7 NaN -> 0 0 3 6 6 NaN, gradient only in (0, 6)",
              "y %g %g %g %g %g dx %g %g %g %g %g", y[0], y[1], y[2], y[3], y[4], dx[0], dx[1],
              dx[2], dx[3], dx[4]);
    }
    {
        const float x[7] = {-4, -3, 0, 1.5f, 3, 4, NAN}, dy[7] = {1, 1, 1, 1, 1, 2, 1};
        /* x (x + 3) / 6 between -3 and 3; derivative x/3 + 1/2 on [-3, 3] */
        const float wy[6] = {0, 0, 0, 1.125f, 3, 4}, wdx[7] = {0, -0.5f, 0.5f, 1, 1.5f, 2, 1};
        float y[7], dx[7];
        double xd[6], dyd[6], yr[6], dxr[6];
        nn_hardswish_forward(y, x, 7, ctx);
        nn_hardswish_backward(dx, dy, x, 7, ctx);
        for (int i = 0; i < 6; i++) xd[i] = x[i], dyd[i] = dy[i];
        nn_ref_hardswish_forward(yr, xd, 6);
        nn_ref_hardswish_backward(dxr, dyd, xd, 6);
        int ok = isnan(y[6]) && dx[6] == 1.0f;
        for (int i = 0; i < 6; i++)
            ok &= y[i] == wy[i] && dx[i] == wdx[i] && yr[i] == wy[i] && dxr[i] == wdx[i];
        check(ok,
              "hardswish hand-computed: -4 -3 0 1.5 3 4 NaN -> 0 0 0 1.125 3 4 NaN, "
              "dx 0 -0.5 0.5 1 1.5 1 1",
              "y %g %g %g %g %g %g dx %g %g %g %g %g %g", y[0], y[1], y[2], y[3], y[4], y[5],
              dx[0], dx[1], dx[2], dx[3], dx[4], dx[5]);
    }
}

/* ------------------------------------------------------------ dilated conv2d */

typedef struct {
    const char *what;
    int n, C, H, W, K, R, S, sh, sw, ph, pw, dh, dw, groups, bias, relu;
} dil_case;

static nn_conv2d_desc dil_desc(const dil_case *c) {
    nn_conv2d_desc d;
    memset(&d, 0, sizeof d);
    d.C = c->C, d.H = c->H, d.W = c->W, d.K = c->K, d.R = c->R, d.S = c->S;
    d.stride_h = c->sh, d.stride_w = c->sw, d.pad_h = c->ph, d.pad_w = c->pw;
    d.dil_h = c->dh, d.dil_w = c->dw, d.groups = c->groups;
    d.P = (c->H + 2 * c->ph - c->dh * (c->R - 1) - 1) / c->sh + 1;
    d.Q = (c->W + 2 * c->pw - c->dw * (c->S - 1) - 1) / c->sw + 1;
    d.has_bias = c->bias, d.relu = c->relu;
    return d;
}

static const dil_case DIL[] = {
    {"3x3 dilation 2, 'same' padding", 3, 3, 9, 9, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 0},
    {"3x3 dilation 2 with fused ReLU", 2, 16, 10, 10, 16, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 1},
    {"3x2 dilation 3x2, stride 2x1, pad 1x2", 2, 2, 11, 9, 3, 3, 2, 2, 1, 1, 2, 3, 2, 1, 0, 0},
    {"grouped (2) 3x3 dilation 3", 1, 4, 10, 8, 6, 3, 3, 1, 1, 1, 3, 3, 3, 2, 1, 0},
    {"depthwise 3x3 dilation 2", 3, 5, 7, 7, 5, 3, 3, 1, 1, 2, 2, 2, 2, 5, 1, 1},
    {"5x5 dilation 2, no padding, 13 images", 13, 3, 14, 12, 8, 5, 5, 1, 1, 0, 0, 2, 2, 1, 1, 0},
    {"1xS dilation 1x4 (height undilated)", 2, 3, 6, 17, 4, 1, 3, 1, 1, 0, 0, 1, 4, 1, 1, 0},
};

static void test_dilation_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    for (size_t ci = 0; ci < sizeof DIL / sizeof DIL[0]; ci++) {
        const dil_case *c = &DIL[ci];
        const nn_conv2d_desc d = dil_desc(c);
        const int n = c->n, G = c->groups;
        const size_t xn = (size_t)n * d.C * d.H * d.W, wn = (size_t)d.K * (d.C / G) * d.R * d.S;
        const size_t yn = (size_t)n * d.K * d.P * d.Q, bn = (size_t)d.K;
        float *x = fvec(xn), *w = fvec(wn), *b = c->bias ? fvec(bn) : NULL, *dy = fvec(yn);
        fill(x, xn, rng, -1, 1);
        fill(w, wn, rng, -1, 1);
        if (b) fill(b, bn, rng, -1, 1);
        fill(dy, yn, rng, -1, 1);
        double *xd = to_d(x, xn), *wd = to_d(w, wn), *bd = to_d(b, bn);
        double *z = dvec(yn), *yr = dvec(yn), *dz = dvec(yn), *dxr = dvec(xn);
        double *dwr = dvec(wn), *dbr = dvec(bn);
        nn_ref_conv2d_forward(z, xd, wd, bd, &d, n);
        for (size_t i = 0; i < yn; i++) {
            if (c->relu && fabs(z[i]) < 1e-4) dy[i] = 0.0f; /* the mask is ambiguous there */
            yr[i] = c->relu && !(z[i] > 0) ? 0.0 : z[i];
            dz[i] = c->relu && !(z[i] > 0) ? 0.0 : dy[i];
        }
        memset(dwr, 0, wn * sizeof(double));
        memset(dbr, 0, bn * sizeof(double));
        nn_ref_conv2d_backward(dxr, dwr, c->bias ? dbr : NULL, dz, xd, wd, &d, n);
        double ey = 0, edx = 0, edw = 0, edb = 0;
        int im2col = 1;
        for (int t = 0; t < 2; t++) {
            nn_ctx *ctx = ctxs[t];
            float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
            float *y = fvec_nan(yn), *dx = fvec_nan(xn), *dw = fvec(wn), *db = fvec(bn);
            memset(dw, 0, wn * sizeof(float));
            memset(db, 0, bn * sizeof(float));
            nn_conv2d_forward(y, x, w, b, &d, n, ws, ctx);
            nn_conv2d_backward(dx, dw, c->bias ? db : NULL, dy, y, x, w, &d, n, ws, ctx);
            ey = fmax(ey, max_err(y, yr, yn));
            edx = fmax(edx, max_err(dx, dxr, xn));
            edw = fmax(edw, max_err(dw, dwr, wn));
            if (c->bias) edb = fmax(edb, max_err(db, dbr, bn));
            im2col &= strcmp(nn_conv2d_kernel_name(&d, ctx), "im2col") == 0;
            free(ws), free(y), free(dx), free(dw), free(db);
        }
        char name[160];
        snprintf(name, sizeof name, "conv2d %s: fast==ref (y, dx, dw, db; T=1,2; im2col runs it)",
                 c->what);
        check(ey <= 1e-4 && edx <= 1e-4 && edw <= 1e-4 && edb <= 1e-4 && im2col, name,
              "max err y=%.2e dx=%.2e dw=%.2e db=%.2e, kernels %s", ey, edx, edw, edb,
              im2col ? "im2col" : "NOT im2col");
        free(x), free(w), free(b), free(dy), free(xd), free(wd), free(bd), free(z), free(yr);
        free(dz), free(dxr), free(dwr), free(dbr);
    }
}

/* L = sum(conv(x, w) r) against central differences in x and in w */
static double conv_loss(const nn_conv2d_desc *d, const double *x, const double *w,
                        const double *b, const double *r, double *y, int n) {
    nn_ref_conv2d_forward(y, x, w, b, d, n);
    double l = 0.0;
    for (size_t i = 0; i < (size_t)n * d->K * d->P * d->Q; i++) l += y[i] * r[i];
    return l;
}

static void test_dilation_gradients(nn_rng *rng) {
    const dil_case *cases[] = {&DIL[2], &DIL[3]};
    for (size_t ci = 0; ci < 2; ci++) {
        const dil_case *c = cases[ci];
        const nn_conv2d_desc d = dil_desc(c);
        const int n = 2;
        const size_t xn = (size_t)n * d.C * d.H * d.W, wn = (size_t)d.K * (d.C / c->groups) * d.R * d.S;
        const size_t yn = (size_t)n * d.K * d.P * d.Q;
        double *x = dvec(xn), *w = dvec(wn), *b = dvec((size_t)d.K), *r = dvec(yn), *y = dvec(yn);
        double *dx = dvec(xn), *dw = dvec(wn), *db = dvec((size_t)d.K);
        fill_d(x, xn, rng, -1, 1);
        fill_d(w, wn, rng, -1, 1);
        fill_d(b, (size_t)d.K, rng, -1, 1);
        fill_d(r, yn, rng, -1, 1);
        memset(dw, 0, wn * sizeof(double));
        memset(db, 0, (size_t)d.K * sizeof(double));
        nn_ref_conv2d_backward(dx, dw, db, r, x, w, &d, n);
        double e = 0.0;
        for (size_t i = 0; i < xn + wn; i++) {
            double *v = i < xn ? &x[i] : &w[i - xn];
            const double g = i < xn ? dx[i] : dw[i - xn], v0 = *v;
            *v = v0 + FD_EPS;
            const double lp = conv_loss(&d, x, w, b, r, y, n);
            *v = v0 - FD_EPS;
            const double lm = conv_loss(&d, x, w, b, r, y, n);
            *v = v0;
            e = fmax(e, fabs((lp - lm) / (2 * FD_EPS) - g) / fmax(1.0, fabs(g)));
        }
        char name[160];
        snprintf(name, sizeof name,
                 "conv2d %s: reference dx and dw == central differences (not zero)", c->what);
        check(e <= FD_TOL && max_abs(dx, xn) > 0.1 && max_abs(dw, wn) > 0.1, name,
              "max err %.2e, max |dx| %.3g |dw| %.3g", e, max_abs(dx, xn), max_abs(dw, wn));
        free(x), free(w), free(b), free(r), free(y), free(dx), free(dw), free(db);
    }
}

static void test_dilation_hand(nn_ctx *ctx) {
    /* one 5x5 plane 1..25, a 2x2 kernel of ones with dilation 2: each output
     * is x[p][q] + x[p][q+2] + x[p+2][q] + x[p+2][q+2] = 4 x[p][q] + 24 */
    const dil_case c = {"hand", 1, 1, 5, 5, 1, 2, 2, 1, 1, 0, 0, 2, 2, 1, 0, 0};
    const nn_conv2d_desc d = dil_desc(&c);
    float x[25], w[4] = {1, 1, 1, 1}, y[9], dy[9], dx[25], dw[4] = {0};
    for (int i = 0; i < 25; i++) x[i] = (float)(i + 1);
    for (int i = 0; i < 9; i++) dy[i] = 1.0f;
    float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
    nn_conv2d_forward(y, x, w, NULL, &d, 1, ws, ctx);
    nn_conv2d_backward(dx, dw, NULL, dy, y, x, w, &d, 1, ws, ctx);
    free(ws);
    int ok = d.P == 3 && d.Q == 3;
    for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++) ok &= y[p * 3 + q] == 4.0f * x[p * 5 + q] + 24.0f;
    /* dx counts how many outputs read each input: rows/columns 0,1,3,4 once, 2 twice */
    for (int h = 0; h < 5; h++)
        for (int v = 0; v < 5; v++)
            ok &= dx[h * 5 + v] == (float)((h == 2 ? 2 : 1) * (v == 2 ? 2 : 1));
    /* dw[r][s] = sum of the 3x3 block at (2r, 2s): 9 x[2r+1][2s+1] */
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < 2; s++) ok &= dw[r * 2 + s] == 9.0f * x[(2 * r + 1) * 5 + 2 * s + 1];
    check(ok, "conv2d dilation 2 hand-computed (2x2 ones on 1..25): y, dx, dw",
          "y[0] %g dx[12] %g dw %g %g %g %g", y[0], dx[12], dw[0], dw[1], dw[2], dw[3]);
}

static void test_dilation_model(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx,
                                "input shape=3x16x12\n"
                                "conv2d name=a out=4 kernel=3 dilation=2\n"
                                "conv2d name=b out=4 kernel=3x2 dilation=3x5 pad=2 stride=2\n"
                                "conv2d name=c out=4 kernel=3\n"
                                "flatten\nlinear out=2\nsoftmax_ce\n",
                                "d.nn", &net);
    check(st == NN_OK && shape_is(&net->nodes[1].out, 3, 4, 12, 8, 0) &&
              shape_is(&net->nodes[2].out, 3, 4, 5, 4, 0) && net->nodes[3].d.conv.dil_h == 1 &&
              net->nodes[3].d.conv.dil_w == 1 && net->nodes[2].d.conv.dil_h == 3 &&
              net->nodes[2].d.conv.dil_w == 5,
          "conv2d dilation= parses (A or AxB, default 1); output (H + 2 pad - d (R-1) - 1)/stride + 1",
          "%s", ctx_err(ctx, st));
    nn_net_free(net);

    /* bf16 is for undilated convolutions only */
    nn_ctx *bctx = nn_ctx_new(1);
    nn_ctx_set_precision(bctx, NN_PRECISION_BF16);
    st = nn_net_parse(bctx,
                      "input shape=8x8x8\nconv2d out=8 kernel=3 pad=2 dilation=2\n"
                      "conv2d out=8 kernel=3 pad=1\nflatten\nlinear out=2\nsoftmax_ce\n",
                      "b.nn", &net);
    if (!st) st = nn_net_plan(net, 2);
    check(st == NN_OK && !net->nodes[1].d.conv.bf16 && net->nodes[2].d.conv.bf16,
          "--precision bf16 leaves the dilated convolution fp32, the undilated one bf16", "%s",
          ctx_err(bctx, st));
    nn_net_free(net);
    nn_ctx_free(bctx);

    static const struct {
        const char *line, *expect;
    } bad[] = {
        {"conv2d out=2 kernel=3 dilation=0", "dilation in 1..1024"},
        {"conv2d out=2 kernel=3 dilation=-1x2", "dilation in 1..1024"},
        {"conv2d out=2 kernel=3 dilation=x", "expects an integer"},
        {"conv2d out=2 kernel=3 dilation=3", "kernel 3x3 with dilation 3x3 spans 7x7, more than "
                                             "the padded input 6x6"},
        {"conv2d out=2 kernel=3 dilation=2 dilation=2", "given twice"},
        {"maxpool size=2 dilation=2", "unknown key 'dilation'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256], name[160];
        snprintf(text, sizeof text, "input shape=1x6x6\n%s\nflatten\nlinear out=2\nsoftmax_ce\n",
                 bad[i].line);
        st = nn_net_parse(ctx, text, "bad.nn", &net);
        const char *msg = st ? nn_ctx_error(ctx) : "accepted";
        snprintf(name, sizeof name, "'%s' is an error naming bad.nn:2 and '%s'", bad[i].line,
                 bad[i].expect);
        check(st != NN_OK && contains(msg, "bad.nn:2") && contains(msg, bad[i].expect), name,
              "%s", msg);
        nn_net_free(net);
    }
}

/* ------------------------------------------------------------ add, concat of m inputs */

static void test_merge_fast_vs_ref(nn_ctx *const ctxs[2], nn_rng *rng) {
    static const int ms[] = {2, 3, 5, NN_MAX_INPUTS};
    double ea = 0, ec = 0;
    int same = 1, configs = 0;
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
        for (int big = 0; big < 2; big++) {
            const int m = ms[mi], n = big ? 9 : 2, inner = big ? 1200 : 5;
            nn_concat_desc d;
            memset(&d, 0, sizeof d);
            d.count = m, d.inner = inner;
            size_t total = 0;
            for (int k = 0; k < m; k++) total += (size_t)(d.C[k] = 1 + k % 3) * inner;
            d.C1 = d.C[0], d.C2 = d.C[1];
            const size_t an = (size_t)n * 4 * inner; /* add: every input (n, 4, inner) */
            float *x[NN_MAX_INPUTS], *xa[NN_MAX_INPUTS];
            double *xd[NN_MAX_INPUTS], *xad[NN_MAX_INPUTS], *dxr[NN_MAX_INPUTS],
                *dxar[NN_MAX_INPUTS];
            for (int k = 0; k < m; k++) {
                const size_t cn = (size_t)n * d.C[k] * inner;
                x[k] = fvec(cn), xa[k] = fvec(an);
                fill(x[k], cn, rng, -1, 1);
                fill(xa[k], an, rng, -1, 1);
                xd[k] = to_d(x[k], cn), xad[k] = to_d(xa[k], an);
                dxr[k] = dvec(cn), dxar[k] = dvec(an);
            }
            float *dyc = fvec((size_t)n * total), *dya = fvec(an);
            fill(dyc, (size_t)n * total, rng, -1, 1);
            fill(dya, an, rng, -1, 1);
            double *dycd = to_d(dyc, (size_t)n * total), *dyad = to_d(dya, an);
            double *yc = dvec((size_t)n * total), *ya = dvec(an);
            nn_ref_concat_forward_n(yc, (const double *const *)xd, &d, n);
            nn_ref_concat_backward_n(dxr, dycd, &d, n);
            nn_ref_add_forward_n(ya, (const double *const *)xad, m, an);
            nn_ref_add_backward_n(dxar, dyad, m, an);
            float *out[2][2];
            for (int t = 0; t < 2; t++) {
                float *y = fvec_nan((size_t)n * total), *yadd = fvec_nan(an);
                float *dx[NN_MAX_INPUTS], *dxa[NN_MAX_INPUTS];
                for (int k = 0; k < m; k++)
                    dx[k] = fvec_nan((size_t)n * d.C[k] * inner), dxa[k] = fvec_nan(an);
                nn_concat_forward_n(y, (const float *const *)x, &d, n, ctxs[t]);
                nn_concat_backward_n(dx, dyc, &d, n, ctxs[t]);
                nn_add_forward_n(yadd, (const float *const *)xa, m, an, ctxs[t]);
                nn_add_backward_n(dxa, dya, m, an);
                ec = fmax(ec, max_err(y, yc, (size_t)n * total));
                ea = fmax(ea, max_err(yadd, ya, an));
                for (int k = 0; k < m; k++) {
                    ec = fmax(ec, max_err(dx[k], dxr[k], (size_t)n * d.C[k] * inner));
                    ea = fmax(ea, max_err(dxa[k], dxar[k], an));
                    free(dx[k]), free(dxa[k]);
                }
                out[t][0] = y, out[t][1] = yadd;
                configs++;
            }
            same &= !memcmp(out[0][0], out[1][0], (size_t)n * total * sizeof(float)) &&
                    !memcmp(out[0][1], out[1][1], an * sizeof(float));
            for (int t = 0; t < 2; t++) free(out[t][0]), free(out[t][1]);
            for (int k = 0; k < m; k++)
                free(x[k]), free(xa[k]), free(xd[k]), free(xad[k]), free(dxr[k]), free(dxar[k]);
            free(dyc), free(dya), free(dycd), free(dyad), free(yc), free(ya);
        }
    check(ec == 0.0 && same, "concat of 2..8 inputs: fast == ref exactly (y, every dx; T=1,2)",
          "%d configs, max err %.2e", configs, ec);
    check(ea <= 1e-6 && same, "add of 2..8 inputs: fast == ref (y, every dx; T=1,2)",
          "%d configs, max err %.2e", configs, ea);
}

static void test_merge_gradients(nn_rng *rng) {
    /* L = sum(f(x0, x1, x2) r) for concat and add, against central differences */
    const int m = 3, n = 2, inner = 3;
    nn_concat_desc d;
    memset(&d, 0, sizeof d);
    d.count = m, d.inner = inner, d.C[0] = 2, d.C[1] = 1, d.C[2] = 3;
    d.C1 = 2, d.C2 = 1;
    /* concat: inputs (n, C[k], inner), output (n, 6, inner); add: inputs and
     * output (n, 2, inner) */
    const size_t yn = (size_t)n * 6 * inner, an = (size_t)n * 2 * inner;
    double *x[2][3], *dx[2][3], *r = dvec(yn), *y = dvec(yn);
    for (int op = 0; op < 2; op++)
        for (int k = 0; k < m; k++) {
            const size_t cn = op == 0 ? (size_t)n * d.C[k] * inner : an;
            x[op][k] = dvec(cn), dx[op][k] = dvec(cn);
            fill_d(x[op][k], cn, rng, -1, 1);
        }
    fill_d(r, yn, rng, -1, 1);
    double e[2] = {0, 0}, gmin[2] = {1e30, 1e30};
    for (int op = 0; op < 2; op++) { /* 0 concat, 1 add */
        if (op == 0) nn_ref_concat_backward_n(dx[0], r, &d, n);
        else nn_ref_add_backward_n(dx[1], r, m, an);
        for (int k = 0; k < m; k++) {
            const size_t cn = op == 0 ? (size_t)n * d.C[k] * inner : an;
            for (size_t i = 0; i < cn; i++) {
                double l[2];
                const double v0 = x[op][k][i];
                for (int s = 0; s < 2; s++) {
                    x[op][k][i] = v0 + (s ? -FD_EPS : FD_EPS);
                    if (op == 0) nn_ref_concat_forward_n(y, (const double *const *)x[0], &d, n);
                    else nn_ref_add_forward_n(y, (const double *const *)x[1], m, an);
                    l[s] = 0.0;
                    for (size_t j = 0; j < (op == 0 ? yn : an); j++) l[s] += y[j] * r[j];
                }
                x[op][k][i] = v0;
                e[op] = fmax(e[op], fabs((l[0] - l[1]) / (2 * FD_EPS) - dx[op][k][i]));
            }
            gmin[op] = fmin(gmin[op], max_abs(dx[op][k], cn));
        }
    }
    check(e[0] <= FD_TOL && gmin[0] > 0.1,
          "concat of 3 inputs: reference gradients == central differences (none zero)",
          "max err %.2e, smallest max|dx_k| %.3g", e[0], gmin[0]);
    check(e[1] <= FD_TOL && gmin[1] > 0.1,
          "add of 3 inputs: reference gradients == central differences (none zero)",
          "max err %.2e, smallest max|dx_k| %.3g", e[1], gmin[1]);
    for (int op = 0; op < 2; op++)
        for (int k = 0; k < m; k++) free(x[op][k]), free(dx[op][k]);
    free(r), free(y);
}

static void test_merge_hand_and_model(nn_ctx *ctx) {
    /* concat of (1 channel) 1 2 | (2 channels) 3 4 5 6 | (1 channel) 7 8, inner 2 */
    const float a[2] = {1, 2}, b[4] = {3, 4, 5, 6}, c[2] = {7, 8};
    const float *const x[3] = {a, b, c};
    nn_concat_desc d = {.C1 = 1, .C2 = 2, .inner = 2, .count = 3, .C = {1, 2, 1}};
    float y[8], da[2], dc[2], ya[2];
    float *dx[3] = {da, NULL, dc};
    const float dy[8] = {10, 20, 30, 40, 50, 60, 70, 80};
    nn_concat_forward_n(y, x, &d, 1, ctx);
    nn_concat_backward_n(dx, dy, &d, 1, ctx);
    const float *const xa[3] = {a, a, c};
    nn_add_forward_n(ya, xa, 3, 2, ctx);
    int ok = 1;
    for (int i = 0; i < 8; i++) ok &= y[i] == (float)(i + 1);
    ok &= da[0] == 10 && da[1] == 20 && dc[0] == 70 && dc[1] == 80 && ya[0] == 9 && ya[1] == 12;
    check(ok, "concat/add of 3 inputs hand-computed (order, a NULL dx skipped, 1+1+7)",
          "y %g %g .. %g, add %g %g", y[0], y[1], y[7], ya[0], ya[1]);

    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx,
                                "input shape=1x4x4\n"
                                "conv2d name=a out=2 kernel=3 pad=1\n"
                                "conv2d name=b in=input out=3 kernel=3 pad=1\n"
                                "add name=s in=a,a,a,a\n"
                                "concat name=c in=s,b,a,b,s\n"
                                "flatten\nlinear out=2\nsoftmax_ce\n",
                                "m.nn", &net);
    check(st == NN_OK && net->nodes[3].num_inputs == 4 && shape_is(&net->nodes[3].out, 3, 2, 4, 4, 0) &&
              net->nodes[4].num_inputs == 5 && shape_is(&net->nodes[4].out, 3, 12, 4, 4, 0) &&
              net->nodes[1].grad_writers == 5 && net->nodes[4].d.concat.count == 5 &&
              net->nodes[4].d.concat.C[4] == 2,
          "add of 4 and concat of 5 inputs (repeated layers) parse; shapes and gradient writers",
          "%s", ctx_err(ctx, st));
    nn_net_free(net);

    const char *hdr = "input shape=1x4x4\nconv2d name=a out=2 kernel=3 pad=1\n"
                      "conv2d name=b out=3 kernel=3 pad=1\nconv2d name=f out=2 kernel=3\n";
    static const struct {
        const char *line, *expect;
    } bad[] = {
        {"add in=a,a,b", "add needs inputs of the same shape, got 2x4x4 and 3x4x4"},
        {"concat in=a,b,f", "concat needs inputs that differ only in channels"},
        {"concat in=a,b,f", "2x4x4 and 2x2x2"},
        {"concat in=a,a,a,a,a,a,a,a,a", "concat takes at most 8 inputs, in=a,a,a,a,a,a,a,a,a names more"},
        {"add in=a", "add takes 2 inputs or more (at most 8), in=a names 1"},
        {"add", "add needs in=A,B,... (2 to 8 earlier layers)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512], name[200];
        snprintf(text, sizeof text, "%s%s\nflatten\nlinear out=2\nsoftmax_ce\n", hdr, bad[i].line);
        st = nn_net_parse(ctx, text, "bad.nn", &net);
        const char *msg = st ? nn_ctx_error(ctx) : "accepted";
        snprintf(name, sizeof name, "'%s' is an error naming bad.nn:5 and '%s'", bad[i].line,
                 bad[i].expect);
        check(st != NN_OK && contains(msg, "bad.nn:5") && contains(msg, bad[i].expect), name,
              "%s", msg);
        nn_net_free(net);
    }
}

/* ------------------------------------------------------------ PyTorch fixtures */

/* Reads "<tag> <count> v..." into a new buffer; NULL on a mismatch. */
static float *read_values(FILE *f, const char *tag, size_t want) {
    char t[80];
    size_t count;
    if (fscanf(f, "%79s %zu", t, &count) != 2 || strcmp(t, tag) || count != want) return NULL;
    float *v = fvec(count);
    for (size_t i = 0; i < count; i++)
        if (fscanf(f, "%f", &v[i]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

/* Compares got (count floats) with the fixture's next '<tag> count ...' line;
 * returns the error (INFINITY when missing) and adds the check on failure. */
static double compare_line(FILE *f, const char *tag, const float *got, size_t count) {
    float *want = read_values(f, tag, count);
    if (!want) return INFINITY;
    double *wd = to_d(want, count);
    double e = max_err(got, wd, count);
    free(want), free(wd);
    return e;
}

typedef struct {
    int ndim;
    int dims[3];
} fshape;

static int parse_shapes(const char *s, fshape *out, int max) {
    int m = 0;
    while (*s && m < max) {
        fshape *f = &out[m++];
        f->ndim = 0;
        for (;;) {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || f->ndim == 3) return 0;
            f->dims[f->ndim++] = (int)v;
            s = end;
            if (*s != 'x') break;
            s++;
        }
        if (*s == ',') s++;
        else if (*s) return 0;
    }
    return m;
}

static size_t shape_numel(const fshape *f) {
    size_t n = 1;
    for (int i = 0; i < f->ndim; i++) n *= (size_t)f->dims[i];
    return n;
}

/* One fixture case of a layer: builds a model whose layer 'line' reads
 * inputs of the case's shapes (the input itself, then 1x1 convolutions or
 * linear layers for further shapes), runs the layer's CPU kernels from its
 * registry entry on the hashed inputs (and parameters) and compares with
 * PyTorch. Returns 0 when the file could not be read. */
static int fixture_case(FILE *f, const char *header, nn_ctx *ctx, const char *file) {
    int n;
    unsigned xs, gs;
    float scale;
    char shapes_s[128];
    const char *bar = strchr(header, '|');
    fshape sh[NN_MAX_INPUTS];
    int m = 0;
    if (sscanf(header, "case %d %127s %u %f %u", &n, shapes_s, &xs, &scale, &gs) != 5 || !bar ||
        !(m = parse_shapes(shapes_s, sh, NN_MAX_INPUTS))) {
        check(0, file, "bad case line '%s'", header);
        return 0;
    }
    char layer[128];
    snprintf(layer, sizeof layer, "%s", bar + 2);
    layer[strcspn(layer, "\n")] = '\0';
    char text[2048], ins[256] = "input", first[128];
    snprintf(first, sizeof first, "%s", shapes_s);
    first[strcspn(first, ",")] = '\0';
    int len = snprintf(text, sizeof text, "input shape=%s\n", first);
    for (int k = 1; k < m; k++) {
        if (sh[k].ndim == 3)
            len += snprintf(text + len, sizeof text - len, "conv2d name=v%d in=input out=%d kernel=1\n",
                            k, sh[k].dims[0]);
        else
            len += snprintf(text + len, sizeof text - len, "linear name=v%d in=input out=%d\n", k,
                            sh[k].dims[0]);
        snprintf(ins + strlen(ins), sizeof ins - strlen(ins), ",v%d", k);
    }
    const int node_i = m; /* the layer under test */
    if (m > 1) len += snprintf(text + len, sizeof text - len, "%s in=%s\n", layer, ins);
    else len += snprintf(text + len, sizeof text - len, "%s\n", layer);
    snprintf(text + len, sizeof text - len, "flatten\nlinear name=f out=2\nsoftmax_ce\n");

    char name[512];
    snprintf(name, sizeof name, "PyTorch parity %s: '%s' on %d x %s", file, layer, n, shapes_s);
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "parity.nn", &net);
    if (st) {
        check(0, name, "%s", nn_ctx_error(ctx));
        return 1;
    }
    const nn_node *node = &net->nodes[node_i];
    const size_t yn = (size_t)n * (size_t)nn_shape_numel(&node->out);
    float *x[NN_MAX_INPUTS], *dx[NN_MAX_INPUTS];
    nn_op_args a;
    memset(&a, 0, sizeof a);
    for (int k = 0; k < m; k++) {
        const size_t xn = (size_t)n * shape_numel(&sh[k]);
        x[k] = fvec(xn), dx[k] = fvec_nan(xn);
        for (size_t i = 0; i < xn; i++) x[k][i] = hash_signed(xs + (unsigned)k, (uint32_t)i, scale);
        a.xs[k] = x[k], a.dxs[k] = dx[k];
    }
    float *dy = fvec(yn), *y = fvec_nan(yn), *w = NULL, *b = NULL, *dw = NULL, *db = NULL;
    for (size_t i = 0; i < yn; i++) dy[i] = hash_signed(gs, (uint32_t)i, 1.0f);
    size_t wn = 0, bn = 0;
    if (node->num_params > 0) {
        wn = (size_t)nn_shape_numel(&node->param_shape[0]);
        w = fvec(wn), dw = fvec(wn);
        for (size_t i = 0; i < wn; i++) w[i] = hash_signed(xs + 100, (uint32_t)i, 0.5f), dw[i] = 0;
        if (node->num_params > 1) {
            bn = (size_t)nn_shape_numel(&node->param_shape[1]);
            b = fvec(bn), db = fvec(bn);
            for (size_t i = 0; i < bn; i++) b[i] = hash_signed(xs + 101, (uint32_t)i, 0.5f), db[i] = 0;
        }
    }
    const nn_op_kernels *k = nn_backend_kernels(ctx->backend, node->op);
    float *ws = fvec(k->workspace ? k->workspace(node, n, ctx->threads) + 1 : 1);
    a.node = node, a.n = n, a.y = y, a.x = x[0], a.dx = dx[0], a.dy = dy, a.ctx = ctx;
    a.w = w, a.b = b, a.dw = dw, a.db = db, a.ws = ws;
    k->forward(&a);
    k->backward(&a);
    double e = compare_line(f, "y", y, yn), gmax = 0.0;
    for (int kk = 0; kk < m; kk++) {
        char tag[8];
        snprintf(tag, sizeof tag, m > 1 ? "dx%d" : "dx", kk);
        const size_t xn = (size_t)n * shape_numel(&sh[kk]);
        e = fmax(e, compare_line(f, tag, dx[kk], xn));
        for (size_t i = 0; i < xn; i++) gmax = fmax(gmax, fabs(dx[kk][i]));
    }
    if (w) e = fmax(e, compare_line(f, "dw", dw, wn));
    if (b) e = fmax(e, compare_line(f, "db", db, bn));
    check(e <= TORCH_TOL && gmax > 1e-3, name, "max err %.2e (y, dx%s)", e,
          w ? ", dw, db" : "");
    for (int kk = 0; kk < m; kk++) free(x[kk]), free(dx[kk]);
    free(dy), free(y), free(w), free(b), free(dw), free(db), free(ws);
    nn_net_free(net);
    return isfinite(e);
}

static void test_layer_fixtures(nn_ctx *ctx) {
    static const char *const ops[] = {"relu6",           "hardswish", "conv2d_dilation",
                                      "conv2d_separable", "add",       "concat"};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        char file[64];
        snprintf(file, sizeof file, "layers_%s.txt", ops[o]);
        tu_fixture_cases(file, fixture_case, ctx);
    }
}

/* model_registry.nn: one forward + backward against PyTorch */
static void test_model_fixture(nn_ctx *ctx) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/model_registry.txt", NN_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    unsigned xs = 0, ls = 0, ps = 0;
    float scale = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "case %d %u %f %u %u", &n, &xs, &scale, &ls, &ps) == 5) break;
    if (!f || n <= 0) {
        check(0, "model_registry.txt", "cannot read %s", path);
        if (f) fclose(f);
        return;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/model_registry.nn", NN_SOURCE_DIR);
    nn_net *net = NULL;
    nn_status st = nn_net_load(ctx, path, &net);
    if (!st) st = nn_net_plan(net, n);
    if (st) {
        check(0, "model_registry.nn loads", "%s", nn_ctx_error(ctx));
        fclose(f);
        nn_net_free(net);
        return;
    }
    float *p = nn_net_params(net);
    for (int j = 0; j < nn_net_num_param_tensors(net); j++) {
        const nn_param_info *pi = nn_net_param_info(net, j);
        for (size_t i = 0; i < pi->numel; i++)
            p[pi->offset + i] = hash_signed(ps + (unsigned)j, (uint32_t)i, 0.3f);
    }
    const nn_shape in = nn_net_input_shape(net);
    const size_t xn = (size_t)n * (size_t)nn_shape_numel(&in);
    const int classes = nn_net_num_classes(net);
    float *x = fvec(xn), loss = NAN;
    int32_t *labels = xmalloc((size_t)n * sizeof *labels);
    for (size_t i = 0; i < xn; i++) x[i] = hash_signed(xs, (uint32_t)i, scale);
    for (int i = 0; i < n; i++) labels[i] = (int32_t)(hash32((uint32_t)i ^ hash32(ls)) % (uint32_t)classes);
    nn_net_zero_grad(net);
    st = nn_net_forward(net, x, labels, n, &loss);
    if (!st) st = nn_net_backward(net);
    double e_loss = compare_line(f, "loss", &loss, 1);
    double e_logits = compare_line(f, "logits", nn_net_logits(net), (size_t)n * classes);
    double e_grad = 0.0;
    int tensors = 0;
    char worst[160] = "";
    for (int j = 0; j < nn_net_num_param_tensors(net); j++) {
        const nn_param_info *pi = nn_net_param_info(net, j);
        char tag[8], pname[80];
        size_t count = 0;
        if (fscanf(f, "%7s %79s %zu", tag, pname, &count) != 3 || strcmp(tag, "grad") ||
            strcmp(pname, pi->name) || count != pi->numel) {
            e_grad = INFINITY;
            snprintf(worst, sizeof worst, "%s: no matching grad line", pi->name);
            break;
        }
        float *want = fvec(count);
        for (size_t i = 0; i < count; i++)
            if (fscanf(f, "%f", &want[i]) != 1) want[i] = NAN;
        double *wd = to_d(want, count);
        const double e = max_err(nn_net_grads(net) + pi->offset, wd, count);
        if (!(e <= e_grad)) {
            e_grad = e;
            snprintf(worst, sizeof worst, "%s", pi->name);
        }
        if (max_abs(wd, count) > 1e-4) tensors++;
        free(want), free(wd);
    }
    check(st == NN_OK && e_loss <= TORCH_TOL && e_logits <= TORCH_TOL && e_grad <= 1e-4 &&
              tensors == nn_net_num_param_tensors(net),
          "model_registry.nn (dilation, relu6, hardswish, add/concat of 3-4 inputs, fused ReLU "
          "+ max-pool mask) == PyTorch: loss, logits, every gradient",
          "%s; err loss %.2e logits %.2e grads %.2e (worst %s), %d non-zero gradients",
          ctx_err(ctx, st), e_loss, e_logits, e_grad, worst, tensors);
    free(x), free(labels);
    fclose(f);
    nn_net_free(net);
}

int main(void) {
    nn_ctx *ctx1 = nn_ctx_new(1), *ctx2 = nn_ctx_new(2);
    if (!ctx1 || !ctx2) return 2;
    nn_ctx *const ctxs[2] = {ctx1, ctx2};
    nn_rng rng;
    nn_rng_seed(&rng, 15, 2);
    test_registry(ctx1);
    test_activations(ctxs, &rng);
    test_dilation_fast_vs_ref(ctxs, &rng);
    test_dilation_gradients(&rng);
    test_dilation_hand(ctx1);
    test_dilation_model(ctx1);
    test_merge_fast_vs_ref(ctxs, &rng);
    test_merge_gradients(&rng);
    test_merge_hand_and_model(ctx1);
    test_layer_fixtures(ctx2);
    test_model_fixture(ctx2);
    nn_ctx_free(ctx1);
    nn_ctx_free(ctx2);
    return test_summary();
}
