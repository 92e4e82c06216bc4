/*
 * test_trainer.c - the library trainer through its public API alone: for
 * every optimizer and every schedule (with accumulation, clipping, label
 * smoothing, augmentation, dropout and batch norm in the mix), a run stopped
 * mid-epoch by nn_trainer_request_stop and resumed from its checkpoint by a
 * new trainer must write the same checkpoint, byte for byte, as the run that
 * was never interrupted. Also: early stopping restores the best epoch's
 * weights, also in a run stopped after its best epoch and resumed (the
 * checkpoint keeps the best copy); a resume with another batch, accumulation
 * or training set is refused naming both values, while a checkpoint written
 * before those were recorded still resumes; a non-finite evaluation stops the run without replacing the last
 * checkpoint, callbacks see every batch and epoch, an epoch_done callback can
 * end the run, nn_trainer_step_batch trains on caller batches, and bad
 * recipes are refused with a message naming the field. Data parallel: two
 * ranks as two threads (batch 8 each) reproduce one process (batch 16) with
 * bit-identical parameters on both; with batch norm they do so with sync_bn
 * (running statistics included, the same bytes on both ranks) and not
 * without it; sync_bn refuses a last global batch that leaves a rank none.
 */
#include "nnopt.h"

#include <pthread.h>
#include "test_util.h"

/* A small network with conv, batch norm, dropout and linear layers, on 1x8x8. */
static const char *MODEL_TEXT =
    "input shape=1x8x8\n"
    "conv2d name=conv1 out=4 kernel=3 pad=1\n"
    "batchnorm name=bn1\n"
    "relu\n"
    "maxpool size=2\n"
    "flatten\n"
    "dropout p=0.25\n"
    "linear name=fc out=5\n"
    "softmax_ce\n";

/* n random 8x8 images whose label is a function of their pixels (learnable). */
static void make_data(nn_dataset *d, int64_t n, uint64_t seed) {
    nn_rng rng;
    nn_rng_seed(&rng, seed, 3);
    *d = (nn_dataset){.n = n, .c = 1, .h = 8, .w = 8, .num_classes = 5};
    d->pixels = xmalloc((size_t)n * 64);
    d->labels = xmalloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) {
        int sum = 0;
        for (int p = 0; p < 64; p++) {
            d->pixels[i * 64 + p] = (uint8_t)nn_rng_below(&rng, 256);
            sum += p < 32 ? d->pixels[i * 64 + p] : 0;
        }
        d->labels[i] = (int32_t)((sum / 1640) % 5);
    }
}

