/* tq_idmap.h - open-addressing hash map from a non-zero uint64_t id to a
 * pointer. Used for tasks by id. Grows by doubling (aborts on OOM:
 * callers bound the number of entries). Not thread-safe. */
#ifndef TQ_IDMAP_H
#define TQ_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tq_idmap tq_idmap_t;

/* Caller owns the result. */
tq_idmap_t *tq_idmap_new(void);
/* Frees the map, not the values. Accepts NULL; nulls *self_p. */
void tq_idmap_destroy(tq_idmap_t **self_p);
/* Insert or replace. id must be non-zero. */
void tq_idmap_put(tq_idmap_t *self, uint64_t id, void *value);
/* Value or NULL. */
void *tq_idmap_get(const tq_idmap_t *self, uint64_t id);
/* Remove and return the value, or NULL. */
void *tq_idmap_remove(tq_idmap_t *self, uint64_t id);
size_t tq_idmap_size(const tq_idmap_t *self);
/* Visit every entry; fn must not modify the map. */
void tq_idmap_each(const tq_idmap_t *self, void (*fn)(uint64_t id, void *value, void *arg),
                   void *arg);

#endif
