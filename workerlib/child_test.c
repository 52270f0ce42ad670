/* child_test.c - the execution modes' child processes (child.c): prefork
 * and spawn forks, a coprocess and its framing's edge cases, kills. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <sys/prctl.h>
#include <sys/resource.h>

#include "child.h"
#include "forkserver.h"
#include "reaper.h"
#include "tq_proto.h"
#include "tq_test.h"

/* A coprocess in Python (only double quotes: it goes inside single
 * ones): "die" exits 3, "garbage" answers status 9, "huge" answers 70,000
 * bytes, "slow" sleeps, anything else is echoed. */
static const char coproc_cmd[] = "python3 -c '\n"
                                 "import struct, sys, time\n"
                                 "i, o = sys.stdin.buffer, sys.stdout.buffer\n"
                                 "while True:\n"
                                 "    h = i.read(4)\n"
                                 "    if len(h) < 4: sys.exit(0)\n"
                                 "    p = i.read(struct.unpack(\">I\", h)[0])\n"
                                 "    if p == b\"die\": sys.exit(3)\n"
                                 "    if p == b\"slow\": time.sleep(30)\n"
                                 "    st, d = (9, b\"\") if p == b\"garbage\" else (0, b\"x\" * "
                                 "70000 if p == b\"huge\" else p)\n"
                                 "    o.write(struct.pack(\">BI\", st, len(d)) + d); o.flush()\n"
                                 "'";

static int f_crashy(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    if (len == 5 && memcmp(p, "crash", 5) == 0) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return taskq_result_printf(out, "pid %ld", (long)getpid());
}

static void run(tq_child_t *c, const char *payload, int64_t timeout_ms, size_t max, int cancel_fd,
                tq_run_result_t *r, char *text, size_t textlen)
{
    tq_run_ctx_t ctx = {(const uint8_t *)payload,
                        strlen(payload),
                        cancel_fd,
                        (uint32_t)timeout_ms,
                        timeout_ms ? tq_run_now_ms() + timeout_ms : 0,
                        max,
                        {0, 0}};
    tq_run_result_free(r);
    tq_child_run(c, &ctx, 1, 1, r);
    snprintf(text, textlen, "%.*s", (int)r->len, r->data ? (const char *)r->data : "");
}

static void test_prefork_and_spawn(void)
{
    tq_fn_t fn;
    memset(&fn, 0, sizeof fn);
    snprintf(fn.name, sizeof fn.name, "crashy");
    fn.cfn = f_crashy;
    fn.mode = TASKQ_MODE_PREFORK;
    tq_child_t *c = tq_child_new(&fn, 0);
    tq_run_result_t r = {0, NULL, 0};
    char a[128], b[128];
    run(c, "x", 0, 1024, -1, &r, a, sizeof a);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    run(c, "y", 0, 1024, -1, &r, b, sizeof b);
    CHECK_EQ_STR(a, b); /* the same long-lived child */
    run(c, "crash", 0, 1024, -1, &r, b, sizeof b);
    CHECK_EQ_INT(r.status, TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "worker child died: signal 11 (Segmentation fault)");
    run(c, "z", 0, 1024, -1, &r, b, sizeof b);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    CHECK(strcmp(a, b) != 0); /* restarted */
    tq_child_destroy(&c);
    CHECK(c == NULL);

    fn.mode = TASKQ_MODE_SPAWN;
    c = tq_child_new(&fn, 0);
    run(c, "x", 0, 1024, -1, &r, a, sizeof a);
    run(c, "y", 0, 1024, -1, &r, b, sizeof b);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    CHECK(strcmp(a, b) != 0); /* a process per task */
    tq_child_destroy(&c);

    /* a built-in in a fork */
    memset(&fn, 0, sizeof fn);
    snprintf(fn.name, sizeof fn.name, "square");
    fn.mode = TASKQ_MODE_PREFORK;
    c = tq_child_new(&fn, 0);
    run(c, "-7", 0, 1024, -1, &r, a, sizeof a);
    CHECK_EQ_STR(a, "-7 * -7 = 49");
    run(c, "x", 0, 1024, -1, &r, a, sizeof a);
    CHECK_EQ_INT(r.status, TQ_RUN_FAILED);
    CHECK_EQ_STR(a, "square: payload is not an integer: 'x'");
    tq_child_destroy(&c);
    tq_run_result_free(&r);
}

