/* http.c - the dashboard, the JSON API and /metrics over libmicrohttpd.
 * See http.h; the API is in docs/http.md. */
#include "http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "now.h"
#include "tq_log.h"
#include "tq_util.h"
#include "web_assets.h"

/* Longest ADDR:PORT accepted (as metrics.c). */
#define HTTP_ADDR_MAX 128
/* Longest op name in /api/v1/ops/NAME. */
#define HTTP_OP_MAX 32
/* Longest query argument value of a GET op. */
#define HTTP_ARG_MAX 1024
/* Lines about failed logins: at most one a second. */
#define HTTP_AUTH_LOG_PER_S 1

/* The security headers every response carries (docs/http.md). No
 * inline script or style is allowed: the pages load theirs from the
 * server. */
static const char *const security_headers[][2] = {
    {"Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
    {"Cross-Origin-Resource-Policy", "same-origin"},
};

typedef enum { ROLE_READ = 0, ROLE_ADMIN = 1 } role_t;

typedef struct {
    char name[TQ_HTTP_MAX_USER + 1];
    role_t role;
    uint8_t secret_hash[crypto_generichash_BYTES]; /* of the secret */
    char csrf[crypto_generichash_BYTES * 2 + 1];   /* this user's CSRF token */
} user_t;

/* One query or action handed to the loop. Owned by the connection
 * thread until queued; then by whichever side is last: the loop frees
 * one the thread abandoned (timed out), the thread one it got done. */
typedef struct req {
    struct req *next;
    cJSON *body; /* the op, with "op" */
    char user[TQ_HTTP_MAX_USER + 1];
    char address[INET6_ADDRSTRLEN + 8];
    int done, abandoned;
    unsigned status; /* HTTP status of the answer */
    char *answer;    /* JSON text */
    uint64_t lsn;    /* held for the journal up to here (loop side) */
} req_t;

/* One point of the history: one second. */
typedef struct {
    int64_t t;                        /* unix seconds */
    uint32_t submitted, done, failed; /* in that second */
    double wait_ms;                   /* mean queue wait of first dispatches, or < 0 */
} point_t;

/* Per connection: the request body as it arrives. */
typedef struct {
    char *body;
    size_t n;
    int too_big;
    int answered;
} conn_t;

struct tq_http {
    struct MHD_Daemon *daemon;
    char url[HTTP_ADDR_MAX + 32];
    int evfd; /* eventfd: requests wait */
    int show_payloads;
    tq_metrics_t *metrics;
    user_t *users; /* NULL: no auth file (loopback): everyone is "local", admin */
    size_t nusers;
    user_t local;
    pthread_mutex_t mu; /* guards what follows, up to "loop thread only" */
    pthread_cond_t cv;  /* an answer is ready, or closing */
    int closing;
    req_t *qhead, *qtail; /* waiting for the loop */
    size_t nqueued;
    char *snapshot; /* the last published status JSON */
    size_t snapshot_n;
    point_t ring[TQ_HTTP_HISTORY_S];
    size_t ring_n, ring_next;
    /* loop thread only */
    req_t *held; /* answers waiting for the journal */
    uint64_t last_sub, last_done, last_failed;
    int have_last;
    double wait_sum_ms;
    uint64_t wait_n;
};

static _Atomic int64_t auth_log_s;

/* ---- the address --------------------------------------------------------- */

/* 1 if ss is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x). */
static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a))
        return 1;
    return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
}

int tq_http_check(const char *listen, const char *auth_file, tq_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (tq_listen_addr_parse("--http-listen", listen, &ss, &len, err) < 0)
        return -1;
    if (!is_loopback(&ss) && !(auth_file && *auth_file)) {
        tq_err_set(err, 0,
                   "--http-listen %s is not a loopback address: anyone who can reach it could "
                   "steer the master, so it needs --http-auth-file (users and roles, "
                   "docs/http.md); or listen on 127.0.0.1",
                   listen);
        return -1;
    }
    return 0;
}

