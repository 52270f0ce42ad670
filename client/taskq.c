/* taskq.c - libtaskq: one DEALER connection to the master, pipelined
 * submission in batches, events, cancel and status. See include/taskq.h
 * for what each public function promises.
 *
 * The handle is single-threaded: every network step (heartbeats, acks,
 * resends after the master forgot us) happens inside a library call, in
 * pump(). Incoming RESULTS and SUBMIT_ACKs become events in a FIFO that
 * taskq_next_event hands out one at a time. */
#include "taskq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <zmq.h>

#include "tq_authkey.h"
#include "tq_curve.h"
#include "tq_exit.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_proto.h"
#include "tq_util.h"

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
_Static_assert((int)TASKQ_DONE == (int)TQ_ST_DONE && (int)TASKQ_DEAD == (int)TQ_ST_DEAD,
               "statuses mirror the wire");
_Static_assert((int)TASKQ_CANCEL_UNKNOWN == (int)TQ_CANCEL_UNKNOWN, "outcomes mirror the wire");

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:7070"
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
/* Until WELCOME says otherwise (PROTOCOL.md defaults). */
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_HEARTBEAT_TIMEOUT_MS 5000
/* How long close waits for BYE and queued batches to leave. */
#define CLOSE_LINGER_MS 1000
#define ENDPOINT_MAX 256
/* Messages handled per drain before looking at timers again. */
#define DRAIN_MAX 256

/* One task in a batch: offsets into the batch's byte buffer (which may
 * move while it grows, so no pointers). */
typedef struct {
    size_t fn_off, queue_off, key_off, pay_off, pay_len;
    uint8_t fn_len, queue_len, key_len;
    int32_t priority;
    uint32_t timeout_ms;
    uint16_t retries;
} ptask_t;

/* A SUBMIT batch: filled locally, then sent and kept until its
 * SUBMIT_ACK so that it can be re-sent after a re-HELLO. */
typedef struct batch {
    struct batch *next;
    uint32_t req;
    uint16_t flags;
    uint64_t first_seq;
    size_t count;
    size_t pay_bytes;
    tq_buf_t bytes;
    ptask_t tasks[TQ_MAX_BATCH];
} batch_t;

typedef struct ev_node {
    struct ev_node *next;
    taskq_event_t ev;
    void *owned; /* data or message copy, freed with the node */
} ev_node_t;

typedef struct {
    ev_node_t *head, *tail;
    size_t n;
} ev_list_t;

/* The one blocking request (cancel or status) in progress. */
typedef struct {
    int active;
    int type; /* TQ_MSG_CANCEL or TQ_MSG_STATUS */
    uint32_t req;
    const uint64_t *ids; /* CANCEL: this message's ids */
    size_t n;
    int *outcomes;
    int done;
    char *json; /* STATUS: the reply */
    int err_code;
    char err_msg[TASKQ_ERROR_MAX];
} blocking_t;

