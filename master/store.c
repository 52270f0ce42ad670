/* store.c - tasks, queues, priority heaps, results and TTLs. See store.h. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#include "tq_idmap.h"
#include "tq_util.h"

/* The binary heap of queued tasks of one (queue, function) pair. */
struct tq_fnheap {
    const char *fn;
    tq_task_t **items;
    size_t n, cap;
};

struct tq_queue {
    const char *name;
    tq_fnheap_t **heaps;
    size_t nheaps;
    size_t queued_total; /* runnable: in the heaps */
    tq_queue_counts_t counts;
    int paused;
    uint32_t default_timeout_ms;
};

/* A min-heap of tasks on a time (lease deadlines, delays): key reads the
 * time, idx points at the task's index field. */
typedef struct {
    tq_task_t **a;
    size_t n, cap;
    int64_t (*key)(const tq_task_t *);
    size_t *(*idx)(tq_task_t *);
} theap_t;

/* Interned name: the string, and the queue of that name if one exists. */
typedef struct {
    char *name;
    size_t len;
    uint64_t hash;
    tq_queue_t *queue;
} name_ent_t;

typedef struct {
    tq_task_t *head, *tail;
} ttl_list_t;

/* Idempotency key -> task id, with its own expiry. Entries sit on one
 * list in creation order (the retention is fixed for a run, so the list
 * is sorted by expiry up to wall clock steps) and in a chained hash. */
typedef struct tq_key {
    struct tq_key *hnext;       /* hash chain */
    struct tq_key *prev, *next; /* expiry list (retained keys only) */
    uint64_t hash;
    uint64_t id;
    int64_t expires_ms;          /* wall clock; INT64_MAX for a session key */
    int session;                 /* lives with its task, not on the list */
    size_t len;
    uint8_t key[];
} key_ent_t;

struct tq_store {
    tq_store_cfg_t cfg;
    tq_idmap_t *tasks;
    uint64_t next_id;
    uint64_t next_seq;
    name_ent_t *names; /* open addressing, capacity a power of two */
    size_t nnames, names_cap;
    tq_queue_t **queues;
    size_t nqueues;
    ttl_list_t unfetched, fetched;
    key_ent_t **kbuckets; /* capacity a power of two */
    size_t nkeys, kcap;
    key_ent_t *khead, *ktail;
    tq_task_t *all_head, *all_tail; /* every task, creation order */
    tq_store_task_fn obs;
    tq_store_key_fn kobs;
    void *obs_arg;
    theap_t dl;      /* leased tasks by deadline_ms */
    theap_t delayed; /* queued tasks not runnable yet, by not_before_ms */
    ttl_list_t dead; /* dead tasks, in the order they died */
    tq_store_totals_t totals;
};

/* ---- names ---------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void names_grow(tq_store_t *self) {
    size_t ncap = self->names_cap ? self->names_cap * 2 : 64;
    name_ent_t *n = tq_calloc(ncap, sizeof *n);
    for (size_t i = 0; i < self->names_cap; i++) {
        name_ent_t *e = &self->names[i];
        if (!e->name)
            continue;
        size_t j = (size_t)e->hash & (ncap - 1);
        while (n[j].name)
            j = (j + 1) & (ncap - 1);
        n[j] = *e;
    }
    free(self->names);
    self->names = n;
    self->names_cap = ncap;
}

/* The entry for name, created if absent; NULL when the table is full. */
static name_ent_t *name_entry(tq_store_t *self, tq_bytes_t name) {
    uint64_t h = hash_bytes(name.data, name.len);
    if (self->names_cap) {
        size_t j = (size_t)h & (self->names_cap - 1);
        while (self->names[j].name) {
            name_ent_t *e = &self->names[j];
            if (e->hash == h && e->len == name.len && memcmp(e->name, name.data, name.len) == 0)
                return e;
            j = (j + 1) & (self->names_cap - 1);
        }
    }
    if (self->nnames >= TQ_STORE_MAX_NAMES)
        return NULL;
    if ((self->nnames + 1) * 2 > self->names_cap)
        names_grow(self);
    size_t j = (size_t)h & (self->names_cap - 1);
    while (self->names[j].name)
        j = (j + 1) & (self->names_cap - 1);
    name_ent_t *e = &self->names[j];
    e->name = tq_malloc(name.len + 1);
    memcpy(e->name, name.data, name.len);
    e->name[name.len] = '\0';
    e->len = name.len;
    e->hash = h;
    e->queue = NULL;
    self->nnames++;
    return e;
}

const char *tq_store_intern(tq_store_t *self, tq_bytes_t name) {
    name_ent_t *e = name_entry(self, name);
    return e ? e->name : NULL;
}

/* ---- idempotency keys --------------------------------------------------- */

static key_ent_t *key_lookup(const tq_store_t *self, tq_bytes_t key, uint64_t h) {
    if (!self->kcap)
        return NULL;
    for (key_ent_t *e = self->kbuckets[h & (self->kcap - 1)]; e; e = e->hnext)
        if (e->hash == h && e->len == key.len && memcmp(e->key, key.data, key.len) == 0)
            return e;
    return NULL;
}

