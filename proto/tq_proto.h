/* tq_proto.h - taskq wire protocol v1: message types, codes, encoders and
 * decoders. The bytes are described in proto/PROTOCOL.md; this header is
 * the C view of the same thing.
 *
 * Every message is a ZeroMQ multipart message. Frame 0 is the head:
 *   'T' 'Q' VERSION TYPE  body...
 * Integers in bodies are little-endian. Hot-path bodies (SUBMIT,
 * SUBMIT_ACK, DISPATCH, RESULT, WAIT, RESULTS, CANCEL, CANCEL_ACK,
 * RELEASE, KILL) are binary; control bodies (HELLO, WELCOME, ERROR,
 * STATUS, STATUS_REPLY) are one JSON object. Payloads, results and error
 * texts travel in frames 1..n, one per task, in record order.
 *
 * Every message and field is described once, in tq_msgs.def: the
 * encoder and decoder here walk that table. Control messages (HELLO,
 * WELCOME, ERROR, STATUS) have structs and validators in tq_ctl.h;
 * sending and receiving on ZeroMQ sockets is tq_frame.h.
 *
 * Decoders never copy: they return views (tq_bytes_t) into the received
 * frames, valid while the tq_in_t they came from is alive. */
#ifndef TQ_PROTO_H
#define TQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "tq_err.h"
#include "tq_limits.h"
#include "tq_wire.h"

/* Bump when a message's layout or meaning changes incompatibly. A peer
 * speaking another version gets ERROR TQ_ERR_VERSION; the 4-byte head
 * itself never changes, so that reply is always readable. */
#define TQ_PROTO_VERSION 1
#define TQ_SIG0 'T'
#define TQ_SIG1 'Q'
#define TQ_HEAD_SIZE 4
/* Set in the head's TYPE byte: the message is one frame, its data
 * frames packed after the body (PROTOCOL.md 3.1), so CURVE seals it
 * once, not once per record. Sent only to peers that said they take it (HELLO/WELCOME
 * "packed"); tq_in_recv unpacks and clears the bit. */
#define TQ_TYPE_PACKED 0x80

/* Every message type and its fields are described once, in
 * tq_msgs.def (see there); PROTOCOL.md section 4 says what each means. */
#include "tq_msgs.def"

/* TQ_MSG_HELLO = 0x01, ... TQ_MSG_KILL = 0x23. */
typedef enum {
#define TQ_MSG_ENUM_(N, code, body, sender, frames, jmax, rect) TQ_MSG_##N = code,
    TQ_MSGS(TQ_MSG_ENUM_)
#undef TQ_MSG_ENUM_
} tq_msg_type_t;

/* SUBMIT flags */
#define TQ_SUBMIT_SUBSCRIBE 0x0001u /* also send me the results (as WAIT) */
/* Keys of this batch are held only while their task is stored and its
 * outcome not ACKed (session keys: a resent batch after a reconnect
 * gets the same ids), not for --key-retention. */
#define TQ_SUBMIT_SCOPED_KEYS 0x0002u
/* Every record carries a not_before_ms (u64, Unix ms) after retries:
 * the task is not runnable before then (submit --delay / --at). */
#define TQ_SUBMIT_NOT_BEFORE 0x0004u
#define TQ_SUBMIT_FLAGS_ALL (TQ_SUBMIT_SUBSCRIBE | TQ_SUBMIT_SCOPED_KEYS | TQ_SUBMIT_NOT_BEFORE)

/* Error codes in ERROR messages (and tq_err_t.code in proto/ and
 * master/, tq_err.h). Stable numbers. */
typedef enum {
    TQ_ERR_NONE = 0,
    TQ_ERR_MALFORMED = 1,      /* short, truncated, trailing bytes, bad field */
    TQ_ERR_VERSION = 2,        /* wrong protocol version */
    TQ_ERR_UNKNOWN_TYPE = 3,   /* message type not defined in this version */
    TQ_ERR_TOO_LARGE = 4,      /* payload or message over a limit */
    TQ_ERR_TOO_MANY = 5,       /* more records or frames than allowed */
    TQ_ERR_NOT_REGISTERED = 6, /* send HELLO first */
    TQ_ERR_BAD_NAME = 7,       /* function, queue or peer name not valid */
    TQ_ERR_WRONG_ROLE = 8,     /* e.g. a client sent RESULT */
    TQ_ERR_FULL = 9,           /* master at --max-tasks */
    TQ_ERR_SIGNATURE = 10,     /* frame 0 does not start with "TQ" */
    TQ_ERR_INTERNAL = 11,      /* master's own fault; logged there */
    TQ_ERR_UNAVAILABLE = 12,   /* master cannot accept now (journal, drain) */
    TQ_ERR_FORBIDDEN = 13,     /* the identity of the key may not do this (--allow-keys) */
} tq_err_code_t;


