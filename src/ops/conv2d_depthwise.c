/*
 * conv2d_depthwise.c - direct kernels for depthwise convolutions (groups = C
 * = K: each channel is convolved with its own R x S kernel), which im2col +
 * GEMM runs as C GEMMs of one row each at a few GFLOP/s.
 *
 * Every plane is turned into 1-D sums over flat arrays, so that one loop
 * vectorized along a flat index serves every stride, padding and kernel size:
 *  - the padded input plane is split into stride_h x stride_w phase planes,
 *    phase (a, b) holding xpad[a + sh*i][b + sw*j]; output (p, q) then reads
 *    tap (r, s) at phase (r % sh, s % sw), row p + r / sh, column q + s / sw,
 *    so on a grid of rows `wg` floats wide the tap is one fixed offset from
 *    the output's flat index, and a vector of 16 outputs reads 16
 *    consecutive floats per tap (stride 2 included: no gathers);
 *  - the input gradient of padded phase (a, b) is the same kind of sum over
 *    dy, zero-extended by (R-1)/sh rows above and (S-1)/sw columns left, with
 *    the taps r = a + sh*k, s = b + sw*l turned 180 degrees;
 *  - the weight gradient of tap t is the dot product of that zero-extended
 *    dy with tap t's shifted phase plane (the grid's extra columns of dy are
 *    zero, so they add nothing).
 * A grid row holds a few columns past the output's (wg >= Q): small planes
 * waste fewer lanes than with one vector per output row (a 7 x 7 output is
 * 4 vectors, not 7). The phase planes, dy and the output grid of a plane stay
 * in L1; their zero borders are written once per thread and call.
 *
 * Threads: the forward pass takes blocks of (image, channel) planes as they
 * come free; the backward pass gives each thread a contiguous share of the
 * planes in memory order (going channel by channel across the images read
 * 13-line planes 100 KB apart and waited on memory) with private partial
 * sums per channel, added in thread order: dw and db depend only on the
 * thread count, y and dx not at all. While a thread works on one plane it
 * asks for the next one's inputs (x, dy, the ReLU's y) and for the lines of
 * its output (y or dx) to be written: a plane is a few KB, too short for
 * the hardware prefetchers to be ahead at its start, and without this the
 * loads of x stalled most of the phase split's time (MobileNet-small's
 * depthwise layers on a Zen 4: backward 3.9 -> 2.8 ms, forward 1.3 -> 1.1
 * ms, then the lines to be written 3.3 -> 2.8 and 1.4 -> 1.15). It asks
 * for them a part after each step of the plane (x after the phase split, dy
 * and y around the weight-gradient sums, dx before the merge), not all at
 * its start, where they waited in line behind each other: per plane, batch
 * 64, 1 thread, MobileNet-small's dw1 backward 1.85-2.55 us (1.72-2.03
 * without the prefetch) -> 1.55-1.94, dw2's 1.32-1.65 (1.15-1.25) ->
 * 0.98-1.21, on a host whose speed moved by a third between runs, in a
 * loop over one layer whose 26-32 MB could stay in the 32 MB L3. In training, where
 * the planes come from memory, that Zen 4 ran these layers faster without
 * any (NNOPT_PREFETCH=auto picks per layer). The
 * AVX-512 twins of the inner loops (phase split and merge, the tap sums, the output and dy copies) and the
 * AVX2 ones (the tap sums with FMAs; the copies are the portable loops
 * compiled for AVX2) are chosen at run time from ctx->isa; the portable ones
 * run otherwise (NNOPT_ISA=generic) and are tested as well.
 */
#include "ops/ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"
#include "backend/simd_avx512.h"
#define NN_HAVE_AVX512_KERNELS 1
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#endif
/* a loop body that each ISA's copy inlines (the portable one and AVX2's) */
#define NN_LOOP_BODY __attribute__((always_inline)) static inline

#define LANES 16      /* floats per zmm, and partial sums per tap of the portable dot product */
#define MAX_SIDE 7    /* kernels up to 7 x 7 */
#define MAX_STRIDE 4
#define MAX_TAPS (MAX_SIDE * MAX_SIDE)

static size_t round16(size_t floats) { return (floats + 15) & ~(size_t)15; }

int nn_conv2d_depthwise_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    (void)ctx; /* the portable loops take every ISA */
    return d->groups > 1 && d->groups == d->C && d->K == d->C && !nn_conv2d_dilated(d) &&
           !d->bf16 && d->R <= MAX_SIDE && d->S <= MAX_SIDE && d->stride_h <= MAX_STRIDE &&
           d->stride_w <= MAX_STRIDE;
}

/* The geometry of one plane's buffers, in floats. */
typedef struct {
    int sh, sw;           /* strides: phases along H and W */
    int hph;              /* rows of each phase plane: ceil((H + 2 pad_h) / sh) */
    int kz, lz;           /* dy's zero rows above, zero columns left: (R-1)/sh, (S-1)/sw */
    int wg;               /* row width of every grid: ceil((W + 2 pad_w) / sw) + lz */
    size_t x_plane;       /* one phase plane of x, with slack for the last vector's taps */
    size_t dyz;           /* zero-extended dy: hph + kz rows and slack */
    size_t grid;          /* one output grid: the forward's y or one phase of dx */
    size_t acc;           /* a channel's weight-gradient partial sums: LANES per tap and the bias */
    size_t formed;        /* one plane of dy formed from the batch norm after (bn) */
    size_t per_thread;
} dw_geom;

