/* cli_admin.c - the taskq commands for operators: dead and failed (list
 * the dead and the failed set), retry and purge (act on them), pause and
 * resume (a queue's dispatch), show and list (inspection), queue
 * empty|delete. Each is one or more ADMIN requests (proto/PROTOCOL.md)
 * through taskq_admin; the contract is docs/cli.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <sodium.h>

#include "cli.h"
#include "output.h"
#include "taskq.h"
#include "tq_exit.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_proto.h"
#include "tq_util.h"
#include "when.h"

/* Widest error text shown by `taskq dead` (the rest becomes "..."). */
#define DEAD_ERROR_SHOWN 400

/* Send req (consumed) and parse the reply. Returns the reply object
 * (caller deletes it), or NULL after printing the error, with *status
 * set to the exit status. */
static cJSON *admin(taskq_t *tq, cJSON *req, int *status)
{
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    TQ_ASSERT(text);
    char *reply = NULL;
    taskq_error_t e;
    int rc = taskq_admin(tq, text, tq_cli_request_ms(), &reply, &e);
    free(text);
    if (rc < 0) {
        *status = tq_cli_lib_error(&e);
        return NULL;
    }
    cJSON *j = cJSON_Parse(reply);
    free(reply);
    if (!j) { /* taskq_admin checked it already */
        fflush(stdout);
        fprintf(stderr, "taskq: the master's reply is not JSON\n");
        *status = TQ_EXIT_INTERNAL;
    }
    return j;
}

static int bad_reply(const char *what)
{
    fflush(stdout);
    fprintf(stderr, "taskq: the master's reply has no valid %s\n", what);
    return TQ_EXIT_INTERNAL;
}

/* A JSON number that is a task id (a positive integer). */
static int json_id(const cJSON *v, uint64_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 18446744073709549568.0 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return -1;
    *id = (uint64_t)v->valuedouble;
    return 0;
}

/* A task id as a JSON number written out in full. cJSON prints numbers
 * with 15 significant digits when that reads back the same, so an id
 * such as 1795309534193450 would become 1.79530953419345e+15: exact,
 * but not what a script expects an id to look like. */
static cJSON *json_exact_id(uint64_t id)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, id);
    cJSON *v = cJSON_CreateRaw(buf);
    TQ_ASSERT(v);
    return v;
}

/* --json output: the master's task object on one line, its id in full. */
static void print_json_task(cJSON *t, uint64_t id)
{
    cJSON_ReplaceItemInObjectCaseSensitive(t, "id", json_exact_id(id));
    char *line = cJSON_PrintUnformatted(t);
    TQ_ASSERT(line);
    printf("%s\n", line);
    free(line);
}

static int check_queue(const char *flag, const char *q)
{
    if (q && !tq_name_valid(tq_bytes_str(q)))
        return tq_cli_usage_error("%s: '%.80s' is not a valid queue name (1..%d of A-Z a-z 0-9 _ . "
                                  ": -)",
                                  flag, q, TQ_MAX_NAME);
    return 0;
}

/* ---- dead ----------------------------------------------------------------- */

/* One row of the text listing. */
static void print_dead_row(FILE *out, const cJSON *t, uint64_t id)
{
    char queue[TQ_MAX_NAME * 2 + 4], fn[TQ_MAX_NAME * 2 + 4], died[TQ_WHEN_UTC_LEN];
    char err[DEAD_ERROR_SHOWN];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, "queue");
    const char *s = cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : "default";
    tq_output_error_line(s, strlen(s), queue, sizeof queue);
    v = cJSON_GetObjectItemCaseSensitive(t, "fn");
    s = cJSON_IsString(v) ? v->valuestring : "-";
    tq_output_error_line(s, strlen(s), fn, sizeof fn);
    v = cJSON_GetObjectItemCaseSensitive(t, "attempts");
    double attempts = cJSON_IsNumber(v) ? v->valuedouble : 0;
    v = cJSON_GetObjectItemCaseSensitive(t, "finished_ms");
    tq_when_format_utc(cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15
                           ? (int64_t)v->valuedouble
                           : -1,
                       died, sizeof died);
    v = cJSON_GetObjectItemCaseSensitive(t, "error");
    const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(t, "error_base64");
    if (cJSON_IsString(v)) {
        tq_output_error_line(v->valuestring, strlen(v->valuestring), err, sizeof err);
    } else if (cJSON_IsString(b64)) {
        /* Not UTF-8 on the master's side: decode, then show it as wait does. */
        size_t blen = strlen(b64->valuestring), dlen = 0;
        unsigned char *bin = tq_malloc(blen / 4 * 3 + 3);
        if (sodium_base642bin(bin, blen / 4 * 3 + 3, b64->valuestring, blen, NULL, &dlen, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0)
            tq_output_error_line(bin, dlen, err, sizeof err);
        else
            snprintf(err, sizeof err, "-");
        free(bin);
    } else {
        snprintf(err, sizeof err, "-");
    }
    fprintf(out, "%-16" PRIu64 " %-12s %-12s %8.0f %-20s %s\n", id, queue, fn, attempts, died, err);
}

