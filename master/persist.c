/* persist.c - journal records of task state changes, replay, compaction.
 * See persist.h; the record layouts are in docs/journal.md. */
#include "persist.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_log.h"
#include "tq_util.h"
#include "tq_wire.h"

/* Record types (docs/journal.md). Stable numbers: a new meaning gets a
 * new type; an unknown type refuses the start (written by a newer
 * taskq). */
enum {
    R_TASK = 1,       /* a task's full state (submit, and compaction) */
    R_LEASE = 2,      /* dispatched: attempt, optionally the holder */
    R_REQUEUE = 3,    /* back in its queue: attempt, releases, retried */
    R_FINISH = 4,     /* finished: state, time, result or error */
    R_FETCHED = 5,    /* a keyed task's outcome was ACKed: its TTL starts */
    R_GONE = 6,       /* not live any more (ACKed, expired, undone) */
    R_KEY = 7,        /* retained idempotency key -> id until expiry */
    R_PAUSE = 8,      /* a queue paused (1) or resumed (0) */
    R_ITEM = 9,       /* a plain-queue item: id, queue (str8), its bytes */
    R_ITEM_GONE = 10, /* a plain-queue item taken for good (TAKE_ACK) */
};

/* R_TASK flag bits */
#define TF_KEYED 0x01u
#define TF_FETCHED 0x02u
#define TF_NOT_BEFORE 0x04u /* u64 not_before_ms follows the names */
#define TF_PAYLOAD 0x08u    /* dead or failed: u32 length + the payload follow; blob = error */
#define TF_OWNER                                                                                   \
    0x10u /* str8 owner (key-pair mode: the identity that
                               submitted it) follows not_before */

/* Fixed part of an R_TASK body (before fn, queue, key and the blob). */
#define TASK_FIXED (8 + 8 + 8 + 4 + 4 + 4 + 4 + 2 + 2 + 1 + 1 + 8 + 8)
/* The largest record: a dead task's R_TASK, with the longest names and
 * key, a not-before time, its payload and its error text, each at the
 * highest --max-payload. It must fit a journal record, or an input the
 * master accepted would reach tq_journal_append's assertion. */
_Static_assert(1 + TASK_FIXED + 3 + 2 * TQ_MAX_NAME + TQ_MAX_KEY + 8 + 1 + TQ_IDENT_NAME_MAX + 4 +
                       2 * (uint64_t)TQ_PAYLOAD_HARD_MAX <=
                   TQ_JOURNAL_MAX_RECORD,
               "a task at --max-payload's hard cap must fit one journal record");
/* Compaction steps stop after this many bytes even within the time. */
#define STEP_MAX_BYTES (8u * 1024u * 1024u)

typedef enum { C_IDLE, C_TASKS, C_KEYS, C_DROPPING } compact_phase_t;

struct tq_persist {
    tq_journal_t *j;
    tq_store_t *store;
    tq_engine_t *engine; /* whose events become records */
    tq_policy_t *policy; /* task owners (key-pair mode), or NULL */
    tq_fsync_mode_t mode;
    tq_buf_t rec; /* scratch for one record's fixed part */
    uint64_t live_bytes;
    uint64_t records; /* appended since start */
    uint64_t compactions;
    compact_phase_t phase;
    uint64_t cseg;   /* segment the compaction writes into */
    uint64_t walk;   /* next task id to look at (0: none left) */
    unsigned jgen;   /* tq_task_t.jgen of records written since the
                               * current (or last) compaction started */
    tq_key_t *kwalk; /* next key to rewrite */
    int64_t compact_start_ms;
    uint64_t compact_from_bytes;
    /* replay */
    int64_t now_wall;
    int damaged;         /* --repair went past damage */
    uint64_t unreadable; /* places with missing or unreadable bytes */
    struct {             /* ids damage touched: id -> DM_ flags */
        uint64_t *ids;
        uint8_t *flags;
        size_t cap, n;
    } dm;
};

/* What --repair learned about a task id (persist.c's damage map). */
#define DM_TASK 0x01u       /* a damaged TASK record named it */
#define DM_OTHER 0x02u      /* a damaged record of another type named it */
#define DM_ORPHAN 0x04u     /* a later record named it, unknown then */
#define DM_GONE 0x08u       /* it was not needed any more after the damage */
#define DM_TASK_AFTER 0x10u /* a sound TASK record came after */

/* ---- sizes and encodings ------------------------------------------------ */

/* A finished task whose record carries its payload: the dead and the
 * failed set (an operator may retry them). */
static int keeps_payload(const tq_task_t *t)
{
    return t->state == TQ_TASK_DEAD || t->state == TQ_TASK_FAILED;
}

/* The recorded owner of t (key-pair mode), or NULL. */
static const char *task_owner(const tq_persist_t *self, const tq_task_t *t)
{
    return self->policy ? tq_idmap_get(self->policy->owners, t->id) : NULL;
}

