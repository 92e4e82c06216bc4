/* ref/loss.c - reference softmax cross-entropy (mean) in double, with label
 * smoothing eps: loss_i = (1 - eps)(-log p_y) + eps mean_c(-log p_c). */
#include "ops/ops.h"

#include <math.h>

double nn_ref_softmax_ce_forward_smooth(const double *logits, const int32_t *labels, int classes,
                                        double smoothing, int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const double *z = logits + (size_t)i * classes;   /* (classes) */
        double m = z[0], s = 0.0, zsum = 0.0;
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        for (int c = 0; c < classes; c++) s += exp(z[c] - m);
        for (int c = 0; c < classes; c++) zsum += z[c];
        const double logsum = log(s) + m;
        const double nll = logsum - z[labels[i]];
        total += smoothing == 0.0 ? nll
                                  : (1.0 - smoothing) * nll + smoothing * (logsum - zsum / classes);
    }
    return total / n;
}

double nn_ref_softmax_ce_forward(const double *logits, const int32_t *labels, int classes, int n) {
    return nn_ref_softmax_ce_forward_smooth(logits, labels, classes, 0.0, n);
}

void nn_ref_softmax_ce_backward_smooth(double *dlogits, const double *logits,
                                       const int32_t *labels, int classes, double smoothing,
                                       int n) {
    for (int i = 0; i < n; i++) {
        const double *z = logits + (size_t)i * classes;   /* (classes) */
        double m = z[0], s = 0.0;
        for (int c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
        for (int c = 0; c < classes; c++) s += exp(z[c] - m);
        for (int c = 0; c < classes; c++) {
            const double target = (c == labels[i] ? 1.0 - smoothing : 0.0) + smoothing / classes;
            dlogits[(size_t)i * classes + c] = (exp(z[c] - m) / s - target) / n;
        }
    }
}

void nn_ref_softmax_ce_backward(double *dlogits, const double *logits, const int32_t *labels,
                                int classes, int n) {
    nn_ref_softmax_ce_backward_smooth(dlogits, logits, labels, classes, 0.0, n);
}
