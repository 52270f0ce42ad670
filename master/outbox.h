/* outbox.h - everything the master sends on its ROUTER: each peer's
 * ordered queue of messages that could not go at once, and the gates a
 * reply waits behind (the journal LSN its records need; the loop pass a
 * SUBMIT_ACK is held for, to travel with the first results). This is
 * the one module that sends; handlers, admin and the loop build a
 * message in tq_outbox_msg and hand it here.
 *
 * Order: a peer's messages leave in the order they were handed over,
 * except HEARTBEAT (dropped when the peer's pipe is full: the next one
 * replaces it) and RESULTS (their ids stay pending in the client's books
 * and tq_outbox_results encodes them again). A DISPATCH is queued like a reply, so once
 * tq_outbox_dispatch returns 0 it will be sent (or its worker is
 * forgotten and the leases are lost like any others): a lease is
 * committed only then, and never undone.
 *
 * Loop thread only. */
#ifndef TQ_MASTER_OUTBOX_H
#define TQ_MASTER_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "peers.h"
#include "store.h"
#include "tq_frame.h"

/* Reply bytes (not DISPATCH: those are bounded by credit) one peer may
 * have queued before it is forgotten: it reads nothing. */
#define TQ_OUTBOX_MAX_QUEUED_BYTES (64u * 1024u * 1024u)

typedef struct tq_outbox tq_outbox_t;

/* Send on router (a ROUTER socket, ZMQ_ROUTER_MANDATORY) to the peers of
 * peers. Caller owns the result (tq_outbox_destroy). */
tq_outbox_t *tq_outbox_new(void *router, tq_peers_t *peers);
/* Accepts NULL; nulls *self_p. */
void tq_outbox_destroy(tq_outbox_t **self_p);

/* The message builder: tq_out_begin... on it, then one of the sends
 * below. */
tq_out_t *tq_outbox_msg(tq_outbox_t *self);

/* Send the built message to registered peer p without blocking, or
 * queue a copy behind p's older queued messages (never dropped, but a
 * HEARTBEAT or RESULTS). On EHOSTUNREACH p is marked gone (forgotten at
 * the end of the loop pass). Returns 0 (sent or queued), or -1 with
 * errno (EAGAIN for a HEARTBEAT or RESULTS that did not fit;
 * EHOSTUNREACH). */
int tq_outbox_send(tq_outbox_t *self, tq_peer_t *p);
/* The built reply goes to p only once the journal is ready up to lsn
 * (at once if ready_lsn, the journal's ready LSN now, is there: as
 * tq_outbox_send), and with hold = 1 not before the next loop pass (a
 * SUBMIT_ACK whose results the client waits for). */
void tq_outbox_send_gated(tq_outbox_t *self, tq_peer_t *p, uint64_t lsn, uint64_t ready_lsn,
                          int hold);
/* Send the built message to a routing id, registered or not. */
void tq_outbox_send_rid(tq_outbox_t *self, tq_bytes_t rid);
/* Send an ERROR (code, ref, msg) to a routing id, registered or not. */
void tq_outbox_error(tq_outbox_t *self, tq_bytes_t rid, int code, uint32_t ref, const char *msg);

/* A DISPATCH of tasks[n] (queued, held for w by the scheduler: each
 * carries its next attempt) to worker w: sent or queued. Returns 0, or
 * -1 when w is gone (nothing sent). */
int tq_outbox_dispatch(tq_outbox_t *self, tq_peer_t *w, tq_task_t *const *tasks, size_t n);

/* A KILL of (id, attempt) for worker w, sent by tq_outbox_send_kills
 * (one KILL per worker). */
void tq_outbox_kill(tq_outbox_t *self, tq_peer_t *w, uint64_t id, uint32_t attempt);
void tq_outbox_send_kills(tq_outbox_t *self);
/* p is about to be freed: drop what waits for it here (its queue, its
 * KILLs). Call it for every peer before tq_peers_remove/destroy. */
void tq_outbox_forget(tq_outbox_t *self, tq_peer_t *p);

/* A new loop pass begins. */
void tq_outbox_pass(tq_outbox_t *self);
/* 1 if a reply is held for the end of the current pass (the loop then
 * polls with a short timeout). */
int tq_outbox_held(const tq_outbox_t *self);
/* Send p's queued messages, oldest first, until one's gate is not open
 * (journal ready below its LSN, or held for a later pass) or p's pipe is
 * full. */
void tq_outbox_flush(tq_outbox_t *self, tq_peer_t *p, uint64_t ready_lsn);

/* Send client c the outcomes of its pending ids (c->pending) in as many
 * RESULTS as they need; each one sent starts its task's result TTL
 * (tq_engine_fetched at now). Outcomes that do not fit (c's pipe is full,
 * or peer_bytes, --peer-queue-bytes, of them wait for its ACK) stay
 * pending as ids, in order. A client with more than a million pending is
 * forgotten (marked gone). */
void tq_outbox_results(tq_outbox_t *self, tq_peer_t *c, tq_engine_t *engine, uint64_t peer_bytes,
                       tq_now_t now);

/* 1 (and cleared) if a send would have blocked since the last call:
 * retry soon. */
int tq_outbox_take_stalled(tq_outbox_t *self);
/* 1 (and cleared) if a peer went gone since the last call. */
int tq_outbox_take_gone(tq_outbox_t *self);

#endif
