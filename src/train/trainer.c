/*
 * trainer.c - the training loop as a library object. One epoch draws a
 * permutation from the run's RNG; the batch loader prepares (and augments) the
 * next batch while the current one trains; `accumulate` batches make one
 * optimizer step (their mean gradient), which may be clipped and takes the
 * schedule's learning rate. After every epoch: evaluation on the validation
 * and test sets, the schedule's and early stopping's bookkeeping, the driver's
 * report, and an atomic checkpoint. The checkpoint carries the optimizer
 * state, the step, the schedule and early-stopping state (with the best
 * epoch's weights) and the RNG position at the start of the epoch, so a
 * resumed run continues bit for bit, even from the middle of an epoch
 * (save_every, or a stop request). It also records the batch, the
 * accumulation and the training set's size and label hash: a resume with
 * others would not be exact, and is refused.
 *
 * Data parallel (a communicator of P > 1 ranks): the epoch's batches are
 * global batches of P x batch samples from the one permutation every rank
 * draws; rank r trains on its contiguous share of each. Each rank's gradient
 * is weighted by (its samples x P / the global batch's) before the all-reduce
 * averages it, so the average is the global batch's mean gradient even when
 * the last batch splits unevenly. The training loss is summed over the ranks
 * (sum_f64) at the epoch's end and before any checkpoint. With sync_bn the
 * net's reducer sums batch norm's statistics over the ranks (sum_f64) inside
 * every training pass, so batch norm sees the global batch; the running
 * statistics are then the same on every rank, and the replica check covers
 * them too.
 */
#include "core/graph.h"
#include "backend/backend.h"
#include "train/pipeline.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct nn_trainer {
    nn_ctx *ctx;
    nn_net *net;                   /* not owned */
    nn_optimizer *opt;
    nn_loader *loader;             /* NULL without a training set */
    nn_train_config cfg;
    nn_train_callbacks cb;
    const nn_dataset *train, *val, *test;
    nn_train_state st;
    int64_t batches;               /* per epoch */
    int64_t *perm;                 /* (train->n) the epoch's order */
    float *x;                      /* (batch, C, H, W) evaluation batch */
    int32_t *y;                    /* (batch) */
    float *best;                   /* (num_params + num_buffers) weights of the best
                                      validation loss, when early stopping (device);
                                      st.best points here, st.have_best says it is set */
    float *ema;                    /* (2 x num_params) weight averaging (cfg.ema): the
                                      average, then room for a swap (device);
                                      st.ema points here */
    uint64_t labels_hash;          /* of the training set (train_labels_hash) */
    nn_rng epoch_rng;              /* st.rng advanced by the epoch's permutation */
    int in_epoch;                  /* the loader runs st.epoch */
    float lr;                      /* of the last optimizer step */
    int64_t epoch_samples;         /* trained since the epoch (or resume) started */
    double epoch_t0;
    /* data parallel, this epoch: seconds blocked waiting for all-reduces,
     * and seconds they were in flight (first start to last wait's end) */
    double comm_wait_s, comm_flight_s, comm_first;
    int finished;
    volatile sig_atomic_t stop_requested;
    int stop_by_peer;              /* several ranks: the stop was asked of another rank */
    /* data parallel: the gradient buffer's buckets, from its end backwards */
    nn_comm *comm;                 /* NULL: one process */
    size_t bucket;                 /* floats per bucket */
    int num_buckets, started;      /* buckets started in this step */
    int *req;                      /* (num_buckets) the started all-reduces */
    nn_status comm_status;         /* first failure of a start in this step */
    float bucket_scale;            /* this rank's weight, applied before each start */
    /* data parallel: sharding of every global batch over the ranks */
    int ranks, rank;               /* 1, 0 without a communicator */
    int64_t global_batch;          /* ranks x cfg.batch */
    int auto_steps;                /* sched.total_steps follows the batches per epoch */
    int64_t *shard;                /* (train->n) this rank's samples of the epoch, in order */
    double pend_loss, pend_seen;   /* this rank's loss sum and samples not yet summed */
    int sync_bn;                   /* the net's reducer is ours (cfg.sync_bn, P > 1) */
    nn_status reduce_status;       /* first failure of the reducer in this pass */
    /* every rank (P > 1): losses, evaluation, the replica check, checkpoints;
     * without a pipeline the same as comm */
    nn_comm *world;
    /* pipeline parallel (cfg.stages > 1): the stages of this replica, and the
     * communicators split from world for it (comm: this stage's replicas) */
    nn_pipeline *pipeline;
    nn_comm *pipe, *stage_comm;
};

#define NN_DEFAULT_BUCKET_BYTES (25u << 20)
#define STOP_CHECK_STEPS 16 /* ranks agree on stop requests this often */

nn_train_config nn_train_config_defaults(void) {
    nn_train_config c = {.epochs = 5, .batch = 64, .accumulate = 1, .seed = 1, .shuffle = 1,
                         .norm = {NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD}};
    c.optim = nn_optim_defaults(NN_OPTIM_SGD);
    c.optim.lr = 0.01f;
    c.optim.momentum = 0.9f;
    c.sched = nn_sched_defaults(NN_SCHED_CONSTANT, c.optim.lr);
    return c;
}

/* The recipe's checks that no other module makes. */
static nn_status check_config(nn_ctx *ctx, const nn_train_config *c, const nn_net *net) {
    if (c->epochs < 1) return nn_ctx_fail(ctx, NN_EINVAL, "epochs is %d; expected >= 1", c->epochs);
    if (c->batch < 1 || c->batch > net->max_batch)
        return nn_ctx_fail(ctx, NN_EINVAL, "batch is %d; the network is planned for 1..%d",
                           c->batch, net->max_batch);
    if (c->accumulate < 1)
        return nn_ctx_fail(ctx, NN_EINVAL, "accumulate is %d; expected >= 1", c->accumulate);
    if (!(c->norm.std > 0.0f) || !isfinite(c->norm.mean))
        return nn_ctx_fail(ctx, NN_EINVAL, "normalization mean %g / std %g; expected a finite "
                           "mean and std > 0", (double)c->norm.mean, (double)c->norm.std);
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "label_smoothing is %g; expected 0 <= e < 1",
                           (double)c->label_smoothing);
    if (!(c->clip_grad_norm >= 0.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "clip_grad_norm is %g; expected >= 0",
                           (double)c->clip_grad_norm);
    if (c->early_stop < 0 || c->save_every < 0 || !(c->min_delta >= 0.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "early_stop, min_delta and save_every must be >= 0");
    if (!(c->ema >= 0.0f && c->ema < 1.0f))
        return nn_ctx_fail(ctx, NN_EINVAL, "ema is %g; expected 0 (off) or a decay in (0, 1), "
                           "such as 0.999", (double)c->ema);
    if (c->ema > 0.0f && c->stages > 1)
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "ema (weight averaging) does not run with "
                           "pipeline stages");
    return NN_OK;
}

