/*
 * conv2d_winograd_avx2.c - the kernels of Winograd F(2x2, 3x3) for CPUs with
 * AVX2 and FMA but no AVX-512 (AMD Zen 1-3, Intel Haswell to Alder Lake):
 * the same transforms and layouts as the AVX-512 kernels of
 * conv2d_winograd.c, which also hold the drivers (groups, threads, buffers)
 * and the method, with 8 tiles per 256-bit vector instead of 16.
 *
 * Differences forced by the narrower instruction set: no masked loads and
 * stores by bit mask (vmaskmov with lane masks from a table instead), no
 * two-source permutes (de-interleaving by shuffle + 64-bit permute), no
 * scatter (the weight gradient's 3x3 taps are added one lane at a time, once
 * per step), and 16 vector registers rather than 32, so the small GEMMs hold
 * 4 output channels x 3 vectors of 8 tiles (12 accumulators) rather than
 * 8 x 3 vectors of 16.
 */
#include "ops/conv2d_winograd.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"
#include "ops/gemm_avx2.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

#define VEC 8    /* floats per ymm: tiles per vector */
#define XI WINO_XI
#define BLOCK 8  /* output channels per block of U (the layout's o % 8) */
#define GEMM_K NN_GEMM4_ROWS /* output channels per GEMM kernel call */
#define GEMM_T NN_GEMM4_VECS /* 8-tile vectors per GEMM kernel call */

/* ------------------------------------------------------------ weights */

/* U for the 8 outputs o0.. (one block) and input i: the block's 3x3 kernels
 * gathered tap by tap, G g G^T as in the AVX-512 kernel. */
AVX2 static void transform_weight_block(float *u, const float *w, int cin, int cout, size_t so,
                                        size_t si, int flip, int i, int o0) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)so));
    const float *base = w + (size_t)o0 * so + (size_t)i * si;
    __m256 g[9];
    for (int t = 0; t < 9; t++) g[t] = _mm256_i32gather_ps(base + (flip ? 8 - t : t), idx, 4);
    const __m256 half = _mm256_set1_ps(0.5f);
    __m256 a[4][3]; /* G g: 4 rows of 3 */
    for (int s = 0; s < 3; s++) {
        const __m256 g0 = g[s], g1 = g[3 + s], g2 = g[6 + s];
        const __m256 sum = _mm256_mul_ps(half, _mm256_add_ps(g0, g2));
        const __m256 h1 = _mm256_mul_ps(half, g1);
        a[0][s] = g0;
        a[1][s] = _mm256_add_ps(sum, h1);
        a[2][s] = _mm256_sub_ps(sum, h1);
        a[3][s] = g2;
    }
    for (int r = 0; r < 4; r++) { /* (G g) G^T */
        const __m256 sum = _mm256_mul_ps(half, _mm256_add_ps(a[r][0], a[r][2]));
        const __m256 h1 = _mm256_mul_ps(half, a[r][1]);
        const __m256 row[4] = {a[r][0], _mm256_add_ps(sum, h1), _mm256_sub_ps(sum, h1), a[r][2]};
        for (int c = 0; c < 4; c++)
            _mm256_storeu_ps(u + (size_t)(r * 4 + c) * cin * cout + (size_t)o0 * cin +
                                 (size_t)i * BLOCK,
                             row[c]);
    }
}

/* (OpenMP loop bodies call the target functions rather than hold their code:
 * clang compiles a body as a function of its own, without the caller's
 * target attribute.) cout is a multiple of 8 (shape_ok). */
static void transform_weights(float *u, const float *w, int cin, int cout, size_t so, size_t si,
                              int flip, int threads) {
    const int nb = cout / BLOCK;
    /* the jobs in U's order (conv2d_winograd4_avx2.c) */
    NN_PARALLEL_FOR(threads)
    for (int job = 0; job < cin * nb; job++)
        transform_weight_block(u, w, cin, cout, so, si, flip, job % cin, job / cin * BLOCK);
}

/* ------------------------------------------------------------ inputs */

/* 8 floats of a mapped row from `at` (zero outside [0, n): the padding of
 * the batch norm's output); the ReLU keeps v where v > 0 or v is NaN, as the
 * batch norm's normalizing pass does (the same values, bit for bit) */
