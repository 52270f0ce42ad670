/* engine.c - the task state machine. See engine.h; the determinism rule
 * is in docs/architecture.md: no clock reads and no randomness here but
 * the seeded jitter generator. */
#include "engine.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_log.h"
#include "tq_util.h"

typedef struct {
    tq_engine_fn fn;
    void *arg;
} sub_t;

struct tq_engine {
    tq_engine_cfg_t cfg;
    tq_store_t *store;
    uint64_t rng; /* splitmix64 state: the backoff jitter */
    sub_t subs[TQ_ENGINE_MAX_SUBS];
    size_t nsubs;
    tq_items_t *items;     /* plain put/get queues */
    uint64_t next_item_id; /* item ids: their own sequence, from 1 */
};

/* ---- events --------------------------------------------------------------- */

static void emit(tq_engine_t *self, const tq_engine_ev_t *ev)
{
    for (size_t i = 0; i < self->nsubs; i++)
        self->subs[i].fn(self->subs[i].arg, ev);
}

static void emit_kind(tq_engine_t *self, tq_engine_ev_kind_t kind, tq_task_t *t)
{
    tq_engine_ev_t ev = {.kind = kind, .task = t};
    emit(self, &ev);
}

/* The store's observer: every task and key change, forwarded. */
static void on_store_task(void *arg, tq_task_t *t, tq_store_event_t sev)
{
    tq_engine_ev_t ev = {.kind = TQ_EV_TASK, .store_ev = sev, .task = t};
    emit(arg, &ev);
}

static void on_store_key(void *arg, tq_key_t *k, int deleted)
{
    tq_engine_ev_t ev = {.kind = TQ_EV_KEY, .key = k, .deleted = deleted};
    emit(arg, &ev);
}

/* t's lease ends now (kill: its run is to be stopped). Told before the
 * store forgets the worker. */
static void lease_end(tq_engine_t *self, tq_task_t *t, int kill)
{
    tq_engine_ev_t ev = {.kind = TQ_EV_LEASE_END,
                         .task = t,
                         .worker = tq_task_worker(t),
                         .attempt = tq_task_attempt(t),
                         .kill = kill};
    emit(self, &ev);
}

/* Finish t (queued or leased, lease already ended) as st with data. */
static void finish(tq_engine_t *self, tq_task_t *t, tq_task_state_t st, const void *data,
                   size_t len, tq_now_t now)
{
    tq_store_finish(self->store, t, st, data, len, now.wall_ms);
    emit_kind(self, TQ_EV_FINISHED, t);
}

static const char *wname(const tq_engine_t *self, const void *w)
{
    const char *n = self->cfg.worker_name && w ? self->cfg.worker_name(w) : NULL;
    return n ? n : "?";
}

/* ---- life ----------------------------------------------------------------- */

tq_engine_t *tq_engine_new(const tq_engine_cfg_t *cfg)
{
    tq_engine_t *self = tq_calloc(1, sizeof *self);
    self->cfg = *cfg;
    self->rng = cfg->seed;
    self->store = tq_store_new(&cfg->store);
    tq_store_observe(self->store, on_store_task, on_store_key, self);
    self->items = tq_items_new(cfg->store.max_tasks ? cfg->store.max_tasks : 1, TQ_MAX_ITEM_QUEUES);
    self->next_item_id = 1;
    return self;
}

void tq_engine_destroy(tq_engine_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_engine_t *self = *self_p;
    tq_store_observe(self->store, NULL, NULL, NULL);
    tq_store_destroy(&self->store);
    tq_items_destroy(&self->items);
    free(self);
    *self_p = NULL;
}

void tq_engine_subscribe(tq_engine_t *self, tq_engine_fn fn, void *arg)
{
    TQ_ASSERT(self->nsubs < TQ_ENGINE_MAX_SUBS);
    self->subs[self->nsubs++] = (sub_t){fn, arg};
}

