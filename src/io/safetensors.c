/*
 * safetensors.c - reader and writer for the safetensors format
 * (https://github.com/huggingface/safetensors).
 *
 * Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {"k": "v", ...},
 *    "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its first byte.
 *
 * nnopt computes in float32 only. The reader also takes the dtypes a PyTorch
 * state_dict saved with safetensors.torch.save_file holds (F16, BF16 and F64
 * weights, I64 counters such as batch norm's num_batches_tracked; I32 too) and
 * converts them to float32 on load. The writer writes F32, and I64 for the
 * tensors its caller marks so (PyTorch's int64 buffers).
 *
 * The reader treats the file as untrusted: every size and offset is checked
 * before it is used, and every error is one line "<path>: <problem>".
 */
#include "nn_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "safetensors.c writes and reads float32 data in host order, which must be little-endian"
#endif

/* The reference implementation refuses headers above 100 MB as well. */
#define ST_MAX_HEADER 100000000ULL
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0 /* 2^53 */
#define ST_NAME_MAX ((int)sizeof(((nn_st_tensor *)0)->name))

struct nn_st_file {
    int count;
    nn_st_tensor *tensors;   /* (count) */
    unsigned char *data;     /* the data section, 64-byte aligned */
    int64_t *offsets;        /* (count) byte offset of each tensor in data */
    float **copies;          /* (count) float32 copy when the dtype is not F32 or the
                                offset not float-aligned; else NULL */
    int meta_count;
    char **meta;             /* (2 * meta_count): key, value, key, value, ... */
};

/* name and bytes per element of each nn_st_dtype, in enum order */
static const struct {
    const char *name;
    int size;
} st_dtypes[NN_ST_NUM_DTYPES] = {
    [NN_ST_F32] = {"F32", 4}, [NN_ST_F16] = {"F16", 2}, [NN_ST_BF16] = {"BF16", 2},
    [NN_ST_F64] = {"F64", 8}, [NN_ST_I32] = {"I32", 4}, [NN_ST_I64] = {"I64", 8},
};

const char *nn_st_dtype_name(nn_st_dtype dtype) {
    if ((int)dtype < 0 || dtype >= NN_ST_NUM_DTYPES) return NULL;
    return st_dtypes[dtype].name;
}

/* ------------------------------------------------------------------ writer */

/* A growable byte buffer for the JSON header. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_printf(st_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    NN_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    buf_put(b, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped; other
 * bytes (UTF-8 included) pass through. */
static void buf_json_str(st_buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_put(b, esc, 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_put(b, (const char *)&c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

static nn_status check_write_args(nn_ctx *ctx, const char *path, const nn_st_tensor *t,
                                  int count, const char *const *mk, const char *const *mv,
                                  int meta_count) {
    if (count < 0 || meta_count < 0 || (count > 0 && !t) ||
        (meta_count > 0 && (!mk || !mv)))
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: bad tensor or metadata count", path);
    for (int i = 0; i < count; i++) {
        size_t len = strnlen(t[i].name, ST_NAME_MAX);
        if (len == 0 || len >= (size_t)ST_NAME_MAX)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor %d has an empty or unterminated name",
                               path, i);
        if (strcmp(t[i].name, "__metadata__") == 0)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: '__metadata__' is not a tensor name", path);
        if (t[i].shape.ndim < 0 || t[i].shape.ndim > NN_MAX_DIMS)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s' has %d dimensions (max %d)",
                               path, t[i].name, t[i].shape.ndim, NN_MAX_DIMS);
        for (int d = 0; d < t[i].shape.ndim; d++)
            if (t[i].shape.dim[d] < 0)
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s' has a negative dimension",
                                   path, t[i].name);
        if (nn_shape_numel(&t[i].shape) > 0 && !t[i].data)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s' has no data", path, t[i].name);
        if (t[i].dtype != NN_ST_F32 && t[i].dtype != NN_ST_I64)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s': cannot write dtype %s (only F32 "
                               "and I64)", path, t[i].name,
                               nn_st_dtype_name(t[i].dtype) ? nn_st_dtype_name(t[i].dtype) : "?");
        if (t[i].dtype == NN_ST_I64) {
            int64_t n = nn_shape_numel(&t[i].shape);
            for (int64_t k = 0; k < n; k++) {
                float v = t[i].data[k];
                /* -2^63 and 2^63 are exact in float32; NaN fails both compares */
                if (!(v >= -0x1p63f && v < 0x1p63f) || floorf(v) != v)
                    return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s' element %lld is %.9g, "
                                       "not an integer an I64 holds", path, t[i].name,
                                       (long long)k, (double)v);
            }
        }
        /* the count is small (one entry per parameter), so a quadratic scan is fine */
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: tensor '%s' given twice", path,
                                   t[i].name);
    }
    for (int i = 0; i < meta_count; i++)
        if (!mk[i] || !mv[i])
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: metadata entry %d is NULL", path, i);
    return NN_OK;
}

