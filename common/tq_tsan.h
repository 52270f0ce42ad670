/* tq_tsan.h - telling ThreadSanitizer about hand-offs it cannot see.
 *
 * libzmq is not built with -fsanitize=thread, so an object handed from
 * one thread to another as a pointer in a ZeroMQ message (a finished task
 * from a worker's slot thread to its connection thread) carries no
 * happens-before edge TSan knows of, and every later access looks like a
 * race. TQ_TSAN_RELEASE(p) before the send and TQ_TSAN_ACQUIRE(p) after
 * the receive give it that edge. Outside a TSan build they are nothing. */
#ifndef TQ_TSAN_H
#define TQ_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define TQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TQ_TSAN 1
#endif
#endif

#ifdef TQ_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TQ_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define TQ_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TQ_TSAN_RELEASE(p) ((void)(p))
#define TQ_TSAN_ACQUIRE(p) ((void)(p))
#endif

#endif
