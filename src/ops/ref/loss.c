/* ref/loss.c - reference softmax cross-entropy (mean) in double. */
#include "ops/ops.h"

#include <math.h>

double nn_ref_softmax_ce_forward(const double *logits, const int32_t *labels, int classes, int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const double *z = logits + (size_t)i * classes;
        double m = z[0], s = 0.0;
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        for (int c = 0; c < classes; c++) s += exp(z[c] - m);
        total += log(s) + m - z[labels[i]];
    }
    return total / n;
}

void nn_ref_softmax_ce_backward(double *dlogits, const double *logits, const int32_t *labels,
                                int classes, int n) {
    for (int i = 0; i < n; i++) {
        const double *z = logits + (size_t)i * classes;
        double m = z[0], s = 0.0;
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        for (int c = 0; c < classes; c++) s += exp(z[c] - m);
        for (int c = 0; c < classes; c++)
            dlogits[(size_t)i * classes + c] =
                (exp(z[c] - m) / s - (c == labels[i] ? 1.0 : 0.0)) / n;
    }
}
