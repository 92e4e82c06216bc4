/* cli.h - shared pieces of the nnopt command-line tool: option tables,
 * progress bar, and the subcommand entry points. */
#ifndef NN_CLI_H
#define NN_CLI_H

#include "nnopt.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>

/* What nnopt's environment variables ask for, read and checked once by
 * main() (the library reads none): commands make every context through
 * cli_ctx_new, which applies them. */
typedef struct {
    nn_isa isa_cap;         /* NNOPT_ISA: the kernels' ISA at most this (default
                               NN_ISA_AMX, the top: no cap) */
    int winograd;           /* NNOPT_CONV: 1 winograd where it applies (default), 2 F(2x2)
                               alone (winograd2), 0 direct */
    int fuse;               /* NNOPT_FUSE: 1 epilogue fusion (default), 0 every layer alone */
    int huge_pages;         /* NNOPT_HUGEPAGES: 1 large blocks ask for transparent huge
                               pages (default), 0 not (nn_set_huge_pages) */
    int prefetch;           /* NNOPT_PREFETCH: NN_PREFETCH_AUTO each plane-by-plane
                               layer tries both in its first training steps (default),
                               1 the kernels ask for the next plane, 0 they leave it
                               to the hardware (nn_ctx_set_prefetch) */
    int prefetch_set;       /* NNOPT_PREFETCH given: tune and the tuning cache leave it */
    nn_loader_mode loader;  /* NNOPT_LOADER: auto (default), thread or sync */
    const char *blas_core;  /* OPENBLAS_CORETYPE when set (OpenBLAS obeyed it), else NULL */
    const char *backend;    /* NNOPT_BACKEND: "cpu" (default) or "guard", or --device's
                               "cuda" / "cuda:N" (nn_ctx_set_backend) */
    /* launched by mpirun or srun: the world's size (OMPI_COMM_WORLD_SIZE,
     * PMI_SIZE; 1 otherwise) and the ranks on this machine
     * (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS; 1 otherwise). main()
     * starts MPI for `train` when the world has more than one rank. */
    int mpi_size, mpi_local;
    int mpi_started;        /* main() called nn_mpi_init */
    double mpi_timeout;     /* NNOPT_MPI_TIMEOUT: seconds a collective may stall before
                               the silent ranks are named and the job stops (< 0: the
                               library's default, 20; 0: never) */
    int allreduce_shm;      /* NNOPT_ALLREDUCE: 1 (auto, default) gradient all-reduces through
                               shared memory where every rank is on this machine, 0 (mpi)
                               always MPI_Iallreduce */
    int conv_set;           /* NNOPT_CONV was given: tuning does not override it */
    char tune_cache[4096];  /* `nnopt tune`'s per-machine cache: NNOPT_TUNE_CACHE, else
                               $XDG_CACHE_HOME/nnopt/tune.tsv, else ~/.cache/nnopt/tune.tsv;
                               "" when NNOPT_TUNE_CACHE=off or no home is known */
    int share;              /* NNOPT_SHARE: 1 (default) processes share the cores (share.c),
                               0 off: every run takes all cores unless told */
    char share_dir[4096];   /* the registry of running nnopt processes: NNOPT_SHARE_DIR,
                               else /dev/shm/nnopt-<uid>, else $XDG_RUNTIME_DIR/nnopt */
} cli_env;

/* NNOPT_PREFETCH's and the tuning cache's words for a prefetch mode: "auto",
 * "on", "off"; parse returns 0, or 1 for another word (*mode untouched) */
const char *cli_prefetch_name(int mode);
int cli_prefetch_parse(const char *word, int *mode);

/* nn_ctx_new(threads) with env's settings; NULL only if out of memory. */
nn_ctx *cli_ctx_new(const cli_env *env, int threads);
/* *out = *env with the backend --device names ("cpu", "cuda", "cuda:N";
 * NULL: env's), checked once here: 0, or 2 after "nnopt: --device cuda: no
 * CUDA device (...)" (or "built without CUDA", ...) on stderr. */
int cli_device_env(const cli_env *env, const char *device, cli_env *out);
/* The --device option's help line */
#define CLI_DEVICE_HELP "where to run: cpu (default), cuda or cuda:N (NVIDIA GPU N)"

/* Sharing the cores between nnopt processes (share.c): a registry of the
 * running ones, one locked file each, and each run's fair share of its cores. */
