/* tq_ctl.h - the control messages with JSON bodies (HELLO, WELCOME,
 * ERROR, STATUS) as C structs, each with its one validator and its
 * encoder. Fields, types and ranges come from tq_msgs.def (TQ_JSON_*),
 * the meaning from PROTOCOL.md section 12. Every receiver of a control
 * message uses these, so all of them accept and refuse the same things.
 *
 * Decoders copy what they keep into the struct (no cJSON outlives the
 * call), ignore unknown fields, and return 0, or -1 with err naming the
 * field (TQ_ERR_MALFORMED; TQ_ERR_BAD_NAME for a name; TQ_ERR_TOO_MANY
 * for too many functions; TQ_ERR_TOO_LARGE for a body over its cap). */
#ifndef TQ_CTL_H
#define TQ_CTL_H

#include "tq_proto.h"

/* HELLO (12.1). */
typedef struct {
    int worker; /* role "worker" (else "client") */
    char role[8];
    char name[TQ_MAX_PEER_NAME + 1];                   /* 1..128 printable ASCII */
    char instance[TQ_INSTANCE_HEX + 1];                /* "" when not given */
    uint64_t instance_id;                              /* its value; 0 when not given */
    uint32_t slots;                                    /* worker: 1..TQ_MAX_SLOTS */
    uint32_t prefetch;                                 /* worker, default 0 */
    uint32_t busy;                                     /* worker, 0..slots+prefetch */
    int adaptive;                                      /* worker: first credit slots - busy,
                                                 * the rest comes in RESULT credit */
    int packed;                                        /* send me packed messages */
    size_t nfunctions;                                 /* worker: 1..TQ_MAX_FUNCTIONS */
    char functions[TQ_MAX_FUNCTIONS][TQ_MAX_NAME + 1]; /* valid names */
} tq_hello_t;

/* WELCOME (12.2). */
typedef struct {
    uint32_t version;                  /* TQ_PROTO_VERSION */
    uint32_t heartbeat_ms;             /* TQ_WELCOME_HB_MIN_MS..TQ_WELCOME_HB_MAX_MS */
    uint32_t heartbeat_timeout_ms;     /* more than heartbeat_ms, at most
                                    * TQ_WELCOME_HB_TIMEOUT_MAX_MS */
    uint64_t max_payload;              /* 1..TQ_PAYLOAD_HARD_MAX */
    char master[TQ_MAX_PEER_NAME + 1]; /* "" when not given */
    int packed;                        /* the master takes packed messages */
} tq_welcome_t;

/* ERROR (12.3). */
typedef struct {
    uint32_t code;                   /* tq_err_code_t (others possible) */
    char message[TQ_MAX_ERROR_TEXT]; /* cut at TQ_MAX_ERROR_TEXT - 1 bytes */
    uint32_t ref;                    /* the req it answers, 0 if none */
} tq_errmsg_t;

/* STATUS (4, STATUS). */
typedef struct {
    uint32_t req;          /* echoed in STATUS_REPLY and in an ERROR's ref */
    uint32_t queue_offset; /* first queue row wanted */
} tq_status_req_t;

int tq_hello_decode(tq_bytes_t body, size_t nparts, tq_hello_t *out, tq_err_t *err);
int tq_welcome_decode(tq_bytes_t body, size_t nparts, tq_welcome_t *out, tq_err_t *err);
/* A body that is not a valid ERROR still yields a usable *out: code
 * TQ_ERR_INTERNAL, ref 0, "peer sent an unreadable error (...)". */
int tq_errmsg_decode(tq_bytes_t body, size_t nparts, tq_errmsg_t *out, tq_err_t *err);
int tq_status_req_decode(tq_bytes_t body, size_t nparts, tq_status_req_t *out, tq_err_t *err);

/* Encoders: a HELLO of h (a worker's fields only when h->worker; its
 * instance only when set; busy and prefetch only when not 0), a WELCOME
 * of w, a STATUS of s. Fields that the decoders would refuse are a
 * caller bug (assert). */
void tq_out_hello(tq_out_t *o, const tq_hello_t *h);
void tq_out_welcome(tq_out_t *o, const tq_welcome_t *w);
void tq_out_status_req(tq_out_t *o, const tq_status_req_t *s);

#endif