int tq_cli_run_dead(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    dead_settings_t *s = settings;
    /* `failed` lists the failed set the same way (ADMIN "failed"); its
     * pages continue from the master's "next_after" */
    int failed = strcmp(cmd->name, "failed") == 0;
    int status;
    if (argc > 0)
        return tq_cli_usage_error("%s: unexpected argument '%.64s'", cmd->name, argv[0]);
    if ((status = check_queue("--queue", s->queue)))
        return status;
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    /* Each page asks for the tasks after the last one listed. Every id
     * listed is remembered, so that a master repeating itself ends the
     * run instead of paging forever. */
    uint64_t after = 0, shown = 0;
    tq_idmap_t *seen = tq_idmap_new();
    status = TQ_EXIT_OK;
    for (;;) {
        cJSON *req = cJSON_CreateObject();
        TQ_ASSERT(req);
        cJSON_AddStringToObject(req, "op", failed ? "failed" : "dead");
        if (s->queue)
            cJSON_AddStringToObject(req, "queue", s->queue);
        cJSON_AddItemToObject(req, "after", json_exact_id(after));
        cJSON_AddNumberToObject(req, "limit", TQ_MAX_ADMIN_LIST);
        uint64_t after_sent = after;
        cJSON *rep = admin(tq, req, &status);
        if (!rep)
            break;
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(rep, "tasks");
        const cJSON *more = cJSON_GetObjectItemCaseSensitive(rep, "more");
        if (!cJSON_IsArray(tasks)) {
            cJSON_Delete(rep);
            status = bad_reply("\"tasks\" array");
            break;
        }
        cJSON *t; /* not const: --json rewrites its id */
        cJSON_ArrayForEach(t, tasks)
        {
            uint64_t id;
            if (json_id(cJSON_GetObjectItemCaseSensitive(t, "id"), &id) < 0 ||
                tq_idmap_get(seen, id)) {
                status = bad_reply("task id (or it listed one twice)");
                break;
            }
            tq_idmap_put(seen, id, (void *)1);
            after = id;
            if (s->json) {
                print_json_task(t, id);
            } else {
                if (shown == 0)
                    printf("%-16s %-12s %-12s %8s %-20s %s\n", "ID", "QUEUE", "FN", "ATTEMPTS",
                           failed ? "FAILED" : "DIED", "ERROR");
                print_dead_row(stdout, t, id);
            }
            shown++;
        }
        int again = cJSON_IsTrue(more) && cJSON_GetArraySize(tasks) > 0;
        if (failed) {
            uint64_t next;
            again = cJSON_IsTrue(more);
            if (again && (json_id(cJSON_GetObjectItemCaseSensitive(rep, "next_after"), &next) < 0 ||
                          next <= after_sent)) {
                cJSON_Delete(rep);
                status = bad_reply("\"next_after\"");
                break;
            }
            after = again ? next : after;
        }
        cJSON_Delete(rep);
        if (status != TQ_EXIT_OK || !again)
            break;
    }
    if (status == TQ_EXIT_OK && shown == 0 && !s->json)
        printf(failed ? "no failed tasks\n" : "no dead tasks\n");
    fflush(stdout);
    tq_idmap_destroy(&seen);
    taskq_close(&tq);
    return status;
}

/* ---- retry and purge --------------------------------------------------------- */

/* Print the per-id outcomes of one request (ids[0..n)) from its reply
 * items and fold them into *unknown / *not_dead. Returns 0 or an exit
 * status after printing what is wrong with the reply. */
