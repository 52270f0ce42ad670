/* handlers.c - the master's answer to each message a peer sends: one
 * handler per type (HELLO, HEARTBEAT, BYE, DRAIN, ERROR, STATUS, SUBMIT,
 * WAIT, CANCEL, RESULT, RELEASE), with the ERROR replies for bad input.
 * See handlers.h. Sending is the outbox's, peers leaving the roster's,
 * state changes the engine's.
 *
 * Order of checks for one message: routing id, header, HELLO (any time),
 * registered, type known and meant for the master, role, then the body. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "handlers.h"
#include "now.h"
#include "tq_ctl.h"
#include "tq_log.h"
#include "tq_util.h"

/* A GET waiting for an item: its peer (by routing id and pointer, the
 * pointer checked against the peer table before use), its request. */
typedef struct {
    tq_peer_t *p;
    uint8_t rid[TQ_MAX_ROUTING_ID];
    size_t rid_len;
    uint32_t req;
    uint16_t max, nq;
    int64_t deadline_ms; /* monotonic */
    uint8_t names[TQ_MAX_GET_QUEUES][TQ_MAX_NAME];
    uint8_t lens[TQ_MAX_GET_QUEUES];
} parked_get_t;

struct tq_handlers {
    tq_engine_t *engine;
    tq_store_t *store; /* the engine's: read, and names interned */
    tq_persist_t *persist;
    tq_peers_t *peers;
    tq_outbox_t *outbox;
    tq_roster_t *roster;
    tq_status_t *status;
    tq_loop_cfg_t cfg;
    const char *endpoint;
    int64_t start_ms;
    int *wake;
    tq_policy_t *policy;
    tq_admin_deps_t admin;
    uint64_t late_results;
    /* decode buffers, TQ_MAX_BATCH records each: one message's, filled
     * by its decoder and read by its handler only */
    tq_task_spec_t specs[TQ_MAX_BATCH];
    uint64_t ids[TQ_MAX_BATCH];
    uint8_t added[TQ_MAX_BATCH];
    tq_result_item_t results[TQ_MAX_BATCH];
    tq_lease_ref_t leases[TQ_MAX_BATCH];
    tq_put_item_t puts[TQ_MAX_BATCH];
    tq_item_t *got[TQ_MAX_BATCH];
    /* parked GETs (PROTOCOL.md GET), in arrival order */
    parked_get_t *gets;
    size_t ngets, gets_cap;
    int items_ready; /* an item went into a plain queue: try the parked GETs */
};

typedef tq_handlers_t hctx_t;

/* The routing id of a registered peer (points into p). */
static tq_bytes_t rid_of(const tq_peer_t *p) { return (tq_bytes_t){p->rid, p->rid_len}; }

/* One message from the ROUTER, as tq_handlers_handle found it. */
typedef struct {
    tq_bytes_t rid;
    const char *addr; /* the peer's network address, for the log */
    const char *user; /* the connection's ZAP User-Id ("" without --allow-keys) */
    int fd;           /* the connection's fd (ZMQ_SRCFD), or -1 */
    int type;
    tq_bytes_t body;
    const tq_bytes_t *parts;
    size_t nparts;
} msg_t;

/* A handler for a registered peer p. */
typedef void handler_fn(hctx_t *self, tq_peer_t *p, const msg_t *m);

/* Log a body that did not decode and answer it with an ERROR (ref req).
 * addr is the address to log. */
static void bad_body(hctx_t *self, tq_peer_t *p, const char *addr, const msg_t *m, uint32_t req,
                     const tq_err_t *err)
{
    tq_roster_warn(self->roster, p, addr, "bad %s: %s", tq_msg_type_name(m->type), err->msg);
    tq_outbox_error(self->outbox, m->rid, err->code, req, err->msg);
}

/* 1 if p has the role need, else 0 after a WRONG_ROLE error reply. */
static int role_ok(hctx_t *self, tq_peer_t *p, int type, tq_role_t need)
{
    if (p->role == need)
        return 1;
    char msg[128];
    snprintf(msg, sizeof msg, "%s is not allowed from a %s", tq_msg_type_name(type),
             p->role == TQ_ROLE_WORKER ? "worker" : "client");
    tq_roster_warn(self->roster, p, p->address, "%s", msg);
    tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_WRONG_ROLE, 0, msg);
    return 0;
}

/* ---- identities and permissions (access.h) ------------------------------ */

/* 1 when p's rights are limited: a key-pair identity that is not admin. */
static int limited(const tq_peer_t *p) { return p->ident && p->ident->role != TQ_IDENT_ADMIN; }

/* Refuse a request of p (ref req) with ERROR FORBIDDEN; the message
 * names the identity and what was refused, and is logged (rate-limited
 * per peer and in all, like every warning about a peer). */
