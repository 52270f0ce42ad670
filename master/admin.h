/* admin.h - ADMIN requests (proto/PROTOCOL.md): list, retry and purge
 * the dead set; pause and resume queues (engine commands; the reply is
 * gated on the journal like a SUBMIT_ACK); quiet and stop workers (a
 * QUIET or STOP message to each). Also the one-time move of an
 * earlier version's DATA_DIR/paused into the journal. */
#ifndef TQ_MASTER_ADMIN_H
#define TQ_MASTER_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "outbox.h"
#include "peers.h"
#include "persist.h"
#include "roster.h"
#include "tq_limits.h"

/* What ADMIN works with (not owned). */
typedef struct {
    tq_engine_t *engine;
    tq_persist_t *persist;
    tq_outbox_t *outbox;
    tq_roster_t *roster;
    tq_peers_t *peers;   /* quiet and stop find their workers here */
    tq_policy_t *policy; /* counts refusals (access.h) */
} tq_admin_deps_t;

/* What tq_admin_exec did with a request. */
typedef struct {
    int code;                    /* TQ_ERR_* when it returned NULL, else 0 */
    char msg[TQ_MAX_ERROR_TEXT]; /* the error's text */
    int gated;                   /* it changed state: answer only once the journal
                                  * holds it (tq_persist_lsn / tq_persist_ready) */
} tq_admin_result_t;

/* Run one ADMIN request, req (a cJSON object: {"op":...} and the op's
 * fields, proto/PROTOCOL.md), on the loop thread: the one op dispatch,
 * for ADMIN messages and the HTTP dashboard alike. p is the asking
 * connection (its new-name budget; NULL: none), who and addr name the
 * asker in log lines of operator actions. Returns the reply document (a
 * cJSON object without "req" and "ok"; the caller sends and deletes it,
 * after the journal when res->gated), or NULL with res->code and
 * res->msg. Sends nothing. */
void *tq_admin_exec(const tq_admin_deps_t *d, tq_peer_t *p, const char *who, const char *addr,
                    const void *req, tq_admin_result_t *res);

/* 1 if ADMIN op changes state (an admin's op in key-pair mode, and a
 * POST over HTTP), 0 if it only reads, -1 if there is no such op. */
int tq_admin_op_writes(const char *op);

/* Handle an ADMIN message from client p (body: its JSON): tq_admin_exec,
 * then the reply or ERROR (with the request's "req"). */
void tq_admin_handle(const tq_admin_deps_t *d, tq_peer_t *p, tq_bytes_t body);

/* Read data_dir/paused of an earlier version (one queue name per line),
 * if there is one, and pause those queues through the engine (the
 * journal records them; call after the journal is open). The file is
 * checked whole before anything is paused. Returns 1 with *lsn (delete
 * the file once the journal is durable up to it: tq_admin_drop_file), 0
 * when there is no file, or -1 with a message naming the file and line. */
int tq_admin_load(tq_engine_t *engine, tq_persist_t *persist, const char *data_dir, uint64_t *lsn,
                  tq_err_t *err);
/* Delete data_dir/paused (its queues are in the journal). */
void tq_admin_drop_file(const char *data_dir);

#endif
