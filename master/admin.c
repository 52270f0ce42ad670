/* admin.c - ADMIN requests (proto/PROTOCOL.md): list, retry and purge
 * the dead set (retry and purge the failed set); pause and resume
 * queues; empty and delete queues; quiet and stop workers; the
 * read-only inspection ops (inspect.c). tq_admin_exec runs an op and
 * returns its reply or error; tq_admin_handle sends it. A pause or
 * resume is an engine command: it takes effect at once, the journal records it (PAUSE
 * record), and its ADMIN_REPLY waits in the peer, like a SUBMIT_ACK,
 * until the journal holds the record. The DATA_DIR/paused file of
 * earlier versions is read once at start (tq_admin_load), journaled,
 * and deleted. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "inspect.h"
#include "now.h"
#include "tq_log.h"
#include "tq_util.h"

/* A dead task's error text in a "dead" listing is cut to this many
 * bytes, and a listing stops adding tasks once its error texts reach
 * ADMIN_LIST_BYTES, so one reply stays well under TQ_MAX_STATUS_JSON. */
#define ADMIN_ERROR_MAX 4096
#define ADMIN_LIST_BYTES (4u * 1024u * 1024u)
/* The paused file holds at most every queue name: bounded like them. */
#define PAUSED_FILE_MAX ((size_t)TQ_STORE_MAX_NAMES * (TQ_MAX_NAME + 1))

/* ---- the paused file of earlier versions ------------------------------------ */

static int paused_path(const char *data_dir, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/paused", data_dir);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int tq_admin_load(tq_engine_t *engine, tq_persist_t *persist, const char *data_dir, uint64_t *lsn,
                  tq_err_t *err)
{
    tq_store_t *store = tq_engine_store(engine);
    char path[4096];
    if (paused_path(data_dir, path, sizeof path) < 0) {
        tq_err_set(err, 0, "--data-dir: path too long");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        tq_err_set(err, 0, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    /* Two passes: the whole file is checked before any queue is paused,
     * so a refused start leaves nothing behind in the journal. */
    char line[TQ_MAX_NAME + 2];
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        size_t lineno = 0, total = 0;
        rewind(f);
        while (fgets(line, sizeof line, f)) {
            lineno++;
            size_t n = strlen(line);
            total += n;
            int whole = n > 0 && line[n - 1] == '\n';
            if (whole)
                line[--n] = '\0';
            tq_bytes_t name = {(const uint8_t *)line, n};
            if (total > PAUSED_FILE_MAX || (!whole && !feof(f)) || (n && !tq_name_valid(name))) {
                tq_err_set(err, 0, "%s line %zu: not a queue name (remove the line or the file)",
                           path, lineno);
                rc = -1;
                break;
            }
            if (pass == 0 || !n)
                continue;
            tq_queue_t *q = tq_store_queue(store, name);
            if (!q) {
                tq_err_set(err, 0, "%s line %zu: too many queue names", path, lineno);
                rc = -1;
                break;
            }
            if (tq_engine_pause(engine, q, 1)) /* journaled */
                tq_info("queue %s is paused (%s, now in the journal)", line, path);
        }
        if (rc == 0 && ferror(f)) {
            tq_err_set(err, 0, "cannot read %s: %s", path, strerror(errno));
            rc = -1;
        }
    }
    fclose(f);
    if (rc < 0)
        return -1;
    *lsn = tq_persist_lsn(persist);
    return 1;
}

void tq_admin_drop_file(const char *data_dir)
{
    char path[4096];
    if (paused_path(data_dir, path, sizeof path) == 0 && unlink(path) < 0 && errno != ENOENT)
        tq_warn("cannot delete %s (its queues are in the journal now): %s", path, strerror(errno));
    else
        tq_info("deleted %s: the paused queues are in the journal now", path);
}

/* ---- requests ---------------------------------------------------------------- */

/* One request being run: the ops below read the request (j) and leave
 * either a reply document (doc; gated: send it once the journal holds
 * what the request changed) or an error (res->code, res->msg) in it.
 * They send nothing: tq_admin_handle sends for ADMIN, and any other
 * front end on the loop thread (the HTTP dashboard) runs the same ops
 * through tq_admin_exec. */
typedef struct {
    const tq_admin_deps_t *loop;
    tq_peer_t *peer; /* the asking connection (new-name budget), or NULL */
    const char *who; /* who asked and from where, for the log */
    const char *addr;
    const cJSON *j;
    cJSON *doc;
    tq_admin_result_t *res;
} admin_t;

static void fail(admin_t *a, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(admin_t *a, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->res->msg, sizeof a->res->msg, fmt, ap);
    va_end(ap);
    a->res->code = code;
}

static void reply(admin_t *a, cJSON *doc) { a->doc = doc; }

/* doc, sent once the journal holds what this request changed (as a
 * SUBMIT_ACK). */
static void reply_gated(admin_t *a, cJSON *doc)
{
    a->doc = doc;
    a->res->gated = 1;
}

/* An optional non-negative integer field no larger than max: 0 when
 * absent (*out = def), -1 (after an ERROR reply) when not valid. */
static int get_uint(admin_t *a, const char *name, uint64_t def, uint64_t max, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->j, name);
    *out = def;
    if (!v)
        return 0;
    if (tq_json_uint(v, 0, max, out) < 0) {
        fail(a, TQ_ERR_MALFORMED, "ADMIN: \"%s\" must be an integer 0..%" PRIu64, name, max);
        return -1;
    }
    return 0;
}

