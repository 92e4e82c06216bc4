/*
 * train_options.c - the training recipe as options: one table of flags and
 * recipe-file keys (data, train, optimizer, schedule, regularization,
 * augment), shared by `nnopt train` and `nnopt compare`, and its translation
 * into the library's nn_train_config. Options left unset take the chosen
 * optimizer's and schedule's PyTorch defaults (SGD: the seed recipe's momentum
 * 0.9).
 */
#include "cli/cli.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_train_opts_init(cli_train_opts *o) {
    *o = (cli_train_opts){
        .data = NN_DEFAULT_DATA_DIR, .epochs = 5, .batch = 64, .seed = 1,
        .mean = NN_FASHION_MNIST_MEAN, .std = NN_FASHION_MNIST_STD, .optimizer = "sgd",
        .schedule = "constant", .precision = "fp32", .stages = CLI_UNSET_I, .shards = CLI_UNSET_I, .bucket_mb = CLI_UNSET_F,
        .micro_batches = CLI_UNSET_I, .accumulate = 1, .lr = CLI_UNSET_F,
        .momentum = CLI_UNSET_F, .dampening = CLI_UNSET_F, .weight_decay = CLI_UNSET_F,
        .beta1 = CLI_UNSET_F, .beta2 = CLI_UNSET_F, .eps = CLI_UNSET_F, .alpha = CLI_UNSET_F,
        .lr_decay = CLI_UNSET_F, .gamma = CLI_UNSET_F, .eta_min = CLI_UNSET_F,
        .pct_start = CLI_UNSET_F, .div_factor = CLI_UNSET_F, .final_div_factor = CLI_UNSET_F,
        .plateau_factor = CLI_UNSET_F, .plateau_threshold = CLI_UNSET_F, .min_lr = CLI_UNSET_F,
        .warmup_start_factor = CLI_UNSET_F, .step_size = CLI_UNSET_I, .t_max = CLI_UNSET_I,
        .t_0 = CLI_UNSET_I, .t_mult = CLI_UNSET_I, .plateau_patience = CLI_UNSET_I,
        .plateau_cooldown = CLI_UNSET_I, .warmup_steps = CLI_UNSET_I};
}

