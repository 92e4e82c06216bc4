/*
 * pipeline.c - pipeline (model) parallel training over a communicator.
 *
 * The graph is cut after nodes whose output is the only tensor crossing
 * (nn_net_stage_cuts), into K stages of about equal time: each layer's
 * forward + backward on a micro-batch as world rank 0 measures it (or
 * their FLOPs per sample, NN_BALANCE_FLOPS). Every rank holds the whole net but runs only its
 * stage's nodes. A batch of n is split into M micro-batches of n/M (sizes
 * differ by at most one; empty ones are skipped). Micro-batch j's forward
 * on stage s receives node first-1's output from stage s-1, runs the stage's
 * nodes and sends node last's output on to stage s+1; its backward receives
 * the gradient of node last from stage s+1, runs the stage's backward
 * kernels and sends the gradient of node first-1 back. The last stage's loss
 * gradient is scaled by n_j / n, so the gradients added over the
 * micro-batches are the batch's mean gradient, as one process computes it.
 *
 * Schedules: GPipe runs all M forwards, then all M backwards; 1F1B (the
 * default) runs K-1-s forwards on stage s, then alternates one forward and
 * one backward, so at most K-s micro-batches are in flight on stage s (and
 * as many copies of its activations are planned: nn_net_plan_slots). Both
 * run the backwards in micro-batch order, so they add the same gradients in
 * the same order and give the same bytes. Sends are non-blocking; a slot's
 * sends are waited for before the slot is used again and at the step's end.
 */
#include "train/pipeline.h"
#include "core/graph.h"
#include "backend/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nn_pipeline {
    nn_net *net;
    nn_comm *pipe;
    int stages, stage;        /* K, and this rank's stage (K-1 - pipe rank) */
    int *last;                /* (K) the last node of each stage */
    int first_node, last_node;/* this stage's nodes */
    int micro;                /* micro-batches per batch */
    nn_pipeline_schedule schedule;
    int slots;                /* activation copies in flight on this stage */
    int *send_req;            /* (slots x 2) sends from each slot in flight, -1: none */
    size_t *plo, *phi;        /* (K) each stage's parameter range */
    size_t *blo, *bhi;        /* (K) and buffer range */
    size_t x_floats;          /* per sample: the net's input */
    size_t in_floats;         /* per sample: node first-1's output (0 on stage 0) */
    size_t out_floats;        /* per sample: node last's output (0 on the last stage) */
    char describe[256];
};

static int peer_rank(const nn_pipeline *p, int stage) { return p->stages - 1 - stage; }

/* The parameter and buffer ranges of nodes (lo, hi]. */
static void node_ranges(const nn_net *net, int lo, int hi, size_t *plo, size_t *phi, size_t *blo,
                        size_t *bhi) {
    *plo = *phi = *blo = *bhi = (size_t)-1;
    size_t pend = 0, bend = 0;
    for (int i = 0; i <= hi; i++) {
        const nn_node *node = &net->nodes[i];
        if (node->param_index >= 0) {
            const nn_param_info *q = &net->params[node->param_index + node->num_params - 1];
            if (i > lo && *plo == (size_t)-1) *plo = net->params[node->param_index].offset;
            pend = q->offset + q->numel;
        }
        if (node->buffer_index >= 0) {
            const nn_param_info *q = &net->buffers[node->buffer_index + node->num_buffers - 1];
            if (i > lo && *blo == (size_t)-1) *blo = net->buffers[node->buffer_index].offset;
            bend = q->offset + q->numel;
        }
    }
    if (*plo == (size_t)-1) *plo = pend; /* no parameters: an empty range */
    if (*blo == (size_t)-1) *blo = bend;
    *phi = pend;
    *bhi = bend;
}

/* Per-layer seconds of forward + backward on a micro-batch of rows zero
 * images into best (N): a warm-up pass, then the least of three. The weights'
 * gradients are left zero and the buffers (batch norm's running statistics)
 * as they were. */
