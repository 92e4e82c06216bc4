/*
 * cmd_train.c - `nnopt train MODEL`: the training loop. Options come from the
 * defaults, then a recipe file (--config), then the command line. Each epoch
 * draws a permutation from the run's RNG; a background loader prepares (and
 * augments) the next batch while the current one trains; micro-batches may be
 * accumulated into one optimizer step; the learning rate follows a schedule;
 * gradients may be clipped. After every epoch: evaluation on the test set (and
 * the validation split), one line (or one JSON object), an atomic checkpoint,
 * and early stopping on the validation loss. A checkpoint carries the
 * optimizer state, the step, the schedule and early-stopping state and the RNG
 * position at the start of the epoch, so --resume continues bit for bit, even
 * from the middle of an epoch (--save-every).
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNSET_F NAN
#define UNSET_I INT_MIN

typedef struct {
    const char *data, *log, *save, *init, *resume, *config, *optimizer, *schedule, *milestones,
        *precision;
    int epochs, batch, threads, no_shuffle, val, train_limit, test_limit, json, quiet, save_every,
        accumulate, early_stop, crop_pad, hflip;
    float mean, std, label_smoothing, clip_grad_norm, erase_prob, min_delta;
    uint64_t seed;
    /* optimizer: UNSET_F / UNSET_I take the optimizer's PyTorch default */
    float lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha, lr_decay;
    int nesterov, amsgrad, centered;
    /* schedule */
    float gamma, eta_min, pct_start, div_factor, final_div_factor, plateau_factor,
        plateau_threshold, min_lr, warmup_start_factor;
    int step_size, t_max, t_0, t_mult, plateau_patience, plateau_cooldown, warmup_steps,
        total_steps;
} train_opts;

/* Creates and removes the checkpoint's temporary file to prove the directory
 * is writable. */
static nn_status check_writable(nn_ctx *ctx, const char *path) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot write a checkpoint there: %s", path,
                           strerror(errno));
    fclose(f);
    unlink(tmp);
    return NN_OK;
}

static FILE *open_log(nn_ctx *ctx, const char *path, int append, int has_val) {
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) {
        nn_ctx_fail(ctx, NN_EIO, "%s: cannot open log file for writing", path);
        return NULL;
    }
    if (!append || ftell(f) == 0)
        fprintf(f, "epoch,step,train_loss,test_loss,test_accuracy,%sseconds,images_per_s\n",
                has_val ? "val_loss,val_accuracy," : "");
    fflush(f);
    return f;
}

/* The recipe is written next to the log: run.csv -> run.recipe.ini. */
static void recipe_path(char *buf, size_t size, const char *log) {
    const char *base = log;
    const char *slash = strrchr(base, '/');
    const char *dot = strrchr(base, '.');
    size_t len = dot && (!slash || dot > slash) ? (size_t)(dot - base) : strlen(base);
    snprintf(buf, size, "%.*s.recipe.ini", (int)len, base);
}

static float pick_f(float v, float def) { return isnan(v) ? def : v; }
static int pick_i(int v, int def) { return v == UNSET_I ? def : v; }

/* Optimizer configuration: PyTorch's defaults for the chosen optimizer, with
 * the seed recipe's momentum 0.9 for SGD, then whatever was set. */
static nn_status resolve_optim(nn_ctx *ctx, train_opts *o, nn_optim_config *c) {
    int kind = nn_optim_kind_from_name(o->optimizer);
    if (kind < 0)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "unknown optimizer '%s' (expected sgd, adam, adamw, rmsprop or adagrad)",
                           o->optimizer);
    *c = nn_optim_defaults((nn_optim_kind)kind);
    if (kind == NN_OPTIM_SGD) c->momentum = 0.9f;
    c->lr = o->lr = pick_f(o->lr, c->lr);
    c->momentum = o->momentum = pick_f(o->momentum, c->momentum);
    c->dampening = o->dampening = pick_f(o->dampening, c->dampening);
    c->weight_decay = o->weight_decay = pick_f(o->weight_decay, c->weight_decay);
    c->beta1 = o->beta1 = pick_f(o->beta1, c->beta1);
    c->beta2 = o->beta2 = pick_f(o->beta2, c->beta2);
    c->eps = o->eps = pick_f(o->eps, c->eps);
    c->alpha = o->alpha = pick_f(o->alpha, c->alpha);
    c->lr_decay = o->lr_decay = pick_f(o->lr_decay, c->lr_decay);
    c->nesterov = o->nesterov;
    c->amsgrad = o->amsgrad;
    c->centered = o->centered;
    return NN_OK;
}