int tq_http_same_addr(const char *a, const char *b)
{
    struct sockaddr_storage x, y;
    socklen_t lx, ly;
    tq_err_t err;
    if (tq_listen_addr_parse("", a, &x, &lx, &err) < 0 ||
        tq_listen_addr_parse("", b, &y, &ly, &err) < 0 || lx != ly)
        return 0;
    if (x.ss_family == AF_INET) {
        const struct sockaddr_in *p = (const void *)&x, *q = (const void *)&y;
        return p->sin_port && p->sin_port == q->sin_port &&
               p->sin_addr.s_addr == q->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *p = (const void *)&x, *q = (const void *)&y;
    return p->sin6_port && p->sin6_port == q->sin6_port &&
           memcmp(&p->sin6_addr, &q->sin6_addr, sizeof p->sin6_addr) == 0;
}

/* ---- the auth file --------------------------------------------------------- */

static void hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A user's CSRF token: a keyed hash of the name with the process's
 * random key (a new one at each start: pages fetch it from
 * /api/v1/session). */
static void csrf_for(user_t *u, const uint8_t *key)
{
    uint8_t h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof h, (const uint8_t *)u->name, strlen(u->name), key,
                       crypto_generichash_KEYBYTES);
    hex(u->csrf, h, sizeof h);
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > TQ_HTTP_MAX_USER)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '@'))
            return 0;
    return 1;
}

/* Read the auth file: "NAME ROLE SECRET" a line (ROLE: read or admin),
 * '#' comments and blank lines; a regular file not readable by group or
 * others (as the authkey), at most TQ_HTTP_AUTH_FILE_MAX bytes and
 * TQ_HTTP_MAX_USERS users, names unique. Only hashes of the secrets are
 * kept. Returns 0, or -1 with err naming the file and line. */
static int load_users(tq_http_t *self, const char *path, const uint8_t *key, tq_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        tq_err_set(err, 0, "--http-auth-file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) || st.st_size > TQ_HTTP_AUTH_FILE_MAX) {
        tq_err_set(err, 0,
                   (st.st_mode & 077) && S_ISREG(st.st_mode)
                       ? "--http-auth-file %s: readable or writable by group or others (mode "
                         "%04o); fix it with: chmod 600 FILE"
                       : "--http-auth-file %s: not a regular file of at most 1 MiB (mode %04o)",
                   path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    char *text = tq_malloc((size_t)st.st_size + 1);
    ssize_t got = read(fd, text, (size_t)st.st_size);
    close(fd);
    if (got != st.st_size) {
        tq_err_set(err, 0, "--http-auth-file %s: short read", path);
        free(text);
        return -1;
    }
    text[got] = '\0';
    if (memchr(text, '\0', (size_t)got)) {
        tq_err_set(err, 0, "--http-auth-file %s: holds a NUL byte (not a text file)", path);
        sodium_memzero(text, (size_t)got);
        free(text);
        return -1;
    }
    int rc = 0;
    size_t lineno = 0;
    char *next = text;
    while (next && rc == 0) { /* line by line, blank ones counted */
        char *line = next, *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        next = nl ? nl + 1 : NULL;
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
            p[--n] = '\0';
        if (!*p || *p == '#')
            continue;
        char *f[4] = {0};
        int nf = 0;
        for (char *s2 = NULL, *w = strtok_r(p, " \t", &s2); w; w = strtok_r(NULL, " \t", &s2))
            f[nf < 4 ? nf++ : 3] = w;
        size_t slen = nf == 3 ? strlen(f[2]) : 0;
        const char *why = NULL;
        if (nf != 3)
            why = "not NAME ROLE SECRET";
        else if (!name_ok(f[0]))
            why = "the name must be 1..64 of A-Z a-z 0-9 . _ - @";
        else if (strcmp(f[1], "read") != 0 && strcmp(f[1], "admin") != 0)
            why = "the role must be read or admin";
        else if (slen < TQ_HTTP_MIN_SECRET || slen > TQ_HTTP_MAX_SECRET)
            why = "the secret must be 16..256 characters (e.g. from: openssl rand -hex 24)";
        else if (self->nusers >= TQ_HTTP_MAX_USERS)
            why = "more than 1000 users";
        for (size_t i = 0; !why && i < self->nusers; i++)
            if (strcmp(self->users[i].name, f[0]) == 0)
                why = "the name appears twice";
        if (why) {
            tq_err_set(err, 0, "--http-auth-file %s line %zu: %s", path, lineno, why);
            rc = -1;
            break;
        }
        self->users = tq_realloc(self->users, (self->nusers + 1) * sizeof *self->users);
        user_t *u = &self->users[self->nusers++];
        memset(u, 0, sizeof *u);
        tq_strlcpy(u->name, f[0], sizeof u->name);
        u->role = strcmp(f[1], "admin") == 0 ? ROLE_ADMIN : ROLE_READ;
        crypto_generichash(u->secret_hash, sizeof u->secret_hash, (const uint8_t *)f[2], slen, NULL,
                           0);
        csrf_for(u, key);
    }
    sodium_memzero(text, (size_t)st.st_size + 1);
    free(text);
    if (rc == 0 && self->nusers == 0) {
        tq_err_set(err, 0, "--http-auth-file %s: no users (lines NAME ROLE SECRET)", path);
        rc = -1;
    }
    if (rc == 0 && !self->users)
        self->users = tq_calloc(1, sizeof *self->users);
    return rc;
}

/* The user a request authenticates as: with no auth file, "local"
 * (admin); else the Authorization header's bearer token or basic
 * password. NULL when it does not. */
static const user_t *authenticate(tq_http_t *self, struct MHD_Connection *conn)
{
    if (!self->users)
        return &self->local;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strlen(h) > 1024)
        return NULL;
    char name[TQ_HTTP_MAX_USER + 1] = "";
    const char *secret = NULL;
    char decoded[800];
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        secret = h + 7;
    } else if (strncasecmp(h, "Basic ", 6) == 0) {
        size_t n = 0;
        if (sodium_base642bin((uint8_t *)decoded, sizeof decoded - 1, h + 6, strlen(h + 6), NULL,
                              &n, NULL, sodium_base64_VARIANT_ORIGINAL) < 0)
            return NULL;
        decoded[n] = '\0';
        char *colon = memchr(decoded, ':', n);
        if (!colon || (size_t)(colon - decoded) > TQ_HTTP_MAX_USER)
            return NULL;
        *colon = '\0';
        tq_strlcpy(name, decoded, sizeof name);
        secret = colon + 1;
    } else {
        return NULL;
    }
    uint8_t hash[crypto_generichash_BYTES];
    crypto_generichash(hash, sizeof hash, (const uint8_t *)secret, strlen(secret), NULL, 0);
    const user_t *found = NULL;
    for (size_t i = 0; i < self->nusers; i++) { /* every user: the time says nothing */
        const user_t *u = &self->users[i];
        int same = sodium_memcmp(hash, u->secret_hash, sizeof hash) == 0;
        if (same && (!name[0] || strcmp(name, u->name) == 0) && !found)
            found = u;
    }
    sodium_memzero(decoded, sizeof decoded);
    return found;
}

