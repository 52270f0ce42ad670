/* engine_test.c - every transition of a task, driven in-process with no
 * sockets of ours: submit, lease, result, run timeout, lease timeout,
 * lost worker, release, cancel, retry with backoff, dead, revive, purge,
 * pause/resume, restart by replay (the journal), and determinism (the
 * same commands twice give the same state). */
#include "engine.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "persist.h"
#include "tq_log.h"
#include "tq_test.h"
#include "tq_util.h"

/* Opaque workers: the engine only compares the pointers. */
typedef struct {
    const char *name;
    uint64_t instance;
} worker_t;

static worker_t wa = {"wa", 0xA}, wb = {"wb", 0xB};

static const char *wname(const void *w) { return ((const worker_t *)w)->name; }

/* What a subscriber heard. */
typedef struct {
    size_t ev[TQ_EV_LATE + 1];
    size_t kills, lease_ends;
    uint64_t last_finished, last_kill;
} heard_t;

static void on_event(void *arg, const tq_engine_ev_t *ev)
{
    heard_t *h = arg;
    h->ev[ev->kind]++;
    if (ev->kind == TQ_EV_LEASE_END) {
        h->lease_ends++;
        if (ev->kill) {
            h->kills++;
            h->last_kill = ev->task->id;
        }
    }
    if (ev->kind == TQ_EV_FINISHED)
        h->last_finished = ev->task->id;
}

static tq_engine_cfg_t cfg_with_seed(uint64_t seed)
{
    tq_engine_cfg_t c = {
        .store = {.first_id = 1,
                  .max_tasks = 1000,
                  .result_ttl_ms = 60000,
                  .unfetched_ttl_ms = 120000,
                  .key_retention_ms = 3600000},
        .max_attempts = 2,
        .lease_timeout_ms = 5000,
        .heartbeat_ms = 1000,
        .backoff_base_ms = 100,
        .backoff_cap_ms = 1000,
        .seed = seed,
        .worker_name = wname,
    };
    return c;
}

static tq_engine_t *new_engine(heard_t *h)
{
    tq_engine_cfg_t c = cfg_with_seed(42);
    tq_engine_t *e = tq_engine_new(&c);
    if (h) {
        memset(h, 0, sizeof *h);
        tq_engine_subscribe(e, on_event, h);
    }
    return e;
}

static tq_task_spec_t spec(const char *fn, const char *queue, const char *key, uint32_t timeout_ms,
                           uint16_t retries)
{
    tq_task_spec_t s;
    memset(&s, 0, sizeof s);
    s.fn = tq_bytes_str(fn);
    s.queue = tq_bytes_str(queue);
    s.key = tq_bytes_str(key);
    s.timeout_ms = timeout_ms;
    s.retries = retries;
    s.payload = tq_bytes_str("payload");
    return s;
}

/* Submit one task; returns its id. */
static uint64_t submit1(tq_engine_t *e, tq_task_spec_t s, tq_now_t now)
{
    tq_store_t *st = tq_engine_store(e);
    CHECK(tq_store_intern(st, s.fn) != NULL);
    CHECK(tq_store_intern(st, s.queue.len ? s.queue : tq_bytes_str("default")) != NULL);
    uint64_t id = 0;
    uint8_t added = 0;
    tq_err_t err;
    CHECK_EQ_INT(tq_engine_submit(e, &s, 1, 0, now, NULL, NULL, &id, &added, &err), 0);
    return id;
}

static tq_task_t *get(tq_engine_t *e, uint64_t id) { return tq_store_get(tq_engine_store(e), id); }

/* Lease task id to w (it must be runnable). */
static void lease(tq_engine_t *e, uint64_t id, worker_t *w, tq_now_t now)
{
    tq_task_t *t = get(e, id);
    CHECK(t && t->state == TQ_TASK_QUEUED && !tq_task_not_before(t));
    if (t && t->state == TQ_TASK_QUEUED && !tq_task_not_before(t))
        tq_engine_lease(e, t, w, w->instance, now);
}

