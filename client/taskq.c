/* taskq.c - libtaskq's public API: pipelined submission in batches,
 * waits, events, cancel and status. See include/taskq.h for what each
 * public function promises; the connection itself (socket, handshake,
 * heartbeats, re-registration, reconnects) is the link (link/tq_link.h),
 * which this file drives.
 *
 * The handle is single-threaded: every network step happens inside a
 * library call, in pump. Incoming RESULTS and SUBMIT_ACKs become events
 * in a FIFO that taskq_next_event hands out one at a time;
 * unacknowledged batches, awaited ids and the blocking request are kept
 * so that resend can repeat them when the link says it is registered
 * again. Handlers of incoming messages only change state; what they make
 * possible to send (the held batch) is sent after the drain. */
#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <zmq.h>

#include "tq_exit.h"
#include "tq_log.h"

/* The public numbers are promised to equal the exit statuses. */
_Static_assert(TASKQ_ERR_CONNECT == TQ_EXIT_CONNECT, "error categories follow tq_exit.h");
_Static_assert(TASKQ_ERR_TIMEOUT == TQ_EXIT_TIMEOUT, "error categories follow tq_exit.h");
_Static_assert(TASKQ_ERR_REFUSED == TQ_EXIT_REFUSED, "error categories follow tq_exit.h");
_Static_assert(TASKQ_ERR_NOT_FOUND == TQ_EXIT_NOT_FOUND, "error categories follow tq_exit.h");
_Static_assert(TASKQ_ERR_ENV == TQ_EXIT_ENV, "error categories follow tq_exit.h");
_Static_assert(TASKQ_ERR_INTERNAL == TQ_EXIT_INTERNAL, "error categories follow tq_exit.h");
_Static_assert(TASKQ_BATCH_MAX == TQ_MAX_BATCH, "public limits mirror tq_limits.h");
_Static_assert(TASKQ_BATCH_BYTES == TQ_BATCH_BYTES, "public limits mirror tq_limits.h");
_Static_assert(TASKQ_NAME_MAX == TQ_MAX_NAME, "public limits mirror tq_limits.h");
_Static_assert(TASKQ_KEY_MAX == TQ_MAX_KEY, "public limits mirror tq_limits.h");
_Static_assert(TASKQ_MAX_NOT_BEFORE_MS == TQ_MAX_NOT_BEFORE_MS, "public limits mirror tq_limits.h");
_Static_assert((int)TASKQ_DONE == (int)TQ_ST_DONE && (int)TASKQ_DEAD == (int)TQ_ST_DEAD,
               "statuses mirror the wire");
_Static_assert((int)TASKQ_CANCEL_UNKNOWN == (int)TQ_CANCEL_UNKNOWN, "outcomes mirror the wire");

/* ---- small helpers ---------------------------------------------------- */

static void ev_push(ev_list_t *l, ev_node_t *n)
{
    n->next = NULL;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->n++;
}

static ev_node_t *ev_pop(ev_list_t *l)
{
    ev_node_t *n = l->head;
    if (!n)
        return NULL;
    l->head = n->next;
    if (!l->head)
        l->tail = NULL;
    l->n--;
    n->next = NULL;
    return n;
}

static void ev_free(ev_node_t *n)
{
    if (!n)
        return;
    free(n->owned);
    tq_msgref_drop(n->ref);
    free(n);
}

static void ev_list_clear(ev_list_t *l)
{
    ev_node_t *n;
    while ((n = ev_pop(l)))
        ev_free(n);
}

/* Payload chunks: the first holds BATCH_CHUNK_MIN bytes, each next one
 * twice the one before (or the payload, if larger), up to a batch's
 * worth. */
#define BATCH_CHUNK_MIN (64u * 1024u)

/* A chunk's references (tq_out_lend): the batch holds one, and each
 * ZeroMQ frame sent from its bytes one more, released by ZeroMQ's I/O
 * thread once the frame is sent. */
static void chunk_hold(void *hint) { atomic_fetch_add(&((chunk_t *)hint)->refs, 1); }

static void chunk_release(void *data, void *hint)
{
    (void)data;
    chunk_t *c = hint;
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

static void chunks_free(chunk_t *c)
{
    while (c) {
        chunk_t *next = c->next;
        chunk_release(NULL, c);
        c = next;
    }
}

static void batch_free(batch_t *b)
{
    if (!b)
        return;
    tq_out_free(&b->msg);
    chunks_free(b->chunks);
    free(b);
}

/* Done with b: keep one batch for reuse, with its largest chunk. A
 * fresh batch per flush was the client's largest cost once (perf: 11%
 * in memset), as map flushes small batches whenever it waits. */
static void batch_release(taskq_t *self, batch_t *b)
{
    if (!b)
        return;
    if (self->spare) {
        batch_free(b);
        return;
    }
    /* Only a chunk no ZeroMQ frame still reads is written again. */
    chunk_t *keep = NULL;
    for (chunk_t *c = b->chunks; c; c = c->next)
        if (atomic_load(&c->refs) == 1 && (!keep || c->cap > keep->cap))
            keep = c;
    for (chunk_t *c = b->chunks, *next; c; c = next) {
        next = c->next;
        if (c != keep)
            chunk_release(NULL, c);
    }
    if (keep) {
        keep->next = NULL;
        keep->len = 0;
    }
    b->chunks = keep;
    self->spare = b;
}

/* A batch ready to fill with tasks of these flags: the spare one, or a
 * new one. It takes its request id now, since the id is in the
 * message's head. */
static batch_t *batch_take(taskq_t *self, uint16_t flags)
{
    batch_t *b = self->spare;
    if (b) {
        self->spare = NULL;
    } else {
        b = tq_calloc(1, sizeof *b);
        tq_out_init(&b->msg);
    }
    b->next = NULL;
    b->req = self->next_req++;
    b->flags = flags;
    b->first_seq = self->next_seq;
    b->count = 0;
    b->pay_bytes = 0;
    tq_out_begin_submit(&b->msg, b->req, flags);
    return b;
}

/* A copy of payload[0..len) that stays where it is while the batch
 * lives (the message's data frame points at it); *in: its chunk. */
static tq_bytes_t batch_keep(batch_t *b, const void *payload, size_t len, chunk_t **in)
{
    *in = NULL;
    if (len == 0)
        return (tq_bytes_t){(const uint8_t *)"", 0};
    chunk_t *c = b->chunks;
    if (!c || c->cap - c->len < len) {
        size_t cap = c ? 2 * c->cap : BATCH_CHUNK_MIN;
        if (cap > TQ_BATCH_BYTES)
            cap = TQ_BATCH_BYTES;
        if (cap < len)
            cap = len;
        chunk_t *n = tq_malloc(sizeof *n + cap);
        n->cap = cap;
        n->len = 0;
        atomic_init(&n->refs, 1);
        n->next = c;
        b->chunks = c = n;
    }
    uint8_t *dst = c->data + c->len;
    memcpy(dst, payload, len);
    c->len += len;
    *in = c;
    return (tq_bytes_t){dst, len};
}

/* ---- sending ---------------------------------------------------------- */

/* Messages handled per drain before looking at timers again. */
#define DRAIN_MAX 256

static int flush_batch(taskq_t *self, taskq_error_t *err);

static int lost(taskq_t *self, taskq_error_t *err)
{
    return tq_api_fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                       tq_link_endpoint(self->link));
}

