/* pausefile.c - the actor thread that writes DATA_DIR/paused. See
 * pausefile.h.
 *
 * Wire between the loop and the thread (an inproc PAIR): the loop sends
 * [u64 seq][contents] (seq 0: stop, after the saves before it); the
 * thread answers [u64 seq][i32 errno] for the newest save it wrote. */
#include "pausefile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "tq_log.h"
#include "tq_util.h"

struct tq_pausefile {
    int delay_ms; /* test hook TASKQ_TEST_PAUSED_DELAY_MS: a slow disk */
    void *ctx;
    void *pipe; /* the loop's end */
    char ep[96];
    char *dir;
    pthread_t thread;
    int started;
    uint64_t next_seq;
};

/* Replace DIR/paused with data. Returns 0, or an errno. */
static int write_file(const char *dir, const void *data, size_t len) {
    char path[4096], tmp[4096];
    int n1 = snprintf(path, sizeof path, "%s/paused", dir);
    int n2 = snprintf(tmp, sizeof tmp, "%s/paused.tmp", dir);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof path || (size_t)n2 >= sizeof tmp)
        return ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    int e = 0;
    if (tq_write_all(fd, data, len) < 0 || fsync(fd) < 0)
        e = errno;
    close(fd);
    if (!e && rename(tmp, path) < 0)
        e = errno;
    if (e) {
        unlink(tmp);
        return e;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* the rename is durable; failure here is not fatal */
        close(dfd);
    }
    return 0;
}

static uint64_t msg_seq(zmq_msg_t *m) {
    uint64_t seq = 0;
    if (zmq_msg_size(m) >= sizeof seq)
        memcpy(&seq, zmq_msg_data(m), sizeof seq);
    return seq;
}

static void *writer_main(void *arg) {
    tq_pausefile_t *pf = arg;
    int zero = 0;
    void *pipe = zmq_socket(pf->ctx, ZMQ_PAIR);
    if (!pipe)
        return NULL; /* the creator times out on its handshake */
    zmq_setsockopt(pipe, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(pipe, pf->ep) < 0) {
        zmq_close(pipe);
        return NULL;
    }
    zmq_send(pipe, "ok", 2, 0);
    int stop = 0;
    while (!stop) {
        zmq_msg_t cur;
        zmq_msg_init(&cur);
        if (zmq_msg_recv(&cur, pipe, 0) < 0) {
            zmq_msg_close(&cur);
            if (errno == EINTR)
                continue;
            break; /* ETERM */
        }
        /* Only the newest contents matter: skip older ones still queued. */
        for (;;) {
            if (msg_seq(&cur) == 0) {
                stop = 1;
                break;
            }
            zmq_msg_t next;
            zmq_msg_init(&next);
            if (zmq_msg_recv(&next, pipe, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&next);
                break;
            }
            if (msg_seq(&next) == 0) { /* stop after writing what came before */
                stop = 1;
                zmq_msg_close(&next);
                break;
            }
            zmq_msg_move(&cur, &next); /* releases the older contents */
            zmq_msg_close(&next);
        }
        uint64_t seq = msg_seq(&cur);
        if (seq && pf->delay_ms > 0) {
            struct timespec ts = {pf->delay_ms / 1000, (long)(pf->delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (seq) {
            const uint8_t *d = zmq_msg_data(&cur);
            int32_t e = write_file(pf->dir, d + sizeof seq, zmq_msg_size(&cur) - sizeof seq);
            uint8_t reply[12];
            memcpy(reply, &seq, 8);
            memcpy(reply + 8, &e, 4);
            zmq_send(pipe, reply, sizeof reply, 0);
        }
        zmq_msg_close(&cur);
    }
    zmq_close(pipe);
    return NULL;
}

tq_pausefile_t *tq_pausefile_new(void *ctx, const char *dir, char *err, size_t errlen) {
    static unsigned counter;
    tq_pausefile_t *self = tq_calloc(1, sizeof *self);
    self->ctx = ctx;
    self->dir = tq_strdup(dir);
    self->next_seq = 1;
    /* Test hook: every save takes this long more, as on a slow disk
     * (tests/integration/test_loopstall.py). Not for production. */
    const char *delay = getenv("TASKQ_TEST_PAUSED_DELAY_MS");
    if (delay) {
        long ms = strtol(delay, NULL, 10);
        self->delay_ms = ms > 0 && ms <= 60000 ? (int)ms : 0;
    }
    snprintf(self->ep, sizeof self->ep, "inproc://taskq-paused-%u-%p",
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED), (void *)self);
    int zero = 0;
    self->pipe = zmq_socket(ctx, ZMQ_PAIR);
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(self->pipe, self->ep) < 0) {
        snprintf(err, errlen, "cannot create the paused-file pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&self->thread, NULL, writer_main, self) != 0) {
        snprintf(err, errlen, "cannot start the paused-file thread");
        goto fail;
    }
    int rcvtimeo = 5000, none = -1;
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    char hello[8];
    int n = zmq_recv(self->pipe, hello, sizeof hello, 0);
    zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &none, sizeof none);
    if (n != 2 || memcmp(hello, "ok", 2) != 0) {
        snprintf(err, errlen, "no answer from the paused-file thread: %s", zmq_strerror(errno));
        pthread_join(self->thread, NULL); /* it could not connect: it has exited */
        goto fail;
    }
    self->started = 1;
    return self;
fail:
    if (self->pipe)
        zmq_close(self->pipe);
    free(self->dir);
    free(self);
    return NULL;
}

void tq_pausefile_destroy(tq_pausefile_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tq_pausefile_t *self = *self_p;
    if (self->started) {
        uint64_t stop = 0;
        if (zmq_send(self->pipe, &stop, sizeof stop, 0) < 0)
            tq_warn("paused-file thread: cannot stop it: %s", zmq_strerror(errno));
        pthread_join(self->thread, NULL);
    }
    zmq_close(self->pipe);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

uint64_t tq_pausefile_save(tq_pausefile_t *self, const void *data, size_t len) {
    uint64_t seq = self->next_seq;
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, sizeof seq + len) < 0)
        return 0;
    memcpy(zmq_msg_data(&m), &seq, sizeof seq);
    if (len)
        memcpy((uint8_t *)zmq_msg_data(&m) + sizeof seq, data, len);
    /* the loop keeps one save in flight (admin.c): never blocks */
    if (zmq_msg_send(&m, self->pipe, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return 0;
    }
    self->next_seq++;
    return seq;
}

void *tq_pausefile_socket(tq_pausefile_t *self) { return self->pipe; }

int tq_pausefile_done(tq_pausefile_t *self, uint64_t *seq, int *err) {
    uint8_t reply[12];
    int n = zmq_recv(self->pipe, reply, sizeof reply, ZMQ_DONTWAIT);
    if (n != (int)sizeof reply)
        return 0;
    int32_t e;
    memcpy(seq, reply, 8);
    memcpy(&e, reply + 8, 4);
    *err = e;
    return 1;
}