/* ---- responses --------------------------------------------------------------- */

/* Queue a response of n bytes of body (taken over: freed by MHD) with
 * the security headers. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
                               char *body, size_t n, int no_store)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    for (size_t i = 0; i < sizeof security_headers / sizeof security_headers[0]; i++)
        MHD_add_response_header(r, security_headers[i][0], security_headers[i][1]);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, no_store ? "no-store" : "no-cache");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Basic realm=\"taskq\", charset=\"UTF-8\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_json(struct MHD_Connection *conn, unsigned status, char *text)
{
    return respond(conn, status, "application/json", text, strlen(text), 1);
}

/* {"ok":false,"error":MESSAGE} with status. */
static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned status, const char *fmt,
                                     ...) __attribute__((format(printf, 3, 4)));
static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned status, const char *fmt,
                                     ...)
{
    char msg[TQ_MAX_ERROR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 0);
    cJSON_AddStringToObject(o, "error", msg);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return respond_json(conn, status, text);
}

/* The HTTP status for an ADMIN error code. */
static unsigned status_of(int code)
{
    switch (code) {
    case TQ_ERR_TOO_LARGE: return MHD_HTTP_CONTENT_TOO_LARGE;
    case TQ_ERR_FULL:
    case TQ_ERR_UNAVAILABLE: return MHD_HTTP_SERVICE_UNAVAILABLE;
    case TQ_ERR_INTERNAL: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    default: return MHD_HTTP_BAD_REQUEST;
    }
}

/* ---- requests to the loop ---------------------------------------------------- */

/* Hand r to the loop and wait for its answer (TQ_HTTP_WAIT_MS at most).
 * Takes r over. */
