/* cli.c - the taskq command: global options, dispatch to the commands,
 * help and the exit table, and the status and cancel commands, on top
 * of libtaskq (submit, map and wait are cli_tasks.c). The command-line
 * contract is in /docs/cli.md (and DESIGN.md); global options and each
 * command's options are one tq_cfg_entry_t table each, which also
 * generates --help. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "output.h"
#include "taskq.h"
#include "tq_args.h"
#include "tq_authkey.h"
#include "tq_config.h"
#include "tq_exit.h"
#include "tq_keyfile.h"
#include "tq_limits.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_util.h"

#ifndef TQ_VERSION
#define TQ_VERSION "0.1.0"
#endif

/* --ack-timeout for one request's answer, as tq_cli_connect set it. */
static int request_ms = -1;

/* stdout buffer: results are many small writes; flushed whenever we block. */
#define STDOUT_BUFFER (256 * 1024)

/* ---- settings tables ---------------------------------------------------- */

static const tq_cfg_entry_t global_table[] = {
    {"connect", TQ_CFG_STRING, "tcp://127.0.0.1:7070", 0, 0, NULL, "TASKQ_CONNECT",
     offsetof(global_t, connect), "ENDPOINT", "the master's endpoint"},
    {"authkey-file", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_AUTHKEY_FILE",
     offsetof(global_t, authkey_file), "FILE", "file holding the shared authkey (mode 0600)"},
    {"key", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_KEY_FILE", offsetof(global_t, key_file), "FILE",
     "key-pair mode: this client's key pair (NAME.key from taskq keygen; give the "
     "master's public key with --master-key)"},
    {"master-key", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_MASTER_KEY_FILE",
     offsetof(global_t, master_key_file), "FILE",
     "key-pair mode: the master's public key (its .pub file)"},
    {"connect-timeout", TQ_CFG_MS, "10", 1, 3600 * 1000, NULL, NULL,
     offsetof(global_t, connect_timeout_ms), "S", "give up connecting after S seconds"},
    {"reconnect-timeout", TQ_CFG_MS, "60", 0, 24 * 3600 * 1000, NULL, NULL,
     offsetof(global_t, reconnect_timeout_ms), "S",
     "keep reconnecting to a lost master for S seconds (0: fail at once)"},
    {"ack-timeout", TQ_CFG_MS, "60", 0, 24 * 3600 * 1000, NULL, NULL,
     offsetof(global_t, ack_timeout_ms), "S",
     "give up (exit 4) when the connected master has not answered a request (submitted "
     "tasks, cancel, status, admin) within S seconds (0: wait for ever)"},
    {"version", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(global_t, version), NULL,
     "print the version and exit"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(global_t, help), NULL,
     "print this help and exit"},
    {"config", TQ_CFG_STRING, "~/.config/taskq/config", 0, 0, NULL, "TASKQ_CONFIG",
     offsetof(global_t, config), "FILE",
     "read these global options from FILE (name = value; skipped when the default is absent)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* The options submit and map share (task_settings_t, cli.h); each has
 * its own table. */
#define TASK_COMMON_ENTRIES                                                                        \
    {"fn",     TQ_CFG_STRING,                                                                      \
     "square", 0,                                                                                  \
     0,        NULL,                                                                               \
     NULL,     offsetof(task_settings_t, fn),                                                      \
     "NAME",   "function the workers run"},                                                        \
        {"queue",   TQ_CFG_STRING,                                                                 \
         "default", 0,                                                                             \
         0,         NULL,                                                                          \
         NULL,      offsetof(task_settings_t, queue),                                              \
         "Q",       "queue to put the tasks in"},                                                  \
        {"priority", TQ_CFG_INT,                                                                   \
         "0",        INT32_MIN,                                                                    \
         INT32_MAX,  NULL,                                                                         \
         NULL,       offsetof(task_settings_t, priority),                                          \
         "P",        "higher runs first"},                                                         \
        {"timeout",  TQ_CFG_MS,                                                                    \
         "0",        0,                                                                            \
         UINT32_MAX, NULL,                                                                         \
         NULL,       offsetof(task_settings_t, timeout_ms),                                        \
         "SECONDS",  "run timeout of each task on a worker (0: none)"},                            \
        {"retries",  TQ_CFG_INT,                                                                   \
         "0",        0,                                                                            \
         UINT16_MAX, NULL,                                                                         \
         NULL,       offsetof(task_settings_t, retries),                                           \
         "N",        "re-runs after a failed or timed-out run (a lost worker never uses one)"},    \
        {"delay",   TQ_CFG_STRING,                                                                 \
         NULL,      0,                                                                             \
         0,         NULL,                                                                          \
         NULL,      offsetof(task_settings_t, delay),                                              \
         "SECONDS", "do not run the tasks before SECONDS from now (0..315576000: 10 years)"},      \
        {"at",   TQ_CFG_STRING,                                                                    \
         NULL,   0,                                                                                \
         0,      NULL,                                                                             \
         NULL,   offsetof(task_settings_t, at),                                                    \
         "TIME", "do not run the tasks before TIME (RFC 3339: 2026-11-22T10:00:00Z)"},             \
    {                                                                                              \
        "json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, json), NULL,        \
            "print one JSON object per task"                                                       \
    }

static const tq_cfg_entry_t submit_table[] = {
    TASK_COMMON_ENTRIES,
    {"key", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, key), "KEY",
     "idempotency key: submitting the same key again gives the same task (one PAYLOAD)"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static const tq_cfg_entry_t map_table[] = {
    TASK_COMMON_ENTRIES,
    {"window", TQ_CFG_INT, "10000", 1, 1000000, NULL, NULL, offsetof(task_settings_t, window), "N",
     "at most N tasks submitted and not yet printed"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static const tq_cfg_entry_t wait_table[] = {
    {"timeout", TQ_CFG_MS, "0", 0, INT32_MAX, NULL, NULL, offsetof(wait_settings_t, timeout_ms),
     "SECONDS", "give up after SECONDS (0: wait forever)"},
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(wait_settings_t, json), NULL,
     "print one JSON object per task"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(wait_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

typedef struct {
    int json;
    int help;
} status_settings_t;

static const tq_cfg_entry_t status_table[] = {
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(status_settings_t, json), NULL,
     "print the master's status document as JSON"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(status_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

typedef struct {
    int help;
} cancel_settings_t;

static const tq_cfg_entry_t cancel_table[] = {
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(cancel_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static const tq_cfg_entry_t dead_table[] = {
    {"queue", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(dead_settings_t, queue), "Q",
     "only the dead tasks of queue Q"},
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(dead_settings_t, json), NULL,
     "print one JSON object per task, as the master sent it"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(dead_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* retry and purge */
static const tq_cfg_entry_t fix_table[] = {
    {"all", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(fix_settings_t, all), NULL,
     "every dead task (of --queue Q, if given) instead of IDs"},
    {"failed", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(fix_settings_t, failed), NULL,
     "with --all: every failed task (taskq failed) instead of every dead task"},
    {"queue", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(fix_settings_t, queue), "Q",
     "with --all: only the dead (or --failed) tasks of queue Q"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(fix_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* put */
static const tq_cfg_entry_t put_table[] = {
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(plain_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* get */
static const tq_cfg_entry_t get_table[] = {
    {"timeout", TQ_CFG_MS, "0", 0, 86400000, NULL, NULL, offsetof(plain_settings_t, timeout_ms),
     "SECONDS", "wait up to SECONDS for an item (0: do not wait; at most a day)"},
    {"count", TQ_CFG_INT, "1", 1, 1024, NULL, NULL, offsetof(plain_settings_t, count), "N",
     "take up to N items"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(plain_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* pause and resume */
static const tq_cfg_entry_t queue_op_table[] = {
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(queue_op_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* show */
static const tq_cfg_entry_t show_table[] = {
    {"payload", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(show_settings_t, payload), NULL,
     "also print each task's payload (kept while queued or running, and for failed and dead "
     "tasks)"},
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(show_settings_t, json), NULL,
     "print one JSON object per task, as the master sent it"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(show_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* list */
static const tq_cfg_entry_t list_table[] = {
    {"queue", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, queue), "Q",
     "only the tasks of queue Q"},
    {"state", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, state), "STATE",
     "only tasks in STATE: queued, delayed, running, done, failed, dead or cancelled"},
    {"fn", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, fn), "F",
     "only the tasks of function F"},
    {"limit", TQ_CFG_INT, "100", 1, 1000000, NULL, NULL, offsetof(list_settings_t, limit), "N",
     "print at most N tasks"},
    {"after", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, after), "ID",
     "start after task ID (the next page)"},
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, json), NULL,
     "print one JSON object per task, as the master sent it"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(list_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* queue empty|delete */
static const tq_cfg_entry_t queue_table[] = {
    {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(queue_settings_t, json), NULL,
     "print the outcome as one JSON object"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(queue_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* ---- commands ------------------------------------------------------------ */

static int run_status(const command_t *, global_t *, void *, int, char **);
static int run_workers(const command_t *, global_t *, void *, int, char **);
static int run_cancel(const command_t *, global_t *, void *, int, char **);
static int run_put(const command_t *, global_t *, void *, int, char **);
static int run_get(const command_t *, global_t *, void *, int, char **);
static int run_keygen(const command_t *, global_t *, void *, int, char **);

typedef struct {
    int help;
} keygen_settings_t;

static const tq_cfg_entry_t keygen_table[] = {
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(keygen_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

static const command_t commands[] = {
    {"submit", submit_table, sizeof(task_settings_t), offsetof(task_settings_t, help),
     "PAYLOAD... | -", "queue tasks; print one task id per line, in input order",
     "'-' reads one payload per line from stdin (the newline is not part of it).\n"
     "With --json, prints {\"id\":N,\"status\":\"queued\"} per task.\n",
     tq_cli_run_submit},
    {"map", map_table, sizeof(task_settings_t), offsetof(task_settings_t, help), "PAYLOAD... | -",
     "submit all, print the results in input order as they become printable",
     "'-' reads one payload per line from stdin, lazily: at most --window tasks are\n"
     "in flight. Failed tasks print nothing on stdout and 'taskq: task ID failed: ERROR'\n"
     "on stderr. A progress bar is drawn on stderr when it is a terminal.\n",
     tq_cli_run_map},
    {"wait", wait_table, sizeof(wait_settings_t), offsetof(wait_settings_t, help), "ID... | -",
     "print each task's result on its own line, in the order of the ids",
     "Failed tasks print nothing on stdout and 'taskq: task ID failed: ERROR' on stderr.\n"
     "On --timeout, the results that arrived are printed up to the first missing one.\n",
     tq_cli_run_wait},
    {"status", status_table, sizeof(status_settings_t), offsetof(status_settings_t, help), "",
     "queues, counts per state, workers and rates", "", run_status},
    {"cancel", cancel_table, sizeof(cancel_settings_t), offsetof(cancel_settings_t, help),
     "ID... | -", "cancel tasks that have not finished",
     "Prints 'ID cancelled', 'ID already finished' or 'ID unknown' per id.\n", run_cancel},
    {"dead", dead_table, sizeof(dead_settings_t), offsetof(dead_settings_t, help), "",
     "list the dead tasks (given up on; kept until retried or purged)",
     "Prints a header, then one line per task: ID QUEUE FN ATTEMPTS DIED ERROR\n"
     "(DIED in UTC, ERROR on one line), or 'no dead tasks'.\n",
     tq_cli_run_dead},
    {"retry", fix_table, sizeof(fix_settings_t), offsetof(fix_settings_t, help),
     "ID... | - | --all", "put dead or failed tasks back in their queues, as if new",
     "Prints 'ID retried', 'ID not dead' or 'ID unknown' per id; with --all,\n"
     "'N task(s) retried'. Exit 6 if any id is unknown, else 7 if any is not dead.\n",
     tq_cli_run_fix},
    {"purge", fix_table, sizeof(fix_settings_t), offsetof(fix_settings_t, help),
     "ID... | - | --all", "delete dead or failed tasks",
     "Prints 'ID purged', 'ID not dead' or 'ID unknown' per id; with --all,\n"
     "'N task(s) purged'. Exit 6 if any id is unknown, else 7 if any is not dead.\n",
     tq_cli_run_fix},
    {"pause", queue_op_table, sizeof(queue_op_settings_t), offsetof(queue_op_settings_t, help),
     "QUEUE", "stop dispatching tasks from a queue (submitting still works)",
     "Running tasks finish. The pause survives master restarts.\n"
     "Prints 'queue Q paused' or 'queue Q was already paused'.\n",
     tq_cli_run_queue_op},
    {"resume", queue_op_table, sizeof(queue_op_settings_t), offsetof(queue_op_settings_t, help),
     "QUEUE", "dispatch tasks from a paused queue again",
     "Prints 'queue Q resumed' or 'queue Q was not paused'.\n", tq_cli_run_queue_op},
    {"workers", status_table, sizeof(status_settings_t), offsetof(status_settings_t, help), "",
     "list the connected workers: name, id, address, slots, busy, state, functions, running tasks",
     "With --json, prints the status document's \"workers\" array.\n", run_workers},
    {"worker", queue_op_table, sizeof(queue_op_settings_t), offsetof(queue_op_settings_t, help),
     "quiet|stop NAME|ID", "quiet a worker (finish, take no new tasks) or stop it (drain, exit)",
     "NAME or ID as 'taskq workers' shows them; every worker of that name is told.\n"
     "Prints 'worker NAME (id ID) quiet: ...' or '... stopping: ...' per worker;\n"
     "exit 6 if no worker has that name or id.\n",
     tq_cli_run_worker_op},
    {"put", put_table, sizeof(plain_settings_t), offsetof(plain_settings_t, help),
     "QUEUE ITEM... | QUEUE -", "append items to a plain (put/get) queue",
     "Plain queues hold items for 'taskq get' (and taskq.managers queues); they are\n"
     "apart from task queues. '-' reads one item per line from stdin. Prints nothing;\n"
     "exit 0 once the master has stored every item.\n",
     run_put},
    {"get", get_table, sizeof(plain_settings_t), offsetof(plain_settings_t, help), "QUEUE",
     "take items from a plain queue; print one per line",
     "Exit 4 if the queue stays empty for --timeout. Items are gone once printed.\n", run_get},
    {"show", show_table, sizeof(show_settings_t), offsetof(show_settings_t, help), "ID... | -",
     "print what the master knows of tasks: state, queue, attempts, worker, times, result",
     "Prints a block per task (times in UTC, '-' when not known); 'taskq: task ID\n"
     "unknown' on stderr and exit 6 for an id the master does not hold.\n",
     tq_cli_run_show},
    {"list", list_table, sizeof(list_settings_t), offsetof(list_settings_t, help), "",
     "list stored tasks in id order (queue order within a priority), with filters",
     "Prints a header, then one line per task: ID STATE QUEUE FN PRIORITY ATTEMPTS\n"
     "SUBMITTED and the worker (running), the error (failed, dead) or the time it may\n"
     "run (delayed); then '(more: taskq list --after ID ...)' when --limit cut it.\n",
     tq_cli_run_list},
    {"failed", dead_table, sizeof(dead_settings_t), offsetof(dead_settings_t, help), "",
     "list the failed tasks (failed after their retries; kept as results are)",
     "Prints a header, then one line per task: ID QUEUE FN ATTEMPTS FAILED ERROR\n"
     "(FAILED in UTC, ERROR on one line), or 'no failed tasks'. 'taskq retry ID'\n"
     "runs one again; 'taskq purge ID' deletes it.\n",
     tq_cli_run_dead},
    {"queue", queue_table, sizeof(queue_settings_t), offsetof(queue_settings_t, help),
     "empty|delete QUEUE", "cancel every queued task of a queue, or delete an empty queue",
     "empty: cancels the queued and delayed tasks (running ones finish); prints\n"
     "'queue Q: N queued task(s) cancelled'. delete: forgets a queue with nothing\n"
     "queued or running (its pause too); exit 7 with the counts otherwise.\n",
     tq_cli_run_queue},
    {"keygen", keygen_table, sizeof(keygen_settings_t), offsetof(keygen_settings_t, help), "NAME",
     "make a key pair for key-pair mode: NAME.key (secret, mode 0600) and NAME.pub",
     "Prints the public key (Z85). Never overwrites: exit 8 if NAME.key or NAME.pub exists.\n"
     "NAME.pub goes into the master's --allow-keys file (or, for the master's own\n"
     "--key, to its peers as --master-key); NAME.key stays on this machine.\n",
     run_keygen},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])
#define COMMAND_LIST                                                                               \
    "submit, map, wait, status, cancel, dead, retry, purge, pause, resume, workers, worker, put, " \
    "get, show, list, failed, queue, keygen"

/* Short forms (docs/cli.md): the global options', then the commands'
 * (a short form counts only where its long option exists). */
static const tq_short_t global_shorts[] = {{'h', "help"},
                                           {'V', "version"},
                                           {'c', "connect"},
                                           {'k', "authkey-file"},
                                           {0, NULL}};
static const tq_short_t command_shorts[] = {{'h', "help"},     {'f', "fn"},      {'q', "queue"},
                                            {'p', "priority"}, {'t', "timeout"}, {'r', "retries"},
                                            {'d', "delay"},    {'j', "json"},    {'w', "window"},
                                            {'a', "all"},      {0, NULL}};

/* The command named name, or NULL. */
static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

/* "unknown command 'X'", with the nearest command when there is one. */
static int unknown_command(const char *name)
{
    const char *names[NCOMMANDS + 1];
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i].name;
    names[NCOMMANDS] = "help";
    const char *near = tq_args_suggest(name, strlen(name), names, NCOMMANDS + 1);
    if (near)
        return tq_cli_usage_error("unknown command '%.64s'; did you mean '%s'? (%s)", name, near,
                                  COMMAND_LIST);
    return tq_cli_usage_error("unknown command '%.64s' (%s)", name, COMMAND_LIST);
}

static void print_exit_table(FILE *out)
{
    fprintf(out,
            "exit status:\n"
            "  %-3d everything succeeded\n"
            "  %-3d at least one task failed (or is dead)\n"
            "  %-3d bad flag or argument\n"
            "  %-3d cannot connect, authentication failed, or the master went away\n"
            "  %-3d --timeout passed before every result came\n"
            "  %-3d at least one task was cancelled (and none failed)\n"
            "  %-3d at least one task id is unknown to the master\n"
            "  %-3d the master refused the request (too large, bad name, full, ...),\n"
            "      or retry/purge named a task that is not dead\n"
            "  %-3d cannot start: key file unreadable or unsafe\n"
            "  %-3d status: the master reports a fault (journal error; submits refused)\n"
            "  %-3d a bug in taskq\n",
            TQ_EXIT_OK, TQ_EXIT_TASK_FAILED, TQ_EXIT_USAGE, TQ_EXIT_CONNECT, TQ_EXIT_TIMEOUT,
            TQ_EXIT_CANCELLED, TQ_EXIT_NOT_FOUND, TQ_EXIT_REFUSED, TQ_EXIT_ENV, TQ_EXIT_FAULT,
            TQ_EXIT_INTERNAL);
}

static void print_main_help(FILE *out)
{
    fprintf(out, "usage: taskq [OPTIONS] COMMAND [COMMAND OPTIONS] [ARGS]\n\n"
                 "Submit tasks to a taskq master and collect their results.\n\n"
                 "options:\n");
    tq_cfg_usage(global_table, out);
    fprintf(out, "\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-7s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-7s %s\n", "help", "this help, or a command's: taskq help COMMAND");
    fprintf(out, "\n'taskq COMMAND --help' (or -h, or 'taskq help COMMAND') lists a command's "
                 "options.\n\n");
    print_exit_table(out);
}

static void print_command_help(const command_t *c, FILE *out)
{
    fprintf(out, "usage: taskq [OPTIONS] %s [OPTIONS] %s\n\n%s.\n", c->name, c->args, c->summary);
    if (c->details[0])
        fprintf(out, "\n%s", c->details);
    fprintf(out, "\noptions:\n");
    tq_cfg_usage(c->table, out);
}

/* ---- helpers shared with cli_tasks.c (promises in cli.h) ---------------- */

int tq_cli_usage_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "taskq: %s\n", msg);
    return TQ_EXIT_USAGE;
}

int tq_cli_lib_error(const taskq_error_t *e)
{
    fflush(stdout);
    fprintf(stderr, "taskq: %s\n", e->message);
    return e->code ? e->code : TQ_EXIT_INTERNAL;
}

/* libtaskq's connection notices (lost, reconnected): one stderr line
 * each, after what stdout already holds. */
static void print_notice(void *arg, const char *message)
{
    (void)arg;
    fflush(stdout);
    fprintf(stderr, "%staskq: %s\n", isatty(STDERR_FILENO) ? "\r\033[K" : "", message);
}

taskq_t *tq_cli_connect(const global_t *g, int *status)
{
    int keypair = (g->key_file && *g->key_file) || (g->master_key_file && *g->master_key_file);
    if ((!g->authkey_file || !*g->authkey_file) && !keypair) {
        *status = tq_cli_usage_error(
            "no authkey: give --authkey-file FILE or set TASKQ_AUTHKEY_FILE");
        return NULL;
    }
    tq_err_t eperr;
    if (g->connect && tq_endpoint_port_check(g->connect, "--connect", &eperr) < 0) {
        *status = tq_cli_usage_error("%s", eperr.msg);
        return NULL;
    }
    taskq_error_t e;
    taskq_t *tq = taskq_connect_keys(g->connect, g->authkey_file, g->key_file, g->master_key_file,
                                     (int)g->connect_timeout_ms, NULL, &e);
    if (!tq) {
        *status = tq_cli_lib_error(&e);
        return NULL;
    }
    taskq_set_reconnect(tq, (int)g->reconnect_timeout_ms);
    taskq_set_ack_timeout(tq, (int)g->ack_timeout_ms);
    request_ms = g->ack_timeout_ms > 0 ? (int)g->ack_timeout_ms : -1;
    taskq_set_notice(tq, print_notice, NULL);
    return tq;
}

int tq_cli_request_ms(void) { return request_ms; }

/* Read whitespace-separated task ids from stdin (as `taskq submit`
 * prints them) into a fresh array. Returns 0 or an exit status after
 * printing the error (line number and the offending text). */
static int parse_ids_stdin(const char *cmd, uint64_t **ids_out, size_t *n_out)
{
    size_t n = 0, cap = 1024, line = 1;
    uint64_t *ids = tq_malloc(cap * sizeof *ids);
    char tok[32]; /* a u64 has at most 20 digits */
    size_t tl = 0;
    int c, status = 0;
    do {
        c = getchar();
        if (c != EOF && !isspace(c)) {
            if (tl + 1 < sizeof tok)
                tok[tl] = (char)c;
            tl++;
            continue;
        }
        if (tl > 0) {
            uint64_t id = 0;
            if (tl >= sizeof tok) {
                status = tq_cli_usage_error("%s: stdin line %zu: '%.*s...' is not a task id", cmd,
                                            line, (int)sizeof tok - 1, tok);
                break;
            }
            tok[tl] = '\0';
            if (tq_parse_u64(tok, &id) < 0 || id == 0) {
                status = tq_cli_usage_error("%s: stdin line %zu: '%s' is not a task id", cmd, line,
                                            tok);
                break;
            }
            if (n == cap) {
                cap *= 2;
                ids = tq_realloc(ids, cap * sizeof *ids);
            }
            ids[n++] = id;
            tl = 0;
        }
        if (c == '\n')
            line++;
    } while (c != EOF);
    if (!status && ferror(stdin))
        status = tq_cli_usage_error("%s: cannot read stdin: %s", cmd, strerror(errno));
    if (!status && n == 0)
        status = tq_cli_usage_error("%s: no task ID on stdin", cmd);
    if (status) {
        free(ids);
        return status;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

int tq_cli_parse_ids(const char *cmd, int argc, char **argv, uint64_t **ids_out, size_t *n_out)
{
    if (argc == 0)
        return tq_cli_usage_error("%s: no task ID given (or '-' to read them from stdin)", cmd);
    if (argc == 1 && strcmp(argv[0], "-") == 0)
        return parse_ids_stdin(cmd, ids_out, n_out);
    uint64_t *ids = tq_calloc((size_t)argc, sizeof *ids);
    for (int i = 0; i < argc; i++) {
        if (tq_parse_u64(argv[i], &ids[i]) < 0 || ids[i] == 0) {
            free(ids);
            return tq_cli_usage_error("%s: '%.64s' is not a task id", cmd, argv[i]);
        }
    }
    *ids_out = ids;
    *n_out = (size_t)argc;
    return 0;
}

/* ---- cancel ------------------------------------------------------------ */

static int run_cancel(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)settings;
    uint64_t *ids;
    size_t n;
    int status = tq_cli_parse_ids(cmd->name, argc, argv, &ids, &n);
    if (status)
        return status;
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq) {
        free(ids);
        return status;
    }
    int *outcomes = tq_calloc(n, sizeof *outcomes);
    taskq_error_t e;
    if (taskq_cancel(tq, ids, n, outcomes, tq_cli_request_ms(), &e) < 0) {
        status = tq_cli_lib_error(&e);
    } else {
        status = TQ_EXIT_OK;
        for (size_t i = 0; i < n; i++) {
            const char *what = outcomes[i] == TASKQ_CANCEL_OK         ? "cancelled"
                               : outcomes[i] == TASKQ_CANCEL_FINISHED ? "already finished"
                                                                      : "unknown";
            printf("%" PRIu64 " %s\n", ids[i], what);
            if (outcomes[i] == TASKQ_CANCEL_UNKNOWN)
                status = TQ_EXIT_NOT_FOUND;
        }
    }
    fflush(stdout);
    free(outcomes);
    free(ids);
    taskq_close(&tq);
    return status;
}

/* ---- put and get: plain queues ---------------------------------------------- */

/* put QUEUE ITEM... | QUEUE -: items from the arguments or stdin lines,
 * sent in batches of up to TQ_MAX_BATCH. */
static int run_put(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)settings;
    if (argc < 2) {
        fprintf(stderr, "taskq: %s: need a QUEUE and at least one ITEM (or -)\n", cmd->name);
        return TQ_EXIT_USAGE;
    }
    const char *queue = argv[0];
    if (!tq_name_valid(tq_bytes_str(queue))) {
        fprintf(stderr, "taskq: %s: '%s' is not a valid queue name\n", cmd->name, queue);
        return TQ_EXIT_USAGE;
    }
    int from_stdin = argc == 2 && strcmp(argv[1], "-") == 0;
    int status = TQ_EXIT_OK;
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    taskq_item_t items[TQ_MAX_BATCH];
    char *lines[TQ_MAX_BATCH];
    size_t n = 0, nlines = 0;
    taskq_error_t e;
    int i = 1, eof = 0;
    while (!eof || n > 0) {
        if (from_stdin && !eof && n < TQ_MAX_BATCH) {
            char *line = NULL;
            size_t cap = 0;
            ssize_t len = getline(&line, &cap, stdin);
            if (len < 0) {
                free(line);
                eof = 1;
            } else {
                if (len > 0 && line[len - 1] == '\n')
                    line[--len] = '\0';
                lines[nlines++] = line;
                items[n++] = (taskq_item_t){line, (size_t)len};
                continue;
            }
        } else if (!from_stdin && !eof && n < TQ_MAX_BATCH) {
            if (i < argc) {
                items[n++] = (taskq_item_t){argv[i], strlen(argv[i])};
                i++;
                continue;
            }
            eof = 1;
        }
        if (n == 0)
            break;
        if (taskq_put(tq, queue, items, n, tq_cli_request_ms(), &e) < 0) {
            status = tq_cli_lib_error(&e);
            break;
        }
        for (size_t k = 0; k < nlines; k++)
            free(lines[k]);
        n = nlines = 0;
    }
    for (size_t k = 0; k < nlines; k++)
        free(lines[k]);
    taskq_close(&tq);
    return status;
}

static void print_item(void *arg, uint64_t id, const void *data, size_t len)
{
    (void)arg;
    (void)id;
    fwrite(data, 1, len, stdout);
    fputc('\n', stdout);
}

/* get [--timeout S] [--count N] QUEUE: exit 4 when nothing came. */
static int run_get(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    const plain_settings_t *s = settings;
    if (argc != 1) {
        fprintf(stderr, "taskq: %s: need exactly one QUEUE\n", cmd->name);
        return TQ_EXIT_USAGE;
    }
    if (!tq_name_valid(tq_bytes_str(argv[0]))) {
        fprintf(stderr, "taskq: %s: '%s' is not a valid queue name\n", cmd->name, argv[0]);
        return TQ_EXIT_USAGE;
    }
    int status = TQ_EXIT_OK;
    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;
    taskq_error_t e;
    int n = taskq_get(tq, argv[0], (int)s->timeout_ms, (size_t)s->count, print_item, NULL, &e);
    fflush(stdout);
    if (n < 0)
        status = tq_cli_lib_error(&e);
    else if (n == 0) {
        fprintf(stderr, "taskq: %s: queue %s is empty\n", cmd->name, argv[0]);
        status = TQ_EXIT_TIMEOUT;
    }
    taskq_close(&tq);
    return status;
}

/* ---- status ------------------------------------------------------------ */

static double jnum(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static int jhas(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name) != NULL;
}

/* A string field made safe for one terminal cell. */
static void jstr(const cJSON *obj, const char *name, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    const char *s = cJSON_IsString(v) && v->valuestring ? v->valuestring : "-";
    tq_output_error_line(s, strlen(s), out, size);
}

static void print_duration(FILE *out, double ms)
{
    long long s = (long long)(ms / 1000.0);
    if (s >= 86400)
        fprintf(out, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        fprintf(out, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        fprintf(out, "%lldm%02llds", s / 60, s % 60);
    else
        fprintf(out, "%llds", s);
}

static void print_worker_rows(FILE *out, const cJSON *workers, int with_id);

/* The per-function table (masters before it send no "functions"), then
 * a warning line per function that has tasks waiting and no connected
 * worker serving it. */
static void print_functions(FILE *out, const cJSON *doc)
{
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(doc, "functions");
    const cJSON *f;
    char a[160];
    int w = 8;
    if (!cJSON_IsArray(fns) || cJSON_GetArraySize(fns) == 0)
        return;
    cJSON_ArrayForEach(f, fns)
    {
        jstr(f, "name", a, sizeof a);
        if ((int)strlen(a) > w)
            w = (int)strlen(a);
    }
    fprintf(out, "\n%-*s %10s %10s %10s\n", w, "FUNCTION", "QUEUED", "RUNNING", "WORKERS");
    cJSON_ArrayForEach(f, fns)
    {
        jstr(f, "name", a, sizeof a);
        fprintf(out, "%-*s %10.0f %10.0f %10.0f\n", w, a, jnum(f, "queued"), jnum(f, "running"),
                jnum(f, "workers"));
    }
    if (jnum(doc, "functions_total") > cJSON_GetArraySize(fns))
        fprintf(out, "(%d of %.0f functions shown)\n", cJSON_GetArraySize(fns),
                jnum(doc, "functions_total"));
    cJSON_ArrayForEach(f, fns)
    {
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "unserved")))
            continue;
        jstr(f, "name", a, sizeof a);
        fprintf(out,
                "warning: %.0f task(s) wait for function %s, which no connected worker serves\n",
                jnum(f, "queued"), a);
    }
}

static void print_status(FILE *out, const cJSON *doc)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "master");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "totals");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "rates");
    const cJSON *queues = cJSON_GetObjectItemCaseSensitive(doc, "queues");
    const cJSON *workers = cJSON_GetObjectItemCaseSensitive(doc, "workers");
    char a[160], b[160];
    jstr(m, "version", a, sizeof a);
    jstr(m, "endpoint", b, sizeof b);
    fprintf(out, "master %s at %s, pid %.0f, up ", a, b, jnum(m, "pid"));
    print_duration(out, jnum(m, "uptime_ms"));
    /* "workers_total": the list may be cut (masters before it: the list) */
    fprintf(out, ", %.0f client(s), %.0f worker(s)\n", jnum(doc, "clients"),
            jhas(doc, "workers_total") ? jnum(doc, "workers_total")
            : cJSON_IsArray(workers)   ? (double)cJSON_GetArraySize(workers)
                                       : 0.0);
    fprintf(out,
            "tasks: %.0f queued, %.0f running, %.0f submitted, %.0f done, %.0f failed, "
            "%.0f cancelled, %.0f requeued",
            jnum(t, "queued"), jnum(t, "running"), jnum(t, "submitted"), jnum(t, "done"),
            jnum(t, "failed"), jnum(t, "cancelled"), jnum(t, "requeued"));
    /* Masters before the dead set and delays do not send these. */
    if (jhas(t, "delayed"))
        fprintf(out, ", %.0f delayed", jnum(t, "delayed"));
    if (jhas(t, "dead"))
        fprintf(out, ", %.0f dead", jnum(t, "dead"));
    fprintf(out, "; %.1f submitted/s, %.1f done/s\n", jnum(r, "submitted_per_s"),
            jnum(r, "done_per_s"));
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(doc, "journal");
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(jn, "error"))) {
        jstr(jn, "error", a, sizeof a);
        fprintf(out, "journal: ERROR %s: the master refuses submits until it can write again\n", a);
    }

    int w = 5, delayed = 0, dead = 0, paused = 0, oldest = 0;
    const cJSON *q;
    cJSON_ArrayForEach(q, queues)
    {
        jstr(q, "name", a, sizeof a);
        if ((int)strlen(a) > w)
            w = (int)strlen(a);
        delayed |= jhas(q, "delayed");
        dead |= jhas(q, "dead");
        paused |= jhas(q, "paused");
        oldest |= jhas(q, "oldest_age_ms");
    }
    fprintf(out, "\n%-*s %10s %10s %10s %10s %10s", w, "QUEUE", "QUEUED", "RUNNING", "DONE",
            "FAILED", "CANCELLED");
    if (delayed)
        fprintf(out, " %10s", "DELAYED");
    if (dead)
        fprintf(out, " %10s", "DEAD");
    if (oldest)
        fprintf(out, " %10s", "OLDEST");
    fprintf(out, "%s\n", paused ? " STATE" : "");
    cJSON_ArrayForEach(q, queues)
    {
        jstr(q, "name", a, sizeof a);
        fprintf(out, "%-*s %10.0f %10.0f %10.0f %10.0f %10.0f", w, a, jnum(q, "queued"),
                jnum(q, "running"), jnum(q, "done"), jnum(q, "failed"), jnum(q, "cancelled"));
        if (delayed)
            fprintf(out, " %10.0f", jnum(q, "delayed"));
        if (dead)
            fprintf(out, " %10.0f", jnum(q, "dead"));
        if (oldest) {
            /* age of the oldest queued task; "-" when none is queued */
            const cJSON *age = cJSON_GetObjectItemCaseSensitive(q, "oldest_age_ms");
            char cell[32] = "-";
            if (cJSON_IsNumber(age)) {
                char *buf = NULL;
                size_t blen = 0;
                FILE *mem = open_memstream(&buf, &blen);
                if (mem) {
                    print_duration(mem, age->valuedouble);
                    fclose(mem);
                    tq_strlcpy(cell, buf, sizeof cell);
                    free(buf);
                }
            }
            fprintf(out, " %10s", cell);
        }
        if (paused)
            fprintf(out, " %s",
                    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "paused")) ? "paused"
                                                                                : "active");
        fputc('\n', out);
    }
    /* A master with many queues sends one page of rows and the count. */
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "queues_truncated")))
        fprintf(out, "(%d of %.0f queues shown)\n",
                cJSON_IsArray(queues) ? cJSON_GetArraySize(queues) : 0, jnum(doc, "queues_total"));
    if (cJSON_IsArray(workers) && jnum(doc, "workers_total") > cJSON_GetArraySize(workers))
        fprintf(out, "(%d of %.0f workers shown below)\n", cJSON_GetArraySize(workers),
                jnum(doc, "workers_total"));
    print_functions(out, doc);

    fputc('\n', out);
    print_worker_rows(out, workers, 0);
}

/* The worker table: a header, then one line per worker (name, its
 * instance id when with_id, address, slots, busy, state, functions). */
static void print_worker_rows(FILE *out, const cJSON *workers, int with_id)
{
    const cJSON *q;
    char a[160], b[160], id[40], st[32], who[80];
    int wn = 6, wa = 7, wi = 0; /* wi: the IDENTITY column (key-pair mode only) */
    cJSON_ArrayForEach(q, workers)
    {
        jstr(q, "name", a, sizeof a);
        jstr(q, "address", b, sizeof b);
        if ((int)strlen(a) > wn)
            wn = (int)strlen(a);
        if ((int)strlen(b) > wa)
            wa = (int)strlen(b);
        if (cJSON_GetObjectItemCaseSensitive(q, "identity")) {
            jstr(q, "identity", who, sizeof who);
            int l = (int)strlen(who) > 8 ? (int)strlen(who) : 8;
            wi = l > wi ? l : wi;
        }
    }
    /* `workers` adds the running task ids (masters before them send no
     * "running") */
    int running = 0;
    cJSON_ArrayForEach(q, workers) running |= with_id && jhas(q, "running");
    fprintf(out, "%-*s %s%-*s ", wn, "WORKER", with_id ? "ID               " : "", wa, "ADDRESS");
    if (wi)
        fprintf(out, "%-*s ", wi, "IDENTITY");
    fprintf(out, "%5s %5s %-8s %s%s\n", "SLOTS", "BUSY", "STATE", "FUNCTIONS",
            running ? " RUNNING" : "");
    cJSON_ArrayForEach(q, workers)
    {
        jstr(q, "name", a, sizeof a);
        jstr(q, "id", id, sizeof id);
        jstr(q, "address", b, sizeof b);
        jstr(q, "state", st, sizeof st);
        fprintf(out, "%-*s ", wn, a);
        if (with_id)
            fprintf(out, "%-16s ", id);
        fprintf(out, "%-*s ", wa, b);
        if (wi) {
            who[0] = '\0';
            if (cJSON_GetObjectItemCaseSensitive(q, "identity"))
                jstr(q, "identity", who, sizeof who);
            fprintf(out, "%-*s ", wi, who[0] ? who : "-");
        }
        fprintf(out, "%5.0f %5.0f %-8s ", jnum(q, "slots"), jnum(q, "busy"), st);
        const cJSON *f;
        int first = 1;
        cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(q, "functions"))
        {
            if (!cJSON_IsString(f))
                continue;
            tq_output_error_line(f->valuestring, strlen(f->valuestring), a, sizeof a);
            fprintf(out, "%s%s", first ? "" : ",", a);
            first = 0;
        }
        fprintf(out, "%s", first ? "-" : "");
        if (running) {
            /* the task ids, comma-separated; "-" when none; "+N" for the
             * ones the master left out */
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(q, "running");
            int n = 0;
            cJSON_ArrayForEach(f, ids)
            {
                if (cJSON_IsNumber(f))
                    fprintf(out, "%s%.0f", n++ ? "," : " ", f->valuedouble);
            }
            if (!n)
                fprintf(out, " -");
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "running_truncated")))
                fprintf(out, ",+%.0f", jnum(q, "busy") - n);
        }
        fputc('\n', out);
    }
}

/* taskq workers: the status document's workers, one line each. */
static void print_workers(FILE *out, const cJSON *doc)
{
    const cJSON *workers = cJSON_GetObjectItemCaseSensitive(doc, "workers");
    print_worker_rows(out, workers, 1);
    if (cJSON_IsArray(workers) && jnum(doc, "workers_total") > cJSON_GetArraySize(workers))
        fprintf(out, "(%d of %.0f workers shown)\n", cJSON_GetArraySize(workers),
                jnum(doc, "workers_total"));
}

/* The master's status document for `status` and `workers` (name, for
 * errors): connects, asks, disconnects. Returns the JSON text (caller
 * frees), or NULL with the exit status in *status. */
static char *fetch_status(const char *name, global_t *g, int argc, char **argv, int *status)
{
    if (argc > 0) {
        *status = tq_cli_usage_error("%s: unexpected argument '%.64s'", name, argv[0]);
        return NULL;
    }
    taskq_t *tq = tq_cli_connect(g, status);
    if (!tq)
        return NULL;
    char *json = NULL;
    taskq_error_t e;
    if (taskq_status(tq, tq_cli_request_ms(), &json, &e) < 0) {
        *status = tq_cli_lib_error(&e);
        json = NULL;
    }
    taskq_close(&tq);
    return json;
}

/* 1 when the status document reports a fault: a journal error. */
static int master_fault(const cJSON *doc)
{
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(doc, "journal");
    return cJSON_IsString(cJSON_GetObjectItemCaseSensitive(jn, "error"));
}

/* `status` (workers 0) or `workers` (1): print the document as JSON or
 * for people. The human `status` exits TQ_EXIT_FAULT when the master
 * reports a fault; --json always exits 0 (the document says it). */
static int show_status(const char *name, int workers, global_t *g, const status_settings_t *s,
                       int argc, char **argv)
{
    int status;
    char *json = fetch_status(name, g, argc, argv, &status);
    if (!json)
        return status;
    status = TQ_EXIT_OK;
    if (s->json && !workers) {
        fputs(json, stdout);
        fputc('\n', stdout);
    } else {
        cJSON *doc = cJSON_Parse(json);
        if (!doc) {
            fprintf(stderr, "taskq: the master's status reply is not JSON\n");
            status = TQ_EXIT_INTERNAL;
        } else if (s->json) {
            /* task ids in full: cJSON would print 1796648618818370 as
             * 1.79664861881837e+15 */
            cJSON *w;
            cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(doc, "workers"))
            {
                cJSON *ids = cJSON_GetObjectItemCaseSensitive(w, "running");
                for (cJSON *id = ids ? ids->child : NULL, *next; id; id = next) {
                    next = id->next;
                    if (cJSON_IsNumber(id)) {
                        char buf[32];
                        snprintf(buf, sizeof buf, "%.0f", id->valuedouble);
                        cJSON_ReplaceItemViaPointer(ids, id, cJSON_CreateRaw(buf));
                    }
                }
            }
            char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "workers"));
            printf("%s\n", text ? text : "[]");
            free(text);
        } else if (workers) {
            print_workers(stdout, doc);
        } else {
            print_status(stdout, doc);
            status = master_fault(doc) ? TQ_EXIT_FAULT : TQ_EXIT_OK;
        }
        cJSON_Delete(doc);
    }
    fflush(stdout);
    free(json);
    return status;
}

static int run_workers(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)cmd;
    return show_status("workers", 1, g, settings, argc, argv);
}

/* keygen NAME: no connection; the key files of key-pair mode. */
static int run_keygen(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)cmd;
    (void)g;
    (void)settings;
    if (argc != 1 || !argv[0][0])
        return tq_cli_usage_error("keygen: give one NAME (writes NAME.key and NAME.pub)");
    char pub[TQ_Z85_KEY_LEN + 1];
    tq_err_t err;
    if (tq_keyfile_generate(argv[0], pub, &err) < 0) {
        fflush(stdout);
        fprintf(stderr, "taskq: %s\n", err.msg);
        return TQ_EXIT_ENV;
    }
    printf("%s\n", pub);
    fflush(stdout);
    fprintf(stderr, "taskq: wrote %s.key (secret, mode 0600) and %s.pub (public)\n", argv[0],
            argv[0]);
    return TQ_EXIT_OK;
}

static int run_status(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)cmd;
    return show_status("status", 0, g, settings, argc, argv);
}

/* ---- main -------------------------------------------------------------- */

/* taskq(1)'s generated part: the global options, then each command
 * with its arguments, summary and options (scdoc markup). */
static void print_scdoc(FILE *out)
{
    fputs("# GLOBAL OPTIONS\n\n", out);
    tq_cfg_scdoc(global_table, out);
    fputs("# COMMANDS\n\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const command_t *c = &commands[i];
        fprintf(out, "## %s %s\n\n%s.\n\n", c->name, c->args, c->summary);
        tq_cfg_scdoc(c->table, out);
    }
}

int main(int argc, char **argv)
{
    tq_process_protect(); /* no core file or ptrace with the keys in memory */
    static char outbuf[STDOUT_BUFFER];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    tq_log_init("taskq");
    tq_log_set_level(TQ_LOG_WARN);

    /* The man page's option lists are generated from the same tables. */
    if (argc == 2 && strcmp(argv[1], "--help-scdoc") == 0) {
        print_scdoc(stdout);
        return TQ_EXIT_OK;
    }
    global_t g;
    memset(&g, 0, sizeof g);
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0, status;
    tq_args_t gargs = {0}, cargs = {0};
    if (tq_args_expand(global_table, global_shorts, argc, argv, 1, &gargs, err, sizeof err) < 0 ||
        tq_cfg_parse(global_table, &g, gargs.argc, gargs.argv, &argi, &help, err, sizeof err) < 0) {
        status = tq_cli_usage_error("%s", err);
        goto out;
    }
    argc = gargs.argc;
    argv = gargs.argv;
    if (help || g.help) {
        print_main_help(stdout);
        status = TQ_EXIT_OK;
        goto out;
    }
    if (g.version) {
        printf("taskq %s\n", TQ_VERSION);
        status = TQ_EXIT_OK;
        goto out;
    }
    if (argi >= argc) {
        status = tq_cli_usage_error("no COMMAND given (%s; see taskq --help)", COMMAND_LIST);
        goto out;
    }
    /* taskq help [COMMAND] */
    if (strcmp(argv[argi], "help") == 0) {
        if (argi + 1 >= argc) {
            print_main_help(stdout);
            status = TQ_EXIT_OK;
        } else if (argi + 2 < argc) {
            status = tq_cli_usage_error("help: unexpected argument '%.64s'", argv[argi + 2]);
        } else if (find_command(argv[argi + 1])) {
            print_command_help(find_command(argv[argi + 1]), stdout);
            status = TQ_EXIT_OK;
        } else {
            status = unknown_command(argv[argi + 1]);
        }
        goto out;
    }
    const command_t *cmd = find_command(argv[argi]);
    if (!cmd) {
        status = unknown_command(argv[argi]);
        goto out;
    }
    argi++;
    void *settings = tq_calloc(1, cmd->settings_size);
    if (tq_args_expand(cmd->table, command_shorts, argc, argv, argi, &cargs, err, sizeof err) < 0 ||
        tq_cfg_parse(cmd->table, settings, cargs.argc, cargs.argv, &argi, &help, err, sizeof err) <
            0) {
        status = tq_cli_usage_error("%s: %s", cmd->name, err);
    } else if (help || *(int *)((char *)settings + cmd->help_offset)) {
        print_command_help(cmd, stdout);
        status = TQ_EXIT_OK;
    } else {
        status = cmd->run(cmd, &g, settings, cargs.argc - argi, cargs.argv + argi);
    }
    tq_cfg_free(cmd->table, settings);
    free(settings);
out:
    fflush(stdout);
    tq_args_free(&cargs);
    tq_args_free(&gargs);
    tq_cfg_free(global_table, &g);
    return status;
}
