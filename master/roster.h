/* roster.h - the peers' lives as the loop and the handlers share them:
 * forgetting a peer (its leases are lost through the engine, its waits
 * and queued messages dropped, its names released) and the log lines
 * about peers, rate-limited so that no peer can flood the log.
 *
 * Below the handlers and the loop; calls only the engine, the store,
 * peers and the outbox. Loop thread only. */
#ifndef TQ_MASTER_ROSTER_H
#define TQ_MASTER_ROSTER_H

#include <stdint.h>

#include "engine.h"
#include "outbox.h"
#include "peers.h"

typedef struct tq_roster tq_roster_t;

/* wake: set to 1 when a peer's leaving may let the scheduler do more.
 * Caller owns the result (tq_roster_destroy). */
tq_roster_t *tq_roster_new(tq_engine_t *engine, tq_peers_t *peers, tq_outbox_t *outbox, int *wake);
/* Accepts NULL; nulls *self_p. */
void tq_roster_destroy(tq_roster_t **self_p);

/* Warn about bad input from a peer (p NULL: not registered; addr is its
 * network address), at most a few lines per second per peer and a few
 * dozen of all peers together (the rest are counted and summed up). */
void tq_roster_warn(tq_roster_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 1 if a line about a peer at network address addr joining, leaving or
 * draining may be logged at level now: it is enabled, and fewer than a
 * few such lines about addr and a few dozen about all peers went out in
 * the current second (the rest are counted, and a summary says how many
 * were not logged). */
int tq_roster_line(tq_roster_t *self, int level, const char *addr);

/* Log the summaries of limiters whose second is over (from a timer, so
 * they appear when a flood stops too). now: monotonic ms. */
void tq_roster_tick(tq_roster_t *self, int64_t now);

/* Forget a peer: its leased tasks go back to their queues (or die), a
 * client's waits are dropped, its queued messages too. why ("left",
 * "lost (...)") is for the log. Nulls *pp. */
void tq_roster_forget(tq_roster_t *self, tq_peer_t **pp, const char *why);

/* Forget every peer marked gone (a send failed with EHOSTUNREACH). */
void tq_roster_reap(tq_roster_t *self);

#endif
