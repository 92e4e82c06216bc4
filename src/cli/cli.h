/* cli.h - shared pieces of the nnopt command-line tool: option tables,
 * progress bar, and the subcommand entry points. */
#ifndef NN_CLI_H
#define NN_CLI_H

#include "nnopt.h"

#include <stdio.h>

typedef enum { CLI_FLAG, CLI_INT, CLI_FLOAT, CLI_STR, CLI_U64 } cli_type;

typedef struct {
    const char *name;     /* "--lr" */
    cli_type type;
    void *dst;            /* int*, int*, float*, const char**, uint64_t* */
    const char *metavar;  /* "RATE" */
    const char *help;
    double min, max;      /* accepted range for numbers */
} cli_opt;

/* Parses argv[1..] (argv[0] is the subcommand). Positional arguments go to
 * pos[0..max_pos). Returns 0 to go on, 1 after an error message, 2 after --help. */
int cli_parse(const char *cmd, const char *synopsis, const char *about, int argc, char **argv,
              const cli_opt *opts, const char **pos, int max_pos, int *npos);

/* Progress bar with rate and ETA, drawn with \r on a terminal only. */
typedef struct {
    FILE *out;
    int enabled;
    double start;
    double last_draw;
    int64_t total;
    char label[32];
} cli_progress;

double cli_now(void);
void cli_progress_start(cli_progress *p, FILE *out, int enabled, int64_t total, const char *label);
void cli_progress_update(cli_progress *p, int64_t done, double loss);
void cli_progress_clear(cli_progress *p);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);

#endif /* NN_CLI_H */
