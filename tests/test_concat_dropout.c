/*
 * test_concat_dropout.c - the concat and dropout layers: fast kernels against
 * their double references, hand cases, gradients through small graphs
 * against central differences along random directions, dropout's mask
 * properties (kept fraction, exact scale, seeded and stateless, the same in
 * backward, independent of the thread count) and model-file errors.
 */
#include "core/graph.h"
#include "ops/ops.h"

#include "test_util.h"

#include <math.h>
#include <string.h>

static void fill_both(nn_rng *rng, float *f, double *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        f[i] = 2.0f * nn_rng_uniform(rng) - 1.0f;
        if (d) d[i] = f[i];
    }
}

/* ------------------------------------------------------------ concat kernels */

static void concat_vs_ref(nn_ctx *ctx, int n, int C1, int C2, int inner) {
    nn_concat_desc d = {.C1 = C1, .C2 = C2, .inner = inner};
    size_t na = (size_t)n * C1 * inner, nb = (size_t)n * C2 * inner, ny = na + nb;
    float *a = xmalloc(na * 4), *b = xmalloc(nb * 4), *y = xmalloc(ny * 4), *dy = xmalloc(ny * 4);
    float *da = xmalloc(na * 4), *db = xmalloc(nb * 4);
    double *ra = xmalloc(na * 8), *rb = xmalloc(nb * 8), *ry = xmalloc(ny * 8),
           *rdy = xmalloc(ny * 8), *rda = xmalloc(na * 8), *rdb = xmalloc(nb * 8);
    nn_rng rng;
    nn_rng_seed(&rng, 3, (uint64_t)ny);
    fill_both(&rng, a, ra, na);
    fill_both(&rng, b, rb, nb);
    fill_both(&rng, dy, rdy, ny);
    nn_concat_forward(y, a, b, &d, n, ctx);
    nn_ref_concat_forward(ry, ra, rb, &d, n);
    nn_concat_backward(da, db, dy, &d, n, ctx);
    nn_ref_concat_backward(rda, rdb, rdy, &d, n);
    double e = fmax(max_err(y, ry, ny), fmax(max_err(da, rda, na), max_err(db, rdb, nb)));
    check(e == 0.0, "concat fast vs reference", "n=%d C1=%d C2=%d inner=%d threads=%d err %.3g", n,
          C1, C2, inner, nn_ctx_threads(ctx), e);
    /* NULL skips one side */
    memset(da, 0, na * 4);
    nn_concat_backward(da, NULL, dy, &d, n, ctx);
    check(max_err(da, rda, na) == 0.0, "concat backward with db NULL still writes da", NULL);
    free(a), free(b), free(y), free(dy), free(da), free(db);
    free(ra), free(rb), free(ry), free(rdy), free(rda), free(rdb);
}

static void concat_hand(nn_ctx *ctx) {
    /* two samples: a (2, 1, 2), b (2, 2, 2) */
    const float a[4] = {1, 2, 3, 4};
    const float b[8] = {10, 11, 12, 13, 20, 21, 22, 23};
    const float want[12] = {1, 2, 10, 11, 12, 13, 3, 4, 20, 21, 22, 23};
    nn_concat_desc d = {.C1 = 1, .C2 = 2, .inner = 2};
    float y[12], da[4], db[8];
    nn_concat_forward(y, a, b, &d, 2, ctx);
    check(memcmp(y, want, sizeof y) == 0, "concat hand case: A's channels then B's, per sample",
          "y = %g %g %g %g %g %g | %g ...", y[0], y[1], y[2], y[3], y[4], y[5], y[6]);
    nn_concat_backward(da, db, want, &d, 2, ctx);
    check(memcmp(da, a, sizeof da) == 0 && memcmp(db, b, sizeof db) == 0,
          "concat hand case: backward splits dy back", NULL);
}

/* ------------------------------------------------------------ graphs */

static double loss_at(nn_net *net, const float *x, const int32_t *y, int n) {
    float l;
    if (nn_net_forward(net, x, y, n, &l)) return NAN;
    return l;
}

/* Central differences of the loss along random parameter directions against
 * the backward gradient; before every forward set_seed (if not NULL) fixes
 * the dropout masks. */
