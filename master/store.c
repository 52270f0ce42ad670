/* store.c - tasks, queues, states, results and TTLs. See store.h; the
 * heaps are in store_heap.c, the idempotency keys in store_keys.c. */
#include "store.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tq_util.h"

/* The record's fixed part is what every queued task pays: keep it small
 * (a 16-byte payload and a 24-byte session key make an 80-byte record). */
_Static_assert(offsetof(tq_task_t, bytes) <= 50, "tq_task_t grew");
/* Only leased, finished, delayed or waited-on tasks have the cold part;
 * 128 with the lease holder (issue 12: results only from the holder). */
_Static_assert(sizeof(tq_task_ext_t) <= 128, "tq_task_ext_t grew");

static void notify(tq_store_t *self, tq_task_t *t, tq_store_event_t ev)
{
    if (self->obs)
        self->obs(self->obs_arg, t, ev);
}

void tq_store_observe(tq_store_t *self, tq_store_task_fn fn, tq_store_key_fn kfn, void *arg)
{
    self->obs = fn;
    self->kobs = kfn;
    self->obs_arg = arg;
}

/* ---- payloads and results held apart ------------------------------------
 * Blocks with a reference count in front: the store holds one, and each
 * ZeroMQ frame lent the bytes (tq_task_lend_*) one more, released by
 * ZeroMQ's I/O thread once sent. */
typedef struct {
    _Alignas(16) atomic_int refs;
} rc_head_t;

static void *rc_alloc(size_t len)
{
    rc_head_t *h = malloc(sizeof *h + len);
    if (!h)
        return NULL;
    atomic_init(&h->refs, 1);
    return h + 1;
}

static rc_head_t *rc_head(const void *data) { return (rc_head_t *)(uintptr_t)data - 1; }

static void rc_hold(void *hint) { atomic_fetch_add(&((rc_head_t *)hint)->refs, 1); }

static void rc_release(void *data, void *hint)
{
    (void)data;
    if (atomic_fetch_sub(&((rc_head_t *)hint)->refs, 1) == 1)
        free(hint);
}

/* The store's reference (NULL is fine). */
static void rc_free(void *data)
{
    if (data)
        rc_release(data, rc_head(data));
}

/* ---- the task record -------------------------------------------------- */

/* t's cold part, created if absent. */
static tq_task_ext_t *ext(tq_task_t *t)
{
    if (!t->x)
        t->x = tq_calloc(1, sizeof *t->x);
    return t->x;
}

/* Where the payload part starts: after the session key part. */
static uint8_t *payload_part(const tq_task_t *t)
{
    return (uint8_t *)t->bytes + keys_part_size(t->skey_len);
}

tq_bytes_t tq_task_payload(const tq_task_t *t)
{
    tq_bytes_t b = {payload_part(t), t->payload_len};
    if (t->payload_len && (t->flags & TQ_TASK_F_PAYEXT))
        memcpy(&b.data, payload_part(t), sizeof b.data);
    return b;
}

void tq_task_lend_payload(const tq_task_t *t, tq_out_t *out)
{
    if ((t->flags & TQ_TASK_F_PAYEXT) && t->payload_len >= TQ_LEND_MIN)
        tq_out_lend(out, rc_hold, rc_release, rc_head(tq_task_payload(t).data));
}

void tq_task_lend_data(const tq_task_t *t, tq_out_t *out)
{
    if (t->x && t->x->data && t->x->data_len >= TQ_LEND_MIN)
        tq_out_lend(out, rc_hold, rc_release, rc_head(t->x->data));
}

tq_bytes_t tq_task_data(const tq_task_t *t)
{
    tq_bytes_t b = {NULL, 0};
    if (t->x) {
        b.data = t->x->data;
        b.len = t->x->data_len;
    }
    return b;
}

const char *tq_task_fn(const tq_task_t *t) { return t->cls->heap->fn; }
tq_queue_t *tq_task_queue(const tq_task_t *t) { return t->cls->heap->queue; }

void tq_task_set_counts(tq_task_t *t, uint32_t attempt, uint32_t releases, uint16_t retried)
{
    tq_task_ext_t *x = ext(t);
    x->attempt = attempt;
    x->releases = releases;
    x->retried = retried;
}

void tq_task_set_holder(tq_task_t *t, uint64_t holder, uint32_t attempt)
{
    tq_task_ext_t *x = ext(t);
    x->holder = holder;
    x->holder_attempt = attempt;
}

/* Free the payload when it is a separate allocation. */
static void payload_free(tq_task_t *t)
{
    if (t->flags & TQ_TASK_F_PAYEXT) {
        uint8_t *p;
        memcpy(&p, payload_part(t), sizeof p);
        rc_free(p);
        t->flags &= (uint8_t)~TQ_TASK_F_PAYEXT;
    }
}