INLINE_AVX2 __m256 load_row_mapped(const float *src, int at, int n, const chan_map *m) {
    const int cnt = n - at;
    if (cnt <= 0) return _mm256_setzero_ps();
    const __m256 v = nn_avx2_map(nn_avx2_load_n(src + at, cnt), _mm256_set1_ps(m->a),
                                 _mm256_set1_ps(m->b), m->relu);
    return _mm256_and_ps(v, _mm256_castsi256_ps(nn_avx2_lanes(cnt)));
}


/* 8 floats of src from `at` (zero outside [0, n)), zero also where the ReLU
 * mask (a layer's output) is <= 0; mask NULL: none. */
INLINE_AVX2 __m256 load_row(const float *src, const float *mask, int at, int n) {
    const int cnt = n - at;
    if (cnt <= 0) return _mm256_setzero_ps();
    return nn_avx2_load_relu_masked(src + at, mask ? mask + at : NULL, cnt);
}


/* d B for one input row under 8 tiles (tiles 8*chunk.. on): with
 * x_k[j] = row[16*chunk + 2j + k - 1] (zero outside the row), the four
 * vectors x_0 - x_2, x_1 + x_2, x_2 - x_1, x_1 - x_3. */
typedef struct {
    __m256 m0, m1, m2, m3;
} row4;

INLINE_AVX2 row4 row_transform(const float *row, const float *mask, const chan_map *m, int w,
                               int chunk) {
    const int at = 2 * VEC * chunk;
    const int mapped = m && m->on;
    const __m256 lo = mapped ? load_row_mapped(row, at, w, m) : load_row(row, mask, at, w);
    const __m256 hi =
        mapped ? load_row_mapped(row, at + VEC, w, m) : load_row(row, mask, at + VEC, w);
    const __m256 x1 = nn_avx2_even(lo, hi); /* row[at + 2j] */
    const __m256 x2 = nn_avx2_odd(lo, hi);  /* row[at + 2j + 1] */
    const __m256 prev = _mm256_set1_ps(mapped ? wino_load_one_mapped(row, at - 1, w, m)
                                              : wino_load_one(row, mask, at - 1, w));
    const __m256 next = _mm256_set1_ps(mapped ? wino_load_one_mapped(row, at + 2 * VEC, w, m)
                                              : wino_load_one(row, mask, at + 2 * VEC, w));
    /* x0 = (prev, x2[0..6]), x3 = (x1[1..7], next) */
    const __m256 x0 = _mm256_blend_ps(
        _mm256_permutevar8x32_ps(x2, _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6)), prev, 0x01);
    const __m256 x3 = _mm256_blend_ps(
        _mm256_permutevar8x32_ps(x1, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0)), next, 0x80);
    row4 t;
    t.m0 = _mm256_sub_ps(x0, x2);
    t.m1 = _mm256_add_ps(x1, x2);
    t.m2 = _mm256_sub_ps(x2, x1);
    t.m3 = _mm256_sub_ps(x1, x3);
    return t;
}

INLINE_AVX2 row4 row_zero(void) {
    row4 t;
    t.m0 = t.m1 = t.m2 = t.m3 = _mm256_setzero_ps();
    return t;
}

/* row_transform of input row h of a plane, zero outside it */
INLINE_AVX2 row4 row_at(const float *plane, const float *mask, const chan_map *m,
                        const wino_geom *g, int chunk, int h) {
    if (h < 0 || h >= g->h) return row_zero();
    const size_t at = (size_t)h * g->w;
    return row_transform(plane + at, mask ? mask + at : NULL, m, g->w, chunk);
}

/* B^T over the four rows' column m: points 4r + m of the tile, r = 0..3,
 * all 8 lanes stored (see transform_input) */
INLINE_AVX2 void store_column(float *dst, size_t stride, __m256 a, __m256 b, __m256 c, __m256 d) {
    _mm256_storeu_ps(dst, _mm256_sub_ps(a, c));
    _mm256_storeu_ps(dst + 4 * stride, _mm256_add_ps(b, c));
    _mm256_storeu_ps(dst + 8 * stride, _mm256_sub_ps(c, b));
    _mm256_storeu_ps(dst + 12 * stride, _mm256_sub_ps(b, d));
}

