/* access.h - key-pair mode's identities and permissions: the
 * --allow-keys file (parsed whole, strictly, with FILE:LINE errors), the
 * lookups the ZAP handler and the loop make, and the permission tests.
 * docs/security.md "Identities and permissions" is the user's side.
 *
 * File format: one identity a line, fields separated by blanks; a field
 * starting with '#' starts a comment to the end of the line (a whole
 * line, or after the fields); blank lines are skipped.
 *
 *   PUBLIC-KEY  NAME  ROLE  [queues=PAT,...] [functions=PAT,...]
 *
 *   PUBLIC-KEY  40 Z85 characters (the public-key line of NAME.pub)
 *   NAME        1..64 of [A-Za-z0-9_.@-], unique in the file
 *   ROLE        worker | client | admin
 *   queues=     client: the queues (fnmatch patterns) it may submit to,
 *               put to, get from and read results of; required
 *   functions=  worker: the functions it may serve; required.
 *               client: the functions it may submit (default: any)
 *   admin: a client that may use every queue and function, every ADMIN
 *   operation, and every task (no queues= or functions=)
 *
 * Single-threaded (the loop); the ZAP handler gets its own copy of the
 * keys (tq_auth_set_keys). */
#ifndef TQ_MASTER_ACCESS_H
#define TQ_MASTER_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "tq_err.h"
#include "tq_idmap.h"

/* Longest identity name. */
#define TQ_IDENT_NAME_MAX 64
/* Identities in one file at most, and the file's size: a file is parsed
 * whole on every SIGHUP. */
#define TQ_ALLOW_MAX_KEYS 10000
#define TQ_ALLOW_FILE_MAX (4u * 1024u * 1024u)
/* Patterns in one queues= or functions= list at most, and the longest
 * pattern. */
#define TQ_ALLOW_MAX_PATTERNS 64
#define TQ_ALLOW_PATTERN_MAX 128
/* The User-Id the ZAP handler gives the shared-key client pair (with
 * --authkey-file): '*' is not allowed in an identity name, so no file
 * entry can take it. */
#define TQ_IDENT_SHARED "*authkey"

typedef enum { TQ_IDENT_WORKER = 1, TQ_IDENT_CLIENT = 2, TQ_IDENT_ADMIN = 3 } tq_ident_role_t;

typedef struct {
    char name[TQ_IDENT_NAME_MAX + 1];
    uint8_t key[32];
    tq_ident_role_t role;
    char **queues; /* client: patterns; admin: none (every queue) */
    size_t nqueues;
    char **fns; /* worker: patterns; client: patterns, 0 = any */
    size_t nfns;
    const char *owner; /* the name, interned (tq_ident_intern): tasks' owner */
} tq_ident_t;

typedef struct tq_allow tq_allow_t;

/* What the loop enforces (owned by the loop; the handlers read it). */
typedef struct {
    tq_allow_t *allow;     /* --allow-keys, or NULL: no identities, no limits */
    tq_idmap_t *owners;    /* task id -> owner (an interned identity name) of
                            tasks a key-pair identity submitted; journaled
                            with the task (persist.c), stale ids swept
                            (tq_loop: ids are never reused) */
    const char *submitter; /* the owner of the tasks a SUBMIT being handled
                              adds (set around tq_engine_submit), or NULL */
    uint64_t forbidden;    /* requests refused with FORBIDDEN (metrics) */
} tq_policy_t;

/* Parse a file's text (path: for messages). Returns the table, or NULL
 * with err "PATH:LINE: message". Caller owns it (tq_allow_free). */
tq_allow_t *tq_allow_parse(const char *path, const char *text, size_t len, tq_err_t *err);
/* Read (owned by us or root, not writable by group or others) and parse
 * path. Returns the table, or NULL with err. */
tq_allow_t *tq_allow_load(const char *path, tq_err_t *err);
/* Accepts NULL; nulls *self_p. */
void tq_allow_free(tq_allow_t **self_p);

size_t tq_allow_count(const tq_allow_t *self);
const tq_ident_t *tq_allow_at(const tq_allow_t *self, size_t i);
/* The identity of that name, or NULL. */
const tq_ident_t *tq_allow_find(const tq_allow_t *self, const char *name);

/* Identity names interned for the master's life (owners of tasks are
 * compared by pointer): the interned copy of name, or NULL when
 * TQ_IDENT_INTERN_MAX names are interned already (the task's owner is
 * then not recorded). */
#define TQ_IDENT_INTERN_MAX 65536
const char *tq_ident_intern(const char *name);
/* Free every interned name (at exit: no owner pointer may be used after). */
void tq_ident_intern_free(void);
/* 1 if name is a valid identity name (1..TQ_IDENT_NAME_MAX of letters,
 * digits and _ . @ -). */
int tq_ident_name_valid(const char *name, size_t len);

/* 1 if id may use queue (admin: any). */
int tq_ident_may_queue(const tq_ident_t *id, const char *queue);
/* 1 if id may serve (worker) or submit (client) function fn. */
int tq_ident_may_fn(const tq_ident_t *id, const char *fn);
/* "a,b,c" of a list of patterns into buf (cut with "..."). */
void tq_ident_list_text(char *const *pats, size_t n, char *buf, size_t len);
const char *tq_ident_role_name(tq_ident_role_t role);

#endif
