/* killshim: LD_PRELOAD library for the power-loss test (tests/vm/tests/qemu_powerloss.rs;
 * built and driven by killshim.rs next to this file).
 *
 * Counts the calls that change what is on disk (writes to regular files, fsync family,
 * renames, unlinks, mkdir, mount/umount, copy_file_range, ...) across every process and
 * thread that inherits it, in one shared counter, and kills the whole process group with
 * SIGKILL *instead of* performing call number CLB_KILL_AT (so the state is exactly "every
 * call before N happened, N and later did not"). Without CLB_KILL_AT it only counts (and
 * logs), which is how the test learns how many kill points an upgrade has.
 *
 *   CLB_KILL_COUNTER=FILE   an existing file of >= 24 bytes (zeroed) holding the counters
 *   CLB_KILL_AT=N           kill at event N (1-based); unset or 0: never
 *   CLB_KILL_LOG=FILE       append "N pid call detail" per event
 *   CLB_KILL_ANCHOR=SUFFIX  make CLB_KILL_AT relative: 0 is the CLB_KILL_ANCHOR_NTH-th (default
 *                           1st) rename whose target path ends with SUFFIX, 1 the event after
 *                           it, ... (event numbers of a run vary a little with network reads;
 *                           the renames that commit each file do not)
 *
 * Build: cc -shared -fPIC -O2 -o killshim.so killshim.c -ldl
 * glibc's own internal calls (e.g. inside fwrite) do not go through these symbols; clb
 * (Rust std) and tar2sqfs call the libc functions, which is what is interposed here.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static long *counter; /* [0]: events so far, [1]: anchor matches so far, [2]: anchor event */
static long target;
static int logfd = -1;
static const char *anchor;
static long anchor_nth = 1;

__attribute__((constructor)) static void killshim_init(void) {
    const char *path = getenv("CLB_KILL_COUNTER");
    const char *at = getenv("CLB_KILL_AT");
    const char *log = getenv("CLB_KILL_LOG");
    target = at ? atol(at) : 0;
    anchor = getenv("CLB_KILL_ANCHOR");
    if (getenv("CLB_KILL_ANCHOR_NTH"))
        anchor_nth = atol(getenv("CLB_KILL_ANCHOR_NTH"));
    if (path) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            void *p = mmap(NULL, 3 * sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED)
                counter = p;
            close(fd);
        }
    }
    if (log)
        logfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void describe_fd(int fd, char *buf, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = syscall(SYS_readlink, link, buf, len - 1);
    buf[n > 0 ? n : 0] = 0;
}

/* Count one event; never returns when it is the chosen one. */
static void event(const char *call, const char *detail) {
    if (!counter)
        return;
    long k = __atomic_add_fetch(&counter[0], 1, __ATOMIC_SEQ_CST);
    if (logfd >= 0) {
        char line[600];
        int n = snprintf(line, sizeof line, "%ld %d %s %.500s\n", k, (int)getpid(), call,
                         detail ? detail : "");
        if (n > 0)
            syscall(SYS_write, logfd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
    }
    if (anchor && !strncmp(call, "rename", 6) && detail) {
        size_t dl = strlen(detail), al = strlen(anchor);
        if (dl >= al && !strcmp(detail + dl - al, anchor) &&
            __atomic_add_fetch(&counter[1], 1, __ATOMIC_SEQ_CST) == anchor_nth)
            __atomic_store_n(&counter[2], k, __ATOMIC_SEQ_CST);
    }
    long base = anchor ? __atomic_load_n(&counter[2], __ATOMIC_SEQ_CST) : 0;
    int armed = anchor ? base > 0 && k >= base + target : target > 0 && k >= target;
    if (armed) {
        /* Power cut: every process of the group stops here, this call never happens. */
        kill(0, SIGKILL);
        for (;;)
            pause();
    }
}

static int is_regular(int fd) {
    struct stat st;
    return syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode);
}