int cli_train_opts_table(cli_train_opts *o, cli_opt *t) {
    const cli_opt opts[] = {
        {"--params", CLI_STR, &o->model_params, "K=V,..", "values of the model's parameters (its 'params' line)", 0, 0, "model.params"},
        {"--data", CLI_STR, &o->data, "DIR", "directory with the four IDX files, .gz or raw (default " NN_DEFAULT_DATA_DIR ")", 0, 0, "data.dir"},
        {"--val", CLI_INT, &o->val, "N", "carve the last N training images out as a validation split", 0, 1 << 30, "data.val"},
        {"--train-limit", CLI_INT, &o->train_limit, "N", "use only the first N training images", 0, 1 << 30, "data.train_limit"},
        {"--test-limit", CLI_INT, &o->test_limit, "N", "use only the first N test images", 0, 1 << 30, "data.test_limit"},
        {"--mean", CLI_FLOAT, &o->mean, "M", "normalization mean (default 0.2860)", -1e6, 1e6, "data.mean"},
        {"--std", CLI_FLOAT, &o->std, "S", "normalization std (default 0.3530)", 1e-9, 1e6, "data.std"},
        {"--no-shuffle", CLI_FLAG, &o->no_shuffle, NULL, "keep the training order fixed", 0, 0, "data.no_shuffle"},
        {"--epochs", CLI_INT, &o->epochs, "N", "epochs to train (default 5)", 1, 1000000, "train.epochs"},
        {"--batch", CLI_INT, &o->batch, "N", "batch size (default 64)", 1, 65536, "train.batch"},
        {"--accumulate", CLI_INT, &o->accumulate, "K", "add up K batches per optimizer step (default 1)", 1, 65536, "train.accumulate"},
        {"--sync-bn", CLI_FLAG, &o->sync_bn, NULL, "under mpirun: batch norm's statistics over all ranks' samples (the global batch), not each rank's", 0, 0, "train.sync_bn"},
        {"--bucket-mb", CLI_FLOAT, &o->bucket_mb, "MB", "under mpirun: gradient all-reduce bucket size in MiB (default 25, as DDP's)", 0.001, 4096, "train.bucket_mb"},
        {"--shards", CLI_INT, &o->shards, "K", "compute each global batch as K data-parallel ranks would, one shard each, in a fixed order: 1 process and mpirun -np K give the same bytes (batch norm needs --sync-bn)", 1, 64, "train.shards"},
        {"--stages", CLI_INT, &o->stages, "K", "under mpirun: cut the model into K pipeline stages, one per rank (np / K data-parallel replicas of the pipeline)", 1, 1024, "train.stages"},
        {"--micro-batches", CLI_INT, &o->micro_batches, "M", "with --stages: micro-batches per batch (default 2 x stages)", 1, 4096, "train.micro_batches"},
        {"--pipeline", CLI_STR, &o->pipeline, "S", "with --stages: the schedule, 1f1b (default: at most K-s micro-batches in flight on stage s) or gpipe (all forwards, then all backwards)", 0, 0, "train.pipeline"},
        {"--stage-balance", CLI_STR, &o->stage_balance, "B", "with --stages: cut where each stage's layers take about equal time, as measured at the start (time, default) or equal FLOPs (flops)", 0, 0, "train.stage_balance"},
        {"--seed", CLI_U64, &o->seed, "S", "seed for initialization, shuffling and augmentation (default 1)", 0, 0, "train.seed"},
        {"--threads", CLI_INT, &o->threads, "N", "threads (default: all cores; train: its share of them among the nnopt runs on this machine, NNOPT_SHARE)", 1, 1024, "train.threads"},
        {"--precision", CLI_STR, &o->precision, "P", "convolution arithmetic: fp32 (default) or bf16 (bf16 inputs, fp32 sums and weights)", 0, 0, "train.precision"},
        {"--early-stop", CLI_INT, &o->early_stop, "P", "stop when the validation loss has not improved for P epochs and keep the best epoch's weights (needs --val)", 0, 1000000, "train.early_stop"},
        {"--min-delta", CLI_FLOAT, &o->min_delta, "D", "improvement that resets early stopping (default 0)", 0, 1e6, "train.min_delta"},
        {"--optimizer", CLI_STR, &o->optimizer, "NAME", "sgd (default), adam, adamw, rmsprop or adagrad", 0, 0, "optimizer.name"},
        {"--lr", CLI_FLOAT, &o->lr, "RATE", "learning rate (default 0.01 for SGD, else PyTorch's)", 0, 1e6, "optimizer.lr"},
        {"--momentum", CLI_FLOAT, &o->momentum, "M", "momentum: SGD (default 0.9), RMSprop (default 0)", 0, 1e6, "optimizer.momentum"},
        {"--dampening", CLI_FLOAT, &o->dampening, "D", "SGD dampening (default 0)", 0, 1, "optimizer.dampening"},
        {"--nesterov", CLI_FLAG, &o->nesterov, NULL, "SGD Nesterov momentum", 0, 0, "optimizer.nesterov"},
        {"--weight-decay", CLI_FLOAT, &o->weight_decay, "WD", "weight decay (AdamW: decoupled; default PyTorch's)", 0, 1e6, "optimizer.weight_decay"},
        {"--beta1", CLI_FLOAT, &o->beta1, "B", "Adam/AdamW beta1 (default 0.9)", 0, 1, "optimizer.beta1"},
        {"--beta2", CLI_FLOAT, &o->beta2, "B", "Adam/AdamW beta2 (default 0.999)", 0, 1, "optimizer.beta2"},
        {"--eps", CLI_FLOAT, &o->eps, "E", "epsilon of Adam/AdamW/RMSprop/Adagrad", 0, 1, "optimizer.eps"},
        {"--amsgrad", CLI_FLAG, &o->amsgrad, NULL, "Adam/AdamW AMSGrad", 0, 0, "optimizer.amsgrad"},
        {"--alpha", CLI_FLOAT, &o->alpha, "A", "RMSprop smoothing constant (default 0.99)", 0, 1, "optimizer.alpha"},
        {"--centered", CLI_FLAG, &o->centered, NULL, "centered RMSprop", 0, 0, "optimizer.centered"},
        {"--lr-decay", CLI_FLOAT, &o->lr_decay, "D", "Adagrad learning-rate decay (default 0)", 0, 1e6, "optimizer.lr_decay"},
        {"--schedule", CLI_STR, &o->schedule, "NAME", "constant (default), step, multistep, exponential, cosine, cosine_restarts, onecycle, plateau", 0, 0, "schedule.name"},
        {"--step-size", CLI_INT, &o->step_size, "E", "step: epochs per decay", 0, 1000000, "schedule.step_size"},
        {"--gamma", CLI_FLOAT, &o->gamma, "G", "step/multistep/exponential decay factor", 0, 1e6, "schedule.gamma"},
        {"--milestones", CLI_STR, &o->milestones, "E,E,..", "multistep: epochs at which to decay", 0, 0, "schedule.milestones"},
        {"--t-max", CLI_INT, &o->t_max, "E", "cosine: epochs of one half period (default: all epochs)", 0, 1000000, "schedule.t_max"},
        {"--t0", CLI_INT, &o->t_0, "E", "cosine_restarts: epochs of the first period", 0, 1000000, "schedule.t_0"},
        {"--t-mult", CLI_INT, &o->t_mult, "M", "cosine_restarts: period growth factor", 0, 1000, "schedule.t_mult"},
        {"--eta-min", CLI_FLOAT, &o->eta_min, "LR", "cosine: final learning rate (default 0)", 0, 1e6, "schedule.eta_min"},
        {"--total-steps", CLI_INT, &o->total_steps, "N", "onecycle: optimizer steps of the cycle (default: the whole run)", 0, 1 << 30, "schedule.total_steps"},
        {"--pct-start", CLI_FLOAT, &o->pct_start, "F", "onecycle: share of the steps spent warming up (default 0.3)", 0, 1, "schedule.pct_start"},
        {"--div-factor", CLI_FLOAT, &o->div_factor, "F", "onecycle: lr / initial lr (default 25)", 1e-9, 1e9, "schedule.div_factor"},
        {"--final-div-factor", CLI_FLOAT, &o->final_div_factor, "F", "onecycle: initial lr / final lr (default 1e4)", 1e-9, 1e12, "schedule.final_div_factor"},
        {"--plateau-factor", CLI_FLOAT, &o->plateau_factor, "F", "plateau: decay factor (default 0.1)", 0, 1, "schedule.plateau_factor"},
        {"--plateau-patience", CLI_INT, &o->plateau_patience, "E", "plateau: epochs without improvement (default 10)", 0, 1000000, "schedule.plateau_patience"},
        {"--plateau-threshold", CLI_FLOAT, &o->plateau_threshold, "T", "plateau: relative improvement (default 1e-4)", 0, 1, "schedule.plateau_threshold"},
        {"--plateau-cooldown", CLI_INT, &o->plateau_cooldown, "E", "plateau: epochs to wait after a decay (default 0)", 0, 1000000, "schedule.plateau_cooldown"},
        {"--min-lr", CLI_FLOAT, &o->min_lr, "LR", "plateau: lower bound (default 0)", 0, 1e6, "schedule.min_lr"},
        {"--warmup-steps", CLI_INT, &o->warmup_steps, "N", "linear warm-up over N optimizer steps (multiplies the schedule)", 0, 1 << 30, "schedule.warmup_steps"},
        {"--warmup-start-factor", CLI_FLOAT, &o->warmup_start_factor, "F", "warm-up starts at F x lr (default 1/3)", 0, 1, "schedule.warmup_start_factor"},
        {"--label-smoothing", CLI_FLOAT, &o->label_smoothing, "E", "softmax cross-entropy label smoothing (default 0)", 0, 1, "regularization.label_smoothing"},
        {"--clip-grad-norm", CLI_FLOAT, &o->clip_grad_norm, "N", "clip gradients to this global L2 norm (0 = off)", 0, 1e9, "regularization.clip_grad_norm"},
        {"--ema", CLI_FLOAT, &o->ema, "D", "weight averaging with decay D (e.g. 0.999; 0 = off): evaluations and the final weights are the exponential moving average of the weights", 0, 1, "train.ema"},
        {"--crop-pad", CLI_INT, &o->crop_pad, "P", "augment: random crop after padding by P pixels (0 = off)", 0, 64, "augment.crop_pad"},
        {"--hflip", CLI_FLAG, &o->hflip, NULL, "augment: random horizontal flips", 0, 0, "augment.hflip"},
        {"--erase-prob", CLI_FLOAT, &o->erase_prob, "P", "augment: random erasing probability (0 = off)", 0, 1, "augment.erase_prob"}};
    const int n = (int)(sizeof opts / sizeof opts[0]);
    memcpy(t, opts, sizeof opts);
    return n;
}

