/* main.c - taskq-worker: the settings table, start-up checks, signals.
 *
 *   taskq-worker --connect ENDPOINT --authkey-file FILE [--concurrency N]
 *                [--fn NAME=COMMAND]... [--plugin PATH.so]... [options]
 *
 * A program on libtaskq's worker API (taskq.h): it registers the
 * built-ins, the --fn commands and the plugins' functions, and runs the
 * worker; SIGTERM/SIGINT call taskq_worker_stop. The engine is
 * workerlib/, inside libtaskq. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "taskq.h"
#include "tq_args.h"
#include "tq_authkey.h"
#include "tq_config.h"
#include "tq_exit.h"
#include "tq_proto.h"
#include "tq_util.h"

#ifndef TQ_VERSION
#define TQ_VERSION "0.0.0"
#endif

#define DEFAULT_CONNECT "tcp://127.0.0.1:7070"

typedef struct {
    char *connect;
    char *authkey_file;
    char *key_file;
    char *master_key_file;
    int64_t concurrency;
    char *prefetch;
    char *name;
    tq_strlist_t fn;
    tq_strlist_t plugin;
    tq_strlist_t fn_mode;
    int64_t task_memory;
    int64_t task_cpu_seconds;
    char *functions;
    int64_t drain_timeout_ms;
    char *log_level;
    char *log_format;
    int version;
    char *config;
    int check_config;
    char *user;
    char *task_dir;
    char *task_user;
    char *task_env;
} settings_t;

static const tq_cfg_entry_t table[] = {
    {"connect", TQ_CFG_STRING, DEFAULT_CONNECT, 0, 0, NULL, "TASKQ_CONNECT",
     offsetof(settings_t, connect), "ENDPOINT", "master endpoint to connect to"},
    {"authkey-file", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_AUTHKEY_FILE",
     offsetof(settings_t, authkey_file), "FILE", "shared secret file (mode 0600); required"},
    {"key", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_KEY_FILE", offsetof(settings_t, key_file),
     "FILE",
     "key-pair mode: this worker's key pair (NAME.key from taskq keygen; the master "
     "lists its .pub in --allow-keys with the functions it may serve)"},
    {"master-key", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_MASTER_KEY_FILE",
     offsetof(settings_t, master_key_file), "FILE",
     "key-pair mode: the master's public key (its .pub file)"},
    {"concurrency", TQ_CFG_INT, "0", 0, TQ_MAX_SLOTS, NULL, NULL, offsetof(settings_t, concurrency),
     "N", "tasks run at once (0: number of cores; SIGHUP applies a new value)"},
    {"prefetch", TQ_CFG_STRING, "auto", 0, 0, NULL, NULL, offsetof(settings_t, prefetch), "N|auto",
     "tasks taken beyond --concurrency, waiting here (only tasks without --timeout): "
     "auto sizes it from measured run times and the round trip (docs/workers.md), 0: none"},
    {"name", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, name), "NAME",
     "name shown in the master's status (default: HOSTNAME:PID)"},
    {"fn", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, offsetof(settings_t, fn), "NAME=COMMAND",
     "serve NAME by running COMMAND per task (payload on stdin, result on stdout)"},
    {"plugin", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, offsetof(settings_t, plugin), "PATH.so",
     "load a C plugin and serve the functions it registers (docs/workers.md)"},
    {"fn-mode", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, offsetof(settings_t, fn_mode), "NAME=MODE",
     "run NAME as thread|prefork|spawn|inline (C functions, built-ins) or spawn|coprocess (--fn "
     "commands); default thread (built-ins square, echo, fail: inline), commands spawn"},
    {"task-memory", TQ_CFG_SIZE, "0", 0, (int64_t)1 << 40, NULL, NULL,
     offsetof(settings_t, task_memory), "SIZE",
     "address-space limit (RLIMIT_AS) of each child process running tasks (0: none)"},
    {"task-cpu-seconds", TQ_CFG_INT, "0", 0, 86400, NULL, NULL,
     offsetof(settings_t, task_cpu_seconds), "N",
     "CPU-time limit (RLIMIT_CPU) of each child process running tasks (0: none)"},
    {"functions", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, functions), "LIST",
     "comma list of the built-ins to serve (default: all; --fn functions are always served)"},
    {"drain-timeout", TQ_CFG_MS, "30", 0, 86400000, NULL, NULL,
     offsetof(settings_t, drain_timeout_ms), "SECONDS",
     "on SIGTERM/SIGINT, wait this long for running tasks before killing them"},
    {"log-level", TQ_CFG_ENUM, "info", 0, 0, "error|warn|info|debug", "TASKQ_LOG_LEVEL",
     offsetof(settings_t, log_level), "LEVEL", "log verbosity"},
    {"log-format", TQ_CFG_ENUM, "logfmt", 0, 0, "logfmt|json|text", "TASKQ_LOG_FORMAT",
     offsetof(settings_t, log_format), "FORMAT",
     "log lines as logfmt (ts=... level=... role=worker msg=\"...\"), json or text"},
    {"version", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(settings_t, version), NULL,
     "print the version and exit"},
    {"config", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_CONFIG", offsetof(settings_t, config),
     "FILE",
     "read settings from FILE (name = value per line, names as these flags; flags and "
     "the environment win over it; taskq.conf(5))"},
    {"check-config", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(settings_t, check_config), NULL,
     "check the settings (file, environment, flags) and exit: prints 'configuration OK', "
     "or every error (FILE:LINE: message) and exits 2"},
    {"user", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, user), "USER",
     "started as root: read the key and load plugins as root, then run as USER for good, "
     "tasks included (docs/security.md)"},
    {"task-dir", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, task_dir), "DIR",
     "working directory of each child process running tasks (default: the worker's)"},
    {"task-user", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, task_user), "USER",
     "run each child process running tasks as USER (the worker stays root; not with --user; "
     "thread and inline functions run in the worker)"},
    {"task-env", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, task_env), "NAMES",
     "comma list of the worker's environment variables task processes get, e.g. PATH,LANG,LC_* "
     "(default: all but TASKQ_*)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* Short forms of the common options (docs/workers.md). */
