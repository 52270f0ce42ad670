/* tq_config_test.c - table-driven settings: defaults, environment,
 * flags, every type, the error messages, --help and Markdown output. */
#include "tq_config.h"

#include "tq_test.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t concurrency;
    int64_t heartbeat_ms;
    int64_t max_payload;
    char *connect;
    char *name;
    char *fsync;
    int verbose;
    tq_strlist_t fn;
    int64_t retries;
} settings_t;

static const tq_cfg_entry_t table[] = {
    {"concurrency", TQ_CFG_INT, "0", 0, 4096, NULL, NULL, offsetof(settings_t, concurrency), "N",
     "tasks run at once (0: cores)"},
    {"heartbeat-interval", TQ_CFG_MS, "1.5", 100, 60000, NULL, "TQTEST_HEARTBEAT",
     offsetof(settings_t, heartbeat_ms), "SECONDS", "how often to send a heartbeat"},
    {"max-payload", TQ_CFG_SIZE, "1M", 1024, (int64_t)1 << 30, NULL, NULL,
     offsetof(settings_t, max_payload), "BYTES", "largest payload"},
    {"connect", TQ_CFG_STRING, "tcp://127.0.0.1:7070", 0, 0, NULL, "TQTEST_CONNECT",
     offsetof(settings_t, connect), "ENDPOINT", "master address"},
    {"name", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, name), "NAME",
     "worker name"},
    {"fsync", TQ_CFG_ENUM, "interval", 0, 0, "always|interval|off", NULL,
     offsetof(settings_t, fsync), NULL, "when to sync the journal"},
    {"verbose", TQ_CFG_FLAG, NULL, 0, 0, NULL, "TQTEST_VERBOSE", offsetof(settings_t, verbose),
     NULL, "log more"},
    {"fn", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, offsetof(settings_t, fn), "NAME=COMMAND",
     "a function this worker serves"},
    {"retries", TQ_CFG_INT, "-1", -1, 100, NULL, NULL, offsetof(settings_t, retries), "N",
     "retries (-1: default)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static char err[512];
static int argi, help;

/* Parse a NULL-terminated argv (argv[0] is the program) into *s. */
static int parse(settings_t *s, const char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    memset(s, 0x5a, sizeof *s); /* the struct need not start zeroed */
    argi = 1;
    help = -1;
    err[0] = '\0';
    return tq_cfg_parse(table, s, argc, (char **)args, &argi, &help, err, sizeof err);
}

static void clear_env(void)
{
    unsetenv("TQTEST_HEARTBEAT");
    unsetenv("TQTEST_CONNECT");
    unsetenv("TQTEST_VERBOSE");
}

static void test_defaults(void)
{
    settings_t s;
    const char *args[] = {"prog", NULL};
    CHECK_EQ_INT(parse(&s, args), 0);
    CHECK_EQ_INT(argi, 1);
    CHECK_EQ_INT(help, 0);
    CHECK_EQ_INT(s.concurrency, 0);
    CHECK_EQ_INT(s.heartbeat_ms, 1500);
    CHECK_EQ_INT(s.max_payload, 1 << 20);
    CHECK_EQ_STR(s.connect, "tcp://127.0.0.1:7070");
    CHECK(s.name == NULL);
    CHECK_EQ_STR(s.fsync, "interval");
    CHECK_EQ_INT(s.verbose, 0);
    CHECK_EQ_INT(s.fn.n, 0);
    CHECK(s.fn.items == NULL);
    CHECK_EQ_INT(s.retries, -1);
    tq_cfg_free(table, &s);
    CHECK(s.connect == NULL);

    settings_t d;
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(tq_cfg_defaults(table, &d, err, sizeof err), 0);
    CHECK_EQ_INT(d.heartbeat_ms, 1500);
    CHECK_EQ_STR(d.fsync, "interval");
    tq_cfg_free(table, &d);
}

static void test_flags(void)
{
    settings_t s;
    const char *args[] = {"prog",
                          "--concurrency",
                          "8",
                          "--heartbeat-interval=0.25",
                          "--max-payload",
                          "64K",
                          "--connect",
                          "tcp://h:1",
                          "--name=w1",
                          "--fsync",
                          "always",
                          "--verbose",
                          "--fn",
                          "sq=echo",
                          "--fn=cube=cat",
                          "--retries",
                          "-1",
                          "submit",
                          "--not-a-flag",
                          NULL};
    CHECK_EQ_INT(parse(&s, args), 0);
    CHECK_EQ_INT(argi, 17);
    CHECK_EQ_STR(args[argi], "submit");
    CHECK_EQ_INT(s.concurrency, 8);
    CHECK_EQ_INT(s.heartbeat_ms, 250);
    CHECK_EQ_INT(s.max_payload, 65536);
    CHECK_EQ_STR(s.connect, "tcp://h:1");
    CHECK_EQ_STR(s.name, "w1");
    CHECK_EQ_STR(s.fsync, "always");
    CHECK_EQ_INT(s.verbose, 1);
    CHECK_EQ_INT(s.fn.n, 2);
    if (s.fn.n == 2) {
        CHECK_EQ_STR(s.fn.items[0], "sq=echo");
        CHECK_EQ_STR(s.fn.items[1], "cube=cat");
    }
    CHECK_EQ_INT(s.retries, -1);
    tq_cfg_free(table, &s);

    /* a repeated string flag: the last one wins, nothing leaks */
    const char *again[] = {"prog", "--name", "a", "--name", "b", "--connect=", NULL};
    CHECK_EQ_INT(parse(&s, again), 0);
    CHECK_EQ_STR(s.name, "b");
    CHECK_EQ_STR(s.connect, "");
    CHECK_EQ_INT(argi, 6);
    tq_cfg_free(table, &s);

    /* a value that looks like a flag is still a value */
    const char *dash[] = {"prog", "--name", "--verbose", NULL};
    CHECK_EQ_INT(parse(&s, dash), 0);
    CHECK_EQ_STR(s.name, "--verbose");
    CHECK_EQ_INT(s.verbose, 0);
    tq_cfg_free(table, &s);
}

static void test_stop(void)
{
    settings_t s;
    const char *a1[] = {"prog", "--verbose", "-", "--name", "x", NULL};
    CHECK_EQ_INT(parse(&s, a1), 0);
    CHECK_EQ_INT(argi, 2);
    CHECK(s.name == NULL);
    tq_cfg_free(table, &s);

    const char *a2[] = {"prog", "--verbose", "--", "--name", "x", NULL};
    CHECK_EQ_INT(parse(&s, a2), 0);
    CHECK_EQ_INT(argi, 3);
    CHECK(s.name == NULL);
    tq_cfg_free(table, &s);

    const char *a3[] = {"prog", "-v", NULL};
    CHECK_EQ_INT(parse(&s, a3), 0);
    CHECK_EQ_INT(argi, 1);
    tq_cfg_free(table, &s);

    const char *a4[] = {"prog", "--concurrency", "3", NULL};
    CHECK_EQ_INT(parse(&s, a4), 0);
    CHECK_EQ_INT(argi, 3);
    tq_cfg_free(table, &s);

    /* starting in the middle (after a subcommand) */
    const char *a5[] = {"prog", "status", "--concurrency", "3", "x", NULL};
    memset(&s, 0, sizeof s);
    argi = 2;
    CHECK_EQ_INT(tq_cfg_parse(table, &s, 5, (char **)a5, &argi, NULL, err, sizeof err), 0);
    CHECK_EQ_INT(argi, 4);
    CHECK_EQ_INT(s.concurrency, 3);
    tq_cfg_free(table, &s);

    const char *h[] = {"prog", "--concurrency", "3", "--help", "--bogus", NULL};
    CHECK_EQ_INT(parse(&s, h), 0);
    CHECK_EQ_INT(help, 1);
    CHECK_EQ_INT(argi, 3);
    tq_cfg_free(table, &s);
}

/* Expect parse to fail with exactly msg. */
static void expect_error(const char **args, const char *msg)
{
    settings_t s;
    CHECK_EQ_INT(parse(&s, args), -1);
    CHECK_EQ_STR(err, msg);
    /* on failure nothing is left allocated (tq_cfg_free is harmless) */
    tq_cfg_free(table, &s);
}

static void test_errors(void)
{
    const char *a1[] = {"prog", "--concurrency", "0x", NULL};
    expect_error(a1, "--concurrency: '0x' is not a number");
    const char *a2[] = {"prog", "--concurrency", "99999", NULL};
    expect_error(a2, "--concurrency: 99999 is out of range (0..4096)");
    const char *a3[] = {"prog", "--frobnicate", NULL};
    expect_error(a3, "unknown option --frobnicate");
    const char *a4[] = {"prog", "--frobnicate=3", NULL};
    expect_error(a4, "unknown option --frobnicate");
    const char *a5[] = {"prog", "--concurrency", NULL};
    expect_error(a5, "--concurrency needs a value");
    const char *a6[] = {"prog", "--heartbeat-interval", "0.05", NULL};
    expect_error(a6, "--heartbeat-interval: 0.05 is out of range (0.1..60)");
    const char *a7[] = {"prog", "--heartbeat-interval", "-1", NULL};
    expect_error(a7, "--heartbeat-interval: '-1' is not a number of seconds (e.g. 1.5)");
    const char *a8[] = {"prog", "--max-payload", "12X", NULL};
    expect_error(a8, "--max-payload: '12X' is not a size (e.g. 123, 64K, 64M, 1G)");
    const char *a9[] = {"prog", "--max-payload", "2G", NULL};
    expect_error(a9, "--max-payload: 2G is out of range (1K..1G)");
    const char *a10[] = {"prog", "--max-payload", "99999999999999999999G", NULL};
    expect_error(a10, "--max-payload: '99999999999999999999G' is not a size (e.g. 123, 64K, "
                      "64M, 1G)");
    const char *a11[] = {"prog", "--fsync", "sometimes", NULL};
    expect_error(a11, "--fsync: 'sometimes' is not one of always|interval|off");
    const char *a12[] = {"prog", "--verbose=1", NULL};
    expect_error(a12, "--verbose takes no value");
    const char *a13[] = {"prog", "--retries", "-2", NULL};
    expect_error(a13, "--retries: -2 is out of range (-1..100)");
    const char *a14[] = {"prog", "--name", "ok", "--fn", "a", "--concurrency", "x", NULL};
    expect_error(a14, "--concurrency: 'x' is not a number");
    const char *a15[] = {"prog", "--fsync", "", NULL};
    expect_error(a15, "--fsync: '' is not one of always|interval|off");
    const char *a16[] = {"prog", "--fsync", "alway", NULL};
    expect_error(a16, "--fsync: 'alway' is not one of always|interval|off");

    /* a long hostile value is cut in the message */
    static char big[2000];
    memset(big, '9', sizeof big - 1);
    const char *a17[] = {"prog", "--concurrency", big, NULL};
    settings_t s;
    CHECK_EQ_INT(parse(&s, a17), -1);
    CHECK(strlen(err) < 200);
    CHECK(strstr(err, "...") != NULL);
    tq_cfg_free(table, &s);

    /* a tiny error buffer is never overrun */
    char small[10];
    memset(&s, 0, sizeof s);
    argi = 1;
    CHECK_EQ_INT(tq_cfg_parse(table, &s, 2, (char **)a3, &argi, NULL, small, sizeof small), -1);
    CHECK_EQ_INT(strlen(small), 9);
    tq_cfg_free(table, &s);
}

static void test_sizes(void)
{
    struct {
        const char *v;
        int64_t want;
    } cases[] = {{"1024", 1024},    {"64K", 65536},  {"64k", 65536},
                 {"64M", 64 << 20}, {"1G", 1 << 30}, {"2KB", 2048}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *args[] = {"prog", "--max-payload", cases[i].v, NULL};
        settings_t s;
        CHECK_EQ_INT(parse(&s, args), 0);
        CHECK_EQ_INT(s.max_payload, cases[i].want);
        tq_cfg_free(table, &s);
    }
    const char *bad[] = {"", "K", "-1K", "1.5M", "1T", "1KK", "1 K", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *args[] = {"prog", "--max-payload", bad[i], NULL};
        settings_t s;
        CHECK_EQ_INT(parse(&s, args), -1);
        tq_cfg_free(table, &s);
    }
}

static void test_env(void)
{
    settings_t s;
    const char *none[] = {"prog", NULL};
    setenv("TQTEST_CONNECT", "tcp://env:9", 1);
    setenv("TQTEST_HEARTBEAT", "2", 1);
    setenv("TQTEST_VERBOSE", "1", 1);
    CHECK_EQ_INT(parse(&s, none), 0);
    CHECK_EQ_STR(s.connect, "tcp://env:9");
    CHECK_EQ_INT(s.heartbeat_ms, 2000);
    CHECK_EQ_INT(s.verbose, 1);
    tq_cfg_free(table, &s);

    /* a flag beats the environment */
    const char *flag[] = {"prog", "--connect", "tcp://flag:1", "--heartbeat-interval", "3", NULL};
    CHECK_EQ_INT(parse(&s, flag), 0);
    CHECK_EQ_STR(s.connect, "tcp://flag:1");
    CHECK_EQ_INT(s.heartbeat_ms, 3000);
    tq_cfg_free(table, &s);

    setenv("TQTEST_HEARTBEAT", "soon", 1);
    CHECK_EQ_INT(parse(&s, none), -1);
    CHECK_EQ_STR(err, "TQTEST_HEARTBEAT: 'soon' is not a number of seconds (e.g. 1.5)");
    tq_cfg_free(table, &s);
    setenv("TQTEST_HEARTBEAT", "100", 1);
    CHECK_EQ_INT(parse(&s, none), -1);
    CHECK_EQ_STR(err, "TQTEST_HEARTBEAT: 100 is out of range (0.1..60)");
    tq_cfg_free(table, &s);
    setenv("TQTEST_HEARTBEAT", "1", 1);
    setenv("TQTEST_VERBOSE", "perhaps", 1);
    CHECK_EQ_INT(parse(&s, none), -1);
    CHECK(strncmp(err, "TQTEST_VERBOSE: 'perhaps'", 25) == 0);
    tq_cfg_free(table, &s);
    setenv("TQTEST_VERBOSE", "no", 1);
    CHECK_EQ_INT(parse(&s, none), 0);
    CHECK_EQ_INT(s.verbose, 0);
    tq_cfg_free(table, &s);
    clear_env();
}

static void test_bad_default(void)
{
    static const tq_cfg_entry_t broken[] = {
        {"port", TQ_CFG_INT, "many", 0, 10, NULL, NULL, 0, "N", "a port"},
        {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
    };
    int64_t v;
    CHECK_EQ_INT(tq_cfg_defaults(broken, &v, err, sizeof err), -1);
    CHECK_EQ_STR(err, "default for --port: 'many' is not a number");
}

static void test_usage(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tq_cfg_usage(table, f);
    fclose(f);
    CHECK(strstr(buf, "  --concurrency N  ") != NULL);
    CHECK(strstr(buf, "tasks run at once (0: cores) (default: 0)\n") != NULL);
    CHECK(strstr(buf, "(default: 1.5s; env: TQTEST_HEARTBEAT)") != NULL);
    CHECK(strstr(buf, "--fsync always|interval|off") != NULL);
    CHECK(strstr(buf, "--verbose ") != NULL);
    CHECK(strstr(buf, "(repeatable)") != NULL);
    CHECK(strstr(buf, "worker name\n") != NULL);
    /* the help column is aligned: every help text starts at one column */
    const char *col = strstr(buf, "tasks run at once");
    const char *line = buf;
    size_t want = (size_t)(col - line);
    CHECK(strstr(buf, "\n") != NULL);
    for (const char *p = buf; *p;) {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        if (!nl)
            break;
        CHECK((size_t)(nl - p) > want && p[want - 1] == ' ' && p[want] != ' ');
        p = nl + 1;
    }
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &len);
    tq_cfg_markdown(table, f);
    fclose(f);
    CHECK(strstr(buf, "| Option | Environment | Default | Description |") != NULL);
    CHECK(strstr(buf, "| `--fsync always\\|interval\\|off` |") != NULL);
    CHECK(strstr(buf, "`TQTEST_HEARTBEAT`") != NULL);
    free(buf);
}

/* A table with a config file entry. */
typedef struct {
    settings_t s;
    char *config;
} fsettings_t;

#define FS(f) (offsetof(fsettings_t, s) + offsetof(settings_t, f))
static const tq_cfg_entry_t ftable[] = {
    {"concurrency", TQ_CFG_INT, "0", 0, 4096, NULL, NULL, FS(concurrency), "N", ""},
    {"connect", TQ_CFG_STRING, "tcp://127.0.0.1:7070", 0, 0, NULL, "TQTEST_CONNECT", FS(connect),
     "ENDPOINT", ""},
    {"verbose", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, FS(verbose), NULL, ""},
    {"fn", TQ_CFG_LIST, "dflt=x", 0, 0, NULL, NULL, FS(fn), "NAME=COMMAND", ""},
    {"config", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(fsettings_t, config), "FILE", ""},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(text, 1, n, f);
        fclose(f);
    }
}

