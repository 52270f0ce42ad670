/* conn.c - the connection thread: the link to the master (link/tq_link.h:
 * socket, handshake, heartbeats, reconnects), credit, batching of
 * results, KILL, drain. */
#include "conn.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "reaper.h"
#include "taskq.h"
#include "tq_curve.h"
#include "tq_link.h"
#include "tq_idmap.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_tsan.h"
#include "tq_util.h"

/* "cannot reach master" warning period. */
#define CONN_WARN_MS 5000
/* Longest poll sleep, so timers stay responsive. */
#define CONN_POLL_MAX_MS 100
/* Messages read from one socket per loop iteration (fairness). */
#define CONN_RECV_BURST 64
/* After a drain kill, how long to wait for slots to give tasks back. */
#define CONN_KILL_WAIT_MS 5000
/* Linger on the final close so RESULT/RELEASE/BYE flush. */
#define CONN_FINAL_LINGER_MS 1000
/* Task pointers handed back by slot threads: inproc://taskq-worker-
 * results-ADDRESS, unique per worker (workers may share a context). */
#define CONN_RESULT_PREFIX "inproc://taskq-worker-results"

/* Adaptive prefetch (docs/workers.md, "Slots and credit"). The most it
 * holds beyond its slots: this many per slot (64 tasks in flight for 2
 * slots, where the bench's W1 stops gaining), at most TQ_MAX_PREFETCH. */
#define ADAPT_PER_SLOT 31
/* ... and at most this many payload bytes waiting (mean payload size x
 * prefetch), so big payloads are not hoarded in memory. */
#define ADAPT_BYTES ((double)(16u << 20))
/* Weight of a new run-time sample in the mean of log2(run time): 1/4,
 * so 3 long runs after short ones turn the prefetch off. */
#define ADAPT_WEIGHT 0.25
/* Weight of a new round-trip sample in its mean: 1/8. */
#define ADAPT_RTT_WEIGHT 0.125
/* The most a round-trip sample counts: 10 ms (a master idle before a
 * burst is not a slow round trip; this bounds what is held for tasks of
 * a few ms). */
#define ADAPT_RTT_MAX_US 10000.0
/* All slots busy and tasks waiting with no run finishing for this long
 * (or 2 round trips if longer): the waiting tasks go back to the master
 * (RELEASE), where a free slot of another worker takes them. */
#define ADAPT_STALL_MIN_US 1000
/* Hand-backs in a row wait twice as long each time, up to this: a task
 * the master sends back to us (no free slot anywhere) is not bounced
 * more than 50 times a second. */
#define ADAPT_STALL_MAX_US 20000
/* "prefetch now N" info lines: at most one a second. */
#define ADAPT_LOG_MS 1000

typedef struct {
    uint64_t id;
    uint32_t attempt;
} lease_t;

typedef struct {
    const tq_conn_opts_t *o;
    void *zctx;
    tq_link_t *link; /* the connection to the master */
    void *pull;
    tq_pool_t *pool;
    tq_dispatch_item_t *items; /* TQ_MAX_BATCH */
    tq_lease_ref_t *refs;      /* TQ_MAX_BATCH */

    int64_t last_warn; /* "cannot reach master" said then */

    size_t slots;                          /* the pool's slots now (o->slots, or as resized) */
    int resized;                           /* a resizing HELLO is out: its WELCOME is no news */
    tq_idmap_t *tasks;                     /* id -> running task of the current attempt */
    size_t inflight;                       /* tasks handed to the pool, not yet back */
    size_t debt;                           /* slots announced in HELLO that are still busy */
    size_t credit;                         /* slots freed, to announce in the next RESULT */
    tq_pool_task_t *done_head, *done_tail; /* finished, result not yet sent */
    lease_t *rel;                          /* leases to hand back with RELEASE */
    size_t nrel, relcap;

    /* HELLO "instance": this run's random id, the same on every
     * reconnect, so the master takes results of runs that finished while
     * the connection (or the master) was away from us and no one else. */
    char instance[TQ_INSTANCE_HEX + 1];

    /* Adaptive prefetch (o->adaptive). Credit the master may give us is
     * slots + pcap; we keep `withheld` of it back, so what we hold plus
     * what the master may still send is slots + target. */
    size_t pcap;         /* HELLO prefetch: the most beyond the slots */
    size_t target;       /* prefetch wanted now, 0..pcap */
    size_t withheld;     /* credit not given back to the master */
    size_t mcredit;      /* the master's credit for us, as we count it */
    int64_t rtt_stamp;   /* µs: credit sent when the master had none; 0: none */
    double rtt;          /* mean round trip in µs, 0 until measured */
    double lrun;         /* mean of log2(run time in µs) */
    int have_run;        /* lrun has a sample */
    double payload_avg;  /* mean payload bytes */
    int64_t progress_us; /* a slot took or finished a task then (at least) */
    int64_t inline_us;   /* an inline run (on this thread, no slot) ended then */
    int64_t stall_next;  /* µs: the next hand-back waits this long (0: the least) */
    int64_t log_ms;      /* last "prefetch now" line */
    size_t logged;       /* the target it said */

    int nsignals;
    int draining, drain_killed;
    int quiet; /* QUIET from the master: no new tasks (said again as DRAIN after a reconnect) */
    int64_t drain_deadline, kill_deadline;
    tq_err_t *err; /* why the run stops early (the caller's) */
} conn_t;

/* ---- sending ------------------------------------------------------------ */

