/* tq_exit.h - the one table of exit statuses, shared by taskq,
 * taskq-worker and taskq-master. README.md and `taskq --help` print the
 * same table; keep them in step. Numbers are a stable contract. */
#ifndef TQ_EXIT_H
#define TQ_EXIT_H

#define TQ_EXIT_OK 0          /* everything succeeded */
#define TQ_EXIT_TASK_FAILED 1 /* at least one task failed (or is dead) */
#define TQ_EXIT_USAGE 2       /* bad flag, argument or configuration value */
#define TQ_EXIT_CONNECT                                                                            \
    3                       /* cannot connect, authentication failed, or
                                 the master went away and did not return */
#define TQ_EXIT_TIMEOUT 4   /* --timeout passed before every result came */
#define TQ_EXIT_CANCELLED 5 /* at least one task was cancelled (and none failed) */
#define TQ_EXIT_NOT_FOUND 6 /* at least one task id is unknown to the master */
#define TQ_EXIT_REFUSED                                                                            \
    7                 /* the master refused the request (too large,
                                 bad name, full, ...) */
#define TQ_EXIT_ENV 8 /* cannot start: key file, data dir, bind address */
#define TQ_EXIT_FAULT                                                                              \
    9                       /* taskq status: the master reports a fault (a
                                 journal error: it refuses submits) */
#define TQ_EXIT_INTERNAL 70 /* a bug in taskq (as sysexits' EX_SOFTWARE) */

#endif
