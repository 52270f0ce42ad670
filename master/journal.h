/* journal.h - the master's journal on disk: append-only segment files of
 * checksummed records, group commit through a sync actor thread, and the
 * scan that replays them at start.
 *
 * The journal knows records, not tasks: a record is a type byte and an
 * opaque body (persist.c gives them meaning). It owns the files under
 * DATA_DIR/journal/, the write position, what is durable, and the sync
 * thread. Everything but the sync thread runs on the loop thread.
 *
 * Files. DATA_DIR/journal/SSSSSSSSSSSSSSSS.tqj, S = the segment number in
 * 16 hex digits, counting up from 1. A segment is a 32-byte header then
 * records:
 *
 *   header: magic "TQJOURNL" (8) | u32 version (TQ_JOURNAL_VERSION) |
 *           u32 header size (32) | u64 segment number | u32 reserved (0) |
 *           u32 crc32 of the previous 28 bytes
 *   record: u32 len | u32 crc32 | len bytes (u8 type, body)
 *
 * Little-endian; crc32 is zlib's (IEEE 802.3). len counts the type byte
 * and the body, 1..TQ_JOURNAL_MAX_RECORD.
 *
 * Write path. tq_journal_append copies records into the current batch;
 * tq_journal_write (once per loop iteration) writes the batch with one
 * write(2) and tells the sync thread what was written. The sync thread
 * fdatasyncs according to the mode and reports what is durable back over
 * an inproc PAIR the loop polls (tq_journal_socket, then
 * tq_journal_on_sync). Positions are LSNs: bytes appended since open,
 * counting across segments, so "durable >= lsn" says a record is safe.
 *
 *   always:   every write is followed by an fdatasync (requests that come
 *             in while one runs are served by the next: group commit);
 *   interval: the first write after a sync starts a timer of interval_ms;
 *             at its end the thread fdatasyncs everything written;
 *   off:      no fdatasync except on tq_journal_sync and at close.
 *
 * Failures. A write that fails or is short (ENOSPC, EIO) keeps the rest
 * of the batch in memory, sets tq_journal_failed, and is tried again by
 * tq_journal_write / tq_journal_tick (at most every 100 ms): records stay
 * in order and nothing appended is dropped. An fdatasync that fails is
 * reported the same way and retried by the thread. The error clears when
 * a write and a sync succeed again.
 *
 * I/O goes through tq_jio (below) so tests can inject faults. */
#ifndef TQ_MASTER_JOURNAL_H
#define TQ_MASTER_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tq_limits.h"

/* Bump when the header or record framing changes in a way an older
 * master cannot read (docs/journal.md: rules for changing the format). */
#define TQ_JOURNAL_VERSION 1u
#define TQ_JOURNAL_HEADER_SIZE 32u
#define TQ_JOURNAL_RECORD_HEAD 8u
/* One record (type + body): the largest record the master writes fits
 * with room to spare. That is a dead task's R_TASK, which carries both
 * its payload and its error text, each up to --max-payload (at most
 * TQ_PAYLOAD_HARD_MAX), plus names and fixed fields (far below 64 KiB);
 * persist.c checks this at compile time. So no payload, result or error
 * the master accepts can reach tq_journal_append's assertion. 1 GiB +
 * 64 KiB, well inside the u32 length field. */
#define TQ_JOURNAL_MAX_RECORD (2u * TQ_PAYLOAD_HARD_MAX + 65536u)

typedef enum {
    TQ_FSYNC_ALWAYS = 0,
    TQ_FSYNC_INTERVAL,
    TQ_FSYNC_OFF,
} tq_fsync_mode_t;

/* The I/O layer. Every file operation of the journal goes through these
 * pointers; tests replace them to inject ENOSPC/EIO or to record what a
 * power loss would keep. The defaults call the system. Set them before
 * tq_journal_open; they are read by both threads. */
typedef struct {
    ssize_t (*write)(int fd, const void *buf, size_t n);
    int (*fdatasync)(int fd);
    int (*fsync_dir)(int dirfd); /* fsync of the journal directory */
    int (*ftruncate)(int fd, off_t len);
} tq_jio_t;
extern tq_jio_t tq_jio;

typedef struct {
    const char *data_dir;   /* the journal lives in DATA_DIR/journal */
    tq_fsync_mode_t mode;
    int64_t interval_ms;    /* TQ_FSYNC_INTERVAL: sync within this */
    int repair;             /* drop everything from a damaged record on */
    void *zmq_ctx;          /* for the sync thread's inproc PAIR */
} tq_journal_cfg_t;

/* What the scan at open found. */
typedef struct {
    size_t segments;        /* segment files read */
    uint64_t records;       /* records handed to the replay callback */
    uint64_t bytes;         /* bytes in the journal after open */
    int torn;               /* a torn last record was cut off */
    char torn_file[256];    /* its file name (no directory) */
    uint64_t torn_offset;   /* and offset */
    int repaired;           /* --repair dropped a damaged part */
    char damage_file[256];  /* where the damage was */
    uint64_t damage_offset;
    uint64_t dropped_bytes; /* bytes --repair dropped */
    uint64_t dropped_records; /* records after the damage that --repair
                                 still could read and dropped */
} tq_journal_report_t;

