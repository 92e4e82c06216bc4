/*
 * mpi_shm.c - the gradient all-reduce through shared memory, for ranks that
 * run on one machine: what `mpirun -np N` on one host starts.
 *
 * MPI_Iallreduce moves a bucket through messages: on one machine OpenMPI's
 * shared-memory transport copies every message in and out of its queues,
 * and two ranks spent 0.20 ms averaging the seed CNN's 0.83 MB of gradients
 * (bench/allreduce.c). Here each rank has a segment of shared memory
 * (shm_open, mapped by every rank of the node) and a bucket of n floats is
 * cut into one slice per rank:
 *   1. stage: each rank copies the slices of its values that the others
 *      will add into its own segment (not its own slice: nobody else needs
 *      it), then says so (its `arrived` counter);
 *   2. sum: once every rank has arrived, each adds its slice over the
 *      ranks in rank order, (r0 + r1) + r2 + ..., divides by the ranks as
 *      mpi.c does, and writes the result to its buffer and to its own
 *      slice of its segment (`reduced`);
 *   3. gather: once every rank has summed, each copies the others' results
 *      into its buffer.
 * One copy of the bucket, one pass of adds and one copy back: 0.026 ms for
 * the same bucket; every rank ends with the same bytes (each value is
 * summed once, by one rank), in rank order at any size.
 *
 * The counters are one cache line at the head of each segment, written
 * with release and read with acquire: the values staged or summed before a
 * count went up are visible to a rank that sees it. Waits poll them under
 * mpi.c's watchdog, so a rank that stops makes the others fail naming it,
 * as with MPI's collectives.
 *
 * Requests complete in the order they started (waiting for one completes
 * the earlier ones first). Each segment is a ring of `cap` floats: a
 * request takes the next n floats after the previous one's, or the start
 * when they do not fit before the end; the places follow from the sizes
 * alone, so they are the same on every rank whatever each has completed.
 * Before staging into floats an earlier request used, a rank completes
 * its own requests up to that one and waits until every rank has copied
 * its results out (`gathered`). The first ring (4 MB) is made with the
 * communicator, so that what runs is known from the start; a bucket
 * larger than the ring first completes everything in flight, then every
 * rank makes a larger segment. Segments are reserved with posix_fallocate,
 * so that a full /dev/shm is a clean fallback to MPI, not a SIGBUS
 * (watched barriers around it, no blocking collective). Closing is local:
 * unmap.
 *
 * Used when every rank of the communicator is on this machine
 * (MPI_Comm_split_type, MPI_COMM_TYPE_SHARED), the buffers are host memory
 * (a backend that runs the CPU kernels: cpu, or guard, which faults on any
 * access outside nn_dev_begin/end) and nobody turned it off
 * (nn_mpi_comm_set_shared_memory; NNOPT_ALLREDUCE=mpi in the command line).
 */
#include "dist/mpi_internal.h"
#include "backend/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { HEAD = 64 }; /* bytes of counters at the head of a segment */

typedef struct {
    uint64_t arrived;  /* all-reduces whose values this rank has staged */
    uint64_t reduced;  /* ... whose slice it has summed */
    uint64_t gathered; /* ... whose results it has copied out */
} shm_counts;

/* where a recent request lay in the ring */
enum { RECENT = 64 };
typedef struct {
    uint64_t seq;
    size_t off, n;
} shm_place;

struct mpi_shm {
    MPI_Comm node;        /* the same ranks as world, in the same order */
    int token[2];         /* node rank 0's pid and comm number: the names' stem */
    int gen;              /* segments made so far (names are never reused) */
    char **seg;           /* (size) every rank's mapped segment; NULL before the first */
    size_t bytes;         /* each segment's size */
    size_t cap;           /* floats in the ring */
    uint64_t seq;         /* all-reduces started */
    size_t off;           /* where the last one ended */
    shm_place recent[RECENT]; /* the last RECENT requests' places, by seq % RECENT */
    int enabled;          /* 0: everything goes through MPI (it failed) */
};

static shm_counts *counts(const mpi_shm *s, int r) { return (shm_counts *)s->seg[r]; }

static float *area(const mpi_shm *s, int r, size_t off) {
    return (float *)(s->seg[r] + HEAD) + off;
}

/* slice r of n floats over size ranks: [lo, hi) */
static size_t slice_lo(size_t n, int r, int size) { return n * (size_t)r / (size_t)size; }

static void seg_name(const mpi_shm *s, int rank, int gen, char *name, size_t len) {
    snprintf(name, len, "/nnopt-ar-%d-%d-%d-%d", s->token[0], s->token[1], gen, rank);
}

