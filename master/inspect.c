/* inspect.c - read-only ADMIN replies and status rows. See inspect.h. */
#include "inspect.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_idmap.h"
#include "tq_util.h"

/* Bytes of a result, error or payload one "show" reports per field (the
 * rest is cut, with "<name>_truncated"), and of an error text in a list
 * row. With TQ_MAX_SHOW_IDS tasks a reply stays far below
 * TQ_MAX_STATUS_JSON. */
#define SHOW_DATA_MAX (16u * 1024u)
#define LIST_ERROR_MAX 256u
/* Function rows in one status document ("functions_total" counts all). */
#define FN_ROWS_MAX TQ_INSPECT_FN_ROWS

static void *fail(tq_err_t *err, int c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *fail(tq_err_t *err, int c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = c;
    return NULL;
}

void tq_inspect_add_id(void *o, uint64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, id);
    cJSON_AddItemToObject(o, "id", cJSON_CreateRaw(text));
}

void tq_inspect_add_text(void *o, const char *name, tq_bytes_t b, size_t max)
{
    size_t len = b.len > max ? max : b.len;
    const char *data = b.data ? (const char *)b.data : "";
    char key[64];
    if (len < b.len) {
        while (len > 0 && ((unsigned char)data[len] & 0xC0) == 0x80)
            len--; /* do not cut a UTF-8 sequence in two */
        snprintf(key, sizeof key, "%s_truncated", name);
        cJSON_AddBoolToObject(o, key, 1);
    }
    if (tq_utf8_valid(data, len) && !memchr(data, '\0', len)) {
        char *s = tq_malloc(len + 1);
        memcpy(s, data, len);
        s[len] = '\0';
        cJSON_AddStringToObject(o, name, s);
        free(s);
        return;
    }
    size_t blen = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *enc = tq_malloc(blen);
    sodium_bin2base64(enc, blen, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
    snprintf(key, sizeof key, "%s_base64", name);
    cJSON_AddStringToObject(o, key, enc);
    free(enc);
}

const char *tq_inspect_state(const tq_task_t *t)
{
    switch ((tq_task_state_t)t->state) {
    case TQ_TASK_QUEUED: return tq_task_not_before(t) ? "delayed" : "queued";
    case TQ_TASK_LEASED: return "running";
    case TQ_TASK_DONE: return "done";
    case TQ_TASK_FAILED: return "failed";
    case TQ_TASK_CANCELLED: return "cancelled";
    case TQ_TASK_DEAD: return "dead";
    }
    return "?";
}

/* A wall-clock time field, or null when 0 (not known / not yet). */
static void add_time(cJSON *o, const char *name, int64_t ms)
{
    if (ms > 0)
        cJSON_AddNumberToObject(o, name, (double)ms);
    else
        cJSON_AddNullToObject(o, name);
}

/* The connected worker with this instance id, or NULL. O(peers). */
static const tq_peer_t *worker_of(const tq_peers_t *peers, uint64_t instance)
{
    for (size_t i = 0, n = tq_peers_count(peers); i < n; i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->role == TQ_ROLE_WORKER && !p->gone && p->instance == instance)
            return p;
    }
    return NULL;
}

/* "worker": the worker of the current or last attempt ({"id","name",
 * "connected"}), or null when no attempt has a known holder. */
static void add_worker(cJSON *o, const tq_peers_t *peers, const tq_task_t *t)
{
    const tq_peer_t *w = tq_task_worker(t);
    uint64_t holder = w ? w->instance : tq_task_holder(t);
    if (!holder) {
        cJSON_AddNullToObject(o, "worker");
        return;
    }
    if (!w)
        w = worker_of(peers, holder);
    cJSON *wo = cJSON_AddObjectToObject(o, "worker");
    char id[24];
    snprintf(id, sizeof id, "%016" PRIx64, holder);
    cJSON_AddStringToObject(wo, "id", id);
    if (w)
        cJSON_AddStringToObject(wo, "name", w->name);
    else
        cJSON_AddNullToObject(wo, "name");
    cJSON_AddBoolToObject(wo, "connected", w != NULL);
}

/* ---- request fields --------------------------------------------------- */

/* An optional integer field min..max (def when absent). -1 when bad. */
static int get_uint(const cJSON *req, const char *name, uint64_t def, uint64_t min, uint64_t max,
                    uint64_t *out, tq_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, name);
    *out = def;
    if (!v)
        return 0;
    if (tq_json_uint(v, min, max, out) < 0) {
        fail(err, TQ_ERR_MALFORMED, "ADMIN: \"%s\" must be an integer %" PRIu64 "..%" PRIu64, name,
             min, max);
        return -1;
    }
    return 0;
}

