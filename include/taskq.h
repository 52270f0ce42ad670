/* taskq.h - libtaskq, the C library of the taskq task queue: the client
 * API (submit, wait, events; this part) and the worker API (serve
 * functions; "writing workers" below, guide in docs/workers.md).
 *
 * A program connects to one master, queues tasks locally, and reads
 * events back:
 *
 *     taskq_error_t err;
 *     taskq_t *tq = taskq_connect("tcp://127.0.0.1:7070", "/etc/taskq/authkey",
 *                                 10000, NULL, &err);
 *     if (!tq) { fprintf(stderr, "%s\n", err.message); exit(err.code); }
 *     taskq_task_opts_t o = TASKQ_TASK_OPTS_INIT;
 *     o.fn = "square";
 *     uint64_t seq;
 *     taskq_submit(tq, &o, "7", 1, TASKQ_SUBSCRIBE, &seq, &err);
 *     taskq_event_t ev;
 *     while (taskq_next_event(tq, -1, &ev, &err) == 1)
 *         if (ev.type == TASKQ_EVENT_RESULT) { ... break; }
 *     taskq_close(&tq);
 *
 * Submission is pipelined: taskq_submit only copies the task into the
 * current batch; a batch goes out as one SUBMIT message when it holds
 * TASKQ_BATCH_MAX tasks or TASKQ_BATCH_BYTES of payload, when the program
 * calls taskq_flush, or when it waits for events while no other batch is
 * waiting for its ids (as TCP's Nagle rule does: while one batch is in
 * flight the next keeps filling, and goes out when the ids come back).
 * There is never one round trip per task, and a lone task is sent at
 * once. The master answers each batch with the task ids, which arrive as
 * TASKQ_EVENT_SUBMITTED events mapping the local sequence number that
 * taskq_submit returned to the task id.
 *
 * Threads: a taskq_t is single-threaded. Use one handle per thread;
 * handles share nothing.
 *
 * Heartbeats: the library starts no thread and installs no timer, so it
 * heartbeats only while the program is inside a library call. Heartbeats
 * are sent, and the master's are read, only inside taskq_next_event,
 * taskq_cancel, taskq_status and taskq_admin (taskq_submit, taskq_flush and
 * taskq_wait only send). Between calls nothing is sent: a program that
 * stays out of those calls for longer than the master's heartbeat
 * timeout (5 s by default) is forgotten by the master, which drops its
 * result subscriptions (the results stay stored). That is recoverable,
 * not an error: on the next call the library quietly says HELLO again
 * and re-sends every unacknowledged batch, the WAIT for every result
 * still expected, and the pending cancel, status or admin request. The time
 * the program spent away is not counted against the master either. To
 * stay registered during long work between calls, call
 * taskq_next_event(tq, 0, &ev, &err) at least once per heartbeat
 * interval (1 s by default) and handle any event it returns.
 *
 * Reconnecting: when the master is silent past its heartbeat timeout,
 * or a send or receive fails, the handle does not fail at once. It opens
 * a fresh connection (same keys), says HELLO, and on WELCOME re-sends as
 * above, retrying with a pause of 100 ms doubling up to 2 s, for up to
 * the reconnect budget (taskq_set_reconnect, 60 s by default) counted
 * from the loss. Only then do calls fail with TASKQ_ERR_CONNECT "lost
 * connection to master at ENDPOINT". A handshake rejected during a
 * reconnect (wrong authkey) fails at once. Nothing is lost or repeated:
 * tasks submitted without a key get an automatic session key, so a
 * re-sent batch gets the same ids, and each result is handed out once.
 * Results handed out by taskq_next_event are acknowledged to the master
 * (ACK), which may then forget them.
 *
 * Errors: functions return 0 (or a pointer, or an event count) on
 * success and -1 (or NULL) on failure, with *err filled when err is not
 * NULL. err->code is one of the TASKQ_ERR_* categories below, which
 * have the same numbers as the exit statuses of the taskq command. */
#ifndef TASKQ_H
#define TASKQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TASKQ_API __attribute__((visibility("default")))
#else
#define TASKQ_API
#endif

#define TASKQ_VERSION_STRING "0.1.0"

/* ---- error categories (same numbers as the taskq exit statuses) ------- */
#define TASKQ_OK 0
#define TASKQ_ERR_TASK_FAILED 1 /* a task failed or is dead */
#define TASKQ_ERR_USAGE 2       /* bad argument from the caller */
#define TASKQ_ERR_CONNECT                                                                          \
    3                         /* cannot connect, authentication failed,
                                   or the master went silent */
#define TASKQ_ERR_TIMEOUT 4   /* a blocking call's timeout passed */
#define TASKQ_ERR_CANCELLED 5 /* a task was cancelled */
#define TASKQ_ERR_NOT_FOUND 6 /* a task id is unknown to the master */
#define TASKQ_ERR_REFUSED                                                                          \
    7                         /* the master refused the request (payload
                                   too large, bad name, full, ...) */
#define TASKQ_ERR_ENV 8       /* key file unreadable, bad mode, ... */
#define TASKQ_ERR_INTERNAL 70 /* a bug, or the master broke the protocol */

#define TASKQ_ERROR_MAX 512

/* What went wrong: a category and a one-line message (no trailing
 * newline, never containing key material). */
typedef struct {
    int code;
    char message[TASKQ_ERROR_MAX];
} taskq_error_t;

/* ---- limits mirrored from the wire protocol -------------------------- */
#define TASKQ_BATCH_MAX 1024                   /* tasks per SUBMIT message */
#define TASKQ_BATCH_BYTES (4u * 1024u * 1024u) /* payload bytes per SUBMIT */
#define TASKQ_NAME_MAX 64                      /* fn and queue names */
#define TASKQ_KEY_MAX 128                      /* idempotency key bytes */

