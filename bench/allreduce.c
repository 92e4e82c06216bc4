/*
 * allreduce.c - times nnopt's gradient all-reduce (nn_comm) on this
 * machine, through shared memory (src/dist/mpi_shm.c) and through
 * MPI_Iallreduce, alternating, so that both see the same load.
 *
 *   mpirun --allow-run-as-root -np 2 build/allreduce [FLOATS [ITERATIONS]]
 *
 * FLOATS defaults to 206,922 (the seed CNN's parameters, 0.83 MB); each
 * round times ITERATIONS (default 1000) start + wait pairs on one bucket of
 * FLOATS after a few untimed ones; 5 rounds per path; rank 0 prints the
 * median microseconds per all-reduce and the bucket's MB per second.
 */
#include "nnopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROUNDS = 5 };

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* seconds per all-reduce of buf over one round of iters */
static double time_round(nn_comm *c, float *buf, size_t n, int iters) {
    double t0 = 0.0;
    for (int it = -10; it < iters; it++) {
        if (it == 0) t0 = nn_wall_time();
        int req;
        if (c->allreduce_start(c, buf, n, &req) || c->wait(c, req)) return -1.0;
    }
    return (nn_wall_time() - t0) / iters;
}

int main(int argc, char **argv) {
    if (!nn_mpi_available()) {
        fprintf(stderr, "allreduce: this build has no MPI (install libopenmpi-dev: "
                        "scripts/deps.sh, then rebuild)\n");
        return 1;
    }
    const size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 206922;
    const int iters = argc > 2 ? atoi(argv[2]) : 1000;
    if (n == 0 || iters <= 0) {
        fprintf(stderr, "usage: mpirun -np N allreduce [FLOATS [ITERATIONS]]\n");
        return 2;
    }
    if (nn_mpi_init(&argc, &argv)) {
        fprintf(stderr, "allreduce: MPI failed to start\n");
        return 1;
    }
    nn_ctx *ctx = nn_ctx_new(1);
    nn_comm *shm = NULL, *mpi = NULL;
    if (!ctx || nn_mpi_comm_new(ctx, &shm) || nn_mpi_comm_new(ctx, &mpi)) {
        fprintf(stderr, "allreduce: %s\n", ctx ? nn_ctx_error(ctx) : "out of memory");
        nn_mpi_abort(1);
    }
    nn_mpi_comm_set_shared_memory(mpi, 0);
    float *buf = malloc(n * sizeof(float));
    if (!buf) nn_mpi_abort(1);
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i % 101) * 1e-3f;
    nn_comm *comms[2] = {shm, mpi};
    double t[2][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < 2; k++)
            if ((t[k][r] = time_round(comms[k], buf, n, iters)) < 0) {
                fprintf(stderr, "allreduce: %s\n", nn_ctx_error(ctx));
                nn_mpi_abort(1);
            }
    if (shm->rank == 0) {
        printf("# %d ranks, %zu floats (%.2f MB), %d all-reduces per round, median of %d rounds\n",
               shm->size, n, (double)n * 4 / 1e6, iters, ROUNDS);
        for (int k = 0; k < 2; k++) {
            qsort(t[k], ROUNDS, sizeof(double), cmp_double);
            const double med = t[k][ROUNDS / 2];
            printf("%-15s %9.1f us  %8.0f MB/s  (rounds %.1f-%.1f us)\n",
                   nn_mpi_comm_allreduce_name(comms[k]), med * 1e6, (double)n * 4 / med / 1e6,
                   t[k][0] * 1e6, t[k][ROUNDS - 1] * 1e6);
        }
    }
    free(buf);
    nn_mpi_comm_free(shm);
    nn_mpi_comm_free(mpi);
    nn_ctx_free(ctx);
    nn_mpi_finalize();
    return 0;
}
