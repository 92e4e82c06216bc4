/*
 * mpi.c - the MPI communicator (nn_comm) for data-parallel training, and
 * MPI's start and end for main(). Gradient buckets are averaged through
 * shared memory when every rank runs on this machine (mpi_shm.c), else with
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
 *
 * The watchdog: no collective waits for ever. Every call is non-blocking and
 * waited for by polling; a rank that has waited `timeout` seconds pings
 * every other rank on a communicator of its own, and each rank answers pings
 * whenever it polls. Ranks that do not answer within a few seconds are the
 * ones named in the error ("rank 1 stopped answering ..."); the caller then
 * aborts the job (nn_mpi_abort), which takes the silent rank down too. A rank
 * killed outright is mpirun's to notice; this catches ranks that hang
 * (stopped, deadlocked, stuck in I/O) or a network that went quiet.
 */
#include "nn_internal.h"
#include "backend/backend.h"

#include <stdlib.h>

#ifdef NN_HAVE_MPI
#include "dist/mpi_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { TAG_PING = 1, TAG_PONG = 2 };
#define PING_WAIT_S 3.0 /* how long pinged ranks have to answer */

/* The message of an MPI error code, into ctx. */
nn_status mpi_fail(mpi_impl *m, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return nn_ctx_fail(m->ctx, NN_EIO, "MPI %s failed: %.*s", what, len, msg);
}

/* Answers every ping that has arrived (any rank may be checking on us). */
static void answer_pings(mpi_impl *m) {
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, m->watch, &flag, &st) != MPI_SUCCESS || !flag) return;
        int token;
        MPI_Recv(&token, 1, MPI_INT, st.MPI_SOURCE, TAG_PING, m->watch, MPI_STATUS_IGNORE);
        MPI_Send(&token, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, m->watch);
    }
}

static void nap(void) {
    struct timespec ts = {0, 50000}; /* 50 us */
    nanosleep(&ts, NULL);
}

/* After a wait of m->timeout seconds: pings every other rank and names those
 * that do not answer within PING_WAIT_S (into the context's error). */
static nn_status name_silent_ranks(mpi_impl *m, const char *what) {
    int rank, size;
    MPI_Comm_rank(m->watch, &rank);
    MPI_Comm_size(m->watch, &size);
    MPI_Request *req = calloc((size_t)size * 2, sizeof *req);
    int *token = calloc((size_t)size * 2, sizeof *token);
    if (!req || !token) {
        free(req);
        free(token);
        return nn_ctx_fail(m->ctx, NN_EIO, "MPI %s: no progress for %.0f s (out of memory naming "
                           "the silent ranks)", what, m->timeout);
    }
    for (int r = 0; r < size; r++) {
        req[2 * r] = req[2 * r + 1] = MPI_REQUEST_NULL;
        if (r == rank) continue;
        token[2 * r] = rank;
        MPI_Isend(&token[2 * r], 1, MPI_INT, r, TAG_PING, m->watch, &req[2 * r]);
        MPI_Irecv(&token[2 * r + 1], 1, MPI_INT, r, TAG_PONG, m->watch, &req[2 * r + 1]);
    }
    double t0 = MPI_Wtime();
    int answered = 0;
    while (MPI_Wtime() - t0 < PING_WAIT_S && answered < size - 1) {
        answer_pings(m);
        answered = 0;
        for (int r = 0; r < size; r++) {
            int done = 0;
            if (r != rank) MPI_Test(&req[2 * r + 1], &done, MPI_STATUS_IGNORE);
            answered += r != rank && (done || req[2 * r + 1] == MPI_REQUEST_NULL);
        }
        nap();
    }
    char silent[256] = "";
    size_t len = 0;
    int count = 0;
    for (int r = 0; r < size; r++) {
        if (r == rank || req[2 * r + 1] == MPI_REQUEST_NULL) continue;
        count++;
        if (len < sizeof silent - 16)
            len += (size_t)snprintf(silent + len, sizeof silent - len, "%s%d", count > 1 ? ", " : "", r);
    }
    free(req);
    free(token);
    if (count)
        return nn_ctx_fail(m->ctx, NN_EIO,
                           "MPI %s: rank%s %s stopped answering (no progress for %.0f s, no "
                           "reply to a ping for %.0f s); stopping the job",
                           what, count > 1 ? "s" : "", silent, m->timeout, PING_WAIT_S);
    return nn_ctx_fail(m->ctx, NN_EIO,
                       "MPI %s: no progress for %.0f s though every rank answers pings (a rank "
                       "stuck before the collective?); stopping the job",
                       what, m->timeout + PING_WAIT_S);
}

