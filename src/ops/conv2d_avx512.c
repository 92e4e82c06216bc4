/*
 * conv2d_avx512.c - direct convolution kernels for CPUs with AVX-512, for
 * convolutions with 6 to 9 kernel taps (3x3, 2x3, ...) and stride 1 or 2
 * (stride 2 in fp32 only). No im2col; every vector holds 16 channels, so the
 * lanes are full whatever the image width (28, 14 and 7 alike):
 *  - forward: a tile of QW output pixels of one row times up to 4 blocks of 16
 *    output channels (up to 28 accumulators); each step loads the weights of
 *    one (input channel, tap) for the blocks and broadcasts QW input pixels
 *    (every other one under stride 2) from a zero-padded copy of the image.
 *    The tile is written channels-last and transposed to (K, P, Q) with the
 *    bias and the fused ReLU.
 *  - input gradient: the same kernel on the zero-padded, ReLU-masked output
 *    gradient with the weights transposed and flipped (a "full" correlation).
 *    Under stride 2 the input pixels fall in 4 phases (row and column parity);
 *    each phase is a stride-1 correlation of dy with the taps that reach it
 *    (1, 2, 2 and 4 of a 3x3 kernel), written to every other pixel of the
 *    channels-last tile: no zeros inserted, no wasted multiply-adds.
 *  - weight gradient: for one input channel and up to 3 blocks of 16 output
 *    channels, 9 taps x 3 blocks accumulators summed over every pixel of an
 *    image: each step loads the channels-last output gradient of one pixel and
 *    broadcasts the 9 input pixels under the kernel. No horizontal sums.
 * Under --precision bf16 (CPUs with AVX512-BF16) the same kernels run with
 * VDPBF16PS instead of FMA: each 32-bit unit then holds a pair of bf16 - two
 * input channels for the forward and input-gradient tiles, two adjacent
 * pixels for the weight gradient - and the sums stay in fp32.
 * The batch is split across threads as in conv2d.c; per-thread weight-gradient
 * shares are summed in thread order, so results depend only on the thread count.
 * Compiled with target attributes and chosen at run time (nn_conv2d_direct_ok),
 * so the rest of the build stays portable.
 */
#include "ops/ops.h"
#include "backend/gemm_bf16.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#define NN_HAVE_AVX512_KERNELS 1
#define TARGET_F32 "avx512f"
#define TARGET_BF16 "avx512f,avx512bw,avx512vl,avx512bf16"
#define AVX512 __attribute__((target(TARGET_F32)))
#define BF16 __attribute__((target(TARGET_BF16)))
#define INLINE_AVX512 __attribute__((target(TARGET_F32), always_inline)) static inline
#endif

#define VEC 16      /* floats per zmm: channels per block */
#define TILE_NB 4   /* channel blocks per pass of the forward tiles (3 with 8-pixel tiles) */
#define WGRAD_NB 3  /* channel blocks per pass of the weight gradient */
#define MAX_TAPS 9  /* R*S supported by the weight-gradient kernel */
#define SLACK 8     /* zero columns past each padded row: a tile may run past Q */

static int blocks(int channels) { return (channels + VEC - 1) / VEC; }

/* Passes of a channel dimension: its blocks split as evenly as possible into
 * runs of at most `most` (most 3: 4 blocks are 2+2, 8 are 2+3+3). */
static int pass_count(int nb, int most) { return (nb + most - 1) / most; }
static void pass_range(int nb, int most, int j, int *b0, int *bn) {
    const int np = pass_count(nb, most);
    *b0 = nb * j / np;
    *bn = nb * (j + 1) / np - *b0;
}

/* Blocks per forward pass for tiles qw pixels wide: NB x qw accumulators plus
 * NB weight vectors must fit the 32 registers. */
static int tile_most(int qw) { return qw == 8 ? 3 : TILE_NB; }

/* Output pixels per tile: the width among 6, 7, 8 that wastes the fewest
 * columns of a row of q outputs (ties to the wider). */
static int tile_width(int q) {
    int best = 8, waste = (q + 7) / 8 * 8 - q;
    for (int w = 7; w >= 6; w--) {
        int wa = (q + w - 1) / w * w - q;
        if (wa < waste) best = w, waste = wa;
    }
    return best;
}

/* The taps of an input-gradient phase along one side: the inputs h = s*i + a
 * (stride s) are reached by taps first + s*m, m < count, from output row
 * i + off + (count-1-m), i.e. a stride-1 correlation of dy (from row i + off)
 * with those taps in reverse. Stride 1: one phase, every tap reversed. */
typedef struct {
    int first, count, off;
} phase_taps;

static phase_taps taps_of_phase(int a, int s, int pad, int R) {
    phase_taps t;
    t.first = (a + pad) % s;
    t.count = t.first < R ? (R - t.first + s - 1) / s : 0;
    t.off = (a + pad - t.first) / s - (t.count - 1);
    return t;
}

/* inputs of phase a along a side of n inputs under stride s */
static int phase_len(int n, int a, int s) { return (n - a + s - 1) / s; }

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* Input-gradient phase i (row parity a = i / stride_w, column parity b): its
 * taps down and across, its input rows and columns, its tile width. */
typedef struct {
    int a, b;
    phase_taps tr, ts;
    int rows, cols, qw;
} dx_phase;

static dx_phase phase_of(const nn_conv2d_desc *d, int i) {
    dx_phase p;
    p.a = i / d->stride_w;
    p.b = i % d->stride_w;
    p.tr = taps_of_phase(p.a, d->stride_h, d->pad_h, d->R);
    p.ts = taps_of_phase(p.b, d->stride_w, d->pad_w, d->S);
    p.rows = phase_len(d->H, p.a, d->stride_h);
    p.cols = phase_len(d->W, p.b, d->stride_w);
    p.qw = tile_width(p.cols);
    return p;
}