/* Builds the header JSON padded with spaces so that 8 + length is a multiple of
 * 8 and the data section starts 8-byte aligned. */
static nn_status build_header(nn_ctx *ctx, const char *path, const nn_st_tensor *t, int count,
                              const char *const *mk, const char *const *mv, int meta_count,
                              st_buf *b) {
    buf_puts(b, "{");
    int first = 1;
    if (meta_count > 0) {
        buf_puts(b, "\"__metadata__\":{");
        for (int i = 0; i < meta_count; i++) {
            if (i) buf_puts(b, ",");
            buf_json_str(b, mk[i]);
            buf_puts(b, ":");
            buf_json_str(b, mv[i]);
        }
        buf_puts(b, "}");
        first = 0;
    }
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        if (!first) buf_puts(b, ",");
        first = 0;
        buf_json_str(b, t[i].name);
        buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtypes[t[i].dtype].name);
        for (int d = 0; d < t[i].shape.ndim; d++)
            buf_printf(b, d ? ",%lld" : "%lld", (long long)t[i].shape.dim[d]);
        uint64_t bytes = (uint64_t)nn_shape_numel(&t[i].shape) * (uint64_t)st_dtypes[t[i].dtype].size;
        buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                   (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    buf_puts(b, "}");
    while (!b->oom && (8 + b->len) % 8 != 0) buf_puts(b, " ");
    if (b->oom) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory building the header", path);
    return NN_OK;
}

/* Writes n float values, integers checked by check_write_args, as
 * little-endian int64; 1 on success. */
static int write_i64(FILE *f, const float *x, size_t n) {
    int64_t chunk[256];
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 256 ? n - i : 256;
        for (size_t k = 0; k < m; k++) chunk[k] = (int64_t)x[i + k];
        if (fwrite(chunk, sizeof(int64_t), m, f) != m) return 0;
        i += m;
    }
    return 1;
}

static void remove_stale_temps(const char *path);

/* "dir/name" -> "dir", "name" -> ".", "/name" -> "/". Caller frees. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

nn_status nn_safetensors_write(nn_ctx *ctx, const char *path, const nn_st_tensor *tensors,
                               int count, const char *const *meta_keys,
                               const char *const *meta_vals, int meta_count) {
    nn_status s = check_write_args(ctx, path, tensors, count, meta_keys, meta_vals, meta_count);
    if (s != NN_OK) return s;

    st_buf hdr = {0};
    s = build_header(ctx, path, tensors, count, meta_keys, meta_vals, meta_count, &hdr);
    if (s != NN_OK) {
        free(hdr.p);
        return s;
    }

    size_t tmp_size = strlen(path) + 32;
    char *tmp = malloc(tmp_size);
    if (!tmp) {
        free(hdr.p);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());

    const char *what = NULL;
    int err = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        what = "cannot create temporary file";
        err = errno;
        goto fail;
    }
    errno = 0; /* a short fwrite need not set it */
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(hdr.p, 1, hdr.len, f) != hdr.len) {
        what = "write failed";
        err = errno;
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        size_t n = (size_t)nn_shape_numel(&tensors[i].shape);
        int ok = tensors[i].dtype == NN_ST_I64
                     ? write_i64(f, tensors[i].data, n)
                     : n == 0 || fwrite(tensors[i].data, sizeof(float), n, f) == n;
        if (!ok) {
            what = "write failed";
            err = errno;
            goto fail;
        }
    }
    if (fflush(f) != 0) {
        what = "write failed";
        err = errno;
        goto fail;
    }
    if (fsync(fileno(f)) != 0) {
        what = "fsync failed";
        err = errno;
        goto fail;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) {
        what = "close failed";
        err = errno;
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        what = "rename failed";
        err = errno;
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    remove_stale_temps(path);

    /* Make the rename itself durable. Some file systems cannot fsync a
     * directory (EINVAL); the data is already safe there. A failure here is
     * reported although the new file is already in place. */
    char *dir = dir_of(path);
    if (!dir) {
        what = "cannot sync directory";
        err = ENOMEM;
    } else {
        int fd = open(dir, O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            what = "cannot open directory to sync it";
            err = errno;
        } else {
            if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
                what = "directory fsync failed";
                err = errno;
            }
            close(fd);
        }
        free(dir);
    }
    free(hdr.p);
    if (what)
        return nn_ctx_fail(ctx, NN_EIO, "%s: %s: %s", path, what, strerror(err));
    return NN_OK;

