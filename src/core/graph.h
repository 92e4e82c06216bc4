/*
 * graph.h - the network graph: the op list (NN_OP_LIST), per-op descriptors,
 * nodes, kernel arguments, and the op registry's entry (nn_op_def: keys,
 * shapes, FLOPs, kernels per backend kind, hooks). Internal to libnnopt.
 */
#ifndef NN_GRAPH_H
#define NN_GRAPH_H

#include "nn_internal.h"

/*
 * The op registry: every op once, as X(ENUM, keyword). The op enum, the
 * declarations of the ops' registry entries (nn_<keyword>_def, one per op,
 * defined next to its kernels in src/ops) and the registry table
 * (src/ops/registry.c) are all generated from this list. Its order is the
 * order in which the unknown-layer error lists the layer types.
 */
#define NN_OP_LIST(X)          \
    X(INPUT, input)            \
    X(CONV2D, conv2d)          \
    X(MAXPOOL, maxpool)        \
    X(AVGPOOL, avgpool)        \
    X(GAP, gap)                \
    X(RELU, relu)              \
    X(LEAKY_RELU, leaky_relu)  \
    X(GELU, gelu)              \
    X(SILU, silu)              \
    X(SIGMOID, sigmoid)        \
    X(TANH, tanh)              \
    X(RELU6, relu6)            \
    X(HARDSWISH, hardswish)    \
    X(LINEAR, linear)          \
    X(FLATTEN, flatten)        \
    X(ADD, add)                \
    X(CONCAT, concat)          \
    X(BATCHNORM, batchnorm)    \
    X(DROPOUT, dropout)        \
    X(SOFTMAX_CE, softmax_ce)

#define NN_OP_ENUM_(E, k) NN_OP_##E,
typedef enum { NN_OP_LIST(NN_OP_ENUM_) NN_OP_COUNT } nn_op_type;
#undef NN_OP_ENUM_

#define NN_MAX_INPUTS 8 /* add and concat join at most this many layers */
#define NN_MAX_SHARDS 64 /* nn_net_set_shards */
#define NN_MAX_NODE_PARAMS 2
#define NN_MAX_NODE_BUFFERS 3

typedef struct {
    int C, H, W;        /* input */
    int K, R, S;        /* out channels, kernel */
    int P, Q;           /* output */
    int stride_h, stride_w, pad_h, pad_w;
    int has_bias;
    int relu;           /* ReLU fused onto the output */
    int groups;         /* channel groups (0 or 1: dense; C: depthwise) */
    int bf16;           /* bf16 GEMMs (--precision bf16; dense convolutions only) */
    int relu_masked_later; /* the fused ReLU's gradient mask is applied by the consumer
                              (a max-pool, see nn_pool_desc.relu_mask): backward reads no mask */
    int dil_h, dil_w;   /* dilation: tap (r, s) reads input (p*stride - pad + r*dil_h, ...);
                           0 or 1: none */
    int dx_add;         /* backward adds the input gradient into dx instead of writing it
                           (set per call from nn_op_args.dx_add, where accumulates_dx) */
} nn_conv2d_desc;

/* The dilation of d along H and W (1 when the descriptor leaves it 0), and
 * whether it has any: the fast kernels take only undilated convolutions. */
static inline int nn_conv2d_dil_h(const nn_conv2d_desc *d) { return d->dil_h > 1 ? d->dil_h : 1; }
static inline int nn_conv2d_dil_w(const nn_conv2d_desc *d) { return d->dil_w > 1 ? d->dil_w : 1; }
static inline int nn_conv2d_dilated(const nn_conv2d_desc *d) { return d->dil_h > 1 || d->dil_w > 1; }

typedef struct {
    int C, H, W;        /* input */
    int P, Q;           /* output */
    int R, S;           /* window */
    int stride_h, stride_w, pad_h, pad_w;
    int relu_mask;      /* max-pool backward also applies the gradient mask of the ReLU
                           fused into the convolution before it (y > 0 at the argmax) */
} nn_pool_desc;