#define FNV64_OFFSET 0xcbf29ce484222325ULL

/* FNV-1a, 64-bit: h continued over n bytes. */
static uint64_t fnv1a64(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* FNV-1a over the labels as little-endian int32 in order: the training set's
 * fingerprint in checkpoints. */
static uint64_t labels_hash(const nn_dataset *d) {
    uint64_t h = FNV64_OFFSET;
    for (int64_t i = 0; d && i < d->n; i++) {
        const uint32_t v = (uint32_t)d->labels[i];
        const unsigned char le[4] = {v & 0xffu, v >> 8 & 0xffu, v >> 16 & 0xffu, v >> 24};
        h = fnv1a64(h, le, sizeof le);
    }
    return h;
}

static void scale_grads(const nn_backend *be, float *g, size_t n, float s);
static void swap_ema(nn_trainer *t);

/* Samples of shard k of K in a batch of n: as share_range splits a global
 * batch over the ranks (and the net its shards). */
static int shard_count(int64_t n, int k, int K) {
    return (int)((int64_t)(k + 1) * n / K - (int64_t)k * n / K);
}

/* cfg.shards K on `ranks` ranks: one process computes each global batch as
 * K shards (the net's), K ranks one shard each (the net's batches whole);
 * anything else is refused, as is batch norm without sync_bn (each shard's
 * statistics would be its own, and its running ones could not be one
 * rank's). The last global batch must leave every shard a share that
 * training takes (with sync_bn, some share), as set_geometry checks the
 * ranks'. */
static nn_status set_shards(nn_trainer *t, int ranks) {
    const int K = t->cfg.shards > 1 ? t->cfg.shards : 1;
    if (t->comm) t->comm->ordered = K > 1; /* the ranks' sums in rank order */
    if (K == 1) return nn_net_set_shards(t->net, 1);
    if (ranks != 1 && ranks != K)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "shards %d on %d ranks: run 1 process or %d ranks",
                           K, ranks, K);
    if (t->cfg.accumulate > 1 || t->cfg.stages > 1)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "shards do not combine with %s yet",
                           t->cfg.accumulate > 1 ? "accumulate" : "stages");
    for (int i = 0; i < t->net->num_nodes && !t->cfg.sync_bn; i++)
        if (nn_op_def_get(t->net->nodes[i].op)->couples_batch)
            return nn_ctx_fail(t->ctx, NN_EINVAL, "shards with batch norm (layer '%s') need "
                               "sync_bn (--sync-bn): the statistics over the global batch",
                               t->net->nodes[i].name);
    if (ranks > 1) return nn_net_set_shards(t->net, 1);
    const int64_t n = t->train ? t->train->n : 0;
    const int last = n ? (int)(n - (t->batches - 1) * t->cfg.batch) : 0;
    for (int k = 0; k < K && last; k++) {
        const int cnt = shard_count(last, k, K);
        /* with sync_bn every shard takes part in every pass, as every rank */
        if ((cnt == 0 && t->cfg.sync_bn) ||
            (cnt > 0 && cnt < t->cfg.batch && nn_net_check_batch(t->net, cnt, 1)))
            return nn_ctx_fail(t->ctx, NN_EINVAL, "%lld training images in batches of %d leave "
                               "shard %d of %d a last share of %d, which training in shards "
                               "cannot take (change --batch or --train-limit)", (long long)n,
                               t->cfg.batch, k, K, cnt);
    }
    return nn_net_set_shards(t->net, K);
}

/* The shards' gradients (one process, cfg.shards) combined as the ranks'
 * all-reduce combines theirs: each weighted by its share of the n samples
 * (1 for equal shares), added in shard order, divided by their number. */
static void combine_shards(nn_trainer *t, int n) {
    const int K = nn_net_shards(t->net);
    const size_t np = nn_net_num_params(t->net);
    const nn_backend *be = t->ctx->backend;
    float *g = nn_net_grads(t->net);
    for (int k = 0; k < K; k++) {
        const int cnt = shard_count(n, k, K);
        const float w = (float)((double)cnt * K / (double)n);
        float *gk = nn_net_shard_grads(t->net, k);
        if (w != 1.0f) scale_grads(be, gk, np, w);
        if (k) {
            nn_dev_begin(be);
            nn_dev_add(be, g, gk, np);
            nn_dev_end(be);
        }
    }
    scale_grads(be, g, np, 1.0f / (float)K);
}