/* V[xi][c][t] for the tile rows u0.. u0+nu-1 of the batch, as the AVX-512
 * kernel: a tile row reuses the last two row transforms of the one above.
 * Every store writes 8 tiles. Past a row's last tile that lands on the next
 * tile row's first tiles (chunk 0, stored later: the chunks go last to
 * first), on the next channel's first (stored later) or on lanes past the
 * group's tiles and the vec floats after the last channel, which are never
 * read as tiles; the values are finite (transforms of the zero padding and
 * the row's inputs). */
AVX2 static void transform_input(float *v, const float *in, const float *mask,
                                 const nn_conv2d_map *map, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cin * plane;
    for (int c = 0; c < g->cin; c++)
        for (int chunk = (g->tw - 1) / VEC; chunk >= 0; chunk--) {
            chan_map cm = {0, 0, 0.0f, 0.0f}; /* a prologue: in is the batch norm's input */
            if (map) cm.on = 1, cm.relu = map->relu, cm.a = map->scale[c], cm.b = map->shift[c];
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
                store_column(dst, g->vxi, r0.m0, r1.m0, r2.m0, r3.m0);
                store_column(dst + g->vxi, g->vxi, r0.m1, r1.m1, r2.m1, r3.m1);
                store_column(dst + 2 * g->vxi, g->vxi, r0.m2, r1.m2, r2.m2, r3.m2);
                store_column(dst + 3 * g->vxi, g->vxi, r0.m3, r1.m3, r2.m3, r3.m3);
            }
        }
}

/* ------------------------------------------------------------ products */

/* m[k][t] = sum over c of u[c][k] * v[c][t] for GEMM_K outputs k and NT
 * vectors of 8 tiles: the weights broadcast from their packed block, the
 * tiles loaded (gemm_avx2.h) */
INLINE_AVX2 void gemm_kernel(float *m, size_t ldm, const float *u, const float *v, size_t ldv,
                             int cin, const int NT) {
    nn_gemm4_avx2(m, ldm, u, 1, BLOCK, v, ldv, NULL, (size_t)cin, NT, VEC, 0);
}

AVX2 static void gemm_1(float *m, size_t ldm, const float *u, const float *v, size_t ldv, int cin) {
    gemm_kernel(m, ldm, u, v, ldv, cin, 1);
}
AVX2 static void gemm_2(float *m, size_t ldm, const float *u, const float *v, size_t ldv, int cin) {
    gemm_kernel(m, ldm, u, v, ldv, cin, 2);
}
AVX2 static void gemm_3(float *m, size_t ldm, const float *u, const float *v, size_t ldv, int cin) {
    gemm_kernel(m, ldm, u, v, ldv, cin, 3);
}

/* A whole block of U (8 outputs) on one vector of 8 tiles: 8 independent
 * accumulators, which the FMA units' latency asks for (Zen 3: 4 cycles, 2
 * units); the 4-output kernel on one vector keeps only 4 chains. */
AVX2 static void gemm_8x1(float *m, size_t ldm, const float *u, const float *v, size_t ldv,
                          int cin) {
    __m256 acc[BLOCK];
    _Pragma("GCC unroll 8") for (int k = 0; k < BLOCK; k++) acc[k] = _mm256_setzero_ps();
    for (int c = 0; c < cin; c++, u += BLOCK, v += ldv) {
        const __m256 vb = _mm256_loadu_ps(v);
        _Pragma("GCC unroll 8") for (int k = 0; k < BLOCK; k++) acc[k] =
            _mm256_fmadd_ps(_mm256_broadcast_ss(u + k), vb, acc[k]);
    }
    _Pragma("GCC unroll 8") for (int k = 0; k < BLOCK; k++) _mm256_storeu_ps(m + k * ldm, acc[k]);
}

/* M[xi] (cout, tiles) = U[xi]^T x V[xi] for the first `tiles` tiles, for
 * any g->xi (F(4x4)'s kernels use it too) */