struct taskq {
    void *ctx;
    void *sock;
    char endpoint[ENDPOINT_MAX];
    char name[TQ_MAX_PEER_NAME + 1];
    tq_in_t *in;
    tq_out_t out;
    int64_t hb_ms, hb_timeout_ms;
    size_t max_payload;
    int64_t last_recv, last_send, last_call;
    int lost;
    int rehello_pending;
    uint32_t next_req;
    uint64_t next_seq;
    batch_t *cur;                      /* filling, not yet sent */
    batch_t *unacked_head, *unacked_tail;
    size_t unacked_subscribe;          /* unacked batches with SUBSCRIBE */
    tq_idmap_t *awaited;               /* ids whose result we still expect */
    ev_list_t events;                  /* ready for taskq_next_event */
    ev_list_t deferred;                /* results that came before their ack */
    ev_node_t *current;                /* last handed out; freed on next call */
    blocking_t blk;
    tq_outcome_t outcomes[TQ_MAX_BATCH];
    tq_cancel_item_t cancel_items[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
};

/* ---- small helpers ---------------------------------------------------- */

static int fail(taskq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill err (when given) and return -1. */
static int fail(taskq_error_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

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
    free(n);
}

static void ev_list_clear(ev_list_t *l)
{
    ev_node_t *n;
    while ((n = ev_pop(l)))
        ev_free(n);
}

static void batch_free(batch_t *b)
{
    if (!b)
        return;
    tq_buf_free(&b->bytes);
    free(b);
}

/* ---- sending ---------------------------------------------------------- */

/* Send the message built in self->out. Returns 0, or -1 with
 * TASKQ_ERR_CONNECT when ZeroMQ could not queue it within the send
 * timeout (the master is gone and the queue is full). */
static int send_out(taskq_t *self, taskq_error_t *err)
{
    if (tq_out_send(&self->out, self->sock, NULL, 0) < 0) {
        if (errno == EAGAIN)
            return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                        self->endpoint);
        return fail(err, TASKQ_ERR_CONNECT, "cannot send to master at %s: %s", self->endpoint,
                    zmq_strerror(errno));
    }
    self->last_send = tq_mono_ms();
    return 0;
}

static int send_hello(taskq_t *self, taskq_error_t *err)
{
    cJSON *j = cJSON_CreateObject();
    TQ_ASSERT(j);
    cJSON_AddStringToObject(j, "role", "client");
    cJSON_AddStringToObject(j, "name", self->name);
    tq_out_json(&self->out, TQ_MSG_HELLO, j);
    cJSON_Delete(j);
    return send_out(self, err);
}

static int send_empty(taskq_t *self, int type, taskq_error_t *err)
{
    tq_out_begin(&self->out, type);
    return send_out(self, err);
}

static int send_batch(taskq_t *self, const batch_t *b, taskq_error_t *err)
{
    tq_out_begin_submit(&self->out, b->req, b->flags);
    for (size_t i = 0; i < b->count; i++) {
        const ptask_t *p = &b->tasks[i];
        const uint8_t *base = b->bytes.data;
        tq_task_spec_t t;
        t.fn = (tq_bytes_t){base + p->fn_off, p->fn_len};
        t.queue = (tq_bytes_t){base + p->queue_off, p->queue_len};
        t.key = (tq_bytes_t){base + p->key_off, p->key_len};
        t.payload = (tq_bytes_t){base + p->pay_off, p->pay_len};
        t.priority = p->priority;
        t.timeout_ms = p->timeout_ms;
        t.retries = p->retries;
        tq_out_submit_task(&self->out, &t);
    }
    return send_out(self, err);
}

/* WAIT for ids[0..n), in messages of at most TQ_MAX_BATCH ids. */
static int send_wait(taskq_t *self, const uint64_t *ids, size_t n, taskq_error_t *err)
{
    for (size_t off = 0; off < n; off += TQ_MAX_BATCH) {
        size_t k = n - off < TQ_MAX_BATCH ? n - off : TQ_MAX_BATCH;
        tq_out_begin_ids(&self->out, TQ_MSG_WAIT, self->next_req++);
        for (size_t i = 0; i < k; i++)
            tq_out_id(&self->out, ids[off + i]);
        if (send_out(self, err) < 0)
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
        tq_out_json(&self->out, TQ_MSG_STATUS, j);
        cJSON_Delete(j);
    } else {
        tq_out_begin_ids(&self->out, TQ_MSG_CANCEL, b->req);
        for (size_t i = 0; i < b->n; i++)
            tq_out_id(&self->out, b->ids[i]);
    }
    return send_out(self, err);
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

/* The master does not know us (it restarted, or we were silent too
 * long): say HELLO again, then re-send every unacknowledged batch, a
 * WAIT for every result still expected, and the blocking request.
 * ZeroMQ keeps the order, so the master sees HELLO first. */
static int rehello(taskq_t *self, taskq_error_t *err)
{
    self->rehello_pending = 1;
    if (send_hello(self, err) < 0)
        return -1;
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
    if (self->blk.active && !self->blk.done)
        return blk_send(self, err);
    return 0;
}

/* ---- receiving -------------------------------------------------------- */

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

static void on_welcome(taskq_t *self, cJSON *j)
{
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "heartbeat_ms")) && cJSON_IsNumber(v) &&
        v->valuedouble >= 10 && v->valuedouble <= 3600000)
        self->hb_ms = (int64_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "heartbeat_timeout_ms")) && cJSON_IsNumber(v) &&
        v->valuedouble >= 50 && v->valuedouble <= 36000000)
        self->hb_timeout_ms = (int64_t)v->valuedouble;
    if (self->hb_timeout_ms <= self->hb_ms)
        self->hb_timeout_ms = self->hb_ms * 5;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "max_payload")) && cJSON_IsNumber(v) &&
        v->valuedouble >= 1 && v->valuedouble <= (double)TQ_PAYLOAD_HARD_MAX)
        self->max_payload = (size_t)v->valuedouble;
    int ms = (int)self->hb_timeout_ms;
    zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    self->rehello_pending = 0;
}