static nn_net *make_net(nn_ctx *ctx, int batch, uint64_t seed) {
    nn_net *net = NULL;
    const char *path = tmp_path("tiny.nn");
    FILE *f = fopen(path, "w");
    fputs(MODEL_TEXT, f);
    fclose(f);
    if (nn_net_load(ctx, path, &net) || nn_net_plan(net, batch)) {
        printf("cannot build the test network: %s\n", nn_ctx_error(ctx));
        exit(1);
    }
    nn_rng rng;
    nn_rng_seed(&rng, seed, 1);
    nn_net_init_params(net, &rng);
    return net;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc((size_t)n + 1);
    *size = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = read_file(a, &na), *y = read_file(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

typedef struct {
    nn_trainer *t;
    int64_t stop_at_step; /* request a stop once this many steps are done */
    int batches, epochs;
} stopper;

static void stop_batch(void *user, const nn_batch_report *r) {
    stopper *s = user;
    s->batches++;
    if (s->t && r->step + 1 >= s->stop_at_step) nn_trainer_request_stop(s->t);
}

static int count_epoch(void *user, const nn_epoch_report *r) {
    (void)r;
    ((stopper *)user)->epochs++;
    return 0;
}

/* Trains cfg from scratch; with stop_at > 0 stops there and resumes with a
 * new net and trainer. The final checkpoint goes to cfg->save. */
static nn_status train(nn_ctx *ctx, nn_train_config cfg, const nn_dataset *tr,
                       const nn_dataset *val, const nn_dataset *te, int64_t stop_at) {
    nn_net *net = make_net(ctx, cfg.batch, 11);
    nn_trainer *t = NULL;
    nn_status s = nn_trainer_new(net, &cfg, tr, val, te, &t);
    if (s) goto out;
    stopper st = {t, stop_at, 0, 0};
    nn_train_callbacks cb = {NULL, stop_batch, count_epoch, &st};
    if (stop_at > 0) nn_trainer_set_callbacks(t, &cb);
    s = nn_trainer_run(t);
    if (stop_at > 0) {
        if (s != NN_ESTOPPED) {
            printf("expected a stop at step %lld, got status %d: %s\n", (long long)stop_at, (int)s,
                   nn_ctx_error(ctx));
            s = NN_EINVAL;
            goto out;
        }
        nn_trainer_free(t);
        nn_net_free(net);
        /* a new process would start from other initial weights: the
         * checkpoint must carry everything */
        net = make_net(ctx, cfg.batch, 99);
        if ((s = nn_trainer_new(net, &cfg, tr, val, te, &t)) ||
            (s = nn_trainer_resume(t, cfg.save)))
            goto out;
        s = nn_trainer_run(t);
    }
out:
    nn_trainer_free(t);
    nn_net_free(net);
    return s;
}

static void test_resume_exact(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *val,
                              const nn_dataset *te) {
    const char *optims[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};
    for (int k = 0; k < NN_SCHED_COUNT; k++) {
        const char *oname = optims[k % 5];
        nn_train_config c = nn_train_config_defaults();
        c.epochs = 3;
        c.batch = 16;
        c.seed = 5 + (uint64_t)k;
        c.optim = nn_optim_defaults((nn_optim_kind)nn_optim_kind_from_name(oname));
        if (c.optim.kind == NN_OPTIM_SGD) {
            c.optim.momentum = 0.9f;
            c.optim.nesterov = k % 2;
        }
        if (c.optim.kind == NN_OPTIM_RMSPROP) c.optim.centered = 1;
        c.sched = nn_sched_defaults((nn_sched_kind)k, c.optim.lr);
        c.sched.step_size = 1;
        c.sched.milestones[0] = 1;
        c.sched.milestones[1] = 2;
        c.sched.num_milestones = 2;
        c.sched.t_0 = 1;
        c.sched.t_mult = 2;
        c.sched.patience = 0;
        c.sched.warmup_steps = k % 3 == 0 ? 4 : 0;
        c.accumulate = 1 + k % 2;
        c.clip_grad_norm = k % 2 ? 1.0f : 0.0f;
        c.label_smoothing = k % 3 == 1 ? 0.1f : 0.0f;
        c.aug = (nn_augment){k % 2, k % 3 == 2, k % 4 == 0 ? 0.3f : 0.0f};
        char ref[64], cut[64], name[128];
        snprintf(ref, sizeof ref, "ref%d.st", k);
        snprintf(cut, sizeof cut, "cut%d.st", k);
        char refp[512], cutp[512];
        snprintf(refp, sizeof refp, "%s", tmp_path(ref));
        snprintf(cutp, sizeof cutp, "%s", tmp_path(cut));
        c.save = refp;
        nn_status s1 = train(ctx, c, tr, val, te, 0);
        c.save = cutp;
        /* steps per epoch: 10 batches of 16 (the last partial), / accumulate */
        nn_status s2 = train(ctx, c, tr, val, te, 7 + k % 5);
        snprintf(name, sizeof name, "%s + %s (accumulate %d): stopped and resumed = uninterrupted",
                 oname, nn_sched_name((nn_sched_kind)k), c.accumulate);
        int same = !s1 && !s2 && same_file(refp, cutp);
        check(same, name, "%s", s1 || s2 ? nn_ctx_error(ctx) : same ? "" : "checkpoints differ");
    }
}

/* 1 if the file's JSON header (in its first 4 KiB) holds s. */
static int header_has(const char *path, const char *s) {
    size_t n = 0;
    unsigned char *b = read_file(path, &n);
    if (!b) return 0;
    b[n < 4096 ? n : 4096] = '\0';
    int has = strstr((const char *)b + 8, s) != NULL;
    free(b);
    return has;
}

/* A new trainer for cfg on tr resuming path: its status (the error in ctx). */
static nn_status try_resume(nn_ctx *ctx, nn_train_config cfg, const nn_dataset *tr,
                            const nn_dataset *val, const char *path) {
    nn_net *net = make_net(ctx, 16, 99);
    nn_trainer *t = NULL;
    nn_status s = nn_trainer_new(net, &cfg, tr, val, NULL, &t);
    if (!s) s = nn_trainer_resume(t, path);
    nn_trainer_free(t);
    nn_net_free(net);
    return s;
}

static void test_resume_other_run(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *te) {
    char ref[512], cut[512], old[512];
    snprintf(ref, sizeof ref, "%s", tmp_path("same_ref.st"));
    snprintf(cut, sizeof cut, "%s", tmp_path("same_cut.st"));
    snprintf(old, sizeof old, "%s", tmp_path("same_old.st"));
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 2;
    c.batch = 16;
    c.save = ref;
    nn_status s = train(ctx, c, tr, NULL, te, 0);
    c.save = cut;
    /* stopped in epoch 1 at step 6: train() resumes it; stop it again */
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    stopper stop = {NULL, 6, 0, 0};
    nn_train_callbacks cb = {NULL, stop_batch, NULL, &stop};
    if (!s && !(s = nn_trainer_new(net, &c, tr, NULL, te, &t))) {
        stop.t = t;
        nn_trainer_set_callbacks(t, &cb);
        s = nn_trainer_run(t);
        if (s == NN_ESTOPPED) s = NN_OK;
    }
    check(!s && header_has(cut, "\"batch\":\"16\"") && header_has(cut, "\"train_samples\":\"150\"") &&
              header_has(cut, "\"accumulate\":\"1\"") && header_has(cut, "train_labels_hash"),
          "a checkpoint records batch, accumulate, training samples and the labels' hash", "%s",
          s ? nn_ctx_error(ctx) : "");

    nn_train_config o = c;
    o.batch = 8;
    s = try_resume(ctx, o, tr, NULL, cut);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "same_cut.st: checkpoint was trained "
                                     "with batch 16; this run uses batch 8"),
          "a resume with another batch is refused, naming the file and both batches", "%s",
          nn_ctx_error(ctx));
    o = c;
    o.accumulate = 2;
    s = try_resume(ctx, o, tr, NULL, cut);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "accumulate 1; this run uses accumulate 2"),
          "a resume with another accumulation is refused", "%s", nn_ctx_error(ctx));
    nn_dataset fewer = *tr;
    fewer.n = 140;
    s = try_resume(ctx, c, &fewer, NULL, cut);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "trained on 150 training samples; this "
                                     "run has 140"),
          "a resume on fewer training samples is refused", "%s", nn_ctx_error(ctx));
    nn_dataset other;
    make_data(&other, tr->n, 77);
    s = try_resume(ctx, c, &other, NULL, cut);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "other training data"),
          "a resume on other training data of the same size is refused", "%s", nn_ctx_error(ctx));
    nn_dataset_free(&other);

    /* the same checkpoint as written before the run's data was recorded */
    nn_trainer_free(t);
    nn_net_free(net);
    net = make_net(ctx, c.batch, 99);
    t = NULL;
    if (!(s = nn_trainer_new(net, &c, tr, NULL, te, &t)) && !(s = nn_trainer_resume(t, cut))) {
        nn_train_state st = *nn_trainer_state(t);
        st.batch = 0; /* writes no batch, accumulate, train_samples or hash */
        s = nn_checkpoint_save(ctx, old, net, nn_trainer_optimizer(t), &st);
    }
    nn_trainer_free(t);
    nn_net_free(net);
    int old_style = !s && !header_has(old, "train_samples") && !header_has(old, "\"batch\"");
    c.save = old;
    net = make_net(ctx, c.batch, 99);
    t = NULL;
    if (!s && !(s = nn_trainer_new(net, &c, tr, NULL, te, &t)) && !(s = nn_trainer_resume(t, old)))
        s = nn_trainer_run(t);
    check(old_style && !s && same_file(ref, old),
          "a checkpoint without the run's batch and data (older nnopt) still resumes exactly",
          "%s", s ? nn_ctx_error(ctx) : !old_style ? "keys present" : "");
    nn_trainer_free(t);
    nn_net_free(net);
}

/* Early stopping's best copy survives a stop after the best epoch: the
 * resumed run ends on the same (restored) weights as the uninterrupted one. */
static void test_early_stop_resume(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *val,
                                   const nn_dataset *te) {
    char ref[512], cut[512];
    snprintf(ref, sizeof ref, "%s", tmp_path("es_ref.st"));
    snprintf(cut, sizeof cut, "%s", tmp_path("es_cut.st"));
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 8;
    c.batch = 16;
    c.optim.lr = 3.0f; /* the validation loss gets worse after the first epoch */
    c.early_stop = 2;
    c.save = ref;
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    nn_status s = nn_trainer_new(net, &c, tr, val, te, &t);
    int64_t best_epoch = 0, stopped = 0;
    double best = INFINITY;
    while (!s && !nn_trainer_finished(t)) {
        nn_epoch_report r;
        if ((s = nn_trainer_epoch(t, &r))) break;
        if (r.val_loss < best) best = r.val_loss, best_epoch = r.epoch;
        if (r.early_stop) stopped = r.epoch;
    }
    nn_trainer_free(t);
    nn_net_free(net);
    /* stop in the epoch after the best one (10 steps per epoch) */
    const int64_t stop_at = best_epoch * 10 + 4;
    check(!s && stopped > best_epoch + 1 && best_epoch >= 1,
          "early stopping: the best epoch is not the last one (the case to resume)",
          "best epoch %lld, stopped after %lld: %s", (long long)best_epoch, (long long)stopped,
          s ? nn_ctx_error(ctx) : "");
    c.save = cut;
    if (!s) s = train(ctx, c, tr, val, te, stop_at);
    check(!s && header_has(cut, "__best__.conv1.weight") && same_file(ref, cut),
          "early stopping stopped after the best epoch and resumed ends on the same weights "
          "(checkpoint byte-identical)", "%s", s ? nn_ctx_error(ctx) : "");
    /* eval --weights, --init, predict: the best copy is not part of the model */
    net = make_net(ctx, c.batch, 5);
    s = nn_checkpoint_load(ctx, ref, net, NULL, NULL);
    check(!s, "a weights-only load ignores the best copy's tensors", "%s",
          s ? nn_ctx_error(ctx) : "");
    nn_net_free(net);
}