static enum MHD_Result ask_loop(tq_http_t *self, struct MHD_Connection *conn, req_t *r)
{
    pthread_mutex_lock(&self->mu);
    if (self->closing || self->nqueued >= TQ_HTTP_MAX_PENDING) {
        int closing = self->closing;
        pthread_mutex_unlock(&self->mu);
        cJSON_Delete(r->body);
        free(r);
        return respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "%s",
                             closing ? "the master is shutting down"
                                     : "too many requests waiting for the master; try again");
    }
    if (self->qtail)
        self->qtail->next = r;
    else
        self->qhead = r;
    self->qtail = r;
    self->nqueued++;
    pthread_mutex_unlock(&self->mu);
    uint64_t one = 1;
    if (write(self->evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        tq_warn("http: cannot wake the loop: %s", strerror(errno));
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += TQ_HTTP_WAIT_MS / 1000;
    until.tv_nsec += (long)(TQ_HTTP_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&self->mu);
    while (!r->done && !self->closing)
        if (pthread_cond_timedwait(&self->cv, &self->mu, &until) == ETIMEDOUT)
            break;
    if (!r->done) {
        r->abandoned = 1; /* the loop frees it */
        int closing = self->closing;
        pthread_mutex_unlock(&self->mu);
        return respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "%s",
                             closing ? "the master is shutting down"
                                     : "the master did not answer in time (the journal may be "
                                       "stalled); the action may still take effect");
    }
    pthread_mutex_unlock(&self->mu);
    unsigned status = r->status;
    char *answer = r->answer;
    free(r);
    return respond_json(conn, status, answer);
}

/* Loop thread: give r its answer (text taken over), or free it if its
 * connection gave up waiting. */
static void answer(tq_http_t *self, req_t *r, unsigned status, char *text)
{
    cJSON_Delete(r->body);
    r->body = NULL;
    pthread_mutex_lock(&self->mu);
    if (r->abandoned) {
        pthread_mutex_unlock(&self->mu);
        free(text);
        free(r);
        return;
    }
    r->status = status;
    r->answer = text;
    r->done = 1;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
}

/* Remove the payload and result bytes from a reply (docs/http.md),
 * at any depth, marking where they were. */
static void strip_payloads(cJSON *o)
{
    static const char *const keys[] = {"payload", "payload_base64", "result", "result_base64"};
    if (!cJSON_IsObject(o) && !cJSON_IsArray(o))
        return;
    if (cJSON_IsObject(o))
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (cJSON_GetObjectItemCaseSensitive(o, keys[i])) {
                cJSON_DeleteItemFromObjectCaseSensitive(o, keys[i]);
                if (!cJSON_GetObjectItemCaseSensitive(o, "payloads_hidden"))
                    cJSON_AddBoolToObject(o, "payloads_hidden", 1);
            }
    cJSON *c;
    cJSON_ArrayForEach(c, o) strip_payloads(c);
}

