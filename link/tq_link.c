/* tq_link.c - see tq_link.h. */
#include "tq_link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "tq_ctl.h"
#include "tq_curve.h"
#include "tq_log.h"
#include "tq_util.h"

/* Far away, for "no timer". */
#define LINK_NEVER_MS (24LL * 3600 * 1000)

struct tq_link {
    char *endpoint;
    const tq_curve_keys_t *keys;
    void *zctx;
    char watch_name[48];
    unsigned watch_seq;
    int64_t first_attempt_ms;

    void *sock;          /* DEALER; NULL between attempts */
    tq_hswatch_t *watch; /* the socket's handshake watch, until WELCOME */
    tq_in_t *in;
    tq_out_t out;
    tq_link_welcome_t w;

    int started;       /* tq_link_start was called */
    int sock_welcomed; /* this socket got a WELCOME */
    int hello_pending; /* HELLO sent on this socket, no WELCOME since */
    int need_hello;    /* a new socket: TQ_LINK_HELLO to hand out */
    int lost_pending;  /* a send failed: TQ_LINK_LOST to hand out */
    int ever_welcomed;
    int ever_handshake; /* some handshake succeeded (the key is right) */
    int dead, dead_told;
    int reconnecting;  /* a welcomed socket was lost; no WELCOME since */
    int64_t budget_ms; /* reconnect budget; < 0 none */
    int64_t lost_at, attempt_end, next_attempt, backoff_ms;
    int64_t last_recv, last_send;
};

/* ---- the two control-message validators ------------------------------- */

/* Promised in tq_link.h. */
int tq_link_welcome_parse(tq_bytes_t body, size_t nparts, tq_link_welcome_t *w, tq_err_t *e)
{
    tq_welcome_t x; /* proto's one WELCOME validator (tq_ctl.h) */
    if (tq_welcome_decode(body, nparts, &x, e) < 0)
        return -1;
    w->hb_ms = x.heartbeat_ms;
    w->hb_timeout_ms = x.heartbeat_timeout_ms;
    w->max_payload = (size_t)x.max_payload;
    w->packed = x.packed;
    return 0;
}

/* Promised in tq_link.h. */
void tq_link_error_parse(tq_bytes_t body, size_t nparts, int *code, uint32_t *ref, char *msg,
                         size_t size)
{
    tq_errmsg_t m; /* proto's one ERROR validator: a bad body reads as INTERNAL */
    tq_err_t why;
    (void)tq_errmsg_decode(body, nparts, &m, &why);
    *code = m.code > INT32_MAX ? INT32_MAX : (int)m.code;
    *ref = m.ref;
    tq_log_escape_str(msg, size, m.message); /* it may reach a terminal or log */
}

/* ---- sockets -------------------------------------------------------------- */

static void close_socket(tq_link_t *self, int linger_ms)
{
    tq_hswatch_destroy(&self->watch);
    if (self->sock) {
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_close(self->sock);
        self->sock = NULL;
    }
    self->sock_welcomed = 0;
    self->hello_pending = 0;
    self->need_hello = 0;
}

static int64_t attempt_window(const tq_link_t *self)
{
    int64_t w = self->w.hb_timeout_ms;
    return w < TQ_LINK_ATTEMPT_MIN_MS   ? TQ_LINK_ATTEMPT_MIN_MS
           : w > TQ_LINK_ATTEMPT_MAX_MS ? TQ_LINK_ATTEMPT_MAX_MS
                                        : w;
}

/* A fresh DEALER with CURVE and its handshake watch, connected; HELLO is
 * asked for next. Returns 0, -1 (ZeroMQ could not make or set up a
 * socket) or -2 (zmq_connect refused the endpoint), errno set. */