static void on_submit_ack(taskq_t *self, tq_bytes_t body, size_t nparts)
{
    uint32_t req;
    size_t count;
    tq_error_t e;
    if (tq_decode_submit_ack(body, nparts, &req, self->ids, &count, &e) < 0)
        return; /* not decodable: the batch stays unacked and is re-sent on re-HELLO */
    batch_t *prev = NULL, *b = self->unacked_head;
    while (b && b->req != req) {
        prev = b;
        b = b->next;
    }
    if (!b || b->count != count)
        return; /* a duplicate ack (after a re-send), or not ours */
    if (prev)
        prev->next = b->next;
    else
        self->unacked_head = b->next;
    if (self->unacked_tail == b)
        self->unacked_tail = prev;
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
    if (subscribed)
        self->unacked_subscribe--;
    batch_free(b);
    if (self->deferred.n > 0)
        release_deferred(self);
}

static void on_results(taskq_t *self, tq_bytes_t body)
{
    size_t count;
    tq_error_t e;
    if (tq_decode_results(body, tq_in_parts(self->in), tq_in_nparts(self->in), self->outcomes,
                          &count, &e) < 0)
        return;
    for (size_t i = 0; i < count; i++) {
        const tq_outcome_t *o = &self->outcomes[i];
        int awaited = tq_idmap_remove(self->awaited, o->id) != NULL;
        if (!awaited && self->unacked_subscribe == 0)
            continue; /* a duplicate, or a result nobody here asked for */
        ev_node_t *n = node_with_copy(o->data.data, o->data.len);
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
    tq_error_t e;
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

/* Read an ERROR body: code, ref (the request id it answers, 0 if none)
 * and message into msg[size]. Unreadable bodies give TQ_ERR_INTERNAL. */
static void parse_error(tq_bytes_t body, size_t nparts, int *code, uint32_t *ref, char *msg,
                        size_t size)
{
    void *parsed = NULL;
    tq_error_t e;
    *code = TQ_ERR_INTERNAL;
    *ref = 0;
    snprintf(msg, size, "master sent an unreadable error");
    if (tq_decode_json(body, nparts, TQ_MAX_JSON, &parsed, &e) < 0)
        return;
    cJSON *j = parsed;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "code")) && cJSON_IsNumber(v))
        *code = (int)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "ref")) && cJSON_IsNumber(v) &&
        v->valuedouble >= 0 && v->valuedouble <= 4294967295.0)
        *ref = (uint32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "message")) && cJSON_IsString(v))
        tq_strlcpy(msg, v->valuestring, size);
    cJSON_Delete(j);
}

static int on_error(taskq_t *self, tq_bytes_t body, size_t nparts, taskq_error_t *err)
{
    int code;
    uint32_t ref;
    char msg[TQ_MAX_ERROR_TEXT];
    parse_error(body, nparts, &code, &ref, msg, sizeof msg);
    if (code == TQ_ERR_NOT_REGISTERED) {
        /* Errors for what we sent before our HELLO arrive before WELCOME:
         * all of that has been re-sent already. */
        if (self->rehello_pending)
            return 0;
        return rehello(self, err);
    }
    batch_t *prev = NULL, *b = self->unacked_head;
    while (b && !(ref != 0 && b->req == ref)) {
        prev = b;
        b = b->next;
    }
    if (b) {
        if (prev)
            prev->next = b->next;
        else
            self->unacked_head = b->next;
        if (self->unacked_tail == b)
            self->unacked_tail = prev;
        if (b->flags & TQ_SUBMIT_SUBSCRIBE)
            self->unacked_subscribe--;
        push_error_event(self, TASKQ_ERR_REFUSED, b->first_seq, b->count, msg);
        batch_free(b);
        if (self->deferred.n > 0)
            release_deferred(self);
        return 0;
    }
    if (self->blk.active && !self->blk.done) {
        self->blk.err_code = TASKQ_ERR_REFUSED;
        tq_strlcpy(self->blk.err_msg, msg, sizeof self->blk.err_msg);
        self->blk.done = 1;
        return 0;
    }
    push_error_event(self, TASKQ_ERR_REFUSED, 0, 0, msg);
    return 0;
}

