/* ref/activation.c - reference element-wise activations in double; every
 * backward takes the input x. */
#include "ops/ops.h"

#include <math.h>

void nn_ref_relu_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = (x[i] > 0.0 || x[i] != x[i]) ? x[i] : 0.0;
}

void nn_ref_relu_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] = x[i] > 0.0 ? dy[i] : 0.0;
}

void nn_ref_leaky_relu_forward(double *y, const double *x, double slope, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0 ? x[i] : slope * x[i];
}

void nn_ref_leaky_relu_backward(double *dx, const double *dy, const double *x, double slope,
                                size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] = x[i] > 0.0 ? dy[i] : slope * dy[i];
}

void nn_ref_gelu_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
}

void nn_ref_gelu_backward(double *dx, const double *dy, const double *x, size_t count) {
    const double inv_sqrt_2pi = 1.0 / sqrt(2.0 * acos(-1.0));
    for (size_t i = 0; i < count; i++) {
        double cdf = 0.5 * (1.0 + erf(x[i] / sqrt(2.0)));
        double pdf = inv_sqrt_2pi * exp(-0.5 * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

void nn_ref_silu_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] * sigmoid(x[i]);
}

void nn_ref_silu_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (1.0 + x[i] * (1.0 - s));
    }
}

void nn_ref_sigmoid_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = sigmoid(x[i]);
}

void nn_ref_sigmoid_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (1.0 - s);
    }
}

void nn_ref_tanh_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = tanh(x[i]);
}

void nn_ref_tanh_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double t = tanh(x[i]);
        dx[i] = dy[i] * (1.0 - t * t);
    }
}

void nn_ref_relu6_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] < 0.0 ? 0.0 : x[i] > 6.0 ? 6.0 : x[i];
}

void nn_ref_relu6_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] = (x[i] <= 0.0 || x[i] >= 6.0) ? 0.0 : dy[i];
}

/* x relu6(x + 3) / 6: 0 below -3, x below 3 ... x (x + 3) / 6 between */
void nn_ref_hardswish_forward(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] <= -3.0 ? 0.0 : x[i] >= 3.0 ? x[i] : x[i] * (x[i] + 3.0) / 6.0;
}

/* d/dx of x (x + 3) / 6 is (2x + 3) / 6 = x/3 + 1/2 */
void nn_ref_hardswish_backward(double *dx, const double *dy, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++)
        dx[i] = x[i] < -3.0 ? 0.0 : x[i] <= 3.0 ? dy[i] * (x[i] / 3.0 + 0.5) : dy[i];
}
