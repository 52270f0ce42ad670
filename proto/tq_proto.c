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
#include <stddef.h>
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
    case TQ_ERR_FORBIDDEN: return "forbidden";
    default: return "unknown error";
    }
}

/* ---- the message table (tq_msgs.def) ---------------------------------------- */

/* What a JSON or empty message decodes records into: nothing. */
typedef struct {
    char unused;
} tq_no_rec_t;
#define none tq_no_rec_t

enum { P_END, P_FIX, P_REC, P_DATA };
enum { W_U8, W_U16, W_U32, W_U64, W_I32, W_STR8, W_FRAME };
enum {
    C_ANY,
    C_COUNT,
    C_RANGE,
    C_LIMIT,
    C_FLAGS,
    C_NAME,
    C_QNAME,
    C_MAXLEN,
    C_PAYLOAD,
    C_WHENFLAG
};
enum { B_BIN, B_JSON, B_EMPTY };

/* One field of a binary body: where it goes (tq_fixed_t, or the
 * record struct at off) and the rule it must pass. */
typedef struct {
    uint8_t part, wire, check;
    uint16_t off;
    uint64_t a, b;
    const char *name;
} field_t;

/* The records of a message: decode n of them from c (and parts) into
 * recs, or encode one (rec) into o. Generated from the table for each
 * message (REC_CODEC below), so that the hot path runs straight-line
 * code, not an interpreter of the table. */
typedef int rec_dec_fn(const char *what, tq_cursor_t *c, const tq_bytes_t *parts, size_t n,
                       size_t max_payload, unsigned flags, void *recs, tq_err_t *err);
typedef void rec_enc_fn(tq_out_t *o, const void *rec);

/* One message type. */
typedef struct {
    const char *name;
    uint8_t body;
    uint8_t frames;        /* 1: one data frame per record */
    size_t json_max;       /* JSON bodies: largest accepted */
    size_t rec_size;       /* sizeof the record struct */
    const field_t *fields; /* P_FIX ones first, ended by P_END */
    rec_dec_fn *dec;
    rec_enc_fn *enc;
} msg_desc_t;

/* Record struct of each message, by name, for offsetof. */
#define M(N, code, body, sender, frames, jmax, rect) typedef rect rec_##N##_t;
TQ_MSGS(M)
#undef M