static void forbid(hctx_t *self, tq_peer_t *p, tq_bytes_t rid, const char *addr, uint32_t req,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void forbid(hctx_t *self, tq_peer_t *p, tq_bytes_t rid, const char *addr, uint32_t req,
                   const char *fmt, ...)
{
    char msg[TQ_MAX_ERROR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tq_roster_warn(self->roster, p, addr, "refused: %s", msg);
    tq_outbox_error(self->outbox, rid, TQ_ERR_FORBIDDEN, req, msg);
    self->policy->forbidden++;
}

/* A name of a message as a C string (names are at most TQ_MAX_NAME). */
static const char *cstr(tq_bytes_t b, char buf[TQ_MAX_NAME + 1])
{
    size_t n = b.len < TQ_MAX_NAME ? b.len : TQ_MAX_NAME;
    memcpy(buf, b.data, n);
    buf[n] = '\0';
    return buf;
}

/* 1 if p may use queue q (a valid name); else 0 after an ERROR
 * FORBIDDEN naming the queue and the identity (what: "SUBMIT"). */
static int queue_ok(hctx_t *self, tq_peer_t *p, uint32_t req, const char *what, const char *q)
{
    if (!limited(p) || tq_ident_may_queue(p->ident, q))
        return 1;
    char allowed[160];
    tq_ident_list_text(p->ident->queues, p->ident->nqueues, allowed, sizeof allowed);
    forbid(self, p, rid_of(p), p->address, req,
           "%s: identity '%s' may not use queue '%s' (its queues: %s)", what, p->ident_name, q,
           allowed);
    return 0;
}

/* 1 if task id is p's to see, wait for, ACK or cancel: p is not limited,
 * or p's identity submitted it (recorded with the task, journaled), or
 * nobody is recorded as its submitter (the shared key submitted it) and
 * p may use its queue, or there is no such task (answered "unknown"). */
static int task_mine(hctx_t *self, const tq_peer_t *p, uint64_t id)
{
    if (!limited(p))
        return 1;
    const char *o = tq_idmap_get(self->policy->owners, id);
    if (o)
        return o == p->ident_owner;
    tq_task_t *t = tq_store_get(self->store, id);
    return !t || tq_ident_may_queue(p->ident, tq_queue_name(tq_task_queue(t)));
}

/* 1 if every id of ids[0..n) is p's (task_mine); else 0 after an ERROR
 * FORBIDDEN naming the first that is not. */
static int tasks_mine(hctx_t *self, tq_peer_t *p, const msg_t *m, uint32_t req, const uint64_t *ids,
                      size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!task_mine(self, p, ids[i])) {
            forbid(self, p, m->rid, p->address, req,
                   "%s: task %" PRIu64 " was not submitted by identity '%s'",
                   tq_msg_type_name(m->type), ids[i], p->ident_name);
            return 0;
        }
    return 1;
}

/* ---- HELLO ------------------------------------------------------------- */

/* What a valid HELLO says. */
typedef struct {
    tq_role_t role;
    const char *name; /* points into the tq_hello_t */
    uint32_t slots;
    int packed;                        /* it takes packed messages (TQ_TYPE_PACKED) */
    uint32_t prefetch;                 /* tasks it takes beyond its slots */
    uint32_t busy;                     /* runs of an earlier connection it still holds */
    int adaptive;                      /* it sizes its prefetch itself: first credit without it */
    uint64_t instance;                 /* "instance", or 0 when not given */
    const char *fns[TQ_MAX_FUNCTIONS]; /* interned, no duplicates */
    size_t nfns;
    uint32_t new_names; /* of fns, created for a connection not registered yet */
} hello_t;

/* The error text for a peer past its new-name budget. */
#define NAME_BUDGET_MSG                                                                            \
    "too many new queue and function names from this connection (at most %d at once, then %d "     \
    "a second): use fewer distinct names"

/* Intern name for peer p: a name not known yet takes one of p's tokens
 * (tq_peer_take_name). Returns the interned name, or NULL with a message
 * in msg when p's budget or the name table is full (ERROR TOO_MANY). */
static const char *intern_for(hctx_t *self, tq_peer_t *p, tq_bytes_t name, char *msg, size_t msglen)
{
    const char *in = tq_store_lookup(self->store, name);
    if (in)
        return in;
    if (tq_peer_take_name(p, tq_now().mono_ms) < 0) {
        snprintf(msg, msglen, NAME_BUDGET_MSG, TQ_PEER_NEW_NAMES_BURST, TQ_PEER_NEW_NAMES_PER_S);
        return NULL;
    }
    in = tq_store_intern(self->store, name);
    if (!in)
        snprintf(msg, msglen, "the master's name table is full (%d queue and function names)",
                 TQ_STORE_MAX_NAMES);
    return in;
}

/* Log and answer a refused HELLO. */
static void hello_refuse(hctx_t *self, tq_peer_t *p, const msg_t *m, int code, const char *msg)
{
    if (code == TQ_ERR_FORBIDDEN)
        self->policy->forbidden++;
    tq_roster_warn(self->roster, p, m->addr, "HELLO refused: %s", msg);
    tq_outbox_error(self->outbox, m->rid, code, 0, msg);
}

/* Intern a worker's functions (checked by tq_hello_decode) into h.
 * Returns 0, or -1 after refusing the HELLO. */
static int hello_functions(hctx_t *self, tq_peer_t *p, const msg_t *m, const tq_hello_t *w,
                           hello_t *h)
{
    char msg[TQ_MAX_ERROR_TEXT];
    for (size_t i = 0; i < w->nfunctions; i++) {
        tq_bytes_t fn = tq_bytes_str(w->functions[i]);
        char why[TQ_MAX_ERROR_TEXT - 16];
        if (!p && !tq_store_name_known(self->store, fn))
            h->new_names++; /* charged once it is registered (hello_register) */
        const char *in = p ? intern_for(self, p, fn, why, sizeof why)
                           : tq_store_intern(self->store, fn);
        if (!in) {
            snprintf(msg, sizeof msg, "HELLO: %s", p ? why : "the master's name table is full");
            hello_refuse(self, p, m, TQ_ERR_TOO_MANY, msg);
            return -1;
        }
        int dup = 0;
        for (size_t k = 0; k < h->nfns && !dup; k++)
            dup = h->fns[k] == in;
        if (!dup)
            h->fns[h->nfns++] = in;
    }
    return 0;
}

/* Check a HELLO (tq_hello_decode: role, name, a worker's slots,
 * instance and functions) into h, the functions interned. Returns 0, or
 * -1 after refusing the HELLO. */
static int hello_parse(hctx_t *self, tq_peer_t *p, const msg_t *m, tq_hello_t *w, hello_t *h)
{
    tq_err_t err;
    if (tq_hello_decode(m->body, m->nparts, w, &err) < 0) {
        hello_refuse(self, p, m, err.code, err.msg);
        return -1;
    }
    h->role = w->worker ? TQ_ROLE_WORKER : TQ_ROLE_CLIENT;
    h->name = w->name;
    h->packed = w->packed;
    h->slots = w->slots;
    h->prefetch = w->prefetch;
    h->busy = w->busy;
    h->adaptive = w->adaptive;
    h->instance = w->instance_id;
    h->nfns = 0;
    h->new_names = 0;
    return w->worker ? hello_functions(self, p, m, w, h) : 0;
}

/* Register the peer of a valid HELLO, replacing old (its earlier
 * registration, or NULL). Returns the new peer. */
static tq_peer_t *hello_register(hctx_t *self, tq_peer_t *old, const msg_t *m, const hello_t *h,
                                 const tq_ident_t *id)
{
    int64_t now = tq_now().mono_ms;
    /* the new-name budget is the connection's: it outlives a re-HELLO */
    uint32_t tokens = old ? old->name_tokens : TQ_PEER_NEW_NAMES_BURST;
    int64_t refill = old ? old->name_refill_ms : now;
    if (old)
        tq_roster_forget(self->roster, &old, "re-registered");
    tq_peer_t *p = tq_peers_add(self->peers, m->rid, h->role, now);
    p->name_tokens = tokens > h->new_names ? tokens - h->new_names : 0;
    p->name_refill_ms = refill;
    tq_strlcpy(p->name, h->name, sizeof p->name);
    tq_strlcpy(p->address, m->addr, sizeof p->address);
    tq_strlcpy(p->ident_name, m->user, sizeof p->ident_name);
    p->ident = id;
    p->ident_owner = id ? id->owner : NULL;
    tq_connref_get(m->fd, &p->conn);
    /* ", identity NAME" in the join lines with --allow-keys */
    char idt[TQ_IDENT_NAME_MAX + 16] = "";
    if (m->user[0])
        snprintf(idt, sizeof idt, ", identity %s", m->user);
    p->packed = h->packed;
    if (h->role == TQ_ROLE_WORKER) {
        p->slots = h->slots;
        p->prefetch = h->prefetch;
        /* Without an instance id its results count only on this
         * registration: a random id no other peer can name. */
        p->instance = h->instance;
        while (!p->instance)
            randombytes_buf(&p->instance, sizeof p->instance);
        /* the busy ones come back as RESULT credit; an adaptive worker
         * starts at its free slots and gives the prefetch it wants in
         * RESULT credit as it measures (PROTOCOL.md 6) */
        uint32_t first = h->slots + (h->adaptive ? 0 : h->prefetch);
        p->credit = first > h->busy ? first - h->busy : 0;
        tq_peer_set_fns(p, h->fns, h->nfns);
        for (size_t i = 0; i < h->nfns; i++) /* released by tq_roster_forget */
            tq_store_name_hold(self->store, h->fns[i]);
        char ft[256];
        tq_peer_fns_text(p, ft, sizeof ft);
        if (tq_roster_line(self->roster, TQ_LOG_INFO, p->address))
            tq_info("worker %s joined (address %s%s, slots %" PRIu32 ", prefetch %" PRIu32
                    ", functions %s)",
                    p->name, p->address, idt, p->slots, p->prefetch, ft);
        *self->wake = 1;
    } else if (tq_roster_line(self->roster, TQ_LOG_DEBUG, p->address)) {
        tq_debug("client %s joined (address %s%s)", p->name, p->address, idt);
    }
    return p;
}

/* With --allow-keys: the identity of the HELLO's key (*id; NULL for the
 * shared pair), its role checked against the HELLO's, and a worker's
 * functions cut to those it may serve (the others are dropped, with a
 * warning). Returns 0, or -1 after refusing the HELLO (FORBIDDEN). */
static int hello_identity(hctx_t *self, tq_peer_t *p, const msg_t *m, hello_t *h,
                          const tq_ident_t **id)
{
    *id = NULL;
    if (!self->policy->allow || strcmp(m->user, TQ_IDENT_SHARED) == 0)
        return 0;
    char msg[TQ_MAX_ERROR_TEXT];
    const tq_ident_t *i = tq_allow_find(self->policy->allow, m->user);
    if (!i) {
        snprintf(msg, sizeof msg, "HELLO: the key of '%s' is no longer in --allow-keys", m->user);
        hello_refuse(self, p, m, TQ_ERR_FORBIDDEN, msg);
        return -1;
    }
    int worker = h->role == TQ_ROLE_WORKER;
    if (worker != (i->role == TQ_IDENT_WORKER)) {
        snprintf(msg, sizeof msg, "HELLO: identity '%s' is a%s %s: it may not connect as a %s",
                 i->name, i->role == TQ_IDENT_ADMIN ? "n" : "", tq_ident_role_name(i->role),
                 worker ? "worker" : "client");
        hello_refuse(self, p, m, TQ_ERR_FORBIDDEN, msg);
        return -1;
    }
    size_t k = 0;
    char dropped[200] = "";
    size_t doff = 0;
    for (size_t f = 0; f < h->nfns; f++) {
        if (tq_ident_may_fn(i, h->fns[f])) {
            h->fns[k++] = h->fns[f];
            continue;
        }
        if (doff < sizeof dropped) {
            int n = snprintf(dropped + doff, sizeof dropped - doff, "%s%s", doff ? "," : "",
                             h->fns[f]);
            doff = n < 0 ? sizeof dropped : doff + (size_t)n;
        }
    }
    if (worker && k < h->nfns) {
        char allowed[160];
        tq_ident_list_text(i->fns, i->nfns, allowed, sizeof allowed);
        if (k == 0) {
            snprintf(msg, sizeof msg,
                     "HELLO: identity '%s' may serve none of its functions (%s; allowed: %s)",
                     i->name, dropped, allowed);
            hello_refuse(self, p, m, TQ_ERR_FORBIDDEN, msg);
            return -1;
        }
        tq_roster_warn(self->roster, p, m->addr,
                       "worker identity '%s' may not serve %s (allowed: %s): not given those tasks",
                       i->name, dropped, allowed);
        h->nfns = k;
    }
    *id = i;
    return 0;
}

static void send_welcome(hctx_t *self, tq_peer_t *p)
{
    tq_welcome_t w = {.version = TQ_PROTO_VERSION,
                      .heartbeat_ms = (uint32_t)self->cfg.heartbeat_ms,
                      .heartbeat_timeout_ms = (uint32_t)self->cfg.heartbeat_timeout_ms,
                      .max_payload = self->cfg.max_payload,
                      .master = "taskq-master " TQ_VERSION,
                      .packed = 1}; /* we take packed messages */
    tq_out_welcome(tq_outbox_msg(self->outbox), &w);
    tq_outbox_send(self->outbox, p);
}

/* 1 if valid HELLO h from registered peer p only changes its slots or
 * prefetch: a worker of the same instance, with the same functions, on
 * the same connection (a worker whose concurrency changed on SIGHUP). */
static int hello_resizes(const tq_peer_t *p, const hello_t *h)
{
    if (!p || p->role != TQ_ROLE_WORKER || h->role != TQ_ROLE_WORKER || !h->instance ||
        h->instance != p->instance || h->nfns != p->nfns)
        return 0;
    for (size_t i = 0; i < h->nfns; i++) {
        int found = 0;
        for (size_t k = 0; k < p->nfns && !found; k++)
            found = p->fns[k] == h->fns[i]; /* both interned */
        if (!found)
            return 0;
    }
    return 1;
}

/* Take a resizing HELLO in place (PROTOCOL.md 12.1): the leases, the
 * credit and a drain or quiet mark stay; the worker gives the difference
 * in RESULT credit, or keeps it back from the next slots freed (so the
 * credit may stay above the new slots + prefetch until it is used). */
static void hello_resize(hctx_t *self, tq_peer_t *p, const hello_t *h)
{
    uint32_t old = p->slots;
    p->slots = h->slots;
    p->prefetch = h->prefetch;
    if (tq_roster_line(self->roster, TQ_LOG_INFO, p->address))
        tq_info("worker %s now has %" PRIu32 " slots (was %" PRIu32 "), prefetch %" PRIu32
                " (address %s, %zu leased)",
                p->name, p->slots, old, p->prefetch, p->address, p->nleased);
    *self->wake = 1;
}

/* HELLO, from anyone at any time (p: the peer's current registration or
 * NULL). A valid one (re-)registers the peer, or resizes it in place,
 * and gets a WELCOME. */
static void on_hello(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_hello_t *w = tq_malloc(sizeof *w); /* 17 KB: not on the loop's stack */
    hello_t h;
    const tq_ident_t *id = NULL;
    if (hello_parse(self, p, m, w, &h) == 0 && hello_identity(self, p, m, &h, &id) == 0) {
        if (hello_resizes(p, &h)) {
            hello_resize(self, p, &h);
            send_welcome(self, p);
        } else {
            send_welcome(self, hello_register(self, p, m, &h, id));
        }
    }
    free(w);
}

/* ---- any registered peer ------------------------------------------------ */

/* HEARTBEAT, BYE and DRAIN have no body. Returns 0, or -1 after an
 * error reply. */
static int body_empty(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_err_t err;
    if (tq_decode_empty(m->body, m->nparts, &err) == 0)
        return 0;
    bad_body(self, p, m->addr, m, 0, &err);
    return -1;
}

/* The peer's last_seen_ms is already updated: nothing else to do. */
static void on_heartbeat(hctx_t *self, tq_peer_t *p, const msg_t *m) { body_empty(self, p, m); }

static void on_bye(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    if (body_empty(self, p, m) == 0)
        tq_roster_forget(self->roster, &p, "left");
}

/* A worker stops taking tasks; those it runs finish normally. The body
 * is checked before the role (so a malformed DRAIN says so). */
static void on_drain(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    if (body_empty(self, p, m) < 0 || !role_ok(self, p, m->type, TQ_ROLE_WORKER))
        return;
    p->draining = 1;
    p->credit = 0;
    if (tq_roster_line(self->roster, TQ_LOG_INFO, p->address))
        tq_info("worker %s is draining (%zu task%s running)", p->name, p->nleased,
                p->nleased == 1 ? "" : "s");
}

/* Logged only: never answer an ERROR with an ERROR. */
static void on_error(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_errmsg_t e;
    tq_err_t err;
    if (tq_errmsg_decode(m->body, m->nparts, &e, &err) == 0)
        tq_roster_warn(self->roster, p, m->addr, "sent ERROR: %s (code %u, ref %u)",
                       e.message[0] ? e.message : "(no message)", (unsigned)e.code,
                       (unsigned)e.ref);
    else
        tq_roster_warn(self->roster, p, m->addr, "sent a malformed ERROR: %s", err.msg);
}

/* ---- client messages ---------------------------------------------------- */

static void on_status(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    /* optional "req" (echoed) and "queue_offset" (the first queue row:
     * pages through many) */
    tq_status_req_t req;
    tq_err_t err;
    if (tq_status_req_decode(m->body, m->nparts, &req, &err) < 0) {
        bad_body(self, p, p->address, m, req.req, &err);
        return;
    }
    tq_persist_stats_t js;
    tq_persist_stats(self->persist, &js);
    tq_status_info_t info = {self->endpoint, self->start_ms, self->late_results, js.fsync,
                             js.bytes,       js.live_bytes,  js.compactions,     js.failed};
    cJSON *doc = tq_status_build(self->status, self->store, self->peers, &info,
                                 (size_t)req.queue_offset, tq_now().mono_ms);
    cJSON_AddNumberToObject(doc, "req", req.req);
    tq_out_json(tq_outbox_msg(self->outbox), TQ_MSG_STATUS_REPLY, doc);
    cJSON_Delete(doc);
    tq_outbox_send(self->outbox, p);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort ids[0..n) and drop repeats; returns the new count. A message
 * naming one id many times costs no more than naming it once. */
static size_t ids_unique(uint64_t *ids, size_t n)
{
    if (n < 2)
        return n;
    qsort(ids, n, sizeof *ids, cmp_u64);
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (ids[i] != ids[k - 1])
            ids[k++] = ids[i];
    return k;
}

/* What the engine's names callback needs for one SUBMIT. */
typedef struct {
    hctx_t *self;
    tq_peer_t *p;
} submit_names_t;

/* tq_engine_names_fn for a SUBMIT: intern the record's function and
 * queue names, charging p's new-name budget (ERROR TOO_MANY when it or
 * the name table is full). */
static int submit_names(void *arg, const tq_task_spec_t *spec, tq_err_t *err)
{
    submit_names_t *sn = arg;
    tq_bytes_t q = spec->queue.len ? spec->queue : tq_bytes_str("default");
    if (intern_for(sn->self, sn->p, spec->fn, err->msg, sizeof err->msg) &&
        intern_for(sn->self, sn->p, q, err->msg, sizeof err->msg))
        return 0;
    err->code = TQ_ERR_TOO_MANY;
    tq_roster_warn(sn->self->roster, sn->p, sn->p->address, "SUBMIT refused: %s", err->msg);
    return -1;
}

/* SUBMIT: a record whose non-empty key is held (within the retention
 * window) gets the existing task's id and stores nothing; two records of
 * one batch with the same key get the same id. The new tasks of a batch
 * are stored whole or not at all. */
static void on_submit(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    uint32_t req = 0;
    uint16_t flags = 0;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_submit(m->body, m->parts, m->nparts, self->cfg.max_payload, &req, &flags,
                         self->specs, &n, &err) < 0) {
        bad_body(self, p, p->address, m, req, &err);
        return;
    }
    if (limited(p))
        for (size_t i = 0; i < n; i++) {
            char qb[TQ_MAX_NAME + 1], fb[TQ_MAX_NAME + 1];
            const char *q = self->specs[i].queue.len ? cstr(self->specs[i].queue, qb) : "default";
            if (!queue_ok(self, p, req, "SUBMIT", q))
                return;
            if (!tq_ident_may_fn(p->ident, cstr(self->specs[i].fn, fb))) {
                char allowed[160];
                tq_ident_list_text(p->ident->fns, p->ident->nfns, allowed, sizeof allowed);
                forbid(self, p, rid_of(p), p->address, req,
                       "SUBMIT: identity '%s' may not submit function '%s' (its functions: %s)",
                       p->ident_name, fb, allowed);
                return;
            }
        }
    tq_now_t now = tq_now();
    int jerr = tq_persist_failed(self->persist);
    if (jerr) {
        char msg[160];
        snprintf(msg, sizeof msg, "journal write failed: %s", strerror(jerr));
        tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_UNAVAILABLE, req, msg);
        return;
    }
    tq_err_t eerr;
    submit_names_t sn = {self, p};
    /* the tasks it adds are p's identity's: persist records the owner
     * with each task's ADDED record (and in policy->owners) */
    self->policy->submitter = p->ident_owner;
    int rc = tq_engine_submit(self->engine, self->specs, n, flags & TQ_SUBMIT_SCOPED_KEYS, now,
                              submit_names, &sn, self->ids, self->added, &eerr);
    self->policy->submitter = NULL;
    if (rc < 0) {
        tq_outbox_error(self->outbox, rid_of(p), eerr.code, req, eerr.msg);
        return;
    }
    tq_out_begin_ids(tq_outbox_msg(self->outbox), TQ_MSG_SUBMIT_ACK, req);
    int waited = 0;
    uint64_t known[TQ_MAX_BATCH];
    size_t nknown = 0;
    for (size_t i = 0; i < n; i++) {
        tq_out_id(tq_outbox_msg(self->outbox), self->ids[i]);
        if (!(flags & TQ_SUBMIT_SUBSCRIBE) || !task_mine(self, p, self->ids[i]))
            continue; /* another identity's task of the same key: not its outcome */
        tq_task_t *t = tq_store_get(self->store, self->ids[i]);
        if (t && !tq_task_finished(t)) {
            tq_peer_wait_add(p, t);
            waited = 1;
        } else if (!self->added[i]) {
            known[nknown++] = self->ids[i]; /* known key: outcome (or unknown) now */
        }
    }
    nknown = ids_unique(known, nknown); /* records of one key: one outcome */
    for (size_t i = 0; i < nknown; i++)
        tq_peer_pending_add(p, known[i]);
    /* The ack promises the tasks are durable (--fsync): it waits in the
     * peer, in order with its other replies, until the journal is there.
     * When the client waits for results of the batch, the ack also waits
     * for the end of the next loop pass (LOOP_ACK_HOLD_MS at most), to
     * travel with the first of them. */
    tq_outbox_send_gated(self->outbox, p, tq_persist_lsn(self->persist),
                         tq_persist_ready(self->persist), waited);
}

