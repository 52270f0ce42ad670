/* tq_test.h - the few macros unit tests need. A test binary runs its
 * cases in order, prints one line per failed check with file:line, and
 * exits 1 if any check failed (meson test reads the exit status). */
#ifndef TQ_TEST_H
#define TQ_TEST_H

#include <stdio.h>
#include <string.h>

static int tq_test_failures;
static int tq_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        tq_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            tq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long tq_a_ = (long long)(a), tq_b_ = (long long)(b);                                  \
        tq_test_checks++;                                                                          \
        if (tq_a_ != tq_b_) {                                                                      \
            tq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, tq_a_, tq_b_);                                                         \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *tq_a_ = (a), *tq_b_ = (b);                                                     \
        tq_test_checks++;                                                                          \
        if (!tq_a_ || !tq_b_ || strcmp(tq_a_, tq_b_) != 0) {                                       \
            tq_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,        \
                    __LINE__, #a, #b, tq_a_ ? tq_a_ : "(null)", tq_b_ ? tq_b_ : "(null)");         \
        }                                                                                          \
    } while (0)

#define RUN(test_fn)                                                                               \
    do {                                                                                           \
        int tq_before_ = tq_test_failures;                                                         \
        test_fn();                                                                                 \
        printf("%s %s\n", tq_test_failures == tq_before_ ? "ok  " : "FAIL", #test_fn);             \
    } while (0)

#define TEST_MAIN_END()                                                                            \
    do {                                                                                           \
        printf("%d checks, %d failed\n", tq_test_checks, tq_test_failures);                        \
        return tq_test_failures ? 1 : 0;                                                           \
    } while (0)

#endif
