/*
 * fuzz_png.c - libFuzzer harness of the PNG reader (nn_png_load: libpng's
 * simplified API, any colour type and depth to 8-bit grayscale). An image
 * that loads must be one sample of the stated size; a failure must leave a
 * one-line message naming the file. libpng itself is Debian's, without
 * coverage feedback, so the harness gives every whole chunk its right CRC:
 * mutated chunks then reach libpng's parsers instead of its CRC check.
 */
#include "fuzz_common.h"

#include <zlib.h>

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Rewrites the CRC of each whole chunk after the 8-byte signature: length
 * (4), type (4), data (length), CRC over type and data (4). */
static void fix_crcs(uint8_t *png, size_t size) {
    size_t at = 8;
    while (at + 12 <= size) {
        uint32_t len = get_be32(png + at);
        if (len > size - at - 12) break;
        uint32_t crc = (uint32_t)crc32(0, png + at + 4, len + 4);
        uint8_t *c = png + at + 8 + len;
        c[0] = (uint8_t)(crc >> 24);
        c[1] = (uint8_t)(crc >> 16);
        c[2] = (uint8_t)(crc >> 8);
        c[3] = (uint8_t)crc;
        at += 12 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nn_ctx *ctx = fuzz_ctx();
    const char *path = fuzz_path("image.png");
    uint8_t *png = malloc(size ? size : 1);
    if (!png) fuzz_die("out of memory", path);
    memcpy(png, data, size);
    fix_crcs(png, size);
    fuzz_write(path, png, size);
    free(png);
    nn_dataset d;
    nn_ctx_clear_error(ctx);
    if (nn_png_load(ctx, path, &d) != NN_OK) {
        fuzz_check_message(nn_ctx_error(ctx), path);
        if (d.pixels || d.labels) fuzz_die("a failed load left data behind", path);
        return 0;
    }
    if (d.n != 1 || d.c != 1 || d.h < 1 || d.h > 4096 || d.w < 1 || d.w > 4096 || !d.pixels ||
        !d.labels)
        fuzz_die("inconsistent image", path);
    volatile uint8_t last = d.pixels[(size_t)d.h * (size_t)d.w - 1];
    (void)last;
    nn_dataset_free(&d);
    return 0;
}