static void keys_grow(tq_store_t *self) {
    size_t ncap = self->kcap ? self->kcap * 2 : 64;
    key_ent_t **nb = tq_calloc(ncap, sizeof *nb);
    for (size_t i = 0; i < self->kcap; i++) {
        key_ent_t *e = self->kbuckets[i];
        while (e) {
            key_ent_t *next = e->hnext;
            size_t j = e->hash & (ncap - 1);
            e->hnext = nb[j];
            nb[j] = e;
            e = next;
        }
    }
    free(self->kbuckets);
    self->kbuckets = nb;
    self->kcap = ncap;
}

static void key_delete(tq_store_t *self, key_ent_t *e) {
    if (!e->session && self->kobs)
        self->kobs(self->obs_arg, e, 1);
    key_ent_t **pp = &self->kbuckets[e->hash & (self->kcap - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (!e->session) {
        if (e->prev)
            e->prev->next = e->next;
        else
            self->khead = e->next;
        if (e->next)
            e->next->prev = e->prev;
        else
            self->ktail = e->prev;
    }
    self->nkeys--;
    free(e);
}

/* Put e (filled in but for hnext/prev/next) in the hash, and on the
 * expiry list unless it is a session key. */
static void key_insert(tq_store_t *self, key_ent_t *e) {
    if ((self->nkeys + 1) > self->kcap)
        keys_grow(self);
    size_t j = e->hash & (self->kcap - 1);
    e->hnext = self->kbuckets[j];
    self->kbuckets[j] = e;
    e->prev = e->next = NULL;
    if (!e->session) {
        e->prev = self->ktail;
        if (self->ktail)
            self->ktail->next = e;
        else
            self->khead = e;
        self->ktail = e;
    }
    self->nkeys++;
}

static void notify(tq_store_t *self, tq_task_t *t, tq_store_event_t ev) {
    if (self->obs)
        self->obs(self->obs_arg, t, ev);
}

void tq_store_observe(tq_store_t *self, tq_store_task_fn fn, tq_store_key_fn kfn, void *arg) {
    self->obs = fn;
    self->kobs = kfn;
    self->obs_arg = arg;
}

tq_key_t *tq_store_key_first(const tq_store_t *self) { return self->khead; }
tq_key_t *tq_key_next(const tq_key_t *k) { return k->next; }
tq_bytes_t tq_key_bytes(const tq_key_t *k) {
    tq_bytes_t b = {k->key, k->len};
    return b;
}
uint64_t tq_key_id(const tq_key_t *k) { return k->id; }
int64_t tq_key_expires(const tq_key_t *k) { return k->expires_ms; }

uint64_t tq_store_key_find(const tq_store_t *self, tq_bytes_t key, int64_t now_ms) {
    if (key.len == 0 || key.len > TQ_MAX_KEY)
        return 0;
    key_ent_t *e = key_lookup(self, key, hash_bytes(key.data, key.len));
    return e && e->expires_ms > now_ms ? e->id : 0;
}

size_t tq_store_nkeys(const tq_store_t *self) { return self->nkeys; }

/* ---- heaps ------------------------------------------------------------ */

/* 1 if a runs before b. */
static int task_before(const tq_task_t *a, const tq_task_t *b) {
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static void heap_set(tq_fnheap_t *h, size_t i, tq_task_t *t) {
    h->items[i] = t;
    t->heap_idx = i;
}

static void heap_up(tq_fnheap_t *h, size_t i) {
    tq_task_t *t = h->items[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!task_before(t, h->items[p]))
            break;
        heap_set(h, i, h->items[p]);
        i = p;
    }
    heap_set(h, i, t);
}

static void heap_down(tq_fnheap_t *h, size_t i) {
    tq_task_t *t = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        tq_task_t *bt = t;
        if (l < h->n && task_before(h->items[l], bt)) {
            best = l;
            bt = h->items[l];
        }
        if (l + 1 < h->n && task_before(h->items[l + 1], bt))
            best = l + 1;
        if (best == i)
            break;
        heap_set(h, i, h->items[best]);
        i = best;
    }
    heap_set(h, i, t);
}

static void heap_push(tq_fnheap_t *h, tq_task_t *t) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->items = tq_realloc(h->items, h->cap * sizeof *h->items);
    }
    h->items[h->n] = t;
    t->heap_idx = h->n;
    h->n++;
    heap_up(h, h->n - 1);
}

static void heap_remove(tq_fnheap_t *h, tq_task_t *t) {
    size_t i = t->heap_idx;
    TQ_ASSERT(i < h->n && h->items[i] == t);
    h->n--;
    if (i != h->n) {
        tq_task_t *moved = h->items[h->n];
        heap_set(h, i, moved);
        heap_up(h, i);
        heap_down(h, moved->heap_idx);
    }
    t->heap_idx = (size_t)-1;
}

/* ---- min-heaps on a time ---------------------------------------------- */

static int64_t deadline_key(const tq_task_t *t) { return t->deadline_ms; }
static size_t *deadline_idx(tq_task_t *t) { return &t->dl_idx; }
static int64_t delay_key(const tq_task_t *t) { return t->not_before_ms; }
static size_t *delay_idx(tq_task_t *t) { return &t->heap_idx; }

