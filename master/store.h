/* store.h - the master's tasks: ids, states, per-queue priority heaps,
 * results and their time to live.
 *
 * Owned by the loop thread; no locks. Every queued task sits in the heap
 * of its (queue, function) pair, ordered by priority (higher first) then
 * sequence (lower first, i.e. FIFO). A task remembers its heap index, so
 * cancel removes it from the middle in O(log n). Finished tasks (done,
 * failed, cancelled, dead) sit on one of two lists ordered by expiry:
 * "unfetched" (expires unfetched_ttl after it finished) and "fetched"
 * (expires result_ttl after it was delivered to a client). A TTL applies
 * to every entry of its list alike (a new one moves them all), so
 * appending keeps each list sorted and the sweep only looks at list
 * heads.
 *
 * Idempotency keys: a SUBMIT record's non-empty key maps to the id of the
 * task it created, for key_retention_ms after that task was created. The
 * key entry is separate from the task (a small key -> id record with its
 * own expiry), so the id is still given back after the task's result
 * expired. Keys are swept in bounded steps with the tasks, and count
 * against max_tasks (at most max_tasks keys are held). Session keys
 * (TQ_SUBMIT_SCOPED_KEYS) have no entry of their own: they are kept in
 * their task's record and found through a table of task pointers.
 *
 * Memory: millions of queued tasks are the common case, so a task is a
 * small record (tq_task_t) with its payload inline, from a slab
 * allocator; what matters only once it is leased, delayed, waited on or
 * finished is in tq_task_ext_t, made then. Tasks by id are in a paged
 * map (taskidx.h) that also gives the id-order walk.
 *
 * The store knows nothing about sockets; peers are opaque pointers. */
#ifndef TQ_MASTER_STORE_H
#define TQ_MASTER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "tq_limits.h"
#include "tq_proto.h"

/* Distinct queue and function names the master keeps at once. A client
 * inventing names cannot grow the name table without bound: past this,
 * SUBMIT gets ERROR TQ_ERR_TOO_MANY. Names nothing uses any more are
 * freed again (tq_store_gc). */
#define TQ_STORE_MAX_NAMES 65536

typedef enum {
    TQ_TASK_QUEUED = 0,
    TQ_TASK_LEASED,
    TQ_TASK_DONE,
    TQ_TASK_FAILED,
    TQ_TASK_CANCELLED,
    TQ_TASK_DEAD,
} tq_task_state_t;

typedef struct tq_store tq_store_t;
typedef struct tq_queue tq_queue_t;
typedef struct tq_fnheap tq_fnheap_t;

/* A task's cold part: only tasks that were leased, finished, delayed or
 * waited on have one (tq_task_t.x); it stays until the task is freed. */
typedef struct tq_task_ext {
    void *worker;                        /* tq_peer_t holding the lease, or NULL */
    int64_t deadline_ms;                 /* monotonic: lease expiry (run timeout), 0 = none */
    size_t dl_idx;                       /* index in the store's deadline heap */
    void **waiters;                      /* tq_peer_t clients waiting for the outcome */
    uint8_t *data;                       /* result or error text once finished */
    uint32_t data_len;                   /* at most TQ_PAYLOAD_HARD_MAX (results are payloads) */
    uint32_t started_after_ms;           /* the current attempt's dispatch, in ms after
                                * created_ms, plus 1; 0 = not known (not
                                * journaled, or 49 days late):
                                * tq_task_started_ms */
    int64_t finished_ms;                 /* wall clock; 0 while not finished */
    int64_t expires_ms;                  /* wall clock; 0 while not finished, and for dead
                           * tasks (kept until retried or purged) */
    int64_t not_before_ms;               /* wall clock; non-zero while queued but not yet
                            * runnable (in the delayed heap): submit
                            * --delay/--at, or a retry's backoff */
    struct tq_task *ttl_prev, *ttl_next; /* expiry list while finished; the
                                          * dead list while dead */
    uint64_t holder;                     /* instance id of the worker given attempt
                           * holder_attempt (tq_task_holder), 0 = none */
    uint32_t nwaiters, capwaiters;
    uint32_t attempt;        /* dispatches so far (the current lease's token) */
    uint32_t holder_attempt; /* the attempt holder was given */
    uint32_t releases;       /* dispatches not counted as lost: handed back
                           * by RELEASE, or before a manual retry */
    uint16_t retried;        /* re-runs used so far */
    /* peers.c's slot, read and written by peers.c alone (the store and
     * the engine never touch it): the index of this task in its
     * worker's lease array, for O(1) removal. */
    size_t peer_lease_idx;
} tq_task_ext_t;

