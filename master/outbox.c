/* outbox.c - sending, per-peer queues and their gates. See outbox.h. */
#include "outbox.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "engine.h"
#include "tq_log.h"
#include "tq_util.h"

/* Outcomes held for one client that does not read them (8 MiB of ids).
 * Past it the client is forgotten, as if it had gone: its results stay
 * stored, and a live client says HELLO again and WAITs for them. */
#define OUTBOX_MAX_PENDING (1u << 20)
/* What one outcome in RESULTS costs against --peer-queue-bytes besides
 * its data: its record and ZeroMQ's bookkeeping, so that empty results
 * are bounded too (and the ring of unconfirmed outcomes with them). */
#define OUTBOX_OUTCOME_COST 64u

/* One queued message: its frames one after another in data. */
struct tq_outmsg {
    uint8_t *data;
    uint32_t *lens;
    size_t nframes, bytes;
    uint64_t lsn;  /* journal LSN it waits for (0: none) */
    uint64_t pass; /* loop pass it waits for (0: none) */
    int dispatch;  /* a DISPATCH (not counted against the reply cap) */
};

typedef struct {
    tq_peer_t *w;
    uint64_t id;
    uint32_t attempt;
} kill_t;

struct tq_outbox {
    void *router;
    tq_peers_t *peers;
    tq_out_t out;
    uint64_t pass;       /* loop passes so far */
    uint64_t held_until; /* a reply is held until this pass ends */
    int stalled, gone;
    kill_t *kills;
    size_t nkills, capkills;
};

tq_outbox_t *tq_outbox_new(void *router, tq_peers_t *peers)
{
    tq_outbox_t *self = tq_calloc(1, sizeof *self);
    self->router = router;
    self->peers = peers;
    tq_out_init(&self->out);
    return self;
}

void tq_outbox_destroy(tq_outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_outbox_t *self = *self_p;
    tq_out_free(&self->out);
    free(self->kills);
    free(self);
    *self_p = NULL;
}

tq_out_t *tq_outbox_msg(tq_outbox_t *self) { return &self->out; }

static tq_bytes_t rid_of(const tq_peer_t *p) { return (tq_bytes_t){p->rid, p->rid_len}; }

static void mark_gone(tq_outbox_t *self, tq_peer_t *p)
{
    p->gone = 1;
    self->gone = 1;
}

/* ---- the queue ---------------------------------------------------------- */

/* 1 if the built message may be queued rather than dropped: anything
 * but HEARTBEAT (the next replaces it) and RESULTS (kept as pending ids). */
static int queueable(const tq_out_t *o)
{
    return o->type != TQ_MSG_HEARTBEAT && o->type != TQ_MSG_RESULTS;
}

/* Queue a copy of the built message (its frames as tq_out_send would
 * send them: the head, then the data frames) in p. A peer whose replies
 * pile up past TQ_OUTBOX_MAX_QUEUED_BYTES reads nothing: it is
 * forgotten. */
static void enqueue(tq_outbox_t *self, tq_peer_t *p, uint64_t lsn, uint64_t pass, int blocked)
{
    tq_outq_t *q = &p->outq;
    const tq_out_t *o = &self->out;
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 16;
        q->m = tq_realloc(q->m, q->cap * sizeof *q->m);
    }
    tq_outmsg_t *m = &q->m[q->n++];
    m->nframes = 1 + o->nparts;
    m->bytes = o->head.len + o->part_bytes;
    m->data = tq_malloc(m->bytes ? m->bytes : 1);
    m->lens = tq_malloc(m->nframes * sizeof *m->lens);
    memcpy(m->data, o->head.data, o->head.len);
    m->lens[0] = (uint32_t)o->head.len;
    size_t off = o->head.len;
    for (size_t i = 0; i < o->nparts; i++) {
        if (o->parts[i].len)
            memcpy(m->data + off, o->parts[i].data, o->parts[i].len);
        m->lens[1 + i] = (uint32_t)o->parts[i].len;
        off += o->parts[i].len;
    }
    m->lsn = lsn;
    m->pass = pass;
    m->dispatch = o->type == TQ_MSG_DISPATCH;
    if (!m->dispatch)
        q->reply_bytes += m->bytes;
    if (blocked) {
        self->stalled = 1; /* the pipe was full: try again soon */
        if (m->dispatch)
            tq_debug("worker %s: its queue is full, a DISPATCH of %zu bytes waits in the master",
                     p->name, m->bytes);
    }
    if (q->reply_bytes > TQ_OUTBOX_MAX_QUEUED_BYTES && !p->gone) {
        tq_warn("%s %s reads no replies (%zu bytes waiting): forgetting it",
                p->role == TQ_ROLE_WORKER ? "worker" : "client", p->name, q->reply_bytes);
        mark_gone(self, p);
    }
}

static void msg_free(tq_outmsg_t *m)
{
    free(m->data);
    free(m->lens);
}

