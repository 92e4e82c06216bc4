/*
 * file.c - opening input files (models, weights, data, images, recipes):
 * regular files only. A plain open() for reading blocks on a FIFO until a
 * writer comes and reads forever from a device, so the file is opened with
 * O_NONBLOCK, checked with fstat, and only then switched to blocking reads.
 */
#include "nn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a file that is not a regular file is, for messages. */
static const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory, not a regular file";
    if (S_ISFIFO(mode)) return "a FIFO, not a regular file";
    if (S_ISCHR(mode)) return "a character device, not a regular file";
    if (S_ISBLK(mode)) return "a block device, not a regular file";
    return "not a regular file";
}

int nn_open_regular(const char *path, const char **why) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct stat sb;
    int flags;
    if (fstat(fd, &sb) != 0) {
        *why = strerror(errno);
    } else if (!S_ISREG(sb.st_mode)) {
        *why = file_kind(sb.st_mode);
    } else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        *why = strerror(errno);
    } else {
        *why = "";
        return fd;
    }
    close(fd);
    return -1;
}