static uint32_t task_rec_size(const tq_persist_t *self, const tq_task_t *t)
{
    size_t skey = tq_task_skey_len(t);
    size_t blob = tq_task_finished(t) ? tq_task_data(t).len : t->payload_len;
    const char *owner = task_owner(self, t);
    size_t ext = (tq_task_not_before(t) ? 8 : 0) + (owner ? 1 + strlen(owner) : 0) +
                 (keeps_payload(t) ? 4 + t->payload_len : 0);
    return (uint32_t)(TQ_JOURNAL_RECORD_HEAD + 1 + TASK_FIXED + 3 + strlen(tq_task_fn(t)) +
                      strlen(tq_queue_name(tq_task_queue(t))) + skey + ext + blob);
}

/* The size of a task's full record fits tq_task_t.jsize (31 bits): a
 * dead task, the largest, holds its payload and its error text, each at
 * most TQ_PAYLOAD_HARD_MAX, beside names and fields of a few KiB. */
_Static_assert(2ull * TQ_PAYLOAD_HARD_MAX + (1u << 20) < (1ull << 31),
               "a task record fits tq_task_t.jsize");

/* t's record is live with its current full size: persist.c's slot of t
 * (jsize) and the live byte count follow. */
static void set_live_size(tq_persist_t *self, tq_task_t *t)
{
    self->live_bytes -= t->jsize;
    t->jsize = task_rec_size(self, t) & 0x7fffffffu;
    self->live_bytes += t->jsize;
}

static uint32_t key_rec_size(const tq_key_t *k)
{
    return (uint32_t)(TQ_JOURNAL_RECORD_HEAD + 1 + 16 + tq_key_bytes(k).len);
}

static void rec_reset(tq_persist_t *self) { self->rec.len = 0; }

static void append(tq_persist_t *self, uint8_t type, const void *blob, size_t blob_len)
{
    tq_journal_append(self->j, type, self->rec.data, self->rec.len, blob, blob_len);
    self->records++;
}

/* Append a LEASE record: t's attempt and the instance id of the worker
 * holding it (docs/journal.md). */
static void put_lease(tq_persist_t *self, const tq_task_t *t)
{
    rec_reset(self);
    tq_buf_u64(&self->rec, t->id);
    tq_buf_u32(&self->rec, tq_task_attempt(t));
    tq_buf_u64(&self->rec, tq_task_holder(t));
    append(self, R_LEASE, NULL, 0);
}

/* Append t's full state; it is live from now, in the current segment. */
static void put_task(tq_persist_t *self, tq_task_t *t)
{
    int fin = tq_task_finished(t);
    rec_reset(self);
    tq_buf_t *b = &self->rec;
    tq_buf_u64(b, t->id);
    tq_buf_u64(b, tq_task_seq(t));
    tq_buf_u64(b, (uint64_t)t->created_ms);
    tq_buf_i32(b, tq_task_priority(t));
    tq_buf_u32(b, tq_task_attempt(t));
    tq_buf_u32(b, tq_task_releases(t));
    tq_buf_u32(b, tq_task_timeout(t));
    tq_buf_u16(b, t->retries);
    tq_buf_u16(b, tq_task_retried(t));
    tq_buf_u8(b, (uint8_t)t->state);
    int dead = keeps_payload(t);
    int64_t not_before = tq_task_not_before(t);
    const char *owner = task_owner(self, t);
    tq_buf_u8(b, (uint8_t)((tq_task_keyed(t) ? TF_KEYED : 0) | (tq_task_acked(t) ? TF_FETCHED : 0) |
                           (not_before ? TF_NOT_BEFORE : 0) | (dead ? TF_PAYLOAD : 0) |
                           (owner ? TF_OWNER : 0)));
    tq_buf_u64(b, (uint64_t)tq_task_finished_ms(t));
    /* a keyed, ACKed task: when it was delivered (its TTL runs from then) */
    int64_t fetched_ms = tq_task_acked(t)
                             ? tq_task_expires_ms(t) - tq_store_cfg(self->store)->result_ttl_ms
                             : 0;
    tq_buf_u64(b, (uint64_t)fetched_ms);
    tq_buf_str8(b, tq_bytes_str(tq_task_fn(t)));
    tq_buf_str8(b, tq_bytes_str(tq_queue_name(tq_task_queue(t))));
    uint8_t kb[TQ_MAX_KEY];
    tq_bytes_t sk = {kb, tq_store_task_skey(self->store, t, kb)};
    tq_buf_str8(b, sk);
    if (not_before)
        tq_buf_u64(b, (uint64_t)not_before);
    if (owner)
        tq_buf_str8(b, tq_bytes_str(owner));
    tq_bytes_t payload = tq_task_payload(t);
    if (dead) {
        tq_buf_u32(b, (uint32_t)payload.len);
        tq_buf_put(b, payload.data, payload.len);
    }
    tq_bytes_t blob = fin ? tq_task_data(t) : payload;
    append(self, R_TASK, blob.data, blob.len);
    if (!fin && tq_task_holder(t))
        put_lease(self, t); /* compaction: the holder survives a restart */
    set_live_size(self, t);
    /* written after the current compaction started (or outside one) */
    t->jgen = self->jgen;
}