static void test_early_stop(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *val,
                            const nn_dataset *te) {
    /* lr so high that the validation loss gets worse after the first epoch */
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 6;
    c.batch = 16;
    c.optim.lr = 3.0f;
    c.early_stop = 1;
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    nn_status s = nn_trainer_new(net, &c, tr, val, te, &t);
    double best = INFINITY, last_val = 0.0;
    int epochs = 0, stopped = 0;
    while (!s && !nn_trainer_finished(t)) {
        nn_epoch_report r;
        if ((s = nn_trainer_epoch(t, &r))) break;
        epochs++;
        if (r.val_loss < best) best = r.val_loss;
        stopped = r.early_stop;
        last_val = r.val_loss;
    }
    double val_loss = 0.0, acc;
    if (!s) s = nn_trainer_evaluate(t, val, &val_loss, &acc);
    check(!s && stopped && epochs < 6, "early stopping ends the run", "%d epochs: %s", epochs,
          s ? nn_ctx_error(ctx) : "");
    check(!s && val_loss == best && last_val > best,
          "early stopping restores the best epoch's weights",
          "validation loss now %.6f, best %.6f, last epoch %.6f", val_loss, best, last_val);
    nn_trainer_free(t);
    nn_net_free(net);
}

/* Breaks the weights (or the batch-norm statistics) in the last batch of
 * epoch 2, after its backward pass: the optimizer step then carries the NaN. */
typedef struct {
    nn_ctx *ctx;
    nn_net *net;
    int buffers;
} poison;

static void poison_last_batch(void *user, const nn_batch_report *r) {
    poison *p = user;
    if (r->epoch == 1 && r->batch == r->batches) {
        tu_set(p->ctx, p->buffers ? nn_net_buffers(p->net) : nn_net_params(p->net), NAN);
    }
}

static void test_nonfinite_keeps_checkpoint(nn_ctx *ctx, const nn_dataset *tr,
                                            const nn_dataset *te, int buffers) {
    char path[512];
    snprintf(path, sizeof path, "%s", tmp_path("good.st"));
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 3;
    c.batch = 16;
    c.save = path;
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    poison p = {ctx, net, buffers};
    nn_train_callbacks cb = {NULL, poison_last_batch, NULL, &p};
    nn_status s = nn_trainer_new(net, &c, tr, NULL, te, &t);
    if (!s) {
        nn_trainer_set_callbacks(t, &cb);
        s = nn_trainer_epoch(t, NULL);
    }
    size_t n0 = 0;
    unsigned char *before = read_file(path, &n0);
    nn_status s2 = s ? s : nn_trainer_epoch(t, NULL);
    size_t n1 = 0;
    unsigned char *after = read_file(path, &n1);
    char name[160];
    snprintf(name, sizeof name, "non-finite %s after an epoch's last step: the run stops naming "
             "epoch 2", buffers ? "batch-norm statistics" : "weights");
    check(!s && s2 == NN_ENUMERIC && contains(nn_ctx_error(ctx), "epoch 2") &&
              contains(nn_ctx_error(ctx), "test loss"),
          name, "%s", nn_ctx_error(ctx));
    snprintf(name, sizeof name, "non-finite %s: the last good checkpoint is not replaced",
             buffers ? "batch-norm statistics" : "weights");
    check(before && after && n0 == n1 && memcmp(before, after, n0) == 0, name, NULL);
    free(before);
    free(after);
    nn_trainer_free(t);
    nn_net_free(net);
}

static int prune_after_two(void *user, const nn_epoch_report *r) {
    (void)user;
    return r->epoch >= 2;
}

static void test_callbacks(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *te) {
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 5;
    c.batch = 16;
    c.accumulate = 3;
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    stopper st = {NULL, 0, 0, 0};
    nn_train_callbacks cb = {NULL, stop_batch, count_epoch, &st};
    nn_status s = nn_trainer_new(net, &c, tr, NULL, te, &t);
    if (!s) {
        nn_trainer_set_callbacks(t, &cb);
        s = nn_trainer_epoch(t, NULL);
    }
    check(!s && st.batches == 10 && st.epochs == 1 && nn_trainer_state(t)->step == 4,
          "callbacks see every batch and the epoch; 10 batches / 3 = 4 steps",
          "%d batches, %d epochs, %lld steps", st.batches, st.epochs,
          t ? (long long)nn_trainer_state(t)->step : -1LL);
    nn_train_callbacks prune = {NULL, NULL, prune_after_two, NULL};
    if (!s) {
        nn_trainer_set_callbacks(t, &prune);
        s = nn_trainer_run(t);
    }
    check(!s && nn_trainer_finished(t) && nn_trainer_state(t)->epoch == 2,
          "an epoch_done callback ends the run (a pruner)", "epoch %lld",
          t ? (long long)nn_trainer_state(t)->epoch : -1LL);
    nn_trainer_free(t);
    nn_net_free(net);
}

static void test_step_batch(nn_ctx *ctx, const nn_dataset *tr) {
    nn_train_config c = nn_train_config_defaults();
    c.batch = 32;
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    float *x = fvec(32 * 64);
    int32_t y[32];
    nn_dataset_gather(tr, NULL, 0, 32, &c.norm, x, y);
    nn_status s = nn_trainer_new(net, &c, NULL, NULL, NULL, &t);
    float first = 0.0f, loss = 0.0f;
    for (int i = 0; !s && i < 30; i++) s = nn_trainer_step_batch(t, x, y, 32, i ? &loss : &first);
    check(!s && loss < 0.5f * first && nn_trainer_state(t)->step == 30,
          "nn_trainer_step_batch: 30 steps on one batch fit it", "loss %.4f -> %.4f: %s",
          (double)first, (double)loss, s ? nn_ctx_error(ctx) : "");
    s = t ? nn_trainer_step_batch(t, x, y, 33, NULL) : NN_EINVAL;
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "33"),
          "nn_trainer_step_batch refuses a batch above the planned size", "%s", nn_ctx_error(ctx));
    s = t ? nn_trainer_step(t, NULL) : NN_OK;
    check(s == NN_EINVAL, "nn_trainer_step without training data fails cleanly", "%s",
          nn_ctx_error(ctx));
    free(x);
    nn_trainer_free(t);
    nn_net_free(net);
}

