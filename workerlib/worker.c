/* worker.c - the public worker API of libtaskq (taskq.h, "writing
 * workers"): options, the function table, plugins, run and stop. The
 * engine is conn.c (connection thread) and pool.c (slot threads). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dlfcn.h>

#include "builtins.h"
#include "command.h"
#include "child.h"
#include "conn.h"
#include "forkserver.h"
#include "plugin.h"
#include "pool.h"
#include "taskq.h"
#include "tq_authkey.h"
#include "tq_keyfile.h"
#include "tq_limits.h"
#include "tq_log.h"
#include "tq_priv.h"
#include "tq_proto.h"
#include "tq_util.h"
#include "tqerr.h"

#define WORKER_DEFAULT_ENDPOINT "tcp://127.0.0.1:7070"
#define WORKER_DEFAULT_DRAIN_MS 30000
#define WORKER_MAX_DRAIN_MS 86400000
/* Longest endpoint text accepted. */
#define WORKER_MAX_ENDPOINT 1024
/* Smallest memory limit accepted (1 MiB), and largest CPU limit (a day). */
#define TQ_WORKER_MIN_MEMORY (1024 * 1024)
#define TQ_WORKER_MAX_CPU_SECONDS 86400

struct taskq_worker {
    char *endpoint;
    char *authkey_file;    /* NULL: none given */
    char *key_file;        /* key-pair mode: our pair, or NULL */
    char *master_key_file; /* key-pair mode: the master's public key, or NULL */
    char name[TQ_MAX_PEER_NAME + 1];
    size_t slots;
    _Atomic size_t slots_wanted; /* taskq_worker_set_concurrency; 0: none */
    size_t prefetch;             /* tasks taken beyond the slots */
    int prefetch_set;            /* fixed by taskq_worker_set_prefetch;
                                      else adaptive (docs/workers.md) */
    void *zctx;                  /* the caller's ZeroMQ context, or NULL */
    int64_t drain_timeout_ms;
    tq_fn_t *fns; /* TQ_MAX_FUNCTIONS entries */
    size_t nfns;
    void **plugins; /* dlopen handles, TQ_MAX_FUNCTIONS */
    size_t nplugins;
    int stop_r, stop_w;        /* taskq_worker_stop's pipe */
    int ran;                   /* taskq_worker_run was called */
    int stuck;                 /* slot threads were left running */
    tq_limits_t limits;        /* for every child process */
    tq_user_t *user;           /* taskq_worker_set_user: drop to it */
    tq_user_t *task_user;      /* task processes run as it */
    char *task_dir, *task_env; /* their directory, kept variables */
};

static void default_name(char *out, size_t outlen)
{
    char host[TQ_MAX_PEER_NAME] = "localhost";
    if (gethostname(host, sizeof host) < 0)
        tq_strlcpy(host, "localhost", sizeof host);
    host[sizeof host - 1] = '\0';
    snprintf(out, outlen, "%.100s:%ld", host, (long)getpid());
    if (!tq_peer_name_valid(out, TQ_MAX_PEER_NAME, 0))
        snprintf(out, outlen, "worker:%ld", (long)getpid());
}

