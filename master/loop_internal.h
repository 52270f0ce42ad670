/* loop_internal.h - the master loop's state, shared by loop.c (sockets,
 * poll, timers, outgoing batches) and handlers.c (one handler per
 * incoming message type). Nothing else includes this header.
 *
 * All of it runs on the loop thread; nothing here locks. */
#ifndef TQ_MASTER_LOOP_INTERNAL_H
#define TQ_MASTER_LOOP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "engine.h"
#include "loop.h"
#include "outbox.h"
#include "peers.h"
#include "persist.h"
#include "status.h"
#include "store.h"
#include "tq_proto.h"

/* Peer addresses are spread over this many join/leave line budgets (a
 * hash; addresses that share one share its budget). */
#define TQ_LOOP_ADDR_BUCKETS 256

/* Warn lines in the current second, and how many were held back. */
typedef struct {
    int64_t window_ms;
    unsigned lines, suppressed;
} tq_loop_ratelimit_t;

struct tq_loop {
    void *ctx;
    void *router;
    tq_auth_t *auth;
    tq_loop_cfg_t cfg;
    char endpoint[256];
    tq_engine_t *engine; /* every change of a task's state */
    tq_store_t *store;   /* the engine's: read, and names interned */
    tq_persist_t *persist;
    int64_t next_jtick_ms;
    tq_peers_t *peers;
    tq_status_t *status;
    tq_in_t *in;
    tq_outbox_t *outbox; /* every send, the per-peer queues and their gates */
    int64_t start_ms;
    int64_t next_hb_ms;
    int64_t next_sweep_ms;
    int sched_dirty;
    int sends_stalled; /* RESULTS or deferred replies could not be sent: retry soon */
    int started; /* bound and ready: log a summary at destroy */
    uint64_t late_results;
    tq_loop_ratelimit_t anon_rl; /* for peers not registered */
    int paused_file;          /* DATA_DIR/paused was read: delete it ... */
    uint64_t paused_file_lsn; /* ... once the journal is durable up to here */
    tq_loop_ratelimit_t warn_rl; /* bad-input lines of all peers together */
    tq_loop_ratelimit_t peer_rl; /* join/leave/drain lines of all peers */
    tq_loop_ratelimit_t addr_rl[TQ_LOOP_ADDR_BUCKETS]; /* ... per address (hashed) */
    /* decode scratch: TQ_MAX_BATCH records each */
    tq_task_spec_t specs[TQ_MAX_BATCH];
    uint8_t added[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
    tq_result_item_t results[TQ_MAX_BATCH];
    tq_lease_ref_t leases[TQ_MAX_BATCH];
};

/* The time of a command now (engine.h). */
tq_now_t tq_loop_now(void);

/* ---- loop.c: what the handlers use ---------------------------------- */

/* The routing id of a registered peer (points into p). */
static inline tq_bytes_t tq_loop_rid(const tq_peer_t *p) {
    tq_bytes_t b = {p->rid, p->rid_len};
    return b;
}

/* Warn about bad input from a peer (p NULL: not registered; addr is its
 * network address), at most a few lines per second per peer. */
void tq_loop_warn_peer(tq_loop_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 1 if a line about a peer at network address addr joining, leaving or
 * draining may be logged at level now: it is enabled, fewer than
 * LOOP_PEER_LINES_PER_ADDR_S such lines about addr and fewer than
 * LOOP_PEER_LINES_PER_S about all peers went out in the current second
 * (the rest are counted, and a summary says how many were not logged). */
int tq_loop_peer_line(tq_loop_t *self, int level, const char *addr);

/* Forget a peer: its leased tasks go back to their queues (or die), a
 * client's waits are dropped. why ("left", "lost (...)") is for the log.
 * Nulls *pp. */
void tq_loop_forget_peer(tq_loop_t *self, tq_peer_t **pp, const char *why);


/* ---- admin.c ------------------------------------------------------------- */

/* Read DATA_DIR/paused of an earlier version (one queue name per line),
 * if there is one, and pause those queues through the engine (the
 * journal records them). Call after the journal is open. Returns 0, or
 * -1 with a message naming the file and line. */
int tq_admin_load(tq_loop_t *self, char *err, size_t errlen);
/* Delete that file once the journal has its queues on disk (synced: 1
 * when the journal was just closed, so everything is). */
void tq_admin_drop_file(tq_loop_t *self, int synced);

/* Handle an ADMIN message from client p (body: its JSON). */
void tq_admin_handle(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body);

/* ---- handlers.c -------------------------------------------------------- */

/* Handle the message just received into self->in: every reply, error or
 * state change it calls for. Never fails: bad input is logged and
 * answered with an ERROR. */
void tq_loop_handle(tq_loop_t *self);

#endif
