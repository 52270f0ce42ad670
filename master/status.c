/* status.c - the STATUS_REPLY document. See status.h. */
#include "status.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"
#include "tq_util.h"

/* Samples kept: one a second over the rate window, plus one. */
#define RATE_SAMPLES 11
/* Longest lists in one document. The loop builds the whole reply at
 * once, so these bound the time one STATUS holds it (about 300 bytes
 * and a few microseconds a row) and keep the document far below
 * TQ_MAX_STATUS_JSON (16 MiB); "queues_total" / "workers_total" say how
 * many there are, and "queue_offset" in the request pages through the
 * queues. */
#define STATUS_MAX_WORKERS 5000

typedef struct {
    int64_t t;
    uint64_t submitted, finished;
} sample_t;

struct tq_status {
    sample_t s[RATE_SAMPLES];
    size_t n, head; /* ring: head = next slot to write */
};

static uint64_t finished_of(const tq_store_totals_t *t) { return t->done; }

tq_status_t *tq_status_new(int64_t now_ms)
{
    tq_status_t *self = tq_calloc(1, sizeof *self);
    self->s[0].t = now_ms;
    self->n = 1;
    self->head = 1;
    return self;
}

void tq_status_destroy(tq_status_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

void tq_status_sample(tq_status_t *self, const tq_store_t *store, int64_t now_ms)
{
    const sample_t *last = &self->s[(self->head + RATE_SAMPLES - 1) % RATE_SAMPLES];
    if (now_ms - last->t < 900)
        return;
    const tq_store_totals_t *t = tq_store_totals(store);
    sample_t *s = &self->s[self->head];
    s->t = now_ms;
    s->submitted = t->submitted;
    s->finished = finished_of(t);
    self->head = (self->head + 1) % RATE_SAMPLES;
    if (self->n < RATE_SAMPLES)
        self->n++;
}

/* The oldest sample no older than the window (or the oldest one). */
static const sample_t *window_start(const tq_status_t *self, int64_t now_ms)
{
    const sample_t *best = NULL;
    for (size_t i = 0; i < self->n; i++) {
        const sample_t *s = &self->s[(self->head + RATE_SAMPLES - self->n + i) % RATE_SAMPLES];
        if (now_ms - s->t <= TQ_STATUS_RATE_WINDOW_MS + 500) {
            best = s;
            break;
        }
    }
    return best ? best : &self->s[(self->head + RATE_SAMPLES - 1) % RATE_SAMPLES];
}

static double rate(uint64_t now_v, uint64_t then_v, int64_t dt_ms)
{
    if (dt_ms <= 0 || now_v < then_v)
        return 0.0;
    double r = (double)(now_v - then_v) * 1000.0 / (double)dt_ms;
    return (double)(int64_t)(r * 100.0 + 0.5) / 100.0; /* two decimals */
}

void *tq_status_build(tq_status_t *self, const tq_store_t *store, const tq_peers_t *peers,
                      const tq_status_info_t *info, size_t queue_offset, int64_t now_ms)
{
    const tq_store_totals_t *t = tq_store_totals(store);
    tq_queue_counts_t c;
    tq_store_counts(store, &c);
    cJSON *doc = cJSON_CreateObject();

    cJSON *m = cJSON_AddObjectToObject(doc, "master");
    cJSON_AddStringToObject(m, "version", TQ_VERSION);
    cJSON_AddStringToObject(m, "endpoint", info->endpoint);
    cJSON_AddNumberToObject(m, "uptime_ms", (double)(now_ms - info->start_ms));
    cJSON_AddNumberToObject(m, "pid", (double)getpid());

    cJSON *jn = cJSON_AddObjectToObject(doc, "journal");
    cJSON_AddStringToObject(jn, "fsync", info->fsync ? info->fsync : "");
    cJSON_AddNumberToObject(jn, "bytes", (double)info->journal_bytes);
    cJSON_AddNumberToObject(jn, "live_bytes", (double)info->journal_live_bytes);
    cJSON_AddNumberToObject(jn, "compactions", (double)info->compactions);
    if (info->journal_error)
        cJSON_AddStringToObject(jn, "error", strerror(info->journal_error));
    else
        cJSON_AddNullToObject(jn, "error");

    cJSON *tot = cJSON_AddObjectToObject(doc, "totals");
    cJSON_AddNumberToObject(tot, "submitted", (double)t->submitted);
    cJSON_AddNumberToObject(tot, "dispatched", (double)t->dispatched);
    cJSON_AddNumberToObject(tot, "done", (double)t->done);
    /* A dead task is counted once: in "died", not in "failed". */
    cJSON_AddNumberToObject(tot, "failed", (double)t->failed);
    cJSON_AddNumberToObject(tot, "died", (double)t->dead);
    cJSON_AddNumberToObject(tot, "cancelled", (double)t->cancelled);
    cJSON_AddNumberToObject(tot, "requeued", (double)t->requeued);
    cJSON_AddNumberToObject(tot, "retried", (double)t->retried);
    cJSON_AddNumberToObject(tot, "late_results", (double)info->late_results);
    cJSON_AddNumberToObject(tot, "queued", (double)c.queued);
    cJSON_AddNumberToObject(tot, "running", (double)c.running);
    cJSON_AddNumberToObject(tot, "stored_results", (double)(c.done + c.failed + c.cancelled));
    cJSON_AddNumberToObject(tot, "tasks", (double)tq_store_size(store));
    cJSON_AddNumberToObject(tot, "delayed", (double)c.delayed);
    cJSON_AddNumberToObject(tot, "dead", (double)c.dead);
    cJSON_AddNumberToObject(tot, "revived", (double)t->revived);
    cJSON_AddNumberToObject(tot, "purged", (double)t->purged);
    cJSON_AddNumberToObject(tot, "names", (double)tq_store_nnames(store));

    const sample_t *w0 = window_start(self, now_ms);
    cJSON *r = cJSON_AddObjectToObject(doc, "rates");
    cJSON_AddNumberToObject(r, "submitted_per_s",
                            rate(t->submitted, w0->submitted, now_ms - w0->t));
    cJSON_AddNumberToObject(r, "done_per_s", rate(finished_of(t), w0->finished, now_ms - w0->t));

    cJSON *qs = cJSON_AddArrayToObject(doc, "queues");
    size_t nq = tq_store_nqueues(store);
    size_t qend = queue_offset < nq ? queue_offset : nq;
    qend = nq - qend > TQ_STATUS_QUEUE_ROWS ? qend + TQ_STATUS_QUEUE_ROWS : nq;
    cJSON_AddNumberToObject(doc, "queues_total", (double)nq);
    cJSON_AddNumberToObject(doc, "queue_offset", (double)queue_offset);
    cJSON_AddBoolToObject(doc, "queues_truncated", queue_offset > 0 || qend < nq);
    for (size_t i = queue_offset; i < qend; i++) {
        tq_queue_t *q = tq_store_queue_at(store, i);
        const tq_queue_counts_t *qc = tq_queue_counts(q);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", tq_queue_name(q));
        cJSON_AddNumberToObject(o, "queued", (double)qc->queued);
        cJSON_AddNumberToObject(o, "running", (double)qc->running);
        cJSON_AddNumberToObject(o, "done", (double)qc->done);
        cJSON_AddNumberToObject(o, "failed", (double)(qc->failed - qc->dead)); /* dead apart */
        cJSON_AddNumberToObject(o, "cancelled", (double)qc->cancelled);
        cJSON_AddNumberToObject(o, "delayed", (double)qc->delayed);
        cJSON_AddNumberToObject(o, "dead", (double)qc->dead);
        cJSON_AddBoolToObject(o, "paused", tq_queue_paused(q));
        int64_t head = tq_queue_head_created(q), wall = tq_wall_ms();
        if (head >= 0)
            cJSON_AddNumberToObject(o, "oldest_age_ms", (double)(wall > head ? wall - head : 0));
        else
            cJSON_AddNullToObject(o, "oldest_age_ms");
        cJSON_AddItemToArray(qs, o);
    }

    size_t np = tq_peers_count(peers), shown = 0, nworkers = 0;
    for (size_t i = 0; i < np; i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        nworkers += p->role == TQ_ROLE_WORKER && !p->gone;
    }
    cJSON_AddNumberToObject(doc, "workers_total", (double)nworkers);
    cJSON *ws = cJSON_AddArrayToObject(doc, "workers");
    for (size_t i = 0; i < np && shown < STATUS_MAX_WORKERS; i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->role != TQ_ROLE_WORKER || p->gone)
            continue;
        shown++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->name);
        char id[24];
        tq_worker_id(p, id, sizeof id);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "address", p->address);
        if (p->ident_name[0]) /* key-pair mode: whose key */
            cJSON_AddStringToObject(o, "identity", p->ident_name);
        cJSON_AddNumberToObject(o, "slots", p->slots);
        cJSON_AddNumberToObject(o, "prefetch", p->prefetch);
        cJSON_AddNumberToObject(o, "busy", (double)p->nleased);
        cJSON_AddNumberToObject(o, "credit", p->credit);
        cJSON *fns = cJSON_AddArrayToObject(o, "functions");
        for (size_t k = 0; k < p->nfns; k++)
            cJSON_AddItemToArray(fns, cJSON_CreateString(p->fns[k]));
        cJSON_AddStringToObject(o, "state",
                                p->draining ? (p->quiet ? "quiet" : "draining") : "active");
        cJSON_AddNumberToObject(o, "idle_ms", (double)(now_ms - p->last_seen_ms));
        cJSON_AddNumberToObject(o, "done", (double)p->done);
        tq_inspect_running(p, o);
        cJSON_AddItemToArray(ws, o);
    }
    tq_inspect_functions(store, peers, doc);
    cJSON_AddNumberToObject(doc, "clients", (double)tq_peers_count_role(peers, TQ_ROLE_CLIENT));
    /* key-pair mode: the clients with their identities (as many rows as
     * workers at most) */
    cJSON *cl = NULL;
    shown = 0;
    for (size_t i = 0; i < np && shown < STATUS_MAX_WORKERS; i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->role != TQ_ROLE_CLIENT || p->gone || !p->ident_name[0])
            continue;
        if (!cl)
            cl = cJSON_AddArrayToObject(doc, "client_identities");
        shown++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "address", p->address);
        cJSON_AddStringToObject(o, "identity", p->ident_name);
        cJSON_AddItemToArray(cl, o);
    }
    return doc;
}