taskq_worker_t *taskq_worker_new(const taskq_worker_opts_t *opts, taskq_error_t *err)
{
    taskq_worker_opts_t def = TASKQ_WORKER_OPTS_INIT;
    if (!opts)
        opts = &def;
    const char *ep = opts->endpoint ? opts->endpoint : WORKER_DEFAULT_ENDPOINT;
    if (strlen(ep) > WORKER_MAX_ENDPOINT ||
        (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0)) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "endpoint '%.64s' is not like tcp://HOST:PORT", ep);
        return NULL;
    }
    if (opts->name && !tq_peer_name_valid(opts->name, TQ_MAX_PEER_NAME, 0)) {
        tq_api_fail(err, TASKQ_ERR_USAGE,
                    "name: must be 1..128 printable ASCII characters without spaces");
        return NULL;
    }
    if (opts->slots > TQ_MAX_SLOTS) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "slots: %zu is more than %d", opts->slots, TQ_MAX_SLOTS);
        return NULL;
    }
    if (opts->drain_timeout_ms > WORKER_MAX_DRAIN_MS) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "drain_timeout_ms: more than %d", WORKER_MAX_DRAIN_MS);
        return NULL;
    }
    if (opts->log_level > TASKQ_LOG_DEBUG) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "log_level: %d is not a TASKQ_LOG_* level",
                    opts->log_level);
        return NULL;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0) {
        tq_api_fail(err, TASKQ_ERR_INTERNAL, "pipe: %s", strerror(errno));
        return NULL;
    }
    taskq_worker_t *self = tq_calloc(1, sizeof *self);
    self->stop_r = pfd[0];
    self->stop_w = pfd[1];
    self->endpoint = tq_strdup(ep);
    self->authkey_file = opts->authkey_file ? tq_strdup(opts->authkey_file) : NULL;
    if (opts->name)
        tq_strlcpy(self->name, opts->name, sizeof self->name);
    else
        default_name(self->name, sizeof self->name);
    self->slots = opts->slots ? opts->slots : (size_t)tq_ncpus();
    if (self->slots > TQ_MAX_SLOTS)
        self->slots = TQ_MAX_SLOTS;
    if (self->slots == 0)
        self->slots = 1;
    self->drain_timeout_ms = opts->drain_timeout_ms < 0 ? WORKER_DEFAULT_DRAIN_MS
                                                        : opts->drain_timeout_ms;
    self->fns = tq_calloc(TQ_MAX_FUNCTIONS, sizeof *self->fns);
    self->plugins = tq_calloc(TQ_MAX_FUNCTIONS, sizeof *self->plugins);
    /* The engine's log lines (this library's copy of the logger). */
    tq_log_init("worker");
    tq_log_set_level(opts->log_level < 0 ? TQ_LOG_INFO : opts->log_level);
    return self;
}

/* Drop functions from index n on (a failed plugin's). */
static void truncate_fns(taskq_worker_t *self, size_t n)
{
    while (self->nfns > n) {
        tq_fn_t *f = &self->fns[--self->nfns];
        tq_command_destroy(&f->cmd);
        memset(f, 0, sizeof *f);
    }
}

void taskq_worker_destroy(taskq_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    taskq_worker_t *self = *self_p;
    close(self->stop_r);
    close(self->stop_w);
    if (!self->stuck) {
        /* Slot threads (and with them slot_fini) ended in run. */
        truncate_fns(self, 0);
        free(self->fns);
        for (size_t i = self->nplugins; i > 0; i--)
            dlclose(self->plugins[i - 1]);
        free(self->plugins);
    }
    /* else: threads still run a function; its code and table stay. */
    free(self->endpoint);
    free(self->authkey_file);
    free(self->user);
    free(self->task_user);
    free(self->task_dir);
    free(self->task_env);
    free(self->key_file);
    free(self->master_key_file);
    free(self);
    *self_p = NULL;
}

/* Checks shared by every registration; returns a free entry or NULL. */
static tq_fn_t *new_entry(taskq_worker_t *self, const char *name, taskq_error_t *err)
{
    if (!self) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "worker is NULL");
        return NULL;
    }
    if (self->ran) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "functions are registered before taskq_worker_run");
        return NULL;
    }
    size_t nl = name ? strlen(name) : 0;
    if (!name || nl > TQ_MAX_NAME || !tq_name_valid((tq_bytes_t){(const uint8_t *)name, nl})) {
        tq_api_fail(err, TASKQ_ERR_USAGE,
                    "'%.64s' is not a valid function name (1..64 of [A-Za-z0-9_.:-])",
                    name ? name : "(null)");
        return NULL;
    }
    for (size_t i = 0; i < self->nfns; i++)
        if (strcmp(self->fns[i].name, name) == 0) {
            tq_api_fail(err, TASKQ_ERR_USAGE, "function '%s' is already registered", name);
            return NULL;
        }
    if (self->nfns == TQ_MAX_FUNCTIONS) {
        tq_api_fail(err, TASKQ_ERR_USAGE, "at most %d functions", TQ_MAX_FUNCTIONS);
        return NULL;
    }
    tq_fn_t *f = &self->fns[self->nfns];
    memset(f, 0, sizeof *f);
    tq_strlcpy(f->name, name, sizeof f->name);
    return f;
}

