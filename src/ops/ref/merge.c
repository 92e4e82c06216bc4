/* ref/merge.c - reference channel concatenation and addition in double,
 * element by element. */
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

/* input k's channels: C1 and C2 for a two-input descriptor */
static int channels(const nn_concat_desc *d, int k) {
    return d->count <= 2 ? (k == 0 ? d->C1 : d->C2) : d->C[k];
}

static int inputs(const nn_concat_desc *d) { return d->count <= 2 ? 2 : d->count; }

/* output element j of a sample lies in input k at offset j - (channels before k) * inner */
void nn_ref_concat_forward_n(double *y, const double *const *x, const nn_concat_desc *d, int n) {
    size_t total = 0;
    for (int k = 0; k < inputs(d); k++) total += (size_t)channels(d, k) * (size_t)d->inner;
    for (int i = 0; i < n; i++) {
        size_t j = 0;
        for (int k = 0; k < inputs(d); k++) {
            const size_t nk = (size_t)channels(d, k) * (size_t)d->inner;
            for (size_t e = 0; e < nk; e++, j++) y[(size_t)i * total + j] = x[k][(size_t)i * nk + e];
        }
    }
}

void nn_ref_concat_backward_n(double *const *dx, const double *dy, const nn_concat_desc *d, int n) {
    size_t total = 0;
    for (int k = 0; k < inputs(d); k++) total += (size_t)channels(d, k) * (size_t)d->inner;
    for (int i = 0; i < n; i++) {
        size_t j = 0;
        for (int k = 0; k < inputs(d); k++) {
            const size_t nk = (size_t)channels(d, k) * (size_t)d->inner;
            for (size_t e = 0; e < nk; e++, j++)
                if (dx[k]) dx[k][(size_t)i * nk + e] = dy[(size_t)i * total + j];
        }
    }
}

void nn_ref_add_forward_n(double *y, const double *const *x, int m, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double s = 0.0;
        for (int k = 0; k < m; k++) s += x[k][i];
        y[i] = s;
    }
}

void nn_ref_add_backward_n(double *const *dx, const double *dy, int m, size_t count) {
    for (int k = 0; k < m; k++)
        for (size_t i = 0; i < count && dx[k]; i++) dx[k][i] = dy[i];
}
