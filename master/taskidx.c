/* taskidx.c - paged id map. See taskidx.h. */
#include "taskidx.h"

#include <stdlib.h>
#include <string.h>

#include "tq_util.h"

#define SHIFT 6 /* log2(TQ_TASKIDX_PAGE) */

typedef struct {
    size_t n; /* slots in use */
    void *slot[TQ_TASKIDX_PAGE];
} page_t;

/* Directory entry: page number (id >> SHIFT) and its page, NULL for an
 * emptied page not compacted away yet (kept so the directory stays
 * dense and sorted). */
typedef struct {
    uint64_t pn;
    page_t *p;
} dirent_t;

struct tq_taskidx {
    dirent_t *dir; /* live entries are dir[lo..hi), sorted by pn */
    size_t lo, hi, cap;
    size_t holes; /* entries in lo..hi with p == NULL */
    size_t size;
};

tq_taskidx_t *tq_taskidx_new(void) { return tq_calloc(1, sizeof(tq_taskidx_t)); }

void tq_taskidx_destroy(tq_taskidx_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_taskidx_t *self = *self_p;
    for (size_t i = self->lo; i < self->hi; i++)
        free(self->dir[i].p);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

size_t tq_taskidx_size(const tq_taskidx_t *self) { return self->size; }

/* Index of the first entry with pn >= pn (hi if none). */
static size_t dir_find(const tq_taskidx_t *self, uint64_t pn)
{
    if (self->lo == self->hi)
        return self->hi;
    uint64_t first = self->dir[self->lo].pn;
    if (pn <= first)
        return self->lo;
    /* dense fast paths: no gaps below pn, or none above it (ids after a
     * restart start far above the recovered ones: two dense runs) */
    size_t n = self->hi - self->lo;
    if (pn - first < n && self->dir[self->lo + (pn - first)].pn == pn)
        return self->lo + (size_t)(pn - first);
    uint64_t last = self->dir[self->hi - 1].pn;
    if (pn > last)
        return self->hi;
    if (last - pn < n && self->dir[self->hi - 1 - (last - pn)].pn == pn)
        return self->hi - 1 - (size_t)(last - pn);
    size_t a = self->lo, b = self->hi;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (self->dir[m].pn < pn)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

static page_t *page_of(const tq_taskidx_t *self, uint64_t id)
{
    uint64_t pn = id >> SHIFT;
    size_t i = dir_find(self, pn);
    return i < self->hi && self->dir[i].pn == pn ? self->dir[i].p : NULL;
}

void *tq_taskidx_get(const tq_taskidx_t *self, uint64_t id)
{
    page_t *p = page_of(self, id);
    return p ? p->slot[id & (TQ_TASKIDX_PAGE - 1)] : NULL;
}

/* Drop the holes from the directory (and the space below lo). */
static void dir_compact(tq_taskidx_t *self)
{
    size_t w = 0;
    for (size_t i = self->lo; i < self->hi; i++)
        if (self->dir[i].p)
            self->dir[w++] = self->dir[i];
    self->lo = 0;
    self->hi = w;
    self->holes = 0;
}

/* Room for one more entry at hi. */
static void dir_reserve(tq_taskidx_t *self)
{
    if (self->hi < self->cap)
        return;
    if (self->lo > 0 || self->holes > 0)
        dir_compact(self);
    if (self->hi * 4 < self->cap * 3 && self->hi < self->cap)
        return;
    self->cap = self->cap ? self->cap * 2 : 16;
    self->dir = tq_realloc(self->dir, self->cap * sizeof *self->dir);
}

/* The page for pn, created if absent. */
static page_t *page_make(tq_taskidx_t *self, uint64_t pn)
{
    size_t i = dir_find(self, pn);
    if (i < self->hi && self->dir[i].pn == pn) {
        if (!self->dir[i].p) {
            self->dir[i].p = tq_calloc(1, sizeof(page_t));
            self->holes--;
        }
        return self->dir[i].p;
    }
    page_t *p = tq_calloc(1, sizeof *p);
    if (i == self->lo && self->lo > 0) { /* in front: the space below lo */
        self->dir[--self->lo] = (dirent_t){pn, p};
        return p;
    }
    dir_reserve(self);
    i = dir_find(self, pn); /* the reserve may have moved the entries */
    memmove(&self->dir[i + 1], &self->dir[i], (self->hi - i) * sizeof *self->dir);
    self->dir[i] = (dirent_t){pn, p};
    self->hi++;
    return p;
}

void tq_taskidx_put(tq_taskidx_t *self, uint64_t id, void *value)
{
    TQ_ASSERT(id != 0 && value != NULL);
    page_t *p = page_make(self, id >> SHIFT);
    void **s = &p->slot[id & (TQ_TASKIDX_PAGE - 1)];
    if (!*s) {
        p->n++;
        self->size++;
    }
    *s = value;
}

void *tq_taskidx_remove(tq_taskidx_t *self, uint64_t id)
{
    uint64_t pn = id >> SHIFT;
    size_t i = dir_find(self, pn);
    if (i >= self->hi || self->dir[i].pn != pn || !self->dir[i].p)
        return NULL;
    page_t *p = self->dir[i].p;
    void **s = &p->slot[id & (TQ_TASKIDX_PAGE - 1)];
    void *v = *s;
    if (!v)
        return NULL;
    *s = NULL;
    self->size--;
    if (--p->n > 0)
        return v;
    free(p);
    self->dir[i].p = NULL;
    self->holes++;
    while (self->lo < self->hi && !self->dir[self->lo].p) {
        self->lo++;
        self->holes--;
    }
    while (self->hi > self->lo && !self->dir[self->hi - 1].p) {
        self->hi--;
        self->holes--;
    }
    if (self->holes > 64 && self->holes > (self->hi - self->lo) / 2)
        dir_compact(self);
    return v;
}

void *tq_taskidx_next(const tq_taskidx_t *self, uint64_t id, uint64_t *found)
{
    uint64_t pn = id >> SHIFT;
    for (size_t i = dir_find(self, pn); i < self->hi; i++) {
        page_t *p = self->dir[i].p;
        if (!p)
            continue;
        size_t s = self->dir[i].pn == pn ? (size_t)(id & (TQ_TASKIDX_PAGE - 1)) : 0;
        for (; s < TQ_TASKIDX_PAGE; s++)
            if (p->slot[s]) {
                *found = (self->dir[i].pn << SHIFT) | s;
                return p->slot[s];
            }
    }
    return NULL;
}
