/*
 * test_model.c - model files and the network built from them: the seed CNN's
 * parameters (names, shapes, offsets, count), layer info (shapes, FLOPs),
 * comments and blank lines; every kind of bad model file (each must fail with
 * a message naming test.nn:<line> and what is wrong); nn_net_load on missing
 * and malformed files; plan/forward/backward argument errors; the PyTorch
 * default init statistics; forward/backward of small graphs (fused and
 * unfused ReLU, flatten, in=) against the double
 * reference kernels composed layer by layer; and a model without parameters
 * (run in a child process, so a crash fails one check instead of the binary).
 * Exits non-zero if any check fails.
 */
#include "ops/ops.h"
#include "test_util.h"
#include "test_graph_ref.h"

#include <sys/wait.h>

/* ------------------------------------------------------------ the seed model */

static void test_seed_model(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx, SEED_MODEL, "test.nn", &net);
    check(st == NN_OK && net, "seed model parses", "%s", st ? nn_ctx_error(ctx) : "");
    if (st) return;

    /* conv1 16*1*9 + 16 = 160; conv2 32*16*9 + 32 = 4640;
     * fc1 1568*128 + 128 = 200832; fc2 128*10 + 10 = 1290 */
    check(nn_net_num_params(net) == 206922, "seed model has 206922 parameters", "got %zu",
          nn_net_num_params(net));

    static const struct {
        const char *name;
        int ndim;
        int64_t d[4];
        int fan_in, is_bias;
    } want[] = {
        {"conv1.weight", 4, {16, 1, 3, 3}, 9, 0},     {"conv1.bias", 1, {16}, 9, 1},
        {"conv2.weight", 4, {32, 16, 3, 3}, 144, 0},  {"conv2.bias", 1, {32}, 144, 1},
        {"fc1.weight", 2, {128, 1568}, 1568, 0},      {"fc1.bias", 1, {128}, 1568, 1},
        {"fc2.weight", 2, {10, 128}, 128, 0},         {"fc2.bias", 1, {10}, 128, 1},
    };
    int count = nn_net_num_param_tensors(net);
    check(count == 8, "seed model has 8 parameter tensors", "got %d", count);
    size_t offset = 0;
    for (int i = 0; i < 8 && i < count; i++) {
        const nn_param_info *p = nn_net_param_info(net, i);
        char got[64], name[160];
        nn_shape_str(&p->shape, got, sizeof got);
        snprintf(name, sizeof name, "parameter %d is %s", i, want[i].name);
        check(strcmp(p->name, want[i].name) == 0 &&
                  shape_is(&p->shape, want[i].ndim, want[i].d[0], want[i].d[1], want[i].d[2],
                           want[i].d[3]) &&
                  p->numel == (size_t)nn_shape_numel(&p->shape) && p->offset == offset &&
                  p->fan_in == want[i].fan_in && p->is_bias == want[i].is_bias &&
                  nn_net_find_param(net, want[i].name) == i,
              name, "%s %s offset %zu numel %zu fan_in %d", p->name, got, p->offset, p->numel,
              p->fan_in);
        offset += p->numel;
    }
    check(offset == nn_net_num_params(net) && nn_net_param_info(net, 8) == NULL &&
              nn_net_param_info(net, -1) == NULL && nn_net_find_param(net, "conv3.weight") == -1,
          "parameter tensors tile the flat buffer; out-of-range lookups give NULL / -1", NULL);

    /* per-sample output shapes and forward FLOPs (multiply-add = 2):
     *   conv1 2*16*28*28*1*9 = 225792     conv2 2*32*14*14*16*9 = 1806336
     *   fc1   2*1568*128     = 401408     fc2   2*128*10        = 2560 */
    static const struct {
        const char *name, *op;
        int ndim;
        int64_t d[3];
        int64_t params, flops; /* -1: not checked */
    } layers[] = {
        {"input", "input", 3, {1, 28, 28}, 0, -1},
        {"conv1", "conv2d", 3, {16, 28, 28}, 160, 225792},
        {NULL, "relu", 3, {16, 28, 28}, 0, -1},
        {NULL, "maxpool", 3, {16, 14, 14}, 0, -1},
        {"conv2", "conv2d", 3, {32, 14, 14}, 4640, 1806336},
        {NULL, "relu", 3, {32, 14, 14}, 0, -1},
        {NULL, "maxpool", 3, {32, 7, 7}, 0, -1},
        {NULL, "flatten", 1, {1568}, 0, -1},
        {"fc1", "linear", 1, {128}, 200832, 401408},
        {NULL, "relu", 1, {128}, 0, -1},
        {"fc2", "linear", 1, {10}, 1290, 2560},
        {NULL, "softmax_ce", 1, {10}, 0, -1},
    };
    const int nl = nn_net_num_layers(net);
    check(nl == 12, "seed model has 12 layers", "got %d", nl);
    int names_unique = 1;
    for (int i = 0; i < 12 && i < nl; i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        char got[64], name[160];
        nn_shape_str(&li.out, got, sizeof got);
        snprintf(name, sizeof name, "layer %d (%s %s): output shape, params%s", i, li.op, li.name,
                 layers[i].flops >= 0 ? ", FLOPs" : "");
        check(strcmp(li.op, layers[i].op) == 0 &&
                  (!layers[i].name || strcmp(li.name, layers[i].name) == 0) &&
                  shape_is(&li.out, layers[i].ndim, layers[i].d[0], layers[i].d[1],
                           layers[i].d[2], 0) &&
                  li.params == layers[i].params &&
                  (layers[i].flops < 0 || li.flops == layers[i].flops),
              name, "%s out %s params %lld flops %lld", li.op, got, (long long)li.params,
              (long long)li.flops);
        if (!li.name[0]) names_unique = 0;
        for (int j = 0; j < i; j++) {
            nn_layer_info lj;
            nn_net_layer_info(net, j, &lj);
            if (strcmp(li.name, lj.name) == 0) names_unique = 0;
        }
    }
    check(names_unique, "every layer has a distinct non-empty name (unnamed ones too)", NULL);
    {
        /* docs/model-format.md: default names are type + running number */
        static const char *const auto_names[12] = {
            "input", NULL, "relu1", "maxpool1", NULL, "relu2", "maxpool2", "flatten1", NULL,
            "relu3", NULL, "softmax_ce1"};
        int ok = nl == 12;
        char got[256] = "";
        for (int i = 0; ok && i < 12; i++) {
            nn_layer_info li;
            nn_net_layer_info(net, i, &li);
            if (auto_names[i] && strcmp(li.name, auto_names[i]) != 0) ok = 0;
            if (auto_names[i] && strlen(got) + strlen(li.name) + 2 < sizeof got)
                strcat(got, li.name), strcat(got, " ");
        }
        check(ok, "unnamed layers are named type + running number (relu1, maxpool2, ...)", "%s",
              got);
    }
    {
        nn_layer_info li;
        nn_net_layer_info(net, 1, &li);
        check(li.act_bytes == 16 * 28 * 28 * 4, "conv1 activation bytes per sample = 50176",
              "got %lld", (long long)li.act_bytes);
    }
    nn_shape in = nn_net_input_shape(net);
    check(shape_is(&in, 3, 1, 28, 28, 0) && nn_net_num_classes(net) == 10,
          "seed model input 1x28x28, 10 classes", "classes %d", nn_net_num_classes(net));

    /* the same model with comments, blank lines, indentation, tabs, CRLF and
     * the keys in another order gives the same network */
    const char *noisy = "# the seed CNN\r\n"
                        "\n"
                        "   \t \n"
                        "input shape=1x28x28   # MNIST-sized\n"
                        "\tconv2d pad=1 kernel=3 out=16 name=conv1\r\n"
                        "relu#fused\n"
                        "  maxpool size=2\n"
                        "# conv2d name=bogus out=1 kernel=1\n"
                        "conv2d name=conv2 out=32 kernel=3x3 pad=1x1 stride=1\n"
                        "relu\n"
                        "maxpool\tsize=2\n"
                        "flatten\n"
                        "\n"
                        "linear name=fc1 out=128 bias=1\n"
                        "relu\n"
                        "linear name=fc2 out=10\n"
                        "softmax_ce\n"
                        "# trailing comment, no newline at the end";
    nn_net *net2 = NULL;
    st = nn_net_parse(ctx, noisy, "test.nn", &net2);
    int same = st == NN_OK && nn_net_num_params(net2) == nn_net_num_params(net) &&
               nn_net_num_layers(net2) == nl && nn_net_num_param_tensors(net2) == count;
    for (int i = 0; same && i < count; i++) {
        const nn_param_info *a = nn_net_param_info(net, i), *b = nn_net_param_info(net2, i);
        same = strcmp(a->name, b->name) == 0 && a->offset == b->offset &&
               memcmp(&a->shape, &b->shape, sizeof a->shape) == 0;
    }
    for (int i = 0; same && i < nl; i++) {
        nn_layer_info a, b;
        nn_net_layer_info(net, i, &a);
        nn_net_layer_info(net2, i, &b);
        same = strcmp(a.op, b.op) == 0 && memcmp(&a.out, &b.out, sizeof a.out) == 0 &&
               a.flops == b.flops && a.params == b.params;
    }
    check(same, "comments, blank lines, tabs, CRLF and key order are ignored", "%s",
          st ? nn_ctx_error(ctx) : "");
    nn_net_free(net2);

    /* a trailing comment or missing final newline does not shift line numbers:
     * an error on line 3 of a CRLF file is reported as line 3 */
    st = nn_net_parse(ctx, "input shape=1x8x8\r\n# c\r\nconv2d out=2 kernal=3\r\n", "test.nn",
                      &net2);
    check(st != NN_OK && contains(nn_ctx_error(ctx), "test.nn:3:"),
          "CRLF file: error reported on the right line", "%s", nn_ctx_error(ctx));
    nn_net_free(net2);
    nn_net_free(net);
}

