/*
 * conv2d_avx512_rows.c - direct convolution kernels for CPUs with AVX-512
 * vectorized along output rows (16 pixels per zmm; the AVX2 kernels of
 * conv2d_rows_avx2.c take 8 through the same drivers), for stride-1
 * convolutions with 6 to 9 taps whose channels are too few to fill the lanes
 * of the channels-last kernels (conv2d_avx512.c), such as a first layer on a
 * one-channel image, and whose rows are wide enough to fill them here:
 *  - forward: each output row is built 16 pixels at a time (one zmm per output
 *    channel, 16 output channels per pass) from a zero-padded copy of the image;
 *    bias and ReLU are applied at the store.
 *  - input gradient: the same kernel run on the zero-padded, ReLU-masked output
 *    gradient with the weights transposed and flipped (a "full" correlation).
 *  - weight gradient: for each three output channels and each input channel,
 *    9 tap accumulators per channel summed over the rows of a group of images.
 * The batch is split across threads as in conv2d.c; per-thread weight-gradient
 * shares are summed in thread order, so results depend only on the thread count.
 * Compiled with target attributes and chosen at run time (nn_conv2d_rows_ok),
 * so the rest of the build stays portable.
 */
#include "ops/conv2d_rows.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#define NN_HAVE_AVX512_KERNELS 1
#define AVX512 __attribute__((target("avx512f")))
#endif

#define VEC 16                  /* floats per zmm, and the buffers' slack columns */
#define KBLK ROWS_KBLK          /* output channels per pass of the forward kernel */
#define MAX_TAPS ROWS_MAX_TAPS  /* R*S supported by the weight-gradient kernel */

static direct_geom geom(const nn_conv2d_desc *d) {
    direct_geom g;
    g.hp = d->H + 2 * d->pad_h;
    g.wp = d->W + 2 * d->pad_w + VEC;
    g.ph = d->R - 1 - d->pad_h;
    g.pw = d->S - 1 - d->pad_w;
    g.dh = d->P + 2 * g.ph;
    g.dw = d->Q + 2 * g.pw + VEC;
    g.x_floats = ((size_t)d->C * g.hp * g.wp + 15) & ~(size_t)15;
    g.dy_floats = ((size_t)d->K * g.dh * g.dw + 15) & ~(size_t)15;
    return g;
}

static size_t packed_floats(int outc, int inc, const nn_conv2d_desc *d) {
    return (size_t)((outc + KBLK - 1) / KBLK) * KBLK * inc * d->R * d->S;
}

/* Images per group in the backward pass (padded x and dy kept for the group). */
static int bwd_group(const nn_conv2d_desc *d) {
    direct_geom g = geom(d);
    size_t per = (g.x_floats + g.dy_floats) * sizeof(float);
    size_t n = (768u << 10) / (per ? per : 1);
    return n < 1 ? 1 : n > 32 ? 32 : (int)n;
}

int nn_conv2d_rows_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
#ifdef NN_HAVE_AVX512_KERNELS
    /* a row of Q outputs fills Q of each vector's lanes (16 with AVX-512, 8
     * with AVX2): below ~70% of the lanes (e.g. 7x7 maps with AVX-512) the
     * im2col + sgemm path is faster */
    const int lanes = ctx->isa >= NN_ISA_AVX512 ? VEC : 8;
    const int vecs = (d->Q + lanes - 1) / lanes;
    if (10 * d->Q < 7 * lanes * vecs) return 0;
    if (d->groups > 1) return 0; /* grouped convolutions use the portable path */
    if (nn_conv2d_dilated(d)) return 0; /* and so do dilated ones */
    if (d->bf16) return 0;       /* bf16 runs through im2col + the bf16 GEMM */
    if (nn_conv2d_direct_ok(d, ctx)) return 0; /* the channels-last kernels fit */
    return ctx->isa >= NN_ISA_AVX2 && d->stride_h == 1 && d->stride_w == 1 &&
           d->R * d->S <= MAX_TAPS && d->R * d->S >= 6 && /* fewer taps waste the 9 accumulators */
           d->pad_h <= d->R - 1 && d->pad_w <= d->S - 1;
#else
    (void)d;
    (void)ctx;
    return 0;
#endif
}

/* shared: forward and transposed packed weights; per thread: padded x group,
 * padded dy group, weight-gradient share (K*C*R*S) and bias share (K) */
