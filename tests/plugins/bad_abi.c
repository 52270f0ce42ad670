/* bad_abi.c - a plugin that declares another worker ABI (test_plugin). */
#include <taskq.h>

TASKQ_API extern const int taskq_plugin_abi;
TASKQ_API const int taskq_plugin_abi = TASKQ_WORKER_ABI + 41;

TASKQ_API int taskq_plugin_init(taskq_worker_t *w, int abi, taskq_error_t *err);
TASKQ_API int taskq_plugin_init(taskq_worker_t *w, int abi, taskq_error_t *err)
{
    (void)w;
    (void)abi;
    (void)err;
    return -1;
}