/* A zeroed record for a task with a session key of skey_len bytes and a
 * payload of plen bytes (copied in; apart when large), or NULL when
 * memory is short. */
static tq_task_t *task_alloc(tq_store_t *self, size_t skey_len, const void *payload, size_t plen)
{
    int apart = plen > TQ_TASK_INLINE_PAYLOAD;
    size_t size = offsetof(tq_task_t, bytes) + keys_part_size(skey_len) +
                  (apart ? sizeof(uint8_t *) : plen);
    if (size < sizeof(tq_task_t))
        size = sizeof(tq_task_t);
    size = (size + 7) & ~(size_t)7;
    TQ_ASSERT(size / 8 <= UINT8_MAX);
    uint8_t *copy = NULL;
    if (apart && !(copy = rc_alloc(plen)))
        return NULL;
    tq_task_t *t = tq_slab_alloc(self->slab, size);
    if (!t) {
        rc_free(copy);
        return NULL;
    }
    memset(t, 0, size);
    t->rsize8 = (uint8_t)(size / 8);
    t->skey_len = (uint8_t)skey_len;
    t->payload_len = (uint32_t)plen;
    if (apart) {
        memcpy(copy, payload, plen);
        memcpy(payload_part(t), &copy, sizeof copy);
        t->flags |= TQ_TASK_F_PAYEXT;
    } else if (plen) {
        memcpy(payload_part(t), payload, plen);
    }
    return t;
}

static void task_free(tq_store_t *self, tq_task_t *t)
{
    payload_free(t);
    if (t->x) {
        rc_free(t->x->data);
        free(t->x->waiters);
        free(t->x);
    }
    if (t->cls)
        store_tclass_unref(self, t->cls);
    tq_slab_free(self->slab, t, (size_t)t->rsize8 * 8);
}

/* ---- deadlines -------------------------------------------------------- */

static int64_t deadline_key(const tq_task_t *t) { return t->x->deadline_ms; }
static size_t deadline_get(const tq_task_t *t) { return t->x->dl_idx; }
static void deadline_set(tq_task_t *t, size_t i) { t->x->dl_idx = i; }
static int64_t delay_key(const tq_task_t *t) { return t->x->not_before_ms; }
static size_t delay_get(const tq_task_t *t) { return t->heap_idx; }
static void delay_set(tq_task_t *t, size_t i) { t->heap_idx = (uint32_t)i; }

/* Drop t's deadline, if it has one. */
static void dl_clear(tq_store_t *self, tq_task_t *t)
{
    if (!t->x || !t->x->deadline_ms)
        return;
    theap_remove(&self->dl, t);
    t->x->deadline_ms = 0;
}

void tq_store_set_deadline(tq_store_t *self, tq_task_t *t, int64_t deadline_ms)
{
    TQ_ASSERT(t->state == TQ_TASK_LEASED);
    dl_clear(self, t);
    ext(t)->deadline_ms = deadline_ms <= 0 ? 1 : deadline_ms; /* 0 means none */
    theap_push(&self->dl, t);
}

tq_task_t *tq_store_overdue(const tq_store_t *self, int64_t now_ms)
{
    tq_task_t *t = theap_top(&self->dl);
    return t && t->x->deadline_ms <= now_ms ? t : NULL;
}

/* ---- per-state counters ------------------------------------------------ */

static size_t *count_slot(tq_queue_counts_t *c, tq_task_state_t st)
{
    switch (st) {
    case TQ_TASK_QUEUED: return &c->queued;
    case TQ_TASK_LEASED: return &c->running;
    case TQ_TASK_DONE: return &c->done;
    case TQ_TASK_FAILED:
    case TQ_TASK_DEAD: return &c->failed;
    case TQ_TASK_CANCELLED: return &c->cancelled;
    }
    TQ_ASSERT(0);
    return NULL;
}

/* Count t in its queue and in the store's sum over all queues (kept
 * here, so a status costs no walk over every queue). */
static void count_inc(tq_task_t *t)
{
    tq_queue_t *q = t->cls->heap->queue;
    (*count_slot(&q->counts, (tq_task_state_t)t->state))++;
    (*count_slot(q->all, (tq_task_state_t)t->state))++;
    if (t->state == TQ_TASK_DEAD) {
        q->counts.dead++;
        q->all->dead++;
    }
}

static void count_dec(tq_task_t *t)
{
    tq_queue_t *q = t->cls->heap->queue;
    size_t *from = count_slot(&q->counts, (tq_task_state_t)t->state);
    TQ_ASSERT(*from > 0);
    (*from)--;
    (*count_slot(q->all, (tq_task_state_t)t->state))--;
    if (t->state == TQ_TASK_DEAD) {
        q->counts.dead--;
        q->all->dead--;
    }
}

