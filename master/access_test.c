/* access_test.c - the --allow-keys parser: good files, every error with
 * its FILE:LINE, and the permission tests. */
#include "access.h"

#include "tq_test.h"

#include <stdlib.h>
#include <string.h>

/* Two valid Z85 public keys (any 40 Z85 characters decode). */
#define K1 "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define K2 "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"

static tq_allow_t *parse(const char *text, char *err)
{
    tq_err_t e = {0, ""};
    tq_allow_t *a = tq_allow_parse("allow", text, strlen(text), &e);
    memcpy(err, e.msg, 256);
    err[255] = '\0';
    return a;
}

static void expect_err(const char *text, const char *want)
{
    char err[256] = "";
    tq_allow_t *a = parse(text, err);
    CHECK(a == NULL);
    if (!strstr(err, want)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err, want);
        CHECK(0);
    }
    tq_allow_free(&a);
}

static void test_good(void)
{
    char err[256] = "";
    tq_allow_t *a = parse("# comment\n\n" K1 " alice client queues=mail,img-* functions=resize\n"
                          "  " K2 "\tw1 worker functions=*\r\n",
                          err);
    CHECK(a != NULL);
    if (!a) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK_EQ_INT(tq_allow_count(a), 2);
    const tq_ident_t *al = tq_allow_find(a, "alice"), *w = tq_allow_find(a, "w1");
    CHECK(al && w);
    CHECK(tq_allow_find(a, "bob") == NULL);
    CHECK_EQ_INT(al->role, TQ_IDENT_CLIENT);
    CHECK_EQ_INT(tq_ident_may_queue(al, "mail"), 1);
    CHECK_EQ_INT(tq_ident_may_queue(al, "img-big"), 1);
    CHECK_EQ_INT(tq_ident_may_queue(al, "secret"), 0);
    CHECK_EQ_INT(tq_ident_may_fn(al, "resize"), 1);
    CHECK_EQ_INT(tq_ident_may_fn(al, "rm"), 0);
    CHECK_EQ_INT(w->role, TQ_IDENT_WORKER);
    CHECK_EQ_INT(tq_ident_may_fn(w, "anything"), 1);
    CHECK_EQ_INT(tq_ident_may_queue(w, "mail"), 0);
    CHECK(al->owner == tq_ident_intern("alice") && al->owner != w->owner && al->owner);
    CHECK_EQ_STR(al->owner, "alice");
    char buf[16];
    tq_ident_list_text(al->queues, al->nqueues, buf, sizeof buf);
    CHECK_EQ_STR(buf, "mail,img-*");
    tq_ident_list_text(al->queues, al->nqueues, buf, 8);
    CHECK_EQ_STR(buf, "mail...");
    tq_allow_free(&a);
    CHECK(a == NULL);
    a = parse(K1 " ops admin\n", err);
    CHECK(a && tq_ident_may_queue(tq_allow_at(a, 0), "x") &&
          tq_ident_may_fn(tq_allow_at(a, 0), "y"));
    tq_allow_free(&a);
    /* comments after the fields */
    a = parse(K1 "  c client queues=q   # the mail robot\n#comment\n# another\n", err);
    CHECK(a && tq_allow_count(a) == 1 && tq_allow_find(a, "c"));
    tq_allow_free(&a);
    /* a client without functions= may submit any function */
    a = parse(K1 " c client queues=q\n", err);
    CHECK(a && tq_ident_may_fn(tq_allow_at(a, 0), "any"));
    tq_allow_free(&a);
}

static void test_errors(void)
{
    expect_err("", "allow: no keys");
    expect_err("# only a comment\n", "allow: no keys");
    expect_err(K1 " alice\n", "allow:1: expected PUBLIC-KEY NAME ROLE");
    expect_err("\nshort alice client queues=q\n", "allow:2: the public key is not 40 Z85");
    expect_err(K1 " al/ice client queues=q\n", "allow:1: 'al/ice' is not a name");
    expect_err(K1 " alice boss\n", "allow:1: role 'boss' is not worker, client or admin");
    expect_err(K1 " alice client\n", "allow:1: a client needs queues=");
    expect_err(K1 " w worker\n", "allow:1: a worker needs functions=");
    expect_err(K1 " w worker queues=q functions=f\n", "queues= does not apply to a worker");
    expect_err(K1 " o admin queues=q\n", "queues= does not apply to an admin");
    expect_err(K1 " c client queues=q queues=r\n", "queues= given twice");
    expect_err(K1 " c client queues=q,,r\n", "'' is not a pattern");
    expect_err(K1 " c client queues=a/b\n", "'a/b' is not a pattern");
    expect_err(K1 " c client colour=red\n", "expected queues=PATTERNS");
    expect_err(K1 " c client queues=q\n" K2 " c admin\n", "allow:2: name 'c' is given twice");
    expect_err(K1 " c client queues=q\n" K1 " d admin\n",
               "allow:2: this public key is given twice (also for 'c')");
    expect_err(K1 " c client queues=q a b c\n", "allow:1: too many fields");
    expect_err(K1 " c client queues=q\x01\n", "a control character");
    /* 65 patterns */
    char big[1024];
    int off = snprintf(big, sizeof big, "%s c client queues=q", K1);
    for (int i = 0; i < 64; i++)
        off += snprintf(big + off, sizeof big - (size_t)off, ",q");
    snprintf(big + off, sizeof big - (size_t)off, "\n");
    expect_err(big, "more than 64 patterns");
}

int main(void)
{
    RUN(test_good);
    RUN(test_errors);
    tq_ident_intern_free();
    TEST_MAIN_END();
}