/* Unnamed layers with parameters: "conv2d1.weight", "linear2.bias". */
static void test_auto_param_names(nn_ctx *ctx) {
    nn_net *net = NULL;
    nn_status st = nn_net_parse(ctx,
                                "input shape=1x4x4\nconv2d out=2 kernel=3\nflatten\n"
                                "linear out=3 bias=0\nlinear out=2\nsoftmax_ce\n",
                                "test.nn", &net);
    static const char *const want[] = {"conv2d1.weight", "conv2d1.bias", "linear1.weight",
                                       "linear2.weight", "linear2.bias"};
    int ok = st == NN_OK && nn_net_num_param_tensors(net) == 5;
    for (int i = 0; ok && i < 5; i++) ok = strcmp(nn_net_param_info(net, i)->name, want[i]) == 0;
    check(ok, "unnamed layers' parameters: conv2d1.weight ... linear2.bias (bias=0: no bias)",
          "%s", st ? nn_ctx_error(ctx) : "");
    nn_net_free(net);
}

/* ------------------------------------------------------------ bad model files */

#define HDR "input shape=1x28x28\n"
#define TAIL "flatten\nlinear out=10\nsoftmax_ce\n"

typedef struct {
    const char *what;
    const char *text;
    int line;            /* 0: the message need not name a line */
    const char *word;    /* the message must contain this (case-insensitive) */
    const char *word2;   /* or this, when not NULL */
} bad_case;