static void put_key(tq_persist_t *self, const tq_key_t *k)
{
    rec_reset(self);
    tq_buf_u64(&self->rec, tq_key_id(k));
    tq_buf_u64(&self->rec, (uint64_t)tq_key_expires(k));
    tq_bytes_t kb = tq_key_bytes(k);
    append(self, R_KEY, kb.data, kb.len);
}

/* A queue's paused mark (docs/journal.md). */
static void put_pause(tq_persist_t *self, const char *queue, int paused)
{
    rec_reset(self);
    tq_buf_u8(&self->rec, paused ? 1 : 0);
    append(self, R_PAUSE, queue, strlen(queue));
}

/* Every paused queue's mark: compaction and --repair's checkpoint. */
static void put_paused_set(tq_persist_t *self)
{
    for (size_t i = 0; i < tq_store_nqueues(self->store); i++) {
        const tq_queue_t *q = tq_store_queue_at(self->store, i);
        if (tq_queue_paused(q))
            put_pause(self, tq_queue_name(q), 1);
    }
}

static void put_id(tq_persist_t *self, uint8_t type, uint64_t id)
{
    rec_reset(self);
    tq_buf_u64(&self->rec, id);
    append(self, type, NULL, 0);
}

/* An item's record size, for live_bytes. */
static size_t item_rec_size(const tq_item_t *it)
{
    return 8 + 1 + tq_iqueue_name(it->q).len + it->len;
}

static void put_item(tq_persist_t *self, const tq_item_t *it)
{
    rec_reset(self);
    tq_buf_u64(&self->rec, it->id);
    tq_buf_str8(&self->rec, tq_iqueue_name(it->q));
    append(self, R_ITEM, it->data, it->len);
}

static void put_item_cb(void *arg, const tq_item_t *it) { put_item(arg, it); }

static void set_not_live(tq_persist_t *self, tq_task_t *t)
{
    put_id(self, R_GONE, t->id);
    self->live_bytes -= t->jsize;
    t->jsize = 0;
}

/* ---- the store's observer ------------------------------------------------ */

static void on_task(tq_persist_t *self, tq_task_t *t, tq_store_event_t ev)
{
    switch (ev) {
    case TQ_SEV_ADDED:
    case TQ_SEV_REVIVED:
        /* a task a key-pair identity submits: its owner goes with it */
        if (ev == TQ_SEV_ADDED && self->policy && self->policy->submitter)
            tq_idmap_put(self->policy->owners, t->id, (void *)self->policy->submitter);
        put_task(self, t);
        return;
    case TQ_SEV_DELETED:
        if (t->jsize)
            set_not_live(self, t);
        return;
    default: break;
    }
    if (!t->jsize)
        return;
    if (ev == TQ_SEV_LEASED) {
        put_lease(self, t);
        return;
    }
    rec_reset(self);
    tq_buf_u64(&self->rec, t->id);
    switch (ev) {
    case TQ_SEV_REQUEUED:
        tq_buf_u32(&self->rec, tq_task_attempt(t));
        tq_buf_u32(&self->rec, tq_task_releases(t));
        tq_buf_u16(&self->rec, tq_task_retried(t));
        if (tq_task_not_before(t))
            tq_buf_u64(&self->rec, (uint64_t)tq_task_not_before(t)); /* its backoff */
        append(self, R_REQUEUE, NULL, 0);
        break;
    case TQ_SEV_FINISHED:
        if (tq_journal_low_space(self->j)) {
            /* The disk is full: a result would eat the room compaction
             * needs. Nobody waits for a FINISH record (after a crash the
             * task runs again: at-least-once); the next compaction writes
             * the finished task whole (it rewrites every live task). */
            set_live_size(self, t);
            break;
        }
        tq_buf_u8(&self->rec, (uint8_t)t->state);
        tq_buf_u64(&self->rec, (uint64_t)tq_task_finished_ms(t));
        append(self, R_FINISH, tq_task_data(t).data, tq_task_data(t).len);
        set_live_size(self, t);
        break;
    case TQ_SEV_ACKED:
        if (t->state == TQ_TASK_DEAD)
            break; /* the dead set is kept until retried or purged */
        if (tq_task_keyed(t) || t->state == TQ_TASK_FAILED) {
            /* the failed set is kept, as keyed tasks are, until its
             * result TTL passes from now */
            /* when it was delivered (its TTL runs from then), as
             * compaction writes it */
            int64_t when = tq_task_fetched(t)
                               ? tq_task_expires_ms(t) - tq_store_cfg(self->store)->result_ttl_ms
                               : tq_wall_ms();
            tq_buf_u64(&self->rec, (uint64_t)when);
            append(self, R_FETCHED, NULL, 0);
        } else {
            set_not_live(self, t);
        }
        break;
    default: break;
    }
}

