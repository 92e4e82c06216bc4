/* png.c - PNG images as one-sample data sets, through libpng's simplified API
 * (any colour type and bit depth, converted to 8-bit grayscale). The file is
 * read into memory and its chunk lengths checked against its size first:
 * Debian's libpng allocates what an ancillary chunk claims before reading it
 * (a 102-byte file asked for 1.4 GB). */
#include "nn_internal.h"

#include <errno.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger than any 4096 x 4096 image, even stored uncompressed at 16 bits RGBA. */
#define PNG_MAX_FILE ((size_t)256 << 20)

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads the whole file into *buf (*size bytes). */
static nn_status read_file(nn_ctx *ctx, const char *path, uint8_t **buf, size_t *size) {
    *buf = NULL;
    const char *why;
    int fd = nn_open_regular(path, &why); /* a FIFO would block a plain open */
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) why = strerror(errno), close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open: %s", path, why);
    }
    struct stat sb;
    nn_status st = NN_OK;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        st = nn_ctx_fail(ctx, NN_EIO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > PNG_MAX_FILE)
        st = nn_ctx_fail(ctx, NN_EFORMAT, "%s: %lld bytes; a PNG image here is at most %zu",
                         path, (long long)sb.st_size, PNG_MAX_FILE);
    else if (!(*buf = malloc(sb.st_size ? (size_t)sb.st_size : 1)))
        st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    else if (fread(*buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
        st = nn_ctx_fail(ctx, NN_EIO, "%s: read error", path);
    fclose(f);
    if (st != NN_OK) {
        free(*buf);
        *buf = NULL;
    }
    *size = (size_t)sb.st_size;
    return st;
}

/* Every chunk (length, type, data, CRC) up to IEND must lie inside the file. */
static nn_status check_chunks(nn_ctx *ctx, const char *path, const uint8_t *png, size_t size) {
    if (size < 8 || png_sig_cmp(png, 0, 8) != 0)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: not a PNG image (no PNG signature)", path);
    for (size_t at = 8; at + 8 <= size;) {
        uint32_t len = be32(png + at);
        if (len > size - at - 8 || size - at - 8 - len < 4)
            return nn_ctx_fail(ctx, NN_EFORMAT,
                               "%s: truncated PNG: chunk at byte %zu claims %u bytes, %zu remain",
                               path, at, (unsigned)len, size - at - 8);
        if (memcmp(png + at + 4, "IEND", 4) == 0) break;
        at += 12 + (size_t)len;
    }
    return NN_OK;
}

nn_status nn_png_load(nn_ctx *ctx, const char *path, nn_dataset *out) {
    memset(out, 0, sizeof *out);
    uint8_t *file = NULL;
    size_t file_size = 0;
    nn_status st = read_file(ctx, path, &file, &file_size);
    if (st != NN_OK) return st;
    if ((st = check_chunks(ctx, path, file, file_size)) != NN_OK) {
        free(file);
        return st;
    }
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    int ok = png_image_begin_read_from_memory(&img, file, file_size);
    if (!ok) {
        free(file);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: not a readable PNG image (%s)", path, img.message);
    }
    if (img.width < 1 || img.height < 1 || img.width > 4096 || img.height > 4096) {
        png_image_free(&img);
        free(file);
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
        free(file);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    ok = png_image_finish_read(&img, NULL, pixels, 0, NULL); /* frees img either way */
    free(file);
    if (!ok) {
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
