/* reaper.c - find, kill and reap the processes that escaped their
 * task (reaper.h says what is promised). */
#include "reaper.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tq_log.h"
#include "tq_util.h"

/* Rounds of one sweep: a killed stray's own children become strays in
 * turn; each round takes one generation. */
#define REAPER_ROUNDS 16
/* Children examined per round (more wait for the next task's sweep). */
#define REAPER_MAX_CHILDREN 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;       /* the two sets */
static pthread_mutex_t sweep_mu = PTHREAD_MUTEX_INITIALIZER; /* one sweep at a time */
static pid_t *own;                                           /* pids we reap ourselves */
static size_t nown, own_cap;
static uint64_t *running; /* begin ticks of running tasks */
static size_t nrunning, running_cap;
static uint64_t started; /* ticks when tq_reaper_start ran */

/* Clock ticks since boot, the unit of /proc/PID/stat's starttime. */
static uint64_t boot_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    return (uint64_t)ts.tv_sec * (uint64_t)hz +
           (uint64_t)ts.tv_nsec / (1000000000ull / (uint64_t)hz);
}

int tq_reaper_start(void)
{
    pthread_mutex_lock(&mu);
    started = boot_ticks();
    pthread_mutex_unlock(&mu);
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -1;
}

/* Append v to a growing array (under mu). Aborts on out of memory. */
#define PUSH(arr, n, cap, v)                                                                       \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? (cap)*2 : 16;                                                          \
            (arr) = tq_realloc((arr), (cap) * sizeof *(arr));                                      \
        }                                                                                          \
        (arr)[(n)++] = (v);                                                                        \
    } while (0)

void tq_reaper_own(pid_t pid)
{
    if (pid <= 0)
        return;
    pthread_mutex_lock(&mu);
    PUSH(own, nown, own_cap, pid);
    pthread_mutex_unlock(&mu);
}

void tq_reaper_disown(pid_t pid)
{
    if (pid <= 0)
        return;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nown; i++)
        if (own[i] == pid) {
            own[i] = own[--nown];
            break;
        }
    pthread_mutex_unlock(&mu);
}

uint64_t tq_reaper_task_begin(void)
{
    uint64_t t = boot_ticks();
    pthread_mutex_lock(&mu);
    PUSH(running, nrunning, running_cap, t);
    pthread_mutex_unlock(&mu);
    return t;
}

void tq_reaper_task_end(uint64_t token, int sweep)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nrunning; i++)
        if (running[i] == token) {
            running[i] = running[--nrunning];
            break;
        }
    pthread_mutex_unlock(&mu);
    if (sweep)
        tq_reaper_sweep(0);
}

/* Read state, process group and start time (ticks since boot) of pid
 * from /proc/PID/stat. Returns 0 or -1 (gone). */
static int proc_stat(pid_t pid, char *state, pid_t *pgrp, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads
     * itrealvalue starttime ...": comm may hold anything, so parse from
     * its last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    int ppid, pg;
    unsigned long long st;
    if (sscanf(p + 1,
               " %c %d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               state, &ppid, &pg, &st) != 4)
        return -1;
    *pgrp = (pid_t)pg;
    *start = (uint64_t)st;
    return 0;
}

/* Our children's pids into out[max] (all threads' children lists; a
 * process's children are listed under the thread that is their parent).
 * Falls back to a scan of /proc for PPid when the lists are missing
 * (kernels without CONFIG_PROC_CHILDREN). Returns how many. */
static size_t list_children(pid_t *out, size_t max)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/task");
    int have_lists = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && n < max) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9')
                continue;
            char path[300];
            snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
            FILE *f = fopen(path, "re");
            if (!f)
                continue;
            have_lists = 1;
            int pid;
            while (n < max && fscanf(f, "%d", &pid) == 1)
                out[n++] = (pid_t)pid;
            fclose(f);
        }
        closedir(d);
    }
    if (have_lists)
        return n;
    pid_t self = getpid();
    d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        char *p = strrchr(buf, ')');
        char st;
        int ppid;
        if (p && sscanf(p + 1, " %c %d", &st, &ppid) == 2 && ppid == (int)self)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* 1 if pid is one we reap ourselves; *min_begin: the earliest begin of
 * a running task (UINT64_MAX when none runs); *since: when the reaper
 * started. */
static int is_own(pid_t pid, uint64_t *min_begin, uint64_t *since)
{
    int found = 0;
    uint64_t m = UINT64_MAX;
    pthread_mutex_lock(&mu);
    *since = started;
    for (size_t i = 0; i < nown && !found; i++)
        found = own[i] == pid;
    for (size_t i = 0; i < nrunning; i++)
        if (running[i] < m)
            m = running[i];
    pthread_mutex_unlock(&mu);
    *min_begin = m;
    return found;
}

int tq_reaper_sweep(int all)
{
    static pid_t kids[REAPER_MAX_CHILDREN]; /* under sweep_mu */
    int killed = 0;
    pid_t our_group = getpgrp();
    pthread_mutex_lock(&sweep_mu);
    for (int round = 0; round < REAPER_ROUNDS; round++) {
        size_t n = list_children(kids, REAPER_MAX_CHILDREN);
        int killed_now = 0;
        for (size_t i = 0; i < n; i++) {
            pid_t pid = kids[i];
            uint64_t min_begin, since, start;
            char state;
            pid_t pgrp;
            if (is_own(pid, &min_begin, &since) || proc_stat(pid, &state, &pgrp, &start) < 0)
                continue;
            /* Not a task's: every task process starts in a group of its
             * own, so one in ours was started by the program itself (a
             * thread-mode function's system(), a host program's child),
             * as was one older than the worker. */
            if (pgrp == our_group || start < since)
                continue;
            /* A running task may own a process born after it began. */
            if (!all && start >= min_begin)
                continue;
            int st;
            if (state == 'Z' || state == 'X') {
                /* An escaped process that ended by itself: reap it. */
                while (waitpid(pid, &st, WNOHANG) < 0 && errno == EINTR)
                    ;
                continue;
            }
            tq_info("killing process %d: it escaped its task (left the task's process group "
                    "and outlived its parent)",
                    (int)pid);
            if (pgrp == pid)
                kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            /* Only sweeps reap strays, so pid is still our child. */
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            killed_now++;
        }
        killed += killed_now;
        if (!killed_now)
            break;
    }
    pthread_mutex_unlock(&sweep_mu);
    return killed;
}