size_t nn_conv2d_rows_workspace(const nn_conv2d_desc *d, int threads) {
    direct_geom g = geom(d);
    size_t shared = packed_floats(d->K, d->C, d) + packed_floats(d->C, d->K, d);
    size_t per = (size_t)bwd_group(d) * (g.x_floats + g.dy_floats) +
                 (((size_t)d->K * d->C * d->R * d->S + (size_t)d->K + 15) & ~(size_t)15);
    return shared + 16 + (size_t)threads * per;
}

#ifdef NN_HAVE_AVX512_KERNELS

/* wpk[ob][i][r][s][16] = weight of output channel ob*16+lane for input i and
 * tap (r, s); forward: w[o][i][r][s]; transposed: w[i][o][R-1-r][S-1-s]. */
static void pack_weights(float *wpk, const float *w, const nn_conv2d_desc *d, int transposed) {
    const int outc = transposed ? d->C : d->K, inc = transposed ? d->K : d->C;
    const int R = d->R, S = d->S;
    memset(wpk, 0, packed_floats(outc, inc, d) * sizeof(float));
    for (int o = 0; o < outc; o++)
        for (int i = 0; i < inc; i++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++) {
                    float v = transposed ? w[(((size_t)i * d->C + o) * R + (R - 1 - r)) * S + (S - 1 - s)]
                                         : w[(((size_t)o * d->C + i) * R + r) * S + s];
                    wpk[((((size_t)(o / KBLK) * inc + i) * R + r) * S + s) * KBLK + o % KBLK] = v;
                }
}

/* out (outc, P, Q) = correlation of in (inc, rows, cols padded, row stride ld)
 * with packed weights, + bias, ReLU if asked. */
AVX512 static void conv_plane(float *out, const float *in, int inc, int in_rows, int ld,
                              int outc, int R, int S, int P, int Q, const float *wpk,
                              const float *bias, int relu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int ob = 0; ob < outc; ob += KBLK) {
        const int on = outc - ob < KBLK ? outc - ob : KBLK;
        const float *wb = wpk + (size_t)(ob / KBLK) * inc * R * S * KBLK;
        for (int p = 0; p < P; p++)
            for (int q0 = 0; q0 < Q; q0 += VEC) {
                __m512 a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero,
                       a6 = zero, a7 = zero, a8 = zero, a9 = zero, a10 = zero, a11 = zero,
                       a12 = zero, a13 = zero, a14 = zero, a15 = zero;
                for (int i = 0; i < inc; i++)
                    for (int r = 0; r < R; r++) {
                        const float *xr = in + ((size_t)i * in_rows + p + r) * ld + q0;
                        const float *w = wb + (size_t)(i * R + r) * S * KBLK;
                        for (int s = 0; s < S; s++, w += KBLK) {
                            const __m512 xv = _mm512_loadu_ps(xr + s);
#define NN_FMA(j) a##j = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), xv, a##j)
                            NN_FMA(0); NN_FMA(1); NN_FMA(2); NN_FMA(3);
                            NN_FMA(4); NN_FMA(5); NN_FMA(6); NN_FMA(7);
                            NN_FMA(8); NN_FMA(9); NN_FMA(10); NN_FMA(11);
                            NN_FMA(12); NN_FMA(13); NN_FMA(14); NN_FMA(15);
#undef NN_FMA
                        }
                    }
                const __m512 acc[KBLK] = {a0, a1, a2, a3, a4, a5, a6, a7,
                                          a8, a9, a10, a11, a12, a13, a14, a15};
                const int qn = Q - q0 < VEC ? Q - q0 : VEC;
                const __mmask16 m = (__mmask16)((1u << qn) - 1u);
                for (int j = 0; j < on; j++) {
                    __m512 v = acc[j];
                    if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[ob + j]));
                    /* max(0, v) returns v when v is NaN: NaN passes, as in PyTorch */
                    if (relu) v = _mm512_max_ps(zero, v);
                    _mm512_mask_storeu_ps(out + ((size_t)(ob + j) * P + p) * Q + q0, m, v);
                }
            }
    }
}

/* dwt[k][c][r][s] += sum over images g, rows p, columns q of
 * dy[g][k][p][q] * x[g][c][p + r][q + s], three output channels at a time:
 * 27 accumulators, and each x vector loaded once for three FMAs. */
