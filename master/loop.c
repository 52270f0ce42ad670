/* loop.c - the master's event loop. See loop.h; the handler of each
 * incoming message type is in handlers.c.
 *
 * One iteration: zmq_poll on the ROUTER (timeout from the next timer),
 * read up to LOOP_MAX_MSGS messages and handle each, run the timers
 * (heartbeats, peer timeouts, TTL sweep), forget peers that went away,
 * run the scheduler (one DISPATCH per worker), then flush the RESULTS
 * batched for each client. Sends never block: ZMQ_DONTWAIT everywhere. */
#include "loop.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <zmq.h>

#include "loop_internal.h"
#include "outbox.h"
#include "scheduler.h"
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
/* Outcomes held for one client that does not read them (8 MiB of ids).
 * Past it the client is forgotten, as if it had gone: its results stay
 * stored, and a live client says HELLO again and WAITs for them. */
#define LOOP_MAX_PENDING (1u << 20)
/* What one outcome in RESULTS costs against --peer-queue-bytes besides
 * its data: its record and ZeroMQ's bookkeeping, so that empty results
 * are bounded too (and the ring of unconfirmed outcomes with them). */
#define LOOP_OUTCOME_COST 64u

/* ---- logging ----------------------------------------------------------- */

/* If rl's second is over: log how many lines it held back (what names
 * them) and start a new one. */
