/* inspect_api.c - libtaskq's inspection calls (taskq_show, taskq_list):
 * each builds one ADMIN request (proto/PROTOCOL.md "show", "list",
 * "failed") and sends it through taskq_admin, which owns the blocking
 * round trip, the reconnects and the error rules. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "taskq.h"
#include "tq_limits.h"
#include "tqerr.h"

/* Send req (consumed) with taskq_admin. */
static int send_req(taskq_t *self, cJSON *req, int timeout_ms, char **reply_json,
                    taskq_error_t *err)
{
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!text)
        return tq_api_fail(err, TASKQ_ERR_INTERNAL, "out of memory");
    int rc = taskq_admin(self, text, timeout_ms, reply_json, err);
    free(text);
    return rc;
}

/* An id as an exact JSON number (cJSON prints doubles). */
static void add_id(cJSON *arr_or_obj, const char *name, uint64_t id)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, id);
    cJSON *v = cJSON_CreateRaw(buf);
    if (name)
        cJSON_AddItemToObject(arr_or_obj, name, v);
    else
        cJSON_AddItemToArray(arr_or_obj, v);
}

int taskq_show(taskq_t *self, const uint64_t *ids, size_t n, int with_payload, int timeout_ms,
               char **reply_json, taskq_error_t *err)
{
    *reply_json = NULL;
    if (!ids || n == 0 || n > TQ_MAX_SHOW_IDS)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "taskq_show: 1..%d ids", TQ_MAX_SHOW_IDS);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "op", "show");
    cJSON *arr = cJSON_AddArrayToObject(req, "ids");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0) {
            cJSON_Delete(req);
            return tq_api_fail(err, TASKQ_ERR_USAGE, "taskq_show: task ids are positive");
        }
        add_id(arr, NULL, ids[i]);
    }
    cJSON_AddBoolToObject(req, "payload", with_payload != 0);
    return send_req(self, req, timeout_ms, reply_json, err);
}

int taskq_list(taskq_t *self, const taskq_list_opts_t *opts, int timeout_ms, char **reply_json,
               taskq_error_t *err)
{
    *reply_json = NULL;
    taskq_list_opts_t none;
    memset(&none, 0, sizeof none);
    if (!opts)
        opts = &none;
    if (opts->limit > TQ_MAX_ADMIN_LIST)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "taskq_list: limit is at most %d",
                           TQ_MAX_ADMIN_LIST);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "op", "list");
    if (opts->queue)
        cJSON_AddStringToObject(req, "queue", opts->queue);
    if (opts->fn)
        cJSON_AddStringToObject(req, "fn", opts->fn);
    if (opts->state)
        cJSON_AddStringToObject(req, "state", opts->state);
    if (opts->limit)
        cJSON_AddNumberToObject(req, "limit", (double)opts->limit);
    if (opts->after)
        add_id(req, "after", opts->after);
    return send_req(self, req, timeout_ms, reply_json, err);
}