static void push_done(conn_t *c, tq_pool_task_t *t);

static void send_simple(conn_t *c, int type)
{
    tq_out_begin(tq_link_out(c->link), type);
    if (tq_link_send(c->link, TQ_LINK_NOWAIT) <= 0)
        tq_debug("cannot send %s now", tq_msg_type_name(type));
}

/* The master's --max-payload, from its WELCOME. */
static size_t max_payload(const conn_t *c) { return tq_link_welcome(c->link)->max_payload; }

/* Build and send HELLO; returns the busy count it announced. */
static size_t hello_out(conn_t *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "role", "worker");
    cJSON_AddStringToObject(j, "name", c->o->name);
    cJSON_AddNumberToObject(j, "slots", (double)c->slots);
    cJSON_AddStringToObject(j, "instance", c->instance);
    size_t prefetch = c->o->adaptive ? c->pcap : c->o->prefetch;
    if (prefetch)
        cJSON_AddNumberToObject(j, "prefetch", (double)prefetch);
    if (c->o->adaptive)
        cJSON_AddBoolToObject(j, "adaptive", 1);
    /* Tasks still held (running or waiting) from an earlier connection:
     * the master gives us only the rest as credit, and each gives its
     * credit back when it finishes (PROTOCOL.md 12.1). */
    size_t cap = c->slots + prefetch;
    size_t busy = c->inflight < cap ? c->inflight : cap;
    cJSON_AddNumberToObject(j, "busy", (double)busy);
    cJSON *fns = cJSON_AddArrayToObject(j, "functions");
    for (size_t i = 0; i < c->o->nfns; i++)
        cJSON_AddItemToArray(fns, cJSON_CreateString(c->o->fns[i].name));
    if (tq_link_hello(c->link, j) < 0)
        tq_warn("cannot send HELLO now");
    cJSON_Delete(j);
    return busy;
}

/* The link asks for HELLO (a new socket, or a master that forgot us). */
static void send_hello(conn_t *c)
{
    size_t prefetch = c->o->adaptive ? c->pcap : c->o->prefetch;
    size_t cap = c->slots + prefetch;
    size_t busy = hello_out(c);
    c->resized = 0;
    /* The master counts slots + prefetch - busy as free; a busy task
     * gives its credit back when it finishes. Tasks beyond that (queued
     * in the pool) must not give credit when they finish. */
    c->debt = c->inflight - busy;
    c->credit = 0;
    /* Adaptive: the master starts us at the free slots (HELLO
     * "adaptive"); the prefetch is withheld until adapt() gives it. */
    c->mcredit = c->slots > busy ? c->slots - busy : 0;
    if (!c->o->adaptive)
        c->mcredit = cap - busy;
    c->withheld = c->o->adaptive ? cap - busy - c->mcredit : 0;
    c->rtt_stamp = 0;
}

/* ---- adaptive prefetch ----------------------------------------------------- */

/* The round trip now in µs, 0 when not measured yet. */
static int64_t rtt_us(const conn_t *c) { return (int64_t)c->rtt; }

/* Credit goes to the master (k > 0 in a RESULT): if it had none left,
 * the next DISPATCH measures the round trip. */
static void credit_sent(conn_t *c, size_t k)
{
    if (k == 0)
        return;
    if (c->mcredit == 0 && !c->rtt_stamp)
        c->rtt_stamp = tq_mono_us();
    c->mcredit += k;
}

static void dispatch_came(conn_t *c, size_t n)
{
    int64_t now = tq_mono_us();
    if (c->rtt_stamp) {
        int64_t rtt = now - c->rtt_stamp;
        /* Only when the master used all the credit: it had tasks
         * waiting, so the time is the round trip, not a wait for work. A
         * sample counts at most 4 times the mean and ADAPT_RTT_MAX_US (a
         * master that just got a burst after an idle spell). */
        if (n >= c->mcredit) {
            double x = rtt > ADAPT_RTT_MAX_US ? ADAPT_RTT_MAX_US : (double)rtt;
            if (c->rtt == 0)
                c->rtt = x;
            else
                c->rtt += ADAPT_RTT_WEIGHT * ((x > 4 * c->rtt ? 4 * c->rtt : x) - c->rtt);
        }
        c->rtt_stamp = 0;
    }
    c->mcredit = c->mcredit > n ? c->mcredit - n : 0;
}

/* A run took us microseconds (payload of len bytes). */
static void run_sample(conn_t *c, int64_t us, size_t len)
{
    double l = log2(us < 1 ? 1.0 : (double)us);
    if (!c->have_run) {
        c->lrun = l;
        c->payload_avg = (double)len;
        c->have_run = 1;
    } else {
        c->lrun += ADAPT_WEIGHT * (l - c->lrun);
        c->payload_avg += ADAPT_WEIGHT * ((double)len - c->payload_avg);
    }
}

/* The prefetch the measurements call for: slots x round trip / mean run
 * time (the mean of log2, so a rare long run does not turn it off for
 * the short ones), none when runs take a round trip or longer, at most
 * pcap and ADAPT_BYTES of payloads. */