int taskq_worker_add_def(taskq_worker_t *self, const taskq_fn_def_t *def, taskq_error_t *err)
{
    if (!def)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "function definition is NULL");
    if (!def->fn)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "function '%.64s': fn is NULL",
                           def->name ? def->name : "(null)");
    if (def->mode == TASKQ_MODE_COPROCESS)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "function '%.64s': coprocess is for commands; a C function runs as "
                           "thread, "
                           "prefork, spawn or inline",
                           def->name ? def->name : "(null)");
    if (def->mode != TASKQ_MODE_THREAD && def->mode != TASKQ_MODE_PREFORK &&
        def->mode != TASKQ_MODE_SPAWN && def->mode != TASKQ_MODE_INLINE)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "function '%.64s': mode %d is not supported",
                           def->name ? def->name : "(null)", def->mode);
    if (def->mode == TASKQ_MODE_INLINE && (def->slot_init || def->slot_fini))
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "function '%.64s': inline mode has no slots, so no slot_init/slot_fini",
                           def->name ? def->name : "(null)");
    tq_fn_t *f = new_entry(self, def->name, err);
    if (!f)
        return -1;
    f->cfn = def->fn;
    f->arg = def->arg;
    f->slot_init = def->slot_init;
    f->slot_fini = def->slot_fini;
    f->mode = def->mode;
    self->nfns++;
    return 0;
}

int taskq_worker_add(taskq_worker_t *self, const char *name, taskq_fn fn, void *arg,
                     taskq_error_t *err)
{
    taskq_fn_def_t def = TASKQ_FN_DEF_INIT;
    def.name = name;
    def.fn = fn;
    def.arg = arg;
    return taskq_worker_add_def(self, &def, err);
}

int taskq_worker_add_command(taskq_worker_t *self, const char *name, const char *command,
                             taskq_error_t *err)
{
    tq_err_t why;
    if (!command)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "empty command");
    tq_fn_t *f = new_entry(self, name, err);
    if (!f)
        return -1;
    f->cmd = tq_command_new(command, &why);
    if (!f->cmd)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "%s", why.msg);
    f->mode = TASKQ_MODE_SPAWN;
    self->nfns++;
    return 0;
}

static const char *const mode_names[] = {"thread", "prefork", "spawn", "coprocess", "inline"};

const char *taskq_mode_name(int mode)
{
    if (mode < 0 || (size_t)mode >= sizeof mode_names / sizeof mode_names[0])
        return NULL;
    return mode_names[mode];
}

int taskq_mode_parse(const char *text)
{
    for (size_t i = 0; text && i < sizeof mode_names / sizeof mode_names[0]; i++)
        if (strcmp(text, mode_names[i]) == 0)
            return (int)i;
    return -1;
}

int taskq_worker_set_mode(taskq_worker_t *self, const char *name, int mode, taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "modes are set before taskq_worker_run");
    if (!taskq_mode_name(mode))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "mode %d is not a TASKQ_MODE_*", mode);
    tq_fn_t *f = NULL;
    for (size_t i = 0; i < self->nfns; i++)
        if (name && strcmp(self->fns[i].name, name) == 0)
            f = &self->fns[i];
    if (!f)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "function '%.64s' is not registered",
                           name ? name : "(null)");
    if (f->cmd && mode != TASKQ_MODE_SPAWN && mode != TASKQ_MODE_COPROCESS)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "function '%s' is a command: its mode is spawn or coprocess, not %s",
                           f->name, taskq_mode_name(mode));
    if (!f->cmd && mode == TASKQ_MODE_COPROCESS)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "function '%s' is not a command: coprocess is for --fn NAME=COMMAND; "
                           "use "
                           "thread, prefork or spawn",
                           f->name);
    if (mode == TASKQ_MODE_INLINE && (f->slot_init || f->slot_fini))
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "function '%s' has slot_init/slot_fini: inline mode has no slots",
                           f->name);
    if (mode == TASKQ_MODE_INLINE && !f->cfn && strcmp(f->name, "sleep") == 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "built-in 'sleep' blocks: it cannot run inline (thread, prefork or "
                           "spawn)");
    f->mode = mode;
    return 0;
}

int taskq_worker_set_context(taskq_worker_t *self, void *zmq_context, taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "the context is set before taskq_worker_run");
    self->zctx = zmq_context;
    return 0;
}

