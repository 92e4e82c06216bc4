/*
 * test_cuda_ops.c - the CUDA backend against the CPU, as ggml's
 * test-backend-ops compares every backend with the CPU reference:
 *   - every op, forward and backward, through its registry entry: small
 *     models (one or a few ops each, with the fused ReLU variants, the
 *     max-pool that masks a convolution's ReLU, depthwise, grouped, 1x1,
 *     strided and dilated convolutions, batch norm in training and eval mode,
 *     dropout, label smoothing, add and concat of several inputs) run on a CPU
 *     net and a CUDA net with the same parameters and batch; every layer's
 *     output, the loss, every parameter gradient and the buffers (running
 *     statistics) must agree within a tolerance, with fusion on and off;
 *     dropout masks (aux) must be the CPU's byte for byte;
 *   - the optimizer step (SGD with momentum, Nesterov and weight decay; Adam,
 *     AdamW with AMSGrad; RMSprop; Adagrad) on the same gradients: the CPU's
 *     bits, or within a few ulp;
 *   - gradient clipping's norm;
 *   - the seed CNN (models/seed_cnn.nn): several SGD steps (lr 0.01, momentum
 *     0.9, batch 64) on the CPU and the GPU, losses within 1e-4 relative.
 * Convolutions run through cuDNN where the library is (backend/cuda_dnn.h);
 * ctest's test_cuda_ops_im2col runs it all again with NNOPT_CUDA_CONV=im2col.
 * Skips (exit 77, "SKIP: ...") in a build without CUDA or where
 * cudaGetDeviceCount finds no device.
 */
#include "backend/backend.h"
#include "core/graph.h"
#if NN_HAVE_CUDA
#include "backend/cuda_dnn.h"
#endif
#include "test_util.h"

/* max |gpu - cpu| / max(|cpu|, floor) over a tensor */
#define OP_TOL 1e-4
#define LOSS_TOL 1e-4

#if NN_HAVE_CUDA

static nn_ctx *ctx_on(const char *backend, int fuse) {
    nn_ctx *ctx = nn_ctx_new(1);
    if (!ctx) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    nn_ctx_set_fusion(ctx, fuse);
    if (nn_ctx_set_backend(ctx, backend) != NN_OK) {
        fprintf(stderr, "%s\n", nn_ctx_error(ctx));
        exit(1);
    }
    return ctx;
}

/* The largest difference of a (CPU) and b (GPU), relative to a's magnitude
 * or floor, whichever is larger. */
static double rel_diff(const float *a, const float *b, size_t n, double floor, size_t *where) {
    double worst = 0.0, mag = floor;
    *where = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > mag) mag = fabs((double)a[i]);
    for (size_t i = 0; i < n; i++) {
        const double d = a[i] == b[i] ? 0.0 : fabs((double)a[i] - (double)b[i]);
        if (d != d || d > worst) {
            worst = d != d ? INFINITY : d;
            *where = i;
        }
    }
    return worst / mag;
}

/* Downloads n floats of GPU memory into a fresh host array. */
static float *fetch(nn_ctx *ctx, const float *dev, size_t n) {
    float *h = fvec(n ? n : 1);
    nn_ctx_download(ctx, h, dev, n * sizeof(float));
    return h;
}

/* cpu (host memory) against gpu (device memory), n floats */
static void compare_floor(nn_ctx *g, const float *cpu, const float *gpu, size_t n, double tol,
                          double floor, const char *what) {
    float *h = fetch(g, gpu, n);
    size_t at;
    const double d = rel_diff(cpu, h, n, floor, &at);
    check(d <= tol, what, "relative difference %.3g at %zu (cpu %.9g, cuda %.9g), tolerance %.1g",
          d, at, n ? (double)cpu[at] : 0.0, n ? (double)h[at] : 0.0, tol);
    free(h);
}

static void compare(nn_ctx *g, const float *cpu, const float *gpu, size_t n, double tol,
                    const char *what) {
    compare_floor(g, cpu, gpu, n, tol, 1e-6, what);
}

