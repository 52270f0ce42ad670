/* plugin.h - loading a worker plugin (a shared object with the entry
 * point documented in taskq.h). */
#ifndef TQ_WORKERLIB_PLUGIN_H
#define TQ_WORKERLIB_PLUGIN_H

#include "taskq.h"
#include "tq_err.h"

/* dlopen path (RTLD_NOW | RTLD_LOCAL) and check that it is a plugin of
 * this ABI. Returns the handle with *init_out set to its
 * taskq_plugin_init; the caller calls it and later dlcloses the handle.
 * NULL with TASKQ_ERR_ENV in err (naming path) when it cannot be loaded,
 * lacks a symbol, or was built for another ABI. */
void *tq_plugin_open(const char *path, taskq_plugin_init_fn *init_out, tq_err_t *err);

/* Check a plugin's declared ABI against ours: 0, or -1 with err filled
 * (pure; split out for the unit test). */
int tq_plugin_check_abi(const char *path, int abi, tq_err_t *err);

#endif
