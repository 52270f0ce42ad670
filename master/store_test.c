/* store_test.c - priority heaps, cancel from the middle, requeue, TTLs,
 * idempotency keys, retries, lease deadlines. */
#include "store.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tq_test.h"

static tq_store_t *new_store(size_t max_tasks)
{
    tq_store_cfg_t cfg = {.first_id = 1000,
                          .max_tasks = max_tasks,
                          .result_ttl_ms = 100,
                          .unfetched_ttl_ms = 1000};
    return tq_store_new(&cfg);
}

static tq_task_t *add(tq_store_t *s, const char *fn, const char *queue, int32_t prio,
                      const char *payload)
{
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str(fn);
    spec.queue = tq_bytes_str(queue);
    spec.priority = prio;
    spec.payload = tq_bytes_str(payload);
    tq_err_t code = {0, ""};
    return tq_store_add(s, &spec, 0, &code);
}

/* Pop the best task of queue 0 for fn by leasing it; returns its payload[0]. */
static char pop(tq_store_t *s, const char *fn)
{
    const char *f = tq_store_intern(s, tq_bytes_str(fn));
    tq_task_t *t = tq_queue_best(tq_store_queue_at(s, 0), &f, 1);
    if (!t)
        return 0;
    tq_store_lease(s, t, NULL, 0);
    return (char)tq_task_payload(t).data[0];
}

static void test_priority_then_fifo(void)
{
    tq_store_t *s = new_store(100);
    add(s, "f", "", 0, "a");
    add(s, "f", "", 5, "b");
    add(s, "f", "", 0, "c");
    add(s, "f", "", 5, "d");
    add(s, "f", "", -3, "e");
    add(s, "f", "", 9, "g");
    char order[8] = {0};
    for (int i = 0; i < 6; i++)
        order[i] = pop(s, "f");
    CHECK_EQ_STR(order, "gbdace");
    CHECK_EQ_INT(pop(s, "f"), 0);
    CHECK_EQ_STR(tq_queue_name(tq_store_queue_at(s, 0)), "default");
    tq_store_destroy(&s);
    CHECK(s == NULL);
}

static void test_ids_count_up(void)
{
    tq_store_t *s = new_store(100);
    tq_task_t *a = add(s, "f", "", 0, "a"), *b = add(s, "f", "", 0, "b");
    CHECK_EQ_INT(a->id, 1000);
    CHECK_EQ_INT(b->id, 1001);
    CHECK(tq_store_get(s, 1001) == b);
    CHECK(tq_store_get(s, 5) == NULL);
    tq_store_destroy(&s);
}

static void test_cancel_middle(void)
{
    tq_store_t *s = new_store(1000);
    tq_task_t *ts[200];
    for (int i = 0; i < 200; i++) {
        char p[2] = {(char)('A' + i % 26), 0};
        ts[i] = add(s, "f", "q", (i * 7) % 13, p);
    }
    /* cancel every third task, from all over the heap */
    int cancelled = 0;
    for (int i = 0; i < 200; i += 3) {
        tq_store_finish(s, ts[i], TQ_TASK_CANCELLED, NULL, 0, 0);
        cancelled++;
    }
    tq_queue_t *q = tq_store_queue_at(s, 0);
    CHECK_EQ_INT(tq_queue_queued(q), 200 - cancelled);
    CHECK_EQ_INT(tq_queue_counts(q)->cancelled, cancelled);
    /* the rest still come out in (priority desc, seq asc) order */
    const char *f = tq_store_intern(s, tq_bytes_str("f"));
    tq_task_t *prev = NULL;
    int n = 0, ordered = 1;
    tq_task_t *t;
    while ((t = tq_queue_best(q, &f, 1)) != NULL) {
        CHECK(t->state == TQ_TASK_QUEUED);
        if (prev &&
            (tq_task_priority(t) > tq_task_priority(prev) ||
             (tq_task_priority(t) == tq_task_priority(prev) && tq_task_seq(t) < tq_task_seq(prev))))
            ordered = 0;
        tq_store_lease(s, t, NULL, 0);
        prev = t;
        n++;
    }
    CHECK(ordered);
    CHECK_EQ_INT(n, 200 - cancelled);
    tq_store_destroy(&s);
}

