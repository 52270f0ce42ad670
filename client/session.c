/* session.c - libtaskq's connection to the master: the DEALER socket
 * with CURVE, the handshake watch, HELLO/WELCOME, heartbeats, noticing a
 * silent master, and registering again when the master forgot us. The
 * public taskq_connect, taskq_close, taskq_endpoint and
 * taskq_max_payload live here; see include/taskq.h for their promises.
 *
 * Single-threaded like the handle: the network is only looked at inside
 * library calls, in tq_session_pump. Messages for the API state
 * (acks, results, replies) go to taskq.c through session.h. */
#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <sodium.h>
#include <zmq.h>

#include "tq_authkey.h"
#include "tq_ctl.h"
#include "tq_curve.h"
#include "tq_log.h"

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:7070"
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
/* Until WELCOME says otherwise (PROTOCOL.md defaults). */
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_HEARTBEAT_TIMEOUT_MS 5000
/* How long close waits for BYE and queued batches to leave. */
#define CLOSE_LINGER_MS 1000
/* Messages handled per drain before looking at timers again. */
#define DRAIN_MAX 256
/* Reconnecting: the default budget, the pause between attempts (doubling
 * from FIRST to MAX), and how long one attempt waits for WELCOME (the
 * master's heartbeat timeout, within these bounds). */
#define DEFAULT_RECONNECT_MS 60000
#define RECONNECT_PAUSE_FIRST_MS 100
#define RECONNECT_PAUSE_MAX_MS 2000
#define ATTEMPT_MIN_MS 1000
#define ATTEMPT_MAX_MS 10000

static int conn_lost(taskq_t *self, taskq_error_t *err);

