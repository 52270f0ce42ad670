/* bench_manyworkers.c - issue 5's W4 helper of scripts/bench: many
 * connected workers from one process.
 *
 *   bench_manyworkers ENDPOINT AUTHKEY_FILE K NAME_PREFIX [PREFETCH]
 *
 * Runs K workers of libtaskq's worker API (include/taskq.h, "writing
 * workers") in this process, each on its own thread with its own
 * connection to the master (its own ZeroMQ context and socket), one slot
 * each plus PREFETCH (default 0) tasks held beyond it, serving `square`
 * (a C function with the built-in's result text, "n * n = n²", run in
 * inline mode like the built-in). Worker i is named NAME_PREFIX-i. Runs until SIGTERM or
 * SIGINT, then stops every worker (drain of at most 2 s) and exits 0;
 * exits 1 when a worker fails to start or stops with an error, 2 on bad
 * arguments. The workers share one ZeroMQ context (taskq_worker_set_context):
 * one process, one I/O thread, many sockets. Each worker costs two
 * threads (its connection thread and its slot thread) and a few fds. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <zmq.h>

#include "taskq.h"

/* Workers one process may run. */
#define WORKERS_MAX 2000
#define PREFIX_MAX 64
/* Stack of our own threads (each only calls taskq_worker_run). */
#define THREAD_STACK (256 * 1024)
/* How long a stopping worker lets its running task finish. */
#define DRAIN_MS 2000

typedef struct {
    taskq_worker_t *w;
    pthread_t thread;
    int started;
    int rc;
    taskq_error_t err;
} slot_t;

static atomic_int g_failed;

/* square: "n * n = n²" for a decimal integer payload whose square fits
 * 64 bits, as the built-in. */
static int square(const void *payload, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    const char *p = payload;
    size_t i = 0;
    int neg = 0;
    uint64_t mag = 0;
    if (i < len && (p[i] == '-' || p[i] == '+'))
        neg = p[i++] == '-';
    if (i == len || len - i > 10)
        return taskq_result_error(out,
                                  "square: payload is not an integer whose square fits 64 bits");
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return taskq_result_error(out, "square: payload is not an integer whose square fits 64 "
                                           "bits");
        mag = mag * 10 + (uint64_t)(p[i] - '0');
    }
    if (mag > 3037000499ULL)
        return taskq_result_error(out,
                                  "square: payload is not an integer whose square fits 64 bits");
    const char *sign = neg && mag ? "-" : "";
    return taskq_result_printf(out, "%s%" PRIu64 " * %s%" PRIu64 " = %" PRIu64, sign, mag, sign,
                               mag, mag * mag);
}

static void *run_one(void *arg)
{
    slot_t *s = arg;
    s->rc = taskq_worker_run(s->w, &s->err);
    if (s->rc != 0) {
        fprintf(stderr, "bench_manyworkers: %s\n", s->err.message);
        atomic_store(&g_failed, 1);
    }
    return NULL;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    long k = 0;
    long prefetch = 0;
    if (argc != 5 && argc != 6) {
        fprintf(stderr,
                "usage: bench_manyworkers ENDPOINT AUTHKEY_FILE K NAME_PREFIX [PREFETCH]\n");
        return 2;
    }
    if (parse_long(argv[3], 1, WORKERS_MAX, &k) != 0) {
        fprintf(stderr, "bench_manyworkers: K must be 1..%d\n", WORKERS_MAX);
        return 2;
    }
    if (argc == 6 && parse_long(argv[5], 0, 4096, &prefetch) != 0) {
        fprintf(stderr, "bench_manyworkers: PREFETCH must be 0..4096\n");
        return 2;
    }
    if (argv[4][0] == '\0' || strlen(argv[4]) > PREFIX_MAX) {
        fprintf(stderr, "bench_manyworkers: NAME_PREFIX must be 1..%d bytes\n", PREFIX_MAX);
        return 2;
    }
    /* A few fds per worker: raise the soft limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* Every thread (ours and the library's) inherits this mask; main
     * takes the signals with sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    slot_t *slots = calloc((size_t)k, sizeof *slots);
    if (!slots) {
        fprintf(stderr, "bench_manyworkers: out of memory\n");
        return 1;
    }
    void *zctx = zmq_ctx_new();
    if (!zctx) {
        fprintf(stderr, "bench_manyworkers: zmq_ctx_new: %s\n", zmq_strerror(errno));
        return 1;
    }
    /* the default socket limit (1023) is below what many workers need */
    zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, 8 * (int)k + 64);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    int status = 0;
    for (long i = 0; i < k; i++) {
        char name[PREFIX_MAX + 32];
        snprintf(name, sizeof name, "%s-%ld", argv[4], i);
        taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
        o.endpoint = argv[1];
        o.authkey_file = argv[2];
        o.name = name;
        o.slots = 1;
        o.drain_timeout_ms = DRAIN_MS;
        o.log_level = TASKQ_LOG_ERROR;
        taskq_error_t err = {0, ""};
        slot_t *s = &slots[i];
        s->w = taskq_worker_new(&o, &err);
        taskq_fn_def_t def = TASKQ_FN_DEF_INIT;
        def.name = "square";
        def.fn = square;
        def.mode = TASKQ_MODE_INLINE;
        if (!s->w || taskq_worker_add_def(s->w, &def, &err) != 0 ||
            taskq_worker_set_context(s->w, zctx, &err) != 0 ||
            taskq_worker_set_prefetch(s->w, (size_t)prefetch, &err) != 0) {
            fprintf(stderr, "bench_manyworkers: worker %ld: %s\n", i, err.message);
            status = 1;
            break;
        }
        int e = pthread_create(&s->thread, &attr, run_one, s);
        if (e != 0) {
            fprintf(stderr, "bench_manyworkers: worker %ld: cannot start a thread: %s\n", i,
                    strerror(e));
            status = 1;
            break;
        }
        s->started = 1;
    }
    pthread_attr_destroy(&attr);

    if (status == 0) {
        int sig = 0;
        sigwait(&set, &sig);
    }
    for (long i = 0; i < k; i++)
        if (slots[i].w)
            taskq_worker_stop(slots[i].w);
    for (long i = 0; i < k; i++) {
        if (slots[i].started)
            pthread_join(slots[i].thread, NULL);
        taskq_worker_destroy(&slots[i].w);
    }
    free(slots);
    zmq_ctx_term(zctx);
    if (atomic_load(&g_failed))
        status = 1;
    return status;
}
