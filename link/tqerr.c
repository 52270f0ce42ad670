/* tqerr.c - see tqerr.h. */
#include "tqerr.h"

#include <stdarg.h>
#include <stdio.h>

int tq_api_fail(taskq_error_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int tq_err_to_public(taskq_error_t *err, const tq_err_t *in)
{
    return tq_api_fail(err, in->code, "%s", in->msg);
}