/* Task outcome status in RESULTS (master -> client). */
typedef enum {
    TQ_ST_DONE = 1,      /* data = result */
    TQ_ST_FAILED = 2,    /* data = error text */
    TQ_ST_CANCELLED = 3, /* data = empty */
    TQ_ST_UNKNOWN = 4,   /* no such task (never existed, or expired) */
    TQ_ST_DEAD = 5,      /* gave up after max attempts; data = last error */
} tq_task_status_t;

/* Result status in RESULT (worker -> master). */
typedef enum {
    TQ_RUN_OK = 0,      /* data = result */
    TQ_RUN_FAILED = 1,  /* data = error text */
    TQ_RUN_TIMEOUT = 2, /* data = error text */
} tq_run_status_t;

/* CANCEL_ACK outcome per id. */
typedef enum {
    TQ_CANCEL_OK = 0,       /* was queued or running; now cancelled */
    TQ_CANCEL_FINISHED = 1, /* already done/failed: nothing to cancel */
    TQ_CANCEL_UNKNOWN = 2,  /* no such task */
} tq_cancel_outcome_t;

/* ---- decoded records (views into received frames) ---------------------- */

/* One task of a SUBMIT. */
typedef struct {
    tq_bytes_t fn;         /* 1..TQ_MAX_NAME, a valid name */
    tq_bytes_t queue;      /* 0..TQ_MAX_NAME; empty means "default" */
    tq_bytes_t key;        /* idempotency key, 0..TQ_MAX_KEY bytes */
    int32_t priority;      /* higher runs first */
    uint32_t timeout_ms;   /* run timeout, 0 = none */
    uint16_t retries;      /* re-runs after failure */
    tq_bytes_t payload;    /* the task's frame */
    int64_t not_before_ms; /* wall clock (Unix ms); 0 = runnable now.
                            * Sent only with TQ_SUBMIT_NOT_BEFORE. */
} tq_task_spec_t;

/* One task of a DISPATCH. */
typedef struct {
    uint64_t id;
    uint32_t attempt;    /* fencing token: echo it in RESULT */
    uint32_t timeout_ms; /* 0 = none */
    tq_bytes_t fn;
    tq_bytes_t payload;
} tq_dispatch_item_t;

/* One outcome of a RESULT (worker -> master). */
typedef struct {
    uint64_t id;
    uint32_t attempt;
    uint8_t status; /* tq_run_status_t */
    tq_bytes_t data;
} tq_result_item_t;

/* One outcome of RESULTS (master -> client). */
typedef struct {
    uint64_t id;
    uint8_t status;    /* tq_task_status_t */
    uint32_t attempts; /* dispatches it took */
    tq_bytes_t data;
} tq_outcome_t;

/* One (id, attempt) of RELEASE and KILL. */
typedef struct {
    uint64_t id;
    uint32_t attempt;
} tq_lease_ref_t;

/* One id of SUBMIT_ACK, WAIT, CANCEL and ACK. */
typedef struct {
    uint64_t id;
} tq_id_rec_t;

/* One item of a PUT (client -> master). */
typedef struct {
    tq_bytes_t queue;
    tq_bytes_t data;
} tq_put_item_t;

/* The record of a GET: the queue to take from. */
typedef struct {
    tq_bytes_t queue;
} tq_get_rec_t;

/* One item of a GOT (master -> client). */
typedef struct {
    uint64_t id;
    tq_bytes_t data;
} tq_got_item_t;

/* The fixed fields before the records of a binary body (each message
 * has those tq_msgs.def lists; the others read 0). */
typedef struct {
    uint32_t req;        /* SUBMIT, SUBMIT_ACK, WAIT, CANCEL, CANCEL_ACK, ACK */
    uint16_t flags;      /* SUBMIT */
    uint16_t credit;     /* RESULT */
    uint32_t timeout_ms; /* GET: longest wait, ms */
    uint16_t max;        /* GET: most items wanted */
    uint16_t count;      /* records */
} tq_fixed_t;

/* One (id, outcome) of CANCEL_ACK. */
typedef struct {
    uint64_t id;
    uint8_t outcome; /* tq_cancel_outcome_t */
} tq_cancel_item_t;

/* ---- names ------------------------------------------------------------- */

/* 1 if b is a valid function or queue name: 1..TQ_MAX_NAME bytes of
 * [A-Za-z0-9_.:-]. */
int tq_name_valid(tq_bytes_t b);

