/* command.c - split COMMAND into words; run it per task with posix_spawnp,
 * pipes driven by poll(), and process-group kills. */
#include "command.h"
#include "reaper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tq_proto.h"
#include "tq_util.h"

/* After the program exits, how long to keep reading pipes that a
 * leftover grandchild still holds open before killing the group. */
#define CMD_EXIT_GRACE_MS 100
/* Poll wake-up to notice the program exiting while its pipes stay open. */
#define CMD_EXIT_CHECK_MS 200
/* Bytes moved per read/write call. */
#define CMD_CHUNK 65536

struct tq_command {
    char *text;
    char **argv;
    size_t argc;
};

/* ---- word splitting ---------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} wbuf_t;

static int wbuf_put(wbuf_t *w, char c)
{
    if (w->len + 1 >= w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        char *p = realloc(w->buf, cap);
        if (!p)
            return -1;
        w->buf = p;
        w->cap = cap;
    }
    w->buf[w->len++] = c;
    w->buf[w->len] = '\0';
    return 0;
}

void tq_command_free_words(char **argv)
{
    if (!argv)
        return;
    for (size_t i = 0; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

int tq_command_split(const char *text, char ***argv_out, size_t *argc_out, tq_err_t *err)
{
    char **argv = calloc(TQ_COMMAND_MAX_WORDS + 1, sizeof *argv);
    size_t argc = 0;
    wbuf_t w = {0};
    int in_word = 0;
    const char *why = NULL;

    if (!argv) {
        tq_err_set(err, 0, "out of memory");
        return -1;
    }
    if (strlen(text) > TQ_COMMAND_MAX_TEXT) {
        why = "command is too long";
        goto fail;
    }
    for (const char *p = text;; p++) {
        char c = *p;
        if (c == '\0' || c == ' ' || c == '\t' || c == '\n') {
            if (in_word) {
                if (argc == TQ_COMMAND_MAX_WORDS) {
                    why = "too many words";
                    goto fail;
                }
                if (!w.buf && wbuf_put(&w, 'x') == 0)
                    w.len = 0, w.buf[0] = '\0'; /* an empty word such as '' */
                if (!w.buf)
                    goto oom;
                argv[argc++] = w.buf;
                w = (wbuf_t){0};
                in_word = 0;
            }
            if (c == '\0')
                break;
            continue;
        }
        in_word = 1;
        if (c == '\'') {
            for (p++; *p != '\''; p++) {
                if (*p == '\0') {
                    why = "unterminated single quote";
                    goto fail;
                }
                if (wbuf_put(&w, *p) < 0)
                    goto oom;
            }
        } else if (c == '"') {
            for (p++; *p != '"'; p++) {
                if (*p == '\0') {
                    why = "unterminated double quote";
                    goto fail;
                }
                if (*p == '\\' &&
                    (p[1] == '"' || p[1] == '\\' || p[1] == '$' || p[1] == '`' || p[1] == '\n')) {
                    p++;
                    if (*p == '\n')
                        continue; /* line continuation */
                }
                if (wbuf_put(&w, *p) < 0)
                    goto oom;
            }
        } else if (c == '\\') {
            p++;
            if (*p == '\0') {
                why = "trailing backslash";
                goto fail;
            }
            if (*p == '\n') {
                /* line continuation: not part of the word */
                if (!w.buf)
                    in_word = 0;
                continue;
            }
            if (wbuf_put(&w, *p) < 0)
                goto oom;
        } else {
            if (wbuf_put(&w, c) < 0)
                goto oom;
        }
    }
    if (argc == 0) {
        why = "empty command";
        goto fail;
    }
    *argv_out = argv;
    *argc_out = argc;
    return 0;
oom:
    why = "out of memory";
fail:
    tq_err_set(err, 0, "%s", why);
    free(w.buf);
    tq_command_free_words(argv);
    return -1;
}

