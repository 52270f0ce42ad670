/* tq_proto_fuzz.c - fuzz target of the protocol decoders: any byte string
 * becomes a multipart message (layout in tq_proto_fuzz.h), each frame in
 * its own exactly-sized heap block so that AddressSanitizer reports any
 * read past a frame, and the message is decoded as a master or a peer
 * would: tq_decode_head, then the decoder of the type.
 *
 * On success the decoder's promises are checked: counts within
 * TQ_MAX_BATCH and equal to the data frames, every view inside its frame,
 * names valid, statuses and limits in range, and the decoded records
 * re-encoded with the tq_out_* builders give back frame 0 byte for byte
 * (so a decoder cannot accept anything but the canonical encoding). On
 * failure the error must carry a known code and a terminated message.
 *
 * Built two ways: with -fsanitize=fuzzer for libFuzzer, and linked with
 * tq_proto_fuzz_main.c as the deterministic `proto_fuzz` unit test. */
#include "tq_proto_fuzz.h"

#include "tq_ctl.h"
#include "tq_proto.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const size_t max_payloads[8] = {
    0, 1, 7, 64, 4096, 65535, TQ_PAYLOAD_DEFAULT_MAX, (size_t)-1,
};
static const size_t max_jsons[4] = {TQ_MAX_JSON, TQ_MAX_STATUS_JSON, 0, 16};

unsigned long tq_fuzz_accepted[257], tq_fuzz_rejected[257];

size_t tq_fuzz_max_payload(uint8_t config) { return max_payloads[config & 7]; }

size_t tq_fuzz_max_json(uint8_t config) { return max_jsons[(config >> 3) & 3]; }

static void fail(const char *what, int line)
{
    fprintf(stderr, "tq_proto_fuzz.c:%d: decoder promise broken: %s\n", line, what);
    abort();
}
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(#cond, __LINE__);                                                                 \
    } while (0)

/* Exactly n bytes on the heap (malloc(0) when n is 0: ASan reports any
 * read of it). Aborts on out-of-memory: inputs are small. */
static uint8_t *copy_exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n);
    if (!q && n)
        abort();
    if (n)
        memcpy(q, p, n);
    return q;
}

/* 1 if view v lies inside frame f (an empty view may sit anywhere, but
 * if it has an address it must still be within or at the end of f). */
static int inside(tq_bytes_t v, tq_bytes_t f)
{
    if (v.len == 0 && v.data == NULL)
        return 1;
    if (f.data == NULL)
        return v.len == 0 && v.data == NULL;
    uintptr_t vb = (uintptr_t)v.data, fb = (uintptr_t)f.data;
    return vb >= fb && vb - fb <= f.len && v.len <= f.len - (vb - fb);
}

static int same_view(tq_bytes_t a, tq_bytes_t b) { return a.data == b.data && a.len == b.len; }

/* Frame 0 re-encoded by the builder must equal the received frame 0. */
static void require_reencodes(const tq_out_t *o, tq_bytes_t frame0)
{
    REQUIRE(o->head.len == frame0.len);
    REQUIRE(memcmp(o->head.data, frame0.data, frame0.len) == 0);
}