/* ACK: these outcomes reached the client; the journal may forget them. */
static void on_ack(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    uint32_t req = 0;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_req_ids(m->type, m->body, m->nparts, &req, self->ids, &n, &err) < 0) {
        bad_body(self, p, p->address, m, req, &err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tq_peer_sent_ack(p, self->ids[i]);    /* read: room for more RESULTS */
        if (task_mine(self, p, self->ids[i])) /* another's outcome stays unACKed */
            tq_engine_ack(self->engine, self->ids[i]);
    }
}

/* WAIT: finished (or unknown) tasks go out in the RESULTS at the end of
 * the iteration; the others when they finish. An id named twice is
 * answered once. */
static void on_wait(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    uint32_t req = 0;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_req_ids(m->type, m->body, m->nparts, &req, self->ids, &n, &err) < 0) {
        bad_body(self, p, p->address, m, req, &err);
        return;
    }
    n = ids_unique(self->ids, n);
    if (!tasks_mine(self, p, m, req, self->ids, n))
        return;
    for (size_t i = 0; i < n; i++) {
        tq_task_t *t = tq_store_get(self->store, self->ids[i]);
        if (!t || tq_task_finished(t))
            tq_peer_pending_add(p, self->ids[i]); /* RESULTS at the end of the iteration */
        else
            tq_peer_wait_add(p, t);
    }
}

