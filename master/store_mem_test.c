/* store_mem_test.c - the store's compact parts: the paged id map, the
 * slab allocator, session keys kept in their tasks (short keys, long keys
 * sharing a stem), inline and separate payloads, id-order walks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "slab.h"
#include "store.h"
#include "taskidx.h"
#include "tq_test.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_taskidx(void)
{
    enum { N = 20000 };
    static uint64_t ids[N];
    static char present[N];
    tq_taskidx_t *m = tq_taskidx_new();
    for (size_t i = 0; i < N; i++) {
        /* mostly dense, with a few far-off ids */
        ids[i] = i % 97 == 0 ? (next_rand() >> 8) + 1 : 1000 + i;
        tq_taskidx_put(m, ids[i], &ids[i]);
        present[i] = 1;
    }
    CHECK(tq_taskidx_get(m, 0xFFFFFFFFFFFFull) == NULL);
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < N; i++) {
            if (next_rand() % 3 == 0) {
                void *v = tq_taskidx_remove(m, ids[i]);
                CHECK(v == (present[i] ? &ids[i] : NULL));
                present[i] = 0;
            } else if (!present[i] && next_rand() % 2) {
                tq_taskidx_put(m, ids[i], &ids[i]);
                present[i] = 1;
            }
        }
        size_t live = 0;
        for (size_t i = 0; i < N; i++) {
            live += present[i];
            CHECK(tq_taskidx_get(m, ids[i]) == (present[i] ? &ids[i] : NULL));
        }
        CHECK_EQ_INT(tq_taskidx_size(m), live);
        /* the walk sees every id once, in order */
        size_t seen = 0;
        uint64_t id = 1, prev = 0;
        for (uint64_t *v = tq_taskidx_next(m, id, &id); v; v = tq_taskidx_next(m, id + 1, &id)) {
            CHECK(*v == id && id > prev);
            prev = id;
            seen++;
        }
        CHECK_EQ_INT(seen, live);
    }
    for (size_t i = 0; i < N; i++)
        tq_taskidx_remove(m, ids[i]);
    CHECK_EQ_INT(tq_taskidx_size(m), 0);
    uint64_t id;
    CHECK(tq_taskidx_next(m, 1, &id) == NULL);
    tq_taskidx_put(m, 5, &id); /* usable again after emptying */
    CHECK(tq_taskidx_get(m, 5) == &id);
    tq_taskidx_remove(m, 5);
    /* two dense runs far apart (ids after a restart) */
    const uint64_t far = (uint64_t)1 << 40;
    for (size_t i = 1; i <= 3000; i++) {
        tq_taskidx_put(m, i, &ids[i]);
        tq_taskidx_put(m, far + i, &ids[i + 3000]);
    }
    for (size_t i = 1; i <= 3000; i++)
        CHECK(tq_taskidx_get(m, i) == &ids[i] && tq_taskidx_get(m, far + i) == &ids[i + 3000] &&
              tq_taskidx_get(m, far / 2 + i) == NULL);
    CHECK(tq_taskidx_next(m, 3001, &id) == &ids[3001] && id == far + 1);
    for (size_t i = 1; i <= 3000; i++) {
        CHECK(tq_taskidx_remove(m, far + i) == &ids[i + 3000]);
        CHECK(tq_taskidx_remove(m, i) == &ids[i]);
    }
    CHECK_EQ_INT(tq_taskidx_size(m), 0);
    tq_taskidx_destroy(&m);
    tq_taskidx_destroy(&m); /* NULL is fine */
}

static void test_slab(void)
{
    enum { N = 30000 };
    static uint8_t *p[N];
    static size_t sz[N];
    tq_slab_t *s = tq_slab_new();
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < N; i++) {
            if (p[i] && next_rand() % 2 == 0) {
                for (size_t j = 0; j < sz[i]; j++)
                    CHECK(p[i][j] == (uint8_t)(i + j));
                tq_slab_free(s, p[i], sz[i]);
                p[i] = NULL;
            }
            if (!p[i]) {
                sz[i] = 1 + next_rand() % (TQ_SLAB_MAX + 64);
                p[i] = tq_slab_alloc(s, sz[i]);
                CHECK(p[i] != NULL && ((uintptr_t)p[i] & 7) == 0);
                for (size_t j = 0; j < sz[i]; j++)
                    p[i][j] = (uint8_t)(i + j);
            }
        }
    }
    for (size_t i = 0; i < N; i++) {
        for (size_t j = 0; j < sz[i]; j++)
            CHECK(p[i][j] == (uint8_t)(i + j));
        tq_slab_free(s, p[i], sz[i]);
    }
    /* at most one kept block per size class once everything is freed */
    CHECK(tq_slab_block_bytes(s) <= (TQ_SLAB_MAX / 8 + 1) * ((size_t)1 << 20));
    tq_slab_destroy(&s);
}

