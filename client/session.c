/* session.c - the client handle's life: taskq_connect (the link's first
 * WELCOME), taskq_close (ACKs and BYE), and the handle's settings
 * (taskq_set_*, taskq_endpoint, taskq_max_payload); see include/taskq.h
 * for their promises. The connection is the link (link/tq_link.h); once
 * connected, taskq.c drives it. */
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
#include "tq_keyfile.h"
#include "tq_curve.h"
#include "tq_log.h"

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:7070"
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
/* How long close waits for BYE and queued batches to leave. */
#define CLOSE_LINGER_MS 1000
/* Reconnecting: the default budget (the rest of the policy is the
 * link's, tq_link.h). */
#define DEFAULT_RECONNECT_MS 60000

/* ---- connect and close ------------------------------------------------ */

static void default_name(char *out, size_t size)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, size, "%s:%ld", host, (long)getpid());
}


static void handle_free(taskq_t *self, int linger_ms)
{
    tq_link_free(&self->link, linger_ms);
    tq_curve_keys_free(&self->keys);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    cJSON_Delete(self->hello);
    tq_api_free(self);
    free(self);
}

/* Say HELLO and wait for WELCOME, watching the handshake. Returns 0 or
 * -1 with err. */
static int await_welcome(taskq_t *self, int64_t timeout_ms, taskq_error_t *err)
{
    const char *ep = tq_link_endpoint(self->link);
    int64_t deadline = tq_mono_ms() + timeout_ms;
    tq_link_event_t ev;
    for (;;) {
        int t;
        while ((t = tq_link_next(self->link, &ev)) != TQ_LINK_NONE) {
            switch (t) {
            case TQ_LINK_HELLO: tq_link_hello(self->link, self->hello); break;
            case TQ_LINK_REGISTERED: return 0;
            case TQ_LINK_AUTH_FAILED:
                return tq_api_fail(err, TASKQ_ERR_CONNECT,
                                   "authentication failed connecting to %s (%s)", ep,
                                   tq_client_auth_hint(self));
            case TQ_LINK_REFUSED:
                return tq_api_fail(err, TASKQ_ERR_REFUSED,
                                   "master at %s refused the connection: %s", ep, ev.text);
            case TQ_LINK_BAD:
                if (ev.msg_type == TQ_MSG_WELCOME)
                    return tq_api_fail(err, TASKQ_ERR_CONNECT, "bad WELCOME from %s: %s", ep,
                                       ev.text);
                return tq_api_fail(err, TASKQ_ERR_CONNECT, "%s is not a taskq master (%s)", ep,
                                   ev.text);
            case TQ_LINK_DEAD:
                return tq_api_fail(err, TASKQ_ERR_CONNECT, "cannot connect to %s", ep);
            default: break; /* nothing else comes before WELCOME */
            }
        }
        int64_t left = deadline - tq_mono_ms();
        if (left <= 0)
            return tq_api_fail(err, TASKQ_ERR_CONNECT, "cannot connect to %s", ep);
        int64_t w = tq_link_wait_ms(self->link);
        if (w > left)
            w = left;
        if (w > 100)
            w = 100;
        zmq_pollitem_t items[2];
        int n = tq_link_pollitems(self->link, items);
        if (zmq_poll(n ? items : NULL, n, (long)w) < 0 && errno != EINTR)
            return tq_api_fail(err, TASKQ_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
    }
}

const char *tq_client_auth_hint(const taskq_t *self)
{
    return self->keypair ? "key not accepted: is this key's .pub in the master's --allow-keys, "
                           "and --master-key the master's public key?"
                         : "wrong authkey?";
}

taskq_t *taskq_connect(const char *endpoint, const char *authkey_path, int connect_timeout_ms,
                       const char *name, taskq_error_t *err)
{
    return taskq_connect_keys(endpoint, authkey_path, NULL, NULL, connect_timeout_ms, name, err);
}

taskq_t *taskq_connect_keys(const char *endpoint, const char *authkey_path, const char *key_path,
                            const char *master_key_path, int connect_timeout_ms, const char *name,
                            taskq_error_t *err)
{
    int keypair = (key_path && *key_path) || (master_key_path && *master_key_path);
    if (!endpoint || !*endpoint)
        endpoint = DEFAULT_ENDPOINT;
    if (strlen(endpoint) >= TQ_CLIENT_ENDPOINT_MAX) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "endpoint too long (at most %d bytes)",
                    TQ_CLIENT_ENDPOINT_MAX - 1);
        return NULL;
    }
    if ((!authkey_path || !*authkey_path) && !keypair) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "no authkey file given");
        return NULL;
    }
    if (name && !tq_peer_name_valid(name, TQ_MAX_PEER_NAME, 1)) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "client name must be 1..%d printable ASCII characters",
                    TQ_MAX_PEER_NAME);
        return NULL;
    }
    taskq_t *self = tq_calloc(1, sizeof *self);
    /* Only the client pair and the server's public key are kept, in
     * memory a core dump leaves out (tq_authkey.h). */
    self->keys = tq_curve_keys_new();
    if (!self->keys) {
        tq_api_fail(err, TASKQ_ERR_ENV, "cannot map memory for the keys: %s", strerror(errno));
        free(self);
        return NULL;
    }
    tq_err_t kerr;
    self->keypair = keypair;
    if (tq_keys_load_peer(authkey_path, key_path, master_key_path, self->keys, &kerr) < 0) {
        tq_api_fail(err, strstr(kerr.msg, "needs") ? TASKQ_ERR_USAGE : TASKQ_ERR_ENV, "%s",
                    kerr.msg);
        tq_curve_keys_free(&self->keys);
        free(self);
        return NULL;
    }
    char name_buf[TQ_MAX_PEER_NAME + 1];
    if (name)
        snprintf(name_buf, sizeof name_buf, "%s", name);
    else
        default_name(name_buf, sizeof name_buf);
    cJSON *hello = cJSON_CreateObject();
    TQ_ASSERT(hello);
    cJSON_AddStringToObject(hello, "role", "client");
    cJSON_AddStringToObject(hello, "name", name_buf);
    self->hello = hello;
    self->next_req = 1;
    /* tq_authkey_load initialised libsodium. */
    randombytes_buf(self->session_id, sizeof self->session_id);
    tq_api_init(self);

    self->ctx = zmq_ctx_new();
    if (!self->ctx) {
        tq_api_fail(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ context: %s",
                    zmq_strerror(errno));
        handle_free(self, 0);
        return NULL;
    }
    int64_t timeout = connect_timeout_ms > 0 ? connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    tq_link_opts_t lo = {
        .endpoint = endpoint,
        .keys = self->keys,
        .zctx = self->ctx,
        .watch_name = "taskq-client",
        .first_attempt_ms = timeout,
    };
    self->link = tq_link_new(&lo);
    TQ_ASSERT(self->link);
    tq_link_set_reconnect(self->link, 0); /* DEFAULT_RECONNECT_MS once connected */
    int rc = tq_link_start(self->link);
    if (rc == -2)
        tq_api_fail(err, TASKQ_ERR_USAGE, "invalid endpoint '%s': %s (expected tcp://HOST:PORT)",
                    endpoint, zmq_strerror(errno));
    else if (rc < 0)
        tq_api_fail(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ socket: %s",
                    zmq_strerror(errno));
    else
        rc = await_welcome(self, timeout, err);
    if (rc < 0) {
        /* Nothing worth delivering: drop queued messages at once. */
        handle_free(self, 0);
        return NULL;
    }
    self->last_call = tq_mono_ms();
    tq_link_set_reconnect(self->link, DEFAULT_RECONNECT_MS);
    return self;
}

void taskq_close(taskq_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    taskq_t *self = *self_p;
    int linger = 0;
    if (tq_link_up(self->link)) {
        tq_api_send_acks(self, NULL);
        tq_out_begin(tq_link_out(self->link), TQ_MSG_BYE);
        tq_link_send(self->link, TQ_LINK_BLOCK);
        linger = CLOSE_LINGER_MS;
    }
    handle_free(self, linger);
    *self_p = NULL;
}

int taskq_set_reconnect(taskq_t *self, int timeout_ms)
{
    if (!self || timeout_ms < 0)
        return -1;
    tq_link_set_reconnect(self->link, timeout_ms);
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

const char *taskq_endpoint(const taskq_t *self) { return tq_link_endpoint(self->link); }

size_t taskq_max_payload(const taskq_t *self) { return tq_link_welcome(self->link)->max_payload; }