typedef struct taskq taskq_t;

/* Connect to the master at endpoint ("tcp://HOST:PORT"; NULL means
 * "tcp://127.0.0.1:7070") using the authkey in the file authkey_path
 * (required; the file must not be readable by group or others, nor owned
 * by another user than ours or root, and the key must not be trivial:
 * fewer than 3 distinct bytes). Only the client key pair and the
 * master's public key are kept (never the master's secret key), in
 * memory left out of core dumps. connect_timeout_ms <= 0 means 10000. name is how the master shows this
 * client in status (printable ASCII, at most 128 bytes); NULL means
 * "HOST:PID".
 *
 * Blocks until the master's WELCOME arrives: at most connect_timeout_ms,
 * then fails with TASKQ_ERR_CONNECT "cannot connect to ENDPOINT". A
 * handshake rejected because the keys differ fails sooner (within about
 * 5 s) with TASKQ_ERR_CONNECT "authentication failed connecting to
 * ENDPOINT (wrong authkey?)". A bad key file is TASKQ_ERR_ENV; a bad
 * endpoint or name TASKQ_ERR_USAGE.
 *
 * Caller owns the result: release it with taskq_close. */
TASKQ_API taskq_t *taskq_connect(const char *endpoint, const char *authkey_path,
                                 int connect_timeout_ms, const char *name, taskq_error_t *err);

/* taskq_connect in key-pair mode (docs/security.md): this program's key
 * pair from key_path (a NAME.key made by `taskq keygen NAME`, mode 0600)
 * and the master's public key from master_key_path (its .pub file).
 * Either may be NULL to derive that part from authkey_path instead (the
 * shared-key mode; authkey_path NULL when both are given). The master
 * must list this key's public half in its --allow-keys file. A rejected
 * handshake fails with TASKQ_ERR_CONNECT "authentication failed
 * connecting to ENDPOINT (key not accepted: ...)"; a missing part is
 * TASKQ_ERR_USAGE, a bad key file TASKQ_ERR_ENV. */
TASKQ_API taskq_t *taskq_connect_keys(const char *endpoint, const char *authkey_path,
                                      const char *key_path, const char *master_key_path,
                                      int connect_timeout_ms, const char *name, taskq_error_t *err);

/* Acknowledge the results handed out, say BYE and release everything.
 * Tasks queued locally but not yet sent are dropped (call taskq_flush
 * first to send them); tasks the master has acknowledged are not
 * affected. Waits at most 1 s for queued
 * messages to leave. Accepts NULL and *self_p == NULL; sets *self_p to
 * NULL. */
TASKQ_API void taskq_close(taskq_t **self_p);

/* How long to keep trying to reach a lost master, in ms, counted from
 * the loss (see "Reconnecting" above). 0 never reconnects: the first
 * silence past the heartbeat timeout fails the handle. Default 60000.
 * Returns 0, or -1 if timeout_ms is negative. */
TASKQ_API int taskq_set_reconnect(taskq_t *self, int timeout_ms);

/* How long, in ms, a batch of submitted tasks may wait for the master's
 * answer (its ids, or a refusal) while connected: when the oldest
 * unanswered batch was sent (or sent again after a reconnect) longer ago,
 * taskq_next_event fails with TASKQ_ERR_TIMEOUT "no acknowledgement from
 * master at ENDPOINT within S s (is its journal failing? see taskq
 * status)"; later calls fail the same way until the answer comes. A
 * master that stays connected but does not answer (a journal write that
 * failed under the batch, a master stuck) then does not block the
 * program for ever. Time spent reconnecting is not counted (that is the
 * reconnect budget's). 0 (the default): no limit. Returns 0, or -1 if
 * timeout_ms is negative. */
TASKQ_API int taskq_set_ack_timeout(taskq_t *self, int timeout_ms);

/* Receives one-line notices about the connection (no trailing newline),
 * e.g. "lost connection to master at tcp://h:7070; reconnecting (up to
 * 60 s)" and "reconnected to master at tcp://h:7070". Called inside
 * library calls; message is valid only during the call. */
typedef void (*taskq_notice_fn)(void *arg, const char *message);

/* Set (or with NULL clear) the notice callback. The default is none:
 * the library prints nothing. */
TASKQ_API void taskq_set_notice(taskq_t *self, taskq_notice_fn fn, void *arg);

/* The endpoint this handle talks to (owned by the handle). */
TASKQ_API const char *taskq_endpoint(const taskq_t *self);

/* Largest payload the master accepts, from its WELCOME. */
TASKQ_API size_t taskq_max_payload(const taskq_t *self);

/* ---- submitting ------------------------------------------------------- */

/* Per-task options. Strings are copied by taskq_submit. */
typedef struct {
    const char *fn;        /* function name, [A-Za-z0-9_.:-]{1,64}; required */
    const char *queue;     /* queue name; NULL or "" means "default" */
    int32_t priority;      /* higher runs first; default 0 */
    uint32_t timeout_ms;   /* run timeout on the worker; 0 = none */
    uint16_t retries;      /* re-runs after a lost worker or timeout */
    const void *key;       /* idempotency key (kept 24 h by the master), or
                            NULL: an automatic key that lives as long as
                            the task, so a re-send is not a duplicate */
    size_t key_len;        /* bytes of key, at most TASKQ_KEY_MAX */
    int64_t not_before_ms; /* not runnable before this wall-clock time
                              (Unix ms, UTC); 0 or a past time = at once;
                              at most TASKQ_MAX_NOT_BEFORE_MS */
} taskq_task_opts_t;

