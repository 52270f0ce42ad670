/* tq_util.c - checked allocation, string copies, clocks, strict number
 * parsing, UTF-8 validation. */
#include "tq_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "taskq: out of memory (allocating %zu bytes)\n", n);
    fflush(stderr);
    abort();
}

void *tq_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *tq_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *tq_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *tq_strdup(const char *s)
{
    TQ_ASSERT(s);
    return tq_memdup(s, strlen(s) + 1);
}

void *tq_memdup(const void *p, size_t n)
{
    void *q = tq_malloc(n ? n : 1);
    if (n)
        memcpy(q, p, n);
    return q;
}

int tq_strlcpy(char *dst, const char *src, size_t size)
{
    if (size == 0)
        return -1;
    size_t n = strlen(src);
    if (n >= size) {
        memcpy(dst, src, size - 1);
        dst[size - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t tq_mono_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }

int64_t tq_mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

int64_t tq_wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }

int64_t tq_wall_us(void) { return clock_us(CLOCK_REALTIME); }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Accepts an optional '-' and one or more decimal digits, nothing else
 * (no spaces, no '+', no hex). */
int tq_parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    int neg = 0;
    const char *p = s;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!is_digit(*p))
        return -1;
    /* Accumulate as a negative number so that INT64_MIN fits. */
    int64_t v = 0;
    for (; *p; p++) {
        if (!is_digit(*p))
            return -1;
        int d = *p - '0';
        if (v < (INT64_MIN + d) / 10)
            return -1;
        v = v * 10 - d;
    }
    if (!neg) {
        if (v == INT64_MIN)
            return -1;
        v = -v;
    }
    *out = v;
    return 0;
}

int tq_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !is_digit(*s))
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!is_digit(*p))
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "S", "S.F" or ".F" with up to any number of fraction digits; digits
 * past the millisecond are truncated (must still be digits). */
int tq_parse_seconds_ms(const char *s, int64_t *out_ms)
{
    if (!s || !*s)
        return -1;
    const char *p = s;
    int64_t sec = 0;
    int int_digits = 0;
    for (; is_digit(*p); p++, int_digits++) {
        int d = *p - '0';
        if (sec > (INT64_MAX / 1000 - d) / 10)
            return -1;
        sec = sec * 10 + d;
    }
    int64_t ms = 0;
    int frac_digits = 0;
    if (*p == '.') {
        p++;
        for (; is_digit(*p); p++, frac_digits++) {
            if (frac_digits < 3)
                ms = ms * 10 + (*p - '0');
        }
        if (frac_digits == 0)
            return -1;
        for (int i = frac_digits; i < 3; i++)
            ms *= 10;
    }
    if (*p != '\0' || (int_digits == 0 && frac_digits == 0))
        return -1;
    if (sec > (INT64_MAX - ms) / 1000)
        return -1;
    *out_ms = sec * 1000 + ms;
    /* Only an exact zero is zero: a positive duration below 1 ms counts
     * as 1 ms (0 means "none" for many flags; 0.0004 must not). */
    if (*out_ms == 0 && strspn(s, "0.") != strlen(s))
        *out_ms = 1;
    return 0;
}

int tq_ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    if (n > 65536)
        n = 65536;
    return (int)n;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
int tq_utf8_valid(const void *ptr, size_t n)
{
    const unsigned char *s = ptr;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* bounds for the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* > U+10FFFF */
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

int tq_peer_name_valid(const char *s, size_t max_len, int allow_space)
{
    size_t n = strlen(s);
    if (n == 0 || n > max_len)
        return 0;
    unsigned char lowest = allow_space ? 0x20 : 0x21;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < lowest || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

uint64_t tq_fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

int tq_write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tq_endpoint_port_check(const char *ep, const char *flag, tq_err_t *err)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return 0;
    const char *colon = strrchr(ep + 6, ':');
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return 0;
    int64_t n;
    if (tq_parse_i64(colon + 1, &n) < 0 || n > 65535) {
        tq_err_set(err, 0, "%s: port %.40s in '%.200s' is out of range (0..65535)", flag, colon + 1,
                   ep);
        return -1;
    }
    return 0;
}
