/*
 * conv2d_winograd4.c - Winograd F(4x4, 3x3) transforms for AVX-512: the
 * forward pass, the input gradient and the weight gradient of 3x3 stride-1
 * 'same' convolutions on images up to 28 wide (conv2d_winograd.c chooses
 * them and runs the GEMMs).
 *
 * Each 4x4 block of outputs (a tile) comes from the 6x6 inputs under it:
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A
 * with (Lavin and Gray, 2016)
 *     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *            0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *     G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 *            1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * so the 9 multiply-adds per output and channel pair of the direct method
 * become 36 per 16 outputs: 4x less arithmetic (F(2x2, 3x3): 2.25x), in 36
 * GEMMs M[xi] (cout, tiles) = U[xi] (cout, cin) x V[xi] (cin, tiles).
 *
 * Rows of these images hold at most 7 tiles, too few for 16 lanes, so a
 * vector holds the tiles of rpv = 16 / tw whole tile rows side by side
 * (two rows of 7 for 28-wide images, four of 4 for 14, eight of 2 for 7);
 * the rows may belong to different images. The input transform loads the
 * 32 floats around each input row (columns -1..30, zeros outside the image)
 * and picks every tile's 6 columns into its lanes with one permute per
 * column; the output transform interleaves the tiles' 4 columns back into
 * the row with two permutes and a blend per 16 outputs. No padded copies,
 * no channels-last transposes, and each output depends only on its own
 * group of tile rows, so results do not depend on the thread count.
 *
 * The points 0, +-1, +-2 and +-1/2 in these matrices round more than
 * F(2x2)'s 0, +-1 and +-1/2: tests/test_ops.c bounds the error against the
 * double-precision reference with the same tolerance as every other kernel.
 */
#include "ops/conv2d_winograd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#define AVX512 __attribute__((target("avx512f")))
#define INLINE_AVX512 __attribute__((target("avx512f"), always_inline)) static inline

#define VEC 16   /* floats per zmm */
#define XI WINO4_XI
#define GEMM_K 8 /* output channels per U block (conv2d_winograd.c's GEMM kernel) */

/* G applied to a column (g0, g1, g2) of the kernel */
INLINE_AVX512 void g_column(__m512 r[6], __m512 g0, __m512 g1, __m512 g2) {
    const __m512 e = _mm512_add_ps(g0, g2);
    const __m512 f =
        _mm512_fmadd_ps(g0, _mm512_set1_ps(1.0f / 24), _mm512_mul_ps(g2, _mm512_set1_ps(1.0f / 6)));
    const __m512 h = _mm512_mul_ps(g1, _mm512_set1_ps(1.0f / 12));
    r[0] = _mm512_mul_ps(g0, _mm512_set1_ps(0.25f));
    r[1] = _mm512_mul_ps(_mm512_add_ps(e, g1), _mm512_set1_ps(-1.0f / 6));
    r[2] = _mm512_mul_ps(_mm512_sub_ps(e, g1), _mm512_set1_ps(-1.0f / 6));
    r[3] = _mm512_add_ps(f, h);
    r[4] = _mm512_sub_ps(f, h);
    r[5] = g2;
}

/* U[xi][o / 8][i][o % 8] = (G g G^T)[xi] for the 3x3 kernel g of output o
 * and input i, 16 outputs at a time (conv2d_winograd.c's layout with 36
 * points): g[t] at w + o*so + i*si + tap(t), tap(t) = t or, flipped, 8 - t. */
AVX512 static void transform_weight_block(float *u, const float *w, int cin, int cout, size_t so,
                                          size_t si, int flip, int i, int o0) {
    const __mmask16 m = nn_first_lanes(cout - o0);
    const __m512i idx = nn_idx_strided((int)so);
    const float *base = w + (size_t)o0 * so + (size_t)i * si;
    __m512 g[9];
    for (int t = 0; t < 9; t++)
        g[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + (flip ? 8 - t : t), 4);
    __m512 a[3][6]; /* G g, column s: a[s][r] */
    for (int s = 0; s < 3; s++) g_column(a[s], g[s], g[3 + s], g[6 + s]);
    for (int r = 0; r < 6; r++) { /* (G g) G^T */
        __m512 row[6];
        g_column(row, a[0][r], a[1][r], a[2][r]);
        for (int c = 0; c < 6; c++) {
            float *dst =
                u + (size_t)(r * 6 + c) * cin * cout + (size_t)o0 * cin + (size_t)i * GEMM_K;
            _mm256_storeu_ps(dst, _mm512_castps512_ps256(row[c]));
            if (o0 + GEMM_K < cout)
                _mm256_storeu_ps(
                    dst + (size_t)GEMM_K * cin,
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(row[c]), 1)));
        }
    }
}

