/*
 * conv2d_winograd4_avx2.c - Winograd F(4x4, 3x3) transforms for CPUs with
 * AVX2 and FMA but no AVX-512 (AMD Zen 1-3, Intel Haswell to Alder Lake):
 * the forward pass, the input gradient and the weight gradient of 3x3
 * stride-1 'same' convolutions on images 5-8 or 13-28 wide. The method, the
 * matrices and the layouts are those of conv2d_winograd4.c (AVX-512); the
 * drivers and the GEMMs are conv2d_winograd.c's and conv2d_winograd_avx2.c's.
 *
 * A vector holds 8 tiles: rpv = 8 / tw whole tile rows side by side (one row
 * of 5-7 tiles for 17-28-wide images, two of 4 for 13-16, four of 2 for
 * 5-8; 9-12 and 1-4 wide stay with F(2x2)), so each vector's tiles cover 32
 * consecutive floats of "tile columns": 4 per tile, the tiles of one slot
 * after each other. Without AVX-512's two-source permutes the tiles' columns
 * come out of those 32 floats by an in-register 4x8 transpose (unpack and
 * shuffle within 128-bit halves: no lane crossing), which leaves the tiles
 * in the lane order 0 2 4 6 1 3 5 7. Only the transforms see that order:
 * the GEMMs and the weight gradient's sums run over all lanes alike, and
 * the output transform's inverse transpose puts the tiles back in place.
 */
#include "ops/conv2d_winograd.h"

#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx2.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

#define VEC 8 /* floats per ymm: tiles per vector */
#define XI WINO4_XI
#define BLOCK 8 /* output channels per block of U (the layout's o % 8) */

int nn_wino4_avx2_width_ok(int w) {
    const int tw = (w + 3) / 4;
    return w <= WINO4_MAX_W && (tw == 2 || tw == 4 || tw >= 5);
}

/* ------------------------------------------------------------ weights */

/* G applied to a column (g0, g1, g2) of the kernel */
INLINE_AVX2 void g_column(__m256 r[6], __m256 g0, __m256 g1, __m256 g2) {
    const __m256 e = _mm256_add_ps(g0, g2);
    const __m256 f =
        _mm256_fmadd_ps(g0, _mm256_set1_ps(1.0f / 24), _mm256_mul_ps(g2, _mm256_set1_ps(1.0f / 6)));
    const __m256 h = _mm256_mul_ps(g1, _mm256_set1_ps(1.0f / 12));
    r[0] = _mm256_mul_ps(g0, _mm256_set1_ps(0.25f));
    r[1] = _mm256_mul_ps(_mm256_add_ps(e, g1), _mm256_set1_ps(-1.0f / 6));
    r[2] = _mm256_mul_ps(_mm256_sub_ps(e, g1), _mm256_set1_ps(-1.0f / 6));
    r[3] = _mm256_add_ps(f, h);
    r[4] = _mm256_sub_ps(f, h);
    r[5] = g2;
}

/* U[xi][o / 8][i][o % 8] = (G g G^T)[xi] for the 8 outputs o0.. (one block)
 * and input i: g[t] at w + o*so + i*si + tap(t), tap(t) = t or, flipped,
 * 8 - t. */