static void rl_roll(tq_loop_ratelimit_t *rl, int64_t now, const char *what) {
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
static int rl_take(tq_loop_ratelimit_t *rl, int64_t now, unsigned per_s, const char *what) {
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

int tq_loop_peer_line(tq_loop_t *self, int level, const char *addr) {
    if (level > tq_log_level())
        return 0;
    int64_t now = tq_mono_ms();
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, addr, strlen(addr));
    tq_loop_ratelimit_t *a = &self->addr_rl[h % TQ_LOOP_ADDR_BUCKETS];
    if (now - a->window_ms >= 1000) {
        a->window_ms = now;
        a->lines = 0;
    }
    if (a->lines >= LOOP_PEER_LINES_PER_ADDR_S) {
        rl_roll(&self->peer_rl, now, PEER_WHAT);
        self->peer_rl.suppressed++; /* one summary for both limits */
        return 0;
    }
    if (!rl_take(&self->peer_rl, now, LOOP_PEER_LINES_PER_S, PEER_WHAT))
        return 0;
    a->lines++;
    return 1;
}

/* Log the summaries of limiters whose second is over (from a timer, so
 * they appear when a flood stops too). */
static void rl_flush(tq_loop_t *self, int64_t now) {
    rl_roll(&self->warn_rl, now, WARN_WHAT);
    rl_roll(&self->peer_rl, now, PEER_WHAT);
}

/* See loop_internal.h. Warn about bad input from a peer, at most LOOP_WARN_PER_S lines per
 * second per peer (unregistered peers share one budget). */
void tq_loop_warn_peer(tq_loop_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...) {
    if (TQ_LOG_WARN > tq_log_level())
        return;
    tq_loop_ratelimit_t tmp, *rl = &self->anon_rl;
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
    if (rl->lines < LOOP_WARN_PER_S) {
        rl->lines++;
        if (!rl_take(&self->warn_rl, now, LOOP_WARN_ALL_PER_S, WARN_WHAT))
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

/* ---- the engine's events ------------------------------------------------ */

tq_now_t tq_loop_now(void) {
    tq_now_t now = {tq_wall_ms(), tq_mono_ms()};
    return now;
}

/* The loop's subscription to the engine: a lease that ends leaves its
 * worker's books (and its run is KILLed when the engine says so), a
 * finished task's waiters get its outcome, the scheduler wakes. */
static void on_engine(void *arg, const tq_engine_ev_t *ev) {
    tq_loop_t *self = arg;
    switch (ev->kind) {
    case TQ_EV_LEASE_END:
        if (ev->kill && ev->worker) /* sent after the command (tq_outbox_send_kills) */
            tq_outbox_kill(self->outbox, ev->worker, ev->task->id, ev->attempt);
        if (ev->worker)
            tq_peer_lease_remove(ev->worker, ev->task);
        break;
    case TQ_EV_FINISHED:
        tq_peer_notify_waiters(ev->task);
        break;
    case TQ_EV_WAKE:
        self->sched_dirty = 1;
        break;
    default:
        break;
    }
}

static const char *worker_name(const void *w) { return ((const tq_peer_t *)w)->name; }

/* ---- peers leaving ------------------------------------------------------ */

/* Undo a worker's registration: its leased tasks go back (or die), a
 * client's waits are dropped. The peer stays in the table. */
static void peer_unregister(tq_loop_t *self, tq_peer_t *p) {
    tq_now_t now = tq_loop_now();
    while (p->nleased > 0) /* the engine's LEASE_END takes it off p */
        tq_engine_lost(self->engine, p->leased[p->nleased - 1], "worker lost", now);
    if (p->role == TQ_ROLE_CLIENT)
        tq_peer_drop_waits(p, self->store);
    self->sched_dirty = 1;
}

void tq_loop_forget_peer(tq_loop_t *self, tq_peer_t **pp, const char *why) {
    tq_peer_t *p = *pp;
    if (!tq_loop_peer_line(self, p->role == TQ_ROLE_WORKER ? TQ_LOG_INFO : TQ_LOG_DEBUG,
                           p->address)) {
        /* rate-limited: counted */
    } else if (p->role == TQ_ROLE_WORKER) {
        char fns[256];
        tq_peer_fns_text(p, fns, sizeof fns);
        tq_info("worker %s %s (address %s, slots %" PRIu32 ", functions %s, %zu leased task%s back)",
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

/* Forget every peer marked gone (a send failed with EHOSTUNREACH). */
static void reap_gone(tq_loop_t *self) {
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        if (p->gone)
            tq_loop_forget_peer(self, &p, "lost (unreachable)");
    }
}

/* ---- dispatch ----------------------------------------------------------- */

/* The scheduler's send callback: one DISPATCH for worker w, handed to
 * the outbox (sent, or queued in order when w's pipe is full). */
static int send_dispatch(void *arg, tq_peer_t *w, tq_task_t *const *tasks, size_t n) {
    tq_loop_t *self = arg;
    return tq_outbox_dispatch(self->outbox, w, tasks, n);
}

/* ---- RESULTS to clients ------------------------------------------------- */

/* Send client c the outcomes queued for it (c->pending) in as many
 * RESULTS as they need. When the client's queue is full (EAGAIN: it
 * reads slowly), the outcomes not sent stay pending and the loop retries
 * them soon: a subscribed client never waits again, so an outcome dropped
 * here would leave it waiting forever.
 *
 * ZMQ_SNDHWM counts messages, not bytes, so the bytes handed to ZeroMQ
 * for one client are bounded here: an outcome costs its data plus
 * LOOP_OUTCOME_COST, and once --peer-queue-bytes of them wait for the
 * client's ACK (tq_peer_unconfirmed) the rest stay pending as task ids
 * (8 bytes each, no copy) until an ACK says the client read them. One
 * outcome larger than the budget still goes when nothing else waits. */
static void flush_results(tq_loop_t *self, tq_peer_t *c) {
    size_t i = 0;
    tq_now_t now = tq_loop_now();
    uint64_t budget = self->cfg.peer_queue_bytes ? self->cfg.peer_queue_bytes : UINT64_MAX;
    uint64_t charge[TQ_MAX_BATCH];
    int over = 0;
    while (i < c->npending && !over) {
        size_t first = i;
        uint64_t inflight = tq_peer_unconfirmed(c);
        tq_out_t *out = tq_outbox_msg(self->outbox);
        tq_out_begin(out, TQ_MSG_RESULTS);
        while (i < c->npending && !tq_out_full(out)) {
            tq_task_t *t = tq_store_get(self->store, c->pending[i]);
            tq_outcome_t o = {c->pending[i], TQ_ST_UNKNOWN, 0, {NULL, 0}};
            if (t && tq_task_finished(t)) {
                o.status = tq_task_wire_status(t);
                o.attempts = tq_task_attempt(t);
                o.data = tq_task_data(t);
            }
            uint64_t cost = (uint64_t)o.data.len + LOOP_OUTCOME_COST;
            if (inflight > 0 && (inflight > budget || budget - inflight < cost)) {
                over = 1; /* the client has not read what it has: wait for its ACK */
                break;
            }
            inflight += cost;
            charge[i - first] = cost;
            tq_out_outcome(out, &o);
            i++;
        }
        if (i == first)
            break;
        if (tq_outbox_send(self->outbox, c) < 0) {
            if (!c->gone) { /* EAGAIN: keep what was not sent, in order */
                i = first;
                self->sends_stalled = 1;
                break;
            }
            c->npending = 0;
            return; /* gone: reaped with its waits */
        }
        for (size_t k = first; k < i; k++) {
            tq_peer_sent_add(c, c->pending[k], charge[k - first]);
            tq_task_t *t = tq_store_get(self->store, c->pending[k]);
            if (t && tq_task_finished(t))
                tq_engine_fetched(self->engine, t, now);
        }
    }
    /* keep what was not sent, in order */
    memmove(c->pending, c->pending + i, (c->npending - i) * sizeof *c->pending);
    c->npending -= i;
    if (c->npending > LOOP_MAX_PENDING) {
        tq_warn("client %s reads no results (%zu waiting): forgetting it", c->name, c->npending);
        c->gone = 1;
        c->npending = 0;
    }
}

/* ---- timers ------------------------------------------------------------- */

/* End at most LOOP_EXPIRE_STEPS leases whose deadline passed, with a
 * KILL of the attempt on its worker. A task with a run timeout (deadline
 * run timeout + 2 heartbeat intervals) is retried if it has retries
 * left, else it fails as timed out. A task without one reached
 * --lease-timeout: a lost lease (task_lost: requeued, or dead after
 * --max-attempts). */
static void expire_leases(tq_loop_t *self) {
    tq_now_t now = tq_loop_now();
    for (size_t n = 0; n < LOOP_EXPIRE_STEPS && tq_engine_expire_one(self->engine, now); n++)
        ;
    tq_outbox_send_kills(self->outbox);
}

/* Forget peers silent for longer than the heartbeat timeout, send a
 * HEARTBEAT to the others, and take a status sample. */
static void heartbeat(tq_loop_t *self, int64_t now) {
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        int64_t silent = now - p->last_seen_ms;
        if (silent > self->cfg.heartbeat_timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "lost (no message for %.1f s)", (double)silent / 1000.0);
            tq_loop_forget_peer(self, &p, why);
            continue;
        }
        tq_out_begin(tq_outbox_msg(self->outbox), TQ_MSG_HEARTBEAT);
        tq_outbox_send(self->outbox, p);
    }
    tq_status_sample(self->status, self->store, now);
}

/* ---- public --------------------------------------------------------------- */

/* What recovery found, in one or two lines. */
static void log_recovery(const tq_persist_report_t *r) {
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
                "finish", j->left_over);
    tq_info("journal: recovered %" PRIu64 " queued tasks, %" PRIu64 " results and %" PRIu64
            " idempotency keys from %zu segments (%" PRIu64 " records, %.1f MiB) in %lld ms",
            r->queued, r->finished, r->keys, j->segments, j->records, j->bytes / 1048576.0,
            (long long)r->elapsed_ms);
}

tq_loop_t *tq_loop_new(void *ctx, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       char *err, size_t errlen) {
    tq_loop_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    self->cfg = *cfg;
    tq_strlcpy(self->endpoint, cfg->endpoint, sizeof self->endpoint);
    self->cfg.endpoint = self->endpoint;
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    tq_engine_cfg_t ecfg = {
        .store = {(uint64_t)tq_wall_us(), cfg->max_tasks, cfg->result_ttl_ms,
                  cfg->unfetched_ttl_ms, cfg->key_retention_ms},
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
    self->persist = tq_persist_open(&cfg->journal, self->engine, &rep, err, errlen);
    if (!self->persist)
        goto fail;
    tq_engine_subscribe(self->engine, on_engine, self);
    if (tq_admin_load(self, err, errlen) < 0)
        goto fail;
    log_recovery(&rep);
    self->peers = tq_peers_new();
    self->start_ms = tq_mono_ms();
    self->status = tq_status_new(self->start_ms);
    self->in = tq_in_new();

    self->router = zmq_socket(ctx, ZMQ_ROUTER);
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
     * even when the loop has forgotten the peer). A connection gets
     * handshake_ivl to finish its greeting and CURVE handshake. */
    int hb_ivl = (int)cfg->heartbeat_ms;
    int hb_timeout = (int)cfg->heartbeat_timeout_ms;
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
        snprintf(err, errlen, "cannot set up the ROUTER socket: %s", zmq_strerror(errno));
        goto fail;
    }
    self->outbox = tq_outbox_new(self->router, self->peers);
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_ACCEPT_FAILED | ZMQ_EVENT_DISCONNECTED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int have_monitor = zmq_socket_monitor(self->router, MONITOR_ENDPOINT, events) == 0;
    if (!have_monitor)
        tq_warn("no socket monitor (%s): failed handshakes will not be logged and "
                "--max-connections is not enforced",
                zmq_strerror(errno));
    /* The ZAP handler must be up before the first peer can connect. */
    tq_auth_cfg_t acfg = {cfg->max_connections, cfg->fd_limit, cfg->handshake_timeout_ms};
    self->auth =
        tq_auth_new(ctx, keys, have_monitor ? MONITOR_ENDPOINT : NULL, &acfg, err, errlen);
    if (!self->auth)
        goto fail;
    if (zmq_bind(self->router, cfg->endpoint) < 0) {
        snprintf(err, errlen, "cannot bind %s: %s", cfg->endpoint, zmq_strerror(errno));
        goto fail;
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
        snprintf(v4, sizeof v4, "tcp://%.*s%s", (int)(close_br - self->endpoint - (sizeof mapped - 1)),
                 self->endpoint + sizeof mapped - 1, close_br + 1);
        tq_strlcpy(self->endpoint, v4, sizeof self->endpoint);
    }
    self->started = 1;
    return self;
fail:
    tq_loop_destroy(&self);
    return NULL;
}

const char *tq_loop_endpoint(const tq_loop_t *self) { return self->endpoint; }

int tq_loop_run(tq_loop_t *self, int stop_fd) {
    int64_t now = tq_mono_ms();
    self->next_hb_ms = now + self->cfg.heartbeat_ms;
    self->next_sweep_ms = now + LOOP_SWEEP_MS;
    self->next_jtick_ms = now + LOOP_JTICK_MS;
    for (;;) {
        now = tq_mono_ms();
        int64_t next = self->next_hb_ms < self->next_sweep_ms ? self->next_hb_ms
                                                              : self->next_sweep_ms;
        long timeout = next > now ? (long)(next - now) : 0;
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
        if (tq_persist_busy(self->persist))
            timeout = 0; /* compaction steps left: between messages */
        else if (self->next_jtick_ms - now < timeout)
            timeout = self->next_jtick_ms > now ? (long)(self->next_jtick_ms - now) : 0;
        zmq_pollitem_t items[3] = {{self->router, 0, ZMQ_POLLIN, 0},
                                   {tq_persist_socket(self->persist), 0, ZMQ_POLLIN, 0},
                                   {NULL, stop_fd, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, stop_fd >= 0 ? 3 : 2, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ETERM)
                return 0;
            tq_error("poll failed: %s", zmq_strerror(errno));
            return -1;
        }
        if (stop_fd >= 0 && (items[2].revents & ZMQ_POLLIN))
            return 0;
        if (items[1].revents & ZMQ_POLLIN) {
            tq_persist_on_sync(self->persist);
            tq_admin_drop_file(self, 0);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            for (int i = 0; i < LOOP_MAX_MSGS; i++) {
                if (tq_in_recv(self->in, self->router, 1, ZMQ_DONTWAIT) < 0) {
                    if (errno != EAGAIN && errno != EINTR) {
                        tq_error("receive failed: %s", zmq_strerror(errno));
                        return -1;
                    }
                    break;
                }
                tq_auth_mark_active(self->auth, tq_in_source_fd(self->in));
                tq_loop_handle(self);
                tq_outbox_send_kills(self->outbox); /* what the command asked for */
            }
        }
        now = tq_mono_ms();
        if (now >= self->next_hb_ms) {
            expire_leases(self);
            heartbeat(self, now);
            self->next_hb_ms = now + self->cfg.heartbeat_ms;
        }
        if (now >= self->next_sweep_ms) {
            rl_flush(self, now);
            size_t n = tq_engine_sweep(self->engine, tq_loop_now(), LOOP_SWEEP_STEPS);
            if (n)
                tq_debug("expired %zu finished task%s or idempotency key%s", n,
                         n == 1 ? "" : "s", n == 1 ? "" : "s");
            /* more overdue: come back at once, after other work */
            self->next_sweep_ms = n == LOOP_SWEEP_STEPS ? now : now + LOOP_SWEEP_MS;
            /* names and queues nothing uses any more */
            size_t freed = tq_store_gc(self->store, LOOP_GC_STEPS);
            if (freed)
                tq_debug("freed %zu unused queue or function name%s", freed, freed == 1 ? "" : "s");
        }
        tq_engine_promote(self->engine, tq_loop_now(), LOOP_SWEEP_STEPS); /* WAKE if any */
        reap_gone(self);
        if (self->sched_dirty) {
            self->sched_dirty = 0;
            tq_sched_run(self->engine, self->peers, tq_loop_now(), send_dispatch, self);
        }
        if (now >= self->next_jtick_ms || tq_persist_busy(self->persist)) {
            tq_persist_tick(self->persist, now);
            self->next_jtick_ms = now + LOOP_JTICK_MS;
        }
        /* This iteration's records go to the file before its replies go
         * out; acks of SUBMITs wait in their peer (gated) until ready. */
        tq_persist_flush(self->persist);
        self->sends_stalled = 0;
        uint64_t ready = tq_persist_ready(self->persist);
        for (size_t i = 0; i < tq_peers_count(self->peers); i++) {
            tq_peer_t *p = tq_peers_at(self->peers, i);
            if (p->outq.n)
                tq_outbox_flush(self->outbox, p, ready);
            if (p->npending)
                flush_results(self, p);
            if (p->stalled && !p->outq.n) {
                p->stalled = 0;
                self->sched_dirty = 1; /* it can take tasks again */
            }
        }
        if (tq_outbox_take_stalled(self->outbox))
            self->sends_stalled = 1;
        if (tq_outbox_take_gone(self->outbox))
            self->sched_dirty = 1;
        reap_gone(self);
    }
}

void tq_loop_destroy(tq_loop_t **self_p) {
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
                t->submitted, t->done, t->failed, t->dead, t->cancelled, t->requeued,
                t->retried, self->late_results, tq_peers_count_role(self->peers, TQ_ROLE_WORKER),
                tq_peers_count_role(self->peers, TQ_ROLE_CLIENT));
    }
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
    if (had_journal)
        tq_admin_drop_file(self, 1); /* everything is synced now */
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
    tq_outbox_destroy(&self->outbox);
    tq_peers_destroy(&self->peers);
    tq_engine_destroy(&self->engine);
    self->store = NULL;
    tq_status_destroy(&self->status);
    tq_in_destroy(&self->in);
    free(self);
    *self_p = NULL;
}
