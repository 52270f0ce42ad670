/* child.c - the prefork, spawn (C functions) and coprocess execution
 * modes: starting children, the length-prefixed frames, deaths, kills. */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "builtins.h"
#include "forkserver.h"
#include "reaper.h"
#include "tq_util.h"
#include "cfn.h"
#include "taskq.h"
#include "tq_proto.h"

/* Request header of a forked child: u64 id, u32 attempt, u32 timeout_ms,
 * u64 max_result. */
#define CHILD_REQ_HEADER 24
/* Reply header: u8 status, u32 length. */
#define CHILD_REPLY_HEADER 5
/* Status bytes of a reply. */
enum { REPLY_OK = 0, REPLY_ERROR = 1, REPLY_TIMEOUT = 2 };

struct tq_child {
    const tq_fn_t *fn;
    int slot;
    pid_t pid; /* 0: not running */
    int wfd;   /* requests go here */
    int rfd;   /* replies come from here (== wfd for a socketpair) */
};

/* ---- helpers ------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }

void tq_child_describe(int st, char *out, size_t outlen)
{
    if (WIFEXITED(st))
        snprintf(out, outlen, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) {
        const char *d = sigdescr_np(WTERMSIG(st));
        snprintf(out, outlen, "signal %d (%s)", WTERMSIG(st), d ? d : "unknown signal");
    } else
        snprintf(out, outlen, "wait status %d", st);
}

/* Read exactly n bytes from a blocking fd: 0, or -1 on EOF or error. */
static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}


/* ---- the forked child (prefork, spawn) ----------------------------------- */

/* Serve requests on fd until EOF (or one, when oneshot); never returns.
 * worker > 0: a child of the fork server, whose parent died at its
 * birth; once a request came it is the worker's (forkserver.h), and it
 * dies with the worker from then on. */
static void child_serve(const tq_fn_t *fn, int slot, int fd, int oneshot, pid_t worker)
{
    void *slot_ctx = NULL;
    int inited = 0;
    for (;;) {
        uint8_t hdr[4];
        if (read_full(fd, hdr, sizeof hdr) < 0)
            break;
        if (worker > 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != worker)
                _exit(1);
            worker = 0;
        }
        uint32_t n = get_be32(hdr);
        if (n < CHILD_REQ_HEADER)
            _exit(3);
        uint8_t *req = malloc(n);
        if (!req || read_full(fd, req, n) < 0)
            _exit(3);
        tq_run_ctx_t ctx = {
            .payload = req + CHILD_REQ_HEADER,
            .len = n - CHILD_REQ_HEADER,
            .cancel_fd = -1, /* a KILL kills this process */
            .timeout_ms = get_be32(req + 12),
            .max_result = (size_t)get_be64(req + 16),
        };
        if (ctx.timeout_ms)
            ctx.deadline_ms = tq_run_now_ms() + ctx.timeout_ms;
        tq_run_result_t res = {0, NULL, 0};
        if (fn->cfn) {
            if (fn->slot_init && !inited) {
                if (fn->slot_init(fn->arg, slot, &slot_ctx) == 0)
                    inited = 1;
            }
            if (fn->slot_init && !inited) {
                tq_run_result_fmt(&res, TQ_RUN_FAILED, "%s: slot initialisation failed", fn->name);
            } else {
                tq_cfn_task_t task = {
                    .id = get_be64(req),
                    .attempt = get_be32(req + 8),
                    .slot = slot,
                    .slot_ctx = slot_ctx,
                    .cancel = NULL,
                };
                tq_cfn_run(fn, &ctx, &task, &res);
            }
        } else if (tq_builtin_run(fn->name, &ctx, &res) < 0) {
            tq_run_result_fmt(&res, TQ_RUN_FAILED, "function '%s' is not served here", fn->name);
        }
        uint8_t rh[CHILD_REPLY_HEADER];
        rh[0] = res.status == TQ_RUN_OK        ? REPLY_OK
                : res.status == TQ_RUN_TIMEOUT ? REPLY_TIMEOUT
                                               : REPLY_ERROR;
        put_be32(rh + 1, (uint32_t)res.len);
        /* One write for a small reply: the parent wakes once. */
        struct iovec iov[2] = {{rh, sizeof rh}, {res.data, res.len}};
        ssize_t w;
        while ((w = writev(fd, iov, 2)) < 0 && errno == EINTR)
            ;
        if (w < 0)
            _exit(3);
        size_t sent = (size_t)w;
        if (sent < sizeof rh) {
            if (tq_write_all(fd, rh + sent, sizeof rh - sent) < 0)
                _exit(3);
            sent = sizeof rh;
        }
        size_t done = sent - sizeof rh;
        if (done < res.len && tq_write_all(fd, res.data + done, res.len - done) < 0)
            _exit(3);
        tq_run_result_free(&res);
        free(req);
        if (oneshot)
            break;
    }
    if (inited && fn->slot_fini)
        fn->slot_fini(fn->arg, slot, slot_ctx);
    _exit(0);
}