static nn_status time_layers(nn_net *net, int rows, float *best) {
    nn_ctx *ctx = net->ctx;
    const int N = net->num_nodes;
    const size_t per = (size_t)nn_shape_numel(&net->nodes[net->input_node].out);
    const size_t nb = nn_net_num_buffers(net);
    float *x = calloc((size_t)rows * per, sizeof *x), *keep = malloc((nb + 1) * sizeof *keep);
    int32_t *y = calloc((size_t)rows, sizeof *y);
    nn_status s = NN_OK;
    if (!x || !keep || !y) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory timing the layers");
        goto out;
    }
    if ((s = nn_net_plan(net, rows))) goto out;
    nn_dev_download(ctx->backend, keep, nn_net_buffers(net), nb * sizeof(float));
    for (int i = 0; i < N; i++) best[i] = 1e30f;
    for (int pass = 0; pass < 4 && !s; pass++) {
        nn_net_set_timing(net, 1);
        float loss;
        if (!(s = nn_net_forward(net, x, y, rows, &loss))) s = nn_net_backward(net);
        for (int i = 0; pass > 0 && i < N; i++) {
            double f, b;
            nn_net_layer_time(net, i, &f, &b);
            if ((float)(f + b) < best[i]) best[i] = (float)(f + b);
        }
    }
    nn_net_set_timing(net, 0);
    nn_net_zero_grad(net);
    nn_dev_upload(ctx->backend, nn_net_buffers(net), keep, nb * sizeof(float));
out:
    free(x), free(keep), free(y);
    return s;
}

/* The layers' costs as rank 0 of world times them (time_layers), sent to
 * every rank of world so that all cut the graph alike: the pipelines of
 * several data-parallel replicas too, whose stages all-reduce the same
 * parameter ranges (each replica timing its own layers cut them at different
 * layers now and then, and the all-reduces' sizes disagreed). The other
 * ranks wait in the broadcast instead of running the same passes on the
 * same cores. */
static nn_status measure_costs(nn_net *net, nn_comm *world, int rows, double *cost) {
    const int N = net->num_nodes;
    float *best = malloc((size_t)N * sizeof *best);
    if (!best) return nn_ctx_fail(net->ctx, NN_ENOMEM, "out of memory timing the layers");
    nn_status s = world->rank == 0 ? time_layers(net, rows, best) : NN_OK;
    if (!s) s = world->broadcast(world, best, (size_t)N, 0);
    for (int i = 0; !s && i < N; i++) cost[i] = best[i];
    free(best);
    return s;
}

