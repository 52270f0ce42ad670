/* bench_inspect.c - the inspection rows of scripts/bench (issue 16): the
 * answer time of `list` and `show` on a master holding many tasks, and
 * how long they hold up the master's loop (dispatch stall).
 *
 *   bench_inspect ENDPOINT AUTHKEY_FILE FIRST_ID N_TASKS
 *
 * Run against a master holding N_TASKS queued tasks with ids from
 * FIRST_ID on. Measures, over REPS requests each:
 *   list_scan  taskq_list with a filter nothing matches (state "failed"):
 *              each request looks at its full budget of records;
 *   list_page  taskq_list of 1000 queued tasks from the middle;
 *   show       taskq_show of 100 ids spread over the store (payloads);
 *   walk       the whole store paged with state "failed" until "more" is
 *              false (the number of requests and the total time);
 *   stall      a second connection's taskq_status round trip, idle and
 *              while another connection sends list_scan and list_page
 *              requests, one every 2 ms: the loop runs one request at a time, so the
 *              extra time of the probe is the time a dispatch waits.
 * Prints one JSON line; exits 0, or with the libtaskq error category. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskq.h"

#define REPS 40
#define PROBES 400

static const char *endpoint, *keyfile;
static atomic_int loading;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void stats(double *v, int n, double *p50, double *max)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *p50 = v[n / 2];
    *max = v[n - 1];
}

static double p99(const double *sorted, int n) { return sorted[(n * 99 + 99) / 100 - 1]; }

static void die(const char *what, const taskq_error_t *e)
{
    fprintf(stderr, "bench_inspect: %s: %s\n", what, e->message);
    exit(e->code > 0 && e->code < 64 ? e->code : 1);
}

/* "more":true in a list reply, and its "next_after". */
static int reply_more(const char *json, uint64_t *next)
{
    const char *m = strstr(json, "\"more\":true");
    const char *n = strstr(json, "\"next_after\":");
    if (!n)
        return -1;
    *next = strtoull(n + 13, NULL, 10);
    return m != NULL;
}

/* One list request; returns its time in ms (the reply is checked). */
static double one_list(taskq_t *tq, const taskq_list_opts_t *o, uint64_t *next, int *more)
{
    char *reply = NULL;
    taskq_error_t e;
    double t0 = now_ms();
    if (taskq_list(tq, o, 30000, &reply, &e) < 0)
        die("taskq_list", &e);
    double dt = now_ms() - t0;
    uint64_t nx = 0;
    int m = reply_more(reply, &nx);
    free(reply);
    if (m < 0) {
        fprintf(stderr, "bench_inspect: a list reply without next_after\n");
        exit(1);
    }
    if (next)
        *next = nx;
    if (more)
        *more = m;
    return dt;
}

/* The probe connection: status round trips, idle or under load. */
static void probe(double *v, int n)
{
    taskq_error_t e;
    taskq_t *tq = taskq_connect(endpoint, keyfile, 10000, "bench-inspect-probe", &e);
    if (!tq)
        die("connect (probe)", &e);
    for (int i = 0; i < n; i++) {
        char *json = NULL;
        double t0 = now_ms();
        if (taskq_status(tq, 30000, &json, &e) < 0)
            die("taskq_status", &e);
        v[i] = now_ms() - t0;
        free(json);
    }
    taskq_close(&tq);
}

