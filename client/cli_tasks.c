/* cli_tasks.c - the taskq commands that move tasks: submit and map (one
 * pipeline: payloads from the arguments or stdin, a bounded in-order
 * window, output in input order) and wait. The contract is docs/cli.md;
 * global options and dispatch are cli.c. */
#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "output.h"
#include "reorder.h"
#include "taskq.h"
#include "tq_exit.h"
#include "tq_idmap.h"
#include "tq_limits.h"
#include "tq_proto.h"
#include "tq_util.h"
#include "when.h"

/* stdin read chunk. */
#define STDIN_CHUNK (64 * 1024)
/* How long to wait for events while stdin has nothing to read yet. */
#define STDIN_IDLE_MS 50
/* Progress bar refresh. */
#define PROGRESS_MS 200
/* map's default --window, and the most it grows to when the workers'
 * total credit is larger (a ring slot is 48 bytes; results are held
 * only until printed): 131,072 tasks in flight. */
#define MAP_DEFAULT_WINDOW 10000
#define MAP_AUTO_WINDOW_MAX 131072

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
            fprintf(stderr,
                    "taskq: stdin line %" PRIu64
                    ": payload too large (the master allows %zu bytes)\n",
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
        return tq_cli_usage_error("--fn: '%.80s' is not a valid function name (1..%d of A-Z a-z "
                                  "0-9 _ . : -)",
                                  s->fn, TQ_MAX_NAME);
    if (!tq_name_valid(tq_bytes_str(s->queue)))
        return tq_cli_usage_error("--queue: '%.80s' is not a valid queue name (1..%d of A-Z a-z "
                                  "0-9 _ . : -)",
                                  s->queue, TQ_MAX_NAME);
    if (s->key && (strlen(s->key) == 0 || strlen(s->key) > TQ_MAX_KEY))
        return tq_cli_usage_error("--key: must be 1..%d bytes", TQ_MAX_KEY);
    return 0;
}

/* --delay / --at, checked before connecting. *delay_ms gets the delay
 * and *at_ms the absolute Unix ms (0: none, or at once). Returns 0 or the
 * usage exit status after naming the flag and its value. */
static int check_not_before(const task_settings_t *s, int64_t *delay_ms, int64_t *at_ms)
{
    *delay_ms = *at_ms = 0;
    if (s->delay && s->at)
        return tq_cli_usage_error("--delay and --at cannot be used together");
    if (s->delay && tq_when_parse_delay(s->delay, delay_ms) < 0)
        return tq_cli_usage_error("--delay: '%.80s' is not a number of seconds from 0 to %lld "
                                  "(10 years)",
                                  s->delay, TQ_WHEN_MAX_DELAY_MS / 1000);
    if (s->at && tq_when_parse_at(s->at, at_ms) < 0)
        return tq_cli_usage_error("--at: '%.80s' is not an RFC 3339 time such as "
                                  "2026-11-22T10:00:00Z or 2026-11-22T10:00:00.5+01:00",
                                  s->at);
    if (*at_ms > TQ_MAX_NOT_BEFORE_MS)
        return tq_cli_usage_error("--at: '%.80s' is after 9999-12-31T23:59:59Z", s->at);
    return 0;
}

/* The total credit (slots + prefetch) of the active workers, from one
 * STATUS, or 0 when it cannot be read. */
static size_t workers_credit(taskq_t *tq)
{
    char *json = NULL;
    taskq_error_t e;
    if (taskq_status(tq, 5000, &json, &e) < 0)
        return 0;
    cJSON *j = cJSON_Parse(json);
    free(json);
    size_t total = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(j, "workers"))
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(w, "state");
        const cJSON *sl = cJSON_GetObjectItemCaseSensitive(w, "slots");
        const cJSON *pf = cJSON_GetObjectItemCaseSensitive(w, "prefetch");
        if (cJSON_IsString(st) && strcmp(st->valuestring, "active") == 0 && cJSON_IsNumber(sl) &&
            cJSON_IsNumber(pf) && sl->valuedouble >= 0 && pf->valuedouble >= 0 &&
            sl->valuedouble + pf->valuedouble < (double)MAP_AUTO_WINDOW_MAX)
            total += (size_t)(sl->valuedouble + pf->valuedouble);
        if (total >= MAP_AUTO_WINDOW_MAX)
            break;
    }
    cJSON_Delete(j);
    return total;
}

/* Submit every payload of src, at most `window` not yet printed, and
 * print in input order: task ids (submit) or results (map). Returns the
 * exit status. */
