/*
 * test_mpi_allreduce.c - the MPI communicator's gradient all-reduce, through
 * shared memory (src/dist/mpi_shm.c) and through MPI_Iallreduce, under
 * mpirun -np 3 (the binary starts mpirun on itself; exits 77, skipped,
 * without MPI or mpirun).
 *
 * Each round starts a few all-reduces of mixed sizes (50 floats to 1.5 M:
 * several in flight at once, rings that wrap onto requests still in flight,
 * and a bucket larger than the ring, which grows it with others in flight),
 * lets some progress, waits for them in a shuffled order and checks every
 * value against ((v0 + v1) + v2) / 3 computed here, bit for bit; the same
 * rounds through MPI (nn_mpi_comm_set_shared_memory off, nn_comm.ordered)
 * give the same bytes.
 */
#include "nnopt.h"

#include "test_util.h"

#include <stdint.h>

enum { RANKS = 3, ROUNDS = 40, MAX_INFLIGHT = 4 };

/* rank r's value i in round k */
static float value(int r, int k, size_t i) {
    return (float)(r + 1) * 0.37f + (float)((i * 7 + (size_t)k * 13) % 101) * 0.013f -
           (float)((i + (size_t)r) % 17) * 0.11f;
}

static uint64_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* a size drawn the same way on every rank: small buckets and large ones;
 * in the middle round, a second bucket larger than the ring so far */
static size_t draw_size(uint64_t *s, int k, int b) {
    const uint64_t u = rng_next(s) % 10;
    if (k == ROUNDS / 2 && b == 1) return 1500000;
    if (u < 5) return 50 + rng_next(s) % 50000;
    return 300000 + rng_next(s) % 400000;
}

/* ROUNDS rounds on c; the values each rank ended with, appended to out (its
 * floats counted in *len); mismatches with the expected bytes counted. */
static long run_rounds(nn_comm *c, float **bufs, float *out, size_t *len) {
    uint64_t seed = 12345;
    long bad = 0;
    *len = 0;
    const float inv = 1.0f / (float)c->size;
    for (int k = 0; k < ROUNDS; k++) {
        int count = 1 + (int)(rng_next(&seed) % MAX_INFLIGHT);
        if (k == ROUNDS / 2 && count < 2) count = 2;
        size_t n[MAX_INFLIGHT];
        int req[MAX_INFLIGHT], order[MAX_INFLIGHT];
        for (int b = 0; b < count; b++) {
            n[b] = draw_size(&seed, k, b);
            for (size_t i = 0; i < n[b]; i++) bufs[b][i] = value(c->rank, k * 8 + b, i);
            if (c->allreduce_start(c, bufs[b], n[b], &req[b])) return -1;
            if (c->progress && rng_next(&seed) % 2) c->progress(c);
            order[b] = b;
        }
        for (int b = count - 1; b > 0; b--) { /* wait in a shuffled order */
            const int j = (int)(rng_next(&seed) % (uint64_t)(b + 1)), t = order[b];
            order[b] = order[j];
            order[j] = t;
        }
        for (int w = 0; w < count; w++)
            if (c->wait(c, req[order[w]])) return -1;
        for (int b = 0; b < count; b++) {
            for (size_t i = 0; i < n[b]; i++) {
                float s = value(0, k * 8 + b, i);
                for (int r = 1; r < c->size; r++) s += value(r, k * 8 + b, i);
                s *= inv;
                bad += memcmp(&s, &bufs[b][i], sizeof s) != 0;
            }
            /* a sample of each bucket for comparing the two paths */
            for (size_t i = 0; i < n[b]; i += 997) out[(*len)++] = bufs[b][i];
        }
    }
    return bad;
}

int main(int argc, char **argv) {
    (void)argc;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE")) {
        if (!nn_mpi_available()) {
            printf("SKIP built without MPI\n");
            return 77;
        }
        /* OpenMPI's own allocations outlive MPI_Finalize (as cli_mpi.sh) */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", asan ? asan : "", asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "3",
               argv[0], (char *)NULL);
        printf("SKIP cannot run mpirun\n");
        return 77;
    }
    if (nn_mpi_init(&argc, &argv)) {
        printf("FAIL MPI starts\n");
        return 1;
    }
    nn_ctx *ctx = nn_ctx_new(1);
    nn_comm *shm = NULL, *mpi = NULL;
    if (!ctx || nn_mpi_comm_new(ctx, &shm) || nn_mpi_comm_new(ctx, &mpi)) {
        fprintf(stderr, "test_mpi_allreduce: %s\n", ctx ? nn_ctx_error(ctx) : "no context");
        nn_mpi_abort(1);
    }
    nn_mpi_comm_set_shared_memory(mpi, 0);
    shm->ordered = mpi->ordered = 1;
    const int rank = shm->rank;
    if (rank != 0 && !freopen("/dev/null", "w", stdout)) nn_mpi_abort(1);
    check(shm->size == RANKS, "3 ranks", "%d", shm->size);
    check(strcmp(nn_mpi_comm_allreduce_name(shm), "shared memory") == 0,
          "ranks on one machine average through shared memory", "%s",
          nn_mpi_comm_allreduce_name(shm));
    check(strcmp(nn_mpi_comm_allreduce_name(mpi), "MPI_Iallreduce") == 0,
          "... and through MPI once that is turned off", "%s", nn_mpi_comm_allreduce_name(mpi));
    float *bufs[MAX_INFLIGHT];
    for (int b = 0; b < MAX_INFLIGHT; b++) bufs[b] = malloc(1500000 * sizeof(float));
    const size_t sample_cap = (size_t)ROUNDS * MAX_INFLIGHT * (1500000 / 997 + 1);
    float *sample_shm = malloc(sample_cap * sizeof(float));
    float *sample_mpi = malloc(sample_cap * sizeof(float));
    size_t len_shm = 0, len_mpi = 0;
    const long bad_shm = run_rounds(shm, bufs, sample_shm, &len_shm);
    const long bad_mpi = run_rounds(mpi, bufs, sample_mpi, &len_mpi);
    if (bad_shm < 0 || bad_mpi < 0) {
        fprintf(stderr, "test_mpi_allreduce: rank %d: %s\n", rank, nn_ctx_error(ctx));
        nn_mpi_abort(1);
    }
    double sums[3] = {(double)bad_shm, (double)bad_mpi,
                      len_shm == len_mpi && !memcmp(sample_shm, sample_mpi, len_shm * sizeof(float))
                          ? 0.0 : 1.0};
    if (mpi->sum_f64(mpi, sums, 3)) nn_mpi_abort(1);
    check(sums[0] == 0, "shared memory: every value is ((v0 + v1) + v2) / 3, bit for bit",
          "%.0f values differ over the ranks", sums[0]);
    check(sums[1] == 0, "MPI (ordered): every value is ((v0 + v1) + v2) / 3, bit for bit",
          "%.0f values differ", sums[1]);
    check(sums[2] == 0, "both paths end with the same bytes on every rank", "%.0f ranks differ",
          sums[2]);
    for (int b = 0; b < MAX_INFLIGHT; b++) free(bufs[b]);
    free(sample_shm);
    free(sample_mpi);
    nn_mpi_comm_free(shm);
    nn_mpi_comm_free(mpi);
    nn_ctx_free(ctx);
    const int rc = test_summary();
    nn_mpi_finalize();
    return rc;
}
