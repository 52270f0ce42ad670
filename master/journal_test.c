/* journal_test.c - round trips across rotations, every fsync mode, torn
 * tails, damage and --repair, drop_before, and faults injected through
 * tq_jio: a full disk, a failing fdatasync, and a power loss. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zmq.h>

#include "tq_test.h"

static void *ctx;
static char base[64];
static int dirs;

/* ---- helpers -------------------------------------------------------------- */

static void fresh_dir(char *out, size_t size)
{
    snprintf(out, size, "%s/d%d", base, ++dirs);
    mkdir(out, 0700);
}

static void seg_path(char *out, size_t size, const char *dir, uint64_t seg)
{
    snprintf(out, size, "%s/journal/%016llx.tqj", dir, (unsigned long long)seg);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Record i's body: a recognisable pattern of a length that varies. */
static size_t body_of(unsigned i, uint8_t *buf)
{
    size_t n = 4 + (i * 37u) % 200u;
    for (size_t k = 0; k < n; k++)
        buf[k] = (uint8_t)(i * 31u + k);
    memcpy(buf, &i, sizeof i);
    return n;
}

typedef struct {
    unsigned n;         /* records applied */
    unsigned ndropped;  /* records handed as damaged or lost */
    unsigned nlost;     /* of them lost bytes */
    int bad;            /* a record was not the one expected */
    unsigned stop_at;   /* refuse this record (0: never) */
    int any_order;      /* records may come in any order (checked by index) */
    uint8_t seen[4096]; /* any_order: which indices were applied */
} replay_t;

static int replay_check(void *arg, uint8_t type, const uint8_t *body, size_t len, int dropped,
                        tq_err_t *err)
{
    replay_t *r = arg;
    if (dropped) {
        r->ndropped++;
        if (dropped == TQ_JREC_LOST)
            r->nlost++;
        return 0;
    }
    uint8_t want[256];
    unsigned i = r->n;
    if (r->any_order) {
        if (len < sizeof i)
            r->bad = 1;
        else
            memcpy(&i, body, sizeof i);
        if (i >= sizeof r->seen)
            r->bad = 1, i = 0;
        r->seen[i] = 1;
    }
    size_t n = body_of(i, want);
    if (type != (uint8_t)(i % 7 + 1) || len != n || memcmp(body, want, n) != 0)
        r->bad = 1;
    r->n++;
    if (r->stop_at && r->n == r->stop_at) {
        tq_err_set(err, 0, "record %u refused", i);
        return -1;
    }
    return 0;
}

static uint64_t put(tq_journal_t *j, unsigned i);

/* --repair's checkpoint: the records seen, again, in index order. */
static void checkpoint_seen(void *arg, tq_journal_t *j)
{
    replay_t *r = arg;
    for (unsigned i = 0; i < sizeof r->seen; i++)
        if (r->seen[i])
            put(j, i);
}

static tq_journal_t *jopen(const char *dir, tq_fsync_mode_t mode, int repair, replay_t *r,
                           tq_journal_report_t *rep, char *err, size_t errlen)
{
    tq_journal_cfg_t cfg = {.data_dir = dir,
                            .mode = mode,
                            .interval_ms = 20,
                            .repair = repair,
                            .zmq_ctx = ctx,
                            .checkpoint = checkpoint_seen};
    tq_err_t e = {0, ""};
    tq_journal_t *j = tq_journal_open(&cfg, replay_check, r, rep, &e);
    snprintf(err, errlen, "%s", e.msg);
    return j;
}

/* Append record i (type and body split in two parts). */
static uint64_t put(tq_journal_t *j, unsigned i)
{
    uint8_t b[256];
    size_t n = body_of(i, b);
    return tq_journal_append(j, (uint8_t)(i % 7 + 1), b, n / 2, b + n / 2, n - n / 2);
}

/* Serve the sync thread's reports until cond holds or 5 s pass. */
#define WAIT_FOR(j, cond)                                                                          \
    do {                                                                                           \
        int64_t deadline_ = now_ms() + 5000;                                                       \
        while (!(cond) && now_ms() < deadline_) {                                                  \
            zmq_pollitem_t it_ = {tq_journal_socket(j), 0, ZMQ_POLLIN, 0};                         \
            zmq_poll(&it_, 1, 10);                                                                 \
            tq_journal_on_sync(j);                                                                 \
            tq_journal_tick(j, now_ms());                                                          \
        }                                                                                          \
    } while (0)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A journal in a fresh dir with n records in segment 1, closed. */
static void make_journal(char *dir, size_t size, unsigned n)
{
    fresh_dir(dir, size);
    char err[512];
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    for (unsigned i = 0; i < n; i++)
        put(j, i);
    CHECK_EQ_INT(tq_journal_write(j), 0);
    tq_journal_destroy(&j);
}

/* Offset of record k in a segment made by make_journal. */
static long long rec_off(unsigned k)
{
    long long off = TQ_JOURNAL_HEADER_SIZE;
    uint8_t b[256];
    for (unsigned i = 0; i < k; i++)
        off += TQ_JOURNAL_RECORD_HEAD + 1 + (long long)body_of(i, b);
    return off;
}

static void poke(const char *path, long long off, uint8_t xor_with)
{
    int fd = open(path, O_RDWR);
    uint8_t c = 0;
    CHECK(pread(fd, &c, 1, off) == 1);
    c ^= xor_with;
    CHECK(pwrite(fd, &c, 1, off) == 1);
    close(fd);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_mode_names(void)
{
    CHECK_EQ_STR(tq_fsync_mode_name(TQ_FSYNC_ALWAYS), "always");
    CHECK_EQ_STR(tq_fsync_mode_name(TQ_FSYNC_INTERVAL), "interval");
    CHECK_EQ_STR(tq_fsync_mode_name(TQ_FSYNC_OFF), "off");
    CHECK_EQ_INT(tq_fsync_mode_parse("interval"), TQ_FSYNC_INTERVAL);
    CHECK_EQ_INT(tq_fsync_mode_parse("sometimes"), -1);
}

static uint64_t rotate_now(tq_journal_t *j);

static void test_roundtrip_across_rotate(void)
{
    char dir[128], err[512];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_journal_report_t rep;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_INTERVAL, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(rep.segments, 0);
    CHECK_EQ_INT(tq_journal_segment(j), 1);
    uint64_t lsn = 0;
    for (unsigned i = 0; i < 5000; i++) {
        lsn = put(j, i);
        if (i % 100 == 99)
            CHECK_EQ_INT(tq_journal_write(j), 0);
        if (i == 2500)
            CHECK_EQ_INT(rotate_now(j), 2);
    }
    CHECK_EQ_INT(tq_journal_appended(j), lsn);
    CHECK_EQ_INT(tq_journal_write(j), 0);
    CHECK_EQ_INT(tq_journal_written(j), lsn);
    char p1[256], p2[256];
    seg_path(p1, sizeof p1, dir, 1);
    seg_path(p2, sizeof p2, dir, 2);
    CHECK_EQ_INT(tq_journal_bytes(j), file_size(p1) + file_size(p2));
    tq_journal_destroy(&j);
    CHECK(j == NULL);

    j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 5000);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(rep.segments, 2);
    CHECK_EQ_INT(rep.records, 5000);
    CHECK_EQ_INT(rep.torn, 0);
    CHECK_EQ_INT(tq_journal_segment(j), 3);
    CHECK_EQ_INT(rep.bytes, file_size(p1) + file_size(p2) + TQ_JOURNAL_HEADER_SIZE);
    CHECK_EQ_INT(tq_journal_bytes(j), rep.bytes);
    tq_journal_destroy(&j);

    /* A callback that refuses a record stops the open. */
    r = (replay_t){.stop_at = 10};
    j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, &rep, err, sizeof err);
    CHECK(j == NULL);
    CHECK(strstr(err, "record 9 refused") != NULL);
    tq_journal_destroy(&j); /* accepts NULL */
}