void nn_wino_multiply_avx2(float *mm, const float *u, const float *v, const wino_geom *g, size_t tiles,
                           nn_line_feed *feed) {
    (void)feed;
    typedef void (*gemm_fn)(float *, size_t, const float *, const float *, size_t, int);
    static const gemm_fn fns[GEMM_T] = {gemm_1, gemm_2, gemm_3};
    const size_t vecs = (tiles + VEC - 1) / VEC;
    for (int xi = 0; xi < g->xi; xi++) {
        const float *ux = u + (size_t)xi * g->cin * g->cout;
        const float *vx = v + (size_t)xi * g->vxi;
        float *mx = mm + (size_t)xi * g->mxi;
        for (size_t b0 = 0; b0 < vecs; b0 += GEMM_T) {
            const int nt = vecs - b0 < GEMM_T ? (int)(vecs - b0) : GEMM_T;
            if (nt == 1 && g->cout % BLOCK == 0) { /* a whole block of U at a time */
                for (int k0 = 0; k0 < g->cout; k0 += BLOCK)
                    gemm_8x1(mx + (size_t)k0 * g->tpad + b0 * VEC, g->tpad,
                             ux + (size_t)k0 * g->cin, vx + b0 * VEC, g->tpad, g->cin);
                continue;
            }
            for (int k0 = 0; k0 < g->cout; k0 += GEMM_K) /* half a block of U at a time */
                fns[nt - 1](mx + (size_t)k0 * g->tpad + b0 * VEC, g->tpad,
                            ux + (size_t)(k0 - k0 % BLOCK) * g->cin + k0 % BLOCK, vx + b0 * VEC,
                            g->tpad, g->cin);
        }
    }
}

/* ------------------------------------------------------------ outputs */

/* One output row of 8 tiles from a row of A^T M: (s0 + s1 + s2, s1 - s2 - s3)
 * + bias, ReLU if asked, the tiles' two columns interleaved into the first n
 * (up to 16) outputs of dst (add: added to what is there). */
INLINE_AVX2 void store_pair(float *dst, int n, __m256 s0, __m256 s1, __m256 s2, __m256 s3,
                            __m256 bias, int relu, int add) {
    __m256 y0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), s2), bias);
    __m256 y1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s1, s2), s3), bias);
    if (relu) { /* max(0, v) returns v when v is NaN: NaN passes */
        y0 = _mm256_max_ps(_mm256_setzero_ps(), y0);
        y1 = _mm256_max_ps(_mm256_setzero_ps(), y1);
    }
    const __m256 ulo = _mm256_unpacklo_ps(y0, y1); /* y0[0] y1[0] y0[1] y1[1] | [4], [5] */
    const __m256 uhi = _mm256_unpackhi_ps(y0, y1); /* [2], [3] | [6], [7] */
    __m256 lo = _mm256_permute2f128_ps(ulo, uhi, 0x20), hi = _mm256_permute2f128_ps(ulo, uhi, 0x31);
    if (add) { /* into what is there, as dst[i] += value adds it */
        lo = _mm256_add_ps(nn_avx2_load_n(dst, n), lo);
        if (n > VEC) hi = _mm256_add_ps(nn_avx2_load_n(dst + VEC, n - VEC), hi);
    }
    nn_avx2_store_n(dst, n, lo);
    nn_avx2_store_n(dst + VEC, n - VEC, hi);
}

/* out planes (cout, h, w) of the tile rows u0.. = A^T M A (+ bias, ReLU if
 * asked), A^T = [1 1 1 0; 0 1 -1 -1]: two output rows of 8 tiles at a time. */
