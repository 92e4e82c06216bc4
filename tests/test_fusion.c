/*
 * test_fusion.c - epilogue fusion (nn_ctx_set_fusion): a ReLU after a
 * convolution, a linear layer, a batch norm or a residual add runs inside
 * that layer's passes. Per pattern, the same model with fusion on and off
 * (the switch) must give the same bytes: losses over training steps, every
 * parameter and batch norm's running statistics; the eval-mode logits too,
 * except where eval mode folds a batch norm into the convolution before it
 * (scaled weights: the same within 1e-5 of the largest logit, and the fold
 * must happen with fusion on only). With fusion on the ReLU must really alias
 * its producer (no pass of its own), and a residual add after a batch norm
 * must run inside it, and a batch norm + ReLU before a depthwise convolution
 * (or, with AVX-512 or AVX2, a 1x1 one) must run in that convolution's
 * loads (its own output not written in training passes), the
 * convolution's backward summing each row of the batch norm's gradient for
 * it; with AVX-512 a Winograd convolution before a batch norm must sum its
 * statistics for it, and a depthwise, 1x1 or F(4x4) Winograd convolution
 * before one must form that batch norm's input gradient in its backward
 * (from the residual add's gradient where one is fused in). A 1x1 output
 * larger than the caches, stored past them, must equal the plain one.
 * Central-difference checks of the fused batch norm + ReLU's and batch norm
 * + add + ReLU's gradients guard the backward itself.
 */
#include "test_util.h"
#include "core/graph.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

/* a stem and two residual blocks of 16 channels, after an input line */
#define TWO_BLOCKS_16                                                                              \
    "conv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\nrelu name=r0\n"              \
    "conv2d name=c1 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"              \
    "conv2d name=c2 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b2\nadd name=a in=b2,r0\n"       \
    "relu name=r2\nconv2d name=c3 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b3\nrelu name=r3\n" \
    "conv2d name=c4 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b4\nadd name=a2 in=b4,r2\n"      \
    "relu name=r4\ngap\nlinear out=5\nsoftmax_ce\n"