AVX512 static void weight_grad(float *dwt, float *dbt, const float *xg, dy_view v, int gc,
                               const nn_conv2d_desc *d, const direct_geom *g) {
    const int R = d->R, S = d->S, taps = R * S;
    int off[MAX_TAPS];
    for (int t = 0; t < MAX_TAPS; t++) {
        int tt = t < taps ? t : 0;   /* unused taps repeat tap 0 and are dropped */
        off[t] = (tt / S) * g->wp + tt % S;
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int k = 0; k < d->K; k += 3) {
        const int kn = d->K - k < 3 ? d->K - k : 3;   /* channels present in this pass */
        /* the next pass's planes of dy (and the mask) into L2: each image's
         * are a few KB, too short for the prefetchers */
        for (int im = 0; k + 3 < d->K && im < gc; im++)
            for (int kk = k + 3; kk < k + 6 && kk < d->K; kk++) {
                const size_t o = (size_t)im * v.image + (size_t)kk * v.plane;
                for (int p = 0; p < d->P; p++) {
                    __builtin_prefetch(v.at + o + (size_t)p * v.row, 0, 2);
                    __builtin_prefetch(v.at + o + (size_t)p * v.row + d->Q - 1, 0, 2);
                    if (v.y) {
                        __builtin_prefetch(v.y + o + (size_t)p * v.row, 0, 2);
                        __builtin_prefetch(v.y + o + (size_t)p * v.row + d->Q - 1, 0, 2);
                    }
                }
            }
        for (int c = 0; c < d->C; c++) {
            __m512 a[MAX_TAPS], b[MAX_TAPS], e[MAX_TAPS];
            for (int t = 0; t < MAX_TAPS; t++) a[t] = b[t] = e[t] = zero;
            for (int im = 0; im < gc; im++) {
                const float *x = xg + (size_t)im * g->x_floats + (size_t)c * g->hp * g->wp;
                /* the y mask sits at the same offsets from y as dy from at */
                const size_t o0 = (size_t)im * v.image + (size_t)k * v.plane;
                const size_t o1 = o0 + (kn > 1 ? v.plane : 0), o2 = o0 + (kn > 2 ? 2 * v.plane : 0);
                for (int p = 0; p < d->P; p++)
                    for (int q0 = 0; q0 < d->Q; q0 += VEC) {
                        /* dy[q0 .. q0+15] of the row, zero past Q and where y <= 0 */
                        const int qn = d->Q - q0;
                        const size_t o = (size_t)p * v.row + q0;
                        const __m512 u =
                            nn_load_relu_masked(v.at + o0 + o, v.y ? v.y + o0 + o : NULL, qn);
                        const __m512 w1 =
                            nn_load_relu_masked(v.at + o1 + o, v.y ? v.y + o1 + o : NULL, qn);
                        const __m512 w2 =
                            nn_load_relu_masked(v.at + o2 + o, v.y ? v.y + o2 + o : NULL, qn);
                        const float *xp = x + (size_t)p * g->wp + q0;
                        for (int t = 0; t < MAX_TAPS; t++) {
                            __m512 xv = _mm512_loadu_ps(xp + off[t]);
                            /* keep xv in a register: otherwise the compiler folds
                             * the load into each of the three FMAs (3x the loads) */
                            __asm__("" : "+v"(xv));
                            a[t] = _mm512_fmadd_ps(u, xv, a[t]);
                            b[t] = _mm512_fmadd_ps(w1, xv, b[t]);
                            e[t] = _mm512_fmadd_ps(w2, xv, e[t]);
                        }
                    }
            }
            /* reduced with constant indices first: indexed by the run-time
             * tap count, the accumulators went to the stack and back on
             * every step of the loops above (GCC 12) */
            float sa[MAX_TAPS], sb[MAX_TAPS], se[MAX_TAPS];
            for (int t = 0; t < MAX_TAPS; t++) {
                sa[t] = _mm512_reduce_add_ps(a[t]);
                sb[t] = _mm512_reduce_add_ps(b[t]);
                se[t] = _mm512_reduce_add_ps(e[t]);
            }
            for (int t = 0; t < taps; t++) {
                dwt[((size_t)k * d->C + c) * taps + t] += sa[t];
                if (kn > 1) dwt[((size_t)(k + 1) * d->C + c) * taps + t] += sb[t];
                if (kn > 2) dwt[((size_t)(k + 2) * d->C + c) * taps + t] += se[t];
            }
        }
        /* bias gradient of these channels: row sums of dy, 16 lanes at a
         * time, while their planes are still in cache (a pass of its own
         * after every channel read them from memory again) */
        for (int kk = k; kk < k + kn; kk++) {
            __m512 s = zero;
            for (int im = 0; im < gc; im++) {
                const size_t ok = (size_t)im * v.image + (size_t)kk * v.plane;
                for (int p = 0; p < d->P; p++)
                    for (int q0 = 0; q0 < d->Q; q0 += VEC) {
                        const size_t o = ok + (size_t)p * v.row + q0;
                        s = _mm512_add_ps(s, nn_load_relu_masked(v.at + o, v.y ? v.y + o : NULL,
                                                                 d->Q - q0));
                    }
            }
            dbt[kk] += _mm512_reduce_add_ps(s);
        }
    }
}