#define TASKQ_TASK_OPTS_INIT                                                                       \
    {                                                                                              \
        NULL, NULL, 0, 0, 3, NULL, 0, 0                                                            \
    }

/* Latest not_before_ms: 9999-12-31T23:59:59Z. */
#define TASKQ_MAX_NOT_BEFORE_MS 253402300799000LL

/* taskq_submit flags */
#define TASKQ_SUBSCRIBE                                                                            \
    0x1 /* push this task's result as an event when it
                               finishes (as if taskq_wait had been called) */

/* Queue one task locally. The payload (len bytes, may contain any bytes,
 * len 0 allowed) and the options are copied; the caller keeps
 * ownership of its buffers. *seq_out (if not NULL) receives the task's
 * local sequence number: 1, 2, 3, ... in call order for this handle; the
 * TASKQ_EVENT_SUBMITTED event for that number carries the task id.
 *
 * Sends the current batch first when this task would not fit in it
 * (TASKQ_BATCH_MAX tasks, TASKQ_BATCH_BYTES of payload, different
 * flags, or a not_before_ms where the batch's tasks have none or the
 * other way round); that send may block while ZeroMQ's queue to the
 * master is full. A delayed task (not_before_ms > 0) is stored, and its
 * SUBMITTED event comes, at once; the master dispatches it only from
 * not_before_ms on (by the master's clock).
 * Returns 0, or -1 with TASKQ_ERR_USAGE (bad fn, queue or key,
 * not_before_ms < 0 or > TASKQ_MAX_NOT_BEFORE_MS),
 * TASKQ_ERR_REFUSED (payload larger than the master's max_payload) or
 * TASKQ_ERR_CONNECT (send failed). */
TASKQ_API int taskq_submit(taskq_t *self, const taskq_task_opts_t *opts, const void *payload,
                           size_t len, int flags, uint64_t *seq_out, taskq_error_t *err);

/* Send the partly filled batch now. taskq_next_event does this itself
 * when no earlier batch is waiting for its ids (and otherwise as soon as
 * their ids arrive). Returns 0 or -1 (TASKQ_ERR_CONNECT). */
TASKQ_API int taskq_flush(taskq_t *self, taskq_error_t *err);

/* Ask for the results of n task ids (n may exceed TASKQ_BATCH_MAX: the
 * ids go in several WAIT messages). Does not block for the results: each
 * comes back once as a TASKQ_EVENT_RESULT (done, failed, cancelled,
 * unknown or dead). Returns 0 or -1 (TASKQ_ERR_USAGE for id 0,
 * TASKQ_ERR_CONNECT). */
TASKQ_API int taskq_wait(taskq_t *self, const uint64_t *ids, size_t n, taskq_error_t *err);

/* ---- events ------------------------------------------------------------ */

typedef enum {
    TASKQ_EVENT_SUBMITTED = 1, /* seq -> id: the master stored the task */
    TASKQ_EVENT_RESULT = 2,    /* id, status, attempts, data */
    TASKQ_EVENT_ERROR = 3,     /* the master refused a batch: seq .. seq+count-1
                                  (count 0: not tied to tasks); code, message */
} taskq_event_type_t;

/* Task status in a TASKQ_EVENT_RESULT. */
typedef enum {
    TASKQ_DONE = 1,      /* data = the result */
    TASKQ_FAILED = 2,    /* data = the error text */
    TASKQ_CANCELLED = 3, /* data empty */
    TASKQ_UNKNOWN = 4,   /* no such task (never existed, or expired) */
    TASKQ_DEAD = 5,      /* gave up after the retries; data = last error */
} taskq_status_t;

typedef struct {
    int type;          /* taskq_event_type_t */
    uint64_t seq;      /* SUBMITTED, ERROR: local sequence number (first) */
    size_t count;      /* ERROR: how many tasks from seq were refused */
    uint64_t id;       /* SUBMITTED, RESULT: the task id */
    int status;        /* RESULT: taskq_status_t */
    uint32_t attempts; /* RESULT: dispatches the task took */
    const void *data;  /* RESULT: result or error bytes (not NUL-terminated) */
    size_t len;
    int code;            /* ERROR: TASKQ_ERR_* category */
    const char *message; /* ERROR: NUL-terminated text */
} taskq_event_t;

/* Wait up to timeout_ms (-1: forever, 0: just look) for the next event.
 * Sends the pending batch first unless an earlier batch still waits for
 * its ids (it goes out when they arrive), keeps the heartbeat going while it
 * waits, and transparently registers again and re-sends unacknowledged
 * work when the master says it does not know this client (a master
 * restart). Events come in arrival order, except that a task's
 * SUBMITTED event always comes before its RESULT.
 *
 * Returns 1 with *ev filled; its data and message stay valid until the
 * next call of taskq_next_event, taskq_cancel, taskq_status, taskq_admin or
 * taskq_close on this handle. Returns 0 when the timeout passed (also
 * while reconnecting). Returns -1 with TASKQ_ERR_CONNECT "lost connection
 * to master at ENDPOINT" when the master stayed unreachable for the
 * reconnect budget (or its heartbeat timeout, with reconnecting off);
 * the handle is then only good for taskq_close. */
TASKQ_API int taskq_next_event(taskq_t *self, int timeout_ms, taskq_event_t *ev,
                               taskq_error_t *err);

/* ---- cancel and status ------------------------------------------------- */

/* Outcome of one id in taskq_cancel. */
typedef enum {
    TASKQ_CANCEL_OK = 0,       /* it was queued or running: now cancelled */
    TASKQ_CANCEL_FINISHED = 1, /* already done or failed */
    TASKQ_CANCEL_UNKNOWN = 2,  /* no such task */
} taskq_cancel_outcome_t;

