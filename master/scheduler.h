/* scheduler.h - dispatch: which queued task goes to which worker.
 *
 * Rules: a task goes only to a worker that declared its function; a
 * worker never gets more tasks than its credit (slots + prefetch); a
 * task with a run timeout only goes to a worker holding fewer leases
 * than its slots (it must start at once: its lease expires timeout + 2
 * heartbeats after dispatch); draining workers get none. Tasks are handed out ONE at a time round-robin over the eligible
 * workers, so a burst is split evenly; queues are served round-robin;
 * within a queue the highest priority (then the oldest) goes first.
 *
 * The scheduler makes a plan (tasks held out of their heaps, nothing
 * leased, nothing recorded), then commits it batch by batch: a batch's
 * DISPATCH is handed to a send callback (the outbox queues or sends it),
 * and only then are its leases made through the engine (one LEASE
 * record each), the worker's books and credit updated. A batch its
 * callback refuses (its worker is gone) goes back unleased: no lease is
 * ever undone. No sockets here. */
#ifndef TQ_MASTER_SCHEDULER_H
#define TQ_MASTER_SCHEDULER_H

#include <stddef.h>

#include "engine.h"
#include "peers.h"
#include "store.h"

/* One DISPATCH of a plan: tasks[n] (1..TQ_MAX_BATCH, payloads at most
 * TQ_BATCH_BYTES or one larger task), queued and held for worker w. */
typedef struct {
    tq_peer_t *w;
    tq_task_t **tasks;
    size_t n;
} tq_sched_batch_t;

typedef struct {
    tq_sched_batch_t *b; /* in the peers' scratch: valid until the next plan */
    size_t n;
} tq_sched_plan_t;

/* Pick tasks for the workers with credit into plan (held through the
 * engine; credit and leases untouched). Commit or drop it before
 * anything else changes the store. Returns the tasks planned. */
size_t tq_sched_plan(tq_engine_t *engine, tq_peers_t *peers, tq_sched_plan_t *plan);

/* Queue the DISPATCH of tasks[n] for w: 0 when it is queued for sending
 * (tasks carry tq_task_attempt + 1, the attempt the lease will have),
 * -1 when it cannot be (w is gone). */
typedef int (*tq_sched_send_fn)(void *arg, tq_peer_t *w, tq_task_t *const *tasks, size_t n);

/* Commit plan: for each batch, send it, then lease its tasks to its
 * worker at now (or put them back when send refuses). Returns the
 * tasks leased. */
size_t tq_sched_commit(tq_engine_t *engine, const tq_sched_plan_t *plan, tq_now_t now,
                       tq_sched_send_fn send, void *arg);

/* tq_sched_plan, then tq_sched_commit. */
size_t tq_sched_run(tq_engine_t *engine, tq_peers_t *peers, tq_now_t now, tq_sched_send_fn send,
                    void *arg);

#endif