static dw_geom geom(const nn_conv2d_desc *d) {
    dw_geom g;
    g.sh = d->stride_h, g.sw = d->stride_w;
    const int hp = d->H + 2 * d->pad_h, wp = d->W + 2 * d->pad_w;
    g.hph = (hp + g.sh - 1) / g.sh;
    g.kz = (d->R - 1) / g.sh, g.lz = (d->S - 1) / g.sw;
    g.wg = (wp + g.sw - 1) / g.sw + g.lz;
    /* vectors run up to 16 floats past the last grid row's end and read up
     * to kz rows and lz columns further: one spare row and 32 floats cover
     * both (P + kz <= hph, lz < wg); the grids take the 16 floats of the last
     * store */
    g.x_plane = round16(((size_t)g.hph + 1) * g.wg + 32);
    g.dyz = round16(((size_t)g.hph + g.kz + 1) * g.wg + 32);
    g.grid = round16((size_t)g.hph * g.wg + 16);
    g.acc = (size_t)(d->R * d->S + 1) * LANES;
    g.formed = round16((size_t)d->P * d->Q);
    g.per_thread =
        (size_t)g.sh * g.sw * (g.x_plane + g.grid) + g.dyz + (size_t)d->C * g.acc + g.formed;
    return g;
}

size_t nn_conv2d_depthwise_workspace(const nn_conv2d_desc *d, int threads) {
    if (!nn_conv2d_depthwise_ok(d, NULL)) return 0;
    return (size_t)threads * geom(d).per_thread;
}

/* ------------------------------------------------------------ plane copies */

/* Row h of the plane lands on phase row a = (h + pad_h) % sh, row i = (h +
 * pad_h) / sh of it: stepped along instead of divided for every row. */
typedef struct {
    int a, i;
} phase_pos;

static inline phase_pos first_row(const nn_conv2d_desc *d, const dw_geom *g) {
    return (phase_pos){d->pad_h % g->sh, d->pad_h / g->sh};
}

static inline void next_row(phase_pos *r, const dw_geom *g) {
    if (++r->a == g->sh) r->a = 0, r->i++;
}

/* A prologue's map of one channel (see nn_conv2d_map): v = x a + b, then
 * the ReLU when relu; on = 0: none. */
typedef struct {
    int on, relu;
    float a, b;
} plane_map;

static plane_map map_of(const nn_conv2d_map *m, int c) {
    plane_map p = {0, 0, 0.0f, 0.0f};
    if (m) p.on = 1, p.relu = m->relu, p.a = m->scale[c], p.b = m->shift[c];
    return p;
}

/* the batch norm's value, as its normalizing pass computes it */
static inline float map_one(float x, const plane_map *m) {
    return m->on ? nn_map_value(x, m->a, m->b, m->relu) : x;
}

/* o[j] = map_one(x[j * sw]) for j < n (x holds `avail` floats) */
typedef void (*map_row_fn)(float *o, const float *x, int n, int avail, int sw,
                           const plane_map *m);

NN_LOOP_BODY void map_row_portable(float *o, const float *x, int n, int avail, int sw,
                                   const plane_map *m) {
    (void)avail;
    for (int j = 0; j < n; j++) o[j] = map_one(x[(size_t)j * sw], m);
}

/* The phase planes of one input plane x (H, W), through the map m: column
 * w of padded row hp goes to column phase (w + pad_w) % sw at (w + pad_w) /
 * sw, a phase's columns of a row through map_row. Only the interior is
 * written: the zero border (the padding of the mapped plane) stays from the
 * thread's first memset. */
NN_LOOP_BODY void split_phases_body(float *xph, const float *x, const plane_map *m,
                                   const nn_conv2d_desc *d, const dw_geom *g, map_row_fn map_row) {
    /* phase by phase, so the divisions happen once a phase, not once a row
     * (they were most of this pass's time) */
    for (int b = 0; b < g->sw; b++) {
        const int w0 = ((b - d->pad_w) % g->sw + g->sw) % g->sw; /* first column of phase b */
        const size_t col = (size_t)b * g->x_plane + (size_t)((w0 + d->pad_w) / g->sw);
        const int n = w0 < d->W ? (d->W - w0 + g->sw - 1) / g->sw : 0;
        phase_pos r = first_row(d, g);
        for (int h = 0; h < d->H; h++, next_row(&r, g)) {
            float *row = xph + (size_t)r.a * g->sw * g->x_plane + (size_t)r.i * g->wg;
            map_row(row + col, x + (size_t)h * d->W + w0, n, d->W - w0, g->sw, m);
        }
    }
}

/* The inverse for the input gradient: dx (H, W) from its padded phase grids. */
NN_LOOP_BODY void merge_phases_body(float *dx, const float *grids, const nn_conv2d_desc *d,
                                   const dw_geom *g) {
    for (int b = 0; b < g->sw; b++) {
        const int w0 = ((b - d->pad_w) % g->sw + g->sw) % g->sw;
        const size_t col = (size_t)b * g->grid + (size_t)((w0 + d->pad_w) / g->sw);
        phase_pos r = first_row(d, g);
        for (int h = 0; h < d->H; h++, next_row(&r, g)) {
            const float *o = grids + (size_t)r.a * g->sw * g->grid + (size_t)r.i * g->wg + col;
            float *dr = dx + (size_t)h * d->W;
            for (int w = w0, j = 0; w < d->W; w += g->sw, j++) dr[w] = o[j];
        }
    }
}

/* The rows of the forward's grid into y (P, Q), + bias, ReLU if asked. */
NN_LOOP_BODY void store_output_body(float *y, const float *grid, float bias,
                                   const nn_conv2d_desc *d, const dw_geom *g) {
    for (int p = 0; p < d->P; p++) {
        const float *gr = grid + (size_t)p * g->wg;
        float *yr = y + (size_t)p * d->Q;
        if (d->relu)
            for (int q = 0; q < d->Q; q++) {
                const float v = gr[q] + bias;
                yr[q] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN passes */
            }
        else
            for (int q = 0; q < d->Q; q++) yr[q] = gr[q] + bias;
    }
}