static int open_socket(tq_link_t *self, int64_t now, int64_t window_ms)
{
    void *s = zmq_socket(self->zctx, ZMQ_DEALER);
    if (!s)
        return -1;
    int zero = 0, ivl = TQ_LINK_BACKOFF_FIRST_MS, ivl_max = TQ_LINK_BACKOFF_MAX_MS;
    int sndtimeo = (int)self->w.hb_timeout_ms;
    int64_t maxmsg = (int64_t)TQ_PAYLOAD_HARD_MAX + TQ_MAX_JSON;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (tq_curve_client(s, self->keys) < 0) {
        int saved = errno;
        zmq_close(s);
        errno = saved;
        return -1;
    }
    char wname[96];
    snprintf(wname, sizeof wname, "%s-%u", self->watch_name, self->watch_seq++);
    self->watch = tq_hswatch_new(self->zctx, s, wname);
    if (!self->watch) {
        int saved = errno;
        zmq_close(s);
        errno = saved;
        return -1;
    }
    if (zmq_connect(s, self->endpoint) < 0) {
        int saved = errno;
        tq_hswatch_destroy(&self->watch);
        zmq_close(s);
        errno = saved;
        return -2;
    }
    self->sock = s;
    self->sock_welcomed = 0;
    self->hello_pending = 0;
    self->need_hello = 1;
    self->attempt_end = now + window_ms;
    self->next_attempt = 0;
    self->last_recv = self->last_send = now;
    return 0;
}

static void die(tq_link_t *self)
{
    close_socket(self, 0);
    self->dead = 1;
}

/* The attempt's socket got no WELCOME, or a refusal: pause, then try
 * a fresh one. */
static void attempt_failed(tq_link_t *self, int64_t now)
{
    close_socket(self, 0);
    self->next_attempt = now + self->backoff_ms;
    self->backoff_ms *= 2;
    if (self->backoff_ms > TQ_LINK_BACKOFF_MAX_MS)
        self->backoff_ms = TQ_LINK_BACKOFF_MAX_MS;
}

/* The welcomed socket is lost: drop it (and what it queued: the owner
 * re-sends after the next WELCOME) and start reconnecting, or die with
 * no budget. */
static void lose(tq_link_t *self, int64_t now)
{
    if (self->budget_ms == 0) {
        die(self);
        return;
    }
    close_socket(self, 0);
    self->reconnecting = 1;
    self->lost_at = now;
    self->next_attempt = now;
    self->backoff_ms = TQ_LINK_BACKOFF_FIRST_MS;
}

/* ---- life --------------------------------------------------------------- */

/* Promised in tq_link.h. */
tq_link_t *tq_link_new(const tq_link_opts_t *opts)
{
    if (!opts || !opts->endpoint || !opts->keys || !opts->zctx)
        return NULL;
    tq_link_t *self = tq_calloc(1, sizeof *self);
    self->endpoint = tq_strdup(opts->endpoint);
    self->keys = opts->keys;
    self->zctx = opts->zctx;
    snprintf(self->watch_name, sizeof self->watch_name, "%s",
             opts->watch_name ? opts->watch_name : "taskq-link");
    self->first_attempt_ms = opts->first_attempt_ms;
    self->in = tq_in_new();
    tq_out_init(&self->out);
    self->w.hb_ms = TQ_LINK_DEFAULT_HB_MS;
    self->w.hb_timeout_ms = TQ_LINK_DEFAULT_HB_TIMEOUT_MS;
    self->w.max_payload = TQ_PAYLOAD_DEFAULT_MAX;
    self->budget_ms = -1;
    self->backoff_ms = TQ_LINK_BACKOFF_FIRST_MS;
    return self;
}

