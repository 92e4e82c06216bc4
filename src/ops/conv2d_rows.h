/*
 * conv2d_rows.h - what the output-row direct convolution's drivers
 * (conv2d_avx512_rows.c: padding, threads, groups, shares) share with its
 * kernels of one instruction set: AVX-512 (16 pixels per vector, in
 * conv2d_avx512_rows.c) and AVX2 + FMA (8 pixels, conv2d_rows_avx2.c).
 */
#ifndef NN_CONV2D_ROWS_H
#define NN_CONV2D_ROWS_H

#include "ops/ops.h"

#define ROWS_KBLK 16    /* output channels per block of the packed weights */
#define ROWS_MAX_TAPS 9 /* R*S supported by the weight-gradient kernels */

/* Geometry of the padded buffers; "slack" columns (16) let a vector load run
 * past the last column into zeros. */
typedef struct {
    int hp, wp;        /* padded input for forward and the weight gradient */
    int ph, pw;        /* padding of dy for the input gradient: R-1-pad */
    int dh, dw;        /* padded dy */
    size_t x_floats, dy_floats;
} direct_geom;

/* Where the weight gradient reads dy: image im, channel k, row p starts at
 * at + im*image + k*plane + p*row. Either the padded copy (ReLU mask applied,
 * zero slack past column Q) or the layer's own dy with its output y as the
 * ReLU mask (y NULL: none); loads are masked to Q columns either way. */
typedef struct {
    const float *at, *y;
    size_t image, plane, row;
} dy_view;

typedef struct {
    int vec; /* pixels per vector */
    /* out (outc, P, Q) = correlation of in (inc, rows, cols padded, row
     * stride ld) with weights packed [outc / 16][inc][R][S][16], + bias,
     * ReLU if asked */
    void (*conv_plane)(float *out, const float *in, int inc, int in_rows, int ld, int outc, int R,
                       int S, int P, int Q, const float *wpk, const float *bias, int relu);
    /* dwt[k][c][r][s] += the sums over the gc images of xg and the dy of v;
     * dbt[k] += the sums of dy */
    void (*weight_grad)(float *dwt, float *dbt, const float *xg, dy_view v, int gc,
                        const nn_conv2d_desc *d, const direct_geom *g);
    /* nn_conv2d_pad_interior (ops.h) */
    void (*pad_interior)(float *dst, const float *src, const float *mask, int C, int H, int W,
                         int ph, int pw, int rows, int ld);
} rows_kernels;

#if defined(__x86_64__) && defined(__GNUC__)
extern const rows_kernels nn_rows_avx2;
#endif

#endif /* NN_CONV2D_ROWS_H */