/* The "queue" field: *q = NULL when absent and optional; -1 (after an
 * ERROR) when not valid, or absent but required. */
static int get_queue(admin_t *a, int required, tq_queue_t **q)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->j, "queue");
    *q = NULL;
    if (!v && !required)
        return 0;
    if (!cJSON_IsString(v) || !tq_name_valid(tq_bytes_str(v->valuestring))) {
        fail(a, v ? TQ_ERR_BAD_NAME : TQ_ERR_MALFORMED,
             v ? "ADMIN: \"queue\" is not a valid queue name" : "ADMIN: \"queue\" is required");
        return -1;
    }
    tq_bytes_t name = tq_bytes_str(v->valuestring);
    if (!tq_store_name_known(tq_engine_store(a->loop->engine), name) && a->peer &&
        tq_peer_take_name(a->peer, tq_now().mono_ms) < 0) {
        fail(a, TQ_ERR_TOO_MANY,
             "ADMIN: too many new queue and function names from this connection (at most %d at "
             "once, then %d a second)",
             TQ_PEER_NEW_NAMES_BURST, TQ_PEER_NEW_NAMES_PER_S);
        return -1;
    }
    *q = tq_store_queue(tq_engine_store(a->loop->engine), name);
    if (!*q) {
        fail(a, TQ_ERR_TOO_MANY, "ADMIN: too many queue and function names");
        return -1;
    }
    return 0;
}

static void add_id(cJSON *o, uint64_t id) { tq_inspect_add_id(o, id); }

/* t's error text as "error" or "error_base64", cut to ADMIN_ERROR_MAX. */
static void add_error(cJSON *o, const tq_task_t *t)
{
    tq_inspect_add_text(o, "error", tq_task_data(t), ADMIN_ERROR_MAX);
}

/* The "queue" field of a read-only request: the existing queue of that
 * name (nothing is created: a typo must not add a queue). *q = NULL and
 * *missing = 0 when absent; *missing = 1 when no such queue exists; -1
 * (after an ERROR) when not a valid name. */
static int find_queue(admin_t *a, tq_queue_t **q, int *missing)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->j, "queue");
    *q = NULL;
    *missing = 0;
    if (!v)
        return 0;
    if (!cJSON_IsString(v) || !tq_name_valid(tq_bytes_str(v->valuestring))) {
        fail(a, cJSON_IsString(v) ? TQ_ERR_BAD_NAME : TQ_ERR_MALFORMED,
             "ADMIN: \"queue\" is not a valid queue name");
        return -1;
    }
    tq_store_t *store = tq_engine_store(a->loop->engine);
    for (size_t i = 0, n = tq_store_nqueues(store); i < n; i++) {
        tq_queue_t *qi = tq_store_queue_at(store, i);
        if (strcmp(tq_queue_name(qi), v->valuestring) == 0) {
            *q = qi;
            return 0;
        }
    }
    *missing = 1;
    return 0;
}