nn_status nn_trainer_new(nn_net *net, const nn_train_config *cfg, const nn_dataset *train,
                         const nn_dataset *val, const nn_dataset *test, nn_trainer **out) {
    nn_ctx *ctx = net->ctx;
    *out = NULL;
    nn_status s = check_config(ctx, cfg, net);
    if (s) return s;
    if (cfg->early_stop && !(val && val->n))
        return nn_ctx_fail(ctx, NN_EINVAL, "early stopping needs a validation set");
    nn_trainer *t = calloc(1, sizeof *t);
    if (!t) return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the trainer");
    t->ctx = ctx;
    t->net = net;
    t->cfg = *cfg;
    t->train = train;
    t->val = val && val->n ? val : NULL;
    t->test = test && test->n ? test : NULL;
    const int64_t n = train ? train->n : 0;
    t->batches = (n + cfg->batch - 1) / cfg->batch;
    /* a last batch that training mode cannot take (batch norm with 1 sample)
     * fails now, not after a whole epoch */
    const int last = (int)(n % cfg->batch);
    if (last && (s = nn_net_check_batch(net, last, 1))) {
        char why[512];
        snprintf(why, sizeof why, "%s", nn_ctx_error(ctx));
        s = nn_ctx_fail(ctx, NN_EINVAL, "%lld training images in batches of %d leave a last "
                        "batch of %d, which training cannot take: %s (change --batch or "
                        "--train-limit)", (long long)n, cfg->batch, last, why);
        goto fail;
    }
    const int64_t steps_per_epoch = (t->batches + cfg->accumulate - 1) / cfg->accumulate;
    /* schedules that span the run unless told otherwise */
    if (t->cfg.sched.t_max == 0) t->cfg.sched.t_max = cfg->epochs;
    if (t->cfg.sched.total_steps <= 0) t->cfg.sched.total_steps = steps_per_epoch * cfg->epochs;
    t->cfg.sched.base_lr = cfg->optim.lr;
    if ((s = nn_sched_validate(ctx, &t->cfg.sched))) goto fail;
    if (cfg->label_smoothing > 0 && (s = nn_net_set_label_smoothing(net, cfg->label_smoothing)))
        goto fail;
    if ((s = nn_optim_new(ctx, &cfg->optim, nn_net_num_params(net), &t->opt))) goto fail;
    t->lr = cfg->optim.lr;
    t->auto_steps = cfg->sched.total_steps <= 0;
    t->ranks = 1;
    t->global_batch = cfg->batch;
    t->bucket_scale = 1.0f;
    t->labels_hash = labels_hash(train);
    t->st = (nn_train_state){.seed = cfg->seed,
                             .best_val = INFINITY,
                             .batch = cfg->batch,
                             .accumulate = cfg->accumulate,
                             .train_samples = n,
                             .train_labels_hash = t->labels_hash};
    nn_rng_seed(&t->st.rng, cfg->seed, 2);
    nn_sched_state_init(&t->cfg.sched, &t->st.sched);

    nn_shape in = nn_net_input_shape(net);
    const size_t per = (size_t)nn_shape_numel(&in);
    t->x = malloc((size_t)cfg->batch * per * sizeof(float));
    t->y = malloc((size_t)cfg->batch * sizeof(int32_t));
    t->perm = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    t->shard = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (cfg->early_stop)
        t->best = ctx->backend->alloc((nn_net_num_params(net) + nn_net_num_buffers(net) + 1) *
                                      sizeof(float));
    if (cfg->ema > 0.0f)
        t->ema = ctx->backend->alloc((2 * nn_net_num_params(net) + 1) * sizeof(float));
    if (!t->x || !t->y || !t->perm || !t->shard || (cfg->early_stop && !t->best) ||
        (cfg->ema > 0.0f && !t->ema)) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the trainer's buffers");
        goto fail;
    }
    t->st.best = t->best;
    t->st.ema = t->ema;
    if (train &&
        (s = nn_loader_new(ctx, train, cfg->batch, &cfg->norm, &cfg->aug, cfg->seed, &t->loader)))
        goto fail;
    if ((s = set_shards(t, 1))) goto fail;
    *out = t;
    return NN_OK;
fail:
    nn_trainer_free(t);
    return s;
}

static void release_pipeline(nn_trainer *t) {
    nn_pipeline_free(t->pipeline);
    if (t->pipe) t->pipe->release(t->pipe);
    if (t->stage_comm) t->stage_comm->release(t->stage_comm);
    t->pipeline = NULL;
    t->pipe = t->stage_comm = NULL;
}

void nn_trainer_free(nn_trainer *t) {
    if (!t) return;
    release_pipeline(t);
    if (t->sync_bn) nn_net_set_reducer(t->net, NULL, NULL);
    if (t->cfg.shards > 1) nn_net_set_shards(t->net, 1); /* the net is the caller's again */
    nn_loader_free(t->loader);
    nn_optim_free(t->opt);
    free(t->x);
    free(t->y);
    free(t->perm);
    free(t->shard);
    t->ctx->backend->free(t->best);
    t->ctx->backend->free(t->ema);
    free(t->req);
    free(t);
}

void nn_trainer_set_callbacks(nn_trainer *t, const nn_train_callbacks *cb) {
    t->cb = cb ? *cb : (nn_train_callbacks){0};
}

/* Bucket b covers [lo, hi) of the gradient buffer; bucket 0 ends it. */
static void bucket_range(const nn_trainer *t, int b, size_t *lo, size_t *hi) {
    const size_t n = nn_net_num_params(t->net);
    *hi = n - (size_t)b * t->bucket;
    *lo = *hi > t->bucket ? *hi - t->bucket : 0;
}

/* Starts the all-reduce of every bucket whose gradients are all final. */
static void start_buckets(nn_trainer *t, size_t first_final) {
    float *g = nn_net_grads(t->net);
    while (t->started < t->num_buckets) {
        size_t lo, hi;
        bucket_range(t, t->started, &lo, &hi);
        if (lo < first_final) break;
        /* this rank's share of the global batch's samples, as a weight
         * (1 for equal shares), on the bucket just before it leaves */
        if (t->bucket_scale != 1.0f) scale_grads(t->ctx->backend, g + lo, hi - lo, t->bucket_scale);
        if (t->started == 0) t->comm_first = nn_wall_time();
        nn_status s = t->comm->allreduce_start(t->comm, g + lo, hi - lo, &t->req[t->started]);
        if (s) t->req[t->started] = -1; /* nothing to wait for */
        if (s && !t->comm_status) t->comm_status = s;
        t->started++;
    }
}

static void on_grads_final(void *user, size_t first_final) {
    nn_trainer *t = user;
    start_buckets(t, first_final);
    if (t->started && t->comm->progress) t->comm->progress(t->comm);
}

/* After the backward pass: starts what is left and waits for every bucket. */
static nn_status finish_allreduce(nn_trainer *t) {
    start_buckets(t, 0);
    nn_status s = t->comm_status;
    t->comm_status = NN_OK;
    const double w0 = nn_wall_time();
    for (int b = 0; b < t->num_buckets; b++) {
        if (t->req[b] < 0) continue; /* its start failed (comm_status) */
        nn_status w = t->comm->wait(t->comm, t->req[b]);
        if (w && !s) s = w;
    }
    const double w1 = nn_wall_time();
    t->comm_wait_s += w1 - w0;
    t->comm_flight_s += w1 - t->comm_first;
    t->started = 0;
    return s;
}

/* Samples of global batch k that rank r trains on: [*lo, *hi) of the epoch's
 * permutation. A full batch gives every rank cfg.batch; the last, partial one
 * is split as evenly as it goes (a rank may get none). */
static void share_range(const nn_trainer *t, int64_t k, int r, int64_t *lo, int64_t *hi) {
    const int64_t first = k * t->global_batch, left = t->train->n - first;
    const int64_t m = left < t->global_batch ? left : t->global_batch;
    *lo = first + (int64_t)r * m / t->ranks;
    *hi = first + (int64_t)(r + 1) * m / t->ranks;
}

/* Samples in global batch k over all ranks. */
static int64_t global_count(const nn_trainer *t, int64_t k) {
    const int64_t left = t->train->n - k * t->global_batch;
    return left < t->global_batch ? left : t->global_batch;
}

/* The batching of `ranks` ranks: batches per epoch, the schedule's length
 * when it follows them, and the global batch that checkpoints record. A last
 * batch that leaves some rank a share training cannot take (batch norm with
 * 1 sample) fails now, on every rank alike. */