static size_t adapt_target(const conn_t *c)
{
    int64_t rtt = rtt_us(c);
    if (!c->have_run || rtt == 0)
        return 0;
    /* Every slot busy and nothing finished for two round trips: the runs
     * in progress are long whatever the mean of past runs says (a worker
     * back after a cut, its slots still on slow runs): tasks fetched now
     * would only wait behind them while another worker's slot is free.
     * Inline runs need no slot: while they keep finishing, the prefetch
     * stays (microsecond tasks beside long ones on busy slots: without
     * this they went one round trip at a time, 0.46 of their rate alone
     * in the bench's mixed row); slot tasks fetched meanwhile are handed
     * back by check_stall, which looks at the slots only. */
    int64_t quiet = 2 * rtt < ADAPT_STALL_MIN_US ? ADAPT_STALL_MIN_US : 2 * rtt;
    int64_t last = c->progress_us > c->inline_us ? c->progress_us : c->inline_us;
    if (c->inflight >= c->slots && tq_mono_us() - last >= quiet)
        return 0;
    double run = exp2(c->lrun);
    if (run >= (double)rtt)
        return 0;
    double p = (double)c->slots * (double)rtt / run;
    if (c->payload_avg > 0 && p * c->payload_avg > ADAPT_BYTES)
        p = ADAPT_BYTES / c->payload_avg;
    return p >= (double)c->pcap ? c->pcap : (size_t)p;
}

/* Move the withheld credit towards the target: give back what the
 * target allows now (it rides on the next RESULT); a lower target takes
 * effect as tasks finish (slot_freed keeps their credit). */
static void adapt(conn_t *c)
{
    if (!c->o->adaptive)
        return;
    int64_t now = tq_mono_us();
    c->target = adapt_target(c);
    size_t keep = c->pcap - c->target;
    if (c->withheld > keep && !c->draining) {
        c->credit += c->withheld - keep;
        c->withheld = keep;
    }
    int64_t ms = now / 1000;
    if (c->target != c->logged && ms - c->log_ms >= ADAPT_LOG_MS) {
        tq_info("prefetch now %zu (run time about %.0f us, round trip %lld us)", c->target,
                c->have_run ? exp2(c->lrun) : 0.0, (long long)rtt_us(c));
        c->logged = c->target;
        c->log_ms = ms;
    }
}

/* Make t's outcome fit the master's --max-payload (max, from its
 * WELCOME; it may have changed since the task ran): a result over it
 * becomes a failure saying so, and a failure text over it is cut (at a
 * UTF-8 character boundary) to max bytes. The master would refuse the
 * whole RESULT message (ERROR too-large) otherwise, and the task would
 * stay leased with no outcome anyone sees. */
static void fit_result(tq_pool_task_t *t, size_t max)
{
    if (t->result.len <= max)
        return;
    if (t->result.status == TQ_RUN_OK)
        tq_run_result_fmt(&t->result, TQ_RUN_FAILED, "result exceeds max payload (%zu bytes)", max);
    if (t->result.len <= max)
        return;
    size_t n = max;
    while (n > 0 && (t->result.data[n] & 0xC0) == 0x80)
        n--; /* data[n] continues a character: cut before that character */
    t->result.len = n;
}

/* Send finished results, as few RESULT messages as fit. Tasks are freed
 * once their message is sent; on a send failure the rest wait. */
static void flush_results(conn_t *c)
{
    tq_pool_task_t *batch[TQ_MAX_BATCH];
    tq_out_t *out = tq_link_out(c->link);
    if (!tq_link_registered(c->link))
        return;
    /* A slot freed with no outcome to report (a KILLed attempt) gives
     * its credit back in a RESULT with no records. */
    if (!c->done_head && c->credit > 0 && !c->draining) {
        size_t credit = c->credit > TQ_MAX_SLOTS ? TQ_MAX_SLOTS : c->credit;
        tq_out_begin_result(out, (uint16_t)credit);
        if (tq_link_send(c->link, TQ_LINK_NOWAIT) == 1) {
            c->credit -= credit;
            credit_sent(c, credit);
        }
        return;
    }
    while (c->done_head) {
        size_t credit = c->draining ? 0 : c->credit;
        if (credit > TQ_MAX_SLOTS)
            credit = TQ_MAX_SLOTS;
        tq_out_begin_result(out, (uint16_t)credit);
        size_t n = 0;
        for (tq_pool_task_t *t = c->done_head; t && !tq_out_full(out); t = t->next) {
            fit_result(t, max_payload(c));
            tq_task_result_item(t, out);
            batch[n++] = t;
        }
        if (tq_link_send(c->link, TQ_LINK_NOWAIT) != 1) {
            tq_debug("cannot send RESULT now");
            return;
        }
        tq_debug("sent RESULT: %zu outcomes, credit %zu", n, credit);
        if (!c->draining) {
            c->credit -= credit;
            credit_sent(c, credit);
        }
        for (size_t i = 0; i < n; i++) {
            c->done_head = batch[i]->next;
            tq_pool_task_free(batch[i]);
        }
        if (!c->done_head)
            c->done_tail = NULL;
    }
}

static void flush_releases(conn_t *c)
{
    tq_out_t *out = tq_link_out(c->link);
    if (!tq_link_registered(c->link))
        return;
    size_t i = 0;
    while (i < c->nrel) {
        tq_out_begin(out, TQ_MSG_RELEASE);
        size_t start = i;
        for (; i < c->nrel && !tq_out_full(out); i++)
            tq_out_lease(out, c->rel[i].id, c->rel[i].attempt);
        if (tq_link_send(c->link, TQ_LINK_NOWAIT) != 1) {
            i = start;
            break;
        }
        tq_debug("sent RELEASE of %zu tasks", i - start);
    }
    if (i == 0)
        return;
    memmove(c->rel, c->rel + i, (c->nrel - i) * sizeof *c->rel);
    c->nrel -= i;
}

