/* loop.c - the master's event loop. See loop.h.
 *
 * One iteration: zmq_poll on the ROUTER (timeout from the next timer),
 * read up to LOOP_MAX_MSGS messages and handle each, run the timers
 * (heartbeats, peer timeouts, TTL sweep), forget peers that went away,
 * run the scheduler (one DISPATCH per worker), then flush the RESULTS
 * batched for each client. Sends never block: ZMQ_DONTWAIT everywhere. */
#include "loop.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "auth.h"
#include "peers.h"
#include "scheduler.h"
#include "status.h"
#include "store.h"
#include "tq_curve.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_util.h"

/* Messages handled per poll iteration before the timers, the scheduler
 * and the flushes get their turn. */
#define LOOP_MAX_MSGS 1000
/* Finished tasks deleted per sweep step, so a mass expiry never holds
 * the loop for long. */
#define LOOP_SWEEP_STEPS 10000
/* Sweep at least this often (ms). */
#define LOOP_SWEEP_MS 1000
/* Warn lines about bad input per peer per second; the rest are counted. */
#define LOOP_WARN_PER_S 3
/* Poll timeout while dispatch work is pending after a failed send (ms). */
#define LOOP_RETRY_MS 10
/* Expired leases ended per timer tick (one KILL batch at most). */
#define LOOP_EXPIRE_STEPS TQ_MAX_BATCH
#define MONITOR_ENDPOINT "inproc://taskq-master-monitor"

typedef struct {
    int64_t window_ms;
    unsigned lines, suppressed;
} ratelimit_t;

struct tq_loop {
    void *ctx;
    void *router;
    tq_auth_t *auth;
    tq_loop_cfg_t cfg;
    char endpoint[256];
    tq_store_t *store;
    tq_peers_t *peers;
    tq_status_t *status;
    tq_in_t *in;
    tq_out_t out;
    int64_t start_ms;
    int64_t next_hb_ms;
    int64_t next_sweep_ms;
    int sched_dirty;
    int started; /* bound and ready: log a summary at destroy */
    uint64_t late_results;
    ratelimit_t anon_rl; /* for peers not registered */
    /* decode scratch: TQ_MAX_BATCH records each */
    tq_task_spec_t specs[TQ_MAX_BATCH];
    tq_task_t *added[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
    tq_result_item_t results[TQ_MAX_BATCH];
    tq_lease_ref_t leases[TQ_MAX_BATCH];
    tq_peer_t *kill_to[TQ_MAX_BATCH];
    tq_lease_ref_t kills[TQ_MAX_BATCH];
};

/* ---- logging helpers ------------------------------------------------- */

/* Warn about bad input from a peer, at most LOOP_WARN_PER_S lines per
 * second per peer (unregistered peers share one budget). */
static void warn_peer(tq_loop_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void warn_peer(tq_loop_t *self, tq_peer_t *p, const char *addr, const char *fmt, ...) {
    if (TQ_LOG_WARN > tq_log_level())
        return;
    ratelimit_t tmp, *rl = &self->anon_rl;
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
        char text[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        tq_warn("peer %s%s%s: %s", addr, p ? " " : "", p ? p->name : "", text);
    } else {
        rl->suppressed++;
    }
    if (p) {
        p->log_window_ms = tmp.window_ms;
        p->log_lines = tmp.lines;
        p->log_suppressed = tmp.suppressed;
    }
}

/* "a,b,c" of a worker's functions, cut to fit. */
static void fns_text(const tq_peer_t *w, char *buf, size_t len) {
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < w->nfns; i++) {
        int n = snprintf(buf + off, len - off, "%s%s", i ? "," : "", w->fns[i]);
        if (n < 0 || (size_t)n >= len - off) {
            if (len > 4)
                memcpy(buf + len - 4, "...", 4);
            return;
        }
        off += (size_t)n;
    }
}

/* ---- sending ---------------------------------------------------------- */

static tq_bytes_t rid_of(const tq_peer_t *p) {
    tq_bytes_t b = {p->rid, p->rid_len};
    return b;
}

/* Send self->out to a registered peer. On EHOSTUNREACH the peer is gone
 * (forgotten at the end of the iteration). Returns 0 or -1 (errno). */
static int send_peer(tq_loop_t *self, tq_peer_t *p) {
    if (p->gone) {
        errno = EHOSTUNREACH;
        return -1;
    }
    tq_bytes_t rid = rid_of(p);
    if (tq_out_send(&self->out, self->router, &rid, ZMQ_DONTWAIT) == 0)
        return 0;
    int e = errno;
    if (e == EHOSTUNREACH) {
        p->gone = 1;
        self->sched_dirty = 1;
    } else if (e != EAGAIN) {
        tq_warn("send %s to %s failed: %s", tq_msg_type_name(self->out.type), p->name,
                zmq_strerror(e));
    }
    errno = e;
    return -1;
}

/* Send self->out to a routing id (a peer that may not be registered). */
static void send_rid(tq_loop_t *self, tq_bytes_t rid) {
    tq_peer_t *p = tq_peers_find(self->peers, rid);
    if (p) {
        send_peer(self, p);
        return;
    }
    tq_out_send(&self->out, self->router, &rid, ZMQ_DONTWAIT);
}

static void reply_error(tq_loop_t *self, tq_bytes_t rid, int code, uint32_t ref, const char *msg) {
    tq_out_error(&self->out, code, ref, msg);
    send_rid(self, rid);
}

/* ---- peers leaving ------------------------------------------------------ */

/* A task a worker lost goes back to its queue, or is dead once it lost
 * max_attempts leases. */
static void task_lost(tq_loop_t *self, tq_task_t *t) {
    if (tq_task_lost(t) >= self->cfg.max_attempts) {
        char why[96];
        snprintf(why, sizeof why, "gave up after %" PRIu32 " attempts: worker lost",
                 tq_task_lost(t));
        tq_store_finish(self->store, t, TQ_TASK_DEAD, why, strlen(why), tq_wall_ms());
        tq_peer_notify_waiters(t);
        tq_warn("task %" PRIu64 " is dead: %s", t->id, why);
    } else {
        tq_store_requeue(self->store, t, 0);
    }
}

/* Undo a worker's registration: its leased tasks go back (or die), a
 * client's waits are dropped. The peer stays in the table. */
static void peer_unregister(tq_loop_t *self, tq_peer_t *p) {
    while (p->nleased > 0) {
        tq_task_t *t = p->leased[p->nleased - 1];
        tq_peer_lease_remove(p, t);
        task_lost(self, t);
    }
    if (p->role == TQ_ROLE_CLIENT)
        tq_peer_drop_waits(p, self->store);
    self->sched_dirty = 1;
}

/* Forget a peer. why: "left", "lost (...)" for the log. */
static void peer_forget(tq_loop_t *self, tq_peer_t **pp, const char *why) {
    tq_peer_t *p = *pp;
    if (p->role == TQ_ROLE_WORKER) {
        char fns[256];
        fns_text(p, fns, sizeof fns);
        tq_info("worker %s %s (address %s, slots %" PRIu32 ", functions %s, %zu leased task%s back)",
                p->name, why, p->address, p->slots, fns, p->nleased, p->nleased == 1 ? "" : "s");
    } else {
        tq_debug("client %s %s (address %s)", p->name, why, p->address);
    }
    peer_unregister(self, p);
    tq_peers_remove(self->peers, pp);
}

/* Forget every peer marked gone (a send failed with EHOSTUNREACH). */
static void reap_gone(tq_loop_t *self) {
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        if (p->gone)
            peer_forget(self, &p, "lost (unreachable)");
    }
}

