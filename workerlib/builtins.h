/* builtins.h - the functions every worker can serve without
 * configuration, as DESIGN.md promises:
 *   square  payload "n" (decimal integer, whitespace around allowed)
 *           -> "n * n = n²", computed in 128 bits
 *   echo    the payload back, byte for byte
 *   sleep   payload = seconds (decimal, 0..86400) -> "slept S";
 *           wakes when the task is cancelled
 *   fail    always fails, with the payload as the error */
#ifndef TQ_WORKER_BUILTINS_H
#define TQ_WORKER_BUILTINS_H

#include "run.h"

/* Longest sleep accepted, in seconds (one day). */
#define TQ_BUILTIN_SLEEP_MAX_S 86400

/* NULL-terminated list of built-in names, in the order they are served. */
extern const char *const tq_builtin_names[];

/* 1 if name is a built-in. */
int tq_builtin_exists(const char *name);

/* Run built-in `name` on ctx, filling *out (which must be zeroed or hold
 * an earlier result; it is replaced). Returns 0, or -1 if name is not a
 * built-in (out untouched). A cancelled sleep returns 0 with an
 * unspecified outcome: the caller knows it cancelled. */
int tq_builtin_run(const char *name, const tq_run_ctx_t *ctx, tq_run_result_t *out);

#endif