AVX2 static void transform_output(float *out, const float *mm, const float *bias, int relu,
                                  int add, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const size_t xs = g->mxi;
    for (int k = 0; k < g->cout; k++) {
        const __m256 bk = _mm256_set1_ps(bias ? bias[k] : 0.0f);
        for (int j = 0; j < nu; j++) {
            const long u = u0 + j;
            const long img = u / g->th;
            const int tr = (int)(u % g->th);
            float *row0 = out + (size_t)img * image + (size_t)k * plane + (size_t)(2 * tr) * g->w;
            for (int chunk = 0; chunk * VEC < g->tw; chunk++) {
                const float *src = mm + (size_t)k * g->tpad + (size_t)j * g->tw + chunk * VEC;
                __m256 s0[4], s1[4]; /* A^T M, column by column */
                for (int c = 0; c < 4; c++) {
                    const __m256 m0 = _mm256_loadu_ps(src + (size_t)c * xs);
                    const __m256 m1 = _mm256_loadu_ps(src + (size_t)(4 + c) * xs);
                    const __m256 m2 = _mm256_loadu_ps(src + (size_t)(8 + c) * xs);
                    const __m256 m3 = _mm256_loadu_ps(src + (size_t)(12 + c) * xs);
                    s0[c] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    s1[c] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                const int n = g->w - 2 * VEC * chunk;
                float *dst = row0 + 2 * VEC * chunk;
                store_pair(dst, n, s0[0], s0[1], s0[2], s0[3], bk, relu, add);
                if (2 * tr + 1 < g->h)
                    store_pair(dst + g->w, n, s1[0], s1[1], s1[2], s1[3], bk, relu, add);
            }
        }
    }
}

/* ------------------------------------------------------------ weight gradient */

/* Yh[xi][k][t] = A dy A^T for the tile rows u0.. of the (masked) output
 * gradient, and dbt[k] += the sum of dy[k] over them. Every store writes 8
 * tiles, as in transform_input: past a row's last tile onto the next tile
 * row's first (stored next), the next channel's (stored later) or the vec
 * floats after the last channel; the products read only the tiles. */
AVX2 static void transform_dy(float *yh, float *dbt, const float *dy, const float *mask,
                              const wino_geom *g, long u0, int nu) {
    const __m256 zero = _mm256_setzero_ps();
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const size_t xs = g->mxi;
    for (int k = 0; k < g->cout; k++) {
        __m256 sum = zero;
        for (int j = 0; j < nu; j++) {
            const long u = u0 + j;
            const int tr = (int)(u % g->th);
            const size_t at = (size_t)(u / g->th) * image + (size_t)k * plane;
            const float *row0 = dy + at + (size_t)(2 * tr) * g->w;
            const float *mrow0 = mask ? mask + at + (size_t)(2 * tr) * g->w : NULL;
            const float *row1 = row0 + g->w, *mrow1 = mrow0 ? mrow0 + g->w : NULL;
            const int second = 2 * tr + 1 < g->h;
            for (int chunk = 0; chunk * VEC < g->tw; chunk++) {
                const int c0 = 2 * VEC * chunk;
                const __m256 lo0 = load_row(row0, mrow0, c0, g->w);
                const __m256 hi0 = load_row(row0, mrow0, c0 + VEC, g->w);
                const __m256 lo1 = second ? load_row(row1, mrow1, c0, g->w) : zero;
                const __m256 hi1 = second ? load_row(row1, mrow1, c0 + VEC, g->w) : zero;
                /* dy of the tiles: rows 0, 1 x columns 0, 1 */
                const __m256 d00 = nn_avx2_even(lo0, hi0), d01 = nn_avx2_odd(lo0, hi0);
                const __m256 d10 = nn_avx2_even(lo1, hi1), d11 = nn_avx2_odd(lo1, hi1);
                sum = _mm256_add_ps(
                    sum, _mm256_add_ps(_mm256_add_ps(d00, d01), _mm256_add_ps(d10, d11)));
                /* A dy: rows d0, d0 + d1, d0 - d1, -d1 (per tile column) */
                const __m256 a[4][2] = {{d00, d01},
                                        {_mm256_add_ps(d00, d10), _mm256_add_ps(d01, d11)},
                                        {_mm256_sub_ps(d00, d10), _mm256_sub_ps(d01, d11)},
                                        {_mm256_sub_ps(zero, d10), _mm256_sub_ps(zero, d11)}};
                float *dst = yh + (size_t)k * g->tpad + (size_t)j * g->tw + chunk * VEC;
                for (int i = 0; i < 4; i++) { /* (A dy) A^T: a0, a0 + a1, a0 - a1, -a1 */
                    float *o = dst + (size_t)(4 * i) * xs;
                    const __m256 p0 = a[i][0], p1 = a[i][1];
                    _mm256_storeu_ps(o, p0);
                    _mm256_storeu_ps(o + xs, _mm256_add_ps(p0, p1));
                    _mm256_storeu_ps(o + 2 * xs, _mm256_sub_ps(p0, p1));
                    _mm256_storeu_ps(o + 3 * xs, _mm256_sub_ps(zero, p1));
                }
            }
        }
        dbt[k] += nn_avx2_sum(sum);
    }
}

/* r[i] = row i of an 8x8 block; afterwards r[j] = column j. */
INLINE_AVX2 void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x31);
    }
}

/* vt[t][c] (row stride cp) = v[c][t] (row stride ld) for t < tiles, zero for
 * the channels past cin: 8x8 blocks transposed in registers */