static void add_release(conn_t *c, uint64_t id, uint32_t attempt)
{
    /* Bounded by the tasks we hold plus one DISPATCH: older entries are
     * stale anyway once the master has requeued them. */
    size_t cap = 2 * c->slots + TQ_MAX_BATCH + c->pcap;
    if (c->nrel == cap) {
        tq_warn("dropping RELEASE of task %llu: backlog full", (unsigned long long)id);
        return;
    }
    if (c->nrel == c->relcap) {
        c->relcap = c->relcap ? c->relcap * 2 : 64;
        c->rel = tq_realloc(c->rel, c->relcap * sizeof *c->rel);
    }
    c->rel[c->nrel++] = (lease_t){id, attempt};
}

/* ---- tasks ---------------------------------------------------------------- */

static const tq_fn_t *find_fn(conn_t *c, tq_bytes_t name)
{
    for (size_t i = 0; i < c->o->nfns; i++)
        if (tq_bytes_eq_str(name, c->o->fns[i].name))
            return &c->o->fns[i];
    return NULL;
}

static void push_done(conn_t *c, tq_pool_task_t *t)
{
    t->next = NULL;
    if (c->done_tail)
        c->done_tail->next = t;
    else
        c->done_head = t;
    c->done_tail = t;
}

/* Error text shown in a failed task's log line at most (bytes; cut with
 * "..."): enough to tell what went wrong, not a whole stderr. */
#define CONN_LOG_ERROR_MAX 300

/* Log t's outcome: a failure or a timeout at info (id, attempt,
 * function, run time and the error text, escaped and cut); a success at
 * debug with its run time. The error text is the task's own output: a
 * function that puts its payload there puts it in the log. */
static void log_outcome(const tq_pool_task_t *t, const char *fn, int64_t run_us)
{
    double ms = (double)run_us / 1000.0;
    if (t->result.status == TQ_RUN_OK) {
        tq_debug("task %llu attempt %u (%s) done in %.1f ms, %zu bytes", (unsigned long long)t->id,
                 t->attempt, fn, ms, t->result.len);
        return;
    }
    if (tq_log_level() < TQ_LOG_INFO)
        return;
    char text[CONN_LOG_ERROR_MAX + 8];
    tq_log_escape(text, sizeof text, t->result.data, t->result.len);
    tq_info("task %llu attempt %u (%s) %s after %.1f ms: %s", (unsigned long long)t->id, t->attempt,
            fn, t->result.status == TQ_RUN_TIMEOUT ? "timed out" : "failed", ms, text);
}

/* A slot is free again. */
static void slot_freed(conn_t *c)
{
    if (c->debt)
        c->debt--;
    else if (c->o->adaptive && c->withheld < c->pcap - c->target)
        c->withheld++; /* above the target: keep it */
    else
        c->credit++;
}

/* Run an inline-mode task now, on this thread; its payload is read in
 * place from the DISPATCH. */
static void run_inline(conn_t *c, const tq_dispatch_item_t *d, const tq_fn_t *fn)
{
    tq_pool_task_t *t = calloc(1, sizeof *t);
    if (!t) {
        tq_warn("out of memory for task %llu; handing it back", (unsigned long long)d->id);
        add_release(c, d->id, d->attempt);
        return;
    }
    t->id = d->id;
    t->attempt = d->attempt;
    t->timeout_ms = d->timeout_ms;
    t->fn = fn;
    t->payload = (uint8_t *)d->payload.data; /* borrowed: not freed */
    t->len = d->payload.len;
    t->max_result = max_payload(c);
    atomic_init(&t->cancel, TQ_POOL_CANCEL_NONE);
    t->slot = -1;
    int64_t t0 = tq_mono_us();
    tq_pool_run_inline(c->pool, t);
    c->inline_us = tq_mono_us();
    int64_t run_us = c->inline_us - t0;
    run_sample(c, run_us, d->payload.len);
    log_outcome(t, fn->name, run_us);
    t->payload = NULL;
    t->len = 0;
    slot_freed(c);
    push_done(c, t);
}

