/* metrics.c - the Prometheus text exposition over libmicrohttpd. See
 * metrics.h. */
#include "metrics.h"
#include "inspect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tq_idmap.h"
#include "tq_log.h"
#include "tq_util.h"

/* Longest ADDR:PORT accepted. */
#define METRICS_ADDR_MAX 128

/* Histogram bucket bounds (seconds) for queue wait and run times. */
static const double hist_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  1,
                                 2.5,   5,    10,    30,   60,  300,  1800, 3600};
#define HIST_N (sizeof hist_le / sizeof hist_le[0])

typedef struct {
    uint64_t bucket[HIST_N]; /* observations <= hist_le[i] (not cumulative) */
    uint64_t count;
    double sum;
} hist_t;

/* Per-queue histograms, by queue name (a copy: queues can be freed). */
typedef struct {
    char *name;
    hist_t wait, run;
} qhist_t;

/* A growing text buffer (loop thread only). */
typedef struct {
    char *p;
    size_t n, cap;
} text_t;

struct tq_metrics {
    struct MHD_Daemon *daemon;
    char url[METRICS_ADDR_MAX + 32];
    pthread_mutex_t mu; /* guards pub */
    text_t pub;         /* the last published text */
    text_t work;        /* the loop's render buffer; swapped with pub */
    /* loop thread only: histograms */
    tq_idmap_t *qbyhash; /* FNV-1a of the queue name -> qhist_t */
    qhist_t **qh;        /* in first-seen order, at most TQ_METRICS_MAX_QUEUES */
    size_t nqh;
    /* the last queue looked up and its histograms: most events in a row
     * are of one queue, and this saves hashing its name for each */
    const void *last_queue;
    qhist_t *last_qh;
};

static void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (t->p && (size_t)n < t->cap - t->n) {
            t->n += (size_t)n;
            return;
        }
        size_t want = t->n + (size_t)n + 1;
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < want)
            cap *= 2;
        t->p = tq_realloc(t->p, cap);
        t->cap = cap;
    }
}

/* A label value: backslash, double quote and newline escaped. Queue
 * names are printable already (tq_name_valid); this keeps the format
 * whole whatever they hold. */
static void text_label(text_t *t, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            text_add(t, "\\%c", *p);
        else if (*p == '\n')
            text_add(t, "\\n");
        else
            text_add(t, "%c", *p);
    }
}

int tq_listen_addr_parse(const char *flag, const char *s, struct sockaddr_storage *ss,
                         socklen_t *len, tq_err_t *err)
{
    char host[METRICS_ADDR_MAX];
    const char *port;
    if (!s || !*s || strlen(s) >= sizeof host) {
        tq_err_set(err, 0, "%s: '%.64s' is not ADDR:PORT", flag, s ? s : "");
        return -1;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            tq_err_set(err, 0, "%s: '%s' is not [IPV6]:PORT", flag, s);
            return -1;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            host[0] = '\0';
            port = s;
        } else {
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            port = colon + 1;
        }
    }
    uint64_t p;
    if (tq_parse_u64(port, &p) < 0 || p > 65535) {
        tq_err_set(err, 0, "%s: port '%.16s' is not 0..65535", flag, port);
        return -1;
    }
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (!host[0] || !strcmp(host, "localhost")) {
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a4->sin_port = htons((uint16_t)p);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p);
        *len = sizeof *a6;
    } else {
        tq_err_set(err, 0,
                   "%s: '%s' is not an IP address (give 127.0.0.1, ::1 or "
                   "another address of this host)",
                   flag, host);
        return -1;
    }
    return 0;
}

int tq_metrics_addr_check(const char *listen, tq_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return tq_listen_addr_parse("--metrics-listen", listen, &ss, &len, err);
}

/* libmicrohttpd's request handler (its thread): GET or HEAD /metrics
 * gets a copy of the published text; nothing else is served. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    tq_metrics_t *self = cls;
    (void)version;
    (void)upload_data;
    if (*upload_size) {
        *upload_size = 0; /* a body is ignored (and the method refused below) */
        return MHD_YES;
    }
    (void)con_cls;
    unsigned status = MHD_HTTP_OK;
    char *body;
    size_t n;
    const char *type = "text/plain; version=0.0.4; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = tq_strdup("only GET\n");
        n = strlen(body);
    } else if (strcmp(url, "/metrics") != 0 && strcmp(url, "/") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        body = tq_strdup("not found: the metrics are at /metrics\n");
        n = strlen(body);
    } else {
        body = tq_metrics_copy(self, &n);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* libmicrohttpd's own error lines go to our log (cls: the prefix). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    tq_warn("%s: %s", (const char *)cls, line);
}

