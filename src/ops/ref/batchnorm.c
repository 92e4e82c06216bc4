/* ref/batchnorm.c - reference batch normalization in double: statistics over
 * (N, HW) per channel; backward recomputes them from x. */
#include "ops/ops.h"

#include <math.h>

/* Mean and biased variance of channel c: batch statistics in training mode,
 * the running ones (running_mean (C), running_var (C)) in eval mode. */
static void channel_stats(double *mean, double *var, const double *x, const double *running,
                          const nn_bn_desc *d, int n, int training, int c) {
    if (!training) {
        *mean = running[c];
        *var = running[d->C + c];
        return;
    }
    const double M = (double)n * d->HW;
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d->HW; j++) s += x[((size_t)i * d->C + c) * d->HW + j];
    *mean = s / M;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d->HW; j++) {
            double t = x[((size_t)i * d->C + c) * d->HW + j] - *mean;
            ss += t * t;
        }
    *var = ss / M;
}

void nn_ref_batchnorm_forward(double *y, double *running, const double *x, const double *w,
                              const double *b, const nn_bn_desc *d, int n, int training) {
    const double M = (double)n * d->HW;
    for (int c = 0; c < d->C; c++) {
        double mean, var;
        channel_stats(&mean, &var, x, running, d, n, training, c);
        const double invstd = 1.0 / sqrt(var + d->eps);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d->HW; j++) {
                size_t k = ((size_t)i * d->C + c) * d->HW + j;
                y[k] = (x[k] - mean) * invstd * w[c] + b[c];
            }
        if (training && running) {
            const double m = d->momentum;
            running[c] = (1.0 - m) * running[c] + m * mean;
            running[d->C + c] = (1.0 - m) * running[d->C + c] + m * var * M / (M - 1.0);
        }
    }
    if (training && running) running[2 * d->C] += 1.0;
}

void nn_ref_batchnorm_backward(double *dx, double *dw, double *db, const double *dy,
                               const double *x, const double *w, const double *running,
                               const nn_bn_desc *d, int n, int training) {
    const double M = (double)n * d->HW;
    for (int c = 0; c < d->C; c++) {
        double mean, var;
        channel_stats(&mean, &var, x, running, d, n, training, c);
        const double invstd = 1.0 / sqrt(var + d->eps);
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d->HW; j++) {
                size_t k = ((size_t)i * d->C + c) * d->HW + j;
                sum_dy += dy[k];
                sum_dy_xhat += dy[k] * (x[k] - mean) * invstd;
            }
        dw[c] += sum_dy_xhat;
        db[c] += sum_dy;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d->HW; j++) {
                size_t k = ((size_t)i * d->C + c) * d->HW + j;
                double xhat = (x[k] - mean) * invstd;
                double g = training ? dy[k] - sum_dy / M - xhat * sum_dy_xhat / M : dy[k];
                dx[k] = g * invstd * w[c];
            }
    }
}
