/* plugin_square.c - an example taskq worker plugin (docs/workers.md).
 *
 *   cube   payload "n" (a decimal integer, |n| <= 2097151) -> "n * n * n = n³"
 *   tally  per-slot state (the tutorial's ThreadLocal): each slot counts
 *          the tasks it ran and the payload bytes it saw; the result is
 *          "slot S: task N, B bytes"; when the worker stops, each slot
 *          logs its totals on stderr
 *
 * Build (against an installed libtaskq):
 *   cc -shared -fPIC -o plugin_square.so plugin_square.c $(pkg-config --cflags --libs taskq)
 * Run:
 *   taskq-worker --connect tcp://127.0.0.1:7070 --authkey-file KEY --plugin ./plugin_square.so */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <taskq.h>

/* Largest |n| whose cube fits in 64 bits. */
#define CUBE_MAX 2097151LL

static int cube(const void *payload, size_t len, taskq_result_t *out, void *arg)
{
    char buf[32];
    (void)arg;
    /* The payload is bytes, not a C string: copy it, bounded. */
    if (len == 0 || len >= sizeof buf)
        return taskq_result_error(out, "cube: payload is not an integer");
    memcpy(buf, payload, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long n = strtoll(buf, &end, 10);
    while (*end == ' ' || *end == '\n')
        end++;
    if (end == buf || *end || errno)
        return taskq_result_error(out, "cube: payload is not an integer: '%s'", buf);
    if (n > CUBE_MAX || n < -CUBE_MAX)
        return taskq_result_error(out, "cube: %lld is out of range (|n| <= %lld)", n, CUBE_MAX);
    return taskq_result_printf(out, "%lld * %lld * %lld = %lld", n, n, n, n * n * n);
}

/* What one slot keeps between tasks. */
typedef struct {
    unsigned long long tasks;
    unsigned long long bytes;
} tally_t;

static int tally_init(void *arg, int slot, void **slot_ctx)
{
    (void)arg;
    (void)slot;
    tally_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    *slot_ctx = t;
    return 0;
}

static void tally_fini(void *arg, int slot, void *slot_ctx)
{
    tally_t *t = slot_ctx;
    (void)arg;
    fprintf(stderr, "plugin_square: slot %d ran %llu tally tasks\n", slot, t->tasks);
    free(t);
}

static int tally(const void *payload, size_t len, taskq_result_t *out, void *arg)
{
    tally_t *t = taskq_result_slot_ctx(out);
    (void)payload;
    (void)arg;
    /* No lock: this slot's state is touched by this slot's thread only. */
    t->tasks++;
    t->bytes += len;
    return taskq_result_printf(out, "slot %d: task %llu, %llu bytes", taskq_result_slot(out),
                               t->tasks, t->bytes);
}

TASKQ_PLUGIN_DECLARE()
{
    if (abi != TASKQ_WORKER_ABI) { /* the worker checked taskq_plugin_abi already */
        snprintf(err->message, sizeof err->message, "needs worker ABI %d", TASKQ_WORKER_ABI);
        return -1;
    }
    if (taskq_worker_add(w, "cube", cube, NULL, err) < 0)
        return -1;
    taskq_fn_def_t d = TASKQ_FN_DEF_INIT;
    d.name = "tally";
    d.fn = tally;
    d.slot_init = tally_init;
    d.slot_fini = tally_fini;
    return taskq_worker_add_def(w, &d, err);
}
