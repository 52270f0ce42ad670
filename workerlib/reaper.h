/* reaper.h - the worker as the subreaper of its tasks' processes.
 *
 * A task's processes may leave its process group (setsid, setpgid) and
 * lose their parent; the kernel then hands them to the nearest
 * subreaper, which the worker makes itself (PR_SET_CHILD_SUBREAPER). A
 * child of the worker that the worker did not start itself is such an
 * escaped process ("stray"). When a task that ran processes ends (also
 * by timeout or cancel) the worker kills and reaps every stray that no
 * running task can own: one started before every running task began
 * (a process is always younger than the task that started it). When the
 * worker ends, every stray is killed. Strays are SIGKILLed with their
 * process group and reaped, so none is left a zombie.
 *
 * Never taken for strays: children in this process's own process group
 * (every task process starts in a group of its own; a thread-mode
 * function's system() or a host program's child stays in ours) and
 * children older than tq_reaper_start.
 *
 * Thread-safe; sweeps are serialised (a pid is only reaped by its owner
 * or under the sweep lock, so a killed pid cannot have been recycled). */
#ifndef TQ_WORKERLIB_REAPER_H
#define TQ_WORKERLIB_REAPER_H

#include <stdint.h>
#include <sys/types.h>

/* Make this process the subreaper of its descendants. Returns 0, or -1
 * with errno (the worker then logs that escaped processes can outlive
 * their tasks). */
int tq_reaper_start(void);

/* pid is a child this process started and reaps itself (a task's
 * command, a prefork/spawn child, a coprocess): sweeps leave it alone.
 * tq_reaper_disown after it is reaped. Both accept pid <= 0 (no-op). */
void tq_reaper_own(pid_t pid);
void tq_reaper_disown(pid_t pid);

/* A task starts running (any mode): processes born from now on may be
 * its own. Returns a token for tq_reaper_task_end. */
uint64_t tq_reaper_task_begin(void);

/* The task of token ended. sweep 1: it ran processes (a command, a
 * child process): kill and reap the strays no running task can own. */
void tq_reaper_task_end(uint64_t token, int sweep);

/* Kill and reap every stray (all 1) or those no running task can own
 * (all 0). Returns how many were killed. */
int tq_reaper_sweep(int all);

#endif
