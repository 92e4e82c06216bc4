/*
 * study_pg.c - the study in a PostgreSQL database (Debian's libpq), for
 * workers on several machines: the store behind study.c when the study's
 * path is a postgresql:// or postgres:// URI (docs/search.md, "Storage").
 *
 * The tables are SQLite's (study.c) in PostgreSQL's types, in the
 * connection's current schema: one study per database, or per schema when
 * the URI sets search_path (options=-csearch_path%3Dname; the schema is
 * created if missing). study_begin is a transaction that takes
 * LOCK TABLE trials IN SHARE ROW EXCLUSIVE MODE: it conflicts with itself
 * and with every INSERT or UPDATE of trials, so one worker at a time reads
 * the trials, proposes and inserts, whichever machine it runs on. Readers
 * (`nnopt report`) are not held up. Values travel as text: doubles in %.17g,
 * which reads back to the same double.
 */
#include "search/study_internal.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DOUBLE " DOUBLE PRECISION"
static const char *const PG_SCHEMA =
    "CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS trials(id BIGSERIAL PRIMARY KEY, state TEXT NOT NULL,"
    " config TEXT NOT NULL, bracket INTEGER NOT NULL DEFAULT 0,"
    " val_accuracy" DOUBLE ", val_loss" DOUBLE ", latency_ms" DOUBLE ", latency_batch_ms" DOUBLE ","
    " train_seconds" DOUBLE ", params" DOUBLE ", flops" DOUBLE ", memory_mb" DOUBLE ","
    " test_accuracy" DOUBLE ", host TEXT, pid BIGINT, started" DOUBLE ", finished" DOUBLE ","
    " heartbeat" DOUBLE ", error TEXT);"
    "CREATE TABLE IF NOT EXISTS epochs(trial BIGINT NOT NULL, epoch INTEGER NOT NULL,"
    " val_accuracy" DOUBLE ", val_loss" DOUBLE ", seconds" DOUBLE ", PRIMARY KEY(trial, epoch));";

/* Serializes study_open's creation of schemas and tables across the
 * database (two CREATE TABLE IF NOT EXISTS at once can both try). */
#define CREATE_LOCK "7236837105133512052" /* any constant, the same in every nnopt */

static PGconn *pg(nn_study *s) { return s->db; }

/* libpq's message as one line: "connection ... failed: ...\n\tIs the server
 * running ...?\n" joined with spaces. */
static nn_status pg_fail(nn_study *s, const char *what, const char *msg) {
    char line[1024];
    size_t o = 0;
    for (const char *p = msg ? msg : ""; *p && o + 1 < sizeof line; p++) {
        int space = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (space && (o == 0 || line[o - 1] == ' ')) continue;
        line[o++] = space ? ' ' : *p;
    }
    while (o > 0 && line[o - 1] == ' ') o--;
    line[o] = '\0';
    return nn_ctx_fail(s->ctx, NN_EIO, "%s: %s: %s", s->path, what, line);
}

/* A result's error: its primary message ("relation \"trials\" does not
 * exist"), else the connection's. */
static nn_status res_fail(nn_study *s, PGresult *r, const char *what) {
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    nn_status st = pg_fail(s, what, msg ? msg : PQerrorMessage(pg(s)));
    PQclear(r);
    return st;
}

/* Runs sql with n text parameters ($1.., NULL for SQL NULL); the result, or
 * NULL after failing with what. */
static PGresult *run(nn_study *s, const char *sql, int n, const char *const *param,
                     const char *what, nn_status *st) {
    PGresult *r = n ? PQexecParams(pg(s), sql, n, NULL, param, NULL, NULL, 0) : PQexec(pg(s), sql);
    ExecStatusType e = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (e == PGRES_COMMAND_OK || e == PGRES_TUPLES_OK) return r;
    *st = res_fail(s, r, what);
    return NULL;
}

/* run() for statements whose result is not needed. */
static nn_status exec(nn_study *s, const char *sql, int n, const char *const *param,
                      const char *what) {
    nn_status st = NN_OK;
    PQclear(run(s, sql, n, param, what, &st));
    return st;
}

