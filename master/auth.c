/* auth.c - ZAP handler and handshake monitor, in their own thread. See
 * auth.h. */
#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <zmq.h>

#include <sodium.h>

#include "tq_log.h"
#include "tq_util.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* A ZAP request has 7 frames for CURVE (RFC 27); anything longer is
 * read to its end and refused. */
#define ZAP_MAX_FRAMES 8
/* Largest ZAP frame we look at (addresses, ids, 32-byte keys). */
#define ZAP_FRAME_MAX 256
/* Handshake failures remembered until their connection is dropped. */
#define AUTH_PENDING_FAILS 64
/* How often the connection table is checked against the kernel (an entry
 * whose DISCONNECTED event never came is dropped), and how often the
 * summary of refused and timed-out connections may be logged (ms). */
#define AUTH_SWEEP_MS 5000
#define AUTH_SUMMARY_MS 5000
/* Connections being closed at once to get out of EMFILE (accept_failed). */
#define AUTH_CUTS_IN_FLIGHT 8

/* One open connection, as the monitor reported it. Candidates for a cut
 * (not known to talk, not being closed) are linked oldest first. */
typedef struct {
    int fd;
    uint8_t closing; /* shut down by us; libzmq closes it */
    uint8_t linked;  /* in the candidate list */
    int32_t prev, next;
    socklen_t peerlen; /* 0: getpeername failed at accept */
    struct sockaddr_storage peer;
    char addr[64];
} conn_t;

struct tq_auth {
    void *ctx;
    void *pipe; /* our end; the thread holds the other */
    pthread_t thread;
    char pipe_ep[64];
    char monitor_ep[128];
    int has_monitor;
    uint8_t client_public[32];
    int accept_shared;
    /* --allow-keys: the accepted keys and their names, replaced whole by
     * tq_auth_set_keys (under mu) */
    pthread_mutex_t mu;
    struct allowed_key *allowed;
    size_t nallowed;
    size_t max_conns; /* 0: no cap */
    int fd_limit;
    int64_t handshake_ms;
    _Atomic uint8_t *active;        /* [fd_limit]: the connection on fd talks */
    _Atomic uint64_t m_auth_failed; /* for the metrics (tq_auth_counts) */
    _Atomic uint64_t m_open;
    /* thread-only state */
    conn_t *conns;
    size_t nconns, capconns;
    size_t nopen;       /* conns not being closed: what the cap counts */
    int32_t *slot;      /* [fd_limit]: index in conns, or -1 */
    int32_t head, tail; /* candidate list */
    /* HANDSHAKE_FAILED events seen whose DISCONNECTED has not come yet,
     * oldest first: 1 = the keys did not match (PROTOCOL, AUTH), 0 = the
     * peer closed during the handshake (NO_DETAIL: a port probe, a health
     * check). A ring; when full the oldest is forgotten. */
    uint8_t fail_kind[AUTH_PENDING_FAILS];
    unsigned fail_head, nfail;
    int64_t log_window_ms; /* rate limit of refusal lines: a peer with a */
    unsigned log_lines;    /* wrong key reconnects every few hundred ms */
    unsigned log_suppressed;
    /* counted since the last summary line */
    uint64_t n_cut, n_hs_closed, n_accept_failed;
    int last_accept_errno;
    int64_t summary_ms, sweep_ms;
    char start_err[256];
};

/* One key of --allow-keys as the ZAP handler needs it. */
struct allowed_key {
    uint8_t key[32];
    char name[TQ_IDENT_NAME_MAX + 1];
};

/* Refusal lines per second; the rest are counted and summarised. */
#define AUTH_LOG_PER_S 3

/* 1 if one more refusal line may be logged now. */
static int log_ok(tq_auth_t *self)
{
    int64_t now = tq_mono_ms();
    if (now - self->log_window_ms >= 1000) {
        if (self->log_suppressed)
            tq_warn("%u more refused connections not logged", self->log_suppressed);
        self->log_window_ms = now;
        self->log_lines = 0;
        self->log_suppressed = 0;
    }
    if (self->log_lines < AUTH_LOG_PER_S) {
        self->log_lines++;
        return 1;
    }
    self->log_suppressed++;
    return 0;
}

/* ---- ZAP -------------------------------------------------------------- */