static void test_requeue_keeps_place(void)
{
    tq_store_t *s = new_store(100);
    add(s, "f", "", 1, "a");
    add(s, "f", "", 1, "b");
    add(s, "f", "", 1, "c");
    const char *f = tq_store_intern(s, tq_bytes_str("f"));
    tq_queue_t *q = tq_store_queue_at(s, 0);
    tq_task_t *a = tq_queue_best(q, &f, 1);
    tq_store_lease(s, a, NULL, 0);
    CHECK_EQ_INT(tq_task_attempt(a), 1);
    CHECK_EQ_INT(pop(s, "f"), 'b');
    tq_store_requeue(s, a, 0, 0);
    CHECK_EQ_INT(pop(s, "f"), 'a'); /* before c: same sequence */
    CHECK_EQ_INT(tq_task_attempt(a), 2);
    CHECK_EQ_INT(tq_task_lost(a), 2);
    tq_store_requeue(s, a, 1, 0); /* released: not a loss */
    CHECK_EQ_INT(tq_task_lost(a), 1);
    CHECK_EQ_INT(tq_store_totals(s)->requeued, 2);
    tq_store_destroy(&s);
}

static void test_functions_separate(void)
{
    tq_store_t *s = new_store(100);
    add(s, "x", "", 0, "1");
    add(s, "y", "", 9, "2");
    CHECK_EQ_INT(pop(s, "x"), '1');
    CHECK_EQ_INT(pop(s, "x"), 0);
    CHECK_EQ_INT(pop(s, "z"), 0);
    CHECK_EQ_INT(pop(s, "y"), '2');
    tq_store_destroy(&s);
}

static void test_max_tasks(void)
{
    tq_store_t *s = new_store(2);
    CHECK(add(s, "f", "", 0, "a") != NULL);
    CHECK(add(s, "f", "", 0, "b") != NULL);
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    tq_err_t code = {0, ""};
    CHECK(tq_store_add(s, &spec, 0, &code) == NULL);
    CHECK_EQ_INT(code.code, TQ_ERR_FULL);
    CHECK(strstr(code.msg, "master is full: ") == code.msg);
    CHECK(strstr(code.msg, "(--max-tasks ") != NULL);
    /* undoing an add (a batch that failed half-way) frees the room */
    tq_task_t *b = tq_store_get(s, 1001);
    tq_store_remove_queued(s, b);
    CHECK(tq_store_get(s, 1001) == NULL);
    CHECK_EQ_INT(tq_queue_queued(tq_store_queue_at(s, 0)), 1);
    CHECK_EQ_INT(tq_store_totals(s)->submitted, 1);
    CHECK(tq_store_add(s, &spec, 0, &code) != NULL);
    tq_store_destroy(&s);
}