/* Send the message built in the link's builder, waiting for room up to
 * the heartbeat timeout. Returns 0, or -1 with TASKQ_ERR_CONNECT when the
 * link is dead (the master lost and reconnecting off or given up). While
 * the link is not up the message is dropped and 0 returned: callers keep
 * what they sent until it is answered, and resend repeats it once the
 * master welcomes us again. */
static int send_msg(taskq_t *self, taskq_error_t *err)
{
    if (tq_link_send(self->link, TQ_LINK_BLOCK) < 0)
        return lost(self, err);
    return 0;
}

/* Tell the program's notice callback, if any. */
static void notice(taskq_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(taskq_t *self, const char *fmt, ...)
{
    if (!self->notice)
        return;
    char msg[TASKQ_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    self->notice(self->notice_arg, msg);
}

/* The last batch in flight got its answer: send the one that was held
 * back meanwhile (see next_event). Called after a drain, never from a
 * handler. A send failure marks the connection lost; the caller's next
 * call reports it. */
static void send_held_batch(taskq_t *self)
{
    if (self->unacked_head || !self->cur || self->cur->count == 0)
        return;
    taskq_error_t ignored;
    flush_batch(self, &ignored);
}

/* Send b's message as it was encoded (a re-send sends the same bytes;
 * a packed message is written straight into its ZeroMQ message by
 * tq_frame, so no batch keeps a second copy of its payloads). */
static int send_batch(taskq_t *self, batch_t *b, taskq_error_t *err)
{
    b->sent_ms = tq_mono_ms();
    int rc = tq_link_send_msg(self->link, &b->msg, TQ_LINK_BLOCK);
    return rc < 0 ? lost(self, err) : 0;
}

/* WAIT for ids[0..n), in messages of at most TQ_MAX_BATCH ids. */
static int send_wait(taskq_t *self, const uint64_t *ids, size_t n, taskq_error_t *err)
{
    for (size_t off = 0; off < n; off += TQ_MAX_BATCH) {
        size_t k = n - off < TQ_MAX_BATCH ? n - off : TQ_MAX_BATCH;
        tq_out_begin_ids(tq_link_out(self->link), TQ_MSG_WAIT, self->next_req++);
        for (size_t i = 0; i < k; i++)
            tq_out_id(tq_link_out(self->link), ids[off + i]);
        if (send_msg(self, err) < 0)
            return -1;
    }
    return 0;
}

/* (Re)send the blocking request in progress. */
static int blk_send(taskq_t *self, taskq_error_t *err)
{
    blocking_t *b = &self->blk;
    if (b->type == TQ_MSG_STATUS) {
        cJSON *j = cJSON_CreateObject();
        TQ_ASSERT(j);
        tq_out_json(tq_link_out(self->link), TQ_MSG_STATUS, j);
        cJSON_Delete(j);
    } else if (b->type == TQ_MSG_ADMIN) {
        tq_out_json(tq_link_out(self->link), TQ_MSG_ADMIN, b->request);
    } else if (b->type == TQ_MSG_PUT) {
        tq_out_t *o = tq_link_out(self->link);
        tq_out_begin_msg(o, TQ_MSG_PUT, &(tq_fixed_t){.req = b->req});
        for (size_t i = 0; i < b->n; i++)
            tq_out_record(o, &(tq_put_item_t){tq_bytes_str(b->queue),
                                              {b->items[i].data, b->items[i].len}});
    } else if (b->type == TQ_MSG_GET) {
        tq_out_t *o = tq_link_out(self->link);
        tq_out_begin_msg(o, TQ_MSG_GET,
                         &(tq_fixed_t){.req = b->req,
                                       .timeout_ms = b->wait_ms,
                                       .max = (uint16_t)b->max});
        tq_out_record(o, &(tq_get_rec_t){tq_bytes_str(b->queue)});
    } else {
        tq_out_begin_ids(tq_link_out(self->link), TQ_MSG_CANCEL, b->req);
        for (size_t i = 0; i < b->n; i++)
            tq_out_id(tq_link_out(self->link), b->ids[i]);
    }
    return send_msg(self, err);
}

struct collect {
    uint64_t *ids;
    size_t n;
};

static void collect_id(uint64_t id, void *value, void *arg)
{
    (void)value;
    struct collect *c = arg;
    c->ids[c->n++] = id;
}

/* After a re-HELLO or a reconnect: re-send every unacknowledged batch, a
 * WAIT for every result still expected, the blocking request, and the
 * pending ACKs. Returns 0 or -1. */
static int resend(taskq_t *self, taskq_error_t *err)
{
    for (batch_t *b = self->unacked_head; b; b = b->next)
        if (send_batch(self, b, err) < 0)
            return -1;
    size_t n = tq_idmap_size(self->awaited);
    if (n > 0) {
        struct collect c = {tq_calloc(n, sizeof(uint64_t)), 0};
        tq_idmap_each(self->awaited, collect_id, &c);
        int rc = send_wait(self, c.ids, c.n, err);
        free(c.ids);
        if (rc < 0)
            return -1;
    }
    if (self->blk.active && !self->blk.done && blk_send(self, err) < 0)
        return -1;
    return tq_api_send_acks(self, err);
}

/* Note a result handed to the program, to be ACKed (see taskq.h); a full
 * message's worth goes out at once, the rest at most
 * TQ_CLIENT_ACK_DELAY_MS later (pump), so that ACKs ride in
 * batches and stay off the path of the next request. */
static void ack_add(taskq_t *self, uint64_t id)
{
    if (self->nacks == self->acks_cap) {
        self->acks_cap = self->acks_cap ? self->acks_cap * 2 : TQ_MAX_BATCH;
        self->acks = tq_realloc(self->acks, self->acks_cap * sizeof *self->acks);
    }
    if (self->nacks == 0)
        self->acks_due = tq_mono_ms() + TQ_CLIENT_ACK_DELAY_MS;
    self->acks[self->nacks++] = id;
    if (self->nacks >= TQ_MAX_BATCH) {
        taskq_error_t ignored; /* a lost master shows in the next pump */
        tq_api_send_acks(self, &ignored);
    }
}

/* Promised in session.h. */
int tq_api_send_acks(taskq_t *self, taskq_error_t *err)
{
    if (self->acks_off)
        self->nacks = 0;
    size_t off = 0;
    while (off < self->nacks && tq_link_up(self->link)) {
        size_t k = self->nacks - off < TQ_MAX_BATCH ? self->nacks - off : TQ_MAX_BATCH;
        uint32_t req = TQ_CLIENT_ACK_REQ_BIT | (self->next_ack_req++ & ~TQ_CLIENT_ACK_REQ_BIT);
        tq_out_begin_ids(tq_link_out(self->link), TQ_MSG_ACK, req);
        for (size_t i = 0; i < k; i++)
            tq_out_id(tq_link_out(self->link), self->acks[off + i]);
        int rc = tq_link_send(self->link, TQ_LINK_BLOCK);
        if (rc <= 0)
            break; /* dropped with the socket: send again after WELCOME */
        self->acks_sent = 1;
        off += k;
    }
    if (off > 0) {
        memmove(self->acks, self->acks + off, (self->nacks - off) * sizeof *self->acks);
        self->nacks -= off;
    }
    return tq_link_dead(self->link) ? lost(self, err) : 0;
}

/* ---- receiving -------------------------------------------------------- */

/* The unacknowledged batch sent as request req, or NULL. */
static batch_t *unacked_find(const taskq_t *self, uint32_t req)
{
    batch_t *b = self->unacked_head;
    while (b && b->req != req)
        b = b->next;
    return b;
}

/* Unlink b from the unacknowledged list. */
static void unacked_remove(taskq_t *self, batch_t *b)
{
    batch_t *prev = NULL;
    for (batch_t *x = self->unacked_head; x != b; x = x->next)
        prev = x;
    if (prev)
        prev->next = b->next;
    else
        self->unacked_head = b->next;
    if (self->unacked_tail == b)
        self->unacked_tail = prev;
}

static void release_deferred(taskq_t *self);

/* b got its answer (ids or a refusal) and is unlinked: recycle it, let
 * results that arrived before the ids through, and send the batch held
 * back meanwhile. */
static void batch_answered(taskq_t *self, batch_t *b)
{
    if (b->flags & TQ_SUBMIT_SUBSCRIBE)
        self->unacked_subscribe--;
    batch_release(self, b);
    if (self->deferred.n > 0)
        release_deferred(self);
}

/* Move deferred results whose ids are now awaited to the event queue;
 * drop the rest once no subscribed batch is waiting for its ack (they
 * are duplicates or not ours). */
static void release_deferred(taskq_t *self)
{
    ev_list_t keep = {NULL, NULL, 0};
    ev_node_t *n;
    while ((n = ev_pop(&self->deferred))) {
        if (tq_idmap_remove(self->awaited, n->ev.id))
            ev_push(&self->events, n);
        else if (self->unacked_subscribe > 0)
            ev_push(&keep, n);
        else
            ev_free(n);
    }
    self->deferred = keep;
}

static ev_node_t *node_with_copy(const void *data, size_t len)
{
    ev_node_t *n = tq_calloc(1, sizeof *n);
    if (len > 0) {
        n->owned = tq_memdup(data, len);
        n->ev.data = n->owned;
    } else {
        n->ev.data = "";
    }
    n->ev.len = len;
    return n;
}

static void push_error_event(taskq_t *self, int code, uint64_t seq, size_t count, const char *msg)
{
    size_t len = strlen(msg) + 1;
    ev_node_t *n = node_with_copy(msg, len);
    n->ev.type = TASKQ_EVENT_ERROR;
    n->ev.code = code;
    n->ev.seq = seq;
    n->ev.count = count;
    n->ev.message = n->owned;
    n->ev.data = NULL;
    n->ev.len = 0;
    ev_push(&self->events, n);
}

static void on_submit_ack(taskq_t *self, tq_bytes_t body, size_t nparts)
{
    uint32_t req;
    size_t count;
    tq_err_t e;
    if (tq_decode_submit_ack(body, nparts, &req, self->ids, &count, &e) < 0)
        return; /* not decodable: the batch stays unacked and is re-sent on re-HELLO */
    batch_t *b = unacked_find(self, req);
    if (!b || b->count != count)
        return; /* a duplicate ack (after a re-send), or not ours */
    unacked_remove(self, b);
    int subscribed = (b->flags & TQ_SUBMIT_SUBSCRIBE) != 0;
    for (size_t i = 0; i < count; i++) {
        ev_node_t *n = tq_calloc(1, sizeof *n);
        n->ev.type = TASKQ_EVENT_SUBMITTED;
        n->ev.seq = b->first_seq + i;
        n->ev.id = self->ids[i];
        ev_push(&self->events, n);
        if (subscribed && self->ids[i] != 0)
            tq_idmap_put(self->awaited, self->ids[i], (void *)1);
    }
    batch_answered(self, b);
}

static void on_results(taskq_t *self, tq_bytes_t body)
{
    size_t count;
    tq_err_t e;
    tq_in_t *in = tq_link_in(self->link);
    if (tq_decode_results(body, tq_in_parts(in), tq_in_nparts(in), self->outcomes, &count, &e) < 0)
        return;
    for (size_t i = 0; i < count; i++) {
        const tq_outcome_t *o = &self->outcomes[i];
        int awaited = tq_idmap_remove(self->awaited, o->id) != NULL;
        if (!awaited && self->unacked_subscribe == 0)
            continue; /* a duplicate, or a result nobody here asked for */
        /* A large result is handed out as a view of the received
         * message (kept until the event is freed), not copied. */
        tq_msgref_t *ref = o->data.len >= TQ_IN_KEEP_MIN ? tq_in_keep(in, i, o->data.data) : NULL;
        ev_node_t *n;
        if (ref) {
            n = tq_calloc(1, sizeof *n);
            n->ref = ref;
            n->ev.data = o->data.data;
            n->ev.len = o->data.len;
        } else {
            n = node_with_copy(o->data.data, o->data.len);
        }
        n->ev.type = TASKQ_EVENT_RESULT;
        n->ev.id = o->id;
        n->ev.status = o->status;
        n->ev.attempts = o->attempts;
        /* A result can overtake its SUBMIT_ACK; hold it until the ack. */
        ev_push(awaited ? &self->events : &self->deferred, n);
    }
}

static void on_cancel_ack(taskq_t *self, tq_bytes_t body, size_t nparts)
{
    blocking_t *b = &self->blk;
    uint32_t req;
    size_t count;
    tq_err_t e;
    if (!b->active || b->type != TQ_MSG_CANCEL || b->done)
        return;
    if (tq_decode_cancel_ack(body, nparts, &req, self->cancel_items, &count, &e) < 0 ||
        req != b->req)
        return;
    for (size_t i = 0; i < b->n; i++)
        b->outcomes[i] = TASKQ_CANCEL_UNKNOWN;
    for (size_t k = 0; k < count; k++) {
        /* Normally in request order; look further only if not. */
        size_t i = k < b->n && b->ids[k] == self->cancel_items[k].id ? k : b->n;
        if (i == b->n)
            for (i = 0; i < b->n && b->ids[i] != self->cancel_items[k].id; i++)
                ;
        for (size_t j = i; j < b->n; j++) /* an id given twice gets the same answer */
            if (b->ids[j] == self->cancel_items[k].id)
                b->outcomes[j] = self->cancel_items[k].outcome <= TQ_CANCEL_UNKNOWN
                                     ? self->cancel_items[k].outcome
                                     : TASKQ_CANCEL_UNKNOWN;
    }
    b->done = 1;
}

static void on_status_reply(taskq_t *self, tq_bytes_t body)
{
    blocking_t *b = &self->blk;
    if (!b->active || b->type != TQ_MSG_STATUS || b->done)
        return;
    if (body.len > TQ_MAX_STATUS_JSON) {
        b->err_code = TASKQ_ERR_INTERNAL;
        snprintf(b->err_msg, sizeof b->err_msg, "status reply too large (%zu bytes)", body.len);
        b->done = 1;
        return;
    }
    cJSON *j = cJSON_ParseWithLength((const char *)body.data, body.len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        b->err_code = TASKQ_ERR_INTERNAL;
        snprintf(b->err_msg, sizeof b->err_msg, "master sent a status reply that is not JSON");
        b->done = 1;
        return;
    }
    cJSON_Delete(j);
    b->json = tq_malloc(body.len + 1);
    memcpy(b->json, body.data, body.len);
    b->json[body.len] = '\0';
    b->done = 1;
}

/* The answer to the ADMIN request in progress: kept as text once it is
 * known to be a JSON object with our req (or none) and "ok": true; "ok"
 * not true fails the request with the reply's "message". A reply for
 * another req (to a request sent before a reconnect) is ignored. */
static void on_admin_reply(taskq_t *self, tq_bytes_t body)
{
    blocking_t *b = &self->blk;
    if (!b->active || b->type != TQ_MSG_ADMIN || b->done)
        return;
    if (body.len > TQ_MAX_STATUS_JSON)
        return; /* cannot be ours: the session caps messages anyway */
    cJSON *j = cJSON_ParseWithLength((const char *)body.data, body.len);
    /* Only one ADMIN is in flight, so a reply without "req" is its
     * answer too (rather than a hang until the caller's timeout). */
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "req");
    if (!j || !cJSON_IsObject(j) ||
        (req && (!cJSON_IsNumber(req) || req->valuedouble != (double)b->req))) {
        cJSON_Delete(j);
        return;
    }
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
    if (!cJSON_IsTrue(ok)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
        b->err_code = TASKQ_ERR_REFUSED;
        tq_log_escape_str(b->err_msg, sizeof b->err_msg,
                          cJSON_IsString(m) && m->valuestring
                              ? m->valuestring
                              : "master answered the request with ok:false");
    } else {
        b->json = tq_malloc(body.len + 1);
        memcpy(b->json, body.data, body.len);
        b->json[body.len] = '\0';
    }
    cJSON_Delete(j);
    b->done = 1;
}

/* PUT_ACK or GOT answering the blocking PUT or GET. */
static void on_plain_reply(taskq_t *self, int type, tq_bytes_t body)
{
    blocking_t *b = &self->blk;
    tq_in_t *in = tq_link_in(self->link);
    tq_fixed_t fx;
    tq_got_item_t got[TQ_MAX_BATCH];
    size_t n = 0;
    tq_err_t e;
    if (!b->active || b->done ||
        tq_decode_msg(type, body, tq_in_parts(in), tq_in_nparts(in), SIZE_MAX, &fx, got, &n, &e) <
            0)
        return;
    if (fx.req != b->req || (type == TQ_MSG_PUT_ACK) != (b->type == TQ_MSG_PUT))
        return; /* an answer to an earlier request (before a reconnect) */
    if (type == TQ_MSG_GOT) {
        for (size_t i = 0; i < n && i < b->max; i++) {
            b->fn(b->fn_arg, got[i].id, got[i].data.data, got[i].data.len);
            b->got_ids[b->ngot++] = got[i].id;
        }
    }
    b->done = 1;
}

/* An ERROR from the master other than "not registered": ref is the
 * request id it answers (0 if none), msg its text. Fails the matching
 * batch or blocking request, or becomes an ERROR event. */
static void on_error(taskq_t *self, uint32_t ref, const char *msg)
{
    if (ref & TQ_CLIENT_ACK_REQ_BIT)
        return; /* about an ACK (a master without ACK): nothing to fail */
    batch_t *b = ref != 0 ? unacked_find(self, ref) : NULL;
    if (b) {
        unacked_remove(self, b);
        push_error_event(self, TASKQ_ERR_REFUSED, b->first_seq, b->count, msg);
        batch_answered(self, b);
        return;
    }
    if (self->blk.active && !self->blk.done) {
        self->blk.err_code = TASKQ_ERR_REFUSED;
        tq_strlcpy(self->blk.err_msg, msg, sizeof self->blk.err_msg);
        self->blk.done = 1;
        return;
    }
    push_error_event(self, TASKQ_ERR_REFUSED, 0, 0, msg);
}

/* A message from the master (the link handled WELCOME, HEARTBEAT and
 * ERROR not-registered). Malformed messages are ignored: what they would
 * have answered is re-sent after a re-HELLO or runs into the caller's
 * timeout. */
static void on_message(taskq_t *self, int type, tq_bytes_t body, size_t nparts)
{
    switch (type) {
    case TQ_MSG_ERROR: {
        int code;
        uint32_t ref;
        char msg[TQ_MAX_ERROR_TEXT];
        tq_link_error_parse(body, nparts, &code, &ref, msg, sizeof msg);
        if ((code == TQ_ERR_WRONG_ROLE || code == TQ_ERR_UNKNOWN_TYPE) && ref == 0 &&
            self->acks_sent) {
            /* A master from before ACK (it keeps no journal, so it needs
             * none): stop sending them. */
            self->acks_off = 1;
            break;
        }
        on_error(self, ref, msg);
        break;
    }
    case TQ_MSG_SUBMIT_ACK: on_submit_ack(self, body, nparts); break;
    case TQ_MSG_RESULTS: on_results(self, body); break;
    case TQ_MSG_CANCEL_ACK: on_cancel_ack(self, body, nparts); break;
    case TQ_MSG_STATUS_REPLY: on_status_reply(self, body); break;
    case TQ_MSG_ADMIN_REPLY: on_admin_reply(self, body); break;
    case TQ_MSG_PUT_ACK:
    case TQ_MSG_GOT: on_plain_reply(self, type, body); break;
    default: break;
    }
}

/* ---- the API state ------------------------------------------------------ */

/* Promised in session.h. */
void tq_api_init(taskq_t *self)
{
    self->next_seq = 1;
    self->awaited = tq_idmap_new();
}

/* Promised in session.h. */
void tq_api_free(taskq_t *self)
{
    batch_free(self->cur);
    self->cur = NULL;
    batch_free(self->spare);
    self->spare = NULL;
    while (self->unacked_head) {
        batch_t *b = self->unacked_head;
        self->unacked_head = b->next;
        batch_free(b);
    }
    self->unacked_tail = NULL;
    tq_idmap_destroy(&self->awaited);
    free(self->acks);
    self->acks = NULL;
    self->nacks = self->acks_cap = 0;
    ev_list_clear(&self->events);
    ev_list_clear(&self->deferred);
    ev_free(self->current);
    self->current = NULL;
    free(self->blk.json);
    self->blk.json = NULL;
    cJSON_Delete(self->blk.request);
    self->blk.request = NULL;
}

/* ---- the link ------------------------------------------------------------ */

/* One event of the link. Returns 0, or -1 with err when the master is
 * lost for good. */
static int on_link_event(taskq_t *self, const tq_link_event_t *ev, taskq_error_t *err)
{
    switch (ev->type) {
    case TQ_LINK_HELLO: tq_link_hello(self->link, self->hello); return 0;
    case TQ_LINK_REGISTERED:
        self->acks_sent = self->acks_off = 0; /* maybe a newer master */
        if (self->was_lost) {
            self->was_lost = 0;
            notice(self, "reconnected to master at %s", tq_link_endpoint(self->link));
        }
        return resend(self, err);
    case TQ_LINK_MESSAGE: on_message(self, ev->msg_type, ev->body, ev->nparts); return 0;
    case TQ_LINK_LOST:
        self->was_lost = 1;
        notice(self, "lost connection to master at %s; reconnecting (up to %g s)",
               tq_link_endpoint(self->link), (double)tq_link_reconnect_budget(self->link) / 1000.0);
        return 0;
    case TQ_LINK_AUTH_FAILED:
        /* The key was right before: a different master answers now. */
        tq_link_kill(self->link);
        return tq_api_fail(err, TASKQ_ERR_CONNECT, "authentication failed reconnecting to %s (%s)",
                           tq_link_endpoint(self->link), tq_client_auth_hint(self));
    case TQ_LINK_DEAD: return lost(self, err);
    default: /* SKIP; REFUSED and BAD: the attempt goes on or is retried */ return 0;
    }
}

/* Handle every event the link has now, up to DRAIN_MAX messages.
 * Returns the number of messages read, or -1. */
static int drain(taskq_t *self, taskq_error_t *err)
{
    int handled = 0;
    tq_link_event_t ev;
    while (handled < DRAIN_MAX) {
        int t = tq_link_next(self->link, &ev);
        if (t == TQ_LINK_NONE)
            break;
        if (t == TQ_LINK_MESSAGE || t == TQ_LINK_SKIP || t == TQ_LINK_REGISTERED ||
            t == TQ_LINK_REFUSED || t == TQ_LINK_BAD)
            handled++;
        if (on_link_event(self, &ev, err) < 0)
            return -1;
    }
    return handled;
}

/* One step of the connection: handle what arrived, send the held batch
 * and due ACKs, and wait at most wait_ms (-1: until the link's next
 * timer) for more. Returns 1 if messages were handled, 0 if not, -1 on a
 * master lost for good (after which every call fails with
 * TASKQ_ERR_CONNECT). */
static int pump(taskq_t *self, int64_t wait_ms, taskq_error_t *err)
{
    if (tq_link_dead(self->link))
        return lost(self, err);
    int got = drain(self, err);
    if (got < 0)
        return -1;
    send_held_batch(self);
    int64_t now = tq_mono_ms();
    if (self->nacks && now >= self->acks_due && tq_api_send_acks(self, err) < 0)
        return -1;
    if (got > 0)
        return 1;
    int64_t t = tq_link_wait_ms(self->link);
    if (self->nacks && self->acks_due - now < t)
        t = self->acks_due - now;
    if (wait_ms >= 0 && wait_ms < t)
        t = wait_ms;
    if (t < 0)
        t = 0;
    zmq_pollitem_t items[2];
    int n = tq_link_pollitems(self->link, items);
    if (tq_zpoll(items, n, (long)t) < 0 && errno != EINTR)
        return tq_api_fail(err, TASKQ_ERR_INTERNAL, "poll: %s", zmq_strerror(errno));
    got = drain(self, err);
    if (got < 0)
        return -1;
    send_held_batch(self);
    return got > 0;
}

/* Called when a public call that pumps starts. If the caller has not
 * called us for longer than a heartbeat interval, the master's
 * heartbeats queued up meanwhile (read by the next pump); give it a
 * fresh grace period rather than blame it for our own absence. */
static void call_enter(taskq_t *self) { tq_link_forgive(self->link, self->last_call); }

/* Called when a public call returns. */
static void call_leave(taskq_t *self) { self->last_call = tq_mono_ms(); }

/* ---- submit ------------------------------------------------------------ */

/* Send the filling batch (if any) and keep it until its ack. */
static int flush_batch(taskq_t *self, taskq_error_t *err)
{
    batch_t *b = self->cur;
    if (!b || b->count == 0)
        return 0;
    self->cur = NULL;
    if (self->unacked_tail)
        self->unacked_tail->next = b;
    else
        self->unacked_head = b;
    self->unacked_tail = b;
    if (b->flags & TQ_SUBMIT_SUBSCRIBE)
        self->unacked_subscribe++;
    if (tq_link_dead(self->link))
        return lost(self, err);
    return send_batch(self, b, err);
}

int taskq_flush(taskq_t *self, taskq_error_t *err) { return flush_batch(self, err); }

int taskq_submit(taskq_t *self, const taskq_task_opts_t *opts, const void *payload, size_t len,
                 int flags, uint64_t *seq_out, taskq_error_t *err)
{
    if (!opts || !opts->fn || !tq_name_valid(tq_bytes_str(opts->fn)))
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "invalid function name '%.64s' (1..%d of A-Z a-z 0-9 _ . : -)",
                           opts && opts->fn ? opts->fn : "", TQ_MAX_NAME);
    const char *queue = opts->queue ? opts->queue : "";
    if (*queue && !tq_name_valid(tq_bytes_str(queue)))
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "invalid queue name '%.64s' (1..%d of A-Z a-z 0-9 _ . : -)", queue,
                           TQ_MAX_NAME);
    if (opts->key_len > TQ_MAX_KEY || (opts->key_len > 0 && !opts->key))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "idempotency key longer than %d bytes",
                           TQ_MAX_KEY);
    if (len > 0 && !payload)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "payload is NULL");
    if (opts->not_before_ms < 0 || opts->not_before_ms > TQ_MAX_NOT_BEFORE_MS)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "not_before_ms %lld is out of range (0..%lld)",
                           (long long)opts->not_before_ms, (long long)TQ_MAX_NOT_BEFORE_MS);
    size_t max_payload = tq_link_welcome(self->link)->max_payload;
    if (len > max_payload)
        return tq_api_fail(err, TASKQ_ERR_REFUSED,
                           "payload too large (%zu bytes; the master allows %zu)", len,
                           max_payload);
    /* A task without a key gets a session key, so that re-sending its
     * batch after a reconnect returns the same id; user keys keep their
     * 24 h meaning, in batches without the flag. */
    uint8_t auto_key[TQ_CLIENT_AUTO_KEY];
    const void *key = opts->key;
    size_t key_len = opts->key_len;
    uint16_t wflags = (flags & TASKQ_SUBSCRIBE) ? TQ_SUBMIT_SUBSCRIBE : 0;
    /* Only delayed tasks use the longer record, so a master from before
     * delays still takes every other batch. */
    if (opts->not_before_ms > 0)
        wflags |= TQ_SUBMIT_NOT_BEFORE;
    if (key_len == 0) {
        memcpy(auto_key, self->session_id, TQ_CLIENT_SESSION_ID);
        for (int i = 0; i < 8; i++) /* the sequence number, little-endian */
            auto_key[TQ_CLIENT_SESSION_ID + i] = (uint8_t)(self->next_seq >> (8 * i));
        key = auto_key;
        key_len = sizeof auto_key;
        wflags |= TQ_SUBMIT_SCOPED_KEYS;
    }
    batch_t *b = self->cur;
    if (b && (b->count == TQ_MAX_BATCH || b->flags != wflags ||
              (b->count > 0 && b->pay_bytes + len > TQ_SEND_BYTES))) {
        if (flush_batch(self, err) < 0)
            return -1;
        b = NULL;
    }
    if (!b) {
        b = batch_take(self, wflags);
        self->cur = b;
    }
    chunk_t *chunk;
    tq_task_spec_t t = {
        .fn = {(const uint8_t *)opts->fn, strlen(opts->fn)},
        .queue = {(const uint8_t *)queue, strlen(queue)},
        .key = {key, key_len},
        .priority = opts->priority,
        .timeout_ms = opts->timeout_ms,
        .retries = opts->retries,
        .payload = batch_keep(b, payload, len, &chunk),
        .not_before_ms = opts->not_before_ms, /* written only with TQ_SUBMIT_NOT_BEFORE */
    };
    tq_out_submit_task(&b->msg, &t);
    /* A large payload goes to ZeroMQ from its chunk, without the pack
     * copy (tq_out_lend); the payload is the record's one data frame. */
    if (len >= TQ_LEND_MIN && b->msg.parts[b->msg.nparts - 1].data == t.payload.data)
        tq_out_lend(&b->msg, chunk_hold, chunk_release, chunk);
    b->count++;
    b->pay_bytes += len;
    if (seq_out)
        *seq_out = self->next_seq;
    self->next_seq++;
    /* Full: send now rather than on the next call, to keep the pipe busy. */
    if (b->count == TQ_MAX_BATCH || b->pay_bytes >= TQ_SEND_BYTES)
        return flush_batch(self, err);
    return 0;
}

