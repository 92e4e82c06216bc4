/* main.c - the nnopt command: dispatches to subcommands. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static void usage(FILE *f) {
    fprintf(f,
            "nnopt %s - train neural networks in C and make them perform\n\n"
            "usage: nnopt <command> [options]\n\n"
            "commands:\n"
            "  train MODEL   train a model file on an IDX image data set (Fashion-MNIST)\n"
            "  eval MODEL    test accuracy and loss of saved weights\n"
            "  info MODEL    per-layer table: output shape, parameters, FLOPs, memory\n"
            "  bench MODEL   training speed on in-memory data, per layer, against the sgemm peak\n"
            "  profile MODEL Chrome trace (Perfetto) of a few training steps, one slice per op\n"
            "  plot LOG.csv  SVG of loss and accuracy against epoch from train --log files\n"
            "  compare MODEL...  train each model the same way; table and SVG of accuracy vs cost\n"
            "  predict MODEL --weights FILE INPUT...  top classes of PNG or IDX images\n"
            "  system        the CPU, kernel ISA and BLAS kernels nnopt uses here\n"
            "  search SPACE  search structure, recipe and hardware settings together under a budget\n"
            "  report STUDY  HTML page (SVG plots) and Markdown summary of a search's study\n"
            "  tune MODEL    fastest threads and kernels here per batch size, cached for train and search\n\n"
            "run 'nnopt <command> --help' for the options of a command.\n",
            NN_VERSION);
}

/* A variable's value in envp, NULL when unset or empty (`NNOPT_ISA= nnopt
 * ...` means the default); env_value: in the process's environment. */
static const char *envp_value(char **envp, const char *name) {
    const size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return (*e)[n + 1] ? *e + n + 1 : NULL;
    return NULL;
}

static const char *env_value(const char *name) { return envp_value(environ, name); }

/* A two-way switch: variable name, when set, must be yes (*out = 1) or no
 * (*out = 0); 0, or 2 after a one-line error. Unset leaves *out alone. */
static int env_switch(const char *name, const char *yes, const char *no, int *out) {
    const char *v = env_value(name);
    if (!v) return 0;
    if (strcmp(v, yes) == 0) *out = 1;
    else if (strcmp(v, no) == 0) *out = 0;
    else {
        fprintf(stderr, "nnopt: %s=%s: expected %s or %s\n", name, v, yes, no);
        return 2;
    }
    return 0;
}

/* A positive count from the first of two launcher variables that is set
 * (OpenMPI's, then PMI's as Slurm's srun and MPICH set it); 1 otherwise. */
static int env_count(const char *a, const char *b) {
    const char *v = env_value(a);
    if (!v) v = env_value(b);
    const long n = v ? strtol(v, NULL, 10) : 1;
    return n > 1 && n < 1 << 20 ? (int)n : 1;
}

/* Reads nnopt's environment variables into env: 0, or 2 after a one-line
 * error naming a variable whose value nnopt does not know. The library reads
 * no environment variables; this is the one place nnopt does. */