static const bad_case BAD[] = {
    /* syntax */
    {"unknown layer type", HDR "conv3d out=4 kernel=3\n" TAIL, 2, "unknown layer type", NULL},
    {"unknown key", HDR "conv2d out=16 kernel=3 strde=2\n" TAIL, 2, "unknown key 'strde'", NULL},
    /* docs/model-format.md gives this very message for a misspelt key */
    {"misspelt required key (kernal)", HDR "conv2d out=16 kernal=3\n" TAIL, 2,
     "unknown key 'kernal'", NULL},
    {"key on a layer that takes none", HDR "relu out=3\n" TAIL, 2, "unknown key 'out'", NULL},
    {"missing required key out", HDR "conv2d kernel=3\n" TAIL, 2, "missing required key 'out'",
     NULL},
    {"missing required key size", HDR "maxpool stride=2\n" TAIL, 2, "'size'", NULL},
    {"missing required key (linear out)", HDR "flatten\nlinear bias=0\nsoftmax_ce\n", 3, "'out'",
     NULL},
    {"input without shape", "input\n" TAIL, 1, "shape", NULL},
    {"non-integer value", HDR "conv2d out=abc kernel=3\n" TAIL, 2, "integer", NULL},
    {"fractional value", HDR "conv2d out=3.5 kernel=3\n" TAIL, 2, "integer", NULL},
    {"value overflowing int", HDR "conv2d out=99999999999999 kernel=3\n" TAIL, 2, "integer",
     NULL},
    {"pair value with a trailing x", HDR "conv2d out=4 kernel=3x\n" TAIL, 2, "kernel", NULL},
    {"pair value with three parts", HDR "conv2d out=4 kernel=3x3x3\n" TAIL, 2, "kernel", NULL},
    {"word as stride", HDR "maxpool size=2 stride=two\n" TAIL, 2, "integer", NULL},
    {"key without =value", HDR "conv2d out\n" TAIL, 2, "key=value", NULL},
    {"=value without key", HDR "conv2d =3 out=4 kernel=3\n" TAIL, 2, "key=value", NULL},
    {"key= without value", HDR "conv2d out= kernel=3\n" TAIL, 2, "key=value", NULL},
    {"key given twice", HDR "conv2d out=4 out=5 kernel=3\n" TAIL, 2, "twice", NULL},
    {"more than 16 keys", HDR "relu a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8 i=9 j=10 k=11 l=12 m=13 n=14 "
                          "o=15 p=16 q=17\n" TAIL,
     2, "more than", NULL},
    /* names and wiring */
    {"duplicate layer name", HDR "conv2d name=c out=4 kernel=3\nrelu name=c\n" TAIL, 3,
     "already used", NULL},
    {"name clashing with the input", HDR "relu name=input\n" TAIL, 2, "already used", NULL},
    {"bad layer name", HDR "relu name=1abc\n" TAIL, 2, "name", NULL},
    {"bad layer name characters", HDR "relu name=a.b\n" TAIL, 2, "name", NULL},
    {"in= naming an unknown layer", HDR "relu in=nosuch\n" TAIL, 2, "nosuch", NULL},
    {"in= naming a later layer", HDR "relu in=later\nrelu name=later\n" TAIL, 2, "later", NULL},
    /* impossible shapes */
    {"kernel bigger than input", "input shape=1x4x4\nconv2d out=2 kernel=5\n" TAIL, 2, "larger",
     NULL},
    {"kernel taller than padded input", "input shape=1x4x9\nconv2d out=2 kernel=7x3 pad=1\n" TAIL,
     2, "larger", NULL},
    {"maxpool window larger than input", "input shape=1x3x3\nmaxpool size=4\n" TAIL, 2, "larger",
     NULL},
    {"maxpool pad more than half the window", "input shape=1x8x8\nmaxpool size=2 pad=2\n" TAIL, 2,
     "pad", NULL},
    {"linear on a 3-D input without flatten", HDR "linear out=10\nsoftmax_ce\n", 2, "flatten",
     NULL},
    {"conv2d on a flat input", "input shape=10\nconv2d out=2 kernel=1\n" TAIL, 2, "CxHxW", NULL},
    {"maxpool on a flat input", "input shape=10\nmaxpool size=1\n" TAIL, 2, "CxHxW", NULL},
    {"softmax_ce on a 3-D input", HDR "softmax_ce\n", 2, "flat", NULL},
    {"softmax_ce with one class", "input shape=4\nlinear out=1\nsoftmax_ce\n", 3, "2 classes",
     NULL},
    {"negative pad", HDR "conv2d out=4 kernel=3 pad=-1\n" TAIL, 2, "pad", NULL},
    {"negative maxpool pad", HDR "maxpool size=3 pad=-1\n" TAIL, 2, "pad", NULL},
    {"zero stride", HDR "conv2d out=4 kernel=3 stride=0\n" TAIL, 2, "stride", NULL},
    {"zero maxpool stride", HDR "maxpool size=2 stride=0\n" TAIL, 2, "stride", NULL},
    {"zero out channels", HDR "conv2d out=0 kernel=3\n" TAIL, 2, "out", NULL},
    {"zero kernel", HDR "conv2d out=4 kernel=0\n" TAIL, 2, "kernel", NULL},
    {"negative linear out", HDR "flatten\nlinear out=-3\nsoftmax_ce\n", 3, "out", NULL},
    {"bias not 0 or 1", HDR "conv2d out=4 kernel=3 bias=2\n" TAIL, 2, "bias", NULL},
    {"pooling chain shrinking 8x8 to nothing",
     "input shape=1x8x8\nmaxpool size=2\nmaxpool size=2\nmaxpool size=2\nmaxpool size=2\n" TAIL, 5,
     "larger", NULL},
    {"conv chain shrinking 5x5 to nothing",
     "input shape=1x5x5\nconv2d out=2 kernel=3\nconv2d out=2 kernel=3\n"
     "conv2d out=2 kernel=3\n" TAIL,
     4, "larger", NULL},
    {"input shape with two sizes", "input shape=1x28\n" TAIL, 1, "shape", NULL},
    {"input shape with a zero", "input shape=0x28x28\n" TAIL, 1, "shape", NULL},
    {"input shape with four sizes", "input shape=1x28x28x3\n" TAIL, 1, "shape", NULL},
    {"input shape ending in x", "input shape=1x28x\n" TAIL, 1, "shape", NULL},
    {"input shape not numbers", "input shape=axb\n" TAIL, 1, "shape", NULL},
    /* structure */
    {"missing input line", "conv2d out=4 kernel=3\n" TAIL, 1, "input", NULL},
    {"input not first", "# a model\n\nrelu\ninput shape=1x28x28\n" TAIL, 3, "input", NULL},
    {"two inputs", HDR "input shape=1x28x28\n" TAIL, 2, "input", NULL},
    {"layer after softmax_ce", HDR TAIL "relu\n", 5, "after the loss", NULL},
    {"two softmax_ce", HDR TAIL "softmax_ce\n", 5, "after the loss", NULL},
    {"no softmax_ce", HDR "flatten\nlinear out=10\n", 3, "loss", NULL},
    {"binary garbage line", HDR "\x01\x02\xfe\xff garbage\n" TAIL, 2, "byte", NULL},
    {"garbage byte inside a line", HDR "conv2d out=4\x7f kernel=3\n" TAIL, 2, "byte", NULL},
    {"empty file", "", 0, "no layers", NULL},
    /* a side branch that never reaches the loss is refused: it would train
     * nothing and its backward would overwrite the live branch's gradient */
    {"dead side branch", "input shape=1x4x4\nconv2d name=c1 out=2 kernel=3 pad=1\n"
     "relu name=dead\nmaxpool name=p1 in=c1 size=2\nflatten\nlinear name=fc out=3\n"
     "softmax_ce\n", 3, "never used", NULL},
    {"only comments and blank lines", "# nothing here\n\n   \n\t# more\n", 0, "no layers", NULL},
};