static void test_coprocess(void)
{
    char t[256];
    tq_err_t err;
    tq_command_t *command = tq_command_new(coproc_cmd, &err);
    CHECK(command != NULL);
    if (!command)
        return;
    tq_fn_t fn;
    memset(&fn, 0, sizeof fn);
    snprintf(fn.name, sizeof fn.name, "co");
    fn.cmd = command;
    fn.mode = TASKQ_MODE_COPROCESS;
    tq_child_t *c = tq_child_new(&fn, 0);
    tq_run_result_t r = {0, NULL, 0};

    run(c, "hello", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    CHECK_EQ_STR(t, "hello");
    run(c, "", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    CHECK_EQ_INT((int)r.len, 0);
    run(c, "die", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "coprocess died: exit status 3");
    run(c, "garbage", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "coprocess broke the framing: reply status byte 9 (0 or 1 expected)");
    run(c, "huge", 0, 100 * 1024, -1, &r, t, sizeof t);
    CHECK_EQ_INT(r.status, TQ_RUN_OK);
    CHECK_EQ_INT((int)r.len, 70000);
    run(c, "huge", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "result exceeds max payload (1024 bytes)");
    int64_t t0 = tq_run_now_ms();
    run(c, "slow", 300, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_INT(r.status, TQ_RUN_TIMEOUT);
    CHECK_EQ_STR(t, "timed out after 0.3 s");
    CHECK(tq_run_now_ms() - t0 < 5000);
    int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    run(c, "slow", 0, 1024, fd, &r, t, sizeof t);
    CHECK_EQ_STR(t, "cancelled");
    close(fd);
    run(c, "again", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "again");
    tq_child_destroy(&c);

    tq_command_t *missing = tq_command_new("/nonexistent/coproc", &err);
    fn.cmd = missing;
    c = tq_child_new(&fn, 0);
    run(c, "x", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "cannot run '/nonexistent/coproc': No such file or directory");
    tq_child_destroy(&c);
    tq_command_destroy(&missing);
    tq_command_destroy(&command);
    tq_run_result_free(&r);
}

/* Set after the fork server started: a stand-in for the worker's key. */
static char *late_secret;

static int f_probe(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p, (void)len, (void)arg;
    return taskq_result_printf(out, "ppid %ld secret %s", (long)getppid(),
                               late_secret ? late_secret : "none");
}

/* How many children this (single-threaded) test process has. */
static int count_children(void)
{
    char buf[64];
    snprintf(buf, sizeof buf, "/proc/self/task/%ld/children", (long)getpid());
    FILE *f = fopen(buf, "r");
    if (!f)
        return -1;
    int n = 0, pid;
    while (fscanf(f, "%d", &pid) == 1)
        n++;
    fclose(f);
    return n;
}

static void test_fork_server(void)
{
    char t[256], want[256], u[256];
    tq_fn_t fns[2];
    memset(fns, 0, sizeof fns);
    snprintf(fns[0].name, sizeof fns[0].name, "probe");
    fns[0].cfn = f_probe;
    fns[0].mode = TASKQ_MODE_PREFORK;
    snprintf(fns[1].name, sizeof fns[1].name, "square");
    fns[1].mode = TASKQ_MODE_SPAWN;
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    tq_err_t err;
    tq_forkserver_t *fs = tq_forkserver_start(fns, 2, NULL, tq_child_main, &err);
    CHECK(fs != NULL);
    if (!fs)
        return;
    late_secret = strdup("s3cret");
    fns[0].forks = fns[1].forks = fs;
    tq_run_result_t r = {0, NULL, 0};

    /* Not a subreaper: the child could not be ours, so it is forked here
     * (and holds what this process holds). */
    tq_child_t *c = tq_child_new(&fns[0], 0);
    run(c, "x", 0, 1024, -1, &r, t, sizeof t);
    snprintf(want, sizeof want, "ppid %ld secret s3cret", (long)getpid());
    CHECK_EQ_STR(t, want);
    tq_child_destroy(&c);

    /* A subreaper: children come from the server, yet are ours. */
    CHECK_EQ_INT(tq_reaper_start(), 0);
    c = tq_child_new(&fns[0], 1);
    run(c, "x", 0, 1024, -1, &r, t, sizeof t);
    snprintf(want, sizeof want, "ppid %ld secret none", (long)getpid());
    CHECK_EQ_STR(t, want);
    run(c, "y", 0, 1024, -1, &r, u, sizeof u);
    CHECK_EQ_STR(u, want); /* the same child, still ours */
    /* a timeout kills it; the next one is started and reaped as well */
    int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    run(c, "z", 0, 1024, fd, &r, t, sizeof t);
    CHECK_EQ_STR(t, "cancelled");
    close(fd);
    run(c, "w", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, want);
    tq_child_destroy(&c);
    c = tq_child_new(&fns[1], 0);
    run(c, "6", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "6 * 6 = 36");
    run(c, "7", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_STR(t, "7 * 7 = 49");
    tq_child_destroy(&c);

    /* At the descriptor limit the child's socket cannot arrive: a clear
     * failure, and the child is not left behind. */
    int lowest = dup(0);
    close(lowest);
    struct rlimit lim, tight;
    getrlimit(RLIMIT_NOFILE, &lim);
    tight = lim;
    tight.rlim_cur = (rlim_t)lowest;
    CHECK_EQ_INT(setrlimit(RLIMIT_NOFILE, &tight), 0);
    c = tq_child_new(&fns[0], 0);
    run(c, "x", 0, 1024, -1, &r, t, sizeof t);
    setrlimit(RLIMIT_NOFILE, &lim);
    CHECK_EQ_INT(r.status, TQ_RUN_FAILED);
    CHECK_EQ_STR(t, "probe: cannot start a worker child: the child's socket did not come from the "
                    "fork server (the worker is at its descriptor limit)");
    tq_child_destroy(&c);
    CHECK_EQ_INT(count_children(), 1); /* the server only */

    /* The server gone: a clear failure, no crash. */
    pid_t spid = tq_forkserver_pid(fs);
    kill(spid, SIGKILL);
    c = tq_child_new(&fns[0], 0);
    run(c, "x", 0, 1024, -1, &r, t, sizeof t);
    CHECK_EQ_INT(r.status, TQ_RUN_FAILED);
    snprintf(want, sizeof want,
             "probe: cannot start a worker child: the fork server (pid %ld) "
             "has exited",
             (long)spid);
    CHECK_EQ_STR(t, want);
    tq_child_destroy(&c);
    tq_forkserver_stop(&fs);
    CHECK(fs == NULL);
    free(late_secret);
    late_secret = NULL;
    tq_run_result_free(&r);
}

static void test_describe(void)
{
    char b[64];
    tq_child_describe(3 << 8, b, sizeof b);
    CHECK_EQ_STR(b, "exit status 3");
    tq_child_describe(SIGABRT, b, sizeof b);
    CHECK_EQ_STR(b, "signal 6 (Aborted)");
}

int main(void)
{
    RUN(test_prefork_and_spawn);
    RUN(test_coprocess);
    RUN(test_describe);
    RUN(test_fork_server);
    TEST_MAIN_END();
}