typedef struct {
    uint8_t data[ZAP_MAX_FRAMES][ZAP_FRAME_MAX];
    size_t len[ZAP_MAX_FRAMES];
    size_t n;
    int bad; /* too many frames or a frame too long */
} zap_req_t;

static int zap_recv(void *sock, zap_req_t *r)
{
    memset(r, 0, sizeof *r);
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        more = zmq_msg_more(&m);
        size_t n = zmq_msg_size(&m);
        if (r->n < ZAP_MAX_FRAMES && n <= ZAP_FRAME_MAX) {
            memcpy(r->data[r->n], zmq_msg_data(&m), n);
            r->len[r->n] = n;
        } else {
            r->bad = 1;
        }
        r->n++;
        zmq_msg_close(&m);
    }
    return 0;
}

static int frame_is(const zap_req_t *r, size_t i, const char *s)
{
    return i < r->n && i < ZAP_MAX_FRAMES && r->len[i] == strlen(s) &&
           memcmp(r->data[i], s, r->len[i]) == 0;
}

static void zap_reply(void *sock, const zap_req_t *r, const char *code, const char *text,
                      const char *user)
{
    size_t idlen = r->n > 1 && !r->bad ? r->len[1] : 0;
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, r->data[1], idlen, ZMQ_SNDMORE);
    zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/* Frames: version, request id, domain, address, identity, mechanism,
 * credentials (the client's long-term public key for CURVE). */
static void zap_handle(tq_auth_t *self, void *zap)
{
    zap_req_t r;
    if (zap_recv(zap, &r) < 0)
        return;
    char addr[64] = "?";
    if (r.n > 3 && !r.bad) {
        size_t n = r.len[3] < sizeof addr - 1 ? r.len[3] : sizeof addr - 1;
        for (size_t i = 0; i < n; i++) {
            uint8_t c = r.data[3][i];
            addr[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        }
        addr[n] = '\0';
    }
    if (r.bad || r.n < 6 || !frame_is(&r, 0, "1.0")) {
        if (log_ok(self))
            tq_warn("refused peer %s: malformed ZAP request", addr);
        zap_reply(zap, &r, "400", "malformed request", "");
        return;
    }
    int curve = frame_is(&r, 5, "CURVE") && r.n == 7 && r.len[6] == 32;
    if (curve && self->accept_shared && sodium_memcmp(r.data[6], self->client_public, 32) == 0) {
        tq_debug("accepted peer %s", addr);
        zap_reply(zap, &r, "200", "OK", TQ_IDENT_SHARED);
        return;
    }
    char name[TQ_IDENT_NAME_MAX + 1] = "";
    pthread_mutex_lock(&self->mu);
    for (size_t i = 0; curve && i < self->nallowed && !name[0]; i++)
        if (sodium_memcmp(r.data[6], self->allowed[i].key, 32) == 0)
            tq_strlcpy(name, self->allowed[i].name, sizeof name);
    int keymode = self->allowed != NULL;
    pthread_mutex_unlock(&self->mu);
    if (name[0]) {
        tq_debug("accepted peer %s as %s", addr, name);
        zap_reply(zap, &r, "200", "OK", name);
        return;
    }
    if (log_ok(self)) {
        if (keymode && curve) {
            char z[41] = "?";
            zmq_z85_encode(z, r.data[6], 32);
            tq_warn("refused peer %s: public key %s is not in --allow-keys", addr, z);
        } else {
            tq_warn("refused peer %s: wrong key", addr);
        }
    }
    zap_reply(zap, &r, "400", "key not accepted", "");
}

/* ---- monitor ------------------------------------------------------------ */

/* "host:port" of a peer address, IPv4-mapped IPv6 shown as IPv4. */
static void format_addr(const struct sockaddr_storage *ss, socklen_t len, char *addr,
                        size_t addrlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (len == 0) {
        snprintf(addr, addrlen, "?");
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(addr, addrlen, "%s:%d", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        int port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            /* an IPv4 peer of a dual-stack socket: show it as IPv4 */
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
            snprintf(addr, addrlen, "%s:%d", host, port);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            snprintf(addr, addrlen, "[%s]:%d", host, port);
        }
    } else {
        snprintf(addr, addrlen, "local");
    }
}

/* 1 if fd is still the connection c was accepted as: same peer address
 * and port (an fd closed and reused for another connection or a file
 * fails this). */
static int conn_same(const conn_t *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) < 0)
        return 0;
    return c->peerlen != 0 && sl == c->peerlen && memcmp(&ss, &c->peer, sl) == 0;
}

