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
