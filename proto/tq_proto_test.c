/* tq_proto_test.c - unit tests of the wire buffer, cursor, encoders and
 * decoders. Links no libzmq: the socket side is tq_frame_test.c. */
#include "tq_ctl.h"
#include "tq_proto.h"
#include "tq_test.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static tq_bytes_t B(const char *s) { return tq_bytes_str(s); }

static tq_bytes_t head_of(const tq_out_t *o)
{
    tq_bytes_t b = {o->head.data, o->head.len};
    return b;
}

/* Decode the head of a built message, expecting `type`; *body set. */
static void expect_head(const tq_out_t *o, int type, tq_bytes_t *body)
{
    tq_err_t err;
    int t = -1;
    CHECK_EQ_INT(tq_decode_head(head_of(o), &t, body, &err), 0);
    CHECK_EQ_INT(t, type);
}

/* Heap copy of exactly n bytes, so valgrind sees any read past the end. */
static tq_bytes_t exact_copy(const uint8_t *p, size_t n, uint8_t **keep)
{
    *keep = malloc(n ? n : 1);
    if (n)
        memcpy(*keep, p, n);
    tq_bytes_t b = {*keep, n};
    return b;
}

/* ---- wire ---------------------------------------------------------------- */

static void test_wire(void)
{
    tq_buf_t b;
    tq_buf_init(&b);
    tq_buf_u8(&b, 0xab);
    tq_buf_u16(&b, 0x1234);
    tq_buf_u32(&b, 0xdeadbeef);
    tq_buf_u64(&b, 0x0102030405060708ull);
    tq_buf_i32(&b, -2);
    tq_buf_str8(&b, B("hi"));
    tq_buf_str8(&b, B(""));
    CHECK_EQ_INT(b.len, 1 + 2 + 4 + 8 + 4 + 3 + 1);
    static const uint8_t want[] = {0xab, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 8, 7,   6,   5, 4,
                                   3,    2,    1,    0xfe, 0xff, 0xff, 0xff, 2, 'h', 'i', 0};
    CHECK(memcmp(b.data, want, sizeof want) == 0);
    tq_buf_patch_u16(&b, 1, 0xbeef);
    CHECK(b.data[1] == 0xef && b.data[2] == 0xbe);

    tq_cursor_t c;
    tq_bytes_t all = {b.data, b.len}, v;
    tq_cursor_init(&c, all);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int32_t i32;
    CHECK_EQ_INT(tq_cursor_u8(&c, &u8), 0);
    CHECK_EQ_INT(u8, 0xab);
    CHECK_EQ_INT(tq_cursor_u16(&c, &u16), 0);
    CHECK_EQ_INT(u16, 0xbeef);
    CHECK_EQ_INT(tq_cursor_u32(&c, &u32), 0);
    CHECK_EQ_INT(u32, 0xdeadbeef);
    CHECK_EQ_INT(tq_cursor_u64(&c, &u64), 0);
    CHECK(u64 == 0x0102030405060708ull);
    CHECK_EQ_INT(tq_cursor_i32(&c, &i32), 0);
    CHECK_EQ_INT(i32, -2);
    CHECK_EQ_INT(tq_cursor_str8(&c, &v), 0);
    CHECK(tq_bytes_eq_str(v, "hi"));
    CHECK_EQ_INT(tq_cursor_str8(&c, &v), 0);
    CHECK_EQ_INT(v.len, 0);
    CHECK_EQ_INT(tq_cursor_left(&c), 0);
    CHECK_EQ_INT(tq_cursor_u8(&c, &u8), -1);
    CHECK_EQ_INT(tq_cursor_bytes(&c, 1, &v), -1);
    CHECK_EQ_INT(tq_cursor_bytes(&c, 0, &v), 0);

    /* a short read leaves the cursor where it was */
    static const uint8_t s[] = {6, 'a', 'b', 1, 2, 3};
    tq_bytes_t sb = {s, sizeof s};
    tq_cursor_init(&c, sb);
    CHECK_EQ_INT(tq_cursor_str8(&c, &v), -1);
    CHECK_EQ_INT(tq_cursor_left(&c), 6);
    CHECK_EQ_INT(tq_cursor_u64(&c, &u64), -1);
    CHECK_EQ_INT(tq_cursor_left(&c), 6);
    CHECK_EQ_INT(tq_cursor_u32(&c, &u32), 0);
    CHECK_EQ_INT(tq_cursor_u32(&c, &u32), -1);
    CHECK_EQ_INT(tq_cursor_left(&c), 2);
    tq_cursor_init(&c, (tq_bytes_t){NULL, 0});
    CHECK_EQ_INT(tq_cursor_left(&c), 0);
    CHECK_EQ_INT(tq_cursor_u16(&c, &u16), -1);

    /* i32 extremes */
    tq_buf_t e;
    tq_buf_init(&e);
    tq_buf_i32(&e, INT32_MIN);
    tq_buf_i32(&e, INT32_MAX);
    tq_cursor_init(&c, (tq_bytes_t){e.data, e.len});
    CHECK_EQ_INT(tq_cursor_i32(&c, &i32), 0);
    CHECK(i32 == INT32_MIN);
    CHECK_EQ_INT(tq_cursor_i32(&c, &i32), 0);
    CHECK(i32 == INT32_MAX);
    tq_buf_free(&e);

    /* geometric growth: a megabyte one byte at a time, few reallocs */
    size_t grows = 0, cap = b.cap;
    for (int i = 0; i < 1 << 20; i++) {
        tq_buf_u8(&b, (uint8_t)i);
        if (b.cap != cap) {
            grows++;
            cap = b.cap;
        }
    }
    CHECK(grows < 20);
    tq_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);

    CHECK(tq_bytes_eq(B("abc"), B("abc")));
    CHECK(!tq_bytes_eq(B("abc"), B("abd")));
    CHECK(!tq_bytes_eq(B("abc"), B("ab")));
    CHECK(tq_bytes_eq(B(""), (tq_bytes_t){NULL, 0}));
}

static void test_names(void)
{
    CHECK(tq_name_valid(B("square")));
    CHECK(tq_name_valid(B("a.b:c-d_E9")));
    CHECK(!tq_name_valid(B("")));
    CHECK(!tq_name_valid(B("has space")));
    CHECK(!tq_name_valid(B("slash/")));
    CHECK(!tq_name_valid(B("\xc3\xa9")));
    char n64[65], n65[66];
    memset(n64, 'x', 64);
    n64[64] = 0;
    memset(n65, 'x', 65);
    n65[65] = 0;
    CHECK(tq_name_valid(B(n64)));
    CHECK(!tq_name_valid(B(n65)));
    CHECK_EQ_STR(tq_msg_type_name(TQ_MSG_SUBMIT), "SUBMIT");
    CHECK_EQ_STR(tq_msg_type_name(0x7f), "UNKNOWN");
    CHECK_EQ_STR(tq_err_code_name(TQ_ERR_NOT_REGISTERED), "not registered");
    CHECK_EQ_STR(tq_err_code_name(999), "unknown error");
}