static tq_engine_result_t result(tq_engine_t *e, worker_t *w, uint64_t id, uint8_t status,
                                 const char *data, tq_now_t now)
{
    tq_task_t *t = get(e, id);
    tq_result_item_t r = {id, t ? tq_task_attempt(t) : 1, status, tq_bytes_str(data)};
    return tq_engine_result(e, w->instance, &r, now);
}

/* ---- the transitions --------------------------------------------------------- */

static void test_submit_lease_result(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    tq_task_spec_t s[3] = {spec("f", "q", "k1", 0, 0), spec("f", "q", "", 0, 0),
                           spec("f", "q", "k1", 0, 0)};
    tq_store_intern(tq_engine_store(e), tq_bytes_str("f"));
    tq_store_intern(tq_engine_store(e), tq_bytes_str("q"));
    uint64_t ids[3];
    uint8_t added[3];
    tq_err_t err;
    CHECK_EQ_INT(tq_engine_submit(e, s, 3, 0, now, NULL, NULL, ids, added, &err), 0);
    CHECK_EQ_INT(ids[0], ids[2]); /* one key, one task */
    CHECK(ids[0] != ids[1]);
    CHECK_EQ_INT(added[0] + added[1] + added[2], 2);
    CHECK_EQ_INT(h.ev[TQ_EV_WAKE], 1);
    CHECK_EQ_INT(tq_store_size(tq_engine_store(e)), 2);
    /* the key holds: a second SUBMIT stores nothing */
    CHECK_EQ_INT(tq_engine_submit(e, s, 1, 0, now, NULL, NULL, ids + 2, added, &err), 0);
    CHECK_EQ_INT(ids[2], ids[0]);
    CHECK_EQ_INT(added[0], 0);

    lease(e, ids[0], &wa, now);
    tq_task_t *t = get(e, ids[0]);
    CHECK_EQ_INT(t->state, TQ_TASK_LEASED);
    CHECK_EQ_INT(tq_task_attempt(t), 1);
    CHECK_EQ_INT(tq_task_holder(t), wa.instance);
    CHECK(tq_task_worker(t) == &wa);
    /* another worker's result for it is refused */
    CHECK_EQ_INT(result(e, &wb, ids[0], TQ_RUN_OK, "x", now), TQ_RES_FOREIGN);
    CHECK_EQ_INT(t->state, TQ_TASK_LEASED);
    CHECK_EQ_INT(result(e, &wa, ids[0], TQ_RUN_OK, "out", now), TQ_RES_TAKEN);
    CHECK_EQ_INT(t->state, TQ_TASK_DONE);
    CHECK_EQ_INT(h.last_finished, ids[0]);
    CHECK_EQ_INT(h.lease_ends, 1);
    CHECK_EQ_INT(h.kills, 0);
    CHECK(tq_task_data(t).len == 3 && memcmp(tq_task_data(t).data, "out", 3) == 0);
    /* a second copy is late */
    CHECK_EQ_INT(result(e, &wa, ids[0], TQ_RUN_OK, "out", now), TQ_RES_LATE);
    CHECK_EQ_INT(h.ev[TQ_EV_LATE], 2);
    /* delivered, then ACKed */
    tq_engine_fetched(e, t, now);
    CHECK(tq_task_fetched(t));
    CHECK_EQ_INT(tq_task_expires_ms(t), now.wall_ms + 60000);
    tq_engine_ack(e, ids[0]);
    CHECK(tq_task_acked(t));
    tq_engine_destroy(&e);
}

