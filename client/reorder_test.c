/* reorder_test.c - the in-order window used by map, submit and wait. */
#include <stdint.h>
#include <string.h>

#include "reorder.h"
#include "tq_test.h"

static void test_in_order_release(void)
{
    tq_reorder_t *r = tq_reorder_new(4);
    uint64_t s1, s2, s3;
    CHECK_EQ_INT(tq_reorder_admit(r, &s1), 0);
    CHECK_EQ_INT(tq_reorder_admit(r, &s2), 0);
    CHECK_EQ_INT(tq_reorder_admit(r, &s3), 0);
    CHECK_EQ_INT(s1, 1);
    CHECK_EQ_INT(s3, 3);
    CHECK_EQ_INT(tq_reorder_inflight(r), 3);
    /* answers arrive 3, 1, 2: only a complete prefix is printable */
    CHECK_EQ_INT(tq_reorder_fill(r, 3, 1, 1, "nine", 4), 0);
    CHECK(tq_reorder_peek(r) == NULL);
    CHECK_EQ_INT(tq_reorder_fill(r, 1, 1, 1, "one", 3), 0);
    const tq_slot_t *s = tq_reorder_peek(r);
    CHECK(s != NULL);
    CHECK_EQ_INT(s->seq, 1);
    CHECK_EQ_STR((const char *)s->data, "one");
    tq_reorder_pop(r);
    CHECK(tq_reorder_peek(r) == NULL);
    CHECK_EQ_INT(tq_reorder_fill(r, 2, 2, 3, "boom", 4), 0);
    s = tq_reorder_peek(r);
    CHECK(s && s->seq == 2 && s->status == 2 && s->attempts == 3);
    tq_reorder_pop(r);
    s = tq_reorder_peek(r);
    CHECK(s && s->seq == 3 && s->len == 4);
    tq_reorder_pop(r);
    CHECK_EQ_INT(tq_reorder_inflight(r), 0);
    CHECK(tq_reorder_oldest(r) == NULL);
    tq_reorder_destroy(&r);
    CHECK(r == NULL);
    tq_reorder_destroy(&r); /* NULL is fine */
}

static void test_window_bound(void)
{
    tq_reorder_t *r = tq_reorder_new(2);
    uint64_t s;
    CHECK_EQ_INT(tq_reorder_admit(r, &s), 0);
    CHECK_EQ_INT(tq_reorder_admit(r, &s), 0);
    CHECK_EQ_INT(tq_reorder_admit(r, &s), -1); /* full until the oldest is popped */
    CHECK_EQ_INT(tq_reorder_fill(r, 2, 1, 1, "b", 1), 0);
    CHECK_EQ_INT(tq_reorder_admit(r, &s), -1); /* answered but not printable yet */
    CHECK_EQ_INT(tq_reorder_fill(r, 1, 1, 1, "a", 1), 0);
    tq_reorder_pop(r);
    CHECK_EQ_INT(tq_reorder_admit(r, &s), 0);
    CHECK_EQ_INT(s, 3);
    /* the ring slot of 3 was reused: it must start empty */
    tq_slot_t *sl = tq_reorder_slot(r, 3);
    CHECK(sl && !sl->ready && sl->id == 0 && sl->data == NULL);
    tq_reorder_destroy(&r);
}

static void test_bad_fills(void)
{
    tq_reorder_t *r = tq_reorder_new(3);
    uint64_t s;
    tq_reorder_admit(r, &s);
    CHECK_EQ_INT(tq_reorder_fill(r, 0, 1, 1, "x", 1), -1); /* never admitted */
    CHECK_EQ_INT(tq_reorder_fill(r, 2, 1, 1, "x", 1), -1); /* not yet admitted */
    CHECK_EQ_INT(tq_reorder_fill(r, 1, 1, 1, "x", 1), 0);
    CHECK_EQ_INT(tq_reorder_fill(r, 1, 1, 1, "y", 1), -1); /* first answer wins */
    CHECK_EQ_STR((const char *)tq_reorder_peek(r)->data, "x");
    tq_reorder_pop(r);
    CHECK_EQ_INT(tq_reorder_fill(r, 1, 1, 1, "z", 1), -1); /* already popped */
    CHECK(tq_reorder_slot(r, 1) == NULL);
    /* empty data is an empty string, not NULL */
    tq_reorder_admit(r, &s);
    CHECK_EQ_INT(tq_reorder_fill(r, s, 1, 1, NULL, 0), 0);
    CHECK_EQ_STR((const char *)tq_reorder_peek(r)->data, "");
    tq_reorder_destroy(&r); /* frees the unpopped answer */
}

static void test_many_through_small_window(void)
{
    /* 100000 tasks through a window of 7, answered in reverse within each
     * window: output order must still be 1..N. */
    tq_reorder_t *r = tq_reorder_new(7);
    uint64_t printed = 0, admitted = 0, bad = 0;
    const uint64_t total = 100000;
    while (printed < total) {
        uint64_t s, first = admitted + 1;
        while (admitted < total && tq_reorder_admit(r, &s) == 0)
            admitted++;
        for (uint64_t q = admitted; q >= first && q > 0; q--) {
            char buf[24];
            int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)q);
            tq_reorder_fill(r, q, 1, 1, buf, (size_t)n);
        }
        const tq_slot_t *sl;
        while ((sl = tq_reorder_peek(r))) {
            if (sl->seq != printed + 1)
                bad++;
            printed++;
            tq_reorder_pop(r);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(printed, total);
    tq_reorder_destroy(&r);
}

/* fill_next: the oldest slot borrows the caller's bytes (no copy); any
 * other slot gets a copy, so the caller's buffer may change at once. */
static void test_fill_next_borrows_only_the_oldest(void)
{
    tq_reorder_t *r = tq_reorder_new(4);
    uint64_t s;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(tq_reorder_admit(r, &s), 0);
    char buf[8] = "two";
    CHECK_EQ_INT(tq_reorder_fill_next(r, 2, 1, 1, buf, 3), 0);
    memcpy(buf, "XXX", 3); /* the event's bytes are gone: 2 kept a copy */
    char one[] = "one";
    CHECK_EQ_INT(tq_reorder_fill_next(r, 1, 1, 1, one, 3), 0);
    const tq_slot_t *sl = tq_reorder_peek(r);
    CHECK(sl && sl->seq == 1 && sl->borrowed && sl->data == (uint8_t *)one && sl->len == 3);
    CHECK_EQ_INT(tq_reorder_fill_next(r, 1, 1, 1, one, 3), -1); /* the first answer wins */
    tq_reorder_pop(r);
    sl = tq_reorder_peek(r);
    CHECK(sl && sl->seq == 2 && !sl->borrowed && sl->len == 3 && memcmp(sl->data, "two", 3) == 0);
    tq_reorder_pop(r);
    char three[] = "three";
    CHECK_EQ_INT(tq_reorder_fill_next(r, 3, 1, 1, three, 5), 0);
    tq_reorder_destroy(&r); /* a borrowed slot is not freed */
}

int main(void)
{
    RUN(test_in_order_release);
    RUN(test_window_bound);
    RUN(test_fill_next_borrows_only_the_oldest);
    RUN(test_bad_fills);
    RUN(test_many_through_small_window);
    TEST_MAIN_END();
}
