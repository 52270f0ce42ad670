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
#include "tqerr.h"
#include "tq_authkey.h"
#include "tq_curve.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_frame.h"
#include "tq_util.h"

#define TQ_CLIENT_ENDPOINT_MAX 256
/* Random part of the automatic task keys (TQ_SUBMIT_SCOPED_KEYS): a
 * session id per handle, then the u64 little-endian sequence number. */
#define TQ_CLIENT_SESSION_ID 16
#define TQ_CLIENT_AUTO_KEY (TQ_CLIENT_SESSION_ID + 8)
/* ACK request ids carry this bit, so that an ERROR answering an ACK
 * (a master that does not know ACK) is recognised and ignored. */
#define TQ_CLIENT_ACK_REQ_BIT 0x80000000u
/* ACKs wait at most this long for company (a full batch sends at once;
 * taskq_close sends what is left): the master only forgets results
 * sooner because of them, and a lone ACK per result would cost the
 * master a message and a journal write between requests. */
#define TQ_CLIENT_ACK_DELAY_MS 50

/* One task in a batch: offsets into the batch's byte buffer (which may
 * move while it grows, so no pointers). */
typedef struct {
    size_t fn_off, queue_off, key_off, pay_off, pay_len;
    uint8_t fn_len, queue_len, key_len;
    int32_t priority;
    uint32_t timeout_ms;
    uint16_t retries;
    int64_t not_before_ms; /* 0: none (the batch has no TQ_SUBMIT_NOT_BEFORE) */
} ptask_t;

/* A SUBMIT batch: filled locally, then sent and kept until its
 * SUBMIT_ACK so that it can be re-sent after a re-HELLO. */
typedef struct batch {
    struct batch *next;
    uint32_t req;
    uint16_t flags;
    int64_t sent_ms; /* monotonic: last (re)sent */
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

/* The one blocking request (cancel, status or admin) in progress. */
typedef struct {
    int active;
    int type; /* TQ_MSG_CANCEL, TQ_MSG_STATUS or TQ_MSG_ADMIN */
    uint32_t req;
    const uint64_t *ids; /* CANCEL: this message's ids */
    size_t n;
    int *outcomes;
    int done;
    char *json; /* STATUS, ADMIN: the reply */
    void *request; /* ADMIN: the request (a cJSON object with "req") */
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
    int packed;                        /* WELCOME: the master takes packed messages */
    int64_t last_recv, last_send, last_call;
    int lost;                          /* master gone for good: only close is left */
    int rehello_pending;               /* HELLO re-sent, WELCOME not yet back */
    uint32_t next_req;                 /* request ids, shared by both halves */
    tq_curve_keys_t *keys; /* kept to reconnect (no server secret); freed at close */
    uint8_t session_id[TQ_CLIENT_SESSION_ID]; /* random, from taskq_connect */
    int64_t reconnect_ms;              /* budget after losing the master; 0 never */
    int64_t ack_timeout_ms;            /* taskq_set_ack_timeout; 0 none */
    int reconnecting;                  /* lost the master, trying fresh sockets */
    int64_t lost_at;                   /* when reconnecting started */
    int64_t attempt_end;               /* the current attempt gives up then */
    int64_t next_attempt;              /* no socket: the next attempt starts then */
    int64_t backoff_ms;                /* pause before the attempt after next */
    tq_hswatch_t *watch;               /* handshake watch of the attempt */
    unsigned watch_gen;                /* makes the watch names unique */
    taskq_notice_fn notice;            /* taskq_set_notice, or NULL */
    void *notice_arg;

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
    uint64_t *acks;                    /* results handed out, not yet ACKed */
    size_t nacks, acks_cap;
    int64_t acks_due;                  /* monotonic: send the ACK by then */
    uint32_t next_ack_req;
    int acks_sent;                     /* an ACK went out on this connection */
    int acks_off;                      /* the master does not know ACK */
    tq_outcome_t outcomes[TQ_MAX_BATCH];
    tq_cancel_item_t cancel_items[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
};

/* ---- provided by session.c ---------------------------------------------- */

/* Send the message built in self->out. Returns 0, or -1 with
 * TASKQ_ERR_CONNECT when ZeroMQ could not queue it within the send
 * timeout (the master is gone and the queue is full) and reconnecting is
 * off. While reconnecting (self->reconnecting, also when this send is
 * what noticed the loss) the message is dropped and 0 returned: callers
 * keep what they sent until it is answered, and tq_api_resend repeats
 * it once the master welcomes us again. */
int tq_session_send(taskq_t *self, taskq_error_t *err);

/* One step of the connection: handle what arrived, keep the heartbeat
 * going, send pending ACKs, and wait at most wait_ms (-1: until the next
 * timer) for more. A silent master starts reconnecting (when enabled);
 * each pump then advances the attempt. Returns 1 if messages were
 * handled, 0 if not, -1 on a master lost for good (after which every
 * call fails with TASKQ_ERR_CONNECT). */
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

/* A SUBMIT_ACK, RESULTS, CANCEL_ACK, STATUS_REPLY or ADMIN_REPLY in self->in (body
 * and nparts from its head). Malformed messages are ignored. */
void tq_api_on_message(taskq_t *self, int type, tq_bytes_t body, size_t nparts);

/* An ERROR from the master other than "not registered": ref is the
 * request id it answers (0 if none), msg its text. Fails the matching
 * batch or blocking request, or becomes an ERROR event. */
void tq_api_on_error(taskq_t *self, uint32_t ref, const char *msg);

/* After a re-HELLO or a reconnect: re-send every unacknowledged batch, a
 * WAIT for every result still expected, the blocking request, and the
 * pending ACKs. Returns 0 or -1. */
int tq_api_resend(taskq_t *self, taskq_error_t *err);

/* Send the ACKs for results handed out, in messages of at most
 * TQ_MAX_BATCH ids. Kept while not connected. Returns 0 or -1. */
int tq_api_send_acks(taskq_t *self, taskq_error_t *err);

#endif