static float pick_f(float v, float def) { return isnan(v) ? def : v; }
static int pick_i(int v, int def) { return v == CLI_UNSET_I ? def : v; }

/* Optimizer configuration: PyTorch's defaults for the chosen optimizer, with
 * the seed recipe's momentum 0.9 for SGD, then whatever was set. */
/* Optimizer configuration: PyTorch's defaults for the chosen optimizer, with
 * the seed recipe's momentum 0.9 for SGD, then whatever was set. The values
 * the optimizer reads are written back into o (for the recipe beside a log);
 * the others stay as given, unset unless the user set them. */
static nn_status resolve_optim(nn_ctx *ctx, cli_train_opts *o, nn_optim_config *c) {
    int kind = nn_optim_kind_from_name(o->optimizer);
    if (kind < 0)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "unknown optimizer '%s' (expected sgd, adam, adamw, rmsprop or adagrad)",
                           o->optimizer);
    *c = nn_optim_defaults((nn_optim_kind)kind);
    if (kind == NN_OPTIM_SGD) c->momentum = 0.9f;
    const int sgd = kind == NN_OPTIM_SGD, adam = kind == NN_OPTIM_ADAM || kind == NN_OPTIM_ADAMW,
              rms = kind == NN_OPTIM_RMSPROP, adagrad = kind == NN_OPTIM_ADAGRAD;
