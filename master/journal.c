/* journal.c - the master's journal on disk: segment files of checksummed
 * records, the scan at open, and the sync actor thread. See journal.h.
 *
 * Threads. The loop thread owns everything in struct tq_journal except
 * what the sync thread reads at start (directory, mode) and the fds it is
 * told about. The two talk over an inproc PAIR with fixed-size messages
 * (jmsg_t): the loop says what it wrote, rotated, wants synced or dropped;
 * the thread answers with what is durable, what failed and what a drop
 * freed. The loop never waits for the disk except in open and destroy. */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zmq.h>

#include "tq_log.h"
#include "tq_util.h"

/* A failed write is tried again at most this often. */
#define JOURNAL_RETRY_MS 100
/* A failed fdatasync is tried again by the thread this often. */
#define JOURNAL_SYNC_RETRY_MS 100
/* The batch buffer (what one loop pass appends) is kept between passes
 * up to JOURNAL_BATCH_HOLD, so a stream of big payloads reuses memory
 * that is mapped and cached: freed and grown again each pass, it cost
 * W3's master 10 % of its CPU in realloc copies and page faults. Once no
 * pass has needed more than JOURNAL_BATCH_KEEP for JOURNAL_BATCH_IDLE_MS
 * it is given back (a burst should not pin its memory for the rest of
 * the run); a buffer over JOURNAL_BATCH_HOLD is given back when empty. */
#define JOURNAL_BATCH_KEEP (1u << 20)
#define JOURNAL_BATCH_HOLD (16u << 20)
#define JOURNAL_BATCH_IDLE_MS 2000
/* "SSSSSSSSSSSSSSSS.tqj" */
#define SEG_NAME_LEN 20
/* The file of reserved bytes, and the temporary name of a segment that
 * --repair writes (neither is a segment name: the scan ignores them). */
#define RESERVE_NAME "reserve"
#define CHECKPOINT_TMP "checkpoint.tmp"
/* Low on space ends when the reserve can be taken again and this much
 * more is free besides (with twice the reserve). */
#define LOW_SPACE_SLACK (64u * 1024u)
/* --repair looks this far (bytes checksummed) for the next sound record
 * after damage before giving up on the rest of the segment. */
#define RESYNC_BUDGET (256u * 1024u * 1024u)

static ssize_t sys_write(int fd, const void *buf, size_t n) { return write(fd, buf, n); }
static int sys_fdatasync(int fd) { return fdatasync(fd); }
static int sys_fsync_dir(int dirfd) { return fsync(dirfd); }
static int sys_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

tq_jio_t tq_jio = {sys_write, sys_fdatasync, sys_fsync_dir, sys_ftruncate};

/* ---- messages between the loop and the sync thread ---------------------- */

enum {
    M_WRITTEN = 1, /* loop: fd holds everything up to LSN a */
    M_ROTATED,     /* loop: fd ends at LSN a, sync and close it; fd2 is new */
    M_SYNC,        /* loop: fdatasync everything now */
    M_DROP,        /* loop: once LSN b is durable, delete segments below a */
    M_STOP,        /* loop: last sync, then exit */
    M_DURABLE,     /* thread: durable = a, after fd2 sync rounds that took b µs */
    M_FAILED,      /* thread: a sync failed with errno fd */
    M_DROPPED,     /* thread: drop done, a bytes freed */
};

typedef struct {
    uint32_t kind;
    int32_t fd;
    int32_t fd2;
    uint32_t pad;
    uint64_t a, b;
} jmsg_t;

/* ---- little-endian helpers ---------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(uint32_t c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) { /* zlib takes a uInt length */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = (uint32_t)crc32(c, b, k);
        b += k;
        n -= k;
    }
    return c;
}

/* ---- the journal ---------------------------------------------------------- */

typedef struct {
    int fd;
    uint64_t written; /* LSN at the end of what the loop wrote to it */
    int dirty;        /* written (or created) since its last fdatasync */
    int rotated;      /* close once synced */
} tfile_t;

struct tq_journal {
    char dir[PATH_MAX];
    int dirfd;
    tq_fsync_mode_t mode;
    int64_t interval_ms;
    void *ctx;
    void *pipe; /* our end of the PAIR */
    char pipe_ep[96];
    pthread_t thread;
    int thread_started;

    int fd;            /* current segment, O_APPEND */
    uint64_t seg;      /* its number */
    uint64_t seg_size; /* bytes in it (its header included) */
    uint64_t first;    /* the oldest segment replay needs */
    /* A rotation asked for: the new segment is created once everything
     * up to rot_lsn (the old one's end) is durable. */
    int rot_pending;
    int rot_sync_asked;
    uint64_t rot_lsn, rot_first;
    /* drop_before: 1 its rotation waits to start, 2 it is pending */
    int drop_stage;
    uint64_t drop_seg;
    /* the reserve */
    int resfd;
    uint64_t reserve_want; /* cfg->reserve */
    uint64_t reserve_held; /* bytes allocated in it now */
    int low_space;
    int64_t next_space_ms;
    uint8_t *batch; /* appended, not yet written (a failed write's rest first) */
    size_t blen, bcap;
    int64_t batch_big_ms; /* when a write last took more than JOURNAL_BATCH_KEEP */
    uint64_t pipe_ops;    /* sends and receives on pipe (tq_journal_socket_ops) */
    uint64_t appended, written, durable;
    uint64_t bytes;

    int write_err;         /* errno of the write failure that stands */
    int write_clear_armed; /* a write succeeded since: clears at durable >= */
    uint64_t write_clear_lsn;
    int64_t next_retry_ms;
    int sync_err;
    tq_journal_sync_stats_t sync_stats; /* fdatasync latency and errors (metrics) */
    int drop_pending;                   /* a drop_before not yet reported done */
    int told_pending;                   /* an M_WRITTEN the thread has not answered yet */

    jmsg_t *outq; /* messages the thread's full inbox did not take yet */
    size_t outq_head, outq_len, outq_cap;

    /* sync thread only */
    tfile_t *files;
    size_t nfiles, capfiles;
};

static void seg_name(char *buf, size_t size, uint64_t seg)
{
    snprintf(buf, size, "%016" PRIx64 ".tqj", seg);
}

/* 1 and the number if name is a segment file name (lowercase hex). */
static int seg_parse(const char *name, uint64_t *seg)
{
    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 16, ".tqj") != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    *seg = v;
    return 1;
}

/* Queue a message for the thread; WRITTEN for the same fd coalesces. */
static void outq_push(tq_journal_t *self, const jmsg_t *m)
{
    if (m->kind == M_WRITTEN && self->outq_len > 0) {
        jmsg_t *last = &self->outq[self->outq_head + self->outq_len - 1];
        if (last->kind == M_WRITTEN && last->fd == m->fd) {
            last->a = m->a;
            return;
        }
    }
    if (self->outq_head + self->outq_len == self->outq_cap) {
        if (self->outq_head > 0) {
            memmove(self->outq, self->outq + self->outq_head, self->outq_len * sizeof *self->outq);
            self->outq_head = 0;
        } else {
            self->outq_cap = self->outq_cap ? self->outq_cap * 2 : 16;
            self->outq = tq_realloc(self->outq, self->outq_cap * sizeof *self->outq);
        }
    }
    self->outq[self->outq_head + self->outq_len++] = *m;
}

