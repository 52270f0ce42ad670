/* tq_frame.c - multipart send and receive of taskq messages on ZeroMQ
 * sockets, and packed messages (PROTOCOL.md 3.1). See tq_frame.h. */
#include "tq_frame.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "tq_proto_int.h"

/* Send one frame; after the first frame of a message, ZeroMQ has
 * committed to the message and only an interrupted blocking call can
 * fail, so retry that rather than leave half a message queued. */
static int send_frame(void *sock, const void *p, size_t n, int flags, int first)
{
    for (;;) {
        if (zmq_send(sock, p, n, flags) >= 0)
            return 0;
        if (first || errno != EINTR)
            return -1;
    }
}

/* The lend of part i, or NULL when it is not lent. */
static const tq_out_lend_t *lend_of(const tq_out_t *o, size_t i)
{
    return o->lends && i < o->lends_cap && o->lends[i].release ? &o->lends[i] : NULL;
}

/* Send part i after the message's first frame: a lent part as a ZeroMQ
 * message over its bytes (no copy; ZeroMQ releases it), others copied. */
static int send_part(const tq_out_t *o, size_t i, void *sock, int flags)
{
    const tq_out_lend_t *l = lend_of(o, i);
    if (!l)
        return send_frame(sock, o->parts[i].data, o->parts[i].len, flags, 0);
    zmq_msg_t m;
    l->hold(l->hint);
    if (zmq_msg_init_data(&m, (void *)o->parts[i].data, o->parts[i].len, l->release, l->hint) < 0) {
        l->release((void *)o->parts[i].data, l->hint);
        return -1;
    }
    int rc;
    while ((rc = zmq_msg_send(&m, sock, flags)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        int e = errno;
        zmq_msg_close(&m); /* releases the bytes */
        errno = e;
        return -1;
    }
    return 0;
}

int tq_out_send(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags)
{
    TQ_ASSERT(o->head.len >= TQ_HEAD_SIZE);
    int first = 1;
    if (routing_id) {
        if (send_frame(sock, routing_id->data, routing_id->len, zmq_flags | ZMQ_SNDMORE, 1) < 0)
            return -1;
        first = 0;
    }
    if (send_frame(sock, o->head.data, o->head.len, zmq_flags | (o->nparts ? ZMQ_SNDMORE : 0),
                   first) < 0)
        return -1;
    for (size_t i = 0; i < o->nparts; i++) {
        int more = i + 1 < o->nparts ? ZMQ_SNDMORE : 0;
        if (send_part(o, i, sock, zmq_flags | more) < 0)
            return -1;
    }
    return 0;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

int tq_out_send_packed(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags,
                       int packed)
{
    /* Plain frames, too, when lent parts are most of the data and the
     * parts few: their bytes then go to ZeroMQ without a copy, at the
     * price of one CURVE seal per frame. */
    if (!packed || o->nparts == 0 || o->part_bytes > TQ_BATCH_BYTES ||
        (o->lent_bytes > 0 && o->lent_bytes * 2 >= o->part_bytes && o->nparts <= TQ_LEND_MAX_PARTS))
        return tq_out_send(o, sock, routing_id, zmq_flags);
    TQ_ASSERT(o->head.len >= TQ_HEAD_SIZE);
    /* One frame: head (with the bit), body, the records' data, and the
     * length of that data; CURVE then seals the message once. It is
     * written straight into the ZeroMQ message, which ZeroMQ then owns:
     * the data is copied once (not into a buffer and again by zmq_send). */
    size_t plen = o->part_bytes + 4 * o->nparts;
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, o->head.len + plen + 4) < 0)
        return -1;
    uint8_t *p = zmq_msg_data(&m);
    memcpy(p, o->head.data, o->head.len);
    p[3] |= TQ_TYPE_PACKED;
    p += o->head.len;
    for (size_t i = 0; i < o->nparts; i++) {
        p = put_u32(p, (uint32_t)o->parts[i].len);
        if (o->parts[i].len)
            memcpy(p, o->parts[i].data, o->parts[i].len);
        p += o->parts[i].len;
    }
    put_u32(p, (uint32_t)plen);
    if (routing_id &&
        send_frame(sock, routing_id->data, routing_id->len, zmq_flags | ZMQ_SNDMORE, 1) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    /* after a routing id the message is committed: retry an interrupted
     * call (as send_frame does) */
    int rc;
    while ((rc = zmq_msg_send(&m, sock, zmq_flags)) < 0 && routing_id && errno == EINTR)
        ;
    if (rc < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return -1;
    }
    return 0;
}

/* ---- waiting -------------------------------------------------------------- */

/* items[i].revents from a ZeroMQ socket's ZMQ_EVENTS; -1 on failure. */
static int zsock_events(zmq_pollitem_t *it)
{
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(it->socket, ZMQ_EVENTS, &ev, &len) < 0)
        return -1;
    it->revents = (short)(ev & it->events);
    return 0;
}

