/*
 * mpi_internal.h - what the MPI communicator (mpi.c) shares with its
 * node-local all-reduce (mpi_shm.c): the communicator's state, its requests
 * and the watchdog's waits. Only with NN_HAVE_MPI.
 */
#ifndef NN_MPI_INTERNAL_H
#define NN_MPI_INTERNAL_H

#include "nn_internal.h"

#include <mpi.h>
#include <stdint.h>

/* One request in flight: an all-reduce (its bucket divided by the ranks
 * after it) or a point-to-point send (nothing after it). */
typedef struct {
    MPI_Request req;
    float *buf;
    size_t n;
    int divide;           /* an all-reduce: buf / size once complete */
    float *gather;        /* an ordered all-reduce (nn_comm.ordered): every rank's
                             buf, added in rank order once complete; else NULL */
    int in_use;
    /* an all-reduce through shared memory (mpi_shm.c) instead of req */
    int shm;
    int stage;            /* 0 staged, 1 this rank's slice summed, 2 done */
    uint64_t seq;         /* its number among the communicator's all-reduces */
    size_t off;           /* where its values lie in the segments' rings */
} mpi_pending;

typedef struct mpi_shm mpi_shm;

typedef struct {
    nn_ctx *ctx;
    MPI_Comm world;       /* a duplicate of MPI_COMM_WORLD, ours alone */
    MPI_Comm watch;       /* another: the watchdog's pings and answers */
    double timeout;       /* seconds a collective may wait before pinging */
    mpi_pending *pending; /* (cap) indexed by the caller's req */
    int cap;
    int rank, size;
    mpi_shm *shm;         /* the node-local all-reduce; NULL: MPI_Iallreduce */
} mpi_impl;

/* The message of an MPI error code, into ctx. */
nn_status mpi_fail(mpi_impl *m, int rc, const char *what);
/* Polls ready(arg) until it says done (1) or fails (< 0: minus an MPI error
 * code), answering the watchdog's pings; after m->timeout seconds, names
 * the ranks that stopped answering and fails. */
nn_status watch_until(mpi_impl *m, int (*ready)(void *arg), void *arg, const char *what);
/* watch_until for an MPI request */
nn_status watch_wait(mpi_impl *m, MPI_Request *req, const char *what);

/* mpi_shm.c. shm_open_node: collective over m->world; sets m->shm when
 * every rank runs on this machine (else leaves it NULL: not an error).
 * shm_usable: m->shm is there and on, and the buffers are host memory
 * (the backend runs the CPU kernels).
 * shm_start: the all-reduce of buf[0..n) in the free slot (not yet in use);
 * NN_EUNSUPPORTED when the shared memory could not be made (every rank
 * then goes on with MPI); shm_wait: completes it (and every earlier one);
 * shm_progress: moves the ones in flight on without waiting; shm_close:
 * local, no communication. */
nn_status shm_open_node(mpi_impl *m);
int shm_usable(const mpi_impl *m);
nn_status shm_start(mpi_impl *m, int slot, float *buf, size_t n);
nn_status shm_wait(mpi_impl *m, int slot);
void shm_progress(mpi_impl *m);
void shm_close(mpi_impl *m);

#endif