/* Tell the program's notice callback, if any. */
static void notice(taskq_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(taskq_t *self, const char *fmt, ...)
{
    if (!self->notice)
        return;
    char msg[TASKQ_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    self->notice(self->notice_arg, msg);
}

/* ---- sending ---------------------------------------------------------- */

/* Promised in session.h. */
int tq_session_send(taskq_t *self, taskq_error_t *err)
{
    if (self->lost)
        return tq_client_fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                              self->endpoint);
    if (self->reconnecting)
        return 0; /* repeated by tq_api_resend after WELCOME */
    if (tq_out_send_packed(&self->out, self->sock, NULL, 0, self->packed) < 0) {
        if (errno == EAGAIN || self->reconnect_ms > 0)
            return conn_lost(self, err);
        return tq_client_fail(err, TASKQ_ERR_CONNECT, "cannot send to master at %s: %s",
                              self->endpoint, zmq_strerror(errno));
    }
    self->last_send = tq_mono_ms();
    return 0;
}

static void build_hello(taskq_t *self)
{
    cJSON *j = cJSON_CreateObject();
    TQ_ASSERT(j);
    cJSON_AddStringToObject(j, "role", "client");
    cJSON_AddBoolToObject(j, "packed", 1);
    cJSON_AddStringToObject(j, "name", self->name);
    tq_out_json(&self->out, TQ_MSG_HELLO, j);
    cJSON_Delete(j);
}

static int send_hello(taskq_t *self, taskq_error_t *err)
{
    build_hello(self);
    return tq_session_send(self, err);
}

static int send_empty(taskq_t *self, int type, taskq_error_t *err)
{
    tq_out_begin(&self->out, type);
    return tq_session_send(self, err);
}

/* The master does not know us (it restarted, or we were silent too
 * long): say HELLO again, then let taskq.c re-send what the master may
 * have forgotten. ZeroMQ keeps the order, so the master sees HELLO
 * first. */
static int rehello(taskq_t *self, taskq_error_t *err)
{
    self->rehello_pending = 1;
    if (send_hello(self, err) < 0)
        return -1;
    return tq_api_resend(self, err);
}

/* ---- receiving -------------------------------------------------------- */

/* Take a WELCOME's settings (checked by tq_welcome_decode). */
static void on_welcome(taskq_t *self, const tq_welcome_t *w)
{
    self->hb_ms = w->heartbeat_ms;
    self->hb_timeout_ms = w->heartbeat_timeout_ms;
    self->max_payload = (size_t)w->max_payload;
    self->packed = w->packed;
    int ms = (int)self->hb_timeout_ms;
    zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    self->rehello_pending = 0;
}

/* Read an ERROR body: code, ref (the request id it answers, 0 if none)
 * and message into msg[size]. Unreadable bodies give TQ_ERR_INTERNAL. */
static void parse_error(tq_bytes_t body, size_t nparts, int *code, uint32_t *ref, char *msg,
                        size_t size)
{
    tq_errmsg_t e;
    tq_error_t why;
    (void)tq_errmsg_decode(body, nparts, &e, &why); /* a bad one reads as INTERNAL */
    *code = e.code > INT32_MAX ? INT32_MAX : (int)e.code;
    *ref = e.ref;
    tq_log_escape_str(msg, size, e.message); /* it may reach a terminal or log */
}

/* An ERROR from the master. "Not registered" makes us say HELLO again;
 * anything else is for the API state. Returns 0 or -1 (send failure). */
static int on_error(taskq_t *self, tq_bytes_t body, size_t nparts, taskq_error_t *err)
{
    int code;
    uint32_t ref;
    char msg[TQ_MAX_ERROR_TEXT];
    parse_error(body, nparts, &code, &ref, msg, sizeof msg);
    if (code == TQ_ERR_NOT_REGISTERED) {
        /* Errors for what we sent before our HELLO arrive before WELCOME:
         * all of that has been re-sent already. */
        if (self->rehello_pending)
            return 0;
        return rehello(self, err);
    }
    if ((code == TQ_ERR_WRONG_ROLE || code == TQ_ERR_UNKNOWN_TYPE) && ref == 0 &&
        self->acks_sent) {
        /* A master from before ACK (it keeps no journal, so it needs
         * none): stop sending them. */
        self->acks_off = 1;
        return 0;
    }
    tq_api_on_error(self, ref, msg);
    return 0;
}

/* Handle the message in self->in. Malformed messages from the master
 * are ignored: what they would have answered is re-sent after a
 * re-HELLO or runs into the caller's timeout. Returns 0 or -1 (send
 * failure). */
static int handle(taskq_t *self, taskq_error_t *err)
{
    int type;
    tq_bytes_t body;
    tq_error_t e;
    if (tq_in_head(self->in, &type, &body, &e) < 0)
        return 0;
    size_t nparts = tq_in_nparts(self->in);
    switch (type) {
    case TQ_MSG_WELCOME: {
        tq_welcome_t w;
        if (tq_welcome_decode(body, nparts, &w, &e) == 0)
            on_welcome(self, &w);
        return 0;
    }
    case TQ_MSG_HEARTBEAT:
        return 0;
    case TQ_MSG_SUBMIT_ACK:
    case TQ_MSG_RESULTS:
    case TQ_MSG_CANCEL_ACK:
    case TQ_MSG_STATUS_REPLY:
    case TQ_MSG_ADMIN_REPLY:
        tq_api_on_message(self, type, body, nparts);
        return 0;
    case TQ_MSG_ERROR:
        return on_error(self, body, nparts, err);
    default:
        return 0;
    }
}

/* Handle every message already received, up to DRAIN_MAX. Returns the
 * number handled, or -1. */
static int drain(taskq_t *self, taskq_error_t *err)
{
    int handled = 0;
    while (handled < DRAIN_MAX) {
        if (tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            if (conn_lost(self, err) < 0)
                return -1;
            return handled;
        }
        self->last_recv = tq_mono_ms();
        handled++;
        if (handle(self, err) < 0)
            return -1;
        if (self->reconnecting)
            break; /* a send failed while handling: the socket is gone */
    }
    return handled;
}

/* ---- losing the master and reconnecting ------------------------------- */

/* Close the socket (dropping what is queued: it is all repeated after a
 * reconnect) and the handshake watch of an attempt. */
static void close_socket(taskq_t *self)
{
    tq_hswatch_destroy(&self->watch);
    if (self->sock) {
        int zero = 0;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(self->sock);
        self->sock = NULL;
    }
}

/* A fresh DEALER with CURVE, its handshake watch, connected to the
 * endpoint. Returns 0, or -1 with err (code TASKQ_ERR_USAGE for a bad
 * endpoint, TASKQ_ERR_INTERNAL otherwise) and nothing left open. */
static int open_socket(taskq_t *self, taskq_error_t *err)
{
    self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!self->sock)
        return tq_client_fail(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ socket: %s",
                              zmq_strerror(errno));
    int linger = CLOSE_LINGER_MS, sndtimeo = (int)self->hb_timeout_ms;
    int64_t maxmsg = TQ_PAYLOAD_HARD_MAX;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (tq_curve_client(self->sock, self->keys) < 0) {
        tq_client_fail(err, TASKQ_ERR_INTERNAL, "cannot set up CURVE: %s", zmq_strerror(errno));
        close_socket(self);
        return -1;
    }
    char wname[64];
    snprintf(wname, sizeof wname, "taskq-client-%u", self->watch_gen++);
    self->watch = tq_hswatch_new(self->ctx, self->sock, wname);
    if (!self->watch) {
        tq_client_fail(err, TASKQ_ERR_INTERNAL, "cannot monitor the connection: %s",
                       zmq_strerror(errno));
        close_socket(self);
        return -1;
    }
    if (zmq_connect(self->sock, self->endpoint) < 0) {
        tq_client_fail(err, TASKQ_ERR_USAGE, "invalid endpoint '%s': %s (expected tcp://HOST:PORT)",
                       self->endpoint, zmq_strerror(errno));
        close_socket(self);
        return -1;
    }
    return 0;
}

