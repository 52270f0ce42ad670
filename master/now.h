/* now.h - the time of a command, read from the clocks. The engine reads
 * no clock (docs/architecture.md: its determinism rule): its callers
 * read them here and pass the time in. */
#ifndef TQ_MASTER_NOW_H
#define TQ_MASTER_NOW_H

#include "engine.h"
#include "tq_util.h"

static inline tq_now_t tq_now(void)
{
    tq_now_t now = {tq_wall_ms(), tq_mono_ms()};
    return now;
}

#endif