/* dy (P, Q) into the zero-extended grid, zero where the fused ReLU's output
 * y <= 0 (y NULL: no mask). */
NN_LOOP_BODY void extend_dy_body(float *dyz, const float *dy, const float *y,
                                const nn_conv2d_desc *d, const dw_geom *g) {
    for (int p = 0; p < d->P; p++) {
        float *dst = dyz + (size_t)(p + g->kz) * g->wg + g->lz;
        const float *src = dy + (size_t)p * d->Q;
        if (y) {
            const float *m = y + (size_t)p * d->Q;
            for (int q = 0; q < d->Q; q++) dst[q] = m[q] > 0.0f ? src[q] : 0.0f;
        } else {
            memcpy(dst, src, (size_t)d->Q * sizeof(float));
        }
    }
}

static void split_phases(float *xph, const float *x, const plane_map *m, const nn_conv2d_desc *d,
                         const dw_geom *g) {
    split_phases_body(xph, x, m, d, g, map_row_portable);
}

/* The other plane copies of one ISA: the bodies above compiled for it (the
 * AVX2 copies vectorize them 8 wide; the arithmetic is the same). */
static void merge_phases(float *dx, const float *grids, const nn_conv2d_desc *d,
                         const dw_geom *g) {
    merge_phases_body(dx, grids, d, g);
}

#define NN_PLANE_LOOPS(SUFFIX, TARGET)                                                             \
    TARGET static void store_output##SUFFIX(float *y, const float *grid, float bias,               \
                                            const nn_conv2d_desc *d, const dw_geom *g) {           \
        store_output_body(y, grid, bias, d, g);                                                    \
    }                                                                                              \
    TARGET static void extend_dy##SUFFIX(float *dyz, const float *dy, const float *y,              \
                                         const nn_conv2d_desc *d, const dw_geom *g) {              \
        extend_dy_body(dyz, dy, y, d, g);                                                          \
    }
NN_PLANE_LOOPS(, )
#ifdef NN_HAVE_AVX512_KERNELS
NN_PLANE_LOOPS(_avx2, AVX2)
#endif
#undef NN_PLANE_LOOPS

/* ------------------------------------------------------------ inner loops */

/* out[j] = sum over taps t of wt[t] * src[t][j] for j in [0, count) and up
 * to 15 more (out and every src have that slack; geom). */
static void correlate_portable(float *out, int count, const float *const *src, const float *wt,
                               int taps) {
    const int n = (int)round16((size_t)count);
    for (int j = 0; j < n; j++) out[j] = 0.0f;
    for (int t = 0; t < taps; t++) {
        const float *s = src[t], v = wt[t];
        for (int j = 0; j < n; j++) out[j] += v * s[j];
    }
}

/* acc[t][l] += sum over j = l mod 16 of g[j] * src[t][j], and the bias's
 * acc[taps][l] += g[j], j in [0, count) rounded up to 16 (g zero past count). */
static void dot_taps_portable(float *acc, int count, const float *gv, const float *const *src,
                              int taps) {
    const int n = (int)round16((size_t)count);
    for (int t = 0; t < taps; t++) {
        float *a = acc + (size_t)t * LANES;
        const float *s = src[t];
        for (int j = 0; j < n; j += LANES)
            for (int l = 0; l < LANES; l++) a[l] += gv[j + l] * s[j + l];
    }
    float *a = acc + (size_t)taps * LANES;
    for (int j = 0; j < n; j += LANES)
        for (int l = 0; l < LANES; l++) a[l] += gv[j + l];
}

#ifdef NN_HAVE_AVX512_KERNELS
/* The same, 32 outputs (two vectors: two independent chains of FMAs) per
 * step. Inlined into a constant-tap caller the loop over taps unrolls and
 * the broadcast weights stay in registers; the weights and tap pointers are
 * copied so that the stores to out do not make the compiler reload them. */
__attribute__((target("avx512f"), always_inline)) static inline void correlate_body(
    float *out, int count, const float *const *src, const float *wt, int taps) {
    const float *p[MAX_TAPS];
    __m512 v[MAX_TAPS];
    for (int t = 0; t < taps; t++) p[t] = src[t], v[t] = _mm512_set1_ps(wt[t]);
    int j = 0;
    for (; j + LANES < count; j += 2 * LANES) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int t = 0; t < taps; t++) {
            a0 = _mm512_fmadd_ps(v[t], _mm512_loadu_ps(p[t] + j), a0);
            a1 = _mm512_fmadd_ps(v[t], _mm512_loadu_ps(p[t] + j + LANES), a1);
        }
        _mm512_storeu_ps(out + j, a0);
        _mm512_storeu_ps(out + j + LANES, a1);
    }
    if (j < count) {
        __m512 a0 = _mm512_setzero_ps();
        for (int t = 0; t < taps; t++)
            a0 = _mm512_fmadd_ps(v[t], _mm512_loadu_ps(p[t] + j), a0);
        _mm512_storeu_ps(out + j, a0);
    }
}

AVX512 static void correlate_avx512(float *out, int count, const float *const *src,
                                    const float *wt, int taps) {
    if (taps == 9) /* 3 x 3, stride 1 and the forward of stride 2: unrolled */
        correlate_body(out, count, src, wt, 9);
    else
        correlate_body(out, count, src, wt, taps);
}

__attribute__((target("avx512f"), always_inline)) static inline void dot_taps_body(
    float *acc, int count, const float *gv, const float *const *src, int taps) {
    __m512 a[MAX_TAPS + 1];
    for (int t = 0; t <= taps; t++) a[t] = _mm512_loadu_ps(acc + (size_t)t * LANES);
    for (int j = 0; j < count; j += LANES) {
        const __m512 gj = _mm512_loadu_ps(gv + j);
        for (int t = 0; t < taps; t++)
            a[t] = _mm512_fmadd_ps(gj, _mm512_loadu_ps(src[t] + j), a[t]);
        a[taps] = _mm512_add_ps(a[taps], gj);
    }
    for (int t = 0; t <= taps; t++) _mm512_storeu_ps(acc + (size_t)t * LANES, a[t]);
}