static void fd_event(const char *call, int fd) {
    char path[512];
    describe_fd(fd, path, sizeof path);
    event(call, path);
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n) {
    if (counter && is_regular(fd))
        fd_event("write", fd);
    return REAL(write)(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (counter && is_regular(fd))
        fd_event("pwrite", fd);
    return REAL(pwrite)(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    if (counter && is_regular(fd))
        fd_event("pwrite64", fd);
    return REAL(pwrite64)(fd, buf, n, off);
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    if (counter && is_regular(fd))
        fd_event("writev", fd);
    return REAL(writev)(fd, iov, cnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (counter && is_regular(fd))
        fd_event("pwritev", fd);
    return REAL(pwritev)(fd, iov, cnt, off);
}
ssize_t copy_file_range(int in, off_t *oin, int out, off_t *oout, size_t n, unsigned flags) {
    if (counter)
        fd_event("copy_file_range", out);
    return REAL(copy_file_range)(in, oin, out, oout, n, flags);
}
ssize_t sendfile(int out, int in, off_t *off, size_t n) {
    if (counter && is_regular(out))
        fd_event("sendfile", out);
    return REAL(sendfile)(out, in, off, n);
}
ssize_t sendfile64(int out, int in, off_t *off, size_t n) {
    if (counter && is_regular(out))
        fd_event("sendfile64", out);
    return REAL(sendfile64)(out, in, off, n);
}
int ftruncate(int fd, off_t len) {
    if (counter)
        fd_event("ftruncate", fd);
    return REAL(ftruncate)(fd, len);
}
int ftruncate64(int fd, off_t len) {
    if (counter)
        fd_event("ftruncate64", fd);
    return REAL(ftruncate64)(fd, len);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
    if (counter)
        fd_event("fallocate", fd);
    return REAL(fallocate)(fd, mode, off, len);
}
int fallocate64(int fd, int mode, off_t off, off_t len) {
    if (counter)
        fd_event("fallocate64", fd);
    return REAL(fallocate64)(fd, mode, off, len);
}
int fsync(int fd) {
    if (counter)
        fd_event("fsync", fd);
    return REAL(fsync)(fd);
}
int fdatasync(int fd) {
    if (counter)
        fd_event("fdatasync", fd);
    return REAL(fdatasync)(fd);
}
int syncfs(int fd) {
    if (counter)
        fd_event("syncfs", fd);
    return REAL(syncfs)(fd);
}
int rename(const char *a, const char *b) {
    event("rename", b);
    return REAL(rename)(a, b);
}
int renameat(int da, const char *a, int db, const char *b) {
    event("renameat", b);
    return REAL(renameat)(da, a, db, b);
}
int renameat2(int da, const char *a, int db, const char *b, unsigned flags) {
    event("renameat2", b);
    return REAL(renameat2)(da, a, db, b, flags);
}
int unlink(const char *p) {
    event("unlink", p);
    return REAL(unlink)(p);
}
int unlinkat(int d, const char *p, int flags) {
    event("unlinkat", p);
    return REAL(unlinkat)(d, p, flags);
}
int rmdir(const char *p) {
    event("rmdir", p);
    return REAL(rmdir)(p);
}
/* After a successful mkdir, a "0 pid made PATH" line (not an event): the test cleans up
 * only what this process group really created, never a same-named directory of someone
 * else (an EEXIST from a pid reused in another pid namespace, say). */
static void made(int rc, const char *p) {
    if (rc == 0 && logfd >= 0 && p && p[0] == '/') {
        char line[600];
        int n = snprintf(line, sizeof line, "0 %d made %.500s\n", (int)getpid(), p);
        if (n > 0)
            syscall(SYS_write, logfd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
    }
}
int mkdir(const char *p, mode_t m) {
    event("mkdir", p);
    int rc = REAL(mkdir)(p, m);
    made(rc, p);
    return rc;
}
int mkdirat(int d, const char *p, mode_t m) {
    event("mkdirat", p);
    int rc = REAL(mkdirat)(d, p, m);
    made(rc, p);
    return rc;
}
int mount(const char *src, const char *dst, const char *type, unsigned long flags,
          const void *data) {
    event("mount", dst);
    return REAL(mount)(src, dst, type, flags, data);
}
int umount2(const char *dst, int flags) {
    event("umount2", dst);
    return REAL(umount2)(dst, flags);
}