/* Handle the message in self->in. Malformed messages from the master
 * are ignored: what they would have answered is re-sent after a
 * re-HELLO or runs into the caller's timeout. Returns 0 or -1 (send
 * failure). */
static int handle(taskq_t *self, taskq_error_t *err)
{
    int type;
    tq_bytes_t body;
    tq_error_t e;
    if (tq_in_head(self->in, &type, &body, &e) < 0)
        return 0;
    size_t nparts = tq_in_nparts(self->in);
    switch (type) {
    case TQ_MSG_WELCOME: {
        void *j = NULL;
        if (tq_decode_json(body, nparts, TQ_MAX_JSON, &j, &e) == 0) {
            on_welcome(self, j);
            cJSON_Delete(j);
        }
        return 0;
    }
    case TQ_MSG_HEARTBEAT:
        return 0;
    case TQ_MSG_SUBMIT_ACK:
        on_submit_ack(self, body, nparts);
        return 0;
    case TQ_MSG_RESULTS:
        on_results(self, body);
        return 0;
    case TQ_MSG_CANCEL_ACK:
        on_cancel_ack(self, body, nparts);
        return 0;
    case TQ_MSG_STATUS_REPLY:
        on_status_reply(self, body);
        return 0;
    case TQ_MSG_ERROR:
        return on_error(self, body, nparts, err);
    default:
        return 0;
    }
}

/* Handle every message already received, up to DRAIN_MAX. Returns the
 * number handled, or -1. */
static int drain(taskq_t *self, taskq_error_t *err)
{
    int handled = 0;
    while (handled < DRAIN_MAX) {
        if (tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            self->lost = 1;
            return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                        self->endpoint);
        }
        self->last_recv = tq_mono_ms();
        handled++;
        if (handle(self, err) < 0)
            return -1;
    }
    return handled;
}

/* One step of the connection: handle what arrived, keep the heartbeat
 * going, and wait at most wait_ms (-1: until the next timer) for more.
 * Returns 1 if messages were handled, 0 if not, -1 on a lost master. */
static int pump(taskq_t *self, int64_t wait_ms, taskq_error_t *err)
{
    if (self->lost)
        return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s", self->endpoint);
    int got = drain(self, err);
    if (got < 0)
        return -1;
    int64_t now = tq_mono_ms();
    if (now - self->last_send >= self->hb_ms && send_empty(self, TQ_MSG_HEARTBEAT, err) < 0)
        return -1;
    if (got > 0)
        return 1;
    if (now - self->last_recv >= self->hb_timeout_ms) {
        self->lost = 1;
        return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s", self->endpoint);
    }
    int64_t t = self->last_send + self->hb_ms - now;
    int64_t silent = self->last_recv + self->hb_timeout_ms - now;
    if (silent < t)
        t = silent;
    if (wait_ms >= 0 && wait_ms < t)
        t = wait_ms;
    if (t < 0)
        t = 0;
    zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&item, 1, (long)t);
    if (rc < 0 && errno != EINTR)
        return fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
    if (rc <= 0)
        return 0;
    got = drain(self, err);
    if (got < 0)
        return -1;
    return got > 0;
}

/* Called when a public call starts. If the caller has not called us
 * for longer than a heartbeat interval, the master's heartbeats queued up
 * meanwhile (read by the next pump); give it a fresh grace period rather
 * than blame it for our own absence. */
static void on_enter(taskq_t *self)
{
    int64_t now = tq_mono_ms();
    if (now - self->last_call > self->hb_ms && now > self->last_recv)
        self->last_recv = now;
}

/* Called when a public call returns. */
static void on_leave(taskq_t *self)
{
    self->last_call = tq_mono_ms();
}

/* ---- connect and close ------------------------------------------------ */

static void default_name(char *out, size_t size)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, size, "%s:%ld", host, (long)getpid());
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TQ_MAX_PEER_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static void handle_free(taskq_t *self)
{
    if (self->sock)
        zmq_close(self->sock);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    tq_in_destroy(&self->in);
    tq_out_free(&self->out);
    batch_free(self->cur);
    while (self->unacked_head) {
        batch_t *b = self->unacked_head;
        self->unacked_head = b->next;
        batch_free(b);
    }
    tq_idmap_destroy(&self->awaited);
    ev_list_clear(&self->events);
    ev_list_clear(&self->deferred);
    ev_free(self->current);
    free(self->blk.json);
    free(self);
}

