/* store_heap.c - the store's binary heaps: queued tasks of one (queue,
 * function) pair by (priority, id), and tasks on a time (lease
 * deadlines, delays). See store.h. */
#include "store_int.h"
#include "tq_util.h"

/* ---- (queue, fn) heaps ---------------------------------------------------- */

int fnheap_before(const tq_task_t *a, const tq_task_t *b)
{
    if (a->cls->priority != b->cls->priority)
        return a->cls->priority > b->cls->priority;
    return a->id < b->id; /* ids count up as tasks come: FIFO */
}

static void heap_set(tq_fnheap_t *h, size_t i, tq_task_t *t)
{
    h->items[i] = t;
    t->heap_idx = (uint32_t)i;
}

static void heap_up(tq_fnheap_t *h, size_t i)
{
    tq_task_t *t = h->items[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!fnheap_before(t, h->items[p]))
            break;
        heap_set(h, i, h->items[p]);
        i = p;
    }
    heap_set(h, i, t);
}

static void heap_down(tq_fnheap_t *h, size_t i)
{
    tq_task_t *t = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        tq_task_t *bt = t;
        if (l < h->n && fnheap_before(h->items[l], bt)) {
            best = l;
            bt = h->items[l];
        }
        if (l + 1 < h->n && fnheap_before(h->items[l + 1], bt))
            best = l + 1;
        if (best == i)
            break;
        heap_set(h, i, h->items[best]);
        i = best;
    }
    heap_set(h, i, t);
}

void fnheap_push(tq_fnheap_t *h, tq_task_t *t)
{
    if (h->n == h->cap) {
        TQ_ASSERT(h->cap < UINT32_MAX / 2);
        h->cap = h->cap ? h->cap * 2 : 16;
        h->items = tq_realloc(h->items, h->cap * sizeof *h->items);
    }
    heap_set(h, h->n, t);
    h->n++;
    heap_up(h, h->n - 1);
}

void fnheap_remove(tq_fnheap_t *h, tq_task_t *t)
{
    size_t i = t->heap_idx;
    TQ_ASSERT(i < h->n && h->items[i] == t);
    h->n--;
    if (i != h->n) {
        tq_task_t *moved = h->items[h->n];
        heap_set(h, i, moved);
        heap_up(h, i);
        heap_down(h, moved->heap_idx);
    }
    t->heap_idx = UINT32_MAX;
    /* give back most of a drained heap's array */
    if (h->cap > 1024 && h->n < h->cap / 8) {
        h->cap /= 4;
        h->items = tq_realloc(h->items, h->cap * sizeof *h->items);
    }
}

/* ---- min-heaps on a time -------------------------------------------------- */

static void theap_set(theap_t *h, size_t i, tq_task_t *t)
{
    h->a[i] = t;
    h->set(t, i);
}

static void theap_up(theap_t *h, size_t i)
{
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

static void theap_down(theap_t *h, size_t i)
{
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

void theap_push(theap_t *h, tq_task_t *t)
{
    if (h->n == h->cap) {
        TQ_ASSERT(h->cap < UINT32_MAX / 2);
        h->cap = h->cap ? h->cap * 2 : 64;
        h->a = tq_realloc(h->a, h->cap * sizeof *h->a);
    }
    theap_set(h, h->n, t);
    h->n++;
    theap_up(h, h->n - 1);
}

void theap_remove(theap_t *h, tq_task_t *t)
{
    size_t i = h->get(t);
    TQ_ASSERT(i < h->n && h->a[i] == t);
    h->n--;
    if (i != h->n) {
        tq_task_t *moved = h->a[h->n];
        theap_set(h, i, moved);
        theap_up(h, i);
        theap_down(h, h->get(moved));
    }
    h->set(t, (size_t)-1);
}

tq_task_t *theap_top(const theap_t *h) { return h->n ? h->a[0] : NULL; }