static void unmap_all(mpi_shm *s, int size) {
    for (int r = 0; s->seg && r < size; r++)
        if (s->seg[r]) munmap(s->seg[r], s->bytes);
    free(s->seg);
    s->seg = NULL;
}

/* Every rank of the node here (under the watchdog). */
static nn_status node_barrier(mpi_impl *m, const char *what) {
    MPI_Request req;
    const int rc = MPI_Ibarrier(m->shm->node, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Ibarrier");
    return watch_wait(m, &req, what);
}

/* ok summed over the node's ranks with MIN, under the watchdog: 1 when
 * every rank says 1. */
static nn_status node_all(mpi_impl *m, int ok, int *all) {
    MPI_Request req;
    const int rc = MPI_Iallreduce(&ok, all, 1, MPI_INT, MPI_MIN, m->shm->node, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Iallreduce");
    return watch_wait(m, &req, "shared-memory set-up");
}

/* Rings of at least n floats on every rank: the old ones (all
 * their requests complete on every rank: the barrier) unmapped, new ones
 * made, mapped and unlinked. Where any rank cannot, every rank turns the
 * shared memory off (the caller falls back to MPI) and says why on stderr. */
static nn_status grow(mpi_impl *m, size_t n) {
    mpi_shm *s = m->shm;
    nn_status st = node_barrier(m, "shared-memory all-reduce (set-up)");
    if (st) return st;
    unmap_all(s, m->size);
    /* room for two of the largest bucket yet, and at least 4 MB */
    size_t cap = 2 * n > s->cap ? 2 * n : s->cap;
    if (cap < ((size_t)1 << 20)) cap = (size_t)1 << 20;
    const long page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    s->bytes = (HEAD + cap * sizeof(float) + (size_t)page - 1) / (size_t)page * (size_t)page;
    s->cap = cap;
    s->off = 0;
    memset(s->recent, 0, sizeof s->recent);
    s->gen++;
    char name[96], why[160] = "";
    seg_name(s, m->rank, s->gen, name, sizeof name);
    int ok = 0;
    const int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        snprintf(why, sizeof why, "shm_open %s: %s", name, strerror(errno));
    } else {
        const int e = posix_fallocate(fd, 0, (off_t)s->bytes);
        if (e)
            snprintf(why, sizeof why, "%s: cannot reserve %zu bytes: %s", name, s->bytes,
                     strerror(e));
        else
            ok = 1;
        close(fd);
    }
    int all = 0;
    if ((st = node_all(m, ok, &all))) return st;
    s->seg = all ? calloc((size_t)m->size, sizeof *s->seg) : NULL;
    ok = s->seg != NULL;
    for (int r = 0; ok && r < m->size; r++) { /* the segments exist on every rank now */
        char peer[96];
        seg_name(s, r, s->gen, peer, sizeof peer);
        const int pfd = shm_open(peer, O_RDWR, 0);
        void *p = pfd < 0 ? MAP_FAILED
                          : mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
        if (pfd >= 0) close(pfd);
        if (p == MAP_FAILED) {
            snprintf(why, sizeof why, "cannot map %s: %s", peer, strerror(errno));
            ok = 0;
        } else {
            s->seg[r] = p;
        }
    }
    if (!s->seg && all) snprintf(why, sizeof why, "out of memory");
    if (ok) { /* the others compare with these: set before the barrier */
        __atomic_store_n(&counts(s, m->rank)->arrived, s->seq, __ATOMIC_RELEASE);
        __atomic_store_n(&counts(s, m->rank)->reduced, s->seq, __ATOMIC_RELEASE);
        __atomic_store_n(&counts(s, m->rank)->gathered, s->seq, __ATOMIC_RELEASE);
    }
    int mapped = 0;
    st = node_all(m, ok, &mapped); /* every rank has mapped every segment */
    shm_unlink(name);
    if (st) return st;
    if (!mapped) {
        unmap_all(s, m->size);
        s->cap = 0;
        s->enabled = 0;
        if (why[0])
            fprintf(stderr, "nnopt: rank %d: shared-memory all-reduce off, MPI instead (%s)\n",
                    m->rank, why);
    }
    return NN_OK;
}

nn_status shm_open_node(mpi_impl *m) {
    m->shm = NULL;
    if (m->size < 2) return NN_OK;
    MPI_Comm node;
    int rc = MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS) return mpi_fail(m, rc, "Comm_split_type");
    int node_size = 0;
    MPI_Comm_size(node, &node_size);
    int all_here = node_size == m->size, every = 0;
    /* every rank must agree (one machine's ranks may all be here while
     * another's are not) */
    rc = MPI_Allreduce(&all_here, &every, 1, MPI_INT, MPI_MIN, m->world);
    if (rc != MPI_SUCCESS || !every) {
        MPI_Comm_free(&node);
        return rc == MPI_SUCCESS ? NN_OK : mpi_fail(m, rc, "Allreduce");
    }
    static int comms_made; /* this process's, for names of its own */
    mpi_shm *s = calloc(1, sizeof *s);
    if (!s) {
        MPI_Comm_free(&node);
        return nn_ctx_fail(m->ctx, NN_ENOMEM, "out of memory for the shared-memory all-reduce");
    }
    s->node = node;
    s->enabled = 1;
    s->token[0] = (int)getpid();
    s->token[1] = comms_made++;
    rc = MPI_Bcast(s->token, 2, MPI_INT, 0, node);
    if (rc != MPI_SUCCESS) {
        MPI_Comm_free(&node);
        free(s);
        return mpi_fail(m, rc, "Bcast");
    }
    m->shm = s;
    /* the first ring now, so that rank 0's first line says what runs (a
     * full /dev/shm turns it off here, saying so) */
    nn_status st = grow(m, 0);
    if (st) shm_close(m);
    return st;
}