static const struct {
    const char *name, *text;
    const char *fused;    /* the ReLU layer that must alias its producer */
    const char *absorbed; /* an add that must run inside the batch norm before it */
    const char *prologue; /* a convolution that must normalize the batch norm's input */
    const char *stats;    /* a batch norm whose statistics its convolution must sum
                             (Winograd F(4x4), direct, rows: checked with AVX-512;
                             phase, depthwise, 1x1: everywhere) */
    const char *forms;    /* a convolution whose backward must form its dy from the
                             batch norm after it (depthwise, 1x1; with a prologue, a
                             1x1 one with its own AVX-512 or AVX2 kernels; a first
                             layer's rows kernel, AVX2 and up; F(4x4) Winograd),
                             with a residual add fused into that batch norm or not */
    const char *writes;   /* a convolution that must write the output of the batch
                             norm it normalizes (F(4x4) Winograd, AVX-512), read by
                             later layers too (a block's add), with a residual add
                             fused into that batch norm or not */
} PATTERNS[] = {
    {"conv + batchnorm + relu",
     "input shape=2x8x8\nconv2d name=c out=6 kernel=3 pad=1 bias=0\nbatchnorm name=bn\n"
     "relu name=r\nflatten\nlinear out=4\nsoftmax_ce\n",
     "r", NULL, NULL, NULL, NULL, NULL},
    {"residual add + relu",
     "input shape=2x8x8\nconv2d name=c1 out=2 kernel=3 pad=1\nconv2d name=c2 out=2 kernel=3 pad=1\n"
     "add name=a in=c2,input\nrelu name=r\nflatten\nlinear out=4\nsoftmax_ce\n",
     "r", NULL, NULL, NULL, NULL, NULL},
    {"resnet block (bn + relu into Winograd, bn + add + relu; Winograd adds its input gradient)",
     "input shape=3x8x8\nconv2d name=c0 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b0\nrelu name=r0\n"
     "conv2d name=c1 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "conv2d name=c2 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b2\nadd name=a in=b2,r0\n"
     "relu name=r2\ngap\nlinear out=5\nsoftmax_ce\n",
     "r2", "a", "c2", "b1", "c2", "c1"},
    {"downsampling block (bn + add(skip first) + relu, projection bn)",
     "input shape=3x8x8\nconv2d name=c0 out=4 kernel=3 pad=1 bias=0\nbatchnorm name=b0\nrelu name=r0\n"
     "conv2d name=c1 out=6 kernel=3 stride=2 pad=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "conv2d name=c2 out=6 kernel=3 pad=1 bias=0\nbatchnorm name=b2\n"
     "conv2d name=p in=r0 out=6 kernel=1 stride=2 bias=0\nbatchnorm name=pb\n"
     "add name=a in=pb,b2\nrelu name=r2\ngap\nlinear out=5\nsoftmax_ce\n",
     "r2", "a", NULL, NULL, NULL, NULL},
    {"mobilenet blocks (bn + relu into depthwise, stride 1 and 2)",
     "input shape=2x8x8\nconv2d name=c0 out=4 kernel=3 pad=1 bias=0\nbatchnorm name=b0\nrelu name=r0\n"
     "conv2d name=d1 out=4 kernel=3 pad=1 groups=4 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "conv2d name=p1 out=6 kernel=1 bias=0\nbatchnorm name=b2\nrelu name=r2\n"
     "conv2d name=d2 out=6 kernel=3 pad=1 stride=2 groups=6 bias=0\nbatchnorm name=b3\n"
     "relu name=r3\ngap\nlinear out=5\nsoftmax_ce\n",
     "r3", NULL, "d2", "b3", "d1", NULL},
    {"bn + relu into a 1x1 convolution (its own AVX-512 or AVX2 GEMMs; 10x10: masked tails)",
     "input shape=2x10x10\nconv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=p1 out=8 kernel=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "gap\nlinear out=5\nsoftmax_ce\n",
     "r1", NULL, "p1", "b1", "p1", NULL},
    {"strided 1x1 convolution + bn + relu (the 1x1 kernel forms its dy, stride 2)",
     "input shape=2x8x8\nconv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=p out=8 kernel=1 stride=2 bias=0\nbatchnorm name=pb\n"
     "relu name=r1\ngap\nlinear out=5\nsoftmax_ce\n",
     "r1", NULL, NULL, NULL, "p", NULL},
    {"conv + relu, linear + relu",
     "input shape=1x8x8\nconv2d name=c out=4 kernel=3 pad=1\nrelu name=r\nmaxpool size=2\nflatten\n"
     "linear name=fc out=8\nrelu name=r2\nlinear out=3\nsoftmax_ce\n",
     "r2", NULL, NULL, NULL, NULL, NULL},
    {"mobilenet blocks, 20 wide (the vector loops of the rows and their tails)",
     "input shape=2x20x20\nconv2d name=c0 out=4 kernel=3 pad=1 bias=0\nbatchnorm name=b0\nrelu name=r0\n"
     "conv2d name=d1 out=4 kernel=3 pad=1 groups=4 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "conv2d name=p1 out=6 kernel=1 bias=0\nbatchnorm name=b2\nrelu name=r2\n"
     "conv2d name=d2 out=6 kernel=3 pad=1 stride=2 groups=6 bias=0\nbatchnorm name=b3\n"
     "relu name=r3\ngap\nlinear out=5\nsoftmax_ce\n",
     "r3", NULL, "d2", NULL, "d1", NULL},
    /* ResNet-20's stem and downsampling block: statistics from the rows
     * kernel (one input channel) and from the direct one (stride 2), image
     * by image */
    {"stem + downsampling block (rows kernel's statistics, and its dy formed)",
     "input shape=1x28x28\nconv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=c1 out=32 kernel=3 stride=2 pad=1 bias=0\nbatchnorm name=b1\n"
     "relu name=r1\nconv2d name=c2 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b2\n"
     "conv2d name=p in=r0 out=32 kernel=1 stride=2 bias=0\nbatchnorm name=pb\n"
     "add name=a in=pb,b2\nrelu name=r2\ngap\nlinear out=5\nsoftmax_ce\n",
     "r2", "a", "c2", "b0", "c0", NULL},
    {"stem + downsampling block (direct or phase kernel's statistics, stride 2)",
     "input shape=1x28x28\nconv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=c1 out=32 kernel=3 stride=2 pad=1 bias=0\nbatchnorm name=b1\n"
     "relu name=r1\nconv2d name=c2 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b2\n"
     "conv2d name=p in=r0 out=32 kernel=1 stride=2 bias=0\nbatchnorm name=pb\n"
     "add name=a in=pb,b2\nrelu name=r2\ngap\nlinear out=5\nsoftmax_ce\n",
     "r2", "a", "c2", "b1", "p", NULL},
    /* 128 channels: groups of one vector (5 tile rows, 3 per image) by the
     * L2 alone on every machine, so whole_images must round them */
    {"resnet block 12 wide, 128 channels (Winograd's groups rounded to whole images)",
     "input shape=3x12x12\nconv2d name=c0 out=128 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=c1 out=128 kernel=3 pad=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
     "conv2d name=c2 out=128 kernel=3 pad=1 bias=0\nbatchnorm name=b2\nadd name=a in=b2,r0\n"
     "relu name=r2\ngap\nlinear out=5\nsoftmax_ce\n",
     "r2", "a", "c2", "b2", "c2", "c1"},
    /* 16 x 112 x 112 floats per image: at batch 6, 4.8 MB per tensor, more
     * than two cores' L2 caches, so the batch norm passes (the normalizing
     * one with the add and the ReLU, the backward's g and dx) store past the
     * caches (batchnorm.c's stream_rows) */
    {"resnet block 112 wide (batch norm passes with streamed stores)",
     "input shape=1x112x112\nconv2d name=c0 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
     "relu name=r0\nconv2d name=c1 out=16 kernel=3 pad=1 bias=0\nbatchnorm name=b1\n"
     "add name=a in=b1,r0\nrelu name=r1\ngap\nlinear out=5\nsoftmax_ce\n",
     "r1", "a", NULL, NULL, NULL, NULL},
    /* two blocks: the second's first convolution writes the first's batch
     * norm + add + ReLU output (which the second block's add reads) and
     * runs its sums pass, and the first block's does the stem's; 28 wide
     * rows alone in their registers, 7 wide rows packed side by side
     * (conv2d_winograd4.c) */
    {"two resnet blocks 28 wide (the next block writes the residual batch norm's output)",
     "input shape=1x28x28\n" TWO_BLOCKS_16, "r4", "a2", "c4", "b3", "c4", "c3"},
    {"two resnet blocks 7 wide (the next block writes the residual batch norm's output)",
     "input shape=16x7x7\n" TWO_BLOCKS_16, "r4", "a2", "c4", "b3", "c4", "c3"},
};

