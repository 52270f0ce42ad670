/* auth.h - the master's auth actor: a thread that answers ZAP requests
 * (RFC 27) on inproc://zeromq.zap.01 and watches the ROUTER's monitor to
 * log the address of peers whose CURVE handshake failed, and to hold the
 * number of open connections to --max-connections.
 *
 * libzmq accepts every TCP connection itself and has no per-socket cap.
 * The actor counts connections from the monitor's ACCEPTED and
 * DISCONNECTED events; past the cap it shuts a connection down
 * (shutdown(2) on its fd, after checking the fd is still that
 * connection), and libzmq then closes it as if the peer had gone. The
 * connection shut down is the oldest one that has delivered no message
 * yet (one still in, or idle after, the handshake: what a flood without
 * the key consists of), else the new one: peers that talk are never cut.
 *
 * It shares with the loop thread the keys (copied at start) and a table
 * of "this fd delivered a message" flags (atomic bytes, set by the loop
 * through tq_auth_mark_active). Start it BEFORE the ROUTER binds (so no
 * handshake goes unanswered); stop it after the ROUTER is closed. */
#ifndef TQ_MASTER_AUTH_H
#define TQ_MASTER_AUTH_H

#include "access.h"
#include "tq_authkey.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct tq_auth tq_auth_t;

typedef struct {
    size_t max_connections; /* open connections at most; 0 = no cap */
    int fd_limit;           /* RLIMIT_NOFILE: every fd is below it */
    int64_t handshake_ms;   /* ZMQ_HANDSHAKE_IVL, for the log only */
    int accept_shared;      /* accept the authkey-derived client pair (User-Id
                               TQ_IDENT_SHARED); keys->client_public is read
                               only then */
} tq_auth_cfg_t;

/* Start the actor on ctx: binds the ZAP endpoint and connects to the
 * monitor endpoint `monitor_ep` (already set up with zmq_socket_monitor
 * on the ROUTER for ACCEPTED, ACCEPT_FAILED, DISCONNECTED and the
 * HANDSHAKE_FAILED events, or NULL for none: then nothing is counted).
 * Returns when the actor is ready, or NULL with a message in err (e.g.
 * the ZAP endpoint is taken). Caller owns the result (tq_auth_destroy). */
tq_auth_t *tq_auth_new(void *ctx, const tq_curve_keys_t *keys, const char *monitor_ep,
                       const tq_auth_cfg_t *cfg, tq_err_t *err);

/* Any thread: accept exactly the keys of allow from now on (besides the
 * shared pair when cfg->accept_shared), each with its name as the ZAP
 * User-Id; NULL: none. The keys and names are copied. */
void tq_auth_set_keys(tq_auth_t *self, const tq_allow_t *allow);

/* A connection as the loop saw it (its fd and the peer's address), so
 * that it can be shut down later: libzmq then closes it as if the peer
 * had gone. */
typedef struct {
    int fd; /* -1: none */
    socklen_t len;
    struct sockaddr_storage sa;
} tq_connref_t;

/* Record the connection on fd (ZMQ_SRCFD of a message just received). */
void tq_connref_get(int fd, tq_connref_t *ref);
/* Shut the connection down if fd is still that connection (same peer
 * address and port: an fd closed and reused is left alone). Returns 1
 * if it was shut down. */
int tq_connref_cut(const tq_connref_t *ref);

/* Loop thread: a message came in on connection fd (zmq_msg_get
 * ZMQ_SRCFD), so that connection finished its handshake and talks; the
 * connection cap never cuts it. Ignores fd < 0. */
void tq_auth_mark_active(tq_auth_t *self, int fd);

/* Any thread: connections refused for a wrong key since start, and
 * connections open now (as of the last monitor event). */
void tq_auth_counts(const tq_auth_t *self, uint64_t *auth_failures, uint64_t *open_conns);

/* Stop the actor (a message over its pipe), join it, free it. Accepts
 * NULL; nulls *self_p. */
void tq_auth_destroy(tq_auth_t **self_p);

#endif