void tq_http_run(tq_http_t *self, const tq_admin_deps_t *d, tq_peer_t *limit)
{
    uint64_t v;
    if (read(self->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
        tq_warn("http: eventfd: %s", strerror(errno));
    pthread_mutex_lock(&self->mu);
    req_t *list = self->qhead;
    self->qhead = self->qtail = NULL;
    self->nqueued = 0;
    pthread_mutex_unlock(&self->mu);
    while (list) {
        req_t *r = list;
        list = r->next;
        r->next = NULL;
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(r->body, "op");
        const char *opname = cJSON_IsString(op) ? op->valuestring : "?";
        if (tq_admin_op_writes(opname) != 0) {
            char *what = cJSON_PrintUnformatted(r->body);
            char esc[300];
            tq_log_escape_str(esc, sizeof esc, what ? what : "");
            tq_info("http: %s (%s) asks %s: %s", r->user, r->address, opname, esc);
            free(what);
        }
        tq_admin_result_t res;
        /* limit: a peer record that only holds the HTTP side's budget of
         * new queue names (no identity: the HTTP roles apply) */
        cJSON *doc = tq_admin_exec(d, limit, r->user, r->address, r->body, &res);
        if (!doc) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddBoolToObject(e, "ok", 0);
            cJSON_AddStringToObject(e, "error", res.msg);
            cJSON_AddNumberToObject(e, "code", res.code);
            answer(self, r, status_of(res.code), cJSON_PrintUnformatted(e));
            cJSON_Delete(e);
            continue;
        }
        if (!self->show_payloads)
            strip_payloads(doc);
        cJSON_AddBoolToObject(doc, "ok", 1);
        char *text = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
        if (res.gated) { /* the answer waits for the journal (tq_http_release) */
            cJSON_Delete(r->body);
            r->body = NULL;
            r->answer = text;
            r->lsn = tq_persist_lsn(d->persist);
            r->next = self->held;
            self->held = r;
            continue;
        }
        answer(self, r, MHD_HTTP_OK, text);
    }
}

void tq_http_release(tq_http_t *self, uint64_t ready)
{
    for (req_t **pp = &self->held; *pp;) {
        req_t *r = *pp;
        if (r->lsn > ready) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        r->next = NULL;
        char *text = r->answer;
        r->answer = NULL;
        answer(self, r, MHD_HTTP_OK, text);
    }
}

/* ---- the snapshot and the history ---------------------------------------------- */

void tq_http_on_engine(void *arg, const tq_engine_ev_t *ev)
{
    tq_http_t *self = arg;
    if (ev->kind == TQ_EV_TASK && ev->store_ev == TQ_SEV_LEASED && ev->task->x &&
        ev->task->x->attempt == 1) {
        int64_t wait = tq_wall_ms() - ev->task->created_ms;
        self->wait_sum_ms += (double)(wait > 0 ? wait : 0);
        self->wait_n++;
    }
}

void tq_http_publish(tq_http_t *self, void *doc, uint64_t submitted, uint64_t done, uint64_t failed,
                     int64_t wall_ms)
{
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    point_t pt = {wall_ms / 1000, 0, 0, 0, -1};
    if (self->have_last) {
        pt.submitted = (uint32_t)(submitted - self->last_sub);
        pt.done = (uint32_t)(done - self->last_done);
        pt.failed = (uint32_t)(failed - self->last_failed);
    }
    if (self->wait_n)
        pt.wait_ms = self->wait_sum_ms / (double)self->wait_n;
    self->wait_sum_ms = 0;
    self->wait_n = 0;
    self->last_sub = submitted;
    self->last_done = done;
    self->last_failed = failed;
    pthread_mutex_lock(&self->mu);
    char *old = self->snapshot;
    self->snapshot = text;
    self->snapshot_n = text ? strlen(text) : 0;
    if (self->have_last) {
        self->ring[self->ring_next] = pt;
        self->ring_next = (self->ring_next + 1) % TQ_HTTP_HISTORY_S;
        if (self->ring_n < TQ_HTTP_HISTORY_S)
            self->ring_n++;
    }
    pthread_mutex_unlock(&self->mu);
    self->have_last = 1;
    free(old);
}

/* GET /api/v1/history?since=T: the points after unix second T. */
static enum MHD_Result get_history(tq_http_t *self, struct MHD_Connection *conn)
{
    const char *since_s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "since");
    uint64_t since = 0;
    if (since_s && tq_parse_u64(since_s, &since) < 0)
        return respond_error(conn, MHD_HTTP_BAD_REQUEST, "\"since\" must be unix seconds");
    point_t *pts = tq_malloc(sizeof(point_t) * TQ_HTTP_HISTORY_S);
    size_t n = 0;
    pthread_mutex_lock(&self->mu);
    size_t first = (self->ring_next + TQ_HTTP_HISTORY_S - self->ring_n) % TQ_HTTP_HISTORY_S;
    for (size_t i = 0; i < self->ring_n; i++) {
        const point_t *p = &self->ring[(first + i) % TQ_HTTP_HISTORY_S];
        if ((uint64_t)p->t > since)
            pts[n++] = *p;
    }
    pthread_mutex_unlock(&self->mu);
    /* one line per point: at most 3600 * ~60 bytes */
    size_t cap = 256 + n * 96, off = 0;
    char *text = tq_malloc(cap);
    off += (size_t)snprintf(text + off, cap - off,
                            "{\"ok\":true,\"now\":%" PRId64 ",\"fields\":[\"t\",\"submitted\","
                            "\"done\",\"failed\",\"wait_ms\"],\"points\":[",
                            tq_wall_ms() / 1000);
    for (size_t i = 0; i < n && off < cap; i++) {
        const point_t *p = &pts[i];
        char wait[32];
        if (p->wait_ms < 0)
            snprintf(wait, sizeof wait, "null");
        else
            snprintf(wait, sizeof wait, "%.1f", p->wait_ms);
        off += (size_t)snprintf(text + off, cap - off, "%s[%" PRId64 ",%u,%u,%u,%s]", i ? "," : "",
                                p->t, p->submitted, p->done, p->failed, wait);
    }
    if (off < cap)
        snprintf(text + off, cap - off, "]}");
    free(pts);
    return respond_json(conn, MHD_HTTP_OK, text);
}

/* ---- routing ------------------------------------------------------------------- */