static void op_dead(admin_t *a)
{
    tq_queue_t *q;
    uint64_t after, limit;
    int missing;
    if (find_queue(a, &q, &missing) < 0 || get_uint(a, "after", 0, UINT64_MAX, &after) < 0 ||
        get_uint(a, "limit", TQ_MAX_ADMIN_LIST, TQ_MAX_ADMIN_LIST, &limit) < 0)
        return;
    if (limit == 0) {
        fail(a, TQ_ERR_MALFORMED, "ADMIN: \"limit\" must be 1..%d", TQ_MAX_ADMIN_LIST);
        return;
    }
    /* no such queue: no dead tasks in it */
    tq_task_t *t = missing ? NULL : tq_store_dead_after(tq_engine_store(a->loop->engine), after);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tasks");
    size_t n = 0, bytes = 0;
    const tq_ident_t *id = a->peer ? a->peer->ident : NULL; /* key-pair mode: its queues only */
    for (; t && n < limit && bytes < ADMIN_LIST_BYTES; t = tq_store_dead_next(t)) {
        if ((q && tq_task_queue(t) != q) ||
            (id && !tq_ident_may_queue(id, tq_queue_name(tq_task_queue(t)))))
            continue;
        cJSON *o = cJSON_CreateObject();
        add_id(o, t->id);
        cJSON_AddStringToObject(o, "queue", tq_queue_name(tq_task_queue(t)));
        cJSON_AddStringToObject(o, "fn", tq_task_fn(t));
        cJSON_AddNumberToObject(o, "attempts", (double)tq_task_attempt(t));
        add_error(o, t);
        cJSON_AddNumberToObject(o, "finished_ms", (double)tq_task_finished_ms(t));
        cJSON_AddNumberToObject(o, "payload_bytes", (double)t->payload_len);
        cJSON_AddItemToArray(arr, o);
        bytes += tq_task_data(t).len < ADMIN_ERROR_MAX ? tq_task_data(t).len : ADMIN_ERROR_MAX;
        n++;
    }
    while (t && ((q && tq_task_queue(t) != q) ||
                 (id && !tq_ident_may_queue(id, tq_queue_name(tq_task_queue(t))))))
        t = tq_store_dead_next(t);
    cJSON_AddBoolToObject(doc, "more", t != NULL);
    reply(a, doc);
}

/* retry (purge = 0) or purge (purge = 1) of "ids" or "all". */
static void op_retry_purge(admin_t *a, int purge)
{
    static const char *done_word[] = {"retried", "purged"};
    tq_store_t *store = tq_engine_store(a->loop->engine);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(a->j, "ids");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(a->j, "all");
    tq_queue_t *q;
    if (get_queue(a, 0, &q) < 0)
        return;
    if ((ids != NULL) == cJSON_IsTrue(all) || (ids && q)) {
        fail(a, TQ_ERR_MALFORMED,
             "ADMIN: %s needs either \"ids\" or \"all\":true (\"queue\" only with \"all\")",
             done_word[purge]);
        return;
    }
    size_t count = 0;
    cJSON *doc = cJSON_CreateObject();
    if (ids) {
        int n = cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : -1;
        if (n < 0 || n > TQ_MAX_ADMIN_IDS) {
            cJSON_Delete(doc);
            fail(a, n < 0 ? TQ_ERR_MALFORMED : TQ_ERR_TOO_MANY,
                 "ADMIN: \"ids\" must be an array of at most %d ids", TQ_MAX_ADMIN_IDS);
            return;
        }
        const cJSON *it;
        uint64_t id;
        cJSON_ArrayForEach(it, ids)
        {
            if (tq_json_uint(it, 1, UINT64_MAX, &id) < 0) {
                cJSON_Delete(doc);
                fail(a, TQ_ERR_MALFORMED, "ADMIN: \"ids\" must hold positive integers");
                return;
            }
        }
        cJSON *items = cJSON_AddArrayToObject(doc, "items");
        cJSON_ArrayForEach(it, ids)
        {
            tq_json_uint(it, 1, UINT64_MAX, &id); /* checked above */
            tq_task_t *t = tq_store_get(store, id);
            /* the dead and the failed set */
            const char *outcome = !t ? "unknown"
                                  : t->state != TQ_TASK_DEAD && t->state != TQ_TASK_FAILED
                                      ? "not dead"
                                      : NULL;
            if (!outcome) {
                if (purge)
                    tq_engine_purge(a->loop->engine, id);
                else
                    tq_engine_revive(a->loop->engine, id);
                outcome = done_word[purge];
                count++;
            }
            cJSON *o = cJSON_CreateObject();
            add_id(o, id);
            cJSON_AddStringToObject(o, "outcome", outcome);
            cJSON_AddItemToArray(items, o);
        }
    } else {
        count = tq_engine_revive_all(a->loop->engine, q, purge);
    }
    char from[TQ_MAX_PEER_NAME + 8];
    tq_info("admin: %s %zu dead or failed task%s at the request of %s (%s)", done_word[purge],
            count, count == 1 ? "" : "s", tq_log_escape_str(from, sizeof from, a->who), a->addr);
    cJSON_AddNumberToObject(doc, "count", (double)count);
    reply(a, doc);
}