/* Polls ready(arg) until it says done (1) or fails (< 0: -rc, an MPI error
 * code), answering pings; after m->timeout seconds, names the ranks that
 * stopped answering and fails. */
nn_status watch_until(mpi_impl *m, int (*ready)(void *arg), void *arg, const char *what) {
    double t0 = MPI_Wtime();
    long polls = 0;
    int napping = 0;
    for (;;) {
        const int r = ready(arg);
        if (r < 0) return mpi_fail(m, -r, what);
        if (r) return NN_OK;
        /* poll flat out for 20 ms (MPI progresses large messages inside its
         * calls; most waits end by then), then nap between polls */
        if ((++polls & 63) == 0) {
            double waited = MPI_Wtime() - t0;
            answer_pings(m);
            if (m->timeout > 0 && waited > m->timeout) return name_silent_ranks(m, what);
            napping = waited > 0.02;
        }
        if (napping) nap();
    }
}

static int request_done(void *arg) {
    int done = 0;
    const int rc = MPI_Test(arg, &done, MPI_STATUS_IGNORE);
    return rc != MPI_SUCCESS ? -rc : done;
}

/* Waits for req under the watchdog (watch_until). */
nn_status watch_wait(mpi_impl *m, MPI_Request *req, const char *what) {
    return watch_until(m, request_done, req, what);
}

int nn_mpi_available(void) { return 1; }

nn_status nn_mpi_init(int *argc, char ***argv) {
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return NN_EIO;
    return NN_OK;
}

void nn_mpi_finalize(void) { MPI_Finalize(); }

void nn_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }


/* MPI counts are int: buckets are far smaller, but say so if one is not. */
static nn_status check_count(mpi_impl *m, size_t n) {
    if (n > INT_MAX)
        return nn_ctx_fail(m->ctx, NN_EINVAL, "MPI: %zu floats in one message; at most %d", n,
                           INT_MAX);
    return NN_OK;
}

/* A free request slot (the caller's req names it until waited for). */
static nn_status take_slot(mpi_impl *m, int *slot) {
    for (int i = 0; i < m->cap; i++)
        if (!m->pending[i].in_use) {
            *slot = i;
            return NN_OK;
        }
    int cap = m->cap ? 2 * m->cap : 16;
    mpi_pending *p = realloc(m->pending, (size_t)cap * sizeof *p);
    if (!p) return nn_ctx_fail(m->ctx, NN_ENOMEM, "MPI: out of memory for %d requests", cap);
    memset(p + m->cap, 0, (size_t)(cap - m->cap) * sizeof *p);
    *slot = m->cap;
    m->pending = p;
    m->cap = cap;
    return NN_OK;
}

/* A request about to start: n checked, a free slot taken (not yet in use). */
static nn_status new_request(mpi_impl *m, size_t n, int *slot) {
    nn_status s = check_count(m, n);
    return s ? s : take_slot(m, slot);
}

/* The request in slot started with rc: in use from now on, named by *req. */
static nn_status started(mpi_impl *m, int rc, const char *call, int slot, float *buf, size_t n,
                         int divide, int *req) {
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, call);
    mpi_pending *p = &m->pending[slot];
    *p = (mpi_pending){.req = p->req, .buf = buf, .n = n, .divide = divide, .gather = p->gather,
                       .in_use = 1};
    *req = slot;
    return NN_OK;
}

/* Ranks in a fixed order (nn_comm.ordered, more than two: the library's
 * all-reduce may add them in any order): every rank's values gathered, then
 * added from rank 0 on. Two ranks need none of it (r0 + r1 = r1 + r0). */
static int ordered(const nn_comm *c) { return c->ordered && c->size > 2; }

static nn_status mpi_allreduce_start(nn_comm *c, float *buf, size_t n, int *req) {
    mpi_impl *m = c->impl;
    int slot;
    nn_status s = new_request(m, n, &slot);
    if (s) return s;
    if (shm_usable(m)) { /* ranks on one machine (mpi_shm.c); in rank order too */
        s = shm_start(m, slot, buf, n);
        if (s != NN_EUNSUPPORTED) {
            *req = slot;
            return s;
        }
    }
    mpi_pending *p = &m->pending[slot];
    p->gather = NULL;
    if (ordered(c) && !(p->gather = malloc(n * (size_t)c->size * sizeof(float))))
        return nn_ctx_fail(m->ctx, NN_ENOMEM, "MPI: out of memory gathering %zu floats from %d "
                           "ranks", n, c->size);
    nn_dev_begin(nn_ctx_backend_of(m->ctx));
    int rc = p->gather ? MPI_Iallgather(buf, (int)n, MPI_FLOAT, p->gather, (int)n, MPI_FLOAT,
                                        m->world, &p->req)
                       : MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, m->world,
                                        &p->req);
    nn_dev_end(nn_ctx_backend_of(m->ctx));
    if (rc != MPI_SUCCESS) {
        free(p->gather);
        p->gather = NULL;
    }
    return started(m, rc, p->gather ? "Iallgather" : "Iallreduce", slot, buf, n, 1, req);
}