/* The master went silent or the socket failed. With reconnecting off,
 * the handle is lost: returns -1 with err. Otherwise drop the socket and
 * start reconnecting (the next pump makes the first attempt): returns 0. */
static int conn_lost(taskq_t *self, taskq_error_t *err)
{
    if (self->reconnecting)
        return 0;
    if (self->reconnect_ms <= 0) {
        self->lost = 1;
        return tq_client_fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                              self->endpoint);
    }
    close_socket(self);
    int64_t now = tq_mono_ms();
    self->reconnecting = 1;
    self->rehello_pending = 0;
    self->lost_at = now;
    self->next_attempt = now;
    self->backoff_ms = RECONNECT_PAUSE_FIRST_MS;
    notice(self, "lost connection to master at %s; reconnecting (up to %g s)", self->endpoint,
           (double)self->reconnect_ms / 1000.0);
    return 0;
}

/* The attempt failed (no WELCOME in time, or a refusal): close its
 * socket and pause before the next one. */
static void attempt_failed(taskq_t *self)
{
    close_socket(self);
    self->next_attempt = tq_mono_ms() + self->backoff_ms;
    self->backoff_ms *= 2;
    if (self->backoff_ms > RECONNECT_PAUSE_MAX_MS)
        self->backoff_ms = RECONNECT_PAUSE_MAX_MS;
}

/* Start an attempt: fresh socket, HELLO queued. Returns 0 or -1 (cannot
 * create a socket: fatal). */
static int attempt_start(taskq_t *self, taskq_error_t *err)
{
    if (open_socket(self, err) < 0) {
        self->lost = 1;
        return -1;
    }
    int64_t w = self->hb_timeout_ms;
    w = w < ATTEMPT_MIN_MS ? ATTEMPT_MIN_MS : w > ATTEMPT_MAX_MS ? ATTEMPT_MAX_MS : w;
    self->attempt_end = tq_mono_ms() + w;
    self->next_attempt = 0;
    build_hello(self);
    if (tq_out_send(&self->out, self->sock, NULL, ZMQ_DONTWAIT) < 0)
        attempt_failed(self);
    return 0;
}

/* Read what the attempt's socket got. Returns 1 on WELCOME (connected
 * again, the resend done), 0 otherwise, -1 on a fatal error. */
