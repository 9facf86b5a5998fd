/* An LD_PRELOAD shim for cronmail's tests: while the file named by $EIO_FLAG exists,
 * reads, writes and fsyncs of files whose path contains $EIO_MATCH fail with EIO, as
 * a failing disk's would. Built by the test that uses it (tests/it/faults.rs). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failing(int fd) {
    const char *flag = getenv("EIO_FLAG"), *match = getenv("EIO_MATCH");
    struct stat st;
    char link[64], target[4096];
    ssize_t n;
    if (!flag || !match || stat(flag, &st) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    return strstr(target, match) != NULL;
}

#define REAL(name) static __typeof__(name) *real; if (!real) real = dlsym(RTLD_NEXT, #name)

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    REAL(pread64);
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite64);
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd, buf, count, offset);
}
ssize_t read(int fd, void *buf, size_t count) {
    REAL(read);
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd, buf, count);
}
int fsync(int fd) {
    REAL(fsync);
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync);
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}