tq_command_t *tq_command_new(const char *text, tq_err_t *err)
{
    tq_command_t *self = calloc(1, sizeof *self);
    if (!self) {
        tq_err_set(err, 0, "out of memory");
        return NULL;
    }
    self->text = strdup(text);
    if (!self->text || tq_command_split(text, &self->argv, &self->argc, err) < 0) {
        if (!self->text)
            tq_err_set(err, 0, "out of memory");
        free(self->text);
        free(self);
        return NULL;
    }
    return self;
}

void tq_command_destroy(tq_command_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_command_t *self = *self_p;
    tq_command_free_words(self->argv);
    free(self->text);
    free(self);
    *self_p = NULL;
}

char *const *tq_command_argv(const tq_command_t *self) { return self->argv; }

const char *tq_command_text(const tq_command_t *self) { return self->text; }

static void apply_limits(const tq_limits_t *l)
{
    if (l->memory) {
        struct rlimit r = {(rlim_t)l->memory, (rlim_t)l->memory};
        setrlimit(RLIMIT_AS, &r);
    }
    if (l->cpu_seconds) {
        struct rlimit r = {(rlim_t)l->cpu_seconds, (rlim_t)l->cpu_seconds + 1};
        setrlimit(RLIMIT_CPU, &r);
    }
}

static char **task_env;
static pthread_once_t task_env_once = PTHREAD_ONCE_INIT;
static tq_task_proc_t task_proc; /* set before tasks run, then read-only */
static char *task_dir;
static gid_t task_groups[TQ_TASK_MAX_GROUPS];
static pthread_mutex_t task_mu = PTHREAD_MUTEX_INITIALIZER;
/* Environments replaced by tq_command_set_task_proc (kept: see there). */
static char **retired[16];
static size_t nretired;

/* 1 if the variable entry "NAME=value" is one the list keeps: a name of
 * the comma list, or a prefix ending in '*'. */
static int env_kept(const char *entry, const char *list)
{
    size_t nlen = strcspn(entry, "=");
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len && p[len - 1] == '*') {
            if (nlen >= len - 1 && strncmp(entry, p, len - 1) == 0)
                return 1;
        } else if (len == nlen && strncmp(entry, p, len) == 0) {
            return 1;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static char *env_pair(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 2;
    char *e = tq_calloc(n, 1);
    snprintf(e, n, "%s=%s", name, value);
    return e;
}

/* Build task_env from environ and task_proc (once). The strings are
 * environ's own, or made here for a task user (kept for the process's
 * life). */
static void task_env_build(void)
{
    size_t n = 0, k = 0;
    while (environ && environ[n])
        n++;
    task_env = tq_calloc(n + 4, sizeof *task_env);
    const tq_task_proc_t *p = &task_proc;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        int keep = p->env ? env_kept(e, p->env) : strncmp(e, "TASKQ_", 6) != 0;
        if (keep && p->has_user &&
            (!strncmp(e, "HOME=", 5) || !strncmp(e, "USER=", 5) || !strncmp(e, "LOGNAME=", 8)))
            keep = 0; /* the task user's own, below */
        if (keep)
            task_env[k++] = environ[i];
    }
    if (p->has_user) {
        task_env[k++] = env_pair("HOME", p->home ? p->home : "/");
        task_env[k++] = env_pair("USER", p->user ? p->user : "");
        task_env[k++] = env_pair("LOGNAME", p->user ? p->user : "");
    }
    task_env[k] = NULL;
}

int tq_command_check_env(const tq_task_proc_t *p, tq_err_t *err)
{
    if (p->env) {
        for (const char *q = p->env; *q;) {
            size_t len = strcspn(q, ",");
            for (size_t i = 0; i < len; i++) {
                char c = q[i];
                int ok = c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (i > 0 && c >= '0' && c <= '9') || (c == '*' && i + 1 == len && i > 0);
                if (!ok) {
                    tq_err_set(err, 0,
                               "task environment: '%.*s' is not a variable name (letters, digits, "
                               "'_'; a trailing '*' for a prefix)",
                               (int)len, q);
                    return -1;
                }
            }
            q += len;
            if (*q == ',')
                q++;
        }
    }
    return 0;
}