/* Parses text as test.nn and checks that it fails with a one-line message
 * naming test.nn:<line>: and containing word (or word2). */
static void expect_bad(nn_ctx *ctx, const char *what, const char *text, int line,
                       const char *word, const char *word2) {
    nn_net *net = (nn_net *)&net; /* any non-NULL value: a failed parse must reset it */
    nn_ctx_clear_error(ctx);
    nn_status st = nn_net_parse(ctx, text, "test.nn", &net);
    const char *msg = nn_ctx_error(ctx);
    char where[48], name[200];
    if (line > 0) snprintf(where, sizeof where, "test.nn:%d:", line);
    else snprintf(where, sizeof where, "test.nn");
    snprintf(name, sizeof name, "bad model: %s", what);
    int ok = st != NN_OK && net == NULL && contains(msg, where) &&
             (contains(msg, word) || (word2 && contains(msg, word2))) && !strchr(msg, '\n');
    check(ok, name, "status %d, wants '%s' and '%s': %s", (int)st, where, word, msg);
    if (st == NN_OK) nn_net_free(net);
}

static void test_bad_models(nn_ctx *ctx) {
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        expect_bad(ctx, BAD[i].what, BAD[i].text, BAD[i].line, BAD[i].word, BAD[i].word2);

    /* a 5000-character line (a comment, even) and an over-long value */
    size_t n = 6000;
    char *text = xmalloc(n + 200);
    snprintf(text, n + 200, HDR "relu # ");
    size_t len = strlen(text);
    memset(text + len, 'x', 5000);
    snprintf(text + len + 5000, 200, "\n" TAIL);
    expect_bad(ctx, "very long line", text, 2, "long", NULL);
    snprintf(text, n + 200, HDR "relu name=");
    len = strlen(text);
    memset(text + len, 'a', 300);
    snprintf(text + len + 300, 200, "\n" TAIL);
    expect_bad(ctx, "over-long layer name", text, 2, "long", "name");
    free(text);

    /* an error far down a long file names the right line */
    char buf[4096] = HDR;
    for (int i = 0; i < 100; i++) strcat(buf, "relu\n");
    strcat(buf, "maxpool size=99\n" TAIL);
    expect_bad(ctx, "error on line 102 of a long file", buf, 102, "larger", NULL);
}