static void test_ttl_expiry(void)
{
    tq_store_t *s = new_store(100); /* result ttl 100 ms, unfetched 1000 ms */
    tq_task_t *a = add(s, "f", "", 0, "a");
    tq_task_t *b = add(s, "f", "", 0, "b");
    tq_task_t *c = add(s, "f", "", 0, "c");
    uint64_t ida = a->id, idb = b->id, idc = c->id;
    CHECK_EQ_INT(tq_store_next_expiry(s, 0), -1);
    tq_store_lease(s, a, NULL, 0);
    tq_store_finish(s, a, TQ_TASK_DONE, "r", 1, 10);
    tq_store_finish(s, b, TQ_TASK_CANCELLED, NULL, 0, 20);
    CHECK_EQ_INT(tq_store_next_expiry(s, 10), 1000);
    tq_store_fetched(s, a, 50); /* a now expires at 150 */
    tq_store_fetched(s, a, 90); /* a second delivery does not extend it */
    CHECK_EQ_INT(tq_store_next_expiry(s, 50), 100);
    CHECK_EQ_INT(tq_store_sweep(s, 149, 100), 0);
    CHECK_EQ_INT(tq_store_sweep(s, 150, 100), 1);
    CHECK(tq_store_get(s, ida) == NULL);
    CHECK(tq_store_get(s, idb) != NULL);
    CHECK_EQ_INT(tq_store_sweep(s, 1019, 100), 0);
    CHECK_EQ_INT(tq_store_sweep(s, 1020, 100), 1);
    CHECK(tq_store_get(s, idb) == NULL);
    CHECK(tq_store_get(s, idc) != NULL); /* queued tasks never expire */
    CHECK_EQ_INT(tq_store_size(s), 1);
    /* bounded steps */
    for (int i = 0; i < 10; i++) {
        tq_task_t *t = add(s, "f", "", 0, "x");
        tq_store_finish(s, t, TQ_TASK_FAILED, "e", 1, 0);
    }
    CHECK_EQ_INT(tq_store_sweep(s, 5000, 4), 4);
    CHECK_EQ_INT(tq_store_sweep(s, 5000, 100), 6);
    tq_queue_counts_t cnt;
    tq_store_counts(s, &cnt);
    CHECK_EQ_INT(cnt.queued, 1);
    CHECK_EQ_INT(cnt.failed, 0);
    tq_store_destroy(&s);
}

/* SIGHUP's new TTLs apply to results already kept: each expiry moves by
 * the difference, so the lists stay sorted; a new max-tasks applies to
 * the next add. */
static void test_ttls_and_max_tasks_change(void)
{
    tq_store_t *s = new_store(2); /* result ttl 100 ms, unfetched 1000 ms */
    tq_task_t *a = add(s, "f", "", 0, "a");
    tq_task_t *b = add(s, "f", "", 0, "b");
    uint64_t ida = a->id, idb = b->id;
    tq_store_finish(s, a, TQ_TASK_DONE, "r", 1, 10); /* unfetched: expires 1010 */
    tq_store_finish(s, b, TQ_TASK_DONE, "r", 1, 20); /* 1020 */
    tq_store_fetched(s, b, 30);                      /* fetched: 130 */
    tq_store_set_ttls(s, 500, 50);                   /* fetched b: 530; unfetched a: 60 */
    CHECK_EQ_INT(tq_store_cfg(s)->result_ttl_ms, 500);
    CHECK_EQ_INT(tq_store_cfg(s)->unfetched_ttl_ms, 50);
    CHECK_EQ_INT(tq_store_next_expiry(s, 0), 60);
    CHECK_EQ_INT(tq_store_sweep(s, 59, 100), 0);
    CHECK_EQ_INT(tq_store_sweep(s, 60, 100), 1);
    CHECK(tq_store_get(s, ida) == NULL);
    CHECK_EQ_INT(tq_store_sweep(s, 529, 100), 0);
    CHECK(tq_store_get(s, idb) != NULL);
    /* a task finished after the change gets the new TTL, behind b */
    tq_task_t *c = add(s, "f", "", 100, "c");
    uint64_t idc = c->id;
    tq_store_finish(s, c, TQ_TASK_DONE, "r", 1, 100);
    tq_store_fetched(s, c, 100); /* 600 */
    CHECK_EQ_INT(tq_store_sweep(s, 530, 100), 1);
    CHECK(tq_store_get(s, idb) == NULL);
    CHECK_EQ_INT(tq_store_sweep(s, 600, 100), 1);
    CHECK(tq_store_get(s, idc) == NULL);
    /* max-tasks: 2, then 1 */
    CHECK(add(s, "f", "", 0, "d") != NULL);
    tq_store_set_max_tasks(s, 1);
    CHECK(!tq_store_has_room(s, 1));
    tq_store_set_max_tasks(s, 3);
    CHECK(tq_store_has_room(s, 2));
    CHECK(!tq_store_has_room(s, 3));
    tq_store_destroy(&s);
}