static int attempt_read(taskq_t *self, taskq_error_t *err)
{
    while (self->sock && tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) == 0) {
        int type;
        tq_bytes_t body;
        tq_error_t e;
        if (tq_in_head(self->in, &type, &body, &e) < 0)
            continue;
        if (type == TQ_MSG_ERROR) {
            /* e.g. too many clients: may pass; try again later. */
            attempt_failed(self);
            return 0;
        }
        if (type != TQ_MSG_WELCOME)
            continue;
        tq_welcome_t w;
        if (tq_welcome_decode(body, tq_in_nparts(self->in), &w, &e) < 0)
            continue;
        on_welcome(self, &w);
        tq_hswatch_destroy(&self->watch);
        self->reconnecting = 0;
        self->acks_sent = self->acks_off = 0; /* maybe a newer master */
        self->last_recv = self->last_send = tq_mono_ms();
        notice(self, "reconnected to master at %s", self->endpoint);
        if (tq_api_resend(self, err) < 0)
            return -1;
        return 1;
    }
    return 0;
}

/* One step of reconnecting, waiting at most wait_ms (-1: until the next
 * timer). Returns 1 when connected again, 0 if not yet, -1 when the
 * budget is spent or the handshake was rejected. */
static int reconnect_step(taskq_t *self, int64_t wait_ms, taskq_error_t *err)
{
    int64_t now = tq_mono_ms();
    int64_t budget_left = self->lost_at + self->reconnect_ms - now;
    if (budget_left <= 0) {
        close_socket(self);
        self->lost = 1;
        return tq_client_fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                              self->endpoint);
    }
    if (!self->sock && now >= self->next_attempt && attempt_start(self, err) < 0)
        return -1;
    int64_t t = budget_left;
    if (self->sock && self->attempt_end - now < t)
        t = self->attempt_end - now;
    if (!self->sock && self->next_attempt - now < t)
        t = self->next_attempt - now;
    if (wait_ms >= 0 && wait_ms < t)
        t = wait_ms;
    if (t < 0)
        t = 0;
    zmq_pollitem_t items[2];
    int n = 0;
    if (self->sock) {
        items[n++] = (zmq_pollitem_t){self->sock, 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){tq_hswatch_socket(self->watch), 0, ZMQ_POLLIN, 0};
    }
    if (zmq_poll(n ? items : NULL, n, (long)t) < 0 && errno != EINTR)
        return tq_client_fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
    if (!self->sock)
        return 0;
    if (tq_hswatch_poll(self->watch) < 0) {
        close_socket(self);
        self->lost = 1;
        return tq_client_fail(err, TASKQ_ERR_CONNECT,
                              "authentication failed reconnecting to %s (wrong authkey?)",
                              self->endpoint);
    }
    int rc = attempt_read(self, err);
    if (rc != 0)
        return rc;
    if (self->sock && tq_mono_ms() >= self->attempt_end)
        attempt_failed(self);
    return 0;
}

/* ---- the pump ----------------------------------------------------------- */

/* Promised in session.h. */
int tq_session_pump(taskq_t *self, int64_t wait_ms, taskq_error_t *err)
{
    if (self->lost)
        return tq_client_fail(err, TASKQ_ERR_CONNECT, "lost connection to master at %s",
                              self->endpoint);
    if (self->reconnecting)
        return reconnect_step(self, wait_ms, err);
    int got = drain(self, err);
    if (got < 0)
        return -1;
    if (self->reconnecting)
        return got > 0;
    int64_t now = tq_mono_ms();
    if (now - self->last_send >= self->hb_ms && send_empty(self, TQ_MSG_HEARTBEAT, err) < 0)
        return -1;
    if (got > 0)
        return 1;
    if (now - self->last_recv >= self->hb_timeout_ms)
        return conn_lost(self, err);
    if (self->nacks && now >= self->acks_due && tq_api_send_acks(self, err) < 0)
        return -1;
    if (self->reconnecting)
        return 0;
    int64_t t = self->last_send + self->hb_ms - now;
    int64_t silent = self->last_recv + self->hb_timeout_ms - now;
    if (silent < t)
        t = silent;
    if (self->nacks && self->acks_due - now < t)
        t = self->acks_due - now;
    if (wait_ms >= 0 && wait_ms < t)
        t = wait_ms;
    if (t < 0)
        t = 0;
    zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&item, 1, (long)t);
    if (rc < 0 && errno != EINTR)
        return tq_client_fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
    if (rc <= 0)
        return 0;
    got = drain(self, err);
    if (got < 0)
        return -1;
    return got > 0;
}

