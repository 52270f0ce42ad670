/* reorder.c - the in-order window; see reorder.h. */
#include "reorder.h"

#include <stdlib.h>
#include <string.h>

#include "tq_util.h"

struct tq_reorder {
    tq_slot_t *ring;
    size_t window;
    uint64_t next; /* oldest not popped */
    uint64_t end;  /* next to admit */
};

tq_reorder_t *tq_reorder_new(size_t window)
{
    TQ_ASSERT(window >= 1);
    tq_reorder_t *self = tq_calloc(1, sizeof *self);
    self->ring = tq_calloc(window, sizeof *self->ring);
    self->window = window;
    self->next = self->end = 1;
    return self;
}

void tq_reorder_destroy(tq_reorder_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_reorder_t *self = *self_p;
    for (size_t i = 0; i < self->window; i++)
        if (!self->ring[i].borrowed)
            free(self->ring[i].data);
    free(self->ring);
    free(self);
    *self_p = NULL;
}

int tq_reorder_admit(tq_reorder_t *self, uint64_t *seq_out)
{
    if (self->end - self->next >= self->window)
        return -1;
    tq_slot_t *s = &self->ring[self->end % self->window];
    memset(s, 0, sizeof *s);
    s->seq = self->end;
    *seq_out = self->end++;
    return 0;
}

size_t tq_reorder_inflight(const tq_reorder_t *self) { return (size_t)(self->end - self->next); }

uint64_t tq_reorder_end(const tq_reorder_t *self) { return self->end; }

tq_slot_t *tq_reorder_slot(tq_reorder_t *self, uint64_t seq)
{
    if (seq < self->next || seq >= self->end)
        return NULL;
    return &self->ring[seq % self->window];
}

int tq_reorder_fill(tq_reorder_t *self, uint64_t seq, int status, uint32_t attempts,
                    const void *data, size_t len)
{
    tq_slot_t *s = tq_reorder_slot(self, seq);
    if (!s || s->ready)
        return -1;
    s->data = tq_malloc(len + 1);
    if (len > 0)
        memcpy(s->data, data, len);
    s->data[len] = '\0';
    s->len = len;
    s->status = status;
    s->attempts = attempts;
    s->ready = 1;
    return 0;
}

int tq_reorder_fill_next(tq_reorder_t *self, uint64_t seq, int status, uint32_t attempts,
                         const void *data, size_t len)
{
    if (seq != self->next)
        return tq_reorder_fill(self, seq, status, attempts, data, len);
    tq_slot_t *s = tq_reorder_slot(self, seq);
    if (!s || s->ready)
        return -1;
    s->data = (uint8_t *)data;
    s->borrowed = 1;
    s->len = len;
    s->status = status;
    s->attempts = attempts;
    s->ready = 1;
    return 0;
}

const tq_slot_t *tq_reorder_oldest(const tq_reorder_t *self)
{
    if (self->next == self->end)
        return NULL;
    return &self->ring[self->next % self->window];
}

const tq_slot_t *tq_reorder_peek(const tq_reorder_t *self)
{
    const tq_slot_t *s = tq_reorder_oldest(self);
    return s && s->ready ? s : NULL;
}

void tq_reorder_pop(tq_reorder_t *self)
{
    if (self->next == self->end)
        return;
    tq_slot_t *s = &self->ring[self->next % self->window];
    if (!s->borrowed)
        free(s->data);
    memset(s, 0, sizeof *s);
    self->next++;
}
