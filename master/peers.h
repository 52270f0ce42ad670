/* peers.h - the workers and clients the master knows, keyed by their
 * ZeroMQ routing id. Owned by the loop thread. A peer exists from its
 * first valid HELLO until BYE, heartbeat timeout or a failed send.
 *
 * No sockets here: the loop sends, this module keeps the books (credit,
 * leases, waits, pending RESULTS), so the scheduler can be tested alone. */
#ifndef TQ_MASTER_PEERS_H
#define TQ_MASTER_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "auth.h"
#include "store.h"
#include "tq_idmap.h"
#include "tq_proto.h"

typedef enum { TQ_ROLE_WORKER = 1, TQ_ROLE_CLIENT = 2 } tq_role_t;

/* One outcome handed to ZeroMQ: its id, and the peer's sent_total
 * once it was charged. */
typedef struct {
    uint64_t id;
    uint64_t mark;
} tq_peer_sent_t;

/* A peer's queue of messages not sent yet: outbox.c's (it fills, sends
 * and frees it; tq_outbox_forget before the peer is removed). */
typedef struct tq_outmsg tq_outmsg_t;
typedef struct {
    tq_outmsg_t *m;
    size_t n, cap;
    size_t reply_bytes; /* of the queued messages but DISPATCH */
} tq_outq_t;

typedef struct tq_peer {
    uint8_t rid[TQ_MAX_ROUTING_ID];
    size_t rid_len;
    tq_role_t role;
    int packed; /* HELLO "packed": send it packed messages */
    char name[TQ_MAX_PEER_NAME + 1];
    char address[64];
    /* --allow-keys (key-pair mode): the ZAP User-Id of its connection
     * (an identity name, TQ_IDENT_SHARED for the authkey pair, "" without
     * --allow-keys), its identity (NULL: none, or the shared pair: no
     * limits), the owner recorded for what it submits (interned, or
     * NULL), and its connection (cut when its key is removed) */
    char ident_name[TQ_IDENT_NAME_MAX + 1];
    const tq_ident_t *ident;
    const char *ident_owner;
    tq_connref_t conn;
    int64_t joined_ms;     /* monotonic */
    int64_t last_seen_ms;  /* monotonic: last message from it */
    size_t idx;            /* index in the peers array */
    struct tq_peer *hnext; /* hash chain */
    uint64_t hash;

    /* worker */
    uint64_t instance; /* HELLO "instance" (the same across its
                              reconnects), or random per registration;
                              never 0: leases record it (tq_task_holder) */
    uint32_t slots;
    uint32_t prefetch; /* tasks it takes beyond its slots (no run
                              timeout: tq_sched_run) */
    uint32_t credit;   /* tasks it can take now; RESULT credit never
                              raises it above slots + prefetch (a
                              resizing HELLO may leave it above) */
    const char **fns;  /* interned function names */
    size_t nfns;
    int draining;
    int quiet;          /* draining at an operator's request (ADMIN
                              quiet): it still runs, and may be resumed
                              by a restart of the worker only */
    int gone;           /* a send failed for good: removed after this
                              loop iteration; the scheduler skips it */
    int stalled;        /* a send would block: skip until next iteration */
    tq_task_t **leased; /* tasks leased to it; task->x->peer_lease_idx */
    size_t nleased, capleased;
    uint64_t done; /* tasks it finished (any outcome) */

    /* client */
    tq_idmap_t *waits; /* task id -> task it waits for */
    uint64_t *pending; /* ids whose outcome goes out in the next RESULTS */
    size_t npending, cappending;
    /* Outcomes handed to ZeroMQ that the client has not confirmed yet
     * (tq_peer_sent_add / tq_peer_sent_ack): bytes charged so far and
     * bytes confirmed, as running totals; sent_total - acked_total is
     * what may still sit in ZeroMQ's queue (--peer-queue-bytes). */
    uint64_t sent_total, acked_total;
    tq_peer_sent_t *sent; /* ring, in send order */
    size_t sent_head, nsent, capsent;
    tq_idmap_t *sent_ids; /* id -> its sent_total mark (newest copy) */

    tq_outq_t outq; /* outbox.c's: messages not sent yet, in order */

    /* new names it may still create (TQ_PEER_NEW_NAMES_*), refilled
     * from name_refill_ms on: tq_peer_take_name */
    uint32_t name_tokens;
    int64_t name_refill_ms;

    /* log rate limit (malformed input): lines in the current second */
    int64_t log_window_ms;
    unsigned log_lines, log_suppressed;
} tq_peer_t;