static void transform_weights(float *u, const float *w, int cin, int cout, size_t so, size_t si,
                              int flip, int threads) {
    const int nb = (cout + VEC - 1) / VEC;
    /* the jobs in U's order (conv2d_winograd4_avx2.c) */
    NN_PARALLEL_FOR(threads)
    for (int job = 0; job < cin * nb; job++)
        transform_weight_block(u, w, cin, cout, so, si, flip, job % cin, job / cin * VEC);
}

/* B^T applied to six vectors d0..d5 */
INLINE_AVX512 void bt6(__m512 v[6], const __m512 d[6]) {
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    const __m512 a = _mm512_fnmadd_ps(four, d[2], d[4]); /* d4 - 4 d2 */
    const __m512 b = _mm512_fnmadd_ps(four, d[1], d[3]); /* d3 - 4 d1 */
    const __m512 c = _mm512_sub_ps(d[4], d[2]);
    const __m512 e = _mm512_add_ps(_mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[3], d[1]));
    v[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
    v[1] = _mm512_add_ps(a, b);
    v[2] = _mm512_sub_ps(a, b);
    v[3] = _mm512_add_ps(c, e);
    v[4] = _mm512_sub_ps(c, e);
    v[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

/* A^T applied to six vectors m0..m5 */
INLINE_AVX512 void at6(__m512 y[4], const __m512 m[6]) {
    const __m512 t1 = _mm512_add_ps(m[1], m[2]), t2 = _mm512_sub_ps(m[1], m[2]);
    const __m512 t3 = _mm512_add_ps(m[3], m[4]), t4 = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], t1), t3);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), t4, t2);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), t3, t1);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), t4, t2), m[5]);
}

/* The index of lane l (0..15): 4 l - 4 s tw + b picks, from the 32 floats
 * of columns -1..30, column 4 j - 1 + b for the tile j = l - s tw of slot s. */
INLINE_AVX512 __m512i pick_index(int slot, int tw, int b) {
    const __m512i lanes4 = _mm512_slli_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 2);
    return _mm512_add_epi32(lanes4, _mm512_set1_epi32(b - 4 * slot * tw));
}

#define NO_ROW WINO4_NO_ROW

/* the lanes of slot s: its tw tiles */
static __mmask16 slot_lanes_of(int s, int tw) {
    return (__mmask16)(((1u << tw) - 1u) << (s * tw));
}

/* 16 floats of a row from column `at` on where keep (the columns inside the
 * image) is set, zero elsewhere, and where the ReLU mask (a layer's output;
 * NULL: none) is <= 0; with a prologue's map, x a + b then its ReLU (v > 0
 * or NaN kept, as the batch norm's normalizing pass does, bit for bit). */
INLINE_AVX512 __m512 load16(const float *row, const float *mask, const chan_map *m,
                            __mmask16 keep, int at) {
    __m512 v = _mm512_maskz_loadu_ps(keep, row + at);
    if (m->on) return nn_map_lanes(v, m->a, m->b, m->relu, keep);
    if (mask)
        keep = _mm512_mask_cmp_ps_mask(keep, _mm512_maskz_loadu_ps(keep, mask + at),
                                       _mm512_setzero_ps(), _CMP_GT_OQ);
    return _mm512_maskz_mov_ps(keep, v);
}

/* The columns -1..14 and 15..30 of a row that lie inside [0, w). */
static __mmask16 keep_low(int w) { return (__mmask16)(nn_first_lanes(w + 1) & ~1u); }
static __mmask16 keep_high(int w) { return nn_first_lanes(w > 15 ? w - 15 : 0); }

/* Images up to PACK_MAX_W wide: the rows of spp = 31 / w slots lie side by
 * side in a pair of registers (32 lanes, slot q of the pair from lane q w;
 * lane 31 and those past the slots hold zeros), so one permute picks a
 * column of the tiles of spp slots, where one per slot would be needed with
 * a slot's row alone in its pair (w = 7: 2 permutes and a blend per column
 * in place of 8 and 7). */
#define PACK_MAX_W 15
#define PACK_MAX_PAIRS 3 /* rpv / spp rounded up: 3 at w = 4, 8 or 12 */
#define PACK_ZERO 31     /* a lane past every slot of a pair */

typedef struct {
    int spp, np;                     /* slots per pair, pairs */
    __mmask16 lo[16], hi[16];        /* slot q of a pair: its lanes of each register */
    __mmask16 lanes[PACK_MAX_PAIRS]; /* the vector lanes of pair p's tiles */
} packing;

static int packs(const wino_geom *g) { return g->w <= PACK_MAX_W; }