typedef struct {
    int in, out;
    int has_bias;
    int relu;           /* ReLU fused onto the output */
} nn_linear_desc;

typedef struct {
    float slope;        /* leaky_relu: y = x for x > 0, slope * x otherwise */
} nn_act_desc;

typedef struct {
    int C;              /* channels */
    int HW;             /* elements per channel per sample (H*W, or 1 for a flat input) */
    float eps;          /* added to the variance */
    float momentum;     /* running = (1 - momentum) running + momentum batch */
    int relu;           /* ReLU fused onto the output (the graph's epilogue fusion) */
    int residual;       /* a residual add fused in: the node's second input is
                           added to the normalized value (before the ReLU), and
                           the sum's gradient passed to it */
    int out_virtual;    /* its only reader applies the normalization (and the
                           ReLU) while loading: training passes write no output,
                           only the map's floats, and backward masks by x */
    int sums_by_reader; /* out_virtual, and the reader's backward sums each row
                           of the gradient (give_grad_sums): training backward
                           passes skip their sums pass */
    int stats_by_producer; /* the convolution before it sums each row of its
                           output (give_input_stats): training forward passes
                           skip their statistics pass */
    int out_by_reader;  /* its first reader writes the output while normalizing
                           (give_written_prologue): training forward passes
                           make only the map */
} nn_bn_desc;

typedef struct {
    int relu;           /* ReLU fused onto the sum */
} nn_add_desc;

typedef struct {
    int C1, C2;         /* channels of the first and second input; output C1 + C2 + ... */
    int inner;          /* elements per channel per sample (H*W, or 1 for a flat input) */
    int count;          /* inputs: 0 or 2 for two (C1, C2), else channels in C */
    int C[NN_MAX_INPUTS]; /* channels of input k (C[0] = C1, C[1] = C2) */
} nn_concat_desc;

typedef struct {
    float p;            /* probability of zeroing an element, in [0, 1) */
} nn_dropout_desc;

typedef struct {
    int classes;
    float smoothing;    /* label smoothing eps in [0, 1]; 0 = plain cross-entropy */
} nn_loss_desc;

/* NN_PREFETCH_AUTO: a plane-by-plane kernel (uses_prefetch) runs its first
 * training call as a warm-up, then NN_PREFETCH_TRIALS calls with the
 * prefetch on and as many off, by turns, and keeps the faster median. */
#define NN_PREFETCH_TRIALS 3
typedef struct {
    double seconds[2][NN_PREFETCH_TRIALS]; /* [off, on][trial] */
    int calls;                             /* training calls timed so far, the warm-up
                                              included */
    int pick;                              /* -1 while trying, else 0 off, 1 on */
} nn_prefetch_trial;