static void test_modes_reach_durable(void)
{
    tq_fsync_mode_t modes[] = {TQ_FSYNC_ALWAYS, TQ_FSYNC_INTERVAL, TQ_FSYNC_OFF};
    for (int m = 0; m < 3; m++) {
        char dir[128], err[512];
        fresh_dir(dir, sizeof dir);
        replay_t r = {0};
        tq_journal_t *j = jopen(dir, modes[m], 0, &r, NULL, err, sizeof err);
        CHECK(j != NULL);
        for (unsigned round = 0; round < 20; round++) {
            for (unsigned i = 0; i < 50; i++)
                put(j, round * 50 + i);
            CHECK_EQ_INT(tq_journal_write(j), 0);
            if (round == 10)
                rotate_now(j);
        }
        if (modes[m] == TQ_FSYNC_OFF)
            tq_journal_sync(j);
        WAIT_FOR(j, tq_journal_durable(j) == tq_journal_written(j));
        CHECK_EQ_INT(tq_journal_durable(j), tq_journal_written(j));
        CHECK_EQ_INT(tq_journal_failed(j), 0);
        tq_journal_destroy(&j);
    }
}

/* Two journals in one process: each has its own sync pipe. */
static void test_two_at_once(void)
{
    char d1[128], d2[128], err[512];
    fresh_dir(d1, sizeof d1);
    fresh_dir(d2, sizeof d2);
    replay_t r = {0};
    tq_journal_t *a = jopen(d1, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    tq_journal_t *b = jopen(d2, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    CHECK(a && b);
    put(a, 0);
    put(b, 0);
    put(b, 1);
    tq_journal_write(a);
    tq_journal_write(b);
    WAIT_FOR(a, tq_journal_durable(a) == tq_journal_written(a));
    WAIT_FOR(b, tq_journal_durable(b) == tq_journal_written(b));
    CHECK(tq_journal_durable(a) > 0 && tq_journal_durable(a) < tq_journal_durable(b));
    tq_journal_destroy(&a);
    tq_journal_destroy(&b);
}

/* Mangle segment 1 of a 20-record journal, reopen: the last record (or
 * the zeros) is cut and reported, the file truncated at it. */
static void torn_case(const char *what, int kind)
{
    char dir[128], err[512], path[256];
    make_journal(dir, sizeof dir, 20);
    seg_path(path, sizeof path, dir, 1);
    long long end = file_size(path), last = rec_off(19);
    CHECK_EQ_INT(end, rec_off(20));
    unsigned want = 19;
    long long cut = last;
    if (kind == 0) { /* record header cut short */
        CHECK(truncate(path, last + 5) == 0);
    } else if (kind == 1) { /* length past the end of the file */
        CHECK(truncate(path, end - 3) == 0);
    } else if (kind == 2) { /* bad checksum on the record ending at EOF */
        poke(path, end - 1, 0x40);
    } else { /* zero-filled tail (preallocated blocks after a crash) */
        int fd = open(path, O_WRONLY | O_APPEND);
        uint8_t z[300] = {0};
        CHECK(write(fd, z, sizeof z) == (ssize_t)sizeof z);
        close(fd);
        want = 20;
        cut = end;
    }
    replay_t r = {0};
    tq_journal_report_t rep;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "%s: %s\n", what, err);
        return;
    }
    CHECK_EQ_INT(r.n, want);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(rep.torn, 1);
    CHECK_EQ_STR(rep.torn_file, "0000000000000001.tqj");
    CHECK_EQ_INT(rep.torn_offset, cut);
    CHECK_EQ_INT(file_size(path), cut);
    CHECK_EQ_INT(rep.repaired, 0);
    tq_journal_destroy(&j);
}

