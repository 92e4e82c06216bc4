/* ref/dropout.c - reference dropout in double: recomputes each element's
 * keep decision from the hash (nn_dropout_keep) instead of reading a mask. */
#include "ops/ops.h"

void nn_ref_dropout_forward(double *y, const double *x, double p, uint64_t seed, int node_index,
                            size_t count, int training) {
    for (size_t i = 0; i < count; i++)
        y[i] = !training ? x[i]
               : nn_dropout_keep(seed, node_index, i, (float)p) ? x[i] / (1.0 - p)
                                                                : 0.0;
}

void nn_ref_dropout_backward(double *dx, const double *dy, double p, uint64_t seed,
                             int node_index, size_t count, int training) {
    for (size_t i = 0; i < count; i++)
        dx[i] = !training ? dy[i]
                : nn_dropout_keep(seed, node_index, i, (float)p) ? dy[i] / (1.0 - p)
                                                                 : 0.0;
}