static void set_state(tq_task_t *t, tq_task_state_t st)
{
    count_dec(t);
    t->state = (uint8_t)st;
    count_inc(t);
}

/* ---- TTL lists (finished tasks: they have their cold part) -------------- */

static void ttl_append(ttl_list_t *l, tq_task_t *t)
{
    t->x->ttl_next = NULL;
    t->x->ttl_prev = l->tail;
    if (l->tail)
        l->tail->x->ttl_next = t;
    else
        l->head = t;
    l->tail = t;
}

/* The list finished t is on: by expiry, or the dead list. */
static ttl_list_t *ttl_list_of(tq_store_t *self, tq_task_t *t)
{
    if (t->state == TQ_TASK_DEAD)
        return &self->dead;
    return tq_task_fetched(t) ? &self->fetched : &self->unfetched;
}

/* Move every expiry on TTL list l by delta ms: a TTL changed
 * (tq_store_set_ttls). The order stays. */
static void ttl_shift(ttl_list_t *l, int64_t delta)
{
    if (delta == 0)
        return;
    for (tq_task_t *t = l->head; t; t = t->x->ttl_next)
        t->x->expires_ms += delta;
}

/* Put finished t on its list: appended to a TTL list (a TTL applies to
 * every entry of its list alike, tq_store_set_ttls, so that keeps it
 * sorted by expiry), or into the dead list
 * in id order (tasks die in nearly id order: the walk from the tail is
 * short). */
static void ttl_add(tq_store_t *self, tq_task_t *t)
{
    ttl_list_t *l = ttl_list_of(self, t);
    if (t->state != TQ_TASK_DEAD) {
        ttl_append(l, t);
        return;
    }
    tq_task_t *before = l->tail;
    while (before && before->id > t->id)
        before = before->x->ttl_prev;
    t->x->ttl_prev = before;
    t->x->ttl_next = before ? before->x->ttl_next : l->head;
    if (t->x->ttl_next)
        t->x->ttl_next->x->ttl_prev = t;
    else
        l->tail = t;
    if (before)
        before->x->ttl_next = t;
    else
        l->head = t;
}

static void ttl_unlink(ttl_list_t *l, tq_task_t *t)
{
    tq_task_ext_t *x = t->x;
    if (x->ttl_prev)
        x->ttl_prev->x->ttl_next = x->ttl_next;
    else
        l->head = x->ttl_next;
    if (x->ttl_next)
        x->ttl_next->x->ttl_prev = x->ttl_prev;
    else
        l->tail = x->ttl_prev;
    x->ttl_prev = x->ttl_next = NULL;
}

/* ---- store ------------------------------------------------------------ */

tq_store_t *tq_store_new(const tq_store_cfg_t *cfg)
{
    tq_store_t *self = tq_calloc(1, sizeof *self);
    self->cfg = *cfg;
    self->tasks = tq_taskidx_new();
    self->slab = tq_slab_new();
    self->next_id = cfg->first_id ? cfg->first_id : 1;
    self->dl.key = deadline_key;
    self->dl.get = deadline_get;
    self->dl.set = deadline_set;
    self->delayed.key = delay_key;
    self->delayed.get = delay_get;
    self->delayed.set = delay_set;
    return self;
}

void tq_store_destroy(tq_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_store_t *self = *self_p;
    uint64_t id;
    for (tq_task_t *t = tq_taskidx_next(self->tasks, 1, &id); t;
         t = id < UINT64_MAX ? tq_taskidx_next(self->tasks, id + 1, &id) : NULL)
        task_free(self, t);
    tq_taskidx_destroy(&self->tasks);
    tq_slab_destroy(&self->slab);
    keys_free(self);
    store_tclass_free(self);
    free(self->dl.a);
    free(self->delayed.a);
    for (size_t i = 0; i < self->nqueues; i++) {
        tq_queue_t *q = self->queues[i];
        for (size_t j = 0; j < q->nheaps; j++) {
            free(q->heaps[j]->items);
            free(q->heaps[j]);
        }
        free(q->heaps);
        free(q);
    }
    free(self->queues);
    for (size_t i = 0; i < self->names_cap; i++)
        free(self->names[i].name);
    free(self->names);
    free(self);
    *self_p = NULL;
}

void tq_store_set_max_tasks(tq_store_t *self, size_t max_tasks) { self->cfg.max_tasks = max_tasks; }

void tq_store_set_ttls(tq_store_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms)
{
    ttl_shift(&self->fetched, result_ttl_ms - self->cfg.result_ttl_ms);
    ttl_shift(&self->unfetched, unfetched_ttl_ms - self->cfg.unfetched_ttl_ms);
    self->cfg.result_ttl_ms = result_ttl_ms;
    self->cfg.unfetched_ttl_ms = unfetched_ttl_ms;
}

int tq_store_has_room(const tq_store_t *self, size_t n)
{
    return tq_taskidx_size(self->tasks) + n <= self->cfg.max_tasks;
}