int taskq_worker_set_keys(taskq_worker_t *self, const char *key_file, const char *master_key_file,
                          taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "keys are set before taskq_worker_run");
    if ((!key_file || !*key_file) && (!master_key_file || !*master_key_file))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "no key file given");
    free(self->key_file);
    free(self->master_key_file);
    self->key_file = key_file && *key_file ? tq_strdup(key_file) : NULL;
    self->master_key_file = master_key_file && *master_key_file ? tq_strdup(master_key_file) : NULL;
    return 0;
}

int taskq_worker_set_prefetch(taskq_worker_t *self, size_t prefetch, taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "prefetch is set before taskq_worker_run");
    if (prefetch > TQ_MAX_PREFETCH)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "prefetch: %zu is more than %d", prefetch,
                           TQ_MAX_PREFETCH);
    self->prefetch = prefetch;
    self->prefetch_set = 1;
    return 0;
}

int taskq_worker_set_limits(taskq_worker_t *self, uint64_t memory_bytes, uint64_t cpu_seconds,
                            taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "limits are set before taskq_worker_run");
    if (memory_bytes != 0 && memory_bytes < TQ_WORKER_MIN_MEMORY)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "memory limit %llu is less than %d bytes",
                           (unsigned long long)memory_bytes, TQ_WORKER_MIN_MEMORY);
    if (cpu_seconds > TQ_WORKER_MAX_CPU_SECONDS)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "cpu limit %llu s is more than %d s",
                           (unsigned long long)cpu_seconds, TQ_WORKER_MAX_CPU_SECONDS);
    self->limits.memory = memory_bytes;
    self->limits.cpu_seconds = cpu_seconds;
    return 0;
}

int taskq_worker_set_user(taskq_worker_t *self, const char *user, taskq_error_t *err)
{
    tq_err_t why;
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "the user is set before taskq_worker_run");
    tq_user_t u;
    if (tq_user_lookup(user, "user", 1, &u, &why) < 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "%s", why.msg);
    /* per thread and inherited: now, while the caller's threads are few */
    if (tq_priv_no_new_privs(&why) < 0)
        return tq_api_fail(err, TASKQ_ERR_ENV, "%s", why.msg);
    if (!self->user)
        self->user = tq_calloc(1, sizeof *self->user);
    *self->user = u;
    return 0;
}

int taskq_worker_set_task_process(taskq_worker_t *self, const char *dir, const char *user,
                                  const char *env, taskq_error_t *err)
{
    tq_err_t why;
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "task processes are set up before taskq_worker_run");
    struct stat st;
    if (dir && stat(dir, &st) < 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "task directory %.200s: %s", dir, strerror(errno));
    if (dir && !S_ISDIR(st.st_mode))
        return tq_api_fail(err, TASKQ_ERR_USAGE, "task directory %.200s: not a directory", dir);
    tq_user_t u;
    if (user && tq_user_lookup(user, "task user", 1, &u, &why) < 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "%s", why.msg);
    if (env) {
        tq_task_proc_t probe = {.env = env};
        if (tq_command_check_env(&probe, &why) < 0)
            return tq_api_fail(err, TASKQ_ERR_USAGE, "%s", why.msg);
    }
    free(self->task_dir);
    free(self->task_env);
    free(self->task_user);
    self->task_dir = dir ? tq_strdup(dir) : NULL;
    self->task_env = env ? tq_strdup(env) : NULL;
    self->task_user = NULL;
    if (user) {
        self->task_user = tq_calloc(1, sizeof *self->task_user);
        *self->task_user = u;
    }
    return 0;
}

const char *taskq_worker_builtin(size_t i)
{
    for (size_t k = 0; tq_builtin_names[k]; k++)
        if (k == i)
            return tq_builtin_names[k];
    return NULL;
}

int taskq_worker_add_builtin(taskq_worker_t *self, const char *name, taskq_error_t *err)
{
    if (!name || !tq_builtin_exists(name))
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "'%.64s' is not a built-in (square, echo, sleep, fail)",
                           name ? name : "(null)");
    tq_fn_t *f = new_entry(self, name, err);
    if (!f)
        return -1;
    /* Microseconds of work each: a thread hand-off would cost more. */
    if (strcmp(name, "sleep") != 0)
        f->mode = TASKQ_MODE_INLINE;
    self->nfns++;
    return 0;
}

