/* pool.c - N slot threads fed by a mutex+condvar queue. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "builtins.h"
#include "cfn.h"
#include "child.h"
#include "reaper.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_tsan.h"
#include "tq_util.h"

typedef struct {
    tq_pool_t *pool;
    size_t index;
    int wake_fd; /* eventfd: readable when the running task is cancelled */
    pthread_t thread;
    int started;
    void **fn_ctx;        /* per function: slot_init's slot_ctx */
    unsigned char *fn_ok; /* per function: slot_init succeeded */
    tq_child_t **child;   /* per function: its child process (isolated modes) */
} slot_t;

struct tq_pool {
    void *zctx;
    int inline_fd; /* the cancel_fd of inline runs: never signalled */
    char endpoint[256];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tq_pool_task_t *head, *tail;
    int stopping;
    size_t nslots;  /* slot threads started */
    size_t active;  /* slots that take tasks: 0..active-1; the rest are
                        parked (tq_pool_resize) */
    slot_t **slots; /* TQ_MAX_SLOTS pointers, nslots made */
    const tq_fn_t *fns;
    size_t nfns;
};

/* The references to a lent result's bytes: the task's and one per
 * ZeroMQ frame sent from them. */
struct tq_result_box {
    atomic_int refs;
    uint8_t *data;
};

static void box_hold(void *hint) { atomic_fetch_add(&((struct tq_result_box *)hint)->refs, 1); }

static void box_release(void *data, void *hint)
{
    (void)data;
    struct tq_result_box *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

void tq_task_result_item(tq_pool_task_t *task, tq_out_t *out)
{
    tq_result_item_t r = {
        .id = task->id,
        .attempt = task->attempt,
        .status = (uint8_t)task->result.status,
        .data = {task->result.data, task->result.len},
    };
    tq_out_result_item(out, &r);
    if (task->result.len < TQ_LEND_MIN || !task->result.data)
        return;
    if (!task->result_box) {
        struct tq_result_box *b = malloc(sizeof *b);
        if (!b)
            return; /* copied, then */
        atomic_init(&b->refs, 1);
        b->data = task->result.data;
        task->result_box = b;
    }
    tq_out_lend(out, box_hold, box_release, task->result_box);
}

void tq_pool_task_free(tq_pool_task_t *task)
{
    if (!task)
        return;
    if (task->result_box) {
        box_release(NULL, task->result_box); /* ZeroMQ may still hold it */
        task->result.data = NULL;
    }
    if (task->payload_ref)
        tq_msgref_drop(task->payload_ref); /* from a slot thread, too */
    else
        free(task->payload);
    tq_run_result_free(&task->result);
    free(task);
}

static void drain_fd(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof v) > 0)
        ;
}

/* Run a C function on this slot: its slot_init first if the slot has
 * not initialised it yet (again after a failure). */
static void run_cfn(slot_t *slot, tq_pool_task_t *task, const tq_run_ctx_t *ctx)
{
    const tq_fn_t *fn = task->fn;
    size_t k = (size_t)(fn - slot->pool->fns);
    TQ_ASSERT(k < slot->pool->nfns);
    if (fn->slot_init && !slot->fn_ok[k]) {
        void *sc = NULL;
        if (fn->slot_init(fn->arg, (int)slot->index, &sc) != 0) {
            tq_run_result_fmt(&task->result, TQ_RUN_FAILED, "%s: slot initialisation failed",
                              fn->name);
            return;
        }
        slot->fn_ctx[k] = sc;
        slot->fn_ok[k] = 1;
    }
    tq_cfn_task_t info = {
        .id = task->id,
        .attempt = task->attempt,
        .slot = (int)slot->index,
        .slot_ctx = slot->fn_ctx[k],
        .cancel = &task->cancel,
    };
    tq_cfn_run(fn, ctx, &info, &task->result);
}

/* 1 if fn runs in a child process of this slot (prefork, spawn of a C
 * function or built-in, coprocess); a spawned command is tq_command_run. */
static int in_child(const tq_fn_t *fn)
{
    return tq_fn_forks(fn) || (fn->cmd && fn->mode == TASKQ_MODE_COPROCESS);
}

static void run_in_child(slot_t *slot, tq_pool_task_t *task, const tq_run_ctx_t *ctx)
{
    size_t k = (size_t)(task->fn - slot->pool->fns);
    TQ_ASSERT(k < slot->pool->nfns);
    if (!slot->child[k])
        slot->child[k] = tq_child_new(task->fn, (int)slot->index);
    if (!slot->child[k]) {
        tq_run_result_fmt(&task->result, TQ_RUN_FAILED, "worker out of memory");
        return;
    }
    tq_child_run(slot->child[k], ctx, task->id, task->attempt, &task->result);
}