static nn_status resolve_sched(nn_ctx *ctx, train_opts *o, int64_t steps_per_epoch,
                               nn_sched_config *c) {
    int kind = nn_sched_kind_from_name(o->schedule);
    if (kind < 0)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "unknown schedule '%s' (expected constant, step, multistep, "
                           "exponential, cosine, cosine_restarts, onecycle or plateau)",
                           o->schedule);
    *c = nn_sched_defaults((nn_sched_kind)kind, o->lr);
    c->gamma = o->gamma = pick_f(o->gamma, c->gamma);
    c->step_size = o->step_size = pick_i(o->step_size, c->step_size);
    /* cosine: anneal over the whole run unless told otherwise */
    c->t_max = o->t_max = pick_i(o->t_max, c->t_max > 0 ? c->t_max : o->epochs);
    if (c->t_max == 0) c->t_max = o->t_max = o->epochs; /* 0 in a recipe: the whole run */
    c->t_0 = o->t_0 = pick_i(o->t_0, c->t_0);
    c->t_mult = o->t_mult = pick_i(o->t_mult, c->t_mult);
    c->eta_min = o->eta_min = pick_f(o->eta_min, c->eta_min);
    c->pct_start = o->pct_start = pick_f(o->pct_start, c->pct_start);
    c->div_factor = o->div_factor = pick_f(o->div_factor, c->div_factor);
    c->final_div_factor = o->final_div_factor = pick_f(o->final_div_factor, c->final_div_factor);
    c->factor = o->plateau_factor = pick_f(o->plateau_factor, c->factor);
    c->threshold = o->plateau_threshold = pick_f(o->plateau_threshold, c->threshold);
    c->patience = o->plateau_patience = pick_i(o->plateau_patience, c->patience);
    c->cooldown = o->plateau_cooldown = pick_i(o->plateau_cooldown, c->cooldown);
    c->min_lr = o->min_lr = pick_f(o->min_lr, c->min_lr);
    c->warmup_steps = o->warmup_steps = pick_i(o->warmup_steps, (int)c->warmup_steps);
    c->warmup_start_factor = o->warmup_start_factor =
        pick_f(o->warmup_start_factor, c->warmup_start_factor);
    /* onecycle: over the whole run unless told otherwise */
    if (o->total_steps > 0) c->total_steps = o->total_steps;
    if (c->total_steps <= 0) c->total_steps = steps_per_epoch * o->epochs;
    if (o->milestones) {
        const char *p = o->milestones;
        c->num_milestones = 0;
        while (*p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || v > INT_MAX || c->num_milestones == NN_MAX_MILESTONES ||
                (*end && *end != ','))
                return nn_ctx_fail(ctx, NN_EINVAL,
                                   "--milestones: expected up to %d comma-separated epochs, got '%s'",
                                   NN_MAX_MILESTONES, o->milestones);
            c->milestones[c->num_milestones++] = (int)v;
            p = *end ? end + 1 : end;
        }
    }
    return nn_sched_validate(ctx, c);
}

/* Multiplies every gradient by s (the mean over accumulated micro-batches). */
static void scale_grads(float *g, size_t n, float s) {
    for (size_t i = 0; i < n; i++) g[i] *= s;
}

