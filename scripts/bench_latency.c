/* bench_latency.c - the W2 driver of scripts/bench: one task at a time
 * through libtaskq, and the distribution of round-trip times.
 *
 *   bench_latency ENDPOINT AUTHKEY_FILE N
 *
 * Submits `square` tasks one after another, each only after the previous
 * result came back, and times each from taskq_submit to its RESULT
 * event. The first WARMUP tasks are not counted. Checks every result.
 * Prints one line "p50_us P50 p99_us P99 mean_us MEAN n N" and exits 0,
 * or prints an error and exits with the libtaskq error category (1 on a
 * wrong result). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskq.h"

/* Untimed round trips first: connection set-up, worker start, caches. */
#define WARMUP 50
/* Largest N accepted; the samples are held in memory. */
#define N_MAX 10000000L
/* Longest wait for one result before giving up. */
#define RESULT_TIMEOUT_MS 30000

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..100) of sorted[n], n >= 1. */
static double percentile(const double *sorted, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* Submit square(n) and block until its result. Returns 0 and checks the
 * text, or -1 with err filled (code 1 for a wrong or failed result). */
static int round_trip(taskq_t *tq, long n, taskq_error_t *err)
{
    char payload[32], want[96];
    int plen = snprintf(payload, sizeof payload, "%ld", n);
    int wlen = snprintf(want, sizeof want, "%ld * %ld = %ld", n, n, n * n);
    taskq_task_opts_t opts = TASKQ_TASK_OPTS_INIT;
    opts.fn = "square";
    if (taskq_submit(tq, &opts, payload, (size_t)plen, TASKQ_SUBSCRIBE, NULL, err) != 0)
        return -1;
    for (;;) {
        taskq_event_t ev;
        int rc = taskq_next_event(tq, RESULT_TIMEOUT_MS, &ev, err);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            err->code = TASKQ_ERR_TIMEOUT;
            snprintf(err->message, sizeof err->message, "no result for square(%ld) in %d ms", n,
                     RESULT_TIMEOUT_MS);
            return -1;
        }
        if (ev.type == TASKQ_EVENT_ERROR) {
            err->code = ev.code;
            snprintf(err->message, sizeof err->message, "master refused the task: %s",
                     ev.message ? ev.message : "?");
            return -1;
        }
        if (ev.type != TASKQ_EVENT_RESULT)
            continue;
        if (ev.status != TASKQ_DONE || ev.len != (size_t)wlen ||
            memcmp(ev.data, want, ev.len) != 0) {
            err->code = TASKQ_ERR_TASK_FAILED;
            snprintf(err->message, sizeof err->message, "square(%ld): status %s, result '%.*s'", n,
                     taskq_status_name(ev.status), (int)(ev.len > 200 ? 200 : ev.len),
                     ev.data ? (const char *)ev.data : "");
            return -1;
        }
        return 0;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_latency ENDPOINT AUTHKEY_FILE N\n");
        return TASKQ_ERR_USAGE;
    }
    char *end = NULL;
    long n = strtol(argv[3], &end, 10);
    if (*argv[3] == '\0' || *end != '\0' || n < 1 || n > N_MAX) {
        fprintf(stderr, "bench_latency: N must be 1..%ld\n", N_MAX);
        return TASKQ_ERR_USAGE;
    }

    taskq_error_t err = {0, ""};
    taskq_t *tq = taskq_connect(argv[1], argv[2], 10000, "bench-latency", &err);
    if (!tq) {
        fprintf(stderr, "bench_latency: %s\n", err.message);
        return err.code ? err.code : TASKQ_ERR_INTERNAL;
    }
    double *samples = calloc((size_t)n, sizeof *samples);
    if (!samples) {
        fprintf(stderr, "bench_latency: out of memory\n");
        taskq_close(&tq);
        return TASKQ_ERR_INTERNAL;
    }

    int status = 0;
    for (long i = 0; i < WARMUP + n; i++) {
        double t0 = now_us();
        if (round_trip(tq, i, &err) != 0) {
            fprintf(stderr, "bench_latency: %s\n", err.message);
            status = err.code ? err.code : TASKQ_ERR_INTERNAL;
            break;
        }
        if (i >= WARMUP)
            samples[i - WARMUP] = now_us() - t0;
    }
    taskq_close(&tq);

    if (status == 0) {
        double sum = 0;
        for (long i = 0; i < n; i++)
            sum += samples[i];
        qsort(samples, (size_t)n, sizeof *samples, cmp_double);
        printf("p50_us %.0f p99_us %.0f mean_us %.0f n %ld\n", percentile(samples, n, 50),
               percentile(samples, n, 99), sum / (double)n, n);
    }
    free(samples);
    return status;
}
