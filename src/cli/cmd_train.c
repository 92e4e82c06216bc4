/*
 * cmd_train.c - `nnopt train MODEL`: the training loop. Each epoch draws a
 * permutation from the run's RNG, runs SGD over all batches (the last partial
 * batch included), evaluates on the test set (and the validation split), prints
 * one line (or one JSON object) and saves an atomic checkpoint. A checkpoint
 * carries the optimizer state, the step and the RNG position at the start of
 * the epoch, so --resume continues bit for bit, even from the middle of an
 * epoch (--save-every).
 */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *data, *log, *save, *init, *resume;
    int epochs, batch, threads, no_shuffle, val, train_limit, test_limit, json, quiet, save_every,
        nesterov;
    float lr, momentum, dampening, weight_decay, mean, std;
    uint64_t seed;
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

int cmd_train(int argc, char **argv) {
    train_opts o = {.data = NN_DEFAULT_DATA_DIR, .epochs = 5, .batch = 64, .lr = 0.01f,
                    .momentum = 0.9f, .mean = NN_FASHION_MNIST_MEAN, .std = NN_FASHION_MNIST_STD,
                    .seed = 1};
    const cli_opt opts[] = {
        {"--data", CLI_STR, &o.data, "DIR", "directory with the four IDX files, .gz or raw (default " NN_DEFAULT_DATA_DIR ")", 0, 0, NULL},
        {"--epochs", CLI_INT, &o.epochs, "N", "epochs to train (default 5)", 1, 1000000, NULL},
        {"--batch", CLI_INT, &o.batch, "N", "batch size (default 64)", 1, 65536, NULL},
        {"--lr", CLI_FLOAT, &o.lr, "RATE", "SGD learning rate (default 0.01)", 0, 1e6, NULL},
        {"--momentum", CLI_FLOAT, &o.momentum, "M", "SGD momentum (default 0.9)", 0, 1e6, NULL},
        {"--dampening", CLI_FLOAT, &o.dampening, "D", "SGD dampening (default 0)", 0, 1, NULL},
        {"--weight-decay", CLI_FLOAT, &o.weight_decay, "WD", "L2 weight decay (default 0)", 0, 1e6, NULL},
        {"--nesterov", CLI_FLAG, &o.nesterov, NULL, "Nesterov momentum", 0, 0, NULL},
        {"--seed", CLI_U64, &o.seed, "S", "seed for initialization and shuffling (default 1)", 0, 0, NULL},
        {"--threads", CLI_INT, &o.threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--no-shuffle", CLI_FLAG, &o.no_shuffle, NULL, "keep the training order fixed", 0, 0, NULL},
        {"--val", CLI_INT, &o.val, "N", "carve the last N training images out as a validation split", 0, 1 << 30, NULL},
        {"--train-limit", CLI_INT, &o.train_limit, "N", "use only the first N training images", 1, 1 << 30, NULL},
        {"--test-limit", CLI_INT, &o.test_limit, "N", "use only the first N test images", 1, 1 << 30, NULL},
        {"--mean", CLI_FLOAT, &o.mean, "M", "normalization mean (default 0.2860)", -1e6, 1e6, NULL},
        {"--std", CLI_FLOAT, &o.std, "S", "normalization std (default 0.3530)", 1e-9, 1e6, NULL},
        {"--init", CLI_STR, &o.init, "FILE", "start from the weights in a safetensors file", 0, 0, NULL},
        {"--save", CLI_STR, &o.save, "FILE", "write a checkpoint after every epoch (atomic)", 0, 0, NULL},
        {"--save-every", CLI_INT, &o.save_every, "STEPS", "also checkpoint every STEPS steps", 1, 1 << 30, NULL},
        {"--resume", CLI_STR, &o.resume, "FILE", "continue exactly from a checkpoint written by --save", 0, 0, NULL},
        {"--log", CLI_STR, &o.log, "FILE", "write one CSV row per epoch", 0, 0, NULL},
        {"--json", CLI_FLAG, &o.json, NULL, "print one JSON object per epoch and nothing else on stdout", 0, 0, NULL},
        {"--quiet", CLI_FLAG, &o.quiet, NULL, "no progress bar", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("train", "MODEL [options]",
                      "Trains a model file with SGD on an IDX image data set (default: Debian's\n"
                      "Fashion-MNIST) and reports train loss, test loss, test accuracy, seconds\n"
                      "and images/s after every epoch.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "nnopt train: expected one MODEL file (see nnopt train --help)\n");
        return 2;
    }
    if (o.resume && o.init) {
        fprintf(stderr, "nnopt train: --resume and --init exclude each other\n");
        return 2;
    }
    const char *model = pos[0];
    nn_ctx *ctx = nn_ctx_new(o.threads);
    nn_net *net = NULL;
    nn_optimizer *opt = NULL;
    nn_dataset train = {0}, test = {0}, val = {0};
    float *x = NULL;
    int32_t *y = NULL;
    int64_t *perm = NULL;
    FILE *log = NULL;
    int rc = 1;
    nn_normalize norm = {o.mean, o.std};
    FILE *out = stdout;
    int tty = isatty(fileno(stdout)) && !o.json && !o.quiet;

    if (nn_dataset_load_dir(ctx, o.data, "train", &train) ||
        nn_dataset_load_dir(ctx, o.data, "t10k", &test))
        goto done;
    if (o.val > 0 && nn_dataset_split(ctx, &train, o.val, &val)) goto done;
    if (o.train_limit && o.train_limit < train.n) nn_dataset_truncate(&train, o.train_limit);
    if (o.test_limit && o.test_limit < test.n) nn_dataset_truncate(&test, o.test_limit);
    if (nn_net_load(ctx, model, &net) || cli_check_data(ctx, model, net, &train, o.data) ||
        cli_check_data(ctx, model, net, &test, o.data) ||
        nn_net_plan(net, o.batch))
        goto done;

    nn_rng init_rng;
    nn_rng_seed(&init_rng, o.seed, 1);
    nn_net_init_params(net, &init_rng);
    if (o.init && nn_checkpoint_load(ctx, o.init, net, NULL, NULL)) goto done;
    nn_optim_config cfg = {.kind = NN_OPTIM_SGD, .lr = o.lr, .momentum = o.momentum,
                           .dampening = o.dampening, .weight_decay = o.weight_decay,
                           .nesterov = o.nesterov};
    if (nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt)) goto done;
    nn_train_state st = {.seed = o.seed};
    nn_rng_seed(&st.rng, o.seed, 2);
    if (o.resume) {
        if (nn_checkpoint_load(ctx, o.resume, net, opt, &st)) goto done;
        if (st.batch_in_epoch * (int64_t)o.batch > train.n) {
            nn_ctx_fail(ctx, NN_EINVAL, "%s: checkpoint is at batch %lld of an epoch, beyond this data set with batch %d",
                        o.resume, (long long)st.batch_in_epoch, o.batch);
            goto done;
        }
    }
    if (o.log && !(log = open_log(ctx, o.log, o.resume != NULL, val.n > 0))) goto done;
    /* a bad --save path must fail now, not after the first epoch's work */
    if (o.save && check_writable(ctx, o.save)) goto done;

    const int64_t n = train.n;
    const int64_t batches = (n + o.batch - 1) / o.batch;
    nn_shape in = nn_net_input_shape(net);
    const int64_t per = nn_shape_numel(&in);
    x = malloc((size_t)o.batch * (size_t)per * sizeof(float));
    y = malloc((size_t)o.batch * sizeof(int32_t));
    perm = malloc((size_t)n * sizeof(int64_t));
    if (!x || !y || !perm) {
        nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for batch buffers");
        goto done;
    }
    if (!o.json)
        fprintf(out, "nnopt: training %s (%zu parameters) on %lld images (%lld test%s), batch %d, "
                     "%d threads, seed %llu\n",
                model, nn_net_num_params(net), (long long)n, (long long)test.n,
                val.n ? ", plus validation" : "", o.batch, nn_ctx_threads(ctx),
                (unsigned long long)st.seed);
    double test_loss = 0.0, test_acc = 0.0;
    for (int64_t epoch = st.epoch; epoch < o.epochs; epoch++) {
        nn_rng r = st.rng; /* st.rng stays at the epoch start until the epoch ends */
        if (o.no_shuffle)
            for (int64_t i = 0; i < n; i++) perm[i] = i;
        else
            nn_permutation(perm, n, &r);
        cli_progress bar;
        char label[32];
        snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, o.epochs);
        cli_progress_start(&bar, out, tty, batches - st.batch_in_epoch, label);
        double t0 = cli_now();
        int64_t done_here = 0;
        for (int64_t b = st.batch_in_epoch; b < batches; b++) {
            int64_t first = b * o.batch;
            int cnt = (int)(n - first < o.batch ? n - first : o.batch);
            nn_dataset_gather(&train, perm + first, 0, cnt, &norm, x, y);
            float loss;
            nn_net_zero_grad(net);
            if (nn_net_forward(net, x, y, cnt, &loss)) goto done;
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
            nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
            st.loss_sum += (double)loss * cnt;
            st.seen += cnt;
            st.step++;
            st.batch_in_epoch = b + 1;
            done_here += cnt;
            cli_progress_update(&bar, b + 1 - (batches - bar.total), st.loss_sum / (double)st.seen);
            if (o.save && o.save_every && st.step % o.save_every == 0 && b + 1 < batches &&
                nn_checkpoint_save(ctx, o.save, net, opt, &st))
                goto done;
        }
        double seconds = cli_now() - t0;
        cli_progress_clear(&bar);
        double train_loss = st.seen ? st.loss_sum / (double)st.seen : 0.0;
        st.rng = r;
        st.epoch = epoch + 1;
        st.batch_in_epoch = 0;
        st.loss_sum = 0.0;
        st.seen = 0;
        double t1 = cli_now();
        double val_loss = 0.0, val_acc = 0.0;
        if (nn_evaluate(net, &test, &norm, o.batch, x, y, &test_loss, &test_acc)) goto done;
        if (val.n && nn_evaluate(net, &val, &norm, o.batch, x, y, &val_loss, &val_acc)) goto done;
        double eval_seconds = cli_now() - t1;
        double ips = seconds > 0 ? (double)done_here / seconds : 0.0;
        if (o.json) {
            fprintf(out, "{\"epoch\":%lld,\"step\":%lld,\"train_loss\":%.6f,\"test_loss\":%.6f,"
                         "\"test_accuracy\":%.4f,",
                    (long long)st.epoch, (long long)st.step, train_loss, test_loss, 100.0 * test_acc);
            if (val.n) fprintf(out, "\"val_loss\":%.6f,\"val_accuracy\":%.4f,", val_loss, 100.0 * val_acc);
            fprintf(out, "\"seconds\":%.3f,\"eval_seconds\":%.3f,\"images_per_s\":%.1f}\n", seconds,
                    eval_seconds, ips);
        } else {
            fprintf(out, "epoch %lld/%d  train_loss %.4f  test_loss %.4f  test_acc %.2f%%", (long long)st.epoch,
                    o.epochs, train_loss, test_loss, 100.0 * test_acc);
            if (val.n) fprintf(out, "  val_loss %.4f  val_acc %.2f%%", val_loss, 100.0 * val_acc);
            fprintf(out, "  %.2f s  %.0f img/s\n", seconds, ips);
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
    }
    if (st.epoch >= o.epochs && !o.json) {
        if (nn_evaluate(net, &test, &norm, o.batch, x, y, &test_loss, &test_acc)) goto done;
        fprintf(out, "final test accuracy %.2f%% (test loss %.4f) after %lld epochs\n", 100.0 * test_acc,
                test_loss, (long long)st.epoch);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    if (log) fclose(log);
    free(x);
    free(y);
    free(perm);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    nn_dataset_free(&val);
    nn_optim_free(opt);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return rc;
}
