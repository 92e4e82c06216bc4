/*
 * checkpoint.c - saves and restores a network's parameters, and for --resume
 * the optimizer state and the train state, as one safetensors file.
 *
 * Tensors: every parameter and buffer (batchnorm's "bn1.running_mean", ...)
 * under its PyTorch name ("conv1.weight") and dtype (F32; I64 for the batch
 * counter "bn1.num_batches_tracked", as torch keeps it), so the file
 * loads into torch with safetensors.torch.load_file; optimizer state buffers as
 * "optimizer.<param>.<state>" (only once the optimizer has taken a step);
 * early stopping's copy of the best epoch's parameters and buffers as
 * "__best__.<name>" (resume checkpoints of runs that have one); weight
 * averaging's averaged parameters as "__ema__.<name>" (runs with ema).
 * Readers that want a state_dict drop these prefixes; weights-only loads here
 * ignore them.
 * Metadata: "format" = "nnopt", "format_version" = "1", "nnopt_version", and
 * for resume checkpoints "optimizer" (nn_optim_name: "sgd", "adam", ...), its
 * step count and the config fields that optimizer uses, and the train state
 * (counters, loss sum, RNG position, and what the run trains on: batch,
 * accumulate, train_samples, train_labels_hash), all as decimal strings.
 * Loading checks the optimizer kind and reads each state buffer by its
 * PyTorch name ("exp_avg", "momentum_buffer", ...).
 */
#include "nn_internal.h"
#include "backend/backend.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#define CKPT_FORMAT_VERSION "1"
#define CKPT_OPT_PREFIX "optimizer."
#define CKPT_BEST_PREFIX "__best__."
#define CKPT_EMA_PREFIX "__ema__."
#define CKPT_MAX_META 48
#define CKPT_VAL_SIZE 32

/* "optimizer.<param>.<state>" into buf; 0 if it does not fit. */
static int state_tensor_name(char *buf, size_t size, const char *param, const char *state) {
    size_t lo = strlen(CKPT_OPT_PREFIX), lp = strlen(param), ls = strlen(state);
    if (lo + lp + 1 + ls >= size) return 0;
    memcpy(buf, CKPT_OPT_PREFIX, lo);
    memcpy(buf + lo, param, lp);
    buf[lo + lp] = '.';
    memcpy(buf + lo + lp + 1, state, ls + 1);
    return 1;
}

/* prefix + name into buf ("__best__.<name>", "__ema__.<name>"); 0 if it
 * does not fit. */
static int prefixed_name(char *buf, size_t size, const char *prefix, const char *name) {
    size_t lb = strlen(prefix), ln = strlen(name);
    if (lb + ln >= size) return 0;
    memcpy(buf, prefix, lb);
    memcpy(buf + lb, name, ln + 1);
    return 1;
}

static int best_tensor_name(char *buf, size_t size, const char *name) {
    return prefixed_name(buf, size, CKPT_BEST_PREFIX, name);
}

/* 1 if name starts with prefix */
static int has_prefix(const char *name, const char *prefix) {
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

/* 1 for the buffers torch keeps as int64 counters (batch norm's
 * "<name>.num_batches_tracked"): saved as I64, and on load they must hold
 * non-negative integers, whatever dtype the file has (nnopt wrote them as F32
 * before, and a torch state_dict may hold F32 too). */
static int is_counter(const char *name) {
    static const char suffix[] = ".num_batches_tracked";
    size_t n = strlen(name), k = sizeof suffix - 1;
    return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Counts limited to 2^53: far beyond any run, and step + 1, epoch * batches
 * and the like cannot overflow an int64 on the way there. */
#define CKPT_MAX_COUNT ((int64_t)1 << 53)

/* Number of non-finite values in x (n), and the index of the first in *first. */
static size_t count_nonfinite(const float *x, size_t n, size_t *first) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) && bad++ == 0) *first = i;
    return bad;
}

/* NN_ENUMERIC naming path, the tensor and its first bad value when x (n) is
 * not all finite. what: "not saved" or "refused". */
static nn_status check_finite(nn_ctx *ctx, const char *path, const char *what, const char *name,
                              const float *x, size_t n) {
    size_t first = 0, bad = count_nonfinite(x, n, &first);
    if (!bad) return NN_OK;
    return nn_ctx_fail(ctx, NN_ENUMERIC, "%s: %s: tensor '%s' holds %zu non-finite value%s of "
                       "%zu (element %zu is %g)", path, what, name, bad, bad > 1 ? "s" : "", n,
                       first, (double)x[first]);
}

