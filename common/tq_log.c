/* tq_log.c - leveled logging to stderr, one write(2) per line. */
#include "tq_log.h"

#include "tq_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longest line written; longer messages are cut and end in "...". */
#define TQ_LOG_LINE_MAX 2048
/* Longest role prefix kept. */
#define TQ_LOG_ROLE_MAX 64

static char log_role[TQ_LOG_ROLE_MAX] = "taskq";
static atomic_int log_level = TQ_LOG_INFO;
static atomic_int log_format = TQ_LOG_LOGFMT;
static atomic_int log_journal; /* stderr is the journal: priority prefixes */

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_lower[] = {"error", "warn", "info", "debug"};
/* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const char *const level_prio[] = {"<3>", "<4>", "<6>", "<7>"};

int tq_log_format_parse(const char *s)
{
    static const char *const names[] = {"logfmt", "json", "text"};
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void tq_log_set_format(int format)
{
    if (format >= TQ_LOG_LOGFMT && format <= TQ_LOG_TEXT)
        atomic_store(&log_format, format);
}

/* 1 if JOURNAL_STREAM ("DEV:INODE") names the file stderr is. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void tq_log_init(const char *role)
{
    if (role)
        tq_strlcpy(log_role, role, sizeof log_role);
    int f = tq_log_format_parse(getenv("TASKQ_LOG_FORMAT"));
    if (f >= 0)
        tq_log_set_format(f);
    atomic_store(&log_journal, stderr_is_journal());
}

void tq_log_set_level(int level)
{
    if (level < TQ_LOG_ERROR)
        level = TQ_LOG_ERROR;
    if (level > TQ_LOG_DEBUG)
        level = TQ_LOG_DEBUG;
    atomic_store(&log_level, level);
}

int tq_log_level(void) { return atomic_load(&log_level); }

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

/* Quote the raw message src[n] as a logfmt (json = 0) or JSON (json =
 * 1) string value, without the quotes, into dst[dstlen]: '"' and '\\'
 * are escaped with a backslash, a control byte or a byte that is not
 * valid UTF-8 becomes \xNN (JSON: \u00NN, or "\\xNN" for a bad byte), so
 * the value stays on one line and parses. Cut with "..." when long. */
static void quote_value(char *dst, size_t dstlen, const char *src, size_t n, int json)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char piece[8];
        size_t k = 0, used = 1;
        unsigned char c = p[i];
        size_t u;
        if (c == '"' || c == '\\') {
            piece[k++] = '\\';
            piece[k++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            piece[k++] = (char)c;
        } else if (c >= 0x80 && (u = utf8_len(p + i, n - i)) > 0) {
            memcpy(piece, p + i, u);
            k = used = u;
        } else if (json && c < 0x80) {
            memcpy(piece, "\\u00", 4);
            piece[4] = hex[c >> 4], piece[5] = hex[c & 15];
            k = 6;
        } else {
            if (json)
                piece[k++] = '\\';
            piece[k++] = '\\', piece[k++] = 'x', piece[k++] = hex[c >> 4];
            piece[k++] = hex[c & 15];
        }
        if (o + k + 4 > dstlen) { /* room for "..." and the NUL */
            if (dstlen >= 4) {
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(dst + o, piece, k);
        o += k;
        i += used;
    }
    if (dstlen)
        dst[o < dstlen ? o : dstlen - 1] = '\0';
}

/* Formats the whole line into a stack buffer so that concurrent writers
 * never interleave within a line. Preserves errno. */
void tq_log_write(int level, const char *fmt, ...)
{
    int saved_errno = errno;
    if (level < TQ_LOG_ERROR)
        level = TQ_LOG_ERROR;
    if (level > TQ_LOG_DEBUG)
        level = TQ_LOG_DEBUG;

    char raw[TQ_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    size_t rn = m < 0 ? 0 : (size_t)m < sizeof raw ? (size_t)m : sizeof raw - 1;
    if (m >= (int)sizeof raw)
        memcpy(raw + rn - 3, "...", 3);
    /* Strip a trailing newline the caller may have added. */
    while (rn > 0 && raw[rn - 1] == '\n')
        rn--;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
    const char *prio = atomic_load(&log_journal) ? level_prio[level] : "";
    int format = atomic_load(&log_format);

    char line[TQ_LOG_LINE_MAX + 128];
    char msg[TQ_LOG_LINE_MAX];
    int n;
    if (format == TQ_LOG_TEXT) {
        /* Escape the message: whatever it quotes stays on this line. */
        tq_log_escape(msg, sizeof msg, raw, rn);
        n = snprintf(line, sizeof line, "%s%s %s %s %s\n", prio, when, log_role, level_names[level],
                     msg);
    } else if (format == TQ_LOG_JSON) {
        quote_value(msg, sizeof msg, raw, rn, 1);
        char role[2 * TQ_LOG_ROLE_MAX];
        quote_value(role, sizeof role, log_role, strlen(log_role), 1);
        n = snprintf(line, sizeof line,
                     "%s{\"ts\":\"%s\",\"level\":\"%s\",\"role\":\"%s\",\"msg\":\"%s\"}\n", prio,
                     when, level_lower[level], role, msg);
    } else {
        quote_value(msg, sizeof msg, raw, rn, 0);
        n = snprintf(line, sizeof line, "%sts=%s level=%s role=%s msg=\"%s\"\n", prio, when,
                     level_lower[level], log_role, msg);
    }
    size_t len = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (len && line[len - 1] != '\n')
        line[len - 1] = '\n';

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
