/* http_fuzz.c - libFuzzer target for the master's HTTP API (http.c on
 * libmicrohttpd, docs/http.md): every byte of a request comes from
 * whoever can open the port. On any bytes the server must answer with a
 * well-formed status line or close, never with a 5xx of its own other
 * than 503, never serve an unauthenticated request, and keep answering.
 *
 * Once (the first input) the target starts the real server, as the
 * master does (tq_http_start), on 127.0.0.1 port 0 with an auth file
 * holding a read user and an admin user, and a thread standing in for
 * the master's loop: it runs the requests through tq_http_run against a
 * real engine, journal (in $TMPDIR, --fsync off), peers, outbox and
 * roster, so ops are executed for real (a few tasks are queued, one is
 * dead), answers gated ones once the journal holds them, and publishes
 * a small stand-in status document each second (the real one is built
 * by status.c from the whole loop; its text is copied as is).
 *
 * Each input is the raw bytes of one or more HTTP requests, in which
 * "@CSRF-ADMIN@" and "@CSRF-READ@" stand for the users' CSRF tokens
 * (random at each start; the target asks GET /api/v1/session for them
 * once), sent over a new loopback connection, which is then half-closed; the target reads
 * every response until the server closes, and checks each (see
 * check_responses). Then a fixed health request (GET /api/v1/session
 * as the admin user) must get 200. A broken promise aborts with
 * "http_fuzz: ..." (libFuzzer records the input). State carries over
 * from input to input (paused queues, purged tasks), as in a master.
 * At exit the server stops and its directory is removed. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "http.h"
#include "metrics.h"
#include "now.h"
#include "outbox.h"
#include "peers.h"
#include "persist.h"
#include "roster.h"
#include "tq_log.h"
#include "tq_util.h"

/* The auth file's users (the corpus' requests carry these secrets). */
#define FUZZ_READ_SECRET "readsecret-0123456789abcdef"
#define FUZZ_ADMIN_SECRET "adminsecret-0123456789abcdef"
/* A connection's exchange must end (the server closes) within this:
 * above TQ_HTTP_WAIT_MS, so a stalled loop shows as 503, not as this. */
#define FUZZ_EXCHANGE_MS 15000
/* The health request is retried this long: the server may still be at
 * its connection limit while earlier connections' threads end. */
#define FUZZ_HEALTH_MS 5000
/* Responses kept per exchange at most (more is read and dropped). */
#define FUZZ_RESPONSE_MAX (4u << 20)

static struct {
    void *ctx, *router;
    tq_engine_t *engine;
    tq_persist_t *persist;
    tq_peers_t *peers;
    tq_outbox_t *outbox;
    tq_roster_t *roster;
    tq_policy_t policy;
    tq_peer_t names; /* the HTTP side's budget of new names, as the loop's */
    int sched_dirty;
    tq_metrics_t *metrics;
    tq_http_t *http;
    struct sockaddr_in addr;
    pthread_t loop;
    char csrf_admin[65], csrf_read[65]; /* the users' CSRF tokens */
    char dir[256];                      /* the auth file and the journal */
    atomic_int stopping;                /* the loop thread returns */
} g;

static void die(const char *what)
{
    fprintf(stderr, "http_fuzz: %s\n", what);
    abort();
}

/* A small status document, in place of status.c's (docs/http.md). */
static void publish(void)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "role", "master");
    cJSON_AddNumberToObject(doc, "time_ms", (double)tq_wall_ms());
    tq_http_publish(g.http, doc, 0, 0, 0, tq_wall_ms());
}

/* The loop's part (loop.c): poll the HTTP wake-up fd and the journal,
 * run the requests, flush the journal, answer what it holds now. */
static void *loop_main(void *arg)
{
    (void)arg;
    int64_t next_publish = tq_mono_ms() + TQ_HTTP_PUBLISH_MS;
    while (!atomic_load(&g.stopping)) {
        zmq_pollitem_t items[2] = {{NULL, tq_http_fd(g.http), ZMQ_POLLIN, 0},
                                   {tq_persist_socket(g.persist), 0, ZMQ_POLLIN, 0}};
        int n = items[1].socket ? 2 : 1;
        if (zmq_poll(items, n, 50) < 0 && zmq_errno() != EINTR)
            die("zmq_poll failed");
        if (n == 2 && (items[1].revents & ZMQ_POLLIN))
            tq_persist_on_sync(g.persist);
        if (items[0].revents & ZMQ_POLLIN) {
            tq_admin_deps_t ad = {g.engine, g.persist, g.outbox, g.roster, g.peers, &g.policy};
            tq_http_run(g.http, &ad, &g.names);
            tq_outbox_send_kills(g.outbox);
        }
        tq_persist_flush(g.persist);
        int64_t now = tq_mono_ms();
        tq_persist_tick(g.persist, now);
        tq_http_release(g.http, tq_persist_ready(g.persist));
        if (now >= next_publish) {
            publish();
            next_publish = now + TQ_HTTP_PUBLISH_MS;
        }
    }
    return NULL;
}