/* The train state makes sense: counters in 0..2^53 (else status bad), a
 * finite loss sum, no NaN in the early-stopping and schedule state (their
 * "best so far" starts at +inf), a finite learning rate (else NN_ENUMERIC).
 * Errors name path and the field. */
static nn_status check_train_state(nn_ctx *ctx, const char *path, const char *what,
                                   nn_status bad, const nn_train_state *st) {
    const struct {
        const char *key;
        int64_t v;
    } counts[] = {{"epoch", st->epoch},
                  {"step", st->step},
                  {"batch_in_epoch", st->batch_in_epoch},
                  {"seen", st->seen},
                  {"bad_epochs", st->bad_epochs},
                  {"batch", st->batch},
                  {"accumulate", st->accumulate},
                  {"train_samples", st->train_samples}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i].v < 0 || counts[i].v > CKPT_MAX_COUNT)
            return nn_ctx_fail(ctx, bad, "%s: %s: train state '%s' is %lld, expected "
                               "0..2^53", path, what, counts[i].key, (long long)counts[i].v);
    if (st->sched.bad_epochs < 0 || st->sched.cooldown_left < 0)
        return nn_ctx_fail(ctx, bad, "%s: %s: negative schedule counters", path, what);
    const struct {
        const char *key;
        double v;
        int inf_ok;
    } reals[] = {{"loss_sum", st->loss_sum, 0},
                 {"best_val", st->best_val, 1},
                 {"sched_best", st->sched.best, 1},
                 {"sched_plateau_lr", (double)st->sched.plateau_lr, 0}};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        if (isnan(reals[i].v) || (!reals[i].inf_ok && isinf(reals[i].v)))
            return nn_ctx_fail(ctx, NN_ENUMERIC, "%s: %s: train state '%s' is %g", path, what,
                               reals[i].key, reals[i].v);
    return NN_OK;
}

/* ------------------------------------------------------------------ save */

typedef struct {
    const char *keys[CKPT_MAX_META];
    const char *vals[CKPT_MAX_META];
    char buf[CKPT_MAX_META][CKPT_VAL_SIZE];
    int count;
} ckpt_meta;

static void meta_str(ckpt_meta *m, const char *key, const char *val) {
    NN_ASSERT(m->count < CKPT_MAX_META);
    m->keys[m->count] = key;
    m->vals[m->count++] = val;
}

static void meta_fmt(ckpt_meta *m, const char *key, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void meta_fmt(ckpt_meta *m, const char *key, const char *fmt, ...) {
    NN_ASSERT(m->count < CKPT_MAX_META);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->buf[m->count], CKPT_VAL_SIZE, fmt, ap);
    va_end(ap);
    meta_str(m, key, m->buf[m->count]);
}

/* The config fields the optimizer kind uses, under torch.optim's option names
 * (betas as beta1, beta2); informational, a resumed run may change them. */
static void meta_optim_config(ckpt_meta *m, const nn_optim_config *cfg) {
    meta_fmt(m, "lr", "%.9g", (double)cfg->lr);
    switch (cfg->kind) {
    case NN_OPTIM_SGD:
        meta_fmt(m, "momentum", "%.9g", (double)cfg->momentum);
        meta_fmt(m, "dampening", "%.9g", (double)cfg->dampening);
        meta_fmt(m, "weight_decay", "%.9g", (double)cfg->weight_decay);
        meta_fmt(m, "nesterov", "%d", cfg->nesterov ? 1 : 0);
        break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW:
        meta_fmt(m, "beta1", "%.9g", (double)cfg->beta1);
        meta_fmt(m, "beta2", "%.9g", (double)cfg->beta2);
        meta_fmt(m, "eps", "%.9g", (double)cfg->eps);
        meta_fmt(m, "weight_decay", "%.9g", (double)cfg->weight_decay);
        meta_fmt(m, "amsgrad", "%d", cfg->amsgrad ? 1 : 0);
        break;
    case NN_OPTIM_RMSPROP:
        meta_fmt(m, "alpha", "%.9g", (double)cfg->alpha);
        meta_fmt(m, "eps", "%.9g", (double)cfg->eps);
        meta_fmt(m, "weight_decay", "%.9g", (double)cfg->weight_decay);
        meta_fmt(m, "momentum", "%.9g", (double)cfg->momentum);
        meta_fmt(m, "centered", "%d", cfg->centered ? 1 : 0);
        break;
    case NN_OPTIM_ADAGRAD:
        meta_fmt(m, "lr_decay", "%.9g", (double)cfg->lr_decay);
        meta_fmt(m, "weight_decay", "%.9g", (double)cfg->weight_decay);
        meta_fmt(m, "initial_accumulator_value", "%.9g", (double)cfg->initial_accumulator_value);
        meta_fmt(m, "eps", "%.9g", (double)cfg->eps);
        break;
    default:
        break;
    }
}

