/* session.h - inside libtaskq: the client handle. Not installed; nothing
 * here is exported (the library is built with hidden visibility, and
 * only TASKQ_API functions are public).
 *
 * The connection itself (socket, CURVE, handshake watch, HELLO/WELCOME,
 * heartbeats, lost-master detection, re-registration, reconnects) is the
 * link (link/tq_link.h). session.c makes and ends the handle: it
 * connects the link and waits for the first WELCOME (taskq_connect),
 * and says BYE (taskq_close). taskq.c owns the public API state (submit
 * batches, awaited ids, events, the blocking request) and drives the
 * link: it answers the link's events, re-sending what the master may
 * have forgotten when the link says it is registered again.
 *
 * Calls go one way: session.c -> taskq.c (tq_api_*) -> link. */
#ifndef TQ_CLIENT_SESSION_H
#define TQ_CLIENT_SESSION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "taskq.h"
#include "tqerr.h"
#include "tq_authkey.h"
#include "tq_curve.h"
#include "tq_idmap.h"
#include "tq_link.h"
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

/* Where a batch keeps its payloads: blocks that never move, so that the
 * batch's message can point at them from the first task on. */
typedef struct chunk {
    struct chunk *next;
    size_t cap, len;
    atomic_int refs; /* the batch's, plus one per ZeroMQ frame lent its bytes */
    uint8_t data[];
} chunk_t;

/* A SUBMIT batch: encoded once, task by task, as it fills (its request
 * id and flags are fixed when it starts); sent, and kept until its
 * SUBMIT_ACK so that a re-HELLO re-sends the very same message. */
typedef struct batch {
    struct batch *next;
    uint32_t req;
    uint16_t flags;
    int64_t sent_ms; /* monotonic: last (re)sent */
    uint64_t first_seq;
    size_t count;
    size_t pay_bytes;
    tq_out_t msg;    /* the SUBMIT message; its data frames point into chunks */
    chunk_t *chunks; /* the payload copies, newest first */
} batch_t;

typedef struct ev_node {
    struct ev_node *next;
    taskq_event_t ev;
    void *owned;      /* data or message copy, freed with the node */
    tq_msgref_t *ref; /* or the received frame ev.data points into */
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
    char *json;    /* STATUS, ADMIN: the reply */
    void *request; /* ADMIN: the request (a cJSON object with "req") */
    int err_code;
    char err_msg[TASKQ_ERROR_MAX];
    /* PUT, GET (plain queues) */
    const char *queue;
    const taskq_item_t *items; /* PUT: this message's items */
    uint32_t wait_ms;          /* GET */
    size_t max;                /* GET */
    taskq_item_fn fn;          /* GET: each item */
    void *fn_arg;
    uint64_t *got_ids; /* GET: the ids to TAKE_ACK (max of them) */
    size_t ngot;
} blocking_t;

struct taskq {
    /* ---- the connection (session.c sets it up, taskq.c drives it) ---- */
    void *ctx;
    tq_link_t *link;       /* socket, handshake, heartbeats, reconnects */
    void *hello;           /* our HELLO body (cJSON), said again on request */
    tq_curve_keys_t *keys; /* kept to reconnect (no server secret); freed at close */
    int keypair;           /* key-pair mode (--key / --master-key): for messages */
    uint8_t session_id[TQ_CLIENT_SESSION_ID]; /* random, from taskq_connect */
    int64_t last_call;                        /* when the last public call returned */
    int64_t ack_timeout_ms;                   /* taskq_set_ack_timeout; 0 none */
    int was_lost;                             /* LOST seen, not yet registered again */
    uint32_t next_req;                        /* request ids */
    taskq_notice_fn notice;                   /* taskq_set_notice, or NULL */
    void *notice_arg;

    /* ---- the API state (taskq.c) ---- */
    uint64_t next_seq;
    batch_t *cur;   /* filling, not yet sent */
    batch_t *spare; /* one acknowledged batch kept for reuse */
    batch_t *unacked_head, *unacked_tail;
    size_t unacked_subscribe; /* unacked batches with SUBSCRIBE */
    tq_idmap_t *awaited;      /* ids whose result we still expect */
    ev_list_t events;         /* ready for taskq_next_event */
    ev_list_t deferred;       /* results that came before their ack */
    ev_node_t *current;       /* last handed out; freed on next call */
    blocking_t blk;
    uint64_t *acks; /* results handed out, not yet ACKed */
    size_t nacks, acks_cap;
    int64_t acks_due; /* monotonic: send the ACK by then */
    uint32_t next_ack_req;
    int acks_sent; /* an ACK went out on this connection */
    int acks_off;  /* the master does not know ACK */
    tq_outcome_t outcomes[TQ_MAX_BATCH];
    tq_cancel_item_t cancel_items[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
};

/* ---- provided by session.c ----------------------------------------------- */

/* What a rejected handshake most likely means, for its message:
 * "wrong authkey?", or the key-pair mode's hint. */
const char *tq_client_auth_hint(const taskq_t *self);

/* ---- provided by taskq.c ------------------------------------------------- */

/* Set up and release the API state of a handle (the session fields are
 * session.c's). tq_api_free accepts a half-initialised handle. */
void tq_api_init(taskq_t *self);
void tq_api_free(taskq_t *self);

/* Send the ACKs for results handed out, in messages of at most
 * TQ_MAX_BATCH ids. Kept while not connected. Returns 0 or -1. */
int tq_api_send_acks(taskq_t *self, taskq_error_t *err);

#endif
