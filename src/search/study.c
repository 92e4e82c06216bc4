/*
 * study.c - the study API of search.h: a search's trials kept in a database,
 * so that a search killed at any moment loses no finished trial and several
 * workers can share it. The path chooses the store (study_internal.h): a
 * postgresql:// or postgres:// URI is a PostgreSQL database (study_pg.c, for
 * workers on several machines), anything else one SQLite file (Debian's
 * libsqlite3; this file: processes, or machines sharing the file system).
 * Both hold the same three tables:
 *
 *   settings(key, value)        the space file's text, the sampler, ...
 *   trials(id, state, config, bracket, <one column per metric>, test_accuracy,
 *          host, pid, started, finished, heartbeat, error)
 *   epochs(trial, epoch, val_accuracy, val_loss, seconds)
 *
 * config is a JSON object of the trial's active parameters as text
 * ({"optimizer.lr": "0.0123", "model.W": "16"}), readable by anyone with
 * sqlite3 or psql. A worker proposes and inserts a trial inside one
 * transaction that holds out the other workers (SQLite: BEGIN IMMEDIATE), so
 * two workers never draw from the same history.
 */
#include "search/study_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- the SQLite store --- */

static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS trials(id INTEGER PRIMARY KEY, state TEXT NOT NULL,"
    " config TEXT NOT NULL, bracket INTEGER NOT NULL DEFAULT 0,"
    " val_accuracy REAL, val_loss REAL, latency_ms REAL, latency_batch_ms REAL,"
    " train_seconds REAL, params REAL, flops REAL, memory_mb REAL, test_accuracy REAL,"
    " host TEXT, pid INTEGER, started REAL, finished REAL, heartbeat REAL, error TEXT);"
    "CREATE TABLE IF NOT EXISTS epochs(trial INTEGER NOT NULL, epoch INTEGER NOT NULL,"
    " val_accuracy REAL, val_loss REAL, seconds REAL, PRIMARY KEY(trial, epoch));";

static nn_status db_fail(nn_study *s, const char *what) {
    return nn_ctx_fail(s->ctx, NN_EIO, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static nn_status exec(nn_study *s, const char *sql, const char *what) {
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        nn_status st = nn_ctx_fail(s->ctx, NN_EIO, "%s: %s: %s", s->path, what,
                                   err ? err : sqlite3_errmsg(s->db));
        sqlite3_free(err);
        return st;
    }
    return NN_OK;
}

static nn_status sq_set(nn_study *s, const char *key, const char *value) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", -1,
                           &q, NULL) != SQLITE_OK)
        return db_fail(s, "cannot write a setting");
    sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? NN_OK : db_fail(s, "cannot write a setting");
}

static nn_status sq_get(nn_study *s, const char *key, char *buf, size_t size) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM settings WHERE key = ?", -1, &q, NULL) !=
        SQLITE_OK)
        return db_fail(s, "cannot read the settings (is it a study?)");
    sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) snprintf(buf, size, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? NN_OK : db_fail(s, "cannot read the settings");
}

static nn_status sq_connect(nn_study *s, const char *path, int readonly) {
    if (readonly && access(path, F_OK) != 0)
        return nn_ctx_fail(s->ctx, NN_EIO, "%s: no such study: %s", path, strerror(errno));
    sqlite3 *db = NULL;
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        nn_status st = nn_ctx_fail(s->ctx, NN_EIO, "%s: cannot open the study: %s", path,
                                   db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return st;
    }
    s->db = db;
    sqlite3_busy_timeout(db, 60000);
    /* a database that is not SQLite fails on its first read: say so here */
    return exec(s, "SELECT count(*) FROM sqlite_master", "not a study (SQLite) file");
}

static void sq_close(nn_study *s) { sqlite3_close(s->db); }

static nn_status sq_create(nn_study *s) {
    nn_status st = exec(s, "BEGIN IMMEDIATE", "cannot lock the study");
    return st ? st : exec(s, SCHEMA, "cannot create the study's tables");
}