/* ||gpu - cpu|| / ||cpu|| (2-norms) within tol */
static void compare_norm(nn_ctx *g, const float *cpu, const float *gpu, size_t n, double tol,
                         const char *what) {
    float *h = fetch(g, gpu, n);
    double dd = 0.0, rr = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)h[i] - cpu[i];
        dd += d * d, rr += (double)cpu[i] * cpu[i];
    }
    const double r = sqrt(dd / (rr > 0 ? rr : 1e-30));
    check(r <= tol, what, "norm-wise relative difference %.3g, tolerance %.2g", r, tol);
    free(h);
}

typedef struct {
    const char *name;
    const char *text;
    int batch;
    int training;
    float smoothing;
    int bf16;      /* --precision bf16 on the GPU (the CPU stays fp32: the reference) */
    double tol;    /* 0: OP_TOL */
    double grad_norm_tol; /* > 0: gradients compared norm-wise (bf16) */
} op_case;

/* One case: the same net, parameters and batch on both backends; forward
 * with labels, backward; every layer's output, the loss, the gradients and
 * the buffers compared. */
static void run_case(const op_case *c, int fuse) {
    const double tol = c->tol > 0 ? c->tol : OP_TOL;
    nn_ctx *cc = ctx_on("cpu", fuse), *gc = ctx_on("cuda", fuse);
    /* bf16 on the GPU only: the CPU stays the fp32 reference */
    if (c->bf16) nn_ctx_set_precision(gc, NN_PRECISION_BF16);
    nn_net *cn = NULL, *gn = NULL;
    char name[160];
    snprintf(name, sizeof name, "%s (%s, fusion %s)", c->name, c->training ? "training" : "eval",
             fuse ? "on" : "off");
    if (nn_net_parse(cc, c->text, c->name, &cn) || nn_net_parse(gc, c->text, c->name, &gn) ||
        nn_net_plan(cn, c->batch) || nn_net_plan(gn, c->batch)) {
        check(0, name, "setup: %s / %s", nn_ctx_error(cc), nn_ctx_error(gc));
        goto out;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 19, 1);
    nn_net_init_params(cn, &rng);
    const size_t np = nn_net_num_params(cn), nb = nn_net_num_buffers(cn);
    nn_ctx_upload(gc, nn_net_params(gn), nn_net_params(cn), np * sizeof(float));
    if (c->smoothing > 0) {
        nn_net_set_label_smoothing(cn, c->smoothing);
        nn_net_set_label_smoothing(gn, c->smoothing);
    }
    nn_net_set_training(cn, c->training);
    nn_net_set_training(gn, c->training);
    nn_net_set_dropout_seed(cn, 0x5eed);
    nn_net_set_dropout_seed(gn, 0x5eed);
    const nn_shape in = nn_net_input_shape(cn);
    const size_t per = (size_t)nn_shape_numel(&in);
    float *x = fvec((size_t)c->batch * per);
    int32_t *y = malloc((size_t)c->batch * sizeof *y);
    for (size_t i = 0; i < (size_t)c->batch * per; i++) x[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < c->batch; i++) y[i] = (int32_t)nn_rng_below(&rng, nn_net_num_classes(cn));
    float lc = 0, lg = 0;
    nn_net_zero_grad(cn);
    nn_net_zero_grad(gn);
    if (nn_net_forward(cn, x, y, c->batch, &lc) || nn_net_forward(gn, x, y, c->batch, &lg)) {
        check(0, name, "forward: %s / %s", nn_ctx_error(cc), nn_ctx_error(gc));
        goto out_x;
    }
    check(fabs((double)lc - lg) <= fmax(LOSS_TOL, c->tol) * fmax(1.0, fabs((double)lc)), name,
          "loss cpu %.9g, cuda %.9g", (double)lc, (double)lg);
    /* eval mode with fusion on the CPU folds a batch norm into the
     * convolution before it (graph.c, host memory only): that convolution's
     * own output is never written there, and there is no backward */
    const int cpu_folded = cn->folded_pass;
    for (int i = 0; i < cn->num_nodes; i++) {
        const nn_node *a = &cn->nodes[i], *b = &gn->nodes[i];
        if (i == cn->input_node || a->alias_of >= 0) continue;
        if (cpu_folded && a->fold_into >= 0) continue;
        char what[256];
        snprintf(what, sizeof what, "%s: layer %s (%s) output", name, a->name,
                 nn_op_def_get(a->op)->name);
        compare(gc, a->y, b->y, (size_t)c->batch * (size_t)nn_shape_numel(&a->out), tol,
                what);
        if (a->op == NN_OP_DROPOUT) { /* the keep masks (aux, a byte each): the CPU's exactly */
            const size_t bytes = a->aux_bytes * (size_t)c->batch;
            unsigned char *m = malloc(bytes);
            nn_ctx_download(gc, m, b->aux, bytes);
            snprintf(what, sizeof what, "%s: layer %s: dropout mask", name, a->name);
            check(memcmp(m, a->aux, bytes) == 0, what, "the masks differ");
            free(m);
        }
    }
    if (nb) {
        snprintf(name + strlen(name), sizeof name - strlen(name), ": buffers");
        compare(gc, nn_net_buffers(cn), nn_net_buffers(gn), nb, tol, name);
        name[strlen(name) - strlen(": buffers")] = '\0';
    }
    if (cpu_folded) goto out_x; /* backward: in the same case with fusion off */
    if (nn_net_backward(cn) || nn_net_backward(gn)) {
        check(0, name, "backward: %s / %s", nn_ctx_error(cc), nn_ctx_error(gc));
        goto out_x;
    }
    /* A gradient that is zero in exact arithmetic (the bias of a layer
     * before a batch norm: the batch norm's input gradient sums to zero per
     * channel) is rounding noise on both backends, ~1e-8: its differences
     * are measured against 1% of the model's largest gradient instead. */
    double gmax = 0.0;
    for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs((double)nn_net_grads(cn)[i]));
    for (int t = 0; t < cn->num_param_tensors; t++) {
        const nn_param_info *p = &cn->params[t];
        char what[256];
        snprintf(what, sizeof what, "%s: gradient of %s", name, p->name);
        if (c->grad_norm_tol > 0)
            compare_norm(gc, nn_net_grads(cn) + p->offset, nn_net_grads(gn) + p->offset, p->numel,
                         c->grad_norm_tol, what);
        else
            compare_floor(gc, nn_net_grads(cn) + p->offset, nn_net_grads(gn) + p->offset,
                          p->numel, tol, fmax(1e-6, 1e-2 * gmax), what);
    }
