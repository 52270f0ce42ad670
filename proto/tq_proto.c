/* tq_proto.c - taskq wire protocol v1: names, decoders, the outgoing
 * message builder and multipart send/receive. Layouts: proto/PROTOCOL.md.
 *
 * Decoders are the hot path of the master and the worker: they walk a
 * cursor over the body, never read past it, never allocate, and return
 * views into the received frames. */
#include "tq_proto.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* proto/ depends on nothing of ours, so it has its own abort-on-bug. */
static void proto_die(const char *what, const char *file, int line)
{
    fprintf(stderr, "taskq: %s:%d: %s\n", file, line, what);
    abort();
}
#define PROTO_ASSERT(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            proto_die("assertion failed: " #cond, __FILE__, __LINE__);                             \
    } while (0)

/* ---- names -------------------------------------------------------------- */

int tq_name_valid(tq_bytes_t b)
{
    if (b.len < 1 || b.len > TQ_MAX_NAME)
        return 0;
    for (size_t i = 0; i < b.len; i++) {
        uint8_t ch = b.data[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '_' || ch == '.' || ch == ':' || ch == '-')
            continue;
        return 0;
    }
    return 1;
}

const char *tq_msg_type_name(int type)
{
    switch (type) {
    case TQ_MSG_HELLO: return "HELLO";
    case TQ_MSG_WELCOME: return "WELCOME";
    case TQ_MSG_HEARTBEAT: return "HEARTBEAT";
    case TQ_MSG_ERROR: return "ERROR";
    case TQ_MSG_BYE: return "BYE";
    case TQ_MSG_STATUS: return "STATUS";
    case TQ_MSG_STATUS_REPLY: return "STATUS_REPLY";
    case TQ_MSG_DRAIN: return "DRAIN";
    case TQ_MSG_ADMIN: return "ADMIN";
    case TQ_MSG_ADMIN_REPLY: return "ADMIN_REPLY";
    case TQ_MSG_SUBMIT: return "SUBMIT";
    case TQ_MSG_SUBMIT_ACK: return "SUBMIT_ACK";
    case TQ_MSG_WAIT: return "WAIT";
    case TQ_MSG_RESULTS: return "RESULTS";
    case TQ_MSG_CANCEL: return "CANCEL";
    case TQ_MSG_CANCEL_ACK: return "CANCEL_ACK";
    case TQ_MSG_ACK: return "ACK";
    case TQ_MSG_DISPATCH: return "DISPATCH";
    case TQ_MSG_RESULT: return "RESULT";
    case TQ_MSG_RELEASE: return "RELEASE";
    case TQ_MSG_KILL: return "KILL";
    default: return "UNKNOWN";
    }
}

const char *tq_err_code_name(int code)
{
    switch (code) {
    case TQ_ERR_NONE: return "no error";
    case TQ_ERR_MALFORMED: return "malformed message";
    case TQ_ERR_VERSION: return "protocol version not supported";
    case TQ_ERR_UNKNOWN_TYPE: return "unknown message type";
    case TQ_ERR_TOO_LARGE: return "too large";
    case TQ_ERR_TOO_MANY: return "too many records or frames";
    case TQ_ERR_NOT_REGISTERED: return "not registered";
    case TQ_ERR_BAD_NAME: return "name not valid";
    case TQ_ERR_WRONG_ROLE: return "wrong role for this message";
    case TQ_ERR_FULL: return "master full";
    case TQ_ERR_SIGNATURE: return "bad signature";
    case TQ_ERR_INTERNAL: return "internal error";
    case TQ_ERR_UNAVAILABLE: return "unavailable";
    default: return "unknown error";
    }
}

