/* ref/pool.c - reference max-pooling (first maximum wins), average pooling
 * (zero padding counted in the divisor R*S) and global average pooling in double. */
#include "ops/ops.h"

#include <math.h>
#include <string.h>

static size_t argmax_of(const double *xp, const nn_pool_desc *d, int p, int q) {
    size_t best = (size_t)-1;
    for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++) {
            int ih = p * d->stride_h - d->pad_h + r, iw = q * d->stride_w - d->pad_w + s;
            if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
            size_t j = (size_t)ih * d->W + iw;
            if (best == (size_t)-1 || xp[j] > xp[best]) best = j;
        }
    return best;
}

void nn_ref_maxpool_forward(double *y, const double *x, const nn_pool_desc *d, int n) {
    for (int pl = 0; pl < n * d->C; pl++) {
        const double *xp = x + (size_t)pl * d->H * d->W;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++)
                y[((size_t)pl * d->P + p) * d->Q + q] = xp[argmax_of(xp, d, p, q)];
    }
}

void nn_ref_maxpool_backward(double *dx, const double *dy, const double *x,
                             const nn_pool_desc *d, int n) {
    memset(dx, 0, (size_t)n * d->C * d->H * d->W * sizeof(double));
    for (int pl = 0; pl < n * d->C; pl++) {
        const double *xp = x + (size_t)pl * d->H * d->W;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++)
                dx[(size_t)pl * d->H * d->W + argmax_of(xp, d, p, q)] +=
                    dy[((size_t)pl * d->P + p) * d->Q + q];
    }
}

void nn_ref_avgpool_forward(double *y, const double *x, const nn_pool_desc *d, int n) {
    for (int pl = 0; pl < n * d->C; pl++) {
        const double *xp = x + (size_t)pl * d->H * d->W;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                double s = 0.0;
                for (int r = 0; r < d->R; r++)
                    for (int t = 0; t < d->S; t++) {
                        int ih = p * d->stride_h - d->pad_h + r, iw = q * d->stride_w - d->pad_w + t;
                        if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                        s += xp[(size_t)ih * d->W + iw];
                    }
                y[((size_t)pl * d->P + p) * d->Q + q] = s / (d->R * d->S);
            }
    }
}

void nn_ref_avgpool_backward(double *dx, const double *dy, const nn_pool_desc *d, int n) {
    memset(dx, 0, (size_t)n * d->C * d->H * d->W * sizeof(double));
    for (int pl = 0; pl < n * d->C; pl++) {
        double *dxp = dx + (size_t)pl * d->H * d->W;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                double g = dy[((size_t)pl * d->P + p) * d->Q + q] / (d->R * d->S);
                for (int r = 0; r < d->R; r++)
                    for (int t = 0; t < d->S; t++) {
                        int ih = p * d->stride_h - d->pad_h + r, iw = q * d->stride_w - d->pad_w + t;
                        if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                        dxp[(size_t)ih * d->W + iw] += g;
                    }
            }
    }
}

void nn_ref_gap_forward(double *y, const double *x, const nn_pool_desc *d, int n) {
    const size_t HW = (size_t)d->H * d->W;
    for (size_t pl = 0; pl < (size_t)n * d->C; pl++) {
        double s = 0.0;
        for (size_t j = 0; j < HW; j++) s += x[pl * HW + j];
        y[pl] = s / (double)HW;
    }
}

void nn_ref_gap_backward(double *dx, const double *dy, const nn_pool_desc *d, int n) {
    const size_t HW = (size_t)d->H * d->W;
    for (size_t pl = 0; pl < (size_t)n * d->C; pl++)
        for (size_t j = 0; j < HW; j++) dx[pl * HW + j] = dy[pl] / (double)HW;
}
