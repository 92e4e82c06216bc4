/*
 * fuzz_idx.c - libFuzzer harness of the IDX reader (nn_idx_load), raw and
 * gzip files alike. Input: a mode byte (bit 0: a labels file is given), the
 * images file, then FUZZ_IDX_SPLIT and the labels file (empty when absent).
 * A data set that loads must be consistent; a failure must leave a one-line
 * message naming the images or the labels file.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* First occurrence of needle (n bytes) in hay (size bytes), or NULL. */
static const uint8_t *find_bytes(const uint8_t *hay, size_t size, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return -1;
    int with_labels = data[0] & 1;
    data++;
    size--;
    size_t split_len = strlen(FUZZ_IDX_SPLIT);
    const uint8_t *split = find_bytes(data, size, FUZZ_IDX_SPLIT, split_len);
    size_t images_size = split ? (size_t)(split - data) : size;
    const uint8_t *labels = split ? split + split_len : data + size;
    size_t labels_size = (size_t)(data + size - labels);

    nn_ctx *ctx = fuzz_ctx();
    char images_path[512], labels_path[512];
    snprintf(images_path, sizeof images_path, "%s", fuzz_path("fuzz-images-idx3-ubyte"));
    snprintf(labels_path, sizeof labels_path, "%s", fuzz_path("fuzz-labels-idx1-ubyte"));
    fuzz_write(images_path, data, images_size);
    if (with_labels) fuzz_write(labels_path, labels, labels_size);

    nn_dataset d;
    nn_ctx_clear_error(ctx);
    if (nn_idx_load(ctx, images_path, with_labels ? labels_path : NULL, &d) != NN_OK) {
        const char *msg = nn_ctx_error(ctx);
        /* the message names whichever file is at fault */
        fuzz_check_message(msg, strstr(msg, images_path) || !with_labels ? images_path : labels_path);
        if (d.pixels || d.labels) fuzz_die("a failed load left data behind", msg);
        return 0;
    }
    if (d.n < 1 || d.c != 1 || d.h < 1 || d.w < 1 || !d.pixels || !d.labels)
        fuzz_die("inconsistent data set", images_path);
    for (int64_t i = 0; i < d.n; i++)
        if (d.labels[i] < 0 || (with_labels && d.labels[i] >= d.num_classes))
            fuzz_die("label out of range", labels_path);
    volatile uint8_t last = d.pixels[(size_t)d.n * (size_t)d.h * (size_t)d.w - 1];
    (void)last;
    nn_dataset_free(&d);
    return 0;
}
