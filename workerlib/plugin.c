/* plugin.c - dlopen a worker plugin and find its entry point. */
#include "plugin.h"

#include <dlfcn.h>
#include <string.h>

#include "taskq.h"

int tq_plugin_check_abi(const char *path, int abi, tq_err_t *err)
{
    if (abi == TASKQ_WORKER_ABI)
        return 0;
    return tq_err_set(err, TASKQ_ERR_ENV,
                      "plugin %s: built for worker ABI %d, this worker has ABI %d", path, abi,
                      TASKQ_WORKER_ABI);
}

void *tq_plugin_open(const char *path, taskq_plugin_init_fn *init_out, tq_err_t *err)
{
    if (!path || !*path) {
        tq_err_set(err, TASKQ_ERR_ENV, "plugin: empty path");
        return NULL;
    }
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        tq_err_set(err, TASKQ_ERR_ENV, "plugin %s: cannot load: %s", path,
                   why ? why : "unknown error");
        return NULL;
    }
    dlerror();
    const int *abi = dlsym(h, TASKQ_PLUGIN_ABI_SYMBOL);
    if (!abi) {
        tq_err_set(err, TASKQ_ERR_ENV, "plugin %s: no %s symbol (not a taskq plugin?)", path,
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
        tq_err_set(err, TASKQ_ERR_ENV, "plugin %s: no %s symbol (not a taskq plugin?)", path,
                   TASKQ_PLUGIN_INIT_SYMBOL);
        dlclose(h);
        return NULL;
    }
    taskq_plugin_init_fn init;
    memcpy(&init, &sym, sizeof init);
    *init_out = init;
    return h;
}