/* Weight averaging: the average after each step is the formula's; runs
 * evaluate and end on it; stopped and resumed runs (also past a finished
 * run's end) give the same bytes; the refusals. */
static void test_ema(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *val,
                     const nn_dataset *te) {
    nn_train_config c = nn_train_config_defaults();
    c.batch = 32;
    c.ema = 0.9f;
    nn_net *net = make_net(ctx, c.batch, 11);
    const size_t np = nn_net_num_params(net);
    float *x = fvec(32 * 64), *want = fvec(np), *p = fvec(np), *got = fvec(np);
    int32_t y[32];
    nn_dataset_gather(tr, NULL, 0, 32, &c.norm, x, y);
    nn_trainer *t = NULL;
    nn_status s = nn_trainer_new(net, &c, NULL, NULL, NULL, &t);
    nn_ctx_download(ctx, want, nn_net_params(net), np * sizeof(float));
    double err = 0.0;
    for (int k = 1; !s && k <= 20; k++) {
        s = nn_trainer_step_batch(t, x, y, 32, NULL);
        nn_ctx_download(ctx, p, nn_net_params(net), np * sizeof(float));
        const double d = fmin(0.9, (1.0 + k) / (10.0 + k));
        for (size_t i = 0; i < np; i++) want[i] = (float)(d * want[i] + (1.0 - d) * p[i]);
    }
    if (!s) nn_ctx_download(ctx, got, nn_trainer_state(t)->ema, np * sizeof(float));
    double moved = 0.0;
    for (size_t i = 0; !s && i < np; i++) {
        err = fmax(err, fabs((double)got[i] - want[i]) / (fabs((double)want[i]) + 1e-3));
        moved = fmax(moved, fabs((double)got[i] - p[i]));
    }
    check(!s && err < 1e-5 && moved > 1e-4,
          "ema: the average after 20 steps is the decayed sum of the weights (min(0.9, (1+s)/(10+s)))",
          "max relative error %.3g, distance from the live weights %.3g: %s", err, moved,
          s ? nn_ctx_error(ctx) : "");
    nn_trainer_free(t);
    nn_net_free(net);

    /* a run reports the average's accuracy and ends on the average */
    c = nn_train_config_defaults();
    c.epochs = 2;
    c.batch = 16;
    c.ema = 0.95f;
    net = make_net(ctx, c.batch, 11);
    t = NULL;
    nn_epoch_report r = {0};
    s = nn_trainer_new(net, &c, tr, val, te, &t);
    while (!s && !nn_trainer_finished(t)) s = nn_trainer_epoch(t, &r);
    double loss = 0.0, acc = 0.0;
    if (!s) s = nn_trainer_evaluate(t, te, &loss, &acc);
    check(!s && nn_trainer_state(t)->ema_swapped && loss == r.test_loss && acc == r.test_accuracy,
          "ema: the finished run holds the average, whose test loss the last epoch reported",
          "swapped %d, loss %.9g vs %.9g: %s", t ? nn_trainer_state(t)->ema_swapped : -1, loss,
          r.test_loss, s ? nn_ctx_error(ctx) : "");
    nn_trainer_free(t);
    nn_net_free(net);

    /* stop and resume mid-epoch; and resume a finished run for one more epoch
     * (the constant schedule makes 2 + 1 epochs the same run as 3) */
    char ref[512], cut[512], more[512];
    snprintf(ref, sizeof ref, "%s", tmp_path("ema_ref.st"));
    snprintf(cut, sizeof cut, "%s", tmp_path("ema_cut.st"));
    snprintf(more, sizeof more, "%s", tmp_path("ema_more.st"));
    c.epochs = 3;
    c.save = ref;
    nn_status s1 = train(ctx, c, tr, val, te, 0);
    c.save = cut;
    nn_status s2 = train(ctx, c, tr, val, te, 13);
    int same = !s1 && !s2 && header_has(ref, "__ema__.conv1.weight") && same_file(ref, cut);
    check(same, "ema: stopped and resumed = uninterrupted (checkpoint byte-identical)", "%s",
          s1 || s2 ? nn_ctx_error(ctx) : same ? "" : "checkpoints differ");
    c.epochs = 2;
    c.save = more;
    s1 = train(ctx, c, tr, val, te, 0);
    c.epochs = 3;
    net = make_net(ctx, c.batch, 99);
    t = NULL;
    if (!s1 && !(s1 = nn_trainer_new(net, &c, tr, val, te, &t)) &&
        !(s1 = nn_trainer_resume(t, more)))
        s1 = nn_trainer_run(t);
    nn_trainer_free(t);
    nn_net_free(net);
    same = !s1 && same_file(ref, more);
    check(same, "ema: a finished run resumed for another epoch trains on from the live weights",
          "%s", s1 ? nn_ctx_error(ctx) : same ? "" : "checkpoints differ");
    net = make_net(ctx, c.batch, 5);
    s = nn_checkpoint_load(ctx, ref, net, NULL, NULL);
    check(!s, "a weights-only load ignores the average's tensors", "%s",
          s ? nn_ctx_error(ctx) : "");
    nn_net_free(net);

    /* refusals */
    c.save = NULL;
    c.ema = 1.0f;
    net = make_net(ctx, c.batch, 11);
    t = NULL;
    s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "ema"), "ema 1 is refused", "%s",
          nn_ctx_error(ctx));
    nn_trainer_free(t);
    c.ema = 0.99f;
    c.stages = 2;
    t = NULL;
    s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EUNSUPPORTED && contains(nn_ctx_error(ctx), "pipeline"),
          "ema with pipeline stages is refused", "%s", nn_ctx_error(ctx));
    nn_trainer_free(t);
    nn_net_free(net);
    c.stages = 0;
    char plain[512];
    snprintf(plain, sizeof plain, "%s", tmp_path("ema_plain.st"));
    nn_train_config q = c;
    q.ema = 0.0f;
    q.epochs = 1;
    q.save = plain;
    s = train(ctx, q, tr, val, te, 0);
    if (!s) s = try_resume(ctx, c, tr, val, plain);
    check(s == NN_EFORMAT && contains(nn_ctx_error(ctx), "without ema"),
          "resuming a run trained without ema with ema is refused, naming why", "%s",
          nn_ctx_error(ctx));
    free(x);
    free(want);
    free(p);
    free(got);
}

