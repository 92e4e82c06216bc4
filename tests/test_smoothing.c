/*
 * test_smoothing.c - label smoothing of the softmax cross-entropy loss
 * (PyTorch's CrossEntropyLoss(label_smoothing=eps), mean reduction):
 *   - values and gradients from PyTorch 1.13 (constants below);
 *   - a hand-computed case;
 *   - eps = 0 reproduces the plain kernels bit for bit;
 *   - fast (float) against reference (double) on random logits;
 *   - central differences of the reference loss in double against its gradient;
 *   - nn_net_set_label_smoothing: range checks, and a net's loss and bias
 *     gradient against the reference computed from its logits.
 * Exits non-zero if any check fails.
 */
#include "ops/ops.h"
#include "test_util.h"

enum { TC = 4, TN = 3 };

/* PyTorch 1.13 in float64, generated with:
 *   /usr/bin/python3 -c "import torch
 *   z0=[[1.,-2.,.5,3.],[0.,0.,0.,0.],[-1.,2.,-3.,.25]];y=torch.tensor([3,1,0])
 *   for e in (0.0,0.2,1.0):
 *     z=torch.tensor(z0,dtype=torch.float64,requires_grad=True)
 *     l=torch.nn.functional.cross_entropy(z,y,label_smoothing=e);l.backward()
 *     print(e,repr(l.item()),[repr(v) for r in z.grad.tolist() for v in r])" */
static const double TORCH_Z[TN * TC] = {1., -2., .5, 3., 0., 0., 0., 0., -1., 2., -3., .25};
static const int32_t TORCH_Y[TN] = {3, 1, 0};
static const struct {
    double eps, loss, grad[TN * TC];
} TORCH_CASES[] = {
    {0.0,
     1.5986016681997859,
     {0.03685125012057974, 0.001834715709194557, 0.022351413046870494, -0.06103737887664477,
      0.08333333333333333, -0.25, 0.08333333333333333, 0.08333333333333333, -0.3198441814999391,
      0.2709368572121241, 0.00182555818399408, 0.04708176610382098}},
    {0.2,
     1.7194350015331195,
     {0.020184583453913073, -0.01483195095747211, 0.005684746380203827, -0.011037378876644776,
      0.06666666666666667, -0.2, 0.06666666666666667, 0.06666666666666667, -0.2698441814999391,
      0.25427019054545746, -0.014841108482672586, 0.030415099437154307}},
    {1.0,
     2.202768334866453,
     {-0.046482083212753586, -0.08149861762413878, -0.060981920286462835, 0.1889626211233552, 0.0,
      0.0, 0.0, 0.0, -0.06984418149993912, 0.18760352387879078, -0.08150777514933925,
      -0.03625156722951235}},
};

static double max_abs_diff(const double *a, const double *b, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i]));
    return e;
}

static void test_torch_values(void) {
    float zf[TN * TC], prob[TN * TC], gf[TN * TC];
    double gd[TN * TC];
    for (int i = 0; i < TN * TC; i++) zf[i] = (float)TORCH_Z[i];
    for (size_t k = 0; k < sizeof TORCH_CASES / sizeof TORCH_CASES[0]; k++) {
        const double eps = TORCH_CASES[k].eps;
        double lr = nn_ref_softmax_ce_forward_smooth(TORCH_Z, TORCH_Y, TC, eps, TN);
        nn_ref_softmax_ce_backward_smooth(gd, TORCH_Z, TORCH_Y, TC, eps, TN);
        double lerr = fabs(lr - TORCH_CASES[k].loss) / TORCH_CASES[k].loss;
        double gerr = max_abs_diff(gd, TORCH_CASES[k].grad, TN * TC);
        check(lerr <= 1e-13 && gerr <= 1e-15, "reference vs PyTorch",
              "eps=%g loss rel %.2g, grad abs %.2g", eps, lerr, gerr);
        float lf = nn_softmax_ce_forward_smooth(prob, zf, TORCH_Y, TC, (float)eps, TN);
        nn_softmax_ce_backward_smooth(gf, prob, TORCH_Y, TC, (float)eps, TN);
        lerr = fabs((double)lf - TORCH_CASES[k].loss) / TORCH_CASES[k].loss;
        gerr = max_err(gf, TORCH_CASES[k].grad, TN * TC);
        check(lerr <= 1e-6 && gerr <= 1e-6, "fast vs PyTorch", "eps=%g loss rel %.2g, grad %.2g",
              eps, lerr, gerr);
    }
}

/* Two classes, logits (0, 0), label 0, eps 0.5: p = (1/2, 1/2), every -log p
 * is ln 2, so the loss is ln 2; target (3/4, 1/4), gradient (-1/4, 1/4). */