struct MHD_Daemon *tq_mhd_start(const char *flag, const char *listen, unsigned flags,
                                unsigned max_conns, unsigned timeout_s,
                                MHD_AccessHandlerCallback handler, void *cls,
                                MHD_RequestCompletedCallback completed, const char *path, char *url,
                                size_t urllen, tq_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (tq_listen_addr_parse(flag, listen, &ss, &len, err) < 0)
        return NULL;
    /* poll/epoll, not select: the master runs with thousands of descriptors */
    flags |= MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    const char *logname = strcmp(flag, "--metrics-listen") == 0 ? "metrics" : "http";
    struct MHD_Daemon *d = MHD_start_daemon(flags, port, NULL, NULL, handler, cls,
                                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)logname,
                                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                            MHD_OPTION_CONNECTION_LIMIT, max_conns,
                                            MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
                                            MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                                            MHD_OPTION_END);
    if (!d) {
        tq_err_set(err, 0,
                   "%s %s: cannot listen there (address in use, or not an address of this host)",
                   flag, listen);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = di ? di->port : port;
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
    snprintf(url, urllen, "http://%s%s%s:%u%s", ss.ss_family == AF_INET6 ? "[" : "", host,
             ss.ss_family == AF_INET6 ? "]" : "", bound, path);
    return d;
}

tq_metrics_t *tq_metrics_new(void)
{
    tq_metrics_t *self = tq_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mu, NULL);
    self->qbyhash = tq_idmap_new();
    return self;
}

char *tq_metrics_copy(tq_metrics_t *self, size_t *len)
{
    pthread_mutex_lock(&self->mu);
    size_t n = self->pub.n;
    char *body = tq_malloc(n ? n : 1);
    if (n)
        memcpy(body, self->pub.p, n);
    pthread_mutex_unlock(&self->mu);
    *len = n;
    return body;
}

tq_metrics_t *tq_metrics_start(const char *listen, tq_err_t *err)
{
    tq_metrics_t *self = tq_metrics_new();
    self->daemon = tq_mhd_start("--metrics-listen", listen, 0, TQ_METRICS_MAX_CONNS,
                                TQ_METRICS_CONN_TIMEOUT_S, on_request, self, NULL, "/metrics",
                                self->url, sizeof self->url, err);
    if (!self->daemon)
        tq_metrics_stop(&self);
    return self;
}

const char *tq_metrics_url(const tq_metrics_t *self) { return self->url[0] ? self->url : NULL; }

void tq_metrics_stop(tq_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_metrics_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    pthread_mutex_destroy(&self->mu);
    free(self->pub.p);
    free(self->work.p);
    tq_idmap_destroy(&self->qbyhash);
    for (size_t i = 0; i < self->nqh; i++) {
        free(self->qh[i]->name);
        free(self->qh[i]);
    }
    free(self->qh);
    free(self);
    *self_p = NULL;
}

static void hist_add(hist_t *h, double v)
{
    h->count++;
    h->sum += v;
    for (size_t i = 0; i < HIST_N; i++)
        if (v <= hist_le[i]) {
            h->bucket[i]++;
            return;
        }
}

/* The histograms of queue name, created on first use; NULL past
 * TQ_METRICS_MAX_QUEUES queues or on a hash collision (not counted). */
static qhist_t *queue_hist_find(tq_metrics_t *self, const char *name)
{
    uint64_t h = tq_fnv1a(TQ_FNV_BASIS, name, strlen(name));
    h = h ? h : 1;
    qhist_t *q = tq_idmap_get(self->qbyhash, h);
    if (q)
        return strcmp(q->name, name) == 0 ? q : NULL;
    if (self->nqh >= TQ_METRICS_MAX_QUEUES)
        return NULL;
    q = tq_calloc(1, sizeof *q);
    q->name = tq_strdup(name);
    self->qh = tq_realloc(self->qh, (self->nqh + 1) * sizeof *self->qh);
    self->qh[self->nqh++] = q;
    tq_idmap_put(self->qbyhash, h, q);
    return q;
}