/* ---- HELLO ------------------------------------------------------------- */

static int hello_error(tq_loop_t *self, tq_bytes_t rid, const char *addr, int code,
                       const char *msg) {
    warn_peer(self, tq_peers_find(self->peers, rid), addr, "HELLO refused: %s", msg);
    reply_error(self, rid, code, 0, msg);
    return -1;
}

static void on_hello(tq_loop_t *self, tq_bytes_t rid, const char *addr, tq_bytes_t body,
                     size_t nparts) {
    void *jv = NULL;
    tq_error_t err;
    if (tq_decode_json(body, nparts, TQ_MAX_JSON, &jv, &err) < 0) {
        hello_error(self, rid, addr, err.code, err.msg);
        return;
    }
    cJSON *j = jv;
    char msg[TQ_MAX_ERROR_TEXT];
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(j, "role");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    tq_role_t r;
    if (!cJSON_IsString(role) ||
        (strcmp(role->valuestring, "worker") != 0 && strcmp(role->valuestring, "client") != 0)) {
        hello_error(self, rid, addr, TQ_ERR_MALFORMED,
                    "HELLO: \"role\" must be \"worker\" or \"client\"");
        goto out;
    }
    r = strcmp(role->valuestring, "worker") == 0 ? TQ_ROLE_WORKER : TQ_ROLE_CLIENT;
    if (!cJSON_IsString(name) || !tq_peer_name_valid(name->valuestring)) {
        snprintf(msg, sizeof msg, "HELLO: \"name\" must be 1..%d printable ASCII characters",
                 TQ_MAX_PEER_NAME);
        hello_error(self, rid, addr, TQ_ERR_BAD_NAME, msg);
        goto out;
    }
    uint32_t slots = 0;
    const char *fns[TQ_MAX_FUNCTIONS];
    size_t nfns = 0;
    if (r == TQ_ROLE_WORKER) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "slots");
        if (!cJSON_IsNumber(s) || s->valuedouble != (double)(int64_t)s->valuedouble ||
            s->valuedouble < 1 || s->valuedouble > TQ_MAX_SLOTS) {
            snprintf(msg, sizeof msg, "HELLO: \"slots\" must be an integer 1..%d", TQ_MAX_SLOTS);
            hello_error(self, rid, addr, TQ_ERR_MALFORMED, msg);
            goto out;
        }
        slots = (uint32_t)s->valuedouble;
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "functions");
        if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) < 1) {
            hello_error(self, rid, addr, TQ_ERR_MALFORMED,
                        "HELLO: \"functions\" must be a non-empty array of names");
            goto out;
        }
        if (cJSON_GetArraySize(f) > TQ_MAX_FUNCTIONS) {
            snprintf(msg, sizeof msg, "HELLO: %d functions, max %d", cJSON_GetArraySize(f),
                     TQ_MAX_FUNCTIONS);
            hello_error(self, rid, addr, TQ_ERR_TOO_MANY, msg);
            goto out;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, f) {
            if (!cJSON_IsString(it) || !tq_name_valid(tq_bytes_str(it->valuestring))) {
                snprintf(msg, sizeof msg,
                         "HELLO: functions[%zu] is not a valid name (1..%d of [A-Za-z0-9_.:-])",
                         nfns, TQ_MAX_NAME);
                hello_error(self, rid, addr, TQ_ERR_BAD_NAME, msg);
                goto out;
            }
            const char *in = tq_store_intern(self->store, tq_bytes_str(it->valuestring));
            if (!in) {
                hello_error(self, rid, addr, TQ_ERR_TOO_MANY,
                            "HELLO: the master's name table is full");
                goto out;
            }
            int dup = 0;
            for (size_t k = 0; k < nfns && !dup; k++)
                dup = fns[k] == in;
            if (!dup)
                fns[nfns++] = in;
        }
    }

    int64_t now = tq_mono_ms();
    tq_peer_t *old = tq_peers_find(self->peers, rid);
    if (old)
        peer_forget(self, &old, "re-registered");
    tq_peer_t *p = tq_peers_add(self->peers, rid, r, now);
    tq_strlcpy(p->name, name->valuestring, sizeof p->name);
    tq_strlcpy(p->address, addr, sizeof p->address);
    if (r == TQ_ROLE_WORKER) {
        p->slots = p->credit = slots;
        tq_peer_set_fns(p, fns, nfns);
        char ft[256];
        fns_text(p, ft, sizeof ft);
        tq_info("worker %s joined (address %s, slots %" PRIu32 ", functions %s)", p->name,
                p->address, p->slots, ft);
        self->sched_dirty = 1;
    } else {
        tq_debug("client %s joined (address %s)", p->name, p->address);
    }

    cJSON *w = cJSON_CreateObject();
    cJSON_AddNumberToObject(w, "version", TQ_PROTO_VERSION);
    cJSON_AddNumberToObject(w, "heartbeat_ms", (double)self->cfg.heartbeat_ms);
    cJSON_AddNumberToObject(w, "heartbeat_timeout_ms", (double)self->cfg.heartbeat_timeout_ms);
    cJSON_AddNumberToObject(w, "max_payload", (double)self->cfg.max_payload);
    cJSON_AddStringToObject(w, "master", "taskq-master " TQ_VERSION);
    tq_out_json(&self->out, TQ_MSG_WELCOME, w);
    cJSON_Delete(w);
    send_peer(self, p);
