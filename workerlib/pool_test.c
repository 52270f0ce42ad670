/* pool_test.c - the slot pool: tasks come back over the result socket,
 * and tq_pool_resize grows or parks slots while tasks run, stopping
 * none. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "pool.h"
#include "tq_test.h"
#include "tq_tsan.h"

#define EP "inproc://pool-test"

static atomic_int running, peak, ran;

/* Runs about 30 ms; counts how many run at once. */
static int f_busy(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p, (void)len, (void)out, (void)arg;
    int now = atomic_fetch_add(&running, 1) + 1;
    int seen = atomic_load(&peak);
    while (now > seen && !atomic_compare_exchange_weak(&peak, &seen, now))
        ;
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&ran, 1);
    return 0;
}

/* Queue n tasks of fn. */
static void submit_n(tq_pool_t *pool, const tq_fn_t *fn, int n)
{
    static uint64_t next_id = 1;
    for (int i = 0; i < n; i++) {
        tq_pool_task_t *t = calloc(1, sizeof *t);
        t->id = next_id++;
        t->fn = fn;
        t->max_result = 1024;
        atomic_init(&t->cancel, TQ_POOL_CANCEL_NONE);
        tq_pool_submit(pool, t);
    }
}

/* Take n tasks back from the result socket: each ran. */
static void collect_n(void *pull, int n)
{
    for (int i = 0; i < n; i++) {
        tq_pool_task_t *t;
        CHECK_EQ_INT(zmq_recv(pull, &t, sizeof t, 0), (int)sizeof t);
        TQ_TSAN_ACQUIRE(t); /* as conn.c: the slot's release before its send */
        CHECK(t->ran);
        tq_pool_task_free(t);
    }
}

static void run_n(tq_pool_t *pool, void *pull, const tq_fn_t *fn, int n)
{
    submit_n(pool, fn, n);
    collect_n(pull, n);
}

static void test_resize(void)
{
    void *ctx = zmq_ctx_new();
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    CHECK_EQ_INT(zmq_bind(pull, EP), 0);
    tq_fn_t fn;
    memset(&fn, 0, sizeof fn);
    memcpy(fn.name, "busy", 5);
    fn.cfn = f_busy;
    fn.mode = TASKQ_MODE_THREAD;
    tq_pool_t *pool = tq_pool_new(ctx, EP, 1, &fn, 1);
    CHECK(pool != NULL);
    run_n(pool, pull, &fn, 4);
    CHECK_EQ_INT(atomic_load(&peak), 1);
    /* grow to 4: four run at once */
    CHECK_EQ_INT(tq_pool_resize(pool, 4), 0);
    CHECK_EQ_INT((int)tq_pool_slots(pool), 4);
    atomic_store(&peak, 0);
    run_n(pool, pull, &fn, 8);
    CHECK(atomic_load(&peak) >= 2 && atomic_load(&peak) <= 4);
    /* shrink to 2 while tasks wait and run: every task still comes back */
    atomic_store(&peak, 0);
    submit_n(pool, &fn, 8);
    CHECK_EQ_INT(tq_pool_resize(pool, 2), 0);
    collect_n(pull, 8);
    /* from now on two at most (the parked slots take nothing) */
    atomic_store(&peak, 0);
    run_n(pool, pull, &fn, 8);
    CHECK(atomic_load(&peak) <= 2);
    /* and back up: the parked slots run again */
    CHECK_EQ_INT(tq_pool_resize(pool, 3), 0);
    atomic_store(&peak, 0);
    run_n(pool, pull, &fn, 9);
    CHECK(atomic_load(&peak) <= 3);
    CHECK_EQ_INT(tq_pool_resize(pool, 0), -1);
    CHECK_EQ_INT(tq_pool_resize(pool, TQ_MAX_SLOTS + 1), -1);
    CHECK_EQ_INT(atomic_load(&ran), 4 + 8 + 8 + 8 + 9);
    tq_pool_destroy(&pool);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

int main(void)
{
    RUN(test_resize);
    TEST_MAIN_END();
}
