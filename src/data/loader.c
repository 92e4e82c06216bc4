/*
 * loader.c - background batch loader: one worker thread gathers and augments
 * the next batch (nn_dataset_gather_augmented) while the caller trains on the
 * current one. Two buffers: the caller reads one, the worker fills the other.
 *
 * Hand-off, all under one mutex:
 *  - the caller posts a job (batch index, buffer) and signals `work`;
 *  - the worker takes it (job_batch = -1, busy = 1), fills the buffer without
 *    the lock, then records ready[buf] = batch and signals `done`;
 *  - nn_loader_next waits for ready[cur_buf] == cur, hands that buffer out and
 *    posts batch cur + 1 into the other buffer, which the caller gave back by
 *    calling again (pointers are valid only until the next call).
 * nn_loader_start and nn_loader_free first wait until the worker is idle, so
 * the worker never reads a perm being rewritten or a freed buffer.
 */
#include "nn_internal.h"

#include <errno.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

struct nn_loader {
    nn_ctx *ctx;              /* for errors from nn_loader_start; never used by the worker */
    const nn_dataset *d;
    int batch;
    nn_normalize norm;
    int has_norm;
    nn_augment aug;
    uint64_t seed;

    float *x[2];              /* each (batch, c, h, w) */
    int32_t *y[2];            /* each (batch) */
    int64_t *perm;            /* (n) the epoch's sample order */
    int64_t n;                /* samples in the epoch: d->n, or a rank's share */
    int64_t epoch;
    int64_t nbatches;         /* ceil(n / batch) */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work;      /* a job was posted, or quit */
    pthread_cond_t done;      /* the worker finished a job */

    /* Shared state, guarded by mu. */
    int64_t job_batch;        /* batch to prepare, -1 = none posted */
    int job_buf;
    int busy;                 /* worker is filling a buffer outside the lock */
    int quit;
    int64_t ready[2];         /* batch held by each buffer, -1 = none */
    int count[2];             /* samples in that batch */
    int64_t cur;              /* next batch nn_loader_next hands out */
    int cur_buf;              /* buffer that batch is (being) prepared in */
    int sync;                 /* no worker: batches are prepared in nn_loader_next */
};

static void *worker_main(void *arg) {
    nn_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && l->job_batch < 0) pthread_cond_wait(&l->work, &l->mu);
        if (l->quit) break;
        int64_t b = l->job_batch;
        int buf = l->job_buf;
        int64_t epoch = l->epoch;
        l->job_batch = -1;
        l->busy = 1;
        pthread_mutex_unlock(&l->mu);

        int64_t first = b * l->batch;
        int64_t n = l->n - first < l->batch ? l->n - first : l->batch;
        nn_dataset_gather_augmented(l->d, l->perm + first, n, l->has_norm ? &l->norm : NULL,
                                    &l->aug, l->seed, epoch, l->x[buf], l->y[buf]);

        pthread_mutex_lock(&l->mu);
        l->busy = 0;
        l->ready[buf] = b;
        l->count[buf] = (int)n;
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Cancels a job not yet taken and waits for one in progress. Caller holds mu. */
static void wait_idle(nn_loader *l) {
    l->job_batch = -1;
    while (l->busy) pthread_cond_wait(&l->done, &l->mu);
}

/* Frees what nn_loader_new allocated; the thread must not be running. */
static void release(nn_loader *l) {
    nn_free_aligned(l->x[0]);
    nn_free_aligned(l->x[1]);
    free(l->y[0]);
    free(l->y[1]);
    free(l->perm);
    free(l);
}