/* Cancel n tasks. outcomes[i] (caller's array of n ints) receives the
 * taskq_cancel_outcome_t of ids[i]. Blocks until every answer arrived,
 * at most timeout_ms (-1: forever). Events that arrive meanwhile are
 * kept for taskq_next_event. Returns 0, or -1 with TASKQ_ERR_USAGE (id
 * 0), TASKQ_ERR_TIMEOUT, TASKQ_ERR_REFUSED or TASKQ_ERR_CONNECT. */
TASKQ_API int taskq_cancel(taskq_t *self, const uint64_t *ids, size_t n, int *outcomes,
                           int timeout_ms, taskq_error_t *err);

/* The master's status document (JSON text, see docs/cli.md). Blocks at
 * most timeout_ms (-1: forever). On success *json_out is a NUL-terminated
 * heap string that the caller owns and frees with free(). Returns 0 or
 * -1 (TASKQ_ERR_TIMEOUT, TASKQ_ERR_REFUSED, TASKQ_ERR_CONNECT). */
TASKQ_API int taskq_status(taskq_t *self, int timeout_ms, char **json_out, taskq_error_t *err);

/* ---- plain put/get queues (PROTOCOL.md PUT, GET) ------------------------ */

/* One item of a plain queue: opaque bytes. */
typedef struct {
    const void *data;
    size_t len;
} taskq_item_t;

/* Append n items (1..1024) to the plain queue named queue (a valid name;
 * plain queues are apart from task queues). Blocks until the master has
 * journaled them, at most timeout_ms (-1: forever). After a reconnect
 * the PUT is sent again: an item may then be stored twice
 * (at-least-once). Returns 0, or -1 (TASKQ_ERR_USAGE, TASKQ_ERR_TIMEOUT,
 * TASKQ_ERR_REFUSED, TASKQ_ERR_CONNECT). */
TASKQ_API int taskq_put(taskq_t *self, const char *queue, const taskq_item_t *items, size_t n,
                        int timeout_ms, taskq_error_t *err);

/* Called by taskq_get for each item taken (data valid during the call). */
typedef void (*taskq_item_fn)(void *arg, uint64_t id, const void *data, size_t len);

/* Take up to max (1..1024) items from the head of the plain queue,
 * waiting up to wait_ms (0: not at all; at most a day) for one to come.
 * fn is called for each item, in queue order; then the items are
 * acknowledged (gone from the master for good). Returns how many items
 * were taken (0: the queue stayed empty), or -1 (TASKQ_ERR_USAGE,
 * TASKQ_ERR_TIMEOUT, TASKQ_ERR_REFUSED, TASKQ_ERR_CONNECT). */
TASKQ_API int taskq_get(taskq_t *self, const char *queue, int wait_ms, size_t max, taskq_item_fn fn,
                        void *arg, taskq_error_t *err);

/* ---- operator requests (dead set, pause) -------------------------------- */

/* Send one ADMIN request and block for its answer. request_json is one
 * JSON object of at most 64 KiB, e.g. {"op":"dead","after":0} or
 * {"op":"pause","queue":"mail"}; the ops and their fields are in
 * proto/PROTOCOL.md ("ADMIN"). The library sets its "req" (a "req" in
 * request_json is replaced). Blocks at most timeout_ms (-1: forever),
 * keeps the heartbeat going, and across a reconnect sends the request
 * again (so a retry or purge the master applied just before the
 * connection was lost answers "not dead" or "unknown" the second time).
 * Events that arrive meanwhile are kept for taskq_next_event.
 *
 * On success *reply_json is the master's reply object (NUL-terminated
 * JSON text, {"req":N,"ok":true,...}) on the heap: the caller owns it and
 * frees it with free(). Returns 0, or -1 with *reply_json NULL and
 * TASKQ_ERR_USAGE (request_json is not a JSON object, or too large),
 * TASKQ_ERR_REFUSED (the master's ERROR, with its message: unknown op,
 * bad field, bad queue name, ...), TASKQ_ERR_TIMEOUT, TASKQ_ERR_CONNECT,
 * or TASKQ_ERR_INTERNAL (a reply that is not a JSON object). */
TASKQ_API int taskq_admin(taskq_t *self, const char *request_json, int timeout_ms,
                          char **reply_json, taskq_error_t *err);

/* ---- inspection (show, list) ---------------------------------------------
 *
 * Both are ADMIN requests (proto/PROTOCOL.md "show" and "list") sent
 * through taskq_admin, with its blocking, reconnect and error rules; the
 * reply is the master's JSON text (the caller frees it with free()).
 *
 * taskq_show: the tasks ids[0..n) (n 1..100), each as an object of
 * "tasks" in request order: "state" (queued, delayed, running, done,
 * failed, dead, cancelled, or unknown), "queue", "fn", "priority",
 * "attempts", "retries", "retried", "worker" ({"id","name","connected"}
 * of the current or last attempt, or null), "submitted_ms",
 * "not_before_ms", "started_ms", "finished_ms", "expires_ms" (wall clock
 * ms, or null), "result" or "error" (UTF-8; "..._base64" otherwise; cut
 * at 16 KiB with "..._truncated"), "payload_bytes", "key" (the
 * idempotency key, or null), and with with_payload "payload". */
TASKQ_API int taskq_show(taskq_t *self, const uint64_t *ids, size_t n, int with_payload,
                         int timeout_ms, char **reply_json, taskq_error_t *err);

/* What taskq_list lists: NULL or 0 fields do not filter. state is one
 * of "queued", "delayed", "running", "done", "failed", "dead",
 * "cancelled". limit: rows at most (1..1000; 0: 100). after: list ids
 * above this (0: from the first). */