void tq_engine_unsubscribe(tq_engine_t *self, tq_engine_fn fn, void *arg)
{
    for (size_t i = 0; i < self->nsubs; i++)
        if (self->subs[i].fn == fn && self->subs[i].arg == arg) {
            memmove(&self->subs[i], &self->subs[i + 1],
                    (self->nsubs - i - 1) * sizeof self->subs[0]);
            self->nsubs--;
            return;
        }
}

tq_store_t *tq_engine_store(const tq_engine_t *self) { return self->store; }
const tq_engine_cfg_t *tq_engine_cfg(const tq_engine_t *self) { return &self->cfg; }

void tq_engine_set_max_tasks(tq_engine_t *self, size_t max_tasks)
{
    self->cfg.store.max_tasks = max_tasks;
    tq_store_set_max_tasks(self->store, max_tasks);
    tq_items_set_max(self->items, max_tasks ? max_tasks : 1);
}

void tq_engine_set_ttls(tq_engine_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms)
{
    self->cfg.store.result_ttl_ms = result_ttl_ms;
    self->cfg.store.unfetched_ttl_ms = unfetched_ttl_ms;
    tq_store_set_ttls(self->store, result_ttl_ms, unfetched_ttl_ms);
}

void tq_engine_set_retry(tq_engine_t *self, uint32_t max_attempts, int64_t lease_timeout_ms,
                         int64_t backoff_base_ms, int64_t backoff_cap_ms)
{
    self->cfg.max_attempts = max_attempts ? max_attempts : 1;
    self->cfg.lease_timeout_ms = lease_timeout_ms;
    self->cfg.backoff_base_ms = backoff_base_ms;
    self->cfg.backoff_cap_ms = backoff_cap_ms < backoff_base_ms ? backoff_base_ms : backoff_cap_ms;
}

/* ---- backoff -------------------------------------------------------------- */

