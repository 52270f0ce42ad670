/* engine.h - the master's task state machine: the only code that changes
 * a task's state (submit, lease, finish, retry with backoff, lost lease,
 * lease expiry, cancel, dead, revive, purge, ACK, delivery, expiry) and
 * a queue's paused mark.
 *
 * Determinism rule (docs/architecture.md): the engine reads no clock and
 * no other randomness source. Time comes in as an argument (tq_now_t);
 * the backoff jitter comes from a generator seeded by the caller
 * (tq_engine_cfg_t.seed). Fed the same commands in the same order with
 * the same times, two engines made with the same settings reach the same
 * state and tell their subscribers the same events. A replicated master
 * feeds it from a log.
 *
 * It knows no sockets and no peers: a worker is an opaque pointer and an
 * instance id. What happened is told to subscribers (tq_engine_subscribe)
 * as one event list: the journal (persist.c) hears every change of a
 * task, key or queue mark; the loop serves waiting clients (FINISHED),
 * ends leases in its worker books and sends KILLs (LEASE_END), wakes the
 * scheduler (WAKE) and counts (LATE).
 *
 * Owned by the loop thread; no locks. */
#ifndef TQ_MASTER_ENGINE_H
#define TQ_MASTER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "items.h"
#include "store.h"
#include "tq_proto.h"

/* The time of a command: wall clock (task times, TTLs, backoff) and a
 * monotonic clock (lease deadlines), both in ms. */
typedef struct {
    int64_t wall_ms;
    int64_t mono_ms;
} tq_now_t;

typedef struct {
    tq_store_cfg_t store;     /* ids, --max-tasks, TTLs, key retention */
    uint32_t max_attempts;    /* lost leases before a task is dead (>= 1) */
    int64_t lease_timeout_ms; /* a task without a run timeout is taken back
                                 * this long after dispatch; 0 = never */
    int64_t heartbeat_ms;     /* a run timeout's lease lasts timeout + 2 of these */
    int64_t backoff_base_ms;  /* first retry / lost-lease delay; 0 = none */
    int64_t backoff_cap_ms;   /* the delay doubles up to this */
    uint64_t seed;            /* the backoff jitter's generator */
    /* The name of an opaque worker, for error texts and the log (NULL:
     * "?"). Must be a pure function of the worker. */
    const char *(*worker_name)(const void *worker);
} tq_engine_cfg_t;

typedef struct tq_engine tq_engine_t;

/* What a subscriber hears, after the change (LEASE_END: just before). */
typedef enum {
    TQ_EV_TASK,       /* task changed as store_ev says (the journal's) */
    TQ_EV_KEY,        /* a retained key was added, or is about to be freed (deleted) */
    TQ_EV_PAUSE,      /* queue's paused mark changed to `paused` */
    TQ_EV_LEASE_END,  /* task's lease held by worker (attempt) ends now;
                      * kill: its run is to be stopped (send KILL) */
    TQ_EV_FINISHED,   /* task finished: serve its waiters */
    TQ_EV_WAKE,       /* tasks may have become runnable: run the scheduler */
    TQ_EV_LATE,       /* a result was not taken (late, foreign) */
    TQ_EV_ITEM,       /* a plain-queue item was put, or is about to be
                      * deleted (deleted): the journal's */
    TQ_EV_ITEM_READY, /* items went (back) into a plain queue: serve parked GETs */
} tq_engine_ev_kind_t;

typedef struct {
    tq_engine_ev_kind_t kind;
    tq_store_event_t store_ev; /* TASK */
    tq_task_t *task;           /* TASK, LEASE_END, FINISHED */
    tq_key_t *key;             /* KEY */
    int deleted;               /* KEY */
    tq_queue_t *queue;         /* PAUSE */
    int paused;                /* PAUSE */
    void *worker;              /* LEASE_END */
    uint32_t attempt;          /* LEASE_END */
    int kill;                  /* LEASE_END */
    const tq_item_t *item;     /* ITEM */
} tq_engine_ev_t;

typedef void (*tq_engine_fn)(void *arg, const tq_engine_ev_t *ev);

/* Subscribers at most (journal, loop, metrics, the HTTP history, tests). */
#define TQ_ENGINE_MAX_SUBS 8

/* Caller owns the result (tq_engine_destroy). */
tq_engine_t *tq_engine_new(const tq_engine_cfg_t *cfg);
/* Frees every task. Accepts NULL; nulls *self_p. */
void tq_engine_destroy(tq_engine_t **self_p);

/* Add fn(arg, event) to the subscribers (called in the order added), or
 * remove the one added with this fn and arg. */
