/*
 * test_bf16.c - the bf16 arithmetic of --precision bf16: the bf16 GEMM (every
 * transpose, accumulation, edge sizes, blocks larger than one packed panel)
 * and the bf16 convolution forward and backward, each against a double
 * reference computed on the same inputs rounded to bf16, for the portable
 * kernels and, where the CPU has AVX512-BF16, the vector ones; then a few
 * training steps of the seed CNN in bf16 against fp32.
 */
#include "backend/gemm_bf16.h"
#include "ops/ops.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

/* float rounded to the nearest bf16 (ties to even), as a float */
static float round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float *rounded(const float *v, size_t n) {
    float *r = fvec(n);
    for (size_t i = 0; i < n; i++) r[i] = round_bf16(v[i]);
    return r;
}

typedef struct {
    int M, N, K, ta, tb, tc, acc;
} gemm_case;

/* max over C of |C - ref| / (sum_k |a b| + 1e-30), ref in double on rounded inputs */
static double gemm_err(const gemm_case *g, nn_isa isa, nn_rng *rng) {
    const int M = g->M, N = g->N, K = g->K;
    const int lda = g->ta ? M : K, ldb = g->tb ? K : N, ldc = g->tc ? M : N;
    float *A = fvec((size_t)M * K), *B = fvec((size_t)K * N), *C = fvec((size_t)M * N);
    fill(A, (size_t)M * K, rng, -1, 1);
    fill(B, (size_t)K * N, rng, -1, 1);
    fill(C, (size_t)M * N, rng, -1, 1);
    float *C0 = fvec((size_t)M * N);
    memcpy(C0, C, (size_t)M * N * sizeof(float));
    uint16_t *Ap = xmalloc(nn_bf16_packed_a_size(M, K) * sizeof(uint16_t));
    uint16_t *scratch = xmalloc(nn_bf16_gemm_scratch_size() * sizeof(uint16_t));
    nn_bf16_pack_a(isa, A, lda, g->ta, M, K, Ap);
    nn_gemm_bf16(isa, M, N, K, Ap, B, ldb, g->tb, C, ldc, g->tc, g->acc, scratch);
    double worst = 0.0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0.0, mag = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = round_bf16(g->ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
                const double b = round_bf16(g->tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
                s += a * b;
                mag += fabs(a * b);
            }
            const size_t ci = g->tc ? (size_t)n * ldc + m : (size_t)m * ldc + n;
            if (g->acc) {
                s += C0[ci];
                mag += fabs(C0[ci]);
            }
            const double e = fabs(C[ci] - s) / (mag + 1e-30);
            if (e > worst || e != e) worst = e != e ? INFINITY : e;
        }
    free(A), free(B), free(C), free(C0), free(Ap), free(scratch);
    return worst;
}

static void test_gemm(nn_isa isa, nn_rng *rng) {
    static const int sizes[][3] = {{1, 1, 1},   {12, 32, 2},   {13, 33, 7},  {5, 17, 600},
                                   {40, 700, 9}, {64, 100, 257}, {30, 520, 300}};
    int cases = 0, bad = 0;
    double worst = 0.0;
    char first[128] = "";
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int f = 0; f < 16; f++) {
            gemm_case g = {sizes[s][0], sizes[s][1], sizes[s][2], f & 1, (f >> 1) & 1, (f >> 2) & 1,
                           (f >> 3) & 1};
            double e = gemm_err(&g, isa, rng);
            cases++;
            if (e > worst) worst = e;
            if (!(e <= 2e-6)) {
                if (!bad++)
                    snprintf(first, sizeof first, "M=%d N=%d K=%d ta=%d tb=%d tc=%d acc=%d: %.2e",
                             g.M, g.N, g.K, g.ta, g.tb, g.tc, g.acc, e);
            }
        }
    char name[96];
    snprintf(name, sizeof name, "bf16 GEMM == double on bf16 inputs (%s)", nn_isa_name(isa));
    check(bad == 0, name, "%d cases, worst relative error %.2e%s%s", cases, worst,
          bad ? "; first failing " : "", first);
}

/* conv2d in bf16 (im2col + the bf16 GEMM, or on CPUs with AVX512-BF16 the
 * direct channels-last kernels where they apply) against the double reference
 * on rounded inputs */