/* ---- head ---------------------------------------------------------------- */

static void test_head(void)
{
    tq_err_t err;
    int type;
    tq_bytes_t body;
    static const uint8_t ok[] = {'T', 'Q', 1, 0x03};
    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){ok, 4}, &type, &body, &err), 0);
    CHECK_EQ_INT(type, TQ_MSG_HEARTBEAT);
    CHECK_EQ_INT(body.len, 0);

    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){NULL, 0}, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK(strstr(err.msg, "empty") != NULL);

    for (size_t n = 1; n < TQ_HEAD_SIZE; n++) {
        uint8_t *keep;
        tq_bytes_t b = exact_copy(ok, n, &keep);
        CHECK_EQ_INT(tq_decode_head(b, &type, &body, &err), -1);
        CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
        free(keep);
    }

    static const uint8_t sig[] = {'G', 'E', 'T', ' ', '/'};
    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){sig, sizeof sig}, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_SIGNATURE);

    static const uint8_t ver[] = {'T', 'Q', 2, 0x03};
    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){ver, 4}, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_VERSION);
    CHECK(strstr(err.msg, "version 2") != NULL);

    static const uint8_t unk[] = {'T', 'Q', 1, 0x0B};
    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){unk, 4}, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_UNKNOWN_TYPE);
    static const uint8_t unk2[] = {'T', 'Q', 1, 0xff};
    CHECK_EQ_INT(tq_decode_head((tq_bytes_t){unk2, 4}, &type, &body, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_UNKNOWN_TYPE);
}

/* ---- round trips ----------------------------------------------------------- */

static void test_control_roundtrip(void)
{
    tq_out_t o;
    tq_out_init(&o);
    tq_err_t err;
    tq_bytes_t body;
    void *j = NULL;

    static const int empties[] = {TQ_MSG_HEARTBEAT, TQ_MSG_BYE, TQ_MSG_DRAIN};
    for (size_t i = 0; i < 3; i++) {
        tq_out_begin(&o, empties[i]);
        CHECK_EQ_INT(o.head.len, 4);
        CHECK_EQ_INT(o.nparts, 0);
        expect_head(&o, empties[i], &body);
        CHECK_EQ_INT(tq_decode_empty(body, 0, &err), 0);
    }
    static const uint8_t hb_body[] = {0};
    CHECK_EQ_INT(tq_decode_empty((tq_bytes_t){hb_body, 1}, 0, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK_EQ_INT(tq_decode_empty((tq_bytes_t){NULL, 0}, 1, &err), -1);

    /* HELLO worker */
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "role", "worker");
    cJSON_AddStringToObject(h, "name", "host:42");
    cJSON_AddNumberToObject(h, "slots", 4);
    cJSON *fns = cJSON_AddArrayToObject(h, "functions");
    cJSON_AddItemToArray(fns, cJSON_CreateString("square"));
    cJSON_AddItemToArray(fns, cJSON_CreateString("echo"));
    tq_out_json(&o, TQ_MSG_HELLO, h);
    cJSON_Delete(h);
    expect_head(&o, TQ_MSG_HELLO, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    CHECK(j != NULL);
    if (j) {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(j, "role");
        CHECK(cJSON_IsString(role) && strcmp(role->valuestring, "worker") == 0);
        cJSON *slots = cJSON_GetObjectItemCaseSensitive(j, "slots");
        CHECK(cJSON_IsNumber(slots) && slots->valueint == 4);
        CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "functions")), 2);
        cJSON_Delete(j);
    }

    /* WELCOME, STATUS ({} from NULL), STATUS_REPLY */
    cJSON *w = cJSON_CreateObject();
    cJSON_AddNumberToObject(w, "version", 1);
    cJSON_AddNumberToObject(w, "heartbeat_ms", 1000);
    tq_out_json(&o, TQ_MSG_WELCOME, w);
    cJSON_Delete(w);
    expect_head(&o, TQ_MSG_WELCOME, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    cJSON_Delete(j);

    tq_out_json(&o, TQ_MSG_STATUS, NULL);
    expect_head(&o, TQ_MSG_STATUS, &body);
    CHECK(tq_bytes_eq_str(body, "{}"));
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    cJSON_Delete(j);

    cJSON *s = cJSON_CreateObject();
    cJSON_AddArrayToObject(s, "queues");
    tq_out_json(&o, TQ_MSG_STATUS_REPLY, s);
    cJSON_Delete(s);
    expect_head(&o, TQ_MSG_STATUS_REPLY, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_STATUS_JSON, &j, &err), 0);
    cJSON_Delete(j);

    /* ERROR */
    tq_out_error(&o, TQ_ERR_NOT_REGISTERED, 77, "not registered: say \"HELLO\" first");
    expect_head(&o, TQ_MSG_ERROR, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    if (j) {
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(j, "code")->valueint, 6);
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(j, "ref")->valuedouble, 77);
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(j, "message")->valuestring,
                     "not registered: say \"HELLO\" first");
        cJSON_Delete(j);
    }

    /* ERROR text: capped on a character boundary, non-UTF-8 replaced */
    char big[2000];
    size_t bn = 0;
    big[bn++] = 'x';
    big[bn++] = (char)0xff; /* not UTF-8 */
    while (bn + 2 < sizeof big) {
        big[bn++] = (char)0xc3; /* e-acute, 2 bytes */
        big[bn++] = (char)0xa9;
    }
    big[bn] = 0;
    tq_out_error(&o, TQ_ERR_MALFORMED, 4294967295u, big);
    expect_head(&o, TQ_MSG_ERROR, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    if (j) {
        const char *m = cJSON_GetObjectItemCaseSensitive(j, "message")->valuestring;
        size_t ml = strlen(m);
        CHECK(ml < TQ_MAX_ERROR_TEXT);
        CHECK(ml >= TQ_MAX_ERROR_TEXT - 2);
        CHECK(m[0] == 'x' && m[1] == '?');
        CHECK((uint8_t)m[ml - 1] == 0xa9); /* ends on a whole character */
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "ref")->valuedouble == 4294967295.0);
        cJSON_Delete(j);
    }
    tq_out_error(&o, TQ_ERR_INTERNAL, 0, NULL);
    expect_head(&o, TQ_MSG_ERROR, &body);
    CHECK_EQ_INT(tq_decode_json(body, 0, TQ_MAX_JSON, &j, &err), 0);
    cJSON_Delete(j);

    tq_out_free(&o);
}

