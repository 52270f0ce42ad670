/* loop.c - the master's event loop. See loop.h. The loop owns the
 * sockets, poll, the timers and the end-of-pass flushes; a message is
 * handed to handlers.c, state changes are the engine's, sends the
 * outbox's, peers leaving the roster's. Calls go one way: loop ->
 * handlers -> engine / outbox / roster; nothing calls back up (the
 * engine's events reach the loop through its subscription).
 *
 * One iteration: poll on the ROUTER (timeout from the next timer),
 * read up to LOOP_MAX_MSGS messages and handle each, run the timers
 * (heartbeats, peer timeouts, TTL sweep), forget peers that went away,
 * run the scheduler (one DISPATCH per worker), then flush the RESULTS
 * batched for each client. Sends never block: ZMQ_DONTWAIT everywhere. */
#include "loop.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <zmq.h>

#include "admin.h"
#include "auth.h"
#include "engine.h"
#include "handlers.h"
#include "http.h"
#include "metrics.h"
#include "now.h"
#include "outbox.h"
#include "peers.h"
#include "persist.h"
#include "roster.h"
#include "scheduler.h"
#include "status.h"
#include "store.h"
#include "tq_frame.h"
#include "tq_curve.h"
#include "tq_log.h"
#include "tq_util.h"

/* Messages handled per poll iteration before the timers, the scheduler
 * and the flushes get their turn. */
#define LOOP_MAX_MSGS 1000
/* Finished tasks deleted per sweep step, so a mass expiry never holds
 * the loop for long. */
#define LOOP_SWEEP_STEPS 10000
/* Queues and name slots the sweep looks at for ones nothing uses (the
 * whole table of 65,536 names in a few seconds, a fraction of a
 * millisecond at a time). */
#define LOOP_GC_STEPS 16384
/* Sweep at least this often (ms). */
#define LOOP_SWEEP_MS 1000
/* Warn lines about bad input per peer per second; the rest are counted. */
#define LOOP_WARN_PER_S 3
/* ... and of all peers together, so that many peers cannot flood the
 * log either. */
#define LOOP_WARN_ALL_PER_S 30
/* Lines about peers joining, leaving or draining per second, all peers
 * together (a peer looping HELLO/BYE must not fill the disk with log). */
#define LOOP_PEER_LINES_PER_S 20
/* ... and per peer address, so that one flooding host does not use up
 * the budget of the others. */
#define LOOP_PEER_LINES_PER_ADDR_S 5
/* Poll timeout while dispatch work is pending after a failed send (ms). */
#define LOOP_RETRY_MS 10
/* A SUBMIT_ACK whose tasks the client waits for is held one loop pass,
 * at most this long, so that it shares the client's wake-up (and the
 * master's send) with the first results instead of costing one of its
 * own; most short tasks finish within one pass. */
#define LOOP_ACK_HOLD_MS 1
/* Expired leases ended per timer tick (one KILL batch at most). */
#define LOOP_EXPIRE_STEPS TQ_MAX_BATCH
/* Journal housekeeping (retries, compaction checks) this often. */
#define LOOP_JTICK_MS 100
#define MONITOR_ENDPOINT "inproc://taskq-master-monitor"

/* A timer: fn runs once its time (monotonic ms) has come, and returns
 * when it is due next. */
typedef int64_t (*loop_timer_fn)(tq_loop_t *self, int64_t now);
typedef struct {
    int64_t next_ms;
    loop_timer_fn fn;
} loop_timer_t;
#define LOOP_TIMERS 6

struct tq_loop {
    void *ctx;
    void *router;
    /* The journal's pipe was not ready at the last wait and the journal
     * has not touched it since (its op count was pipe_ops): the next
     * wait need not ask it for ZMQ_EVENTS (TQ_ZPOLL_QUIET). */
    int pipe_quiet;
    uint64_t pipe_ops;
    tq_auth_t *auth;
    tq_loop_cfg_t cfg;
    char endpoint[256];
    tq_engine_t *engine; /* every change of a task's state */
    tq_store_t *store;   /* the engine's: read */
    tq_persist_t *persist;
    tq_peers_t *peers;
    tq_status_t *status;
    tq_in_t *in;
    tq_outbox_t *outbox; /* every send, the per-peer queues and their gates */
    tq_roster_t *roster; /* peers leaving, log lines about peers */
    tq_handlers_t *handlers;
    tq_metrics_t *metrics; /* --metrics-listen or --http-listen, or NULL */
    tq_http_t *http;       /* --http-listen, or NULL */
    tq_peer_t http_names;  /* the HTTP side's budget of new queue names (only that) */
    tq_policy_t policy;    /* --allow-keys (access.h) */
    size_t owners_kept;    /* policy.owners' size after its last sweep */
    int64_t start_ms;
    loop_timer_t timers[LOOP_TIMERS]; /* registered at tq_loop_run */
    size_t ntimers;
    int sched_dirty;          /* run the scheduler at the end of this pass */
    int sends_stalled;        /* RESULTS or queued messages could not be sent: retry soon */
    int started;              /* bound and ready: log a summary at destroy */
    int paused_file;          /* DATA_DIR/paused was read: delete it ... */
    uint64_t paused_file_lsn; /* ... once the journal is durable up to here */
};