int taskq_wait(taskq_t *self, const uint64_t *ids, size_t n, taskq_error_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == 0)
            return tq_api_fail(err, TASKQ_ERR_USAGE, "0 is not a task id");
    for (size_t i = 0; i < n; i++)
        tq_idmap_put(self->awaited, ids[i], (void *)1);
    if (tq_link_dead(self->link))
        return lost(self, err);
    return send_wait(self, ids, n, err);
}

/* ---- events ------------------------------------------------------------ */

static int next_event(taskq_t *self, int timeout_ms, taskq_event_t *ev, taskq_error_t *err)
{
    /* Nagle: while a batch waits for its ids, let the next one fill; it
     * goes out when they arrive (on_submit_ack). Flushing here every time
     * made a fast producer send thousands of 1-task SUBMITs. */
    if (!self->unacked_head && flush_batch(self, err) < 0)
        return -1;
    int64_t deadline = timeout_ms < 0 ? -1 : tq_mono_ms() + timeout_ms;
    for (;;) {
        ev_node_t *n = ev_pop(&self->events);
        if (n) {
            if (n->ev.type == TASKQ_EVENT_RESULT)
                ack_add(self, n->ev.id);
            self->current = n;
            *ev = n->ev;
            return 1;
        }
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - tq_mono_ms();
            if (left < 0)
                return 0;
        }
        /* A connected master that does not answer a batch (see
         * taskq_set_ack_timeout); a reconnect sends it again. */
        int64_t ack_left = -1;
        if (self->ack_timeout_ms > 0 && self->unacked_head && tq_link_up(self->link)) {
            ack_left = self->unacked_head->sent_ms + self->ack_timeout_ms - tq_mono_ms();
            if (ack_left <= 0) {
                /* The answer may wait unread (the program was busy
                 * between calls): only when nothing more has come is the
                 * batch unanswered. */
                int got = pump(self, 0, err);
                if (got < 0)
                    return -1;
                if (got > 0 || !tq_link_up(self->link))
                    continue;
                return tq_api_fail(err, TASKQ_ERR_TIMEOUT,
                                   "no acknowledgement from master at %s within %.3g s (is its "
                                   "journal failing? see taskq status)",
                                   tq_link_endpoint(self->link),
                                   (double)self->ack_timeout_ms / 1000.0);
            }
            if (left < 0 || ack_left < left)
                left = ack_left;
        }
        if (pump(self, left, err) < 0)
            return -1;
        if (deadline >= 0 && left == 0 && !self->events.head)
            return 0;
    }
}