/* ------------------------------------------------------------ files */

static void test_load(nn_ctx *ctx) {
    char path[256];
    nn_net *net = NULL;

    snprintf(path, sizeof path, "%s/no-such-model.nn", tmp_dir);
    nn_status st = nn_net_load(ctx, path, &net);
    check(st == NN_EIO && net == NULL && contains(nn_ctx_error(ctx), path),
          "nn_net_load of a missing file: NN_EIO naming the path", "status %d: %s", (int)st,
          nn_ctx_error(ctx));

    snprintf(path, sizeof path, "%s/seed.nn", tmp_dir);
    write_bytes(path, SEED_MODEL, strlen(SEED_MODEL));
    st = nn_net_load(ctx, path, &net);
    check(st == NN_OK && net && nn_net_num_params(net) == 206922,
          "nn_net_load of the seed model file", "%s", st ? nn_ctx_error(ctx) : "");
    nn_net_free(net);

    st = nn_net_load(ctx, NN_SOURCE_DIR "/models/seed_cnn.nn", &net);
    check(st == NN_OK && net && nn_net_num_params(net) == 206922 &&
              nn_net_find_param(net, "fc2.bias") == 7,
          "nn_net_load of models/seed_cnn.nn: 206922 parameters", "%s",
          st ? nn_ctx_error(ctx) : "");
    nn_net_free(net);

    snprintf(path, sizeof path, "%s/bad.nn", tmp_dir);
    const char *bad = HDR "conv2d out=4 kernel=3 pad=-1\n" TAIL;
    write_bytes(path, bad, strlen(bad));
    char where[300];
    snprintf(where, sizeof where, "%s:2:", path);
    st = nn_net_load(ctx, path, &net);
    check(st != NN_OK && net == NULL && contains(nn_ctx_error(ctx), where),
          "nn_net_load of a bad file names path:line", "%s", nn_ctx_error(ctx));

    snprintf(path, sizeof path, "%s/nul.nn", tmp_dir);
    const char nul[] = "input shape=1x28x28\nre\0lu\n" TAIL;
    write_bytes(path, nul, sizeof nul - 1);
    st = nn_net_load(ctx, path, &net);
    check(st != NN_OK && net == NULL && contains(nn_ctx_error(ctx), path),
          "nn_net_load of a file with a NUL byte fails naming the path", "status %d: %s",
          (int)st, nn_ctx_error(ctx));

    snprintf(path, sizeof path, "%s/empty.nn", tmp_dir);
    write_bytes(path, "", 0);
    st = nn_net_load(ctx, path, &net);
    check(st != NN_OK && net == NULL && contains(nn_ctx_error(ctx), path),
          "nn_net_load of an empty file fails naming the path", "status %d: %s", (int)st,
          nn_ctx_error(ctx));
    remove(path);

    st = nn_net_load(ctx, tmp_dir, &net);
    check(st != NN_OK && net == NULL && contains(nn_ctx_error(ctx), tmp_dir),
          "nn_net_load of a directory fails naming the path", "status %d: %s", (int)st,
          nn_ctx_error(ctx));

    snprintf(path, sizeof path, "%s/seed.nn", tmp_dir), remove(path);
    snprintf(path, sizeof path, "%s/bad.nn", tmp_dir), remove(path);
    snprintf(path, sizeof path, "%s/nul.nn", tmp_dir), remove(path);
}

/* ------------------------------------------------------------ plan, forward, backward */

/* max |a - b| / (1 + |b|) */
static double max_diff(const float *a, const float *b, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        if (!(d <= e)) e = d;
    }
    return e;
}

