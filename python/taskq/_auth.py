"""The authkey file and the CURVE keys derived from it (PROTOCOL.md section 2).

The rules for the key file are the C programs' (common/tq_authkey.c): a
regular file, not a symbolic link, owned by us or root, not readable by
group or others, at most 4096 bytes; one trailing newline is removed;
the key must be at least 16 bytes with at least 3 distinct byte values.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Dict, Tuple

from . import _proto
from .errors import KeyFileError

try:
    import zmq
    import zmq.utils.z85
except ImportError:  # pragma: no cover - reported when a connection is made
    zmq = None  # type: ignore


def read_authkey(path: str) -> bytes:
    """The authkey in the file at ``path``, checked as the C programs do.
    Raises KeyFileError naming the file and what is wrong (never the key)."""
    if not path:
        raise KeyFileError("no authkey file given (use authkey_file= or TASKQ_AUTHKEY_FILE)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
                     | os.O_NONBLOCK)
    except OSError as e:
        import errno
        if e.errno == errno.ELOOP:
            raise KeyFileError("cannot read authkey file %s: it is a symbolic link "
                               "(give the real path)" % path) from None
        raise KeyFileError("cannot read authkey file %s: %s" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("authkey file %s is not a regular file" % path)
        if st.st_uid != os.geteuid() and st.st_uid != 0:
            raise KeyFileError("authkey file %s is owned by uid %d, not by us (uid %d) or root: "
                               "another user could have chosen the key; use a key file of our own"
                               % (path, st.st_uid, os.geteuid()))
        if st.st_mode & 0o077:
            raise KeyFileError("authkey file %s is readable by group or others (mode %04o); fix "
                               "it with: chmod 600 %s" % (path, st.st_mode & 0o7777, path))
        buf = b""
        while len(buf) <= _proto.AUTHKEY_MAX:
            chunk = os.read(fd, _proto.AUTHKEY_MAX + 1 - len(buf))
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(fd)
    if len(buf) > _proto.AUTHKEY_MAX:
        raise KeyFileError("authkey file %s is too long (over %d bytes)" % (path, _proto.AUTHKEY_MAX))
    if buf.endswith(b"\n"):
        buf = buf[:-1]
    if len(buf) < _proto.AUTHKEY_MIN:
        raise KeyFileError("authkey in %s is too short (%d bytes, need at least %d); create one "
                           "with: taskq-master --data-dir DIR (writes DIR/authkey)"
                           % (path, len(buf), _proto.AUTHKEY_MIN))
    distinct = len(set(buf))
    if distinct < _proto.AUTHKEY_MIN_DISTINCT:
        raise KeyFileError("authkey in %s is trivial (%d distinct byte value%s, need at least %d): "
                           "use a random key" % (path, distinct, "" if distinct == 1 else "s",
                                                 _proto.AUTHKEY_MIN_DISTINCT))
    return buf


def derive_keys(authkey: bytes) -> Dict[str, Tuple[bytes, bytes]]:
    """``{"server": (public, secret), "client": (public, secret)}``, Z85
    bytes, derived from the authkey as PROTOCOL.md section 2 says:
    BLAKE2b-256 of the key, one keyed BLAKE2b-256 seed per role, then
    libsodium's crypto_box_seed_keypair (SHA-512 of the seed, X25519)."""
    if zmq is None:
        raise ImportError("taskq needs pyzmq (Debian: apt install python3-zmq)")
    k = hashlib.blake2b(authkey, digest_size=32).digest()
    keys = {}
    for role in ("server", "client"):
        seed = hashlib.blake2b(b"taskq/v1/curve/" + role.encode(), key=k,
                               digest_size=32).digest()
        secret = zmq.utils.z85.encode(hashlib.sha512(seed).digest()[:32])
        keys[role] = (zmq.curve_public(secret), secret)
    return keys
