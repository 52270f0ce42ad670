/* scheduler.c - routing by function, credit, fair spread. See scheduler.h. */
#include "scheduler.h"

#include <stdlib.h>

#include "tq_util.h"

/* One eligible worker's batch under construction. */
typedef struct {
    tq_peer_t *w;
    tq_task_t **tasks; /* up to TQ_MAX_BATCH */
    size_t n;
    size_t bytes;
} slot_t;

static void flush(slot_t *s, tq_sched_emit_fn emit, void *arg) {
    if (s->n)
        emit(arg, s->w, s->tasks, s->n);
    s->n = 0;
    s->bytes = 0;
}

/* Best task for worker w, queues round-robin from *qrr. */
static tq_task_t *pick(const tq_store_t *store, tq_peer_t *w, size_t *qrr) {
    size_t nq = tq_store_nqueues(store);
    for (size_t i = 0; i < nq; i++) {
        size_t qi = (*qrr + i) % nq;
        tq_task_t *t = tq_queue_best(tq_store_queue_at(store, qi), w->fns, w->nfns);
        if (t) {
            *qrr = (qi + 1) % nq;
            return t;
        }
    }
    return NULL;
}

/* A worker that may get tasks in this run. */
static int eligible(const tq_peer_t *w) {
    return w->role == TQ_ROLE_WORKER && !w->draining && !w->gone && !w->stalled &&
           w->credit > 0 && w->nfns > 0;
}

size_t tq_sched_run(tq_engine_t *engine, tq_peers_t *peers, tq_now_t now, tq_sched_emit_fn emit,
                    void *arg) {
    tq_store_t *store = tq_engine_store(engine);
    tq_queue_counts_t c;
    tq_store_counts(store, &c);
    if (c.queued == 0)
        return 0;

    /* One scratch region: the eligible workers' slot_t entries, then a
     * slice of task pointers per worker (its credit, at most a batch). */
    size_t np = tq_peers_count(peers), ns = 0, ntasks = 0;
    size_t *rr = tq_peers_rr(peers);
    for (size_t k = 0; k < np; k++) {
        tq_peer_t *w = tq_peers_at(peers, k);
        if (eligible(w))
            ntasks += w->credit < TQ_MAX_BATCH ? w->credit : TQ_MAX_BATCH;
    }
    size_t head = (np ? np : 1) * sizeof(slot_t);
    slot_t *slots = tq_peers_scratch(peers, head + ntasks * sizeof(tq_task_t *));
    tq_task_t **arena = (tq_task_t **)(void *)((char *)slots + head);
    for (size_t k = 0; k < np; k++) {
        tq_peer_t *w = tq_peers_at(peers, (*rr + k) % np);
        if (!eligible(w))
            continue;
        slots[ns] = (slot_t){.w = w, .tasks = arena};
        arena += w->credit < TQ_MAX_BATCH ? w->credit : TQ_MAX_BATCH;
        ns++;
    }
    if (np)
        *rr = (*rr + 1) % np; /* next run starts with another worker */

    size_t *qrr_p = tq_peers_qrr(peers);
    size_t qrr = *qrr_p;
    size_t leased = 0;
    size_t active = ns;
    while (active > 0) {
        active = 0;
        for (size_t k = 0; k < ns; k++) {
            slot_t *s = &slots[k];
            if (!s->w || s->w->credit == 0 || s->w->gone || s->w->stalled)
                continue;
            tq_task_t *t = pick(store, s->w, &qrr);
            /* Beyond its slots a worker only takes tasks without a run
             * timeout: a prefetched task waits there, and the lease of a
             * task with a timeout expires timeout + 2 heartbeats after
             * dispatch, not after the run starts. */
            if (t && tq_task_timeout(t) && s->w->nleased >= s->w->slots)
                t = NULL;
            if (!t) {
                flush(s, emit, arg);
                s->w = NULL; /* nothing it can run: out of this round */
                continue;
            }
            if (s->n > 0 && (s->n == TQ_MAX_BATCH || s->bytes + t->payload_len > TQ_BATCH_BYTES))
                flush(s, emit, arg);
            tq_engine_lease(engine, t, s->w, s->w->instance, now);
            tq_peer_lease_add(s->w, t);
            s->w->credit--;
            s->tasks[s->n++] = t;
            s->bytes += t->payload_len;
            leased++;
            active++;
        }
    }
    for (size_t k = 0; k < ns; k++)
        if (slots[k].w)
            flush(&slots[k], emit, arg);
    *qrr_p = qrr;
    return leased;
}