static void test_torn_tails(void)
{
    torn_case("header cut short", 0);
    torn_case("length past EOF", 1);
    torn_case("bad crc at EOF", 2);
    torn_case("zero tail", 3);
}

/* A segment created but its header never written is torn, not damage. */
static void test_torn_header(void)
{
    char dir[128], err[512], path[256];
    make_journal(dir, sizeof dir, 5);
    seg_path(path, sizeof path, dir, 2);
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(write(fd, "TQJOU", 5) == 5);
    close(fd);
    replay_t r = {0};
    tq_journal_report_t rep;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 5);
    CHECK_EQ_INT(rep.torn, 1);
    CHECK_EQ_INT(file_size(path), TQ_JOURNAL_HEADER_SIZE); /* deleted, made anew */
    CHECK_EQ_INT(tq_journal_segment(j), 2);
    tq_journal_destroy(&j);
}

/* Rotate and serve the sync thread until the new segment exists. */
static uint64_t rotate_now(tq_journal_t *j)
{
    uint64_t want = tq_journal_rotate(j);
    tq_journal_write(j);
    WAIT_FOR(j, tq_journal_segment(j) == want);
    CHECK_EQ_INT(tq_journal_segment(j), want);
    return want;
}

/* Segments 1, 2, 3 with records 0..9, 10..19, 20..29; closed. */
static void make3(char *dir, size_t size)
{
    fresh_dir(dir, size);
    char err[512];
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    for (unsigned i = 0; i < 30; i++) {
        put(j, i);
        if (i == 9 || i == 19) {
            CHECK_EQ_INT(tq_journal_write(j), 0);
            rotate_now(j);
        }
    }
    CHECK_EQ_INT(tq_journal_write(j), 0);
    tq_journal_destroy(&j);
}

