/*
 * test_blocks.c - blocks in model files (block/end, use, repeat, $parameters):
 * the layers they expand to, that the expanded text builds the same graph,
 * that a block model trains exactly like its hand-written twin, and that
 * every malformed block is refused with file:line and the problem.
 */
#include "nnopt.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

/* A residual block used twice, with a stride parameter and a projection. */
static const char *const BLOCK_MODEL =
    "block res C S=1\n"                                        /* 1 */
    "conv2d name=conv out=$C kernel=3 pad=1 stride=$S\n"       /* 2 */
    "relu name=act\n"                                          /* 3 */
    "conv2d name=proj in=$in out=$C kernel=1 stride=$S\n"      /* 4 */
    "add name=sum in=act,proj\n"                               /* 5 */
    "end\n"                                                    /* 6 */
    "input shape=2x8x8\n"                                      /* 7 */
    "use res name=b1 C=4\n"                                    /* 8 */
    "repeat 2 res name=s C=6 S=2\n"                            /* 9 */
    "flatten\nlinear name=fc out=3\nsoftmax_ce\n";

/* The same network written out by hand. */
static const char *const FLAT_MODEL =
    "input shape=2x8x8\n"
    "conv2d name=b1_conv out=4 kernel=3 pad=1 stride=1\n"
    "relu name=b1_act\n"
    "conv2d name=b1_proj in=input out=4 kernel=1 stride=1\n"
    "add name=b1_sum in=b1_act,b1_proj\n"
    "conv2d name=s_0_conv out=6 kernel=3 pad=1 stride=2\n"
    "relu name=s_0_act\n"
    "conv2d name=s_0_proj in=b1_sum out=6 kernel=1 stride=2\n"
    "add name=s_0_sum in=s_0_act,s_0_proj\n"
    "conv2d name=s_1_conv out=6 kernel=3 pad=1 stride=2\n"
    "relu name=s_1_act\n"
    "conv2d name=s_1_proj in=s_0_sum out=6 kernel=1 stride=2\n"
    "add name=s_1_sum in=s_1_act,s_1_proj\n"
    "flatten\nlinear name=fc out=3\nsoftmax_ce\n";

static nn_net *parse(nn_ctx *ctx, const char *text, const char *what) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "test.nn", &net);
    check(st == NN_OK, what, "%s", ctx_err(ctx, st));
    return st == NN_OK ? net : NULL;
}

/* Same layers (name, type, shape) and parameter tensors in the same order. */
static int same_graph(const nn_net *a, const nn_net *b, char *why, size_t size) {
    if (nn_net_num_layers(a) != nn_net_num_layers(b)) {
        snprintf(why, size, "%d vs %d layers", nn_net_num_layers(a), nn_net_num_layers(b));
        return 0;
    }
    for (int i = 0; i < nn_net_num_layers(a); i++) {
        nn_layer_info x, y;
        nn_net_layer_info(a, i, &x);
        nn_net_layer_info(b, i, &y);
        if (strcmp(x.name, y.name) || strcmp(x.op, y.op) || x.out.ndim != y.out.ndim ||
            memcmp(x.out.dim, y.out.dim, sizeof x.out.dim) || x.params != y.params) {
            snprintf(why, size, "layer %d: %s %s vs %s %s", i, x.name, x.op, y.name, y.op);
            return 0;
        }
    }
    if (nn_net_num_param_tensors(a) != nn_net_num_param_tensors(b)) {
        snprintf(why, size, "parameter tensor counts differ");
        return 0;
    }
    for (int i = 0; i < nn_net_num_param_tensors(a); i++)
        if (strcmp(nn_net_param_info(a, i)->name, nn_net_param_info(b, i)->name)) {
            snprintf(why, size, "parameter %d: %s vs %s", i, nn_net_param_info(a, i)->name,
                     nn_net_param_info(b, i)->name);
            return 0;
        }
    snprintf(why, size, "same");
    return 1;
}

