/* tq_curve.c - CURVE socket options and the handshake watch. */
#include "tq_curve.h"

#include "tq_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ZAP domain the master's handler answers for. */
#define TQ_ZAP_DOMAIN "taskq"
/* Longest inproc endpoint used for a monitor. */
#define TQ_HSWATCH_ENDPOINT_MAX 128
/* Failed handshakes in a row, with no success between, taken as a wrong
 * key (one alone can be a master restarting). */
#define TQ_HSWATCH_FAILS 2

int tq_curve_server(void *sock, const tq_curve_keys_t *keys)
{
    int one = 1;
    /* IPv6 endpoints (tcp://[::1]:7070) need ZMQ_IPV6; IPv4 still works. */
    if (zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, keys->server_secret, 32) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, TQ_ZAP_DOMAIN, strlen(TQ_ZAP_DOMAIN)) < 0)
        return -1;
    return 0;
}

int tq_curve_client(void *sock, const tq_curve_keys_t *keys)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, keys->server_public, 32) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, keys->client_public, 32) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, keys->client_secret, 32) < 0)
        return -1;
    return 0;
}

struct tq_hswatch {
    void *sock;    /* the watched socket (not owned) */
    void *pair;    /* our end of the monitor */
    int connected; /* 1 once a handshake succeeded */
    int fails;     /* failed handshakes since the last success */
};

tq_hswatch_t *tq_hswatch_new(void *ctx, void *sock, const char *name)
{
    if (!ctx || !sock || !name)
        return NULL;
    char endpoint[TQ_HSWATCH_ENDPOINT_MAX];
    int n = snprintf(endpoint, sizeof endpoint, "inproc://tq-hswatch-%s", name);
    if (n < 0 || (size_t)n >= sizeof endpoint) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECTED;
    if (zmq_socket_monitor(sock, endpoint, events) < 0)
        return NULL;
    void *pair = zmq_socket(ctx, ZMQ_PAIR);
    if (!pair) {
        zmq_socket_monitor(sock, NULL, 0);
        return NULL;
    }
    int zero = 0;
    zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(pair, endpoint) < 0) {
        int e = errno;
        zmq_close(pair);
        zmq_socket_monitor(sock, NULL, 0);
        errno = e;
        return NULL;
    }
    tq_hswatch_t *self = tq_calloc(1, sizeof *self);
    self->sock = sock;
    self->pair = pair;
    return self;
}

void tq_hswatch_destroy(tq_hswatch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_hswatch_t *self = *self_p;
    zmq_socket_monitor(self->sock, NULL, 0);
    int zero = 0;
    zmq_setsockopt(self->pair, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(self->pair);
    free(self);
    *self_p = NULL;
}

void *tq_hswatch_socket(tq_hswatch_t *self) { return self ? self->pair : NULL; }

/* Read one monitor event without blocking. Returns 1 with *event set, 0
 * when none is pending, -1 on error. Drains all frames of the event. */
static int read_event(void *pair, uint16_t *event)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, pair, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return errno == EAGAIN ? 0 : -1;
    }
    int ok = zmq_msg_size(&frame) >= sizeof(uint16_t) + sizeof(uint32_t);
    if (ok)
        memcpy(event, zmq_msg_data(&frame), sizeof *event); /* native byte order */
    int more = zmq_msg_more(&frame);
    zmq_msg_close(&frame);
    /* Skip the address frame (and anything a future libzmq adds). */
    while (more) {
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
    }
    if (!ok)
        *event = 0;
    return 1;
}

int tq_hswatch_poll(tq_hswatch_t *self)
{
    if (!self)
        return 0;
    int result = 0;
    uint16_t event;
    while (read_event(self->pair, &event) == 1) {
        switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            self->connected = 1;
            self->fails = 0;
            result = 1;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: result = -1; break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            if (++self->fails >= TQ_HSWATCH_FAILS)
                result = -1;
            break;
        default:
            /* CONNECTED / DISCONNECTED alone decide nothing. */
            break;
        }
        if (result < 0)
            break; /* decisive: leave the rest for the next call */
    }
    return result;
}

int tq_hswatch_connected(const tq_hswatch_t *self) { return self ? self->connected : 0; }