#define OFF_FIX(N, f) offsetof(tq_fixed_t, f)
#define OFF_REC(N, f) offsetof(rec_##N##_t, f)
#define OFF_DATA(N, f) offsetof(rec_##N##_t, f)
#define FIELD(N, part, f, wire, check, a, b)                                                       \
    {P_##part, W_##wire, C_##check, (uint16_t)OFF_##part(N, f), (uint64_t)(a), (uint64_t)(b), #f},
#define M(N, code, body, sender, frames, jmax, rect)                                               \
    static const field_t fields_##N[] = {TQ_FIELDS_##N(FIELD){P_END, 0, 0, 0, 0, 0, NULL}};
TQ_MSGS(M)
#undef M

static int field_error(const char *what, int check, const char *name, size_t i, uint64_t v,
                       size_t len, uint64_t a, uint64_t b, size_t max_payload, tq_err_t *err);
static void add_part(tq_out_t *o, tq_bytes_t part);

/* Reading a record field of each wire type into its struct member
 * (whose size must match: checked at compile time). */
static inline int rd_u64(tq_cursor_t *c, void *p)
{
    uint64_t v;
    if (tq_cursor_u64(c, &v) < 0)
        return -1;
    memcpy(p, &v, 8); /* also into an int64_t (not_before_ms) */
    return 0;
}
#define RD_U8 tq_cursor_u8
#define RD_U16 tq_cursor_u16
#define RD_U32 tq_cursor_u32
#define RD_I32 tq_cursor_i32
#define RD_U64 rd_u64
#define RD_STR8 tq_cursor_str8
#define SIZE_U8 1
#define SIZE_U16 2
#define SIZE_U32 4
#define SIZE_I32 4
#define SIZE_U64 8
#define SIZE_STR8 sizeof(tq_bytes_t)
#define SIZE_FRAME sizeof(tq_bytes_t)
/* The value (integers) or length (bytes) of a field, for error texts. */
#define VAL_U8(x) (uint64_t)(x)
#define VAL_U16(x) (uint64_t)(x)
#define VAL_U32(x) (uint64_t)(x)
#define VAL_I32(x) (uint64_t)(x)
#define VAL_U64(x) (uint64_t)(x)
#define VAL_STR8(x) 0
#define VAL_FRAME(x) 0
#define LEN_U8(x) 0
#define LEN_U16(x) 0
#define LEN_U32(x) 0
#define LEN_I32(x) 0
#define LEN_U64(x) 0
#define LEN_STR8(x) (x).len
#define LEN_FRAME(x) (x).len
/* The rules of record fields (tq_msgs.def): 1 when v passes. */
#define OK_ANY(v, a, b) 1
#define OK_RANGE(v, a, b) ((uint64_t)(v) - (uint64_t)(a) <= (uint64_t)(b) - (uint64_t)(a))
#define OK_WHENFLAG(v, a, b) ((uint64_t)(v) <= (uint64_t)(b))
#define OK_NAME(v, a, b) tq_name_valid(v)
#define OK_QNAME(v, a, b) ((v).len == 0 || tq_name_valid(v))
#define OK_MAXLEN(v, a, b) ((v).len <= (a))
#define OK_PAYLOAD(v, a, b) ((v).len <= max_payload)
/* Whether a field is in the record: WHENFLAG ones only with their flag. */
#define WHEN_ANY(a) 1
#define WHEN_RANGE(a) 1
#define WHEN_NAME(a) 1
#define WHEN_QNAME(a) 1
#define WHEN_MAXLEN(a) 1
#define WHEN_PAYLOAD(a) 1
#define WHEN_WHENFLAG(a) (flags & (a))
/* A member's value as sent: a WHENFLAG time before 1970 goes as 0. */
#define ENCV_ANY(x) (x)
#define ENCV_RANGE(x) (x)
#define ENCV_NAME(x) (x)
#define ENCV_QNAME(x) (x)
#define ENCV_MAXLEN(x) (x)
#define ENCV_PAYLOAD(x) (x)
#define ENCV_WHENFLAG(x) ((x) > 0 ? (uint64_t)(x) : 0)
#define WR_U8 tq_buf_u8
#define WR_U16 tq_buf_u16
#define WR_U32 tq_buf_u32
#define WR_I32 tq_buf_i32
#define WR_U64 tq_buf_u64
#define WR_STR8 tq_buf_str8

#define FIELD_ERROR(f, wire, check, a, b)                                                          \
    field_error(what, C_##check, #f, i, VAL_##wire(r->f), LEN_##wire(r->f), (uint64_t)(a),         \
                (uint64_t)(b), max_payload, err)
#define DEC_STEP(N, part, f, wire, check, a, b) DEC_##part(f, wire, check, a, b)
#define DEC_FIX(f, wire, check, a, b)
#define DEC_REC(f, wire, check, a, b)                                                              \
    _Static_assert(sizeof r->f == SIZE_##wire, #f ": member and wire size differ");                \
    if (WHEN_##check(a)) {                                                                         \
        if (RD_##wire(c, &r->f) < 0)                                                               \
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s record %zu: truncated at %s", what, i,    \
                              #f);                                                                 \
        if (!OK_##check(r->f, a, b))                                                               \
            return FIELD_ERROR(f, wire, check, a, b);                                              \
    } else {                                                                                       \
        memset(&r->f, 0, sizeof r->f);                                                             \
    }
#define DEC_DATA(f, wire, check, a, b)                                                             \
    r->f = parts[i];                                                                               \
    if (!OK_##check(r->f, a, b))                                                                   \
        return FIELD_ERROR(f, wire, check, a, b);
#define ENC_STEP(N, part, f, wire, check, a, b) ENC_##part(f, wire, check, a, b)
#define ENC_FIX(f, wire, check, a, b)
#define ENC_REC(f, wire, check, a, b)                                                              \
    if (WHEN_##check(a))                                                                           \
        WR_##wire(&o->head, ENCV_##check(r->f));
#define ENC_DATA(f, wire, check, a, b) add_part(o, r->f);

#define REC_CODEC(N, code, body, sender, frames, jmax, rect)                                       \
    static int rec_dec_##N(const char *what, tq_cursor_t *c, const tq_bytes_t *parts, size_t n,    \
                           size_t max_payload, unsigned flags, void *recs, tq_err_t *err)          \
    {                                                                                              \
        (void)what, (void)c, (void)parts, (void)max_payload, (void)flags, (void)err;               \
        for (size_t i = 0; i < n; i++) {                                                           \
            rect *r = (rect *)recs + i;                                                            \
            (void)r;                                                                               \
            TQ_FIELDS_##N(DEC_STEP)                                                                \
        }                                                                                          \
        return 0;                                                                                  \
    }                                                                                              \
    static void rec_enc_##N(tq_out_t *o, const void *rec)                                          \
    {                                                                                              \
        const rect *r = rec;                                                                       \
        unsigned flags = o->flags;                                                                 \
        (void)r, (void)flags;                                                                      \
        TQ_FIELDS_##N(ENC_STEP)                                                                    \
    }
TQ_MSGS(REC_CODEC)

static const msg_desc_t msg_table[256] = {
#define M(N, code, body, sender, frames, jmax, rect)                                               \
    [code] = {#N,         B_##body,    frames,     jmax, sizeof(rec_##N##_t),                      \
              fields_##N, rec_dec_##N, rec_enc_##N},
    TQ_MSGS(M)
#undef M
};
#undef none

/* The description of type, or NULL if the type is not defined. */
static const msg_desc_t *msg_desc(int type)
{
    if (type < 0 || type > 255 || !msg_table[type].name)
        return NULL;
    return &msg_table[type];
}

const char *tq_msg_type_name(int type)
{
    const msg_desc_t *d = msg_desc(type);
    return d ? d->name : "UNKNOWN";
}

int tq_msg_has_req(int type)
{
    const msg_desc_t *d = msg_desc(type);
    return d && d->body == B_BIN && d->fields[0].part == P_FIX &&
           d->fields[0].off == offsetof(tq_fixed_t, req) && strcmp(d->fields[0].name, "req") == 0;
}

uint32_t tq_msg_peek_req(int type, tq_bytes_t body)
{
    tq_cursor_t c;
    uint32_t req = 0;
    tq_cursor_init(&c, body);
    if (tq_msg_has_req(type))
        (void)tq_cursor_u32(&c, &req);
    return req;
}

/* ---- decoding ------------------------------------------------------------ */

int tq_decode_head(tq_bytes_t frame0, int *type, tq_bytes_t *body, tq_err_t *err)
{
    if (frame0.len == 0)
        return tq_err_set(err, TQ_ERR_MALFORMED, "frame 0 is empty, expected the 4-byte head");
    if (frame0.len < TQ_HEAD_SIZE)
        return tq_err_set(err, TQ_ERR_MALFORMED,
                          "frame 0 is %zu bytes, shorter than the %d-byte head", frame0.len,
                          TQ_HEAD_SIZE);
    const uint8_t *h = frame0.data;
    if (h[0] != TQ_SIG0 || h[1] != TQ_SIG1)
        return tq_err_set(err, TQ_ERR_SIGNATURE,
                          "frame 0 starts with 0x%02x 0x%02x, not the signature \"TQ\"", h[0],
                          h[1]);
    if (h[2] != TQ_PROTO_VERSION)
        return tq_err_set(err, TQ_ERR_VERSION, "protocol version %u not supported (this is %d)",
                          h[2], TQ_PROTO_VERSION);
    if (!msg_desc(h[3]))
        return tq_err_set(err, TQ_ERR_UNKNOWN_TYPE, "message type 0x%02x unknown in version %d",
                          h[3], TQ_PROTO_VERSION);
    *type = h[3];
    body->data = h + TQ_HEAD_SIZE;
    body->len = frame0.len - TQ_HEAD_SIZE;
    return 0;
}

/* Read an integer field of wire type w. */
static int get_int(tq_cursor_t *c, int w, uint64_t *v)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    int32_t i32;
    int rc;
    switch (w) {
    case W_U8: rc = tq_cursor_u8(c, &u8), *v = u8; break;
    case W_U16: rc = tq_cursor_u16(c, &u16), *v = u16; break;
    case W_U32: rc = tq_cursor_u32(c, &u32), *v = u32; break;
    case W_I32: rc = tq_cursor_i32(c, &i32), *v = (uint64_t)(uint32_t)i32; break;
    default: rc = tq_cursor_u64(c, v); break;
    }
    return rc;
}

/* Store integer v of wire type w at p (a struct member of that width). */
static void put_int(void *p, int w, uint64_t v)
{
    uint8_t u8 = (uint8_t)v;
    uint16_t u16 = (uint16_t)v;
    uint32_t u32 = (uint32_t)v;
    switch (w) {
    case W_U8: memcpy(p, &u8, 1); break;
    case W_U16: memcpy(p, &u16, 2); break;
    case W_U32:
    case W_I32: memcpy(p, &u32, 4); break;
    default: memcpy(p, &v, 8); break;
    }
}

/* A fixed field's rule (count, flags, credit); v its value. */
static int check_fix(const msg_desc_t *d, const char *what, const field_t *f, uint64_t v,
                     size_t nparts, tq_err_t *err)
{
    switch (f->check) {
    case C_COUNT:
        if (v > f->b)
            return tq_err_set(err, TQ_ERR_TOO_MANY, "%s: count %u over the limit of %u", what,
                              (unsigned)v, (unsigned)f->b);
        if (d->frames && v != nparts)
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s: count is %u but %zu data frames follow",
                              what, (unsigned)v, nparts);
        if (!d->frames && nparts != 0)
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s: %zu unexpected data frames", what,
                              nparts);
        if (v < f->a)
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s: count is %u, need at least %u", what,
                              (unsigned)v, (unsigned)f->a);
        return 0;
    case C_FLAGS:
        if (v & ~f->a)
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s: unknown %s 0x%04x", what, f->name,
                              (unsigned)v);
        return 0;
    case C_LIMIT:
        if (v > f->b)
            return tq_err_set(err, TQ_ERR_TOO_MANY, "%s: %s %llu over the limit of %llu", what,
                              f->name, (unsigned long long)v, (unsigned long long)f->b);
        return 0;
    default: return 0;
    }
}

/* A record field's rule failed (check, on value v or length len): the
 * error for it. */
static int field_error(const char *what, int check, const char *name, size_t i, uint64_t v,
                       size_t len, uint64_t a, uint64_t b, size_t max_payload, tq_err_t *err)
{
    switch (check) {
    case C_NAME:
    case C_QNAME:
        return tq_err_set(err, TQ_ERR_BAD_NAME, "%s record %zu: %s name not valid", what, i, name);
    case C_MAXLEN:
        return tq_err_set(err, TQ_ERR_TOO_LARGE, "%s record %zu: %s is %zu bytes, max %u", what, i,
                          name, len, (unsigned)a);
    case C_PAYLOAD:
        return tq_err_set(err, TQ_ERR_TOO_LARGE, "%s record %zu: %s is %zu bytes, max %zu", what, i,
                          name, len, max_payload);
    case C_RANGE:
        return tq_err_set(err, TQ_ERR_MALFORMED, "%s record %zu: %s %u not valid", what, i, name,
                          (unsigned)v);
    default: /* C_WHENFLAG */
        return tq_err_set(err, TQ_ERR_MALFORMED,
                          "%s record %zu: %s %llu over the limit of %llu (year 9999)", what, i,
                          name, (unsigned long long)v, (unsigned long long)b);
    }
}

/* The decoder of every binary body, driven by the table; what: the name
 * in error texts (NULL: the type's). */
static int decode_bin(int type, const char *what, tq_bytes_t body, const tq_bytes_t *parts,
                      size_t nparts, size_t max_payload, tq_fixed_t *fx, void *recs, size_t *count,
                      tq_err_t *err)
{
    memset(fx, 0, sizeof *fx);
    *count = 0;
    const msg_desc_t *d = msg_desc(type);
    if (!d || d->body != B_BIN)
        return tq_err_set(err, TQ_ERR_UNKNOWN_TYPE, "message type 0x%02x has no binary body",
                          (unsigned)type & 0xffu);
    if (!what)
        what = d->name;
    tq_cursor_t c;
    tq_cursor_init(&c, body);
    const field_t *f = d->fields;
    for (; f->part == P_FIX; f++) {
        uint64_t v;
        if (get_int(&c, f->wire, &v) < 0)
            return tq_err_set(err, TQ_ERR_MALFORMED, "%s: truncated at %s", what, f->name);
        /* stored before the check, so that an ERROR can carry req as ref */
        put_int((uint8_t *)fx + f->off, f->wire, v);
        if (check_fix(d, what, f, v, nparts, err) < 0)
            return -1;
    }
    size_t n = fx->count;
    if (d->dec(what, &c, parts, n, max_payload, fx->flags, recs, err) < 0)
        return -1;
    size_t left = tq_cursor_left(&c);
    if (left)
        return tq_err_set(err, TQ_ERR_MALFORMED, "%s: %zu bytes left over after %zu records", what,
                          left, n);
    *count = n;
    return 0;
}

int tq_decode_msg(int type, tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                  size_t max_payload, tq_fixed_t *fx, void *recs, size_t *count, tq_err_t *err)
{
    return decode_bin(type, NULL, body, parts, nparts, max_payload, fx, recs, count, err);
}

int tq_decode_submit(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, size_t max_payload,
                     uint32_t *req_id, uint16_t *flags, tq_task_spec_t *out, size_t *count,
                     tq_err_t *err)
{
    tq_fixed_t fx;
    int rc = decode_bin(TQ_MSG_SUBMIT, NULL, body, parts, nparts, max_payload, &fx, out, count,
                        err);
    *req_id = fx.req;
    *flags = fx.flags;
    return rc;
}

/* The id lists: SUBMIT_ACK, WAIT, CANCEL, ACK (tq_id_rec_t is a u64). */
_Static_assert(sizeof(tq_id_rec_t) == sizeof(uint64_t), "tq_id_rec_t must be a bare u64");

int tq_decode_req_ids(int type, tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids,
                      size_t *count, tq_err_t *err)
{
    tq_fixed_t fx;
    int rc = decode_bin(type, NULL, body, NULL, nparts, 0, &fx, ids, count, err);
    *req_id = fx.req;
    return rc;
}

int tq_decode_submit_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids,
                         size_t *count, tq_err_t *err)
{
    return tq_decode_req_ids(TQ_MSG_SUBMIT_ACK, body, nparts, req_id, ids, count, err);
}