int taskq_worker_load_plugin(taskq_worker_t *self, const char *path, taskq_error_t *err)
{
    if (!self || self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "plugins are loaded before taskq_worker_run");
    if (self->nplugins == TQ_MAX_FUNCTIONS)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "at most %d plugins", TQ_MAX_FUNCTIONS);
    taskq_plugin_init_fn init = NULL;
    tq_err_t oerr;
    void *h = tq_plugin_open(path, &init, &oerr);
    if (!h)
        return tq_err_to_public(err, &oerr);
    size_t before = self->nfns;
    taskq_error_t perr = {0, ""};
    if (init(self, TASKQ_WORKER_ABI, &perr) != 0) {
        truncate_fns(self, before);
        dlclose(h);
        if (perr.message[0])
            return tq_api_fail(err, TASKQ_ERR_ENV, "plugin %s: taskq_plugin_init failed: %s", path,
                               perr.message);
        return tq_api_fail(err, TASKQ_ERR_ENV, "plugin %s: taskq_plugin_init failed", path);
    }
    if (self->nfns == before)
        tq_warn("plugin %s registered no functions", path);
    self->plugins[self->nplugins++] = h;
    return 0;
}

/* 1 if some function runs in forked children (tq_fn_forks; a command
 * execs, a coprocess too). */
static int needs_forks(const taskq_worker_t *self)
{
    for (size_t i = 0; i < self->nfns; i++)
        if (tq_fn_forks(&self->fns[i]))
            return 1;
    return 0;
}

/* Stop the fork server and forget it in the function table. */
static void forks_stop(taskq_worker_t *self, tq_forkserver_t **forks)
{
    for (size_t i = 0; i < self->nfns; i++)
        self->fns[i].forks = NULL;
    tq_forkserver_stop(forks);
}

