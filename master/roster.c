/* roster.c - peers leaving, and the rate-limited log lines about peers.
 * See roster.h. */
#include "roster.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "now.h"
#include "tq_log.h"
#include "tq_util.h"

/* Warn lines about bad input per peer per second; the rest are counted. */
#define ROSTER_WARN_PER_S 3
/* ... and of all peers together, so that many peers cannot flood the
 * log either. */
#define ROSTER_WARN_ALL_PER_S 30
/* Lines about peers joining, leaving or draining per second, all peers
 * together (a peer looping HELLO/BYE must not fill the disk with log). */
#define ROSTER_PEER_LINES_PER_S 20
/* ... and per peer address, so that one flooding host does not use up
 * the budget of the others. */
#define ROSTER_PEER_LINES_PER_ADDR_S 5
/* Peer addresses are spread over this many join/leave line budgets (a
 * hash; addresses that share one share its budget). */
#define ROSTER_ADDR_BUCKETS 256

/* Warn lines in the current second, and how many were held back. */
typedef struct {
    int64_t window_ms;
    unsigned lines, suppressed;
} rl_t;

struct tq_roster {
    tq_engine_t *engine;
    tq_store_t *store;
    tq_peers_t *peers;
    tq_outbox_t *outbox;
    int *wake;
    rl_t anon_rl;                      /* for peers not registered */
    rl_t warn_rl;                      /* bad-input lines of all peers together */
    rl_t peer_rl;                      /* join/leave/drain lines of all peers */
    rl_t addr_rl[ROSTER_ADDR_BUCKETS]; /* ... per address (hashed) */
};

tq_roster_t *tq_roster_new(tq_engine_t *engine, tq_peers_t *peers, tq_outbox_t *outbox, int *wake)
{
    tq_roster_t *self = tq_calloc(1, sizeof *self);
    self->engine = engine;
    self->store = tq_engine_store(engine);
    self->peers = peers;
    self->outbox = outbox;
    self->wake = wake;
    return self;
}

void tq_roster_destroy(tq_roster_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

/* ---- log lines about peers ---------------------------------------------- */

/* If rl's second is over: log how many lines it held back (what names
 * them) and start a new one. */
static void rl_roll(rl_t *rl, int64_t now, const char *what)
{
    if (now - rl->window_ms < 1000)
        return;
    if (rl->suppressed)
        tq_warn("%u %s not logged (rate limit)", rl->suppressed, what);
    rl->window_ms = now;
    rl->lines = 0;
    rl->suppressed = 0;
}

/* 1 if one more line fits in rl's current second (at most per_s), else
 * counts it and returns 0. */
static int rl_take(rl_t *rl, int64_t now, unsigned per_s, const char *what)
{
    rl_roll(rl, now, what);
    if (rl->lines < per_s) {
        rl->lines++;
        return 1;
    }
    rl->suppressed++;
    return 0;
}

#define WARN_WHAT "lines about bad messages from peers"
#define PEER_WHAT "lines about peers joining or leaving"

int tq_roster_line(tq_roster_t *self, int level, const char *addr)
{
    if (level > tq_log_level())
        return 0;
    int64_t now = tq_mono_ms();
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, addr, strlen(addr));
    rl_t *a = &self->addr_rl[h % ROSTER_ADDR_BUCKETS];
    if (now - a->window_ms >= 1000) {
        a->window_ms = now;
        a->lines = 0;
    }
    if (a->lines >= ROSTER_PEER_LINES_PER_ADDR_S) {
        rl_roll(&self->peer_rl, now, PEER_WHAT);
        self->peer_rl.suppressed++; /* one summary for both limits */
        return 0;
    }
    if (!rl_take(&self->peer_rl, now, ROSTER_PEER_LINES_PER_S, PEER_WHAT))
        return 0;
    a->lines++;
    return 1;
}

void tq_roster_tick(tq_roster_t *self, int64_t now)
{
    rl_roll(&self->warn_rl, now, WARN_WHAT);
    rl_roll(&self->peer_rl, now, PEER_WHAT);
}

/* See roster.h: at most ROSTER_WARN_PER_S lines per second per peer
 * (unregistered peers share one budget). */
void tq_roster_warn(tq_roster_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...)
{
    if (TQ_LOG_WARN > tq_log_level())
        return;
    rl_t tmp, *rl = &self->anon_rl;
    if (p) {
        tmp.window_ms = p->log_window_ms;
        tmp.lines = p->log_lines;
        tmp.suppressed = p->log_suppressed;
        rl = &tmp;
    }
    int64_t now = tq_mono_ms();
    if (now - rl->window_ms >= 1000) {
        if (rl->suppressed)
            tq_warn("peer %s: %u more bad messages not logged", addr, rl->suppressed);
        rl->window_ms = now;
        rl->lines = 0;
        rl->suppressed = 0;
    }
    if (rl->lines < ROSTER_WARN_PER_S) {
        rl->lines++;
        if (!rl_take(&self->warn_rl, now, ROSTER_WARN_ALL_PER_S, WARN_WHAT))
            goto out;
        /* tq_log_write escapes what the peer sent (tq_log_escape). */
        char text[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        tq_warn("peer %s%s%s: %s", addr, p ? " " : "", p ? p->name : "", text);
    } else {
        rl->suppressed++;
    }
out:
    if (p) {
        p->log_window_ms = tmp.window_ms;
        p->log_lines = tmp.lines;
        p->log_suppressed = tmp.suppressed;
    }
}

/* ---- peers leaving ------------------------------------------------------ */

/* Undo a worker's registration: its leased tasks go back (or die), a
 * client's waits are dropped. The peer stays in the table. */
static void peer_unregister(tq_roster_t *self, tq_peer_t *p)
{
    tq_now_t now = tq_now();
    while (p->nleased > 0) /* the engine's LEASE_END takes it off p */
        tq_engine_lost(self->engine, p->leased[p->nleased - 1], "worker lost", now);
    if (p->role == TQ_ROLE_CLIENT) {
        tq_peer_drop_waits(p, self->store);
        tq_engine_untake(self->engine, p); /* un-acked GOT items: back to their queues */
    }
    *self->wake = 1;
}

void tq_roster_forget(tq_roster_t *self, tq_peer_t **pp, const char *why)
{
    tq_peer_t *p = *pp;
    if (!tq_roster_line(self, p->role == TQ_ROLE_WORKER ? TQ_LOG_INFO : TQ_LOG_DEBUG, p->address)) {
        /* rate-limited: counted */
    } else if (p->role == TQ_ROLE_WORKER) {
        char fns[256];
        tq_peer_fns_text(p, fns, sizeof fns);
        tq_info("worker %s %s (address %s, slots %" PRIu32
                ", functions %s, %zu leased task%s back)",
                p->name, why, p->address, p->slots, fns, p->nleased, p->nleased == 1 ? "" : "s");
    } else {
        tq_debug("client %s %s (address %s)", p->name, why, p->address);
    }
    peer_unregister(self, p);
    for (size_t i = 0; i < p->nfns; i++) /* held since its HELLO */
        tq_store_name_release(self->store, p->fns[i]);
    tq_outbox_forget(self->outbox, p);
    tq_peers_remove(self->peers, pp);
}

void tq_roster_reap(tq_roster_t *self)
{
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        if (p->gone)
            tq_roster_forget(self, &p, "lost (unreachable)");
    }
}
