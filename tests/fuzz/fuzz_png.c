/*
 * fuzz_png.c - libFuzzer harness of the PNG reader (nn_png_load: libpng's
 * simplified API, any colour type and depth to 8-bit grayscale). An image
 * that loads must be one sample of the stated size; a failure must leave a
 * one-line message naming the file.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nn_ctx *ctx = fuzz_ctx();
    const char *path = fuzz_path("image.png");
    fuzz_write(path, data, size);
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
