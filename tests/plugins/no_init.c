/* no_init.c - a shared object with the ABI symbol but no entry point
 * (test_plugin). */
#include <taskq.h>

TASKQ_API extern const int taskq_plugin_abi;
TASKQ_API const int taskq_plugin_abi = TASKQ_WORKER_ABI;
