/*
 * dropout.c - torch.nn.Dropout: in training mode each element is zeroed with
 * probability p and the kept ones are scaled by 1/(1-p); eval mode is the
 * identity. Definition and CPU kernels.
 *
 * The mask holds no RNG state: element i of a batch call is kept when a hash
 * of (the net's dropout seed, the layer's position, i) is at least p, so it
 * does not depend on the thread count and a resumed run that sets the same
 * seed gets the same mask. Forward saves the mask (one byte per element in
 * the node's aux memory) for backward.
 */
#include "ops/ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static nn_status dropout_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    const char *s = nn_kv_str(kv, "p");
    double v = 0.5; /* torch.nn.Dropout's default */
    if (s) {
        char *end;
        errno = 0;
        v = strtod(s, &end);
        if (end == s || *end != '\0' || errno || !(v >= 0.0 && v < 1.0))
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: dropout p must be a number in [0, 1), got '%s'",
                               kv->source, kv->line, s);
    }
    node->d.dropout.p = (float)v;
    if (!(node->d.dropout.p < 1.0f)) /* a double just below 1 rounds to 1.0f */
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: dropout p must be in [0, 1), got '%s'",
                           kv->source, kv->line, s);
    node->out = *in;
    node->aux_bytes = (size_t)nn_shape_numel(in); /* the keep mask, one byte per element */
    return NN_OK;
}

static int64_t dropout_flops(const nn_node *node) { return nn_shape_numel(&node->out); }


/* splitmix64's finalizer: a bijection of 64-bit words that mixes every bit */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t layer_key(uint64_t seed, int node_index) {
    return mix64(seed ^ mix64(0x9e3779b97f4a7c15ULL * (uint64_t)(node_index + 1)));
}

static int keep_keyed(uint64_t key, size_t i, float p) {
    uint64_t h = mix64(key + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
    return (float)(h >> 40) * 0x1p-24f >= p; /* 24-bit uniform in [0, 1), exact in float */
}

int nn_dropout_keep(uint64_t seed, int node_index, size_t i, float p) {
    return keep_keyed(layer_key(seed, node_index), i, p);
}

/* below this many elements a parallel region costs more than it saves */
#define PARALLEL_MIN 32768

void nn_dropout_forward(float *y, uint8_t *mask, const float *x, float p, uint64_t seed,
                        int node_index, size_t count, int training, nn_ctx *ctx) {
    if (!training) {
        memcpy(y, x, count * sizeof(float));
        memset(mask, 1, count);
        return;
    }
    const uint64_t key = layer_key(seed, node_index);
    const float scale = 1.0f / (1.0f - p);
    const int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++)
        for (size_t i = count * t / T; i < count * (t + 1) / T; i++) {
            int k = keep_keyed(key, i, p);
            mask[i] = (uint8_t)k;
            y[i] = k ? x[i] * scale : 0.0f;
        }
}

void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, float p, size_t count,
                         int training, nn_ctx *ctx) {
    if (!training) {
        memcpy(dx, dy, count * sizeof(float));
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    const int T = count >= PARALLEL_MIN ? ctx->threads : 1;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++)
        for (size_t i = count * t / T; i < count * (t + 1) / T; i++)
            dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

static void dropout_fwd(const nn_op_args *a) {
    nn_dropout_forward(a->y, (uint8_t *)a->aux, a->x, a->node->d.dropout.p, a->dropout_seed,
                       a->node_index, (size_t)a->n * (size_t)nn_shape_numel(&a->node->out),
                       a->training, a->ctx);
}

static void dropout_bwd(const nn_op_args *a) {
    if (!a->dx) return;
    nn_dropout_backward(a->dx, a->dy, (const uint8_t *)a->aux, a->node->d.dropout.p,
                        (size_t)a->n * (size_t)nn_shape_numel(&a->node->out), a->training,
                        a->ctx);
}

static const nn_op_kernels dropout_cpu = {.forward = dropout_fwd, .backward = dropout_bwd};

const nn_op_def nn_dropout_def = {
    .name = "dropout",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "p",
    .configure = dropout_configure,
    .flops = dropout_flops,
    .kernels = {[NN_KERNELS_CPU] = &dropout_cpu, NN_CUDA_KERNELS(dropout)},
};