/* Unlink t from every store structure but its heap/TTL list (the caller
 * did those), drop its session key, free it. */
static void task_forget(tq_store_t *self, tq_task_t *t)
{
    if (t->flags & TQ_TASK_F_SKEY)
        keys_session_detach(self, t);
    tq_taskidx_remove(self->tasks, t->id);
    task_free(self, t);
}

tq_task_t *tq_store_from(const tq_store_t *self, uint64_t id)
{
    uint64_t found;
    return tq_taskidx_next(self->tasks, id ? id : 1, &found);
}
tq_task_t *tq_store_first(const tq_store_t *self) { return tq_store_from(self, 1); }
tq_task_t *tq_store_next(const tq_store_t *self, const tq_task_t *t)
{
    return t->id < UINT64_MAX ? tq_store_from(self, t->id + 1) : NULL;
}

/* Queued t leaves its heap (or the delayed heap). */
static void dequeue(tq_store_t *self, tq_task_t *t)
{
    if (tq_task_not_before(t)) {
        theap_remove(&self->delayed, t);
        t->x->not_before_ms = 0;
        t->cls->heap->queue->counts.delayed--;
        t->cls->heap->queue->all->delayed--;
        return;
    }
    fnheap_remove(t->cls->heap, t);
    t->cls->heap->queue->queued_total--;
}

/* Queued t enters its heap, or the delayed heap while not_before_ms is
 * set. */
static void enqueue(tq_store_t *self, tq_task_t *t)
{
    if (tq_task_not_before(t)) {
        theap_push(&self->delayed, t);
        t->cls->heap->queue->counts.delayed++;
        t->cls->heap->queue->all->delayed++;
        return;
    }
    fnheap_push(t->cls->heap, t);
    t->cls->heap->queue->queued_total++;
}

size_t tq_store_queue_queued_some(const tq_store_t *self, const tq_queue_t *q, tq_task_t **out,
                                  size_t max)
{
    size_t n = 0;
    /* the ends of the arrays: removing those moves nothing else */
    for (size_t h = 0; h < q->nheaps && n < max; h++) {
        const tq_fnheap_t *fh = q->heaps[h];
        for (size_t i = fh->n; i > 0 && n < max; i--)
            out[n++] = fh->items[i - 1];
    }
    if (q->counts.delayed)
        for (size_t i = self->delayed.n; i > 0 && n < max; i--)
            if (self->delayed.a[i - 1]->cls->heap->queue == q)
                out[n++] = self->delayed.a[i - 1];
    return n;
}

/* Set t's not_before_ms (0 = runnable now). */
static void set_not_before(tq_task_t *t, int64_t not_before_ms)
{
    if (not_before_ms > 0)
        ext(t)->not_before_ms = not_before_ms;
    else if (t->x)
        t->x->not_before_ms = 0;
}

void tq_store_delay(tq_store_t *self, tq_task_t *t, int64_t not_before_ms)
{
    TQ_ASSERT(t->state == TQ_TASK_QUEUED);
    dequeue(self, t);
    set_not_before(t, not_before_ms);
    enqueue(self, t);
}

size_t tq_store_promote(tq_store_t *self, int64_t now_ms, size_t max)
{
    size_t n = 0;
    tq_task_t *t;
    while (n < max && (t = theap_top(&self->delayed)) != NULL && t->x->not_before_ms <= now_ms) {
        dequeue(self, t);
        enqueue(self, t);
        n++;
    }
    return n;
}

int64_t tq_store_next_due(const tq_store_t *self, int64_t now_ms)
{
    tq_task_t *t = theap_top(&self->delayed);
    if (!t)
        return -1;
    return t->x->not_before_ms > now_ms ? t->x->not_before_ms - now_ms : 0;
}

int store_full(const tq_store_t *self, tq_err_t *err)
{
    return tq_err_set(err, TQ_ERR_FULL,
                      "master is full: %zu tasks or idempotency keys stored (--max-tasks %zu)",
                      tq_store_size(self) > tq_store_nkeys(self) ? tq_store_size(self)
                                                                 : tq_store_nkeys(self),
                      self->cfg.max_tasks);
}

