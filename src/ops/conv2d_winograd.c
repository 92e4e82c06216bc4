/*
 * conv2d_winograd.c - Winograd F(2x2, 3x3) for 3x3 stride-1 'same'
 * convolutions (pad 1) on CPUs with AVX-512, fp32: the forward pass, the
 * input gradient (a forward correlation of dy with the flipped, transposed
 * kernel) and the weight gradient (the forward formula run backwards, below);
 * and the drivers that run them, the AVX2 kernels of conv2d_winograd_avx2.c
 * and the F(4x4, 3x3) kernels of conv2d_winograd4.c (AVX-512, images up to 28
 * wide) and conv2d_winograd4_avx2.c (AVX2, 5-8 and 13-28 wide), taken where
 * they apply unless nn_ctx_set_winograd(ctx, 2).
 *
 * Each 2x2 block of outputs (a tile) is computed from the 4x4 inputs under it
 * in a transformed space where the 3x3 correlation becomes 16 independent
 * products (Lavin and Gray, "Fast Algorithms for Convolutional Neural
 * Networks", 2016):
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A
 * so the 36 multiply-adds per output and channel pair of the direct method
 * become 16 per four outputs: 2.25x less arithmetic, in 16 GEMMs
 *     M[xi] (cout, tiles) = U[xi] (cout, cin) x V[xi] (cin, tiles).
 * Every vector holds 16 tiles of one tile row, so the input and output
 * transforms read and write the (C, H, W) planes directly, lanes being tile
 * columns: no padded copy, no channels-last transpose. Tiles are taken in
 * groups of tile rows (images concatenated) sized so that V and M of a group
 * stay in the L2 cache; groups go to whichever thread is free, and each
 * output depends only on its own group, so results do not depend on the
 * thread count.
 *
 * The transform matrices hold only 0, +-1 and +-1/2, so rounding stays close
 * to the direct sums (tests/test_ops.c bounds it against the double-precision
 * reference).
 */
#include "ops/conv2d_winograd.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#include "ops/gemm_avx512.h"
#define NN_HAVE_WINOGRAD 1
#define AVX512 __attribute__((target("avx512f")))
#define INLINE_AVX512 __attribute__((target("avx512f"), always_inline)) static inline
#endif

#define VEC 16   /* floats per zmm: tiles per vector */
#define XI WINO_XI
#define GEMM_K 8 /* output channels per GEMM kernel call */
#define GEMM_T 3 /* 16-tile vectors per GEMM kernel call */
/* V and M of one group: about half the core's L2 cache, 1 MB at most */
#define GROUP_BYTES_MAX ((size_t)1 << 20)

static size_t round16(size_t n) { return wino_round(n, 16); }

/* the geometry of the kernels with vec tiles per vector, V and M of a group
 * in about `bytes` */
static wino_geom geom(int cin, int cout, int h, int w, int vec, size_t bytes) {
    wino_geom g;
    g.cin = cin, g.cout = cout, g.h = h, g.w = w, g.vec = vec;
    g.m = 2, g.xi = XI, g.rpv = 0;
    g.th = (h + 1) / 2;
    g.tw = (w + 1) / 2;
    const size_t tiles = bytes / ((size_t)XI * (cin + cout) * sizeof(float));
    g.rows = (int)(tiles / (size_t)g.tw);
    if (g.rows < 1) g.rows = 1;
    g.quantum = 1;
    g.tpad = wino_round((size_t)g.rows * g.tw, vec);
    g.vxi = (size_t)cin * g.tpad + (size_t)vec;
    g.mxi = (size_t)cout * g.tpad + (size_t)vec;
    return g;
}

/* F(4x4, 3x3) (conv2d_winograd4.c, conv2d_winograd4_avx2.c): rpv = vec / tw
 * tile rows per vector of vec tiles, whole vectors per group, V and M of a
 * group in about `bytes`, `least` vectors at least */
static wino_geom geom4(int cin, int cout, int h, int w, int vec, size_t bytes, size_t least) {
    wino_geom g;
    g.cin = cin, g.cout = cout, g.h = h, g.w = w, g.vec = vec;
    g.m = 4, g.xi = WINO4_XI;
    g.th = (h + 3) / 4;
    g.tw = (w + 3) / 4;
    g.rpv = vec / g.tw;
    size_t vectors = bytes / ((size_t)WINO4_XI * (cin + cout) * vec * sizeof(float));
    if (vectors < least) vectors = least;
    if (vectors > WINO4_MAX_VECTORS) vectors = WINO4_MAX_VECTORS;
    if (vectors > GEMM_T) vectors -= vectors % GEMM_T; /* whole 3-vector GEMM calls */
    g.rows = (int)vectors * g.rpv;
    g.quantum = g.rpv;
    g.tpad = vectors * (size_t)vec;
    g.vxi = (size_t)cin * g.tpad + 16;
    g.mxi = (size_t)cout * g.tpad + 16;
    return g;
}

/* F(4x4): groups of `vectors` vectors */
static void set_vectors(wino_geom *g, int vectors) {
    g->rows = vectors * g->rpv;
    g->tpad = (size_t)vectors * (size_t)g->vec;
    g->vxi = (size_t)g->cin * g->tpad + 16;
    g->mxi = (size_t)g->cout * g->tpad + 16;
}

/* Groups of whole images, for the output statistics' epilogue (a group's
 * output planes are then whole rows of the batch norm): tile rows a multiple
 * of th as well as of rpv, the vectors rounded down to that multiple (up
 * when fewer: at most th <= 7 vectors, within the workspace's least of
 * WGRAD4_VECTORS). */
static void whole_images(wino_geom *g) {
    int a = g->th, b = g->rpv; /* their greatest common divisor, in a */
    while (b) {
        const int t = a % b;
        a = b, b = t;
    }
    const int step = g->th / a; /* vectors per whole number of images */
    int vectors = g->rows / g->rpv;
    vectors = vectors >= step ? vectors - vectors % step : step;
    set_vectors(g, vectors);
    g->quantum = step * g->rpv;
}

/* The F(4x4) weight gradient's groups: 8 vectors (128 tile lanes) at least,
 * whatever the L2, so that a thread's share (36 K C floats: 9.4 MB for
 * 256 -> 256 channels) is read and written once per 128 tiles, not per 16.
 * On conv_heavy's 256-channel 7x7 layers the share kernel's samples fell
 * from 1.40x to 0.75x those of the forward GEMM (perf, same run shape); the
 * forward pass keeps L2-sized groups (8 vectors ran it slower there). */
#define WGRAD4_VECTORS 8

/* ... where a thread's share is larger than the L2; smaller shares (16 to
 * 64 channels: 37 to 590 KB) take groups sized by the L2 as the forward's
 * do (3 vectors at least). In one process alternating the two, ResNet-20's
 * 7x7 64-channel backward (formed, batch 64) ran 1.02-1.10x as fast, its
 * 14x14 32-channel one 1.00-1.16x, on a Zen 4 with 1 MB of L2. */
static size_t wgrad4_least(const nn_conv2d_desc *d) {
    const size_t l2 = nn_cpu_probe()->l2_bytes;
    const size_t share = (size_t)WINO4_XI * (size_t)d->K * wino_round((size_t)d->C, 16) * 4;
    return l2 && share <= l2 ? GEMM_T : WGRAD4_VECTORS;
}

static size_t u_floats(const nn_conv2d_desc *d) { return round16((size_t)XI * d->C * d->K); }
static size_t u4_floats(const nn_conv2d_desc *d) {
    return round16((size_t)WINO4_XI * d->C * d->K);
}

/* The tile lanes the GEMMs run over for nu tile rows: F(4x4)'s whole vectors,
 * F(2x2)'s tiles */
static inline size_t group_lanes(const wino_geom *g, int nu) {
    return g->rpv ? (size_t)(nu + g->rpv - 1) / g->rpv * (size_t)g->vec : (size_t)nu * g->tw;
}

static size_t thread_floats(const wino_geom *g) { return (size_t)g->xi * (g->vxi + g->mxi); }

/* the shapes the kernels take, whatever the context */
static int shape_ok(const nn_conv2d_desc *d) {
    return !d->bf16 && d->groups <= 1 && d->R == 3 && d->S == 3 && d->stride_h == 1 &&
           d->stride_w == 1 && d->pad_h == 1 && d->pad_w == 1 && d->C % GEMM_K == 0 &&
           d->K % GEMM_K == 0 && d->C >= 16 && d->K >= 16 && !nn_conv2d_dilated(d);
}