static void theap_set(theap_t *h, size_t i, tq_task_t *t) {
    h->a[i] = t;
    *h->idx(t) = i;
}

static void theap_up(theap_t *h, size_t i) {
    tq_task_t *t = h->a[i];
    int64_t k = h->key(t);
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->key(h->a[p]) <= k)
            break;
        theap_set(h, i, h->a[p]);
        i = p;
    }
    theap_set(h, i, t);
}

static void theap_down(theap_t *h, size_t i) {
    tq_task_t *t = h->a[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        int64_t bk = h->key(t);
        if (l < h->n && h->key(h->a[l]) < bk) {
            best = l;
            bk = h->key(h->a[l]);
        }
        if (l + 1 < h->n && h->key(h->a[l + 1]) < bk)
            best = l + 1;
        if (best == i)
            break;
        theap_set(h, i, h->a[best]);
        i = best;
    }
    theap_set(h, i, t);
}

static void theap_push(theap_t *h, tq_task_t *t) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->a = tq_realloc(h->a, h->cap * sizeof *h->a);
    }
    theap_set(h, h->n, t);
    h->n++;
    theap_up(h, h->n - 1);
}

static void theap_remove(theap_t *h, tq_task_t *t) {
    size_t i = *h->idx(t);
    TQ_ASSERT(i < h->n && h->a[i] == t);
    h->n--;
    if (i != h->n) {
        tq_task_t *moved = h->a[h->n];
        theap_set(h, i, moved);
        theap_up(h, i);
        theap_down(h, *h->idx(moved));
    }
    *h->idx(t) = (size_t)-1;
}

static tq_task_t *theap_top(const theap_t *h) { return h->n ? h->a[0] : NULL; }

/* Drop t's deadline, if it has one. */
static void dl_clear(tq_store_t *self, tq_task_t *t) {
    if (!t->deadline_ms)
        return;
    theap_remove(&self->dl, t);
    t->deadline_ms = 0;
}

void tq_store_set_deadline(tq_store_t *self, tq_task_t *t, int64_t deadline_ms) {
    TQ_ASSERT(t->state == TQ_TASK_LEASED);
    dl_clear(self, t);
    t->deadline_ms = deadline_ms <= 0 ? 1 : deadline_ms; /* 0 means none */
    theap_push(&self->dl, t);
}

tq_task_t *tq_store_overdue(const tq_store_t *self, int64_t now_ms) {
    tq_task_t *t = theap_top(&self->dl);
    return t && t->deadline_ms <= now_ms ? t : NULL;
}

/* ---- queues ----------------------------------------------------------- */

static tq_queue_t *queue_get(tq_store_t *self, name_ent_t *e) {
    if (!e->queue) {
        tq_queue_t *q = tq_calloc(1, sizeof *q);
        q->name = e->name;
        e->queue = q;
        self->queues = tq_realloc(self->queues, (self->nqueues + 1) * sizeof *self->queues);
        self->queues[self->nqueues++] = q;
    }
    return e->queue;
}

static tq_fnheap_t *queue_heap(tq_queue_t *q, const char *fn) {
    for (size_t i = 0; i < q->nheaps; i++)
        if (q->heaps[i]->fn == fn)
            return q->heaps[i];
    tq_fnheap_t *h = tq_calloc(1, sizeof *h);
    h->fn = fn;
    q->heaps = tq_realloc(q->heaps, (q->nheaps + 1) * sizeof *q->heaps);
    q->heaps[q->nheaps++] = h;
    return h;
}

size_t tq_store_nqueues(const tq_store_t *self) { return self->nqueues; }
tq_queue_t *tq_store_queue_at(const tq_store_t *self, size_t i) {
    return i < self->nqueues ? self->queues[i] : NULL;
}
const char *tq_queue_name(const tq_queue_t *q) { return q->name; }
const tq_queue_counts_t *tq_queue_counts(const tq_queue_t *q) { return &q->counts; }
size_t tq_queue_queued(const tq_queue_t *q) { return q->queued_total; }
void tq_queue_set_paused(tq_queue_t *q, int paused) { q->paused = paused != 0; }
int tq_queue_paused(const tq_queue_t *q) { return q->paused; }
void tq_queue_set_default_timeout(tq_queue_t *q, uint32_t timeout_ms) {
    q->default_timeout_ms = timeout_ms;
}

tq_queue_t *tq_store_queue(tq_store_t *self, tq_bytes_t name) {
    name_ent_t *e = name_entry(self, name);
    return e ? queue_get(self, e) : NULL;
}

tq_task_t *tq_queue_best(const tq_queue_t *q, const char *const *fns, size_t nfns) {
    if (q->queued_total == 0 || q->paused)
        return NULL;
    tq_task_t *best = NULL;
    for (size_t i = 0; i < q->nheaps; i++) {
        tq_fnheap_t *h = q->heaps[i];
        if (h->n == 0)
            continue;
        int serves = 0;
        for (size_t j = 0; j < nfns && !serves; j++)
            serves = fns[j] == h->fn;
        if (serves && (!best || task_before(h->items[0], best)))
            best = h->items[0];
    }
    return best;
}

/* ---- per-state counters ------------------------------------------------ */