/* Query arguments of a GET op as the op's JSON fields: digits -> a
 * number, true/false -> booleans, "ids" -> an array of numbers (comma
 * separated), anything else a string. */
typedef struct {
    cJSON *o;
    int n;
    const char *bad;
} args_t;

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    (void)kind;
    args_t *a = cls;
    if (a->bad)
        return MHD_NO;
    if (++a->n > TQ_HTTP_MAX_ARGS) {
        a->bad = "too many query arguments";
        return MHD_NO;
    }
    if (!value)
        value = "";
    if (strlen(key) > HTTP_OP_MAX || strlen(value) > HTTP_ARG_MAX || !strcmp(key, "op") ||
        cJSON_GetObjectItemCaseSensitive(a->o, key)) {
        a->bad = "a query argument is too long, repeated, or \"op\"";
        return MHD_NO;
    }
    uint64_t u;
    if (strcmp(key, "ids") == 0) {
        cJSON *arr = cJSON_AddArrayToObject(a->o, key);
        char buf[HTTP_ARG_MAX + 1];
        tq_strlcpy(buf, value, sizeof buf);
        char *save = NULL;
        for (char *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
            if (tq_parse_u64(w, &u) < 0) {
                a->bad = "\"ids\" must be comma-separated task ids";
                return MHD_NO;
            }
            cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)u));
        }
    } else if (*value && tq_parse_u64(value, &u) == 0) {
        cJSON_AddNumberToObject(a->o, key, (double)u);
    } else if (!strcmp(value, "true") || !strcmp(value, "false")) {
        cJSON_AddBoolToObject(a->o, key, value[0] == 't');
    } else {
        cJSON_AddStringToObject(a->o, key, value);
    }
    return MHD_YES;
}

static int op_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > HTTP_OP_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return 0;
    return 1;
}

/* /api/v1/ops/NAME: GET (ops that only read) with query arguments, or
 * POST with a JSON object (any op; admin role for a change; the CSRF
 * token in X-CSRF-Token; Content-Type application/json). */
static enum MHD_Result api_op(tq_http_t *self, struct MHD_Connection *conn, const user_t *u,
                              const char *addr, const char *name, int post, conn_t *c)
{
    if (!op_name_ok(name))
        return respond_error(conn, MHD_HTTP_NOT_FOUND, "no such op");
    int writes = tq_admin_op_writes(name), reads = writes == 0;
    cJSON *body = NULL;
    if (writes < 0)
        return respond_error(conn, MHD_HTTP_NOT_FOUND, "no such op: %s", name);
    if (!post) {
        if (!reads)
            return respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                 "op %s changes state: POST it, with the CSRF token", name);
        args_t a = {cJSON_CreateObject(), 0, NULL};
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, on_arg, &a);
        if (a.bad) {
            cJSON_Delete(a.o);
            return respond_error(conn, MHD_HTTP_BAD_REQUEST, "%s", a.bad);
        }
        body = a.o;
    } else {
        const char *tok = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-CSRF-Token");
        size_t want = strlen(u->csrf);
        if (!tok || strlen(tok) != want || sodium_memcmp(tok, u->csrf, want) != 0)
            return respond_error(conn, MHD_HTTP_FORBIDDEN,
                                 "missing or wrong X-CSRF-Token header (GET /api/v1/session "
                                 "gives it)");
        const char *type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        if (!type || strncasecmp(type, "application/json", 16) != 0)
            return respond_error(conn, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                 "the body must be application/json");
        if (!reads && u->role != ROLE_ADMIN) {
            tq_info("http: %s (%s) refused: op %s needs the admin role", u->name, addr, name);
            return respond_error(conn, MHD_HTTP_FORBIDDEN, "op %s needs the admin role", name);
        }
        if (c->too_big)
            return respond_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the body is over %d bytes",
                                 TQ_HTTP_MAX_BODY);
        body = c->n ? cJSON_ParseWithLength(c->body, c->n) : cJSON_CreateObject();
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            return respond_error(conn, MHD_HTTP_BAD_REQUEST, "the body must be a JSON object");
        }
    }
    cJSON_DeleteItemFromObjectCaseSensitive(body, "op");
    cJSON_DeleteItemFromObjectCaseSensitive(body, "req");
    cJSON_AddStringToObject(body, "op", name);
    req_t *r = tq_calloc(1, sizeof *r);
    r->body = body;
    tq_strlcpy(r->user, u->name, sizeof r->user);
    tq_strlcpy(r->address, addr, sizeof r->address);
    return ask_loop(self, conn, r);
}