/* tq_json_uint: integers in range, everything else refused, and no
 * undefined conversion at or past 2^64. */
static void test_json_uint(void)
{
    cJSON *doc = cJSON_Parse("{\"a\":7,\"b\":7.5,\"c\":-1,\"d\":\"7\",\"e\":18446744073709551616,"
                             "\"f\":1e300,\"g\":9007199254740992,\"h\":0,\"i\":4096}");
    CHECK(doc != NULL);
    uint64_t v = 99;
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "a"), 1, 10, &v), 0);
    CHECK(v == 7);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "a"), 8, 10, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "a"), 0, 6, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "b"), 0, 10, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "c"), 0, 10, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "d"), 0, 10, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "e"), 0, UINT64_MAX, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "f"), 0, UINT64_MAX, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "g"), 0, UINT64_MAX, &v), 0);
    CHECK(v == 9007199254740992ull);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "h"), 0, 0, &v), 0);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "h"), 1, 5, &v), -1);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "i"), 1, 4096, &v), 0);
    CHECK_EQ_INT(tq_json_uint(cJSON_GetObjectItem(doc, "nosuch"), 0, 10, &v), -1);
    CHECK(v == 4096); /* untouched on failure */
    cJSON_Delete(doc);
}

static void test_json_rejects(void)
{
    tq_err_t err;
    void *j = (void *)1;
    const char *bad[] = {"[1,2]", "\"str\"", "42",   "null", "",
                         "{",     "{\"a\":", "{} x", "{}{}", "{\"a\":12"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *keep;
        tq_bytes_t b = exact_copy((const uint8_t *)bad[i], strlen(bad[i]), &keep);
        CHECK_EQ_INT(tq_decode_json(b, 0, TQ_MAX_JSON, &j, &err), -1);
        CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
        CHECK(j == NULL);
        free(keep);
    }
    CHECK(strstr(err.msg, "JSON") != NULL);
    {
        uint8_t *keep;
        tq_bytes_t b = exact_copy((const uint8_t *)"[1]", 3, &keep);
        CHECK_EQ_INT(tq_decode_json(b, 0, TQ_MAX_JSON, &j, &err), -1);
        CHECK(strstr(err.msg, "not an object") != NULL);
        free(keep);
    }
    /* trailing whitespace is fine, a NUL is not */
    uint8_t *keep;
    tq_bytes_t b = exact_copy((const uint8_t *)"{\"a\":1} \n", 9, &keep);
    CHECK_EQ_INT(tq_decode_json(b, 0, TQ_MAX_JSON, &j, &err), 0);
    cJSON_Delete(j);
    free(keep);
    static const uint8_t nul[] = {'{', '"', 'a', '"', ':', '"', 0, '"', '}'};
    CHECK_EQ_INT(tq_decode_json((tq_bytes_t){nul, sizeof nul}, 0, TQ_MAX_JSON, &j, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    /* too long: a valid object one byte over the cap */
    size_t cap = 100;
    char *big = malloc(cap + 2);
    memset(big, ' ', cap + 1);
    big[0] = '{';
    big[cap] = '}';
    big[cap + 1] = 0;
    CHECK_EQ_INT(tq_decode_json((tq_bytes_t){(uint8_t *)big, cap}, 0, cap, &j, &err),
                 -1); /* "{  ..." unfinished */
    CHECK_EQ_INT(tq_decode_json((tq_bytes_t){(uint8_t *)big, cap + 1}, 0, cap, &j, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_LARGE);
    CHECK_EQ_INT(tq_decode_json((tq_bytes_t){(uint8_t *)big, cap + 1}, 0, cap + 1, &j, &err), 0);
    cJSON_Delete(j);
    free(big);

    /* data frames are not allowed with JSON */
    CHECK_EQ_INT(tq_decode_json(B("{}"), 1, TQ_MAX_JSON, &j, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
}

static tq_task_spec_t spec(const char *fn, const char *queue, const char *key, int32_t prio,
                           uint32_t timeout, uint16_t retries, const char *payload)
{
    tq_task_spec_t t = {B(fn), B(queue), B(key), prio, timeout, retries, B(payload), 0};
    return t;
}

static tq_task_spec_t g_specs[TQ_MAX_BATCH];

static void test_submit_roundtrip(void)
{
    tq_out_t o;
    tq_out_init(&o);
    tq_task_spec_t in[3] = {
        spec("square", "", "", 0, 0, 0, "7"),
        spec("echo", "fast.q", "key-1", -5, 30000, 3, ""),
        spec("a:b.c-d_e", "q", "k", INT32_MAX, UINT32_MAX, UINT16_MAX, "payload with \0 nul"),
    };
    in[2].payload.len = 18; /* include the embedded NUL */
    tq_out_begin_submit(&o, 0xa1b2c3d4, TQ_SUBMIT_SUBSCRIBE);
    for (int i = 0; i < 3; i++)
        tq_out_submit_task(&o, &in[i]);
    CHECK_EQ_INT(tq_out_count(&o), 3);
    CHECK_EQ_INT(o.nparts, 3);
    CHECK_EQ_INT(o.part_bytes, 1 + 0 + 18);
    CHECK(!tq_out_full(&o));

    tq_bytes_t body;
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    uint32_t req = 0;
    uint16_t flags = 0;
    size_t n = 0;
    tq_err_t err;
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, o.nparts, TQ_PAYLOAD_DEFAULT_MAX, &req, &flags,
                                  g_specs, &n, &err),
                 0);
    CHECK(req == 0xa1b2c3d4);
    CHECK_EQ_INT(flags, TQ_SUBMIT_SUBSCRIBE);
    CHECK_EQ_INT(n, 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK(tq_bytes_eq(g_specs[i].fn, in[i].fn));
        CHECK(tq_bytes_eq(g_specs[i].queue, in[i].queue));
        CHECK(tq_bytes_eq(g_specs[i].key, in[i].key));
        CHECK_EQ_INT(g_specs[i].priority, in[i].priority);
        CHECK(g_specs[i].timeout_ms == in[i].timeout_ms);
        CHECK_EQ_INT(g_specs[i].retries, in[i].retries);
        CHECK(tq_bytes_eq(g_specs[i].payload, in[i].payload));
    }

    /* the builder is reused: begin again discards the previous message */
    tq_out_begin_submit(&o, 1, 0);
    tq_out_submit_task(&o, &in[0]);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, o.nparts, 10, &req, &flags, g_specs, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(req, 1);
    CHECK_EQ_INT(flags, 0);
    tq_out_free(&o);
}

static void test_ids_roundtrip(void)
{
    static const int types[] = {TQ_MSG_WAIT, TQ_MSG_CANCEL, TQ_MSG_SUBMIT_ACK};
    static uint64_t ids[TQ_MAX_BATCH];
    tq_out_t o;
    tq_out_init(&o);
    tq_err_t err;
    tq_bytes_t body;
    for (size_t k = 0; k < 3; k++) {
        tq_out_begin_ids(&o, types[k], 900 + (uint32_t)k);
        for (uint64_t i = 0; i < 5; i++)
            tq_out_id(&o, (i << 40) + i + k);
        expect_head(&o, types[k], &body);
        uint32_t req = 0;
        size_t n = 0;
        int rc = types[k] == TQ_MSG_SUBMIT_ACK ? tq_decode_submit_ack(body, 0, &req, ids, &n, &err)
                                               : tq_decode_ids(body, 0, &req, ids, &n, &err);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(req, 900 + k);
        CHECK_EQ_INT(n, 5);
        for (uint64_t i = 0; i < 5; i++)
            CHECK(ids[i] == (i << 40) + i + k);
    }
    /* an empty list is well-formed */
    tq_out_begin_ids(&o, TQ_MSG_WAIT, 5);
    expect_head(&o, TQ_MSG_WAIT, &body);
    uint32_t req;
    size_t n = 99;
    CHECK_EQ_INT(tq_decode_ids(body, 0, &req, ids, &n, &err), 0);
    CHECK_EQ_INT(n, 0);

    /* full batch: TQ_MAX_BATCH ids, then tq_out_full */
    tq_out_begin_ids(&o, TQ_MSG_CANCEL, 6);
    for (uint64_t i = 0; i < TQ_MAX_BATCH; i++) {
        CHECK(!tq_out_full(&o));
        tq_out_id(&o, i);
    }
    CHECK(tq_out_full(&o));
    expect_head(&o, TQ_MSG_CANCEL, &body);
    CHECK_EQ_INT(tq_decode_ids(body, 0, &req, ids, &n, &err), 0);
    CHECK_EQ_INT(n, TQ_MAX_BATCH);
    CHECK(ids[TQ_MAX_BATCH - 1] == TQ_MAX_BATCH - 1);

    /* CANCEL_ACK */
    static tq_cancel_item_t ci[TQ_MAX_BATCH];
    tq_out_begin_cancel_ack(&o, 31);
    tq_out_cancel_item(&o, 10, TQ_CANCEL_OK);
    tq_out_cancel_item(&o, 11, TQ_CANCEL_FINISHED);
    tq_out_cancel_item(&o, 12, TQ_CANCEL_UNKNOWN);
    expect_head(&o, TQ_MSG_CANCEL_ACK, &body);
    CHECK_EQ_INT(tq_decode_cancel_ack(body, 0, &req, ci, &n, &err), 0);
    CHECK_EQ_INT(req, 31);
    CHECK_EQ_INT(n, 3);
    CHECK(ci[1].id == 11 && ci[1].outcome == TQ_CANCEL_FINISHED);
    CHECK(ci[2].id == 12 && ci[2].outcome == TQ_CANCEL_UNKNOWN);
    /* outcome out of range */
    o.head.data[o.head.len - 1] = 3;
    CHECK_EQ_INT(tq_decode_cancel_ack(body, 0, &req, ci, &n, &err), -1);
    CHECK(strstr(err.msg, "CANCEL_ACK record 2") != NULL);

    /* RELEASE and KILL */
    static tq_lease_ref_t lr[TQ_MAX_BATCH];
    static const int ltypes[] = {TQ_MSG_RELEASE, TQ_MSG_KILL};
    for (size_t k = 0; k < 2; k++) {
        tq_out_begin(&o, ltypes[k]);
        tq_out_lease(&o, 1, 1);
        tq_out_lease(&o, UINT64_MAX, UINT32_MAX);
        expect_head(&o, ltypes[k], &body);
        CHECK_EQ_INT(tq_decode_leases(body, 0, lr, &n, &err), 0);
        CHECK_EQ_INT(n, 2);
        CHECK(lr[0].id == 1 && lr[0].attempt == 1);
        CHECK(lr[1].id == UINT64_MAX && lr[1].attempt == UINT32_MAX);
        CHECK_EQ_INT(tq_decode_leases(body, 1, lr, &n, &err), -1);
        CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    }
    tq_out_free(&o);
}

static void test_data_roundtrip(void)
{
    tq_out_t o;
    tq_out_init(&o);
    tq_err_t err;
    tq_bytes_t body;
    size_t n;

    /* DISPATCH */
    static tq_dispatch_item_t d[TQ_MAX_BATCH];
    tq_dispatch_item_t din[2] = {{42, 1, 0, B("square"), B("9")},
                                 {43, 7, 5000, B("echo"), B("hello world")}};
    tq_out_begin(&o, TQ_MSG_DISPATCH);
    tq_out_dispatch_item(&o, &din[0]);
    tq_out_dispatch_item(&o, &din[1]);
    expect_head(&o, TQ_MSG_DISPATCH, &body);
    CHECK_EQ_INT(tq_decode_dispatch(body, o.parts, o.nparts, d, &n, &err), 0);
    CHECK_EQ_INT(n, 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK(d[i].id == din[i].id && d[i].attempt == din[i].attempt);
        CHECK(d[i].timeout_ms == din[i].timeout_ms);
        CHECK(tq_bytes_eq(d[i].fn, din[i].fn));
        CHECK(tq_bytes_eq(d[i].payload, din[i].payload));
    }
    /* bad fn in a DISPATCH */
    tq_dispatch_item_t bad = {1, 1, 0, B("no good"), B("")};
    tq_out_begin(&o, TQ_MSG_DISPATCH);
    tq_out_dispatch_item(&o, &bad);
    expect_head(&o, TQ_MSG_DISPATCH, &body);
    CHECK_EQ_INT(tq_decode_dispatch(body, o.parts, o.nparts, d, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_BAD_NAME);

    /* RESULT */
    static tq_result_item_t r[TQ_MAX_BATCH];
    tq_result_item_t rin[3] = {{42, 1, TQ_RUN_OK, B("9 * 9 = 81")},
                               {43, 7, TQ_RUN_FAILED, B("boom")},
                               {44, 2, TQ_RUN_TIMEOUT, B("")}};
    tq_out_begin_result(&o, 3);
    for (int i = 0; i < 3; i++)
        tq_out_result_item(&o, &rin[i]);
    expect_head(&o, TQ_MSG_RESULT, &body);
    uint16_t credit = 0;
    CHECK_EQ_INT(tq_decode_result(body, o.parts, o.nparts, 100, &credit, r, &n, &err), 0);
    CHECK_EQ_INT(credit, 3);
    CHECK_EQ_INT(n, 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK(r[i].id == rin[i].id && r[i].attempt == rin[i].attempt);
        CHECK_EQ_INT(r[i].status, rin[i].status);
        CHECK(tq_bytes_eq(r[i].data, rin[i].data));
    }
    /* over max_payload names the record and the sizes */
    CHECK_EQ_INT(tq_decode_result(body, o.parts, o.nparts, 5, &credit, r, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_LARGE);
    CHECK_EQ_STR(err.msg, "RESULT record 0: data is 10 bytes, max 5");
    /* a credit-only RESULT (no records) is well-formed */
    tq_out_begin_result(&o, 1);
    expect_head(&o, TQ_MSG_RESULT, &body);
    CHECK_EQ_INT(tq_decode_result(body, o.parts, o.nparts, 100, &credit, r, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(credit, 1);
    tq_out_begin_result(&o, TQ_MAX_SLOTS + 1);
    expect_head(&o, TQ_MSG_RESULT, &body);
    CHECK_EQ_INT(tq_decode_result(body, o.parts, o.nparts, 100, &credit, r, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);
    /* run status out of range */
    tq_result_item_t rbad = {1, 1, 3, B("")};
    tq_out_begin_result(&o, 1);
    tq_out_result_item(&o, &rbad);
    expect_head(&o, TQ_MSG_RESULT, &body);
    CHECK_EQ_INT(tq_decode_result(body, o.parts, o.nparts, 100, &credit, r, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    /* RESULTS */
    static tq_outcome_t oc[TQ_MAX_BATCH];
    tq_outcome_t ocin[5] = {{1, TQ_ST_DONE, 1, B("1 * 1 = 1")},
                            {2, TQ_ST_FAILED, 2, B("exit 3")},
                            {3, TQ_ST_CANCELLED, 0, B("")},
                            {4, TQ_ST_UNKNOWN, 0, B("")},
                            {5, TQ_ST_DEAD, 4, B("last error")}};
    tq_out_begin(&o, TQ_MSG_RESULTS);
    for (int i = 0; i < 5; i++)
        tq_out_outcome(&o, &ocin[i]);
    expect_head(&o, TQ_MSG_RESULTS, &body);
    CHECK_EQ_INT(tq_decode_results(body, o.parts, o.nparts, oc, &n, &err), 0);
    CHECK_EQ_INT(n, 5);
    for (size_t i = 0; i < 5; i++) {
        CHECK(oc[i].id == ocin[i].id && oc[i].attempts == ocin[i].attempts);
        CHECK_EQ_INT(oc[i].status, ocin[i].status);
        CHECK(tq_bytes_eq(oc[i].data, ocin[i].data));
    }
    tq_outcome_t obad = {1, 0, 1, B("")};
    tq_out_begin(&o, TQ_MSG_RESULTS);
    tq_out_outcome(&o, &obad);
    expect_head(&o, TQ_MSG_RESULTS, &body);
    CHECK_EQ_INT(tq_decode_results(body, o.parts, o.nparts, oc, &n, &err), -1);
    CHECK(strstr(err.msg, "status 0 not valid") != NULL);

    /* TQ_SEND_BYTES of data close a batch (below what receivers take) */
    static uint8_t blob[TQ_SEND_BYTES / 2];
    tq_outcome_t big = {9, TQ_ST_DONE, 1, {blob, sizeof blob}};
    tq_out_begin(&o, TQ_MSG_RESULTS);
    tq_out_outcome(&o, &big);
    CHECK(!tq_out_full(&o));
    tq_out_outcome(&o, &big);
    CHECK(tq_out_full(&o));
    tq_out_free(&o);
}

/* ---- rejections ------------------------------------------------------------ */

static void build_submit(tq_out_t *o, size_t ntasks)
{
    tq_out_begin_submit(o, 7, 0);
    for (size_t i = 0; i < ntasks; i++) {
        tq_task_spec_t t = spec(i % 2 ? "echo" : "square", i % 2 ? "q1" : "", i % 3 ? "" : "kk",
                                (int32_t)i - 1, 1000, 2, i % 2 ? "xyz" : "5");
        tq_out_submit_task(o, &t);
    }
}

static void test_submit_rejects(void)
{
    tq_out_t o;
    tq_out_init(&o);
    tq_err_t err;
    tq_bytes_t body;
    uint32_t req;
    uint16_t flags;
    size_t n;

    /* truncated at every byte boundary of a 3-record SUBMIT */
    build_submit(&o, 3);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 3, 100, &req, &flags, g_specs, &n, &err), 0);
    int all_malformed = 1, all_named = 1;
    for (size_t len = 0; len < body.len; len++) {
        uint8_t *keep;
        tq_bytes_t cut = exact_copy(body.data, len, &keep);
        if (tq_decode_submit(cut, o.parts, 3, 100, &req, &flags, g_specs, &n, &err) != -1 ||
            err.code != TQ_ERR_MALFORMED)
            all_malformed = 0;
        if (!strstr(err.msg, "SUBMIT"))
            all_named = 0;
        free(keep);
    }
    CHECK(all_malformed);
    CHECK(all_named);
    /* the message names the record and field */
    {
        uint8_t *keep;
        tq_bytes_t cut = exact_copy(body.data, 8 + 1, &keep); /* fixed fields + fn length */
        CHECK_EQ_INT(tq_decode_submit(cut, o.parts, 3, 100, &req, &flags, g_specs, &n, &err), -1);
        CHECK_EQ_STR(err.msg, "SUBMIT record 0: truncated at fn");
        free(keep);
    }

    /* trailing bytes */
    tq_buf_u8(&o.head, 0);
    tq_buf_u8(&o.head, 0);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 3, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK_EQ_STR(err.msg, "SUBMIT: 2 bytes left over after 3 records");
    CHECK_EQ_INT(req, 7); /* req is known even when the rest is bad */

    /* count vs frame mismatch, both ways */
    build_submit(&o, 3);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 2, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK(strstr(err.msg, "count is 3 but 2 data frames") != NULL);
    tq_bytes_t four[4] = {B("1"), B("2"), B("3"), B("4")};
    CHECK_EQ_INT(tq_decode_submit(body, four, 4, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    /* count > TQ_MAX_BATCH */
    tq_buf_patch_u16(&o.head, o.count_off, TQ_MAX_BATCH + 1);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 3, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);

    /* count 0 */
    tq_out_begin_submit(&o, 7, 0);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, NULL, 0, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    /* unknown flags */
    tq_out_begin_submit(&o, 7, 0x8000);
    tq_task_spec_t ok = spec("square", "", "", 0, 0, 0, "1");
    tq_out_submit_task(&o, &ok);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 1, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);

    /* bad fn name in record 3, bad queue, empty fn */
    const char *badfn[] = {"", "two words", "semi;colon", "\xff"};
    for (size_t k = 0; k < 4; k++) {
        tq_out_begin_submit(&o, 7, 0);
        for (int i = 0; i < 3; i++)
            tq_out_submit_task(&o, &ok);
        tq_task_spec_t t = spec(badfn[k], "", "", 0, 0, 0, "1");
        tq_out_submit_task(&o, &t);
        expect_head(&o, TQ_MSG_SUBMIT, &body);
        CHECK_EQ_INT(tq_decode_submit(body, o.parts, 4, 100, &req, &flags, g_specs, &n, &err), -1);
        CHECK_EQ_INT(err.code, TQ_ERR_BAD_NAME);
        CHECK_EQ_STR(err.msg, "SUBMIT record 3: fn name not valid");
    }
    tq_task_spec_t bq = spec("square", "bad queue", "", 0, 0, 0, "1");
    tq_out_begin_submit(&o, 7, 0);
    tq_out_submit_task(&o, &bq);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 1, 100, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_BAD_NAME);
    CHECK(strstr(err.msg, "queue") != NULL);

    /* over max_payload */
    tq_task_spec_t big = spec("square", "", "", 0, 0, 0, "0123456789");
    tq_out_begin_submit(&o, 7, 0);
    tq_out_submit_task(&o, &ok);
    tq_out_submit_task(&o, &big);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 2, 10, &req, &flags, g_specs, &n, &err), 0);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 2, 9, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_LARGE);
    CHECK_EQ_STR(err.msg, "SUBMIT record 1: payload is 10 bytes, max 9");

    /* key too long (TQ_MAX_KEY + 1), and exactly TQ_MAX_KEY */
    char key[TQ_MAX_KEY + 2];
    memset(key, 'k', sizeof key - 1);
    key[TQ_MAX_KEY + 1] = 0;
    tq_task_spec_t lk = spec("square", "", key, 0, 0, 0, "1");
    tq_out_begin_submit(&o, 7, 0);
    tq_out_submit_task(&o, &lk);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 1, 10, &req, &flags, g_specs, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_LARGE);
    CHECK(strstr(err.msg, "record 0: key") != NULL);
    key[TQ_MAX_KEY] = 0;
    lk = spec("square", "", key, 0, 0, 0, "1");
    tq_out_begin_submit(&o, 7, 0);
    tq_out_submit_task(&o, &lk);
    expect_head(&o, TQ_MSG_SUBMIT, &body);
    CHECK_EQ_INT(tq_decode_submit(body, o.parts, 1, 10, &req, &flags, g_specs, &n, &err), 0);
    CHECK_EQ_INT(g_specs[0].key.len, TQ_MAX_KEY);

    tq_out_free(&o);
}

static void test_other_rejects(void)
{
    tq_err_t err;
    uint64_t ids[TQ_MAX_BATCH];
    static tq_outcome_t oc[TQ_MAX_BATCH];
    static tq_result_item_t r[TQ_MAX_BATCH];
    static tq_dispatch_item_t d[TQ_MAX_BATCH];
    uint32_t req;
    size_t n;
    uint16_t credit;
    tq_out_t o;
    tq_out_init(&o);
    tq_bytes_t body;

    /* ids: truncated at every boundary, trailing bytes, parts, too many */
    tq_out_begin_ids(&o, TQ_MSG_WAIT, 1);
    tq_out_id(&o, 1);
    tq_out_id(&o, 2);
    expect_head(&o, TQ_MSG_WAIT, &body);
    for (size_t len = 0; len < body.len; len++) {
        uint8_t *keep;
        tq_bytes_t cut = exact_copy(body.data, len, &keep);
        CHECK_EQ_INT(tq_decode_ids(cut, 0, &req, ids, &n, &err), -1);
        CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
        free(keep);
    }
    CHECK_EQ_INT(tq_decode_ids(body, 2, &req, ids, &n, &err), -1);
    tq_buf_u8(&o.head, 9);
    expect_head(&o, TQ_MSG_WAIT, &body);
    CHECK_EQ_INT(tq_decode_ids(body, 0, &req, ids, &n, &err), -1);
    CHECK(strstr(err.msg, "1 bytes left over after 2 records") != NULL);
    tq_buf_patch_u16(&o.head, o.count_off, 0xffff);
    CHECK_EQ_INT(tq_decode_ids(body, 0, &req, ids, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);

    /* DISPATCH / RESULT / RESULTS: count vs frames and truncation */
    tq_dispatch_item_t di = {1, 1, 0, B("square"), B("2")};
    tq_out_begin(&o, TQ_MSG_DISPATCH);
    tq_out_dispatch_item(&o, &di);
    tq_out_dispatch_item(&o, &di);
    expect_head(&o, TQ_MSG_DISPATCH, &body);
    CHECK_EQ_INT(tq_decode_dispatch(body, o.parts, 1, d, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    for (size_t len = 0; len < body.len; len++) {
        uint8_t *keep;
        tq_bytes_t cut = exact_copy(body.data, len, &keep);
        CHECK_EQ_INT(tq_decode_dispatch(cut, o.parts, 2, d, &n, &err), -1);
        free(keep);
    }
    tq_result_item_t ri = {1, 1, 0, B("x")};
    tq_out_begin_result(&o, 1);
    tq_out_result_item(&o, &ri);
    expect_head(&o, TQ_MSG_RESULT, &body);
    CHECK_EQ_INT(tq_decode_result(body, o.parts, 0, 10, &credit, r, &n, &err), -1);
    for (size_t len = 0; len < body.len; len++) {
        uint8_t *keep;
        tq_bytes_t cut = exact_copy(body.data, len, &keep);
        CHECK_EQ_INT(tq_decode_result(cut, o.parts, 1, 10, &credit, r, &n, &err), -1);
        free(keep);
    }
    tq_buf_u32(&o.head, 0);
    expect_head(&o, TQ_MSG_RESULT, &body);
    CHECK_EQ_INT(tq_decode_result(body, o.parts, 1, 10, &credit, r, &n, &err), -1);
    CHECK_EQ_STR(err.msg, "RESULT: 4 bytes left over after 1 records");
    tq_outcome_t oi = {1, TQ_ST_DONE, 1, B("x")};
    tq_out_begin(&o, TQ_MSG_RESULTS);
    tq_out_outcome(&o, &oi);
    expect_head(&o, TQ_MSG_RESULTS, &body);
    CHECK_EQ_INT(tq_decode_results(body, o.parts, 2, oc, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    tq_out_free(&o);
}


/* ---- control messages (tq_ctl.h) ------------------------------------------------ */

static int welcome_of(const char *json, tq_welcome_t *w, tq_err_t *err)
{
    return tq_welcome_decode(B(json), 0, w, err);
}

static void test_ctl_welcome(void)
{
    tq_welcome_t w;
    tq_err_t err;
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":5000,"
                            "\"max_payload\":67108864,\"master\":\"taskq-master 0.1.0\","
                            "\"packed\":true,\"future\":[1]}",
                            &w, &err),
                 0);
    CHECK_EQ_INT(w.heartbeat_ms, 1000);
    CHECK_EQ_INT(w.heartbeat_timeout_ms, 5000);
    CHECK_EQ_INT(w.max_payload, 67108864);
    CHECK_EQ_INT(w.packed, 1);
    CHECK_EQ_STR(w.master, "taskq-master 0.1.0");
    /* the one bound for every receiver (the client took 3,600,000, the
     * worker 600,000) */
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":600000,\"heartbeat_timeout_ms\":"
                            "3600000,\"max_payload\":1}",
                            &w, &err),
                 0);
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":600001,\"heartbeat_timeout_ms\":"
                            "3600000,\"max_payload\":1}",
                            &w, &err),
                 -1);
    CHECK_EQ_STR(err.msg, "WELCOME: \"heartbeat_ms\" must be an integer 10..600000");
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":3600000,\"heartbeat_timeout_ms\":"
                            "36000000,\"max_payload\":1}",
                            &w, &err),
                 -1);
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":9,\"heartbeat_timeout_ms\":"
                            "5000,\"max_payload\":1}",
                            &w, &err),
                 -1);
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":"
                            "1000,\"max_payload\":1}",
                            &w, &err),
                 -1);
    CHECK(strstr(err.msg, "must be greater than") != NULL);
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":"
                            "5000}",
                            &w, &err),
                 -1);
    CHECK_EQ_STR(err.msg, "WELCOME: \"max_payload\" missing");
    CHECK_EQ_INT(welcome_of("{\"version\":2,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":"
                            "5000,\"max_payload\":1}",
                            &w, &err),
                 -1);
    CHECK_EQ_INT(welcome_of("{\"version\":1,\"heartbeat_ms\":1000,\"heartbeat_timeout_ms\":"
                            "5000,\"max_payload\":1,\"packed\":1}",
                            &w, &err),
                 -1);
    CHECK_EQ_INT(welcome_of("[]", &w, &err), -1);

    /* the encoder gives back what the decoder takes */
    tq_out_t o;
    tq_out_init(&o);
    tq_welcome_t in, back;
    memset(&in, 0, sizeof in);
    in = (tq_welcome_t){1, 200, 1000, 1048576, "m", 1};
    tq_out_welcome(&o, &in);
    tq_bytes_t body;
    expect_head(&o, TQ_MSG_WELCOME, &body);
    CHECK_EQ_INT(tq_welcome_decode(body, 0, &back, &err), 0);
    CHECK_EQ_INT(back.heartbeat_ms, 200);
    CHECK_EQ_INT(back.heartbeat_timeout_ms, 1000);
    CHECK_EQ_INT(back.max_payload, 1048576);
    CHECK_EQ_STR(back.master, "m");
    CHECK_EQ_INT(back.packed, 1);
    tq_out_free(&o);
}