static int print_items(const cJSON *rep, const uint64_t *ids, size_t n, const char *done_word,
                       int *unknown, int *not_dead)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(rep, "items");
    if (!cJSON_IsArray(items) || (size_t)cJSON_GetArraySize(items) != n)
        return bad_reply("\"items\" array (one per id)");
    const cJSON *it = items->child;
    for (size_t i = 0; i < n; i++, it = it->next) {
        uint64_t id;
        const cJSON *oc = cJSON_GetObjectItemCaseSensitive(it, "outcome");
        if (json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) < 0 || id != ids[i] ||
            !cJSON_IsString(oc))
            return bad_reply("\"items\" (in request order)");
        const char *what;
        if (strcmp(oc->valuestring, done_word) == 0) {
            what = done_word;
        } else if (strcmp(oc->valuestring, "not dead") == 0) {
            what = "not dead";
            *not_dead = 1;
        } else if (strcmp(oc->valuestring, "unknown") == 0) {
            what = "unknown";
            *unknown = 1;
        } else {
            return bad_reply("outcome");
        }
        printf("%" PRIu64 " %s\n", id, what);
    }
    return 0;
}

/* retry|purge --all --failed: page through the failed set (ADMIN
 * "failed", of queue if given) and send its ids in requests of at most
 * TQ_MAX_ADMIN_IDS; prints "N task(s) retried|purged". Returns the exit
 * status. */
static int fix_all_failed(taskq_t *tq, const char *op, const char *queue, const char *done_word)
{
    int status = TQ_EXIT_OK;
    uint64_t after = 0;
    double count = 0;
    uint64_t *ids = tq_malloc(TQ_MAX_ADMIN_LIST * sizeof *ids);
    for (int more = 1; more && status == TQ_EXIT_OK;) {
        cJSON *req = cJSON_CreateObject();
        TQ_ASSERT(req);
        cJSON_AddStringToObject(req, "op", "failed");
        if (queue)
            cJSON_AddStringToObject(req, "queue", queue);
        cJSON_AddItemToObject(req, "after", json_exact_id(after));
        cJSON_AddNumberToObject(req, "limit", TQ_MAX_ADMIN_LIST);
        cJSON *rep = admin(tq, req, &status);
        if (!rep)
            break;
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(rep, "tasks");
        uint64_t next = 0;
        more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "more"));
        if (!cJSON_IsArray(tasks) || cJSON_GetArraySize(tasks) > TQ_MAX_ADMIN_LIST ||
            (more && (json_id(cJSON_GetObjectItemCaseSensitive(rep, "next_after"), &next) < 0 ||
                      next <= after))) {
            cJSON_Delete(rep);
            status = bad_reply("\"tasks\" and \"next_after\"");
            break;
        }
        size_t n = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tasks)
        {
            if (json_id(cJSON_GetObjectItemCaseSensitive(t, "id"), &ids[n]) < 0) {
                status = bad_reply("task id");
                break;
            }
            n++;
        }
        cJSON_Delete(rep);
        after = next;
        if (status != TQ_EXIT_OK || n == 0)
            continue;
        req = cJSON_CreateObject();
        TQ_ASSERT(req);
        cJSON_AddStringToObject(req, "op", op);
        cJSON *arr = cJSON_AddArrayToObject(req, "ids");
        TQ_ASSERT(arr);
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, json_exact_id(ids[i]));
        rep = admin(tq, req, &status);
        if (!rep)
            break;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(rep, "count");
        if (cJSON_IsNumber(c) && c->valuedouble >= 0)
            count += c->valuedouble;
        else
            status = bad_reply("\"count\"");
        cJSON_Delete(rep);
    }
    free(ids);
    if (status == TQ_EXIT_OK)
        printf("%.0f task(s) %s\n", count, done_word);
    return status;
}

/* The task ids of the command line (when want_ids) and a connection:
 * NULL with *status set when either fails (nothing to free then). */
static taskq_t *ids_and_connect(const command_t *cmd, global_t *g, int argc, char **argv,
                                int want_ids, uint64_t **ids, size_t *n, int *status)
{
    if (want_ids && (*status = tq_cli_parse_ids(cmd->name, argc, argv, ids, n)))
        return NULL;
    taskq_t *tq = tq_cli_connect(g, status);
    if (!tq) {
        free(*ids);
        *ids = NULL;
        return NULL;
    }
    *status = TQ_EXIT_OK;
    return tq;
}