typedef struct tq_peers tq_peers_t;

/* Caller owns the result (tq_peers_destroy). */
tq_peers_t *tq_peers_new(void);
/* Frees every peer (not the tasks). Accepts NULL; nulls *self_p. */
void tq_peers_destroy(tq_peers_t **self_p);

/* The peer with routing id rid, or NULL. */
tq_peer_t *tq_peers_find(const tq_peers_t *self, tq_bytes_t rid);
/* A new peer of this role (rid must not be known; rid.len 1..255). */
tq_peer_t *tq_peers_add(tq_peers_t *self, tq_bytes_t rid, tq_role_t role, int64_t now_ms);
/* Forget a peer. Its leases and waits must have been handled first
 * (asserted). Nulls *peer_p. */
void tq_peers_remove(tq_peers_t *self, tq_peer_t **peer_p);

/* A worker's id as operators see it (status "id", ADMIN quiet/stop):
 * its instance as 16 hex digits. out needs 17 bytes. */
void tq_worker_id(const tq_peer_t *p, char *out, size_t len);

size_t tq_peers_count(const tq_peers_t *self);
/* The i-th peer (order changes when a peer is removed). */
tq_peer_t *tq_peers_at(const tq_peers_t *self, size_t i);
size_t tq_peers_count_role(const tq_peers_t *self, tq_role_t role);

/* Round-robin cursor over workers, kept across scheduler runs. */
size_t *tq_peers_rr(tq_peers_t *self);
/* Round-robin cursor over queues, kept across scheduler runs. */
size_t *tq_peers_qrr(tq_peers_t *self);
/* A buffer of at least `bytes` for the scheduler's work (kept between
 * calls, so a pass over 1,000 workers allocates nothing); its contents
 * are undefined and valid until the next call. */
void *tq_peers_scratch(tq_peers_t *self, size_t bytes);

/* 1 if worker w declared the interned function name fn. */
int tq_peer_serves(const tq_peer_t *w, const char *fn);
/* Set a worker's interned functions (copied array). */
void tq_peer_set_fns(tq_peer_t *w, const char *const *fns, size_t n);
/* "a,b,c" of a worker's functions into buf (len >= 1), always
 * terminated; a list that does not fit ends in "...". */
void tq_peer_fns_text(const tq_peer_t *w, char *buf, size_t len);

/* Take one of p's new-name tokens (TQ_PEER_NEW_NAMES_BURST, refilled
 * at TQ_PEER_NEW_NAMES_PER_S). Returns 0, or -1 when none is left. */
int tq_peer_take_name(tq_peer_t *p, int64_t now_ms);

/* Leases of a worker. */
void tq_peer_lease_add(tq_peer_t *w, tq_task_t *t);
void tq_peer_lease_remove(tq_peer_t *w, tq_task_t *t);

/* Client waits: add returns 0 or -1 if already waiting. The task's
 * waiter list and the client's wait map are kept in step. */
int tq_peer_wait_add(tq_peer_t *c, tq_task_t *t);
/* A task finished: drop it from every waiter's wait map and queue its id
 * for each waiter's next RESULTS. Clears t's waiter list. */
void tq_peer_notify_waiters(tq_task_t *t);
/* Outcome id went to ZeroMQ for client c, charged `bytes` (> 0) against
 * its byte budget. */
void tq_peer_sent_add(tq_peer_t *c, uint64_t id, uint64_t bytes);
/* The client ACKed id: everything sent to it up to that outcome has been
 * read (ZeroMQ keeps the order), so its charge is released. Unknown ids
 * are ignored. */
void tq_peer_sent_ack(tq_peer_t *c, uint64_t id);
/* Bytes of outcomes sent to c and not confirmed by an ACK. */
static inline uint64_t tq_peer_unconfirmed(const tq_peer_t *c)
{
    return c->sent_total - c->acked_total;
}
/* Queue an id for the client's next RESULTS. */
void tq_peer_pending_add(tq_peer_t *c, uint64_t id);
/* Drop every wait of client c (dead or re-registering). */
void tq_peer_drop_waits(tq_peer_t *c, tq_store_t *store);

#endif
