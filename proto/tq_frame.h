/* tq_frame.h - taskq messages on ZeroMQ sockets: sending a built
 * tq_out_t as a multipart (or packed, PROTOCOL.md 3.1) message, and
 * receiving one into fixed storage with the frame and byte caps.
 *
 * This is the only part of proto/ that needs libzmq: the codec
 * (tq_proto.h, tq_msgs.def) builds and is tested without it. */
#ifndef TQ_FRAME_H
#define TQ_FRAME_H

#include <zmq.h>

#include "tq_proto.h"

/* Send the message on a ZeroMQ socket. routing_id: the ROUTER peer to
 * address, or NULL on a DEALER. zmq_flags: 0 or ZMQ_DONTWAIT. Returns 0,
 * or -1 with errno from zmq_send (EAGAIN, EHOSTUNREACH, ...); a failed
 * send never leaves half a message queued. The builder is left intact
 * (call tq_out_begin to reuse it). */
int tq_out_send(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags);
/* The same, but with packed != 0 and data frames totalling at most
 * TQ_BATCH_BYTES, the whole message goes as one frame (TQ_TYPE_PACKED,
 * PROTOCOL.md 3.1): only for a peer that takes packed messages. */
int tq_out_send_packed(tq_out_t *o, void *sock, const tq_bytes_t *routing_id, int zmq_flags,
                       int packed);

/* ---- waiting ------------------------------------------------------------
 * zmq_poll's contract (items, n, timeout ms or -1; revents set; returns
 * the number of ready items, or -1 with errno), in fewer system calls:
 * zmq_poll looks without waiting, asks each ZeroMQ socket for
 * ZMQ_EVENTS (a poll(2) and a getpid(2) inside libzmq each), waits, and
 * asks each again. tq_zpoll asks each socket once, waits in one poll(2)
 * on the sockets' ZMQ_FDs and the plain fds (not at all when a socket is
 * ready already), and asks again only the sockets whose ZMQ_FD fired
 * (ZMQ_FD is edge-triggered: it says "look", not "a message is here").
 * At most TQ_ZPOLL_MAX items. */
#define TQ_ZPOLL_MAX 8
int tq_zpoll(zmq_pollitem_t *items, int n, long timeout);
/* In a socket item's events: the caller has done nothing on this socket
 * since a tq_zpoll reported it not ready (no send, no receive, its
 * ZMQ_FD did not fire), so its ZMQ_EVENTS cannot have changed unseen:
 * tq_zpoll waits on its ZMQ_FD without asking first (a getpid(2) and a
 * poll(2) inside libzmq saved). Any send or receive on it ends that. */
#define TQ_ZPOLL_QUIET 0x100

/* ---- receiving ----------------------------------------------------------
 * tq_in_t receives one multipart message into fixed storage. */
typedef struct tq_in tq_in_t;

/* Caller owns the result: tq_in_destroy. */
tq_in_t *tq_in_new(void);
void tq_in_destroy(tq_in_t **self_p);

/* Receive one whole message from sock (close what the previous call
 * held first). router: 1 if frame 0 is a routing id. zmq_flags: 0 or
 * ZMQ_DONTWAIT. Returns 0, or -1 with errno (EAGAIN, EINTR, ...). A
 * message with more than TQ_MAX_FRAMES frames is read to its end and
 * marked oversized (tq_in_oversized), so the stream stays in step. A
 * packed message (TQ_TYPE_PACKED) is unpacked: tq_in_parts then shows
 * its records' data as if they had come as frames, and the head's type
 * has the bit cleared; a malformed pack is reported by tq_in_head. */
int tq_in_recv(tq_in_t *self, void *sock, int router, int zmq_flags);

/* Cap the bytes of one received message's data frames (0: no cap, the
 * default). Past it tq_in_recv lets go of the data frames as it reads
 * them (it still reads the message to its end) and tq_in_head reports
 * TQ_ERR_TOO_LARGE. The master sets TQ_MSG_MAX(max_payload). */
void tq_in_set_max_bytes(tq_in_t *self, size_t max_bytes);

/* The fd of the connection the last message came in on (ZMQ_SRCFD), or
 * -1. */
int tq_in_source_fd(const tq_in_t *self);

/* Views of what tq_in_recv got. routing id is empty on a DEALER. */
tq_bytes_t tq_in_routing_id(const tq_in_t *self);
tq_bytes_t tq_in_frame0(const tq_in_t *self);       /* empty if no frames */
const tq_bytes_t *tq_in_parts(const tq_in_t *self); /* frames after frame 0 */
size_t tq_in_nparts(const tq_in_t *self);
int tq_in_oversized(const tq_in_t *self);
/* The sender's address ("192.0.2.1") from ZeroMQ's Peer-Address
 * property of the last message, or "?" when unknown. Valid until the
 * next tq_in_recv. */
const char *tq_in_peer_address(const tq_in_t *self);

/* The ZAP User-Id of the connection the last message came in on (the
 * master's auth actor sets it: an identity name, docs/security.md), or
 * "" when none. Valid until the next tq_in_recv. */
const char *tq_in_user_id(const tq_in_t *self);
/* ---- keeping received bytes (no copy) -----------------------------------
 * A reference to the ZeroMQ frame that holds part i of the last message
 * (a packed message's records all live in its one frame), so that a view
 * of the part stays valid after the next tq_in_recv: the frame is moved
 * out of the tq_in_t (no copy) and freed with its last reference. data:
 * where the caller's view of the part starts (a decoder's item), checked
 * against the part. NULL (copy the bytes instead) when i is out of range
 * or is not that view, the message was cut
 * (oversized, too large, bad pack) or the frame is too small for ZeroMQ
 * to keep its bytes outside the message (TQ_IN_KEEP_MIN). References
 * may be dropped from any thread. */
typedef struct tq_msgref tq_msgref_t;
#define TQ_IN_KEEP_MIN 256
tq_msgref_t *tq_in_keep(tq_in_t *self, size_t i, const void *data);
/* Drop one reference (NULL is fine); the frame goes with the last. */
void tq_msgref_drop(tq_msgref_t *ref);

/* Head and body of the received message, with the frame-count check:
 * returns 0, or -1 with err (signature, version, type, oversized). */
int tq_in_head(const tq_in_t *self, int *type, tq_bytes_t *body, tq_err_t *err);

#endif