/* F(4x4, 3x3), unless the context asks for F(2x2) alone: with AVX-512 rows
 * of at most 7 tiles (conv2d_winograd4.c), with AVX2 those whose tile rows
 * fill 8 lanes (conv2d_winograd4_avx2.c) */
static int f4_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    if (ctx->winograd < 4 || d->W > WINO4_MAX_W) return 0;
#ifdef NN_HAVE_WINOGRAD
    return ctx->isa >= NN_ISA_AVX512 || nn_wino4_avx2_width_ok(d->W);
#else
    return 0;
#endif
}

int nn_conv2d_winograd4_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return nn_conv2d_winograd_ok(d, ctx) && f4_ok(d, ctx);
}

int nn_conv2d_winograd_forms_dy(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return nn_conv2d_winograd_ok(d, ctx) && f4_ok(d, ctx) && !d->relu;
}

int nn_conv2d_winograd_writes_input(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return nn_conv2d_winograd_ok(d, ctx) && f4_ok(d, ctx) && ctx->isa >= NN_ISA_AVX512;
}

int nn_conv2d_winograd_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
#ifdef NN_HAVE_WINOGRAD
    return nn_ctx_winograd(ctx) && shape_ok(d);
#else
    (void)d;
    (void)ctx;
    return 0;
#endif
}

/* the weight gradient's buffers after V and the transformed dy (in M's
 * place): V of one point transposed (tiles, C rounded up to a whole vector),
 * the thread's share of the transformed gradient (16, K, C rounded up) and
 * of db */
static size_t vt_floats(const wino_geom *g) { return g->tpad * wino_round((size_t)g->cin, g->vec); }
static size_t share_floats(const wino_geom *g) {
    return (size_t)g->xi * g->cout * wino_round((size_t)g->cin, g->vec);
}
static size_t wgrad_thread_floats(const wino_geom *g) {
    return thread_floats(g) + vt_floats(g) + share_floats(g) + round16((size_t)g->cout);
}

/* the F(4x4) weight gradient's largest geometry: groups of WGRAD4_VECTORS
 * vectors at least (wgrad4_least: fewer where the share is small), of whole
 * images (the formed backward forms dy image by image;
 * the plain one takes the same groups, so that both sum the same tiles in
 * the same order) */
static wino_geom wgrad4_geom(const nn_conv2d_desc *d, int vec, size_t bytes) {
    wino_geom g = geom4(d->C, d->K, d->H, d->W, vec, bytes, WGRAD4_VECTORS);
    whole_images(&g);
    return g;
}

/* The formed backward's scratch of a thread: dy of a weight-gradient
 * group's images (whole_images) */
static size_t formed_dy_floats(const wino_geom *gw) {
    return round16((size_t)(gw->rows / gw->th) * gw->cout * gw->h * gw->w);
}

size_t nn_conv2d_winograd_workspace(const nn_conv2d_desc *d, int threads) {
    if (!shape_ok(d)) return 0;
    /* the input gradient's geometry (cin, cout swapped) needs no more than
     * this, the kernels with 8 tiles per vector no more than those of 16,
     * and smaller groups no more than the largest */
    const wino_geom g = geom(d->C, d->K, d->H, d->W, 16, GROUP_BYTES_MAX);
    const size_t f2 = u_floats(d) + (size_t)threads * wgrad_thread_floats(&g);
    if (d->W > WINO4_MAX_W) return f2;
    /* F(4x4): the same for the input gradient (cin + cout the same); the
     * weight gradient's buffers hold those of the forward pass but for U.
     * The formed backward (nn_conv2d_backward_winograd_formed) keeps U and,
     * per thread, the weight gradient's buffers (the input gradient's V and
     * M in its V's place) and its dy. */
    size_t most = f2;
    for (int vec = 8; vec <= 16; vec += 8) { /* AVX2, AVX-512 */
        const wino_geom gw = wgrad4_geom(d, vec, GROUP_BYTES_MAX);
        const size_t f4 =
            u4_floats(d) + (size_t)threads * (wgrad_thread_floats(&gw) + formed_dy_floats(&gw));
        if (f4 > most) most = f4;
    }
    return most;
}

#ifdef NN_HAVE_WINOGRAD

/* A thread's weight-gradient buffers, in wgrad_thread_floats */
typedef struct {
    float *v, *yh, *vt, *share, *dbt;
} wgrad_bufs;

static wgrad_bufs wgrad_bufs_of(float *base, const wino_geom *g, int t) {
    wgrad_bufs b;
    b.v = base + (size_t)t * wgrad_thread_floats(g);
    b.yh = b.v + (size_t)g->xi * g->vxi;
    b.vt = b.yh + (size_t)g->xi * g->mxi;
    b.share = b.vt + vt_floats(g);
    b.dbt = b.share + share_floats(g);
    return b;
}

int nn_wino4_group_rows(wino4_rows *all, long u0, int nu, size_t image, const wino_geom *g) {
    int vi = 0;
    for (int k0 = 0; k0 < nu; k0 += g->rpv, vi++) {
        wino4_rows *r = &all[vi];
        const long u = u0 + k0;
        long img = u / g->th;
        int tr = (int)(u % g->th);
        r->n = nu - k0 < g->rpv ? nu - k0 : g->rpv;
        for (int sl = 0; sl < r->n; sl++) {
            for (int a = 0; a < 6; a++) {
                const int h = 4 * tr - 1 + a;
                r->at[a][sl] = h < 0 || h >= g->h ? WINO4_NO_ROW
                                                  : (size_t)img * image + (size_t)h * g->w;
            }
            if (++tr == g->th) tr = 0, img++;
        }
    }
    return vi;
}

float *nn_wino_share(float *base, const wino_geom *g, int t) {
    return wgrad_bufs_of(base, g, t).share;
}

/* V and M of a group: half the L2 (measured on a Zen 3 with 512 KB: 256 KB
 * groups ran ResNet-20 10% faster than 1 MB ones), 1 MB at most */
static size_t group_bytes(void) {
    const size_t l2 = nn_cpu_probe()->l2_bytes;
    return l2 && l2 / 2 < GROUP_BYTES_MAX ? l2 / 2 : GROUP_BYTES_MAX;
}

/* U[xi][o / 8][i][o % 8] = (G g G^T)[xi] for the 3x3 kernel g of output o and
 * input i (the GEMM kernel's 8 outputs for one input in 32 consecutive bytes),
 * 16 outputs at a time: g[t] at w + o*so + i*si + tap(t), tap(t) = t or,
 * flipped, 8 - t. G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
AVX512 static void transform_weight_block(float *u, const float *w, int cin, int cout, size_t so,
                                          size_t si, int flip, int i, int o0) {
    const __mmask16 m = nn_first_lanes(cout - o0);
    const __m512i idx = nn_idx_strided((int)so);
    const float *base = w + (size_t)o0 * so + (size_t)i * si;
    __m512 g[9];
    for (int t = 0; t < 9; t++)
        g[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + (flip ? 8 - t : t), 4);
    const __m512 half = _mm512_set1_ps(0.5f);
    __m512 a[4][3]; /* G g: 4 rows of 3 */
    for (int s = 0; s < 3; s++) {
        const __m512 g0 = g[s], g1 = g[3 + s], g2 = g[6 + s];
        const __m512 sum = _mm512_mul_ps(half, _mm512_add_ps(g0, g2));
        const __m512 h1 = _mm512_mul_ps(half, g1);
        a[0][s] = g0;
        a[1][s] = _mm512_add_ps(sum, h1);
        a[2][s] = _mm512_sub_ps(sum, h1);
        a[3][s] = g2;
    }
    for (int r = 0; r < 4; r++) { /* (G g) G^T */
        const __m512 sum = _mm512_mul_ps(half, _mm512_add_ps(a[r][0], a[r][2]));
        const __m512 h1 = _mm512_mul_ps(half, a[r][1]);
        const __m512 row[4] = {a[r][0], _mm512_add_ps(sum, h1), _mm512_sub_ps(sum, h1), a[r][2]};
        for (int c = 0; c < 4; c++) {
            float *dst =
                u + (size_t)(r * 4 + c) * cin * cout + (size_t)o0 * cin + (size_t)i * GEMM_K;
            _mm256_storeu_ps(dst, _mm512_castps512_ps256(row[c]));
            if (o0 + GEMM_K < cout)
                _mm256_storeu_ps(
                    dst + (size_t)GEMM_K * cin,
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(row[c]), 1)));
        }
    }
}

