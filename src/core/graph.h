/*
 * graph.h - the network graph: node types, per-op descriptors, the op
 * definition table (parse keys, infer shapes, count FLOPs) and the kernel
 * table a backend provides. Internal to libnnopt.
 */
#ifndef NN_GRAPH_H
#define NN_GRAPH_H

#include "nn_internal.h"

typedef enum {
    NN_OP_INPUT = 0,
    NN_OP_CONV2D,
    NN_OP_MAXPOOL,
    NN_OP_RELU,
    NN_OP_LINEAR,
    NN_OP_FLATTEN,
    NN_OP_SOFTMAX_CE,
    NN_OP_LEAKY_RELU,
    NN_OP_GELU,
    NN_OP_SILU,
    NN_OP_SIGMOID,
    NN_OP_TANH,
    NN_OP_AVGPOOL,
    NN_OP_GAP,
    NN_OP_ADD,
    NN_OP_BATCHNORM,
    NN_OP_CONCAT,
    NN_OP_DROPOUT,
    NN_OP_COUNT
} nn_op_type;

#define NN_MAX_INPUTS 4
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
} nn_conv2d_desc;

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
} nn_bn_desc;

typedef struct {
    int C1, C2;         /* channels of the first and second input; output C1 + C2 */
    int inner;          /* elements per channel per sample (H*W, or 1 for a flat input) */
} nn_concat_desc;

typedef struct {
    float p;            /* probability of zeroing an element, in [0, 1) */
} nn_dropout_desc;

typedef struct {
    int classes;
    float smoothing;    /* label smoothing eps in [0, 1]; 0 = plain cross-entropy */
} nn_loss_desc;

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
    int needs_dx;                   /* 1 if the input gradient must be computed */
    int needs_dx2;                  /* the same for the second input */
    int grad_writers;               /* kernels writing the gradient of this node's
                                       memory (its own consumers and those of its
                                       aliases); more than one: they accumulate */
    int alias_of;                   /* node whose memory this one shares (flatten,
                                       fused ReLU), or -1 */
} nn_node;

/* Everything a kernel call needs; pointers are NULL when not applicable. */
typedef struct {
    const nn_node *node;
    int n;                          /* batch size of this call */
    float *y;                       /* output (n, out) */
    const float *x;                 /* first input (n, in) */
    const float *x2;                /* second input (binary ops) */
    const float *w, *b;             /* parameters */
    const float *dy;                /* gradient of output */
    float *dx;                      /* gradient of first input, overwritten; NULL = skip */
    float *dx2;                     /* gradient of the second input (binary ops) */
    float *dw, *db;                 /* parameter gradients, accumulated */
    float *buf;                     /* the node's buffers, contiguous (read-write) */
    int training;                   /* the net's mode: 1 training, 0 eval */
    uint64_t dropout_seed;          /* the net's dropout seed (nn_net_set_dropout_seed) */
    int node_index;                 /* position of node in the net (keys dropout masks) */
    void *aux;                      /* op-private saved data */
    float *ws;                      /* workspace, sized by the op's workspace() */
    const int32_t *labels;          /* loss ops */
    float *loss;                    /* loss ops: mean loss out */
    nn_ctx *ctx;
} nn_op_args;

/* A backend's kernels for one op type. */
typedef struct {
    void (*forward)(const nn_op_args *a);
    void (*backward)(const nn_op_args *a);
    /* workspace floats needed for batches up to max_batch on `threads` threads */
    size_t (*workspace)(const nn_node *node, int max_batch, int threads);
} nn_op_kernels;

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

/* Backend-independent definition of an op type. */
typedef struct {
    const char *name;                /* model-file keyword */
    int num_inputs;                  /* 1 for all current ops; 0 for input */
    const char *keys;                /* space-separated keys besides name and in */
    /* Reads the op's keys, checks the input shape, sets node->d, node->out and
     * the parameter shapes. Errors through kv->ctx naming source:line. */
    nn_status (*configure)(nn_node *node, nn_kvlist *kv, const nn_shape *in);
    int64_t (*flops)(const nn_node *node);   /* forward, per sample */
} nn_op_def;

const nn_op_def *nn_op_def_find(const char *name);
/* Model text: comments and blocks (model_expand.c) into layer lines, each
 * added as a node (model_file.c); then every layer must lead to the loss. */
nn_status nn_model_parse_lines(nn_net *net, const char *text);
nn_status nn_model_add_layer(nn_net *net, char *line, int lineno);
/* Index of the layer called name, -1 if none. */
int nn_model_find_layer(const nn_net *net, const char *name);
/* 1 if s is a valid layer or block name: a letter or _, then letters, digits, _ */
int nn_model_valid_name(const char *s);
nn_status nn_model_check(nn_net *net, int last_line);
const nn_op_def *nn_op_def_get(nn_op_type op);

/* Op definitions, one per op family file in src/ops. */
extern const nn_op_def nn_input_def, nn_conv2d_def, nn_maxpool_def, nn_relu_def,
    nn_linear_def, nn_flatten_def, nn_softmax_ce_def, nn_leaky_relu_def, nn_gelu_def,
    nn_silu_def, nn_sigmoid_def, nn_tanh_def, nn_avgpool_def, nn_gap_def, nn_add_def,
    nn_batchnorm_def, nn_concat_def, nn_dropout_def;

/* CPU kernels, one table per op family file in src/ops. */
extern const nn_op_kernels nn_conv2d_cpu, nn_maxpool_cpu, nn_relu_cpu, nn_linear_cpu,
    nn_flatten_cpu, nn_softmax_ce_cpu, nn_leaky_relu_cpu, nn_gelu_cpu, nn_silu_cpu, nn_sigmoid_cpu,
    nn_tanh_cpu, nn_avgpool_cpu, nn_gap_cpu, nn_add_cpu, nn_batchnorm_cpu,
    nn_concat_cpu, nn_dropout_cpu;

struct nn_net {
    nn_ctx *ctx;
    char source[256];
    char *model_text;               /* the layer lines, blocks expanded */
    nn_node *nodes;
    int num_nodes;
    int cap_nodes;
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
    size_t arena_floats;
    float *ws;                      /* shared workspace */
    size_t ws_floats;
    float *gscratch[NN_MAX_INPUTS]; /* per input slot: a gradient written here is then
                                       added to a node read by several layers */
    size_t gscratch_floats;
    float last_loss;
    const int32_t *labels;          /* labels of the last forward */
    int timing;                     /* accumulate per-node times below */
    double *time_fwd, *time_bwd;    /* (num_nodes) seconds */
    nn_layer_hook hook;             /* optional per-layer callback */
    void *hook_user;
    nn_grad_hook grad_hook;         /* optional: gradients final from an offset on */
    void *grad_hook_user;
};

#endif /* NN_GRAPH_H */
