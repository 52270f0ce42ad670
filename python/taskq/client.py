"""taskq.Client: submit tasks to a taskq master and collect their outcomes.

The connection lives in a background I/O thread that owns the ZeroMQ
socket: it says HELLO, sends heartbeats (so a caller busy for minutes is
not dropped), batches submissions (up to 1024 tasks or 4 MiB a message),
ACKs every outcome it receives, and after a master restart or a silence
says HELLO again and re-sends what the master has not acknowledged:
unacknowledged SUBMITs (every task without a key of its own gets a
session key, so a re-sent task is never stored twice), WAITs for the
tasks still outstanding, and pending STATUS/ADMIN/CANCEL requests.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import queue as _queue
import secrets
import threading
import time
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import zmq

from . import _proto
from ._auth import peer_keys, read_authkey
from ._conn import Link, default_name, error_body
from .errors import (AuthenticationError, ConnectionError, Refused, TaskCancelled, TaskFailed,
                     TaskqError, TaskUnknown, Timeout)

Payload = Union[bytes, str]

DEFAULT_CONNECT = "tcp://127.0.0.1:7070"
DEFAULT_WINDOW = 1000


def _payload_bytes(p: Any) -> Tuple[bytes, bool]:
    """(bytes, was_text) of a payload: bytes as is, str as UTF-8."""
    if isinstance(p, (bytes, bytearray, memoryview)):
        return bytes(p), False
    if isinstance(p, str):
        return p.encode("utf-8"), True
    raise TypeError("a taskq payload is bytes or str, not %s" % type(p).__name__)


def _check_name(what: str, name: str, empty_ok: bool = False) -> bytes:
    b = name.encode("ascii", "replace") if isinstance(name, str) else bytes(name)
    if not b and empty_ok:
        return b
    if not 1 <= len(b) <= _proto.MAX_NAME or any(
            not (chr(c).isalnum() and c < 128) and chr(c) not in "_.:-" for c in b):
        raise ValueError("%s name %r is not valid (1..64 of A-Z a-z 0-9 _ . : -)" % (what, name))
    return b


class Handle:
    """One submitted task. ``id`` blocks until the master stored it;
    ``result()`` blocks until its outcome: the result (``str`` if the
    payload was ``str``, else ``bytes``), or raises TaskFailed,
    TaskCancelled or TaskUnknown.

    Handles are light (no lock of their own: they share their client's
    condition variable), so a map over millions of items stays cheap;
    ``future`` makes a concurrent.futures.Future on first use."""

    __slots__ = ("_cond", "_core", "_id", "_id_error", "_done", "_value", "_exc", "_text",
                 "_cbs", "_fut", "__weakref__")

    def __init__(self, core: "_Core", text: bool) -> None:
        self._core = core
        self._cond = core.cond
        self._id: Optional[int] = None
        self._id_error: Optional[BaseException] = None
        self._done = False
        self._value: Any = None
        self._exc: Optional[BaseException] = None
        self._text = text
        self._cbs: Optional[List[Callable[["Handle"], None]]] = None
        self._fut: Optional[concurrent.futures.Future] = None

    def __repr__(self) -> str:
        return "<taskq.Handle id=%s %s>" % (self._id, "done" if self._done else "pending")

    @property
    def id(self) -> int:
        """The task id (waits for the master to store the task; raises
        Refused if it would not)."""
        if self._id is None and self._id_error is None:
            with self._cond:
                while self._id is None and self._id_error is None:
                    self._cond.wait()
        if self._id_error is not None:
            raise self._id_error
        return self._id  # type: ignore[return-value]

    def done(self) -> bool:
        """True once the outcome is here (or the submission failed)."""
        return self._done

    def _wait(self, timeout: Optional[float]) -> None:
        if self._done:
            return
        with self._cond:
            if timeout is None:
                while not self._done:
                    self._cond.wait()
                return
            end = time.monotonic() + timeout
            while not self._done:
                left = end - time.monotonic()
                if left <= 0:
                    raise Timeout("no outcome within %s s" % timeout)
                self._cond.wait(left)

    def result(self, timeout: Optional[float] = None) -> Payload:
        """The task's result; waits up to ``timeout`` seconds (None: for
        ever), then raises taskq.Timeout (the task goes on)."""
        self._wait(timeout)
        if self._exc is not None:
            raise self._exc
        return self._value

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The task's error (None if it succeeded); waits like result()."""
        self._wait(timeout)
        return self._exc

    def cancel(self) -> bool:
        """Cancel the task at the master; True if it was cancelled (it had
        not finished), False if it had finished already or is unknown."""
        return self._core.client_cancel(self.id) == "cancelled"

    def add_done_callback(self, fn: Callable[["Handle"], None]) -> None:
        """Call fn(handle) when the outcome is here (at once if it is);
        from the client's I/O thread, so keep it short."""
        with self._cond:
            if not self._done:
                if self._cbs is None:
                    self._cbs = []
                self._cbs.append(fn)
                return
        fn(self)

    @property
    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future for the outcome (made on first use)."""
        with self._cond:
            f = self._fut
            if f is None:
                f = self._fut = concurrent.futures.Future()
                f.set_running_or_notify_cancel()
            else:
                return f
        self.add_done_callback(_resolve_future)
        return f

    # I/O thread side, with the condition held; callbacks go in fire.
    def _complete(self, value: Any, exc: Optional[BaseException], fire: List["Handle"]) -> None:
        if self._done:
            return
        self._value = value
        self._exc = exc
        self._done = True
        if self._cbs:
            fire.append(self)

    def _set_id(self, tid: Optional[int], err: Optional[BaseException], fire: List["Handle"]
                ) -> None:
        self._id = tid
        self._id_error = err
        if err is not None:
            self._complete(None, err, fire)

    def _finish(self, tid: int, status: int, attempts: int, data: bytes,
                fire: List["Handle"]) -> None:
        if status == _proto.TASK_DONE:
            self._complete(data.decode("utf-8", "replace") if self._text else data, None, fire)
        elif status in (_proto.TASK_FAILED, _proto.TASK_DEAD):
            self._complete(None, TaskFailed(tid, _proto.TASK_STATUS_NAMES[status], attempts,
                                            data.decode("utf-8", "replace")), fire)
        elif status == _proto.TASK_CANCELLED:
            self._complete(None, TaskCancelled(tid), fire)
        else:
            self._complete(None, TaskUnknown(tid), fire)


def _resolve_future(h: Handle) -> None:
    f = h._fut
    if f is not None and not f.done():
        if h._exc is not None:
            f.set_exception(h._exc)
        else:
            f.set_result(h._value)


class _Batch:
    __slots__ = ("req", "seq", "items", "frames")

    def __init__(self, req: int, seq: int, items: List[Tuple[tuple, bytes, Handle]],
                 frames: List[bytes]):
        self.req = req
        self.seq = seq  # order of first sending (never wraps, unlike req)
        self.items = items
        self.frames = frames


class _Core(threading.Thread):
    """The I/O thread. Callers talk to it only through ``post``."""

    def __init__(self, endpoint: str, keys: dict, name: str, connect_timeout: float,
                 reconnect_timeout: float, keypair: bool = False) -> None:
        super().__init__(name="taskq-client-io", daemon=True)
        self.endpoint = endpoint
        self.keypair = keypair
        self.ctx = zmq.Context()
        self.link = Link(self.ctx, endpoint, keys)
        self.name = name
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.cmds: Deque[tuple] = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.wake_flag = False
        self.cond = threading.Condition(threading.Lock())  # guards every Handle's state
        self.fire: List[Handle] = []  # handles completed with callbacks to run
        self.ready = threading.Event()
        self.fatal: Optional[BaseException] = None
        self.stopping = False
        self.closed = threading.Event()
        # I/O thread state
        self.registered = False
        self.hello_at = 0.0
        self.hello_tries = 0
        self.lost_since: Optional[float] = time.monotonic()
        self.first = True
        self.req = 0
        self.session = secrets.token_bytes(16)
        self.keyctr = itertools.count(1)
        self.ack_timeout = 60.0
        self.welcomes = 0  # WELCOMEs received: 1 unless it had to say HELLO again
        self.resent = 0  # tasks sent again after a re-HELLO (for tests and logs)
        self.outq: Deque[Tuple[tuple, bytes, Handle]] = collections.deque()
        self.pending: "collections.OrderedDict[int, _Batch]" = collections.OrderedDict()
        self.waiting: Dict[int, List[Handle]] = {}
        # Outcomes that may answer a SUBMIT not acknowledged yet (a fast
        # task's RESULTS can overtake its SUBMIT_ACK; a key already held is
        # answered at once): id -> (status, attempts, data, seq of the last
        # SUBMIT sent when it came). Kept only while a SUBMIT sent before it
        # came is unacknowledged: the master answers a SUBMIT only after
        # receiving it, so later outcomes cannot belong to earlier batches.
        self.early: "collections.OrderedDict[int, Tuple[int, int, bytes, int]]" = \
            collections.OrderedDict()
        self.seq = 0
        self.to_ack: List[int] = []
        self.status_q: Deque[concurrent.futures.Future] = collections.deque()
        self.reqs: Dict[int, Tuple[str, concurrent.futures.Future, List[bytes]]] = {}

    # ---- caller side -------------------------------------------------------

    def post(self, cmd: tuple) -> None:
        if self.fatal is not None:
            raise self.fatal
        if self.stopping:
            raise TaskqError("client is closed")
        self.cmds.append(cmd)
        if not self.wake_flag:
            self.wake_flag = True
            try:
                os.write(self.wake_w, b"x")
            except BlockingIOError:
                pass

    # ---- I/O thread --------------------------------------------------------

    def next_req(self) -> int:
        self.req = self.req % 0xFFFFFFFF + 1
        return self.req

    def run(self) -> None:
        try:
            self._open()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - handed to every waiter
            if self.fatal is None:
                self.fatal = e if isinstance(e, TaskqError) else ConnectionError(str(e))
        finally:
            self._fail_all(self.fatal or TaskqError("client is closed"))
            self.link.close(linger_ms=200 if self.fatal is None else 0)
            self.ctx.term()
            os.close(self.wake_r)
            self.ready.set()
            self.closed.set()

    def _open(self) -> None:
        self.link.open()
        self.registered = False
        self.link.hello({"role": "client", "name": self.name})
        self.hello_at = time.monotonic()
        self.poller = zmq.Poller()
        self.poller.register(self.link.sock, zmq.POLLIN)
        self.poller.register(self.link.mon, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)

    def _lost(self, why: str) -> None:
        if self.lost_since is None:
            self.lost_since = time.monotonic()
        if self.reconnect_timeout <= 0:
            raise ConnectionError("lost connection to master at %s (%s)" % (self.endpoint, why))
        self._open()

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.stopping and not self.cmds:
                if self.registered:
                    self._flush_acks()
                    self.link.send_msg("BYE")
                return
            # Deadlines: heartbeat, silence, connect/reconnect bounds.
            if self.registered:
                if self.link.silent(now):
                    self._lost("master silent for %.1f s" % self.link.hb_timeout_s)
                    continue
                if self.link.heartbeat_due(now):
                    self.link.send_msg("HEARTBEAT")
            else:
                limit = self.connect_timeout if self.first else self.reconnect_timeout
                if now - self.lost_since >= limit:
                    if self.first:
                        raise ConnectionError("cannot connect to %s" % self.endpoint)
                    raise ConnectionError("lost connection to master at %s" % self.endpoint)
                if now - self.hello_at >= max(3.0, self.link.hb_timeout_s) and self.link.handshook:
                    self._open()  # the HELLO went to a connection that died
            wait = self.link.hb_s if self.registered else 0.1
            events = dict(self.poller.poll(max(1, int(wait * 1000))))
            if self.wake_r in events:
                self.wake_flag = False
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if self.link.mon in events or not self.registered:
                if self.link.handshake_verdict() < 0:
                    raise AuthenticationError("authentication failed connecting to %s (%s)" % (
                        self.endpoint,
                        "key not accepted: is this key's .pub in the master's --allow-keys, "
                        "and master_key_file the master's public key?" if self.keypair
                        else "wrong authkey?"))
            with self.cond:
                try:
                    self._drain_cmds()
                    if self.link.sock in events:
                        for _ in range(256):
                            m = self.link.recv()
                            if m is None:
                                break
                            self._handle(m)
                    if self.registered:
                        self._flush_acks()
                        self._flush_submits()
                finally:
                    self.cond.notify_all()
            self._fire()

    def _drain_cmds(self) -> None:
        while self.cmds:
            cmd = self.cmds.popleft()
            kind = cmd[0]
            if kind == "submit":
                self.outq.extend(cmd[1])
            elif kind == "wait":
                for tid, h in cmd[1]:
                    self.waiting.setdefault(tid, []).append(h)
                if self.registered:
                    self._send_ids("WAIT", [t for t, _ in cmd[1]])
            elif kind == "status":
                self.status_q.append(cmd[2])
                if self.registered:
                    self.link.send_msg("STATUS", body=cmd[1])
            elif kind in ("admin", "cancel"):
                req = self.next_req()
                if kind == "admin":
                    body = dict(cmd[1], req=req)
                    frames = _proto.encode("ADMIN", body=body)
                else:
                    frames = _proto.encode("CANCEL", fields={"req": req},
                                           records=[(i,) for i in cmd[1]])
                self.reqs[req] = (kind, cmd[2], frames)
                if self.registered:
                    self.link.send(frames)
            elif kind == "plain":  # PUT or GET (plain queues): answered by req
                _, name, fields, records, data, fut = cmd
                req = self.next_req()
                frames = _proto.encode(name, fields=dict(fields, req=req), records=records,
                                       data=data)
                self.reqs[req] = (name, fut, frames)
                if self.registered:
                    self.link.send(frames)
            elif kind == "stop":
                self.stopping = True

    def _send_ids(self, name: str, ids: Sequence[int]) -> None:
        for i in range(0, len(ids), _proto.MAX_BATCH):
            chunk = ids[i:i + _proto.MAX_BATCH]
            self.link.send_msg(name, fields={"req": self.next_req()}, records=[(t,) for t in chunk])

    def _flush_acks(self) -> None:
        if self.to_ack:
            self._send_ids("ACK", self.to_ack)
            self.to_ack = []

    def _flush_submits(self) -> None:
        """Send queued tasks in batches of up to 1024 tasks / 4 MiB; tasks
        with a key of their own go apart from those with session keys."""
        while self.outq:
            scoped = self.outq[0][0][6]
            items: List[Tuple[tuple, bytes, Handle]] = []
            size = 0
            nb = False
            while self.outq and len(items) < _proto.MAX_BATCH and size < _proto.SEND_BYTES:
                rec, data, h = self.outq[0]
                if rec[6] != scoped:
                    break
                if len(data) > self.link.max_payload:
                    self.outq.popleft()
                    h._set_id(None, Refused(4, "payload too large (%d bytes, the master's "
                                            "max_payload is %d)" % (len(data),
                                                                     self.link.max_payload)),
                              self.fire)
                    continue
                self.outq.popleft()
                items.append((rec, data, h))
                size += len(data)
                nb = nb or rec[5] > 0
            if not items:
                continue
            req = self.next_req()
            flags = _proto.SUBMIT_SUBSCRIBE | (_proto.SUBMIT_SCOPED_KEYS if scoped else 0) | (
                _proto.SUBMIT_NOT_BEFORE if nb else 0)
            records = [(r[0], r[1], r[7], r[2], r[3], r[4], r[5]) for r, _, _ in items]
            frames = _proto.encode("SUBMIT", fields={"req": req, "flags": flags},
                                   records=records, data=[d for _, d, _ in items],
                                   packed=self.link.packed)
            self.seq += 1
            self.pending[req] = _Batch(req, self.seq, items, frames)
            self.link.send(frames)

    def _handle(self, m: _proto.Decoded) -> None:
        t = m.msg.type
        if t == _proto.RESULTS:
            for r, data in zip(m.records, m.data):
                tid = r["id"]
                self.to_ack.append(tid)
                hs = self.waiting.pop(tid, None)
                if hs is not None:
                    for h in hs:
                        h._finish(tid, r["status"], r["attempts"], data, self.fire)
                if self.pending:  # it may also answer a SUBMIT on its way (same key)
                    self.early[tid] = (r["status"], r["attempts"], data, self.seq)
                    self.early.move_to_end(tid)
        elif t == _proto.SUBMIT_ACK:
            b = self.pending.pop(m.fields["req"], None)
            if b is None:
                return
            for (rec, data, h), r in zip(b.items, m.records):
                tid = r["id"]
                h._set_id(tid, None, self.fire)
                e = self.early.get(tid)
                if e is not None:
                    h._finish(tid, e[0], e[1], e[2], self.fire)
                else:
                    self.waiting.setdefault(tid, []).append(h)
            self._prune_early()
        elif t == _proto.STATUS_REPLY:
            if self.status_q:
                f = self.status_q.popleft()
                if not f.done():
                    f.set_result(m.body)
        elif t in (_proto.ADMIN_REPLY, _proto.CANCEL_ACK):
            req = (m.body or {}).get("req", 0) if t == _proto.ADMIN_REPLY else m.fields["req"]
            ent = self.reqs.pop(req, None)
            if ent is not None and not ent[1].done():
                if t == _proto.ADMIN_REPLY:
                    ent[1].set_result(m.body)
                else:
                    ent[1].set_result([(r["id"], _proto.CANCEL_OUTCOME_NAMES.get(r["outcome"],
                                                                                str(r["outcome"])))
                                       for r in m.records])
        elif t in (_proto.PUT_ACK, _proto.GOT):
            ent = self.reqs.pop(m.fields["req"], None)
            if ent is None or ent[1].done():
                return  # nobody waits: un-acked items go back when we leave
            if t == _proto.GOT:
                ids = [r["id"] for r in m.records]
                if ids:
                    self._send_ids("TAKE_ACK", ids)
                ent[1].set_result(list(m.data))
            else:
                ent[1].set_result([r["id"] for r in m.records])
        elif t == _proto.WELCOME:
            self._welcome(m.body)
        elif t == _proto.ERROR:
            e = error_body(m)
            if e["code"] == _proto.ERR_NOT_REGISTERED:
                if self.registered:  # the master restarted or forgot us
                    self.lost_since = time.monotonic()
                    self.link.hello({"role": "client", "name": self.name})
                    self.hello_at = time.monotonic()
                    self.registered = False
                return
            err = Refused(e["code"], e["message"])
            if not self.registered and e["ref"] == 0:
                raise err  # HELLO refused
            b = self.pending.pop(e["ref"], None)
            if b is not None:
                for _, _, h in b.items:
                    h._set_id(None, err, self.fire)
                self._prune_early()
                return
            ent = self.reqs.pop(e["ref"], None)
            if ent is not None and not ent[1].done():
                ent[1].set_exception(err)

    def _prune_early(self) -> None:
        """Keep only the outcomes that came after the oldest unacknowledged
        SUBMIT was sent (only those may answer it)."""
        if not self.pending:
            self.early.clear()
            return
        oldest = next(iter(self.pending.values())).seq  # pending is in sending order
        while self.early:
            tid, e = next(iter(self.early.items()))
            if e[3] >= oldest:
                break
            self.early.popitem(last=False)

    def _welcome(self, body: Dict[str, Any]) -> None:
        self.link.welcome(body)
        self.registered = True
        self.welcomes += 1
        self.lost_since = None
        if self.first:
            self.first = False
            self.ready.set()
        # Re-send what the master may have missed (PROTOCOL.md section 5).
        if self.waiting:
            self._send_ids("WAIT", list(self.waiting))
        for b in self.pending.values():
            self.link.send(b.frames)
            self.resent += len(b.items)
        for _ in self.status_q:
            self.link.send_msg("STATUS", body={})
        for _, _, frames in self.reqs.values():
            self.link.send(frames)

    def _fail_all(self, err: BaseException) -> None:
        with self.cond:
            fire = self.fire
            for b in self.pending.values():
                for _, _, h in b.items:
                    h._set_id(None, err, fire)
            self.pending.clear()
            for _, _, h in self.outq:
                h._set_id(None, err, fire)
            self.outq.clear()
            while self.cmds:
                cmd = self.cmds.popleft()
                if cmd[0] == "submit":
                    for _, _, h in cmd[1]:
                        h._set_id(None, err, fire)
                elif cmd[0] in ("status", "admin", "cancel"):
                    cmd[2].set_exception(err)
                elif cmd[0] == "wait":
                    for _, h in cmd[1]:
                        h._complete(None, err, fire)
            for hs in self.waiting.values():
                for h in hs:
                    h._complete(None, err, fire)
            self.waiting.clear()
            self.cond.notify_all()
        self._fire()
        for f in self.status_q:
            if not f.done():
                f.set_exception(err)
        for _, f, _ in self.reqs.values():
            if not f.done():
                f.set_exception(err)
        self.reqs.clear()

    def _fire(self) -> None:
        """Run the done-callbacks of handles completed meanwhile (outside the lock)."""
        while self.fire:
            h = self.fire.pop()
            for cb in h._cbs or ():
                try:
                    cb(h)
                except Exception:  # noqa: BLE001 - a caller's callback must not kill I/O
                    pass

    def client_cancel(self, tid: int) -> str:
        f: concurrent.futures.Future = concurrent.futures.Future()
        self.post(("cancel", [tid], f))
        try:
            return f.result(self.ack_timeout or None)[0][1]
        except concurrent.futures.TimeoutError:
            raise Timeout("no reply from master at %s within %s s"
                          % (self.endpoint, self.ack_timeout)) from None


class Client:
    """A connection to a taskq master, for submitting tasks and reading outcomes.

    ``connect`` defaults to ``$TASKQ_CONNECT`` (else tcp://127.0.0.1:7070),
    ``authkey_file`` to ``$TASKQ_AUTHKEY_FILE``; ``authkey`` (bytes) may be
    given instead of a file. Key-pair mode (docs/security.md): ``key_file``
    (this client's NAME.key from ``taskq keygen``) and ``master_key_file``
    (the master's .pub), defaulting to ``$TASKQ_KEY_FILE`` and
    ``$TASKQ_MASTER_KEY_FILE``; then no authkey is needed. A request the
    key's identity may not make raises TaskqError with the master's
    FORBIDDEN message. Raises AuthenticationError within a few
    seconds when the master has another key, ConnectionError after
    ``connect_timeout`` seconds when it does not answer, KeyFileError for
    a bad key file. Use as a context manager, or call ``close()``.
    """

    def __init__(self, connect: Optional[str] = None, authkey_file: Optional[str] = None, *,
                 authkey: Optional[bytes] = None, name: Optional[str] = None,
                 connect_timeout: float = 10.0, reconnect_timeout: float = 60.0,
                 ack_timeout: float = 60.0, key_file: Optional[str] = None,
                 master_key_file: Optional[str] = None) -> None:
        self.endpoint = connect or os.environ.get("TASKQ_CONNECT") or DEFAULT_CONNECT
        key_file = key_file or os.environ.get("TASKQ_KEY_FILE", "")
        master_key_file = master_key_file or os.environ.get("TASKQ_MASTER_KEY_FILE", "")
        keypair = bool(key_file or master_key_file)
        akf = authkey_file or os.environ.get("TASKQ_AUTHKEY_FILE", "")
        if authkey is None and (akf or not keypair):
            authkey = read_authkey(akf)
        keys = peer_keys(bytes(authkey) if authkey is not None else None, key_file,
                         master_key_file)
        self.ack_timeout = ack_timeout
        self._core = _Core(self.endpoint, keys, name or default_name(),
                           connect_timeout, reconnect_timeout, keypair)
        self._core.ack_timeout = ack_timeout
        self._core.start()
        self._core.ready.wait()
        if self._core.fatal is not None:
            raise self._core.fatal
        self.max_payload = self._core.link.max_payload

    # ---- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Say BYE and close (outstanding handles fail with TaskqError)."""
        c = self._core
        if not c.closed.is_set():
            try:
                c.post(("stop",))
            except TaskqError:
                pass
            c.closed.wait(5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- tasks -------------------------------------------------------------

    def _record(self, fn: str, queue: str, key: Optional[Union[bytes, str]], priority: int,
                timeout: float, retries: int, delay: float) -> tuple:
        fnb = _check_name("function", fn)
        qb = _check_name("queue", queue or "", empty_ok=True)
        if not -2 ** 31 <= priority < 2 ** 31:
            raise ValueError("priority %r is not a 32-bit signed integer" % priority)
        if not 0 <= retries <= 65535:
            raise ValueError("retries %r is not in 0..65535" % retries)
        tms = int(round(timeout * 1000)) if timeout else 0
        if timeout and tms == 0:
            tms = 1
        if not 0 <= tms < 2 ** 32:
            raise ValueError("timeout %r out of range" % timeout)
        nb = int(time.time() * 1000 + delay * 1000) if delay and delay > 0 else 0
        if key is not None and key != b"" and key != "":
            kb = key.encode() if isinstance(key, str) else bytes(key)
            if len(kb) > _proto.MAX_KEY:
                raise ValueError("key is %d bytes, at most %d" % (len(kb), _proto.MAX_KEY))
            return (fnb, qb, priority, tms, retries, nb, False, kb)
        return (fnb, qb, priority, tms, retries, nb, True, None)

    def submit(self, fn: str, payload: Payload, *, queue: str = "", priority: int = 0,
               timeout: float = 0, retries: int = 0, delay: float = 0,
               key: Optional[Union[bytes, str]] = None) -> Handle:
        """Queue one task running ``fn`` on ``payload``; returns its Handle
        at once (the task goes to the master in the next batch).

        ``timeout``: run timeout in seconds (0: none); ``retries``: re-runs
        after a failed or timed-out run; ``delay``: seconds before it may
        run; ``key``: an idempotency key (submitting it again gives the
        same task)."""
        return self.submit_many(fn, [payload], queue=queue, priority=priority, timeout=timeout,
                                retries=retries, delay=delay, key=key)[0]

    def submit_many(self, fn: str, payloads: Iterable[Payload], *, queue: str = "",
                    priority: int = 0, timeout: float = 0, retries: int = 0, delay: float = 0,
                    key: Optional[Union[bytes, str]] = None) -> List[Handle]:
        """submit() for many payloads at once (one batch); returns their Handles."""
        rec = self._record(fn, queue, key, priority, timeout, retries, delay)
        items = []
        core = self._core
        for p in payloads:
            data, text = _payload_bytes(p)
            h = Handle(core, text)
            r = rec
            if rec[6]:  # a session key per task: safe to re-send
                r = rec[:7] + (core.session + next(core.keyctr).to_bytes(8, "little"),)
            items.append((r, data, h))
        if key is not None and len(items) > 1:
            raise ValueError("key= names one task; give one payload")
        if items:
            core.post(("submit", items))
        return [h for _, _, h in items]

    def task(self, task_id: int, text: bool = False) -> Handle:
        """A Handle for a task submitted earlier (by anyone): WAITs for it."""
        h = Handle(self._core, text)
        h._id = int(task_id)
        self._core.post(("wait", [(int(task_id), h)]))
        return h

    def map(self, fn: str, iterable: Iterable[Payload], *, window: int = DEFAULT_WINDOW,
            **submit_kw: Any) -> Iterator[Payload]:
        """Run ``fn`` on every item; yield the results in input order.

        At most ``window`` tasks are outstanding at once, so memory stays
        bounded however long the input is (it is read lazily). A failed
        task raises its TaskFailed when its turn comes."""
        if window < 1:
            raise ValueError("window must be at least 1")
        it = iter(iterable)
        pending: Deque[Handle] = collections.deque()
        exhausted = False
        while True:
            # Refill once half the window is free: big batches, and the
            # master never runs dry while the head result is awaited.
            if not exhausted and len(pending) <= window // 2:
                exhausted = self._fill(fn, it, window - len(pending), pending.extend, submit_kw)
            if not pending:
                return
            yield pending.popleft().result()

    def _fill(self, fn: str, it: Iterator[Payload], room: int,
              take: Callable[[List[Handle]], None], submit_kw: Dict[str, Any]) -> bool:
        """Submit up to ``room`` items of ``it`` in batches; True when it is exhausted."""
        while room > 0:
            n = min(room, _proto.MAX_BATCH)
            chunk = list(itertools.islice(it, n))
            if chunk:
                take(self.submit_many(fn, chunk, **submit_kw))
                room -= len(chunk)
            if len(chunk) < n:
                return True
        return False

    def map_unordered(self, fn: str, iterable: Iterable[Payload], *,
                      window: int = DEFAULT_WINDOW, **submit_kw: Any) -> Iterator[Payload]:
        """As map(), but yields each result as soon as it comes."""
        if window < 1:
            raise ValueError("window must be at least 1")
        done: "_queue.SimpleQueue[Handle]" = _queue.SimpleQueue()
        it = iter(iterable)
        outstanding = [0]
        exhausted = False

        def take(hs: List[Handle]) -> None:
            for h in hs:
                outstanding[0] += 1
                h.add_done_callback(done.put)

        while True:
            if not exhausted and outstanding[0] <= window // 2:
                exhausted = self._fill(fn, it, window - outstanding[0], take, submit_kw)
            if outstanding[0] == 0:
                return
            h = done.get()
            outstanding[0] -= 1
            yield h.result()

    def as_completed(self, handles: Iterable[Handle],
                     timeout: Optional[float] = None) -> Iterator[Handle]:
        """Yield the handles as their tasks finish (like concurrent.futures)."""
        by_future = {h.future: h for h in handles}
        try:
            for f in concurrent.futures.as_completed(by_future, timeout):
                yield by_future[f]
        except concurrent.futures.TimeoutError:
            raise Timeout("not every task finished within %s s" % timeout) from None

    # ---- requests ----------------------------------------------------------

    def _call(self, cmd: tuple, fut: concurrent.futures.Future) -> Any:
        self._core.post(cmd)
        try:
            return fut.result(self.ack_timeout or None)
        except concurrent.futures.TimeoutError:
            raise Timeout("no reply from master at %s within %s s"
                          % (self.endpoint, self.ack_timeout)) from None

    def cancel(self, task_id: Union[int, Handle]) -> str:
        """Cancel a task: "cancelled", "finished" (nothing done) or "unknown"."""
        tid = task_id.id if isinstance(task_id, Handle) else int(task_id)
        return self.cancel_many([tid])[0][1]

    def cancel_many(self, ids: Sequence[int]) -> List[Tuple[int, str]]:
        """Cancel tasks: [(id, outcome)] in order (at most 1024 ids a call)."""
        f: concurrent.futures.Future = concurrent.futures.Future()
        return self._call(("cancel", [int(i) for i in ids], f), f)

    def status(self) -> Dict[str, Any]:
        """The master's status document (PROTOCOL.md 12.4)."""
        f: concurrent.futures.Future = concurrent.futures.Future()
        return self._call(("status", {}, f), f)

    # ---- plain put/get queues (PROTOCOL.md PUT, GET) -------------------------

    def put_items(self, queue: str, items: Sequence[bytes]) -> List[int]:
        """Append items (bytes, 1..1024) to the plain queue ``queue``;
        returns their ids once the master has journaled them."""
        q = _check_name("queue", queue)
        f: concurrent.futures.Future = concurrent.futures.Future()
        return self._call(("plain", "PUT", {}, [(q,) for _ in items], list(items), f), f)

    def get_items(self, queue: str, wait: float = 0.0, max: int = 1) -> List[bytes]:
        """Take up to ``max`` items from the head of the plain queue
        ``queue``, waiting up to ``wait`` seconds (at most a day) for one;
        [] when none came. Taken items are acknowledged (gone)."""
        q = _check_name("queue", queue)
        ms = int(round(wait * 1000))
        if ms < 0 or ms > 86400000:
            raise ValueError("wait must be 0..86400 seconds")
        f: concurrent.futures.Future = concurrent.futures.Future()
        self._core.post(("plain", "GET", {"timeout_ms": ms, "max": int(max)}, [(q,)], [], f))
        try:
            return f.result(wait + (self.ack_timeout or 60.0))
        except concurrent.futures.TimeoutError:
            raise Timeout("no reply from master at %s" % self.endpoint) from None

    def _admin(self, body: Dict[str, Any]) -> Dict[str, Any]:
        f: concurrent.futures.Future = concurrent.futures.Future()
        return self._call(("admin", body, f), f)

    def dead(self, queue: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every dead task (the master's dead set), in id order."""
        out: List[Dict[str, Any]] = []
        after = 0
        while True:
            body: Dict[str, Any] = {"op": "dead", "after": after}
            if queue:
                body["queue"] = queue
            r = self._admin(body)
            out.extend(r.get("tasks", []))
            if not r.get("more") or not r.get("tasks"):
                return out
            after = r["tasks"][-1]["id"]

    def _dead_op(self, op: str, ids: Optional[Sequence[int]], all: bool,
                 queue: Optional[str]) -> int:
        if (ids is None) == (not all):
            raise ValueError("give ids or all=True")
        if ids is not None:
            n = 0
            ids = list(ids)
            for i in range(0, len(ids), _proto.MAX_ADMIN_IDS):
                n += self._admin({"op": op, "ids": ids[i:i + _proto.MAX_ADMIN_IDS]})["count"]
            return n
        body: Dict[str, Any] = {"op": op, "all": True}
        if queue:
            body["queue"] = queue
        return self._admin(body)["count"]

    def retry(self, ids: Optional[Sequence[int]] = None, *, all: bool = False,
              queue: Optional[str] = None) -> int:
        """Put dead tasks back in their queues; returns how many."""
        return self._dead_op("retry", ids, all, queue)

    def purge(self, ids: Optional[Sequence[int]] = None, *, all: bool = False,
              queue: Optional[str] = None) -> int:
        """Delete dead tasks; returns how many."""
        return self._dead_op("purge", ids, all, queue)

    def pause(self, queue: str = "default") -> bool:
        """Stop dispatch from a queue; True if it changed."""
        return bool(self._admin({"op": "pause", "queue": queue}).get("changed"))

    def resume(self, queue: str = "default") -> bool:
        """Start dispatch from a paused queue again; True if it changed."""
        return bool(self._admin({"op": "resume", "queue": queue}).get("changed"))