static void directional_check(nn_ctx *ctx, const char *text, const char *what, int in_numel,
                              uint64_t seed) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "cd.nn", &net);
    check(st == NN_OK, "model parses", "%s", ctx_err(ctx, st));
    if (st) return;
    const int n = 5;
    nn_net_plan(net, n);
    nn_rng rng;
    nn_rng_seed(&rng, 7, 3);
    nn_net_init_params(net, &rng);
    nn_net_set_dropout_seed(net, seed);
    float *x = xmalloc((size_t)n * in_numel * 4);
    int32_t y[5];
    fill_both(&rng, x, NULL, (size_t)n * in_numel);
    for (int i = 0; i < n; i++) y[i] = (int32_t)nn_rng_below(&rng, 4);
    float l;
    nn_net_zero_grad(net);
    nn_net_forward(net, x, y, n, &l);
    nn_net_backward(net);
    const size_t np = nn_net_num_params(net);
    float *p = nn_net_params(net), *g = xmalloc(np * 4), *p0 = xmalloc(np * 4), *v = xmalloc(np * 4);
    memcpy(g, nn_net_grads(net), np * 4);
    memcpy(p0, p, np * 4);
    double worst = 0.0, gnorm = 0.0;
    for (size_t i = 0; i < np; i++) gnorm += (double)g[i] * g[i];
    for (int trial = 0; trial < 4; trial++) {
        double gv = 0.0;
        for (size_t i = 0; i < np; i++) {
            v[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;
            gv += (double)g[i] * v[i];
        }
        const double eps = 1e-3;
        for (size_t i = 0; i < np; i++) p[i] = p0[i] + (float)eps * v[i];
        double lp = loss_at(net, x, y, n);
        for (size_t i = 0; i < np; i++) p[i] = p0[i] - (float)eps * v[i];
        double lm = loss_at(net, x, y, n);
        memcpy(p, p0, np * 4);
        double fd = (lp - lm) / (2 * eps);
        double rel = fabs(fd - gv) / fmax(1e-3, fabs(gv));
        if (rel > worst) worst = rel;
    }
    check(worst < 5e-3 && gnorm > 0.0, what, "threads=%d worst relative difference %.3g, |g|^2 %.3g",
          nn_ctx_threads(ctx), worst, gnorm);
    free(x), free(g), free(p0), free(v);
    nn_net_free(net);
}

/* cat: conv branch and its own input side by side (5 channels); cat2 joins a
 * flat layer with itself, so one node's gradient gets two contributions. */
static const char *const CONCAT_NET = "input shape=2x6x6\n"
                                      "conv2d name=c1 out=3 kernel=3 pad=1\n"
                                      "silu name=s1\n"
                                      "conv2d name=c2 out=2 kernel=3 pad=1\n"
                                      "concat name=cat in=c2,s1\n"
                                      "tanh\n"
                                      "flatten name=fl\n"
                                      "linear name=fc out=6\n"
                                      "gelu name=g\n"
                                      "concat name=cat2 in=g,g\n"
                                      "linear name=out out=4\n"
                                      "softmax_ce\n";

static const char *const DROPOUT_NET = "input shape=1x4x4\n"
                                       "flatten\n"
                                       "linear name=fc1 out=40\n"
                                       "tanh\n"
                                       "dropout name=drop p=0.3\n"
                                       "linear name=fc2 out=4\n"
                                       "softmax_ce\n";

static void concat_shapes(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, CONCAT_NET, "cd.nn", &net);
    check(st == NN_OK, "concat model parses", "%s", ctx_err(ctx, st));
    if (st) return;
    nn_layer_info li;
    nn_net_layer_info(net, 4, &li);
    check(strcmp(li.op, "concat") == 0 && shape_is(&li.out, 3, 5, 6, 6, 0),
          "concat of 2x6x6 and 3x6x6 is 5x6x6", "op %s", li.op);
    nn_net_layer_info(net, 9, &li);
    check(strcmp(li.op, "concat") == 0 && shape_is(&li.out, 1, 12, 0, 0, 0),
          "concat of flat 6 and 6 is 12", "op %s", li.op);
    nn_net_free(net);
}