static void *load_thread(void *arg)
{
    uint64_t first = *(const uint64_t *)arg;
    taskq_error_t e;
    taskq_t *tq = taskq_connect(endpoint, keyfile, 10000, "bench-inspect-load", &e);
    if (!tq)
        die("connect (load)", &e);
    /* full-budget scans and 1000-row pages of queued tasks, in turn */
    taskq_list_opts_t o = {NULL, NULL, "failed", 1000, first};
    taskq_list_opts_t q = {NULL, NULL, "queued", 1000, first};
    /* a pause between requests: the probe should meet the loop busy
     * with a request, not three threads fighting over the cores */
    const struct timespec pause = {0, 2000000};
    while (atomic_load(&loading)) {
        uint64_t next;
        int more;
        one_list(tq, &o, &next, &more);
        o.after = more ? next : first;
        nanosleep(&pause, NULL);
        one_list(tq, &q, &next, &more);
        q.after = more ? next : first;
        nanosleep(&pause, NULL);
    }
    taskq_close(&tq);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_inspect ENDPOINT AUTHKEY_FILE FIRST_ID N_TASKS\n");
        return 2;
    }
    endpoint = argv[1];
    keyfile = argv[2];
    uint64_t first = strtoull(argv[3], NULL, 10), ntasks = strtoull(argv[4], NULL, 10);
    taskq_error_t e;
    taskq_t *tq = taskq_connect(endpoint, keyfile, 10000, "bench-inspect", &e);
    if (!tq)
        die("connect", &e);
    double v[PROBES];

    /* list_scan: a full budget of records looked at, nothing matches */
    taskq_list_opts_t scan = {NULL, NULL, "failed", 1000, first + ntasks / 2};
    for (int i = 0; i < REPS; i++)
        v[i] = one_list(tq, &scan, NULL, NULL);
    double scan50, scanmax;
    stats(v, REPS, &scan50, &scanmax);

    /* list_page: 1000 queued rows */
    taskq_list_opts_t page = {NULL, NULL, "queued", 1000, first + ntasks / 3};
    for (int i = 0; i < REPS; i++)
        v[i] = one_list(tq, &page, NULL, NULL);
    double page50, pagemax;
    stats(v, REPS, &page50, &pagemax);

    /* show: 100 ids spread over the store, with payloads */
    uint64_t ids[100];
    for (int k = 0; k < 100; k++)
        ids[k] = first + (uint64_t)k * (ntasks / 100);
    for (int i = 0; i < REPS; i++) {
        char *reply = NULL;
        double t0 = now_ms();
        if (taskq_show(tq, ids, 100, 1, 30000, &reply, &e) < 0)
            die("taskq_show", &e);
        v[i] = now_ms() - t0;
        if (!strstr(reply, "\"state\":\"queued\"")) {
            fprintf(stderr, "bench_inspect: show did not find the queued tasks\n");
            return 1;
        }
        free(reply);
    }
    double show50, showmax;
    stats(v, REPS, &show50, &showmax);

    /* walk: the whole store, page after page */
    taskq_list_opts_t walk = {NULL, NULL, "failed", 1000, 0};
    int pages = 0, more = 1;
    double t0 = now_ms();
    while (more) {
        uint64_t next;
        one_list(tq, &walk, &next, &more);
        walk.after = next;
        pages++;
    }
    double walk_ms = now_ms() - t0;

    /* stall: the probe idle, then under back-to-back list_scan */
    probe(v, PROBES);
    double idle50, idlemax;
    stats(v, PROBES, &idle50, &idlemax);
    double idle99 = p99(v, PROBES);
    atomic_store(&loading, 1);
    pthread_t th;
    pthread_create(&th, NULL, load_thread, &first);
    probe(v, 50); /* the load is under way */
    probe(v, PROBES);
    atomic_store(&loading, 0);
    pthread_join(th, NULL);
    double load50, loadmax;
    stats(v, PROBES, &load50, &loadmax);
    double load99 = p99(v, PROBES);
    taskq_close(&tq);

    printf("{\"tasks\":%" PRIu64 ",\"list_scan_p50_ms\":%.2f,\"list_scan_max_ms\":%.2f,"
           "\"list_page_p50_ms\":%.2f,\"list_page_max_ms\":%.2f,\"show100_p50_ms\":%.2f,"
           "\"show100_max_ms\":%.2f,\"walk_pages\":%d,\"walk_ms\":%.1f,"
           "\"probe_idle_p50_ms\":%.3f,\"probe_idle_p99_ms\":%.3f,\"probe_idle_max_ms\":%.3f,"
           "\"probe_load_p50_ms\":%.3f,\"probe_load_p99_ms\":%.3f,\"probe_load_max_ms\":%.3f}\n",
           ntasks, scan50, scanmax, page50, pagemax, show50, showmax, pages, walk_ms, idle50,
           idle99, idlemax, load50, load99, loadmax);
    return 0;
}
