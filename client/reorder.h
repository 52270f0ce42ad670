/* reorder.h - the in-order window of the taskq command.
 *
 * Tasks get consecutive sequence numbers 1, 2, 3, ... when they are
 * admitted; their answers (task id, result) arrive in any order; the
 * command prints them strictly in sequence order, as soon as the oldest
 * one is complete. At most `window` tasks are admitted and not yet
 * popped, which is what keeps `seq 1 10000000 | taskq map -` in bounded
 * memory: the slots are one ring of `window` entries. */
#ifndef TQ_REORDER_H
#define TQ_REORDER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t seq; /* this slot's sequence number */
    uint64_t id;  /* task id, 0 until known */
    int ready;    /* 1 once the answer is in */
    int status;   /* taskq_status_t, or 0 for "queued" (submit) */
    uint32_t attempts;
    uint8_t *data; /* owned copy of the result or error (NUL-terminated), */
    size_t len;
    int borrowed; /* or the caller's bytes (tq_reorder_fill_next) */
} tq_slot_t;

typedef struct tq_reorder tq_reorder_t;

/* A window of `window` (>= 1) slots, first sequence number 1. Caller
 * owns the result (tq_reorder_destroy). Aborts on out-of-memory. */
tq_reorder_t *tq_reorder_new(size_t window);
/* Frees the ring and every held result. Accepts NULL; nulls *self_p. */
void tq_reorder_destroy(tq_reorder_t **self_p);

/* Admit the next task: *seq_out gets its sequence number. Returns 0, or
 * -1 when the window is full (pop first). */
int tq_reorder_admit(tq_reorder_t *self, uint64_t *seq_out);
/* Tasks admitted and not yet popped. */
size_t tq_reorder_inflight(const tq_reorder_t *self);
/* Sequence number the next admit will get. */
uint64_t tq_reorder_end(const tq_reorder_t *self);

/* The slot of an admitted, not yet popped seq, or NULL. */
tq_slot_t *tq_reorder_slot(tq_reorder_t *self, uint64_t seq);

/* Record the answer for seq (copies data, len bytes, adding a NUL).
 * Returns 0, or -1 when seq is not admitted, already popped, or already
 * has its answer (the first answer wins). */
int tq_reorder_fill(tq_reorder_t *self, uint64_t seq, int status, uint32_t attempts,
                    const void *data, size_t len);

/* The same without the copy when seq is the oldest slot, i.e. the next
 * to print: the slot then points at data, which the caller keeps valid
 * until it pops the slot (no NUL is added). Otherwise as
 * tq_reorder_fill. `taskq map` prints an answer that arrives in order
 * straight from the received message this way. */
int tq_reorder_fill_next(tq_reorder_t *self, uint64_t seq, int status, uint32_t attempts,
                         const void *data, size_t len);

/* The oldest admitted slot if its answer is in, else NULL. */
const tq_slot_t *tq_reorder_peek(const tq_reorder_t *self);
/* The oldest admitted slot (ready or not), else NULL. */
const tq_slot_t *tq_reorder_oldest(const tq_reorder_t *self);
/* Drop the oldest slot (freeing its data) and move on. */
void tq_reorder_pop(tq_reorder_t *self);

#endif