/* (OpenMP loop bodies call the AVX-512 functions rather than hold their code:
 * clang compiles a body as a function of its own, without the caller's
 * target attribute.) */
static void transform_weights(float *u, const float *w, int cin, int cout, size_t so, size_t si,
                              int flip, int threads) {
    const int nb = (cout + VEC - 1) / VEC;
    /* the jobs in U's order (conv2d_winograd4_avx2.c) */
    NN_PARALLEL_FOR(threads)
    for (int job = 0; job < cin * nb; job++)
        transform_weight_block(u, w, cin, cout, so, si, flip, job % cin, job / cin * VEC);
}

/* 16 floats of a mapped row (zero outside [0, n): the padding of the batch
 * norm's output); the ReLU keeps v where v > 0 or v is NaN, as the batch
 * norm's normalizing pass does (the same values, bit for bit) */
INLINE_AVX512 __m512 load_row_mapped(const float *src, int at, int n, const chan_map *m) {
    const int cnt = n - at;
    if (cnt <= 0) return _mm512_setzero_ps();
    const __mmask16 keep = nn_first_lanes(cnt);
    return nn_map_lanes(_mm512_maskz_loadu_ps(keep, src + at), m->a, m->b, m->relu, keep);
}


INLINE_AVX512 __m512 load_row(const float *src, const float *mask, int at, int n) {
    int cnt = n - at;
    if (cnt <= 0) return _mm512_setzero_ps();
    return nn_load_relu_masked(src + at, mask ? mask + at : NULL, cnt);
}


/* d B for one input row under 16 tiles (tiles 16*chunk.. on): with
 * x_k[j] = row[32*chunk + 2j + k - 1] (zero outside the row), the four
 * vectors x_0 - x_2, x_1 + x_2, x_2 - x_1, x_1 - x_3. */
typedef struct {
    __m512 m0, m1, m2, m3;
} row4;

INLINE_AVX512 row4 row_transform(const float *row, const float *mask, const chan_map *m, int w,
                                 int chunk) {
    const __m512i even = nn_idx_even(), odd = nn_idx_odd();
    const int at = 32 * chunk;
    const int mapped = m && m->on;
    const __m512 lo = mapped ? load_row_mapped(row, at, w, m) : load_row(row, mask, at, w);
    const __m512 hi = mapped ? load_row_mapped(row, at + 16, w, m) : load_row(row, mask, at + 16, w);
    const __m512 x1 = _mm512_permutex2var_ps(lo, even, hi); /* row[at + 2j] */
    const __m512 x2 = _mm512_permutex2var_ps(lo, odd, hi);  /* row[at + 2j + 1] */
    const __m512 prev = _mm512_set1_ps(mapped ? wino_load_one_mapped(row, at - 1, w, m)
                                              : wino_load_one(row, mask, at - 1, w));
    const __m512 next = _mm512_set1_ps(mapped ? wino_load_one_mapped(row, at + 32, w, m)
                                              : wino_load_one(row, mask, at + 32, w));
    const __m512 x0 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(x2), _mm512_castps_si512(prev), 15));
    const __m512 x3 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(x1), 1));
    row4 t;
    t.m0 = _mm512_sub_ps(x0, x2);
    t.m1 = _mm512_add_ps(x1, x2);
    t.m2 = _mm512_sub_ps(x2, x1);
    t.m3 = _mm512_sub_ps(x1, x3);
    return t;
}

INLINE_AVX512 row4 row_zero(void) {
    row4 t;
    t.m0 = t.m1 = t.m2 = t.m3 = _mm512_setzero_ps();
    return t;
}

/* row_transform of input row h of a plane, zero outside it */
INLINE_AVX512 row4 row_at(const float *plane, const float *mask, const chan_map *m,
                          const wino_geom *g, int chunk,
                          int h) {
    if (h < 0 || h >= g->h) return row_zero();
    const size_t at = (size_t)h * g->w;
    return row_transform(plane + at, mask ? mask + at : NULL, m, g->w, chunk);
}

/* B^T over the four rows' column m: points 4r + m of the tile, r = 0..3 */
INLINE_AVX512 void store_column(float *dst, size_t stride, __mmask16 lanes, __m512 a, __m512 b,
                                __m512 c, __m512 d) {
    _mm512_mask_storeu_ps(dst, lanes, _mm512_sub_ps(a, c));
    _mm512_mask_storeu_ps(dst + 4 * stride, lanes, _mm512_add_ps(b, c));
    _mm512_mask_storeu_ps(dst + 8 * stride, lanes, _mm512_sub_ps(c, b));
    _mm512_mask_storeu_ps(dst + 12 * stride, lanes, _mm512_sub_ps(b, d));
}

/* V[xi][c][t] for the tile rows u0.. u0+nu-1 of the batch (tile row u: image
 * u / th, row u % th), t = (u - u0) * tw + tile column: B^T d B with
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. Tile rows overlap by two
 * input rows: a tile row reuses the last two row transforms of the one above.
 */
AVX512 static void transform_input(float *v, const float *in, const float *mask,
                                   const nn_conv2d_map *map, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cin * plane;
    for (int c = 0; c < g->cin; c++)
        for (int chunk = 0; chunk * VEC < g->tw; chunk++) {
            chan_map cm = {0, 0, 0.0f, 0.0f}; /* a prologue: in is the batch norm's input */
            if (map) cm.on = 1, cm.relu = map->relu, cm.a = map->scale[c], cm.b = map->shift[c];
            const __mmask16 lanes = nn_first_lanes(g->tw - chunk * VEC);
            row4 r0 = row_zero(), r1 = row_zero(), r2 = row_zero(), r3 = row_zero();
            for (int k = 0; k < nu; k++) {
                const long u = u0 + k;
                const int tr = (int)(u % g->th);
                const size_t at = (size_t)(u / g->th) * image + (size_t)c * plane;
                const float *src = in + at, *msk = mask ? mask + at : NULL;
                const int h0 = 2 * tr - 1;
                if (k == 0 || tr == 0) { /* a group's or an image's first tile row */
                    r0 = row_at(src, msk, &cm, g, chunk, h0);
                    r1 = row_at(src, msk, &cm, g, chunk, h0 + 1);
                } else {
                    r0 = r2;
                    r1 = r3;
                }
                r2 = row_at(src, msk, &cm, g, chunk, h0 + 2);
                r3 = row_at(src, msk, &cm, g, chunk, h0 + 3);
                float *dst = v + (size_t)c * g->tpad + (size_t)k * g->tw + chunk * VEC;
                store_column(dst, g->vxi, lanes, r0.m0, r1.m0, r2.m0, r3.m0);
                store_column(dst + g->vxi, g->vxi, lanes, r0.m1, r1.m1, r2.m1, r3.m1);
                store_column(dst + 2 * g->vxi, g->vxi, lanes, r0.m2, r1.m2, r2.m2, r3.m2);
                store_column(dst + 3 * g->vxi, g->vxi, lanes, r0.m3, r1.m3, r2.m3, r3.m3);
            }
        }
}

/* m[k][t] = sum over c of u[c][k] * v[c][t] for GEMM_K outputs k and NT
 * vectors of 16 tiles (gemm_avx512.h): the outputs' weights broadcast from
 * their packed [c][8] block, the tiles loaded. */
#define NN_GEMM(NT) /* two calls: the one without a feed has no trace of it */                     \
    AVX512 static void gemm_##NT(float *m, size_t ldm, const float *u, int ldu, const float *v,    \
                                 size_t ldv, int cin, nn_line_feed *feed) {                        \
        if (feed)                                                                                  \
            nn_gemm8_avx512(m, ldm, u, 1, (size_t)ldu, v, ldv, (size_t)cin, NT, 0xFFFF, 0, feed);  \
        else                                                                                       \
            nn_gemm8_avx512(m, ldm, u, 1, (size_t)ldu, v, ldv, (size_t)cin, NT, 0xFFFF, 0, NULL);  \
    }
NN_GEMM(1)
NN_GEMM(2)
NN_GEMM(3)
#undef NN_GEMM

/* M[xi] (cout, tiles) = U[xi]^T x V[xi] for the first `tiles` tiles, every
 * point xi of g */