static void expect_bad(nn_ctx *ctx, const char *what, const char *text, const char *word) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "g.nn", &net);
    check(st != NN_OK && contains(nn_ctx_error(ctx), "g.nn:") && contains(nn_ctx_error(ctx), word),
          what, "status %d: %s", (int)st, nn_ctx_error(ctx));
    nn_net_free(net);
}

static void model_errors(nn_ctx *ctx) {
    const char *hdr = "input shape=1x4x4\nconv2d name=a out=2 kernel=3 pad=1\n"
                      "conv2d name=b out=3 kernel=3\n";
    const char *tail = "flatten\nlinear out=2\nsoftmax_ce\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%sconcat in=a,b\n%s", hdr, tail);
    expect_bad(ctx, "concat of 2x4x4 and 3x2x2 names the line and both shapes", buf,
               "g.nn:4: concat needs inputs that differ only in channels");
    expect_bad(ctx, "concat shape error shows both shapes", buf, "2x4x4 and 3x2x2");
    snprintf(buf, sizeof buf, "%sflatten name=f\nconcat in=a,f\n%s", hdr, tail);
    expect_bad(ctx, "concat of a 3-D and a flat input", buf, "2x4x4 and 12");
    snprintf(buf, sizeof buf, "%sconcat in=a\n%s", hdr, tail);
    expect_bad(ctx, "concat with one input", buf, "concat takes 2 inputs");
    snprintf(buf, sizeof buf, "%sconcat\n%s", hdr, tail);
    expect_bad(ctx, "concat without in=", buf, "in=A,B");
    const char *bad_p[] = {"1", "1.0", "-0.1", "abc", "0.5x", "nan", "0.99999999999", "2"};
    for (size_t i = 0; i < sizeof bad_p / sizeof *bad_p; i++) {
        snprintf(buf, sizeof buf, "%sdropout p=%s\n%s", hdr, bad_p[i], tail);
        char what[64];
        snprintf(what, sizeof what, "dropout p=%s is an error", bad_p[i]);
        expect_bad(ctx, what, buf, "g.nn:4: dropout p must be");
    }
    snprintf(buf, sizeof buf, "%sdropout rate=0.2\n%s", hdr, tail);
    expect_bad(ctx, "dropout with an unknown key", buf, "unknown key 'rate'");
    snprintf(buf, sizeof buf, "%sdropouts\n%s", hdr, tail);
    expect_bad(ctx, "unknown layer message lists concat and dropout", buf, "concat");
    expect_bad(ctx, "unknown layer message lists dropout", buf, "dropout or softmax_ce");
    nn_net *net = NULL;
    snprintf(buf, sizeof buf, "%sdropout\n%s", hdr, tail);
    nn_status st = nn_net_parse(ctx, buf, "g.nn", &net);
    check(st == NN_OK && net->nodes[3].op == NN_OP_DROPOUT && net->nodes[3].d.dropout.p == 0.5f,
          "dropout defaults to p=0.5", "%s", ctx_err(ctx, st));
    nn_net_free(net);
    net = NULL;
    snprintf(buf, sizeof buf, "%sdropout p=0\n%s", hdr, tail);
    st = nn_net_parse(ctx, buf, "g.nn", &net);
    check(st == NN_OK, "dropout p=0 is accepted", "%s", ctx_err(ctx, st));
    nn_net_free(net);
}

/* ------------------------------------------------------------ dropout kernels */

