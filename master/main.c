/* main.c - taskq-master: settings table, start-up, signals.
 *
 *   taskq-master --bind ENDPOINT --data-dir DIR --authkey-file FILE [options]
 *
 * SIGHUP re-reads the settings and applies what can change live
 * (reload_settings), logging each change and each refusal; it goes on.
 * Exit statuses (common/tq_exit.h): 0 after SIGTERM/SIGINT, TQ_EXIT_USAGE
 * for a bad flag, TQ_EXIT_ENV when the key, the data dir or the bind
 * address cannot be used, TQ_EXIT_INTERNAL when the loop fails. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <zmq.h>

#include "access.h"
#include "dirlock.h"
#include "jfault.h"
#include "loop.h"
#include "tq_args.h"
#include "http.h"
#include "metrics.h"
#include "tq_authkey.h"
#include "tq_config.h"
#include "tq_exit.h"
#include "tq_keyfile.h"
#include "tq_limits.h"
#include "tq_log.h"
#include "tq_priv.h"
#include "tq_proto.h"
#include "tq_util.h"

typedef struct {
    char *bind;
    char *data_dir;
    char *authkey_file;
    int64_t heartbeat_interval_ms;
    int64_t heartbeat_timeout_ms;
    int64_t max_payload;
    int64_t result_ttl_ms;
    int64_t unfetched_ttl_ms;
    int64_t max_tasks;
    int64_t max_attempts;
    int64_t lease_timeout_ms;
    int64_t retry_backoff_ms;
    int64_t retry_backoff_max_ms;
    tq_strlist_t queue_timeout;
    int64_t peer_queue;
    int64_t peer_queue_bytes;
    int64_t max_connections;
    int64_t handshake_timeout_ms;
    int64_t io_threads;
    int64_t key_retention_ms;
    char *fsync;
    int64_t fsync_interval_ms;
    int repair;
    int64_t journal_reserve;
    char *log_level;
    int version;
    char *log_format;
    char *config;
    int check_config;
    char *metrics_listen;
    char *http_listen;
    char *http_auth_file;
    int http_show_payloads;
    char *allow_keys;
    char *key;
    char *user;
} settings_t;

#define S(f) offsetof(settings_t, f)
/* --queue-timeout flags at most (each names a queue: far below the
 * store's name table, TQ_STORE_MAX_NAMES). */
#define MAX_QUEUE_TIMEOUTS 1024
#define YEAR_MS (366LL * 24 * 3600 * 1000)
/* File descriptors kept for everything but peer connections: stdio, the
 * signalfd, ZeroMQ's own (a mailbox per socket and thread, epoll, the
 * listener), the journal (its directory, the open segment, the next one
 * and compaction's output, a reserve), the data dir's lock and
 * temporary files. About 25 are used; the rest absorbs connections that
 * libzmq accepts in a burst before the auth actor cuts the excess (it
 * reacts within milliseconds; a burst is bounded by the listen backlog
 * and the accept rate). An eighth of the limit, 64..4096. */
#define FD_RESERVE_MIN 64
#define FD_RESERVE_MAX 4096
/* Lowest file descriptor limit the master starts with. */
#define FD_MIN (FD_RESERVE_MIN + 16)
/* --max-connections at most (and its default when the fd limit is
 * higher): the auth actor keeps a table entry per connection. */
#define MAX_CONNECTIONS 1000000