int taskq_next_event(taskq_t *self, int timeout_ms, taskq_event_t *ev, taskq_error_t *err)
{
    ev_free(self->current);
    self->current = NULL;
    call_enter(self);
    int rc = next_event(self, timeout_ms, ev, err);
    call_leave(self);
    return rc;
}

/* ---- cancel and status --------------------------------------------------- */

/* Pump until the blocking request is answered or the deadline passes. */
static int blk_run(taskq_t *self, int timeout_ms, const char *what, taskq_error_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tq_mono_ms() + timeout_ms;
    call_enter(self);
    int rc = blk_send(self, err);
    while (rc == 0 && !self->blk.done) {
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - tq_mono_ms();
            if (left <= 0)
                rc = tq_api_fail(err, TASKQ_ERR_TIMEOUT, "no %s reply from %s within %d ms", what,
                                 tq_link_endpoint(self->link), timeout_ms);
        }
        if (rc == 0 && pump(self, left, err) < 0)
            rc = -1;
    }
    call_leave(self);
    if (rc < 0)
        return -1;
    if (self->blk.err_code)
        return tq_api_fail(err, self->blk.err_code, "%s", self->blk.err_msg);
    return 0;
}

static void blk_reset(taskq_t *self)
{
    cJSON_Delete(self->blk.request);
    free(self->blk.json);
    memset(&self->blk, 0, sizeof self->blk);
}