/* An optional name field ("queue", "fn"): *interned is the interned
 * name, or NULL when absent; *unknown = 1 when valid but not interned
 * (then nothing can match). -1 when not a valid name. */
static int get_name(const tq_store_t *store, const cJSON *req, const char *field,
                    const char **interned, int *unknown, tq_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, field);
    *interned = NULL;
    *unknown = 0;
    if (!v)
        return 0;
    if (!cJSON_IsString(v) || !tq_name_valid(tq_bytes_str(v->valuestring))) {
        fail(err, cJSON_IsString(v) ? TQ_ERR_BAD_NAME : TQ_ERR_MALFORMED,
             "ADMIN: \"%s\" is not a valid name", field);
        return -1;
    }
    *interned = tq_store_lookup(store, tq_bytes_str(v->valuestring));
    *unknown = *interned == NULL;
    return 0;
}

/* ---- show --------------------------------------------------------------- */

static cJSON *show_one(const tq_store_t *store, const tq_peers_t *peers, uint64_t id, int payload)
{
    cJSON *o = cJSON_CreateObject();
    tq_inspect_add_id(o, id);
    const tq_task_t *t = tq_store_get(store, id);
    if (!t) {
        cJSON_AddStringToObject(o, "state", "unknown");
        return o;
    }
    cJSON_AddStringToObject(o, "state", tq_inspect_state(t));
    cJSON_AddStringToObject(o, "queue", tq_queue_name(tq_task_queue(t)));
    cJSON_AddStringToObject(o, "fn", tq_task_fn(t));
    cJSON_AddNumberToObject(o, "priority", tq_task_priority(t));
    cJSON_AddNumberToObject(o, "timeout_ms", tq_task_timeout(t));
    cJSON_AddNumberToObject(o, "attempts", tq_task_attempt(t));
    cJSON_AddNumberToObject(o, "retries", t->retries);
    cJSON_AddNumberToObject(o, "retried", tq_task_retried(t));
    add_worker(o, peers, t);
    add_time(o, "submitted_ms", t->created_ms);
    add_time(o, "not_before_ms", t->state == TQ_TASK_QUEUED ? tq_task_not_before(t) : 0);
    add_time(o, "started_ms", t->state != TQ_TASK_QUEUED ? tq_task_started_ms(t) : 0);
    add_time(o, "finished_ms", tq_task_finished_ms(t));
    add_time(o, "expires_ms", tq_task_expires_ms(t));
    cJSON_AddBoolToObject(o, "delivered", tq_task_fetched(t));
    cJSON_AddNumberToObject(o, "waiters", (double)tq_task_nwaiters(t));
    if (tq_task_finished(t) && t->state != TQ_TASK_CANCELLED)
        tq_inspect_add_text(o, t->state == TQ_TASK_DONE ? "result" : "error", tq_task_data(t),
                            SHOW_DATA_MAX);
    tq_bytes_t p = tq_task_payload(t);
    cJSON_AddNumberToObject(o, "payload_bytes", (double)p.len);
    if (payload && (!tq_task_finished(t) || p.len))
        tq_inspect_add_text(o, "payload", p, SHOW_DATA_MAX);
    else if (payload)
        cJSON_AddNullToObject(o, "payload"); /* not kept once finished (but failed, dead) */
    if (tq_task_keyed(t)) {
        const tq_key_t *k = tq_store_key_of(store, t, TQ_INSPECT_KEY_SCAN);
        if (k)
            tq_inspect_add_text(o, "key", tq_key_bytes(k), TQ_MAX_KEY);
        else
            cJSON_AddNullToObject(o, "key"); /* retention passed, or not found in the scan */
        cJSON_AddBoolToObject(o, "keyed", 1);
    } else {
        cJSON_AddNullToObject(o, "key");
        cJSON_AddBoolToObject(o, "keyed", 0);
    }
    return o;
}