/* ---- the engine's events ------------------------------------------------ */

/* The loop's subscription to the engine: a lease that ends leaves its
 * worker's books (and its run is KILLed when the engine says so), a
 * finished task's waiters get its outcome, the scheduler wakes. */
static void on_engine(void *arg, const tq_engine_ev_t *ev)
{
    tq_loop_t *self = arg;
    switch (ev->kind) {
    case TQ_EV_LEASE_END:
        if (ev->kill && ev->worker) /* sent after the command (tq_outbox_send_kills) */
            tq_outbox_kill(self->outbox, ev->worker, ev->task->id, ev->attempt);
        if (ev->worker)
            tq_peer_lease_remove(ev->worker, ev->task);
        break;
    case TQ_EV_FINISHED: tq_peer_notify_waiters(ev->task); break;
    case TQ_EV_WAKE: self->sched_dirty = 1; break;
    default: break;
    }
}

static const char *worker_name(const void *w) { return ((const tq_peer_t *)w)->name; }

/* ---- dispatch ----------------------------------------------------------- */

/* The scheduler's send callback: one DISPATCH for worker w, handed to
 * the outbox (sent, or queued in order when w's pipe is full). */
static int send_dispatch(void *arg, tq_peer_t *w, tq_task_t *const *tasks, size_t n)
{
    tq_loop_t *self = arg;
    return tq_outbox_dispatch(self->outbox, w, tasks, n);
}

/* ---- timers ------------------------------------------------------------- */

/* End at most LOOP_EXPIRE_STEPS leases whose deadline passed, with a
 * KILL of the attempt on its worker. A task with a run timeout (deadline
 * run timeout + 2 heartbeat intervals) is retried if it has retries
 * left, else it fails as timed out. A task without one reached
 * --lease-timeout: a lost lease (task_lost: requeued, or dead after
 * --max-attempts). */
static void expire_leases(tq_loop_t *self)
{
    tq_now_t now = tq_now();
    for (size_t n = 0; n < LOOP_EXPIRE_STEPS && tq_engine_expire_one(self->engine, now); n++)
        ;
    tq_outbox_send_kills(self->outbox);
}

/* Forget peers silent for longer than the heartbeat timeout, send a
 * HEARTBEAT to the others, and take a status sample. */
static void heartbeat(tq_loop_t *self, int64_t now)
{
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        int64_t silent = now - p->last_seen_ms;
        if (silent > self->cfg.heartbeat_timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "lost (no message for %.1f s)", (double)silent / 1000.0);
            tq_roster_forget(self->roster, &p, why);
            continue;
        }
        tq_out_begin(tq_outbox_msg(self->outbox), TQ_MSG_HEARTBEAT);
        tq_outbox_send(self->outbox, p);
    }
    tq_status_sample(self->status, self->store, now);
}

/* ---- public --------------------------------------------------------------- */

/* What recovery found, in one or two lines. */
static void log_recovery(const tq_persist_report_t *r)
{
    const tq_journal_report_t *j = &r->journal;
    if (j->torn)
        tq_warn("journal: cut off a torn last record in %s at offset %" PRIu64
                " of the newest segment (a write the crash interrupted: not acknowledged under "
                "--fsync always)",
                j->torn_file, j->torn_offset);
    if (j->repaired) {
        char ids[TQ_PERSIST_LOST_IDS * 21 + 8];
        size_t off = 0, n = r->lost < TQ_PERSIST_LOST_IDS ? (size_t)r->lost : TQ_PERSIST_LOST_IDS;
        ids[0] = '\0';
        for (size_t i = 0; i < n && off < sizeof ids; i++)
            off += (size_t)snprintf(ids + off, sizeof ids - off, "%s%" PRIu64, i ? " " : " (ids ",
                                    r->lost_ids[i]);
        if (n && off < sizeof ids)
            snprintf(ids + off, sizeof ids - off, "%s)", r->lost > n ? " ..." : "");
        tq_warn("journal: --repair dropped %" PRIu64 " bytes in %" PRIu64
                " damaged places (the first: %s offset %" PRIu64 ") and replayed the rest: %" PRIu64
                " damaged records; %" PRIu64 " tasks lost%s; %" PRIu64
                " tasks set back to an earlier state (a finished one runs again); %" PRIu64
                " places unreadable or missing (a task recorded only there is not counted). "
                "The damaged segments are in journal/%s",
                j->dropped_bytes, j->damage_places, j->damage_file, j->damage_offset,
                j->dropped_records, r->lost, ids, r->earlier, r->unreadable,
                j->moved_to[0] ? j->moved_to : "(not moved)");
    }
    if (j->left_over)
        tq_info("journal: deleted %" PRIu64 " segments left over from a compaction that did not "
                "finish",
                j->left_over);
    tq_info("journal: recovered %" PRIu64 " queued tasks, %" PRIu64 " results and %" PRIu64
            " idempotency keys from %zu segments (%" PRIu64 " records, %.1f MiB) in %lld ms",
            r->queued, r->finished, r->keys, j->segments, j->records, j->bytes / 1048576.0,
            (long long)r->elapsed_ms);
}

