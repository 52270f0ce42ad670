/* pausefile.h - the writer of DATA_DIR/paused: a small actor thread
 * that replaces the file (write a temporary file, fsync, rename, fsync
 * the directory), so that the loop never waits for a disk.
 *
 * The loop hands it the whole new contents with tq_pausefile_save and
 * goes on; the thread writes the newest contents it has (older ones still
 * queued are skipped: the newest includes them) and answers with the
 * sequence number written. Loop thread only, except the actor itself.
 *
 * Test hook: TASKQ_TEST_PAUSED_DELAY_MS=N in the environment makes each
 * save N ms (at most 60000) slower, as a slow disk would. */
#ifndef TQ_MASTER_PAUSEFILE_H
#define TQ_MASTER_PAUSEFILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tq_pausefile tq_pausefile_t;

/* Start the writer for DIR/paused on ZeroMQ context ctx. Returns it, or
 * NULL with a message in err. Caller owns it (tq_pausefile_destroy). */
tq_pausefile_t *tq_pausefile_new(void *ctx, const char *dir, char *err, size_t errlen);

/* Finish the writes handed over (so a change the loop made is on disk
 * when the master exits), stop the thread, free. Accepts NULL; nulls
 * *self_p. */
void tq_pausefile_destroy(tq_pausefile_t **self_p);

/* Hand over the file's new contents (copied). Returns its sequence
 * number (1, 2, ...), or 0 when the actor cannot be reached (errno set). */
uint64_t tq_pausefile_save(tq_pausefile_t *self, const void *data, size_t len);

/* The socket to poll for ZMQ_POLLIN: a save finished. */
void *tq_pausefile_socket(tq_pausefile_t *self);

/* Read one finished save without blocking: *seq is the newest sequence
 * number it covers (every earlier one too), *err its errno (0: the file
 * is durable). Returns 1, or 0 when none is waiting. */
int tq_pausefile_done(tq_pausefile_t *self, uint64_t *seq, int *err);

#endif