typedef struct {
    int fd;              /* this process's entry, write-locked; -1: not registered */
    char dir[4096], path[4200];
    nn_ctx *ctx;         /* whose threads follow the share (NULL: none) */
    double next;         /* cli_now() of the next look at the registry */
    int peers, rank;     /* processes on our cores at the last look (us included), and
                            how many of them are older (lower pid) */
} cli_share;

/* Registers this process for its lifetime (until cli_share_leave or its
 * end), unless NNOPT_SHARE=off or the registry cannot be used (then s is
 * inert: one process, the whole affinity mask). */
void cli_share_join(cli_share *s, const cli_env *env);
void cli_share_leave(cli_share *s);
/* This process's fair share of its cores now: the cores of its affinity
 * mask / the live registered processes that may run on them (the remainder
 * to the lowest pids), at least 1. */
int cli_share_threads(cli_share *s);
/* ctx (made with all the cores: what its net is planned for) follows the
 * share from now on: its threads are set to the share at once, and again
 * by each cli_share_poll. */
void cli_share_follow(cli_share *s, nn_ctx *ctx);
/* Between steps: at most every 0.5 s, reads the registry again and sets
 * the followed context's threads to the share (never above the context's
 * max). Cheap otherwise (a clock read). s may be NULL. */
void cli_share_poll(cli_share *s);

typedef enum { CLI_FLAG, CLI_INT, CLI_FLOAT, CLI_STR, CLI_U64 } cli_type;

typedef struct {
    const char *name;     /* "--lr" */
    cli_type type;
    void *dst;            /* int*, int*, float*, const char**, uint64_t* */
    const char *metavar;  /* "RATE" */
    const char *help;
    double min, max;      /* accepted range for numbers */
    const char *ini;      /* "section.key" in a recipe file (--config), or NULL */
} cli_opt;

/* Sets one option from text; 0 on success, else 1 with the reason in err. */
int cli_opt_set(const cli_opt *o, const char *v, char *err, size_t errsz);

/* Strings read from a recipe file, kept alive while the options point at them
 * (grows as needed; {0} is empty). */
typedef struct {
    char **items;
    int count, cap;
} cli_strings;

/* Applies a recipe file's keys to the options that have an `ini` name;
 * returns 0, or 1 after printing "nnopt: FILE:LINE: problem". */
int cli_recipe_load(const char *path, const cli_opt *opts, cli_strings *keep);
/* Writes the options with an `ini` name as a recipe file, header as a comment. */
int cli_recipe_write(const char *path, const cli_opt *opts, const char *header);
void cli_strings_free(cli_strings *keep);

/* Parses argv[1..] (argv[0] is the subcommand). Positional arguments go to
 * pos[0..max_pos). Returns 0 to go on, 1 after an error message, 2 after --help. */
int cli_parse(const char *cmd, const char *synopsis, const char *about, int argc, char **argv,
              const cli_opt *opts, const char **pos, int max_pos, int *npos);

/* Progress bar with rate and ETA, drawn with \r on a terminal only. */
typedef struct {
    FILE *out;
    int enabled;
    double start;
    double last_draw;
    int64_t total;
    char label[32];
} cli_progress;

double cli_now(void);
void cli_progress_start(cli_progress *p, FILE *out, int enabled, int64_t total, const char *label);
void cli_progress_update(cli_progress *p, int64_t done, double loss);
void cli_progress_clear(cli_progress *p);

/* A model with random weights and batches held in memory: one random batch,
 * or the first CLI_WORKLOAD_BATCHES batches of a real training set, cycled. */
typedef struct {
    nn_ctx *ctx;
    nn_net *net;
    nn_trainer *trainer;
    float *x;       /* (num_batches, batch, C, H, W) normalized */
    int32_t *y;     /* (num_batches, batch) */
    int batch;
    int num_batches;
    int next;       /* the batch the next step takes */
    size_t per;     /* floats per sample */
} cli_workload;
#define CLI_WORKLOAD_BATCHES 32

/* params: the model's --params (NULL: its defaults). data: a directory with train-images/labels IDX files (Fashion-MNIST's
 * layout), or NULL for one random batch. Returns 0, or 1 with the error in
 * w->ctx (w->ctx NULL: out of memory). */
int cli_workload_new(cli_workload *w, const cli_env *env, const char *model, const char *params,
                     const char *data, int batch, int threads, nn_precision precision);
/* "fp32" or "bf16" into *out; 2 (after a one-line error) for anything else.
 * Notes on stderr when bf16 has no AVX512-BF16 to run on. */
int cli_parse_precision(const char *cmd, const cli_env *env, const char *name, nn_precision *out);
/* One training step of the trainer (forward, backward, SGD update) on the batch. */
int cli_workload_step(cli_workload *w);
void cli_workload_free(cli_workload *w);

