/* cfn.h - C functions registered through the worker API (taskq.h):
 * the call, and the taskq_result_t builder they fill. */
#ifndef TQ_WORKERLIB_CFN_H
#define TQ_WORKERLIB_CFN_H

#include <stdatomic.h>

#include "pool.h"
#include "run.h"

/* What a C function may ask about its task besides tq_run_ctx_t. */
typedef struct {
    uint64_t id;
    uint32_t attempt;
    int slot;                 /* slot index, -1 if none */
    void *slot_ctx;           /* the function's state on this slot */
    const atomic_int *cancel; /* non-zero once cancelled; NULL: never */
} tq_cfn_task_t;

/* Longest text taskq_result_printf formats, and taskq_result_error. */
#define TQ_CFN_PRINTF_MAX (64 * 1024)
#define TQ_CFN_ERROR_MAX 8192

/* Call fn->cfn on ctx and task and turn what it did
 * into *out (replaced), in this order of precedence:
 *   run past ctx->deadline_ms     TQ_RUN_TIMEOUT "timed out after S s"
 *   a result over ctx->max_result TQ_RUN_FAILED "result exceeds max payload (N bytes)"
 *   taskq_result_error            TQ_RUN_FAILED with its text
 *   returned non-zero             TQ_RUN_FAILED "NAME: failed (returned N)"
 *   otherwise                     TQ_RUN_OK with the result (maybe empty) */
void tq_cfn_run(const tq_fn_t *fn, const tq_run_ctx_t *ctx, const tq_cfn_task_t *task,
                tq_run_result_t *out);

#endif