enum { ARRIVED, REDUCED, GATHERED };

/* every rank's counter `which` at seq or past it */
static int all_counts_at(const mpi_impl *m, int which, uint64_t seq) {
    for (int r = 0; r < m->size; r++) {
        const shm_counts *c = counts(m->shm, r);
        const uint64_t *v = which == ARRIVED ? &c->arrived
                            : which == REDUCED ? &c->reduced : &c->gathered;
        if (__atomic_load_n(v, __ATOMIC_ACQUIRE) < seq) return 0;
    }
    return 1;
}

/* Sums this rank's slice of p over the ranks, in rank order, divided by the
 * ranks; into the buffer and the rank's own slice of its segment. */
static void sum_slice(mpi_impl *m, mpi_pending *p) {
    const mpi_shm *s = m->shm;
    const int me = m->rank, P = m->size;
    const size_t lo = slice_lo(p->n, me, P), len = slice_lo(p->n, me + 1, P) - lo;
    const float inv = 1.0f / (float)P;
    float *out = area(s, me, p->off + lo), *buf = p->buf + lo;
    const float *src[2];
    for (int r = 0; r < 2; r++) src[r] = r == me ? buf : area(s, r, p->off + lo);
    if (P == 2) {
        for (size_t i = 0; i < len; i++) {
            const float v = (src[0][i] + src[1][i]) * inv;
            out[i] = v;
            buf[i] = v;
        }
        return;
    }
    for (size_t i = 0; i < len; i++) out[i] = src[0][i] + src[1][i];
    for (int r = 2; r < P; r++) {
        const float *x = r == me ? buf : area(s, r, p->off + lo);
        for (size_t i = 0; i < len; i++) out[i] += x[i];
    }
    for (size_t i = 0; i < len; i++) {
        const float v = out[i] * inv;
        out[i] = v;
        buf[i] = v;
    }
}

/* Moves p on as far as it goes without waiting: 1 once complete. */
static int advance(mpi_impl *m, mpi_pending *p) {
    const nn_backend *be = nn_ctx_backend_of(m->ctx);
    if (p->stage == 0) {
        if (!all_counts_at(m, ARRIVED, p->seq)) return 0;
        nn_dev_begin(be);
        sum_slice(m, p);
        nn_dev_end(be);
        __atomic_store_n(&counts(m->shm, m->rank)->reduced, p->seq, __ATOMIC_RELEASE);
        p->stage = 1;
    }
    if (p->stage == 1) {
        if (!all_counts_at(m, REDUCED, p->seq)) return 0;
        nn_dev_begin(be);
        for (int r = 0; r < m->size; r++) {
            if (r == m->rank) continue;
            const size_t lo = slice_lo(p->n, r, m->size), hi = slice_lo(p->n, r + 1, m->size);
            memcpy(p->buf + lo, area(m->shm, r, p->off + lo), (hi - lo) * sizeof(float));
        }
        nn_dev_end(be);
        __atomic_store_n(&counts(m->shm, m->rank)->gathered, p->seq, __ATOMIC_RELEASE);
        p->stage = 2;
    }
    return 1;
}

typedef struct {
    mpi_impl *m;
    mpi_pending *p;
} advance_arg;