static void test_hand_case(void) {
    const float z[2] = {0.0f, 0.0f};
    const int32_t y[1] = {0};
    float p[2], g[2];
    float l = nn_softmax_ce_forward_smooth(p, z, y, 2, 0.5f, 1);
    nn_softmax_ce_backward_smooth(g, p, y, 2, 0.5f, 1);
    check(fabsf(l - logf(2.0f)) <= 1e-7f && g[0] == -0.25f && g[1] == 0.25f,
          "hand case logits (0,0) label 0 eps 0.5: loss ln 2, grad (-1/4, 1/4)",
          "loss %.9g grad (%.9g, %.9g)", l, g[0], g[1]);
}

static void fill_logits(nn_rng *rng, float *zf, double *zd, int32_t *y, int classes, int n, float scale) {
    for (int i = 0; i < n * classes; i++) {
        zf[i] = (2.0f * nn_rng_uniform(rng) - 1.0f) * scale;
        zd[i] = zf[i];
    }
    for (int i = 0; i < n; i++) y[i] = (int32_t)nn_rng_below(rng, (uint32_t)classes);
}

static void test_fast_vs_ref(void) {
    const int classes_list[] = {2, 10, 37};
    const int n_list[] = {1, 3, 13};
    const float eps_list[] = {0.0f, 0.1f, 0.5f, 1.0f};
    nn_rng rng;
    nn_rng_seed(&rng, 42, 7);
    double worst_l = 0.0, worst_g = 0.0;
    int same0 = 1;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int e = 0; e < 4; e++) {
                const int k = classes_list[a], n = n_list[b];
                const float eps = eps_list[e];
                float *zf = xmalloc(sizeof(float) * k * n), *p = xmalloc(sizeof(float) * k * n);
                float *g = xmalloc(sizeof(float) * k * n);
                double *zd = xmalloc(sizeof(double) * k * n), *gd = xmalloc(sizeof(double) * k * n);
                int32_t *y = xmalloc(sizeof(int32_t) * n);
                fill_logits(&rng, zf, zd, y, k, n, 8.0f);
                float lf = nn_softmax_ce_forward_smooth(p, zf, y, k, eps, n);
                nn_softmax_ce_backward_smooth(g, p, y, k, eps, n);
                double ld = nn_ref_softmax_ce_forward_smooth(zd, y, k, eps, n);
                nn_ref_softmax_ce_backward_smooth(gd, zd, y, k, eps, n);
                worst_l = fmax(worst_l, fabs((double)lf - ld) / fmax(1.0, fabs(ld)));
                worst_g = fmax(worst_g, max_err(g, gd, (size_t)k * n));
                if (eps == 0.0f) {
                    /* the plain entry points must be the eps = 0 case exactly */
                    float *p2 = xmalloc(sizeof(float) * k * n);
                    float *g2 = xmalloc(sizeof(float) * k * n);
                    double *gd2 = xmalloc(sizeof(double) * k * n);
                    float l2 = nn_softmax_ce_forward(p2, zf, y, k, n);
                    nn_softmax_ce_backward(g2, p2, y, k, n);
                    double ld2 = nn_ref_softmax_ce_forward(zd, y, k, n);
                    nn_ref_softmax_ce_backward(gd2, zd, y, k, n);
                    same0 &= l2 == lf && ld2 == ld && !memcmp(p2, p, sizeof(float) * k * n) &&
                             !memcmp(g2, g, sizeof(float) * k * n) &&
                             !memcmp(gd2, gd, sizeof(double) * k * n);
                    free(p2);
                    free(g2);
                    free(gd2);
                }
                free(zf);
                free(p);
                free(g);
                free(zd);
                free(gd);
                free(y);
            }
    check(worst_l <= 1e-6 && worst_g <= 1e-6,
          "fast == reference (classes 2,10,37; n 1,3,13; eps 0,0.1,0.5,1)", "loss %.2g, grad %.2g",
          worst_l, worst_g);
    check(same0, "eps 0 equals the plain kernels bit for bit (fast and reference)", NULL);
}