typedef struct nn_node {
    char name[64];
    nn_op_type op;
    int line;                       /* model-file line that defined it */
    int inputs[NN_MAX_INPUTS];      /* node indices, all earlier (topological) */
    int num_inputs;
    nn_shape out;                   /* per-sample output shape */
    union {
        nn_conv2d_desc conv;
        nn_pool_desc pool;          /* maxpool, avgpool, gap (R = H, S = W, P = Q = 1) */
        nn_act_desc act;
        nn_linear_desc linear;
        nn_loss_desc loss;
        nn_add_desc add;
        nn_bn_desc bn;
        nn_concat_desc concat;
        nn_dropout_desc dropout;
    } d;
    /* parameters: shapes declared by configure, placed by the graph */
    int num_params;
    nn_shape param_shape[NN_MAX_NODE_PARAMS];
    const char *param_suffix[NN_MAX_NODE_PARAMS];   /* "weight", "bias" */
    int param_init[NN_MAX_NODE_PARAMS];         /* NN_INIT_DEFAULT or NN_INIT_CONSTANT */
    float param_init_value[NN_MAX_NODE_PARAMS]; /* the constant of NN_INIT_CONSTANT */
    int param_fan_in;
    int param_index;                /* first entry in net->params, -1 if none */
    /* buffers (state that is saved but not trained, e.g. running statistics):
     * declared by configure, placed contiguously in net->buffer_data */
    int num_buffers;
    nn_shape buffer_shape[NN_MAX_NODE_BUFFERS];
    const char *buffer_suffix[NN_MAX_NODE_BUFFERS];
    float buffer_init[NN_MAX_NODE_BUFFERS];     /* every element starts at this value */
    int buffer_index;               /* first entry in net->buffers, -1 if none */
    /* planned memory (batch-major, max_batch samples) */
    float *y;                       /* (N, out) */
    float *dy;                      /* (N, out), NULL when no gradient flows */
    void *aux;                      /* op-private saved data, e.g. pool argmax */
    size_t aux_bytes;               /* per sample */
    size_t aux_fixed_bytes;         /* plus this much once, independent of the batch
                                       (batchnorm's per-channel mean and 1/std) */
    unsigned needs_dx;              /* bit k: the gradient of input k must be computed */
    int grad_writers;               /* kernels writing the gradient of this node's
                                       memory (its own consumers and those of its
                                       aliases); more than one: they accumulate */
    int grad_in_place;              /* some consumer's kernel writes this memory's
                                       gradient in place (dx_direct): not zeroed */
    unsigned dx_direct;             /* bit k: input k's gradient has several writers
                                       but this kernel runs first of them in the
                                       backward pass, so it writes (not adds) it in
                                       place: no zeroing pass, no scratch copy */
    int alias_of;                   /* node whose memory this one shares (flatten,
                                       fused ReLU), or -1 */
    int fold_into;                  /* eval mode: the only reader whose affine map
                                       (batch norm) this node's kernel applies, writing
                                       that reader's output, or -1 (nn_net_plan) */
    int folded;                     /* eval mode: this node runs inside its producer's
                                       kernel (the producer's fold_into) */
    int prologue_from;              /* training passes: the producer (a batch norm)
                                       whose per-channel map this node's kernel
                                       applies to that producer's input while
                                       loading it, or -1 (see give_prologue) */
    int stats_to;                   /* training passes: the reader (a batch norm)
                                       whose per-row statistics of this node's
                                       output its kernel writes, or -1 (see
                                       give_input_stats) */
    int writes_from;                /* training forward passes: the producer (a batch
                                       norm) whose map this node applies as with
                                       prologue_from, and whose output, read by
                                       later nodes too, it writes while loading, or
                                       -1 (see give_written_prologue) */
    int written_by;                 /* the node whose writes_from this is, or -1 */
    int dy_from;                    /* training passes: the reader (a batch norm)
                                       whose input gradient, this node's dy, this
                                       node's backward may form itself while
                                       loading it, or -1 (see deferred_dx) */
    nn_prefetch_trial prefetch[2];  /* its forward's [0] and backward's [1] software
                                       prefetch under NN_PREFETCH_AUTO (uses_prefetch) */
} nn_node;

/* A batch norm's backward left to the node before it (deferred_dx): dx = (g -
 * g_mean) scale - (x - mean) ks per channel, g its output gradient where x
 * alpha + beta > 0 (alpha not NULL: its fused ReLU's mask, from the forward's
 * map) or everywhere (alpha NULL); x is that node's own output. */
typedef struct {
    const float *g_mean, *mean, *scale, *ks; /* C each */
    const float *alpha, *beta;               /* C each, or NULL */
} nn_bn_dx;

/* A batch norm's sums pass over its output gradient, as its writer runs it
 * (nn_batchnorm_grad_rows, ops.h): the per-row pairs, the batch mean, its
 * input x, the mask's output y or map (scale, shift), the residual input's
 * gradient dr, C channels of HW values. */
