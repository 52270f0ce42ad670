/* command_test.c - word splitting and running external commands. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "command.h"
#include "tq_proto.h"
#include "tq_test.h"

static char **split_ok(const char *text, size_t want_argc)
{
    char **argv = NULL;
    tq_err_t err = {0, ""};
    size_t argc = 0;
    int rc = tq_command_split(text, &argv, &argc, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0)
        CHECK_EQ_INT(argc, want_argc);
    return argv;
}

static void split_fails(const char *text, const char *want)
{
    char **argv = NULL;
    tq_err_t err = {0, ""};
    size_t argc = 0;
    CHECK_EQ_INT(tq_command_split(text, &argv, &argc, &err), -1);
    CHECK_EQ_STR(err.msg, want);
}

static void test_split(void)
{
    char **a = split_ok("  wc  -l ", 2);
    if (a) {
        CHECK_EQ_STR(a[0], "wc");
        CHECK_EQ_STR(a[1], "-l");
        CHECK(a[2] == NULL);
    }
    tq_command_free_words(a);
    a = split_ok("sh -c 'echo \"hi there\"; exit 3'", 3);
    if (a)
        CHECK_EQ_STR(a[2], "echo \"hi there\"; exit 3");
    tq_command_free_words(a);
    a = split_ok("printf \"a\\\"b\\\\c\\d$HOME\"", 2);
    if (a)
        CHECK_EQ_STR(a[1], "a\"b\\c\\d$HOME");
    tq_command_free_words(a);
    a = split_ok("a\\ b c\\'d '' x''y", 4);
    if (a) {
        CHECK_EQ_STR(a[0], "a b");
        CHECK_EQ_STR(a[1], "c'd");
        CHECK_EQ_STR(a[2], "");
        CHECK_EQ_STR(a[3], "xy");
    }
    tq_command_free_words(a);
    a = split_ok("echo *.c | wc > out", 6); /* no shell: metacharacters are words */
    if (a)
        CHECK_EQ_STR(a[2], "|");
    tq_command_free_words(a);
    split_fails("sh -c 'echo", "unterminated single quote");
    split_fails("echo \"abc", "unterminated double quote");
    split_fails("echo abc\\", "trailing backslash");
    split_fails("   ", "empty command");
    split_fails("", "empty command");
}

/* Run text with payload; result text into buf; returns status. */
static int run_cmd(const char *text, const char *payload, size_t len, uint32_t timeout_ms,
                   size_t max, char *buf, size_t buflen, tq_run_result_t *keep)
{
    tq_err_t err;
    tq_command_t *c = tq_command_new(text, &err);
    CHECK(c != NULL);
    if (!c)
        return -1;
    tq_run_ctx_t ctx = {(const uint8_t *)payload,
                        len,
                        -1,
                        timeout_ms,
                        timeout_ms ? tq_run_now_ms() + timeout_ms : 0,
                        max,
                        {0, 0}};
    tq_run_result_t r = {0};
    tq_command_run(c, &ctx, &r);
    tq_command_destroy(&c);
    CHECK(c == NULL);
    if (buf)
        snprintf(buf, buflen, "%.*s", (int)(r.len > 4000 ? 4000 : r.len),
                 r.data ? (const char *)r.data : "");
    int st = r.status;
    if (keep)
        *keep = r;
    else
        tq_run_result_free(&r);
    return st;
}

static void test_run_basic(void)
{
    char b[4096];
    CHECK_EQ_INT(run_cmd("sh -c 'echo hi'", "", 0, 0, 1024, b, sizeof b, NULL), TQ_RUN_OK);
    CHECK_EQ_STR(b, "hi\n");
    CHECK_EQ_INT(run_cmd("tr a-z A-Z", "hello", 5, 0, 1024, b, sizeof b, NULL), TQ_RUN_OK);
    CHECK_EQ_STR(b, "HELLO");
    CHECK_EQ_INT(run_cmd("sh -c 'echo oops >&2; echo bad >&2; exit 3'", "", 0, 0, 1024, b, sizeof b,
                         NULL),
                 TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "exit status 3: oops\nbad");
    CHECK_EQ_INT(run_cmd("sh -c 'exit 4'", "", 0, 0, 1024, b, sizeof b, NULL), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "exit status 4");
    CHECK_EQ_INT(run_cmd("sh -c 'echo dying >&2; kill -9 $$'", "", 0, 0, 1024, b, sizeof b, NULL),
                 TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "killed by signal 9 (SIGKILL): dying");
    CHECK_EQ_INT(run_cmd("/nonexistent/prog", "", 0, 0, 1024, b, sizeof b, NULL), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "cannot run '/nonexistent/prog': No such file or directory");
    CHECK_EQ_INT(run_cmd("taskq-no-such-command-xyz", "", 0, 0, 1024, b, sizeof b, NULL),
                 TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "cannot run 'taskq-no-such-command-xyz': No such file or directory");
    /* A program that ignores its input must not hang us or kill us (SIGPIPE). */
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    CHECK_EQ_INT(run_cmd("true", big, sizeof big, 0, 1024, b, sizeof b, NULL), TQ_RUN_OK);
    /* Only 0, 1, 2 are inherited. */
    CHECK_EQ_INT(run_cmd("sh -c 'ls /proc/self/fd | wc -l'", "", 0, 0, 1024, b, sizeof b, NULL),
                 TQ_RUN_OK);
    CHECK_EQ_STR(b, "4\n"); /* 0, 1, 2 and ls's own directory fd */
    /* The child starts with SIGPIPE at its default (we ignore it). */
    CHECK_EQ_INT(run_cmd("sh -c 'kill -PIPE $$; echo survived'", "", 0, 0, 1024, b, sizeof b, NULL),
                 TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "killed by signal 13 (SIGPIPE)");
}

