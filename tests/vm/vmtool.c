/* vmtool: a small static helper for the kernel-client guest (tests/vm/init.sh).
 *
 * busybox has no setfattr/getfattr, no flock, no fcntl locks and no way to hand a
 * connected socket to mount(8); this does those, one operation per call, and prints
 * one line per step on stdout. Exit status 0 means every step did what was expected.
 * Built on the host by build_initramfs.py:  gcc -static -O2 -Wall -o vmtool vmtool.c
 *
 *   vmtool xattr PATH                set, get, list, replace, remove user.vshare; then
 *                                    getxattr must fail ENODATA, trusted.* must be refused
 *   vmtool locks PATH                fcntl F_SETLK/F_GETLK/unlock, a conflicting child,
 *                                    flock LOCK_EX/LOCK_UN
 *   vmtool locks2 PATH_A PATH_B      the same file through two mounts (two sessions): the
 *                                    conflicts must come from the server's lock table
 *   vmtool fsync PATH                open O_WRONLY|O_APPEND, write, fsync, fdatasync
 *   vmtool pattern-write PATH MIB    write MIB MiB of the test pattern in 1 MiB writes
 *   vmtool pattern-check PATH MIB    read it back in 1 MiB reads and compare every byte
 *   vmtool mmap PATH MIB             create PATH, ftruncate, write the pattern through a
 *                                    shared mapping, msync, munmap (checked by pattern-check)
 *   vmtool runas UID PROG ARGS...    setgroups(0), setgid(UID), setuid(UID), exec PROG
 *   vmtool mountfd HOST PORT DIR OPTS
 *                                    connect to HOST:PORT over TCP, then exec
 *                                    mount -t 9p -o trans=fd,rfdno=N,wfdno=N,OPTS vshare DIR
 *                                    with the socket inherited (what `vshare mount --kernel`
 *                                    does; the guest has no Python)
 *
 * The pattern: the file is a sequence of little-endian 64-bit words, word i holding
 * i * 0x9E3779B97F4A7C15 (mod 2**64); the host checks the same bytes on its disk.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define GOLDEN 0x9E3779B97F4A7C15ULL

static int failures;

static void bad(const char *what) {
    printf("vmtool: FAIL %s: %s (errno %d)\n", what, strerror(errno), errno);
    failures++;
}

static void expect_errno(const char *what, int rc, int want) {
    if (rc >= 0) {
        printf("vmtool: FAIL %s: succeeded, expected %s\n", what, strerror(want));
        failures++;
    } else if (errno != want) {
        printf("vmtool: FAIL %s: %s, expected %s\n", what, strerror(errno), strerror(want));
        failures++;
    } else {
        printf("vmtool: %s: %s as expected\n", what, strerror(errno));
    }
}

static int do_xattr(const char *path) {
    char buf[256];
    ssize_t n;
    if (setxattr(path, "user.vshare", "blue", 4, XATTR_CREATE) < 0) bad("setxattr create");
    n = getxattr(path, "user.vshare", buf, sizeof buf - 1);
    if (n < 0) bad("getxattr");
    else if (buf[n] = 0, strcmp(buf, "blue")) { printf("vmtool: FAIL getxattr=%s\n", buf); failures++; }
    else printf("vmtool: getxattr user.vshare=%s\n", buf);
    expect_errno("setxattr XATTR_CREATE existing", setxattr(path, "user.vshare", "x", 1, XATTR_CREATE), EEXIST);
    if (setxattr(path, "user.vshare", "green!", 6, XATTR_REPLACE) < 0) bad("setxattr replace");
    n = getxattr(path, "user.vshare", buf, sizeof buf - 1);
    if (n != 6 || memcmp(buf, "green!", 6)) { printf("vmtool: FAIL replaced value (n=%zd)\n", n); failures++; }
    n = getxattr(path, "user.vshare", NULL, 0);  /* size query */
    if (n != 6) { printf("vmtool: FAIL getxattr size query = %zd\n", n); failures++; }
    n = listxattr(path, buf, sizeof buf);
    int found = 0;
    if (n < 0) bad("listxattr");
    for (ssize_t i = 0; i < n; i += strlen(buf + i) + 1) {
        printf("vmtool: listxattr %s\n", buf + i);
        if (!strcmp(buf + i, "user.vshare")) found = 1;
    }
    if (!found) { printf("vmtool: FAIL user.vshare not listed\n"); failures++; }
    if (removexattr(path, "user.vshare") < 0) bad("removexattr");
    expect_errno("getxattr after remove", (int)getxattr(path, "user.vshare", buf, sizeof buf), ENODATA);
    expect_errno("setxattr trusted.x", setxattr(path, "trusted.x", "1", 1, 0), EOPNOTSUPP);
    return failures != 0;
}