static const tq_cfg_entry_t table[] = {
    {"bind", TQ_CFG_STRING, "tcp://127.0.0.1:7070", 0, 0, NULL, "TASKQ_BIND", S(bind), "ENDPOINT",
     "ZeroMQ endpoint to listen on"},
    {"data-dir", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(data_dir), "DIR",
     "state directory (required; created with mode 0700)"},
    {"authkey-file", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_AUTHKEY_FILE", S(authkey_file), "FILE",
     "shared secret (default: DIR/authkey, generated on first start)"},
    {"heartbeat-interval", TQ_CFG_MS, "1", 50, 60000, NULL, NULL, S(heartbeat_interval_ms),
     "SECONDS", "send HEARTBEAT to every peer this often (0.05..60)"},
    {"heartbeat-timeout", TQ_CFG_MS, "5", 100, 3600000, NULL, NULL, S(heartbeat_timeout_ms),
     "SECONDS", "a peer silent this long is dead (> --heartbeat-interval, up to 3600)"},
    {"max-payload", TQ_CFG_SIZE, "64M", 1, (int64_t)TQ_PAYLOAD_HARD_MAX, NULL, NULL, S(max_payload),
     "SIZE", "largest payload, result or error (up to 512M)"},
    {"result-ttl", TQ_CFG_MS, "3600", 0, 10 * YEAR_MS, NULL, NULL, S(result_ttl_ms), "SECONDS",
     "keep a result this long after it was delivered to a client (SIGHUP applies a new value)"},
    {"unfetched-ttl", TQ_CFG_MS, "604800", 0, 10 * YEAR_MS, NULL, NULL, S(unfetched_ttl_ms),
     "SECONDS", "keep a result nobody fetched this long (SIGHUP applies a new value)"},
    {"max-tasks", TQ_CFG_INT, "10000000", 1, 1000000000, NULL, NULL, S(max_tasks), "N",
     "tasks stored in any state; SUBMIT beyond it is refused (full) (SIGHUP applies a new "
     "value)"},
    {"max-attempts", TQ_CFG_INT, "5", 1, 1000, NULL, NULL, S(max_attempts), "N",
     "dispatches without a result before a task is dead (SIGHUP applies a new value)"},
    {"lease-timeout", TQ_CFG_MS, "1800", 0, YEAR_MS, NULL, NULL, S(lease_timeout_ms), "SECONDS",
     "a task without a run timeout is taken back from its worker (KILL) and requeued this long "
     "after dispatch, as a lost lease (0 = never; SIGHUP applies a new value)"},
    {"retry-backoff", TQ_CFG_MS, "1", 0, 3600000, NULL, NULL, S(retry_backoff_ms), "SECONDS",
     "delay before a retry or a lost task's next run: doubles each time, with jitter "
     "(0 = none; SIGHUP applies a new value)"},
    {"retry-backoff-max", TQ_CFG_MS, "60", 0, 86400000, NULL, NULL, S(retry_backoff_max_ms),
     "SECONDS", "longest such delay (SIGHUP applies a new value)"},
    {"queue-timeout", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, S(queue_timeout), "Q=SECONDS",
     "run timeout for tasks submitted to queue Q without --timeout (up to 1024 queues; SIGHUP "
     "applies a new list)"},
    {"peer-queue", TQ_CFG_INT, "1000", 1, 1000000, NULL, NULL, S(peer_queue), "N",
     "messages queued to one peer before sends to it wait (bounds the memory a slow peer holds)"},
    {"peer-queue-bytes", TQ_CFG_SIZE, "64M", 65536, (int64_t)1 << 40, NULL, NULL,
     S(peer_queue_bytes), "SIZE",
     "result bytes sent to one client and not yet ACKed before more wait in the master "
     "as task ids (one larger result still goes alone; SIGHUP applies a new value)"},
    {"max-connections", TQ_CFG_INT, NULL, 1, MAX_CONNECTIONS, NULL, NULL, S(max_connections), "N",
     "open connections at most; past it the oldest connection that has sent no message is "
     "closed, or else the new one (default: the file descriptor limit minus an eighth of it, "
     "at least 64, at most 4096)"},
    {"handshake-timeout", TQ_CFG_MS, "10", 100, 3600000, NULL, NULL, S(handshake_timeout_ms),
     "SECONDS",
     "a connection that has not finished its CURVE handshake this long after it "
     "opened is closed (0.1..3600)"},
    {"io-threads", TQ_CFG_INT, "2", 1, 64, NULL, NULL, S(io_threads), "N",
     "ZeroMQ I/O threads: TCP, framing and CURVE encryption of the connections (with 2, a "
     "burst of new connections, a handshake flood among them, is shared between them instead "
     "of holding up every connected peer)"},
    {"key-retention", TQ_CFG_MS, "86400", 1000, YEAR_MS, NULL, NULL, S(key_retention_ms), "SECONDS",
     "remember a SUBMIT idempotency key this long (1..31622400)"},
    {"fsync", TQ_CFG_ENUM, "interval", 0, 0, "always|interval|off", NULL, S(fsync), "MODE",
     "when a SUBMIT is acknowledged: always = after fsync of its batch; interval = after the "
     "write, fsynced within --fsync-interval; off = after the write, the OS syncs"},
    {"fsync-interval", TQ_CFG_INT, "50", 1, 60000, NULL, NULL, S(fsync_interval_ms), "MS",
     "with --fsync interval: fsync the journal at most this many milliseconds after a write"},
    {"repair", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, S(repair), NULL,
     "start even if the journal is damaged: replay what can be read, drop the rest and say "
     "how many tasks that lost"},
    {"journal-reserve", TQ_CFG_SIZE, "64M", 0, (int64_t)1 << 40, NULL, NULL, S(journal_reserve),
     "SIZE",
     "disk space kept allocated in DIR/journal/reserve and given back when the disk is full, so "
     "compaction and a restart have room (at most 1/8 of the file system; 0 = none)"},
    {"log-level", TQ_CFG_ENUM, "info", 0, 0, "error|warn|info|debug", "TASKQ_LOG_LEVEL",
     S(log_level), "LEVEL", "error, warn, info or debug (SIGHUP applies a new value)"},
    {"version", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, S(version), NULL,
     "print the version and exit"},
    {"log-format", TQ_CFG_ENUM, "logfmt", 0, 0, TQ_LOG_FORMATS, "TASKQ_LOG_FORMAT", S(log_format),
     "FORMAT",
     "log lines as logfmt (ts=... level=... role=master msg=\"...\"), json (one object "
     "a line) or text (the older 'TIME master LEVEL message')"},
    {"config", TQ_CFG_STRING, NULL, 0, 0, NULL, "TASKQ_CONFIG", S(config), "FILE",
     "read settings from FILE (name = value per line, names as these flags; flags and the "
     "environment win over it; taskq.conf(5))"},
    {"check-config", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, S(check_config), NULL,
     "check the settings (file, environment, flags) and exit: prints 'configuration OK', or "
     "every error (FILE:LINE: message) and exits 2"},
    {"metrics-listen", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(metrics_listen), "ADDR:PORT",
     "serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics (off by default; give "
     "127.0.0.1:PORT unless the network in front is trusted)"},
    {"http-listen", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(http_listen), "ADDR:PORT",
     "serve the web dashboard, its JSON API (/api/v1/) and the metrics over HTTP on ADDR:PORT "
     "(off by default; \":PORT\" is loopback; any other address needs --http-auth-file; "
     "docs/http.md)"},
    {"http-auth-file", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(http_auth_file), "FILE",
     "users of --http-listen, one 'NAME ROLE SECRET' a line (ROLE read or admin; mode 0600): "
     "requests then need a bearer token or basic password"},
    {"http-show-payloads", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, S(http_show_payloads), NULL,
     "show task payload and result bytes over --http-listen (left out by default)"},
    {"allow-keys", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(allow_keys), "FILE",
     "key-pair mode: accept exactly the public keys listed in FILE, each with a name, a role "
     "(worker, client, admin) and its queues and functions (docs/security.md); with "
     "--authkey-file too, the shared key is accepted as well (SIGHUP re-reads FILE)"},
    {"key", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(key), "FILE",
     "the master's own key pair (made by taskq keygen; peers get its .pub as --master-key); "
     "required with --allow-keys unless --authkey-file is given (then the authkey's pair is "
     "the default)"},
    {"user", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, S(user), "USER",
     "started as root: read the key, open the data dir and bind as root, then run as USER "
     "for good (the data dir must be USER's; docs/security.md)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};

/* Short forms of the common options (docs/master.md). */
static const tq_short_t shorts[] = {{'h', "help"},     {'V', "version"},      {'b', "bind"},
                                    {'d', "data-dir"}, {'k', "authkey-file"}, {0, NULL}};

static void usage(FILE *out)
{
    fprintf(out, "usage: taskq-master --bind ENDPOINT --data-dir DIR --authkey-file FILE "
                 "[options]\n\noptions:\n");
    tq_cfg_usage(table, out);
}

/* Parse each --queue-timeout Q=SECONDS (a valid queue name, a timeout
 * of 0.001..49 days: the wire's u32 milliseconds) into out[l->n]; the
 * names point into l's strings. */
static int parse_queue_timeouts(const tq_strlist_t *l, tq_queue_timeout_t *out, tq_err_t *err)
{
    if (l->n > MAX_QUEUE_TIMEOUTS) {
        tq_err_set(err, 0, "--queue-timeout: given %zu times, at most %d", l->n,
                   MAX_QUEUE_TIMEOUTS);
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) {
        const char *item = l->items[i], *eq = strchr(item, '=');
        int64_t ms;
        if (!eq || !tq_name_valid((tq_bytes_t){(const uint8_t *)item, (size_t)(eq - item)})) {
            return tq_err_set(err, 0,
                              "--queue-timeout: '%s' is not QUEUE=SECONDS with a valid queue name",
                              item);
        }
        if (tq_parse_seconds_ms(eq + 1, &ms) < 0 || ms < 1 || ms > (int64_t)UINT32_MAX) {
            return tq_err_set(err, 0,
                              "--queue-timeout: '%s' is not a number of seconds (0.001..4294967)",
                              eq + 1);
        }
        out[i].queue = (tq_bytes_t){(const uint8_t *)item, (size_t)(eq - item)};
        out[i].timeout_ms = (uint32_t)ms;
    }
    return 0;
}

/* Raise the soft RLIMIT_NOFILE to the hard limit (each connection holds
 * a descriptor), log what is in force, and work out --max-connections:
 * the limit minus a reserve unless given (then it must fit). Sets
 * *fd_limit and *max_conns; returns -1 with err when the limit leaves no
 * room for connections. */
static int plan_descriptors(int64_t asked, int *fd_limit, size_t *max_conns, tq_err_t *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        tq_err_set(err, 0, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max;
        /* an unlimited hard limit is refused: try the kernel's usual cap */
        if (setrlimit(RLIMIT_NOFILE, &up) < 0 && rl.rlim_max == RLIM_INFINITY) {
            up.rlim_cur = 1048576;
            setrlimit(RLIMIT_NOFILE, &up);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    int64_t limit = rl.rlim_cur > (rlim_t)INT32_MAX ? INT32_MAX : (int64_t)rl.rlim_cur;
    if (rl.rlim_cur != before)
        tq_info("file descriptors: %" PRId64 " (soft limit raised from %" PRIu64
                " to the hard limit)",
                limit, (uint64_t)before);
    else
        tq_info("file descriptors: %" PRId64 " (soft limit, equal to the hard limit)", limit);
    int64_t reserve = limit / 8;
    reserve = reserve < FD_RESERVE_MIN   ? FD_RESERVE_MIN
              : reserve > FD_RESERVE_MAX ? FD_RESERVE_MAX
                                         : reserve;
    if (limit < FD_MIN) {
        tq_err_set(err, 0,
                   "the file descriptor limit (%" PRId64
                   ", ulimit -n) is too low: the master keeps "
                   "%d for itself and the journal, and needs more for connections (raise it to at "
                   "least %d)",
                   limit, FD_RESERVE_MIN, FD_MIN);
        return -1;
    }
    int64_t room = limit - reserve;
    if (asked > room) {
        tq_warn("--max-connections %" PRId64 " does not fit the file descriptor limit %" PRId64
                " (%" PRId64 " are kept for the journal and the master): using %" PRId64,
                asked, limit, reserve, room);
        asked = room;
    }
    int64_t n = asked > 0 ? asked : room < MAX_CONNECTIONS ? room : MAX_CONNECTIONS;
    if (asked > 0)
        tq_info("max-connections %" PRId64 " (--max-connections)", n);
    else
        tq_info("max-connections %" PRId64 " (the file descriptor limit minus %" PRId64
                " kept for the journal and the master)",
                n, reserve);
    *fd_limit = (int)limit;
    *max_conns = (size_t)n;
    return 0;
}

/* Create dir (mode 0700) if missing; check it is a writable directory
 * that no other user controls (as ssh checks its files): owned by us or
 * root, not writable by group or others. Another user's data dir could
 * hold that user's authkey (used when no --authkey-file is given) and
 * journal. */
static int prepare_data_dir(const char *dir, const tq_user_t *user, tq_err_t *err)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        if (errno != ENOENT) {
            tq_err_set(err, 0, "--data-dir %s: %s", dir, strerror(errno));
            return -1;
        }
        if (mkdir(dir, 0700) < 0) {
            tq_err_set(err, 0, "--data-dir %s: cannot create it: %s", dir, strerror(errno));
            return -1;
        }
        if (user && chown(dir, user->uid, user->gid) < 0) {
            tq_err_set(err, 0, "--data-dir %s: cannot give it to --user %s: %s", dir, user->name,
                       strerror(errno));
            return -1;
        }
        tq_info("created data dir %s (mode 0700%s%s)", dir, user ? ", owner " : "",
                user ? user->name : "");
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        tq_err_set(err, 0, "--data-dir %s: exists and is not a directory", dir);
        return -1;
    }
    if (user && st.st_uid != user->uid) {
        tq_err_set(err, 0,
                   "--data-dir %s: owned by uid %u, but --user %s (uid %u) runs the master and "
                   "must own it: chown -R %s %s",
                   dir, (unsigned)st.st_uid, user->name, (unsigned)user->uid, user->name, dir);
        return -1;
    }
    if (!user && st.st_uid != geteuid() && st.st_uid != 0) {
        tq_err_set(err, 0,
                   "--data-dir %s: owned by uid %u, not by us (uid %u) or root: another user "
                   "could have put its authkey and journal there; use a directory of our own",
                   dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if ((st.st_mode & 022) != 0) {
        tq_err_set(err, 0,
                   "--data-dir %s: writable by group or others (mode %04o): another user could "
                   "put its authkey and journal there; fix it with: chmod go-w %s",
                   dir, (unsigned)(st.st_mode & 07777), dir);
        return -1;
    }
    if (!user && access(dir, R_OK | W_OK | X_OK) < 0) {
        tq_err_set(err, 0, "--data-dir %s: not writable: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* The key file to use; generates DIR/authkey when no file was named and
 * it does not exist yet. path[len] receives the path. */
static int resolve_authkey(const settings_t *s, char *path, size_t len, tq_err_t *err)
{
    if (s->authkey_file && *s->authkey_file) {
        tq_strlcpy(path, s->authkey_file, len);
        return 0;
    }
    int n = snprintf(path, len, "%s/authkey", s->data_dir);
    if (n < 0 || (size_t)n >= len) {
        tq_err_set(err, 0, "--data-dir: path too long");
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        return 0;
    if (tq_authkey_generate(path, err) < 0)
        return -1;
    tq_info("generated a new authkey at %s; copy it to workers and clients", path);
    return 0;
}

/* Checks across settings that the table's bounds cannot make: the same
 * at start and on SIGHUP. Returns 0, or -1 with err. */
static int check_settings(const settings_t *s, tq_err_t *err)
{
    if (s->heartbeat_timeout_ms <= s->heartbeat_interval_ms) {
        tq_err_set(err, 0,
                   "--heartbeat-timeout (%.3g s) must be greater than --heartbeat-interval (%.3g "
                   "s)",
                   (double)s->heartbeat_timeout_ms / 1000.0,
                   (double)s->heartbeat_interval_ms / 1000.0);
        return -1;
    }
    if (s->retry_backoff_max_ms < s->retry_backoff_ms) {
        tq_err_set(err, 0,
                   "--retry-backoff-max (%.3g s) must not be less than --retry-backoff (%.3g s)",
                   (double)s->retry_backoff_max_ms / 1000.0, (double)s->retry_backoff_ms / 1000.0);
        return -1;
    }
    tq_queue_timeout_t *qt = tq_calloc(s->queue_timeout.n ? s->queue_timeout.n : 1, sizeof *qt);
    int rc = parse_queue_timeouts(&s->queue_timeout, qt, err);
    free(qt);
    return rc;
}

/* ---- SIGHUP ----------------------------------------------------------------
 * reload_settings reads the settings again (the same parse as at start:
 * the --config file, the environment, the flags) and hands them to
 * tq_cfg_reload, which applies each changed setting listed in `live`
 * through its group's function below and refuses, with a log line, the
 * others (--bind, --data-dir, ...: they need a restart). One function
 * per group of settings, each applying its whole group from `next`. */

static int apply_log_level(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)arg, (void)cur, (void)why, (void)whylen;
    tq_log_set_level(tq_log_level_parse(((const settings_t *)next)->log_level));
    return 0;
}

static int apply_ttls(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)cur, (void)why, (void)whylen;
    const settings_t *n = next;
    tq_loop_set_ttls(arg, n->result_ttl_ms, n->unfetched_ttl_ms);
    return 0;
}

static int apply_limits(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)cur, (void)why, (void)whylen;
    const settings_t *n = next;
    tq_loop_set_limits(arg, (size_t)n->max_tasks, (uint64_t)n->peer_queue_bytes);
    return 0;
}

static int apply_retry(void *arg, const void *cur, const void *next, char *why, size_t whylen)
{
    (void)cur, (void)why, (void)whylen;
    const settings_t *n = next;
    tq_loop_set_retry(arg, (uint32_t)n->max_attempts, n->lease_timeout_ms, n->retry_backoff_ms,
                      n->retry_backoff_max_ms);
    return 0;
}

static int apply_queue_timeouts(void *arg, const void *cur, const void *next, char *why,
                                size_t whylen)
{
    const settings_t *c = cur, *n = next;
    tq_queue_timeout_t *old = tq_calloc(c->queue_timeout.n + 1, sizeof *old);
    tq_queue_timeout_t *now = tq_calloc(n->queue_timeout.n + 1, sizeof *now);
    tq_err_t e = {0};
    int rc = 0;
    if (parse_queue_timeouts(&c->queue_timeout, old, &e) < 0 ||
        parse_queue_timeouts(&n->queue_timeout, now, &e) < 0) {
        tq_strlcpy(why, e.msg, whylen);
        rc = -1;
    } else if (tq_loop_set_queue_timeouts(arg, old, c->queue_timeout.n, now, n->queue_timeout.n,
                                          why, whylen) < 0) {
        rc = -1;
    }
    free(old);
    free(now);
    return rc;
}

/* What can change while the master runs (docs/master.md, Signals). */
static const tq_cfg_live_t live[] = {
    {"log-level", apply_log_level},
    {"result-ttl", apply_ttls},
    {"unfetched-ttl", apply_ttls},
    {"max-tasks", apply_limits},
    {"peer-queue-bytes", apply_limits},
    {"max-attempts", apply_retry},
    {"lease-timeout", apply_retry},
    {"retry-backoff", apply_retry},
    {"retry-backoff-max", apply_retry},
    {"queue-timeout", apply_queue_timeouts},
    {NULL, NULL},
};

static void reload_note(void *arg, int warn, const char *line)
{
    (void)arg;
    tq_log_write(warn ? TQ_LOG_WARN : TQ_LOG_INFO, "SIGHUP: %s", line);
}

/* SIGHUP with --allow-keys: read the file again (now: the settings as
 * parsed again) and hand it to the loop; a file that does not load
 * leaves the old one in force. Returns 1 if the loop got a new table. */
static int reload_allow(tq_loop_t *loop, const settings_t *now)
{
    if (!now->allow_keys || !*now->allow_keys) {
        tq_warn("SIGHUP: --allow-keys is no longer set: the master stays in key-pair mode "
                "with the old file (a restart changes the mode)");
        return 0;
    }
    tq_err_t err;
    tq_allow_t *allow = tq_allow_load(now->allow_keys, &err);
    if (!allow) {
        tq_error("SIGHUP: %s; the old --allow-keys stays in force", err.msg);
        return 0;
    }
    tq_loop_set_allow(loop, allow);
    return 1;
}

/* SIGHUP: apply what changed in the settings' sources to cur (the
 * settings in force, updated with what was applied) and the loop. A
 * source that no longer parses, or settings that do not fit together,
 * are logged and change nothing. Never stops the master. */
static void reload_settings(settings_t *cur, tq_loop_t *loop, int argc, char **argv, int keymode)
{
    settings_t next;
    memset(&next, 0, sizeof next);
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0;
    tq_err_t e = {0};
    if (tq_cfg_parse(table, &next, argc, argv, &argi, &help, err, sizeof err) < 0 ||
        (check_settings(&next, &e) < 0 && tq_strlcpy(err, e.msg, sizeof err) >= 0)) {
        tq_warn("SIGHUP: %s; nothing changed", err);
        tq_cfg_free(table, &next);
        return;
    }
    int changed = tq_cfg_reload(table, cur, &next, live, loop, reload_note);
    int allow = keymode && reload_allow(loop, &next);
    if (changed == 0 && !allow)
        tq_info("SIGHUP: nothing to reload");
    tq_cfg_free(table, &next);
}

/* What every start checks (and all --check-config checks): settings
 * that fit together, the addresses, the --allow-keys file, the --user.
 * Fills *qt (the parsed --queue-timeout), *allow and *user (user_buf,
 * when --user is given). Returns 0, or -1 after printing why. */
static int check_start(settings_t *s, int check, tq_queue_timeout_t **qt, tq_allow_t **allow,
                       tq_user_t *user_buf, tq_user_t **user)
{
    tq_err_t e;
    if (!s->data_dir || !*s->data_dir) {
        fprintf(stderr, "taskq-master: --data-dir is required\n");
        return -1;
    }
    if (check_settings(s, &e) < 0) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    *qt = tq_calloc(s->queue_timeout.n ? s->queue_timeout.n : 1, sizeof **qt);
    if (parse_queue_timeouts(&s->queue_timeout, *qt, &e) < 0) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    if (!s->bind || !*s->bind) {
        fprintf(stderr, "taskq-master: --bind must not be empty\n");
        return -1;
    }
    if (tq_endpoint_port_check(s->bind, "--bind", &e) < 0) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    tq_log_set_level(tq_log_level_parse(s->log_level));
    tq_log_set_format(tq_log_format_parse(s->log_format));
    if (s->metrics_listen && tq_metrics_addr_check(s->metrics_listen, &e) < 0) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    int keymode = s->allow_keys && *s->allow_keys;
    int use_authkey = !keymode || (s->authkey_file && *s->authkey_file);
    if (!use_authkey && (!s->key || !*s->key)) {
        fprintf(stderr, "taskq-master: --allow-keys without --authkey-file needs --key FILE (the "
                        "master's key pair: taskq keygen master)\n");
        return -1;
    }
    if (keymode && !(*allow = tq_allow_load(s->allow_keys, &e))) {
        fprintf(stderr, "%s%s\n", check ? "" : "taskq-master: ", e.msg);
        return -1;
    }
    if (s->http_listen && *s->http_listen &&
        tq_http_check(s->http_listen, s->http_auth_file, &e) < 0) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    if (s->user && tq_user_lookup(s->user, "--user", !s->check_config, user_buf, &e) == 0)
        *user = user_buf;
    else if (s->user) {
        fprintf(stderr, "taskq-master: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* The master's keys, in memory a core dump leaves out (tq_authkey.h):
 * the authkey's derived pair (generated in the data dir when no file is
 * named) and/or --key's pair (key-pair mode). NULL after logging why. */
static tq_curve_keys_t *load_keys(const settings_t *s, int use_authkey, int keymode,
                                  const tq_allow_t *allow)
{
    tq_err_t e;
    char keypath[4096];
    if (use_authkey && resolve_authkey(s, keypath, sizeof keypath, &e) < 0) {
        tq_error("%s", e.msg);
        return NULL;
    }
    tq_curve_keys_t *keys = tq_curve_keys_new();
    if (!keys) {
        tq_error("cannot map memory for the keys: %s", strerror(errno));
        return NULL;
    }
    if ((use_authkey && tq_authkey_load(keypath, keys, &e) < 0) ||
        (s->key && *s->key &&
         tq_keyfile_load_pair(s->key, keys->server_public, keys->server_secret, &e) < 0)) {
        tq_error("%s", e.msg);
        tq_curve_keys_free(&keys);
        return NULL;
    }
    if (keymode || (s->key && *s->key)) {
        char z[41] = "";
        zmq_z85_encode(z, keys->server_public, 32);
        tq_info("key-pair mode: %zu keys from --allow-keys %s%s; the master's public key is %s "
                "(%s: give it to peers as --master-key)",
                tq_allow_count(allow), keymode ? s->allow_keys : "(none)",
                use_authkey ? ", and the authkey's pair" : "", z,
                s->key && *s->key ? s->key : "derived from the authkey");
    }
    return keys;
}

/* The loop's configuration from the settings (strings point into s). */
static void loop_config(const settings_t *s, tq_queue_timeout_t *qtimeouts, size_t max_conns,
                        int fd_limit, void *ctx, int use_authkey, tq_allow_t *allow,
                        tq_loop_cfg_t *out)
{
    *out = (tq_loop_cfg_t){
        .endpoint = s->bind,
        .heartbeat_ms = s->heartbeat_interval_ms,
        .heartbeat_timeout_ms = s->heartbeat_timeout_ms,
        .max_payload = (size_t)s->max_payload,
        .result_ttl_ms = s->result_ttl_ms,
        .unfetched_ttl_ms = s->unfetched_ttl_ms,
        .max_tasks = (size_t)s->max_tasks,
        .max_attempts = (uint32_t)s->max_attempts,
        .lease_timeout_ms = s->lease_timeout_ms,
        .key_retention_ms = s->key_retention_ms,
        .peer_queue = (int)s->peer_queue,
        .peer_queue_bytes = (uint64_t)s->peer_queue_bytes,
        .max_connections = max_conns,
        .fd_limit = fd_limit,
        .handshake_timeout_ms = s->handshake_timeout_ms,
        .backoff_base_ms = s->retry_backoff_ms,
        .backoff_cap_ms = s->retry_backoff_max_ms,
        .queue_timeouts = qtimeouts,
        .nqueue_timeouts = s->queue_timeout.n,
        .journal =
            {
                .data_dir = s->data_dir,
                .mode = (tq_fsync_mode_t)tq_fsync_mode_parse(s->fsync),
                .interval_ms = s->fsync_interval_ms,
                .repair = s->repair,
                .reserve = (uint64_t)s->journal_reserve,
                .zmq_ctx = ctx,
            },
        .metrics_listen = s->metrics_listen && *s->metrics_listen ? s->metrics_listen : NULL,
        .http_listen = s->http_listen && *s->http_listen ? s->http_listen : NULL,
        .http_auth_file = s->http_auth_file && *s->http_auth_file ? s->http_auth_file : NULL,
        .http_show_payloads = s->http_show_payloads,
        .accept_shared = use_authkey,
        .allow = allow, /* the loop's now */
    };
}

/* Signals arrive on a signalfd polled by the loop: blocked here, before
 * any thread (ZeroMQ's, the auth actor) exists, so all inherit it.
 * SIGHUP reloads (reload_settings), never stops. Returns the fd, or -1
 * after logging why. */
static int signals_fd(void)
{
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        tq_error("signalfd: %s", strerror(errno));
    return sfd;
}

/* Run the loop until SIGTERM or SIGINT arrives on sfd; SIGHUP reloads
 * the settings (reload_settings) and the loop goes on. Returns the exit
 * status. */
static int serve(tq_loop_t *loop, int sfd, settings_t *s, int argc, char **argv, int keymode)
{
    for (;;) {
        if (tq_loop_run(loop, sfd) != 0)
            return TQ_EXIT_INTERNAL;
        struct signalfd_siginfo si;
        ssize_t got = read(sfd, &si, sizeof si);
        if (got == (ssize_t)sizeof si && si.ssi_signo == SIGHUP) {
            tq_info("SIGHUP received: reloading settings");
            reload_settings(s, loop, argc, argv, keymode);
            continue; /* the loop picks up where it was */
        }
        if (got == (ssize_t)sizeof si)
            tq_info("%s received, shutting down", strsignal((int)si.ssi_signo));
        return TQ_EXIT_OK;
    }
}

int main(int argc, char **argv)
{
    tq_log_init("master");
    tq_process_protect(); /* no core file or ptrace with the keys in memory */
    /* The flags table in docs/master.md is generated from the same table. */
    if (argc == 2 && strcmp(argv[1], "--help-markdown") == 0) {
        tq_cfg_markdown(table, stdout);
        return TQ_EXIT_OK;
    }
    /* The man page's option list is generated from the same table. */
    if (argc == 2 && strcmp(argv[1], "--help-scdoc") == 0) {
        tq_cfg_scdoc(table, stdout);
        return TQ_EXIT_OK;
    }
    int check = tq_cfg_has_flag(table, argc, argv, 1, "check-config");
    settings_t s;
    tq_queue_timeout_t *qtimeouts = NULL;
    tq_allow_t *allow = NULL; /* --allow-keys, until the loop takes it */
    memset(&s, 0, sizeof s);
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0, lockfd = -1;
    tq_args_t args;
    if (tq_args_expand(table, shorts, argc, argv, 1, &args, err, sizeof err) < 0 ||
        tq_cfg_parse(table, &s, args.argc, args.argv, &argi, &help, err, sizeof err) < 0) {
        if (check)
            fprintf(stderr, "%s\n", err);
        else
            fprintf(stderr, "taskq-master: %s\n(try taskq-master --help)\n", err);
        tq_args_free(&args);
        tq_cfg_free(table, &s);
        return TQ_EXIT_USAGE;
    }
    argc = args.argc; /* from here on, the options as written long */
    argv = args.argv;
    if (help || s.version) {
        if (help)
            usage(stdout);
        else
            printf("taskq-master %s\n", TQ_VERSION);
        tq_args_free(&args);
        tq_cfg_free(table, &s);
        return TQ_EXIT_OK;
    }
    int rc = TQ_EXIT_USAGE;
    if (argi < argc) {
        fprintf(stderr, "taskq-master: unexpected argument '%s'\n", argv[argi]);
        goto out;
    }
    tq_err_t e;
    tq_user_t user_buf, *user = NULL;
    if (check_start(&s, check, &qtimeouts, &allow, &user_buf, &user) < 0)
        goto out;
    int keymode = s.allow_keys && *s.allow_keys;
    int use_authkey = !keymode || (s.authkey_file && *s.authkey_file);
    if (s.check_config) {
        printf("configuration OK\n");
        rc = TQ_EXIT_OK;
        goto out;
    }

    rc = TQ_EXIT_ENV;
    tq_info("taskq-master %s starting: pid %ld, bind %s, data dir %s, fsync %s, max-tasks %" PRId64
            ", max-payload %" PRId64 ", max-attempts %" PRId64 ", lease-timeout %" PRId64
            " ms, heartbeat %" PRId64 "/%" PRId64 " ms, log-level %s",
            TQ_VERSION, (long)getpid(), s.bind, s.data_dir, s.fsync, s.max_tasks, s.max_payload,
            s.max_attempts, s.lease_timeout_ms, s.heartbeat_interval_ms, s.heartbeat_timeout_ms,
            s.log_level);
    int fd_limit = 0;
    size_t max_conns = 0;
    if (plan_descriptors(s.max_connections, &fd_limit, &max_conns, &e) < 0) {
        tq_error("%s", e.msg);
        goto out;
    }
    if (prepare_data_dir(s.data_dir, user, &e) < 0) {
        tq_error("%s", e.msg);
        goto out;
    }
    /* With --user, the lock and the journal's files are made and opened
     * as USER (its file system ids); the key file is read as root. */
    if (user && tq_priv_no_new_privs(&e) < 0) { /* before any thread */
        tq_error("%s", e.msg);
        goto out;
    }
    if (user)
        tq_priv_fs_as(user);
    /* One master per data dir, before anything in it is read. */
    if ((lockfd = tq_dirlock_acquire(s.data_dir, &e)) < 0) {
        tq_error("%s", e.msg);
        goto out;
    }
    if (user)
        tq_priv_fs_as(NULL); /* a generated key file is root's, as one given */
    tq_curve_keys_t *keys = load_keys(&s, use_authkey, keymode, allow);
    if (!keys)
        goto out;
    if (user)
        tq_priv_fs_as(user); /* the journal's files, before any thread exists */

    int sfd = signals_fd();
    if (sfd < 0) {
        tq_curve_keys_free(&keys);
        rc = TQ_EXIT_INTERNAL;
        goto out;
    }

    if (tq_jfault_install_from_env() < 0) {
        tq_curve_keys_free(&keys);
        close(sfd);
        rc = TQ_EXIT_ENV;
        goto out;
    }
    void *ctx = zmq_ctx_new();
    /* Before the first socket: the threads start with it. */
    if (ctx && zmq_ctx_set(ctx, ZMQ_IO_THREADS, (int)s.io_threads) != 0) {
        tq_error("--io-threads %d: %s", (int)s.io_threads, zmq_strerror(zmq_errno()));
        zmq_ctx_term(ctx);
        ctx = NULL;
    }
    tq_loop_cfg_t lcfg;
    loop_config(&s, qtimeouts, max_conns, fd_limit, ctx, use_authkey, allow, &lcfg);
    tq_loop_t *loop = ctx ? tq_loop_new(ctx, &lcfg, keys, &e) : NULL;
    if (ctx)
        allow = NULL; /* the loop's (freed by it, also when it failed) */
    tq_curve_keys_free(&keys);
    if (!loop) {
        tq_error("%s", ctx ? e.msg : "cannot create the ZeroMQ context");
        rc = TQ_EXIT_ENV;
    } else if (user && tq_priv_drop(user, &e) < 0) {
        /* bound and replayed as root: now USER for good, or not at all */
        tq_error("%s", e.msg);
        rc = TQ_EXIT_ENV;
        tq_loop_destroy(&loop);
    } else {
        if (user)
            tq_info("running as user %s (uid %u, gid %u): root's privileges dropped", user->name,
                    (unsigned)user->uid, (unsigned)user->gid);
        tq_info("listening on %s, data dir %s", tq_loop_endpoint(loop), s.data_dir);
        /* Type=notify units: ready once replayed and bound (a no-op
         * outside systemd: NOTIFY_SOCKET unset). */
        sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%lu", tq_loop_endpoint(loop),
                   (unsigned long)getpid());
        rc = serve(loop, sfd, &s, argc, argv, keymode);
        sd_notify(0, "STOPPING=1");
        tq_loop_destroy(&loop);
    }
    if (ctx)
        zmq_ctx_term(ctx);
    close(sfd);
out:
    tq_allow_free(&allow);
    tq_dirlock_release(lockfd);
    free(qtimeouts);
    tq_cfg_free(table, &s);
    tq_args_free(&args);
    return rc;
}