nn_status nn_checkpoint_save(nn_ctx *ctx, const char *path, nn_net *net, nn_optimizer *opt,
                             const nn_train_state *st) {
    int np = nn_net_num_param_tensors(net), nb = nn_net_num_buffer_tensors(net);
    int64_t steps = opt ? nn_optim_steps(opt) : 0;
    int ns = opt && steps > 0 ? nn_optim_num_states(opt) : 0;
    const char *kind = NULL;
    if (opt && !(kind = nn_optim_name(nn_optim_get_config(opt)->kind)))
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "%s: optimizer kind %d cannot be saved", path,
                           (int)nn_optim_get_config(opt)->kind);

    /* nothing non-finite is written: a broken checkpoint must never replace a
     * good one */
    if (steps < 0 || steps > CKPT_MAX_COUNT)
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: not saved: optimizer step count %lld is out of "
                           "range", path, (long long)steps);
    if (st) {
        nn_status s = check_train_state(ctx, path, "not saved", NN_EINVAL, st);
        if (s != NN_OK) return s;
    }

    const int best = st && st->have_best && st->best;
    const int ema = st && st->ema;
    nn_st_tensor *t = calloc((size_t)(np + nb) * (best ? 2 : 1) + (size_t)np * (size_t)ns +
                                 (ema ? (size_t)np : 0) + 1,
                             sizeof *t);
    if (!t) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    const float *params = nn_net_params(net); /* (num_params) */
    int count = 0;
    for (int p = 0; p < np; p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        snprintf(t[count].name, sizeof t[count].name, "%s", info->name);
        t[count].shape = info->shape;
        t[count++].data = params + info->offset;
    }
    const float *buffers = nn_net_buffers(net); /* (num_buffers) */
    for (int b = 0; b < nb; b++) {
        const nn_param_info *info = nn_net_buffer_info(net, b);
        snprintf(t[count].name, sizeof t[count].name, "%s", info->name);
        t[count].shape = info->shape;
        t[count].dtype = is_counter(info->name) ? NN_ST_I64 : NN_ST_F32;
        t[count++].data = buffers + info->offset;
    }
    for (int s = 0; s < ns; s++) {
        const char *sname = NULL;
        const float *state = nn_optim_state(opt, s, &sname); /* (num_params) */
        if (!state || !sname) {
            free(t);
            return nn_ctx_fail(ctx, NN_EINVAL,
                               "%s: optimizer state %d has no buffer after %lld steps", path, s,
                               (long long)steps);
        }
        for (int p = 0; p < np; p++) {
            const nn_param_info *info = nn_net_param_info(net, p);
            if (!state_tensor_name(t[count].name, sizeof t[count].name, info->name, sname)) {
                free(t);
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for state '%s' of '%s' is "
                                   "too long", path, sname, info->name);
            }
            t[count].shape = info->shape;
            t[count++].data = state + info->offset;
        }
    }
    /* early stopping's best copy: parameters, then buffers, as in st->best */
    for (int i = 0; best && i < np + nb; i++) {
        const nn_param_info *info = i < np ? nn_net_param_info(net, i)
                                           : nn_net_buffer_info(net, i - np);
        if (!best_tensor_name(t[count].name, sizeof t[count].name, info->name)) {
            free(t);
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for the best copy of '%s' is "
                               "too long", path, info->name);
        }
        t[count].shape = info->shape;
        t[count].dtype = i >= np && is_counter(info->name) ? NN_ST_I64 : NN_ST_F32;
        t[count++].data = st->best + (i < np ? 0 : nn_net_num_params(net)) + info->offset;
    }
    /* weight averaging's averaged parameters */
    for (int p = 0; ema && p < np; p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        if (!prefixed_name(t[count].name, sizeof t[count].name, CKPT_EMA_PREFIX, info->name)) {
            free(t);
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for the average of '%s' is "
                               "too long", path, info->name);
        }
        t[count].shape = info->shape;
        t[count++].data = st->ema + info->offset;
    }

    /* the tensors point into the backend's memory: a device's come to the
     * host first, in one staging buffer */
    const nn_backend *be = nn_ctx_backend_of(ctx);
    float *stage = NULL;
    if (!be->host_visible) {
        size_t total = 0;
        for (int i = 0; i < count; i++) total += (size_t)nn_shape_numel(&t[i].shape);
        if (!(stage = malloc((total ? total : 1) * sizeof(float)))) {
            free(t);
            return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory staging %zu values", path,
                               total);
        }
        for (size_t i = 0, at = 0; i < (size_t)count; i++) {
            const size_t n = (size_t)nn_shape_numel(&t[i].shape);
            nn_dev_download(be, stage + at, t[i].data, n * sizeof(float));
            t[i].data = stage + at;
            at += n;
        }
    }
    for (int i = 0; i < count; i++) {
        nn_status s = check_finite(ctx, path, "not saved", t[i].name, t[i].data,
                                   (size_t)nn_shape_numel(&t[i].shape));
        if (s != NN_OK) {
            free(t);
            free(stage);
            return s;
        }
    }

    ckpt_meta m;
    m.count = 0;
    meta_str(&m, "format", "nnopt");
    meta_str(&m, "format_version", CKPT_FORMAT_VERSION);
    meta_str(&m, "nnopt_version", NN_VERSION);
    if (opt) {
        const nn_optim_config *cfg = nn_optim_get_config(opt);
        meta_str(&m, "optimizer", kind);
        meta_fmt(&m, "optimizer_steps", "%lld", (long long)steps);
        meta_optim_config(&m, cfg);
    }
    if (st) {
        meta_fmt(&m, "epoch", "%lld", (long long)st->epoch);
        meta_fmt(&m, "step", "%lld", (long long)st->step);
        meta_fmt(&m, "batch_in_epoch", "%lld", (long long)st->batch_in_epoch);
        meta_fmt(&m, "seen", "%lld", (long long)st->seen);
        meta_fmt(&m, "seed", "%llu", (unsigned long long)st->seed);
        meta_fmt(&m, "loss_sum", "%.17g", st->loss_sum);
        meta_fmt(&m, "rng_state", "%llu", (unsigned long long)st->rng.state);
        meta_fmt(&m, "rng_inc", "%llu", (unsigned long long)st->rng.inc);
        /* early stopping and the plateau schedule's state */
        meta_fmt(&m, "best_val", "%.17g", st->best_val);
        meta_fmt(&m, "bad_epochs", "%lld", (long long)st->bad_epochs);
        meta_fmt(&m, "sched_best", "%.17g", st->sched.best);
        meta_fmt(&m, "sched_bad_epochs", "%d", st->sched.bad_epochs);
        meta_fmt(&m, "sched_cooldown_left", "%d", st->sched.cooldown_left);
        meta_fmt(&m, "sched_plateau_lr", "%.9g", (double)st->sched.plateau_lr);
        if (ema) meta_fmt(&m, "ema_swapped", "%d", st->ema_swapped ? 1 : 0);
        /* what the run trains on (a resume refuses other data or batching);
         * a state without a batch (not the trainer's) has none */
        if (st->batch > 0) {
            meta_fmt(&m, "batch", "%lld", (long long)st->batch);
            meta_fmt(&m, "accumulate", "%lld", (long long)st->accumulate);
            meta_fmt(&m, "train_samples", "%lld", (long long)st->train_samples);
            meta_fmt(&m, "train_labels_hash", "%llu", (unsigned long long)st->train_labels_hash);
        }
    }
    nn_status s = nn_safetensors_write(ctx, path, t, count, m.keys, m.vals, m.count);
    free(t);
    free(stage);
    return s;
}

