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
 * The scheduler leases the tasks through the engine, moves credit, records the
 * lease on the worker, and hands each worker's batch to a callback (the
 * loop encodes and sends one DISPATCH per call). No sockets here. */
#ifndef TQ_MASTER_SCHEDULER_H
#define TQ_MASTER_SCHEDULER_H

#include <stddef.h>

#include "engine.h"
#include "peers.h"
#include "store.h"

/* One DISPATCH worth of tasks for worker w: n is 1..TQ_MAX_BATCH and the
 * payloads total at most TQ_BATCH_BYTES (or one task, if it alone is
 * larger). The tasks are already leased to w. */
typedef void (*tq_sched_emit_fn)(void *arg, tq_peer_t *w, tq_task_t **tasks, size_t n);

/* Hand out as many queued tasks as credit allows. Returns the number of
 * tasks leased. */
size_t tq_sched_run(tq_engine_t *engine, tq_peers_t *peers, tq_now_t now, tq_sched_emit_fn emit,
                    void *arg);

#endif
