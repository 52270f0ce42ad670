/* peers.c - workers and clients by routing id. See peers.h. */
#include "peers.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_util.h"

#define PEERS_BUCKETS 1024 /* hash chains; peers are few (hundreds) */

struct tq_peers {
    tq_peer_t **all;
    size_t n, cap;
    tq_peer_t *buckets[PEERS_BUCKETS];
    size_t rr, qrr;
    void *scratch; /* tq_peers_scratch */
    size_t scratch_cap;
};

static uint64_t rid_hash(tq_bytes_t b) { return tq_fnv1a(TQ_FNV_BASIS, b.data, b.len); }

tq_peers_t *tq_peers_new(void) { return tq_calloc(1, sizeof(tq_peers_t)); }

static void peer_free(tq_peer_t *p)
{
    TQ_ASSERT(p->outq.n == 0 && p->outq.m == NULL); /* tq_outbox_forget first */
    free(p->fns);
    free(p->leased);
    free(p->pending);
    free(p->sent);
    tq_idmap_destroy(&p->sent_ids);
    tq_idmap_destroy(&p->waits);
    free(p);
}

void tq_peers_destroy(tq_peers_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_peers_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        peer_free(self->all[i]);
    free(self->all);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

tq_peer_t *tq_peers_find(const tq_peers_t *self, tq_bytes_t rid)
{
    uint64_t h = rid_hash(rid);
    for (tq_peer_t *p = self->buckets[h % PEERS_BUCKETS]; p; p = p->hnext)
        if (p->hash == h && p->rid_len == rid.len && memcmp(p->rid, rid.data, rid.len) == 0)
            return p;
    return NULL;
}

tq_peer_t *tq_peers_add(tq_peers_t *self, tq_bytes_t rid, tq_role_t role, int64_t now_ms)
{
    TQ_ASSERT(rid.len >= 1 && rid.len <= TQ_MAX_ROUTING_ID);
    TQ_ASSERT(!tq_peers_find(self, rid));
    tq_peer_t *p = tq_calloc(1, sizeof *p);
    memcpy(p->rid, rid.data, rid.len);
    p->rid_len = rid.len;
    p->role = role;
    p->joined_ms = p->last_seen_ms = now_ms;
    p->name_tokens = TQ_PEER_NEW_NAMES_BURST;
    p->name_refill_ms = now_ms;
    p->hash = rid_hash(rid);
    p->hnext = self->buckets[p->hash % PEERS_BUCKETS];
    self->buckets[p->hash % PEERS_BUCKETS] = p;
    if (self->n == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 16;
        self->all = tq_realloc(self->all, self->cap * sizeof *self->all);
    }
    p->idx = self->n;
    self->all[self->n++] = p;
    if (role == TQ_ROLE_CLIENT) {
        p->waits = tq_idmap_new();
        p->sent_ids = tq_idmap_new();
    }
    return p;
}

void tq_peers_remove(tq_peers_t *self, tq_peer_t **peer_p)
{
    tq_peer_t *p = *peer_p;
    TQ_ASSERT(p->nleased == 0);
    TQ_ASSERT(!p->waits || tq_idmap_size(p->waits) == 0);
    tq_peer_t **pp = &self->buckets[p->hash % PEERS_BUCKETS];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    TQ_ASSERT(self->all[p->idx] == p);
    self->all[p->idx] = self->all[--self->n];
    self->all[p->idx]->idx = p->idx;
    peer_free(p);
    *peer_p = NULL;
}

size_t tq_peers_count(const tq_peers_t *self) { return self->n; }
tq_peer_t *tq_peers_at(const tq_peers_t *self, size_t i)
{
    return i < self->n ? self->all[i] : NULL;
}

size_t tq_peers_count_role(const tq_peers_t *self, tq_role_t role)
{
    size_t n = 0;
    for (size_t i = 0; i < self->n; i++)
        n += self->all[i]->role == role;
    return n;
}

size_t *tq_peers_rr(tq_peers_t *self) { return &self->rr; }
size_t *tq_peers_qrr(tq_peers_t *self) { return &self->qrr; }

void *tq_peers_scratch(tq_peers_t *self, size_t bytes)
{
    if (bytes > self->scratch_cap) {
        free(self->scratch);
        self->scratch_cap = bytes > 2 * self->scratch_cap ? bytes : 2 * self->scratch_cap;
        self->scratch = tq_malloc(self->scratch_cap);
    }
    return self->scratch;
}

int tq_peer_serves(const tq_peer_t *w, const char *fn)
{
    for (size_t i = 0; i < w->nfns; i++)
        if (w->fns[i] == fn)
            return 1;
    return 0;
}

void tq_peer_set_fns(tq_peer_t *w, const char *const *fns, size_t n)
{
    free(w->fns);
    w->fns = tq_calloc(n ? n : 1, sizeof *w->fns);
    memcpy(w->fns, fns, n * sizeof *fns);
    w->nfns = n;
}

void tq_peer_fns_text(const tq_peer_t *w, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < w->nfns; i++) {
        int n = snprintf(buf + off, len - off, "%s%s", i ? "," : "", w->fns[i]);
        if (n < 0 || (size_t)n >= len - off) {
            if (len > 4)
                memcpy(buf + len - 4, "...", 4);
            return;
        }
        off += (size_t)n;
    }
}