static nn_status set_geometry(nn_trainer *t, int ranks, int rank) {
    t->ranks = ranks;
    t->rank = rank;
    t->global_batch = (int64_t)t->cfg.batch * ranks;
    const int64_t n = t->train ? t->train->n : 0;
    t->batches = (n + t->global_batch - 1) / t->global_batch;
    if (t->auto_steps)
        t->cfg.sched.total_steps =
            (t->batches + t->cfg.accumulate - 1) / t->cfg.accumulate * t->cfg.epochs;
    t->st.batch = t->global_batch;
    for (int r = 0; r < ranks && n; r++) {
        int64_t lo, hi;
        share_range(t, t->batches - 1, r, &lo, &hi);
        /* synchronized batch norm: every rank runs every pass, for its sums */
        if (hi == lo && t->cfg.sync_bn)
            return nn_ctx_fail(t->ctx, NN_EINVAL, "%lld training images in global batches of "
                               "%lld leave rank %d no share of the last batch, and sync_bn "
                               "needs every rank in every pass (change --batch or "
                               "--train-limit)", (long long)n, (long long)t->global_batch, r);
        if (hi > lo && hi - lo < t->cfg.batch && nn_net_check_batch(t->net, (int)(hi - lo), 1)) {
            char why[512];
            snprintf(why, sizeof why, "%s", nn_ctx_error(t->ctx));
            return nn_ctx_fail(t->ctx, NN_EINVAL, "%lld training images in global batches of "
                               "%lld leave rank %d a last share of %lld, which training cannot "
                               "take: %s (change --batch or --train-limit)", (long long)n,
                               (long long)t->global_batch, r, (long long)(hi - lo), why);
        }
    }
    return NN_OK;
}

/* The net's reducer (sync_bn): sums over the ranks; the first failure is
 * kept for train_micro, and later calls in the pass are skipped. */
static nn_status reduce_ranks(void *user, double *buf, size_t n) {
    nn_trainer *t = user;
    if (t->reduce_status) return t->reduce_status;
    return t->reduce_status = t->comm->sum_f64(t->comm, buf, n);
}

/* Every rank starts from rank 0's parameters and buffers. */
static nn_status broadcast_model(nn_trainer *t, nn_comm *comm) {
    nn_status s = comm->broadcast(comm, nn_net_params(t->net), nn_net_num_params(t->net), 0);
    if (!s && nn_net_num_buffers(t->net))
        s = comm->broadcast(comm, nn_net_buffers(t->net), nn_net_num_buffers(t->net), 0);
    return s;
}

/* Pipeline parallel: the world's ranks as replicas x stages, the net cut
 * and planned for micro-batches, the parameters and buffers from rank 0. */
static nn_status set_pipeline(nn_trainer *t, nn_comm *world) {
    const int K = t->cfg.stages;
    t->comm = NULL;
    if (!world || world->size % K)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "--stages %d needs a multiple of %d ranks "
                           "(mpirun -np %d, or -np %d for %d data-parallel replicas); this run "
                           "has %d", K, K, K, 2 * K, 2, world ? world->size : 1);
    if (!world->split || !world->send_start || !world->recv || !world->release)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "--stages needs a communicator with "
                           "point-to-point messages and split; this one has none");
    if (t->cfg.accumulate > 1 || t->cfg.sync_bn)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "--stages does not combine with %s yet",
                           t->cfg.accumulate > 1 ? "--accumulate" : "--sync-bn");
    const int replica = world->rank / K, pos = world->rank % K;
    nn_status s = world->split(world, replica, pos, &t->pipe);
    if (!s) s = world->split(world, pos, replica, &t->stage_comm);
    if (s) return s;
    if (t->stage_comm->size > 1) t->comm = t->stage_comm;
    if ((s = set_geometry(t, world->size / K, replica))) return s;
    const int micro = t->cfg.micro_batches > 0 ? t->cfg.micro_batches : 2 * K;
    if ((s = nn_pipeline_new(t->net, world, t->pipe, micro, t->cfg.pipeline,
                             t->cfg.stage_balance, t->cfg.batch, &t->pipeline)))
        return s;
    return broadcast_model(t, world);
}

/* Pipeline: every stage's parameters and buffers (and optimizer state, for a
 * checkpoint) to every rank, so all hold the whole model. */
static nn_status gather_stages(nn_trainer *t, int optimizer) {
    if (!t->pipeline) return NN_OK;
    nn_status s = nn_pipeline_gather(t->pipeline, nn_net_params(t->net), 0);
    if (!s) s = nn_pipeline_gather(t->pipeline, nn_net_buffers(t->net), 1);
    for (int i = 0; optimizer && !s && i < nn_optim_num_states(t->opt); i++)
        s = nn_pipeline_gather(t->pipeline, nn_optim_state(t->opt, i, NULL), 0);
    return s;
}

const char *nn_trainer_pipeline(const nn_trainer *t) {
    return t->pipeline ? nn_pipeline_describe(t->pipeline) : NULL;
}

nn_status nn_trainer_set_comm(nn_trainer *t, nn_comm *comm, size_t bucket_bytes) {
    const size_t n = nn_net_num_params(t->net);
    if (t->in_epoch)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "the communicator is set between epochs, not in "
                           "epoch %lld", (long long)t->st.epoch + 1);
    nn_net_set_grad_hook(t->net, NULL, NULL);
    if (t->sync_bn) nn_net_set_reducer(t->net, NULL, NULL);
    t->sync_bn = 0;
    if (t->cfg.sync_bn && comm && comm->size > 1 && !comm->sum_f64)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "sync_bn needs a communicator that sums "
                           "(sum_f64); this one does not");
    free(t->req);
    t->req = NULL;
    release_pipeline(t);
    t->world = comm && comm->size > 1 && n ? comm : NULL;
    if (t->cfg.stages > 1) {
        nn_status s = set_pipeline(t, comm);
        if (s) {
            release_pipeline(t);
            t->world = t->comm = NULL;
            set_geometry(t, 1, 0);
        }
        return s;
    }
    t->comm = t->world;
    nn_status s = set_geometry(t, t->comm ? comm->size : 1, t->comm ? comm->rank : 0);
    if (!s) s = set_shards(t, t->comm ? comm->size : 1);
    if (s || !t->comm) {
        t->comm = t->world = NULL;
        if (s) set_geometry(t, 1, 0);
        return s;
    }
    t->bucket = (bucket_bytes ? bucket_bytes : NN_DEFAULT_BUCKET_BYTES) / sizeof(float);
    if (!t->bucket) t->bucket = 1;
    t->num_buckets = (int)((n + t->bucket - 1) / t->bucket);
    t->started = 0;
    if (!(t->req = calloc((size_t)t->num_buckets, sizeof(int))))
        return nn_ctx_fail(t->ctx, NN_ENOMEM, "out of memory for %d gradient buckets",
                           t->num_buckets);
    if (t->cfg.sync_bn) {
        nn_net_set_reducer(t->net, reduce_ranks, t);
        t->sync_bn = 1;
    }
    return broadcast_model(t, comm);
}

