/* ref/activation.c - reference ReLU in double. */
#include "ops/ops.h"

void nn_ref_relu_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = (x[i] > 0.0 || x[i] != x[i]) ? x[i] : 0.0;
}

void nn_ref_relu_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] = x[i] > 0.0 ? dy[i] : 0.0;
}
