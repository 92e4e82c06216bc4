/*
 * cmd_train.c - `nnopt train MODEL`: options (defaults, then recipe files from
 * --config, then flags) into the library trainer's configuration, then the
 * trainer's reports printed (train_report.c) as lines or JSON, a progress bar
 * and a CSV log.
 * The first SIGINT or SIGTERM asks the trainer to stop after the step in
 * progress (it writes a checkpoint when --save is given); a second one ends
 * the process at once.
 * Under mpirun (main() started MPI) the run is data parallel over the ranks
 * (nn_trainer_set_comm): every rank trains, rank 0 alone prints, logs and
 * writes checkpoints and recipes; the others keep quiet.
 */
#include "cli/cli.h"

#include <math.h>
#include <unistd.h>

/* Data parallel: the MPI communicator, and the threads of each rank when
 * --threads is not given and the cores are not shared through the registry
 * (the machine's cores divided by its ranks). Ranks
 * other than 0 print nothing: their stdout goes to /dev/null. 0, or 1 after a
 * message. */
static int mpi_setup(const cli_env *env, nn_ctx **ctx, int threads, int shared, nn_comm **comm) {
    /* sharing the cores (share.c) divides them between the ranks already */
    if (!threads && !shared && env->mpi_local > 1) {
        threads = nn_cpu_cores() / env->mpi_local;
        if (threads < 1) threads = 1;
        nn_ctx_free(*ctx);
        if (!(*ctx = cli_ctx_new(env, threads))) return 1;
    }
    if (nn_mpi_comm_new(*ctx, comm)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(*ctx));
        return 1;
    }
    if (env->mpi_timeout >= 0) nn_mpi_comm_set_timeout(*comm, env->mpi_timeout);
    if (!env->allreduce_shm) nn_mpi_comm_set_shared_memory(*comm, 0);
    if ((*comm)->rank != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "nnopt: rank %d: cannot silence stdout\n", (*comm)->rank);
        return 1;
    }
    return 0;
}