static void test_bad_config(nn_ctx *ctx, const nn_dataset *tr) {
    nn_net *net = make_net(ctx, 16, 11);
    nn_trainer *t = NULL;
    nn_train_config c = nn_train_config_defaults();
    c.batch = 17;
    nn_status s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EINVAL && !t && contains(nn_ctx_error(ctx), "batch"),
          "a batch above the planned one is refused", "%s", nn_ctx_error(ctx));
    c = nn_train_config_defaults();
    c.batch = 16;
    c.early_stop = 2;
    s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "validation"),
          "early stopping without a validation set is refused", "%s", nn_ctx_error(ctx));
    c = nn_train_config_defaults();
    c.batch = 16;
    c.sched = nn_sched_defaults(NN_SCHED_STEP, c.optim.lr);
    s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "step_size"),
          "a schedule without its step size is refused, naming the field", "%s",
          nn_ctx_error(ctx));
    c = nn_train_config_defaults();
    c.batch = 16;
    c.optim.lr = -1.0f;
    s = nn_trainer_new(net, &c, tr, NULL, NULL, &t);
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "lr"),
          "a negative learning rate is refused, naming the field", "%s", nn_ctx_error(ctx));
    nn_net_free(net);
}

/* A communicator of 2 ranks that holds one copy of the data (averaging it
 * with itself leaves it as it is) and records what the trainer asks. */
typedef struct {
    nn_comm comm;
    const float *base;     /* the gradient buffer */
    size_t num_params;
    int starts, waits, broadcasts, layers_done, bad_order, overlap;
    size_t next_hi;        /* where the next bucket must end */
    int pending[64];
} recorder;

static nn_status rec_start(nn_comm *c, float *buf, size_t n, int *req) {
    recorder *r = c->impl;
    size_t lo = (size_t)(buf - r->base);
    if (lo + n != r->next_hi) r->bad_order++;
    r->next_hi = lo;
    if (r->next_hi == 0) r->next_hi = r->num_params; /* the step's last bucket */
    if (r->layers_done < 4) r->overlap++; /* started before the backward pass ended */
    *req = r->starts++ % 64;
    r->pending[*req]++;
    return NN_OK;
}

static nn_status rec_wait(nn_comm *c, int req) {
    recorder *r = c->impl;
    r->waits++;
    if (r->pending[req]-- != 1) r->bad_order++;
    return NN_OK;
}

static nn_status rec_broadcast(nn_comm *c, float *buf, size_t n, int root) {
    (void)buf;
    (void)n;
    ((recorder *)c->impl)->broadcasts += root == 0;
    return NN_OK;
}

static void count_layers(void *user, int layer, int backward, double t0, double t1) {
    (void)layer;
    (void)t0;
    (void)t1;
    recorder *r = user;
    if (!backward) r->layers_done = 0;
    else r->layers_done++;
}

/* Batch norm over flat features cannot take a batch of 1: a training set
 * that leaves one fails in nn_trainer_new, not after an epoch. */
static void test_last_batch_of_one(nn_ctx *ctx, const nn_dataset *tr) {
    const char *path = tmp_path("flatbn.nn");
    FILE *f = fopen(path, "w");
    fputs("input shape=1x8x8\nflatten\nlinear name=fc1 out=8\nbatchnorm name=bn\nrelu\n"
          "linear name=fc2 out=5\nsoftmax_ce\n", f);
    fclose(f);
    nn_net *net = NULL;
    nn_status s = nn_net_load(ctx, path, &net);
    if (!s) s = nn_net_plan(net, 16);
    nn_dataset sub = *tr;
    sub.n = 33; /* 2 batches of 16 and 1 */
    nn_trainer *t = NULL;
    nn_train_config c = nn_train_config_defaults();
    c.batch = 16;
    if (!s) s = nn_trainer_new(net, &c, &sub, NULL, NULL, &t);
    check(s == NN_EINVAL && !t && contains(nn_ctx_error(ctx), "last batch of 1") &&
              contains(nn_ctx_error(ctx), "batchnorm"),
          "a last training batch of 1 with batch norm is refused up front", "%s",
          nn_ctx_error(ctx));
    sub.n = 34;
    s = net ? nn_trainer_new(net, &c, &sub, NULL, NULL, &t) : NN_EINVAL;
    check(!s && t, "a last batch of 2 is accepted", "%s", s ? nn_ctx_error(ctx) : "");
    nn_trainer_free(t);
    nn_net_free(net);
}

static void test_comm_seam(nn_ctx *ctx, const nn_dataset *tr, const nn_dataset *te) {
    char ref[512], got[512];
    snprintf(ref, sizeof ref, "%s", tmp_path("comm_ref.st"));
    snprintf(got, sizeof got, "%s", tmp_path("comm_got.st"));
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 1;
    c.batch = 16;
    c.accumulate = 2;
    c.save = ref;
    nn_status s = train(ctx, c, tr, NULL, te, 0);
    nn_net *net = make_net(ctx, c.batch, 11);
    nn_trainer *t = NULL;
    recorder r;
    memset(&r, 0, sizeof r);
    r.comm = (nn_comm){.rank = 0, .size = 2, .allreduce_start = rec_start, .wait = rec_wait,
                       .broadcast = rec_broadcast, .impl = &r};
    r.base = nn_net_grads(net);
    r.num_params = nn_net_num_params(net);
    r.next_hi = r.num_params;
    nn_net_set_hook(net, count_layers, &r);
    c.save = got;
    /* 100-byte buckets: the 373 gradients of the small network in 15 */
    if (!s) s = nn_trainer_new(net, &c, tr, NULL, te, &t);
    if (!s) s = nn_trainer_set_comm(t, &r.comm, 100);
    if (!s) s = nn_trainer_run(t);
    const int64_t steps = t ? nn_trainer_state(t)->step : 0;
    const int buckets = (int)((r.num_params + 24) / 25);
    check(!s && r.broadcasts == 2, "the communicator broadcasts parameters and buffers at start",
          "%d broadcasts: %s", r.broadcasts, s ? nn_ctx_error(ctx) : "");
    check(!s && r.starts == steps * buckets && r.waits == r.starts && r.bad_order == 0,
          "every step all-reduces each bucket once, in reverse layer order, waited for",
          "%d params, %d buckets, %lld steps: %d starts, %d waits, %d out of order",
          (int)r.num_params, buckets, (long long)steps, r.starts, r.waits, r.bad_order);
    check(r.overlap >= steps, "buckets start while the backward pass still runs",
          "%d of %d starts early", r.overlap, r.starts);
    nn_trainer_free(t);
    nn_net_free(net);
}

/* Two ranks as two threads of this process, exchanging through shared slots
 * between barriers: each sum is taken in rank order, so both ranks get the
 * same bytes, as MPI_Allreduce gives them. */
typedef struct {
    pthread_barrier_t bar;
    float *f[2];
    double *d[2];
} duo;

typedef struct {
    nn_comm comm;
    duo *shared;
    const char *model;     /* NULL: PLAIN_MODEL */
    nn_train_config cfg;
    const nn_dataset *tr, *te;
    nn_epoch_report rep;
    float *params;         /* (num_params) after the run, host copy */
    size_t num_params;
    float *buffers;        /* (num_buffers) likewise */
    size_t num_buffers;
    nn_status s;
    char err[512];
} duo_rank;