int tq_command_set_task_proc(const tq_task_proc_t *p, tq_err_t *err)
{
    if (tq_command_check_env(p, err) < 0)
        return -1;
    if (p->has_user && (p->ngroups < 0 || p->ngroups > TQ_TASK_MAX_GROUPS)) {
        tq_err_set(err, 0, "task user: more than %d groups", TQ_TASK_MAX_GROUPS);
        return -1;
    }
    pthread_mutex_lock(&task_mu); /* workers of one process may start at once */
    task_proc = *p;
    task_proc.env = p->env ? tq_strdup(p->env) : NULL;
    task_proc.user = p->user ? tq_strdup(p->user) : NULL;
    task_proc.home = p->home ? tq_strdup(p->home) : NULL;
    task_dir = p->dir ? tq_strdup(p->dir) : NULL; /* an older one may be in use: kept */
    task_proc.dir = task_dir;
    if (p->has_user && p->ngroups > 0)
        memcpy(task_groups, p->groups, (size_t)p->ngroups * sizeof *task_groups);
    task_proc.groups = task_groups;
    /* Built now from task_proc, even if the default was built before.
     * Another worker of this process may be starting a child with the
     * old array this moment: it is kept (reachable), never freed. */
    pthread_once(&task_env_once, task_env_build);
    if (nretired < sizeof retired / sizeof *retired)
        retired[nretired++] = task_env;
    task_env_build();
    pthread_mutex_unlock(&task_mu);
    return 0;
}

int tq_command_task_proc_active(void) { return task_proc.dir != NULL || task_proc.has_user; }

char **tq_command_task_env(void)
{
    pthread_once(&task_env_once, task_env_build);
    return task_env;
}

/* In a fresh child (only async-signal-safe calls): own process group,
 * default signal dispositions, empty mask, limits, the task user (raw
 * system calls: this child has one thread, and glibc's wrappers would
 * try to reach the parent's), its directory, the task environment (a
 * pointer assignment: no allocation, no lock). */