/* Replay callback: one record, in journal order. dropped is 1 for records
 * after a damage that --repair is dropping (readable but not applied;
 * given so the caller can count what is lost), else 0. Returns 0, or -1
 * to stop the open (a record the caller cannot accept; it fills err). */
typedef int (*tq_journal_replay_fn)(void *arg, uint8_t type, const uint8_t *body, size_t len,
                                    int dropped, char *err, size_t errlen);

typedef struct tq_journal tq_journal_t;

/* Create DATA_DIR/journal if needed, read every segment in order and hand
 * each record to replay, then open a fresh segment for writing (the old
 * ones are kept until tq_journal_drop_before) and start the sync thread.
 *
 * A bad last record of the last segment that holds records (newer
 * segments with only a header may follow it, as after a power loss) is
 * torn when its header is cut short, its length runs past the end of the
 * file, its checksum fails and it ends at the end of the file, or only
 * zero bytes follow it: it is cut off (the file truncated there, the
 * header-only segments after it deleted) and reported. Any other bad record or
 * segment header is damage: without repair, open fails with "journal
 * damaged: FILE at offset N: REASON (start with --repair to drop
 * everything from there on)"; with repair, the file is truncated at the
 * damage, later segments are deleted, and it is reported.
 *
 * Returns the journal, or NULL with a message in err. Caller owns the
 * result (tq_journal_destroy). */
tq_journal_t *tq_journal_open(const tq_journal_cfg_t *cfg, tq_journal_replay_fn replay, void *arg,
                              tq_journal_report_t *report, char *err, size_t errlen);

/* Stop the sync thread after a last fdatasync of everything written (a
 * clean shutdown loses nothing in any mode), close files. Accepts NULL;
 * nulls *self_p. */
void tq_journal_destroy(tq_journal_t **self_p);

/* Copy one record into the current batch. body may be split in two parts
 * (a head and a payload) to save a copy; part2 may be NULL/0. Returns the
 * LSN at the record's end. Asserts 1 + len1 + len2 <= TQ_JOURNAL_MAX_RECORD:
 * a caller's bug, never an input's, since every record the master writes
 * fits by construction (the limit above). */
uint64_t tq_journal_append(tq_journal_t *self, uint8_t type, const void *part1, size_t len1,
                           const void *part2, size_t len2);

/* Write the batch (and any bytes a failed write left) to the current
 * segment and tell the sync thread. Returns 0, or -1 with the journal
 * failed (tq_journal_failed), the rest kept for the next try. */
int tq_journal_write(tq_journal_t *self);

/* LSNs: appended (in memory), written (in the file), durable (fsynced). */
uint64_t tq_journal_appended(const tq_journal_t *self);
uint64_t tq_journal_written(const tq_journal_t *self);
uint64_t tq_journal_durable(const tq_journal_t *self);

/* errno of the failure that stands now (a write or a sync), or 0. */
int tq_journal_failed(const tq_journal_t *self);

/* Ask the sync thread to fdatasync everything written so far, whatever
 * the mode (compaction and shutdown use it). Asynchronous: durable moves
 * when it is done. */
void tq_journal_sync(tq_journal_t *self);

/* The inproc socket the loop polls (ZMQ_POLLIN) for the sync thread's
 * reports, and the handler to call when it is readable: it updates
 * durable, the failure state and the byte count. Returns 1 if durable
 * moved or a drop finished, else 0. */
void *tq_journal_socket(tq_journal_t *self);
int tq_journal_on_sync(tq_journal_t *self);

/* Retry a failed write if its time has come (every 100 ms); call from
 * the loop's timer. now_ms: monotonic. */
void tq_journal_tick(tq_journal_t *self, int64_t now_ms);

/* Write the batch, then start a new segment: later appends go there.
 * Returns the new segment's number, or 0 with the journal failed if the
 * file could not be created (appends keep going to the old one). */
uint64_t tq_journal_rotate(tq_journal_t *self);
uint64_t tq_journal_segment(const tq_journal_t *self); /* current number */

/* Once everything written so far is durable, delete every segment whose
 * number is below seg and fsync the directory (done by the sync thread;
 * tq_journal_on_sync returns 1 when it finished). */
void tq_journal_drop_before(tq_journal_t *self, uint64_t seg);

/* 1 while a tq_journal_drop_before has not finished. */
int tq_journal_drop_pending(const tq_journal_t *self);

/* Bytes in all segment files (headers included), as written. */
uint64_t tq_journal_bytes(const tq_journal_t *self);

/* "always", "interval", "off"; and back (-1 if unknown). */
const char *tq_fsync_mode_name(tq_fsync_mode_t m);
int tq_fsync_mode_parse(const char *s);

#endif
