/* taskidx.h - the master's tasks by id: a map from a non-zero uint64_t
 * id to a pointer that also walks in id order.
 *
 * Ids are handed out counting up, so they are dense: the map is a
 * sorted directory of pages of TQ_TASKIDX_PAGE slots (about 8 bytes per
 * id while dense; a page is freed when its last id goes, so a lone
 * survivor among expired ids costs one page). Lookups are O(1) while
 * the directory has no gaps, O(log pages) otherwise. Aborts on OOM
 * (callers bound the number of entries). Not thread-safe. */
#ifndef TQ_MASTER_TASKIDX_H
#define TQ_MASTER_TASKIDX_H

#include <stddef.h>
#include <stdint.h>

#define TQ_TASKIDX_PAGE 64

typedef struct tq_taskidx tq_taskidx_t;

/* Caller owns the result. */
tq_taskidx_t *tq_taskidx_new(void);
/* Frees the map, not the values. Accepts NULL; nulls *self_p. */
void tq_taskidx_destroy(tq_taskidx_t **self_p);
/* Insert or replace. id must be non-zero, value non-NULL. */
void tq_taskidx_put(tq_taskidx_t *self, uint64_t id, void *value);
/* Value or NULL. */
void *tq_taskidx_get(const tq_taskidx_t *self, uint64_t id);
/* Remove and return the value, or NULL. */
void *tq_taskidx_remove(tq_taskidx_t *self, uint64_t id);
size_t tq_taskidx_size(const tq_taskidx_t *self);
/* The value with the smallest id >= id (its id in *found), or NULL. */
void *tq_taskidx_next(const tq_taskidx_t *self, uint64_t id, uint64_t *found);

#endif