fail:
    if (f) fclose(f);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(hdr.p);
    return nn_ctx_fail(ctx, NN_EIO, "%s: %s: %s", path, what, err ? strerror(err) : "short write");
}

/* Removes "<path>.tmp.<pid>" files left by writers that were killed mid-write
 * (their pid no longer exists), so crashes do not pile up temporary files. */
static void remove_stale_temps(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            const char *n = e->d_name;
            if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0) continue;
            const char *digits = n + blen + 5;
            char *end;
            long pid = strtol(digits, &end, 10);
            if (end == digits || *end || pid <= 0 || pid == (long)getpid()) continue;
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* writer still alive */
            size_t len = strlen(dir) + strlen(n) + 2;
            char *full = malloc(len);
            if (!full) break;
            snprintf(full, len, "%s/%s", dir, n);
            unlink(full);
            free(full);
        }
        closedir(d);
    }
    free(dir);
}

/* ------------------------------------------------------------------ reader */

void nn_safetensors_close(nn_st_file *f) {
    if (!f) return;
    if (f->copies)
        for (int i = 0; i < f->count; i++) nn_free_aligned(f->copies[i]);
    free(f->copies);
    free(f->offsets);
    free(f->tensors);
    nn_free_aligned(f->data);
    if (f->meta)
        for (int i = 0; i < 2 * f->meta_count; i++) free(f->meta[i]);
    free(f->meta);
    free(f);
}

int nn_safetensors_count(const nn_st_file *f) { return f->count; }

const nn_st_tensor *nn_safetensors_get(const nn_st_file *f, int i) {
    NN_ASSERT(i >= 0 && i < f->count);
    return &f->tensors[i];
}

const nn_st_tensor *nn_safetensors_find(const nn_st_file *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *nn_safetensors_meta(const nn_st_file *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* A JSON number that is a non-negative integer an int64 and a double hold exactly. */
static int json_uint(const cJSON *item, int64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v > ST_MAX_JSON_INT || v != floor(v)) return 0;
    *out = (int64_t)v;
    return 1;
}

typedef struct {
    int64_t begin, end;
    int index;
} st_range;

static int range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Some string that occurs twice among names[0..n) (sorted in place), or NULL. */
static const char *find_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, str_cmp);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* The nn_st_dtype named s, or -1. */
static int find_dtype(const char *s) {
    for (int i = 0; i < NN_ST_NUM_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) return i;
    return -1;
}

/* Dtype names of the safetensors spec that nnopt does not read: valid files
 * this build cannot use. */