const nn_train_state *nn_trainer_state(const nn_trainer *t) { return &t->st; }
nn_optimizer *nn_trainer_optimizer(nn_trainer *t) { return t->opt; }
int64_t nn_trainer_batches_per_epoch(const nn_trainer *t) { return t->batches; }
int nn_trainer_finished(const nn_trainer *t) { return t->finished; }
void nn_trainer_request_stop(nn_trainer *t) { t->stop_requested = 1; }

/* Adds the ranks' training-loss sums and sample counts since the last call
 * to the epoch's (st.loss_sum, st.seen): then they are the global ones. */
static nn_status sync_loss(nn_trainer *t) {
    if (!t->world) return NN_OK;
    double v[2] = {t->pend_loss, t->pend_seen};
    nn_status s = t->world->sum_f64 ? t->world->sum_f64(t->world, v, 2) : NN_OK;
    if (s) return s;
    t->st.loss_sum += v[0];
    t->st.seen += (int64_t)v[1];
    t->pend_loss = t->pend_seen = 0.0;
    return NN_OK;
}

nn_status nn_trainer_save(nn_trainer *t, const char *path) {
    nn_status s = sync_loss(t);
    if (!s) s = gather_stages(t, 1);
    if (s || (t->world && t->world->rank != 0)) return s; /* rank 0 writes for all */
    return nn_checkpoint_save(t->ctx, path, t->net, t->opt, &t->st);
}

/* Data parallel: the ranks' parameters must be the same bytes. Each rank's
 * 64-bit hash of them, as four 16-bit pieces x and their squares, is summed
 * over the ranks: sum x^2 / P == (sum x / P)^2 for every piece (exact in
 * double) holds only when all ranks hold the same piece, and every rank sees
 * the same sums, so all ranks agree on the verdict. */
static nn_status check_replicas(nn_trainer *t) {
    if (!t->world || !t->world->sum_f64) return NN_OK;
    /* with sync_bn the batch-norm statistics too: they came from the same sums */
    const size_t np = nn_net_num_params(t->net);
    const size_t nb = t->sync_bn || t->pipeline ? nn_net_num_buffers(t->net) : 0;
    float *host = malloc((np + nb + 1) * sizeof(float));
    if (!host) return nn_ctx_fail(t->ctx, NN_ENOMEM, "out of memory for the replica check");
    nn_ctx_download(t->ctx, host, nn_net_params(t->net), np * sizeof(float));
    if (nb) nn_ctx_download(t->ctx, host + np, nn_net_buffers(t->net), nb * sizeof(float));
    const uint64_t h = fnv1a64(FNV64_OFFSET, (const unsigned char *)host, (np + nb) * sizeof(float));
    free(host);
    double v[8];
    for (int i = 0; i < 4; i++) {
        v[i] = (double)((h >> (16 * i)) & 0xffffu);
        v[4 + i] = v[i] * v[i];
    }
    nn_status s = t->world->sum_f64(t->world, v, 8);
    if (s) return s;
    for (int i = 0; i < 4; i++)
        if (v[4 + i] * t->world->size != v[i] * v[i])
            return nn_ctx_fail(t->ctx, NN_ENUMERIC, "after epoch %lld the %d ranks' parameters%s "
                               "are not the same bytes (a rank diverged); training stopped",
                               (long long)t->st.epoch, t->world->size,
                               nb ? " and batch-norm statistics" : "");
    return NN_OK;
}

/* The checkpoint just loaded into t->st was trained as this run trains: same
 * batch, accumulation and training set. A file that predates these keys
 * (batch 0) is taken to match, and records this run's from now on. */
static nn_status check_same_run(nn_trainer *t, const char *path) {
    nn_train_state *st = &t->st;
    const int64_t n = t->train ? t->train->n : 0;
    if (st->batch == 0) {
        st->batch = t->global_batch;
        st->accumulate = t->cfg.accumulate;
        st->train_samples = n;
        st->train_labels_hash = t->labels_hash;
        return NN_OK;
    }
    static const char data_hint[] = "resume with the same --data, --val and --train-limit, or "
                                    "start a new run";
    /* the global batch: ranks x batch may resume as one process and back */
    if (st->batch != t->global_batch && t->ranks == 1)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "%s: checkpoint was trained with batch %lld; this "
                           "run uses batch %d (resume with the same --batch, or start a new run)",
                           path, (long long)st->batch, t->cfg.batch);
    if (st->batch != t->global_batch)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "%s: checkpoint was trained with (global) batch "
                           "%lld; this run uses %d ranks x batch %d = %lld (resume with ranks x "
                           "--batch = %lld, or start a new run)", path, (long long)st->batch,
                           t->ranks, t->cfg.batch, (long long)t->global_batch,
                           (long long)st->batch);
    if (st->accumulate != t->cfg.accumulate)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "%s: checkpoint was trained with accumulate %lld; "
                           "this run uses accumulate %d (resume with the same --accumulate, or "
                           "start a new run)", path, (long long)st->accumulate,
                           t->cfg.accumulate);
    if (st->train_samples != n)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "%s: checkpoint was trained on %lld training "
                           "samples; this run has %lld (%s)", path,
                           (long long)st->train_samples, (long long)n, data_hint);
    if (st->train_labels_hash != t->labels_hash)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "%s: checkpoint was trained on other training "
                           "data: its %lld labels hash to %016llx, this run's to %016llx (%s)",
                           path, (long long)n, (unsigned long long)st->train_labels_hash,
                           (unsigned long long)t->labels_hash, data_hint);
    return NN_OK;
}

nn_status nn_trainer_resume(nn_trainer *t, const char *path) {
    nn_status s = nn_checkpoint_load(t->ctx, path, t->net, t->opt, &t->st);
    t->pend_loss = t->pend_seen = 0.0;
    if (s || (s = check_same_run(t, path))) return s;
    if (t->st.batch_in_epoch > t->batches)
        return nn_ctx_fail(t->ctx, NN_EINVAL,
                           "%s: checkpoint is at batch %lld of an epoch, beyond this data set "
                           "with batch %d",
                           path, (long long)t->st.batch_in_epoch, t->cfg.batch);
    t->in_epoch = 0;
    t->finished = t->st.epoch >= t->cfg.epochs;
    /* a finished run's file holds the average in the net's place: training
     * on continues from the live weights */
    if (t->ema && t->st.ema_swapped && !t->finished) swap_ema(t);
    return NN_OK;
}

