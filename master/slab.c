/* slab.c - size-class blocks for small objects. See slab.h. */
#include "slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "tq_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_PASSTHROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_PASSTHROUGH 1
#endif
#endif
#ifndef SLAB_PASSTHROUGH
#define SLAB_PASSTHROUGH 0
#endif

/* Blocks are aligned to their size, so an object finds its block by
 * masking its address. Only touched pages count in the RSS, so a large
 * block costs nothing until it fills. */
#define BLOCK_SIZE ((size_t)1 << 20)
#define STEP 8
#define NCLASSES (TQ_SLAB_MAX / STEP + 1)

typedef struct block {
    struct block *prev, *next;   /* the class's list of blocks with room */
    struct block *aprev, *anext; /* every block of the slab */
    void *free;                  /* freed objects, linked through their first word */
    uint8_t *bump, *end;         /* never used space */
    size_t used;                 /* objects handed out */
    size_t cls;
    int listed; /* on the class's list */
} block_t;

/* Objects start after the header, kept 16-aligned. */
#define BLOCK_HEAD ((sizeof(block_t) + 15) & ~(size_t)15)

typedef struct {
    block_t *room; /* blocks with room */
    block_t *spare;
} class_t;

struct tq_slab {
    class_t cls[NCLASSES];
    size_t nblocks;
    block_t *all; /* every block, for destroy */
};

tq_slab_t *tq_slab_new(void) { return tq_calloc(1, sizeof(tq_slab_t)); }

static void list_add(class_t *c, block_t *b)
{
    b->prev = NULL;
    b->next = c->room;
    if (c->room)
        c->room->prev = b;
    c->room = b;
    b->listed = 1;
}

static void list_del(class_t *c, block_t *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        c->room = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
    b->listed = 0;
}

/* A BLOCK_SIZE-aligned block straight from the kernel (not the malloc
 * heap: aligned heap blocks leave large holes that other allocations
 * then dirty), or NULL. */
static void *block_map(void)
{
    size_t len = 2 * BLOCK_SIZE;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)p + BLOCK_SIZE - 1) & ~(uintptr_t)(BLOCK_SIZE - 1);
    size_t head = a - (uintptr_t)p;
    if (head)
        munmap(p, head);
    if (len - head > BLOCK_SIZE)
        munmap((uint8_t *)a + BLOCK_SIZE, len - head - BLOCK_SIZE);
    return (void *)a;
}

static void block_unmap(block_t *b) { munmap(b, BLOCK_SIZE); }

static block_t *block_new(tq_slab_t *self, size_t cls)
{
    block_t *b = block_map();
    if (!b)
        return NULL;
    b->prev = b->next = NULL;
    b->free = NULL;
    b->bump = (uint8_t *)b + BLOCK_HEAD;
    b->end = (uint8_t *)b + BLOCK_SIZE;
    b->used = 0;
    b->cls = cls;
    b->listed = 0;
    b->aprev = NULL;
    b->anext = self->all;
    if (self->all)
        self->all->aprev = b;
    self->all = b;
    self->nblocks++;
    return b;
}

static int block_full(const block_t *b)
{
    return !b->free && (size_t)(b->end - b->bump) < b->cls * STEP;
}

void *tq_slab_alloc(tq_slab_t *self, size_t size)
{
    if (SLAB_PASSTHROUGH || size > TQ_SLAB_MAX)
        return malloc(size ? size : 1);
    size_t cls = size <= STEP ? 1 : (size + STEP - 1) / STEP;
    class_t *c = &self->cls[cls];
    block_t *b = c->room;
    if (!b) {
        if (c->spare) {
            b = c->spare;
            c->spare = NULL;
        } else if (!(b = block_new(self, cls))) {
            return NULL;
        }
        list_add(c, b);
    }
    void *p;
    if (b->free) {
        p = b->free;
        b->free = *(void **)p;
    } else {
        p = b->bump;
        b->bump += cls * STEP;
    }
    b->used++;
    if (block_full(b))
        list_del(c, b);
    return p;
}

void tq_slab_free(tq_slab_t *self, void *p, size_t size)
{
    if (!p)
        return;
    if (SLAB_PASSTHROUGH || size > TQ_SLAB_MAX) {
        free(p);
        return;
    }
    block_t *b = (block_t *)((uintptr_t)p & ~(uintptr_t)(BLOCK_SIZE - 1));
    size_t cls = size <= STEP ? 1 : (size + STEP - 1) / STEP;
    TQ_ASSERT(b->cls == cls && b->used > 0);
    class_t *c = &self->cls[cls];
    *(void **)p = b->free;
    b->free = p;
    b->used--;
    if (!b->listed)
        list_add(c, b);
    if (b->used == 0) {
        list_del(c, b);
        if (!c->spare) {
            b->free = NULL; /* start afresh: its pages fill in order again */
            b->bump = (uint8_t *)b + BLOCK_HEAD;
            c->spare = b;
        } else {
            if (b->aprev)
                b->aprev->anext = b->anext;
            else
                self->all = b->anext;
            if (b->anext)
                b->anext->aprev = b->aprev;
            self->nblocks--;
            block_unmap(b);
        }
    }
}

size_t tq_slab_block_bytes(const tq_slab_t *self) { return self->nblocks * BLOCK_SIZE; }

void tq_slab_destroy(tq_slab_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_slab_t *self = *self_p;
    while (self->all) {
        block_t *b = self->all;
        self->all = b->anext;
        block_unmap(b);
    }
    free(self);
    *self_p = NULL;
}