static nn_status mpi_wait(nn_comm *c, int req) {
    mpi_impl *m = c->impl;
    NN_ASSERT(req >= 0 && req < m->cap && m->pending[req].in_use);
    mpi_pending *p = &m->pending[req];
    if (p->shm) return shm_wait(m, req);
    const nn_backend *be = nn_ctx_backend_of(m->ctx);
    nn_dev_begin(be);
    nn_status s = watch_wait(m, &p->req, p->divide ? "gradient all-reduce" : "send to the next stage");
    if (!s && p->gather) { /* host memory: ordered reductions run on the CPU backend */
        memcpy(p->buf, p->gather, p->n * sizeof(float));
        for (int r = 1; r < c->size; r++)
            for (size_t i = 0; i < p->n; i++) p->buf[i] += p->gather[(size_t)r * p->n + i];
    }
    const float inv = 1.0f / (float)c->size;
    for (size_t i = 0; !s && p->divide && i < p->n; i++) p->buf[i] *= inv;
    nn_dev_end(be);
    free(p->gather);
    p->gather = NULL;
    p->in_use = 0;
    return s;
}

/* MPI may move data into the buffers here: inside the backend's window */
static void mpi_progress(nn_comm *c) {
    mpi_impl *m = c->impl;
    if (m->shm) shm_progress(m);
    nn_dev_begin(nn_ctx_backend_of(m->ctx));
    for (int i = 0; i < m->cap; i++)
        if (m->pending[i].in_use && !m->pending[i].shm) {
            int done = 0;
            MPI_Request_get_status(m->pending[i].req, &done, MPI_STATUS_IGNORE);
        }
    nn_dev_end(nn_ctx_backend_of(m->ctx));
}

static nn_status mpi_send_start(nn_comm *c, const float *buf, size_t n, int peer, int tag,
                                int *req) {
    mpi_impl *m = c->impl;
    int slot;
    nn_status s = new_request(m, n, &slot);
    if (s) return s;
    nn_dev_begin(nn_ctx_backend_of(m->ctx));
    int rc = MPI_Isend(buf, (int)n, MPI_FLOAT, peer, tag, m->world, &m->pending[slot].req);
    nn_dev_end(nn_ctx_backend_of(m->ctx));
    return started(m, rc, "Isend", slot, NULL, n, 0, req);
}

/* The end of a blocking call run as a non-blocking one (started with rc,
 * inside the backend's window): waited for under the watchdog, the window
 * closed. */
static nn_status finish_watched(mpi_impl *m, int rc, MPI_Request *req, const char *what,
                                const char *call) {
    nn_status s = rc == MPI_SUCCESS ? watch_wait(m, req, what) : mpi_fail(m, rc, call);
    nn_dev_end(nn_ctx_backend_of(m->ctx));
    return s;
}

static nn_status mpi_recv(nn_comm *c, float *buf, size_t n, int peer, int tag) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    MPI_Request req;
    nn_dev_begin(nn_ctx_backend_of(m->ctx));
    int rc = MPI_Irecv(buf, (int)n, MPI_FLOAT, peer, tag, m->world, &req);
    return finish_watched(m, rc, &req, "receive from the neighbouring stage", "Irecv");
}

static nn_status mpi_broadcast(nn_comm *c, float *buf, size_t n, int root) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    MPI_Request req;
    nn_dev_begin(nn_ctx_backend_of(m->ctx));
    int rc = MPI_Ibcast(buf, (int)n, MPI_FLOAT, root, m->world, &req);
    return finish_watched(m, rc, &req, "broadcast", "Ibcast");
}