static size_t *count_slot(tq_queue_t *q, tq_task_state_t st) {
    switch (st) {
    case TQ_TASK_QUEUED: return &q->counts.queued;
    case TQ_TASK_LEASED: return &q->counts.running;
    case TQ_TASK_DONE: return &q->counts.done;
    case TQ_TASK_FAILED:
    case TQ_TASK_DEAD: return &q->counts.failed;
    case TQ_TASK_CANCELLED: return &q->counts.cancelled;
    }
    TQ_ASSERT(0);
    return NULL;
}

static void count_inc(tq_task_t *t) {
    (*count_slot(t->queue, t->state))++;
    if (t->state == TQ_TASK_DEAD)
        t->queue->counts.dead++;
}

static void count_dec(tq_task_t *t) {
    size_t *from = count_slot(t->queue, t->state);
    TQ_ASSERT(*from > 0);
    (*from)--;
    if (t->state == TQ_TASK_DEAD)
        t->queue->counts.dead--;
}

static void set_state(tq_task_t *t, tq_task_state_t st) {
    count_dec(t);
    t->state = st;
    count_inc(t);
}

/* ---- TTL lists -------------------------------------------------------- */

static void ttl_append(ttl_list_t *l, tq_task_t *t) {
    t->ttl_next = NULL;
    t->ttl_prev = l->tail;
    if (l->tail)
        l->tail->ttl_next = t;
    else
        l->head = t;
    l->tail = t;
}

/* The list finished t is on: by expiry, or the dead list. */
static ttl_list_t *ttl_list_of(tq_store_t *self, tq_task_t *t) {
    if (t->state == TQ_TASK_DEAD)
        return &self->dead;
    return t->fetched ? &self->fetched : &self->unfetched;
}

/* Put finished t on its list: appended to a TTL list (the TTLs are fixed
 * for a run, so that keeps it sorted by expiry), or into the dead list
 * in id order (tasks die in nearly id order: the walk from the tail is
 * short). */
static void ttl_add(tq_store_t *self, tq_task_t *t) {
    ttl_list_t *l = ttl_list_of(self, t);
    if (t->state != TQ_TASK_DEAD) {
        ttl_append(l, t);
        return;
    }
    tq_task_t *before = l->tail;
    while (before && before->id > t->id)
        before = before->ttl_prev;
    t->ttl_prev = before;
    t->ttl_next = before ? before->ttl_next : l->head;
    if (t->ttl_next)
        t->ttl_next->ttl_prev = t;
    else
        l->tail = t;
    if (before)
        before->ttl_next = t;
    else
        l->head = t;
}

static void ttl_unlink(ttl_list_t *l, tq_task_t *t) {
    if (t->ttl_prev)
        t->ttl_prev->ttl_next = t->ttl_next;
    else
        l->head = t->ttl_next;
    if (t->ttl_next)
        t->ttl_next->ttl_prev = t->ttl_prev;
    else
        l->tail = t->ttl_prev;
    t->ttl_prev = t->ttl_next = NULL;
}

/* ---- store ------------------------------------------------------------ */

tq_store_t *tq_store_new(const tq_store_cfg_t *cfg) {
    tq_store_t *self = tq_calloc(1, sizeof *self);
    self->cfg = *cfg;
    self->tasks = tq_idmap_new();
    self->next_id = cfg->first_id ? cfg->first_id : 1;
    self->next_seq = 1;
    self->dl.key = deadline_key;
    self->dl.idx = deadline_idx;
    self->delayed.key = delay_key;
    self->delayed.idx = delay_idx;
    return self;
}

static void task_free(tq_task_t *t) {
    free(t->payload);
    free(t->data);
    free(t->waiters);
    free(t);
}

static void free_task_cb(uint64_t id, void *value, void *arg) {
    (void)id;
    (void)arg;
    tq_task_t *t = value;
    free(t->skey); /* session keys are on no list: their task owns them */
    task_free(t);
}