#define USE(field, used)                                                                          \
    do {                                                                                          \
        c->field = pick_f(o->field, c->field);                                                    \
        if (used) o->field = c->field;                                                            \
    } while (0)
    USE(lr, 1);
    USE(weight_decay, 1);
    USE(momentum, sgd || rms);
    USE(dampening, sgd);
    USE(beta1, adam);
    USE(beta2, adam);
    USE(eps, adam || rms || adagrad);
    USE(alpha, rms);
    USE(lr_decay, adagrad);
#undef USE
    c->nesterov = o->nesterov;
    c->amsgrad = o->amsgrad;
    c->centered = o->centered;
    return NN_OK;
}

static nn_status resolve_sched(nn_ctx *ctx, cli_train_opts *o, nn_sched_config *c) {
    int kind = nn_sched_kind_from_name(o->schedule);
    if (kind < 0)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "unknown schedule '%s' (expected constant, step, multistep, "
                           "exponential, cosine, cosine_restarts, onecycle or plateau)",
                           o->schedule);
    *c = nn_sched_defaults((nn_sched_kind)kind, o->lr);
    const nn_sched_kind k = (nn_sched_kind)kind;
    const int decay = k == NN_SCHED_STEP || k == NN_SCHED_MULTISTEP || k == NN_SCHED_EXPONENTIAL,
              cosine = k == NN_SCHED_COSINE || k == NN_SCHED_COSINE_RESTARTS,
              onecycle = k == NN_SCHED_ONECYCLE, plateau = k == NN_SCHED_PLATEAU;
    /* as resolve_optim: what the schedule reads goes back into o */
#define USE_F(field, opt, used)                                                                   \
    do {                                                                                          \
        c->field = pick_f(o->opt, c->field);                                                      \
        if (used) o->opt = c->field;                                                              \
    } while (0)
#define USE_I(field, opt, used)                                                                   \
    do {                                                                                          \
        c->field = pick_i(o->opt, c->field);                                                      \
        if (used) o->opt = c->field;                                                              \
    } while (0)
    USE_F(gamma, gamma, decay);
    USE_I(step_size, step_size, k == NN_SCHED_STEP);
    /* cosine's t_max: the whole run unless given (resolved by the trainer, so
     * that a recipe reused with other --epochs anneals over those) */
    USE_I(t_max, t_max, 0);
    USE_I(t_0, t_0, k == NN_SCHED_COSINE_RESTARTS);
    USE_I(t_mult, t_mult, k == NN_SCHED_COSINE_RESTARTS);
    USE_F(eta_min, eta_min, cosine);
    USE_F(pct_start, pct_start, onecycle);
    USE_F(div_factor, div_factor, onecycle);
    USE_F(final_div_factor, final_div_factor, onecycle);
    USE_F(factor, plateau_factor, plateau);
    USE_F(threshold, plateau_threshold, plateau);
    USE_I(patience, plateau_patience, plateau);
    USE_I(cooldown, plateau_cooldown, plateau);
    USE_F(min_lr, min_lr, plateau);
    c->warmup_steps = pick_i(o->warmup_steps, (int)c->warmup_steps);
    USE_F(warmup_start_factor, warmup_start_factor, c->warmup_steps > 0);