/* pause / resume: the change is made at once; the reply goes when the
 * journal holds it (gated on the journal's LSN, as a SUBMIT_ACK). */
static void op_pause(admin_t *a, int pause)
{
    tq_queue_t *q;
    if (get_queue(a, 1, &q) < 0)
        return;
    int jerr = tq_persist_failed(a->loop->persist);
    if (jerr) {
        fail(a, TQ_ERR_UNAVAILABLE, "journal write failed: %s", strerror(jerr));
        return;
    }
    int changed = tq_engine_pause(a->loop->engine, q, pause);
    char from[TQ_MAX_PEER_NAME + 8];
    tq_info("admin: queue %s %s%s at the request of %s (%s)", tq_queue_name(q),
            pause ? "paused" : "resumed", changed ? "" : " (no change)",
            tq_log_escape_str(from, sizeof from, a->who), a->addr);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "queue", tq_queue_name(q));
    cJSON_AddBoolToObject(doc, "paused", pause);
    cJSON_AddBoolToObject(doc, "changed", changed);
    /* the state it reports may be another request's, not durable yet */
    reply_gated(a, doc);
}

/* A read-only op of inspect.h: its reply, or its error. */
typedef void *(*inspect_fn)(const tq_store_t *, const tq_peers_t *, const void *, tq_err_t *);
static void op_inspect(admin_t *a, inspect_fn fn)
{
    tq_err_t err = {TQ_ERR_INTERNAL, ""};
    cJSON *doc = fn(tq_engine_store(a->loop->engine), a->loop->peers, a->j, &err);
    if (!doc) {
        fail(a, err.code, "%s", err.msg);
        return;
    }
    reply(a, doc);
}

/* queue_empty (del = 0: cancel up to TQ_MAX_QUEUE_EMPTY queued tasks of
 * "queue"; "more" says whether to ask again) or queue_delete (del = 1:
 * forget a queue with nothing queued or running; "deleted": false with
 * its counts otherwise). An unknown queue is an ERROR. Engine commands,
 * journaled; the reply is gated on the journal. */
static void op_queue(admin_t *a, int del)
{
    tq_queue_t *q;
    int missing;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->j, "queue");
    if (!v) {
        fail(a, TQ_ERR_MALFORMED, "ADMIN: \"queue\" is required");
        return;
    }
    if (find_queue(a, &q, &missing) < 0)
        return;
    if (missing) {
        fail(a, TQ_ERR_BAD_NAME, "ADMIN: no queue named %s", v->valuestring);
        return;
    }
    int jerr = tq_persist_failed(a->loop->persist);
    if (jerr) {
        fail(a, TQ_ERR_UNAVAILABLE, "journal write failed: %s", strerror(jerr));
        return;
    }
    char from[TQ_MAX_PEER_NAME + 8];
    tq_log_escape_str(from, sizeof from, a->who);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "queue", tq_queue_name(q));
    if (!del) {
        int more = 0;
        size_t n = tq_engine_queue_empty(a->loop->engine, q, TQ_MAX_QUEUE_EMPTY, tq_now(), &more);
        if (n)
            tq_info("admin: cancelled %zu queued task%s of queue %s at the request of %s (%s)", n,
                    n == 1 ? "" : "s", tq_queue_name(q), from, a->addr);
        cJSON_AddNumberToObject(doc, "cancelled", (double)n);
        cJSON_AddBoolToObject(doc, "more", more);
    } else {
        const tq_queue_counts_t *c = tq_queue_counts(q);
        size_t queued = c->queued, running = c->running;
        int ok = tq_engine_queue_delete(a->loop->engine, q) == 0;
        if (ok)
            tq_info("admin: deleted queue %s at the request of %s (%s)", tq_queue_name(q), from,
                    a->addr);
        cJSON_AddBoolToObject(doc, "deleted", ok);
        cJSON_AddNumberToObject(doc, "queued", (double)queued);
        cJSON_AddNumberToObject(doc, "running", (double)running);
    }
    reply_gated(a, doc);
}

