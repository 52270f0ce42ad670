/* inspect.h - the read-only ADMIN replies (proto/PROTOCOL.md, ADMIN
 * "show", "list", "failed") and the per-function rows of the status
 * document, as pure functions of the store, the peers and the request.
 *
 * Each op function takes the request object (a cJSON object, passed as
 * void * so callers need no cJSON header) and returns a new cJSON reply
 * document (the caller adds "req" and "ok", sends it and deletes it), or
 * NULL with err filled (its code a TQ_ERR_*). They change nothing, send
 * nothing and read no clock, so the ADMIN handler (admin.c) and any
 * other front end on the loop thread (the HTTP dashboard) run the same
 * code. Every op does bounded work: at most TQ_INSPECT_SCAN task records
 * are looked at per request (list pages continue from "next_after").
 *
 * Loop thread only. */
#ifndef TQ_MASTER_INSPECT_H
#define TQ_MASTER_INSPECT_H

#include <stddef.h>
#include <stdint.h>

#include "peers.h"
#include "store.h"

/* Task records one "list" or "failed" request looks at, at most. The
 * walk is in id order; scripts/bench measures it on 1,000,000 queued
 * tasks (about 1 ms per 100,000 records looked at: the loop stalls no
 * longer, and a walk over the whole store takes 10 requests). */
#define TQ_INSPECT_SCAN 100000
/* Key entries "show" looks at to find a task's idempotency key (the
 * key is reported as not looked up past that). */
#define TQ_INSPECT_KEY_SCAN 20000

/* ADMIN "show": {"ids":[...], "payload":bool}. */
void *tq_inspect_show(const tq_store_t *store, const tq_peers_t *peers, const void *req,
                      tq_err_t *err);
/* ADMIN "list": {"queue","fn","state","limit","after"}. */
void *tq_inspect_list(const tq_store_t *store, const tq_peers_t *peers, const void *req,
                      tq_err_t *err);
/* ADMIN "failed": "list" with "state":"failed" (the failed set). */
void *tq_inspect_failed(const tq_store_t *store, const tq_peers_t *peers, const void *req,
                        tq_err_t *err);

/* One function: runnable tasks queued for it (all queues), tasks of it
 * running, connected workers (not draining) that serve it. */
typedef struct {
    const char *fn; /* interned */
    size_t queued, running, workers;
} tq_inspect_fnrow_t;
/* Every function with tasks queued or running or a worker serving it
 * (*rows: caller frees). O(queues x functions + workers' functions and
 * leases). */
size_t tq_inspect_fn_rows(const tq_store_t *store, const tq_peers_t *peers,
                          tq_inspect_fnrow_t **rows);
/* Function rows one status document or metrics page shows at most. */
#define TQ_INSPECT_FN_ROWS 1000

/* Add the status document's "functions" rows (queued, delayed, running,
 * workers serving it; "unserved" when tasks wait for it and no connected
 * worker serves it) and "functions_total" to doc (a cJSON object). */
void tq_inspect_functions(const tq_store_t *store, const tq_peers_t *peers, void *doc);

/* A worker row's "running" ids (at most TQ_INSPECT_RUNNING_IDS, then
 * "running_truncated") added to o (a cJSON object). */
#define TQ_INSPECT_RUNNING_IDS 64
void tq_inspect_running(const tq_peer_t *w, void *o);

/* Shared with admin.c: "id" as an exact integer; t's error text as
 * "error" (UTF-8) or "error_base64", cut to max bytes ("error_truncated"). */
void tq_inspect_add_id(void *o, uint64_t id);
void tq_inspect_add_text(void *o, const char *name, tq_bytes_t b, size_t max);

/* The state as operators see it: queued, delayed, running, done,
 * failed, cancelled, dead. */
const char *tq_inspect_state(const tq_task_t *t);

#endif