static packing packing_of(const wino_geom *g) {
    packing pk;
    pk.spp = (PACK_ZERO) / g->w;
    if (pk.spp > g->rpv) pk.spp = g->rpv;
    pk.np = (g->rpv + pk.spp - 1) / pk.spp;
    NN_ASSERT(pk.np <= PACK_MAX_PAIRS);
    for (int q = 0; q < pk.spp; q++) {
        const uint32_t m = ((1u << g->w) - 1u) << (q * g->w);
        pk.lo[q] = (__mmask16)(m & 0xFFFFu), pk.hi[q] = (__mmask16)(m >> 16);
    }
    for (int p = 0; p < pk.np; p++) {
        uint32_t m = 0;
        for (int s = p * pk.spp; s < (p + 1) * pk.spp && s < g->rpv; s++)
            m |= slot_lanes_of(s, g->tw);
        pk.lanes[p] = (__mmask16)m;
    }
    return pk;
}

/* The index of lane l of pair p's tiles: column 4 j + off of tile j = l % tw
 * of the slot l / tw, at lane q w + column of the pair (q: the slot's place in
 * it), or PACK_ZERO outside the image */
AVX512 static __m512i pack_index(const packing *pk, const wino_geom *g, int p, int off) {
    int32_t at[VEC];
    for (int l = 0; l < VEC; l++) {
        const int s = l / g->tw, c = 4 * (l % g->tw) + off;
        at[l] = s / pk->spp == p && s < g->rpv && c >= 0 && c < g->w
                    ? (s % pk->spp) * g->w + c : PACK_ZERO;
    }
    return _mm512_loadu_si512(at);
}

/* fn(args..., np) with the pair count np (1 to PACK_MAX_PAIRS) a constant
 * of each call, so that an inlined fn keeps the pairs in registers (with np
 * a variable they went to the stack: slower than the per-slot picks) */
#define WITH_PAIRS(np, fn, ...)                                                                    \
    do {                                                                                           \
        switch (np) {                                                                              \
        case 1: fn(__VA_ARGS__, 1); break;                                                         \
        case 2: fn(__VA_ARGS__, 2); break;                                                         \
        default: fn(__VA_ARGS__, 3); break;                                                        \
        }                                                                                          \
    } while (0)

/* a with b's lanes set (their other lanes zero): an OR, not a merging load,
 * which waits for a */
INLINE_AVX512 __m512 join_lanes(__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

/* The np pairs of one row a of a vector's slots (rows->at[a]), zero where
 * no row (above or below the image, slots past rows->n), masked by the ReLU
 * mask (NULL: none) or mapped by m. np is a constant where inlined, so that
 * the pairs stay in registers. */
INLINE_AVX512 void load_pairs(__m512 *lo, __m512 *hi, int np, const packing *pk,
                              const wino4_rows *rows, int a, const float *src, const float *mask,
                              const chan_map *m, size_t plane, int prefetch, int w) {
#pragma GCC unroll 3
    for (int p = 0; p < np; p++) {
        __m512 l = _mm512_setzero_ps(), h = _mm512_setzero_ps();
        __m512 ml = _mm512_setzero_ps(), mh = _mm512_setzero_ps();
        __mmask16 kl = 0, kh = 0;
        for (int q = 0, s = p * pk->spp; q < pk->spp && s < rows->n; q++, s++) {
            const size_t at = rows->at[a][s];
            if (at == NO_ROW) continue;
            /* lane q w holds the row's first float: masked loads touch
             * only the row's own floats */
            const float *row = src + at - (ptrdiff_t)q * w;
            l = join_lanes(l, _mm512_maskz_loadu_ps(pk->lo[q], row));
            if (pk->hi[q]) h = join_lanes(h, _mm512_maskz_loadu_ps(pk->hi[q], row + VEC));
            kl |= pk->lo[q], kh |= pk->hi[q];
            if (mask) {
                const float *mrow = mask + at - (ptrdiff_t)q * w;
                ml = join_lanes(ml, _mm512_maskz_loadu_ps(pk->lo[q], mrow));
                if (pk->hi[q]) mh = join_lanes(mh, _mm512_maskz_loadu_ps(pk->hi[q], mrow + VEC));
            }
            if (prefetch) { /* the same row of the next plane */
                _mm_prefetch((const char *)(src + at + plane), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + at + plane + w - 1), _MM_HINT_T0);
                if (mask) {
                    _mm_prefetch((const char *)(mask + at + plane), _MM_HINT_T0);
                    _mm_prefetch((const char *)(mask + at + plane + w - 1), _MM_HINT_T0);
                }
            }
        }
        if (m->on) {
            l = nn_map_lanes(l, m->a, m->b, m->relu, kl);
            h = nn_map_lanes(h, m->a, m->b, m->relu, kh);
        } else if (mask) {
            l = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(ml, _mm512_setzero_ps(), _CMP_GT_OQ), l);
            h = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mh, _mm512_setzero_ps(), _CMP_GT_OQ), h);
        }
        lo[p] = l, hi[p] = h;
    }
}

/* a column of the vector's tiles from the np pairs (idx[p * stride]: pair
 * p's index of it) */
