/* scheduler.c - routing by function, credit, fair spread. See scheduler.h. */
#include "scheduler.h"

#include <stdlib.h>

#include "tq_util.h"

/* One eligible worker while the plan is made: what it may still take,
 * and its planned tasks (a region of the arena). */
typedef struct {
    tq_peer_t *w;
    uint32_t credit; /* left in this plan */
    size_t leased;   /* its leases, with the plan's */
    tq_task_t **tasks;
    size_t n;
    int done; /* nothing more it can run */
} slot_t;

/* Append s's planned tasks to plan as DISPATCHes of at most
 * TQ_MAX_BATCH tasks and TQ_SEND_BYTES of payload (or one larger task). */
static void cut_batches(tq_sched_plan_t *plan, const slot_t *s)
{
    size_t i = 0;
    while (i < s->n) {
        tq_sched_batch_t *b = &plan->b[plan->n++];
        b->w = s->w;
        b->tasks = s->tasks + i;
        b->n = 0;
        size_t bytes = 0;
        while (i < s->n && b->n < TQ_MAX_BATCH &&
               (b->n == 0 || bytes + s->tasks[i]->payload_len <= TQ_SEND_BYTES)) {
            bytes += s->tasks[i]->payload_len;
            b->n++;
            i++;
        }
    }
}

/* Best task for worker w, queues round-robin from *qrr. */
static tq_task_t *pick(const tq_store_t *store, const tq_peer_t *w, size_t *qrr)
{
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
static int eligible(const tq_peer_t *w)
{
    return w->role == TQ_ROLE_WORKER && !w->draining && !w->gone && !w->stalled && w->credit > 0 &&
           w->nfns > 0;
}

size_t tq_sched_plan(tq_engine_t *engine, tq_peers_t *peers, tq_sched_plan_t *plan)
{
    tq_store_t *store = tq_engine_store(engine);
    plan->b = NULL;
    plan->n = 0;
    tq_queue_counts_t c;
    tq_store_counts(store, &c);
    if (c.queued == 0)
        return 0;

    /* One scratch region: the eligible workers' slot_t entries, the
     * batches, then each worker's planned tasks (room for its credit,
     * at most the queued tasks). */
    size_t np = tq_peers_count(peers), ns = 0, ntasks = 0;
    size_t *rr = tq_peers_rr(peers);
    for (size_t k = 0; k < np; k++) {
        tq_peer_t *w = tq_peers_at(peers, k);
        if (eligible(w))
            ntasks += w->credit < c.queued ? w->credit : c.queued;
    }
    size_t head = (np ? np : 1) * sizeof(slot_t);
    size_t bhead = (ntasks ? ntasks : 1) * sizeof(tq_sched_batch_t);
    char *mem = tq_peers_scratch(peers, head + bhead + ntasks * sizeof(tq_task_t *));
    slot_t *slots = (slot_t *)(void *)mem;
    tq_sched_batch_t *batches = (tq_sched_batch_t *)(void *)(mem + head);
    tq_task_t **arena = (tq_task_t **)(void *)(mem + head + bhead);
    for (size_t k = 0; k < np; k++) {
        tq_peer_t *w = tq_peers_at(peers, (*rr + k) % np);
        if (!eligible(w))
            continue;
        slots[ns] = (slot_t){.w = w,
                             .credit = w->credit < c.queued ? w->credit : (uint32_t)c.queued,
                             .leased = w->nleased,
                             .tasks = arena};
        arena += slots[ns].credit;
        ns++;
    }
    if (np)
        *rr = (*rr + 1) % np; /* next run starts with another worker */

    /* Tasks go one at a time round-robin over the workers, so a burst
     * is split evenly. */
    size_t *qrr_p = tq_peers_qrr(peers);
    size_t qrr = *qrr_p;
    size_t planned = 0;
    size_t active = ns;
    /* Free slots first: while any worker has a slot free (fewer leases
     * than slots), no task goes to wait in another worker's prefetch.
     * Then the prefetch, round-robin as well. */
    int prefetch_phase = 0;
    while (active > 0 || !prefetch_phase) {
        if (active == 0) {
            prefetch_phase = 1;
            for (size_t k = 0; k < ns; k++)
                slots[k].done = 0; /* out of a round only for the phase */
        }
        active = 0;
        for (size_t k = 0; k < ns; k++) {
            slot_t *s = &slots[k];
            if (s->done || s->credit == 0 || (!prefetch_phase && s->leased >= s->w->slots))
                continue;
            tq_task_t *t = pick(store, s->w, &qrr);
            /* Beyond its slots a worker only takes tasks without a run
             * timeout: a prefetched task waits there, and the lease of a
             * task with a timeout expires timeout + 2 heartbeats after
             * dispatch, not after the run starts. */
            if (t && tq_task_timeout(t) && s->leased >= s->w->slots)
                t = NULL;
            if (!t) {
                s->done = 1; /* nothing it can run: out of this round */
                continue;
            }
            tq_engine_hold(engine, t); /* the next pick sees the next task */
            s->tasks[s->n++] = t;
            s->credit--;
            s->leased++;
            planned++;
            active++;
        }
    }
    *qrr_p = qrr;

    plan->b = batches;
    for (size_t k = 0; k < ns; k++)
        cut_batches(plan, &slots[k]);
    return planned;
}

size_t tq_sched_commit(tq_engine_t *engine, const tq_sched_plan_t *plan, tq_now_t now,
                       tq_sched_send_fn send, void *arg)
{
    size_t leased = 0;
    for (size_t k = 0; k < plan->n; k++) {
        const tq_sched_batch_t *b = &plan->b[k];
        tq_peer_t *w = b->w;
        if (send(arg, w, b->tasks, b->n) < 0) {
            for (size_t i = 0; i < b->n; i++) /* not sent: never leased, nothing recorded */
                tq_engine_unhold(engine, b->tasks[i]);
            continue;
        }
        for (size_t i = 0; i < b->n; i++) {
            tq_engine_lease(engine, b->tasks[i], w, w->instance, now);
            tq_peer_lease_add(w, b->tasks[i]);
        }
        w->credit -= (uint32_t)b->n;
        leased += b->n;
    }
    return leased;
}

size_t tq_sched_run(tq_engine_t *engine, tq_peers_t *peers, tq_now_t now, tq_sched_send_fn send,
                    void *arg)
{
    tq_sched_plan_t plan;
    tq_sched_plan(engine, peers, &plan);
    return tq_sched_commit(engine, &plan, now, send, arg);
}