out:
    cJSON_Delete(j);
}

/* ---- client messages ---------------------------------------------------- */

/* SUBMIT: a record whose non-empty key is held (within the retention
 * window) gets the existing task's id and stores nothing; two records of
 * one batch with the same key get the same id. The new tasks of a batch
 * are stored whole or not at all. */
static void on_submit(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body, const tq_bytes_t *parts,
                      size_t nparts) {
    uint32_t req = 0;
    uint16_t flags = 0;
    size_t n = 0;
    tq_error_t err;
    if (tq_decode_submit(body, parts, nparts, self->cfg.max_payload, &req, &flags, self->specs,
                         &n, &err) < 0) {
        warn_peer(self, p, p->address, "bad SUBMIT: %s", err.msg);
        reply_error(self, rid_of(p), err.code, req, err.msg);
        return;
    }
    int64_t now = tq_wall_ms();
    size_t nnew = 0;
    for (size_t i = 0; i < n; i++) {
        self->ids[i] = tq_store_key_find(self->store, self->specs[i].key, now);
        if (!self->ids[i])
            nnew++;
    }
    if (nnew && !tq_store_has_room(self->store, nnew)) {
        char msg[160];
        snprintf(msg, sizeof msg, "master is full: %zu tasks stored (--max-tasks %zu)",
                 tq_store_size(self->store), self->cfg.max_tasks);
        reply_error(self, rid_of(p), TQ_ERR_FULL, req, msg);
        return;
    }
    /* Intern every name first, so that the batch is accepted whole or
     * not at all. */
    for (size_t i = 0; i < n; i++) {
        if (self->ids[i])
            continue;
        if (!tq_store_intern(self->store, self->specs[i].fn) ||
            (self->specs[i].queue.len && !tq_store_intern(self->store, self->specs[i].queue))) {
            reply_error(self, rid_of(p), TQ_ERR_TOO_MANY, req,
                        "too many distinct queue and function names");
            return;
        }
    }
    for (size_t i = 0; i < n; i++) {
        self->added[i] = NULL;
        if (self->ids[i])
            continue;
        /* a key seen earlier in this batch */
        self->ids[i] = tq_store_key_find(self->store, self->specs[i].key, now);
        if (self->ids[i])
            continue;
        int code = TQ_ERR_INTERNAL;
        self->added[i] = tq_store_add(self->store, &self->specs[i], now, &code);
        if (!self->added[i]) {
            while (i-- > 0)
                if (self->added[i])
                    tq_store_remove_queued(self->store, self->added[i]);
            char msg[160];
            if (code == TQ_ERR_FULL)
                snprintf(msg, sizeof msg,
                         "master is full: %zu tasks or idempotency keys stored (--max-tasks %zu)",
                         tq_store_size(self->store) > tq_store_nkeys(self->store)
                             ? tq_store_size(self->store)
                             : tq_store_nkeys(self->store),
                         self->cfg.max_tasks);
            else
                snprintf(msg, sizeof msg, "cannot store the tasks (%s)",
                         code == TQ_ERR_TOO_MANY ? "too many distinct names" : "out of memory");
            reply_error(self, rid_of(p), code, req, msg);
            return;
        }
        self->ids[i] = self->added[i]->id;
    }
    tq_out_begin_ids(&self->out, TQ_MSG_SUBMIT_ACK, req);
    for (size_t i = 0; i < n; i++) {
        tq_out_id(&self->out, self->ids[i]);
        if (!(flags & TQ_SUBMIT_SUBSCRIBE))
            continue;
        tq_task_t *t = tq_store_get(self->store, self->ids[i]);
        if (t && !tq_task_finished(t))
            tq_peer_wait_add(p, t);
        else if (!self->added[i])
            tq_peer_pending_add(p, self->ids[i]); /* known key: outcome (or unknown) now */
    }
    send_peer(self, p);
    self->sched_dirty = 1;
}

