/* worker_test.c - the worker API's checks through libtaskq: options,
 * registration, plugins that cannot load, run's errors, stop before
 * run. No master is needed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "taskq.h"
#include "tq_test.h"

static int noop(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    (void)arg;
    return 0;
}

static taskq_worker_t *new_worker(void)
{
    taskq_error_t err;
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    o.endpoint = "tcp://127.0.0.1:1";
    o.slots = 2;
    o.log_level = TASKQ_LOG_ERROR;
    taskq_worker_t *w = taskq_worker_new(&o, &err);
    CHECK(w != NULL);
    return w;
}

static void test_options(void)
{
    taskq_error_t err;
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    o.endpoint = "http://x";
    CHECK(taskq_worker_new(&o, &err) == NULL);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);
    CHECK(strstr(err.message, "http://x") != NULL);
    o = (taskq_worker_opts_t)TASKQ_WORKER_OPTS_INIT;
    o.name = "has space";
    CHECK(taskq_worker_new(&o, &err) == NULL);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);
    o = (taskq_worker_opts_t)TASKQ_WORKER_OPTS_INIT;
    o.slots = 4097;
    CHECK(taskq_worker_new(&o, &err) == NULL);
    o = (taskq_worker_opts_t)TASKQ_WORKER_OPTS_INIT;
    o.log_level = 9;
    CHECK(taskq_worker_new(&o, &err) == NULL);
    /* NULL options: all defaults */
    taskq_worker_t *w = taskq_worker_new(NULL, &err);
    CHECK(w != NULL);
    taskq_worker_destroy(&w);
    CHECK(w == NULL);
    taskq_worker_destroy(NULL);
}

static int slot_init_ok(void *arg, int slot, void **ctx)
{
    (void)arg;
    (void)slot;
    *ctx = NULL;
    return 0;
}