typedef struct {
    const char *queue;
    const char *fn;
    const char *state;
    size_t limit;
    uint64_t after;
} taskq_list_opts_t;

/* taskq_list: one page of tasks in id order (FIFO order within a
 * priority, so queued tasks come in queue order when they share one):
 * {"tasks":[...], "more":bool, "next_after":ID}. The master looks at a
 * bounded number of tasks per request, so a page may hold fewer rows
 * than limit (even none) with "more": ask again with after =
 * "next_after" until "more" is false. opts may be NULL. */
TASKQ_API int taskq_list(taskq_t *self, const taskq_list_opts_t *opts, int timeout_ms,
                         char **reply_json, taskq_error_t *err);

/* Static text for a status ("done", "failed", "cancelled", "unknown",
 * "dead") or "?". */
TASKQ_API const char *taskq_status_name(int status);

/* ==== writing workers ====================================================
 *
 * The same engine as taskq-worker (which is built on this API): a
 * worker connects to one master, says which functions it serves and how
 * many tasks it runs at once (slots), runs what it is dispatched on its
 * slot threads and sends the results back. Heartbeats, credit,
 * reconnection after a master restart, KILL, run timeouts and the drain
 * on stop behave as docs/workers.md describes for taskq-worker.
 *
 *     static int cube(const void *p, size_t len, taskq_result_t *out, void *arg)
 *     {
 *         long n = strtol(...);            // parse p[len] (not NUL-terminated)
 *         return taskq_result_printf(out, "%ld", n * n * n);
 *     }
 *     ...
 *     taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
 *     o.endpoint = "tcp://127.0.0.1:7070";
 *     o.authkey_file = "/etc/taskq/authkey";
 *     o.slots = 4;
 *     taskq_worker_t *w = taskq_worker_new(&o, &err);
 *     taskq_worker_add(w, "cube", cube, NULL, &err);
 *     // SIGTERM handler: taskq_worker_stop(w);
 *     int rc = taskq_worker_run(w, &err);   // until stopped and drained
 *     taskq_worker_destroy(&w);
 *
 * Threads: taskq_worker_run makes the calling thread the connection
 * thread and starts `slots` slot threads (with every signal blocked);
 * a function runs on a slot thread, so several run at once, each on its
 * own slot. In the default mode (thread) a crash in a function takes
 * the whole worker down (its tasks are then re-run elsewhere by the
 * master); the prefork and spawn modes run it in child processes
 * instead (TASKQ_MODE_* below): for them taskq_worker_run first forks
 * a fork server, a copy of the calling process as it is then (before
 * the worker reads its key; best before your program starts threads or
 * holds secrets of its own), which the children are forked from and
 * which ends with the run. (Several workers in one process: a worker
 * started while another runs forks its server from a process that holds
 * the other's key; run workers with prefork or spawn functions one per
 * process, or start that one before the others.) Configure (new, add,
 * load_plugin) from one thread before taskq_worker_run; taskq_worker_stop
 * may be called from anywhere, signal handlers included.
 *
 * Bump TASKQ_WORKER_ABI whenever anything a plugin relies on changes
 * incompatibly: a structure below, a function's signature or promise. */
#define TASKQ_WORKER_ABI 1

typedef struct taskq_worker taskq_worker_t;

/* The outcome being built for one task, and what the function may ask
 * about the task. Owned by the library; valid only during the call. */
typedef struct taskq_result taskq_result_t;

/* A task function. payload[len] is the task's payload (any bytes, not
 * NUL-terminated, len may be 0), valid during the call. arg is the arg
 * given at registration. Set the outcome through out:
 *  - taskq_result_set/append/printf build the result (the task is done);
 *  - taskq_result_error makes the task fail with a text (it wins over
 *    any result set before or after).
 * Return 0 for "the outcome is in out" (nothing set: done, empty
 * result); any other value fails the task ("NAME: failed (returned N)"
 * unless taskq_result_error gave a text). A function that runs past the
 * task's run timeout is reported as "timed out after S s" whatever it
 * set; long functions should watch taskq_result_cancelled() or poll
 * taskq_result_cancel_fd() and return early. */
typedef int (*taskq_fn)(const void *payload, size_t len, taskq_result_t *out, void *arg);

/* Per-slot state (the tutorial's ThreadLocal). slot_init runs on the
 * slot thread before that slot's first task of the function, and stores
 * what the function's calls on that slot get from taskq_result_slot_ctx;
 * it returns 0, or non-zero to fail that task ("NAME: slot
 * initialisation failed") and be tried again on the next one.
 * slot_fini runs on the same thread when the worker stops, for each slot
 * where slot_init succeeded. slot is 0..slots-1. */
typedef int (*taskq_slot_init_fn)(void *arg, int slot, void **slot_ctx);
typedef void (*taskq_slot_fini_fn)(void *arg, int slot, void *slot_ctx);

/* Execution modes: how a function is run (docs/workers.md, "Execution
 * modes"). Every child process runs in its own process group with
 * default signal dispositions, an empty signal mask, no fds of the
 * worker but 0, 1 (the worker's stdout, or the coprocess framing) and 2,
 * and the limits of taskq_worker_set_limits. */
#define TASKQ_MODE_THREAD                                                                          \
    0 /* C functions, built-ins: on the worker's slot
                                  threads; a crash takes the worker down */