static int fparse(fsettings_t *fs, const char **args, char *e, size_t elen)
{
    int argc = 0;
    while (args[argc])
        argc++;
    memset(fs, 0, sizeof *fs);
    int ai = 1, h = 0;
    return tq_cfg_parse(ftable, fs, argc, (char **)args, &ai, &h, e, elen);
}

/* The config file: CRLF lines, comments, a list replacing its default,
 * file < environment < flags, every bad line reported (NUL bytes, long
 * lines, unknown names), nothing leaked on errors (ASan). */
static void test_file(void)
{
    char path[] = "/tmp/tq_config_test.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    const char good[] = "# comment\r\nconcurrency = 7\r\nverbose = yes\nfn = a=1\nfn = b=2\n"
                        "connect = tcp://file:1\n";
    write_file(path, good, sizeof good - 1);
    fsettings_t fs;
    char e[TQ_CFG_ERR_MAX];
    const char *a1[] = {"prog", "--config", path, NULL};
    CHECK_EQ_INT(fparse(&fs, a1, e, sizeof e), 0);
    CHECK_EQ_INT(fs.s.concurrency, 7);
    CHECK_EQ_INT(fs.s.verbose, 1);
    CHECK_EQ_INT((int)fs.s.fn.n, 2);
    CHECK(fs.s.fn.n == 2 && strcmp(fs.s.fn.items[1], "b=2") == 0);
    CHECK_EQ_STR(fs.s.connect, "tcp://file:1");
    tq_cfg_free(ftable, &fs);
    /* environment over the file, flags over both (a list flag replaces) */
    setenv("TQTEST_CONNECT", "tcp://env:2", 1);
    const char *a2[] = {"prog", "--fn", "c=3", "--config", path, "--concurrency", "9", NULL};
    CHECK_EQ_INT(fparse(&fs, a2, e, sizeof e), 0);
    CHECK_EQ_STR(fs.s.connect, "tcp://env:2");
    CHECK_EQ_INT(fs.s.concurrency, 9);
    CHECK(fs.s.fn.n == 1 && strcmp(fs.s.fn.items[0], "c=3") == 0);
    tq_cfg_free(ftable, &fs);
    unsetenv("TQTEST_CONNECT");
    /* bad lines, all of them */
    char bad[600];
    int n = snprintf(bad, sizeof bad, "concurrency = 99999\nnul = a");
    bad[n++] = '\0';
    n += snprintf(bad + n, sizeof bad - (size_t)n,
                  "b\nwhat\nfn = %0250d\nconnect = x\n"
                  "connect = y\n",
                  0);
    write_file(path, bad, (size_t)n);
    CHECK_EQ_INT(fparse(&fs, a1, e, sizeof e), -1);
    char want[256];
    snprintf(want, sizeof want, "%s:1: concurrency: 99999 is out of range (0..4096)", path);
    CHECK(strstr(e, want) != NULL);
    snprintf(want, sizeof want, "%s:2: line holds a NUL byte", path);
    CHECK(strstr(e, want) != NULL);
    snprintf(want, sizeof want, "%s:3: expected NAME = VALUE", path);
    CHECK(strstr(e, want) != NULL);
    snprintf(want, sizeof want, "%s:4: line longer than", path);
    CHECK(strstr(e, want) != NULL);
    snprintf(want, sizeof want, "%s:6: 'connect' is set twice (first on line 5)", path);
    CHECK(strstr(e, want) != NULL);
    CHECK(fs.s.fn.items == NULL && fs.s.connect == NULL); /* released on error */
    /* a named file that does not exist */
    unlink(path);
    CHECK_EQ_INT(fparse(&fs, a1, e, sizeof e), -1);
    CHECK(strstr(e, "No such file or directory") != NULL);
}