static nn_status sq_begin(nn_study *s) { return exec(s, "BEGIN IMMEDIATE", "cannot lock the study"); }
static nn_status sq_commit(nn_study *s) { return exec(s, "COMMIT", "cannot commit to the study"); }
static void sq_rollback(nn_study *s) { sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); }

static double col_num(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

static void col_text(sqlite3_stmt *q, int i, char *buf, size_t size) {
    const unsigned char *t = sqlite3_column_text(q, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

static nn_status load_epochs(nn_study *s, trial *t, int n) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT trial, epoch, val_accuracy, val_loss, seconds FROM epochs "
                           "ORDER BY trial, epoch",
                           -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, "cannot read the epochs");
    int rc, k = 0;
    nn_status st = NN_OK;
    while (!st && (rc = sqlite3_step(q)) == SQLITE_ROW)
        st = store_add_epoch(s, t, n, &k, sqlite3_column_int64(q, 0), sqlite3_column_int(q, 1),
                             col_num(q, 2), col_num(q, 3), col_num(q, 4));
    sqlite3_finalize(q);
    if (st) return st;
    return rc == SQLITE_DONE ? NN_OK : db_fail(s, "cannot read the epochs");
}

static nn_status sq_load(nn_study *s, trial **out, int *n) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, state, config, bracket, val_accuracy, val_loss, latency_ms,"
                           " latency_batch_ms, train_seconds, params, flops, memory_mb,"
                           " test_accuracy, host, pid, started, finished, heartbeat, error"
                           " FROM trials ORDER BY id",
                           -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, "cannot read the trials");
    trial *t = NULL;
    int count = 0, cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        trial *tr = store_add_trial(s, &t, &count, &cap);
        if (!tr) {
            sqlite3_finalize(q);
            study_trials_free(t, count);
            return NN_ENOMEM;
        }
        tr->id = sqlite3_column_int64(q, 0);
        char state[32];
        col_text(q, 1, state, sizeof state);
        store_trial_config(s, tr, state, (const char *)sqlite3_column_text(q, 2));
        tr->bracket = sqlite3_column_int(q, 3);
        for (int m = 0; m < M_COUNT; m++) tr->metric[m] = col_num(q, 4 + m);
        tr->test_accuracy = col_num(q, 12);
        col_text(q, 13, tr->host, sizeof tr->host);
        tr->pid = (long)sqlite3_column_int64(q, 14);
        tr->started = col_num(q, 15);
        tr->finished = col_num(q, 16);
        tr->heartbeat = col_num(q, 17);
        col_text(q, 18, tr->error, sizeof tr->error);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        study_trials_free(t, count);
        return db_fail(s, "cannot read the trials");
    }
    nn_status st = load_epochs(s, t, count);
    if (st) {
        study_trials_free(t, count);
        return st;
    }
    *out = t;
    *n = count;
    return NN_OK;
}

static nn_status sq_insert(nn_study *s, const char *config, int bracket, double now, int64_t *id) {
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO trials(state, config, bracket, host, pid, started,"
                                " heartbeat) VALUES('running', ?, ?, ?, ?, ?, ?)",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, config, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(q, 2, bracket);
        sqlite3_bind_text(q, 3, s->host, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(q, 4, (sqlite3_int64)getpid());
        sqlite3_bind_double(q, 5, now);
        sqlite3_bind_double(q, 6, now);
        rc = sqlite3_step(q);
        sqlite3_finalize(q);
    }
    if (rc != SQLITE_DONE) return db_fail(s, "cannot add a trial");
    *id = sqlite3_last_insert_rowid(s->db);
    return NN_OK;
}

/* Runs one UPDATE of trial id with its own bindings (bind sets them). */
static nn_status update(nn_study *s, const char *sql, int64_t id, void (*bind)(sqlite3_stmt *, const void *),
                        const void *arg, const char *what) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) return db_fail(s, what);
    if (bind) bind(q, arg);
    sqlite3_bind_int64(q, sqlite3_bind_parameter_index(q, ":id"), id);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? NN_OK : db_fail(s, what);
}

typedef struct {
    const nn_study *s;
    double now;
} owner_row;