/* quiet (stop = 0: take no new tasks, finish the running ones) or stop
 * (stop = 1: drain and exit) the workers whose name or id is "worker".
 * Each gets QUIET or STOP, and takes nothing more from now on. The
 * reply lists the workers it went to ("workers": [] when none
 * matched). */
static void op_worker(admin_t *a, int stop)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->j, "worker");
    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > TQ_MAX_PEER_NAME) {
        fail(a, TQ_ERR_MALFORMED, "ADMIN: \"worker\" must be a worker's name or id (1..%d bytes)",
             TQ_MAX_PEER_NAME);
        return;
    }
    const char *want = v->valuestring;
    char who[TQ_MAX_PEER_NAME + 8], from[TQ_MAX_PEER_NAME + 8];
    tq_log_escape_str(from, sizeof from, a->who);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "workers");
    for (size_t i = 0, n = tq_peers_count(a->loop->peers); i < n; i++) {
        tq_peer_t *w = tq_peers_at(a->loop->peers, i);
        char id[24];
        if (w->role != TQ_ROLE_WORKER || w->gone)
            continue;
        tq_worker_id(w, id, sizeof id);
        if (strcmp(w->name, want) != 0 && strcmp(id, want) != 0)
            continue;
        w->draining = 1; /* nothing more for it, from now on */
        w->credit = 0;
        w->quiet = !stop;
        tq_out_begin(tq_outbox_msg(a->loop->outbox), stop ? TQ_MSG_STOP : TQ_MSG_QUIET);
        tq_outbox_send(a->loop->outbox, w);
        tq_log_escape_str(who, sizeof who, w->name);
        tq_info("admin: %s worker %s (id %s, %zu task%s running) at the request of %s (%s)",
                stop ? "stopping" : "quieting", who, id, w->nleased, w->nleased == 1 ? "" : "s",
                from, a->addr);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", w->name);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddNumberToObject(o, "busy", (double)w->nleased);
        cJSON_AddItemToArray(arr, o);
    }
    reply(a, doc);
}

static void run_dead(admin_t *a, int arg)
{
    (void)arg;
    op_dead(a);
}

static void run_show(admin_t *a, int arg)
{
    (void)arg;
    op_inspect(a, tq_inspect_show);
}

static void run_list(admin_t *a, int arg)
{
    (void)arg;
    op_inspect(a, tq_inspect_list);
}

static void run_failed(admin_t *a, int arg)
{
    (void)arg;
    op_inspect(a, tq_inspect_failed);
}

/* The operations. access: ADMIN_READ ones change nothing (any client
 * may ask; a key-pair client's `dead` lists only its queues);
 * ADMIN_PRIVATE ones change nothing but show any identity's tasks
 * (payloads, results, errors), and ADMIN_WRITE ones change state: both
 * need an admin identity in key-pair mode (--allow-keys; ERROR
 * FORBIDDEN otherwise). A new operation says which it is here. */
enum { ADMIN_READ = 0, ADMIN_PRIVATE = 1, ADMIN_WRITE = 2 };
static const struct {
    const char *name;
    int access;
    void (*fn)(admin_t *a, int arg);
    int arg;
} admin_ops[] = {
    {"dead", ADMIN_READ, run_dead, 0},         {"retry", ADMIN_WRITE, op_retry_purge, 0},
    {"purge", ADMIN_WRITE, op_retry_purge, 1}, {"pause", ADMIN_WRITE, op_pause, 1},
    {"resume", ADMIN_WRITE, op_pause, 0},      {"quiet", ADMIN_WRITE, op_worker, 0},
    {"stop", ADMIN_WRITE, op_worker, 1},       {"show", ADMIN_PRIVATE, run_show, 0},
    {"list", ADMIN_PRIVATE, run_list, 0},      {"failed", ADMIN_PRIVATE, run_failed, 0},
    {"queue_empty", ADMIN_WRITE, op_queue, 0}, {"queue_delete", ADMIN_WRITE, op_queue, 1},
};

