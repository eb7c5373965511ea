/* vtool: tiny static helper for the capture guest (busybox has no setfattr,
 * flock(2) with fcntl locks, fsync/fdatasync).  Built on the host with
 *     gcc -static -O2 -o vtool vtool.c
 * Usage (one operation per call, prints results on stdout):
 *   vtool setxattr PATH NAME VALUE      setxattr(2), flags 0
 *   vtool getxattr PATH NAME            getxattr(2), prints the value
 *   vtool listxattr PATH                listxattr(2), prints the names
 *   vtool removexattr PATH NAME         removexattr(2)
 *   vtool locks PATH                    open O_RDWR; fcntl F_SETLK write lock 0..10,
 *                                       F_GETLK 20..30 (write), F_SETLK unlock,
 *                                       flock LOCK_EX, flock LOCK_UN, close; each step
 *                                       preceded by stat("DIR/.mark-STEP") (see below)
 *   vtool sync PATH DATA                open O_WRONLY|O_APPEND, write DATA, fsync, fdatasync
 *   vtool pwrite PATH OFFSET COUNT CHAR open O_WRONLY|O_CREAT, write COUNT bytes of CHAR in one call
 *   vtool runas UID PROG ARGS...        setgid(UID), setuid(UID), execv(PROG, ARGS)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static int fail(const char *what) {
    printf("vtool: %s: %s (errno %d)\n", what, strerror(errno), errno);
    return 1;
}

/* stat() a name that does not exist next to PATH, as a visible marker */
static void mark(const char *path, const char *step) {
    char m[4096];
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    snprintf(m, sizeof m, "%.*s/.mark-%s", dirlen, slash ? path : ".", step);
    struct stat st;
    (void)stat(m, &st);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: see source\n");
        return 2;
    }
    const char *op = argv[1], *path = argv[2];
    if (!strcmp(op, "runas") && argc >= 4) {
        int id = atoi(argv[2]);
        if (setgroups(0, NULL) < 0 || setgid(id) < 0 || setuid(id) < 0) return fail("setuid");
        execv(argv[3], argv + 3);
        return fail("execv");
    }
    if (!strcmp(op, "setxattr") && argc == 5) {
        if (setxattr(path, argv[3], argv[4], strlen(argv[4]), 0) < 0) return fail("setxattr");
        printf("setxattr %s=%s ok\n", argv[3], argv[4]);
    } else if (!strcmp(op, "getxattr") && argc == 4) {
        char buf[256];
        ssize_t n = getxattr(path, argv[3], buf, sizeof buf - 1);
        if (n < 0) return fail("getxattr");
        buf[n] = 0;
        printf("getxattr %s=%s\n", argv[3], buf);
    } else if (!strcmp(op, "listxattr") && argc == 3) {
        char buf[1024];
        ssize_t n = listxattr(path, buf, sizeof buf);
        if (n < 0) return fail("listxattr");
        for (ssize_t i = 0; i < n; i += strlen(buf + i) + 1) printf("listxattr %s\n", buf + i);
    } else if (!strcmp(op, "removexattr") && argc == 4) {
        if (removexattr(path, argv[3]) < 0) return fail("removexattr");
        printf("removexattr %s ok\n", argv[3]);
    } else if (!strcmp(op, "locks") && argc == 3) {
        /* Between operations, stat() of "<dir>/.mark-<step>" (absent: Twalk ->
         * Rlerror ENOENT) marks the step boundaries in the 9P stream. */
        int fd = open(path, O_RDWR);
        if (fd < 0) return fail("open");
        mark(path, "setlk");
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        if (fcntl(fd, F_SETLK, &fl) < 0) fail("F_SETLK");
        else printf("F_SETLK wrlck 0+10 ok\n");
        mark(path, "getlk");
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 10};
        if (fcntl(fd, F_GETLK, &q) < 0) fail("F_GETLK");
        else printf("F_GETLK type=%d (F_UNLCK=%d) start=%ld len=%ld pid=%d\n", q.l_type, F_UNLCK,
                    (long)q.l_start, (long)q.l_len, (int)q.l_pid);
        mark(path, "unlk");
        fl.l_type = F_UNLCK;
        if (fcntl(fd, F_SETLK, &fl) < 0) fail("F_SETLK unlock");
        else printf("F_SETLK unlock ok\n");
        mark(path, "flockex");
        if (flock(fd, LOCK_EX) < 0) fail("flock LOCK_EX");
        else printf("flock LOCK_EX ok\n");
        mark(path, "flockun");
        if (flock(fd, LOCK_UN) < 0) fail("flock LOCK_UN");
        else printf("flock LOCK_UN ok\n");
        mark(path, "close");
        close(fd);
        mark(path, "end");
    } else if (!strcmp(op, "sync") && argc == 4) {
        int fd = open(path, O_WRONLY | O_APPEND);
        if (fd < 0) return fail("open");
        if (write(fd, argv[3], strlen(argv[3])) < 0) return fail("write");
        if (fsync(fd) < 0) return fail("fsync");
        if (fdatasync(fd) < 0) return fail("fdatasync");
        printf("write+fsync+fdatasync ok\n");
        close(fd);
    } else if (!strcmp(op, "pwrite") && argc == 6) {
        size_t n = strtoul(argv[4], 0, 0);
        char *buf = malloc(n);
        memset(buf, argv[5][0], n);
        int fd = open(path, O_WRONLY | O_CREAT, 0644);
        if (fd < 0) return fail("open");
        ssize_t w = pwrite(fd, buf, n, strtoll(argv[3], 0, 0));
        if (w < 0) return fail("pwrite");
        printf("pwrite %zd ok\n", w);
        close(fd);
    } else {
        fprintf(stderr, "vtool: bad usage\n");
        return 2;
    }
    return 0;
}
