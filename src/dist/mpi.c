/*
 * mpi.c - the MPI communicator (nn_comm) for data-parallel training, and
 * MPI's start and end for main(). Gradient buckets are averaged with
 * MPI_Iallreduce in place (sum), then divided by the number of ranks when
 * waited for: the reduction hands every rank the same bytes, and the division
 * is the same float operation on each, so the ranks stay bit-identical. The
 * trainer weights each rank's gradient by its share of the samples first
 * (src/train/trainer.c), so the average is the global batch's mean.
 * Parameters travel with MPI_Bcast, the loss sums with MPI_Allreduce.
 * The buffers are the backend's memory (device pointers, as NCCL takes them):
 * every MPI call that may read or write them, and the division, runs inside
 * the backend's window (nn_dev_begin/end); MPI moves data only inside its
 * calls, so a bucket in flight is not touched while the window is closed.
 * Without MPI (NN_HAVE_MPI undefined) every call fails with NN_EUNSUPPORTED.
 */
#include "nn_internal.h"
#include "backend/backend.h"

#include <stdlib.h>

#ifdef NN_HAVE_MPI
#include <limits.h>
#include <mpi.h>

/* One all-reduce in flight: its request and the bucket to divide after it. */
typedef struct {
    MPI_Request req;
    float *buf;
    size_t n;
} mpi_pending;

typedef struct {
    nn_ctx *ctx;
    MPI_Comm world;       /* a duplicate of MPI_COMM_WORLD, ours alone */
    mpi_pending *pending; /* (cap) indexed by the trainer's req */
    int cap, next;
} mpi_impl;

int nn_mpi_available(void) { return 1; }

nn_status nn_mpi_init(int *argc, char ***argv) {
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return NN_EIO;
    return NN_OK;
}

void nn_mpi_finalize(void) { MPI_Finalize(); }

void nn_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

/* The message of an MPI error code, into ctx. */
static nn_status mpi_fail(mpi_impl *m, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return nn_ctx_fail(m->ctx, NN_EIO, "MPI %s failed: %.*s", what, len, msg);
}

/* MPI counts are int: buckets are far smaller, but say so if one is not. */
static nn_status check_count(mpi_impl *m, size_t n) {
    if (n > INT_MAX)
        return nn_ctx_fail(m->ctx, NN_EINVAL, "MPI: %zu floats in one message; at most %d", n,
                           INT_MAX);
    return NN_OK;
}

static nn_status mpi_allreduce_start(nn_comm *c, float *buf, size_t n, int *req) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    /* request slots are reused once waited for; the trainer waits for all
     * of a step's before the next step starts, so next wraps to 0 then */
    if (m->next == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        mpi_pending *p = realloc(m->pending, (size_t)cap * sizeof *p);
        if (!p) return nn_ctx_fail(m->ctx, NN_ENOMEM, "MPI: out of memory for %d requests", cap);
        m->pending = p;
        m->cap = cap;
    }
    mpi_pending *p = &m->pending[m->next];
    const nn_backend *be = m->ctx->backend;
    nn_dev_begin(be);
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, m->world, &p->req);
    nn_dev_end(be);
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Iallreduce");
    p->buf = buf;
    p->n = n;
    *req = m->next++;
    return NN_OK;
}

static nn_status mpi_wait(nn_comm *c, int req) {
    mpi_impl *m = c->impl;
    NN_ASSERT(req >= 0 && req < m->next);
    mpi_pending *p = &m->pending[req];
    const nn_backend *be = m->ctx->backend;
    nn_dev_begin(be);
    int rc = MPI_Wait(&p->req, MPI_STATUS_IGNORE);
    const float inv = 1.0f / (float)c->size;
    for (size_t i = 0; rc == MPI_SUCCESS && i < p->n; i++) p->buf[i] *= inv;
    nn_dev_end(be);
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Wait");
    if (req == m->next - 1) m->next = 0; /* the step's last: slots free again */
    return NN_OK;
}

static nn_status mpi_broadcast(nn_comm *c, float *buf, size_t n, int root) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    const nn_backend *be = m->ctx->backend;
    nn_dev_begin(be);
    int rc = MPI_Bcast(buf, (int)n, MPI_FLOAT, root, m->world);
    nn_dev_end(be);
    return rc == MPI_SUCCESS ? NN_OK : mpi_fail(m, rc, "Bcast");
}

static nn_status mpi_sum_f64(nn_comm *c, double *buf, size_t n) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, m->world);
    return rc == MPI_SUCCESS ? NN_OK : mpi_fail(m, rc, "Allreduce");
}

nn_status nn_mpi_comm_new(nn_ctx *ctx, nn_comm **out) {
    *out = NULL;
    nn_comm *c = calloc(1, sizeof *c);
    mpi_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the MPI communicator");
    }
    m->ctx = ctx;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->world);
    if (rc != MPI_SUCCESS) {
        nn_status s = mpi_fail(m, rc, "Comm_dup");
        free(c);
        free(m);
        return s;
    }
    /* errors come back as codes, for a message naming the call */
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->world, &c->rank);
    MPI_Comm_size(m->world, &c->size);
    c->allreduce_start = mpi_allreduce_start;
    c->wait = mpi_wait;
    c->broadcast = mpi_broadcast;
    c->sum_f64 = mpi_sum_f64;
    c->impl = m;
    *out = c;
    return NN_OK;
}

void nn_mpi_comm_free(nn_comm *c) {
    if (!c) return;
    mpi_impl *m = c->impl;
    MPI_Comm_free(&m->world);
    free(m->pending);
    free(m);
    free(c);
}

#else /* no MPI in this build */

int nn_mpi_available(void) { return 0; }
nn_status nn_mpi_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return NN_EUNSUPPORTED;
}
void nn_mpi_finalize(void) {}
void nn_mpi_abort(int code) { (void)code; }
nn_status nn_mpi_comm_new(nn_ctx *ctx, nn_comm **out) {
    *out = NULL;
    return nn_ctx_fail(ctx, NN_EUNSUPPORTED, "this nnopt was built without MPI "
                       "(install libopenmpi-dev: scripts/deps.sh, then rebuild)");
}
void nn_mpi_comm_free(nn_comm *c) { (void)c; }

#endif