static enum MHD_Result api(tq_http_t *self, struct MHD_Connection *conn, const user_t *u,
                           const char *addr, const char *url, int post, conn_t *c)
{
    static const char ops[] = "/api/v1/ops/";
    if (strncmp(url, ops, sizeof ops - 1) == 0)
        return api_op(self, conn, u, addr, url + sizeof ops - 1, post, c);
    if (post)
        return respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET here");
    if (strcmp(url, "/api/v1/session") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ok", 1);
        cJSON_AddStringToObject(o, "user", u->name);
        cJSON_AddStringToObject(o, "role", u->role == ROLE_ADMIN ? "admin" : "read");
        cJSON_AddStringToObject(o, "csrf", u->csrf);
        cJSON_AddBoolToObject(o, "show_payloads", self->show_payloads);
        cJSON_AddStringToObject(o, "version", TQ_VERSION);
        char *text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        return respond_json(conn, MHD_HTTP_OK, text);
    }
    if (strcmp(url, "/api/v1/status") == 0) {
        pthread_mutex_lock(&self->mu);
        char *text = self->snapshot ? tq_strdup(self->snapshot) : NULL;
        pthread_mutex_unlock(&self->mu);
        if (!text)
            return respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                                 "no snapshot yet (the first comes within a second)");
        return respond_json(conn, MHD_HTTP_OK, text);
    }
    if (strcmp(url, "/api/v1/history") == 0)
        return get_history(self, conn);
    return respond_error(conn, MHD_HTTP_NOT_FOUND, "no such API path (docs/http.md)");
}

/* A page, a script, a style sheet or the metrics. */
static enum MHD_Result static_get(tq_http_t *self, struct MHD_Connection *conn, const char *url)
{
    if (strcmp(url, "/metrics") == 0) {
        size_t n;
        char *body = tq_metrics_copy(self->metrics, &n);
        return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, n, 1);
    }
    if (strcmp(url, "/") == 0)
        url = "/index.html";
    for (size_t i = 0; i < tq_web_nassets; i++) {
        const tq_web_asset_t *a = &tq_web_assets[i];
        if (strcmp(url, a->path) == 0) {
            char *body = tq_malloc(a->len ? a->len : 1);
            memcpy(body, a->data, a->len);
            return respond(conn, MHD_HTTP_OK, a->type, body, a->len, 0);
        }
    }
    const char *msg = "not found\n";
    return respond(conn, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", tq_strdup(msg),
                   strlen(msg), 1);
}

/* 1 if the Host header names this machine's loopback: "localhost",
 * 127.x.x.x or [::1], with or without a port. Without an auth file
 * this is required, so a web page whose name was rebound to 127.0.0.1
 * (DNS rebinding) cannot read the API from the browser. */
static int host_is_loopback(const char *host)
{
    char h[256];
    if (!host || strlen(host) >= sizeof h)
        return 0;
    tq_strlcpy(h, host, sizeof h);
    char *end;
    if (h[0] == '[') {
        end = strchr(h, ']');
        if (!end || (end[1] && end[1] != ':'))
            return 0;
        *end = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, h + 1, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
    end = strchr(h, ':');
    if (end)
        *end = '\0';
    if (strcasecmp(h, "localhost") == 0)
        return 1;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* 1 if a request's Origin (sent by browsers on POST) is absent or names
 * the host it was sent to: a page of another origin may not act. */
static int origin_ok(struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    if (!origin)
        return 1;
    const char *p = strncmp(origin, "http://", 7) == 0    ? origin + 7
                    : strncmp(origin, "https://", 8) == 0 ? origin + 8
                                                          : NULL;
    return p && host && strcasecmp(p, host) == 0;
}

static void peer_address(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    tq_strlcpy(out, "?", len);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(a->sin6_port));
    }
}

