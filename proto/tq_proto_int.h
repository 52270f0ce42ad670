/* tq_proto_int.h - private to proto/: the abort on out-of-memory shared
 * by the codec (tq_proto.c) and the ZeroMQ framing (tq_frame.c). (proto/
 * uses nothing of ours but itself; invariants are TQ_ASSERT, tq_err.h.) */
#ifndef TQ_PROTO_INT_H
#define TQ_PROTO_INT_H

#include "tq_err.h"

/* Print "taskq: file:line: what" and abort (internal allocations). */
void tq_proto_die(const char *what, const char *file, int line) __attribute__((noreturn));


#endif