/* not 0: the ISA run sets after planning (test_written_fallback) */
static nn_isa isa_after_plan;

/* Trains a copy of text for 5 SGD steps on fixed batches; the losses, the
 * final parameters and buffers and the eval logits go into out (owned by the
 * caller). Returns the number of floats, 0 on error. */
static size_t run(nn_ctx *ctx, const char *text, int fuse, const char *fused, const char *absorbed,
                  const char *prologue, const char *stats, const char *forms,
                  const char *writes, int *aliased, int *folded, size_t *logits_at,
                  float **out) {
    nn_ctx_set_fusion(ctx, fuse);
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "fusion.nn", &net);
    if (st) return 0;
    const int n = 6;
    if (nn_net_plan(net, n)) return 0;
    if (isa_after_plan && nn_ctx_set_isa(ctx, isa_after_plan)) return 0;
    *aliased = 0;
    int r = nn_model_find_layer(net, fused);
    if (r >= 0) *aliased = net->nodes[r].alias_of >= 0;
    if (absorbed) { /* the add and the ReLU both run inside the batch norm */
        const int a = nn_model_find_layer(net, absorbed);
        const int j = a >= 0 ? net->nodes[a].alias_of : -1;
        *aliased = *aliased && j >= 0 && net->nodes[j].op == NN_OP_BATCHNORM &&
                   net->nodes[j].d.bn.residual && net->nodes[j].d.bn.relu;
    }
    const int a = prologue ? nn_model_find_layer(net, prologue) : -1;
    /* a 1x1 convolution takes a prologue with its own AVX-512 or AVX2
     * kernels only, a dense 3x3 one through Winograd (AVX2 and up: not
     * NNOPT_ISA=generic) */
    if (a >= 0 && net->nodes[a].d.conv.R == 1 && nn_ctx_isa(ctx) < NN_ISA_AVX2) prologue = NULL;
    if (a >= 0 && net->nodes[a].d.conv.R == 3 && net->nodes[a].d.conv.groups <= 1 &&
        nn_ctx_isa(ctx) < NN_ISA_AVX2)
        prologue = NULL;
    if (prologue) { /* the convolution normalizes its batch norm's input */
        const int p = a >= 0 ? net->nodes[a].prologue_from : -1;
        *aliased = *aliased && p >= 0 && net->nodes[p].d.bn.out_virtual;
        /* a depthwise or 1x1 reader also sums the rows of the batch norm's
         * gradient for it (give_grad_sums), and so does a Winograd one where
         * it runs F(4x4) (AVX-512) */
        if (a >= 0 && p >= 0) {
            const nn_conv2d_desc *d = &net->nodes[a].d.conv;
            *aliased = *aliased && net->nodes[p].d.bn.sums_by_reader ==
                                       (d->groups > 1 || d->R == 1 ||
                                        nn_conv2d_winograd_stats_in_cache(d, ctx));
        }
    }
    int s = stats ? nn_model_find_layer(net, stats) : -1;
    /* below AVX-512 the direct kernels are not there: of these patterns'
     * producers the phase (stride 2), depthwise and 1x1 kernels sum them */
    if (s >= 0 && nn_ctx_isa(ctx) < NN_ISA_AVX512) {
        const char *k = nn_conv2d_kernel_name(&net->nodes[net->nodes[s].inputs[0]].d.conv, ctx);
        if (strcmp(k, "phase") && strcmp(k, "depthwise") && strcmp(k, "pointwise")) s = -1;
    }
    if (s >= 0) /* its statistics come from the convolution before it */
        *aliased = *aliased && net->nodes[s].d.bn.stats_by_producer &&
                   net->nodes[net->nodes[s].inputs[0]].stats_to == s;
    int f = forms ? nn_model_find_layer(net, forms) : -1;
    /* the depthwise and 1x1 kernels form dy (a strided 1x1 layer runs im2col
     * below AVX2); with a prologue, only the own AVX-512 or AVX2 1x1 ones */
    if (f >= 0 && nn_ctx_isa(ctx) < NN_ISA_AVX2 && net->nodes[f].d.conv.groups <= 1 &&
        (net->nodes[f].prologue_from >= 0 ||
         strcmp(nn_conv2d_kernel_name(&net->nodes[f].d.conv, ctx), "pointwise") != 0))
        f = -1; /* (a first layer's rows kernel too: AVX2 and up) */
    /* a dense 3x3 one through F(4x4) Winograd only (AVX-512; AVX2 at some widths) */
    if (f >= 0 && strcmp(nn_conv2d_kernel_name(&net->nodes[f].d.conv, ctx), "winograd") == 0 &&
        !nn_conv2d_winograd4_ok(&net->nodes[f].d.conv, ctx))
        f = -1;
    if (f >= 0) /* planned: its backward forms the batch norm's input gradient */
        *aliased = *aliased && net->nodes[f].dy_from >= 0 &&
                   net->nodes[net->nodes[f].dy_from].inputs[0] == f;
    const int wr = writes ? nn_model_find_layer(net, writes) : -1;
    if (wr >= 0 && nn_conv2d_winograd_writes_input(&net->nodes[wr].d.conv, ctx)) {
        /* planned: it writes the batch norm's output, which has other readers */
        const int p = net->nodes[wr].writes_from;
        *aliased = *aliased && p >= 0 && net->nodes[p].d.bn.out_by_reader &&
                   !net->nodes[p].d.bn.out_virtual;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 42, 0);
    nn_net_init_params(net, &rng);
    nn_shape in = nn_net_input_shape(net);
    const size_t per = (size_t)nn_shape_numel(&in);
    float *x = fvec((size_t)n * per);
    int32_t y[6];
    fill(x, (size_t)n * per, &rng, -1, 1);
    for (int i = 0; i < n; i++) y[i] = (int32_t)nn_rng_below(&rng, (uint32_t)nn_net_num_classes(net));
    nn_optim_config oc = nn_optim_defaults(NN_OPTIM_SGD);
    oc.lr = 0.1f;
    oc.momentum = 0.9f;
    nn_optimizer *opt = NULL;
    const size_t np = nn_net_num_params(net), nb = nn_net_num_buffers(net);
    const int classes = nn_net_num_classes(net);
    size_t total = 5 + np + nb + (size_t)n * classes, k = 0;
    float *o = fvec(total);
    if (nn_optim_new(ctx, &oc, np, &opt)) total = 0;
    for (int s = 0; total && s < 5; s++) {
        float loss;
        nn_net_zero_grad(net);
        if (nn_net_forward(net, x, y, n, &loss) || nn_net_backward(net)) total = 0;
        nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
        o[k++] = loss;
    }
    if (f >= 0 && net->nodes[f].dy_from >= 0) { /* and the batch norm did leave it to it */
        const nn_node *bn = &net->nodes[net->nodes[f].dy_from];
        nn_bn_dx dx;
        float *left = tu_download(ctx, nn_op_def_get(bn->op)->deferred_dx(bn, &dx), 1);
        *aliased = *aliased && left && left[0] != 0.0f;
        free(left);
    }
    if (total) {
        float *p = tu_download(ctx, nn_net_params(net), np);
        memcpy(o + k, p, np * sizeof(float));
        free(p);
        k += np;
        if (nb) {
            float *b = tu_download(ctx, nn_net_buffers(net), nb);
            memcpy(o + k, b, nb * sizeof(float));
            free(b);
            k += nb;
        }
        nn_net_set_training(net, 0);
        if (nn_net_forward(net, x, NULL, n, NULL)) total = 0;
        *folded = net->folded_pass;
        *logits_at = k;
        float *z = total ? tu_download(ctx, nn_net_logits(net), (size_t)n * classes) : NULL;
        if (z) memcpy(o + k, z, (size_t)n * classes * sizeof(float));
        free(z);
    }
    nn_optim_free(opt);
    nn_net_free(net);
    free(x);
    *out = o;
    return total;
}

