/* zref.c - taskq-zref, the plain-ZeroMQ reference of scripts/bench.
 *
 * The same `square` tasks as taskq's W1 and W2, moved through the
 * smallest broker ZeroMQ allows: one ROUTER, credit-based dispatch,
 * round-robin, one message per task, no journal, no leases, no retries.
 * scripts/bench prints each taskq figure as a ratio to this one, measured
 * in the same run on the same machine. Not linked into taskq: it uses
 * libzmq only. bench/README.md has the message layouts.
 *
 *   taskq-zref broker   --bind ENDPOINT [--curve] [--ready-fd FD]
 *   taskq-zref worker   --connect ENDPOINT --slots N [--curve]
 *   taskq-zref producer --connect ENDPOINT --n N [--window W] [--curve] ...
 *   taskq-zref latency  --connect ENDPOINT --n N [--curve] ...
 *   taskq-zref bench    [--n N] [--curve] [--workers W] [--slots S] ...
 *
 * --payload-size P (W3) replaces the integer payloads by P-byte ones
 * that the workers echo back unchanged.  *   taskq-zref keys
 *
 * Exit status: 0 done, 1 failure at run time (timeout, wrong result,
 * a child that failed), 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

/* ---- limits: every size a peer or a flag controls ------------------------- */

/* A payload is a decimal integer; 64 bytes is far more than any int64. */
#define ZREF_MAX_PAYLOAD 64
/* Result text: "n * n = n²" or an error sentence. */
#define ZREF_MAX_TEXT 256
/* --payload-size (W3): echo payloads of this many bytes at most; the
 * broker accepts payloads and result texts up to this size. The first
 * ZREF_TAG_DIGITS bytes of such a payload are the tag in decimal. */
#define ZREF_MAX_BIG_PAYLOAD 65536
#define ZREF_TAG_DIGITS 20
/* ZeroMQ routing ids are 1..255 bytes. */
#define ZREF_MAX_ROUTING_ID 255
/* The largest message any peer may send (TASK/DONE with a full routing
 * id); ZMQ_MAXMSGSIZE drops a peer that sends more. */
#define ZREF_MAX_MSG (2 + ZREF_MAX_ROUTING_ID + 8 + 1 + ZREF_MAX_BIG_PAYLOAD)
/* Workers the broker keeps; a READY beyond this is ignored. */
#define ZREF_MAX_WORKERS 256
/* Slots one worker may announce. */
#define ZREF_MAX_SLOTS 10000
/* Tasks the broker queues while no worker has credit; beyond this a
 * SUBMIT is answered with a REFUSED result. */
#define ZREF_MAX_QUEUE 1000000
/* Producer window (tasks in flight). */
#define ZREF_MAX_WINDOW 100000
/* High-water marks: above any window plus any credit, so a well-behaved
 * peer never meets them; a producer that stops reading loses results
 * (the broker never blocks on it). */
#define ZREF_HWM 250000
/* Tasks one producer run may ask for (it keeps one bit per task). */
#define ZREF_MAX_N 100000000ULL
/* Round trips one latency run may ask for (it keeps every sample). */
#define ZREF_MAX_LATENCY_N 10000000ULL
/* Untimed round trips before W2 counts, as scripts/bench_latency.c. */
#define ZREF_LATENCY_WARMUP 50
#define ZREF_DEFAULT_TIMEOUT_S 120
#define ZREF_MAX_TIMEOUT_S 86400
/* |n| above this has a square beyond 64 bits. */
#define ZREF_MAX_SQUARE_ROOT 3037000499ULL

/* ---- wire: the first byte of each message body is its type ---------------- */

enum {
    MSG_READY = 1,        /* worker -> broker: u32 slots */
    MSG_BYE = 2,          /* worker -> broker: (nothing) */
    MSG_SUBMIT = 3,       /* producer -> broker: u64 tag, payload */
    MSG_TASK = 4,         /* broker -> worker: u8 len, producer id, u64 tag, payload */
    MSG_DONE = 5,         /* worker -> broker: u8 len, producer id, u64 tag, u8 status, text */
    MSG_RESULT = 6,       /* broker -> producer: u64 tag, u8 status, text */
    MSG_STATUS = 7,       /* producer -> broker: (nothing) */
    MSG_STATUS_REPLY = 8, /* broker -> producer: u32 workers, u32 credit, u32 queued */
};

enum { ST_OK = 0, ST_FAILED = 1, ST_REFUSED = 2 };

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- small helpers --------------------------------------------------------- */

static const char *g_role = "zref";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "taskq-zref %s: %s\n", g_role, line);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Parse s as decimal digits only, in [min, max]. Returns 0 or -1. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s || strlen(s) > 20)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static volatile sig_atomic_t g_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* SIGINT/SIGTERM set g_stop and interrupt blocking calls (no SA_RESTART). */
static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- options ---------------------------------------------------------------- */

/* Settings of every mode; each mode reads the ones it has. */
typedef struct {
    const char *endpoint;
    bool curve, pin;
    uint64_t n, window, slots, workers, latency_n, timeout_s;
    int64_t wait_workers;  /* -1: do not wait */
    int ready_fd;          /* -1: none */
    uint64_t payload_size; /* 0: integer payloads for `square`; else echo */
} opts_t;

/* opts_t.payload_size of this process: producer, latency and bench
 * build and check payloads with it, a worker echoes when it is set. */
static uint64_t g_payload_size;

static const char *const usage_text =
    "usage: taskq-zref broker   --bind ENDPOINT [--curve] [--ready-fd FD]\n"
    "       taskq-zref worker   --connect ENDPOINT [--slots N] [--curve] [--payload-size P]\n"
    "       taskq-zref producer --connect ENDPOINT --n N [--window W] [--wait-workers K]\n"
    "                           [--timeout S] [--curve] [--payload-size P]\n"
    "       taskq-zref latency  --connect ENDPOINT --n N [--wait-workers K] [--timeout S] "
    "[--curve]\n"
    "                           [--payload-size P]\n"
    "       taskq-zref bench    [--n N] [--latency-n N] [--workers W] [--slots S] [--window W]\n"
    "                           [--timeout S] [--curve] [--pin] [--payload-size P]\n"
    "       taskq-zref keys\n"
    "With --curve, keys come from ZREF_SERVER_PUBLIC, ZREF_SERVER_SECRET, ZREF_CLIENT_PUBLIC\n"
    "and ZREF_CLIENT_SECRET (Z85); `eval \"$(taskq-zref keys)\"` sets them. bench makes its own.\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    if (fmt) {
        char line[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fprintf(stderr, "taskq-zref: %s\n", line);
    }
    fputs(usage_text, stderr);
    return 2;
}

