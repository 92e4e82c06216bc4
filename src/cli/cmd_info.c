/* cmd_info.c - `nnopt info MODEL`: per-layer output shape, parameters, FLOPs and
 * activation memory, with totals. */
#include "cli/cli.h"

#include <string.h>

static void human(char *buf, size_t size, double v) {
    const char *unit[] = {"", "K", "M", "G", "T"};
    int u = 0;
    while (v >= 1000.0 && u < 4) v /= 1000.0, u++;
    snprintf(buf, size, u ? "%.2f%s" : "%.0f%s", v, unit[u]);
}

int cmd_info(int argc, char **argv, const cli_env *env) {
    int json = 0, expand = 0, batch = 1, threads = 1, max_mib = 0;
    const char *model_params = NULL;
    const cli_opt opts[] = {
        {"--params", CLI_STR, &model_params, "K=V,..", "values of the model's parameters (its 'params' line)", 0, 0, NULL},
        {"--batch", CLI_INT, &batch, "N", "batch size for the memory totals (default 1)", 1, 1 << 20, NULL},
        {"--max-memory", CLI_INT, &max_mib, "MIB",
         "refuse a model that needs more than MIB MiB (default: the memory available)", 1,
         1 << 30, NULL},
        {"--json", CLI_FLAG, &json, NULL, "print one JSON object instead of the table", 0, 0, NULL},
        {"--expand", CLI_FLAG, &expand, NULL,
         "print the model as plain layer lines, blocks expanded (a model file)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[1];
    int npos;
    int r = cli_parse("info", "MODEL [options]",
                      "Prints every layer of a model file: output shape, parameters, forward\n"
                      "FLOPs and activation bytes per sample, then totals. A model that needs\n"
                      "more memory than is available (or than --max-memory) is refused before\n"
                      "anything is allocated.",
                      argc, argv, opts, pos, 1, &npos);
    if (r) return r == 2 ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "nnopt info: expected one MODEL file (see nnopt info --help)\n");
        return 2;
    }
    nn_ctx *ctx = cli_ctx_new(env, threads);
    if (!ctx) {
        fprintf(stderr, "nnopt: out of memory\n");
        return 1;
    }
    nn_ctx_set_max_memory(ctx, (uint64_t)max_mib << 20);
    nn_net *net = NULL;
    if (cli_net_load(ctx, pos[0], model_params, &net) || nn_net_plan(net, batch)) {
        fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
        nn_net_free(net);
        nn_ctx_free(ctx);
        return 1;
    }
    if (expand) {
        printf("# %s with its blocks expanded (nnopt info --expand)\n%s", pos[0],
               nn_net_model_text(net));
        nn_net_free(net);
        nn_ctx_free(ctx);
        return 0;
    }
    int64_t tp = 0, tf = 0, ta = 0, tb = 0;
    int layers = nn_net_num_layers(net);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"layers\":[");
    }
    else
        printf("%-12s %-11s %-14s %12s %14s %14s\n", "layer", "type", "output", "params",
               "FLOPs", "act. bytes");
    for (int i = 0; i < layers; i++) {
        nn_layer_info li;
        nn_net_layer_info(net, i, &li);
        char shape[64];
        nn_shape_str(&li.out, shape, sizeof shape);
        tp += li.params;
        tf += li.flops;
        tb += li.bwd_flops;
        ta += li.act_bytes;
        if (json)
            printf("%s{\"name\":\"%s\",\"type\":\"%s\",\"output\":\"%s\",\"params\":%lld,"
                   "\"flops\":%lld,\"activation_bytes\":%lld}",
                   i ? "," : "", li.name, li.op, shape, (long long)li.params,
                   (long long)li.flops, (long long)li.act_bytes);
        else
            printf("%-12s %-11s %-14s %12lld %14lld %14lld\n", li.name, li.op, shape,
                   (long long)li.params, (long long)li.flops, (long long)li.act_bytes);
    }
    size_t planned = nn_net_planned_bytes(net);
    if (json) {
        printf("],\"total_params\":%lld,\"total_flops\":%lld,\"training_flops\":%lld,"
               "\"activation_bytes\":%lld,\"param_bytes\":%lld,\"batch\":%d,"
               "\"planned_bytes\":%zu}\n",
               (long long)tp, (long long)tf, (long long)(tf + tb), (long long)ta,
               (long long)tp * 4, batch, planned);
    } else {
        char p[32], f[32], a[32];
        human(p, sizeof p, (double)tp);
        human(f, sizeof f, (double)tf);
        human(a, sizeof a, (double)ta);
        printf("%-40s %12lld %14lld %14lld\n", "total (per sample)", (long long)tp,
               (long long)tf, (long long)ta);
        char t[32];
        human(t, sizeof t, (double)(tf + tb));
        printf("\nparameters %s (%.2f MiB), forward %sFLOPs per sample, training step %sFLOPs "
               "per sample, activations %sB per sample\n",
               p, (double)tp * 4.0 / 1048576.0, f, t, a);
        printf("planned memory at batch %d: %.2f MiB (activations, their gradients, workspace)\n",
               batch, (double)planned / 1048576.0);
    }
    nn_net_free(net);
    nn_ctx_free(ctx);
    return 0;
}