static void on_key(tq_persist_t *self, tq_key_t *k, int deleted)
{
    if (deleted) {
        if (self->kwalk == k)
            self->kwalk = tq_key_next(k);
        self->live_bytes -= key_rec_size(k);
        return;
    }
    put_key(self, k);
    self->live_bytes += key_rec_size(k);
}

/* The engine's subscriber: task and key changes become records. */
static void on_event(void *arg, const tq_engine_ev_t *ev)
{
    tq_persist_t *self = arg;
    if (ev->kind == TQ_EV_TASK)
        on_task(self, ev->task, ev->store_ev);
    else if (ev->kind == TQ_EV_KEY)
        on_key(self, ev->key, ev->deleted);
    else if (ev->kind == TQ_EV_PAUSE)
        put_pause(self, tq_queue_name(ev->queue), ev->paused);
    else if (ev->kind == TQ_EV_ITEM && !ev->deleted) {
        put_item(self, ev->item);
        self->live_bytes += item_rec_size(ev->item);
    } else if (ev->kind == TQ_EV_ITEM) {
        put_id(self, R_ITEM_GONE, ev->item->id);
        self->live_bytes -= item_rec_size(ev->item);
    }
}

/* ---- replay --------------------------------------------------------------- */

/* The damage map's slot for id (open addressing; ids are not 0). */
static size_t dm_slot(const tq_persist_t *self, uint64_t id)
{
    size_t mask = self->dm.cap - 1, i = (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & mask;
    while (self->dm.ids[i] && self->dm.ids[i] != id)
        i = (i + 1) & mask;
    return i;
}

/* Add flags to id (add: 1 also creates it). */
static void dm_mark(tq_persist_t *self, uint64_t id, uint8_t flags, int add)
{
    if (id == 0)
        return;
    if (add && (self->dm.n + 1) * 2 > self->dm.cap) {
        size_t oldcap = self->dm.cap;
        uint64_t *oids = self->dm.ids;
        uint8_t *ofl = self->dm.flags;
        self->dm.cap = oldcap ? oldcap * 2 : 1024;
        self->dm.ids = tq_calloc(self->dm.cap, sizeof *self->dm.ids);
        self->dm.flags = tq_calloc(self->dm.cap, 1);
        for (size_t i = 0; i < oldcap; i++)
            if (oids[i]) {
                size_t k = dm_slot(self, oids[i]);
                self->dm.ids[k] = oids[i];
                self->dm.flags[k] = ofl[i];
            }
        free(oids);
        free(ofl);
    }
    if (!self->dm.cap)
        return;
    size_t k = dm_slot(self, id);
    if (!self->dm.ids[k]) {
        if (!add)
            return;
        self->dm.ids[k] = id;
        self->dm.n++;
    }
    self->dm.flags[k] |= flags;
}

/* --repair hands what it could not replay: note what it probably was
 * (a damaged record's type and id may be wrong: a best guess, as the
 * report says). */
static void note_dropped(tq_persist_t *self, uint8_t type, const uint8_t *body, size_t len, int how)
{
    self->damaged = 1;
    if (how == TQ_JREC_LOST || !body || len < 8) {
        self->unreadable++;
        return;
    }
    uint64_t id = 0;
    for (int i = 7; i >= 0; i--)
        id = id << 8 | body[i];
    /* a damaged type byte: a body as long as a task's is taken for one */
    int task = type == R_TASK || ((type < R_TASK || type > R_PAUSE) && len >= TASK_FIXED + 3);
    if (type == R_KEY || type == R_PAUSE || type == R_ITEM || type == R_ITEM_GONE)
        return; /* a key's, a paused mark's or an item's loss loses no task */
    dm_mark(self, id, task ? DM_TASK : DM_OTHER, 1);
}

/* After the replay: which tasks the damage took, and which it set back. */
static void count_lost(tq_persist_t *self, tq_persist_report_t *rep)
{
    for (size_t i = 0; i < self->dm.cap; i++) {
        uint64_t id = self->dm.ids[i];
        uint8_t f = self->dm.flags[i];
        if (!id)
            continue;
        if (tq_store_get(self->store, id)) {
            if ((f & (DM_TASK | DM_OTHER)) && !(f & DM_TASK_AFTER))
                rep->earlier++;
        } else if (!(f & DM_GONE)) {
            if (rep->lost < TQ_PERSIST_LOST_IDS)
                rep->lost_ids[rep->lost] = id;
            rep->lost++;
        }
    }
    /* listed in order */
    size_t n = rep->lost < TQ_PERSIST_LOST_IDS ? (size_t)rep->lost : TQ_PERSIST_LOST_IDS;
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && rep->lost_ids[k - 1] > rep->lost_ids[k]; k--) {
            uint64_t t = rep->lost_ids[k];
            rep->lost_ids[k] = rep->lost_ids[k - 1];
            rep->lost_ids[k - 1] = t;
        }
    rep->unreadable = self->unreadable;
    free(self->dm.ids);
    free(self->dm.flags);
    memset(&self->dm, 0, sizeof self->dm);
}

