/* builtins.c - square, echo, sleep, fail. */
#include "builtins.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "tq_proto.h"

/* 128-bit arithmetic for square: GCC/Clang extension, marked so that
 * -Wpedantic accepts it. */
__extension__ typedef unsigned __int128 u128_t;

const char *const tq_builtin_names[] = {"square", "echo", "sleep", "fail", NULL};

int tq_builtin_exists(const char *name)
{
    for (size_t i = 0; tq_builtin_names[i]; i++)
        if (strcmp(tq_builtin_names[i], name) == 0)
            return 1;
    return 0;
}

/* Parse p[n] (already trimmed) as an optional sign and decimal digits.
 * Returns 0 with *v, -1 if it is not an integer, -2 if out of the
 * 64-bit range. */
static int parse_i64(const uint8_t *p, size_t n, int64_t *v)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (p[i] == '+' || p[i] == '-'))
        neg = p[i++] == '-';
    if (i == n)
        return -1;
    /* Magnitude as unsigned so that INT64_MIN parses. */
    uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    int over = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (mag > (limit - d) / 10)
            over = 1; /* keep scanning: junk later still means "not an integer" */
        else
            mag = mag * 10 + d;
    }
    if (over)
        return -2;
    *v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

/* Decimal text of an unsigned 128-bit value into out[outlen] (>= 40). */
static void u128_text(u128_t v, char *out, size_t outlen)
{
    char tmp[48];
    size_t k = 0;
    do {
        tmp[k++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v && k < sizeof tmp);
    size_t o = 0;
    while (k && o + 1 < outlen)
        out[o++] = tmp[--k];
    out[o] = '\0';
}

static void run_square(const tq_run_ctx_t *ctx, tq_run_result_t *out)
{
    size_t start, len;
    int64_t n = 0;
    char q[300];
    tq_run_trim(ctx->payload, ctx->len, &start, &len);
    int rc = parse_i64(ctx->payload + start, len, &n);
    if (rc != 0) {
        tq_run_quote(ctx->payload, ctx->len, q, sizeof q);
        if (rc == -2)
            tq_run_result_fmt(out, TQ_RUN_FAILED,
                              "square: payload is out of range (64-bit integers only): %s", q);
        else
            tq_run_result_fmt(out, TQ_RUN_FAILED, "square: payload is not an integer: %s", q);
        return;
    }
    /* |n| <= 2^63, so n*n <= 2^126 fits an unsigned 128-bit value. */
    u128_t mag = n < 0 ? (u128_t)(0 - (uint64_t)n) : (u128_t)n;
    char sq[48];
    u128_text(mag * mag, sq, sizeof sq);
    tq_run_result_fmt(out, TQ_RUN_OK, "%lld * %lld = %s", (long long)n, (long long)n, sq);
}

/* Parse decimal seconds "S" or "S.fff" into milliseconds (rounding
 * down sub-millisecond digits). Returns 0 or -1. */
static int parse_seconds(const uint8_t *p, size_t n, int64_t *ms)
{
    size_t i = 0;
    int64_t whole = 0, frac = 0, scale = 100;
    if (n == 0)
        return -1;
    size_t digits = 0;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
        whole = whole * 10 + (p[i] - '0');
        if (whole > TQ_BUILTIN_SLEEP_MAX_S)
            return -1;
    }
    if (i < n && p[i] == '.') {
        i++;
        size_t fdigits = 0;
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, fdigits++) {
            frac += (p[i] - '0') * scale;
            scale /= 10;
        }
        digits += fdigits;
    }
    if (i != n || digits == 0)
        return -1;
    *ms = whole * 1000 + frac;
    if (*ms > (int64_t)TQ_BUILTIN_SLEEP_MAX_S * 1000)
        return -1;
    return 0;
}

static void run_sleep(const tq_run_ctx_t *ctx, tq_run_result_t *out)
{
    size_t start, len;
    int64_t ms;
    tq_run_trim(ctx->payload, ctx->len, &start, &len);
    if (parse_seconds(ctx->payload + start, len, &ms) != 0) {
        char q[300];
        tq_run_quote(ctx->payload, ctx->len, q, sizeof q);
        tq_run_result_fmt(out, TQ_RUN_FAILED,
                          "sleep: payload is not a number of seconds (0..%d): %s",
                          TQ_BUILTIN_SLEEP_MAX_S, q);
        return;
    }
    int64_t now = tq_run_now_ms();
    int64_t until = now + ms;
    for (;;) {
        now = tq_run_now_ms();
        int timed_out = ctx->deadline_ms > 0 && now >= ctx->deadline_ms;
        if (timed_out && ctx->deadline_ms <= until) {
            tq_run_result_timeout(out, ctx);
            return;
        }
        if (now >= until)
            break;
        int64_t wait = until - now;
        if (ctx->deadline_ms > 0 && ctx->deadline_ms - now < wait)
            wait = ctx->deadline_ms - now;
        struct pollfd pfd = {.fd = ctx->cancel_fd, .events = POLLIN};
        int rc = poll(&pfd, ctx->cancel_fd >= 0 ? 1 : 0, (int)wait);
        if (rc > 0) {
            tq_run_result_fmt(out, TQ_RUN_FAILED, "sleep: cancelled");
            return;
        }
        if (rc < 0 && errno != EINTR) {
            tq_run_result_fmt(out, TQ_RUN_FAILED, "sleep: poll: %s", strerror(errno));
            return;
        }
    }
    tq_run_result_fmt(out, TQ_RUN_OK, "slept %.*s", (int)len, (const char *)ctx->payload + start);
}

int tq_builtin_run(const char *name, const tq_run_ctx_t *ctx, tq_run_result_t *out)
{
    if (strcmp(name, "square") == 0)
        run_square(ctx, out);
    else if (strcmp(name, "echo") == 0)
        tq_run_result_set(out, TQ_RUN_OK, ctx->payload, ctx->len);
    else if (strcmp(name, "sleep") == 0)
        run_sleep(ctx, out);
    else if (strcmp(name, "fail") == 0)
        tq_run_result_set(out, TQ_RUN_FAILED, ctx->payload, ctx->len);
    else
        return -1;
    return 0;
}