static tq_task_t *add_key(tq_store_t *s, const char *key, int64_t now, tq_err_t *code)
{
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.key = tq_bytes_str(key);
    spec.payload = tq_bytes_str("p");
    code->code = 0;
    return tq_store_add(s, &spec, now, code);
}

static void test_idempotency_keys(void)
{
    tq_store_cfg_t cfg = {.first_id = 1,
                          .max_tasks = 3,
                          .result_ttl_ms = 100,
                          .unfetched_ttl_ms = 100,
                          .key_retention_ms = 5000};
    tq_store_t *s = tq_store_new(&cfg);
    tq_err_t code = {0, ""};
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k1"), 0), 0);
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str(""), 0), 0);
    tq_task_t *a = add_key(s, "k1", 0, &code);
    CHECK(a != NULL);
    uint64_t ida = a->id;
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k1"), 10), ida);
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k2"), 10), 0);
    /* binary keys: a NUL inside is part of the key */
    tq_bytes_t bin1 = {(const uint8_t *)"a\0b", 3}, bin2 = {(const uint8_t *)"a\0c", 3};
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.key = bin1;
    tq_task_t *b = tq_store_add(s, &spec, 0, &code);
    CHECK(b != NULL);
    CHECK_EQ_INT(tq_store_key_find(s, bin1, 0), b->id);
    CHECK_EQ_INT(tq_store_key_find(s, bin2, 0), 0);
    /* undoing an add forgets its key */
    tq_store_remove_queued(s, b);
    CHECK_EQ_INT(tq_store_key_find(s, bin1, 0), 0);
    CHECK_EQ_INT(tq_store_nkeys(s), 1);
    /* the key outlives the task's result */
    tq_store_finish(s, a, TQ_TASK_DONE, "r", 1, 0);
    CHECK_EQ_INT(tq_store_sweep(s, 200, 100), 1);
    CHECK(tq_store_get(s, ida) == NULL);
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k1"), 200), ida);
    /* keys count against max_tasks (3) */
    CHECK(add_key(s, "k2", 100, &code) != NULL);
    CHECK(add_key(s, "k3", 100, &code) != NULL);
    CHECK(add_key(s, "k4", 100, &code) == NULL);
    CHECK_EQ_INT(code.code, TQ_ERR_FULL);
    /* retention: forgotten when the window passes, swept in bounded steps */
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k1"), 5000), 0);
    CHECK_EQ_INT(tq_store_sweep(s, 5000, 100), 1);
    CHECK_EQ_INT(tq_store_nkeys(s), 2);
    CHECK_EQ_INT(tq_store_sweep(s, 5100, 1), 1);
    CHECK_EQ_INT(tq_store_sweep(s, 5100, 1), 1);
    CHECK_EQ_INT(tq_store_nkeys(s), 0);
    /* a key past retention but not yet swept is replaced by a new add */
    tq_store_destroy(&s);
    s = tq_store_new(&cfg);
    tq_task_t *x = add_key(s, "k", 0, &code);
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k"), 6000), 0);
    tq_task_t *y = add_key(s, "k", 6000, &code);
    CHECK(y != NULL && y->id != x->id);
    CHECK_EQ_INT(tq_store_nkeys(s), 1);
    CHECK_EQ_INT(tq_store_key_find(s, tq_bytes_str("k"), 6000), y->id);
    tq_store_destroy(&s);
}