void *tq_inspect_show(const tq_store_t *store, const tq_peers_t *peers, const void *reqv,
                      tq_err_t *err)
{
    const cJSON *req = reqv;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(req, "ids");
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(req, "payload");
    int n = cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : -1;
    if (n < 1 || n > TQ_MAX_SHOW_IDS)
        return fail(err, n > TQ_MAX_SHOW_IDS ? TQ_ERR_TOO_MANY : TQ_ERR_MALFORMED,
                    "ADMIN: show needs \"ids\": an array of 1..%d task ids", TQ_MAX_SHOW_IDS);
    if (pl && !cJSON_IsBool(pl))
        return fail(err, TQ_ERR_MALFORMED, "ADMIN: \"payload\" must be true or false");
    const cJSON *it;
    uint64_t id;
    cJSON_ArrayForEach(it, ids)
    {
        if (tq_json_uint(it, 1, UINT64_MAX, &id) < 0)
            return fail(err, TQ_ERR_MALFORMED, "ADMIN: \"ids\" must hold positive integers");
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tasks");
    cJSON_ArrayForEach(it, ids)
    {
        tq_json_uint(it, 1, UINT64_MAX, &id); /* checked above */
        cJSON_AddItemToArray(arr, show_one(store, peers, id, cJSON_IsTrue(pl)));
    }
    return doc;
}

/* ---- list ----------------------------------------------------------------- */

/* The "state" filter: a tq_inspect_state name, or "" (any). */
static const char *const STATES[] = {"queued", "delayed", "running",  "done",
                                     "failed", "dead",    "cancelled"};

/* One list row: what a table needs, without the bytes. */
static cJSON *list_row(const tq_peers_t *peers, const tq_task_t *t)
{
    cJSON *o = cJSON_CreateObject();
    tq_inspect_add_id(o, t->id);
    cJSON_AddStringToObject(o, "state", tq_inspect_state(t));
    cJSON_AddStringToObject(o, "queue", tq_queue_name(tq_task_queue(t)));
    cJSON_AddStringToObject(o, "fn", tq_task_fn(t));
    cJSON_AddNumberToObject(o, "priority", tq_task_priority(t));
    cJSON_AddNumberToObject(o, "attempts", tq_task_attempt(t));
    add_time(o, "submitted_ms", t->created_ms);
    if (t->state == TQ_TASK_QUEUED && tq_task_not_before(t))
        add_time(o, "not_before_ms", tq_task_not_before(t));
    if (t->state == TQ_TASK_LEASED)
        add_worker(o, peers, t);
    if (tq_task_finished(t))
        add_time(o, "finished_ms", tq_task_finished_ms(t));
    if (t->state == TQ_TASK_FAILED || t->state == TQ_TASK_DEAD)
        tq_inspect_add_text(o, "error", tq_task_data(t), LIST_ERROR_MAX);
    cJSON_AddNumberToObject(o, "payload_bytes", (double)tq_task_payload(t).len);
    return o;
}

static void *list_impl(const tq_store_t *store, const tq_peers_t *peers, const cJSON *req,
                       const char *force_state, tq_err_t *err)
{
    const char *queue, *fn;
    int qunknown, funknown;
    uint64_t limit, after;
    if (get_name(store, req, "queue", &queue, &qunknown, err) < 0 ||
        get_name(store, req, "fn", &fn, &funknown, err) < 0 ||
        get_uint(req, "limit", 100, 1, TQ_MAX_ADMIN_LIST, &limit, err) < 0 ||
        get_uint(req, "after", 0, 0, UINT64_MAX, &after, err) < 0)
        return NULL;
    const char *state = force_state;
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(req, "state");
    if (!state && sv) {
        for (size_t i = 0; i < sizeof STATES / sizeof STATES[0] && !state; i++)
            if (cJSON_IsString(sv) && strcmp(sv->valuestring, STATES[i]) == 0)
                state = STATES[i];
        if (!state)
            return fail(err, TQ_ERR_MALFORMED,
                        "ADMIN: \"state\" must be one of queued, delayed, running, done, failed, "
                        "dead, cancelled");
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tasks");
    size_t n = 0, examined = 0;
    uint64_t last = after;
    int more = 0;
    if (!qunknown && !funknown && after < UINT64_MAX) {
        /* dead tasks have a list of their own, in id order: followed from
         * its head, or from a dead task (else the walk to `after` along
         * it would not be bounded) */
        const tq_task_t *a = after ? tq_store_get(store, after) : NULL;
        int dead = state && strcmp(state, "dead") == 0 &&
                   (!after || (a && a->state == TQ_TASK_DEAD));
        tq_task_t *t = dead ? (after ? tq_store_dead_after(store, after)
                                     : tq_store_dead_first(store))
                            : tq_store_from(store, after + 1);
        for (; t; t = dead ? tq_store_dead_next(t) : tq_store_next(store, t)) {
            if (n == limit || examined == TQ_INSPECT_SCAN) {
                more = 1;
                break;
            }
            examined++;
            last = t->id;
            if ((queue && tq_queue_name(tq_task_queue(t)) != queue) ||
                (fn && tq_task_fn(t) != fn) || (state && strcmp(tq_inspect_state(t), state) != 0))
                continue;
            cJSON_AddItemToArray(arr, list_row(peers, t));
            n++;
        }
    }
    cJSON_AddBoolToObject(doc, "more", more);
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, last);
    cJSON_AddItemToObject(doc, "next_after", cJSON_CreateRaw(text));
    cJSON_AddNumberToObject(doc, "examined", (double)examined);
    return doc;
}

void *tq_inspect_list(const tq_store_t *store, const tq_peers_t *peers, const void *req,
                      tq_err_t *err)
{
    return list_impl(store, peers, req, NULL, err);
}

void *tq_inspect_failed(const tq_store_t *store, const tq_peers_t *peers, const void *req,
                        tq_err_t *err)
{
    if (cJSON_GetObjectItemCaseSensitive(req, "state"))
        return fail(err, TQ_ERR_MALFORMED,
                    "ADMIN: \"failed\" takes no \"state\" (it lists failed tasks)");
    return list_impl(store, peers, req, "failed", err);
}

/* ---- status rows ------------------------------------------------------- */

/* The row of interned fn (made when new, while there is room). */
static tq_inspect_fnrow_t *fn_row(tq_idmap_t *map, tq_inspect_fnrow_t *rows, size_t *nrows,
                                  size_t cap, const char *fn)
{
    tq_inspect_fnrow_t *r = tq_idmap_get(map, (uint64_t)(uintptr_t)fn);
    if (r || *nrows == cap)
        return r;
    r = &rows[(*nrows)++];
    *r = (tq_inspect_fnrow_t){.fn = fn};
    tq_idmap_put(map, (uint64_t)(uintptr_t)fn, r);
    return r;
}

size_t tq_inspect_fn_rows(const tq_store_t *store, const tq_peers_t *peers,
                          tq_inspect_fnrow_t **out)
{
    size_t cap = tq_store_nnames(store) + 1, nrows = 0;
    tq_inspect_fnrow_t *rows = tq_calloc(cap, sizeof *rows);
    tq_idmap_t *map = tq_idmap_new();
    for (size_t i = 0, nq = tq_store_nqueues(store); i < nq; i++) {
        const tq_queue_t *q = tq_store_queue_at(store, i);
        for (size_t h = 0; h < tq_queue_nheaps(q); h++) {
            const char *fn;
            size_t queued = tq_queue_heap_at(q, h, &fn);
            tq_inspect_fnrow_t *r = fn_row(map, rows, &nrows, cap, fn);
            if (r)
                r->queued += queued;
        }
    }
    for (size_t i = 0, np = tq_peers_count(peers); i < np; i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->role != TQ_ROLE_WORKER || p->gone)
            continue;
        for (size_t k = 0; k < p->nfns; k++) {
            tq_inspect_fnrow_t *r = fn_row(map, rows, &nrows, cap, p->fns[k]);
            if (r && !p->draining)
                r->workers++;
        }
        for (size_t k = 0; k < p->nleased; k++) {
            tq_inspect_fnrow_t *r = fn_row(map, rows, &nrows, cap, tq_task_fn(p->leased[k]));
            if (r)
                r->running++;
        }
    }
    tq_idmap_destroy(&map);
    /* drop the empty rows (heaps not pruned yet) */
    size_t n = 0;
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].queued || rows[i].running || rows[i].workers)
            rows[n++] = rows[i];
    *out = rows;
    return n;
}