/* CANCEL: one outcome per id in the CANCEL_ACK; a running attempt gets
 * a KILL on its worker. */
static void on_cancel(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    uint32_t req = 0;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_req_ids(m->type, m->body, m->nparts, &req, self->ids, &n, &err) < 0) {
        bad_body(self, p, p->address, m, req, &err);
        return;
    }
    if (!tasks_mine(self, p, m, req, self->ids, n))
        return; /* cancelling another identity's task is admin's */
    tq_now_t now = tq_now();
    uint8_t outcome[TQ_MAX_BATCH];
    for (size_t i = 0; i < n; i++)
        outcome[i] = tq_engine_cancel(self->engine, self->ids[i], now);
    tq_out_begin_cancel_ack(tq_outbox_msg(self->outbox), req);
    for (size_t i = 0; i < n; i++)
        tq_out_cancel_item(tq_outbox_msg(self->outbox), self->ids[i], outcome[i]);
    tq_outbox_send(self->outbox, p);
    size_t nok = 0;
    for (size_t i = 0; i < n; i++)
        nok += outcome[i] == TQ_CANCEL_OK;
    if (n) { /* an operator's action: who asked */
        char who[TQ_MAX_PEER_NAME + 8];
        tq_log_escape_str(who, sizeof who, p->name);
        tq_info("cancel of %zu task%s (the first %" PRIu64 "): %zu cancelled, at the request "
                "of %s (%s)",
                n, n == 1 ? "" : "s", self->ids[0], nok, who, p->address);
    }
}