/* ------------------------------------------------------------------ load */

static int shape_equal(const nn_shape *a, const nn_shape *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->dim[d] != b->dim[d]) return 0;
    return 1;
}

static const char *shape_text(const nn_shape *s, char *buf, size_t size) {
    if (s->ndim == 0) return "scalar";
    return nn_shape_str(s, buf, size);
}

/* The tensor named name with shape want, or NULL after an error. */
static const nn_st_tensor *find_checked(nn_ctx *ctx, const char *path, const nn_st_file *f,
                                        const char *name, const nn_shape *want) {
    const nn_st_tensor *t = nn_safetensors_find(f, name);
    if (!t) {
        nn_ctx_fail(ctx, NN_EFORMAT, "%s: missing tensor '%s'", path, name);
        return NULL;
    }
    if (!shape_equal(&t->shape, want)) {
        char a[96], b[96];
        nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' has shape %s, model expects %s", path,
                    name, shape_text(&t->shape, a, sizeof a), shape_text(want, b, sizeof b));
        return NULL;
    }
    return t;
}

/* Full-string decimal parsers: digits only (no sign, no spaces), no overflow. */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0') return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_i64(const char *s, int64_t *out) {
    uint64_t v;
    if (!parse_u64(s, &v) || v > (uint64_t)INT64_MAX) return 0;
    *out = (int64_t)v;
    return 1;
}

