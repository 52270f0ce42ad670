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
#include <unistd.h>
#include <zlib.h>
#include <zmq.h>

#include "tq_log.h"
#include "tq_util.h"

/* A failed write is tried again at most this often. */
#define JOURNAL_RETRY_MS 100
/* A failed fdatasync is tried again by the thread this often. */
#define JOURNAL_SYNC_RETRY_MS 100
/* The batch buffer shrinks back to this when it is empty (a big record
 * should not pin its memory for the rest of the run). */
#define JOURNAL_BATCH_KEEP (1u << 20)
/* "SSSSSSSSSSSSSSSS.tqj" */
#define SEG_NAME_LEN 20

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
    M_DURABLE,     /* thread: durable = a */
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

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint32_t crc(uint32_t c, const void *p, size_t n) {
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

    int fd;       /* current segment, O_APPEND */
    uint64_t seg; /* its number */
    uint8_t *batch; /* appended, not yet written (a failed write's rest first) */
    size_t blen, bcap;
    uint64_t appended, written, durable;
    uint64_t bytes;

    int write_err;        /* errno of the write failure that stands */
    int write_clear_armed; /* a write succeeded since: clears at durable >= */
    uint64_t write_clear_lsn;
    int64_t next_retry_ms;
    int sync_err;
    int drop_pending;     /* a drop_before not yet reported done */
    int told_pending;     /* an M_WRITTEN the thread has not answered yet */

    jmsg_t *outq; /* messages the thread's full inbox did not take yet */
    size_t outq_head, outq_len, outq_cap;

    /* sync thread only */
    tfile_t *files;
    size_t nfiles, capfiles;
};

static void seg_name(char *buf, size_t size, uint64_t seg) {
    snprintf(buf, size, "%016" PRIx64 ".tqj", seg);
}

