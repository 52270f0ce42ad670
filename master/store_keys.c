/* store_keys.c - idempotency keys: retained keys (their own entries, with
 * an expiry) and session keys (kept in their task's record: a table of
 * task pointers, and the shared beginnings of long keys held once).
 * See store.h. */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "tq_util.h"

size_t keys_part_size(size_t len) { return len <= TQ_KEY_TAIL ? len : 4 + TQ_KEY_TAIL; }

size_t keys_count(const tq_store_t *self) { return self->keys.nret + self->keys.nsess; }

size_t tq_store_nkeys(const tq_store_t *self) { return keys_count(self); }

/* ---- stems ------------------------------------------------------------- */

static uint32_t task_stem(const tq_task_t *t)
{
    uint32_t s;
    memcpy(&s, t->bytes, sizeof s);
    return s;
}

/* Index of the stem with bytes p[n] (hash h), or 0. */
static uint32_t stem_find(const keys_t *k, const uint8_t *p, size_t n, uint64_t h)
{
    if (!k->shcap)
        return 0;
    size_t m = k->shcap - 1;
    for (size_t j = (size_t)h & m; k->shash[j]; j = (j + 1) & m) {
        const stem_t *s = k->stems[k->shash[j]];
        if (s->hash == h && s->len == n && memcmp(s->b, p, n) == 0)
            return k->shash[j];
    }
    return 0;
}

static void shash_put(keys_t *k, uint32_t idx)
{
    size_t m = k->shcap - 1;
    size_t j = (size_t)k->stems[idx]->hash & m;
    while (k->shash[j])
        j = (j + 1) & m;
    k->shash[j] = idx;
}

static void shash_grow(keys_t *k)
{
    uint32_t *old = k->shash;
    size_t ocap = k->shcap;
    k->shcap = ocap ? ocap * 2 : 64;
    k->shash = tq_calloc(k->shcap, sizeof *k->shash);
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            shash_put(k, old[i]);
    free(old);
}

/* A reference to the stem p[n] (hash h), created if absent. */
static uint32_t stem_ref(keys_t *k, const uint8_t *p, size_t n, uint64_t h)
{
    uint32_t idx = stem_find(k, p, n, h);
    if (idx) {
        k->stems[idx]->refs++;
        return idx;
    }
    if (k->nsfree) {
        idx = k->sfree[--k->nsfree];
    } else {
        if (k->nstems == 0)
            k->nstems = 1; /* index 0 means none */
        if (k->nstems >= k->stems_cap) {
            k->stems_cap = k->stems_cap ? k->stems_cap * 2 : 16;
            k->stems = tq_realloc(k->stems, k->stems_cap * sizeof *k->stems);
            k->sfree = tq_realloc(k->sfree, k->stems_cap * sizeof *k->sfree);
        }
        TQ_ASSERT(k->nstems < UINT32_MAX);
        idx = (uint32_t)k->nstems++;
    }
    stem_t *s = tq_malloc(sizeof *s + n);
    s->hash = h;
    s->refs = 1;
    s->len = (uint32_t)n;
    memcpy(s->b, p, n);
    k->stems[idx] = s;
    if ((k->nshash + 1) * 2 > k->shcap)
        shash_grow(k);
    shash_put(k, idx);
    k->nshash++;
    return idx;
}

static void stem_unref(keys_t *k, uint32_t idx)
{
    stem_t *s = k->stems[idx];
    if (--s->refs > 0)
        return;
    /* out of the hash: backward shift, so probes stay unbroken */
    size_t m = k->shcap - 1;
    size_t i = (size_t)s->hash & m;
    while (k->shash[i] != idx)
        i = (i + 1) & m;
    for (size_t j = (i + 1) & m; k->shash[j]; j = (j + 1) & m) {
        size_t home = (size_t)k->stems[k->shash[j]]->hash & m;
        if (((j - home) & m) >= ((j - i) & m)) {
            k->shash[i] = k->shash[j];
            i = j;
        }
    }
    k->shash[i] = 0;
    k->nshash--;
    free(s);
    k->stems[idx] = NULL;
    k->sfree[k->nsfree++] = idx;
}

/* ---- session keys ------------------------------------------------------ */

/* Hash of t's session key (the same as tq_fnv1a over its bytes). */
static uint64_t task_key_hash(const keys_t *k, const tq_task_t *t)
{
    if (t->skey_len <= TQ_KEY_TAIL)
        return tq_fnv1a(TQ_FNV_BASIS, t->bytes, t->skey_len);
    return tq_fnv1a(k->stems[task_stem(t)]->hash, t->bytes + 4, TQ_KEY_TAIL);
}

static void stab_put(keys_t *k, tq_task_t *t)
{
    size_t m = k->scap - 1;
    size_t j = (size_t)task_key_hash(k, t) & m;
    while (k->stab[j])
        j = (j + 1) & m;
    k->stab[j] = t;
}