static const rows_kernels avx512_kernels = {VEC, conv_plane, weight_grad, nn_conv2d_pad_interior};

/* the widest kernels ctx allows (nn_conv2d_rows_ok: AVX2 at least) */
static const rows_kernels *kernels_of(const nn_ctx *ctx) {
    return ctx->isa >= NN_ISA_AVX512 ? &avx512_kernels : &nn_rows_avx2;
}

void nn_conv2d_forward_rows(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    nn_conv2d_forward_rows_stats(y, x, NULL, w, b, d, n, ws, ctx);
}

void nn_conv2d_forward_rows_stats(float *y, const float *x, double *stats, const float *w,
                                  const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                  nn_ctx *ctx) {
    const rows_kernels *K = kernels_of(ctx);
    const direct_geom g = geom(d);
    const int T = ctx->threads < n ? ctx->threads : n;
    float *wpk = ws;
    pack_weights(wpk, w, d, 0);
    float *thread_ws = ws + packed_floats(d->K, d->C, d) + packed_floats(d->C, d->K, d) + 16;
    const size_t per = nn_conv2d_rows_workspace(d, 1) - (size_t)(thread_ws - ws);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * d->P * d->Q;
    NN_PARALLEL(T) {
        float *xp = thread_ws + (size_t)nn_thread_id() * per;
        memset(xp, 0, g.x_floats * sizeof(float)); /* the padding, once */
        NN_FOR_DYNAMIC /* image by image to whichever thread is free */
        for (int i = 0; i < n; i++) {
            K->pad_interior(xp, x + i * xs, NULL, d->C, d->H, d->W, d->pad_h, d->pad_w,
                                   g.hp, g.wp);
            K->conv_plane(y + i * ys, xp, d->C, g.hp, g.wp, d->K, d->R, d->S, d->P, d->Q, wpk, b,
                          d->relu);
            if (stats) /* the batch norm's rows of this image, in cache */
                nn_batchnorm_row_stats(y + i * ys, d->K, d->P * d->Q, stats + 2 * (size_t)i * d->K,
                                       ctx);
        }
    }
}

/* dx (NULL: none), dw and db from dy, or with bn from the batch norm's
 * output gradient dy: its input gradient (this layer's dy) formed image by
 * image (nn_batchnorm_form_dx) where the padded copies of dy would lie, which
 * only dx reads (so bn takes no dx) */