/* 1 and the number if name is a segment file name (lowercase hex). */
static int seg_parse(const char *name, uint64_t *seg) {
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
static void outq_push(tq_journal_t *self, const jmsg_t *m) {
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
static void outq_flush(tq_journal_t *self) {
    while (self->outq_len > 0) {
        if (zmq_send(self->pipe, &self->outq[self->outq_head], sizeof(jmsg_t),
                     ZMQ_DONTWAIT) < 0) {
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

static void tell(tq_journal_t *self, uint32_t kind, int fd, int fd2, uint64_t a, uint64_t b) {
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
    int force;      /* a sync was asked for (M_SYNC, stop) */
    int failing;    /* the last round failed */
    int last_err;
    int64_t retry_at;
    int64_t timer;  /* interval mode: sync due at, or -1 */
    uint64_t drop_seg, drop_lsn;
    int drop_pending;
    /* Replies not sent yet (the loop's inbox was full). They are state,
     * not events: the latest durable, the latest failure, freed bytes. */
    int tell_durable, tell_failed, tell_dropped;
    uint64_t freed;
} tstate_t;

static int tsend(tstate_t *t, uint32_t kind, int32_t e, uint64_t a) {
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
static void tflush(tstate_t *t) {
    if (t->tell_durable && tsend(t, M_DURABLE, 0, t->durable) == 0)
        t->tell_durable = 0;
    if (!t->tell_durable && t->tell_failed && tsend(t, M_FAILED, t->last_err, 0) == 0)
        t->tell_failed = 0;
    if (t->tell_dropped && tsend(t, M_DROPPED, 0, t->freed) == 0) {
        t->tell_dropped = 0;
        t->freed = 0;
    }
}

static tfile_t *tfile_find(tq_journal_t *j, int fd) {
    for (size_t i = 0; i < j->nfiles; i++)
        if (j->files[i].fd == fd)
            return &j->files[i];
    return NULL;
}

static void tfile_add(tq_journal_t *j, int fd, uint64_t written) {
    if (j->nfiles == j->capfiles) {
        j->capfiles = j->capfiles ? j->capfiles * 2 : 8;
        j->files = tq_realloc(j->files, j->capfiles * sizeof *j->files);
    }
    j->files[j->nfiles++] = (tfile_t){.fd = fd, .written = written, .dirty = 1};
}

static int tdirty(const tstate_t *t) {
    if (t->dir_dirty)
        return 1;
    for (size_t i = 0; i < t->j->nfiles; i++)
        if (t->j->files[i].dirty || t->j->files[i].rotated)
            return 1;
    return 0;
}

/* fdatasync the directory and every dirty file in order, closing rotated
 * ones. durable moves as files are done. Returns 0 or an errno. */
static int tround(tstate_t *t) {
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
static void tdrop(tstate_t *t) {
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

static void thandle(tstate_t *t, const jmsg_t *m, int *stop) {
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
    case M_SYNC:
        t->force = 1;
        break;
    case M_DROP:
        if (!t->drop_pending || m->a > t->drop_seg)
            t->drop_seg = m->a;
        if (!t->drop_pending || m->b > t->drop_lsn)
            t->drop_lsn = m->b;
        t->drop_pending = 1;
        break;
    case M_STOP:
        *stop = 1;
        break;
    default:
        break;
    }
}

/* One sync round now; remember the outcome for the loop. */
static void tsync(tstate_t *t) {
    int err = tround(t);
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
static int64_t tdue(tstate_t *t, int64_t now) {
    tq_journal_t *j = t->j;
    int dirty = tdirty(t);
    if (j->mode == TQ_FSYNC_INTERVAL && dirty && t->timer < 0)
        t->timer = now + j->interval_ms; /* the first write after a sync */
    int64_t due = -1;
    if (t->force || (t->drop_pending && t->durable < t->drop_lsn) ||
        (j->mode == TQ_FSYNC_ALWAYS && dirty))
        due = now;
    else if (j->mode == TQ_FSYNC_INTERVAL && t->timer >= 0)
        due = t->timer;
    if (due >= 0 && t->failing && t->retry_at > due)
        due = t->retry_at;
    return due;
}

static void *sync_main(void *arg) {
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
        if (t.drop_pending && t.durable >= t.drop_lsn)
            tdrop(&t);
        tflush(&t);
    }
    if (stop) {
        /* A clean shutdown loses nothing, whatever the mode. */
        int err = tround(&t);
        if (err)
            tq_error("journal: last fdatasync failed: %s", strerror(err));
        else if (t.drop_pending && t.durable >= t.drop_lsn)
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
    const tq_journal_cfg_t *cfg;
    tq_journal_replay_fn replay;
    void *arg;
    tq_journal_report_t *rep;
    char *err;
    size_t errlen;
    const char *dir;
} scan_t;

typedef struct {
    uint8_t *map;
    size_t size;
    int fd;
} segfile_t;

static int seg_map(const char *path, segfile_t *sf, char *err, size_t errlen) {
    sf->map = NULL;
    sf->size = 0;
    sf->fd = open(path, O_RDWR | O_CLOEXEC);
    if (sf->fd < 0) {
        snprintf(err, errlen, "journal: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(sf->fd, &st) < 0) {
        snprintf(err, errlen, "journal: cannot stat %s: %s", path, strerror(errno));
        close(sf->fd);
        return -1;
    }
    sf->size = (size_t)st.st_size;
    if (sf->size == 0)
        return 0;
    sf->map = mmap(NULL, sf->size, PROT_READ, MAP_PRIVATE, sf->fd, 0);
    if (sf->map == MAP_FAILED) {
        snprintf(err, errlen, "journal: cannot map %s: %s", path, strerror(errno));
        sf->map = NULL;
        close(sf->fd);
        return -1;
    }
    madvise(sf->map, sf->size, MADV_SEQUENTIAL);
    return 0;
}

static void seg_unmap(segfile_t *sf) {
    if (sf->map)
        munmap(sf->map, sf->size);
    sf->map = NULL;
    if (sf->fd >= 0)
        close(sf->fd);
    sf->fd = -1;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Check a segment header. Returns NULL or the reason it is bad; sets
 * *version_bad for a sound header of another version. */
static const char *check_header(const uint8_t *p, size_t size, uint64_t seg, uint32_t *version) {
    *version = 0;
    if (size < TQ_JOURNAL_HEADER_SIZE)
        return "segment header cut short";
    if (memcmp(p, "TQJOURNL", 8) != 0)
        return "bad segment magic";
    if (crc(0, p, 28) != get32(p + 28))
        return "segment header checksum mismatch";
    if (get32(p + 8) != TQ_JOURNAL_VERSION) {
        *version = get32(p + 8);
        return "unsupported version";
    }
    if (get32(p + 12) != TQ_JOURNAL_HEADER_SIZE)
        return "bad segment header size";
    if (get64(p + 16) != seg)
        return "segment number does not match the file name";
    if (get32(p + 24) != 0)
        return "bad segment header";
    return NULL;
}

/* Records of one mapped segment from pos. Stops at the first bad record:
 * *bad gets its offset and reason (NULL if the segment is sound), *torn 1
 * if it is a torn tail by journal.h's rules (only if last), *skip the
 * offset after it if its length was sane (else 0). dropped: hand records
 * as dropped. Returns 0, or -1 if the replay callback refused. */
static int scan_records(scan_t *s, const char *name, const segfile_t *sf, size_t pos, int last,
                        int dropped, uint64_t *bad_off, const char **reason, int *torn,
                        uint64_t *skip) {
    const uint8_t *p = sf->map;
    size_t size = sf->size;
    char cberr[512];
    cberr[0] = '\0';
    *reason = NULL;
    *torn = 0;
    *skip = 0;
    while (pos < size) {
        size_t rem = size - pos;
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
                *skip = pos + 8 + len;
            }
        }
        if (why) {
            *bad_off = pos;
            *reason = why;
            *torn = last && (tail || all_zero(p + pos, rem));
            return 0;
        }
        s->rep->records++;
        if (dropped)
            s->rep->dropped_records++;
        if (s->replay &&
            s->replay(s->arg, p[pos + 8], p + pos + 9, len - 1, dropped, cberr, sizeof cberr) < 0) {
            snprintf(s->err, s->errlen, "journal replay: %s/%s at offset %zu: %s", s->dir, name,
                     pos, cberr[0] ? cberr : "record refused");
            return -1;
        }
        pos += TQ_JOURNAL_RECORD_HEAD + len;
    }
    return 0;
}

/* Read the segments listed in segs[0..n) in order. Sets *nkept (segments
 * left on disk) and *bytes. Returns 0 or -1 with s->err. */
static int scan_all(scan_t *s, uint64_t *segs, size_t n, size_t *nkept, uint64_t *bytes) {
    char name[32], path[PATH_MAX + 32];
    *bytes = 0;
    *nkept = n;
    /* The last segment with records: a power loss can keep a newer,
     * still empty segment (created and its directory entry synced) while
     * the end of this one was lost, so "the last record of the journal"
     * is the last of this segment. */
    size_t last_full = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        seg_name(name, sizeof name, segs[i]);
        snprintf(path, sizeof path, "%s/%s", s->dir, name);
        if (stat(path, &st) == 0 && st.st_size > (off_t)TQ_JOURNAL_HEADER_SIZE)
            last_full = i;
    }
    for (size_t i = 0; i < n; i++) {
        seg_name(name, sizeof name, segs[i]);
        snprintf(path, sizeof path, "%s/%s", s->dir, name);
        segfile_t sf;
        if (seg_map(path, &sf, s->err, s->errlen) < 0)
            return -1;
        int last = i + 1 == n || i >= last_full;
        s->rep->segments++;
        uint32_t version;
        const char *why = check_header(sf.map, sf.size, segs[i], &version);
        uint64_t bad_off = 0, skip = 0;
        int torn = 0;
        if (why && version) {
            snprintf(s->err, s->errlen,
                     "journal %s has format version %" PRIu32 "; this master reads version %u",
                     path, version, TQ_JOURNAL_VERSION);
            seg_unmap(&sf);
            return -1;
        }
        if (why) {
            /* a crash while the segment was being created */
            torn = last && (sf.size < TQ_JOURNAL_HEADER_SIZE || all_zero(sf.map, sf.size));
            skip = TQ_JOURNAL_HEADER_SIZE; /* --repair counts what follows */
        } else if (scan_records(s, name, &sf, TQ_JOURNAL_HEADER_SIZE, last, 0, &bad_off, &why,
                                &torn, &skip) < 0) {
            seg_unmap(&sf);
            return -1;
        }
        if (!why) {
            *bytes += sf.size;
            seg_unmap(&sf);
            continue;
        }
        if (torn) {
            /* A crash while this segment was being written: cut it. */
            s->rep->torn = 1;
            tq_strlcpy(s->rep->torn_file, name, sizeof s->rep->torn_file);
            s->rep->torn_offset = bad_off;
            tq_warn("journal: %s at offset %" PRIu64 ": %s; cutting the torn tail (%zu bytes)",
                    path, bad_off, why, sf.size - (size_t)bad_off);
        } else if (!s->cfg->repair) {
            snprintf(s->err, s->errlen,
                     "journal damaged: %s at offset %" PRIu64
                     ": %s (start with --repair to drop everything from there on)",
                     path, bad_off, why);
            seg_unmap(&sf);
            return -1;
        } else {
            s->rep->repaired = 1;
            tq_strlcpy(s->rep->damage_file, name, sizeof s->rep->damage_file);
            s->rep->damage_offset = bad_off;
            s->rep->dropped_bytes = sf.size - bad_off;
            tq_error("journal damaged: %s at offset %" PRIu64 ": %s; --repair drops everything "
                     "from there on",
                     path, bad_off, why);
            /* Count (and show the caller) what is still readable and lost. */
            uint64_t b2, s2;
            const char *w2;
            int t2;
            if (skip && skip < sf.size &&
                scan_records(s, name, &sf, skip, 0, 1, &b2, &w2, &t2, &s2) < 0) {
                seg_unmap(&sf);
                return -1;
            }
            for (size_t k = i + 1; k < n; k++) {
                char n2[32], p2[PATH_MAX + 32];
                seg_name(n2, sizeof n2, segs[k]);
                snprintf(p2, sizeof p2, "%s/%s", s->dir, n2);
                segfile_t sf2;
                if (seg_map(p2, &sf2, s->err, s->errlen) < 0) {
                    seg_unmap(&sf);
                    return -1;
                }
                s->rep->dropped_bytes += sf2.size;
                int rc = 0;
                if (!check_header(sf2.map, sf2.size, segs[k], &version))
                    rc = scan_records(s, n2, &sf2, TQ_JOURNAL_HEADER_SIZE, 0, 1, &b2, &w2, &t2,
                                      &s2);
                seg_unmap(&sf2);
                if (rc < 0) {
                    seg_unmap(&sf);
                    return -1;
                }
            }
        }
        /* Cut: truncate at the bad offset, or delete a file whose header
         * is bad (a headerless file would be damage next time). */
        if (sf.map)
            munmap(sf.map, sf.size);
        sf.map = NULL;
        if (bad_off == 0) {
            close(sf.fd);
            sf.fd = -1;
            if (unlink(path) < 0) {
                snprintf(s->err, s->errlen, "journal: cannot delete %s: %s", path,
                         strerror(errno));
                return -1;
            }
            *nkept = i;
        } else {
            if (tq_jio.ftruncate(sf.fd, (off_t)bad_off) < 0 || tq_jio.fdatasync(sf.fd) < 0) {
                snprintf(s->err, s->errlen, "journal: cannot truncate %s: %s", path,
                         strerror(errno));
                seg_unmap(&sf);
                return -1;
            }
            *bytes += bad_off;
            *nkept = i + 1;
        }
        seg_unmap(&sf);
        for (size_t k = i + 1; k < n; k++) {
            seg_name(name, sizeof name, segs[k]);
            snprintf(path, sizeof path, "%s/%s", s->dir, name);
            if (unlink(path) < 0) {
                snprintf(s->err, s->errlen, "journal: cannot delete %s: %s", path,
                         strerror(errno));
                return -1;
            }
        }
        return 0;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segment numbers in dir, sorted. Returns 0 or -1 with err. */
static int list_segments(const char *dir, uint64_t **out, size_t *n, char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "journal: cannot read %s: %s", dir, strerror(errno));
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
static size_t write_all(int fd, const uint8_t *buf, size_t n, int *err) {
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

/* Create segment seg with its header. Returns the fd or -1 with errno. */
static int seg_create(tq_journal_t *self, uint64_t seg) {
    char name[32];
    seg_name(name, sizeof name, seg);
    int fd = openat(self->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    uint8_t h[TQ_JOURNAL_HEADER_SIZE];
    memcpy(h, "TQJOURNL", 8);
    put32(h + 8, TQ_JOURNAL_VERSION);
    put32(h + 12, TQ_JOURNAL_HEADER_SIZE);
    put64(h + 16, seg);
    put32(h + 24, 0);
    put32(h + 28, crc(0, h, 28));
    int e;
    if (write_all(fd, h, sizeof h, &e) != sizeof h) {
        close(fd);
        unlinkat(self->dirfd, name, 0);
        errno = e;
        return -1;
    }
    return fd;
}

tq_journal_t *tq_journal_open(const tq_journal_cfg_t *cfg, tq_journal_replay_fn replay, void *arg,
                              tq_journal_report_t *report, char *err, size_t errlen) {
    static unsigned counter;
    tq_journal_report_t dummy;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!cfg || !cfg->data_dir || !cfg->zmq_ctx) {
        snprintf(err, errlen, "journal: no data directory or ZeroMQ context");
        return NULL;
    }
    if (cfg->mode == TQ_FSYNC_INTERVAL && cfg->interval_ms <= 0) {
        snprintf(err, errlen, "journal: the fsync interval must be positive");
        return NULL;
    }
    tq_journal_t *self = tq_calloc(1, sizeof *self);
    self->dirfd = -1;
    self->fd = -1;
    self->mode = cfg->mode;
    self->interval_ms = cfg->interval_ms;
    self->ctx = cfg->zmq_ctx;
    uint64_t *segs = NULL;
    size_t nsegs = 0, nkept = 0;
    uint64_t bytes = 0;
    if (snprintf(self->dir, sizeof self->dir, "%s/journal", cfg->data_dir) >=
        (int)sizeof self->dir) {
        snprintf(err, errlen, "journal: data directory path too long");
        goto fail;
    }
    if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "journal: cannot create %s: %s", cfg->data_dir, strerror(errno));
        goto fail;
    }
    if (mkdir(self->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "journal: cannot create %s: %s", self->dir, strerror(errno));
        goto fail;
    }
    self->dirfd = open(self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dirfd < 0) {
        snprintf(err, errlen, "journal: cannot open %s: %s", self->dir, strerror(errno));
        goto fail;
    }
    if (list_segments(self->dir, &segs, &nsegs, err, errlen) < 0)
        goto fail;
    scan_t s = {cfg, replay, arg, report, err, errlen, self->dir};
    if (scan_all(&s, segs, nsegs, &nkept, &bytes) < 0)
        goto fail;
    uint64_t last = nkept ? segs[nkept - 1] : 0;
    if (last == UINT64_MAX) {
        snprintf(err, errlen, "journal: segment numbers exhausted in %s", self->dir);
        goto fail;
    }
    self->seg = last + 1;
    self->fd = seg_create(self, self->seg);
    if (self->fd < 0) {
        snprintf(err, errlen, "journal: cannot create a segment in %s: %s", self->dir,
                 strerror(errno));
        goto fail;
    }
    if (tq_jio.fsync_dir(self->dirfd) < 0) {
        snprintf(err, errlen, "journal: fsync of %s failed: %s", self->dir, strerror(errno));
        goto fail;
    }
    self->bytes = bytes + TQ_JOURNAL_HEADER_SIZE;
    report->bytes = self->bytes;
    free(segs);
    segs = NULL;

    /* The sync thread: bind our end, start it, wait for its hello. */
    snprintf(self->pipe_ep, sizeof self->pipe_ep, "inproc://taskq-journal-%u-%p",
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED), (void *)self);
    int zero = 0;
    self->pipe = zmq_socket(self->ctx, ZMQ_PAIR);
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe, self->pipe_ep) < 0) {
        snprintf(err, errlen, "journal: cannot create the sync pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    tfile_add(self, self->fd, 0);
    if (pthread_create(&self->thread, NULL, sync_main, self) != 0) {
        snprintf(err, errlen, "journal: cannot start the sync thread");
        goto fail;
    }
    int rcvtimeo = 5000;
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    char hello[8];
    int n = zmq_recv(self->pipe, hello, sizeof hello, 0);
    int none = -1;
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &none, sizeof none);
    if (n != 2 || memcmp(hello, "ok", 2) != 0) {
        snprintf(err, errlen, "journal: no answer from the sync thread: %s",
                 zmq_strerror(errno));
        pthread_join(self->thread, NULL); /* it could not connect: it has exited */
        goto fail;
    }
    self->thread_started = 1;
    return self;
fail:
    free(segs);
    if (self->pipe)
        zmq_close(self->pipe);
    if (self->fd >= 0)
        close(self->fd);
    if (self->dirfd >= 0)
        close(self->dirfd);
    free(self->files);
    free(self);
    return NULL;
}

/* ---- write path ------------------------------------------------------------ */

static void write_failed(tq_journal_t *self, int e, int64_t now) {
    if (self->write_err != e)
        tq_error("journal: write to %s failed: %s", self->dir, strerror(e));
    self->write_err = e;
    self->write_clear_armed = 0;
    self->next_retry_ms = now + JOURNAL_RETRY_MS;
}

/* A write went through: the write failure clears once a sync covers it
 * (at once in mode off, where no sync is coming). */
static void write_ok(tq_journal_t *self) {
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

static int write_batch(tq_journal_t *self, int64_t now) {
    outq_flush(self);
    if (self->blen == 0) {
        if (self->write_err && !self->write_clear_armed)
            write_ok(self);
        return 0;
    }
    int e;
    size_t done = write_all(self->fd, self->batch, self->blen, &e);
    if (done > 0) {
        self->written += done;
        self->bytes += done;
        /* One message per sync round, not per write: a wake-up of the
         * sync thread per loop pass costs more than the write. What is
         * written meanwhile is told when the round's answer comes
         * (tq_journal_on_sync): group commit. */
        if (!self->told_pending) {
            tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
            self->told_pending = 1;
        }
    }
    if (done < self->blen) {
        /* Keep the exact rest: appended at the file end next time, the
         * file stays a clean prefix of the record stream. */
        memmove(self->batch, self->batch + done, self->blen - done);
        self->blen -= done;
        write_failed(self, e, now);
        return -1;
    }
    self->blen = 0;
    if (self->bcap > JOURNAL_BATCH_KEEP) {
        free(self->batch);
        self->batch = NULL;
        self->bcap = 0;
    }
    write_ok(self);
    return 0;
}

uint64_t tq_journal_append(tq_journal_t *self, uint8_t type, const void *part1, size_t len1,
                           const void *part2, size_t len2) {
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

int tq_journal_write(tq_journal_t *self) {
    int64_t now = tq_mono_ms();
    if (self->write_err && self->blen > 0 && now < self->next_retry_ms) {
        outq_flush(self);
        return -1;
    }
    return write_batch(self, now);
}

void tq_journal_tick(tq_journal_t *self, int64_t now_ms) {
    outq_flush(self);
    if (self->write_err && now_ms >= self->next_retry_ms)
        write_batch(self, now_ms);
}

uint64_t tq_journal_appended(const tq_journal_t *self) { return self->appended; }
uint64_t tq_journal_written(const tq_journal_t *self) { return self->written; }
uint64_t tq_journal_durable(const tq_journal_t *self) { return self->durable; }
uint64_t tq_journal_bytes(const tq_journal_t *self) { return self->bytes; }
uint64_t tq_journal_segment(const tq_journal_t *self) { return self->seg; }
void *tq_journal_socket(tq_journal_t *self) { return self->pipe; }

int tq_journal_failed(const tq_journal_t *self) {
    return self->write_err ? self->write_err : self->sync_err;
}

/* Tell the thread everything written so far (writes tell it only once
 * per sync round): before a forced sync, a drop, or the stop. */
static void tell_written(tq_journal_t *self) {
    if (self->written == 0)
        return;
    tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
    self->told_pending = 1;
}

void tq_journal_sync(tq_journal_t *self) {
    tell_written(self);
    tell(self, M_SYNC, -1, 0, 0, 0);
}

int tq_journal_on_sync(tq_journal_t *self) {
    int moved = 0;
    jmsg_t m;
    int n;
    while ((n = zmq_recv(self->pipe, &m, sizeof m, ZMQ_DONTWAIT)) >= 0 || errno == EINTR) {
        if (n != (int)sizeof m)
            continue;
        switch (m.kind) {
        case M_DURABLE:
            if (self->sync_err)
                tq_info("journal: syncing again");
            self->sync_err = 0;
            if (m.a > self->durable) {
                self->durable = m.a;
                moved = 1;
            }
            self->told_pending = 0;
            if (self->write_err && self->write_clear_armed && self->durable >= self->write_clear_lsn) {
                self->write_err = 0;
                tq_info("journal: writing again");
            }
            break;
        case M_FAILED:
            self->sync_err = m.fd ? m.fd : EIO;
            self->told_pending = 0;
            break;
        case M_DROPPED:
            self->drop_pending = 0;
            self->bytes = self->bytes >= m.a ? self->bytes - m.a : 0;
            moved = 1;
            break;
        default:
            break;
        }
    }
    if (!self->told_pending && self->written > self->durable && self->mode != TQ_FSYNC_OFF) {
        tell(self, M_WRITTEN, self->fd, 0, self->written, 0);
        self->told_pending = 1;
    }
    outq_flush(self);
    return moved;
}

uint64_t tq_journal_rotate(tq_journal_t *self) {
    int64_t now = tq_mono_ms();
    /* The batch must go first: a record never spans two segments. */
    if (write_batch(self, now) < 0)
        return 0;
    if (self->seg == UINT64_MAX) {
        write_failed(self, EOVERFLOW, now);
        return 0;
    }
    int fd = seg_create(self, self->seg + 1);
    if (fd < 0) {
        write_failed(self, errno ? errno : EIO, now);
        return 0;
    }
    /* The old fd is the thread's now: it syncs, then closes it. */
    tell(self, M_ROTATED, self->fd, fd, self->written, 0);
    self->fd = fd;
    self->seg++;
    self->bytes += TQ_JOURNAL_HEADER_SIZE;
    return self->seg;
}

void tq_journal_drop_before(tq_journal_t *self, uint64_t seg) {
    if (seg > self->seg) /* never the segment being written */
        seg = self->seg;
    self->drop_pending = 1;
    tell_written(self);
    tell(self, M_DROP, -1, 0, seg, self->written);
}

int tq_journal_drop_pending(const tq_journal_t *self) { return self->drop_pending; }

void tq_journal_destroy(tq_journal_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tq_journal_t *self = *self_p;
    write_batch(self, tq_mono_ms());
    if (self->blen > 0)
        tq_error("journal: %zu bytes could not be written at close: %s", self->blen,
                 strerror(self->write_err));
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
    close(self->dirfd);
    free(self->batch);
    free(self->outq);
    free(self->files);
    free(self);
    *self_p = NULL;
}

const char *tq_fsync_mode_name(tq_fsync_mode_t m) {
    switch (m) {
    case TQ_FSYNC_ALWAYS:
        return "always";
    case TQ_FSYNC_INTERVAL:
        return "interval";
    case TQ_FSYNC_OFF:
        return "off";
    }
    return "?";
}

int tq_fsync_mode_parse(const char *s) {
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