static void on_admin(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    if (m->nparts) {
        tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_MALFORMED, 0,
                        "ADMIN: unexpected data frames");
        return;
    }
    tq_admin_handle(&self->admin, p, m->body);
}

/* ---- worker messages ---------------------------------------------------- */

/* One outcome of a RESULT from w (the engine decides what it does to
 * its task): here only the log and w's count. */
static void result_one(hctx_t *self, tq_peer_t *w, const tq_result_item_t *r, tq_now_t now)
{
    switch (tq_engine_result(self->engine, w->instance, r, now)) {
    case TQ_RES_LATE:
        self->late_results++;
        tq_debug("late result for task %" PRIu64 " attempt %" PRIu32 " from %s", r->id, r->attempt,
                 w->name);
        return;
    case TQ_RES_FOREIGN:
        self->late_results++;
        tq_roster_warn(self->roster, w, w->address,
                       "result for task %" PRIu64 " attempt %" PRIu32
                       " that was not dispatched to this worker: ignored",
                       r->id, r->attempt);
        return;
    case TQ_RES_RERUN:
        self->late_results++;
        tq_debug("failed result for task %" PRIu64 " attempt %" PRIu32
                 " from %s after its lease was lost: the task runs again",
                 r->id, r->attempt, w->name);
        return;
    case TQ_RES_RETRIED:
        tq_debug("task %" PRIu64 " attempt %" PRIu32 " %s on %s: retried", r->id, r->attempt,
                 r->status == TQ_RUN_TIMEOUT ? "timed out" : "failed", w->name);
        break;
    case TQ_RES_TAKEN: break;
    }
    w->done++;
}

