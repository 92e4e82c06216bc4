/*
 * share.c - sharing this machine's cores between nnopt processes, with no
 * daemon: a per-user registry directory (cli_env.share_dir, by default
 * /dev/shm/nnopt-<uid>) holds one small file per running compute process
 * (train, a search worker, an MPI rank), named by its pid and write-locked
 * (fcntl) for the process's lifetime. A file whose lock is gone belongs to a
 * process that ended, however it ended (kill -9 included): it is ignored,
 * and removed by whoever sees it. Each file holds the process's CPU affinity,
 * so only processes that can run on our cores count.
 *
 * A run whose thread count the user left open makes its context with all
 * the cores it may use (what nn_net_plan sizes workspace for) and uses its
 * fair share of them: available / processes, the remainder to the oldest
 * (lowest pid), at least 1. It looks again at most every half second between
 * training steps (cli_share_poll), so a run that started alone with 2
 * threads drops to 1 when a second starts and goes back to 2 when it ends.
 * POSIX record locks (not flock) because they are not inherited by fork():
 * a search's workers never keep their parent's entry alive.
 */
#define _GNU_SOURCE
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARE_MAGIC "nnopt-share 1\n"
#define SHARE_POLL_S 0.5

/* The cores this process may run on, and how many. */
static int own_cpus(cpu_set_t *set) {
    CPU_ZERO(set);
    if (sched_getaffinity(0, sizeof *set, set) != 0) {
        const long n = sysconf(_SC_NPROCESSORS_ONLN);
        for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET((int)i, set);
    }
    const int n = CPU_COUNT(set);
    return n > 0 ? n : 1;
}

/* "0,1,2,5" */
static void cpus_text(const cpu_set_t *set, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < CPU_SETSIZE && len + 8 < size; i++)
        if (CPU_ISSET(i, set)) len += (size_t)snprintf(buf + len, size - len, "%s%d", len ? "," : "", i);
}

/* The "cpus" line of a registry file into set; 0 if the file is not one. */
static int parse_entry(const char *text, cpu_set_t *set) {
    CPU_ZERO(set);
    if (strncmp(text, SHARE_MAGIC, strlen(SHARE_MAGIC)) != 0) return 0;
    const char *p = strstr(text, "\ncpus ");
    if (!p) return 0;
    p += 6;
    while (*p >= '0' && *p <= '9') {
        char *end;
        const long c = strtol(p, &end, 10);
        if (c >= 0 && c < CPU_SETSIZE) CPU_SET((int)c, set);
        p = *end == ',' ? end + 1 : end;
    }
    return CPU_COUNT(set) > 0;
}

/* The registry directory, made if missing: ours alone (owned by us, not a
 * link, no access for others), else 0 and sharing stays off. */
static int own_dir(const char *dir) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return 0;
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
           (st.st_mode & 077) == 0;
}

/* A name made of digits only: a registry entry (temporary files start with
 * a dot). */
static int entry_name(const char *name) {
    if (!*name) return 0;
    for (const char *p = name; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

void cli_share_join(cli_share *s, const cli_env *env) {
    *s = (cli_share){.fd = -1, .peers = 1, .rank = 0};
    if (!env->share || !env->share_dir[0] || !own_dir(env->share_dir)) return;
    cpu_set_t set;
    own_cpus(&set);
    char tmp[4200], cpus[8192];
    const int pid = (int)getpid();
    if (snprintf(s->dir, sizeof s->dir, "%s", env->share_dir) >= (int)sizeof s->dir) return;
    snprintf(s->path, sizeof s->path, "%s/%d", s->dir, pid);
    snprintf(tmp, sizeof tmp, "%s/.%d.new", s->dir, pid);
    /* locked under a temporary name, then renamed: no one ever sees the
     * entry unlocked and takes it for a dead process's */
    const int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    cpus_text(&set, cpus, sizeof cpus);
    char head[128];
    const int n = snprintf(head, sizeof head, SHARE_MAGIC "pid %d\ncpus ", pid);
    if (fcntl(fd, F_SETLK, &lk) != 0 || write(fd, head, (size_t)n) != n ||
        write(fd, cpus, strlen(cpus)) != (ssize_t)strlen(cpus) || write(fd, "\n", 1) != 1 ||
        rename(tmp, s->path) != 0) {
        unlink(tmp);
        close(fd);
        return;
    }
    s->fd = fd;
}

void cli_share_leave(cli_share *s) {
    if (s->fd < 0) return;
    unlink(s->path);
    close(s->fd); /* releases the lock */
    s->fd = -1;
    s->ctx = NULL;
}

/* Counts the live registered processes whose cores overlap ours (ourselves
 * included) into s->peers, and those of them with a lower pid into s->rank;
 * removes the entries of processes that are gone. */
static void count_peers(cli_share *s, const cpu_set_t *mine) {
    s->peers = 1;
    s->rank = 0;
    DIR *d = opendir(s->dir);
    if (!d) return;
    const long me = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!entry_name(e->d_name) || strtol(e->d_name, NULL, 10) == me) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
        /* never our own file: closing any descriptor of it would drop our lock */
        const int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type == F_UNLCK) {
            /* no holder: its process is gone. Remove it if it is still the
             * file under that name (a new process with that pid renames its
             * own into place, locked). */
            struct flock take = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
            struct stat a, b;
            if (fcntl(fd, F_SETLK, &take) == 0 && fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
                a.st_ino == b.st_ino && a.st_dev == b.st_dev)
                unlink(path);
            close(fd);
            continue;
        }
        char text[8192 + 128];
        const ssize_t n = pread(fd, text, sizeof text - 1, 0);
        close(fd);
        if (n <= 0) continue;
        text[n] = '\0';
        cpu_set_t theirs, both;
        if (!parse_entry(text, &theirs)) continue;
        CPU_AND(&both, &theirs, mine);
        if (CPU_COUNT(&both) == 0) continue;
        s->peers++;
        if (strtol(e->d_name, NULL, 10) < me) s->rank++;
    }
    closedir(d);
}

int cli_share_threads(cli_share *s) {
    cpu_set_t mine;
    const int avail = own_cpus(&mine);
    if (s->fd >= 0) count_peers(s, &mine);
    const int n = s->peers;
    const int share = avail / n + (s->rank < avail % n);
    return share > 0 ? share : 1;
}

void cli_share_follow(cli_share *s, nn_ctx *ctx) {
    s->ctx = ctx;
    s->next = 0;
    cli_share_poll(s);
}

void cli_share_poll(cli_share *s) {
    if (!s || !s->ctx || s->fd < 0) return;
    const double now = cli_now();
    if (now < s->next) return;
    s->next = now + SHARE_POLL_S;
    int n = cli_share_threads(s);
    if (n > nn_ctx_max_threads(s->ctx)) n = nn_ctx_max_threads(s->ctx);
    if (n != nn_ctx_threads(s->ctx)) nn_ctx_set_threads(s->ctx, n);
}
