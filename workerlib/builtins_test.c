/* builtins_test.c - square, echo, sleep, fail. */
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "builtins.h"
#include "tq_proto.h"
#include "tq_test.h"

/* Run built-in fn on payload; returns the status, result text in buf. */
static int run(const char *fn, const char *payload, size_t len, char *buf, size_t buflen)
{
    tq_run_ctx_t ctx = {(const uint8_t *)payload, len, -1, 0, 0, 1u << 20, {0, 0}};
    tq_run_result_t r = {0};
    CHECK_EQ_INT(tq_builtin_run(fn, &ctx, &r), 0);
    snprintf(buf, buflen, "%.*s", (int)r.len, r.data ? (const char *)r.data : "");
    int st = r.status;
    tq_run_result_free(&r);
    return st;
}

#define SQ(in, want_st, want)                                                                      \
    do {                                                                                           \
        char b_[512];                                                                              \
        CHECK_EQ_INT(run("square", in, strlen(in), b_, sizeof b_), want_st);                       \
        CHECK_EQ_STR(b_, want);                                                                    \
    } while (0)

static void test_square(void)
{
    SQ("0", TQ_RUN_OK, "0 * 0 = 0");
    SQ("3", TQ_RUN_OK, "3 * 3 = 9");
    SQ("-4", TQ_RUN_OK, "-4 * -4 = 16");
    SQ("+5", TQ_RUN_OK, "5 * 5 = 25");
    SQ(" 7 ", TQ_RUN_OK, "7 * 7 = 49");
    SQ("\t12\n", TQ_RUN_OK, "12 * 12 = 144");
    SQ("3037000500", TQ_RUN_OK, "3037000500 * 3037000500 = 9223372037000250000");
    SQ("9223372036854775807", TQ_RUN_OK,
       "9223372036854775807 * 9223372036854775807 = 85070591730234615847396907784232501249");
    SQ("-9223372036854775808", TQ_RUN_OK,
       "-9223372036854775808 * -9223372036854775808 = 85070591730234615865843651857942052864");
    SQ("abc", TQ_RUN_FAILED, "square: payload is not an integer: 'abc'");
    SQ("", TQ_RUN_FAILED, "square: payload is not an integer: ''");
    SQ("-", TQ_RUN_FAILED, "square: payload is not an integer: '-'");
    SQ("1 2", TQ_RUN_FAILED, "square: payload is not an integer: '1 2'");
    SQ("0x10", TQ_RUN_FAILED, "square: payload is not an integer: '0x10'");
    SQ("it's", TQ_RUN_FAILED, "square: payload is not an integer: 'it\\'s'");
    SQ("9223372036854775808", TQ_RUN_FAILED,
       "square: payload is out of range (64-bit integers only): '9223372036854775808'");
    char b[512];
    CHECK_EQ_INT(run("square", "a\0\x01", 3, b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "square: payload is not an integer: 'a\\x00\\x01'");
    char longp[200];
    memset(longp, 'z', sizeof longp);
    CHECK_EQ_INT(run("square", longp, sizeof longp, b, sizeof b), TQ_RUN_FAILED);
    CHECK(strlen(b) == strlen("square: payload is not an integer: ''...") + 64);
}

static void test_echo_fail(void)
{
    char b[64];
    CHECK_EQ_INT(run("echo", "hello\n", 6, b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "hello\n");
    CHECK_EQ_INT(run("echo", "", 0, b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "");
    /* byte for byte, NULs included */
    tq_run_ctx_t ctx = {(const uint8_t *)"a\0b", 3, -1, 0, 0, 1024, {0, 0}};
    tq_run_result_t r = {0};
    tq_builtin_run("echo", &ctx, &r);
    CHECK(r.len == 3 && memcmp(r.data, "a\0b", 3) == 0);
    tq_run_result_free(&r);
    CHECK_EQ_INT(run("fail", "boom", 4, b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "boom");
    tq_run_result_t r2 = {0};
    CHECK_EQ_INT(tq_builtin_run("nosuch", &ctx, &r2), -1);
}

static void test_sleep(void)
{
    char b[128];
    CHECK_EQ_INT(run("sleep", "0", 1, b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "slept 0");
    CHECK_EQ_INT(run("sleep", " 0.05\n", 6, b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "slept 0.05");
    CHECK_EQ_INT(run("sleep", "86401", 5, b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_INT(run("sleep", "x", 1, b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_INT(run("sleep", "-1", 2, b, sizeof b), TQ_RUN_FAILED);

    /* A cancelled sleep returns at once. */
    int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    tq_run_ctx_t ctx = {(const uint8_t *)"60", 2, fd, 0, 0, 1024, {0, 0}};
    tq_run_result_t r = {0};
    int64_t t0 = tq_run_now_ms();
    tq_builtin_run("sleep", &ctx, &r);
    CHECK(tq_run_now_ms() - t0 < 1000);
    tq_run_result_free(&r);
    close(fd);

    /* A task timeout shorter than the sleep. */
    tq_run_ctx_t ctx2 = {(const uint8_t *)"60", 2, -1, 100, tq_run_now_ms() + 100, 1024, {0, 0}};
    tq_builtin_run("sleep", &ctx2, &r);
    CHECK_EQ_INT(r.status, TQ_RUN_TIMEOUT);
    snprintf(b, sizeof b, "%.*s", (int)r.len, (const char *)r.data);
    CHECK_EQ_STR(b, "timed out after 0.1 s");
    tq_run_result_free(&r);
}

int main(void)
{
    RUN(test_square);
    RUN(test_echo_fail);
    RUN(test_sleep);
    TEST_MAIN_END();
}