static const tq_short_t shorts[] =
    {{'h', "help"},        {'V', "version"}, {'c', "connect"}, {'k', "authkey-file"},
     {'j', "concurrency"}, {'f', "fn"},      {0, NULL}};

/* The worker the signal handlers stop (set once before they are
 * installed). */
static taskq_worker_t *volatile signal_worker;

static void on_signal(int sig)
{
    (void)sig;
    /* async-signal-safe: one write(2) to the worker's stop pipe */
    taskq_worker_stop(signal_worker);
}

/* --log-level (the settings table allows only these names). */
static int log_level(const char *name);

/* ---- SIGHUP ----------------------------------------------------------------
 * reload_settings reads the settings again (the same parse as at start:
 * the --config file, the environment, the flags) and hands them to
 * tq_cfg_reload, which applies each changed setting listed in `live`
 * through its function below and refuses, with a log line, the others
 * (--connect, --fn, ...: they need a restart). */

static int apply_log_level(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)cur, (void)why, (void)whylen;
    taskq_worker_set_log_level(arg, log_level(((const settings_t *)next)->log_level));
    return 0;
}

static int apply_concurrency(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)cur;
    if (taskq_worker_set_concurrency(arg, (size_t)((const settings_t *)next)->concurrency) < 0) {
        snprintf(why, whylen, "out of range");
        return -1;
    }
    return 0;
}

/* What can change while the worker runs (docs/workers.md, Signals). */
static const tq_cfg_live_t live[] = {
    {"log-level", apply_log_level},
    {"concurrency", apply_concurrency},
    {NULL, NULL},
};

static void reload_note(void *arg, int warn, const char *line)
{
    taskq_worker_log(arg, warn ? TASKQ_LOG_WARN : TASKQ_LOG_INFO, "SIGHUP: %s", line);
}

/* SIGHUP: apply what changed in the settings' sources to cur (the
 * settings in force, updated with what was applied) and the worker. A
 * source that no longer parses is logged and changes nothing. Never
 * stops the worker. */
static void reload_settings(taskq_worker_t *w, settings_t *cur, int argc, char **argv)
{
    settings_t next;
    memset(&next, 0, sizeof next);
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0;
    if (tq_cfg_parse(table, &next, argc, argv, &argi, &help, err, sizeof err) < 0) {
        taskq_worker_log(w, TASKQ_LOG_WARN, "SIGHUP: %s; nothing changed", err);
        tq_cfg_free(table, &next);
        return;
    }
    if (tq_cfg_reload(table, cur, &next, live, w, reload_note) == 0)
        taskq_worker_log(w, TASKQ_LOG_INFO, "SIGHUP: nothing to reload");
    tq_cfg_free(table, &next);
}

/* The thread that takes SIGHUP (blocked everywhere else) with sigwait,
 * so that a reload may log and take locks, which a handler may not. */
