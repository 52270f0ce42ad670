/* tq_ctl.c - control messages (JSON bodies): one validator and one
 * encoder each, driven by the TQ_JSON_* lists of tq_msgs.def. See
 * tq_ctl.h. */
#include "tq_ctl.h"

#include <cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tq_proto_int.h"

enum { J_INT, J_STR, J_BOOL, J_STRS };
enum { R_REQ, R_OPT, R_WORKER, R_WOPT };

/* One field of a JSON control message and where its value goes. */
typedef struct {
    const char *name;
    uint8_t type, required;
    uint64_t a, b;
    uint16_t off, size; /* member in the struct; size of it */
} jfield_t;

#define JFIELD(f, type, req, a, b)                                                                 \
    {#f,                                                                                           \
     J_##type,                                                                                     \
     R_##req,                                                                                      \
     (uint64_t)(a),                                                                                \
     (uint64_t)(b),                                                                                \
     (uint16_t)offsetof(CTL_T, f),                                                                 \
     (uint16_t)sizeof(((CTL_T *)0)->f)},
#define JEND                                                                                       \
    {                                                                                              \
        NULL, 0, 0, 0, 0, 0, 0                                                                     \
    }

#define CTL_T tq_hello_t
static const jfield_t json_hello[] = {TQ_JSON_HELLO(JFIELD) JEND};
#undef CTL_T
#define CTL_T tq_welcome_t
static const jfield_t json_welcome[] = {TQ_JSON_WELCOME(JFIELD) JEND};
#undef CTL_T
#define CTL_T tq_errmsg_t
static const jfield_t json_error[] = {TQ_JSON_ERROR(JFIELD) JEND};
#undef CTL_T
#define CTL_T tq_status_req_t
static const jfield_t json_status[] = {TQ_JSON_STATUS(JFIELD) JEND};
#undef CTL_T

static void store_uint(void *p, size_t size, uint64_t v)
{
    if (size == 8) {
        memcpy(p, &v, 8);
    } else {
        TQ_ASSERT(size == 4);
        uint32_t u = (uint32_t)v;
        memcpy(p, &u, 4);
    }
}

/* Check and copy the fields of object j listed in fields into out.
 * worker: the fields required for a worker are required. A field
 * without a rule of its own (J_STRS) is checked for its type and size
 * here and read by the message's own validator. */
static int read_fields(const char *what, const cJSON *j, const jfield_t *fields, int worker,
                       void *out, tq_err_t *err)
{
    for (const jfield_t *f = fields; f->name; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, f->name);
        void *p = (uint8_t *)out + f->off;
        if ((f->required == R_WORKER || f->required == R_WOPT) && !worker)
            continue; /* a worker's field in a client's HELLO: ignored */
        if (!v) {
            if (f->required == R_REQ || (f->required == R_WORKER && worker))
                return tq_err_set(err, TQ_ERR_MALFORMED, "%s: \"%s\" missing", what, f->name);
            continue;
        }
        uint64_t u;
        switch (f->type) {
        case J_INT:
            if (tq_json_uint(v, f->a, f->b, &u) < 0)
                return tq_err_set(err, TQ_ERR_MALFORMED, "%s: \"%s\" must be an integer %llu..%llu",
                                  what, f->name, (unsigned long long)f->a,
                                  (unsigned long long)f->b);
            store_uint(p, f->size, u);
            break;
        case J_BOOL:
            if (!cJSON_IsBool(v))
                return tq_err_set(err, TQ_ERR_MALFORMED, "%s: \"%s\" must be true or false", what,
                                  f->name);
            *(int *)p = cJSON_IsTrue(v);
            break;
        case J_STR: {
            if (!cJSON_IsString(v))
                return tq_err_set(err, TQ_ERR_MALFORMED, "%s: \"%s\" must be a string", what,
                                  f->name);
            size_t n = strlen(v->valuestring);
            /* a longer text is cut to the member (ERROR message), a
             * shorter one than a is refused */
            if (n < f->a || (n > f->b && f->b < f->size))
                return tq_err_set(err, TQ_ERR_MALFORMED, "%s: \"%s\" must be %llu..%llu bytes",
                                  what, f->name, (unsigned long long)f->a,
                                  (unsigned long long)f->b);
            if (n >= f->size)
                n = f->size - 1;
            memcpy(p, v->valuestring, n);
            ((char *)p)[n] = '\0';
            break;
        }
        case J_STRS:
            if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < (int)f->a)
                return tq_err_set(err, TQ_ERR_MALFORMED,
                                  "%s: \"%s\" must be a non-empty array of names", what, f->name);
            if (cJSON_GetArraySize(v) > (int)f->b)
                return tq_err_set(err, TQ_ERR_TOO_MANY, "%s: %d %s, max %llu", what,
                                  cJSON_GetArraySize(v), f->name, (unsigned long long)f->b);
            break;
        }
    }
    return 0;
}