INLINE_AVX512 __m512 pick_packed(int np, const packing *pk, const __m512 *lo, const __m512 *hi,
                                 const __m512i *idx, int stride) {
    __m512 x = _mm512_maskz_permutex2var_ps(pk->lanes[0], lo[0], idx[0], hi[0]);
#pragma GCC unroll 3
    for (int p = 1; p < np; p++)
        x = _mm512_mask_mov_ps(x, pk->lanes[p],
                               _mm512_permutex2var_ps(lo[p], idx[(size_t)p * stride], hi[p]));
    return x;
}

/* B^T over the rows of t (t = d B per input row) and the 36 points stored at
 * dst, vxi apart */
INLINE_AVX512 void store_points(float *dst, __m512 t[6][6], size_t vxi) {
    for (int b = 0; b < 6; b++) { /* B^T over the rows, column b */
        const __m512 col[6] = {t[0][b], t[1][b], t[2][b], t[3][b], t[4][b], t[5][b]};
        __m512 out[6];
        bt6(out, col);
        for (int a = 0; a < 6; a++) _mm512_storeu_ps(dst + (size_t)(a * 6 + b) * vxi, out[a]);
    }
}

/* transform_input for images up to PACK_MAX_W wide (packing), np pairs */
INLINE_AVX512 void transform_input_pairs(float *v, const float *in, const float *mask,
                                         const nn_conv2d_map *map, const wino_geom *g,
                                         const packing *pk, const wino4_rows *rows_in, int nvec,
                                         const int np) {
    const size_t plane = (size_t)g->h * g->w;
    __m512i idx[PACK_MAX_PAIRS][6]; /* pair p, column b: 4 j - 1 + b */
    for (int p = 0; p < np; p++)
        for (int b = 0; b < 6; b++) idx[p][b] = pack_index(pk, g, p, b - 1);
    for (int c = 0; c < g->cin; c++) {
        chan_map cm = {0, 0, 0.0f, 0.0f};
        if (map) cm.on = 1, cm.relu = map->relu, cm.a = map->scale[c], cm.b = map->shift[c];
        const float *in_c = in + (size_t)c * plane;
        const float *mask_c = mask ? mask + (size_t)c * plane : NULL;
        const int prefetch = c + 1 < g->cin;
        for (int vi = 0; vi < nvec; vi++) {
            __m512 t[6][6];
            for (int a = 0; a < 6; a++) {
                __m512 lo[PACK_MAX_PAIRS], hi[PACK_MAX_PAIRS], x[6];
                load_pairs(lo, hi, np, pk, &rows_in[vi], a, in_c, mask_c, &cm, plane, prefetch,
                           g->w);
                for (int b = 0; b < 6; b++) x[b] = pick_packed(np, pk, lo, hi, &idx[0][b], 6);
                bt6(t[a], x);
            }
            store_points(v + (size_t)c * g->tpad + (size_t)vi * VEC, t, g->vxi);
        }
    }
}

AVX512 static void transform_input_packed(float *v, const float *in, const float *mask,
                                          const nn_conv2d_map *map, const wino_geom *g, long u0,
                                          int nu) {
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, (size_t)g->cin * g->h * g->w, g);
    const packing pk = packing_of(g);
    WITH_PAIRS(pk.np, transform_input_pairs, v, in, mask, map, g, &pk, rows_in, nvec);
}

/* V[xi][c][t] = (B^T d B)[xi] for the tile rows u0.. u0+nu-1 of the batch,
 * rpv tile rows per vector of 16 lanes (wino_geom). Every vector of the
 * group is written whole: lanes of no tile hold zeros or copies of inputs,
 * which the GEMM computes and transform_output never stores. The rows under
 * each vector, the lane picks and the column masks are worked out once per
 * group, not per channel. */
