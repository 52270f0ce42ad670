/* child.h - running a function in a child process: the prefork, spawn
 * and coprocess execution modes (taskq.h, TASKQ_MODE_*; docs/workers.md,
 * "Execution modes").
 *
 * A slot keeps one tq_child_t per function whose mode is not thread and
 * calls tq_child_run from its own thread only. Modes:
 *   prefork    C function or built-in: a long-lived child (started at
 *              the slot's first task of the function, restarted after it
 *              dies) that runs one task per request; slot_init runs in
 *              it, slot_fini when it is told to end.
 *   spawn      C function or built-in: a child per task (slot_init and
 *              slot_fini around that one task).
 * Both are forks of the fork server when the function has one
 * (tq_fn_t.forks, forkserver.h: no copy of the worker's key), else
 * forks of the worker.
 *   coprocess  command: a long-lived program speaking the framing below
 *              on its stdin and stdout.
 * (spawn for a command is tq_command_run: a fresh exec per task.)
 *
 * Coprocess framing (all integers big-endian):
 *   request  u32 length, then that many payload bytes
 *   reply    u8 status (0 = ok: data is the result; 1 = error: data is
 *            the error text), u32 length, then that many bytes
 * One request is answered by exactly one reply, in order. The forked
 * children of prefork/spawn use the same reply; their request carries a
 * header before the payload (u64 task id, u32 attempt, u32 timeout ms,
 * u64 max result) and a reply status 2 means "timed out".
 *
 * Every child runs in its own process group, with default signal
 * dispositions, an empty signal mask, stdin from /dev/null (coprocess:
 * the framing pipe), the worker's stderr, no other fds of the worker,
 * and the resource limits of its tq_fn_t. A child that dies fails the
 * task it was running with "worker child died: signal 11 (Segmentation
 * fault)" (coprocess: "coprocess died: ...") and is started again for
 * the next task. A run timeout, a cancel, a reply over max_result or a
 * broken frame kill the child's process group (it is restarted). */
#ifndef TQ_WORKER_CHILD_H
#define TQ_WORKER_CHILD_H

#include <stdint.h>
#include <sys/types.h>

#include "pool.h"
#include "run.h"

typedef struct tq_child tq_child_t;

/* A child for fn on slot (nothing is started until the first task).
 * Caller owns the result (tq_child_destroy). */
tq_child_t *tq_child_new(const tq_fn_t *fn, int slot);

/* Run one task in the child (starting it if needed) and fill *out as
 * tq_cfn_run or tq_command_run would. ctx->cancel_fd readable kills the
 * child and reports "cancelled" (the caller ignores it). */
void tq_child_run(tq_child_t *self, const tq_run_ctx_t *ctx, uint64_t id, uint32_t attempt,
                  tq_run_result_t *out);

/* End the child: close its input (a prefork child runs slot_fini and
 * exits; a coprocess sees EOF on stdin), wait up to
 * TQ_CHILD_EXIT_GRACE_MS, then kill its process group. Accepts NULL;
 * nulls *self_p. */
void tq_child_destroy(tq_child_t **self_p);

/* The main of a prefork or spawn child started by the fork server
 * (tq_forkserver_main_fn): the setup every child gets, then serve
 * requests for fn from fd. Never returns. */
void tq_child_main(const tq_fn_t *fn, int slot, int fd, int oneshot, pid_t worker);

/* How long an ending child may take to exit by itself. */
#define TQ_CHILD_EXIT_GRACE_MS 2000

/* "signal 11 (Segmentation fault)" or "exit status 3" for a wait
 * status, into out[outlen]. */
void tq_child_describe(int wstatus, char *out, size_t outlen);

#endif