int tq_command_child_setup(const tq_limits_t *limits, char **env)
{
    environ = env;
    setpgid(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    apply_limits(limits);
    const tq_task_proc_t *p = &task_proc;
    if (p->has_user) {
        if (syscall(SYS_setgroups, (size_t)p->ngroups, p->groups) < 0 ||
            syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0 ||
            syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0)
            return -1;
        if (syscall(SYS_setresuid, 0, 0, 0) == 0) { /* root must be out of reach */
            errno = EPERM;
            return -1;
        }
    }
    if (p->dir && chdir(p->dir) < 0)
        return -1;
    return 0;
}

pid_t tq_command_exec(char *const argv[], int fd0, int fd1, int fd2, const tq_limits_t *limits,
                      int *errno_out)
{
    int ep[2];
    char **env = tq_command_task_env();
    if (pipe2(ep, O_CLOEXEC) < 0) {
        *errno_out = errno;
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        *errno_out = errno;
        close(ep[0]);
        close(ep[1]);
        return -1;
    }
    if (pid == 0) {
        if (tq_command_child_setup(limits, env) < 0)
            goto failed;
        if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0)
            goto failed;
        /* Everything else closes at exec (ep[1] too, telling the parent
         * the exec worked). */
        close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        execvp(argv[0], argv);
    failed:;
        int e = errno;
        ssize_t w = write(ep[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no window where a kill misses it */
    tq_reaper_own(pid);
    close(ep[1]);
    int e = 0;
    ssize_t r;
    while ((r = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    if (r == (ssize_t)sizeof e) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        tq_reaper_disown(pid);
        *errno_out = e;
        return -1;
    }
    return pid;
}

/* ---- running ----------------------------------------------------------- */

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGSYS: return "SIGSYS";
    default: return "unknown signal";
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The stderr tail, trimmed of trailing whitespace, as "prefix: tail" or
 * just "prefix". */
static void fail_with_tail(tq_run_result_t *out, const char *prefix, const char *tail, size_t n)
{
    while (n && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' ' ||
                 tail[n - 1] == '\t'))
        n--;
    if (n)
        tq_run_result_fmt(out, TQ_RUN_FAILED, "%s: %.*s", prefix, (int)n, tail);
    else
        tq_run_result_fmt(out, TQ_RUN_FAILED, "%s", prefix);
}

enum { END_EXITED, END_TIMEOUT, END_CANCELLED, END_TOO_BIG, END_NOMEM };

void tq_command_run(const tq_command_t *self, const tq_run_ctx_t *ctx, tq_run_result_t *out)
{
    int in[2] = {-1, -1}, po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t all, none;
    pid_t pid;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        tq_run_result_fmt(out, TQ_RUN_FAILED, "cannot run '%s': pipe: %s", self->argv[0],
                          strerror(errno));
        close_fd(&in[0]), close_fd(&in[1]), close_fd(&po[0]), close_fd(&po[1]);
        return;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Belt and braces: our fds are O_CLOEXEC, libraries' may not be. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    posix_spawnattr_init(&attr);
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETSIGMASK);
    int rc;
    if (ctx->limits.memory || ctx->limits.cpu_seconds || tq_command_task_proc_active()) {
        /* posix_spawn cannot set limits or change user or directory:
         * fork, set up, exec. */
        int e = 0;
        pid = tq_command_exec(self->argv, in[0], po[1], pe[1], &ctx->limits, &e);
        rc = pid < 0 ? e : 0;
    } else {
        rc = posix_spawnp(&pid, self->argv[0], &fa, &attr, self->argv, tq_command_task_env());
        if (rc == 0)
            tq_reaper_own(pid);
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close_fd(&in[0]);
    close_fd(&po[1]);
    close_fd(&pe[1]);
    if (rc != 0) {
        tq_run_result_fmt(out, TQ_RUN_FAILED, "cannot run '%s': %s", self->argv[0], strerror(rc));
        close_fd(&in[1]), close_fd(&po[0]), close_fd(&pe[0]);
        return;
    }
    set_nonblock(in[1]);
    set_nonblock(po[0]);
    set_nonblock(pe[0]);

    uint8_t *res = NULL;
    size_t res_len = 0, res_cap = 0, in_off = 0;
    char tail[TQ_COMMAND_STDERR_TAIL];
    size_t tail_len = 0;
    uint8_t *chunk = malloc(CMD_CHUNK);
    int end = END_EXITED, exited = 0;
    int64_t exit_at = 0, tick = 1;

    if (!chunk)
        end = END_NOMEM;
    if (ctx->len == 0)
        close_fd(&in[1]);
    while (chunk) {
        int64_t now = tq_run_now_ms();
        if (!exited) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            /* WNOWAIT: the zombie keeps the pid, so killpg below cannot
             * hit a recycled process group. */
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                exited = 1;
                exit_at = now;
            }
        }
        if (exited && po[0] < 0 && pe[0] < 0)
            break;
        if (exited && now - exit_at >= CMD_EXIT_GRACE_MS)
            break;
        if (ctx->deadline_ms > 0 && now >= ctx->deadline_ms) {
            end = END_TIMEOUT;
            break;
        }
        struct pollfd pfd[4];
        int n = 0, i_cancel = -1, i_in = -1, i_out = -1, i_err = -1;
        if (ctx->cancel_fd >= 0)
            i_cancel = n, pfd[n++] = (struct pollfd){.fd = ctx->cancel_fd, .events = POLLIN};
        if (in[1] >= 0)
            i_in = n, pfd[n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (po[0] >= 0)
            i_out = n, pfd[n++] = (struct pollfd){.fd = po[0], .events = POLLIN};
        if (pe[0] >= 0)
            i_err = n, pfd[n++] = (struct pollfd){.fd = pe[0], .events = POLLIN};
        int64_t wait;
        if (exited)
            wait = CMD_EXIT_GRACE_MS - (now - exit_at);
        else if (po[0] < 0 && pe[0] < 0) {
            wait = tick; /* pipes closed: only the exit is left to see */
            tick = tick < 50 ? tick * 2 : 50;
        } else
            wait = CMD_EXIT_CHECK_MS;
        if (ctx->deadline_ms > 0 && ctx->deadline_ms - now < wait)
            wait = ctx->deadline_ms - now;
        if (wait < 0)
            wait = 0;
        int pr = poll(pfd, (nfds_t)n, (int)wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (i_cancel >= 0 && pfd[i_cancel].revents) {
            end = END_CANCELLED;
            break;
        }
        if (i_in >= 0 && pfd[i_in].revents) {
            ssize_t w = write(in[1], ctx->payload + in_off, ctx->len - in_off);
            if (w > 0)
                in_off += (size_t)w;
            /* EPIPE: the program does not read its input; that is its call. */
            if (in_off == ctx->len || (w < 0 && errno != EAGAIN && errno != EINTR))
                close_fd(&in[1]);
        }
        if (i_out >= 0 && pfd[i_out].revents) {
            for (;;) {
                ssize_t r = read(po[0], chunk, CMD_CHUNK);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    close_fd(&po[0]);
                    break;
                }
                if (r < 0)
                    break;
                if ((size_t)r > ctx->max_result - res_len ||
                    res_len + (size_t)r > ctx->max_result) {
                    end = END_TOO_BIG;
                    break;
                }
                if (res_len + (size_t)r > res_cap) {
                    size_t cap = res_cap ? res_cap : CMD_CHUNK;
                    while (cap < res_len + (size_t)r)
                        cap *= 2;
                    if (cap > ctx->max_result)
                        cap = ctx->max_result;
                    uint8_t *p = realloc(res, cap);
                    if (!p) {
                        end = END_NOMEM;
                        break;
                    }
                    res = p;
                    res_cap = cap;
                }
                memcpy(res + res_len, chunk, (size_t)r);
                res_len += (size_t)r;
            }
            if (end == END_TOO_BIG || end == END_NOMEM)
                break;
        }
        if (i_err >= 0 && pfd[i_err].revents) {
            for (;;) {
                ssize_t r = read(pe[0], chunk, CMD_CHUNK);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    close_fd(&pe[0]);
                    break;
                }
                if (r < 0)
                    break;
                size_t k = (size_t)r, keep = k < sizeof tail ? k : sizeof tail;
                if (tail_len + keep > sizeof tail) {
                    size_t drop = tail_len + keep - sizeof tail;
                    memmove(tail, tail + drop, tail_len - drop);
                    tail_len -= drop;
                }
                memcpy(tail + tail_len, chunk + k - keep, keep);
                tail_len += keep;
            }
        }
    }
    free(chunk);
    close_fd(&in[1]);
    close_fd(&po[0]);
    close_fd(&pe[0]);
    /* The group leader is not reaped yet, so its id still names this
     * group: kill whatever is left in it (grandchildren included). */
    kill(-pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    tq_reaper_disown(pid);

    switch (end) {
    case END_TIMEOUT: tq_run_result_timeout(out, ctx); break;
    case END_CANCELLED: tq_run_result_fmt(out, TQ_RUN_FAILED, "cancelled"); break;
    case END_TOO_BIG:
        tq_run_result_fmt(out, TQ_RUN_FAILED, "result exceeds max payload (%zu bytes)",
                          ctx->max_result);
        break;
    case END_NOMEM:
        tq_run_result_fmt(out, TQ_RUN_FAILED, "worker out of memory for the result");
        break;
    default:
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            tq_run_result_free(out);
            out->status = TQ_RUN_OK;
            out->data = res;
            out->len = res_len;
            res = NULL;
        } else if (WIFEXITED(st)) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "exit status %d", WEXITSTATUS(st));
            fail_with_tail(out, prefix, tail, tail_len);
        } else if (WIFSIGNALED(st)) {
            char prefix[80];
            snprintf(prefix, sizeof prefix, "killed by signal %d (%s)", WTERMSIG(st),
                     signal_name(WTERMSIG(st)));
            fail_with_tail(out, prefix, tail, tail_len);
        } else {
            tq_run_result_fmt(out, TQ_RUN_FAILED, "ended with wait status %d", st);
        }
    }
    free(res);
}