static void test_release(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t id = submit1(e, spec("f", "q", "", 0, 0), now);
    lease(e, id, &wa, now);
    CHECK_EQ_INT(tq_engine_release(e, &wb, id, 1), 0); /* not wb's lease */
    CHECK_EQ_INT(tq_engine_release(e, &wa, id, 2), 0); /* not the attempt */
    CHECK_EQ_INT(tq_engine_release(e, &wa, id, 1), 1);
    tq_task_t *t = get(e, id);
    CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_task_releases(t), 1);
    CHECK_EQ_INT(tq_task_lost(t), 0);
    CHECK_EQ_INT(tq_task_not_before(t), 0); /* at once */
    CHECK_EQ_INT(h.lease_ends, 1);
    tq_engine_destroy(&e);
}

/* A failed run is retried after a backoff (equal jitter: [d/2, d] for
 * d = 100, 200, ... ms), then fails for good. */
static void test_retry_with_backoff(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t id = submit1(e, spec("f", "q", "", 0, 2), now);
    tq_task_t *t = get(e, id);
    for (int n = 1; n <= 2; n++) {
        lease(e, id, &wa, now);
        CHECK_EQ_INT(result(e, &wa, id, TQ_RUN_FAILED, "boom", now), TQ_RES_RETRIED);
        CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
        CHECK_EQ_INT(tq_task_retried(t), n);
        int64_t d = 100 << (n - 1), nb = tq_task_not_before(t) - now.wall_ms;
        CHECK(nb >= d / 2 && nb <= d);
        /* not runnable before its time */
        CHECK_EQ_INT(tq_engine_promote(e, (tq_now_t){now.wall_ms + nb - 1, 0}, 100), 0);
        now.wall_ms += nb;
        CHECK_EQ_INT(tq_engine_promote(e, now, 100), 1);
        CHECK_EQ_INT(tq_task_not_before(t), 0);
    }
    lease(e, id, &wa, now);
    CHECK_EQ_INT(result(e, &wa, id, TQ_RUN_FAILED, "boom", now), TQ_RES_TAKEN);
    CHECK_EQ_INT(t->state, TQ_TASK_FAILED);
    CHECK_EQ_INT(tq_task_attempt(t), 3);
    tq_engine_destroy(&e);
}

/* A run timeout: the lease expires at timeout + 2 heartbeats with a
 * KILL; retried while it has retries, then failed as timed out. */
static void test_run_timeout(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t id = submit1(e, spec("f", "q", "", 100, 1), now);
    tq_task_t *t = get(e, id);
    lease(e, id, &wa, now);
    CHECK_EQ_INT(tq_engine_expire_one(e, (tq_now_t){now.wall_ms, 2099}), 0);
    now.mono_ms = 2100;
    CHECK_EQ_INT(tq_engine_expire_one(e, now), id);
    CHECK_EQ_INT(h.kills, 1);
    CHECK_EQ_INT(h.last_kill, id);
    CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_task_retried(t), 1);
    now.wall_ms += 100;
    tq_engine_promote(e, now, 100);
    lease(e, id, &wb, now);
    /* the first attempt's result is late now */
    tq_result_item_t r = {id, 1, TQ_RUN_OK, tq_bytes_str("late")};
    CHECK_EQ_INT(tq_engine_result(e, wa.instance, &r, now), TQ_RES_LATE);
    now.mono_ms += 2100;
    CHECK_EQ_INT(tq_engine_expire_one(e, now), id);
    CHECK_EQ_INT(tq_engine_expire_one(e, now), 0);
    CHECK_EQ_INT(t->state, TQ_TASK_FAILED);
    CHECK_EQ_INT(h.kills, 2);
    tq_bytes_t d = tq_task_data(t);
    CHECK(d.len > 0 && strstr((const char *)d.data, "timed out: no result from worker wb") != NULL);
    tq_engine_destroy(&e);
}

/* Lease timeouts and lost workers are lost leases: requeued after a
 * backoff, dead after --max-attempts (2 here). An operator revives the
 * dead task (retry) or purges it. */
