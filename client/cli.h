/* cli.h - inside the taskq command: the settings structs its option
 * tables fill, the command table's shape, and the helpers that cli.c
 * (global options, dispatch, help, status, cancel) shares with
 * cli_tasks.c (submit, map, wait) and cli_admin.c (dead, retry, purge,
 * pause, resume). Not installed. */
#ifndef TQ_CLI_H
#define TQ_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "taskq.h"
#include "tq_config.h"

/* The global options (before the COMMAND). */
typedef struct {
    char *connect;
    char *authkey_file;
    int64_t connect_timeout_ms;
    int64_t reconnect_timeout_ms;
    int64_t ack_timeout_ms; /* 0: wait for answers for ever */
    int version;
    int help;
    char *config;          /* the config file read (tq_config.h) */
    char *key_file;        /* --key: our key pair (key-pair mode) */
    char *master_key_file; /* --master-key: the master's public key */
} global_t;

/* submit and map share one settings struct; each has its own table. */
typedef struct {
    char *fn;
    char *queue;
    int64_t priority;
    int64_t timeout_ms;
    int64_t retries;
    char *key;
    char *delay; /* --delay SECONDS, as given (NULL: not given) */
    char *at;    /* --at TIME (RFC 3339), as given (NULL: not given) */
    int json;
    int64_t window;
    int help;
} task_settings_t;

typedef struct {
    int64_t timeout_ms;
    int json;
    int help;
} wait_settings_t;

/* dead */
typedef struct {
    char *queue;
    int json;
    int help;
} dead_settings_t;

/* retry and purge */
typedef struct {
    int all;
    int failed; /* with all: the failed set instead of the dead set */
    char *queue;
    int help;
} fix_settings_t;

/* put and get (plain queues) */
typedef struct {
    int64_t timeout_ms; /* get: how long to wait for an item */
    int64_t count;      /* get: items at most */
    int help;
} plain_settings_t;

/* pause and resume */
typedef struct {
    int help;
} queue_op_settings_t;

/* show */
typedef struct {
    int payload;
    int json;
    int help;
} show_settings_t;

/* list */
typedef struct {
    char *queue;
    char *state;
    char *fn;
    int64_t limit;
    char *after;
    int json;
    int help;
} list_settings_t;

/* queue empty|delete */
typedef struct {
    int json;
    int help;
} queue_settings_t;

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

/* Print "taskq: MESSAGE" on stderr (after flushing stdout) and return
 * the usage exit status. */
int tq_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print a library error as "taskq: MESSAGE" and return its category,
 * which is the exit status. */
int tq_cli_lib_error(const taskq_error_t *e);

/* Connect as the global options say. Returns NULL after printing the
 * error; *status gets the exit status. Caller closes the handle. */
taskq_t *tq_cli_connect(const global_t *g, int *status);
/* The bound for one request's answer (status, cancel, admin) after
 * tq_cli_connect: --ack-timeout in ms, or -1 (none). */
int tq_cli_request_ms(void);

/* Task ids from the arguments, or from stdin (whitespace-separated, as
 * `taskq submit` prints them) when the only argument is "-". Returns 0,
 * or the usage exit status after printing which id is wrong. Caller frees
 * *ids_out. */
int tq_cli_parse_ids(const char *cmd, int argc, char **argv, uint64_t **ids_out, size_t *n_out);

/* The commands of cli_tasks.c; settings is the command's settings
 * struct, argv its arguments after the options. Each returns the exit
 * status (common/tq_exit.h) after printing what it has to say. */
int tq_cli_run_submit(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_map(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_wait(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);

/* The commands of cli_admin.c (operator requests, ADMIN in
 * proto/PROTOCOL.md); same shape as above. retry and purge tell
 * themselves apart by cmd->name, as do pause and resume. */
int tq_cli_run_dead(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_fix(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_show(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_list(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_queue(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_worker_op(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);
int tq_cli_run_queue_op(const command_t *cmd, global_t *g, void *settings, int argc, char **argv);

#endif
