/* tq_curve_test.c - CURVE set-up and the handshake watch against a real
 * ROUTER on 127.0.0.1: the right key connects, a wrong key is reported
 * as an authentication failure.
 *
 * Observed with libzmq 4.3 (Debian 12): when the client's server key is
 * wrong, the server cannot decrypt HELLO, reports
 * HANDSHAKE_FAILED_PROTOCOL (ZMTP_CRYPTOGRAPHIC) on its side and drops
 * the connection; the client sees HANDSHAKE_FAILED_NO_DETAIL (EPIPE),
 * then DISCONNECTED, and retries every reconnect interval. */
#include "tq_curve.h"

#include "tq_test.h"
#include "tq_util.h"

#include <zmq.h>

/* Longest a handshake verdict may take in this test. */
#define VERDICT_MS 5000

/* Start a CURVE ROUTER with server_keys and a DEALER with client_keys;
 * return what tq_hswatch_poll decided (1, -1, or 0 on timeout). */
static int handshake(const tq_curve_keys_t *server_keys, const tq_curve_keys_t *client_keys,
                     const char *name)
{
    void *ctx = zmq_ctx_new();
    void *srv = zmq_socket(ctx, ZMQ_ROUTER);
    void *cli = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(srv, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(cli, ZMQ_LINGER, &zero, sizeof zero);
    CHECK_EQ_INT(tq_curve_server(srv, server_keys), 0);
    CHECK_EQ_INT(zmq_bind(srv, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t len = sizeof ep;
    CHECK_EQ_INT(zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &len), 0);

    CHECK_EQ_INT(tq_curve_client(cli, client_keys), 0);
    tq_hswatch_t *w = tq_hswatch_new(ctx, cli, name);
    CHECK(w != NULL);
    int verdict = 0;
    if (w) {
        CHECK_EQ_INT(tq_hswatch_connected(w), 0);
        CHECK_EQ_INT(zmq_connect(cli, ep), 0);
        int64_t deadline = tq_mono_ms() + VERDICT_MS;
        while (verdict == 0 && tq_mono_ms() < deadline) {
            zmq_pollitem_t item = {tq_hswatch_socket(w), 0, ZMQ_POLLIN, 0};
            zmq_poll(&item, 1, 100);
            verdict = tq_hswatch_poll(w);
        }
        CHECK_EQ_INT(tq_hswatch_connected(w), verdict == 1);
        if (verdict == 1) {
            /* and the connection really works */
            CHECK_EQ_INT(zmq_send(cli, "ping", 4, 0), 4);
            char id[256], buf[16];
            int rcvtimeo = VERDICT_MS;
            zmq_setsockopt(srv, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
            CHECK(zmq_recv(srv, id, sizeof id, 0) > 0);
            CHECK_EQ_INT(zmq_recv(srv, buf, sizeof buf, 0), 4);
        }
        tq_hswatch_destroy(&w);
        CHECK(w == NULL);
    }
    tq_hswatch_destroy(&w); /* NULL is fine */
    zmq_close(cli);
    zmq_close(srv);
    zmq_ctx_term(ctx);
    return verdict;
}

static void test_right_key(void)
{
    tq_curve_keys_t k;
    CHECK_EQ_INT(tq_authkey_derive((const uint8_t *)"right-key-0123456789", 20, &k), 0);
    CHECK_EQ_INT(handshake(&k, &k, "right"), 1);
    tq_curve_keys_wipe(&k);
}

static void test_wrong_key(void)
{
    tq_curve_keys_t a, b;
    CHECK_EQ_INT(tq_authkey_derive((const uint8_t *)"key-of-the-master-1234", 22, &a), 0);
    CHECK_EQ_INT(tq_authkey_derive((const uint8_t *)"another-key-entirely-5678", 25, &b), 0);
    CHECK_EQ_INT(handshake(&a, &b, "wrong"), -1);
}

static void test_bad_args(void)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    CHECK(tq_hswatch_new(ctx, s, NULL) == NULL);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(tq_hswatch_new(ctx, s, longname) == NULL);
    CHECK_EQ_INT(tq_hswatch_poll(NULL), 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

int main(void)
{
    RUN(test_right_key);
    RUN(test_wrong_key);
    RUN(test_bad_args);
    TEST_MAIN_END();
}