/* The environment env with assignment ("NAME=value") in place of any NAME=
 * entry, into out (cap entries, NULL-terminated): out, or NULL when env has
 * too many. No allocation: main.c calls it before libc is set up. */
char **cli_env_with(char *const *env, char *assignment, char **out, size_t cap);

/* Writes s as a JSON string literal (quoted, escaped). */
void cli_json_string(FILE *f, const char *s);
/* The shortest decimal text that reads back as exactly v (0.01, not
 * 0.00999999978); buf of at least 32 bytes. Returns buf. */
const char *cli_float_str(char *buf, size_t size, float v);
/* The "model name" line of /proc/cpuinfo, or "unknown". */
void cli_cpu_model(char *buf, size_t size);
/* nn_net_load with the model's parameters from --params "NAME=V,NAME=V"
 * (NULL or "": the defaults of its 'params' line). */
nn_status cli_net_load(nn_ctx *ctx, const char *path, const char *params, nn_net **out);
/* Checks that a data set fits a model's input size and number of classes;
 * errors name the model and the data directory. */
nn_status cli_check_data(nn_ctx *ctx, const char *model, nn_net *net, const nn_dataset *d,
                         const char *dir);

/* The training recipe as options (flags and recipe-file keys), shared by
 * `train` and `compare`. Unset numbers are CLI_UNSET_F / CLI_UNSET_I and take
 * the optimizer's or schedule's PyTorch default. */
#define CLI_UNSET_F NAN
#define CLI_UNSET_I INT_MIN
typedef struct {
    const char *data, *optimizer, *schedule, *milestones, *precision, *model_params, *pipeline,
        *stage_balance;
    int epochs, batch, threads, no_shuffle, val, train_limit, test_limit, accumulate,
        early_stop, crop_pad, hflip, sync_bn, stages, micro_batches, shards;
    float mean, std, label_smoothing, clip_grad_norm, erase_prob, min_delta, bucket_mb, ema;
    uint64_t seed;
    float lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha, lr_decay;
    int nesterov, amsgrad, centered;
    float gamma, eta_min, pct_start, div_factor, final_div_factor, plateau_factor,
        plateau_threshold, min_lr, warmup_start_factor;
    int step_size, t_max, t_0, t_mult, plateau_patience, plateau_cooldown, warmup_steps,
        total_steps;
} cli_train_opts;

#define CLI_TRAIN_OPTS_MAX 64 /* entries cli_train_opts_table may write */
void cli_train_opts_init(cli_train_opts *o);
/* Writes the recipe options into t[] (room for CLI_TRAIN_OPTS_MAX); returns
 * how many. The caller appends its own and the NULL terminator. */
int cli_train_opts_table(cli_train_opts *o, cli_opt *t);
/* The options as a library training configuration (checked). Writes the
 * resolved defaults back into o, for the recipe written beside a log. */
nn_status cli_train_config(nn_ctx *ctx, cli_train_opts *o, nn_train_config *c);
/* Loads train and test sets from o->data, carves the validation split and
 * applies the limits. */
nn_status cli_load_splits(nn_ctx *ctx, const cli_train_opts *o, nn_dataset *train,
                          nn_dataset *val, nn_dataset *test);
/* Reads the recipe files named by --config in argv into the options (before
 * the flags are parsed, so that flags override them); 0, or 1 after a message. */
int cli_load_configs(int argc, char **argv, const cli_opt *opts, cli_strings *keep);

/* An advisory lock on an output file (held as PATH.lock) that keeps a second
 * nnopt run from writing the same log or checkpoint. */
typedef struct {
    int fd;              /* -1 when not held */
    char path[4096];
} cli_lock;

/* Takes the lock of path or fails naming the run that holds it; `what` names
 * the file's role ("log", "checkpoint") in messages. */
nn_status cli_lock_acquire(nn_ctx *ctx, cli_lock *l, const char *path, const char *what);
void cli_lock_release(cli_lock *l);

/* The per-epoch CSV log of a training run: opened and locked first, cut (or
 * appended to, on resume) only when the run starts, every row flushed and
 * checked. */
typedef struct {
    FILE *f;
    const char *path;
    cli_lock lock;
    int failed;          /* a write failed (the error is in the context) */
} cli_log;

nn_status cli_log_open(nn_ctx *ctx, cli_log *log, const char *path);
nn_status cli_log_begin(nn_ctx *ctx, cli_log *log, int append, int has_val);
nn_status cli_log_row(nn_ctx *ctx, cli_log *log, const nn_epoch_report *r);
nn_status cli_log_close(nn_ctx *ctx, cli_log *log);