out_x:
    free(x);
    free(y);
out:
    nn_net_free(cn);
    nn_net_free(gn);
    nn_ctx_free(cc);
    nn_ctx_free(gc);
}

/* Every op of NN_OP_LIST appears in some case below (input and flatten have
 * no kernels). */
static const op_case cases[] = {
    {"conv2d 3x3 + relu + maxpool (the mask moves to the pool)",
     "input shape=3x9x9\nconv2d out=4 kernel=3 pad=1\nrelu\nmaxpool size=2\nconv2d out=5 kernel=3\n"
     "flatten\nlinear out=6\nsoftmax_ce\n", 5, 1, 0, 0, 0, 0},
    {"conv2d strided, 1x1, no bias, relu",
     "input shape=4x10x10\nconv2d out=6 kernel=3 stride=2 pad=1\nrelu\nconv2d out=5 kernel=1 bias=0\n"
     "relu\nconv2d out=3 kernel=1 stride=2\nflatten\nlinear out=4\nsoftmax_ce\n", 3, 1, 0, 0, 0, 0},
    {"conv2d depthwise and grouped",
     "input shape=4x8x8\nconv2d out=8 kernel=3 pad=1\nconv2d out=8 kernel=3 pad=1 groups=8\nrelu\n"
     "conv2d out=4 kernel=3x2 stride=2x1 pad=1 groups=2\nconv2d out=4 kernel=5 pad=2 groups=4\n"
     "flatten\nlinear out=3\nsoftmax_ce\n", 4, 1, 0, 0, 0, 0},
    {"conv2d dilated, odd max-pool windows",
     "input shape=2x11x11\nconv2d out=3 kernel=3 pad=2 dilation=2\nmaxpool size=3 stride=2 pad=1\n"
     "conv2d out=4 kernel=3 dilation=1x2 pad=1x2\nmaxpool size=2\nflatten\nlinear out=5\nsoftmax_ce\n",
     3, 1, 0, 0, 0, 0},
    {"avgpool, gap",
     "input shape=3x9x9\nconv2d out=4 kernel=3 pad=1\navgpool size=3 stride=2 pad=1\n"
     "conv2d out=5 kernel=3 pad=1\navgpool size=2\ngap\nlinear out=4\nsoftmax_ce\n", 4, 1, 0, 0, 0, 0},
    {"activations",
     "input shape=2x6x6\nconv2d out=4 kernel=3 pad=1\nleaky_relu slope=0.1\nconv2d out=4 kernel=3 pad=1\n"
     "gelu\nconv2d out=4 kernel=3 pad=1\nsilu\nconv2d out=4 kernel=3 pad=1\nsigmoid\n"
     "conv2d out=4 kernel=3 pad=1\ntanh\nconv2d out=4 kernel=3 pad=1\nrelu6\n"
     "conv2d out=4 kernel=3 pad=1\nhardswish\navgpool size=1\nrelu\nflatten\nlinear out=5\n"
     "softmax_ce\n", 3, 1, 0, 0, 0, 0},
    {"linear + relu, label smoothing",
     "input shape=20\nlinear out=16\nrelu\nlinear out=12 bias=0\nrelu\nlinear out=7\nsoftmax_ce\n",
     9, 1, 0.1f, 0, 0, 0},
    {"batchnorm + relu (2d and flat)",
     "input shape=3x6x6\nconv2d out=5 kernel=3 pad=1 bias=0\nbatchnorm\nrelu\nconv2d out=4 kernel=3\n"
     "batchnorm momentum=0.3\nflatten\nlinear out=8\nbatchnorm\nrelu\nlinear out=4\nsoftmax_ce\n",
     6, 1, 0, 0, 0, 0},
    {"batchnorm + relu (2d and flat)",
     "input shape=3x6x6\nconv2d out=5 kernel=3 pad=1 bias=0\nbatchnorm\nrelu\nconv2d out=4 kernel=3\n"
     "batchnorm momentum=0.3\nflatten\nlinear out=8\nbatchnorm\nrelu\nlinear out=4\nsoftmax_ce\n",
     6, 0, 0, 0, 0, 0},
    {"batchnorm + residual add + relu (the add fused into the batch norm)",
     "input shape=3x6x6\nconv2d out=4 kernel=3 pad=1 bias=0\nbatchnorm\nrelu name=r\n"
     "conv2d out=4 kernel=3 pad=1 bias=0\nbatchnorm name=b\nadd in=b,r\nrelu\nflatten\n"
     "linear out=4\nsoftmax_ce\n",
     6, 1, 0, 0, 0, 0},
    {"dropout",
     "input shape=3x5x5\nconv2d out=4 kernel=3 pad=1\nrelu\ndropout p=0.3\nflatten\nlinear out=10\n"
     "dropout\nlinear out=4\nsoftmax_ce\n", 7, 1, 0, 0, 0, 0},
    {"dropout",
     "input shape=3x5x5\nconv2d out=4 kernel=3 pad=1\nrelu\ndropout p=0.3\nflatten\nlinear out=10\n"
     "dropout\nlinear out=4\nsoftmax_ce\n", 7, 0, 0, 0, 0, 0},
    {"add (+ relu) and concat of several inputs, a layer read twice",
     "input shape=2x6x6\nconv2d name=a out=4 kernel=3 pad=1\nconv2d name=b in=input out=4 kernel=1\n"
     "add name=s in=a,b\nrelu\nconv2d name=c out=4 kernel=3 pad=1\nadd name=t in=c,s,a\n"
     "concat name=cat in=t,a,t,b\nconv2d name=d out=3 kernel=3 stride=2\nconcat in=d,d\n"
     "flatten\nlinear out=5\nsoftmax_ce\n", 4, 1, 0, 0, 0, 0},
    /* bf16 convolutions on the GPU (C R S >= 32: the first stays fp32)
     * against the exact fp32 CPU: cuDNN rounds x, w and the gradients to
     * bf16 and its outputs too (2^-9 relative). Outputs and loss within 3%
     * element-wise; gradients norm-wise within 15%: in this small net the
     * first two layers' gradients move that much under bf16 (ReLU masks
     * that flip, sums that cancel). Seen: the GPU's element-wise differences
     * there 5.7-7.8% of the tensor's largest (H200), the CPU's own bf16 path
     * 4-10% norm-wise (12-15% at 16 images) against its fp32; the later
     * layers' gradients within 0.6% on both. */
    {"bf16 convolutions (+ relu, strided)",
     "input shape=1x10x10\nconv2d out=6 kernel=3 pad=1\nrelu\nconv2d out=8 kernel=3 pad=1\n"
     "relu\nconv2d out=8 kernel=3 pad=1 stride=2\nrelu\n"
     "conv2d out=6 kernel=3 pad=1\nflatten\nlinear out=5\nsoftmax_ce\n", 4, 1, 0, 1, 3e-2, 0.15},
};

