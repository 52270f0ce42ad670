/* admin.c - ADMIN requests (proto/PROTOCOL.md): list, retry and purge
 * the dead set; pause and resume queues. The paused set lives in
 * DATA_DIR/paused, one queue name per line, replaced atomically (write a
 * temporary file, fsync, rename, fsync the directory) on every change,
 * so it survives restarts without a journal record type. The writing is
 * done by an actor thread (pausefile.c), never by the loop: a pause or
 * resume takes effect at once, and its ADMIN_REPLY waits in the list
 * below until the file that holds it is durable. */
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

#include "loop_internal.h"
#include "pausefile.h"
#include "tq_log.h"
#include "tq_util.h"

/* A dead task's error text in a "dead" listing is cut to this many
 * bytes, and a listing stops adding tasks once its error texts reach
 * ADMIN_LIST_BYTES, so one reply stays well under TQ_MAX_STATUS_JSON. */
#define ADMIN_ERROR_MAX 4096
#define ADMIN_LIST_BYTES (4u * 1024u * 1024u)
/* The paused file holds at most every queue name: bounded like them. */
#define PAUSED_FILE_MAX ((size_t)TQ_STORE_MAX_NAMES * (TQ_MAX_NAME + 1))

/* ---- the paused file ------------------------------------------------------ */

