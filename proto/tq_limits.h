/* tq_limits.h - every size a peer controls, capped before anything is
 * allocated. One place, each with its reason. proto/PROTOCOL.md lists the
 * same numbers; change both together. */
#ifndef TQ_LIMITS_H
#define TQ_LIMITS_H

/* Tasks in one SUBMIT, DISPATCH, RESULT, WAIT, RESULTS, CANCEL or RELEASE
 * message. Enough to amortise the per-message CURVE box and syscall over
 * many tasks; small enough that one message never holds the event loop
 * for long, and that a decoder can use fixed arrays of this many items. */
#define TQ_MAX_BATCH 1024

/* Queues named in one GET (it takes from the first of them, in its
 * order, that has items). A handful covers "my queue, then the shared
 * one"; the cap bounds the scan a parked GET repeats on every PUT. */
#define TQ_MAX_GET_QUEUES 16

/* Longest wait of one GET (timeout_ms): a day. Longer waits are a
 * client's loop of GETs; the bound keeps a parked GET's deadline sane. */
#define TQ_MAX_GET_WAIT_MS (24u * 3600u * 1000u)

/* Blocking GETs parked at once per connection, and in all: each holds a
 * little memory until an item or its timeout comes. */
#define TQ_MAX_GETS_PER_CONN 64

/* Plain (put/get) queue names held by the master at once: the names
 * are looked up by a scan, and a client must not make the table grow
 * without bound. */
#define TQ_MAX_ITEM_QUEUES 256

/* Frames in one message, not counting a ROUTER's routing-id frame: the
 * head frame and one data frame per record, with one to spare. Anything
 * longer is malformed (read to its end and discarded). */
#define TQ_MAX_FRAMES (TQ_MAX_BATCH + 2)

/* Default cap on one payload, result or error (the master's
 * --max-payload may lower or raise it up to the hard cap). The tutorial
 * advises sending a path rather than the data; 64 MiB is generous. */
#define TQ_PAYLOAD_DEFAULT_MAX (64u * 1024u * 1024u)

/* Hard cap on --max-payload: a single frame above this is refused by
 * ZeroMQ itself (ZMQ_MAXMSGSIZE) before it is buffered. */
#define TQ_PAYLOAD_HARD_MAX (512u * 1024u * 1024u)

/* Senders close a batch once its payloads reach this many bytes, so one
 * message stays a bounded unit of work for every hop. */
#define TQ_BATCH_BYTES (4u * 1024u * 1024u)

/* Bytes of one message besides its records' data: frame 0 with 1024
 * records of names, keys and fields (about 270 bytes each at most), a
 * pack's length prefixes, a JSON body (TQ_MAX_JSON), with room to spare. */
#define TQ_MSG_OVERHEAD (1u << 20)

/* Most bytes one message to the master may carry, with --max-payload
 * mp: senders close a batch once its data reaches TQ_BATCH_BYTES, so a
 * message's data stays below TQ_BATCH_BYTES + one record's data. It is
 * also the largest frame (a packed message is one frame): the master's
 * ZMQ_MAXMSGSIZE, so libzmq refuses a longer frame as its header
 * arrives, before buffering it. */
#define TQ_MSG_MAX(mp) ((uint64_t)(mp) + TQ_BATCH_BYTES + TQ_MSG_OVERHEAD)

/* Function and queue names: short identifiers, [A-Za-z0-9_.:-]. Fits a
 * u8 length prefix with room to spare. */
#define TQ_MAX_NAME 64

/* Idempotency keys (submit --key): opaque bytes, u8 length prefix. */
#define TQ_MAX_KEY 128

/* Worker and client names shown in status: printable ASCII. */
#define TQ_MAX_PEER_NAME 128

/* A worker's instance id in HELLO ("instance"): exactly this many
 * lowercase hex digits (64 random bits, not all zero), the same on each
 * reconnect of one worker; the master takes a result only from the
 * instance that holds, or last held, the attempt. */
#define TQ_INSTANCE_HEX 16

/* New queue and function names one connection may make the master
 * create (SUBMIT, a worker's HELLO, ADMIN naming a queue): a burst, then
 * a steady rate. The master keeps 65,536 names at once (freeing those
 * nothing uses); without this one client inventing names could fill the
 * table for everyone. Real clients use a handful of names. Past it:
 * ERROR TQ_ERR_TOO_MANY. */
#define TQ_PEER_NEW_NAMES_BURST 1024
#define TQ_PEER_NEW_NAMES_PER_S 100

/* Functions one worker may declare in HELLO. */
#define TQ_MAX_FUNCTIONS 256

/* Slots one worker may declare: credit is a u16 on the wire. */
#define TQ_MAX_SLOTS 4096
/* Tasks a worker may take beyond its slots (HELLO "prefetch"): the
 * master holds a lease per task, so the same bound as slots. */
#define TQ_MAX_PREFETCH 4096

/* A JSON control message (HELLO, WELCOME, ERROR, STATUS request). The
 * master's STATUS reply is the one large JSON message; clients accept up
 * to TQ_MAX_STATUS_JSON for it. */
#define TQ_MAX_JSON (64u * 1024u)
#define TQ_MAX_STATUS_JSON (16u * 1024u * 1024u)

/* WELCOME heartbeat settings a peer accepts (one validator for the
 * client and the worker, tq_welcome_decode): the master sends
 * 50..60000 ms and a timeout of 100..3600000 ms (its flags); a peer
 * takes ten times more room either way, so that a later master may
 * widen its flags, but refuses values that would make it spin (below
 * 10 ms) or never notice a dead master (above 10 hours). */
#define TQ_WELCOME_HB_MIN_MS 10
#define TQ_WELCOME_HB_MAX_MS 600000
#define TQ_WELCOME_HB_TIMEOUT_MAX_MS 36000000

/* ADMIN requests: ids one request may name (retry, purge), and dead
 * tasks one "dead" reply may list (the client pages with "after"). An
 * ADMIN request is at most TQ_MAX_JSON bytes; a reply at most
 * TQ_MAX_STATUS_JSON. */
#define TQ_MAX_ADMIN_IDS 1024
#define TQ_MAX_ADMIN_LIST 1000
/* Task ids one ADMIN "show" may name: each answer carries up to 16 KiB
 * of result and of payload (base64: about 44 KiB), so 100 keep a reply
 * under 5 MiB, far below TQ_MAX_STATUS_JSON. */
#define TQ_MAX_SHOW_IDS 100
/* Queued tasks one ADMIN "queue_empty" cancels (the client asks again
 * while "more"): bounds the time one request holds the loop. */
#define TQ_MAX_QUEUE_EMPTY 10000

/* Latest not_before_ms a SUBMIT may carry: 9999-12-31T23:59:59Z. */
#define TQ_MAX_NOT_BEFORE_MS 253402300799000LL

/* ZeroMQ routing ids are at most 255 bytes. */
#define TQ_MAX_ROUTING_ID 255

/* Error message text carried in an ERROR reply. */
#define TQ_MAX_ERROR_TEXT 512

#endif