static void test_stderr_tail(void)
{
    char b[8192];
    /* 10000 bytes of 'e' then a last line: the error keeps the last 4 KiB. */
    CHECK_EQ_INT(run_cmd("sh -c 'head -c 10000 /dev/zero | tr \"\\000\" e >&2; echo END >&2; "
                         "exit 1'",
                         "", 0, 0, 1024, NULL, 0, NULL),
                 TQ_RUN_FAILED);
    tq_run_result_t r;
    run_cmd("sh -c 'head -c 10000 /dev/zero | tr \"\\000\" e >&2; echo END >&2; exit 1'", "", 0, 0,
            1024, b, sizeof b, &r);
    CHECK(r.len <= strlen("exit status 1: ") + TQ_COMMAND_STDERR_TAIL);
    CHECK(r.len > 3 && memcmp(r.data + r.len - 4, "eEND", 4) == 0);
    tq_run_result_free(&r);
}

static void test_big_io(void)
{
    size_t n = 4u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    tq_run_result_t r;
    CHECK_EQ_INT(run_cmd("cat", big, n, 0, 64u << 20, NULL, 0, &r), TQ_RUN_OK);
    CHECK(r.len == n && memcmp(r.data, big, n) == 0);
    tq_run_result_free(&r);
    /* Over the cap: killed, with the limit in the message. */
    char b[256];
    CHECK_EQ_INT(run_cmd("cat", big, n, 0, 1u << 20, b, sizeof b, NULL), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "result exceeds max payload (1048576 bytes)");
    free(big);
}

static void test_timeout_kills_group(void)
{
    char b[256], pidfile[] = "/tmp/tq-cmdtest-XXXXXX";
    int fd = mkstemp(pidfile);
    CHECK(fd >= 0);
    close(fd);
    char cmd[512];
    /* The grandchild records its pid and would outlive a plain kill of sh. */
    snprintf(cmd, sizeof cmd, "sh -c 'sleep 30 & echo $! > %s; wait'", pidfile);
    int64_t t0 = tq_run_now_ms();
    CHECK_EQ_INT(run_cmd(cmd, "", 0, 300, 1024, b, sizeof b, NULL), TQ_RUN_TIMEOUT);
    CHECK(tq_run_now_ms() - t0 < 5000);
    CHECK_EQ_STR(b, "timed out after 0.3 s");
    FILE *f = fopen(pidfile, "r");
    long gpid = 0;
    if (f) {
        if (fscanf(f, "%ld", &gpid) != 1)
            gpid = 0;
        fclose(f);
    }
    CHECK(gpid > 0);
    if (gpid > 0) {
        usleep(100 * 1000);
        /* Gone (or a zombie reparented to init that is being reaped). */
        char path[64], st[256] = "";
        snprintf(path, sizeof path, "/proc/%ld/stat", gpid);
        FILE *p = fopen(path, "r");
        if (p) {
            if (!fgets(st, sizeof st, p))
                st[0] = '\0';
            fclose(p);
        }
        CHECK(!p || strstr(st, ") Z ") != NULL);
    }
    unlink(pidfile);
}

static void test_cancel(void)
{
    tq_err_t err;
    tq_command_t *c = tq_command_new("sleep 30", &err);
    int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    tq_run_ctx_t ctx = {(const uint8_t *)"", 0, fd, 0, 0, 1024, {0, 0}};
    tq_run_result_t r = {0};
    int64_t t0 = tq_run_now_ms();
    tq_command_run(c, &ctx, &r);
    CHECK(tq_run_now_ms() - t0 < 2000);
    tq_run_result_free(&r);
    close(fd);
    tq_command_destroy(&c);
}

/* --task-dir and --task-env (tq_command_set_task_proc): the child runs
 * in the directory with only the variables named; bad names are refused.
 * (--task-user needs root: tests/integration/test_privdrop.py.) */
static void test_task_proc(void)
{
    char b[4096];
    tq_err_t err;
    tq_task_proc_t bad = {.env = "PATH,A B"};
    CHECK_EQ_INT(tq_command_check_env(&bad, &err), -1);
    CHECK(strstr(err.msg, "'A B' is not a variable name") != NULL);
    bad.env = "1ABC";
    CHECK_EQ_INT(tq_command_check_env(&bad, &err), -1);
    bad.env = "*";
    CHECK_EQ_INT(tq_command_check_env(&bad, &err), -1);
    setenv("TQTEST_KEPT", "1", 1);
    setenv("TQTEST2", "no", 1);
    setenv("TASKQ_AUTHKEY_FILE", "/secret/path", 1);
    tq_task_proc_t p = {.dir = "/", .env = "PATH,TQTEST_*"};
    CHECK_EQ_INT(tq_command_set_task_proc(&p, &err), 0);
    CHECK_EQ_INT(tq_command_task_proc_active(), 1);
    CHECK_EQ_INT(run_cmd("sh -c 'pwd; env | grep -v ^PWD= | grep -v ^SHLVL= | grep -v ^_= | sort'",
                         "", 0, 0, 4096, b, sizeof b, NULL),
                 TQ_RUN_OK);
    CHECK(strncmp(b, "/\nPATH=", 7) == 0);
    CHECK(strstr(b, "TQTEST_KEPT=1\n") != NULL);
    CHECK(strstr(b, "TQTEST2") == NULL);
    CHECK(strstr(b, "TASKQ_") == NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as taskq-worker does */
    RUN(test_split);
    RUN(test_run_basic);
    RUN(test_stderr_tail);
    RUN(test_big_io);
    RUN(test_timeout_kills_group);
    RUN(test_cancel);
    RUN(test_task_proc); /* last: it sets up every later child */
    TEST_MAIN_END();
}