/* Geometry of one convolution's buffers. */
typedef struct {
    int hp, wp;                 /* padded input: rows, row stride */
    int ph, pw, dh, dw;         /* input gradient: top and left padding of dy, padded dy */
    int qw, qt;                 /* forward tile width, Q rounded up to it */
    int wt;                     /* input gradient: channels-last row length (>= W) */
    int kp, cp;                 /* K and C rounded up to 16 */
    int wg;                     /* images per weight-gradient pass (see geom) */
    size_t x_floats, dy_floats, ycl_floats, dxcl_floats, dycl_floats, dwcl_floats;
} direct_geom;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static direct_geom geom(const nn_conv2d_desc *d) {
    direct_geom g;
    const int sh = d->stride_h, sw = d->stride_w;
    g.qw = tile_width(d->Q);
    g.qt = round_up(d->Q, g.qw);
    g.hp = d->H + 2 * d->pad_h;
    g.wp = d->W + 2 * d->pad_w + SLACK;
    if (g.wp < (g.qt - 1) * sw + d->S) g.wp = (g.qt - 1) * sw + d->S; /* a tile past Q */
    /* dy padded for every phase: rows from i + off (>= 0 after the top
     * padding) to i + off + count - 1 for i < the phase's rows; columns
     * alike up to the phase's tiles' end */
    g.ph = g.pw = 0;
    for (int i = 0; i < sh * sw; i++) {
        const dx_phase ph = phase_of(d, i);
        if (-ph.tr.off > g.ph) g.ph = -ph.tr.off;
        if (-ph.ts.off > g.pw) g.pw = -ph.ts.off;
    }
    g.dh = d->P + 2 * g.ph;
    g.dw = d->Q + 2 * g.pw + SLACK;
    g.wt = d->W;
    for (int i = 0; i < sh * sw; i++) {
        const dx_phase ph = phase_of(d, i);
        const int qt = round_up(ph.cols, ph.qw);
        const int rows_end = g.ph + ph.tr.off + ph.rows + ph.tr.count - 1;
        const int cols_end = g.pw + ph.ts.off + qt + ph.ts.count - 1;
        if (rows_end > g.dh) g.dh = rows_end;
        if (cols_end > g.dw) g.dw = cols_end;
        if (sw * (qt - 1) + ph.b + 1 > g.wt) g.wt = sw * (qt - 1) + ph.b + 1;
    }
    g.kp = blocks(d->K) * VEC;
    g.cp = blocks(d->C) * VEC;
    g.x_floats = round16((size_t)d->C * g.hp * g.wp);
    g.dy_floats = round16((size_t)d->K * g.dh * g.dw);
    g.ycl_floats = round16((size_t)d->P * g.qt * g.kp);
    g.dxcl_floats = round16((size_t)d->H * g.wt * g.cp);
    g.dycl_floats = round16((size_t)d->P * d->Q * g.kp);
    g.dwcl_floats = round16((size_t)d->C * MAX_TAPS * g.kp + g.kp);
    /* the weight-gradient share is read and written once per pass over its
     * images: where it is much larger than one image's buffers (conv_heavy's
     * 256-channel 7x7 layers: 2.4 MB, past a 2 MB L2) a pass takes several */
    const size_t ratio = g.dwcl_floats / (g.x_floats + g.dycl_floats);
    g.wg = ratio < 1 ? 1 : ratio > 8 ? 8 : (int)ratio;
    return g;
}

int nn_conv2d_direct_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
#ifdef NN_HAVE_AVX512_KERNELS
    if (d->groups > 1) return 0; /* grouped convolutions use the portable path */
    if (nn_conv2d_dilated(d)) return 0; /* and so do dilated ones */
    if (d->bf16 && ctx->isa < NN_ISA_AVX512BF16) return 0; /* VDPBF16PS */
    if (d->bf16 && ctx->isa >= NN_ISA_AMX) return 0; /* im2col + the AMX GEMM */
    /* channels fill the 16 lanes: at least 3/4 of the last block of each side
     * (the input gradient is vectorized over C) */
    if (4 * d->K < 3 * blocks(d->K) * VEC || 4 * d->C < 3 * blocks(d->C) * VEC) return 0;
    /* stride 2: fp32, and every phase of the input gradient reached by a tap */
    const int strided = d->stride_h != 1 || d->stride_w != 1;
    if (strided && (d->bf16 || d->stride_h > 2 || d->stride_w > 2 || d->R < d->stride_h ||
                    d->S < d->stride_w))
        return 0;
    return ctx->isa >= NN_ISA_AVX512 && d->R * d->S <= MAX_TAPS &&
           d->R * d->S >= 6 && /* fewer taps waste the 9 accumulators */
           d->pad_h <= d->R - 1 && d->pad_w <= d->S - 1;
#else
    (void)d;
    (void)ctx;
    return 0;
#endif
}

/* shared: forward and transposed packed weights; per thread: padded x, padded
 * dy, channels-last forward output / input gradient / output gradient, and
 * the channels-last weight-gradient share with the bias share after it */
static size_t packed_floats(const direct_geom *g, const nn_conv2d_desc *d) {
    return (size_t)d->R * d->S * ((size_t)d->C * g->kp + (size_t)d->K * g->cp);
}

static size_t thread_floats(const direct_geom *g) {
    size_t cl = g->ycl_floats > g->dxcl_floats ? g->ycl_floats : g->dxcl_floats;
    return g->wg * (g->x_floats + g->dycl_floats) + g->dy_floats + cl + g->dwcl_floats;
}

size_t nn_conv2d_direct_workspace(const nn_conv2d_desc *d, int threads) {
    direct_geom g = geom(d);
    return round16(packed_floats(&g, d)) + (size_t)threads * thread_floats(&g);
}

#ifdef NN_HAVE_AVX512_KERNELS

AVX512 void nn_conv2d_pad_interior(float *dst, const float *src, const float *mask, int C, int H,
                                   int W, int ph, int pw, int rows, int ld) {
    /* rows of 7 to 28 floats: masked vector copies, not a memcpy call each */
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            float *o = dst + ((size_t)c * rows + h + ph) * ld + pw;
            const size_t at = ((size_t)c * H + h) * W;
            for (int w0 = 0; w0 < W; w0 += VEC) {
                const int n = W - w0 < VEC ? W - w0 : VEC;
                _mm512_mask_storeu_ps(o + w0, nn_first_lanes(n),
                                      nn_load_relu_masked(src + at + w0,
                                                          mask ? mask + at + w0 : NULL, n));
            }
        }
}

/* fp32: floats; bf16: channel pairs in 32-bit words (the buffers hold either) */
static int units(int channels, int bf16) { return bf16 ? (channels + 1) / 2 : channels; }

/* Weights for the channels-last kernels: pass by pass over the output channel
 * blocks, [pass][in][r][s][block of the pass][16]. Forward: out = K, in = C,
 * w[o][i][r][s]; transposed: out = C, in = K, w[i][o][R-1-r][S-1-s]. bf16:
 * each 32-bit lane holds the pair of inputs (2i, 2i+1), [pass][in/2][r][s]...
 * One block of 16 output channels per thread step. */
static void pack_weights_f32(float *wpk, const float *w, const nn_conv2d_desc *d, int transposed,
                             int most, int threads);