static int do_locks(const char *path) {
    int fd = open(path, O_RDWR);
    if (fd < 0) { bad("open"); return 1; }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    if (fcntl(fd, F_SETLK, &fl) < 0) bad("F_SETLK wrlck 0+10");
    else printf("vmtool: F_SETLK wrlck 0+10 ok\n");
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 10};
    if (fcntl(fd, F_GETLK, &q) < 0) bad("F_GETLK");
    else if (q.l_type != F_UNLCK) { printf("vmtool: FAIL F_GETLK 20+10 type=%d\n", q.l_type); failures++; }
    else printf("vmtool: F_GETLK 20+10 unlocked ok\n");
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {  /* another process: must see the conflict */
        int cfd = open(path, O_RDWR), rc = 0;
        struct flock c = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 2};
        if (fcntl(cfd, F_SETLK, &c) == 0) { printf("vmtool: FAIL child got a conflicting lock\n"); rc = 1; }
        else if (errno != EAGAIN && errno != EACCES) { printf("vmtool: FAIL child F_SETLK: %s\n", strerror(errno)); rc = 1; }
        else printf("vmtool: child F_SETLK 5+2 refused: %s\n", strerror(errno));
        struct flock g = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
        if (fcntl(cfd, F_GETLK, &g) < 0) { printf("vmtool: FAIL child F_GETLK: %s\n", strerror(errno)); rc = 1; }
        else if (g.l_type != F_WRLCK || g.l_pid != getppid()) {
            printf("vmtool: FAIL child F_GETLK type=%d pid=%d (parent %d)\n", g.l_type, (int)g.l_pid, (int)getppid());
            rc = 1;
        } else printf("vmtool: child F_GETLK sees the parent's lock\n");
        fflush(stdout);
        _exit(rc);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) failures++;
    fl.l_type = F_UNLCK;
    if (fcntl(fd, F_SETLK, &fl) < 0) bad("F_SETLK unlock");
    else printf("vmtool: F_SETLK unlock ok\n");
    if (flock(fd, LOCK_EX) < 0) bad("flock LOCK_EX");
    else printf("vmtool: flock LOCK_EX ok\n");
    if (flock(fd, LOCK_UN) < 0) bad("flock LOCK_UN");
    else printf("vmtool: flock LOCK_UN ok\n");
    close(fd);
    return failures != 0;
}

static void setlk(int fd, short type, off_t start, off_t len, int want, const char *what) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    int rc = fcntl(fd, F_SETLK, &fl);
    if (want == 0) {
        if (rc < 0) bad(what);
        else printf("vmtool: %s ok\n", what);
    } else {
        expect_errno(what, rc, want);
    }
}

static int do_locks2(const char *a, const char *b) {
    int fa = open(a, O_RDWR), fb = open(b, O_RDWR);
    if (fa < 0 || fb < 0) { bad("open"); return 1; }
    setlk(fa, F_WRLCK, 0, 10, 0, "A: F_SETLK wrlck 0+10");
    setlk(fb, F_WRLCK, 5, 2, EAGAIN, "B: F_SETLK wrlck 5+2 (held through A)");
    struct flock g = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
    if (fcntl(fb, F_GETLK, &g) < 0) bad("B: F_GETLK");
    else if (g.l_type != F_WRLCK || g.l_start != 0 || g.l_len != 10) {
        printf("vmtool: FAIL B: F_GETLK type=%d start=%ld len=%ld\n", g.l_type, (long)g.l_start, (long)g.l_len);
        failures++;
    } else printf("vmtool: B: F_GETLK sees A's lock 0+10 (l_pid %d)\n", (int)g.l_pid);
    setlk(fb, F_RDLCK, 50, 10, 0, "B: F_SETLK rdlck 50+10 (no overlap)");
    setlk(fb, F_UNLCK, 50, 10, 0, "B: unlock 50+10");
    setlk(fa, F_UNLCK, 0, 10, 0, "A: unlock");
    setlk(fb, F_WRLCK, 5, 2, 0, "B: F_SETLK wrlck 5+2 after A's unlock");
    setlk(fb, F_UNLCK, 5, 2, 0, "B: unlock");
    if (flock(fa, LOCK_EX) < 0) bad("A: flock LOCK_EX");
    else printf("vmtool: A: flock LOCK_EX ok\n");
    expect_errno("B: flock LOCK_EX|LOCK_NB (held through A)", flock(fb, LOCK_EX | LOCK_NB), EWOULDBLOCK);
    if (flock(fa, LOCK_UN) < 0) bad("A: flock LOCK_UN");
    if (flock(fb, LOCK_EX | LOCK_NB) < 0) bad("B: flock LOCK_EX|LOCK_NB after A's unlock");
    else printf("vmtool: B: flock after A's unlock ok\n");
    flock(fb, LOCK_UN);
    close(fa);
    close(fb);
    return failures != 0;
}