/* d is item i of the DISPATCH just received. */
static void on_dispatch_item(conn_t *c, const tq_dispatch_item_t *d, size_t i)
{
    if (c->draining) {
        add_release(c, d->id, d->attempt);
        return;
    }
    tq_pool_task_t *old = tq_idmap_get(c->tasks, d->id);
    if (old) {
        if (old->attempt == d->attempt)
            return; /* a duplicate of what already runs */
        /* The master moved on to a newer attempt: the old one is moot. */
        tq_pool_cancel(c->pool, old, TQ_POOL_CANCEL_KILLED);
        tq_idmap_remove(c->tasks, d->id);
    }
    if (c->inflight >= 2 * (c->slots + (c->o->adaptive ? c->pcap : c->o->prefetch)) + c->debt) {
        tq_warn("master sent task %llu beyond our slots; handing it back",
                (unsigned long long)d->id);
        add_release(c, d->id, d->attempt);
        return;
    }
    const tq_fn_t *fn = find_fn(c, d->fn);
    if (fn && fn->mode == TASKQ_MODE_INLINE) {
        run_inline(c, d, fn);
        return;
    }
    tq_pool_task_t *t = calloc(1, sizeof *t);
    /* A large payload stays in the received message (a view of it, kept
     * until the task is freed); a small one is copied. */
    tq_msgref_t *ref = d->payload.len >= TQ_IN_KEEP_MIN
                           ? tq_in_keep(tq_link_in(c->link), i, d->payload.data)
                           : NULL;
    uint8_t *payload = ref ? (uint8_t *)d->payload.data
                           : malloc(d->payload.len ? d->payload.len : 1);
    if (!t || !payload) {
        free(t);
        if (ref)
            tq_msgref_drop(ref);
        else
            free(payload);
        tq_warn("out of memory for task %llu (%zu bytes); handing it back",
                (unsigned long long)d->id, d->payload.len);
        add_release(c, d->id, d->attempt);
        return;
    }
    if (d->payload.len && !ref)
        memcpy(payload, d->payload.data, d->payload.len);
    t->payload_ref = ref;
    t->id = d->id;
    t->attempt = d->attempt;
    t->timeout_ms = d->timeout_ms;
    t->payload = payload;
    t->len = d->payload.len;
    t->max_result = max_payload(c);
    t->accepted_ms = tq_mono_ms();
    atomic_init(&t->cancel, TQ_POOL_CANCEL_NONE);
    t->slot = -1;
    t->fn = fn;
    if (!t->fn) {
        /* Not ours to run; the slot it was given is free at once. */
        tq_run_result_fmt(&t->result, TQ_RUN_FAILED, "function '%.*s' is not served by worker %s",
                          (int)d->fn.len, (const char *)d->fn.data, c->o->name);
        char fname[TQ_MAX_NAME + 1];
        tq_log_escape(fname, sizeof fname, d->fn.data, d->fn.len);
        log_outcome(t, fname, 0);
        slot_freed(c);
        push_done(c, t);
        return;
    }
    tq_debug("task %llu attempt %u: %s, %zu bytes", (unsigned long long)t->id, t->attempt,
             t->fn->name, t->len);
    tq_idmap_put(c->tasks, t->id, t);
    if (c->inflight++ == c->slots)
        c->progress_us = tq_mono_us(); /* a task waits from now */
    else if (c->inflight <= c->slots)
        c->stall_next = 0; /* nothing waited: hand-backs start afresh */
    tq_pool_submit(c->pool, t);
}

/* A slot gave a task back. */
static void on_task_back(conn_t *c, tq_pool_task_t *t)
{
    TQ_ASSERT(c->inflight > 0);
    c->inflight--;
    if (tq_idmap_get(c->tasks, t->id) == t)
        tq_idmap_remove(c->tasks, t->id);
    c->progress_us = tq_mono_us();
    if (t->ran)
        run_sample(c, t->run_us, t->len);
    slot_freed(c);
    switch (atomic_load(&t->cancel)) {
    case TQ_POOL_CANCEL_KILLED:
        tq_debug("task %llu attempt %u killed", (unsigned long long)t->id, t->attempt);
        tq_pool_task_free(t);
        break;
    case TQ_POOL_CANCEL_RELEASED:
        tq_info("task %llu handed back", (unsigned long long)t->id);
        add_release(c, t->id, t->attempt);
        tq_pool_task_free(t);
        break;
    default: log_outcome(t, t->fn->name, t->run_us); push_done(c, t);
    }
}

static void cancel_each(uint64_t id, void *value, void *arg)
{
    conn_t *c = arg;
    (void)id;
    tq_pool_cancel(c->pool, value, TQ_POOL_CANCEL_RELEASED);
}

/* Adaptive: every slot is busy, tasks wait behind them, and no run has
 * finished for two round trips (at least ADAPT_STALL_MIN_US): the slots
 * are stuck on long runs, so the waiting tasks go back to the master
 * (RELEASE keeps their place), where a free slot elsewhere takes them.
 * The master may send them back to us when no slot is free anywhere:
 * each hand-back in a row waits twice as long as the one before, up to
 * ADAPT_STALL_MAX_US, until our queue is empty again. */
static int64_t stall_us(const conn_t *c)
{
    int64_t t = 2 * rtt_us(c);
    if (t < ADAPT_STALL_MIN_US)
        t = ADAPT_STALL_MIN_US;
    return c->stall_next > t ? c->stall_next : t;
}

static void check_stall(conn_t *c)
{
    if (!c->o->adaptive || c->draining || c->inflight <= c->slots ||
        tq_mono_us() - c->progress_us < stall_us(c))
        return;
    size_t n = 0;
    tq_pool_task_t *t = tq_pool_take_queued(c->pool);
    while (t) {
        tq_pool_task_t *next = t->next;
        c->inflight--;
        if (tq_idmap_get(c->tasks, t->id) == t)
            tq_idmap_remove(c->tasks, t->id);
        if (atomic_load(&t->cancel) != TQ_POOL_CANCEL_KILLED)
            add_release(c, t->id, t->attempt);
        slot_freed(c);
        tq_pool_task_free(t);
        n++;
        t = next;
    }
    c->progress_us = tq_mono_us();
    c->stall_next = 2 * stall_us(c);
    if (c->stall_next > ADAPT_STALL_MAX_US)
        c->stall_next = ADAPT_STALL_MAX_US;
    if (n)
        tq_debug("slots busy with long runs: %zu waiting tasks handed back", n);
}

/* ---- concurrency changed (taskq_worker_set_concurrency) ------------------- */

/* Take n units of credit out of what we would give the master: from
 * credit not sent yet, then from the next freed slots (debt). */
static void credit_shrink(conn_t *c, size_t n)
{
    size_t k = c->credit < n ? c->credit : n;
    c->credit -= k;
    c->debt += n - k;
}

