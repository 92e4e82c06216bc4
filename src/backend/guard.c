/*
 * guard.c - the "guard" backend: the CPU kernels on memory that only they may
 * touch. Each allocation is its own anonymous mapping, kept PROT_NONE except
 * between nn_dev_begin and nn_dev_end (the graph's kernel calls, the
 * optimizer's step, the explicit copies), when every mapping is readable and
 * writable. Host code that reads or writes device memory any other way (a
 * stray `params[i]` in the trainer, a checkpoint writer that skips the
 * download) faults on the spot, and the handler names the address and the
 * backend before the process dies. It is slow (two mprotect calls per mapping
 * per kernel) and meant for tests: a CUDA backend needs the same discipline,
 * and this proves the code keeps it without a GPU.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "backend/backend.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    void *base;
    size_t len;
} mapping;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mapping *maps;
static size_t num_maps, cap_maps;
static int depth; /* nested begin calls; mappings are open while > 0 */

static void protect_all(int prot) {
    for (size_t i = 0; i < num_maps; i++)
        if (mprotect(maps[i].base, maps[i].len, prot) != 0) {
            static const char msg[] = "nnopt: guard backend: mprotect failed\n";
            (void)!write(2, msg, sizeof msg - 1);
            abort();
        }
}

/* A fault inside a closed mapping is a host access to device memory. */
static void on_fault(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    const uintptr_t a = (uintptr_t)info->si_addr;
    int ours = 0;
    for (size_t i = 0; i < num_maps && !ours; i++)
        ours = a >= (uintptr_t)maps[i].base && a < (uintptr_t)maps[i].base + maps[i].len;
    if (ours) {
        char msg[160] = "nnopt: guard backend: host code touched device memory at 0x";
        size_t n = strlen(msg);
        for (int s = (int)sizeof a * 8 - 4; s >= 0; s -= 4) msg[n++] = "0123456789abcdef"[a >> s & 15];
        static const char tail[] = " outside a kernel or copy\n";
        memcpy(msg + n, tail, sizeof tail - 1);
        (void)!write(2, msg, n + sizeof tail - 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_handler(void) {
    static int done;
    if (done) return;
    done = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

static size_t page_round(size_t bytes) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (bytes > SIZE_MAX - page) return 0;
    return bytes ? (bytes + page - 1) / page * page : page;
}

static void *guard_alloc(size_t bytes) {
    const size_t len = page_round(bytes);
    if (!len) return NULL;
    pthread_mutex_lock(&lock);
    install_handler();
    void *p = NULL;
    if (num_maps == cap_maps) {
        size_t cap = cap_maps ? 2 * cap_maps : 64;
        mapping *m = realloc(maps, cap * sizeof *m);
        if (!m) goto out;
        maps = m;
        cap_maps = cap;
    }
    /* anonymous pages start zero-filled, as alloc promises */
    p = mmap(NULL, len, depth > 0 ? PROT_READ | PROT_WRITE : PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        p = NULL;
        goto out;
    }
    maps[num_maps++] = (mapping){p, len};
out:
    pthread_mutex_unlock(&lock);
    return p;
}

static void guard_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < num_maps; i++)
        if (maps[i].base == p) {
            munmap(p, maps[i].len);
            maps[i] = maps[--num_maps];
            break;
        }
    pthread_mutex_unlock(&lock);
}

static void guard_begin(void) {
    pthread_mutex_lock(&lock);
    if (depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&lock);
}

static void guard_end(void) {
    pthread_mutex_lock(&lock);
    if (--depth == 0) protect_all(PROT_NONE);
    pthread_mutex_unlock(&lock);
}

static void guard_copy(void *dst, const void *src, size_t bytes) {
    guard_begin();
    memcpy(dst, src, bytes);
    guard_end();
}

static const nn_backend guard_backend = {
    .name = "guard",
    .device = NN_DEVICE_CPU,
    .kernels = NN_KERNELS_CPU,
    .host_visible = 0,
    .alloc = guard_alloc,
    .free = guard_free,
    .upload = guard_copy,
    .download = guard_copy,
    .copy = guard_copy,
    .begin = guard_begin,
    .end = guard_end,
};

const nn_backend *nn_backend_guard(void) { return &guard_backend; }
