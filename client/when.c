/* when.c - --delay, --at and RFC 3339 display times (promises in
 * when.h). Calendar arithmetic is done here, in integers (Howard
 * Hinnant's days-from-civil), rather than with timegm/gmtime, so that
 * the result never depends on the TZ or the C library. */
#include "when.h"

#include <stdio.h>

#include "tq_util.h"

#define MS_PER_DAY (86400LL * 1000LL)
/* 9999-12-31T23:59:59.999Z in ms since 1970: the last time
 * tq_when_format_utc prints. */
#define LAST_MS (253402300799999LL)

static int is_leap(int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

static int days_in_month(int64_t y, int m)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Exactly n decimal digits at *p into *out; advances *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

int tq_when_parse_at(const char *s, int64_t *ms_out)
{
    if (!s)
        return -1;
    const char *p = s;
    int y, mo, d, h, mi, se;
    if (digits(&p, 4, &y) < 0 || expect(&p, '-') < 0 || digits(&p, 2, &mo) < 0 ||
        expect(&p, '-') < 0 || digits(&p, 2, &d) < 0)
        return -1;
    if (*p != 'T' && *p != 't')
        return -1;
    p++;
    if (digits(&p, 2, &h) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &mi) < 0 ||
        expect(&p, ':') < 0 || digits(&p, 2, &se) < 0)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59)
        return -1;
    int64_t frac_ms = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++) {
            if (n >= 9)
                return -1; /* more than nanoseconds: surely a typo */
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        }
        if (n == 0)
            return -1;
        for (int i = n; i < 3; i++)
            frac_ms *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &om) < 0 || oh > 23 ||
            om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1; /* RFC 3339 requires an offset: no local times */
    }
    if (*p != '\0')
        return -1;
    int64_t ms = days_from_civil(y, mo, d) * MS_PER_DAY +
                 ((int64_t)h * 3600 + mi * 60 + se) * 1000 + frac_ms - offset_min * 60000;
    if (ms < 0)
        return -1;
    *ms_out = ms;
    return 0;
}

int tq_when_parse_delay(const char *s, int64_t *ms_out)
{
    int64_t ms;
    if (tq_parse_seconds_ms(s, &ms) < 0 || ms > TQ_WHEN_MAX_DELAY_MS)
        return -1;
    *ms_out = ms;
    return 0;
}

void tq_when_format_utc(int64_t ms, char *out, size_t size)
{
    if (size == 0)
        return;
    if (ms < 0 || ms > LAST_MS) {
        snprintf(out, size, "-");
        return;
    }
    int64_t days = ms / MS_PER_DAY, rem = ms % MS_PER_DAY / 1000, y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, m, d, (int)(rem / 3600),
             (int)(rem / 60 % 60), (int)(rem % 60));
}
