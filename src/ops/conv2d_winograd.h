/*
 * conv2d_winograd.h - what the Winograd drivers (conv2d_winograd.c: groups
 * of tile rows, threads, buffers) share with the kernels of one instruction
 * set and tile size (the transforms and the small GEMMs):
 *  - F(2x2, 3x3), AVX-512, 16 tiles per vector: conv2d_winograd.c itself;
 *  - F(2x2, 3x3), AVX2 + FMA, 8 tiles per vector: conv2d_winograd_avx2.c
 *    (the same layouts but for the rounding to whole vectors, so buffers
 *    sized for 16 hold those of 8);
 *  - F(4x4, 3x3), AVX-512, images up to 28 wide: conv2d_winograd4.c
 *    (several tile rows per vector);
 *  - F(4x4, 3x3), AVX2 + FMA, images 5-8 and 13-28 wide:
 *    conv2d_winograd4_avx2.c (1, 2 or 4 tile rows per 8 lanes).
 */
#ifndef NN_CONV2D_WINOGRAD_H
#define NN_CONV2D_WINOGRAD_H

#include "ops/ops.h"

#define WINO_XI 16  /* points of a transformed 4x4 tile: F(2x2, 3x3) */
#define WINO4_XI 36 /* points of a transformed 6x6 tile: F(4x4, 3x3) */
#define WINO4_MAX_W 28 /* F(4x4): at most 7 tiles per row, 2 rows per vector */
#define WINO4_MAX_VECTORS 16 /* F(4x4): 16-lane vectors per group, at most */

/* One Winograd correlation: cin input planes of h x w to cout output planes
 * of the same size, in groups of up to `rows` tile rows. */
typedef struct {
    int cin, cout, h, w;
    int m;           /* outputs per tile side: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)) */
    int xi;          /* points of a transformed tile, (m + 2)^2 */
    int th, tw;      /* tile rows and columns per image */
    int rows;        /* tile rows per group, at most */
    int quantum;     /* the tile rows group bounds fall on: 1, a vector's
                        rpv, or whole images' (whole_images) */
    int vec;         /* tiles per vector of the kernels (16 or 8) */
    int rpv;         /* F(4x4): tile rows per vector, tile row k of a group in
                        vector k / rpv, lanes (k % rpv) tw.. (lanes past rpv tw
                        unused); 0: the tiles of a group dense, tile row k at
                        k tw (F(2x2)) */
    size_t tpad;     /* tile lanes per group, rounded up to vec */
    size_t vxi, mxi; /* floats between the transformed points of V and M: cin
                        (cout) rows of tpad, and vec more so that the 16 points'
                        rows do not share L1 sets (4 KB apart) */
} wino_geom;

/* n rounded up to a multiple of vec (a power of two) */
static inline size_t wino_round(size_t n, int vec) {
    return (n + (size_t)vec - 1) & ~((size_t)vec - 1);
}

/* The kernels of one instruction set. U is the transformed weights
 * U[xi][o / 8][i][o % 8]; V the transformed inputs V[xi][c][tile]; M the
 * products M[xi][k][tile]; Yh the transformed output gradient (in M's
 * layout); a weight-gradient share is S[xi][k][c rounded up to vec]. */
typedef struct {
    int vec;
    /* u = G g G^T of the cout x cin kernels at w (output o at stride so,
     * input i at stride si; flip: the kernel turned 180 degrees) */
    void (*transform_weights)(float *u, const float *w, int cin, int cout, size_t so, size_t si,
                              int flip, int threads);
    /* V of the tile rows u0..u0+nu-1 of the batch in (masked or mapped) */
    void (*transform_input)(float *v, const float *in, const float *mask,
                            const nn_conv2d_map *map, const wino_geom *g, long u0, int nu);
    /* M = U^T V for the first `tiles` tiles, asking for the feed's lines
     * (nn_line_feed, ops.h; NULL: none) while it multiplies (the AVX2 GEMMs
     * take none) */
    void (*multiply)(float *mm, const float *u, const float *v, const wino_geom *g, size_t tiles,
                     nn_line_feed *feed);
    /* the output planes of the tile rows from M (+ bias, ReLU; add: into
     * what is there) */
    void (*transform_output)(float *out, const float *mm, const float *bias, int relu, int add,
                             const wino_geom *g, long u0, int nu);
    /* Yh of the tile rows from the (masked) output gradient; dbt[k] += its sums */
    void (*transform_dy)(float *yh, float *dbt, const float *dy, const float *mask,
                         const wino_geom *g, long u0, int nu);
    /* share += Yh V^T over the tiles (vt: a transpose buffer) */
    void (*accumulate_wgrad)(float *share, float *vt, const float *yh, const float *v,
                             const wino_geom *g, size_t tiles);
    /* dw[k] += G^T S G, S = the T threads' shares of row k summed in thread order */
    void (*add_wgrad_row)(float *dw, float *base, int T, const wino_geom *g, int k);
} wino_kernels;