int taskq_cancel(taskq_t *self, const uint64_t *ids, size_t n, int *outcomes, int timeout_ms,
                 taskq_error_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == 0)
            return tq_api_fail(err, TASKQ_ERR_USAGE, "0 is not a task id");
    ev_free(self->current);
    self->current = NULL;
    if (flush_batch(self, err) < 0)
        return -1;
    for (size_t off = 0; off < n; off += TQ_MAX_BATCH) {
        blk_reset(self);
        self->blk.active = 1;
        self->blk.type = TQ_MSG_CANCEL;
        self->blk.req = self->next_req++;
        self->blk.ids = ids + off;
        self->blk.n = n - off < TQ_MAX_BATCH ? n - off : TQ_MAX_BATCH;
        self->blk.outcomes = outcomes + off;
        int rc = blk_run(self, timeout_ms, "cancel", err);
        blk_reset(self);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int taskq_put(taskq_t *self, const char *queue, const taskq_item_t *items, size_t n, int timeout_ms,
              taskq_error_t *err)
{
    if (!queue || !tq_name_valid(tq_bytes_str(queue)))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "'%s' is not a valid queue name",
                           queue ? queue : "");
    if (n == 0 || n > TQ_MAX_BATCH)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "put: 1..%d items per call", TQ_MAX_BATCH);
    for (size_t i = 0; i < n; i++)
        if (items[i].len > taskq_max_payload(self))
            return tq_api_fail(err, TASKQ_ERR_USAGE, "item %zu is %zu bytes, max %zu", i + 1,
                               items[i].len, taskq_max_payload(self));
    ev_free(self->current);
    self->current = NULL;
    if (flush_batch(self, err) < 0)
        return -1;
    blk_reset(self);
    self->blk.active = 1;
    self->blk.type = TQ_MSG_PUT;
    self->blk.req = self->next_req++;
    self->blk.queue = queue;
    self->blk.items = items;
    self->blk.n = n;
    int rc = blk_run(self, timeout_ms, "put", err);
    blk_reset(self);
    return rc;
}