/* ------------------------------------------------------------ the optimizer */

static void run_optim(const char *what, nn_optim_config cfg) {
    nn_ctx *cc = ctx_on("cpu", 1), *gc = ctx_on("cuda", 1);
    const size_t n = 10007; /* not a multiple of any block */
    float *p = fvec(n), *g = fvec(n);
    float *dp = NULL, *dg = NULL;
    nn_optimizer *co = NULL, *go = NULL;
    nn_rng rng;
    nn_rng_seed(&rng, 7, 3);
    for (size_t i = 0; i < n; i++) p[i] = nn_rng_uniform(&rng) - 0.5f;
    const nn_backend *gpu = nn_ctx_backend_of(gc);
    dp = gpu->alloc(n * sizeof(float));
    dg = gpu->alloc(n * sizeof(float));
    if (!dp || !dg || nn_optim_new(cc, &cfg, n, &co) || nn_optim_new(gc, &cfg, n, &go)) {
        check(0, what, "setup: %s / %s", nn_ctx_error(cc), nn_ctx_error(gc));
        goto out;
    }
    nn_ctx_upload(gc, dp, p, n * sizeof(float));
    for (int step = 0; step < 4; step++) {
        for (size_t i = 0; i < n; i++) g[i] = 0.2f * (nn_rng_uniform(&rng) - 0.5f);
        nn_ctx_upload(gc, dg, g, n * sizeof(float));
        nn_optim_step(co, cc, p, g);
        nn_optim_step(go, gc, dp, dg);
    }
    /* the same float operations: the CPU's bits (a few ulp at most) */
    compare(gc, p, dp, n, 1e-6, what);
out:
    nn_optim_free(co);
    nn_optim_free(go);
    if (dp) gpu->free(dp);
    if (dg) gpu->free(dg);
    free(p);
    free(g);
    nn_ctx_free(cc);
    nn_ctx_free(gc);
}