static void test_ctl_error_status(void)
{
    tq_errmsg_t e;
    tq_err_t err;
    CHECK_EQ_INT(tq_errmsg_decode(B("{\"code\":6,\"message\":\"not registered\",\"ref\":7}"), 0, &e,
                                  &err),
                 0);
    CHECK_EQ_INT(e.code, 6);
    CHECK_EQ_INT(e.ref, 7);
    CHECK_EQ_STR(e.message, "not registered");
    CHECK_EQ_INT(tq_errmsg_decode(B("{\"code\":\"x\"}"), 0, &e, &err), -1);
    CHECK_EQ_INT(e.code, TQ_ERR_INTERNAL);
    CHECK_EQ_INT(e.ref, 0);
    CHECK(strstr(e.message, "unreadable error") != NULL);
    /* ERROR as the encoder writes it */
    tq_out_t o;
    tq_out_init(&o);
    tq_bytes_t body;
    tq_out_error(&o, TQ_ERR_TOO_MANY, 4294967295u, "too many");
    expect_head(&o, TQ_MSG_ERROR, &body);
    CHECK_EQ_INT(tq_errmsg_decode(body, 0, &e, &err), 0);
    CHECK_EQ_INT(e.code, TQ_ERR_TOO_MANY);
    CHECK_EQ_INT(e.ref, 4294967295u);

    tq_status_req_t s;
    CHECK_EQ_INT(tq_status_req_decode(B("{}"), 0, &s, &err), 0);
    CHECK_EQ_INT(s.req, 0);
    CHECK_EQ_INT(tq_status_req_decode(B("{\"req\":9,\"queue_offset\":-1}"), 0, &s, &err), -1);
    CHECK_EQ_INT(s.req, 9); /* read first: the ERROR's ref */
    CHECK_EQ_STR(err.msg, "STATUS: \"queue_offset\" must be an integer 0..4294967295");
    tq_status_req_t sin = {12, 1000};
    tq_out_status_req(&o, &sin);
    expect_head(&o, TQ_MSG_STATUS, &body);
    CHECK_EQ_INT(tq_status_req_decode(body, 0, &s, &err), 0);
    CHECK_EQ_INT(s.req, 12);
    CHECK_EQ_INT(s.queue_offset, 1000);
    tq_out_free(&o);
}

