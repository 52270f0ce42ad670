/* main.c - taskq-worker: the settings table, start-up checks, signals.
 *
 *   taskq-worker --connect ENDPOINT --authkey-file FILE [--concurrency N]
 *                [--fn NAME=COMMAND]... [options]
 *
 * All work happens in conn.c (connection thread = this thread) and
 * pool.c (slot threads). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builtins.h"
#include "command.h"
#include "conn.h"
#include "pool.h"
#include "tq_authkey.h"
#include "tq_config.h"
#include "tq_exit.h"
#include "tq_log.h"
#include "tq_proto.h"
#include "tq_util.h"

#ifndef TQ_VERSION
#define TQ_VERSION "0.0.0"
#endif

#define DEFAULT_CONNECT "tcp://127.0.0.1:7070"

typedef struct {
    char *connect;
    char *authkey_file;
    int64_t concurrency;
    char *name;
    tq_strlist_t fn;
    char *functions;
    int64_t drain_timeout_ms;
    char *log_level;
    int version;
} settings_t;

static const tq_cfg_entry_t table[] = {
    {"connect", TQ_CFG_STRING, DEFAULT_CONNECT, 0, 0, NULL, "TASKQ_CONNECT",
     offsetof(settings_t, connect), "ENDPOINT", "master endpoint to connect to"},
    {"authkey-file", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_AUTHKEY_FILE",
     offsetof(settings_t, authkey_file), "FILE",
     "shared secret file (mode 0600); required"},
    {"concurrency", TQ_CFG_INT, "0", 0, TQ_MAX_SLOTS, NULL, NULL,
     offsetof(settings_t, concurrency), "N", "tasks run at once (0: number of cores)"},
    {"name", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, name), "NAME",
     "name shown in the master's status (default: HOSTNAME:PID)"},
    {"fn", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, offsetof(settings_t, fn), "NAME=COMMAND",
     "serve NAME by running COMMAND per task (payload on stdin, result on stdout)"},
    {"functions", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, offsetof(settings_t, functions),
     "LIST", "comma list of the built-ins to serve (default: all; --fn functions are always served)"},
    {"drain-timeout", TQ_CFG_MS, "30", 0, 86400000, NULL, NULL,
     offsetof(settings_t, drain_timeout_ms), "SECONDS",
     "on SIGTERM/SIGINT, wait this long for running tasks before killing them"},
    {"log-level", TQ_CFG_ENUM, "info", 0, 0, "error|warn|info|debug", "TASKQ_LOG_LEVEL",
     offsetof(settings_t, log_level), "LEVEL", "log verbosity"},
    {"version", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, offsetof(settings_t, version), NULL,
     "print the version and exit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* Write end of the self-pipe that turns signals into poll events. */
static int signal_pipe_w = -1;

static void on_signal(int sig)
{
    int saved = errno;
    char b = (char)sig;
    ssize_t w = write(signal_pipe_w, &b, 1);
    (void)w;
    errno = saved;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: taskq-worker --connect ENDPOINT --authkey-file FILE [--concurrency N]\n"
                 "                    [--fn NAME=COMMAND]... [options]\n\n"
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

static int name_printable(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TQ_MAX_PEER_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* Build the list of functions served from the built-ins, --functions
 * and --fn. Returns 0 or an exit status (after printing why). */
static int build_functions(const settings_t *s, tq_fn_t **fns_out, size_t *n_out)
{
    size_t nb = 0;
    while (tq_builtin_names[nb])
        nb++;
    size_t cap = nb + s->fn.n;
    if (s->fn.n > TQ_MAX_FUNCTIONS)
        return usage_error("--fn: at most %s functions (%s given)", "256", "more");
    tq_fn_t *fns = tq_calloc(cap ? cap : 1, sizeof *fns);
    size_t n = 0;
    char err[256];
    int rc = 0;

    /* --fn first, so they can be checked by --functions and override a
     * built-in of the same name. */
    tq_fn_t *cmds = tq_calloc(s->fn.n ? s->fn.n : 1, sizeof *cmds);
    size_t ncmd = 0;
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
                             "[A-Za-z0-9_.:-])%s", nm, "");
            break;
        }
        memcpy(cmds[ncmd].name, arg, nl);
        cmds[ncmd].name[nl] = '\0';
        for (size_t k = 0; k < ncmd; k++)
            if (strcmp(cmds[k].name, cmds[ncmd].name) == 0) {
                rc = usage_error("--fn: function '%s' given twice%s", cmds[ncmd].name, "");
                break;
            }
        if (rc)
            break;
        cmds[ncmd].cmd = tq_command_new(eq + 1, err, sizeof err);
        if (!cmds[ncmd].cmd) {
            rc = usage_error("--fn %s: %s", cmds[ncmd].name, err);
            break;
        }
        ncmd++;
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
                if (strcmp(tok, tq_builtin_names[b]) == 0)
                    want[b] = found = 1;
            for (size_t k = 0; k < ncmd; k++)
                if (strcmp(tok, cmds[k].name) == 0)
                    found = 1;
            if (!found)
                rc = usage_error("--functions: '%s' is not a built-in (square, echo, sleep, "
                                 "fail) or a --fn function%s", tok, "");
        }
        free(list);
    } else {
        for (size_t b = 0; b < nb; b++)
            want[b] = 1;
    }
    if (rc == 0) {
        for (size_t b = 0; b < nb; b++) {
            int shadowed = 0;
            for (size_t k = 0; k < ncmd; k++)
                if (strcmp(cmds[k].name, tq_builtin_names[b]) == 0)
                    shadowed = 1;
            if (want[b] && !shadowed) {
                tq_strlcpy(fns[n].name, tq_builtin_names[b], sizeof fns[n].name);
                n++;
            }
        }
        for (size_t k = 0; k < ncmd; k++)
            fns[n++] = cmds[k];
        ncmd = 0;
        if (n == 0)
            rc = usage_error("--functions: no functions left to serve%s%s", "", "");
    }
    for (size_t k = 0; k < ncmd; k++)
        tq_command_destroy(&cmds[k].cmd);
    free(cmds);
    if (rc) {
        for (size_t k = 0; k < n; k++)
            tq_command_destroy(&fns[k].cmd);
        free(fns);
        return rc;
    }
    *fns_out = fns;
    *n_out = n;
    return 0;
}

