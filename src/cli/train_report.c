/*
 * train_report.c - what a training run prints: the trainer's reports as
 * lines or JSON objects on stdout with a progress bar and a CSV row per
 * epoch, the run's first line, and what a stop by signal says on stderr.
 * Any command that drives the trainer and reports as `nnopt train` does can
 * use them.
 */
#include "cli/cli.h"

#include <string.h>

static void on_epoch_start(void *user, int64_t epoch, int64_t first_batch, int64_t batches) {
    cli_train_view *v = user;
    cli_share_poll(v->share);
    char label[32];
    snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, v->epochs);
    v->first_batch = first_batch;
    cli_progress_start(&v->bar, v->out, v->tty, batches - first_batch, label);
}

static void on_batch(void *user, const nn_batch_report *r) {
    cli_train_view *v = user;
    cli_share_poll(v->share);
    cli_progress_update(&v->bar, r->batch - v->first_batch, r->mean_loss);
}

static int on_epoch(void *user, const nn_epoch_report *r) {
    cli_train_view *v = user;
    FILE *out = v->out;
    cli_progress_clear(&v->bar);
    v->last_test_valid = r->has_test && !r->early_stop;
    v->last_test_loss = r->test_loss;
    v->last_test_accuracy = r->test_accuracy;
    if (v->json) {
        char lr[32];
        fprintf(out, "{\"epoch\":%lld,\"step\":%lld,\"lr\":%s,\"train_loss\":%.6f,"
                     "\"test_loss\":%.6f,\"test_accuracy\":%.4f,",
                (long long)r->epoch, (long long)r->step, cli_float_str(lr, sizeof lr, r->lr), r->train_loss,
                r->test_loss, 100.0 * r->test_accuracy);
        if (r->has_val)
            fprintf(out, "\"val_loss\":%.6f,\"val_accuracy\":%.4f,", r->val_loss,
                    100.0 * r->val_accuracy);
        if (r->comm_wait_s > 0 || r->comm_overlap_s > 0)
            fprintf(out, "\"comm_wait_s\":%.4f,\"comm_overlap_s\":%.4f,", r->comm_wait_s,
                    r->comm_overlap_s);
        fprintf(out, "\"seconds\":%.3f,\"eval_seconds\":%.3f,\"images_per_s\":%.1f,"
                     "\"threads\":%d}\n",
                r->seconds, r->eval_seconds, r->images_per_s, nn_ctx_threads(v->ctx));
    } else {
        fprintf(out, "epoch %lld/%d  train_loss %.4f  test_loss %.4f  test_acc %.2f%%",
                (long long)r->epoch, v->epochs, r->train_loss, r->test_loss,
                100.0 * r->test_accuracy);
        if (r->has_val)
            fprintf(out, "  val_loss %.4f  val_acc %.2f%%", r->val_loss, 100.0 * r->val_accuracy);
        fprintf(out, "  lr %.3g  %.2f s  %.0f img/s  %d thread%s\n", (double)r->lr, r->seconds,
                r->images_per_s, nn_ctx_threads(v->ctx), nn_ctx_threads(v->ctx) > 1 ? "s" : "");
    }
    fflush(out);
    /* a log that cannot be written ends the run (this epoch's checkpoint is
     * still written) */
    if (v->log && cli_log_row(v->ctx, v->log, r)) return 1;
    if (r->early_stop && !v->json)
        fprintf(out, "early stop: the validation loss has not improved by more than %g for %d "
                     "epochs; keeping the best epoch's weights (validation loss %.4f)\n",
                (double)v->min_delta, v->patience, r->best_val_loss);
    return 0;
}

nn_train_callbacks cli_train_view_callbacks(cli_train_view *v) {
    return (nn_train_callbacks){on_epoch_start, on_batch, on_epoch, v};
}

void cli_train_print_start(const char *model, nn_net *net, nn_trainer *t, const nn_dataset *train,
                           const nn_dataset *val, const nn_dataset *test,
                           const cli_train_opts *o, const nn_train_config *cfg, nn_ctx *ctx) {
    printf("nnopt: training %s (%zu parameters) on %lld images (%lld test%s), batch %d%s, "
           "%s, %d threads, seed %llu\n",
           model, nn_net_num_params(net), (long long)train->n, (long long)test->n,
           val->n ? ", plus validation" : "", o->batch, o->accumulate > 1 ? " (accumulated)" : "",
           nn_optim_name(cfg->optim.kind), nn_ctx_threads(ctx),
           (unsigned long long)nn_trainer_state(t)->seed);
}

int cli_train_report_stop(nn_ctx *ctx, const char *model, const char *save) {
    if (cli_stop_signal())
        fprintf(stderr, "nnopt: %s: %s\n", strsignal(cli_stop_signal()), nn_ctx_error(ctx));
    else /* another rank's signal */
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    if (save)
        fprintf(stderr, "nnopt: resume with: nnopt train %s --resume %s (and the same options)\n",
                model, save);
    return cli_stop_signal() ? 128 + cli_stop_signal() : 1;
}