int tq_admin_op_writes(const char *op)
{
    for (size_t i = 0; i < sizeof admin_ops / sizeof admin_ops[0]; i++)
        if (strcmp(op, admin_ops[i].name) == 0)
            return admin_ops[i].access == ADMIN_WRITE;
    return -1;
}

void *tq_admin_exec(const tq_admin_deps_t *d, tq_peer_t *p, const char *who, const char *addr,
                    const void *req, tq_admin_result_t *res)
{
    res->code = 0;
    res->msg[0] = '\0';
    res->gated = 0;
    admin_t a = {d, p, who ? who : "?", addr ? addr : "?", req, NULL, res};
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(a.j, "op");
    const char *o = cJSON_IsString(op) ? op->valuestring : "";
    size_t i = 0, nops = sizeof admin_ops / sizeof admin_ops[0];
    while (i < nops && strcmp(o, admin_ops[i].name) != 0)
        i++;
    if (i == nops) {
        fail(&a, TQ_ERR_MALFORMED,
             "ADMIN: unknown \"op\" (dead, retry, purge, pause, resume, quiet, stop, show, "
             "list, failed, queue_empty, queue_delete)");
    } else if (admin_ops[i].access != ADMIN_READ && p && p->ident &&
               p->ident->role != TQ_IDENT_ADMIN) {
        fail(&a, TQ_ERR_FORBIDDEN, "ADMIN %s: identity '%s' is not an admin", o, p->ident_name);
        d->policy->forbidden++;
    } else {
        admin_ops[i].fn(&a, admin_ops[i].arg);
    }
    if (!a.doc && !res->code) {
        res->code = TQ_ERR_INTERNAL; /* an op must answer */
        snprintf(res->msg, sizeof res->msg, "ADMIN: no answer");
    }
    if (res->code) {
        cJSON_Delete(a.doc);
        return NULL;
    }
    return a.doc;
}

/* ERROR about request req to p, with a rate-limited log line. */
static void send_error(const tq_admin_deps_t *d, tq_peer_t *p, uint32_t req, int code,
                       const char *msg)
{
    tq_roster_warn(d->roster, p, p->address, "%s", msg);
    tq_outbox_error(d->outbox, (tq_bytes_t){p->rid, p->rid_len}, code, req, msg);
}

void tq_admin_handle(const tq_admin_deps_t *d, tq_peer_t *p, tq_bytes_t body)
{
    void *j = NULL;
    tq_err_t err;
    if (tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err) < 0) {
        char msg[TQ_MAX_ERROR_TEXT + 8];
        snprintf(msg, sizeof msg, "ADMIN: %s", err.msg);
        send_error(d, p, 0, err.code, msg);
        return;
    }
    uint64_t req = 0;
    const cJSON *rv = cJSON_GetObjectItemCaseSensitive(j, "req");
    if (rv && tq_json_uint(rv, 0, UINT32_MAX, &req) < 0) {
        send_error(d, p, 0, TQ_ERR_MALFORMED, "ADMIN: \"req\" must be an integer 0..4294967295");
        cJSON_Delete(j);
        return;
    }
    tq_admin_result_t res;
    cJSON *doc = tq_admin_exec(d, p, p->name, p->address, j, &res);
    cJSON_Delete(j);
    if (!doc) {
        send_error(d, p, (uint32_t)req, res.code, res.msg);
        return;
    }
    cJSON_AddNumberToObject(doc, "req", (double)req);
    cJSON_AddBoolToObject(doc, "ok", 1);
    tq_out_json(tq_outbox_msg(d->outbox), TQ_MSG_ADMIN_REPLY, doc);
    cJSON_Delete(doc);
    if (res.gated) /* the state it reports may be another request's, not durable yet */
        tq_outbox_send_gated(d->outbox, p, tq_persist_lsn(d->persist), tq_persist_ready(d->persist),
                             0);
    else
        tq_outbox_send(d->outbox, p);
}
