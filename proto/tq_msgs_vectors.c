/* tq_msgs_vectors.c - test tool: encode and decode messages described
 * in JSON with the C codec, so that tests/integration/test_msgtable.py
 * can hold the Python codec (tqmsgs.py) to the same bytes.
 *
 * Reads one JSON object per line on stdin:
 *   {"msg":"SUBMIT","fixed":{"req":1,"flags":1},
 *    "records":[{"fn":"<hex>","priority":-5,"payload":"<hex>"}, ...]}
 * (integers as numbers, str8 fields and data frames as hex), encodes it
 * with tq_out_begin_msg/tq_out_record, decodes the result with
 * tq_decode_msg, and prints one line:
 *   {"frames":["<hex>",...],"fixed":{...},"records":[...]}
 * or {"frames":[...],"error":"..."} when the decoder refuses it.
 * Field names and offsets come from tq_msgs.def, as in tq_proto.c. */
#include <cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_proto.h"

typedef struct {
    char unused;
} no_rec_t;
#define none no_rec_t
#define M(N, code, body, sender, frames, jmax, rect) typedef rect vrec_##N##_t;
TQ_MSGS(M)
#undef M

typedef struct {
    const char *msg, *part, *name, *wire;
    size_t off;
} vfield_t;

#define OFF_FIX(N, f) offsetof(tq_fixed_t, f)
#define OFF_REC(N, f) offsetof(vrec_##N##_t, f)
#define OFF_DATA(N, f) offsetof(vrec_##N##_t, f)
#define F(N, part, f, wire, check, a, b) {#N, #part, #f, #wire, OFF_##part(N, f)},
#define M(N, code, body, sender, frames, jmax, rect) TQ_FIELDS_##N(F)
static const vfield_t vfields[] = {TQ_MSGS(M){NULL, NULL, NULL, NULL, 0}};
#undef M
#undef F

static const struct {
    const char *name;
    int code;
    size_t size;
} vmsgs[] = {
#define M(N, code, body, sender, frames, jmax, rect) {#N, code, sizeof(vrec_##N##_t)},
    TQ_MSGS(M)
#undef M
};
#undef none

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Buffers of the message being handled, freed after it. */
static void *held[4 * TQ_MAX_BATCH * 16];
static size_t nheld;

/* Bytes of a hex string, in a buffer held until the message is done. */
static tq_bytes_t unhex(const char *s)
{
    size_t n = strlen(s) / 2;
    uint8_t *p = malloc(n + 1);
    if (!p || nheld == sizeof held / sizeof held[0])
        abort();
    held[nheld++] = p;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    return (tq_bytes_t){p, n};
}