static void stab_grow(keys_t *k)
{
    tq_task_t **old = k->stab;
    size_t ocap = k->scap;
    k->scap = ocap ? ocap * 2 : 64;
    k->stab = tq_calloc(k->scap, sizeof *k->stab);
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            stab_put(k, old[i]);
    free(old);
}

tq_task_t *keys_session_find(const tq_store_t *self, tq_bytes_t key)
{
    const keys_t *k = &self->keys;
    if (!k->nsess || key.len == 0 || key.len > TQ_MAX_KEY)
        return NULL;
    uint32_t stem = 0;
    uint64_t h;
    const uint8_t *tail = key.data;
    if (key.len > TQ_KEY_TAIL) {
        size_t sl = key.len - TQ_KEY_TAIL;
        uint64_t sh = tq_fnv1a(TQ_FNV_BASIS, key.data, sl);
        if (!(stem = stem_find(k, key.data, sl, sh)))
            return NULL; /* no held key starts so */
        tail = key.data + sl;
        h = tq_fnv1a(sh, tail, TQ_KEY_TAIL);
    } else {
        h = tq_fnv1a(TQ_FNV_BASIS, key.data, key.len);
    }
    size_t m = k->scap - 1;
    for (size_t j = (size_t)h & m; k->stab[j]; j = (j + 1) & m) {
        const tq_task_t *t = k->stab[j];
        if (t->skey_len != key.len)
            continue;
        if (stem ? task_stem(t) == stem && memcmp(t->bytes + 4, tail, TQ_KEY_TAIL) == 0
                 : memcmp(t->bytes, key.data, key.len) == 0)
            return k->stab[j];
    }
    return NULL;
}

void keys_session_attach(tq_store_t *self, tq_task_t *t, tq_bytes_t key)
{
    keys_t *k = &self->keys;
    TQ_ASSERT(key.len == t->skey_len && key.len > 0);
    if (key.len <= TQ_KEY_TAIL) {
        memcpy(t->bytes, key.data, key.len);
    } else {
        size_t sl = key.len - TQ_KEY_TAIL;
        uint32_t idx = stem_ref(k, key.data, sl, tq_fnv1a(TQ_FNV_BASIS, key.data, sl));
        memcpy(t->bytes, &idx, sizeof idx);
        memcpy(t->bytes + 4, key.data + sl, TQ_KEY_TAIL);
    }
    /* load at most 3/4: linear probing stays short */
    if ((k->nsess + 1) * 4 > k->scap * 3)
        stab_grow(k);
    stab_put(k, t);
    k->nsess++;
    t->flags |= TQ_TASK_F_SKEY;
}

void keys_session_detach(tq_store_t *self, tq_task_t *t)
{
    keys_t *k = &self->keys;
    TQ_ASSERT(t->flags & TQ_TASK_F_SKEY);
    size_t m = k->scap - 1;
    size_t i = (size_t)task_key_hash(k, t) & m;
    while (k->stab[i] != t)
        i = (i + 1) & m;
    for (size_t j = (i + 1) & m; k->stab[j]; j = (j + 1) & m) {
        size_t home = (size_t)task_key_hash(k, k->stab[j]) & m;
        if (((j - home) & m) >= ((j - i) & m)) {
            k->stab[i] = k->stab[j];
            i = j;
        }
    }
    k->stab[i] = NULL;
    k->nsess--;
    if (t->skey_len > TQ_KEY_TAIL)
        stem_unref(k, task_stem(t));
    t->flags &= (uint8_t)~TQ_TASK_F_SKEY;
}

size_t tq_task_skey_len(const tq_task_t *t) { return t->flags & TQ_TASK_F_SKEY ? t->skey_len : 0; }

size_t tq_store_task_skey(const tq_store_t *self, const tq_task_t *t, uint8_t out[TQ_MAX_KEY])
{
    if (!(t->flags & TQ_TASK_F_SKEY))
        return 0;
    if (t->skey_len <= TQ_KEY_TAIL) {
        memcpy(out, t->bytes, t->skey_len);
    } else {
        const stem_t *s = self->keys.stems[task_stem(t)];
        memcpy(out, s->b, s->len);
        memcpy(out + s->len, t->bytes + 4, TQ_KEY_TAIL);
    }
    return t->skey_len;
}

/* ---- retained keys ------------------------------------------------------ */

key_ent_t *keys_retained_find(const tq_store_t *self, tq_bytes_t key)
{
    const keys_t *k = &self->keys;
    if (!k->cap)
        return NULL;
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, key.data, key.len);
    for (key_ent_t *e = k->buckets[h & (k->cap - 1)]; e; e = e->hnext)
        if (e->hash == h && e->len == key.len && memcmp(e->key, key.data, key.len) == 0)
            return e;
    return NULL;
}