static int paused_path(const tq_loop_t *self, const char *suffix, char *out, size_t len) {
    int n = snprintf(out, len, "%s/paused%s", self->cfg.journal.data_dir, suffix);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int tq_admin_load(tq_loop_t *self, char *err, size_t errlen) {
    char path[4096];
    if (paused_path(self, "", path, sizeof path) < 0) {
        snprintf(err, errlen, "--data-dir: path too long");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[TQ_MAX_NAME + 2];
    size_t lineno = 0, total = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        total += n;
        int whole = n > 0 && line[n - 1] == '\n';
        if (whole)
            line[--n] = '\0';
        tq_bytes_t name = {(const uint8_t *)line, n};
        if (total > PAUSED_FILE_MAX || (!whole && !feof(f)) || (n && !tq_name_valid(name))) {
            snprintf(err, errlen, "%s line %zu: not a queue name (remove the line or the file)",
                     path, lineno);
            rc = -1;
            break;
        }
        tq_queue_t *q = n ? tq_store_queue(self->store, name) : NULL;
        if (q) {
            tq_queue_set_paused(q, 1);
            tq_info("queue %s is paused (%s)", line, path);
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* Pause/resume replies waiting for the paused file: beyond this many
 * a request is refused (UNAVAILABLE) rather than held without bound. */
#define ADMIN_MAX_WAITING 4096

/* A pause or resume whose reply waits until the file holding it is
 * durable (save number seq). */
typedef struct {
    uint8_t rid[TQ_MAX_ROUTING_ID];
    size_t rid_len;
    uint32_t req;
    char queue[TQ_MAX_NAME + 1];
    int pause, changed;
    uint64_t seq;
} admin_wait_t;

struct tq_admin_state {
    tq_pausefile_t *pf;
    uint64_t inflight; /* save being written (0: none) */
    int dirty;         /* changed since that save's contents were taken */
    admin_wait_t *w;
    size_t nw, capw;
};

int tq_admin_open(tq_loop_t *self, char *err, size_t errlen) {
    tq_admin_state_t *a = tq_calloc(1, sizeof *a);
    a->pf = tq_pausefile_new(self->ctx, self->cfg.journal.data_dir, err, errlen);
    if (!a->pf) {
        free(a);
        return -1;
    }
    self->admin = a;
    return 0;
}

static int paused_save(tq_loop_t *self);

void tq_admin_close(tq_loop_t *self) {
    tq_admin_state_t *a = self->admin;
    if (!a)
        return;
    if (a->dirty && paused_save(self) == 0) /* a change made while a save was in flight */
        a->dirty = 0;
    tq_pausefile_destroy(&a->pf); /* finishes the saves handed over */
    if (a->dirty)
        tq_warn("cannot save %s/paused at shutdown: the last pause/resume may be lost",
                self->cfg.journal.data_dir);
    else if (a->nw)
        tq_info("paused queues saved at shutdown; %zu pause/resume repl%s not sent", a->nw,
                a->nw == 1 ? "y" : "ies");
    free(a->w);
    free(a);
    self->admin = NULL;
}

void *tq_admin_socket(tq_loop_t *self) { return tq_pausefile_socket(self->admin->pf); }

/* Hand the queues paused now to the writer. Returns 0, or -1 with errno. */
static int paused_save(tq_loop_t *self) {
    tq_admin_state_t *a = self->admin;
    tq_buf_t b;
    tq_buf_init(&b);
    for (size_t i = 0; i < tq_store_nqueues(self->store); i++) {
        const tq_queue_t *q = tq_store_queue_at(self->store, i);
        if (!tq_queue_paused(q))
            continue;
        tq_buf_put(&b, tq_queue_name(q), strlen(tq_queue_name(q)));
        tq_buf_put(&b, "\n", 1);
    }
    uint64_t seq = tq_pausefile_save(a->pf, b.data, b.len);
    int e = errno;
    tq_buf_free(&b);
    if (!seq) {
        errno = e;
        return -1;
    }
    a->inflight = seq;
    a->dirty = 0;
    return 0;
}

/* The save a change made now will be durable with: the one in flight
 * if its contents are not taken yet, else the next. Starts a save when
 * none is in flight. Returns its number, or 0 with errno. */
static uint64_t paused_changed(tq_loop_t *self) {
    tq_admin_state_t *a = self->admin;
    if (a->inflight) {
        a->dirty = 1;
        return a->inflight + 1; /* saves are numbered one by one */
    }
    return paused_save(self) < 0 ? 0 : a->inflight;
}

static void send_pause_reply(tq_loop_t *self, const admin_wait_t *w, int err) {
    tq_bytes_t rid = {w->rid, w->rid_len};
    tq_peer_t *p = tq_peers_find(self->peers, rid);
    if (!p)
        return; /* it left meanwhile */
    if (err) {
        char msg[TQ_MAX_ERROR_TEXT];
        snprintf(msg, sizeof msg, "cannot save the paused queues: %s", strerror(err));
        tq_loop_reply_error(self, rid, TQ_ERR_UNAVAILABLE, w->req, msg);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "queue", w->queue);
    cJSON_AddBoolToObject(doc, "paused", w->pause);
    cJSON_AddBoolToObject(doc, "changed", w->changed);
    cJSON_AddNumberToObject(doc, "req", (double)w->req);
    cJSON_AddBoolToObject(doc, "ok", 1);
    tq_out_json(&self->out, TQ_MSG_ADMIN_REPLY, doc);
    cJSON_Delete(doc);
    tq_loop_send_peer(self, p);
}

void tq_admin_on_saved(tq_loop_t *self) {
    tq_admin_state_t *a = self->admin;
    uint64_t seq;
    int err;
    while (tq_pausefile_done(a->pf, &seq, &err)) {
        if (seq >= a->inflight)
            a->inflight = 0;
        if (err)
            tq_error("cannot save %s/paused: %s", self->cfg.journal.data_dir, strerror(err));
        int reverted = 0;
        size_t k = 0;
        for (size_t i = 0; i < a->nw; i++) {
            admin_wait_t *w = &a->w[i];
            if (w->seq > seq) {
                a->w[k++] = *w;
                continue;
            }
            if (err && w->changed) { /* not durable: undo it, as if never asked */
                tq_queue_t *q = tq_store_queue(self->store, tq_bytes_str(w->queue));
                if (q && tq_queue_paused(q) == w->pause) {
                    tq_queue_set_paused(q, !w->pause);
                    reverted = 1;
                    if (w->pause)
                        self->sched_dirty = 1;
                }
            }
            if (!err)
                tq_info("queue %s %s (saved)", w->queue, w->pause ? "paused" : "resumed");
            send_pause_reply(self, w, err);
        }
        a->nw = k;
        if (reverted)
            a->dirty = 1; /* the file must say what memory says again */
    }
    if (!a->inflight && a->dirty && paused_save(self) < 0) {
        int e = errno;
        tq_error("cannot save %s/paused: %s", self->cfg.journal.data_dir, strerror(e));
        for (size_t i = 0; i < a->nw; i++)
            send_pause_reply(self, &a->w[i], e);
        a->nw = 0;
        a->dirty = 0;
    }
}

/* ---- requests ---------------------------------------------------------------- */

/* One request being answered. */
typedef struct {
    tq_loop_t *loop;
    tq_peer_t *peer;
    uint32_t req;
    const cJSON *j;
} admin_t;

static void fail(admin_t *a, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(admin_t *a, int code, const char *fmt, ...) {
    char msg[TQ_MAX_ERROR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tq_loop_warn_peer(a->loop, a->peer, a->peer->address, "%s", msg);
    tq_loop_reply_error(a->loop, tq_loop_rid(a->peer), code, a->req, msg);
}

static void reply(admin_t *a, cJSON *doc) {
    cJSON_AddNumberToObject(doc, "req", (double)a->req);
    cJSON_AddBoolToObject(doc, "ok", 1);
    tq_out_json(&a->loop->out, TQ_MSG_ADMIN_REPLY, doc);
    cJSON_Delete(doc);
    tq_loop_send_peer(a->loop, a->peer);
}

/* An optional non-negative integer field no larger than max: 0 when
 * absent (*out = def), -1 (after an ERROR reply) when not valid. */
static int get_uint(admin_t *a, const char *name, uint64_t def, uint64_t max, uint64_t *out) {
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
static int get_queue(admin_t *a, int required, tq_queue_t **q) {
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
    if (!tq_store_name_known(a->loop->store, name) &&
        tq_peer_take_name(a->peer, tq_mono_ms()) < 0) {
        fail(a, TQ_ERR_TOO_MANY,
             "ADMIN: too many new queue and function names from this connection (at most %d at "
             "once, then %d a second)",
             TQ_PEER_NEW_NAMES_BURST, TQ_PEER_NEW_NAMES_PER_S);
        return -1;
    }
    *q = tq_store_queue(a->loop->store, name);
    if (!*q) {
        fail(a, TQ_ERR_TOO_MANY, "ADMIN: too many queue and function names");
        return -1;
    }
    return 0;
}

/* "id": the id as an exact integer (cJSON would print a double, and
 * 16-digit ids in exponent form). */
static void add_id(cJSON *o, uint64_t id) {
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, id);
    cJSON_AddItemToObject(o, "id", cJSON_CreateRaw(text));
}

/* Add t's error text as "error" (UTF-8) or "error_base64", cut to
 * ADMIN_ERROR_MAX bytes. */
static void add_error(cJSON *o, const tq_task_t *t) {
    tq_bytes_t d = tq_task_data(t);
    size_t len = d.len > ADMIN_ERROR_MAX ? ADMIN_ERROR_MAX : d.len;
    const char *data = d.data ? (const char *)d.data : "";
    if (len < d.len) {
        while (len > 0 && ((unsigned char)data[len] & 0xC0) == 0x80)
            len--; /* do not cut a UTF-8 sequence in two */
        cJSON_AddBoolToObject(o, "error_truncated", 1);
    }
    if (tq_utf8_valid(data, len) && !memchr(data, '\0', len)) {
        char *s = tq_malloc(len + 1);
        memcpy(s, data, len);
        s[len] = '\0';
        cJSON_AddStringToObject(o, "error", s);
        free(s);
        return;
    }
    size_t blen = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b = tq_malloc(blen);
    sodium_bin2base64(b, blen, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
    cJSON_AddStringToObject(o, "error_base64", b);
    free(b);
}

static void op_dead(admin_t *a) {
    tq_queue_t *q;
    uint64_t after, limit;
    if (get_queue(a, 0, &q) < 0 || get_uint(a, "after", 0, UINT64_MAX, &after) < 0 ||
        get_uint(a, "limit", TQ_MAX_ADMIN_LIST, TQ_MAX_ADMIN_LIST, &limit) < 0)
        return;
    if (limit == 0) {
        fail(a, TQ_ERR_MALFORMED, "ADMIN: \"limit\" must be 1..%d", TQ_MAX_ADMIN_LIST);
        return;
    }
    tq_task_t *t = tq_store_dead_after(a->loop->store, after);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tasks");
    size_t n = 0, bytes = 0;
    for (; t && n < limit && bytes < ADMIN_LIST_BYTES; t = tq_store_dead_next(t)) {
        if (q && tq_task_queue(t) != q)
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
    while (t && q && tq_task_queue(t) != q)
        t = tq_store_dead_next(t);
    cJSON_AddBoolToObject(doc, "more", t != NULL);
    reply(a, doc);
}

/* retry (purge = 0) or purge (purge = 1) of "ids" or "all". */
static void op_retry_purge(admin_t *a, int purge) {
    static const char *done_word[] = {"retried", "purged"};
    tq_store_t *store = a->loop->store;
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
        cJSON_ArrayForEach(it, ids) {
            if (tq_json_uint(it, 1, UINT64_MAX, &id) < 0) {
                cJSON_Delete(doc);
                fail(a, TQ_ERR_MALFORMED, "ADMIN: \"ids\" must hold positive integers");
                return;
            }
        }
        cJSON *items = cJSON_AddArrayToObject(doc, "items");
        cJSON_ArrayForEach(it, ids) {
            tq_json_uint(it, 1, UINT64_MAX, &id); /* checked above */
            tq_task_t *t = tq_store_get(store, id);
            const char *outcome = !t ? "unknown" : t->state != TQ_TASK_DEAD ? "not dead" : NULL;
            if (!outcome) {
                if (purge)
                    tq_store_purge(store, t);
                else
                    tq_store_revive(store, t);
                outcome = done_word[purge];
                count++;
            }
            cJSON *o = cJSON_CreateObject();
            add_id(o, id);
            cJSON_AddStringToObject(o, "outcome", outcome);
            cJSON_AddItemToArray(items, o);
        }
    } else {
        tq_task_t *t = tq_store_dead_first(store);
        while (t) {
            tq_task_t *next = tq_store_dead_next(t);
            if (!q || tq_task_queue(t) == q) {
                if (purge)
                    tq_store_purge(store, t);
                else
                    tq_store_revive(store, t);
                count++;
            }
            t = next;
        }
    }
    if (count)
        tq_info("%s %zu dead task%s", done_word[purge], count, count == 1 ? "" : "s");
    if (count && !purge)
        a->loop->sched_dirty = 1;
    cJSON_AddNumberToObject(doc, "count", (double)count);
    reply(a, doc);
}

/* pause / resume: the change is made at once; the reply goes when the
 * paused file that holds it is durable (tq_admin_on_saved). */
static void op_pause(admin_t *a, int pause) {
    tq_admin_state_t *st = a->loop->admin;
    tq_queue_t *q;
    if (get_queue(a, 1, &q) < 0)
        return;
    if (st->nw >= ADMIN_MAX_WAITING) {
        fail(a, TQ_ERR_UNAVAILABLE, "ADMIN: %zu pause/resume requests wait for the disk; retry later",
             st->nw);
        return;
    }
    int changed = tq_queue_paused(q) != pause;
    uint64_t seq = 0;
    if (changed) {
        tq_queue_set_paused(q, pause);
        seq = paused_changed(a->loop);
        if (!seq) {
            int e = errno;
            tq_queue_set_paused(q, !pause);
            tq_error("cannot save %s/paused: %s", a->loop->cfg.journal.data_dir, strerror(e));
            fail(a, TQ_ERR_UNAVAILABLE, "cannot save the paused queues: %s", strerror(e));
            return;
        }
        if (!pause)
            a->loop->sched_dirty = 1;
    } else if (st->inflight) {
        seq = st->dirty ? st->inflight + 1 : st->inflight; /* the state it reports */
    }
    admin_wait_t w = {.rid_len = a->peer->rid_len, .req = a->req, .pause = pause,
                      .changed = changed, .seq = seq};
    memcpy(w.rid, a->peer->rid, a->peer->rid_len);
    tq_strlcpy(w.queue, tq_queue_name(q), sizeof w.queue);
    if (!seq) {
        send_pause_reply(a->loop, &w, 0);
        return;
    }
    if (st->nw == st->capw) {
        st->capw = st->capw ? st->capw * 2 : 16;
        st->w = tq_realloc(st->w, st->capw * sizeof *st->w);
    }
    st->w[st->nw++] = w;
}

void tq_admin_handle(tq_loop_t *self, tq_peer_t *p, tq_bytes_t body) {
    admin_t a = {self, p, 0, NULL};
    void *j = NULL;
    tq_error_t err;
    if (tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err) < 0) {
        fail(&a, err.code, "ADMIN: %s", err.msg);
        return;
    }
    a.j = j;
    uint64_t req;
    if (get_uint(&a, "req", 0, UINT32_MAX, &req) < 0) {
        cJSON_Delete(j);
        return;
    }
    a.req = (uint32_t)req;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(a.j, "op");
    const char *o = cJSON_IsString(op) ? op->valuestring : "";
    if (strcmp(o, "dead") == 0)
        op_dead(&a);
    else if (strcmp(o, "retry") == 0)
        op_retry_purge(&a, 0);
    else if (strcmp(o, "purge") == 0)
        op_retry_purge(&a, 1);
    else if (strcmp(o, "pause") == 0)
        op_pause(&a, 1);
    else if (strcmp(o, "resume") == 0)
        op_pause(&a, 0);
    else
        fail(&a, TQ_ERR_MALFORMED, "ADMIN: unknown \"op\" (dead, retry, purge, pause, resume)");
    cJSON_Delete(j);
}