int tq_cli_run_fix(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    fix_settings_t *s = settings;
    int purge = strcmp(cmd->name, "purge") == 0;
    const char *done_word = purge ? "purged" : "retried";
    int status;
    uint64_t *ids = NULL;
    size_t n = 0;
    if (s->all && argc > 0)
        return tq_cli_usage_error("%s: give task IDs or --all, not both", cmd->name);
    if (s->queue && !s->all)
        return tq_cli_usage_error("%s: --queue goes with --all (IDs name their tasks already)",
                                  cmd->name);
    if (s->failed && !s->all)
        return tq_cli_usage_error("%s: --failed goes with --all (IDs name their tasks already)",
                                  cmd->name);
    if ((status = check_queue("--queue", s->queue)))
        return status;
    taskq_t *tq = ids_and_connect(cmd, g, argc, argv, !s->all, &ids, &n, &status);
    if (!tq)
        return status;
    if (s->all && s->failed) {
        status = fix_all_failed(tq, cmd->name, s->queue, done_word);
    } else if (s->all) {
        cJSON *req = cJSON_CreateObject();
        TQ_ASSERT(req);
        cJSON_AddStringToObject(req, "op", cmd->name);
        cJSON_AddTrueToObject(req, "all");
        if (s->queue)
            cJSON_AddStringToObject(req, "queue", s->queue);
        cJSON *rep = admin(tq, req, &status);
        if (rep) {
            const cJSON *count = cJSON_GetObjectItemCaseSensitive(rep, "count");
            if (cJSON_IsNumber(count) && count->valuedouble >= 0)
                printf("%.0f task(s) %s\n", count->valuedouble, done_word);
            else
                status = bad_reply("\"count\"");
            cJSON_Delete(rep);
        }
    } else {
        int unknown = 0, not_dead = 0;
        for (size_t off = 0; off < n && status == TQ_EXIT_OK; off += TQ_MAX_ADMIN_IDS) {
            size_t k = n - off < TQ_MAX_ADMIN_IDS ? n - off : TQ_MAX_ADMIN_IDS;
            cJSON *req = cJSON_CreateObject();
            TQ_ASSERT(req);
            cJSON_AddStringToObject(req, "op", cmd->name);
            cJSON *arr = cJSON_AddArrayToObject(req, "ids");
            TQ_ASSERT(arr);
            for (size_t i = 0; i < k; i++)
                cJSON_AddItemToArray(arr, json_exact_id(ids[off + i]));
            cJSON *rep = admin(tq, req, &status);
            if (!rep)
                break;
            status = print_items(rep, ids + off, k, done_word, &unknown, &not_dead);
            cJSON_Delete(rep);
        }
        if (status == TQ_EXIT_OK)
            status = unknown ? TQ_EXIT_NOT_FOUND : not_dead ? TQ_EXIT_REFUSED : TQ_EXIT_OK;
    }
    fflush(stdout);
    free(ids);
    taskq_close(&tq);
    return status;
}

/* ---- pause and resume ----------------------------------------------------------- */

int tq_cli_run_queue_op(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)settings;
    int pause = strcmp(cmd->name, "pause") == 0;
    int status;
    if (argc == 0)
        return tq_cli_usage_error("%s: no QUEUE given", cmd->name);
    if (argc > 1)
        return tq_cli_usage_error("%s: unexpected argument '%.64s' (one QUEUE)", cmd->name,
                                  argv[1]);
    if (!tq_name_valid(tq_bytes_str(argv[0])))
        return tq_cli_usage_error("%s: '%.80s' is not a valid queue name (1..%d of A-Z a-z 0-9 _ . "
                                  ": -)",
                                  cmd->name, argv[0], TQ_MAX_NAME);
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    cJSON *req = cJSON_CreateObject();
    TQ_ASSERT(req);
    cJSON_AddStringToObject(req, "op", cmd->name);
    cJSON_AddStringToObject(req, "queue", argv[0]);
    cJSON *rep = admin(tq, req, &status);
    if (rep) {
        const cJSON *changed = cJSON_GetObjectItemCaseSensitive(rep, "changed");
        status = TQ_EXIT_OK;
        if (!cJSON_IsBool(changed))
            status = bad_reply("\"changed\"");
        else if (cJSON_IsTrue(changed))
            printf("queue %s %s\n", argv[0], pause ? "paused" : "resumed");
        else
            printf("queue %s %s\n", argv[0], pause ? "was already paused" : "was not paused");
        cJSON_Delete(rep);
    }
    fflush(stdout);
    taskq_close(&tq);
    return status;
}