/* queue_hist_find for the task's queue. */
static qhist_t *queue_hist(tq_metrics_t *self, const tq_task_t *t)
{
    const tq_queue_t *queue = tq_task_queue(t);
    const char *name = tq_queue_name(queue);
    /* the name check: a freed queue's memory may hold another queue now */
    if (queue == self->last_queue && strcmp(self->last_qh->name, name) == 0)
        return self->last_qh;
    qhist_t *found = queue_hist_find(self, name);
    if (found) {
        self->last_queue = queue;
        self->last_qh = found;
    }
    return found;
}

void tq_metrics_on_engine(void *arg, const tq_engine_ev_t *ev)
{
    tq_metrics_t *self = arg;
    if (ev->kind == TQ_EV_TASK && ev->store_ev == TQ_SEV_LEASED) {
        tq_task_t *t = ev->task;
        qhist_t *q = t->x && t->x->attempt == 1 ? queue_hist(self, t) : NULL;
        if (q)
            hist_add(&q->wait, (double)(tq_wall_ms() - t->created_ms) / 1000.0);
    } else if (ev->kind == TQ_EV_LEASE_END) {
        /* the dispatch time the engine keeps with the task (not
         * journaled: a lease replayed at start has none, and is not
         * counted), so no map of leases here */
        int64_t since = tq_task_started_ms(ev->task);
        qhist_t *q = since > 0 ? queue_hist(self, ev->task) : NULL;
        if (q)
            hist_add(&q->run, (double)(tq_wall_ms() - since) / 1000.0);
    }
}

static void text_hist(text_t *t, const char *metric, const char *queue, const hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < HIST_N; i++) {
        cum += h->bucket[i];
        text_add(t, "%s_bucket{queue=\"", metric);
        text_label(t, queue);
        text_add(t, "\",le=\"%g\"} %" PRIu64 "\n", hist_le[i], cum);
    }
    text_add(t, "%s_bucket{queue=\"", metric);
    text_label(t, queue);
    text_add(t, "\",le=\"+Inf\"} %" PRIu64 "\n%s_sum{queue=\"", h->count, metric);
    text_label(t, queue);
    text_add(t, "\"} %.6f\n%s_count{queue=\"", h->sum, metric);
    text_label(t, queue);
    text_add(t, "\"} %" PRIu64 "\n", h->count);
}

/* "# HELP" and "# TYPE" lines of one metric. */
static void head(text_t *t, const char *name, const char *type, const char *help)
{
    text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(text_t *t, const char *name, const char *type, const char *help, uint64_t v)
{
    head(t, name, type, help);
    text_add(t, "%s %" PRIu64 "\n", name, v);
}

/* Key-pair mode: peers connected per identity of --allow-keys (every
 * identity of the file, 0 included, at most TQ_METRICS_MAX_QUEUES), and
 * the requests refused with FORBIDDEN. */
static void render_identities(text_t *t, const tq_peers_t *peers, const tq_policy_t *policy)
{
    if (!policy || !policy->allow)
        return;
    size_t n = tq_allow_count(policy->allow);
    if (n > TQ_METRICS_MAX_QUEUES)
        n = TQ_METRICS_MAX_QUEUES;
    uint64_t *conns = tq_calloc(n ? n : 1, sizeof *conns);
    const tq_ident_t *first = n ? tq_allow_at(policy->allow, 0) : NULL;
    for (size_t i = 0; first && i < tq_peers_count(peers); i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->ident && !p->gone && p->ident >= first && p->ident < first + n)
            conns[p->ident - first]++;
    }
    head(t, "taskq_identity_peers", "gauge",
         "workers and clients connected with each key of --allow-keys");
    for (size_t i = 0; i < n; i++) {
        const tq_ident_t *id = tq_allow_at(policy->allow, i);
        text_add(t, "taskq_identity_peers{identity=\"");
        text_label(t, id->name);
        text_add(t, "\",role=\"%s\"} %" PRIu64 "\n", tq_ident_role_name(id->role), conns[i]);
    }
    free(conns);
    one(t, "taskq_forbidden_total", "counter",
        "requests refused because the identity of their key may not make them (FORBIDDEN)",
        policy->forbidden);
}