int tq_decode_ids(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids, size_t *count,
                  tq_err_t *err)
{
    tq_fixed_t fx;
    int rc = decode_bin(TQ_MSG_WAIT, "WAIT/CANCEL", body, NULL, nparts, 0, &fx, ids, count, err);
    *req_id = fx.req;
    return rc;
}

int tq_decode_results(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, tq_outcome_t *out,
                      size_t *count, tq_err_t *err)
{
    tq_fixed_t fx;
    return decode_bin(TQ_MSG_RESULTS, NULL, body, parts, nparts, 0, &fx, out, count, err);
}

int tq_decode_cancel_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, tq_cancel_item_t *out,
                         size_t *count, tq_err_t *err)
{
    tq_fixed_t fx;
    int rc = decode_bin(TQ_MSG_CANCEL_ACK, NULL, body, NULL, nparts, 0, &fx, out, count, err);
    *req_id = fx.req;
    return rc;
}

int tq_decode_dispatch(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                       tq_dispatch_item_t *out, size_t *count, tq_err_t *err)
{
    tq_fixed_t fx;
    return decode_bin(TQ_MSG_DISPATCH, NULL, body, parts, nparts, 0, &fx, out, count, err);
}

int tq_decode_result(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, size_t max_payload,
                     uint16_t *credit, tq_result_item_t *out, size_t *count, tq_err_t *err)
{
    tq_fixed_t fx;
    int rc = decode_bin(TQ_MSG_RESULT, NULL, body, parts, nparts, max_payload, &fx, out, count,
                        err);
    *credit = fx.credit;
    return rc;
}

