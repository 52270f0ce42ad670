/* tq_idmap_test.c - the id map against a simple reference (an
 * array indexed by id) over a million random operations, plus
 * sequential ids and clustered removal. */
#include "tq_idmap.h"

#include "tq_test.h"

#include <stdlib.h>

/* Operations in the random test. */
#define OPS 1000000
/* Ids are drawn from [1, ID_RANGE] so that hits and misses both occur. */
#define ID_RANGE 400000

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static uint64_t rng(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* Value stored for an id: a recognisable non-NULL pointer. */
static void *val(uint64_t id, uint64_t gen)
{
    return (void *)(uintptr_t)((id << 8) | (gen & 0xff) | 1);
}

static void test_basic(void)
{
    tq_idmap_t *m = tq_idmap_new();
    CHECK_EQ_INT(tq_idmap_size(m), 0);
    CHECK(tq_idmap_get(m, 1) == NULL);
    CHECK(tq_idmap_get(m, 0) == NULL);
    CHECK(tq_idmap_remove(m, 1) == NULL);
    int a, b;
    tq_idmap_put(m, 1, &a);
    tq_idmap_put(m, UINT64_MAX, &b);
    CHECK(tq_idmap_get(m, 1) == &a);
    CHECK(tq_idmap_get(m, UINT64_MAX) == &b);
    tq_idmap_put(m, 1, &b); /* replace */
    CHECK(tq_idmap_get(m, 1) == &b);
    CHECK_EQ_INT(tq_idmap_size(m), 2);
    CHECK(tq_idmap_remove(m, 1) == &b);
    CHECK(tq_idmap_remove(m, 1) == NULL);
    CHECK_EQ_INT(tq_idmap_size(m), 1);
    tq_idmap_destroy(&m);
    CHECK(m == NULL);
    tq_idmap_destroy(&m);
    tq_idmap_destroy(NULL);
}

static void sum_fn(uint64_t id, void *value, void *arg)
{
    uint64_t *acc = arg;
    acc[0] += id;
    acc[1]++;
    if (value != val(id, 0))
        acc[2]++;
}

static void test_sequential(void)
{
    tq_idmap_t *m = tq_idmap_new();
    const uint64_t n = 100000;
    for (uint64_t id = 1; id <= n; id++)
        tq_idmap_put(m, id, val(id, 0));
    CHECK_EQ_INT(tq_idmap_size(m), n);
    uint64_t acc[3] = {0, 0, 0};
    tq_idmap_each(m, sum_fn, acc);
    CHECK(acc[0] == n * (n + 1) / 2);
    CHECK(acc[1] == n);
    CHECK(acc[2] == 0);
    /* remove the even ids, then check every id */
    for (uint64_t id = 2; id <= n; id += 2)
        CHECK(tq_idmap_remove(m, id) == val(id, 0));
    int bad = 0;
    for (uint64_t id = 1; id <= n; id++)
        bad += tq_idmap_get(m, id) != (id % 2 ? val(id, 0) : NULL);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(tq_idmap_size(m), n / 2);
    for (uint64_t id = 1; id <= n; id += 2)
        tq_idmap_remove(m, id);
    CHECK_EQ_INT(tq_idmap_size(m), 0);
    tq_idmap_destroy(&m);
}

static void test_random_against_reference(void)
{
    /* Reference: a direct array indexed by id (ids are small). */
    void **ref = calloc(ID_RANGE + 1, sizeof *ref);
    size_t ref_size = 0;
    tq_idmap_t *m = tq_idmap_new();
    int mismatches = 0;
    for (uint64_t op = 0; op < OPS; op++) {
        uint64_t r = rng();
        uint64_t id = 1 + (r >> 8) % ID_RANGE;
        /* Scatter ids over 64 bits while keeping them distinct. */
        uint64_t key = id * 0x9E3779B97F4A7C15ULL;
        if (key == 0)
            key = 1;
        switch (r & 3) {
        case 0:
        case 1:
            if (!ref[id])
                ref_size++;
            ref[id] = val(id, op);
            tq_idmap_put(m, key, ref[id]);
            break;
        case 2:
            mismatches += tq_idmap_remove(m, key) != ref[id];
            if (ref[id])
                ref_size--;
            ref[id] = NULL;
            break;
        default: mismatches += tq_idmap_get(m, key) != ref[id]; break;
        }
        if (op % 100000 == 0)
            mismatches += tq_idmap_size(m) != ref_size;
    }
    for (uint64_t id = 1; id <= ID_RANGE; id++) {
        uint64_t key = id * 0x9E3779B97F4A7C15ULL;
        mismatches += tq_idmap_get(m, key) != ref[id];
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(tq_idmap_size(m), ref_size);
    /* empty it completely */
    for (uint64_t id = 1; id <= ID_RANGE; id++)
        mismatches += tq_idmap_remove(m, id * 0x9E3779B97F4A7C15ULL) != ref[id];
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(tq_idmap_size(m), 0);
    tq_idmap_destroy(&m);
    free(ref);
}

int main(void)
{
    RUN(test_basic);
    RUN(test_sequential);
    RUN(test_random_against_reference);
    TEST_MAIN_END();
}
