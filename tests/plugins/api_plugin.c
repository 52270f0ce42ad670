/* api_plugin.c - functions that exercise the worker API's edges
 * (test_plugin):
 *   spin   runs until taskq_result_cancelled(), then fails "spin: cancelled"
 *   nap    sleeps payload ms ignoring cancellation, then returns "napped"
 *   big    payload n -> n bytes of 'x' (one append per KiB)
 *   rc7    returns 7 without setting anything
 *   empty  returns 0 without setting anything
 *   whoami "task ID attempt A slot S" */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <taskq.h>

static long payload_long(const void *p, size_t len)
{
    char buf[24];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return strtol(buf, NULL, 10);
}

static int spin(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    while (!taskq_result_cancelled(out)) {
        struct pollfd pfd = {.fd = taskq_result_cancel_fd(out), .events = POLLIN};
        poll(&pfd, 1, 20);
    }
    return taskq_result_error(out, "spin: cancelled");
}

static int nap(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    long ms = payload_long(p, len);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return taskq_result_set(out, "napped", 6);
}

static int big(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    char kib[1024];
    (void)arg;
    long n = payload_long(p, len);
    memset(kib, 'x', sizeof kib);
    while (n > 0) {
        size_t k = n > (long)sizeof kib ? sizeof kib : (size_t)n;
        if (taskq_result_append(out, kib, k) < 0)
            return -1;
        n -= (long)k;
    }
    return 0;
}

static int rc7(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    (void)arg;
    return 7;
}

static int empty(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    (void)arg;
    return 0;
}

static int whoami(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    return taskq_result_printf(out, "task %llu attempt %u slot %d",
                               (unsigned long long)taskq_result_task_id(out),
                               (unsigned)taskq_result_attempt(out), taskq_result_slot(out));
}

TASKQ_PLUGIN_DECLARE()
{
    (void)abi;
    static const struct {
        const char *name;
        taskq_fn fn;
    } fns[] = {{"spin", spin}, {"nap", nap},     {"big", big},
               {"rc7", rc7},   {"empty", empty}, {"whoami", whoami}};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (taskq_worker_add(w, fns[i].name, fns[i].fn, NULL, err) < 0)
            return -1;
    return 0;
}