void nn_wino_multiply_avx512(float *mm, const float *u, const float *v, const wino_geom *g,
                             size_t tiles, nn_line_feed *feed) {
    typedef void (*gemm_fn)(float *, size_t, const float *, int, const float *, size_t, int,
                            nn_line_feed *);
    static const gemm_fn fns[GEMM_T] = {gemm_1, gemm_2, gemm_3};
    const size_t vecs = (tiles + VEC - 1) / VEC;
    for (int xi = 0; xi < g->xi; xi++) {
        const float *ux = u + (size_t)xi * g->cin * g->cout;
        const float *vx = v + (size_t)xi * g->vxi;
        float *mx = mm + (size_t)xi * g->mxi;
        for (size_t b0 = 0; b0 < vecs; b0 += GEMM_T) {
            const int nt = vecs - b0 < GEMM_T ? (int)(vecs - b0) : GEMM_T;
            for (int k0 = 0; k0 < g->cout; k0 += GEMM_K)
                fns[nt - 1](mx + (size_t)k0 * g->tpad + b0 * VEC, g->tpad, ux + (size_t)k0 * g->cin,
                            GEMM_K, vx + b0 * VEC, g->tpad, g->cin, feed);
        }
    }
}

/* One output row of 16 tiles from a row of A^T M: (s0 + s1 + s2, s1 - s2 - s3)
 * + bias, ReLU if asked, the tiles' two columns interleaved into the first n
 * (up to 32) outputs of dst. */
INLINE_AVX512 void store_pair(float *dst, int n, __m512 s0, __m512 s1, __m512 s2, __m512 s3,
                              __m512 bias, int relu, int add) {
    const __m512i lo_idx = nn_idx_interleave_lo(), hi_idx = nn_idx_interleave_hi();
    __m512 y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), s2), bias);
    __m512 y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s1, s2), s3), bias);
    if (relu) { /* max(0, v) returns v when v is NaN: NaN passes */
        y0 = _mm512_max_ps(_mm512_setzero_ps(), y0);
        y1 = _mm512_max_ps(_mm512_setzero_ps(), y1);
    }
    const __mmask16 m0 = nn_first_lanes(n), m1 = n > VEC ? nn_first_lanes(n - VEC) : 0;
    __m512 lo = _mm512_permutex2var_ps(y0, lo_idx, y1), hi = _mm512_permutex2var_ps(y0, hi_idx, y1);
    if (add) { /* into what is there, as dst[i] += value adds it */
        lo = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, dst), lo);
        hi = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, dst + VEC), hi);
    }
    _mm512_mask_storeu_ps(dst, m0, lo);
    if (n > VEC) _mm512_mask_storeu_ps(dst + VEC, m1, hi);
}

/* out planes (cout, h, w) of the tile rows u0.. = A^T M A (+ bias, ReLU if
 * asked), A^T = [1 1 1 0; 0 1 -1 -1]: two output rows of 16 tiles at a time,
 * the tiles' 2 columns interleaved into 32 consecutive outputs. */
AVX512 static void transform_output(float *out, const float *mm, const float *bias, int relu,
                                    int add, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const size_t xi_stride = g->mxi;
    for (int k = 0; k < g->cout; k++) {
        const __m512 bk = _mm512_set1_ps(bias ? bias[k] : 0.0f);
        for (int j = 0; j < nu; j++) {
            const long u = u0 + j;
            const long img = u / g->th;
            const int tr = (int)(u % g->th);
            float *row0 = out + (size_t)img * image + (size_t)k * plane + (size_t)(2 * tr) * g->w;
            for (int chunk = 0; chunk * VEC < g->tw; chunk++) {
                const float *src = mm + (size_t)k * g->tpad + (size_t)j * g->tw + chunk * VEC;
#define M_AT(p) _mm512_loadu_ps(src + (size_t)(p)*xi_stride)
                /* A^T M, column by column: s0 = m0 + m1 + m2, s1 = m1 - m2 - m3 */
#define COLUMN(c, s0, s1)                                                                          \
    const __m512 s0 = _mm512_add_ps(_mm512_add_ps(M_AT(c), M_AT(4 + c)), M_AT(8 + c));             \
    const __m512 s1 = _mm512_sub_ps(_mm512_sub_ps(M_AT(4 + c), M_AT(8 + c)), M_AT(12 + c))
                COLUMN(0, a0, b0);
                COLUMN(1, a1, b1);
                COLUMN(2, a2, b2);
                COLUMN(3, a3, b3);
#undef COLUMN
#undef M_AT
                const int n = g->w - 32 * chunk;
                float *dst = row0 + 32 * chunk;
                store_pair(dst, n, a0, a1, a2, a3, bk, relu, add);
                if (2 * tr + 1 < g->h) store_pair(dst + g->w, n, b0, b1, b2, b3, bk, relu, add);
            }
        }
    }
}

/* The AVX-512 kernels (add_wgrad_row is below) */
AVX512 static void add_wgrad_row(float *dw, float *base, int T, const wino_geom *g, int k);

AVX512 static void transform_dy(float *yh, float *dbt, const float *dy, const float *mask,
                                const wino_geom *g, long u0, int nu);
static const wino_kernels avx512_kernels = {
    VEC,          transform_weights, transform_input,  nn_wino_multiply_avx512, transform_output,
    transform_dy, nn_wino_accumulate_wgrad_avx512,  add_wgrad_row,
};

/* the widest kernels ctx allows (nn_conv2d_winograd_ok: AVX2 at least) */
static const wino_kernels *kernels_of(const nn_ctx *ctx) {
    return ctx->isa >= NN_ISA_AVX512 ? &avx512_kernels : &nn_wino_avx2;
}

/* the kernels for d (F(4x4) where f4_ok) and their geometry: groups of V
 * and M in about `bytes`, F(4x4)'s of `least` vectors at least */
static const wino_kernels *kernels_for(const nn_conv2d_desc *d, const nn_ctx *ctx, int cin,
                                       int cout, size_t least, wino_geom *g) {
    if (f4_ok(d, ctx)) {
        const wino_kernels *K = ctx->isa >= NN_ISA_AVX512 ? &nn_wino4_avx512 : &nn_wino4_avx2;
        /* Whole 3-vector GEMM calls at least. Groups sized by the L2 alone
         * held one vector from 64 + 64 channels up on AVX2 (half a Zen 3's
         * L2), from 128 + 128 on AVX-512 (half a 2 MB L2), and the GEMM
         * then read every transformed weight once per vector, from past
         * the L2. AVX2, Zen 3: ResNet-20's 64 -> 64 layers forward 5.4 ->
         * 4.8 ms, backward 10.5 -> 10.0 ms at batch 256; 128 -> 128, 14x14:
         * 18.5 -> 15.6 ms, 36.9 -> 33.7 ms at 64. AVX-512, a Xeon with 2 MB,
         * batch 64: 128 -> 128, 14x14 11.2 -> 9.0 / 23.7 -> 21.2 ms;
         * 256 -> 256, 7x7 11.9 -> 10.7 / 25.2 -> 23.8 ms. */
        if (least < GEMM_T) least = GEMM_T;
        *g = geom4(cin, cout, d->H, d->W, K->vec, group_bytes(), least);
        return K;
    }
    const wino_kernels *K = kernels_of(ctx);
    *g = geom(cin, cout, d->H, d->W, K->vec, group_bytes());
    return K;
}

/* the weight gradient's kernels and geometry: F(4x4)'s groups of
 * wgrad4_least vectors at least, of whole images (wgrad4_geom bounds them) */
static const wino_kernels *wgrad_kernels(const nn_conv2d_desc *d, const nn_ctx *ctx,
                                         wino_geom *g) {
    const wino_kernels *K = kernels_for(d, ctx, d->C, d->K, wgrad4_least(d), g);
    if (g->m == 4) whole_images(g);
    return K;
}

/* What correlate does with a group's whole images (whole_images) while their
 * output planes are in cache, for a batch norm: the statistics of the
 * forward's output (the batch norm after it: stats), or the gradient sums
 * of the batch norm before it, whose output the input gradient is (its
 * prologue: grad->grad_sums, over x, the batch norm's input). Each the row
 * kernel of the batch norm's own pass, so the same bytes. */
typedef struct {
    double *stats;
    const nn_conv2d_map *grad;
    const float *x;
} group_epilogue;

