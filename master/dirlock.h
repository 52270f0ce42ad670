/* dirlock.h - one master per data dir: an exclusive flock(2) on
 * DATA_DIR/lock, held for the master's whole life.
 *
 * Two masters on one data dir would replay the same journal, run the same
 * tasks twice, and one's compaction would delete the other's open segment
 * (its acknowledged tasks lost at the next restart). The lock is taken
 * before anything in the directory is read or created. The file holds the
 * holder's pid (for the message a second master prints); the lock, not
 * the file, is what counts: the kernel releases it when the holder exits
 * in any way (kill -9 included), so a lock file left behind never blocks
 * a later start. */
#ifndef TQ_MASTER_DIRLOCK_H
#define TQ_MASTER_DIRLOCK_H

#include <stddef.h>

#include "tq_err.h"

/* Name of the lock file inside the data dir. */
#define TQ_DIRLOCK_FILE "lock"

/* Open (creating, mode 0600) DIR/lock, take flock(LOCK_EX|LOCK_NB) and
 * write this process's pid into it. Returns the descriptor (close-on-exec;
 * keep it open: closing it releases the lock), or -1 with a message in
 * err: "another taskq-master (pid N) is using --data-dir DIR ..."
 * when another process holds the lock, else what failed. */
int tq_dirlock_acquire(const char *dir, tq_err_t *err);

/* Release the lock (closes fd). Accepts -1. */
void tq_dirlock_release(int fd);

#endif
