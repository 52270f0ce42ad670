/* tq_proto_fuzz_main.c - deterministic driver of the decoder fuzz target
 * (tq_proto_fuzz.c), so that every `meson test`, including the sanitizer
 * build, fuzzes the decoders without libFuzzer.
 *
 * From a fixed-seed PRNG it builds messages of every type with the
 * tq_out_* encoders, mutates most of them (bit flips, truncation,
 * insertion, deletion, record count and str8 length corruption, type and
 * head changes, JSON tokens, data frames added or dropped, other caps)
 * and adds pure random inputs, feeding each to LLVMFuzzerTestOneInput.
 *
 *   tq_proto_fuzz [-n ITERATIONS] [-s SEED]   run (default 200000, seed 1)
 *   tq_proto_fuzz --corpus DIR [-n N]        write N valid messages as a
 *                                            libFuzzer seed corpus
 *   tq_proto_fuzz FILE...                    replay inputs (a crash file)
 *
 * Exit 0 when every input passed; a broken promise aborts (and the
 * sanitizers report what they find). */
#include "tq_proto.h"
#include "tq_proto_fuzz.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- PRNG: xorshift64*, fixed seed ------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform-ish in [0, n); n > 0. */
static size_t below(size_t n) { return (size_t)(rnd() % n); }

/* 1 with probability pct percent. */
static int chance(unsigned pct) { return below(100) < pct; }

/* ---- a growable byte vector -------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} vec_t;

static void vec_reserve(vec_t *v, size_t more)
{
    if (v->len + more <= v->cap)
        return;
    size_t cap = v->cap ? v->cap : 256;
    while (cap < v->len + more)
        cap *= 2;
    uint8_t *p = realloc(v->data, cap);
    if (!p)
        abort();
    v->data = p;
    v->cap = cap;
}

static void vec_put(vec_t *v, const void *p, size_t n)
{
    vec_reserve(v, n);
    if (n)
        memcpy(v->data + v->len, p, n);
    v->len += n;
}

static void vec_u8(vec_t *v, uint8_t x) { vec_put(v, &x, 1); }

static void vec_u16(vec_t *v, uint16_t x)
{
    uint8_t b[2] = {(uint8_t)x, (uint8_t)(x >> 8)};
    vec_put(v, b, 2);
}

static void vec_insert(vec_t *v, size_t at, const void *p, size_t n)
{
    vec_reserve(v, n);
    memmove(v->data + at + n, v->data + at, v->len - at);
    memcpy(v->data + at, p, n);
    v->len += n;
}

static void vec_erase(vec_t *v, size_t at, size_t n)
{
    memmove(v->data + at, v->data + at + n, v->len - at - n);
    v->len -= n;
}

/* ---- message generation -------------------------------------------------- */

/* Random bytes that payloads and keys are cut from. */
#define POOL_SIZE (1u << 17)
static uint8_t pool[POOL_SIZE];

static tq_bytes_t pool_slice(size_t len)
{
    tq_bytes_t b = {pool + below(POOL_SIZE - len + 1), len};
    return b;
}

/* A payload length: mostly small, sometimes large, rarely the u16 cap
 * of a fuzz-input frame. */
static size_t payload_len(void)
{
    size_t r = below(1000);
    if (r < 700)
        return below(33);
    if (r < 998)
        return below(600);
    return 65535 - below(8);
}

/* A record count: mostly a few, sometimes many, rarely the limit. */
static size_t batch_len(int allow_zero)
{
    size_t r = below(1000), n;
    if (r < 800)
        n = 1 + below(4);
    else if (r < 990)
        n = 1 + below(64);
    else
        n = TQ_MAX_BATCH - below(4);
    if (allow_zero && chance(5))
        n = 0;
    return n;
}