typedef struct {
    double *rows;
    const float *mean, *x, *y, *scale, *shift;
    float *dr;
    int C, HW;
} nn_bn_grad_rows;

/* Everything a kernel call needs; pointers are NULL when not applicable. */
typedef struct {
    const nn_node *node;
    int n;                          /* batch size of this call */
    float *y;                       /* output (n, out) */
    const float *x;                 /* first input (n, in) */
    const float *xs[NN_MAX_INPUTS]; /* every input (node->num_inputs; xs[0] = x) */
    const float *in_scale, *in_shift; /* not NULL: x is the input of the batch norm
                                       before (prologue_from), whose output is
                                       max(0 if in_relu, x in_scale[c] + in_shift[c]) */
    int in_relu;
    double *in_grad_sums;           /* not NULL (with in_scale): backward also writes
                                       the batch norm's per-row gradient sums there
                                       (give_grad_sums), which need its batch mean */
    const float *in_mean;
    const float *in_res;            /* forward, not NULL (writes_from): the batch norm's
                                       fused residual add, its second input, added
                                       before the ReLU */
    float *in_out;                  /* forward, not NULL (writes_from): the batch norm's
                                       output, which the kernel writes as it maps x */
    nn_bn_grad_rows in_rows;        /* backward, rows not NULL (writes_from): the batch
                                       norm's sums pass, which the kernel runs on dx
                                       (its output's gradient, complete then) */
    int rows_given;                 /* batch norm backward: the writer of its output
                                       ran its sums pass (in_rows) */
    double *out_stats;              /* not NULL: forward also writes each output row's
                                       statistics there (nn_batchnorm_row_stats: a
                                       pair of doubles per row), which the batch norm
                                       reading the output takes (give_input_stats) */
    const float *bn_dy;             /* not NULL (dy_from): the batch norm after this
                                       node left dy unwritten; this is its output
                                       gradient, bn_dx its coefficients, and the
                                       kernel forms dy from them and y
                                       (nn_batchnorm_form_dx) */
    nn_bn_dx bn_dx;
    int defer_dx;                   /* batch norm: the node before it forms dx
                                       (forms_dy) if this pass leaves it (deferred_dx) */
    unsigned dx_add;                /* bit k: add input k's gradient into dxs[k] (other
                                       kernels wrote it first; see accumulates_dx) */
    const float *w, *b;             /* parameters */
    const float *dy;                /* gradient of output */
    float *dx;                      /* gradient of first input, overwritten; NULL = skip */
    float *dxs[NN_MAX_INPUTS];      /* gradients of every input, the same way (dxs[0] = dx) */
    float *dw, *db;                 /* parameter gradients, accumulated */
    float *buf;                     /* the node's buffers, contiguous (read-write) */
    int training;                   /* the net's mode: 1 training, 0 eval */
    uint64_t dropout_seed;          /* the net's dropout seed (nn_net_set_dropout_seed) */
    int node_index;                 /* position of node in the net (keys dropout masks) */
    void *aux;                      /* op-private saved data */
    float *ws;                      /* workspace, sized by the op's workspace() */
    size_t ws_floats;               /* its size: the largest of every node's workspace() */
    const int32_t *labels;          /* loss ops */
    float *loss;                    /* loss ops: mean loss out */
    nn_reducer reduce;              /* the net's reducer (NULL: none), for batch norm */
    void *reduce_user;
    int shards;                     /* couples_batch ops in training passes: the batch
                                       is this many shards (1: none), shard k samples
                                       shard_bounds[k]..shard_bounds[k+1], whose
                                       parameter gradients go to dw, db + k grad_stride */
    const int *shard_bounds;
    size_t grad_stride;
    nn_ctx *ctx;
} nn_op_args;

