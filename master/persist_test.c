/* persist_test.c - the lease holder (the worker instance a RESULT is
 * taken from) survives a restart: LEASE records carry it, a planned
 * dispatch that was not made writes nothing, and compaction rewrites it
 * with the task. The same for the owner of a task (key-pair mode). */
#include "persist.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "tq_log.h"
#include "tq_test.h"
#include "tq_util.h"

static void *ctx;
static char base[64];

static tq_engine_t *engine;
static tq_policy_t *policy; /* task owners, when a test sets it */

/* A store inside an engine (so that its changes reach the journal). */
static tq_store_t *new_store(void)
{
    tq_engine_cfg_t c = {.store = {1, 1000000, 3600000, 3600000, 86400000}, .max_attempts = 3};
    engine = tq_engine_new(&c);
    return tq_engine_store(engine);
}

static void store_destroy(tq_store_t **s)
{
    tq_engine_destroy(&engine);
    *s = NULL;
}

static tq_persist_t *open_dir(const char *dir, tq_store_t *s)
{
    TQ_ASSERT(s == tq_engine_store(engine));
    tq_journal_cfg_t cfg = {.data_dir = dir,
                            .mode = TQ_FSYNC_INTERVAL,
                            .interval_ms = 50,
                            .zmq_ctx = ctx};
    tq_persist_report_t rep;
    tq_err_t err;
    tq_persist_t *p = tq_persist_open(&cfg, engine, policy, &rep, &err);
    if (!p)
        fprintf(stderr, "persist_open: %s\n", err.msg);
    return p;
}

static tq_task_t *add(tq_store_t *s, size_t payload_len)
{
    static uint8_t buf[100 * 1024];
    tq_task_spec_t spec =
        {tq_bytes_str("echo"), tq_bytes_str(""), {NULL, 0}, 0, 0, 0, {buf, payload_len}, 0};
    tq_err_t code = {0, ""};
    tq_task_t *t = tq_store_add(s, &spec, tq_wall_ms(), &code);
    CHECK(t != NULL);
    return t;
}

/* Close and reopen: the store as recovery rebuilds it. */
static void reopen(const char *dir, tq_store_t **s, tq_persist_t **p)
{
    tq_persist_flush(*p);
    tq_persist_destroy(p);
    store_destroy(s);
    *s = new_store();
    *p = open_dir(dir, *s);
    CHECK(*p != NULL);
}

/* 1 if the journal of dir has segment file name. */
static int has_segment(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/journal/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* The name of the journal's oldest segment into out (empty if none). */
static void oldest_segment(const char *dir, char *out, size_t size)
{
    char jd[256];
    snprintf(jd, sizeof jd, "%s/journal", dir);
    DIR *d = opendir(jd);
    out[0] = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tqj") && (!out[0] || strcmp(e->d_name, out) < 0))
            snprintf(out, size, "%s", e->d_name);
    if (d)
        closedir(d);
}

static void test_holder_replayed(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/a", base);
    mkdir(dir, 0700);
    tq_store_t *s = new_store();
    tq_persist_t *p = open_dir(dir, s);
    int w; /* a worker: an opaque pointer to the store */
    tq_task_t *a = add(s, 10), *b = add(s, 10);
    uint64_t ida = a->id, idb = b->id;
    tq_store_lease(s, a, &w, 0x1111222233334444ull);
    CHECK_EQ_INT(tq_task_holder(a), 0x1111222233334444ull);
    tq_store_lease(s, b, &w, 0x5555);
    tq_store_requeue(s, b, 0, 0); /* b's lease is lost: its holder stays */
    tq_store_hold(s, b);          /* planned, not dispatched: nothing is written */
    tq_store_unhold(s, b);
    CHECK_EQ_INT(tq_task_attempt(b), 1);
    CHECK_EQ_INT(tq_task_holder(b), 0x5555);
    reopen(dir, &s, &p);
    a = tq_store_get(s, ida);
    b = tq_store_get(s, idb);
    CHECK(a && b);
    CHECK_EQ_INT(a->state, TQ_TASK_QUEUED); /* a restored lease is queued */
    CHECK_EQ_INT(tq_task_attempt(a), 1);
    CHECK_EQ_INT(tq_task_holder(a), 0x1111222233334444ull);
    CHECK_EQ_INT(tq_task_attempt(b), 1);
    CHECK_EQ_INT(tq_task_holder(b), 0x5555); /* a lost lease keeps its holder */
    tq_persist_destroy(&p);
    store_destroy(&s);
}

/* Add garbage past TQ_PERSIST_COMPACT_MIN (finished and ACKed tasks),
 * then compact the journal of p until its oldest segment is gone. */
static void compact(const char *dir, tq_store_t *s, tq_persist_t *p)
{
    for (int i = 0; i < 60; i++) {
        tq_task_t *g = add(s, 100 * 1024);
        tq_store_finish(s, g, TQ_TASK_DONE, "x", 1, tq_wall_ms());
        tq_store_ack(s, g);
    }
    tq_persist_flush(p);
    char first[256];
    oldest_segment(dir, first, sizeof first);
    CHECK(first[0] != 0);
    tq_persist_stats_t st;
    int64_t end = tq_mono_ms() + 10000;
    do {
        tq_persist_tick(p, tq_mono_ms());
        tq_persist_flush(p);
        zmq_pollitem_t it = {tq_persist_socket(p), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) > 0)
            tq_persist_on_sync(p);
        tq_persist_stats(p, &st);
    } while (tq_mono_ms() < end && (st.compactions == 0 || has_segment(dir, first)));
    CHECK(st.compactions >= 1);
    CHECK(!has_segment(dir, first));
}

