/* cmd_system.c - `nnopt system`: what nnopt finds on this machine and uses:
 * the CPU, the kernel instruction set, the BLAS kernels, the default threads,
 * and optionally the sgemm rate measured through nnopt's GEMM path. */
#include "cli/cli.h"

#include <string.h>

/* The "model name" line of /proc/cpuinfo, or "unknown". */
static void cpu_model(char *buf, size_t size) {
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += 1 + (colon[1] == ' ');
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, size, "%s", colon);
        break;
    }
    fclose(f);
}

int cmd_system(int argc, char **argv, const cli_env *env) {
    int json = 0, measure = 0, threads = 0;
    const cli_opt opts[] = {
        {"--threads", CLI_INT, &threads, "T", "threads for --measure (default: all cores)", 0, 1024, NULL},
        {"--measure", CLI_FLAG, &measure, NULL, "also measure sgemm GFLOP/s (about a second)", 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    int npos;
    int r = cli_parse("system", "[options]",
                      "Prints what nnopt uses on this machine: the CPU, the instruction set of\n"
                      "its kernels (NNOPT_ISA caps it), the OpenBLAS kernels (replaced when\n"
                      "OpenBLAS's own choice is older than the CPU; OPENBLAS_CORETYPE pins\n"
                      "them), whether Winograd convolutions run (NNOPT_CONV=direct turns them\n"
                      "off) and the default thread count.",
                      argc, argv, opts, NULL, 0, &npos);
    if (r) return r == 2 ? 0 : 2;
    nn_ctx *ctx = cli_ctx_new(env, threads);
    if (!ctx) {
        fprintf(stderr, "nnopt: out of memory\n");
        return 1;
    }
    char model[256];
    cpu_model(model, sizeof model);
    const char *isa = nn_isa_name(nn_ctx_isa(ctx));
    const char *core = nn_blas_core(), *replaced = nn_blas_replaced_core();
    double gflops = measure ? nn_measure_sgemm_gflops(ctx, 1024, 5) : 0.0;
    const int winograd = nn_ctx_winograd(ctx);
    if (json) {
        printf("{\"cpu\":");
        cli_json_string(stdout, model);
        printf(",\"threads\":%d,\"kernel_isa\":\"%s\",\"openblas_core\":", nn_ctx_threads(ctx), isa);
        cli_json_string(stdout, core ? core : "");
        printf(",\"openblas_replaced\":");
        cli_json_string(stdout, replaced ? replaced : "");
        printf(",\"winograd\":%s", winograd ? "true" : "false");
        if (measure) printf(",\"sgemm_gflops\":%.1f", gflops);
        printf("}\n");
    } else {
        printf("cpu        %s\n", model);
        printf("threads    %d%s\n", nn_ctx_threads(ctx), threads ? "" : " (the default: every core)");
        printf("kernels    %s\n", isa);
        printf("winograd   %s\n", winograd ? "on: fp32 3x3 stride-1 pad-1 convolutions with C, K multiples of 8 "
                                             "(NNOPT_CONV=direct turns it off)"
                                           : "off");
        printf("openblas   core %s", core ? core : "?");
        if (replaced) printf(" (nnopt replaced OpenBLAS's own choice, %s, older than this CPU)", replaced);
        printf("\n");
        if (measure) printf("sgemm      %.1f GFLOP/s on %d threads (1024^3, best of 5)\n", gflops,
                            nn_ctx_threads(ctx));
    }
    nn_ctx_free(ctx);
    return 0;
}