static void pack_weights(float *wpk, const float *w, const nn_conv2d_desc *d, int transposed,
                         int bf16, int most, int threads) {
    if (!bf16) {
        pack_weights_f32(wpk, w, d, transposed, most, threads);
        return;
    }
    const int outc = transposed ? d->C : d->K, inc = transposed ? d->K : d->C;
    const int R = d->R, S = d->S, nb = blocks(outc), nu = units(inc, bf16);
    NN_PARALLEL_FOR(threads)
    for (int ob = 0; ob < nb; ob++) {
        int j = 0, b0, bn;
        pass_range(nb, most, j, &b0, &bn);
        while (ob >= b0 + bn) pass_range(nb, most, ++j, &b0, &bn);
        float *wp = wpk + (size_t)b0 * VEC * nu * R * S + (size_t)(ob - b0) * VEC;
        /* 16 contiguous lanes per (unit, tap); the 16 weight rows read stay in L1 */
        for (int u = 0; u < nu; u++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++) {
                    float *lanes = wp + (((size_t)u * R + r) * S + s) * bn * VEC;
                    /* weight of output o, input i at tap (r, s) */
#define NN_W(o, i)                                                                  \
    (transposed ? w[(((size_t)(i) * d->C + (o)) * R + (R - 1 - r)) * S + (S - 1 - s)] \
                : w[(((size_t)(o) * d->C + (i)) * R + r) * S + s])
                    for (int l = 0; l < VEC; l++) {
                        const int o = ob * VEC + l;
                        if (!bf16) {
                            lanes[l] = o < outc ? NN_W(o, u) : 0.0f;
                            continue;
                        }
                        uint32_t word = 0;
                        if (o < outc) {
                            const int i2 = 2 * u + 1;
                            const uint32_t hi = i2 < inc ? nn_to_bf16(NN_W(o, i2)) : 0;
                            word = nn_to_bf16(NN_W(o, 2 * u)) | hi << 16;
                        }
                        memcpy(lanes + l, &word, sizeof word);
                    }
#undef NN_W
                }
    }
}

/* fp32 pack_weights by 16x16 transposes. Forward: the 16 output channels of
 * a block are rows of w (stride C*R*S) and the packed order (input, tap) is
 * their column order. Transposed: for each k the block's 16 input channels
 * hold R*S taps each, contiguous; the taps come out reversed. */
/* One block of 16 output channels of pack_weights_f32. (A function of its
 * own: clang compiles an OpenMP loop body as a separate function without the
 * caller's target attribute, so AVX-512 code stays out of it.) */
AVX512 static void pack_block_f32(float *wpk, const float *w, const nn_conv2d_desc *d,
                                  int transposed, int most, int ob) {
    const int outc = transposed ? d->C : d->K, inc = transposed ? d->K : d->C;
    const int RS = d->R * d->S, nb = blocks(outc), cols = inc * RS;
    int j = 0, b0, bn;
    pass_range(nb, most, j, &b0, &bn);
    while (ob >= b0 + bn) pass_range(nb, most, ++j, &b0, &bn);
    float *wp = wpk + (size_t)b0 * VEC * cols + (size_t)(ob - b0) * VEC;
    const size_t step = (size_t)bn * VEC; /* floats between packed (input, tap) */
    const int lanes = outc - ob * VEC < VEC ? outc - ob * VEC : VEC;
    __m512 r[16];
    if (!transposed) {
        for (int j0 = 0; j0 < cols; j0 += VEC) {
            const int n = cols - j0 < VEC ? cols - j0 : VEC;
            for (int l = 0; l < VEC; l++)
                r[l] = l < lanes ? _mm512_maskz_loadu_ps(nn_first_lanes(n),
                                                         w + (size_t)(ob * VEC + l) * cols + j0)
                                 : _mm512_setzero_ps();
            transpose16(r);
            for (int m = 0; m < n; m++) _mm512_storeu_ps(wp + (size_t)(j0 + m) * step, r[m]);
        }
        return;
    }
    for (int k = 0; k < inc; k++) {
        const float *src = w + ((size_t)k * d->C + (size_t)ob * VEC) * RS;
        for (int l = 0; l < VEC; l++)
            r[l] = l < lanes ? _mm512_maskz_loadu_ps(nn_first_lanes(RS), src + (size_t)l * RS)
                             : _mm512_setzero_ps();
        transpose16(r);
        for (int t = 0; t < RS; t++)
            _mm512_storeu_ps(wp + ((size_t)k * RS + RS - 1 - t) * step, r[t]);
    }
}

static void pack_weights_f32(float *wpk, const float *w, const nn_conv2d_desc *d, int transposed,
                             int most, int threads) {
    const int nb = blocks(transposed ? d->C : d->K);
    NN_PARALLEL_FOR(threads)
    for (int ob = 0; ob < nb; ob++) pack_block_f32(wpk, w, d, transposed, most, ob);
}

/* A 32-bit load as a float: the bf16 buffers hold pairs of bf16 in each
 * 32-bit word, and a broadcast of the word is all the kernels need. */