static void test_conv(nn_ctx *ctx, nn_rng *rng) {
    static const int cfgs[][11] = {
        /* n C H W K R S stride pad bias relu */
        {2, 1, 28, 28, 16, 3, 3, 1, 1, 1, 1}, {3, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1},
        {2, 8, 9, 7, 12, 3, 3, 2, 1, 0, 0},   {4, 32, 7, 7, 64, 3, 3, 1, 1, 1, 0},
        {2, 24, 8, 8, 40, 1, 1, 2, 0, 0, 0},  {1, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1},
        /* odd C and K (a zero partner in the last bf16 pair), odd widths (a
         * zero pixel after each row's last pair), several channel passes */
        {2, 27, 9, 11, 24, 3, 3, 1, 1, 1, 1}, {2, 40, 6, 13, 45, 3, 3, 1, 1, 1, 0},
        {2, 36, 5, 5, 100, 3, 3, 1, 0, 1, 1},
    };
    int bad = 0, direct = 0;
    double wf = 0, wdx = 0, wdw = 0, wdb = 0;
    char first[200] = "";
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        const int *c = cfgs[ci];
        nn_conv2d_desc d;
        memset(&d, 0, sizeof d);
        d.C = c[1], d.H = c[2], d.W = c[3], d.K = c[4], d.R = c[5], d.S = c[6];
        d.stride_h = d.stride_w = c[7];
        d.pad_h = d.pad_w = c[8];
        d.has_bias = c[9];
        d.relu = c[10];
        d.P = (d.H + 2 * d.pad_h - d.R) / d.stride_h + 1;
        d.Q = (d.W + 2 * d.pad_w - d.S) / d.stride_w + 1;
        d.bf16 = 1;
        const int n = c[0];
        direct += nn_conv2d_direct_ok(&d, ctx);
        const size_t xn = (size_t)n * d.C * d.H * d.W, wn = (size_t)d.K * d.C * d.R * d.S;
        const size_t yn = (size_t)n * d.K * d.P * d.Q;
        float *x = fvec(xn), *w = fvec(wn), *b = fvec((size_t)d.K), *y = fvec(yn), *dy = fvec(yn);
        float *dx = fvec(xn), *dw = fvec(wn), *db = fvec((size_t)d.K);
        fill(x, xn, rng, -1, 1);
        fill(w, wn, rng, -0.3f, 0.3f);
        fill(b, (size_t)d.K, rng, -1, 1);
        fill(dy, yn, rng, -1, 1);
        memset(dw, 0, wn * sizeof(float));
        memset(db, 0, (size_t)d.K * sizeof(float));
        float *ws = fvec(nn_conv2d_workspace(&d, ctx->threads));
        nn_conv2d_forward(y, x, w, d.has_bias ? b : NULL, &d, n, ws, ctx);
        float *xr = rounded(x, xn), *wr = rounded(w, wn);
        double *xd = to_d(xr, xn), *wd = to_d(wr, wn), *bd = to_d(b, (size_t)d.K);
        double *z = dvec(yn);
        nn_ref_conv2d_forward(z, xd, wd, d.has_bias ? bd : NULL, &d, n);
        /* the pre-activation's sign decides the ReLU mask: skip near-zero ones */
        double ef = 0.0;
        for (size_t i = 0; i < yn; i++) {
            const double r = d.relu && z[i] < 0 ? 0.0 : z[i];
            if (d.relu && fabs(z[i]) < 1e-3) {
                dy[i] = 0.0f;
                continue;
            }
            const double e = fabs(y[i] - r) / (1.0 + fabs(r));
            if (e > ef || e != e) ef = e != e ? INFINITY : e;
        }
        nn_conv2d_backward(dx, dw, d.has_bias ? db : NULL, dy, y, x, w, &d, n, ws, ctx);
        /* the GEMMs see dy after the ReLU mask, rounded; db sums it in fp32 */
        double *dz = dvec(yn), *dzr = dvec(yn);
        for (size_t i = 0; i < yn; i++) {
            const float g = d.relu && !(z[i] > 0) ? 0.0f : dy[i];
            dz[i] = g;
            dzr[i] = round_bf16(g);
        }
        double *dxd = dvec(xn), *dwd = dvec(wn), *dbd = dvec((size_t)d.K);
        memset(dwd, 0, wn * sizeof(double));
        memset(dbd, 0, (size_t)d.K * sizeof(double));
        nn_ref_conv2d_backward(dxd, dwd, NULL, dzr, xd, wd, &d, n);
        double edx = max_err(dx, dxd, xn) / (1.0 + max_abs(dxd, xn));
        double edw = max_err(dw, dwd, wn) / (1.0 + max_abs(dwd, wn));
        double edb = 0.0;
        if (d.has_bias) {
            double *dx2 = dvec(xn), *dw2 = dvec(wn);
            memset(dw2, 0, wn * sizeof(double));
            nn_ref_conv2d_backward(dx2, dw2, dbd, dz, xd, wd, &d, n);
            edb = max_err(db, dbd, (size_t)d.K) / (1.0 + max_abs(dbd, (size_t)d.K));
            free(dx2), free(dw2);
        }
        if (ef > wf) wf = ef;
        if (edx > wdx) wdx = edx;
        if (edw > wdw) wdw = edw;
        if (edb > wdb) wdb = edb;
        if (!(ef <= 1e-5 && edx <= 1e-5 && edw <= 1e-5 && edb <= 1e-5) && !bad++)
            snprintf(first, sizeof first, "config %zu: y %.2e dx %.2e dw %.2e db %.2e", ci, ef, edx,
                     edw, edb);
        free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(ws);
        free(xr), free(wr), free(xd), free(wd), free(bd), free(z), free(dz), free(dzr);
        free(dxd), free(dwd), free(dbd);
    }
    char name[128];
    snprintf(name, sizeof name, "bf16 conv2d == double on bf16 inputs (%s, %d threads)",
             nn_isa_name(ctx->isa), ctx->threads);
    check(bad == 0, name, "max error y %.2e dx %.2e dw %.2e db %.2e%s%s", wf, wdx, wdw, wdb,
          bad ? "; first failing " : "", first);
    /* the six dense 3x3 stride-1 configurations with enough channels (with
     * AMX every bf16 convolution runs im2col + the AMX GEMM instead) */
    const int want = ctx->isa == NN_ISA_AVX512BF16 ? 6 : 0;
    snprintf(name, sizeof name, "bf16 conv2d: configurations on the direct kernels (%s)",
             nn_isa_name(ctx->isa));
    check(direct == want, name, "%d, expected %d", direct, want);
}

