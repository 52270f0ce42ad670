/* tqerr.h - filling libtaskq's taskq_error_t, for every part of the
 * library (the client session, the worker API, plugin loading). */
#ifndef TQ_TQERR_H
#define TQ_TQERR_H

#include "taskq.h"

/* Fill err (when given) with code and the formatted message (cut to
 * TASKQ_ERROR_MAX); returns -1, so callers can `return tq_client_fail(...)`. */
int tq_client_fail(taskq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