/* taskq worker quiet|stop NAME|ID: ADMIN "quiet" or "stop"; prints one
 * line per worker the master sent it to; exit 6 when none matched. */
int tq_cli_run_worker_op(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)settings;
    int status;
    if (argc == 0)
        return tq_cli_usage_error("%s: no action given (quiet NAME|ID or stop NAME|ID)", cmd->name);
    int stop = strcmp(argv[0], "stop") == 0;
    if (!stop && strcmp(argv[0], "quiet") != 0)
        return tq_cli_usage_error("%s: unknown action '%.64s' (quiet or stop)", cmd->name, argv[0]);
    if (argc < 2)
        return tq_cli_usage_error("%s %s: no worker NAME or ID given", cmd->name, argv[0]);
    if (argc > 2)
        return tq_cli_usage_error("%s %s: unexpected argument '%.64s' (one NAME or ID)", cmd->name,
                                  argv[0], argv[2]);
    if (!argv[1][0] || strlen(argv[1]) > TQ_MAX_PEER_NAME)
        return tq_cli_usage_error("%s %s: a worker NAME or ID is 1..%d bytes", cmd->name, argv[0],
                                  TQ_MAX_PEER_NAME);
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    cJSON *req = cJSON_CreateObject();
    TQ_ASSERT(req);
    cJSON_AddStringToObject(req, "op", stop ? "stop" : "quiet");
    cJSON_AddStringToObject(req, "worker", argv[1]);
    cJSON *rep = admin(tq, req, &status);
    if (rep) {
        const cJSON *ws = cJSON_GetObjectItemCaseSensitive(rep, "workers");
        const cJSON *w;
        status = TQ_EXIT_OK;
        if (!cJSON_IsArray(ws)) {
            status = bad_reply("\"workers\"");
        } else if (cJSON_GetArraySize(ws) == 0) {
            char shown[TQ_MAX_PEER_NAME * 4 + 8];
            tq_output_error_line(argv[1], strlen(argv[1]), shown, sizeof shown);
            fprintf(stderr, "taskq: no worker named or with id '%s' (see taskq workers)\n", shown);
            status = TQ_EXIT_NOT_FOUND;
        }
        cJSON_ArrayForEach(w, ws)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(w, "name");
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(w, "id");
            const cJSON *busy = cJSON_GetObjectItemCaseSensitive(w, "busy");
            char n[TQ_MAX_PEER_NAME * 4 + 8], i[64];
            const char *ns = cJSON_IsString(name) ? name->valuestring : "-";
            const char *is = cJSON_IsString(id) ? id->valuestring : "-";
            tq_output_error_line(ns, strlen(ns), n, sizeof n);
            tq_output_error_line(is, strlen(is), i, sizeof i);
            printf("worker %s (id %s) %s, %.0f task(s) running\n", n, i,
                   stop ? "stopping: it finishes its tasks and exits"
                        : "quiet: it finishes its tasks and takes no new ones",
                   cJSON_IsNumber(busy) ? busy->valuedouble : 0.0);
        }
        cJSON_Delete(rep);
    }
    fflush(stdout);
    taskq_close(&tq);
    return status;
}

/* ---- show, list, queue empty|delete --------------------------------------------- */

/* 1 when t has name or name_base64 (not null). */
static int jhas_any(const cJSON *t, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "%s_base64", name);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, name);
    return (v && !cJSON_IsNull(v)) || cJSON_GetObjectItemCaseSensitive(t, key);
}

/* A time field of a task object as UTC text, "-" when null. */
static void when_field(const cJSON *t, const char *name, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, name);
    if (cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 9e15)
        tq_when_format_utc((int64_t)v->valuedouble, out, size);
    else
        snprintf(out, size, "-");
}

/* A text field (name, or name_base64 decoded) on one line; "-" when
 * absent or null. */