AVX512 static void dot_taps_avx512(float *acc, int count, const float *gv,
                                   const float *const *src, int taps) {
    if (taps == 9) /* ten accumulators in registers */
        dot_taps_body(acc, count, gv, src, 9);
    else
        dot_taps_body(acc, count, gv, src, taps);
}

/* The AVX2 + FMA twins: 16 outputs per step (two ymm); the weight
 * gradient's 16 partial sums per tap in two passes of 8 lanes (ten
 * accumulators each for 3 x 3: the 16 ymm registers hold no more). */
__attribute__((target("avx2,fma"), always_inline)) static inline void correlate_body_avx2(
    float *out, int count, const float *const *src, const float *wt, int taps) {
    const float *p[MAX_TAPS];
    __m256 v[MAX_TAPS];
    for (int t = 0; t < taps; t++) p[t] = src[t], v[t] = _mm256_set1_ps(wt[t]);
    for (int j = 0; j < count; j += LANES) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int t = 0; t < taps; t++) {
            a0 = _mm256_fmadd_ps(v[t], _mm256_loadu_ps(p[t] + j), a0);
            a1 = _mm256_fmadd_ps(v[t], _mm256_loadu_ps(p[t] + j + 8), a1);
        }
        _mm256_storeu_ps(out + j, a0);
        _mm256_storeu_ps(out + j + 8, a1);
    }
}

/* a plane_map with its scale and shift in vectors, read once per plane (the
 * stores between would otherwise reload them: a float store may alias) */
typedef struct {
    int on, relu;
    __m256 a, b;
} plane_map8;

__attribute__((target("avx2,fma"), always_inline)) static inline plane_map8 map8_of(
    const plane_map *m) {
    return (plane_map8){m->on, m->relu, _mm256_set1_ps(m->a), _mm256_set1_ps(m->b)};
}

/* map_one on 8 floats, in its arithmetic */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 map8_avx2(
    __m256 v, const plane_map8 *m) {
    return m->on ? nn_avx2_map(v, m->a, m->b, m->relu) : v;
}

/* map_row_portable 8 floats at a time for stride 1 (others: the portable
 * loop; stride 2 splits whole rows in split_phases_avx2) */
__attribute__((target("avx2,fma"), always_inline)) static inline void map_row_avx2(
    float *o, const float *x, int n, int avail, int sw, const plane_map *m) {
    if (sw != 1) {
        map_row_portable(o, x, n, avail, sw, m);
        return;
    }
    const plane_map8 m8 = map8_of(m);
    for (int j = 0; j < n; j += 8) {
        /* the last 8 again, overlapping (o is not x); a row of fewer than 8
         * in a part vector */
        if (j + 8 > n && n >= 8) j = n - 8;
        nn_avx2_store_n(o + j, n - j, map8_avx2(nn_avx2_load_n(x + j, n - j), &m8));
    }
}

/* Stride 2 across: each row in one pass, 16 columns at a time, its even
 * and odd columns (nn_avx2_even, nn_avx2_odd) to their column phases, as
 * split_phases_avx512 does 32 at a time. The last part of a row is stored
 * whole with zeros past its columns, not by mask (slow on AMD's cores):
 * those land on the row's zero border or on later rows of the phase, which
 * a later input row writes, or on the plane's slack (geom). */
AVX2 static void split_phases_avx2(float *xph, const float *x, const plane_map *m,
                                   const nn_conv2d_desc *d, const dw_geom *g) {
    if (g->sw != 2) {
        split_phases_body(xph, x, m, d, g, map_row_avx2);
        return;
    }
    const int W = d->W, pad = d->pad_w;
    /* column 2j goes to column phase pad % 2 at j + pad / 2, column 2j + 1
     * to the other one at j + (pad + 1) / 2 */
    const size_t even = (size_t)(pad % 2) * g->x_plane + pad / 2;
    const size_t odd = (size_t)((pad + 1) % 2) * g->x_plane + (pad + 1) / 2;
    const int chunks = (W + 15) / 16, last = W - 16 * (chunks - 1);
    const __m256 keep_even = _mm256_castsi256_ps(nn_avx2_lanes((last + 1) / 2));
    const __m256 keep_odd = _mm256_castsi256_ps(nn_avx2_lanes(last / 2));
    const plane_map8 m8 = map8_of(m);
    phase_pos r = first_row(d, g);
    for (int h = 0; h < d->H; h++, next_row(&r, g)) {
        float *row = xph + (size_t)r.a * 2 * g->x_plane + (size_t)r.i * g->wg;
        const float *xr = x + (size_t)h * W;
        for (int c = 0; c < chunks; c++) {
            const int n = c == chunks - 1 ? last : 16;
            const __m256 lo = map8_avx2(nn_avx2_load_n(xr + 16 * c, n), &m8);
            const __m256 hi = map8_avx2(nn_avx2_load_n(xr + 16 * c + 8, n - 8), &m8);
            __m256 ev = nn_avx2_even(lo, hi), od = nn_avx2_odd(lo, hi);
            if (n < 16) ev = _mm256_and_ps(ev, keep_even), od = _mm256_and_ps(od, keep_odd);
            _mm256_storeu_ps(row + even + 8 * c, ev);
            _mm256_storeu_ps(row + odd + 8 * c, od);
        }
    }
}