static int other_spec_dtype(const char *s) {
    static const char *const names[] = {"BOOL", "U8", "I8", "I16", "U16", "U32", "U64",
                                        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                                        "F6_E3M2", "C64"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

/* Parses one tensor entry into t and its byte range into r. name is the JSON
 * key, already checked for length. */
static nn_status parse_entry(nn_ctx *ctx, const char *path, const cJSON *e, uint64_t data_size,
                             nn_st_tensor *t, st_range *r) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' is not a JSON object", path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dtype))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' has no dtype string", path, name);
    int dt = find_dtype(dtype->valuestring);
    if (dt < 0) {
        if (other_spec_dtype(dtype->valuestring))
            return nn_ctx_fail(ctx, NN_EUNSUPPORTED,
                               "%s: tensor '%s' has dtype %s; nnopt reads F32, F16, BF16, F64, "
                               "I32 and I64", path, name, dtype->valuestring);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' has unknown dtype '%.32s'", path,
                           name, dtype->valuestring);
    }
    const int64_t esize = st_dtypes[dt].size;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' has no shape array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NN_MAX_DIMS)
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' has %d dimensions (max %d)", path,
                           name, ndim, NN_MAX_DIMS);
    t->shape.ndim = ndim;
    /* dims are < 2^53 each; the product is checked before every multiply so
     * that numel * esize, and numel floats once converted, fit an int64 */
    int64_t numel = 1, max_numel = INT64_MAX / 8;
    int too_big = 0, d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        int64_t v;
        if (!json_uint(dim, &v))
            return nn_ctx_fail(ctx, NN_EFORMAT,
                               "%s: tensor '%s' shape entry %d is not a non-negative integer",
                               path, name, d);
        t->shape.dim[d++] = v;
    }
    for (d = 0; d < ndim; d++) {
        int64_t v = t->shape.dim[d];
        if (v == 0) {
            numel = 0, too_big = 0;
            break;
        }
        if (too_big || numel > max_numel / v) too_big = 1;
        else numel *= v;
    }

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    int64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &end))
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: tensor '%s' data_offsets is not [begin, end] of non-negative "
                           "integers",
                           path, name);
    if (begin > end)
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: tensor '%s' data_offsets [%lld,%lld] begin after their end", path,
                           name, (long long)begin, (long long)end);
    if ((uint64_t)end > data_size)
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: tensor '%s' data_offsets [%lld,%lld] exceed the data section "
                           "(%llu bytes)",
                           path, name, (long long)begin, (long long)end,
                           (unsigned long long)data_size);
    char sbuf[96];
    nn_shape_str(&t->shape, sbuf, sizeof sbuf);
    if (too_big)
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: tensor '%s' shape [%s] has too many elements", path,
                           name, sbuf);
    if (end - begin != numel * esize)
        return nn_ctx_fail(ctx, NN_EFORMAT,
                           "%s: tensor '%s' data_offsets [%lld,%lld] hold %lld bytes but shape "
                           "[%s] of %s needs %lld",
                           path, name, (long long)begin, (long long)end,
                           (long long)(end - begin), sbuf, st_dtypes[dt].name,
                           (long long)(numel * esize));

    strcpy(t->name, name);
    t->dtype = (nn_st_dtype)dt;
    r->begin = begin;
    r->end = end;
    return NN_OK;
}

static nn_status parse_metadata(nn_ctx *ctx, const char *path, const cJSON *m, nn_st_file *f) {
    if (!cJSON_IsObject(m))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: __metadata__ is not a JSON object", path);
    int n = cJSON_GetArraySize(m);
    f->meta = calloc((size_t)n * 2 + 1, sizeof *f->meta);
    if (!f->meta) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        if (!cJSON_IsString(kv))
            return nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%.64s' is not a string", path,
                               kv->string);
        char *k = strdup(kv->string), *v = strdup(kv->valuestring);
        f->meta[2 * f->meta_count] = k;
        f->meta[2 * f->meta_count + 1] = v;
        f->meta_count++;
        if (!k || !v) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    const char **keys = malloc(((size_t)n + 1) * sizeof *keys);
    if (!keys) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) keys[i] = f->meta[2 * i];
    const char *dup = find_duplicate(keys, n);
    nn_status s = NN_OK;
    if (dup) s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: metadata '%.64s' appears twice", path, dup);
    free(keys);
    return s;
}

/* Validates the parsed header against a data section of data_size bytes and
 * fills f's tensor table (names, shapes, offsets) and metadata. */
