/* tq_priv.c - dropping privileges (tq_priv.h). */
#include "tq_priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "tq_authkey.h"
#include "tq_util.h"

int tq_user_lookup(const char *user, const char *flag, int need_root, tq_user_t *out, tq_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!user || !*user) {
        tq_err_set(err, 0, "%s: empty user name", flag);
        return -1;
    }
    char buf[16384];
    struct passwd pw, *found = NULL;
    int e = getpwnam_r(user, &pw, buf, sizeof buf, &found);
    if (!found) {
        /* a number names a uid, as chown does */
        uint64_t n;
        if (tq_parse_u64(user, &n) == 0 && n < (uint64_t)(uid_t)-1)
            e = getpwuid_r((uid_t)n, &pw, buf, sizeof buf, &found);
    }
    if (!found) {
        if (e && e != ENOENT && e != ESRCH)
            tq_err_set(err, 0, "%s %s: cannot look the user up: %s", flag, user, strerror(e));
        else
            tq_err_set(err, 0, "%s %s: no such user", flag, user);
        return -1;
    }
    if (pw.pw_uid == 0) {
        tq_err_set(err, 0, "%s %s: is root; name an unprivileged user", flag, user);
        return -1;
    }
    if (need_root && geteuid() != 0) {
        tq_err_set(err, 0, "%s %s: only root can change user (we run as uid %u)", flag, user,
                   (unsigned)geteuid());
        return -1;
    }
    tq_strlcpy(out->name, pw.pw_name, sizeof out->name);
    tq_strlcpy(out->home, pw.pw_dir ? pw.pw_dir : "/", sizeof out->home);
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;
    int n = TQ_PRIV_MAX_GROUPS;
    if (getgrouplist(pw.pw_name, pw.pw_gid, out->groups, &n) < 0) {
        tq_err_set(err, 0, "%s %s: member of more than %d groups", flag, user, TQ_PRIV_MAX_GROUPS);
        return -1;
    }
    out->ngroups = n;
    return 0;
}

int tq_priv_no_new_privs(tq_err_t *err)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        tq_err_set(err, 0, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void tq_priv_fs_as(const tq_user_t *u)
{
    if (u) {
        setfsgid(u->gid);
        setfsuid(u->uid);
    } else {
        setfsuid(0);
        setfsgid(0);
    }
}

int tq_priv_drop(const tq_user_t *u, tq_err_t *err)
{
    /* glibc applies each of these to every thread of the process. */
    if (setgroups((size_t)u->ngroups, u->groups) < 0) {
        tq_err_set(err, 0, "--user %s: setgroups: %s", u->name, strerror(errno));
        return -1;
    }
    if (setresgid(u->gid, u->gid, u->gid) < 0) {
        tq_err_set(err, 0, "--user %s: setgid %u: %s", u->name, (unsigned)u->gid, strerror(errno));
        return -1;
    }
    if (setresuid(u->uid, u->uid, u->uid) < 0) {
        tq_err_set(err, 0, "--user %s: setuid %u: %s", u->name, (unsigned)u->uid, strerror(errno));
        return -1;
    }
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) < 0 || getresgid(&gr, &ge, &gs) < 0 || r != u->uid || e != u->uid ||
        s != u->uid || gr != u->gid || ge != u->gid || gs != u->gid) {
        tq_err_set(err, 0, "--user %s: the ids did not change as asked", u->name);
        return -1;
    }
    /* Root must be out of reach now: these must fail. */
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0) {
        tq_err_set(err, 0, "--user %s: root could be regained after the drop", u->name);
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        tq_err_set(err, 0, "--user %s: PR_SET_NO_NEW_PRIVS: %s", u->name, strerror(errno));
        return -1;
    }
    tq_process_protect(); /* a change of credentials made us dumpable again */
    return 0;
}