/* Parameter text of a double, NULL (SQL NULL) unless finite. */
static const char *num(char buf[32], double v) {
    if (!isfinite(v)) return NULL;
    snprintf(buf, 32, "%.17g", v);
    return buf;
}

static const char *integer(char buf[32], long long v) {
    snprintf(buf, 32, "%lld", v);
    return buf;
}

static double get_num(const PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? NAN : strtod(PQgetvalue(r, row, col), NULL);
}

static void quiet(void *arg, const char *message) {
    (void)arg; /* NOTICEs such as "relation already exists, skipping" */
    (void)message;
}

static nn_status pg_connect(nn_study *s, const char *uri, int readonly) {
    PGconn *c = PQconnectdb(uri);
    if (!c) return nn_ctx_fail(s->ctx, NN_ENOMEM, "%s: out of memory", s->path);
    s->db = c;
    if (PQstatus(c) != CONNECTION_OK)
        return pg_fail(s, "cannot connect to the study", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    /* as SQLite's busy timeout: a lock that does not come in 60 s is an error */
    return exec(s,
                readonly ? "SET lock_timeout = '60s'; SET default_transaction_read_only = on"
                         : "SET lock_timeout = '60s'",
                0, NULL, "cannot set up the connection");
}

static void pg_close(nn_study *s) { PQfinish(pg(s)); }

static void pg_rollback(nn_study *s) { PQclear(PQexec(pg(s), "ROLLBACK")); }

/* The schema the tables go in: the current one, or the first of search_path
 * created (a study per schema). */
static nn_status ensure_schema(nn_study *s) {
    nn_status st = NN_OK;
    PGresult *r = run(s,
                      "SELECT current_schema(), CASE WHEN current_schema() IS NULL THEN"
                      " (parse_ident(btrim(split_part(current_setting('search_path'), ',', 1))))[1]"
                      " END",
                      0, NULL, "cannot read the search_path", &st);
    if (!r) return st;
    if (PQntuples(r) == 1 && PQgetisnull(r, 0, 0)) {
        const char *name = PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1);
        char *ident = name[0] && strcmp(name, "$user") != 0
                          ? PQescapeIdentifier(pg(s), name, strlen(name)) : NULL;
        if (!ident) {
            st = pg_fail(s, "no schema to create the study in",
                         "set one with options=-csearch_path%3DNAME in the URI");
        } else {
            char sql[512];
            snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", ident);
            PQfreemem(ident);
            st = exec(s, sql, 0, NULL, "cannot create the study's schema");
        }
    }
    PQclear(r);
    return st;
}

static nn_status pg_create(nn_study *s) {
    nn_status st = exec(s, "BEGIN; SELECT pg_advisory_xact_lock(" CREATE_LOCK ")", 0, NULL,
                        "cannot lock the study");
    if (!st) st = ensure_schema(s);
    if (!st) st = exec(s, PG_SCHEMA, 0, NULL, "cannot create the study's tables");
    return st;
}

static nn_status pg_begin(nn_study *s) {
    nn_status st = exec(s, "BEGIN; LOCK TABLE trials IN SHARE ROW EXCLUSIVE MODE", 0, NULL,
                        "cannot lock the study");
    if (st) pg_rollback(s);
    return st;
}