static cJSON *hex(tq_bytes_t b)
{
    char *s = malloc(2 * b.len + 1);
    if (!s)
        abort();
    for (size_t i = 0; i < b.len; i++)
        snprintf(s + 2 * i, 3, "%02x", b.data[i]);
    s[2 * b.len] = '\0';
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

static void set_field(uint8_t *base, const vfield_t *f, const cJSON *v)
{
    void *p = base + f->off;
    if (!strcmp(f->wire, "STR8") || !strcmp(f->wire, "FRAME")) {
        tq_bytes_t b = cJSON_IsString(v) ? unhex(v->valuestring) : (tq_bytes_t){NULL, 0};
        memcpy(p, &b, sizeof b);
        return;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0;
    if (!strcmp(f->wire, "U8")) {
        uint8_t x = (uint8_t)d;
        memcpy(p, &x, 1);
    } else if (!strcmp(f->wire, "U16")) {
        uint16_t x = (uint16_t)d;
        memcpy(p, &x, 2);
    } else if (!strcmp(f->wire, "U32")) {
        uint32_t x = (uint32_t)d;
        memcpy(p, &x, 4);
    } else if (!strcmp(f->wire, "I32")) {
        int32_t x = (int32_t)d;
        memcpy(p, &x, 4);
    } else {
        uint64_t x = (uint64_t)d;
        memcpy(p, &x, 8);
    }
}

static cJSON *get_field(const uint8_t *base, const vfield_t *f)
{
    const void *p = base + f->off;
    tq_bytes_t b;
    if (!strcmp(f->wire, "STR8") || !strcmp(f->wire, "FRAME")) {
        memcpy(&b, p, sizeof b);
        return hex(b);
    }
    if (!strcmp(f->wire, "U8"))
        return cJSON_CreateNumber(*(const uint8_t *)p);
    if (!strcmp(f->wire, "U16")) {
        uint16_t x;
        memcpy(&x, p, 2);
        return cJSON_CreateNumber(x);
    }
    if (!strcmp(f->wire, "U32")) {
        uint32_t x;
        memcpy(&x, p, 4);
        return cJSON_CreateNumber(x);
    }
    if (!strcmp(f->wire, "I32")) {
        int32_t x;
        memcpy(&x, p, 4);
        return cJSON_CreateNumber(x);
    }
    uint64_t x;
    memcpy(&x, p, 8);
    char num[24]; /* exact: a double would round above 2^53 */
    snprintf(num, sizeof num, "%llu", (unsigned long long)x);
    return cJSON_CreateRaw(num);
}

static void one(const cJSON *in)
{
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(in, "msg"));
    int type = -1;
    size_t size = 0;
    for (size_t i = 0; name && i < sizeof vmsgs / sizeof vmsgs[0]; i++)
        if (!strcmp(vmsgs[i].name, name))
            type = vmsgs[i].code, size = vmsgs[i].size;
    if (type < 0) {
        printf("{\"error\":\"no such message\"}\n");
        return;
    }
    tq_fixed_t fx = {0};
    const cJSON *fin = cJSON_GetObjectItem(in, "fixed");
    const cJSON *rin = cJSON_GetObjectItem(in, "records");
    for (const vfield_t *f = vfields; f->msg; f++)
        if (!strcmp(f->msg, name) && !strcmp(f->part, "FIX"))
            set_field((uint8_t *)&fx, f, cJSON_GetObjectItem(fin, f->name));
    tq_out_t o;
    tq_out_init(&o);
    tq_out_begin_msg(&o, type, &fx);
    uint8_t *rec = calloc(TQ_MAX_BATCH, size);
    const cJSON *r;
    cJSON_ArrayForEach(r, rin)
    {
        memset(rec, 0, size);
        for (const vfield_t *f = vfields; f->msg; f++)
            if (!strcmp(f->msg, name) && strcmp(f->part, "FIX"))
                set_field(rec, f, cJSON_GetObjectItem(r, f->name));
        tq_out_record(&o, rec);
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *frames = cJSON_AddArrayToObject(out, "frames");
    cJSON_AddItemToArray(frames, hex((tq_bytes_t){o.head.data, o.head.len}));
    for (size_t i = 0; i < o.nparts; i++)
        cJSON_AddItemToArray(frames, hex(o.parts[i]));

    int t;
    tq_bytes_t body;
    tq_err_t err;
    size_t n = 0;
    tq_fixed_t back;
    if (tq_decode_head((tq_bytes_t){o.head.data, o.head.len}, &t, &body, &err) < 0 ||
        tq_decode_msg(t, body, o.parts, o.nparts, TQ_PAYLOAD_HARD_MAX, &back, rec, &n, &err) < 0) {
        cJSON_AddStringToObject(out, "error", err.msg);
    } else {
        cJSON *fo = cJSON_AddObjectToObject(out, "fixed");
        cJSON *ro = cJSON_AddArrayToObject(out, "records");
        for (const vfield_t *f = vfields; f->msg; f++)
            if (!strcmp(f->msg, name) && !strcmp(f->part, "FIX"))
                cJSON_AddItemToObject(fo, f->name, get_field((const uint8_t *)&back, f));
        for (size_t i = 0; i < n; i++) {
            cJSON *one = cJSON_CreateObject();
            for (const vfield_t *f = vfields; f->msg; f++)
                if (!strcmp(f->msg, name) && strcmp(f->part, "FIX"))
                    cJSON_AddItemToObject(one, f->name, get_field(rec + i * size, f));
            cJSON_AddItemToArray(ro, one);
        }
    }
    char *s = cJSON_PrintUnformatted(out);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(out);
    free(rec);
    tq_out_free(&o);
    while (nheld)
        free(held[--nheld]);
}

int main(void)
{
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        cJSON *in = cJSON_Parse(line);
        if (in)
            one(in);
        else
            printf("{\"error\":\"bad input line\"}\n");
        cJSON_Delete(in);
        fflush(stdout);
    }
    return 0;
}
