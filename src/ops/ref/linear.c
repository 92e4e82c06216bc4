/* ref/linear.c - reference fully connected layer in double. */
#include "ops/ops.h"

#include <string.h>

void nn_ref_linear_forward(double *y, const double *x, const double *w, const double *b,
                           const nn_linear_desc *d, int n) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < d->out; o++) {
            double s = b ? b[o] : 0.0;
            for (int j = 0; j < d->in; j++) s += x[(size_t)i * d->in + j] * w[(size_t)o * d->in + j];
            y[(size_t)i * d->out + o] = s;
        }
}

void nn_ref_linear_backward(double *dx, double *dw, double *db, const double *dy,
                            const double *x, const double *w, const nn_linear_desc *d, int n) {
    if (dx) memset(dx, 0, (size_t)n * d->in * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < d->out; o++) {
            double g = dy[(size_t)i * d->out + o];
            if (db) db[o] += g;
            for (int j = 0; j < d->in; j++) {
                dw[(size_t)o * d->in + j] += g * x[(size_t)i * d->in + j];
                if (dx) dx[(size_t)i * d->in + j] += g * w[(size_t)o * d->in + j];
            }
        }
}