/* splitmix64: small, seedable, and the same on every platform. */
static uint64_t rng_next(tq_engine_t *self)
{
    uint64_t z = (self->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Equal jitter: half of the doubled delay is fixed, the other half
 * random, so retries of many tasks that failed together spread out
 * instead of coming back as one burst. */
int64_t tq_engine_backoff(tq_engine_t *self, uint32_t n, tq_now_t now)
{
    int64_t base = self->cfg.backoff_base_ms, cap = self->cfg.backoff_cap_ms;
    if (base <= 0 || n == 0)
        return 0;
    int64_t d = base;
    for (uint32_t i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    int64_t half = d / 2;
    int64_t spread = d - half;
    if (spread > 0)
        half += (int64_t)(rng_next(self) % ((uint64_t)spread + 1));
    return now.wall_ms + half;
}

/* ---- submit --------------------------------------------------------------- */

int tq_engine_submit(tq_engine_t *self, const tq_task_spec_t *specs, size_t n, int session,
                     tq_now_t now, tq_engine_names_fn names, void *names_arg, uint64_t *ids,
                     uint8_t *added, tq_err_t *err)
{
    tq_store_t *s = self->store;
    size_t nnew = 0;
    for (size_t i = 0; i < n; i++) {
        ids[i] = tq_store_key_find(s, specs[i].key, now.wall_ms);
        added[i] = 0;
        if (!ids[i])
            nnew++;
    }
    if (nnew && !tq_store_has_room(s, nnew)) {
        return tq_err_set(err, TQ_ERR_FULL, "master is full: %zu tasks stored (--max-tasks %zu)",
                          tq_store_size(s), self->cfg.store.max_tasks);
    }
    for (size_t i = 0; i < n && names; i++)
        if (!ids[i] && names(names_arg, &specs[i], err) < 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i])
            continue;
        /* a key seen earlier in this batch */
        ids[i] = tq_store_key_find(s, specs[i].key, now.wall_ms);
        if (ids[i])
            continue;
        tq_task_t *t = session ? tq_store_add_session(s, &specs[i], now.wall_ms, err)
                               : tq_store_add(s, &specs[i], now.wall_ms, err);
        if (!t) {
            while (i-- > 0)
                if (added[i])
                    tq_store_remove_queued(s, tq_store_get(s, ids[i]));
            return -1;
        }
        ids[i] = t->id;
        added[i] = 1;
    }
    if (nnew)
        emit_kind(self, TQ_EV_WAKE, NULL);
    return 0;
}

/* ---- leases --------------------------------------------------------------- */

void tq_engine_lease(tq_engine_t *self, tq_task_t *t, void *worker, uint64_t holder, tq_now_t now)
{
    tq_store_lease(self->store, t, worker, holder);
    tq_store_set_started(t, now.wall_ms);
    /* Run timeout at the master: the worker stops the run itself at
     * timeout_ms; if it has said nothing by timeout + 2 heartbeats, the
     * lease expires. A task without one gets --lease-timeout: its clock
     * starts at dispatch, so time spent prefetched on the worker counts. */
    if (tq_task_timeout(t) > 0)
        tq_store_set_deadline(self->store, t,
                              now.mono_ms + (int64_t)tq_task_timeout(t) +
                                  2 * self->cfg.heartbeat_ms);
    else if (self->cfg.lease_timeout_ms > 0)
        tq_store_set_deadline(self->store, t, now.mono_ms + self->cfg.lease_timeout_ms);
}

void tq_engine_hold(tq_engine_t *self, tq_task_t *t) { tq_store_hold(self->store, t); }
void tq_engine_unhold(tq_engine_t *self, tq_task_t *t) { tq_store_unhold(self->store, t); }

int tq_engine_release(tq_engine_t *self, void *worker, uint64_t id, uint32_t attempt)
{
    tq_task_t *t = tq_store_get(self->store, id);
    if (!t || t->state != TQ_TASK_LEASED || tq_task_worker(t) != worker ||
        tq_task_attempt(t) != attempt)
        return 0; /* already cancelled or requeued: nothing to give back */
    lease_end(self, t, 0);
    tq_store_requeue(self->store, t, 1, 0);
    emit_kind(self, TQ_EV_WAKE, NULL);
    return 1;
}

/* A lease that ended without a result (worker lost, or --lease-timeout:
 * why says which; the lease_end was told) goes back to its queue after a
 * backoff, or is dead once it lost max_attempts leases. The one place
 * that decides between the two. */
static void task_lost(tq_engine_t *self, tq_task_t *t, const char *why, tq_now_t now)
{
    if (tq_task_lost(t) >= self->cfg.max_attempts) {
        char err[256];
        snprintf(err, sizeof err, "gave up after %" PRIu32 " attempts: %s", tq_task_lost(t), why);
        finish(self, t, TQ_TASK_DEAD, err, strlen(err), now);
        tq_warn("task %" PRIu64 " is dead: %s", t->id, err);
    } else {
        tq_store_requeue(self->store, t, 0, tq_engine_backoff(self, tq_task_lost(t), now));
    }
    emit_kind(self, TQ_EV_WAKE, NULL);
}

void tq_engine_lost(tq_engine_t *self, tq_task_t *t, const char *why, tq_now_t now)
{
    TQ_ASSERT(t->state == TQ_TASK_LEASED);
    lease_end(self, t, 0);
    task_lost(self, t, why, now);
}

/* A run that failed (or timed out) on its current lease, which has
 * ended: retried after a backoff while it has retries, else finished
 * as failed with data. Returns 1 if retried. */
static int fail_or_retry(tq_engine_t *self, tq_task_t *t, const void *data, size_t len,
                         tq_now_t now)
{
    if (tq_task_can_retry(t)) {
        tq_store_retry(self->store, t, tq_engine_backoff(self, tq_task_retried(t) + 1u, now));
        emit_kind(self, TQ_EV_WAKE, NULL);
        return 1;
    }
    finish(self, t, TQ_TASK_FAILED, data, len, now);
    return 0;
}

uint64_t tq_engine_expire_one(tq_engine_t *self, tq_now_t now)
{
    tq_task_t *t = tq_store_overdue(self->store, now.mono_ms);
    if (!t)
        return 0;
    uint64_t id = t->id;
    const char *wn = wname(self, tq_task_worker(t));
    char why[256];
    if (!tq_task_timeout(t)) {
        snprintf(why, sizeof why, "lease expired after %.3g s without a result",
                 (double)self->cfg.lease_timeout_ms / 1000.0);
        tq_info("task %" PRIu64 " attempt %" PRIu32 " on worker %s: %s (--lease-timeout)", id,
                tq_task_attempt(t), wn, why);
        lease_end(self, t, 1);
        task_lost(self, t, why, now);
        return id;
    }
    snprintf(why, sizeof why,
             "timed out: no result from worker %s within %.3g s (run timeout + 2 heartbeats)", wn,
             (double)((int64_t)tq_task_timeout(t) + 2 * self->cfg.heartbeat_ms) / 1000.0);
    tq_info("task %" PRIu64 " attempt %" PRIu32 " lease expired: %s", id, tq_task_attempt(t), why);
    lease_end(self, t, 1);
    fail_or_retry(self, t, why, strlen(why), now);
    return id;
}

/* ---- results -------------------------------------------------------------- */

tq_engine_result_t tq_engine_result(tq_engine_t *self, uint64_t instance, const tq_result_item_t *r,
                                    tq_now_t now)
{
    tq_task_t *t = tq_store_get(self->store, r->id);
    if (!t || r->attempt == 0 || tq_task_attempt(t) != r->attempt ||
        (t->state != TQ_TASK_LEASED && t->state != TQ_TASK_QUEUED)) {
        emit_kind(self, TQ_EV_LATE, t);
        return TQ_RES_LATE;
    }
    if (tq_task_holder(t) != instance) {
        emit_kind(self, TQ_EV_LATE, t);
        return TQ_RES_FOREIGN;
    }
    tq_task_state_t st = r->status == TQ_RUN_OK ? TQ_TASK_DONE : TQ_TASK_FAILED;
    if (t->state == TQ_TASK_QUEUED) {
        /* The lease was lost, not given to anyone else: the master
         * restarted (recovery requeues leases, keeping the attempt and
         * its holder), forgot the worker for its silence, or expired the
         * lease. The run finished; take it rather than run the task
         * again. A failure is left to the re-run (its retry is not
         * counted). */
        if (r->status != TQ_RUN_OK && tq_task_can_retry(t)) {
            emit_kind(self, TQ_EV_LATE, t);
            return TQ_RES_RERUN;
        }
        finish(self, t, st, r->data.data, r->data.len, now);
        return TQ_RES_TAKEN;
    }
    /* Leased to this worker, or to an earlier connection of it that the
     * master has not forgotten yet: the lease ends there. */
    lease_end(self, t, 0);
    if (r->status != TQ_RUN_OK)
        return fail_or_retry(self, t, r->data.data, r->data.len, now) ? TQ_RES_RETRIED
                                                                      : TQ_RES_TAKEN;
    finish(self, t, st, r->data.data, r->data.len, now);
    return TQ_RES_TAKEN;
}

/* ---- clients -------------------------------------------------------------- */

uint8_t tq_engine_cancel(tq_engine_t *self, uint64_t id, tq_now_t now)
{
    tq_task_t *t = tq_store_get(self->store, id);
    if (!t)
        return TQ_CANCEL_UNKNOWN;
    if (tq_task_finished(t))
        return TQ_CANCEL_FINISHED;
    if (t->state == TQ_TASK_LEASED) {
        lease_end(self, t, 1);
        emit_kind(self, TQ_EV_WAKE, NULL); /* its worker has room again */
    }
    finish(self, t, TQ_TASK_CANCELLED, NULL, 0, now);
    return TQ_CANCEL_OK;
}

void tq_engine_ack(tq_engine_t *self, uint64_t id)
{
    tq_task_t *t = tq_store_get(self->store, id);
    if (t && tq_task_finished(t))
        tq_store_ack(self->store, t);
}

void tq_engine_fetched(tq_engine_t *self, tq_task_t *t, tq_now_t now)
{
    tq_store_fetched(self->store, t, now.wall_ms);
}

/* ---- the dead set and queues ---------------------------------------------- */

/* A task an operator may retry or purge: dead, or failed (the failed
 * set). */
static int in_fix_set(const tq_task_t *t)
{
    return t && (t->state == TQ_TASK_DEAD || t->state == TQ_TASK_FAILED);
}

int tq_engine_revive(tq_engine_t *self, uint64_t id)
{
    tq_task_t *t = tq_store_get(self->store, id);
    if (!in_fix_set(t))
        return 0;
    tq_store_revive(self->store, t);
    emit_kind(self, TQ_EV_WAKE, NULL);
    return 1;
}

int tq_engine_purge(tq_engine_t *self, uint64_t id)
{
    tq_task_t *t = tq_store_get(self->store, id);
    if (!in_fix_set(t))
        return 0;
    tq_store_purge(self->store, t);
    return 1;
}

size_t tq_engine_revive_all(tq_engine_t *self, const tq_queue_t *q, int purge)
{
    size_t count = 0;
    tq_task_t *t = tq_store_dead_first(self->store);
    while (t) {
        tq_task_t *next = tq_store_dead_next(t);
        if (!q || tq_task_queue(t) == q) {
            if (purge)
                tq_store_purge(self->store, t);
            else
                tq_store_revive(self->store, t);
            count++;
        }
        t = next;
    }
    if (count && !purge)
        emit_kind(self, TQ_EV_WAKE, NULL);
    return count;
}

size_t tq_engine_queue_empty(tq_engine_t *self, tq_queue_t *q, size_t max, tq_now_t now, int *more)
{
    /* one pick (one look at the delayed heap at most), then the cancels */
    size_t want = tq_queue_counts(q)->queued < max ? tq_queue_counts(q)->queued : max;
    tq_task_t **picked = tq_malloc((want ? want : 1) * sizeof *picked);
    size_t n = tq_store_queue_queued_some(self->store, q, picked, want);
    for (size_t i = 0; i < n; i++)
        finish(self, picked[i], TQ_TASK_CANCELLED, NULL, 0, now);
    free(picked);
    *more = tq_queue_counts(q)->queued > 0;
    return n;
}

int tq_engine_queue_delete(tq_engine_t *self, tq_queue_t *q)
{
    const tq_queue_counts_t *c = tq_queue_counts(q);
    if (c->queued || c->running)
        return -1;
    tq_engine_pause(self, q, 0); /* nothing of it is kept: the mark goes too */
    return 0;
}

int tq_engine_pause(tq_engine_t *self, tq_queue_t *q, int paused)
{
    paused = paused != 0;
    if (tq_queue_paused(q) == paused)
        return 0;
    tq_queue_set_paused(q, paused);
    tq_engine_ev_t ev = {.kind = TQ_EV_PAUSE, .queue = q, .paused = paused};
    emit(self, &ev);
    if (!paused)
        emit_kind(self, TQ_EV_WAKE, NULL);
    return 1;
}

/* ---- time ----------------------------------------------------------------- */

size_t tq_engine_promote(tq_engine_t *self, tq_now_t now, size_t max)
{
    size_t n = tq_store_promote(self->store, now.wall_ms, max);
    if (n)
        emit_kind(self, TQ_EV_WAKE, NULL);
    return n;
}

size_t tq_engine_sweep(tq_engine_t *self, tq_now_t now, size_t max_steps)
{
    return tq_store_sweep(self->store, now.wall_ms, max_steps);
}

/* ---- dump ----------------------------------------------------------------- */

static void putf(tq_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(tq_buf_t *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        tq_buf_put(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void tq_engine_dump(const tq_engine_t *self, tq_buf_t *b)
{
    const tq_store_t *s = self->store;
    for (tq_task_t *t = tq_store_first(s); t; t = tq_store_next(s, t)) {
        tq_bytes_t d = tq_task_data(t);
        putf(b,
             "task %" PRIu64 " %s q=%s fn=%s attempt=%" PRIu32 " releases=%" PRIu32
             " retried=%u holder=%" PRIx64 " not_before=%" PRId64 " finished=%" PRId64
             " expires=%" PRId64 " flags=%x payload=%zu data=%.*s\n",
             t->id, tq_task_state_name(t->state), tq_queue_name(tq_task_queue(t)), tq_task_fn(t),
             tq_task_attempt(t), tq_task_releases(t), (unsigned)tq_task_retried(t),
             tq_task_holder(t), tq_task_not_before(t), tq_task_finished_ms(t),
             tq_task_expires_ms(t), (unsigned)t->flags, tq_task_payload(t).len,
             (int)(d.len > 64 ? 64 : d.len), d.data ? (const char *)d.data : "");
    }
    /* paused queues by name (queue order depends on how they were made) */
    size_t nq = tq_store_nqueues(s), np = 0;
    const char **names = tq_calloc(nq ? nq : 1, sizeof *names);
    for (size_t i = 0; i < nq; i++)
        if (tq_queue_paused(tq_store_queue_at(s, i)))
            names[np++] = tq_queue_name(tq_store_queue_at(s, i));
    qsort(names, np, sizeof *names, cmp_name);
    for (size_t i = 0; i < np; i++)
        putf(b, "paused %s\n", names[i]);
    free(names);
}

/* ---- plain put/get queues -------------------------------------------------- */

const tq_items_t *tq_engine_items(const tq_engine_t *self) { return self->items; }

static void emit_item(tq_engine_t *self, tq_engine_ev_kind_t kind, const tq_item_t *it, int deleted)
{
    tq_engine_ev_t ev = {.kind = kind, .item = it, .deleted = deleted};
    emit(self, &ev);
}

int tq_engine_put(tq_engine_t *self, const tq_put_item_t *items, size_t n, uint64_t *ids,
                  tq_err_t *err)
{
    if (!tq_items_room(self->items, n)) {
        return tq_err_set(err, TQ_ERR_TOO_MANY, "plain queues full: %zu items held (--max-tasks)",
                          tq_items_count(self->items));
    }
    for (size_t i = 0; i < n; i++) {
        tq_item_t *it = tq_items_put(self->items, items[i].queue, self->next_item_id,
                                     items[i].data.data, items[i].data.len);
        if (!it) { /* only the queue-name cap is left: earlier ones stay (each is journaled) */
            err->code = TQ_ERR_TOO_MANY;
            snprintf(err->msg, sizeof err->msg, "too many plain queue names (max %d)",
                     TQ_MAX_ITEM_QUEUES);
            if (i)
                emit_item(self, TQ_EV_ITEM_READY, NULL, 0);
            return -1;
        }
        ids[i] = self->next_item_id++;
        emit_item(self, TQ_EV_ITEM, it, 0);
    }
    emit_item(self, TQ_EV_ITEM_READY, NULL, 0);
    return 0;
}

size_t tq_engine_take(tq_engine_t *self, tq_bytes_t queue, size_t max, void *holder,
                      tq_item_t **out)
{
    return tq_items_take(self->items, queue, max, holder, out);
}

int tq_engine_take_ack(tq_engine_t *self, uint64_t id, void *holder)
{
    tq_item_t *it = tq_items_taken(self->items, id, holder);
    if (!it)
        return -1;
    emit_item(self, TQ_EV_ITEM, it, 1);
    tq_items_delete(self->items, it);
    return 0;
}

void tq_engine_untake(tq_engine_t *self, void *holder)
{
    if (tq_items_untake(self->items, holder))
        emit_item(self, TQ_EV_ITEM_READY, NULL, 0);
}

int tq_engine_item_restore(tq_engine_t *self, tq_bytes_t queue, uint64_t id, tq_bytes_t data)
{
    if (id == 0 || tq_items_get(self->items, id))
        return -1;
    if (!tq_items_put(self->items, queue, id, data.data, data.len))
        return -1;
    if (id >= self->next_item_id)
        self->next_item_id = id + 1;
    return 0;
}

void tq_engine_item_drop(tq_engine_t *self, uint64_t id)
{
    tq_item_t *it = tq_items_get(self->items, id);
    if (it)
        tq_items_delete(self->items, it);
    if (id >= self->next_item_id)
        self->next_item_id = id + 1;
}
