/*
 * idx.c - reads IDX image/label files (the MNIST / Fashion-MNIST format) into an
 * nn_dataset. Files go through zlib's gzopen/gzread, which reads gzip and raw
 * files alike. Nothing in a header is trusted: magic, dimensions and the exact
 * byte count (no more, no less) are checked, and every error names the file.
 *
 * The stated size is checked against what the file can hold before a buffer
 * is sized for it (check_size), so a small gzip file of zeros under a header
 * that claims more fails at once.
 *
 * Layout (all integers big-endian uint32):
 *   images: magic 0x00000803, n, rows, cols, then n*rows*cols pixel bytes
 *   labels: magic 0x00000801, n, then n label bytes
 */
#include "nn_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_ITEMS 100000000u
#define IDX_MAX_SIDE 4096u

/* gzread takes an unsigned int length; read in chunks well below that. */
#define IDX_READ_CHUNK ((size_t)1 << 24)
/* The payload buffer starts at most this big and doubles up to the stated size,
 * so a header that claims terabytes in a small file ends in "truncated", not in
 * a huge allocation. */
#define IDX_INITIAL_ALLOC ((size_t)1 << 24)

/* Deflate turns at most 1032 bytes into one (258-byte matches in 2 bits):
 * a gzip file of S bytes holds at most 1032 * S bytes of data. */
#define GZIP_MAX_RATIO 1032u

typedef struct {
    nn_ctx *ctx;
    const char *path;
    gzFile f;
    uint64_t file_size;  /* bytes on disk */
    int gzip;            /* starts with the gzip magic 1f 8b */
    uint32_t isize;      /* gzip: the trailer's size of the data, mod 2^32 */
} idx_reader;