int tq_zpoll(zmq_pollitem_t *items, int n, long timeout)
{
    struct pollfd fds[TQ_ZPOLL_MAX];
    if (n < 0 || n > TQ_ZPOLL_MAX) {
        errno = EINVAL;
        return -1;
    }
    int ready = 0;
    for (int i = 0; i < n; i++) {
        items[i].revents = 0;
        fds[i] = (struct pollfd){items[i].fd, 0, 0};
        if (items[i].socket) {
            size_t len = sizeof fds[i].fd;
            if (zmq_getsockopt(items[i].socket, ZMQ_FD, &fds[i].fd, &len) < 0 ||
                (!(items[i].events & TQ_ZPOLL_QUIET) && zsock_events(&items[i]) < 0))
                return -1;
            fds[i].events = POLLIN;
            ready += items[i].revents != 0;
        } else {
            fds[i].events = (short)(((items[i].events & ZMQ_POLLIN) ? POLLIN : 0) |
                                    ((items[i].events & ZMQ_POLLOUT) ? POLLOUT : 0));
        }
    }
    int wait = ready ? 0 : timeout < 0 ? -1 : timeout > INT_MAX ? INT_MAX : (int)timeout;
    if (poll(fds, (nfds_t)n, wait) < 0)
        return -1;
    ready = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].socket) {
            if (fds[i].revents && !items[i].revents && zsock_events(&items[i]) < 0)
                return -1;
        } else {
            /* as zmq_poll: anything but POLLIN and POLLOUT is an error */
            short r = fds[i].revents;
            items[i].revents = (short)(((r & POLLIN) ? ZMQ_POLLIN : 0) |
                                       ((r & POLLOUT) ? ZMQ_POLLOUT : 0) |
                                       ((r & ~(POLLIN | POLLOUT)) ? ZMQ_POLLERR : 0));
        }
        ready += items[i].revents != 0;
    }
    return ready;
}

/* ---- receiving ------------------------------------------------------------ */

/* Room for a whole message of TQ_MAX_FRAMES plus a ROUTER's routing id. */
#define IN_SLOTS (TQ_MAX_FRAMES + 1)

struct tq_in {
    zmq_msg_t msgs[IN_SLOTS];
    tq_bytes_t views[IN_SLOTS];
    size_t nmsgs;  /* frames held (initialised msgs) */
    size_t nviews; /* views: the frames, or a packed message's records */
    int router;
    int oversized;
    int toolarge;                /* frames past max_bytes: dropped as they were read */
    int badpack;                 /* packed, but 1: data frames follow, 2: a record
                      runs past the pack's end, 3: bad pack length */
    size_t badpack_at;           /* the record where the pack went wrong */
    size_t nframes;              /* frames the peer sent (no routing id) */
    size_t max_bytes;            /* 0: no cap */
    int unpacked;                /* the views after frame 0 are records of frame 0 */
    tq_msgref_t *kept[IN_SLOTS]; /* frames moved out by tq_in_keep */
};