nn_status nn_pipeline_new(nn_net *net, nn_comm *world, nn_comm *pipe, int micro,
                          nn_pipeline_schedule schedule, nn_stage_balance balance, int batch,
                          nn_pipeline **out) {
    nn_ctx *ctx = net->ctx;
    *out = NULL;
    const int K = pipe->size;
    if (micro < 1 || micro > 4096)
        return nn_ctx_fail(ctx, NN_EINVAL, "micro_batches is %d; expected 1..4096", micro);
    if (micro > batch)
        return nn_ctx_fail(ctx, NN_EINVAL, "%d micro-batches of a batch of %d: at most one per "
                           "sample (lower --micro-batches or raise --batch)", micro, batch);
    if (!ctx->backend->host_visible)
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "pipeline stages run on the CPU backend only");
    nn_pipeline *p = calloc(1, sizeof *p);
    double *cost = calloc((size_t)net->num_nodes, sizeof *cost);
    nn_status s = NN_OK;
    if (!p || !cost || !(p->last = calloc((size_t)K, sizeof *p->last)) ||
        !(p->plo = calloc((size_t)K * 4, sizeof *p->plo))) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the pipeline");
        goto fail;
    }
    p->phi = p->plo + K;
    p->blo = p->plo + 2 * K;
    p->bhi = p->plo + 3 * K;
    p->net = net;
    p->pipe = pipe;
    p->stages = K;
    p->stage = K - 1 - pipe->rank;
    p->micro = micro;
    p->schedule = schedule;
    if (balance == NN_BALANCE_TIME)
        s = measure_costs(net, world, (batch + micro - 1) / micro, cost);
    else
        for (int i = 0; i < net->num_nodes; i++) {
            nn_layer_info info;
            nn_net_layer_info(net, i, &info);
            cost[i] = (double)(info.flops + info.bwd_flops);
        }
    if (s) goto fail;
    if (!nn_net_stage_cuts(net, K, cost, p->last)) {
        s = nn_ctx_fail(ctx, NN_EINVAL, "%s: cannot be cut into %d pipeline stages: too few "
                        "places where a single layer's output is all that crosses (fewer "
                        "--stages)", net->source, K);
        goto fail;
    }
    size_t len = 0;
    for (int k = 0; k < K; k++) {
        const int lo = k ? p->last[k - 1] : 0;
        node_ranges(net, lo, p->last[k], &p->plo[k], &p->phi[k], &p->blo[k], &p->bhi[k]);
        const char *a = net->nodes[lo + 1].name, *b = net->nodes[p->last[k]].name;
        len += (size_t)snprintf(p->describe + len, sizeof p->describe - len, "%s%s%s%s",
                                k ? " | " : "", a, lo + 1 < p->last[k] ? ".." : "",
                                lo + 1 < p->last[k] ? b : "");
        if (len >= sizeof p->describe) len = sizeof p->describe - 1;
    }
    p->first_node = p->stage ? p->last[p->stage - 1] + 1 : 0;
    p->last_node = p->last[p->stage];
    p->x_floats = (size_t)nn_shape_numel(&net->nodes[net->input_node].out);
    p->in_floats = p->stage ? (size_t)nn_shape_numel(&net->nodes[p->first_node - 1].out) : 0;
    p->out_floats =
        p->stage < K - 1 ? (size_t)nn_shape_numel(&net->nodes[p->last_node].out) : 0;
    /* micro-batches in flight on this stage: all of them (GPipe), or K - s */
    p->slots = schedule == NN_PIPELINE_GPIPE ? micro : (K - p->stage < micro ? K - p->stage : micro);
    if (!(p->send_req = malloc((size_t)p->slots * 2 * sizeof *p->send_req))) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the pipeline");
        goto fail;
    }
    for (int i = 0; i < 2 * p->slots; i++) p->send_req[i] = -1;
    if ((s = nn_net_plan_slots(net, (batch + micro - 1) / micro, p->slots))) goto fail;
    free(cost);
    *out = p;
    return NN_OK;
fail:
    free(cost);
    nn_pipeline_free(p);
    return s;
}

void nn_pipeline_free(nn_pipeline *p) {
    if (!p) return;
    free(p->last);
    free(p->plo);
    free(p->send_req);
    free(p);
}

/* Waits for the sends from slot (or from every slot, slot -1). */
static nn_status wait_sends(nn_pipeline *p, int slot) {
    nn_status s = NN_OK;
    for (int i = slot < 0 ? 0 : 2 * slot; i < (slot < 0 ? 2 * p->slots : 2 * slot + 2); i++)
        if (p->send_req[i] >= 0) {
            nn_status w = p->pipe->wait(p->pipe, p->send_req[i]);
            if (w && !s) s = w;
            p->send_req[i] = -1;
        }
    return s;
}

/* Micro-batch j of a batch of n: samples [*lo, *lo + count). */
static int micro_range(const nn_pipeline *p, int n, int j, int *lo) {
    *lo = (int)((int64_t)n * j / p->micro);
    return (int)((int64_t)n * (j + 1) / p->micro) - *lo;
}

