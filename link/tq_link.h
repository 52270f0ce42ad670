/* tq_link.h - libtaskq's one connection to the master, used by the
 * client (client/) and the worker engine (workerlib/). Not installed.
 *
 * A link owns the DEALER socket (CURVE client), the handshake watch,
 * HELLO/WELCOME, heartbeats both ways, noticing a silent master,
 * "ERROR not registered -> HELLO again", and reconnecting with one
 * policy (below). It knows nothing of tasks: what the owner must do is
 * handed out as events by tq_link_next, and the owner answers by calling
 * the link. Calls go one way (owner -> link); the link calls no owner
 * code, so nothing is sent from inside a receive.
 *
 * Single-threaded: one thread owns a link. It polls tq_link_pollitems
 * with its own sockets, waiting at most tq_link_wait_ms, then calls
 * tq_link_next until it returns TQ_LINK_NONE (or its own burst cap).
 *
 * The policy, the same for clients and workers (docs/architecture.md):
 *  - WELCOME heartbeat_ms is taken within [TQ_LINK_HB_MIN_MS,
 *    TQ_LINK_HB_MAX_MS], heartbeat_timeout_ms within
 *    [TQ_LINK_HB_TIMEOUT_MIN_MS, TQ_LINK_HB_TIMEOUT_MAX_MS] and above
 *    heartbeat_ms (otherwise 5 x heartbeat_ms, the defaults' ratio);
 *    anything else keeps the previous value.
 *  - HEARTBEAT goes out when nothing was sent for heartbeat_ms on a
 *    welcomed socket; a welcomed socket that hears nothing for
 *    heartbeat_timeout_ms is lost: it is closed (linger 0) and the first
 *    attempt starts at once.
 *  - An attempt is a fresh socket with HELLO queued; it fails when no
 *    WELCOME came within heartbeat_timeout_ms bounded to
 *    [TQ_LINK_ATTEMPT_MIN_MS, TQ_LINK_ATTEMPT_MAX_MS], or the master
 *    answered it with an ERROR (e.g. too many connections). After a
 *    failed attempt the next waits TQ_LINK_BACKOFF_FIRST_MS, doubling up
 *    to TQ_LINK_BACKOFF_MAX_MS.
 *  - A budget (tq_link_set_reconnect) bounds the time from the loss to
 *    the next WELCOME: past it the link is dead. 0: dead at the loss.
 *    Negative: no bound (the worker). */
#ifndef TQ_LINK_H
#define TQ_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "tq_authkey.h"
#include "tq_limits.h"
#include "tq_frame.h"
#include "tq_proto.h"

/* Until WELCOME says otherwise (PROTOCOL.md 12.2 defaults). */
#define TQ_LINK_DEFAULT_HB_MS 1000
#define TQ_LINK_DEFAULT_HB_TIMEOUT_MS 5000
/* What a WELCOME may set (a silly value must not spin or stall us): the
 * master allows --heartbeat-interval up to 60 s and --heartbeat-timeout
 * up to 3600 s. */
#define TQ_LINK_HB_MIN_MS 10
#define TQ_LINK_HB_MAX_MS 600000
#define TQ_LINK_HB_TIMEOUT_MIN_MS 50
#define TQ_LINK_HB_TIMEOUT_MAX_MS 3600000
/* How long an attempt waits for WELCOME (the heartbeat timeout, within
 * these bounds), and the pause between attempts. */
#define TQ_LINK_ATTEMPT_MIN_MS 1000
#define TQ_LINK_ATTEMPT_MAX_MS 10000
#define TQ_LINK_BACKOFF_FIRST_MS 100
#define TQ_LINK_BACKOFF_MAX_MS 2000

typedef struct tq_link tq_link_t;

typedef struct {
    const char *endpoint;        /* tcp://host:port (copied) */
    const tq_curve_keys_t *keys; /* kept by the caller for the link's life */
    void *zctx;                  /* ZeroMQ context (the caller's) */
    const char *watch_name;      /* unique per context: names the watches */
    /* How long the first attempt waits for WELCOME; 0: the policy's. */
    int64_t first_attempt_ms;
} tq_link_opts_t;

/* What tq_link_next hands out. */
enum {
    TQ_LINK_NONE = 0,    /* nothing more now */
    TQ_LINK_SKIP,        /* a message was read and handled inside (count it in a burst) */
    TQ_LINK_HELLO,       /* say HELLO now: tq_link_hello */
    TQ_LINK_REGISTERED,  /* WELCOME: registered; .again: not the first time, so
                            re-send what the master may have forgotten */
    TQ_LINK_MESSAGE,     /* a message for the owner: .msg_type, .body, .nparts,
                            tq_link_in (an ERROR other than not-registered too) */
    TQ_LINK_LOST,        /* the master went silent (.silent_ms) or a send failed:
                            the socket is closed, attempts follow (or TQ_LINK_DEAD) */
    TQ_LINK_REFUSED,     /* an attempt got ERROR before WELCOME (.text); the next
                            attempt follows after the backoff */
    TQ_LINK_BAD,         /* a message not understood (.text); ignored */
    TQ_LINK_AUTH_FAILED, /* a handshake was rejected (wrong authkey?); .again: some
                            handshake with this endpoint succeeded before */
    TQ_LINK_DEAD,        /* the reconnect budget is spent: only free is left */
};