void tq_engine_subscribe(tq_engine_t *self, tq_engine_fn fn, void *arg);
void tq_engine_unsubscribe(tq_engine_t *self, tq_engine_fn fn, void *arg);

/* The store, for reading (and recovery: persist.c restores into it).
 * State changes go through the tq_engine_* functions. */
tq_store_t *tq_engine_store(const tq_engine_t *self);
const tq_engine_cfg_t *tq_engine_cfg(const tq_engine_t *self);

/* ---- settings changed while running (SIGHUP) ------------------------------ */

/* --max-tasks: tasks, keys and plain-queue items held at most from now
 * on (what is held stays). */
void tq_engine_set_max_tasks(tq_engine_t *self, size_t max_tasks);
/* --result-ttl, --unfetched-ttl: also for results already kept
 * (tq_store_set_ttls). */
void tq_engine_set_ttls(tq_engine_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms);
/* --max-attempts, --lease-timeout, --retry-backoff, --retry-backoff-max:
 * for what happens from now on (a lease already given keeps its
 * deadline; a task already past the new max-attempts dies at its next
 * lost lease). base <= cap, max_attempts >= 1. */
void tq_engine_set_retry(tq_engine_t *self, uint32_t max_attempts, int64_t lease_timeout_ms,
                         int64_t backoff_base_ms, int64_t backoff_cap_ms);

/* ---- commands ----------------------------------------------------------- */


/* Called by tq_engine_submit for each record that will make a new task
 * (its key is not held), after the room check and before anything is
 * stored: the caller interns its names (charging its peer's budget).
 * Returns 0, or -1 with *err filled (the SUBMIT is refused). */
typedef int (*tq_engine_names_fn)(void *arg, const tq_task_spec_t *spec, tq_err_t *err);

/* SUBMIT of specs[n] (names valid): a record whose non-empty key is held
 * gets the existing task's id and stores nothing; two records with the
 * same key get the same id. The new tasks are stored whole or not at
 * all. session: keys are session keys (TQ_SUBMIT_SCOPED_KEYS). names
 * (may be NULL) interns the names of the new ones. Fills ids[i] and
 * added[i] (1: a new task). Returns 0, or -1 with *err (nothing
 * stored). */
int tq_engine_submit(tq_engine_t *self, const tq_task_spec_t *specs, size_t n, int session,
                     tq_now_t now, tq_engine_names_fn names, void *names_arg, uint64_t *ids,
                     uint8_t *added, tq_err_t *err);

/* Queued, runnable (or held) t leased to worker (instance holder): attempt + 1,
 * and a lease deadline: run timeout + 2 heartbeats, or --lease-timeout,
 * from now. */
void tq_engine_lease(tq_engine_t *self, tq_task_t *t, void *worker, uint64_t holder, tq_now_t now);

/* Dispatch planning (scheduler.h): queued, runnable t is held out of
 * its heap for a plan, or put back at its place. No event: a held task
 * is still queued, and the plan is committed (tq_engine_lease) or
 * dropped within the same call. */
void tq_engine_hold(tq_engine_t *self, tq_task_t *t);
void tq_engine_unhold(tq_engine_t *self, tq_task_t *t);

/* The worker (worker, instance) handed back (id, attempt) unrun: if it
 * still holds that lease the task is queued again at its old place.
 * Returns 1 if it was, 0 if the lease had ended already. */
int tq_engine_release(tq_engine_t *self, void *worker, uint64_t id, uint32_t attempt);

/* What tq_engine_result did with one RESULT record. */
typedef enum {
    TQ_RES_LATE,    /* not the task's current attempt, or it finished */
    TQ_RES_FOREIGN, /* the current attempt, but this worker never held it */
    TQ_RES_RERUN,   /* a failure after the lease was lost: the task runs again */
    TQ_RES_RETRIED, /* a failure with retries left: queued after a backoff */
    TQ_RES_TAKEN,   /* the task finished with it */
} tq_engine_result_t;

/* RESULT record r from the worker with instance id `instance`. The
 * attempt's holder (the instance it was dispatched to, kept by the
 * journal) decides: a worker that reconnected, even to a restarted
 * master, still has its result taken; no other worker's is. */
tq_engine_result_t tq_engine_result(tq_engine_t *self, uint64_t instance, const tq_result_item_t *r,
                                    tq_now_t now);

/* Leased t's worker was lost (why: for the error text): back in its
 * queue after a backoff, or dead once it lost --max-attempts leases. */
void tq_engine_lost(tq_engine_t *self, tq_task_t *t, const char *why, tq_now_t now);

