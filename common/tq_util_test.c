/* tq_util_test.c - number parsing, string copies, clocks, UTF-8, and the
 * log line format (tq_log has no test file of its own). */
#include "tq_util.h"

#include "tq_log.h"
#include "tq_test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_parse_i64(void)
{
    int64_t v = 7;
    CHECK_EQ_INT(tq_parse_i64("0", &v), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(tq_parse_i64("-42", &v), 0);
    CHECK_EQ_INT(v, -42);
    CHECK_EQ_INT(tq_parse_i64("9223372036854775807", &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_EQ_INT(tq_parse_i64("-9223372036854775808", &v), 0);
    CHECK(v == INT64_MIN);
    v = 5;
    const char *bad[] = {"",
                         "-",
                         "+1",
                         " 1",
                         "1 ",
                         "0x10",
                         "1e3",
                         "9223372036854775808",
                         "-9223372036854775809",
                         "99999999999999999999",
                         "1.0",
                         "--1",
                         "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ_INT(tq_parse_i64(bad[i], &v), -1);
    CHECK_EQ_INT(v, 5);
    CHECK_EQ_INT(tq_parse_i64(NULL, &v), -1);
}

static void test_parse_u64(void)
{
    uint64_t v;
    CHECK_EQ_INT(tq_parse_u64("18446744073709551615", &v), 0);
    CHECK(v == UINT64_MAX);
    CHECK_EQ_INT(tq_parse_u64("007", &v), 0);
    CHECK(v == 7);
    const char *bad[] = {"", "-1", "+1", "18446744073709551616", "1x", " 1", "1 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ_INT(tq_parse_u64(bad[i], &v), -1);
}

static void test_parse_seconds(void)
{
    int64_t ms = -1;
    struct {
        const char *s;
        int64_t ms;
    } ok[] = {{"1", 1000},
              {"1.5", 1500},
              {"0.001", 1},
              {"0", 0},
              {"30", 30000},
              {".5", 500},
              {"2.25", 2250},
              {"1.2345", 1234},
              {"86400", 86400000},
              /* below 1 ms but not zero: 1 ms ("none" is only an exact 0) */
              {"0.0004", 1},
              {".0001", 1},
              {"0.0009999", 1},
              {"0.0000", 0},
              {"00.000", 0}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        CHECK_EQ_INT(tq_parse_seconds_ms(ok[i].s, &ms), 0);
        CHECK_EQ_INT(ms, ok[i].ms);
    }
    CHECK_EQ_INT(tq_parse_seconds_ms("9223372036854775", &ms), 0);
    CHECK(ms == 9223372036854775000LL);
    const char *bad[] = {"",
                         "-1",
                         "-0.5",
                         "1.",
                         ".",
                         "1s",
                         "abc",
                         "1.5.5",
                         " 1",
                         "1 ",
                         "+1",
                         "1e3",
                         "0x1",
                         "9223372036854776",
                         "99999999999999999999",
                         "nan",
                         "inf",
                         "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ms = 77;
        CHECK_EQ_INT(tq_parse_seconds_ms(bad[i], &ms), -1);
        CHECK_EQ_INT(ms, 77);
    }
}

static void test_strlcpy(void)
{
    char buf[6];
    CHECK_EQ_INT(tq_strlcpy(buf, "hello", sizeof buf), 0);
    CHECK_EQ_STR(buf, "hello");
    CHECK_EQ_INT(tq_strlcpy(buf, "hello!", sizeof buf), -1);
    CHECK_EQ_STR(buf, "hello");
    CHECK_EQ_INT(tq_strlcpy(buf, "", sizeof buf), 0);
    CHECK_EQ_STR(buf, "");
    CHECK_EQ_INT(tq_strlcpy(buf, "x", 0), -1);
}

static void test_alloc(void)
{
    char *s = tq_strdup("abc");
    CHECK_EQ_STR(s, "abc");
    free(s);
    void *p = tq_memdup(NULL, 0);
    CHECK(p != NULL);
    free(p);
    p = tq_memdup("xyz", 3);
    CHECK(memcmp(p, "xyz", 3) == 0);
    p = tq_realloc(p, 100);
    CHECK(memcmp(p, "xyz", 3) == 0);
    free(p);
    int *z = tq_calloc(10, sizeof *z);
    CHECK_EQ_INT(z[9], 0);
    free(z);
    free(tq_malloc(0));
}

static void test_clocks(void)
{
    int64_t a = tq_mono_ms(), b = tq_mono_ms();
    CHECK(b >= a);
    CHECK(tq_mono_us() / 1000 >= a);
    /* after 2020-01-01 */
    CHECK(tq_wall_ms() > 1577836800000LL);
    CHECK(tq_wall_us() / 1000 >= tq_wall_ms() - 1000);
    CHECK(tq_ncpus() >= 1);
}

static void test_utf8(void)
{
    struct {
        const char *s;
        size_t n;
        int valid;
    } cases[] = {
        {"", 0, 1},
        {"plain ascii", 11, 1},
        {"caf\xc3\xa9", 5, 1},
        {"\xe2\x82\xac", 3, 1},     /* euro sign */
        {"\xf0\x9f\x98\x80", 4, 1}, /* emoji */
        {"\xf4\x8f\xbf\xbf", 4, 1}, /* U+10FFFF */
        {"\xef\xbf\xbf", 3, 1},     /* U+FFFF */
        {"a\0b", 3, 1},             /* NUL is valid UTF-8 */
        {"\xc0\xaf", 2, 0},         /* overlong '/' */
        {"\xc1\xbf", 2, 0},         /* overlong */
        {"\xe0\x80\xaf", 3, 0},     /* overlong */
        {"\xe0\x9f\xbf", 3, 0},     /* overlong */
        {"\xf0\x80\x80\xaf", 4, 0}, /* overlong */
        {"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong */
        {"\xed\xa0\x80", 3, 0},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, 0},     /* surrogate U+DFFF */
        {"\xed\x9f\xbf", 3, 1},     /* U+D7FF */
        {"\xf4\x90\x80\x80", 4, 0}, /* > U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0},
        {"\xff", 1, 0},
        {"\x80", 1, 0},         /* lone continuation */
        {"\xc3", 1, 0},         /* truncated */
        {"\xe2\x82", 2, 0},     /* truncated */
        {"\xf0\x9f\x98", 3, 0}, /* truncated */
        {"\xe2\x28\xa1", 3, 0}, /* bad continuation */
        {"\xc3\xa9\xc3", 3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (tq_utf8_valid(cases[i].s, cases[i].n) != cases[i].valid)
            fprintf(stderr, "utf8 case %zu\n", i);
        CHECK_EQ_INT(tq_utf8_valid(cases[i].s, cases[i].n), cases[i].valid);
    }
}

/* Capture stderr into a file while fn runs; returns the bytes read. */
static size_t capture(void (*fn)(void), char *buf, size_t size)
{
    char path[] = "/tmp/tq_util_test_log.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    unlink(path);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    return (size_t)n;
}

static int side_effects;
static int bump(void) { return ++side_effects; }

static void log_some(void)
{
    tq_log_init("worker[3]");
    tq_log_set_format(TQ_LOG_TEXT); /* the text form; logfmt and JSON below */
    tq_log_set_level(TQ_LOG_INFO);
    tq_info("listening on %s:%d", "tcp://127.0.0.1", 7070);
    tq_debug("hidden %d", bump()); /* arguments not evaluated below the level */
    tq_error("bad thing\n");
}

static void log_long(void)
{
    static char big[10000];
    memset(big, 'x', sizeof big - 1);
    tq_warn("%s", big);
}

static void test_log(void)
{
    CHECK_EQ_INT(tq_log_level_parse("error"), TQ_LOG_ERROR);
    CHECK_EQ_INT(tq_log_level_parse("warn"), TQ_LOG_WARN);
    CHECK_EQ_INT(tq_log_level_parse("info"), TQ_LOG_INFO);
    CHECK_EQ_INT(tq_log_level_parse("debug"), TQ_LOG_DEBUG);
    CHECK_EQ_INT(tq_log_level_parse("loud"), -1);
    CHECK_EQ_INT(tq_log_level_parse(""), -1);
    CHECK_EQ_INT(tq_log_level_parse(NULL), -1);
    CHECK_EQ_INT(tq_log_level(), TQ_LOG_INFO); /* the default */

    char buf[16384];
    size_t n = capture(log_some, buf, sizeof buf);
    CHECK_EQ_INT(side_effects, 0);
    /* "2026-11-21T22:30:01.123Z worker[3] INFO listening on ...\n" */
    CHECK(n > 25);
    CHECK(buf[4] == '-' && buf[7] == '-' && buf[10] == 'T' && buf[13] == ':' && buf[16] == ':' &&
          buf[19] == '.' && buf[23] == 'Z' && buf[24] == ' ');
    CHECK(strncmp(buf + 25, "worker[3] INFO listening on tcp://127.0.0.1:7070\n", 49) == 0);
    char *second = strchr(buf, '\n');
    CHECK(second && strstr(second + 1, " worker[3] ERROR bad thing\n") != NULL);
    CHECK(second && strchr(second + 1, '\n')[1] == '\0'); /* exactly two lines */

    n = capture(log_long, buf, sizeof buf);
    CHECK(n < 4096);
    CHECK(n > 100 && strncmp(buf + n - 4, "...\n", 4) == 0);
    CHECK(strstr(buf, " WARN xxx") != NULL);

    tq_log_set_level(TQ_LOG_DEBUG);
    CHECK_EQ_INT(tq_log_level(), TQ_LOG_DEBUG);
    tq_log_set_level(TQ_LOG_INFO);
}

static void log_forged(void)
{
    tq_log_set_format(TQ_LOG_TEXT);
    tq_warn("peer says: %s", "ok\n2026-11-21T22:30:01.123Z master INFO forged\x1b[31m\r");
}

/* tq_log_escape: control bytes, DEL and invalid UTF-8 become \xNN; valid
 * UTF-8 and backslashes stay; escaping twice changes nothing; cuts land
 * between whole pieces; log lines escape whatever they quote. */
static void test_log_escape(void)
{
    char b[64];
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, "plain text"), "plain text");
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, "a\nb\rc\td\x1b[0m\x7f"),
                 "a\\x0ab\\x0dc\\x09d\\x1b[0m\\x7f");
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                 "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* invalid: lone continuation, overlong, surrogate, cut sequence */
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, "\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82"),
                 "\\x80|\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82");
    CHECK_EQ_STR(tq_log_escape(b, sizeof b, "a\0b", 3), "a\\x00b");
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, NULL), "");
    CHECK_EQ_STR(tq_log_escape_str(b, sizeof b, "back\\slash"), "back\\slash");
    char twice[64];
    tq_log_escape_str(b, sizeof b, "x\x1by\xffz");
    CHECK_EQ_STR(tq_log_escape_str(twice, sizeof twice, b), b);
    /* cuts: whole pieces, then "..." */
    CHECK_EQ_STR(tq_log_escape_str(b, 8, "abcdefghij"), "abcd...");
    CHECK_EQ_STR(tq_log_escape_str(b, 8, "ab\ncdefg"), "ab...");
    CHECK_EQ_STR(tq_log_escape_str(b, 8, "abcdefg"), "abcdefg");
    CHECK_EQ_STR(tq_log_escape_str(b, 3, "abcdefg"), "");
    CHECK_EQ_STR(tq_log_escape_str(b, 3, "ab"), "ab");

    char buf[4096];
    size_t n = capture(log_forged, buf, sizeof buf);
    CHECK(n > 0 && strchr(buf, '\n') == buf + n - 1); /* one line */
    CHECK(strstr(buf, "peer says: ok\\x0a2026-11-21T22:30:01.123Z master INFO "
                      "forged\\x1b[31m\\x0d\n") != NULL);
    CHECK(strchr(buf, '\x1b') == NULL);
}

