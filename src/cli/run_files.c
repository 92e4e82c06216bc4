/*
 * run_files.c - the files a training run writes besides its checkpoint: the
 * CSV log (one row per epoch, every write checked), the recipe beside it,
 * the check that a checkpoint can be written, and the advisory locks
 * that keep two nnopt runs from writing one log or one checkpoint. Nothing
 * is truncated until every output path has been checked and locked.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The lock of `path` is a POSIX record lock on PATH.lock, which holds the
 * owner's pid: the checkpoint itself is replaced by rename at every save, so
 * a lock on it would not outlive the first save. The kernel drops the lock
 * when its process dies, so a left-over .lock file never blocks a later run. */
nn_status cli_lock_acquire(nn_ctx *ctx, cli_lock *l, const char *path, const char *what) {
    l->fd = -1;
    if ((size_t)snprintf(l->path, sizeof l->path, "%s.lock", path) >= sizeof l->path)
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: path too long", path);
    int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot create the %s's lock %s: %s", path, what,
                           l->path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int err = errno;
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        long pid = fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK ? (long)who.l_pid : 0;
        close(fd);
        if (err == EACCES || err == EAGAIN) {
            if (pid > 0)
                return nn_ctx_fail(ctx, NN_EIO, "%s: another nnopt run (pid %ld) is writing this %s",
                                   path, pid, what);
            return nn_ctx_fail(ctx, NN_EIO, "%s: another nnopt run is writing this %s", path, what);
        }
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot lock %s: %s", path, l->path, strerror(err));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != n) {
        close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot write the lock %s", path, l->path);
    }
    l->fd = fd;
    return NN_OK;
}

void cli_lock_release(cli_lock *l) {
    if (l->fd < 0) return;
    unlink(l->path); /* while still held: no other run can hold it now */
    close(l->fd);
    l->fd = -1;
}

/* Opens without truncating: an existing log is only cut once the run is sure
 * to start (cli_log_begin). Regular files only. */
nn_status cli_log_open(nn_ctx *ctx, cli_log *log, const char *path) {
    *log = (cli_log){.path = path, .lock = {.fd = -1}};
    nn_status s = cli_lock_acquire(ctx, &log->lock, path, "log");
    if (s) return s;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int err = fd < 0 ? errno : 0;
        if (fd >= 0) close(fd);
        cli_lock_release(&log->lock);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open the log for writing: %s", path,
                           err ? strerror(err) : "not a regular file");
    }
    if (!(log->f = fdopen(fd, "w"))) {
        close(fd);
        cli_lock_release(&log->lock);
        return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
    }
    return NN_OK;
}

static nn_status log_failed(nn_ctx *ctx, cli_log *log, int err) {
    log->failed = 1;
    return nn_ctx_fail(ctx, NN_EIO, "%s: write failed: %s", log->path,
                       err ? strerror(err) : "unknown error");
}

/* Flushes to the file and reports the first error of any write since. */
static nn_status log_flush(nn_ctx *ctx, cli_log *log) {
    errno = 0;
    if (fflush(log->f) != 0 || ferror(log->f)) return log_failed(ctx, log, errno);
    return NN_OK;
}

nn_status cli_log_begin(nn_ctx *ctx, cli_log *log, int append, int has_val) {
    errno = 0;
    if (!append && ftruncate(fileno(log->f), 0) != 0) return log_failed(ctx, log, errno);
    if (fseek(log->f, 0, SEEK_END) != 0) return log_failed(ctx, log, errno);
    if (ftell(log->f) == 0)
        fprintf(log->f, "epoch,step,train_loss,test_loss,test_accuracy,%sseconds,images_per_s\n",
                has_val ? "val_loss,val_accuracy," : "");
    return log_flush(ctx, log);
}

nn_status cli_log_row(nn_ctx *ctx, cli_log *log, const nn_epoch_report *r) {
    fprintf(log->f, "%lld,%lld,%.6f,%.6f,%.4f,", (long long)r->epoch, (long long)r->step,
            r->train_loss, r->test_loss, 100.0 * r->test_accuracy);
    if (r->has_val) fprintf(log->f, "%.6f,%.4f,", r->val_loss, 100.0 * r->val_accuracy);
    fprintf(log->f, "%.3f,%.1f\n", r->seconds, r->images_per_s);
    return log_flush(ctx, log);
}

nn_status cli_log_close(nn_ctx *ctx, cli_log *log) {
    nn_status s = NN_OK;
    if (log->f) {
        errno = 0;
        int err = fflush(log->f) != 0 || ferror(log->f) ? (errno ? errno : EIO) : 0;
        if (fclose(log->f) != 0 && !err) err = errno ? errno : EIO;
        log->f = NULL;
        if (err) s = log->failed ? NN_EIO : log_failed(ctx, log, err);
    }
    cli_lock_release(&log->lock);
    return s;
}

/* Creates and removes the checkpoint's temporary file to prove the directory
 * is writable. */
nn_status cli_check_writable(nn_ctx *ctx, const char *path) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return nn_ctx_fail(ctx, NN_EIO, "%s: cannot write a checkpoint there: %s", path,
                               strerror(errno));
    fclose(f);
    unlink(tmp);
    return NN_OK;
}

/* The recipe is written next to the log: run.csv -> run.recipe.ini. */
int cli_write_run_recipe(const char *log, const char *model, const cli_opt *opts) {
    char path[4096], header[9000];
    const char *slash = strrchr(log, '/'), *dot = strrchr(log, '.');
    size_t len = dot && (!slash || dot > slash) ? (size_t)(dot - log) : strlen(log);
    snprintf(path, sizeof path, "%.*s.recipe.ini", (int)len, log);
    snprintf(header, sizeof header,
             "nnopt %s recipe of a run of %s; reproduce with: nnopt train %s --config %s",
             NN_VERSION, model, model, path);
    return cli_recipe_write(path, opts, header);
}