static void test_retry(void)
{
    tq_store_t *s = new_store(100);
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.payload = tq_bytes_str("a");
    spec.retries = 2;
    tq_err_t code = {0, ""};
    tq_task_t *a = tq_store_add(s, &spec, 0, &code);
    add(s, "f", "", 0, "b");
    CHECK_EQ_INT(pop(s, "f"), 'a');
    CHECK(tq_task_can_retry(a));
    tq_store_retry(s, a, 0); /* failed run: back at its old place */
    CHECK_EQ_INT(a->state, TQ_TASK_QUEUED);
    CHECK_EQ_INT(pop(s, "f"), 'a');
    CHECK_EQ_INT(tq_task_attempt(a), 2);
    tq_store_retry(s, a, 0);
    CHECK_EQ_INT(pop(s, "f"), 'a');
    CHECK_EQ_INT(tq_task_attempt(a), 3);
    CHECK(!tq_task_can_retry(a));
    CHECK_EQ_INT(tq_task_lost(a), 1); /* retried runs are not lost leases */
    CHECK_EQ_INT(tq_store_totals(s)->retried, 2);
    CHECK_EQ_INT(tq_store_totals(s)->requeued, 0);
    tq_store_finish(s, a, TQ_TASK_FAILED, "e", 1, 0);
    CHECK_EQ_INT(tq_store_totals(s)->failed, 1);
    tq_store_destroy(&s);
}

static void test_deadlines(void)
{
    tq_store_t *s = new_store(100);
    tq_task_t *t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = add(s, "f", "", 0, "x");
        tq_store_lease(s, t[i], NULL, 0);
    }
    tq_store_set_deadline(s, t[0], 300);
    tq_store_set_deadline(s, t[1], 100);
    tq_store_set_deadline(s, t[2], 200);
    /* t[3]: no deadline */
    CHECK(tq_store_overdue(s, 99) == NULL);
    CHECK(tq_store_overdue(s, 100) == t[1]);
    tq_store_finish(s, t[1], TQ_TASK_DONE, NULL, 0, 0); /* drops its deadline */
    CHECK(tq_store_overdue(s, 150) == NULL);
    tq_store_requeue(s, t[2], 0, 0);
    CHECK(tq_store_overdue(s, 1000) == t[0]);
    tq_store_requeue(s, t[0], 1, 0);
    CHECK(tq_store_overdue(s, 1000) == NULL);
    CHECK_EQ_INT(t[0]->x->deadline_ms, 0);
    tq_store_destroy(&s);
}

/* A dispatch plan holds tasks out of their heap, unseen, and gives them
 * back at their place (or leases them from there). */
static void test_hold(void)
{
    tq_store_t *s = new_store(100);
    tq_task_t *a = add(s, "f", "", 0, "a"), *b = add(s, "f", "", 0, "b");
    const char *fns[1] = {tq_task_fn(a)};
    tq_queue_t *q = tq_task_queue(a);
    CHECK(tq_queue_best(q, fns, 1) == a);
    tq_store_hold(s, a);
    CHECK_EQ_INT(a->state, TQ_TASK_QUEUED);
    CHECK(tq_queue_best(q, fns, 1) == b);
    tq_store_hold(s, b);
    CHECK(tq_queue_best(q, fns, 1) == NULL);
    tq_store_unhold(s, b);
    tq_store_lease(s, a, NULL, 7); /* from the plan */
    CHECK_EQ_INT(a->state, TQ_TASK_LEASED);
    CHECK_EQ_INT(tq_task_attempt(a), 1);
    CHECK(tq_queue_best(q, fns, 1) == b);
    CHECK_EQ_INT(tq_task_attempt(b), 0);
    tq_store_requeue(s, a, 1, 0);
    CHECK(tq_queue_best(q, fns, 1) == a); /* its old place */
    tq_store_destroy(&s);
}

/* Events the store reports, as a string of letters. */
static char events[64];
static void record_event(void *arg, tq_task_t *t, tq_store_event_t ev)
{
    (void)arg;
    (void)t;
    size_t n = strlen(events);
    if (n + 1 < sizeof events)
        events[n] = "ALRFKD"[ev];
}

