/* items.c - plain put/get queues (items.h). */
#include "items.h"

#include <stdlib.h>
#include <string.h>

#include "tq_limits.h"
#include "tq_util.h"

struct tq_iqueue {
    uint8_t name[TQ_MAX_NAME];
    size_t name_len;
    tq_item_t *head, *tail;
};

struct tq_items {
    size_t max_items, max_queues;
    size_t count;
    tq_iqueue_t **queues;
    size_t nqueues;
    tq_item_t *taken; /* a list of every taken item (holder != NULL) */
};

tq_items_t *tq_items_new(size_t max_items, size_t max_queues)
{
    tq_items_t *self = tq_calloc(1, sizeof *self);
    self->max_items = max_items;
    self->max_queues = max_queues;
    self->queues = tq_calloc(max_queues ? max_queues : 1, sizeof *self->queues);
    return self;
}

static void free_list(tq_item_t *it)
{
    while (it) {
        tq_item_t *n = it->next;
        free(it);
        it = n;
    }
}

void tq_items_destroy(tq_items_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_items_t *self = *self_p;
    for (size_t i = 0; i < self->nqueues; i++) {
        free_list(self->queues[i]->head);
        free(self->queues[i]);
    }
    free_list(self->taken);
    free(self->queues);
    free(self);
    *self_p = NULL;
}

size_t tq_items_count(const tq_items_t *self) { return self->count; }

int tq_items_room(const tq_items_t *self, size_t n) { return self->count + n <= self->max_items; }

void tq_items_set_max(tq_items_t *self, size_t max_items) { self->max_items = max_items; }

tq_bytes_t tq_iqueue_name(const tq_iqueue_t *q) { return (tq_bytes_t){q->name, q->name_len}; }

/* The queue called name, or NULL (make: create it when there is room). */
static tq_iqueue_t *find_queue(const tq_items_t *self, tq_bytes_t name)
{
    for (size_t i = 0; i < self->nqueues; i++) {
        tq_iqueue_t *q = self->queues[i];
        if (q->name_len == name.len && memcmp(q->name, name.data, name.len) == 0)
            return q;
    }
    return NULL;
}

static tq_iqueue_t *make_queue(tq_items_t *self, tq_bytes_t name)
{
    tq_iqueue_t *q = find_queue(self, name);
    if (q || self->nqueues >= self->max_queues || name.len > TQ_MAX_NAME)
        return q;
    q = tq_calloc(1, sizeof *q);
    memcpy(q->name, name.data, name.len);
    q->name_len = name.len;
    self->queues[self->nqueues++] = q;
    return q;
}

static void unlink_item(tq_items_t *self, tq_item_t *it)
{
    tq_item_t **headp = it->holder ? &self->taken : &it->q->head;
    if (it->prev)
        it->prev->next = it->next;
    else
        *headp = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else if (!it->holder)
        it->q->tail = it->prev;
    it->prev = it->next = NULL;
}

tq_item_t *tq_items_put(tq_items_t *self, tq_bytes_t queue, uint64_t id, const uint8_t *data,
                        size_t len)
{
    if (self->count >= self->max_items)
        return NULL;
    tq_iqueue_t *q = make_queue(self, queue);
    if (!q)
        return NULL;
    tq_item_t *it = tq_calloc(1, sizeof *it + len);
    it->id = id;
    it->q = q;
    it->len = len;
    if (len)
        memcpy(it->data, data, len);
    it->prev = q->tail;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    self->count++;
    return it;
}

int tq_items_ready(const tq_items_t *self, tq_bytes_t queue)
{
    const tq_iqueue_t *q = find_queue(self, queue);
    return q && q->head;
}

size_t tq_items_take(tq_items_t *self, tq_bytes_t queue, size_t max, void *holder, tq_item_t **out)
{
    tq_iqueue_t *q = find_queue(self, queue);
    size_t n = 0;
    while (q && q->head && n < max) {
        tq_item_t *it = q->head;
        unlink_item(self, it);
        it->holder = holder;
        it->next = self->taken;
        if (self->taken)
            self->taken->prev = it;
        self->taken = it;
        out[n++] = it;
    }
    return n;
}

tq_item_t *tq_items_taken(const tq_items_t *self, uint64_t id, const void *holder)
{
    for (tq_item_t *it = self->taken; it; it = it->next)
        if (it->id == id && it->holder == holder)
            return it;
    return NULL;
}

tq_item_t *tq_items_get(const tq_items_t *self, uint64_t id)
{
    for (tq_item_t *it = self->taken; it; it = it->next)
        if (it->id == id)
            return it;
    for (size_t i = 0; i < self->nqueues; i++)
        for (tq_item_t *it = self->queues[i]->head; it; it = it->next)
            if (it->id == id)
                return it;
    return NULL;
}

void tq_items_delete(tq_items_t *self, tq_item_t *it)
{
    unlink_item(self, it);
    self->count--;
    free(it);
}

/* Back at the head of its queue, before any queued item with a larger
 * id (items of one queue were put in id order). */
static void requeue(tq_iqueue_t *q, tq_item_t *it)
{
    tq_item_t *after = NULL, *cur = q->head;
    while (cur && cur->id < it->id) {
        after = cur;
        cur = cur->next;
    }
    it->prev = after;
    it->next = cur;
    if (after)
        after->next = it;
    else
        q->head = it;
    if (cur)
        cur->prev = it;
    else
        q->tail = it;
}

size_t tq_items_untake(tq_items_t *self, const void *holder)
{
    size_t n = 0;
    tq_item_t *it = self->taken;
    while (it) {
        tq_item_t *next = it->next;
        if (it->holder == holder) {
            unlink_item(self, it);
            it->holder = NULL;
            requeue(it->q, it);
            n++;
        }
        it = next;
    }
    return n;
}

void tq_items_each(const tq_items_t *self, void (*fn)(void *arg, const tq_item_t *it), void *arg)
{
    for (size_t i = 0; i < self->nqueues; i++)
        for (const tq_item_t *it = self->queues[i]->head; it; it = it->next)
            fn(arg, it);
    for (const tq_item_t *it = self->taken; it; it = it->next)
        fn(arg, it);
}
