/* ref/pool.c - reference max-pooling in double (first maximum wins). */
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