static void test_run_errors(nn_ctx *ctx) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, SEED_MODEL, "test.nn", &net) != NN_OK) {
        check(0, "seed model parses for the run checks", "%s", nn_ctx_error(ctx));
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 7, 3);
    nn_net_init_params(net, &rng);
    enum { B = 4, PIX = 28 * 28 };
    float *x = xmalloc(2 * B * PIX * sizeof(float));
    for (int i = 0; i < 2 * B * PIX; i++) x[i] = nn_rng_uniform(&rng);
    int32_t labels[2 * B] = {3, 1, 4, 1, 5, 9, 2, 6};
    float loss = -1.0f;

    nn_status st = nn_net_forward(net, x, labels, B, &loss);
    check(st == NN_EINVAL && nn_ctx_error(ctx)[0], "forward before nn_net_plan: NN_EINVAL",
          "%s", nn_ctx_error(ctx));
    check(nn_net_planned_bytes(net) == 0, "no planned memory before nn_net_plan", NULL);
    st = nn_net_plan(net, 0);
    check(st == NN_EINVAL && nn_ctx_error(ctx)[0], "nn_net_plan with batch 0: NN_EINVAL", "%s",
          nn_ctx_error(ctx));
    st = nn_net_plan(net, -3);
    check(st == NN_EINVAL, "nn_net_plan with batch -3: NN_EINVAL", "%s", nn_ctx_error(ctx));
    st = nn_net_plan(net, B);
    check(st == NN_OK && nn_net_planned_bytes(net) > 0, "nn_net_plan with batch 4", "%zu bytes",
          nn_net_planned_bytes(net));
    if (st) goto done;

    nn_ctx_clear_error(ctx);
    st = nn_net_forward(net, x, labels, B + 1, &loss);
    check(st == NN_EINVAL && nn_ctx_error(ctx)[0], "forward with n=5 > planned 4: NN_EINVAL",
          "%s", nn_ctx_error(ctx));
    st = nn_net_forward(net, x, labels, 0, &loss);
    check(st == NN_EINVAL, "forward with n=0: NN_EINVAL", "%s", nn_ctx_error(ctx));
    st = nn_net_forward(net, x, labels, -1, &loss);
    check(st == NN_EINVAL, "forward with n=-1: NN_EINVAL", "%s", nn_ctx_error(ctx));
    st = nn_net_backward(net);
    check(st == NN_EINVAL, "backward before any forward: NN_EINVAL", "%s", nn_ctx_error(ctx));

    int32_t bad_hi[B] = {0, 1, 10, 2}, bad_lo[B] = {0, -1, 1, 2};
    st = nn_net_forward(net, x, bad_hi, B, &loss);
    check(st == NN_EINVAL && contains(nn_ctx_error(ctx), "label"),
          "label 10 with 10 classes: NN_EINVAL", "%s", nn_ctx_error(ctx));
    st = nn_net_forward(net, x, bad_lo, B, &loss);
    check(st == NN_EINVAL && contains(nn_ctx_error(ctx), "label"), "label -1: NN_EINVAL", "%s",
          nn_ctx_error(ctx));

    /* a good step after the failures */
    nn_net_zero_grad(net);
    st = nn_net_forward(net, x, labels, B, &loss);
    check(st == NN_OK && isfinite(loss) && fabs(loss - log(10.0)) < 0.5,
          "forward of 4 samples after the failed calls: loss near ln 10 at init", "loss %g",
          (double)loss);
    st = nn_net_backward(net);
    float *g = tu_download(ctx, nn_net_grads(net), nn_net_num_params(net));
    size_t nonzero = 0, finite = 1;
    for (size_t i = 0; i < nn_net_num_params(net); i++) {
        nonzero += g[i] != 0.0f;
        finite &= isfinite(g[i]) != 0;
    }
    check(st == NN_OK && finite && nonzero > nn_net_num_params(net) / 4,
          "backward gives finite, mostly non-zero gradients", "%zu of %zu non-zero", nonzero,
          nn_net_num_params(net));
    free(g);

    /* logits without labels equal the logits of the labelled forward; then
     * backward is refused (it needs a forward with labels) */
    float logits[B * 10], again[2 * B * 10];
    nn_ctx_download(ctx, logits, nn_net_logits(net), sizeof logits);
    float loss2 = 123.0f;
    st = nn_net_forward(net, x, NULL, B, &loss2);
    if (st == NN_OK) nn_ctx_download(ctx, again, nn_net_logits(net), sizeof logits);
    check(st == NN_OK && memcmp(logits, again, sizeof logits) == 0,
          "forward without labels gives the same logits", NULL);
    st = nn_net_backward(net);
    check(st == NN_EINVAL, "backward after a forward without labels: NN_EINVAL", "%s",
          nn_ctx_error(ctx));

    /* smaller batches, and a larger plan, give the same per-sample results */
    /* (GEMM blocking may depend on the batch size, so equal up to rounding) */
    st = nn_net_forward(net, x, NULL, 1, NULL);
    if (st == NN_OK) nn_ctx_download(ctx, again, nn_net_logits(net), 10 * sizeof(float));
    double e1 = st == NN_OK ? max_diff(logits, again, 10) : INFINITY;
    check(e1 <= 1e-5, "forward of 1 sample gives that sample's logits", "max diff %.2e", e1);
    st = nn_net_plan(net, 2 * B);
    if (st == NN_OK) st = nn_net_forward(net, x, labels, 2 * B, &loss2);
    if (st == NN_OK) nn_ctx_download(ctx, again, nn_net_logits(net), sizeof logits);
    double e8 = st == NN_OK ? max_diff(logits, again, B * 10) : INFINITY;
    check(e8 <= 1e-5, "re-planned for 8: forward of 8, the first 4 logits unchanged",
          "max diff %.2e %s", e8, st ? nn_ctx_error(ctx) : "");