static void dropout_kernels(nn_ctx *c1, nn_ctx *c2) {
    const size_t count = 200000; /* above the parallel threshold */
    float *x = xmalloc(count * 4), *y = xmalloc(count * 4), *y2 = xmalloc(count * 4),
          *dy = xmalloc(count * 4), *dx = xmalloc(count * 4);
    uint8_t *m = xmalloc(count), *m2 = xmalloc(count);
    double *rx = xmalloc(count * 8), *ry = xmalloc(count * 8), *rdy = xmalloc(count * 8),
           *rdx = xmalloc(count * 8);
    nn_rng rng;
    nn_rng_seed(&rng, 5, 9);
    fill_both(&rng, x, rx, count);
    fill_both(&rng, dy, rdy, count);
    for (size_t i = 0; i < count; i++)
        if (x[i] == 0.0f) x[i] = rx[i] = 0.5; /* so that a zero output means dropped */
    const float ps[] = {0.1f, 0.5f, 0.9f};
    for (int k = 0; k < 3; k++) {
        const float p = ps[k], scale = 1.0f / (1.0f - p);
        nn_dropout_forward(y, m, x, p, 1234, 3, count, 1, c1);
        size_t kept = 0, bad = 0;
        for (size_t i = 0; i < count; i++) {
            kept += m[i];
            if (m[i] ? y[i] != x[i] * scale : y[i] != 0.0f) bad++;
            if (m[i] > 1) bad++;
        }
        double frac = (double)kept / count, want = 1.0 - p;
        double sd = sqrt(p * (1.0 - p) / count);
        check(fabs(frac - want) < 5 * sd, "dropout keeps a fraction 1-p", "p=%g kept %.5f want %.5f",
              p, frac, want);
        check(bad == 0, "dropout: kept values scaled exactly by 1/(1-p), dropped are 0",
              "p=%g, %zu wrong", p, bad);
        nn_dropout_forward(y2, m2, x, p, 1234, 3, count, 1, c2);
        check(memcmp(y, y2, count * 4) == 0 && memcmp(m, m2, count) == 0,
              "dropout: same seed gives the same mask on 1 and 2 threads", "p=%g", p);
        nn_dropout_forward(y2, m2, x, p, 1235, 3, count, 1, c1);
        size_t diff = 0;
        for (size_t i = 0; i < count; i++) diff += m[i] != m2[i];
        check(diff > count * p * (1 - p), "dropout: a different seed gives a different mask",
              "p=%g, %zu of %zu differ", p, diff, count);
        nn_dropout_forward(y2, m2, x, p, 1234, 4, count, 1, c1);
        diff = 0;
        for (size_t i = 0; i < count; i++) diff += m[i] != m2[i];
        check(diff > count * p * (1 - p), "dropout: another layer gets another mask",
              "p=%g, %zu differ", p, diff);
        /* backward: the forward's mask times the scale */
        nn_dropout_forward(y, m, x, p, 1234, 3, count, 1, c2);
        nn_dropout_backward(dx, dy, m, p, count, 1, c2);
        bad = 0;
        for (size_t i = 0; i < count; i++)
            if (dx[i] != (m[i] ? dy[i] * scale : 0.0f)) bad++;
        check(bad == 0, "dropout backward = mask * scale * dy", "p=%g, %zu wrong", p, bad);
        /* reference twin recomputes the mask from the hash */
        nn_ref_dropout_forward(ry, rx, p, 1234, 3, count, 1);
        nn_ref_dropout_backward(rdx, rdy, p, 1234, 3, count, 1);
        double e = fmax(max_err(y, ry, count), max_err(dx, rdx, count));
        check(e < 1e-6, "dropout fast vs reference (training)", "p=%g err %.3g", p, e);
        /* eval mode: identity both ways */
        nn_dropout_forward(y2, m2, x, p, 1234, 3, count, 0, c2);
        nn_dropout_backward(dx, dy, m2, p, count, 0, c2);
        check(memcmp(y2, x, count * 4) == 0 && memcmp(dx, dy, count * 4) == 0,
              "dropout eval mode is the identity (forward and backward)", "p=%g", p);
        nn_ref_dropout_forward(ry, rx, p, 1234, 3, count, 0);
        check(max_err(y2, ry, count) == 0.0, "dropout reference eval mode is the identity", NULL);
    }
    /* p = 0 in training: identity, everything kept */
    nn_dropout_forward(y, m, x, 0.0f, 99, 1, count, 1, c2);
    nn_dropout_backward(dx, dy, m, 0.0f, count, 1, c2);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) kept += m[i];
    check(kept == count && memcmp(y, x, count * 4) == 0 && memcmp(dx, dy, count * 4) == 0,
          "dropout p=0 is the identity in training mode", "%zu of %zu kept", kept, count);
    free(x), free(y), free(y2), free(dy), free(dx), free(m), free(m2);
    free(rx), free(ry), free(rdy), free(rdx);
}