/* End the lease whose deadline passed first (if any passed at now), with
 * a KILL of its run: a run timeout is retried (retries left) or fails as
 * timed out; a --lease-timeout is a lost lease. Returns the task's id,
 * or 0 when no deadline has passed. */
uint64_t tq_engine_expire_one(tq_engine_t *self, tq_now_t now);

/* Cancel task id: TQ_CANCEL_OK (a running attempt is killed),
 * TQ_CANCEL_FINISHED or TQ_CANCEL_UNKNOWN. */
uint8_t tq_engine_cancel(tq_engine_t *self, uint64_t id, tq_now_t now);

/* A client ACKed id's outcome (ignored unless finished). */
void tq_engine_ack(tq_engine_t *self, uint64_t id);
/* Finished t was delivered to a client: its result TTL starts (once). */
void tq_engine_fetched(tq_engine_t *self, tq_task_t *t, tq_now_t now);

/* Operator: a dead or failed task (the failed set: it failed after its
 * retries) queued again as new (retry), or deleted (purge). Returns 1,
 * or 0 if id is neither dead nor failed. */
int tq_engine_revive(tq_engine_t *self, uint64_t id);
int tq_engine_purge(tq_engine_t *self, uint64_t id);
/* ... every dead task (of queue q, or all when q is NULL). Returns how
 * many. */
size_t tq_engine_revive_all(tq_engine_t *self, const tq_queue_t *q, int purge);

/* Operator: cancel up to max queued tasks of q (runnable and delayed,
 * every function; held tasks are not queued), as tq_engine_cancel does:
 * each finishes as cancelled (FINISHED: its waiters are served; the
 * journal records it). *more = 1 when q still has queued tasks (call
 * again: the caller bounds the work of one call). Returns how many. */
size_t tq_engine_queue_empty(tq_engine_t *self, tq_queue_t *q, size_t max, tq_now_t now, int *more);
/* Operator: delete queue q, which must have no queued (or delayed) and
 * no running task: its paused mark is dropped (journaled), so nothing
 * keeps it and the store frees it once its stored results expire (at
 * once when it has none: tq_store_gc). Returns 0, or -1 when q is not
 * empty (nothing changed). */
int tq_engine_queue_delete(tq_engine_t *self, tq_queue_t *q);

/* Pause (paused 1) or resume queue q. Returns 1 if its mark changed. */
int tq_engine_pause(tq_engine_t *self, tq_queue_t *q, int paused);

/* Delayed tasks whose time came become runnable (at most max). Returns
 * how many. */
size_t tq_engine_promote(tq_engine_t *self, tq_now_t now, size_t max);
/* Delete at most max_steps expired results and keys. Returns the steps
 * used. */
size_t tq_engine_sweep(tq_engine_t *self, tq_now_t now, size_t max_steps);

/* When the n-th retry (or lost lease) of a task may run: wall ms,
 * backoff_base doubled n - 1 times up to backoff_cap, the upper half of
 * it from the jitter generator; 0 (at once) when backoff is off. */
int64_t tq_engine_backoff(tq_engine_t *self, uint32_t n, tq_now_t now);

/* ---- plain put/get queues (items.h) ------------------------------------ */

/* The items, for reading. */
const tq_items_t *tq_engine_items(const tq_engine_t *self);
/* PUT of n items (queue names valid) to their queues: all or nothing.
 * Fills ids. Returns 0, or -1 with *err (TOO_MANY: the item cap). */
int tq_engine_put(tq_engine_t *self, const tq_put_item_t *items, size_t n, uint64_t *ids,
                  tq_err_t *err);
/* Up to max items from the head of queue, taken by holder (not yet
 * deleted: tq_engine_take_ack). Returns how many (into out). */
size_t tq_engine_take(tq_engine_t *self, tq_bytes_t queue, size_t max, void *holder,
                      tq_item_t **out);
/* TAKE_ACK: the item id taken by holder is deleted. 0, or -1 if holder
 * holds no such item. */
int tq_engine_take_ack(tq_engine_t *self, uint64_t id, void *holder);
/* The items holder took and did not ack go back to the head of their
 * queues (its connection ended). */
void tq_engine_untake(tq_engine_t *self, void *holder);
/* Recovery (persist.c): an item of the journal, or its deletion. */
int tq_engine_item_restore(tq_engine_t *self, tq_bytes_t queue, uint64_t id, tq_bytes_t data);
void tq_engine_item_drop(tq_engine_t *self, uint64_t id);

/* Append a text dump of every task's state (one line each, id order)
 * and the paused queues (by name) to buf: two engines in the same state
 * dump the same text (tests). */
void tq_engine_dump(const tq_engine_t *self, tq_buf_t *buf);

#endif