/* What tasks submitted alike share: their (queue, function) heap,
 * priority and run timeout. Interned and counted by the store. */
typedef struct tq_tclass {
    tq_fnheap_t *heap;
    int32_t priority;
    uint32_t timeout_ms;
    uint32_t refs; /* store's */
} tq_tclass_t;

/* tq_task_t.flags */
#define TQ_TASK_F_KEYED 0x01u   /* has a retained idempotency key (kept after ACK) */
#define TQ_TASK_F_ACKED 0x02u   /* a client ACKed its outcome */
#define TQ_TASK_F_FETCHED 0x04u /* delivered to a client at least once */
#define TQ_TASK_F_SKEY 0x08u    /* its session key is held (TQ_SUBMIT_SCOPED_KEYS) */
#define TQ_TASK_F_PAYEXT 0x10u  /* the payload is a separate allocation */
#define TQ_TASK_F_HELD 0x20u    /* queued, out of its heap: in a dispatch plan */

/* One task: the part every task has, kept small (the master holds
 * millions of queued tasks). The payload (up to TQ_TASK_INLINE_PAYLOAD
 * bytes) and the session key live in the same allocation, after the
 * fields. Fields are read freely by the master's modules (the rest
 * through the tq_task_* accessors); they are changed only through the
 * functions below: the tq_store_* ones by the engine, the waiter list
 * by peers.c (tq_task_waiter*). The two
 * slots are the exception: each belongs to one module, which alone
 * reads and writes it, and holds that module's bookkeeping, not task
 * state (persist.c's j* fields here, peers.c's x->peer_lease_idx). */
typedef struct tq_task {
    uint64_t id;          /* also its FIFO order within a priority: ids are
                           * handed out counting up, kept on requeue */
    tq_task_ext_t *x;     /* cold part, or NULL */
    tq_tclass_t *cls;     /* heap, priority, timeout: tq_task_fn, tq_task_queue,
                           * tq_task_priority, tq_task_timeout */
    int64_t created_ms;   /* wall clock */
    uint32_t heap_idx;    /* index in heap (or the delayed heap) while queued */
    uint32_t payload_len; /* 0 once finished, but for dead and failed tasks */
    /* persist.c's slot, read and written by persist.c alone: */
    uint32_t jsize : 31; /* bytes of its full journal record while live,
                           * 0 = not live (below 2^31: see persist.c) */
    uint32_t jgen : 1;   /* compaction generation of that record */
    uint16_t retries;    /* re-runs allowed after a failed/timed-out run */
    uint8_t state;       /* tq_task_state_t */
    uint8_t flags;       /* TQ_TASK_F_* */
    uint8_t skey_len;    /* session key length (bytes kept while F_SKEY) */
    uint8_t rsize8;      /* store's: allocation size / 8 */
    uint8_t bytes[];     /* session key part, then the payload part */
} tq_task_t;

/* Payloads up to this size are kept inside the task record (and only
 * freed with it); larger ones are allocated apart and freed when the
 * task finishes. */
#define TQ_TASK_INLINE_PAYLOAD 128

/* An idempotency key entry (opaque; see the tq_key_* accessors). */
typedef struct tq_key tq_key_t;

/* What the store tells its observer (the journal), after the change:
 * ADDED (queued, new), LEASED (attempt raised), REQUEUED (back in its
 * heap: lost, released, retried, or a lease undone), FINISHED (result or
 * error stored), ACKED (a client ACKed the outcome), DELETED (about to be
 * freed: expired, undone, or dropped). Keys: KEY_ADDED for a retained
 * key (not session keys, which travel with their task), KEY_DELETED
 * before any key entry is freed. */
typedef enum {
    TQ_SEV_ADDED,
    TQ_SEV_LEASED,
    TQ_SEV_REQUEUED,
    TQ_SEV_FINISHED,
    TQ_SEV_ACKED,
    TQ_SEV_DELETED,
    TQ_SEV_REVIVED, /* dead -> queued by tq_store_revive */
} tq_store_event_t;
typedef void (*tq_store_task_fn)(void *arg, tq_task_t *t, tq_store_event_t ev);
typedef void (*tq_store_key_fn)(void *arg, tq_key_t *k, int deleted);