static void test_expansion(nn_ctx *ctx) {
    nn_net *blocks = parse(ctx, BLOCK_MODEL, "block model parses");
    nn_net *flat = parse(ctx, FLAT_MODEL, "hand-written twin parses");
    if (!blocks || !flat) return;
    char why[400];
    check(same_graph(blocks, flat, why, sizeof why), "blocks expand to the hand-written graph", "%s",
          why);
    nn_net *again = parse(ctx, nn_net_model_text(blocks), "expanded text parses");
    if (again) {
        check(same_graph(blocks, again, why, sizeof why), "expanded text builds the same graph",
              "%s", why);
        check(strcmp(nn_net_model_text(blocks), nn_net_model_text(again)) == 0,
              "expanding the expanded text changes nothing", "%s", nn_net_model_text(again));
        nn_net_free(again);
    }
    /* the stride parameter reached the repeated instances: 8 -> 4 -> 2 */
    int i = nn_net_num_layers(blocks) - 4; /* s_1_sum */
    nn_layer_info li;
    nn_net_layer_info(blocks, i, &li);
    check(strcmp(li.name, "s_1_sum") == 0 && li.out.dim[1] == 2 && li.out.dim[2] == 2,
          "repeat chains instances with the stride", "%s %lldx%lld", li.name,
          (long long)li.out.dim[1], (long long)li.out.dim[2]);

    /* same initial weights and one SGD step give identical parameters */
    nn_net *nets[2] = {blocks, flat};
    float *params[2];
    nn_rng rng;
    const int n = 4;
    float *x = fvec((size_t)n * 2 * 8 * 8);
    int32_t labels[4] = {0, 1, 2, 1};
    nn_rng_seed(&rng, 7, 0);
    fill(x, (size_t)n * 128, &rng, -1.0f, 1.0f);
    for (int k = 0; k < 2; k++) {
        nn_rng_seed(&rng, 3, 0);
        nn_net_init_params(nets[k], &rng);
        nn_status st = nn_net_plan(nets[k], n);
        float loss;
        if (!st) st = nn_net_forward(nets[k], x, labels, n, &loss);
        if (!st) st = nn_net_backward(nets[k]);
        check(st == NN_OK, "block and flat models run a step", "%s", ctx_err(ctx, st));
        params[k] = nn_net_grads(nets[k]);
    }
    size_t np = nn_net_num_params(blocks);
    check(np == nn_net_num_params(flat) && memcmp(params[0], params[1], np * sizeof(float)) == 0 &&
              memcmp(nn_net_params(blocks), nn_net_params(flat), np * sizeof(float)) == 0,
          "block model and its twin: identical weights and gradients", "%zu parameters", np);
    free(x);
    nn_net_free(blocks);
    nn_net_free(flat);
}

/* Nested blocks, default instance names, an outside layer passed as a
 * parameter, in= on a use line, and default inputs. */
static void test_nesting(nn_ctx *ctx) {
    const char *text = "block unit W\n"
                       "conv2d name=c out=$W kernel=1\n"
                       "end\n"
                       "block pair W skip\n"
                       "use unit name=u W=$W\n"
                       "use unit name=v W=$W\n"
                       "concat name=cat in=v_c,$skip\n"
                       "end\n"
                       "input shape=3x4x4\n"
                       "relu name=r0\n"
                       "use pair name=p W=2 skip=r0\n"
                       "use pair name=q W=5 skip=p_cat in=r0\n"
                       "use unit W=1\n"
                       "use unit W=1\n"
                       "flatten\nlinear out=2\nsoftmax_ce\n";
    const char *want = "input shape=3x4x4\n"
                       "relu name=r0\n"
                       "conv2d name=p_u_c out=2 kernel=1 in=r0\n"
                       "conv2d name=p_v_c out=2 kernel=1 in=p_u_c\n"
                       "concat name=p_cat in=p_v_c,r0\n"
                       "conv2d name=q_u_c out=5 kernel=1 in=r0\n"
                       "conv2d name=q_v_c out=5 kernel=1 in=q_u_c\n"
                       "concat name=q_cat in=q_v_c,p_cat\n"
                       "conv2d name=unit1_c out=1 kernel=1 in=q_cat\n"
                       "conv2d name=unit2_c out=1 kernel=1 in=unit1_c\n"
                       "flatten\nlinear out=2\nsoftmax_ce\n";
    nn_net *net = parse(ctx, text, "nested blocks parse");
    if (!net) return;
    check(strcmp(nn_net_model_text(net), want) == 0,
          "nested instances, default names, a layer passed as a parameter, in= on use", "%s",
          nn_net_model_text(net));
    nn_net_free(net);
}

typedef struct {
    const char *what;
    const char *text;
    int line;
    const char *word;
} bad_block;

#define TAIL "flatten\nlinear out=3\nsoftmax_ce\n"
#define BLK "block b C\nconv2d name=c out=$C kernel=1\nend\n" /* lines 1-3 */

