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
 * 16 hex digits, counting up from 1 with no gaps. A segment is a header
 * then records (docs/journal.md has the tables):
 *
 *   header v2 (64 bytes): magic "TQJOURNL" (8) | u32 version (2) |
 *           u32 header size (64) | u64 segment number | u64 first (the
 *           oldest segment replay needs) | u64 prev size (bytes of segment
 *           number - 1 when it was closed) | u32 flags (1: prev size given)
 *           | 16 bytes 0 | u32 crc32 of the previous 60 bytes
 *   header v1 (32 bytes, read only): magic | u32 version (1) | u32 32 |
 *           u64 segment number | u32 0 | u32 crc32 of the previous 28
 *   record: u32 len | u32 crc32 | len bytes (u8 type, body)
 *
 * Little-endian; crc32 is zlib's (IEEE 802.3). len counts the type byte
 * and the body, 1..TQ_JOURNAL_MAX_RECORD.
 *
 * Evidence. A segment is created only once the one before it is durable
 * at its final size, and its header records that size: so a closed
 * segment that was cut short, grew, went missing or lost its start is
 * damage, and only the newest segment may end in a torn record. The
 * oldest segment replay needs is named by the headers ("first"); older
 * files are left over from a compaction and are deleted. Version-1
 * segments carry none of this and are read as the previous release did.
 *
 * DATA_DIR/journal/reserve is a file of allocated bytes the journal gives
 * back to the file system when a write finds the disk full, so that
 * compaction and a restart always have room (see tq_journal_low_space).
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

#include "tq_err.h"
#include "tq_limits.h"

/* Bump when the header or record framing changes in a way an older
 * master cannot read (docs/journal.md: rules for changing the format). */
#define TQ_JOURNAL_VERSION 2u
#define TQ_JOURNAL_HEADER_SIZE 64u    /* version 2 */
#define TQ_JOURNAL_HEADER_SIZE_V1 32u /* version 1, still read */
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

typedef struct tq_journal tq_journal_t;

typedef struct {
    const char *data_dir; /* the journal lives in DATA_DIR/journal */
    tq_fsync_mode_t mode;
    int64_t interval_ms; /* TQ_FSYNC_INTERVAL: sync within this */
    int repair;          /* replay what is readable around damage */
    void *zmq_ctx;       /* for the sync thread's inproc PAIR */
    /* Bytes kept allocated in DATA_DIR/journal/reserve (0: none); at
     * most an eighth of the file system is taken. */
    uint64_t reserve;
    /* With repair, after a replay that went past damage: append the
     * whole recovered state (tq_journal_append on j). The journal writes
     * it to a fresh segment that needs no older one, and moves the
     * damaged segments to DATA_DIR/journal/damaged-TIME/. */
    void (*checkpoint)(void *arg, tq_journal_t *j);
} tq_journal_cfg_t;

/* What the scan at open found. */
typedef struct {
    size_t segments;       /* segment files read */
    uint64_t records;      /* records handed to the replay callback */
    uint64_t bytes;        /* bytes in the journal after open */
    int torn;              /* a torn last record was cut off */
    char torn_file[256];   /* its file name (no directory) */
    uint64_t torn_offset;  /* and offset */
    int repaired;          /* --repair went past damage */
    char damage_file[256]; /* where the first damage was */
    uint64_t damage_offset;
    uint64_t damage_places;   /* damaged places (records, gaps, segments) */
    uint64_t dropped_bytes;   /* bytes --repair could not replay, missing
                               ones (a cut or deleted segment) included */
    uint64_t dropped_records; /* damaged records handed as TQ_JREC_DAMAGED */
    char moved_to[64];        /* where --repair moved the damaged segments */
    uint64_t left_over;       /* segments older than the journal's first
                               (a compaction's unfinished delete): deleted */
    int low_space;            /* started without its reserve (disk full) */
} tq_journal_report_t;

/* What the replay callback is handed (its "dropped" argument). */
enum {
    TQ_JREC_OK = 0,      /* a sound record: apply it */
    TQ_JREC_DAMAGED = 1, /* --repair: a record whose checksum failed; type
                            and body as found, maybe wrong: do not apply,
                            count what it probably was */
    TQ_JREC_LOST = 2,    /* --repair: len bytes here are missing or could
                            not be split into records (body NULL) */
};

/* Replay callback: one record, in journal order; dropped is a TQ_JREC_
 * value. Returns 0, or -1 to stop the open (a record the caller cannot
 * accept; it fills err). */
typedef int (*tq_journal_replay_fn)(void *arg, uint8_t type, const uint8_t *body, size_t len,
                                    int dropped, tq_err_t *err);