void tq_metrics_render(tq_metrics_t *self, const tq_store_t *store, const tq_peers_t *peers,
                       const tq_metrics_info_t *info)
{
    text_t *t = &self->work;
    t->n = 0;
    const tq_store_totals_t *tot = tq_store_totals(store);

    head(t, "taskq_build_info", "gauge", "the master's version");
    text_add(t, "taskq_build_info{version=\"%s\"} 1\n", TQ_VERSION);
    head(t, "taskq_uptime_seconds", "gauge", "seconds since the master started");
    text_add(t, "taskq_uptime_seconds %.3f\n", (double)info->uptime_ms / 1000.0);

    /* Tasks by queue and state (gauges, from the state after replay). */
    static const char *const states[] = {"queued", "running",   "delayed", "done",
                                         "failed", "cancelled", "dead"};
    size_t nq = tq_store_nqueues(store);
    head(t, "taskq_tasks", "gauge", "tasks stored now, by queue and state");
    for (size_t i = 0; i < nq && i < TQ_METRICS_MAX_QUEUES; i++) {
        const tq_queue_t *q = tq_store_queue_at(store, i);
        const tq_queue_counts_t *c = tq_queue_counts(q);
        const size_t v[] = {c->queued, c->running,   c->delayed, c->done,
                            c->failed, c->cancelled, c->dead};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
            text_add(t, "taskq_tasks{queue=\"");
            text_label(t, tq_queue_name(q));
            text_add(t, "\",state=\"%s\"} %zu\n", states[k], v[k]);
        }
    }
    head(t, "taskq_queue_paused", "gauge", "1 if the queue is paused");
    for (size_t i = 0; i < nq && i < TQ_METRICS_MAX_QUEUES; i++) {
        const tq_queue_t *q = tq_store_queue_at(store, i);
        text_add(t, "taskq_queue_paused{queue=\"");
        text_label(t, tq_queue_name(q));
        text_add(t, "\"} %d\n", tq_queue_paused(q) ? 1 : 0);
    }
    head(t, "taskq_queue_oldest_age_seconds", "gauge",
         "age of the oldest task next in line (0: none queued)");
    int64_t now_ms = tq_wall_ms();
    for (size_t i = 0; i < nq && i < TQ_METRICS_MAX_QUEUES; i++) {
        const tq_queue_t *q = tq_store_queue_at(store, i);
        int64_t created = tq_queue_head_created(q);
        text_add(t, "taskq_queue_oldest_age_seconds{queue=\"");
        text_label(t, tq_queue_name(q));
        text_add(t, "\"} %.3f\n",
                 created < 0 || now_ms < created ? 0.0 : (double)(now_ms - created) / 1000.0);
    }
    one(t, "taskq_queues", "gauge", "queues known (series above for the first 1000)", nq);

    /* Per function: queued, running, workers serving it; unserved = 1
     * when tasks wait for it and no connected worker serves it. */
    tq_inspect_fnrow_t *fr;
    size_t nfr = tq_inspect_fn_rows(store, peers, &fr);
    static const char *const fcols[] = {"queued", "running", "workers"};
    static const char *const fhelp[] = {"runnable tasks queued for the function, all queues",
                                        "tasks of the function running",
                                        "connected workers (not draining) serving the function"};
    for (size_t k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "taskq_function_%s", fcols[k]);
        head(t, name, "gauge", fhelp[k]);
        for (size_t i = 0; i < nfr && i < TQ_INSPECT_FN_ROWS; i++) {
            size_t v = k == 0 ? fr[i].queued : k == 1 ? fr[i].running : fr[i].workers;
            text_add(t, "%s{fn=\"", name);
            text_label(t, fr[i].fn);
            text_add(t, "\"} %zu\n", v);
        }
    }
    size_t unserved = 0;
    for (size_t i = 0; i < nfr; i++)
        unserved += fr[i].queued > 0 && fr[i].workers == 0;
    free(fr);
    one(t, "taskq_functions_unserved", "gauge",
        "functions with queued tasks that no connected worker serves", unserved);
    one(t, "taskq_tasks_stored", "gauge", "tasks stored in any state", tq_store_size(store));

    /* Counters since the process started. */
    one(t, "taskq_tasks_submitted_total", "counter", "tasks accepted", tot->submitted);
    one(t, "taskq_tasks_dispatched_total", "counter", "dispatches to workers", tot->dispatched);
    one(t, "taskq_tasks_done_total", "counter", "tasks finished successfully", tot->done);
    one(t, "taskq_tasks_failed_total", "counter", "tasks finished failed (not dead)", tot->failed);
    one(t, "taskq_tasks_retried_total", "counter", "failed runs queued again for a retry",
        tot->retried);
    one(t, "taskq_tasks_requeued_total", "counter", "lost leases queued again", tot->requeued);
    one(t, "taskq_tasks_dead_total", "counter", "tasks that became dead", tot->dead);
    one(t, "taskq_tasks_cancelled_total", "counter", "tasks cancelled", tot->cancelled);
    one(t, "taskq_tasks_expired_total", "counter", "leases taken back after their timeout",
        tot->expired);
    one(t, "taskq_late_results_total", "counter",
        "results ignored: late attempt, finished task or not the holder (fenced)",
        info->late_results);

    /* Workers and clients. */
    uint64_t nw = 0, ndrain = 0, slots = 0, busy = 0, credit = 0;
    for (size_t i = 0; i < tq_peers_count(peers); i++) {
        const tq_peer_t *p = tq_peers_at(peers, i);
        if (p->role != TQ_ROLE_WORKER || p->gone)
            continue;
        nw++;
        ndrain += p->draining != 0;
        slots += p->slots;
        busy += p->nleased;
        credit += p->credit;
    }
    one(t, "taskq_workers", "gauge", "workers connected", nw);
    one(t, "taskq_workers_draining", "gauge", "workers draining", ndrain);
    one(t, "taskq_worker_slots", "gauge", "slots of the connected workers", slots);
    one(t, "taskq_worker_busy_slots", "gauge", "tasks leased to the connected workers", busy);
    one(t, "taskq_worker_credit", "gauge", "tasks the workers can take now", credit);
    one(t, "taskq_clients", "gauge", "clients connected",
        tq_peers_count_role(peers, TQ_ROLE_CLIENT));
    one(t, "taskq_connections", "gauge", "open connections (any stage, handshake included)",
        info->connections);
    one(t, "taskq_auth_failures_total", "counter",
        "connections whose CURVE handshake was rejected (wrong authkey)", info->auth_failures);
    render_identities(t, peers, info->policy);

    /* The journal. */
    one(t, "taskq_journal_bytes", "gauge", "journal bytes on disk", info->journal_bytes);
    one(t, "taskq_journal_live_bytes", "gauge", "journal bytes still needed",
        info->journal_live_bytes);
    one(t, "taskq_journal_compactions_total", "counter", "journal compactions done",
        info->compactions);
    one(t, "taskq_journal_error", "gauge",
        "1 while a journal write fails (submits are refused meanwhile)", info->journal_error != 0);
    one(t, "taskq_journal_write_errors_total", "counter",
        "failed journal writes and fdatasync rounds (each retry counts)", info->fsync.errors);
    head(t, "taskq_journal_fsync_seconds", "histogram",
         "time of one fdatasync round of the journal (every file written since the last)");
    uint64_t cum = 0;
    for (size_t i = 0; i < TQ_JOURNAL_SYNC_BUCKETS; i++) {
        cum += info->fsync.bucket[i];
        text_add(t, "taskq_journal_fsync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                 (double)tq_journal_sync_le_us[i] / 1e6, cum);
    }
    text_add(t, "taskq_journal_fsync_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", info->fsync.count);
    text_add(t, "taskq_journal_fsync_seconds_sum %.6f\n", (double)info->fsync.sum_us / 1e6);
    text_add(t, "taskq_journal_fsync_seconds_count %" PRIu64 "\n", info->fsync.count);

    head(t, "taskq_queue_wait_seconds", "histogram",
         "time from submit to the first dispatch, tasks submitted since start, by queue");
    for (size_t i = 0; i < self->nqh; i++)
        text_hist(t, "taskq_queue_wait_seconds", self->qh[i]->name, &self->qh[i]->wait);
    head(t, "taskq_task_run_seconds", "histogram",
         "time from a dispatch to the end of its lease (result, loss, expiry), by queue");
    for (size_t i = 0; i < self->nqh; i++)
        text_hist(t, "taskq_task_run_seconds", self->qh[i]->name, &self->qh[i]->run);

    /* Publish: the scrape copies under the lock; the loop only swaps. */
    pthread_mutex_lock(&self->mu);
    text_t old = self->pub;
    self->pub = *t;
    *t = old;
    pthread_mutex_unlock(&self->mu);
}