int tq_decode_leases(tq_bytes_t body, size_t nparts, tq_lease_ref_t *out, size_t *count,
                     tq_err_t *err)
{
    tq_fixed_t fx;
    return decode_bin(TQ_MSG_RELEASE, "RELEASE/KILL", body, NULL, nparts, 0, &fx, out, count, err);
}


int tq_decode_empty(tq_bytes_t body, size_t nparts, tq_err_t *err)
{
    if (body.len)
        return tq_err_set(err, TQ_ERR_MALFORMED, "body should be empty, has %zu bytes", body.len);
    if (nparts)
        return tq_err_set(err, TQ_ERR_MALFORMED, "%zu unexpected data frames", nparts);
    return 0;
}

static int is_json_space(uint8_t ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

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

int tq_decode_json(tq_bytes_t body, size_t nparts, size_t max_len, void **out, tq_err_t *err)
{
    *out = NULL;
    if (nparts)
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON message with %zu unexpected data frames",
                          nparts);
    if (body.len > max_len)
        return tq_err_set(err, TQ_ERR_TOO_LARGE, "JSON body is %zu bytes, max %zu", body.len,
                          max_len);
    if (body.len == 0)
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON body is empty, expected an object");
    /* cJSON stops at a NUL inside strings; refuse rather than truncate. */
    if (memchr(body.data, 0, body.len))
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON body contains a NUL byte");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)body.data, body.len, &end, 0);
    if (!j) {
        size_t at = end && end >= (const char *)body.data ? (size_t)(end - (const char *)body.data)
                                                          : 0;
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON body does not parse (near byte %zu)", at);
    }
    /* cJSON_ParseWithLength accepts trailing bytes after the value; we
     * allow only whitespace there. */
    const uint8_t *p = (const uint8_t *)end, *stop = body.data + body.len;
    while (p < stop && is_json_space(*p))
        p++;
    if (p != stop) {
        cJSON_Delete(j);
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON body: %zu bytes left over after the value",
                          (size_t)(stop - p));
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return tq_err_set(err, TQ_ERR_MALFORMED, "JSON body is not an object");
    }
    *out = j;
    return 0;
}

