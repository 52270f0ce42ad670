/* auth.c - ZAP handler and handshake monitor, in their own thread. See
 * auth.h. */
#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
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
/* Accepted connections remembered for the handshake-failure log. */
#define AUTH_MAX_CONNS 65536
/* Handshake failures remembered until their connection is dropped. */
#define AUTH_PENDING_FAILS 64

typedef struct {
    int fd;
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
    /* thread-only state */
    conn_t *conns;
    size_t nconns, capconns;
    /* HANDSHAKE_FAILED events seen whose DISCONNECTED has not come yet,
     * oldest first: 1 = the keys did not match (PROTOCOL, AUTH), 0 = the
     * peer closed during the handshake (NO_DETAIL: a port probe, a health
     * check). A ring; when full the oldest is forgotten. */
    uint8_t fail_kind[AUTH_PENDING_FAILS];
    unsigned fail_head, nfail;
    int64_t log_window_ms;  /* rate limit of refusal lines: a peer with a */
    unsigned log_lines;     /* wrong key reconnects every few hundred ms */
    unsigned log_suppressed;
    char start_err[256];
};

/* Refusal lines per second; the rest are counted and summarised. */
#define AUTH_LOG_PER_S 3

/* 1 if one more refusal line may be logged now. */
static int log_ok(tq_auth_t *self) {
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

static int zap_recv(void *sock, zap_req_t *r) {
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

static int frame_is(const zap_req_t *r, size_t i, const char *s) {
    return i < r->n && i < ZAP_MAX_FRAMES && r->len[i] == strlen(s) &&
           memcmp(r->data[i], s, r->len[i]) == 0;
}

static void zap_reply(void *sock, const zap_req_t *r, const char *code, const char *text,
                      const char *user) {
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
static void zap_handle(tq_auth_t *self, void *zap) {
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
    if (frame_is(&r, 5, "CURVE") && r.n == 7 && r.len[6] == 32 &&
        sodium_memcmp(r.data[6], self->client_public, 32) == 0) {
        tq_debug("accepted peer %s", addr);
        zap_reply(zap, &r, "200", "OK", "taskq-client");
        return;
    }
    if (log_ok(self))
        tq_warn("refused peer %s: wrong key", addr);
    zap_reply(zap, &r, "400", "wrong key", "");
}

/* ---- monitor ------------------------------------------------------------ */

static void conn_put(tq_auth_t *self, int fd) {
    char addr[64] = "?";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
            snprintf(addr, sizeof addr, "%s:%d", host, port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            port = ntohs(in6->sin6_port);
            if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                /* an IPv4 peer of a dual-stack socket: show it as IPv4 */
                inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
                snprintf(addr, sizeof addr, "%s:%d", host, port);
            } else {
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
                snprintf(addr, sizeof addr, "[%s]:%d", host, port);
            }
        } else {
            snprintf(addr, sizeof addr, "local");
        }
    }
    for (size_t i = 0; i < self->nconns; i++)
        if (self->conns[i].fd == fd) { /* fd reused: replace */
            tq_strlcpy(self->conns[i].addr, addr, sizeof self->conns[i].addr);
            return;
        }
    if (self->nconns >= AUTH_MAX_CONNS)
        return;
    if (self->nconns == self->capconns) {
        self->capconns = self->capconns ? self->capconns * 2 : 16;
        self->conns = tq_realloc(self->conns, self->capconns * sizeof *self->conns);
    }
    self->conns[self->nconns].fd = fd;
    tq_strlcpy(self->conns[self->nconns].addr, addr, sizeof self->conns[self->nconns].addr);
    self->nconns++;
}

/* Remove fd's entry, copying its address to addr. */
static void conn_take(tq_auth_t *self, int fd, char *addr, size_t len) {
    tq_strlcpy(addr, "?", len);
    for (size_t i = 0; i < self->nconns; i++)
        if (self->conns[i].fd == fd) {
            tq_strlcpy(addr, self->conns[i].addr, len);
            self->conns[i] = self->conns[--self->nconns];
            return;
        }
}

static void monitor_handle(tq_auth_t *self, void *mon) {
    uint8_t ev[6] = {0};
    int more = 0;
    size_t n = 0;
    int frame = 0;
    /* frame 1: u16 event, u32 value (host order); frame 2: endpoint */
    do {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, 0) < 0) {
            zmq_msg_close(&m);
            return;
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
        return;
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    char addr[64];
    switch (event) {
    case ZMQ_EVENT_ACCEPTED:
        conn_put(self, (int)value);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        /* Reported with the listener's endpoint: the peer is the next
         * connection to be dropped. */
        if (self->nfail == AUTH_PENDING_FAILS) {
            self->fail_head = (self->fail_head + 1) % AUTH_PENDING_FAILS;
            self->nfail--;
        }
        self->fail_kind[(self->fail_head + self->nfail++) % AUTH_PENDING_FAILS] =
            event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
        break;
    case ZMQ_EVENT_DISCONNECTED:
        conn_take(self, (int)value, addr, sizeof addr);
        if (self->nfail > 0) {
            int keys = self->fail_kind[self->fail_head];
            self->fail_head = (self->fail_head + 1) % AUTH_PENDING_FAILS;
            self->nfail--;
            if (!keys)
                tq_debug("peer %s closed the connection during the handshake", addr);
            else if (log_ok(self))
                tq_warn("authentication failed for peer %s (handshake rejected: wrong authkey?)",
                        addr);
        }
        break;
    default:
        break;
    }
}

/* ---- thread ------------------------------------------------------------- */

static void *auth_main(void *arg) {
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
        zmq_pollitem_t items[3] = {{pipe, 0, ZMQ_POLLIN, 0}, {zap, 0, ZMQ_POLLIN, 0},
                                   {mon, 0, ZMQ_POLLIN, 0}};
        int nitems = mon ? 3 : 2;
        for (;;) {
            if (zmq_poll(items, nitems, -1) < 0) {
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
            if (items[1].revents & ZMQ_POLLIN)
                zap_handle(self, zap);
            if (nitems > 2 && (items[2].revents & ZMQ_POLLIN))
                monitor_handle(self, mon);
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

tq_auth_t *tq_auth_new(void *ctx, const tq_curve_keys_t *keys, const char *monitor_ep, char *err,
                       size_t errlen) {
    tq_auth_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    memcpy(self->client_public, keys->client_public, 32);
    snprintf(self->pipe_ep, sizeof self->pipe_ep, "inproc://taskq-auth-%p", (void *)self);
    if (monitor_ep) {
        self->has_monitor = 1;
        tq_strlcpy(self->monitor_ep, monitor_ep, sizeof self->monitor_ep);
    }
    int zero = 0;
    self->pipe = zmq_socket(ctx, ZMQ_PAIR);
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe, self->pipe_ep) < 0) {
        snprintf(err, errlen, "auth: cannot create the control pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&self->thread, NULL, auth_main, self) != 0) {
        snprintf(err, errlen, "auth: cannot start the thread");
        goto fail;
    }
    /* Handshake: the thread says "ok" once the ZAP handler is bound. */
    char buf[256];
    int n = zmq_recv(self->pipe, buf, sizeof buf - 1, 0);
    if (n < 0) {
        snprintf(err, errlen, "auth: no answer from the auth thread: %s", zmq_strerror(errno));
        pthread_join(self->thread, NULL);
        goto fail;
    }
    buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
    if (strcmp(buf, "ok") != 0) {
        snprintf(err, errlen, "%s", buf);
        pthread_join(self->thread, NULL);
        goto fail;
    }
    return self;
fail:
    if (self->pipe)
        zmq_close(self->pipe);
    free(self);
    return NULL;
}

void tq_auth_destroy(tq_auth_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tq_auth_t *self = *self_p;
    zmq_send(self->pipe, "stop", 4, 0);
    pthread_join(self->thread, NULL);
    zmq_close(self->pipe);
    free(self->conns);
    sodium_memzero(self->client_public, sizeof self->client_public);
    free(self);
    *self_p = NULL;
}
