/* init_fails.c - a plugin that registers a function and then fails
 * (test_plugin: the worker must not start, and say why). */
#include <stdio.h>

#include <taskq.h>

static int never(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    return taskq_result_error(out, "never");
}

TASKQ_PLUGIN_DECLARE()
{
    (void)abi;
    if (taskq_worker_add(w, "never", never, NULL, err) < 0)
        return -1;
    snprintf(err->message, sizeof err->message, "no database at /nonexistent");
    return -1;
}