static int hello_of(const char *json, tq_hello_t *h, tq_err_t *err)
{
    return tq_hello_decode(B(json), 0, h, err);
}

static void test_ctl_hello(void)
{
    static tq_hello_t h, back;
    tq_err_t err;
    CHECK_EQ_INT(hello_of("{\"role\":\"client\",\"name\":\"host:1\",\"slots\":\"junk\"}", &h, &err),
                 0); /* a client's worker fields are ignored */
    CHECK_EQ_INT(h.worker, 0);
    CHECK_EQ_STR(h.name, "host:1");
    CHECK_EQ_INT(hello_of("{\"role\":\"worker\",\"name\":\"w 1\",\"instance\":\"3f9c0a51d2e4b786\","
                          "\"slots\":4,\"prefetch\":2,\"busy\":6,\"packed\":true,"
                          "\"functions\":[\"square\",\"echo\"]}",
                          &h, &err),
                 0);
    CHECK_EQ_INT(h.worker, 1);
    CHECK_EQ_INT(h.slots, 4);
    CHECK_EQ_INT(h.prefetch, 2);
    CHECK_EQ_INT(h.busy, 6);
    CHECK(h.instance_id == 0x3f9c0a51d2e4b786ull);
    CHECK_EQ_INT(h.nfunctions, 2);
    CHECK_EQ_STR(h.functions[1], "echo");
    tq_out_t o;
    tq_out_init(&o);
    tq_out_hello(&o, &h);
    tq_bytes_t body;
    expect_head(&o, TQ_MSG_HELLO, &body);
    CHECK_EQ_INT(tq_hello_decode(body, 0, &back, &err), 0);
    CHECK_EQ_INT(memcmp(&h, &back, sizeof h), 0);
    tq_out_free(&o);

    static const struct {
        const char *json;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"role\":\"boss\",\"name\":\"x\"}", TQ_ERR_MALFORMED, "HELLO: \"role\" must be"},
        {"{\"role\":\"client\",\"name\":\"\"}", TQ_ERR_BAD_NAME, "HELLO: \"name\" must be 1..128"},
        {"{\"role\":\"client\",\"name\":\"a\\tb\"}", TQ_ERR_BAD_NAME, "HELLO: \"name\""},
        {"{\"role\":\"client\",\"name\":\"x\",\"packed\":1}", TQ_ERR_MALFORMED,
         "HELLO: \"packed\" must be true or false"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"functions\":[\"f\"]}", TQ_ERR_MALFORMED,
         "HELLO: \"slots\" missing"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":0,\"functions\":[\"f\"]}", TQ_ERR_MALFORMED,
         "HELLO: \"slots\" must be an integer 1..4096"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"busy\":2,\"functions\":[\"f\"]}",
         TQ_ERR_MALFORMED, "HELLO: \"busy\" must be an integer 0..slots+prefetch (1)"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"instance\":\"0000000000000000\","
         "\"functions\":[\"f\"]}",
         TQ_ERR_MALFORMED, "HELLO: \"instance\""},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"instance\":\"3F9C0A51D2E4B786\","
         "\"functions\":[\"f\"]}",
         TQ_ERR_MALFORMED, "HELLO: \"instance\""},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"functions\":[]}", TQ_ERR_MALFORMED,
         "HELLO: \"functions\" must be a non-empty array"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"functions\":[\"a b\"]}",
         TQ_ERR_BAD_NAME, "HELLO: functions[0] is not a valid name"},
        {"{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"functions\":[\"f\",3]}",
         TQ_ERR_BAD_NAME, "HELLO: functions[1] is not a valid name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(hello_of(bad[i].json, &h, &err), -1);
        CHECK_EQ_INT(err.code, bad[i].code);
        CHECK(strncmp(err.msg, bad[i].msg, strlen(bad[i].msg)) == 0);
    }
    /* 257 functions: TOO_MANY */
    char big[4096] = "{\"role\":\"worker\",\"name\":\"x\",\"slots\":1,\"functions\":[\"f\"";
    for (int i = 0; i < TQ_MAX_FUNCTIONS; i++)
        strcat(big, ",\"f\"");
    strcat(big, "]}");
    CHECK_EQ_INT(hello_of(big, &h, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_TOO_MANY);
}