static void test_session_keys_observer_restore(void)
{
    tq_store_t *s = new_store(100);
    tq_store_observe(s, record_event, NULL, NULL);
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.key = tq_bytes_str("session-1");
    spec.payload = tq_bytes_str("p");
    tq_err_t code = {0, ""};
    tq_task_t *t = tq_store_add_session(s, &spec, 0, &code);
    CHECK(t != NULL);
    uint64_t id = t->id;
    /* a session key maps to its task with no time limit */
    CHECK(tq_store_key_find(s, spec.key, INT64_MAX - 1) == id);
    CHECK(tq_store_key_first(s) == NULL); /* not on the retention list */
    tq_store_lease(s, t, NULL, 0);
    tq_store_requeue(s, t, 0, 0);
    tq_store_lease(s, t, NULL, 0);
    tq_store_finish(s, t, TQ_TASK_DONE, "r", 1, 5);
    CHECK(tq_store_key_find(s, spec.key, 10) == id); /* finished, not ACKed */
    tq_store_ack(s, t);
    tq_store_ack(s, t); /* once only */
    CHECK(tq_store_key_find(s, spec.key, 10) == 0);
    CHECK(strcmp(events, "ALRLFK") == 0);
    tq_store_observe(s, NULL, NULL, NULL);

    /* restore: the image's state, ids above it afterwards, leased -> queued */
    tq_task_image_t img;
    memset(&img, 0, sizeof img);
    img.id = 5000;
    img.seq = 77;
    img.attempt = 3;
    img.state = TQ_TASK_LEASED;
    img.fn = tq_bytes_str("f");
    img.skey = tq_bytes_str("session-2");
    img.blob = tq_bytes_str("payload");
    tq_task_t *r = tq_store_restore(s, &img, &code);
    CHECK(r != NULL);
    CHECK(r->state == TQ_TASK_QUEUED && tq_task_attempt(r) == 3 && r->payload_len == 7);
    CHECK(tq_store_key_find(s, img.skey, 0) == 5000);
    tq_task_t *n = add(s, "f", "", 0, "x");
    CHECK(n->id > 5000 && tq_task_seq(n) > 77);
    /* a newer image of the same id replaces it */
    img.state = TQ_TASK_DONE;
    img.finished_ms = 9;
    img.blob = tq_bytes_str("done!");
    r = tq_store_restore(s, &img, &code);
    CHECK(r != NULL && r->state == TQ_TASK_DONE && tq_task_data(r).len == 5);
    CHECK(tq_store_get(s, 5000) == r);
    tq_store_drop(s, r);
    CHECK(tq_store_get(s, 5000) == NULL);
    CHECK(tq_store_key_find(s, img.skey, 0) == 0);
    /* bad images are refused, not stored */
    img.fn = tq_bytes_str("bad name!");
    CHECK(tq_store_restore(s, &img, &code) == NULL);
    tq_store_destroy(&s); /* session keys freed with their tasks (ASan checks) */
}

/* Delayed tasks stay out of the heaps until promoted; the dead set is in
 * id order, keeps payloads, has no TTL; revive and purge; pause. */
