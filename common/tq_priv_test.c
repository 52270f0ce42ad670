/* tq_priv_test.c - user lookup for --user / --task-user: unknown users,
 * root and non-root callers are refused with a message naming the flag;
 * a name and its uid find the same user. (Dropping is tested with the
 * real programs: tests/integration/test_privdrop.py.) */
#include "tq_priv.h"

#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tq_test.h"

static void test_unknown_and_root_refused(void)
{
    tq_user_t u;
    tq_err_t err;
    CHECK_EQ_INT(tq_user_lookup("no-such-user-tq", "--user", 0, &u, &err), -1);
    CHECK(strstr(err.msg, "--user no-such-user-tq: no such user") != NULL);
    CHECK_EQ_INT(tq_user_lookup("", "--task-user", 0, &u, &err), -1);
    CHECK(strstr(err.msg, "--task-user: empty user name") != NULL);
    CHECK_EQ_INT(tq_user_lookup("root", "--user", 0, &u, &err), -1);
    CHECK(strstr(err.msg, "--user root: is root") != NULL);
    CHECK_EQ_INT(tq_user_lookup("0", "--user", 0, &u, &err), -1);
}

static void test_name_and_uid(void)
{
    struct passwd *pw = getpwnam("nobody");
    if (!pw)
        return; /* no such account here */
    tq_user_t a, b;
    char num[32];
    tq_err_t err;
    CHECK_EQ_INT(tq_user_lookup("nobody", "--user", 0, &a, &err), 0);
    CHECK_EQ_INT((long)a.uid, (long)pw->pw_uid);
    CHECK_EQ_INT((long)a.gid, (long)pw->pw_gid);
    CHECK(a.ngroups >= 1);
    snprintf(num, sizeof num, "%u", (unsigned)pw->pw_uid);
    CHECK_EQ_INT(tq_user_lookup(num, "--user", 0, &b, &err), 0);
    CHECK(strcmp(a.name, b.name) == 0);
    /* only root may change user */
    int rc = tq_user_lookup("nobody", "--user", 1, &a, &err);
    if (geteuid() == 0) {
        CHECK_EQ_INT(rc, 0);
    } else {
        CHECK_EQ_INT(rc, -1);
        CHECK(strstr(err.msg, "only root can change user") != NULL);
    }
}

int main(void)
{
    RUN(test_unknown_and_root_refused);
    RUN(test_name_and_uid);
    TEST_MAIN_END();
}