static void text_field(const cJSON *t, const char *name, char *out, size_t size)
{
    char key[64];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, name);
    snprintf(key, sizeof key, "%s_base64", name);
    const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(t, key);
    if (cJSON_IsString(v)) {
        tq_output_error_line(v->valuestring, strlen(v->valuestring), out, size);
    } else if (cJSON_IsString(b64)) {
        size_t blen = strlen(b64->valuestring), dlen = 0;
        unsigned char *bin = tq_malloc(blen / 4 * 3 + 3);
        if (sodium_base642bin(bin, blen / 4 * 3 + 3, b64->valuestring, blen, NULL, &dlen, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0)
            tq_output_error_line(bin, dlen, out, size);
        else
            snprintf(out, size, "-");
        free(bin);
    } else {
        snprintf(out, size, "-");
    }
    snprintf(key, sizeof key, "%s_truncated", name);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, key)) && strlen(out) + 4 < size)
        strcat(out, "...");
}

/* A string field on one line, or "-". */
static void str_field(const cJSON *t, const char *name, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, name);
    if (cJSON_IsString(v))
        tq_output_error_line(v->valuestring, strlen(v->valuestring), out, size);
    else
        snprintf(out, size, "-");
}

static double num_field(const cJSON *t, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

/* One task of a "show" reply, for people. */
static void print_task(const cJSON *t, uint64_t id, int payload)
{
    char st[32], a[512], b[512];
    str_field(t, "state", st, sizeof st);
    printf("task %" PRIu64 "\n", id);
    printf("  state:       %s\n", st);
    str_field(t, "queue", a, sizeof a);
    printf("  queue:       %s\n", a);
    str_field(t, "fn", a, sizeof a);
    printf("  function:    %s\n", a);
    printf("  priority:    %.0f\n", num_field(t, "priority"));
    printf("  attempts:    %.0f (retries %.0f, used %.0f)\n", num_field(t, "attempts"),
           num_field(t, "retries"), num_field(t, "retried"));
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(t, "worker");
    if (cJSON_IsObject(w)) {
        str_field(w, "name", a, sizeof a);
        str_field(w, "id", b, sizeof b);
        printf("  worker:      %s (id %s%s)\n", a, b,
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(w, "connected")) ? ""
                                                                              : ", not connected");
    } else {
        printf("  worker:      -\n");
    }
    static const char *const times[][2] = {{"submitted_ms", "submitted"},
                                           {"not_before_ms", "not before"},
                                           {"started_ms", "started"},
                                           {"finished_ms", "finished"},
                                           {"expires_ms", "kept until"}};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        when_field(t, times[i][0], a, sizeof a);
        printf("  %-12s %s\n", times[i][1], a);
    }
    if (jhas_any(t, "result")) {
        text_field(t, "result", a, sizeof a);
        printf("  result:      %s\n", a);
    }
    if (jhas_any(t, "error")) {
        text_field(t, "error", a, sizeof a);
        printf("  error:       %s\n", a);
    }
    text_field(t, "key", a, sizeof a);
    printf("  key:         %s\n", a);
    printf("  payload:     %.0f bytes", num_field(t, "payload_bytes"));
    if (payload) {
        if (jhas_any(t, "payload")) {
            text_field(t, "payload", a, sizeof a);
            printf(": %s", a);
        } else {
            printf(" (not kept once finished)");
        }
    }
    printf("\n");
}

int tq_cli_run_show(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    show_settings_t *s = settings;
    int status;
    uint64_t *ids = NULL;
    size_t n = 0;
    taskq_t *tq = ids_and_connect(cmd, g, argc, argv, 1, &ids, &n, &status);
    if (!tq)
        return status;
    int unknown = 0;
    for (size_t off = 0; off < n && status == TQ_EXIT_OK; off += TQ_MAX_SHOW_IDS) {
        size_t k = n - off < TQ_MAX_SHOW_IDS ? n - off : TQ_MAX_SHOW_IDS;
        char *text = NULL;
        taskq_error_t e;
        if (taskq_show(tq, ids + off, k, s->payload, tq_cli_request_ms(), &text, &e) < 0) {
            status = tq_cli_lib_error(&e);
            break;
        }
        cJSON *rep = cJSON_Parse(text);
        free(text);
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(rep, "tasks");
        if (!cJSON_IsArray(tasks) || (size_t)cJSON_GetArraySize(tasks) != k) {
            cJSON_Delete(rep);
            status = bad_reply("\"tasks\" array (one per id)");
            break;
        }
        cJSON *t;
        size_t i = 0;
        cJSON_ArrayForEach(t, tasks)
        {
            uint64_t id = ids[off + i++];
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(t, "state");
            int unk = cJSON_IsString(st) && strcmp(st->valuestring, "unknown") == 0;
            unknown |= unk;
            if (s->json) {
                print_json_task(t, id);
            } else if (unk) {
                fflush(stdout);
                fprintf(stderr, "taskq: task %" PRIu64 " unknown\n", id);
            } else {
                if (off + i > 1)
                    printf("\n");
                print_task(t, id, s->payload);
            }
        }
        cJSON_Delete(rep);
    }
    if (status == TQ_EXIT_OK && unknown)
        status = TQ_EXIT_NOT_FOUND;
    fflush(stdout);
    free(ids);
    taskq_close(&tq);
    return status;
}