static tq_task_t *add_task(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                           int session, tq_err_t *err)
{
    if (!tq_store_has_room(self, 1)) {
        store_full(self, err);
        return NULL;
    }
    tq_bytes_t qname = spec->queue.len ? spec->queue : tq_bytes_str("default");
    /* fn first: interning may grow the table and move qe */
    const char *fn = tq_store_intern(self, spec->fn);
    name_ent_t *qe = fn ? store_name_entry(self, qname) : NULL;
    if (!qe) {
        tq_err_set(err, TQ_ERR_TOO_MANY, "cannot store the tasks (too many distinct names)");
        return NULL;
    }
    if (spec->key.len > TQ_MAX_KEY || spec->payload.len > UINT32_MAX) {
        tq_err_set(err, TQ_ERR_TOO_LARGE, "cannot store the tasks (key or payload too large)");
        return NULL;
    }
    key_ent_t *ke = NULL;
    if (spec->key.len && keys_prepare(self, spec->key, err) < 0)
        return NULL;
    if (spec->key.len && !session && !(ke = keys_retained_new(spec->key))) {
        tq_err_set(err, TQ_ERR_TOO_LARGE, "cannot store the tasks (out of memory)");
        return NULL;
    }
    /* The payload size is the peer's choice (bounded by --max-payload):
     * plain malloc, failing into a protocol error. */
    tq_task_t *t = task_alloc(self, session ? spec->key.len : 0, spec->payload.data,
                              spec->payload.len);
    if (!t) {
        free(ke);
        tq_err_set(err, TQ_ERR_TOO_LARGE, "cannot store the tasks (out of memory)");
        return NULL;
    }
    t->id = self->next_id++;
    t->retries = spec->retries;
    tq_queue_t *q = store_queue_get(self, qe);
    t->cls = store_tclass_ref(self, store_queue_heap(self, q, fn), spec->priority,
                              spec->timeout_ms ? spec->timeout_ms : q->default_timeout_ms);
    t->created_ms = now_ms;
    set_not_before(t, spec->not_before_ms > now_ms ? spec->not_before_ms : 0);
    t->state = TQ_TASK_QUEUED;
    count_inc(t);
    enqueue(self, t);
    tq_taskidx_put(self->tasks, t->id, t);
    self->totals.submitted++;
    if (spec->key.len && session)
        keys_session_attach(self, t, spec->key);
    if (ke) {
        ke->id = t->id;
        ke->expires_ms = now_ms + self->cfg.key_retention_ms;
        keys_retained_insert(self, ke);
        t->flags |= TQ_TASK_F_KEYED;
    }
    notify(self, t, TQ_SEV_ADDED);
    if (ke && self->kobs)
        self->kobs(self->obs_arg, ke, 0);
    return t;
}

tq_task_t *tq_store_add(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms, tq_err_t *err)
{
    return add_task(self, spec, now_ms, 0, err);
}

tq_task_t *tq_store_add_session(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                                tq_err_t *err)
{
    return add_task(self, spec, now_ms, 1, err);
}

void tq_store_remove_queued(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && tq_task_nwaiters(t) == 0);
    notify(self, t, TQ_SEV_DELETED);
    dequeue(self, t);
    count_dec(t);
    self->totals.submitted--;
    /* Batches are undone newest first, so its key (if any) is the newest. */
    if (!(t->flags & TQ_TASK_F_SKEY) && self->keys.tail && self->keys.tail->id == t->id)
        keys_retained_delete(self, self->keys.tail);
    task_forget(self, t);
}

const tq_store_cfg_t *tq_store_cfg(const tq_store_t *self) { return &self->cfg; }

tq_task_t *tq_store_get(const tq_store_t *self, uint64_t id)
{
    return id ? tq_taskidx_get(self->tasks, id) : NULL;
}

size_t tq_store_size(const tq_store_t *self) { return tq_taskidx_size(self->tasks); }

void tq_store_lease(tq_store_t *self, tq_task_t *t, void *worker, uint64_t holder)
{
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && !tq_task_not_before(t));
    if (t->flags & TQ_TASK_F_HELD)
        t->flags &= (uint8_t)~TQ_TASK_F_HELD; /* out of its heap already */
    else
        dequeue(self, t);
    set_state(t, TQ_TASK_LEASED);
    tq_task_ext_t *x = ext(t);
    x->attempt++;
    x->started_after_ms = 0; /* tq_store_set_started */
    x->worker = worker;
    x->holder = holder;
    x->holder_attempt = x->attempt;
    self->totals.dispatched++;
    notify(self, t, TQ_SEV_LEASED);
}

void tq_store_set_started(tq_task_t *t, int64_t wall_ms)
{
    TQ_ASSERT(t->state == TQ_TASK_LEASED && t->x);
    int64_t d = wall_ms - t->created_ms;
    t->x->started_after_ms = d >= 0 && d < (int64_t)UINT32_MAX ? (uint32_t)d + 1 : 0;
}

void tq_store_hold(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && !tq_task_not_before(t) && !(t->flags & TQ_TASK_F_HELD));
    dequeue(self, t);
    t->flags |= TQ_TASK_F_HELD;
}

void tq_store_unhold(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && (t->flags & TQ_TASK_F_HELD));
    t->flags &= (uint8_t)~TQ_TASK_F_HELD;
    enqueue(self, t); /* same id: its old place */
}