AVX2 static void correlate_avx2(float *out, int count, const float *const *src, const float *wt,
                                int taps) {
    if (taps == 9)
        correlate_body_avx2(out, count, src, wt, 9);
    else
        correlate_body_avx2(out, count, src, wt, taps);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void dot_taps_body_avx2(
    float *acc, int count, const float *gv, const float *const *src, int taps) {
    const int n = (int)round16((size_t)count);
    for (int half = 0; half < LANES; half += 8) {
        __m256 a[MAX_TAPS + 1];
        for (int t = 0; t <= taps; t++) a[t] = _mm256_loadu_ps(acc + (size_t)t * LANES + half);
        for (int j = half; j < n; j += LANES) {
            const __m256 gj = _mm256_loadu_ps(gv + j);
            for (int t = 0; t < taps; t++)
                a[t] = _mm256_fmadd_ps(gj, _mm256_loadu_ps(src[t] + j), a[t]);
            a[taps] = _mm256_add_ps(a[taps], gj);
        }
        for (int t = 0; t <= taps; t++) _mm256_storeu_ps(acc + (size_t)t * LANES + half, a[t]);
    }
}

AVX2 static void dot_taps_avx2(float *acc, int count, const float *gv, const float *const *src,
                               int taps) {
    if (taps == 9)
        dot_taps_body_avx2(acc, count, gv, src, 9);
    else
        dot_taps_body_avx2(acc, count, gv, src, taps);
}

/* The first n lanes, none for n <= 0. */
__attribute__((target("avx512f"), always_inline)) static inline __mmask16 lanes_upto(int n) {
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* Masks of a row of n floats taken 32 at a time: lo, hi for the two loads
 * (or stores) of every chunk but the last, then the last's; and for stride 2
 * the even and the odd columns' counts of the last chunk. */
typedef struct {
    int chunks;
    __mmask16 lo, hi, even, odd;
} row_masks;

__attribute__((target("avx512f"), always_inline)) static inline row_masks masks_of(int n) {
    row_masks m;
    m.chunks = (n + 2 * LANES - 1) / (2 * LANES);
    const int last = n - (m.chunks - 1) * 2 * LANES;
    m.lo = lanes_upto(last), m.hi = lanes_upto(last - LANES);
    m.even = lanes_upto((last + 1) / 2), m.odd = lanes_upto(last / 2);
    return m;
}

/* A row of n floats from src to dst, 32 at a time. */
__attribute__((target("avx512f"), always_inline)) static inline void copy_row(
    float *dst, const float *src, const row_masks *m) {
    const __mmask16 full = 0xFFFF;
    for (int c = 0; c < m->chunks; c++) {
        const int last = c == m->chunks - 1;
        const __mmask16 lo = last ? m->lo : full, hi = last ? m->hi : full;
        _mm512_mask_storeu_ps(dst + 2 * LANES * c, lo,
                              _mm512_maskz_loadu_ps(lo, src + 2 * LANES * c));
        _mm512_mask_storeu_ps(dst + 2 * LANES * c + LANES, hi,
                              _mm512_maskz_loadu_ps(hi, src + 2 * LANES * c + LANES));
    }
}

/* map_one on 16 floats: max(0, v) passes a NaN v, as the ternary does (a
 * -0 stays -0 where the ternary gives +0: the same value) */
__attribute__((target("avx512f"), always_inline)) static inline __m512 map_vec(
    __m512 x, const plane_map *m) {
    if (!m->on) return x;
    const __m512 v = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(m->a)), _mm512_set1_ps(m->b));
    return m->relu ? _mm512_max_ps(_mm512_setzero_ps(), v) : v;
}

/* split_phases for strides 1 and 2 (others: the portable loop), a row at a
 * time with masked loads and stores; for stride 2 the even and the odd
 * columns of 32 are two permutes of two loads. */
AVX512 static void split_phases_avx512(float *xph, const float *x, const plane_map *pm,
                                       const nn_conv2d_desc *d, const dw_geom *g) {
    if (g->sw > 2) {
        split_phases(xph, x, pm, d, g);
        return;
    }
    const int W = d->W, pad = d->pad_w;
    const row_masks m = masks_of(W);
    phase_pos r = first_row(d, g);
    const __mmask16 full = 0xFFFF;
    if (g->sw == 1) {
        for (int h = 0; h < d->H; h++, next_row(&r, g)) {
            float *dst = xph + (size_t)r.a * g->x_plane + (size_t)r.i * g->wg + pad;
            const float *src = x + (size_t)h * W;
            if (!pm->on) {
                copy_row(dst, src, &m);
                continue;
            }
            for (int c = 0; c < m.chunks; c++) {
                const int last = c == m.chunks - 1;
                const __mmask16 lo = last ? m.lo : full, hi = last ? m.hi : full;
                _mm512_mask_storeu_ps(dst + 2 * LANES * c, lo,
                                      map_vec(_mm512_maskz_loadu_ps(lo, src + 2 * LANES * c), pm));
                _mm512_mask_storeu_ps(
                    dst + 2 * LANES * c + LANES, hi,
                    map_vec(_mm512_maskz_loadu_ps(hi, src + 2 * LANES * c + LANES), pm));
            }
        }
        return;
    }
    /* column 2m goes to column phase pad % 2 at m + pad / 2, column 2m + 1 to
     * the other one at m + (pad + 1) / 2 */
    const size_t even = (size_t)(pad % 2) * g->x_plane + pad / 2;
    const size_t odd = (size_t)((pad + 1) % 2) * g->x_plane + (pad + 1) / 2;
    const __m512i ie = nn_idx_even(), io = nn_idx_odd();
    for (int h = 0; h < d->H; h++, next_row(&r, g)) {
        float *row = xph + (size_t)r.a * 2 * g->x_plane + (size_t)r.i * g->wg;
        const float *xr = x + (size_t)h * W;
        for (int c = 0; c < m.chunks; c++) {
            const int last = c == m.chunks - 1;
            const float *in = xr + 2 * LANES * c;
            /* lanes past the row are mapped too but never stored */
            const __m512 lo = map_vec(_mm512_maskz_loadu_ps(last ? m.lo : full, in), pm);
            const __m512 hi = map_vec(_mm512_maskz_loadu_ps(last ? m.hi : full, in + LANES), pm);
            _mm512_mask_storeu_ps(row + even + LANES * c, last ? m.even : full,
                                  _mm512_permutex2var_ps(lo, ie, hi));
            _mm512_mask_storeu_ps(row + odd + LANES * c, last ? m.odd : full,
                                  _mm512_permutex2var_ps(lo, io, hi));
        }
    }
}

