/* auth.h - the master's auth actor: a thread that answers ZAP requests
 * (RFC 27) on inproc://zeromq.zap.01 and watches the ROUTER's monitor to
 * log the address of peers whose CURVE handshake failed.
 *
 * It shares nothing with the loop thread except the keys, copied at
 * start. Start it BEFORE the ROUTER binds (so no handshake goes
 * unanswered); stop it after the ROUTER is closed. */
#ifndef TQ_MASTER_AUTH_H
#define TQ_MASTER_AUTH_H

#include "tq_authkey.h"

typedef struct tq_auth tq_auth_t;

/* Start the actor on ctx: binds the ZAP endpoint and connects to the
 * monitor endpoint `monitor_ep` (already set up with zmq_socket_monitor
 * on the ROUTER, or NULL for none). Returns when the actor is ready, or
 * NULL with a message in err (e.g. the ZAP endpoint is taken). Caller
 * owns the result (tq_auth_destroy). */
tq_auth_t *tq_auth_new(void *ctx, const tq_curve_keys_t *keys, const char *monitor_ep, char *err,
                       size_t errlen);

/* Stop the actor (a message over its pipe), join it, free it. Accepts
 * NULL; nulls *self_p. */
void tq_auth_destroy(tq_auth_t **self_p);

#endif