/* A backend's kernels for one op type. */
typedef struct {
    void (*forward)(const nn_op_args *a);
    void (*backward)(const nn_op_args *a);
    /* workspace floats needed for batches up to max_batch on `threads` threads */
    size_t (*workspace)(const nn_node *node, int max_batch, int threads);
    /* optional: which of the backend's kernels run for this node (nnopt bench,
     * nnopt info), e.g. conv2d's "winograd" */
    const char *(*kernel_name)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if the kernels for this node apply a producer's per-channel
     * map to input 0 while loading it (nn_op_args.in_scale) */
    int (*takes_prologue)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if, taking a prologue, the forward kernel for this node
     * writes the mapped input too (nn_op_args.in_out, with a residual add's
     * in_res) a part at a time, each part in its cache as it reads it:
     * then planned where the batch norm's output has other readers
     * (writes_from). The forward must take in_out whatever its kernel at
     * run time. */
    int (*writes_prologue)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if the kernels for this node add input 0's gradient into
     * dx when nn_op_args.dx_add asks (else the graph adds it from scratch) */
    int (*accumulates_dx)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if, taking a prologue, the backward kernels also write the
     * producer's per-row gradient sums (nn_op_args.in_grad_sums) */
    int (*sums_prologue_grad)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if the forward kernels for this node write the per-row
     * statistics of its output (nn_op_args.out_stats) while it is in cache */
    int (*sums_output_stats)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if the backward kernels for this node form dy from the
     * batch norm after it while loading it (nn_op_args.bn_dy, bn_dx) */
    int (*forms_dy)(const nn_node *node, const nn_ctx *ctx);
    /* optional: 1 if the kernels for this node visit the batch plane by
     * plane and read ctx->prefetch (nn_ctx_set_prefetch) */
    int (*uses_prefetch)(const nn_node *node, const nn_ctx *ctx);
} nn_op_kernels;

/* The kernel tables a registry entry holds, one per kind of backend; a
 * backend names the kind whose kernels it runs (nn_backend.kernels). The CUDA
 * entries (src/ops/cuda/) are filled only in builds with NN_HAVE_CUDA. */
typedef enum { NN_KERNELS_CPU = 0, NN_KERNELS_CUDA, NN_KERNELS_COUNT } nn_kernel_kind;

/* An element-wise op that may run inside the kernel of the op before it (its
 * "epilogue"), applied while the data is in cache. NN_EPILOGUE_ADD: a
 * two-input add (a residual connection) taken in by the producer of one
 * input, which then reads the other as an input of its own. */
typedef enum { NN_EPILOGUE_NONE = 0, NN_EPILOGUE_RELU, NN_EPILOGUE_ADD } nn_epilogue;

/* key=value pairs of one model-file line, with use tracking so that unknown
 * keys become errors. */
#define NN_MAX_KV 16
typedef struct {
    char key[32];
    char val[128];
    int used;
} nn_kv;

typedef struct {
    nn_kv kv[NN_MAX_KV];
    int count;
    const char *source;
    int line;
    nn_ctx *ctx;
} nn_kvlist;

/* Integer value of key (def if absent and def_ok). Errors name source:line. */
nn_status nn_kv_int(nn_kvlist *kv, const char *key, int def, int required, int *out);
/* Value string of key or NULL (marks it used). */
const char *nn_kv_str(nn_kvlist *kv, const char *key);
/* Accepts key=A or key=AxB for pairs (kernel=3 or kernel=3x5). */
nn_status nn_kv_pair(nn_kvlist *kv, const char *key, int def, int required, int *a, int *b);

/*
 * A registry entry: everything about one op type. The graph only walks these
 * entries (through nn_op_def_get) and never names an op: fusion, planning,
 * precision and batch checks are the optional hooks below, NULL (or 0) when
 * an op has none.
 */
