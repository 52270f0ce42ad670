/* cfn.c - calling a C task function and the result builder it uses. */
#include "cfn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_proto.h"

struct taskq_result {
    const tq_run_ctx_t *ctx;
    const tq_cfn_task_t *task;
    uint8_t *data; /* the result being built */
    size_t len, cap;
    int oversize; /* a result over ctx->max_result was asked for */
    int failed;   /* taskq_result_error was called */
    int oom;      /* a copy could not be allocated */
    char error[TQ_CFN_ERROR_MAX];
};

/* Make room for len bytes in r->data; 0 or -1 (too large, out of memory). */
static int reserve(taskq_result_t *r, size_t len)
{
    if (len > r->ctx->max_result) {
        r->oversize = 1;
        return -1;
    }
    if (len <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < len)
        cap = cap > SIZE_MAX / 2 ? len : cap * 2;
    if (cap > r->ctx->max_result)
        cap = r->ctx->max_result;
    uint8_t *p = realloc(r->data, cap);
    if (!p) {
        r->oom = 1;
        return -1;
    }
    r->data = p;
    r->cap = cap;
    return 0;
}

int taskq_result_set(taskq_result_t *out, const void *data, size_t len)
{
    if (!out || (!data && len))
        return -1;
    out->len = 0;
    return taskq_result_append(out, data, len);
}

int taskq_result_append(taskq_result_t *out, const void *data, size_t len)
{
    if (!out || (!data && len))
        return -1;
    if (len > SIZE_MAX - out->len || reserve(out, out->len + len) < 0)
        return -1;
    if (len)
        memcpy(out->data + out->len, data, len);
    out->len += len;
    return 0;
}

int taskq_result_printf(taskq_result_t *out, const char *fmt, ...)
{
    if (!out || !fmt)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char small[512];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return taskq_result_error(out, "taskq_result_printf: bad format");
    if ((size_t)n < sizeof small)
        return taskq_result_set(out, small, (size_t)n);
    size_t want = (size_t)n < TQ_CFN_PRINTF_MAX ? (size_t)n : TQ_CFN_PRINTF_MAX - 1;
    char *big = malloc(want + 1);
    if (!big) {
        out->oom = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(big, want + 1, fmt, ap);
    va_end(ap);
    int rc = taskq_result_set(out, big, want);
    free(big);
    return rc;
}

int taskq_result_error(taskq_result_t *out, const char *fmt, ...)
{
    if (!out)
        return -1;
    out->failed = 1;
    if (!fmt) {
        out->error[0] = '\0';
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(out->error, sizeof out->error, "taskq_result_error: bad format");
    return -1;
}

int taskq_result_cancelled(const taskq_result_t *out)
{
    if (!out)
        return 0;
    const tq_run_ctx_t *c = out->ctx;
    if (out->task->cancel && atomic_load(out->task->cancel) != 0)
        return 1;
    return c->deadline_ms > 0 && tq_run_now_ms() >= c->deadline_ms;
}

int taskq_result_cancel_fd(const taskq_result_t *out) { return out ? out->ctx->cancel_fd : -1; }

int64_t taskq_result_remaining_ms(const taskq_result_t *out)
{
    if (!out || out->ctx->deadline_ms <= 0)
        return -1;
    int64_t left = out->ctx->deadline_ms - tq_run_now_ms();
    return left > 0 ? left : 0;
}

uint64_t taskq_result_task_id(const taskq_result_t *out) { return out ? out->task->id : 0; }

uint32_t taskq_result_attempt(const taskq_result_t *out) { return out ? out->task->attempt : 0; }

int taskq_result_slot(const taskq_result_t *out) { return out ? out->task->slot : -1; }

void *taskq_result_slot_ctx(const taskq_result_t *out) { return out ? out->task->slot_ctx : NULL; }

void tq_cfn_run(const tq_fn_t *fn, const tq_run_ctx_t *ctx, const tq_cfn_task_t *task,
                tq_run_result_t *out)
{
    /* About 8 KiB on the slot's stack for the error text: slots are our
     * own threads with the default (8 MiB) stack. */
    taskq_result_t r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.task = task;
    int rc = fn->cfn(ctx->payload, ctx->len, &r, fn->arg);

    if (ctx->deadline_ms > 0 && tq_run_now_ms() >= ctx->deadline_ms)
        tq_run_result_timeout(out, ctx);
    else if (r.oversize)
        tq_run_result_fmt(out, TQ_RUN_FAILED, "result exceeds max payload (%zu bytes)",
                          ctx->max_result);
    else if (r.oom)
        tq_run_result_fmt(out, TQ_RUN_FAILED, "%s: worker out of memory for the result", fn->name);
    else if (r.failed)
        tq_run_result_set(out, TQ_RUN_FAILED, r.error, strlen(r.error));
    else if (rc != 0)
        tq_run_result_fmt(out, TQ_RUN_FAILED, "%s: failed (returned %d)", fn->name, rc);
    else {
        /* Hand the buffer over instead of copying it. */
        tq_run_result_free(out);
        out->status = TQ_RUN_OK;
        out->data = r.data ? r.data : malloc(1);
        if (!out->data)
            abort(); /* one byte: an internal allocation */
        out->len = r.len;
        r.data = NULL;
    }
    free(r.data);
}
