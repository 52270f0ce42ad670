/* tq_link_test.c - the link against a scripted master: a CURVE ROUTER in
 * this process that answers HELLO with WELCOME, ERROR not-registered, a
 * refusal or silence, checking the link's events, re-HELLO, heartbeats,
 * reconnect with backoff, the reconnect budget and an authentication
 * failure; and the WELCOME/ERROR validators on their own. */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>
#include <zmq.h>

#include "tq_authkey.h"
#include "tq_curve.h"
#include "tq_link.h"
#include "tq_test.h"
#include "tq_util.h"

/* Slack for the timing checks: the link's timers are checked when it
 * runs, so events come a little late, never early. */
#define SLACK_MS 30

static void *ctx;
static tq_curve_keys_t *keys, *bad_keys;

/* ---- the scripted master ---------------------------------------------- */

typedef struct {
    void *router;
    tq_in_t *in;
    tq_out_t out;
    char endpoint[128];
    uint8_t rid[256];
    size_t rid_len;
} master_t;

static void master_init(master_t *m)
{
    memset(m, 0, sizeof *m);
    m->router = zmq_socket(ctx, ZMQ_ROUTER);
    TQ_ASSERT(m->router);
    TQ_ASSERT(tq_curve_server(m->router, keys) == 0);
    int zero = 0;
    zmq_setsockopt(m->router, ZMQ_LINGER, &zero, sizeof zero);
    TQ_ASSERT(zmq_bind(m->router, "tcp://127.0.0.1:*") == 0);
    size_t len = sizeof m->endpoint;
    zmq_getsockopt(m->router, ZMQ_LAST_ENDPOINT, m->endpoint, &len);
    m->in = tq_in_new();
    tq_out_init(&m->out);
}

static void master_free(master_t *m)
{
    zmq_close(m->router);
    tq_in_destroy(&m->in);
    tq_out_free(&m->out);
}

/* The next message other than HEARTBEAT within timeout_ms: its type (the
 * peer becomes the one answered), or -1. *nheartbeats counts the
 * heartbeats skipped (may be NULL). */
static int master_recv(master_t *m, int timeout_ms, int *nheartbeats, cJSON **json)
{
    int64_t end = tq_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - tq_mono_ms();
        if (left < 0)
            return -1;
        zmq_pollitem_t it = {m->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)left) <= 0)
            continue;
        if (tq_in_recv(m->in, m->router, 1, ZMQ_DONTWAIT) < 0)
            continue;
        int type;
        tq_bytes_t body;
        tq_err_t e;
        if (tq_in_head(m->in, &type, &body, &e) < 0)
            return -1;
        if (type == TQ_MSG_HEARTBEAT) {
            if (nheartbeats)
                (*nheartbeats)++;
            continue;
        }
        tq_bytes_t rid = tq_in_routing_id(m->in);
        TQ_ASSERT(rid.len <= sizeof m->rid);
        memcpy(m->rid, rid.data, rid.len);
        m->rid_len = rid.len;
        if (json) {
            void *j = NULL;
            *json = tq_decode_json(body, tq_in_nparts(m->in), TQ_MAX_JSON, &j, &e) == 0 ? j : NULL;
        }
        return type;
    }
}

static void master_send(master_t *m)
{
    tq_bytes_t rid = {m->rid, m->rid_len};
    CHECK(tq_out_send(&m->out, m->router, &rid, 0) == 0);
}

static void master_welcome(master_t *m, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    TQ_ASSERT(j);
    tq_out_json(&m->out, TQ_MSG_WELCOME, j);
    cJSON_Delete(j);
    master_send(m);
}

static void master_error(master_t *m, int code, uint32_t ref, const char *msg)
{
    tq_out_error(&m->out, code, ref, msg);
    master_send(m);
}

static void master_heartbeat(master_t *m)
{
    tq_out_begin(&m->out, TQ_MSG_HEARTBEAT);
    master_send(m);
}

