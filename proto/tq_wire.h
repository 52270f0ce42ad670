/* tq_wire.h - bytes on the wire: a growable output buffer and a bounded
 * input cursor. Little-endian integers throughout. */
#ifndef TQ_WIRE_H
#define TQ_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A view of bytes owned by someone else. */
typedef struct {
    const uint8_t *data;
    size_t len;
} tq_bytes_t;

/* tq_bytes_t of a NUL-terminated string (not including the NUL). */
tq_bytes_t tq_bytes_str(const char *s);
/* 1 if a and b hold the same bytes. */
int tq_bytes_eq(tq_bytes_t a, tq_bytes_t b);
/* 1 if b equals the NUL-terminated string s. */
int tq_bytes_eq_str(tq_bytes_t b, const char *s);

/* Growable buffer. Growth aborts on out-of-memory: buffers hold our own
 * encodings, whose sizes are bounded by tq_limits.h. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} tq_buf_t;

void tq_buf_init(tq_buf_t *b);
void tq_buf_free(tq_buf_t *b);                 /* frees data, re-inits */
void tq_buf_reserve(tq_buf_t *b, size_t more); /* room for `more` bytes */
void tq_buf_put(tq_buf_t *b, const void *p, size_t n);
void tq_buf_u8(tq_buf_t *b, uint8_t v);
void tq_buf_u16(tq_buf_t *b, uint16_t v);
void tq_buf_u32(tq_buf_t *b, uint32_t v);
void tq_buf_u64(tq_buf_t *b, uint64_t v);
void tq_buf_i32(tq_buf_t *b, int32_t v);
/* u8 length then bytes; asserts len <= 255. */
void tq_buf_str8(tq_buf_t *b, tq_bytes_t s);
/* Overwrite a u16 written earlier at offset off. */
void tq_buf_patch_u16(tq_buf_t *b, size_t off, uint16_t v);

/* Bounded reader. Every getter returns 0, or -1 when fewer bytes remain
 * than it needs (the cursor is then left where it was). */
typedef struct {
    const uint8_t *pos;
    const uint8_t *end;
} tq_cursor_t;

void tq_cursor_init(tq_cursor_t *c, tq_bytes_t b);
size_t tq_cursor_left(const tq_cursor_t *c);
int tq_cursor_u8(tq_cursor_t *c, uint8_t *v);
int tq_cursor_u16(tq_cursor_t *c, uint16_t *v);
int tq_cursor_u32(tq_cursor_t *c, uint32_t *v);
int tq_cursor_u64(tq_cursor_t *c, uint64_t *v);
int tq_cursor_i32(tq_cursor_t *c, int32_t *v);
/* n raw bytes as a view. */
int tq_cursor_bytes(tq_cursor_t *c, size_t n, tq_bytes_t *v);
/* u8 length then that many bytes, as a view. */
int tq_cursor_str8(tq_cursor_t *c, tq_bytes_t *v);

#endif
