/* command.h - `--fn NAME=COMMAND`: an external program run once per task.
 *
 * COMMAND is split into words as a POSIX shell would split it (single
 * quotes, double quotes with backslash escapes, backslash outside quotes)
 * but no shell runs and nothing is expanded. Each task runs the program
 * (found on PATH) in its own process group with the payload on stdin;
 * stdout is the result, the last TQ_COMMAND_STDERR_TAIL bytes of stderr
 * go into the error text. Children start with default signal
 * dispositions, an empty signal mask and only fds 0, 1 and 2. When the
 * program exits, anything left in its process group is killed. With
 * resource limits in the task's context (tq_run_ctx_t.limits) it is
 * started with fork + setrlimit + exec instead of posix_spawn. */
#ifndef TQ_WORKER_COMMAND_H
#define TQ_WORKER_COMMAND_H

#include <stddef.h>
#include <sys/types.h>

#include "run.h"
#include "tq_err.h"

/* Bytes of stderr kept for the error message. */
#define TQ_COMMAND_STDERR_TAIL 4096
/* Words in one COMMAND, and bytes in its text. */
#define TQ_COMMAND_MAX_WORDS 256
#define TQ_COMMAND_MAX_TEXT 8192

typedef struct tq_command tq_command_t;

/* Split text into words. Returns 0 with *argv_out (NULL-terminated,
 * caller frees with tq_command_free_words) and *argc_out, or -1 with a
 * message in err ("unterminated single quote", "empty command", ...). */
int tq_command_split(const char *text, char ***argv_out, size_t *argc_out, tq_err_t *err);
void tq_command_free_words(char **argv);

/* Parse COMMAND. Caller owns the result (tq_command_destroy). NULL with
 * err filled when the text does not split. */
tq_command_t *tq_command_new(const char *text, tq_err_t *err);
void tq_command_destroy(tq_command_t **self_p);
/* The words (NULL-terminated) and the original text. */
char *const *tq_command_argv(const tq_command_t *self);
const char *tq_command_text(const tq_command_t *self);

/* Run the command once for a task; thread-safe. Fills *out:
 *   exit 0                TQ_RUN_OK, stdout
 *   non-zero exit         TQ_RUN_FAILED "exit status 3: <stderr tail>"
 *   killed by a signal    TQ_RUN_FAILED "killed by signal 9 (SIGKILL): <stderr tail>"
 *   cannot start          TQ_RUN_FAILED "cannot run 'cmd': <strerror>"
 *   stdout > max_result   TQ_RUN_FAILED "result exceeds max payload (N bytes)"
 *   deadline passed       TQ_RUN_TIMEOUT "timed out after S s"
 * In the last two cases and when ctx->cancel_fd becomes readable, the
 * whole process group gets SIGKILL. Returns when the child is reaped. */
void tq_command_run(const tq_command_t *self, const tq_run_ctx_t *ctx, tq_run_result_t *out);

/* Supplementary groups of a task user at most (as tq_priv.h). */
#define TQ_TASK_MAX_GROUPS 256

/* How task processes run (taskq_worker_set_task_dir, _task_user,
 * _task_env): set once before any task runs, read-only afterwards. */
typedef struct {
    const char *dir; /* working directory (NULL: the worker's) */
    int has_user;    /* run as uid/gid with groups (the worker is root) */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    int ngroups;
    const char *user, *home; /* USER/LOGNAME and HOME given to tasks */
    const char *env;         /* comma list of variable names kept ("LC_*": a
                          prefix), or NULL: all but TASKQ_* */
} tq_task_proc_t;

/* Take p (copied) for every task child started from now on, and build
 * its environment. Returns 0, or -1 with err (an invalid name in env). */
int tq_command_set_task_proc(const tq_task_proc_t *p, tq_err_t *err);

/* 0 if p->env is a valid list (or NULL), else -1 with err. */
int tq_command_check_env(const tq_task_proc_t *p, tq_err_t *err);

/* 1 when task children need the fork path (posix_spawn cannot change
 * user or directory). */
int tq_command_task_proc_active(void);

/* The environment every task child gets: by default the worker's,
 * without the TASKQ_* variables (the worker's own settings: its
 * endpoint, the path of its key file, its log level), which are no
 * business of a task; with a task_env list only the variables it names
 * (and HOME, USER, LOGNAME of a task user). Built once (thread-safe). */
char **tq_command_task_env(void);

/* In a freshly forked child (async-signal-safe calls only): its own
 * process group, default signal dispositions, an empty signal mask, the
 * limits (setrlimit RLIMIT_AS, RLIMIT_CPU) that are not 0, the task user
 * (groups, gid, uid: for good) and directory of tq_command_set_task_proc,
 * and env (tq_command_task_env(), fetched before the fork) as its
 * environment. Returns 0, or -1 with errno (a step that failed: the
 * child must not run the task). */
int tq_command_child_setup(const tq_limits_t *limits, char **env);

/* fork and exec argv (searched on PATH) with fd0, fd1, fd2 as its 0, 1,
 * 2, in its own process group, default signal dispositions, an empty
 * signal mask, limits applied and no other fds. Returns the pid, or -1
 * with *errno_out set (fork failed, or the exec failed: the child is
 * reaped). Safe to call from any thread. */
pid_t tq_command_exec(char *const argv[], int fd0, int fd1, int fd2, const tq_limits_t *limits,
                      int *errno_out);

#endif