static inline float word_at(const void *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define MAC_F32(acc, a, b) _mm512_fmadd_ps(a, b, acc)
#define MAC_BF16(acc, a, b) _mm512_dpbf16_ps(acc, (__m512bh)(a), (__m512bh)(b))

/* One tile: out[q][b*16 + lane] (pixel stride out_ld) = sum over input units u
 * and taps (r, s) of wp[u][r][s][b][lane] * in[u][r][q*SX + s], for q < QW and
 * NB blocks; in has plane 32-bit units per channel and row stride ld; SX is
 * the stride along the row. A unit
 * is a float (MAC = FMA) or a pair of bf16 channels (MAC = VDPBF16PS, which
 * multiplies the pairs lane by lane and adds both products). The broadcast
 * reads memory each time: GCC would otherwise keep xr[q + s] of the last s
 * in registers and broadcast from them, which takes the shuffle unit.
 * first: start from zero, else add to what out holds (a later run of input
 * units, see correlate_cl). */
#define NN_DEFINE_TILE_KERNEL(NAME, TARGET, MAC)                                              \
    __attribute__((target(TARGET), always_inline)) static inline void NAME(                   \
        float *out, size_t out_ld, const float *in, int inc, size_t plane, int ld, int R,     \
        int S, const float *wp, int first, const int NB, const int QW, const int SX) {        \
        __m512 acc[TILE_NB][8];                                                               \
        _Pragma("GCC unroll 8") for (int q = 0; q < QW; q++)                                  \
            _Pragma("GCC unroll 4") for (int b = 0; b < NB; b++) acc[b][q] =                  \
                first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + q * out_ld + b * VEC);    \
        for (int c = 0; c < inc; c++)                                                         \
            for (int r = 0; r < R; r++) {                                                     \
                const float *xr = in + c * plane + (size_t)r * ld;                            \
                for (int s = 0; s < S; s++, wp += NB * VEC) {                                 \
                    const float *xs = xr + s;                                                 \
                    __asm__("" : "+r"(xs));                                                   \
                    __m512 wv[TILE_NB];                                                       \
                    _Pragma("GCC unroll 4") for (int b = 0; b < NB; b++) wv[b] =              \
                        _mm512_loadu_ps(wp + b * VEC);                                        \
                    _Pragma("GCC unroll 8") for (int q = 0; q < QW; q++) {                    \
                        const __m512 xv = _mm512_set1_ps(word_at(xs + q * SX));               \
                        _Pragma("GCC unroll 4") for (int b = 0; b < NB; b++) acc[b][q] =      \
                            MAC(acc[b][q], wv[b], xv);                                        \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        _Pragma("GCC unroll 8") for (int q = 0; q < QW; q++)                                  \
            _Pragma("GCC unroll 4") for (int b = 0; b < NB; b++)                              \
                _mm512_storeu_ps(out + q * out_ld + b * VEC, acc[b][q]);                      \
    }
NN_DEFINE_TILE_KERNEL(tile_kernel_f32, TARGET_F32, MAC_F32)
NN_DEFINE_TILE_KERNEL(tile_kernel_bf16, TARGET_BF16, MAC_BF16)
#undef NN_DEFINE_TILE_KERNEL

typedef void (*tile_fn)(float *, size_t, const float *, int, size_t, int, int, int, const float *,
                        int);

#define NN_TILE(KIND, TARGET, NB, QW, SX)                                                     \
    __attribute__((target(TARGET))) static void tile_##KIND##_##NB##_##QW##_##SX(             \
        float *out, size_t out_ld, const float *in, int inc, size_t plane, int ld, int R,     \
        int S, const float *wp, int first) {                                                  \
        tile_kernel_##KIND(out, out_ld, in, inc, plane, ld, R, S, wp, first, NB, QW, SX);     \
    }
#define NN_TILES(KIND, TARGET, SX)                                                            \
    NN_TILE(KIND, TARGET, 1, 6, SX) NN_TILE(KIND, TARGET, 1, 7, SX)                           \
    NN_TILE(KIND, TARGET, 1, 8, SX) NN_TILE(KIND, TARGET, 2, 6, SX)                           \
    NN_TILE(KIND, TARGET, 2, 7, SX) NN_TILE(KIND, TARGET, 2, 8, SX)                           \
    NN_TILE(KIND, TARGET, 3, 6, SX) NN_TILE(KIND, TARGET, 3, 7, SX)                           \
    NN_TILE(KIND, TARGET, 3, 8, SX) NN_TILE(KIND, TARGET, 4, 6, SX)                           \
    NN_TILE(KIND, TARGET, 4, 7, SX)                                                           \
    static const tile_fn tile_fns_##KIND##_##SX[TILE_NB][3] = {                               \
        {tile_##KIND##_1_6_##SX, tile_##KIND##_1_7_##SX, tile_##KIND##_1_8_##SX},             \
        {tile_##KIND##_2_6_##SX, tile_##KIND##_2_7_##SX, tile_##KIND##_2_8_##SX},             \
        {tile_##KIND##_3_6_##SX, tile_##KIND##_3_7_##SX, tile_##KIND##_3_8_##SX},             \
        {tile_##KIND##_4_6_##SX, tile_##KIND##_4_7_##SX, NULL}};
NN_TILES(f32, TARGET_F32, 1)
NN_TILES(f32, TARGET_F32, 2) /* stride 2 (fp32 only: nn_conv2d_direct_ok) */
NN_TILES(bf16, TARGET_BF16, 1)
#undef NN_TILES
#undef NN_TILE

/* A correlation for correlate_cl: output row p of cl (channels-last,
 * channels rounded to 16) starts at out + p * out_row floats, its pixels
 * out_pix floats apart; input (inc units of plane floats, rows ld apart) row
 * p starts at in + p * in_row, its pixels sx units apart; R x S taps of the
 * packed weights wpk; P rows of qt pixels, tiles of qw. */
typedef struct {
    float *out;
    size_t out_row, out_pix;
    const float *in;
    int inc, ld, in_row, sx;
    size_t plane;
    int outc, R, S, P, qw, qt;
    const float *wpk;
    int bf16;
} correlation;

static void correlate_cl(const correlation *c) {
    const int nb = blocks(c->outc), R = c->R, S = c->S;
    const int most = tile_most(c->qw);
    const tile_fn(*fns)[3] =
        c->bf16 ? tile_fns_bf16_1 : c->sx == 2 ? tile_fns_f32_2 : tile_fns_f32_1;
    for (int j = 0; j < pass_count(nb, most); j++) {
        int b0, bn;
        pass_range(nb, most, j, &b0, &bn);
        const tile_fn fn = fns[bn - 1][c->qw - 6];
        const float *wp = c->wpk + (size_t)b0 * VEC * c->inc * R * S;
        /* input units in runs whose weights (up to 256 KB) stay in the L2
         * cache while every tile of the image goes over them. Runs sized for
         * L1 (16 KB) were 2-5% slower on the Xeon (conv_heavy's shapes, 1
         * thread, best of 6): the weights stream well from L2, and every
         * extra run reloads and stores the tile's accumulators. */
        const size_t unit_floats = (size_t)R * S * bn * VEC;
        int run = (int)((256u << 10) / (unit_floats * sizeof(float)));
        run = run < 1 ? 1 : run > c->inc ? c->inc : run;
        for (int u0 = 0; u0 < c->inc; u0 += run) {
            const int un = c->inc - u0 < run ? c->inc - u0 : run;
            for (int p = 0; p < c->P; p++)
                for (int q0 = 0; q0 < c->qt; q0 += c->qw)
                    fn(c->out + p * c->out_row + q0 * c->out_pix + b0 * VEC, c->out_pix,
                       c->in + u0 * c->plane + (size_t)p * c->in_row + (size_t)q0 * c->sx, un,
                       c->plane, c->ld, R, S, wp + u0 * unit_floats, u0 == 0);
        }
    }
}

/* out (C, P*Q) = cl[p][q][c] (rows of qt pixels, ocp channels each) for
 * q < Q, + bias, ReLU if asked, or with add out += that (out + value: the
 * bytes of the graph's dst += scratch): 16 pixels x 16 channels at a time,
 * transposed in registers. */
AVX512 static void from_channels_last(float *out, const float *cl, int C, int P, int Q, int qt,
                                      int ocp, const float *bias, int relu, int add) {
    const __m512 zero = _mm512_setzero_ps();
    if (qt == Q) /* rows without padding: the pixels run on, 16 at a time across rows */
        Q = qt = P * Q, P = 1;
    for (int p = 0; p < P; p++)
        for (int q0 = 0; q0 < Q; q0 += VEC) {
            const int qn = Q - q0 < VEC ? Q - q0 : VEC;
            const __mmask16 qm = nn_first_lanes(qn);
            for (int c0 = 0; c0 < C; c0 += VEC) {
                __m512 r[16];
                for (int i = 0; i < VEC; i++)
                    r[i] = i < qn ? _mm512_loadu_ps(cl + ((size_t)p * qt + q0 + i) * ocp + c0)
                                  : zero;
                transpose16(r);
                const int cn = C - c0 < VEC ? C - c0 : VEC;
                for (int j = 0; j < cn; j++) {
                    __m512 v = r[j];
                    if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[c0 + j]));
                    /* max(0, v) returns v when v is NaN: NaN passes, as in PyTorch */
                    if (relu) v = _mm512_max_ps(zero, v);
                    float *o = out + ((size_t)(c0 + j) * P + p) * Q + q0;
                    if (add) v = _mm512_add_ps(_mm512_maskz_loadu_ps(qm, o), v);
                    _mm512_mask_storeu_ps(o, qm, v);
                }
            }
        }
}

/* dycl[p*Q + q][k] = dy[k][p][q], zero where the ReLU mask y <= 0 and for the
 * channels past K; dbt[k] += the sum of the masked dy[k]: 16 channels x 16
 * pixels at a time. */
AVX512 static void to_channels_last(float *dycl, float *dbt, const float *dy, const float *mask,
                                    int K, int PQ, int kp) {
    const __m512 zero = _mm512_setzero_ps();
    for (int k0 = 0; k0 < kp; k0 += VEC) {
        __m512 sum = zero;
        for (int j0 = 0; j0 < PQ; j0 += VEC) {
            const int jn = PQ - j0 < VEC ? PQ - j0 : VEC;
            __m512 r[16];
            for (int i = 0; i < VEC; i++) {
                const size_t at = (size_t)(k0 + i) * PQ + j0;
                r[i] = k0 + i >= K ? zero
                                   : nn_load_relu_masked(dy + at, mask ? mask + at : NULL, jn);
            }
            transpose16(r);
            for (int j = 0; j < jn; j++) {
                sum = _mm512_add_ps(sum, r[j]);
                _mm512_storeu_ps(dycl + (size_t)(j0 + j) * kp + k0, r[j]);
            }
        }
        _mm512_storeu_ps(dbt + k0, _mm512_add_ps(_mm512_loadu_ps(dbt + k0), sum));
    }
}

/* dwc[t][b*16 + lane] (row stride kp) += sum over the images (x_img and
 * dy_img apart) and the vectors v of each row p of dyc[p*QV + v][b*16 + lane]
 * times the broadcast unit of x at row p (ld apart: a stride's rows) plus
 * off_r(t), column v*PIX + off_s(t), NB blocks; one store per call, however
 * many images. fp32: a vector is one pixel's channels (PIX = the stride, 1 or
 * 2; x in floats); bf16: the channels of a pair of adjacent pixels (q, q+1)
 * interleaved (PIX = 2, stride 1, x in bf16, so the 32-bit load at q is the
 * pair x[q], x[q+1] under the tap). */
#define NN_DEFINE_WGRAD_KERNEL(NAME, TARGET, MAC, XT)                                          \
    __attribute__((target(TARGET), always_inline)) static inline void NAME(                    \
        float *dwc, int kp, const XT *x, int ld, const float *dyc, int P, int QV,              \
        const int *off, int taps, int imgs, size_t x_img, size_t dy_img, const int NB,         \
        const int PIX) {                                                                       \
        __m512 acc[WGRAD_NB][MAX_TAPS];                                                        \
        _Pragma("GCC unroll 9") for (int t = 0; t < MAX_TAPS; t++)                             \
            _Pragma("GCC unroll 3") for (int b = 0; b < NB; b++) acc[b][t] =                   \
                _mm512_setzero_ps();                                                           \
        for (int im = 0; im < imgs; im++)                                                      \
        for (int p = 0; p < P; p++) {                                                          \
            const XT *xp = x + im * x_img + (size_t)p * ld;                                    \
            const float *dp = dyc + im * dy_img + (size_t)p * QV * kp;                         \
            for (int v = 0; v < QV; v++, dp += kp) {                                           \
                __m512 dv[WGRAD_NB];                                                           \
                _Pragma("GCC unroll 3") for (int b = 0; b < NB; b++) dv[b] =                   \
                    _mm512_loadu_ps(dp + b * VEC);                                             \
                _Pragma("GCC unroll 9") for (int t = 0; t < MAX_TAPS; t++) {                   \
                    const __m512 xv = _mm512_set1_ps(word_at(xp + v * PIX + off[t]));          \
                    _Pragma("GCC unroll 3") for (int b = 0; b < NB; b++) acc[b][t] =           \
                        MAC(acc[b][t], dv[b], xv);                                             \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (int t = 0; t < taps; t++)                                                         \
            _Pragma("GCC unroll 3") for (int b = 0; b < NB; b++) {                             \
                float *o = dwc + (size_t)t * kp + b * VEC;                                     \
                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[b][t]));             \
            }                                                                                  \
    }
NN_DEFINE_WGRAD_KERNEL(wgrad_kernel_f32, TARGET_F32, MAC_F32, float)
NN_DEFINE_WGRAD_KERNEL(wgrad_kernel_bf16, TARGET_BF16, MAC_BF16, uint16_t)
#undef NN_DEFINE_WGRAD_KERNEL

typedef void (*wgrad_fn)(float *, int, const void *, int, const float *, int, int, const int *,
                         int, int, size_t, size_t);

#define NN_WGRAD(NAME, KERNEL, TARGET, XT, NB, PIX)                                           \
    __attribute__((target(TARGET))) static void wgrad_##NAME##_##NB(                          \
        float *dwc, int kp, const void *x, int ld, const float *dyc, int P, int QV,           \
        const int *off, int taps, int imgs, size_t x_img, size_t dy_img) {                    \
        KERNEL(dwc, kp, (const XT *)x, ld, dyc, P, QV, off, taps, imgs, x_img, dy_img, NB,    \
               PIX);                                                                          \
    }
NN_WGRAD(f32, wgrad_kernel_f32, TARGET_F32, float, 1, 1)
NN_WGRAD(f32, wgrad_kernel_f32, TARGET_F32, float, 2, 1)
NN_WGRAD(f32, wgrad_kernel_f32, TARGET_F32, float, 3, 1)
NN_WGRAD(f32s2, wgrad_kernel_f32, TARGET_F32, float, 1, 2) /* stride 2 */
NN_WGRAD(f32s2, wgrad_kernel_f32, TARGET_F32, float, 2, 2)
NN_WGRAD(f32s2, wgrad_kernel_f32, TARGET_F32, float, 3, 2)
NN_WGRAD(bf16, wgrad_kernel_bf16, TARGET_BF16, uint16_t, 1, 2) /* pixel pairs */
NN_WGRAD(bf16, wgrad_kernel_bf16, TARGET_BF16, uint16_t, 2, 2)
NN_WGRAD(bf16, wgrad_kernel_bf16, TARGET_BF16, uint16_t, 3, 2)
#undef NN_WGRAD

static const wgrad_fn wgrad_fns_f32[WGRAD_NB] = {wgrad_f32_1, wgrad_f32_2, wgrad_f32_3};
static const wgrad_fn wgrad_fns_f32s2[WGRAD_NB] = {wgrad_f32s2_1, wgrad_f32s2_2, wgrad_f32s2_3};
static const wgrad_fn wgrad_fns_bf16[WGRAD_NB] = {wgrad_bf16_1, wgrad_bf16_2, wgrad_bf16_3};

/* dwcl[c][t][k] += weight gradient of gc images from x padded (C, hp, wp;
 * floats, or bf16 for bf16) and the channels-last output gradient dycl
 * (vectors of one pixel, or for bf16 of a pixel pair, per row). */
AVX512 static void weight_grad(float *dwcl, const void *xp, const float *dycl, int gc,
                               const nn_conv2d_desc *d, const direct_geom *g) {
    const int taps = d->R * d->S, nb = blocks(d->K), bf16 = d->bf16;
    const int qv = bf16 ? (d->Q + 1) / 2 : d->Q;
    const size_t esz = bf16 ? sizeof(uint16_t) : sizeof(float);
    int off[MAX_TAPS];
    for (int t = 0; t < MAX_TAPS; t++) {
        int tt = t < taps ? t : 0; /* unused taps repeat tap 0 and are dropped */
        off[t] = (tt / d->S) * g->wp + tt % d->S;
    }
    for (int j = 0; j < pass_count(nb, WGRAD_NB); j++) {
        int b0, bn;
        pass_range(nb, WGRAD_NB, j, &b0, &bn);
        const wgrad_fn fn = bf16                ? wgrad_fns_bf16[bn - 1]
                            : d->stride_w == 2 ? wgrad_fns_f32s2[bn - 1]
                                               : wgrad_fns_f32[bn - 1];
        for (int c = 0; c < d->C; c++) /* the gc images summed in registers */
            fn(dwcl + (size_t)c * MAX_TAPS * g->kp + b0 * VEC, g->kp,
               (const char *)xp + (size_t)c * g->hp * g->wp * esz, g->wp * d->stride_h,
               dycl + b0 * VEC, d->P,
               qv, off, taps, gc, g->x_floats * sizeof(float) / esz, g->dycl_floats);
    }
}

/* ---- bf16 conversions (RNE, as nn_to_bf16) ---- */

/* word i = bf16(lo[i]) | bf16(hi[i]) << 16 */
BF16 static inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                           24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                           16, 0);
    return _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* 16 floats of src from at, the first n, zero where mask <= 0 if a mask is given */
BF16 static inline __m512 load_masked(const float *src, const float *mask, size_t at, int n) {
    return nn_load_relu_masked(src + at, mask ? mask + at : NULL, n);
}

/* Interior of dst ((C+1)/2 channel pairs, rows, ld) in 32-bit words, zero
 * borders already there: word = bf16(src[2c]) | bf16(src[2c+1]) << 16 at
 * (h + ph, w + pw), src masked by the ReLU mask if given. */
BF16 static void pad_interior_pairs(uint32_t *dst, const float *src, const float *mask, int C,
                                    int H, int W, int ph, int pw, int rows, int ld) {
    const size_t HW = (size_t)H * W;
    for (int cp = 0; cp < (C + 1) / 2; cp++)
        for (int h = 0; h < H; h++)
            for (int w0 = 0; w0 < W; w0 += VEC) {
                const int n = W - w0 < VEC ? W - w0 : VEC;
                const size_t at = 2 * cp * HW + (size_t)h * W + w0;
                const __m512 lo = load_masked(src, mask, at, n);
                const __m512 hi =
                    2 * cp + 1 < C ? load_masked(src, mask, at + HW, n) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(dst + ((size_t)cp * rows + h + ph) * ld + pw + w0,
                                         nn_first_lanes(n), bf16_pairs(lo, hi));
            }
}

/* Interior of dst (C, rows, ld) in bf16, zero borders already there. */
BF16 static void pad_interior_bf16(uint16_t *dst, const float *src, int C, int H, int W, int ph,
                                   int pw, int rows, int ld) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w0 = 0; w0 < W; w0 += VEC) {
                const int n = W - w0 < VEC ? W - w0 : VEC;
                const size_t at = ((size_t)c * H + h) * W + w0;
                const __m512 v = _mm512_maskz_loadu_ps(nn_first_lanes(n), src + at);
                _mm256_mask_storeu_epi16(dst + ((size_t)c * rows + h + ph) * ld + pw + w0,
                                         nn_first_lanes(n), (__m256i)_mm512_cvtneps_pbh(v));
            }
}

/* dycl[p][q/2][k] words = bf16 pair (dy[k][p][q], dy[k][p][q+1]) for even q
 * (the pixel past an odd Q is zero), masked by the ReLU mask; dbt[k] += the
 * sum of the masked dy[k] (in fp32). 16 channels x 16 pixels at a time. */
BF16 static void to_pairs_channels_last(uint32_t *dycl, float *dbt, const float *dy,
                                        const float *mask, int K, int P, int Q, int kp) {
    const int Q2 = (Q + 1) / 2;
    const size_t PQ = (size_t)P * Q;
    for (int k0 = 0; k0 < kp; k0 += VEC) {
        __m512 sum = _mm512_setzero_ps();
        for (int p = 0; p < P; p++)
            for (int q0 = 0; q0 < Q; q0 += VEC) {
                const int qn = Q - q0 < VEC ? Q - q0 : VEC;
                __m512 r[16];
                for (int i = 0; i < VEC; i++) {
                    const size_t at = (size_t)(k0 + i) * PQ + (size_t)p * Q + q0;
                    r[i] = k0 + i < K ? load_masked(dy, mask, at, qn) : _mm512_setzero_ps();
                }
                transpose16(r);
                for (int j = 0; j < qn; j++) sum = _mm512_add_ps(sum, r[j]);
                for (int i = 0; 2 * i < qn; i++)
                    _mm512_storeu_si512(dycl + ((size_t)p * Q2 + q0 / 2 + i) * kp + k0,
                                        bf16_pairs(r[2 * i], r[2 * i + 1]));
            }
        _mm512_storeu_ps(dbt + k0, _mm512_add_ps(_mm512_loadu_ps(dbt + k0), sum));
    }
}

/* The transposed weights of one input-gradient phase (taps tr down, ts
 * across), in pack_weights' order with out = C, in = K: tap (m, n) holds
 * w[k][c][tr.first + sh (tr.count-1-m)][ts.first + sw (ts.count-1-n)]. */
static void pack_phase_f32(float *wpk, const float *w, const nn_conv2d_desc *d, phase_taps tr,
                           phase_taps ts, int most) {
    const int C = d->C, K = d->K, nb = blocks(C);
    for (int j = 0; j < pass_count(nb, most); j++) {
        int b0, bn;
        pass_range(nb, most, j, &b0, &bn);
        float *wp = wpk + (size_t)b0 * VEC * K * tr.count * ts.count;
        for (int k = 0; k < K; k++)
            for (int m = 0; m < tr.count; m++)
                for (int n = 0; n < ts.count; n++) {
                    const int r = tr.first + d->stride_h * (tr.count - 1 - m);
                    const int s = ts.first + d->stride_w * (ts.count - 1 - n);
                    float *lanes = wp + (((size_t)k * tr.count + m) * ts.count + n) * bn * VEC;
                    for (int l = 0; l < bn * VEC; l++) {
                        const int c = b0 * VEC + l;
                        lanes[l] = c < C ? w[(((size_t)k * C + c) * d->R + r) * d->S + s] : 0.0f;
                    }
                }
    }
}

/* wpt = the weights of every input-gradient phase, one after another */
static void pack_input_grad_weights(float *wpt, const float *w, const nn_conv2d_desc *d,
                                    int threads) {
    if (d->stride_h == 1 && d->stride_w == 1) { /* one phase: every tap, reversed */
        pack_weights(wpt, w, d, 1, d->bf16, tile_most(tile_width(d->W)), threads);
        return;
    }
    for (int i = 0; i < d->stride_h * d->stride_w; i++) {
        const dx_phase ph = phase_of(d, i);
        pack_phase_f32(wpt, w, d, ph.tr, ph.ts, tile_most(ph.qw));
        wpt += (size_t)ph.tr.count * ph.ts.count * d->K * blocks(d->C) * VEC;
    }
}

/* cl[h][w][c] (rows of g->wt pixels, cp channels each) = the input gradient of
 * one image from its zero-padded output gradient dyp (K units, dh x dw):
 * each phase's correlation writes its rows and columns of cl. */
static void input_grad_cl(float *cl, const float *dyp, const float *wpt, const nn_conv2d_desc *d,
                          const direct_geom *g) {
    const int inc = units(d->K, d->bf16);
    for (int i = 0; i < d->stride_h * d->stride_w; i++) {
        const dx_phase ph = phase_of(d, i);
        const correlation cr = {.out = cl + ((size_t)ph.a * g->wt + ph.b) * g->cp,
                                .out_row = (size_t)d->stride_h * g->wt * g->cp,
                                .out_pix = (size_t)d->stride_w * g->cp,
                                .in = dyp + (size_t)(g->ph + ph.tr.off) * g->dw + g->pw + ph.ts.off,
                                .inc = inc,
                                .ld = g->dw,
                                .in_row = g->dw,
                                .sx = 1,
                                .plane = (size_t)g->dh * g->dw,
                                .outc = d->C,
                                .R = ph.tr.count,
                                .S = ph.ts.count,
                                .P = ph.rows,
                                .qw = ph.qw,
                                .qt = round_up(ph.cols, ph.qw),
                                .wpk = wpt,
                                .bf16 = d->bf16};
        correlate_cl(&cr);
        wpt += (size_t)ph.tr.count * ph.ts.count * inc * g->cp;
    }
}

/* per-thread buffers, in thread_floats order; db: the bias-gradient share,
 * right after the weight-gradient share dwcl */
typedef struct {
    float *x, *dy, *cl, *dycl, *dwcl, *db;
} thread_bufs;

static thread_bufs bufs_of(float *ws, const direct_geom *g, const nn_conv2d_desc *d, int t) {
    thread_bufs b;
    const size_t cl = g->ycl_floats > g->dxcl_floats ? g->ycl_floats : g->dxcl_floats;
    b.x = ws + round16(packed_floats(g, d)) + (size_t)t * thread_floats(g); /* wg images */
    b.dy = b.x + (size_t)g->wg * g->x_floats;
    b.cl = b.dy + g->dy_floats;
    b.dycl = b.cl + cl;
    b.dwcl = b.dycl + (size_t)g->wg * g->dycl_floats; /* after wg images */
    b.db = b.dwcl + (size_t)d->C * MAX_TAPS * g->kp;
    return b;
}

/* Output channels kb*16.. of dw (K, C, taps) and db += the sum of the T
 * channels-last weight-gradient shares (bias after each), in share order:
 * the taps of each (c, block) gathered in registers, transposed, and added
 * with one masked store per output channel. */
AVX512 static void add_shares(float *dw, float *db, float *ws, int T, int kb,
                              const nn_conv2d_desc *d, const direct_geom *g) {
    const int taps = d->R * d->S, lanes = d->K - kb * VEC < VEC ? d->K - kb * VEC : VEC;
    const __mmask16 tm = nn_first_lanes(taps);
    for (int c = 0; c < d->C; c++) {
        __m512 r[16];
        for (int t = 0; t < VEC; t++) r[t] = _mm512_setzero_ps();
        for (int sh = 0; sh < T; sh++) {
            const float *src = bufs_of(ws, g, d, sh).dwcl + (size_t)c * MAX_TAPS * g->kp + kb * VEC;
            for (int t = 0; t < taps; t++)
                r[t] = _mm512_add_ps(r[t], _mm512_loadu_ps(src + (size_t)t * g->kp));
        }
        transpose16(r);
        for (int l = 0; l < lanes; l++) {
            float *o = dw + ((size_t)(kb * VEC + l) * d->C + c) * taps;
            _mm512_mask_storeu_ps(o, tm, _mm512_add_ps(_mm512_maskz_loadu_ps(tm, o), r[l]));
        }
    }
    if (db) {
        __m512 sum = _mm512_setzero_ps();
        for (int sh = 0; sh < T; sh++)
            sum = _mm512_add_ps(sum, _mm512_loadu_ps(bufs_of(ws, g, d, sh).db + kb * VEC));
        const __mmask16 km = nn_first_lanes(lanes);
        _mm512_mask_storeu_ps(db + kb * VEC, km,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(km, db + kb * VEC), sum));
    }
}

