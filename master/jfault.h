/* jfault.h - test hook: record what a power loss would keep.
 *
 * With TASKQ_TEST_POWERLOG=FILE in the environment, the master wraps the
 * journal's I/O layer (tq_jio) so that every successful fdatasync
 * appends "sync PATH LENGTH MICROSECONDS" to FILE (LENGTH: the file's
 * size when the sync started, so it never claims more than was synced)
 * and every successful directory fsync appends "dir DIRPATH NAME...".
 * tests/integration/test_durable.py kills the master, cuts every segment
 * back to its last synced length (deleting files whose names no
 * directory sync saw), and restarts it: that is what a power loss leaves.
 * With TASKQ_TEST_SYNC_DELAY_MS=N (1..60000), every journal fdatasync
 * takes N ms longer, as on a slow disk (test_loopstall.py: a pause
 * answered once its record is durable does not stall the loop).
 * Without the variables nothing changes. */
#ifndef TQ_MASTER_JFAULT_H
#define TQ_MASTER_JFAULT_H

/* Install the wrappers if TASKQ_TEST_POWERLOG is set. Returns 0, or -1
 * (logged) if the file cannot be opened. */
int tq_jfault_install_from_env(void);

#endif