typedef struct {
    uint64_t first_id;        /* ids count up from here; non-zero */
    size_t max_tasks;         /* tasks stored in any state */
    int64_t result_ttl_ms;    /* after delivery to a client */
    int64_t unfetched_ttl_ms; /* after finishing, if never delivered */
    int64_t key_retention_ms; /* keep an idempotency key this long */
} tq_store_cfg_t;

/* Per-queue counts of tasks stored now, by state. queued includes the
 * delayed ones (not runnable yet); failed includes the dead ones. */
typedef struct {
    size_t queued, running, done, failed, cancelled;
    size_t delayed, dead;
} tq_queue_counts_t;

/* Cumulative counters since start. */
typedef struct {
    uint64_t submitted, dispatched, done, failed, cancelled, dead, requeued, retried, expired;
    uint64_t revived, purged; /* dead tasks retried / purged by an operator */
} tq_store_totals_t;

/* Caller owns the result (tq_store_destroy). */
tq_store_t *tq_store_new(const tq_store_cfg_t *cfg);
/* Frees every task. Accepts NULL; nulls *self_p. */
void tq_store_destroy(tq_store_t **self_p);

/* Add a queued task from a validated SUBMIT record (the decoder checked
 * the names). The payload is copied. A non-empty spec->key is recorded
 * (key -> the new id, kept key_retention_ms from now_ms); the caller
 * checks tq_store_key_find first, so the key must not be held. Returns
 * the task, or NULL with err filled (tq_err.h): TQ_ERR_FULL "master
 * is full: ..." (max_tasks tasks, or max_tasks keys, held),
 * TQ_ERR_TOO_MANY (name table full) or TQ_ERR_TOO_LARGE (payload or key
 * too large, or could not be allocated); the message is the one the
 * SUBMIT's ERROR carries. */
tq_task_t *tq_store_add(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                        tq_err_t *err);
/* tq_store_add with a session key (TQ_SUBMIT_SCOPED_KEYS): the key maps
 * to the task only while the task is stored and its outcome not ACKed;
 * it has no retention of its own. */
tq_task_t *tq_store_add_session(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                                tq_err_t *err);
/* Undo tq_store_add of a task that is still queued (a SUBMIT batch that
 * failed half-way): it is freed as if it never existed, with its key. */
void tq_store_remove_queued(tq_store_t *self, tq_task_t *t);
/* 1 if n more tasks fit under max_tasks. */
int tq_store_has_room(const tq_store_t *self, size_t n);

/* The task id recorded for idempotency key `key` (1..TQ_MAX_KEY bytes)
 * if it is held and its retention has not passed at now_ms (wall
 * clock), else 0. The task itself may have expired meanwhile. */
uint64_t tq_store_key_find(const tq_store_t *self, tq_bytes_t key, int64_t now_ms);
/* Idempotency keys held now (including ones past retention not swept). */
size_t tq_store_nkeys(const tq_store_t *self);

/* The settings in force (made with, or changed by the setters below). */
const tq_store_cfg_t *tq_store_cfg(const tq_store_t *self);
/* SIGHUP: a new --max-tasks. Tasks and keys already held stay; past it,
 * new ones are refused. */
void tq_store_set_max_tasks(tq_store_t *self, size_t max_tasks);
/* SIGHUP: new result TTLs. Results already kept take the new TTL too:
 * each expiry moves by the difference (so the lists stay sorted), and
 * one now past expires at the next sweep. */
void tq_store_set_ttls(tq_store_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms);

/* The task with this id, or NULL. */
tq_task_t *tq_store_get(const tq_store_t *self, uint64_t id);
size_t tq_store_size(const tq_store_t *self);

/* Interned copy of a name (NUL-terminated), or NULL when the name table
 * is full. It lives while something uses it (a task or a setting of its
 * queue, a heap, a tq_store_name_hold) and at least until tq_store_gc
 * runs: a caller that keeps it past its handler must hold it. */