/* The open refuses dir with an error naming seg's file and want. */
static void check_refused(const char *dir, uint64_t seg, const char *want, const char *what)
{
    char err[512], name[32];
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j == NULL);
    if (j) {
        fprintf(stderr, "%s: opened\n", what);
        tq_journal_destroy(&j);
        return;
    }
    snprintf(name, sizeof name, "%016llx.tqj", (unsigned long long)seg);
    CHECK(strstr(err, "journal damaged") != NULL);
    CHECK(strstr(err, name) != NULL);
    CHECK(strstr(err, want) != NULL);
    CHECK(strstr(err, "--repair") != NULL);
    if (!strstr(err, name) || !strstr(err, want))
        fprintf(stderr, "%s: %s\n", what, err);
}

/* A closed segment cut short (in a record or between two), emptied,
 * deleted or grown, or the first one deleted: refused with file and
 * offset. Only the newest may end torn. */
static void test_cut_and_missing_segments(void)
{
    char dir[128], p1[256], p2[256], want[64];
    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    long long s2 = file_size(p2);
    CHECK(truncate(p2, s2 - 3) == 0); /* in its last record */
    snprintf(want, sizeof want, "at offset %lld: segment cut short", s2 - 3);
    check_refused(dir, 2, want, "cut in a record");

    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    long long last = s2 - (TQ_JOURNAL_RECORD_HEAD + 1 + (long long)body_of(19, (uint8_t[256]){0}));
    CHECK(truncate(p2, last) == 0); /* between two records: looks clean */
    snprintf(want, sizeof want, "at offset %lld: segment cut short", last);
    check_refused(dir, 2, want, "cut between records");

    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    CHECK(truncate(p2, 0) == 0);
    check_refused(dir, 2, "at offset 0", "emptied");

    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    CHECK(unlink(p2) == 0);
    check_refused(dir, 2, "at offset 0: segment missing", "deleted");

    make3(dir, sizeof dir);
    seg_path(p1, sizeof p1, dir, 1);
    CHECK(unlink(p1) == 0);
    check_refused(dir, 1, "at offset 0: segment missing", "first deleted");

    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    int fd = open(p2, O_WRONLY | O_APPEND);
    CHECK(write(fd, "xyz", 3) == 3);
    close(fd);
    snprintf(want, sizeof want, "at offset %lld", s2);
    check_refused(dir, 2, want, "grown");

    /* with --repair: the rest is replayed, the journal is sound after */
    make3(dir, sizeof dir);
    seg_path(p2, sizeof p2, dir, 2);
    CHECK(unlink(p2) == 0);
    char err[512];
    replay_t r = {.any_order = 1};
    tq_journal_report_t rep;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 1, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 20);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(r.nlost, 1);
    CHECK_EQ_INT(rep.repaired, 1);
    CHECK_EQ_STR(rep.damage_file, "0000000000000002.tqj");
    CHECK(strncmp(rep.moved_to, "damaged-", 8) == 0);
    tq_journal_destroy(&j);
    replay_t r2 = {.any_order = 1};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r2, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r2.n, 20);
    CHECK_EQ_INT(r2.bad, 0);
    CHECK(memcmp(r.seen, r2.seen, sizeof r.seen) == 0);
    CHECK_EQ_INT(rep.repaired + rep.torn, 0);
    tq_journal_destroy(&j);

    /* the newest segment may still end torn; the others were synced */
    make3(dir, sizeof dir);
    char p3[256];
    seg_path(p3, sizeof p3, dir, 3);
    long long s3 = file_size(p3);
    CHECK(truncate(p3, s3 - 3) == 0);
    r = (replay_t){0};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 29);
    CHECK_EQ_INT(rep.torn, 1);
    CHECK_EQ_STR(rep.torn_file, "0000000000000003.tqj");
    tq_journal_destroy(&j);
}

