/* items.h - the plain put/get queues (PROTOCOL.md PUT, GET, TAKE_ACK):
 * FIFO lists of opaque items per queue name, apart from task queues
 * (an item is never dispatched). A data structure only: the engine
 * (engine.c) is the one that changes it and tells the journal.
 *
 * An item is queued (in its queue's list) or taken (by an opaque holder,
 * a client connection, until TAKE_ACK deletes it or untake puts it back
 * at the head of its queue). Owned by the loop thread; no locks. */
#ifndef TQ_MASTER_ITEMS_H
#define TQ_MASTER_ITEMS_H

#include <stddef.h>
#include <stdint.h>

#include "tq_wire.h"

typedef struct tq_iqueue tq_iqueue_t;

typedef struct tq_item {
    uint64_t id;
    tq_iqueue_t *q;
    void *holder;                /* NULL: queued */
    struct tq_item *prev, *next; /* in q's list, or in the taken list */
    size_t len;
    uint8_t data[];
} tq_item_t;

typedef struct tq_items tq_items_t;

/* max_items: items held at most (queued and taken); max_queues: names. */
tq_items_t *tq_items_new(size_t max_items, size_t max_queues);
void tq_items_destroy(tq_items_t **self_p);

/* Items held now (queued and taken). */
size_t tq_items_count(const tq_items_t *self);
/* 1 if n more items fit. */
int tq_items_room(const tq_items_t *self, size_t n);
/* A new cap on items held (SIGHUP): those held already stay. */
void tq_items_set_max(tq_items_t *self, size_t max_items);

/* Append an item with this id (not 0, not held) to queue name (valid).
 * NULL when the item or queue-name cap is reached. */
tq_item_t *tq_items_put(tq_items_t *self, tq_bytes_t queue, uint64_t id, const uint8_t *data,
                        size_t len);
/* Up to max items from the head of queue name, taken by holder, into
 * out. Returns how many. */
size_t tq_items_take(tq_items_t *self, tq_bytes_t queue, size_t max, void *holder, tq_item_t **out);
/* 1 if queue name has a queued item. */
int tq_items_ready(const tq_items_t *self, tq_bytes_t queue);
/* The item id taken by holder, or NULL. */
tq_item_t *tq_items_taken(const tq_items_t *self, uint64_t id, const void *holder);
/* The item id (queued or taken), or NULL. */
tq_item_t *tq_items_get(const tq_items_t *self, uint64_t id);
/* Unlink and free it. */
void tq_items_delete(tq_items_t *self, tq_item_t *it);
/* Every item taken by holder back to the head of its queue, in id order
 * (the order they were put). Returns how many. */
size_t tq_items_untake(tq_items_t *self, const void *holder);
/* Visit every item (queued and taken): compaction. */
void tq_items_each(const tq_items_t *self, void (*fn)(void *arg, const tq_item_t *it), void *arg);
/* The queue's name. */
tq_bytes_t tq_iqueue_name(const tq_iqueue_t *q);

#endif
