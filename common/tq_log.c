/* tq_log.c - leveled logging to stderr, one write(2) per line. */
#include "tq_log.h"

#include "tq_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Longest line written; longer messages are cut and end in "...". */
#define TQ_LOG_LINE_MAX 2048
/* Longest role prefix kept. */
#define TQ_LOG_ROLE_MAX 64

static char log_role[TQ_LOG_ROLE_MAX] = "taskq";
static atomic_int log_level = TQ_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void tq_log_init(const char *role)
{
    if (role)
        tq_strlcpy(log_role, role, sizeof log_role);
}

void tq_log_set_level(int level)
{
    if (level < TQ_LOG_ERROR)
        level = TQ_LOG_ERROR;
    if (level > TQ_LOG_DEBUG)
        level = TQ_LOG_DEBUG;
    atomic_store(&log_level, level);
}

int tq_log_level(void)
{
    return atomic_load(&log_level);
}

int tq_log_level_parse(const char *s)
{
    if (!s)
        return -1;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return TQ_LOG_WARN;
    return -1;
}

/* Length of the valid UTF-8 sequence at p[0..n) (no overlongs, no
 * surrogates, at most U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* The output piece for the byte(s) at p[i..n): *len source bytes taken;
 * returns the piece's length, written to out (at most 4 bytes). */
static size_t escape_piece(const unsigned char *p, size_t i, size_t n, char out[4], size_t *len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = p[i];
    size_t k;
    if (c >= 0x20 && c < 0x7f) {
        out[0] = (char)c;
        *len = 1;
        return 1;
    }
    if (c >= 0x80 && (k = utf8_len(p + i, n - i)) > 0) {
        memcpy(out, p + i, k);
        *len = k;
        return k;
    }
    out[0] = '\\', out[1] = 'x', out[2] = hex[c >> 4], out[3] = hex[c & 15];
    *len = 1;
    return 4;
}

char *tq_log_escape(char *dst, size_t dstlen, const void *src, size_t srclen)
{
    const unsigned char *p = src;
    if (dstlen == 0)
        return dst;
    if (!p)
        srclen = 0;
    char piece[4];
    size_t used, total = 0;
    for (size_t i = 0; i < srclen && total < dstlen; i += used)
        total += escape_piece(p, i, srclen, piece, &used);
    /* All of it fits, or whole pieces up to where "..." still fits. */
    size_t room = total < dstlen ? dstlen - 1 : (dstlen > 3 ? dstlen - 4 : 0);
    size_t o = 0;
    for (size_t i = 0; i < srclen; i += used) {
        size_t n = escape_piece(p, i, srclen, piece, &used);
        if (o + n > room)
            break;
        memcpy(dst + o, piece, n);
        o += n;
    }
    if (total >= dstlen && dstlen > 3) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

char *tq_log_escape_str(char *dst, size_t dstlen, const char *src)
{
    return tq_log_escape(dst, dstlen, src, src ? strlen(src) : 0);
}

/* Formats the whole line into a stack buffer so that concurrent writers
 * never interleave within a line. Preserves errno. */
void tq_log_write(int level, const char *fmt, ...)
{
    int saved_errno = errno;
    char line[TQ_LOG_LINE_MAX];
    if (level < TQ_LOG_ERROR)
        level = TQ_LOG_ERROR;
    if (level > TQ_LOG_DEBUG)
        level = TQ_LOG_DEBUG;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, log_role, level_names[level]);
    if (n < 0)
        n = 0;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;

    /* Room for the message, keeping one byte for '\n' (the NUL written by
     * vsnprintf lands where the '\n' will go). */
    size_t room = sizeof line - len - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + len, room + 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    if ((size_t)m > room) {
        len += room;
        memcpy(line + len - 3, "...", 3);
    } else {
        len += (size_t)m;
    }
    /* Strip a trailing newline the caller may have added. */
    while (len > 0 && line[len - 1] == '\n')
        len--;
    /* Escape the message part: whatever it quotes stays on this line. */
    char msg[TQ_LOG_LINE_MAX];
    size_t head = (size_t)n < len ? (size_t)n : len;
    tq_log_escape(msg, sizeof line - head - 1, line + head, len - head);
    size_t mlen = strlen(msg); /* < sizeof line - head - 1 */
    memcpy(line + head, msg, mlen);
    len = head + mlen;
    line[len++] = '\n';

    const char *p = line;
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    errno = saved_errno;
}