static nn_status mpi_sum_f64(nn_comm *c, double *buf, size_t n) {
    mpi_impl *m = c->impl;
    nn_status s = check_count(m, n);
    if (s) return s;
    MPI_Request req;
    if (!ordered(c)) {
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, m->world, &req);
        return rc == MPI_SUCCESS ? watch_wait(m, &req, "sum") : mpi_fail(m, rc, "Iallreduce");
    }
    double *all = malloc(n * (size_t)c->size * sizeof(double));
    if (!all)
        return nn_ctx_fail(m->ctx, NN_ENOMEM, "MPI: out of memory gathering %zu sums from %d "
                           "ranks", n, c->size);
    int rc = MPI_Iallgather(buf, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, m->world, &req);
    s = rc == MPI_SUCCESS ? watch_wait(m, &req, "sum") : mpi_fail(m, rc, "Iallgather");
    for (size_t i = 0; !s && i < n; i++) {
        buf[i] = all[i];
        for (int r = 1; r < c->size; r++) buf[i] += all[(size_t)r * n + i];
    }
    free(all);
    return s;
}

static nn_status mpi_split(nn_comm *c, int color, int key, nn_comm **out);

/* A communicator over `world` (ours from now on), with `watch` for the
 * watchdog; frees both when it cannot be made. */
static nn_status comm_wrap(nn_ctx *ctx, MPI_Comm world, MPI_Comm watch, double timeout,
                           nn_comm **out) {
    *out = NULL;
    nn_comm *c = calloc(1, sizeof *c);
    mpi_impl *m = calloc(1, sizeof *m);
    nn_status st = NN_OK;
    if (!c || !m) {
        st = nn_ctx_fail(ctx, NN_ENOMEM, "out of memory for the MPI communicator");
        goto fail;
    }
    m->ctx = ctx;
    m->timeout = timeout;
    m->world = world;
    m->watch = watch;
    /* errors come back as codes, for a message naming the call */
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->watch, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->world, &c->rank);
    MPI_Comm_size(m->world, &c->size);
    m->rank = c->rank;
    m->size = c->size;
    if ((st = shm_open_node(m))) goto fail;
    c->allreduce_start = mpi_allreduce_start;
    c->wait = mpi_wait;
    c->progress = mpi_progress;
    c->broadcast = mpi_broadcast;
    c->sum_f64 = mpi_sum_f64;
    c->send_start = mpi_send_start;
    c->recv = mpi_recv;
    c->split = mpi_split;
    c->release = nn_mpi_comm_free;
    c->impl = m;
    *out = c;
    return NN_OK;
fail:
    free(c);
    free(m);
    MPI_Comm_free(&world);
    MPI_Comm_free(&watch);
    return st;
}

nn_status nn_mpi_comm_new(nn_ctx *ctx, nn_comm **out) {
    *out = NULL;
    MPI_Comm world, watch;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &world);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &watch);
        if (rc != MPI_SUCCESS) MPI_Comm_free(&world);
    }
    if (rc != MPI_SUCCESS) {
        mpi_impl m = {.ctx = ctx};
        return mpi_fail(&m, rc, "Comm_dup");
    }
    return comm_wrap(ctx, world, watch, 20, out);
}

/* The ranks of c with the same color, ordered by key (MPI_Comm_split):
 * collective over c. The watchdog's timeout carries over. */
static nn_status mpi_split(nn_comm *c, int color, int key, nn_comm **out) {
    mpi_impl *m = c->impl;
    *out = NULL;
    MPI_Comm world, watch;
    int rc = MPI_Comm_split(m->world, color, key, &world);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_split(m->watch, color, key, &watch);
        if (rc != MPI_SUCCESS) MPI_Comm_free(&world);
    }
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Comm_split");
    return comm_wrap(m->ctx, world, watch, m->timeout, out);
}

void nn_mpi_comm_set_timeout(nn_comm *c, double seconds) {
    ((mpi_impl *)c->impl)->timeout = seconds;
}

void nn_mpi_comm_set_shared_memory(nn_comm *c, int on) {
    if (!on) shm_close(c->impl);
}

const char *nn_mpi_comm_allreduce_name(const nn_comm *c) {
    return shm_usable(c->impl) ? "shared memory" : "MPI_Iallreduce";
}

void nn_mpi_comm_free(nn_comm *c) {
    if (!c) return;
    mpi_impl *m = c->impl;
    shm_close(m);
    MPI_Comm_free(&m->world);
    MPI_Comm_free(&m->watch);
    for (int i = 0; i < m->cap; i++) free(m->pending[i].gather);
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
void nn_mpi_comm_set_timeout(nn_comm *c, double seconds) {
    (void)c;
    (void)seconds;
}
void nn_mpi_comm_set_shared_memory(nn_comm *c, int on) {
    (void)c;
    (void)on;
}
const char *nn_mpi_comm_allreduce_name(const nn_comm *c) {
    (void)c;
    return "none";
}

#endif