/* Wait for WELCOME after HELLO, watching the handshake. Returns 0 or -1. */
static int await_welcome(taskq_t *self, tq_hswatch_t *watch, int64_t timeout_ms,
                         taskq_error_t *err)
{
    int64_t deadline = tq_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - tq_mono_ms();
        if (left <= 0)
            return fail(err, TASKQ_ERR_CONNECT, "cannot connect to %s", self->endpoint);
        zmq_pollitem_t items[2] = {{self->sock, 0, ZMQ_POLLIN, 0},
                                   {tq_hswatch_socket(watch), 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, (long)(left < 100 ? left : 100));
        if (rc < 0 && errno != EINTR)
            return fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
        if (tq_hswatch_poll(watch) < 0)
            return fail(err, TASKQ_ERR_CONNECT,
                        "authentication failed connecting to %s (wrong authkey?)",
                        self->endpoint);
        while (tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) == 0) {
            int type;
            tq_bytes_t body;
            tq_error_t e;
            self->last_recv = tq_mono_ms();
            if (tq_in_head(self->in, &type, &body, &e) < 0)
                return fail(err, TASKQ_ERR_CONNECT, "%s is not a taskq master (%s)",
                            self->endpoint, e.msg);
            if (type == TQ_MSG_WELCOME) {
                void *j = NULL;
                if (tq_decode_json(body, tq_in_nparts(self->in), TQ_MAX_JSON, &j, &e) < 0)
                    return fail(err, TASKQ_ERR_CONNECT, "bad WELCOME from %s: %s",
                                self->endpoint, e.msg);
                on_welcome(self, j);
                cJSON_Delete(j);
                return 0;
            }
            if (type == TQ_MSG_ERROR) {
                int code;
                uint32_t ref;
                char msg[TQ_MAX_ERROR_TEXT];
                parse_error(body, tq_in_nparts(self->in), &code, &ref, msg, sizeof msg);
                return fail(err, TASKQ_ERR_REFUSED, "master at %s refused the connection: %s",
                            self->endpoint, msg);
            }
        }
    }
}

