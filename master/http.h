/* http.h - the master's HTTP server (--http-listen): the dashboard's
 * pages, the JSON API under /api/v1/ (docs/http.md) and /metrics.
 *
 * Two threads meet here, and share nothing but what a mutex guards:
 * - libmicrohttpd's threads (one per connection) never read the loop's
 *   state. They copy what the loop published (the status snapshot once
 *   a second, the per-second history ring, the metrics text), and hand
 *   every query or action to the loop as a request (a queue under the
 *   mutex, and an eventfd the loop polls), then wait for its answer.
 * - the loop thread runs each request through the same ADMIN dispatch
 *   as the wire (tq_admin_exec: an op added there is callable over HTTP
 *   with no more work), holds an answer whose change the journal must
 *   hold first (the LSN gate, as for an ADMIN_REPLY), and publishes.
 *
 * Safe by default: a bind to anything but loopback needs an auth file
 * (users with a role, read or admin); actions are POST with a CSRF
 * token; payload and result bytes are left out unless
 * --http-show-payloads; every action is logged with who asked. */
#ifndef TQ_MASTER_HTTP_H
#define TQ_MASTER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "engine.h"
#include "metrics.h"

/* Connections served at once (a browser opens a few per tab). */
#define TQ_HTTP_MAX_CONNS 64
/* A connection idle this long is closed (seconds). */
#define TQ_HTTP_CONN_TIMEOUT_S 30
/* A request body (one op's JSON) at most: ADMIN's own cap is far above
 * what a page or script sends; more is refused (413) before reading. */
#define TQ_HTTP_MAX_BODY (64 * 1024)
/* Query arguments of a GET op at most. */
#define TQ_HTTP_MAX_ARGS 32
/* Requests waiting for the loop at once; more get 503 (each holds a
 * connection thread anyway, so TQ_HTTP_MAX_CONNS bounds it first). */
#define TQ_HTTP_MAX_PENDING 128
/* An op's answer from the loop is awaited this long (ms), then 503. */
#define TQ_HTTP_WAIT_MS 10000
/* Seconds of per-second history kept (the Overview chart: one hour). */
#define TQ_HTTP_HISTORY_S 3600
/* Publish the snapshot this often (ms). */
#define TQ_HTTP_PUBLISH_MS 1000
/* The auth file: bytes and users at most. */
#define TQ_HTTP_AUTH_FILE_MAX (1024 * 1024)
#define TQ_HTTP_MAX_USERS 1000
/* A user name and a secret: lengths. */
#define TQ_HTTP_MAX_USER 64
#define TQ_HTTP_MIN_SECRET 16
#define TQ_HTTP_MAX_SECRET 256

typedef struct tq_http tq_http_t;

typedef struct {
    const char *listen;    /* ADDR:PORT */
    const char *auth_file; /* users and roles, or NULL (loopback only) */
    int show_payloads;     /* --http-show-payloads */
    tq_metrics_t *metrics; /* served at /metrics (not owned) */
} tq_http_cfg_t;

/* Check the settings without starting anything: the address parses, and
 * a non-loopback address comes with an auth file. Returns 0, or -1
 * with err (a configuration error). */
int tq_http_check(const char *listen, const char *auth_file, tq_err_t *err);

/* 1 if the two ADDR:PORT strings name the same address and port (both
 * valid; a port 0 never matches). */
int tq_http_same_addr(const char *a, const char *b);

/* Read the auth file (if any) and start the server. Returns it, or
 * NULL with err (auth file unreadable, not private, or bad; address in
 * use). Caller owns it (tq_http_stop). */
tq_http_t *tq_http_start(const tq_http_cfg_t *cfg, tq_err_t *err);

/* "http://ADDR:PORT/" actually bound. */
const char *tq_http_url(const tq_http_t *self);

/* The descriptor the loop polls: readable when requests wait. */
int tq_http_fd(const tq_http_t *self);

/* Loop thread: run the waiting requests through tq_admin_exec (d: what
 * ADMIN works with; limit: the HTTP side's budget of new names). */
void tq_http_run(tq_http_t *self, const tq_admin_deps_t *d, tq_peer_t *limit);

/* Loop thread: answer the requests held for the journal, up to ready
 * (tq_persist_ready). */
void tq_http_release(tq_http_t *self, uint64_t ready);

/* Loop thread: publish the snapshot (doc: a cJSON object, the status
 * document; taken over) and append one point to the history from the
 * cumulative totals. wall_ms: the time of the sample. */
void tq_http_publish(tq_http_t *self, void *doc, uint64_t submitted, uint64_t done, uint64_t failed,
                     int64_t wall_ms);

/* Loop thread: the engine subscriber behind the queue-wait history
 * (arg: the tq_http_t): the wait of each first dispatch. */
void tq_http_on_engine(void *arg, const tq_engine_ev_t *ev);

/* Stop the server (waits for its threads; requests waiting get 503),
 * free it. Accepts NULL. */
void tq_http_stop(tq_http_t **self_p);

#endif