/* Parse body as a JSON object of at most max bytes. */
static int parse(const char *what, tq_bytes_t body, size_t nparts, size_t max, cJSON **j,
                 tq_err_t *err)
{
    void *v = NULL;
    if (tq_decode_json(body, nparts, max, &v, err) < 0) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        return tq_err_set(err, err->code, "%s: %.480s", what, m);
    }
    *j = v;
    return 0;
}

/* ---- HELLO ---------------------------------------------------------------- */

/* 1 if s is 1..max printable ASCII characters (spaces allowed). */
static int printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* TQ_INSTANCE_HEX lowercase hex digits, not all zero, into *out. */
static int instance_value(const char *s, uint64_t *out)
{
    if (strlen(s) != TQ_INSTANCE_HEX)
        return -1;
    uint64_t x = 0;
    for (const char *c = s; *c; c++) {
        int d = *c >= '0' && *c <= '9' ? *c - '0' : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    *out = x;
    return x ? 0 : -1;
}

int tq_hello_decode(tq_bytes_t body, size_t nparts, tq_hello_t *h, tq_err_t *err)
{
    cJSON *j = NULL;
    memset(h, 0, sizeof *h);
    if (parse("HELLO", body, nparts, TQ_MAX_JSON, &j, err) < 0)
        return -1;
    int rc = -1;
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(j, "role");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (!cJSON_IsString(role) ||
        (strcmp(role->valuestring, "worker") != 0 && strcmp(role->valuestring, "client") != 0)) {
        tq_err_set(err, TQ_ERR_MALFORMED, "HELLO: \"role\" must be \"worker\" or \"client\"");
        goto out;
    }
    h->worker = strcmp(role->valuestring, "worker") == 0;
    if (!cJSON_IsString(name) || !printable(name->valuestring, TQ_MAX_PEER_NAME)) {
        tq_err_set(err, TQ_ERR_BAD_NAME, "HELLO: \"name\" must be 1..%d printable ASCII characters",
                   TQ_MAX_PEER_NAME);
        goto out;
    }
    if (read_fields("HELLO", j, json_hello, h->worker, h, err) < 0)
        goto out;
    if (!h->worker) {
        rc = 0;
        goto out;
    }
    if (h->instance[0] && instance_value(h->instance, &h->instance_id) < 0) {
        tq_err_set(err, TQ_ERR_MALFORMED,
                   "HELLO: \"instance\" must be %d lowercase hex digits, not all zero",
                   TQ_INSTANCE_HEX);
        goto out;
    }
    if (h->busy > h->slots + h->prefetch) {
        tq_err_set(err, TQ_ERR_MALFORMED,
                   "HELLO: \"busy\" must be an integer 0..slots+prefetch (%u)",
                   (unsigned)(h->slots + h->prefetch));
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "functions"))
    {
        if (!cJSON_IsString(it) || !tq_name_valid(tq_bytes_str(it->valuestring))) {
            tq_err_set(err, TQ_ERR_BAD_NAME,
                       "HELLO: functions[%zu] is not a valid name (1..%d of [A-Za-z0-9_.:-])",
                       h->nfunctions, TQ_MAX_NAME);
            goto out;
        }
        snprintf(h->functions[h->nfunctions++], sizeof h->functions[0], "%s", it->valuestring);
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

void tq_out_hello(tq_out_t *o, const tq_hello_t *h)
{
    cJSON *j = cJSON_CreateObject();
    TQ_ASSERT(j);
    cJSON_AddStringToObject(j, "role", h->worker ? "worker" : "client");
    cJSON_AddStringToObject(j, "name", h->name);
    if (h->worker) {
        if (h->instance[0])
            cJSON_AddStringToObject(j, "instance", h->instance);
        cJSON_AddNumberToObject(j, "slots", h->slots);
        if (h->prefetch)
            cJSON_AddNumberToObject(j, "prefetch", h->prefetch);
        if (h->busy)
            cJSON_AddNumberToObject(j, "busy", h->busy);
        if (h->adaptive)
            cJSON_AddBoolToObject(j, "adaptive", 1);
    }
    if (h->packed)
        cJSON_AddBoolToObject(j, "packed", 1);
    if (h->worker) {
        cJSON *fns = cJSON_AddArrayToObject(j, "functions");
        TQ_ASSERT(fns);
        for (size_t i = 0; i < h->nfunctions; i++)
            cJSON_AddItemToArray(fns, cJSON_CreateString(h->functions[i]));
    }
    tq_out_json(o, TQ_MSG_HELLO, j);
    cJSON_Delete(j);
}

/* ---- WELCOME -------------------------------------------------------------- */

int tq_welcome_decode(tq_bytes_t body, size_t nparts, tq_welcome_t *w, tq_err_t *err)
{
    cJSON *j = NULL;
    memset(w, 0, sizeof *w);
    if (parse("WELCOME", body, nparts, TQ_MAX_JSON, &j, err) < 0)
        return -1;
    int rc = read_fields("WELCOME", j, json_welcome, 0, w, err);
    cJSON_Delete(j);
    if (rc == 0 && w->heartbeat_timeout_ms <= w->heartbeat_ms)
        rc = tq_err_set(err, TQ_ERR_MALFORMED,
                        "WELCOME: \"heartbeat_timeout_ms\" (%u) must be greater than "
                        "\"heartbeat_ms\" (%u)",
                        (unsigned)w->heartbeat_timeout_ms, (unsigned)w->heartbeat_ms);
    return rc;
}

void tq_out_welcome(tq_out_t *o, const tq_welcome_t *w)
{
    cJSON *j = cJSON_CreateObject();
    TQ_ASSERT(j);
    cJSON_AddNumberToObject(j, "version", w->version);
    cJSON_AddNumberToObject(j, "heartbeat_ms", w->heartbeat_ms);
    cJSON_AddNumberToObject(j, "heartbeat_timeout_ms", w->heartbeat_timeout_ms);
    cJSON_AddNumberToObject(j, "max_payload", (double)w->max_payload);
    cJSON_AddBoolToObject(j, "packed", w->packed);
    if (w->master[0])
        cJSON_AddStringToObject(j, "master", w->master);
    tq_out_json(o, TQ_MSG_WELCOME, j);
    cJSON_Delete(j);
}

/* ---- ERROR ---------------------------------------------------------------- */

int tq_errmsg_decode(tq_bytes_t body, size_t nparts, tq_errmsg_t *e, tq_err_t *err)
{
    cJSON *j = NULL;
    memset(e, 0, sizeof *e);
    int rc = parse("ERROR", body, nparts, TQ_MAX_JSON, &j, err);
    if (rc == 0) {
        rc = read_fields("ERROR", j, json_error, 0, e, err);
        cJSON_Delete(j);
    }
    if (rc < 0) {
        e->code = TQ_ERR_INTERNAL;
        e->ref = 0;
        snprintf(e->message, sizeof e->message, "peer sent an unreadable error (%.400s)", err->msg);
    }
    return rc;
}

/* ---- STATUS --------------------------------------------------------------- */

int tq_status_req_decode(tq_bytes_t body, size_t nparts, tq_status_req_t *s, tq_err_t *err)
{
    cJSON *j = NULL;
    memset(s, 0, sizeof *s);
    if (parse("STATUS", body, nparts, TQ_MAX_JSON, &j, err) < 0)
        return -1;
    /* req first, so that an ERROR about the rest can carry it */
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "req");
    uint64_t r;
    if (req && tq_json_uint(req, 0, UINT32_MAX, &r) == 0)
        s->req = (uint32_t)r;
    int rc = read_fields("STATUS", j, json_status, 0, s, err);
    cJSON_Delete(j);
    return rc;
}

void tq_out_status_req(tq_out_t *o, const tq_status_req_t *s)
{
    cJSON *j = cJSON_CreateObject();
    TQ_ASSERT(j);
    if (s->req)
        cJSON_AddNumberToObject(j, "req", s->req);
    if (s->queue_offset)
        cJSON_AddNumberToObject(j, "queue_offset", s->queue_offset);
    tq_out_json(o, TQ_MSG_STATUS, j);
    cJSON_Delete(j);
}