taskq_t *taskq_connect(const char *endpoint, const char *authkey_path, int connect_timeout_ms,
                       const char *name, taskq_error_t *err)
{
    if (!endpoint || !*endpoint)
        endpoint = DEFAULT_ENDPOINT;
    if (strlen(endpoint) >= ENDPOINT_MAX) {
        fail(err, TASKQ_ERR_USAGE, "endpoint too long (at most %d bytes)", ENDPOINT_MAX - 1);
        return NULL;
    }
    if (!authkey_path || !*authkey_path) {
        fail(err, TASKQ_ERR_USAGE, "no authkey file given");
        return NULL;
    }
    if (name && !name_ok(name)) {
        fail(err, TASKQ_ERR_USAGE, "client name must be 1..%d printable ASCII characters",
             TQ_MAX_PEER_NAME);
        return NULL;
    }
    tq_curve_keys_t keys;
    char kerr[TASKQ_ERROR_MAX];
    if (tq_authkey_load(authkey_path, &keys, kerr, sizeof kerr) < 0) {
        tq_curve_keys_wipe(&keys);
        fail(err, TASKQ_ERR_ENV, "%s", kerr);
        return NULL;
    }

    taskq_t *self = tq_calloc(1, sizeof *self);
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    if (name)
        snprintf(self->name, sizeof self->name, "%s", name);
    else
        default_name(self->name, sizeof self->name);
    self->hb_ms = DEFAULT_HEARTBEAT_MS;
    self->hb_timeout_ms = DEFAULT_HEARTBEAT_TIMEOUT_MS;
    self->max_payload = TQ_PAYLOAD_DEFAULT_MAX;
    self->next_req = 1;
    self->next_seq = 1;
    self->in = tq_in_new();
    tq_out_init(&self->out);
    self->awaited = tq_idmap_new();

    self->ctx = zmq_ctx_new();
    self->sock = self->ctx ? zmq_socket(self->ctx, ZMQ_DEALER) : NULL;
    if (!self->sock) {
        fail(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        tq_curve_keys_wipe(&keys);
        handle_free(self);
        return NULL;
    }
    int linger = CLOSE_LINGER_MS, sndtimeo = DEFAULT_HEARTBEAT_TIMEOUT_MS;
    int64_t maxmsg = TQ_PAYLOAD_HARD_MAX;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    int crc = tq_curve_client(self->sock, &keys);
    tq_curve_keys_wipe(&keys);
    if (crc < 0) {
        fail(err, TASKQ_ERR_INTERNAL, "cannot set up CURVE: %s", zmq_strerror(errno));
        handle_free(self);
        return NULL;
    }
    tq_hswatch_t *watch = tq_hswatch_new(self->ctx, self->sock, "taskq-client");
    if (!watch) {
        fail(err, TASKQ_ERR_INTERNAL, "cannot monitor the connection: %s", zmq_strerror(errno));
        handle_free(self);
        return NULL;
    }
    if (zmq_connect(self->sock, self->endpoint) < 0) {
        fail(err, TASKQ_ERR_USAGE, "invalid endpoint '%s': %s (expected tcp://HOST:PORT)",
             self->endpoint, zmq_strerror(errno));
        tq_hswatch_destroy(&watch);
        handle_free(self);
        return NULL;
    }
    int64_t timeout = connect_timeout_ms > 0 ? connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    int rc = send_hello(self, err);
    if (rc == 0)
        rc = await_welcome(self, watch, timeout, err);
    tq_hswatch_destroy(&watch);
    if (rc < 0) {
        /* Nothing worth delivering: drop queued messages at once. */
        int zero = 0;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
        handle_free(self);
        return NULL;
    }
    self->last_recv = self->last_call = tq_mono_ms();
    return self;
}

void taskq_close(taskq_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    taskq_t *self = *self_p;
    if (!self->lost)
        send_empty(self, TQ_MSG_BYE, NULL);
    else {
        int zero = 0;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
    }
    handle_free(self);
    *self_p = NULL;
}

const char *taskq_endpoint(const taskq_t *self)
{
    return self->endpoint;
}

size_t taskq_max_payload(const taskq_t *self)
{
    return self->max_payload;
}

/* ---- submit ------------------------------------------------------------ */

/* Send the filling batch (if any) and keep it until its ack. */
static int flush_batch(taskq_t *self, taskq_error_t *err)
{
    batch_t *b = self->cur;
    if (!b || b->count == 0)
        return 0;
    self->cur = NULL;
    b->req = self->next_req++;
    if (self->unacked_tail)
        self->unacked_tail->next = b;
    else
        self->unacked_head = b;
    self->unacked_tail = b;
    if (b->flags & TQ_SUBMIT_SUBSCRIBE)
        self->unacked_subscribe++;
    if (self->lost)
        return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s", self->endpoint);
    return send_batch(self, b, err);
}

int taskq_flush(taskq_t *self, taskq_error_t *err)
{
    return flush_batch(self, err);
}

static size_t put_bytes(batch_t *b, const void *p, size_t n)
{
    size_t off = b->bytes.len;
    if (n > 0)
        tq_buf_put(&b->bytes, p, n);
    return off;
}

int taskq_submit(taskq_t *self, const taskq_task_opts_t *opts, const void *payload, size_t len,
                 int flags, uint64_t *seq_out, taskq_error_t *err)
{
    if (!opts || !opts->fn || !tq_name_valid(tq_bytes_str(opts->fn)))
        return fail(err, TASKQ_ERR_USAGE,
                    "invalid function name '%.64s' (1..%d of A-Z a-z 0-9 _ . : -)",
                    opts && opts->fn ? opts->fn : "", TQ_MAX_NAME);
    const char *queue = opts->queue ? opts->queue : "";
    if (*queue && !tq_name_valid(tq_bytes_str(queue)))
        return fail(err, TASKQ_ERR_USAGE,
                    "invalid queue name '%.64s' (1..%d of A-Z a-z 0-9 _ . : -)", queue,
                    TQ_MAX_NAME);
    if (opts->key_len > TQ_MAX_KEY || (opts->key_len > 0 && !opts->key))
        return fail(err, TASKQ_ERR_USAGE, "idempotency key longer than %d bytes", TQ_MAX_KEY);
    if (len > 0 && !payload)
        return fail(err, TASKQ_ERR_USAGE, "payload is NULL");
    if (len > self->max_payload)
        return fail(err, TASKQ_ERR_REFUSED, "payload too large (%zu bytes; the master allows %zu)",
                    len, self->max_payload);
    uint16_t wflags = (flags & TASKQ_SUBSCRIBE) ? TQ_SUBMIT_SUBSCRIBE : 0;
    batch_t *b = self->cur;
    if (b && (b->count == TQ_MAX_BATCH || b->flags != wflags ||
              (b->count > 0 && b->pay_bytes + len > TQ_BATCH_BYTES))) {
        if (flush_batch(self, err) < 0)
            return -1;
        b = NULL;
    }
    if (!b) {
        b = tq_calloc(1, sizeof *b);
        tq_buf_init(&b->bytes);
        b->flags = wflags;
        b->first_seq = self->next_seq;
        self->cur = b;
    }
    ptask_t *p = &b->tasks[b->count];
    size_t fn_len = strlen(opts->fn), q_len = strlen(queue);
    p->fn_len = (uint8_t)fn_len;
    p->fn_off = put_bytes(b, opts->fn, fn_len);
    p->queue_len = (uint8_t)q_len;
    p->queue_off = put_bytes(b, queue, q_len);
    p->key_len = (uint8_t)opts->key_len;
    p->key_off = put_bytes(b, opts->key, opts->key_len);
    p->pay_len = len;
    p->pay_off = put_bytes(b, payload, len);
    p->priority = opts->priority;
    p->timeout_ms = opts->timeout_ms;
    p->retries = opts->retries;
    b->count++;
    b->pay_bytes += len;
    if (seq_out)
        *seq_out = self->next_seq;
    self->next_seq++;
    /* Full: send now rather than on the next call, to keep the pipe busy. */
    if (b->count == TQ_MAX_BATCH || b->pay_bytes >= TQ_BATCH_BYTES)
        return flush_batch(self, err);
    return 0;
}

int taskq_wait(taskq_t *self, const uint64_t *ids, size_t n, taskq_error_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == 0)
            return fail(err, TASKQ_ERR_USAGE, "0 is not a task id");
    for (size_t i = 0; i < n; i++)
        tq_idmap_put(self->awaited, ids[i], (void *)1);
    if (self->lost)
        return fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s", self->endpoint);
    return send_wait(self, ids, n, err);
}

