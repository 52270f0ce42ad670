/* store_queues.c - interned names, queues and their (queue, function)
 * heaps, and the scheduler's pick of a queue's best task. See store.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tq_util.h"

/* ---- names ---------------------------------------------------------- */

static void names_grow(tq_store_t *self)
{
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

name_ent_t *store_name_find(const tq_store_t *self, tq_bytes_t name)
{
    if (!self->names_cap)
        return NULL;
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, name.data, name.len);
    size_t j = (size_t)h & (self->names_cap - 1);
    while (self->names[j].name) {
        name_ent_t *e = &self->names[j];
        if (e->hash == h && e->len == name.len && memcmp(e->name, name.data, name.len) == 0)
            return e;
        j = (j + 1) & (self->names_cap - 1);
    }
    return NULL;
}

/* The entry for name, created if absent; NULL when the table is full. */
name_ent_t *store_name_entry(tq_store_t *self, tq_bytes_t name)
{
    name_ent_t *found = store_name_find(self, name);
    if (found)
        return found;
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, name.data, name.len);
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
    e->fn_heaps = e->holds = 0;
    self->nnames++;
    return e;
}

const char *tq_store_intern(tq_store_t *self, tq_bytes_t name)
{
    name_ent_t *e = store_name_entry(self, name);
    return e ? e->name : NULL;
}

int tq_store_name_known(const tq_store_t *self, tq_bytes_t name)
{
    return store_name_find(self, name) != NULL;
}

const char *tq_store_lookup(const tq_store_t *self, tq_bytes_t name)
{
    const name_ent_t *e = store_name_find(self, name);
    return e ? e->name : NULL;
}

size_t tq_store_nnames(const tq_store_t *self) { return self->nnames; }

void tq_store_name_hold(tq_store_t *self, const char *name)
{
    name_ent_t *e = store_name_find(self, tq_bytes_str(name));
    TQ_ASSERT(e && e->name == name && e->holds < UINT32_MAX);
    e->holds++;
}

void tq_store_name_release(tq_store_t *self, const char *name)
{
    name_ent_t *e = store_name_find(self, tq_bytes_str(name));
    TQ_ASSERT(e && e->name == name && e->holds > 0);
    e->holds--;
}

/* Take slot i out of the name table (backward shift, so probes stay
 * unbroken) and free its string. */
static void name_delete(tq_store_t *self, size_t i)
{
    size_t m = self->names_cap - 1;
    free(self->names[i].name);
    for (size_t j = (i + 1) & m; self->names[j].name; j = (j + 1) & m) {
        size_t home = (size_t)self->names[j].hash & m;
        if (((j - home) & m) >= ((j - i) & m)) {
            self->names[i] = self->names[j]; /* the string stays where it is */
            i = j;
        }
    }
    memset(&self->names[i], 0, sizeof self->names[i]);
    self->nnames--;
}

/* Free heap k of q (no task class on it: it is empty); the last heap
 * takes its place. */
static void heap_delete(tq_store_t *self, tq_queue_t *q, size_t k)
{
    tq_fnheap_t *h = q->heaps[k];
    TQ_ASSERT(h->n == 0 && h->nclasses == 0);
    name_ent_t *fe = store_name_find(self, tq_bytes_str(h->fn));
    TQ_ASSERT(fe && fe->fn_heaps > 0);
    fe->fn_heaps--;
    free(h->items);
    free(h);
    q->heaps[k] = q->heaps[--q->nheaps];
}

/* Free the heaps of q that no task class uses (a queue that lives on
 * must not pin every function name it ever saw). */
static void heaps_prune(tq_store_t *self, tq_queue_t *q)
{
    for (size_t k = 0; k < q->nheaps;) {
        if (q->heaps[k]->nclasses == 0)
            heap_delete(self, q, k);
        else
            k++;
    }
}

/* A queue no task, setting or heap needs: free it and its (empty)
 * heaps; queues[i] takes the last queue's place. */