typedef struct nn_op_def {
    const char *name;                /* model-file keyword */
    int min_inputs, max_inputs;      /* in= names this many layers; 0 and 0: the input
                                        layer; 1 and 1: the default previous layer */
    const char *keys;                /* space-separated keys besides name and in */
    /* Reads the op's keys, checks the input shapes (one per input), sets
     * node->d, node->out and the parameter shapes. Errors through kv->ctx
     * naming source:line. */
    nn_status (*configure)(nn_node *node, nn_kvlist *kv, const nn_shape *in);
    int64_t (*flops)(const nn_node *node);            /* forward, per sample; NULL: 0 */
    int64_t (*backward_flops)(const nn_node *node);   /* per sample; NULL: the forward's */
    int is_loss;                     /* the loss layer: last in the model, reads labels */
    int aliases_input;               /* output is the input's memory reshaped (flatten):
                                        no kernel runs, forward or backward */
    int couples_batch;               /* training passes mix the batch's samples (batch
                                        norm's statistics): with shards (nn_net_set_shards)
                                        its kernels take the whole batch and the shards'
                                        bounds (nn_op_args.shards), not one shard a call */
    /* kernels per kind of backend; NULL: that backend cannot run the op */
    const nn_op_kernels *kernels[NN_KERNELS_COUNT];

    /* --- hooks --- */
    /* This element-wise op can be some producers' epilogue: the graph asks the
     * op before it (through fuse_epilogue) to apply it, and when it does, this
     * node shares the producer's memory and runs no kernel. */
    nn_epilogue epilogue;
    /* Producer: takes epilogue e onto its output (sets its descriptor); 1 if
     * it did. Called only when the producer's output has no other reader
     * and is not the logits. For NN_EPILOGUE_ADD the graph then appends the
     * add's other input to the producer's inputs: its kernels (every
     * backend's) add it to the output and write the sum's gradient to it. */
    int (*fuse_epilogue)(nn_node *node, nn_epilogue e);
    /* Consumer of a fused epilogue's output (its only reader): 1 if its
     * backward applies e's gradient mask itself (setting its descriptor);
     * then the producer's epilogue_masked_later is called and its backward
     * skips the mask. Only asked when the producer has that hook. */
    int (*mask_epilogue)(nn_node *node, nn_epilogue e);
    void (*epilogue_masked_later)(nn_node *node);
    /* Eval mode: this op is a per-channel affine map of its only input, y =
     * x scale[c] + shift[c] (then a ReLU when *relu): fills scale and shift
     * (C each) from the node's parameters w, b and buffers buf; returns C. */
    int (*eval_affine)(const nn_node *node, const float *w, const float *b, const float *buf,
                       float *scale, float *shift, int *relu);
    /* Producer: can absorb such a map into its weights (K rows of equal
     * length, one per output channel) and bias, and the ReLU: sets copy's
     * descriptor for it (bias on, relu) and returns K; 0: cannot. */
    int (*absorb_affine)(nn_node *copy, int relu);
    /* Producer of a per-channel map (batch norm, then its fused ReLU) whose
     * only reader's kernels take it as a prologue (takes_prologue): sets its
     * descriptor so that training passes write no output but the map, and
     * its backward masks by its input; 1 if it can. prologue_coefs: the
     * map's C scales (returned) and shifts (valid after a training
     * forward), and whether a ReLU follows. */
    int (*give_prologue)(nn_node *node);
    const float *(*prologue_coefs)(const nn_node *node, const float **shift, int *relu);
    /* Producer of such a map whose output other nodes read too, or with a
     * residual add fused in (a second input, added before the ReLU): sets
     * its descriptor so that training forward passes make only the map,
     * its first reader (writes_prologue) writing the output; 1 if it can. */
    int (*give_written_prologue)(nn_node *node);
    /* Its sums pass as the writer runs it, on the output's gradient
     * (nn_op_args.in_rows), x and y its input and output, dr its residual
     * input's gradient; its backward then takes the rows (rows_given). */
    void (*written_grad_rows)(const nn_node *node, const float *x, const float *y, float *dr,
                              nn_bn_grad_rows *s);
    /* Producer of such a map whose reader's backward can also sum each row
     * of the gradient it writes (sums_prologue_grad): sets its descriptor so
     * that its training backward passes take those sums instead of their
     * own pass; 1 if it can. prologue_grad_sums: where the reader writes
     * them, and the mean they are taken around (NULL before that). */
    int (*give_grad_sums)(nn_node *node);
    double *(*prologue_grad_sums)(const nn_node *node, const float **mean);
    /* Reader of a producer whose forward kernels write the per-row
     * statistics of their output (sums_output_stats): sets its descriptor
     * so that training forward passes take them instead of their own pass;
     * 1 if it can. input_stats: where the producer writes them. */
    int (*give_input_stats)(nn_node *node);
    double *(*input_stats)(const nn_node *node);
    /* Reader whose training backward may leave its input gradient to the
     * producer (forms_dy) when nn_op_args.defer_dx asks: the coefficients'
     * places into *dx (valid until its next backward), and returned, the
     * float its last backward pass set nonzero if it did so (in the
     * backend's memory: read through nn_dev_download). g is the reader's
     * output gradient, or with a residual add fused in (a second input)
     * that input's gradient, which the reader wrote (plan_dy_forms). */
    const float *(*deferred_dx)(const nn_node *node, nn_bn_dx *dx);
    /* Planning: the context's precision for this node (nn_net_plan). */
    void (*set_precision)(nn_node *node, nn_precision p);
    /* Before every forward pass: whether a batch of n can run in this mode
     * (training 1 or 0); errors name source, the node's line and name. */
    nn_status (*check_batch)(const nn_node *node, int n, int training, const char *source,
                             nn_ctx *ctx);
} nn_op_def;

