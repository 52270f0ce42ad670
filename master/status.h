/* status.h - the STATUS_REPLY document (see the status schema in
 * docs/master.md) and the rolling rates behind it. Loop thread only. */
#ifndef TQ_MASTER_STATUS_H
#define TQ_MASTER_STATUS_H

#include <stdint.h>

#include "peers.h"
#include "store.h"

/* Window of the rates in the status document. */
#define TQ_STATUS_RATE_WINDOW_MS 10000

typedef struct tq_status tq_status_t;

typedef struct {
    const char *endpoint;
    int64_t start_ms;   /* monotonic */
    uint64_t late_results;
    /* the journal */
    const char *fsync;
    uint64_t journal_bytes, journal_live_bytes, compactions;
    int journal_error;  /* errno of a standing write failure, or 0 */
} tq_status_info_t;

/* Caller owns the result (tq_status_destroy). */
tq_status_t *tq_status_new(int64_t now_ms);
void tq_status_destroy(tq_status_t **self_p);

/* Record the cumulative counters; call about once a second (the loop's
 * heartbeat timer). now_ms is monotonic. */
void tq_status_sample(tq_status_t *self, const tq_store_t *store, int64_t now_ms);

/* Build the document. Returns a cJSON object (void * so this header does
 * not pull cJSON in); caller owns it (cJSON_Delete). Lists are capped so
 * that the document stays below TQ_MAX_STATUS_JSON. */
void *tq_status_build(tq_status_t *self, const tq_store_t *store, const tq_peers_t *peers,
                      const tq_status_info_t *info, int64_t now_ms);

#endif