/* In a fresh child: the task process's setup (limits, user, directory,
 * environment); with parent > 0 the parent-death signal (after the
 * setup: a change of user clears it), checked against a parent that
 * died meanwhile; the request socket as fd 3, stdin from /dev/null, no
 * other fd; then serve (worker: see child_serve). */
static void child_enter(const tq_fn_t *fn, int slot, int fd, int oneshot, const tq_limits_t *limits,
                        char **env, pid_t parent, pid_t worker)
{
    if (tq_command_child_setup(limits, env) < 0)
        _exit(1);
    if (parent > 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
    }
    /* The socket becomes fd 3 first (it may be 0..2 in a program that
     * closed those), then stdin is /dev/null. */
    if (fd != 3 && dup2(fd, 3) < 0)
        _exit(1);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    close_range(4, ~0U, 0);
    child_serve(fn, slot, 3, oneshot, worker);
}

void tq_child_main(const tq_fn_t *fn, int slot, int fd, int oneshot, pid_t worker)
{
    child_enter(fn, slot, fd, oneshot, &fn->limits, tq_command_task_env(), 0, worker);
    _exit(1);
}

static int start_forked(tq_child_t *c, const tq_run_ctx_t *ctx, char *why, size_t whylen)
{
    int oneshot = c->fn->mode == TASKQ_MODE_SPAWN;
    if (c->fn->forks) {
        int fd = -1;
        pid_t pid = tq_forkserver_spawn(c->fn->forks, c->fn, c->slot, oneshot, &fd, why, whylen);
        if (pid == -1)
            return -1;
        if (pid > 0) {
            tq_reaper_own(pid);
            c->pid = pid;
            c->wfd = c->rfd = fd;
            return 0;
        }
        /* -2: not a subreaper: fork it here (the fork server logged why) */
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(why, whylen, "socketpair: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    char **env = tq_command_task_env();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) /* dies with the worker (the forking slot thread lives as long) */
        child_enter(c->fn, c->slot, sv[1], oneshot, &ctx->limits, env, parent, 0);
    setpgid(pid, pid);
    tq_reaper_own(pid);
    close(sv[1]);
    c->pid = pid;
    c->wfd = c->rfd = sv[0];
    return 0;
}

/* ---- the coprocess -------------------------------------------------------- */

static int start_coprocess(tq_child_t *c, const tq_run_ctx_t *ctx, char *why, size_t whylen)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(out, O_CLOEXEC) < 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        close(in[0]);
        close(in[1]);
        return -1;
    }
    int e = 0;
    char *const *argv = tq_command_argv(c->fn->cmd);
    pid_t pid = tq_command_exec(argv, in[0], out[1], 2, &ctx->limits, &e);
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        snprintf(why, whylen, "cannot run '%s': %s", argv[0], strerror(e));
        close(in[1]);
        close(out[0]);
        return -1;
    }
    c->pid = pid;
    c->wfd = in[1];
    c->rfd = out[0];
    return 0;
}

/* ---- the parent's side ------------------------------------------------------ */

tq_child_t *tq_child_new(const tq_fn_t *fn, int slot)
{
    tq_child_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fn = fn;
    c->slot = slot;
    c->wfd = c->rfd = -1;
    return c;
}

static void close_channel(tq_child_t *c)
{
    if (c->rfd >= 0 && c->rfd != c->wfd)
        close(c->rfd);
    if (c->wfd >= 0)
        close(c->wfd);
    c->rfd = c->wfd = -1;
}

/* End the child: tell it (EOF on its input), wait up to grace_ms (0:
 * kill at once) for it to close its end and exit, then kill its group;
 * *st receives the wait status. Forgets the child. */