static tq_run_ctx_t run_ctx(const tq_pool_task_t *task, int cancel_fd)
{
    return (tq_run_ctx_t){
        .payload = task->payload,
        .len = task->len,
        .cancel_fd = cancel_fd,
        .timeout_ms = task->timeout_ms,
        .deadline_ms = task->timeout_ms ? tq_run_now_ms() + task->timeout_ms : 0,
        .max_result = task->max_result,
        .limits = task->fn->limits,
    };
}

/* Run task in slot the way its function's mode says. */
static void run_task_in(slot_t *slot, tq_pool_task_t *task, const tq_run_ctx_t *ctx_p)
{
    tq_run_ctx_t ctx = *ctx_p;
    if (in_child(task->fn))
        run_in_child(slot, task, &ctx);
    else if (task->fn->cfn)
        run_cfn(slot, task, &ctx);
    else if (task->fn->cmd)
        tq_command_run(task->fn->cmd, &ctx, &task->result);
    else if (tq_builtin_run(task->fn->name, &ctx, &task->result) < 0)
        tq_run_result_fmt(&task->result, TQ_RUN_FAILED, "function '%s' is not served here",
                          task->fn->name);
}

static void run_task(slot_t *slot, tq_pool_task_t *task)
{
    tq_run_ctx_t ctx = run_ctx(task, slot->wake_fd);
    task->ran = 1;
    uint64_t token = tq_reaper_task_begin();
    run_task_in(slot, task, &ctx);
    /* Processes ran (a command, a child): kill what escaped them. */
    tq_reaper_task_end(token, in_child(task->fn) || task->fn->cmd != NULL);
}

static void *slot_main(void *arg)
{
    slot_t *slot = arg;
    tq_pool_t *pool = slot->pool;
    sigset_t all;

    /* Signals are the connection thread's business. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    void *push = zmq_socket(pool->zctx, ZMQ_PUSH);
    TQ_ASSERT(push);
    int linger = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    TQ_ASSERT(zmq_connect(push, pool->endpoint) == 0);

    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while ((!pool->head || slot->index >= pool->active) && !pool->stopping)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->stopping)
            break;
        tq_pool_task_t *task = pool->head;
        pool->head = task->next;
        if (!pool->head)
            pool->tail = NULL;
        task->next = NULL;
        /* Clear stale wake-ups before the task becomes cancellable here. */
        drain_fd(slot->wake_fd);
        task->slot = (int)slot->index;
        pthread_mutex_unlock(&pool->mu);

        if (atomic_load(&task->cancel) == TQ_POOL_CANCEL_NONE) {
            int64_t t0 = tq_mono_us();
            run_task(slot, task);
            task->run_us = tq_mono_us() - t0;
        }

        pthread_mutex_lock(&pool->mu);
        task->slot = -1;
        pthread_mutex_unlock(&pool->mu);
        /* After this send the task belongs to the connection thread again. */
        TQ_TSAN_RELEASE(task);
        while (zmq_send(push, &task, sizeof task, 0) < 0 && errno == EINTR)
            ;
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    zmq_close(push);
    for (size_t k = 0; k < pool->nfns; k++)
        tq_child_destroy(&slot->child[k]);
    for (size_t k = 0; k < pool->nfns; k++)
        if (slot->fn_ok[k] && pool->fns[k].slot_fini)
            pool->fns[k].slot_fini(pool->fns[k].arg, (int)slot->index, slot->fn_ctx[k]);
    return NULL;
}

void tq_pool_run_inline(tq_pool_t *self, tq_pool_task_t *task)
{
    TQ_ASSERT(task->fn->mode == TASKQ_MODE_INLINE);
    tq_run_ctx_t ctx = run_ctx(task, self->inline_fd);
    task->ran = 1;
    uint64_t token = tq_reaper_task_begin();
    if (task->fn->cfn) {
        tq_cfn_task_t info = {
            .id = task->id,
            .attempt = task->attempt,
            .slot = -1,
            .cancel = &task->cancel,
        };
        tq_cfn_run(task->fn, &ctx, &info, &task->result);
    } else if (tq_builtin_run(task->fn->name, &ctx, &task->result) < 0) {
        tq_run_result_fmt(&task->result, TQ_RUN_FAILED, "function '%s' is not served here",
                          task->fn->name);
    }
    tq_reaper_task_end(token, 0);
}

/* Free a slot whose thread is not running (joined, or never started). */
static void slot_free(slot_t *s)
{
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s->fn_ctx);
    free(s->fn_ok);
    free(s->child);
    free(s);
}