void tq_store_destroy(tq_store_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tq_store_t *self = *self_p;
    tq_idmap_each(self->tasks, free_task_cb, NULL);
    tq_idmap_destroy(&self->tasks);
    while (self->khead) {
        key_ent_t *e = self->khead;
        self->khead = e->next;
        free(e);
    }
    free(self->kbuckets);
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

int tq_store_has_room(const tq_store_t *self, size_t n) {
    return tq_idmap_size(self->tasks) + n <= self->cfg.max_tasks;
}

/* A fresh key entry for key (1..TQ_MAX_KEY bytes), or NULL when
 * max_tasks keys are held (*err_code FULL) or memory is short (TOO_LARGE).
 * A held entry for the same key (past retention: the caller checked)
 * is deleted first. */
static key_ent_t *key_new(tq_store_t *self, tq_bytes_t key, int *err_code) {
    uint64_t kh = hash_bytes(key.data, key.len);
    key_ent_t *old = key_lookup(self, key, kh);
    if (old && old->session) {
        /* a session key still held by a live task: cannot happen, the
         * caller looked the key up first */
        *err_code = TQ_ERR_INTERNAL;
        return NULL;
    }
    if (old)
        key_delete(self, old);
    if (self->nkeys >= self->cfg.max_tasks) {
        *err_code = TQ_ERR_FULL;
        return NULL;
    }
    key_ent_t *ke = malloc(sizeof *ke + key.len);
    if (!ke) {
        *err_code = TQ_ERR_TOO_LARGE;
        return NULL;
    }
    memset(ke, 0, sizeof *ke);
    memcpy(ke->key, key.data, key.len);
    ke->len = key.len;
    ke->hash = kh;
    return ke;
}

static void all_append(tq_store_t *self, tq_task_t *t) {
    t->all_next = NULL;
    t->all_prev = self->all_tail;
    if (self->all_tail)
        self->all_tail->all_next = t;
    else
        self->all_head = t;
    self->all_tail = t;
}

/* Unlink t from every store structure but its heap/TTL list (the caller
 * did those), drop its session key, free it. */
static void task_forget(tq_store_t *self, tq_task_t *t) {
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        self->all_head = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    else
        self->all_tail = t->all_prev;
    if (t->skey)
        key_delete(self, t->skey);
    tq_idmap_remove(self->tasks, t->id);
    task_free(t);
}

tq_task_t *tq_store_first(const tq_store_t *self) { return self->all_head; }

/* Queued t leaves its heap (or the delayed heap). */
static void dequeue(tq_store_t *self, tq_task_t *t) {
    if (t->not_before_ms) {
        theap_remove(&self->delayed, t);
        t->not_before_ms = 0;
        t->queue->counts.delayed--;
        return;
    }
    heap_remove(t->heap, t);
    t->queue->queued_total--;
}

/* Queued t enters its heap, or the delayed heap while not_before_ms is
 * set. */
static void enqueue(tq_store_t *self, tq_task_t *t) {
    if (t->not_before_ms) {
        theap_push(&self->delayed, t);
        t->queue->counts.delayed++;
        return;
    }
    heap_push(t->heap, t);
    t->queue->queued_total++;
}

void tq_store_delay(tq_store_t *self, tq_task_t *t, int64_t not_before_ms) {
    TQ_ASSERT(t->state == TQ_TASK_QUEUED);
    dequeue(self, t);
    t->not_before_ms = not_before_ms > 0 ? not_before_ms : 0;
    enqueue(self, t);
}

size_t tq_store_promote(tq_store_t *self, int64_t now_ms, size_t max) {
    size_t n = 0;
    tq_task_t *t;
    while (n < max && (t = theap_top(&self->delayed)) != NULL && t->not_before_ms <= now_ms) {
        dequeue(self, t);
        enqueue(self, t);
        n++;
    }
    return n;
}

int64_t tq_store_next_due(const tq_store_t *self, int64_t now_ms) {
    tq_task_t *t = theap_top(&self->delayed);
    if (!t)
        return -1;
    return t->not_before_ms > now_ms ? t->not_before_ms - now_ms : 0;
}

static tq_task_t *add_task(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                           int session, int *err_code) {
    if (!tq_store_has_room(self, 1)) {
        *err_code = TQ_ERR_FULL;
        return NULL;
    }
    tq_bytes_t qname = spec->queue.len ? spec->queue : tq_bytes_str("default");
    name_ent_t *qe = name_entry(self, qname);
    const char *fn = qe ? tq_store_intern(self, spec->fn) : NULL;
    if (!fn) {
        *err_code = TQ_ERR_TOO_MANY;
        return NULL;
    }
    if (spec->key.len > TQ_MAX_KEY) {
        *err_code = TQ_ERR_TOO_LARGE;
        return NULL;
    }
    key_ent_t *ke = NULL;
    if (spec->key.len && !(ke = key_new(self, spec->key, err_code)))
        return NULL;
    /* The payload size is the peer's choice (bounded by --max-payload):
     * plain malloc, failing into a protocol error. */
    uint8_t *payload = malloc(spec->payload.len ? spec->payload.len : 1);
    if (!payload) {
        free(ke);
        *err_code = TQ_ERR_TOO_LARGE;
        return NULL;
    }
    if (spec->payload.len)
        memcpy(payload, spec->payload.data, spec->payload.len);
    tq_task_t *t = tq_calloc(1, sizeof *t);
    t->id = self->next_id++;
    t->seq = self->next_seq++;
    t->priority = spec->priority;
    t->retries = spec->retries;
    t->fn = fn;
    t->queue = queue_get(self, qe);
    t->timeout_ms = spec->timeout_ms ? spec->timeout_ms : t->queue->default_timeout_ms;
    t->heap = queue_heap(t->queue, fn);
    t->payload = payload;
    t->payload_len = spec->payload.len;
    t->created_ms = now_ms;
    t->not_before_ms = spec->not_before_ms > now_ms ? spec->not_before_ms : 0;
    t->state = TQ_TASK_QUEUED;
    count_inc(t);
    enqueue(self, t);
    tq_idmap_put(self->tasks, t->id, t);
    all_append(self, t);
    self->totals.submitted++;
    if (ke) {
        ke->id = t->id;
        ke->session = session;
        ke->expires_ms = session ? INT64_MAX : now_ms + self->cfg.key_retention_ms;
        key_insert(self, ke);
        if (session)
            t->skey = ke;
        else
            t->keyed = 1;
    }
    notify(self, t, TQ_SEV_ADDED);
    if (ke && !session && self->kobs)
        self->kobs(self->obs_arg, ke, 0);
    return t;
}

tq_task_t *tq_store_add(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                        int *err_code) {
    return add_task(self, spec, now_ms, 0, err_code);
}

tq_task_t *tq_store_add_session(tq_store_t *self, const tq_task_spec_t *spec, int64_t now_ms,
                                int *err_code) {
    return add_task(self, spec, now_ms, 1, err_code);
}

void tq_store_remove_queued(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && t->nwaiters == 0);
    notify(self, t, TQ_SEV_DELETED);
    dequeue(self, t);
    count_dec(t);
    self->totals.submitted--;
    /* Batches are undone newest first, so its key (if any) is the newest. */
    if (!t->skey && self->ktail && self->ktail->id == t->id)
        key_delete(self, self->ktail);
    task_forget(self, t);
}