/* A frame moved out of a tq_in_t, with its references. */
struct tq_msgref {
    atomic_size_t refs;
    zmq_msg_t msg;
};

tq_in_t *tq_in_new(void)
{
    tq_in_t *self = calloc(1, sizeof *self);
    if (!self)
        tq_proto_die("out of memory", __FILE__, __LINE__);
    return self;
}

static void in_release(tq_in_t *self, size_t keep)
{
    while (self->nmsgs > keep) {
        --self->nmsgs;
        self->kept[self->nmsgs] = NULL; /* its references keep it */
        zmq_msg_close(&self->msgs[self->nmsgs]);
    }
}

void tq_in_destroy(tq_in_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    in_release(*self_p, 0);
    free(*self_p);
    *self_p = NULL;
}

/* A packed message (TQ_TYPE_PACKED in frame 0's type byte) is one
 * frame: head, body, pack, u32 pack length. Split the pack (records of
 * u32 length + bytes) into views, end frame 0's view at the body, and
 * clear the bit so that the head reads as the plain type. */
static void in_unpack(tq_in_t *self)
{
    size_t h = (size_t)self->router;
    if (self->nmsgs <= h || self->views[h].len < TQ_HEAD_SIZE)
        return;
    uint8_t *head = zmq_msg_data(&self->msgs[h]);
    if (head[0] != TQ_SIG0 || head[1] != TQ_SIG1 || !(head[3] & TQ_TYPE_PACKED))
        return;
    head[3] &= (uint8_t)~TQ_TYPE_PACKED;
    self->badpack_at = 0;
    self->nviews = h + 1;
    if (self->nframes != 1) {
        self->badpack = 1; /* a packed message is one frame */
        return;
    }
    /* frame 0 = head, body, pack, u32 length of the pack */
    size_t len = self->views[h].len;
    uint32_t plen = 0;
    if (len >= TQ_HEAD_SIZE + 4) {
        tq_cursor_t t;
        tq_cursor_init(&t, (tq_bytes_t){head + len - 4, 4});
        tq_cursor_u32(&t, &plen);
    }
    if (len < TQ_HEAD_SIZE + 4 || plen > len - TQ_HEAD_SIZE - 4) {
        self->badpack = 3;
        return;
    }
    size_t body_end = len - 4 - plen;
    self->views[h].len = body_end;
    tq_cursor_t c;
    tq_cursor_init(&c, (tq_bytes_t){head + body_end, plen});
    size_t k = h + 1;
    while (tq_cursor_left(&c) > 0) {
        uint32_t rlen;
        tq_bytes_t rec;
        if (k == IN_SLOTS) {
            self->oversized = 1;
            break;
        }
        if (tq_cursor_u32(&c, &rlen) < 0 || tq_cursor_bytes(&c, rlen, &rec) < 0) {
            self->badpack = 2;
            self->badpack_at = k - h - 1;
            break;
        }
        self->views[k++] = rec;
    }
    self->nviews = self->badpack || self->oversized ? h + 1 : k;
    self->unpacked = !self->badpack && !self->oversized;
}

/* 1 if frame f starts a packed message ('T' 'Q' VERSION TYPE|0x80). */
static int frame_packed(zmq_msg_t *f)
{
    const uint8_t *b = zmq_msg_data(f);
    return zmq_msg_size(f) >= TQ_HEAD_SIZE && b[0] == TQ_SIG0 && b[1] == TQ_SIG1 &&
           (b[3] & TQ_TYPE_PACKED);
}