static void queue_delete(tq_store_t *self, size_t i)
{
    tq_queue_t *q = self->queues[i];
    while (q->nheaps)
        heap_delete(self, q, q->nheaps - 1);
    free(q->heaps);
    name_ent_t *qe = store_name_find(self, tq_bytes_str(q->name));
    TQ_ASSERT(qe && qe->queue == q);
    qe->queue = NULL;
    self->queues[i] = self->queues[--self->nqueues];
    free(q);
}

/* 1 if nothing refers to q: no task (every task holds a class of one of
 * its heaps), not paused, no default timeout. */
static int queue_unused(const tq_queue_t *q)
{
    if (q->paused || q->default_timeout_ms || q->queued_total)
        return 0;
    for (size_t k = 0; k < q->nheaps; k++)
        if (q->heaps[k]->nclasses)
            return 0;
    return 1;
}

size_t tq_store_gc(tq_store_t *self, size_t steps)
{
    size_t freed = 0;
    for (size_t s = 0; s < steps && self->nqueues; s++) {
        if (self->gc_queue >= self->nqueues)
            self->gc_queue = 0;
        tq_queue_t *q = self->queues[self->gc_queue];
        if (queue_unused(q)) {
            queue_delete(self, self->gc_queue); /* the last one moved here: look again */
        } else {
            heaps_prune(self, q);
            self->gc_queue++;
        }
    }
    for (size_t s = 0; s < steps && self->names_cap; s++) {
        if (self->gc_name >= self->names_cap)
            self->gc_name = 0;
        name_ent_t *e = &self->names[self->gc_name];
        if (e->name && !e->queue && !e->fn_heaps && !e->holds) {
            name_delete(self, self->gc_name); /* another entry may shift here */
            freed++;
        } else {
            self->gc_name++;
        }
    }
    return freed;
}

/* ---- queues ----------------------------------------------------------- */

tq_queue_t *store_queue_get(tq_store_t *self, name_ent_t *e)
{
    if (!e->queue) {
        tq_queue_t *q = tq_calloc(1, sizeof *q);
        q->name = e->name;
        q->all = &self->all_counts;
        e->queue = q;
        self->queues = tq_realloc(self->queues, (self->nqueues + 1) * sizeof *self->queues);
        self->queues[self->nqueues++] = q;
    }
    return e->queue;
}

tq_fnheap_t *store_queue_heap(tq_store_t *self, tq_queue_t *q, const char *fn)
{
    for (size_t i = 0; i < q->nheaps; i++)
        if (q->heaps[i]->fn == fn)
            return q->heaps[i];
    tq_fnheap_t *h = tq_calloc(1, sizeof *h);
    h->fn = fn;
    h->queue = q;
    name_ent_t *fe = store_name_find(self, tq_bytes_str(fn));
    TQ_ASSERT(fe && fe->name == fn);
    fe->fn_heaps++;
    q->heaps = tq_realloc(q->heaps, (q->nheaps + 1) * sizeof *q->heaps);
    q->heaps[q->nheaps++] = h;
    return h;
}

size_t tq_store_nqueues(const tq_store_t *self) { return self->nqueues; }
tq_queue_t *tq_store_queue_at(const tq_store_t *self, size_t i)
{
    return i < self->nqueues ? self->queues[i] : NULL;
}
const char *tq_queue_name(const tq_queue_t *q) { return q->name; }
const tq_queue_counts_t *tq_queue_counts(const tq_queue_t *q) { return &q->counts; }
size_t tq_queue_queued(const tq_queue_t *q) { return q->queued_total; }

int64_t tq_queue_head_created(const tq_queue_t *q)
{
    int64_t oldest = -1;
    for (size_t i = 0; i < q->nheaps; i++) {
        const tq_fnheap_t *h = q->heaps[i];
        if (h && h->n && (oldest < 0 || h->items[0]->created_ms < oldest))
            oldest = h->items[0]->created_ms;
    }
    return oldest;
}
void tq_queue_set_paused(tq_queue_t *q, int paused) { q->paused = paused != 0; }
int tq_queue_paused(const tq_queue_t *q) { return q->paused; }
void tq_queue_set_default_timeout(tq_queue_t *q, uint32_t timeout_ms)
{
    q->default_timeout_ms = timeout_ms;
}