AVX2 static void transform_weight_block(float *u, const float *w, int cin, int cout, size_t so,
                                        size_t si, int flip, int i, int o0) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)so));
    const float *base = w + (size_t)o0 * so + (size_t)i * si;
    __m256 g[9];
    for (int t = 0; t < 9; t++) g[t] = _mm256_i32gather_ps(base + (flip ? 8 - t : t), idx, 4);
    __m256 a[3][6]; /* G g, column s: a[s][r] */
    for (int s = 0; s < 3; s++) g_column(a[s], g[s], g[3 + s], g[6 + s]);
    for (int r = 0; r < 6; r++) { /* (G g) G^T */
        __m256 row[6];
        g_column(row, a[0][r], a[1][r], a[2][r]);
        for (int c = 0; c < 6; c++)
            _mm256_storeu_ps(u + (size_t)(r * 6 + c) * cin * cout + (size_t)o0 * cin +
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
    /* the jobs in U's order: the inputs of one block of outputs one after
     * another, so each of the 36 points' stores continues the last one's
     * line (input-major jobs stored 32 bytes 8 KB apart at 256 channels,
     * and this pass took 7.7% of a 256 -> 256, 7x7 layer's perf samples at
     * batch 64, then 4.8%) */
    NN_PARALLEL_FOR(threads)
    for (int job = 0; job < cin * nb; job++)
        transform_weight_block(u, w, cin, cout, so, si, flip, job % cin, job / cin * BLOCK);
}

/* ------------------------------------------------------------ tile columns */

#define NO_ROW WINO4_NO_ROW

/* Where the 32 tile-column floats of a vector come from: floats 8 i.. 8 i + 7
 * (part i) are columns col[i].. of slot slot[i]'s row (col[i] from -1 for
 * the input, whose tile j starts at column 4 j - 1; from 0 for dy), keep[i]
 * the lanes inside the row, none: part i lies wholly outside it. */
typedef struct {
    int slot[4], col[4], none[4], whole[4]; /* whole: all 8 columns inside */
    __m256i keep[4];
} vector_parts;

INLINE_AVX2 vector_parts parts_of(const wino_geom *g, int first_col) {
    vector_parts p;
    const int slot_floats = 4 * g->tw; /* 32 / rpv, or 4 tw (5..7 tiles) when rpv = 1 */
    for (int i = 0; i < 4; i++) {
        const int s = g->rpv > 1 ? 8 * i / slot_floats : 0;
        p.slot[i] = s;
        p.col[i] = 8 * i - s * slot_floats + first_col;
        p.none[i] = p.col[i] >= g->w;
        p.whole[i] = p.col[i] >= 0 && p.col[i] + VEC <= g->w;
        const __m256i at =
            _mm256_add_epi32(_mm256_set1_epi32(p.col[i]), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        p.keep[i] = _mm256_and_si256(_mm256_cmpgt_epi32(at, _mm256_set1_epi32(-1)),
                                     _mm256_cmpgt_epi32(_mm256_set1_epi32(g->w), at));
    }
    return p;
}

/* 8 floats of a row from column `at` where keep (the columns inside the
 * image) is set, zero elsewhere and where the ReLU mask (NULL: none) is <= 0;
 * with a prologue's map, x a + b then its ReLU (v > 0 or NaN kept, as the
 * batch norm's normalizing pass does, bit for bit). */
INLINE_AVX2 __m256 load8(const float *row, const float *mask, const chan_map *m, __m256i keep,
                         int whole, int at) {
    const __m256 v = whole ? _mm256_loadu_ps(row + at) : _mm256_maskload_ps(row + at, keep);
    __m256 k = _mm256_castsi256_ps(keep);
    if (m && m->on)
        return _mm256_and_ps(
            nn_avx2_map(v, _mm256_set1_ps(m->a), _mm256_set1_ps(m->b), m->relu), k);
    if (mask)
        return _mm256_and_ps(v, _mm256_cmp_ps(whole ? _mm256_loadu_ps(mask + at)
                                                    : _mm256_maskload_ps(mask + at, keep),
                                              _mm256_setzero_ps(), _CMP_GT_OQ));
    return whole ? v : _mm256_and_ps(v, k);
}

/* The 32 floats r[0..3] (4 per tile) as 4 vectors: c[b] lane l = float
 * 4 t(l) + b, tiles t(l) = 0 2 4 6 1 3 5 7. */
INLINE_AVX2 void columns_of(__m256 c[4], const __m256 r[4]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    c[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    c[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    c[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    c[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

/* The inverse: c[q] (tiles in columns_of's order) to 32 floats, 4 per tile */
INLINE_AVX2 void floats_of(__m256 r[4], const __m256 c[4]) {
    const __m256 t0 = _mm256_unpacklo_ps(c[0], c[1]), t1 = _mm256_unpacklo_ps(c[2], c[3]);
    const __m256 t2 = _mm256_unpackhi_ps(c[0], c[1]), t3 = _mm256_unpackhi_ps(c[2], c[3]);
    r[0] = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0));
    r[1] = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2));
    r[2] = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(1, 0, 1, 0));
    r[3] = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

/* the lane of tile t in columns_of's order */
static int lane_of(int t) { return t / 2 + 4 * (t % 2); }

/* ------------------------------------------------------------ inputs */

/* B^T applied to six vectors d0..d5 */
INLINE_AVX2 void bt6(__m256 v[6], const __m256 d[6]) {
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
    const __m256 a = _mm256_fnmadd_ps(four, d[2], d[4]); /* d4 - 4 d2 */
    const __m256 b = _mm256_fnmadd_ps(four, d[1], d[3]); /* d3 - 4 d1 */
    const __m256 c = _mm256_sub_ps(d[4], d[2]);
    const __m256 e = _mm256_add_ps(_mm256_sub_ps(d[3], d[1]), _mm256_sub_ps(d[3], d[1]));
    v[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    v[1] = _mm256_add_ps(a, b);
    v[2] = _mm256_sub_ps(a, b);
    v[3] = _mm256_add_ps(c, e);
    v[4] = _mm256_sub_ps(c, e);
    v[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

/* What a tile's columns 4 and 5 need beyond the tile after it: rpv > 1
 * puts another slot's first tile there, so the lanes of each slot's last
 * tile (last) take columns 4 tw - 1 and 4 tw of its own row instead. Column
 * 4 tw lies outside (tw = ceil(w / 4)); column 4 tw - 1 inside when
 * w = 4 tw (edge). */
typedef struct {
    __m256 last;
    int edge;
} slot_ends;

INLINE_AVX2 slot_ends slot_ends_of(const wino_geom *g) {
    slot_ends e;
    int32_t lanes[VEC] = {0};
    for (int s = 0; g->rpv > 1 && s < g->rpv; s++) lanes[lane_of(s * g->tw + g->tw - 1)] = -1;
    e.last = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)lanes));
    e.edge = g->rpv > 1 && g->w == 4 * g->tw;
    return e;
}

/* V[xi][c][t] = (B^T d B)[xi] for the tile rows u0.. u0+nu-1 of the batch,
 * rpv tile rows per vector of 8 lanes. Every vector of the group is written
 * whole: lanes of no tile hold zeros or copies of inputs, which the GEMM
 * computes and transform_output never stores. */
AVX2 static void transform_input(float *v, const float *in, const float *mask,
                                 const nn_conv2d_map *map, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cin * plane;
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, image, g);
    const vector_parts p = parts_of(g, -1);
    const slot_ends ends = slot_ends_of(g);
    /* columns 4 and 5 of tile t: columns 0 and 1 of tile t + 1 */
    const __m256i next = _mm256_setr_epi32(4, 5, 6, 7, 1, 2, 3, 7);
    for (int c = 0; c < g->cin; c++) { /* plane by plane, as the input lies */
        chan_map cm = {0, 0, 0.0f, 0.0f}; /* a prologue: in is the batch norm's input */
        if (map) cm.on = 1, cm.relu = map->relu, cm.a = map->scale[c], cm.b = map->shift[c];
        const float *in_c = in + (size_t)c * plane;
        const float *mask_c = mask ? mask + (size_t)c * plane : NULL;
        const int prefetch = c + 1 < g->cin;
        __m256 t[6][6]; /* d B^T of input row a of the tiles: t[a][b] */
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_in[vi];
            int a0 = 0;
            if (vi > 0 && g->rpv == 1 && rows->at[0][0] == rows_in[vi - 1].at[4][0] &&
                rows->at[1][0] == rows_in[vi - 1].at[5][0]) {
                /* the tile row below the last in one image: its first two
                 * input rows are the last two of the one above */
                for (int b = 0; b < 6; b++) t[0][b] = t[4][b], t[1][b] = t[5][b];
                a0 = 2;
            }
            for (int a = a0; a < 6; a++) {
                __m256 r[4], x[6];
                for (int i = 0; i < 4; i++) {
                    const int s = p.slot[i];
                    const size_t at = s < rows->n ? rows->at[a][s] : NO_ROW;
                    r[i] = at == NO_ROW || p.none[i]
                               ? _mm256_setzero_ps()
                               : load8(in_c + at, mask_c ? mask_c + at : NULL, &cm, p.keep[i],
                                       p.whole[i], p.col[i]);
                }
                for (int s = 0; prefetch && s < rows->n; s++) {
                    /* the same rows of the next plane: the planes of a group
                     * are too short for the prefetchers to find them */
                    const size_t at = rows->at[a][s];
                    if (at == NO_ROW) continue;
                    _mm_prefetch((const char *)(in_c + plane + at), _MM_HINT_T0);
                    _mm_prefetch((const char *)(in_c + plane + at + g->w - 1), _MM_HINT_T0);
                    if (mask_c) {
                        _mm_prefetch((const char *)(mask_c + plane + at), _MM_HINT_T0);
                        _mm_prefetch((const char *)(mask_c + plane + at + g->w - 1), _MM_HINT_T0);
                    }
                }
                columns_of(x, r);
                x[4] = _mm256_permutevar8x32_ps(x[0], next);
                x[5] = _mm256_permutevar8x32_ps(x[1], next);
                if (g->rpv > 1) {
                    x[5] = _mm256_andnot_ps(ends.last, x[5]);
                    if (ends.edge) { /* column 4 tw - 1 of each slot's row */
                        float col[VEC] = {0};
                        for (int s = 0; s < rows->n; s++) {
                            const size_t at = rows->at[a][s];
                            if (at == NO_ROW) continue;
                            const int l = lane_of(s * g->tw + g->tw - 1), e = 4 * g->tw - 1;
                            col[l] = cm.on ? wino_load_one_mapped(in_c + at, e, g->w, &cm)
                                           : wino_load_one(in_c + at, mask_c ? mask_c + at : NULL,
                                                           e, g->w);
                        }
                        x[4] = _mm256_blendv_ps(x[4], _mm256_loadu_ps(col), ends.last);
                    } else {
                        x[4] = _mm256_andnot_ps(ends.last, x[4]);
                    }
                }
                bt6(t[a], x);
            }
            float *dst = v + (size_t)c * g->tpad + (size_t)vi * VEC;
            for (int b = 0; b < 6; b++) { /* B^T over the rows, column b */
                const __m256 col[6] = {t[0][b], t[1][b], t[2][b], t[3][b], t[4][b], t[5][b]};
                __m256 out[6];
                bt6(out, col);
                for (int a = 0; a < 6; a++)
                    _mm256_storeu_ps(dst + (size_t)(a * 6 + b) * g->vxi, out[a]);
            }
        }
    }
}

/* ------------------------------------------------------------ outputs */

/* A^T applied to six vectors m0..m5 */
INLINE_AVX2 void at6(__m256 y[4], const __m256 m[6]) {
    const __m256 t1 = _mm256_add_ps(m[1], m[2]), t2 = _mm256_sub_ps(m[1], m[2]);
    const __m256 t3 = _mm256_add_ps(m[3], m[4]), t4 = _mm256_sub_ps(m[3], m[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], t1), t3);
    y[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), t4, t2);
    y[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), t3, t1);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), t4, t2), m[5]);
}

