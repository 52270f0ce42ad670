/* output.h - how the taskq command prints task answers: plain text or
 * one JSON object per line, and how the answers fold into the exit
 * status. Kept apart from cli.c so that the formats are unit-tested. */
#ifndef TQ_OUTPUT_H
#define TQ_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Answers seen so far, for the exit status. */
typedef struct {
    size_t done, failed, unknown, cancelled;
    int timed_out;
} tq_tally_t;

/* Count one answer (a taskq_status_t). */
void tq_tally_add(tq_tally_t *t, int status);
/* The exit status (common/tq_exit.h): any failed or dead -> 1, else any
 * unknown -> 6, else any cancelled -> 5, else a timeout -> 4, else 0. */
int tq_tally_exit(const tq_tally_t *t);

/* Text mode. done: the result on out, plus "\n" unless it already ends
 * in one. failed/dead: nothing on out, "taskq: task ID failed: ERROR" on
 * err. cancelled/unknown: "taskq: task ID cancelled|unknown" on err. */
void tq_print_text(FILE *out, FILE *err, uint64_t id, int status, const void *data, size_t len);

/* JSON mode: one line {"id":N,"status":S,...,"attempts":N}. done adds
 * "result", failed/dead add "error"; a value that is not valid UTF-8 (or
 * holds a NUL byte) goes base64-encoded in "result_base64" /
 * "error_base64" instead. */
void tq_print_json(FILE *out, uint64_t id, int status, uint32_t attempts, const void *data,
                   size_t len);

/* JSON mode for submit: {"id":N,"status":"queued"}. */
void tq_print_json_queued(FILE *out, uint64_t id);

/* A task's error text made fit for one terminal line in out[size]:
 * trailing newlines removed, other control characters shown as '?',
 * truncated with "..." when longer than the buffer. */
void tq_output_error_line(const void *data, size_t len, char *out, size_t size);

#endif