static void list_unlink(tq_auth_t *self, int32_t i)
{
    conn_t *c = &self->conns[i];
    if (!c->linked)
        return;
    if (c->prev >= 0)
        self->conns[c->prev].next = c->next;
    else
        self->head = c->next;
    if (c->next >= 0)
        self->conns[c->next].prev = c->prev;
    else
        self->tail = c->prev;
    c->linked = 0;
    c->prev = c->next = -1;
}

static void list_push(tq_auth_t *self, int32_t i)
{
    conn_t *c = &self->conns[i];
    c->prev = self->tail;
    c->next = -1;
    if (self->tail >= 0)
        self->conns[self->tail].next = i;
    else
        self->head = i;
    self->tail = i;
    c->linked = 1;
}

/* Forget entry i (its connection is gone): the last entry moves into
 * its place, links and fd slot updated. */
static void conn_remove(tq_auth_t *self, int32_t i)
{
    conn_t *c = &self->conns[i];
    list_unlink(self, i);
    if (!c->closing)
        self->nopen--;
    self->slot[c->fd] = -1;
    int32_t last = (int32_t)self->nconns - 1;
    if (i != last) {
        conn_t *m = &self->conns[last];
        *c = *m;
        self->slot[c->fd] = i;
        if (c->linked) {
            if (c->prev >= 0)
                self->conns[c->prev].next = i;
            else
                self->head = i;
            if (c->next >= 0)
                self->conns[c->next].prev = i;
            else
                self->tail = i;
        }
    }
    self->nconns--;
}

/* Shut connection i down so that libzmq closes it (it sees the peer
 * go). Checks first that the fd is still that connection; a stale entry
 * is only forgotten. Returns 1 if a connection was cut. */
static int conn_cut(tq_auth_t *self, int32_t i)
{
    conn_t *c = &self->conns[i];
    if (!conn_same(c)) {
        conn_remove(self, i);
        return 0;
    }
    shutdown(c->fd, SHUT_RDWR);
    tq_debug("closed connection from %s: over --max-connections %zu", c->addr, self->max_conns);
    list_unlink(self, i);
    c->closing = 1;
    self->nopen--;
    self->n_cut++;
    return 1;
}

/* The oldest candidate for a cut that has not talked (those that talked
 * leave the list for good), or -1. */
static int32_t oldest_silent(tq_auth_t *self)
{
    while (self->head >= 0) {
        int32_t i = self->head;
        int fd = self->conns[i].fd;
        if (!atomic_load_explicit(&self->active[fd], memory_order_relaxed))
            return i;
        list_unlink(self, i);
    }
    return -1;
}

/* Bring the open connections down to the cap; `fresh` is the entry of
 * the connection just accepted (cut when every other one talks). */
static void enforce_cap(tq_auth_t *self, int32_t fresh)
{
    while (self->max_conns && self->nopen > self->max_conns) {
        int32_t v = oldest_silent(self);
        if (v < 0) {
            if (fresh < 0 || fresh >= (int32_t)self->nconns || self->conns[fresh].closing)
                return;
            v = fresh;
        }
        int32_t last = (int32_t)self->nconns - 1;
        if (conn_cut(self, v) || v == fresh)
            fresh = v == fresh ? -1 : fresh;
        else if (fresh == last)
            fresh = v; /* the stale entry's removal moved fresh into v */
    }
}

static void conn_accepted(tq_auth_t *self, int fd)
{
    if (fd < 0 || fd >= self->fd_limit)
        return;
    if (self->slot[fd] >= 0) /* fd reused and its DISCONNECTED not seen */
        conn_remove(self, self->slot[fd]);
    /* A new connection has said nothing yet. This event comes before the
     * connection's ZAP request, and the thread reads every pending event
     * before it answers one (auth_main), so the loop cannot have marked
     * this connection yet: only its predecessor on the same fd. */
    atomic_store_explicit(&self->active[fd], 0, memory_order_relaxed);
    if (self->nconns == self->capconns) {
        self->capconns = self->capconns ? self->capconns * 2 : 64;
        self->conns = tq_realloc(self->conns, self->capconns * sizeof *self->conns);
    }
    int32_t i = (int32_t)self->nconns++;
    conn_t *c = &self->conns[i];
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->prev = c->next = -1;
    socklen_t sl = sizeof c->peer;
    if (getpeername(fd, (struct sockaddr *)&c->peer, &sl) == 0)
        c->peerlen = sl;
    format_addr(&c->peer, c->peerlen, c->addr, sizeof c->addr);
    self->slot[fd] = i;
    self->nopen++;
    list_push(self, i);
    enforce_cap(self, i);
}