int cmd_train(int argc, char **argv, const cli_env *env) {
    cli_train_opts o;
    cli_train_opts_init(&o);
    const char *config = NULL, *log_path = NULL, *save = NULL, *init = NULL, *resume = NULL;
    const char *device = NULL;
    int save_every = 0, json = 0, quiet = 0;
    cli_opt opts[CLI_TRAIN_OPTS_MAX + 12];
    int k = 0;
    opts[k++] = (cli_opt){"--config", CLI_STR, &config, "FILE", "read a recipe file first; flags override it", 0, 0, NULL};
    k += cli_train_opts_table(&o, opts + k);
    opts[k++] = (cli_opt){"--init", CLI_STR, &init, "FILE", "start from the weights in a safetensors file", 0, 0, NULL};
    opts[k++] = (cli_opt){"--save", CLI_STR, &save, "FILE", "write a checkpoint after every epoch (atomic)", 0, 0, NULL};
    opts[k++] = (cli_opt){"--save-every", CLI_INT, &save_every, "STEPS", "also checkpoint every STEPS optimizer steps", 1, 1 << 30, NULL};
    opts[k++] = (cli_opt){"--resume", CLI_STR, &resume, "FILE", "continue exactly from a checkpoint written by --save", 0, 0, NULL};
    opts[k++] = (cli_opt){"--log", CLI_STR, &log_path, "FILE", "write one CSV row per epoch (and the recipe next to it)", 0, 0, NULL};
    opts[k++] = (cli_opt){"--json", CLI_FLAG, &json, NULL, "print one JSON object per epoch and nothing else on stdout", 0, 0, NULL};
    opts[k++] = (cli_opt){"--quiet", CLI_FLAG, &quiet, NULL, "no progress bar", 0, 0, NULL};
    opts[k++] = (cli_opt){"--device", CLI_STR, &device, "DEV", CLI_DEVICE_HELP, 0, 0, NULL};
    opts[k] = (cli_opt){NULL, 0, NULL, NULL, NULL, 0, 0, NULL};
    cli_strings keep = {0};
    const char *pos[1];
    int npos, rc = 2;
    nn_ctx *ctx = NULL;
    nn_net *net = NULL;
    nn_trainer *trainer = NULL;
    nn_comm *comm = NULL;
    nn_dataset train = {0}, test = {0}, val = {0};
    cli_train_view view = {.out = stdout};
    cli_log log = {.lock = {.fd = -1}};
    cli_lock save_lock = {.fd = -1};
    cli_share share = {.fd = -1};
    nn_train_config cfg;
    nn_precision precision = NN_PRECISION_FP32;
    if (cli_load_configs(argc, argv, opts, &keep)) goto out;
    int r = cli_parse("train", "MODEL [options]",
                      "Trains a model file on an IDX image data set (default: Debian's Fashion-MNIST)\n"
                      "and reports train loss, test loss, test accuracy, seconds and images/s after\n"
                      "every epoch. Recipe files (--config) use the keys shown in docs/usage.md.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) {
        rc = r == 2 ? 0 : 2;
        goto out;
    }
    if (npos != 1 || (resume && init)) {
        fprintf(stderr, "nnopt train: %s\n", npos != 1 ? "expected one MODEL file (see nnopt train --help)"
                                                       : "--resume and --init exclude each other");
        goto out;
    }
    if (cli_parse_precision("train", env, o.precision, &precision)) goto out;
    if (o.early_stop && !o.val) {
        fprintf(stderr, "nnopt train: --early-stop needs a validation split (--val N)\n");
        goto out;
    }
    const char *model = pos[0];
    rc = 1;
    /* every training counts in the registry of running nnopt processes, so
     * that the others leave it its share of the cores */
    cli_share_join(&share, env);
    cli_env denv; /* env with --device */
    if (cli_device_env(env, device, &denv)) {
        rc = 2;
        goto out;
    }
    env = &denv;
    /* no thread count given: this machine's tuned settings (nnopt tune), if any */
    cli_env tuned_env = *env;
    if (!o.threads && !env->mpi_started &&
        cli_tuned_settings(env, model, o.model_params, o.batch, &o.threads, &tuned_env) && !json)
        fprintf(stderr, "nnopt: tuned for this machine, model and batch (nnopt tune): %d thread%s, "
                "%s convolutions, prefetch %s\n", o.threads, o.threads > 1 ? "s" : "",
                tuned_env.winograd ? "Winograd" : "direct", cli_prefetch_name(tuned_env.prefetch));
    /* still none: all the cores are planned for, and the run uses its share
     * of them (set when the run starts, followed between steps) */
    const int shared = !o.threads && share.fd >= 0;
    if (!(ctx = cli_ctx_new(&tuned_env, o.threads))) goto out;
    if (env->mpi_started && mpi_setup(env, &ctx, o.threads, shared, &comm)) goto out;
    const int rank = comm ? comm->rank : 0;
    if (rank != 0) log_path = NULL; /* rank 0 writes the log and the recipe */
    nn_ctx_set_precision(ctx, precision);
    if (cli_train_config(ctx, &o, &cfg)) {
        /* the recipe (with any flags on top) is what is inconsistent */
        fprintf(stderr, "nnopt: %s%s%s\n", config ? config : "", config ? ": " : "", nn_ctx_error(ctx));
        rc = 2;
        goto out;
    }
    cfg.save = save;
    cfg.save_every = save_every;
    if (cli_load_splits(ctx, &o, &train, &val, &test) || cli_net_load(ctx, model, o.model_params, &net) ||
        cli_check_data(ctx, model, net, &train, o.data) ||
        cli_check_data(ctx, model, net, &test, o.data) || nn_net_plan(net, o.batch))
        goto fail;
    nn_rng init_rng;
    nn_rng_seed(&init_rng, o.seed, 1);
    nn_net_init_params(net, &init_rng);
    /* the communicator before the resume: a checkpoint records the global
     * batch, which the ranks reproduce */
    if ((init && nn_checkpoint_load(ctx, init, net, NULL, NULL)) ||
        nn_trainer_new(net, &cfg, &train, &val, &test, &trainer) ||
        ((comm || cfg.stages > 1) &&
         nn_trainer_set_comm(trainer, comm,
                             isnan(o.bucket_mb) ? 0 : (size_t)(o.bucket_mb * 1048576.0))) ||
        (resume && nn_trainer_resume(trainer, resume)))
        goto fail;
    /* every output path is locked and checked before anything is cut: a bad
     * --save path fails now, not after the first epoch's work */
    if ((save && rank == 0 && (cli_lock_acquire(ctx, &save_lock, save, "checkpoint") ||
                  cli_check_writable(ctx, save))) ||
        (log_path && cli_log_open(ctx, &log, log_path)))
        goto fail;
    if (log_path) {
        /* record the count used: results depend on it; a run that shared the
         * cores used no one count, and its recipe shares them again */
        o.threads = shared ? CLI_UNSET_I : nn_ctx_threads(ctx);
        if (cli_write_run_recipe(log_path, model, opts)) goto out;
        if (cli_log_begin(ctx, &log, resume != NULL, val.n > 0)) goto fail;
        view.log = &log;
    }
    view.ctx = ctx;
    view.tty = isatty(fileno(stdout)) && !json && !quiet;
    view.epochs = o.epochs;
    view.json = json;
    view.patience = o.early_stop;
    view.min_delta = o.min_delta;
    /* after the trainer's loader chose where to run (with all the cores:
     * between steps) and, under MPI, after every rank registered (the
     * parameters' broadcast waited for them all) */
    if (shared) {
        cli_share_follow(&share, ctx);
        view.share = &share;
    }
    nn_train_callbacks cb = cli_train_view_callbacks(&view);
    nn_trainer_set_callbacks(trainer, &cb);
    if (!json) cli_train_print_start(model, net, trainer, &train, &val, &test, &o, &cfg, ctx);
    if (comm && rank == 0 && nn_trainer_pipeline(trainer))
        fprintf(json ? stderr : stdout, "pipeline over %d MPI ranks: %d stages (%s), %d "
                "micro-batches, %s schedule; %d data-parallel replica%s, global batch %d (%d "
                "threads each)\n", comm->size, cfg.stages, nn_trainer_pipeline(trainer),
                cfg.micro_batches ? cfg.micro_batches : 2 * cfg.stages,
                cfg.pipeline == NN_PIPELINE_GPIPE ? "GPipe" : "1F1B", comm->size / cfg.stages,
                comm->size / cfg.stages > 1 ? "s" : "", comm->size / cfg.stages * o.batch,
                nn_ctx_threads(ctx));
    else if (comm && rank == 0)
        fprintf(json ? stderr : stdout, "data-parallel over %d MPI ranks, global batch %d "
                "(%d per rank, %d threads each), gradients averaged through %s%s%s\n",
                comm->size, comm->size * o.batch, o.batch, nn_ctx_threads(ctx),
                nn_mpi_comm_allreduce_name(comm), o.sync_bn ? ", batch norm synchronized" : "",
                cfg.shards > 1 ? ", gradients added in rank order (shards)" : "");
    else if (!comm && cfg.shards > 1)
        fprintf(json ? stderr : stdout, "each batch of %d computed as %d data-parallel shards, "
                "gradients added in shard order%s\n", o.batch, cfg.shards,
                o.sync_bn ? ", batch norm synchronized" : "");
    fflush(stdout);
    cli_catch_stop_signals(trainer);
    nn_status st = nn_trainer_run(trainer);
    cli_catch_stop_signals(NULL);
    cli_progress_clear(&view.bar);
    if (st == NN_ESTOPPED) {
        rc = cli_train_report_stop(ctx, model, save);
        goto out;
    }
    if (st) goto fail;
    if (log.failed) goto fail;
    if (!json) {
        /* the last epoch evaluated these weights already (its evaluation is
         * 2.7 s of a ResNet-20 run on 2 cores); after early stopping went
         * back to the best epoch's weights, or with no epoch run here (a
         * finished run resumed), evaluate them */
        double loss = view.last_test_loss, acc = view.last_test_accuracy;
        if (!view.last_test_valid && nn_trainer_evaluate(trainer, &test, &loss, &acc)) goto fail;
        printf("final test accuracy %.2f%% (test loss %.4f) after %lld epochs\n", 100.0 * acc, loss,
               (long long)nn_trainer_state(trainer)->epoch);
    }
    if (comm && rank == 0)
        fprintf(json ? stderr : stdout, "parameters bit-identical on all %d ranks (checked after "
                "every epoch)\n", comm->size);
    rc = 0;
    goto out;
fail:
    cli_progress_clear(&view.bar);
    fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
out:
    if (log.f && cli_log_close(ctx, &log) && rc == 0) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        rc = 1;
    }
    cli_lock_release(&log.lock);
    cli_lock_release(&save_lock);
    cli_share_leave(&share);
    nn_trainer_free(trainer);
    nn_mpi_comm_free(comm);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    nn_dataset_free(&val);
    nn_net_free(net);
    nn_ctx_free(ctx);
    cli_strings_free(&keep);
    return rc;
}