/* Promised in tq_link.h. */
void tq_link_free(tq_link_t **self_p, int linger_ms)
{
    if (!self_p || !*self_p)
        return;
    tq_link_t *self = *self_p;
    close_socket(self, linger_ms);
    tq_in_destroy(&self->in);
    tq_out_free(&self->out);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

void tq_link_set_reconnect(tq_link_t *self, int64_t budget_ms) { self->budget_ms = budget_ms; }

/* Promised in tq_link.h. */
int tq_link_start(tq_link_t *self)
{
    int64_t window = self->first_attempt_ms > 0 ? self->first_attempt_ms : attempt_window(self);
    self->started = 1;
    return open_socket(self, tq_mono_ms(), window);
}

void tq_link_kill(tq_link_t *self) { die(self); }

/* ---- sending ---------------------------------------------------------- */

/* Promised in tq_link.h. */
int tq_link_hello(tq_link_t *self, void *json)
{
    if (!self->sock)
        return -1;
    cJSON *j = json;
    if (!cJSON_GetObjectItemCaseSensitive(j, "packed"))
        cJSON_AddBoolToObject(j, "packed", 1);
    tq_out_json(&self->out, TQ_MSG_HELLO, j);
    self->need_hello = 0;
    if (tq_out_send(&self->out, self->sock, NULL, ZMQ_DONTWAIT) < 0) {
        if (self->sock_welcomed) {
            /* A full queue to a master that just forgot us: start over. */
            lose(self, tq_mono_ms());
            self->lost_pending = !self->dead;
        }
        return -1;
    }
    self->hello_pending = 1;
    self->last_send = tq_mono_ms();
    return 0;
}

/* Promised in tq_link.h. */
int tq_link_send(tq_link_t *self, int mode) { return tq_link_send_msg(self, &self->out, mode); }

/* Promised in tq_link.h. */
int tq_link_send_msg(tq_link_t *self, tq_out_t *msg, int mode)
{
    if (self->dead)
        return -1;
    if (!self->sock || !self->sock_welcomed)
        return 0;
    int flags = mode == TQ_LINK_BLOCK ? 0 : ZMQ_DONTWAIT;
    if (tq_out_send_packed(msg, self->sock, NULL, flags, self->w.packed) == 0) {
        self->last_send = tq_mono_ms();
        return 1;
    }
    if (mode != TQ_LINK_BLOCK)
        return 0;
    lose(self, tq_mono_ms());
    if (self->dead)
        return -1;
    self->lost_pending = 1;
    return 0;
}

tq_out_t *tq_link_out(tq_link_t *self) { return &self->out; }

tq_in_t *tq_link_in(tq_link_t *self) { return self->in; }

/* ---- the step ------------------------------------------------------------ */

static int event(tq_link_event_t *ev, int type)
{
    ev->type = type;
    return type;
}

/* A message was read into self->in: what it means. */
static int on_message(tq_link_t *self, int64_t now, tq_link_event_t *ev)
{
    int type;
    tq_bytes_t body;
    tq_err_t e;
    ev->msg_type = -1;
    if (tq_in_head(self->in, &type, &body, &e) < 0) {
        tq_log_escape_str(ev->text, sizeof ev->text, e.msg);
        return event(ev, TQ_LINK_BAD);
    }
    size_t nparts = tq_in_nparts(self->in);
    switch (type) {
    case TQ_MSG_WELCOME: {
        tq_link_welcome_t w = self->w;
        if (tq_link_welcome_parse(body, nparts, &w, &e) < 0) {
            ev->msg_type = type;
            tq_log_escape_str(ev->text, sizeof ev->text, e.msg);
            return event(ev, TQ_LINK_BAD);
        }
        self->w = w;
        int ms = (int)w.hb_timeout_ms;
        zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
        tq_hswatch_destroy(&self->watch);
        ev->again = self->ever_welcomed;
        self->ever_welcomed = self->ever_handshake = 1;
        self->sock_welcomed = 1;
        self->hello_pending = 0;
        self->reconnecting = 0;
        self->backoff_ms = TQ_LINK_BACKOFF_FIRST_MS;
        self->last_send = now; /* our HELLO was the last message */
        return event(ev, TQ_LINK_REGISTERED);
    }
    case TQ_MSG_HEARTBEAT: return event(ev, TQ_LINK_SKIP);
    case TQ_MSG_ERROR: {
        int code;
        uint32_t ref;
        tq_link_error_parse(body, nparts, &code, &ref, ev->text, sizeof ev->text);
        if (code == TQ_ERR_NOT_REGISTERED) {
            /* Each message sent while the master did not know us earns
             * this error; one HELLO answers them all (a second would
             * make the master forget the registration the first made). */
            if (self->hello_pending)
                return event(ev, TQ_LINK_SKIP);
            self->need_hello = 1;
            return event(ev, TQ_LINK_HELLO);
        }
        if (!self->sock_welcomed) {
            attempt_failed(self, now);
            return event(ev, TQ_LINK_REFUSED);
        }
        break;
    }
    default: break;
    }
    ev->msg_type = type;
    ev->body = body;
    ev->nparts = nparts;
    return event(ev, TQ_LINK_MESSAGE);
}

/* Promised in tq_link.h. */
int tq_link_next(tq_link_t *self, tq_link_event_t *ev)
{
    ev->again = 0;
    ev->silent_ms = 0;
    ev->text[0] = '\0';
    if (self->dead) {
        if (self->dead_told)
            return event(ev, TQ_LINK_NONE);
        self->dead_told = 1;
        return event(ev, TQ_LINK_DEAD);
    }
    if (self->lost_pending) {
        self->lost_pending = 0;
        return event(ev, TQ_LINK_LOST);
    }
    if (!self->started)
        return event(ev, TQ_LINK_NONE);
    int64_t now = tq_mono_ms();

    /* Timers. */
    if (self->sock && self->sock_welcomed) {
        if (now - self->last_recv >= self->w.hb_timeout_ms) {
            ev->silent_ms = now - self->last_recv;
            lose(self, now);
            if (self->dead) {
                self->dead_told = 1;
                return event(ev, TQ_LINK_DEAD);
            }
            return event(ev, TQ_LINK_LOST);
        }
        if (now - self->last_send >= self->w.hb_ms) {
            tq_out_begin(&self->out, TQ_MSG_HEARTBEAT);
            tq_out_send(&self->out, self->sock, NULL, ZMQ_DONTWAIT);
            self->last_send = now; /* a full queue: the next try is an interval on */
        }
    } else if (self->sock && now >= self->attempt_end) {
        attempt_failed(self, now);
    }
    if (self->reconnecting && self->budget_ms >= 0 && now - self->lost_at >= self->budget_ms) {
        die(self);
        self->dead_told = 1;
        return event(ev, TQ_LINK_DEAD);
    }
    if (!self->sock && now >= self->next_attempt) {
        if (open_socket(self, now, attempt_window(self)) < 0) {
            die(self);
            self->dead_told = 1;
            return event(ev, TQ_LINK_DEAD);
        }
    }
    if (self->need_hello && !self->hello_pending)
        return event(ev, TQ_LINK_HELLO);
    if (!self->sock)
        return event(ev, TQ_LINK_NONE);

    /* The handshake, until WELCOME. */
    if (self->watch) {
        int hs = tq_hswatch_poll(self->watch);
        if (hs > 0)
            self->ever_handshake = 1;
        if (hs < 0) {
            ev->again = self->ever_handshake;
            return event(ev, TQ_LINK_AUTH_FAILED);
        }
    }

    if (tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return event(ev, TQ_LINK_NONE);
        if (!self->sock_welcomed) {
            attempt_failed(self, now);
            return event(ev, TQ_LINK_NONE);
        }
        lose(self, now);
        return event(ev, self->dead ? (self->dead_told = 1, TQ_LINK_DEAD) : TQ_LINK_LOST);
    }
    self->last_recv = now;
    return on_message(self, now, ev);
}

/* ---- polling and state -------------------------------------------------- */

int tq_link_pollitems(tq_link_t *self, zmq_pollitem_t *items)
{
    int n = 0;
    if (!self->sock)
        return 0;
    items[n++] = (zmq_pollitem_t){self->sock, 0, ZMQ_POLLIN, 0};
    if (self->watch)
        items[n++] = (zmq_pollitem_t){tq_hswatch_socket(self->watch), 0, ZMQ_POLLIN, 0};
    return n;
}

int64_t tq_link_wait_ms(const tq_link_t *self)
{
    if (self->dead || !self->started)
        return LINK_NEVER_MS;
    if (self->lost_pending || (self->need_hello && !self->hello_pending))
        return 0;
    int64_t now = tq_mono_ms(), t;
    if (self->sock && self->sock_welcomed) {
        t = self->last_send + self->w.hb_ms - now;
        int64_t silent = self->last_recv + self->w.hb_timeout_ms - now;
        if (silent < t)
            t = silent;
    } else if (self->sock) {
        t = self->attempt_end - now;
    } else {
        t = self->next_attempt - now;
    }
    if (self->reconnecting && self->budget_ms >= 0 && self->lost_at + self->budget_ms - now < t)
        t = self->lost_at + self->budget_ms - now;
    return t < 0 ? 0 : t;
}

/* Promised in tq_link.h. */
void tq_link_forgive(tq_link_t *self, int64_t since)
{
    int64_t now = tq_mono_ms();
    if (now - since > self->w.hb_ms && now > self->last_recv)
        self->last_recv = now;
}

int tq_link_dead(const tq_link_t *self) { return self->dead; }

int tq_link_registered(const tq_link_t *self)
{
    return self->sock && self->sock_welcomed && !self->hello_pending;
}

int tq_link_up(const tq_link_t *self) { return self->sock && self->sock_welcomed; }

int tq_link_reconnecting(const tq_link_t *self) { return self->reconnecting; }

const char *tq_link_endpoint(const tq_link_t *self) { return self->endpoint; }

const tq_link_welcome_t *tq_link_welcome(const tq_link_t *self) { return &self->w; }

int64_t tq_link_reconnect_budget(const tq_link_t *self) { return self->budget_ms; }