/* Called when a public call starts. If the caller has not called us
 * for longer than a heartbeat interval, the master's heartbeats queued up
 * meanwhile (read by the next pump); give it a fresh grace period rather
 * than blame it for our own absence. */
void tq_session_enter(taskq_t *self)
{
    int64_t now = tq_mono_ms();
    if (now - self->last_call > self->hb_ms && now > self->last_recv)
        self->last_recv = now;
}

/* Called when a public call returns. */
void tq_session_leave(taskq_t *self)
{
    self->last_call = tq_mono_ms();
}

/* ---- connect and close ------------------------------------------------ */

static void default_name(char *out, size_t size)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, size, "%s:%ld", host, (long)getpid());
}


static void handle_free(taskq_t *self)
{
    tq_hswatch_destroy(&self->watch);
    if (self->sock)
        zmq_close(self->sock);
    tq_curve_keys_free(&self->keys);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    tq_in_destroy(&self->in);
    tq_out_free(&self->out);
    tq_api_free(self);
    free(self);
}

/* Wait for WELCOME after HELLO, watching the handshake. Returns 0 or -1. */
static int await_welcome(taskq_t *self, tq_hswatch_t *watch, int64_t timeout_ms,
                         taskq_error_t *err)
{
    int64_t deadline = tq_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - tq_mono_ms();
        if (left <= 0)
            return tq_client_fail(err, TASKQ_ERR_CONNECT, "cannot connect to %s", self->endpoint);
        zmq_pollitem_t items[2] = {{self->sock, 0, ZMQ_POLLIN, 0},
                                   {tq_hswatch_socket(watch), 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, (long)(left < 100 ? left : 100));
        if (rc < 0 && errno != EINTR)
            return tq_client_fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
        if (tq_hswatch_poll(watch) < 0)
            return tq_client_fail(err, TASKQ_ERR_CONNECT,
                                  "authentication failed connecting to %s (wrong authkey?)",
                                  self->endpoint);
        while (tq_in_recv(self->in, self->sock, 0, ZMQ_DONTWAIT) == 0) {
            int type;
            tq_bytes_t body;
            tq_error_t e;
            self->last_recv = tq_mono_ms();
            if (tq_in_head(self->in, &type, &body, &e) < 0)
                return tq_client_fail(err, TASKQ_ERR_CONNECT, "%s is not a taskq master (%s)",
                                      self->endpoint, e.msg);
            if (type == TQ_MSG_WELCOME) {
                tq_welcome_t w;
                if (tq_welcome_decode(body, tq_in_nparts(self->in), &w, &e) < 0)
                    return tq_client_fail(err, TASKQ_ERR_CONNECT, "bad WELCOME from %s: %s",
                                          self->endpoint, e.msg);
                on_welcome(self, &w);
                return 0;
            }
            if (type == TQ_MSG_ERROR) {
                int code;
                uint32_t ref;
                char msg[TQ_MAX_ERROR_TEXT];
                parse_error(body, tq_in_nparts(self->in), &code, &ref, msg, sizeof msg);
                return tq_client_fail(err, TASKQ_ERR_REFUSED,
                                      "master at %s refused the connection: %s", self->endpoint,
                                      msg);
            }
        }
    }
}