static nn_status parse_header(nn_ctx *ctx, const char *path, const cJSON *root,
                              uint64_t data_size, nn_st_file *f) {
    if (!cJSON_IsObject(root))
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: header is not a JSON object", path);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (f->meta)
                return nn_ctx_fail(ctx, NN_EFORMAT, "%s: __metadata__ appears twice", path);
            nn_status s = parse_metadata(ctx, path, e, f);
            if (s != NN_OK) return s;
        } else {
            n++;
        }
    }

    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    f->offsets = calloc((size_t)n + 1, sizeof *f->offsets);
    f->copies = calloc((size_t)n + 1, sizeof *f->copies);
    st_range *ranges = calloc((size_t)n + 1, sizeof *ranges);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    nn_status s = NN_OK;
    if (!f->tensors || !f->offsets || !f->copies || !ranges || !names) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for %d tensors", path, n);
        goto done;
    }
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        if (strlen(e->string) >= (size_t)ST_NAME_MAX) {
            s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor name '%.40s...' is longer than %d bytes",
                            path, e->string, ST_NAME_MAX - 1);
            goto done;
        }
        int i = f->count;
        s = parse_entry(ctx, path, e, data_size, &f->tensors[i], &ranges[i]);
        if (s != NN_OK) goto done;
        ranges[i].index = i;
        f->offsets[i] = ranges[i].begin;
        names[i] = f->tensors[i].name;
        f->count++;
    }

    const char *dup = find_duplicate(names, n);
    if (dup) {
        s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: tensor '%s' appears twice", path, dup);
        goto done;
    }

    /* Sorted by begin, a non-empty range overlaps an earlier one exactly when
     * it starts before the furthest end seen so far. Empty ranges hold no bytes. */
    qsort(ranges, (size_t)n, sizeof *ranges, range_cmp);
    int64_t max_end = 0;
    int max_i = -1;
    for (int i = 0; i < n; i++) {
        if (ranges[i].begin == ranges[i].end) continue;
        if (max_i >= 0 && ranges[i].begin < max_end) {
            const st_range *ra = &ranges[max_i], *rb = &ranges[i];
            s = nn_ctx_fail(ctx, NN_EFORMAT,
                            "%s: tensors '%s' [%lld,%lld] and '%s' [%lld,%lld] overlap", path,
                            f->tensors[ra->index].name, (long long)ra->begin,
                            (long long)ra->end, f->tensors[rb->index].name,
                            (long long)rb->begin, (long long)rb->end);
            goto done;
        }
        if (ranges[i].end > max_end) max_end = ranges[i].end, max_i = i;
    }

done:
    free(ranges);
    free(names);
    return s;
}

static float f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* IEEE binary16 to float32, exactly: every half value is a float value. A
 * NaN keeps its sign and payload and comes out quiet, as an IEEE conversion
 * (and PyTorch's) makes it. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* infinity, or NaN with the quiet bit set */
        return f32_from_bits(sign | 0x7f800000u | man << 13 | (man ? 0x00400000u : 0));
    if (exp != 0) return f32_from_bits(sign | (exp + 112u) << 23 | man << 13); /* 127 - 15 */
    float mag = (float)man * 0x1p-24f; /* zero or subnormal: man * 2^-24, exact */
    return sign ? -mag : mag;
}

/* Converts n elements of dtype dt at src (little-endian, any alignment) to
 * float32, bit for bit as PyTorch's .to(torch.float32): F16 exactly; BF16 by
 * its bits (the upper half of a float32, NaNs as they are); F64, I32, I64 by
 * C's conversion, which rounds to nearest even (IEEE arithmetic; overflow
 * gives infinity, NaN stays NaN). */
static void convert_to_f32(float *dst, const unsigned char *src, int64_t n, nn_st_dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = src + i * st_dtypes[dt].size;
        uint16_t u16;
        uint32_t u32;
        int32_t i32;
        int64_t i64;
        double f64;
        switch (dt) {
        case NN_ST_F32:
            memcpy(&dst[i], p, 4);
            break;
        case NN_ST_F16:
            memcpy(&u16, p, 2);
            dst[i] = f16_to_f32(u16);
            break;
        case NN_ST_BF16:
            memcpy(&u16, p, 2);
            u32 = (uint32_t)u16 << 16;
            dst[i] = f32_from_bits(u32);
            break;
        case NN_ST_F64:
            memcpy(&f64, p, 8);
            dst[i] = (float)f64;
            break;
        case NN_ST_I32:
            memcpy(&i32, p, 4);
            dst[i] = (float)i32;
            break;
        case NN_ST_I64:
            memcpy(&i64, p, 8);
            dst[i] = (float)i64;
            break;
        default:
            NN_ASSERT(0 && "dtype checked by parse_entry");
        }
    }
}

/* Points each F32 tensor into the loaded data section. Other dtypes, and a
 * float-misaligned offset (legal in the format, never written by
 * nn_safetensors_write), get their own aligned float32 copy. */