static int pipeline(const char *cmd, global_t *g, task_settings_t *s, int argc, char **argv,
                    int map_mode)
{
    int status = 0;
    int64_t delay_ms, at_ms;
    if ((status = check_task_settings(s)) || (status = check_not_before(s, &delay_ms, &at_ms)))
        return status;
    if (argc == 0)
        return tq_cli_usage_error("%s: no PAYLOAD given (or '-' to read them from stdin)", cmd);
    int from_stdin = argc == 1 && strcmp(argv[0], "-") == 0;
    if (!from_stdin)
        for (int i = 0; i < argc; i++)
            if (strcmp(argv[i], "-") == 0)
                return tq_cli_usage_error("%s: '-' (read stdin) must be the only PAYLOAD", cmd);
    if (s->key && (from_stdin || argc > 1))
        return tq_cli_usage_error("--key: names one task, so give exactly one PAYLOAD");

    taskq_t *tq = tq_cli_connect(g, &status);
    if (!tq)
        return status;

    source_t *src = tq_calloc(1, sizeof *src);
    src->args = argv;
    src->nargs = argc;
    src->from_stdin = from_stdin;
    src->max_len = taskq_max_payload(tq);

    size_t window = map_mode ? (size_t)s->window : MAP_DEFAULT_WINDOW;
    /* map from stdin with the default window: at least the workers'
     * total credit, so none sits idle for want of tasks (docs/cli.md) */
    if (map_mode && from_stdin && window == MAP_DEFAULT_WINDOW) {
        size_t credit = workers_credit(tq);
        if (credit > window)
            window = credit < MAP_AUTO_WINDOW_MAX ? credit : MAP_AUTO_WINDOW_MAX;
    }
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
    /* A delay counts from now, when the first task can go out; --at past
     * runs at once, as the master treats any past time. */
    o.not_before_ms = at_ms ? at_ms : delay_ms > 0 ? tq_wall_ms() + delay_ms : 0;
    if (o.not_before_ms > TQ_MAX_NOT_BEFORE_MS)
        o.not_before_ms = TQ_MAX_NOT_BEFORE_MS;

    taskq_error_t e;
    int eof = 0;
    int stop_status = 0; /* input stopped at a refused payload */
    uint64_t admitted = 0, answered = 0;
    for (;;) {
        /* Admit what the window allows and the input has ready. */
        /* Only read what is ready: while stdin is quiet we keep serving
         * the connection (heartbeats, results) below. */
        while (!eof && tq_reorder_inflight(ro) < window && source_ready(src)) {
            const char *p;
            size_t len;
            int r = source_next(src, &p, &len, &status);
            if (r < 0 && status == TQ_EXIT_REFUSED) {
                /* A payload the master would refuse: read no further, but
                 * finish what was already submitted, so every queued task
                 * has its id (and, for map, its result) printed. */
                stop_status = status;
                eof = 1;
                break;
            }
            if (r < 0)
                goto out;
            if (r == 0) {
                eof = 1;
                break;
            }
            if (len > taskq_max_payload(tq)) {
                progress_clear(&pr);
                fprintf(stderr,
                        "taskq: PAYLOAD %d: payload too large (%zu bytes; the master allows %zu)\n",
                        src->next, len, taskq_max_payload(tq));
                stop_status = TQ_EXIT_REFUSED;
                eof = 1;
                break;
            }
            uint64_t seq, lseq;
            TQ_ASSERT(tq_reorder_admit(ro, &seq) == 0);
            if (taskq_submit(tq, &o, p, len, map_mode ? TASKQ_SUBSCRIBE : 0, &lseq, &e) < 0) {
                progress_clear(&pr);
                if (e.code == TASKQ_ERR_REFUSED && src->from_stdin)
                    fprintf(stderr, "taskq: stdin line %" PRIu64 ": %s\n", src->lineno, e.message);
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
            status = tq_cli_lib_error(&e);
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
            /* The next to print is printed at the top of the loop, before
             * the next taskq_next_event: straight from the event. */
            if (seq && tq_reorder_fill_next(ro, seq, ev.status, ev.attempts, ev.data, ev.len) == 0)
                answered++;
        } else if (ev.type == TASKQ_EVENT_ERROR) {
            progress_clear(&pr);
            fflush(stdout);
            if (ev.count > 0)
                fprintf(stderr,
                        "taskq: master refused tasks %" PRIu64 "..%" PRIu64 " of the input: %s\n",
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
    if (stop_status && (status == TQ_EXIT_OK || status > stop_status))
        status = stop_status;
out:
    fflush(stdout);
    tq_idmap_destroy(&seq_of);
    tq_reorder_destroy(&ro);
    free(src->line);
    free(src);
    taskq_close(&tq);
    return status;
}

int tq_cli_run_submit(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    return pipeline(cmd->name, g, settings, argc, argv, 0);
}

int tq_cli_run_map(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    return pipeline(cmd->name, g, settings, argc, argv, 1);
}

/* ---- wait -------------------------------------------------------------- */

int tq_cli_run_wait(const command_t *cmd, global_t *g, void *settings, int argc, char **argv)
{
    wait_settings_t *s = settings;
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
        status = tq_cli_lib_error(&e);
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
                fprintf(stderr,
                        "taskq: timed out waiting for task %" PRIu64
                        " (%zu of %zu results not printed)\n",
                        miss ? miss->id : 0, tq_reorder_inflight(ro), n);
                tally.timed_out = 1;
                break;
            }
        }
        if (r < 0) {
            status = tq_cli_lib_error(&e);
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