/* ---- driving the link ----------------------------------------------------- */

static tq_link_t *link_new(const char *endpoint, const tq_curve_keys_t *k, const char *name)
{
    tq_link_opts_t o = {.endpoint = endpoint, .keys = k, .zctx = ctx, .watch_name = name};
    tq_link_t *l = tq_link_new(&o);
    TQ_ASSERT(l);
    return l;
}

/* Run the link as an owner would until it hands out an event other than
 * SKIP, at most timeout_ms. Returns the event type (TQ_LINK_NONE on
 * timeout). */
static int wait_event(tq_link_t *l, int timeout_ms, tq_link_event_t *ev)
{
    int64_t end = tq_mono_ms() + timeout_ms;
    for (;;) {
        int t;
        while ((t = tq_link_next(l, ev)) != TQ_LINK_NONE)
            if (t != TQ_LINK_SKIP)
                return t;
        int64_t left = end - tq_mono_ms();
        if (left <= 0)
            return TQ_LINK_NONE;
        int64_t w = tq_link_wait_ms(l);
        if (w > left)
            w = left;
        if (w > 20)
            w = 20;
        zmq_pollitem_t items[2];
        int n = tq_link_pollitems(l, items);
        zmq_poll(n ? items : NULL, n, (long)w);
    }
}

static void say_hello(tq_link_t *l)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "role", "client");
    CHECK_EQ_INT(tq_link_hello(l, j), 0);
    cJSON_Delete(j);
}

/* Start l and register it with m (heartbeat 100 ms, timeout 600 ms). */
static void register_link(tq_link_t *l, master_t *m)
{
    tq_link_event_t ev;
    CHECK_EQ_INT(tq_link_start(l), 0);
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_HELLO);
    say_hello(l);
    CHECK_EQ_INT(master_recv(m, 3000, NULL, NULL), TQ_MSG_HELLO);
    master_welcome(m, "{\"version\":1,\"heartbeat_ms\":100,\"heartbeat_timeout_ms\":600,"
                      "\"max_payload\":1000,\"packed\":true}");
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_REGISTERED);
}

/* ---- the cases -------------------------------------------------------------- */

static void test_validators(void)
{
    tq_link_welcome_t w = {1000, 5000, 64, 0};
    tq_err_t e;
    const char *ok = "{\"version\":1,\"heartbeat_ms\":200,\"heartbeat_timeout_ms\":900,"
                     "\"max_payload\":77,\"packed\":true}";
    CHECK_EQ_INT(tq_link_welcome_parse((tq_bytes_t){(const uint8_t *)ok, strlen(ok)}, 0, &w, &e),
                 0);
    CHECK_EQ_INT(w.hb_ms, 200);
    CHECK_EQ_INT(w.hb_timeout_ms, 900);
    CHECK_EQ_INT(w.max_payload, 77);
    CHECK_EQ_INT(w.packed, 1);
    /* Out of bounds, a timeout not above the interval, a field missing,
     * not an object: refused, naming the field; *w keeps what it had. */
    const char *bad[] = {
        "{\"version\":1,\"heartbeat_ms\":3600000,\"heartbeat_timeout_ms\":5000000,"
        "\"max_payload\":1}",
        "{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":1000,\"max_payload\":1}",
        "{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":5000}",
        "[1,2]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ_INT(tq_link_welcome_parse((tq_bytes_t){(const uint8_t *)bad[i], strlen(bad[i])}, 0,
                                           &w, &e),
                     -1);
        CHECK_EQ_INT(w.hb_ms, 200);
        CHECK_EQ_INT(w.max_payload, 77);
    }

    int code;
    uint32_t ref;
    char msg[64];
    const char *err = "{\"code\":4,\"ref\":7,\"message\":\"too\\nlarge\"}";
    tq_link_error_parse((tq_bytes_t){(const uint8_t *)err, strlen(err)}, 0, &code, &ref, msg,
                        sizeof msg);
    CHECK_EQ_INT(code, 4);
    CHECK_EQ_INT(ref, 7);
    CHECK(strchr(msg, '\n') == NULL); /* escaped for a terminal */
    tq_link_error_parse((tq_bytes_t){(const uint8_t *)"x", 1}, 0, &code, &ref, msg, sizeof msg);
    CHECK_EQ_INT(code, TQ_ERR_INTERNAL);
    CHECK_EQ_INT(ref, 0);
}