static void test_patterns(nn_ctx *ctx) {
    for (size_t p = 0; p < sizeof PATTERNS / sizeof PATTERNS[0]; p++) {
        float *on = NULL, *off = NULL;
        int aliased_on = 0, aliased_off = 0, folded_on = 0, folded_off = 0;
        size_t at_on = 0, at_off = 0;
        size_t a = run(ctx, PATTERNS[p].text, 1, PATTERNS[p].fused, PATTERNS[p].absorbed,
                       PATTERNS[p].prologue, PATTERNS[p].stats, PATTERNS[p].forms,
                       PATTERNS[p].writes, &aliased_on,
                       &folded_on, &at_on, &on);
        size_t b = run(ctx, PATTERNS[p].text, 0, PATTERNS[p].fused, PATTERNS[p].absorbed,
                       PATTERNS[p].prologue, PATTERNS[p].stats, PATTERNS[p].forms,
                       PATTERNS[p].writes, &aliased_off,
                       &folded_off, &at_off, &off);
        char name[300];
        snprintf(name, sizeof name,
                 "%s: the ReLU%s runs inside its producer%s%s%s%s with fusion on only",
                 PATTERNS[p].name, PATTERNS[p].absorbed ? " and the add" : "",
                 PATTERNS[p].prologue ? " and the batch norm in the convolution's loads" : "",
                 PATTERNS[p].stats ? ", its statistics in the convolution's epilogue" : "",
                 PATTERNS[p].forms ? ", its input gradient in the convolution's backward" : "",
                 PATTERNS[p].writes ? ", its output written by the next convolution" : "");
        check(a && aliased_on && !aliased_off, name, "%s", ctx_err(ctx, NN_OK));
        const int has_bn = contains(PATTERNS[p].text, "batchnorm");
        snprintf(name, sizeof name, "%s: eval mode folds batch norm into the convolution%s",
                 PATTERNS[p].name, has_bn ? " with fusion on only" : ": nothing to fold");
        check(folded_on == has_bn && !folded_off, name, "folded with fusion on %d, off %d",
              folded_on, folded_off);
        snprintf(name, sizeof name,
                 "%s: fused and unfused give the same bytes (5 steps' losses, parameters, "
                 "buffers%s)", PATTERNS[p].name, folded_on ? "" : ", eval logits");
        const size_t bytes_end = folded_on ? at_on : a;
        size_t diff = a && a == b && at_on == at_off ? 0 : 1;
        for (size_t i = 0; !diff && i < bytes_end; i++)
            diff += memcmp(&on[i], &off[i], sizeof(float)) != 0;
        check(a && a == b && diff == 0, name, "%zu of %zu floats differ", diff, bytes_end);
        if (folded_on && a == b) {
            double worst = 0, big = 0;
            for (size_t i = at_on; i < a; i++) big = fmax(big, fabs(off[i]));
            for (size_t i = at_on; i < a; i++) worst = fmax(worst, fabs(on[i] - off[i]));
            snprintf(name, sizeof name, "%s: eval logits with batch norm folded = unfolded (1e-5 of "
                     "the largest)", PATTERNS[p].name);
            check(worst <= 1e-5 * fmax(big, 1e-6), name, "largest difference %.3g, largest logit %.3g",
                  worst, big);
        }
        free(on);
        free(off);
    }
    nn_ctx_set_fusion(ctx, 1);
}