static const char name_chars[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";

/* A name in buf (room for 256): usually valid, sometimes empty, too long
 * or with a byte outside the name alphabet. */
static tq_bytes_t gen_name(char *buf, int allow_empty)
{
    size_t len = 1 + below(chance(90) ? 12 : TQ_MAX_NAME);
    if (allow_empty && chance(20))
        len = 0;
    if (chance(3))
        len = TQ_MAX_NAME + 1 + below(191);
    for (size_t i = 0; i < len; i++)
        buf[i] = name_chars[below(sizeof name_chars - 1)];
    if (len && chance(3))
        buf[below(len)] = (char)below(256);
    tq_bytes_t b = {(const uint8_t *)buf, len};
    return b;
}

static uint64_t gen_u64(void)
{
    switch (below(4)) {
    case 0: return below(100);
    case 1: return UINT64_MAX - below(3);
    default: return rnd();
    }
}

static uint32_t gen_u32(void) { return chance(50) ? (uint32_t)below(10) : (uint32_t)rnd(); }

static const int all_types[] = {
    TQ_MSG_HELLO,  TQ_MSG_WELCOME,      TQ_MSG_HEARTBEAT, TQ_MSG_ERROR,      TQ_MSG_BYE,
    TQ_MSG_STATUS, TQ_MSG_STATUS_REPLY, TQ_MSG_DRAIN,     TQ_MSG_SUBMIT,     TQ_MSG_SUBMIT_ACK,
    TQ_MSG_WAIT,   TQ_MSG_RESULTS,      TQ_MSG_CANCEL,    TQ_MSG_CANCEL_ACK, TQ_MSG_DISPATCH,
    TQ_MSG_RESULT, TQ_MSG_RELEASE,      TQ_MSG_KILL,      TQ_MSG_ACK,        TQ_MSG_QUIET,
    TQ_MSG_STOP,
};
#define NTYPES (sizeof all_types / sizeof all_types[0])

/* A JSON control body of `type`, shaped like the documents of
 * PROTOCOL.md section 12 with random values. */
static void gen_json(tq_out_t *o, int type)
{
    char name[256];
    tq_bytes_t nb;
    if (type == TQ_MSG_ERROR) {
        char msg[600];
        size_t n = below(sizeof msg);
        for (size_t i = 0; i < n; i++)
            msg[i] = (char)(1 + below(255));
        msg[n] = '\0';
        tq_out_error(o, (int)below(14), gen_u32(), msg);
        return;
    }
    if (type == TQ_MSG_STATUS && chance(50)) {
        tq_out_json(o, type, NULL);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    if (!j)
        abort();
    switch (type) {
    case TQ_MSG_HELLO: {
        cJSON_AddStringToObject(j, "role", chance(50) ? "worker" : "client");
        nb = gen_name(name, 0);
        name[nb.len] = '\0';
        cJSON_AddStringToObject(j, "name", name);
        cJSON_AddNumberToObject(j, "slots", (double)below(5000));
        cJSON_AddNumberToObject(j, "version", TQ_PROTO_VERSION);
        cJSON *fns = cJSON_AddArrayToObject(j, "functions");
        size_t n = below(6);
        for (size_t i = 0; i < n; i++) {
            nb = gen_name(name, 0);
            name[nb.len] = '\0';
            cJSON_AddItemToArray(fns, cJSON_CreateString(name));
        }
        break;
    }
    case TQ_MSG_WELCOME:
        cJSON_AddNumberToObject(j, "version", TQ_PROTO_VERSION);
        cJSON_AddNumberToObject(j, "heartbeat_ms", (double)gen_u32());
        cJSON_AddNumberToObject(j, "heartbeat_timeout_ms", (double)gen_u32());
        cJSON_AddNumberToObject(j, "max_payload", (double)gen_u32());
        break;
    case TQ_MSG_STATUS_REPLY: {
        cJSON_AddNumberToObject(j, "queued", (double)gen_u32());
        cJSON_AddBoolToObject(j, "draining", chance(50));
        cJSON_AddNullToObject(j, "journal");
        cJSON *ws = cJSON_AddArrayToObject(j, "workers");
        size_t n = below(5);
        for (size_t i = 0; i < n; i++) {
            cJSON *w = cJSON_CreateObject();
            nb = gen_name(name, 0);
            name[nb.len] = '\0';
            cJSON_AddStringToObject(w, "name", name);
            cJSON_AddNumberToObject(w, "load", (double)rnd() / 1e9);
            cJSON_AddItemToArray(ws, w);
        }
        break;
    }
    default: break;
    }
    tq_out_json(o, type, j);
    cJSON_Delete(j);
}

/* A message being fuzzed: frame 0, data frames (views into the pool or
 * o's parts) and the config byte. */
typedef struct {
    vec_t f0;
    tq_bytes_t parts[TQ_MAX_BATCH + 8];
    size_t nparts;
    uint8_t config;
    size_t count_off;             /* record count in f0, 0 if none */
    size_t rec_off[TQ_MAX_BATCH]; /* record starts (SUBMIT, DISPATCH) */
    size_t nrec;
} msg_t;

/* Build a valid message of a random type into m, with o as scratch. */
static void gen_valid(msg_t *m, tq_out_t *o)
{
    int type = all_types[below(NTYPES)];
    char n1[256], n2[256];
    size_t n;
    m->nrec = 0;
    switch (type) {
    case TQ_MSG_HELLO:
    case TQ_MSG_WELCOME:
    case TQ_MSG_ERROR:
    case TQ_MSG_STATUS:
    case TQ_MSG_STATUS_REPLY: gen_json(o, type); break;
    case TQ_MSG_HEARTBEAT:
    case TQ_MSG_BYE:
    case TQ_MSG_DRAIN:
    case TQ_MSG_QUIET:
    case TQ_MSG_STOP: tq_out_begin(o, type); break;
    case TQ_MSG_SUBMIT:
        tq_out_begin_submit(o, gen_u32(), chance(50) ? TQ_SUBMIT_SUBSCRIBE : 0);
        n = batch_len(0);
        for (size_t i = 0; i < n; i++) {
            tq_task_spec_t t;
            t.fn = gen_name(n1, 0);
            t.queue = gen_name(n2, 1);
            t.key = pool_slice(chance(50) ? 0 : below(chance(95) ? TQ_MAX_KEY + 1 : 256));
            t.priority = (int32_t)(uint32_t)gen_u32();
            t.timeout_ms = gen_u32();
            t.retries = (uint16_t)gen_u32();
            t.payload = pool_slice(payload_len());
            m->rec_off[m->nrec++] = o->head.len;
            tq_out_submit_task(o, &t);
        }
        break;
    case TQ_MSG_SUBMIT_ACK:
    case TQ_MSG_WAIT:
    case TQ_MSG_CANCEL:
    case TQ_MSG_ACK:
        tq_out_begin_ids(o, type, gen_u32());
        n = batch_len(1);
        for (size_t i = 0; i < n; i++)
            tq_out_id(o, gen_u64());
        break;
    case TQ_MSG_RESULTS:
        tq_out_begin(o, type);
        n = batch_len(1);
        for (size_t i = 0; i < n; i++) {
            tq_outcome_t r = {gen_u64(), (uint8_t)(TQ_ST_DONE + below(5)), gen_u32(),
                              pool_slice(payload_len())};
            tq_out_outcome(o, &r);
        }
        break;
    case TQ_MSG_CANCEL_ACK:
        tq_out_begin_cancel_ack(o, gen_u32());
        n = batch_len(1);
        for (size_t i = 0; i < n; i++)
            tq_out_cancel_item(o, gen_u64(), (uint8_t)below(3));
        break;
    case TQ_MSG_DISPATCH:
        tq_out_begin(o, type);
        n = batch_len(1);
        for (size_t i = 0; i < n; i++) {
            tq_dispatch_item_t d = {gen_u64(), gen_u32(), gen_u32(), gen_name(n1, 0),
                                    pool_slice(payload_len())};
            m->rec_off[m->nrec++] = o->head.len;
            tq_out_dispatch_item(o, &d);
        }
        break;
    case TQ_MSG_RESULT:
        tq_out_begin_result(o, (uint16_t)(chance(95) ? below(TQ_MAX_SLOTS + 1) : rnd()));
        n = batch_len(1);
        for (size_t i = 0; i < n; i++) {
            tq_result_item_t r = {gen_u64(), gen_u32(), (uint8_t)below(3),
                                  pool_slice(payload_len())};
            tq_out_result_item(o, &r);
        }
        break;
    default: /* RELEASE, KILL */
        tq_out_begin(o, type);
        n = batch_len(1);
        for (size_t i = 0; i < n; i++)
            tq_out_lease(o, gen_u64(), gen_u32());
        break;
    }
    m->f0.len = 0;
    vec_put(&m->f0, o->head.data, o->head.len);
    m->nparts = o->nparts;
    if (o->nparts)
        memcpy(m->parts, o->parts, o->nparts * sizeof *o->parts);
    m->count_off = o->count_off;
    /* The caps a real receiver would use, mostly. */
    m->config = chance(80) ? (uint8_t)(6 | (type == TQ_MSG_STATUS_REPLY ? 1 << 3 : 0))
                           : (uint8_t)rnd();
}

static const char *const json_tokens[] = {
    "{",     "}",    "[",        "]",        "\"",
    ":",     ",",    "\\",       "\\u0000",  "\\ud800",
    "null",  "true", "1e999",    "-0",       "0x10",
    "\"\":", "{}",   "[[[[[[[[", "\xc3\x28", "\xf4\x90\x80\x80",
    " ",     "\x00",
};

static const uint16_t interesting16[] = {0,
                                         1,
                                         2,
                                         0x7f,
                                         0x80,
                                         0xff,
                                         0x100,
                                         TQ_MAX_BATCH - 1,
                                         TQ_MAX_BATCH,
                                         TQ_MAX_BATCH + 1,
                                         0x7fff,
                                         0x8000,
                                         0xffff};

/* One random mutation of m. */
static void mutate(msg_t *m)
{
    vec_t *f = &m->f0;
    switch (below(16)) {
    case 0: /* flip a bit */
        if (f->len)
            f->data[below(f->len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* set a byte to an interesting value */
        if (f->len) {
            static const uint8_t v[] = {0, 1, 0x7f, 0x80, 0xfe, 0xff, 64, 65, 128, 129};
            f->data[below(f->len)] = v[below(sizeof v)];
        }
        break;
    case 2: /* truncate */
        if (f->len)
            f->len = below(f->len);
        break;
    case 3: { /* insert random bytes */
        uint8_t b[16];
        size_t n = 1 + below(sizeof b);
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)rnd();
        vec_insert(f, below(f->len + 1), b, n);
        break;
    }
    case 4: /* delete a range */
        if (f->len) {
            size_t at = below(f->len);
            vec_erase(f, at, 1 + below(f->len - at));
        }
        break;
    case 5: /* corrupt the record count */
        if (m->count_off && m->count_off + 2 <= f->len) {
            uint16_t c = chance(50) ? interesting16[below(sizeof interesting16 / 2)]
                                    : (uint16_t)(f->data[m->count_off] +
                                                 (f->data[m->count_off + 1] << 8) + below(5) - 2);
            f->data[m->count_off] = (uint8_t)c;
            f->data[m->count_off + 1] = (uint8_t)(c >> 8);
        }
        break;
    case 6: /* corrupt a str8 length (fn of SUBMIT/DISPATCH, or any byte) */
        if (m->nrec && f->len >= TQ_HEAD_SIZE) {
            size_t at = m->rec_off[below(m->nrec)];
            if (f->data[3] == TQ_MSG_DISPATCH)
                at += 16;
            else if (chance(50) && at < f->len) /* the queue or key after fn */
                at += 1 + f->data[at];
            if (at < f->len)
                f->data[at] = chance(50) ? (uint8_t)rnd() : (uint8_t)(f->data[at] + below(3) - 1);
        } else if (f->len > TQ_HEAD_SIZE) {
            f->data[TQ_HEAD_SIZE + below(f->len - TQ_HEAD_SIZE)] = (uint8_t)rnd();
        }
        break;
    case 7: /* drop a data frame */
        if (m->nparts)
            m->nparts--;
        break;
    case 8: /* add a data frame */
        if (m->nparts < TQ_MAX_BATCH + 2)
            m->parts[m->nparts++] = pool_slice(below(40));
        break;
    case 9: /* any number of data frames */
        m->nparts = chance(40) ? 0 : below(chance(90) ? 16 : TQ_MAX_BATCH + 3);
        for (size_t i = 0; i < m->nparts; i++)
            if (!m->parts[i].data)
                m->parts[i] = pool_slice(below(8));
        break;
    case 10: /* other caps */ m->config = (uint8_t)rnd(); break;
    case 11: /* another type: one decoder's body given to another */
        if (f->len >= TQ_HEAD_SIZE)
            f->data[3] = chance(90) ? (uint8_t)all_types[below(NTYPES)] : (uint8_t)rnd();
        break;
    case 12: /* break the signature or version */
        if (f->len >= TQ_HEAD_SIZE)
            f->data[below(3)] = (uint8_t)rnd();
        break;
    case 13: { /* append trailing bytes */
        uint8_t b[9];
        size_t n = 1 + below(sizeof b);
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)(chance(50) ? ' ' : rnd());
        vec_put(f, b, n);
        break;
    }
    case 14: { /* a JSON token anywhere in the body */
        const char *t = json_tokens[below(sizeof json_tokens / sizeof json_tokens[0])];
        size_t n = t[0] ? strlen(t) : 1;
        size_t lo = f->len > TQ_HEAD_SIZE ? TQ_HEAD_SIZE : f->len;
        vec_insert(f, lo + below(f->len - lo + 1), t, n);
        break;
    }
    default: { /* deep nesting, or a huge number of members */
        if (f->len > TQ_HEAD_SIZE)
            f->len = TQ_HEAD_SIZE;
        size_t n = below(3000);
        int arrays = chance(50);
        vec_u8(f, '{');
        for (size_t i = 0; i < n; i++)
            vec_put(f, arrays ? "\"a\":[" : "\"a\":{", 5);
        break;
    }
    }
}

/* Serialise m as a fuzz input (layout in tq_proto_fuzz.h). */
static void serialise(const msg_t *m, vec_t *in)
{
    in->len = 0;
    vec_u16(in, (uint16_t)m->nparts);
    vec_u8(in, m->config);
    for (size_t i = 0; i < m->nparts; i++) {
        size_t len = m->parts[i].len > 0xffff ? 0xffff : m->parts[i].len;
        vec_u16(in, (uint16_t)len);
        vec_put(in, m->parts[i].data, len);
    }
    vec_put(in, m->f0.data, m->f0.len);
}

/* Mutations of the serialised input itself (frame lengths included). */
static void mutate_input(vec_t *in)
{
    switch (below(3)) {
    case 0:
        if (in->len)
            in->len = below(in->len);
        break;
    case 1:
        for (size_t k = 1 + below(4); k > 0 && in->len; k--)
            in->data[below(in->len)] ^= (uint8_t)(1u << below(8));
        break;
    default:
        if (in->len >= 2) { /* a frame count that is not the frames' */
            uint16_t c = interesting16[below(sizeof interesting16 / 2)];
            in->data[0] = (uint8_t)c;
            in->data[1] = (uint8_t)(c >> 8);
        }
        break;
    }
}

/* A random input: bytes, often behind a valid head. */
static void gen_random(vec_t *in)
{
    in->len = 0;
    size_t n = below(chance(90) ? 64 : 1024);
    int headed = chance(60);
    if (headed) {
        vec_u8(in, (uint8_t)below(4)); /* few data frames */
        vec_u8(in, 0);
        vec_u8(in, (uint8_t)rnd());
        for (size_t i = 0; i < in->data[0]; i++) {
            size_t len = below(8);
            vec_u16(in, (uint16_t)len);
            for (size_t k = 0; k < len; k++)
                vec_u8(in, (uint8_t)rnd());
        }
        uint8_t h[4] = {TQ_SIG0, TQ_SIG1, TQ_PROTO_VERSION, (uint8_t)all_types[below(NTYPES)]};
        vec_put(in, h, sizeof h);
    }
    for (size_t i = 0; i < n; i++)
        vec_u8(in, (uint8_t)rnd());
}

/* ---- modes ------------------------------------------------------------------ */

static int replay(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (!fp) {
            fprintf(stderr, "tq_proto_fuzz: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        vec_t in = {0};
        uint8_t buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
            vec_put(&in, buf, n);
        fclose(fp);
        LLVMFuzzerTestOneInput(in.data, in.len);
        free(in.data);
        printf("%s: ok\n", argv[i]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long long iterations = 200000, seed = 1;
    const char *corpus = NULL;
    int i;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            iterations = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc)
            corpus = argv[++i];
        else {
            fprintf(stderr, "usage: tq_proto_fuzz [-n N] [-s SEED] [--corpus DIR] [FILE...]\n");
            return 2;
        }
    }
    if (i < argc)
        return replay(argc - i, argv + i);

    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t k = 0; k < POOL_SIZE; k++)
        pool[k] = (uint8_t)rnd();

    static msg_t m;
    tq_out_t o;
    tq_out_init(&o);
    vec_t in = {0};
    unsigned long long mutated = 0, random_inputs = 0;
    clock_t t0 = clock();

    if (corpus) {
        unsigned long long written = 0;
        if (iterations == 200000)
            iterations = 400;
        for (unsigned long long k = 0; k < iterations; k++) {
            gen_valid(&m, &o);
            serialise(&m, &in);
            if (in.len > 70000)
                continue; /* keep seeds under libFuzzer's -max_len */
            written++;
            char path[4096];
            snprintf(path, sizeof path, "%s/seed-%04llu-%s", corpus, k,
                     tq_msg_type_name(m.f0.data[3]));
            FILE *fp = fopen(path, "wb");
            if (!fp || fwrite(in.data, 1, in.len, fp) != in.len || fclose(fp) != 0) {
                fprintf(stderr, "tq_proto_fuzz: %s: %s\n", path, strerror(errno));
                return 1;
            }
        }
        printf("tq_proto_fuzz: wrote %llu seeds to %s\n", written, corpus);
    } else {
        for (unsigned long long k = 0; k < iterations; k++) {
            if (chance(15)) {
                gen_random(&in);
                random_inputs++;
            } else {
                gen_valid(&m, &o);
                if (chance(85)) {
                    for (size_t r = 1 + below(chance(70) ? 2 : 6); r > 0; r--)
                        mutate(&m);
                    mutated++;
                }
                serialise(&m, &in);
                if (chance(10))
                    mutate_input(&in);
            }
            LLVMFuzzerTestOneInput(in.data, in.len);
        }
        printf("tq_proto_fuzz: %llu inputs (%llu mutated, %llu random), seed %llu, %.1f s cpu\n",
               iterations, mutated, random_inputs, seed, (double)(clock() - t0) / CLOCKS_PER_SEC);
        printf("  %-12s %8s %8s\n", "type", "accepted", "rejected");
        for (size_t t = 0; t < NTYPES; t++)
            printf("  %-12s %8lu %8lu\n", tq_msg_type_name(all_types[t]),
                   tq_fuzz_accepted[all_types[t]], tq_fuzz_rejected[all_types[t]]);
        printf("  %-12s %8s %8lu\n", "(bad head)", "-", tq_fuzz_rejected[256]);
    }
    free(in.data);
    free(m.f0.data);
    tq_out_free(&o);
    return 0;
}