/* merge_phases for strides 1 and 2: for 2, the two column phases
 * interleaved, 32 columns at a time. */
AVX512 static void merge_phases_avx512(float *dx, const float *grids, const nn_conv2d_desc *d,
                                       const dw_geom *g) {
    if (g->sw > 2) {
        merge_phases(dx, grids, d, g);
        return;
    }
    const int W = d->W, pad = d->pad_w;
    const row_masks m = masks_of(W);
    phase_pos r = first_row(d, g);
    if (g->sw == 1) {
        for (int h = 0; h < d->H; h++, next_row(&r, g))
            copy_row(dx + (size_t)h * W, grids + (size_t)r.a * g->grid + (size_t)r.i * g->wg + pad,
                     &m);
        return;
    }
    const size_t even = (size_t)(pad % 2) * g->grid + pad / 2;
    const size_t odd = (size_t)((pad + 1) % 2) * g->grid + (pad + 1) / 2;
    const __m512i ilo = nn_idx_interleave_lo(), ihi = nn_idx_interleave_hi();
    const __mmask16 full = 0xFFFF;
    for (int h = 0; h < d->H; h++, next_row(&r, g)) {
        const float *row = grids + (size_t)r.a * 2 * g->grid + (size_t)r.i * g->wg;
        float *out = dx + (size_t)h * W;
        for (int c = 0; c < m.chunks; c++) {
            const int last = c == m.chunks - 1;
            const __m512 e = _mm512_maskz_loadu_ps(last ? m.even : full, row + even + LANES * c);
            const __m512 o = _mm512_maskz_loadu_ps(last ? m.odd : full, row + odd + LANES * c);
            _mm512_mask_storeu_ps(out + 2 * LANES * c, last ? m.lo : full,
                                  _mm512_permutex2var_ps(e, ilo, o));
            _mm512_mask_storeu_ps(out + 2 * LANES * c + LANES, last ? m.hi : full,
                                  _mm512_permutex2var_ps(e, ihi, o));
        }
    }
}

/* out[0..16) = e[0], o[0], e[1], o[1], ... */
__attribute__((target("avx2,fma"), always_inline)) static inline void interleave16_avx2(
    float *out, const float *e, const float *o) {
    const __m256 ev = _mm256_loadu_ps(e), od = _mm256_loadu_ps(o);
    const __m256 lo = _mm256_unpacklo_ps(ev, od), hi = _mm256_unpackhi_ps(ev, od);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

/* merge_phases for strides 1 and 2 with AVX2: for 2, the two column phases
 * interleaved 16 columns at a time, a row's last 16 (even-aligned) again
 * over what is written; a row under 16 as one interleave that spills onto
 * the plane's next rows, which write over it later (the plane's last rows
 * one by one: past the plane lies another thread's) */
AVX2 static void merge_phases_avx2(float *dx, const float *grids, const nn_conv2d_desc *d,
                                   const dw_geom *g) {
    if (g->sw > 2) {
        merge_phases(dx, grids, d, g);
        return;
    }
    const int W = d->W, pad = d->pad_w;
    phase_pos r = first_row(d, g);
    if (g->sw == 1) {
        for (int h = 0; h < d->H; h++, next_row(&r, g))
            memcpy(dx + (size_t)h * W, grids + (size_t)r.a * g->grid + (size_t)r.i * g->wg + pad,
                   (size_t)W * sizeof(float));
        return;
    }
    /* column 2m comes from column phase pad % 2 at m + pad / 2, column 2m + 1
     * from the other one at m + (pad + 1) / 2 */
    const size_t even = (size_t)(pad % 2) * g->grid + pad / 2;
    const size_t odd = (size_t)((pad + 1) % 2) * g->grid + (pad + 1) / 2;
    for (int h = 0; h < d->H; h++, next_row(&r, g)) {
        const float *row = grids + (size_t)r.a * 2 * g->grid + (size_t)r.i * g->wg;
        float *out = dx + (size_t)h * W;
        int w = 0;
        if (W >= 16) {
            for (; w + 16 <= W; w += 16)
                interleave16_avx2(out + w, row + even + w / 2, row + odd + w / 2);
            if (w + 1 < W) { /* the last 16 even-aligned columns again, overlapping */
                w = (W - 16) & ~1;
                interleave16_avx2(out + w, row + even + w / 2, row + odd + w / 2);
                w += 16;
            }
        } else if (h * W + 16 <= d->H * W) { /* a row under 16 (a 14-wide image) */
            interleave16_avx2(out, row + even, row + odd);
            w = W;
        }
        for (; w < W; w++) out[w] = row[(w & 1 ? odd : even) + w / 2];
    }
}

AVX512 static void store_output_avx512(float *y, const float *grid, float bias,
                                       const nn_conv2d_desc *d, const dw_geom *g) {
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    const int vecs = (d->Q + LANES - 1) / LANES;
    const __mmask16 tail = lanes_upto(d->Q - (vecs - 1) * LANES), full = 0xFFFF;
    for (int p = 0; p < d->P; p++)
        for (int v = 0; v < vecs; v++) {
            __m512 o = _mm512_add_ps(_mm512_loadu_ps(grid + (size_t)p * g->wg + v * LANES), b);
            /* max(0, v) returns v when v is NaN: NaN passes, as in PyTorch */
            if (d->relu) o = _mm512_max_ps(zero, o);
            _mm512_mask_storeu_ps(y + (size_t)p * d->Q + v * LANES, v == vecs - 1 ? tail : full, o);
        }
}

AVX512 static void extend_dy_avx512(float *dyz, const float *dy, const float *y,
                                    const nn_conv2d_desc *d, const dw_geom *g) {
    const int vecs = (d->Q + LANES - 1) / LANES;
    const __mmask16 tail = lanes_upto(d->Q - (vecs - 1) * LANES), full = 0xFFFF;
    const __m512 zero = _mm512_setzero_ps();
    for (int p = 0; p < d->P; p++) {
        float *dst = dyz + (size_t)(p + g->kz) * g->wg + g->lz;
        const size_t o = (size_t)p * d->Q;
        for (int v = 0; v < vecs; v++) {
            const __mmask16 m = v == vecs - 1 ? tail : full;
            __mmask16 keep = m;
            if (y) /* zero where the fused ReLU's output is <= 0 */
                keep = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, y + o + v * LANES), zero,
                                               _CMP_GT_OQ);
            _mm512_mask_storeu_ps(dst + v * LANES, m,
                                  _mm512_maskz_loadu_ps(keep, dy + o + v * LANES));
        }
    }
}
#endif