/* Mean of the accumulated micro-batch gradients (a kernel on device memory). */
static void scale_grads(const nn_backend *be, float *g, size_t n, float s) {
    nn_dev_begin(be);
    nn_dev_scale(be, g, n, s);
    nn_dev_end(be);
}

/* Forward and backward of one micro-batch (number `micro` of the optimizer
 * step), its gradients added to the net's. Data parallel: a rank may have no
 * samples in the last batch (n 0: it only joins the all-reduce), and w is its
 * gradient's weight in the last micro-batch (1 for an equal share): the
 * earlier micro-batches' sum is divided by w first, so that weighting the
 * buckets by w as they leave weights only this one. */
static nn_status train_micro(nn_trainer *t, const float *x, const int32_t *y, int n, int micro,
                             int last, float w, float *loss) {
    if (micro == 0) nn_net_zero_grad(t->net);
    const int reduce = t->comm && last;
    *loss = 0.0f;
    if (n == 0) return reduce ? finish_allreduce(t) : NN_OK;
    if (reduce && w != 1.0f) {
        if (micro > 0)
            scale_grads(t->ctx->backend, nn_net_grads(t->net), nn_net_num_params(t->net), 1.0f / w);
        t->bucket_scale = w;
    }
    /* dropout masks: a function of the run's seed and this batch's place in the
     * run, so a resumed run draws the same ones */
    nn_net_set_dropout_seed(t->net, (t->cfg.seed * 0x9E3779B97F4A7C15ULL) ^
                                        ((uint64_t)t->st.step * 65536u + (uint64_t)micro));
    t->reduce_status = NN_OK;
    nn_status s = nn_net_forward(t->net, x, y, n, loss);
    if (!s) s = t->reduce_status;
    if (s) return s;
    if (!isfinite(*loss))
        return nn_ctx_fail(t->ctx, NN_ENUMERIC,
                           "loss is %s at step %lld (epoch %lld, batch %lld); training stopped%s",
                           isnan(*loss) ? "NaN" : "infinite", (long long)t->st.step + 1,
                           (long long)t->st.epoch + 1, (long long)t->st.batch_in_epoch + micro + 1,
                           t->cfg.save ? ", the last good checkpoint is kept" : "");
    /* the last micro-batch's backward pass makes the step's gradients final:
     * their all-reduce starts bucket by bucket while it runs */
    nn_net_set_grad_hook(t->net, reduce ? on_grads_final : NULL, t);
    s = nn_net_backward(t->net);
    if (!s) s = t->reduce_status;
    nn_net_set_grad_hook(t->net, NULL, NULL);
    if (!s && nn_net_shards(t->net) > 1) combine_shards(t, n);
    if (reduce) {
        nn_status f = finish_allreduce(t);
        if (!s) s = f;
    }
    t->bucket_scale = 1.0f;
    return s;
}

/* Pipeline: one batch through the stages (this replica's share of the
 * global batch, cnt samples, 0 when it has none), then this stage's gradients
 * averaged over the replicas with weight w, as train_micro does. *loss: the
 * mean loss on the last stage, 0 on the others. */
static nn_status train_pipeline(nn_trainer *t, const float *x, const int32_t *y, int cnt, float w,
                                float *loss) {
    nn_net_zero_grad(t->net);
    double sum = 0.0;
    *loss = 0.0f;
    nn_status s = cnt ? nn_pipeline_step(t->pipeline, x, y, cnt, &sum) : NN_OK;
    if (s) return s;
    if (cnt) *loss = (float)(sum / cnt);
    if (!t->comm) return NN_OK;
    size_t lo, hi;
    nn_pipeline_param_range(t->pipeline, &lo, &hi);
    if (hi <= lo) return NN_OK;
    float *g = nn_net_grads(t->net) + lo;
    if (w != 1.0f) scale_grads(t->ctx->backend, g, hi - lo, w);
    int req;
    const double w0 = nn_wall_time();
    if ((s = t->comm->allreduce_start(t->comm, g, hi - lo, &req))) return s;
    s = t->comm->wait(t->comm, req);
    const double waited = nn_wall_time() - w0; /* blocking: all of it in flight, none hidden */
    t->comm_wait_s += waited;
    t->comm_flight_s += waited;
    return s;
}

/* Weight averaging after optimizer step st.step (1 for the first): the
 * average moves to the live parameters by 1 - decay, the decay growing from
 * 2/11 to cfg.ema ("num_updates" as in TensorFlow's ExponentialMovingAverage)
 * so that the average forgets the initial weights in short runs. */
static void update_ema(nn_trainer *t) {
    const double s = (double)t->st.step;
    const double warm = (1.0 + s) / (10.0 + s);
    const float decay = (float)(warm < t->cfg.ema ? warm : t->cfg.ema);
    nn_weight_average(t->ema, nn_net_params(t->net), nn_net_num_params(t->net), 1.0f - decay,
                      t->ctx);
}

/* Exchanges the net's parameters and the average (st.ema_swapped says
 * which the net holds). */
static void swap_ema(nn_trainer *t) {
    const size_t bytes = nn_net_num_params(t->net) * sizeof(float);
    const nn_backend *be = t->ctx->backend;
    float *p = nn_net_params(t->net), *spare = t->ema + nn_net_num_params(t->net);
    nn_dev_copy(be, spare, p, bytes);
    nn_dev_copy(be, p, t->ema, bytes);
    nn_dev_copy(be, t->ema, spare, bytes);
    t->st.ema_swapped = !t->st.ema_swapped;
}

/* The optimizer step after `micro` micro-batches. */
static nn_status apply_step(nn_trainer *t, int micro) {
    float *g = nn_net_grads(t->net);
    const size_t np = nn_net_num_params(t->net);
    if (micro > 1) scale_grads(t->ctx->backend, g, np, 1.0f / (float)micro);
    if (t->cfg.clip_grad_norm > 0) {
        /* a pipeline stage holds its own parameters' gradients (zero
         * elsewhere): the global norm sums the stages' squares */
        double sq = nn_grad_sum_squares(g, np, t->ctx);
        nn_status s = t->pipeline ? t->pipe->sum_f64(t->pipe, &sq, 1) : NN_OK;
        if (s) return s;
        nn_clip_grad_scale(g, np, sqrt(sq), t->cfg.clip_grad_norm, t->ctx);
    }
    t->lr = nn_sched_lr(&t->cfg.sched, &t->st.sched, t->st.epoch, t->st.step);
    nn_optim_set_lr(t->opt, t->lr);
    /* the average starts at the weights the run starts from */
    if (t->ema && t->st.step == 0)
        nn_dev_copy(t->ctx->backend, t->ema, nn_net_params(t->net), np * sizeof(float));
    nn_optim_step(t->opt, t->ctx, nn_net_params(t->net), g);
    t->st.step++;
    if (t->ema) update_ema(t);
    return NN_OK;
}