/* ---- encoding ------------------------------------------------------------ */

void tq_out_init(tq_out_t *o)
{
    memset(o, 0, sizeof *o);
    tq_buf_init(&o->head);
    o->type = -1;
}

void tq_out_free(tq_out_t *o)
{
    tq_buf_free(&o->head);
    free(o->parts);
    free(o->lends);
    tq_out_init(o);
}

static void put_wire(tq_buf_t *b, int w, uint64_t v)
{
    switch (w) {
    case W_U8: tq_buf_u8(b, (uint8_t)v); break;
    case W_U16: tq_buf_u16(b, (uint16_t)v); break;
    case W_U32:
    case W_I32: tq_buf_u32(b, (uint32_t)v); break;
    default: tq_buf_u64(b, v); break;
    }
}

/* Integer member of wire type w at p. */
static uint64_t load_int(const void *p, int w)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (w) {
    case W_U8: memcpy(&u8, p, 1); return u8;
    case W_U16: memcpy(&u16, p, 2); return u16;
    case W_U32:
    case W_I32: memcpy(&u32, p, 4); return u32;
    default: memcpy(&u64, p, 8); return u64;
    }
}

void tq_out_begin_msg(tq_out_t *o, int type, const tq_fixed_t *fx)
{
    static const tq_fixed_t zero;
    const msg_desc_t *d = msg_desc(type);
    TQ_ASSERT(d);
    if (!fx)
        fx = &zero;
    o->head.len = 0;
    tq_buf_reserve(&o->head, 64);
    tq_buf_u8(&o->head, TQ_SIG0);
    tq_buf_u8(&o->head, TQ_SIG1);
    tq_buf_u8(&o->head, TQ_PROTO_VERSION);
    tq_buf_u8(&o->head, (uint8_t)type);
    o->type = type;
    o->flags = fx->flags;
    o->count = 0;
    o->count_off = 0;
    o->nparts = 0;
    o->part_bytes = 0;
    o->lent_bytes = 0;
    for (const field_t *f = d->fields; f->part == P_FIX; f++) {
        if (f->check == C_COUNT)
            o->count_off = o->head.len; /* patched as records are added */
        uint64_t v = f->check == C_COUNT ? 0 : load_int((const uint8_t *)fx + f->off, f->wire);
        put_wire(&o->head, f->wire, v);
    }
}