static nn_status duo_start(nn_comm *c, float *buf, size_t n, int *req) {
    duo *d = ((duo_rank *)c->impl)->shared;
    float *sum = xmalloc(n * sizeof(float) + 1);
    d->f[c->rank] = buf;
    pthread_barrier_wait(&d->bar);
    for (size_t i = 0; i < n; i++) sum[i] = (d->f[0][i] + d->f[1][i]) * 0.5f;
    pthread_barrier_wait(&d->bar); /* both have read both */
    memcpy(buf, sum, n * sizeof(float));
    free(sum);
    *req = 0;
    return NN_OK;
}

static nn_status duo_wait(nn_comm *c, int req) {
    (void)c;
    (void)req;
    return NN_OK;
}

static nn_status duo_broadcast(nn_comm *c, float *buf, size_t n, int root) {
    duo *d = ((duo_rank *)c->impl)->shared;
    d->f[c->rank] = buf;
    pthread_barrier_wait(&d->bar);
    if (c->rank != root) memcpy(buf, d->f[root], n * sizeof(float));
    pthread_barrier_wait(&d->bar);
    return NN_OK;
}

static nn_status duo_sum(nn_comm *c, double *buf, size_t n) {
    duo *d = ((duo_rank *)c->impl)->shared;
    double *sum = xmalloc(n * sizeof(double) + 1);
    d->d[c->rank] = buf;
    pthread_barrier_wait(&d->bar);
    for (size_t i = 0; i < n; i++) sum[i] = d->d[0][i] + d->d[1][i];
    pthread_barrier_wait(&d->bar);
    memcpy(buf, sum, n * sizeof(double));
    free(sum);
    return NN_OK;
}

/* No batch norm or dropout: their statistics and masks are per rank. */
static const char *PLAIN_MODEL =
    "input shape=1x8x8\nconv2d name=conv1 out=4 kernel=3 pad=1\nrelu\nmaxpool size=2\n"
    "flatten\nlinear name=fc out=5\nsoftmax_ce\n";

/* With batch norm (and no dropout): the same with sync_bn. */
static const char *BN_MODEL =
    "input shape=1x8x8\nconv2d name=conv1 out=4 kernel=3 pad=1 bias=0\nbatchnorm name=bn1\n"
    "relu\nmaxpool size=2\nconv2d name=conv2 out=6 kernel=3 pad=1 bias=0\nbatchnorm name=bn2\n"
    "relu\nflatten\nlinear name=fc out=5\nsoftmax_ce\n";

static nn_net *plain_net(nn_ctx *ctx, const char *model, int batch, uint64_t seed) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, model ? model : PLAIN_MODEL, "plain", &net) || nn_net_plan(net, batch))
        return NULL;
    nn_rng rng;
    nn_rng_seed(&rng, seed, 1);
    nn_net_init_params(net, &rng);
    return net;
}

/* One epoch on one context: a rank (comm set) or the single process. */
static void *run_rank(void *arg) {
    duo_rank *r = arg;
    nn_ctx *ctx = nn_ctx_new(1);
    /* rank 1 starts from other weights: the broadcast must replace them */
    nn_net *net = plain_net(ctx, r->model, r->cfg.batch, 11 + (uint64_t)r->comm.rank);
    nn_trainer *t = NULL;
    r->s = net ? nn_trainer_new(net, &r->cfg, r->tr, NULL, r->te, &t) : NN_EINVAL;
    if (!r->s && r->shared) r->s = nn_trainer_set_comm(t, &r->comm, 100);
    if (!r->s) r->s = nn_trainer_epoch(t, &r->rep);
    if (!r->s) {
        r->num_params = nn_net_num_params(net);
        r->params = xmalloc(r->num_params * sizeof(float));
        nn_ctx_download(ctx, r->params, nn_net_params(net), r->num_params * sizeof(float));
        r->num_buffers = nn_net_num_buffers(net);
        r->buffers = xmalloc(r->num_buffers * sizeof(float) + 1);
        nn_ctx_download(ctx, r->buffers, nn_net_buffers(net), r->num_buffers * sizeof(float));
    }
    snprintf(r->err, sizeof r->err, "%s", r->s ? nn_ctx_error(ctx) : "");
    nn_trainer_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return NULL;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-3);
        if (d > worst) worst = d;
    }
    return worst;
}

/* Runs one process (batch 16) and two ranks as threads (batch 8 each) with
 * config c (model NULL: PLAIN_MODEL) on the first n samples of tr. */
static void run_pair(const char *model, const nn_train_config *c, int64_t n,
                     const nn_dataset *tr, const nn_dataset *te, duo_rank *one, duo_rank rk[2]) {
    static nn_dataset sub;
    sub = *tr;
    sub.n = n;
    duo shared;
    pthread_barrier_init(&shared.bar, NULL, 2);
    *one = (duo_rank){.model = model, .cfg = *c, .tr = &sub, .te = te};
    one->cfg.batch = 16;
    run_rank(one);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        rk[i] = (duo_rank){.shared = &shared, .model = model, .cfg = *c, .tr = &sub, .te = te};
        rk[i].cfg.batch = 8;
        rk[i].comm = (nn_comm){.rank = i, .size = 2, .allreduce_start = duo_start,
                               .wait = duo_wait, .broadcast = duo_broadcast,
                               .sum_f64 = duo_sum, .impl = &rk[i]};
        pthread_create(&th[i], NULL, run_rank, &rk[i]);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&shared.bar);
}

/* 2 ranks x batch 8 against 1 process x batch 16, accumulating 2 batches:
 * 147 samples leave a last global batch of 3, split 1 and 2, so the sample
 * weighting of the ranks' gradients is what makes them agree. */
static void test_two_ranks(const nn_dataset *tr, const nn_dataset *te) {
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 1;
    c.accumulate = 2;
    duo_rank one, rk[2];
    run_pair(NULL, &c, 147, tr, te, &one, rk);
    const int ok = !one.s && !rk[0].s && !rk[1].s;
    check(ok, "one process and two ranks train an epoch", "%s / %s / %s", one.err, rk[0].err,
          rk[1].err);
    if (!ok) return;
    check(memcmp(rk[0].params, rk[1].params, one.num_params * sizeof(float)) == 0,
          "both ranks end with bit-identical parameters", NULL);
    const double dp = max_rel_diff(rk[0].params, one.params, one.num_params);
    const double dl = fabs(rk[0].rep.train_loss - one.rep.train_loss) / one.rep.train_loss;
    const double dt = fabs(rk[0].rep.test_loss - one.rep.test_loss) / one.rep.test_loss;
    check(dp < 1e-5 && dl < 1e-5 && dt < 1e-5 && rk[0].rep.step == one.rep.step,
          "2 ranks x batch 8 equal 1 process x batch 16 (unequal last shares)",
          "parameters %.2g, train loss %.2g (%.7f vs %.7f), test loss %.2g, steps %lld vs %lld",
          dp, dl, rk[0].rep.train_loss, one.rep.train_loss, dt, (long long)rk[0].rep.step,
          (long long)one.rep.step);
    for (int i = 0; i < 2; i++) {
        free(rk[i].params);
        free(rk[i].buffers);
    }
    free(one.params);
    free(one.buffers);
}

