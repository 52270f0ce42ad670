/* jfault.c - the power-loss recording and slow-disk hooks (test only).
 * See jfault.h. */
#include "jfault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "tq_log.h"
#include "tq_util.h"

static int log_fd = -1;
static int (*real_fdatasync)(int fd);
static int (*real_fsync_dir)(int dirfd);

/* One line, written with one write(2) on an O_APPEND fd: whole even when
 * the process is killed right after. */
static void log_line(const char *line, size_t len)
{
    ssize_t n = write(log_fd, line, len);
    (void)n; /* a test hook: a failed log shows up as a failed test */
}

static int fd_path(int fd, char *out, size_t size)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, out, size - 1);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return 0;
}

static int rec_fdatasync(int fd)
{
    struct stat st;
    int have = fstat(fd, &st) == 0;
    int64_t t0 = tq_mono_us();
    int rc = real_fdatasync(fd);
    int e = errno;
    char path[1024];
    if (rc == 0 && have && fd_path(fd, path, sizeof path) == 0) {
        char line[1200];
        int n = snprintf(line, sizeof line, "sync %s %lld %lld\n", path, (long long)st.st_size,
                         (long long)(tq_mono_us() - t0));
        if (n > 0 && (size_t)n < sizeof line)
            log_line(line, (size_t)n);
    }
    errno = e;
    return rc;
}

static int rec_fsync_dir(int dirfd)
{
    int rc = real_fsync_dir(dirfd);
    int e = errno;
    char path[1024];
    if (rc == 0 && fd_path(dirfd, path, sizeof path) == 0) {
        DIR *d = opendir(path);
        if (d) {
            size_t cap = 4096, len = 0;
            char *line = tq_malloc(cap);
            len = (size_t)snprintf(line, cap, "dir %s", path);
            struct dirent *de;
            while ((de = readdir(d))) {
                size_t nl = strlen(de->d_name);
                if (nl < 5 || strcmp(de->d_name + nl - 4, ".tqj") != 0)
                    continue;
                if (len + nl + 3 > cap) {
                    cap = 2 * (len + nl + 3);
                    line = tq_realloc(line, cap);
                }
                line[len++] = ' ';
                memcpy(line + len, de->d_name, nl);
                len += nl;
            }
            closedir(d);
            line[len++] = '\n';
            log_line(line, len);
            free(line);
        }
    }
    errno = e;
    return rc;
}

static int64_t sync_delay_ms;
static int (*inner_fdatasync)(int fd);

/* A slow disk: every journal fdatasync takes sync_delay_ms longer (on
 * the sync thread, as a slow disk would). */
static int slow_fdatasync(int fd)
{
    struct timespec ts = {(time_t)(sync_delay_ms / 1000), (long)(sync_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return inner_fdatasync(fd);
}

/* TASKQ_TEST_SYNC_DELAY_MS=N (at most 60000): see jfault.h. */
static void install_delay(void)
{
    const char *d = getenv("TASKQ_TEST_SYNC_DELAY_MS");
    if (!d || !*d)
        return;
    char *end;
    long v = strtol(d, &end, 10);
    if (*end || v <= 0 || v > 60000) {
        tq_warn("TASKQ_TEST_SYNC_DELAY_MS=%s ignored (1..60000 ms)", d);
        return;
    }
    sync_delay_ms = v;
    inner_fdatasync = tq_jio.fdatasync;
    tq_jio.fdatasync = slow_fdatasync;
    tq_warn("test hook: every journal sync is %ld ms slower (TASKQ_TEST_SYNC_DELAY_MS)", v);
}

int tq_jfault_install_from_env(void)
{
    const char *path = getenv("TASKQ_TEST_POWERLOG");
    if (!path || !*path) {
        install_delay();
        return 0;
    }
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        tq_error("TASKQ_TEST_POWERLOG %s: %s", path, strerror(errno));
        return -1;
    }
    real_fdatasync = tq_jio.fdatasync;
    real_fsync_dir = tq_jio.fsync_dir;
    tq_jio.fdatasync = rec_fdatasync;
    tq_jio.fsync_dir = rec_fsync_dir;
    tq_warn("test hook: recording journal syncs to %s (TASKQ_TEST_POWERLOG)", path);
    install_delay();
    return 0;
}
