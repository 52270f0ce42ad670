/* journal_fuzz.c - libFuzzer target for the master's journal: the scan
 * of segment files (headers, record framing, checksums, torn ends,
 * damage, --repair) and the record parser that replays record bodies
 * into the store (persist.c). A journal on disk is input the master did
 * not check when it wrote it (a disk, a copy or another program may
 * have changed it): on any bytes the open must succeed or fail with a
 * message, never crash, leak or read outside what it mapped.
 *
 * Input layout (docs/fuzzing.md):
 *   u8 flags     bit 0: --repair; bits 1-2: segment files - 1 (1..4);
 *                bit 3: the first file is numbered 2 (a gap before it)
 *   then each file but the last: u16 LE length, that many bytes;
 *   the last file takes the rest.
 * Files are named 0000000000000001.tqj upwards in a fresh directory
 * under $TMPDIR (a tmpfs is fastest), opened with tq_persist_open
 * (which drives tq_journal_open), then closed and removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "engine.h"
#include "persist.h"
#include "tq_log.h"

static void *ctx;
static char base[256];

/* Remove every file of dir (one level: journal/ and what --repair made
 * under it), then dir itself. */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int write_file(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w, n -= (size_t)w;
    }
    return close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        tq_log_init("journal_fuzz");
        tq_log_set_level(TQ_LOG_ERROR); /* damage is a warning: keep the output readable */
        ctx = zmq_ctx_new();
        const char *tmp = getenv("TMPDIR");
        snprintf(base, sizeof base, "%s/tq-journal-fuzz-%ld", tmp && *tmp ? tmp : "/tmp",
                 (long)getpid());
        if (!ctx || (mkdir(base, 0700) < 0 && errno != EEXIST))
            abort();
    }
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    size_t files = 1 + ((flags >> 1) & 3), pos = 1;
    uint64_t first = (flags & 8) ? 2 : 1;
    char dir[300], jdir[320], path[400];
    snprintf(dir, sizeof dir, "%s/d", base);
    snprintf(jdir, sizeof jdir, "%s/journal", dir);
    rm_tree(dir);
    if (mkdir(dir, 0700) < 0 || mkdir(jdir, 0700) < 0)
        abort();
    for (size_t i = 0; i < files; i++) {
        size_t len = size - pos;
        if (i + 1 < files) {
            if (size - pos < 2)
                break;
            len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
            pos += 2;
            if (len > size - pos)
                len = size - pos;
        }
        snprintf(path, sizeof path, "%s/%016llx.tqj", jdir, (unsigned long long)(first + i));
        if (write_file(path, data + pos, len) < 0)
            abort();
        pos += len;
    }
    tq_engine_cfg_t ec = {.store = {1, 100000, 3600000, 3600000, 86400000}, .max_attempts = 3};
    tq_engine_t *engine = tq_engine_new(&ec);
    tq_journal_cfg_t jc = {.data_dir = dir,
                           .mode = TQ_FSYNC_OFF,
                           .repair = flags & 1,
                           .zmq_ctx = ctx};
    tq_persist_report_t rep;
    tq_err_t err;
    memset(&err, 0, sizeof err);
    tq_persist_t *p = tq_persist_open(&jc, engine, NULL, &rep, &err);
    if (!p && (!err.msg[0] || !memchr(err.msg, 0, sizeof err.msg)))
        abort(); /* a refusal must say why */
    tq_persist_destroy(&p);
    tq_engine_destroy(&engine);
    rm_tree(dir);
    return 0;
}