/* Runs one process (batch 16) and two ranks as threads (batch 8 each) on the
 * first n samples of tr with model and sync_bn, accumulating 2 batches. */
static void run_duo(const char *model, int sync_bn, int64_t n, const nn_dataset *tr,
                    const nn_dataset *te, duo_rank *one, duo_rank rk[2]) {
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 1;
    c.accumulate = 2;
    c.sync_bn = sync_bn;
    run_pair(model, &c, n, tr, te, one, rk);
}

static void free_duo(duo_rank *one, duo_rank rk[2]) {
    free(one->params);
    free(one->buffers);
    for (int i = 0; i < 2; i++) {
        free(rk[i].params);
        free(rk[i].buffers);
    }
}

/* Batch norm over the ranks (sync_bn): 2 ranks x 8 equal 1 process x 16,
 * the last global batch of 3 split 1 and 2 included (so each rank's sums
 * must be weighted by its samples), running statistics too; without sync_bn
 * they do not. */
static void test_sync_bn(const nn_dataset *tr, const nn_dataset *te) {
    duo_rank one, rk[2];
    run_duo(BN_MODEL, 1, 147, tr, te, &one, rk);
    int ok = !one.s && !rk[0].s && !rk[1].s;
    check(ok, "sync_bn: one process and two ranks train an epoch", "%s / %s / %s", one.err,
          rk[0].err, rk[1].err);
    if (ok) {
        check(memcmp(rk[0].params, rk[1].params, one.num_params * sizeof(float)) == 0 &&
                  memcmp(rk[0].buffers, rk[1].buffers, one.num_buffers * sizeof(float)) == 0,
              "sync_bn: both ranks end with bit-identical parameters and running statistics",
              NULL);
        const double dp = max_rel_diff(rk[0].params, one.params, one.num_params);
        const double db = max_rel_diff(rk[0].buffers, one.buffers, one.num_buffers);
        const double dl = fabs(rk[0].rep.train_loss - one.rep.train_loss) / one.rep.train_loss;
        const double dt = fabs(rk[0].rep.test_loss - one.rep.test_loss) / one.rep.test_loss;
        check(dp < 1e-5 && db < 1e-5 && dl < 1e-5 && dt < 1e-5,
              "sync_bn: 2 ranks x batch 8 equal 1 process x batch 16 with batch norm (unequal "
              "last shares)", "parameters %.2g, running statistics %.2g, train loss %.2g, test "
              "loss %.2g", dp, db, dl, dt);
    }
    free_duo(&one, rk);
    run_duo(BN_MODEL, 0, 147, tr, te, &one, rk);
    ok = !one.s && !rk[0].s && !rk[1].s;
    const double dp = ok ? max_rel_diff(rk[0].params, one.params, one.num_params) : 0.0;
    check(ok && dp > 1e-3, "without sync_bn the same run differs (per-rank statistics)",
          "parameters %.2g; %s / %s", dp, rk[0].err, rk[1].err);
    free_duo(&one, rk);
    /* 145: the last global batch of 1 leaves rank 0 no share */
    run_duo(BN_MODEL, 1, 145, tr, te, &one, rk);
    check(rk[0].s == NN_EINVAL && rk[1].s == NN_EINVAL &&
              contains(rk[0].err, "leave rank 0 no share") && contains(rk[0].err, "sync_bn"),
          "sync_bn refuses a last global batch that leaves a rank no samples", "%s", rk[0].err);
    free_duo(&one, rk);
}

/* Shards (cfg.shards 2): 1 process x batch 16 computes each batch as the
 * 2 ranks x 8 do, so both end with the same bytes: parameters, running
 * statistics (sync_bn) and, on either model, through a last global batch
 * of 3 split 1 and 2 (each shard's gradient weighted by its samples).
 * Refused: batch norm without sync_bn, a world size other than 1 or the
 * shards, and accumulation. */
static void run_shards(const char *model, int sync_bn, int accumulate, int shards, int64_t n,
                       const nn_dataset *tr, const nn_dataset *te, duo_rank *one,
                       duo_rank rk[2]) {
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 1;
    c.sync_bn = sync_bn;
    c.accumulate = accumulate;
    c.shards = shards;
    run_pair(model, &c, n, tr, te, one, rk);
}

static void test_shards(const nn_dataset *tr, const nn_dataset *te) {
    const char *models[2] = {PLAIN_MODEL, BN_MODEL};
    for (int m = 0; m < 2; m++) {
        duo_rank one, rk[2];
        run_shards(models[m], m == 1, 1, 2, 147, tr, te, &one, rk);
        const int ok = !one.s && !rk[0].s && !rk[1].s;
        check(ok, "shards: one process and two ranks train an epoch", "%s / %s / %s", one.err,
              rk[0].err, rk[1].err);
        if (ok) {
            /* the losses are sums over the ranks or over the batches: other orders */
            const double dl = fabs(rk[0].rep.train_loss - one.rep.train_loss) / one.rep.train_loss;
            const double dt = fabs(rk[0].rep.test_loss - one.rep.test_loss) / one.rep.test_loss;
            check(memcmp(rk[0].params, one.params, one.num_params * sizeof(float)) == 0 &&
                      memcmp(rk[1].params, one.params, one.num_params * sizeof(float)) == 0 &&
                      memcmp(rk[0].buffers, one.buffers, one.num_buffers * sizeof(float)) == 0 &&
                      rk[0].rep.test_accuracy == one.rep.test_accuracy && dl < 1e-6 && dt < 1e-6,
                  m ? "shards, batch norm synchronized: 1 process x 16 ends with the bytes of "
                      "2 ranks x 8 (parameters, running statistics)"
                    : "shards: 1 process x 16 ends with the bytes of 2 ranks x 8",
                  "parameters %.2g apart, running statistics %.2g, train loss %.2g, test loss "
                  "%.2g", max_rel_diff(rk[0].params, one.params, one.num_params),
                  max_rel_diff(rk[0].buffers, one.buffers, one.num_buffers), dl, dt);
        }
        free_duo(&one, rk);
    }
    duo_rank one, rk[2];
    /* 145: the last global batch of 1 leaves shard (rank) 0 nothing */
    run_shards(PLAIN_MODEL, 0, 1, 2, 145, tr, te, &one, rk);
    check(!one.s && !rk[0].s && !rk[1].s &&
              memcmp(rk[0].params, one.params, one.num_params * sizeof(float)) == 0,
          "shards: an empty shard in the last batch, as an empty rank, gives the same bytes",
          "%s / %s / %s", one.err, rk[0].err, rk[1].err);
    free_duo(&one, rk);
    run_shards(BN_MODEL, 0, 1, 2, 147, tr, te, &one, rk);
    check(one.s == NN_EINVAL && contains(one.err, "need sync_bn") && contains(one.err, "bn1") &&
              rk[0].s == NN_EINVAL,
          "shards refuse batch norm without sync_bn, naming the layer", "%s", one.err);
    free_duo(&one, rk);
    run_shards(PLAIN_MODEL, 0, 1, 3, 147, tr, te, &one, rk);
    check(!one.s && rk[0].s == NN_EINVAL && contains(rk[0].err, "run 1 process or 3 ranks"),
          "shards 3 run on 1 process, and are refused on 2 ranks", "%s / %s", one.err, rk[0].err);
    free_duo(&one, rk);
    run_shards(PLAIN_MODEL, 0, 2, 2, 147, tr, te, &one, rk);
    check(one.s == NN_EINVAL && contains(one.err, "accumulate"),
          "shards refuse accumulation", "%s", one.err);
    free_duo(&one, rk);
}

