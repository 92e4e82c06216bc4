/* png.c - PNG images as one-sample data sets, through libpng's simplified API
 * (any colour type and bit depth, converted to 8-bit grayscale). */
#include "nn_internal.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

nn_status nn_png_load(nn_ctx *ctx, const char *path, nn_dataset *out) {
    memset(out, 0, sizeof *out);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: not a readable PNG image (%s)", path, img.message);
    if (img.width < 1 || img.height < 1 || img.width > 4096 || img.height > 4096) {
        png_image_free(&img);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: %ux%u pixels; expected 1..4096 on each side", path,
                           (unsigned)img.width, (unsigned)img.height);
    }
    img.format = PNG_FORMAT_GRAY;
    uint8_t *pixels = malloc(PNG_IMAGE_SIZE(img));
    int32_t *labels = calloc(1, sizeof *labels);
    if (!pixels || !labels) {
        free(pixels);
        free(labels);
        png_image_free(&img);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    if (!png_image_finish_read(&img, NULL, pixels, 0, NULL)) {
        free(pixels);
        free(labels);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: bad PNG data (%s)", path, img.message);
    }
    out->n = 1;
    out->c = 1;
    out->h = (int)img.height;
    out->w = (int)img.width;
    out->pixels = pixels;
    out->labels = labels;
    return NN_OK;
}