static nn_status forward_micro(nn_pipeline *p, const float *x, const int32_t *y, int n, int j,
                               double *loss_sum) {
    nn_net *net = p->net;
    int lo;
    const int m = micro_range(p, n, j, &lo);
    if (m == 0) return NN_OK;
    const int slot = j % p->slots;
    nn_status s = wait_sends(p, slot);
    if (s) return s;
    nn_net_use_slot(net, slot);
    const int last_stage = p->stage == p->stages - 1;
    if (p->stage > 0 &&
        (s = p->pipe->recv(p->pipe, net->nodes[p->first_node - 1].y, (size_t)m * p->in_floats,
                           peer_rank(p, p->stage - 1), 2 * j)))
        return s;
    float loss = 0.0f;
    s = nn_net_forward_range(net, p->stage == 0 ? x + (size_t)lo * p->x_floats : NULL,
                             last_stage ? y + lo : NULL, m, p->first_node, p->last_node, &loss);
    if (s) return s;
    if (last_stage) {
        *loss_sum += (double)loss * m;
        return NN_OK;
    }
    return p->pipe->send_start(p->pipe, net->nodes[p->last_node].y, (size_t)m * p->out_floats,
                               peer_rank(p, p->stage + 1), 2 * j, &p->send_req[2 * slot]);
}

static nn_status backward_micro(nn_pipeline *p, const float *x, const int32_t *y, int n, int j) {
    nn_net *net = p->net;
    int lo;
    const int m = micro_range(p, n, j, &lo);
    if (m == 0) return NN_OK;
    const int slot = j % p->slots;
    nn_net_use_slot(net, slot);
    const int last_stage = p->stage == p->stages - 1;
    nn_status s;
    if (!last_stage &&
        (s = p->pipe->recv(p->pipe, net->nodes[p->last_node].dy, (size_t)m * p->out_floats,
                           peer_rank(p, p->stage + 1), 2 * j + 1)))
        return s;
    nn_net_backward_range(net, p->stage == 0 ? x + (size_t)lo * p->x_floats : NULL, p->first_node,
                          p->last_node, m, last_stage ? y + lo : NULL,
                          last_stage ? (float)m / (float)n : 1.0f);
    if (p->stage == 0) return NN_OK;
    return p->pipe->send_start(p->pipe, net->nodes[p->first_node - 1].dy,
                               (size_t)m * p->in_floats, peer_rank(p, p->stage - 1), 2 * j + 1,
                               &p->send_req[2 * slot + 1]);
}

nn_status nn_pipeline_step(nn_pipeline *p, const float *x, const int32_t *y, int n,
                           double *loss_sum) {
    const int M = p->micro, K = p->stages;
    *loss_sum = 0.0;
    nn_status s = NN_OK;
    if (p->schedule == NN_PIPELINE_GPIPE) {
        for (int j = 0; j < M && !s; j++) s = forward_micro(p, x, y, n, j, loss_sum);
        for (int j = 0; j < M && !s; j++) s = backward_micro(p, x, y, n, j);
    } else {
        const int warm = K - 1 - p->stage < M ? K - 1 - p->stage : M;
        for (int j = 0; j < warm && !s; j++) s = forward_micro(p, x, y, n, j, loss_sum);
        for (int j = warm; j < M && !s; j++) {
            s = forward_micro(p, x, y, n, j, loss_sum);
            if (!s) s = backward_micro(p, x, y, n, j - warm);
        }
        for (int j = M - warm; j < M && !s; j++) s = backward_micro(p, x, y, n, j);
    }
    nn_status w = wait_sends(p, -1);
    nn_net_use_slot(p->net, 0);
    return s ? s : w;
}

void nn_pipeline_param_range(const nn_pipeline *p, size_t *lo, size_t *hi) {
    *lo = p->plo[p->stage];
    *hi = p->phi[p->stage];
}

nn_status nn_pipeline_gather(nn_pipeline *p, float *buf, int buffers) {
    for (int k = 0; k < p->stages; k++) {
        const size_t lo = buffers ? p->blo[k] : p->plo[k], hi = buffers ? p->bhi[k] : p->phi[k];
        if (hi <= lo) continue;
        nn_status s = p->pipe->broadcast(p->pipe, buf + lo, hi - lo, peer_rank(p, k));
        if (s) return s;
    }
    return NN_OK;
}

const char *nn_pipeline_describe(const nn_pipeline *p) { return p->describe; }
int nn_pipeline_stage(const nn_pipeline *p) { return p->stage; }