static nn_status meta_i64(nn_ctx *ctx, const char *path, const nn_st_file *f, const char *key,
                          int64_t *out) {
    const char *v = nn_safetensors_meta(f, key);
    if (!v) return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%s' is missing", path, key);
    if (!parse_i64(v, out))
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: metadata '%s' is '%.40s', not a non-negative integer", path, key,
                           v);
    return NN_OK;
}

static nn_status meta_u64(nn_ctx *ctx, const char *path, const nn_st_file *f, const char *key,
                          uint64_t *out) {
    const char *v = nn_safetensors_meta(f, key);
    if (!v) return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%s' is missing", path, key);
    if (!parse_u64(v, out))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%s' is '%.40s', not an unsigned "
                           "64-bit integer", path, key, v);
    return NN_OK;
}

/* Optional real-valued metadata (absent: *out unchanged); "inf" allowed. */
static nn_status meta_real_opt(nn_ctx *ctx, const char *path, const nn_st_file *f,
                               const char *key, double *out) {
    const char *v = nn_safetensors_meta(f, key);
    if (!v) return NN_OK;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || isspace((unsigned char)*v) || *end != '\0' || isnan(x))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%s' is '%.40s', not a number", path,
                           key, v);
    *out = x;
    return NN_OK;
}

/* Optional integer metadata (absent: *out unchanged). */
static nn_status meta_int_opt(nn_ctx *ctx, const char *path, const nn_st_file *f,
                              const char *key, int64_t *out) {
    if (!nn_safetensors_meta(f, key)) return NN_OK;
    return meta_i64(ctx, path, f, key, out);
}

/* State added after format version 1 began: early stopping and the plateau
 * schedule (files without it keep the caller's initial values), and what the
 * run trains on (files without it: batch, accumulate, train_samples and the
 * hash 0). */
static nn_status parse_extra_state(nn_ctx *ctx, const char *path, const nn_st_file *f,
                                   nn_train_state *st) {
    double best = st->best_val, sbest = st->sched.best, plr = st->sched.plateau_lr;
    int64_t bad = st->bad_epochs, sbad = st->sched.bad_epochs, cool = st->sched.cooldown_left;
    nn_status s;
    /* what the run trains on: all four keys, or none (batch 0: not recorded) */
    st->batch = st->accumulate = st->train_samples = 0;
    st->train_labels_hash = 0;
    if (nn_safetensors_meta(f, "batch") &&
        ((s = meta_i64(ctx, path, f, "batch", &st->batch)) != NN_OK ||
         (s = meta_i64(ctx, path, f, "accumulate", &st->accumulate)) != NN_OK ||
         (s = meta_i64(ctx, path, f, "train_samples", &st->train_samples)) != NN_OK ||
         (s = meta_u64(ctx, path, f, "train_labels_hash", &st->train_labels_hash)) != NN_OK))
        return s;
    if (nn_safetensors_meta(f, "batch") && st->batch < 1)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata 'batch' is 0, expected >= 1", path);
    if ((s = meta_real_opt(ctx, path, f, "best_val", &best)) != NN_OK ||
        (s = meta_int_opt(ctx, path, f, "bad_epochs", &bad)) != NN_OK ||
        (s = meta_real_opt(ctx, path, f, "sched_best", &sbest)) != NN_OK ||
        (s = meta_int_opt(ctx, path, f, "sched_bad_epochs", &sbad)) != NN_OK ||
        (s = meta_int_opt(ctx, path, f, "sched_cooldown_left", &cool)) != NN_OK ||
        (s = meta_real_opt(ctx, path, f, "sched_plateau_lr", &plr)) != NN_OK)
        return s;
    if (bad < 0 || sbad < 0 || cool < 0 || sbad > INT32_MAX || cool > INT32_MAX)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: negative or huge early-stopping/schedule counters",
                           path);
    st->best_val = best;
    st->bad_epochs = bad;
    st->sched.best = sbest;
    st->sched.bad_epochs = (int)sbad;
    st->sched.cooldown_left = (int)cool;
    st->sched.plateau_lr = (float)plr;
    return NN_OK;
}