#define TASKQ_MODE_PREFORK                                                                         \
    1 /* C functions, built-ins: one long-lived child
                                  process per slot (slot_init runs there),
                                  forked from a copy of the worker made
                                  when taskq_worker_run began, before the
                                  key was read (docs/workers.md);
                                  a crash or abort() fails that task only
                                  ("worker child died: signal 11
                                  (Segmentation fault)") and the child is
                                  started again; a run timeout or KILL kills it */
#define TASKQ_MODE_SPAWN                                                                           \
    2 /* a fresh process per task: a fork (as for
                                  prefork) for C functions and built-ins, an exec for
                                  commands (their default) */
#define TASKQ_MODE_COPROCESS                                                                       \
    3 /* commands: one long-lived program per slot
                                  speaking the length-prefixed framing of
                                  docs/workers.md on stdin/stdout; a death
                                  fails that task ("coprocess died: ...") and
                                  the program is started again */
#define TASKQ_MODE_INLINE                                                                          \
    4 /* C functions, built-ins: on the worker's
                                  connection thread, as soon as a DISPATCH
                                  arrives, one after another; no thread
                                  hand-off, so the fastest mode for
                                  functions of a few microseconds. The
                                  function must be quick and must not block
                                  (heartbeats and other tasks wait for it);
                                  a crash takes the worker down; no
                                  slot_init/slot_fini (taskq_result_slot is
                                  -1); a KILL cannot stop it. The default of
                                  the built-ins square, echo and fail */

/* A function to register. Strings are copied. */
typedef struct {
    const char *name;             /* [A-Za-z0-9_.:-]{1,64}; required */
    taskq_fn fn;                  /* required */
    void *arg;                    /* passed to fn, slot_init, slot_fini */
    taskq_slot_init_fn slot_init; /* optional */
    taskq_slot_fini_fn slot_fini; /* optional */
    int mode;                     /* thread, prefork, spawn or inline; 0 = thread */
} taskq_fn_def_t;

#define TASKQ_FN_DEF_INIT                                                                          \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, TASKQ_MODE_THREAD                                            \
    }

/* Log verbosity of the worker engine (lines on stderr, prefixed
 * "worker"). */
#define TASKQ_LOG_ERROR 0
#define TASKQ_LOG_WARN 1
#define TASKQ_LOG_INFO 2
#define TASKQ_LOG_DEBUG 3

typedef struct {
    const char *endpoint;     /* "tcp://HOST:PORT" or "ipc://PATH"; NULL:
                                 "tcp://127.0.0.1:7070" */
    const char *authkey_file; /* required; read by taskq_worker_run */
    const char *name;         /* shown in status: 1..128 printable ASCII,
                                 no spaces; NULL: "HOST:PID" */
    size_t slots;             /* tasks at once, 1..4096; 0: number of cores */
    int64_t drain_timeout_ms; /* on stop, how long running tasks may finish;
                                 0..86400000; < 0: 30000 */
    int log_level;            /* TASKQ_LOG_*; < 0: TASKQ_LOG_INFO */
} taskq_worker_opts_t;

#define TASKQ_WORKER_OPTS_INIT                                                                     \
    {                                                                                              \
        NULL, NULL, NULL, 0, -1, -1                                                                \
    }

/* Create a worker (it does not connect yet). Checks the options and
 * fails with TASKQ_ERR_USAGE naming the bad one. Caller owns the result
 * (taskq_worker_destroy). */
TASKQ_API taskq_worker_t *taskq_worker_new(const taskq_worker_opts_t *opts, taskq_error_t *err);

/* Stop the slot threads (after slot_fini), unload plugins, free
 * everything. Not while taskq_worker_run runs. Accepts NULL; nulls
 * *self_p. */
TASKQ_API void taskq_worker_destroy(taskq_worker_t **self_p);

/* Register a function (the simple form of taskq_worker_add_def). */
TASKQ_API int taskq_worker_add(taskq_worker_t *self, const char *name, taskq_fn fn, void *arg,
                               taskq_error_t *err);

/* Register a function. Returns 0, or -1 with TASKQ_ERR_USAGE: bad or
 * duplicate name, fn NULL, an unknown mode, more than 256 functions, or
 * the worker already running. Functions are announced to the master in
 * registration order. */
TASKQ_API int taskq_worker_add_def(taskq_worker_t *self, const taskq_fn_def_t *def,
                                   taskq_error_t *err);

/* Register NAME as an external command run once per task (what
 * `taskq-worker --fn NAME=COMMAND` does; docs/workers.md): COMMAND is
 * split into words like a shell would, with no shell; payload on stdin,
 * stdout is the result. -1 with TASKQ_ERR_USAGE as taskq_worker_add_def,
 * or for a COMMAND that does not split ("unterminated single quote"). */
TASKQ_API int taskq_worker_add_command(taskq_worker_t *self, const char *name, const char *command,
                                       taskq_error_t *err);

/* Set the mode of a registered function (a C function or built-in:
 * thread, prefork, spawn or inline; a command: spawn, its default, or
 * coprocess). Returns 0, or -1 with TASKQ_ERR_USAGE (not registered, a
 * mode that does not fit the kind of function, or the worker already
 * running). */
TASKQ_API int taskq_worker_set_mode(taskq_worker_t *self, const char *name, int mode,
                                    taskq_error_t *err);

/* Fix the tasks the worker takes beyond its slots (0..4096), so that
 * short tasks do not each wait a round trip to the master: they wait in
 * the worker instead, and a slot that finishes starts the next one at
 * once. The master only sends tasks without a run timeout beyond the
 * slots (a timeout counts from dispatch). Without this call the worker
 * sizes its prefetch itself from measured run times and round trips
 * (docs/workers.md, "Slots and credit"): up to 31 per slot for short
 * tasks, none for tasks of a round trip or longer; 0 turns it off.
 * Returns 0, or -1 with TASKQ_ERR_USAGE (out of range, or the worker
 * already running). */