static void test_lost_dead_revive_purge(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t id = submit1(e, spec("f", "q", "", 0, 5), now);
    tq_task_t *t = get(e, id);
    lease(e, id, &wa, now);
    now.mono_ms = 5000; /* --lease-timeout */
    CHECK_EQ_INT(tq_engine_expire_one(e, now), id);
    CHECK_EQ_INT(h.kills, 1);
    CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_task_lost(t), 1);
    CHECK(tq_task_not_before(t) >= now.wall_ms + 50); /* backoff of the 1st lost lease */
    now.wall_ms += 1000;
    tq_engine_promote(e, now, 100);
    lease(e, id, &wa, now);
    /* a result from the lost lease's holder is taken (not leased again):
     * here the worker is lost instead */
    tq_engine_lost(e, t, "worker lost", now);
    CHECK_EQ_INT(h.kills, 1); /* no KILL for a lost worker */
    CHECK_EQ_INT(t->state, TQ_TASK_DEAD);
    CHECK_EQ_INT(h.last_finished, id);
    tq_bytes_t d = tq_task_data(t);
    CHECK(d.len && memcmp(d.data, "gave up after 2 attempts: worker lost", d.len) == 0);
    CHECK(tq_task_payload(t).len == 7); /* a dead task keeps its payload */
    CHECK(tq_store_dead_first(tq_engine_store(e)) == t);

    CHECK_EQ_INT(tq_engine_revive(e, id), 1);
    CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_task_lost(t), 0);
    CHECK_EQ_INT(tq_engine_revive(e, id), 0); /* not dead any more */
    /* dies again: two more lost leases */
    for (int i = 0; i < 2; i++) {
        now.wall_ms += 1000;
        tq_engine_promote(e, now, 100);
        lease(e, id, &wb, now);
        tq_engine_lost(e, t, "worker lost", now);
    }
    CHECK_EQ_INT(t->state, TQ_TASK_DEAD);
    CHECK_EQ_INT(tq_engine_purge(e, id), 1);
    CHECK(get(e, id) == NULL);
    CHECK_EQ_INT(tq_engine_purge(e, id), 0);
    /* revive_all / purge_all by queue */
    uint64_t a = submit1(e, spec("f", "q", "", 0, 0), now);
    uint64_t b = submit1(e, spec("f", "other", "", 0, 0), now);
    for (int i = 0; i < 2; i++)
        for (uint64_t x = a; x <= b; x++) {
            now.wall_ms += 1000;
            tq_engine_promote(e, now, 100);
            lease(e, x, &wa, now);
            tq_engine_lost(e, get(e, x), "worker lost", now);
        }
    CHECK_EQ_INT(get(e, a)->state, TQ_TASK_DEAD);
    CHECK_EQ_INT(get(e, b)->state, TQ_TASK_DEAD);
    tq_queue_t *q = tq_task_queue(get(e, a));
    CHECK_EQ_INT(tq_engine_revive_all(e, q, 0), 1);
    CHECK_EQ_INT(get(e, a)->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_engine_revive_all(e, NULL, 1), 1);
    CHECK(get(e, b) == NULL);
    tq_engine_destroy(&e);
}

/* A result after the lease was lost (not re-dispatched) is taken; a
 * failure then is left to the re-run. */
static void test_result_after_lost_lease(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t ok = submit1(e, spec("f", "q", "", 0, 1), now);
    uint64_t bad = submit1(e, spec("f", "q", "", 0, 1), now);
    lease(e, ok, &wa, now);
    lease(e, bad, &wa, now);
    tq_engine_lost(e, get(e, ok), "worker lost", now);
    tq_engine_lost(e, get(e, bad), "worker lost", now);
    tq_result_item_t r = {ok, 1, TQ_RUN_OK, tq_bytes_str("fine")};
    CHECK_EQ_INT(tq_engine_result(e, wa.instance, &r, now), TQ_RES_TAKEN);
    CHECK_EQ_INT(get(e, ok)->state, TQ_TASK_DONE);
    r = (tq_result_item_t){bad, 1, TQ_RUN_FAILED, tq_bytes_str("no")};
    CHECK_EQ_INT(tq_engine_result(e, wa.instance, &r, now), TQ_RES_RERUN);
    CHECK_EQ_INT(get(e, bad)->state, TQ_TASK_QUEUED);
    tq_engine_destroy(&e);
}

