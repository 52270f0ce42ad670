/* cfn_test.c - the result builder and how a C function's outcome is
 * decided (tq_cfn_run), and the plugin ABI check. */
#include <stdlib.h>
#include <string.h>

#include "cfn.h"
#include "plugin.h"
#include "tq_proto.h"
#include "tq_test.h"

static int f_printf(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    return taskq_result_printf(out, "got %.*s", (int)len, (const char *)p);
}

static int f_append(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        if (taskq_result_append(out, p, len) < 0)
            return -1;
    return 0;
}

static int f_big(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    static char buf[200];
    memset(buf, 'x', sizeof buf);
    CHECK_EQ_INT(taskq_result_set(out, buf, sizeof buf), -1);
    return 0;
}

static int f_error_then_set(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    taskq_result_error(out, "bad input %zu", len);
    taskq_result_set(out, p, len);
    return 0;
}

static int f_rc(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    return *(int *)arg;
}

static int f_info(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    return taskq_result_printf(out, "%llu/%u/%d/%s/%d/%lld",
                               (unsigned long long)taskq_result_task_id(out),
                               (unsigned)taskq_result_attempt(out), taskq_result_slot(out),
                               (const char *)taskq_result_slot_ctx(out),
                               taskq_result_cancelled(out),
                               (long long)taskq_result_remaining_ms(out));
}

/* Run fn on payload; returns the status with the text in buf. */
static int run_task(taskq_fn fn, void *arg, tq_run_ctx_t *ctx, const tq_cfn_task_t *task,
                    const char *payload, char *buf, size_t buflen)
{
    tq_fn_t f = {.name = "f", .cfn = fn, .arg = arg};
    tq_run_result_t r = {0};
    ctx->payload = (const uint8_t *)payload;
    ctx->len = strlen(payload);
    tq_cfn_run(&f, ctx, task, &r);
    snprintf(buf, buflen, "%.*s", (int)r.len, (const char *)r.data);
    int st = r.status;
    tq_run_result_free(&r);
    return st;
}

static int run(taskq_fn fn, void *arg, tq_run_ctx_t *ctx, const char *payload, char *buf,
               size_t buflen)
{
    tq_cfn_task_t task = {.slot = -1};
    return run_task(fn, arg, ctx, &task, payload, buf, buflen);
}

static void test_outcomes(void)
{
    char b[512];
    tq_run_ctx_t ctx = {.cancel_fd = -1, .max_result = 100};

    CHECK_EQ_INT(run(f_printf, NULL, &ctx, "7", b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "got 7");
    CHECK_EQ_INT(run(f_append, NULL, &ctx, "ab", b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "ababab");
    /* over max_result (100): the task fails whatever it does next */
    CHECK_EQ_INT(run(f_big, NULL, &ctx, "", b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "result exceeds max payload (100 bytes)");
    CHECK_EQ_INT(run(f_append, NULL, &ctx, "0123456789012345678901234567890123456789", b, sizeof b),
                 TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "result exceeds max payload (100 bytes)");
    /* an error wins over a result */
    CHECK_EQ_INT(run(f_error_then_set, NULL, &ctx, "xyz", b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "bad input 3");
    int seven = 7, zero = 0;
    CHECK_EQ_INT(run(f_rc, &seven, &ctx, "", b, sizeof b), TQ_RUN_FAILED);
    CHECK_EQ_STR(b, "f: failed (returned 7)");
    CHECK_EQ_INT(run(f_rc, &zero, &ctx, "", b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "");
}

static void test_questions(void)
{
    char b[512];
    /* what a function may ask */
    atomic_int cancel;
    atomic_init(&cancel, 0);
    tq_run_ctx_t c2 = {.cancel_fd = -1, .max_result = 100};
    tq_cfn_task_t t2 = {.id = 42, .attempt = 3, .slot = 5, .slot_ctx = "sc", .cancel = &cancel};
    CHECK_EQ_INT(run_task(f_info, NULL, &c2, &t2, "", b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "42/3/5/sc/0/-1");
    atomic_store(&cancel, 1);
    CHECK_EQ_INT(run_task(f_info, NULL, &c2, &t2, "", b, sizeof b), TQ_RUN_OK);
    CHECK_EQ_STR(b, "42/3/5/sc/1/-1");
}

static void test_timeout_and_null(void)
{
    char b[512];
    /* returned after the deadline: a timeout, whatever it set */
    tq_run_ctx_t c3 = {.cancel_fd = -1,
                       .max_result = 100,
                       .timeout_ms = 1500,
                       .deadline_ms = tq_run_now_ms() - 1};
    CHECK_EQ_INT(run(f_printf, NULL, &c3, "1", b, sizeof b), TQ_RUN_TIMEOUT);
    CHECK_EQ_STR(b, "timed out after 1.5 s");

    /* NULL handling */
    CHECK_EQ_INT(taskq_result_set(NULL, "x", 1), -1);
    CHECK_EQ_INT(taskq_result_cancelled(NULL), 0);
    CHECK_EQ_INT(taskq_result_slot(NULL), -1);
}

static void test_plugin_errors(void)
{
    char b[512];
    tq_err_t err;
    CHECK_EQ_INT(tq_plugin_check_abi("p.so", TASKQ_WORKER_ABI, &err), 0);
    CHECK_EQ_INT(tq_plugin_check_abi("p.so", TASKQ_WORKER_ABI + 1, &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_ENV);
    snprintf(b, sizeof b, "plugin p.so: built for worker ABI %d, this worker has ABI %d",
             TASKQ_WORKER_ABI + 1, TASKQ_WORKER_ABI);
    CHECK_EQ_STR(err.msg, b);
    taskq_plugin_init_fn init = NULL;
    CHECK(tq_plugin_open("/nonexistent/p.so", &init, &err) == NULL);
    CHECK_EQ_INT(err.code, TASKQ_ERR_ENV);
    CHECK(strstr(err.msg, "plugin /nonexistent/p.so: cannot load: ") == err.msg);
}

int main(void)
{
    RUN(test_outcomes);
    RUN(test_questions);
    RUN(test_timeout_and_null);
    RUN(test_plugin_errors);
    TEST_MAIN_END();
}