#define BAD(what) (tq_err_set(err, 0, "journal record of type %u: %s", type, what), -1)

static int replay_task(tq_persist_t *self, tq_cursor_t *c, uint8_t type, tq_err_t *err)
{
    tq_task_image_t img;
    memset(&img, 0, sizeof img);
    uint64_t created, finished, fetched;
    uint8_t st, flags;
    if (tq_cursor_u64(c, &img.id) < 0 || tq_cursor_u64(c, &img.seq) < 0 ||
        tq_cursor_u64(c, &created) < 0 || tq_cursor_i32(c, &img.priority) < 0 ||
        tq_cursor_u32(c, &img.attempt) < 0 || tq_cursor_u32(c, &img.releases) < 0 ||
        tq_cursor_u32(c, &img.timeout_ms) < 0 || tq_cursor_u16(c, &img.retries) < 0 ||
        tq_cursor_u16(c, &img.retried) < 0 || tq_cursor_u8(c, &st) < 0 ||
        tq_cursor_u8(c, &flags) < 0 || tq_cursor_u64(c, &finished) < 0 ||
        tq_cursor_u64(c, &fetched) < 0 || tq_cursor_str8(c, &img.fn) < 0 ||
        tq_cursor_str8(c, &img.queue) < 0 || tq_cursor_str8(c, &img.skey) < 0)
        return BAD("truncated task");
    if (st > TQ_TASK_DEAD)
        return BAD("task state not valid");
    if (flags & ~(TF_KEYED | TF_FETCHED | TF_NOT_BEFORE | TF_PAYLOAD | TF_OWNER))
        return BAD("unknown task flags (written by a newer taskq?)");
    if (flags & TF_NOT_BEFORE) {
        uint64_t nb;
        if (tq_cursor_u64(c, &nb) < 0 || nb > (uint64_t)TQ_MAX_NOT_BEFORE_MS)
            return BAD("truncated or bad not_before");
        img.not_before_ms = (int64_t)nb;
    }
    tq_bytes_t owner = {NULL, 0};
    if ((flags & TF_OWNER) && (tq_cursor_str8(c, &owner) < 0 ||
                               !tq_ident_name_valid((const char *)owner.data, owner.len)))
        return BAD("truncated or bad owner");
    if (flags & TF_PAYLOAD) {
        uint32_t plen;
        if ((st != TQ_TASK_DEAD && st != TQ_TASK_FAILED) || tq_cursor_u32(c, &plen) < 0 ||
            tq_cursor_bytes(c, plen, &img.payload) < 0)
            return BAD("truncated or misplaced payload");
    }
    tq_cursor_bytes(c, tq_cursor_left(c), &img.blob);
    img.state = (tq_task_state_t)st;
    img.created_ms = (int64_t)created;
    img.finished_ms = (int64_t)finished;
    img.keyed = (flags & TF_KEYED) != 0;
    if (flags & TF_FETCHED) {
        img.fetched = 1;
        img.fetched_ms = (int64_t)fetched;
    }
    tq_err_t why;
    if (!tq_store_restore(self->store, &img, &why))
        return tq_err_set(err, 0, "cannot restore task %" PRIu64 " (%s)", img.id, why.msg);
    if (owner.len && self->policy) { /* who submitted it (key-pair mode) */
        char name[TQ_IDENT_NAME_MAX + 1];
        memcpy(name, owner.data, owner.len);
        name[owner.len] = '\0';
        const char *in = tq_ident_intern(name);
        if (in)
            tq_idmap_put(self->policy->owners, img.id, (void *)in);
    }
    return 0;
}

/* R_PAUSE: u8 paused, then the queue name. */
static int replay_pause(tq_persist_t *self, tq_cursor_t *c, uint8_t type, tq_err_t *err)
{
    uint8_t paused;
    tq_bytes_t name;
    if (tq_cursor_u8(c, &paused) < 0 || paused > 1)
        return BAD("truncated or bad paused mark");
    tq_cursor_bytes(c, tq_cursor_left(c), &name);
    if (!tq_name_valid(name))
        return BAD("not a queue name");
    tq_queue_t *q = paused ? tq_store_queue(self->store, name)
                           : (tq_store_name_known(self->store, name)
                                  ? tq_store_queue(self->store, name)
                                  : NULL);
    if (paused && !q)
        return BAD("too many queue names");
    if (q)
        tq_queue_set_paused(q, paused); /* recovery: no event */
    return 0;
}