static void on_wait(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body, size_t nparts) {
    uint32_t req = 0;
    size_t n = 0;
    tq_error_t err;
    if (tq_decode_ids(body, nparts, &req, self->ids, &n, &err) < 0) {
        warn_peer(self, p, p->address, "bad WAIT: %s", err.msg);
        reply_error(self, rid_of(p), err.code, req, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tq_task_t *t = tq_store_get(self->store, self->ids[i]);
        if (!t || tq_task_finished(t))
            tq_peer_pending_add(p, self->ids[i]); /* RESULTS at the end of the iteration */
        else
            tq_peer_wait_add(p, t);
    }
}

static void send_kills(tq_loop_t *self, size_t nk) {
    for (size_t i = 0; i < nk; i++) {
        tq_peer_t *w = self->kill_to[i];
        if (!w)
            continue;
        tq_out_begin(&self->out, TQ_MSG_KILL);
        for (size_t k = i; k < nk; k++)
            if (self->kill_to[k] == w) {
                tq_out_lease(&self->out, self->kills[k].id, self->kills[k].attempt);
                self->kill_to[k] = NULL;
            }
        send_peer(self, w);
    }
}

static void on_cancel(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body, size_t nparts) {
    uint32_t req = 0;
    size_t n = 0, nk = 0;
    tq_error_t err;
    if (tq_decode_ids(body, nparts, &req, self->ids, &n, &err) < 0) {
        warn_peer(self, p, p->address, "bad CANCEL: %s", err.msg);
        reply_error(self, rid_of(p), err.code, req, err.msg);
        return;
    }
    int64_t now = tq_wall_ms();
    uint8_t outcome[TQ_MAX_BATCH];
    for (size_t i = 0; i < n; i++) {
        tq_task_t *t = tq_store_get(self->store, self->ids[i]);
        if (!t) {
            outcome[i] = TQ_CANCEL_UNKNOWN;
            continue;
        }
        if (tq_task_finished(t)) {
            outcome[i] = TQ_CANCEL_FINISHED;
            continue;
        }
        if (t->state == TQ_TASK_LEASED) {
            tq_peer_t *w = t->worker;
            self->kill_to[nk] = w;
            self->kills[nk].id = t->id;
            self->kills[nk].attempt = t->attempt;
            nk++;
            tq_peer_lease_remove(w, t);
        }
        tq_store_finish(self->store, t, TQ_TASK_CANCELLED, NULL, 0, now);
        tq_peer_notify_waiters(t);
        outcome[i] = TQ_CANCEL_OK;
    }
    tq_out_begin_cancel_ack(&self->out, req);
    for (size_t i = 0; i < n; i++)
        tq_out_cancel_item(&self->out, self->ids[i], outcome[i]);
    send_peer(self, p);
    send_kills(self, nk);
}

static void on_status(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body, size_t nparts) {
    void *j = NULL;
    tq_error_t err;
    if (tq_decode_json(body, nparts, TQ_MAX_JSON, &j, &err) < 0) {
        warn_peer(self, p, p->address, "bad STATUS: %s", err.msg);
        reply_error(self, rid_of(p), err.code, 0, err.msg);
        return;
    }
    cJSON_Delete(j);
    tq_status_info_t info = {self->endpoint, self->start_ms, self->late_results};
    cJSON *doc = tq_status_build(self->status, self->store, self->peers, &info, tq_mono_ms());
    tq_out_json(&self->out, TQ_MSG_STATUS_REPLY, doc);
    cJSON_Delete(doc);
    send_peer(self, p);
}

/* ---- worker messages ---------------------------------------------------- */

static void on_result(tq_loop_t *self, tq_peer_t *w, tq_bytes_t body, const tq_bytes_t *parts,
                      size_t nparts) {
    uint16_t credit = 0;
    size_t n = 0;
    tq_error_t err;
    if (tq_decode_result(body, parts, nparts, self->cfg.max_payload, &credit, self->results, &n,
                         &err) < 0) {
        warn_peer(self, w, w->address, "bad RESULT: %s", err.msg);
        reply_error(self, rid_of(w), err.code, 0, err.msg);
        return;
    }
    int64_t now = tq_wall_ms();
    for (size_t i = 0; i < n; i++) {
        const tq_result_item_t *r = &self->results[i];
        tq_task_t *t = tq_store_get(self->store, r->id);
        if (!t || t->state != TQ_TASK_LEASED || t->worker != w || t->attempt != r->attempt) {
            self->late_results++;
            tq_debug("late result for task %" PRIu64 " attempt %" PRIu32 " from %s", r->id,
                     r->attempt, w->name);
            continue;
        }
        tq_peer_lease_remove(w, t);
        w->done++;
        if (r->status != TQ_RUN_OK && tq_task_can_retry(t)) {
            tq_debug("task %" PRIu64 " attempt %" PRIu32 " %s on %s: retry %u of %u", t->id,
                     t->attempt, r->status == TQ_RUN_TIMEOUT ? "timed out" : "failed", w->name,
                     (unsigned)t->retried + 1, (unsigned)t->retries);
            tq_store_retry(self->store, t);
            continue;
        }
        tq_store_finish(self->store, t, r->status == TQ_RUN_OK ? TQ_TASK_DONE : TQ_TASK_FAILED,
                        r->data.data, r->data.len, now);
        tq_peer_notify_waiters(t);
    }
    /* A RESULT with count 0 is fine: it only gives credit back (e.g. for
     * a KILLed run). A draining worker's credit stays 0. */
    if (!w->draining) {
        uint32_t c = w->credit + credit;
        w->credit = c > w->slots ? w->slots : c;
    }
    self->sched_dirty = 1;
}

static void on_release(tq_loop_t *self, tq_peer_t *w, tq_bytes_t body, size_t nparts) {
    size_t n = 0;
    tq_error_t err;
    if (tq_decode_leases(body, nparts, self->leases, &n, &err) < 0) {
        warn_peer(self, w, w->address, "bad RELEASE: %s", err.msg);
        reply_error(self, rid_of(w), err.code, 0, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tq_task_t *t = tq_store_get(self->store, self->leases[i].id);
        if (!t || t->state != TQ_TASK_LEASED || t->worker != w ||
            t->attempt != self->leases[i].attempt)
            continue; /* already cancelled or requeued: nothing to give back */
        tq_peer_lease_remove(w, t);
        tq_store_requeue(self->store, t, 1);
    }
    self->sched_dirty = 1;
}

/* ---- dispatch ----------------------------------------------------------- */

/* Scheduler callback: one DISPATCH for worker w. If it cannot be sent,
 * the leases are undone (the tasks keep their place and attempt). */
static void emit_dispatch(void *arg, tq_peer_t *w, tq_task_t **tasks, size_t n) {
    tq_loop_t *self = arg;
    tq_out_begin(&self->out, TQ_MSG_DISPATCH);
    for (size_t i = 0; i < n; i++) {
        tq_dispatch_item_t d = {tasks[i]->id, tasks[i]->attempt, tasks[i]->timeout_ms,
                                tq_bytes_str(tasks[i]->fn),
                                {tasks[i]->payload, tasks[i]->payload_len}};
        tq_out_dispatch_item(&self->out, &d);
    }
    if (send_peer(self, w) == 0) {
        /* Run timeout at the master: the worker stops the run itself at
         * timeout_ms; if it has said nothing by timeout + 2 heartbeats,
         * the lease expires (expire_leases). */
        int64_t now = tq_mono_ms();
        for (size_t i = 0; i < n; i++)
            if (tasks[i]->timeout_ms > 0)
                tq_store_set_deadline(self->store, tasks[i],
                                      now + (int64_t)tasks[i]->timeout_ms +
                                          2 * self->cfg.heartbeat_ms);
        return;
    }
    if (errno == EAGAIN)
        w->stalled = 1;
    for (size_t i = 0; i < n; i++) {
        tq_peer_lease_remove(w, tasks[i]);
        tq_store_unlease(self->store, tasks[i]);
    }
    w->credit += (uint32_t)n;
}

/* ---- RESULTS to clients ------------------------------------------------- */

static void flush_results(tq_loop_t *self, tq_peer_t *c) {
    size_t i = 0;
    int64_t now = tq_wall_ms();
    while (i < c->npending) {
        size_t first = i;
        tq_out_begin(&self->out, TQ_MSG_RESULTS);
        while (i < c->npending && !tq_out_full(&self->out)) {
            tq_task_t *t = tq_store_get(self->store, c->pending[i]);
            tq_outcome_t o = {c->pending[i], TQ_ST_UNKNOWN, 0, {NULL, 0}};
            if (t && tq_task_finished(t)) {
                o.status = tq_task_wire_status(t);
                o.attempts = t->attempt;
                o.data.data = t->data;
                o.data.len = t->data_len;
            }
            tq_out_outcome(&self->out, &o);
            i++;
        }
        if (send_peer(self, c) < 0)
            break; /* EAGAIN: results stay stored, the client will WAIT again */
        for (size_t k = first; k < i; k++) {
            tq_task_t *t = tq_store_get(self->store, c->pending[k]);
            if (t && tq_task_finished(t))
                tq_store_fetched(self->store, t, now);
        }
    }
    c->npending = 0;
}

/* ---- dispatching one message -------------------------------------------- */

static int role_ok(tq_loop_t *self, tq_peer_t *p, int type, tq_role_t need) {
    if (p->role == need)
        return 1;
    char msg[128];
    snprintf(msg, sizeof msg, "%s is not allowed from a %s", tq_msg_type_name(type),
             p->role == TQ_ROLE_WORKER ? "worker" : "client");
    warn_peer(self, p, p->address, "%s", msg);
    reply_error(self, rid_of(p), TQ_ERR_WRONG_ROLE, 0, msg);
    return 0;
}

/* The request id of a SUBMIT/WAIT/CANCEL body, for an ERROR's ref. */
static uint32_t body_req(int type, tq_bytes_t body) {
    uint32_t v = 0;
    if ((type == TQ_MSG_SUBMIT || type == TQ_MSG_WAIT || type == TQ_MSG_CANCEL) && body.len >= 4)
        v = (uint32_t)body.data[0] | (uint32_t)body.data[1] << 8 | (uint32_t)body.data[2] << 16 |
            (uint32_t)body.data[3] << 24;
    return v;
}

static void handle(tq_loop_t *self) {
    tq_bytes_t rid = tq_in_routing_id(self->in);
    if (rid.len == 0)
        return;
    const char *addr = tq_in_peer_address(self->in);
    tq_peer_t *p = tq_peers_find(self->peers, rid);
    int64_t now = tq_mono_ms();
    if (p)
        p->last_seen_ms = now;
    int type = 0;
    tq_bytes_t body;
    tq_error_t err;
    if (tq_in_head(self->in, &type, &body, &err) < 0) {
        warn_peer(self, p, addr, "malformed message: %s", err.msg);
        reply_error(self, rid, err.code, 0, err.msg);
        return;
    }
    const tq_bytes_t *parts = tq_in_parts(self->in);
    size_t nparts = tq_in_nparts(self->in);
    if (type == TQ_MSG_HELLO) {
        on_hello(self, rid, addr, body, nparts);
        return;
    }
    if (!p) {
        if (type == TQ_MSG_BYE || type == TQ_MSG_ERROR) {
            /* nothing to undo, and never answer an ERROR with an ERROR */
            tq_debug("%s from unregistered peer %s", tq_msg_type_name(type), addr);
            return;
        }
        if (type == TQ_MSG_HEARTBEAT) /* e.g. a peer that has not noticed a restart */
            tq_debug("%s from unregistered peer %s", tq_msg_type_name(type), addr);
        else
            warn_peer(self, NULL, addr, "%s before HELLO", tq_msg_type_name(type));
        reply_error(self, rid, TQ_ERR_NOT_REGISTERED, body_req(type, body),
                    "not registered: send HELLO first");
        return;
    }
    switch (type) {
    case TQ_MSG_HEARTBEAT:
    case TQ_MSG_BYE:
    case TQ_MSG_DRAIN:
        if (tq_decode_empty(body, nparts, &err) < 0) {
            warn_peer(self, p, addr, "bad %s: %s", tq_msg_type_name(type), err.msg);
            reply_error(self, rid, err.code, 0, err.msg);
            return;
        }
        if (type == TQ_MSG_BYE) {
            peer_forget(self, &p, "left");
        } else if (type == TQ_MSG_DRAIN && role_ok(self, p, type, TQ_ROLE_WORKER)) {
            p->draining = 1;
            p->credit = 0;
            tq_info("worker %s is draining (%zu task%s running)", p->name, p->nleased,
                    p->nleased == 1 ? "" : "s");
        }
        return;
    case TQ_MSG_ERROR: {
        void *j = NULL;
        if (tq_decode_json(body, nparts, TQ_MAX_JSON, &j, &err) == 0) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive((cJSON *)j, "message");
            warn_peer(self, p, addr, "sent ERROR: %s",
                      cJSON_IsString(m) ? m->valuestring : "(no message)");
            cJSON_Delete(j);
        } else {
            warn_peer(self, p, addr, "sent a malformed ERROR: %s", err.msg);
        }
        return; /* never answer an ERROR with an ERROR */
    }
    case TQ_MSG_STATUS:
        if (role_ok(self, p, type, TQ_ROLE_CLIENT))
            on_status(self, p, body, nparts);
        return;
    case TQ_MSG_SUBMIT:
        if (role_ok(self, p, type, TQ_ROLE_CLIENT))
            on_submit(self, p, body, parts, nparts);
        return;
    case TQ_MSG_WAIT:
        if (role_ok(self, p, type, TQ_ROLE_CLIENT))
            on_wait(self, p, body, nparts);
        return;
    case TQ_MSG_CANCEL:
        if (role_ok(self, p, type, TQ_ROLE_CLIENT))
            on_cancel(self, p, body, nparts);
        return;
    case TQ_MSG_RESULT:
        if (role_ok(self, p, type, TQ_ROLE_WORKER))
            on_result(self, p, body, parts, nparts);
        return;
    case TQ_MSG_RELEASE:
        if (role_ok(self, p, type, TQ_ROLE_WORKER))
            on_release(self, p, body, nparts);
        return;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "%s is sent by the master, not to it", tq_msg_type_name(type));
        warn_peer(self, p, addr, "%s", msg);
        reply_error(self, rid, TQ_ERR_WRONG_ROLE, 0, msg);
        return;
    }
    }
}

