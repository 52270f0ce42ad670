/* metrics.h - the master's Prometheus endpoint (--metrics-listen).
 *
 * Two threads, no shared state but one buffer: the loop renders the
 * metrics as Prometheus text (tq_metrics_render, about once a second,
 * from a registered timer) and publishes the text under a mutex; the
 * HTTP thread (libmicrohttpd's) copies the last published text for each
 * GET /metrics. The HTTP thread never reads the store, the peers or the
 * journal, and never takes a lock the loop holds for more than a copy
 * of the text. */
#ifndef TQ_MASTER_METRICS_H
#define TQ_MASTER_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <microhttpd.h>
#include <sys/socket.h>

#include "engine.h"
#include "journal.h"
#include "peers.h"
#include "store.h"

/* Connections the HTTP server serves at once (scrapers; one is usual). */
#define TQ_METRICS_MAX_CONNS 16
/* A scrape connection idle this long is closed (seconds). */
#define TQ_METRICS_CONN_TIMEOUT_S 10
/* Queues with their own series (tasks by state); the rest are counted
 * in taskq_queues only, so one render stays bounded. */
#define TQ_METRICS_MAX_QUEUES 1000
/* Render this often (ms): the scrape sees values at most this old. */
#define TQ_METRICS_RENDER_MS 1000

typedef struct tq_metrics tq_metrics_t;

/* What the loop knows beside the store and the peers. */
typedef struct {
    int64_t uptime_ms;
    uint64_t late_results;
    uint64_t journal_bytes, journal_live_bytes, compactions, journal_records;
    int journal_error;             /* errno of a standing write failure, or 0 */
    tq_journal_sync_stats_t fsync; /* sync round latency, write errors */
    uint64_t auth_failures, connections;
    const tq_policy_t *policy; /* key-pair mode: identities (access.h) */
} tq_metrics_info_t;

/* Check "ADDR:PORT" ("127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464";
 * ":9464" or "9464" alone mean loopback). Returns 0, or -1 with err. */
int tq_metrics_addr_check(const char *listen, tq_err_t *err);

/* Parse "ADDR:PORT" as tq_metrics_addr_check says (flag names the
 * option in messages). Returns 0, or -1 with err. */
int tq_listen_addr_parse(const char *flag, const char *s, struct sockaddr_storage *ss,
                         socklen_t *len, tq_err_t *err);

/* Start a libmicrohttpd server (its own polling thread, plus flags) on
 * flag's ADDR:PORT, its log lines in ours, and write the
 * "http://ADDR:PORT" + path actually bound (port 0 gets one) to url.
 * Returns the daemon, or NULL with err (bad address, or in use). */
struct MHD_Daemon *tq_mhd_start(const char *flag, const char *listen, unsigned flags,
                                unsigned max_conns, unsigned timeout_s,
                                MHD_AccessHandlerCallback handler, void *cls,
                                MHD_RequestCompletedCallback completed, const char *path, char *url,
                                size_t urllen, tq_err_t *err);

/* The metrics without a server of their own (the HTTP module of
 * --http-listen serves them: tq_metrics_copy). Caller owns it. */
tq_metrics_t *tq_metrics_new(void);

/* Any thread: a copy of the last published text (*len bytes, not
 * NUL-terminated; caller frees). */
char *tq_metrics_copy(tq_metrics_t *self, size_t *len);

/* Start the HTTP server on listen. Returns it, or NULL with err (bad
 * address, port in use). Caller owns it (tq_metrics_stop). */
tq_metrics_t *tq_metrics_start(const char *listen, tq_err_t *err);

/* "http://ADDR:PORT/metrics" actually bound (port 0 gets one); NULL
 * without a server of its own (tq_metrics_new). */
const char *tq_metrics_url(const tq_metrics_t *self);

/* Loop thread: render the metrics from the state and publish them. */
void tq_metrics_render(tq_metrics_t *self, const tq_store_t *store, const tq_peers_t *peers,
                       const tq_metrics_info_t *info);

/* Loop thread: the engine subscriber behind the wait-time and run-time
 * histograms (arg: the tq_metrics_t). Wait: from submit to the first
 * dispatch; run: from a dispatch to the end of its lease (result, loss,
 * expiry, release), for leases this process gave out. Reads the wall
 * clock itself (the engine stays free of clocks). */
void tq_metrics_on_engine(void *arg, const tq_engine_ev_t *ev);

/* Stop the server (waits for its thread), free it. Accepts NULL. */
void tq_metrics_stop(tq_metrics_t **self_p);

#endif
