/* plugin.c - dlopen a worker plugin and find its entry point. */
#include "plugin.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(taskq_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(taskq_error_t *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = TASKQ_ERR_ENV;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int tq_plugin_check_abi(const char *path, int abi, taskq_error_t *err)
{
    if (abi == TASKQ_WORKER_ABI)
        return 0;
    return fail(err, "plugin %s: built for worker ABI %d, this worker has ABI %d", path, abi,
                TASKQ_WORKER_ABI);
}

void *tq_plugin_open(const char *path, taskq_plugin_init_fn *init_out, taskq_error_t *err)
{
    if (!path || !*path) {
        fail(err, "plugin: empty path");
        return NULL;
    }
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        fail(err, "plugin %s: cannot load: %s", path, why ? why : "unknown error");
        return NULL;
    }
    dlerror();
    const int *abi = dlsym(h, TASKQ_PLUGIN_ABI_SYMBOL);
    if (!abi) {
        fail(err, "plugin %s: no %s symbol (not a taskq plugin?)", path,
             TASKQ_PLUGIN_ABI_SYMBOL);
        dlclose(h);
        return NULL;
    }
    if (tq_plugin_check_abi(path, *abi, err) < 0) {
        dlclose(h);
        return NULL;
    }
    /* POSIX dlsym returns a data pointer; converting it to a function
     * pointer goes through memcpy to stay within ISO C. */
    void *sym = dlsym(h, TASKQ_PLUGIN_INIT_SYMBOL);
    if (!sym) {
        fail(err, "plugin %s: no %s symbol (not a taskq plugin?)", path,
             TASKQ_PLUGIN_INIT_SYMBOL);
        dlclose(h);
        return NULL;
    }
    taskq_plugin_init_fn init;
    memcpy(&init, &sym, sizeof init);
    *init_out = init;
    return h;
}