/* A prologue's map of one input channel (nn_conv2d_map): v = x a + b, then
 * the ReLU when relu; on = 0: none. */
typedef struct {
    int on, relu;
    float a, b;
} chan_map;

/* One float of a mapped row (zero outside [0, n): the padding of the batch
 * norm's output); the ReLU keeps v where v > 0 or v is NaN, as the batch
 * norm's normalizing pass does (the same values, bit for bit). */
static inline float wino_load_one_mapped(const float *src, int at, int n, const chan_map *m) {
    if (at < 0 || at >= n) return 0.0f;
    return nn_map_value(src[at], m->a, m->b, m->relu);
}

/* One float of a row, zero outside [0, n) and where the ReLU mask (a layer's
 * output; NULL: none) is <= 0. */
static inline float wino_load_one(const float *src, const float *mask, int at, int n) {
    if (at < 0 || at >= n || (mask && !(mask[at] > 0.0f))) return 0.0f;
    return src[at];
}

/* F(4x4): the image rows under one vector's tiles, the same for every
 * channel: for each of its n slots s and a < 6, the offset in channel 0 of
 * the batch of row 4 tr - 1 + a of the slot's tile row tr (input rows
 * a = 0..5; output and dy rows i at a = i + 1), or WINO4_NO_ROW above or
 * below the image. */
#define WINO4_NO_ROW ((size_t)-1)
typedef struct {
    size_t at[6][16]; /* 16: the most tile rows a vector holds */
    int n;
} wino4_rows;

/* wino4_rows of each vector of the tile rows u0.. u0+nu-1 (image floats per
 * image); returns the vector count. One division per vector, not per row
 * and channel. */
int nn_wino4_group_rows(wino4_rows *all, long u0, int nu, size_t image, const wino_geom *g);

/* thread t's weight-gradient share in the buffers from base */
float *nn_wino_share(float *base, const wino_geom *g, int t);

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

extern const wino_kernels nn_wino_avx2;
/* F(4x4, 3x3) with AVX-512, and with AVX2 for the widths
 * nn_wino4_avx2_width_ok takes */
extern const wino_kernels nn_wino4_avx512;
extern const wino_kernels nn_wino4_avx2;
int nn_wino4_avx2_width_ok(int w);
/* the AVX2 M = U^T V and share += Yh V^T of conv2d_winograd_avx2.c, for any
 * g->xi */
void nn_wino_multiply_avx2(float *mm, const float *u, const float *v, const wino_geom *g,
                           size_t tiles, nn_line_feed *feed);
void nn_wino_accumulate_wgrad_avx2(float *share, float *vt, const float *yh, const float *v,
                                   const wino_geom *g, size_t tiles);
/* the AVX-512 M = U^T V and share += Yh V^T of conv2d_winograd.c, for any
 * g->xi */
void nn_wino_multiply_avx512(float *mm, const float *u, const float *v, const wino_geom *g,
                             size_t tiles, nn_line_feed *feed);
void nn_wino_accumulate_wgrad_avx512(float *share, float *vt, const float *yh, const float *v,
                                     const wino_geom *g, size_t tiles);
/* dw of 16 input channels' 3x3 kernels (144 floats from out) += tap[t]'s
 * lanes, the first nch channels */
__attribute__((target("avx512f"))) void nn_wino_add_taps_avx512(float *out, const __m512 tap[9],
                                                                int nch);
#endif

#endif /* NN_CONV2D_WINOGRAD_H */