int tq_in_recv(tq_in_t *self, void *sock, int router, int zmq_flags)
{
    in_release(self, 0);
    self->router = router ? 1 : 0;
    self->oversized = 0;
    self->toolarge = 0;
    self->badpack = 0;
    self->nviews = 0;
    self->nframes = 0;
    self->unpacked = 0;
    size_t cap = TQ_MAX_FRAMES + (size_t)self->router;
    size_t h = (size_t)self->router; /* index of frame 0 */
    size_t bytes = 0;                /* of the frames kept after frame 0 */
    int packed = 0;
    int more = 1;
    while (more) {
        /* Kept: the routing id, frame 0, and data frames while the
         * message stays within TQ_MAX_FRAMES and max_bytes, and is not
         * packed (a packed message is one frame). The rest is read and
         * let go at once, so the stream stays in step. */
        int keep = self->nmsgs < cap && !self->toolarge && !(packed && self->nmsgs > h);
        zmq_msg_t scratch, *m = keep ? &self->msgs[self->nmsgs] : &scratch;
        zmq_msg_init(m);
        /* The first frame honours the caller's flags; the rest of the
         * message is already here (ZeroMQ delivers messages whole). */
        int flags = self->nmsgs == 0 && keep ? zmq_flags : 0;
        int rc;
        while ((rc = zmq_msg_recv(m, sock, flags)) < 0 && self->nmsgs > 0 && errno == EINTR)
            ;
        if (rc < 0) {
            int e = errno;
            zmq_msg_close(m);
            in_release(self, 0);
            errno = e;
            return -1;
        }
        more = zmq_msg_more(m);
        if (self->nmsgs >= h || m == &scratch)
            self->nframes++;
        if (m != &scratch && self->nmsgs > h && self->max_bytes &&
            zmq_msg_size(m) > self->max_bytes - bytes) {
            zmq_msg_close(m);
            self->toolarge = 1;
            in_release(self, h + 1); /* what was kept goes now */
            continue;
        }
        if (m == &scratch) {
            zmq_msg_close(m);
            if (!packed && !self->toolarge)
                self->oversized = 1;
        } else {
            if (self->nmsgs == h)
                packed = frame_packed(m);
            else if (self->nmsgs > h)
                bytes += zmq_msg_size(m);
            self->views[self->nmsgs].data = zmq_msg_data(m);
            self->views[self->nmsgs].len = zmq_msg_size(m);
            self->nmsgs++;
        }
    }
    /* An oversized message is only answered with an error: keep the
     * routing id and frame 0, let go of the data frames now. */
    if (self->oversized || self->toolarge)
        in_release(self, h + 1);
    self->nviews = self->nmsgs;
    in_unpack(self);
    return 0;
}

tq_msgref_t *tq_in_keep(tq_in_t *self, size_t i, const void *data)
{
    size_t h = (size_t)self->router;
    if (self->oversized || self->toolarge || self->badpack || i >= tq_in_nparts(self) ||
        tq_in_parts(self)[i].data != data)
        return NULL;
    size_t f = self->unpacked ? h : h + 1 + i; /* the frame holding part i */
    if (f >= self->nmsgs)
        return NULL;
    tq_msgref_t *r = self->kept[f];
    if (!r) {
        /* Only a frame whose bytes ZeroMQ keeps on the heap: moving it
         * leaves them (and every view into them) where they are. */
        if (zmq_msg_size(&self->msgs[f]) < TQ_IN_KEEP_MIN)
            return NULL;
        r = malloc(sizeof *r);
        if (!r)
            tq_proto_die("out of memory", __FILE__, __LINE__);
        atomic_init(&r->refs, 0);
        zmq_msg_init(&r->msg);
        const void *before = zmq_msg_data(&self->msgs[f]);
        zmq_msg_move(&r->msg, &self->msgs[f]);
        TQ_ASSERT(zmq_msg_data(&r->msg) == before);
        self->kept[f] = r;
    }
    atomic_fetch_add(&r->refs, 1);
    return r;
}

void tq_msgref_drop(tq_msgref_t *ref)
{
    if (ref && atomic_fetch_sub(&ref->refs, 1) == 1) {
        zmq_msg_close(&ref->msg);
        free(ref);
    }
}

