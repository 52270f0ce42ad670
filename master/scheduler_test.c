/* scheduler_test.c - routing by function, credit, fair spread, priorities. */
#include "scheduler.h"

#include <stdio.h>
#include <string.h>

#include "tq_test.h"

typedef struct {
    size_t calls;
    size_t tasks;
    size_t max_batch;
    int wrong_fn; /* a task went to a worker without its function */
    int over_credit;
} emit_log_t;

/* The send callback: the tasks are planned (held) for w, not leased yet. */
static int on_emit(void *arg, tq_peer_t *w, tq_task_t *const *tasks, size_t n)
{
    emit_log_t *log = arg;
    log->calls++;
    log->tasks += n;
    if (n > log->max_batch)
        log->max_batch = n;
    for (size_t i = 0; i < n; i++) {
        if (!tq_peer_serves(w, tq_task_fn(tasks[i])) || tasks[i]->state != TQ_TASK_QUEUED ||
            tq_task_worker(tasks[i]) != NULL)
            log->wrong_fn = 1;
    }
    if (w->nleased + n > w->slots || n > w->credit)
        log->over_credit = 1;
    return 0;
}

/* The scheduler leases through an engine; the tests read its store. */
static tq_engine_t *engine;
static const tq_now_t now0 = {0, 0};

static tq_store_t *new_store(void)
{
    tq_engine_cfg_t cfg = {.store = {.first_id = 1,
                                     .max_tasks = 100000,
                                     .result_ttl_ms = 1000,
                                     .unfetched_ttl_ms = 1000},
                           .max_attempts = 3};
    engine = tq_engine_new(&cfg);
    return tq_engine_store(engine);
}

static tq_task_t *add(tq_store_t *s, const char *fn, const char *queue, int32_t prio)
{
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str(fn);
    spec.queue = tq_bytes_str(queue);
    spec.priority = prio;
    spec.payload = tq_bytes_str("p");
    tq_err_t code = {0, ""};
    return tq_store_add(s, &spec, 0, &code);
}

static tq_peer_t *worker(tq_peers_t *ps, tq_store_t *s, const char *name, uint32_t slots,
                         const char *fn1, const char *fn2)
{
    tq_peer_t *w = tq_peers_add(ps, tq_bytes_str(name), TQ_ROLE_WORKER, 0);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->slots = w->credit = slots;
    const char *fns[2];
    size_t n = 0;
    if (fn1)
        fns[n++] = tq_store_intern(s, tq_bytes_str(fn1));
    if (fn2)
        fns[n++] = tq_store_intern(s, tq_bytes_str(fn2));
    tq_peer_set_fns(w, fns, n);
    return w;
}

static void release_all(tq_store_t *s, tq_peers_t *ps)
{
    for (size_t i = 0; i < tq_peers_count(ps); i++) {
        tq_peer_t *p = tq_peers_at(ps, i);
        while (p->nleased) {
            tq_task_t *t = p->leased[0];
            tq_peer_lease_remove(p, t);
            tq_store_requeue(s, t, 1, 0);
        }
    }
}

static void teardown(tq_store_t **s, tq_peers_t **ps)
{
    release_all(*s, *ps);
    tq_peers_destroy(ps);
    tq_engine_destroy(&engine);
    *s = NULL;
}

static void test_fair_spread(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *w[4];
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "w%d", i);
        w[i] = worker(ps, s, name, 100, "square", NULL);
    }
    for (int i = 0; i < 100; i++)
        add(s, "square", "", 0);
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 100);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(w[i]->nleased, 25);
        CHECK_EQ_INT(w[i]->credit, 75);
    }
    CHECK_EQ_INT(log.calls, 4); /* one DISPATCH per worker */
    CHECK_EQ_INT(log.tasks, 100);
    CHECK(!log.wrong_fn);
    teardown(&s, &ps);
}

static void test_credit_never_exceeded(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *a = worker(ps, s, "a", 3, "f", NULL);
    tq_peer_t *b = worker(ps, s, "b", 1, "f", NULL);
    for (int i = 0; i < 50; i++)
        add(s, "f", "", 0);
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 4);
    CHECK_EQ_INT(a->nleased, 3);
    CHECK_EQ_INT(b->nleased, 1);
    CHECK_EQ_INT(a->credit, 0);
    CHECK_EQ_INT(b->credit, 0);
    CHECK(!log.over_credit);
    /* no credit: nothing more goes out */
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 0);
    /* a result gives one credit back: exactly one more task */
    tq_task_t *t = a->leased[0];
    tq_peer_lease_remove(a, t);
    tq_store_finish(s, t, TQ_TASK_DONE, "r", 1, 0);
    a->credit = 1;
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 1);
    CHECK_EQ_INT(a->nleased, 3);
    /* draining workers get nothing */
    b->credit = 1;
    b->draining = 1;
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 0);
    teardown(&s, &ps);
}