static nn_status parse_train_state(nn_ctx *ctx, const char *path, const nn_st_file *f,
                                   nn_train_state *st) {
    nn_status s;
    if ((s = meta_i64(ctx, path, f, "epoch", &st->epoch)) != NN_OK ||
        (s = meta_i64(ctx, path, f, "step", &st->step)) != NN_OK ||
        (s = meta_i64(ctx, path, f, "batch_in_epoch", &st->batch_in_epoch)) != NN_OK ||
        (s = meta_i64(ctx, path, f, "seen", &st->seen)) != NN_OK ||
        (s = meta_u64(ctx, path, f, "seed", &st->seed)) != NN_OK ||
        (s = meta_u64(ctx, path, f, "rng_state", &st->rng.state)) != NN_OK ||
        (s = meta_u64(ctx, path, f, "rng_inc", &st->rng.inc)) != NN_OK)
        return s;
    if (!(st->rng.inc & 1))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata 'rng_inc' is even (PCG needs odd)",
                           path);
    const char *v = nn_safetensors_meta(f, "loss_sum");
    if (!v) return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata 'loss_sum' is missing", path);
    char *end;
    errno = 0;
    st->loss_sum = strtod(v, &end);
    if (!*v || isspace((unsigned char)*v) || *end != '\0' || errno == ERANGE)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata 'loss_sum' is '%.40s', not a number",
                           path, v);
    return parse_extra_state(ctx, path, f, st);
}

/* 1 if name is "optimizer.<param>.<state>" for a parameter of net and a state
 * of opt. */
static int is_state_tensor(const char *name, nn_net *net, nn_optimizer *opt) {
    const char *rest = name + strlen(CKPT_OPT_PREFIX);
    size_t len = strlen(rest);
    for (int s = 0; s < nn_optim_num_states(opt); s++) {
        const char *sname = NULL;
        nn_optim_state(opt, s, &sname);
        if (!sname) continue;
        size_t sl = strlen(sname);
        if (len < sl + 2 || rest[len - sl - 1] != '.' || strcmp(rest + len - sl, sname) != 0)
            continue;
        char param[128];
        if (len - sl - 1 >= sizeof param) continue;
        memcpy(param, rest, len - sl - 1);
        param[len - sl - 1] = '\0';
        if (nn_net_find_param(net, param) >= 0) return 1;
    }
    return 0;
}

/* A buffer's tensor t in the file: finite, and a counter a count. */
static nn_status check_buffer(nn_ctx *ctx, const char *path, const nn_param_info *info,
                              const nn_st_tensor *t) {
    /* a counter's own check first: NaN or infinity is "not a count" */
    for (size_t k = 0; is_counter(info->name) && k < info->numel; k++)
        if (!(t->data[k] >= 0.0f && t->data[k] < 0x1p63f) || floorf(t->data[k]) != t->data[k])
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' is %.9g, not a count (a "
                               "non-negative integer)", path, t->name, (double)t->data[k]);
    return check_finite(ctx, path, "refused", t->name, t->data, info->numel);
}

/* Early stopping's best copy in f: *found 1 if the file has "__best__."
 * tensors (then every parameter and buffer must have one, with its shape,
 * finite), 0 if none. */
static nn_status check_best(nn_ctx *ctx, const char *path, const nn_st_file *f, nn_net *net,
                            int *found) {
    *found = 0;
    for (int i = 0; i < nn_safetensors_count(f) && !*found; i++)
        *found = has_prefix(nn_safetensors_get(f, i)->name, CKPT_BEST_PREFIX);
    if (!*found) return NN_OK;
    int np = nn_net_num_param_tensors(net), nb = nn_net_num_buffer_tensors(net);
    for (int i = 0; i < np + nb; i++) {
        const nn_param_info *info = i < np ? nn_net_param_info(net, i)
                                           : nn_net_buffer_info(net, i - np);
        char name[128];
        if (!best_tensor_name(name, sizeof name, info->name))
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for the best copy of '%s' is "
                               "too long", path, info->name);
        const nn_st_tensor *t = find_checked(ctx, path, f, name, &info->shape);
        if (!t) return NN_EFORMAT;
        nn_status s = i < np ? check_finite(ctx, path, "refused", name, t->data, info->numel)
                             : check_buffer(ctx, path, info, t);
        if (s != NN_OK) return s;
    }
    return NN_OK;
}

/* Weight averaging's average in f, for a resume that averages: every
 * parameter's "__ema__." tensor, with its shape, finite, and the metadata
 * "ema_swapped" (0 or 1) into st. */