/* R_ITEM: id, queue (str8), the item's bytes; R_ITEM_GONE: id. */
static int replay_item(tq_persist_t *self, tq_cursor_t *c, uint8_t type, tq_err_t *err)
{
    uint64_t id;
    if (tq_cursor_u64(c, &id) < 0)
        return BAD("truncated item id");
    if (type == R_ITEM_GONE) {
        const tq_item_t *it = tq_items_get(tq_engine_items(self->engine), id);
        if (it)
            self->live_bytes -= item_rec_size(it);
        tq_engine_item_drop(self->engine, id);
        return tq_cursor_left(c) ? BAD("bytes left over") : 0;
    }
    tq_bytes_t q, data;
    if (tq_cursor_str8(c, &q) < 0 || !tq_name_valid(q))
        return BAD("bad item queue name");
    tq_cursor_bytes(c, tq_cursor_left(c), &data);
    if (tq_items_get(tq_engine_items(self->engine), id))
        return 0; /* compaction wrote it again */
    if (tq_engine_item_restore(self->engine, q, id, data) < 0)
        return BAD("item not restored (plain queues full)");
    self->live_bytes += item_rec_size(tq_items_get(tq_engine_items(self->engine), id));
    return 0;
}

static int replay(void *arg, uint8_t type, const uint8_t *body, size_t len, int dropped,
                  tq_err_t *err)
{
    tq_persist_t *self = arg;
    if (dropped) {
        note_dropped(self, type, body, len, dropped);
        return 0;
    }
    tq_cursor_t c;
    tq_cursor_init(&c, (tq_bytes_t){body, len});
    uint64_t id;
    if (type == R_TASK) {
        if (self->damaged && len >= 8) {
            tq_cursor_t c2 = c;
            if (tq_cursor_u64(&c2, &id) == 0)
                dm_mark(self, id, DM_TASK_AFTER, 0);
        }
        return replay_task(self, &c, type, err);
    }
    if (type == R_ITEM || type == R_ITEM_GONE)
        return replay_item(self, &c, type, err);
    if (type < R_TASK || type > R_PAUSE) {
        tq_err_set(err, 0, "unknown journal record type %u (written by a newer taskq?)", type);
        return -1;
    }
    if (type == R_PAUSE)
        return replay_pause(self, &c, type, err);
    if (tq_cursor_u64(&c, &id) < 0)
        return BAD("truncated id");
    tq_task_t *t = type == R_KEY ? NULL : tq_store_get(self->store, id);
    if (self->damaged && type != R_KEY) {
        /* after damage: a record about a task nobody created names a
         * task whose TASK record was lost (unless it was not needed) */
        if (type == R_GONE)
            dm_mark(self, id, DM_GONE, !t);
        else if (!t)
            dm_mark(self, id, DM_ORPHAN, 1);
    }
    switch (type) {
    case R_LEASE: {
        uint32_t attempt;
        uint64_t holder = 0; /* absent in journals before issue 12 */
        if (tq_cursor_u32(&c, &attempt) < 0 ||
            (tq_cursor_left(&c) && tq_cursor_u64(&c, &holder) < 0))
            return BAD("truncated lease");
        if (t && !tq_task_finished(t)) { /* restored leases are queued: the attempt counts */
            tq_task_set_counts(t, attempt, tq_task_releases(t), tq_task_retried(t));
            tq_task_set_holder(t, holder, attempt);
        }
        break;
    }
    case R_REQUEUE: {
        uint32_t attempt, releases;
        uint16_t retried;
        uint64_t nb = 0;
        if (tq_cursor_u32(&c, &attempt) < 0 || tq_cursor_u32(&c, &releases) < 0 ||
            tq_cursor_u16(&c, &retried) < 0 || (tq_cursor_left(&c) && tq_cursor_u64(&c, &nb) < 0))
            return BAD("truncated requeue");
        if (t && !tq_task_finished(t)) {
            tq_task_set_counts(t, attempt, releases, retried);
            tq_store_delay(self->store, t, nb > (uint64_t)TQ_MAX_NOT_BEFORE_MS ? 0 : (int64_t)nb);
        }
        break;
    }
    case R_FINISH: {
        uint8_t st;
        uint64_t when;
        tq_bytes_t data;
        if (tq_cursor_u8(&c, &st) < 0 || tq_cursor_u64(&c, &when) < 0)
            return BAD("truncated finish");
        if (st < TQ_TASK_DONE || st > TQ_TASK_DEAD)
            return BAD("finished state not valid");
        tq_cursor_bytes(&c, tq_cursor_left(&c), &data);
        if (t && !tq_task_finished(t))
            tq_store_finish(self->store, t, (tq_task_state_t)st, data.data, data.len,
                            (int64_t)when);
        break;
    }
    case R_FETCHED: {
        uint64_t when;
        if (tq_cursor_u64(&c, &when) < 0)
            return BAD("truncated fetched");
        if (t && tq_task_finished(t))
            tq_store_restore_fetched(self->store, t, (int64_t)when);
        break;
    }
    case R_GONE:
        if (t)
            tq_store_drop(self->store, t);
        break;
    case R_KEY: {
        uint64_t expires;
        tq_bytes_t key;
        if (tq_cursor_u64(&c, &expires) < 0)
            return BAD("truncated key");
        tq_cursor_bytes(&c, tq_cursor_left(&c), &key);
        if ((int64_t)expires > self->now_wall &&
            tq_store_key_restore(self->store, key, id, (int64_t)expires) < 0)
            return BAD("key not valid");
        break;
    }
    default: break;
    }
    if (type != R_TASK && type != R_FINISH && type != R_KEY && tq_cursor_left(&c) != 0)
        return BAD("bytes left over");
    return 0;
}