taskq_t *taskq_connect(const char *endpoint, const char *authkey_path, int connect_timeout_ms,
                       const char *name, taskq_error_t *err)
{
    if (!endpoint || !*endpoint)
        endpoint = DEFAULT_ENDPOINT;
    if (strlen(endpoint) >= TQ_CLIENT_ENDPOINT_MAX) {
        tq_client_fail(err, TASKQ_ERR_USAGE, "endpoint too long (at most %d bytes)",
                       TQ_CLIENT_ENDPOINT_MAX - 1);
        return NULL;
    }
    if (!authkey_path || !*authkey_path) {
        tq_client_fail(err, TASKQ_ERR_USAGE, "no authkey file given");
        return NULL;
    }
    if (name && !tq_peer_name_valid(name, TQ_MAX_PEER_NAME, 1)) {
        tq_client_fail(err, TASKQ_ERR_USAGE, "client name must be 1..%d printable ASCII characters",
                       TQ_MAX_PEER_NAME);
        return NULL;
    }
    taskq_t *self = tq_calloc(1, sizeof *self);
    char kerr[TASKQ_ERROR_MAX];
    /* Only the client pair and the server's public key are kept, in
     * memory a core dump leaves out (tq_authkey.h). */
    self->keys = tq_curve_keys_new();
    if (!self->keys) {
        tq_client_fail(err, TASKQ_ERR_ENV, "cannot map memory for the keys: %s", strerror(errno));
        free(self);
        return NULL;
    }
    if (tq_authkey_load_peer(authkey_path, self->keys, kerr, sizeof kerr) < 0) {
        tq_client_fail(err, TASKQ_ERR_ENV, "%s", kerr);
        tq_curve_keys_free(&self->keys);
        free(self);
        return NULL;
    }
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    if (name)
        snprintf(self->name, sizeof self->name, "%s", name);
    else
        default_name(self->name, sizeof self->name);
    self->hb_ms = DEFAULT_HEARTBEAT_MS;
    self->hb_timeout_ms = DEFAULT_HEARTBEAT_TIMEOUT_MS;
    self->max_payload = TQ_PAYLOAD_DEFAULT_MAX;
    self->reconnect_ms = 0; /* DEFAULT_RECONNECT_MS once connected */
    self->next_req = 1;
    /* tq_authkey_load initialised libsodium. */
    randombytes_buf(self->session_id, sizeof self->session_id);
    self->in = tq_in_new();
    tq_out_init(&self->out);
    tq_api_init(self);

    self->ctx = zmq_ctx_new();
    if (!self->ctx) {
        tq_client_fail(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ context: %s",
                       zmq_strerror(errno));
        handle_free(self);
        return NULL;
    }
    if (open_socket(self, err) < 0) {
        handle_free(self);
        return NULL;
    }
    int64_t timeout = connect_timeout_ms > 0 ? connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    int rc = send_hello(self, err);
    if (rc == 0)
        rc = await_welcome(self, self->watch, timeout, err);
    tq_hswatch_destroy(&self->watch);
    if (rc < 0) {
        /* Nothing worth delivering: drop queued messages at once. */
        int zero = 0;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
        handle_free(self);
        return NULL;
    }
    self->last_recv = self->last_call = tq_mono_ms();
    self->reconnect_ms = DEFAULT_RECONNECT_MS;
    return self;
}

void taskq_close(taskq_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    taskq_t *self = *self_p;
    if (!self->lost && !self->reconnecting) {
        tq_api_send_acks(self, NULL);
        send_empty(self, TQ_MSG_BYE, NULL);
    } else if (self->sock) {
        int zero = 0;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
    }
    handle_free(self);
    *self_p = NULL;
}

int taskq_set_reconnect(taskq_t *self, int timeout_ms)
{
    if (!self || timeout_ms < 0)
        return -1;
    self->reconnect_ms = timeout_ms;
    return 0;
}

int taskq_set_ack_timeout(taskq_t *self, int timeout_ms)
{
    if (!self || timeout_ms < 0)
        return -1;
    self->ack_timeout_ms = timeout_ms;
    return 0;
}

void taskq_set_notice(taskq_t *self, taskq_notice_fn fn, void *arg)
{
    if (!self)
        return;
    self->notice = fn;
    self->notice_arg = arg;
}

const char *taskq_endpoint(const taskq_t *self)
{
    return self->endpoint;
}

size_t taskq_max_payload(const taskq_t *self)
{
    return self->max_payload;
}