/* out planes (cout, h, w) of the tile rows u0.. = A^T M A (+ bias, ReLU if
 * asked; add: into what is there, dst[j] += value as a scalar loop adds) */
AVX2 static void transform_output(float *out, const float *mm, const float *bias, int relu,
                                  int add, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const int w = g->w, parts_per_slot = g->rpv > 1 ? g->tw / 2 : 4;
    wino4_rows rows_out[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_out, u0, nu, image, g);
    for (int k = 0; k < g->cout; k++) { /* plane by plane, as the output lies */
        const __m256 bk = _mm256_set1_ps(bias ? bias[k] : 0.0f);
        float *out_k = out + (size_t)k * plane;
        const int prefetch = k + 1 < g->cout;
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_out[vi];
            const float *src = mm + (size_t)k * g->tpad + (size_t)vi * VEC;
            __m256 s[4][6]; /* A^T M: s[i][b] */
            for (int b = 0; b < 6; b++) {
                __m256 col[6], y[4];
                for (int a = 0; a < 6; a++)
                    col[a] = _mm256_loadu_ps(src + (size_t)(a * 6 + b) * g->mxi);
                at6(y, col);
                for (int i = 0; i < 4; i++) s[i][b] = y[i];
            }
            for (int i = 0; i < 4; i++) {
                __m256 y[4], r[4]; /* (A^T M) A + bias: y[column] of output row i */
                at6(y, s[i]);
                for (int q = 0; q < 4; q++) {
                    if (bias) y[q] = _mm256_add_ps(y[q], bk);
                    if (relu) y[q] = _mm256_max_ps(_mm256_setzero_ps(), y[q]);
                }
                floats_of(r, y);
                for (int sl = 0; sl < rows->n; sl++) {
                    const size_t at = rows->at[i + 1][sl];
                    if (at == NO_ROW) continue; /* past the last row */
                    float *dst = out_k + at;
                    if (prefetch) { /* the same row of the next plane */
                        __builtin_prefetch(dst + plane, 1, 3);
                        __builtin_prefetch(dst + plane + w - 1, 1, 3);
                    }
                    for (int j = 0; j < parts_per_slot && VEC * j < w; j++) {
                        __m256 val = r[sl * parts_per_slot + j];
                        const int n = w - VEC * j;
                        if (add) val = _mm256_add_ps(nn_avx2_load_n(dst + VEC * j, n), val);
                        nn_avx2_store_n(dst + VEC * j, n, val);
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------- weight gradient
 * As conv2d_winograd4.c: dU[xi] (K, C) = Yh[xi] (K, tiles) x V[xi]^T with
 * Yh = A dy A^T of each 4x4 tile of the output gradient, summed per thread,
 * then dW = G^T dU G. */

/* A applied to four vectors d0..d3 (A^T's columns): six rows */
INLINE_AVX2 void a6(__m256 r[6], const __m256 d[4]) {
    const __m256 e = _mm256_add_ps(d[0], d[2]), o = _mm256_add_ps(d[1], d[3]);
    const __m256 e2 = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), d[2], d[0]);
    const __m256 o2 = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), d[3], _mm256_add_ps(d[1], d[1]));
    r[0] = d[0];
    r[1] = _mm256_add_ps(e, o);
    r[2] = _mm256_sub_ps(e, o);
    r[3] = _mm256_add_ps(e2, o2);
    r[4] = _mm256_sub_ps(e2, o2);
    r[5] = d[3];
}

/* Yh[xi][k][t] = (A dy A^T)[xi] for the tile rows u0.. of the (masked) output
 * gradient, lanes of no tile zero; dbt[k] += the sum of dy[k] over them. */
AVX2 static void transform_dy(float *yh, float *dbt, const float *dy, const float *mask,
                              const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, image, g);
    const vector_parts p = parts_of(g, 0);
    for (int k = 0; k < g->cout; k++) {
        __m256 sum = _mm256_setzero_ps();
        const float *dy_k = dy + (size_t)k * plane;
        const float *mask_k = mask ? mask + (size_t)k * plane : NULL;
        const int prefetch = k + 1 < g->cout;
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_in[vi];
            __m256 d[4][4]; /* dy of the tiles: d[row][column] */
            for (int i = 0; i < 4; i++) {
                __m256 r[4];
                for (int j = 0; j < 4; j++) {
                    const int s = p.slot[j];
                    const size_t at = s < rows->n ? rows->at[i + 1][s] : NO_ROW;
                    r[j] = at == NO_ROW || p.none[j]
                               ? _mm256_setzero_ps()
                               : load8(dy_k + at, mask_k ? mask_k + at : NULL, NULL, p.keep[j],
                                       p.whole[j], p.col[j]);
                }
                for (int s = 0; prefetch && s < rows->n; s++) { /* the next plane's */
                    const size_t at = rows->at[i + 1][s];
                    if (at == NO_ROW) continue;
                    _mm_prefetch((const char *)(dy_k + plane + at), _MM_HINT_T0);
                    _mm_prefetch((const char *)(dy_k + plane + at + g->w - 1), _MM_HINT_T0);
                    if (mask_k) {
                        _mm_prefetch((const char *)(mask_k + plane + at), _MM_HINT_T0);
                        _mm_prefetch((const char *)(mask_k + plane + at + g->w - 1), _MM_HINT_T0);
                    }
                }
                columns_of(d[i], r);
            }
            __m256 t[6][4]; /* A dy: t[row][column] */
            for (int q = 0; q < 4; q++) {
                const __m256 col[4] = {d[0][q], d[1][q], d[2][q], d[3][q]};
                __m256 r[6];
                a6(r, col);
                for (int i = 0; i < 6; i++) t[i][q] = r[i];
                sum = _mm256_add_ps(sum, _mm256_add_ps(_mm256_add_ps(col[0], col[1]),
                                                       _mm256_add_ps(col[2], col[3])));
            }
            float *dst = yh + (size_t)k * g->tpad + (size_t)vi * VEC;
            for (int r = 0; r < 6; r++) { /* (A dy) A^T */
                __m256 out[6];
                a6(out, t[r]);
                for (int c = 0; c < 6; c++)
                    _mm256_storeu_ps(dst + (size_t)(r * 6 + c) * g->mxi, out[c]);
            }
        }
        dbt[k] += nn_avx2_sum(sum);
    }
}

