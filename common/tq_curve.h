/* tq_curve.h - CURVE set-up for taskq sockets, and the handshake watch
 * that turns a failed handshake into "authentication failed". */
#ifndef TQ_CURVE_H
#define TQ_CURVE_H

#include "tq_authkey.h"

/* Make sock a CURVE server with the derived server key pair, and set
 * ZMQ_ZAP_DOMAIN "taskq" so the master's ZAP handler is consulted. Both
 * set-ups also turn on ZMQ_IPV6, so tcp://[::1]:PORT endpoints work (IPv4
 * endpoints still do).
 * Call before zmq_bind. Returns 0 or -1 (errno from zmq_setsockopt). */
int tq_curve_server(void *sock, const tq_curve_keys_t *keys);

/* Make sock a CURVE client: our key pair is the derived client pair, the
 * server's public key the derived server key. Call before zmq_connect.
 * Returns 0 or -1. */
int tq_curve_client(void *sock, const tq_curve_keys_t *keys);

/* Handshake watch for a connecting socket, built on zmq_socket_monitor.
 * Create before zmq_connect; poll tq_hswatch_socket() for ZMQ_POLLIN or
 * call tq_hswatch_poll() regularly. */
typedef struct tq_hswatch tq_hswatch_t;

/* Caller owns the result (tq_hswatch_destroy). NULL on failure. name
 * must be unique per context (used for the inproc endpoint). */
tq_hswatch_t *tq_hswatch_new(void *ctx, void *sock, const char *name);
void tq_hswatch_destroy(tq_hswatch_t **self_p);
/* The monitor PAIR socket, for zmq_poll. */
void *tq_hswatch_socket(tq_hswatch_t *self);
/* Drain pending monitor events without blocking. Returns:
 *   1  a handshake succeeded since the last call (connected)
 *   0  nothing decisive
 *  -1  authentication failed: a handshake was rejected (a wrong key on
 *      one side makes the other side drop the connection mid-handshake)
 * A single dropped handshake can be a master restarting; -1 is returned
 * after two consecutive failed handshakes with no success between, or
 * one explicit ZMQ_EVENT_HANDSHAKE_FAILED_AUTH/PROTOCOL. */
int tq_hswatch_poll(tq_hswatch_t *self);
/* 1 once any handshake has succeeded. */
int tq_hswatch_connected(const tq_hswatch_t *self);

#endif