/* The inner loops of one ISA. */
typedef struct {
    void (*correlate)(float *out, int count, const float *const *src, const float *wt, int taps);
    void (*dot_taps)(float *acc, int count, const float *gv, const float *const *src, int taps);
    void (*split_phases)(float *xph, const float *x, const plane_map *m, const nn_conv2d_desc *d,
                         const dw_geom *g);
    void (*merge_phases)(float *dx, const float *grids, const nn_conv2d_desc *d, const dw_geom *g);
    void (*store_output)(float *y, const float *grid, float bias, const nn_conv2d_desc *d,
                         const dw_geom *g);
    void (*extend_dy)(float *dyz, const float *dy, const float *y, const nn_conv2d_desc *d,
                      const dw_geom *g);
} dw_loops;

static dw_loops pick_loops(const nn_ctx *ctx) {
#ifdef NN_HAVE_AVX512_KERNELS
    if (ctx->isa >= NN_ISA_AVX512)
        return (dw_loops){correlate_avx512, dot_taps_avx512, split_phases_avx512,
                          merge_phases_avx512, store_output_avx512, extend_dy_avx512};
#endif
#ifdef NN_HAVE_AVX512_KERNELS
    if (ctx->isa >= NN_ISA_AVX2)
        return (dw_loops){correlate_avx2,    dot_taps_avx2,     split_phases_avx2,
                          merge_phases_avx2, store_output_avx2, extend_dy_avx2};
#endif
    (void)ctx;
    return (dw_loops){correlate_portable, dot_taps_portable, split_phases, merge_phases,
                      store_output, extend_dy};
}

/* ------------------------------------------------------------ tap tables */

/* The forward's and the weight gradient's taps: tap (r, s) reads phase
 * plane (r % sh, s % sw) at offset (r / sh) rows + s / sw columns. */
static void input_taps(const float **src, const float *xph, const nn_conv2d_desc *d,
                       const dw_geom *g) {
    for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++)
            src[r * d->S + s] = xph + (size_t)((r % g->sh) * g->sw + s % g->sw) * g->x_plane +
                                (size_t)(r / g->sh) * g->wg + s / g->sw;
}

/* The input gradient's taps for padded phase (a, b): r = a + sh*k, s = b +
 * sw*l read the zero-extended dy at (kz - k) rows + (lz - l) columns; their
 * weights in wt. Returns the tap count (0 when the stride skips the phase). */
static int gradient_taps(const float **src, float *wt, const float *dyz, const float *w, int a,
                         int b, const nn_conv2d_desc *d, const dw_geom *g) {
    int n = 0;
    for (int r = a, k = 0; r < d->R; r += g->sh, k++)
        for (int s = b, l = 0; s < d->S; s += g->sw, l++) {
            src[n] = dyz + (size_t)(g->kz - k) * g->wg + (g->lz - l);
            wt[n++] = w[r * d->S + s];
        }
    return n;
}

/* ------------------------------------------------------------ kernels */

void nn_conv2d_forward_depthwise(float *y, const float *x, const float *w, const float *b,
                                 const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_forward_depthwise_mapped(y, x, NULL, NULL, w, b, d, n, ws, ctx);
}

void nn_conv2d_forward_depthwise_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                        double *stats, const float *w, const float *b,
                                        const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const dw_geom g = geom(d);
    const int planes = n * d->C, RS = d->R * d->S, PQ = d->P * d->Q;
    const size_t HW = (size_t)d->H * d->W;
    const dw_loops k = pick_loops(ctx);
    /* blocks of planes, at least 8 per thread so the work can even out */
    const int T = ctx->threads < planes ? ctx->threads : planes;
    int block = planes / (8 * T);
    if (block < 1) block = 1;
    NN_PARALLEL(T) {
        float *xph = ws + (size_t)nn_thread_id() * g.per_thread;
        float *grid = xph + (size_t)g.sh * g.sw * g.x_plane;
        memset(xph, 0, (size_t)g.sh * g.sw * g.x_plane * sizeof(float)); /* the borders */
        const float *src[MAX_TAPS];
        input_taps(src, xph, d, &g);
        NN_FOR_DYNAMIC
        for (int i0 = 0; i0 < planes; i0 += block) {
            const int i1 = planes - i0 < block ? planes : i0 + block;
            for (int i = i0; i < i1; i++) { /* plane i: image i / C, channel i % C */
                const int c = i % d->C;
                const plane_map m = map_of(map, c);
                const int ahead = i + 1 < i1 && ctx->prefetch; /* a part after each step */
                k.split_phases(xph, x + (size_t)i * HW, &m, d, &g);
                if (ahead) nn_prefetch_read(x + (size_t)(i + 1) * HW, HW);
                k.correlate(grid, d->P * g.wg, src, w + (size_t)c * RS, RS);
                if (ahead) nn_prefetch_write(y + (size_t)(i + 1) * PQ, PQ);
                k.store_output(y + (size_t)i * PQ, grid, b ? b[c] : 0.0f, d, &g);
                if (stats) /* the batch norm's row (image, channel) = plane i */
                    nn_batchnorm_row_stats(y + (size_t)i * PQ, 1, PQ, stats + 2 * (size_t)i, ctx);
            }
        }
    }
}