/* Queue a few tasks (queues "default" and "emails"), one of them dead,
 * so that show, list, dead, failed, retry and purge find something. */
static void add_tasks(void)
{
    tq_store_t *st = tq_engine_store(g.engine);
    tq_now_t now = {tq_wall_ms(), tq_mono_ms()};
    const char *queues[] = {"default", "emails", "emails", "default"};
    uint64_t ids[4] = {0};
    for (int i = 0; i < 4; i++) {
        tq_task_spec_t s;
        memset(&s, 0, sizeof s);
        s.fn = tq_bytes_str("send");
        s.queue = tq_bytes_str(queues[i]);
        s.payload = tq_bytes_str("{\"to\":\"a@example.org\"}");
        uint8_t added = 0;
        tq_err_t err;
        if (!tq_store_intern(st, s.fn) || !tq_store_intern(st, s.queue) ||
            tq_engine_submit(g.engine, &s, 1, 0, now, NULL, NULL, &ids[i], &added, &err) < 0)
            die("cannot queue the first tasks");
    }
    static int worker; /* a stand-in worker pointer: never dereferenced */
    tq_task_t *t = tq_store_get(st, ids[3]);
    if (!t)
        die("a queued task is missing");
    tq_engine_lease(g.engine, t, &worker, 1, now);
    tq_engine_lost(g.engine, t, "worker lost", now); /* max_attempts 1: dead */
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    remove(path);
    return 0;
}

/* At exit: stop the loop thread and the server, remove the directory
 * (the rest is left to the exit). */
