/* tq_proto_int.h - private to proto/: the abort-on-bug shared by the
 * codec (tq_proto.c, tq_msgs.c) and the ZeroMQ framing (tq_frame.c).
 * proto/ depends on nothing of ours, so it has its own. */
#ifndef TQ_PROTO_INT_H
#define TQ_PROTO_INT_H

/* Print "taskq: file:line: what" and abort. */
void tq_proto_die(const char *what, const char *file, int line) __attribute__((noreturn));

#define PROTO_ASSERT(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tq_proto_die("assertion failed: " #cond, __FILE__, __LINE__);                          \
    } while (0)

#endif