/* Run on want slots from now on (nothing running stops): the pool grows
 * or parks slots; the credit we give the master grows or shrinks by the
 * difference; a HELLO on the same connection tells the master the new
 * count, which it takes in place (its leases stay, PROTOCOL.md 12.1).
 * Not connected: the next HELLO says it. */
static void resize(conn_t *c, size_t want)
{
    size_t old = c->slots, old_pcap = c->pcap;
    if (want == old || c->draining)
        return;
    if (tq_pool_resize(c->pool, want) < 0) {
        want = tq_pool_slots(c->pool);
        tq_warn("concurrency: could not start every slot; running %zu", want);
        if (want == old)
            return;
    }
    c->slots = want;
    if (c->o->adaptive) {
        c->pcap = want * ADAPT_PER_SLOT;
        if (c->pcap > TQ_MAX_PREFETCH)
            c->pcap = TQ_MAX_PREFETCH;
        if (c->target > c->pcap)
            c->target = c->pcap;
        /* the prefetch part is withheld, given as adapt() decides */
        if (c->pcap >= old_pcap) {
            c->withheld += c->pcap - old_pcap;
        } else {
            size_t d = old_pcap - c->pcap, k = c->withheld < d ? c->withheld : d;
            c->withheld -= k;
            credit_shrink(c, d - k);
        }
    }
    if (want > old)
        c->credit += want - old;
    else
        credit_shrink(c, old - want);
    tq_info("concurrency changed from %zu to %zu slots (%zu tasks running)", old, want,
            c->inflight);
    if (tq_link_up(c->link)) {
        c->resized = 1;
        hello_out(c);
    }
}

/* ---- drain ---------------------------------------------------------------- */

static void start_drain(conn_t *c)
{
    c->draining = 1;
    c->drain_deadline = tq_mono_ms() + c->o->drain_timeout_ms;
    tq_info("draining: %zu tasks running, waiting up to %lld ms", c->inflight,
            (long long)c->o->drain_timeout_ms);
    if (tq_link_registered(c->link))
        send_simple(c, TQ_MSG_DRAIN);
}

static void drain_kill(conn_t *c)
{
    if (c->drain_killed)
        return;
    c->drain_killed = 1;
    c->kill_deadline = tq_mono_ms() + CONN_KILL_WAIT_MS;
    if (c->inflight)
        tq_warn("drain: stopping %zu running tasks and handing them back", c->inflight);
    tq_idmap_each(c->tasks, cancel_each, c);
}

/* ---- receiving ------------------------------------------------------------ */

/* Registered with the master (the first time, or again). */
static void on_registered(conn_t *c)
{
    const tq_link_welcome_t *w = tq_link_welcome(c->link);
    c->last_warn = tq_mono_ms();
    if (c->resized) { /* the answer to a resizing HELLO */
        c->resized = 0;
        tq_debug("the master took our %zu slots", c->slots);
        return;
    }
    tq_info("connected to master at %s as %s (%zu slots, heartbeat %lld/%lld ms, max payload %zu)",
            c->o->endpoint, c->o->name, c->slots, (long long)w->hb_ms, (long long)w->hb_timeout_ms,
            w->max_payload);
    if (c->draining || c->quiet)
        send_simple(c, TQ_MSG_DRAIN);
}

/* A message for us (the link handled WELCOME, HEARTBEAT and ERROR not
 * registered). */
static void on_message(conn_t *c, int type, tq_bytes_t body, size_t nparts)
{
    tq_err_t err;
    const tq_bytes_t *parts = tq_in_parts(tq_link_in(c->link));
    size_t n = 0;

    switch (type) {
    case TQ_MSG_ERROR: {
        int code;
        uint32_t ref;
        char text[TQ_MAX_ERROR_TEXT];
        tq_link_error_parse(body, nparts, &code, &ref, text, sizeof text);
        tq_warn("master says: %s (%s)", text, tq_err_code_name(code));
        break;
    }
    case TQ_MSG_DISPATCH:
        if (tq_decode_dispatch(body, parts, nparts, c->items, &n, &err) < 0) {
            tq_warn("bad DISPATCH from master: %s", err.msg);
            break;
        }
        dispatch_came(c, n);
        for (size_t i = 0; i < n; i++)
            on_dispatch_item(c, &c->items[i], i);
        break;
    case TQ_MSG_KILL:
        if (tq_decode_leases(body, nparts, c->refs, &n, &err) < 0) {
            tq_warn("bad KILL from master: %s", err.msg);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            tq_pool_task_t *t = tq_idmap_get(c->tasks, c->refs[i].id);
            if (t && t->attempt == c->refs[i].attempt) {
                tq_info("killing task %llu attempt %u at the master's request",
                        (unsigned long long)t->id, t->attempt);
                tq_pool_cancel(c->pool, t, TQ_POOL_CANCEL_KILLED);
                tq_idmap_remove(c->tasks, t->id);
            }
        }
        break;
    case TQ_MSG_QUIET: /* an operator's `taskq worker quiet`: finish, take nothing new */
        if (!c->quiet && !c->draining) {
            c->quiet = 1;
            tq_info("quiet at the master's request: %zu tasks running, taking no new ones",
                    c->inflight);
            send_simple(c, TQ_MSG_DRAIN);
        }
        break;
    case TQ_MSG_STOP: /* an operator's `taskq worker stop`: as a first SIGTERM */
        if (c->nsignals == 0) {
            c->nsignals = 1;
            tq_info("stop at the master's request");
            start_drain(c);
            tq_pool_cancel_queued(c->pool, TQ_POOL_CANCEL_RELEASED);
        }
        break;
    default: tq_warn("unexpected %s from master; ignored", tq_msg_type_name(type));
    }
}

