"""``multiprocessing.managers.BaseManager``'s front door over a taskq master.

The tutorial's distributed-process scripts run with one changed line::

    from taskq.managers import BaseManager   # was: from multiprocessing.managers ...

A registered typeid (``QueueManager.register('get_task_queue')``) names a
*plain queue* of the master (PROTOCOL.md PUT/GET): the proxy's ``put`` and
``get`` behave like ``queue.Queue``'s and raise ``queue.Full`` and
``queue.Empty``. The queue lives in the master, journaled: the
``callable`` given to ``register`` (the tutorial's ``lambda: task_queue``)
is accepted and not called. Objects travel as JSON, never pickle:
anything JSON cannot carry is refused with ``TypeError``.

``start()`` runs a local ``taskq-master`` (``$TASKQ_MASTER`` or the one on
``PATH``) bound to ``address`` with a temporary data dir, the way
``BaseManager.start()`` starts a server process; ``shutdown()`` stops it.
``connect()`` connects to a running one. The authkey: the C programs
accept keys of at least 16 bytes with at least 3 distinct byte values;
such an authkey is the cluster key as is. A shorter or trivial one (the
tutorial's ``b'abc'``) is stretched to the key
``sha256(b"taskq.managers\\0" + authkey).hexdigest()`` (64 bytes), on
both sides alike, so that the same authkey still means the same cluster
and another authkey is refused (``AuthenticationError``).
"""

import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

from . import _proto
from .client import Client
from .errors import Refused, TaskqError

__all__ = ["BaseManager", "QueueProxy", "cluster_key"]

_MAX_WAIT = 86400.0  # a GET waits at most a day; longer waits loop


def cluster_key(authkey: bytes) -> bytes:
    """The cluster key for a manager authkey (see the module text)."""
    authkey = bytes(authkey)
    if len(authkey) >= _proto.AUTHKEY_MIN and len(set(authkey)) >= _proto.AUTHKEY_MIN_DISTINCT \
            and len(authkey) <= _proto.AUTHKEY_MAX and not authkey.endswith(b"\n"):
        return authkey
    return hashlib.sha256(b"taskq.managers\0" + authkey).hexdigest().encode()


def _endpoint(address: Tuple[str, int], bind: bool) -> str:
    host, port = address
    if not host:
        host = "*" if bind else "127.0.0.1"
    return "tcp://%s:%d" % (host, int(port))


def _encode(obj: Any) -> bytes:
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise TypeError("taskq.managers queues carry JSON values (None, bool, int, float, str, "
                        "list, dict with str keys); %r cannot be sent: %s" % (type(obj).__name__, e)
                        ) from None


class QueueProxy:
    """A plain queue of the master, with ``queue.Queue``'s put/get."""

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self._name = name

    def __repr__(self) -> str:
        return "<taskq.managers.QueueProxy %r>" % self._name

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Append obj (JSON), returning once the master has journaled it.
        It never waits for room: block and timeout are accepted for
        queue.Queue's signature, and queue.Full is raised at once when the
        master holds no more items. TypeError for what JSON cannot carry."""
        data = _encode(obj)
        try:
            self._client.put_items(self._name, [data])
        except Refused as e:
            if e.code in (5, 9):  # TOO_MANY, FULL
                raise queue.Full(str(e)) from None
            raise

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Take the item at the head. Waits up to timeout seconds (None:
        for ever) when block; raises queue.Empty when none came."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.0
            if block:
                wait = _MAX_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
                wait = min(wait, _MAX_WAIT)
            items = self._client.get_items(self._name, wait=wait, max=1)
            if items:
                return json.loads(items[0].decode())
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise queue.Empty()

    def get_nowait(self) -> Any:
        return self.get(False)


class _Server:
    """``get_server()``: a master run in the foreground."""

    def __init__(self, mgr: "BaseManager") -> None:
        self._mgr = mgr

    def serve_forever(self) -> None:
        self._mgr._spawn()
        try:
            self._mgr._proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self._mgr.shutdown()


class BaseManager:
    """``multiprocessing.managers.BaseManager`` over a taskq master."""

    _registry: Dict[str, Any] = {}

    def __init__(self, address: Optional[Tuple[str, int]] = None,
                 authkey: Optional[bytes] = None, serializer: str = "json",
                 ctx: Any = None, **_: Any) -> None:
        if authkey is None:
            raise TypeError("taskq.managers.BaseManager needs an authkey (bytes)")
        self.address = address or ("127.0.0.1", 50000)
        self._key = cluster_key(authkey)
        self._client: Optional[Client] = None
        self._proc: Optional[subprocess.Popen] = None
        self._tmp: Optional[str] = None

    @classmethod
    def register(cls, typeid: str, callable: Any = None, proxytype: Any = None,
                 exposed: Any = None, method_to_typeid: Any = None,
                 create_method: bool = True) -> None:
        """Register typeid: ``manager.<typeid>()`` returns the proxy of the
        master's plain queue named typeid. callable is not called (the
        queue lives in the master)."""
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)
        cls._registry[typeid] = callable
        if create_method:
            def method(self: "BaseManager") -> QueueProxy:
                return QueueProxy(self._connected(), typeid)
            method.__name__ = typeid
            setattr(cls, typeid, method)

    def _connected(self) -> Client:
        if self._client is None:
            raise TaskqError("manager not started or connected: call start() or connect()")
        return self._client

    def _spawn(self) -> None:
        exe = os.environ.get("TASKQ_MASTER") or shutil.which("taskq-master")
        if not exe:
            raise FileNotFoundError("taskq-master not found: put it on PATH or set "
                                    "$TASKQ_MASTER")
        self._tmp = tempfile.mkdtemp(prefix="taskq-manager-")
        keyfile = os.path.join(self._tmp, "authkey")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._key)
        self._proc = subprocess.Popen(
            [exe, "--bind", _endpoint(self.address, True), "--data-dir",
             os.path.join(self._tmp, "data"), "--authkey-file", keyfile, "--log-level", "warn"],
            stdin=subprocess.DEVNULL)

    def start(self, initializer: Any = None, initargs: Tuple = ()) -> None:
        """Start a local taskq-master on address and connect to it."""
        if self._proc is not None:
            raise TaskqError("already started")
        self._spawn()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._client = Client(_endpoint(self.address, False), authkey=self._key,
                                      connect_timeout=2.0)
                return
            except ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    rc = self._proc.poll()
                    self.shutdown()
                    raise TaskqError("taskq-master did not start (exit status %s)" % rc) from None

    def connect(self) -> None:
        """Connect to the master at address (AuthenticationError when its
        key is another)."""
        self._client = Client(_endpoint(self.address, False), authkey=self._key)

    def get_server(self) -> _Server:
        return _Server(self)

    def shutdown(self) -> None:
        """Disconnect; stop the master start() ran and remove its data."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "BaseManager":
        if self._client is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