void tq_inspect_functions(const tq_store_t *store, const tq_peers_t *peers, void *doc)
{
    tq_inspect_fnrow_t *rows;
    size_t n = tq_inspect_fn_rows(store, peers, &rows);
    cJSON *arr = cJSON_AddArrayToObject(doc, "functions");
    for (size_t i = 0; i < n && i < FN_ROWS_MAX; i++) {
        tq_inspect_fnrow_t *r = &rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->fn);
        cJSON_AddNumberToObject(o, "queued", (double)r->queued);
        cJSON_AddNumberToObject(o, "running", (double)r->running);
        cJSON_AddNumberToObject(o, "workers", (double)r->workers);
        cJSON_AddBoolToObject(o, "unserved", r->queued > 0 && r->workers == 0);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddNumberToObject(doc, "functions_total", (double)n);
    free(rows);
}

void tq_inspect_running(const tq_peer_t *w, void *o)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "running");
    size_t n = w->nleased < TQ_INSPECT_RUNNING_IDS ? w->nleased : TQ_INSPECT_RUNNING_IDS;
    char text[24];
    for (size_t i = 0; i < n; i++) {
        snprintf(text, sizeof text, "%" PRIu64, w->leased[i]->id);
        cJSON_AddItemToArray(arr, cJSON_CreateRaw(text));
    }
    cJSON_AddBoolToObject(o, "running_truncated", w->nleased > n);
}
