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


def _read_checked(path: str, what: str, secret: bool) -> bytes:
    """A key-pair file's bytes, with the C programs' checks
    (common/tq_keyfile.c): a regular file, no symbolic link; a secret one
    owned by us or root and not readable by group or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
                     | os.O_NONBLOCK)
    except OSError as e:
        raise KeyFileError("cannot read %s %s: %s" % (what, path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("%s %s is not a regular file" % (what, path))
        if secret and st.st_uid != os.geteuid() and st.st_uid != 0:
            raise KeyFileError("%s %s is owned by uid %d, not by us (uid %d) or root"
                               % (what, path, st.st_uid, os.geteuid()))
        if secret and st.st_mode & 0o077:
            raise KeyFileError("%s %s is readable or writable by group or others (mode %04o); "
                               "fix it with: chmod 600 %s" % (what, path, st.st_mode & 0o7777,
                                                              path))
        buf = os.read(fd, _proto.AUTHKEY_MAX + 1)
    finally:
        os.close(fd)
    if len(buf) > _proto.AUTHKEY_MAX:
        raise KeyFileError("%s %s is too long (over %d bytes)" % (what, path, _proto.AUTHKEY_MAX))
    return buf


def read_keyfile(path: str, secret: bool) -> Tuple[bytes, bytes]:
    """(public, secret) Z85 bytes of a key-pair file made by ``taskq keygen``
    (``public-key = Z85`` and ``secret-key = Z85`` lines, docs/security.md);
    secret is b"" for a .pub file. ``secret``: a .key file is wanted (its
    pair must belong together); else a .pub (a file with a secret key in
    it is refused: a peer must never hold the master's secret)."""
    what = "key file" if secret else "public key file"
    text = _read_checked(path, what, secret)
    found: Dict[str, bytes] = {}
    for n, line in enumerate(text.split(b"\n"), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        name, eq, value = line.partition(b"=")
        name, value = name.strip().decode("ascii", "replace"), value.strip()
        if not eq or name not in ("public-key", "secret-key"):
            raise KeyFileError("%s:%d: expected 'public-key = KEY' or 'secret-key = KEY'"
                               % (path, n))
        if name in found or len(value) != 40:
            raise KeyFileError("%s:%d: %s %s" % (path, n, name, "given twice" if name in found
                                                  else "is not 40 Z85 characters"))
        found[name] = value
    if "public-key" not in found:
        raise KeyFileError("%s: no public-key line (make key files with: taskq keygen NAME)"
                           % path)
    if secret:
        if "secret-key" not in found:
            raise KeyFileError("%s: no secret-key line (a .pub file? give the .key file)" % path)
        try:
            ok = zmq.curve_public(found["secret-key"]) == found["public-key"]
        except (ValueError, zmq.ZMQError):
            ok = False
        if not ok:
            raise KeyFileError("%s: the public-key does not belong to the secret-key" % path)
    elif "secret-key" in found:
        raise KeyFileError("%s holds a secret key: give the public half (the .pub file)" % path)
    return found["public-key"], found.get("secret-key", b"")


def peer_keys(authkey: "bytes | None", key_file: str = "", master_key_file: str = ""
              ) -> Dict[str, Tuple[bytes, bytes]]:
    """The keys a client or worker connects with (as derive_keys' dict):
    its own pair from ``key_file`` (key-pair mode) or else derived from the
    authkey; the master's public key from ``master_key_file`` or else
    derived from the authkey."""
    if zmq is None:
        raise ImportError("taskq needs pyzmq (Debian: apt install python3-zmq)")
    if authkey is None and not (key_file and master_key_file):
        raise KeyFileError("key-pair mode needs the master's public key too (master_key_file)"
                           if key_file else
                           "master_key_file needs this program's key pair too (key_file)"
                           if master_key_file else
                           "no authkey file given (use authkey_file= or TASKQ_AUTHKEY_FILE)")
    keys = derive_keys(authkey) if authkey is not None else {}
    if key_file:
        keys["client"] = read_keyfile(key_file, True)
    if master_key_file:
        keys["server"] = (read_keyfile(master_key_file, False)[0], b"")
    return keys