/* One row of `taskq list`. */
static void print_list_row(const cJSON *t, uint64_t id)
{
    char st[32], q[TQ_MAX_NAME * 2 + 4], fn[TQ_MAX_NAME * 2 + 4], sub[TQ_WHEN_UTC_LEN], more[400];
    str_field(t, "state", st, sizeof st);
    str_field(t, "queue", q, sizeof q);
    str_field(t, "fn", fn, sizeof fn);
    when_field(t, "submitted_ms", sub, sizeof sub);
    more[0] = '\0';
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(t, "worker");
    if (cJSON_IsObject(w)) {
        char name[TQ_MAX_PEER_NAME * 2 + 4];
        str_field(w, "name", name, sizeof name);
        snprintf(more, sizeof more, "worker %s", name);
    } else if (jhas_any(t, "error")) {
        text_field(t, "error", more, sizeof more);
    } else if (jhas_any(t, "not_before_ms")) {
        char nb[TQ_WHEN_UTC_LEN];
        when_field(t, "not_before_ms", nb, sizeof nb);
        snprintf(more, sizeof more, "not before %s", nb);
    }
    printf("%-16" PRIu64 " %-9s %-12s %-12s %8.0f %8.0f %-20s %s\n", id, st, q, fn,
           num_field(t, "priority"), num_field(t, "attempts"), sub, more[0] ? more : "-");
}

int tq_cli_run_list(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    list_settings_t *s = settings;
    int status;
    static const char *const states[] = {"queued", "delayed", "running",  "done",
                                         "failed", "dead",    "cancelled"};
    if (argc > 0)
        return tq_cli_usage_error("%s: unexpected argument '%.64s'", cmd->name, argv[0]);
    if ((status = check_queue("--queue", s->queue)))
        return status;
    if (s->fn && !tq_name_valid(tq_bytes_str(s->fn)))
        return tq_cli_usage_error("--fn: '%.80s' is not a valid function name", s->fn);
    if (s->state) {
        size_t i = 0;
        while (i < sizeof states / sizeof states[0] && strcmp(states[i], s->state) != 0)
            i++;
        if (i == sizeof states / sizeof states[0])
            return tq_cli_usage_error("--state: '%.40s' is not one of queued, delayed, running, "
                                      "done, failed, dead, cancelled",
                                      s->state);
    }
    uint64_t after = 0;
    if (s->after && tq_parse_u64(s->after, &after) < 0)
        return tq_cli_usage_error("--after: '%.40s' is not a task id", s->after);
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    status = TQ_EXIT_OK;
    uint64_t shown = 0, last = after;
    int more = 0;
    /* Pages until --limit rows are printed or the master has no more:
     * each request looks at a bounded number of tasks, so a page may
     * hold few rows (or none) and still say "more". */
    while (shown < (uint64_t)s->limit) {
        uint64_t want = (uint64_t)s->limit - shown;
        taskq_list_opts_t o = {s->queue, s->fn, s->state,
                               want > TQ_MAX_ADMIN_LIST ? TQ_MAX_ADMIN_LIST : (size_t)want, after};
        char *text = NULL;
        taskq_error_t e;
        if (taskq_list(tq, &o, tq_cli_request_ms(), &text, &e) < 0) {
            status = tq_cli_lib_error(&e);
            break;
        }
        cJSON *rep = cJSON_Parse(text);
        free(text);
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(rep, "tasks");
        uint64_t next = 0;
        more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "more"));
        if (!cJSON_IsArray(tasks) ||
            (more && (json_id(cJSON_GetObjectItemCaseSensitive(rep, "next_after"), &next) < 0 ||
                      next <= after))) {
            cJSON_Delete(rep);
            status = bad_reply("\"tasks\" and \"next_after\"");
            break;
        }
        cJSON *t;
        cJSON_ArrayForEach(t, tasks)
        {
            uint64_t id;
            if (json_id(cJSON_GetObjectItemCaseSensitive(t, "id"), &id) < 0 || id <= last) {
                status = bad_reply("task id (in id order)");
                break;
            }
            last = id;
            if (s->json) {
                print_json_task(t, id);
            } else {
                if (shown == 0)
                    printf("%-16s %-9s %-12s %-12s %8s %8s %-20s %s\n", "ID", "STATE", "QUEUE",
                           "FN", "PRIORITY", "ATTEMPTS", "SUBMITTED", "WORKER/ERROR");
                print_list_row(t, id);
            }
            shown++;
        }
        cJSON_Delete(rep);
        if (status != TQ_EXIT_OK || !more)
            break;
        after = next;
    }
    if (status == TQ_EXIT_OK && !s->json) {
        if (shown == 0)
            printf("no tasks\n");
        else if (more)
            printf("(more: taskq list --after %" PRIu64 " ...)\n", last);
    }
    fflush(stdout);
    taskq_close(&tq);
    return status;
}