static int read_env(cli_env *env) {
    *env = (cli_env){.isa_cap = NN_ISA_AMX, .winograd = 1, .loader = NN_LOADER_AUTO,
                     .mpi_timeout = -1, .fuse = 1, .huge_pages = 1,
                     .prefetch = NN_PREFETCH_AUTO, .allreduce_shm = 1};
    const char *v = env_value("NNOPT_ISA");
    if (v && nn_isa_parse(v, &env->isa_cap) != NN_OK) {
        fprintf(stderr, "nnopt: NNOPT_ISA=%s: expected generic, avx2, avx512, avx512bf16 or amx\n", v);
        return 2;
    }
    if ((v = env_value("NNOPT_CONV"))) {
        env->conv_set = 1;
        if (strcmp(v, "winograd") == 0) env->winograd = 1;
        else if (strcmp(v, "winograd2") == 0) env->winograd = 2;
        else if (strcmp(v, "direct") == 0) env->winograd = 0;
        else {
            fprintf(stderr, "nnopt: NNOPT_CONV=%s: expected winograd, winograd2 or direct\n", v);
            return 2;
        }
    }
    if (env_switch("NNOPT_FUSE", "on", "off", &env->fuse)) return 2;
    if (env_switch("NNOPT_HUGEPAGES", "on", "off", &env->huge_pages)) return 2;
    if ((v = env_value("NNOPT_PREFETCH"))) {
        if (cli_prefetch_parse(v, &env->prefetch)) {
            fprintf(stderr, "nnopt: NNOPT_PREFETCH=%s: expected auto, on or off\n", v);
            return 2;
        }
        env->prefetch_set = 1;
    }
    if ((v = env_value("NNOPT_LOADER"))) {
        if (strcmp(v, "auto") == 0) env->loader = NN_LOADER_AUTO;
        else if (strcmp(v, "thread") == 0) env->loader = NN_LOADER_THREAD;
        else if (strcmp(v, "sync") == 0) env->loader = NN_LOADER_SYNC;
        else {
            fprintf(stderr, "nnopt: NNOPT_LOADER=%s: expected auto, thread or sync\n", v);
            return 2;
        }
    }
    if ((v = env_value("NNOPT_BACKEND"))) {
        if (strcmp(v, "cpu") != 0 && strcmp(v, "guard") != 0) {
            fprintf(stderr, "nnopt: NNOPT_BACKEND=%s: expected cpu or guard\n", v);
            return 2;
        }
        env->backend = v;
    }
    env->blas_core = env_value("OPENBLAS_CORETYPE");
    if ((v = env_value("NNOPT_SPIN")) && strcmp(v, "short") != 0 && strcmp(v, "default") != 0) {
        fprintf(stderr, "nnopt: NNOPT_SPIN=%s: expected short or default\n", v);
        return 2;
    }
    if ((v = env_value("NNOPT_MPI_TIMEOUT"))) {
        char *end;
        env->mpi_timeout = strtod(v, &end);
        if (*end || !(env->mpi_timeout >= 0 && env->mpi_timeout <= 1e6)) {
            fprintf(stderr, "nnopt: NNOPT_MPI_TIMEOUT=%s: expected seconds (0: no watchdog)\n", v);
            return 2;
        }
    }
    if (env_switch("NNOPT_ALLREDUCE", "auto", "mpi", &env->allreduce_shm)) return 2;
    if ((v = env_value("NNOPT_TUNE_CACHE"))) {
        if (strcmp(v, "off") != 0) snprintf(env->tune_cache, sizeof env->tune_cache, "%s", v);
    } else if ((v = env_value("XDG_CACHE_HOME"))) {
        snprintf(env->tune_cache, sizeof env->tune_cache, "%s/nnopt/tune.tsv", v);
    } else if ((v = env_value("HOME"))) {
        snprintf(env->tune_cache, sizeof env->tune_cache, "%s/.cache/nnopt/tune.tsv", v);
    }
    env->share = 1;
    if (env_switch("NNOPT_SHARE", "on", "off", &env->share)) return 2;
    /* the registry of running nnopt processes (share.c): per user, in
     * memory, gone at reboot */
    struct stat st;
    if ((v = env_value("NNOPT_SHARE_DIR")))
        snprintf(env->share_dir, sizeof env->share_dir, "%s", v);
    else if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        snprintf(env->share_dir, sizeof env->share_dir, "/dev/shm/nnopt-%u", (unsigned)geteuid());
    else if ((v = env_value("XDG_RUNTIME_DIR")))
        snprintf(env->share_dir, sizeof env->share_dir, "%s/nnopt", v);
    env->mpi_size = env_count("OMPI_COMM_WORLD_SIZE", "PMI_SIZE");
    env->mpi_local = env_count("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS");
    /* Slurm's `srun --mpi=pmix` sets no size of its own for MPI: the step's
     * tasks (SLURM_STEP_NUM_TASKS) and those on this node
     * (SLURM_STEP_TASKS_PER_NODE, "2" or "2(x3)": its first count) */
    if (env->mpi_size == 1 && env_value("PMIX_RANK")) {
        env->mpi_size = env_count("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS");
        env->mpi_local = env_count("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE");
    }
    return 0;
}