static void test_cancel(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t q = submit1(e, spec("f", "q", "", 0, 0), now);
    uint64_t l = submit1(e, spec("f", "q", "", 0, 0), now);
    lease(e, l, &wa, now);
    CHECK_EQ_INT(tq_engine_cancel(e, q, now), TQ_CANCEL_OK);
    CHECK_EQ_INT(get(e, q)->state, TQ_TASK_CANCELLED);
    CHECK_EQ_INT(h.kills, 0);
    CHECK_EQ_INT(tq_engine_cancel(e, l, now), TQ_CANCEL_OK);
    CHECK_EQ_INT(get(e, l)->state, TQ_TASK_CANCELLED);
    CHECK_EQ_INT(h.kills, 1); /* the running attempt is killed */
    CHECK_EQ_INT(h.last_kill, l);
    CHECK_EQ_INT(tq_engine_cancel(e, l, now), TQ_CANCEL_FINISHED);
    CHECK_EQ_INT(tq_engine_cancel(e, 999999, now), TQ_CANCEL_UNKNOWN);
    CHECK_EQ_INT(h.ev[TQ_EV_FINISHED], 2);
    /* the killed run's result comes late */
    tq_result_item_t r = {l, 1, TQ_RUN_OK, tq_bytes_str("x")};
    CHECK_EQ_INT(tq_engine_result(e, wa.instance, &r, now), TQ_RES_LATE);
    /* expiry: the cancelled result goes after its TTL */
    now.wall_ms += 120000;
    CHECK(tq_engine_sweep(e, now, 100) >= 2);
    CHECK(get(e, q) == NULL && get(e, l) == NULL);
    tq_engine_destroy(&e);
}

static void test_pause(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t id = submit1(e, spec("f", "q", "", 0, 0), now);
    tq_store_t *s = tq_engine_store(e);
    tq_queue_t *q = tq_task_queue(get(e, id));
    const char *fns[1] = {tq_task_fn(get(e, id))};
    size_t wakes = h.ev[TQ_EV_WAKE];
    CHECK_EQ_INT(tq_engine_pause(e, q, 1), 1);
    CHECK_EQ_INT(tq_engine_pause(e, q, 1), 0);
    CHECK_EQ_INT(h.ev[TQ_EV_PAUSE], 1);
    CHECK(tq_queue_best(q, fns, 1) == NULL); /* nothing is handed out */
    CHECK_EQ_INT(tq_engine_pause(e, q, 0), 1);
    CHECK_EQ_INT(h.ev[TQ_EV_PAUSE], 2);
    CHECK_EQ_INT(h.ev[TQ_EV_WAKE], wakes + 1);
    CHECK(tq_queue_best(q, fns, 1) == get(e, id));
    (void)s;
    tq_engine_destroy(&e);
}

/* The failed set: a task that failed after its retries keeps its
 * payload; revive runs it again as new, purge deletes it; the time of
 * each attempt's dispatch is kept. queue_empty cancels a queue's
 * runnable and delayed tasks in bounded steps (not its running ones);
 * queue_delete refuses a queue with tasks queued or running. */
