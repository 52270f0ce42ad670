/* cube_worker.c - a complete taskq worker in C on libtaskq's worker API
 * (docs/workers.md). It serves `cube` on N slots until SIGTERM/SIGINT,
 * then drains like taskq-worker.
 *
 *   cube_worker ENDPOINT AUTHKEY_FILE [SLOTS]
 *
 * Build (against an installed libtaskq):
 *   cc -o cube_worker cube_worker.c $(pkg-config --cflags --libs taskq) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <taskq.h>

static taskq_worker_t *worker;

static void on_signal(int sig)
{
    (void)sig;
    taskq_worker_stop(worker); /* async-signal-safe */
}

/* payload "n" -> "n^3 = m"; the payload is bytes, not a C string. */
static int cube(const void *payload, size_t len, taskq_result_t *out, void *arg)
{
    char buf[24];
    (void)arg;
    if (len == 0 || len >= sizeof buf)
        return taskq_result_error(out, "cube: payload is not a small integer");
    memcpy(buf, payload, len);
    buf[len] = '\0';
    char *end;
    long n = strtol(buf, &end, 10);
    if (end == buf || *end || n > 2097151 || n < -2097151)
        return taskq_result_error(out, "cube: payload is not a small integer: '%s'", buf);
    return taskq_result_printf(out, "%ld^3 = %lld", n, (long long)n * n * n);
}

int main(int argc, char **argv)
{
    taskq_error_t err;
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: cube_worker ENDPOINT AUTHKEY_FILE [SLOTS]\n");
        return TASKQ_ERR_USAGE;
    }
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    o.endpoint = argv[1];
    o.authkey_file = argv[2];
    o.slots = argc == 4 ? (size_t)strtoul(argv[3], NULL, 10) : 0; /* 0: one per core */
    o.name = "cube-worker";
    worker = taskq_worker_new(&o, &err);
    if (!worker || taskq_worker_add(worker, "cube", cube, NULL, &err) < 0) {
        fprintf(stderr, "cube_worker: %s\n", err.message);
        taskq_worker_destroy(&worker);
        return err.code;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int rc = taskq_worker_run(worker, &err); /* returns after the drain */
    if (rc < 0)
        fprintf(stderr, "cube_worker: %s\n", err.message);
    taskq_worker_destroy(&worker);
    return rc < 0 ? err.code : 0;
}