void tq_out_begin(tq_out_t *o, int type) { tq_out_begin_msg(o, type, NULL); }

void tq_out_begin_submit(tq_out_t *o, uint32_t req_id, uint16_t flags)
{
    tq_out_begin_msg(o, TQ_MSG_SUBMIT, &(tq_fixed_t){.req = req_id, .flags = flags});
}

void tq_out_begin_ids(tq_out_t *o, int type, uint32_t req_id)
{
    TQ_ASSERT(type == TQ_MSG_WAIT || type == TQ_MSG_CANCEL || type == TQ_MSG_SUBMIT_ACK ||
              type == TQ_MSG_ACK);
    tq_out_begin_msg(o, type, &(tq_fixed_t){.req = req_id});
}

void tq_out_begin_cancel_ack(tq_out_t *o, uint32_t req_id)
{
    tq_out_begin_msg(o, TQ_MSG_CANCEL_ACK, &(tq_fixed_t){.req = req_id});
}

void tq_out_begin_result(tq_out_t *o, uint16_t credit)
{
    tq_out_begin_msg(o, TQ_MSG_RESULT, &(tq_fixed_t){.credit = credit});
}

int tq_out_full(const tq_out_t *o)
{
    return o->count >= TQ_MAX_BATCH || o->part_bytes >= TQ_SEND_BYTES;
}