void tq_store_requeue(tq_store_t *self, tq_task_t *t, int released, int64_t not_before_ms)
{
    TQ_ASSERT(t->state == TQ_TASK_LEASED);
    dl_clear(self, t);
    if (released)
        t->x->releases++;
    t->x->worker = NULL;
    set_state(t, TQ_TASK_QUEUED);
    set_not_before(t, not_before_ms);
    enqueue(self, t); /* same id: back at its old place */
    self->totals.requeued++;
    notify(self, t, TQ_SEV_REQUEUED);
}

void tq_store_retry(tq_store_t *self, tq_task_t *t, int64_t not_before_ms)
{
    TQ_ASSERT(t->state == TQ_TASK_LEASED && tq_task_can_retry(t));
    dl_clear(self, t);
    t->x->retried++;
    t->x->worker = NULL;
    set_state(t, TQ_TASK_QUEUED);
    set_not_before(t, not_before_ms);
    enqueue(self, t); /* same id: back at its old place */
    self->totals.retried++;
    notify(self, t, TQ_SEV_REQUEUED);
}

int tq_task_can_retry(const tq_task_t *t) { return tq_task_retried(t) < t->retries; }

uint32_t tq_task_lost(const tq_task_t *t)
{
    uint64_t kept = (uint64_t)tq_task_releases(t) + tq_task_retried(t);
    uint32_t attempt = tq_task_attempt(t);
    return attempt > kept ? (uint32_t)(attempt - kept) : 0;
}

/* Give finished t (with its cold part) a copy of data[len]: see
 * tq_store_finish. */
static void set_data(tq_task_t *t, const void *data, size_t len)
{
    tq_task_ext_t *x = t->x;
    rc_free(x->data);
    x->data = NULL;
    x->data_len = 0;
    if (!len)
        return;
    TQ_ASSERT(len <= UINT32_MAX); /* results are bounded as payloads */
    x->data = rc_alloc(len);
    if (x->data) {
        memcpy(x->data, data, len);
        x->data_len = (uint32_t)len;
    } else {
        static const char oom[] = "master could not store the result (out of memory)";
        x->data = rc_alloc(sizeof oom - 1);
        if (x->data) { /* or no text at all */
            memcpy(x->data, oom, sizeof oom - 1);
            x->data_len = sizeof oom - 1;
        }
    }
}

void tq_store_finish(tq_store_t *self, tq_task_t *t, tq_task_state_t st, const void *data,
                     size_t len, int64_t now_ms)
{
    TQ_ASSERT(!tq_task_finished(t));
    TQ_ASSERT(st >= TQ_TASK_DONE);
    if (t->state == TQ_TASK_QUEUED)
        dequeue(self, t);
    dl_clear(self, t);
    tq_task_ext_t *x = ext(t);
    x->worker = NULL;
    set_state(t, st);
    if (st != TQ_TASK_DEAD && st != TQ_TASK_FAILED) {
        /* not needed any more: keep memory to the results (dead and
         * failed tasks keep theirs: an operator may retry them) */
        payload_free(t);
        t->payload_len = 0;
    }
    set_data(t, data, len);
    x->finished_ms = now_ms;
    x->expires_ms = st == TQ_TASK_DEAD ? 0 : now_ms + self->cfg.unfetched_ttl_ms;
    ttl_add(self, t);
    switch (st) {
    case TQ_TASK_DONE: self->totals.done++; break;
    case TQ_TASK_FAILED: self->totals.failed++; break;
    case TQ_TASK_CANCELLED: self->totals.cancelled++; break;
    case TQ_TASK_DEAD: self->totals.dead++; break;
    default: break;
    }
    notify(self, t, TQ_SEV_FINISHED);
}

void tq_store_fetched(tq_store_t *self, tq_task_t *t, int64_t now_ms)
{
    TQ_ASSERT(tq_task_finished(t));
    if (tq_task_fetched(t))
        return;
    t->flags |= TQ_TASK_F_FETCHED;
    if (t->state == TQ_TASK_DEAD)
        return; /* no TTL: it stays on the dead list */
    ttl_unlink(&self->unfetched, t);
    t->x->expires_ms = now_ms + self->cfg.result_ttl_ms;
    ttl_append(&self->fetched, t);
}

void tq_store_ack(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(tq_task_finished(t));
    if (tq_task_acked(t))
        return;
    t->flags |= TQ_TASK_F_ACKED;
    if (t->flags & TQ_TASK_F_SKEY)
        keys_session_detach(self, t);
    notify(self, t, TQ_SEV_ACKED);
}

static void delete_task(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(tq_task_finished(t) && tq_task_nwaiters(t) == 0);
    notify(self, t, TQ_SEV_DELETED);
    ttl_unlink(ttl_list_of(self, t), t);
    count_dec(t);
    task_forget(self, t);
}

tq_task_t *tq_store_dead_first(const tq_store_t *self) { return self->dead.head; }

