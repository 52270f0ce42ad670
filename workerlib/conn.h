/* conn.h - the worker's connection to the master, and its main loop
 * (the engine behind taskq_worker_run, worker.c).
 *
 * The calling thread becomes the connection thread: it owns the DEALER
 * (CURVE client), the handshake watch, the task table and the slot
 * pool, and runs until the worker has drained or cannot go on.
 *
 *  - HELLO {"role":"worker","name","slots","prefetch","busy","functions"} on every new
 *    socket; WELCOME sets heartbeat_ms, heartbeat_timeout_ms and
 *    max_payload. ERROR not-registered: HELLO again.
 *  - HEARTBEAT every heartbeat_ms once welcomed. Nothing from the master
 *    for heartbeat_timeout_ms: close the socket (linger 0) and connect a
 *    fresh one after a backoff (100 ms doubling to 5 s). Running tasks
 *    keep running; their results go out on the new connection.
 *  - DISPATCH runs tasks on the pool (inline-mode functions at once,
 *    on this thread); finished tasks go back in one
 *    RESULT per poll iteration, with credit = slots freed (0 while
 *    draining). KILL stops an (id, attempt) and reports no real
 *    outcome; its freed slot rides on the next RESULT's credit, or on a
 *    "killed" outcome for that attempt (fenced off by the master as
 *    late) when there is nothing else to send.
 *  - Authentication failure before any handshake ever succeeded: the
 *    run fails with TASKQ_ERR_CONNECT "authentication failed
 *    connecting to ENDPOINT (wrong authkey?)".
 *  - A byte on stop_fd is a stop request (taskq_worker_stop, which
 *    taskq-worker calls on SIGTERM/SIGINT): the first starts a drain
 *    (DRAIN, new dispatches handed back with RELEASE, wait up to
 *    drain_timeout_ms, then kill and RELEASE what still runs, BYE); the
 *    second skips the wait.
 *  - *slots_wanted set to another count (taskq_worker_set_concurrency,
 *    SIGHUP): the pool grows or parks slots, running tasks go on, the
 *    credit follows, and a HELLO on the same connection tells the
 *    master, which keeps our leases (PROTOCOL.md 12.1). */
#ifndef TQ_WORKER_CONN_H
#define TQ_WORKER_CONN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "tq_authkey.h"
#include "tq_err.h"

typedef struct {
    const char *endpoint;        /* tcp://host:port */
    const tq_curve_keys_t *keys; /* derived from the authkey */
    const char *name;            /* shown in the master's status */
    size_t slots;                /* 1..TQ_MAX_SLOTS */
    size_t prefetch;             /* 0..TQ_MAX_PREFETCH tasks beyond the slots */
    int adaptive;                /* size the prefetch from what we measure
                                   * (docs/workers.md); prefetch is unused */
    const tq_fn_t *fns;          /* functions served */
    size_t nfns;
    int64_t drain_timeout_ms;
    int stop_fd;                  /* readable: one byte per stop request,
                                   * or TQ_CONN_WAKE_RESIZE */
    _Atomic size_t *slots_wanted; /* set (1..TQ_MAX_SLOTS) to resize the pool
                                   * while running; 0: no change; may be NULL */
    void *zctx;                   /* ZeroMQ context to use, or NULL: our own */
} tq_conn_opts_t;

/* The byte written to stop_fd to look at slots_wanted now (not a stop). */
#define TQ_CONN_WAKE_RESIZE 'r'

/* Run the worker until it has drained (returns 0) or cannot go on:
 * returns -1 with err filled (tq_err.h; code TASKQ_ERR_CONNECT after
 * an authentication failure, TASKQ_ERR_INTERNAL when ZeroMQ or the pool
 * cannot be set up). *stuck is set to 1 when slot threads were left
 * running (tasks that did not stop after a drain): the functions they
 * run (fns, plugin code) must then stay alive. */
int tq_conn_run(const tq_conn_opts_t *opts, int *stuck, tq_err_t *err);

#endif