/* Create DATA_DIR/journal if needed, read every segment in order and hand
 * each record to replay, then open a fresh segment for writing (the old
 * ones are kept until tq_journal_drop_before) and start the sync thread.
 *
 * Only the newest segment may end torn (a crash during a write): a bad
 * last record of it is torn when its header is cut short, its length
 * runs past the end of the file, its checksum fails and it ends at the end
 * of the file, or only zero bytes follow it; a newest segment whose header
 * is cut short or zero is torn too. Torn parts are cut off and reported.
 * Anything else is damage: a bad record or header elsewhere, a closed
 * segment shorter or longer than its successor's header says, a segment
 * missing between the first and the newest. Without repair, open fails
 * with "journal damaged: FILE at offset N: REASON (...)". With repair,
 * every readable record is replayed (later segments included), what was
 * not is handed as TQ_JREC_DAMAGED / TQ_JREC_LOST and counted in the
 * report, the recovered state is written anew by cfg->checkpoint and the
 * damaged files are moved aside.
 *
 * Disk full: when the new segment cannot be created for want of space,
 * the reserve is given back first; failing that, the newest segment is
 * appended to. A journal that started without its whole reserve is low
 * on space (tq_journal_low_space).
 *
 * Returns the journal, or NULL with a message in err. Caller owns the
 * result (tq_journal_destroy). */
tq_journal_t *tq_journal_open(const tq_journal_cfg_t *cfg, tq_journal_replay_fn replay, void *arg,
                              tq_journal_report_t *report, tq_err_t *err);

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

/* errno of the failure that stands now (a write or a sync), or 0; ENOSPC
 * while the journal is low on space. */
int tq_journal_failed(const tq_journal_t *self);

/* 1 while the journal is low on space: a write found the disk full and
 * the reserve was given back (or it could not be allocated). Records are
 * still written into the room the reserve left, but new work should be
 * refused (tq_journal_failed says ENOSPC) and compaction should run to
 * free space. It ends by itself (checked every 100 ms by
 * tq_journal_tick) once the reserve can be allocated again with as much
 * free space again left over. */
int tq_journal_low_space(const tq_journal_t *self);

/* Ask the sync thread to fdatasync everything written so far, whatever
 * the mode (compaction and shutdown use it). Asynchronous: durable moves
 * when it is done. */
void tq_journal_sync(tq_journal_t *self);

/* The inproc socket the loop polls (ZMQ_POLLIN) for the sync thread's
 * reports, and the handler to call when it is readable: it updates
 * durable, the failure state and the byte count. Returns 1 if durable
 * moved or a drop finished, else 0. */
void *tq_journal_socket(tq_journal_t *self);
/* How many times the journal has sent or received on that socket: while
 * it stays the same, the loop may wait on the socket without asking it
 * for ZMQ_EVENTS first (TQ_ZPOLL_QUIET). */
uint64_t tq_journal_socket_ops(const tq_journal_t *self);
int tq_journal_on_sync(tq_journal_t *self);

/* Retry a failed write if its time has come (every 100 ms); call from
 * the loop's timer. now_ms: monotonic. */
void tq_journal_tick(tq_journal_t *self, int64_t now_ms);

/* Start a new segment: records appended from now on go there. The new
 * file is created once everything appended before is durable in the old
 * one (its header records the old one's final size); until then later
 * records wait in memory. Returns the new segment's number (0 if the
 * numbers are exhausted). */
uint64_t tq_journal_rotate(tq_journal_t *self);
uint64_t tq_journal_segment(const tq_journal_t *self); /* current number */

/* Compaction's end: every segment below seg is superseded. Rotates to a
 * new segment whose header says the journal starts at seg; once that is
 * durable, the sync thread deletes the segments below seg (oldest first)
 * and syncs the directory; tq_journal_on_sync returns 1 when it finished.
 * seg must be at most the current segment. */
void tq_journal_drop_before(tq_journal_t *self, uint64_t seg);

/* 1 while a tq_journal_drop_before has not finished. */
int tq_journal_drop_pending(const tq_journal_t *self);

/* Bytes in all segment files (headers included), as written. */
uint64_t tq_journal_bytes(const tq_journal_t *self);

/* Bytes of memory held by the buffer of appended records (kept between
 * writes while big passes keep coming, given back after a quiet spell). */
size_t tq_journal_batch_capacity(const tq_journal_t *self);

/* fdatasync latency, for metrics: each sync round of the sync thread
 * (the directory and every file written since the last round), timed
 * there and reported to the loop with the durable LSN that round made.
 * Buckets are upper bounds in microseconds (not cumulative counts). */
#define TQ_JOURNAL_SYNC_BUCKETS 14
extern const uint64_t tq_journal_sync_le_us[TQ_JOURNAL_SYNC_BUCKETS];
typedef struct {
    uint64_t bucket[TQ_JOURNAL_SYNC_BUCKETS]; /* rounds <= le (and > the one before) */
    uint64_t count;                           /* every round, the slower ones too */
    uint64_t sum_us;
    uint64_t errors; /* failed writes and failed sync rounds since open */
} tq_journal_sync_stats_t;
/* Loop thread: the counts so far. */
void tq_journal_sync_stats(const tq_journal_t *self, tq_journal_sync_stats_t *out);

/* "always", "interval", "off"; and back (-1 if unknown). */
const char *tq_fsync_mode_name(tq_fsync_mode_t m);
int tq_fsync_mode_parse(const char *s);

#endif