static void test_register(void)
{
    taskq_error_t err;
    taskq_worker_t *w = new_worker();
    CHECK_EQ_INT(taskq_worker_add(w, "f", noop, NULL, &err), 0);
    CHECK_EQ_INT(taskq_worker_add(w, "f", noop, NULL, &err), -1);
    CHECK_EQ_STR(err.message, "function 'f' is already registered");
    CHECK_EQ_INT(taskq_worker_add(w, "bad name", noop, NULL, &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);
    CHECK_EQ_INT(taskq_worker_add(w, "", noop, NULL, &err), -1);
    CHECK_EQ_INT(taskq_worker_add(w, NULL, noop, NULL, &err), -1);
    CHECK_EQ_INT(taskq_worker_add(w, "g", NULL, NULL, &err), -1);
    taskq_fn_def_t d = TASKQ_FN_DEF_INIT;
    d.name = "h";
    d.fn = noop;
    d.mode = 7;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), -1);
    CHECK_EQ_STR(err.message, "function 'h': mode 7 is not supported");
    d.mode = TASKQ_MODE_THREAD;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), 0);

    CHECK_EQ_STR(taskq_worker_builtin(0), "square");
    CHECK_EQ_STR(taskq_worker_builtin(3), "fail");
    CHECK(taskq_worker_builtin(4) == NULL);
    CHECK_EQ_INT(taskq_worker_add_builtin(w, "square", &err), 0);
    CHECK_EQ_INT(taskq_worker_add_builtin(w, "cube", &err), -1);
    CHECK_EQ_INT(taskq_worker_add_command(w, "c", "cat 'x", &err), -1);
    CHECK_EQ_STR(err.message, "unterminated single quote");
    CHECK_EQ_INT(taskq_worker_add_command(w, "c", "cat", &err), 0);

    /* execution modes */
    d.name = "h2";
    d.mode = TASKQ_MODE_COPROCESS;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), -1);
    CHECK_EQ_STR(err.message, "function 'h2': coprocess is for commands; a C function runs as "
                              "thread, prefork, spawn or inline");
    d.mode = TASKQ_MODE_PREFORK;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), 0);
    CHECK_EQ_STR(taskq_mode_name(TASKQ_MODE_SPAWN), "spawn");
    CHECK_EQ_STR(taskq_mode_name(TASKQ_MODE_INLINE), "inline");
    CHECK_EQ_INT(taskq_mode_parse("inline"), TASKQ_MODE_INLINE);
    CHECK(taskq_mode_name(5) == NULL);
    CHECK(taskq_mode_name(-1) == NULL);
    CHECK_EQ_INT(taskq_mode_parse("coprocess"), TASKQ_MODE_COPROCESS);
    CHECK_EQ_INT(taskq_mode_parse("Thread"), -1);
    CHECK_EQ_INT(taskq_mode_parse(NULL), -1);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "c", TASKQ_MODE_COPROCESS, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "c", TASKQ_MODE_THREAD, &err), -1);
    CHECK_EQ_STR(err.message,
                 "function 'c' is a command: its mode is spawn or coprocess, not thread");
    CHECK_EQ_INT(taskq_worker_set_mode(w, "square", TASKQ_MODE_SPAWN, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "square", TASKQ_MODE_COPROCESS, &err), -1);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "nosuch", TASKQ_MODE_SPAWN, &err), -1);
    CHECK_EQ_STR(err.message, "function 'nosuch' is not registered");
    CHECK_EQ_INT(taskq_worker_set_mode(w, "h", 9, &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);
    /* inline: no slots, so no per-slot state; the blocking built-in
     * cannot run inline */
    d.name = "h3";
    d.mode = TASKQ_MODE_INLINE;
    d.slot_init = slot_init_ok;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), -1);
    CHECK_EQ_STR(err.message, "function 'h3': inline mode has no slots, so no slot_init/slot_fini");
    d.slot_init = NULL;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), 0);
    d.name = "h4";
    d.mode = TASKQ_MODE_THREAD;
    d.slot_init = slot_init_ok;
    CHECK_EQ_INT(taskq_worker_add_def(w, &d, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "h4", TASKQ_MODE_INLINE, &err), -1);
    CHECK_EQ_STR(err.message, "function 'h4' has slot_init/slot_fini: inline mode has no slots");
    CHECK_EQ_INT(taskq_worker_add_builtin(w, "sleep", &err), 0);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "sleep", TASKQ_MODE_INLINE, &err), -1);
    CHECK_EQ_STR(err.message,
                 "built-in 'sleep' blocks: it cannot run inline (thread, prefork or spawn)");
    CHECK_EQ_INT(taskq_worker_set_mode(w, "square", TASKQ_MODE_INLINE, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_mode(w, "c", TASKQ_MODE_INLINE, &err), -1);
    CHECK_EQ_INT(taskq_worker_set_prefetch(w, 4096, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_prefetch(w, 4097, &err), -1);
    CHECK_EQ_STR(err.message, "prefetch: 4097 is more than 4096");
    CHECK_EQ_INT(taskq_worker_set_prefetch(NULL, 1, &err), -1);
    CHECK_EQ_INT(taskq_worker_set_limits(w, 64u << 20, 10, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_limits(w, 0, 0, &err), 0);
    CHECK_EQ_INT(taskq_worker_set_limits(w, 1000, 0, &err), -1);
    CHECK_EQ_INT(taskq_worker_set_limits(w, 0, 86401, &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);

    /* at most 256 functions */
    char name[16];
    int rc = 0;
    for (int i = 0; i < 300 && rc == 0; i++) {
        snprintf(name, sizeof name, "n%d", i);
        rc = taskq_worker_add(w, name, noop, NULL, &err);
    }
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_STR(err.message, "at most 256 functions");
    taskq_worker_destroy(&w);
}

static void test_plugins_and_run(void)
{
    taskq_error_t err;
    taskq_worker_t *w = new_worker();
    CHECK_EQ_INT(taskq_worker_load_plugin(w, "/nonexistent.so", &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_ENV);
    CHECK(strstr(err.message, "plugin /nonexistent.so: cannot load") == err.message);
    /* run: no functions, no key, bad key */
    CHECK_EQ_INT(taskq_worker_run(w, &err), -1);
    CHECK_EQ_STR(err.message, "no functions registered");
    CHECK_EQ_INT(taskq_worker_add(w, "f", noop, NULL, &err), 0);
    CHECK_EQ_INT(taskq_worker_run(w, &err), -1);
    CHECK_EQ_STR(err.message, "no authkey file given");
    taskq_worker_destroy(&w);

    char dir[] = "/tmp/tq-worker-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char key[64];
    snprintf(key, sizeof key, "%s/key", dir);
    int fd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK_EQ_INT(write(fd, "0123456789abcdef-secret\n", 24), 24);
    close(fd);
    chmod(key, 0644);
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    o.endpoint = "tcp://127.0.0.1:1";
    o.authkey_file = key;
    o.slots = 2;
    o.log_level = TASKQ_LOG_ERROR;
    w = taskq_worker_new(&o, &err);
    CHECK_EQ_INT(taskq_worker_add(w, "f", noop, NULL, &err), 0);
    CHECK_EQ_INT(taskq_worker_run(w, &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_ENV);
    taskq_worker_destroy(&w);

    /* stopped before it runs: run drains at once and returns 0 */
    chmod(key, 0600);
    w = taskq_worker_new(&o, &err);
    CHECK_EQ_INT(taskq_worker_add(w, "f", noop, NULL, &err), 0);
    taskq_worker_stop(w);
    CHECK_EQ_INT(taskq_worker_run(w, &err), 0);
    CHECK_EQ_INT(taskq_worker_run(w, &err), -1);
    CHECK_EQ_STR(err.message, "a worker runs once");
    CHECK_EQ_INT(taskq_worker_add(w, "g", noop, NULL, &err), -1);
    CHECK_EQ_INT(taskq_worker_load_plugin(w, "/x.so", &err), -1);
    CHECK_EQ_INT(err.code, TASKQ_ERR_USAGE);
    taskq_worker_destroy(&w);
    unlink(key);
    rmdir(dir);
}

int main(void)
{
    RUN(test_options);
    RUN(test_register);
    RUN(test_plugins_and_run);
    TEST_MAIN_END();
}