static void test_failed_set_and_queue_empty(void)
{
    heard_t h;
    tq_engine_t *e = new_engine(&h);
    tq_now_t now = {1000000, 0};
    uint64_t f1 = submit1(e, spec("f", "q", "", 0, 0), now);
    uint64_t f2 = submit1(e, spec("f", "q", "", 0, 0), now);
    now.wall_ms += 250;
    lease(e, f1, &wa, now);
    lease(e, f2, &wa, now);
    CHECK_EQ_INT(tq_task_started_ms(get(e, f1)), 1000250);
    CHECK_EQ_INT(result(e, &wa, f1, TQ_RUN_FAILED, "boom", now), TQ_RES_TAKEN);
    CHECK_EQ_INT(result(e, &wa, f2, TQ_RUN_FAILED, "boom", now), TQ_RES_TAKEN);
    tq_task_t *t = get(e, f1);
    CHECK_EQ_INT(t->state, TQ_TASK_FAILED);
    CHECK(tq_task_payload(t).len == 7 && memcmp(tq_task_payload(t).data, "payload", 7) == 0);
    CHECK_EQ_INT(tq_task_started_ms(t), 1000250); /* kept once finished */
    tq_engine_fetched(e, t, now);
    tq_engine_ack(e, f1);
    size_t wakes = h.ev[TQ_EV_WAKE];
    CHECK_EQ_INT(tq_engine_revive(e, f1), 1);
    CHECK_EQ_INT(h.ev[TQ_EV_WAKE], wakes + 1);
    CHECK_EQ_INT(t->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(tq_task_data(t).len, 0);
    CHECK_EQ_INT(tq_task_payload(t).len, 7);
    CHECK_EQ_INT(tq_engine_revive(e, f1), 0); /* queued: neither failed nor dead */
    CHECK_EQ_INT(tq_engine_purge(e, f2), 1);
    CHECK(get(e, f2) == NULL);
    CHECK_EQ_INT(tq_engine_purge(e, f2), 0);
    /* a done task is in neither set */
    uint64_t d = submit1(e, spec("f", "other", "", 0, 0), now);
    lease(e, d, &wa, now);
    result(e, &wa, d, TQ_RUN_OK, "ok", now);
    CHECK_EQ_INT(tq_engine_revive(e, d), 0);
    CHECK_EQ_INT(tq_engine_purge(e, d), 0);

    /* queue q: f1 queued again, 5 more runnable, 2 delayed, 1 running */
    tq_queue_t *q = tq_task_queue(t);
    uint64_t ids[8];
    for (int i = 0; i < 8; i++)
        ids[i] = submit1(e, spec(i % 2 ? "f" : "g", "q", "", 0, 0), now);
    tq_task_t *dl = get(e, ids[6]), *dl2 = get(e, ids[7]);
    tq_store_delay(tq_engine_store(e), dl, now.wall_ms + 60000);
    tq_store_delay(tq_engine_store(e), dl2, now.wall_ms + 60000);
    lease(e, ids[0], &wb, now);
    CHECK_EQ_INT(tq_engine_queue_delete(e, q), -1);
    int more = 0;
    size_t fin = h.ev[TQ_EV_FINISHED];
    CHECK_EQ_INT(tq_engine_queue_empty(e, q, 4, now, &more), 4);
    CHECK_EQ_INT(more, 1);
    CHECK_EQ_INT(tq_engine_queue_empty(e, q, 100, now, &more), 4);
    CHECK_EQ_INT(more, 0);
    CHECK_EQ_INT(h.ev[TQ_EV_FINISHED], fin + 8);
    CHECK_EQ_INT(dl->state, TQ_TASK_CANCELLED);
    CHECK_EQ_INT(dl2->state, TQ_TASK_CANCELLED);
    CHECK_EQ_INT(t->state, TQ_TASK_CANCELLED);
    CHECK_EQ_INT(get(e, ids[0])->state, TQ_TASK_LEASED); /* running: untouched */
    CHECK_EQ_INT(tq_queue_counts(q)->queued, 0);
    CHECK_EQ_INT(tq_engine_queue_empty(e, q, 100, now, &more), 0);
    CHECK_EQ_INT(tq_engine_queue_delete(e, q), -1); /* one still running */
    result(e, &wb, ids[0], TQ_RUN_OK, "ok", now);
    CHECK_EQ_INT(tq_engine_pause(e, q, 1), 1);
    size_t pauses = h.ev[TQ_EV_PAUSE];
    CHECK_EQ_INT(tq_engine_queue_delete(e, q), 0);
    CHECK_EQ_INT(tq_queue_paused(q), 0);
    CHECK_EQ_INT(h.ev[TQ_EV_PAUSE], pauses + 1); /* journaled */
    tq_engine_destroy(&e);
}

/* ---- a script of commands: restart by replay, determinism ------------------- */

/* Every kind of command, with backoffs (the jitter) in it. Ends with no
 * lease held (a restored lease is queued again) and nothing ACKed but a
 * failed task (the failed set, which the journal keeps). */
static tq_now_t script(tq_engine_t *e, int pause)
{
    tq_now_t now = {5000000, 100};
    uint64_t id[8];
    for (int i = 0; i < 8; i++)
        id[i] = submit1(e,
                        spec(i % 2 ? "g" : "f", i < 4 ? "qa" : "qb", i == 3 ? "key3" : "",
                             i == 5 ? 50 : 0, (uint16_t)(i % 3)),
                        now);
    for (int i = 0; i < 8; i++)
        lease(e, id[i], i % 2 ? &wb : &wa, now);
    result(e, &wa, id[0], TQ_RUN_OK, "r0", now);
    result(e, &wb, id[1], TQ_RUN_FAILED, "e1", now); /* retried (1 retry) */
    result(e, &wa, id[2], TQ_RUN_FAILED, "e2", now); /* retried */
    tq_engine_release(e, &wb, id[3], 1);
    tq_engine_lost(e, get(e, id[4]), "worker lost", now);
    now.mono_ms += 3000;
    while (tq_engine_expire_one(e, now)) /* id[5]'s run timeout */
        ;
    tq_engine_cancel(e, id[6], now);
    tq_engine_lost(e, get(e, id[7]), "worker lost", now);
    now.wall_ms += 10000;
    tq_engine_promote(e, now, 100);
    lease(e, id[7], &wa, now);
    tq_engine_lost(e, get(e, id[7]), "worker lost", now); /* dead */
    tq_engine_revive(e, id[7]);
    lease(e, id[7], &wb, now);
    result(e, &wb, id[7], TQ_RUN_OK, "r7", now);
    lease(e, id[2], &wb, now);
    result(e, &wb, id[2], TQ_RUN_FAILED, "e2", now); /* its backoff is pending */
    /* the failed set: failed after its retries, delivered and ACKed (the
     * journal keeps it, with its payload, until its TTL) */
    uint64_t fs = submit1(e, spec("f", "qc", "", 0, 0), now);
    uint64_t fs2 = submit1(e, spec("f", "qc", "", 0, 0), now);
    lease(e, fs, &wa, now);
    result(e, &wa, fs, TQ_RUN_FAILED, "failed for good", now);
    tq_engine_fetched(e, get(e, fs), now);
    tq_engine_ack(e, fs);
    /* queue empty: qd's tasks cancelled */
    uint64_t qd = submit1(e, spec("g", "qd", "", 0, 0), now);
    (void)qd;
    int more;
    tq_engine_queue_empty(e, tq_task_queue(get(e, qd)), 10, now, &more);
    (void)fs2;
    if (pause) {
        tq_store_t *s = tq_engine_store(e);
        tq_engine_pause(e, tq_store_queue(s, tq_bytes_str("qb")), 1);
        tq_engine_pause(e, tq_store_queue(s, tq_bytes_str("paused-empty")), 1);
        tq_engine_pause(e, tq_store_queue(s, tq_bytes_str("qa")), 1);
        tq_engine_pause(e, tq_store_queue(s, tq_bytes_str("qa")), 0);
    }
    return now;
}

static char *dump(const tq_engine_t *e)
{
    tq_buf_t b;
    tq_buf_init(&b);
    tq_engine_dump(e, &b);
    tq_buf_put(&b, "", 1);
    return (char *)b.data;
}

/* Every event as a line of text (kind, store event, task id, attempt,
 * kill, paused mark): what a subscriber heard, in order. */
static void log_event(void *arg, const tq_engine_ev_t *ev)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%d %d %llu %u %d %d\n", (int)ev->kind, (int)ev->store_ev,
                     ev->task ? (unsigned long long)ev->task->id : 0ull, (unsigned)ev->attempt,
                     ev->kill, ev->paused);
    tq_buf_put(arg, line, (size_t)n);
}