int taskq_worker_run(taskq_worker_t *self, taskq_error_t *err)
{
    if (!self)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "worker is NULL");
    if (self->ran)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "a worker runs once");
    if (self->nfns == 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "no functions registered");
    int keypair = self->key_file || self->master_key_file;
    if ((!self->authkey_file || !*self->authkey_file) && !keypair)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "no authkey file given");
    if (self->user && self->task_user)
        return tq_api_fail(err, TASKQ_ERR_USAGE,
                           "a task user needs the worker to stay root: give the worker a "
                           "user or its tasks one, not both");
    /* Task processes: set once, before any thread that forks exists. */
    const tq_user_t *tu = self->task_user;
    tq_task_proc_t tp = {
        .dir = self->task_dir,
        .has_user = self->task_user != NULL,
        .uid = tu ? tu->uid : 0,
        .gid = tu ? tu->gid : 0,
        .groups = tu ? tu->groups : NULL,
        .ngroups = tu ? tu->ngroups : 0,
        .user = tu ? tu->name : NULL,
        .home = tu ? tu->home : NULL,
        .env = self->task_env,
    };
    tq_err_t pwhy;
    /* Only when asked: the settings are the process's, shared by every
     * worker in it (taskq_worker_set_task_process). */
    if ((self->task_dir || self->task_user || self->task_env) &&
        tq_command_set_task_proc(&tp, &pwhy) < 0)
        return tq_api_fail(err, TASKQ_ERR_USAGE, "%s", pwhy.msg);
    for (size_t i = 0; i < self->nfns; i++)
        self->fns[i].limits = self->limits;
    /* Prefork and spawn children come from a copy of this process made
     * now, before the key is read or ZeroMQ holds it (forkserver.h). */
    tq_forkserver_t *forks = NULL;
    if (needs_forks(self)) {
        forks = tq_forkserver_start(self->fns, self->nfns, self->user, tq_child_main, &pwhy);
        if (!forks)
            return tq_api_fail(err, TASKQ_ERR_ENV, "%s", pwhy.msg);
        for (size_t i = 0; i < self->nfns; i++)
            if (tq_fn_forks(&self->fns[i]))
                self->fns[i].forks = forks;
    }
    /* Only the client pair and the server's public key are kept, in
     * memory a core dump leaves out (tq_authkey.h). */
    tq_curve_keys_t *keys = tq_curve_keys_new();
    if (!keys) {
        forks_stop(self, &forks);
        return tq_api_fail(err, TASKQ_ERR_ENV, "cannot map memory for the keys: %s",
                           strerror(errno));
    }
    tq_err_t why;
    if (tq_keys_load_peer(self->authkey_file, self->key_file, self->master_key_file, keys, &why) <
        0) {
        tq_curve_keys_free(&keys);
        forks_stop(self, &forks);
        return tq_api_fail(err, strstr(why.msg, "needs") ? TASKQ_ERR_USAGE : TASKQ_ERR_ENV, "%s",
                           why.msg);
    }
    /* The key is read (and the plugins loaded): root is no longer needed. */
    if (self->user) {
        if (tq_priv_drop(self->user, &pwhy) < 0) {
            tq_curve_keys_free(&keys);
            forks_stop(self, &forks);
            return tq_api_fail(err, TASKQ_ERR_ENV, "%s", pwhy.msg);
        }
        tq_info("running as user %s (uid %u, gid %u): root's privileges dropped", self->user->name,
                (unsigned)self->user->uid, (unsigned)self->user->gid);
    }
    self->ran = 1;
    tq_conn_opts_t o = {
        .endpoint = self->endpoint,
        .keys = keys,
        .name = self->name,
        .slots = atomic_load(&self->slots_wanted) ? atomic_load(&self->slots_wanted) : self->slots,
        .prefetch = self->prefetch,
        .adaptive = !self->prefetch_set,
        .zctx = self->zctx,
        .fns = self->fns,
        .nfns = self->nfns,
        .drain_timeout_ms = self->drain_timeout_ms,
        .stop_fd = self->stop_r,
        .slots_wanted = &self->slots_wanted,
    };
    tq_err_t rerr;
    int rc = tq_conn_run(&o, &self->stuck, &rerr);
    tq_curve_keys_free(&keys);
    /* Slot threads left running (stuck) may still ask it for children. */
    if (!self->stuck)
        forks_stop(self, &forks);
    if (rc < 0 && rerr.code == TASKQ_ERR_CONNECT && keypair)
        return tq_api_fail(err, TASKQ_ERR_CONNECT,
                           "authentication failed connecting to %s (key not accepted: is this "
                           "key's .pub in the master's --allow-keys, and --master-key the "
                           "master's public key?)",
                           self->endpoint);
    return rc < 0 ? tq_err_to_public(err, &rerr) : 0;
}

void taskq_worker_stop(taskq_worker_t *self)
{
    if (!self)
        return;
    int saved = errno;
    char b = 's';
    ssize_t w = write(self->stop_w, &b, 1);
    (void)w;
    errno = saved;
}

int taskq_worker_set_log_level(taskq_worker_t *self, int level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)self; /* the engine's logger is one per process */
    if (level < TASKQ_LOG_ERROR || level > TASKQ_LOG_DEBUG)
        return -1;
    int old = tq_log_level();
    if (old == level)
        return 0;
    tq_log_set_level(level);
    tq_log_write(TQ_LOG_INFO, "log level %s -> %s", names[old], names[level]);
    return 1;
}

int taskq_worker_set_concurrency(taskq_worker_t *self, size_t slots)
{
    if (!self)
        return -1;
    size_t n = slots ? slots : (size_t)tq_ncpus();
    if (n == 0)
        n = 1;
    if (slots > TQ_MAX_SLOTS)
        return -1;
    if (n > TQ_MAX_SLOTS)
        n = TQ_MAX_SLOTS;
    size_t cur = atomic_load(&self->slots_wanted);
    if ((cur ? cur : self->slots) == n)
        return 0;
    atomic_store(&self->slots_wanted, n);
    int saved = errno;
    char b = TQ_CONN_WAKE_RESIZE; /* the connection thread looks now */
    ssize_t w = write(self->stop_w, &b, 1);
    (void)w;
    errno = saved;
    return 1;
}

void taskq_worker_log(taskq_worker_t *self, int level, const char *fmt, ...)
{
    (void)self;
    if (level > tq_log_level())
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    tq_log_write(level, "%s", line);
}