static nn_status pg_commit(nn_study *s) {
    nn_status st = NN_OK;
    PGresult *r = run(s, "COMMIT", 0, NULL, "cannot commit to the study", &st);
    /* COMMIT of a transaction an error aborted answers ROLLBACK */
    if (r && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        st = pg_fail(s, "cannot commit to the study", "the transaction was rolled back");
    PQclear(r);
    return st;
}

static nn_status pg_set(nn_study *s, const char *key, const char *value) {
    const char *p[] = {key, value};
    return exec(s,
                "INSERT INTO settings(key, value) VALUES($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                2, p, "cannot write a setting");
}

static nn_status pg_get(nn_study *s, const char *key, char *buf, size_t size) {
    nn_status st = NN_OK;
    const char *p[] = {key};
    PGresult *r = run(s, "SELECT value FROM settings WHERE key = $1", 1, p,
                      "cannot read the settings (is it a study?)", &st);
    if (!r) return st;
    if (PQntuples(r) == 1) snprintf(buf, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return NN_OK;
}

static nn_status pg_load(nn_study *s, trial **out, int *n) {
    nn_status st = NN_OK;
    PGresult *r = run(s,
                      "SELECT id, state, config, bracket, val_accuracy, val_loss, latency_ms,"
                      " latency_batch_ms, train_seconds, params, flops, memory_mb,"
                      " test_accuracy, host, pid, started, finished, heartbeat, error"
                      " FROM trials ORDER BY id",
                      0, NULL, "cannot read the trials", &st);
    if (!r) return st;
    trial *t = NULL;
    int count = 0, cap = 0, rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        trial *tr = store_add_trial(s, &t, &count, &cap);
        if (!tr) {
            PQclear(r);
            study_trials_free(t, count);
            return NN_ENOMEM;
        }
        tr->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        store_trial_config(s, tr, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
        tr->bracket = atoi(PQgetvalue(r, i, 3));
        for (int m = 0; m < M_COUNT; m++) tr->metric[m] = get_num(r, i, 4 + m);
        tr->test_accuracy = get_num(r, i, 12);
        snprintf(tr->host, sizeof tr->host, "%s", PQgetvalue(r, i, 13));
        tr->pid = atol(PQgetvalue(r, i, 14));
        tr->started = get_num(r, i, 15);
        tr->finished = get_num(r, i, 16);
        tr->heartbeat = get_num(r, i, 17);
        snprintf(tr->error, sizeof tr->error, "%s", PQgetvalue(r, i, 18));
    }
    PQclear(r);
    r = run(s, "SELECT trial, epoch, val_accuracy, val_loss, seconds FROM epochs ORDER BY trial, epoch",
            0, NULL, "cannot read the epochs", &st);
    rows = r ? PQntuples(r) : 0;
    for (int i = 0, k = 0; !st && i < rows; i++)
        st = store_add_epoch(s, t, count, &k, strtoll(PQgetvalue(r, i, 0), NULL, 10),
                             atoi(PQgetvalue(r, i, 1)), get_num(r, i, 2), get_num(r, i, 3),
                             get_num(r, i, 4));
    PQclear(r);
    if (st) {
        study_trials_free(t, count);
        return st;
    }
    *out = t;
    *n = count;
    return NN_OK;
}

static nn_status pg_insert(nn_study *s, const char *config, int bracket, double now, int64_t *id) {
    char b[32], pid[32], t[32];
    const char *p[] = {config, integer(b, bracket), s->host, integer(pid, getpid()), num(t, now)};
    nn_status st = NN_OK;
    PGresult *r = run(s,
                      "INSERT INTO trials(state, config, bracket, host, pid, started, heartbeat)"
                      " VALUES('running', $1, $2, $3, $4, $5, $5) RETURNING id",
                      5, p, "cannot add a trial", &st);
    if (!r) return st;
    *id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return NN_OK;
}

static nn_status pg_claim(nn_study *s, int64_t id, double now) {
    char i[32], pid[32], t[32];
    const char *p[] = {integer(i, id), s->host, integer(pid, getpid()), num(t, now)};
    return exec(s,
                "UPDATE trials SET state = 'running', host = $2, pid = $3, heartbeat = $4,"
                " error = NULL WHERE id = $1",
                4, p, "cannot claim a trial");
}

static nn_status pg_epoch(nn_study *s, int64_t id, int epoch, double val_accuracy,
                          double val_loss, double seconds, double now) {
    char i[32], e[32], a[32], l[32], sec[32], t[32];
    const char *p[] = {integer(i, id), integer(e, epoch), num(a, val_accuracy), num(l, val_loss),
                       num(sec, seconds)};
    nn_status st = exec(s,
                        "INSERT INTO epochs(trial, epoch, val_accuracy, val_loss, seconds)"
                        " VALUES($1, $2, $3, $4, $5) ON CONFLICT (trial, epoch) DO UPDATE SET"
                        " val_accuracy = excluded.val_accuracy, val_loss = excluded.val_loss,"
                        " seconds = excluded.seconds",
                        5, p, "cannot record an epoch");
    const char *h[] = {p[0], num(t, now)};
    if (!st)
        st = exec(s, "UPDATE trials SET heartbeat = $2 WHERE id = $1", 2, h,
                  "cannot record an epoch");
    return st;
}

static nn_status pg_metrics(nn_study *s, int64_t id, const double *metric) {
    char i[32], m[M_COUNT][32];
    const char *p[1 + M_COUNT] = {integer(i, id)};
    for (int k = 0; k < M_COUNT; k++) p[1 + k] = num(m[k], metric[k]);
    return exec(s,
                "UPDATE trials SET val_accuracy = $2, val_loss = $3, latency_ms = $4,"
                " latency_batch_ms = $5, train_seconds = $6, params = $7, flops = $8,"
                " memory_mb = $9 WHERE id = $1",
                1 + M_COUNT, p, "cannot record a trial's metrics");
}

static nn_status pg_test_accuracy(nn_study *s, int64_t id, double accuracy) {
    char i[32], a[32];
    const char *p[] = {integer(i, id), num(a, accuracy)};
    return exec(s, "UPDATE trials SET test_accuracy = $2 WHERE id = $1", 2, p,
                "cannot record a test accuracy");
}

static nn_status pg_finish(nn_study *s, int64_t id, const char *state, const char *error,
                           double now) {
    char i[32], t[32];
    const char *p[] = {integer(i, id), state, error && *error ? error : NULL, num(t, now)};
    return exec(s,
                "UPDATE trials SET state = $2, error = $3, finished = $4, heartbeat = $4"
                " WHERE id = $1",
                4, p, "cannot finish a trial");
}

const study_store study_postgres = {
    .connect = pg_connect, .close = pg_close, .create = pg_create, .begin = pg_begin,
    .commit = pg_commit, .rollback = pg_rollback, .set = pg_set, .get = pg_get, .load = pg_load,
    .insert = pg_insert, .claim = pg_claim, .epoch = pg_epoch, .metrics = pg_metrics,
    .test_accuracy = pg_test_accuracy, .finish = pg_finish,
};

/* Appends word to buf as a file-name part: letters, digits, '.', '-', '_'
 * kept, anything else '_'. */
static void append_name(char *buf, size_t size, const char *word) {
    size_t o = strlen(buf);
    for (; *word && o + 1 < size; word++)
        buf[o++] = (*word >= 'a' && *word <= 'z') || (*word >= 'A' && *word <= 'Z') ||
                   (*word >= '0' && *word <= '9') || *word == '.' || *word == '-' ? *word : '_';
    buf[o] = '\0';
}

nn_status study_pg_trials_dir(nn_ctx *ctx, const char *uri, char *buf, size_t size) {
    char *err = NULL;
    PQconninfoOption *opt = PQconninfoParse(uri, &err);
    if (!opt) {
        nn_status st = nn_ctx_fail(ctx, NN_EINVAL, "not a PostgreSQL URI: %s",
                                   err ? err : "out of memory");
        PQfreemem(err);
        return st;
    }
    const char *db = NULL, *user = NULL, *options = NULL;
    for (PQconninfoOption *o = opt; o->keyword; o++) {
        if (!o->val || !o->val[0]) continue;
        if (strcmp(o->keyword, "dbname") == 0) db = o->val;
        else if (strcmp(o->keyword, "user") == 0) user = o->val;
        else if (strcmp(o->keyword, "options") == 0) options = o->val;
    }
    /* libpq's default database is the user's name */
    buf[0] = '\0';
    append_name(buf, size, db ? db : user ? user : "study");
    const char *path = options ? strstr(options, "search_path=") : NULL;
    if (path) {
        char schema[256];
        size_t n = strcspn(path + 12, " ,\t");
        snprintf(schema, sizeof schema, ".%.*s", (int)(n < 200 ? n : 200), path + 12);
        append_name(buf, size, schema);
    }
    PQconninfoFree(opt);
    if (strlen(buf) + 8 >= size) return nn_ctx_fail(ctx, NN_EINVAL, "study name too long");
    strcat(buf, ".trials");
    return NN_OK;
}