/* ---- timers ------------------------------------------------------------- */

/* End at most LOOP_EXPIRE_STEPS leases whose deadline (run timeout + 2
 * heartbeat intervals) passed: KILL the attempt on its worker, then
 * retry the task if it has retries left, else it fails as timed out. */
static void expire_leases(tq_loop_t *self, int64_t now) {
    size_t nk = 0;
    int64_t wall = tq_wall_ms();
    tq_task_t *t;
    while (nk < LOOP_EXPIRE_STEPS && (t = tq_store_overdue(self->store, now)) != NULL) {
        tq_peer_t *w = t->worker;
        self->kill_to[nk] = w;
        self->kills[nk].id = t->id;
        self->kills[nk].attempt = t->attempt;
        nk++;
        tq_peer_lease_remove(w, t);
        char why[256];
        snprintf(why, sizeof why,
                 "timed out: no result from worker %s within %.3g s (run timeout + 2 heartbeats)",
                 w->name, (double)((int64_t)t->timeout_ms + 2 * self->cfg.heartbeat_ms) / 1000.0);
        tq_info("task %" PRIu64 " attempt %" PRIu32 " lease expired: %s", t->id, t->attempt, why);
        if (tq_task_can_retry(t)) {
            tq_store_retry(self->store, t);
        } else {
            tq_store_finish(self->store, t, TQ_TASK_FAILED, why, strlen(why), wall);
            tq_peer_notify_waiters(t);
        }
        self->sched_dirty = 1;
    }
    send_kills(self, nk);
}