const char *tq_store_intern(tq_store_t *self, tq_bytes_t name);
/* 1 if name is interned now (nothing created). */
int tq_store_name_known(const tq_store_t *self, tq_bytes_t name);
/* The interned name if it is interned now, else NULL (nothing created). */
const char *tq_store_lookup(const tq_store_t *self, tq_bytes_t name);
/* Names interned now. */
size_t tq_store_nnames(const tq_store_t *self);
/* Count a use of interned name by someone outside the store (a worker
 * declaring the function), and drop it again. */
void tq_store_name_hold(tq_store_t *self, const char *name);
void tq_store_name_release(tq_store_t *self, const char *name);
/* Free up to `steps` queues that no task or setting uses (not paused, no
 * --queue-timeout, no task in any state) and look at up to `steps` name
 * slots, freeing the names nothing uses. Returns the names freed. Queue
 * order (tq_store_queue_at) changes: a freed queue takes the last one's
 * index. */
size_t tq_store_gc(tq_store_t *self, size_t steps);

/* Queues, in creation order (round-robin order for the scheduler). */
size_t tq_store_nqueues(const tq_store_t *self);
tq_queue_t *tq_store_queue_at(const tq_store_t *self, size_t i);
const char *tq_queue_name(const tq_queue_t *q);
const tq_queue_counts_t *tq_queue_counts(const tq_queue_t *q);
/* Runnable queued tasks in this queue (all functions; not the delayed). */
size_t tq_queue_queued(const tq_queue_t *q);
/* q's (queue, function) heaps: how many, and the i-th one's runnable
 * task count and function (interned) in *fn. */
size_t tq_queue_nheaps(const tq_queue_t *q);
size_t tq_queue_heap_at(const tq_queue_t *q, size_t i, const char **fn);
/* Creation time (wall ms) of the oldest task next in line: the earliest
 * among each function's first task (O(functions), for status). When the
 * queue's tasks share a priority this is its oldest queued task; a task
 * behind higher priorities is not seen. -1 when nothing is queued. */
int64_t tq_queue_head_created(const tq_queue_t *q);
/* Up to max queued tasks of q (runnable ones first, then delayed ones)
 * into out, in no particular order; nothing is removed. Costs
 * O(max), plus a look at every delayed task of the store while q has
 * delayed ones. */
size_t tq_store_queue_queued_some(const tq_store_t *self, const tq_queue_t *q, tq_task_t **out,
                                  size_t max);
/* The queue of this name, created if new. NULL when the name table is
 * full. The name must be valid (tq_name_valid). */
tq_queue_t *tq_store_queue(tq_store_t *self, tq_bytes_t name);
/* Paused: tq_queue_best finds nothing in it (tasks are still accepted). */
void tq_queue_set_paused(tq_queue_t *q, int paused);
int tq_queue_paused(const tq_queue_t *q);
/* Run timeout given to tasks submitted to q without one (0 = none). */
void tq_queue_set_default_timeout(tq_queue_t *q, uint32_t timeout_ms);

/* The next task of queue q for a worker serving the interned function
 * names fns[nfns]: the highest (priority, -sequence) top among the
 * queue's heaps whose function is in fns. NULL if none or q is paused.
 * Does not remove. */
tq_task_t *tq_queue_best(const tq_queue_t *q, const char *const *fns, size_t nfns);

/* Queued -> leased to worker: leaves its heap, attempt + 1. holder is
 * the worker's instance id (HELLO "instance"), recorded with the new
 * attempt (tq_task_holder) before the observer hears of the lease, so
 * the journal keeps it: only that worker's RESULT for the attempt is
 * taken, even after the lease was lost. */
void tq_store_lease(tq_store_t *self, tq_task_t *t, void *worker, uint64_t holder);
/* Leased t's current attempt was dispatched at wall_ms (the engine's
 * time; shown by inspection, not journaled). */
void tq_store_set_started(tq_task_t *t, int64_t wall_ms);
/* Dispatch planning: runnable queued t leaves its heap but stays queued
 * (no event), so that the next pick sees the next task. tq_store_lease
 * takes it from there; tq_store_unhold puts it back at its place. Held
 * only within one call (the plan is committed or dropped at once). */
void tq_store_hold(tq_store_t *self, tq_task_t *t);
void tq_store_unhold(tq_store_t *self, tq_task_t *t);
/* Leased -> queued at its old place (same sequence). released: 1 when
 * the worker handed it back (RELEASE), 0 when the worker was lost.
 * not_before_ms (wall clock, 0 = at once): not runnable before then
 * (the backoff of a lost lease). */