typedef struct {
    int type;                     /* TQ_LINK_* */
    int again;                    /* REGISTERED, AUTH_FAILED: see above */
    int msg_type;                 /* MESSAGE; BAD: the type (-1: no readable head) */
    tq_bytes_t body;              /* MESSAGE: a view into tq_link_in, valid until the next call */
    size_t nparts;                /* MESSAGE */
    int64_t silent_ms;            /* LOST: how long the master was silent (0: a send failed) */
    char text[TQ_MAX_ERROR_TEXT]; /* REFUSED, BAD: what (escaped for a terminal) */
} tq_link_event_t;

/* What a WELCOME says (its one validator: tq_link_welcome_parse). */
typedef struct {
    int64_t hb_ms, hb_timeout_ms;
    size_t max_payload;
    int packed;
} tq_link_welcome_t;

/* Read a WELCOME body into *w through proto's one validator
 * (tq_welcome_decode: version, heartbeat_ms 10..600000, a
 * heartbeat_timeout_ms above it, max_payload). Returns 0, or -1 with e
 * naming the field when the WELCOME is not valid (*w untouched): the
 * link then reports TQ_LINK_BAD and the attempt counts as failed. */
int tq_link_welcome_parse(tq_bytes_t body, size_t nparts, tq_link_welcome_t *w, tq_err_t *e);

/* Read an ERROR body: code, ref (the request id it answers, 0 if none)
 * and the message, escaped, into msg[size]. An unreadable body gives
 * TQ_ERR_INTERNAL and a text saying so. */
void tq_link_error_parse(tq_bytes_t body, size_t nparts, int *code, uint32_t *ref, char *msg,
                         size_t size);

/* A link, not yet connected (tq_link_start). NULL on bad options. */
tq_link_t *tq_link_new(const tq_link_opts_t *opts);
/* Close the socket, waiting up to linger_ms for queued messages to
 * leave, and free. NULL is fine. */
void tq_link_free(tq_link_t **self_p, int linger_ms);

/* The reconnect budget: see the policy. The default is -1 (no bound). */
void tq_link_set_reconnect(tq_link_t *self, int64_t budget_ms);

/* Open the first socket. Returns 0, -1 (ZeroMQ could not make or set up
 * a socket) or -2 (zmq_connect refused the endpoint), with errno, and the
 * link left without a socket. tq_link_next then asks for HELLO. */
int tq_link_start(tq_link_t *self);

/* One step: run the timers (heartbeat, silence, attempts, budget), look
 * at the handshake watch, and read at most one message, without
 * blocking. Returns ev->type. */
int tq_link_next(tq_link_t *self, tq_link_event_t *ev);

/* Send HELLO with this body (a cJSON object; "packed": true is added):
 * the answer to TQ_LINK_HELLO. Returns 0, or -1 if it could not be
 * queued (the attempt then fails by its timer). */
int tq_link_hello(tq_link_t *self, void *json);

/* The poll items of the link (its socket, and its handshake watch until
 * WELCOME): fills items[0..2) and returns how many (0 with no socket). */
int tq_link_pollitems(tq_link_t *self, zmq_pollitem_t *items);
/* How long the owner may wait before tq_link_next has a timer to run
 * (>= 0). */
int64_t tq_link_wait_ms(const tq_link_t *self);

/* The message builder; build into it, then tq_link_send. */
tq_out_t *tq_link_out(tq_link_t *self);
/* The message tq_link_next last read. */
tq_in_t *tq_link_in(tq_link_t *self);

enum { TQ_LINK_NOWAIT = 0, TQ_LINK_BLOCK = 1 };
/* Send the built message (packed when the master takes it). With no
 * welcomed socket (an attempt in progress, or none) nothing is sent: the
 * owner re-sends after TQ_LINK_REGISTERED. TQ_LINK_BLOCK waits up to the
 * heartbeat timeout for room, and a failure then is a lost master
 * (TQ_LINK_LOST follows from tq_link_next). Returns 1 sent, 0 not sent,
 * -1 the link is dead. */
int tq_link_send(tq_link_t *self, int mode);
/* The same for a message the owner built and keeps (e.g. a batch that
 * may be sent again as it is). */
int tq_link_send_msg(tq_link_t *self, tq_out_t *msg, int mode);

/* Give up: close the socket; the link is dead (e.g. the owner refuses
 * to go on after an authentication failure). */
void tq_link_kill(tq_link_t *self);

/* The owner was away (not calling tq_link_next) since `since`: if that
 * is longer than a heartbeat interval, the master's messages queued up
 * unread meanwhile, so its silence is forgiven from now on. */
void tq_link_forgive(tq_link_t *self, int64_t since);

/* State. */
int tq_link_dead(const tq_link_t *self);
/* A welcomed socket with no HELLO pending: messages reach a master that
 * knows us. */
int tq_link_registered(const tq_link_t *self);
/* A socket that was welcomed (possibly with a re-HELLO pending): what is
 * sent now reaches the master in order after our HELLO. */
int tq_link_up(const tq_link_t *self);
/* Reconnecting: the welcomed socket was lost and no WELCOME came since. */
int tq_link_reconnecting(const tq_link_t *self);
const char *tq_link_endpoint(const tq_link_t *self);
/* From the last WELCOME (defaults before). */
const tq_link_welcome_t *tq_link_welcome(const tq_link_t *self);
/* The budget given to tq_link_set_reconnect. */
int64_t tq_link_reconnect_budget(const tq_link_t *self);

#endif