tq_queue_t *tq_store_queue(tq_store_t *self, tq_bytes_t name)
{
    name_ent_t *e = store_name_entry(self, name);
    return e ? store_queue_get(self, e) : NULL;
}

tq_task_t *tq_queue_best(const tq_queue_t *q, const char *const *fns, size_t nfns)
{
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
        if (serves && (!best || fnheap_before(h->items[0], best)))
            best = h->items[0];
    }
    return best;
}


/* ---- task classes ----------------------------------------------------- */

static uint64_t tclass_hash(const tq_fnheap_t *heap, int32_t priority, uint32_t timeout_ms)
{
    uint64_t h = (uint64_t)(uintptr_t)heap * 0x9E3779B97F4A7C15ull;
    h ^= ((uint64_t)(uint32_t)priority << 32 | timeout_ms) * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 29);
}

static size_t tclass_home(const tq_store_t *self, const tq_tclass_t *c)
{
    return (size_t)tclass_hash(c->heap, c->priority, c->timeout_ms) & (self->classes_cap - 1);
}

static void tclass_put(tq_store_t *self, tq_tclass_t *c)
{
    size_t m = self->classes_cap - 1;
    size_t j = tclass_home(self, c);
    while (self->classes[j])
        j = (j + 1) & m;
    self->classes[j] = c;
}

tq_tclass_t *store_tclass_ref(tq_store_t *self, tq_fnheap_t *heap, int32_t priority,
                              uint32_t timeout_ms)
{
    if (self->classes_cap) {
        size_t m = self->classes_cap - 1;
        for (size_t j = (size_t)tclass_hash(heap, priority, timeout_ms) & m; self->classes[j];
             j = (j + 1) & m) {
            tq_tclass_t *c = self->classes[j];
            if (c->heap == heap && c->priority == priority && c->timeout_ms == timeout_ms) {
                TQ_ASSERT(c->refs < UINT32_MAX);
                c->refs++;
                return c;
            }
        }
    }
    if ((self->nclasses + 1) * 2 > self->classes_cap) {
        tq_tclass_t **old = self->classes;
        size_t ocap = self->classes_cap;
        self->classes_cap = ocap ? ocap * 2 : 16;
        self->classes = tq_calloc(self->classes_cap, sizeof *self->classes);
        for (size_t i = 0; i < ocap; i++)
            if (old[i])
                tclass_put(self, old[i]);
        free(old);
    }
    tq_tclass_t *c = tq_malloc(sizeof *c);
    heap->nclasses++;
    c->heap = heap;
    c->priority = priority;
    c->timeout_ms = timeout_ms;
    c->refs = 1;
    tclass_put(self, c);
    self->nclasses++;
    return c;
}

void store_tclass_unref(tq_store_t *self, tq_tclass_t *c)
{
    TQ_ASSERT(c->refs > 0);
    if (--c->refs > 0)
        return;
    /* out of the table: backward shift, so probes stay unbroken */
    size_t m = self->classes_cap - 1;
    size_t i = tclass_home(self, c);
    while (self->classes[i] != c)
        i = (i + 1) & m;
    for (size_t j = (i + 1) & m; self->classes[j]; j = (j + 1) & m) {
        size_t home = tclass_home(self, self->classes[j]);
        if (((j - home) & m) >= ((j - i) & m)) {
            self->classes[i] = self->classes[j];
            i = j;
        }
    }
    self->classes[i] = NULL;
    self->nclasses--;
    c->heap->nclasses--;
    free(c);
}

void store_tclass_free(tq_store_t *self)
{
    for (size_t i = 0; i < self->classes_cap; i++)
        free(self->classes[i]);
    free(self->classes);
    self->classes = NULL;
    self->nclasses = self->classes_cap = 0;
}

size_t tq_queue_nheaps(const tq_queue_t *q) { return q->nheaps; }

size_t tq_queue_heap_at(const tq_queue_t *q, size_t i, const char **fn)
{
    *fn = q->heaps[i]->fn;
    return q->heaps[i]->n;
}