nn_status nn_trainer_step_batch(nn_trainer *t, const float *x, const int32_t *y, int n,
                                float *loss) {
    float l;
    if (n < 1 || n > t->cfg.batch)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "batch of %d samples; the trainer takes 1..%d", n,
                           t->cfg.batch);
    nn_status s = train_micro(t, x, y, n, 0, 1, 1.0f, &l);
    if (s || (s = apply_step(t, 1))) return s;
    if (loss) *loss = l;
    return NN_OK;
}

/* Starts (or resumes) the epoch st.epoch: its permutation and the loader. */
static nn_status begin_epoch(nn_trainer *t) {
    const int64_t n = t->train->n;
    t->epoch_rng = t->st.rng; /* st.rng stays at the epoch start until the epoch ends */
    if (t->cfg.shuffle)
        nn_permutation(t->perm, n, &t->epoch_rng);
    else
        for (int64_t i = 0; i < n; i++) t->perm[i] = i;
    nn_status s;
    if (t->ranks > 1) {
        /* this rank's share of every global batch, in order: all but a last
         * empty share are one loader batch each, so batch k is loader batch k */
        int64_t m = 0, lo, hi;
        for (int64_t k = 0; k < t->batches; k++) {
            share_range(t, k, t->rank, &lo, &hi);
            for (int64_t i = lo; i < hi; i++) t->shard[m++] = t->perm[i];
        }
        const int64_t local = (m + t->cfg.batch - 1) / t->cfg.batch;
        s = nn_loader_start_n(t->loader, t->st.epoch, t->shard, m,
                              t->st.batch_in_epoch < local ? t->st.batch_in_epoch : local);
    } else {
        s = nn_loader_start(t->loader, t->st.epoch, t->perm, t->st.batch_in_epoch);
    }
    if (s) return s;
    t->in_epoch = 1;
    t->epoch_samples = 0;
    t->epoch_t0 = nn_wall_time();
    t->comm_wait_s = t->comm_flight_s = 0;
    if (t->cb.epoch_start) t->cb.epoch_start(t->cb.user, t->st.epoch, t->st.batch_in_epoch, t->batches);
    return NN_OK;
}

nn_status nn_trainer_step(nn_trainer *t, int *epoch_end) {
    if (!t->train || !t->train->n)
        return nn_ctx_fail(t->ctx, NN_EINVAL, "the trainer has no training data");
    nn_status s;
    if (!t->in_epoch && (s = begin_epoch(t))) return s;
    int micro = 0;
    const int64_t left = t->batches - t->st.batch_in_epoch;
    const int count = left < t->cfg.accumulate ? (int)left : t->cfg.accumulate;
    while (micro < count) {
        const int64_t k = t->st.batch_in_epoch + micro;
        int64_t lo = 0, hi = 1, m = 1; /* this rank's share, the global batch's size */
        if (t->ranks > 1) {
            share_range(t, k, t->rank, &lo, &hi);
            m = global_count(t, k);
        }
        const float *bx = NULL;
        const int32_t *by = NULL;
        int cnt = hi > lo ? nn_loader_next(t->loader, &bx, &by) : 0;
        if (hi > lo && (cnt <= 0 || (t->ranks > 1 && cnt != hi - lo)))
            return nn_ctx_fail(t->ctx, NN_EINVAL, "data loader ended early at batch %lld",
                               (long long)k);
        /* full global batches weigh every rank alike (w 1) */
        const float w = t->ranks > 1 ? (float)((double)cnt * t->ranks / (double)m) : 1.0f;
        NN_ASSERT(w == 1.0f || micro == count - 1);
        float loss;
        if ((s = t->pipeline ? train_pipeline(t, bx, by, cnt, w, &loss)
                             : train_micro(t, bx, by, cnt, micro, micro == count - 1, w, &loss)))
            return s;
        if (t->world) {
            /* a pipeline's losses are its last stage's (pipeline rank 0) */
            const int counts = !t->pipeline || nn_pipeline_stage(t->pipeline) == t->cfg.stages - 1;
            t->pend_loss += (double)loss * cnt;
            t->pend_seen += counts ? cnt : 0;
            t->epoch_samples += t->ranks > 1 ? m : cnt;
        } else {
            t->st.loss_sum += (double)loss * cnt;
            t->st.seen += cnt;
            t->epoch_samples += cnt;
        }
        micro++;
        if (t->cb.batch_done) {
            /* data parallel: this rank's mean so far (the global one is summed
             * at the epoch's end) */
            const double seen = (double)t->st.seen + t->pend_seen;
            nn_batch_report r = {t->st.epoch, t->st.batch_in_epoch + micro, t->batches,
                                 t->st.step,
                                 seen > 0 ? (t->st.loss_sum + t->pend_loss) / seen : 0.0};
            t->cb.batch_done(t->cb.user, &r);
        }
    }
    if (micro) {
        if ((s = apply_step(t, micro))) return s;
        t->st.batch_in_epoch += micro;
    }
    const int end = t->st.batch_in_epoch >= t->batches;
    if (epoch_end) *epoch_end = end;
    if (micro && t->cfg.save && t->cfg.save_every && t->st.step % t->cfg.save_every == 0 && !end &&
        (s = nn_trainer_save(t, t->cfg.save)))
        return s;
    /* several ranks: a stop asked of any one stops them all at the same
     * step, so that they save one checkpoint together; they agree every
     * STOP_CHECK_STEPS steps and at an epoch's end */
    const int agree = t->world && t->world->sum_f64;
    const int at_check = micro && (end || t->st.step % STOP_CHECK_STEPS == 0);
    if (agree && at_check) {
        double asked = t->stop_requested ? 1.0 : 0.0;
        if ((s = t->world->sum_f64(t->world, &asked, 1))) return s;
        if (asked > 0 && !t->stop_requested) t->stop_by_peer = 1;
        t->stop_requested = asked > 0;
    }
    if (t->stop_requested && (!agree || at_check)) {
        if (t->cfg.save && (s = nn_trainer_save(t, t->cfg.save))) return s;
        return nn_ctx_fail(t->ctx, NN_ESTOPPED,
                           "stopped at step %lld (epoch %lld, batch %lld of %lld)%s%s",
                           (long long)t->st.step, (long long)t->st.epoch + 1,
                           (long long)t->st.batch_in_epoch, (long long)t->batches,
                           t->stop_by_peer ? " because another rank was asked to stop" : "",
                           t->cfg.save ? "; checkpoint written" : "");
    }
    return NN_OK;
}

