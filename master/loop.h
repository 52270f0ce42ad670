/* loop.h - the master's event loop: one thread owns the ROUTER socket
 * and every task, queue and peer. */
#ifndef TQ_MASTER_LOOP_H
#define TQ_MASTER_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "tq_authkey.h"
#include "tq_wire.h"

/* A per-queue default run timeout (--queue-timeout Q=SECONDS). */
typedef struct {
    tq_bytes_t queue;    /* a valid queue name */
    uint32_t timeout_ms; /* 1.. */
} tq_queue_timeout_t;

typedef struct {
    const char *endpoint;                     /* ROUTER bind address */
    int64_t heartbeat_ms;                     /* HEARTBEAT period */
    int64_t heartbeat_timeout_ms;             /* silence after which a peer is dead */
    size_t max_payload;                       /* one payload, result or error */
    int64_t result_ttl_ms;                    /* keep results this long after delivery */
    int64_t unfetched_ttl_ms;                 /* ... and this long if never delivered */
    size_t max_tasks;                         /* tasks stored in any state */
    uint32_t max_attempts;                    /* lost leases before a task is dead */
    int64_t lease_timeout_ms;                 /* a task without a run timeout is taken back
                                   * this long after dispatch; 0 = never */
    int64_t key_retention_ms;                 /* keep an idempotency key this long */
    int peer_queue;                           /* ZMQ_SNDHWM: messages queued per peer */
    uint64_t peer_queue_bytes;                /* outcome bytes sent to a client, not ACKed */
    size_t max_connections;                   /* open connections at most (auth.h) */
    int fd_limit;                             /* RLIMIT_NOFILE soft limit in force */
    int64_t handshake_timeout_ms;             /* ZMQ_HANDSHAKE_IVL: time to finish CURVE */
    int64_t backoff_base_ms;                  /* first retry / lost-lease delay; 0 = none */
    int64_t backoff_cap_ms;                   /* the delay doubles up to this */
    const tq_queue_timeout_t *queue_timeouts; /* --queue-timeout, parsed */
    size_t nqueue_timeouts;
    tq_journal_cfg_t journal;   /* where and how the journal lives */
    const char *metrics_listen; /* --metrics-listen ADDR:PORT, or NULL (metrics.h) */
    const char *http_listen;    /* --http-listen ADDR:PORT, or NULL (http.h) */
    const char *http_auth_file; /* --http-auth-file, or NULL */
    int http_show_payloads;     /* --http-show-payloads */
    int accept_shared;          /* accept the authkey's client pair (keys->client_*) */
    struct tq_allow *allow;     /* --allow-keys, or NULL; the loop takes it over */
} tq_loop_cfg_t;

typedef struct tq_loop tq_loop_t;

/* Recover the journal, create the ROUTER (CURVE server with keys), start
 * the auth actor, and bind. Returns the loop, or NULL with err filled
 * (code 0; tq_err.h): the journal's message when it cannot be opened,
 * "cannot bind ENDPOINT: REASON" for a bind failure. Caller owns the
 * result. */
tq_loop_t *tq_loop_new(void *ctx, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       tq_err_t *err);

/* The endpoint actually bound (ZMQ_LAST_ENDPOINT: a port 0 or "*"
 * resolved, an IPv4 address shown as written), as status reports it. */
const char *tq_loop_endpoint(const tq_loop_t *self);

/* Run until stop_fd (e.g. a signalfd; -1 for none) becomes readable.
 * Returns 0 on a requested stop, -1 on a fatal socket error (logged). */
int tq_loop_run(tq_loop_t *self, int stop_fd);

/* ---- settings changed while running ------------------------------------ */
/* SIGHUP (main.c): called between two tq_loop_run calls, on the loop's
 * thread. Each applies one group of settings for what happens from now
 * on (engine.h says what stays as it was). */

/* --max-tasks and --peer-queue-bytes. */
void tq_loop_set_limits(tq_loop_t *self, size_t max_tasks, uint64_t peer_queue_bytes);
/* --result-ttl and --unfetched-ttl (results already kept take them too). */
void tq_loop_set_ttls(tq_loop_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms);
/* --max-attempts, --lease-timeout, --retry-backoff, --retry-backoff-max. */
void tq_loop_set_retry(tq_loop_t *self, uint32_t max_attempts, int64_t lease_timeout_ms,
                       int64_t backoff_base_ms, int64_t backoff_cap_ms);
/* --queue-timeout: each queue of old[nold] not in now[n] loses its
 * default run timeout, each of now[n] gets its own (tasks already
 * submitted keep theirs). Returns 0, or -1 with err when a queue cannot
 * be made (the name table is full; nothing changed then). */
int tq_loop_set_queue_timeouts(tq_loop_t *self, const tq_queue_timeout_t *old, size_t nold,
                               const tq_queue_timeout_t *now, size_t n, char *err, size_t errlen);
/* SIGHUP's new --allow-keys table (the loop takes it over): the ZAP
 * handler accepts exactly its keys from now on, peers whose identity is
 * gone or changed its role are forgotten and their connections shut
 * down, the others get their new permissions. Logs what changed. Only
 * for a loop started with --allow-keys (allow not NULL). */
void tq_loop_set_allow(tq_loop_t *self, struct tq_allow *allow);

/* Log the shutdown summary, close the socket, stop the auth actor, free
 * everything. Accepts NULL; nulls *self_p. */
void tq_loop_destroy(tq_loop_t **self_p);

#endif
