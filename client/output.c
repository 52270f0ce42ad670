/* output.c - printing task answers; see output.h. */
#include "output.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <sodium.h>

#include "taskq.h"
#include "tq_exit.h"
#include "tq_util.h"

void tq_tally_add(tq_tally_t *t, int status)
{
    switch (status) {
    case TASKQ_DONE: t->done++; break;
    case TASKQ_FAILED:
    case TASKQ_DEAD: t->failed++; break;
    case TASKQ_CANCELLED: t->cancelled++; break;
    default: t->unknown++; break;
    }
}

int tq_tally_exit(const tq_tally_t *t)
{
    if (t->failed)
        return TQ_EXIT_TASK_FAILED;
    if (t->unknown)
        return TQ_EXIT_NOT_FOUND;
    if (t->cancelled)
        return TQ_EXIT_CANCELLED;
    if (t->timed_out)
        return TQ_EXIT_TIMEOUT;
    return TQ_EXIT_OK;
}

void tq_output_error_line(const void *data, size_t len, char *out, size_t size)
{
    const unsigned char *p = data;
    if (size == 0)
        return;
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 1 >= size) {
            if (size >= 4)
                memcpy(out + size - 4, "...", 3), o = size - 1;
            break;
        }
        unsigned char c = p[i];
        out[o++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
    }
    out[o] = '\0';
}

void tq_print_text(FILE *out, FILE *err, uint64_t id, int status, const void *data, size_t len)
{
    char line[1024];
    switch (status) {
    case TASKQ_DONE:
        if (len > 0)
            fwrite(data, 1, len, out);
        if (len == 0 || ((const char *)data)[len - 1] != '\n')
            fputc('\n', out);
        return;
    case TASKQ_FAILED:
    case TASKQ_DEAD:
        tq_output_error_line(data, len, line, sizeof line);
        fprintf(err, "taskq: task %" PRIu64 " failed: %s\n", id, line);
        return;
    case TASKQ_CANCELLED: fprintf(err, "taskq: task %" PRIu64 " cancelled\n", id); return;
    default: fprintf(err, "taskq: task %" PRIu64 " unknown\n", id); return;
    }
}

/* Add data under `name`, or base64 under `name`_base64 when it is not
 * text JSON can carry (invalid UTF-8, or a NUL that C strings lose). */
static void add_bytes(cJSON *obj, const char *name, const void *data, size_t len)
{
    char key[32];
    if (tq_utf8_valid(data, len) && (len == 0 || !memchr(data, '\0', len))) {
        char *s = tq_malloc(len + 1);
        if (len > 0)
            memcpy(s, data, len);
        s[len] = '\0';
        cJSON_AddItemToObject(obj, name, cJSON_CreateString(s));
        free(s);
        return;
    }
    size_t blen = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *b = tq_malloc(blen);
    sodium_bin2base64(b, blen, data, len, sodium_base64_VARIANT_ORIGINAL);
    snprintf(key, sizeof key, "%s_base64", name);
    cJSON_AddItemToObject(obj, key, cJSON_CreateString(b));
    free(b);
}

static void add_id(cJSON *obj, uint64_t id)
{
    /* Raw text: a JSON number through a double would round ids >= 2^53. */
    char num[32];
    snprintf(num, sizeof num, "%" PRIu64, id);
    cJSON_AddItemToObject(obj, "id", cJSON_CreateRaw(num));
}

static void print_obj(FILE *out, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    TQ_ASSERT(s);
    fputs(s, out);
    fputc('\n', out);
    cJSON_free(s);
    cJSON_Delete(obj);
}

void tq_print_json(FILE *out, uint64_t id, int status, uint32_t attempts, const void *data,
                   size_t len)
{
    cJSON *obj = cJSON_CreateObject();
    TQ_ASSERT(obj);
    add_id(obj, id);
    cJSON_AddStringToObject(obj, "status", taskq_status_name(status));
    if (status == TASKQ_DONE)
        add_bytes(obj, "result", data, len);
    else if (status == TASKQ_FAILED || status == TASKQ_DEAD)
        add_bytes(obj, "error", data, len);
    cJSON_AddNumberToObject(obj, "attempts", attempts);
    print_obj(out, obj);
}

void tq_print_json_queued(FILE *out, uint64_t id)
{
    cJSON *obj = cJSON_CreateObject();
    TQ_ASSERT(obj);
    add_id(obj, id);
    cJSON_AddStringToObject(obj, "status", "queued");
    print_obj(out, obj);
}