/* Proves that a checkpoint can be written at path (creates and removes its
 * temporary file). */
nn_status cli_check_writable(nn_ctx *ctx, const char *path);
/* Writes the run's recipe beside its log (run.csv -> run.recipe.ini). */
int cli_write_run_recipe(const char *log, const char *model, const cli_opt *opts);

/* What a training run prints (train_report.c): each epoch as a line, or as a
 * JSON object with json, on out (with a progress bar on a terminal, tty), a
 * row of log when it is not NULL, and early stopping's note. */
typedef struct {
    FILE *out;
    nn_ctx *ctx;
    cli_log *log;       /* NULL without --log */
    cli_share *share;   /* polled between steps when the run follows it (NULL: no) */
    int tty, json, epochs, patience;
    float min_delta;
    cli_progress bar;
    int64_t first_batch;
    /* the last epoch's test result, while the weights are still the ones it
     * measured (not after early stopping restored the best epoch's) */
    int last_test_valid;
    double last_test_loss, last_test_accuracy;
} cli_train_view;

/* The trainer's callbacks that print to v. */
nn_train_callbacks cli_train_view_callbacks(cli_train_view *v);
/* The run's first line on stdout: model, parameters, data, batch, optimizer,
 * threads, seed. */
void cli_train_print_start(const char *model, nn_net *net, nn_trainer *t, const nn_dataset *train,
                           const nn_dataset *val, const nn_dataset *test,
                           const cli_train_opts *o, const nn_train_config *cfg, nn_ctx *ctx);
/* After a stop by signal (NN_ESTOPPED): says so, and how to resume when save
 * is given, on stderr; returns the exit code, 128 + the signal. */
int cli_train_report_stop(nn_ctx *ctx, const char *model, const char *save);

/* The first SIGINT/SIGTERM asks t to stop after its current step; a second
 * one ends the process. NULL stops forwarding signals to a trainer. */
void cli_catch_stop_signals(nn_trainer *t);
/* The signal that asked for the stop (0 if none). */
int cli_stop_signal(void);

/* `nnopt tune`'s per-machine cache (tune_cache.c): the fastest thread count
 * and convolution kernels for a machine, a model and a batch size. */
typedef struct {
    int batch, threads, winograd;
    int prefetch;               /* nn_ctx_set_prefetch (NN_PREFETCH_AUTO in entries
                                   from before it) */
    double images_per_s;        /* with those settings, fp32 */
    double bf16_images_per_s;   /* the best with bf16 convolutions (0: not measured) */
} cli_tune_entry;


/* "CPU model|N cpus|ISA": entries apply only to the machine that measured them. */
void cli_tune_machine(nn_ctx *ctx, char *buf, size_t size);
/* FNV-1a of the model's expanded layer text. */
uint64_t cli_tune_model_hash(const nn_net *net);
int cli_tune_lookup(const cli_env *env, const char *machine, uint64_t hash, int batch,
                    cli_tune_entry *out);
/* Adds or replaces the entry (atomic rewrite under a lock); 0, or 1 after a message. */
int cli_tune_store(const cli_env *env, const char *machine, uint64_t hash, const cli_tune_entry *e);
/* For a run that gave no thread count: the tuned threads and kernels of
 * (this machine, model, batch) into *threads and *tuned (a copy of env with
 * the kernels set, unless NNOPT_CONV chose them); 1 if the cache had them,
 * else 0 with *tuned = *env and *threads untouched. */
int cli_tuned_settings(const cli_env *env, const char *model, const char *params, int batch,
                       int *threads, cli_env *tuned);

/* The subcommands: argv[0] is the command's name; env as main() read it. */
int cmd_train(int argc, char **argv, const cli_env *env);
int cmd_bench(int argc, char **argv, const cli_env *env);
int cmd_compare(int argc, char **argv, const cli_env *env);
int cmd_predict(int argc, char **argv, const cli_env *env);
int cmd_profile(int argc, char **argv, const cli_env *env);
int cmd_eval(int argc, char **argv, const cli_env *env);
int cmd_info(int argc, char **argv, const cli_env *env);
int cmd_system(int argc, char **argv, const cli_env *env);
int cmd_plot(int argc, char **argv, const cli_env *env);
int cmd_search(int argc, char **argv, const cli_env *env);
int cmd_report(int argc, char **argv, const cli_env *env);
int cmd_tune(int argc, char **argv, const cli_env *env);

#endif /* NN_CLI_H */
