#!/usr/bin/env python3
"""coprocess_square.py - the built-in `square`, as a taskq coprocess.

    taskq-worker ... --fn sq='python3 examples/coprocess_square.py' --fn-mode sq=coprocess

The worker starts one of these per slot and keeps it running; each task
is one request on stdin and one reply on stdout (docs/workers.md,
"Coprocess framing"; integers big-endian):

    request  4-byte length, then the payload
    reply    1 status byte (0 = ok, 1 = error), 4-byte length, then the
             result (ok) or the error text (error)

EOF on stdin means "stop": exit 0. Anything printed to stdout that is
not a reply breaks the framing (the worker then kills and restarts the
coprocess), so log to stderr.
"""
import struct
import sys


def read_exact(f, n):
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def square(payload):
    """(status, bytes) for one payload, as the built-in answers."""
    text = payload.decode("ascii", "replace").strip()
    try:
        n = int(text, 10)
    except ValueError:
        return 1, ("square: payload is not an integer: %r" % text[:64]).encode()
    if not -(2 ** 63) <= n < 2 ** 63:
        return 1, b"square: payload is out of range (64-bit integers only)"
    return 0, ("%d * %d = %d" % (n, n, n * n)).encode()


def main():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = read_exact(inp, 4)
        if head is None:
            return 0
        (n,) = struct.unpack(">I", head)
        payload = read_exact(inp, n)
        if payload is None:
            return 0
        status, data = square(payload)
        out.write(struct.pack(">BI", status, len(data)) + data)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
