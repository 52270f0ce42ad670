/* forkserver.h - where prefork and spawn children come from: a small
 * process forked from the worker before it reads its key or creates its
 * ZeroMQ context, so that the children it starts hold no copy of the
 * key (docs/security.md, "Task processes hold no secret").
 *
 * A fork of the running worker would copy libzmq's copy of the client
 * key pair, which lives on the worker's heap. The fork server is a copy
 * of the worker as it was before: the function table, the plugins, the
 * task-process settings (tq_command_set_task_proc) and, with --user, the
 * same drop of root; no key, no socket, no thread.
 *
 * The worker asks over a SOCK_SEQPACKET socketpair for a child running
 * function fns[i] on a slot. The server starts a middle process that
 * shares its memory until it exits (clone CLONE_VM | CLONE_VFORK, as
 * posix_spawn does: no copy of the page tables); the middle process forks
 * the child (a plain fork, with glibc's fork handlers) and exits at once, so the kernel hands the child to
 * the nearest subreaper, which is the worker (tq_reaper_start). The
 * worker then waits for, kills and reaps the child exactly as one it
 * forked itself (child.c). The answer carries the child's pid and, by
 * SCM_RIGHTS, the worker's end of the child's request socket.
 *
 * The child's parent dies first, so it cannot set its parent-death
 * signal at birth: the child main sets it when the first request comes
 * (the worker only sends one once the child is its own) and exits if
 * its parent is then not the worker.
 *
 * The server ignores SIGINT, SIGTERM and SIGHUP (the worker drains on
 * them and may still need children); it ends when the worker closes its
 * end, and with the worker (parent-death signal SIGKILL). */
#ifndef TQ_WORKER_FORKSERVER_H
#define TQ_WORKER_FORKSERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "pool.h"
#include "tq_err.h"
#include "tq_priv.h"

typedef struct tq_forkserver tq_forkserver_t;

/* What a child runs (never returns): serve requests for fn on slot from
 * fd (one, when oneshot); worker is the pid that must be its parent once
 * the first request came (tq_child_main). */
typedef void (*tq_forkserver_main_fn)(const tq_fn_t *fn, int slot, int fd, int oneshot,
                                      pid_t worker);

/* Fork the server (call while this process has no secret in memory and,
 * best, one thread). fns[nfns] must be final (limits set). user: drop
 * to it in the server too (the worker's --user), or NULL. Waits for the
 * server to say it is ready. Returns NULL with err when the server
 * could not start or drop. Caller owns the result. */
tq_forkserver_t *tq_forkserver_start(const tq_fn_t *fns, size_t nfns, const tq_user_t *user,
                                     tq_forkserver_main_fn child_main, tq_err_t *err);

/* Start a child for fn (an entry of the fns given to start) on slot.
 * Returns its pid (a child of this process, in a process group of its
 * own) and *fd, this end of its request socket (close-on-exec); or -1
 * with why (the server is gone, fork failed); or -2 when this process
 * is not a subreaper, so the child could not become ours (the caller
 * forks it itself). Thread-safe (one request at a time). */
pid_t tq_forkserver_spawn(tq_forkserver_t *self, const tq_fn_t *fn, int slot, int oneshot, int *fd,
                          char *why, size_t whylen);

/* The server's pid (for tests and logs). */
pid_t tq_forkserver_pid(const tq_forkserver_t *self);

/* Close the server's socket and wait for it to exit (it does at once).
 * Children already started are not touched. Accepts NULL; nulls
 * *self_p. */
void tq_forkserver_stop(tq_forkserver_t **self_p);

#endif