const tq_store_cfg_t *tq_store_cfg(const tq_store_t *self) { return &self->cfg; }

tq_task_t *tq_store_get(const tq_store_t *self, uint64_t id) {
    return id ? tq_idmap_get(self->tasks, id) : NULL;
}

size_t tq_store_size(const tq_store_t *self) { return tq_idmap_size(self->tasks); }

void tq_store_lease(tq_store_t *self, tq_task_t *t, void *worker) {
    TQ_ASSERT(t->state == TQ_TASK_QUEUED && !t->not_before_ms);
    dequeue(self, t);
    set_state(t, TQ_TASK_LEASED);
    t->attempt++;
    t->worker = worker;
    self->totals.dispatched++;
    notify(self, t, TQ_SEV_LEASED);
}

void tq_store_unlease(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(t->state == TQ_TASK_LEASED && t->attempt > 0);
    dl_clear(self, t);
    t->attempt--;
    t->worker = NULL;
    set_state(t, TQ_TASK_QUEUED);
    enqueue(self, t);
    self->totals.dispatched--;
    notify(self, t, TQ_SEV_REQUEUED);
}

void tq_store_requeue(tq_store_t *self, tq_task_t *t, int released, int64_t not_before_ms) {
    TQ_ASSERT(t->state == TQ_TASK_LEASED);
    dl_clear(self, t);
    if (released)
        t->releases++;
    t->worker = NULL;
    set_state(t, TQ_TASK_QUEUED);
    t->not_before_ms = not_before_ms > 0 ? not_before_ms : 0;
    enqueue(self, t); /* same seq: back at its old place */
    self->totals.requeued++;
    notify(self, t, TQ_SEV_REQUEUED);
}

void tq_store_retry(tq_store_t *self, tq_task_t *t, int64_t not_before_ms) {
    TQ_ASSERT(t->state == TQ_TASK_LEASED && tq_task_can_retry(t));
    dl_clear(self, t);
    t->retried++;
    t->worker = NULL;
    set_state(t, TQ_TASK_QUEUED);
    t->not_before_ms = not_before_ms > 0 ? not_before_ms : 0;
    enqueue(self, t); /* same seq: back at its old place */
    self->totals.retried++;
    notify(self, t, TQ_SEV_REQUEUED);
}

int tq_task_can_retry(const tq_task_t *t) { return t->retried < t->retries; }

uint32_t tq_task_lost(const tq_task_t *t) {
    uint64_t kept = (uint64_t)t->releases + t->retried;
    return t->attempt > kept ? (uint32_t)(t->attempt - kept) : 0;
}

