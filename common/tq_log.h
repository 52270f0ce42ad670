/* tq_log.h - one logging API for every program. One line per event on
 * stderr, as logfmt by default:
 *   ts=2026-11-21T22:30:01.123Z level=info role=master msg="listening on tcp://127.0.0.1:7070"
 * or JSON (--log-format json, TASKQ_LOG_FORMAT=json):
 *   {"ts":"2026-11-21T22:30:01.123Z","level":"info","role":"master","msg":"listening on ..."}
 * or the older text form (text):
 *   2026-11-21T22:30:01.123Z master INFO listening on tcp://127.0.0.1:7070
 * When stderr is the systemd journal (JOURNAL_STREAM names it), each line
 * starts with its syslog priority ("<6>" for info) so the journal keeps
 * the level. The level is checked before the arguments are formatted.
 * Thread-safe (one write(2) per line). Never log a secret or a payload. */
#ifndef TQ_LOG_H
#define TQ_LOG_H

#include <stddef.h>

typedef enum {
    TQ_LOG_ERROR = 0,
    TQ_LOG_WARN = 1,
    TQ_LOG_INFO = 2,
    TQ_LOG_DEBUG = 3
} tq_log_level_t;
typedef enum { TQ_LOG_LOGFMT = 0, TQ_LOG_JSON = 1, TQ_LOG_TEXT = 2 } tq_log_format_t;

/* The formats' names, for settings tables (ENUM choices). */
#define TQ_LOG_FORMATS "logfmt|json|text"

/* Set the role ("master", "worker", "taskq"); copied. Also takes the
 * format from TASKQ_LOG_FORMAT (when it names one) and looks whether
 * stderr is the journal (JOURNAL_STREAM). */
void tq_log_init(const char *role);
/* Parse "logfmt|json|text"; returns the format or -1. */
int tq_log_format_parse(const char *s);
void tq_log_set_format(int format);
void tq_log_set_level(int level);
int tq_log_level(void);
/* Parse "error|warn|info|debug"; returns the level or -1. */
int tq_log_level_parse(const char *s);

/* Write one line. The message is passed through tq_log_escape (so no
 * text, a peer's included, can break a line in two or send terminal
 * escapes); a trailing newline is dropped. */
void tq_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copy src[srclen] into dst[dstlen] (always NUL-terminated when dstlen >
 * 0) so that it is safe in one log line: a control byte (below 0x20, or
 * DEL) and a byte that is not part of valid UTF-8 become the four
 * characters \xNN; other bytes, valid UTF-8 sequences and backslashes
 * are kept. The output of this function passes through it unchanged, so
 * text escaped at one boundary may be escaped again at the next. Text
 * that does not fit is cut at a character boundary and ends in "...".
 * Returns dst. Use it on anything a peer sent (messages, names, error
 * texts) before it is logged or printed. */
char *tq_log_escape(char *dst, size_t dstlen, const void *src, size_t srclen);
/* tq_log_escape of a NUL-terminated string (NULL: ""). Returns dst. */
char *tq_log_escape_str(char *dst, size_t dstlen, const char *src);

#define TQ_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= tq_log_level())                                                             \
            tq_log_write((level), __VA_ARGS__);                                                    \
    } while (0)
#define tq_error(...) TQ_LOG(TQ_LOG_ERROR, __VA_ARGS__)
#define tq_warn(...) TQ_LOG(TQ_LOG_WARN, __VA_ARGS__)
#define tq_info(...) TQ_LOG(TQ_LOG_INFO, __VA_ARGS__)
#define tq_debug(...) TQ_LOG(TQ_LOG_DEBUG, __VA_ARGS__)

#endif