static void reap(tq_child_t *c, int64_t grace_ms, int *st)
{
    int status = 0, done = 0;
    int64_t until = tq_run_now_ms() + grace_ms;
    if (grace_ms > 0 && c->rfd >= 0) {
        if (c->rfd == c->wfd)
            shutdown(c->wfd, SHUT_WR);
        else if (c->wfd >= 0)
            close(c->wfd);
        c->wfd = c->rfd == c->wfd ? c->wfd : -1;
        /* Its end closes as it exits: wait for EOF, discarding output. */
        uint8_t junk[4096];
        for (;;) {
            int64_t left = until - tq_run_now_ms();
            if (left <= 0)
                break;
            struct pollfd pfd = {.fd = c->rfd, .events = POLLIN};
            if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
                break;
            ssize_t r = read(c->rfd, junk, sizeof junk);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
    }
    close_channel(c);
    /* Closed or not, the exit itself follows within moments. */
    while (grace_ms > 0) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid) {
            done = 1;
            break;
        }
        if ((r < 0 && errno != EINTR) || tq_run_now_ms() >= until)
            break;
        usleep(100);
    }
    /* Leftovers of its group (the leader's id stays reserved until it
     * is reaped, so this cannot hit a recycled group). */
    kill(-c->pid, SIGKILL);
    if (!done)
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
            ;
    tq_reaper_disown(c->pid);
    if (st)
        *st = status;
    c->pid = 0;
}

void tq_child_destroy(tq_child_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_child_t *c = *self_p;
    if (c->pid > 0)
        reap(c, TQ_CHILD_EXIT_GRACE_MS, NULL);
    close_channel(c);
    free(c);
    *self_p = NULL;
}

enum { EX_OK, EX_DIED, EX_TIMEOUT, EX_CANCELLED, EX_TOO_BIG, EX_NOMEM };

/* Send req and read one reply: *status, *data (heap, caller frees), *len. */
static int exchange(tq_child_t *c, const uint8_t *req, size_t reqlen, const tq_run_ctx_t *ctx,
                    uint8_t *status, uint8_t **data, size_t *len)
{
    size_t woff = 0, hoff = 0, doff = 0, dlen = 0;
    uint8_t hdr[CHILD_REPLY_HEADER];
    uint8_t *buf = NULL;
    int have_hdr = 0;
    for (;;) {
        int64_t wait = -1;
        if (ctx->deadline_ms > 0) {
            wait = ctx->deadline_ms - tq_run_now_ms();
            if (wait <= 0) {
                free(buf);
                return EX_TIMEOUT;
            }
        }
        struct pollfd pfd[3];
        int n = 0, i_cancel = -1, i_w = -1;
        int i_r = n;
        pfd[n++] = (struct pollfd){.fd = c->rfd, .events = POLLIN};
        if (woff < reqlen && c->wfd != c->rfd)
            i_w = n, pfd[n++] = (struct pollfd){.fd = c->wfd, .events = POLLOUT};
        else if (woff < reqlen)
            pfd[i_r].events |= POLLOUT, i_w = i_r;
        if (ctx->cancel_fd >= 0)
            i_cancel = n, pfd[n++] = (struct pollfd){.fd = ctx->cancel_fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, wait > INT32_MAX ? INT32_MAX : (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            return EX_DIED;
        }
        if (i_cancel >= 0 && pfd[i_cancel].revents) {
            free(buf);
            return EX_CANCELLED;
        }
        if (i_w >= 0 && (pfd[i_w].revents & (POLLOUT | POLLERR | POLLHUP)) && woff < reqlen) {
            ssize_t w = c->wfd == c->rfd ? send(c->wfd, req + woff, reqlen - woff, MSG_NOSIGNAL)
                                         : write(c->wfd, req + woff, reqlen - woff);
            if (w > 0)
                woff += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                free(buf);
                return EX_DIED;
            }
        }
        if (!(pfd[i_r].revents & (POLLIN | POLLERR | POLLHUP)))
            continue;
        for (;;) {
            ssize_t r;
            if (!have_hdr)
                r = read(c->rfd, hdr + hoff, sizeof hdr - hoff);
            else
                r = read(c->rfd, buf + doff, dlen - doff);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (r <= 0 && !(have_hdr && dlen == 0)) {
                free(buf);
                return EX_DIED;
            }
            if (!have_hdr) {
                hoff += (size_t)r;
                if (hoff < sizeof hdr)
                    continue;
                have_hdr = 1;
                dlen = get_be32(hdr + 1);
                if (dlen > ctx->max_result) /* the master's cap, results and errors alike */
                    return EX_TOO_BIG;
                buf = malloc(dlen ? dlen : 1);
                if (!buf)
                    return EX_NOMEM;
            } else {
                doff += (size_t)r;
            }
            if (have_hdr && doff == dlen) {
                if (woff < reqlen) { /* answered before reading it all */
                    free(buf);
                    return EX_DIED;
                }
                *status = hdr[0];
                *data = buf;
                *len = dlen;
                return EX_OK;
            }
        }
    }
}