static void backward_rows(float *dx, float *dw, float *db, const float *dy, const float *y,
                          const float *x, const nn_bn_dx *bn, const float *w,
                          const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    NN_ASSERT(!bn || (!dx && !d->relu));
    const rows_kernels *K = kernels_of(ctx);
    const direct_geom g = geom(d);
    const int T = ctx->threads < n ? ctx->threads : n;
    const int G = bwd_group(d);
    float *wpt = ws + packed_floats(d->K, d->C, d);
    if (dx) pack_weights(wpt, w, d, 1);
    float *thread_ws = ws + packed_floats(d->K, d->C, d) + packed_floats(d->C, d->K, d) + 16;
    const size_t per = nn_conv2d_rows_workspace(d, 1) - (size_t)(thread_ws - ws);
    const size_t xs = (size_t)d->C * d->H * d->W, ys = (size_t)d->K * d->P * d->Q;
    const size_t wn = (size_t)d->K * d->C * d->R * d->S;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        float *xg = thread_ws + (size_t)t * per;
        float *dyg = xg + (size_t)G * g.x_floats;
        float *dwt = dyg + (size_t)G * g.dy_floats, *dbt = dwt + wn;
        memset(dwt, 0, (wn + (size_t)d->K) * sizeof(float));
        /* the padding, once */
        memset(xg, 0, (size_t)G * (g.x_floats + g.dy_floats) * sizeof(float));
        const int end = n * (t + 1) / T;
        for (int i0 = n * t / T; i0 < end; i0 += G) {
            const int gc = end - i0 < G ? end - i0 : G;
            for (int j = 0; j < gc; j++) {
                K->pad_interior(xg + (size_t)j * g.x_floats, x + (i0 + j) * xs, NULL,
                                       d->C, d->H, d->W, d->pad_h, d->pad_w, g.hp, g.wp);
                if (dx) /* the input gradient runs on a padded, masked copy of dy */
                    K->pad_interior(dyg + (size_t)j * g.dy_floats, dy + (i0 + j) * ys,
                                           d->relu ? y + (i0 + j) * ys : NULL, d->K, d->P, d->Q,
                                           g.ph, g.pw, g.dh, g.dw);
            }
            /* each image's planes whole: rows of P Q floats, no tails */
            for (int j = 0; bn && j < gc; j++)
                nn_batchnorm_form_dx(dyg + (size_t)j * ys, dy + (i0 + j) * ys, y + (i0 + j) * ys,
                                     0, d->K, d->P * d->Q, bn, ctx);
            /* the weight gradient reads that copy, the formed dy, or else dy
             * itself */
            const dy_view v =
                dx ? (dy_view){dyg + (size_t)g.ph * g.dw + g.pw, NULL, g.dy_floats,
                               (size_t)g.dh * g.dw, (size_t)g.dw}
                   : (dy_view){bn ? dyg : dy + i0 * ys, d->relu ? y + i0 * ys : NULL, ys,
                               (size_t)d->P * d->Q, (size_t)d->Q};
            K->weight_grad(dwt, dbt, xg, v, gc, d, &g);
            if (dx)
                for (int j = 0; j < gc; j++)
                    K->conv_plane(dx + (i0 + j) * xs, dyg + (size_t)j * g.dy_floats, d->K, g.dh, g.dw,
                               d->C, d->R, d->S, d->H, d->W, wpt, NULL, 0);
        }
    }
    for (int t = 0; t < T; t++) {
        const float *dwt = thread_ws + (size_t)t * per + (size_t)G * (g.x_floats + g.dy_floats);
        for (size_t j = 0; j < wn; j++) dw[j] += dwt[j];
        if (db)
            for (int k = 0; k < d->K; k++) db[k] += dwt[wn + k];
    }
}

void nn_conv2d_backward_rows(float *dx, float *dw, float *db, const float *dy, const float *y,
                             const float *x, const float *w, const nn_conv2d_desc *d, int n,
                             float *ws, nn_ctx *ctx) {
    backward_rows(dx, dw, db, dy, y, x, NULL, w, d, n, ws, ctx);
}

void nn_conv2d_backward_rows_formed(float *dw, float *db, const float *g, const float *y,
                                    const float *x, const nn_bn_dx *bn, const float *w,
                                    const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    backward_rows(NULL, dw, db, g, y, x, bn, w, d, n, ws, ctx);
}

#else /* no AVX-512 kernels in this build: never selected (nn_conv2d_rows_ok) */

void nn_conv2d_forward_rows(float *y, const float *x, const float *w, const float *b,
                              const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)y, (void)x, (void)w, (void)b, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

void nn_conv2d_forward_rows_stats(float *y, const float *x, double *stats, const float *w,
                                  const float *b, const nn_conv2d_desc *d, int n, float *ws,
                                  nn_ctx *ctx) {
    (void)y, (void)x, (void)stats, (void)w, (void)b, (void)d, (void)n, (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

void nn_conv2d_backward_rows(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const float *x, const float *w, const nn_conv2d_desc *d, int n,
                               float *ws, nn_ctx *ctx) {
    (void)dx, (void)dw, (void)db, (void)dy, (void)y, (void)x, (void)w, (void)d, (void)n;
    (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

void nn_conv2d_backward_rows_formed(float *dw, float *db, const float *g, const float *y,
                                    const float *x, const nn_bn_dx *bn, const float *w,
                                    const nn_conv2d_desc *d, int n, float *ws, nn_ctx *ctx) {
    (void)dw, (void)db, (void)g, (void)y, (void)x, (void)bn, (void)w, (void)d, (void)n;
    (void)ws, (void)ctx;
    NN_ASSERT(!"direct conv2d kernels are not built");
}

#endif