static const bad_block BAD[] = {
    {"block without end", "block b C\nconv2d out=$C kernel=1\ninput shape=1x4x4\n" TAIL, 1,
     "no 'end'"},
    {"end without block", "input shape=1x4x4\nend\n" TAIL, 2, "without an open block"},
    {"block inside a block", "block a\nblock b\nrelu\nend\nend\n", 2, "nested"},
    {"empty block", "block b\nend\ninput shape=1x4x4\n" TAIL, 1, "empty"},
    {"words after end", "block b\nrelu\nend now\n", 3, "end"},
    {"block named like a layer type", "block relu\nrelu\nend\n", 1, "keyword"},
    {"block defined twice", BLK "block b\nrelu\nend\n", 4, "already defined"},
    {"bad block name", "block 9b\nrelu\nend\n", 1, "block name"},
    {"bad parameter name", "block b 9C\nrelu\nend\n", 1, "parameter name"},
    {"parameter called name", "block b name\nrelu\nend\n", 1, "cannot be a parameter"},
    {"parameter twice", "block b C C\nrelu\nend\n", 1, "twice"},
    {"use of an unknown block", "input shape=1x4x4\nuse nosuch C=2\n" TAIL, 2, "no block named"},
    {"use before the definition", "input shape=1x4x4\nuse b C=2\n" BLK TAIL, 2, "no block named"},
    {"missing parameter", BLK "input shape=1x4x4\nuse b\n" TAIL, 5, "needs C="},
    {"unknown parameter", BLK "input shape=1x4x4\nuse b C=2 D=3\n" TAIL, 5, "no parameter 'D'"},
    {"parameter given twice", BLK "input shape=1x4x4\nuse b C=2 C=3\n" TAIL, 5, "twice"},
    {"undefined $parameter in a body", "block b C\nconv2d out=$D kernel=1\nend\n"
     "input shape=1x4x4\nuse b C=2\n" TAIL, 2, "no parameter $D"},
    {"$parameter outside a block", "input shape=1x4x4\nconv2d out=$C kernel=1\n" TAIL, 2,
     "only be used inside a block or after a 'params"},
    {"model parameter without a default", "params C\ninput shape=1x4x4\n" TAIL, 1,
     "needs a default"},
    {"two params lines", "params C=1\nparams D=2\ninput shape=1x4x4\n" TAIL, 2,
     "second 'params' line"},
    {"params inside a block", "block b\nparams C=1\nend\ninput shape=1x4x4\nuse b\n" TAIL, 2,
     "top level"},
    {"undeclared model parameter", "params C=1\ninput shape=1x4x4\nconv2d out=$D kernel=1\n"
     TAIL, 3, "no parameter $D"},
    {"bad parameter value names the body line and the use", BLK "input shape=1x4x4\nuse b C=x\n"
     TAIL, 2, "used at line 5"},
    {"repeat count zero", BLK "input shape=1x4x4\nrepeat 0 b C=2\n" TAIL, 5, "repeat count"},
    {"repeat count not a number", BLK "input shape=1x4x4\nrepeat many b C=2\n" TAIL, 5,
     "repeat count"},
    {"repeat count too large", BLK "input shape=1x4x4\nrepeat 10001 b C=2\n" TAIL, 5,
     "repeat count"},
    {"block using itself", "block b\nrelu\nuse b\nend\ninput shape=1x4x4\nuse b\n" TAIL, 3,
     "deeper"},
    {"local name unknown in the block", "block b\nrelu name=r\nadd in=r,outside\nend\n"
     "input shape=1x4x4\nrelu name=outside\nuse b\n" TAIL, 3, "b1_outside"},
    {"use with an unknown in=", BLK "input shape=1x4x4\nuse b C=2 in=nosuch\n" TAIL, 5,
     "names no earlier layer"},
    {"instance names clash", BLK "input shape=1x4x4\nuse b name=x C=2\nuse b name=x C=2\n" TAIL,
     2, "already used"},
    {"use without a block name", "input shape=1x4x4\nuse\n" TAIL, 2, "use BLOCK"},
    {"bad instance name", BLK "input shape=1x4x4\nuse b name=a-b C=2\n" TAIL, 5,
     "instance name"},
};

static void test_bad_blocks(nn_ctx *ctx) {
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        nn_net *net = NULL;
        nn_ctx_clear_error(ctx);
        nn_status st = nn_net_parse(ctx, BAD[i].text, "test.nn", &net);
        const char *msg = nn_ctx_error(ctx);
        char where[32], name[160];
        snprintf(where, sizeof where, "test.nn:%d:", BAD[i].line);
        snprintf(name, sizeof name, "bad block: %s", BAD[i].what);
        check(st != NN_OK && !net && contains(msg, where) && contains(msg, BAD[i].word) &&
                  !strchr(msg, '\n'),
              name, "wants '%s' and '%s': %s", where, BAD[i].word, msg);
        nn_net_free(net);
    }
    /* a doubling nest of repeats stops at the layer limit instead of
     * exhausting memory */
    char text[1024] = "block a0\nrelu\nend\n";
    for (int k = 1; k <= 9; k++) {
        char def[96];
        snprintf(def, sizeof def, "block a%d\nrepeat 10 a%d\nend\n", k, k - 1);
        strcat(text, def);
    }
    strcat(text, "input shape=1x4x4\nuse a9\n" TAIL);
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, text, "test.nn", &net);
    check(st != NN_OK && !net && contains(nn_ctx_error(ctx), "more than 10000 layers"),
          "exponential repeats stop at the layer limit", "%s", nn_ctx_error(ctx));
    nn_net_free(net);
}

