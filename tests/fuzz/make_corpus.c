/*
 * make_corpus.c - writes the generated seed inputs of the fuzz harnesses:
 * checkpoints of FUZZ_CKPT_MODEL (weights only, SGD and Adam resumes), small
 * IDX files raw and gzip, small PNG images of several colour types. Run once
 * by hand (docs/fuzzing.md); its output is kept in tests/fuzz/corpus.
 *   fuzz_make_corpus tests/fuzz/corpus
 */
#include "fuzz_common.h"

#include <png.h>
#include <sys/stat.h>
#include <zlib.h>

static char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) fuzz_die("cannot read", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) fuzz_die("cannot read", path);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* dir/name with the parts written one after the other. */
static void write_parts(const char *dir, const char *name, const void *a, size_t na,
                        const void *b, size_t nb, const void *c, size_t nc) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) ||
        (nc && fwrite(c, 1, nc, f) != nc) || fclose(f) != 0)
        fuzz_die("cannot write", path);
    printf("%s (%zu bytes)\n", path, na + nb + nc);
}

static void make_dir(const char *dir, const char *sub, char *out, size_t size) {
    snprintf(out, size, "%s/%s", dir, sub);
    mkdir(out, 0755);
}

static void checkpoints(const char *dir) {
    nn_ctx *ctx = fuzz_ctx();
    nn_net *net = NULL;
    if (nn_net_parse(ctx, FUZZ_CKPT_MODEL, "fuzz", &net) != NN_OK) fuzz_die("model", nn_ctx_error(ctx));
    nn_rng rng;
    nn_rng_seed(&rng, 1, 1);
    nn_net_init_params(net, &rng);
    const char *tmp = fuzz_path("ckpt.safetensors");
    for (int mode = 0; mode < FUZZ_CKPT_MODES; mode++) {
        static const char *names[] = {"weights", "sgd_resume", "adam_resume"};
        nn_optimizer *opt = NULL;
        nn_train_state st;
        memset(&st, 0, sizeof st);
        if (mode != FUZZ_CKPT_WEIGHTS) {
            nn_optim_config cfg =
                nn_optim_defaults(mode == FUZZ_CKPT_SGD ? NN_OPTIM_SGD : NN_OPTIM_ADAM);
            cfg.momentum = 0.9f;
            if (nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt) != NN_OK)
                fuzz_die("optimizer", nn_ctx_error(ctx));
            float *grads = nn_net_grads(net);
            for (size_t i = 0; i < nn_net_num_params(net); i++) grads[i] = 0.01f * (float)(i % 7);
            nn_optim_step(opt, ctx, nn_net_params(net), grads);
            st = (nn_train_state){.epoch = 1, .step = 1, .batch_in_epoch = 1, .loss_sum = 2.5,
                                  .seen = 4, .seed = 1, .rng = rng, .best_val = 1.5};
        }
        if (nn_checkpoint_save(ctx, tmp, net, opt, opt ? &st : NULL) != NN_OK)
            fuzz_die("checkpoint", nn_ctx_error(ctx));
        size_t size;
        char *file = read_all(tmp, &size);
        uint8_t mode_byte = (uint8_t)mode;
        write_parts(dir, names[mode], &mode_byte, 1, file, size, NULL, 0);
        free(file);
        nn_optim_free(opt);
    }
    remove(tmp);
    nn_net_free(net);
}

/* data[0..size) gzip-compressed into a new buffer. */
static uint8_t *gzip_bytes(const uint8_t *data, size_t size, size_t *out_size) {
    const char *tmp = fuzz_path("idx.gz");
    gzFile gz = gzopen(tmp, "wb9");
    if (!gz || gzwrite(gz, data, (unsigned)size) != (int)size || gzclose(gz) != Z_OK)
        fuzz_die("gzip", tmp);
    uint8_t *buf = (uint8_t *)read_all(tmp, out_size);
    remove(tmp);
    return buf;
}

static void idx_files(const char *dir) {
    /* 2 images of 3 x 2 pixels, labels 0 and 9 */
    static const uint8_t images[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2,
                                     0, 40, 80, 120, 160, 255, 255, 200, 150, 100, 50, 0};
    static const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 2, 0, 9};
    const char *split = FUZZ_IDX_SPLIT;
    size_t split_len = strlen(split);
    uint8_t without = 0, with = 1;
    size_t gi, gl;
    uint8_t *gz_images = gzip_bytes(images, sizeof images, &gi);
    uint8_t *gz_labels = gzip_bytes(labels, sizeof labels, &gl);
    write_parts(dir, "images_raw", &without, 1, images, sizeof images, NULL, 0);
    write_parts(dir, "images_gz", &without, 1, gz_images, gi, NULL, 0);
    char both[sizeof images + 16];
    memcpy(both, images, sizeof images);
    memcpy(both + sizeof images, split, split_len);
    write_parts(dir, "both_raw", &with, 1, both, sizeof images + split_len, labels, sizeof labels);
    uint8_t *gz_both = malloc(gi + split_len);
    memcpy(gz_both, gz_images, gi);
    memcpy(gz_both + gi, split, split_len);
    write_parts(dir, "both_gz", &with, 1, gz_both, gi + split_len, gz_labels, gl);
    free(gz_both);
    free(gz_images);
    free(gz_labels);
}

static void png_files(const char *dir) {
    static const struct {
        const char *name;
        png_uint_32 format;
    } kinds[] = {{"gray8.png", PNG_FORMAT_GRAY},
                 {"gray16.png", PNG_FORMAT_LINEAR_Y},
                 {"rgb8.png", PNG_FORMAT_RGB},
                 {"rgba8.png", PNG_FORMAT_RGBA},
                 {"palette.png", PNG_FORMAT_RGB_COLORMAP}};
    static const uint8_t colormap[] = {0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255};
    uint8_t pixels[4 * 3 * 2 * 2]; /* up to 4 channels of 16 bits, 3 x 2 pixels */
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 37);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        img.width = 3;
        img.height = 2;
        img.format = kinds[k].format;
        const void *cmap = NULL;
        if (img.format & PNG_FORMAT_FLAG_COLORMAP) {
            img.colormap_entries = 4;
            cmap = colormap;
            for (size_t i = 0; i < 6; i++) pixels[i] = (uint8_t)(i % 4);
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, kinds[k].name);
        if (!png_image_write_to_file(&img, path, 0, pixels, 0, cmap)) fuzz_die("png", img.message);
        printf("%s\n", path);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    char sub[1024];
    make_dir(argv[1], "checkpoint", sub, sizeof sub);
    checkpoints(sub);
    make_dir(argv[1], "idx", sub, sizeof sub);
    idx_files(sub);
    make_dir(argv[1], "png", sub, sizeof sub);
    png_files(sub);
    return 0;
}
