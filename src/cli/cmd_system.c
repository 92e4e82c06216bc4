/* cmd_system.c - `nnopt system`: what nnopt finds on this machine and uses:
 * the CPU, the kernel instruction set, the BLAS kernels, the default threads,
 * and optionally the sgemm rate measured through nnopt's GEMM path, for the
 * OpenBLAS kernels in use and for the others this CPU runs. */
#include "cli/cli.h"

#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;


/* OpenBLAS takes its kernels from OPENBLAS_CORETYPE when it loads, and
 * swapping them in a process that has already run sgemm is not safe; so each
 * other core type is measured by this program run again with the variable
 * set (`nnopt system --measure --json`, which measures only its own kernels
 * since the variable pins them). Returns GFLOP/s, or 0 when the run failed;
 * ran gets the core the run reports, which OpenBLAS may have refused. */
static double measure_core(const char *core, int threads, char *ran, size_t ran_size) {
    snprintf(ran, ran_size, "%s", core);
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = malloc((n + 2) * sizeof *envp);
    char var[64], nthreads[16];
    if (!envp) return 0.0;
    snprintf(var, sizeof var, "OPENBLAS_CORETYPE=%s", core);
    cli_env_with(environ, var, envp, n + 2);
    snprintf(nthreads, sizeof nthreads, "%d", threads);
    char *args[] = {"nnopt", "system", "--measure", "--json", "--threads", nthreads, NULL};
    int fd[2];
    double gflops = 0.0;
    if (pipe(fd) != 0) {
        free(envp);
        return 0.0;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    const int spawned = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, args, envp) == 0;
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(fd[1]);
    char out[4096];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof out - 1 && (got = read(fd[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)got;
    out[len] = '\0';
    close(fd[0]);
    int status = 0;
    if (!spawned || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return 0.0;
    const char *g = strstr(out, "\"sgemm_gflops\":"), *c = strstr(out, "\"openblas_core\":\"");
    if (g) gflops = strtod(g + 15, NULL);
    if (c) snprintf(ran, ran_size, "%.*s", (int)strcspn(c + 17, "\""), c + 17);
    return gflops;
}

/* Linux's transparent-huge-page mode, the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise",
 * "never"), or "" where there is none */
static void thp_mode(char *out, size_t size) {
    out[0] = '\0';
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return;
    char line[128];
    if (fgets(line, sizeof line, f)) {
        const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
        if (close) snprintf(out, size, "%.*s", (int)(close - open - 1), open + 1);
    }
    fclose(f);
}

int cmd_system(int argc, char **argv, const cli_env *env) {
    int json = 0, measure = 0, threads = 0;
    const cli_opt opts[] = {
        {"--threads", CLI_INT, &threads, "T", "threads for --measure (default: all cores)", 0, 1024, NULL},
        {"--measure", CLI_FLAG, &measure, NULL, "also measure sgemm GFLOP/s with each OpenBLAS kernel set this CPU runs (a few seconds)", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    int npos;
    int r = cli_parse("system", "[options]",
                      "Prints what nnopt uses on this machine: the CPU, the instruction set of\n"
                      "its kernels (NNOPT_ISA caps it), the OpenBLAS kernels (replaced when\n"
                      "OpenBLAS's own choice is older than the CPU; OPENBLAS_CORETYPE pins\n"
                      "them), whether Winograd convolutions run (NNOPT_CONV=direct turns them\n"
                      "off), whether large blocks of memory ask for huge pages\n"
                      "(NNOPT_HUGEPAGES=off turns it off) and the default thread count.\n"
                      "--measure also runs sgemm with the other OpenBLAS kernels this CPU\n"
                      "runs (unless OPENBLAS_CORETYPE pins one) and names the fastest; nnopt\n"
                      "does not switch to it by itself.",
                      argc, argv, opts, NULL, 0, &npos);
    if (r) return r == 2 ? 0 : 2;
    nn_ctx *ctx = cli_ctx_new(env, threads);
    if (!ctx) {
        fprintf(stderr, "nnopt: out of memory\n");
        return 1;
    }
    char model[256];
    cli_cpu_model(model, sizeof model);
    const char *isa = nn_isa_name(nn_ctx_isa(ctx));
    const char *core = nn_blas_core(), *replaced = nn_blas_replaced_core();
    double gflops = measure ? nn_measure_sgemm_gflops(ctx, 1024, 5) : 0.0;
    /* the other kernel sets, when the user has not pinned one */
    enum { MAX_CORES = 4 };
    const char *cores[MAX_CORES];
    char ran[MAX_CORES][32];
    double rate[MAX_CORES];
    int ncores = 0, fastest = -1;
    if (measure && !env->blas_core) {
        const char *cand[MAX_CORES - 1];
        const int ncand = nn_blas_cpu_cores(cand, MAX_CORES - 1);
        snprintf(ran[0], sizeof ran[0], "%s", core ? core : "?");
        cores[0] = ran[0];
        rate[ncores++] = gflops;
        for (int i = 0; i < ncand; i++) {
            if (core && strcmp(cand[i], core) == 0) continue;
            rate[ncores] = measure_core(cand[i], nn_ctx_threads(ctx), ran[ncores], sizeof ran[0]);
            cores[ncores] = ran[ncores];
            ncores++;
        }
        for (int i = 0; i < ncores; i++)
            if (rate[i] > 0 && (fastest < 0 || rate[i] > rate[fastest])) fastest = i;
    }
    const int winograd = nn_ctx_winograd(ctx), huge = nn_huge_pages();
    char thp[32];
    thp_mode(thp, sizeof thp);
    if (json) {
        printf("{\"cpu\":");
        cli_json_string(stdout, model);
        printf(",\"threads\":%d,\"kernel_isa\":\"%s\",\"openblas_core\":", nn_ctx_threads(ctx), isa);
        cli_json_string(stdout, core ? core : "");
        printf(",\"openblas_replaced\":");
        cli_json_string(stdout, replaced ? replaced : "");
        printf(",\"winograd\":%s,\"backend\":\"%s\"", winograd ? "true" : "false",
               nn_ctx_backend(ctx));
        printf(",\"huge_pages\":%s,\"thp_mode\":", huge ? "true" : "false");
        cli_json_string(stdout, thp);
        if (measure) printf(",\"sgemm_gflops\":%.1f", gflops);
        if (ncores > 1) {
            printf(",\"sgemm_gflops_by_core\":{");
            for (int i = 0; i < ncores; i++) {
                printf(i ? "," : "");
                cli_json_string(stdout, cores[i]);
                if (rate[i] > 0) printf(":%.1f", rate[i]);
                else printf(":null");
            }
            printf("},\"sgemm_fastest_core\":");
            cli_json_string(stdout, fastest >= 0 ? cores[fastest] : "");
        }
        printf("}\n");
    } else {
        printf("cpu        %s\n", model);
        printf("threads    %d%s\n", nn_ctx_threads(ctx), threads ? "" : " (the default: every core)");
        printf("kernels    %s\n", isa);
        printf("winograd   %s\n", winograd ? "on: fp32 3x3 stride-1 pad-1 convolutions with C, K multiples of 8 "
                                             "(NNOPT_CONV=direct turns it off)"
                                           : "off");
        printf("backend    %s%s\n", nn_ctx_backend(ctx),
               strcmp(nn_ctx_backend(ctx), "guard") == 0
                   ? " (memory that host code cannot touch outside kernels and copies; slow, for tests)"
                   : "");
        char mode[64];
        snprintf(mode, sizeof mode, thp[0] ? "THP mode %s" : "no THP in this kernel", thp);
        if (huge)
            printf("memory     huge pages asked for blocks of 4 MiB or more (%s; "
                   "NNOPT_HUGEPAGES=off turns it off)\n", mode);
        else
            printf("memory     huge pages not asked for (NNOPT_HUGEPAGES=off; %s)\n", mode);
        printf("openblas   core %s", core ? core : "?");
        if (replaced) printf(" (nnopt replaced OpenBLAS's own choice, %s, older than this CPU)", replaced);
        printf("\n");
        if (measure) printf("sgemm      %.1f GFLOP/s on %d threads (1024^3, best of 5)\n", gflops,
                            nn_ctx_threads(ctx));
        if (ncores > 1) {
            printf("           other OpenBLAS kernels:");
            for (int i = 1; i < ncores; i++) {
                if (rate[i] > 0) printf(" %s %.1f%s", cores[i], rate[i], i + 1 < ncores ? "," : "");
                else printf(" %s n/a%s", cores[i], i + 1 < ncores ? "," : "");
            }
            printf(" GFLOP/s\n");
            /* within 3%: as good as measurement noise allows telling */
            if (fastest > 0 && rate[fastest] > 1.03 * gflops)
                printf("           fastest here: %s (OPENBLAS_CORETYPE=%s uses it; nnopt does not "
                       "switch by itself: docs/performance.md)\n",
                       cores[fastest], cores[fastest]);
            else
                printf("           the kernels in use are the fastest here (within 3%%)\n");
        }
    }
    nn_ctx_free(ctx);
    return 0;
}