/* Forget fd's entry, copying its address to addr. */
static void conn_gone(tq_auth_t *self, int fd, char *addr, size_t len)
{
    tq_strlcpy(addr, "?", len);
    if (fd < 0 || fd >= self->fd_limit || self->slot[fd] < 0)
        return;
    tq_strlcpy(addr, self->conns[self->slot[fd]].addr, len);
    conn_remove(self, self->slot[fd]);
}

/* accept() failed in libzmq. Out of descriptors (EMFILE, ENFILE) its I/O
 * thread retries at once, forever, while the listener stays readable
 * (one event each time): free descriptors by cutting the oldest silent
 * connections, with at most AUTH_CUTS_IN_FLIGHT under way, so a burst of
 * these events does not empty the table. */
static void accept_failed(tq_auth_t *self, int err)
{
    if (err != EMFILE && err != ENFILE)
        return;
    self->n_accept_failed++;
    self->last_accept_errno = err;
    if (self->nconns - self->nopen >= AUTH_CUTS_IN_FLIGHT)
        return; /* enough cuts under way */
    int32_t v;
    while ((v = oldest_silent(self)) >= 0 && !conn_cut(self, v))
        ;
}

/* Check every entry against the kernel: one whose connection is gone
 * without a DISCONNECTED event (not expected, but the cap must not
 * leak) is forgotten. */
static void sweep(tq_auth_t *self)
{
    for (size_t i = self->nconns; i-- > 0;)
        if (!conn_same(&self->conns[i]))
            conn_remove(self, (int32_t)i);
}

/* One line for what was counted since the last one. */
static void summary(tq_auth_t *self, int64_t now)
{
    if (now - self->summary_ms < AUTH_SUMMARY_MS)
        return;
    self->summary_ms = now;
    if (self->n_cut || self->n_accept_failed)
        tq_warn("connections in the last %d s: %" PRIu64 " closed over --max-connections %zu, "
                "%" PRIu64 " closed before finishing the handshake (limit %.3g s), %" PRIu64
                " accept failures (%s); %zu open",
                AUTH_SUMMARY_MS / 1000, self->n_cut, self->max_conns, self->n_hs_closed,
                (double)self->handshake_ms / 1000.0, self->n_accept_failed,
                self->n_accept_failed ? strerror(self->last_accept_errno) : "none", self->nopen);
    else if (self->n_hs_closed)
        tq_info("connections in the last %d s: %" PRIu64 " closed before finishing the "
                "handshake (limit %.3g s); %zu open",
                AUTH_SUMMARY_MS / 1000, self->n_hs_closed, (double)self->handshake_ms / 1000.0,
                self->nopen);
    self->n_cut = self->n_hs_closed = self->n_accept_failed = 0;
}