TASKQ_API int taskq_worker_set_prefetch(taskq_worker_t *self, size_t prefetch, taskq_error_t *err);

/* Key-pair mode (docs/security.md): connect with the key pair in
 * key_file (NAME.key from `taskq keygen NAME`) and the master's public
 * key in master_key_file (its .pub), instead of (or, for a part given
 * NULL, besides) the authkey; opts.authkey_file may then be NULL. The
 * files are read by taskq_worker_run. Returns 0, or -1 with
 * TASKQ_ERR_USAGE (both NULL, or the worker already running). */
TASKQ_API int taskq_worker_set_keys(taskq_worker_t *self, const char *key_file,
                                    const char *master_key_file, taskq_error_t *err);

/* Run the worker's sockets in this ZeroMQ context (void * from
 * zmq_ctx_new) instead of one of its own: many workers in one process
 * then share the context's I/O threads. The context must outlive
 * taskq_worker_run, and the caller terminates it. NULL: the worker's own
 * context (the default). Returns 0, or -1 with TASKQ_ERR_USAGE when the
 * worker already runs. */
TASKQ_API int taskq_worker_set_context(taskq_worker_t *self, void *zmq_context, taskq_error_t *err);

/* "thread", "prefork", "spawn", "coprocess", "inline" for a TASKQ_MODE_*, or NULL;
 * and the other way round (-1 for an unknown name). */
TASKQ_API const char *taskq_mode_name(int mode);
TASKQ_API int taskq_mode_parse(const char *text);

/* Resource limits set with setrlimit in every child process that runs a
 * task (commands, prefork, spawn, coprocess; never in thread mode):
 * memory_bytes as RLIMIT_AS (0: none; else at least 1 MiB), cpu_seconds
 * as RLIMIT_CPU (0: none; at most 86400; the child gets SIGXCPU, then
 * SIGKILL a second later). A forked child (prefork, spawn of a C
 * function) starts with the worker's address space, which counts
 * against RLIMIT_AS. Returns 0, or -1 with TASKQ_ERR_USAGE. */
TASKQ_API int taskq_worker_set_limits(taskq_worker_t *self, uint64_t memory_bytes,
                                      uint64_t cpu_seconds, taskq_error_t *err);

/* Least privilege (docs/security.md). taskq_worker_set_user: the worker
 * is started as root and becomes user (a name or a uid) for good in
 * taskq_worker_run, once the key is read, before it connects: real,
 * effective and saved ids, supplementary groups; no_new_privs is set at
 * once (per thread: call it before starting threads of your own). Refused
 * (TASKQ_ERR_USAGE) for an unknown user, root, or when not root.
 *
 * taskq_worker_set_task_process: how every task child process (commands,
 * coprocess, prefork, spawn; never thread or inline mode, which run in
 * the worker) starts: in directory dir (NULL: the worker's), as user
 * (NULL: the worker's own; else the worker must be root and must not
 * drop with taskq_worker_set_user; HOME, USER and LOGNAME become the
 * user's), with only the environment variables named in the comma list
 * env ("PATH,LANG,LC_*": a trailing '*' keeps a prefix; NULL: all of the
 * worker's but TASKQ_*). The setting is the process's: with several
 * workers in one process, the last one started with it sets it for all.
 * Returns 0, or -1 with TASKQ_ERR_USAGE (no such directory or user, not
 * root, a bad name in env). */
TASKQ_API int taskq_worker_set_user(taskq_worker_t *self, const char *user, taskq_error_t *err);
TASKQ_API int taskq_worker_set_task_process(taskq_worker_t *self, const char *dir, const char *user,
                                            const char *env, taskq_error_t *err);

/* The built-in functions: taskq_worker_builtin(i) for i = 0, 1, ... is
 * "square", "echo", "sleep", "fail", then NULL. */
TASKQ_API const char *taskq_worker_builtin(size_t i);

/* Register built-in `name` (see docs/workers.md). -1 with
 * TASKQ_ERR_USAGE for a name that is not a built-in, or as
 * taskq_worker_add_def. */
TASKQ_API int taskq_worker_add_builtin(taskq_worker_t *self, const char *name, taskq_error_t *err);

/* ---- plugins --------------------------------------------------------------
 * A plugin is a shared object that exports
 *
 *     const int taskq_plugin_abi = TASKQ_WORKER_ABI;
 *     int taskq_plugin_init(taskq_worker_t *w, int abi, taskq_error_t *err);
 *
 * taskq_plugin_init registers the plugin's functions with taskq_worker_add
 * or taskq_worker_add_def (abi is the worker's TASKQ_WORKER_ABI) and
 * returns 0, or -1 with err filled. TASKQ_PLUGIN_DECLARE() declares both
 * with default visibility. */
#define TASKQ_PLUGIN_INIT_SYMBOL "taskq_plugin_init"
#define TASKQ_PLUGIN_ABI_SYMBOL "taskq_plugin_abi"
typedef int (*taskq_plugin_init_fn)(taskq_worker_t *w, int abi, taskq_error_t *err);

#define TASKQ_PLUGIN_DECLARE()                                                                     \
    TASKQ_API extern const int taskq_plugin_abi;                                                   \
    TASKQ_API const int taskq_plugin_abi = TASKQ_WORKER_ABI;                                       \
    TASKQ_API int taskq_plugin_init(taskq_worker_t *w, int abi, taskq_error_t *err)