/* ---- the loop ------------------------------------------------------------- */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* One event of the link. Returns 0 to go on, or -1 (c->err filled) when
 * the run cannot go on. */
static int on_link_event(conn_t *c, const tq_link_event_t *ev)
{
    switch (ev->type) {
    case TQ_LINK_HELLO: send_hello(c); break;
    case TQ_LINK_REGISTERED: on_registered(c); break;
    case TQ_LINK_MESSAGE: on_message(c, ev->msg_type, ev->body, ev->nparts); break;
    case TQ_LINK_LOST:
        if (ev->silent_ms > 0)
            tq_warn("master at %s silent for %lld ms; reconnecting", c->o->endpoint,
                    (long long)ev->silent_ms);
        else
            tq_warn("lost connection to master at %s; reconnecting", c->o->endpoint);
        break;
    case TQ_LINK_REFUSED:
        tq_warn("master at %s refused us: %s; retrying", c->o->endpoint, ev->text);
        break;
    case TQ_LINK_BAD:
        tq_warn("bad %s from master: %s",
                ev->msg_type >= 0 ? tq_msg_type_name(ev->msg_type) : "message", ev->text);
        break;
    case TQ_LINK_AUTH_FAILED:
        if (!ev->again)
            return tq_err_set(c->err, TASKQ_ERR_CONNECT,
                              "authentication failed connecting to %s (wrong authkey?)",
                              c->o->endpoint);
        tq_warn("authentication failed connecting to %s (wrong key, or this key was removed "
                "from the master's --allow-keys?); retrying",
                c->o->endpoint);
        break;
    case TQ_LINK_DEAD:
        return tq_err_set(c->err, TASKQ_ERR_INTERNAL,
                          "cannot open a new socket to %s (out of sockets or memory?)",
                          c->o->endpoint);
    default: break;
    }
    return 0;
}

static int loop(conn_t *c)
{
    for (;;) {
        int64_t now = tq_mono_ms();

        /* Finished? */
        if (c->draining && c->inflight == 0)
            return 0;
        if (c->draining && !c->drain_killed && now >= c->drain_deadline)
            drain_kill(c);
        if (c->drain_killed && now >= c->kill_deadline) {
            tq_error("drain: %zu tasks did not stop; exiting anyway", c->inflight);
            return 0;
        }
        /* "cannot reach master" after CONN_WARN_MS without registration,
         * counted from the moment it was lost (not 1 ms before
         * "connected" again when a restarted master asks for HELLO) */
        if (tq_link_registered(c->link)) {
            c->last_warn = now;
        } else if (now - c->last_warn >= CONN_WARN_MS) {
            tq_warn("cannot reach master at %s, retrying", c->o->endpoint);
            c->last_warn = now;
        }

        /* Every ZeroMQ socket in the set costs zmq_poll two system calls
         * (its mailbox is checked before and after waiting): poll the
         * slots' results only while tasks are out there (the link polls
         * the handshake watch only until the master has welcomed us). */
        zmq_pollitem_t items[4];
        int n = 0, i_pull = -1, i_sig;
        if (c->inflight > 0)
            i_pull = n, items[n++] = (zmq_pollitem_t){c->pull, 0, ZMQ_POLLIN, 0};
        i_sig = n, items[n++] = (zmq_pollitem_t){NULL, c->o->stop_fd, ZMQ_POLLIN, 0};
        n += tq_link_pollitems(c->link, items + n);
        int64_t wait = min64(CONN_POLL_MAX_MS, tq_link_wait_ms(c->link));
        if (c->o->adaptive && c->inflight > c->slots && !c->draining) {
            int64_t left = c->progress_us + stall_us(c) - tq_mono_us();
            wait = min64(wait, left > 0 ? (left + 999) / 1000 : 0);
        }
        if (tq_zpoll(items, n, (long)wait) < 0) {
            if (errno == EINTR)
                continue;
            return tq_err_set(c->err, TASKQ_ERR_INTERNAL, "poll: %s", zmq_strerror(errno));
        }

        /* The link: its timers, then what the master sent, a burst at a
         * time (fairness with the slots). */
        tq_link_event_t ev;
        for (int k = 0; k < CONN_RECV_BURST; k++) {
            int t = tq_link_next(c->link, &ev);
            if (t == TQ_LINK_NONE)
                break;
            if (on_link_event(c, &ev) < 0)
                return -1;
        }
        if (i_pull >= 0 && (items[i_pull].revents & ZMQ_POLLIN)) {
            for (;;) {
                tq_pool_task_t *t;
                int r = zmq_recv(c->pull, &t, sizeof t, ZMQ_DONTWAIT);
                if (r < 0)
                    break;
                TQ_ASSERT(r == (int)sizeof t);
                TQ_TSAN_ACQUIRE(t); /* the slot's TQ_TSAN_RELEASE before its send */
                on_task_back(c, t);
            }
        }
        if (items[i_sig].revents & ZMQ_POLLIN) {
            char buf[16];
            ssize_t r = read(c->o->stop_fd, buf, sizeof buf);
            for (ssize_t k = 0; k < r; k++) {
                if (buf[k] == TQ_CONN_WAKE_RESIZE)
                    continue; /* read below */
                c->nsignals++;
                if (c->nsignals == 1) {
                    start_drain(c);
                } else if (!c->drain_killed) {
                    tq_info("second signal: not waiting for running tasks");
                    drain_kill(c);
                }
            }
            if (c->draining)
                tq_pool_cancel_queued(c->pool, TQ_POOL_CANCEL_RELEASED);
        }
        size_t want = c->o->slots_wanted ? atomic_load(c->o->slots_wanted) : 0;
        if (want && want != c->slots)
            resize(c, want);
        check_stall(c);
        adapt(c);
        /* Whatever finished in this iteration goes out in one RESULT. */
        flush_results(c);
        flush_releases(c);
    }
}

