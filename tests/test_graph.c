/*
 * test_graph.c - graphs that are not plain stacks: a layer read by several
 * later layers (skip connections) and `add` joining two branches. The
 * gradient of a fan-out node is the sum of its consumers' contributions; it is
 * checked against central differences of the loss along random directions in
 * parameter space (double-precision sums of float losses), and the graph
 * rules (shapes at an add, in= lists) are checked for clear errors. The
 * plan's shared gradient memory is checked against the lives of the
 * gradients it holds.
 */
#include "test_util.h"
#include "core/graph.h"
#include "backend/backend.h"

#include <math.h>
#include <string.h>

/* residual block: c1's activation feeds both c2 and the add, and the second
 * add reads the same layer twice. Smooth activations for finite differences
 * (ReLU kinks make them converge only linearly in eps). */
static const char *const RESIDUAL =
    "input shape=2x6x6\n"
    "conv2d name=c1 out=4 kernel=3 pad=1\n"
    "silu name=r1\n"
    "conv2d name=c2 out=4 kernel=3 pad=1\n"
    "add name=sum in=c2,r1\n"
    "tanh\n"
    "flatten name=fl\n"
    "linear name=fc out=5\n"
    "add name=twice in=fc,fc\n"
    "softmax_ce\n";

static double loss_at(nn_net *net, const float *x, const int32_t *y, int n) {
    float l;
    if (nn_net_forward(net, x, y, n, &l)) return NAN;
    return l;
}

static void directional_check(nn_ctx *ctx, const char *what) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, RESIDUAL, "res.nn", &net);
    check(st == NN_OK, "residual model parses", "%s", ctx_err(ctx, st));
    if (st) return;
    const int n = 5;
    nn_net_plan(net, n);
    nn_rng rng;
    nn_rng_seed(&rng, 7, 3);
    nn_net_init_params(net, &rng);
    float x[5 * 72];
    int32_t y[5];
    for (int i = 0; i < 5 * 72; i++) x[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < n; i++) y[i] = (int32_t)nn_rng_below(&rng, 5);
    float l;
    nn_net_zero_grad(net);
    nn_net_forward(net, x, y, n, &l);
    nn_net_backward(net);
    const size_t np = nn_net_num_params(net);
    float *p = nn_net_params(net), *g = xmalloc(np * sizeof(float)), *p0 = xmalloc(np * sizeof(float));
    memcpy(g, nn_net_grads(net), np * sizeof(float));
    memcpy(p0, p, np * sizeof(float));
    double worst = 0.0;
    for (int trial = 0; trial < 4; trial++) {
        float *v = xmalloc(np * sizeof(float));
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
        memcpy(p, p0, np * sizeof(float));
        double fd = (lp - lm) / (2 * eps);
        double rel = fabs(fd - gv) / fmax(1e-3, fabs(gv));
        if (rel > worst) worst = rel;
        free(v);
    }
    check(worst < 5e-3, what, "worst relative difference %.3g", worst);
    /* the second add doubles the logits: its two identical inputs both count */
    nn_layer_info li;
    nn_net_layer_info(net, 4, &li);
    check(strcmp(li.op, "add") == 0 && shape_is(&li.out, 3, 4, 6, 6, 0), "add keeps its inputs' shape",
          "op %s", li.op);
    free(g);
    free(p0);
    nn_net_free(net);
}

/* Gradients of one run of text on fixed data, into g (num_params floats). */
static size_t grads_of(nn_ctx *ctx, const char *text, float **g) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, text, "alias.nn", &net)) return 0;
    nn_net_plan(net, 4);
    nn_rng rng;
    nn_rng_seed(&rng, 11, 5);
    nn_net_init_params(net, &rng);
    float x[4 * 72];
    int32_t y[4] = {0, 3, 1, 4};
    for (int i = 0; i < 4 * 72; i++) x[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;
    float l;
    nn_net_zero_grad(net);
    nn_net_forward(net, x, y, 4, &l);
    nn_net_backward(net);
    size_t np = nn_net_num_params(net);
    *g = xmalloc(np * sizeof(float));
    memcpy(*g, nn_net_grads(net), np * sizeof(float));
    nn_net_free(net);
    return np;
}