void tq_store_requeue(tq_store_t *self, tq_task_t *t, int released, int64_t not_before_ms);
/* Leased -> queued at its old place after a failed or timed-out run,
 * using up one retry (t->retried < t->retries is asserted), runnable
 * from not_before_ms (the backoff; 0 = at once). Counted as "retried",
 * not "requeued". The next dispatch raises the attempt. */
void tq_store_retry(tq_store_t *self, tq_task_t *t, int64_t not_before_ms);
/* Queued t becomes runnable at not_before_ms (0 = now): recovery. */
void tq_store_delay(tq_store_t *self, tq_task_t *t, int64_t not_before_ms);
/* Make at most max delayed tasks whose time came (not_before_ms <=
 * now_ms, wall clock) runnable. Returns how many. */
size_t tq_store_promote(tq_store_t *self, int64_t now_ms, size_t max);
/* Milliseconds from now_ms until the next delayed task is due (0 if
 * overdue), or -1 when none is delayed. */
int64_t tq_store_next_due(const tq_store_t *self, int64_t now_ms);

/* ---- the dead set ---------------------------------------------------------
 * A dead task keeps its payload and stays stored (no TTL) until an
 * operator retries or purges it; dead tasks sit on a list in id order.
 * The failed set: a task that failed after its retries keeps its
 * payload too, until its result TTL passes; tq_store_revive and
 * tq_store_purge take it as they take a dead task. */
/* The first dead task, and the one after dead task t (NULL at the end). */
tq_task_t *tq_store_dead_first(const tq_store_t *self);
tq_task_t *tq_store_dead_next(const tq_task_t *t);
/* The first dead task with an id above id (O(1) when id is dead). */
tq_task_t *tq_store_dead_after(const tq_store_t *self, uint64_t id);
/* Dead (or failed) -> queued as if new: lost leases and used retries start again
 * from 0 (the attempt number keeps rising, for fencing); the error text
 * is dropped. Emits REVIVED. */
void tq_store_revive(tq_store_t *self, tq_task_t *t);
/* Delete dead (or failed) task t (emits DELETED). */
void tq_store_purge(tq_store_t *self, tq_task_t *t);
/* 1 if the task has a retry left (retried < retries). */
int tq_task_can_retry(const tq_task_t *t);
/* Give leased task t a lease deadline (monotonic ms). The deadline is
 * dropped whenever the task leaves the leased state. */
void tq_store_set_deadline(tq_store_t *self, tq_task_t *t, int64_t deadline_ms);
/* The leased task with the earliest deadline if that deadline is <=
 * now_ms, else NULL. O(1); the caller ends the lease (which drops the
 * deadline) before asking again. */
tq_task_t *tq_store_overdue(const tq_store_t *self, int64_t now_ms);
/* Lost leases so far (dispatches that ended without a result, a release
 * or a retried failure). */
uint32_t tq_task_lost(const tq_task_t *t);

/* Queued or leased -> finished state st (DONE, FAILED, CANCELLED, DEAD)
 * with data copied (may be empty). If the copy cannot be allocated the
 * data becomes a short error text. The task's worker link is cleared
 * (the caller removes it from the worker's lease list first). The task
 * starts its unfetched TTL. */
void tq_store_finish(tq_store_t *self, tq_task_t *t, tq_task_state_t st, const void *data,
                     size_t len, int64_t now_ms);
/* A finished task was delivered to a client: its result TTL starts now
 * (once; later deliveries do not extend it). */
void tq_store_fetched(tq_store_t *self, tq_task_t *t, int64_t now_ms);

/* A client ACKed t's outcome (t finished): the outcome reached a client,
 * so the journal may forget it; a session key is dropped. Once only;
 * later calls do nothing. */
void tq_store_ack(tq_store_t *self, tq_task_t *t);

/* ---- observer and recovery (persist.c) ---------------------------------- */

/* Call fn/kfn after every change (NULL to stop). */
void tq_store_observe(tq_store_t *self, tq_store_task_fn fn, tq_store_key_fn kfn, void *arg);

/* A task as the journal holds it. blob is the payload while queued or
 * leased, the result or error text once finished. */