/* The 16 partial sums of one accumulator, in a fixed order. */
static float lanes_sum(const float *a) {
    float s8[8];
    for (int l = 0; l < 8; l++) s8[l] = a[l] + a[l + 8];
    return ((s8[0] + s8[4]) + (s8[2] + s8[6])) + ((s8[1] + s8[5]) + (s8[3] + s8[7]));
}

void nn_conv2d_backward_depthwise(float *dx, float *dw, float *db, const float *dy, const float *y,
                                  const float *x, const float *w, const nn_conv2d_desc *d, int n,
                                  float *ws, nn_ctx *ctx) {
    nn_conv2d_backward_depthwise_mapped(dx, dw, db, dy, y, x, NULL, NULL, w, d, n, ws, ctx);
}

void nn_conv2d_backward_depthwise_mapped(float *dx, float *dw, float *db, const float *dy,
                                         const float *y, const float *x, const nn_conv2d_map *map,
                                         const nn_bn_dx *bn, const float *w,
                                         const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const dw_geom g = geom(d);
    const int C = d->C, RS = d->R * d->S, PQ = d->P * d->Q, planes = n * C;
    const size_t HW = (size_t)d->H * d->W;
    const dw_loops k = pick_loops(ctx);
    const int T = ctx->threads < planes ? ctx->threads : planes;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        float *xph = ws + (size_t)t * g.per_thread;
        float *grids = xph + (size_t)g.sh * g.sw * g.x_plane;
        float *dyz = grids + (size_t)g.sh * g.sw * g.grid, *acc = dyz + g.dyz;
        float *formed = acc + (size_t)C * g.acc;
        memset(xph, 0, (size_t)g.sh * g.sw * g.x_plane * sizeof(float)); /* the borders */
        memset(dyz, 0, g.dyz * sizeof(float));
        memset(acc, 0, (size_t)C * g.acc * sizeof(float));
        const float *xsrc[MAX_TAPS];
        input_taps(xsrc, xph, d, &g);
        const float *dy_grid = dyz + (size_t)g.kz * g.wg + g.lz; /* dy (p, q) at p*wg + q */
        /* a contiguous share of the (image, channel) planes, in memory order */
        const int end = (int)((int64_t)planes * (t + 1) / T);
        for (int i = (int)((int64_t)planes * t / T); i < end; i++) {
            const int c = i % C;
            const plane_map m = map_of(map, c);
            /* the next plane's inputs and dx, a part after each step */
            const int ahead = i + 1 < end && ctx->prefetch;
            const size_t next_x = (size_t)(i + 1) * HW, next_y = (size_t)(i + 1) * PQ;
            k.split_phases(xph, x + (size_t)i * HW, &m, d, &g);
            if (ahead) nn_prefetch_read(x + next_x, HW);
            if (bn) { /* the batch norm's dx of this plane, then as dy */
                nn_batchnorm_form_dx(formed, dy + (size_t)i * PQ, y + (size_t)i * PQ, c, 1, PQ,
                                     bn, ctx);
                k.extend_dy(dyz, formed, NULL, d, &g);
            } else {
                k.extend_dy(dyz, dy + (size_t)i * PQ, d->relu ? y + (size_t)i * PQ : NULL, d, &g);
            }
            if (ahead) nn_prefetch_read(dy + next_y, PQ);
            k.dot_taps(acc + (size_t)c * g.acc, d->P * g.wg, dy_grid, xsrc, RS);
            if (ahead && (d->relu || bn)) nn_prefetch_read(y + next_y, PQ);
            if (!dx) continue;
            for (int a = 0; a < g.sh; a++)
                for (int b = 0; b < g.sw; b++) {
                    const float *dsrc[MAX_TAPS];
                    float wt[MAX_TAPS];
                    const int taps = gradient_taps(dsrc, wt, dyz, w + (size_t)c * RS, a, b, d, &g);
                    k.correlate(grids + (size_t)(a * g.sw + b) * g.grid, g.hph * g.wg, dsrc, wt,
                                taps);
                }
            if (ahead) nn_prefetch_write(dx + next_x, HW);
            k.merge_phases(dx + (size_t)i * HW, grids, d, &g);
            if (map && map->grad_sums) /* the batch norm's sums of this row */
                nn_batchnorm_grad_sums_row(dx + (size_t)i * HW, x + (size_t)i * HW, (int)HW,
                                           map->mean[c], m.a, m.b, m.relu,
                                           &map->grad_sums[2 * (size_t)i],
                                           &map->grad_sums[2 * (size_t)i + 1], ctx);
        }
    }
    /* each thread's partial sums, in thread order */
    for (int t = 0; t < T; t++) {
        const float *acc = ws + (size_t)t * g.per_thread + (size_t)g.sh * g.sw * (g.x_plane + g.grid) + g.dyz;
        for (int c = 0; c < C; c++) {
            const float *ac = acc + (size_t)c * g.acc;
            for (int r = 0; r < RS; r++) dw[(size_t)c * RS + r] += lanes_sum(ac + (size_t)r * LANES);
            if (db) db[c] += lanes_sum(ac + (size_t)RS * LANES);
        }
    }
}
