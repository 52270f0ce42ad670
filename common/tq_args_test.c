/* tq_args_test.c - short forms, "--", negative numbers and suggestions. */
#include "tq_args.h"

#include "tq_test.h"

#include <stddef.h>
#include <string.h>

typedef struct {
    char *queue;
    int64_t priority;
    int json;
    int help;
} opts_t;

static const tq_cfg_entry_t table[] = {
    {"queue", TQ_CFG_STRING, "default", 0, 0, NULL, NULL, offsetof(opts_t, queue), "Q", "q"},
    {"priority", TQ_CFG_INT, "0", -100, 100, NULL, NULL, offsetof(opts_t, priority), "P", "p"},
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(opts_t, json), NULL, "j"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static const tq_short_t shorts[] = {{'q', "queue"}, {'p', "priority"}, {'j', "json"},
                                    {'h', "help"},  {'V', "version"},  {0, NULL}};

/* Expand argv (NULL-terminated) from word 1 and join the result with
 * spaces into buf; returns the expand's status (err in buf on -1). */
static int run(char **argv, char *buf, size_t len)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    tq_args_t a;
    char err[256];
    int rc = tq_args_expand(table, shorts, argc, argv, 1, &a, err, sizeof err);
    buf[0] = '\0';
    if (rc < 0) {
        snprintf(buf, len, "%s", err);
    } else {
        for (int i = 1; i < a.argc; i++) {
            strncat(buf, a.argv[i], len - strlen(buf) - 1);
            if (i + 1 < a.argc)
                strncat(buf, " ", len - strlen(buf) - 1);
        }
    }
    tq_args_free(&a);
    return rc;
}

#define EXPAND(want_rc, want, ...)                                                                 \
    do {                                                                                           \
        char *v_[] = {"taskq", __VA_ARGS__, NULL};                                                 \
        char b_[512];                                                                              \
        CHECK_EQ_INT(run(v_, b_, sizeof b_), want_rc);                                             \
        CHECK_EQ_STR(b_, want);                                                                    \
    } while (0)

static void test_expand(void)
{
    EXPAND(0, "--queue foo 1", "-q", "foo", "1");
    EXPAND(0, "--queue=foo 1", "-qfoo", "1");
    EXPAND(0, "--priority -5 -5", "-p", "-5", "-5");
    EXPAND(0, "--json --queue x -5 -q", "-j", "--queue", "x", "-5", "-q");
    EXPAND(0, "-- -h", "--", "-h");
    EXPAND(0, "- -j", "-", "-j");
    EXPAND(0, "--help", "-h");
    EXPAND(-1, "unknown option -V (a payload that starts with '-' goes after --)", "-V");
    EXPAND(-1, "unknown option -x (a payload that starts with '-' goes after --)", "-x", "1");
    EXPAND(-1, "unknown option --queu; did you mean --queue?", "--queu", "1");
    EXPAND(-1, "-j (--json) takes no value", "-jx");
    EXPAND(0, "--frobnicate 1", "--frobnicate", "1"); /* left for tq_cfg_parse to name */
}

static void test_suggest(void)
{
    const char *cmds[] = {"submit", "map", "wait", "status", "cancel", "dead", "retry"};
    size_t n = sizeof cmds / sizeof cmds[0];
    CHECK_EQ_STR(tq_args_suggest("stauts", 6, cmds, n), "status");
    CHECK_EQ_STR(tq_args_suggest("sumbit", 6, cmds, n), "submit");
    CHECK_EQ_STR(tq_args_suggest("mpa", 3, cmds, n), "map");
    CHECK_EQ_STR(tq_args_suggest("canc", 4, cmds, n), "cancel");
    CHECK(tq_args_suggest("frobnicate", 10, cmds, n) == NULL);
    CHECK(tq_args_suggest("", 0, cmds, n) == NULL);
}

int main(void)
{
    RUN(test_expand);
    RUN(test_suggest);
    TEST_MAIN_END();
}