/* A model's own parameters: 'params' defaults, overrides from the caller
 * (nn_net_parse_with, the structure search's way in), and the overrides that
 * are refused. A block name may itself be a parameter. */
static void test_model_params(nn_ctx *ctx) {
    static const char *const TEXT =
        "params W=4 DEPTH=1 KIND=plain\n"
        "block plain C\nconv2d name=c out=$C kernel=3 pad=1\nrelu name=r\nend\n"
        "block res C\nconv2d name=c out=$C kernel=3 pad=1\nadd name=a in=c,$in\nrelu name=r\nend\n"
        "input shape=1x6x6\nconv2d name=stem out=$W kernel=1\nrepeat $DEPTH $KIND name=b C=$W\n"
        "flatten\nlinear name=fc out=3\nsoftmax_ce\n";
    nn_net *net = parse(ctx, TEXT, "model parameters: the defaults");
    if (net) {
        check(nn_net_num_layers(net) == 7 && nn_net_find_param(net, "b_0_c.weight") >= 0 &&
                  nn_net_param_info(net, nn_net_find_param(net, "stem.weight"))->shape.dim[0] == 4,
              "model parameters: defaults expand (W=4, one plain block)", "%d layers",
              nn_net_num_layers(net));
        nn_net_free(net);
    }
    const char *set[] = {"W=8", "DEPTH=3", "KIND=res"};
    nn_status st = nn_net_parse_with(ctx, TEXT, "test.nn", set, 3, &net);
    check(st == NN_OK, "model parameters: overrides parse", "%s", ctx_err(ctx, st));
    if (!st) {
        check(nn_net_num_layers(net) == 1 + 1 + 3 * 3 + 3 &&
                  nn_net_find_param(net, "b_2_c.weight") >= 0 &&
                  nn_net_param_info(net, nn_net_find_param(net, "stem.weight"))->shape.dim[0] == 8,
              "model parameters: W=8 DEPTH=3 KIND=res give three residual blocks of 8", "%d layers",
              nn_net_num_layers(net));
        nn_net_free(net);
    }
    struct { const char *set, *word; } bad[] = {
        {"X=1", "no parameter 'X'"}, {"W", "not NAME=VALUE"}, {"W=", "not NAME=VALUE"},
        {"W=1 2", "one plain word"}, {"W=$DEPTH", "one plain word"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        net = NULL;
        nn_ctx_clear_error(ctx);
        st = nn_net_parse_with(ctx, TEXT, "test.nn", &bad[i].set, 1, &net);
        check(st != NN_OK && !net && contains(nn_ctx_error(ctx), bad[i].word) &&
                  contains(nn_ctx_error(ctx), "test.nn"),
              "model parameters: a bad override is refused naming the file", "'%s': %s", bad[i].set,
              nn_ctx_error(ctx));
        nn_net_free(net);
    }
    const char *any[] = {"W=2"};
    st = nn_net_parse_with(ctx, "input shape=1x4x4\n" TAIL, "test.nn", any, 1, &net);
    check(st != NN_OK && contains(nn_ctx_error(ctx), "declares none"),
          "model parameters: overrides for a model without a 'params' line are refused", "%s",
          nn_ctx_error(ctx));
}

/* models/resnet20.nn: 19 convolutions, the names of PyTorch's CIFAR ResNets
 * with _ for ., and 272,186 parameters. */
static void test_resnet20(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_load(ctx, NN_SOURCE_DIR "/models/resnet20.nn", &net);
    check(st == NN_OK, "models/resnet20.nn loads", "%s", ctx_err(ctx, st));
    if (st) return;
    int convs = 0;
    for (int i = 0; i < nn_net_num_layers(net); i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        convs += strcmp(li.op, "conv2d") == 0;
    }
    check(convs == 21 && nn_net_num_params(net) == 272186 &&
              nn_net_find_param(net, "layer3_block_1_conv2.weight") >= 0 &&
              nn_net_find_param(net, "layer2_down_proj.weight") >= 0,
          "resnet20: 19 3x3 convolutions + 2 projections, 272,186 parameters", "%d convs, %zu",
          convs, nn_net_num_params(net));
    nn_net_free(net);
}

int main(void) {
    nn_ctx *ctx = test_ctx_new(1);
    if (!ctx) return 2;
    test_expansion(ctx);
    test_nesting(ctx);
    test_bad_blocks(ctx);
    test_resnet20(ctx);
    test_model_params(ctx);
    nn_ctx_free(ctx);
    return test_summary();
}