/* zlib's messages start with "<path>: "; ours already do, so drop that part. */
static const char *gz_message(const idx_reader *r, int *errnum) {
    const char *msg = gzerror(r->f, errnum);
    size_t len = strlen(r->path);
    if (msg && strncmp(msg, r->path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ')
        msg += len + 2;
    return msg ? msg : "unknown error";
}

/* Reports a failed gzread (it returned -1). */
static nn_status gz_fail(const idx_reader *r) {
    int errnum = Z_OK;
    int saved_errno = errno;
    const char *msg = gz_message(r, &errnum);
    if (errnum == Z_ERRNO)
        return nn_ctx_fail(r->ctx, NN_EIO, "%s: read error: %s", r->path,
                           strerror(saved_errno));
    if (errnum == Z_MEM_ERROR)
        return nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory in zlib", r->path);
    return nn_ctx_fail(r->ctx, NN_EFORMAT, "%s: corrupt gzip data: %s", r->path, msg);
}

/* Reads up to len bytes into buf; *got < len only at the end of the data. */
static nn_status read_some(const idx_reader *r, uint8_t *buf, size_t len, size_t *got) {
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        if (want > IDX_READ_CHUNK) want = IDX_READ_CHUNK;
        int n = gzread(r->f, buf + *got, (unsigned)want);
        if (n < 0) return gz_fail(r);
        if (n == 0) break;
        *got += (size_t)n;
    }
    return NN_OK;
}

/* Message for a short read: a gzip stream cut short says so. */
static nn_status truncated(const idx_reader *r, size_t expected, size_t got,
                           const char *what) {
    int errnum = Z_OK;
    gz_message(r, &errnum);
    return nn_ctx_fail(r->ctx, NN_EFORMAT, "%s: truncated%s: expected %zu bytes of %s, got %zu",
                       r->path, errnum == Z_BUF_ERROR ? " gzip stream" : "", expected, what,
                       got);
}

static nn_status read_exact(const idx_reader *r, uint8_t *buf, size_t len, const char *what) {
    size_t got;
    nn_status st = read_some(r, buf, len, &got);
    if (st != NN_OK) return st;
    if (got < len) return truncated(r, len, got, what);
    return NN_OK;
}

/* Reads exactly total bytes into a new malloc'ed buffer (*out), growing it as
 * data actually arrives. */
static nn_status read_payload(const idx_reader *r, size_t total, const char *what,
                              uint8_t **out) {
    size_t cap = total < IDX_INITIAL_ALLOC ? total : IDX_INITIAL_ALLOC;
    size_t got = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    *out = NULL;
    if (!buf)
        return nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory for %zu bytes of %s",
                           r->path, cap, what);
    while (got < total) {
        if (got == cap) {
            size_t ncap = cap > total / 2 ? total : cap * 2;
            uint8_t *nbuf = realloc(buf, ncap);
            if (!nbuf) {
                free(buf);
                return nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory for %zu bytes of %s",
                                   r->path, ncap, what);
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t n;
        nn_status st = read_some(r, buf + got, cap - got, &n);
        if (st != NN_OK) {
            free(buf);
            return st;
        }
        got += n;
        if (got < cap) break; /* end of data */
    }
    if (got < total) {
        nn_status st = truncated(r, total, got, what);
        free(buf);
        return st;
    }
    *out = buf;
    return NN_OK;
}

/* Whether the file can hold the total bytes of data the header states after
 * its hdr bytes, checked before any buffer is sized for them: a raw file by
 * its size; a gzip file by deflate's largest ratio, then by the size its
 * trailer states (mod 2^32), and when that disagrees (a cut file, or several
 * gzip members) by decompressing up to total bytes into a small buffer and
 * starting again. So a small file of zeros under a header that claims more
 * ends in "truncated" without first growing a buffer to all it holds. */
static nn_status check_size(const idx_reader *r, uint64_t hdr, uint64_t total,
                            const char *what) {
    if (!r->gzip) {
        uint64_t have = r->file_size - hdr; /* the header was read: size >= hdr */
        return have < total ? truncated(r, (size_t)total, (size_t)have, what) : NN_OK;
    }
    if (hdr + total > r->file_size * GZIP_MAX_RATIO)
        return nn_ctx_fail(r->ctx, NN_EFORMAT, "%s: truncated: the header states %llu bytes of "
                           "%s, more than a %llu-byte gzip file can hold", r->path,
                           (unsigned long long)total, what, (unsigned long long)r->file_size);
    if ((uint32_t)(hdr + total) == r->isize) return NN_OK;
    const size_t chunk = (size_t)1 << 16;
    uint8_t *scratch = malloc(chunk);
    if (!scratch) return nn_ctx_fail(r->ctx, NN_ENOMEM, "%s: out of memory", r->path);
    uint64_t got = 0;
    nn_status st = NN_OK;
    while (got < total) {
        size_t want = total - got < chunk ? (size_t)(total - got) : chunk, n;
        if ((st = read_some(r, scratch, want, &n)) != NN_OK) break;
        got += n;
        if (n < want) break;
    }
    free(scratch);
    if (st == NN_OK && got < total) st = truncated(r, (size_t)total, (size_t)got, what);
    if (st == NN_OK && gzseek(r->f, (z_off_t)hdr, SEEK_SET) != (z_off_t)hdr)
        st = gz_fail(r);
    return st;
}

/* After the stated data the file must end. Reading one more byte also makes
 * zlib reach the gzip trailer, so a bad CRC or a cut-off trailer shows here. */
static nn_status check_end(const idx_reader *r, uint64_t items, const char *what) {
    uint8_t extra;
    int n = gzread(r->f, &extra, 1);
    if (n < 0) return gz_fail(r);
    if (n > 0)
        return nn_ctx_fail(r->ctx, NN_EFORMAT,
                           "%s: unexpected data after the %llu %s the header states",
                           r->path, (unsigned long long)items, what);
    int errnum = Z_OK;
    const char *msg = gz_message(r, &errnum);
    if (errnum == Z_BUF_ERROR)
        return nn_ctx_fail(r->ctx, NN_EFORMAT, "%s: truncated gzip stream: %s", r->path, msg);
    if (errnum != Z_OK)
        return nn_ctx_fail(r->ctx, NN_EFORMAT, "%s: corrupt gzip data: %s", r->path, msg);
    return NN_OK;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static nn_status open_idx(nn_ctx *ctx, const char *path, idx_reader *r) {
    r->ctx = ctx;
    r->path = path;
    const char *why;
    int fd = nn_open_regular(path, &why);
    if (fd < 0) return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open: %s", path, why);
    /* size, gzip magic and trailer, for check_size */
    struct stat sb;
    uint8_t magic[2] = {0}, tail[4] = {0};
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    r->file_size = (uint64_t)sb.st_size;
    r->gzip = pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    r->isize = 0;
    if (r->gzip && r->file_size >= 18 && pread(fd, tail, 4, (off_t)r->file_size - 4) == 4)
        r->isize = (uint32_t)tail[0] | (uint32_t)tail[1] << 8 | (uint32_t)tail[2] << 16 |
                   (uint32_t)tail[3] << 24;
    errno = 0;
    r->f = gzdopen(fd, "rb");
    if (!r->f) {
        int e = errno;
        close(fd);
        if (e == 0) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: cannot open: out of memory", path);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    gzbuffer(r->f, 1u << 17);
    return NN_OK;
}

/* Reads the magic and checks it; ndims big-endian dims follow in hdr. */
static nn_status read_header(const idx_reader *r, uint32_t magic, const char *kind,
                             uint8_t *hdr, size_t hdr_len) {
    nn_status st = read_exact(r, hdr, 4, "magic number");
    if (st != NN_OK) return st;
    uint32_t found = be32(hdr);
    if (found != magic) {
        const char *hint = "";
        if (found == IDX_MAGIC_IMAGES) hint = " (an IDX images file)";
        else if (found == IDX_MAGIC_LABELS) hint = " (an IDX labels file)";
        return nn_ctx_fail(r->ctx, NN_EFORMAT,
                           "%s: bad magic: expected 0x%08X (IDX %s), found 0x%08X%s", r->path,
                           (unsigned)magic, kind, (unsigned)found, hint);
    }
    return read_exact(r, hdr + 4, hdr_len - 4, "header");
}

static nn_status load_images(nn_ctx *ctx, const char *path, nn_dataset *d) {
    idx_reader r;
    nn_status st = open_idx(ctx, path, &r);
    if (st != NN_OK) return st;
    uint8_t hdr[16];
    st = read_header(&r, IDX_MAGIC_IMAGES, "images", hdr, sizeof hdr);
    if (st == NN_OK) {
        uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
        if (n < 1 || n > IDX_MAX_ITEMS || rows < 1 || rows > IDX_MAX_SIDE || cols < 1 ||
            cols > IDX_MAX_SIDE) {
            st = nn_ctx_fail(ctx, NN_EFORMAT,
                             "%s: bad dimensions: expected 1..%u images of 1..%u x 1..%u "
                             "pixels, found %u images of %u x %u",
                             path, IDX_MAX_ITEMS, IDX_MAX_SIDE, IDX_MAX_SIDE, (unsigned)n,
                             (unsigned)rows, (unsigned)cols);
        } else {
            /* n * rows * cols <= 1e8 * 4096^2 < 2^51: fits in 64 bits */
            uint64_t bytes = (uint64_t)n * rows * cols;
            if (bytes > SIZE_MAX)
                st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: %llu bytes of pixel data do not fit in "
                                 "memory", path, (unsigned long long)bytes);
            else
                st = check_size(&r, sizeof hdr, bytes, "pixel data");
            if (st == NN_OK) st = read_payload(&r, (size_t)bytes, "pixel data", &d->pixels);
            if (st == NN_OK) st = check_end(&r, n, "images");
            if (st == NN_OK) {
                d->n = n;
                d->c = 1;
                d->h = (int)rows;
                d->w = (int)cols;
            }
        }
    }
    gzclose(r.f);
    return st;
}

static nn_status load_labels(nn_ctx *ctx, const char *path, nn_dataset *d, int64_t *count) {
    idx_reader r;
    nn_status st = open_idx(ctx, path, &r);
    if (st != NN_OK) return st;
    uint8_t hdr[8];
    uint8_t *bytes = NULL;
    st = read_header(&r, IDX_MAGIC_LABELS, "labels", hdr, sizeof hdr);
    if (st == NN_OK) {
        uint32_t n = be32(hdr + 4);
        if (n < 1 || n > IDX_MAX_ITEMS)
            st = nn_ctx_fail(ctx, NN_EFORMAT, "%s: bad label count: expected 1..%u, found %u",
                             path, IDX_MAX_ITEMS, (unsigned)n);
        if (st == NN_OK) st = check_size(&r, sizeof hdr, n, "label data");
        if (st == NN_OK) st = read_payload(&r, n, "label data", &bytes);
        if (st == NN_OK) st = check_end(&r, n, "labels");
        if (st == NN_OK) {
            d->labels = malloc((size_t)n * sizeof *d->labels);
            if (!d->labels)
                st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for %u labels", path,
                                 (unsigned)n);
        }
        if (st == NN_OK) {
            int max = 0;
            for (uint32_t i = 0; i < n; i++) {
                d->labels[i] = bytes[i];
                if (bytes[i] > max) max = bytes[i];
            }
            d->num_classes = max + 1;
            *count = n;
        }
    }
    free(bytes);
    gzclose(r.f);
    return st;
}

nn_status nn_idx_load(nn_ctx *ctx, const char *images_path, const char *labels_path,
                      nn_dataset *out) {
    nn_dataset d;
    memset(&d, 0, sizeof d);
    memset(out, 0, sizeof *out);
    if (!images_path)
        return nn_ctx_fail(ctx, NN_EINVAL, "nn_idx_load: an images path is required");
    nn_status st = load_images(ctx, images_path, &d);
    int64_t n_labels = 0;
    if (st == NN_OK && !labels_path) { /* images only (prediction): labels 0 */
        d.labels = calloc((size_t)d.n, sizeof *d.labels);
        n_labels = d.n;
        if (!d.labels) st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", images_path);
    } else if (st == NN_OK) {
        st = load_labels(ctx, labels_path, &d, &n_labels);
    }
    if (st == NN_OK && n_labels != d.n)
        st = nn_ctx_fail(ctx, NN_EFORMAT, "%s holds %lld images but %s holds %lld labels",
                         images_path, (long long)d.n, labels_path, (long long)n_labels);
    if (st != NN_OK) {
        free(d.pixels);
        free(d.labels);
        return st;
    }
    *out = d;
    return NN_OK;
}

/* "<dir>/<prefix>-<kind>" (no doubled slash) in a new buffer, room left for ".gz". */
static char *idx_path(const char *dir, const char *prefix, const char *kind) {
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    size_t len = dl + strlen(sep) + strlen(prefix) + 1 + strlen(kind) + sizeof ".gz";
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s%s%s-%s", dir, sep, prefix, kind);
    return p;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Picks path.gz if present, else path; *path is left as chosen. */
static nn_status pick_file(nn_ctx *ctx, char *path) {
    size_t len = strlen(path);
    memcpy(path + len, ".gz", sizeof ".gz");
    if (file_exists(path)) return NN_OK;
    path[len] = '\0';
    if (file_exists(path)) return NN_OK;
    return nn_ctx_fail(ctx, NN_EIO, "%s[.gz]: no such file", path);
}

nn_status nn_dataset_load_dir(nn_ctx *ctx, const char *dir, const char *prefix,
                              nn_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!dir || !prefix)
        return nn_ctx_fail(ctx, NN_EINVAL, "nn_dataset_load_dir: dir and prefix are required");
    char *images = idx_path(dir, prefix, "images-idx3-ubyte");
    char *labels = idx_path(dir, prefix, "labels-idx1-ubyte");
    if (!images || !labels) {
        free(images);
        free(labels);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for file names", dir);
    }
    nn_status st = pick_file(ctx, images);
    if (st == NN_OK) st = pick_file(ctx, labels);
    if (st == NN_OK) st = nn_idx_load(ctx, images, labels, out);
    free(images);
    free(labels);
    return st;
}