/* HELLO/WELCOME, heartbeats, "not registered -> HELLO again" (once for
 * many errors), other errors handed to the owner. */
static void test_register_and_rehello(void)
{
    master_t m;
    master_init(&m);
    tq_link_t *l = link_new(m.endpoint, keys, "test-link-a");
    tq_link_event_t ev;

    CHECK_EQ_INT(tq_link_start(l), 0);
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_HELLO);
    /* Not welcomed yet: the owner's messages are dropped, not sent. */
    tq_out_begin(tq_link_out(l), TQ_MSG_STATUS);
    CHECK_EQ_INT(tq_link_send(l, TQ_LINK_NOWAIT), 0);
    say_hello(l);
    cJSON *hello = NULL;
    CHECK_EQ_INT(master_recv(&m, 3000, NULL, &hello), TQ_MSG_HELLO);
    CHECK(hello && cJSON_IsTrue(cJSON_GetObjectItem(hello, "packed")));
    CHECK(hello && cJSON_IsString(cJSON_GetObjectItem(hello, "role")));
    cJSON_Delete(hello);
    master_welcome(&m, "{\"version\":1,\"heartbeat_ms\":100,\"heartbeat_timeout_ms\":600,"
                       "\"max_payload\":1000,\"packed\":true}");
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_REGISTERED);
    CHECK_EQ_INT(ev.again, 0);
    CHECK(tq_link_registered(l));
    CHECK_EQ_INT(tq_link_welcome(l)->hb_ms, 100);
    CHECK_EQ_INT(tq_link_welcome(l)->hb_timeout_ms, 600);
    CHECK_EQ_INT(tq_link_welcome(l)->max_payload, 1000);

    /* Heartbeats go out every 100 ms while we are otherwise silent. The
     * master beats too, as a real one does, so that a slow machine (the
     * TSan build under load) cannot make the link give the master up
     * (600 ms of silence) while we count; 2 beats within 3 s. */
    int beats = 0;
    int64_t until = tq_mono_ms() + 3000, next_beat = 0;
    while (beats < 2 && tq_mono_ms() < until) {
        if (tq_mono_ms() >= next_beat) {
            master_heartbeat(&m);
            next_beat = tq_mono_ms() + 100;
        }
        CHECK_EQ_INT(wait_event(l, 50, &ev), TQ_LINK_NONE);
        CHECK_EQ_INT(master_recv(&m, 10, &beats, NULL), -1);
    }
    CHECK(beats >= 2);
    CHECK(tq_link_registered(l));

    /* Two messages the master did not know us for: one HELLO. */
    master_error(&m, TQ_ERR_NOT_REGISTERED, 0, "not registered: send HELLO first");
    master_error(&m, TQ_ERR_NOT_REGISTERED, 0, "not registered: send HELLO first");
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_HELLO);
    say_hello(l);
    CHECK(!tq_link_registered(l));
    CHECK(tq_link_up(l)); /* what the owner sends now follows the HELLO */
    CHECK_EQ_INT(wait_event(l, 150, &ev), TQ_LINK_NONE); /* the second error: no HELLO */
    CHECK_EQ_INT(master_recv(&m, 1000, NULL, NULL), TQ_MSG_HELLO);
    CHECK_EQ_INT(master_recv(&m, 100, NULL, NULL), -1); /* only one */
    master_welcome(&m, "{\"version\":1,\"heartbeat_ms\":100,\"heartbeat_timeout_ms\":600,\"max_"
                       "payload\":1024}");
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_REGISTERED);
    CHECK_EQ_INT(ev.again, 1); /* the owner re-sends what was forgotten */
    CHECK(tq_link_registered(l));

    /* Any other ERROR is the owner's. */
    master_error(&m, TQ_ERR_TOO_LARGE, 7, "payload too large");
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_MESSAGE);
    CHECK_EQ_INT(ev.msg_type, TQ_MSG_ERROR);
    int code;
    uint32_t ref;
    char msg[128];
    tq_link_error_parse(ev.body, ev.nparts, &code, &ref, msg, sizeof msg);
    CHECK_EQ_INT(code, TQ_ERR_TOO_LARGE);
    CHECK_EQ_INT(ref, 7);

    /* Messages go out once welcomed. */
    tq_out_begin(tq_link_out(l), TQ_MSG_STATUS);
    CHECK_EQ_INT(tq_link_send(l, TQ_LINK_BLOCK), 1);
    CHECK_EQ_INT(master_recv(&m, 1000, NULL, NULL), TQ_MSG_STATUS);

    tq_link_free(&l, 0);
    master_free(&m);
}