/* Text for a message type ("SUBMIT") or "UNKNOWN"; for logs. */
const char *tq_msg_type_name(int type);

/* Text for an error code ("malformed message"). */
const char *tq_err_code_name(int code);


/* ---- decoding ----------------------------------------------------------
 * Every decoder returns 0, or -1 with err filled. Counts are bounded by
 * TQ_MAX_BATCH; `out` arrays must hold TQ_MAX_BATCH items. `parts` are
 * frames 1..n of the message (payload/data frames), nparts their number:
 * a record count that disagrees with nparts is TQ_ERR_MALFORMED. */

/* Check the head of frame 0: signature, version, known type. On success
 * *type is set and *body is the rest of frame 0. */
int tq_decode_head(tq_bytes_t frame0, int *type, tq_bytes_t *body, tq_err_t *err);

/* Any binary body (SUBMIT ... KILL), as tq_msgs.def describes it:
 * fixed fields into *fx, records into recs, an array of TQ_MAX_BATCH of
 * the type's record struct (tq_task_spec_t for SUBMIT, tq_id_rec_t or
 * uint64_t for the id lists, ...). max_payload caps the data frames
 * whose rule is PAYLOAD (SUBMIT, RESULT). fx->req is set as soon as it
 * is read, also when the body is refused later, so that the ERROR can
 * carry it as ref. The tq_decode_<type> functions below are this one. */
int tq_decode_msg(int type, tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                  size_t max_payload, tq_fixed_t *fx, void *recs, size_t *count, tq_err_t *err);

/* 1 if a body of type starts with a u32 req (the types of tq_fixed_t.req). */
int tq_msg_has_req(int type);
/* The req of such a body, or 0 (other types, or shorter than 4 bytes):
 * the ref of an ERROR about a message refused before its body was
 * decoded (too many frames, a bad pack). */
uint32_t tq_msg_peek_req(int type, tq_bytes_t body);

/* SUBMIT_ACK, WAIT, CANCEL, ACK: a request id and task ids. */
int tq_decode_req_ids(int type, tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids,
                      size_t *count, tq_err_t *err);

/* SUBMIT. max_payload: the master's current cap for one payload. */
int tq_decode_submit(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, size_t max_payload,
                     uint32_t *req_id, uint16_t *flags, tq_task_spec_t *out, size_t *count,
                     tq_err_t *err);

/* SUBMIT_ACK: ids in submit order. */
int tq_decode_submit_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids,
                         size_t *count, tq_err_t *err);

/* WAIT and CANCEL (the same layout): tq_decode_req_ids. */
int tq_decode_ids(tq_bytes_t body, size_t nparts, uint32_t *req_id, uint64_t *ids, size_t *count,
                  tq_err_t *err);

/* RESULTS (master -> client). */
int tq_decode_results(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, tq_outcome_t *out,
                      size_t *count, tq_err_t *err);

/* CANCEL_ACK. */
int tq_decode_cancel_ack(tq_bytes_t body, size_t nparts, uint32_t *req_id, tq_cancel_item_t *out,
                         size_t *count, tq_err_t *err);

/* DISPATCH (master -> worker). */
int tq_decode_dispatch(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts,
                       tq_dispatch_item_t *out, size_t *count, tq_err_t *err);

/* RESULT (worker -> master). *credit: slots the worker adds. */
int tq_decode_result(tq_bytes_t body, const tq_bytes_t *parts, size_t nparts, size_t max_payload,
                     uint16_t *credit, tq_result_item_t *out, size_t *count, tq_err_t *err);

/* RELEASE and KILL. */
int tq_decode_leases(tq_bytes_t body, size_t nparts, tq_lease_ref_t *out, size_t *count,
                     tq_err_t *err);

/* An empty-body message (HEARTBEAT, BYE, DRAIN): body and parts must be
 * empty. */
int tq_decode_empty(tq_bytes_t body, size_t nparts, tq_err_t *err);

/* A JSON body of at most max_len bytes that parses to an object.
 * Caller owns *out (cJSON_Delete). Declared as void ** so that this
 * header does not pull in cJSON. */
int tq_decode_json(tq_bytes_t body, size_t nparts, size_t max_len, void **out, tq_err_t *err);

/* A field of such a document (a cJSON *, or NULL) that must be an
 * integer in min..max: returns 0 with *out, or -1 when it is absent, not
 * a number, not whole, or out of range. JSON numbers are doubles, so
 * integers above 2^53 are not all representable; a value of 2^64 or
 * more is refused before any conversion (which would be undefined). */
int tq_json_uint(const void *item, uint64_t min, uint64_t max, uint64_t *out);