static void test_delay_dead_pause(void)
{
    tq_store_t *s = new_store(100);
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.payload = tq_bytes_str("d");
    spec.not_before_ms = 5000;
    tq_err_t code = {0, ""};
    tq_task_t *d = tq_store_add(s, &spec, 1000, &code);
    tq_task_t *a = add(s, "f", "", 0, "a");
    tq_queue_counts_t c;
    tq_store_counts(s, &c);
    CHECK_EQ_INT(c.queued, 2);
    CHECK_EQ_INT(c.delayed, 1);
    CHECK_EQ_INT(tq_store_next_due(s, 1000), 4000);
    CHECK_EQ_INT(pop(s, "f"), 'a');
    CHECK_EQ_INT(pop(s, "f"), 0); /* d is not runnable yet */
    CHECK_EQ_INT(tq_store_promote(s, 4999, 10), 0);
    CHECK_EQ_INT(tq_store_promote(s, 5000, 10), 1);
    CHECK_EQ_INT(tq_store_next_due(s, 5000), -1);
    /* paused: nothing comes out */
    tq_queue_t *q = tq_store_queue(s, tq_bytes_str("default"));
    tq_queue_set_paused(q, 1);
    CHECK_EQ_INT(pop(s, "f"), 0);
    tq_queue_set_paused(q, 0);
    CHECK_EQ_INT(pop(s, "f"), 'd');
    /* retry with a backoff goes to the delayed heap */
    d->retries = 1;
    tq_store_retry(s, d, 9000);
    tq_store_counts(s, &c);
    CHECK_EQ_INT(c.delayed, 1);
    CHECK_EQ_INT(tq_store_promote(s, 9000, 10), 1);
    CHECK_EQ_INT(pop(s, "f"), 'd');
    /* d dies after a (later id), out of id order: listed in id order */
    tq_store_finish(s, a, TQ_TASK_DEAD, "x", 1, 10);
    tq_store_finish(s, d, TQ_TASK_DEAD, "y", 1, 11);
    CHECK(tq_store_dead_first(s) == d && tq_store_dead_next(d) == a);
    CHECK(tq_store_dead_after(s, d->id) == a);
    CHECK(tq_store_dead_after(s, 0) == d);
    CHECK(tq_store_dead_after(s, a->id) == NULL);
    CHECK_EQ_INT(a->payload_len, 1);                        /* kept for a retry */
    CHECK_EQ_INT(tq_store_sweep(s, INT64_MAX / 2, 100), 0); /* no TTL */
    tq_store_fetched(s, a, 20);
    CHECK_EQ_INT(tq_store_sweep(s, INT64_MAX / 2, 100), 0);
    uint32_t att = tq_task_attempt(d);
    tq_store_revive(s, d);
    CHECK_EQ_INT(tq_task_lost(d), 0);
    CHECK_EQ_INT(tq_task_attempt(d), att);
    CHECK(tq_store_dead_first(s) == a);
    CHECK_EQ_INT(pop(s, "f"), 'd');
    CHECK_EQ_INT(tq_task_attempt(d), att + 1);
    tq_store_purge(s, a);
    CHECK(tq_store_dead_first(s) == NULL);
    CHECK(tq_store_get(s, 1001) == NULL);
    tq_store_counts(s, &c);
    CHECK_EQ_INT(c.dead, 0);
    CHECK_EQ_INT(c.failed, 0);
    CHECK_EQ_INT(tq_store_totals(s)->purged, 1);
    tq_store_destroy(&s);
}

/* Names and queues nothing uses are freed by tq_store_gc; a paused
 * queue, a queue with tasks and a held function name stay. */