/* After replay: count what is live and where (all of it in old segments). */
static void account(tq_persist_t *self, tq_persist_report_t *rep)
{
    for (tq_task_t *t = tq_store_first(self->store); t; t = tq_store_next(self->store, t)) {
        t->jsize = 0;
        set_live_size(self, t);
        /* in old segments: the next compaction flips jgen, and so rewrites it */
        t->jgen = self->jgen;
        if (tq_task_finished(t))
            rep->finished++;
        else
            rep->queued++;
    }
    for (tq_key_t *k = tq_store_key_first(self->store); k; k = tq_key_next(k)) {
        self->live_bytes += key_rec_size(k);
        rep->keys++;
    }
}

/* --repair: the recovered state, appended whole (journal.h). */
static void checkpoint(void *arg, tq_journal_t *j)
{
    tq_persist_t *self = arg;
    self->j = j;
    for (tq_task_t *t = tq_store_first(self->store); t; t = tq_store_next(self->store, t))
        put_task(self, t);
    for (tq_key_t *k = tq_store_key_first(self->store); k; k = tq_key_next(k))
        put_key(self, k);
    put_paused_set(self);
    if (self->engine)
        tq_items_each(tq_engine_items(self->engine), put_item_cb, self);
}

static void add_item_bytes(void *arg, const tq_item_t *it)
{
    ((tq_persist_t *)arg)->live_bytes += item_rec_size(it);
}

tq_persist_t *tq_persist_open(const tq_journal_cfg_t *cfg, tq_engine_t *engine, tq_policy_t *policy,
                              tq_persist_report_t *report, tq_err_t *err)
{
    tq_store_t *store = tq_engine_store(engine);
    TQ_ASSERT(tq_store_size(store) == 0);
    tq_persist_t *self = tq_calloc(1, sizeof *self);
    self->policy = policy;
    tq_buf_init(&self->rec);
    self->store = store;
    self->engine = engine; /* replay restores items into it (no events yet) */
    self->mode = cfg->mode;
    self->now_wall = tq_wall_ms();
    memset(report, 0, sizeof *report);
    int64_t t0 = tq_mono_ms();
    tq_journal_cfg_t jcfg = *cfg;
    jcfg.checkpoint = checkpoint;
    self->j = tq_journal_open(&jcfg, replay, self, &report->journal, err);
    if (!self->j) {
        free(self->dm.ids);
        free(self->dm.flags);
        tq_buf_free(&self->rec);
        free(self);
        return NULL;
    }
    /* a checkpoint counted the live bytes once already: account again */
    self->live_bytes = 0;
    for (tq_task_t *t = tq_store_first(store); t; t = tq_store_next(store, t))
        t->jsize = 0;
    account(self, report);
    tq_items_each(tq_engine_items(engine), add_item_bytes, self);
    count_lost(self, report);
    report->elapsed_ms = tq_mono_ms() - t0;
    self->engine = engine;
    tq_engine_subscribe(engine, on_event, self);
    return self;
}

void tq_persist_destroy(tq_persist_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_persist_t *self = *self_p;
    tq_engine_unsubscribe(self->engine, on_event, self);
    tq_journal_destroy(&self->j);
    tq_buf_free(&self->rec);
    free(self);
    *self_p = NULL;
}

uint64_t tq_persist_lsn(const tq_persist_t *self) { return tq_journal_appended(self->j); }

uint64_t tq_persist_durable(const tq_persist_t *self) { return tq_journal_durable(self->j); }

uint64_t tq_persist_ready(const tq_persist_t *self)
{
    return self->mode == TQ_FSYNC_ALWAYS ? tq_journal_durable(self->j)
                                         : tq_journal_written(self->j);
}

