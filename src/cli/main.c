/* main.c - the nnopt command: dispatches to subcommands. */
#include "cli/cli.h"

#include <string.h>

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
            "  system        the CPU, kernel ISA and BLAS kernels nnopt uses here\n\n"
            "run 'nnopt <command> --help' for the options of a command.\n",
            NN_VERSION);
}

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
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "profile") == 0) return cmd_profile(argc - 1, argv + 1);
    if (strcmp(cmd, "plot") == 0) return cmd_plot(argc - 1, argv + 1);
    if (strcmp(cmd, "compare") == 0) return cmd_compare(argc - 1, argv + 1);
    if (strcmp(cmd, "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    if (strcmp(cmd, "system") == 0) return cmd_system(argc - 1, argv + 1);
    fprintf(stderr, "nnopt: unknown command '%s' (expected train, eval, info, bench, profile, plot, compare, predict or system; see nnopt --help)\n",
            cmd);
    return 2;
}