void tq_in_set_max_bytes(tq_in_t *self, size_t max_bytes) { self->max_bytes = max_bytes; }

int tq_in_source_fd(const tq_in_t *self)
{
    /* metadata, like Peer-Address: on the frames the peer sent */
    size_t i = (size_t)self->router;
    if (self->nmsgs <= i)
        return -1;
    return zmq_msg_get(&self->msgs[i], ZMQ_SRCFD);
}

const char *tq_in_user_id(const tq_in_t *self)
{
    size_t i = (size_t)self->router;
    if (self->nmsgs <= i)
        return "";
    const char *u = zmq_msg_gets(&self->msgs[i], "User-Id");
    return u ? u : "";
}

tq_bytes_t tq_in_routing_id(const tq_in_t *self)
{
    tq_bytes_t none = {NULL, 0};
    return self->router && self->nmsgs > 0 ? self->views[0] : none;
}

tq_bytes_t tq_in_frame0(const tq_in_t *self)
{
    tq_bytes_t none = {NULL, 0};
    size_t i = (size_t)self->router;
    return self->nmsgs > i ? self->views[i] : none;
}

const tq_bytes_t *tq_in_parts(const tq_in_t *self) { return &self->views[self->router + 1]; }

size_t tq_in_nparts(const tq_in_t *self)
{
    size_t skip = (size_t)self->router + 1;
    return self->nviews > skip ? self->nviews - skip : 0;
}

int tq_in_oversized(const tq_in_t *self) { return self->oversized; }

const char *tq_in_peer_address(const tq_in_t *self)
{
    /* A ROUTER's routing-id frame is made locally and carries no
     * metadata: ask the first frame the peer sent. Metadata lives as long
     * as the frame, i.e. until the next recv. */
    size_t i = (size_t)self->router;
    if (self->nmsgs <= i)
        return "?";
    const char *a = zmq_msg_gets(&self->msgs[i], "Peer-Address");
    if (!a || !*a)
        return "?";
    /* A dual-stack (ZMQ_IPV6) socket reports IPv4 peers as IPv4-mapped
     * IPv6 addresses: show them as the IPv4 address they are. */
    static const char mapped[] = "::ffff:";
    if (strncmp(a, mapped, sizeof mapped - 1) == 0 && strchr(a + sizeof mapped - 1, '.'))
        return a + sizeof mapped - 1;
    return a;
}

int tq_in_head(const tq_in_t *self, int *type, tq_bytes_t *body, tq_err_t *err)
{
    if (self->nmsgs <= (size_t)self->router)
        return tq_err_set(err, TQ_ERR_MALFORMED, "message has no frame 0");
    if (tq_decode_head(tq_in_frame0(self), type, body, err) < 0)
        return -1;
    if (self->oversized)
        return tq_err_set(err, TQ_ERR_TOO_MANY, "%s message has more than %d frames",
                          tq_msg_type_name(*type), TQ_MAX_FRAMES);
    if (self->toolarge)
        return tq_err_set(err, TQ_ERR_TOO_LARGE,
                          "%s message carries more than %zu bytes (max_payload + %u)",
                          tq_msg_type_name(*type), self->max_bytes,
                          TQ_BATCH_BYTES + TQ_MSG_OVERHEAD);
    if (self->badpack == 1)
        return tq_err_set(err, TQ_ERR_MALFORMED,
                          "packed %s message has %zu data frames, expected none",
                          tq_msg_type_name(*type), self->nframes - 1);
    if (self->badpack == 3)
        return tq_err_set(err, TQ_ERR_MALFORMED,
                          "packed %s message: the pack length at the end of frame 0 is "
                          "missing or larger than the frame",
                          tq_msg_type_name(*type));
    if (self->badpack)
        return tq_err_set(err, TQ_ERR_MALFORMED,
                          "packed %s message: record %zu runs past the end of the pack",
                          tq_msg_type_name(*type), self->badpack_at);
    return 0;
}