static void heartbeat(tq_loop_t *self, int64_t now) {
    for (size_t i = tq_peers_count(self->peers); i-- > 0;) {
        tq_peer_t *p = tq_peers_at(self->peers, i);
        int64_t silent = now - p->last_seen_ms;
        if (silent > self->cfg.heartbeat_timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "lost (no message for %.1f s)", (double)silent / 1000.0);
            peer_forget(self, &p, why);
            continue;
        }
        tq_out_begin(&self->out, TQ_MSG_HEARTBEAT);
        send_peer(self, p);
    }
    tq_status_sample(self->status, self->store, now);
}

/* ---- public --------------------------------------------------------------- */

tq_loop_t *tq_loop_new(void *ctx, const tq_loop_cfg_t *cfg, const tq_curve_keys_t *keys,
                       char *err, size_t errlen) {
    tq_loop_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    self->cfg = *cfg;
    tq_strlcpy(self->endpoint, cfg->endpoint, sizeof self->endpoint);
    self->cfg.endpoint = self->endpoint;
    tq_store_cfg_t scfg = {(uint64_t)tq_wall_us(), cfg->max_tasks, cfg->result_ttl_ms,
                           cfg->unfetched_ttl_ms, cfg->key_retention_ms};
    self->store = tq_store_new(&scfg);
    self->peers = tq_peers_new();
    self->start_ms = tq_mono_ms();
    self->status = tq_status_new(self->start_ms);
    self->in = tq_in_new();
    tq_out_init(&self->out);

    self->router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    int64_t maxmsg = (int64_t)TQ_PAYLOAD_HARD_MAX + 65536;
    if (!self->router || zmq_setsockopt(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
        zmq_setsockopt(self->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_setsockopt(self->router, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        tq_curve_server(self->router, keys) < 0) {
        snprintf(err, errlen, "cannot set up the ROUTER socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int have_monitor = zmq_socket_monitor(self->router, MONITOR_ENDPOINT, events) == 0;
    if (!have_monitor)
        tq_warn("no socket monitor (%s): failed handshakes will not be logged",
                zmq_strerror(errno));
    /* The ZAP handler must be up before the first peer can connect. */
    self->auth = tq_auth_new(ctx, keys, have_monitor ? MONITOR_ENDPOINT : NULL, err, errlen);
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
    self->started = 1;
    return self;
fail:
    tq_loop_destroy(&self);
    return NULL;
}

int tq_loop_run(tq_loop_t *self, int stop_fd) {
    int64_t now = tq_mono_ms();
    self->next_hb_ms = now + self->cfg.heartbeat_ms;
    self->next_sweep_ms = now + LOOP_SWEEP_MS;
    for (;;) {
        now = tq_mono_ms();
        int64_t next = self->next_hb_ms < self->next_sweep_ms ? self->next_hb_ms
                                                              : self->next_sweep_ms;
        long timeout = next > now ? (long)(next - now) : 0;
        /* Work left over (a send failed; tasks went back): retry soon,
         * without spinning on a worker whose pipe is full. */
        if (self->sched_dirty && timeout > LOOP_RETRY_MS)
            timeout = LOOP_RETRY_MS;
        zmq_pollitem_t items[2] = {{self->router, 0, ZMQ_POLLIN, 0}, {NULL, stop_fd, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, stop_fd >= 0 ? 2 : 1, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ETERM)
                return 0;
            tq_error("poll failed: %s", zmq_strerror(errno));
            return -1;
        }
        if (stop_fd >= 0 && (items[1].revents & ZMQ_POLLIN))
            return 0;
        if (items[0].revents & ZMQ_POLLIN) {
            for (int i = 0; i < LOOP_MAX_MSGS; i++) {
                if (tq_in_recv(self->in, self->router, 1, ZMQ_DONTWAIT) < 0) {
                    if (errno != EAGAIN && errno != EINTR) {
                        tq_error("receive failed: %s", zmq_strerror(errno));
                        return -1;
                    }
                    break;
                }
                handle(self);
            }
        }
        now = tq_mono_ms();
        if (now >= self->next_hb_ms) {
            expire_leases(self, now);
            heartbeat(self, now);
            self->next_hb_ms = now + self->cfg.heartbeat_ms;
        }
        if (now >= self->next_sweep_ms) {
            size_t n = tq_store_sweep(self->store, tq_wall_ms(), LOOP_SWEEP_STEPS);
            if (n)
                tq_debug("expired %zu finished task%s or idempotency key%s", n,
                         n == 1 ? "" : "s", n == 1 ? "" : "s");
            /* more overdue: come back at once, after other work */
            self->next_sweep_ms = n == LOOP_SWEEP_STEPS ? now : now + LOOP_SWEEP_MS;
        }
        reap_gone(self);
        if (self->sched_dirty) {
            self->sched_dirty = 0;
            tq_sched_run(self->store, self->peers, emit_dispatch, self);
        }
        for (size_t i = 0; i < tq_peers_count(self->peers); i++) {
            tq_peer_t *p = tq_peers_at(self->peers, i);
            if (p->npending)
                flush_results(self, p);
            if (p->stalled) {
                p->stalled = 0;
                self->sched_dirty = 1; /* try it again next iteration */
            }
        }
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
    /* Leases and waits are plain memory: drop them before freeing. */
    if (self->peers) {
        for (size_t i = 0; i < tq_peers_count(self->peers); i++) {
            tq_peer_t *p = tq_peers_at(self->peers, i);
            while (p->nleased) {
                tq_task_t *t = p->leased[p->nleased - 1];
                tq_peer_lease_remove(p, t);
                tq_store_requeue(self->store, t, 0);
            }
            if (p->role == TQ_ROLE_CLIENT)
                tq_peer_drop_waits(p, self->store);
        }
    }
    tq_peers_destroy(&self->peers);
    tq_store_destroy(&self->store);
    tq_status_destroy(&self->status);
    tq_in_destroy(&self->in);
    tq_out_free(&self->out);
    free(self);
    *self_p = NULL;
}