/* The engine (seeded at random), the queue defaults, the journal
 * replayed into it, and an earlier version's paused file. Returns 0, or
 * -1 with a message in err. */
static int open_state(tq_loop_t *self, const tq_loop_cfg_t *cfg, tq_err_t *err)
{
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    tq_engine_cfg_t ecfg = {
        .store = {(uint64_t)tq_wall_us(), cfg->max_tasks, cfg->result_ttl_ms, cfg->unfetched_ttl_ms,
                  cfg->key_retention_ms},
        .max_attempts = cfg->max_attempts,
        .lease_timeout_ms = cfg->lease_timeout_ms,
        .heartbeat_ms = cfg->heartbeat_ms,
        .backoff_base_ms = cfg->backoff_base_ms,
        .backoff_cap_ms = cfg->backoff_cap_ms,
        .seed = seed,
        .worker_name = worker_name,
    };
    self->engine = tq_engine_new(&ecfg);
    self->store = tq_engine_store(self->engine);
    for (size_t i = 0; i < cfg->nqueue_timeouts; i++) {
        tq_queue_t *q = tq_store_queue(self->store, cfg->queue_timeouts[i].queue);
        TQ_ASSERT(q); /* main allows at most 1024: far from the name table's limit */
        tq_queue_set_default_timeout(q, cfg->queue_timeouts[i].timeout_ms);
    }
    self->cfg.queue_timeouts = NULL; /* main's memory: not kept */
    self->cfg.nqueue_timeouts = 0;
    tq_persist_report_t rep;
    self->persist = tq_persist_open(&cfg->journal, self->engine, &self->policy, &rep, err);
    if (!self->persist)
        return -1;
    tq_engine_subscribe(self->engine, on_engine, self);
    int loaded = tq_admin_load(self->engine, self->persist, cfg->journal.data_dir,
                               &self->paused_file_lsn, err);
    if (loaded < 0)
        return -1;
    self->paused_file = loaded;
    log_recovery(&rep);
    /* "Since start" means this process's work: what replay (and the
     * paused file) counted is history, not work done now. */
    tq_store_reset_totals(self->store);
    return 0;
}

/* The ROUTER with its options (CURVE server with keys). Returns 0, or
 * -1 with a message in err. */