AVX512 static void transform_input(float *v, const float *in, const float *mask,
                                   const nn_conv2d_map *map, const wino_geom *g, long u0, int nu) {
    if (packs(g)) {
        transform_input_packed(v, in, mask, map, g, u0, nu);
        return;
    }
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cin * plane;
    const int rpv = g->rpv, tw = g->tw, w = g->w;
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, image, g);
    __m512i pick[VEC][6]; /* slot s, column b */
    __mmask16 slot_lanes[VEC];
    for (int s = 0; s < rpv; s++) {
        slot_lanes[s] = slot_lanes_of(s, tw);
        for (int b = 0; b < 6; b++) pick[s][b] = pick_index(s, tw, b);
    }
    const __mmask16 keep_lo = keep_low(w), keep_hi = keep_high(w);
    for (int c = 0; c < g->cin; c++) { /* plane by plane, as the input lies */
        chan_map cm = {0, 0, 0.0f, 0.0f}; /* a prologue: in is the batch norm's input */
        if (map) cm.on = 1, cm.relu = map->relu, cm.a = map->scale[c], cm.b = map->shift[c];
        const float *in_c = in + (size_t)c * plane;
        const float *mask_c = mask ? mask + (size_t)c * plane : NULL;
        const int prefetch = c + 1 < g->cin;
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_in[vi];
            __m512 t[6][6]; /* d B^T of input row a of the tiles: t[a][b] */
            for (int a = 0; a < 6; a++) {
                __m512 x[6];
                for (int b = 0; b < 6; b++) x[b] = _mm512_setzero_ps();
                for (int s = 0; s < rows->n; s++) {
                    const size_t at = rows->at[a][s];
                    if (at == NO_ROW) continue;
                    const float *msk = mask_c ? mask_c + at : NULL;
                    const __m512 lo = load16(in_c + at, msk, &cm, keep_lo, -1);
                    const __m512 hi = keep_hi ? load16(in_c + at, msk, &cm, keep_hi, 15)
                                              : _mm512_setzero_ps(); /* w <= 15 */
                    if (prefetch) { /* the same row of the next plane: the
                                     * planes of a group are too short for
                                     * the prefetchers to find them */
                        _mm_prefetch((const char *)(in_c + at + plane), _MM_HINT_T0);
                        _mm_prefetch((const char *)(in_c + at + plane + w - 1), _MM_HINT_T0);
                        if (w > VEC) /* a row of 17-28 floats may touch 3 lines */
                            _mm_prefetch((const char *)(in_c + at + plane + VEC), _MM_HINT_T0);
                        if (msk) {
                            _mm_prefetch((const char *)(msk + plane), _MM_HINT_T0);
                            _mm_prefetch((const char *)(msk + plane + w - 1), _MM_HINT_T0);
                            if (w > VEC)
                                _mm_prefetch((const char *)(msk + plane + VEC), _MM_HINT_T0);
                        }
                    }
                    if (s == 0) /* the other lanes zero: no blend */
                        for (int b = 0; b < 6; b++)
                            x[b] = _mm512_maskz_permutex2var_ps(slot_lanes[0], lo, pick[0][b], hi);
                    else
                        for (int b = 0; b < 6; b++)
                            x[b] = _mm512_mask_mov_ps(x[b], slot_lanes[s],
                                                      _mm512_permutex2var_ps(lo, pick[s][b], hi));
                }
                bt6(t[a], x);
            }
            store_points(v + (size_t)c * g->tpad + (size_t)vi * VEC, t, g->vxi);
        }
    }
}

/* The permute indices that put slot s's tiles back into a row: lane m of
 * 16 outputs is tile m / 4, column m % 4 (odd columns from the second table
 * of each permute, columns 2 and 3 from the second permute); hi: the 16
 * outputs after those. */
typedef struct {
    __m512i lo, hi;
} row_picks;

INLINE_AVX512 row_picks row_picks_of(int slot, int tw) {
    const __m512i base = _mm512_set_epi32(19, 3, 19, 3, 18, 2, 18, 2, 17, 1, 17, 1, 16, 0, 16, 0);
    row_picks p;
    p.lo = _mm512_add_epi32(base, _mm512_set1_epi32(slot * tw));
    p.hi = _mm512_add_epi32(p.lo, _mm512_set1_epi32(4));
    return p;
}

/* One output row (4 tw columns, the first w stored) of the tiles of a slot
 * (its picks): column 4 j + q from y[q]; add: into what is there (dst[j] +=
 * value, the same sums as a scalar loop). */
INLINE_AVX512 void store_row(float *dst, int w, const row_picks *p, const __m512 y[4], int add) {
    const __mmask16 upper = 0xCCCC, m0 = nn_first_lanes(w);
    __m512 lo = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(y[0], p->lo, y[1]),
                                     _mm512_permutex2var_ps(y[2], p->lo, y[3]));
    if (add) lo = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, dst), lo);
    _mm512_mask_storeu_ps(dst, m0, lo);
    if (w > VEC) {
        const __mmask16 m1 = nn_first_lanes(w - VEC);
        __m512 hi = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(y[0], p->hi, y[1]),
                                         _mm512_permutex2var_ps(y[2], p->hi, y[3]));
        if (add) hi = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, dst + VEC), hi);
        _mm512_mask_storeu_ps(dst + VEC, m1, hi);
    }
}

/* output row i of a vector's tiles: A^T over s (row i of A^T M) + bias
 * (NULL: none), then the ReLU if relu */
INLINE_AVX512 void output_row(__m512 y[4], const __m512 s[6], const __m512 *bias, int relu) {
    at6(y, s);
    for (int q = 0; q < 4; q++) {
        if (bias) y[q] = _mm512_add_ps(y[q], *bias);
        if (relu) y[q] = _mm512_max_ps(_mm512_setzero_ps(), y[q]);
    }
}