/* The fused batch norm + ReLU's gradient against central differences of the
 * loss along a random direction (smooth away from ReLU's kink: inputs are
 * kept off it by the random draw). */
static void test_gradient(nn_ctx *ctx, int pattern) {
    nn_ctx_set_fusion(ctx, 1);
    nn_net *net = NULL;
    char name[200];
    nn_status st = nn_net_parse(ctx, PATTERNS[pattern].text, "fusion.nn", &net);
    if (st || nn_net_plan(net, 4)) {
        check(0, "fused pattern's gradient: the model builds", "%s", ctx_err(ctx, st));
        nn_net_free(net);
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 7, 0);
    nn_net_init_params(net, &rng);
    const nn_shape in = nn_net_input_shape(net);
    const size_t np = nn_net_num_params(net), per = (size_t)nn_shape_numel(&in);
    float *x = fvec(4 * per), *dir = fvec(np);
    int32_t y[4] = {0, 1, 2, 3};
    fill(x, 4 * per, &rng, -1, 1);
    fill(dir, np, &rng, -1, 1);
    float loss;
    nn_net_zero_grad(net);
    st = nn_net_forward(net, x, y, 4, &loss);
    if (!st) st = nn_net_backward(net);
    float *g = tu_download(ctx, nn_net_grads(net), np), *p0 = tu_download(ctx, nn_net_params(net), np);
    double analytic = 0;
    for (size_t i = 0; i < np; i++) analytic += (double)g[i] * dir[i];
    const double eps = 1e-4;
    double lp = 0, lm = 0;
    float *p = fvec(np);
    for (int sgn = 1; sgn >= -1; sgn -= 2) {
        for (size_t i = 0; i < np; i++) p[i] = (float)(p0[i] + sgn * eps * dir[i]);
        nn_ctx_upload(ctx, nn_net_params(net), p, np * sizeof(float));
        float l = 0;
        if (nn_net_forward(net, x, y, 4, &l)) st = NN_EINVAL;
        *(sgn > 0 ? &lp : &lm) = l;
    }
    const double numeric = (lp - lm) / (2 * eps);
    snprintf(name, sizeof name,
             "%s, fused: gradient along a random direction matches central differences",
             PATTERNS[pattern].name);
    check(!st && fabs(numeric - analytic) <= 2e-2 * fmax(1e-3, fabs(analytic)), name,
          "analytic %.6g, numeric %.6g", analytic, numeric);
    free(x), free(dir), free(g), free(p0), free(p);
    nn_net_free(net);
}

/* The depthwise prologue's portable loop (NNOPT_ISA=generic) against the
 * unfused portable run: the same bytes. */