int cmd_train(int argc, char **argv) {
    train_opts o = {.data = NN_DEFAULT_DATA_DIR, .epochs = 5, .batch = 64, .seed = 1,
                    .mean = NN_FASHION_MNIST_MEAN, .std = NN_FASHION_MNIST_STD,
                    .optimizer = "sgd", .schedule = "constant", .precision = "fp32",
                    .accumulate = 1,
                    .lr = UNSET_F, .momentum = UNSET_F, .dampening = UNSET_F,
                    .weight_decay = UNSET_F, .beta1 = UNSET_F, .beta2 = UNSET_F, .eps = UNSET_F,
                    .alpha = UNSET_F, .lr_decay = UNSET_F, .gamma = UNSET_F, .eta_min = UNSET_F,
                    .pct_start = UNSET_F, .div_factor = UNSET_F, .final_div_factor = UNSET_F,
                    .plateau_factor = UNSET_F, .plateau_threshold = UNSET_F, .min_lr = UNSET_F,
                    .warmup_start_factor = UNSET_F, .step_size = UNSET_I, .t_max = UNSET_I,
                    .t_0 = UNSET_I, .t_mult = UNSET_I, .plateau_patience = UNSET_I,
                    .plateau_cooldown = UNSET_I, .warmup_steps = UNSET_I};
    const cli_opt opts[] = {
        {"--config", CLI_STR, &o.config, "FILE", "read a recipe file first; flags override it", 0, 0, NULL},
        {"--data", CLI_STR, &o.data, "DIR", "directory with the four IDX files, .gz or raw (default " NN_DEFAULT_DATA_DIR ")", 0, 0, "data.dir"},
        {"--val", CLI_INT, &o.val, "N", "carve the last N training images out as a validation split", 0, 1 << 30, "data.val"},
        {"--train-limit", CLI_INT, &o.train_limit, "N", "use only the first N training images", 0, 1 << 30, "data.train_limit"},
        {"--test-limit", CLI_INT, &o.test_limit, "N", "use only the first N test images", 0, 1 << 30, "data.test_limit"},
        {"--mean", CLI_FLOAT, &o.mean, "M", "normalization mean (default 0.2860)", -1e6, 1e6, "data.mean"},
        {"--std", CLI_FLOAT, &o.std, "S", "normalization std (default 0.3530)", 1e-9, 1e6, "data.std"},
        {"--no-shuffle", CLI_FLAG, &o.no_shuffle, NULL, "keep the training order fixed", 0, 0, "data.no_shuffle"},
        {"--epochs", CLI_INT, &o.epochs, "N", "epochs to train (default 5)", 1, 1000000, "train.epochs"},
        {"--batch", CLI_INT, &o.batch, "N", "batch size (default 64)", 1, 65536, "train.batch"},
        {"--accumulate", CLI_INT, &o.accumulate, "K", "add up K batches per optimizer step (default 1)", 1, 65536, "train.accumulate"},
        {"--seed", CLI_U64, &o.seed, "S", "seed for initialization, shuffling and augmentation (default 1)", 0, 0, "train.seed"},
        {"--threads", CLI_INT, &o.threads, "N", "threads (default: all cores)", 1, 1024, "train.threads"},
        {"--precision", CLI_STR, &o.precision, "P", "convolution arithmetic: fp32 (default) or bf16 (bf16 inputs, fp32 sums and weights)", 0, 0, "train.precision"},
        {"--early-stop", CLI_INT, &o.early_stop, "P", "stop when the validation loss has not improved for P epochs (needs --val)", 0, 1000000, "train.early_stop"},
        {"--min-delta", CLI_FLOAT, &o.min_delta, "D", "improvement that resets early stopping (default 0)", 0, 1e6, "train.min_delta"},
        {"--optimizer", CLI_STR, &o.optimizer, "NAME", "sgd (default), adam, adamw, rmsprop or adagrad", 0, 0, "optimizer.name"},
        {"--lr", CLI_FLOAT, &o.lr, "RATE", "learning rate (default 0.01 for SGD, else PyTorch's)", 0, 1e6, "optimizer.lr"},
        {"--momentum", CLI_FLOAT, &o.momentum, "M", "momentum: SGD (default 0.9), RMSprop (default 0)", 0, 1e6, "optimizer.momentum"},
        {"--dampening", CLI_FLOAT, &o.dampening, "D", "SGD dampening (default 0)", 0, 1, "optimizer.dampening"},
        {"--nesterov", CLI_FLAG, &o.nesterov, NULL, "SGD Nesterov momentum", 0, 0, "optimizer.nesterov"},
        {"--weight-decay", CLI_FLOAT, &o.weight_decay, "WD", "weight decay (AdamW: decoupled; default PyTorch's)", 0, 1e6, "optimizer.weight_decay"},
        {"--beta1", CLI_FLOAT, &o.beta1, "B", "Adam/AdamW beta1 (default 0.9)", 0, 1, "optimizer.beta1"},
        {"--beta2", CLI_FLOAT, &o.beta2, "B", "Adam/AdamW beta2 (default 0.999)", 0, 1, "optimizer.beta2"},
        {"--eps", CLI_FLOAT, &o.eps, "E", "epsilon of Adam/AdamW/RMSprop/Adagrad", 0, 1, "optimizer.eps"},
        {"--amsgrad", CLI_FLAG, &o.amsgrad, NULL, "Adam/AdamW AMSGrad", 0, 0, "optimizer.amsgrad"},
        {"--alpha", CLI_FLOAT, &o.alpha, "A", "RMSprop smoothing constant (default 0.99)", 0, 1, "optimizer.alpha"},
        {"--centered", CLI_FLAG, &o.centered, NULL, "centered RMSprop", 0, 0, "optimizer.centered"},
        {"--lr-decay", CLI_FLOAT, &o.lr_decay, "D", "Adagrad learning-rate decay (default 0)", 0, 1e6, "optimizer.lr_decay"},
        {"--schedule", CLI_STR, &o.schedule, "NAME", "constant (default), step, multistep, exponential, cosine, cosine_restarts, onecycle, plateau", 0, 0, "schedule.name"},
        {"--step-size", CLI_INT, &o.step_size, "E", "step: epochs per decay", 0, 1000000, "schedule.step_size"},
        {"--gamma", CLI_FLOAT, &o.gamma, "G", "step/multistep/exponential decay factor", 0, 1e6, "schedule.gamma"},
        {"--milestones", CLI_STR, &o.milestones, "E,E,..", "multistep: epochs at which to decay", 0, 0, "schedule.milestones"},
        {"--t-max", CLI_INT, &o.t_max, "E", "cosine: epochs of one half period (default: all epochs)", 0, 1000000, "schedule.t_max"},
        {"--t0", CLI_INT, &o.t_0, "E", "cosine_restarts: epochs of the first period", 0, 1000000, "schedule.t_0"},
        {"--t-mult", CLI_INT, &o.t_mult, "M", "cosine_restarts: period growth factor", 0, 1000, "schedule.t_mult"},
        {"--eta-min", CLI_FLOAT, &o.eta_min, "LR", "cosine: final learning rate (default 0)", 0, 1e6, "schedule.eta_min"},
        {"--total-steps", CLI_INT, &o.total_steps, "N", "onecycle: optimizer steps of the cycle (default: the whole run)", 0, 1 << 30, "schedule.total_steps"},
        {"--pct-start", CLI_FLOAT, &o.pct_start, "F", "onecycle: share of the steps spent warming up (default 0.3)", 0, 1, "schedule.pct_start"},
        {"--div-factor", CLI_FLOAT, &o.div_factor, "F", "onecycle: lr / initial lr (default 25)", 1e-9, 1e9, "schedule.div_factor"},
        {"--final-div-factor", CLI_FLOAT, &o.final_div_factor, "F", "onecycle: initial lr / final lr (default 1e4)", 1e-9, 1e12, "schedule.final_div_factor"},
        {"--plateau-factor", CLI_FLOAT, &o.plateau_factor, "F", "plateau: decay factor (default 0.1)", 0, 1, "schedule.plateau_factor"},
        {"--plateau-patience", CLI_INT, &o.plateau_patience, "E", "plateau: epochs without improvement (default 10)", 0, 1000000, "schedule.plateau_patience"},
        {"--plateau-threshold", CLI_FLOAT, &o.plateau_threshold, "T", "plateau: relative improvement (default 1e-4)", 0, 1, "schedule.plateau_threshold"},
        {"--plateau-cooldown", CLI_INT, &o.plateau_cooldown, "E", "plateau: epochs to wait after a decay (default 0)", 0, 1000000, "schedule.plateau_cooldown"},
        {"--min-lr", CLI_FLOAT, &o.min_lr, "LR", "plateau: lower bound (default 0)", 0, 1e6, "schedule.min_lr"},
        {"--warmup-steps", CLI_INT, &o.warmup_steps, "N", "linear warm-up over N optimizer steps (multiplies the schedule)", 0, 1 << 30, "schedule.warmup_steps"},
        {"--warmup-start-factor", CLI_FLOAT, &o.warmup_start_factor, "F", "warm-up starts at F x lr (default 1/3)", 0, 1, "schedule.warmup_start_factor"},
        {"--label-smoothing", CLI_FLOAT, &o.label_smoothing, "E", "softmax cross-entropy label smoothing (default 0)", 0, 1, "regularization.label_smoothing"},
        {"--clip-grad-norm", CLI_FLOAT, &o.clip_grad_norm, "N", "clip gradients to this global L2 norm (0 = off)", 0, 1e9, "regularization.clip_grad_norm"},
        {"--crop-pad", CLI_INT, &o.crop_pad, "P", "augment: random crop after padding by P pixels (0 = off)", 0, 64, "augment.crop_pad"},
        {"--hflip", CLI_FLAG, &o.hflip, NULL, "augment: random horizontal flips", 0, 0, "augment.hflip"},
        {"--erase-prob", CLI_FLOAT, &o.erase_prob, "P", "augment: random erasing probability (0 = off)", 0, 1, "augment.erase_prob"},
        {"--init", CLI_STR, &o.init, "FILE", "start from the weights in a safetensors file", 0, 0, NULL},
        {"--save", CLI_STR, &o.save, "FILE", "write a checkpoint after every epoch (atomic)", 0, 0, NULL},
        {"--save-every", CLI_INT, &o.save_every, "STEPS", "also checkpoint every STEPS optimizer steps", 1, 1 << 30, NULL},
        {"--resume", CLI_STR, &o.resume, "FILE", "continue exactly from a checkpoint written by --save", 0, 0, NULL},
        {"--log", CLI_STR, &o.log, "FILE", "write one CSV row per epoch (and the recipe next to it)", 0, 0, NULL},
        {"--json", CLI_FLAG, &o.json, NULL, "print one JSON object per epoch and nothing else on stdout", 0, 0, NULL},
        {"--quiet", CLI_FLAG, &o.quiet, NULL, "no progress bar", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    cli_strings keep = {0};
    /* a recipe file first, so that the flags parsed next override it */
    for (int i = 1; i < argc; i++) {
        const char *cfg = NULL;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) cfg = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) cfg = argv[i] + 9;
        if (cfg && cli_recipe_load(cfg, opts, &keep)) {
            cli_strings_free(&keep);
            return 2;
        }
    }
    const char *about =
        "Trains a model file on an IDX image data set (default: Debian's Fashion-MNIST)\n"
        "and reports train loss, test loss, test accuracy, seconds and images/s after\n"
        "every epoch. Recipe files (--config) use the keys shown in docs/usage.md.";
    int r = cli_parse("train", "MODEL [options]", about, argc, argv, opts, pos, 1, &npos);
    if (r) {
        cli_strings_free(&keep);
        return r == 2 ? 0 : 2;
    }
    nn_precision precision = NN_PRECISION_FP32;
    if (npos != 1 || (o.resume && o.init)) {
        fprintf(stderr, "nnopt train: %s\n",
                npos != 1 ? "expected one MODEL file (see nnopt train --help)"
                          : "--resume and --init exclude each other");
        cli_strings_free(&keep);
        return 2;
    }
    if (cli_parse_precision("train", o.precision, &precision)) {
        cli_strings_free(&keep);
        return 2;
    }
    if (o.early_stop && !o.val) {
        fprintf(stderr, "nnopt train: --early-stop needs a validation split (--val N)\n");
        cli_strings_free(&keep);
        return 2;
    }
    const char *model = pos[0];
    nn_ctx *ctx = nn_ctx_new(o.threads);
    if (ctx) nn_ctx_set_precision(ctx, precision);
    nn_net *net = NULL;
    nn_optimizer *opt = NULL;
    nn_loader *loader = NULL;
    nn_dataset train = {0}, test = {0}, val = {0};
    float *x = NULL;
    int32_t *y = NULL;
    int64_t *perm = NULL;
    FILE *log = NULL;
    int rc = 1;
    nn_normalize norm = {o.mean, o.std};
    nn_augment aug = {o.crop_pad, o.hflip, o.erase_prob};
    FILE *out = stdout;
    int tty = isatty(fileno(stdout)) && !o.json && !o.quiet;
    nn_optim_config ocfg;
    nn_sched_config scfg;

    if (nn_dataset_load_dir(ctx, o.data, "train", &train) ||
        nn_dataset_load_dir(ctx, o.data, "t10k", &test))
        goto done;
    if (o.val > 0 && nn_dataset_split(ctx, &train, o.val, &val)) goto done;
    if (o.train_limit && o.train_limit < train.n) nn_dataset_truncate(&train, o.train_limit);
    if (o.test_limit && o.test_limit < test.n) nn_dataset_truncate(&test, o.test_limit);
    const int64_t n = train.n;
    const int64_t batches = (n + o.batch - 1) / o.batch;
    const int64_t steps_per_epoch = (batches + o.accumulate - 1) / o.accumulate;
    if (resolve_optim(ctx, &o, &ocfg) || resolve_sched(ctx, &o, steps_per_epoch, &scfg)) {
        /* the recipe (with any flags on top) is what is inconsistent */
        if (o.config) {
            fprintf(stderr, "nnopt: %s: %s\n", o.config, nn_ctx_error(ctx));
            goto done_quiet;
        }
        goto done;
    }
    if (nn_net_load(ctx, model, &net) || cli_check_data(ctx, model, net, &train, o.data) ||
        cli_check_data(ctx, model, net, &test, o.data) || nn_net_plan(net, o.batch))
        goto done;

    nn_rng init_rng;
    nn_rng_seed(&init_rng, o.seed, 1);
    nn_net_init_params(net, &init_rng);
    if (o.init && nn_checkpoint_load(ctx, o.init, net, NULL, NULL)) goto done;
    if (nn_optim_new(ctx, &ocfg, nn_net_num_params(net), &opt)) goto done;
    nn_train_state st = {.seed = o.seed, .best_val = INFINITY};
    nn_rng_seed(&st.rng, o.seed, 2);
    nn_sched_state_init(&scfg, &st.sched);
    if (o.resume) {
        if (nn_checkpoint_load(ctx, o.resume, net, opt, &st)) goto done;
        if (st.batch_in_epoch > batches) {
            nn_ctx_fail(ctx, NN_EINVAL,
                        "%s: checkpoint is at batch %lld of an epoch, beyond this data set with batch %d",
                        o.resume, (long long)st.batch_in_epoch, o.batch);
            goto done;
        }
    }
    if (o.log && !(log = open_log(ctx, o.log, o.resume != NULL, val.n > 0))) goto done;
    /* a bad --save path must fail now, not after the first epoch's work */
    if (o.save && check_writable(ctx, o.save)) goto done;
    if (o.log) {
        char path[4096], header[9000];
        o.threads = nn_ctx_threads(ctx); /* record the count used: results depend on it */
        recipe_path(path, sizeof path, o.log);
        snprintf(header, sizeof header,
                 "nnopt %s recipe of a run of %s; reproduce with: nnopt train %s --config %s",
                 NN_VERSION, model, model, path);
        if (cli_recipe_write(path, opts, header)) goto done_quiet;
    }
    if (o.label_smoothing > 0 && nn_net_set_label_smoothing(net, o.label_smoothing)) goto done;

    nn_shape in = nn_net_input_shape(net);
    const int64_t per = nn_shape_numel(&in);
    x = malloc((size_t)o.batch * (size_t)per * sizeof(float));
    y = malloc((size_t)o.batch * sizeof(int32_t));
    perm = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!x || !y || !perm) {
        nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for batch buffers");
        goto done;
    }
    if (nn_loader_new(ctx, &train, o.batch, &norm, &aug, o.seed, &loader)) goto done;
    if (!o.json)
        fprintf(out, "nnopt: training %s (%zu parameters) on %lld images (%lld test%s), batch %d%s, "
                     "%s, %d threads, seed %llu\n",
                model, nn_net_num_params(net), (long long)n, (long long)test.n,
                val.n ? ", plus validation" : "", o.batch, o.accumulate > 1 ? " (accumulated)" : "",
                nn_optim_name(ocfg.kind), nn_ctx_threads(ctx), (unsigned long long)st.seed);
    double test_loss = 0.0, test_acc = 0.0;
    int stopped_early = 0;
    for (int64_t epoch = st.epoch; epoch < o.epochs && !stopped_early; epoch++) {
        nn_rng rr = st.rng; /* st.rng stays at the epoch start until the epoch ends */
        if (o.no_shuffle)
            for (int64_t i = 0; i < n; i++) perm[i] = i;
        else
            nn_permutation(perm, n, &rr);
        if (nn_loader_start(loader, epoch, perm, st.batch_in_epoch)) goto done;
        cli_progress bar;
        char label[32];
        snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, o.epochs);
        cli_progress_start(&bar, out, tty, batches - st.batch_in_epoch, label);
        double t0 = cli_now();
        int64_t done_here = 0;
        float lr = ocfg.lr;
        int micro = 0;
        for (int64_t b = st.batch_in_epoch; b < batches; b++) {
            const float *bx;
            const int32_t *by;
            int cnt = nn_loader_next(loader, &bx, &by);
            if (cnt <= 0) {
                nn_ctx_fail(ctx, NN_EINVAL, "data loader ended early at batch %lld", (long long)b);
                goto done;
            }
            float loss;
            if (micro == 0) nn_net_zero_grad(net);
            /* dropout masks: a function of the run's seed and this batch's place
             * in the run, so a resumed run draws the same ones */
            nn_net_set_dropout_seed(net, (o.seed * 0x9E3779B97F4A7C15ULL) ^
                                             ((uint64_t)st.step * 65536u + (uint64_t)micro));
            if (nn_net_forward(net, bx, by, cnt, &loss)) goto done;
            if (!isfinite(loss)) {
                cli_progress_clear(&bar);
                nn_ctx_fail(ctx, NN_ENUMERIC,
                            "loss is %s at step %lld (epoch %lld, batch %lld); training stopped%s",
                            isnan(loss) ? "NaN" : "infinite", (long long)st.step + 1,
                            (long long)epoch + 1, (long long)b + 1,
                            o.save ? ", the last good checkpoint is kept" : "");
                goto done;
            }
            if (nn_net_backward(net)) goto done;
            st.loss_sum += (double)loss * cnt;
            st.seen += cnt;
            done_here += cnt;
            micro++;
            if (micro == o.accumulate || b + 1 == batches) {
                if (micro > 1) scale_grads(nn_net_grads(net), nn_net_num_params(net), 1.0f / micro);
                if (o.clip_grad_norm > 0)
                    nn_clip_grad_norm(nn_net_grads(net), nn_net_num_params(net), o.clip_grad_norm, ctx);
                lr = nn_sched_lr(&scfg, &st.sched, epoch, st.step);
                nn_optim_set_lr(opt, lr);
                nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
                st.step++;
                st.batch_in_epoch = b + 1;
                micro = 0;
                if (o.save && o.save_every && st.step % o.save_every == 0 && b + 1 < batches &&
                    nn_checkpoint_save(ctx, o.save, net, opt, &st))
                    goto done;
            }
            cli_progress_update(&bar, b + 1 - (batches - bar.total), st.loss_sum / (double)st.seen);
        }
        double seconds = cli_now() - t0;
        cli_progress_clear(&bar);
        double train_loss = st.seen ? st.loss_sum / (double)st.seen : 0.0;
        st.rng = rr;
        st.epoch = epoch + 1;
        st.batch_in_epoch = 0;
        st.loss_sum = 0.0;
        st.seen = 0;
        double t1 = cli_now();
        double val_loss = 0.0, val_acc = 0.0;
        /* reported losses are plain cross-entropy, without label smoothing */
        if (o.label_smoothing > 0) nn_net_set_label_smoothing(net, 0.0f);
        if (nn_evaluate(net, &test, &norm, o.batch, x, y, &test_loss, &test_acc)) goto done;
        if (val.n && nn_evaluate(net, &val, &norm, o.batch, x, y, &val_loss, &val_acc)) goto done;
        if (o.label_smoothing > 0) nn_net_set_label_smoothing(net, o.label_smoothing);
        double eval_seconds = cli_now() - t1;
        double ips = seconds > 0 ? (double)done_here / seconds : 0.0;
        /* plateau watches the validation loss, or the test loss without one */
        nn_sched_observe(&scfg, &st.sched, val.n ? val_loss : test_loss);
        if (o.early_stop) {
            if (val_loss < st.best_val - o.min_delta) {
                st.best_val = val_loss;
                st.bad_epochs = 0;
            } else if (++st.bad_epochs >= o.early_stop) {
                stopped_early = 1;
            }
        }
        if (o.json) {
            fprintf(out, "{\"epoch\":%lld,\"step\":%lld,\"lr\":%.9g,\"train_loss\":%.6f,"
                         "\"test_loss\":%.6f,\"test_accuracy\":%.4f,",
                    (long long)st.epoch, (long long)st.step, (double)lr, train_loss, test_loss,
                    100.0 * test_acc);
            if (val.n) fprintf(out, "\"val_loss\":%.6f,\"val_accuracy\":%.4f,", val_loss, 100.0 * val_acc);
            fprintf(out, "\"seconds\":%.3f,\"eval_seconds\":%.3f,\"images_per_s\":%.1f}\n", seconds,
                    eval_seconds, ips);
        } else {
            fprintf(out, "epoch %lld/%d  train_loss %.4f  test_loss %.4f  test_acc %.2f%%", (long long)st.epoch,
                    o.epochs, train_loss, test_loss, 100.0 * test_acc);
            if (val.n) fprintf(out, "  val_loss %.4f  val_acc %.2f%%", val_loss, 100.0 * val_acc);
            fprintf(out, "  lr %.3g  %.2f s  %.0f img/s\n", (double)lr, seconds, ips);
        }
        fflush(out);
        if (log) {
            fprintf(log, "%lld,%lld,%.6f,%.6f,%.4f,", (long long)st.epoch, (long long)st.step,
                    train_loss, test_loss, 100.0 * test_acc);
            if (val.n) fprintf(log, "%.6f,%.4f,", val_loss, 100.0 * val_acc);
            fprintf(log, "%.3f,%.1f\n", seconds, ips);
            fflush(log);
        }
        if (o.save && nn_checkpoint_save(ctx, o.save, net, opt, &st)) goto done;
        if (stopped_early && !o.json)
            fprintf(out, "early stop: the validation loss has not improved by more than %g for %d "
                         "epochs (best %.4f)\n",
                    (double)o.min_delta, o.early_stop, st.best_val);
    }
    if (!o.json) {
        nn_net_set_label_smoothing(net, 0.0f);
        if (nn_evaluate(net, &test, &norm, o.batch, x, y, &test_loss, &test_acc)) goto done;
        fprintf(out, "final test accuracy %.2f%% (test loss %.4f) after %lld epochs\n", 100.0 * test_acc,
                test_loss, (long long)st.epoch);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
done_quiet:
    if (log) fclose(log);
    nn_loader_free(loader);
    free(x);
    free(y);
    free(perm);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    nn_dataset_free(&val);
    nn_optim_free(opt);
    nn_net_free(net);
    nn_ctx_free(ctx);
    cli_strings_free(&keep);
    return rc;
}
