/* progress.c - a one-line progress bar with throughput and ETA for terminals. */
#include "cli/cli.h"

#include <string.h>
#include <time.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, FILE *out, int enabled, int64_t total, const char *label) {
    p->out = out;
    p->enabled = enabled && total > 0;
    p->start = cli_now();
    p->last_draw = 0.0;
    p->total = total;
    snprintf(p->label, sizeof p->label, "%s", label);
}

void cli_progress_update(cli_progress *p, int64_t done, double loss) {
    if (!p->enabled) return;
    double now = cli_now();
    if (now - p->last_draw < 0.1 && done < p->total) return;
    p->last_draw = now;
    double el = now - p->start;
    double frac = (double)done / (double)p->total;
    double eta = done > 0 ? el * (1.0 - frac) / frac : 0.0;
    char bar[31];
    int fill = (int)(frac * 30.0);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(p->out, "\r%s [%s] %3.0f%%  loss %.4f  %.1fs  ETA %.1fs ", p->label, bar, 100.0 * frac,
            loss, el, eta);
    fflush(p->out);
}

void cli_progress_clear(cli_progress *p) {
    if (!p->enabled) return;
    fprintf(p->out, "\r%*s\r", 100, "");
    fflush(p->out);
}