static void run_epilogue(const group_epilogue *ep, const float *out, const wino_geom *g,
                         long img0, long img1, const nn_ctx *ctx) {
    const int len = g->h * g->w;
    const size_t image = (size_t)g->cout * len;
    for (long img = img0; img < img1; img++) {
        if (ep->stats) {
            nn_batchnorm_row_stats(out + img * image, g->cout, len,
                                   ep->stats + 2 * (size_t)img * g->cout, ctx);
            continue;
        }
        const nn_conv2d_map *m = ep->grad;
        for (int c = 0; c < g->cout; c++) {
            const size_t row = (size_t)img * g->cout + c;
            nn_batchnorm_grad_sums_row(out + row * len, ep->x + row * len, len, m->mean[c],
                                       m->scale[c], m->shift[c], m->relu, &m->grad_sums[2 * row],
                                       &m->grad_sums[2 * row + 1], ctx);
        }
    }
}

/* How the batch's `units` tile rows fall into groups: whole quanta
 * (g->quantum tile rows), at most g->rows per group, as few groups as that
 * allows rounded up to a multiple of the threads (one each at least where
 * there are quanta enough), and the quanta spread evenly (sizes differ by
 * one quantum at most). Groups of the largest size and a short last one had
 * given one thread a group more: 16 vectors in groups of 3 gave 9 and 7
 * (ResNet-20's 7x7 layers and conv_heavy's at batch 64 on 2 threads).
 * Outputs depend only on their own tiles, so y and dx do not depend on the
 * split; the weight gradient's sums depend on it, so on the thread count. */
typedef struct {
    long units, quanta, groups;
    int quantum;
} group_plan;

static group_plan plan_groups(const wino_geom *g, long units, int threads) {
    group_plan p;
    p.units = units;
    p.quantum = g->quantum > 0 ? g->quantum : 1;
    p.quanta = (units + p.quantum - 1) / p.quantum;
    long per = g->rows / p.quantum;
    if (per < 1) per = 1;
    p.groups = (p.quanta + per - 1) / per;
    if (threads > 1) p.groups = (p.groups + threads - 1) / threads * threads;
    if (p.groups > p.quanta) p.groups = p.quanta;
    return p;
}

/* group gi's first tile row and tile rows */
static void group_span(const group_plan *p, long gi, long *u0, int *nu) {
    const long a = gi * p->quanta / p->groups, b = (gi + 1) * p->quanta / p->groups;
    const long end = b * p->quantum < p->units ? b * p->quantum : p->units;
    *u0 = a * p->quantum;
    *nu = (int)(end - *u0);
}

/* ----------------------------------------------------------- feeding
 * A group's arithmetic (the GEMMs) runs on V and M in the L2; the planes it
 * reads and writes come from memory at large batches (ResNet-20's 28x28
 * layers at batch 256: 12.8 MB a tensor). The GEMMs ask for those lines as
 * they multiply (nn_line_feed): the group's own output lines, which the
 * output transform writes next, and the lines of the thread's next group's
 * inputs. Spans are of whole images (a group's tile rows may start or end
 * inside one). Each thread runs a contiguous share of the groups, so it
 * knows its next one (nn_shares_take: a thread that has run out steals from
 * the back of another's share, whose owner's guess then goes unused). */

/* range r of f: the lines of the whole images under the tile rows of group
 * gi (none past the last group), planes of `channels` */
static void feed_images(nn_line_feed *f, int r, const float *base, int channels,
                        const wino_geom *g, const group_plan *plan, long gi) {
    f->at[r] = NULL, f->lines[r] = 0;
    if (!base || gi >= plan->groups) return;
    long u0;
    int nu;
    group_span(plan, gi, &u0, &nu);
    const size_t image = (size_t)channels * g->h * g->w;
    const long i0 = u0 / g->th, i1 = (u0 + nu - 1) / g->th + 1;
    f->at[r] = (const char *)(base + (size_t)i0 * image);
    f->lines[r] = ((size_t)(i1 - i0) * image * sizeof(float) + 63) / 64;
}

/* two lines a step where one would not reach the end in `steps` */
static void feed_pace(nn_line_feed *f, size_t steps) {
    size_t total = 0;
    for (int r = 0; r < NN_FEED_RANGES; r++) total += f->lines[r];
    f->per_step = total > steps ? 2 : 1;
}

/* steps of the sums of K->multiply over `tiles` (the AVX-512 kernels', the
 * only ones that take a feed) */
static size_t multiply_steps(const wino_geom *g, size_t tiles) {
    const size_t vecs = (tiles + 15) / 16;
    return (size_t)g->xi * ((vecs + GEMM_T - 1) / GEMM_T) *
           (size_t)((g->cout + GEMM_K - 1) / GEMM_K) * (size_t)g->cin;
}

/* group gi of correlate; next: the group this thread runs next (its inputs
 * are fed) */
static void correlate_group(const wino_kernels *K, float *out, const float *in, const float *mask,
                            const nn_conv2d_map *map, const float *u, const float *bias, int relu,
                            int add, const group_epilogue *ep, const wino_geom *g,
                            const group_plan *plan, long gi, long next, float *v, float *mm,
                            const nn_ctx *ctx) {
    long u0;
    int nu;
    group_span(plan, gi, &u0, &nu);
    const size_t tiles = group_lanes(g, nu);
    const float *second = mask; /* the next group's second input to feed */
    if (map && map->out) {
        /* the batch norm's output of the group's whole images (writes
         * input): its own pass over them, into the cache, and the
         * transform reads that as it is */
        NN_ASSERT(u0 % g->th == 0 && (u0 + nu == plan->units || nu % g->th == 0));
        const long i0 = u0 / g->th, i1 = (u0 + nu + g->th - 1) / g->th;
        const size_t image = (size_t)g->cin * g->h * g->w;
        nn_batchnorm_map_rows(map->out + i0 * image, in + i0 * image,
                              map->res ? map->res + i0 * image : NULL, map->scale, map->shift,
                              map->relu, g->cin, g->h * g->w, (int)(i1 - i0), 1, ctx);
        second = map->res;
        K->transform_input(v, map->out, NULL, NULL, g, u0, nu);
    } else {
        K->transform_input(v, in, mask, map, g, u0, nu);
    }
    nn_line_feed feed; /* this group's output, the next one's inputs */
    feed_images(&feed, 0, out, g->cout, g, plan, gi);
    feed_images(&feed, 1, in, g->cin, g, plan, next);
    feed_images(&feed, 2, second, g->cin, g, plan, next);
    feed_pace(&feed, multiply_steps(g, tiles));
    K->multiply(mm, u, v, g, tiles, &feed);
    K->transform_output(out, mm, bias, relu, add, g, u0, nu);
    if (ep) { /* the group's images, whole (whole_images), in cache */
        NN_ASSERT(u0 % g->th == 0 && (u0 + nu == plan->units || nu % g->th == 0));
        run_epilogue(ep, out, g, u0 / g->th, (u0 + nu) / g->th, ctx);
    }
}

/* out = the 3x3 'same' correlation of in with the transformed weights u, for
 * n images, over the threads' V and M buffers after u in ws. */
static void correlate(const wino_kernels *K, float *out, const float *in, const float *mask,
                      const nn_conv2d_map *map, const float *u, const float *bias, int relu,
                      int add, const group_epilogue *ep, const wino_geom *g, int n, float *ws,
                      nn_ctx *ctx) {
    const group_plan plan = plan_groups(g, (long)n * g->th, ctx->threads);
    const long groups = plan.groups;
    const int T = ctx->threads < groups ? ctx->threads : (int)groups;
    size_t fewest = (size_t)g->rows * g->tw; /* the shortest group's tiles */
    for (long gi = 0; g->rpv == 0 && gi < groups; gi++) {
        long u0;
        int nu;
        group_span(&plan, gi, &u0, &nu);
        if ((size_t)nu * g->tw < fewest) fewest = (size_t)nu * g->tw;
    }
    uint64_t cells[T];
    nn_shares_init(cells, T, groups);
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        float *v = ws + (size_t)t * thread_floats(g);
        float *mm = v + (size_t)g->xi * g->vxi;
        /* lanes past a group's tiles are computed, never stored. Zeroed once
         * here, they hold no uninitialized NaN or denormal; later they hold
         * only this call's transformed inputs. (F(4x4) writes whole vectors.) */
        for (int xi = 0; g->rpv == 0 && xi < g->xi; xi++)
            for (int c = 0; c < g->cin; c++)
                memset(v + (size_t)xi * g->vxi + (size_t)c * g->tpad + fewest, 0,
                       (g->tpad - fewest) * sizeof(float));
        /* contiguous shares, so that the next group is known (stolen from
         * the back by a thread that has run out) */
        long gi, next;
        while ((gi = nn_shares_take(cells, T, t, &next)) >= 0)
            correlate_group(K, out, in, mask, map, u, bias, relu, add, ep, g, &plan, gi,
                            next >= 0 ? next : groups, v, mm, ctx);
    }
}

