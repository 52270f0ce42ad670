/* run.h - what a task handler is given and what it gives back. Shared by
 * the built-ins (builtins.c), external commands (command.c), C functions
 * (cfn.c) and the slot threads (pool.c). Nothing here touches the
 * network. */
#ifndef TQ_WORKER_RUN_H
#define TQ_WORKER_RUN_H

#include <stddef.h>
#include <stdint.h>

/* Resource limits applied (setrlimit) in a child process that runs a
 * task; 0 = no limit. */
typedef struct {
    uint64_t memory;      /* RLIMIT_AS, bytes */
    uint64_t cpu_seconds; /* RLIMIT_CPU soft limit (SIGXCPU; SIGKILL 1 s later) */
} tq_limits_t;

/* One task's input. The handler must return promptly once cancel_fd
 * becomes readable (the task was killed, or the worker is shutting
 * down); the caller then ignores the outcome. */
typedef struct {
    const uint8_t *payload;
    size_t len;
    int cancel_fd;       /* readable when the task must stop; -1: never */
    uint32_t timeout_ms; /* run timeout from DISPATCH, 0 = none */
    int64_t deadline_ms; /* tq_run_now_ms() value at which it times out; 0 = none */
    size_t max_result;   /* the master's max_payload: cap on the result */
    tq_limits_t limits;  /* for child processes (commands, isolated modes) */
} tq_run_ctx_t;

/* One task's outcome: status (tq_run_status_t) and the result or error
 * text. data is heap memory owned by whoever holds the struct. */
typedef struct {
    int status;
    uint8_t *data;
    size_t len;
} tq_run_result_t;

/* Monotonic clock in milliseconds (CLOCK_MONOTONIC). */
int64_t tq_run_now_ms(void);

/* Set r to status with a copy of p[n] (replacing what r held). On
 * out-of-memory the result becomes a short failure text. */
void tq_run_result_set(tq_run_result_t *r, int status, const void *p, size_t n);
/* Set r to status with a printf-formatted text (at most 8 KiB). */
void tq_run_result_fmt(tq_run_result_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set r to TQ_RUN_TIMEOUT "timed out after S s" for ctx's timeout. */
void tq_run_result_timeout(tq_run_result_t *r, const tq_run_ctx_t *ctx);
/* Free r's data and zero it. */
void tq_run_result_free(tq_run_result_t *r);

/* Quote at most 64 bytes of p[n] into out[outlen] as 'text', escaping
 * quotes, backslashes and non-printable bytes (\xNN); "..." after the
 * closing quote when p was longer. Always NUL-terminates. */
void tq_run_quote(const uint8_t *p, size_t n, char *out, size_t outlen);

/* Trim ASCII whitespace around p[n]: *start and *len of the rest. */
void tq_run_trim(const uint8_t *p, size_t n, size_t *start, size_t *len);

#endif