tq_task_t *tq_store_dead_after(const tq_store_t *self, uint64_t id)
{
    tq_task_t *t = tq_store_get(self, id);
    if (t && t->state == TQ_TASK_DEAD)
        return t->x->ttl_next;
    for (t = self->dead.head; t && t->id <= id; t = t->x->ttl_next)
        ;
    return t;
}
tq_task_t *tq_store_dead_next(const tq_task_t *t) { return t->x->ttl_next; }

void tq_store_revive(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT((t->state == TQ_TASK_DEAD || t->state == TQ_TASK_FAILED) && tq_task_nwaiters(t) == 0);
    ttl_unlink(ttl_list_of(self, t), t);
    tq_task_ext_t *x = t->x;
    set_data(t, NULL, 0);
    x->releases = x->attempt; /* no lost leases from here */
    x->retried = 0;
    t->flags &= (uint8_t) ~(TQ_TASK_F_FETCHED | TQ_TASK_F_ACKED);
    x->finished_ms = 0;
    x->expires_ms = 0;
    set_state(t, TQ_TASK_QUEUED);
    enqueue(self, t);
    self->totals.revived++;
    notify(self, t, TQ_SEV_REVIVED);
}

void tq_store_purge(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(t->state == TQ_TASK_DEAD || t->state == TQ_TASK_FAILED);
    self->totals.purged++;
    delete_task(self, t);
}

/* The finished task that expires first, or NULL. */
static tq_task_t *ttl_first(const tq_store_t *self)
{
    tq_task_t *a = self->unfetched.head, *b = self->fetched.head;
    return a && (!b || a->x->expires_ms <= b->x->expires_ms) ? a : b;
}

size_t tq_store_sweep(tq_store_t *self, int64_t now_ms, size_t max_steps)
{
    size_t n = 0;
    while (n < max_steps) {
        tq_task_t *t = ttl_first(self);
        if (!t || t->x->expires_ms > now_ms)
            break;
        delete_task(self, t);
        self->totals.expired++;
        n++;
    }
    while (n < max_steps && self->keys.head && self->keys.head->expires_ms <= now_ms) {
        keys_retained_delete(self, self->keys.head);
        n++;
    }
    return n;
}

int64_t tq_store_next_expiry(const tq_store_t *self, int64_t now_ms)
{
    tq_task_t *t = ttl_first(self);
    if (!t)
        return -1;
    return t->x->expires_ms > now_ms ? t->x->expires_ms - now_ms : 0;
}

const tq_store_totals_t *tq_store_totals(const tq_store_t *self) { return &self->totals; }

void tq_store_reset_totals(tq_store_t *self) { memset(&self->totals, 0, sizeof self->totals); }

void tq_store_counts(const tq_store_t *self, tq_queue_counts_t *out) { *out = self->all_counts; }

int tq_task_finished(const tq_task_t *t) { return t->state >= TQ_TASK_DONE; }

uint8_t tq_task_wire_status(const tq_task_t *t)
{
    switch (t->state) {
    case TQ_TASK_DONE: return TQ_ST_DONE;
    case TQ_TASK_FAILED: return TQ_ST_FAILED;
    case TQ_TASK_CANCELLED: return TQ_ST_CANCELLED;
    case TQ_TASK_DEAD: return TQ_ST_DEAD;
    default: return TQ_ST_UNKNOWN;
    }
}