done:
    free(x);
    nn_net_free(net);
}

/* ------------------------------------------------------------ init statistics */

static void test_init(nn_ctx *ctx) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, SEED_MODEL, "test.nn", &net) != NN_OK) {
        check(0, "seed model parses for the init checks", "%s", nn_ctx_error(ctx));
        return;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 1234, 1);
    nn_net_init_params(net, &rng);
    float *w = tu_download(ctx, nn_net_params(net), nn_net_num_params(net));
    for (int i = 0; i < nn_net_num_param_tensors(net); i++) {
        const nn_param_info *p = nn_net_param_info(net, i);
        const double bound = 1.0 / sqrt((double)p->fan_in);
        double sum = 0.0, sq = 0.0, amax = 0.0;
        for (size_t j = 0; j < p->numel; j++) {
            double v = w[p->offset + j];
            sum += v, sq += v * v;
            amax = fmax(amax, fabs(v));
        }
        const double mean = sum / (double)p->numel;
        const double sd = sqrt(sq / (double)p->numel - mean * mean);
        char name[160];
        snprintf(name, sizeof name, "init %s within +-1/sqrt(%d)", p->name, p->fan_in);
        /* the float bound may round up by half an ulp */
        check(amax <= bound * (1 + 1e-7) && amax > 0.5 * bound, name,
              "max |w| %.6g, bound %.6g", amax, bound);
        if (p->numel >= 10000) {
            /* U(-b, b) has std b/sqrt(3); its estimate from numel samples is
             * within 2% with overwhelming probability for numel >= 10000 */
            const double want = bound / sqrt(3.0);
            snprintf(name, sizeof name, "init %.60s: std = bound/sqrt(3) within 2%%, mean ~ 0",
                     p->name);
            check(fabs(sd / want - 1.0) < 0.02 && fabs(mean) < 0.02 * bound, name,
                  "std %.6g want %.6g (ratio %.4f), mean %.3g", sd, want, sd / want, mean);
        }
    }
    /* the same seed gives the same parameters; another seed different ones */
    const size_t np = nn_net_num_params(net);
    float *copy = w;
    nn_rng_seed(&rng, 1234, 1);
    nn_net_init_params(net, &rng);
    float *now = tu_download(ctx, nn_net_params(net), np);
    int same = memcmp(copy, now, np * sizeof(float)) == 0;
    free(now);
    nn_rng_seed(&rng, 1235, 1);
    nn_net_init_params(net, &rng);
    now = tu_download(ctx, nn_net_params(net), np);
    size_t differ = 0;
    for (size_t i = 0; i < np; i++) differ += copy[i] != now[i];
    free(now);
    check(same && differ > np * 9 / 10, "init is reproducible from the seed, and seed-dependent",
          "%zu of %zu differ with another seed", differ, np);
    free(copy);
    nn_net_free(net);
}

/* ------------------------------------------------------------ graph vs reference */

static void graph_vs_ref(const char *what, const char *text, nn_ctx *const ctxs[2]) {
    for (int t = 0; t < 2; t++) {
        char name[200];
        snprintf(name, sizeof name, "graph == reference composition: %s, %d thread%s", what,
                 ctxs[t]->threads, ctxs[t]->threads > 1 ? "s" : "");
        nn_net *net = NULL;
        nn_status st = nn_net_parse(ctxs[t], text, "test.nn", &net);
        if (st == NN_OK) st = nn_net_plan(net, 5);
        if (st) {
            check(0, name, "%s", nn_ctx_error(ctxs[t]));
            nn_net_free(net);
            continue;
        }
        const int n = 5, classes = nn_net_num_classes(net);
        nn_shape in = nn_net_input_shape(net);
        const size_t xn = (size_t)n * (size_t)nn_shape_numel(&in);
        nn_rng rng;
        nn_rng_seed(&rng, 99, 5);
        nn_net_init_params(net, &rng);
        float *x = xmalloc(xn * sizeof(float));
        for (size_t i = 0; i < xn; i++) x[i] = 2.0f * nn_rng_uniform(&rng) - 1.0f;
        int32_t labels[5];
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
        float *z = tu_download(ctxs[t], nn_net_logits(net), (size_t)n * classes);
        float *g = tu_download(ctxs[t], nn_net_grads(net), np);
        double e_logits = max_err(z, logits, (size_t)n * classes);
        double e_grad = 0.0, gmax = 0.0;
        char worst[128] = "";
        for (int i = 0; i < nn_net_num_param_tensors(net); i++) {
            const nn_param_info *p = nn_net_param_info(net, i);
            double e = max_err(g + p->offset, grads + p->offset, p->numel);
            for (size_t j = 0; j < p->numel; j++) gmax = fmax(gmax, fabs(grads[p->offset + j]));
            if (!(e <= e_grad)) {
                e_grad = e;
                snprintf(worst, sizeof worst, "%s", p->name);
            }
        }
        check(st == NN_OK && e_loss <= 1e-4 && e_logits <= 1e-4 && e_grad <= 1e-4 &&
                  (np == 0 || gmax > 1e-4),
              name, "loss %.6f ref %.6f; max err logits %.2e, grads %.2e (%s)%s%s", (double)loss,
              lref, e_logits, e_grad, worst, st ? ": " : "", st ? nn_ctx_error(ctxs[t]) : "");
        free(x), free(grads), free(logits), free(z), free(g);
        nn_net_free(net);
    }
}