int taskq_get(taskq_t *self, const char *queue, int wait_ms, size_t max, taskq_item_fn fn,
              void *arg, taskq_error_t *err)
{
    if (!queue || !tq_name_valid(tq_bytes_str(queue)))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "'%s' is not a valid queue name",
                           queue ? queue : "");
    if (max == 0 || max > TQ_MAX_BATCH)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "get: 1..%d items per call", TQ_MAX_BATCH);
    if (wait_ms < 0 || (uint32_t)wait_ms > TQ_MAX_GET_WAIT_MS)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "get: wait 0..%u ms", TQ_MAX_GET_WAIT_MS);
    ev_free(self->current);
    self->current = NULL;
    if (flush_batch(self, err) < 0)
        return -1;
    blk_reset(self);
    uint64_t *ids = tq_calloc(max, sizeof *ids);
    self->blk.active = 1;
    self->blk.type = TQ_MSG_GET;
    self->blk.req = self->next_req++;
    self->blk.queue = queue;
    self->blk.wait_ms = (uint32_t)wait_ms;
    self->blk.max = max;
    self->blk.fn = fn;
    self->blk.fn_arg = arg;
    self->blk.got_ids = ids;
    /* the master answers by wait_ms; a reply later than 30 s after is lost */
    int rc = blk_run(self, wait_ms + 30000, "get", err);
    size_t n = self->blk.ngot;
    blk_reset(self);
    if (rc == 0 && n > 0) {
        tq_out_t *o = tq_link_out(self->link);
        tq_out_begin_msg(o, TQ_MSG_TAKE_ACK, &(tq_fixed_t){.req = self->next_req++});
        for (size_t i = 0; i < n; i++)
            tq_out_record(o, &(tq_id_rec_t){ids[i]});
        rc = send_msg(self, err);
    }
    free(ids);
    return rc < 0 ? -1 : (int)n;
}