static void test_routing_by_function(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *wx = worker(ps, s, "wx", 100, "x", NULL);
    tq_peer_t *wy = worker(ps, s, "wy", 100, "y", "z");
    for (int i = 0; i < 30; i++) {
        add(s, "x", "", 0);
        add(s, "y", "", 0);
        add(s, "nobody", "", 0);
    }
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 60);
    CHECK(!log.wrong_fn);
    CHECK_EQ_INT(wx->nleased, 30);
    CHECK_EQ_INT(wy->nleased, 30);
    for (size_t i = 0; i < wx->nleased; i++)
        CHECK_EQ_STR(tq_task_fn(wx->leased[i]), "x");
    for (size_t i = 0; i < wy->nleased; i++)
        CHECK_EQ_STR(tq_task_fn(wy->leased[i]), "y");
    tq_queue_counts_t c;
    tq_store_counts(s, &c);
    CHECK_EQ_INT(c.queued, 30); /* "nobody" tasks wait */
    teardown(&s, &ps);
}

static void test_priority_and_queues(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *w = worker(ps, s, "w", 1, "f", NULL);
    tq_task_t *low = add(s, "f", "q1", 0);
    tq_task_t *high = add(s, "f", "q1", 10);
    tq_task_t *other = add(s, "f", "q2", -5);
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 1);
    CHECK(w->leased[0] == high);
    /* finish it; the next pick is served from the other queue (round-robin) */
    tq_peer_lease_remove(w, high);
    tq_store_finish(s, high, TQ_TASK_DONE, NULL, 0, 0);
    w->credit = 1;
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 1);
    CHECK(w->leased[0] == other);
    tq_peer_lease_remove(w, other);
    tq_store_finish(s, other, TQ_TASK_DONE, NULL, 0, 0);
    w->credit = 1;
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 1);
    CHECK(w->leased[0] == low);
    teardown(&s, &ps);
}

static void test_large_burst_batches(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *w = worker(ps, s, "w", TQ_MAX_SLOTS, "f", NULL);
    for (int i = 0; i < 3000; i++)
        add(s, "f", "", 0);
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 3000);
    CHECK_EQ_INT(log.max_batch, TQ_MAX_BATCH);
    CHECK_EQ_INT(log.calls, 3);
    CHECK_EQ_INT(w->credit, TQ_MAX_SLOTS - 3000);
    teardown(&s, &ps);
}

static int refuse_b(void *arg, tq_peer_t *w, tq_task_t *const *tasks, size_t n)
{
    (void)tasks, (void)n;
    return strcmp(w->name, (const char *)arg) == 0 ? -1 : 0;
}

static void count_leases(void *arg, const tq_engine_ev_t *ev)
{
    if (ev->kind == TQ_EV_TASK && ev->store_ev == TQ_SEV_LEASED)
        ++*(size_t *)arg;
}

/* A batch whose DISPATCH cannot be queued (its worker is gone) is not
 * leased: no LEASE is recorded, and its tasks keep their place. */
static void test_refused_batch_not_leased(void)
{
    tq_store_t *s = new_store();
    tq_peers_t *ps = tq_peers_new();
    tq_peer_t *a = worker(ps, s, "a", 2, "f", NULL);
    tq_peer_t *b = worker(ps, s, "b", 2, "f", NULL);
    tq_task_t *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = add(s, "f", "", 0);
    size_t leases = 0;
    tq_engine_subscribe(engine, count_leases, &leases);
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, refuse_b, (void *)"b"), 2);
    CHECK_EQ_INT(leases, 2);
    CHECK_EQ_INT(a->nleased, 2);
    CHECK_EQ_INT(a->credit, 0);
    CHECK_EQ_INT(b->nleased, 0);
    CHECK_EQ_INT(b->credit, 2);
    size_t queued = 0;
    for (int i = 0; i < 4; i++) {
        if (t[i]->state == TQ_TASK_LEASED) {
            CHECK(tq_task_worker(t[i]) == a);
            CHECK_EQ_INT(tq_task_attempt(t[i]), 1);
        } else {
            CHECK_EQ_INT(tq_task_attempt(t[i]), 0);
            queued++;
        }
    }
    CHECK_EQ_INT(queued, 2);
    /* they are runnable again: b gets them when it can take them */
    emit_log_t log = {0};
    CHECK_EQ_INT(tq_sched_run(engine, ps, now0, on_emit, &log), 2);
    CHECK_EQ_INT(b->nleased, 2);
    CHECK_EQ_INT(leases, 4);
    tq_engine_unsubscribe(engine, count_leases, &leases);
    teardown(&s, &ps);
}

int main(void)
{
    RUN(test_fair_spread);
    RUN(test_credit_never_exceeded);
    RUN(test_routing_by_function);
    RUN(test_priority_and_queues);
    RUN(test_large_burst_batches);
    RUN(test_refused_batch_not_leased);
    TEST_MAIN_END();
}