typedef struct {
    uint64_t id, seq; /* seq: read from old journals, not kept (the id
                              * gives the same order) */
    int64_t created_ms;
    int32_t priority;
    uint32_t attempt, releases, timeout_ms;
    uint16_t retries, retried;
    tq_task_state_t state; /* LEASED is restored as QUEUED */
    tq_bytes_t fn, queue;
    tq_bytes_t skey; /* session key, or empty */
    int keyed;       /* has a retained key */
    tq_bytes_t blob;
    tq_bytes_t payload;    /* dead tasks: the payload (blob is the error) */
    int64_t not_before_ms; /* queued: not runnable before (wall clock) */
    int64_t finished_ms;   /* finished tasks */
    int fetched;           /* finished: delivered (and ACKed) */
    int64_t fetched_ms;
} tq_task_image_t;

/* Create the task of img, replacing a task with the same id (the newer
 * record wins). Ids and sequences handed out later are above every
 * restored one. Emits no events. Returns the task, or NULL with err
 * filled: TQ_ERR_MALFORMED (not a valid task), TQ_ERR_FULL (more than
 * max_tasks tasks or keys), TQ_ERR_TOO_MANY (names), TQ_ERR_TOO_LARGE
 * (memory). */
tq_task_t *tq_store_restore(tq_store_t *self, const tq_task_image_t *img, tq_err_t *err);
/* Forget t in any state but leased (recovery: a GONE record). No event. */
void tq_store_drop(tq_store_t *self, tq_task_t *t);
/* Restore a retained key -> id until expires_ms (a past expiry is
 * ignored). Returns 0, or -1 if the key is not valid. */
int tq_store_key_restore(tq_store_t *self, tq_bytes_t key, uint64_t id, int64_t expires_ms);
/* Set the fetched mark of finished t as of fetched_ms (no event). */
void tq_store_restore_fetched(tq_store_t *self, tq_task_t *t, int64_t fetched_ms);

/* Every task, in id order (oldest first): the first, the one after t,
 * and the first with an id >= id (NULL at the end). */
tq_task_t *tq_store_first(const tq_store_t *self);
tq_task_t *tq_store_next(const tq_store_t *self, const tq_task_t *t);
tq_task_t *tq_store_from(const tq_store_t *self, uint64_t id);
/* The retained idempotency key of keyed task t (tq_task_keyed), looked
 * for among at most max_steps key entries (the key list is in creation
 * order, so a walk from the nearer end finds it quickly): NULL when not
 * found within them. */
const tq_key_t *tq_store_key_of(const tq_store_t *self, const tq_task_t *t, size_t max_steps);
/* Retained keys, oldest first. */
tq_key_t *tq_store_key_first(const tq_store_t *self);
tq_key_t *tq_key_next(const tq_key_t *k);
tq_bytes_t tq_key_bytes(const tq_key_t *k);
uint64_t tq_key_id(const tq_key_t *k);
int64_t tq_key_expires(const tq_key_t *k);

/* Delete at most max_steps finished tasks whose TTL passed at now_ms and
 * idempotency keys whose retention passed (one step each). Returns the
 * steps used (max_steps means: more may be overdue). Tasks with waiters
 * are never deleted (finished tasks have none: waiters are served when a
 * task finishes). */
size_t tq_store_sweep(tq_store_t *self, int64_t now_ms, size_t max_steps);

/* Milliseconds until the earliest expiry from now_ms (0 if overdue), or
 * -1 when nothing is finished. */
int64_t tq_store_next_expiry(const tq_store_t *self, int64_t now_ms);

const tq_store_totals_t *tq_store_totals(const tq_store_t *self);
/* Zero the cumulative counters (after recovery: replay is not work). */
void tq_store_reset_totals(tq_store_t *self);
/* Tasks stored now in each state, over all queues. */
void tq_store_counts(const tq_store_t *self, tq_queue_counts_t *out);

/* 1 if st is a finished state (done, failed, cancelled, dead). */
int tq_task_finished(const tq_task_t *t);
/* Wire status (tq_task_status_t) of a finished task. */
uint8_t tq_task_wire_status(const tq_task_t *t);
/* "queued", "leased", ... for logs. */
const char *tq_task_state_name(tq_task_state_t st);

/* ---- task accessors ---------------------------------------------------- */