/* A net with per-thread workspace in every convolution kernel kind the
 * shapes reach (16 -> 16 channels: Winograd on AVX-512). */
static const char *THREADS_MODEL =
    "input shape=1x8x8\n"
    "conv2d name=c1 out=16 kernel=3 pad=1\n"
    "relu\n"
    "conv2d name=c2 out=16 kernel=3 pad=1\n"
    "relu\n"
    "maxpool size=2\n"
    "flatten\n"
    "linear name=fc out=5\n"
    "softmax_ce\n";

typedef struct {
    nn_ctx *ctx;
    int calls, refused;
} thread_cycler;

/* Between steps: 1, 3, 2, 4, 1, ... threads (what a driver sharing its cores
 * does), never above the count the net was planned for. */
static void cycle_threads(void *user, const nn_batch_report *r) {
    (void)r;
    thread_cycler *c = user;
    static const int counts[] = {1, 3, 2, 4};
    const int n = counts[c->calls++ % 4];
    if (nn_ctx_set_threads(c->ctx, n > nn_ctx_max_threads(c->ctx) ? 1 : n)) c->refused++;
}

/* Trains THREADS_MODEL planned on ctx's threads, with threads (> 0) set
 * before the run or changed every step (0); checkpoint to save. */
static nn_status train_threads(nn_ctx *ctx, int threads, const char *save, const nn_dataset *tr,
                               const nn_dataset *te, thread_cycler *cyc) {
    nn_net *net = NULL;
    nn_trainer *t = NULL;
    const char *path = tmp_path("threads.nn");
    FILE *f = fopen(path, "w");
    fputs(THREADS_MODEL, f);
    fclose(f);
    nn_train_config c = nn_train_config_defaults();
    c.epochs = 2;
    c.batch = 16;
    c.seed = 3;
    c.save = save;
    nn_status s;
    if ((s = nn_net_load(ctx, path, &net)) || (s = nn_net_plan(net, c.batch))) goto out;
    nn_rng rng;
    nn_rng_seed(&rng, 7, 1);
    nn_net_init_params(net, &rng);
    if ((s = nn_trainer_new(net, &c, tr, NULL, te, &t))) goto out;
    if (threads > 0 && (s = nn_ctx_set_threads(ctx, threads))) goto out;
    nn_train_callbacks cb = {NULL, cycle_threads, NULL, cyc};
    if (threads == 0) nn_trainer_set_callbacks(t, &cb);
    s = nn_trainer_run(t);
out:
    nn_trainer_free(t);
    nn_net_free(net);
    return s;
}

/* nn_ctx_set_threads: 1..the count the context was made with; a net
 * planned for 4 threads run on 1 gives the bytes of a 1-thread context; a
 * run whose count changes every step (guard backend and ASan: within the
 * planned workspace) ends finite. */
static void test_set_threads(const nn_dataset *tr, const nn_dataset *te) {
    nn_ctx *four = test_ctx_new(4), *one = test_ctx_new(1);
    const int refused = nn_ctx_set_threads(four, 5) == NN_EINVAL &&
                        nn_ctx_set_threads(four, 0) == NN_EINVAL && nn_ctx_threads(four) == 4;
    check(refused && nn_ctx_max_threads(four) == 4 && strstr(nn_ctx_error(four), "1..4"),
          "set_threads: 0 and 5 refused on a 4-thread context (count unchanged)", "%s",
          nn_ctx_error(four));
    char a[512], b[512], c[512];
    snprintf(a, sizeof a, "%s", tmp_path("thr_one.st"));
    snprintf(b, sizeof b, "%s", tmp_path("thr_down.st"));
    snprintf(c, sizeof c, "%s", tmp_path("thr_cycle.st"));
    thread_cycler cyc = {four, 0, 0};
    nn_status s1 = train_threads(one, 1, a, tr, te, &cyc);
    nn_status s2 = train_threads(four, 1, b, tr, te, &cyc);
    check(!s1 && !s2 && same_file(a, b),
          "planned for 4 threads, run on 1 (set_threads) = a 1-thread context, bit for bit", "%s",
          s1 ? nn_ctx_error(one) : s2 ? nn_ctx_error(four) : "");
    nn_ctx_set_threads(four, 4);
    nn_status s3 = train_threads(four, 0, c, tr, te, &cyc);
    /* a checkpoint is written only with finite values */
    nn_st_file *st = NULL;
    int finite = 0;
    if (!s3 && nn_safetensors_open(four, c, &st) == NN_OK) {
        finite = 1;
        nn_safetensors_close(st);
    }
    check(!s3 && finite && cyc.calls > 10 && cyc.refused == 0,
          "threads changed every step (1, 3, 2, 4): the run completes and its checkpoint loads",
          "%d changes, %d refused%s%s", cyc.calls, cyc.refused, s3 ? ": " : "",
          s3 ? nn_ctx_error(four) : "");
    nn_ctx_free(four);
    nn_ctx_free(one);
}

int main(void) {
    tmp_dir_create("trainer");
    nn_ctx *ctx = test_ctx_new(2);
    nn_dataset tr, val, te;
    make_data(&tr, 150, 1);
    make_data(&val, 48, 2);
    make_data(&te, 40, 3);
    test_resume_exact(ctx, &tr, &val, &te);
    test_early_stop(ctx, &tr, &val, &te);
    test_early_stop_resume(ctx, &tr, &val, &te);
    test_resume_other_run(ctx, &tr, &te);
    test_nonfinite_keeps_checkpoint(ctx, &tr, &te, 0);
    test_nonfinite_keeps_checkpoint(ctx, &tr, &te, 1);
    test_callbacks(ctx, &tr, &te);
    test_step_batch(ctx, &tr);
    test_ema(ctx, &tr, &val, &te);
    test_bad_config(ctx, &tr);
    test_comm_seam(ctx, &tr, &te);
    test_two_ranks(&tr, &te);
    test_sync_bn(&tr, &te);
    test_shards(&tr, &te);
    test_last_batch_of_one(ctx, &tr);
    test_set_threads(&tr, &te);
    nn_dataset_free(&tr);
    nn_dataset_free(&val);
    nn_dataset_free(&te);
    nn_ctx_free(ctx);
    remove_tree(tmp_dir);
    return test_summary();
}