/* Handle one monitor event if one is waiting. Returns -1 if none. */
static int monitor_handle(tq_auth_t *self, void *mon)
{
    uint8_t ev[6] = {0};
    int more = 0;
    size_t n = 0;
    int frame = 0;
    /* frame 1: u16 event, u32 value (host order); frame 2: endpoint */
    do {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, frame == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        if (frame == 0) {
            n = zmq_msg_size(&m);
            if (n == sizeof ev)
                memcpy(ev, zmq_msg_data(&m), sizeof ev);
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        frame++;
    } while (more);
    if (n != sizeof ev)
        return 0;
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    char addr[64];
    switch (event) {
    case ZMQ_EVENT_ACCEPTED: conn_accepted(self, (int)value); break;
    case ZMQ_EVENT_ACCEPT_FAILED: accept_failed(self, (int)value); break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        /* Reported with the listener's endpoint: the peer is the next
         * connection to be dropped. */
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            self->n_hs_closed++;
        if (self->nfail == AUTH_PENDING_FAILS) {
            self->fail_head = (self->fail_head + 1) % AUTH_PENDING_FAILS;
            self->nfail--;
        }
        self->fail_kind[(self->fail_head + self->nfail++) % AUTH_PENDING_FAILS] =
            event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
        break;
    case ZMQ_EVENT_DISCONNECTED:
        conn_gone(self, (int)value, addr, sizeof addr);
        if (self->nfail > 0) {
            int keys = self->fail_kind[self->fail_head];
            self->fail_head = (self->fail_head + 1) % AUTH_PENDING_FAILS;
            self->nfail--;
            if (keys)
                atomic_fetch_add_explicit(&self->m_auth_failed, 1, memory_order_relaxed);
            if (!keys)
                tq_debug("peer %s closed the connection during the handshake", addr);
            else if (log_ok(self))
                tq_warn("authentication failed for peer %s (handshake rejected: wrong authkey?)",
                        addr);
        }
        break;
    default: break;
    }
    atomic_store_explicit(&self->m_open, self->nopen, memory_order_relaxed);
    return 0;
}

void tq_auth_counts(const tq_auth_t *self, uint64_t *auth_failures, uint64_t *open_conns)
{
    *auth_failures = atomic_load_explicit(&self->m_auth_failed, memory_order_relaxed);
    *open_conns = atomic_load_explicit(&self->m_open, memory_order_relaxed);
}

/* ---- thread ------------------------------------------------------------- */

static void *auth_main(void *arg)
{
    tq_auth_t *self = arg;
    int zero = 0;
    void *pipe = zmq_socket(self->ctx, ZMQ_PAIR);
    void *zap = zmq_socket(self->ctx, ZMQ_REP);
    void *mon = self->has_monitor ? zmq_socket(self->ctx, ZMQ_PAIR) : NULL;
    if (pipe)
        zmq_setsockopt(pipe, ZMQ_LINGER, &zero, sizeof zero);
    if (zap)
        zmq_setsockopt(zap, ZMQ_LINGER, &zero, sizeof zero);
    if (mon)
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    const char *verdict = "ok";
    char msg[256] = "";
    if (!pipe || zmq_connect(pipe, self->pipe_ep) < 0) {
        /* nobody to tell: the creator times out on its pipe */
        tq_error("auth: cannot connect the control pipe: %s", zmq_strerror(errno));
        goto out;
    }
    if (!zap || zmq_bind(zap, ZAP_ENDPOINT) < 0) {
        snprintf(msg, sizeof msg, "cannot bind the ZAP handler at %s: %s", ZAP_ENDPOINT,
                 zmq_strerror(errno));
        verdict = msg;
    } else if (self->has_monitor && (!mon || zmq_connect(mon, self->monitor_ep) < 0)) {
        snprintf(msg, sizeof msg, "cannot connect the monitor %s: %s", self->monitor_ep,
                 zmq_strerror(errno));
        verdict = msg;
    }
    zmq_send(pipe, verdict, strlen(verdict), 0);
    if (verdict != msg) {
        zmq_pollitem_t items[3] = {{pipe, 0, ZMQ_POLLIN, 0},
                                   {zap, 0, ZMQ_POLLIN, 0},
                                   {mon, 0, ZMQ_POLLIN, 0}};
        int nitems = mon ? 3 : 2;
        self->sweep_ms = self->summary_ms = tq_mono_ms();
        for (;;) {
            /* wake up for the summary line and the sweep while there is
             * something to report or check */
            long timeout = self->nconns || self->n_cut || self->n_hs_closed || self->n_accept_failed
                               ? 1000
                               : -1;
            int rc = zmq_poll(items, nitems, timeout);
            int64_t now = tq_mono_ms();
            if (now - self->sweep_ms >= AUTH_SWEEP_MS) {
                self->sweep_ms = now;
                sweep(self);
            }
            summary(self, now);
            if (rc < 0) {
                if (errno == EINTR)
                    continue;
                tq_error("auth: poll failed: %s", zmq_strerror(errno));
                break;
            }
            if (items[0].revents & ZMQ_POLLIN) {
                char buf[16];
                zmq_recv(pipe, buf, sizeof buf, 0); /* any message means stop */
                break;
            }
            /* Every pending event first: a connection's ACCEPTED is
             * queued before its ZAP request (conn_accepted relies on it). */
            if (mon)
                while (monitor_handle(self, mon) == 0)
                    ;
            if (items[1].revents & ZMQ_POLLIN)
                zap_handle(self, zap);
        }
    }
out:
    if (mon)
        zmq_close(mon);
    if (zap)
        zmq_close(zap);
    if (pipe)
        zmq_close(pipe);
    return NULL;
}

tq_auth_t *tq_auth_new(void *ctx, const tq_curve_keys_t *keys, const char *monitor_ep,
                       const tq_auth_cfg_t *cfg, tq_err_t *err)
{
    tq_auth_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    self->max_conns = cfg->max_connections;
    self->fd_limit = cfg->fd_limit > 0 ? cfg->fd_limit : 1;
    self->handshake_ms = cfg->handshake_ms;
    self->active = tq_calloc((size_t)self->fd_limit, sizeof *self->active);
    self->slot = tq_calloc((size_t)self->fd_limit, sizeof *self->slot);
    for (int i = 0; i < self->fd_limit; i++)
        self->slot[i] = -1;
    self->head = self->tail = -1;
    self->accept_shared = cfg->accept_shared;
    if (cfg->accept_shared)
        memcpy(self->client_public, keys->client_public, 32);
    pthread_mutex_init(&self->mu, NULL);
    snprintf(self->pipe_ep, sizeof self->pipe_ep, "inproc://taskq-auth-%p", (void *)self);
    if (monitor_ep) {
        self->has_monitor = 1;
        tq_strlcpy(self->monitor_ep, monitor_ep, sizeof self->monitor_ep);
    }
    int zero = 0;
    self->pipe = zmq_socket(ctx, ZMQ_PAIR);
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe, self->pipe_ep) < 0) {
        tq_err_set(err, 0, "auth: cannot create the control pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&self->thread, NULL, auth_main, self) != 0) {
        tq_err_set(err, 0, "auth: cannot start the thread");
        goto fail;
    }
    /* Handshake: the thread says "ok" once the ZAP handler is bound. */
    char buf[256];
    int n = zmq_recv(self->pipe, buf, sizeof buf - 1, 0);
    if (n < 0) {
        tq_err_set(err, 0, "auth: no answer from the auth thread: %s", zmq_strerror(errno));
        pthread_join(self->thread, NULL);
        goto fail;
    }
    buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
    if (strcmp(buf, "ok") != 0) {
        tq_err_set(err, 0, "%s", buf);
        pthread_join(self->thread, NULL);
        goto fail;
    }
    return self;
fail:
    if (self->pipe)
        zmq_close(self->pipe);
    pthread_mutex_destroy(&self->mu);
    free(self->active);
    free(self->slot);
    free(self);
    return NULL;
}

