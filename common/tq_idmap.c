/* tq_idmap.c - id -> pointer map: open addressing, linear probing,
 * backward-shift deletion (no tombstones), power-of-two capacity, load
 * factor at most 0.7. Id 0 marks an empty slot. */
#include "tq_idmap.h"

#include "tq_util.h"

#include <stdlib.h>

/* Initial number of slots (a power of two). */
#define TQ_IDMAP_MIN_CAP 16
/* Grow when size + 1 > cap * LOAD_NUM / LOAD_DEN. */
#define TQ_IDMAP_LOAD_NUM 7
#define TQ_IDMAP_LOAD_DEN 10

typedef struct {
    uint64_t id; /* 0: empty */
    void *value;
} slot_t;

struct tq_idmap {
    slot_t *slots;
    size_t cap; /* power of two */
    size_t size;
};

/* splitmix64 finalizer: spreads sequential ids over the table. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

tq_idmap_t *tq_idmap_new(void)
{
    tq_idmap_t *self = tq_calloc(1, sizeof *self);
    self->cap = TQ_IDMAP_MIN_CAP;
    self->slots = tq_calloc(self->cap, sizeof(slot_t));
    return self;
}

void tq_idmap_destroy(tq_idmap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->slots);
    free(*self_p);
    *self_p = NULL;
}

/* Index of id's slot, or of the empty slot where it would go. */
static size_t find(const tq_idmap_t *self, uint64_t id)
{
    size_t mask = self->cap - 1;
    size_t i = (size_t)mix(id) & mask;
    while (self->slots[i].id != 0 && self->slots[i].id != id)
        i = (i + 1) & mask;
    return i;
}

static void grow(tq_idmap_t *self)
{
    slot_t *old = self->slots;
    size_t old_cap = self->cap;
    TQ_ASSERT(old_cap <= SIZE_MAX / 2 / sizeof(slot_t));
    self->cap = old_cap * 2;
    self->slots = tq_calloc(self->cap, sizeof(slot_t));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].id != 0)
            self->slots[find(self, old[i].id)] = old[i];
    free(old);
}

void tq_idmap_put(tq_idmap_t *self, uint64_t id, void *value)
{
    TQ_ASSERT(id != 0);
    size_t i = find(self, id);
    if (self->slots[i].id == id) {
        self->slots[i].value = value;
        return;
    }
    if ((self->size + 1) * TQ_IDMAP_LOAD_DEN > self->cap * TQ_IDMAP_LOAD_NUM) {
        grow(self);
        i = find(self, id);
    }
    self->slots[i].id = id;
    self->slots[i].value = value;
    self->size++;
}

void *tq_idmap_get(const tq_idmap_t *self, uint64_t id)
{
    if (id == 0)
        return NULL;
    size_t i = find(self, id);
    return self->slots[i].id == id ? self->slots[i].value : NULL;
}

void *tq_idmap_remove(tq_idmap_t *self, uint64_t id)
{
    if (id == 0)
        return NULL;
    size_t mask = self->cap - 1;
    size_t i = find(self, id);
    if (self->slots[i].id != id)
        return NULL;
    void *value = self->slots[i].value;
    /* Backward shift: move later members of the probe run into the hole
     * when their home slot does not lie cyclically in (hole, j]. */
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (self->slots[j].id == 0)
            break;
        size_t home = (size_t)mix(self->slots[j].id) & mask;
        /* distance from home to j vs. from hole to j */
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            self->slots[hole] = self->slots[j];
            hole = j;
        }
    }
    self->slots[hole].id = 0;
    self->slots[hole].value = NULL;
    self->size--;
    return value;
}

size_t tq_idmap_size(const tq_idmap_t *self) { return self->size; }

void tq_idmap_each(const tq_idmap_t *self, void (*fn)(uint64_t id, void *value, void *arg),
                   void *arg)
{
    for (size_t i = 0; i < self->cap; i++)
        if (self->slots[i].id != 0)
            fn(self->slots[i].id, self->slots[i].value, arg);
}
