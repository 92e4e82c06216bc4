/*
 * cmd_predict.c - `nnopt predict MODEL --weights FILE INPUT...`: the top-k
 * classes of images, in eval mode. An INPUT is a PNG image (converted to
 * grayscale) or an IDX image file (.gz or raw; every image, or --limit).
 */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fashion-MNIST's class names, used for 10-class models without --labels. */
static const char *const FASHION[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* Whether path starts with the PNG signature (anything unreadable is left to
 * the IDX reader, whose message says why). */
static int is_png(const char *path) {
    const char *why;
    int fd = nn_open_regular(path, &why);
    unsigned char sig[8] = {0};
    int ok = fd >= 0 && read(fd, sig, 8) == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

/* Reads up to max_names class names, one per line; -1 (reason in *why) if
 * the file cannot be opened. */
static int read_names(const char *path, char names[][64], int max_names, const char **why) {
    int fd = nn_open_regular(path, why);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) *why = strerror(errno), close(fd);
        return -1;
    }
    int n = 0;
    char line[256];
    while (n < max_names && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        snprintf(names[n++], 64, "%.63s", line);
    }
    fclose(f);
    return n;
}

int cmd_predict(int argc, char **argv, const cli_env *env) {
    const char *device = NULL;
    const char *weights = NULL, *labels = NULL, *model_params = NULL;
    int top = 3, limit = 0, json = 0, threads = 0;
    float mean = NN_FASHION_MNIST_MEAN, std = NN_FASHION_MNIST_STD;
    const cli_opt opts[] = {
        {"--weights", CLI_STR, &weights, "FILE", "safetensors weights (required)", 0, 0, NULL},
        {"--params", CLI_STR, &model_params, "K=V,..", "values of the model's parameters (its 'params' line)", 0, 0, NULL},
        {"--top", CLI_INT, &top, "K", "classes to show per image (default 3)", 1, 1000, NULL},
        {"--limit", CLI_INT, &limit, "N", "IDX files: only the first N images", 0, 1 << 30, NULL},
        {"--labels", CLI_STR, &labels, "FILE", "class names, one per line", 0, 0, NULL},
        {"--mean", CLI_FLOAT, &mean, "M", "normalization mean (default 0.2860)", -1e6, 1e6, NULL},
        {"--std", CLI_FLOAT, &std, "S", "normalization std (default 0.3530)", 1e-9, 1e6, NULL},
        {"--threads", CLI_INT, &threads, "N", "threads (default: all cores)", 1, 1024, NULL},
        {"--device", CLI_STR, &device, "DEV", CLI_DEVICE_HELP, 0, 0, NULL},
        {"--json", CLI_FLAG, &json, NULL, "one JSON object per image", 0, 0, NULL},
        {NULL, 0, NULL, NULL, NULL, 0, 0, NULL}};
    const char *pos[65];
    int npos;
    int r = cli_parse("predict", "MODEL --weights FILE INPUT... [options]",
                      "Prints the top-k classes and probabilities of images (PNG files or IDX\n"
                      "image files), running the model in eval mode.",
                      argc, argv, opts, pos, 65, &npos);
    if (r) return r == 2 ? 0 : 2;
    cli_env denv; /* env with --device */
    if (cli_device_env(env, device, &denv)) return 2;
    env = &denv;
    if (npos < 2 || !weights) {
        fprintf(stderr, "nnopt predict: expected MODEL, --weights FILE and at least one INPUT\n");
        return 2;
    }
    static char names[1000][64];
    int nnames = 0;
    const char *why = "";
    if (labels && (nnames = read_names(labels, names, 1000, &why)) < 0) {
        fprintf(stderr, "nnopt: %s: cannot read class names: %s\n", labels, why);
        return 1;
    }
    nn_ctx *ctx = cli_ctx_new(env, threads);
    nn_net *net = NULL;
    nn_dataset d = {0};
    float *x = NULL, *prob = NULL, *z = NULL; /* z: (batch, classes) the logits */
    char *taken = NULL; /* (classes) 1 once a class is printed */
    int32_t *y = NULL;
    int rc = 1;
    const int batch = 64;
    nn_normalize norm = {mean, std};
    if (cli_net_load(ctx, pos[0], model_params, &net) || nn_net_plan(net, batch) ||
        nn_checkpoint_load(ctx, weights, net, NULL, NULL))
        goto done;
    nn_net_set_training(net, 0);
    const int classes = nn_net_num_classes(net);
    if (top > classes) top = classes;
    nn_shape in = nn_net_input_shape(net);
    const size_t per = (size_t)nn_shape_numel(&in);
    x = malloc((size_t)batch * per * sizeof(float));
    y = malloc((size_t)batch * sizeof(int32_t));
    prob = malloc((size_t)classes * sizeof(float));
    taken = malloc((size_t)classes);
    z = malloc((size_t)batch * (size_t)classes * sizeof(float));
    if (!x || !y || !prob || !taken || !z) {
        nn_ctx_fail(ctx, NN_ENOMEM, "out of memory");
        goto done;
    }
    for (int a = 1; a < npos; a++) {
        const char *path = pos[a];
        nn_dataset_free(&d);
        if (is_png(path) ? nn_png_load(ctx, path, &d) : nn_idx_load(ctx, path, NULL, &d)) goto done;
        if ((size_t)d.c * d.h * d.w != per) {
            nn_ctx_fail(ctx, NN_EINVAL, "%s: %dx%dx%d image, the model expects %lldx%lldx%lld", path,
                        d.c, d.h, d.w, (long long)in.dim[0], (long long)in.dim[1],
                        (long long)in.dim[2]);
            goto done;
        }
        if (limit && limit < d.n) nn_dataset_truncate(&d, limit);
        for (int64_t first = 0; first < d.n; first += batch) {
            int n = (int)(d.n - first < batch ? d.n - first : batch);
            nn_dataset_gather(&d, NULL, first, n, &norm, x, y);
            if (nn_net_forward(net, x, NULL, n, NULL)) goto done;
            nn_ctx_download(ctx, z, nn_net_logits(net), (size_t)n * (size_t)classes * sizeof(float));
            for (int i = 0; i < n; i++) {
                const float *zi = z + (size_t)i * classes;
                /* finite weights can still overflow on an input (inf - inf in a
                 * sum): say so rather than print meaningless probabilities */
                for (int c = 0; c < classes; c++)
                    if (!isfinite(zi[c])) {
                        nn_ctx_fail(ctx, NN_ENUMERIC, "%s[%lld]: the model's output %d is %g "
                                    "(the weights in %s overflow on this input)", path,
                                    (long long)(first + i), c, (double)zi[c], weights);
                        goto done;
                    }
                float m = zi[0], s = 0.0f;
                for (int c = 1; c < classes; c++) m = zi[c] > m ? zi[c] : m;
                for (int c = 0; c < classes; c++) s += (prob[c] = expf(zi[c] - m));
                for (int c = 0; c < classes; c++) prob[c] /= s;
                memset(taken, 0, (size_t)classes);
                if (json) {
                    printf("{\"input\":");
                    cli_json_string(stdout, path);
                    printf(",\"index\":%lld,\"top\":[", (long long)(first + i));
                } else {
                    printf("%s[%lld]:", path, (long long)(first + i));
                }
                for (int k = 0; k < top; k++) {
                    /* k-th largest: selection among the classes not yet printed,
                     * ties to the lower class; a NaN ranks below every number, so
                     * best is always a class (k < top <= classes) */
                    int best = -1;
                    for (int c = 0; c < classes; c++)
                        if (!taken[c] && (best < 0 || prob[c] > prob[best] ||
                                          (isnan(prob[best]) && !isnan(prob[c]))))
                            best = c;
                    const char *name = best < nnames ? names[best]
                                       : classes == 10 && !labels ? FASHION[best] : NULL;
                    if (json) {
                        printf("%s{\"class\":%d,", k ? "," : "", best);
                        if (name) {
                            printf("\"name\":");
                            cli_json_string(stdout, name);
                            printf(",");
                        }
                        printf("\"probability\":%.6f}", (double)prob[best]);
                    } else {
                        printf("  %d%s%s%s %.4f", best, name ? " (" : "", name ? name : "",
                               name ? ")" : "", (double)prob[best]);
                    }
                    taken[best] = 1;
                }
                printf(json ? "]}\n" : "\n");
            }
        }
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "nnopt: %s\n", nn_ctx_error(ctx));
    free(x);
    free(y);
    free(prob);
    free(taken);
    free(z);
    nn_dataset_free(&d);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return rc;
}