static void require_error(int rc, const tq_err_t *err)
{
    REQUIRE(rc == -1);
    REQUIRE(err->code >= TQ_ERR_MALFORMED && err->code <= TQ_ERR_UNAVAILABLE);
    REQUIRE(strcmp(tq_err_code_name(err->code), "unknown error") != 0);
    REQUIRE(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    REQUIRE(err->msg[0] != '\0');
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

/* Output arrays of exactly TQ_MAX_BATCH records, on the heap so that
 * ASan sees a write past them; made once, as allocating ~90 KiB per
 * input dominated the run time under ASan. Still reachable at exit,
 * so not a leak. */
static void *out_array(void **slot, size_t size)
{
    if (!*slot)
        *slot = xmalloc(TQ_MAX_BATCH * size);
    return *slot;
}
static void *out_specs, *out_ids, *out_outcomes, *out_cancels, *out_dispatch, *out_results,
    *out_leases, *out_puts;

/* Decode the body of a message of `type` and check the result. */
/* The control-message validators (tq_ctl.h) on the same body: they
 * refuse with an error or fill their struct with NUL-terminated texts
 * and values in their ranges. */
static void decode_ctl(int type, tq_bytes_t body, size_t nparts)
{
    tq_err_t err;
    static tq_hello_t hello;
    tq_welcome_t w;
    tq_errmsg_t e;
    tq_status_req_t st;
    int rc;
    switch (type) {
    case TQ_MSG_HELLO:
        rc = tq_hello_decode(body, nparts, &hello, &err);
        if (rc == 0) {
            REQUIRE(strlen(hello.name) >= 1 && strlen(hello.name) <= TQ_MAX_PEER_NAME);
            REQUIRE(!hello.worker ||
                    (hello.slots >= 1 && hello.slots <= TQ_MAX_SLOTS &&
                     hello.busy <= hello.slots + hello.prefetch && hello.nfunctions >= 1 &&
                     hello.nfunctions <= TQ_MAX_FUNCTIONS));
            for (size_t i = 0; i < hello.nfunctions; i++)
                REQUIRE(tq_name_valid(tq_bytes_str(hello.functions[i])));
        } else {
            require_error(rc, &err);
        }
        break;
    case TQ_MSG_WELCOME:
        rc = tq_welcome_decode(body, nparts, &w, &err);
        if (rc == 0)
            REQUIRE(w.heartbeat_ms >= TQ_WELCOME_HB_MIN_MS &&
                    w.heartbeat_ms <= TQ_WELCOME_HB_MAX_MS &&
                    w.heartbeat_timeout_ms > w.heartbeat_ms &&
                    w.heartbeat_timeout_ms <= TQ_WELCOME_HB_TIMEOUT_MAX_MS && w.max_payload >= 1 &&
                    w.max_payload <= TQ_PAYLOAD_HARD_MAX && memchr(w.master, 0, sizeof w.master));
        else
            require_error(rc, &err);
        break;
    case TQ_MSG_ERROR:
        rc = tq_errmsg_decode(body, nparts, &e, &err);
        if (rc < 0) {
            require_error(rc, &err);
            REQUIRE(e.code == TQ_ERR_INTERNAL && e.ref == 0);
        }
        REQUIRE(memchr(e.message, 0, sizeof e.message) != NULL);
        break;
    case TQ_MSG_STATUS:
        rc = tq_status_req_decode(body, nparts, &st, &err);
        if (rc < 0)
            require_error(rc, &err);
        break;
    default: break;
    }
}

static void decode_body(int type, tq_bytes_t frame0, tq_bytes_t body, const tq_bytes_t *parts,
                        size_t nparts, uint8_t config)
{
    size_t max_payload = tq_fuzz_max_payload(config);
    tq_err_t err;
    memset(&err, 0x55, sizeof err);
    err.code = 0;
    size_t count = (size_t)-1;
    uint32_t req = 0;
    tq_out_t o;
    tq_out_init(&o);
    int rc;

    switch (type) {
    case TQ_MSG_HELLO:
    case TQ_MSG_WELCOME:
    case TQ_MSG_ERROR:
    case TQ_MSG_STATUS:
    case TQ_MSG_STATUS_REPLY:
    case TQ_MSG_ADMIN:
    case TQ_MSG_ADMIN_REPLY: {
        size_t max_len = tq_fuzz_max_json(config);
        void *j = (void *)&err; /* must be overwritten: NULL on failure */
        rc = tq_decode_json(body, nparts, max_len, &j, &err);
        if (rc == 0) {
            REQUIRE(j != NULL);
            REQUIRE(cJSON_IsObject((cJSON *)j));
            REQUIRE(body.len <= max_len && nparts == 0);
            /* What we parsed can be printed and sent again. */
            tq_out_json(&o, type, j);
            REQUIRE(o.head.len >= TQ_HEAD_SIZE + 2);
            cJSON_Delete((cJSON *)j);
        } else {
            require_error(rc, &err);
            REQUIRE(j == NULL);
        }
        decode_ctl(type, body, nparts);
        break;
    }
    case TQ_MSG_HEARTBEAT:
    case TQ_MSG_BYE:
    case TQ_MSG_DRAIN:
    case TQ_MSG_QUIET:
    case TQ_MSG_STOP:
        rc = tq_decode_empty(body, nparts, &err);
        if (rc == 0)
            REQUIRE(body.len == 0 && nparts == 0);
        else
            require_error(rc, &err);
        break;
    case TQ_MSG_SUBMIT: {
        tq_task_spec_t *t = out_array(&out_specs, sizeof *t);
        uint16_t flags = 0xffff;
        rc = tq_decode_submit(body, parts, nparts, max_payload, &req, &flags, t, &count, &err);
        if (rc == 0) {
            REQUIRE(count >= 1 && count <= TQ_MAX_BATCH && count == nparts);
            REQUIRE((flags & ~TQ_SUBMIT_FLAGS_ALL) == 0);
            tq_out_begin_submit(&o, req, flags);
            for (size_t i = 0; i < count; i++) {
                REQUIRE(tq_name_valid(t[i].fn) && inside(t[i].fn, body));
                REQUIRE(t[i].queue.len == 0 || tq_name_valid(t[i].queue));
                REQUIRE(inside(t[i].queue, body));
                REQUIRE(t[i].key.len <= TQ_MAX_KEY && inside(t[i].key, body));
                REQUIRE(same_view(t[i].payload, parts[i]));
                REQUIRE(t[i].payload.len <= max_payload);
                tq_out_submit_task(&o, &t[i]);
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_SUBMIT_ACK:
    case TQ_MSG_WAIT:
    case TQ_MSG_CANCEL:
    case TQ_MSG_ACK: {
        uint64_t *ids = out_array(&out_ids, sizeof *ids);
        if (type == TQ_MSG_SUBMIT_ACK)
            rc = tq_decode_submit_ack(body, nparts, &req, ids, &count, &err);
        else if (type == TQ_MSG_WAIT)
            rc = tq_decode_ids(body, nparts, &req, ids, &count, &err);
        else
            rc = tq_decode_req_ids(type, body, nparts, &req, ids, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && nparts == 0);
            REQUIRE(type != TQ_MSG_ACK || count >= 1);
            REQUIRE(req == tq_msg_peek_req(type, body));
            tq_out_begin_ids(&o, type, req);
            for (size_t i = 0; i < count; i++)
                tq_out_id(&o, ids[i]);
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_RESULTS: {
        tq_outcome_t *r = out_array(&out_outcomes, sizeof *r);
        rc = tq_decode_results(body, parts, nparts, r, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && count == nparts);
            tq_out_begin(&o, TQ_MSG_RESULTS);
            for (size_t i = 0; i < count; i++) {
                REQUIRE(r[i].status >= TQ_ST_DONE && r[i].status <= TQ_ST_DEAD);
                REQUIRE(same_view(r[i].data, parts[i]));
                tq_out_outcome(&o, &r[i]);
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_CANCEL_ACK: {
        tq_cancel_item_t *c = out_array(&out_cancels, sizeof *c);
        rc = tq_decode_cancel_ack(body, nparts, &req, c, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && nparts == 0);
            tq_out_begin_cancel_ack(&o, req);
            for (size_t i = 0; i < count; i++) {
                REQUIRE(c[i].outcome <= TQ_CANCEL_UNKNOWN);
                tq_out_cancel_item(&o, c[i].id, c[i].outcome);
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_DISPATCH: {
        tq_dispatch_item_t *d = out_array(&out_dispatch, sizeof *d);
        rc = tq_decode_dispatch(body, parts, nparts, d, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && count == nparts);
            tq_out_begin(&o, TQ_MSG_DISPATCH);
            for (size_t i = 0; i < count; i++) {
                REQUIRE(tq_name_valid(d[i].fn) && inside(d[i].fn, body));
                REQUIRE(same_view(d[i].payload, parts[i]));
                tq_out_dispatch_item(&o, &d[i]);
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_RESULT: {
        tq_result_item_t *r = out_array(&out_results, sizeof *r);
        uint16_t credit = 0xffff;
        rc = tq_decode_result(body, parts, nparts, max_payload, &credit, r, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && count == nparts);
            REQUIRE(credit <= TQ_MAX_SLOTS);
            tq_out_begin_result(&o, credit);
            for (size_t i = 0; i < count; i++) {
                REQUIRE(r[i].status <= TQ_RUN_TIMEOUT);
                REQUIRE(same_view(r[i].data, parts[i]));
                REQUIRE(r[i].data.len <= max_payload);
                tq_out_result_item(&o, &r[i]);
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_RELEASE:
    case TQ_MSG_KILL: {
        tq_lease_ref_t *l = out_array(&out_leases, sizeof *l);
        rc = tq_decode_leases(body, nparts, l, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH && nparts == 0);
            tq_out_begin(&o, type);
            for (size_t i = 0; i < count; i++)
                tq_out_lease(&o, l[i].id, l[i].attempt);
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    case TQ_MSG_PUT:
    case TQ_MSG_PUT_ACK:
    case TQ_MSG_GET:
    case TQ_MSG_GOT:
    case TQ_MSG_TAKE_ACK: {
        /* the plain-queue messages go through the table's generic codec */
        tq_put_item_t *p = out_array(&out_puts, sizeof *p);
        tq_fixed_t fx;
        rc = tq_decode_msg(type, body, parts, nparts, max_payload, &fx, p, &count, &err);
        if (rc == 0) {
            REQUIRE(count <= TQ_MAX_BATCH);
            REQUIRE(type != TQ_MSG_GET || (count >= 1 && count <= TQ_MAX_GET_QUEUES));
            REQUIRE(type != TQ_MSG_GET || fx.max <= TQ_MAX_BATCH);
            REQUIRE((type != TQ_MSG_PUT && type != TQ_MSG_TAKE_ACK) || count >= 1);
            REQUIRE(fx.req == tq_msg_peek_req(type, body));
            tq_out_begin_msg(&o, type, &fx);
            for (size_t i = 0; i < count; i++) {
                if (type == TQ_MSG_PUT) {
                    REQUIRE(tq_name_valid(p[i].queue) && inside(p[i].queue, body));
                    REQUIRE(same_view(p[i].data, parts[i]) && p[i].data.len <= max_payload);
                    tq_out_record(&o, &p[i]);
                } else if (type == TQ_MSG_GET) {
                    const tq_get_rec_t *g = (const tq_get_rec_t *)p + i;
                    REQUIRE(tq_name_valid(g->queue) && inside(g->queue, body));
                    tq_out_record(&o, g);
                } else if (type == TQ_MSG_GOT) {
                    const tq_got_item_t *g = (const tq_got_item_t *)p + i;
                    REQUIRE(same_view(g->data, parts[i]));
                    tq_out_record(&o, g);
                } else {
                    tq_out_record(&o, (const tq_id_rec_t *)p + i);
                }
            }
            require_reencodes(&o, frame0);
        } else {
            require_error(rc, &err);
        }
        break;
    }
    default: fail("tq_decode_head accepted a type with no decoder", __LINE__); rc = -1;
    }
    if (rc == 0)
        tq_fuzz_accepted[type]++;
    else
        tq_fuzz_rejected[type]++;
    tq_out_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    uint8_t hdr[3] = {0, 0, 0};
    for (size_t i = 0; i < 3 && p < end; i++)
        hdr[i] = *p++;
    size_t nparts = ((size_t)hdr[0] | (size_t)hdr[1] << 8) % TQ_FUZZ_FRAME_MOD;
    uint8_t config = hdr[2];

    tq_bytes_t *parts = xmalloc((nparts ? nparts : 1) * sizeof *parts);
    for (size_t i = 0; i < nparts; i++) {
        size_t len = 0;
        if (end - p >= 2) {
            len = (size_t)p[0] | (size_t)p[1] << 8;
            p += 2;
        } else {
            p = end;
        }
        if (len > (size_t)(end - p))
            len = (size_t)(end - p);
        parts[i].data = copy_exact(p, len);
        parts[i].len = len;
        p += len;
    }
    tq_bytes_t frame0 = {copy_exact(p, (size_t)(end - p)), (size_t)(end - p)};

    int type = -1;
    tq_bytes_t body = {NULL, 0};
    tq_err_t err;
    memset(&err, 0x55, sizeof err);
    int rc = tq_decode_head(frame0, &type, &body, &err);
    if (rc == 0) {
        REQUIRE(strcmp(tq_msg_type_name(type), "UNKNOWN") != 0);
        REQUIRE(frame0.len >= TQ_HEAD_SIZE && frame0.data[3] == type);
        REQUIRE(body.data == frame0.data + TQ_HEAD_SIZE);
        REQUIRE(body.len == frame0.len - TQ_HEAD_SIZE);
        decode_body(type, frame0, body, parts, nparts, config);
    } else {
        require_error(rc, &err);
        tq_fuzz_rejected[256]++;
    }

    for (size_t i = 0; i < nparts; i++)
        free((void *)parts[i].data);
    free(parts);
    free((void *)frame0.data);
    return 0;
}
