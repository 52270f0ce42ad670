/* cli_test.c - argument errors of the taskq command, which need no
 * master: each case runs the binary (path in argv[1]) and checks the
 * exit status and that stderr names the flag or argument. Also the
 * parsers behind --delay and --at (when.c), called directly. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tq_test.h"
#include "when.h"

static const char *taskq_path;

/* Run taskq with args (NULL-terminated); stdout/stderr text into out/err. */
static int run(char *const args[], char *out, size_t outsz, char *err, size_t errsz)
{
    int po[2], pe[2];
    if (pipe(po) < 0 || pipe(pe) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclose(&fa, po[0]);
    posix_spawn_file_actions_addclose(&fa, pe[0]);
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)taskq_path;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    /* No TASKQ_* from the environment of whoever runs the tests. */
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, taskq_path, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0)
        return -1;
    ssize_t k = read(po[0], out, outsz - 1); /* outputs here are small */
    out[k > 0 ? k : 0] = '\0';
    k = read(pe[0], err, errsz - 1);
    err[k > 0 ? k : 0] = '\0';
    close(po[0]);
    close(pe[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define EXPECT(status, needle, ...)                                                                \
    do {                                                                                           \
        char *a_[] = {__VA_ARGS__, NULL};                                                          \
        char o_[8192], e_[8192];                                                                   \
        CHECK_EQ_INT(run(a_, o_, sizeof o_, e_, sizeof e_), status);                               \
        if (!strstr(e_, needle) && !strstr(o_, needle)) {                                          \
            CHECK(!"output names it");                                                             \
            fprintf(stderr, "  expected '%s' in: %s%s", needle, o_, e_);                           \
        }                                                                                          \
    } while (0)

static void test_usage_errors(void)
{
    EXPECT(2, "no COMMAND", "--connect", "tcp://127.0.0.1:1");
    EXPECT(2, "unknown command 'frob'", "frob");
    EXPECT(2, "unknown option --bogus", "--bogus", "status");
    EXPECT(2, "--priority: 'x' is not a number", "submit", "--priority", "x", "1");
    EXPECT(2, "--retries", "submit", "--retries", "70000", "1");
    EXPECT(2, "--fn: 'a b' is not a valid function name", "map", "--fn", "a b", "1");
    EXPECT(2, "--queue", "submit", "--queue", "q/1", "1");
    EXPECT(2, "--window", "map", "--window", "0", "1");
    EXPECT(2, "--timeout", "wait", "--timeout", "soon", "1");
    EXPECT(2, "'abc' is not a task id", "wait", "abc");
    EXPECT(2, "'0' is not a task id", "cancel", "0");
    EXPECT(2, "'-3' is not a task id", "wait", "1", "-3");
    EXPECT(2, "no task ID", "wait");
    EXPECT(2, "no PAYLOAD", "submit");
    EXPECT(2, "'-' (read stdin) must be the only PAYLOAD", "map", "1", "-");
    EXPECT(2, "--key", "submit", "--key", "k", "1", "2");
    EXPECT(2, "unexpected argument", "status", "extra");
    EXPECT(2, "--connect-timeout", "--connect-timeout", "-1", "status");
    /* valid arguments, but no key anywhere */
    EXPECT(2, "no authkey: give --authkey-file FILE or set TASKQ_AUTHKEY_FILE", "status");
    EXPECT(2, "no authkey", "map", "1", "2");
}

static void test_admin_usage_errors(void)
{
    EXPECT(2, "give task IDs or --all, not both", "retry", "--all", "5");
    EXPECT(2, "give task IDs or --all, not both", "purge", "--all", "-");
    EXPECT(2, "--queue goes with --all", "purge", "--queue", "q", "5");
    EXPECT(2, "no task ID", "retry");
    EXPECT(2, "'x' is not a task id", "purge", "x");
    EXPECT(2, "--queue: 'a b' is not a valid queue name", "retry", "--all", "--queue", "a b");
    EXPECT(2, "--queue: 'q/1' is not a valid queue name", "dead", "--queue", "q/1");
    EXPECT(2, "unexpected argument 'x'", "dead", "x");
    EXPECT(2, "pause: no QUEUE given", "pause");
    EXPECT(2, "pause: 'a/b' is not a valid queue name", "pause", "a/b");
    EXPECT(2, "resume: unexpected argument 'r'", "resume", "q", "r");
    /* valid: only the key is missing (so nothing connected) */
    EXPECT(2, "no authkey", "retry", "--all", "--queue", "q");
    EXPECT(2, "no authkey", "pause", "mail");
    EXPECT(2, "no authkey", "dead", "--json");
}

static void test_delay_at_flags(void)
{
    EXPECT(2, "--delay and --at cannot be used together", "submit", "--delay", "1", "--at",
           "2026-11-22T10:00:00Z", "1");
    EXPECT(2, "--delay: '-1' is not a number of seconds", "submit", "--delay", "-1", "1");
    EXPECT(2, "--delay: 'soon'", "map", "--delay", "soon", "1");
    EXPECT(2, "--delay: '315576000.001'", "submit", "--delay", "315576000.001", "1");
    EXPECT(2, "--at: '2026-02-29T10:00:00Z' is not an RFC 3339 time", "submit", "--at",
           "2026-02-29T10:00:00Z", "1");
    EXPECT(2, "--at: 'tomorrow'", "map", "--at", "tomorrow", "1");
    EXPECT(2, "--at: '9999-12-31T23:59:59.5Z' is after", "submit", "--at", "9999-12-31T23:59:59.5Z",
           "1");
    EXPECT(2, "no authkey", "submit", "--delay", "315576000", "1");
    EXPECT(2, "no authkey", "map", "--at", "2024-02-29t10:00:00z", "1");
    EXPECT(0, "--delay SECONDS", "submit", "--help");
    EXPECT(0, "--at TIME", "map", "--help");
}

/* tq_when_parse_at accepts s and gives want (Unix ms). */
static void at_ok(const char *s, int64_t want)
{
    int64_t ms = -1;
    CHECK_EQ_INT(tq_when_parse_at(s, &ms), 0);
    if (ms != want)
        fprintf(stderr, "  for '%s'\n", s);
    CHECK_EQ_INT(ms, want);
}

static void at_bad(const char *s)
{
    int64_t ms = 12345;
    int rc = tq_when_parse_at(s, &ms);
    if (rc != -1)
        fprintf(stderr, "  accepted '%s'\n", s);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(ms, 12345); /* untouched */
}

static void test_rfc3339_good(void)
{
    at_ok("1970-01-01T00:00:00Z", 0);
    at_ok("2026-11-22T10:00:00Z", 1795341600000LL);
    at_ok("2026-11-22t10:00:00z", 1795341600000LL);
    at_ok("2026-11-22T10:00:00+00:00", 1795341600000LL);
    at_ok("2026-11-22T10:00:00-00:00", 1795341600000LL);
    at_ok("2026-11-22T10:00:00.5+01:00", 1795338000500LL);
    at_ok("2026-11-22T10:00:00.500000000+01:00", 1795338000500LL);
    at_ok("2026-11-22T10:30:00.1234+05:30", 1795323600123LL); /* 05:00:00.123Z */
    at_ok("2026-11-22T00:00:00+01:00", 1795302000000LL);      /* the day before in UTC */
    at_ok("2024-02-29T23:59:59.999-00:30", 1709252999999LL);  /* leap day, into March */
    at_ok("2000-02-29T12:00:00Z", 951825600000LL);            /* divisible by 400: leap */
    at_ok("9999-12-31T23:59:59Z", 253402300799000LL);
}

static void test_rfc3339_bad(void)
{
    at_bad("");
    at_bad("2026-11-22");                      /* no time */
    at_bad("2026-11-22T10:00:00");             /* no offset: a local time */
    at_bad("2026-11-22 10:00:00Z");            /* RFC 3339 allows it; we keep to 'T' */
    at_bad("2026-11-22T10:00Z");               /* no seconds */
    at_bad("2026-11-22T10:00:00.Z");           /* empty fraction */
    at_bad("2026-11-22T10:00:00.1234567891Z"); /* 10 fraction digits */
    at_bad("2026-11-22T10:00:00+0100");        /* offset without ':' */
    at_bad("2026-11-22T10:00:00+01");
    at_bad("2026-11-22T10:00:00+24:00");
    at_bad("2026-11-22T10:00:00+01:60");
    at_bad("2026-02-30T10:00:00Z"); /* no Feb 30 */
    at_bad("2026-02-29T10:00:00Z"); /* 2026 is not a leap year */
    at_bad("2100-02-29T10:00:00Z"); /* divisible by 100, not 400 */
    at_bad("2026-04-31T10:00:00Z");
    at_bad("2026-13-01T10:00:00Z");
    at_bad("2026-00-01T10:00:00Z");
    at_bad("2026-11-00T10:00:00Z");
    at_bad("2026-11-22T24:00:00Z");
    at_bad("2026-11-22T10:60:00Z");
    at_bad("2026-12-31T23:59:60Z"); /* leap seconds are refused */
    at_bad(" 2026-11-22T10:00:00Z");
    at_bad("2026-11-22T10:00:00Z ");
    at_bad("2026-11-22T10:00:00Zjunk");
    at_bad("26-11-22T10:00:00Z");
    at_bad("+2026-11-22T10:00:00Z");
    at_bad("2026-1-22T10:00:00Z");
    at_bad("1969-12-31T23:59:59Z");      /* before 1970 */
    at_bad("1970-01-01T00:30:00+01:00"); /* the same, by its offset */
    at_bad("2026-11-22T10:00:00.5x");
}

static void test_delay(void)
{
    int64_t ms = -1;
    CHECK_EQ_INT(tq_when_parse_delay("0", &ms), 0);
    CHECK_EQ_INT(ms, 0);
    CHECK_EQ_INT(tq_when_parse_delay("2", &ms), 0);
    CHECK_EQ_INT(ms, 2000);
    CHECK_EQ_INT(tq_when_parse_delay("1.5", &ms), 0);
    CHECK_EQ_INT(ms, 1500);
    CHECK_EQ_INT(tq_when_parse_delay("0.0019", &ms), 0);
    CHECK_EQ_INT(ms, 1); /* ms precision, rounded down */
    CHECK_EQ_INT(tq_when_parse_delay(".25", &ms), 0);
    CHECK_EQ_INT(ms, 250);
    CHECK_EQ_INT(tq_when_parse_delay("315576000", &ms), 0); /* 10 years */
    CHECK_EQ_INT(ms, TQ_WHEN_MAX_DELAY_MS);
    ms = 7;
    CHECK_EQ_INT(tq_when_parse_delay("315576000.001", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("-1", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("1e3", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("1.", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("1s", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay(" 1", &ms), -1);
    CHECK_EQ_INT(tq_when_parse_delay("99999999999999999999", &ms), -1);
    CHECK_EQ_INT(ms, 7);
}

static void test_format_utc(void)
{
    char b[TQ_WHEN_UTC_LEN];
    tq_when_format_utc(0, b, sizeof b);
    CHECK_EQ_STR(b, "1970-01-01T00:00:00Z");
    tq_when_format_utc(1795341600999LL, b, sizeof b);
    CHECK_EQ_STR(b, "2026-11-22T10:00:00Z");
    tq_when_format_utc(1709252999999LL, b, sizeof b);
    CHECK_EQ_STR(b, "2024-03-01T00:29:59Z");
    tq_when_format_utc(951825600000LL - 12 * 3600000LL, b, sizeof b);
    CHECK_EQ_STR(b, "2000-02-29T00:00:00Z");
    tq_when_format_utc(253402300799999LL, b, sizeof b);
    CHECK_EQ_STR(b, "9999-12-31T23:59:59Z");
    tq_when_format_utc(253402300800000LL, b, sizeof b);
    CHECK_EQ_STR(b, "-");
    tq_when_format_utc(-1, b, sizeof b);
    CHECK_EQ_STR(b, "-");
    /* parse and format agree on every day boundary of a leap year */
    for (int64_t day = 19723; day < 19723 + 366 + 365; day++) { /* 2024-01-01 .. 2025-12-31 */
        int64_t ms;
        tq_when_format_utc(day * 86400000LL + 3723000, b, sizeof b);
        CHECK_EQ_INT(tq_when_parse_at(b, &ms), 0);
        CHECK_EQ_INT(ms, day * 86400000LL + 3723000);
    }
}

static void test_help_and_version(void)
{
    EXPECT(0, "exit status:", "--help");
    EXPECT(0, "--window N", "map", "--help");
    EXPECT(0, "--key KEY", "submit", "--help");
    EXPECT(0, "taskq 0.1.0", "--version");
}

static void test_no_master(void)
{
    /* Nothing listens on port 1; a missing key file is an env error (8). */
    EXPECT(8, "nonexistent", "--authkey-file", "/nonexistent/key", "--connect", "tcp://127.0.0.1:1",
           "--connect-timeout", "0.2", "status");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cli_test PATH-TO-taskq\n");
        return 2;
    }
    taskq_path = argv[1];
    RUN(test_usage_errors);
    RUN(test_admin_usage_errors);
    RUN(test_delay_at_flags);
    RUN(test_rfc3339_good);
    RUN(test_rfc3339_bad);
    RUN(test_delay);
    RUN(test_format_utc);
    RUN(test_help_and_version);
    RUN(test_no_master);
    TEST_MAIN_END();
}