void tq_auth_destroy(tq_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_auth_t *self = *self_p;
    zmq_send(self->pipe, "stop", 4, 0);
    pthread_join(self->thread, NULL);
    zmq_close(self->pipe);
    free(self->conns);
    free(self->slot);
    free(self->active);
    sodium_memzero(self->client_public, sizeof self->client_public);
    free(self->allowed);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

void tq_auth_mark_active(tq_auth_t *self, int fd)
{
    if (!self || fd < 0 || fd >= self->fd_limit)
        return;
    if (!atomic_load_explicit(&self->active[fd], memory_order_relaxed))
        atomic_store_explicit(&self->active[fd], 1, memory_order_relaxed);
}

void tq_auth_set_keys(tq_auth_t *self, const tq_allow_t *allow)
{
    size_t n = tq_allow_count(allow);
    struct allowed_key *keys = allow ? tq_calloc(n ? n : 1, sizeof *keys) : NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(keys[i].key, tq_allow_at(allow, i)->key, 32);
        tq_strlcpy(keys[i].name, tq_allow_at(allow, i)->name, sizeof keys[i].name);
    }
    pthread_mutex_lock(&self->mu);
    struct allowed_key *old = self->allowed;
    self->allowed = keys;
    self->nallowed = n;
    pthread_mutex_unlock(&self->mu);
    free(old);
}

void tq_connref_get(int fd, tq_connref_t *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->fd = -1;
    socklen_t sl = sizeof ref->sa;
    if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ref->sa, &sl) == 0) {
        ref->fd = fd;
        ref->len = sl;
    }
}

int tq_connref_cut(const tq_connref_t *ref)
{
    if (ref->fd < 0)
        return 0;
    conn_t c = {.fd = ref->fd, .peerlen = ref->len, .peer = ref->sa};
    if (!conn_same(&c))
        return 0;
    shutdown(ref->fd, SHUT_RDWR);
    return 1;
}