static void test_optimizers(void) {
    nn_optim_config c = nn_optim_defaults(NN_OPTIM_SGD);
    run_optim("sgd", c);
    c.momentum = 0.9f, c.weight_decay = 5e-4f, c.dampening = 0.1f;
    run_optim("sgd momentum, dampening, weight decay", c);
    c.dampening = 0.0f, c.nesterov = 1;
    run_optim("sgd nesterov", c);
    c = nn_optim_defaults(NN_OPTIM_ADAM);
    c.weight_decay = 1e-2f;
    run_optim("adam (L2)", c);
    c = nn_optim_defaults(NN_OPTIM_ADAMW);
    c.amsgrad = 1;
    run_optim("adamw amsgrad", c);
    c = nn_optim_defaults(NN_OPTIM_RMSPROP);
    c.momentum = 0.9f, c.centered = 1, c.weight_decay = 1e-3f;
    run_optim("rmsprop centered momentum", c);
    c = nn_optim_defaults(NN_OPTIM_ADAGRAD);
    c.lr_decay = 0.01f;
    run_optim("adagrad", c);
}

static void test_clip(void) {
    nn_ctx *cc = ctx_on("cpu", 1), *gc = ctx_on("cuda", 1);
    const size_t n = 70001;
    float *g = fvec(n);
    nn_rng rng;
    nn_rng_seed(&rng, 11, 1);
    for (size_t i = 0; i < n; i++) g[i] = nn_rng_uniform(&rng) - 0.5f;
    const nn_backend *gpu = nn_ctx_backend_of(gc);
    float *dg = gpu->alloc(n * sizeof(float));
    nn_ctx_upload(gc, dg, g, n * sizeof(float));
    const double a = nn_clip_grad_norm(g, n, 1.0, cc), b = nn_clip_grad_norm(dg, n, 1.0, gc);
    check(fabs(a - b) <= 1e-9 * a, "clip_grad_norm: the norm", "cpu %.17g, cuda %.17g", a, b);
    compare(gc, g, dg, n, 1e-6, "clip_grad_norm: the clipped gradients");
    gpu->free(dg);
    free(g);
    nn_ctx_free(cc);
    nn_ctx_free(gc);
}

