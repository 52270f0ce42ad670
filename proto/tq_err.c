/* tq_err.c - see tq_err.h. */
#include "tq_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void tq_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "taskq: internal error (a bug): assertion '%s' failed at %s:%d\n", what, file,
            line);
    fflush(stderr);
    abort();
}

int tq_err_set(tq_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}
