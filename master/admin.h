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

/* What ADMIN works with (not owned). */
typedef struct {
    tq_engine_t *engine;
    tq_persist_t *persist;
    tq_outbox_t *outbox;
    tq_roster_t *roster;
    tq_peers_t *peers; /* quiet and stop find their workers here */
} tq_admin_deps_t;

/* Who asks: a client on the ROUTER or a user of the HTTP API. */
typedef struct {
    const char *name;    /* the peer's name, or the HTTP user */
    const char *address; /* where it connects from */
    tq_peer_t *limit;    /* whose budget of new queue names a request spends
                          * (tq_peer_take_name): the peer, or the HTTP
                          * side's own */
} tq_admin_caller_t;

/* What an op answered: a reply document, or an error. */
typedef struct {
    void *doc;       /* cJSON object (owned by the caller), or NULL on error */
    int code;        /* TQ_ERR_* when doc is NULL */
    char msg[TQ_MAX_ERROR_TEXT];
    int gated;       /* send the reply only once the journal is durable ... */
    uint64_t lsn;    /* ... up to here (tq_persist_ready) */
} tq_admin_result_t;

/* Run one ADMIN op (req: the request's cJSON object, "op" and its
 * fields) and fill *res, whoever asked: the ROUTER path
 * (tq_admin_handle) and the HTTP API (http.h) both come here, so an op
 * added to the dispatch is callable from both. Loop thread only. */
void tq_admin_exec(const tq_admin_deps_t *d, const tq_admin_caller_t *who, const void *req,
                   tq_admin_result_t *res);

/* 1 if op only reads (an HTTP user with the read role may call it), 0
 * if it changes something, -1 if there is no such op. */
int tq_admin_op_reads(const char *op);

/* Handle an ADMIN message from client p (body: its JSON): tq_admin_exec,
 * then the ADMIN_REPLY (with "req" and "ok") or an ERROR. */
void tq_admin_handle(const tq_admin_deps_t *d, tq_peer_t *p, tq_bytes_t body);

/* Read data_dir/paused of an earlier version (one queue name per line),
 * if there is one, and pause those queues through the engine (the
 * journal records them; call after the journal is open). The file is
 * checked whole before anything is paused. Returns 1 with *lsn (delete
 * the file once the journal is durable up to it: tq_admin_drop_file), 0
 * when there is no file, or -1 with a message naming the file and line. */
int tq_admin_load(tq_engine_t *engine, tq_persist_t *persist, const char *data_dir,
                  uint64_t *lsn, char *err, size_t errlen);
/* Delete data_dir/paused (its queues are in the journal). */
void tq_admin_drop_file(const char *data_dir);

#endif