void nn_conv2d_forward_direct(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_forward_direct_stats(y, x, NULL, w, b, d, n, ws, ctx);
}

void nn_conv2d_forward_direct_stats(float *y, const float *x, double *stats, const float *w,
                                    const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                    nn_ctx *ctx) {
    const direct_geom g = geom(d);
    const int T = ctx->threads < n ? ctx->threads : n, bf16 = d->bf16;
    pack_weights(ws, w, d, 0, bf16, tile_most(g.qw), ctx->threads);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * d->P * d->Q;
    NN_PARALLEL(T) {
        const thread_bufs tb = bufs_of(ws, &g, d, nn_thread_id());
        memset(tb.x, 0, g.x_floats * sizeof(float)); /* borders stay zero */
        NN_FOR_DYNAMIC
        for (int i = 0; i < n; i++) {
            if (bf16)
                pad_interior_pairs((uint32_t *)tb.x, x + i * xs, NULL, d->C, d->H, d->W, d->pad_h,
                                   d->pad_w, g.hp, g.wp);
            else
                nn_conv2d_pad_interior(tb.x, x + i * xs, NULL, d->C, d->H, d->W, d->pad_h,
                                       d->pad_w, g.hp, g.wp);
            const correlation cr = {.out = tb.cl,
                                    .out_row = (size_t)g.qt * g.kp,
                                    .out_pix = (size_t)g.kp,
                                    .in = tb.x,
                                    .inc = units(d->C, bf16),
                                    .ld = g.wp,
                                    .in_row = g.wp * d->stride_h,
                                    .sx = d->stride_w,
                                    .plane = (size_t)g.hp * g.wp,
                                    .outc = d->K,
                                    .R = d->R,
                                    .S = d->S,
                                    .P = d->P,
                                    .qw = g.qw,
                                    .qt = g.qt,
                                    .wpk = ws,
                                    .bf16 = bf16};
            correlate_cl(&cr);
            from_channels_last(y + i * ys, tb.cl, d->K, d->P, d->Q, g.qt, g.kp, b, d->relu, 0);
            if (stats) /* the batch norm's rows of this image, in cache */
                nn_batchnorm_row_stats(y + i * ys, d->K, d->P * d->Q, stats + 2 * (size_t)i * d->K,
                                       ctx);
        }
    }
}

