/* session.h - inside libtaskq: the handle, and the calls between its two
 * halves. Not installed; nothing here is exported (the library is built
 * with hidden visibility, and only TASKQ_API functions are public).
 *
 * session.c owns the connection to the master: socket, CURVE, handshake
 * watch, HELLO/WELCOME, heartbeats, lost-master detection and
 * re-registration. taskq.c owns the public API state: submit batches,
 * awaited ids, events, the blocking cancel/status request.
 *
 * The session hands every message it does not handle itself to
 * tq_api_on_message / tq_api_on_error, and after a re-HELLO asks
 * tq_api_resend to re-send what the master may have forgotten. */
#ifndef TQ_CLIENT_SESSION_H
#define TQ_CLIENT_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "taskq.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_proto.h"
#include "tq_util.h"

#define TQ_CLIENT_ENDPOINT_MAX 256

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
    /* ---- the connection (session.c) ---- */
    void *ctx;
    void *sock;
    char endpoint[TQ_CLIENT_ENDPOINT_MAX];
    char name[TQ_MAX_PEER_NAME + 1];
    tq_in_t *in;                       /* the message being handled */
    tq_out_t out;                      /* the message being built */
    int64_t hb_ms, hb_timeout_ms;      /* from WELCOME */
    size_t max_payload;                /* from WELCOME */
    int64_t last_recv, last_send, last_call;
    int lost;                          /* master silent: only close is left */
    int rehello_pending;               /* HELLO re-sent, WELCOME not yet back */
    uint32_t next_req;                 /* request ids, shared by both halves */

    /* ---- the API state (taskq.c) ---- */
    uint64_t next_seq;
    batch_t *cur;                      /* filling, not yet sent */
    batch_t *spare;                    /* one acknowledged batch kept for reuse */
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

/* ---- provided by session.c ---------------------------------------------- */

/* Fill err (when given) with code and the formatted message; returns -1. */
int tq_client_fail(taskq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Send the message built in self->out. Returns 0, or -1 with
 * TASKQ_ERR_CONNECT when ZeroMQ could not queue it within the send
 * timeout (the master is gone and the queue is full). */
int tq_session_send(taskq_t *self, taskq_error_t *err);

/* One step of the connection: handle what arrived, keep the heartbeat
 * going, and wait at most wait_ms (-1: until the next timer) for more.
 * Returns 1 if messages were handled, 0 if not, -1 on a lost master
 * (after which every call fails with TASKQ_ERR_CONNECT). */
int tq_session_pump(taskq_t *self, int64_t wait_ms, taskq_error_t *err);

/* Bracket every public call that pumps: enter forgives the silence the
 * caller's own absence caused; leave notes when the call returned. */
void tq_session_enter(taskq_t *self);
void tq_session_leave(taskq_t *self);

/* ---- provided by taskq.c ------------------------------------------------- */

/* Set up and release the API state of a handle (the session fields are
 * session.c's). tq_api_free accepts a half-initialised handle. */
void tq_api_init(taskq_t *self);
void tq_api_free(taskq_t *self);

/* A SUBMIT_ACK, RESULTS, CANCEL_ACK or STATUS_REPLY in self->in (body
 * and nparts from its head). Malformed messages are ignored. */
void tq_api_on_message(taskq_t *self, int type, tq_bytes_t body, size_t nparts);

/* An ERROR from the master other than "not registered": ref is the
 * request id it answers (0 if none), msg its text. Fails the matching
 * batch or blocking request, or becomes an ERROR event. */
void tq_api_on_error(taskq_t *self, uint32_t ref, const char *msg);

/* After a re-HELLO: re-send every unacknowledged batch, a WAIT for every
 * result still expected, and the blocking request. Returns 0 or -1. */
int tq_api_resend(taskq_t *self, taskq_error_t *err);

#endif