/* What the table says about req, ACK's count, and the names. */
static void test_table(void)
{
    CHECK_EQ_INT(tq_msg_has_req(TQ_MSG_SUBMIT), 1);
    CHECK_EQ_INT(tq_msg_has_req(TQ_MSG_ACK), 1);
    CHECK_EQ_INT(tq_msg_has_req(TQ_MSG_RESULT), 0);
    CHECK_EQ_INT(tq_msg_has_req(TQ_MSG_STATUS), 0);
    uint8_t b[] = {0x2a, 0, 0, 0, 9};
    tq_bytes_t body = {b, sizeof b};
    CHECK_EQ_INT(tq_msg_peek_req(TQ_MSG_SUBMIT, body), 42);
    CHECK_EQ_INT(tq_msg_peek_req(TQ_MSG_RESULTS, body), 0);
    body.len = 3;
    CHECK_EQ_INT(tq_msg_peek_req(TQ_MSG_WAIT, body), 0);
    CHECK_EQ_STR(tq_msg_type_name(TQ_MSG_CANCEL_ACK), "CANCEL_ACK");
    CHECK_EQ_STR(tq_msg_type_name(0x1C), "UNKNOWN"); /* no message has 0x1C */

    /* ACK is 1..1024 ids (PROTOCOL.md 4): an empty one is refused, with
     * its req for the ERROR's ref */
    tq_out_t o;
    tq_out_init(&o);
    tq_out_begin_ids(&o, TQ_MSG_ACK, 77);
    tq_bytes_t hb;
    expect_head(&o, TQ_MSG_ACK, &hb);
    uint32_t req = 0;
    uint64_t ids[TQ_MAX_BATCH];
    size_t n = 9;
    tq_err_t err;
    CHECK_EQ_INT(tq_decode_req_ids(TQ_MSG_ACK, hb, 0, &req, ids, &n, &err), -1);
    CHECK_EQ_INT(err.code, TQ_ERR_MALFORMED);
    CHECK_EQ_STR(err.msg, "ACK: count is 0, need at least 1");
    CHECK_EQ_INT(req, 77);
    /* WAIT and CANCEL may be empty */
    tq_out_begin_ids(&o, TQ_MSG_WAIT, 78);
    expect_head(&o, TQ_MSG_WAIT, &hb);
    CHECK_EQ_INT(tq_decode_req_ids(TQ_MSG_WAIT, hb, 0, &req, ids, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    tq_out_free(&o);
}

int main(void)
{
    RUN(test_wire);
    RUN(test_names);
    RUN(test_head);
    RUN(test_control_roundtrip);
    RUN(test_json_rejects);
    RUN(test_json_uint);
    RUN(test_submit_roundtrip);
    RUN(test_ids_roundtrip);
    RUN(test_data_roundtrip);
    RUN(test_submit_rejects);
    RUN(test_other_rejects);
    RUN(test_ctl_welcome);
    RUN(test_ctl_error_status);
    RUN(test_ctl_hello);
    RUN(test_table);
    TEST_MAIN_END();
}
