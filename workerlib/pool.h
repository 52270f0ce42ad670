/* pool.h - the slot threads that run tasks.
 *
 * The connection thread owns every tq_pool_task_t. It hands a task to the pool
 * with tq_pool_submit; a slot thread runs it and sends the task pointer
 * back over an inproc PUSH socket connected to the endpoint given to
 * tq_pool_new (the connection thread binds the PULL end first and polls
 * it with its DEALER). Between submit and that message a slot may write
 * the task's `result`; the connection thread must not free the task and
 * may only touch it through tq_pool_cancel. */
#ifndef TQ_WORKER_POOL_H
#define TQ_WORKER_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "run.h"
#include "taskq.h"
#include "tq_frame.h"
#include "tq_limits.h"

/* A function this worker serves: a built-in, an external command or a C
 * function registered through the API. */
typedef struct {
    char name[TQ_MAX_NAME + 1];
    tq_command_t *cmd; /* an external command, or NULL */
    taskq_fn cfn;      /* a C function, or NULL (both NULL: the built-in) */
    void *arg;
    taskq_slot_init_fn slot_init;
    taskq_slot_fini_fn slot_fini;
    int mode;                    /* TASKQ_MODE_* (commands: spawn or coprocess) */
    tq_limits_t limits;          /* for its child processes (set when the worker runs) */
    struct tq_forkserver *forks; /* prefork/spawn children come from it, or NULL:
                                    forked by the slot (forkserver.h) */
} tq_fn_t;

/* 1 if fn runs in forked children (prefork or spawn of a C function or a
 * built-in: child.c), which come from the fork server when it has one. */
static inline int tq_fn_forks(const tq_fn_t *fn)
{
    return !fn->cmd && (fn->mode == TASKQ_MODE_PREFORK || fn->mode == TASKQ_MODE_SPAWN);
}

/* Why a task was cancelled (tq_pool_task_t.cancel). */
enum {
    TQ_POOL_CANCEL_NONE = 0,
    TQ_POOL_CANCEL_KILLED = 1,   /* KILL from the master, or a newer attempt: report nothing */
    TQ_POOL_CANCEL_RELEASED = 2, /* drain ran out of time: hand back with RELEASE */
};

typedef struct tq_task {
    uint64_t id;
    uint32_t attempt;
    uint32_t timeout_ms;
    const tq_fn_t *fn;
    uint8_t *payload;
    tq_msgref_t *payload_ref; /* payload is a view of this received frame, or NULL (owned) */
    size_t len;
    size_t max_result;
    int64_t accepted_ms;              /* when it arrived (tq_run_now_ms) */
    atomic_int cancel;                /* TQ_POOL_CANCEL_*, set by tq_pool_cancel */
    int slot;                         /* running on this slot, -1 if not (pool mutex) */
    int ran;                          /* 1 once a slot ran it (written by the slot) */
    int64_t run_us;                   /* how long its run took (written by the slot) */
    tq_run_result_t result;           /* written by the slot */
    struct tq_result_box *result_box; /* result.data's references once lent (tq_task_lend_result) */
    struct tq_task *next;             /* pool queue link, then free for the owner */
} tq_pool_task_t;

typedef struct tq_pool tq_pool_t;

/* Start nslots threads whose PUSH sockets connect to result_endpoint
 * (an inproc endpoint already bound by the caller in zctx). fns[nfns]
 * are the functions tasks may name (tq_pool_task_t.fn points into it); they
 * must outlive the pool. Each slot keeps per-function slot state: a
 * function's slot_init runs on the slot before its first task there,
 * its slot_fini when the pool is destroyed. Caller owns the result.
 * NULL on failure. */
tq_pool_t *tq_pool_new(void *zctx, const char *result_endpoint, size_t nslots, const tq_fn_t *fns,
                       size_t nfns);

/* Run an inline-mode task (fn->mode TASKQ_MODE_INLINE) on the calling
 * thread: its result is in task->result on return. */
void tq_pool_run_inline(tq_pool_t *self, tq_pool_task_t *task);

/* Queue a task; the next free slot runs it. Ownership stays with the
 * caller (see above). */
void tq_pool_submit(tq_pool_t *self, tq_pool_task_t *task);

/* Ask a queued or running task to stop: sets task->cancel to reason (if
 * not already set) and wakes the handler. The task still comes back over
 * the result socket (unrun if it had not started). */
void tq_pool_cancel(tq_pool_t *self, tq_pool_task_t *task, int reason);

/* Cancel every task still waiting in the queue (not yet on a slot) with
 * reason; they come back unrun. */
void tq_pool_cancel_queued(tq_pool_t *self, int reason);

/* Take every task still waiting in the queue (not yet on a slot) out
 * of it, in order, linked through ->next; they will not come back over
 * the result socket. NULL when none waits. */
tq_pool_task_t *tq_pool_take_queued(tq_pool_t *self);

/* Run tasks on n slots (1..TQ_MAX_SLOTS) from now on: more start new
 * slot threads; fewer park the highest ones once their running task
 * is done (a parked slot keeps its slot state and children until it is
 * needed again or the pool is destroyed). Nothing running is stopped.
 * Returns 0, or -1 when n is out of range or a thread could not start
 * (then the slots that did start are used). */
int tq_pool_resize(tq_pool_t *self, size_t n);
/* The slots that take tasks now. */
size_t tq_pool_slots(tq_pool_t *self);

/* Stop the slot threads (they finish their current task first, so
 * cancel running tasks before) and free the pool. Tasks still queued are
 * not returned. Accepts NULL; nulls *self_p. */
void tq_pool_destroy(tq_pool_t **self_p);

/* Add the task's result to out (a RESULT being built) as a record and,
 * when it is large (TQ_LEND_MIN), lend its bytes to the sender
 * (tq_out_lend): ZeroMQ then sends them without a copy and frees them
 * with its last reference (the task's is dropped by tq_pool_task_free). */
void tq_task_result_item(tq_pool_task_t *task, tq_out_t *out);

/* Free a task and its payload and result. Accepts NULL. */
void tq_pool_task_free(tq_pool_task_t *task);

#endif