static void test_prologue_generic(nn_ctx *ctx) {
    const nn_isa isa = nn_ctx_isa(ctx);
    if (isa == NN_ISA_GENERIC || nn_ctx_set_isa(ctx, NN_ISA_GENERIC)) return; /* tested above */
    const int p = 4;
    float *on = NULL, *off = NULL;
    int al_on = 0, al_off = 0, f_on = 0, f_off = 0;
    size_t at_on = 0, at_off = 0;
    size_t a = run(ctx, PATTERNS[p].text, 1, PATTERNS[p].fused, NULL, PATTERNS[p].prologue, NULL,
                   PATTERNS[p].forms, NULL, &al_on, &f_on, &at_on, &on);
    size_t b = run(ctx, PATTERNS[p].text, 0, PATTERNS[p].fused, NULL, PATTERNS[p].prologue, NULL,
                   PATTERNS[p].forms, NULL, &al_off, &f_off, &at_off, &off);
    size_t diff = a && a == b && at_on == at_off ? 0 : 1;
    for (size_t i = 0; !diff && i < at_on; i++) diff += memcmp(&on[i], &off[i], sizeof(float)) != 0;
    check(a && al_on && !al_off && diff == 0,
          "mobilenet blocks, portable loops: the prologue gives the unfused bytes (5 steps' "
          "losses, parameters, buffers)", "%zu differ", diff);
    free(on), free(off);
    nn_ctx_set_isa(ctx, isa);
    nn_ctx_set_fusion(ctx, 1);
}

/* A net planned on AVX-512, where the next block's Winograd convolutions
 * write the residual batch norms' outputs and run their sums passes, then
 * run on AVX2, whose kernels do not write (the convolution runs the batch
 * norm's pass itself first, conv2d_fwd), and on the portable loops, where
 * no kernel runs the sums either (conv2d_bwd runs that pass after dx):
 * fused and unfused give the same bytes. */
static void test_written_fallback(nn_ctx *ctx) {
    const nn_isa isa = nn_ctx_isa(ctx);
    if (isa < NN_ISA_AVX512) return; /* nothing planned to write */
    /* 12 wide: F(2x2) on AVX2 (tile rows of 3), whose backward runs no
     * batch norm sums: conv2d_bwd's pass after dx */
    const char *names[3] = {"two resnet blocks 28", "two resnet blocks 28", "resnet block 12"};
    const nn_isa after[3] = {NN_ISA_AVX2, NN_ISA_GENERIC, NN_ISA_AVX2};
    for (int k = 0; k < 3; k++) {
        size_t p = 0;
        while (!strstr(PATTERNS[p].name, names[k])) p++;
        isa_after_plan = after[k];
        float *on = NULL, *off = NULL;
        int al_on = 0, al_off = 0, f_on = 0, f_off = 0;
        size_t at_on = 0, at_off = 0;
        size_t a = run(ctx, PATTERNS[p].text, 1, PATTERNS[p].fused, NULL, NULL, NULL, NULL, NULL,
                       &al_on, &f_on, &at_on, &on);
        nn_ctx_set_isa(ctx, isa);
        size_t b = run(ctx, PATTERNS[p].text, 0, PATTERNS[p].fused, NULL, NULL, NULL, NULL, NULL,
                       &al_off, &f_off, &at_off, &off);
        isa_after_plan = 0;
        nn_ctx_set_isa(ctx, isa);
        size_t diff = a && a == b && at_on == at_off ? 0 : 1;
        for (size_t i = 0; !diff && i < at_on; i++)
            diff += memcmp(&on[i], &off[i], sizeof(float)) != 0;
        char name[200];
        snprintf(name, sizeof name,
                 "%s planned on AVX-512, run on %s: the batch norms' outputs written first, "
                 "the unfused bytes (5 steps' losses, parameters, buffers)",
                 names[k], after[k] == NN_ISA_AVX2 ? "AVX2" : "the portable loops");
        check(a && al_on && !al_off && diff == 0, name, "%zu differ", diff);
        free(on), free(off);
    }
    nn_ctx_set_fusion(ctx, 1);
}

/* bf16 convolutions: the 1x1 layer runs im2col in bf16, which normalizes no
 * input, so its batch norm must not be planned as its prologue (it had been,
 * before the plan applied the precision: the batch norm wrote no output and
 * the first step's loss was NaN); fused and unfused then give the same
 * bytes. A net built in fp32 and planned in bf16 is refused with a message,
 * not run on a batch norm's unwritten output. */