static void stop(void)
{
    atomic_store(&g.stopping, 1);
    pthread_join(g.loop, NULL);
    tq_http_stop(&g.http);
    tq_persist_destroy(&g.persist);
    nftw(g.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void start(void)
{
    tq_log_init("http_fuzz");
    tq_log_set_level(TQ_LOG_ERROR); /* refusals and actions are logged: keep the output readable */
    const char *tmp = getenv("TMPDIR");
    char *dir = g.dir, path[320];
    snprintf(dir, sizeof g.dir, "%s/tq-http-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        die("cannot make a directory in $TMPDIR");
    /* the auth file: private, a read user and an admin user */
    snprintf(path, sizeof path, "%s/users", dir);
    FILE *f = fopen(path, "w");
    if (!f || chmod(path, 0600) < 0)
        die("cannot write the auth file");
    fprintf(f, "# NAME ROLE SECRET\nreader read %s\nadmin admin %s\n", FUZZ_READ_SECRET,
            FUZZ_ADMIN_SECRET);
    if (fclose(f) != 0)
        die("cannot write the auth file");

    g.ctx = zmq_ctx_new();
    tq_engine_cfg_t ec = {.store = {1, 100000, 3600000, 3600000, 86400000}, .max_attempts = 1};
    g.engine = tq_engine_new(&ec);
    tq_journal_cfg_t jc = {.data_dir = dir, .mode = TQ_FSYNC_OFF, .zmq_ctx = g.ctx};
    tq_persist_report_t rep;
    tq_err_t perr;
    memset(&perr, 0, sizeof perr);
    g.policy.owners = tq_idmap_new(); /* as the loop's (no --allow-keys) */
    g.persist = tq_persist_open(&jc, g.engine, &g.policy, &rep, &perr);
    if (!g.persist)
        die(perr.msg);
    g.peers = tq_peers_new();
    g.router = zmq_socket(g.ctx, ZMQ_ROUTER); /* never bound: no peer connects */
    g.outbox = tq_outbox_new(g.router, g.peers);
    g.roster = tq_roster_new(g.engine, g.peers, g.outbox, &g.sched_dirty);
    g.names.name_tokens = TQ_PEER_NEW_NAMES_BURST;
    g.names.name_refill_ms = tq_mono_ms();
    add_tasks();
    tq_persist_flush(g.persist);

    g.metrics = tq_metrics_new();
    tq_http_cfg_t hc = {"127.0.0.1:0", path, 0, g.metrics};
    tq_err_t herr;
    g.http = tq_http_start(&hc, &herr);
    if (!g.http)
        die(herr.msg);
    tq_engine_subscribe(g.engine, tq_http_on_engine, g.http);
    unsigned port = 0;
    if (sscanf(tq_http_url(g.http), "http://127.0.0.1:%u/", &port) != 1 || !port || port > 65535)
        die("cannot read the port from the server's URL");
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)port);
    g.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    publish();
    if (pthread_create(&g.loop, NULL, loop_main, NULL) != 0)
        die("cannot start the loop thread");
    atexit(stop);
}

/* Send req (n bytes) on a new connection, half-close it, read until the
 * server closes: *out (malloc'd, NUL-terminated) and *outn. Returns 0,
 * 1 when the connection could not be made or was refused before an
 * answer (the server at its connection limit), or aborts when the
 * server neither answers nor closes within FUZZ_EXCHANGE_MS. */
static int exchange(const uint8_t *req, size_t n, char **out, size_t *outn)
{
    *out = NULL;
    *outn = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket failed");
    if (connect(fd, (struct sockaddr *)&g.addr, sizeof g.addr) < 0) {
        close(fd);
        return 1;
    }
    int64_t deadline = tq_mono_ms() + FUZZ_EXCHANGE_MS;
    size_t cap = 4096, got = 0, sent = 0;
    char *buf = tq_malloc(cap);
    int wr_open = 1;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (;;) {
        if (wr_open && sent == n) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        int64_t left = deadline - tq_mono_ms();
        if (left <= 0)
            die("the server neither answered nor closed the connection in 15 s");
        struct pollfd p = {fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)), 0};
        if (poll(&p, 1, (int)left) < 0) {
            if (errno == EINTR)
                continue;
            die("poll failed");
        }
        if (wr_open && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(fd, req + sent, n - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                wr_open = 0; /* the server closed: read what it said */
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            if (got + 4096 + 1 > cap && cap < FUZZ_RESPONSE_MAX) {
                cap *= 2;
                buf = tq_realloc(buf, cap);
            }
            char sink[4096];
            int keep = got + 4096 + 1 <= cap;
            ssize_t r = recv(fd, keep ? buf + got : sink, 4096, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break; /* closed (or reset after an answer) */
            if (r > 0 && keep)
                got += (size_t)r;
        }
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *outn = got;
    return 0;
}

/* Case-insensitive search for needle in the n bytes at h. */
static const char *find_ci(const char *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(h + i, needle, k) == 0)
            return h + i;
    return NULL;
}

/* 1 if the input could carry a user's credentials: a secret as is
 * (Bearer), or any Basic scheme (whose base64 we do not chase). */
static int has_credentials(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    return memmem(d, size, FUZZ_READ_SECRET, strlen(FUZZ_READ_SECRET)) ||
           memmem(d, size, FUZZ_ADMIN_SECRET, strlen(FUZZ_ADMIN_SECRET)) ||
           find_ci(d, size, "basic");
}

/* Check the responses in r (n bytes), one after the other as long as
 * they can be delimited (Content-Length; a HEAD's has no body, so the
 * walk stops at the first that does not start with a status line after
 * the first). Returns the first response's status, or 0 for none.
 * Aborts on: a first response that is not "HTTP/1.x DDD ...", any 5xx
 * but 503 (505 and 501 are libmicrohttpd's answers to a request line
 * with an unknown version or method and allowed), a 2xx or 3xx to an
 * input with no credentials, or a response of ours (it has our
 * Content-Security-Policy) without X-Content-Type-Options. */
static unsigned check_responses(const char *r, size_t n, int creds)
{
    unsigned first = 0;
    for (int i = 0; n > 0; i++) {
        unsigned st = 0;
        char sp = 0;
        if (n < 13 || strncmp(r, "HTTP/1.", 7) != 0 || (r[7] != '0' && r[7] != '1') ||
            r[8] != ' ' || sscanf(r + 9, "%3u%c", &st, &sp) != 2 || sp != ' ' || st < 100 ||
            st > 599) {
            if (i == 0) {
                fprintf(stderr, "http_fuzz: response: %.200s\n", r);
                die("the first response is not a well-formed status line");
            }
            break;
        }
        if (!first && st >= 200)
            first = st;
        const char *end = strstr(r, "\r\n\r\n");
        if (!end)
            die("a response's header does not end");
        size_t hlen = (size_t)(end - r) + 4;
        const char *csp = find_ci(r, hlen, "\r\nContent-Security-Policy:");
        if (st >= 500 && st != 503 && (csp || (st != 505 && st != 501))) {
            fprintf(stderr, "http_fuzz: response: %.400s\n", r);
            die("a 5xx other than 503");
        }
        if (st >= 200 && st < 400 && !creds) {
            fprintf(stderr, "http_fuzz: response: %.400s\n", r);
            die("a request without credentials was served");
        }
        if (csp && !find_ci(r, hlen, "\r\nX-Content-Type-Options: nosniff"))
            die("a response of ours without the security headers");
        const char *cl = find_ci(r, hlen, "\r\nContent-Length:");
        unsigned long long len = 0;
        if (cl)
            len = strtoull(cl + 17, NULL, 10);
        else if (st >= 200 && st != 204 && st != 304)
            break; /* delimited by the close: the rest is its body */
        if (len > n - hlen)
            break; /* a HEAD's (no body sent) or cut: stop here */
        r += hlen + len;
        n -= hlen + (size_t)len;
    }
    return first;
}

/* The CSRF token of the user with secret (GET /api/v1/session) into out. */
static void fetch_csrf(const char *secret, char *out, size_t outlen)
{
    char req[256], *r;
    size_t n;
    int len = snprintf(req, sizeof req,
                       "GET /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Authorization: Bearer %s\r\nConnection: close\r\n\r\n",
                       secret);
    if (exchange((const uint8_t *)req, (size_t)len, &r, &n) != 0)
        die("cannot ask for the CSRF tokens");
    const char *body = strstr(r, "\r\n\r\n");
    cJSON *o = body ? cJSON_Parse(body + 4) : NULL;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "csrf");
    if (!cJSON_IsString(c) || strlen(c->valuestring) >= outlen)
        die("GET /api/v1/session gave no CSRF token");
    tq_strlcpy(out, c->valuestring, outlen);
    cJSON_Delete(o);
    free(r);
}