static int do_fsync(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0) { bad("open"); return 1; }
    if (write(fd, "synced\n", 7) != 7) bad("write");
    if (fsync(fd) < 0) bad("fsync");
    if (fdatasync(fd) < 0) bad("fdatasync");
    close(fd);
    if (!failures) printf("vmtool: write+fsync+fdatasync ok\n");
    return failures != 0;
}

static void fill(uint64_t *words, uint64_t first, size_t n) {
    for (size_t i = 0; i < n; i++) words[i] = (first + i) * GOLDEN;
}

static int do_pattern(const char *path, long mib, int check) {
    uint64_t *buf = malloc(MIB), *want = malloc(MIB);
    int fd = check ? open(path, O_RDONLY) : open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { bad("open"); return 1; }
    for (long m = 0; m < mib; m++) {
        uint64_t first = (uint64_t)m * (MIB / 8);
        fill(want, first, MIB / 8);
        size_t done = 0;
        while (done < MIB) {
            ssize_t n = check ? read(fd, (char *)buf + done, MIB - done)
                              : write(fd, (char *)want + done, MIB - done);
            if (n <= 0) {
                printf("vmtool: FAIL %s at %ld MiB + %zu: %s\n", check ? "read" : "write", m, done,
                       n == 0 ? "end of file" : strerror(errno));
                return 1;
            }
            done += (size_t)n;
        }
        if (check && memcmp(buf, want, MIB)) {
            for (size_t i = 0; i < MIB / 8; i++)
                if (buf[i] != want[i]) {
                    printf("vmtool: FAIL mismatch at byte %llu\n",
                           (unsigned long long)(first + i) * 8);
                    break;
                }
            return 1;
        }
    }
    if (check) {
        char extra;
        if (read(fd, &extra, 1) != 0) { printf("vmtool: FAIL data past the end\n"); return 1; }
    }
    if (close(fd) < 0) { bad("close"); return 1; }
    printf("vmtool: pattern %s %ld MiB ok\n", check ? "checked" : "written", mib);
    return 0;
}

static int do_mmap(const char *path, long mib) {
    size_t size = (size_t)mib * MIB;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { bad("open"); return 1; }
    if (ftruncate(fd, (off_t)size) < 0) { bad("ftruncate"); return 1; }
    uint64_t *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { bad("mmap"); return 1; }
    fill(map, 0, size / 8);
    if (msync(map, size, MS_SYNC) < 0) { bad("msync"); return 1; }
    if (munmap(map, size) < 0) { bad("munmap"); return 1; }
    if (close(fd) < 0) { bad("close"); return 1; }
    printf("vmtool: mmap pattern %ld MiB written and synced\n", mib);
    return 0;
}

static int do_runas(int id, char **argv) {
    if (setgroups(0, NULL) < 0 || setgid((gid_t)id) < 0 || setuid((uid_t)id) < 0) {
        bad("setuid");
        return 1;
    }
    execv(argv[0], argv);
    bad("execv");
    return 1;
}

static int do_mountfd(const char *host, const char *port, const char *dir, const char *opts) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) { bad("socket"); return 1; }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { bad("connect"); return 1; }
    char options[1024];
    snprintf(options, sizeof options, "trans=fd,rfdno=%d,wfdno=%d,%s", fd, fd, opts);
    printf("vmtool: mount -t 9p -o %s vshare %s\n", options, dir);
    fflush(stdout);
    execl("/bin/mount", "mount", "-t", "9p", "-o", options, "vshare", dir, (char *)NULL);
    bad("exec mount");
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "xattr")) return do_xattr(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "locks")) return do_locks(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "locks2")) return do_locks2(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "fsync")) return do_fsync(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "pattern-write")) return do_pattern(argv[2], atol(argv[3]), 0);
    if (argc == 4 && !strcmp(argv[1], "pattern-check")) return do_pattern(argv[2], atol(argv[3]), 1);
    if (argc == 4 && !strcmp(argv[1], "mmap")) return do_mmap(argv[2], atol(argv[3]));
    if (argc >= 4 && !strcmp(argv[1], "runas")) return do_runas(atoi(argv[2]), argv + 3);
    if (argc == 6 && !strcmp(argv[1], "mountfd")) return do_mountfd(argv[2], argv[3], argv[4], argv[5]);
    fprintf(stderr, "usage: see the head of vmtool.c\n");
    return 2;
}