/* The same net with and without its dropout layer: eval mode gives the same
 * logits; training mode gives seed-dependent, reproducible losses. */
static void dropout_in_net(nn_ctx *ctx) {
    const char *plain_text = "input shape=1x4x4\nflatten\nlinear name=fc1 out=40\ntanh\n"
                             "linear name=fc2 out=4\nsoftmax_ce\n";
    nn_net *net = NULL, *plain = NULL;
    if (nn_net_parse(ctx, DROPOUT_NET, "d.nn", &net) || nn_net_parse(ctx, plain_text, "p.nn", &plain)) {
        check(0, "dropout nets parse", "%s", nn_ctx_error(ctx));
        nn_net_free(net);
        nn_net_free(plain);
        return;
    }
    const int n = 8;
    nn_net_plan(net, n);
    nn_net_plan(plain, n);
    nn_rng rng;
    nn_rng_seed(&rng, 1, 2);
    nn_net_init_params(net, &rng);
    memcpy(nn_net_params(plain), nn_net_params(net), nn_net_num_params(net) * 4);
    float x[8 * 16];
    int32_t y[8];
    fill_both(&rng, x, NULL, 8 * 16);
    for (int i = 0; i < n; i++) y[i] = (int32_t)nn_rng_below(&rng, 4);
    float l_plain, l;
    nn_net_forward(plain, x, y, n, &l_plain);
    nn_net_set_training(net, 0);
    nn_net_forward(net, x, y, n, &l);
    check(memcmp(nn_net_logits(net), nn_net_logits(plain), (size_t)n * 4 * 4) == 0 && l == l_plain,
          "dropout net in eval mode = the net without dropout", "loss %g vs %g", l, l_plain);
    nn_net_set_training(net, 1);
    float la, lb, lc;
    nn_net_set_dropout_seed(net, 42);
    nn_net_forward(net, x, y, n, &la);
    nn_net_set_dropout_seed(net, 43);
    nn_net_forward(net, x, y, n, &lb);
    nn_net_set_dropout_seed(net, 42);
    nn_net_forward(net, x, y, n, &lc);
    check(la == lc && la != lb && la != l_plain, "training loss: same seed same, other seed other",
          "seed 42: %g and %g, seed 43: %g, eval %g", la, lc, lb, l);
    /* backward reuses the forward's mask even if the seed changes in between */
    nn_net_zero_grad(net);
    nn_net_forward(net, x, y, n, &la);
    nn_net_backward(net);
    size_t np = nn_net_num_params(net);
    float *g1 = xmalloc(np * 4);
    memcpy(g1, nn_net_grads(net), np * 4);
    nn_net_zero_grad(net);
    nn_net_forward(net, x, y, n, &la);
    nn_net_set_dropout_seed(net, 7);
    nn_net_backward(net);
    check(memcmp(g1, nn_net_grads(net), np * 4) == 0,
          "backward uses the forward's mask, not the current seed", NULL);
    free(g1);
    nn_net_free(net);
    nn_net_free(plain);
}

int main(void) {
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);
    concat_vs_ref(c1, 3, 2, 3, 5);
    concat_vs_ref(c2, 3, 2, 3, 5);
    concat_vs_ref(c2, 8, 16, 32, 100); /* above the parallel threshold */
    concat_vs_ref(c1, 4, 7, 1, 1);     /* flat */
    concat_hand(c1);
    concat_shapes(c1);
    directional_check(c1, CONCAT_NET, "concat graph: gradient matches finite differences", 72, 0);
    directional_check(c2, CONCAT_NET, "concat graph: gradient matches finite differences", 72, 0);
    directional_check(c1, DROPOUT_NET, "dropout (fixed seed): gradient matches finite differences",
                      16, 77);
    directional_check(c2, DROPOUT_NET, "dropout (fixed seed): gradient matches finite differences",
                      16, 77);
    model_errors(c1);
    dropout_kernels(c1, c2);
    dropout_in_net(c1);
    dropout_in_net(c2);
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    return test_summary();
}
