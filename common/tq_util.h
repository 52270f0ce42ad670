/* tq_util.h - small things every program needs: checked allocation,
 * string copies, clocks, number parsing, always-on asserts. */
#ifndef TQ_UTIL_H
#define TQ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "tq_err.h" /* TQ_ASSERT, the always-on invariant check */

/* Allocation for internal, fixed-size or self-bounded objects: aborts
 * with a message on out-of-memory. Sizes a peer controls must use plain
 * malloc and fail gracefully instead. */
void *tq_malloc(size_t n);
void *tq_calloc(size_t n, size_t size);
void *tq_realloc(void *p, size_t n);
char *tq_strdup(const char *s);
void *tq_memdup(const void *p, size_t n); /* n may be 0: returns a valid pointer */

/* Copy src into dst[size], always NUL-terminated. Returns 0, or -1 if
 * src was truncated. */
int tq_strlcpy(char *dst, const char *src, size_t size);

/* Clocks. Monotonic for timers and intervals; wall clock for display
 * and TTLs that must survive a restart. */
int64_t tq_mono_ms(void);
int64_t tq_mono_us(void);
int64_t tq_wall_ms(void);
int64_t tq_wall_us(void);

/* Strict number parsing of a whole string (no trailing junk, no
 * overflow). Return 0 or -1. */
int tq_parse_i64(const char *s, int64_t *out);
int tq_parse_u64(const char *s, uint64_t *out);
/* Seconds as a decimal ("1.5", "30") into milliseconds; >= 0. Digits
 * past the millisecond are dropped, except that a positive value below
 * 1 ms ("0.0004") is 1 ms: only an exact zero ("0", "0.000") is 0, which
 * many flags read as "none". */
int tq_parse_seconds_ms(const char *s, int64_t *out_ms);

/* A numeric port in a tcp:// endpoint must be 0..65535: ZeroMQ keeps
 * only its low 16 bits (tcp://127.0.0.1:99999 listens on, or connects
 * to, 34463). Returns 0 when ep is not tcp://, has no numeric port (`*`,
 * a service name: ZeroMQ judges those) or its port is in range; else -1
 * with "FLAG: port N in 'EP' is out of range (0..65535)" in err. */
int tq_endpoint_port_check(const char *ep, const char *flag, tq_err_t *err);

/* Number of online CPUs (>= 1). */
int tq_ncpus(void);

/* write(2) all n bytes of buf to fd, retrying after EINTR and short
 * writes. Returns 0, or -1 with errno (ENOSPC if a write made no
 * progress). */
int tq_write_all(int fd, const void *buf, size_t n);

/* FNV-1a of p[n], continuing from h (start a hash with TQ_FNV_BASIS):
 * for hash tables keyed by short byte strings (routing ids, names,
 * idempotency keys). */
#define TQ_FNV_BASIS 0xcbf29ce484222325ull
uint64_t tq_fnv1a(uint64_t h, const void *p, size_t n);

/* 1 if the n bytes are valid UTF-8. */
int tq_utf8_valid(const void *p, size_t n);

/* 1 if s is a peer name (HELLO "name"): 1..max_len bytes of printable
 * ASCII, spaces allowed only when allow_space (worker names have none:
 * they are columns in `taskq status`). */
int tq_peer_name_valid(const char *s, size_t max_len, int allow_space);

#endif