const char *tq_task_state_name(tq_task_state_t st)
{
    static const char *names[] = {"queued", "leased", "done", "failed", "cancelled", "dead"};
    return (size_t)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

int tq_task_waiter_add(tq_task_t *t, void *p)
{
    tq_task_ext_t *x = ext(t);
    for (size_t i = 0; i < x->nwaiters; i++)
        if (x->waiters[i] == p)
            return -1;
    if (x->nwaiters == x->capwaiters) {
        TQ_ASSERT(x->capwaiters < UINT32_MAX / 2);
        x->capwaiters = x->capwaiters ? x->capwaiters * 2 : 2;
        x->waiters = tq_realloc(x->waiters, x->capwaiters * sizeof *x->waiters);
    }
    x->waiters[x->nwaiters++] = p;
    return 0;
}

int tq_task_waiter_remove(tq_task_t *t, void *p)
{
    tq_task_ext_t *x = t->x;
    for (size_t i = 0; x && i < x->nwaiters; i++)
        if (x->waiters[i] == p) {
            x->waiters[i] = x->waiters[--x->nwaiters];
            return 0;
        }
    return -1;
}

void tq_task_waiters_clear(tq_task_t *t)
{
    if (t->x)
        t->x->nwaiters = 0;
}

/* ---- recovery ------------------------------------------------------------ */

void tq_store_drop(tq_store_t *self, tq_task_t *t)
{
    TQ_ASSERT(t->state != TQ_TASK_LEASED && tq_task_nwaiters(t) == 0);
    if (t->state == TQ_TASK_QUEUED)
        dequeue(self, t);
    else
        ttl_unlink(ttl_list_of(self, t), t);
    count_dec(t);
    task_forget(self, t);
}

tq_task_t *tq_store_restore(tq_store_t *self, const tq_task_image_t *img, tq_err_t *err)
{
    tq_task_t *old = tq_store_get(self, img->id);
    if (old)
        tq_store_drop(self, old);
    if (!img->id) {
        tq_err_set(err, TQ_ERR_MALFORMED, "record not valid (task id 0)");
        return NULL;
    }
    if (!tq_store_has_room(self, 1)) {
        tq_err_set(err, TQ_ERR_FULL, "more tasks than --max-tasks");
        return NULL;
    }
    if (img->state > TQ_TASK_DEAD || !tq_name_valid(img->fn) ||
        (img->queue.len && !tq_name_valid(img->queue)) || img->skey.len > TQ_MAX_KEY ||
        img->blob.len > UINT32_MAX || img->payload.len > UINT32_MAX) {
        tq_err_set(err, TQ_ERR_MALFORMED, "record not valid");
        return NULL;
    }
    tq_bytes_t qname = img->queue.len ? img->queue : tq_bytes_str("default");
    /* fn first: interning may grow the table and move qe */
    const char *fn = tq_store_intern(self, img->fn);
    name_ent_t *qe = fn ? store_name_entry(self, qname) : NULL;
    if (!qe) {
        tq_err_set(err, TQ_ERR_TOO_MANY, "too many names");
        return NULL;
    }
    int keep_key = 0;
    if (img->skey.len) {
        if (tq_store_key_find(self, img->skey, 0)) {
            /* held by another task: the older claim wins, this task keeps
             * no key */
        } else if (keys_prepare(self, img->skey, err) < 0) {
            return NULL;
        } else {
            keep_key = 1;
        }
    }
    tq_task_state_t st = img->state == TQ_TASK_LEASED ? TQ_TASK_QUEUED : img->state;
    tq_bytes_t payload = st == TQ_TASK_QUEUED                         ? img->blob
                         : st == TQ_TASK_DEAD || st == TQ_TASK_FAILED ? img->payload
                                                                      : (tq_bytes_t){NULL, 0};
    tq_task_t *t = task_alloc(self, keep_key ? img->skey.len : 0, payload.data, payload.len);
    if (!t) {
        tq_err_set(err, TQ_ERR_TOO_LARGE, "out of memory");
        return NULL;
    }
    t->id = img->id;
    if (img->attempt || img->releases || img->retried)
        tq_task_set_counts(t, img->attempt, img->releases, img->retried);
    t->retries = img->retries;
    t->cls = store_tclass_ref(self, store_queue_heap(self, store_queue_get(self, qe), fn),
                              img->priority, img->timeout_ms);
    t->created_ms = img->created_ms;
    if (img->keyed)
        t->flags |= TQ_TASK_F_KEYED;
    t->state = (uint8_t)st;
    count_inc(t);
    if (st == TQ_TASK_QUEUED) {
        set_not_before(t, img->not_before_ms);
        enqueue(self, t);
    } else {
        tq_task_ext_t *x = ext(t);
        set_data(t, img->blob.data, img->blob.len);
        x->finished_ms = img->finished_ms;
        x->expires_ms = st == TQ_TASK_DEAD ? 0 : img->finished_ms + self->cfg.unfetched_ttl_ms;
        ttl_add(self, t);
        if (img->fetched)
            tq_store_restore_fetched(self, t, img->fetched_ms);
    }
    tq_taskidx_put(self->tasks, t->id, t);
    if (keep_key)
        keys_session_attach(self, t, img->skey);
    if (t->id >= self->next_id)
        self->next_id = t->id + 1;
    return t;
}

void tq_store_restore_fetched(tq_store_t *self, tq_task_t *t, int64_t fetched_ms)
{
    TQ_ASSERT(tq_task_finished(t));
    if (t->state == TQ_TASK_DEAD) {
        t->flags |= TQ_TASK_F_FETCHED | TQ_TASK_F_ACKED; /* dead tasks have no TTL */
        return;
    }
    if (!tq_task_fetched(t)) {
        t->flags |= TQ_TASK_F_FETCHED;
        ttl_unlink(&self->unfetched, t);
    } else {
        ttl_unlink(&self->fetched, t);
    }
    t->flags |= TQ_TASK_F_ACKED;
    t->x->expires_ms = fetched_ms + self->cfg.result_ttl_ms;
    /* recovery replays in journal order, which is nearly fetch order; a
     * slightly out-of-order list only delays a deletion to a later sweep */
    ttl_append(&self->fetched, t);
}