static void test_bf16_prologue(nn_ctx *ctx) {
    /* 32 input channels: C R S >= 32, so the 1x1 layer is bf16 */
    static const char text[] =
        "input shape=2x10x10\nconv2d name=c0 out=32 kernel=3 pad=1 bias=0\nbatchnorm name=b0\n"
        "relu name=r0\nconv2d name=p1 out=8 kernel=1 bias=0\nbatchnorm name=b1\nrelu name=r1\n"
        "gap\nlinear out=5\nsoftmax_ce\n";
    nn_ctx_set_precision(ctx, NN_PRECISION_BF16);
    float *on = NULL, *off = NULL;
    int al_on = 0, al_off = 0, f_on = 0, f_off = 0;
    size_t at_on = 0, at_off = 0;
    size_t a = run(ctx, text, 1, "r1", NULL, NULL, NULL, NULL, NULL, &al_on, &f_on, &at_on, &on);
    size_t b = run(ctx, text, 0, "r1", NULL, NULL, NULL, NULL, NULL, &al_off, &f_off, &at_off, &off);
    size_t diff = a && a == b && at_on == at_off ? 0 : 1;
    int finite = a != 0;
    for (size_t i = 0; !diff && i < at_on; i++) {
        diff += memcmp(&on[i], &off[i], sizeof(float)) != 0;
        finite &= isfinite(on[i]) != 0;
    }
    check(a && al_on && !al_off && finite && diff == 0,
          "bn + relu before a bf16 1x1 convolution: no prologue planned, finite, fused == unfused "
          "bytes", "%zu differ, finite: %s", diff, finite ? "yes" : "no");
    free(on), free(off);
    /* built in fp32 (the prologue planned), planned in bf16: refused */
    nn_ctx_set_fusion(ctx, 1);
    nn_ctx_set_precision(ctx, NN_PRECISION_FP32);
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "fusion.nn", &net);
    const int planned = !st && net->nodes[nn_model_find_layer(net, "p1")].prologue_from >= 0;
    nn_ctx_set_precision(ctx, NN_PRECISION_BF16);
    nn_status st2 = st ? st : nn_net_plan(net, 6);
    check(!planned || (st2 == NN_EINVAL && strstr(nn_ctx_error(ctx), "layer 'p1'") &&
                       strstr(nn_ctx_error(ctx), "precision")),
          "a net built in fp32 with a prologue, planned in bf16: a clear error",
          "prologue planned: %d, status %d: %s", planned, (int)st2, nn_ctx_error(ctx));
    nn_net_free(net);
    nn_ctx_set_precision(ctx, NN_PRECISION_FP32);
}

/* A 1x1 convolution whose output is larger than the threads' L2 caches,
 * with no bias nor ReLU, stores it past the caches 8 rows at a time and
 * takes the batch norm's row statistics from its band (the own AVX-512
 * kernel's forward_streamed); with a zero bias it runs the plain path. Both
 * must give the same output and statistics (-0 and +0 alike: the bias adds
 * 0), 64-byte-aligned rows (28 x 28) and rows that share lines (14 x 14). */
static void test_streamed_pointwise(nn_ctx *ctx, int side, int C, int K, int n) {
    nn_conv2d_desc d = {0};
    d.C = C, d.H = d.W = side, d.K = K, d.R = d.S = 1, d.P = d.Q = side;
    d.stride_h = d.stride_w = 1;
    const size_t PQ = (size_t)side * side, xs = (size_t)C * PQ, ys = (size_t)K * PQ;
    const size_t rows = (size_t)n * K;
    float *x = fvec(n * xs), *w = fvec((size_t)K * C), *b = fvec(K);
    float *y1 = fvec(n * ys + 16), *y0 = fvec(n * ys);
    float *ws = fvec(nn_conv2d_workspace(&d, nn_ctx_threads(ctx)) + 16);
    double *st1 = xmalloc(2 * rows * sizeof(double)), *st0 = xmalloc(2 * rows * sizeof(double));
    nn_rng rng;
    nn_rng_seed(&rng, 3, 0);
    fill(x, n * xs, &rng, -1, 1);
    fill(w, (size_t)K * C, &rng, -0.5f, 0.5f);
    memset(b, 0, K * sizeof(float));
    /* y1 at an offset of 4 floats: no row starts on a line (the head and
     * tail stores) */
    nn_conv2d_forward_pointwise_mapped(y1 + 4, x, NULL, st1, w, NULL, &d, n, ws, ctx);
    nn_conv2d_forward_pointwise_mapped(y0, x, NULL, NULL, w, b, &d, n, ws, ctx);
    for (int i = 0; i < n; i++)
        nn_batchnorm_row_stats(y0 + i * ys, K, (int)PQ, st0 + 2 * (size_t)i * K, ctx);
    size_t diff = 0;
    for (size_t i = 0; i < n * ys; i++) diff += y1[4 + i] != y0[i];
    for (size_t i = 0; i < 2 * rows; i++) diff += memcmp(&st1[i], &st0[i], sizeof(double)) != 0;
    char name[200];
    snprintf(name, sizeof name,
             "1x1 convolution %dx%d, %d -> %d channels, batch %d (%.1f MB out): streamed output "
             "and statistics = plain", side, side, C, K, n, n * ys * 4.0 / 1e6);
    check(diff == 0, name, "%zu values differ", diff);
    free(x), free(w), free(b), free(y1), free(y0), free(ws), free(st1), free(st0);
}

/* NN_PREFETCH_AUTO (the default): the depthwise and max-pool layers' forward
 * and backward each try the prefetch on and off in the first training steps
 * and then keep a pick; other layers try nothing, nor does any layer under a
 * forced mode; and every mode trains to the same bytes. */