/* ---- events ------------------------------------------------------------ */

static int next_event(taskq_t *self, int timeout_ms, taskq_event_t *ev, taskq_error_t *err)
{
    if (flush_batch(self, err) < 0)
        return -1;
    int64_t deadline = timeout_ms < 0 ? -1 : tq_mono_ms() + timeout_ms;
    for (;;) {
        ev_node_t *n = ev_pop(&self->events);
        if (n) {
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
    on_enter(self);
    int rc = next_event(self, timeout_ms, ev, err);
    on_leave(self);
    return rc;
}

/* ---- cancel and status --------------------------------------------------- */

/* Pump until the blocking request is answered or the deadline passes. */
static int blk_run(taskq_t *self, int timeout_ms, const char *what, taskq_error_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tq_mono_ms() + timeout_ms;
    on_enter(self);
    int rc = blk_send(self, err);
    while (rc == 0 && !self->blk.done) {
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - tq_mono_ms();
            if (left <= 0)
                rc = fail(err, TASKQ_ERR_TIMEOUT, "no %s reply from %s within %d ms", what,
                          self->endpoint, timeout_ms);
        }
        if (rc == 0 && pump(self, left, err) < 0)
            rc = -1;
    }
    on_leave(self);
    if (rc < 0)
        return -1;
    if (self->blk.err_code)
        return fail(err, self->blk.err_code, "%s", self->blk.err_msg);
    return 0;
}

static void blk_reset(taskq_t *self)
{
    free(self->blk.json);
    memset(&self->blk, 0, sizeof self->blk);
}

int taskq_cancel(taskq_t *self, const uint64_t *ids, size_t n, int *outcomes, int timeout_ms,
                 taskq_error_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == 0)
            return fail(err, TASKQ_ERR_USAGE, "0 is not a task id");
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

const char *taskq_status_name(int status)
{
    switch (status) {
    case TASKQ_DONE:
        return "done";
    case TASKQ_FAILED:
        return "failed";
    case TASKQ_CANCELLED:
        return "cancelled";
    case TASKQ_UNKNOWN:
        return "unknown";
    case TASKQ_DEAD:
        return "dead";
    default:
        return "?";
    }
}
