/* forkserver.c - the process that forks prefork and spawn children
 * before the worker holds a key (forkserver.h says what is promised). */
#include "forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "command.h"
#include "run.h"
#include "tq_log.h"
#include "tq_util.h"

/* How long stop waits for the server to exit before killing it. */
#define FORKSERVER_EXIT_GRACE_MS 2000

/* One request and one answer, each a single SOCK_SEQPACKET message. */
typedef struct {
    uint32_t fn; /* index into the fns given to start */
    int32_t slot;
    uint32_t oneshot;
} fs_req_t;

typedef struct {
    int32_t pid; /* the child (an answer) or the server (ready); 0 on failure */
    int32_t err; /* errno of the failure, or 0 */
    char why[200];
} fs_rep_t;

struct tq_forkserver {
    pthread_mutex_t mu; /* one exchange at a time */
    int fd;             /* our end; -1 once the server is gone */
    pid_t pid;
    const tq_fn_t *fns;
    size_t nfns;
    int warned; /* "not a subreaper" logged */
};

/* ---- the server ------------------------------------------------------------ */

/* Send rep, with fd attached when fd >= 0. */
static void send_reply(int ctl, const fs_rep_t *rep, int fd)
{
    struct iovec iov = {(void *)rep, sizeof *rep};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&cm, 0, sizeof cm);
        m.msg_control = cm.buf;
        m.msg_controllen = sizeof cm.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    while (sendmsg(ctl, &m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void fail(fs_rep_t *rep, int e, const char *what)
{
    rep->pid = 0;
    rep->err = e;
    snprintf(rep->why, sizeof rep->why, "%s: %s", what, strerror(e));
}

/* What the middle process is given. */
typedef struct {
    const tq_fn_t *fn;
    int slot, oneshot;
    tq_forkserver_main_fn child_main;
    pid_t worker;
    int sv0, sv1, p0, p1;
} middle_arg_t;

/* The middle process: fork the child, write its pid (or -errno) to p1,
 * exit. It shares the server's memory until it exits (CLONE_VM |
 * CLONE_VFORK, as posix_spawn does), so it costs no copy of the page
 * tables; the child is a plain fork, with glibc's fork handlers. */
static int middle(void *arg)
{
    const middle_arg_t *a = arg;
    pid_t pid = fork();
    if (pid == 0) {
        close(a->p0), close(a->p1), close(a->sv0);
        a->child_main(a->fn, a->slot, a->sv1, a->oneshot, a->worker);
        _exit(1);
    }
    int32_t v = pid > 0 ? (int32_t)pid : -(int32_t)errno;
    if (pid > 0)
        setpgid(pid, pid); /* also here: no window where a kill misses it */
    ssize_t w = write(a->p1, &v, sizeof v);
    (void)w;
    return 0;
}

/* The middle process's stack (it runs while the server waits). */
#define MIDDLE_STACK (256 * 1024)
static uint8_t *middle_stack;

/* Start one child for fn: a middle process forks the child and exits, so
 * the child goes to the subreaper (the worker). Fills rep and *fd (the
 * worker's end of the child's socket). */
static void spawn_one(const tq_fn_t *fn, int slot, int oneshot, tq_forkserver_main_fn child_main,
                      pid_t worker, fs_rep_t *rep, int *fd)
{
    int sv[2], p[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fail(rep, errno, "socketpair");
        return;
    }
    if (pipe2(p, O_CLOEXEC) < 0) {
        fail(rep, errno, "pipe");
        close(sv[0]), close(sv[1]);
        return;
    }
    middle_arg_t a = {fn, slot, oneshot, child_main, worker, sv[0], sv[1], p[0], p[1]};
    pid_t mid = clone(middle, middle_stack + MIDDLE_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int e = errno;
    close(sv[1]), close(p[1]);
    if (mid < 0) {
        fail(rep, e, "clone");
        close(sv[0]), close(p[0]);
        return;
    }
    int32_t v = 0;
    ssize_t r;
    while ((r = read(p[0], &v, sizeof v)) < 0 && errno == EINTR)
        ;
    close(p[0]);
    /* Once the middle process is reaped, the child is the worker's. */
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (r != (ssize_t)sizeof v || v <= 0) {
        fail(rep, r == (ssize_t)sizeof v ? -v : EIO, "fork");
        close(sv[0]);
        return;
    }
    rep->pid = v;
    *fd = sv[0];
}

static void server_main(int ctl, const tq_fn_t *fns, size_t nfns, const tq_user_t *user,
                        tq_forkserver_main_fn child_main, pid_t worker)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != worker)
        _exit(0);
    prctl(PR_SET_NAME, "taskq-forks");
    /* The worker drains on these and may still need children. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Nothing of the worker's but stdin, stdout, stderr and our socket. */
    if (ctl != 3) {
        if (dup2(ctl, 3) < 0)
            _exit(1);
        close(ctl);
        ctl = 3;
    }
    close_range(4, ~0U, 0);

    fs_rep_t rep;
    memset(&rep, 0, sizeof rep);
    tq_err_t e;
    if (user && tq_priv_drop(user, &e) < 0) {
        rep.err = EPERM;
        snprintf(rep.why, sizeof rep.why, "%.199s", e.msg);
        send_reply(ctl, &rep, -1);
        _exit(1);
    }
    (void)tq_command_task_env(); /* built here, once: children only point at it */
    middle_stack = mmap(NULL, MIDDLE_STACK, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (middle_stack == MAP_FAILED) {
        fail(&rep, errno, "mmap");
        send_reply(ctl, &rep, -1);
        _exit(1);
    }
    rep.pid = getpid();
    send_reply(ctl, &rep, -1);

    for (;;) {
        fs_req_t q;
        ssize_t n = recv(ctl, &q, sizeof q, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the worker closed its end, or is gone */
        memset(&rep, 0, sizeof rep);
        int fd = -1;
        if (n != (ssize_t)sizeof q || q.fn >= nfns)
            fail(&rep, EINVAL, "fork server request");
        else
            spawn_one(&fns[q.fn], q.slot, q.oneshot != 0, child_main, worker, &rep, &fd);
        send_reply(ctl, &rep, fd);
        if (fd >= 0)
            close(fd);
    }
}

/* ---- the worker's side ------------------------------------------------------ */

tq_forkserver_t *tq_forkserver_start(const tq_fn_t *fns, size_t nfns, const tq_user_t *user,
                                     tq_forkserver_main_fn child_main, tq_err_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        tq_err_set(err, 0, "cannot start the fork server: socketpair: %s", strerror(errno));
        return NULL;
    }
    pid_t worker = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        tq_err_set(err, 0, "cannot start the fork server: fork: %s", strerror(errno));
        close(sv[0]), close(sv[1]);
        return NULL;
    }
    if (pid == 0) {
        close(sv[0]);
        server_main(sv[1], fns, nfns, user, child_main, worker);
        _exit(0);
    }
    close(sv[1]);
    fs_rep_t rep;
    ssize_t n;
    while ((n = recv(sv[0], &rep, sizeof rep, 0)) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof rep || rep.pid != pid) {
        if (n == (ssize_t)sizeof rep)
            rep.why[sizeof rep.why - 1] = '\0';
        tq_err_set(err, 0, "cannot start the fork server: %s",
                   n == (ssize_t)sizeof rep && rep.why[0] ? rep.why : "it exited");
        close(sv[0]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return NULL;
    }
    tq_forkserver_t *self = tq_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mu, NULL);
    self->fd = sv[0];
    self->pid = pid;
    self->fns = fns;
    self->nfns = nfns;
    return self;
}

pid_t tq_forkserver_pid(const tq_forkserver_t *self) { return self ? self->pid : 0; }

/* The server stopped answering: forget it (under mu). */
static void gone(tq_forkserver_t *self)
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
        tq_error("the fork server (pid %d) has exited: prefork and spawn functions fail until "
                 "the worker is restarted",
                 (int)self->pid);
    }
}