static void test_damage_and_repair(void)
{
    char dir[128], err[512], p1[256], p2[256];
    make3(dir, sizeof dir);
    /* an unrelated file is ignored */
    char other[256];
    snprintf(other, sizeof other, "%s/journal/notes.txt", dir);
    FILE *f = fopen(other, "w");
    fputs("hello", f);
    fclose(f);
    seg_path(p1, sizeof p1, dir, 1);
    seg_path(p2, sizeof p2, dir, 2);
    long long off = rec_off(5);
    poke(p1, off + 10, 0x01); /* record 5's body: its checksum fails */

    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j == NULL);
    char want[64];
    snprintf(want, sizeof want, "at offset %lld", off);
    CHECK(strstr(err, "journal damaged") != NULL);
    CHECK(strstr(err, "0000000000000001.tqj") != NULL);
    CHECK(strstr(err, want) != NULL);
    CHECK(strstr(err, "--repair") != NULL);
    CHECK(file_size(p2) > 0); /* nothing touched */

    /* --repair drops record 5 alone and keeps the later segments */
    r = (replay_t){.any_order = 1};
    tq_journal_report_t rep;
    j = jopen(dir, TQ_FSYNC_OFF, 1, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 29);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(r.seen[5], 0);
    CHECK_EQ_INT(r.ndropped, 1);
    CHECK_EQ_INT(r.nlost, 0);
    CHECK_EQ_INT(rep.repaired, 1);
    CHECK_EQ_INT(rep.damage_places, 1);
    CHECK_EQ_STR(rep.damage_file, "0000000000000001.tqj");
    CHECK_EQ_INT(rep.damage_offset, off);
    CHECK_EQ_INT(rep.dropped_bytes, rec_off(6) - rec_off(5));
    CHECK_EQ_INT(rep.dropped_records, 1);
    CHECK_EQ_INT(file_size(p1), -1); /* moved aside */
    CHECK_EQ_INT(tq_journal_segment(j), 4);
    CHECK(file_size(other) == 5);
    char moved[256];
    snprintf(moved, sizeof moved, "%s/journal/%s/0000000000000001.tqj", dir, rep.moved_to);
    CHECK(file_size(moved) > 0);
    tq_journal_destroy(&j);

    /* the repaired journal is sound */
    replay_t r2 = {.any_order = 1};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r2, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r2.n, 29);
    CHECK_EQ_INT(r2.bad, 0);
    CHECK_EQ_INT(rep.repaired + rep.torn, 0);
    tq_journal_destroy(&j);

    /* a damaged length: the next record is found again */
    make3(dir, sizeof dir);
    seg_path(p1, sizeof p1, dir, 1);
    poke(p1, rec_off(5) + 2, 0x40);
    r = (replay_t){.any_order = 1};
    j = jopen(dir, TQ_FSYNC_OFF, 1, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 29);
    CHECK_EQ_INT(r.seen[5], 0);
    CHECK_EQ_INT(r.seen[6], 1);
    CHECK_EQ_INT(rep.dropped_bytes, rec_off(6) - rec_off(5));
    tq_journal_destroy(&j);

    /* a bad segment header (not the last segment) is damage too */
    make3(dir, sizeof dir);
    seg_path(p1, sizeof p1, dir, 1);
    poke(p1, 3, 0xff);
    check_refused(dir, 1, "at offset 0", "bad header");
    r = (replay_t){.any_order = 1};
    j = jopen(dir, TQ_FSYNC_OFF, 1, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 30); /* its records are found after the header */
    CHECK_EQ_INT(rep.repaired, 1);
    CHECK_EQ_INT(rep.damage_offset, 0);
    tq_journal_destroy(&j);
}

/* A pass that appends megabytes (big payloads) keeps its buffer for the
 * next pass, not freed and grown again (realloc copies, page faults);
 * it is given back after JOURNAL_BATCH_IDLE_MS with no big pass, and at
 * once when empty if it grew past JOURNAL_BATCH_HOLD. */
static void test_batch_buffer_kept_then_released(void)
{
    char dir[128], err[512];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    static uint8_t big[256 * 1024];
    memset(big, 'p', sizeof big);
    for (int pass = 0; pass < 3; pass++) {
        for (int k = 0; k < 12; k++) /* 3 MiB in one pass */
            tq_journal_append(j, 1, "t", 1, big, sizeof big);
        CHECK_EQ_INT(tq_journal_write(j), 0);
        CHECK(tq_journal_batch_capacity(j) >= 12 * sizeof big);
    }
    size_t cap = tq_journal_batch_capacity(j);
    tq_journal_append(j, 1, "t", 1, big, sizeof big); /* no regrowth */
    CHECK_EQ_INT(tq_journal_write(j), 0);
    CHECK_EQ_INT(tq_journal_batch_capacity(j), cap);
    tq_journal_tick(j, now_ms()); /* a big pass just now: kept */
    CHECK_EQ_INT(tq_journal_batch_capacity(j), cap);
    tq_journal_tick(j, now_ms() + 2500); /* quiet since: given back */
    CHECK_EQ_INT(tq_journal_batch_capacity(j), 0);
    for (int k = 0; k < 80; k++) /* 20 MiB, over the hold: freed once written */
        tq_journal_append(j, 1, "t", 1, big, sizeof big);
    CHECK_EQ_INT(tq_journal_write(j), 0);
    CHECK_EQ_INT(tq_journal_batch_capacity(j), 0);
    tq_journal_destroy(&j);
    r = (replay_t){0};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    /* every record back (not put()'s bodies: no content check) */
    CHECK_EQ_INT(r.n, 3 * 12 + 1 + 80);
    tq_journal_destroy(&j);
}