static void on_result(hctx_t *self, tq_peer_t *w, const msg_t *m)
{
    uint16_t credit = 0;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_result(m->body, m->parts, m->nparts, self->cfg.max_payload, &credit,
                         self->results, &n, &err) < 0) {
        bad_body(self, w, w->address, m, 0, &err);
        return;
    }
    tq_now_t now = tq_now();
    for (size_t i = 0; i < n; i++)
        result_one(self, w, &self->results[i], now);
    /* A RESULT with count 0 is fine: it only gives credit back (e.g. for
     * a KILLed run). A draining worker's credit stays 0. */
    if (!w->draining) {
        uint32_t c = w->credit + credit, cap = w->slots + w->prefetch;
        w->credit = c > cap ? cap : c;
    }
    *self->wake = 1;
}

/* RELEASE: the worker gives tasks back unrun; they keep their place. */
static void on_release(hctx_t *self, tq_peer_t *w, const msg_t *m)
{
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_leases(m->body, m->nparts, self->leases, &n, &err) < 0) {
        bad_body(self, w, w->address, m, 0, &err);
        return;
    }
    for (size_t i = 0; i < n; i++)
        tq_engine_release(self->engine, w, self->leases[i].id, self->leases[i].attempt);
}

/* ---- dispatching one message -------------------------------------------- */

static void on_put(hctx_t *self, tq_peer_t *p, const msg_t *m);
static void on_get(hctx_t *self, tq_peer_t *p, const msg_t *m);
static void on_take_ack(hctx_t *self, tq_peer_t *p, const msg_t *m);

/* The messages a registered peer may send, and who may send them
 * (need 0: any role, or the handler checks). */
static const struct {
    int type;
    int need;
    handler_fn *fn;
} handlers[] = {
    {TQ_MSG_HEARTBEAT, 0, on_heartbeat},
    {TQ_MSG_BYE, 0, on_bye},
    {TQ_MSG_DRAIN, 0, on_drain},
    {TQ_MSG_ERROR, 0, on_error},
    {TQ_MSG_STATUS, TQ_ROLE_CLIENT, on_status},
    {TQ_MSG_ADMIN, TQ_ROLE_CLIENT, on_admin},
    {TQ_MSG_SUBMIT, TQ_ROLE_CLIENT, on_submit},
    {TQ_MSG_WAIT, TQ_ROLE_CLIENT, on_wait},
    {TQ_MSG_CANCEL, TQ_ROLE_CLIENT, on_cancel},
    {TQ_MSG_ACK, TQ_ROLE_CLIENT, on_ack},
    {TQ_MSG_PUT, TQ_ROLE_CLIENT, on_put},
    {TQ_MSG_GET, TQ_ROLE_CLIENT, on_get},
    {TQ_MSG_TAKE_ACK, TQ_ROLE_CLIENT, on_take_ack},
    {TQ_MSG_RESULT, TQ_ROLE_WORKER, on_result},
    {TQ_MSG_RELEASE, TQ_ROLE_WORKER, on_release},
};