void tq_store_finish(tq_store_t *self, tq_task_t *t, tq_task_state_t st, const void *data,
                     size_t len, int64_t now_ms) {
    TQ_ASSERT(!tq_task_finished(t));
    TQ_ASSERT(st >= TQ_TASK_DONE);
    if (t->state == TQ_TASK_QUEUED)
        dequeue(self, t);
    dl_clear(self, t);
    t->worker = NULL;
    set_state(t, st);
    if (st != TQ_TASK_DEAD) {
        free(t->payload); /* not needed any more: keep memory to the results */
        t->payload = NULL;
        t->payload_len = 0;
    }
    free(t->data);
    t->data = NULL;
    t->data_len = 0;
    if (len) {
        t->data = malloc(len);
        if (t->data) {
            memcpy(t->data, data, len);
            t->data_len = len;
        } else {
            static const char oom[] = "master could not store the result (out of memory)";
            t->data = tq_memdup(oom, sizeof oom - 1);
            t->data_len = sizeof oom - 1;
        }
    }
    t->finished_ms = now_ms;
    t->expires_ms = st == TQ_TASK_DEAD ? 0 : now_ms + self->cfg.unfetched_ttl_ms;
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

void tq_store_fetched(tq_store_t *self, tq_task_t *t, int64_t now_ms) {
    TQ_ASSERT(tq_task_finished(t));
    if (t->fetched)
        return;
    if (t->state == TQ_TASK_DEAD) {
        t->fetched = 1; /* no TTL: it stays on the dead list */
        return;
    }
    t->fetched = 1;
    ttl_unlink(&self->unfetched, t);
    t->expires_ms = now_ms + self->cfg.result_ttl_ms;
    ttl_append(&self->fetched, t);
}

void tq_store_ack(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(tq_task_finished(t));
    if (t->acked)
        return;
    t->acked = 1;
    if (t->skey) {
        key_delete(self, t->skey);
        t->skey = NULL;
    }
    notify(self, t, TQ_SEV_ACKED);
}

static void delete_task(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(tq_task_finished(t) && t->nwaiters == 0);
    notify(self, t, TQ_SEV_DELETED);
    ttl_unlink(ttl_list_of(self, t), t);
    count_dec(t);
    task_forget(self, t);
}

tq_task_t *tq_store_dead_first(const tq_store_t *self) { return self->dead.head; }

tq_task_t *tq_store_dead_after(const tq_store_t *self, uint64_t id) {
    tq_task_t *t = tq_store_get(self, id);
    if (t && t->state == TQ_TASK_DEAD)
        return t->ttl_next;
    for (t = self->dead.head; t && t->id <= id; t = t->ttl_next)
        ;
    return t;
}
tq_task_t *tq_store_dead_next(const tq_task_t *t) { return t->ttl_next; }

void tq_store_revive(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(t->state == TQ_TASK_DEAD && t->nwaiters == 0);
    ttl_unlink(ttl_list_of(self, t), t);
    free(t->data);
    t->data = NULL;
    t->data_len = 0;
    t->releases = t->attempt; /* no lost leases from here */
    t->retried = 0;
    t->fetched = 0;
    t->acked = 0;
    t->finished_ms = 0;
    t->expires_ms = 0;
    set_state(t, TQ_TASK_QUEUED);
    enqueue(self, t);
    self->totals.revived++;
    notify(self, t, TQ_SEV_REVIVED);
}

void tq_store_purge(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(t->state == TQ_TASK_DEAD);
    self->totals.purged++;
    delete_task(self, t);
}

size_t tq_store_sweep(tq_store_t *self, int64_t now_ms, size_t max_steps) {
    size_t n = 0;
    while (n < max_steps) {
        tq_task_t *a = self->unfetched.head, *b = self->fetched.head;
        tq_task_t *t = a && (!b || a->expires_ms <= b->expires_ms) ? a : b;
        if (!t || t->expires_ms > now_ms)
            break;
        delete_task(self, t);
        self->totals.expired++;
        n++;
    }
    while (n < max_steps && self->khead && self->khead->expires_ms <= now_ms) {
        key_delete(self, self->khead);
        n++;
    }
    return n;
}

int64_t tq_store_next_expiry(const tq_store_t *self, int64_t now_ms) {
    tq_task_t *a = self->unfetched.head, *b = self->fetched.head;
    tq_task_t *t = a && (!b || a->expires_ms <= b->expires_ms) ? a : b;
    if (!t)
        return -1;
    return t->expires_ms > now_ms ? t->expires_ms - now_ms : 0;
}

const tq_store_totals_t *tq_store_totals(const tq_store_t *self) { return &self->totals; }

void tq_store_counts(const tq_store_t *self, tq_queue_counts_t *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < self->nqueues; i++) {
        const tq_queue_counts_t *c = &self->queues[i]->counts;
        out->queued += c->queued;
        out->running += c->running;
        out->done += c->done;
        out->failed += c->failed;
        out->cancelled += c->cancelled;
        out->delayed += c->delayed;
        out->dead += c->dead;
    }
}

int tq_task_finished(const tq_task_t *t) { return t->state >= TQ_TASK_DONE; }

uint8_t tq_task_wire_status(const tq_task_t *t) {
    switch (t->state) {
    case TQ_TASK_DONE: return TQ_ST_DONE;
    case TQ_TASK_FAILED: return TQ_ST_FAILED;
    case TQ_TASK_CANCELLED: return TQ_ST_CANCELLED;
    case TQ_TASK_DEAD: return TQ_ST_DEAD;
    default: return TQ_ST_UNKNOWN;
    }
}