/* G^T applied to six vectors s0..s5: three rows */
INLINE_AVX2 void gt3(__m256 q[3], const __m256 s[6]) {
    const __m256 p = _mm256_add_ps(s[1], s[2]), m = _mm256_sub_ps(s[2], s[1]);
    const __m256 u = _mm256_add_ps(s[3], s[4]), v = _mm256_sub_ps(s[3], s[4]);
    const __m256 sixth = _mm256_set1_ps(1.0f / 6);
    q[0] = _mm256_fmadd_ps(u, _mm256_set1_ps(1.0f / 24),
                           _mm256_fmsub_ps(s[0], _mm256_set1_ps(0.25f), _mm256_mul_ps(p, sixth)));
    q[1] = _mm256_fmadd_ps(v, _mm256_set1_ps(1.0f / 12), _mm256_mul_ps(m, sixth));
    q[2] = _mm256_fmadd_ps(_mm256_sub_ps(u, p), sixth, s[5]);
}

/* dw[k][c] += G^T S G for one output channel k, S = the threads' shares
 * summed in thread order, 8 input channels at a time, added tap by tap */
AVX2 static void add_wgrad_row(float *dw, float *base, int T, const wino_geom *g, int k) {
    const size_t cp = wino_round((size_t)g->cin, VEC);
    const int C = g->cin, K = g->cout;
    for (int c0 = 0; c0 < C; c0 += VEC) {
        __m256 s[XI];
        for (int xi = 0; xi < XI; xi++) {
            s[xi] = _mm256_setzero_ps();
            for (int t = 0; t < T; t++)
                s[xi] = _mm256_add_ps(s[xi], _mm256_loadu_ps(nn_wino_share(base, g, t) +
                                                             ((size_t)xi * K + k) * cp + c0));
        }
        __m256 q[3][6]; /* G^T S: q[row][column] */
        for (int c = 0; c < 6; c++) {
            const __m256 col[6] = {s[c], s[6 + c], s[12 + c], s[18 + c], s[24 + c], s[30 + c]};
            __m256 r[3];
            gt3(r, col);
            for (int i = 0; i < 3; i++) q[i][c] = r[i];
        }
        float tap[9][VEC];
        for (int r = 0; r < 3; r++) { /* (G^T S) G */
            __m256 row[3];
            gt3(row, q[r]);
            for (int c = 0; c < 3; c++) _mm256_storeu_ps(tap[3 * r + c], row[c]);
        }
        const int n = C - c0 < VEC ? C - c0 : VEC;
        float *out = dw + ((size_t)k * C + c0) * 9;
        for (int i = 0; i < n; i++)
            for (int t = 0; t < 9; t++) out[(size_t)i * 9 + t] += tap[t][i];
    }
}

const wino_kernels nn_wino4_avx2 = {
    VEC,          transform_weights, transform_input,  nn_wino_multiply_avx2, transform_output,
    transform_dy, nn_wino_accumulate_wgrad_avx2, add_wgrad_row,
};

#endif