static void test_determinism(void)
{
    tq_engine_t *a = new_engine(NULL), *b = new_engine(NULL);
    tq_buf_t ea, eb;
    tq_buf_init(&ea);
    tq_buf_init(&eb);
    tq_engine_subscribe(a, log_event, &ea);
    tq_engine_subscribe(b, log_event, &eb);
    script(a, 1);
    script(b, 1);
    char *da = dump(a), *db = dump(b);
    CHECK_EQ_STR(da, db);
    /* ... and told the same events in the same order */
    CHECK(ea.len > 100 && ea.len == eb.len && memcmp(ea.data, eb.data, ea.len) == 0);
    tq_buf_free(&ea);
    tq_buf_free(&eb);
    CHECK(strstr(da, "not_before=0 ") != NULL);
    /* another seed: another jitter (the backoffs are in the dump) */
    tq_engine_cfg_t c = cfg_with_seed(43);
    tq_engine_t *o = tq_engine_new(&c);
    script(o, 1);
    char *dother = dump(o);
    CHECK(strcmp(da, dother) != 0);
    free(da);
    free(db);
    free(dother);
    tq_engine_destroy(&a);
    tq_engine_destroy(&b);
    tq_engine_destroy(&o);
}

static void *zctx;
static char base[64];

static tq_persist_t *open_journal(const char *dir, tq_engine_t *e)
{
    tq_journal_cfg_t cfg = {.data_dir = dir,
                            .mode = TQ_FSYNC_INTERVAL,
                            .interval_ms = 50,
                            .zmq_ctx = zctx};
    tq_persist_report_t rep;
    tq_err_t err;
    tq_persist_t *p = tq_persist_open(&cfg, e, NULL, &rep, &err);
    if (!p)
        fprintf(stderr, "persist_open: %s\n", err.msg);
    return p;
}