static void test_graphs(nn_ctx *const ctxs[2]) {
    graph_vs_ref("conv+ReLU (fused), maxpool, flatten, linear+ReLU (fused), linear",
                 "input shape=2x6x6\n"
                 "conv2d name=c1 out=3 kernel=3 pad=1\n"
                 "relu\n"
                 "maxpool size=2\n"
                 "flatten\n"
                 "linear name=f1 out=5\n"
                 "relu\n"
                 "linear name=f2 out=4\n"
                 "softmax_ce\n",
                 ctxs);
    graph_vs_ref("unfused ReLUs (after input, after maxpool, twice), 3x3/1 maxpool, no bias",
                 "input shape=1x7x5\n"
                 "relu\n"
                 "conv2d name=c1 out=2 kernel=3x2 stride=2x1 pad=1x0 bias=0\n"
                 "maxpool size=3 stride=1 pad=1\n"
                 "relu\n"
                 "relu\n"
                 "flatten\n"
                 "linear name=f1 out=3\n"
                 "softmax_ce\n",
                 ctxs);
    graph_vs_ref("two convs, the first fused, the second feeding maxpool",
                 "input shape=1x9x9\n"
                 "conv2d name=c1 out=3 kernel=3\n"
                 "relu\n"
                 "conv2d name=c2 out=2 kernel=3 stride=2 pad=1\n"
                 "maxpool size=2\n"
                 "flatten\n"
                 "linear name=f out=3\n"
                 "softmax_ce\n",
                 ctxs);
    graph_vs_ref("flat input, linear+ReLU, linear without bias",
                 "input shape=12\n"
                 "linear name=f1 out=6\n"
                 "relu\n"
                 "linear name=f2 out=3 bias=0\n"
                 "softmax_ce\n",
                 ctxs);
    graph_vs_ref("ReLU on the logits (fused onto the last linear)",
                 "input shape=8\n"
                 "linear name=f1 out=4\n"
                 "relu\n"
                 "softmax_ce\n",
                 ctxs);
    graph_vs_ref("in= naming the layer before (explicit wiring)",
                 "input shape=1x6x6\n"
                 "conv2d name=c1 in=input out=2 kernel=3 pad=1\n"
                 "maxpool name=p1 in=c1 size=2\n"
                 "flatten name=fl in=p1\n"
                 "linear name=f in=fl out=3\n"
                 "softmax_ce in=f\n",
                 ctxs);
}

/* A model without parameters (softmax_ce straight on the input) must either
 * be refused when parsed or train without crashing. Run in a child process
 * so that a crash is reported as a failure rather than ending this test. */
static void test_paramless_model(void) {
    const char *text = "input shape=10\nsoftmax_ce\n";
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        nn_ctx *ctx = test_ctx_new(1);
        nn_net *net = NULL;
        if (nn_net_parse(ctx, text, "test.nn", &net) != NN_OK)
            _exit(contains(nn_ctx_error(ctx), "test.nn") ? 10 : 11);
        float x[10] = {0}, loss = 0;
        int32_t label = 3;
        if (nn_net_plan(net, 1) || nn_net_forward(net, x, &label, 1, &loss)) _exit(12);
        if (nn_net_backward(net)) _exit(13);
        _exit(fabs(loss - log(10.0)) < 1e-5 ? 0 : 14);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        check(0, "model without parameters", "fork/waitpid failed");
        return;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    check(code == 0 || code == 10,
          "model without parameters (input shape=10, softmax_ce): refused or trains",
          "%s %d (0: trained, 10: refused, 11-14: wrong result)",
          WIFSIGNALED(status) ? "child killed by signal" : "child exit code",
          WIFSIGNALED(status) ? WTERMSIG(status) : code);
}

int main(void) {
    /* before anything starts OpenMP or BLAS threads in this process */
    test_paramless_model();

    nn_ctx *ctx1 = test_ctx_new(1), *ctx2 = test_ctx_new(2);
    if (!ctx1 || !ctx2) return 2;
    nn_ctx *const ctxs[2] = {ctx1, ctx2};
    tmp_dir_create("model");

    test_seed_model(ctx1);
    test_auto_param_names(ctx1);
    test_bad_models(ctx1);
    test_load(ctx1);
    test_run_errors(ctx2);
    test_init(ctx1);
    test_graphs(ctxs);

    remove_tree(tmp_dir);
    nn_ctx_free(ctx1);
    nn_ctx_free(ctx2);
    return test_summary();
}