typedef struct {
    taskq_worker_t *w;
    settings_t *cur; /* the settings in force */
    int argc;
    char **argv;
    atomic_int done;
} hup_ctx_t;

static void *hup_main(void *arg)
{
    hup_ctx_t *h = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (atomic_load(&h->done))
            return NULL;
        taskq_worker_log(h->w, TASKQ_LOG_INFO, "SIGHUP received: reloading settings");
        reload_settings(h->w, h->cur, h->argc, h->argv);
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: taskq-worker --connect ENDPOINT --authkey-file FILE [--concurrency N]\n"
                 "                    [--fn NAME=COMMAND]... [--plugin PATH.so]...\n"
                 "                    [--fn-mode NAME=MODE]... [options]\n\n"
                 "Runs tasks for a taskq master. Built-in functions: square, echo, sleep, fail.\n\n"
                 "options:\n");
    tq_cfg_usage(table, out);
}

static int usage_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "taskq-worker: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(see taskq-worker --help)\n");
    return TQ_EXIT_USAGE;
}

/* --log-level (the settings table allows only these names). */
static int log_level(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    static const int levels[] = {TASKQ_LOG_ERROR, TASKQ_LOG_WARN, TASKQ_LOG_INFO, TASKQ_LOG_DEBUG};
    for (size_t i = 0; name && i < sizeof levels / sizeof levels[0]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return levels[i];
    return TASKQ_LOG_INFO;
}

/* 0,1,2 must be open, so that our pipes never land on them. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);
            if (n >= 0 && n != fd)
                close(n);
        }
    }
}


/* Register the functions served from the built-ins, --functions and
 * --fn, in that order (a --fn with a built-in's name replaces it).
 * Returns 0 or an exit status (after printing why). */
static int add_functions(const settings_t *s, taskq_worker_t *w)
{
    size_t nb = 0;
    while (taskq_worker_builtin(nb))
        nb++;
    if (s->fn.n > TQ_MAX_FUNCTIONS)
        return usage_error("--fn: at most %s functions (%s given)", "256", "more");
    char(*names)[TQ_MAX_NAME + 1] = tq_calloc(s->fn.n ? s->fn.n : 1, sizeof *names);
    const char **cmds = tq_calloc(s->fn.n ? s->fn.n : 1, sizeof *cmds);
    size_t ncmd = 0;
    int rc = 0;
    taskq_error_t err;

    /* --fn first, so they can be checked by --functions and override a
     * built-in of the same name. */
    for (size_t i = 0; i < s->fn.n && rc == 0; i++) {
        const char *arg = s->fn.items[i];
        const char *eq = strchr(arg, '=');
        if (!eq) {
            rc = usage_error("--fn: '%s' is not NAME=COMMAND%s", arg, "");
            break;
        }
        size_t nl = (size_t)(eq - arg);
        tq_bytes_t nb_ = {(const uint8_t *)arg, nl};
        if (nl > TQ_MAX_NAME || !tq_name_valid(nb_)) {
            char nm[TQ_MAX_NAME + 8];
            snprintf(nm, sizeof nm, "%.*s", (int)(nl > TQ_MAX_NAME ? TQ_MAX_NAME : nl), arg);
            rc = usage_error("--fn: '%s' is not a valid function name (1..64 of "
                             "[A-Za-z0-9_.:-])%s",
                             nm, "");
            break;
        }
        memcpy(names[ncmd], arg, nl);
        names[ncmd][nl] = '\0';
        for (size_t k = 0; k < ncmd; k++)
            if (strcmp(names[k], names[ncmd]) == 0) {
                rc = usage_error("--fn: function '%s' given twice%s", names[ncmd], "");
                break;
            }
        cmds[ncmd++] = eq + 1;
    }

    /* Which built-ins: all, or those --functions lists. */
    int want[16] = {0};
    if (rc == 0 && s->functions) {
        char *list = tq_strdup(s->functions);
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok && rc == 0;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            size_t tl = strlen(tok);
            while (tl && tok[tl - 1] == ' ')
                tok[--tl] = '\0';
            int found = 0;
            for (size_t b = 0; b < nb; b++)
                if (strcmp(tok, taskq_worker_builtin(b)) == 0)
                    want[b] = found = 1;
            for (size_t k = 0; k < ncmd; k++)
                if (strcmp(tok, names[k]) == 0)
                    found = 1;
            if (!found)
                rc = usage_error("--functions: '%s' is not a built-in (square, echo, sleep, "
                                 "fail) or a --fn function%s",
                                 tok, "");
        }
        free(list);
    } else {
        for (size_t b = 0; b < nb; b++)
            want[b] = 1;
    }
    size_t n = 0;
    for (size_t b = 0; b < nb && rc == 0; b++) {
        int shadowed = 0;
        for (size_t k = 0; k < ncmd; k++)
            if (strcmp(names[k], taskq_worker_builtin(b)) == 0)
                shadowed = 1;
        if (want[b] && !shadowed) {
            TQ_ASSERT(taskq_worker_add_builtin(w, taskq_worker_builtin(b), &err) == 0);
            n++;
        }
    }
    for (size_t k = 0; k < ncmd && rc == 0; k++) {
        if (taskq_worker_add_command(w, names[k], cmds[k], &err) < 0) {
            rc = usage_error("--fn %s: %s", names[k], err.message);
            break;
        }
        n++;
    }
    if (rc == 0 && n == 0 && s->plugin.n == 0)
        rc = usage_error("--functions: no functions left to serve%s%s", "", "");
    free(names);
    free(cmds);
    return rc;
}