nn_status nn_trainer_evaluate(nn_trainer *t, const nn_dataset *d, double *loss,
                              double *accuracy) {
    /* reported losses are plain cross-entropy, without label smoothing */
    if (t->cfg.label_smoothing > 0) nn_net_set_label_smoothing(t->net, 0.0f);
    nn_status s;
    if (t->world && t->world->sum_f64) {
        /* data parallel: each rank evaluates its contiguous share of d and the
         * sums are added over the ranks (the accuracy is exact; the loss is
         * the same sum taken in another order); a pipeline's ranks hold the
         * whole model between epochs and do the same */
        const int64_t P = t->world->size, r = t->world->rank;
        const int64_t first = d->n * r / P, count = d->n * (r + 1) / P - first;
        const size_t per = (size_t)d->c * d->h * d->w;
        nn_dataset share = *d;
        share.n = count;
        share.pixels = d->pixels + (size_t)first * per;
        share.labels = d->labels + first;
        double l = 0, a = 0;
        s = nn_evaluate(t->net, &share, &t->cfg.norm, t->cfg.batch, t->x, t->y, &l, &a);
        double v[2] = {l * (double)count, (double)llround(a * (double)count)};
        if (!s) s = t->world->sum_f64(t->world, v, 2);
        if (!s) {
            *loss = d->n ? v[0] / (double)d->n : 0.0;
            *accuracy = d->n ? v[1] / (double)d->n : 0.0;
        }
    } else {
        s = nn_evaluate(t->net, d, &t->cfg.norm, t->cfg.batch, t->x, t->y, loss, accuracy);
    }
    if (t->cfg.label_smoothing > 0) nn_net_set_label_smoothing(t->net, t->cfg.label_smoothing);
    return s;
}

/* Copies the weights and buffers (batch-norm statistics) to or from t->best. */
static void copy_best(nn_trainer *t, int restore) {
    const size_t np = nn_net_num_params(t->net), nb = nn_net_num_buffers(t->net);
    float *p = nn_net_params(t->net), *b = nn_net_buffers(t->net);
    const nn_backend *be = t->ctx->backend;
    if (restore) {
        nn_dev_copy(be, p, t->best, np * sizeof(float));
        nn_dev_copy(be, b, t->best + np, nb * sizeof(float));
    } else {
        nn_dev_copy(be, t->best, p, np * sizeof(float));
        nn_dev_copy(be, t->best + np, b, nb * sizeof(float));
    }
}

/* A non-finite evaluation loss means the weights broke in the epoch's last
 * steps: stop before anything is written. */
static nn_status check_finite_eval(nn_trainer *t, const char *what, double loss) {
    if (isfinite(loss)) return NN_OK;
    return nn_ctx_fail(t->ctx, NN_ENUMERIC,
                       "epoch %lld: the %s loss is %s (weights or batch-norm statistics are no "
                       "longer finite); "
                       "training stopped%s",
                       (long long)t->st.epoch, what, isnan(loss) ? "NaN" : "infinite",
                       t->cfg.save ? ", the last good checkpoint is kept" : "");
}

nn_status nn_trainer_epoch(nn_trainer *t, nn_epoch_report *report) {
    nn_status s;
    if (!t->in_epoch && (s = begin_epoch(t))) return s;
    int end = t->st.batch_in_epoch >= t->batches;
    while (!end)
        if ((s = nn_trainer_step(t, &end))) return s;
    if ((s = sync_loss(t)) || (s = gather_stages(t, 0)) || (s = check_replicas(t))) return s;
    nn_epoch_report r = {0};
    r.seconds = nn_wall_time() - t->epoch_t0;
    r.images_per_s = r.seconds > 0 ? (double)t->epoch_samples / r.seconds : 0.0;
    r.comm_wait_s = t->comm_wait_s;
    r.comm_overlap_s = t->comm_flight_s - t->comm_wait_s;
    r.train_loss = t->st.seen ? t->st.loss_sum / (double)t->st.seen : 0.0;
    t->st.rng = t->epoch_rng;
    t->st.epoch++;
    t->st.batch_in_epoch = 0;
    t->st.loss_sum = 0.0;
    t->st.seen = 0;
    t->in_epoch = 0;
    r.epoch = t->st.epoch;
    r.step = t->st.step;
    r.lr = t->lr;
    const double t1 = nn_wall_time();
    /* evaluations (and early stopping's copy) see the averaged weights */
    if (t->ema && t->st.step > 0) swap_ema(t);
    if (t->test) {
        r.has_test = 1;
        if ((s = nn_trainer_evaluate(t, t->test, &r.test_loss, &r.test_accuracy)) ||
            (s = check_finite_eval(t, "test", r.test_loss)))
            return s;
    }
    if (t->val) {
        r.has_val = 1;
        if ((s = nn_trainer_evaluate(t, t->val, &r.val_loss, &r.val_accuracy)) ||
            (s = check_finite_eval(t, "validation", r.val_loss)))
            return s;
    }
    r.eval_seconds = nn_wall_time() - t1;
    /* plateau watches the validation loss, or the test loss without one */
    if (r.has_val || r.has_test)
        nn_sched_observe(&t->cfg.sched, &t->st.sched, r.has_val ? r.val_loss : r.test_loss);
    if (t->cfg.early_stop) {
        if (r.val_loss < t->st.best_val - t->cfg.min_delta) {
            t->st.best_val = r.val_loss;
            t->st.bad_epochs = 0;
            copy_best(t, 0);
            t->st.have_best = 1;
        } else if (++t->st.bad_epochs >= t->cfg.early_stop) {
            r.early_stop = 1;
        }
    }
    if (t->st.epoch >= t->cfg.epochs || r.early_stop) t->finished = 1;
    r.best_val_loss = t->st.best_val;
    if (t->cb.epoch_done && t->cb.epoch_done(t->cb.user, &r)) t->finished = 1;
    /* the run ends on the best validation loss's weights, or on the average;
     * otherwise training goes on from the live ones */
    if (r.early_stop && t->st.have_best) copy_best(t, 1);
    if (t->st.ema_swapped && !t->finished) swap_ema(t);
    if (t->cfg.save && (s = nn_trainer_save(t, t->cfg.save))) return s;
    if (report) *report = r;
    return NN_OK;
}

nn_status nn_trainer_run(nn_trainer *t) {
    while (!t->finished) {
        nn_status s = nn_trainer_epoch(t, NULL);
        if (s) return s;
    }
    return NN_OK;
}