static void ret_grow(keys_t *k)
{
    size_t ncap = k->cap ? k->cap * 2 : 64;
    key_ent_t **nb = tq_calloc(ncap, sizeof *nb);
    for (size_t i = 0; i < k->cap; i++) {
        key_ent_t *e = k->buckets[i];
        while (e) {
            key_ent_t *next = e->hnext;
            size_t j = e->hash & (ncap - 1);
            e->hnext = nb[j];
            nb[j] = e;
            e = next;
        }
    }
    free(k->buckets);
    k->buckets = nb;
    k->cap = ncap;
}

void keys_retained_delete(tq_store_t *self, key_ent_t *e)
{
    keys_t *k = &self->keys;
    if (self->kobs)
        self->kobs(self->obs_arg, e, 1);
    key_ent_t **pp = &k->buckets[e->hash & (k->cap - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        k->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        k->tail = e->prev;
    k->nret--;
    free(e);
}

void keys_retained_insert(tq_store_t *self, key_ent_t *e)
{
    keys_t *k = &self->keys;
    if (k->nret + 1 > k->cap)
        ret_grow(k);
    size_t j = e->hash & (k->cap - 1);
    e->hnext = k->buckets[j];
    k->buckets[j] = e;
    e->next = NULL;
    e->prev = k->tail;
    if (k->tail)
        k->tail->next = e;
    else
        k->head = e;
    k->tail = e;
    k->nret++;
}

key_ent_t *keys_retained_new(tq_bytes_t key)
{
    key_ent_t *e = malloc(sizeof *e + key.len);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    memcpy(e->key, key.data, key.len);
    e->len = key.len;
    e->hash = tq_fnv1a(TQ_FNV_BASIS, key.data, key.len);
    return e;
}

int keys_prepare(tq_store_t *self, tq_bytes_t key, tq_err_t *err)
{
    if (keys_session_find(self, key)) {
        /* a session key still held by a live task: cannot happen, the
         * caller looked the key up first */
        return tq_err_set(err, TQ_ERR_INTERNAL, "an idempotency key is held twice");
    }
    key_ent_t *old = keys_retained_find(self, key);
    if (old)
        keys_retained_delete(self, old);
    if (keys_count(self) >= self->cfg.max_tasks)
        return store_full(self, err);
    return 0;
}

uint64_t tq_store_key_find(const tq_store_t *self, tq_bytes_t key, int64_t now_ms)
{
    if (key.len == 0 || key.len > TQ_MAX_KEY)
        return 0;
    tq_task_t *t = keys_session_find(self, key);
    if (t)
        return t->id; /* held while its task is: no expiry */
    key_ent_t *e = keys_retained_find(self, key);
    return e && e->expires_ms > now_ms ? e->id : 0;
}

tq_key_t *tq_store_key_first(const tq_store_t *self) { return self->keys.head; }

/* Walk from both ends of the creation-order list at once: a task's key
 * was made when the task was, so recent and old tasks are both found
 * within a few steps; at most max_steps entries are looked at. */
const tq_key_t *tq_store_key_of(const tq_store_t *self, const tq_task_t *t, size_t max_steps)
{
    if (!tq_task_keyed(t))
        return NULL;
    const key_ent_t *a = self->keys.head, *b = self->keys.tail;
    for (size_t n = 0; a && n < max_steps; n += 2) {
        if (a->id == t->id)
            return a;
        if (b->id == t->id)
            return b;
        if (a == b || a->next == b)
            break;
        a = a->next;
        b = b->prev;
    }
    return NULL;
}
tq_key_t *tq_key_next(const tq_key_t *k) { return k->next; }
tq_bytes_t tq_key_bytes(const tq_key_t *k)
{
    tq_bytes_t b = {k->key, k->len};
    return b;
}
uint64_t tq_key_id(const tq_key_t *k) { return k->id; }
int64_t tq_key_expires(const tq_key_t *k) { return k->expires_ms; }

int tq_store_key_restore(tq_store_t *self, tq_bytes_t key, uint64_t id, int64_t expires_ms)
{
    if (key.len == 0 || key.len > TQ_MAX_KEY || id == 0)
        return -1;
    if (keys_session_find(self, key))
        return 0; /* a live task's session key: keep it */
    key_ent_t *old = keys_retained_find(self, key);
    if (old)
        keys_retained_delete(self, old);
    key_ent_t *ke = keys_retained_new(key);
    if (!ke)
        return -1;
    ke->id = id;
    ke->expires_ms = expires_ms;
    keys_retained_insert(self, ke);
    if (id >= self->next_id)
        self->next_id = id + 1;
    return 0;
}

void keys_free(tq_store_t *self)
{
    keys_t *k = &self->keys;
    while (k->head) {
        key_ent_t *e = k->head;
        k->head = e->next;
        free(e);
    }
    free(k->buckets);
    free(k->stab);
    for (size_t i = 1; i < k->nstems; i++)
        free(k->stems[i]);
    free(k->stems);
    free(k->sfree);
    free(k->shash);
    memset(k, 0, sizeof *k);
}