int taskq_status(taskq_t *self, int timeout_ms, char **json_out, taskq_error_t *err)
{
    *json_out = NULL;
    ev_free(self->current);
    self->current = NULL;
    if (flush_batch(self, err) < 0)
        return -1;
    blk_reset(self);
    self->blk.active = 1;
    self->blk.type = TQ_MSG_STATUS;
    int rc = blk_run(self, timeout_ms, "status", err);
    if (rc == 0) {
        *json_out = self->blk.json;
        self->blk.json = NULL;
    }
    blk_reset(self);
    return rc;
}

int taskq_admin(taskq_t *self, const char *request_json, int timeout_ms, char **reply_json,
                taskq_error_t *err)
{
    *reply_json = NULL;
    if (!request_json)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "admin request is NULL");
    size_t len = strnlen(request_json, TQ_MAX_JSON + 1);
    if (len > TQ_MAX_JSON - 32) /* room for the "req" we add */
        return tq_api_fail(err, TASKQ_ERR_USAGE, "admin request larger than %u bytes",
                           TQ_MAX_JSON - 32);
    cJSON *req = cJSON_ParseWithLength(request_json, len);
    if (!req || !cJSON_IsObject(req)) {
        cJSON_Delete(req);
        return tq_api_fail(err, TASKQ_ERR_USAGE, "admin request is not a JSON object");
    }
    ev_free(self->current);
    self->current = NULL;
    if (flush_batch(self, err) < 0) {
        cJSON_Delete(req);
        return -1;
    }
    blk_reset(self);
    self->blk.active = 1;
    self->blk.type = TQ_MSG_ADMIN;
    self->blk.req = self->next_req++;
    if (self->blk.req == 0 || (self->blk.req & TQ_CLIENT_ACK_REQ_BIT)) {
        self->blk.req = 1; /* 0 means none; the top bit is the ACKs' */
        self->next_req = 2;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(req, "req");
    TQ_ASSERT(cJSON_AddNumberToObject(req, "req", (double)self->blk.req));
    self->blk.request = req;
    int rc = blk_run(self, timeout_ms, "admin", err);
    if (rc == 0) {
        *reply_json = self->blk.json;
        self->blk.json = NULL;
    }
    blk_reset(self);
    return rc;
}

const char *taskq_status_name(int status)
{
    switch (status) {
    case TASKQ_DONE: return "done";
    case TASKQ_FAILED: return "failed";
    case TASKQ_CANCELLED: return "cancelled";
    case TASKQ_UNKNOWN: return "unknown";
    case TASKQ_DEAD: return "dead";
    default: return "?";
    }
}
