/* tq_frame_test.c - unit tests of tq_frame: real inproc ROUTER/DEALER
 * exchanges of plain, oversized and packed messages. */
#include "tq_frame.h"
#include "tq_test.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static tq_bytes_t B(const char *s) { return tq_bytes_str(s); }

/* ---- sockets ---------------------------------------------------------------- */

/* A ROUTER bound to endpoint and a DEALER connected to it, both with a
 * 5 s receive timeout; the ROUTER refuses unknown routing ids. */
static void *socket_pair(const char *endpoint, void **router, void **dealer)
{
    void *ctx = zmq_ctx_new();
    *router = zmq_socket(ctx, ZMQ_ROUTER);
    *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int timeout = 5000, one = 1;
    zmq_setsockopt(*router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(*dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(*router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    CHECK_EQ_INT(zmq_bind(*router, endpoint), 0);
    CHECK_EQ_INT(zmq_connect(*dealer, endpoint), 0);
    return ctx;
}

static void test_sockets(void)
{
    void *router, *dealer;
    void *ctx = socket_pair("inproc://tq-proto-test", &router, &dealer);

    tq_out_t o;
    tq_out_init(&o);
    tq_in_t *rin = tq_in_new(), *din = tq_in_new();
    tq_err_t err;
    int type;
    tq_bytes_t body;
    size_t n;

    /* nothing to read yet */
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, ZMQ_DONTWAIT), -1);
    CHECK_EQ_INT(errno, EAGAIN);

    /* dealer -> router: HELLO, so the router learns the routing id */
    tq_out_json(&o, TQ_MSG_HELLO, NULL);
    CHECK_EQ_INT(tq_out_send(&o, dealer, NULL, 0), 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK(tq_in_routing_id(rin).len > 0);
    CHECK_EQ_INT(tq_in_nparts(rin), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_HELLO);
    CHECK(tq_in_peer_address(rin) != NULL);
    uint8_t rid_copy[TQ_MAX_ROUTING_ID];
    tq_bytes_t rid = tq_in_routing_id(rin);
    memcpy(rid_copy, rid.data, rid.len);
    rid.data = rid_copy;

    /* router -> dealer: DISPATCH with payloads, one of them large */
    size_t big_len = 300000;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7);
    tq_dispatch_item_t di[3] = {{100, 1, 0, B("square"), B("12")},
                                {101, 2, 1500, B("echo"), {big, big_len}},
                                {102, 3, 0, B("echo"), B("")}};
    tq_out_begin(&o, TQ_MSG_DISPATCH);
    for (int i = 0; i < 3; i++)
        tq_out_dispatch_item(&o, &di[i]);
    CHECK_EQ_INT(tq_out_send(&o, router, &rid, 0), 0);
    CHECK_EQ_INT(tq_in_recv(din, dealer, 0, 0), 0);
    CHECK_EQ_INT(tq_in_routing_id(din).len, 0);
    CHECK_EQ_INT(tq_in_head(din, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_DISPATCH);
    static tq_dispatch_item_t d[TQ_MAX_BATCH];
    CHECK_EQ_INT(tq_decode_dispatch(body, tq_in_parts(din), tq_in_nparts(din), d, &n, &err), 0);
    CHECK_EQ_INT(n, 3);
    CHECK(d[1].id == 101 && d[1].attempt == 2 && d[1].timeout_ms == 1500);
    CHECK(tq_bytes_eq(d[0].payload, B("12")));
    CHECK(tq_bytes_eq(d[1].payload, (tq_bytes_t){big, big_len}));
    CHECK_EQ_INT(d[2].payload.len, 0);

    /* dealer -> router: RESULT with data */
    tq_result_item_t ri[2] = {{100, 1, TQ_RUN_OK, B("12 * 12 = 144")},
                              {101, 2, TQ_RUN_OK, {big, big_len}}};
    tq_out_begin_result(&o, 2);
    tq_out_result_item(&o, &ri[0]);
    tq_out_result_item(&o, &ri[1]);
    CHECK_EQ_INT(tq_out_send(&o, dealer, NULL, 0), 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK(tq_bytes_eq(tq_in_routing_id(rin), rid));
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_RESULT);
    static tq_result_item_t r[TQ_MAX_BATCH];
    uint16_t credit;
    CHECK_EQ_INT(tq_decode_result(body, tq_in_parts(rin), tq_in_nparts(rin), TQ_PAYLOAD_DEFAULT_MAX,
                                  &credit, r, &n, &err),
                 0);
    CHECK_EQ_INT(credit, 2);
    CHECK_EQ_INT(n, 2);
    CHECK(tq_bytes_eq(r[0].data, B("12 * 12 = 144")));
    CHECK(tq_bytes_eq(r[1].data, (tq_bytes_t){big, big_len}));

    /* oversized: TQ_MAX_FRAMES + 5 frames, then a normal message */
    static const uint8_t head[] = {'T', 'Q', 1, TQ_MSG_RESULTS};
    zmq_send(dealer, head, sizeof head, ZMQ_SNDMORE);
    for (int i = 1; i < TQ_MAX_FRAMES + 5; i++)
        zmq_send(dealer, "p", 1, i + 1 < TQ_MAX_FRAMES + 5 ? ZMQ_SNDMORE : 0);
    tq_out_begin(&o, TQ_MSG_HEARTBEAT);
    CHECK_EQ_INT(tq_out_send(&o, dealer, NULL, 0), 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK(tq_in_oversized(rin));
    CHECK(tq_bytes_eq(tq_in_routing_id(rin), rid));
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK(!tq_in_oversized(rin));
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_HEARTBEAT);
    CHECK_EQ_INT(tq_in_nparts(rin), 0);
    CHECK_EQ_INT(tq_decode_empty(body, tq_in_nparts(rin), &err), 0);

    /* exactly TQ_MAX_FRAMES frames is not oversized (on a DEALER too) */
    zmq_send(router, rid.data, rid.len, ZMQ_SNDMORE);
    zmq_send(router, head, sizeof head, ZMQ_SNDMORE);
    for (int i = 1; i < TQ_MAX_FRAMES; i++)
        zmq_send(router, "p", 1, i + 1 < TQ_MAX_FRAMES ? ZMQ_SNDMORE : 0);
    CHECK_EQ_INT(tq_in_recv(din, dealer, 0, 0), 0);
    CHECK(!tq_in_oversized(din));
    CHECK_EQ_INT(tq_in_nparts(din), TQ_MAX_FRAMES - 1);

    /* an unknown routing id fails on the first frame and queues nothing */
    tq_bytes_t nobody = B("nobody");
    tq_out_begin(&o, TQ_MSG_HEARTBEAT);
    CHECK_EQ_INT(tq_out_send(&o, router, &nobody, ZMQ_DONTWAIT), -1);
    CHECK_EQ_INT(errno, EHOSTUNREACH);
    tq_out_error(&o, TQ_ERR_NOT_REGISTERED, 3, "not registered");
    CHECK_EQ_INT(tq_out_send(&o, router, &rid, 0), 0);
    CHECK_EQ_INT(tq_in_recv(din, dealer, 0, 0), 0);
    CHECK_EQ_INT(tq_in_head(din, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_ERROR);
    void *j = NULL;
    CHECK_EQ_INT(tq_decode_json(body, tq_in_nparts(din), TQ_MAX_JSON, &j, &err), 0);
    cJSON_Delete(j);

    /* a byte cap on data frames: frames past it are let go of as read;
     * a message within it is untouched; the cap is on data frames only */
    tq_in_set_max_bytes(rin, 10);
    zmq_send(dealer, head, sizeof head, ZMQ_SNDMORE);
    zmq_send(dealer, "123456", 6, ZMQ_SNDMORE);
    zmq_send(dealer, "123456", 6, ZMQ_SNDMORE);
    zmq_send(dealer, "1", 1, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK(tq_bytes_eq(tq_in_routing_id(rin), rid));
    CHECK_EQ_INT(tq_in_nparts(rin), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_LARGE);
    CHECK(strstr(err.msg, "RESULTS message carries more than 10 bytes") != NULL);
    zmq_send(dealer, head, sizeof head, ZMQ_SNDMORE);
    zmq_send(dealer, "12345", 5, ZMQ_SNDMORE);
    zmq_send(dealer, "12345", 5, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(tq_in_nparts(rin), 2);
    tq_in_set_max_bytes(rin, 0);
    /* inproc has no fd: -1; a DEALER's message too */
    CHECK_EQ_INT(tq_in_source_fd(rin), -1);

    /* a non-taskq message */
    zmq_send(dealer, "", 0, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    free(big);
    tq_in_destroy(&rin);
    tq_in_destroy(&din);
    CHECK(rin == NULL);
    tq_in_destroy(&rin); /* NULL is fine */
    tq_out_free(&o);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* Packed data frames (PROTOCOL.md 3.1): both directions, the size
 * rule, and malformed packs. */
static void test_packed(void)
{
    void *router, *dealer;
    void *ctx = socket_pair("inproc://tq-proto-packed", &router, &dealer);
    tq_out_t o;
    tq_out_init(&o);
    tq_in_t *rin = tq_in_new(), *din = tq_in_new();
    tq_err_t err;
    int type;
    tq_bytes_t body;
    size_t n;
    static tq_result_item_t r[TQ_MAX_BATCH];
    static tq_dispatch_item_t d[TQ_MAX_BATCH];
    uint16_t credit;

    /* dealer -> router: RESULT with 3 records, one empty, packed */
    tq_result_item_t ri[3] = {{7, 1, TQ_RUN_OK, B("7 * 7 = 49")},
                              {8, 1, TQ_RUN_FAILED, B("")},
                              {9, 2, TQ_RUN_OK, B("81")}};
    tq_out_begin_result(&o, 3);
    for (int i = 0; i < 3; i++)
        tq_out_result_item(&o, &ri[i]);
    CHECK_EQ_INT(tq_out_send_packed(&o, dealer, NULL, 0, 1), 0);
    CHECK_EQ_INT(o.head.data[3], TQ_MSG_RESULT); /* the builder is intact */
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    /* on the wire: routing id, head with the bit, one pack frame */
    CHECK_EQ_INT(tq_in_nparts(rin), 3);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_RESULT);
    CHECK_EQ_INT(tq_decode_result(body, tq_in_parts(rin), tq_in_nparts(rin), TQ_PAYLOAD_DEFAULT_MAX,
                                  &credit, r, &n, &err),
                 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(credit, 3);
    CHECK(tq_bytes_eq(r[0].data, B("7 * 7 = 49")));
    CHECK_EQ_INT(r[1].data.len, 0);
    CHECK(tq_bytes_eq(r[2].data, B("81")));
    uint8_t rid_copy[TQ_MAX_ROUTING_ID];
    tq_bytes_t rid = tq_in_routing_id(rin);
    memcpy(rid_copy, rid.data, rid.len);
    rid.data = rid_copy;

    /* router -> dealer: DISPATCH packed, one frame; packed = 0 sends
     * plain frames */
    tq_dispatch_item_t di[2] = {{1, 1, 0, B("square"), B("12")}, {2, 1, 0, B("square"), B("13")}};
    tq_out_begin(&o, TQ_MSG_DISPATCH);
    tq_out_dispatch_item(&o, &di[0]);
    tq_out_dispatch_item(&o, &di[1]);
    size_t head_len = o.head.len;
    CHECK_EQ_INT(tq_out_send_packed(&o, router, &rid, 0, 1), 0);
    zmq_msg_t m;
    zmq_msg_init(&m);
    CHECK_EQ_INT(zmq_msg_recv(&m, dealer, 0), (int)(head_len + 2 * (4 + 2) + 4));
    CHECK_EQ_INT(((uint8_t *)zmq_msg_data(&m))[3], TQ_MSG_DISPATCH | TQ_TYPE_PACKED);
    CHECK(!zmq_msg_more(&m));
    zmq_msg_close(&m);
    CHECK_EQ_INT(tq_out_send_packed(&o, router, &rid, 0, 1), 0);
    CHECK_EQ_INT(tq_in_recv(din, dealer, 0, 0), 0);
    CHECK_EQ_INT(tq_in_head(din, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_DISPATCH);
    CHECK_EQ_INT(tq_in_frame0(din).len, head_len); /* the view ends at the body */
    CHECK_EQ_INT(tq_decode_dispatch(body, tq_in_parts(din), tq_in_nparts(din), d, &n, &err), 0);
    CHECK(n == 2 && tq_bytes_eq(d[0].payload, B("12")) && tq_bytes_eq(d[1].payload, B("13")));
    CHECK_EQ_INT(tq_out_send_packed(&o, router, &rid, 0, 0), 0);
    zmq_msg_init(&m);
    CHECK_EQ_INT(zmq_msg_recv(&m, dealer, 0), (int)head_len);
    CHECK_EQ_INT(((uint8_t *)zmq_msg_data(&m))[3], TQ_MSG_DISPATCH); /* plain */
    CHECK(zmq_msg_more(&m));
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    CHECK_EQ_INT(zmq_msg_recv(&m, dealer, 0), 2); /* the data frame "12" */
    CHECK(zmq_msg_more(&m));
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    CHECK_EQ_INT(zmq_msg_recv(&m, dealer, 0), 2);
    CHECK(!zmq_msg_more(&m));
    zmq_msg_close(&m);

    /* malformed packs, each one frame: head + RESULT body + pack + u32 */
    static uint8_t f[64];
    static const uint8_t rhead[] = {'T', 'Q', 1, TQ_MSG_RESULT | TQ_TYPE_PACKED, 1, 0, 0, 0};
    memcpy(f, rhead, sizeof rhead);
    /* a record longer than the pack */
    memcpy(f + 8, (uint8_t[]){50, 0, 0, 0, 'a', 'b', 7, 0, 0, 0}, 10);
    zmq_send(dealer, f, 18, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK(strstr(err.msg, "record 0 runs past") != NULL);
    /* a pack length beyond the frame */
    memcpy(f + 8, (uint8_t[]){99, 0, 0, 0}, 4);
    zmq_send(dealer, f, 12, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK(strstr(err.msg, "pack length") != NULL);
    /* too short to hold a length */
    zmq_send(dealer, f, 6, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK(strstr(err.msg, "pack length") != NULL);
    /* data frames after a packed frame 0 */
    memcpy(f + 8, (uint8_t[]){0, 0, 0, 0}, 4);
    zmq_send(dealer, f, 12, ZMQ_SNDMORE);
    zmq_send(dealer, "x", 1, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK(strstr(err.msg, "1 data frames, expected none") != NULL);
    /* many frames after a packed frame 0: none kept, the count told */
    zmq_send(dealer, f, 12, ZMQ_SNDMORE);
    for (int i = 0; i < TQ_MAX_FRAMES + 10; i++)
        zmq_send(dealer, "x", 1, i + 1 < TQ_MAX_FRAMES + 10 ? ZMQ_SNDMORE : 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_nparts(rin), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK(strstr(err.msg, "1036 data frames, expected none") != NULL);
    /* too many records in one pack: oversized, as with frames */
    static uint8_t many[8 + 4 * (TQ_MAX_FRAMES + 3) + 4];
    memcpy(many, rhead, sizeof rhead);
    uint32_t mlen = 4 * (TQ_MAX_FRAMES + 3);
    memcpy(many + sizeof many - 4, (uint8_t[]){(uint8_t)mlen, (uint8_t)(mlen >> 8), 0, 0}, 4);
    zmq_send(dealer, many, sizeof many, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);
    /* a well-formed pack of two empty records: two parts, body intact */
    memcpy(f + 8, (uint8_t[]){0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0}, 12);
    zmq_send(dealer, f, 20, 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_RESULT);
    CHECK_EQ_INT(body.len, 4);
    CHECK_EQ_INT(tq_in_nparts(rin), 2);
    CHECK_EQ_INT(tq_in_parts(rin)[1].len, 0);

    tq_in_destroy(&rin);
    tq_in_destroy(&din);
    tq_out_free(&o);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* tq_in_keep: a kept part stays valid (same bytes, same place) after
 * the next receive and until its last reference is dropped; small
 * frames are not kept (the caller copies them). */
static void test_keep(void)
{
    void *router, *dealer;
    void *ctx = socket_pair("inproc://tq-proto-keep", &router, &dealer);
    tq_out_t o;
    tq_out_init(&o);
    tq_err_t err;
    int type;
    tq_bytes_t body;
    static uint8_t big[5000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 13);
    static tq_dispatch_item_t d[TQ_MAX_BATCH];
    size_t n;
    for (int packed = 0; packed <= 1; packed++) {
        tq_dispatch_item_t di[3] = {{1, 1, 0, B("echo"), {big, sizeof big}},
                                    {2, 1, 0, B("echo"), B("12")},
                                    {3, 1, 0, B("echo"), {big, 300}}};
        tq_out_begin(&o, TQ_MSG_DISPATCH);
        for (int i = 0; i < 3; i++)
            tq_out_dispatch_item(&o, &di[i]);
        CHECK_EQ_INT(tq_out_send_packed(&o, dealer, NULL, 0, packed), 0);
        tq_in_t *rin = tq_in_new();
        CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
        CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
        CHECK_EQ_INT(tq_decode_dispatch(body, tq_in_parts(rin), tq_in_nparts(rin), d, &n, &err), 0);
        CHECK_EQ_INT(n, 3);
        tq_msgref_t *k0 = tq_in_keep(rin, 0, d[0].payload.data);
        tq_msgref_t *k2 = tq_in_keep(rin, 2, d[2].payload.data);
        CHECK(k0 != NULL && k2 != NULL);
        tq_msgref_t *k1 = tq_in_keep(rin, 1, d[1].payload.data);
        CHECK(k1 == (packed ? k0 : NULL)); /* 2 bytes: its own frame is not kept */
        tq_msgref_drop(k1);
        CHECK(packed ? k0 == k2 : k0 != k2);                  /* a packed message is one frame */
        CHECK(tq_in_keep(rin, 3, d[2].payload.data) == NULL); /* no such part */
        CHECK(tq_in_keep(rin, 0, d[2].payload.data) == NULL); /* not that part's view */
        tq_bytes_t p0 = d[0].payload, p2 = d[2].payload;
        /* the next message replaces what the tq_in_t holds */
        tq_out_send_packed(&o, dealer, NULL, 0, packed);
        CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
        tq_in_destroy(&rin);
        CHECK(tq_bytes_eq(p0, (tq_bytes_t){big, sizeof big}));
        CHECK(tq_bytes_eq(p2, (tq_bytes_t){big, 300}));
        tq_msgref_drop(k0);
        CHECK(tq_bytes_eq(p2, (tq_bytes_t){big, 300}));
        tq_msgref_drop(k2);
        rin = tq_in_new();
        CHECK(tq_in_keep(rin, 0, NULL) == NULL); /* nothing received */
        tq_in_destroy(&rin);
    }
    tq_msgref_drop(NULL);
    tq_out_free(&o);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* tq_out_lend: a lent part goes to ZeroMQ without a copy (hold before,
 * release once ZeroMQ is done, the owner's bytes untouched), the
 * message then goes as plain frames; a message that is mostly copied
 * data is still packed. */
static int lend_refs;
static void lend_hold(void *hint)
{
    (void)hint;
    lend_refs++;
}
static void lend_release(void *data, void *hint)
{
    CHECK(data == hint);
    lend_refs--;
}

static void test_lend(void)
{
    void *router, *dealer;
    void *ctx = socket_pair("inproc://tq-proto-lend", &router, &dealer);
    tq_out_t o;
    tq_out_init(&o);
    tq_in_t *rin = tq_in_new();
    tq_err_t err;
    int type;
    tq_bytes_t body;
    size_t n;
    uint16_t credit;
    static tq_result_item_t r[TQ_MAX_BATCH];
    static uint8_t big[TQ_LEND_MIN];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 3);
    tq_out_begin_result(&o, 1);
    tq_out_result_item(&o, &(tq_result_item_t){5, 1, TQ_RUN_OK, B("small")});
    tq_out_result_item(&o, &(tq_result_item_t){6, 1, TQ_RUN_OK, {big, sizeof big}});
    tq_out_lend(&o, lend_hold, lend_release, big);
    CHECK_EQ_INT(tq_out_send_packed(&o, dealer, NULL, 0, 1), 0);
    CHECK_EQ_INT(lend_refs, 1); /* ZeroMQ holds the bytes */
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_nparts(rin), 2);
    CHECK_EQ_INT(tq_in_head(rin, &type, &body, &err), 0);
    CHECK_EQ_INT(tq_decode_result(body, tq_in_parts(rin), tq_in_nparts(rin), TQ_PAYLOAD_DEFAULT_MAX,
                                  &credit, r, &n, &err),
                 0);
    CHECK(n == 2 && tq_bytes_eq(r[0].data, B("small")) &&
          tq_bytes_eq(r[1].data, (tq_bytes_t){big, sizeof big}));
    CHECK(r[1].data.data == big); /* inproc hands the very frame over: no copy anywhere */
    tq_in_destroy(&rin);          /* the receiver lets go of the frame */
    CHECK_EQ_INT(lend_refs, 0);
    /* begin again: nothing lent; a message of mostly copied data packs */
    rin = tq_in_new();
    tq_out_begin_result(&o, 1);
    for (int i = 0; i < 3; i++)
        tq_out_result_item(&o, &(tq_result_item_t){(uint64_t)i, 1, TQ_RUN_OK, {big, sizeof big}});
    tq_out_lend(&o, lend_hold, lend_release, big);
    tq_out_result_item(&o, &(tq_result_item_t){9, 1, TQ_RUN_OK, B("x")});
    CHECK_EQ_INT(tq_out_send_packed(&o, dealer, NULL, 0, 1), 0);
    CHECK_EQ_INT(tq_in_recv(rin, router, 1, 0), 0);
    CHECK_EQ_INT(tq_in_nparts(rin), 4);
    CHECK(tq_in_parts(rin)[2].data != big);
    CHECK_EQ_INT(lend_refs, 0); /* packed: the lent part was copied, never held */
    tq_in_destroy(&rin);
    tq_out_free(&o);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* tq_zpoll keeps zmq_poll's contract: a message already queued is ready
 * at once (even though ZMQ_FD fired before the wait), a plain fd too,
 * and nothing ready means 0 after the timeout. */
static void test_zpoll(void)
{
    void *router, *dealer;
    void *ctx = socket_pair("inproc://tq-proto-zpoll", &router, &dealer);
    int pfd[2];
    CHECK_EQ_INT(pipe(pfd), 0);
    zmq_pollitem_t it[2] = {{router, 0, ZMQ_POLLIN, 0}, {NULL, pfd[0], ZMQ_POLLIN, 0}};
    CHECK_EQ_INT(tq_zpoll(it, 2, 0), 0);
    CHECK_EQ_INT(tq_zpoll(it, 2, 20), 0);
    CHECK_EQ_INT(zmq_send(dealer, "x", 1, 0), 1);
    CHECK_EQ_INT(tq_zpoll(it, 2, 1000), 1);
    CHECK(it[0].revents == ZMQ_POLLIN && it[1].revents == 0);
    CHECK_EQ_INT(tq_zpoll(it, 2, 1000), 1); /* still there: asked, not consumed */
    CHECK_EQ_INT(write(pfd[1], "y", 1), 1);
    CHECK_EQ_INT(tq_zpoll(it, 2, 1000), 2);
    CHECK(it[1].revents == ZMQ_POLLIN);
    char b[8];
    CHECK(zmq_recv(router, b, sizeof b, 0) > 0); /* routing id */
    CHECK_EQ_INT(zmq_recv(router, b, sizeof b, 0), 1);
    CHECK_EQ_INT(read(pfd[0], b, 1), 1);
    CHECK_EQ_INT(tq_zpoll(it, 2, 10), 0);
    CHECK_EQ_INT(tq_zpoll(it, TQ_ZPOLL_MAX + 1, 0), -1);
    /* TQ_ZPOLL_QUIET: not asked first, yet a message that comes while
     * it waits (the peer's activate command fires ZMQ_FD), or before
     * it waits, wakes it and is reported */
    it[0].events = ZMQ_POLLIN | TQ_ZPOLL_QUIET;
    CHECK_EQ_INT(tq_zpoll(it, 1, 10), 0);
    CHECK_EQ_INT(zmq_send(dealer, "z", 1, 0), 1);
    CHECK_EQ_INT(tq_zpoll(it, 1, 1000), 1);
    CHECK(it[0].revents == ZMQ_POLLIN);
    CHECK(zmq_recv(router, b, sizeof b, 0) > 0);
    CHECK_EQ_INT(zmq_recv(router, b, sizeof b, 0), 1);
    CHECK_EQ_INT(zmq_recv(router, b, sizeof b, ZMQ_DONTWAIT), -1); /* drained: quiet again */
    CHECK_EQ_INT(zmq_send(dealer, "w", 1, 0), 1);
    CHECK_EQ_INT(tq_zpoll(it, 1, 1000), 1);
    CHECK(it[0].revents == ZMQ_POLLIN);
    close(pfd[0]);
    close(pfd[1]);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

int main(void)
{
    RUN(test_sockets);
    RUN(test_packed);
    RUN(test_keep);
    RUN(test_lend);
    RUN(test_zpoll);
    TEST_MAIN_END();
}