/* Drop the first n queued messages of p (sent). */
static void pop(tq_peer_t *p, size_t n)
{
    tq_outq_t *q = &p->outq;
    for (size_t i = 0; i < n; i++) {
        if (!q->m[i].dispatch)
            q->reply_bytes -= q->m[i].bytes;
        msg_free(&q->m[i]);
    }
    if (n && q->n > n)
        memmove(q->m, q->m + n, (q->n - n) * sizeof *q->m);
    q->n -= n;
}

/* Send one queued message. Returns 0, or -1 with errno (nothing sent). */
static int send_queued(tq_outbox_t *self, tq_peer_t *p, const tq_outmsg_t *m)
{
    if (zmq_send(self->router, p->rid, p->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /* after the routing id is accepted the message goes through whole */
    size_t off = 0;
    for (size_t i = 0; i < m->nframes; i++) {
        int more = i + 1 < m->nframes ? ZMQ_SNDMORE : 0;
        zmq_send(self->router, m->data + off, m->lens[i], more | ZMQ_DONTWAIT);
        off += m->lens[i];
    }
    return 0;
}

void tq_outbox_flush(tq_outbox_t *self, tq_peer_t *p, uint64_t ready_lsn)
{
    tq_outq_t *q = &p->outq;
    size_t sent = 0;
    while (sent < q->n && !p->gone) {
        const tq_outmsg_t *m = &q->m[sent];
        if (m->lsn > ready_lsn)
            break; /* a reply whose records are not in the journal yet */
        if (m->pass > self->pass)
            break; /* an ack held for its results: next pass */
        if (send_queued(self, p, m) < 0) {
            if (errno == EHOSTUNREACH)
                mark_gone(self, p);
            else
                self->stalled = 1;
            break;
        }
        sent++;
    }
    pop(p, sent);
}

void tq_outbox_forget(tq_outbox_t *self, tq_peer_t *p)
{
    pop(p, p->outq.n);
    free(p->outq.m);
    p->outq.m = NULL;
    p->outq.cap = 0;
    size_t k = 0;
    for (size_t i = 0; i < self->nkills; i++)
        if (self->kills[i].w != p)
            self->kills[k++] = self->kills[i];
    self->nkills = k;
}

/* ---- sending ------------------------------------------------------------ */

int tq_outbox_send(tq_outbox_t *self, tq_peer_t *p)
{
    if (p->gone) {
        errno = EHOSTUNREACH;
        return -1;
    }
    int can_queue = queueable(&self->out);
    if (can_queue && p->outq.n > 0) { /* stay behind the older ones */
        enqueue(self, p, 0, 0, 0);
        return 0;
    }
    tq_bytes_t rid = rid_of(p);
    if (tq_out_send_packed(&self->out, self->router, &rid, ZMQ_DONTWAIT, p->packed) == 0)
        return 0;
    int e = errno;
    if (e == EAGAIN && can_queue) {
        enqueue(self, p, 0, 0, 1);
        return 0;
    }
    if (e == EHOSTUNREACH)
        mark_gone(self, p);
    else if (e != EAGAIN)
        tq_warn("send %s to %s failed: %s", tq_msg_type_name(self->out.type), p->name,
                zmq_strerror(e));
    errno = e;
    return -1;
}

void tq_outbox_send_gated(tq_outbox_t *self, tq_peer_t *p, uint64_t lsn, uint64_t ready_lsn,
                          int hold)
{
    if (p->gone)
        return;
    if (!hold && lsn <= ready_lsn) {
        tq_outbox_send(self, p);
        return;
    }
    if (hold)
        self->held_until = self->pass + 1;
    enqueue(self, p, lsn, hold ? self->held_until : 0, 0);
}

void tq_outbox_send_rid(tq_outbox_t *self, tq_bytes_t rid)
{
    tq_peer_t *p = tq_peers_find(self->peers, rid);
    if (p) {
        tq_outbox_send(self, p);
        return;
    }
    tq_out_send(&self->out, self->router, &rid, ZMQ_DONTWAIT);
}

void tq_outbox_error(tq_outbox_t *self, tq_bytes_t rid, int code, uint32_t ref, const char *msg)
{
    tq_out_error(&self->out, code, ref, msg);
    tq_outbox_send_rid(self, rid);
}

int tq_outbox_dispatch(tq_outbox_t *self, tq_peer_t *w, tq_task_t *const *tasks, size_t n)
{
    if (w->gone)
        return -1;
    tq_out_begin(&self->out, TQ_MSG_DISPATCH);
    for (size_t i = 0; i < n; i++) {
        tq_dispatch_item_t d = {tasks[i]->id, tq_task_attempt(tasks[i]) + 1u,
                                tq_task_timeout(tasks[i]), tq_bytes_str(tq_task_fn(tasks[i])),
                                tq_task_payload(tasks[i])};
        tq_out_dispatch_item(&self->out, &d);
        tq_task_lend_payload(tasks[i], &self->out); /* a large one: no copy */
    }
    if (tq_outbox_send(self, w) < 0)
        return -1; /* gone */
    if (w->outq.n)
        w->stalled = 1; /* its pipe is full: no more this pass */
    return 0;
}

void tq_outbox_kill(tq_outbox_t *self, tq_peer_t *w, uint64_t id, uint32_t attempt)
{
    if (self->nkills == self->capkills) {
        self->capkills = self->capkills ? self->capkills * 2 : 64;
        self->kills = tq_realloc(self->kills, self->capkills * sizeof *self->kills);
    }
    self->kills[self->nkills++] = (kill_t){w, id, attempt};
}

void tq_outbox_send_kills(tq_outbox_t *self)
{
    size_t nk = self->nkills;
    for (size_t i = 0; i < nk; i++) {
        tq_peer_t *w = self->kills[i].w;
        if (!w)
            continue;
        tq_out_begin(&self->out, TQ_MSG_KILL);
        for (size_t k = i; k < nk; k++) {
            if (self->kills[k].w != w)
                continue;
            if (tq_out_count(&self->out) == TQ_MAX_BATCH) {
                tq_outbox_send(self, w);
                tq_out_begin(&self->out, TQ_MSG_KILL);
            }
            tq_out_lease(&self->out, self->kills[k].id, self->kills[k].attempt);
            self->kills[k].w = NULL;
        }
        tq_outbox_send(self, w);
    }
    self->nkills = 0;
}

/* ---- RESULTS ------------------------------------------------------------- */

/* Send client c the outcomes queued for it (c->pending) in as many
 * RESULTS as they need. When the client's queue is full (EAGAIN: it
 * reads slowly), the outcomes not sent stay pending and are tried again
 * soon: a subscribed client never waits again, so an outcome dropped
 * here would leave it waiting forever.
 *
 * ZMQ_SNDHWM counts messages, not bytes, so the bytes handed to ZeroMQ
 * for one client are bounded here: an outcome costs its data plus
 * OUTBOX_OUTCOME_COST, and once --peer-queue-bytes of them wait for the
 * client's ACK (tq_peer_unconfirmed) the rest stay pending as task ids
 * (8 bytes each, no copy) until an ACK says the client read them. One
 * outcome larger than the budget still goes when nothing else waits. */
void tq_outbox_results(tq_outbox_t *self, tq_peer_t *c, tq_engine_t *engine, uint64_t peer_bytes,
                       tq_now_t now)
{
    tq_store_t *store = tq_engine_store(engine);
    size_t i = 0;
    uint64_t budget = peer_bytes ? peer_bytes : UINT64_MAX;
    uint64_t charge[TQ_MAX_BATCH];
    int over = 0;
    while (i < c->npending && !over) {
        size_t first = i;
        uint64_t inflight = tq_peer_unconfirmed(c);
        tq_out_t *out = &self->out;
        tq_out_begin(out, TQ_MSG_RESULTS);
        while (i < c->npending && !tq_out_full(out)) {
            tq_task_t *t = tq_store_get(store, c->pending[i]);
            tq_outcome_t o = {c->pending[i], TQ_ST_UNKNOWN, 0, {NULL, 0}};
            if (t && tq_task_finished(t)) {
                o.status = tq_task_wire_status(t);
                o.attempts = tq_task_attempt(t);
                o.data = tq_task_data(t);
            }
            uint64_t cost = (uint64_t)o.data.len + OUTBOX_OUTCOME_COST;
            if (inflight > 0 && (inflight > budget || budget - inflight < cost)) {
                over = 1; /* the client has not read what it has: wait for its ACK */
                break;
            }
            inflight += cost;
            charge[i - first] = cost;
            tq_out_outcome(out, &o);
            if (t && tq_task_finished(t))
                tq_task_lend_data(t, out); /* a large one: no copy */
            i++;
        }
        if (i == first)
            break;
        if (tq_outbox_send(self, c) < 0) {
            if (!c->gone) { /* EAGAIN: keep what was not sent, in order */
                i = first;
                self->stalled = 1;
                break;
            }
            c->npending = 0;
            return; /* gone: reaped with its waits */
        }
        for (size_t k = first; k < i; k++) {
            tq_peer_sent_add(c, c->pending[k], charge[k - first]);
            tq_task_t *t = tq_store_get(store, c->pending[k]);
            if (t && tq_task_finished(t))
                tq_engine_fetched(engine, t, now);
        }
    }
    /* keep what was not sent, in order */
    memmove(c->pending, c->pending + i, (c->npending - i) * sizeof *c->pending);
    c->npending -= i;
    if (c->npending > OUTBOX_MAX_PENDING) {
        tq_warn("client %s reads no results (%zu waiting): forgetting it", c->name, c->npending);
        mark_gone(self, c);
        c->npending = 0;
    }
}

/* ---- passes and flags ----------------------------------------------------- */

void tq_outbox_pass(tq_outbox_t *self) { self->pass++; }

int tq_outbox_held(const tq_outbox_t *self) { return self->held_until >= self->pass; }

int tq_outbox_take_stalled(tq_outbox_t *self)
{
    int s = self->stalled;
    self->stalled = 0;
    return s;
}

int tq_outbox_take_gone(tq_outbox_t *self)
{
    int g = self->gone;
    self->gone = 0;
    return g;
}