size_t tq_out_count(const tq_out_t *o) { return o->count; }

void tq_out_lend(tq_out_t *o, void (*hold)(void *hint), void (*release)(void *data, void *hint),
                 void *hint)
{
    TQ_ASSERT(o->nparts > 0 && hold && release);
    if (o->lends_cap < o->cap) {
        tq_out_lend_t *l = realloc(o->lends, o->cap * sizeof *l);
        if (!l)
            tq_proto_die("out of memory growing a message", __FILE__, __LINE__);
        for (size_t i = o->lends_cap; i < o->cap; i++)
            l[i].release = NULL;
        o->lends = l;
        o->lends_cap = o->cap;
    }
    o->lends[o->nparts - 1] = (tq_out_lend_t){hold, release, hint};
    o->lent_bytes += o->parts[o->nparts - 1].len;
}

static void add_part(tq_out_t *o, tq_bytes_t part)
{
    if (o->lends && o->nparts < o->lends_cap)
        o->lends[o->nparts].release = NULL; /* not lent unless tq_out_lend says so */
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

void tq_out_record(tq_out_t *o, const void *rec)
{
    const msg_desc_t *d = msg_desc(o->type);
    TQ_ASSERT(d && o->count_off != 0);
    TQ_ASSERT(o->count < TQ_MAX_BATCH);
    d->enc(o, rec);
    o->count++;
    tq_buf_patch_u16(&o->head, o->count_off, (uint16_t)o->count);
}

void tq_out_submit_task(tq_out_t *o, const tq_task_spec_t *t)
{
    TQ_ASSERT(o->type == TQ_MSG_SUBMIT);
    tq_out_record(o, t);
}

void tq_out_id(tq_out_t *o, uint64_t id)
{
    TQ_ASSERT(o->type == TQ_MSG_WAIT || o->type == TQ_MSG_CANCEL || o->type == TQ_MSG_SUBMIT_ACK ||
              o->type == TQ_MSG_ACK);
    tq_out_record(o, &(tq_id_rec_t){id});
}

void tq_out_cancel_item(tq_out_t *o, uint64_t id, uint8_t outcome)
{
    TQ_ASSERT(o->type == TQ_MSG_CANCEL_ACK);
    tq_out_record(o, &(tq_cancel_item_t){.id = id, .outcome = outcome});
}

void tq_out_outcome(tq_out_t *o, const tq_outcome_t *r)
{
    TQ_ASSERT(o->type == TQ_MSG_RESULTS);
    tq_out_record(o, r);
}

void tq_out_dispatch_item(tq_out_t *o, const tq_dispatch_item_t *d)
{
    TQ_ASSERT(o->type == TQ_MSG_DISPATCH);
    tq_out_record(o, d);
}

void tq_out_result_item(tq_out_t *o, const tq_result_item_t *r)
{
    TQ_ASSERT(o->type == TQ_MSG_RESULT);
    tq_out_record(o, r);
}

void tq_out_lease(tq_out_t *o, uint64_t id, uint32_t attempt)
{
    TQ_ASSERT(o->type == TQ_MSG_RELEASE || o->type == TQ_MSG_KILL);
    tq_out_record(o, &(tq_lease_ref_t){.id = id, .attempt = attempt});
}

void tq_out_json(tq_out_t *o, int type, const void *json)
{
    tq_out_begin_msg(o, type, NULL);
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
