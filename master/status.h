/* status.h - the STATUS_REPLY document (see the status schema in
 * docs/master.md) and the rolling rates behind it. Loop thread only. */
#ifndef TQ_MASTER_STATUS_H
#define TQ_MASTER_STATUS_H

#include <stdint.h>

#include "peers.h"
#include "store.h"

/* Queue rows in one status document (from the request's
 * "queue_offset"); "queues_total" has the count. */
#define TQ_STATUS_QUEUE_ROWS 1000

/* Window of the rates in the status document. */
#define TQ_STATUS_RATE_WINDOW_MS 10000

typedef struct tq_status tq_status_t;

typedef struct {
    const char *endpoint;
    int64_t start_ms; /* monotonic */
    uint64_t late_results;
    /* the journal */
    const char *fsync;
    uint64_t journal_bytes, journal_live_bytes, compactions;
    int journal_error; /* errno of a standing write failure, or 0 */
} tq_status_info_t;

/* Caller owns the result (tq_status_destroy). */
tq_status_t *tq_status_new(int64_t now_ms);
void tq_status_destroy(tq_status_t **self_p);

/* Record the cumulative counters; call about once a second (the loop's
 * heartbeat timer). now_ms is monotonic. */
void tq_status_sample(tq_status_t *self, const tq_store_t *store, int64_t now_ms);

/* Build the document, with at most TQ_STATUS_QUEUE_ROWS queues from
 * index queue_offset on (and at most a few thousand workers), so one
 * STATUS costs the loop a bounded time whatever the number of queues.
 * Returns a cJSON object (void * so this header does not pull cJSON in);
 * caller owns it (cJSON_Delete). */
void *tq_status_build(tq_status_t *self, const tq_store_t *store, const tq_peers_t *peers,
                      const tq_status_info_t *info, size_t queue_offset, int64_t now_ms);

#endif
