/* when.h - when a task may first run: the taskq command's --delay and
 * --at values, and RFC 3339 times for display (taskq dead). Pure
 * functions of their arguments (no clock, no locale, no time zone
 * database), so that they are unit-tested in cli_test.c. */
#ifndef TQ_WHEN_H
#define TQ_WHEN_H

#include <stddef.h>
#include <stdint.h>

/* Longest --delay: 10 years of 365.25 days, in ms. */
#define TQ_WHEN_MAX_DELAY_MS 315576000000LL /* 10 * 365.25 * 86400 * 1000 */

/* Room for tq_when_format_utc's text: "9999-12-31T23:59:59Z" and NUL. */
#define TQ_WHEN_UTC_LEN 21

/* Parse an RFC 3339 date-time, "2026-11-22T10:00:00Z" or
 * "2026-11-22T10:00:00.5+01:00" (section 5.6: full-date "T" full-time;
 * 'T' and 'Z' may be lower case; 1..9 fraction digits, truncated to ms;
 * offset "Z" or +HH:MM / -HH:MM). Years 0000..9999, real calendar days
 * (Feb 29 only in leap years), hours 00..23, minutes and seconds 00..59
 * (a leap second :60 is refused). Anything else, including leading or
 * trailing blanks, is refused. Returns 0 with *ms_out the Unix time in
 * ms, or -1 (also for a time before 1970-01-01T00:00:00Z). */
int tq_when_parse_at(const char *s, int64_t *ms_out);

/* Parse a --delay: decimal seconds ("2", "1.5", ".25"), at most
 * TQ_WHEN_MAX_DELAY_MS. Returns 0 with *ms_out, or -1. */
int tq_when_parse_delay(const char *s, int64_t *ms_out);

/* Unix ms as "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds, rounded down)
 * into out[size] (size >= TQ_WHEN_UTC_LEN; shorter is truncated). ms
 * outside 0..9999-12-31T23:59:59.999Z prints "-". */
void tq_when_format_utc(int64_t ms, char *out, size_t size);

#endif