/* The registry (src/ops/registry.c): the entry of op, NULL if out of range;
 * the op called name, NULL (or -1) if none. */
const nn_op_def *nn_op_def_get(nn_op_type op);
const nn_op_def *nn_op_def_find(const char *name);
int nn_op_find(const char *name);
/* Writes "input, conv2d, ... or softmax_ce" (every layer type, in registry
 * order, for error messages) into buf of size bytes, truncated to fit. */
void nn_op_names(char *buf, size_t size);

/* The registry entries, one per op, each defined in its op family's file in
 * src/ops (nn_relu_def in activation.c, ...). */
#define NN_OP_EXTERN_(E, k) extern const nn_op_def nn_##k##_def;
NN_OP_LIST(NN_OP_EXTERN_)
#undef NN_OP_EXTERN_

/* Model text: comments and blocks (model_expand.c) into layer lines, each
 * added as a node (model_file.c); then every layer must lead to the loss. */
nn_status nn_model_parse_lines(nn_net *net, const char *text, const char *const *overrides,
                               int num_overrides);
nn_status nn_model_add_layer(nn_net *net, char *line, int lineno);
/* Index of the layer called name, -1 if none. */
int nn_model_find_layer(const nn_net *net, const char *name);
/* 1 if s is a valid layer or block name: a letter or _, then letters, digits, _ */
int nn_model_valid_name(const char *s);
nn_status nn_model_check(nn_net *net, int last_line);