nn_status nn_loader_new(nn_ctx *ctx, const nn_dataset *d, int batch, const nn_normalize *norm,
                        const nn_augment *aug, uint64_t seed, nn_loader **out) {
    NN_ASSERT(out != NULL);
    *out = NULL;
    if (!d || d->n <= 0 || !d->pixels || !d->labels || d->c <= 0 || d->h <= 0 || d->w <= 0)
        return nn_ctx_fail(ctx, NN_EINVAL, "loader: expected a non-empty data set");
    if (batch <= 0)
        return nn_ctx_fail(ctx, NN_EINVAL, "loader: batch size %d: expected > 0", batch);
    if (aug && (aug->crop_pad < 0 || aug->crop_pad > d->h || aug->crop_pad > d->w ||
                !(aug->erase_prob >= 0.0f && aug->erase_prob <= 1.0f)))
        return nn_ctx_fail(ctx, NN_EINVAL,
                           "loader: augmentation crop_pad %d, erase_prob %g: expected "
                           "0..%d and 0..1",
                           aug->crop_pad, (double)aug->erase_prob, d->h < d->w ? d->h : d->w);

    nn_loader *l = calloc(1, sizeof *l);
    if (!l) return nn_ctx_fail(ctx, NN_ENOMEM, "loader: out of memory");
    l->ctx = ctx;
    l->d = d;
    l->batch = batch;
    if (norm) {
        l->norm = *norm;
        l->has_norm = 1;
    }
    if (aug) l->aug = *aug;
    l->seed = seed;
    l->job_batch = -1;
    /* With no core to spare, a worker thread only steals time from the
     * compute threads (which spin at their barriers): prepare batches in the
     * caller instead, unless the context forces a mode. The results are
     * identical either way. */
    const nn_loader_mode mode = nn_ctx_loader_mode(ctx);
    l->sync = mode == NN_LOADER_SYNC ||
              (mode == NN_LOADER_AUTO && nn_ctx_threads(ctx) >= omp_get_num_procs());
    l->ready[0] = l->ready[1] = -1;

    size_t sb = (size_t)d->c * d->h * d->w;
    for (int k = 0; k < 2; k++) {
        l->x[k] = nn_alloc_aligned((size_t)batch * sb * sizeof(float));
        l->y[k] = malloc((size_t)batch * sizeof(int32_t));
    }
    l->perm = malloc((size_t)d->n * sizeof *l->perm);
    if (!l->x[0] || !l->x[1] || !l->y[0] || !l->y[1] || !l->perm) {
        release(l);
        return nn_ctx_fail(ctx, NN_ENOMEM,
                           "loader: out of memory for two batches of %d samples (%zu floats each)",
                           batch, sb);
    }

    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        release(l);
        return nn_ctx_fail(ctx, NN_ENOMEM, "loader: cannot create a mutex");
    }
    if (pthread_cond_init(&l->work, NULL) != 0) {
        pthread_mutex_destroy(&l->mu);
        release(l);
        return nn_ctx_fail(ctx, NN_ENOMEM, "loader: cannot create a condition variable");
    }
    if (pthread_cond_init(&l->done, NULL) != 0) {
        pthread_cond_destroy(&l->work);
        pthread_mutex_destroy(&l->mu);
        release(l);
        return nn_ctx_fail(ctx, NN_ENOMEM, "loader: cannot create a condition variable");
    }
    int rc = pthread_create(&l->thread, NULL, worker_main, l);
    if (rc != 0) {
        pthread_cond_destroy(&l->done);
        pthread_cond_destroy(&l->work);
        pthread_mutex_destroy(&l->mu);
        release(l);
        return nn_ctx_fail(ctx, rc == EAGAIN ? NN_ENOMEM : NN_EUNSUPPORTED,
                           "loader: cannot start the worker thread: %s", strerror(rc));
    }
    *out = l;
    return NN_OK;
}

nn_status nn_loader_start(nn_loader *l, int64_t epoch, const int64_t *perm, int64_t first_batch) {
    return nn_loader_start_n(l, epoch, perm, l->d->n, first_batch);
}

nn_status nn_loader_start_n(nn_loader *l, int64_t epoch, const int64_t *perm, int64_t n,
                            int64_t first_batch) {
    NN_ASSERT(l != NULL && perm != NULL);
    if (n < 0 || n > l->d->n)
        return nn_ctx_fail(l->ctx, NN_EINVAL, "loader: %lld samples in the epoch: expected 0..%lld",
                           (long long)n, (long long)l->d->n);
    const int64_t nbatches = (n + l->batch - 1) / l->batch;
    if (first_batch < 0 || first_batch > nbatches)
        return nn_ctx_fail(l->ctx, NN_EINVAL, "loader: first batch %lld: expected 0..%lld",
                           (long long)first_batch, (long long)nbatches);
    for (int64_t i = 0; i < n; i++)
        if (perm[i] < 0 || perm[i] >= l->d->n)
            return nn_ctx_fail(l->ctx, NN_EINVAL,
                               "loader: perm[%lld] = %lld: expected a sample index 0..%lld",
                               (long long)i, (long long)perm[i], (long long)(l->d->n - 1));

    pthread_mutex_lock(&l->mu);
    wait_idle(l);
    memcpy(l->perm, perm, (size_t)n * sizeof *perm);
    l->n = n;
    l->epoch = epoch;
    l->nbatches = nbatches;
    l->ready[0] = l->ready[1] = -1;
    l->cur = first_batch;
    l->cur_buf = 0;
    if (first_batch < nbatches && !l->sync) {
        l->job_batch = first_batch;
        l->job_buf = 0;
        pthread_cond_signal(&l->work);
    }
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

int nn_loader_next(nn_loader *l, const float **x, const int32_t **y) {
    NN_ASSERT(l != NULL && x != NULL && y != NULL);
    if (l->sync) {
        if (l->cur >= l->nbatches) {
            *x = NULL;
            *y = NULL;
            return 0;
        }
        int64_t first = l->cur * l->batch;
        int64_t n = l->n - first < l->batch ? l->n - first : l->batch;
        nn_dataset_gather_augmented(l->d, l->perm + first, n, l->has_norm ? &l->norm : NULL,
                                    &l->aug, l->seed, l->epoch, l->x[0], l->y[0]);
        l->cur++;
        *x = l->x[0];
        *y = l->y[0];
        return (int)n;
    }
    pthread_mutex_lock(&l->mu);
    if (l->cur >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        *x = NULL;
        *y = NULL;
        return 0;
    }
    int buf = l->cur_buf;
    while (l->ready[buf] != l->cur) pthread_cond_wait(&l->done, &l->mu);
    int count = l->count[buf];
    *x = l->x[buf];
    *y = l->y[buf];
    l->cur++;
    l->cur_buf = 1 - buf;
    if (l->cur < l->nbatches) {
        /* The other buffer held the batch the caller just gave back. */
        l->ready[1 - buf] = -1;
        l->job_batch = l->cur;
        l->job_buf = 1 - buf;
        pthread_cond_signal(&l->work);
    }
    pthread_mutex_unlock(&l->mu);
    return count;
}

void nn_loader_free(nn_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    wait_idle(l);
    l->quit = 1;
    pthread_cond_signal(&l->work);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->done);
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
    release(l);
}