/* ---- tq_cfg_reload ---------------------------------------------------------- */

static char notes[2048];
static int applied_concurrency;

static void note(void *arg, int warn, const char *line)
{
    (void)arg;
    size_t n = strlen(notes);
    snprintf(notes + n, sizeof notes - n, "%s%s\n", warn ? "W " : "I ", line);
}

static int apply_concurrency(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)arg, (void)cur, (void)why, (void)whylen;
    applied_concurrency = (int)((const settings_t *)next)->concurrency;
    return 0;
}

static int refuse_fn(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)arg, (void)cur, (void)next;
    snprintf(why, whylen, "not now");
    return -1;
}

static void test_reload(void)
{
    static const tq_cfg_live_t live[] = {{"concurrency", apply_concurrency},
                                         {"fn", refuse_fn},
                                         {NULL, NULL}};
    settings_t cur, next;
    const char *a[] = {"prog", "--concurrency", "2", "--fn", "a=x", NULL};
    const char *b[] = {"prog", "--concurrency", "8",  "--fn",   "a=x", "--fn",
                       "b=y",  "--max-payload", "2M", "--name", "w 1", NULL};
    CHECK_EQ_INT(parse(&cur, a), 0);
    CHECK_EQ_INT(parse(&next, b), 0);
    notes[0] = '\0';
    CHECK_EQ_INT(tq_cfg_reload(table, &cur, &next, live, NULL, note), 1);
    CHECK_EQ_INT(applied_concurrency, 8);
    CHECK_EQ_INT(cur.concurrency, 8);       /* applied: now in force */
    CHECK_EQ_INT(cur.max_payload, 1 << 20); /* refused: stays */
    CHECK(cur.name == NULL);
    CHECK_EQ_INT(cur.fn.n, 1);
    CHECK(strstr(notes, "I setting concurrency changed from 2 to 8\n") != NULL);
    CHECK(strstr(notes, "W setting max-payload changed from 1M to 2M in the configuration but "
                        "cannot change while running: restart to apply it; max-payload stays "
                        "1M\n") != NULL);
    CHECK(strstr(notes, "W setting name changed from (unset) to w 1 in the") != NULL);
    CHECK(strstr(notes, "W setting fn: cannot change from a=x to a=x,b=y: not now; fn stays "
                        "a=x\n") != NULL);
    /* the same again: only the refused ones differ still */
    notes[0] = '\0';
    CHECK_EQ_INT(tq_cfg_reload(table, &cur, &next, live, NULL, note), 0);
    CHECK(strstr(notes, "concurrency") == NULL);
    CHECK(strstr(notes, "max-payload") != NULL);
    tq_cfg_free(table, &cur);
    tq_cfg_free(table, &next);
}

int main(void)
{
    clear_env();
    RUN(test_defaults);
    RUN(test_flags);
    RUN(test_stop);
    RUN(test_errors);
    RUN(test_sizes);
    RUN(test_env);
    RUN(test_bad_default);
    RUN(test_usage);
    RUN(test_file);
    RUN(test_reload);
    TEST_MAIN_END();
}