static void test_holder_survives_compaction(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/b", base);
    mkdir(dir, 0700);
    tq_store_t *s = new_store();
    tq_persist_t *p = open_dir(dir, s);
    int w;
    tq_task_t *t = add(s, 10), *q = add(s, 10);
    uint64_t id = t->id, idq = q->id;
    tq_store_lease(s, t, &w, 0xabcdef);
    tq_store_lease(s, q, &w, 0x123);
    tq_store_requeue(s, q, 0, 0); /* lost: queued, the holder of attempt 1 kept */
    /* the failed set: failed after its retries, delivered and ACKed: the
     * journal keeps it with its payload (FETCHED, not GONE), and so does
     * compaction */
    tq_task_t *f = add(s, 33);
    uint64_t idf = f->id;
    tq_store_lease(s, f, &w, 0x77);
    tq_store_finish(s, f, TQ_TASK_FAILED, "boom", 4, tq_wall_ms());
    tq_store_fetched(s, f, tq_wall_ms());
    int64_t f_expires = tq_task_expires_ms(f);
    tq_store_ack(s, f);
    compact(dir, s, p); /* the segment with the LEASE records goes */
    reopen(dir, &s, &p);
    t = tq_store_get(s, id);
    q = tq_store_get(s, idq);
    CHECK(t && q);
    CHECK_EQ_INT(tq_task_attempt(t), 1);
    CHECK_EQ_INT(tq_task_holder(t), 0xabcdef);
    CHECK_EQ_INT(tq_task_attempt(q), 1);
    CHECK_EQ_INT(tq_task_holder(q), 0x123);
    f = tq_store_get(s, idf);
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(f->state, TQ_TASK_FAILED);
        CHECK_EQ_INT(tq_task_payload(f).len, 33);
        CHECK(tq_task_data(f).len == 4 && memcmp(tq_task_data(f).data, "boom", 4) == 0);
        CHECK_EQ_INT(tq_task_expires_ms(f), f_expires); /* the result TTL from delivery */
        CHECK(tq_task_acked(f));
    }
    tq_persist_destroy(&p);
    store_destroy(&s);
}

/* The identity that submitted a task is recorded with it (TF_OWNER),
 * replayed into policy->owners, and rewritten by compaction; a task
 * added without a submitter has no owner. */
static void test_owner_survives_restart_and_compaction(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/c", base);
    mkdir(dir, 0700);
    tq_policy_t pol = {.owners = tq_idmap_new()};
    policy = &pol;
    tq_store_t *s = new_store();
    tq_persist_t *p = open_dir(dir, s);
    const char *alice = tq_ident_intern("alice");
    pol.submitter = alice;
    uint64_t mine = add(s, 10)->id;
    pol.submitter = NULL;
    uint64_t anon = add(s, 10)->id;
    CHECK(tq_idmap_get(pol.owners, mine) == alice);
    reopen(dir, &s, &p);
    tq_idmap_destroy(&pol.owners); /* what replay rebuilds */
    pol.owners = tq_idmap_new();
    reopen(dir, &s, &p);
    CHECK(tq_idmap_get(pol.owners, mine) == alice);
    CHECK(tq_idmap_get(pol.owners, anon) == NULL);
    compact(dir, s, p);
    tq_persist_flush(p);
    tq_persist_destroy(&p);
    store_destroy(&s);
    tq_idmap_destroy(&pol.owners);
    pol.owners = tq_idmap_new();
    s = new_store();
    p = open_dir(dir, s);
    CHECK(p && tq_store_get(s, mine) && tq_store_get(s, anon));
    CHECK(tq_idmap_get(pol.owners, mine) == alice);
    CHECK(tq_idmap_get(pol.owners, anon) == NULL);
    tq_persist_destroy(&p);
    store_destroy(&s);
    tq_idmap_destroy(&pol.owners);
    policy = NULL;
    tq_ident_intern_free();
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    tq_log_init("persist_test");
    tq_log_set_level(TQ_LOG_WARN);
    ctx = zmq_ctx_new();
    snprintf(base, sizeof base, "/tmp/tq-persist-test-XXXXXX");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_holder_replayed);
    RUN(test_holder_survives_compaction);
    RUN(test_owner_survives_restart_and_compaction);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    zmq_ctx_term(ctx);
    TEST_MAIN_END();
}
