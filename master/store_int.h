/* store_int.h - the store's insides, shared by store.c and store_keys.c
 * (not for other modules: they use store.h). */
#ifndef TQ_MASTER_STORE_INT_H
#define TQ_MASTER_STORE_INT_H

#include "slab.h"
#include "store.h"
#include "taskidx.h"

/* The binary heap of queued tasks of one (queue, function) pair. */
struct tq_fnheap {
    const char *fn;
    tq_queue_t *queue;
    tq_task_t **items;
    size_t n, cap;
    uint32_t nclasses; /* task classes on it: the heap is in use while > 0 */
};

struct tq_queue {
    const char *name;
    tq_fnheap_t **heaps;
    size_t nheaps;
    size_t queued_total; /* runnable: in the heaps */
    tq_queue_counts_t counts;
    tq_queue_counts_t *all; /* the store's sum over all queues */
    int paused;
    uint32_t default_timeout_ms;
};

/* A min-heap of tasks on a time (lease deadlines, delays): key reads the
 * time, get/set the task's index in the heap. */
typedef struct {
    tq_task_t **a;
    size_t n, cap;
    int64_t (*key)(const tq_task_t *);
    size_t (*get)(const tq_task_t *);
    void (*set)(tq_task_t *, size_t);
} theap_t;

/* Interned name: the string, and the queue of that name if one exists.
 * A name is in use while it has a queue, is the function of a heap, or
 * a worker declares it; tq_store_gc frees the others. */
typedef struct {
    char *name;
    size_t len;
    uint64_t hash;
    tq_queue_t *queue;
    uint32_t fn_heaps; /* heaps (of any queue) for this function */
    uint32_t holds;    /* tq_store_name_hold: workers declaring it */
} name_ent_t;

typedef struct {
    tq_task_t *head, *tail;
} ttl_list_t;

/* A retained idempotency key -> task id, with its own expiry. Entries
 * sit on one list in creation order (the retention is fixed for a run,
 * so the list is sorted by expiry up to wall clock steps) and in a
 * chained hash. */
typedef struct tq_key {
    struct tq_key *hnext;       /* hash chain */
    struct tq_key *prev, *next; /* expiry list */
    uint64_t hash;
    uint64_t id;
    int64_t expires_ms; /* wall clock */
    size_t len;
    uint8_t key[];
} key_ent_t;

/* The common beginning of session keys longer than TQ_KEY_TAIL bytes
 * (a client's session id), held once and counted (see store_keys.c). */
typedef struct {
    uint64_t hash; /* FNV-1a of the bytes: the key hash continues from it */
    uint32_t refs;
    uint32_t len;
    uint8_t b[];
} stem_t;

/* A session key of up to TQ_KEY_TAIL bytes is kept whole in its task;
 * a longer one as a stem index (u32) and its last TQ_KEY_TAIL bytes. */
#define TQ_KEY_TAIL 8

typedef struct {
    /* retained keys */
    key_ent_t **buckets; /* capacity a power of two */
    size_t nret, cap;
    key_ent_t *head, *tail;
    /* session keys: open addressing of tasks, capacity a power of two */
    tq_task_t **stab;
    size_t nsess, scap;
    /* stems: stems[1..nstems) (0 = none), free slots in sfree */
    stem_t **stems;
    size_t nstems, stems_cap;
    uint32_t *sfree;
    size_t nsfree;
    uint32_t *shash; /* open addressing of stem indices */
    size_t nshash, shcap;
} keys_t;

struct tq_store {
    tq_store_cfg_t cfg;
    tq_taskidx_t *tasks;
    tq_slab_t *slab;
    uint64_t next_id;
    name_ent_t *names; /* open addressing, capacity a power of two */
    size_t nnames, names_cap;
    tq_queue_t **queues;
    size_t nqueues;
    size_t gc_queue, gc_name; /* tq_store_gc's cursors */
    tq_tclass_t **classes;    /* open addressing, capacity a power of two */
    size_t nclasses, classes_cap;
    ttl_list_t unfetched, fetched;
    keys_t keys;
    tq_store_task_fn obs;
    tq_store_key_fn kobs;
    void *obs_arg;
    theap_t dl;      /* leased tasks by deadline_ms */
    theap_t delayed; /* queued tasks not runnable yet, by not_before_ms */
    ttl_list_t dead; /* dead tasks, in the order they died */
    tq_store_totals_t totals;
    tq_queue_counts_t all_counts; /* every queue's counts, summed */
};