/* A ReLU fused into the conv before it shares that conv's memory; when the
 * ReLU is read by two layers, both gradients must add up there. The same
 * network with leaky_relu slope=0 (the same function, never fused) must give
 * the same gradients. */
static void relu_alias_check(nn_ctx *ctx) {
    const char *fmt = "input shape=2x6x6\nconv2d name=c1 out=4 kernel=3 pad=1\n%s name=r1%s\n"
                      "conv2d name=c2 out=4 kernel=3 pad=1\nadd name=sum in=c2,r1\nrelu\n"
                      "flatten\nlinear name=fc out=5\nsoftmax_ce\n";
    char fused[512], plain[512];
    snprintf(fused, sizeof fused, fmt, "relu", "");
    snprintf(plain, sizeof plain, fmt, "leaky_relu", " slope=0");
    float *ga = NULL, *gb = NULL;
    size_t na = grads_of(ctx, fused, &ga), nb = grads_of(ctx, plain, &gb);
    double worst = na == nb && na ? 0.0 : 1.0;
    for (size_t i = 0; na == nb && i < na; i++) {
        double d = fabs((double)ga[i] - gb[i]) / (1e-3 + fabs((double)gb[i]));
        if (d > worst) worst = d;
    }
    check(na && worst < 1e-4, "fused ReLU read by two layers: same gradients as unfused",
          "%zu vs %zu params, worst relative difference %.3g", na, nb, worst);
    free(ga);
    free(gb);
}

/* Activation gradients share memory only when their lives in the backward
 * pass do not overlap. Node r's kernel runs at step L - r (L the loss node);
 * r's gradient is first written by its latest consumer (through aliases), or
 * zeroed before the pass (step -1) when several kernels add into it, unless
 * that latest consumer writes it in place (dx_direct, then no other kernel
 * may), and last read at step L - r. And some memory is shared on every
 * model tried. */
static int root_of(const nn_net *net, int j) {
    while (net->nodes[j].alias_of >= 0) j = net->nodes[j].alias_of;
    return j;
}

static void gradient_sharing_check(nn_ctx *ctx, const char *what, const char *path,
                                   const char *text) {
    nn_net *net = NULL;
    nn_status st = path ? nn_net_load(ctx, path, &net) : nn_net_parse(ctx, text, "g.nn", &net);
    check(st == NN_OK, "model for the gradient-sharing check parses", "%s", ctx_err(ctx, st));
    if (st) return;
    const int batch = 8;
    nn_net_plan(net, batch);
    const int N = net->num_nodes, L = net->loss_node;
    int *start = xmalloc((size_t)N * sizeof *start), *end = xmalloc((size_t)N * sizeof *end);
    int bad = 0, shared = 0;
    int *latest = xmalloc((size_t)N * sizeof *latest), *in_place = xmalloc((size_t)N * sizeof *in_place);
    for (int r = 0; r < N; r++) start[r] = N + 1, end[r] = L - r, latest[r] = -1, in_place[r] = 0;
    for (int k = 1; k <= L; k++)
        for (int m = 0; m < net->nodes[k].num_inputs; m++) {
            const int r = root_of(net, net->nodes[k].inputs[m]);
            if (net->nodes[k].alias_of < 0 && L - k < start[r]) start[r] = L - k, latest[r] = k;
            if (net->nodes[k].dx_direct >> m & 1u) in_place[r]++;
        }
    for (int r = 0; r < N; r++) {
        if (net->nodes[r].grad_writers < 2) continue;
        int by_latest = 0; /* the one in-place writer must be the latest consumer */
        for (int m = 0; latest[r] >= 0 && m < net->nodes[latest[r]].num_inputs; m++)
            by_latest |= (net->nodes[latest[r]].dx_direct >> m & 1u) &&
                         root_of(net, net->nodes[latest[r]].inputs[m]) == r;
        const int ok = in_place[r] == 0 || (in_place[r] == 1 && by_latest);
        if (!ok) bad++;
        if (in_place[r] == 0) start[r] = -1;
    }
    for (int i = 0; i < N; i++) {
        const nn_node *a = &net->nodes[i];
        if (a->op == NN_OP_INPUT || a->alias_of >= 0 || i == L) continue;
        const size_t na = (size_t)batch * (size_t)nn_shape_numel(&a->out);
        for (int j = i + 1; j < N; j++) {
            const nn_node *b = &net->nodes[j];
            if (b->op == NN_OP_INPUT || b->alias_of >= 0 || j == L) continue;
            const size_t nb = (size_t)batch * (size_t)nn_shape_numel(&b->out);
            if (a->dy + na <= b->dy || b->dy + nb <= a->dy) continue; /* disjoint */
            shared++;
            /* the same memory: one life must end before the other starts */
            if (!(end[i] < start[j] || end[j] < start[i])) bad++;
        }
    }
    check(bad == 0 && shared > 0, what, "%d overlapping pairs, %d with overlapping lives", shared,
          bad);
    free(start), free(end), free(latest), free(in_place);
    nn_net_free(net);
}