int main(int argc, char **argv)
{
    settings_t s;
    char err[512];
    int argi = 1, help = 0;
    tq_fn_t *fns = NULL;
    size_t nfns = 0;
    char defname[TQ_MAX_PEER_NAME + 1];
    tq_curve_keys_t keys;

    memset(&s, 0, sizeof s);
    ensure_std_fds();
    tq_log_init("worker");
    if (tq_cfg_parse(table, &s, argc, argv, &argi, &help, err, sizeof err) < 0) {
        fprintf(stderr, "taskq-worker: %s\n(see taskq-worker --help)\n", err);
        return TQ_EXIT_USAGE;
    }
    if (help) {
        usage(stdout);
        tq_cfg_free(table, &s);
        return TQ_EXIT_OK;
    }
    if (s.version) {
        printf("taskq-worker %s\n", TQ_VERSION);
        tq_cfg_free(table, &s);
        return TQ_EXIT_OK;
    }
    int rc = TQ_EXIT_USAGE;
    if (argi < argc) {
        usage_error("unexpected argument '%s'%s", argv[argi], "");
        goto out;
    }
    tq_log_set_level(tq_log_level_parse(s.log_level));
    if (!s.connect || !*s.connect) {
        usage_error("--connect: endpoint is empty%s%s", "", "");
        goto out;
    }
    if (strncmp(s.connect, "tcp://", 6) != 0 && strncmp(s.connect, "ipc://", 6) != 0) {
        usage_error("--connect: '%s' is not an endpoint like tcp://HOST:PORT%s", s.connect, "");
        goto out;
    }
    if (s.name && !name_printable(s.name)) {
        usage_error("--name: must be 1..128 printable ASCII characters without spaces%s%s", "",
                    "");
        goto out;
    }
    if (!s.name) {
        char host[TQ_MAX_PEER_NAME] = "localhost";
        if (gethostname(host, sizeof host) < 0)
            tq_strlcpy(host, "localhost", sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(defname, sizeof defname, "%.100s:%ld", host, (long)getpid());
        if (!name_printable(defname))
            snprintf(defname, sizeof defname, "worker:%ld", (long)getpid());
    }
    if ((rc = build_functions(&s, &fns, &nfns)) != 0)
        goto out;
    rc = TQ_EXIT_USAGE;
    const char *keypath = tq_authkey_path(s.authkey_file);
    if (!keypath) {
        fprintf(stderr, "taskq-worker: no authkey: give --authkey-file FILE or set "
                        "TASKQ_AUTHKEY_FILE\n");
        goto out;
    }
    if (tq_authkey_load(keypath, &keys, err, sizeof err) < 0) {
        fprintf(stderr, "taskq-worker: %s\n", err);
        rc = TQ_EXIT_ENV;
        goto out;
    }

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "taskq-worker: pipe: %s\n", strerror(errno));
        rc = TQ_EXIT_INTERNAL;
        tq_curve_keys_wipe(&keys);
        goto out;
    }
    signal_pipe_w = pfd[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    size_t slots = s.concurrency > 0 ? (size_t)s.concurrency : (size_t)tq_ncpus();
    if (slots > TQ_MAX_SLOTS)
        slots = TQ_MAX_SLOTS;
    tq_conn_opts_t o = {
        .endpoint = s.connect,
        .keys = &keys,
        .name = s.name ? s.name : defname,
        .slots = slots,
        .fns = fns,
        .nfns = nfns,
        .drain_timeout_ms = s.drain_timeout_ms,
        .signal_fd = pfd[0],
    };
    rc = tq_conn_run(&o);
    tq_curve_keys_wipe(&keys);
out:
    for (size_t k = 0; k < nfns; k++)
        tq_command_destroy(&fns[k].cmd);
    free(fns);
    tq_cfg_free(table, &s);
    return rc;
}