int nn_conv2d_winograd_stats_in_cache(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return f4_ok(d, ctx);
}

void nn_conv2d_forward_winograd_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                       double *stats, const float *w, const float *b,
                                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    const int f4 = f4_ok(d, ctx);
    wino_geom g;
    const wino_kernels *K = kernels_for(d, ctx, d->C, d->K, 1, &g);
    NN_ASSERT(!stats || f4); /* nn_conv2d_winograd_stats_in_cache */
    NN_ASSERT(!map || !map->out || f4); /* nn_conv2d_winograd_writes_input */
    if (stats || (map && map->out)) whole_images(&g);
    const group_epilogue ep = {stats, NULL, NULL};
    /* w[k][c][r][s]: output k at stride C*9, input c at stride 9 */
    K->transform_weights(ws, w, d->C, d->K, (size_t)d->C * 9, 9, 0, ctx->threads);
    correlate(K, y, x, NULL, map, ws, b, d->relu, 0, stats ? &ep : NULL, &g, n,
              ws + (f4 ? u4_floats(d) : u_floats(d)), ctx);
}

void nn_conv2d_forward_winograd(float *y, const float *x, const float *w, const float *b,
                                const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_forward_winograd_mapped(y, x, NULL, NULL, w, b, d, n, ws, ctx);
}

void nn_conv2d_backward_data_winograd_mapped(float *dx, const float *dy, const float *y,
                                             const float *x, const nn_conv2d_map *map,
                                             const float *w, const nn_conv2d_desc *d, int n,
                                             float *ws, nn_ctx *ctx) {
    const int f4 = f4_ok(d, ctx);
    wino_geom g;
    const wino_kernels *K = kernels_for(d, ctx, d->K, d->C, 1, &g);
    const group_epilogue ep = {NULL, map, x};
    const int sums = map && map->grad_sums; /* dx is the whole gradient: no dx_add */
    NN_ASSERT(!sums || (x && !d->dx_add));
    if (sums && f4) whole_images(&g);
    /* the flipped kernel with inputs and outputs swapped: output c, input k */
    K->transform_weights(ws, w, d->K, d->C, 9, (size_t)d->C * 9, 1, ctx->threads);
    correlate(K, dx, dy, d->relu ? y : NULL, NULL, ws, NULL, 0, d->dx_add,
              sums && f4 ? &ep : NULL, &g, n, ws + (f4 ? u4_floats(d) : u_floats(d)), ctx);
    if (sums && !f4) { /* F(2x2) (a context changed since planning): a pass of their own */
        NN_PARALLEL_FOR(ctx->threads)
        for (int i = 0; i < n; i++) run_epilogue(&ep, dx, &g, i, i + 1, ctx);
    }
}

void nn_conv2d_backward_data_winograd(float *dx, const float *dy, const float *y, const float *w,
                                      const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_backward_data_winograd_mapped(dx, dy, y, NULL, NULL, w, d, n, ws, ctx);
}

/* ---------------------------------------------------------- weight gradient
 * Through the forward formula: with M = U (.) V per tile and Y = A^T M A,
 *     dU = sum over tiles of (A dY A^T) (.) V,   dW = G^T dU G,
 * so per point xi: dU[xi] (K, C) = Yh[xi] (K, tiles) x V[xi]^T, where Yh is dy
 * transformed by A (4x2) = [1 0; 1 1; 1 -1; 0 -1]. Each thread sums a fixed
 * share of the groups; the shares are added in thread order. */

/* Yh[xi][k][t] = A dy A^T for the tile rows u0.. of the (masked) output
 * gradient, and dbt[k] += the sum of dy[k] over them. */
AVX512 static void transform_dy(float *yh, float *dbt, const float *dy, const float *mask,
                                const wino_geom *g, long u0, int nu) {
    const __m512i even = nn_idx_even(), odd = nn_idx_odd();
    const __m512 zero = _mm512_setzero_ps();
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const size_t xs = g->mxi;
    for (int k = 0; k < g->cout; k++) {
        __m512 sum = zero;
        for (int j = 0; j < nu; j++) {
            const long u = u0 + j;
            const int tr = (int)(u % g->th);
            const size_t at = (size_t)(u / g->th) * image + (size_t)k * plane;
            const float *row0 = dy + at + (size_t)(2 * tr) * g->w;
            const float *mrow0 = mask ? mask + at + (size_t)(2 * tr) * g->w : NULL;
            const int second = 2 * tr + 1 < g->h;
            for (int chunk = 0; chunk * VEC < g->tw; chunk++) {
                const int c0 = 32 * chunk;
                const __m512 lo0 = load_row(row0, mrow0, c0, g->w);
                const __m512 hi0 = load_row(row0, mrow0, c0 + 16, g->w);
                const __m512 lo1 =
                    second ? load_row(row0 + g->w, mrow0 ? mrow0 + g->w : NULL, c0, g->w) : zero;
                const __m512 hi1 =
                    second ? load_row(row0 + g->w, mrow0 ? mrow0 + g->w : NULL, c0 + 16, g->w)
                           : zero;
                /* dy of the tiles: rows 0, 1 x columns 0, 1 */
                const __m512 d00 = _mm512_permutex2var_ps(lo0, even, hi0);
                const __m512 d01 = _mm512_permutex2var_ps(lo0, odd, hi0);
                const __m512 d10 = _mm512_permutex2var_ps(lo1, even, hi1);
                const __m512 d11 = _mm512_permutex2var_ps(lo1, odd, hi1);
                sum = _mm512_add_ps(
                    sum, _mm512_add_ps(_mm512_add_ps(d00, d01), _mm512_add_ps(d10, d11)));
                /* A dy: rows d0, d0 + d1, d0 - d1, -d1 (per tile column) */
                const __m512 a00 = d00, a01 = d01;
                const __m512 a10 = _mm512_add_ps(d00, d10), a11 = _mm512_add_ps(d01, d11);
                const __m512 a20 = _mm512_sub_ps(d00, d10), a21 = _mm512_sub_ps(d01, d11);
                const __m512 a30 = _mm512_sub_ps(zero, d10), a31 = _mm512_sub_ps(zero, d11);
                const __mmask16 lanes = nn_first_lanes(g->tw - chunk * VEC);
                float *dst = yh + (size_t)k * g->tpad + (size_t)j * g->tw + chunk * VEC;
                /* (A dy) A^T: columns a0, a0 + a1, a0 - a1, -a1 of each row */
#define NN_ROW(i, p0, p1)                                                                          \
    do {                                                                                           \
        float *o = dst + (size_t)(4 * (i)) * xs;                                                   \
        _mm512_mask_storeu_ps(o, lanes, p0);                                                       \
        _mm512_mask_storeu_ps(o + xs, lanes, _mm512_add_ps(p0, p1));                               \
        _mm512_mask_storeu_ps(o + 2 * xs, lanes, _mm512_sub_ps(p0, p1));                           \
        _mm512_mask_storeu_ps(o + 3 * xs, lanes, _mm512_sub_ps(zero, p1));                         \
    } while (0)
                NN_ROW(0, a00, a01);
                NN_ROW(1, a10, a11);
                NN_ROW(2, a20, a21);
                NN_ROW(3, a30, a31);
#undef NN_ROW
            }
        }
        dbt[k] += _mm512_reduce_add_ps(sum);
    }
}

/* vt[t][c] (row stride cp) = v[c][t] (row stride ld) for t < tiles, zero for
 * the channels past cin: 16x16 blocks transposed in registers */
