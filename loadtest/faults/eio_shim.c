/* eio_shim.c: an LD_PRELOAD library that makes I/O on files under one directory fail with EIO, on demand.
 *
 * The fault suite (loadtest/faults/storage.py) compiles it with gcc into its run dir and starts a box with
 *   LD_PRELOAD=<run>/eio_shim.so OCA_EIO_DIR=<a tier's directory> OCA_EIO_TRIGGER=<a file outside it>
 * While OCA_EIO_TRIGGER exists, every read, pread, readv, preadv, write, pwrite, writev, pwritev, sendfile,
 * copy_file_range, fsync and fdatasync on a file descriptor whose path (/proc/self/fd/N) lies under
 * OCA_EIO_DIR fails with EIO, as a disk with bad sectors would. Without the trigger file every call goes
 * straight to libc (one access(2) on the trigger per call: a test tool, not something to ship).
 * Sockets, pipes and files elsewhere are never touched, so the box's clients and its index are unaffected.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *eio_dir(void) {
    static const char *dir = NULL;
    static int loaded = 0;
    if (!loaded) {
        dir = getenv("OCA_EIO_DIR");
        loaded = 1;
    }
    return dir;
}

static const char *eio_trigger(void) {
    static const char *trigger = NULL;
    static int loaded = 0;
    if (!loaded) {
        trigger = getenv("OCA_EIO_TRIGGER");
        loaded = 1;
    }
    return trigger;
}

/* 1 when the trigger file exists and fd is a file under OCA_EIO_DIR */
static int failing(int fd) {
    const char *dir = eio_dir(), *trigger = eio_trigger();
    if (dir == NULL || trigger == NULL || fd < 0 || access(trigger, F_OK) != 0)
        return 0;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    size_t len = strlen(dir);
    return strncmp(target, dir, len) == 0 && (target[len] == '/' || target[len] == '\0');
}

#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)
#define FAIL_IF(fd) do { if (failing(fd)) { errno = EIO; return -1; } } while (0)

ssize_t read(int fd, void *buf, size_t count) {
    REAL(read); FAIL_IF(fd); return real_read(fd, buf, count);
}
ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    REAL(pread); FAIL_IF(fd); return real_pread(fd, buf, count, offset);
}
ssize_t pread64(int fd, void *buf, size_t count, off64_t offset) {
    REAL(pread64); FAIL_IF(fd); return real_pread64(fd, buf, count, offset);
}
ssize_t readv(int fd, const struct iovec *iov, int iovcnt) {
    REAL(readv); FAIL_IF(fd); return real_readv(fd, iov, iovcnt);
}
ssize_t preadv(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    REAL(preadv); FAIL_IF(fd); return real_preadv(fd, iov, iovcnt, offset);
}
ssize_t preadv64(int fd, const struct iovec *iov, int iovcnt, off64_t offset) {
    REAL(preadv64); FAIL_IF(fd); return real_preadv64(fd, iov, iovcnt, offset);
}
ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write); FAIL_IF(fd); return real_write(fd, buf, count);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite); FAIL_IF(fd); return real_pwrite(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(pwrite64); FAIL_IF(fd); return real_pwrite64(fd, buf, count, offset);
}
ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(writev); FAIL_IF(fd); return real_writev(fd, iov, iovcnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    REAL(pwritev); FAIL_IF(fd); return real_pwritev(fd, iov, iovcnt, offset);
}
ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
    REAL(sendfile); FAIL_IF(in_fd); return real_sendfile(out_fd, in_fd, offset, count);
}
ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count) {
    REAL(sendfile64); FAIL_IF(in_fd); return real_sendfile64(out_fd, in_fd, offset, count);
}
ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len, unsigned int flags) {
    REAL(copy_file_range); FAIL_IF(fd_in); FAIL_IF(fd_out);
    return real_copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
}
int fsync(int fd) {
    REAL(fsync); FAIL_IF(fd); return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync); FAIL_IF(fd); return real_fdatasync(fd);
}