/* A silent master: LOST, then fresh sockets with HELLO, spaced by the
 * attempt window and a doubling backoff; a refusal; registered again. */
static void test_silence_and_reconnect(void)
{
    master_t m;
    master_init(&m);
    tq_link_t *l = link_new(m.endpoint, keys, "test-link-b");
    tq_link_event_t ev;
    register_link(l, &m);

    /* The master says nothing from now on. */
    int64_t t0 = tq_mono_ms();
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_LOST);
    CHECK(ev.silent_ms >= 600);
    CHECK(tq_mono_ms() - t0 >= 600 - SLACK_MS);
    CHECK(tq_link_reconnecting(l));
    CHECK(!tq_link_up(l));
    tq_out_begin(tq_link_out(l), TQ_MSG_STATUS);
    CHECK_EQ_INT(tq_link_send(l, TQ_LINK_BLOCK), 0); /* dropped: re-sent after WELCOME */

    /* The first attempt starts at once. */
    int64_t t_lost = tq_mono_ms();
    CHECK_EQ_INT(wait_event(l, 500, &ev), TQ_LINK_HELLO);
    CHECK(tq_mono_ms() - t_lost < 1000); /* no backoff before the first */
    say_hello(l);
    CHECK_EQ_INT(master_recv(&m, 1000, NULL, NULL), TQ_MSG_HELLO);
    uint8_t rid1[256];
    size_t rid1_len = m.rid_len;
    memcpy(rid1, m.rid, m.rid_len);

    /* No WELCOME: the attempt fails after its window (the heartbeat
     * timeout, at least TQ_LINK_ATTEMPT_MIN_MS), then 100 ms pass. */
    int64_t t1 = tq_mono_ms();
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_HELLO);
    int64_t gap = tq_mono_ms() - t1;
    CHECK(gap >= TQ_LINK_ATTEMPT_MIN_MS + TQ_LINK_BACKOFF_FIRST_MS - SLACK_MS);
    CHECK(gap < TQ_LINK_ATTEMPT_MIN_MS + TQ_LINK_BACKOFF_FIRST_MS + 2000);
    say_hello(l);
    CHECK_EQ_INT(master_recv(&m, 1000, NULL, NULL), TQ_MSG_HELLO);
    CHECK(m.rid_len != rid1_len || memcmp(m.rid, rid1, rid1_len) != 0); /* a fresh socket */

    /* This attempt is refused (too many connections): the next one
     * comes after the doubled backoff, 200 ms. */
    master_error(&m, TQ_ERR_INTERNAL, 0, "too many connections");
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_REFUSED);
    CHECK(strstr(ev.text, "too many connections") != NULL);
    int64_t t2 = tq_mono_ms();
    CHECK_EQ_INT(wait_event(l, 2000, &ev), TQ_LINK_HELLO);
    CHECK(tq_mono_ms() - t2 >= 2 * TQ_LINK_BACKOFF_FIRST_MS - SLACK_MS);
    say_hello(l);
    CHECK_EQ_INT(master_recv(&m, 1000, NULL, NULL), TQ_MSG_HELLO);
    master_welcome(&m, "{\"version\":1,\"heartbeat_ms\":100,\"heartbeat_timeout_ms\":600,\"max_"
                       "payload\":1024}");
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_REGISTERED);
    CHECK_EQ_INT(ev.again, 1);
    CHECK(!tq_link_reconnecting(l));
    CHECK(tq_link_registered(l));

    tq_link_free(&l, 0);
    master_free(&m);
}