AVX512 static void transpose_point(float *vt, size_t cp, const float *v, size_t ld, int cin,
                                   size_t tiles) {
    for (size_t c0 = 0; c0 < cp; c0 += VEC)
        for (size_t t0 = 0; t0 < tiles; t0 += VEC) {
            __m512 r[16];
            for (int i = 0; i < VEC; i++)
                r[i] = (int)c0 + i < cin ? _mm512_loadu_ps(v + (c0 + i) * ld + t0)
                                         : _mm512_setzero_ps();
            transpose16(r);
            const size_t tn = tiles - t0 < VEC ? tiles - t0 : VEC;
            for (size_t j = 0; j < tn; j++) _mm512_storeu_ps(vt + (t0 + j) * cp + c0, r[j]);
        }
}

/* m[k][c] += sum over t < count of yh[k * ldy + t] * vt[t][c] for GEMM_K
 * outputs k and NC vectors of 16 channels (gemm_avx512.h) */
#define NN_WGRAD(NC)                                                                               \
    AVX512 static void wgrad_##NC(float *m, size_t ldm, const float *yh, size_t ldy,               \
                                  const float *vt, size_t ldv, size_t count) {                     \
        nn_gemm8_avx512(m, ldm, yh, ldy, 1, vt, ldv, count, NC, 0xFFFF, 1, NULL);                  \
    }
NN_WGRAD(1)
NN_WGRAD(2)
NN_WGRAD(3)
#undef NN_WGRAD

/* share[xi] (K, cp) += Yh[xi] x V[xi]^T over the group's tiles, every point
 * xi of g */
void nn_wino_accumulate_wgrad_avx512(float *share, float *vt, const float *yh, const float *v,
                                     const wino_geom *g, size_t tiles) {
    typedef void (*wgrad_fn)(float *, size_t, const float *, size_t, const float *, size_t, size_t);
    static const wgrad_fn fns[GEMM_T] = {wgrad_1, wgrad_2, wgrad_3};
    const size_t cp = round16((size_t)g->cin), vecs = cp / VEC;
    for (int xi = 0; xi < g->xi; xi++) {
        transpose_point(vt, cp, v + (size_t)xi * g->vxi, g->tpad, g->cin, tiles);
        float *sx = share + (size_t)xi * g->cout * cp;
        const float *yx = yh + (size_t)xi * g->mxi;
        for (int k0 = 0; k0 < g->cout; k0 += GEMM_K)
            for (size_t b0 = 0; b0 < vecs; b0 += GEMM_T) {
                const int nc = vecs - b0 < GEMM_T ? (int)(vecs - b0) : GEMM_T;
                fns[nc - 1](sx + (size_t)k0 * cp + b0 * VEC, cp, yx + (size_t)k0 * g->tpad, g->tpad,
                            vt + b0 * VEC, cp, tiles);
            }
    }
}

/* dw[k][c] += G^T S G for one output channel k, S = the threads' shares
 * summed in thread order, 16 input channels at a time;
 * G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]. */
AVX512 static void add_wgrad_row(float *dw, float *base, int T, const wino_geom *g, int k) {
    const size_t cp = round16((size_t)g->cin);
    const int C = g->cin, K = g->cout;
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int c0 = 0; c0 < C; c0 += VEC) {
        __m512 s[XI];
        for (int xi = 0; xi < XI; xi++) {
            s[xi] = _mm512_setzero_ps();
            for (int t = 0; t < T; t++)
                s[xi] = _mm512_add_ps(s[xi], _mm512_loadu_ps(nn_wino_share(base, g, t) +
                                                             ((size_t)xi * K + k) * cp + c0));
        }
        __m512 q[3][4]; /* G^T S */
        for (int col = 0; col < 4; col++) {
            const __m512 s1 = s[4 + col], s2 = s[8 + col];
            const __m512 p = _mm512_mul_ps(half, _mm512_add_ps(s1, s2));
            q[0][col] = _mm512_add_ps(s[col], p);
            q[1][col] = _mm512_mul_ps(half, _mm512_sub_ps(s1, s2));
            q[2][col] = _mm512_add_ps(p, s[12 + col]);
        }
        __m512 tap[9];
        for (int r = 0; r < 3; r++) { /* (G^T S) G */
            const __m512 p = _mm512_mul_ps(half, _mm512_add_ps(q[r][1], q[r][2]));
            tap[r * 3] = _mm512_add_ps(q[r][0], p);
            tap[r * 3 + 1] = _mm512_mul_ps(half, _mm512_sub_ps(q[r][1], q[r][2]));
            tap[r * 3 + 2] = _mm512_add_ps(p, q[r][3]);
        }
        nn_wino_add_taps_avx512(dw + ((size_t)k * C + c0) * 9, tap, C - c0 < VEC ? C - c0 : VEC);
    }
}

/* out[l * 9 + t] += tap[t] lane l for the first nch (<= 16) channels l:
 * the 3x3 kernels of 16 input channels lie one after another, 144 floats.
 * The taps go through a stack copy and each output vector takes its 16
 * values with one gather from it (L1), so the weights are read and written
 * as 9 contiguous vectors, not with a strided gather and scatter per tap
 * (ResNet-20 on a Zen 4: add_wgrad_row 2.9% of perf's samples, then 2.4% +
 * 0.2% here; the rest is the shares' loads). The same sums, one add per
 * weight. */
void nn_wino_add_taps_avx512(float *out, const __m512 tap[9], int nch) {
    float t[9 * VEC];
    for (int i = 0; i < 9; i++) _mm512_storeu_ps(t + i * VEC, tap[i]);
    if (nch < VEC) {
        for (int l = 0; l < nch; l++)
            for (int i = 0; i < 9; i++) out[l * 9 + i] += t[i * VEC + l];
        return;
    }
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int v = 0; v < 9; v++) {
        /* output j = 16 v + lane: channel j / 9, tap j % 9, at t[tap * 16 + channel] */
        const __m512i j = _mm512_add_epi32(lanes, _mm512_set1_epi32(VEC * v));
        const __m512i ch = _mm512_srli_epi32(_mm512_mullo_epi32(j, _mm512_set1_epi32(7282)), 16);
        const __m512i tp = _mm512_sub_epi32(j, _mm512_mullo_epi32(ch, _mm512_set1_epi32(9)));
        const __m512i at = _mm512_add_epi32(_mm512_slli_epi32(tp, 4), ch);
        const __m512 add = _mm512_i32gather_ps(at, t, 4);
        _mm512_storeu_ps(out + VEC * v, _mm512_add_ps(_mm512_loadu_ps(out + VEC * v), add));
    }
}

/* thread t's weight-gradient buffers, its share and db sums zeroed */
static wgrad_bufs wgrad_start(float *base, const wino_geom *g, int t) {
    const wgrad_bufs b = wgrad_bufs_of(base, g, t);
    memset(b.share, 0, (share_floats(g) + (size_t)g->cout) * sizeof(float));
    return b;
}

/* one group's share of the weight gradient: V of x's tile rows u0.. u0+nu-1
 * (through map), Yh of dy's tile rows dy_u0.. (masked), share += Yh V^T */
static void wgrad_group(const wino_kernels *K, const wgrad_bufs *b, const float *x,
                        const nn_conv2d_map *map, const float *dy, const float *mask,
                        const wino_geom *g, long u0, long dy_u0, int nu) {
    K->transform_input(b->v, x, NULL, map, g, u0, nu);
    K->transform_dy(b->yh, b->dbt, dy, mask, g, dy_u0, nu);
    K->accumulate_wgrad(b->share, b->vt, b->yh, b->v, g, group_lanes(g, nu));
}

/* add_wgrad_row for every k, and db[k] += the threads' sums in thread order */
static void add_wgrad(const wino_kernels *K, float *dw, float *db, float *base, int T,
                      const wino_geom *g, int threads) {
    NN_PARALLEL_FOR(threads)
    for (int k = 0; k < g->cout; k++) {
        K->add_wgrad_row(dw, base, T, g, k);
        if (db) {
            float sum = 0.0f;
            for (int t = 0; t < T; t++) sum += wgrad_bufs_of(base, g, t).dbt[k];
            db[k] += sum;
        }
    }
}

void nn_conv2d_backward_weights_winograd(float *dw, float *db, const float *dy, const float *y,
                                         const float *x, const nn_conv2d_desc *d, int n, float *ws,
                                         nn_ctx *ctx) {
    nn_conv2d_backward_weights_winograd_mapped(dw, db, dy, y, x, NULL, d, n, ws, ctx);
}