static int open_router(tq_loop_t *self, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       tq_err_t *err)
{
    self->router = zmq_socket(self->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    /* The largest frame a peer may send is a whole packed message: a
     * longer one is refused by libzmq as its header arrives, before it is
     * buffered, and the connection dropped. (libzmq cannot cap the number
     * of frames of a message: PROTOCOL.md section 9.) */
    uint64_t msgmax = TQ_MSG_MAX(cfg->max_payload);
    int64_t maxmsg = (int64_t)msgmax;
    tq_in_set_max_bytes(self->in, (size_t)msgmax);
    int hwm = cfg->peer_queue > 0 ? cfg->peer_queue : 1000;
    /* ZMTP heartbeats, answered by the peers' libzmq: a connection whose
     * peer stopped answering is closed by libzmq itself (it holds an fd
     * even when the loop has forgotten the peer). They are the backstop
     * that frees descriptors, not the liveness rule (the loop's own
     * heartbeats forget a silent peer after heartbeat_timeout): three
     * times as lenient, so a peer whose machine stalls for a moment, or
     * a frame that takes a while to arrive, does not lose its connection
     * and the messages queued on it. A connection gets handshake_ivl to
     * finish its greeting and CURVE handshake. */
    int hb_ivl = (int)cfg->heartbeat_ms;
    int64_t zmtp_timeout = 3 * cfg->heartbeat_timeout_ms;
    int hb_timeout = zmtp_timeout < INT32_MAX ? (int)zmtp_timeout : INT32_MAX;
    int hb_ttl = hb_timeout < 6553599 ? hb_timeout : 6553599; /* ZMTP: deciseconds in a u16 */
    int hs_ivl = cfg->handshake_timeout_ms > 0 ? (int)cfg->handshake_timeout_ms : 0;
    if (!self->router || zmq_setsockopt(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
        zmq_setsockopt(self->router, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
        zmq_setsockopt(self->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_setsockopt(self->router, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(self->router, ZMQ_HANDSHAKE_IVL, &hs_ivl, sizeof hs_ivl) < 0 ||
        zmq_setsockopt(self->router, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) < 0 ||
        zmq_setsockopt(self->router, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout) < 0 ||
        zmq_setsockopt(self->router, ZMQ_HEARTBEAT_TTL, &hb_ttl, sizeof hb_ttl) < 0 ||
        tq_curve_server(self->router, keys) < 0) {
        tq_err_set(err, 0, "cannot set up the ROUTER socket: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* The auth actor (it must answer before the first peer connects), then
 * the bind, and the endpoint as bound. Returns 0, or -1 with a message
 * in err. */
static int bind_router(tq_loop_t *self, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       tq_err_t *err)
{
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_ACCEPT_FAILED | ZMQ_EVENT_DISCONNECTED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int have_monitor = zmq_socket_monitor(self->router, MONITOR_ENDPOINT, events) == 0;
    if (!have_monitor)
        tq_warn("no socket monitor (%s): failed handshakes will not be logged and "
                "--max-connections is not enforced",
                zmq_strerror(errno));
    /* The ZAP handler must be up before the first peer can connect. */
    tq_auth_cfg_t acfg = {cfg->max_connections, cfg->fd_limit, cfg->handshake_timeout_ms,
                          cfg->accept_shared};
    self->auth = tq_auth_new(self->ctx, keys, have_monitor ? MONITOR_ENDPOINT : NULL, &acfg, err);
    if (!self->auth)
        return -1;
    if (self->policy.allow)
        tq_auth_set_keys(self->auth, self->policy.allow);
    if (zmq_bind(self->router, cfg->endpoint) < 0) {
        tq_err_set(err, 0, "cannot bind %s: %s", cfg->endpoint, zmq_strerror(errno));
        return -1;
    }
    /* The actual endpoint: a bind to port 0 or "*" gets resolved here. */
    size_t elen = sizeof self->endpoint;
    if (zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->endpoint, &elen) < 0)
        tq_strlcpy(self->endpoint, cfg->endpoint, sizeof self->endpoint);
    /* The dual-stack socket reports an IPv4 bind as tcp://[::ffff:a.b.c.d]:p;
     * show it the way the operator wrote it. */
    static const char mapped[] = "tcp://[::ffff:";
    char *close_br = strchr(self->endpoint, ']');
    if (strncmp(self->endpoint, mapped, sizeof mapped - 1) == 0 && close_br &&
        memchr(self->endpoint, '.', (size_t)(close_br - self->endpoint))) {
        char v4[sizeof self->endpoint];
        snprintf(v4, sizeof v4, "tcp://%.*s%s",
                 (int)(close_br - self->endpoint - (sizeof mapped - 1)),
                 self->endpoint + sizeof mapped - 1, close_br + 1);
        tq_strlcpy(self->endpoint, v4, sizeof self->endpoint);
    }
    return 0;
}

/* The parts that work on the state: outbox, roster, handlers. */
static void wire(tq_loop_t *self)
{
    self->outbox = tq_outbox_new(self->router, self->peers);
    self->roster = tq_roster_new(self->engine, self->peers, self->outbox, &self->sched_dirty);
    tq_handlers_deps_t hd = {self->engine,   self->persist,      self->peers,  self->outbox,
                             self->roster,   self->status,       &self->cfg,   self->endpoint,
                             self->start_ms, &self->sched_dirty, &self->policy};
    self->handlers = tq_handlers_new(&hd);
}

/* --metrics-listen's server, and --http-listen's (which serves the
 * metrics too: one server when both name the same address). Returns 0,
 * or -1 with err. */
static int start_http(tq_loop_t *self, const tq_loop_cfg_t *cfg, tq_err_t *err)
{
    int shared = cfg->metrics_listen && cfg->http_listen &&
                 tq_http_same_addr(cfg->metrics_listen, cfg->http_listen);
    if (cfg->metrics_listen && !shared) {
        self->metrics = tq_metrics_start(cfg->metrics_listen, err);
        if (!self->metrics)
            return -1;
        tq_info("metrics on %s", tq_metrics_url(self->metrics));
    } else if (cfg->http_listen) {
        self->metrics = tq_metrics_new();
    }
    if (self->metrics)
        tq_engine_subscribe(self->engine, tq_metrics_on_engine, self->metrics);
    if (!cfg->http_listen)
        return 0;
    tq_http_cfg_t hc = {cfg->http_listen, cfg->http_auth_file, cfg->http_show_payloads,
                        self->metrics};
    self->http = tq_http_start(&hc, err);
    if (!self->http)
        return -1;
    self->http_names.name_tokens = TQ_PEER_NEW_NAMES_BURST;
    self->http_names.name_refill_ms = tq_mono_ms();
    tq_engine_subscribe(self->engine, tq_http_on_engine, self->http);
    tq_info("dashboard on %s (API %sapi/v1/, metrics %smetrics)%s", tq_http_url(self->http),
            tq_http_url(self->http), tq_http_url(self->http),
            cfg->http_auth_file ? "" : "; no --http-auth-file: loopback users are admins");
    if (shared)
        tq_info("metrics on %smetrics", tq_http_url(self->http));
    return 0;
}

tq_loop_t *tq_loop_new(void *ctx, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       tq_err_t *err)
{
    tq_loop_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    self->cfg = *cfg;
    tq_strlcpy(self->endpoint, cfg->endpoint, sizeof self->endpoint);
    self->cfg.endpoint = self->endpoint;
    self->policy.allow = cfg->allow; /* ours now */
    self->cfg.allow = NULL;
    self->policy.owners = tq_idmap_new();
    if (open_state(self, cfg, err) < 0)
        goto fail;
    self->peers = tq_peers_new();
    self->start_ms = tq_mono_ms();
    self->status = tq_status_new(self->start_ms);
    self->in = tq_in_new();
    if (open_router(self, cfg, keys, err) < 0)
        goto fail;
    wire(self);
    if (bind_router(self, cfg, keys, err) < 0)
        goto fail;
    if (start_http(self, cfg, err) < 0)
        goto fail;
    self->started = 1;
    return self;
fail:
    tq_loop_destroy(&self);
    return NULL;
}

const char *tq_loop_endpoint(const tq_loop_t *self) { return self->endpoint; }

/* The timers due at now (monotonic ms): lease expiry and heartbeats,
 * the sweep of expired results, keys and unused names. */
/* Timer: lease expiry, peer timeouts and heartbeats. */
static int64_t on_heartbeat_timer(tq_loop_t *self, int64_t now)
{
    expire_leases(self);
    heartbeat(self, now);
    return now + self->cfg.heartbeat_ms;
}

/* Owner tags of tasks gone from the store (ids are never reused, so a
 * stale entry is harmless until then) are dropped by a sweep of the
 * whole map once it has grown to twice its size after the last sweep
 * (and LOOP_OWNERS_GC_MIN entries more): the map stays within about
 * twice the tasks stored, at an amortised constant cost per task. */
#define LOOP_OWNERS_GC_MIN 4096
typedef struct {
    tq_store_t *store;
    uint64_t *gone;
    size_t n, cap;
} owners_gc_t;

static void owner_check(uint64_t id, void *value, void *arg)
{
    (void)value;
    owners_gc_t *g = arg;
    if (tq_store_get(g->store, id))
        return;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->gone = tq_realloc(g->gone, g->cap * sizeof *g->gone);
    }
    g->gone[g->n++] = id;
}

static void owners_gc(tq_loop_t *self)
{
    if (tq_idmap_size(self->policy.owners) < 2 * self->owners_kept + LOOP_OWNERS_GC_MIN)
        return;
    owners_gc_t g = {self->store, NULL, 0, 0};
    tq_idmap_each(self->policy.owners, owner_check, &g);
    for (size_t i = 0; i < g.n; i++)
        tq_idmap_remove(self->policy.owners, g.gone[i]);
    free(g.gone);
    self->owners_kept = tq_idmap_size(self->policy.owners);
}

/* Timer: the sweep of expired results and keys, unused names, and the
 * summaries of the log limits. */
static int64_t on_sweep_timer(tq_loop_t *self, int64_t now)
{
    tq_roster_tick(self->roster, now);
    owners_gc(self);
    size_t n = tq_engine_sweep(self->engine, tq_now(), LOOP_SWEEP_STEPS);
    if (n)
        tq_debug("expired %zu finished task%s or idempotency key%s", n, n == 1 ? "" : "s",
                 n == 1 ? "" : "s");
    /* names and queues nothing uses any more */
    size_t freed = tq_store_gc(self->store, LOOP_GC_STEPS);
    if (freed)
        tq_debug("freed %zu unused queue or function name%s", freed, freed == 1 ? "" : "s");
    /* more overdue: come back at once, after other work */
    return n == LOOP_SWEEP_STEPS ? now : now + LOOP_SWEEP_MS;
}

/* Timer: journal housekeeping (retries, compaction); every pass while a
 * compaction has steps left. */
static int64_t on_journal_timer(tq_loop_t *self, int64_t now)
{
    tq_persist_tick(self->persist, now);
    return tq_persist_busy(self->persist) ? now : now + LOOP_JTICK_MS;
}

/* Timer: render the metrics for the HTTP thread (metrics.h). */
static int64_t on_metrics_timer(tq_loop_t *self, int64_t now)
{
    tq_persist_stats_t js;
    tq_persist_stats(self->persist, &js);
    tq_metrics_info_t mi = {
        .uptime_ms = now - self->start_ms,
        .late_results = tq_handlers_late(self->handlers),
        .journal_bytes = js.bytes,
        .journal_live_bytes = js.live_bytes,
        .compactions = js.compactions,
        .journal_records = js.records,
        .journal_error = js.failed,
        .fsync = js.sync,
        .policy = &self->policy,
    };
    tq_auth_counts(self->auth, &mi.auth_failures, &mi.connections);
    tq_metrics_render(self->metrics, self->store, self->peers, &mi);
    return now + TQ_METRICS_RENDER_MS;
}

/* Timer: publish the dashboard's snapshot and a history point (http.h). */
static int64_t on_http_timer(tq_loop_t *self, int64_t now)
{
    tq_persist_stats_t js;
    tq_persist_stats(self->persist, &js);
    tq_status_info_t info = {self->endpoint, self->start_ms, tq_handlers_late(self->handlers),
                             js.fsync,       js.bytes,       js.live_bytes,
                             js.compactions, js.failed};
    cJSON *doc = tq_status_build(self->status, self->store, self->peers, &info, 0, now);
    const tq_store_totals_t *t = tq_store_totals(self->store);
    int64_t wall = tq_wall_ms();
    cJSON_AddNumberToObject(doc, "time_ms", (double)wall);
    tq_http_publish(self->http, doc, t->submitted, t->done, t->failed + t->dead, wall);
    return now + TQ_HTTP_PUBLISH_MS;
}

static void timer_add(tq_loop_t *self, int64_t first_ms, loop_timer_fn fn)
{
    TQ_ASSERT(self->ntimers < LOOP_TIMERS);
    self->timers[self->ntimers++] = (loop_timer_t){first_ms, fn};
}

/* Run the timers whose time has come at now (monotonic ms). */
static void run_timers(tq_loop_t *self, int64_t now)
{
    for (size_t i = 0; i < self->ntimers; i++)
        if (now >= self->timers[i].next_ms)
            self->timers[i].next_ms = self->timers[i].fn(self, now);
}

/* Milliseconds from now until the next timer is due (0 if one is). */
static long timers_timeout(const tq_loop_t *self, int64_t now)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < self->ntimers; i++)
        if (self->timers[i].next_ms < next)
            next = self->timers[i].next_ms;
    if (next <= now)
        return 0;
    return next - now > LONG_MAX ? LONG_MAX : (long)(next - now);
}

/* The end of a loop pass: delayed tasks that became runnable, peers that
 * went away, the scheduler, then the journal write and every peer's
 * queued messages and RESULTS. */
static void end_pass(tq_loop_t *self)
{
    tq_engine_promote(self->engine, tq_now(), LOOP_SWEEP_STEPS); /* WAKE if any */
    tq_roster_reap(self->roster);
    if (self->sched_dirty) {
        self->sched_dirty = 0;
        tq_sched_run(self->engine, self->peers, tq_now(), send_dispatch, self);
    }
    /* This iteration's records go to the file before its replies go
     * out; acks of SUBMITs wait in their peer (gated) until ready. */
    tq_persist_flush(self->persist);
    self->sends_stalled = 0;
    uint64_t ready = tq_persist_ready(self->persist);
    tq_now_t now_c = tq_now();
    for (size_t i = 0; i < tq_peers_count(self->peers); i++) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        if (p->outq.n)
            tq_outbox_flush(self->outbox, p, ready);
        if (p->npending)
            tq_outbox_results(self->outbox, p, self->engine, self->cfg.peer_queue_bytes, now_c);
        if (p->stalled && !p->outq.n) {
            p->stalled = 0;
            self->sched_dirty = 1; /* it can take tasks again */
        }
    }
    if (tq_outbox_take_stalled(self->outbox))
        self->sends_stalled = 1;
    if (tq_outbox_take_gone(self->outbox))
        self->sched_dirty = 1;
    if (self->http)
        tq_http_release(self->http, ready); /* answers the journal now holds */
    tq_roster_reap(self->roster);
}

/* Waits until the ROUTER or the journal's pipe has a message, stop_fd
 * (if >= 0) or the HTTP server's wake-up fd is readable, or timeout ms
 * passed. Sets *router_in,
 * *pipe_in, *stop and *http_in to what is ready. Returns 0, or -1 with errno
 * (EINTR: call again; ETERM: the context is gone). tq_zpoll, not
 * zmq_poll: one poll(2) per wait instead of two plus four ZMQ_EVENTS (a
 * round trip of a single task costs the master two waits). */
static int loop_wait(tq_loop_t *self, int stop_fd, long timeout, int *router_in, int *pipe_in,
                     int *stop, int *http_in)
{
    /* One wait in two of a single task's round trip has nothing but the
     * ROUTER to look at: the journal's pipe speaks once per sync round. */
    uint64_t ops = tq_persist_socket_ops(self->persist);
    short pipe_ev = ZMQ_POLLIN | (self->pipe_quiet && ops == self->pipe_ops ? TQ_ZPOLL_QUIET : 0);
    zmq_pollitem_t items[4] = {{self->router, 0, ZMQ_POLLIN, 0},
                               {tq_persist_socket(self->persist), 0, pipe_ev, 0}};
    int n = 2, istop = -1, ihttp = -1;
    if (stop_fd >= 0) {
        items[n] = (zmq_pollitem_t){NULL, stop_fd, ZMQ_POLLIN, 0};
        istop = n++;
    }
    if (self->http) {
        items[n] = (zmq_pollitem_t){NULL, tq_http_fd(self->http), ZMQ_POLLIN, 0};
        ihttp = n++;
    }
    self->pipe_quiet = 0;
    if (tq_zpoll(items, n, timeout) < 0)
        return -1;
    *router_in = (items[0].revents & ZMQ_POLLIN) != 0;
    *pipe_in = (items[1].revents & ZMQ_POLLIN) != 0;
    /* Not ready: tq_zpoll asked it (or, quiet, it did not fire): nothing
     * can be waiting on it unseen until someone sends or receives. */
    self->pipe_quiet = !*pipe_in;
    self->pipe_ops = ops;
    *stop = istop >= 0 && (items[istop].revents & (ZMQ_POLLIN | ZMQ_POLLERR));
    *http_in = ihttp >= 0 && (items[ihttp].revents & ZMQ_POLLIN);
    return 0;
}

int tq_loop_run(tq_loop_t *self, int stop_fd)
{
    int64_t now = tq_mono_ms();
    self->ntimers = 0;
    timer_add(self, now + self->cfg.heartbeat_ms, on_heartbeat_timer);
    timer_add(self, now + LOOP_SWEEP_MS, on_sweep_timer);
    timer_add(self, now + LOOP_JTICK_MS, on_journal_timer);
    if (self->metrics)
        timer_add(self, now, on_metrics_timer);
    if (self->http)
        timer_add(self, now, on_http_timer);
    for (;;) {
        now = tq_mono_ms();
        long timeout = timers_timeout(self, now);
        int64_t get_due = tq_handlers_tick(self->handlers, now); /* parked GETs */
        if (get_due >= 0 && get_due < timeout)
            timeout = (long)get_due;
        /* Work left over (a send failed; tasks went back): retry soon,
         * without spinning on a worker whose pipe is full. */
        if ((self->sched_dirty || self->sends_stalled) && timeout > LOOP_RETRY_MS)
            timeout = LOOP_RETRY_MS;
        tq_outbox_pass(self->outbox);
        if (tq_outbox_held(self->outbox) && timeout > LOOP_ACK_HOLD_MS)
            timeout = LOOP_ACK_HOLD_MS; /* a held ack goes out soon anyway */
        int64_t due = tq_store_next_due(self->store, tq_wall_ms());
        if (due >= 0 && due < timeout)
            timeout = (long)due; /* a delayed task becomes runnable */
        int router_in = 0, pipe_in = 0, stop = 0, http_in = 0;
        if (loop_wait(self, stop_fd, timeout, &router_in, &pipe_in, &stop, &http_in) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ETERM)
                return 0;
            tq_error("poll failed: %s", zmq_strerror(errno));
            return -1;
        }
        if (stop)
            return 0;
        if (pipe_in) {
            tq_persist_on_sync(self->persist);
            if (self->paused_file && tq_persist_durable(self->persist) >= self->paused_file_lsn) {
                tq_admin_drop_file(self->cfg.journal.data_dir); /* its queues are on disk */
                self->paused_file = 0;
            }
        }
        if (router_in) {
            for (int i = 0; i < LOOP_MAX_MSGS; i++) {
                if (tq_in_recv(self->in, self->router, 1, ZMQ_DONTWAIT) < 0) {
                    if (errno != EAGAIN && errno != EINTR) {
                        tq_error("receive failed: %s", zmq_strerror(errno));
                        return -1;
                    }
                    break;
                }
                tq_auth_mark_active(self->auth, tq_in_source_fd(self->in));
                tq_handlers_handle(self->handlers, self->in);
                tq_outbox_send_kills(self->outbox); /* what the command asked for */
            }
        }
        if (http_in) {
            tq_admin_deps_t ad = {self->engine, self->persist, self->outbox,
                                  self->roster, self->peers,   &self->policy};
            tq_http_run(self->http, &ad, &self->http_names); /* the dashboard's requests */
            tq_outbox_send_kills(self->outbox);
        }
        now = tq_mono_ms();
        run_timers(self, now);
        end_pass(self);
    }
}

void tq_loop_set_allow(tq_loop_t *self, tq_allow_t *allow)
{
    tq_allow_t *old = self->policy.allow;
    /* first the handshakes: a removed key cannot come back from now on */
    tq_auth_set_keys(self->auth, allow);
    self->policy.allow = allow;
    size_t dropped = 0;
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        if (!p->ident)
            continue; /* the shared pair (or a peer from before): unchanged */
        const tq_ident_t *now = tq_allow_find(allow, p->ident_name);
        int same = now && now->role == p->ident->role &&
                   sodium_memcmp(now->key, p->ident->key, 32) == 0;
        if (same && now->role == TQ_IDENT_WORKER) /* its functions must all be allowed still */
            for (size_t f = 0; f < p->nfns && same; f++)
                same = tq_ident_may_fn(now, p->fns[f]);
        if (same) {
            p->ident = now; /* the new permissions apply from its next message */
            continue;
        }
        char why[TQ_IDENT_NAME_MAX + 96];
        snprintf(why, sizeof why, "dropped: the key of identity '%s' was %s in --allow-keys",
                 p->ident_name, now ? "changed" : "removed");
        tq_warn("SIGHUP: %s %s (address %s) %s", p->role == TQ_ROLE_WORKER ? "worker" : "client",
                p->name, p->address, why);
        tq_connref_t conn = p->conn;
        tq_roster_forget(self->roster, &p, why);
        tq_connref_cut(&conn);
        dropped++;
    }
    tq_allow_free(&old);
    tq_info("SIGHUP: --allow-keys reloaded: %zu keys; %zu connections dropped",
            tq_allow_count(allow), dropped);
    self->sched_dirty = 1;
}

void tq_loop_destroy(tq_loop_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_loop_t *self = *self_p;
    if (self->started) {
        const tq_store_totals_t *t = tq_store_totals(self->store);
        tq_queue_counts_t c;
        tq_store_counts(self->store, &c);
        tq_info("shutting down: %zu tasks stored (%zu queued, %zu running, %zu results); "
                "since start: %" PRIu64 " submitted, %" PRIu64 " done, %" PRIu64 " failed, %" PRIu64
                " dead, %" PRIu64 " cancelled, %" PRIu64 " requeued, %" PRIu64 " retried, %" PRIu64
                " late results; %zu workers, %zu clients connected",
                tq_store_size(self->store), c.queued, c.running, c.done + c.failed + c.cancelled,
                t->submitted, t->done, t->failed, t->dead, t->cancelled, t->requeued, t->retried,
                tq_handlers_late(self->handlers), tq_peers_count_role(self->peers, TQ_ROLE_WORKER),
                tq_peers_count_role(self->peers, TQ_ROLE_CLIENT));
    }
    if (self->http && self->engine)
        tq_engine_unsubscribe(self->engine, tq_http_on_engine, self->http);
    tq_http_stop(&self->http);         /* requests still waiting get 503 */
    if (self->metrics && self->engine) /* before the leases are handed back below */
        tq_engine_unsubscribe(self->engine, tq_metrics_on_engine, self->metrics);
    tq_metrics_stop(&self->metrics); /* its thread reads nothing of ours */
    if (self->router) {
        if (self->auth)
            zmq_socket_monitor(self->router, NULL, 0);
        zmq_close(self->router);
    }
    tq_auth_destroy(&self->auth);
    /* Sync the journal and stop observing: what follows (leases handed
     * back in memory) is what recovery does by itself. */
    int had_journal = self->persist != NULL;
    tq_persist_destroy(&self->persist);
    if (had_journal && self->paused_file)
        tq_admin_drop_file(self->cfg.journal.data_dir); /* everything is synced now */
    /* Leases and waits are plain memory: drop them before freeing. */
    if (self->peers) {
        for (size_t i = 0; i < tq_peers_count(self->peers); i++) {
            tq_peer_t *p = tq_peers_at(self->peers, i);
            while (p->nleased) { /* LEASE_END takes it off p */
                tq_task_t *t = p->leased[p->nleased - 1];
                tq_engine_release(self->engine, p, t->id, tq_task_attempt(t));
            }
            if (p->role == TQ_ROLE_CLIENT)
                tq_peer_drop_waits(p, self->store);
            tq_outbox_forget(self->outbox, p);
        }
    }
    tq_handlers_destroy(&self->handlers);
    tq_roster_destroy(&self->roster);
    tq_outbox_destroy(&self->outbox);
    tq_peers_destroy(&self->peers);
    tq_engine_destroy(&self->engine);
    self->store = NULL;
    tq_status_destroy(&self->status);
    tq_in_destroy(&self->in);
    tq_allow_free(&self->policy.allow);
    tq_idmap_destroy(&self->policy.owners);
    tq_ident_intern_free(); /* the owners' names: nothing points to them now */
    free(self);
    *self_p = NULL;
}

/* ---- settings changed while running (SIGHUP) ------------------------------ */

void tq_loop_set_limits(tq_loop_t *self, size_t max_tasks, uint64_t peer_queue_bytes)
{
    self->cfg.max_tasks = max_tasks;
    self->cfg.peer_queue_bytes = peer_queue_bytes;
    tq_engine_set_max_tasks(self->engine, max_tasks);
}

void tq_loop_set_ttls(tq_loop_t *self, int64_t result_ttl_ms, int64_t unfetched_ttl_ms)
{
    self->cfg.result_ttl_ms = result_ttl_ms;
    self->cfg.unfetched_ttl_ms = unfetched_ttl_ms;
    tq_engine_set_ttls(self->engine, result_ttl_ms, unfetched_ttl_ms);
}

void tq_loop_set_retry(tq_loop_t *self, uint32_t max_attempts, int64_t lease_timeout_ms,
                       int64_t backoff_base_ms, int64_t backoff_cap_ms)
{
    self->cfg.max_attempts = max_attempts;
    self->cfg.lease_timeout_ms = lease_timeout_ms;
    self->cfg.backoff_base_ms = backoff_base_ms;
    self->cfg.backoff_cap_ms = backoff_cap_ms;
    tq_engine_set_retry(self->engine, max_attempts, lease_timeout_ms, backoff_base_ms,
                        backoff_cap_ms);
}

int tq_loop_set_queue_timeouts(tq_loop_t *self, const tq_queue_timeout_t *old, size_t nold,
                               const tq_queue_timeout_t *now, size_t n, char *err, size_t errlen)
{
    tq_queue_t **qs = tq_calloc(n ? n : 1, sizeof *qs);
    for (size_t i = 0; i < n; i++) {
        qs[i] = tq_store_queue(self->store, now[i].queue);
        if (!qs[i]) {
            snprintf(err, errlen, "queue '%.*s': the master's name table is full",
                     (int)now[i].queue.len, (const char *)now[i].queue.data);
            free(qs);
            return -1;
        }
    }
    for (size_t i = 0; i < nold; i++) {
        tq_queue_t *q = tq_store_queue(self->store, old[i].queue); /* made at start */
        if (q)
            tq_queue_set_default_timeout(q, 0);
    }
    for (size_t i = 0; i < n; i++)
        tq_queue_set_default_timeout(qs[i], now[i].timeout_ms);
    free(qs);
    return 0;
}