/* row i of slot sl's tiles stored (store_row) into its plane out_k, asking
 * for the same row of the next plane when prefetch; nothing past the last
 * row */
INLINE_AVX512 void put_output_row(float *out_k, const wino4_rows *rows, int sl, int i,
                                  const row_picks *p, const __m512 y[4], int add, size_t plane,
                                  int w, int prefetch) {
    const size_t at = rows->at[i + 1][sl];
    if (at == NO_ROW) return;
    float *dst = out_k + at;
    if (prefetch) {
        __builtin_prefetch(dst + plane, 1, 3);
        __builtin_prefetch(dst + plane + w - 1, 1, 3);
        if (w > VEC) __builtin_prefetch(dst + plane + VEC, 1, 3);
    }
    store_row(dst, w, p, y, add);
}

/* out planes (cout, h, w) of the tile rows u0.. = A^T M A (+ bias, ReLU if
 * asked; add: into what is there) */
AVX512 static void transform_output(float *out, const float *mm, const float *bias, int relu,
                                    int add, const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    const int rpv = g->rpv, tw = g->tw, w = g->w;
    /* the output rows of each vector's tiles (row i of slot s: at[i + 1][s])
     * and the slots' picks, once per group */
    wino4_rows rows_out[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_out, u0, nu, image, g);
    row_picks picks[VEC];
    for (int s = 0; s < rpv; s++) picks[s] = row_picks_of(s, tw);
    for (int k = 0; k < g->cout; k++) { /* plane by plane, as the output lies */
        const __m512 bk = _mm512_set1_ps(bias ? bias[k] : 0.0f);
        float *out_k = out + (size_t)k * plane;
        const int prefetch = k + 1 < g->cout;
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_out[vi];
            const float *src = mm + (size_t)k * g->tpad + (size_t)vi * VEC;
            __m512 s[4][6]; /* A^T M: s[i][b] */
            for (int b = 0; b < 6; b++) {
                __m512 col[6], y[4];
                for (int a = 0; a < 6; a++)
                    col[a] = _mm512_loadu_ps(src + (size_t)(a * 6 + b) * g->mxi);
                at6(y, col);
                for (int i = 0; i < 4; i++) s[i][b] = y[i];
            }
            if (add) {
                /* row by row across the slots: a slot's next row lies right
                 * after this one, and its masked loads waited for the masked
                 * stores just made to the same lines (no forwarding). In
                 * this order, on a Zen 4: 1.18x as fast at 28x28, 1.9x at
                 * 14x14, 2.3x at 7x7. Without the add, slot by slot ran
                 * faster (0.73x and 0.87x this way), and so did its code
                 * below as written: through these helpers, ResNet-20's
                 * forward 3x3 layers ran 2-6% slower (GCC 12). */
                for (int i = 0; i < 4; i++) {
                    __m512 yi[4];
                    output_row(yi, s[i], bias ? &bk : NULL, relu);
                    for (int sl = 0; sl < rows->n; sl++)
                        put_output_row(out_k, rows, sl, i, &picks[sl], yi, 1, plane, w, prefetch);
                }
                continue;
            }
            __m512 y[4][4]; /* (A^T M) A + bias: y[row][column] */
            for (int i = 0; i < 4; i++) {
                at6(y[i], s[i]);
                for (int q = 0; q < 4; q++) {
                    if (bias) y[i][q] = _mm512_add_ps(y[i][q], bk);
                    if (relu) y[i][q] = _mm512_max_ps(_mm512_setzero_ps(), y[i][q]);
                }
            }
            for (int sl = 0; sl < rows->n; sl++)
                for (int i = 0; i < 4; i++) {
                    const size_t at = rows->at[i + 1][sl];
                    if (at == NO_ROW) continue; /* past the last row */
                    float *dst = out_k + at;
                    if (prefetch) { /* the same row of the next plane */
                        __builtin_prefetch(dst + plane, 1, 3);
                        __builtin_prefetch(dst + plane + w - 1, 1, 3);
                        if (w > VEC) __builtin_prefetch(dst + plane + VEC, 1, 3);
                    }
                    store_row(dst, w, &picks[sl], y[i], 0);
                }
        }
    }
}

/* ---------------------------------------------------------- weight gradient
 * As conv2d_winograd.c's F(2x2): dU[xi] (K, C) = Yh[xi] (K, tiles) x
 * V[xi]^T with Yh = A dy A^T of each 4x4 tile of the output gradient, summed
 * per thread, then dW = G^T dU G. */

/* A applied to four vectors d0..d3 (A^T's columns): six rows */
INLINE_AVX512 void a6(__m512 r[6], const __m512 d[4]) {
    const __m512 e = _mm512_add_ps(d[0], d[2]), o = _mm512_add_ps(d[1], d[3]);
    const __m512 e2 = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), d[2], d[0]);
    const __m512 o2 = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), d[3], _mm512_add_ps(d[1], d[1]));
    r[0] = d[0];
    r[1] = _mm512_add_ps(e, o);
    r[2] = _mm512_sub_ps(e, o);
    r[3] = _mm512_add_ps(e2, o2);
    r[4] = _mm512_sub_ps(e2, o2);
    r[5] = d[3];
}

