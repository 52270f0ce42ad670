/* bench_w1lib.c - issue 5's W7 driver of scripts/bench: the W1 workload
 * through libtaskq directly, to show what the taskq command costs.
 *
 *   bench_w1lib ENDPOINT AUTHKEY_FILE N [WINDOW]
 *
 * Submits `square` tasks with payloads 1..N (TASKQ_SUBSCRIBE), keeping
 * at most WINDOW (default 10000, as `taskq map --window`) without a
 * result, and reads every result. The clock runs from before
 * taskq_connect to the last result, as W1's runs from the start of the
 * `taskq map` process to its exit. Checks every result: each must read
 * "k * k = k²" for a k in 1..N, and every k must come back exactly once.
 * Prints one line "tasks N seconds S tasks_per_s R" and exits 0, or
 * prints an error and exits with the libtaskq error category (1 on a
 * wrong or missing result). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskq.h"

/* Largest N accepted (one bit per task is kept). */
#define N_MAX 100000000L
#define WINDOW_MAX 1000000L
#define WINDOW_DEFAULT 10000L
/* Longest wait for the next event before giving up. */
#define EVENT_TIMEOUT_MS 60000
/* Longest result text looked at: "k * k = k²" with k <= N_MAX. */
#define TEXT_MAX 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* Check one result: "k * k = k²" with 1 <= k <= n, k not seen before.
 * Returns 0 and marks k, or -1 with err filled. */
static int check_result(const taskq_event_t *ev, long n, uint8_t *seen, taskq_error_t *err)
{
    char text[TEXT_MAX + 1];
    size_t len = ev->len;
    if (ev->status != TASKQ_DONE || len == 0 || len > TEXT_MAX)
        goto bad;
    memcpy(text, ev->data, len);
    text[len] = '\0';
    long k = 0, k2 = 0;
    long long sq = 0;
    int used = 0;
    if (sscanf(text, "%ld * %ld = %lld%n", &k, &k2, &sq, &used) != 3 || (size_t)used != len ||
        k != k2 || k < 1 || k > n || sq != (long long)k * k)
        goto bad;
    if (seen[k / 8] & (1u << (k % 8))) {
        err->code = TASKQ_ERR_TASK_FAILED;
        snprintf(err->message, sizeof err->message, "square(%ld) came back twice", k);
        return -1;
    }
    seen[k / 8] |= (uint8_t)(1u << (k % 8));
    return 0;
bad:
    err->code = TASKQ_ERR_TASK_FAILED;
    snprintf(err->message, sizeof err->message, "task %" PRIu64 ": status %s, result '%.*s'",
             ev->id, taskq_status_name(ev->status), (int)(ev->len > 80 ? 80 : ev->len),
             ev->data ? (const char *)ev->data : "");
    return -1;
}

/* Run the workload on tq. Returns 0 or -1 with err filled. */
static int run(taskq_t *tq, long n, long window, uint8_t *seen, taskq_error_t *err)
{
    taskq_task_opts_t opts = TASKQ_TASK_OPTS_INIT;
    opts.fn = "square";
    long submitted = 0, done = 0;
    while (done < n) {
        /* As `taskq map`: top the window up, then take one event. */
        while (submitted < n && submitted - done < window) {
            char payload[32];
            int plen = snprintf(payload, sizeof payload, "%ld", submitted + 1);
            if (taskq_submit(tq, &opts, payload, (size_t)plen, TASKQ_SUBSCRIBE, NULL, err) != 0)
                return -1;
            submitted++;
        }
        taskq_event_t ev;
        int rc = taskq_next_event(tq, EVENT_TIMEOUT_MS, &ev, err);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            err->code = TASKQ_ERR_TIMEOUT;
            snprintf(err->message, sizeof err->message, "no event in %d ms with %ld of %ld results",
                     EVENT_TIMEOUT_MS, done, n);
            return -1;
        }
        if (ev.type == TASKQ_EVENT_ERROR) {
            err->code = ev.code;
            snprintf(err->message, sizeof err->message, "master refused %zu tasks: %s", ev.count,
                     ev.message ? ev.message : "?");
            return -1;
        }
        if (ev.type != TASKQ_EVENT_RESULT)
            continue;
        if (check_result(&ev, n, seen, err) != 0)
            return -1;
        done++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long n = 0, window = WINDOW_DEFAULT;
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: bench_w1lib ENDPOINT AUTHKEY_FILE N [WINDOW]\n");
        return TASKQ_ERR_USAGE;
    }
    if (parse_long(argv[3], 1, N_MAX, &n) != 0) {
        fprintf(stderr, "bench_w1lib: N must be 1..%ld\n", N_MAX);
        return TASKQ_ERR_USAGE;
    }
    if (argc == 5 && parse_long(argv[4], 1, WINDOW_MAX, &window) != 0) {
        fprintf(stderr, "bench_w1lib: WINDOW must be 1..%ld\n", WINDOW_MAX);
        return TASKQ_ERR_USAGE;
    }
    uint8_t *seen = calloc((size_t)n / 8 + 1, 1);
    if (!seen) {
        fprintf(stderr, "bench_w1lib: out of memory\n");
        return TASKQ_ERR_INTERNAL;
    }

    taskq_error_t err = {0, ""};
    double t0 = now_s();
    taskq_t *tq = taskq_connect(argv[1], argv[2], 10000, "bench-w1lib", &err);
    if (!tq) {
        fprintf(stderr, "bench_w1lib: %s\n", err.message);
        free(seen);
        return err.code ? err.code : TASKQ_ERR_INTERNAL;
    }
    int status = 0;
    if (run(tq, n, window, seen, &err) != 0) {
        fprintf(stderr, "bench_w1lib: %s\n", err.message);
        status = err.code ? err.code : TASKQ_ERR_INTERNAL;
    }
    taskq_close(&tq);
    double secs = now_s() - t0;
    if (status == 0)
        printf("tasks %ld seconds %.3f tasks_per_s %.0f\n", n, secs, (double)n / secs);
    free(seen);
    return status;
}