/* OpenBLAS chose its kernels from the CPU model when it loaded. Where that
 * choice is older than the CPU (an OpenBLAS older than the CPU model falls
 * back to SSE3 kernels), and the user did not pin a core, point OpenBLAS's
 * own variable at the kernels the CPU runs best and have it choose again. */
static void fit_blas(const cli_env *env) {
    const char *core = env->blas_core ? NULL : nn_blas_advised_core();
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    nn_blas_rechoose();
    unsetenv("OPENBLAS_CORETYPE"); /* not passed on to child processes */
}

/* OpenMP threads that finish a parallel region wait for the next one
 * spinning: libgomp spins 300,000 times (milliseconds) before it sleeps.
 * Alone on its cores that saves a wake-up per region; with another program
 * on the same cores (two trainings, search workers, MPI ranks) every spin
 * burns the time slice the other needs, and two 2-thread trainings on 2
 * cores each ran at a small fraction of their solo speed. libgomp reads its
 * settings once, in its constructor, so nnopt starts itself again with a
 * short spin (GOMP_SPINCOUNT, about 10 us) unless the user chose a wait
 * policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set; NNOPT_SPIN=default keeps
 * libgomp's). It does so before any library's constructor runs: the
 * executable's preinit functions (ELF DT_PREINIT_ARRAY) come first, so the
 * first start skips OpenBLAS's, OpenMPI's and the CUDA libraries' set-up
 * (restarting from main cost about 0.1 s per command with the CUDA
 * libraries linked). libc's environment is not set up yet there: the
 * function reads and extends envp, without malloc. Returns only if it did
 * not restart. OMP_DISPLAY_ENV=verbose shows the spin libgomp took
 * (tests/cli_env.sh). */
static void short_spin_wait(int argc, char **argv, char **envp) {
    (void)argc;
    const char *mode = envp_value(envp, "NNOPT_SPIN");
    if (!argv || envp_value(envp, "OMP_WAIT_POLICY") || envp_value(envp, "GOMP_SPINCOUNT") ||
        (mode && strcmp(mode, "short") != 0))
        return;
    static char *env[4096], spin[] = "GOMP_SPINCOUNT=10000"; /* replaces one set but empty */
    if (cli_env_with(envp, spin, env, sizeof env / sizeof env[0])) /* else too many: as loaded */
        execve("/proc/self/exe", argv, env);
}
__attribute__((section(".preinit_array"), used)) static void (*const spin_early)(int, char **,
                                                                                 char **) =
    short_spin_wait;

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("nnopt %s\n", NN_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **, const cli_env *);
    } commands[] = {
        {"train", cmd_train},     {"eval", cmd_eval},       {"info", cmd_info},
        {"bench", cmd_bench},     {"profile", cmd_profile}, {"plot", cmd_plot},
        {"compare", cmd_compare}, {"predict", cmd_predict}, {"system", cmd_system},
        {"search", cmd_search},   {"report", cmd_report},   {"tune", cmd_tune},
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(cmd, commands[i].name) != 0) continue;
        cli_env env;
        if (read_env(&env)) return 2;
        fit_blas(&env);
        nn_set_huge_pages(env.huge_pages);
        /* under mpirun with more than one rank, `train` is data parallel */
        if (env.mpi_size > 1 && commands[i].run == cmd_train) {
            if (nn_mpi_init(&argc, &argv) != NN_OK) {
                fprintf(stderr, "nnopt: launched as %d MPI ranks, but %s\n", env.mpi_size,
                        nn_mpi_available() ? "MPI failed to start"
                                           : "this nnopt was built without MPI (install "
                                             "libopenmpi-dev: scripts/deps.sh, then rebuild)");
                return 1;
            }
            env.mpi_started = 1;
        }
        int rc = commands[i].run(argc - 1, argv + 1, &env);
        /* a failed rank takes the others down rather than leave them
         * waiting in a collective */
        if (env.mpi_started) {
            if (rc) nn_mpi_abort(rc);
            nn_mpi_finalize();
        }
        return rc;
    }
    fprintf(stderr, "nnopt: unknown command '%s' (expected train, eval, info, bench, profile, plot, compare, predict, system, search, report or tune; see nnopt --help)\n",
            cmd);
    return 2;
}