/* Load the plugin at path (dlopen, RTLD_NOW | RTLD_LOCAL; a path without
 * a '/' is searched as dlopen searches) and call its taskq_plugin_init.
 * The object stays loaded until taskq_worker_destroy. Returns 0, or -1
 * with TASKQ_ERR_ENV and a message naming the file: it cannot be loaded
 * (dlerror's text), it lacks taskq_plugin_abi or taskq_plugin_init ("not
 * a taskq plugin"), its ABI is not this library's ("built for worker ABI
 * 2, this worker has ABI 1"), or taskq_plugin_init failed (its message).
 * TASKQ_ERR_USAGE once the worker runs. */
TASKQ_API int taskq_worker_load_plugin(taskq_worker_t *self, const char *path, taskq_error_t *err);

/* ---- running ----------------------------------------------------------- */

/* Read the key, start the slots, connect and serve until stopped and
 * drained (at least one function must be registered). While the master
 * is unreachable, silent or restarting it keeps trying, for ever.
 * The process becomes the subreaper of its descendants
 * (PR_SET_CHILD_SUBREAPER): a task's process that leaves the task's
 * process group and outlives its parent comes back to it and is killed
 * and reaped when the task ends (docs/workers.md); children of the
 * program in its own process group, or started before this call, are
 * left alone. Only the client key pair and the master's public key are
 * kept, in memory left out of core dumps (the program may also call
 * prctl(PR_SET_DUMPABLE, 0), as taskq-worker does).
 * Returns 0 after the drain (BYE sent); -1 with TASKQ_ERR_USAGE (no
 * functions, run twice), TASKQ_ERR_ENV (key file missing, unreadable,
 * readable by others, owned by another user, or trivial), TASKQ_ERR_CONNECT ("authentication failed
 * connecting to ENDPOINT (wrong authkey?)": the master rejected the
 * key before any handshake succeeded) or TASKQ_ERR_INTERNAL (ZeroMQ or
 * threads could not be set up). */
TASKQ_API int taskq_worker_run(taskq_worker_t *self, taskq_error_t *err);

/* Ask the worker to stop; async-signal-safe (one write(2) to a pipe),
 * callable from any thread and before taskq_worker_run (which then
 * drains at once). The first call drains: the master is told (DRAIN),
 * running tasks get up to drain_timeout_ms to finish and send their
 * results, what still runs is cancelled and handed back (RELEASE), BYE,
 * and taskq_worker_run returns 0. A second call skips the wait. */
TASKQ_API void taskq_worker_stop(taskq_worker_t *self);

/* Change the engine's log verbosity (TASKQ_LOG_*) while it runs, e.g.
 * on SIGHUP; thread-safe, not async-signal-safe. Logs the change at info
 * ("log level info -> debug"). Returns 1 when the level changed, 0 when
 * it already was that level, -1 for a level that is not TASKQ_LOG_*. */
TASKQ_API int taskq_worker_set_log_level(taskq_worker_t *self, int level);

/* Run tasks on slots slots from now on (0: the number of CPUs; at most
 * 4096), e.g. on SIGHUP; thread-safe, not async-signal-safe. Before
 * taskq_worker_run it sets the slots it starts with. While it runs,
 * running tasks go on: more slots start at once, fewer take effect as
 * running tasks finish, and the master is told (it keeps the worker's
 * tasks). Returns 1 when a change was asked, 0 when it already was that
 * count, -1 for a count over 4096. */
TASKQ_API int taskq_worker_set_concurrency(taskq_worker_t *self, size_t slots);

/* Write one line to the engine's log (stderr, prefixed "worker") at
 * level TASKQ_LOG_*, if the log level lets it through: for a program on
 * the worker API that has no logger of its own. Thread-safe, not
 * async-signal-safe. */
TASKQ_API void taskq_worker_log(taskq_worker_t *self, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- inside a task function (out is the function's argument) ---------- */

/* Replace the result with a copy of data[len]. Returns 0, or -1 when len
 * exceeds the master's max payload (the task then fails with "result
 * exceeds max payload (N bytes)"). */
TASKQ_API int taskq_result_set(taskq_result_t *out, const void *data, size_t len);
/* Append data[len] to the result; 0 or -1 as taskq_result_set. */
TASKQ_API int taskq_result_append(taskq_result_t *out, const void *data, size_t len);
/* Replace the result with printf-formatted text (at most 64 KiB). */
TASKQ_API int taskq_result_printf(taskq_result_t *out, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Fail the task with a printf-formatted error text (at most 8 KiB).
 * Returns -1, so `return taskq_result_error(out, ...)` fails the task. */
TASKQ_API int taskq_result_error(taskq_result_t *out, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* 1 once the task must stop (KILL from the master, drain ran out, run
 * timeout passed), else 0. */
TASKQ_API int taskq_result_cancelled(const taskq_result_t *out);
/* A file descriptor that becomes readable when the task must stop (not
 * at its run timeout: use taskq_result_deadline_ms). Do not read or
 * close it. */
TASKQ_API int taskq_result_cancel_fd(const taskq_result_t *out);
/* Milliseconds left before the run timeout (0 once passed), or -1 when
 * the task has none. */
TASKQ_API int64_t taskq_result_remaining_ms(const taskq_result_t *out);
/* The task's id and attempt number (as `taskq status` shows them). */
TASKQ_API uint64_t taskq_result_task_id(const taskq_result_t *out);
TASKQ_API uint32_t taskq_result_attempt(const taskq_result_t *out);
/* The slot running the task (0..slots-1; -1 in inline mode) and the
 * slot_ctx that the function's slot_init stored for it (NULL without
 * slot_init). */
TASKQ_API int taskq_result_slot(const taskq_result_t *out);
TASKQ_API void *taskq_result_slot_ctx(const taskq_result_t *out);

#ifdef __cplusplus
}
#endif

#endif