/* ---- plain put/get queues --------------------------------------------------- */

/* PUT: the items are stored and journaled; PUT_ACK waits for the journal
 * like SUBMIT_ACK. */
static void on_put(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_fixed_t fx;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_msg(TQ_MSG_PUT, m->body, m->parts, m->nparts, self->cfg.max_payload, &fx,
                      self->puts, &n, &err) < 0) {
        bad_body(self, p, p->address, m, fx.req, &err);
        return;
    }
    for (size_t i = 0; limited(p) && i < n; i++) {
        char qb[TQ_MAX_NAME + 1];
        if (!queue_ok(self, p, fx.req, "PUT", cstr(self->puts[i].queue, qb)))
            return;
    }
    int jerr = tq_persist_failed(self->persist);
    if (jerr) {
        char msg[160];
        snprintf(msg, sizeof msg, "journal write failed: %s", strerror(jerr));
        tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_UNAVAILABLE, fx.req, msg);
        return;
    }
    tq_err_t eerr;
    if (tq_engine_put(self->engine, self->puts, n, self->ids, &eerr) < 0) {
        tq_outbox_error(self->outbox, rid_of(p), eerr.code, fx.req, eerr.msg);
        return;
    }
    tq_out_begin_msg(tq_outbox_msg(self->outbox), TQ_MSG_PUT_ACK, &(tq_fixed_t){.req = fx.req});
    for (size_t i = 0; i < n; i++)
        tq_out_record(tq_outbox_msg(self->outbox), &(tq_id_rec_t){self->ids[i]});
    tq_outbox_send_gated(self->outbox, p, tq_persist_lsn(self->persist),
                         tq_persist_ready(self->persist), 0);
}

/* Take up to g->max items from the first of g's queues that has any and
 * send them in a GOT (also an empty one when force). 1 if sent. */
static int serve_get(hctx_t *self, tq_peer_t *p, const parked_get_t *g, int force)
{
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i < g->nq && n == 0; i++) {
        /* one at a time: a GOT stops at TQ_BATCH_BYTES of items (one at least) */
        while (n < g->max && bytes < TQ_BATCH_BYTES &&
               tq_engine_take(self->engine, (tq_bytes_t){g->names[i], g->lens[i]}, 1, p,
                              self->got + n) == 1)
            bytes += self->got[n++]->len;
    }
    if (n == 0 && !force)
        return 0;
    tq_out_t *o = tq_outbox_msg(self->outbox);
    tq_out_begin_msg(o, TQ_MSG_GOT, &(tq_fixed_t){.req = g->req});
    for (size_t i = 0; i < n; i++)
        tq_out_record(o,
                      &(tq_got_item_t){self->got[i]->id, {self->got[i]->data, self->got[i]->len}});
    tq_outbox_send(self->outbox, p);
    return 1;
}

/* GET: served now, or parked until an item comes or its timeout. */
static void on_get(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_fixed_t fx;
    size_t n = 0;
    tq_err_t err;
    tq_get_rec_t q[TQ_MAX_GET_QUEUES];
    if (tq_decode_msg(TQ_MSG_GET, m->body, m->parts, m->nparts, self->cfg.max_payload, &fx, q, &n,
                      &err) < 0) {
        bad_body(self, p, p->address, m, fx.req, &err);
        return;
    }
    if (fx.max == 0 || fx.timeout_ms > TQ_MAX_GET_WAIT_MS) {
        tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_MALFORMED, fx.req,
                        fx.max == 0 ? "GET: max is 0 (1..1024 items)"
                                    : "GET: timeout_ms over the limit of 86400000 (a day)");
        return;
    }
    for (size_t i = 0; limited(p) && i < n; i++) {
        char qb[TQ_MAX_NAME + 1];
        if (!queue_ok(self, p, fx.req, "GET", cstr(q[i].queue, qb)))
            return;
    }
    parked_get_t g = {.p = p, .req = fx.req, .max = fx.max, .nq = (uint16_t)n};
    memcpy(g.rid, p->rid, p->rid_len);
    g.rid_len = p->rid_len;
    for (size_t i = 0; i < n; i++) {
        memcpy(g.names[i], q[i].queue.data, q[i].queue.len);
        g.lens[i] = (uint8_t)q[i].queue.len;
    }
    /* FIFO: an earlier parked GET of another client comes first */
    int earlier = 0;
    for (size_t i = 0; i < self->ngets && !earlier; i++)
        for (size_t k = 0; k < self->gets[i].nq && !earlier; k++)
            for (size_t j = 0; j < n && !earlier; j++)
                earlier = self->gets[i].lens[k] == g.lens[j] &&
                          memcmp(self->gets[i].names[k], g.names[j], g.lens[j]) == 0;
    if (!earlier && serve_get(self, p, &g, fx.timeout_ms == 0))
        return;
    if (fx.timeout_ms == 0) {
        serve_get(self, p, &g, 1);
        return;
    }
    size_t mine = 0;
    for (size_t i = 0; i < self->ngets; i++)
        mine += self->gets[i].p == p;
    if (mine >= TQ_MAX_GETS_PER_CONN) {
        tq_outbox_error(self->outbox, rid_of(p), TQ_ERR_TOO_MANY, fx.req,
                        "GET: 64 GETs already wait on this connection");
        return;
    }
    if (self->ngets == self->gets_cap) {
        size_t cap = self->gets_cap ? self->gets_cap * 2 : 16;
        self->gets = tq_realloc(self->gets, cap * sizeof *self->gets);
        self->gets_cap = cap;
    }
    g.deadline_ms = tq_now().mono_ms + fx.timeout_ms;
    self->gets[self->ngets++] = g;
    self->items_ready = 1; /* items may be there that an earlier GET does not want */
}