/* Central differences of the reference loss in double. */
static void test_gradient_fd(void) {
    enum { K = 6, N = 4 };
    const double eps_list[] = {0.1, 0.7, 1.0};
    nn_rng rng;
    nn_rng_seed(&rng, 3, 11);
    for (int big = 0; big < 2; big++)
        for (int e = 0; e < 3; e++) {
            float zf[K * N];
            double z[K * N], g[K * N];
            int32_t y[N];
            fill_logits(&rng, zf, z, y, K, N, big ? 20.0f : 2.0f);
            const double eps = eps_list[e], h = 1e-6;
            nn_ref_softmax_ce_backward_smooth(g, z, y, K, eps, N);
            double err = 0.0, gmax = 0.0;
            for (int i = 0; i < K * N; i++) {
                const double z0 = z[i];
                z[i] = z0 + h;
                double lp = nn_ref_softmax_ce_forward_smooth(z, y, K, eps, N);
                z[i] = z0 - h;
                double lm = nn_ref_softmax_ce_forward_smooth(z, y, K, eps, N);
                z[i] = z0;
                err = fmax(err, fabs((lp - lm) / (2 * h) - g[i]));
                gmax = fmax(gmax, fabs(g[i]));
            }
            check(err <= 1e-8 && gmax > 1e-3, "finite differences == reference gradient",
                  "%d classes n=%d logits +-%d eps=%g: max err %.2g, max |grad| %.3g", K, N,
                  big ? 20 : 2, eps, err, gmax);
        }
}

/* Through the graph: the loss node's descriptor carries eps. */
static void test_net(void) {
    enum { C = 5, K = 4, N = 3 };
    nn_ctx *ctx = test_ctx_new(1);
    nn_net *net = NULL;
    nn_status st =
        nn_net_parse(ctx, "input shape=5\nlinear out=4\nsoftmax_ce\n", "smooth.nn", &net);
    check(st == NN_OK, "parse a linear + softmax_ce model", "%s", ctx_err(ctx, st));
    if (st != NN_OK) {
        nn_ctx_free(ctx);
        return;
    }
    st = nn_net_plan(net, N);
    check(st == NN_OK, "plan", "%s", ctx_err(ctx, st));
    nn_rng rng;
    nn_rng_seed(&rng, 5, 1);
    nn_net_init_params(net, &rng);
    float x[N * C];
    int32_t y[N] = {2, 0, 3};
    for (int i = 0; i < N * C; i++) x[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;

    const float bad[] = {-0.1f, 1.5f, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        st = nn_net_set_label_smoothing(net, bad[i]);
        check(st == NN_EINVAL && contains(nn_ctx_error(ctx), "label smoothing") &&
                  contains(nn_ctx_error(ctx), "[0, 1]"),
              "nn_net_set_label_smoothing refuses", "eps=%g: %s", bad[i], ctx_err(ctx, st));
    }
    int bias = -1;
    for (int i = 0; i < nn_net_num_param_tensors(net); i++)
        if (nn_net_param_info(net, i)->is_bias) bias = i;
    check(bias >= 0, "model has a bias tensor", NULL);
    if (bias < 0) {
        nn_net_free(net);
        nn_ctx_free(ctx);
        return;
    }
    const float eps_list[] = {0.0f, 0.3f, 1.0f};
    for (int e = 0; e < 3; e++) {
        st = nn_net_set_label_smoothing(net, eps_list[e]);
        check(st == NN_OK, "nn_net_set_label_smoothing accepts", "eps=%g%s%s", eps_list[e],
              st == NN_OK ? "" : ": ", ctx_err(ctx, st));
        float loss = 0.0f;
        st = nn_net_forward(net, x, y, N, &loss);
        nn_net_zero_grad(net);
        if (st == NN_OK) st = nn_net_backward(net);
        check(st == NN_OK, "forward + backward", "%s", ctx_err(ctx, st));
        double z[N * K], dz[N * K], db[K] = {0};
        const float *logits = nn_net_logits(net);
        for (int i = 0; i < N * K; i++) z[i] = logits[i];
        double ref = nn_ref_softmax_ce_forward_smooth(z, y, K, eps_list[e], N);
        nn_ref_softmax_ce_backward_smooth(dz, z, y, K, eps_list[e], N);
        for (int i = 0; i < N; i++)
            for (int k = 0; k < K; k++) db[k] += dz[i * K + k];
        const nn_param_info *pi = nn_net_param_info(net, bias);
        double lerr = fabs((double)loss - ref) / fabs(ref);
        double gerr = max_err(nn_net_grads(net) + pi->offset, db, K);
        check(lerr <= 1e-6 && gerr <= 1e-6, "net loss and bias gradient == reference",
              "eps=%g: loss %.6g vs %.6g (rel %.2g), bias grad err %.2g", eps_list[e], loss, ref,
              lerr, gerr);
    }
    nn_net_free(net);
    nn_ctx_free(ctx);
}

int main(void) {
    test_torch_values();
    test_hand_case();
    test_fast_vs_ref();
    test_gradient_fd();
    test_net();
    return test_summary();
}
