/* handlers.h - the master's answer to each message a peer sends: decode
 * it, call the engine (or the roster, for peers' lives), hand the
 * replies to the outbox. One handler per message type in handlers.c
 * (ADMIN in admin.c).
 *
 * Calls go one way: the loop calls the handlers; the handlers call the
 * engine, the outbox, the roster, peers, status and persist (for its
 * LSNs); none of those calls back. Loop thread only. */
#ifndef TQ_MASTER_HANDLERS_H
#define TQ_MASTER_HANDLERS_H

#include <stdint.h>

#include "engine.h"
#include "loop.h"
#include "outbox.h"
#include "peers.h"
#include "persist.h"
#include "roster.h"
#include "status.h"
#include "tq_frame.h"

/* What the handlers work with (not owned). */
typedef struct {
    tq_engine_t *engine;
    tq_persist_t *persist;
    tq_peers_t *peers;
    tq_outbox_t *outbox;
    tq_roster_t *roster;
    tq_status_t *status;
    const tq_loop_cfg_t *cfg; /* copied */
    const char *endpoint;     /* the bound endpoint, for status (kept) */
    int64_t start_ms;         /* monotonic, for status */
    int *wake;                /* set to 1: run the scheduler (credit changed) */
    tq_policy_t *policy;      /* identities and permissions (access.h) */
} tq_handlers_deps_t;

typedef struct tq_handlers tq_handlers_t;

/* Caller owns the result (tq_handlers_destroy). */
tq_handlers_t *tq_handlers_new(const tq_handlers_deps_t *deps);
/* Accepts NULL; nulls *self_p. */
void tq_handlers_destroy(tq_handlers_t **self_p);

/* Handle the message just received into in: every reply, error or state
 * change it calls for. Never fails: bad input is logged and answered
 * with an ERROR. */
void tq_handlers_handle(tq_handlers_t *self, tq_in_t *in);

/* RESULT records not taken so far (late, foreign, or after a lost lease). */
uint64_t tq_handlers_late(const tq_handlers_t *self);

/* Serve parked GETs (items came, or their timeout passed). Returns ms
 * until the next parked GET's deadline, or -1 when none waits. */
int64_t tq_handlers_tick(tq_handlers_t *self, int64_t now_ms);

#endif
