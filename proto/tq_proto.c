/* tq_proto.c - taskq wire protocol v1: names, decoders, the outgoing
 * message builder (sockets: tq_frame.c). Layouts: proto/PROTOCOL.md.
 *
 * Decoders are the hot path of the master and the worker: they walk a
 * cursor over the body, never read past it, never allocate, and return
 * views into the received frames. */
#include "tq_proto.h"
#include "tq_proto_int.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tq_proto_die(const char *what, const char *file, int line)
{
    fprintf(stderr, "taskq: %s:%d: %s\n", file, line, what);
    abort();
}

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
            tq_proto_die("out of memory growing a message", __FILE__, __LINE__);
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
        tq_proto_die("out of memory printing JSON", __FILE__, __LINE__);
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
        tq_proto_die("out of memory building an ERROR", __FILE__, __LINE__);
    tq_out_json(o, TQ_MSG_ERROR, j);
    cJSON_Delete(j);
}