static int advance_ready(void *arg) {
    const advance_arg *a = arg;
    return advance(a->m, a->p);
}

/* the oldest shared-memory request not complete, NULL when none (a
 * complete one keeps its slot until the caller waits for it) */
static mpi_pending *oldest(mpi_impl *m) {
    mpi_pending *best = NULL;
    for (int i = 0; i < m->cap; i++) {
        mpi_pending *p = &m->pending[i];
        if (p->in_use && p->shm && p->stage < 2 && (!best || p->seq < best->seq)) best = p;
    }
    return best;
}

/* Completes the oldest request (under the watchdog). */
static nn_status complete_oldest(mpi_impl *m) {
    advance_arg a = {m, oldest(m)};
    return watch_until(m, advance_ready, &a, "gradient all-reduce (shared memory)");
}

typedef struct {
    const mpi_impl *m;
    uint64_t seq;
} gathered_arg;

static int gathered_ready(void *arg) {
    const gathered_arg *a = arg;
    return all_counts_at(a->m, GATHERED, a->seq);
}

/* The ring's floats [off, off + n) free on every rank: the requests that
 * used them complete here and gathered everywhere. */
static nn_status free_place(mpi_impl *m, size_t off, size_t n) {
    const mpi_shm *s = m->shm;
    /* the requests before the last RECENT: their places are forgotten, so
     * assume they overlap (long complete in practice) */
    uint64_t last = s->seq > RECENT ? s->seq - RECENT : 0;
    for (int i = 0; i < RECENT; i++) {
        const shm_place *q = &s->recent[i];
        if (q->seq > last && q->off < off + n && off < q->off + q->n) last = q->seq;
    }
    if (!last) return NN_OK;
    nn_status st = NN_OK;
    for (mpi_pending *p; !st && (p = oldest(m)) && p->seq <= last;) st = complete_oldest(m);
    if (st) return st;
    gathered_arg a = {m, last};
    return watch_until(m, gathered_ready, &a, "gradient all-reduce (shared memory)");
}

nn_status shm_start(mpi_impl *m, int slot, float *buf, size_t n) {
    mpi_shm *s = m->shm;
    nn_status st;
    if (n > s->cap) {
        while (oldest(m))
            if ((st = complete_oldest(m))) return st;
        if ((st = grow(m, n))) return st;
        if (!s->enabled) return NN_EUNSUPPORTED; /* mpi.c goes on with MPI */
    }
    const size_t off = s->off + n <= s->cap ? s->off : 0;
    if ((st = free_place(m, off, n))) return st;
    mpi_pending *p = &m->pending[slot];
    *p = (mpi_pending){.req = MPI_REQUEST_NULL, .buf = buf, .n = n, .divide = 1, .in_use = 1,
                       .shm = 1, .seq = ++s->seq, .off = off};
    s->off = off + n;
    s->recent[p->seq % RECENT] = (shm_place){p->seq, off, n};
    const nn_backend *be = nn_ctx_backend_of(m->ctx);
    nn_dev_begin(be);
    for (int r = 0; r < m->size; r++) {
        if (r == m->rank) continue;
        const size_t lo = slice_lo(n, r, m->size), hi = slice_lo(n, r + 1, m->size);
        memcpy(area(s, m->rank, off + lo), buf + lo, (hi - lo) * sizeof(float));
    }
    nn_dev_end(be);
    __atomic_store_n(&counts(s, m->rank)->arrived, p->seq, __ATOMIC_RELEASE);
    return NN_OK;
}

nn_status shm_wait(mpi_impl *m, int slot) {
    const uint64_t seq = m->pending[slot].seq;
    nn_status st = NN_OK;
    for (mpi_pending *p; !st && (p = oldest(m)) && p->seq <= seq;) st = complete_oldest(m);
    m->pending[slot].in_use = 0;
    m->pending[slot].shm = 0;
    return st;
}

void shm_progress(mpi_impl *m) {
    for (mpi_pending *p; (p = oldest(m)) && advance(m, p);) {
    }
}

int shm_usable(const mpi_impl *m) {
    /* memory the CPU kernels run on: host memory (inside the backend's
     * window, as every access here is: the guard backend checks it) */
    return m->shm && m->shm->enabled && nn_ctx_backend_of(m->ctx)->kernels == NN_KERNELS_CPU;
}

void shm_close(mpi_impl *m) {
    mpi_shm *s = m->shm;
    if (!s) return;
    unmap_all(s, m->size);
    MPI_Comm_free(&s->node);
    free(s);
    m->shm = NULL;
}