static void log_logfmt(void)
{
    tq_log_init("master");
    tq_log_set_format(TQ_LOG_LOGFMT);
    tq_info("listening on %s", "tcp://127.0.0.1:7070");
    tq_warn("peer says: %s", "a \"quoted\" back\\slash\nts=1 level=error\x1b\xff caf\xc3\xa9");
}

static void log_json(void)
{
    tq_log_set_format(TQ_LOG_JSON);
    tq_info("peer says: %s", "a \"q\" b\\s\n\x01\xff");
    tq_log_set_format(TQ_LOG_LOGFMT);
}

/* logfmt (the default) and JSON lines: one line per event, the message
 * quoted so that nothing in it can end the value or the line. */
static void test_log_formats(void)
{
    CHECK_EQ_INT(tq_log_format_parse("logfmt"), TQ_LOG_LOGFMT);
    CHECK_EQ_INT(tq_log_format_parse("json"), TQ_LOG_JSON);
    CHECK_EQ_INT(tq_log_format_parse("text"), TQ_LOG_TEXT);
    CHECK_EQ_INT(tq_log_format_parse("xml"), -1);
    char buf[4096];
    size_t n = capture(log_logfmt, buf, sizeof buf);
    CHECK(n > 0 && strncmp(buf, "ts=", 3) == 0 && buf[3 + 23] == 'Z');
    CHECK(strstr(buf, "Z level=info role=master msg=\"listening on tcp://127.0.0.1:7070\"\n") !=
          NULL);
    CHECK(strstr(buf, " level=warn role=master msg=\"peer says: a \\\"quoted\\\" "
                      "back\\\\slash\\x0ats=1 level=error\\x1b\\xff caf\xc3\xa9\"\n") != NULL);
    char *nl = strchr(buf, '\n');
    CHECK(nl && strchr(nl + 1, '\n') == buf + n - 1); /* two lines */
    n = capture(log_json, buf, sizeof buf);
    CHECK(n > 0 && strncmp(buf, "{\"ts\":\"", 7) == 0);
    CHECK(strstr(buf, "\",\"level\":\"info\",\"role\":\"master\",\"msg\":\"peer says: a "
                      "\\\"q\\\" b\\\\s\\u000a\\u0001\\\\xff\"}\n") != NULL);
}