int tq_peer_take_name(tq_peer_t *p, int64_t now_ms)
{
    if (p->name_tokens >= TQ_PEER_NEW_NAMES_BURST) {
        p->name_refill_ms = now_ms;
    } else if (now_ms > p->name_refill_ms) {
        int64_t add = (now_ms - p->name_refill_ms) * TQ_PEER_NEW_NAMES_PER_S / 1000;
        if (add > 0) {
            int64_t t = p->name_tokens + add;
            p->name_tokens = t > TQ_PEER_NEW_NAMES_BURST ? TQ_PEER_NEW_NAMES_BURST : (uint32_t)t;
            p->name_refill_ms += add * 1000 / TQ_PEER_NEW_NAMES_PER_S;
        }
    }
    if (p->name_tokens == 0)
        return -1;
    p->name_tokens--;
    return 0;
}

void tq_peer_lease_add(tq_peer_t *w, tq_task_t *t)
{
    if (w->nleased == w->capleased) {
        w->capleased = w->capleased ? w->capleased * 2 : 8;
        w->leased = tq_realloc(w->leased, w->capleased * sizeof *w->leased);
    }
    t->x->peer_lease_idx = w->nleased; /* leased tasks have their cold part */
    w->leased[w->nleased++] = t;
}

void tq_peer_lease_remove(tq_peer_t *w, tq_task_t *t)
{
    size_t i = t->x->peer_lease_idx;
    TQ_ASSERT(i < w->nleased && w->leased[i] == t);
    w->leased[i] = w->leased[--w->nleased];
    w->leased[i]->x->peer_lease_idx = i;
    t->x->peer_lease_idx = (size_t)-1;
}

int tq_peer_wait_add(tq_peer_t *c, tq_task_t *t)
{
    if (tq_idmap_get(c->waits, t->id))
        return -1;
    tq_idmap_put(c->waits, t->id, t);
    tq_task_waiter_add(t, c);
    return 0;
}

void tq_peer_pending_add(tq_peer_t *c, uint64_t id)
{
    if (c->npending == c->cappending) {
        c->cappending = c->cappending ? c->cappending * 2 : 16;
        c->pending = tq_realloc(c->pending, c->cappending * sizeof *c->pending);
    }
    c->pending[c->npending++] = id;
}

void tq_peer_sent_add(tq_peer_t *c, uint64_t id, uint64_t bytes)
{
    TQ_ASSERT(bytes > 0 && c->sent_ids);
    if (c->nsent == c->capsent) { /* grow the ring, unrolled to the front */
        size_t ncap = c->capsent ? c->capsent * 2 : 64;
        tq_peer_sent_t *n = tq_malloc(ncap * sizeof *n);
        for (size_t i = 0; i < c->nsent; i++)
            n[i] = c->sent[(c->sent_head + i) % c->capsent];
        free(c->sent);
        c->sent = n;
        c->capsent = ncap;
        c->sent_head = 0;
    }
    c->sent_total += bytes;
    c->sent[(c->sent_head + c->nsent) % c->capsent] = (tq_peer_sent_t){id, c->sent_total};
    c->nsent++;
    tq_idmap_put(c->sent_ids, id, (void *)(uintptr_t)c->sent_total);
}

void tq_peer_sent_ack(tq_peer_t *c, uint64_t id)
{
    if (!c->sent_ids)
        return;
    /* ACKs come mostly in send order: the oldest outcome needs no lookup */
    uintptr_t mark = c->nsent && c->sent[c->sent_head].id == id
                         ? (uintptr_t)c->sent[c->sent_head].mark
                         : (uintptr_t)tq_idmap_get(c->sent_ids, id);
    if (mark == 0 || mark <= c->acked_total)
        return;
    c->acked_total = mark;
    while (c->nsent > 0 && c->sent[c->sent_head].mark <= c->acked_total) {
        const tq_peer_sent_t *s = &c->sent[c->sent_head];
        void *v = tq_idmap_remove(c->sent_ids, s->id);
        if (v && (uintptr_t)v != s->mark)
            tq_idmap_put(c->sent_ids, s->id, v); /* a newer copy of that id */
        c->sent_head = (c->sent_head + 1) % c->capsent;
        c->nsent--;
    }
}

/* Forget every unconfirmed outcome (a new session: the old queue is
 * gone or will be read by the new one). */
static void sent_reset(tq_peer_t *c)
{
    if (c->sent_ids) {
        tq_idmap_destroy(&c->sent_ids);
        c->sent_ids = tq_idmap_new();
    }
    c->nsent = c->sent_head = 0;
    c->acked_total = c->sent_total;
}


void tq_peer_notify_waiters(tq_task_t *t)
{
    for (size_t i = 0; i < tq_task_nwaiters(t); i++) {
        tq_peer_t *c = t->x->waiters[i];
        tq_idmap_remove(c->waits, t->id);
        tq_peer_pending_add(c, t->id);
    }
    tq_task_waiters_clear(t);
}

typedef struct {
    tq_peer_t *client;
} drop_arg_t;

static void drop_one(uint64_t id, void *value, void *arg)
{
    (void)id;
    tq_task_waiter_remove(value, ((drop_arg_t *)arg)->client);
}

void tq_peer_drop_waits(tq_peer_t *c, tq_store_t *store)
{
    (void)store;
    if (!c->waits)
        return;
    drop_arg_t a = {c};
    tq_idmap_each(c->waits, drop_one, &a);
    tq_idmap_destroy(&c->waits);
    c->waits = tq_idmap_new();
    c->npending = 0;
    sent_reset(c);
}


void tq_worker_id(const tq_peer_t *p, char *out, size_t len)
{
    snprintf(out, len, "%016" PRIx64, p->instance);
}