/* TAKE_ACK: these items are gone for good (journaled). */
static void on_take_ack(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    tq_fixed_t fx;
    size_t n = 0;
    tq_err_t err;
    if (tq_decode_msg(TQ_MSG_TAKE_ACK, m->body, m->parts, m->nparts, 0, &fx, self->ids, &n, &err) <
        0) {
        bad_body(self, p, p->address, m, fx.req, &err);
        return;
    }
    for (size_t i = 0; i < n; i++)
        (void)tq_engine_take_ack(self->engine, self->ids[i], p); /* unknown ids: ignored */
}

/* The engine's subscriber: an item came into a plain queue. */
static void on_engine_event(void *arg, const tq_engine_ev_t *ev)
{
    if (ev->kind == TQ_EV_ITEM_READY)
        ((hctx_t *)arg)->items_ready = 1;
}

int64_t tq_handlers_tick(tq_handlers_t *self, int64_t now_ms)
{
    int ready = self->items_ready;
    self->items_ready = 0;
    int64_t next = -1;
    size_t k = 0;
    for (size_t i = 0; i < self->ngets; i++) {
        parked_get_t *g = &self->gets[i];
        tq_peer_t *p = tq_peers_find(self->peers, (tq_bytes_t){g->rid, g->rid_len});
        if (p != g->p || p->role != TQ_ROLE_CLIENT)
            continue; /* its connection ended */
        if (ready && serve_get(self, p, g, 0))
            continue;
        if (now_ms >= g->deadline_ms) {
            serve_get(self, p, g, 1);
            continue;
        }
        if (next < 0 || g->deadline_ms - now_ms < next)
            next = g->deadline_ms - now_ms;
        self->gets[k++] = *g;
    }
    self->ngets = k;
    return next;
}

/* Anything but HELLO from a peer that is not registered. */
static void on_unregistered(hctx_t *self, const msg_t *m)
{
    if (m->type == TQ_MSG_BYE || m->type == TQ_MSG_ERROR) {
        /* nothing to undo, and never answer an ERROR with an ERROR */
        tq_debug("%s from unregistered peer %s", tq_msg_type_name(m->type), m->addr);
        return;
    }
    /* A peer of the master before a restart goes on as it was (a worker's
     * RESULT, a client's ACK) until this ERROR makes it say HELLO again:
     * normal after every restart, so not a warning. Only a keyholder
     * gets this far (CURVE). */
    tq_debug("%s before HELLO from peer %s: asking it to say HELLO", tq_msg_type_name(m->type),
             m->addr);
    tq_outbox_error(self->outbox, m->rid, TQ_ERR_NOT_REGISTERED, tq_msg_peek_req(m->type, m->body),
                    "not registered: send HELLO first");
}

/* A type only the master sends (WELCOME, DISPATCH, ...), or unknown. */
static void on_not_for_master(hctx_t *self, tq_peer_t *p, const msg_t *m)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s is sent by the master, not to it", tq_msg_type_name(m->type));
    tq_roster_warn(self->roster, p, m->addr, "%s", msg);
    tq_outbox_error(self->outbox, m->rid, TQ_ERR_WRONG_ROLE, 0, msg);
}

tq_handlers_t *tq_handlers_new(const tq_handlers_deps_t *d)
{
    tq_handlers_t *self = tq_calloc(1, sizeof *self);
    self->engine = d->engine;
    self->store = tq_engine_store(d->engine);
    self->persist = d->persist;
    self->peers = d->peers;
    self->outbox = d->outbox;
    self->roster = d->roster;
    self->status = d->status;
    self->cfg = *d->cfg;
    self->endpoint = d->endpoint;
    self->start_ms = d->start_ms;
    self->wake = d->wake;
    self->policy = d->policy;
    self->admin = (tq_admin_deps_t){d->engine, d->persist, d->outbox,
                                    d->roster, d->peers,   d->policy};
    tq_engine_subscribe(self->engine, on_engine_event, self);
    return self;
}

void tq_handlers_destroy(tq_handlers_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_engine_unsubscribe((*self_p)->engine, on_engine_event, *self_p);
    free((*self_p)->gets);
    free(*self_p);
    *self_p = NULL;
}

uint64_t tq_handlers_late(const tq_handlers_t *self) { return self->late_results; }

void tq_handlers_handle(hctx_t *self, tq_in_t *in)
{
    msg_t m = {tq_in_routing_id(in), NULL, "", -1, 0, {NULL, 0}, NULL, 0};
    if (m.rid.len == 0)
        return;
    m.addr = tq_in_peer_address(in);
    tq_peer_t *p = tq_peers_find(self->peers, m.rid);
    if (self->policy->allow) {
        /* key-pair mode: the identity is the connection's, checked on
         * every message (a routing id taken over by another connection
         * is not the registered peer's) */
        m.user = tq_in_user_id(in);
        m.fd = tq_in_source_fd(in);
        if (p && strcmp(p->ident_name, m.user) != 0)
            tq_roster_forget(self->roster, &p, "its routing id is another key's connection now");
    }
    if (p)
        p->last_seen_ms = tq_now().mono_ms;
    tq_err_t err;
    if (tq_in_head(in, &m.type, &m.body, &err) < 0) {
        /* refused as a whole (too many frames, too large, a bad pack):
         * the req, if the head was readable, is still the ERROR's ref */
        tq_roster_warn(self->roster, p, m.addr, "malformed message: %s", err.msg);
        tq_outbox_error(self->outbox, m.rid, err.code, tq_msg_peek_req(m.type, m.body), err.msg);
        return;
    }
    m.parts = tq_in_parts(in);
    m.nparts = tq_in_nparts(in);
    if (m.type == TQ_MSG_HELLO) {
        on_hello(self, p, &m);
        return;
    }
    if (!p) {
        on_unregistered(self, &m);
        return;
    }
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (handlers[i].type != m.type)
            continue;
        if (!handlers[i].need || role_ok(self, p, m.type, (tq_role_t)handlers[i].need))
            handlers[i].fn(self, p, &m);
        return;
    }
    on_not_for_master(self, p, &m);
}
