/* tq_err.h - the one error convention inside taskq.
 *
 * A function that can fail for a reason outside the program (a bad
 * message, a file, the network, a full disk, a peer's misbehaviour)
 * returns -1 (or NULL) and, when the caller passed a tq_err_t, fills
 * it with a code and a one-line message naming what was wrong; on
 * success it returns 0 (or a pointer, or a count) and leaves the struct
 * alone. Callers that only log may pass NULL. A broken invariant (our
 * own bug) is not an error: it is TQ_ASSERT (tq_util.h), always on.
 *
 * What `code` means depends on the layer, and each layer uses one set:
 *   - proto/ and master/: a TQ_ERR_* wire code (tq_proto.h), the code
 *     the master answers in an ERROR message;
 *   - link/, client/, workerlib/ (libtaskq's insides): a TASKQ_ERR_*
 *     category of include/taskq.h, copied as is into the caller's
 *     taskq_error_t by the public function (tq_err_to_public, tqerr.h);
 *   - common/: 0 unless its header says otherwise (the callers, often
 *     main(), choose the exit status).
 * The public taskq_error_t appears only in the functions of
 * include/taskq.h and their immediate implementation; exit statuses
 * (tq_exit.h) only in the programs' main.c and the command's dispatch
 * (client/cli*.c), which map errors to them. */
#ifndef TQ_ERROR_H
#define TQ_ERROR_H

#include "tq_limits.h"

/* A verdict: a code (see above) and a human message naming the field,
 * file or peer at fault (no trailing newline, never key material). */
typedef struct {
    int code;
    char msg[TQ_MAX_ERROR_TEXT];
} tq_err_t;

/* Fill err (when not NULL) with code and a printf-style message, cut to
 * TQ_MAX_ERROR_TEXT. Returns -1, so that a failing function can
 * `return tq_err_set(err, ...)`. */
int tq_err_set(tq_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Always-on invariant check, for our own bugs only (never for what a
 * peer, a file or a flag can cause): prints "internal error (a bug):
 * assertion ... failed at FILE:LINE" and aborts, also in release
 * builds. */
#define TQ_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tq_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
void tq_assert_fail(const char *what, const char *file, int line) __attribute__((noreturn));

#endif
