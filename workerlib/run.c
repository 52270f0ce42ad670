/* run.c - task input/outcome helpers shared by the handlers. */
#include "run.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tq_proto.h"

/* Longest formatted error text; longer texts are cut. */
#define RUN_FMT_MAX 8192
/* Bytes of a payload quoted in an error message. */
#define RUN_QUOTE_MAX 64

int64_t tq_run_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tq_run_result_free(tq_run_result_t *r)
{
    free(r->data);
    r->data = NULL;
    r->len = 0;
    r->status = TQ_RUN_OK;
}

void tq_run_result_set(tq_run_result_t *r, int status, const void *p, size_t n)
{
    static const char oom[] = "worker out of memory for the result";
    tq_run_result_free(r);
    r->data = malloc(n ? n : 1);
    if (!r->data) {
        /* A peer-sized copy: fail gracefully into a short error. */
        r->data = malloc(sizeof oom);
        if (!r->data)
            abort();
        memcpy(r->data, oom, sizeof oom - 1);
        r->len = sizeof oom - 1;
        r->status = TQ_RUN_FAILED;
        return;
    }
    if (n)
        memcpy(r->data, p, n);
    r->len = n;
    r->status = status;
}

void tq_run_result_fmt(tq_run_result_t *r, int status, const char *fmt, ...)
{
    char buf[RUN_FMT_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    tq_run_result_set(r, status, buf, (size_t)n);
}

void tq_run_result_timeout(tq_run_result_t *r, const tq_run_ctx_t *ctx)
{
    uint32_t ms = ctx->timeout_ms;
    char frac[8] = "";
    if (ms % 1000) {
        /* "1.5", not "1.500" */
        snprintf(frac, sizeof frac, ".%03u", (unsigned)(ms % 1000));
        size_t n = strlen(frac);
        while (n > 1 && frac[n - 1] == '0')
            frac[--n] = '\0';
    }
    tq_run_result_fmt(r, TQ_RUN_TIMEOUT, "timed out after %u%s s", (unsigned)(ms / 1000), frac);
}

void tq_run_quote(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
        /* Room check leaves space for the closing quote, "..." and NUL. */
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < outlen)                                                                        \
            out[o++] = (ch);                                                                       \
    } while (0)
    PUT('\'');
    size_t show = n < RUN_QUOTE_MAX ? n : RUN_QUOTE_MAX;
    for (size_t i = 0; i < show && o + 9 < outlen; i++) {
        uint8_t c = p[i];
        if (c == '\'' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c >= 0x20 && c < 0x7f) {
            PUT((char)c);
        } else {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", c);
            for (int k = 0; k < 4; k++)
                PUT(esc[k]);
        }
    }
    PUT('\'');
    if (n > show) {
        PUT('.');
        PUT('.');
        PUT('.');
    }
#undef PUT
    out[o] = '\0';
}

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void tq_run_trim(const uint8_t *p, size_t n, size_t *start, size_t *len)
{
    size_t a = 0, b = n;
    while (a < b && is_space(p[a]))
        a++;
    while (b > a && is_space(p[b - 1]))
        b--;
    *start = a;
    *len = b - a;
}