static tq_task_t *add_keyed(tq_store_t *s, const uint8_t *key, size_t klen, size_t plen)
{
    static uint8_t payload[1000];
    memset(payload, 'p', sizeof payload);
    tq_task_spec_t spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = tq_bytes_str("f");
    spec.key = (tq_bytes_t){key, klen};
    spec.payload = (tq_bytes_t){payload, plen};
    tq_err_t code = {0, ""};
    return tq_store_add_session(s, &spec, 0, &code);
}

static void test_session_keys(void)
{
    tq_store_cfg_t cfg = {.first_id = 1,
                          .max_tasks = 100000,
                          .result_ttl_ms = 100,
                          .unfetched_ttl_ms = 1000};
    tq_store_t *s = tq_store_new(&cfg);
    enum { N = 5000 };
    static uint8_t keys[N][24];
    static size_t klen[N];
    static uint64_t id[N];
    for (size_t i = 0; i < N; i++) {
        /* a few sessions' long keys (16-byte stem + counter), and short keys */
        klen[i] = i % 5 == 0 ? 1 + i % 8 : 24;
        memset(keys[i], (int)(i % 3), 16);
        for (int b = 0; b < 8; b++)
            keys[i][klen[i] == 24 ? 16 + b : b] = (uint8_t)(i >> (8 * b));
        if (klen[i] < 8)
            keys[i][0] = (uint8_t)(i * 7); /* short keys: no clash with each other */
        tq_bytes_t k = {keys[i], klen[i]};
        if (tq_store_key_find(s, k, 0)) {
            id[i] = 0; /* a short key already taken: skip */
            continue;
        }
        tq_task_t *t = add_keyed(s, keys[i], klen[i], i % 7 == 0 ? 500 : 16);
        CHECK(t != NULL);
        id[i] = t->id;
        uint8_t out[TQ_MAX_KEY];
        CHECK_EQ_INT(tq_store_task_skey(s, t, out), klen[i]);
        CHECK(memcmp(out, keys[i], klen[i]) == 0);
        CHECK_EQ_INT(tq_task_payload(t).len, i % 7 == 0 ? 500 : 16);
        CHECK(tq_task_payload(t).data[0] == 'p');
    }
    for (size_t i = 0; i < N; i++)
        if (id[i])
            CHECK(tq_store_key_find(s, (tq_bytes_t){keys[i], klen[i]}, 0) == id[i]);
    /* finish and ACK every other one: their keys go, the rest stay */
    for (size_t i = 0; i < N; i += 2) {
        tq_task_t *t = id[i] ? tq_store_get(s, id[i]) : NULL;
        if (!t)
            continue;
        tq_store_finish(s, t, TQ_TASK_DONE, "ok", 2, 1);
        CHECK_EQ_INT(tq_task_payload(t).len, 0);
        tq_store_ack(s, t);
        CHECK_EQ_INT(tq_task_skey_len(t), 0);
    }
    for (size_t i = 0; i < N; i++)
        if (id[i])
            CHECK(tq_store_key_find(s, (tq_bytes_t){keys[i], klen[i]}, 0) == (i % 2 ? id[i] : 0));
    /* an unknown stem and an unknown tail are not found */
    uint8_t other[24];
    memset(other, 9, sizeof other);
    CHECK(tq_store_key_find(s, (tq_bytes_t){other, 24}, 0) == 0);
    memcpy(other, keys[1], 24);
    other[23] ^= 0x55;
    CHECK(tq_store_key_find(s, (tq_bytes_t){other, 24}, 0) == 0);
    /* id-order walk */
    size_t n = 0;
    uint64_t prev = 0;
    for (tq_task_t *t = tq_store_first(s); t; t = tq_store_next(s, t)) {
        CHECK(t->id > prev);
        prev = t->id;
        n++;
    }
    CHECK_EQ_INT(n, tq_store_size(s));
    CHECK(tq_store_from(s, prev + 1) == NULL);
    tq_store_destroy(&s);
}

int main(void)
{
    RUN(test_taskidx);
    RUN(test_slab);
    RUN(test_session_keys);
    TEST_MAIN_END();
}
