/*
 * search.h - the engine of `nnopt search` (docs/search.md): search-space
 * files, samplers that propose a trial's values from the trials so far,
 * pruners that stop poor trials early, the Pareto front of several
 * objectives, and the study that keeps every trial in SQLite so that a search
 * survives being killed and can be shared by several workers.
 *
 * A trial's values are one double per space parameter, in the space's order:
 * a choice's index, an integer, or a float; active[i] says whether parameter i
 * applies to the trial (its condition holds). The engine knows nothing of
 * models or training: cmd_search.c turns values into a model's --params and a
 * recipe, trains, and reports the metrics back.
 */
#ifndef NN_SEARCH_H
#define NN_SEARCH_H

#include "nnopt.h"

#include <stdint.h>

enum {
    SP_MAX_PARAMS = 64,
    SP_MAX_CHOICES = 32,
    SP_MAX_COND_VALUES = 8,
    SP_MAX_OBJECTIVES = 4,
    SP_MAX_CONSTRAINTS = 8,
    SP_WORD = 64, /* longest choice word or fixed value, with its NUL */
};

/* What a trial measures; objectives and constraints name these. */
typedef enum {
    M_VAL_ACCURACY,     /* validation accuracy of the last epoch, as a fraction */
    M_VAL_LOSS,
    M_LATENCY_MS,       /* median eval-mode forward pass of one image, ms */
    M_LATENCY_BATCH_MS, /* the same for a batch of the trial's batch size */
    M_TRAIN_SECONDS,    /* wall time of the trial's training (evaluation included) */
    M_PARAMS,           /* trainable parameters */
    M_FLOPS,            /* forward FLOPs per image */
    M_MEMORY_MB,        /* planned memory at the trial's batch, MiB */
    M_COUNT
} sp_metric;

const char *sp_metric_name(sp_metric m);
/* -1 if name is not a metric. */
int sp_metric_from_name(const char *name);

typedef enum { SP_FIXED, SP_CHOICE, SP_INT, SP_FLOAT } sp_kind;

typedef struct {
    char name[96];      /* "section.key": "model.W", "optimizer.lr", "optimizer.lr@adamw" */
    char key[96];       /* the name without its @variant: the recipe key or model
                           parameter it sets ("optimizer.lr") */
    sp_kind kind;
    int log;            /* int/float drawn uniformly in log space */
    double lo, hi;      /* int/float: the range, both ends included */
    double step;        /* int: the grid of values lo, lo + step, ... (default 1) */
    int num_choices;    /* choice: the words; fixed: one, the value */
    char choice[SP_MAX_CHOICES][SP_WORD];
    int cond;           /* the parameter this one depends on, -1 for none */
    int num_cond_values;/* active when that one's value is one of these words */
    char cond_value[SP_MAX_COND_VALUES][SP_WORD];
    int line;           /* in the space file */
} sp_param;

typedef struct {
    sp_metric metric;
    int maximize;
} sp_objective;

typedef struct {
    sp_metric metric;
    int less;           /* 1: metric <= bound; 0: metric >= bound */
    double bound;       /* NAN until a reference model's is measured */
    char reference[4096]; /* "latency_ms <= MODEL": the bound is that model's
                             metric, measured when the search starts ("" if none) */
    int line;
} sp_constraint;

/* A search-space file, parsed. */
typedef struct {
    char path[4096];
    char *text;         /* the file's text: a study remembers the space it ran */
    char model[4096];   /* [search] model, resolved against the file's directory */
    int num_params;
    sp_param param[SP_MAX_PARAMS];
    int num_objectives;
    sp_objective objective[SP_MAX_OBJECTIVES];
    int num_constraints;
    sp_constraint constraint[SP_MAX_CONSTRAINTS];
    int val;            /* validation images carved from the training set */
    int train_limit;    /* 0: all */
    int min_epochs;     /* the pruners' smallest resource (default 1) */
    int eta;            /* their reduction factor (default 3) */
} nn_space;

/* Parses a space file (docs/search.md). Errors name path:line and the
 * problem. Free with sp_free. */
nn_status sp_load(nn_ctx *ctx, const char *path, nn_space **out);
nn_status sp_parse(nn_ctx *ctx, const char *text, const char *path, nn_space **out);
void sp_free(nn_space *sp);
/* Index of a parameter by its full name, -1 if none. */
int sp_find(const nn_space *sp, const char *name);
/* Parameter i's value as the text a recipe or --params takes (the choice's
 * word, the integer, the float in %.6g). */
void sp_value_text(const sp_param *p, double v, char *buf, size_t size);
/* Which parameters apply given the values of those they depend on
 * (conditions refer to earlier parameters only, so one pass decides). */
void sp_activate(const nn_space *sp, const double *value, unsigned char *active);
/* Reads a value's text back (a stored trial): 0, or -1 if it is not one of the
 * parameter's values. */
int sp_value_parse(const sp_param *p, const char *text, double *v);

typedef enum {
    TRIAL_RUNNING,
    TRIAL_COMPLETE,
    TRIAL_PRUNED,
    TRIAL_INFEASIBLE,   /* broke a constraint measured before training */
    TRIAL_FAILED,       /* an error (non-finite loss, out of memory, ...) */
    TRIAL_STOPPED,      /* the budget ran out, or a signal, mid-training: resumable */
} trial_state;

const char *trial_state_name(trial_state s);
int trial_state_from_name(const char *name);