static void test_drop_before(void)
{
    char dir[128], err[512], path[256];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    for (unsigned s = 0; s < 3; s++) {
        for (unsigned i = 0; i < 100; i++)
            put(j, i);
        rotate_now(j);
    }
    CHECK_EQ_INT(tq_journal_segment(j), 4);
    seg_path(path, sizeof path, dir, 1);
    char keep[300];
    snprintf(keep, sizeof keep, "%s.keep", path);
    CHECK(link(path, keep) == 0);
    uint64_t before = tq_journal_bytes(j);
    tq_journal_drop_before(j, 3);
    int done = 0;
    WAIT_FOR(j, (done = !tq_journal_drop_pending(j)));
    CHECK(done);
    CHECK(tq_journal_bytes(j) < before);
    CHECK_EQ_INT(tq_journal_segment(j), 5); /* its header says the journal starts at 3 */
    CHECK_EQ_INT(file_size(path), -1);
    seg_path(path, sizeof path, dir, 2);
    CHECK_EQ_INT(file_size(path), -1);
    seg_path(path, sizeof path, dir, 3);
    long long s3 = file_size(path);
    CHECK(s3 > 0);
    seg_path(path, sizeof path, dir, 4);
    long long s4 = file_size(path);
    seg_path(path, sizeof path, dir, 5);
    CHECK_EQ_INT(tq_journal_bytes(j), s3 + s4 + file_size(path));
    CHECK_EQ_INT(tq_journal_durable(j), tq_journal_written(j)); /* synced first */
    tq_journal_destroy(&j);

    /* A drop that did not finish: segment 1 is back. It is older than
     * the journal's first: not replayed, deleted. */
    seg_path(path, sizeof path, dir, 1);
    CHECK(rename(keep, path) == 0);
    tq_journal_report_t rep;
    r = (replay_t){0};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 100); /* segment 3's */
    CHECK_EQ_INT(rep.left_over, 1);
    CHECK_EQ_INT(file_size(path), -1);
    tq_journal_destroy(&j);
}

/* Append a record in the version-1 framing (unchanged in version 2). */
static void raw_record(FILE *f, unsigned i)
{
    uint8_t b[256 + 9];
    size_t n = body_of(i, b + 9);
    uint32_t len = (uint32_t)(n + 1);
    b[8] = (uint8_t)(i % 7 + 1);
    uint32_t c = (uint32_t)crc32(0, b + 8, len);
    memcpy(b, &len, 4);
    memcpy(b + 4, &c, 4);
    fwrite(b, 1, 8 + len, f);
}

static void raw_v1_header(FILE *f, uint64_t seg)
{
    uint8_t h[32] = "TQJOURNL";
    uint32_t v = 1, hs = 32;
    memcpy(h + 8, &v, 4);
    memcpy(h + 12, &hs, 4);
    memcpy(h + 16, &seg, 8);
    uint32_t c = (uint32_t)crc32(0, h, 28);
    memcpy(h + 28, &c, 4);
    fwrite(h, 1, sizeof h, f);
}

/* A journal of the previous release (version 1) is read as it was: its
 * last segment with records may end torn when only header-only segments
 * follow; the next segment is version 2 and names its size. */
static void test_version1_journal(void)
{
    char dir[128], jdir[160], p1[256], p2[256], err[512];
    fresh_dir(dir, sizeof dir);
    snprintf(jdir, sizeof jdir, "%s/journal", dir);
    mkdir(jdir, 0700);
    seg_path(p1, sizeof p1, dir, 1);
    seg_path(p2, sizeof p2, dir, 2);
    FILE *f = fopen(p1, "wb");
    raw_v1_header(f, 1);
    for (unsigned i = 0; i < 10; i++)
        raw_record(f, i);
    fwrite("\x20\x00\x00\x00\x01", 1, 5, f); /* a torn record */
    fclose(f);
    f = fopen(p2, "wb");
    raw_v1_header(f, 2);
    fclose(f);
    replay_t r = {0};
    tq_journal_report_t rep;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 10);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(rep.torn, 1);
    CHECK_EQ_INT(tq_journal_segment(j), 3);
    for (unsigned i = 10; i < 15; i++)
        put(j, i);
    tq_journal_destroy(&j);
    r = (replay_t){0};
    j = jopen(dir, TQ_FSYNC_OFF, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 15);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(rep.torn + rep.repaired, 0);
    tq_journal_destroy(&j);
    /* segment 2 (version 1) emptied: segment 3's header tells */
    CHECK(truncate(p2, 0) == 0);
    check_refused(dir, 2, "at offset 0", "v1 emptied");
}