static void test_peer_name(void)
{
    CHECK_EQ_INT(tq_peer_name_valid("host:42", 128, 0), 1);
    CHECK_EQ_INT(tq_peer_name_valid("a b", 128, 0), 0);
    CHECK_EQ_INT(tq_peer_name_valid("a b", 128, 1), 1);
    CHECK_EQ_INT(tq_peer_name_valid("", 128, 1), 0);
    CHECK_EQ_INT(tq_peer_name_valid("abcd", 3, 1), 0);
    CHECK_EQ_INT(tq_peer_name_valid("abc", 3, 1), 1);
    CHECK_EQ_INT(tq_peer_name_valid("tab\there", 128, 1), 0);
    CHECK_EQ_INT(tq_peer_name_valid("caf\xc3\xa9", 128, 1), 0);
    CHECK_EQ_INT(tq_peer_name_valid("del\x7f", 128, 1), 0);
}

/* FNV-1a 64 test vectors (the published ones), and continuing a hash
 * equals hashing the concatenation. */
static void test_fnv1a(void)
{
    CHECK(tq_fnv1a(TQ_FNV_BASIS, "", 0) == 0xcbf29ce484222325ull);
    CHECK(tq_fnv1a(TQ_FNV_BASIS, "a", 1) == 0xaf63dc4c8601ec8cull);
    CHECK(tq_fnv1a(TQ_FNV_BASIS, "foobar", 6) == 0x85944171f73967e8ull);
    CHECK(tq_fnv1a(tq_fnv1a(TQ_FNV_BASIS, "foo", 3), "bar", 3) ==
          tq_fnv1a(TQ_FNV_BASIS, "foobar", 6));
}

static void test_endpoint_port(void)
{
    tq_err_t err;
    const char *ok[] = {"tcp://127.0.0.1:0", "tcp://127.0.0.1:65535", "tcp://*:7070",
                        "tcp://127.0.0.1:*", "tcp://[::1]:80",        "ipc:///tmp/x:99999",
                        "tcp://host"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        CHECK_EQ_INT(tq_endpoint_port_check(ok[i], "--bind", &err), 0);
    const char *bad[] = {"tcp://127.0.0.1:65536", "tcp://127.0.0.1:99999", "tcp://[::1]:70000",
                         "tcp://h:99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ_INT(tq_endpoint_port_check(bad[i], "--connect", &err), -1);
        CHECK(strstr(err.msg, "--connect: port") != NULL);
    }
}

int main(void)
{
    RUN(test_parse_i64);
    RUN(test_parse_u64);
    RUN(test_parse_seconds);
    RUN(test_strlcpy);
    RUN(test_alloc);
    RUN(test_clocks);
    RUN(test_utf8);
    RUN(test_peer_name);
    RUN(test_log);
    RUN(test_log_escape);
    RUN(test_log_formats);
    RUN(test_fnv1a);
    RUN(test_endpoint_port);
    TEST_MAIN_END();
}