const char *tq_task_state_name(tq_task_state_t st) {
    static const char *names[] = {"queued", "leased", "done", "failed", "cancelled", "dead"};
    return (size_t)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

int tq_task_waiter_add(tq_task_t *t, void *p) {
    for (size_t i = 0; i < t->nwaiters; i++)
        if (t->waiters[i] == p)
            return -1;
    if (t->nwaiters == t->capwaiters) {
        t->capwaiters = t->capwaiters ? t->capwaiters * 2 : 2;
        t->waiters = tq_realloc(t->waiters, t->capwaiters * sizeof *t->waiters);
    }
    t->waiters[t->nwaiters++] = p;
    return 0;
}

int tq_task_waiter_remove(tq_task_t *t, void *p) {
    for (size_t i = 0; i < t->nwaiters; i++)
        if (t->waiters[i] == p) {
            t->waiters[i] = t->waiters[--t->nwaiters];
            return 0;
        }
    return -1;
}

/* ---- recovery ------------------------------------------------------------ */

void tq_store_drop(tq_store_t *self, tq_task_t *t) {
    TQ_ASSERT(t->state != TQ_TASK_LEASED && t->nwaiters == 0);
    if (t->state == TQ_TASK_QUEUED)
        dequeue(self, t);
    else
        ttl_unlink(ttl_list_of(self, t), t);
    count_dec(t);
    task_forget(self, t);
}

tq_task_t *tq_store_restore(tq_store_t *self, const tq_task_image_t *img, int *err_code) {
    tq_task_t *old = tq_store_get(self, img->id);
    if (old)
        tq_store_drop(self, old);
    if (!img->id || !tq_store_has_room(self, 1)) {
        *err_code = TQ_ERR_FULL;
        return NULL;
    }
    if (img->state > TQ_TASK_DEAD || !tq_name_valid(img->fn) ||
        (img->queue.len && !tq_name_valid(img->queue)) || img->skey.len > TQ_MAX_KEY) {
        *err_code = TQ_ERR_MALFORMED;
        return NULL;
    }
    tq_bytes_t qname = img->queue.len ? img->queue : tq_bytes_str("default");
    name_ent_t *qe = name_entry(self, qname);
    const char *fn = qe ? tq_store_intern(self, img->fn) : NULL;
    if (!fn) {
        *err_code = TQ_ERR_TOO_MANY;
        return NULL;
    }
    key_ent_t *ke = NULL;
    if (img->skey.len) {
        if (tq_store_key_find(self, img->skey, 0)) {
            /* held by another task: the older claim wins, this task keeps
             * no key */
        } else if (!(ke = key_new(self, img->skey, err_code))) {
            return NULL;
        }
    }
    uint8_t *blob = malloc(img->blob.len ? img->blob.len : 1);
    if (!blob) {
        free(ke);
        *err_code = TQ_ERR_TOO_LARGE;
        return NULL;
    }
    if (img->blob.len)
        memcpy(blob, img->blob.data, img->blob.len);
    tq_task_t *t = tq_calloc(1, sizeof *t);
    t->id = img->id;
    t->seq = img->seq;
    t->priority = img->priority;
    t->attempt = img->attempt;
    t->releases = img->releases;
    t->timeout_ms = img->timeout_ms;
    t->retries = img->retries;
    t->retried = img->retried;
    t->fn = fn;
    t->queue = queue_get(self, qe);
    t->heap = queue_heap(t->queue, fn);
    t->created_ms = img->created_ms;
    t->keyed = img->keyed;
    tq_task_state_t st = img->state == TQ_TASK_LEASED ? TQ_TASK_QUEUED : img->state;
    t->state = st;
    count_inc(t);
    if (st == TQ_TASK_QUEUED) {
        t->payload = blob;
        t->payload_len = img->blob.len;
        t->not_before_ms = img->not_before_ms > 0 ? img->not_before_ms : 0;
        enqueue(self, t);
    } else {
        if (img->blob.len) {
            t->data = blob;
            t->data_len = img->blob.len;
        } else {
            free(blob);
        }
        if (st == TQ_TASK_DEAD) {
            t->payload = tq_memdup(img->payload.data, img->payload.len);
            t->payload_len = img->payload.len;
        }
        t->finished_ms = img->finished_ms;
        t->expires_ms = st == TQ_TASK_DEAD ? 0 : img->finished_ms + self->cfg.unfetched_ttl_ms;
        ttl_add(self, t);
        if (img->fetched)
            tq_store_restore_fetched(self, t, img->fetched_ms);
    }
    tq_idmap_put(self->tasks, t->id, t);
    all_append(self, t);
    if (ke) {
        ke->id = t->id;
        ke->session = 1;
        ke->expires_ms = INT64_MAX;
        key_insert(self, ke);
        t->skey = ke;
    }
    if (t->id >= self->next_id)
        self->next_id = t->id + 1;
    if (t->seq >= self->next_seq)
        self->next_seq = t->seq + 1;
    return t;
}

void tq_store_restore_fetched(tq_store_t *self, tq_task_t *t, int64_t fetched_ms) {
    TQ_ASSERT(tq_task_finished(t));
    if (t->state == TQ_TASK_DEAD) {
        t->fetched = 1; /* dead tasks have no TTL */
        t->acked = 1;
        return;
    }
    if (!t->fetched) {
        t->fetched = 1;
        ttl_unlink(&self->unfetched, t);
    } else {
        ttl_unlink(&self->fetched, t);
    }
    t->acked = 1;
    t->expires_ms = fetched_ms + self->cfg.result_ttl_ms;
    /* recovery replays in journal order, which is nearly fetch order; a
     * slightly out-of-order list only delays a deletion to a later sweep */
    ttl_append(&self->fetched, t);
}

int tq_store_key_restore(tq_store_t *self, tq_bytes_t key, uint64_t id, int64_t expires_ms) {
    if (key.len == 0 || key.len > TQ_MAX_KEY || id == 0)
        return -1;
    uint64_t kh = hash_bytes(key.data, key.len);
    key_ent_t *old = key_lookup(self, key, kh);
    if (old && old->session)
        return 0; /* a live task's session key: keep it */
    if (old)
        key_delete(self, old);
    key_ent_t *ke = malloc(sizeof *ke + key.len);
    if (!ke)
        return -1;
    memset(ke, 0, sizeof *ke);
    memcpy(ke->key, key.data, key.len);
    ke->len = key.len;
    ke->hash = kh;
    ke->id = id;
    ke->expires_ms = expires_ms;
    key_insert(self, ke);
    if (id >= self->next_id)
        self->next_id = id + 1;
    return 0;
}
