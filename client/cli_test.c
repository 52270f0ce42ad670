/* cli_test.c - argument errors of the taskq command, which need no
 * master: each case runs the binary (path in argv[1]) and checks the
 * exit status and that stderr names the flag or argument. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tq_test.h"

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
    EXPECT(8, "nonexistent", "--authkey-file", "/nonexistent/key", "--connect",
           "tcp://127.0.0.1:1", "--connect-timeout", "0.2", "status");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cli_test PATH-TO-taskq\n");
        return 2;
    }
    taskq_path = argv[1];
    RUN(test_usage_errors);
    RUN(test_help_and_version);
    RUN(test_no_master);
    TEST_MAIN_END();
}