/* The input with each "@CSRF-ADMIN@" and "@CSRF-READ@" replaced by the
 * token (malloc'd, *outn bytes). */
static uint8_t *with_tokens(const uint8_t *data, size_t size, size_t *outn)
{
    static const char adm[] = "@CSRF-ADMIN@", rd[] = "@CSRF-READ@";
    size_t cap = size + 1, n = 0;
    uint8_t *out = tq_malloc(cap);
    for (size_t i = 0; i < size;) {
        const char *tok = NULL;
        size_t skip = 0;
        if (size - i >= sizeof adm - 1 && memcmp(data + i, adm, sizeof adm - 1) == 0)
            tok = g.csrf_admin, skip = sizeof adm - 1;
        else if (size - i >= sizeof rd - 1 && memcmp(data + i, rd, sizeof rd - 1) == 0)
            tok = g.csrf_read, skip = sizeof rd - 1;
        size_t add = tok ? strlen(tok) : 1;
        if (n + add > cap) {
            cap = 2 * cap + add;
            out = tq_realloc(out, cap);
        }
        if (tok)
            memcpy(out + n, tok, add);
        else
            out[n] = data[i];
        n += add;
        i += tok ? skip : 1;
    }
    *outn = n;
    return out;
}

static const char health[] = "GET /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Authorization: Bearer " FUZZ_ADMIN_SECRET "\r\n"
                             "Connection: close\r\n\r\n";

/* The server still answers: the health request gets 200 within
 * FUZZ_HEALTH_MS (refused connections are retried). */
static void check_health(void)
{
    int64_t deadline = tq_mono_ms() + FUZZ_HEALTH_MS;
    for (;;) {
        char *r;
        size_t n;
        int refused = exchange((const uint8_t *)health, sizeof health - 1, &r, &n);
        unsigned st = refused || n == 0 ? 0 : check_responses(r, n, 1);
        free(r);
        if (st == 200)
            return;
        if (st != 0 || tq_mono_ms() > deadline) {
            fprintf(stderr, "http_fuzz: health request: status %u\n", st);
            die("the server no longer answers the health request");
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g.http) {
        start();
        fetch_csrf(FUZZ_ADMIN_SECRET, g.csrf_admin, sizeof g.csrf_admin);
        fetch_csrf(FUZZ_READ_SECRET, g.csrf_read, sizeof g.csrf_read);
    }
    char *r;
    size_t n, inn;
    uint8_t *in = with_tokens(data, size, &inn);
    if (exchange(in, inn, &r, &n) == 0) {
        unsigned st = check_responses(r, n, has_credentials(data, size));
        if (getenv("TQ_HTTP_FUZZ_VERBOSE")) /* the first status of each input */
            fprintf(stderr, "http_fuzz: %zu bytes in, %zu out, status %u\n", size, n, st);
    }
    free(r);
    free(in);
    check_health();
    return 0;
}