/* The journal replayed into a new engine gives the same state. */
static void test_restart_by_replay(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/replay", base);
    mkdir(dir, 0700);
    tq_engine_t *a = new_engine(NULL);
    tq_persist_t *p = open_journal(dir, a);
    CHECK(p != NULL);
    if (!p)
        return;
    tq_now_t end = script(a, 1); /* with paused queues */
    tq_persist_flush(p);
    tq_persist_destroy(&p);
    tq_engine_t *b = new_engine(NULL);
    p = open_journal(dir, b);
    CHECK(p != NULL);
    /* promotion writes no record: backoffs that ended come back and end
     * at the next promote */
    tq_engine_promote(b, end, 100);
    char *da = dump(a), *db = dump(b);
    CHECK_EQ_STR(da, db);
    free(da);
    free(db);
    tq_persist_destroy(&p);
    tq_engine_destroy(&a);
    tq_engine_destroy(&b);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    tq_log_init("engine_test");
    tq_log_set_level(TQ_LOG_ERROR);
    RUN(test_submit_lease_result);
    RUN(test_release);
    RUN(test_retry_with_backoff);
    RUN(test_run_timeout);
    RUN(test_lost_dead_revive_purge);
    RUN(test_result_after_lost_lease);
    RUN(test_cancel);
    RUN(test_pause);
    RUN(test_failed_set_and_queue_empty);
    RUN(test_determinism);
    /* the journal's sync thread talks over an inproc pair: no network */
    zctx = zmq_ctx_new();
    snprintf(base, sizeof base, "/tmp/tq-engine-test-XXXXXX");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_restart_by_replay);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    zmq_ctx_term(zctx);
    TEST_MAIN_END();
}