static void expect_bad(nn_ctx *ctx, const char *what, const char *text, const char *word) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "g.nn", &net);
    check(st != NN_OK && contains(nn_ctx_error(ctx), "g.nn:") && contains(nn_ctx_error(ctx), word),
          what, "status %d: %s", (int)st, nn_ctx_error(ctx));
    nn_net_free(net);
}

/* Pipeline stages in one process (src/train/pipeline.c's building blocks):
 * the net cut in two by nn_net_stage_cuts, two micro-batches of 4 run stage
 * by stage on their own activation slots (both forwards, then the backwards
 * in reverse), the loss gradient scaled by 1/2: the parameter gradients and
 * the mean loss are those of one pass over the 8 samples. */
static void stage_check(nn_ctx *ctx, const char *what, const char *text) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "stages.nn", &net);
    check(st == NN_OK, what, "parse: %s", ctx_err(ctx, st));
    if (st) return;
    if (!net->ctx->backend || !net->ctx->backend->host_visible) {
        nn_net_free(net);
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 7, 1);
    nn_net_plan(net, 8);
    nn_net_init_params(net, &rng);
    const nn_shape in = nn_net_input_shape(net);
    const size_t per = (size_t)nn_shape_numel(&in), np = nn_net_num_params(net);
    float *x = fvec(8 * per), *ref = fvec(np);
    int32_t y[8];
    fill(x, 8 * per, &rng, -1.0f, 1.0f);
    for (int i = 0; i < 8; i++) y[i] = (int32_t)nn_rng_below(&rng, (uint32_t)nn_net_num_classes(net));
    float full;
    nn_net_zero_grad(net);
    st = nn_net_forward(net, x, y, 8, &full);
    if (!st) st = nn_net_backward(net);
    memcpy(ref, nn_net_grads(net), np * sizeof(float));

    int last[2];
    const int cut_ok = nn_net_stage_cuts(net, 2, NULL, last);
    const int c = last[0], L = net->loss_node;
    int crossing = 0; /* a later node reading a node before the cut */
    for (int j = c + 1; cut_ok && j <= L; j++)
        for (int k = 0; k < net->nodes[j].num_inputs; k++) crossing |= net->nodes[j].inputs[k] < c;
    check(cut_ok && last[1] == L && c >= 1 && c < L && !crossing, what,
          "cut after node %d of %d (valid %d, crossing %d)", c, L, cut_ok, crossing);
    float loss[2] = {0, 0};
    if (!st) st = nn_net_plan_slots(net, 4, 2);
    nn_net_zero_grad(net);
    for (int m = 0; m < 2 && !st; m++) {
        nn_net_use_slot(net, m);
        st = nn_net_forward_range(net, x + (size_t)m * 4 * per, NULL, 4, 0, c, NULL);
        if (!st) st = nn_net_forward_range(net, NULL, y + 4 * m, 4, c + 1, L, &loss[m]);
    }
    for (int m = 1; m >= 0 && !st; m--) {
        nn_net_use_slot(net, m);
        nn_net_backward_range(net, NULL, c + 1, L, 4, y + 4 * m, 0.5f);
        nn_net_backward_range(net, x + (size_t)m * 4 * per, 0, c, 4, NULL, 1.0f);
    }
    nn_net_use_slot(net, 0);
    double worst = 0.0, big = 0.0;
    const float *g = nn_net_grads(net);
    for (size_t i = 0; i < np; i++) big = fmax(big, fabs(ref[i]));
    for (size_t i = 0; i < np; i++) worst = fmax(worst, fabs(g[i] - ref[i]) / (big > 0 ? big : 1));
    const double dl = fabs(0.5 * (loss[0] + loss[1]) - full) / fabs(full);
    check(st == NN_OK && worst < 1e-5 && dl < 1e-6, what,
          "%s; gradients differ by %.2g of the largest, mean loss by %.2g", ctx_err(ctx, st),
          worst, dl);
    free(x), free(ref);
    nn_net_free(net);
}

