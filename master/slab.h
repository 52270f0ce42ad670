/* slab.h - a small-object allocator for the master's task records.
 *
 * Objects of up to TQ_SLAB_MAX bytes are carved from 1 MiB blocks, one
 * free list per size class (8-byte steps), with no per-object header:
 * the caller passes the size back to tq_slab_free. A block whose last
 * object is freed goes back to the system (one empty block per class is
 * kept to avoid churn). Larger objects, and every object in sanitizer
 * builds (so that ASan still sees each one), use malloc.
 *
 * Not thread-safe: owned by the loop thread, like the store. */
#ifndef TQ_MASTER_SLAB_H
#define TQ_MASTER_SLAB_H

#include <stddef.h>

/* Largest object served from the blocks; bigger ones use malloc. */
#define TQ_SLAB_MAX 512

typedef struct tq_slab tq_slab_t;

/* Caller owns the result (tq_slab_destroy). */
tq_slab_t *tq_slab_new(void);
/* Frees every block, with any object still in it (objects that went to
 * malloc are the caller's to free). Accepts NULL; nulls *self_p. */
void tq_slab_destroy(tq_slab_t **self_p);
/* size bytes (1.. any), aligned to 8, or NULL when memory is short. */
void *tq_slab_alloc(tq_slab_t *self, size_t size);
/* Give back p, allocated with the same size. Accepts NULL. */
void tq_slab_free(tq_slab_t *self, void *p, size_t size);
/* Bytes of blocks held from the system (for tests and status). */
size_t tq_slab_block_bytes(const tq_slab_t *self);

#endif