/* libmicrohttpd's handler (a connection's thread): collect the body,
 * then authenticate and route. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    tq_http_t *self = cls;
    (void)version;
    conn_t *c = *con_cls;
    int post = strcmp(method, "POST") == 0;
    if (!c) {
        c = tq_calloc(1, sizeof *c);
        *con_cls = c;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        uint64_t len;
        if (cl && (tq_parse_u64(cl, &len) < 0 || len > TQ_HTTP_MAX_BODY)) {
            c->answered = 1; /* refused before the body is read */
            return respond_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the body is over %d bytes",
                                 TQ_HTTP_MAX_BODY);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->answered && !c->too_big) {
            if (c->n + *upload_size > TQ_HTTP_MAX_BODY) {
                c->too_big = 1;
            } else {
                c->body = tq_realloc(c->body, c->n + *upload_size + 1);
                memcpy(c->body + c->n, upload_data, *upload_size);
                c->n += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->answered)
        return MHD_YES;
    c->answered = 1;
    char addr[INET6_ADDRSTRLEN + 8];
    peer_address(conn, addr, sizeof addr);
    const user_t *u = authenticate(self, conn);
    if (!u) {
        int64_t now_s = tq_mono_ms() / 1000, last = atomic_load(&auth_log_s);
        if (now_s >= last + HTTP_AUTH_LOG_PER_S &&
            atomic_compare_exchange_strong(&auth_log_s, &last, now_s))
            tq_warn("http: %s %s from %s: not authenticated (no or wrong credentials)", method,
                    strncmp(url, "/api/", 5) == 0 ? "API" : "page", addr);
        return respond_error(conn, MHD_HTTP_UNAUTHORIZED,
                             "authenticate: Authorization: Bearer TOKEN, or basic (docs/http.md)");
    }
    if (!self->users &&
        !host_is_loopback(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host")))
        return respond_error(conn, MHD_HTTP_FORBIDDEN,
                             "without --http-auth-file only a loopback Host (localhost, "
                             "127.0.0.1, [::1]) is served");
    if (post && !origin_ok(conn))
        return respond_error(conn, MHD_HTTP_FORBIDDEN, "a POST from another origin");
    if (!post && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET, HEAD and POST");
    if (strncmp(url, "/api/", 5) == 0)
        return api(self, conn, u, addr, url, post, c);
    if (post)
        return respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "POST only to /api/v1/ops/");
    return static_get(self, conn, url);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    conn_t *c = *con_cls;
    if (c) {
        free(c->body);
        free(c);
        *con_cls = NULL;
    }
}

/* ---- life ------------------------------------------------------------------------ */

tq_http_t *tq_http_start(const tq_http_cfg_t *cfg, tq_err_t *err)
{
    if (tq_http_check(cfg->listen, cfg->auth_file, err) < 0)
        return NULL;
    tq_http_t *self = tq_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    self->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->show_payloads = cfg->show_payloads;
    self->metrics = cfg->metrics;
    uint8_t key[crypto_generichash_KEYBYTES];
    randombytes_buf(key, sizeof key);
    tq_strlcpy(self->local.name, "local", sizeof self->local.name);
    self->local.role = ROLE_ADMIN;
    csrf_for(&self->local, key);
    if (self->evfd < 0) {
        tq_err_set(err, 0, "--http-listen: eventfd: %s", strerror(errno));
        goto fail;
    }
    if (cfg->auth_file && *cfg->auth_file && load_users(self, cfg->auth_file, key, err) < 0)
        goto fail;
    sodium_memzero(key, sizeof key);
    /* a thread per connection: a request waits for the loop's answer */
    self->daemon = tq_mhd_start("--http-listen", cfg->listen, MHD_USE_THREAD_PER_CONNECTION,
                                TQ_HTTP_MAX_CONNS, TQ_HTTP_CONN_TIMEOUT_S, on_request, self,
                                on_completed, "/", self->url, sizeof self->url, err);
    if (!self->daemon)
        goto fail;
    return self;
fail:
    sodium_memzero(key, sizeof key);
    tq_http_stop(&self);
    return NULL;
}

const char *tq_http_url(const tq_http_t *self) { return self->url; }

int tq_http_fd(const tq_http_t *self) { return self->evfd; }

static void free_reqs(req_t *r)
{
    while (r) {
        req_t *next = r->next;
        cJSON_Delete(r->body);
        free(r->answer);
        free(r);
        r = next;
    }
}

void tq_http_stop(tq_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_http_t *self = *self_p;
    pthread_mutex_lock(&self->mu);
    self->closing = 1; /* waiting connections answer 503 and leave */
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    /* no connection thread is left: what is queued or held is ours */
    free_reqs(self->qhead);
    free_reqs(self->held);
    if (self->evfd >= 0)
        close(self->evfd);
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    if (self->users)
        sodium_memzero(self->users, self->nusers * sizeof *self->users);
    free(self->users);
    free(self->snapshot);
    free(self);
    *self_p = NULL;
}