#undef USE_F
#undef USE_I
    /* onecycle: over the whole run unless told otherwise (<= 0: the trainer's) */
    c->total_steps = o->total_steps;
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
    return NN_OK;
}

nn_status cli_train_config(nn_ctx *ctx, cli_train_opts *o, nn_train_config *c) {
    *c = nn_train_config_defaults();
    c->epochs = o->epochs;
    c->batch = o->batch;
    c->accumulate = o->accumulate;
    c->seed = o->seed;
    c->shuffle = !o->no_shuffle;
    c->norm = (nn_normalize){o->mean, o->std};
    c->aug = (nn_augment){o->crop_pad, o->hflip, o->erase_prob};
    c->label_smoothing = o->label_smoothing;
    c->clip_grad_norm = o->clip_grad_norm;
    c->ema = o->ema;
    c->early_stop = o->early_stop;
    c->min_delta = o->min_delta;
    c->sync_bn = o->sync_bn;
    /* unset: no pipeline (and nothing in the run's recipe) */
    c->stages = o->stages == CLI_UNSET_I ? 0 : o->stages;
    c->micro_batches = o->micro_batches == CLI_UNSET_I ? 0 : o->micro_batches;
    c->shards = o->shards == CLI_UNSET_I ? 0 : o->shards;
    if (!o->pipeline || strcmp(o->pipeline, "1f1b") == 0)
        c->pipeline = NN_PIPELINE_1F1B;
    else if (strcmp(o->pipeline, "gpipe") == 0)
        c->pipeline = NN_PIPELINE_GPIPE;
    else
        return nn_ctx_fail(ctx, NN_EINVAL, "--pipeline %s: expected 1f1b or gpipe", o->pipeline);
    if (!o->stage_balance || strcmp(o->stage_balance, "time") == 0)
        c->stage_balance = NN_BALANCE_TIME;
    else if (strcmp(o->stage_balance, "flops") == 0)
        c->stage_balance = NN_BALANCE_FLOPS;
    else
        return nn_ctx_fail(ctx, NN_EINVAL, "--stage-balance %s: expected time or flops",
                           o->stage_balance);
    if ((c->micro_batches || o->pipeline || o->stage_balance) && c->stages < 2)
        return nn_ctx_fail(ctx, NN_EINVAL, "--micro-batches, --pipeline and --stage-balance need --stages 2 or more");
    nn_status s = resolve_optim(ctx, o, &c->optim);
    if (s || (s = resolve_sched(ctx, o, &c->sched))) return s;
    /* the whole-run defaults, to check the schedule before any data is read */
    nn_sched_config check = c->sched;
    if (check.t_max == 0) check.t_max = o->epochs;
    if (check.total_steps <= 0) check.total_steps = 1;
    return nn_sched_validate(ctx, &check);
}

nn_status cli_load_splits(nn_ctx *ctx, const cli_train_opts *o, nn_dataset *train,
                          nn_dataset *val, nn_dataset *test) {
    nn_status s;
    if ((s = nn_dataset_load_dir(ctx, o->data, "train", train)) ||
        (s = nn_dataset_load_dir(ctx, o->data, "t10k", test)))
        return s;
    if (o->val > 0 && (s = nn_dataset_split(ctx, train, o->val, val))) return s;
    if (o->train_limit && o->train_limit < train->n) nn_dataset_truncate(train, o->train_limit);
    if (o->test_limit && o->test_limit < test->n) nn_dataset_truncate(test, o->test_limit);
    return NN_OK;
}

int cli_load_configs(int argc, char **argv, const cli_opt *opts, cli_strings *keep) {
    for (int i = 1; i < argc; i++) {
        const char *cfg = NULL;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) cfg = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) cfg = argv[i] + 9;
        if (cfg && cli_recipe_load(cfg, opts, keep)) return 1;
    }
    return 0;
}