/* ---- fault injection ------------------------------------------------------ */

static long long space_left = -1; /* bytes the "disk" still takes; -1: any */

static ssize_t full_disk_write(int fd, const void *buf, size_t n)
{
    if (space_left < 0)
        return write(fd, buf, n);
    if (space_left == 0) {
        errno = ENOSPC;
        return -1;
    }
    size_t k = (long long)n < space_left ? n : (size_t)space_left;
    ssize_t w = write(fd, buf, k);
    if (w > 0)
        space_left -= w;
    return w;
}

static void test_enospc(void)
{
    char dir[128], err[512];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_jio_t saved = tq_jio;
    tq_jio.write = full_disk_write;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    unsigned i = 0;
    for (; i < 100; i++)
        put(j, i);
    CHECK_EQ_INT(tq_journal_write(j), 0);
    space_left = 1000; /* the disk fills in the middle of a record */
    for (; i < 200; i++)
        put(j, i);
    CHECK_EQ_INT(tq_journal_write(j), -1);
    CHECK_EQ_INT(tq_journal_failed(j), ENOSPC);
    CHECK(tq_journal_written(j) < tq_journal_appended(j));
    for (; i < 300; i++) /* appends keep going into memory */
        put(j, i);
    CHECK_EQ_INT(tq_journal_write(j), -1);
    tq_journal_tick(j, now_ms() + 1000);
    CHECK_EQ_INT(tq_journal_failed(j), ENOSPC);
    space_left = -1; /* space freed */
    tq_journal_tick(j, now_ms() + 2000);
    CHECK_EQ_INT(tq_journal_written(j), tq_journal_appended(j));
    WAIT_FOR(j, tq_journal_failed(j) == 0);
    CHECK_EQ_INT(tq_journal_failed(j), 0);
    CHECK_EQ_INT(tq_journal_durable(j), tq_journal_written(j));
    for (; i < 350; i++)
        put(j, i);
    tq_journal_destroy(&j);
    tq_jio = saved;

    r = (replay_t){0};
    tq_journal_report_t rep;
    j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, &rep, err, sizeof err);
    CHECK(j != NULL);
    CHECK_EQ_INT(r.n, 350);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(rep.torn, 0);
    tq_journal_destroy(&j);
}

static volatile int sync_eio;

static int eio_fdatasync(int fd)
{
    if (__atomic_load_n(&sync_eio, __ATOMIC_SEQ_CST)) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static void test_fdatasync_eio(void)
{
    char dir[128], err[512];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_jio_t saved = tq_jio;
    tq_jio.fdatasync = eio_fdatasync;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    __atomic_store_n(&sync_eio, 1, __ATOMIC_SEQ_CST);
    for (unsigned i = 0; i < 10; i++)
        put(j, i);
    CHECK_EQ_INT(tq_journal_write(j), 0);
    WAIT_FOR(j, tq_journal_failed(j) == EIO);
    CHECK_EQ_INT(tq_journal_failed(j), EIO);
    CHECK(tq_journal_durable(j) < tq_journal_written(j));
    __atomic_store_n(&sync_eio, 0, __ATOMIC_SEQ_CST);
    WAIT_FOR(j, tq_journal_failed(j) == 0 && tq_journal_durable(j) == tq_journal_written(j));
    CHECK_EQ_INT(tq_journal_failed(j), 0);
    CHECK_EQ_INT(tq_journal_durable(j), tq_journal_written(j));
    tq_journal_destroy(&j);
    tq_jio = saved;
}

/* Power loss: what the file held at its last fdatasync, per inode. */
#define PL_MAX 16
static pthread_mutex_t pl_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    ino_t ino;
    off_t size;
} pl[PL_MAX];
static int npl;