/* The 36 points of A d A^T stored at dst, mxi apart (d: the dy of the
 * tiles, d[row][column]); returns sum + the sum of d over the rows and
 * columns */
INLINE_AVX512 __m512 store_dy_points(float *dst, __m512 d[4][4], __m512 sum, size_t mxi) {
    __m512 t[6][4]; /* A dy: t[row][column] */
    for (int q = 0; q < 4; q++) {
        const __m512 col[4] = {d[0][q], d[1][q], d[2][q], d[3][q]};
        __m512 r[6];
        a6(r, col);
        for (int i = 0; i < 6; i++) t[i][q] = r[i];
        sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(col[0], col[1]),
                                               _mm512_add_ps(col[2], col[3])));
    }
    for (int r = 0; r < 6; r++) { /* (A dy) A^T */
        __m512 out[6];
        a6(out, t[r]);
        for (int c = 0; c < 6; c++) _mm512_storeu_ps(dst + (size_t)(r * 6 + c) * mxi, out[c]);
    }
    return sum;
}

/* transform_dy for images up to PACK_MAX_W wide (packing), np pairs */
INLINE_AVX512 void transform_dy_pairs(float *yh, float *dbt, const float *dy, const float *mask,
                                      const wino_geom *g, const packing *pk,
                                      const wino4_rows *rows_in, int nvec, const int np) {
    const size_t plane = (size_t)g->h * g->w;
    const chan_map none = {0, 0, 0.0f, 0.0f};
    __m512i idx[PACK_MAX_PAIRS][4]; /* pair p, column q: 4 j + q */
    for (int p = 0; p < np; p++)
        for (int q = 0; q < 4; q++) idx[p][q] = pack_index(pk, g, p, q);
    for (int k = 0; k < g->cout; k++) {
        __m512 sum = _mm512_setzero_ps();
        const float *dy_k = dy + (size_t)k * plane;
        const float *mask_k = mask ? mask + (size_t)k * plane : NULL;
        const int prefetch = k + 1 < g->cout;
        for (int vi = 0; vi < nvec; vi++) {
            __m512 d[4][4]; /* dy of the tiles: d[row][column] */
            for (int i = 0; i < 4; i++) {
                __m512 lo[PACK_MAX_PAIRS], hi[PACK_MAX_PAIRS];
                load_pairs(lo, hi, np, pk, &rows_in[vi], i + 1, dy_k, mask_k, &none, plane,
                           prefetch, g->w);
                for (int q = 0; q < 4; q++) d[i][q] = pick_packed(np, pk, lo, hi, &idx[0][q], 4);
            }
            sum = store_dy_points(yh + (size_t)k * g->tpad + (size_t)vi * VEC, d, sum, g->mxi);
        }
        dbt[k] += _mm512_reduce_add_ps(sum);
    }
}

AVX512 static void transform_dy_packed(float *yh, float *dbt, const float *dy, const float *mask,
                                       const wino_geom *g, long u0, int nu) {
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, (size_t)g->cout * g->h * g->w, g);
    const packing pk = packing_of(g);
    WITH_PAIRS(pk.np, transform_dy_pairs, yh, dbt, dy, mask, g, &pk, rows_in, nvec);
}

/* Yh[xi][k][t] = (A dy A^T)[xi] for the tile rows u0.. of the (masked) output
 * gradient, lanes of no tile zero; dbt[k] += the sum of dy[k] over them. */