void nn_conv2d_backward_direct(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const float *x, const float *w, const nn_conv2d_desc *d, int n,
                               float *ws, nn_ctx *ctx) {
    const direct_geom g = geom(d);
    const int T = ctx->threads < n ? ctx->threads : n, bf16 = d->bf16;
    float *wpt = ws + (size_t)d->R * d->S * d->C * g.kp;
    if (dx) pack_input_grad_weights(wpt, w, d, ctx->threads);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * d->P * d->Q;
    /* the weight gradient over a fixed share of the images per thread (its
     * sums in a fixed order), then the input gradient image by image to
     * whichever thread is free: a thread that finished its share early takes
     * more of them */
    NN_PARALLEL(T) {
        const int t = nn_thread_id();
        const thread_bufs tb = bufs_of(ws, &g, d, t);
        memset(tb.x, 0, (size_t)g.wg * g.x_floats * sizeof(float));
        if (dx) memset(tb.dy, 0, g.dy_floats * sizeof(float));
        memset(tb.dwcl, 0, g.dwcl_floats * sizeof(float));
        const int end = n * (t + 1) / T;
        for (int i0 = n * t / T; i0 < end; i0 += g.wg) {
            const int gc = end - i0 < g.wg ? end - i0 : g.wg;
            for (int j = 0; j < gc; j++) {
                const int i = i0 + j;
                const float *mask = d->relu ? y + i * ys : NULL;
                float *xj = tb.x + j * g.x_floats, *dyclj = tb.dycl + j * g.dycl_floats;
                if (bf16) {
                    pad_interior_bf16((uint16_t *)xj, x + i * xs, d->C, d->H, d->W, d->pad_h,
                                      d->pad_w, g.hp, g.wp);
                    to_pairs_channels_last((uint32_t *)dyclj, tb.db, dy + i * ys, mask, d->K, d->P,
                                           d->Q, g.kp);
                } else {
                    nn_conv2d_pad_interior(xj, x + i * xs, NULL, d->C, d->H, d->W, d->pad_h,
                                           d->pad_w, g.hp, g.wp);
                    to_channels_last(dyclj, tb.db, dy + i * ys, mask, d->K, d->P * d->Q, g.kp);
                }
            }
            weight_grad(tb.dwcl, tb.x, tb.dycl, gc, d, &g);
        }
        if (dx) {
            NN_FOR_DYNAMIC
            for (int i = 0; i < n; i++) {
                const float *mask = d->relu ? y + i * ys : NULL;
                if (bf16)
                    pad_interior_pairs((uint32_t *)tb.dy, dy + i * ys, mask, d->K, d->P, d->Q,
                                       g.ph, g.pw, g.dh, g.dw);
                else
                    nn_conv2d_pad_interior(tb.dy, dy + i * ys, mask, d->K, d->P, d->Q, g.ph, g.pw,
                                           g.dh, g.dw);
                input_grad_cl(tb.cl, tb.dy, wpt, d, &g);
                from_channels_last(dx + i * xs, tb.cl, d->C, d->H, d->W, g.wt, g.cp, NULL, 0,
                                   d->dx_add);
            }
        }
    }
    /* dw[k][c][t] += the threads' shares dwcl[c][t][k] summed in thread
     * order, 16 output channels at a time to whichever thread is free */
    NN_PARALLEL(T) {
        NN_FOR_DYNAMIC
        for (int kb = 0; kb < blocks(d->K); kb++) add_shares(dw, db, ws, T, kb, d, &g);
    }
}

#else /* no AVX-512 kernels in this build: never selected (nn_conv2d_direct_ok) */

void nn_conv2d_forward_direct(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)y, (void)x, (void)w, (void)b, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

void nn_conv2d_forward_direct_stats(float *y, const float *x, double *stats, const float *w,
                                    const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                    nn_ctx *ctx) {
    (void)y, (void)x, (void)stats, (void)w, (void)b, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

void nn_conv2d_backward_direct(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const float *x, const float *w, const nn_conv2d_desc *d, int n,
                               float *ws, nn_ctx *ctx) {
    (void)dx, (void)dw, (void)db, (void)dy, (void)y, (void)x, (void)w, (void)d, (void)n;
    (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

#endif