/* taskq queue empty|delete QUEUE */
int tq_cli_run_queue(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    queue_settings_t *s = settings;
    int status;
    if (argc == 0)
        return tq_cli_usage_error("%s: no action given (empty QUEUE or delete QUEUE)", cmd->name);
    int del = strcmp(argv[0], "delete") == 0;
    if (!del && strcmp(argv[0], "empty") != 0)
        return tq_cli_usage_error("%s: unknown action '%.64s' (empty or delete)", cmd->name,
                                  argv[0]);
    if (argc < 2)
        return tq_cli_usage_error("%s %s: no QUEUE given", cmd->name, argv[0]);
    if (argc > 2)
        return tq_cli_usage_error("%s %s: unexpected argument '%.64s' (one QUEUE)", cmd->name,
                                  argv[0], argv[2]);
    const char *qn = argv[1];
    if (!tq_name_valid(tq_bytes_str(qn)))
        return tq_cli_usage_error("%s %s: '%.80s' is not a valid queue name (1..%d of A-Z a-z "
                                  "0-9 _ . : -)",
                                  cmd->name, argv[0], qn, TQ_MAX_NAME);
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    status = TQ_EXIT_OK;
    double cancelled = 0;
    for (;;) {
        cJSON *req = cJSON_CreateObject();
        TQ_ASSERT(req);
        cJSON_AddStringToObject(req, "op", del ? "queue_delete" : "queue_empty");
        cJSON_AddStringToObject(req, "queue", qn);
        cJSON *rep = admin(tq, req, &status);
        if (!rep)
            break;
        if (del) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(rep, "deleted");
            if (!cJSON_IsBool(d)) {
                status = bad_reply("\"deleted\"");
            } else if (s->json) {
                char *line = cJSON_PrintUnformatted(rep);
                printf("%s\n", line ? line : "{}");
                free(line);
            } else if (cJSON_IsTrue(d)) {
                printf("queue %s deleted\n", qn);
            }
            if (cJSON_IsFalse(d)) {
                fflush(stdout);
                fprintf(stderr,
                        "taskq: queue %s is not empty (%.0f queued, %.0f running); 'taskq queue "
                        "empty %s' cancels its queued tasks\n",
                        qn, num_field(rep, "queued"), num_field(rep, "running"), qn);
                status = TQ_EXIT_REFUSED;
            }
            cJSON_Delete(rep);
            break;
        }
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(rep, "cancelled");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rep, "more");
        if (!cJSON_IsNumber(c) || !cJSON_IsBool(m)) {
            cJSON_Delete(rep);
            status = bad_reply("\"cancelled\" and \"more\"");
            break;
        }
        cancelled += c->valuedouble;
        /* stop when a step cancelled nothing: tasks still "queued" are
         * held by a dispatch at that instant; the next run takes them */
        int again = cJSON_IsTrue(m) && c->valuedouble > 0;
        cJSON_Delete(rep);
        if (!again)
            break;
    }
    if (!del && status == TQ_EXIT_OK) {
        if (s->json)
            printf("{\"queue\":\"%s\",\"cancelled\":%.0f}\n", qn, cancelled);
        else
            printf("queue %s: %.0f queued task(s) cancelled\n", qn, cancelled);
    }
    fflush(stdout);
    taskq_close(&tq);
    return status;
}