/* ------------------------------------------------------------ the seed CNN */

static void test_seed_cnn(void) {
    nn_ctx *cc = ctx_on("cpu", 1), *gc = ctx_on("cuda", 1);
    char path[512];
    snprintf(path, sizeof path, "%s/models/seed_cnn.nn", NN_SOURCE_DIR);
    nn_net *cn = NULL, *gn = NULL;
    nn_optimizer *co = NULL, *go = NULL;
    nn_optim_config cfg = nn_optim_defaults(NN_OPTIM_SGD);
    cfg.lr = 0.01f, cfg.momentum = 0.9f;
    const int batch = 64, steps = 8;
    if (nn_net_load(cc, path, &cn) || nn_net_load(gc, path, &gn) || nn_net_plan(cn, batch) ||
        nn_net_plan(gn, batch) || nn_optim_new(cc, &cfg, nn_net_num_params(cn), &co) ||
        nn_optim_new(gc, &cfg, nn_net_num_params(gn), &go)) {
        check(0, "seed CNN", "setup: %s / %s", nn_ctx_error(cc), nn_ctx_error(gc));
        goto out;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 42, 0);
    nn_net_init_params(cn, &rng);
    const size_t np = nn_net_num_params(cn), per = 28 * 28;
    nn_ctx_upload(gc, nn_net_params(gn), nn_net_params(cn), np * sizeof(float));
    float *x = fvec((size_t)batch * per);
    int32_t y[64];
    double worst = 0.0;
    for (int s = 0; s < steps; s++) {
        /* images with a class-dependent mean, so the loss falls */
        for (int i = 0; i < batch; i++) {
            y[i] = (int32_t)nn_rng_below(&rng, 10);
            for (size_t j = 0; j < per; j++)
                x[i * per + j] = nn_rng_uniform(&rng) - 0.5f + 0.1f * (float)y[i] *
                                 (j % 10 == (size_t)y[i] ? 1.0f : 0.0f);
        }
        float lc, lg;
        nn_net_zero_grad(cn);
        nn_net_zero_grad(gn);
        if (nn_net_forward(cn, x, y, batch, &lc) || nn_net_forward(gn, x, y, batch, &lg) ||
            nn_net_backward(cn) || nn_net_backward(gn)) {
            check(0, "seed CNN", "step %d: %s / %s", s, nn_ctx_error(cc), nn_ctx_error(gc));
            break;
        }
        nn_optim_step(co, cc, nn_net_params(cn), nn_net_grads(cn));
        nn_optim_step(go, gc, nn_net_params(gn), nn_net_grads(gn));
        const double d = fabs((double)lc - lg) / fabs((double)lc);
        if (d > worst) worst = d;
        printf("  seed CNN step %d: loss cpu %.7f, cuda %.7f (relative %.2g)\n", s + 1,
               (double)lc, (double)lg, d);
    }
    check(worst <= LOSS_TOL, "seed CNN: SGD losses on CPU and CUDA", "worst relative %.3g",
          worst);
    compare(gc, nn_net_params(cn), nn_net_params(gn), np, 1e-3, "seed CNN: weights after SGD");
    free(x);
out:
    nn_optim_free(co);
    nn_optim_free(go);
    nn_net_free(cn);
    nn_net_free(gn);
    nn_ctx_free(cc);
    nn_ctx_free(gc);
}

int main(void) {
    char why[256];
    if (!nn_backend_cuda(0, why, sizeof why)) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    printf("convolutions: %s\n", nn_cudnn_available()
                                      ? "cuDNN"
                                      : "im2col + cuBLAS (no cuDNN, or NNOPT_CUDA_CONV=im2col)");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int fuse = 1; fuse >= 0; fuse--) run_case(&cases[i], fuse);
    test_optimizers();
    test_clip();
    test_seed_cnn();
    return test_summary();
}

#else /* !NN_HAVE_CUDA */

int main(void) {
    printf("SKIP: built without CUDA (no CUDA device to test)\n");
    return 77;
}

#endif