/* Start slot threads nslots..n-1 (the pool mutex held, or before any
 * slot runs) and make all n active. Returns 0, or -1 (logged) with the
 * slots that did start kept. */
static int add_slots(tq_pool_t *self, size_t n)
{
    size_t nfns = self->nfns;
    while (self->nslots < n) {
        size_t i = self->nslots;
        slot_t *s = tq_calloc(1, sizeof *s);
        s->pool = self;
        s->index = i;
        s->fn_ctx = tq_calloc(nfns ? nfns : 1, sizeof(void *));
        s->fn_ok = tq_calloc(nfns ? nfns : 1, 1);
        s->child = tq_calloc(nfns ? nfns : 1, sizeof(tq_child_t *));
        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake_fd < 0 || pthread_create(&s->thread, NULL, slot_main, s) != 0) {
            tq_error("cannot start slot %zu: %s", i, strerror(errno));
            slot_free(s);
            self->active = self->nslots;
            return -1;
        }
        s->started = 1;
        self->slots[self->nslots++] = s;
    }
    self->active = n;
    return 0;
}

tq_pool_t *tq_pool_new(void *zctx, const char *result_endpoint, size_t nslots, const tq_fn_t *fns,
                       size_t nfns)
{
    tq_pool_t *self = tq_calloc(1, sizeof *self);
    self->zctx = zctx;
    self->fns = fns;
    self->nfns = nfns;
    if (tq_strlcpy(self->endpoint, result_endpoint, sizeof self->endpoint) < 0 || nslots == 0) {
        free(self);
        return NULL;
    }
    self->inline_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->inline_fd < 0) {
        tq_error("cannot create an eventfd: %s", strerror(errno));
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    self->slots = tq_calloc(TQ_MAX_SLOTS, sizeof *self->slots);
    if (nslots > TQ_MAX_SLOTS || add_slots(self, nslots) < 0) {
        tq_pool_destroy(&self);
        return NULL;
    }
    return self;
}

void tq_pool_submit(tq_pool_t *self, tq_pool_task_t *task)
{
    task->next = NULL;
    task->slot = -1;
    pthread_mutex_lock(&self->mu);
    if (self->tail)
        self->tail->next = task;
    else
        self->head = task;
    self->tail = task;
    /* a parked slot may be the one woken: then wake them all */
    if (self->nslots > self->active)
        pthread_cond_broadcast(&self->cv);
    else
        pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
}

void tq_pool_cancel(tq_pool_t *self, tq_pool_task_t *task, int reason)
{
    int expected = TQ_POOL_CANCEL_NONE;
    atomic_compare_exchange_strong(&task->cancel, &expected, reason);
    pthread_mutex_lock(&self->mu);
    if (task->slot >= 0) {
        uint64_t one = 1;
        ssize_t w = write(self->slots[task->slot]->wake_fd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_unlock(&self->mu);
}

void tq_pool_cancel_queued(tq_pool_t *self, int reason)
{
    pthread_mutex_lock(&self->mu);
    for (tq_pool_task_t *t = self->head; t; t = t->next) {
        int expected = TQ_POOL_CANCEL_NONE;
        atomic_compare_exchange_strong(&t->cancel, &expected, reason);
    }
    pthread_mutex_unlock(&self->mu);
}

tq_pool_task_t *tq_pool_take_queued(tq_pool_t *self)
{
    pthread_mutex_lock(&self->mu);
    tq_pool_task_t *head = self->head;
    self->head = self->tail = NULL;
    pthread_mutex_unlock(&self->mu);
    return head;
}

int tq_pool_resize(tq_pool_t *self, size_t n)
{
    if (n == 0 || n > TQ_MAX_SLOTS)
        return -1;
    pthread_mutex_lock(&self->mu);
    int rc = 0;
    if (n > self->nslots)
        rc = add_slots(self, n);
    else
        self->active = n;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

size_t tq_pool_slots(tq_pool_t *self)
{
    pthread_mutex_lock(&self->mu);
    size_t n = self->active;
    pthread_mutex_unlock(&self->mu);
    return n;
}

void tq_pool_destroy(tq_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_pool_t *self = *self_p;
    pthread_mutex_lock(&self->mu);
    self->stopping = 1;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    for (size_t i = 0; i < self->nslots; i++) {
        if (self->slots[i]->started)
            pthread_join(self->slots[i]->thread, NULL);
        slot_free(self->slots[i]);
    }
    pthread_mutex_destroy(&self->mu);
    pthread_cond_destroy(&self->cv);
    close(self->inline_fd);
    free(self->slots);
    free(self);
    *self_p = NULL;
}