/* Send what the thread's inbox takes now. */
static void outq_flush(tq_journal_t *self)
{
    if (self->outq_len > 0)
        self->pipe_ops++;
    while (self->outq_len > 0) {
        if (zmq_send(self->pipe, &self->outq[self->outq_head], sizeof(jmsg_t), ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                tq_error("journal: cannot reach the sync thread: %s", zmq_strerror(errno));
            return;
        }
        self->outq_head++;
        self->outq_len--;
    }
    self->outq_head = 0;
}

static void tell(tq_journal_t *self, uint32_t kind, int fd, int fd2, uint64_t a, uint64_t b)
{
    jmsg_t m = {.kind = kind, .fd = fd, .fd2 = fd2, .a = a, .b = b};
    outq_push(self, &m);
    outq_flush(self);
}

/* ---- sync thread ---------------------------------------------------------- */

typedef struct {
    tq_journal_t *j;
    void *pipe;
    uint64_t durable;
    int dir_dirty;
    int force;   /* a sync was asked for (M_SYNC, stop) */
    int failing; /* the last round failed */
    int last_err;
    int64_t retry_at;
    int64_t timer; /* interval mode: sync due at, or -1 */
    uint64_t drop_seg, drop_lsn;
    int drop_pending;
    /* Replies not sent yet (the loop's inbox was full). They are state,
     * not events: the latest durable, the latest failure, freed bytes. */
    int tell_durable, tell_failed, tell_dropped;
    uint64_t freed;
    uint64_t rounds, round_us; /* sync rounds (and their time) not told yet */
} tstate_t;

static int tsend(tstate_t *t, uint32_t kind, int32_t e, uint64_t a)
{
    jmsg_t m = {.kind = kind, .fd = e, .a = a};
    for (;;) {
        if (zmq_send(t->pipe, &m, sizeof m, ZMQ_DONTWAIT) == (int)sizeof m)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Send the pending replies the loop's inbox takes; durable goes before a
 * later failure so the loop ends up with the latest state. */
static void tflush(tstate_t *t)
{
    if (t->tell_durable) {
        jmsg_t m = {.kind = M_DURABLE,
                    .fd2 = t->rounds > INT32_MAX ? INT32_MAX : (int32_t)t->rounds,
                    .a = t->durable,
                    .b = t->round_us};
        int rc;
        while ((rc = zmq_send(t->pipe, &m, sizeof m, ZMQ_DONTWAIT)) < 0 && errno == EINTR)
            ;
        if (rc == (int)sizeof m) {
            t->tell_durable = 0;
            t->rounds = t->round_us = 0;
        }
    }
    if (!t->tell_durable && t->tell_failed && tsend(t, M_FAILED, t->last_err, 0) == 0)
        t->tell_failed = 0;
    if (t->tell_dropped && tsend(t, M_DROPPED, 0, t->freed) == 0) {
        t->tell_dropped = 0;
        t->freed = 0;
    }
}

static tfile_t *tfile_find(tq_journal_t *j, int fd)
{
    for (size_t i = 0; i < j->nfiles; i++)
        if (j->files[i].fd == fd)
            return &j->files[i];
    return NULL;
}

static void tfile_add(tq_journal_t *j, int fd, uint64_t written)
{
    if (j->nfiles == j->capfiles) {
        j->capfiles = j->capfiles ? j->capfiles * 2 : 8;
        j->files = tq_realloc(j->files, j->capfiles * sizeof *j->files);
    }
    j->files[j->nfiles++] = (tfile_t){.fd = fd, .written = written, .dirty = 1};
}

static int tdirty(const tstate_t *t)
{
    if (t->dir_dirty)
        return 1;
    for (size_t i = 0; i < t->j->nfiles; i++)
        if (t->j->files[i].dirty || t->j->files[i].rotated)
            return 1;
    return 0;
}

/* fdatasync the directory and every dirty file in order, closing rotated
 * ones. durable moves as files are done. Returns 0 or an errno. */
static int tround(tstate_t *t)
{
    tq_journal_t *j = t->j;
    if (t->dir_dirty) {
        if (tq_jio.fsync_dir(j->dirfd) < 0)
            return errno ? errno : EIO;
        t->dir_dirty = 0;
    }
    int err = 0;
    size_t keep = 0;
    for (size_t i = 0; i < j->nfiles; i++) {
        tfile_t f = j->files[i];
        if (!err && f.dirty) {
            if (tq_jio.fdatasync(f.fd) < 0)
                err = errno ? errno : EIO;
            else
                f.dirty = 0;
        }
        if (!err && !f.dirty) {
            if (f.written > t->durable)
                t->durable = f.written;
            if (f.rotated) {
                close(f.fd);
                continue;
            }
        }
        j->files[keep++] = f;
    }
    j->nfiles = keep;
    return err;
}

/* Delete the segments below t->drop_seg; fsync the directory. */
static void tdrop(tstate_t *t)
{
    tq_journal_t *j = t->j;
    t->drop_pending = 0;
    t->tell_dropped = 1;
    DIR *d = opendir(j->dir);
    if (!d) {
        tq_error("journal: cannot read %s: %s", j->dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seg;
        if (!seg_parse(de->d_name, &seg) || seg >= t->drop_seg)
            continue;
        struct stat st;
        int have = fstatat(j->dirfd, de->d_name, &st, 0) == 0;
        if (unlinkat(j->dirfd, de->d_name, 0) < 0) {
            tq_error("journal: cannot delete %s/%s: %s", j->dir, de->d_name, strerror(errno));
            continue;
        }
        if (have)
            t->freed += (uint64_t)st.st_size;
    }
    closedir(d);
    if (tq_jio.fsync_dir(j->dirfd) < 0)
        tq_warn("journal: fsync of %s failed: %s", j->dir, strerror(errno));
}

static void thandle(tstate_t *t, const jmsg_t *m, int *stop)
{
    tq_journal_t *j = t->j;
    tfile_t *f;
    switch (m->kind) {
    case M_WRITTEN:
        if ((f = tfile_find(j, m->fd)) != NULL) {
            if (m->a > f->written)
                f->written = m->a;
            f->dirty = 1;
        }
        break;
    case M_ROTATED:
        if ((f = tfile_find(j, m->fd)) != NULL) {
            if (m->a > f->written)
                f->written = m->a;
            f->rotated = 1;
        }
        tfile_add(j, m->fd2, m->a);
        t->dir_dirty = 1;
        break;
    case M_SYNC: t->force = 1; break;
    case M_DROP:
        if (!t->drop_pending || m->a > t->drop_seg)
            t->drop_seg = m->a;
        if (!t->drop_pending || m->b > t->drop_lsn)
            t->drop_lsn = m->b;
        t->drop_pending = 1;
        break;
    case M_STOP: *stop = 1; break;
    default: break;
    }
}

/* One sync round now; remember the outcome for the loop. */
static void tsync(tstate_t *t)
{
    int dirty = tdirty(t);
    int64_t t0 = tq_mono_us();
    int err = tround(t);
    if (!err && dirty) { /* a round with nothing to sync is no latency */
        t->rounds++;
        t->round_us += (uint64_t)(tq_mono_us() - t0);
    }
    if (err) {
        if (!t->failing || err != t->last_err)
            tq_error("journal: fdatasync failed: %s", strerror(err));
        t->failing = 1;
        t->last_err = err;
        t->retry_at = tq_mono_ms() + JOURNAL_SYNC_RETRY_MS;
        t->tell_failed = 1;
        return;
    }
    t->failing = 0;
    t->force = 0;
    t->timer = -1;
    t->tell_durable = 1;
    t->tell_failed = 0;
}

/* When the next sync round is due (<= now: at once), or -1: none wanted. */
static int64_t tdue(tstate_t *t, int64_t now)
{
    tq_journal_t *j = t->j;
    int dirty = tdirty(t);
    if (j->mode == TQ_FSYNC_INTERVAL && dirty && t->timer < 0)
        t->timer = now + j->interval_ms; /* the first write after a sync */
    int64_t due = -1;
    if (t->force || (t->drop_pending && (t->durable < t->drop_lsn || dirty)) ||
        (j->mode == TQ_FSYNC_ALWAYS && dirty))
        due = now;
    else if (j->mode == TQ_FSYNC_INTERVAL && t->timer >= 0)
        due = t->timer;
    if (due >= 0 && t->failing && t->retry_at > due)
        due = t->retry_at;
    return due;
}

static void *sync_main(void *arg)
{
    tq_journal_t *j = arg;
    tstate_t t = {.j = j, .timer = -1};
    int zero = 0;
    t.pipe = zmq_socket(j->ctx, ZMQ_PAIR);
    if (!t.pipe)
        return NULL; /* the creator times out on its handshake */
    zmq_setsockopt(t.pipe, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(t.pipe, j->pipe_ep) < 0) {
        zmq_close(t.pipe);
        return NULL;
    }
    zmq_send(t.pipe, "ok", 2, 0);
    int stop = 0;
    while (!stop) {
        int64_t now = tq_mono_ms();
        int64_t due = tdue(&t, now);
        long timeout = due < 0 ? -1 : due <= now ? 0 : (long)(due - now);
        int pending = t.tell_durable || t.tell_failed || t.tell_dropped;
        zmq_pollitem_t item = {t.pipe, 0, (short)(ZMQ_POLLIN | (pending ? ZMQ_POLLOUT : 0)), 0};
        if (zmq_poll(&item, 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            tq_error("journal: sync thread poll failed: %s", zmq_strerror(errno));
            break;
        }
        /* Take everything that came meanwhile: one round serves it all. */
        jmsg_t m;
        int n;
        while (!stop && (n = zmq_recv(t.pipe, &m, sizeof m, ZMQ_DONTWAIT)) >= 0)
            if (n == (int)sizeof m)
                thandle(&t, &m, &stop);
        if (stop)
            break;
        now = tq_mono_ms();
        due = tdue(&t, now);
        if (due >= 0 && due <= now)
            tsync(&t);
        /* The header that says the journal starts at drop_seg must be
         * durable before anything older goes: nothing may be dirty. */
        if (t.drop_pending && t.durable >= t.drop_lsn && !tdirty(&t))
            tdrop(&t);
        tflush(&t);
    }
    if (stop) {
        /* A clean shutdown loses nothing, whatever the mode. */
        int err = tround(&t);
        if (err)
            tq_error("journal: last fdatasync failed: %s", strerror(err));
        else if (t.drop_pending && t.durable >= t.drop_lsn && !tdirty(&t))
            tdrop(&t);
    }
    for (size_t i = 0; i < j->nfiles; i++)
        if (j->files[i].rotated) /* the current segment is the loop's */
            close(j->files[i].fd);
    j->nfiles = 0;
    zmq_close(t.pipe);
    return NULL;
}

/* ---- scan ----------------------------------------------------------------- */

typedef struct {
    uint8_t *map;
    size_t size;
    int fd;
} segfile_t;

/* One segment file as the scan sees it. */
typedef struct {
    uint64_t num;
    char name[32];
    int fd;
    uint64_t size;
    uint32_t version;   /* 1 or 2 if the header is sound, else 0 */
    uint32_t hsize;     /* its header size */
    const char *bad;    /* why the header is not sound */
    uint32_t other;     /* a sound header of a version this master cannot read */
    uint64_t first;     /* v2: the oldest segment replay needs */
    uint64_t prev_size; /* v2: the size of segment num - 1 when it was closed */
    int has_prev;
    int torn_create;       /* the newest, its header cut short or zero: a crash
                            while it was created */
    int skip;              /* older than the journal's first: left over */
    int eligible;          /* may end in a torn record */
    uint64_t limit;        /* replay up to here */
    uint64_t cut_short;    /* bytes the next header says are missing at its end */
    uint64_t missing_from; /* v2: segments missing_from..num-1 are missing (0: none) */
} seg_t;

typedef struct {
    const tq_journal_cfg_t *cfg;
    tq_journal_replay_fn replay;
    void *arg;
    tq_journal_report_t *rep;
    tq_err_t *err;
    const char *dir;
    int dirfd;
} scan_t;

static int seg_map(seg_t *g, segfile_t *sf, const char *dir, tq_err_t *err)
{
    sf->map = NULL;
    sf->fd = g->fd;
    sf->size = (size_t)g->size;
    if (sf->size == 0)
        return 0;
    sf->map = mmap(NULL, sf->size, PROT_READ, MAP_PRIVATE, sf->fd, 0);
    if (sf->map == MAP_FAILED) {
        tq_err_set(err, 0, "journal: cannot map %s/%s: %s", dir, g->name, strerror(errno));
        sf->map = NULL;
        return -1;
    }
    madvise(sf->map, sf->size, MADV_SEQUENTIAL);
    return 0;
}

static void seg_unmap(segfile_t *sf)
{
    if (sf->map)
        munmap(sf->map, sf->size);
    sf->map = NULL;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Fill g's header fields from the got bytes at its start. */
static void parse_header(seg_t *g, const uint8_t *h, size_t got)
{
    g->version = 0;
    g->bad = NULL;
    if (got < 16) {
        g->bad = "segment header cut short";
        return;
    }
    if (memcmp(h, "TQJOURNL", 8) != 0) {
        g->bad = "bad segment magic";
        return;
    }
    uint32_t v = get32(h + 8);
    if (v == 1) {
        if (got < TQ_JOURNAL_HEADER_SIZE_V1)
            g->bad = "segment header cut short";
        else if (crc(0, h, 28) != get32(h + 28))
            g->bad = "segment header checksum mismatch";
        else if (get32(h + 12) != TQ_JOURNAL_HEADER_SIZE_V1)
            g->bad = "bad segment header size";
        else if (get64(h + 16) != g->num)
            g->bad = "segment number does not match the file name";
        else if (get32(h + 24) != 0)
            g->bad = "bad segment header";
        else {
            g->version = 1;
            g->hsize = TQ_JOURNAL_HEADER_SIZE_V1;
        }
        return;
    }
    if (v == 2) {
        uint32_t flags = got >= TQ_JOURNAL_HEADER_SIZE ? get32(h + 40) : 0;
        if (got < TQ_JOURNAL_HEADER_SIZE)
            g->bad = "segment header cut short";
        else if (crc(0, h, 60) != get32(h + 60))
            g->bad = "segment header checksum mismatch";
        else if (get32(h + 12) != TQ_JOURNAL_HEADER_SIZE)
            g->bad = "bad segment header size";
        else if (get64(h + 16) != g->num)
            g->bad = "segment number does not match the file name";
        else if ((flags & ~1u) || !all_zero(h + 44, 16) || get64(h + 24) > g->num ||
                 get64(h + 24) == 0 || ((flags & 1u) && get64(h + 24) == g->num))
            g->bad = "bad segment header";
        else {
            g->version = 2;
            g->hsize = TQ_JOURNAL_HEADER_SIZE;
            g->first = get64(h + 24);
            g->prev_size = get64(h + 32);
            g->has_prev = (flags & 1u) != 0;
        }
        return;
    }
    if ((got >= 32 && crc(0, h, 28) == get32(h + 28)) ||
        (got >= 64 && crc(0, h, 60) == get32(h + 60)))
        g->other = v;
    else
        g->bad = "segment header checksum mismatch";
}

/* 1 if a sound record starts at q (before limit); *next gets its end. */
static int rec_ok(const uint8_t *p, size_t q, size_t limit, size_t *next)
{
    if (limit - q < TQ_JOURNAL_RECORD_HEAD)
        return 0;
    uint32_t len = get32(p + q);
    if (len == 0 || len > TQ_JOURNAL_MAX_RECORD || len > limit - q - TQ_JOURNAL_RECORD_HEAD)
        return 0;
    if (crc(0, p + q + 8, len) != get32(p + q + 4))
        return 0;
    *next = q + TQ_JOURNAL_RECORD_HEAD + len;
    return 1;
}

/* Where the damage at pos ends: after the record at pos if its length is
 * sane and a sound record (or the end) follows it; else the first offset
 * after pos where a sound record starts that is followed by another or
 * by the end (two checksums: a false match is not a worry); else limit. */
static size_t damage_end(const uint8_t *p, size_t pos, size_t limit)
{
    size_t nx, nx2;
    if (limit - pos >= TQ_JOURNAL_RECORD_HEAD) {
        uint32_t len = get32(p + pos);
        if (len > 0 && len <= TQ_JOURNAL_MAX_RECORD &&
            len <= limit - pos - TQ_JOURNAL_RECORD_HEAD) {
            nx = pos + TQ_JOURNAL_RECORD_HEAD + len;
            if (nx == limit || rec_ok(p, nx, limit, &nx2))
                return nx;
        }
    }
    uint64_t budget = RESYNC_BUDGET;
    for (size_t q = pos + 1; q + TQ_JOURNAL_RECORD_HEAD <= limit; q++) {
        uint32_t len = get32(p + q);
        if (len == 0 || len > TQ_JOURNAL_MAX_RECORD || len > limit - q - TQ_JOURNAL_RECORD_HEAD)
            continue;
        if (budget < len)
            break;
        budget -= len;
        if (rec_ok(p, q, limit, &nx) && (nx == limit || rec_ok(p, nx, limit, &nx2)))
            return q;
    }
    return limit;
}

/* Damage at name/off: without repair, fail with the message; with it,
 * count and log it. Returns 0 or -1 (s->err filled). */
static int damage(scan_t *s, const char *name, uint64_t off, const char *why)
{
    if (!s->cfg->repair) {
        tq_err_set(s->err, 0,
                   "journal damaged: %s/%s at offset %" PRIu64
                   ": %s (start with --repair to replay what can be read and drop the rest)",
                   s->dir, name, off, why);
        return -1;
    }
    if (!s->rep->repaired) {
        s->rep->repaired = 1;
        tq_strlcpy(s->rep->damage_file, name, sizeof s->rep->damage_file);
        s->rep->damage_offset = off;
    }
    s->rep->damage_places++;
    tq_error("journal damaged: %s/%s at offset %" PRIu64 ": %s; --repair drops what cannot be read",
             s->dir, name, off, why);
    return 0;
}

/* Hand the callback what --repair drops at [pos, end): a damaged record
 * (its type and body as found) when there is room for one, else lost
 * bytes. n == 0 with p NULL: bytes missing, how many unknown. */
static int hand_dropped(scan_t *s, const char *name, const uint8_t *p, size_t pos, size_t end,
                        uint64_t missing)
{
    tq_err_t cberr = {0, ""};
    int rc;
    if (p && end - pos >= TQ_JOURNAL_RECORD_HEAD + 1 + 8) {
        s->rep->dropped_bytes += end - pos;
        s->rep->dropped_records++;
        rc = s->replay ? s->replay(s->arg, p[pos + 8], p + pos + 9,
                                   end - pos - TQ_JOURNAL_RECORD_HEAD - 1, TQ_JREC_DAMAGED, &cberr)
                       : 0;
    } else {
        uint64_t n = p ? end - pos : missing;
        s->rep->dropped_bytes += n;
        rc = s->replay ? s->replay(s->arg, 0, NULL, (size_t)n, TQ_JREC_LOST, &cberr) : 0;
    }
    if (rc < 0) {
        tq_err_set(s->err, 0, "journal replay: %s/%s at offset %zu: %s", s->dir, name, pos,
                   cberr.msg[0] ? cberr.msg : "record refused");
        return -1;
    }
    return 0;
}

/* Replay the records of g from pos to g->limit. A bad record of an
 * eligible segment that is torn by journal.h's rules is cut: *cut gets
 * its offset. Any other is damage. Returns 0, or -1 with s->err. */
static int scan_records(scan_t *s, seg_t *g, const segfile_t *sf, size_t pos, uint64_t *cut)
{
    const uint8_t *p = sf->map;
    size_t limit = (size_t)g->limit;
    tq_err_t cberr = {0, ""};
    *cut = UINT64_MAX;
    while (pos < limit) {
        size_t rem = limit - pos;
        const char *why = NULL;
        int tail = 0; /* torn kinds */
        uint32_t len = 0;
        if (rem < TQ_JOURNAL_RECORD_HEAD) {
            why = "record header cut short";
            tail = 1;
        } else {
            len = get32(p + pos);
            if (len == 0 || len > TQ_JOURNAL_MAX_RECORD) {
                why = "record length out of range";
            } else if (len > rem - TQ_JOURNAL_RECORD_HEAD) {
                why = "record runs past the end of the file";
                tail = 1;
            } else if (crc(0, p + pos + 8, len) != get32(p + pos + 4)) {
                why = "record checksum mismatch";
                tail = len == rem - TQ_JOURNAL_RECORD_HEAD;
            }
        }
        if (why) {
            if (g->eligible && (tail || all_zero(p + pos, rem))) {
                *cut = pos;
                s->rep->torn = 1;
                tq_strlcpy(s->rep->torn_file, g->name, sizeof s->rep->torn_file);
                s->rep->torn_offset = pos;
                tq_warn("journal: %s/%s at offset %zu: %s; cutting the torn tail (%zu bytes)",
                        s->dir, g->name, pos, why, rem);
                return 0;
            }
            if (damage(s, g->name, pos, why) < 0)
                return -1;
            size_t end = damage_end(p, pos, limit);
            if (hand_dropped(s, g->name, p, pos, end, 0) < 0)
                return -1;
            pos = end;
            continue;
        }
        s->rep->records++;
        if (s->replay &&
            s->replay(s->arg, p[pos + 8], p + pos + 9, len - 1, TQ_JREC_OK, &cberr) < 0) {
            tq_err_set(s->err, 0, "journal replay: %s/%s at offset %zu: %s", s->dir, g->name, pos,
                       cberr.msg[0] ? cberr.msg : "record refused");
            return -1;
        }
        pos += TQ_JOURNAL_RECORD_HEAD + len;
    }
    return 0;
}

/* Work out, from the headers alone, which segments are needed (first ..
 * newest), which are missing, cut short or grown, and which may end torn.
 * Returns the index of the first needed segment (n if none), or -1 with
 * s->err (a version this master cannot read). */
static long plan(scan_t *s, seg_t *g, size_t n, uint64_t *first)
{
    for (size_t i = 0; i < n; i++)
        if (g[i].other) {
            tq_err_set(s->err, 0,
                       "journal %s/%s has format version %" PRIu32
                       "; this master reads versions 1 and %u",
                       s->dir, g[i].name, g[i].other, TQ_JOURNAL_VERSION);
            return -1;
        }
    /* the newest file, cut while it was being created */
    if (n > 0 && g[n - 1].torn_create)
        n--;
    uint64_t f = 0;
    for (size_t i = 0; i < n; i++)
        if (g[i].version == 2 && g[i].first > f)
            f = g[i].first;
    if (f == 0)
        f = n ? g[0].num : 1; /* version 1 only: every segment, as before */
    *first = f;
    size_t start = 0;
    while (start < n && g[start].num < f)
        g[start++].skip = 1;
    for (size_t i = start; i < n; i++) {
        g[i].limit = g[i].size;
        if (g[i].version != 2)
            continue;
        if (i == start) /* it is the first or the first is missing */
            continue;
        if (g[i - 1].num != g[i].num - 1)
            g[i].missing_from = g[i - 1].num + 1;
        else if (g[i].has_prev) {
            seg_t *pg = &g[i - 1];
            if (pg->size < g[i].prev_size)
                pg->cut_short = g[i].prev_size - pg->size;
            else if (pg->size > g[i].prev_size)
                pg->limit = g[i].prev_size;
        }
    }
    /* Only the newest may end torn; version-1 segments followed only by
     * version-1 segments holding no records, as the previous release. */
    for (size_t i = n; i-- > start;) {
        if (i + 1 == n) {
            g[i].eligible = 1;
            continue;
        }
        if (g[i].version == 1 && g[i + 1].version == 1 && g[i + 1].eligible &&
            g[i + 1].size <= TQ_JOURNAL_HEADER_SIZE_V1)
            g[i].eligible = 1;
    }
    return (long)start;
}

/* Read the segments g[0..n) (headers already parsed), replay them, cut a
 * torn tail. Sets *first. Returns 0 or -1 with s->err. */
static int scan_all(scan_t *s, seg_t *g, size_t n, uint64_t *first)
{
    long start = plan(s, g, n, first);
    if (start < 0)
        return -1;
    size_t m = n > 0 && g[n - 1].torn_create ? n - 1 : n;
    /* the journal's first segment must be there */
    if ((size_t)start < m && g[start].num != *first) {
        char name[32];
        seg_name(name, sizeof name, *first);
        if (damage(s, name, 0,
                   "segment missing (a later segment's header says the journal "
                   "starts there)") < 0 ||
            hand_dropped(s, name, NULL, 0, 0, 0) < 0)
            return -1;
    }
    for (size_t i = (size_t)start; i < m; i++) {
        seg_t *g1 = &g[i];
        s->rep->segments++;
        if (g1->missing_from) {
            char name[32];
            seg_name(name, sizeof name, g1->missing_from);
            char why[160];
            snprintf(why, sizeof why,
                     "segment missing (%s names segment %" PRIu64 " as the one before it)",
                     g1->name, g1->num - 1);
            if (damage(s, name, 0, why) < 0 || hand_dropped(s, name, NULL, 0, 0, 0) < 0)
                return -1;
        }
        /* what the next header says about this one, before its records */
        char why[200];
        if (g1->cut_short && !s->cfg->repair) {
            snprintf(why, sizeof why,
                     "segment cut short: %" PRIu64 " bytes, but the next segment's header says it "
                     "had %" PRIu64 " when it was closed",
                     g1->size, g1->size + g1->cut_short);
            return damage(s, g1->name, g1->size, why);
        }
        if (g1->limit < g1->size && !s->cfg->repair) {
            snprintf(why, sizeof why,
                     "%" PRIu64 " bytes after the end the next segment's header gives it",
                     g1->size - g1->limit);
            return damage(s, g1->name, g1->limit, why);
        }
        /* one file open at a time: a journal may have many segments */
        g1->fd = openat(s->dirfd, g1->name, O_RDWR | O_CLOEXEC);
        if (g1->fd < 0) {
            tq_err_set(s->err, 0, "journal: cannot open %s/%s: %s", s->dir, g1->name,
                       strerror(errno));
            return -1;
        }
        segfile_t sf;
        if (seg_map(g1, &sf, s->dir, s->err) < 0)
            return -1;
        uint64_t cut = UINT64_MAX;
        size_t pos = g1->hsize;
        if (g1->bad) {
            if (damage(s, g1->name, 0, g1->bad) < 0) {
                seg_unmap(&sf);
                return -1;
            }
            /* where records might start again */
            pos = sf.size > 8 ? damage_end(sf.map, 0, (size_t)g1->limit) : (size_t)g1->limit;
            if (hand_dropped(s, g1->name, NULL, 0, 0, pos) < 0) {
                seg_unmap(&sf);
                return -1;
            }
        }
        int rc = scan_records(s, g1, &sf, pos, &cut);
        seg_unmap(&sf);
        if (rc < 0)
            return -1;
        if (g1->limit < g1->size) {
            snprintf(why, sizeof why,
                     "%" PRIu64 " bytes after the end the next segment's header gives it",
                     g1->size - g1->limit);
            if (damage(s, g1->name, g1->limit, why) < 0 ||
                hand_dropped(s, g1->name, NULL, 0, 0, g1->size - g1->limit) < 0)
                return -1;
        }
        if (g1->cut_short) {
            snprintf(why, sizeof why,
                     "segment cut short: %" PRIu64 " bytes, but the next segment's header says it "
                     "had %" PRIu64 " when it was closed",
                     g1->size, g1->size + g1->cut_short);
            if (damage(s, g1->name, g1->size, why) < 0 ||
                hand_dropped(s, g1->name, NULL, 0, 0, g1->cut_short) < 0)
                return -1;
        }
        if (cut != UINT64_MAX) {
            if (tq_jio.ftruncate(g1->fd, (off_t)cut) < 0 || tq_jio.fdatasync(g1->fd) < 0) {
                tq_err_set(s->err, 0, "journal: cannot truncate %s/%s: %s", s->dir, g1->name,
                           strerror(errno));
                return -1;
            }
            g1->size = cut;
        }
        close(g1->fd);
        g1->fd = -1;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segment numbers in dir, sorted. Returns 0 or -1 with err. */
static int list_segments(const char *dir, uint64_t **out, size_t *n, tq_err_t *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        tq_err_set(err, 0, "journal: cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seg;
        if (!seg_parse(de->d_name, &seg))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = tq_realloc(*out, cap * sizeof **out);
        }
        (*out)[(*n)++] = seg;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, cmp_u64);
    return 0;
}

/* write(2) all of buf through tq_jio. Returns bytes written; sets *err
 * (an errno) if it stopped short. */
static size_t write_all(int fd, const uint8_t *buf, size_t n, int *err)
{
    size_t done = 0;
    *err = 0;
    while (done < n) {
        ssize_t w = tq_jio.write(fd, buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            *err = errno ? errno : EIO;
            break;
        }
        if (w == 0) { /* no progress and no errno: the disk is full */
            *err = ENOSPC;
            break;
        }
        done += (size_t)w;
    }
    return done;
}

/* A version-2 header. has_prev: prev_size is the size of segment seg - 1. */
static void header_build(uint8_t *h, uint64_t seg, uint64_t first, uint64_t prev_size, int has_prev)
{
    memset(h, 0, TQ_JOURNAL_HEADER_SIZE);
    memcpy(h, "TQJOURNL", 8);
    put32(h + 8, TQ_JOURNAL_VERSION);
    put32(h + 12, TQ_JOURNAL_HEADER_SIZE);
    put64(h + 16, seg);
    put64(h + 24, first);
    put64(h + 32, has_prev ? prev_size : 0);
    put32(h + 40, has_prev ? 1u : 0u);
    put32(h + 60, crc(0, h, 60));
}

/* Create file name with a header for seg. Returns the fd or -1 with
 * errno (nothing left behind). */
static int seg_create_as(tq_journal_t *self, const char *name, int excl, uint64_t seg,
                         uint64_t first, uint64_t prev_size, int has_prev)
{
    int fd = openat(self->dirfd, name,
                    O_WRONLY | O_CREAT | (excl ? O_EXCL : O_TRUNC) | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    uint8_t h[TQ_JOURNAL_HEADER_SIZE];
    header_build(h, seg, first, prev_size, has_prev);
    int e;
    if (write_all(fd, h, sizeof h, &e) != sizeof h) {
        close(fd);
        unlinkat(self->dirfd, name, 0);
        errno = e;
        return -1;
    }
    return fd;
}

static int seg_create(tq_journal_t *self, uint64_t seg, uint64_t first, uint64_t prev_size,
                      int has_prev)
{
    char name[32];
    seg_name(name, sizeof name, seg);
    return seg_create_as(self, name, 1, seg, first, prev_size, has_prev);
}

/* ---- the reserve ------------------------------------------------------------ */

/* The reserve's size now: cfg's, at most an eighth of the file system. */
static uint64_t reserve_size(tq_journal_t *self)
{
    struct statvfs vs;
    uint64_t want = self->reserve_want;
    if (want && fstatvfs(self->dirfd, &vs) == 0) {
        uint64_t fs = (uint64_t)vs.f_blocks * vs.f_frsize;
        if (want > fs / 8)
            want = fs / 8;
    }
    return want;
}

/* Allocate the reserve. Returns 0, or -1 (nothing of it kept). */
static int reserve_take(tq_journal_t *self)
{
    if (self->resfd < 0)
        return 0;
    uint64_t want = reserve_size(self);
    if (want == 0 || self->reserve_held >= want)
        return 0;
    int rc = fallocate(self->resfd, 0, 0, (off_t)want);
    if (rc == 0) {
        self->reserve_held = want;
        return 0;
    }
    int e = errno;
    if (e == EOPNOTSUPP || e == ENOSYS) {
        tq_warn("journal: %s cannot preallocate (%s): no reserve for a full disk", self->dir,
                strerror(e));
        close(self->resfd);
        self->resfd = -1;
        unlinkat(self->dirfd, RESERVE_NAME, 0);
        return 0;
    }
    if (ftruncate(self->resfd, 0) == 0) /* a part of it would only take room */
        self->reserve_held = 0;
    errno = e;
    return -1;
}

/* The disk is full: give the reserve back. Returns 1 if bytes were freed. */
static int reserve_release(tq_journal_t *self)
{
    int had = self->resfd >= 0 && self->reserve_held > 0;
    if (had && ftruncate(self->resfd, 0) == 0) {
        tq_warn("journal: the disk is full: gave back the reserve of %.1f MiB; new tasks are "
                "refused until there is room again",
                self->reserve_held / 1048576.0);
        self->reserve_held = 0;
    } else {
        had = 0;
    }
    if (!self->low_space && self->resfd >= 0)
        self->low_space = 1;
    return had;
}

/* Low on space: take the reserve back once there is room for it twice. */
static void space_check(tq_journal_t *self, int64_t now)
{
    if (!self->low_space || now < self->next_space_ms)
        return;
    self->next_space_ms = now + JOURNAL_RETRY_MS;
    struct statvfs vs;
    if (fstatvfs(self->dirfd, &vs) < 0)
        return;
    uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize, want = reserve_size(self);
    if (avail < 2 * want + LOW_SPACE_SLACK)
        return;
    if (reserve_take(self) < 0)
        return;
    self->low_space = 0;
    tq_info("journal: room on the disk again (%.1f MiB free); reserve of %.1f MiB taken back, "
            "new tasks accepted",
            (avail - want) / 1048576.0, want / 1048576.0);
}

/* ---- open ------------------------------------------------------------------- */

static void segs_close(seg_t *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (g[i].fd >= 0)
            close(g[i].fd);
    free(g);
}

/* Open and read the header of every segment file. */
static seg_t *segs_load(tq_journal_t *self, const uint64_t *nums, size_t n, tq_err_t *err)
{
    seg_t *g = tq_calloc(n ? n : 1, sizeof *g);
    for (size_t i = 0; i < n; i++)
        g[i].fd = -1;
    for (size_t i = 0; i < n; i++) {
        seg_t *g1 = &g[i];
        g1->num = nums[i];
        seg_name(g1->name, sizeof g1->name, nums[i]);
        g1->fd = openat(self->dirfd, g1->name, O_RDWR | O_CLOEXEC);
        struct stat st;
        if (g1->fd < 0 || fstat(g1->fd, &st) < 0) {
            tq_err_set(err, 0, "journal: cannot open %s/%s: %s", self->dir, g1->name,
                       strerror(errno));
            segs_close(g, n);
            return NULL;
        }
        g1->size = (uint64_t)st.st_size;
        uint8_t h[TQ_JOURNAL_HEADER_SIZE];
        ssize_t got = pread(g1->fd, h, sizeof h, 0);
        if (got < 0) {
            tq_err_set(err, 0, "journal: cannot read %s/%s: %s", self->dir, g1->name,
                       strerror(errno));
            segs_close(g, n);
            return NULL;
        }
        close(g1->fd); /* opened again one at a time */
        g1->fd = -1;
        parse_header(g1, h, (size_t)got);
        g1->hsize = g1->version ? g1->hsize : TQ_JOURNAL_HEADER_SIZE_V1;
        if (i + 1 == n && g1->bad &&
            (strcmp(g1->bad, "segment header cut short") == 0 || all_zero(h, (size_t)got)))
            g1->torn_create = 1;
    }
    return g;
}

/* --repair: write the recovered state to a segment that needs no older
 * one (under a temporary name, renamed once durable), then move the old
 * segments to damaged-TIME/. Returns 0 or -1 with err. */
static int repair_checkpoint(tq_journal_t *self, const tq_journal_cfg_t *cfg, void *arg, seg_t *g,
                             size_t n, uint64_t num, tq_journal_report_t *rep, tq_err_t *err)
{
    if (cfg->checkpoint)
        cfg->checkpoint(arg, self);
    int fd = seg_create_as(self, CHECKPOINT_TMP, 0, num, num, 0, 0);
    int e = 0;
    if (fd >= 0 && write_all(fd, self->batch, self->blen, &e) != self->blen) {
        close(fd);
        fd = -1;
        errno = e;
    }
    char name[32];
    seg_name(name, sizeof name, num);
    if (fd < 0 || tq_jio.fdatasync(fd) < 0 ||
        renameat(self->dirfd, CHECKPOINT_TMP, self->dirfd, name) < 0 ||
        tq_jio.fsync_dir(self->dirfd) < 0) {
        tq_err_set(err, 0, "journal: cannot write the repaired journal to %s/%s: %s", self->dir,
                   name, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlinkat(self->dirfd, CHECKPOINT_TMP, 0);
        return -1;
    }
    self->fd = fd;
    self->seg = num;
    self->first = num;
    self->seg_size = TQ_JOURNAL_HEADER_SIZE + self->blen;
    self->appended = self->written = self->durable = self->blen;
    self->blen = 0;
    /* The old segments are superseded now: keep them for a look. */
    char sub[64];
    snprintf(sub, sizeof sub, "damaged-%lld", (long long)time(NULL));
    if (mkdirat(self->dirfd, sub, 0700) < 0 && errno != EEXIST) {
        tq_error("journal: cannot create %s/%s: %s; the damaged segments are deleted at the "
                 "next start",
                 self->dir, sub, strerror(errno));
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char to[128];
        snprintf(to, sizeof to, "%s/%s", sub, g[i].name);
        if (g[i].num < num && renameat(self->dirfd, g[i].name, self->dirfd, to) < 0)
            tq_error("journal: cannot move %s/%s to %s: %s", self->dir, g[i].name, sub,
                     strerror(errno));
    }
    tq_jio.fsync_dir(self->dirfd);
    tq_strlcpy(rep->moved_to, sub, sizeof rep->moved_to);
    return 0;
}

/* The segment to write to after a clean scan: a new one after the newest,
 * its header naming the newest's size; on a full disk the reserve is
 * given back first, and failing that the newest (version 2) segment is
 * appended to. Returns 0 or -1 with err. */
static int open_writer(tq_journal_t *self, seg_t *g, size_t m, uint64_t first, tq_err_t *err)
{
    seg_t *last = m ? &g[m - 1] : NULL;
    if (last && last->num == UINT64_MAX) {
        tq_err_set(err, 0, "journal: segment numbers exhausted in %s", self->dir);
        return -1;
    }
    uint64_t num = last ? last->num + 1 : 1;
    /* What the previous master wrote may not be durable yet: it must be
     * before a newer segment names its size. */
    for (size_t i = 0; i < m; i++) {
        if (g[i].skip)
            continue;
        int fd = openat(self->dirfd, g[i].name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || tq_jio.fdatasync(fd) < 0) {
            tq_err_set(err, 0, "journal: fdatasync of %s/%s failed: %s", self->dir, g[i].name,
                       strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    int has_prev = last && !last->skip && last->num >= first;
    int fd = seg_create(self, num, has_prev ? first : num, has_prev ? last->size : 0, has_prev);
    if (fd < 0 && errno == ENOSPC && reserve_release(self))
        fd = seg_create(self, num, has_prev ? first : num, has_prev ? last->size : 0, has_prev);
    if (fd >= 0) {
        self->fd = fd;
        self->seg = num;
        self->first = has_prev ? first : num;
        self->seg_size = TQ_JOURNAL_HEADER_SIZE;
        return 0;
    }
    int e = errno;
    if (e == ENOSPC && has_prev && last->version == 2) {
        fd = openat(self->dirfd, last->name, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            tq_warn("journal: no room for a new segment in %s: appending to %s", self->dir,
                    last->name);
            self->fd = fd;
            self->seg = last->num;
            self->first = first;
            self->seg_size = last->size;
            self->low_space = 1;
            return 0;
        }
        e = errno;
    }
    tq_err_set(err, 0, "journal: cannot create a segment in %s: %s", self->dir, strerror(e));
    return -1;
}

tq_journal_t *tq_journal_open(const tq_journal_cfg_t *cfg, tq_journal_replay_fn replay, void *arg,
                              tq_journal_report_t *report, tq_err_t *err)
{
    static unsigned counter;
    tq_journal_report_t dummy;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!cfg || !cfg->data_dir || !cfg->zmq_ctx) {
        tq_err_set(err, 0, "journal: no data directory or ZeroMQ context");
        return NULL;
    }
    if (cfg->mode == TQ_FSYNC_INTERVAL && cfg->interval_ms <= 0) {
        tq_err_set(err, 0, "journal: the fsync interval must be positive");
        return NULL;
    }
    tq_journal_t *self = tq_calloc(1, sizeof *self);
    self->dirfd = -1;
    self->fd = -1;
    self->resfd = -1;
    self->mode = cfg->mode;
    self->interval_ms = cfg->interval_ms;
    self->ctx = cfg->zmq_ctx;
    self->reserve_want = cfg->reserve;
    uint64_t *nums = NULL;
    size_t n = 0;
    seg_t *g = NULL;
    if (snprintf(self->dir, sizeof self->dir, "%s/journal", cfg->data_dir) >=
        (int)sizeof self->dir) {
        tq_err_set(err, 0, "journal: data directory path too long");
        goto fail;
    }
    if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
        tq_err_set(err, 0, "journal: cannot create %s: %s", cfg->data_dir, strerror(errno));
        goto fail;
    }
    if (mkdir(self->dir, 0700) < 0 && errno != EEXIST) {
        tq_err_set(err, 0, "journal: cannot create %s: %s", self->dir, strerror(errno));
        goto fail;
    }
    self->dirfd = open(self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dirfd < 0) {
        tq_err_set(err, 0, "journal: cannot open %s: %s", self->dir, strerror(errno));
        goto fail;
    }
    if (cfg->reserve > 0) {
        self->resfd = openat(self->dirfd, RESERVE_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (self->resfd >= 0 && fstat(self->resfd, &st) == 0)
            self->reserve_held = (uint64_t)st.st_blocks * 512u;
        else if (self->resfd < 0)
            tq_warn("journal: cannot open %s/%s: %s: no reserve for a full disk", self->dir,
                    RESERVE_NAME, strerror(errno));
    } else {
        unlinkat(self->dirfd, RESERVE_NAME, 0); /* one from an earlier run */
    }
    unlinkat(self->dirfd, CHECKPOINT_TMP, 0); /* a --repair that did not finish */
    if (list_segments(self->dir, &nums, &n, err) < 0)
        goto fail;
    g = segs_load(self, nums, n, err);
    if (!g)
        goto fail;
    scan_t s = {cfg, replay, arg, report, err, self->dir, self->dirfd};
    uint64_t first = 1;
    if (scan_all(&s, g, n, &first) < 0)
        goto fail;
    size_t m = n;
    if (m > 0 && g[m - 1].torn_create) {
        /* a crash while the newest segment was being created */
        m--;
        report->torn = 1;
        tq_strlcpy(report->torn_file, g[m].name, sizeof report->torn_file);
        report->torn_offset = 0;
        tq_warn("journal: %s/%s: %s; deleting it (a crash while it was created)", self->dir,
                g[m].name, g[m].bad);
        if (unlinkat(self->dirfd, g[m].name, 0) < 0) {
            tq_err_set(err, 0, "journal: cannot delete %s/%s: %s", self->dir, g[m].name,
                       strerror(errno));
            goto fail;
        }
    }
    if (report->repaired) {
        uint64_t num = m ? g[m - 1].num + 1 : 1;
        if (repair_checkpoint(self, cfg, arg, g, m, num, report, err) < 0)
            goto fail;
    } else if (open_writer(self, g, m, first, err) < 0) {
        goto fail;
    }
    if (tq_jio.fsync_dir(self->dirfd) < 0) {
        tq_err_set(err, 0, "journal: fsync of %s failed: %s", self->dir, strerror(errno));
        goto fail;
    }
    /* Left over from a compaction whose deletes did not finish. */
    uint64_t bytes = 0;
    for (size_t i = 0; i < m; i++) {
        if (g[i].skip || g[i].num < self->first) {
            if (report->repaired)
                continue; /* moved */
            if (unlinkat(self->dirfd, g[i].name, 0) == 0)
                report->left_over++;
            continue;
        }
        if (g[i].num != self->seg)
            bytes += g[i].size;
    }
    self->bytes = bytes + self->seg_size;
    report->bytes = self->bytes;
    if (reserve_take(self) < 0 || self->low_space) {
        self->low_space = 1;
        report->low_space = 1;
        tq_warn("journal: not enough room in %s for the reserve of %.1f MiB: new tasks are refused "
                "until there is",
                self->dir, reserve_size(self) / 1048576.0);
    }
    segs_close(g, n);
    g = NULL;
    free(nums);
    nums = NULL;

    /* The sync thread: bind our end, start it, wait for its hello. */
    snprintf(self->pipe_ep, sizeof self->pipe_ep, "inproc://taskq-journal-%u-%p",
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED), (void *)self);
    int zero = 0;
    self->pipe = zmq_socket(self->ctx, ZMQ_PAIR);
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe, self->pipe_ep) < 0) {
        tq_err_set(err, 0, "journal: cannot create the sync pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    tfile_add(self, self->fd, self->written);
    if (pthread_create(&self->thread, NULL, sync_main, self) != 0) {
        tq_err_set(err, 0, "journal: cannot start the sync thread");
        goto fail;
    }
    /* Its "ok", or its end: a thread that cannot make or connect its
     * socket returns at once, one that can sends "ok". So wait for one of
     * the two, however long (a loaded machine), and never take a signal
     * that interrupts the wait (EINTR) for an answer: joining a thread
     * that is about to say "ok" would wait forever (the journal fuzzer
     * found that: libFuzzer's SIGALRM). */
    int rcvtimeo = 100;
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    int answered = 0;
    for (;;) {
        char hello[8];
        int hn = zmq_recv(self->pipe, hello, sizeof hello, 0);
        if (hn == 2 && memcmp(hello, "ok", 2) == 0) {
            answered = 1;
            break;
        }
        if (pthread_tryjoin_np(self->thread, NULL) == 0)
            break; /* it ended without a socket */
    }
    int none = -1;
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &none, sizeof none);
    if (!answered) {
        tq_err_set(err, 0, "journal: the sync thread could not connect its pipe");
        goto fail;
    }
    self->thread_started = 1;
    return self;
fail:
    if (g)
        segs_close(g, n);
    free(nums);
    if (self->pipe)
        zmq_close(self->pipe);
    if (self->fd >= 0)
        close(self->fd);
    if (self->resfd >= 0)
        close(self->resfd);
    if (self->dirfd >= 0)
        close(self->dirfd);
    free(self->batch);
    free(self->files);
    free(self);
    return NULL;
}

/* ---- write path ------------------------------------------------------------ */

static void write_failed(tq_journal_t *self, int e, int64_t now)
{
    self->sync_stats.errors++;
    if (self->write_err != e)
        tq_error("journal: write to %s failed: %s", self->dir, strerror(e));
    self->write_err = e;
    self->write_clear_armed = 0;
    self->next_retry_ms = now + JOURNAL_RETRY_MS;
}

/* A write went through: the write failure clears once a sync covers it
 * (at once in mode off, where no sync is coming). */
static void write_ok(tq_journal_t *self)
{
    if (!self->write_err || self->write_clear_armed)
        return; /* armed once: later writes must not push the goal away */
    if (self->mode == TQ_FSYNC_OFF || self->durable >= self->written) {
        self->write_err = 0;
        tq_info("journal: writing again");
        return;
    }
    self->write_clear_armed = 1;
    self->write_clear_lsn = self->written;
}

/* Tell the thread everything written so far (writes tell it only once
 * per sync round): before a forced sync, a drop, or the stop. */
static void tell_written(tq_journal_t *self)
{
    if (self->written == 0)
        return;
    tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
    self->told_pending = 1;
}

static void rotation_start(tq_journal_t *self, uint64_t first)
{
    self->rot_pending = 1;
    self->rot_sync_asked = 0;
    self->rot_lsn = self->appended;
    self->rot_first = first;
}

/* The old segment holds everything up to rot_lsn: once that is durable,
 * create the next one. Returns 0 (done, or still waiting for the sync)
 * or -1 with the journal failed. */
static int rotation_finish(tq_journal_t *self, int64_t now)
{
    if (self->durable < self->rot_lsn) {
        if (!self->rot_sync_asked) {
            tell_written(self);
            tell(self, M_SYNC, -1, 0, 0, 0);
            self->rot_sync_asked = 1;
        }
        return 0;
    }
    int fd = seg_create(self, self->seg + 1, self->rot_first, self->seg_size, 1);
    if (fd < 0 && errno == ENOSPC && reserve_release(self))
        fd = seg_create(self, self->seg + 1, self->rot_first, self->seg_size, 1);
    if (fd < 0) {
        write_failed(self, errno ? errno : EIO, now);
        return -1;
    }
    /* The old fd is the thread's now: it syncs, then closes it. */
    tell(self, M_ROTATED, self->fd, fd, self->written, 0);
    self->fd = fd;
    self->seg++;
    self->first = self->rot_first;
    self->seg_size = TQ_JOURNAL_HEADER_SIZE;
    self->bytes += TQ_JOURNAL_HEADER_SIZE;
    self->rot_pending = 0;
    if (self->drop_stage == 2) {
        /* the header naming drop_seg as the first goes with this sync */
        self->drop_stage = 0;
        tell(self, M_DROP, -1, 0, self->drop_seg, self->written);
    } else if (self->drop_stage == 1) {
        self->drop_stage = 2;
        rotation_start(self, self->drop_seg);
    }
    return 0;
}

static void batch_release(tq_journal_t *self)
{
    free(self->batch);
    self->batch = NULL;
    self->bcap = 0;
}

static int write_batch(tq_journal_t *self, int64_t now)
{
    outq_flush(self);
    for (;;) {
        /* a record never spans two segments: the old one ends at rot_lsn */
        size_t n = self->rot_pending ? (size_t)(self->rot_lsn - self->written) : self->blen;
        if (n > JOURNAL_BATCH_KEEP)
            self->batch_big_ms = now;
        if (n > 0) {
            int e;
            size_t done = write_all(self->fd, self->batch, n, &e);
            if (done < n && e == ENOSPC && reserve_release(self)) {
                int e2;
                done += write_all(self->fd, self->batch + done, n - done, &e2);
                e = e2;
            }
            if (done > 0) {
                self->written += done;
                self->bytes += done;
                self->seg_size += done;
                /* One message per sync round, not per write: a wake-up of
                 * the sync thread per loop pass costs more than the write.
                 * What is written meanwhile is told when the round's answer
                 * comes (tq_journal_on_sync): group commit. */
                if (!self->told_pending) {
                    tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
                    self->told_pending = 1;
                }
                /* Keep the exact rest: appended at the file end next time,
                 * the file stays a clean prefix of the record stream. */
                memmove(self->batch, self->batch + done, self->blen - done);
                self->blen -= done;
            }
            if (done < n) {
                write_failed(self, e, now);
                return -1;
            }
        }
        if (!self->rot_pending)
            break;
        if (rotation_finish(self, now) < 0)
            return -1;
        if (self->rot_pending)
            break; /* waits for the old segment's sync */
    }
    if (self->blen == 0 && self->bcap > JOURNAL_BATCH_HOLD)
        batch_release(self);
    write_ok(self);
    return 0;
}

uint64_t tq_journal_append(tq_journal_t *self, uint8_t type, const void *part1, size_t len1,
                           const void *part2, size_t len2)
{
    TQ_ASSERT(len1 <= TQ_JOURNAL_MAX_RECORD && len2 <= TQ_JOURNAL_MAX_RECORD &&
              1 + len1 + len2 <= TQ_JOURNAL_MAX_RECORD);
    size_t len = 1 + len1 + len2, need = TQ_JOURNAL_RECORD_HEAD + len;
    if (self->bcap - self->blen < need) {
        size_t cap = self->bcap ? self->bcap : 64 * 1024;
        while (cap - self->blen < need && need <= JOURNAL_BATCH_KEEP)
            cap *= 2;
        if (cap - self->blen < need)
            cap = self->blen + need; /* a big record: room for it, not twice it */
        self->batch = tq_realloc(self->batch, cap);
        self->bcap = cap;
    }
    uint8_t *p = self->batch + self->blen;
    put32(p, (uint32_t)len);
    p[8] = type;
    if (len1)
        memcpy(p + 9, part1, len1);
    if (len2)
        memcpy(p + 9 + len1, part2, len2);
    put32(p + 4, crc(0, p + 8, len));
    self->blen += need;
    self->appended += need;
    return self->appended;
}

int tq_journal_write(tq_journal_t *self)
{
    int64_t now = tq_mono_ms();
    if (self->write_err && self->blen > 0 && now < self->next_retry_ms) {
        outq_flush(self);
        return -1;
    }
    return write_batch(self, now);
}

void tq_journal_tick(tq_journal_t *self, int64_t now_ms)
{
    outq_flush(self);
    if (self->write_err && now_ms >= self->next_retry_ms)
        write_batch(self, now_ms);
    if (self->blen == 0 && self->bcap > JOURNAL_BATCH_KEEP &&
        now_ms - self->batch_big_ms >= JOURNAL_BATCH_IDLE_MS)
        batch_release(self);
    space_check(self, now_ms);
}

uint64_t tq_journal_appended(const tq_journal_t *self) { return self->appended; }
uint64_t tq_journal_written(const tq_journal_t *self) { return self->written; }
uint64_t tq_journal_durable(const tq_journal_t *self) { return self->durable; }
uint64_t tq_journal_bytes(const tq_journal_t *self) { return self->bytes; }
uint64_t tq_journal_segment(const tq_journal_t *self) { return self->seg; }
size_t tq_journal_batch_capacity(const tq_journal_t *self) { return self->bcap; }
void *tq_journal_socket(tq_journal_t *self) { return self->pipe; }
uint64_t tq_journal_socket_ops(const tq_journal_t *self) { return self->pipe_ops; }

int tq_journal_failed(const tq_journal_t *self)
{
    return self->write_err   ? self->write_err
           : self->sync_err  ? self->sync_err
           : self->low_space ? ENOSPC
                             : 0;
}

int tq_journal_low_space(const tq_journal_t *self) { return self->low_space; }

void tq_journal_sync(tq_journal_t *self)
{
    tell_written(self);
    tell(self, M_SYNC, -1, 0, 0, 0);
}

const uint64_t tq_journal_sync_le_us[TQ_JOURNAL_SYNC_BUCKETS] = {100,     250,    500,    1000,
                                                                 2500,    5000,   10000,  25000,
                                                                 50000,   100000, 250000, 500000,
                                                                 1000000, 5000000};

/* n sync rounds took us µs in all: n observations of their mean (one
 * round per report, unless the loop's inbox was full meanwhile). */
static void sync_observe(tq_journal_sync_stats_t *st, uint64_t n, uint64_t us)
{
    if (n == 0)
        return;
    uint64_t mean = us / n;
    for (size_t i = 0; i < TQ_JOURNAL_SYNC_BUCKETS; i++)
        if (mean <= tq_journal_sync_le_us[i]) {
            st->bucket[i] += n;
            break;
        }
    st->count += n;
    st->sum_us += us;
}

void tq_journal_sync_stats(const tq_journal_t *self, tq_journal_sync_stats_t *out)
{
    *out = self->sync_stats;
}

int tq_journal_on_sync(tq_journal_t *self)
{
    int moved = 0;
    self->pipe_ops++;
    jmsg_t m;
    int n;
    while ((n = zmq_recv(self->pipe, &m, sizeof m, ZMQ_DONTWAIT)) >= 0 || errno == EINTR) {
        if (n != (int)sizeof m)
            continue;
        switch (m.kind) {
        case M_DURABLE:
            sync_observe(&self->sync_stats, m.fd2 > 0 ? (uint64_t)m.fd2 : 0, m.b);
            if (self->sync_err)
                tq_info("journal: syncing again");
            self->sync_err = 0;
            if (m.a > self->durable) {
                self->durable = m.a;
                moved = 1;
            }
            self->told_pending = 0;
            if (self->write_err && self->write_clear_armed &&
                self->durable >= self->write_clear_lsn) {
                self->write_err = 0;
                tq_info("journal: writing again");
            }
            break;
        case M_FAILED:
            self->sync_stats.errors++;
            self->sync_err = m.fd ? m.fd : EIO;
            self->told_pending = 0;
            break;
        case M_DROPPED:
            self->drop_pending = 0;
            self->bytes = self->bytes >= m.a ? self->bytes - m.a : 0;
            moved = 1;
            break;
        default: break;
        }
    }
    /* a rotation waiting for the old segment's sync */
    if (self->rot_pending && self->written == self->rot_lsn && self->durable >= self->rot_lsn &&
        !(self->write_err && tq_mono_ms() < self->next_retry_ms))
        write_batch(self, tq_mono_ms());
    if (!self->told_pending && self->written > self->durable && self->mode != TQ_FSYNC_OFF) {
        tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
        self->told_pending = 1;
    }
    outq_flush(self);
    return moved;
}

uint64_t tq_journal_rotate(tq_journal_t *self)
{
    if (self->rot_pending)
        return self->seg + 1; /* what is appended from now goes there anyway */
    if (self->seg >= UINT64_MAX - 2)
        return 0;
    rotation_start(self, self->first);
    write_batch(self, tq_mono_ms());
    return self->rot_pending ? self->seg + 1 : self->seg;
}

void tq_journal_drop_before(tq_journal_t *self, uint64_t seg)
{
    uint64_t cur = self->seg + (self->rot_pending ? 1u : 0u);
    if (seg > cur) /* never the segment being written */
        seg = cur;
    self->drop_pending = 1;
    self->drop_seg = seg;
    if (self->rot_pending) {
        self->drop_stage = 1; /* after the rotation under way */
        return;
    }
    self->drop_stage = 2;
    rotation_start(self, seg);
    write_batch(self, tq_mono_ms());
}

int tq_journal_drop_pending(const tq_journal_t *self) { return self->drop_pending; }

void tq_journal_destroy(tq_journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_journal_t *self = *self_p;
    write_batch(self, tq_mono_ms());
    if (self->rot_pending && self->written == self->rot_lsn && self->thread_started) {
        /* A rotation waiting for its sync: wait for it here (the loop is
         * done), so that what follows it is written too. */
        int64_t deadline = tq_mono_ms() + 10000;
        while (self->rot_pending && !self->write_err && tq_mono_ms() < deadline) {
            zmq_pollitem_t item = {self->pipe, 0, ZMQ_POLLIN, 0};
            zmq_poll(&item, 1, 100);
            tq_journal_on_sync(self);
        }
    }
    if (self->blen > 0)
        tq_error("journal: %zu bytes could not be written at close: %s", self->blen,
                 strerror(self->write_err ? self->write_err : EAGAIN));
    if (self->thread_started) {
        tell_written(self);
        jmsg_t stop = {.kind = M_STOP};
        outq_push(self, &stop);
        /* The thread may be waiting for room in our inbox: keep reading
         * it while the stop message waits for room in the thread's. */
        for (;;) {
            outq_flush(self);
            if (self->outq_len == 0)
                break;
            tq_journal_on_sync(self);
            zmq_pollitem_t item = {self->pipe, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0};
            zmq_poll(&item, 1, 100);
        }
        pthread_join(self->thread, NULL);
    }
    zmq_close(self->pipe);
    close(self->fd);
    if (self->resfd >= 0)
        close(self->resfd);
    close(self->dirfd);
    free(self->batch);
    free(self->outq);
    free(self->files);
    free(self);
    *self_p = NULL;
}

const char *tq_fsync_mode_name(tq_fsync_mode_t m)
{
    switch (m) {
    case TQ_FSYNC_ALWAYS: return "always";
    case TQ_FSYNC_INTERVAL: return "interval";
    case TQ_FSYNC_OFF: return "off";
    }
    return "?";
}

int tq_fsync_mode_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "always") == 0)
        return TQ_FSYNC_ALWAYS;
    if (strcmp(s, "interval") == 0)
        return TQ_FSYNC_INTERVAL;
    if (strcmp(s, "off") == 0)
        return TQ_FSYNC_OFF;
    return -1;
}