void tq_child_run(tq_child_t *c, const tq_run_ctx_t *ctx, uint64_t id, uint32_t attempt,
                  tq_run_result_t *out)
{
    const tq_fn_t *fn = c->fn;
    int coproc = fn->mode == TASKQ_MODE_COPROCESS;
    const char *who = coproc ? "coprocess" : "worker child";
    char why[512];

    if (c->pid <= 0) {
        int rc = coproc ? start_coprocess(c, ctx, why, sizeof why)
                        : start_forked(c, ctx, why, sizeof why);
        if (rc < 0) {
            if (coproc)
                tq_run_result_fmt(out, TQ_RUN_FAILED, "%s", why);
            else
                tq_run_result_fmt(out, TQ_RUN_FAILED, "%s: cannot start a worker child: %s",
                                  fn->name, why);
            return;
        }
        int fl = fcntl(c->wfd, F_GETFL);
        fcntl(c->wfd, F_SETFL, fl | O_NONBLOCK);
        fl = fcntl(c->rfd, F_GETFL);
        fcntl(c->rfd, F_SETFL, fl | O_NONBLOCK);
    }

    size_t head = coproc ? 4 : 4 + CHILD_REQ_HEADER;
    if (ctx->len > UINT32_MAX - head) {
        tq_run_result_fmt(out, TQ_RUN_FAILED, "payload too large for a %s", who);
        return;
    }
    uint8_t *req = malloc(head + ctx->len);
    if (!req) {
        tq_run_result_fmt(out, TQ_RUN_FAILED, "worker out of memory for the payload");
        return;
    }
    put_be32(req, (uint32_t)(head - 4 + ctx->len));
    if (!coproc) {
        put_be64(req + 4, id);
        put_be32(req + 12, attempt);
        put_be32(req + 16, ctx->timeout_ms);
        put_be64(req + 20, ctx->max_result);
    }
    if (ctx->len)
        memcpy(req + head, ctx->payload, ctx->len);

    uint8_t status = 0;
    uint8_t *data = NULL;
    size_t len = 0;
    int ex = exchange(c, req, head + ctx->len, ctx, &status, &data, &len);
    free(req);
    int st = 0;
    char desc[128];
    switch (ex) {
    case EX_OK:
        if (status == REPLY_OK || status == REPLY_ERROR || (!coproc && status == REPLY_TIMEOUT)) {
            tq_run_result_free(out);
            out->status = status == REPLY_OK      ? TQ_RUN_OK
                          : status == REPLY_ERROR ? TQ_RUN_FAILED
                                                  : TQ_RUN_TIMEOUT;
            out->data = data;
            out->len = len;
            data = NULL;
        } else {
            reap(c, 0, NULL);
            tq_run_result_fmt(out, TQ_RUN_FAILED,
                              "%s broke the framing: reply status byte %u (0 or 1 expected)", who,
                              (unsigned)status);
        }
        if (c->pid > 0 && fn->mode == TASKQ_MODE_SPAWN)
            reap(c, TQ_CHILD_EXIT_GRACE_MS, NULL);
        break;
    case EX_DIED:
        /* It closed its end: most likely dying; give it a moment to. */
        reap(c, 500, &st);
        tq_child_describe(st, desc, sizeof desc);
        tq_run_result_fmt(out, TQ_RUN_FAILED, "%s died: %s", who, desc);
        break;
    case EX_TIMEOUT:
        reap(c, 0, NULL);
        tq_run_result_timeout(out, ctx);
        break;
    case EX_CANCELLED:
        reap(c, 0, NULL);
        tq_run_result_fmt(out, TQ_RUN_FAILED, "cancelled");
        break;
    case EX_TOO_BIG:
        reap(c, 0, NULL);
        tq_run_result_fmt(out, TQ_RUN_FAILED, "result exceeds max payload (%zu bytes)",
                          ctx->max_result);
        break;
    default:
        reap(c, 0, NULL);
        tq_run_result_fmt(out, TQ_RUN_FAILED, "worker out of memory for the result");
    }
    free(data);
}
