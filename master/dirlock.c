/* dirlock.c - the data dir's lock file. See dirlock.h. */
#include "dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "tq_util.h"

/* The pid written in the lock file at fd, or 0 if it holds none (the
 * holder has not written it yet, or the file is not ours). */
static long read_holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = '\0';
    int64_t pid;
    if (tq_parse_i64(buf, &pid) < 0 || pid <= 0 || pid > INT_MAX)
        return 0;
    return (long)pid;
}

int tq_dirlock_acquire(const char *dir, tq_err_t *err)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, TQ_DIRLOCK_FILE);
    if (n < 0 || (size_t)n >= sizeof path) {
        tq_err_set(err, 0, "--data-dir %s: path too long", dir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        tq_err_set(err, 0, "--data-dir %s: cannot open the lock file %s: %s", dir, path,
                   strerror(errno));
        return -1;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            long pid = read_holder(fd);
            char who[48] = "pid unknown";
            if (pid > 0)
                snprintf(who, sizeof who, "pid %ld", pid);
            tq_err_set(err, 0,
                       "another taskq-master (%s) is using --data-dir %s (it holds the lock on "
                       "%s): only one master may use a data dir",
                       who, dir, path);
        } else {
            tq_err_set(err, 0, "--data-dir %s: cannot lock %s: %s", dir, path, strerror(e));
        }
        close(fd);
        return -1;
    }
    /* Ours now: replace whatever pid a dead holder left. */
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != (ssize_t)len) {
        tq_err_set(err, 0, "--data-dir %s: cannot write the lock file %s: %s", dir, path,
                   strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void tq_dirlock_release(int fd)
{
    if (fd >= 0)
        close(fd); /* the lock goes with the last descriptor of the open file */
}
