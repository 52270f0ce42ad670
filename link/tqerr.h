/* tqerr.h - libtaskq's public edge of the error convention (tq_err.h):
 * filling the caller's taskq_error_t. Only the functions of
 * include/taskq.h (client/taskq.c, client/session.c's taskq_connect,
 * workerlib/worker.c) use these; everything below them returns -1 with
 * a tq_err_t whose code is a TASKQ_ERR_* category. */
#ifndef TQ_TQERR_H
#define TQ_TQERR_H

#include "taskq.h"
#include "tq_err.h"

/* Fill err (when given) with code and the formatted message (cut to
 * TASKQ_ERROR_MAX); returns -1, so callers can `return tq_api_fail(...)`. */
int tq_api_fail(taskq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copy an inside error (code: a TASKQ_ERR_* category) into the caller's
 * err (when given); returns -1, like tq_api_fail. */
int tq_err_to_public(taskq_error_t *err, const tq_err_t *in);

#endif