static void test_prefetch_trials(nn_ctx *ctx) {
    static const char text[] =
        "input shape=2x12x12\nconv2d name=c0 out=4 kernel=3 pad=1\n"
        "conv2d name=d1 out=4 kernel=3 pad=1 groups=4\nmaxpool name=m size=2\nflatten\n"
        "linear out=3\nsoftmax_ce\n";
    static const int modes[3] = {NN_PREFETCH_AUTO, 1, 0};
    const int n = 4, steps = 1 + 2 * NN_PREFETCH_TRIALS; /* the warm-up, the trials */
    float *first = NULL;
    size_t np = 0;
    int picked = 1, untried = 1, same = 1;
    for (int mi = 0; mi < 3; mi++) {
        nn_ctx_set_prefetch(ctx, modes[mi]);
        nn_net *net = NULL;
        if (nn_net_parse(ctx, text, "prefetch.nn", &net) || nn_net_plan(net, n)) {
            same = 0;
            nn_net_free(net);
            break;
        }
        nn_rng rng;
        nn_rng_seed(&rng, 7, 0);
        nn_net_init_params(net, &rng);
        np = nn_net_num_params(net);
        const size_t per = 2 * 12 * 12; /* the input shape's floats */
        float *x = fvec((size_t)n * per);
        fill(x, (size_t)n * per, &rng, -1, 1);
        const int32_t y[4] = {0, 1, 2, 1};
        for (int s = 0; s < steps; s++) {
            float loss;
            nn_net_zero_grad(net);
            if (nn_net_forward(net, x, y, n, &loss) || nn_net_backward(net)) same = 0;
        }
        for (int i = 0; i < net->num_nodes; i++) {
            const nn_node *node = &net->nodes[i];
            const int tries = mi == 0 && (i == nn_model_find_layer(net, "d1") ||
                                          i == nn_model_find_layer(net, "m"));
            for (int pass = 0; pass < 2; pass++) {
                const nn_prefetch_trial *t = &node->prefetch[pass];
                if (tries) picked &= t->pick == 0 || t->pick == 1;
                else untried &= t->pick == -1 && t->calls == 0;
            }
        }
        float *g = tu_download(ctx, nn_net_grads(net), np);
        if (!first) first = g;
        else {
            same &= g && memcmp(first, g, np * sizeof(float)) == 0;
            free(g);
        }
        free(x);
        nn_net_free(net);
    }
    check(picked, "prefetch auto: the depthwise and max-pool layers pick on or off, forward and "
                  "backward, after their trial steps", "not every trial ended in a pick");
    check(untried, "prefetch auto: other layers, and every layer under on or off, try nothing",
          "a layer tried");
    check(same, "prefetch auto, on and off: the same gradients, bit for bit", "they differ");
    free(first);
    nn_ctx_set_prefetch(ctx, NN_PREFETCH_AUTO);
}

/* The global average pooling after a batch norm + ReLU read by nothing else
 * (MobileNet-small's head) takes them as its prologue: fused, the batch norm
 * writes no output and the pooling sums its gradient's rows for it; the
 * bytes against the unfused run are test_patterns' (mobilenet blocks), and
 * with the portable loops test_prologue_generic's. */
static void test_gap_prologue(nn_ctx *ctx) {
    for (int fuse = 1; fuse >= 0; fuse--) {
        nn_ctx_set_fusion(ctx, fuse);
        nn_net *net = NULL;
        int gap = -1, bn = -1;
        if (!nn_net_parse(ctx, PATTERNS[4].text, "fusion.nn", &net) && !nn_net_plan(net, 6)) {
            bn = nn_model_find_layer(net, "b3");
            for (int i = 0; i < net->num_nodes; i++)
                if (net->nodes[i].op == NN_OP_GAP) gap = i;
        }
        const int from = gap >= 0 ? net->nodes[gap].prologue_from : -2;
        const int virt = bn >= 0 && net->nodes[bn].d.bn.out_virtual;
        const int sums = bn >= 0 && net->nodes[bn].d.bn.sums_by_reader;
        if (fuse)
            check(bn >= 0 && from == bn && virt && sums,
                  "fusion on: the pooling normalizes its batch norm's input and sums its "
                  "gradient's rows",
                  "prologue_from %d (batch norm %d), out_virtual %d, sums_by_reader %d", from, bn,
                  virt, sums);
        else
            check(bn >= 0 && from == -1 && !virt && !sums, "fusion off: no prologue in the pooling",
                  "prologue_from %d, out_virtual %d, sums_by_reader %d", from, virt, sums);
        nn_net_free(net);
    }
    nn_ctx_set_fusion(ctx, 1);
}

int main(void) {
    nn_ctx *ctx = test_ctx_new(2);
    if (!ctx) return 2;
    test_patterns(ctx);
    test_prologue_generic(ctx);
    test_written_fallback(ctx);
    test_gap_prologue(ctx);
    test_bf16_prologue(ctx);
    test_prefetch_trials(ctx);
    test_streamed_pointwise(ctx, 28, 32, 64, 24); /* 4.8 MB */
    test_streamed_pointwise(ctx, 14, 64, 128, 48); /* 4.8 MB */
    test_gradient(ctx, 0); /* batch norm + ReLU */
    test_gradient(ctx, 2); /* batch norm + residual add + ReLU */
    test_gradient(ctx, 4); /* batch norm + ReLU normalized by the depthwise convolutions */
    test_gradient(ctx, 5); /* ... by a 1x1 convolution (its own kernels: AVX-512 or AVX2) */
    /* (the downsampling block's fused gradient is checked against the
     * unfused one above, bytes; its central differences miss by 3% fused
     * and unfused alike: ReLU kinks within the step) */
    nn_ctx_free(ctx);
    return test_summary();
}