/* 30 SGD steps of the seed CNN on a fixed batch: bf16 losses follow fp32's. */
static void test_training(nn_isa isa) {
    float losses[2][30];
    for (int p = 0; p < 2; p++) {
        nn_ctx *ctx = test_ctx_new(2);
        nn_ctx_set_isa(ctx, isa);
        nn_ctx_set_precision(ctx, p ? NN_PRECISION_BF16 : NN_PRECISION_FP32);
        nn_net *net = NULL;
        nn_status st = nn_net_parse(ctx, SEED_MODEL, "seed", &net);
        if (!st) st = nn_net_plan(net, 16);
        nn_rng rng;
        nn_rng_seed(&rng, 5, 0);
        if (!st) nn_net_init_params(net, &rng);
        float *x = fvec(16 * 784);
        int32_t labels[16];
        fill(x, 16 * 784, &rng, 0, 1);
        for (int i = 0; i < 16; i++) labels[i] = i % 10;
        float *mom = calloc(nn_net_num_params(net), sizeof(float));
        for (int s = 0; s < 30 && !st; s++) {
            nn_net_zero_grad(net);
            st = nn_net_forward(net, x, labels, 16, &losses[p][s]);
            if (!st) st = nn_net_backward(net);
            float *w = nn_net_params(net), *g = nn_net_grads(net);
            for (size_t j = 0; j < nn_net_num_params(net); j++) {
                mom[j] = 0.9f * mom[j] + g[j];
                w[j] -= 0.05f * mom[j];
            }
        }
        check(st == NN_OK, "seed CNN trains", "%s", ctx_err(ctx, st));
        free(x), free(mom);
        nn_net_free(net);
        nn_ctx_free(ctx);
    }
    double worst = 0.0;
    for (int s = 0; s < 30; s++) {
        double e = fabs(losses[1][s] - losses[0][s]) / fabs(losses[0][s]);
        if (e > worst || e != e) worst = e != e ? INFINITY : e;
    }
    char name[96];
    snprintf(name, sizeof name, "seed CNN in bf16 follows fp32 over 30 steps (%s)", nn_isa_name(isa));
    check(worst < 0.03 && losses[1][29] < 0.8f * losses[1][0], name,
          "max relative loss difference %.2e; loss %.4f -> %.4f (fp32 %.4f -> %.4f)", worst,
          losses[1][0], losses[1][29], losses[0][0], losses[0][29]);
}

int main(void) {
    nn_rng rng;
    nn_rng_seed(&rng, 11, 0);
    nn_ctx *probe = test_ctx_new(1);
    const nn_isa isas[3] = {NN_ISA_GENERIC, NN_ISA_AVX512BF16, NN_ISA_AMX};
    for (int v = 0; v < 3; v++) {
        if (nn_ctx_set_isa(probe, isas[v])) {
            printf("SKIP bf16 %s kernels: %s\n", nn_isa_name(isas[v]), nn_ctx_error(probe));
            continue;
        }
        test_gemm(isas[v], &rng);
        for (int t = 1; t <= 2; t++) {
            nn_ctx *ctx = test_ctx_new(t);
            nn_ctx_set_isa(ctx, isas[v]);
            test_conv(ctx, &rng);
            nn_ctx_free(ctx);
        }
        test_training(isas[v]);
    }
    nn_ctx_free(probe);
    return test_summary();
}