/* One trial as the study holds it. */
typedef struct {
    int64_t id;             /* 1, 2, ... in order of creation */
    trial_state state;
    double value[SP_MAX_PARAMS];
    unsigned char active[SP_MAX_PARAMS];
    int bracket;            /* Hyperband's bracket (0 for other pruners) */
    int epochs;             /* epochs reported */
    double *val_accuracy;   /* [epochs], per epoch */
    double *val_loss;       /* [epochs] */
    double *epoch_seconds;  /* [epochs] cumulative training seconds */
    double metric[M_COUNT]; /* NAN where unknown */
    double test_accuracy;   /* NAN unless measured for the finalists */
    double started, finished, heartbeat; /* Unix seconds, 0 if not yet */
    char host[64];
    long pid;
    char error[256];
} trial;

/* How good a trial is on the space's objectives, each turned into a value
 * to minimize (maximized ones negated): obj[0..num_objectives). Returns 0 if
 * the trial has no value for one of them. */
int trial_objectives(const nn_space *sp, const trial *t, double *obj);
/* Whether t satisfies every constraint whose metric it has measured (and
 * whose bound is known). */
int trial_feasible(const nn_space *sp, const trial *t);

/* Non-dominated sorting of n points of m values to minimize: rank[i] = 0 for
 * the Pareto front, 1 for the front once that is removed, ... */
void pareto_ranks(const double *obj, int n, int m, int *rank);

/* --- samplers --- */
typedef enum { SAMPLER_RANDOM, SAMPLER_GRID, SAMPLER_TPE, SAMPLER_NSGA2 } sampler_kind;
const char *sampler_name(sampler_kind k);
int sampler_from_name(const char *name);

/* Proposes the next trial's values given the trials so far (any state);
 * grid: returns 1 when every point of the grid has been proposed, else 0. */
int sampler_propose(sampler_kind k, const nn_space *sp, const trial *trials, int n, nn_rng *rng,
                    double *value, unsigned char *active);

/* --- pruners --- */
typedef enum { PRUNER_NONE, PRUNER_MEDIAN, PRUNER_ASHA, PRUNER_HYPERBAND } pruner_kind;
const char *pruner_name(pruner_kind k);
int pruner_from_name(const char *name);

typedef struct {
    pruner_kind kind;
    int min_epochs;     /* ASHA: the first rung; median: epochs before any pruning */
    int max_epochs;     /* the trials' full training */
    int eta;            /* ASHA/Hyperband reduction factor */
    int startup;        /* median: trials that must have reported an epoch first */
} pruner_cfg;

/* Hyperband's bracket for a new trial (0 for the other pruners). */
int pruner_bracket(const pruner_cfg *p, int64_t trial_id);
/* After trial self has reported `epoch` epochs (its val_accuracy), given all
 * trials: 1 to stop it now. */
int pruner_should_stop(const pruner_cfg *p, const trial *self, const trial *trials, int n);

/* --- the study: SQLite (src/search/study.c) or PostgreSQL (study_pg.c) --- */
typedef struct nn_study nn_study;

/* Opens (creating if needed) the study at path, for the space sp: a study
 * made with another space file's text is refused. Waits up to 60 s for other
 * workers' locks. A path that starts with postgresql:// or postgres:// is a
 * PostgreSQL connection URI (libpq; NN_EUNSUPPORTED in a build without it),
 * anything else an SQLite file (docs/search.md, "Storage"). */
nn_status study_open(nn_ctx *ctx, const char *path, const nn_space *sp, nn_study **out);
void study_close(nn_study *s);
/* Every trial with its curve, in id order; free with study_trials_free. */
nn_status study_load(nn_study *s, trial **out, int *n);
void study_trials_free(trial *t, int n);
/* A write transaction that holds out other workers (SQLite: BEGIN IMMEDIATE;
 * PostgreSQL: LOCK TABLE trials): a worker reads the trials, proposes, and
 * inserts inside one. */
nn_status study_begin(nn_study *s);
nn_status study_commit(nn_study *s);
void study_rollback(nn_study *s);
/* A new running trial owned by this process; its id in *id. */
nn_status study_insert(nn_study *s, const double *value, const unsigned char *active, int bracket,
                       int64_t *id);
/* Takes over an interrupted (stopped, or running with a dead owner) trial. */
nn_status study_claim(nn_study *s, int64_t id);
/* One epoch's validation result (replaces a row of a resumed epoch). */
nn_status study_epoch(nn_study *s, int64_t id, int epoch, double val_accuracy, double val_loss,
                      double seconds);
nn_status study_metrics(nn_study *s, int64_t id, const double *metric);
nn_status study_test_accuracy(nn_study *s, int64_t id, double accuracy);
nn_status study_finish(nn_study *s, int64_t id, trial_state state, const char *error);
/* Whether a running trial's owner is gone: same host and no such process, or
 * no heartbeat for stale_s seconds. */
int study_owner_gone(const trial *t, double stale_s);
/* Free-form settings of the study (the sampler, the pruner, ...). */
nn_status study_set(nn_study *s, const char *key, const char *value);
/* Copies the value into buf ("" if unset). */
nn_status study_get(nn_study *s, const char *key, char *buf, size_t size);
/* The study's path as messages show it: a PostgreSQL URI with its password
 * masked; a file as it is. */
void study_display_path(const char *path, char *buf, size_t size);
/* Opens an existing study read-only (nnopt report) and parses the space it
 * was made with; both freed by the caller (study_close, sp_free). */
nn_status study_open_existing(nn_ctx *ctx, const char *path, nn_study **out, nn_space **space);
/* The default folder of the study's trial checkpoints, into buf: the
 * SQLite file's path with .trials; for PostgreSQL, in the current directory,
 * DATABASE.trials, or DATABASE.SCHEMA.trials when the URI sets search_path.
 * Fails on a path too long, or a PostgreSQL URI in a build without libpq. */
nn_status study_trials_dir(nn_ctx *ctx, const char *path, char *buf, size_t size);

#endif /* NN_SEARCH_H */