static int pl_fdatasync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (fdatasync(fd) < 0)
        return -1;
    pthread_mutex_lock(&pl_mu);
    int k = 0;
    while (k < npl && pl[k].ino != st.st_ino)
        k++;
    if (k < PL_MAX) {
        pl[k].ino = st.st_ino;
        pl[k].size = st.st_size; /* taken before the sync: what it covers */
        if (k == npl)
            npl++;
    }
    pthread_mutex_unlock(&pl_mu);
    return 0;
}

static void test_power_loss(void)
{
    char dir[128], err[512], path[256];
    make_journal(dir, sizeof dir, 0); /* segment 1: header only */
    replay_t r = {0};
    tq_jio_t saved = tq_jio;
    tq_jio.fdatasync = pl_fdatasync;
    npl = 0;
    tq_journal_t *j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    static uint64_t lsns[3000];
    unsigned i = 0;
    for (; i < 2000; i++) {
        lsns[i] = put(j, i);
        if (i % 10 == 9) {
            tq_journal_write(j);
            tq_journal_on_sync(j);
        }
    }
    WAIT_FOR(j, tq_journal_durable(j) > lsns[1000]);
    /* the crash: what is durable now and what the disk kept */
    tq_journal_on_sync(j);
    uint64_t durable = tq_journal_durable(j);
    seg_path(path, sizeof path, dir, 2);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    off_t kept = -1;
    pthread_mutex_lock(&pl_mu);
    for (int k = 0; k < npl; k++)
        if (pl[k].ino == st.st_ino)
            kept = pl[k].size;
    pthread_mutex_unlock(&pl_mu);
    for (; i < 3000; i++) { /* written after, maybe not synced */
        lsns[i] = put(j, i);
        tq_journal_write(j);
    }
    tq_journal_destroy(&j);
    tq_jio = saved;
    CHECK(kept >= TQ_JOURNAL_HEADER_SIZE);
    CHECK(truncate(path, kept) == 0);

    unsigned safe = 0;
    while (safe < 3000 && lsns[safe] <= durable)
        safe++;
    r = (replay_t){0};
    j = jopen(dir, TQ_FSYNC_ALWAYS, 0, &r, NULL, err, sizeof err);
    CHECK(j != NULL);
    CHECK(safe > 1000);
    CHECK(r.n >= safe);
    CHECK_EQ_INT(r.bad, 0);
    tq_journal_destroy(&j);
}

static int count_only(void *arg, uint8_t type, const uint8_t *body, size_t len, int dropped,
                      tq_err_t *err)
{
    (void)type, (void)body, (void)len, (void)dropped, (void)err;
    (*(uint64_t *)arg)++;
    return 0;
}

/* Not an assertion: how long a replay of a million small records takes. */
static void test_scan_speed(void)
{
    char dir[128], err[512];
    fresh_dir(dir, sizeof dir);
    replay_t r = {0};
    tq_journal_t *j = jopen(dir, TQ_FSYNC_OFF, 0, &r, NULL, err, sizeof err);
    uint8_t body[51];
    memset(body, 'x', sizeof body);
    for (unsigned i = 0; i < 1000000; i++) {
        tq_journal_append(j, 1, body, sizeof body, NULL, 0); /* 8 + 1 + 51 = 60 bytes */
        if (i % 10000 == 9999)
            tq_journal_write(j);
    }
    tq_journal_destroy(&j);
    uint64_t n = 0;
    tq_journal_cfg_t cfg = {.data_dir = dir, .mode = TQ_FSYNC_OFF, .zmq_ctx = ctx};
    int64_t t0 = now_ms();
    tq_err_t e;
    j = tq_journal_open(&cfg, count_only, &n, NULL, &e);
    int64_t t1 = now_ms();
    CHECK(j != NULL);
    CHECK_EQ_INT(n, 1000000);
    printf("timing: scanned 1000000 records of 60 bytes in %lld ms\n", (long long)(t1 - t0));
    tq_journal_destroy(&j);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    ctx = zmq_ctx_new();
    snprintf(base, sizeof base, "/tmp/tq-journal-test-XXXXXX");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_mode_names);
    RUN(test_roundtrip_across_rotate);
    RUN(test_modes_reach_durable);
    RUN(test_two_at_once);
    RUN(test_torn_tails);
    RUN(test_torn_header);
    RUN(test_damage_and_repair);
    RUN(test_cut_and_missing_segments);
    RUN(test_version1_journal);
    RUN(test_batch_buffer_kept_then_released);
    RUN(test_drop_before);
    RUN(test_enospc);
    RUN(test_fdatasync_eio);
    RUN(test_power_loss);
    RUN(test_scan_speed);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    zmq_ctx_term(ctx);
    TEST_MAIN_END();
}