/* The reconnect budget: 0 dies at the loss; a budget dies when it is
 * spent without a WELCOME. */
static void test_budget(void)
{
    master_t m;
    master_init(&m);
    tq_link_event_t ev;

    tq_link_t *l = link_new(m.endpoint, keys, "test-link-c");
    tq_link_set_reconnect(l, 0);
    register_link(l, &m);
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_DEAD);
    CHECK(tq_link_dead(l));
    tq_out_begin(tq_link_out(l), TQ_MSG_STATUS);
    CHECK_EQ_INT(tq_link_send(l, TQ_LINK_BLOCK), -1);
    CHECK_EQ_INT(wait_event(l, 50, &ev), TQ_LINK_NONE); /* told once */
    tq_link_free(&l, 0);

    l = link_new(m.endpoint, keys, "test-link-d");
    tq_link_set_reconnect(l, 800);
    register_link(l, &m);
    CHECK_EQ_INT(wait_event(l, 3000, &ev), TQ_LINK_LOST);
    int64_t t_lost = tq_mono_ms();
    int t;
    while ((t = wait_event(l, 3000, &ev)) == TQ_LINK_HELLO)
        say_hello(l); /* the master never answers */
    CHECK_EQ_INT(t, TQ_LINK_DEAD);
    CHECK(tq_mono_ms() - t_lost >= 800 - SLACK_MS);
    tq_link_free(&l, 0);
    master_free(&m);
}

/* A link with another key: the handshake fails, reported as such. */
static void test_auth_failure(void)
{
    master_t m;
    master_init(&m);
    tq_link_t *l = link_new(m.endpoint, bad_keys, "test-link-e");
    tq_link_event_t ev;
    CHECK_EQ_INT(tq_link_start(l), 0);
    CHECK_EQ_INT(wait_event(l, 1000, &ev), TQ_LINK_HELLO);
    say_hello(l);
    CHECK_EQ_INT(wait_event(l, 5000, &ev), TQ_LINK_AUTH_FAILED);
    CHECK_EQ_INT(ev.again, 0); /* no handshake ever succeeded */
    CHECK_EQ_INT(master_recv(&m, 100, NULL, NULL), -1);
    tq_link_free(&l, 0);
    master_free(&m);
}

int main(void)
{
    ctx = zmq_ctx_new();
    keys = tq_curve_keys_new();
    bad_keys = tq_curve_keys_new();
    TQ_ASSERT(ctx && keys && bad_keys);
    const uint8_t k1[32] = {1, 2, 3}, k2[32] = {9, 9, 9};
    TQ_ASSERT(tq_authkey_derive(k1, sizeof k1, keys) == 0);
    TQ_ASSERT(tq_authkey_derive(k2, sizeof k2, bad_keys) == 0);

    RUN(test_validators);
    RUN(test_register_and_rehello);
    RUN(test_silence_and_reconnect);
    RUN(test_budget);
    RUN(test_auth_failure);

    tq_curve_keys_free(&keys);
    tq_curve_keys_free(&bad_keys);
    zmq_ctx_term(ctx);
    TEST_MAIN_END();
}