void nn_conv2d_backward_weights_winograd_mapped(float *dw, float *db, const float *dy,
                                                const float *y, const float *x,
                                                const nn_conv2d_map *map, const nn_conv2d_desc *d,
                                                int n, float *ws, nn_ctx *ctx) {
    wino_geom g;
    const wino_kernels *K = wgrad_kernels(d, ctx, &g);
    const group_plan plan = plan_groups(&g, (long)n * g.th, ctx->threads);
    const long groups = plan.groups;
    const int T = ctx->threads < groups ? ctx->threads : (int)groups;
    float *base = ws + u_floats(d);
    const float *mask = d->relu ? y : NULL;
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        const wgrad_bufs b = wgrad_start(base, &g, t);
        const long end = groups * (t + 1) / T;
        for (long gi = groups * t / T; gi < end; gi++) {
            long u0;
            int nu;
            group_span(&plan, gi, &u0, &nu);
            wgrad_group(K, &b, x, map, dy, mask, &g, u0, u0, nu);
        }
    }
    add_wgrad(K, dw, db, base, T, &g, ctx->threads);
}

/* The backward pass in one sweep over the weight gradient's groups of whole
 * images (wgrad4_geom), each thread its fixed share of them as the plain
 * weight gradient runs them: the group's dy formed into the thread's
 * scratch, image by image (nn_batchnorm_form_dx), then the input gradient
 * of the group's tile rows (in groups of the input gradient's size, at most
 * the weight gradient's, its V and M where the weight gradient's V and Yh
 * are later; then the prologue's gradient sums over the group's images) and
 * the weight gradient's share, both reading dy from that scratch in the
 * cache. While the input gradient multiplies, the lines of its output and
 * of the next group's g and y are fed. The same bytes as the batch norm's dx
 * pass followed by the plain input and weight gradients: the input
 * gradient's tiles do not depend on their groups, the weight gradient sums
 * the same groups in the same order. */
void nn_conv2d_backward_winograd_formed(float *dx, float *dw, float *db, const float *g_bn,
                                        const float *y, const float *x, const nn_conv2d_map *map,
                                        const nn_bn_grad_rows *rows, const nn_bn_dx *bn,
                                        const float *w, const nn_conv2d_desc *d, int n, float *ws,
                                        nn_ctx *ctx) {
    NN_ASSERT(nn_conv2d_winograd_forms_dy(d, ctx));
    wino_geom gw, gd;
    const wino_kernels *K = wgrad_kernels(d, ctx, &gw); /* F(4x4): whole images */
    kernels_for(d, ctx, d->K, d->C, 1, &gd);
    /* the input gradient's groups: a group of the weight gradient's split
     * into `parts` of about the size its own geometry picks, as evenly as
     * whole vectors allow */
    const int wvec = (int)(gw.tpad / (size_t)gw.vec), dvec = (int)(gd.tpad / (size_t)gd.vec);
    int parts = (2 * wvec + dvec) / (2 * dvec); /* wvec / dvec, rounded */
    if (parts < 1) parts = 1;
    set_vectors(&gd, (wvec + parts - 1) / parts);
    const int sums = dx && map && map->grad_sums; /* as the plain input gradient */
    NN_ASSERT(!sums || (x && !d->dx_add));
    const group_epilogue ep = {NULL, map, x};
    if (dx) K->transform_weights(ws, w, d->K, d->C, 9, (size_t)d->C * 9, 1, ctx->threads);
    const group_plan plan = plan_groups(&gw, (long)n * gw.th, ctx->threads);
    const long groups = plan.groups;
    const int T = ctx->threads < groups ? ctx->threads : (int)groups;
    float *base = ws + u4_floats(d); /* after U: the weight gradient's buffers */
    float *formed = base + (size_t)T * wgrad_thread_floats(&gw);
    const int len = d->H * d->W;
    const size_t image = (size_t)d->K * len;
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        const wgrad_bufs b = wgrad_start(base, &gw, t);
        float *v = b.v, *mm = v + (size_t)gd.xi * gd.vxi; /* within V, Yh (gd no larger) */
        float *dyf = formed + (size_t)t * formed_dy_floats(&gw);
        const long end = groups * (t + 1) / T;
        for (long gi = groups * t / T; gi < end; gi++) {
            long u0;
            int nu;
            group_span(&plan, gi, &u0, &nu);
            const long i0 = u0 / gw.th, i1 = (u0 + nu) / gw.th; /* whole images */
            for (long i = i0; i < i1; i++)
                nn_batchnorm_form_dx(dyf + (size_t)(i - i0) * image, g_bn + (size_t)i * image,
                                     y + (size_t)i * image, 0, d->K, len, bn, ctx);
            wgrad_group(K, &b, x, map, dyf, NULL, &gw, u0, 0, nu); /* dy from the scratch */
            if (dx) {
                const long next = gi + 1 < end ? gi + 1 : groups;
                nn_line_feed feed;
                feed_images(&feed, 0, dx, d->C, &gw, &plan, gi);
                feed_images(&feed, 1, g_bn, d->K, &gw, &plan, next);
                feed_images(&feed, 2, y, d->K, &gw, &plan, next);
                const int vecs = (nu + gw.rpv - 1) / gw.rpv;
                feed_pace(&feed, multiply_steps(&gd, (size_t)vecs * (size_t)gd.vec));
                for (int p = 0; p < parts; p++) { /* tile rows s.. of the scratch */
                    const int s = vecs * p / parts * gd.rpv;
                    const int e = vecs * (p + 1) / parts * gd.rpv, ns = (e < nu ? e : nu) - s;
                    if (ns <= 0) continue;
                    K->transform_input(v, dyf, NULL, NULL, &gd, s, ns);
                    K->multiply(mm, ws, v, &gd, group_lanes(&gd, ns), &feed);
                    K->transform_output(dx, mm, NULL, 0, d->dx_add, &gd, u0 + s, ns);
                }
                if (sums) run_epilogue(&ep, dx, &gd, i0, i1, ctx);
                if (rows) /* the batch norm before, whose output dx's images were */
                    nn_batchnorm_grad_rows(dx, i0 * d->C, (i1 - i0) * d->C, (long)n * d->C,
                                           rows, 1, ctx);
            }
        }
    }
    add_wgrad(K, dw, db, base, T, &gw, ctx->threads);
}

#else /* no x86-64 SIMD kernels in this build: never selected (nn_conv2d_winograd_ok) */

void nn_conv2d_forward_winograd_mapped(float *y, const float *x, const nn_conv2d_map *map,
                                       double *stats, const float *w, const float *b,
                                       const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)y, (void)x, (void)map, (void)stats, (void)w, (void)b, (void)d, (void)n, (void)ws;
    (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_backward_weights_winograd_mapped(float *dw, float *db, const float *dy,
                                                const float *y, const float *x,
                                                const nn_conv2d_map *map, const nn_conv2d_desc *d,
                                                int n, float *ws, nn_ctx *ctx) {
    (void)dw, (void)db, (void)dy, (void)y, (void)x, (void)map, (void)d, (void)n, (void)ws;
    (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_forward_winograd(float *y, const float *x, const float *w, const float *b,
                                const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)y, (void)x, (void)w, (void)b, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_backward_data_winograd(float *dx, const float *dy, const float *y, const float *w,
                                      const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)dx, (void)dy, (void)y, (void)w, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_backward_data_winograd_mapped(float *dx, const float *dy, const float *y,
                                             const float *x, const nn_conv2d_map *map,
                                             const float *w, const nn_conv2d_desc *d, int n,
                                             float *ws, nn_ctx *ctx) {
    (void)dx, (void)dy, (void)y, (void)x, (void)map, (void)w, (void)d, (void)n, (void)ws;
    (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_backward_weights_winograd(float *dw, float *db, const float *dy, const float *y,
                                         const float *x, const nn_conv2d_desc *d, int n, float *ws,
                                         nn_ctx *ctx) {
    (void)dw, (void)db, (void)dy, (void)y, (void)x, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

void nn_conv2d_backward_winograd_formed(float *dx, float *dw, float *db, const float *g_bn,
                                        const float *y, const float *x, const nn_conv2d_map *map,
                                        const nn_bn_grad_rows *rows, const nn_bn_dx *bn,
                                        const float *w, const nn_conv2d_desc *d, int n, float *ws,
                                        nn_ctx *ctx) {
    (void)dx, (void)dw, (void)db, (void)g_bn, (void)y, (void)x, (void)map, (void)rows, (void)bn, (void)w;
    (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"Winograd conv2d kernels are not built");
}

#endif