/* ---- encoding -----------------------------------------------------------
 * tq_out_t builds one outgoing message: frame 0 in `head`, and borrowed
 * views of the data frames, which must stay valid until tq_out_send.
 * Typical use:
 *     tq_out_begin(&o, TQ_MSG_DISPATCH);
 *     for (...) tq_out_dispatch_item(&o, &item);
 *     tq_out_send(&o, sock, rid, 0);
 * Builders abort on out-of-memory (internal, fixed-size growth). Adding
 * more than TQ_MAX_BATCH items is a caller bug (assert): check
 * tq_out_full() first. */
typedef struct {
    tq_buf_t head;
    int type;
    size_t count_off; /* offset of the u16 record count in head */
    unsigned flags;   /* SUBMIT: the message's flags (record layout) */
    size_t count;
    size_t part_bytes; /* sum of data frame sizes: for TQ_BATCH_BYTES */
    tq_bytes_t *parts;
    size_t nparts, cap;
    /* Parts lent to the sender (tq_out_lend), parallel to parts; NULL
     * until the first lend. lent_bytes: their total. */
    struct tq_out_lend *lends;
    size_t lends_cap, lent_bytes;
} tq_out_t;

/* A data part whose owner lets the sender hand it to ZeroMQ without a
 * copy (zero-copy frames): hold(hint) takes one more reference to the
 * bytes before ZeroMQ gets them, and ZeroMQ calls release(data, hint)
 * (from its I/O thread, or at once when the send fails) when it is done
 * with them. The owner keeps its own reference, so a failed or repeated
 * send changes nothing for it. */
typedef struct tq_out_lend {
    void (*hold)(void *hint);
    void (*release)(void *data, void *hint); /* NULL: not lent */
    void *hint;
} tq_out_lend_t;

/* Mark the part added last as lent (see tq_out_lend_t). The sender then
 * sends the message as plain frames, the lent ones without a copy, when
 * lent parts are most of its data and it has at most TQ_LEND_MAX_PARTS
 * parts (each frame is sealed on its own with CURVE); otherwise packed
 * as usual. */
#define TQ_LEND_MAX_PARTS 32
/* Parts smaller than this are not worth lending (a frame of their own). */
#define TQ_LEND_MIN (16u * 1024u)
void tq_out_lend(tq_out_t *o, void (*hold)(void *hint), void (*release)(void *data, void *hint),
                 void *hint);

void tq_out_init(tq_out_t *o);
void tq_out_free(tq_out_t *o);

/* Start a message of `type`, discarding anything built before. For the
 * binary types the fixed fields follow: */
/* Any type: the fixed fields come from fx (NULL: all 0; count is
 * kept by the builder). */
void tq_out_begin_msg(tq_out_t *o, int type, const tq_fixed_t *fx);
void tq_out_begin(tq_out_t *o, int type);
void tq_out_begin_submit(tq_out_t *o, uint32_t req_id, uint16_t flags);
void tq_out_begin_ids(tq_out_t *o, int type /* WAIT|CANCEL|SUBMIT_ACK */, uint32_t req_id);
void tq_out_begin_cancel_ack(tq_out_t *o, uint32_t req_id);
void tq_out_begin_result(tq_out_t *o, uint16_t credit);

/* 1 when no more records fit (TQ_MAX_BATCH records or TQ_BATCH_BYTES of
 * data frames): send and begin again. */
int tq_out_full(const tq_out_t *o);
/* Records in the message so far. */
size_t tq_out_count(const tq_out_t *o);

/* One record of the message begun: rec is the type's record struct
 * (as for tq_decode_msg); its data frame is borrowed. The
 * tq_out_<record> functions below are this one. */
void tq_out_record(tq_out_t *o, const void *rec);
void tq_out_submit_task(tq_out_t *o, const tq_task_spec_t *t);
void tq_out_id(tq_out_t *o, uint64_t id); /* WAIT, CANCEL, SUBMIT_ACK */
void tq_out_cancel_item(tq_out_t *o, uint64_t id, uint8_t outcome);
void tq_out_outcome(tq_out_t *o, const tq_outcome_t *r); /* RESULTS */
void tq_out_dispatch_item(tq_out_t *o, const tq_dispatch_item_t *d);
void tq_out_result_item(tq_out_t *o, const tq_result_item_t *r); /* RESULT */
void tq_out_lease(tq_out_t *o, uint64_t id, uint32_t attempt);   /* RELEASE, KILL */

/* A JSON control message: head + the serialised object (cJSON *). */
void tq_out_json(tq_out_t *o, int type, const void *json);
/* An ERROR message: {"code":code,"message":msg,"ref":ref}. */
void tq_out_error(tq_out_t *o, int code, uint32_t ref, const char *msg);

#endif
