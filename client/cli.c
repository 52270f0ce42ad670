/* cli.c - the taskq command: submit, map, wait, status, cancel, on top
 * of libtaskq. The command-line contract is in /docs/cli.md (and
 * DESIGN.md); global options and each command's options are one
 * tq_cfg_entry_t table each, which also generates --help. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "output.h"
#include "reorder.h"
#include "taskq.h"
#include "tq_config.h"
#include "tq_exit.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_util.h"

#ifndef TQ_VERSION
#define TQ_VERSION "0.1.0"
#endif

/* stdout buffer: results are many small writes; flushed whenever we block. */
#define STDOUT_BUFFER (256 * 1024)
/* stdin read chunk. */
#define STDIN_CHUNK (64 * 1024)
/* How long to wait for events while stdin has nothing to read yet. */
#define STDIN_IDLE_MS 50
/* Progress bar refresh. */
#define PROGRESS_MS 200

/* ---- settings tables ---------------------------------------------------- */

typedef struct {
    char *connect;
    char *authkey_file;
    int64_t connect_timeout_ms;
    int version;
    int help;
} global_t;

static const tq_cfg_entry_t global_table[] = {
    {"connect", TQ_CFG_STRING, "tcp://127.0.0.1:7070", 0, 0, NULL, "TASKQ_CONNECT",
     offsetof(global_t, connect), "ENDPOINT", "the master's endpoint"},
    {"authkey-file", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_AUTHKEY_FILE",
     offsetof(global_t, authkey_file), "FILE", "file holding the shared authkey (mode 0600)"},
    {"connect-timeout", TQ_CFG_MS, "10", 1, 3600 * 1000, NULL, NULL,
     offsetof(global_t, connect_timeout_ms), "S", "give up connecting after S seconds"},
    {"version", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(global_t, version), NULL,
     "print the version and exit"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(global_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* submit and map share one settings struct; each has its own table. */
typedef struct {
    char *fn;
    char *queue;
    int64_t priority;
    int64_t timeout_ms;
    int64_t retries;
    char *key;
    int json;
    int64_t window;
    int help;
} task_settings_t;

#define TASK_COMMON_ENTRIES                                                                        \
    {"fn", TQ_CFG_STRING, "square", 0, 0, NULL, NULL, offsetof(task_settings_t, fn), "NAME",       \
     "function the workers run"},                                                                  \
        {"queue", TQ_CFG_STRING, "default", 0, 0, NULL, NULL, offsetof(task_settings_t, queue),    \
         "Q", "queue to put the tasks in"},                                                        \
        {"priority", TQ_CFG_INT, "0", INT32_MIN, INT32_MAX, NULL, NULL,                            \
         offsetof(task_settings_t, priority), "P", "higher runs first"},                           \
        {"timeout", TQ_CFG_MS, "0", 0, UINT32_MAX, NULL, NULL,                                     \
         offsetof(task_settings_t, timeout_ms), "SECONDS",                                         \
         "run timeout of each task on a worker (0: none)"},                                        \
        {"retries", TQ_CFG_INT, "0", 0, UINT16_MAX, NULL, NULL,                                    \
         offsetof(task_settings_t, retries), "N",                                                  \
         "re-runs after a failed or timed-out run (a lost worker never uses one)"},                                          \
        {"json", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, json), NULL,       \
         "print one JSON object per task"}

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
    {"window", TQ_CFG_INT, "10000", 1, 1000000, NULL, NULL, offsetof(task_settings_t, window),
     "N", "at most N tasks submitted and not yet printed"},
    {"help", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(task_settings_t, help), NULL,
     "print this help and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

typedef struct {
    int64_t timeout_ms;
    int json;
    int help;
} wait_settings_t;

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

/* ---- commands ------------------------------------------------------------ */

typedef struct command command_t;
typedef int (*run_fn)(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);

struct command {
    const char *name;
    const tq_cfg_entry_t *table;
    size_t settings_size;
    size_t help_offset;  /* the int set by --help */
    const char *args;    /* synopsis of the arguments */
    const char *summary; /* one line for taskq --help */
    const char *details; /* more for taskq COMMAND --help */
    run_fn run;
};

static int run_submit(const command_t *, global_t *, void *, int, char **);
static int run_map(const command_t *, global_t *, void *, int, char **);
static int run_wait(const command_t *, global_t *, void *, int, char **);
static int run_status(const command_t *, global_t *, void *, int, char **);
static int run_cancel(const command_t *, global_t *, void *, int, char **);

static const command_t commands[] = {
    {"submit", submit_table, sizeof(task_settings_t), offsetof(task_settings_t, help), "PAYLOAD... | -",
     "queue tasks; print one task id per line, in input order",
     "'-' reads one payload per line from stdin (the newline is not part of it).\n"
     "With --json, prints {\"id\":N,\"status\":\"queued\"} per task.\n",
     run_submit},
    {"map", map_table, sizeof(task_settings_t), offsetof(task_settings_t, help), "PAYLOAD... | -",
     "submit all, print the results in input order as they become printable",
     "'-' reads one payload per line from stdin, lazily: at most --window tasks are\n"
     "in flight. Failed tasks print nothing on stdout and 'taskq: task ID failed: ERROR'\n"
     "on stderr. A progress bar is drawn on stderr when it is a terminal.\n",
     run_map},
    {"wait", wait_table, sizeof(wait_settings_t), offsetof(wait_settings_t, help), "ID...",
     "print each task's result on its own line, in the order of the ids",
     "Failed tasks print nothing on stdout and 'taskq: task ID failed: ERROR' on stderr.\n"
     "On --timeout, the results that arrived are printed up to the first missing one.\n",
     run_wait},
    {"status", status_table, sizeof(status_settings_t), offsetof(status_settings_t, help), "",
     "queues, counts per state, workers and rates", "", run_status},
    {"cancel", cancel_table, sizeof(cancel_settings_t), offsetof(cancel_settings_t, help), "ID...",
     "cancel tasks that have not finished",
     "Prints 'ID cancelled', 'ID already finished' or 'ID unknown' per id.\n", run_cancel},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void print_exit_table(FILE *out)
{
    fprintf(out, "exit status:\n"
                 "  %-3d everything succeeded\n"
                 "  %-3d at least one task failed (or is dead)\n"
                 "  %-3d bad flag or argument\n"
                 "  %-3d cannot connect, authentication failed, or the master went away\n"
                 "  %-3d --timeout passed before every result came\n"
                 "  %-3d at least one task was cancelled (and none failed)\n"
                 "  %-3d at least one task id is unknown to the master\n"
                 "  %-3d the master refused the request (too large, bad name, full, ...)\n"
                 "  %-3d cannot start: key file unreadable or unsafe\n"
                 "  %-3d a bug in taskq\n",
            TQ_EXIT_OK, TQ_EXIT_TASK_FAILED, TQ_EXIT_USAGE, TQ_EXIT_CONNECT, TQ_EXIT_TIMEOUT,
            TQ_EXIT_CANCELLED, TQ_EXIT_NOT_FOUND, TQ_EXIT_REFUSED, TQ_EXIT_ENV,
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
    fprintf(out, "\n'taskq COMMAND --help' lists a command's options.\n\n");
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

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "taskq: MESSAGE" and return the usage exit status. */
static int usage_error(const char *fmt, ...)
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

static int lib_error(const taskq_error_t *e)
{
    fflush(stdout);
    fprintf(stderr, "taskq: %s\n", e->message);
    return e->code ? e->code : TQ_EXIT_INTERNAL;
}

/* Connect as the global options say. Returns NULL after printing the
 * error; *status gets the exit status. */
static taskq_t *connect_master(const global_t *g, int *status)
{
    if (!g->authkey_file || !*g->authkey_file) {
        *status = usage_error("no authkey: give --authkey-file FILE or set TASKQ_AUTHKEY_FILE");
        return NULL;
    }
    taskq_error_t e;
    taskq_t *tq = taskq_connect(g->connect, g->authkey_file, (int)g->connect_timeout_ms, NULL, &e);
    if (!tq)
        *status = lib_error(&e);
    return tq;
}

/* Task ids from the arguments. Returns 0, or the usage exit status after
 * printing which argument is wrong. Caller frees *ids_out. */
static int parse_ids(const char *cmd, int argc, char **argv, uint64_t **ids_out, size_t *n_out)
{
    if (argc == 0)
        return usage_error("%s: no task ID given", cmd);
    uint64_t *ids = tq_calloc((size_t)argc, sizeof *ids);
    for (int i = 0; i < argc; i++) {
        if (tq_parse_u64(argv[i], &ids[i]) < 0 || ids[i] == 0) {
            free(ids);
            return usage_error("%s: '%.64s' is not a task id", cmd, argv[i]);
        }
    }
    *ids_out = ids;
    *n_out = (size_t)argc;
    return 0;
}

/* ---- payload source: arguments or stdin lines ----------------------------- */

typedef struct {
    char **args;
    int nargs, next;
    int from_stdin;
    size_t max_len;
    uint64_t lineno;
    char chunk[STDIN_CHUNK];
    size_t cpos, clen;
    int eof;
    char *line;
    size_t line_len, line_cap;
} source_t;

/* 1 if a line can be returned without blocking. */
static int source_ready(const source_t *s)
{
    if (!s->from_stdin || s->eof || s->cpos < s->clen)
        return 1;
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

/* The next payload in *p (valid until the next call). Returns 1, 0 at
 * the end, or -1 after printing an error (*status set). Lines from
 * stdin are capped at max_len bytes before they are stored. */
static int source_next(source_t *s, const char **p, size_t *len, int *status)
{
    if (!s->from_stdin) {
        if (s->next >= s->nargs)
            return 0;
        const char *a = s->args[s->next++];
        *p = a;
        *len = strlen(a);
        return 1;
    }
    s->line_len = 0;
    int any = 0;
    for (;;) {
        if (s->cpos == s->clen) {
            if (s->eof)
                break;
            ssize_t r = read(STDIN_FILENO, s->chunk, sizeof s->chunk);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                fprintf(stderr, "taskq: reading stdin: %s\n", strerror(errno));
                *status = TQ_EXIT_USAGE;
                return -1;
            }
            if (r == 0) {
                s->eof = 1;
                break;
            }
            s->cpos = 0;
            s->clen = (size_t)r;
        }
        any = 1;
        char *start = s->chunk + s->cpos;
        char *nl = memchr(start, '\n', s->clen - s->cpos);
        size_t take = nl ? (size_t)(nl - start) : s->clen - s->cpos;
        if (s->line_len + take > s->max_len) {
            fprintf(stderr, "taskq: stdin line %" PRIu64 ": payload too large (the master allows %zu bytes)\n",
                    s->lineno + 1, s->max_len);
            *status = TQ_EXIT_REFUSED;
            return -1;
        }
        if (s->line_len + take + 1 > s->line_cap) {
            s->line_cap = (s->line_len + take + 1) * 2;
            s->line = tq_realloc(s->line, s->line_cap);
        }
        memcpy(s->line + s->line_len, start, take);
        s->line_len += take;
        s->cpos += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (!any)
        return 0;
    s->lineno++;
    if (!s->line)
        s->line = tq_malloc(s->line_cap = 64);
    s->line[s->line_len] = '\0';
    *p = s->line;
    *len = s->line_len;
    return 1;
}

/* ---- progress bar ------------------------------------------------------ */

typedef struct {
    int on;
    int64_t start_ms, last_ms;
    int drawn;
} progress_t;

static void progress_draw(progress_t *pr, uint64_t done, uint64_t total, int total_known, int force)
{
    if (!pr->on)
        return;
    int64_t now = tq_mono_ms();
    if (!force && now - pr->last_ms < PROGRESS_MS)
        return;
    pr->last_ms = now;
    double secs = (double)(now - pr->start_ms) / 1000.0;
    double rate = secs > 0 ? (double)done / secs : 0.0;
    char bar[32];
    int width = (int)sizeof bar - 1, fill = 0;
    if (total > 0)
        fill = (int)((double)done / (double)total * width);
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r\033[K[%s] %" PRIu64 "/%" PRIu64 "%s  %.*f/s", bar, done, total,
            total_known ? "" : "+", rate < 10 ? 1 : 0, rate);
    fflush(stderr);
    pr->drawn = 1;
}

static void progress_clear(progress_t *pr)
{
    if (pr->on && pr->drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    pr->drawn = 0;
}

/* ---- submit and map: the pipeline ---------------------------------------- */

/* Validate the task flags locally so that a typo is a usage error naming
 * the flag, not a refusal from the master. */
static int check_task_settings(const task_settings_t *s)
{
    if (!tq_name_valid(tq_bytes_str(s->fn)))
        return usage_error("--fn: '%.80s' is not a valid function name (1..%d of A-Z a-z 0-9 _ . : -)",
                           s->fn, TQ_MAX_NAME);
    if (!tq_name_valid(tq_bytes_str(s->queue)))
        return usage_error("--queue: '%.80s' is not a valid queue name (1..%d of A-Z a-z 0-9 _ . : -)",
                           s->queue, TQ_MAX_NAME);
    if (s->key && (strlen(s->key) == 0 || strlen(s->key) > TQ_MAX_KEY))
        return usage_error("--key: must be 1..%d bytes", TQ_MAX_KEY);
    return 0;
}

/* Submit every payload of src, at most `window` not yet printed, and
 * print in input order: task ids (submit) or results (map). Returns the
 * exit status. */
static int pipeline(const char *cmd, global_t *g, task_settings_t *s, int argc, char **argv,
                    int map_mode)
{
    int status = 0;
    if ((status = check_task_settings(s)))
        return status;
    if (argc == 0)
        return usage_error("%s: no PAYLOAD given (or '-' to read them from stdin)", cmd);
    int from_stdin = argc == 1 && strcmp(argv[0], "-") == 0;
    if (!from_stdin)
        for (int i = 0; i < argc; i++)
            if (strcmp(argv[i], "-") == 0)
                return usage_error("%s: '-' (read stdin) must be the only PAYLOAD", cmd);
    if (s->key && (from_stdin || argc > 1))
        return usage_error("--key: names one task, so give exactly one PAYLOAD");

    taskq_t *tq = connect_master(g, &status);
    if (!tq)
        return status;

    source_t *src = tq_calloc(1, sizeof *src);
    src->args = argv;
    src->nargs = argc;
    src->from_stdin = from_stdin;
    src->max_len = taskq_max_payload(tq);

    size_t window = map_mode ? (size_t)s->window : 10000;
    tq_reorder_t *ro = tq_reorder_new(window);
    tq_idmap_t *seq_of = tq_idmap_new(); /* map: task id -> seq */
    tq_tally_t tally = {0};
    progress_t pr = {0};
    pr.on = map_mode && isatty(STDERR_FILENO);
    pr.start_ms = tq_mono_ms();

    taskq_task_opts_t o = TASKQ_TASK_OPTS_INIT;
    o.fn = s->fn;
    o.queue = s->queue;
    o.priority = (int32_t)s->priority;
    o.timeout_ms = (uint32_t)s->timeout_ms;
    o.retries = (uint16_t)s->retries;
    o.key = s->key;
    o.key_len = s->key ? strlen(s->key) : 0;

    taskq_error_t e;
    int eof = 0;
    uint64_t admitted = 0, answered = 0;
    for (;;) {
        /* Admit what the window allows and the input has ready. */
        /* Only read what is ready: while stdin is quiet we keep serving
         * the connection (heartbeats, results) below. */
        while (!eof && tq_reorder_inflight(ro) < window && source_ready(src)) {
            const char *p;
            size_t len;
            int r = source_next(src, &p, &len, &status);
            if (r < 0)
                goto out;
            if (r == 0) {
                eof = 1;
                break;
            }
            uint64_t seq, lseq;
            TQ_ASSERT(tq_reorder_admit(ro, &seq) == 0);
            if (taskq_submit(tq, &o, p, len, map_mode ? TASKQ_SUBSCRIBE : 0, &lseq, &e) < 0) {
                progress_clear(&pr);
                if (e.code == TASKQ_ERR_REFUSED && src->from_stdin)
                    fprintf(stderr, "taskq: stdin line %" PRIu64 ": %s\n", src->lineno,
                            e.message);
                else
                    fprintf(stderr, "taskq: %s\n", e.message);
                status = e.code;
                goto out;
            }
            TQ_ASSERT(lseq == seq); /* both count tasks from 1 in submit order */
            admitted++;
        }

        /* Print the in-order prefix that is complete. */
        const tq_slot_t *sl;
        while ((sl = tq_reorder_peek(ro))) {
            if (!map_mode) {
                if (s->json)
                    tq_print_json_queued(stdout, sl->id);
                else
                    printf("%" PRIu64 "\n", sl->id);
            } else {
                tq_tally_add(&tally, sl->status);
                if (!s->json && sl->status != TASKQ_DONE) {
                    fflush(stdout); /* keep stdout and stderr lines in order */
                    progress_clear(&pr);
                }
                if (s->json)
                    tq_print_json(stdout, sl->id, sl->status, sl->attempts, sl->data, sl->len);
                else
                    tq_print_text(stdout, stderr, sl->id, sl->status, sl->data, sl->len);
            }
            tq_reorder_pop(ro);
        }
        if (eof && tq_reorder_inflight(ro) == 0)
            break;

        /* Next event: look first; flush stdout only before really waiting. */
        taskq_event_t ev;
        int r = taskq_next_event(tq, 0, &ev, &e);
        if (r == 0) {
            fflush(stdout);
            progress_draw(&pr, answered, admitted, eof, 0);
            int wait_ms = -1;
            if (!eof && tq_reorder_inflight(ro) < window)
                wait_ms = STDIN_IDLE_MS; /* stdin may have more soon */
            if (pr.on && (wait_ms < 0 || wait_ms > PROGRESS_MS))
                wait_ms = PROGRESS_MS;
            r = taskq_next_event(tq, wait_ms, &ev, &e);
        }
        if (r < 0) {
            progress_clear(&pr);
            status = lib_error(&e);
            goto out;
        }
        if (r == 0)
            continue;
        if (ev.type == TASKQ_EVENT_SUBMITTED) {
            tq_slot_t *slot = tq_reorder_slot(ro, ev.seq);
            if (!slot)
                continue;
            slot->id = ev.id;
            if (map_mode)
                tq_idmap_put(seq_of, ev.id, (void *)(uintptr_t)ev.seq);
            else
                tq_reorder_fill(ro, ev.seq, 0, 0, NULL, 0);
        } else if (ev.type == TASKQ_EVENT_RESULT) {
            uint64_t seq = (uint64_t)(uintptr_t)tq_idmap_remove(seq_of, ev.id);
            if (seq && tq_reorder_fill(ro, seq, ev.status, ev.attempts, ev.data, ev.len) == 0)
                answered++;
        } else if (ev.type == TASKQ_EVENT_ERROR) {
            progress_clear(&pr);
            fflush(stdout);
            if (ev.count > 0)
                fprintf(stderr, "taskq: master refused tasks %" PRIu64 "..%" PRIu64 " of the input: %s\n",
                        ev.seq, ev.seq + ev.count - 1, ev.message);
            else
                fprintf(stderr, "taskq: master refused the request: %s\n", ev.message);
            status = ev.code;
            goto out;
        }
        if (map_mode)
            progress_draw(&pr, answered, admitted, eof, 0);
    }
    progress_clear(&pr);
    status = map_mode ? tq_tally_exit(&tally) : TQ_EXIT_OK;
out:
    fflush(stdout);
    tq_idmap_destroy(&seq_of);
    tq_reorder_destroy(&ro);
    free(src->line);
    free(src);
    taskq_close(&tq);
    return status;
}

static int run_submit(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    return pipeline(cmd->name, g, settings, argc, argv, 0);
}

static int run_map(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    return pipeline(cmd->name, g, settings, argc, argv, 1);
}

/* ---- wait -------------------------------------------------------------- */

static int run_wait(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    wait_settings_t *s = settings;
    uint64_t *ids;
    size_t n;
    int status = parse_ids(cmd->name, argc, argv, &ids, &n);
    if (status)
        return status;
    taskq_t *tq = connect_master(g, &status);
    if (!tq) {
        free(ids);
        return status;
    }
    /* Positions 1..n in a window of n; an id given twice fills each of
     * its positions (first[] and next[] chain them). */
    tq_reorder_t *ro = tq_reorder_new(n);
    tq_idmap_t *first = tq_idmap_new();
    size_t *next = tq_calloc(n + 1, sizeof *next);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq;
        TQ_ASSERT(tq_reorder_admit(ro, &seq) == 0);
        tq_reorder_slot(ro, seq)->id = ids[i];
        size_t head = (size_t)(uintptr_t)tq_idmap_get(first, ids[i]);
        if (!head) {
            tq_idmap_put(first, ids[i], (void *)(uintptr_t)seq);
        } else {
            while (next[head])
                head = next[head];
            next[head] = (size_t)seq;
        }
    }
    tq_tally_t tally = {0};
    taskq_error_t e;
    int64_t deadline = s->timeout_ms > 0 ? tq_mono_ms() + s->timeout_ms : -1;
    if (taskq_wait(tq, ids, n, &e) < 0) {
        status = lib_error(&e);
        goto out;
    }
    for (;;) {
        const tq_slot_t *sl;
        while ((sl = tq_reorder_peek(ro))) {
            tq_tally_add(&tally, sl->status);
            if (s->json) {
                tq_print_json(stdout, sl->id, sl->status, sl->attempts, sl->data, sl->len);
            } else {
                if (sl->status != TASKQ_DONE)
                    fflush(stdout);
                tq_print_text(stdout, stderr, sl->id, sl->status, sl->data, sl->len);
            }
            tq_reorder_pop(ro);
        }
        if (tq_reorder_inflight(ro) == 0)
            break;
        taskq_event_t ev;
        int r = taskq_next_event(tq, 0, &ev, &e);
        if (r == 0) {
            fflush(stdout);
            int left = -1;
            if (deadline >= 0) {
                int64_t l = deadline - tq_mono_ms();
                left = l > 0 ? (int)l : 0;
            }
            r = left == 0 ? 0 : taskq_next_event(tq, left, &ev, &e);
            if (r == 0 && deadline >= 0 && tq_mono_ms() >= deadline) {
                const tq_slot_t *miss = tq_reorder_oldest(ro);
                fflush(stdout);
                fprintf(stderr, "taskq: timed out waiting for task %" PRIu64 " (%zu of %zu results not printed)\n",
                        miss ? miss->id : 0, tq_reorder_inflight(ro), n);
                tally.timed_out = 1;
                break;
            }
        }
        if (r < 0) {
            status = lib_error(&e);
            goto out;
        }
        if (r == 1 && ev.type == TASKQ_EVENT_RESULT) {
            size_t seq = (size_t)(uintptr_t)tq_idmap_get(first, ev.id);
            for (; seq; seq = next[seq])
                tq_reorder_fill(ro, seq, ev.status, ev.attempts, ev.data, ev.len);
        } else if (r == 1 && ev.type == TASKQ_EVENT_ERROR) {
            fflush(stdout);
            fprintf(stderr, "taskq: master refused the request: %s\n", ev.message);
            status = ev.code;
            goto out;
        }
    }
    status = tq_tally_exit(&tally);
out:
    fflush(stdout);
    free(next);
    tq_idmap_destroy(&first);
    tq_reorder_destroy(&ro);
    free(ids);
    taskq_close(&tq);
    return status;
}

/* ---- cancel ------------------------------------------------------------ */

static int run_cancel(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    (void)settings;
    uint64_t *ids;
    size_t n;
    int status = parse_ids(cmd->name, argc, argv, &ids, &n);
    if (status)
        return status;
    taskq_t *tq = connect_master(g, &status);
    if (!tq) {
        free(ids);
        return status;
    }
    int *outcomes = tq_calloc(n, sizeof *outcomes);
    taskq_error_t e;
    if (taskq_cancel(tq, ids, n, outcomes, -1, &e) < 0) {
        status = lib_error(&e);
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

/* ---- status ------------------------------------------------------------ */

static double jnum(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

/* A string field made safe for one terminal cell. */
static void jstr(const cJSON *obj, const char *name, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    const char *s = cJSON_IsString(v) && v->valuestring ? v->valuestring : "-";
    tq_error_line(s, strlen(s), out, size);
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
    fprintf(out, ", %.0f client(s), %d worker(s)\n", jnum(doc, "clients"),
            cJSON_IsArray(workers) ? cJSON_GetArraySize(workers) : 0);
    fprintf(out,
            "tasks: %.0f queued, %.0f running, %.0f submitted, %.0f done, %.0f failed, "
            "%.0f cancelled, %.0f requeued; %.1f submitted/s, %.1f done/s\n",
            jnum(t, "queued"), jnum(t, "running"), jnum(t, "submitted"), jnum(t, "done"),
            jnum(t, "failed"), jnum(t, "cancelled"), jnum(t, "requeued"),
            jnum(r, "submitted_per_s"), jnum(r, "done_per_s"));

    int w = 5;
    const cJSON *q;
    cJSON_ArrayForEach(q, queues) {
        jstr(q, "name", a, sizeof a);
        if ((int)strlen(a) > w)
            w = (int)strlen(a);
    }
    fprintf(out, "\n%-*s %10s %10s %10s %10s %10s\n", w, "QUEUE", "QUEUED", "RUNNING", "DONE",
            "FAILED", "CANCELLED");
    cJSON_ArrayForEach(q, queues) {
        jstr(q, "name", a, sizeof a);
        fprintf(out, "%-*s %10.0f %10.0f %10.0f %10.0f %10.0f\n", w, a, jnum(q, "queued"),
                jnum(q, "running"), jnum(q, "done"), jnum(q, "failed"), jnum(q, "cancelled"));
    }

    int wn = 6, wa = 7;
    cJSON_ArrayForEach(q, workers) {
        jstr(q, "name", a, sizeof a);
        jstr(q, "address", b, sizeof b);
        if ((int)strlen(a) > wn)
            wn = (int)strlen(a);
        if ((int)strlen(b) > wa)
            wa = (int)strlen(b);
    }
    fprintf(out, "\n%-*s %-*s %5s %5s %-8s %s\n", wn, "WORKER", wa, "ADDRESS", "SLOTS", "BUSY",
            "STATE", "FUNCTIONS");
    cJSON_ArrayForEach(q, workers) {
        char st[32];
        jstr(q, "name", a, sizeof a);
        jstr(q, "address", b, sizeof b);
        jstr(q, "state", st, sizeof st);
        fprintf(out, "%-*s %-*s %5.0f %5.0f %-8s ", wn, a, wa, b, jnum(q, "slots"),
                jnum(q, "busy"), st);
        const cJSON *fns = cJSON_GetObjectItemCaseSensitive(q, "functions");
        const cJSON *f;
        int first = 1;
        cJSON_ArrayForEach(f, fns) {
            if (!cJSON_IsString(f))
                continue;
            tq_error_line(f->valuestring, strlen(f->valuestring), a, sizeof a);
            fprintf(out, "%s%s", first ? "" : ",", a);
            first = 0;
        }
        fprintf(out, "%s\n", first ? "-" : "");
    }
}

static int run_status(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    status_settings_t *s = settings;
    (void)cmd;
    if (argc > 0)
        return usage_error("status: unexpected argument '%.64s'", argv[0]);
    int status;
    taskq_t *tq = connect_master(g, &status);
    if (!tq)
        return status;
    char *json = NULL;
    taskq_error_t e;
    if (taskq_status(tq, -1, &json, &e) < 0) {
        status = lib_error(&e);
    } else if (s->json) {
        fputs(json, stdout);
        fputc('\n', stdout);
        status = TQ_EXIT_OK;
    } else {
        cJSON *doc = cJSON_Parse(json);
        if (doc) {
            print_status(stdout, doc);
            status = TQ_EXIT_OK;
        } else {
            fprintf(stderr, "taskq: the master's status reply is not JSON\n");
            status = TQ_EXIT_INTERNAL;
        }
        cJSON_Delete(doc);
    }
    fflush(stdout);
    free(json);
    taskq_close(&tq);
    return status;
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static char outbuf[STDOUT_BUFFER];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    tq_log_init("taskq");
    tq_log_set_level(TQ_LOG_WARN);

    global_t g;
    memset(&g, 0, sizeof g);
    char err[512];
    int argi = 1, help = 0, status;
    if (tq_cfg_parse(global_table, &g, argc, argv, &argi, &help, err, sizeof err) < 0) {
        status = usage_error("%s", err);
        goto out;
    }
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
        status = usage_error("no COMMAND given (submit, map, wait, status, cancel; see taskq --help)");
        goto out;
    }
    const command_t *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[argi], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        status = usage_error("unknown command '%.64s' (submit, map, wait, status, cancel)",
                             argv[argi]);
        goto out;
    }
    argi++;
    void *settings = tq_calloc(1, cmd->settings_size);
    if (tq_cfg_parse(cmd->table, settings, argc, argv, &argi, &help, err, sizeof err) < 0) {
        status = usage_error("%s: %s", cmd->name, err);
    } else if (help || *(int *)((char *)settings + cmd->help_offset)) {
        print_command_help(cmd, stdout);
        status = TQ_EXIT_OK;
    } else {
        status = cmd->run(cmd, &g, settings, argc - argi, argv + argi);
    }
    tq_cfg_free(cmd->table, settings);
    free(settings);
out:
    fflush(stdout);
    tq_cfg_free(global_table, &g);
    return status;
}
