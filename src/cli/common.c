/* common.c - helpers shared by the subcommands: environments for child
 * processes, JSON strings, shortest float text, data checks, the prefetch
 * mode's words. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

char **cli_env_with(char *const *env, char *assignment, char **out, size_t cap) {
    const size_t name = strcspn(assignment, "=") + 1; /* "NAME=" */
    size_t n = 0;
    for (char *const *e = env; e && *e; e++) {
        if (strncmp(*e, assignment, name) == 0) continue;
        if (n + 2 >= cap) return NULL;
        out[n++] = *e;
    }
    if (n + 2 > cap) return NULL;
    out[n++] = assignment;
    out[n] = NULL;
    return out;
}

void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

const char *cli_float_str(char *buf, size_t size, float v) {
    if (!buf || size == 0) return "";
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, size, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

void cli_cpu_model(char *buf, size_t size) {
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

nn_status cli_net_load(nn_ctx *ctx, const char *path, const char *params, nn_net **out) {
    enum { MAX_MODEL_PARAMS = 16 };
    char buf[2048];
    const char *list[MAX_MODEL_PARAMS];
    int n = 0;
    if (params && *params) {
        if (strlen(params) >= sizeof buf)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: model parameters '%.40s...' too long", path, params);
        strcpy(buf, params);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (n == MAX_MODEL_PARAMS)
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: more than %d model parameters", path,
                                   MAX_MODEL_PARAMS);
            list[n++] = t;
        }
    }
    return nn_net_load_with(ctx, path, list, n, out);
}

nn_status cli_check_data(nn_ctx *ctx, const char *model, nn_net *net, const nn_dataset *d,
                            const char *dir) {
    nn_shape in = nn_net_input_shape(net);
    if (nn_shape_numel(&in) != (int64_t)d->c * d->h * d->w)
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "%s: model input has %lld values per sample but the images in %s are %dx%dx%d",
                           model, (long long)nn_shape_numel(&in), dir, d->c, d->h, d->w);
    if (d->num_classes > nn_net_num_classes(net))
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "%s: model has %d outputs but the labels in %s go up to %d",
                           model, nn_net_num_classes(net), dir, d->num_classes - 1);
    return NN_OK;
}


nn_ctx *cli_ctx_new(const cli_env *env, int threads) {
    nn_ctx *ctx = nn_ctx_new(threads);
    if (!ctx) return NULL;
    /* a cap above what the CPU runs changes nothing */
    if (env->isa_cap < nn_ctx_isa(ctx)) nn_ctx_set_isa(ctx, env->isa_cap);
    nn_ctx_set_winograd(ctx, env->winograd);
    nn_ctx_set_fusion(ctx, env->fuse);
    nn_ctx_set_prefetch(ctx, env->prefetch);
    nn_ctx_set_loader_mode(ctx, env->loader);
    if (env->backend) nn_ctx_set_backend(ctx, env->backend); /* checked by main() */
    return ctx;
}

int cli_device_env(const cli_env *env, const char *device, cli_env *out) {
    *out = *env;
    if (!device) return 0;
    nn_ctx *probe = nn_ctx_new(1);
    if (!probe) {
        fprintf(stderr, "nnopt: out of memory\n");
        return 2;
    }
    const nn_status s = nn_ctx_set_backend(probe, device);
    if (s) fprintf(stderr, "nnopt: --device %s: %s\n", device, nn_ctx_error(probe));
    nn_ctx_free(probe);
    if (s) return 2;
    out->backend = device;
    return 0;
}

int cli_parse_precision(const char *cmd, const cli_env *env, const char *name, nn_precision *out) {
    if (strcmp(name, "fp32") == 0) *out = NN_PRECISION_FP32;
    else if (strcmp(name, "bf16") == 0) *out = NN_PRECISION_BF16;
    else {
        fprintf(stderr, "nnopt %s: --precision must be fp32 or bf16, got '%s'\n", cmd, name);
        return 2;
    }
    /* the note is about the CPU's kernels: a GPU runs bf16 on its tensor cores */
    const int on_gpu = env->backend && strncmp(env->backend, "cuda", 4) == 0;
    nn_ctx *probe = *out == NN_PRECISION_BF16 && !on_gpu ? cli_ctx_new(env, 1) : NULL;
    if (probe && nn_ctx_isa(probe) < NN_ISA_AVX512BF16)
        fprintf(stderr, "nnopt %s: note: this CPU lacks AVX512-BF16 (or NNOPT_ISA caps it); bf16 "
                "runs in portable C, slower than fp32\n", cmd);
    nn_ctx_free(probe);
    return 0;
}

const char *cli_prefetch_name(int mode) {
    return mode == NN_PREFETCH_AUTO ? "auto" : mode ? "on" : "off";
}

int cli_prefetch_parse(const char *word, int *mode) {
    if (strcmp(word, "auto") == 0) *mode = NN_PREFETCH_AUTO;
    else if (strcmp(word, "on") == 0) *mode = 1;
    else if (strcmp(word, "off") == 0) *mode = 0;
    else return 1;
    return 0;
}
