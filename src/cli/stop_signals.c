/*
 * stop_signals.c - a graceful stop for long runs: the first SIGINT or SIGTERM
 * asks the trainer to stop after the optimizer step in progress (it then
 * writes its checkpoint); the handler resets itself, so a second signal ends
 * the process at once.
 */
#include "cli/cli.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static nn_trainer *volatile signalled_trainer;
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    static const char msg[] = "\nnnopt: stopping after the current step (a second signal stops "
                              "at once)\n";
    stop_signal = sig;
    if (signalled_trainer) nn_trainer_request_stop(signalled_trainer);
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1); /* async-signal-safe */
    (void)w;
}

void cli_catch_stop_signals(nn_trainer *t) {
    signalled_trainer = t;
    if (!t) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_stop_signal(void) { return (int)stop_signal; }