int tq_conn_run(const tq_conn_opts_t *opts, int *stuck, tq_err_t *err)
{
    conn_t c = {0};
    int rc = -1;
    c.o = opts;
    c.err = err;
    *stuck = 0;
    c.slots = opts->slots;
    c.pcap = opts->slots * ADAPT_PER_SLOT;
    if (c.pcap > TQ_MAX_PREFETCH)
        c.pcap = TQ_MAX_PREFETCH;
    if (sodium_init() < 0)
        return tq_err_set(err, TASKQ_ERR_INTERNAL, "cannot initialise libsodium");
    uint64_t inst = 0;
    while (!inst)
        randombytes_buf(&inst, sizeof inst);
    snprintf(c.instance, sizeof c.instance, "%016" PRIx64, inst);
    c.zctx = opts->zctx ? opts->zctx : zmq_ctx_new();
    if (!c.zctx)
        return tq_err_set(err, TASKQ_ERR_INTERNAL, "cannot create a ZeroMQ context: %s",
                          zmq_strerror(errno));
    char result_ep[96];
    snprintf(result_ep, sizeof result_ep, "%s-%p", CONN_RESULT_PREFIX, (void *)&c);
    char wname[64];
    snprintf(wname, sizeof wname, "worker-%p", (void *)&c);
    tq_link_opts_t lo = {.endpoint = opts->endpoint,
                         .keys = opts->keys,
                         .zctx = c.zctx,
                         .watch_name = wname};
    c.link = tq_link_new(&lo);
    TQ_ASSERT(c.link); /* the options are complete */
    c.items = tq_calloc(TQ_MAX_BATCH, sizeof *c.items);
    c.refs = tq_calloc(TQ_MAX_BATCH, sizeof *c.refs);
    c.tasks = tq_idmap_new();
    c.pull = zmq_socket(c.zctx, ZMQ_PULL);
    if (!c.pull || zmq_bind(c.pull, result_ep) < 0) {
        tq_err_set(err, TASKQ_ERR_INTERNAL, "cannot bind %s: %s", result_ep, zmq_strerror(errno));
        goto done;
    }
    /* Processes that leave a task's group come back to us, to be killed
     * when their task ends (reaper.h). */
    if (tq_reaper_start() < 0)
        tq_warn("cannot become the subreaper of task processes (%s): a process that "
                "leaves its task's process group can outlive the task",
                strerror(errno));
    c.pool = tq_pool_new(c.zctx, result_ep, opts->slots, opts->fns, opts->nfns);
    if (!c.pool) {
        tq_err_set(err, TASKQ_ERR_INTERNAL, "cannot start %zu slot threads (see the log)",
                   opts->slots);
        goto done;
    }
    tq_info("worker %s starting: %zu slots, connecting to %s (libtaskq %s, pid %ld, prefetch %s, "
            "drain timeout %lld ms)",
            opts->name, opts->slots, opts->endpoint, TQ_VERSION, (long)getpid(),
            opts->adaptive ? "auto" : "fixed", (long long)opts->drain_timeout_ms);
    c.last_warn = tq_mono_ms();
    if (tq_link_start(c.link) < 0) {
        tq_err_set(err, TASKQ_ERR_INTERNAL, "cannot connect to %s: %s", opts->endpoint,
                   zmq_strerror(errno));
        goto done;
    }
    rc = loop(&c);
    if (rc == 0) {
        flush_results(&c);
        flush_releases(&c);
        if (c.done_head || c.nrel)
            tq_warn("exiting with results or releases the master did not get (not connected)");
        if (tq_link_registered(c.link))
            send_simple(&c, TQ_MSG_BYE);
        tq_info("drained; bye");
    }
done:
    tq_link_free(&c.link, rc == 0 ? CONN_FINAL_LINGER_MS : 0);
    /* Slots must be idle before the pool stops: drain kills them above;
     * on a fatal exit nothing was dispatched (or we leave them). */
    if (c.pool && c.inflight == 0)
        tq_pool_destroy(&c.pool);
    if (!c.pool)
        tq_reaper_sweep(1); /* no task runs any more: every stray goes */
    while (c.done_head) {
        tq_pool_task_t *t = c.done_head;
        c.done_head = t->next;
        tq_pool_task_free(t);
    }
    if (c.pull) {
        int zero = 0;
        zmq_setsockopt(c.pull, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(c.pull);
    }
    tq_idmap_destroy(&c.tasks);
    free(c.rel);
    free(c.items);
    free(c.refs);
    /* zmq_ctx_term would wait for slot sockets of a stuck pool; only
     * terminate when the pool is gone. */
    if (!c.pool && !opts->zctx)
        zmq_ctx_term(c.zctx); /* a context given by the caller stays theirs */
    *stuck = c.pool != NULL;
    return rc;
}
