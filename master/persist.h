/* persist.h - what the master's journal records mean: task state changes
 * written as the store makes them, replayed into the store at start, and
 * compaction that keeps the journal proportional to the live tasks.
 *
 * journal.c moves bytes; this module gives them meaning (record types
 * and bodies in docs/journal.md). It subscribes to the engine (every
 * change of a task, key or paused mark appends a record to the
 * journal's batch) and is driven by the loop:
 * tq_persist_flush once per iteration writes the batch, the journal's
 * socket reports durability, tq_persist_tick runs compaction steps.
 *
 * Live data: a queued or leased task, a finished task whose outcome no
 * client has ACKed (or that has a retained idempotency key), and a
 * retained key. An ACKed outcome is not live: after a restart it is gone
 * (the client that ACKed it has it). */
#ifndef TQ_MASTER_PERSIST_H
#define TQ_MASTER_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "engine.h"
#include "journal.h"
#include "store.h"

/* Journal bytes below which compaction never starts (except when the
 * disk is full: then it starts once the dead bytes exceed the live ones
 * by TQ_PERSIST_COMPACT_SLACK). */
#define TQ_PERSIST_COMPACT_MIN (4u * 1024u * 1024u)
#define TQ_PERSIST_COMPACT_SLACK (64u * 1024u)
/* Longest a compaction step may keep the loop busy. */
#define TQ_PERSIST_STEP_MS 5

typedef struct tq_persist tq_persist_t;

/* Lost task ids --repair lists in its report (the count is whole). */
#define TQ_PERSIST_LOST_IDS 16

typedef struct {
    uint64_t queued, finished, keys; /* recovered */
    /* --repair: tasks the damage took (their records, as far as the
     * damaged bytes and later records tell), tasks it set back to an
     * earlier state (a finished one runs again), and places where bytes
     * were missing or unreadable (a task whose every record was there is
     * in neither count). */
    uint64_t lost, earlier, unreadable;
    uint64_t lost_ids[TQ_PERSIST_LOST_IDS];
    int64_t elapsed_ms;
    tq_journal_report_t journal;
} tq_persist_report_t;

/* Open the journal in cfg->data_dir, replay it into the engine's store
 * (which must be empty), and subscribe to the engine's events. policy
 * (NULL: none) holds the owners of tasks in key-pair mode: a task added
 * while policy->submitter is set is recorded as that identity's, its
 * records carry the owner, and replay puts it back in policy->owners. Returns the
 * object, or NULL with a message in err (damage without --repair, an
 * unreadable directory, a record the store cannot take). Caller owns the
 * result. */
tq_persist_t *tq_persist_open(const tq_journal_cfg_t *cfg, tq_engine_t *engine, tq_policy_t *policy,
                              tq_persist_report_t *report, tq_err_t *err);
/* Write what is appended, sync everything (any mode), close. Accepts
 * NULL; nulls *self_p. */
void tq_persist_destroy(tq_persist_t **self_p);

/* LSN at the end of everything appended so far: a reply that must wait
 * for the records just made waits for this. */
uint64_t tq_persist_lsn(const tq_persist_t *self);
/* The LSN up to which replies may go now: durable under --fsync always,
 * written under interval and off. */
uint64_t tq_persist_ready(const tq_persist_t *self);
/* The LSN up to which the journal is on disk (fdatasync'd), any mode. */
uint64_t tq_persist_durable(const tq_persist_t *self);
/* errno of a journal failure that stands (writes refused), or 0. */
int tq_persist_failed(const tq_persist_t *self);

/* Write the batch (once per loop iteration). Returns 1 if the ready LSN
 * moved. */
int tq_persist_flush(tq_persist_t *self);
/* The journal's report socket (poll ZMQ_POLLIN) and its handler: returns
 * 1 if the ready LSN moved or a compaction finished. */
void *tq_persist_socket(tq_persist_t *self);
/* tq_journal_socket_ops of the journal. */
uint64_t tq_persist_socket_ops(const tq_persist_t *self);
int tq_persist_on_sync(tq_persist_t *self);
/* Retry failed writes; start compaction when due; run one compaction
 * step (at most TQ_PERSIST_STEP_MS). now_ms: monotonic. */
void tq_persist_tick(tq_persist_t *self, int64_t now_ms);
/* 1 while a compaction has steps left (the loop should tick again soon). */
int tq_persist_busy(const tq_persist_t *self);

/* For status: journal bytes on disk, live bytes, compactions done. */
typedef struct {
    uint64_t bytes, live_bytes, compactions, records;
    const char *fsync;
    int failed;
    tq_journal_sync_stats_t sync; /* fdatasync latency, write errors */
} tq_persist_stats_t;
void tq_persist_stats(const tq_persist_t *self, tq_persist_stats_t *out);

#endif
