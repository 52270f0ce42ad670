/* tq_wire.c - growable output buffer and bounded input cursor.
 * Little-endian integers, assembled byte by byte so the code is the same
 * on any host and never makes an unaligned access. */
#include "tq_wire.h"

#include "tq_proto_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- views ------------------------------------------------------------ */

tq_bytes_t tq_bytes_str(const char *s)
{
    tq_bytes_t b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

int tq_bytes_eq(tq_bytes_t a, tq_bytes_t b)
{
    if (a.len != b.len)
        return 0;
    return a.len == 0 || memcmp(a.data, b.data, a.len) == 0;
}

int tq_bytes_eq_str(tq_bytes_t b, const char *s) { return tq_bytes_eq(b, tq_bytes_str(s)); }

/* ---- output buffer ---------------------------------------------------- */

void tq_buf_init(tq_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void tq_buf_free(tq_buf_t *b)
{
    free(b->data);
    tq_buf_init(b);
}

/* Geometric growth (x2, at least 64 bytes) so that appending n bytes one
 * field at a time costs O(n) overall. */
void tq_buf_reserve(tq_buf_t *b, size_t more)
{
    TQ_ASSERT(more <= SIZE_MAX - b->len);
    size_t need = b->len + more;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        tq_proto_die("out of memory growing a buffer", __FILE__, __LINE__);
    b->data = p;
    b->cap = cap;
}

void tq_buf_put(tq_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    tq_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void tq_buf_u8(tq_buf_t *b, uint8_t v)
{
    tq_buf_reserve(b, 1);
    b->data[b->len++] = v;
}

static void put_le(tq_buf_t *b, uint64_t v, size_t n)
{
    tq_buf_reserve(b, n);
    uint8_t *p = b->data + b->len;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    b->len += n;
}

void tq_buf_u16(tq_buf_t *b, uint16_t v) { put_le(b, v, 2); }
void tq_buf_u32(tq_buf_t *b, uint32_t v) { put_le(b, v, 4); }
void tq_buf_u64(tq_buf_t *b, uint64_t v) { put_le(b, v, 8); }
void tq_buf_i32(tq_buf_t *b, int32_t v) { put_le(b, (uint32_t)v, 4); }

void tq_buf_str8(tq_buf_t *b, tq_bytes_t s)
{
    TQ_ASSERT(s.len <= 255);
    tq_buf_reserve(b, 1 + s.len);
    b->data[b->len++] = (uint8_t)s.len;
    if (s.len) {
        memcpy(b->data + b->len, s.data, s.len);
        b->len += s.len;
    }
}

void tq_buf_patch_u16(tq_buf_t *b, size_t off, uint16_t v)
{
    TQ_ASSERT(off <= b->len && b->len - off >= 2);
    b->data[off] = (uint8_t)v;
    b->data[off + 1] = (uint8_t)(v >> 8);
}

/* ---- input cursor ----------------------------------------------------- */

void tq_cursor_init(tq_cursor_t *c, tq_bytes_t b)
{
    c->pos = b.data;
    c->end = b.data ? b.data + b.len : b.data;
}

size_t tq_cursor_left(const tq_cursor_t *c) { return (size_t)(c->end - c->pos); }

static int get_le(tq_cursor_t *c, size_t n, uint64_t *v)
{
    if (tq_cursor_left(c) < n)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x |= (uint64_t)c->pos[i] << (8 * i);
    c->pos += n;
    *v = x;
    return 0;
}

int tq_cursor_u8(tq_cursor_t *c, uint8_t *v)
{
    if (c->pos == c->end)
        return -1;
    *v = *c->pos++;
    return 0;
}

int tq_cursor_u16(tq_cursor_t *c, uint16_t *v)
{
    uint64_t x;
    if (get_le(c, 2, &x) < 0)
        return -1;
    *v = (uint16_t)x;
    return 0;
}

int tq_cursor_u32(tq_cursor_t *c, uint32_t *v)
{
    uint64_t x;
    if (get_le(c, 4, &x) < 0)
        return -1;
    *v = (uint32_t)x;
    return 0;
}

int tq_cursor_u64(tq_cursor_t *c, uint64_t *v) { return get_le(c, 8, v); }

int tq_cursor_i32(tq_cursor_t *c, int32_t *v)
{
    uint64_t x;
    if (get_le(c, 4, &x) < 0)
        return -1;
    /* two's complement without implementation-defined conversion */
    uint32_t u = (uint32_t)x;
    *v = u <= INT32_MAX ? (int32_t)u : (int32_t)(u - 0x80000000u) + INT32_MIN;
    return 0;
}

int tq_cursor_bytes(tq_cursor_t *c, size_t n, tq_bytes_t *v)
{
    if (tq_cursor_left(c) < n)
        return -1;
    v->data = c->pos;
    v->len = n;
    c->pos += n;
    return 0;
}

int tq_cursor_str8(tq_cursor_t *c, tq_bytes_t *v)
{
    if (tq_cursor_left(c) < 1)
        return -1;
    size_t n = c->pos[0];
    if (tq_cursor_left(c) - 1 < n)
        return -1; /* cursor stays where it was */
    v->data = c->pos + 1;
    v->len = n;
    c->pos += 1 + n;
    return 0;
}
