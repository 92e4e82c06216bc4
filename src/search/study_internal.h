/*
 * study_internal.h - the two stores behind search.h's study_* functions: an
 * SQLite file (study.c) and a PostgreSQL database (study_pg.c, built where
 * libpq is). study.c holds the API, chooses the store from the study's path
 * and keeps what both share (the config JSON, the space check, owners);
 * a store only moves rows in and out of its database.
 */
#ifndef NN_STUDY_INTERNAL_H
#define NN_STUDY_INTERNAL_H

#include "search/search.h"

#include <stddef.h>
#include <stdint.h>

typedef struct study_store study_store;

struct nn_study {
    const study_store *store;
    void *db;           /* sqlite3 * or PGconn *; NULL until connected */
    nn_ctx *ctx;
    const nn_space *sp;
    char path[4096];    /* for messages: the file, or the URI with its password masked */
    char host[64];
};

/* One store. Every function fails through s->ctx with a message that starts
 * with s->path; the trials and epochs tables are the same in both. */
struct study_store {
    /* Connects s->db to path, read-only for `nnopt report`. */
    nn_status (*connect)(nn_study *s, const char *path, int readonly);
    void (*close)(nn_study *s);
    /* study_open's transaction: holds out other workers and creates the
     * tables where they are missing; committed or rolled back below. */
    nn_status (*create)(nn_study *s);
    nn_status (*begin)(nn_study *s);    /* study_begin */
    nn_status (*commit)(nn_study *s);
    void (*rollback)(nn_study *s);
    nn_status (*set)(nn_study *s, const char *key, const char *value);
    nn_status (*get)(nn_study *s, const char *key, char *buf, size_t size);
    /* Every trial in id order (through store_add_trial), then its epochs
     * (store_add_epoch). */
    nn_status (*load)(nn_study *s, trial **out, int *n);
    /* A running trial owned by (s->host, getpid()), started and beating at now. */
    nn_status (*insert)(nn_study *s, const char *config, int bracket, double now, int64_t *id);
    nn_status (*claim)(nn_study *s, int64_t id, double now);
    /* Writes (or replaces) one epoch's row and the trial's heartbeat. */
    nn_status (*epoch)(nn_study *s, int64_t id, int epoch, double val_accuracy, double val_loss,
                       double seconds, double now);
    nn_status (*metrics)(nn_study *s, int64_t id, const double *metric); /* [M_COUNT], NAN: NULL */
    nn_status (*test_accuracy)(nn_study *s, int64_t id, double accuracy);
    nn_status (*finish)(nn_study *s, int64_t id, const char *state, const char *error, double now);
};

extern const study_store study_sqlite;
#ifdef NN_HAVE_LIBPQ
extern const study_store study_postgres;
/* The default trials folder of a PostgreSQL study (docs/search.md). */
nn_status study_pg_trials_dir(nn_ctx *ctx, const char *uri, char *buf, size_t size);
#endif

/* Shared by the stores (study.c). */
/* Appends a zeroed trial to *t (count, capacity grown); NULL after failing. */
trial *store_add_trial(nn_study *s, trial **t, int *count, int *cap);
/* Sets the trial's state from its name (unknown: failed) and its values
 * from the config JSON. */
void store_trial_config(nn_study *s, trial *tr, const char *state, const char *config);
/* Puts one epochs row into the loaded trials t[0..n) (sorted by id; *k is a
 * cursor that only moves forward, rows come sorted by trial, epoch). */
nn_status store_add_epoch(nn_study *s, trial *t, int n, int *k, int64_t id, int epoch,
                          double val_accuracy, double val_loss, double seconds);

#endif /* NN_STUDY_INTERNAL_H */