int main(int argc, char **argv)
{
    tq_process_protect(); /* no core file or ptrace with the keys in memory */
    settings_t s;
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0;
    taskq_worker_t *w = NULL;
    taskq_error_t werr;

    memset(&s, 0, sizeof s);
    ensure_std_fds();
    /* The man page's option list is generated from the same table. */
    if (argc == 2 && strcmp(argv[1], "--help-scdoc") == 0) {
        tq_cfg_scdoc(table, stdout);
        return TQ_EXIT_OK;
    }
    /* SIGHUP goes to hup_main alone: block it before any thread (the
     * slots', ZeroMQ's) exists, so that all inherit the mask. */
    sigset_t hupset;
    sigemptyset(&hupset);
    sigaddset(&hupset, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hupset, NULL);
    hup_ctx_t hup = {.argc = argc, .argv = argv};
    pthread_t hup_thread;
    int hup_started = 0;
    tq_args_t args;
    if (tq_args_expand(table, shorts, argc, argv, 1, &args, err, sizeof err) < 0 ||
        tq_cfg_parse(table, &s, args.argc, args.argv, &argi, &help, err, sizeof err) < 0) {
        if (tq_cfg_has_flag(table, argc, argv, 1, "check-config"))
            fprintf(stderr, "%s\n", err);
        else
            fprintf(stderr, "taskq-worker: %s\n(see taskq-worker --help)\n", err);
        tq_args_free(&args);
        return TQ_EXIT_USAGE;
    }
    argc = args.argc; /* from here on, the options as written long */
    argv = args.argv;
    hup.argc = argc;
    hup.argv = argv;
    int rc = TQ_EXIT_OK;
    if (help) {
        usage(stdout);
        goto out;
    }
    if (s.version) {
        printf("taskq-worker %s\n", TQ_VERSION);
        goto out;
    }
    rc = TQ_EXIT_USAGE;
    if (argi < argc) {
        usage_error("unexpected argument '%s'%s", argv[argi], "");
        goto out;
    }
    /* The library's logger is the only one: taskq_worker_new sets it up. */
    int level = log_level(s.log_level);
    if (!s.connect || !*s.connect) {
        usage_error("--connect: endpoint is empty%s%s", "", "");
        goto out;
    }
    if (strncmp(s.connect, "tcp://", 6) != 0 && strncmp(s.connect, "ipc://", 6) != 0) {
        usage_error("--connect: '%s' is not an endpoint like tcp://HOST:PORT%s", s.connect, "");
        goto out;
    }
    tq_err_t eperr;
    if (tq_endpoint_port_check(s.connect, "--connect", &eperr) < 0) {
        usage_error("%s%s", eperr.msg, "");
        goto out;
    }
    if (s.name && !tq_peer_name_valid(s.name, TQ_MAX_PEER_NAME, 0)) {
        usage_error("--name: must be 1..128 printable ASCII characters without spaces%s%s", "", "");
        goto out;
    }
    if (s.check_config) {
        printf("configuration OK\n");
        rc = TQ_EXIT_OK;
        goto out;
    }
    /* libtaskq's logger (its own copy) takes the format from here */
    setenv("TASKQ_LOG_FORMAT", s.log_format, 1);
    const char *keypath = tq_authkey_path(s.authkey_file);
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    o.endpoint = s.connect;
    o.authkey_file = keypath;
    o.name = s.name;
    o.slots = (size_t)s.concurrency; /* 0: the number of cores */
    o.drain_timeout_ms = s.drain_timeout_ms;
    o.log_level = level;
    w = taskq_worker_new(&o, &werr);
    if (!w) {
        fprintf(stderr, "taskq-worker: %s\n(see taskq-worker --help)\n", werr.message);
        rc = werr.code;
        goto out;
    }
    if ((rc = add_functions(&s, w)) != 0)
        goto out;
    if (strcmp(s.prefetch, "auto") != 0) {
        uint64_t pf;
        if (tq_parse_u64(s.prefetch, &pf) < 0) {
            rc = usage_error("--prefetch: '%s' is not auto or a number 0..4096%s", s.prefetch, "");
            goto out;
        }
        if (taskq_worker_set_prefetch(w, (size_t)pf, &werr) < 0) {
            rc = usage_error("--prefetch: %s%s", werr.message, "");
            goto out;
        }
    }
    rc = TQ_EXIT_USAGE;
    int keypair = (s.key_file && *s.key_file) || (s.master_key_file && *s.master_key_file);
    if (!keypath && !keypair) {
        fprintf(stderr, "taskq-worker: no authkey: give --authkey-file FILE or set "
                        "TASKQ_AUTHKEY_FILE (or --key and --master-key)\n");
        goto out;
    }
    if (keypair && taskq_worker_set_keys(w, s.key_file, s.master_key_file, &werr) < 0) {
        fprintf(stderr, "taskq-worker: %s\n", werr.message);
        goto out;
    }
    for (size_t i = 0; i < s.plugin.n; i++) {
        if (taskq_worker_load_plugin(w, s.plugin.items[i], &werr) < 0) {
            fprintf(stderr, "taskq-worker: --plugin: %s\n", werr.message);
            rc = TQ_EXIT_ENV;
            goto out;
        }
    }

    for (size_t i = 0; i < s.fn_mode.n; i++) {
        const char *arg = s.fn_mode.items[i];
        const char *eq = strchr(arg, '=');
        char nm[TQ_MAX_NAME + 1];
        if (!eq || (size_t)(eq - arg) > TQ_MAX_NAME) {
            usage_error("--fn-mode: '%s' is not NAME=MODE%s", arg, "");
            goto out;
        }
        snprintf(nm, sizeof nm, "%.*s", (int)(eq - arg), arg);
        int mode = taskq_mode_parse(eq + 1);
        if (mode < 0) {
            usage_error("--fn-mode %s: '%s' is not thread, prefork, spawn or coprocess", nm,
                        eq + 1);
            goto out;
        }
        if (taskq_worker_set_mode(w, nm, mode, &werr) < 0) {
            usage_error("--fn-mode: %s%s", werr.message, "");
            goto out;
        }
    }
    if (taskq_worker_set_limits(w, (uint64_t)s.task_memory, (uint64_t)s.task_cpu_seconds, &werr) <
        0) {
        usage_error("--task-memory/--task-cpu-seconds: %s%s", werr.message, "");
        goto out;
    }
    if (s.user && s.task_user) {
        usage_error("--task-user needs the worker to stay root: give --user or --task-user, "
                    "not both%s%s",
                    "", "");
        goto out;
    }
    if (s.user && taskq_worker_set_user(w, s.user, &werr) < 0) {
        usage_error("--%s%s", werr.message, "");
        goto out;
    }
    if ((s.task_dir || s.task_user || s.task_env) &&
        taskq_worker_set_task_process(w, s.task_dir, s.task_user, s.task_env, &werr) < 0) {
        usage_error("--task-dir/--task-user/--task-env: %s%s", werr.message, "");
        goto out;
    }

    signal_worker = w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    hup.w = w;
    hup.cur = &s;
    hup_started = pthread_create(&hup_thread, NULL, hup_main, &hup) == 0;

    if (taskq_worker_run(w, &werr) < 0) {
        fprintf(stderr, "taskq-worker: %s\n", werr.message);
        rc = werr.code;
    } else {
        rc = TQ_EXIT_OK;
    }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal_worker = NULL;
    if (hup_started) {
        atomic_store(&hup.done, 1);
        pthread_kill(hup_thread, SIGHUP); /* wakes its sigwait */
        pthread_join(hup_thread, NULL);
    }
out:
    taskq_worker_destroy(&w);
    tq_cfg_free(table, &s);
    tq_args_free(&args);
    return rc;
}