/* Flags allowed per mode, as a space-separated list. */
static bool flag_allowed(const char *allowed, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = allowed; (p = strstr(p, flag)) != NULL; p += n)
        if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

/* Parse argv[2..] for the mode; returns 0, or 2 after printing usage. */
static int parse_opts(int argc, char **argv, const char *allowed, opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->window = 64;
    o->slots = 2;
    o->workers = 2;
    o->n = 200000;
    o->latency_n = 2000;
    o->timeout_s = ZREF_DEFAULT_TIMEOUT_S;
    o->wait_workers = -1;
    o->ready_fd = -1;
    for (int i = 2; i < argc; i++) {
        char name[32];
        const char *arg = argv[i], *val = NULL, *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) != 0)
            return usage("unexpected argument '%.64s'", arg);
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof name)
            return usage("unknown flag '%.64s'", arg);
        memcpy(name, arg, len);
        name[len] = '\0';
        if (!flag_allowed(allowed, name))
            return usage("unknown flag '%s' for %s", name, argv[1]);
        if (strcmp(name, "--curve") == 0 || strcmp(name, "--pin") == 0) {
            if (eq)
                return usage("%s takes no value", name);
            if (name[2] == 'c')
                o->curve = true;
            else
                o->pin = true;
            continue;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return usage("%s needs a value", name);
        uint64_t v = 0;
        if (strcmp(name, "--bind") == 0 || strcmp(name, "--connect") == 0) {
            if (!*val || strlen(val) > 200)
                return usage("%s: endpoint must be 1..200 characters", name);
            o->endpoint = val;
        } else if (strcmp(name, "--n") == 0) {
            if (parse_u64(val, 1, ZREF_MAX_N, &v) != 0)
                return usage("--n must be 1..%llu", (unsigned long long)ZREF_MAX_N);
            o->n = v;
        } else if (strcmp(name, "--latency-n") == 0) {
            if (parse_u64(val, 1, ZREF_MAX_LATENCY_N, &v) != 0)
                return usage("--latency-n must be 1..%llu", (unsigned long long)ZREF_MAX_LATENCY_N);
            o->latency_n = v;
        } else if (strcmp(name, "--window") == 0) {
            if (parse_u64(val, 1, ZREF_MAX_WINDOW, &v) != 0)
                return usage("--window must be 1..%d", ZREF_MAX_WINDOW);
            o->window = v;
        } else if (strcmp(name, "--slots") == 0) {
            if (parse_u64(val, 1, ZREF_MAX_SLOTS, &v) != 0)
                return usage("--slots must be 1..%d", ZREF_MAX_SLOTS);
            o->slots = v;
        } else if (strcmp(name, "--workers") == 0) {
            if (parse_u64(val, 1, 64, &v) != 0)
                return usage("--workers must be 1..64");
            o->workers = v;
        } else if (strcmp(name, "--wait-workers") == 0) {
            if (parse_u64(val, 0, ZREF_MAX_WORKERS, &v) != 0)
                return usage("--wait-workers must be 0..%d", ZREF_MAX_WORKERS);
            o->wait_workers = (int64_t)v;
        } else if (strcmp(name, "--timeout") == 0) {
            if (parse_u64(val, 1, ZREF_MAX_TIMEOUT_S, &v) != 0)
                return usage("--timeout must be 1..%d seconds", ZREF_MAX_TIMEOUT_S);
            o->timeout_s = v;
        } else if (strcmp(name, "--payload-size") == 0) {
            if (parse_u64(val, 0, ZREF_MAX_BIG_PAYLOAD, &v) != 0 || (v != 0 && v < ZREF_TAG_DIGITS))
                return usage("--payload-size must be 0 (integers) or %d..%d bytes", ZREF_TAG_DIGITS,
                             ZREF_MAX_BIG_PAYLOAD);
            o->payload_size = v;
        } else if (strcmp(name, "--ready-fd") == 0) {
            if (parse_u64(val, 0, 65535, &v) != 0)
                return usage("--ready-fd must be a file descriptor number");
            o->ready_fd = (int)v;
        } else {
            return usage("unknown flag '%s'", name);
        }
    }
    return 0;
}

/* ---- CURVE keys --------------------------------------------------------------- */

typedef struct {
    char server_public[41], server_secret[41], client_public[41], client_secret[41];
} keys_t;

/* Copy the Z85 key in env variable `name` into out[41]. Returns 0, or -1
 * with a message when it is missing or not a 32-byte Z85 key. */
static int key_from_env(const char *name, char out[41])
{
    const char *v = getenv(name);
    uint8_t raw[32];
    if (!v || strlen(v) != 40 || !zmq_z85_decode(raw, v)) {
        say("--curve needs %s set to a 40-character Z85 key (eval \"$(taskq-zref keys)\")", name);
        return -1;
    }
    memcpy(out, v, 41);
    return 0;
}

static int keys_load(keys_t *k, bool server)
{
    if (key_from_env("ZREF_SERVER_PUBLIC", k->server_public) != 0)
        return -1;
    if (server)
        return key_from_env("ZREF_SERVER_SECRET", k->server_secret);
    if (key_from_env("ZREF_CLIENT_PUBLIC", k->client_public) != 0 ||
        key_from_env("ZREF_CLIENT_SECRET", k->client_secret) != 0)
        return -1;
    return 0;
}