pid_t tq_forkserver_spawn(tq_forkserver_t *self, const tq_fn_t *fn, int slot, int oneshot, int *fd,
                          char *why, size_t whylen)
{
    TQ_ASSERT(fn >= self->fns && fn < self->fns + self->nfns);
    int reaper = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &reaper) < 0 || !reaper) {
        pthread_mutex_lock(&self->mu);
        if (!self->warned)
            tq_warn("not the subreaper of task processes: prefork and spawn children are forks "
                    "of the worker and hold a copy of its key");
        self->warned = 1;
        pthread_mutex_unlock(&self->mu);
        return -2;
    }
    fs_req_t q = {(uint32_t)(fn - self->fns), slot, (uint32_t)(oneshot != 0)};
    fs_rep_t rep;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {&rep, sizeof rep};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n = -1;
    pthread_mutex_lock(&self->mu);
    if (self->fd >= 0) {
        ssize_t w;
        while ((w = send(self->fd, &q, sizeof q, MSG_NOSIGNAL)) < 0 && errno == EINTR)
            ;
        if (w == (ssize_t)sizeof q) {
            memset(&cm, 0, sizeof cm);
            m.msg_control = cm.buf;
            m.msg_controllen = sizeof cm.buf;
            while ((n = recvmsg(self->fd, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
                ;
        }
        if (n != (ssize_t)sizeof rep)
            gone(self);
    }
    pthread_mutex_unlock(&self->mu);
    if (n != (ssize_t)sizeof rep) {
        snprintf(why, whylen, "the fork server (pid %d) has exited", (int)self->pid);
        return -1;
    }
    int got = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&got, CMSG_DATA(c), sizeof got);
    if (rep.pid > 0 && got < 0) {
        /* The child exists and is ours, but its socket did not come
         * (MSG_CTRUNC: this process is at its descriptor limit): end it
         * here rather than leave it to the stray sweep. */
        kill(-rep.pid, SIGKILL);
        kill(rep.pid, SIGKILL);
        while (waitpid(rep.pid, NULL, 0) < 0 && errno == EINTR)
            ;
        snprintf(why, whylen, "the child's socket did not come from the fork server%s",
                 (m.msg_flags & MSG_CTRUNC) ? " (the worker is at its descriptor limit)" : "");
        return -1;
    }
    if (rep.pid <= 0) {
        if (got >= 0)
            close(got);
        rep.why[sizeof rep.why - 1] = '\0';
        snprintf(why, whylen, "%s", rep.why[0] ? rep.why : "the fork server failed");
        return -1;
    }
    *fd = got;
    return (pid_t)rep.pid;
}

void tq_forkserver_stop(tq_forkserver_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_forkserver_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    int64_t until = tq_run_now_ms() + FORKSERVER_EXIT_GRACE_MS;
    for (;;) {
        pid_t r = waitpid(self->pid, NULL, WNOHANG);
        if (r == self->pid || (r < 0 && errno != EINTR))
            break;
        if (tq_run_now_ms() >= until) {
            kill(self->pid, SIGKILL);
            while (waitpid(self->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        usleep(1000);
    }
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}