static nn_status check_ema(nn_ctx *ctx, const char *path, const nn_st_file *f, nn_net *net,
                           nn_train_state *st) {
    int np = nn_net_num_param_tensors(net);
    for (int p = 0; p < np; p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        char name[128];
        if (!prefixed_name(name, sizeof name, CKPT_EMA_PREFIX, info->name))
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for the average of '%s' is too "
                               "long", path, info->name);
        if (!nn_safetensors_find(f, name))
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: no averaged weights ('%s'): the checkpoint "
                               "was trained without ema (resume with the same ema, or start a "
                               "new run)", path, name);
        const nn_st_tensor *t = find_checked(ctx, path, f, name, &info->shape);
        if (!t) return NN_EFORMAT;
        nn_status s = check_finite(ctx, path, "refused", name, t->data, info->numel);
        if (s != NN_OK) return s;
    }
    int64_t swapped = 0;
    nn_status s = meta_int_opt(ctx, path, f, "ema_swapped", &swapped);
    if (s != NN_OK) return s;
    if (swapped != 0 && swapped != 1)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata 'ema_swapped' is %lld, expected 0 or 1",
                           path, (long long)swapped);
    st->ema_swapped = (int)swapped;
    return NN_OK;
}

static nn_status load_file(nn_ctx *ctx, const char *path, const nn_st_file *f, nn_net *net,
                           nn_optimizer *opt, nn_train_state *st) {
    const nn_backend *be = nn_ctx_backend_of(ctx);
    const char *fv = nn_safetensors_meta(f, "format_version");
    if (fv && strcmp(fv, CKPT_FORMAT_VERSION) != 0)
        return nn_ctx_fail(ctx, NN_EUNSUPPORTED,
                           "%s: checkpoint format_version '%.20s' is not supported (expected "
                           CKPT_FORMAT_VERSION ")", path, fv);

    /* Validate everything before touching net, opt or st: shapes, and that
     * every value is finite (a run that diverged must not pass for trained
     * weights). */
    int np = nn_net_num_param_tensors(net);
    for (int p = 0; p < np; p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        const nn_st_tensor *t = find_checked(ctx, path, f, info->name, &info->shape);
        if (!t) return NN_EFORMAT;
        nn_status s = check_finite(ctx, path, "refused", info->name, t->data, info->numel);
        if (s != NN_OK) return s;
    }
    int nb = nn_net_num_buffer_tensors(net);
    for (int b = 0; b < nb; b++) {
        const nn_param_info *info = nn_net_buffer_info(net, b);
        const nn_st_tensor *t = find_checked(ctx, path, f, info->name, &info->shape);
        if (!t) return NN_EFORMAT;
        nn_status s = check_buffer(ctx, path, info, t);
        if (s != NN_OK) return s;
    }

    int64_t steps = 0;
    if (opt) {
        const char *kind = nn_safetensors_meta(f, "optimizer");
        const char *sv = nn_safetensors_meta(f, "optimizer_steps");
        if (!kind || !sv)
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: not a resume checkpoint (no optimizer state)",
                               path);
        const char *want = nn_optim_name(nn_optim_get_config(opt)->kind);
        if (!want || strcmp(kind, want) != 0)
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: checkpoint optimizer is '%.20s', not '%s'",
                               path, kind, want ? want : "?");
        nn_status s = meta_i64(ctx, path, f, "optimizer_steps", &steps);
        if (s != NN_OK) return s;
        if (steps > CKPT_MAX_COUNT)
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: refused: metadata 'optimizer_steps' is "
                               "%lld, expected 0..2^53", path, (long long)steps);
    }

    for (int i = 0; i < nn_safetensors_count(f); i++) {
        const char *name = nn_safetensors_get(f, i)->name;
        if (nn_net_find_param(net, name) >= 0 || nn_net_find_buffer(net, name) >= 0) continue;
        if (has_prefix(name, CKPT_OPT_PREFIX)) {
            /* weights-only loads ignore optimizer state; resume loads check it */
            if (!opt || (steps > 0 && is_state_tensor(name, net, opt))) continue;
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: unexpected tensor '%s' (%s)", path, name,
                               steps > 0 ? "not a state of this optimizer"
                                         : "optimizer_steps is 0");
        }
        if (has_prefix(name, CKPT_BEST_PREFIX)) {
            /* early stopping's best copy: only a resume that keeps one reads it */
            const char *of = name + strlen(CKPT_BEST_PREFIX);
            if (!st || !st->best || nn_net_find_param(net, of) >= 0 ||
                nn_net_find_buffer(net, of) >= 0)
                continue;
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: unexpected tensor '%s' (a best copy of "
                               "something not in the model)", path, name);
        }
        if (has_prefix(name, CKPT_EMA_PREFIX)) {
            /* weight averaging's average: only a resume that averages reads it */
            if (!st || !st->ema || nn_net_find_param(net, name + strlen(CKPT_EMA_PREFIX)) >= 0)
                continue;
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: unexpected tensor '%s' (an average of "
                               "something not a parameter of the model)", path, name);
        }
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: unexpected tensor '%s' (not in the model)", path,
                           name);
    }

    int ns = opt && steps > 0 ? nn_optim_num_states(opt) : 0;
    for (int s = 0; s < ns; s++) {
        const char *sname = NULL;
        nn_optim_state(opt, s, &sname);
        if (!sname)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: optimizer state %d has no name", path, s);
        for (int p = 0; p < np; p++) {
            const nn_param_info *info = nn_net_param_info(net, p);
            char name[128];
            if (!state_tensor_name(name, sizeof name, info->name, sname))
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor name for state '%s' of '%s' is "
                                   "too long", path, sname, info->name);
            const nn_st_tensor *t = find_checked(ctx, path, f, name, &info->shape);
            if (!t) return NN_EFORMAT;
            nn_status st_ok = check_finite(ctx, path, "refused", name, t->data, info->numel);
            if (st_ok != NN_OK) return st_ok;
        }
    }

    nn_train_state tmp = {0};
    int best = 0;
    if (st) {
        tmp = *st; /* fields a file may lack keep the caller's values */
        nn_status s = parse_train_state(ctx, path, f, &tmp);
        if (s == NN_OK) s = check_train_state(ctx, path, "refused", NN_EFORMAT, &tmp);
        if (s != NN_OK) return s;
        if (st->best && (s = check_best(ctx, path, f, net, &best)) != NN_OK) return s;
        if (st->ema && (s = check_ema(ctx, path, f, net, &tmp)) != NN_OK) return s;
    }

    /* Commit. The optimizer may allocate its buffers only once it has steps,
     * so set the count before asking for them. A buffer still missing then is
     * an optimizer bug, caught before any parameter changes. */
    if (opt) {
        int64_t old_steps = nn_optim_steps(opt);
        nn_optim_set_steps(opt, steps);
        for (int s = 0; s < ns; s++) {
            const char *sname = NULL;
            float *state = nn_optim_state(opt, s, &sname); /* (num_params) */
            if (!state) {
                nn_optim_set_steps(opt, old_steps);
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: optimizer state '%s' has no buffer",
                                   path, sname);
            }
            for (int p = 0; p < np; p++) {
                const nn_param_info *info = nn_net_param_info(net, p);
                char name[128];
                state_tensor_name(name, sizeof name, info->name, sname);
                const nn_st_tensor *t = nn_safetensors_find(f, name);
                nn_dev_upload(be, state + info->offset, t->data, info->numel * sizeof(float));
            }
        }
    }
    float *params = nn_net_params(net); /* (num_params) */
    for (int p = 0; p < np; p++) {
        const nn_param_info *info = nn_net_param_info(net, p);
        const nn_st_tensor *t = nn_safetensors_find(f, info->name);
        nn_dev_upload(be, params + info->offset, t->data, info->numel * sizeof(float));
    }
    float *buffers = nn_net_buffers(net); /* (num_buffers) */
    for (int b = 0; b < nb; b++) {
        const nn_param_info *info = nn_net_buffer_info(net, b);
        const nn_st_tensor *t = nn_safetensors_find(f, info->name);
        nn_dev_upload(be, buffers + info->offset, t->data, info->numel * sizeof(float));
    }
    if (st) {
        /* the best copy goes from the file to st->best (the backend's
         * memory), not into the net */
        for (int i = 0; best && i < np + nb; i++) {
            const nn_param_info *info = i < np ? nn_net_param_info(net, i)
                                               : nn_net_buffer_info(net, i - np);
            char name[128];
            best_tensor_name(name, sizeof name, info->name);
            const nn_st_tensor *t = nn_safetensors_find(f, name);
            nn_dev_upload(be, tmp.best + (i < np ? 0 : nn_net_num_params(net)) + info->offset,
                          t->data, info->numel * sizeof(float));
        }
        tmp.have_best = best;
        for (int p = 0; tmp.ema && p < np; p++) {
            const nn_param_info *info = nn_net_param_info(net, p);
            char name[128];
            prefixed_name(name, sizeof name, CKPT_EMA_PREFIX, info->name);
            const nn_st_tensor *t = nn_safetensors_find(f, name);
            nn_dev_upload(be, tmp.ema + info->offset, t->data, info->numel * sizeof(float));
        }
        *st = tmp;
    }
    return NN_OK;
}

nn_status nn_checkpoint_load(nn_ctx *ctx, const char *path, nn_net *net, nn_optimizer *opt,
                             nn_train_state *st) {
    nn_st_file *f = NULL;
    nn_status s = nn_safetensors_open(ctx, path, &f);
    if (s != NN_OK) return s;
    s = load_file(ctx, path, f, net, opt, st);
    nn_safetensors_close(f);
    return s;
}