const char *tq_task_fn(const tq_task_t *t); /* interned */
static inline int32_t tq_task_priority(const tq_task_t *t) { return t->cls->priority; }
/* Run timeout in ms (0 = none). */
static inline uint32_t tq_task_timeout(const tq_task_t *t) { return t->cls->timeout_ms; }
tq_queue_t *tq_task_queue(const tq_task_t *t);
/* FIFO order within a priority (the id: see tq_task_t.id). */
static inline uint64_t tq_task_seq(const tq_task_t *t) { return t->id; }
static inline uint32_t tq_task_attempt(const tq_task_t *t) { return t->x ? t->x->attempt : 0; }
static inline uint32_t tq_task_releases(const tq_task_t *t) { return t->x ? t->x->releases : 0; }
static inline uint16_t tq_task_retried(const tq_task_t *t) { return t->x ? t->x->retried : 0; }
static inline void *tq_task_worker(const tq_task_t *t) { return t->x ? t->x->worker : NULL; }
static inline int64_t tq_task_not_before(const tq_task_t *t)
{
    return t->x ? t->x->not_before_ms : 0;
}
static inline int64_t tq_task_finished_ms(const tq_task_t *t)
{
    return t->x ? t->x->finished_ms : 0;
}
static inline int64_t tq_task_expires_ms(const tq_task_t *t) { return t->x ? t->x->expires_ms : 0; }
/* Wall ms of the current attempt's dispatch, 0 when not known. */
static inline int64_t tq_task_started_ms(const tq_task_t *t)
{
    return t->x && t->x->started_after_ms ? t->created_ms + t->x->started_after_ms - 1 : 0;
}
static inline size_t tq_task_nwaiters(const tq_task_t *t) { return t->x ? t->x->nwaiters : 0; }
static inline int tq_task_keyed(const tq_task_t *t) { return (t->flags & TQ_TASK_F_KEYED) != 0; }
static inline int tq_task_acked(const tq_task_t *t) { return (t->flags & TQ_TASK_F_ACKED) != 0; }
static inline int tq_task_fetched(const tq_task_t *t)
{
    return (t->flags & TQ_TASK_F_FETCHED) != 0;
}
/* The result or error text of a finished task (empty if none). */
tq_bytes_t tq_task_data(const tq_task_t *t);
/* The payload (empty once finished, but for dead and failed tasks). */
tq_bytes_t tq_task_payload(const tq_task_t *t);
/* Lend the part just added to out (a DISPATCH's payload, a RESULTS'
 * data: t's bytes) to the sender when it is large (TQ_LEND_MIN) and
 * held apart: ZeroMQ then sends it without a copy and keeps the block
 * alive while it does, even if t is freed meanwhile (a reference count
 * in front of the block). Otherwise nothing: the part is copied. */
void tq_task_lend_payload(const tq_task_t *t, tq_out_t *out);
void tq_task_lend_data(const tq_task_t *t, tq_out_t *out);
/* The instance id of the worker that holds, or last held, t's current
 * attempt; 0 when not known (never dispatched, a dispatch undone, or a
 * lease journaled without one). */
static inline uint64_t tq_task_holder(const tq_task_t *t)
{
    return t->x && t->x->holder_attempt == t->x->attempt ? t->x->holder : 0;
}
/* Recovery: holder held attempt `attempt` of t (a LEASE record). */
void tq_task_set_holder(tq_task_t *t, uint64_t holder, uint32_t attempt);
/* Set the lease counters (recovery replays them). */
void tq_task_set_counts(tq_task_t *t, uint32_t attempt, uint32_t releases, uint16_t retried);
/* Length of t's session key while held, else 0. */
size_t tq_task_skey_len(const tq_task_t *t);
/* Copy t's session key (while held) into out; returns its length, 0 if
 * none. */
size_t tq_store_task_skey(const tq_store_t *self, const tq_task_t *t, uint8_t out[TQ_MAX_KEY]);

/* Waiting clients (opaque peers; peers.c keeps the list). add returns
 * 0, or -1 if p already waits. remove returns 0, or -1 if p was not
 * waiting. clear forgets them all (once they have been served). */
int tq_task_waiter_add(tq_task_t *t, void *p);
int tq_task_waiter_remove(tq_task_t *t, void *p);
void tq_task_waiters_clear(tq_task_t *t);

#endif