static void test_name_gc(void)
{
    tq_store_t *s = new_store(100000);
    char q[32], f[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(q, sizeof q, "q%d", i);
        snprintf(f, sizeof f, "f%d", i);
        tq_task_t *t = add(s, f, q, 0, "x");
        CHECK(t != NULL);
        if (i >= 3)
            tq_store_remove_queued(s, t);
    }
    tq_queue_t *paused = tq_store_queue(s, tq_bytes_str("paused"));
    tq_queue_set_paused(paused, 1);
    const char *held = tq_store_intern(s, tq_bytes_str("held"));
    tq_store_name_hold(s, held);
    CHECK_EQ_INT(tq_store_nnames(s), 2002);
    for (int i = 0; i < 10; i++)
        tq_store_gc(s, 1000);
    /* q0..q2 with f0..f2, "paused", "held" */
    CHECK_EQ_INT(tq_store_nnames(s), 8);
    CHECK_EQ_INT(tq_store_nqueues(s), 4);
    CHECK(tq_store_name_known(s, tq_bytes_str("q1")));
    CHECK(tq_store_name_known(s, tq_bytes_str("f2")));
    CHECK(!tq_store_name_known(s, tq_bytes_str("q3")));
    CHECK(!tq_store_name_known(s, tq_bytes_str("f999")));
    CHECK(tq_store_intern(s, tq_bytes_str("held")) == held);
    /* the survivors still work: the tasks of q0..q2 are there */
    for (int i = 0; i < 3; i++) {
        snprintf(q, sizeof q, "q%d", i);
        snprintf(f, sizeof f, "f%d", i);
        tq_queue_t *qq = tq_store_queue(s, tq_bytes_str(q));
        const char *ff = tq_store_intern(s, tq_bytes_str(f));
        CHECK(tq_queue_best(qq, &ff, 1) != NULL);
    }
    tq_store_name_release(s, held);
    tq_queue_set_paused(paused, 0);
    for (int i = 0; i < 10; i++)
        tq_store_gc(s, 1000);
    CHECK_EQ_INT(tq_store_nnames(s), 6);
    /* a freed name can be made again */
    CHECK(add(s, "f999", "q999", 0, "y") != NULL);
    CHECK_EQ_INT(tq_store_nnames(s), 8);
    tq_store_destroy(&s);
}

/* tq_store_key_of finds a keyed task's key from either end of the key
 * list, within its step budget; tq_store_queue_queued_some hands out a
 * queue's runnable then delayed tasks, bounded by max. */
static void test_key_of_and_queued_some(void)
{
    tq_store_cfg_t cfg = {.first_id = 1,
                          .max_tasks = 100,
                          .result_ttl_ms = 100,
                          .unfetched_ttl_ms = 100,
                          .key_retention_ms = 5000};
    tq_store_t *s = tq_store_new(&cfg);
    tq_err_t code;
    char key[16];
    tq_task_t *t[20];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        t[i] = add_key(s, key, 0, &code);
        CHECK(t[i] != NULL);
    }
    const tq_key_t *k = tq_store_key_of(s, t[0], 2);
    CHECK(k && tq_key_bytes(k).len == 5 && memcmp(tq_key_bytes(k).data, "key-0", 5) == 0);
    k = tq_store_key_of(s, t[19], 2);
    CHECK(k && tq_key_id(k) == t[19]->id);
    CHECK(tq_store_key_of(s, t[10], 4) == NULL); /* past its budget */
    k = tq_store_key_of(s, t[10], 100);
    CHECK(k && tq_key_id(k) == t[10]->id);
    tq_task_t *plain = add(s, "f", "", 0, "x");
    CHECK(tq_store_key_of(s, plain, 100) == NULL);

    tq_queue_t *q = tq_task_queue(t[0]);
    tq_store_delay(s, t[5], 1000);
    tq_task_t *out[32];
    CHECK_EQ_INT(tq_store_queue_queued_some(s, q, out, 3), 3);
    size_t n = tq_store_queue_queued_some(s, q, out, 32);
    CHECK_EQ_INT(n, 21);
    CHECK(out[n - 1] == t[5]); /* the delayed one last */
    tq_store_destroy(&s);
}

int main(void)
{
    RUN(test_priority_then_fifo);
    RUN(test_ids_count_up);
    RUN(test_cancel_middle);
    RUN(test_requeue_keeps_place);
    RUN(test_functions_separate);
    RUN(test_max_tasks);
    RUN(test_ttl_expiry);
    RUN(test_ttls_and_max_tasks_change);
    RUN(test_idempotency_keys);
    RUN(test_retry);
    RUN(test_deadlines);
    RUN(test_hold);
    RUN(test_session_keys_observer_restore);
    RUN(test_delay_dead_pause);
    RUN(test_name_gc);
    RUN(test_key_of_and_queued_some);
    TEST_MAIN_END();
}