AVX2 static void transpose_point(float *vt, size_t cp, const float *v, size_t ld, int cin,
                                 size_t tiles) {
    for (size_t c0 = 0; c0 < cp; c0 += VEC)
        for (size_t t0 = 0; t0 < tiles; t0 += VEC) {
            __m256 r[8];
            for (int i = 0; i < VEC; i++)
                r[i] = (int)c0 + i < cin ? _mm256_loadu_ps(v + (c0 + i) * ld + t0)
                                         : _mm256_setzero_ps();
            transpose8(r);
            const size_t tn = tiles - t0 < VEC ? tiles - t0 : VEC;
            for (size_t j = 0; j < tn; j++) _mm256_storeu_ps(vt + (t0 + j) * cp + c0, r[j]);
        }
}

/* m[k][c] += sum over t < count of yh[k * ldy + t] * vt[t][c] for GEMM_K
 * outputs k and NC vectors of 8 channels (gemm_avx2.h) */
INLINE_AVX2 void wgrad_kernel(float *m, size_t ldm, const float *yh, size_t ldy, const float *vt,
                              size_t ldv, size_t count, const int NC) {
    nn_gemm4_avx2(m, ldm, yh, ldy, 1, vt, ldv, NULL, count, NC, VEC, 1);
}

#define NN_WGRAD(NC)                                                                               \
    AVX2 static void wgrad_##NC(float *m, size_t ldm, const float *yh, size_t ldy,                 \
                                const float *vt, size_t ldv, size_t count) {                       \
        wgrad_kernel(m, ldm, yh, ldy, vt, ldv, count, NC);                                         \
    }
NN_WGRAD(1)
NN_WGRAD(2)
NN_WGRAD(3)
#undef NN_WGRAD

/* share[xi] (K, cp) += Yh[xi] x V[xi]^T over the group's tiles, for any
 * g->xi */
void nn_wino_accumulate_wgrad_avx2(float *share, float *vt, const float *yh, const float *v,
                             const wino_geom *g, size_t tiles) {
    typedef void (*wgrad_fn)(float *, size_t, const float *, size_t, const float *, size_t, size_t);
    static const wgrad_fn fns[GEMM_T] = {wgrad_1, wgrad_2, wgrad_3};
    const size_t cp = wino_round((size_t)g->cin, VEC), vecs = cp / VEC;
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
 * summed in thread order, 8 input channels at a time;
 * G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]. */
AVX2 static void add_wgrad_row(float *dw, float *base, int T, const wino_geom *g, int k) {
    const size_t cp = wino_round((size_t)g->cin, VEC);
    const int C = g->cin, K = g->cout;
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int c0 = 0; c0 < C; c0 += VEC) {
        __m256 s[XI];
        for (int xi = 0; xi < XI; xi++) {
            s[xi] = _mm256_setzero_ps();
            for (int t = 0; t < T; t++)
                s[xi] = _mm256_add_ps(s[xi], _mm256_loadu_ps(nn_wino_share(base, g, t) +
                                                             ((size_t)xi * K + k) * cp + c0));
        }
        __m256 q[3][4]; /* G^T S */
        for (int col = 0; col < 4; col++) {
            const __m256 s1 = s[4 + col], s2 = s[8 + col];
            const __m256 p = _mm256_mul_ps(half, _mm256_add_ps(s1, s2));
            q[0][col] = _mm256_add_ps(s[col], p);
            q[1][col] = _mm256_mul_ps(half, _mm256_sub_ps(s1, s2));
            q[2][col] = _mm256_add_ps(p, s[12 + col]);
        }
        const int n = C - c0 < VEC ? C - c0 : VEC;
        float *out = dw + ((size_t)k * C + c0) * 9;
        for (int r = 0; r < 3; r++) { /* (G^T S) G, added tap by tap */
            const __m256 p = _mm256_mul_ps(half, _mm256_add_ps(q[r][1], q[r][2]));
            float tap[3][VEC];
            _mm256_storeu_ps(tap[0], _mm256_add_ps(q[r][0], p));
            _mm256_storeu_ps(tap[1], _mm256_mul_ps(half, _mm256_sub_ps(q[r][1], q[r][2])));
            _mm256_storeu_ps(tap[2], _mm256_add_ps(p, q[r][3]));
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < n; i++) out[(size_t)i * 9 + r * 3 + c] += tap[c][i];
        }
    }
}

const wino_kernels nn_wino_avx2 = {
    VEC,          transform_weights, transform_input,  nn_wino_multiply_avx2, transform_output,
    transform_dy, nn_wino_accumulate_wgrad_avx2,  add_wgrad_row,
};

#endif
