/* tq_priv.h - least privilege: the user a program drops to (--user) and
 * the user its task processes run as (--task-user).
 *
 * A program started as root does what needs root first (bind a port,
 * read a key only root may read, open its data dir), then drops to an
 * unprivileged user for good: supplementary groups (initgroups), then
 * the group, then the user, real, effective and saved alike, after which
 * it checks that none of root's ids can be taken back. docs/security.md
 * says what each program keeps. */
#ifndef TQ_PRIV_H
#define TQ_PRIV_H

#include <stddef.h>
#include <sys/types.h>

#include "tq_err.h"

/* Supplementary groups kept for a user at most. */
#define TQ_PRIV_MAX_GROUPS 256

typedef struct {
    char name[64];
    uid_t uid;
    gid_t gid;
    char home[256];
    gid_t groups[TQ_PRIV_MAX_GROUPS];
    int ngroups;
} tq_user_t;

/* Look up user (a name from the password database, or a number) and its
 * groups. flag names the setting in messages ("--user"). Refuses root
 * (dropping to root drops nothing) and, when need_root and we are not
 * root, any user at all (only root can change to another user; a check
 * of the settings passes need_root 0). Returns 0, or -1 with err:
 *   "--user nobodyx: no such user"
 *   "--user taskq: only root can change user (we run as uid 1000)" */
int tq_user_lookup(const char *user, const char *flag, int need_root, tq_user_t *out,
                   tq_err_t *err);

/* Set no_new_privs (no setuid program, nor file capabilities, can raise
 * privileges at execve). It holds per thread and is inherited: call it
 * before any thread exists, so that every thread has it. Returns 0 or
 * -1 with err. */
int tq_priv_no_new_privs(tq_err_t *err);

/* Set this thread's file system ids (setfsuid, setfsgid) to u's, or back
 * to root's with u NULL: files created from now on belong to u and file
 * access is checked as u, while the process keeps root for the rest
 * (binding a port below 1024). Threads created afterwards inherit them.
 * Call on the only thread, as root. */
void tq_priv_fs_as(const tq_user_t *u);

/* Become u in every thread of the process for good: setgroups to u's
 * groups, setgid, setuid (real, effective and saved ids), then check
 * that root's uid and gid cannot be regained, set no_new_privs on this
 * thread (tq_priv_no_new_privs, called before the threads started,
 * covers the others) and make the process non-dumpable again (a change
 * of user resets it). Returns 0, or -1
 * with err naming the step that failed (then stop: the process may be
 * half-dropped). */
int tq_priv_drop(const tq_user_t *u, tq_err_t *err);

#endif