int tq_error_set(tq_error_t *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- decoding ------------------------------------------------------------ */

static int type_known(int t)
{
    return (t >= TQ_MSG_HELLO && t <= TQ_MSG_ADMIN_REPLY) ||
           (t >= TQ_MSG_SUBMIT && t <= TQ_MSG_ACK) ||
           (t >= TQ_MSG_DISPATCH && t <= TQ_MSG_KILL);
}

int tq_decode_head(tq_bytes_t frame0, int *type, tq_bytes_t *body, tq_error_t *err)
{
    if (frame0.len == 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "frame 0 is empty, expected the 4-byte head");
    if (frame0.len < TQ_HEAD_SIZE)
        return tq_error_set(err, TQ_ERR_MALFORMED, "frame 0 is %zu bytes, shorter than the %d-byte head",
                            frame0.len, TQ_HEAD_SIZE);
    const uint8_t *h = frame0.data;
    if (h[0] != TQ_SIG0 || h[1] != TQ_SIG1)
        return tq_error_set(err, TQ_ERR_SIGNATURE,
                            "frame 0 starts with 0x%02x 0x%02x, not the signature \"TQ\"", h[0], h[1]);
    if (h[2] != TQ_PROTO_VERSION)
        return tq_error_set(err, TQ_ERR_VERSION, "protocol version %u not supported (this is %d)",
                            h[2], TQ_PROTO_VERSION);
    if (!type_known(h[3]))
        return tq_error_set(err, TQ_ERR_UNKNOWN_TYPE, "message type 0x%02x unknown in version %d",
                            h[3], TQ_PROTO_VERSION);
    *type = h[3];
    body->data = h + TQ_HEAD_SIZE;
    body->len = frame0.len - TQ_HEAD_SIZE;
    return 0;
}

/* Read a record count and check it against the batch limit and, for
 * types with data frames, against the number of data frames; types
 * without data frames must have none. */
static int read_count(tq_cursor_t *c, const char *what, size_t nparts, int with_parts,
                      size_t *count, tq_error_t *err)
{
    uint16_t n;
    if (tq_cursor_u16(c, &n) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s: truncated at count", what);
    if (n > TQ_MAX_BATCH)
        return tq_error_set(err, TQ_ERR_TOO_MANY, "%s: count %u over the limit of %d", what, n,
                            TQ_MAX_BATCH);
    if (with_parts && n != nparts)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s: count is %u but %zu data frames follow",
                            what, n, nparts);
    if (!with_parts && nparts != 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s: %zu unexpected data frames", what, nparts);
    *count = n;
    return 0;
}

static int check_end(const tq_cursor_t *c, const char *what, size_t n, tq_error_t *err)
{
    size_t left = tq_cursor_left(c);
    if (left)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s: %zu bytes left over after %zu records",
                            what, left, n);
    return 0;
}

/* A truncated field inside record i. */
#define TRUNC(what, i, field)                                                                      \
    tq_error_set(err, TQ_ERR_MALFORMED, "%s record %zu: truncated at %s", what, (size_t)(i), field)

int tq_decode_submit(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                     size_t max_payload, uint32_t *req_id, uint16_t *flags,
                     tq_task_spec_t *out, size_t *count, tq_error_t *err)
{
    static const char what[] = "SUBMIT";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    uint32_t req;
    uint16_t fl;
    size_t n;
    if (tq_cursor_u32(&c, &req) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "SUBMIT: truncated at req");
    *req_id = req; /* early, so that an ERROR reply can carry it as ref */
    if (tq_cursor_u16(&c, &fl) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "SUBMIT: truncated at flags");
    if (fl & ~TQ_SUBMIT_FLAGS_ALL)
        return tq_error_set(err, TQ_ERR_MALFORMED, "SUBMIT: unknown flags 0x%04x", fl);
    if (read_count(&c, what, nparts, 1, &n, err) < 0)
        return -1;
    if (n == 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "SUBMIT: count is 0, need at least 1 task");
    for (size_t i = 0; i < n; i++) {
        tq_task_spec_t *t = &out[i];
        if (tq_cursor_str8(&c, &t->fn) < 0)
            return TRUNC(what, i, "fn");
        if (!tq_name_valid(t->fn))
            return tq_error_set(err, TQ_ERR_BAD_NAME, "SUBMIT record %zu: fn name not valid", i);
        if (tq_cursor_str8(&c, &t->queue) < 0)
            return TRUNC(what, i, "queue");
        if (t->queue.len && !tq_name_valid(t->queue))
            return tq_error_set(err, TQ_ERR_BAD_NAME, "SUBMIT record %zu: queue name not valid", i);
        if (tq_cursor_str8(&c, &t->key) < 0)
            return TRUNC(what, i, "key");
        if (t->key.len > TQ_MAX_KEY)
            return tq_error_set(err, TQ_ERR_TOO_LARGE, "SUBMIT record %zu: key is %zu bytes, max %d",
                                i, t->key.len, TQ_MAX_KEY);
        if (tq_cursor_i32(&c, &t->priority) < 0)
            return TRUNC(what, i, "priority");
        if (tq_cursor_u32(&c, &t->timeout_ms) < 0)
            return TRUNC(what, i, "timeout_ms");
        if (tq_cursor_u16(&c, &t->retries) < 0)
            return TRUNC(what, i, "retries");
        t->not_before_ms = 0;
        if (fl & TQ_SUBMIT_NOT_BEFORE) {
            uint64_t nb;
            if (tq_cursor_u64(&c, &nb) < 0)
                return TRUNC(what, i, "not_before_ms");
            if (nb > (uint64_t)TQ_MAX_NOT_BEFORE_MS)
                return tq_error_set(err, TQ_ERR_MALFORMED,
                                    "SUBMIT record %zu: not_before_ms %llu is past year 9999", i,
                                    (unsigned long long)nb);
            t->not_before_ms = (int64_t)nb;
        }
        t->payload = parts[i];
        if (t->payload.len > max_payload)
            return tq_error_set(err, TQ_ERR_TOO_LARGE,
                                "SUBMIT record %zu: payload is %zu bytes, max %zu", i,
                                t->payload.len, max_payload);
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *flags = fl;
    *count = n;
    return 0;
}

/* u32 req, u16 count, count x u64 id; no data frames. */
static int decode_req_ids(const char *what, tq_bytes_t body, size_t nparts, uint32_t *req_id,
                          uint64_t *ids, size_t *count, tq_error_t *err)
{
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    uint32_t req;
    size_t n;
    if (tq_cursor_u32(&c, &req) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s: truncated at req", what);
    *req_id = req;
    if (read_count(&c, what, nparts, 0, &n, err) < 0)
        return -1;
    if (tq_cursor_left(&c) < n * 8)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%s record %zu: truncated at id", what,
                            tq_cursor_left(&c) / 8);
    for (size_t i = 0; i < n; i++)
        (void)tq_cursor_u64(&c, &ids[i]);
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *count = n;
    return 0;
}

int tq_decode_submit_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids,
                         size_t *count, tq_error_t *err)
{
    return decode_req_ids("SUBMIT_ACK", body, nparts, req_id, ids, count, err);
}

int tq_decode_ids(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids, size_t *count,
                  tq_error_t *err)
{
    return decode_req_ids("WAIT/CANCEL/ACK", body, nparts, req_id, ids, count, err);
}

int tq_decode_results(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, tq_outcome_t *out,
                      size_t *count, tq_error_t *err)
{
    static const char what[] = "RESULTS";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    size_t n;
    if (read_count(&c, what, nparts, 1, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        tq_outcome_t *r = &out[i];
        if (tq_cursor_u64(&c, &r->id) < 0)
            return TRUNC(what, i, "id");
        if (tq_cursor_u8(&c, &r->status) < 0)
            return TRUNC(what, i, "status");
        if (r->status < TQ_ST_DONE || r->status > TQ_ST_DEAD)
            return tq_error_set(err, TQ_ERR_MALFORMED, "RESULTS record %zu: status %u not valid", i,
                                r->status);
        if (tq_cursor_u32(&c, &r->attempts) < 0)
            return TRUNC(what, i, "attempts");
        r->data = parts[i];
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *count = n;
    return 0;
}

int tq_decode_cancel_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, tq_cancel_item_t *out,
                         size_t *count, tq_error_t *err)
{
    static const char what[] = "CANCEL_ACK";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    uint32_t req;
    size_t n;
    if (tq_cursor_u32(&c, &req) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "CANCEL_ACK: truncated at req");
    *req_id = req;
    if (read_count(&c, what, nparts, 0, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (tq_cursor_u64(&c, &out[i].id) < 0)
            return TRUNC(what, i, "id");
        if (tq_cursor_u8(&c, &out[i].outcome) < 0)
            return TRUNC(what, i, "outcome");
        if (out[i].outcome > TQ_CANCEL_UNKNOWN)
            return tq_error_set(err, TQ_ERR_MALFORMED, "CANCEL_ACK record %zu: outcome %u not valid",
                                i, out[i].outcome);
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *count = n;
    return 0;
}

int tq_decode_dispatch(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                       tq_dispatch_item_t *out, size_t *count, tq_error_t *err)
{
    static const char what[] = "DISPATCH";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    size_t n;
    if (read_count(&c, what, nparts, 1, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        tq_dispatch_item_t *d = &out[i];
        if (tq_cursor_u64(&c, &d->id) < 0)
            return TRUNC(what, i, "id");
        if (tq_cursor_u32(&c, &d->attempt) < 0)
            return TRUNC(what, i, "attempt");
        if (tq_cursor_u32(&c, &d->timeout_ms) < 0)
            return TRUNC(what, i, "timeout_ms");
        if (tq_cursor_str8(&c, &d->fn) < 0)
            return TRUNC(what, i, "fn");
        if (!tq_name_valid(d->fn))
            return tq_error_set(err, TQ_ERR_BAD_NAME, "DISPATCH record %zu: fn name not valid", i);
        d->payload = parts[i];
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *count = n;
    return 0;
}

int tq_decode_result(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, size_t max_payload,
                     uint16_t *credit, tq_result_item_t *out, size_t *count, tq_error_t *err)
{
    static const char what[] = "RESULT";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    uint16_t cr;
    size_t n;
    if (tq_cursor_u16(&c, &cr) < 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "RESULT: truncated at credit");
    if (cr > TQ_MAX_SLOTS)
        return tq_error_set(err, TQ_ERR_TOO_MANY, "RESULT: credit %u over the slot limit of %d", cr,
                            TQ_MAX_SLOTS);
    if (read_count(&c, what, nparts, 1, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        tq_result_item_t *r = &out[i];
        if (tq_cursor_u64(&c, &r->id) < 0)
            return TRUNC(what, i, "id");
        if (tq_cursor_u32(&c, &r->attempt) < 0)
            return TRUNC(what, i, "attempt");
        if (tq_cursor_u8(&c, &r->status) < 0)
            return TRUNC(what, i, "status");
        if (r->status > TQ_RUN_TIMEOUT)
            return tq_error_set(err, TQ_ERR_MALFORMED, "RESULT record %zu: status %u not valid", i,
                                r->status);
        r->data = parts[i];
        if (r->data.len > max_payload)
            return tq_error_set(err, TQ_ERR_TOO_LARGE,
                                "RESULT record %zu: data is %zu bytes, max %zu", i, r->data.len,
                                max_payload);
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *credit = cr;
    *count = n;
    return 0;
}

int tq_decode_leases(tq_bytes_t body, size_t nparts, tq_lease_ref_t *out, size_t *count,
                     tq_error_t *err)
{
    static const char what[] = "RELEASE/KILL";
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    size_t n;
    if (read_count(&c, what, nparts, 0, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (tq_cursor_u64(&c, &out[i].id) < 0)
            return TRUNC(what, i, "id");
        if (tq_cursor_u32(&c, &out[i].attempt) < 0)
            return TRUNC(what, i, "attempt");
    }
    if (check_end(&c, what, n, err) < 0)
        return -1;
    *count = n;
    return 0;
}

int tq_decode_empty(tq_bytes_t body, size_t nparts, tq_error_t *err)
{
    if (body.len)
        return tq_error_set(err, TQ_ERR_MALFORMED, "body should be empty, has %zu bytes", body.len);
    if (nparts)
        return tq_error_set(err, TQ_ERR_MALFORMED, "%zu unexpected data frames", nparts);
    return 0;
}

static int is_json_space(uint8_t ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

int tq_json_uint(const void *item, uint64_t min, uint64_t max, uint64_t *out)
{
    const cJSON *v = item;
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    /* Range first, on the double: casting one outside the target type's
     * range is undefined. (double)max may round up; the check on u
     * below is exact. */
    if (!(d >= (double)min && d <= (double)max && d < 0x1p64))
        return -1;
    uint64_t u = (uint64_t)d;
    if ((double)u != d || u < min || u > max)
        return -1;
    *out = u;
    return 0;
}

int tq_decode_json(tq_bytes_t body, size_t nparts, size_t max_len, void **out, tq_error_t *err)
{
    *out = NULL;
    if (nparts)
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON message with %zu unexpected data frames",
                            nparts);
    if (body.len > max_len)
        return tq_error_set(err, TQ_ERR_TOO_LARGE, "JSON body is %zu bytes, max %zu", body.len,
                            max_len);
    if (body.len == 0)
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON body is empty, expected an object");
    /* cJSON stops at a NUL inside strings; refuse rather than truncate. */
    if (memchr(body.data, 0, body.len))
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON body contains a NUL byte");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)body.data, body.len, &end, 0);
    if (!j) {
        size_t at = end && end >= (const char *)body.data ? (size_t)(end - (const char *)body.data) : 0;
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON body does not parse (near byte %zu)", at);
    }
    /* cJSON_ParseWithLength accepts trailing bytes after the value; we
     * allow only whitespace there. */
    const uint8_t *p = (const uint8_t *)end, *stop = body.data + body.len;
    while (p < stop && is_json_space(*p))
        p++;
    if (p != stop) {
        cJSON_Delete(j);
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON body: %zu bytes left over after the value",
                            (size_t)(stop - p));
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return tq_error_set(err, TQ_ERR_MALFORMED, "JSON body is not an object");
    }
    *out = j;
    return 0;
}

/* ---- encoding ------------------------------------------------------------ */

void tq_out_init(tq_out_t *o)
{
    memset(o, 0, sizeof *o);
    tq_buf_init(&o->head);
    tq_buf_init(&o->pack);
    o->type = -1;
}

void tq_out_free(tq_out_t *o)
{
    tq_buf_free(&o->head);
    tq_buf_free(&o->pack);
    free(o->parts);
    tq_out_init(o);
}

/* Head, fixed fields and the record count placeholder of `type`. The
 * buffers are kept: building the next message allocates nothing once
 * they have grown to fit. */
static void out_layout(tq_out_t *o, int type, uint32_t req, uint16_t field16)
{
    PROTO_ASSERT(type >= 0 && type <= 255);
    o->head.len = 0;
    tq_buf_reserve(&o->head, 64);
    tq_buf_u8(&o->head, TQ_SIG0);
    tq_buf_u8(&o->head, TQ_SIG1);
    tq_buf_u8(&o->head, TQ_PROTO_VERSION);
    tq_buf_u8(&o->head, (uint8_t)type);
    o->type = type;
    o->flags = type == TQ_MSG_SUBMIT ? field16 : 0;
    o->count = 0;
    o->count_off = 0;
    o->nparts = 0;
    o->part_bytes = 0;
    switch (type) {
    case TQ_MSG_SUBMIT:
        tq_buf_u32(&o->head, req);
        tq_buf_u16(&o->head, field16); /* flags */
        break;
    case TQ_MSG_SUBMIT_ACK:
    case TQ_MSG_WAIT:
    case TQ_MSG_CANCEL:
    case TQ_MSG_CANCEL_ACK:
    case TQ_MSG_ACK:
        tq_buf_u32(&o->head, req);
        break;
    case TQ_MSG_RESULT:
        tq_buf_u16(&o->head, field16); /* credit */
        break;
    case TQ_MSG_RESULTS:
    case TQ_MSG_DISPATCH:
    case TQ_MSG_RELEASE:
    case TQ_MSG_KILL:
        break;
    default:
        return; /* no records */
    }
    o->count_off = o->head.len;
    tq_buf_u16(&o->head, 0);
}

void tq_out_begin(tq_out_t *o, int type)
{
    out_layout(o, type, 0, 0);
}

void tq_out_begin_submit(tq_out_t *o, uint32_t req_id, uint16_t flags)
{
    out_layout(o, TQ_MSG_SUBMIT, req_id, flags);
}

void tq_out_begin_ids(tq_out_t *o, int type, uint32_t req_id)
{
    PROTO_ASSERT(type == TQ_MSG_WAIT || type == TQ_MSG_CANCEL || type == TQ_MSG_SUBMIT_ACK ||
                 type == TQ_MSG_ACK);
    out_layout(o, type, req_id, 0);
}

void tq_out_begin_cancel_ack(tq_out_t *o, uint32_t req_id)
{
    out_layout(o, TQ_MSG_CANCEL_ACK, req_id, 0);
}

void tq_out_begin_result(tq_out_t *o, uint16_t credit)
{
    out_layout(o, TQ_MSG_RESULT, 0, credit);
}

int tq_out_full(const tq_out_t *o)
{
    return o->count >= TQ_MAX_BATCH || o->part_bytes >= TQ_BATCH_BYTES;
}

size_t tq_out_count(const tq_out_t *o)
{
    return o->count;
}

/* Called before each record: the builder must be of one of the given
 * types (a = b when only one) and have room. */
static void record_begin(tq_out_t *o, int a, int b)
{
    PROTO_ASSERT(o->type == a || o->type == b);
    PROTO_ASSERT(o->count_off != 0);
    PROTO_ASSERT(o->count < TQ_MAX_BATCH);
}

static void record_end(tq_out_t *o)
{
    o->count++;
    tq_buf_patch_u16(&o->head, o->count_off, (uint16_t)o->count);
}

static void add_part(tq_out_t *o, tq_bytes_t part)
{
    if (o->nparts == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        tq_bytes_t *p = realloc(o->parts, cap * sizeof *p);
        if (!p)
            proto_die("out of memory growing a message", __FILE__, __LINE__);
        o->parts = p;
        o->cap = cap;
    }
    o->parts[o->nparts++] = part;
    o->part_bytes += part.len;
}

void tq_out_submit_task(tq_out_t *o, const tq_task_spec_t *t)
{
    record_begin(o, TQ_MSG_SUBMIT, TQ_MSG_SUBMIT);
    tq_buf_str8(&o->head, t->fn);
    tq_buf_str8(&o->head, t->queue);
    tq_buf_str8(&o->head, t->key);
    tq_buf_i32(&o->head, t->priority);
    tq_buf_u32(&o->head, t->timeout_ms);
    tq_buf_u16(&o->head, t->retries);
    if (o->flags & TQ_SUBMIT_NOT_BEFORE)
        tq_buf_u64(&o->head, (uint64_t)(t->not_before_ms > 0 ? t->not_before_ms : 0));
    add_part(o, t->payload);
    record_end(o);
}

void tq_out_id(tq_out_t *o, uint64_t id)
{
    PROTO_ASSERT(o->type == TQ_MSG_WAIT || o->type == TQ_MSG_CANCEL ||
                 o->type == TQ_MSG_SUBMIT_ACK || o->type == TQ_MSG_ACK);
    record_begin(o, o->type, o->type);
    tq_buf_u64(&o->head, id);
    record_end(o);
}

void tq_out_cancel_item(tq_out_t *o, uint64_t id, uint8_t outcome)
{
    record_begin(o, TQ_MSG_CANCEL_ACK, TQ_MSG_CANCEL_ACK);
    tq_buf_u64(&o->head, id);
    tq_buf_u8(&o->head, outcome);
    record_end(o);
}

void tq_out_outcome(tq_out_t *o, const tq_outcome_t *r)
{
    record_begin(o, TQ_MSG_RESULTS, TQ_MSG_RESULTS);
    tq_buf_u64(&o->head, r->id);
    tq_buf_u8(&o->head, r->status);
    tq_buf_u32(&o->head, r->attempts);
    add_part(o, r->data);
    record_end(o);
}

void tq_out_dispatch_item(tq_out_t *o, const tq_dispatch_item_t *d)
{
    record_begin(o, TQ_MSG_DISPATCH, TQ_MSG_DISPATCH);
    tq_buf_u64(&o->head, d->id);
    tq_buf_u32(&o->head, d->attempt);
    tq_buf_u32(&o->head, d->timeout_ms);
    tq_buf_str8(&o->head, d->fn);
    add_part(o, d->payload);
    record_end(o);
}

void tq_out_result_item(tq_out_t *o, const tq_result_item_t *r)
{
    record_begin(o, TQ_MSG_RESULT, TQ_MSG_RESULT);
    tq_buf_u64(&o->head, r->id);
    tq_buf_u32(&o->head, r->attempt);
    tq_buf_u8(&o->head, r->status);
    add_part(o, r->data);
    record_end(o);
}

void tq_out_lease(tq_out_t *o, uint64_t id, uint32_t attempt)
{
    record_begin(o, TQ_MSG_RELEASE, TQ_MSG_KILL);
    tq_buf_u64(&o->head, id);
    tq_buf_u32(&o->head, attempt);
    record_end(o);
}

void tq_out_json(tq_out_t *o, int type, const void *json)
{
    out_layout(o, type, 0, 0);
    if (!json) {
        tq_buf_put(&o->head, "{}", 2);
        return;
    }
    char *s = cJSON_PrintUnformatted((const cJSON *)json);
    if (!s)
        proto_die("out of memory printing JSON", __FILE__, __LINE__);
    tq_buf_put(&o->head, s, strlen(s));
    cJSON_free(s);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

void tq_out_error(tq_out_t *o, int code, uint32_t ref, const char *msg)
{
    /* The text goes to peers that parse JSON strictly (Python's json):
     * cap it at TQ_MAX_ERROR_TEXT - 1 bytes on a character boundary and
     * replace bytes that are not UTF-8 with '?'. */
    char text[TQ_MAX_ERROR_TEXT];
    size_t tn = 0;
    const uint8_t *p = (const uint8_t *)(msg ? msg : "");
    size_t n = strlen((const char *)p);
    while (n > 0) {
        size_t l = utf8_seq(p, n);
        size_t take = l ? l : 1;
        if (tn + take > sizeof text - 1)
            break;
        if (l)
            memcpy(text + tn, p, l);
        else
            text[tn] = '?';
        tn += take;
        p += take;
        n -= take;
    }
    text[tn] = '\0';

    cJSON *j = cJSON_CreateObject();
    if (!j || !cJSON_AddNumberToObject(j, "code", code) ||
        !cJSON_AddStringToObject(j, "message", text) ||
        !cJSON_AddNumberToObject(j, "ref", (double)ref))
        proto_die("out of memory building an ERROR", __FILE__, __LINE__);
    tq_out_json(o, TQ_MSG_ERROR, j);
    cJSON_Delete(j);
}

/* Send one frame; after the first frame of a message, ZeroMQ has
 * committed to the message and only an interrupted blocking call can
 * fail, so retry that rather than leave half a message queued. */
static int send_frame(void *sock, const void *p, size_t n, int flags, int first)
{
    for (;;) {
        if (zmq_send(sock, p, n, flags) >= 0)
            return 0;
        if (first || errno != EINTR)
            return -1;
    }
}

int tq_out_send(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags)
{
    PROTO_ASSERT(o->head.len >= TQ_HEAD_SIZE);
    int first = 1;
    if (routing_id) {
        if (send_frame(sock, routing_id->data, routing_id->len, zmq_flags | ZMQ_SNDMORE, 1) < 0)
            return -1;
        first = 0;
    }
    if (send_frame(sock, o->head.data, o->head.len, zmq_flags | (o->nparts ? ZMQ_SNDMORE : 0),
                   first) < 0)
        return -1;
    for (size_t i = 0; i < o->nparts; i++) {
        int more = i + 1 < o->nparts ? ZMQ_SNDMORE : 0;
        if (send_frame(sock, o->parts[i].data, o->parts[i].len, zmq_flags | more, 0) < 0)
            return -1;
    }
    return 0;
}

int tq_out_send_packed(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags,
                       int packed)
{
    if (!packed || o->nparts == 0 || o->part_bytes > TQ_BATCH_BYTES)
        return tq_out_send(o, sock, routing_id, zmq_flags);
    PROTO_ASSERT(o->head.len >= TQ_HEAD_SIZE);
    /* One frame: head (with the bit), body, the records' data, and the
     * length of that data; CURVE then seals the message once. */
    o->pack.len = 0;
    tq_buf_reserve(&o->pack, o->head.len + o->part_bytes + 4 * o->nparts + 4);
    tq_buf_put(&o->pack, o->head.data, o->head.len);
    o->pack.data[3] |= TQ_TYPE_PACKED;
    size_t start = o->pack.len;
    for (size_t i = 0; i < o->nparts; i++) {
        tq_buf_u32(&o->pack, (uint32_t)o->parts[i].len);
        tq_buf_put(&o->pack, o->parts[i].data, o->parts[i].len);
    }
    tq_buf_u32(&o->pack, (uint32_t)(o->pack.len - start));
    if (routing_id &&
        send_frame(sock, routing_id->data, routing_id->len, zmq_flags | ZMQ_SNDMORE, 1) < 0)
        return -1;
    return send_frame(sock, o->pack.data, o->pack.len, zmq_flags, routing_id == NULL);
}

/* ---- receiving ------------------------------------------------------------ */

/* Room for a whole message of TQ_MAX_FRAMES plus a ROUTER's routing id. */
#define IN_SLOTS (TQ_MAX_FRAMES + 1)

struct tq_in {
    zmq_msg_t msgs[IN_SLOTS];
    tq_bytes_t views[IN_SLOTS];
    size_t nmsgs;  /* frames held (initialised msgs) */
    size_t nviews; /* views: the frames, or a packed message's records */
    int router;
    int oversized;
    int toolarge;  /* frames past max_bytes: dropped as they were read */
    int badpack;   /* packed, but 1: data frames follow, 2: a record
                      runs past the pack's end, 3: bad pack length */
    size_t badpack_at; /* the record where the pack went wrong */
    size_t nframes;    /* frames the peer sent (no routing id) */
    size_t max_bytes;  /* 0: no cap */
};

tq_in_t *tq_in_new(void)
{
    tq_in_t *self = calloc(1, sizeof *self);
    if (!self)
        proto_die("out of memory", __FILE__, __LINE__);
    return self;
}

static void in_release(tq_in_t *self, size_t keep)
{
    while (self->nmsgs > keep)
        zmq_msg_close(&self->msgs[--self->nmsgs]);
}

void tq_in_destroy(tq_in_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    in_release(*self_p, 0);
    free(*self_p);
    *self_p = NULL;
}

/* A packed message (TQ_TYPE_PACKED in frame 0's type byte) is one
 * frame: head, body, pack, u32 pack length. Split the pack (records of
 * u32 length + bytes) into views, end frame 0's view at the body, and
 * clear the bit so that the head reads as the plain type. */
static void in_unpack(tq_in_t *self)
{
    size_t h = (size_t)self->router;
    if (self->nmsgs <= h || self->views[h].len < TQ_HEAD_SIZE)
        return;
    uint8_t *head = zmq_msg_data(&self->msgs[h]);
    if (head[0] != TQ_SIG0 || head[1] != TQ_SIG1 || !(head[3] & TQ_TYPE_PACKED))
        return;
    head[3] &= (uint8_t)~TQ_TYPE_PACKED;
    self->badpack_at = 0;
    self->nviews = h + 1;
    if (self->nframes != 1) {
        self->badpack = 1; /* a packed message is one frame */
        return;
    }
    /* frame 0 = head, body, pack, u32 length of the pack */
    size_t len = self->views[h].len;
    uint32_t plen = 0;
    if (len >= TQ_HEAD_SIZE + 4) {
        tq_cursor_t t;
        tq_cursor_init(&t, (tq_bytes_t){head + len - 4, 4});
        tq_cursor_u32(&t, &plen);
    }
    if (len < TQ_HEAD_SIZE + 4 || plen > len - TQ_HEAD_SIZE - 4) {
        self->badpack = 3;
        return;
    }
    size_t body_end = len - 4 - plen;
    self->views[h].len = body_end;
    tq_cursor_t c;
    tq_cursor_init(&c, (tq_bytes_t){head + body_end, plen});
    size_t k = h + 1;
    while (tq_cursor_left(&c) > 0) {
        uint32_t rlen;
        tq_bytes_t rec;
        if (k == IN_SLOTS) {
            self->oversized = 1;
            break;
        }
        if (tq_cursor_u32(&c, &rlen) < 0 || tq_cursor_bytes(&c, rlen, &rec) < 0) {
            self->badpack = 2;
            self->badpack_at = k - h - 1;
            break;
        }
        self->views[k++] = rec;
    }
    self->nviews = self->badpack || self->oversized ? h + 1 : k;
}

/* 1 if frame f starts a packed message ('T' 'Q' VERSION TYPE|0x80). */
static int frame_packed(zmq_msg_t *f)
{
    const uint8_t *b = zmq_msg_data(f);
    return zmq_msg_size(f) >= TQ_HEAD_SIZE && b[0] == TQ_SIG0 && b[1] == TQ_SIG1 &&
           (b[3] & TQ_TYPE_PACKED);
}

int tq_in_recv(tq_in_t *self, void *sock, int router, int zmq_flags)
{
    in_release(self, 0);
    self->router = router ? 1 : 0;
    self->oversized = 0;
    self->toolarge = 0;
    self->badpack = 0;
    self->nviews = 0;
    self->nframes = 0;
    size_t cap = TQ_MAX_FRAMES + (size_t)self->router;
    size_t h = (size_t)self->router; /* index of frame 0 */
    size_t bytes = 0;                /* of the frames kept after frame 0 */
    int packed = 0;
    int more = 1;
    while (more) {
        /* Kept: the routing id, frame 0, and data frames while the
         * message stays within TQ_MAX_FRAMES and max_bytes, and is not
         * packed (a packed message is one frame). The rest is read and
         * let go at once, so the stream stays in step. */
        int keep = self->nmsgs < cap && !self->toolarge && !(packed && self->nmsgs > h);
        zmq_msg_t scratch, *m = keep ? &self->msgs[self->nmsgs] : &scratch;
        zmq_msg_init(m);
        /* The first frame honours the caller's flags; the rest of the
         * message is already here (ZeroMQ delivers messages whole). */
        int flags = self->nmsgs == 0 && keep ? zmq_flags : 0;
        int rc;
        while ((rc = zmq_msg_recv(m, sock, flags)) < 0 && self->nmsgs > 0 && errno == EINTR)
            ;
        if (rc < 0) {
            int e = errno;
            zmq_msg_close(m);
            in_release(self, 0);
            errno = e;
            return -1;
        }
        more = zmq_msg_more(m);
        if (self->nmsgs >= h || m == &scratch)
            self->nframes++;
        if (m != &scratch && self->nmsgs > h && self->max_bytes &&
            zmq_msg_size(m) > self->max_bytes - bytes) {
            zmq_msg_close(m);
            self->toolarge = 1;
            in_release(self, h + 1); /* what was kept goes now */
            continue;
        }
        if (m == &scratch) {
            zmq_msg_close(m);
            if (!packed && !self->toolarge)
                self->oversized = 1;
        } else {
            if (self->nmsgs == h)
                packed = frame_packed(m);
            else if (self->nmsgs > h)
                bytes += zmq_msg_size(m);
            self->views[self->nmsgs].data = zmq_msg_data(m);
            self->views[self->nmsgs].len = zmq_msg_size(m);
            self->nmsgs++;
        }
    }
    /* An oversized message is only answered with an error: keep the
     * routing id and frame 0, let go of the data frames now. */
    if (self->oversized || self->toolarge)
        in_release(self, h + 1);
    self->nviews = self->nmsgs;
    in_unpack(self);
    return 0;
}

void tq_in_set_max_bytes(tq_in_t *self, size_t max_bytes)
{
    self->max_bytes = max_bytes;
}

int tq_in_source_fd(const tq_in_t *self)
{
    /* metadata, like Peer-Address: on the frames the peer sent */
    size_t i = (size_t)self->router;
    if (self->nmsgs <= i)
        return -1;
    return zmq_msg_get(&self->msgs[i], ZMQ_SRCFD);
}

tq_bytes_t tq_in_routing_id(const tq_in_t *self)
{
    tq_bytes_t none = {NULL, 0};
    return self->router && self->nmsgs > 0 ? self->views[0] : none;
}

tq_bytes_t tq_in_frame0(const tq_in_t *self)
{
    tq_bytes_t none = {NULL, 0};
    size_t i = (size_t)self->router;
    return self->nmsgs > i ? self->views[i] : none;
}

const tq_bytes_t *tq_in_parts(const tq_in_t *self)
{
    return &self->views[self->router + 1];
}

size_t tq_in_nparts(const tq_in_t *self)
{
    size_t skip = (size_t)self->router + 1;
    return self->nviews > skip ? self->nviews - skip : 0;
}

int tq_in_oversized(const tq_in_t *self)
{
    return self->oversized;
}

const char *tq_in_peer_address(const tq_in_t *self)
{
    /* A ROUTER's routing-id frame is made locally and carries no
     * metadata: ask the first frame the peer sent. Metadata lives as long
     * as the frame, i.e. until the next recv. */
    size_t i = (size_t)self->router;
    if (self->nmsgs <= i)
        return "?";
    const char *a = zmq_msg_gets(&self->msgs[i], "Peer-Address");
    if (!a || !*a)
        return "?";
    /* A dual-stack (ZMQ_IPV6) socket reports IPv4 peers as IPv4-mapped
     * IPv6 addresses: show them as the IPv4 address they are. */
    static const char mapped[] = "::ffff:";
    if (strncmp(a, mapped, sizeof mapped - 1) == 0 && strchr(a + sizeof mapped - 1, '.'))
        return a + sizeof mapped - 1;
    return a;
}

int tq_in_head(const tq_in_t *self, int *type, tq_bytes_t *body, tq_error_t *err)
{
    if (self->nmsgs <= (size_t)self->router)
        return tq_error_set(err, TQ_ERR_MALFORMED, "message has no frame 0");
    if (tq_decode_head(tq_in_frame0(self), type, body, err) < 0)
        return -1;
    if (self->oversized)
        return tq_error_set(err, TQ_ERR_TOO_MANY, "%s message has more than %d frames",
                            tq_msg_type_name(*type), TQ_MAX_FRAMES);
    if (self->toolarge)
        return tq_error_set(err, TQ_ERR_TOO_LARGE,
                            "%s message carries more than %zu bytes (max_payload + %u)",
                            tq_msg_type_name(*type), self->max_bytes,
                            TQ_BATCH_BYTES + TQ_MSG_OVERHEAD);
    if (self->badpack == 1)
        return tq_error_set(err, TQ_ERR_MALFORMED,
                            "packed %s message has %zu data frames, expected none",
                            tq_msg_type_name(*type), self->nframes - 1);
    if (self->badpack == 3)
        return tq_error_set(err, TQ_ERR_MALFORMED,
                            "packed %s message: the pack length at the end of frame 0 is "
                            "missing or larger than the frame",
                            tq_msg_type_name(*type));
    if (self->badpack)
        return tq_error_set(err, TQ_ERR_MALFORMED,
                            "packed %s message: record %zu runs past the end of the pack",
                            tq_msg_type_name(*type), self->badpack_at);
    return 0;
}
