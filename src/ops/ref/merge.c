/* ref/merge.c - reference channel concatenation in double, element by element. */
#include "ops/ops.h"

void nn_ref_concat_forward(double *y, const double *a, const double *b, const nn_concat_desc *d,
                           int n) {
    const size_t na = (size_t)d->C1 * (size_t)d->inner, nb = (size_t)d->C2 * (size_t)d->inner;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < na + nb; j++)
            y[(size_t)i * (na + nb) + j] = j < na ? a[(size_t)i * na + j] : b[(size_t)i * nb + j - na];
}

void nn_ref_concat_backward(double *da, double *db, const double *dy, const nn_concat_desc *d,
                            int n) {
    const size_t na = (size_t)d->C1 * (size_t)d->inner, nb = (size_t)d->C2 * (size_t)d->inner;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < na + nb; j++) {
            double g = dy[(size_t)i * (na + nb) + j];
            if (j < na) da[(size_t)i * na + j] = g;
            else db[(size_t)i * nb + j - na] = g;
        }
}