static void bind_owner(sqlite3_stmt *q, const void *arg) {
    const owner_row *r = arg;
    sqlite3_bind_text(q, sqlite3_bind_parameter_index(q, ":host"), r->s->host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, sqlite3_bind_parameter_index(q, ":pid"), (sqlite3_int64)getpid());
    sqlite3_bind_double(q, sqlite3_bind_parameter_index(q, ":now"), r->now);
}

static nn_status sq_claim(nn_study *s, int64_t id, double now) {
    owner_row r = {s, now};
    return update(s,
                  "UPDATE trials SET state = 'running', host = :host, pid = :pid, heartbeat = :now,"
                  " error = NULL WHERE id = :id",
                  id, bind_owner, &r, "cannot claim a trial");
}

typedef struct {
    int epoch;
    double acc, loss, seconds;
} epoch_row;

static void bind_epoch(sqlite3_stmt *q, const void *arg) {
    const epoch_row *r = arg;
    sqlite3_bind_int(q, 1, r->epoch);
    if (isfinite(r->acc)) sqlite3_bind_double(q, 2, r->acc);
    if (isfinite(r->loss)) sqlite3_bind_double(q, 3, r->loss);
    sqlite3_bind_double(q, 4, r->seconds);
}

static nn_status sq_epoch(nn_study *s, int64_t id, int epoch, double val_accuracy, double val_loss,
                          double seconds, double now) {
    epoch_row r = {epoch, val_accuracy, val_loss, seconds};
    nn_status st = update(s,
                          "INSERT OR REPLACE INTO epochs(epoch, val_accuracy, val_loss, seconds,"
                          " trial) VALUES(?1, ?2, ?3, ?4, :id)",
                          id, bind_epoch, &r, "cannot record an epoch");
    owner_row o = {s, now};
    if (!st) st = update(s, "UPDATE trials SET heartbeat = :now WHERE id = :id", id, bind_owner, &o,
                         "cannot record an epoch");
    return st;
}

static void bind_metrics(sqlite3_stmt *q, const void *arg) {
    const double *m = arg;
    for (int i = 0; i < M_COUNT; i++)
        if (isfinite(m[i])) sqlite3_bind_double(q, i + 1, m[i]);
}

static nn_status sq_metrics(nn_study *s, int64_t id, const double *metric) {
    return update(s,
                  "UPDATE trials SET val_accuracy = ?1, val_loss = ?2, latency_ms = ?3,"
                  " latency_batch_ms = ?4, train_seconds = ?5, params = ?6, flops = ?7,"
                  " memory_mb = ?8 WHERE id = :id",
                  id, bind_metrics, metric, "cannot record a trial's metrics");
}

static void bind_double(sqlite3_stmt *q, const void *arg) {
    sqlite3_bind_double(q, 1, *(const double *)arg);
}

static nn_status sq_test_accuracy(nn_study *s, int64_t id, double accuracy) {
    return update(s, "UPDATE trials SET test_accuracy = ?1 WHERE id = :id", id, bind_double,
                  &accuracy, "cannot record a test accuracy");
}

typedef struct {
    const char *state, *error;
    double now;
} finish_row;