AVX512 static void transform_dy(float *yh, float *dbt, const float *dy, const float *mask,
                                const wino_geom *g, long u0, int nu) {
    const size_t plane = (size_t)g->h * g->w, image = (size_t)g->cout * plane;
    if (packs(g)) {
        transform_dy_packed(yh, dbt, dy, mask, g, u0, nu);
        return;
    }
    const int rpv = g->rpv, tw = g->tw, w = g->w;
    const chan_map none = {0, 0, 0.0f, 0.0f};
    /* the rows of each vector's tiles (row i of slot s: at[i + 1][s]) and the
     * lane picks, once per group */
    wino4_rows rows_in[WINO4_MAX_VECTORS];
    const int nvec = nn_wino4_group_rows(rows_in, u0, nu, image, g);
    __m512i pick[VEC][4]; /* slot s, column q */
    __mmask16 slot_lanes[VEC];
    for (int s = 0; s < rpv; s++) {
        slot_lanes[s] = slot_lanes_of(s, tw);
        for (int q = 0; q < 4; q++) pick[s][q] = pick_index(s, tw, q + 1);
    }
    const __mmask16 keep_lo = keep_low(w), keep_hi = keep_high(w);
    for (int k = 0; k < g->cout; k++) {
        __m512 sum = _mm512_setzero_ps();
        const float *dy_k = dy + (size_t)k * plane;
        const float *mask_k = mask ? mask + (size_t)k * plane : NULL;
        const int prefetch = k + 1 < g->cout;
        for (int vi = 0; vi < nvec; vi++) {
            const wino4_rows *rows = &rows_in[vi];
            __m512 d[4][4]; /* dy of the tiles: d[row][column] */
            for (int i = 0; i < 4; i++)
                for (int q = 0; q < 4; q++) d[i][q] = _mm512_setzero_ps();
            for (int s = 0; s < rows->n; s++)
                for (int i = 0; i < 4; i++) {
                    const size_t at = rows->at[i + 1][s];
                    if (at == NO_ROW) continue; /* past the last row */
                    const float *msk = mask_k ? mask_k + at : NULL;
                    const __m512 lo = load16(dy_k + at, msk, &none, keep_lo, -1);
                    const __m512 hi = keep_hi ? load16(dy_k + at, msk, &none, keep_hi, 15)
                                              : _mm512_setzero_ps(); /* w <= 15 */
                    if (prefetch) { /* the same row of the next plane */
                        _mm_prefetch((const char *)(dy_k + at + plane), _MM_HINT_T0);
                        _mm_prefetch((const char *)(dy_k + at + plane + w - 1), _MM_HINT_T0);
                        if (w > VEC)
                            _mm_prefetch((const char *)(dy_k + at + plane + VEC), _MM_HINT_T0);
                    }
                    for (int q = 0; q < 4; q++) /* column 4 j + q: index 4 j + q + 1 */
                        d[i][q] = _mm512_mask_mov_ps(d[i][q], slot_lanes[s],
                                                     _mm512_permutex2var_ps(lo, pick[s][q], hi));
                }
            sum = store_dy_points(yh + (size_t)k * g->tpad + (size_t)vi * VEC, d, sum, g->mxi);
        }
        dbt[k] += _mm512_reduce_add_ps(sum);
    }
}

/* G^T applied to six vectors s0..s5: three rows */
INLINE_AVX512 void gt3(__m512 q[3], const __m512 s[6]) {
    const __m512 p = _mm512_add_ps(s[1], s[2]), m = _mm512_sub_ps(s[2], s[1]);
    const __m512 u = _mm512_add_ps(s[3], s[4]), v = _mm512_sub_ps(s[3], s[4]);
    const __m512 sixth = _mm512_set1_ps(1.0f / 6);
    q[0] = _mm512_fmadd_ps(u, _mm512_set1_ps(1.0f / 24),
                           _mm512_fmsub_ps(s[0], _mm512_set1_ps(0.25f), _mm512_mul_ps(p, sixth)));
    q[1] = _mm512_fmadd_ps(v, _mm512_set1_ps(1.0f / 12), _mm512_mul_ps(m, sixth));
    q[2] = _mm512_fmadd_ps(_mm512_sub_ps(u, p), sixth, s[5]);
}

/* dw[k][c] += G^T S G for one output channel k, S = the threads' shares
 * summed in thread order, 16 input channels at a time */
AVX512 static void add_wgrad_row(float *dw, float *base, int T, const wino_geom *g, int k) {
    const size_t cp = wino_round((size_t)g->cin, VEC);
    const int C = g->cin, K = g->cout;
    for (int c0 = 0; c0 < C; c0 += VEC) {
        __m512 s[XI];
        for (int xi = 0; xi < XI; xi++) {
            s[xi] = _mm512_setzero_ps();
            for (int t = 0; t < T; t++)
                s[xi] = _mm512_add_ps(s[xi], _mm512_loadu_ps(nn_wino_share(base, g, t) +
                                                             ((size_t)xi * K + k) * cp + c0));
        }
        __m512 q[3][6]; /* G^T S: q[row][column] */
        for (int c = 0; c < 6; c++) {
            const __m512 col[6] = {s[c], s[6 + c], s[12 + c], s[18 + c], s[24 + c], s[30 + c]};
            __m512 r[3];
            gt3(r, col);
            for (int i = 0; i < 3; i++) q[i][c] = r[i];
        }
        __m512 tap[9];
        for (int r = 0; r < 3; r++) gt3(tap + 3 * r, q[r]); /* (G^T S) G */
        nn_wino_add_taps_avx512(dw + ((size_t)k * C + c0) * 9, tap, C - c0 < VEC ? C - c0 : VEC);
    }
}

const wino_kernels nn_wino4_avx512 = {
    VEC,          transform_weights, transform_input,  nn_wino_multiply_avx512, transform_output,
    transform_dy, nn_wino_accumulate_wgrad_avx512,  add_wgrad_row,
};

#endif
