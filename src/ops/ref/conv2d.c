/* ref/conv2d.c - reference convolution in double: the definition, looped. */
#include "ops/ops.h"

#include <string.h>

/* Channel groups: output channel k reads input channels of its group only;
 * the weight is (K, C/groups, R, S). */
#define GROUPS(d) ((d)->groups > 1 ? (d)->groups : 1)
#define CG(d) ((d)->C / GROUPS(d))
#define C0(d, k) ((k) / ((d)->K / GROUPS(d)) * CG(d))
/* Dilation: tap (r, t) reads input row p*stride - pad + r*dilation */
#define DIL_H(d) ((d)->dil_h > 1 ? (d)->dil_h : 1)
#define DIL_W(d) ((d)->dil_w > 1 ? (d)->dil_w : 1)
#define WIDX(d, k, c, r, t) ((((size_t)(k) * CG(d) + ((c) - C0(d, k))) * (d)->R + (r)) * (d)->S + (t))

void nn_ref_conv2d_forward(double *y, const double *x, const double *w, const double *b,
                           const nn_conv2d_desc *d, int n) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d->K; k++)
            for (int p = 0; p < d->P; p++)
                for (int q = 0; q < d->Q; q++) {
                    double s = b ? b[k] : 0.0;
                    for (int c = C0(d, k); c < C0(d, k) + CG(d); c++)
                        for (int r = 0; r < d->R; r++)
                            for (int t = 0; t < d->S; t++) {
                                int ih = p * d->stride_h - d->pad_h + r * DIL_H(d);
                                int iw = q * d->stride_w - d->pad_w + t * DIL_W(d);
                                if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                                s += x[((size_t)(i * d->C + c) * d->H + ih) * d->W + iw] *
                                     w[WIDX(d, k, c, r, t)];
                            }
                    y[((size_t)(i * d->K + k) * d->P + p) * d->Q + q] = s;
                }
}

void nn_ref_conv2d_backward(double *dx, double *dw, double *db, const double *dy,
                            const double *x, const double *w, const nn_conv2d_desc *d, int n) {
    if (dx) memset(dx, 0, (size_t)n * d->C * d->H * d->W * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d->K; k++)
            for (int p = 0; p < d->P; p++)
                for (int q = 0; q < d->Q; q++) {
                    double g = dy[((size_t)(i * d->K + k) * d->P + p) * d->Q + q];
                    if (db) db[k] += g;
                    for (int c = C0(d, k); c < C0(d, k) + CG(d); c++)
                        for (int r = 0; r < d->R; r++)
                            for (int t = 0; t < d->S; t++) {
                                int ih = p * d->stride_h - d->pad_h + r * DIL_H(d);
                                int iw = q * d->stride_w - d->pad_w + t * DIL_W(d);
                                if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                                size_t xi = ((size_t)(i * d->C + c) * d->H + ih) * d->W + iw;
                                size_t wi = WIDX(d, k, c, r, t);
                                dw[wi] += g * x[xi];
                                if (dx) dx[xi] += g * w[wi];
                            }
                }
}