/* ---- store_queues.c ---- */
/* The entry for name, created if absent; NULL when the table is full. */
name_ent_t *store_name_entry(tq_store_t *self, tq_bytes_t name);
/* The queue of name entry e, created if absent. */
tq_queue_t *store_queue_get(tq_store_t *self, name_ent_t *e);
/* The entry of an interned name, or NULL (not interned). */
name_ent_t *store_name_find(const tq_store_t *self, tq_bytes_t name);
/* q's heap for interned fn, created if absent. */
tq_fnheap_t *store_queue_heap(tq_store_t *self, tq_queue_t *q, const char *fn);

/* A counted reference to the class (heap, priority, timeout_ms),
 * created if new. */
tq_tclass_t *store_tclass_ref(tq_store_t *self, tq_fnheap_t *heap, int32_t priority,
                              uint32_t timeout_ms);
/* Drop a reference; the class goes with the last. */
void store_tclass_unref(tq_store_t *self, tq_tclass_t *c);
/* Free the class table (at destroy, after every task). */
void store_tclass_free(tq_store_t *self);

/* ---- store_heap.c ---- */
/* 1 if a runs before b: higher priority, then lower id. */
int fnheap_before(const tq_task_t *a, const tq_task_t *b);
void fnheap_push(tq_fnheap_t *h, tq_task_t *t);
void fnheap_remove(tq_fnheap_t *h, tq_task_t *t);
void theap_push(theap_t *h, tq_task_t *t);
void theap_remove(theap_t *h, tq_task_t *t);
tq_task_t *theap_top(const theap_t *h);

/* ---- store_keys.c ---- */
/* Bytes a session key of len bytes takes in its task record. */
size_t keys_part_size(size_t len);
/* Keys held now (retained and session). */
size_t keys_count(const tq_store_t *self);
/* The task holding session key key, or NULL. */
tq_task_t *keys_session_find(const tq_store_t *self, tq_bytes_t key);
/* The retained entry for key, or NULL. */
key_ent_t *keys_retained_find(const tq_store_t *self, tq_bytes_t key);
/* Make room for a new key: a retained entry for the same key (past its
 * retention: the caller checked) is deleted. Returns 0, or -1 with err
 * filled: TQ_ERR_FULL (max_tasks keys held) or TQ_ERR_INTERNAL (a
 * session key still held: the caller looks keys up first). */
int keys_prepare(tq_store_t *self, tq_bytes_t key, tq_err_t *err);
/* Fill err with TQ_ERR_FULL "master is full: ..." (max_tasks tasks or
 * keys held); returns -1. */
int store_full(const tq_store_t *self, tq_err_t *err);
/* A fresh retained entry (not held anywhere yet), or NULL on OOM. */
key_ent_t *keys_retained_new(tq_bytes_t key);
/* Hold e (id and expiry set): hash and expiry list. */
void keys_retained_insert(tq_store_t *self, key_ent_t *e);
/* Tell the observer, unhold and free e. */
void keys_retained_delete(tq_store_t *self, key_ent_t *e);
/* Hold key (1..TQ_MAX_KEY bytes, t->skey_len) as t's session key: its
 * part of t's record is written, t enters the session table. */
void keys_session_attach(tq_store_t *self, tq_task_t *t, tq_bytes_t key);
/* Drop t's session key (F_SKEY set). */
void keys_session_detach(tq_store_t *self, tq_task_t *t);
/* Free everything keys hold. */
void keys_free(tq_store_t *self);

#endif