static void bind_finish(sqlite3_stmt *q, const void *arg) {
    const finish_row *r = arg;
    sqlite3_bind_text(q, 1, r->state, -1, SQLITE_STATIC);
    if (r->error && *r->error) sqlite3_bind_text(q, 2, r->error, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(q, 3, r->now);
}

static nn_status sq_finish(nn_study *s, int64_t id, const char *state, const char *error,
                           double now) {
    finish_row r = {state, error, now};
    return update(s, "UPDATE trials SET state = ?1, error = ?2, finished = ?3, heartbeat = ?3"
                     " WHERE id = :id",
                  id, bind_finish, &r, "cannot finish a trial");
}

const study_store study_sqlite = {
    .connect = sq_connect, .close = sq_close, .create = sq_create, .begin = sq_begin,
    .commit = sq_commit, .rollback = sq_rollback, .set = sq_set, .get = sq_get, .load = sq_load,
    .insert = sq_insert, .claim = sq_claim, .epoch = sq_epoch, .metrics = sq_metrics,
    .test_accuracy = sq_test_accuracy, .finish = sq_finish,
};

/* --- what the stores share --- */

trial *store_add_trial(nn_study *s, trial **t, int *count, int *cap) {
    if (*count == *cap) {
        int ncap = *cap ? 2 * *cap : 64;
        trial *nt = realloc(*t, (size_t)ncap * sizeof *nt);
        if (!nt) {
            nn_ctx_fail(s->ctx, NN_ENOMEM, "%s: out of memory", s->path);
            return NULL;
        }
        *t = nt;
        *cap = ncap;
    }
    trial *tr = &(*t)[(*count)++];
    memset(tr, 0, sizeof *tr);
    return tr;
}

/* The config JSON back into values; parameters it does not name (or names
 * with a value the space does not have) stay inactive. */
void store_trial_config(nn_study *s, trial *tr, const char *state, const char *config) {
    int sv = trial_state_from_name(state);
    tr->state = sv < 0 ? TRIAL_FAILED : (trial_state)sv;
    const nn_space *sp = s->sp;
    cJSON *root = config ? cJSON_Parse(config) : NULL;
    for (int i = 0; i < sp->num_params; i++) {
        const cJSON *v = root ? cJSON_GetObjectItemCaseSensitive(root, sp->param[i].name) : NULL;
        tr->active[i] = cJSON_IsString(v) && sp_value_parse(&sp->param[i], v->valuestring,
                                                            &tr->value[i]) == 0;
        if (!tr->active[i]) tr->value[i] = 0;
    }
    cJSON_Delete(root);
}

nn_status store_add_epoch(nn_study *s, trial *t, int n, int *k, int64_t id, int epoch,
                          double val_accuracy, double val_loss, double seconds) {
    while (*k < n && t[*k].id < id) (*k)++;
    if (*k == n || t[*k].id != id || epoch < 1 || epoch > 1000000) return NN_OK;
    trial *tr = &t[*k];
    if (epoch > tr->epochs) {
        size_t bytes = (size_t)epoch * sizeof(double);
        double *a = realloc(tr->val_accuracy, bytes), *b = a ? realloc(tr->val_loss, bytes) : NULL,
               *c = b ? realloc(tr->epoch_seconds, bytes) : NULL;
        if (a) tr->val_accuracy = a;
        if (b) tr->val_loss = b;
        if (!c) return nn_ctx_fail(s->ctx, NN_ENOMEM, "%s: out of memory", s->path);
        tr->epoch_seconds = c;
        for (int e = tr->epochs; e < epoch; e++)
            tr->val_accuracy[e] = tr->val_loss[e] = tr->epoch_seconds[e] = NAN;
        tr->epochs = epoch;
    }
    tr->val_accuracy[epoch - 1] = val_accuracy;
    tr->val_loss[epoch - 1] = val_loss;
    tr->epoch_seconds[epoch - 1] = seconds;
    return NN_OK;
}

/* --- the API --- */

static int is_postgres(const char *path) {
    return strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0;
}

/* A URI as messages show it: the password of "user:secret@" and of
 * "password=secret" masked. */
void study_display_path(const char *uri, char *buf, size_t size) {
    const char *auth = strstr(uri, "://"), *at = NULL, *colon = NULL;
    if (auth) {
        auth += 3;
        size_t n = strcspn(auth, "/?");
        for (size_t i = 0; i < n; i++)
            if (auth[i] == '@') at = auth + i;
        colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    }
    size_t o = 0;
    for (const char *p = uri; *p && o + 16 < size;) {
        if (p == colon) {
            o += (size_t)snprintf(buf + o, size - o, ":***");
            p = at;
        } else if (strncmp(p, "password=", 9) == 0 && p > uri && (p[-1] == '?' || p[-1] == '&')) {
            o += (size_t)snprintf(buf + o, size - o, "password=***");
            p += 9 + strcspn(p + 9, "&");
        } else {
            buf[o++] = *p++;
        }
    }
    if (size) buf[o < size ? o : size - 1] = '\0';
}

/* The study's store, connected to path (no tables touched yet). */
static nn_status study_connect(nn_ctx *ctx, const char *path, int readonly, nn_study **out) {
    *out = NULL;
    nn_study *s = calloc(1, sizeof *s);
    if (!s) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    s->ctx = ctx;
    s->store = &study_sqlite;
    snprintf(s->path, sizeof s->path, "%s", path);
    if (is_postgres(path)) {
        study_display_path(path, s->path, sizeof s->path);
#ifdef NN_HAVE_LIBPQ
        s->store = &study_postgres;
#else
        nn_status st = nn_ctx_fail(ctx, NN_EUNSUPPORTED,
                                   "%s: this nnopt was built without PostgreSQL (libpq-dev)", s->path);
        free(s);
        return st;
#endif
    }
    if (gethostname(s->host, sizeof s->host - 1) != 0) strcpy(s->host, "unknown");
    nn_status st = s->store->connect(s, path, readonly);
    if (st) {
        study_close(s);
        return st;
    }
    *out = s;
    return NN_OK;
}

nn_status study_open(nn_ctx *ctx, const char *path, const nn_space *sp, nn_study **out) {
    nn_study *s;
    nn_status st = study_connect(ctx, path, 0, &s);
    if (st) return st;
    s->sp = sp;
    char *have = malloc(1 << 20);
    if (!have) {
        study_close(s);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", s->path);
    }
    /* the schema and the space under one lock: two workers starting at once
     * agree on whichever space was stored first */
    if (!(st = s->store->create(s)) && !(st = study_get(s, "space", have, 1 << 20))) {
        if (!have[0]) {
            if (!(st = study_set(s, "space", sp->text))) st = study_set(s, "space_path", sp->path);
        } else if (strcmp(have, sp->text) != 0) {
            char was[4096];
            study_get(s, "space_path", was, sizeof was);
            st = nn_ctx_fail(ctx, NN_EINVAL,
                             "%s: this study was made with another search space (%s as it was "
                             "then); give a new --study for a changed space",
                             s->path, was[0] ? was : "unknown");
        }
    }
    free(have);
    if (!st) st = s->store->commit(s);
    if (st) {
        s->store->rollback(s);
        study_close(s);
        return st;
    }
    *out = s;
    return NN_OK;
}

nn_status study_open_existing(nn_ctx *ctx, const char *path, nn_study **out, nn_space **space) {
    *out = NULL;
    *space = NULL;
    nn_study *s;
    nn_status st = study_connect(ctx, path, 1, &s);
    if (st) return st;
    char *text = malloc(1 << 20), from[4096];
    if (!text) st = nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", s->path);
    if (!st) st = study_get(s, "space", text, 1 << 20);
    if (!st) st = study_get(s, "space_path", from, sizeof from);
    if (!st && !text[0]) st = nn_ctx_fail(ctx, NN_EFORMAT, "%s: not an nnopt study (no space)", s->path);
    if (!st) {
        /* the space is read as it was, paths resolved against where it was */
        st = sp_parse(ctx, text, from, space);
        if (st) {
            char why[512];
            snprintf(why, sizeof why, "%s", nn_ctx_error(ctx));
            st = nn_ctx_fail(ctx, NN_EFORMAT, "%s: its stored space does not parse: %s", s->path, why);
        }
    }
    free(text);
    /* bounds measured on reference models when the search ran */
    for (int k = 0; !st && k < (*space)->num_constraints; k++) {
        char key[32], value[64];
        snprintf(key, sizeof key, "bound_%d", k);
        if (!study_get(s, key, value, sizeof value) && value[0])
            (*space)->constraint[k].bound = strtod(value, NULL);
    }
    if (st) {
        sp_free(*space);
        *space = NULL;
        study_close(s);
        return st;
    }
    s->sp = *space;
    *out = s;
    return NN_OK;
}

void study_close(nn_study *s) {
    if (!s) return;
    if (s->db) s->store->close(s);
    free(s);
}

nn_status study_trials_dir(nn_ctx *ctx, const char *path, char *buf, size_t size) {
    if (!is_postgres(path)) {
        if (snprintf(buf, size, "%s.trials", path) >= (int)size)
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: study path too long", path);
        return NN_OK;
    }
#ifdef NN_HAVE_LIBPQ
    return study_pg_trials_dir(ctx, path, buf, size);
#else
    (void)buf;
    (void)size;
    char shown[4096];
    study_display_path(path, shown, sizeof shown);
    return nn_ctx_fail(ctx, NN_EUNSUPPORTED,
                       "%s: this nnopt was built without PostgreSQL (libpq-dev)", shown);
#endif
}

nn_status study_set(nn_study *s, const char *key, const char *value) {
    return s->store->set(s, key, value);
}

nn_status study_get(nn_study *s, const char *key, char *buf, size_t size) {
    buf[0] = '\0';
    return s->store->get(s, key, buf, size);
}

nn_status study_begin(nn_study *s) { return s->store->begin(s); }
nn_status study_commit(nn_study *s) { return s->store->commit(s); }
void study_rollback(nn_study *s) { s->store->rollback(s); }

nn_status study_load(nn_study *s, trial **out, int *n) {
    *out = NULL;
    *n = 0;
    return s->store->load(s, out, n);
}

void study_trials_free(trial *t, int n) {
    for (int i = 0; i < n; i++) {
        free(t[i].val_accuracy);
        free(t[i].val_loss);
        free(t[i].epoch_seconds);
    }
    free(t);
}

/* Unix time: heartbeats are compared across processes and machines. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nn_status study_insert(nn_study *s, const double *value, const unsigned char *active, int bracket,
                       int64_t *id) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; root && i < s->sp->num_params; i++) {
        if (!active[i]) continue;
        char text[SP_WORD + 32];
        sp_value_text(&s->sp->param[i], value[i], text, sizeof text);
        if (!cJSON_AddStringToObject(root, s->sp->param[i].name, text)) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    char *json = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return nn_ctx_fail(s->ctx, NN_ENOMEM, "%s: out of memory", s->path);
    nn_status st = s->store->insert(s, json, bracket, now_s(), id);
    cJSON_free(json);
    return st;
}

nn_status study_claim(nn_study *s, int64_t id) { return s->store->claim(s, id, now_s()); }

nn_status study_epoch(nn_study *s, int64_t id, int epoch, double val_accuracy, double val_loss,
                      double seconds) {
    return s->store->epoch(s, id, epoch, val_accuracy, val_loss, seconds, now_s());
}

nn_status study_metrics(nn_study *s, int64_t id, const double *metric) {
    return s->store->metrics(s, id, metric);
}

nn_status study_test_accuracy(nn_study *s, int64_t id, double accuracy) {
    return s->store->test_accuracy(s, id, accuracy);
}

nn_status study_finish(nn_study *s, int64_t id, trial_state state, const char *error) {
    return s->store->finish(s, id, trial_state_name(state), error, now_s());
}

int study_owner_gone(const trial *t, double stale_s) {
    char host[64] = "";
    if (gethostname(host, sizeof host - 1) == 0 && strcmp(host, t->host) == 0 && t->pid > 0) {
        if (t->pid == (long)getpid()) return 0;
        if (kill((pid_t)t->pid, 0) != 0) return errno == ESRCH;
        /* a killed worker nobody has reaped yet is a zombie: gone too */
        char path[64], stat[256] = "";
        snprintf(path, sizeof path, "/proc/%ld/stat", t->pid);
        FILE *f = fopen(path, "r");
        if (!f) return 0;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *close = strrchr(stat, ')'); /* "pid (comm) S ..." */
        return close && close[1] == ' ' && close[2] == 'Z';
    }
    return !(t->heartbeat > 0) || now_s() - t->heartbeat > stale_s;
}

const char *trial_state_name(trial_state s) {
    static const char *const names[] = {"running", "complete", "pruned",
                                        "infeasible", "failed", "stopped"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "failed";
}

int trial_state_from_name(const char *name) {
    for (int s = TRIAL_RUNNING; s <= TRIAL_STOPPED; s++)
        if (strcmp(trial_state_name((trial_state)s), name) == 0) return s;
    return -1;
}