struct nn_net {
    nn_ctx *ctx;
    char source[256];
    char *model_text;               /* the layer lines, blocks expanded */
    nn_node *nodes;
    int num_nodes;
    int cap_nodes;
    int *name_slots;                /* (name_cap) open-addressing index of the layer
                                       names: node index + 1, 0 = empty */
    int name_cap;                   /* a power of two, at least twice num_nodes */
    int op_layers[NN_OP_COUNT];     /* layers of each op so far (automatic names) */
    nn_param_info *params;
    int num_param_tensors;
    size_t num_params;
    float *param_data;              /* (num_params) */
    float *grad_data;               /* (num_params) */
    nn_param_info *buffers;         /* non-trained state tensors (running stats) */
    int num_buffer_tensors;
    size_t num_buffers;
    float *buffer_data;             /* (num_buffers) */
    int training;                   /* 1 training mode (default), 0 eval mode */
    uint64_t dropout_seed;          /* keys every dropout mask (nn_net_set_dropout_seed) */
    int input_node, logits_node, loss_node;
    int max_batch;                  /* planned batch, 0 before nn_net_plan */
    int cur_n;                      /* batch size of the last forward */
    float *arena;                   /* all activations and their gradients */
    size_t arena_floats;            /* per slot */
    int num_slots;                  /* copies of the activations (nn_net_plan_slots) */
    int slot;                       /* the copy the nodes' pointers address */
    float *ws;                      /* shared workspace */
    float *input_dev;               /* (max_batch, input) the batch on a device that
                                       is not host-visible; NULL on the CPU */
    int32_t *labels_dev;            /* (max_batch) its labels, likewise */
    size_t ws_floats;
    int folded_pass;                /* the last forward ran folded ops (no backward) */
    int prologue_pass;              /* the last forward ran prologues (training) */
    float *fold_ws;                 /* eval mode: the folded weights, bias, scale and
                                       shift of one producer at a time (NULL: none) */
    float *gscratch[NN_MAX_INPUTS]; /* per input slot: a gradient written here is then
                                       added to a node read by several layers (NULL:
                                       no such gradient comes through the slot) */
    size_t gscratch_floats;
    float last_loss;
    const int32_t *labels;          /* labels of the last forward */
    int timing;                     /* accumulate per-node times below */
    double *time_fwd, *time_bwd;    /* (num_nodes) seconds */
    nn_layer_hook hook;             /* optional per-layer callback */
    void *hook_user;
    nn_grad_hook grad_hook;         /* optional: gradients final from an offset on */
    void *grad_hook_user;
    nn_reducer reduce;              /* optional: sums over data-parallel ranks */
    void *reduce_user;
    int shards;                     /* training passes run as this many shards
                                       (nn_net_set_shards; 1: whole batches) */
    int shard_bounds[NN_MAX_SHARDS + 1]; /* of the current pass */
    int shard_n;                    /* the batch they split */
    float *shard_ws;                /* shards run at once on several threads: one
                                       workspace per thread, shard_ws_floats each */
    size_t shard_ws_floats;
    int shard_slots;                /* how many such workspaces (0: none planned) */
    nn_ctx shard_ctx;               /* the context a shard's kernels get then */
};

/*
 * Pipeline stages (src/train/pipeline.c). A stage runs a contiguous range of
 * nodes on micro-batches, several of them in flight: nn_net_plan_slots plans
 * num_slots copies of the activations (and their gradients and saved data)
 * for max_batch samples each, and nn_net_use_slot points every node at copy
 * `slot`. The parameters, gradients and workspace are shared.
 */
nn_status nn_net_plan_slots(nn_net *net, int max_batch, int num_slots);
void nn_net_use_slot(nn_net *net, int slot);
/* Forward of nodes first..last on n samples: x is the input batch when the
 * range starts at the input node; otherwise node first-1's output must hold
 * the stage's input. labels when the range ends at the loss (*loss: its mean). */
nn_status nn_net_forward_range(nn_net *net, const float *x, const int32_t *labels, int n,
                               int first, int last, float *loss);
/* Backward of nodes last down to first; node last's gradient must hold the
 * next stage's unless last is the loss. Adds into the parameter gradients and
 * leaves node first-1's gradient. loss_scale scales the loss's gradient. x:
 * the micro-batch's input when the range starts at the input node. */
void nn_net_backward_range(nn_net *net, const float *x, int first, int last, int n,
                           const int32_t *labels, float loss_scale);
/* Splits nodes 1..loss into `stages` contiguous ranges, each ending at a
 * node after which only that node's output crosses, with the smallest
 * largest sum of cost (per node; NULL: 1 each). last[s] is stage s's last
 * node. Returns 0 when the graph has too few such cuts. */
int nn_net_stage_cuts(const nn_net *net, int stages, const double *cost, int *last);

#endif /* NN_GRAPH_H */