/* New keys for a server and one client (not secret: a benchmark). */
static int keys_generate(keys_t *k)
{
    if (zmq_curve_keypair(k->server_public, k->server_secret) != 0 ||
        zmq_curve_keypair(k->client_public, k->client_secret) != 0) {
        say("zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

/* ---- sockets ---------------------------------------------------------------- */

static int setopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

/* Options every socket gets: bounded messages, HWMs, no linger. */
static int socket_common(void *s)
{
    int64_t maxmsg = ZREF_MAX_MSG;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        setopt_int(s, ZMQ_SNDHWM, ZREF_HWM) != 0 || setopt_int(s, ZMQ_RCVHWM, ZREF_HWM) != 0 ||
        setopt_int(s, ZMQ_LINGER, 0) != 0)
        return -1;
    return 0;
}

/* A DEALER connected to endpoint, a CURVE client when keys is not NULL.
 * Returns the socket (owned by ctx's caller) or NULL with a message. */
static void *client_socket(void *ctx, const char *endpoint, const keys_t *keys)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s) {
        say("zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    if (socket_common(s) != 0 ||
        (keys && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, keys->server_public, 40) != 0 ||
                  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, keys->client_public, 40) != 0 ||
                  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, keys->client_secret, 40) != 0))) {
        say("socket options: %s", zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    if (zmq_connect(s, endpoint) != 0) {
        say("cannot connect to '%s': %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Receive one single-frame message into buf[cap] before deadline.
 * Returns its length; -1 on timeout or error (with a message); a
 * multipart or oversized message is skipped (returns -2). */
static int recv_until(void *s, uint8_t *buf, size_t cap, int64_t deadline)
{
    for (;;) {
        int n = zmq_recv(s, buf, cap, ZMQ_DONTWAIT);
        if (n >= 0) {
            int more = 0;
            size_t ml = sizeof more;
            zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
            if (!more && (size_t)n <= cap)
                return n;
            while (more) { /* drain the rest of a malformed message */
                zmq_recv(s, buf, cap, 0);
                zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
            }
            return -2;
        }
        if (zmq_errno() != EAGAIN && zmq_errno() != EINTR) {
            say("receive: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        long ms = (long)(left / 1000000) + 1;
        zmq_poll(&it, 1, ms > 1000 ? 1000 : ms);
    }
}

/* Send one single-frame message before deadline. Returns 0 or -1. */
static int send_until(void *s, const uint8_t *buf, size_t len, int64_t deadline)
{
    for (;;) {
        if (zmq_send(s, buf, len, ZMQ_DONTWAIT) >= 0)
            return 0;
        if (zmq_errno() != EAGAIN && zmq_errno() != EINTR) {
            say("send: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        zmq_pollitem_t it = {s, 0, ZMQ_POLLOUT, 0};
        long ms = (long)(left / 1000000) + 1;
        zmq_poll(&it, 1, ms > 1000 ? 1000 : ms);
    }
}

/* ---- broker ----------------------------------------------------------------- */

typedef struct {
    uint8_t id[ZREF_MAX_ROUTING_ID];
    size_t idlen;
    uint32_t slots, out; /* credit = slots - out */
} zworker_t;

typedef struct {
    void *sock;
    zworker_t *workers;
    size_t nworkers, rr;
    uint64_t credit;  /* sum of every worker's credit */
    zmq_msg_t *queue; /* ring of ready-made TASK bodies */
    size_t qcap, qhead, qlen;
    uint64_t bad, lost_results, refused;
} broker_t;

static zworker_t *broker_find(broker_t *b, const uint8_t *id, size_t idlen)
{
    for (size_t i = 0; i < b->nworkers; i++)
        if (b->workers[i].idlen == idlen && memcmp(b->workers[i].id, id, idlen) == 0)
            return &b->workers[i];
    return NULL;
}

static void broker_remove(broker_t *b, zworker_t *w)
{
    size_t i = (size_t)(w - b->workers);
    b->credit -= w->out < w->slots ? w->slots - w->out : 0;
    b->workers[i] = b->workers[--b->nworkers];
    if (b->rr >= b->nworkers)
        b->rr = 0;
}

/* Send body to the peer `id` without blocking. Returns 0 (body consumed)
 * or -1 (peer unknown or full; body still owned by the caller). */
static int broker_send(broker_t *b, const uint8_t *id, size_t idlen, zmq_msg_t *body)
{
    if (zmq_send(b->sock, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /* After the routing frame was accepted, the body cannot be refused. */
    if (zmq_msg_send(body, b->sock, ZMQ_DONTWAIT) < 0) {
        say("send after the routing frame: %s", zmq_strerror(zmq_errno()));
        abort();
    }
    return 0;
}

/* Reply to a producer; a producer that left or stopped reading loses it. */
static void broker_reply(broker_t *b, const uint8_t *id, size_t idlen, const uint8_t *body,
                         size_t len)
{
    zmq_msg_t m;
    zmq_msg_init_size(&m, len);
    memcpy(zmq_msg_data(&m), body, len);
    if (broker_send(b, id, idlen, &m) != 0) {
        b->lost_results++;
        zmq_msg_close(&m);
    }
}

static void broker_refuse(broker_t *b, const uint8_t *id, size_t idlen, uint64_t tag,
                          const char *why)
{
    uint8_t out[1 + 8 + 1 + ZREF_MAX_TEXT];
    size_t n = strlen(why);
    out[0] = MSG_RESULT;
    put_u64(out + 1, tag);
    out[9] = ST_REFUSED;
    memcpy(out + 10, why, n);
    broker_reply(b, id, idlen, out, 10 + n);
    b->refused++;
}

/* Hand queued tasks to workers with credit, round-robin, one at a time,
 * never beyond a worker's credit. */
static void broker_dispatch(broker_t *b)
{
    while (b->qlen > 0 && b->credit > 0) {
        zworker_t *w = NULL;
        for (size_t k = 0; k < b->nworkers; k++) {
            zworker_t *c = &b->workers[(b->rr + k) % b->nworkers];
            if (c->out < c->slots) {
                w = c;
                b->rr = (b->rr + k + 1) % b->nworkers;
                break;
            }
        }
        if (!w) {
            say("credit count %" PRIu64 " without a worker with credit", b->credit);
            abort();
        }
        if (broker_send(b, w->id, w->idlen, &b->queue[b->qhead]) != 0) {
            broker_remove(b, w); /* gone without BYE: forget it, keep the task */
            continue;
        }
        w->out++;
        b->credit--;
        zmq_msg_close(&b->queue[b->qhead]);
        b->qhead = (b->qhead + 1) % b->qcap;
        b->qlen--;
    }
}

/* Append a TASK body (moved from m) to the queue. Returns 0 or -1 (full). */
static int broker_enqueue(broker_t *b, zmq_msg_t *m)
{
    if (b->qlen == b->qcap) {
        if (b->qcap >= ZREF_MAX_QUEUE)
            return -1;
        size_t ncap = b->qcap ? b->qcap * 2 : 1024;
        if (ncap > ZREF_MAX_QUEUE)
            ncap = ZREF_MAX_QUEUE;
        zmq_msg_t *nq = malloc(ncap * sizeof *nq);
        if (!nq)
            return -1;
        for (size_t i = 0; i < b->qlen; i++) {
            zmq_msg_init(&nq[i]);
            zmq_msg_move(&nq[i], &b->queue[(b->qhead + i) % b->qcap]);
            zmq_msg_close(&b->queue[(b->qhead + i) % b->qcap]);
        }
        free(b->queue);
        b->queue = nq;
        b->qcap = ncap;
        b->qhead = 0;
    }
    zmq_msg_t *slot = &b->queue[(b->qhead + b->qlen) % b->qcap];
    zmq_msg_init(slot);
    zmq_msg_move(slot, m);
    b->qlen++;
    return 0;
}

/* One message from peer `id`: body[len]. */
static void broker_handle(broker_t *b, const uint8_t *id, size_t idlen, const uint8_t *body,
                          size_t len)
{
    if (len == 0) {
        b->bad++;
        return;
    }
    switch (body[0]) {
    case MSG_READY: {
        uint32_t slots = len == 5 ? get_u32(body + 1) : 0;
        if (slots < 1 || slots > ZREF_MAX_SLOTS) {
            b->bad++;
            return;
        }
        zworker_t *w = broker_find(b, id, idlen);
        if (!w) {
            if (b->nworkers == ZREF_MAX_WORKERS) {
                b->bad++;
                return;
            }
            w = &b->workers[b->nworkers++];
            memcpy(w->id, id, idlen);
            w->idlen = idlen;
            w->slots = w->out = 0;
        }
        /* A second READY replaces the slot count. */
        b->credit -= w->out < w->slots ? w->slots - w->out : 0;
        w->slots = slots;
        b->credit += w->out < w->slots ? w->slots - w->out : 0;
        broker_dispatch(b);
        return;
    }
    case MSG_BYE: {
        zworker_t *w = broker_find(b, id, idlen);
        if (w)
            broker_remove(b, w);
        return;
    }
    case MSG_SUBMIT: {
        if (len < 9 || len - 9 > ZREF_MAX_BIG_PAYLOAD) {
            b->bad++;
            if (len >= 9)
                broker_refuse(b, id, idlen, get_u64(body + 1), "broker: payload too large");
            return;
        }
        zmq_msg_t m;
        zmq_msg_init_size(&m, 2 + idlen + (len - 1));
        uint8_t *p = zmq_msg_data(&m);
        p[0] = MSG_TASK;
        p[1] = (uint8_t)idlen;
        memcpy(p + 2, id, idlen);
        memcpy(p + 2 + idlen, body + 1, len - 1);
        if (broker_enqueue(b, &m) != 0) {
            zmq_msg_close(&m);
            broker_refuse(b, id, idlen, get_u64(body + 1), "broker: queue full");
            return;
        }
        broker_dispatch(b);
        return;
    }
    case MSG_DONE: {
        zworker_t *w = broker_find(b, id, idlen);
        size_t pl = len >= 2 ? body[1] : 0;
        if (!w || w->out == 0 || len < 2 || pl == 0 || len - 2 < pl + 9 ||
            len - 2 - pl - 9 > ZREF_MAX_BIG_PAYLOAD) {
            b->bad++; /* not a worker, or a result it was not given */
            return;
        }
        w->out--;
        b->credit++;
        /* RESULT = type + the tag, status and text that follow the id. */
        const uint8_t *rest = body + 2 + pl;
        size_t rlen = len - 2 - pl;
        zmq_msg_t m;
        zmq_msg_init_size(&m, 1 + rlen);
        uint8_t *p = zmq_msg_data(&m);
        p[0] = MSG_RESULT;
        memcpy(p + 1, rest, rlen);
        if (broker_send(b, body + 2, pl, &m) != 0) {
            b->lost_results++;
            zmq_msg_close(&m);
        }
        broker_dispatch(b);
        return;
    }
    case MSG_STATUS: {
        uint8_t out[13];
        out[0] = MSG_STATUS_REPLY;
        put_u32(out + 1, (uint32_t)b->nworkers);
        put_u32(out + 5, b->credit > UINT32_MAX ? UINT32_MAX : (uint32_t)b->credit);
        put_u32(out + 9, (uint32_t)b->qlen);
        broker_reply(b, id, idlen, out, sizeof out);
        return;
    }
    default: b->bad++; return;
    }
}

static int run_broker(const opts_t *o)
{
    g_role = "broker";
    keys_t keys;
    if (!o->endpoint)
        return usage("broker needs --bind ENDPOINT");
    if (o->curve && keys_load(&keys, true) != 0)
        return 2;
    install_stop_handlers();
    broker_t b;
    memset(&b, 0, sizeof b);
    b.workers = calloc(ZREF_MAX_WORKERS, sizeof *b.workers);
    void *ctx = zmq_ctx_new();
    if (!b.workers || !ctx) {
        say("out of memory");
        return 1;
    }
    b.sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (!b.sock || socket_common(b.sock) != 0 || setopt_int(b.sock, ZMQ_ROUTER_MANDATORY, 1) != 0 ||
        setopt_int(b.sock, ZMQ_RCVTIMEO, 1000) != 0 ||
        (o->curve && (setopt_int(b.sock, ZMQ_CURVE_SERVER, 1) != 0 ||
                      zmq_setsockopt(b.sock, ZMQ_CURVE_SECRETKEY, keys.server_secret, 40) != 0))) {
        say("socket options: %s", zmq_strerror(zmq_errno()));
        return 1;
    }
    if (zmq_bind(b.sock, o->endpoint) != 0) {
        say("cannot bind '%s': %s", o->endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    if (o->ready_fd >= 0) {
        /* Tell the parent where we listen (the port of "...:*"). */
        char ep[256], line[260];
        size_t el = sizeof ep;
        if (zmq_getsockopt(b.sock, ZMQ_LAST_ENDPOINT, ep, &el) != 0)
            ep[0] = '\0';
        int n = snprintf(line, sizeof line, "%s\n", ep);
        if (write(o->ready_fd, line, (size_t)n) != n)
            say("cannot write to --ready-fd %d: %s", o->ready_fd, strerror(errno));
        close(o->ready_fd);
    }
    uint8_t id[ZREF_MAX_ROUTING_ID + 1];
    while (!g_stop) {
        int idlen = zmq_recv(b.sock, id, sizeof id, 0);
        if (idlen < 0) {
            if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
                continue;
            say("receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(b.sock, ZMQ_RCVMORE, &more, &ml);
        if (!more || idlen < 1 || idlen > ZREF_MAX_ROUTING_ID) {
            b.bad++;
            continue;
        }
        zmq_msg_t body;
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, b.sock, 0) < 0) { /* the rest of a message is already here */
            zmq_msg_close(&body);
            continue;
        }
        if (zmq_msg_more(&body)) { /* one frame per message: drain and drop */
            b.bad++;
            do {
                zmq_msg_close(&body);
                zmq_msg_init(&body);
            } while (zmq_msg_recv(&body, b.sock, 0) >= 0 && zmq_msg_more(&body));
        } else {
            broker_handle(&b, id, (size_t)idlen, zmq_msg_data(&body), zmq_msg_size(&body));
        }
        zmq_msg_close(&body);
    }
    if (b.bad || b.lost_results || b.refused)
        say("dropped %" PRIu64 " malformed messages, %" PRIu64
            " undeliverable results, refused %" PRIu64 " tasks",
            b.bad, b.lost_results, b.refused);
    for (size_t i = 0; i < b.qlen; i++)
        zmq_msg_close(&b.queue[(b.qhead + i) % b.qcap]);
    free(b.queue);
    free(b.workers);
    zmq_close(b.sock);
    zmq_ctx_term(ctx);
    return 0;
}

/* ---- worker ----------------------------------------------------------------- */

/* The tutorial's square: payload p[n] is a decimal integer (optional
 * sign); text gets "n * n = n²" (ST_OK) or an error (ST_FAILED).
 * Returns the status; *tlen is the text length. */
static int square(const uint8_t *p, size_t n, char *text, size_t cap, size_t *tlen)
{
    size_t i = 0;
    bool neg = false;
    uint64_t mag = 0;
    bool ok = n > 0 && n <= 20;
    if (ok && (p[0] == '+' || p[0] == '-'))
        neg = p[i++] == '-';
    ok = ok && i < n;
    for (; ok && i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || mag > ZREF_MAX_SQUARE_ROOT)
            ok = false;
        else
            mag = mag * 10 + (uint64_t)(p[i] - '0');
    }
    int w;
    int st = ST_OK;
    if (!ok || mag > ZREF_MAX_SQUARE_ROOT) {
        w = snprintf(text, cap, "square: payload is not an integer whose square fits 64 bits");
        st = ST_FAILED;
    } else {
        w = snprintf(text, cap, "%s%" PRIu64 " * %s%" PRIu64 " = %" PRIu64, neg && mag ? "-" : "",
                     mag, neg && mag ? "-" : "", mag, mag * mag);
    }
    *tlen = w < 0 ? 0 : (size_t)w >= cap ? cap - 1 : (size_t)w;
    return st;
}

static int run_worker(const opts_t *o)
{
    g_role = "worker";
    keys_t keys;
    if (!o->endpoint)
        return usage("worker needs --connect ENDPOINT");
    if (o->curve && keys_load(&keys, false) != 0)
        return 2;
    install_stop_handlers();
    void *ctx = zmq_ctx_new();
    void *s = ctx ? client_socket(ctx, o->endpoint, o->curve ? &keys : NULL) : NULL;
    if (!s || setopt_int(s, ZMQ_RCVTIMEO, 500) != 0)
        return 1;
    uint8_t ready[5];
    ready[0] = MSG_READY;
    put_u32(ready + 1, (uint32_t)o->slots);
    if (zmq_send(s, ready, sizeof ready, 0) < 0) {
        say("send READY: %s", zmq_strerror(zmq_errno()));
        return 1;
    }
    uint8_t in[ZREF_MAX_MSG], out[ZREF_MAX_MSG];
    uint64_t bad = 0;
    while (!g_stop) {
        int n = zmq_recv(s, in, sizeof in, 0);
        if (n < 0) {
            if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
                continue;
            say("receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        size_t len = (size_t)n, pl = len >= 2 ? in[1] : 0;
        if (len > sizeof in || len < 2 || in[0] != MSG_TASK || pl == 0 || len - 2 < pl + 8) {
            bad++;
            continue;
        }
        /* DONE = type, the id and tag as received, status, text. */
        size_t head = 2 + pl + 8, tlen = 0;
        out[0] = MSG_DONE;
        memcpy(out + 1, in + 1, head - 1);
        int st = ST_OK;
        if (g_payload_size) { /* W3: the result is the payload */
            tlen = len - head;
            memcpy(out + head + 1, in + head, tlen);
        } else {
            st = square(in + head, len - head, (char *)out + head + 1, ZREF_MAX_TEXT + 1, &tlen);
        }
        out[head] = (uint8_t)st;
        while (zmq_send(s, out, head + 1 + tlen, 0) < 0) {
            if (zmq_errno() != EINTR || g_stop)
                break;
        }
    }
    /* Tell the broker to forget our credit, and give the BYE a moment. */
    uint8_t bye = MSG_BYE;
    setopt_int(s, ZMQ_LINGER, 1000);
    zmq_send(s, &bye, 1, ZMQ_DONTWAIT);
    if (bad)
        say("dropped %" PRIu64 " malformed messages", bad);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}

/* ---- producer (W1) and latency (W2) ---------------------------------------- */

/* Wait until the broker answers STATUS with exactly `want` workers (any
 * number when want < 0): the connection (and CURVE handshake) is up
 * and the workers are registered before the clock starts. 0 or -1. */
static int wait_broker(void *s, int64_t want, int64_t deadline)
{
    uint8_t st = MSG_STATUS, buf[ZREF_MAX_MSG];
    for (;;) {
        if (send_until(s, &st, 1, deadline) != 0)
            break;
        int64_t reply_by = now_ns() + 1000000000;
        for (;;) {
            int n = recv_until(s, buf, sizeof buf, reply_by < deadline ? reply_by : deadline);
            if (n == -1)
                break; /* no reply in 1 s: ask again, or time out */
            if (n == 13 && buf[0] == MSG_STATUS_REPLY) {
                if (want < 0 || get_u32(buf + 1) == (uint32_t)want)
                    return 0;
                struct timespec ts = {0, 10000000};
                nanosleep(&ts, NULL);
                break;
            }
        }
        if (now_ns() >= deadline)
            break;
    }
    if (want < 0)
        say("no answer from the broker in time");
    else
        say("the broker did not report exactly %" PRId64 " worker(s) in time", want);
    return -1;
}

/* Filler of --payload-size payloads after the tag digits (printable). */
static uint8_t g_filler[ZREF_MAX_BIG_PAYLOAD];

static void filler_init(void)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < sizeof g_filler; i++)
        g_filler[i] = (uint8_t)alphabet[i % (sizeof alphabet - 1)];
}

/* SUBMIT for task `tag` into buf (16 + ZREF_MAX_BIG_PAYLOAD bytes): the
 * decimal tag, or with --payload-size the tag in ZREF_TAG_DIGITS zero-
 * padded digits and filler up to the size. Returns the length. */
static size_t submit_msg(uint8_t *buf, uint64_t tag)
{
    buf[0] = MSG_SUBMIT;
    put_u64(buf + 1, tag);
    if (g_payload_size) {
        char digits[ZREF_TAG_DIGITS + 1];
        snprintf(digits, sizeof digits, "%0*" PRIu64, ZREF_TAG_DIGITS, tag);
        memcpy(buf + 9, digits, ZREF_TAG_DIGITS);
        memcpy(buf + 9 + ZREF_TAG_DIGITS, g_filler, g_payload_size - ZREF_TAG_DIGITS);
        return 9 + g_payload_size;
    }
    int n = snprintf((char *)buf + 9, ZREF_MAX_PAYLOAD + 1, "%" PRIu64, tag);
    return 9 + (size_t)n;
}

/* With --payload-size: is RESULT text t[n] the echo of task tag's payload? */
static bool echo_ok(const uint8_t *t, size_t n, uint64_t tag)
{
    char digits[ZREF_TAG_DIGITS + 1];
    snprintf(digits, sizeof digits, "%0*" PRIu64, ZREF_TAG_DIGITS, tag);
    return n == g_payload_size && memcmp(t, digits, ZREF_TAG_DIGITS) == 0 &&
           memcmp(t + ZREF_TAG_DIGITS, g_filler, n - ZREF_TAG_DIGITS) == 0;
}

/* Check RESULT buf[n] for a task in 1..max; sets *tag. 0 or -1. */
static int check_result(const uint8_t *buf, int n, uint64_t max, uint64_t *tag)
{
    if (n < 10 || buf[0] != MSG_RESULT)
        return n == 13 && buf[0] == MSG_STATUS_REPLY ? 1 : -1; /* late STATUS reply: ignore */
    *tag = get_u64(buf + 1);
    if (g_payload_size) {
        if (*tag < 1 || *tag > max || buf[9] != ST_OK || !echo_ok(buf + 10, (size_t)n - 10, *tag)) {
            say("wrong result for task %" PRIu64 ": status %u, %d bytes", *tag, buf[9], n - 10);
            return -1;
        }
        return 0;
    }
    char want[96];
    int wl = snprintf(want, sizeof want, "%" PRIu64 " * %" PRIu64 " = %" PRIu64, *tag, *tag,
                      *tag * *tag);
    if (*tag < 1 || *tag > max || buf[9] != ST_OK || (size_t)n - 10 != (size_t)wl ||
        memcmp(buf + 10, want, (size_t)wl) != 0) {
        say("wrong result for task %" PRIu64 ": status %u, '%.*s'", *tag, buf[9],
            n - 10 > 80 ? 80 : n - 10, (const char *)buf + 10);
        return -1;
    }
    return 0;
}

static int run_producer(const opts_t *o)
{
    g_role = "producer";
    keys_t keys;
    if (!o->endpoint)
        return usage("producer needs --connect ENDPOINT");
    if (o->curve && keys_load(&keys, false) != 0)
        return 2;
    int64_t deadline = now_ns() + (int64_t)o->timeout_s * 1000000000;
    void *ctx = zmq_ctx_new();
    void *s = ctx ? client_socket(ctx, o->endpoint, o->curve ? &keys : NULL) : NULL;
    uint8_t *seen = calloc(o->n / 8 + 1, 1);
    if (!s || !seen || wait_broker(s, o->wait_workers, deadline) != 0)
        return 1;
    static uint8_t out[16 + ZREF_MAX_BIG_PAYLOAD], in[ZREF_MAX_MSG];
    uint64_t sent = 0, got = 0;
    int64_t t0 = now_ns();
    while (got < o->n) {
        while (sent < o->n && sent - got < o->window) {
            size_t len = submit_msg(out, ++sent);
            if (send_until(s, out, len, deadline) != 0) {
                say("timed out submitting after %" PRIu64 " s", o->timeout_s);
                return 1;
            }
        }
        int n = recv_until(s, in, sizeof in, deadline);
        if (n == -1) {
            say("timed out after %" PRIu64 " s with %" PRIu64 " of %" PRIu64 " results",
                o->timeout_s, got, o->n);
            return 1;
        }
        uint64_t tag = 0;
        int rc = n < 0 ? -1 : check_result(in, n, o->n, &tag);
        if (rc > 0)
            continue;
        if (rc < 0)
            return 1;
        if (seen[tag / 8] & (1u << (tag % 8))) {
            say("task %" PRIu64 " got two results", tag);
            return 1;
        }
        seen[tag / 8] |= (uint8_t)(1u << (tag % 8));
        got++;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    if (g_payload_size) /* W3: payload counted to the worker and back, 10^6 bytes */
        printf("{\"mode\":\"w1\",\"n\":%" PRIu64
               ",\"seconds\":%.3f,\"tasks_per_s\":%.0f,\"curve\":%s,"
               "\"payload_bytes\":%" PRIu64 ",\"mb_per_s\":%.1f}\n",
               o->n, secs, (double)o->n / secs, o->curve ? "true" : "false", g_payload_size,
               2.0 * (double)o->n * (double)g_payload_size / 1e6 / secs);
    else
        printf("{\"mode\":\"w1\",\"n\":%" PRIu64
               ",\"seconds\":%.3f,\"tasks_per_s\":%.0f,\"curve\":%s}\n",
               o->n, secs, (double)o->n / secs, o->curve ? "true" : "false");
    fflush(stdout);
    free(seen);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[n], in µs. */
static double percentile_us(const int64_t *v, size_t n, unsigned pct)
{
    size_t rank = (n * pct + 99) / 100;
    return (double)v[rank ? rank - 1 : 0] / 1000.0;
}

static int run_latency(const opts_t *o)
{
    g_role = "latency";
    keys_t keys;
    if (!o->endpoint)
        return usage("latency needs --connect ENDPOINT");
    if (o->curve && keys_load(&keys, false) != 0)
        return 2;
    int64_t deadline = now_ns() + (int64_t)o->timeout_s * 1000000000;
    void *ctx = zmq_ctx_new();
    void *s = ctx ? client_socket(ctx, o->endpoint, o->curve ? &keys : NULL) : NULL;
    int64_t *rtt = malloc(o->n * sizeof *rtt);
    if (!s || !rtt || wait_broker(s, o->wait_workers, deadline) != 0)
        return 1;
    static uint8_t out[16 + ZREF_MAX_BIG_PAYLOAD], in[ZREF_MAX_MSG];
    for (uint64_t i = 0; i < o->n + ZREF_LATENCY_WARMUP; i++) {
        uint64_t want = i + 1, tag = 0;
        size_t len = submit_msg(out, want);
        int64_t t0 = now_ns();
        if (send_until(s, out, len, deadline) != 0) {
            say("timed out submitting after %" PRIu64 " s", o->timeout_s);
            return 1;
        }
        int rc;
        do {
            int n = recv_until(s, in, sizeof in, deadline);
            if (n == -1) {
                say("timed out after %" PRIu64 " s at round trip %" PRIu64, o->timeout_s, i);
                return 1;
            }
            rc = n < 0 ? -1 : check_result(in, n, want, &tag);
        } while (rc > 0);
        if (rc < 0 || tag != want) {
            if (rc == 0)
                say("result for task %" PRIu64 " while waiting for %" PRIu64, tag, want);
            return 1;
        }
        if (i >= ZREF_LATENCY_WARMUP)
            rtt[i - ZREF_LATENCY_WARMUP] = now_ns() - t0;
    }
    qsort(rtt, o->n, sizeof *rtt, cmp_i64);
    printf("{\"mode\":\"w2\",\"n\":%" PRIu64 ",\"p50_us\":%.0f,\"p99_us\":%.0f,\"curve\":%s}\n",
           o->n, percentile_us(rtt, o->n, 50), percentile_us(rtt, o->n, 99),
           o->curve ? "true" : "false");
    fflush(stdout);
    free(rtt);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}

/* ---- bench: the whole run in child processes -------------------------------- */

#define BENCH_MAX_CHILDREN 80
static pid_t g_children[BENCH_MAX_CHILDREN];
static size_t g_nchildren;
/* This executable's path: exec'ing "/proc/self/exe" itself would name
 * every child "exe" in ps. */
static char g_self[4096];

/* Start `taskq-zref ARGV...` as a child (this same executable). keep_fd
 * stays open in the child (-1: none). Returns the pid or -1. */
static pid_t spawn(char *const argv[], int keep_fd)
{
    if (g_nchildren == BENCH_MAX_CHILDREN)
        return -1;
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* Die with the bench, even when it is killed with SIGKILL. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (keep_fd >= 0)
            fcntl(keep_fd, F_SETFD, 0);
        execv(g_self, argv);
        fprintf(stderr, "taskq-zref bench: exec: %s\n", strerror(errno));
        _exit(127);
    }
    g_children[g_nchildren++] = pid;
    return pid;
}

static void forget_child(pid_t pid)
{
    for (size_t i = 0; i < g_nchildren; i++)
        if (g_children[i] == pid) {
            g_children[i] = g_children[--g_nchildren];
            return;
        }
}

/* Wait for pid until deadline. Returns its exit status, or -1 on
 * timeout or interruption (the child is left running). */
static int wait_child(pid_t pid, int64_t deadline)
{
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            forget_child(pid);
            if (WIFEXITED(st))
                return WEXITSTATUS(st);
            return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        }
        if (r < 0 && errno != EINTR) {
            forget_child(pid);
            return -1;
        }
        if (g_stop || now_ns() >= deadline)
            return -1;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

/* Stop the given children: SIGTERM, up to 3 s, then SIGKILL; reaps. */
static void stop_children(const pid_t *pids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        kill(pids[i], SIGTERM);
    int64_t deadline = now_ns() + 3000000000LL;
    for (size_t i = 0; i < n; i++) {
        if (wait_child(pids[i], deadline) < 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            forget_child(pids[i]);
        }
    }
}

static void stop_all_children(void)
{
    pid_t copy[BENCH_MAX_CHILDREN];
    size_t n = g_nchildren;
    memcpy(copy, g_children, n * sizeof *copy);
    stop_children(copy, n);
}

/* Peak resident set of pid in KiB (VmHWM), or -1. */
static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Start the broker on a free loopback port; endpoint gets its address. */
static pid_t start_broker(bool curve, char *endpoint, size_t cap)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        say("pipe: %s", strerror(errno));
        return -1;
    }
    char fdtext[16];
    snprintf(fdtext, sizeof fdtext, "%d", fds[1]);
    char *argv[] = {"taskq-zref",
                    "broker",
                    "--bind",
                    "tcp://127.0.0.1:*",
                    "--ready-fd",
                    fdtext,
                    curve ? "--curve" : NULL,
                    NULL};
    pid_t pid = spawn(argv, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    struct pollfd p = {fds[0], POLLIN, 0};
    size_t got = 0;
    int64_t deadline = now_ns() + 10000000000LL;
    while (got + 1 < cap && now_ns() < deadline && !g_stop) {
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fds[0], endpoint + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (memchr(endpoint, '\n', got))
            break;
    }
    close(fds[0]);
    endpoint[got] = '\0';
    char *nl = strchr(endpoint, '\n');
    if (!nl) {
        say("the broker did not report its endpoint within 10 s");
        return -1;
    }
    *nl = '\0';
    return pid;
}

static pid_t start_worker(const char *endpoint, uint64_t slots, bool curve)
{
    char st[24], ps[24];
    snprintf(st, sizeof st, "%" PRIu64, slots);
    snprintf(ps, sizeof ps, "%" PRIu64, g_payload_size);
    char *argv[] =
        {"taskq-zref", "worker",         "--connect", (char *)endpoint,         "--slots",
         st,           "--payload-size", ps,          curve ? "--curve" : NULL, NULL};
    return spawn(argv, -1);
}

/* Run a producer or latency child to its end. Returns 0 or -1. */
static int run_client(const char *mode, const char *endpoint, uint64_t n, uint64_t window,
                      uint64_t workers, const opts_t *o)
{
    char nt[24], wt[24], kt[24], tt[24], ps[24];
    snprintf(nt, sizeof nt, "%" PRIu64, n);
    snprintf(wt, sizeof wt, "%" PRIu64, window);
    snprintf(kt, sizeof kt, "%" PRIu64, workers);
    snprintf(tt, sizeof tt, "%" PRIu64, o->timeout_s);
    snprintf(ps, sizeof ps, "%" PRIu64, g_payload_size);
    char *argv[18];
    size_t a = 0;
    argv[a++] = "taskq-zref";
    argv[a++] = (char *)mode;
    argv[a++] = "--connect";
    argv[a++] = (char *)endpoint;
    argv[a++] = "--n";
    argv[a++] = nt;
    argv[a++] = "--wait-workers";
    argv[a++] = kt;
    argv[a++] = "--timeout";
    argv[a++] = tt;
    argv[a++] = "--payload-size";
    argv[a++] = ps;
    if (strcmp(mode, "producer") == 0) {
        argv[a++] = "--window";
        argv[a++] = wt;
    }
    if (o->curve)
        argv[a++] = "--curve";
    argv[a] = NULL;
    pid_t pid = spawn(argv, -1);
    if (pid < 0)
        return -1;
    /* The child has its own --timeout; this one is a backstop. */
    int st = wait_child(pid, now_ns() + ((int64_t)o->timeout_s + 10) * 1000000000);
    if (st != 0) {
        say("%s %s", mode, st < 0 ? "did not finish in time or was interrupted" : "failed");
        return -1;
    }
    return 0;
}

static int run_bench(const opts_t *o)
{
    g_role = "bench";
    install_stop_handlers();
    ssize_t sl = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (sl <= 0 || (size_t)sl >= sizeof g_self - 1) {
        say("cannot read /proc/self/exe: %s", sl < 0 ? strerror(errno) : "path too long");
        return 1;
    }
    g_self[sl] = '\0';
    if (o->curve) {
        keys_t k;
        if (keys_generate(&k) != 0)
            return 1;
        setenv("ZREF_SERVER_PUBLIC", k.server_public, 1);
        setenv("ZREF_SERVER_SECRET", k.server_secret, 1);
        setenv("ZREF_CLIENT_PUBLIC", k.client_public, 1);
        setenv("ZREF_CLIENT_SECRET", k.client_secret, 1);
    }
    if (o->pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            say("sched_setaffinity(CPU 0): %s", strerror(errno));
            return 1;
        }
    }
    char endpoint[256];
    int rc = 1;
    pid_t broker = start_broker(o->curve, endpoint, sizeof endpoint);
    pid_t workers[64];
    size_t nw = 0;
    if (broker < 0)
        goto out;
    for (; nw < o->workers; nw++)
        if ((workers[nw] = start_worker(endpoint, o->slots, o->curve)) < 0)
            goto out;
    if (run_client("producer", endpoint, o->n, o->window, o->workers, o) != 0)
        goto out;
    stop_children(workers, nw); /* each says BYE: the broker forgets it */
    nw = 0;
    if ((workers[nw++] = start_worker(endpoint, 1, o->curve)) < 0)
        goto out;
    if (run_client("latency", endpoint, o->latency_n, 1, 1, o) != 0)
        goto out;
    long kib = vm_hwm_kib(broker);
    if (kib < 0) {
        say("cannot read the broker's VmHWM");
        goto out;
    }
    printf("{\"mode\":\"rss\",\"broker_kib\":%ld}\n", kib);
    fflush(stdout);
    rc = 0;
out:
    if (g_stop)
        say("interrupted");
    stop_all_children();
    return rc;
}

static int run_keys(void)
{
    keys_t k;
    if (keys_generate(&k) != 0)
        return 1;
    printf("export ZREF_SERVER_PUBLIC='%s'\nexport ZREF_SERVER_SECRET='%s'\n"
           "export ZREF_CLIENT_PUBLIC='%s'\nexport ZREF_CLIENT_SECRET='%s'\n",
           k.server_public, k.server_secret, k.client_public, k.client_secret);
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o;
    int rc;
    if (argc < 2)
        return usage(NULL);
    const char *mode = argv[1];
    if (strcmp(mode, "--help") == 0 || strcmp(mode, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(mode, "broker") == 0) {
        if ((rc = parse_opts(argc, argv, "--bind --curve --ready-fd", &o)) != 0)
            return rc;
        return run_broker(&o);
    }
    if (strcmp(mode, "worker") == 0) {
        if ((rc = parse_opts(argc, argv, "--connect --slots --curve --payload-size", &o)) != 0)
            return rc;
        g_payload_size = o.payload_size;
        return run_worker(&o);
    }
    if (strcmp(mode, "producer") == 0 || strcmp(mode, "latency") == 0) {
        bool w1 = mode[0] == 'p';
        bool has_n = false;
        for (int i = 2; i < argc; i++)
            has_n |= strcmp(argv[i], "--n") == 0 || strncmp(argv[i], "--n=", 4) == 0;
        if ((rc = parse_opts(argc, argv,
                             w1 ? "--connect --n --window --wait-workers --timeout --curve "
                                  "--payload-size"
                                : "--connect --n --wait-workers --timeout --curve --payload-size",
                             &o)) != 0)
            return rc;
        g_payload_size = o.payload_size;
        filler_init();
        if (!has_n)
            return usage("%s needs --n N", mode);
        if (!w1 && o.n > ZREF_MAX_LATENCY_N)
            return usage("latency: --n must be 1..%llu", (unsigned long long)ZREF_MAX_LATENCY_N);
        return w1 ? run_producer(&o) : run_latency(&o);
    }
    if (strcmp(mode, "bench") == 0) {
        if ((rc = parse_opts(argc, argv,
                             "--n --latency-n --workers --slots --window --timeout --curve --pin "
                             "--payload-size",
                             &o)) != 0)
            return rc;
        g_payload_size = o.payload_size;
        return run_bench(&o);
    }
    if (strcmp(mode, "keys") == 0) {
        if (argc != 2)
            return usage("keys takes no flags");
        return run_keys();
    }
    return usage("unknown mode '%.64s'", mode);
}