int tq_persist_failed(const tq_persist_t *self) { return tq_journal_failed(self->j); }

int tq_persist_flush(tq_persist_t *self)
{
    uint64_t before = tq_persist_ready(self);
    if (tq_journal_appended(self->j) != tq_journal_written(self->j))
        tq_journal_write(self->j);
    return tq_persist_ready(self) != before;
}

void *tq_persist_socket(tq_persist_t *self) { return tq_journal_socket(self->j); }
uint64_t tq_persist_socket_ops(const tq_persist_t *self) { return tq_journal_socket_ops(self->j); }

int tq_persist_on_sync(tq_persist_t *self)
{
    uint64_t before = tq_persist_ready(self);
    int moved = tq_journal_on_sync(self->j);
    if (self->phase == C_DROPPING && !tq_journal_drop_pending(self->j)) {
        self->phase = C_IDLE;
        tq_info("journal compacted in %lld ms: %.1f MiB -> %.1f MiB (%.1f MiB live)",
                (long long)(tq_mono_ms() - self->compact_start_ms),
                self->compact_from_bytes / 1048576.0, tq_journal_bytes(self->j) / 1048576.0,
                self->live_bytes / 1048576.0);
        moved = 1;
    }
    return moved || tq_persist_ready(self) != before;
}

/* ---- compaction ------------------------------------------------------------ */

static void compact_start(tq_persist_t *self)
{
    uint64_t seg = tq_journal_rotate(self->j);
    if (!seg)
        return; /* the journal is failing: try again when it works */
    self->cseg = seg;
    self->jgen ^= 1u; /* every live task is from before now */
    self->walk = 1;
    self->kwalk = NULL;
    self->phase = C_TASKS;
    self->compact_start_ms = tq_mono_ms();
    self->compact_from_bytes = tq_journal_bytes(self->j);
    tq_debug("journal compaction into segment %" PRIu64 ": %.1f MiB on disk, %.1f MiB live", seg,
             self->compact_from_bytes / 1048576.0, self->live_bytes / 1048576.0);
}

/* Rewrite live tasks and keys for at most TQ_PERSIST_STEP_MS. */
static void compact_step(tq_persist_t *self)
{
    int64_t deadline = tq_mono_ms() + TQ_PERSIST_STEP_MS;
    uint64_t start = tq_journal_appended(self->j);
    unsigned n = 0;
    while (self->phase == C_TASKS) {
        tq_task_t *t = self->walk ? tq_store_from(self->store, self->walk) : NULL;
        if (!t) {
            self->phase = C_KEYS;
            self->kwalk = tq_store_key_first(self->store);
            break;
        }
        self->walk = t->id + 1; /* 0 (the end) after the largest id */
        if (t->jsize && t->jgen != self->jgen)
            put_task(self, t);
        if ((++n & 127) == 0 &&
            (tq_mono_ms() >= deadline || tq_journal_appended(self->j) - start >= STEP_MAX_BYTES))
            return;
    }
    while (self->phase == C_KEYS) {
        tq_key_t *k = self->kwalk;
        if (!k) {
            put_paused_set(self); /* the older segments' marks go with them */
            tq_items_each(tq_engine_items(self->engine), put_item_cb, self); /* and items */
            tq_journal_drop_before(self->j, self->cseg);
            self->phase = C_DROPPING;
            self->compactions++;
            break;
        }
        self->kwalk = tq_key_next(k);
        put_key(self, k);
        if ((++n & 127) == 0 && tq_mono_ms() >= deadline)
            return;
    }
}

void tq_persist_tick(tq_persist_t *self, int64_t now_ms)
{
    tq_journal_tick(self->j, now_ms);
    if (self->phase == C_IDLE) {
        uint64_t bytes = tq_journal_bytes(self->j);
        int failed = tq_journal_failed(self->j);
        /* The disk is full: compaction is what frees room, whatever the
         * journal's size (the reserve given back leaves room for it). */
        if (failed == ENOSPC
                ? bytes > self->live_bytes * 2 + TQ_PERSIST_COMPACT_SLACK
                : !failed && bytes > TQ_PERSIST_COMPACT_MIN && self->live_bytes * 2 < bytes)
            compact_start(self);
    }
    if (self->phase == C_TASKS || self->phase == C_KEYS)
        compact_step(self);
}

int tq_persist_busy(const tq_persist_t *self)
{
    return self->phase == C_TASKS || self->phase == C_KEYS;
}

void tq_persist_stats(const tq_persist_t *self, tq_persist_stats_t *out)
{
    out->bytes = tq_journal_bytes(self->j);
    out->live_bytes = self->live_bytes;
    out->compactions = self->compactions;
    out->records = self->records;
    out->fsync = tq_fsync_mode_name(self->mode);
    out->failed = tq_journal_failed(self->j);
    tq_journal_sync_stats(self->j, &out->sync);
}