/* Pipeline cuts never fall between a convolution and the batch norm whose
 * statistics its forward writes (stats_to: the batch norm's stage would
 * never get them): with as many stages as there are cuts, every valid cut
 * is taken. */
static void stats_cut_check(nn_ctx *ctx) {
    const char *text = "input shape=16x8x8\nconv2d name=c1 out=16 kernel=3 pad=1 bias=0\n"
                       "batchnorm name=b1\nrelu\nconv2d name=c2 out=16 kernel=3 pad=1 bias=0\n"
                       "batchnorm name=b2\nrelu\ngap\nlinear out=3\nsoftmax_ce\n";
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "cuts.nn", &net);
    if (!st) st = nn_net_plan(net, 4);
    int fused = 0, bad = 0, most = 0, last[16];
    for (int i = 0; !st && i < net->num_nodes; i++) fused += net->nodes[i].stats_to >= 0;
    for (int K = 2; !st && K <= 16 && nn_net_stage_cuts(net, K, NULL, last); K++) {
        most = K;
        for (int s = 0; s < K - 1; s++) bad += net->nodes[last[s]].stats_to > last[s];
    }
    check(!st && most >= 2 && bad == 0 && (fused == 2 || nn_ctx_isa(ctx) < NN_ISA_AVX512),
          "pipeline cuts keep a batch norm on its statistics' producer's stage",
          "%s; %d fused, up to %d stages, %d cuts between them", ctx_err(ctx, st), fused, most,
          bad);
    nn_net_free(net);
}

int main(void) {
    nn_ctx *c1 = test_ctx_new(1), *c2 = test_ctx_new(2);
    directional_check(c1, "fan-out and add: gradient matches finite differences (1 thread)");
    directional_check(c2, "fan-out and add: gradient matches finite differences (2 threads)");
    relu_alias_check(c1);
    relu_alias_check(c2);
    stage_check(c1, "2 stages x 2 micro-batches on slots = one pass: residual", RESIDUAL);
    stage_check(c2, "2 stages x 2 micro-batches on slots = one pass: seed CNN", SEED_MODEL);
    stats_cut_check(c2);
    gradient_sharing_check(c1, "gradient memory shared only between disjoint lives: residual",
                           NULL, RESIDUAL);
    gradient_sharing_check(c1, "gradient memory shared only between disjoint lives: resnet20",
                           NN_SOURCE_DIR "/models/resnet20.nn", NULL);
    gradient_sharing_check(c1, "gradient memory shared only between disjoint lives: conv_heavy",
                           NN_SOURCE_DIR "/models/conv_heavy.nn", NULL);
    const char *hdr = "input shape=1x4x4\nconv2d name=a out=2 kernel=3 pad=1\n"
                      "conv2d name=b out=3 kernel=3 pad=1\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%sadd in=a,b\nflatten\nlinear out=2\nsoftmax_ce\n", hdr);
    expect_bad(c1, "add of different shapes names both", buf, "2x4x4 and 3x4x4");
    snprintf(buf, sizeof buf, "%sadd\nflatten\nlinear out=2\nsoftmax_ce\n", hdr);
    expect_bad(c1, "add without in= asks for two inputs", buf, "in=A,B");
    snprintf(buf, sizeof buf, "%sadd in=a,a,a,a,a,a,a,a,a\nflatten\nlinear out=2\nsoftmax_ce\n",
             hdr);
    expect_bad(c1, "add with more than NN_MAX_INPUTS (8) inputs", buf, "names more");
    snprintf(buf, sizeof buf, "%sadd in=a,zz\nflatten\nlinear out=2\nsoftmax_ce\n", hdr);
    expect_bad(c1, "add naming an unknown layer", buf, "'zz' names no earlier layer");
    snprintf(buf, sizeof buf, "%srelu in=a,b\nflatten\nlinear out=2\nsoftmax_ce\n", hdr);
    expect_bad(c1, "two inputs to a one-input layer", buf, "takes 1 input");
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    return test_summary();
}