static nn_status attach_data(nn_ctx *ctx, const char *path, nn_st_file *f) {
    for (int i = 0; i < f->count; i++) {
        nn_st_tensor *t = &f->tensors[i];
        const unsigned char *src = f->data + f->offsets[i];
        if (t->dtype == NN_ST_F32 && f->offsets[i] % (int64_t)sizeof(float) == 0) {
            t->data = (const float *)(const void *)src;
            continue;
        }
        int64_t n = nn_shape_numel(&t->shape);
        if ((uint64_t)n > SIZE_MAX / sizeof(float))
            return nn_ctx_fail(ctx, NN_ENOMEM, "%s: tensor '%s' is too large", path, t->name);
        f->copies[i] = nn_alloc_aligned((size_t)n * sizeof(float));
        if (!f->copies[i]) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
        convert_to_f32(f->copies[i], src, n, t->dtype);
        t->data = f->copies[i];
    }
    return NN_OK;
}

/* Reads exactly n bytes or reports why not. */
static nn_status read_exact(nn_ctx *ctx, const char *path, FILE *fp, void *dst, size_t n,
                            const char *what) {
    if (n == 0 || fread(dst, 1, n, fp) == n) return NN_OK;
    if (ferror(fp))
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot read %s: %s", path, what, strerror(errno));
    return nn_ctx_fail(ctx, NN_EIO, "%s: file shrank while reading %s", path, what);
}

nn_status nn_safetensors_open(nn_ctx *ctx, const char *path, nn_st_file **out) {
    *out = NULL;
    const char *why;
    int fd = nn_open_regular(path, &why);
    FILE *fp = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!fp) {
        if (fd >= 0) why = strerror(errno), close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open: %s", path, why);
    }

    nn_st_file *f = calloc(1, sizeof *f);
    char *hdr = NULL;
    cJSON *root = NULL;
    nn_status s = NN_OK;
    struct stat sb;
    if (!f) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fstat(fileno(fp), &sb) != 0) {
        s = nn_ctx_fail(ctx, NN_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = nn_ctx_fail(ctx, NN_EIO, "%s: not a regular file", path);
        goto done;
    }
    uint64_t file_size = (uint64_t)sb.st_size;
    if (file_size < 8) {
        s = nn_ctx_fail(ctx, NN_EFORMAT,
                        "%s: file is %llu bytes, too short for the 8-byte header length", path,
                        (unsigned long long)file_size);
        goto done;
    }
    unsigned char len8[8];
    if ((s = read_exact(ctx, path, fp, len8, 8, "the header length")) != NN_OK) goto done;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > file_size - 8) {
        s = nn_ctx_fail(ctx, NN_EFORMAT,
                        "%s: header length %llu exceeds the %llu bytes after it (truncated or "
                        "not a safetensors file)",
                        path, (unsigned long long)hlen, (unsigned long long)(file_size - 8));
        goto done;
    }
    if (hlen > ST_MAX_HEADER) {
        s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit",
                        path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
        goto done;
    }
    uint64_t data_size = file_size - 8 - hlen;
    if (data_size > SIZE_MAX / 2) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "%s: data section of %llu bytes is too large", path,
                        (unsigned long long)data_size);
        goto done;
    }

    hdr = malloc((size_t)hlen + 1);
    if (!hdr) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for a %llu-byte header", path,
                        (unsigned long long)hlen);
        goto done;
    }
    if ((s = read_exact(ctx, path, fp, hdr, (size_t)hlen, "the header")) != NN_OK) goto done;
    hdr[hlen] = '\0';
    /* cJSON stops at a NUL byte, so one inside the header would hide the rest. */
    if (memchr(hdr, '\0', (size_t)hlen)) {
        s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: header contains a NUL byte", path);
        goto done;
    }
    if (!utf8_valid((const unsigned char *)hdr, (size_t)hlen)) {
        s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: header is not valid UTF-8", path);
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen + 1, &end, 1);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        s = nn_ctx_fail(ctx, NN_EFORMAT, "%s: header is not valid JSON (near byte %zu of %llu)",
                        path, at, (unsigned long long)hlen);
        goto done;
    }

    if ((s = parse_header(ctx, path, root, data_size, f)) != NN_OK) goto done;

    f->data = nn_alloc_aligned((size_t)data_size);
    if (!f->data) {
        s = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for %llu bytes of data", path,
                        (unsigned long long)data_size);
        goto done;
    }
    if ((s = read_exact(ctx, path, fp, f->data, (size_t)data_size, "the data")) != NN_OK)
        goto done;
    s = attach_data(ctx, path, f);

done:
    cJSON_Delete(root);
    free(hdr);
    fclose(fp);
    if (s != NN_OK) {
        nn_safetensors_close(f);
        return s;
    }
    *out = f;
    return NN_OK;
}
