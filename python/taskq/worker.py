"""taskq.Worker: serve Python functions to a taskq master.

::

    worker = taskq.Worker()                  # TASKQ_CONNECT, TASKQ_AUTHKEY_FILE

    @worker.function("square")
    def square(payload: str) -> str:
        n = int(payload)
        return "%d * %d = %d" % (n, n, n * n)

    sys.exit(worker.run(concurrency=4))      # threads; processes=True for CPU-bound code

It behaves as taskq-worker does (docs/workers.md): slots and credit,
prefetch, heartbeats, KILL, run timeouts, reconnecting (with an instance
id drawn once per run, so results of runs that finished while the master
was away are still taken), drain on SIGTERM/SIGINT, and its exit
statuses: 0 after a clean drain, 3 when the authkey is wrong.

Threads cannot be stopped from outside: with threads, a task past its
run timeout is reported failed at once (``timed out after S s``) and a
KILLed task's result is dropped, but the slot comes back only when the
function returns. With ``processes=True`` each slot is a child process
that is killed and started again, as taskq-worker does with a task's
process group.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import zmq

from . import _proto
from ._auth import peer_keys, read_authkey
from ._conn import Link, default_name, error_body
from .client import DEFAULT_CONNECT, _check_name
from .errors import EXIT_CONNECT, EXIT_OK, Fail

Fn = Callable[[Any], Any]


def _log(msg: str) -> None:
    sys.stderr.write("taskq-worker.py[%d]: %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


def _run_fn(fn: Fn, binary: bool, payload: bytes) -> Tuple[int, bytes]:
    """(run status, data) of one call: the return value as bytes (str as
    UTF-8, other values by str()), or the exception as its error text."""
    try:
        arg: Any = payload if binary else payload.decode("utf-8", "surrogateescape")
        r = fn(arg)
        if isinstance(r, (bytes, bytearray, memoryview)):
            return _proto.RUN_OK, bytes(r)
        if r is None:
            return _proto.RUN_OK, b""
        return _proto.RUN_OK, str(r).encode("utf-8", "surrogateescape")
    except BaseException as e:  # noqa: BLE001 - the task's failure, not ours
        if isinstance(e, (KeyboardInterrupt, SystemExit)) and threading.current_thread() is \
                threading.main_thread():
            raise
        if isinstance(e, Fail) and e.args and isinstance(e.args[0], (bytes, bytearray)):
            return _proto.RUN_FAILED, bytes(e.args[0])
        text = str(e) if isinstance(e, Fail) else "%s: %s" % (type(e).__name__, e)
        return _proto.RUN_FAILED, text.encode("utf-8", "replace")


def _timeout_text(ms: int) -> bytes:
    """"timed out after 1.5 s", as the C worker says it (workerlib/run.c)."""
    frac = ("%03d" % (ms % 1000)).rstrip("0")
    return ("timed out after %d%s s" % (ms // 1000, "." + frac if frac else "")).encode()


def _child_main(conn: Any, functions: Dict[str, Tuple[Fn, bool]]) -> None:
    """A process slot: run (fn, payload) requests until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker drains; it kills us when it must
    while True:
        try:
            fname, payload = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        fn, binary = functions[fname]
        conn.send(_run_fn(fn, binary, payload))


class _Job:
    __slots__ = ("id", "attempt", "fn", "payload", "timeout_ms", "timeout_s", "state", "deadline",
                 "killed", "reported")

    def __init__(self, tid: int, attempt: int, fn: str, payload: bytes, timeout_ms: int):
        self.id = tid
        self.attempt = attempt
        self.fn = fn
        self.payload = payload
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000.0
        self.state = "queued"  # queued, running, done
        self.deadline = 0.0
        self.killed = False  # KILL, or handed back: no outcome is sent
        self.reported = False  # an outcome (timeout) was sent before the run ended


class Worker:
    """Serves registered Python functions to a taskq master.

    ``connect``/``authkey_file`` default to ``$TASKQ_CONNECT`` /
    ``$TASKQ_AUTHKEY_FILE`` (KeyFileError, exit status 8, for a bad key
    file); ``prefetch``: tasks taken beyond the slots; ``drain_timeout``:
    seconds running tasks get to finish after SIGTERM/SIGINT."""

    def __init__(self, connect: Optional[str] = None, authkey_file: Optional[str] = None, *,
                 authkey: Optional[bytes] = None, name: Optional[str] = None, prefetch: int = 0,
                 drain_timeout: float = 30.0, key_file: Optional[str] = None,
                 master_key_file: Optional[str] = None) -> None:
        self.endpoint = connect or os.environ.get("TASKQ_CONNECT") or DEFAULT_CONNECT
        # key-pair mode (docs/security.md): its own pair and the master's public key
        key_file = key_file or os.environ.get("TASKQ_KEY_FILE", "")
        master_key_file = master_key_file or os.environ.get("TASKQ_MASTER_KEY_FILE", "")
        akf = authkey_file or os.environ.get("TASKQ_AUTHKEY_FILE", "")
        if authkey is None and (akf or not (key_file or master_key_file)):
            authkey = read_authkey(akf)
        self._keys = peer_keys(bytes(authkey) if authkey is not None else None, key_file,
                               master_key_file)
        self._keypair = bool(key_file or master_key_file)
        self.name = name or default_name()
        if not 0 <= prefetch <= _proto.MAX_SLOTS:
            raise ValueError("prefetch %r is not in 0..4096" % prefetch)
        self.prefetch = prefetch
        self.drain_timeout = drain_timeout
        self.instance = secrets.token_hex(8)
        self.functions: Dict[str, Tuple[Fn, bool]] = {}
        self._stops = 0
        self._wake_w: Optional[int] = None

    # ---- registration ------------------------------------------------------

    def function(self, name: str, *, binary: bool = False) -> Callable[[Fn], Fn]:
        """Decorator: serve the function as ``name``. It gets the payload as
        ``str`` (``bytes`` with binary=True) and returns the result (str,
        bytes, or anything str() turns into text); an exception fails the
        task with ``ExceptionType: message``."""
        def deco(fn: Fn) -> Fn:
            self.register(name, fn, binary=binary)
            try:  # so Pool.apply_async(fn, ...) submits to this name
                fn.__taskq_name__ = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return fn
        return deco

    def register(self, name: str, fn: Fn, *, binary: bool = False) -> None:
        _check_name("function", name)
        if name not in self.functions and len(self.functions) >= _proto.MAX_FUNCTIONS:
            raise ValueError("at most %d functions per worker" % _proto.MAX_FUNCTIONS)
        self.functions[name] = (fn, binary)

    def stop(self) -> None:
        """Start a drain (as SIGTERM does); a second call skips the wait.
        Safe from any thread and from signal handlers."""
        self._stops += 1
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"s")
            except OSError:
                pass

    # ---- running -----------------------------------------------------------

    def run(self, concurrency: Optional[int] = None, processes: bool = False) -> int:
        """Serve until stopped; returns taskq-worker's exit status: 0 after
        a clean drain, 3 when the master has another authkey."""
        if not self.functions:
            raise ValueError("no functions registered (use @worker.function(NAME))")
        n = concurrency or os.cpu_count() or 1
        if not 1 <= n <= _proto.MAX_SLOTS:
            raise ValueError("concurrency %r is not in 1..4096" % concurrency)
        if n + self.prefetch > _proto.MAX_SLOTS:
            raise ValueError("concurrency + prefetch is over 4096")
        return _Engine(self, n, processes).run()


class _Slot(threading.Thread):
    """One slot: runs jobs from the engine's queue in this thread, or in
    a child process of its own (processes=True)."""

    def __init__(self, eng: "_Engine", i: int) -> None:
        super().__init__(name="taskq-slot-%d" % i, daemon=True)
        self.eng = eng
        self.proc: Any = None
        self.conn: Any = None

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, self.eng.w.functions),
                                daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _kill_child(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
            self.conn.close()
            self.proc = None

    def run(self) -> None:
        eng = self.eng
        try:
            while True:
                job = eng.jobq.get()
                if job is None:
                    return
                if job.killed:
                    eng.done(job, None)
                    continue
                job.state = "running"
                if job.timeout_s:
                    job.deadline = time.monotonic() + job.timeout_s
                if not eng.processes:
                    fn, binary = eng.w.functions[job.fn]
                    eng.done(job, _run_fn(fn, binary, job.payload))
                    continue
                eng.done(job, self._in_child(job))
        finally:
            self._kill_child()

    def _in_child(self, job: _Job) -> Optional[Tuple[int, bytes]]:
        if self.proc is None:
            with self.eng.fork_lock:
                self._spawn()
        try:
            self.conn.send((job.fn, job.payload))
            while True:
                if self.conn.poll(0.05):
                    return self.conn.recv()
                if job.killed:
                    self._kill_child()
                    return None
                if job.deadline and time.monotonic() >= job.deadline:
                    self._kill_child()
                    return (_proto.RUN_TIMEOUT, _timeout_text(job.timeout_ms))
        except (EOFError, OSError):
            code = self.proc.exitcode if self.proc is not None else None
            self._kill_child()
            return (_proto.RUN_FAILED, b"process slot died: exit status %s" % str(code).encode())


class _Engine:
    """The worker's loop: owns the socket; slots report through done()."""

    def __init__(self, w: Worker, slots: int, processes: bool) -> None:
        self.w = w
        self.slots = slots
        self.processes = processes
        self.jobq: "multiprocessing.queues.SimpleQueue[Optional[_Job]]"
        import queue
        self.jobq = queue.SimpleQueue()  # type: ignore[assignment]
        self.fork_lock = threading.Lock()
        self.finished: Deque[Tuple[_Job, Optional[Tuple[int, bytes]]]] = collections.deque()
        self.jobs: Dict[Tuple[int, int], _Job] = {}
        self.out: Deque[Tuple[int, int, int, bytes]] = collections.deque()
        self.credit = 0
        self.registered = False
        self.draining = False
        self.drain_deadline = 0.0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.wake_lock = threading.Lock()

    # slot threads
    def done(self, job: _Job, outcome: Optional[Tuple[int, bytes]]) -> None:
        self.finished.append((job, outcome))
        with self.wake_lock:  # never write to the pipe once run() closed it
            if self.wake_w >= 0:
                try:
                    os.write(self.wake_w, b"d")
                except BlockingIOError:
                    pass

    def _hello(self) -> None:
        busy = min(len(self.jobs), self.slots + self.w.prefetch)
        self.credit = 0  # what finished before this HELLO is not in its busy
        self.link.hello({"role": "worker", "name": self.w.name, "instance": self.w.instance,
                         "slots": self.slots, "prefetch": self.w.prefetch, "busy": busy,
                         "packed": True, "functions": sorted(self.w.functions)})
        self.registered = False
        self.hello_at = time.monotonic()

    def _open(self) -> None:
        self.link.open()
        self.poller = zmq.Poller()
        self.poller.register(self.link.sock, zmq.POLLIN)
        self.poller.register(self.link.mon, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self._hello()

    def run(self) -> int:
        self.threads = [_Slot(self, i) for i in range(self.slots)]
        if self.processes:  # fork the slots before ZeroMQ starts its threads
            for t in self.threads:
                t._spawn()
        old = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, lambda *_: self.w.stop())
        self.w._wake_w = self.wake_w
        self.w._stops = 0
        self.quiet = False
        self.ctx = zmq.Context()
        self.link = Link(self.ctx, self.w.endpoint, self.w._keys)
        try:
            for t in self.threads:
                t.start()
            self._open()
            return self._loop()
        finally:
            for _ in self.threads:
                self.jobq.put(None)
            for j in self.jobs.values():
                j.killed = True
            self.link.close(linger_ms=500)
            self.ctx.term()
            self.w._wake_w = None
            for s, h in old.items():
                signal.signal(s, h)
            if self.processes:  # their children are killed; threads running Python code are not
                for t in self.threads:
                    t.join(2)
            with self.wake_lock:
                os.close(self.wake_r)
                os.close(self.wake_w)
                self.wake_w = -1

    def _loop(self) -> int:
        backoff = 0.1
        reach_log = time.monotonic()
        while True:
            now = time.monotonic()
            if self.w._stops and not self.draining:
                self._start_drain()
            if self.draining and self._drain_over(now):
                return self._finish_drain()
            if self.registered:
                if self.link.silent(now):
                    _log("master at %s silent for %.1f s; reconnecting" % (
                        self.w.endpoint, self.link.hb_timeout_s))
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    self._open()
                    continue
                if self.link.heartbeat_due(now):
                    self.link.send_msg("HEARTBEAT")
            elif now - self.hello_at >= max(3.0, self.link.hb_timeout_s):
                if not self.link.handshook and now - reach_log >= 5:
                    _log("cannot reach master at %s, retrying" % self.w.endpoint)
                    reach_log = now
                if self.link.handshook:
                    self._open()
                else:
                    self.hello_at = now
            timeout = self.link.hb_s if self.registered else 0.1
            if self.draining:
                timeout = min(timeout, 0.05)
            for j in self.jobs.values():  # thread slots: report run timeouts at once
                if j.deadline and not self.processes and not j.reported and not j.killed:
                    if now >= j.deadline:
                        j.reported = True
                        self.out.append((j.id, j.attempt, _proto.RUN_TIMEOUT,
                                         _timeout_text(j.timeout_ms)))
                    else:
                        timeout = min(timeout, j.deadline - now)
            events = dict(self.poller.poll(max(1, int(timeout * 1000))))
            if self.wake_r in events:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if self.link.mon in events or not self.registered:
                if self.link.handshake_verdict() < 0:
                    _log("authentication failed connecting to %s (%s)" % (
                        self.w.endpoint,
                        "key not accepted: is this key's .pub in the master's --allow-keys?"
                        if self.w._keypair else "wrong authkey?"))
                    return EXIT_CONNECT
            while self.finished:
                job, outcome = self.finished.popleft()
                self._finished(job, outcome)
            if self.link.sock in events:
                for _ in range(256):
                    m = self.link.recv()
                    if m is None:
                        break
                    if self._handle(m):  # WELCOME
                        backoff = 0.1
            if self.registered:
                self._flush()

    def _finished(self, job: _Job, outcome: Optional[Tuple[int, bytes]]) -> None:
        if self.jobs.get((job.id, job.attempt)) is not job:
            return  # handed back by a drain
        del self.jobs[(job.id, job.attempt)]
        job.state = "done"
        self.credit += 1
        if outcome is None or job.killed or job.reported:
            return
        status, data = outcome
        mp = self.link.max_payload
        if status == _proto.RUN_OK and len(data) > mp:
            status, data = _proto.RUN_FAILED, b"result exceeds max payload (%d bytes)" % len(data)
        if len(data) > mp:
            data = data[:mp].decode("utf-8", "ignore").encode("utf-8")
        self.out.append((job.id, job.attempt, status, data))

    def _handle(self, m: _proto.Decoded) -> bool:
        t = m.msg.type
        if t == _proto.DISPATCH:
            release = []
            for r, payload in zip(m.records, m.data):
                fn = r["fn"].decode("ascii", "replace")
                job = _Job(r["id"], r["attempt"], fn, payload, r["timeout_ms"])
                if self.draining:
                    release.append((job.id, job.attempt))
                    continue
                if fn not in self.w.functions:
                    self.credit += 1
                    self.out.append((job.id, job.attempt, _proto.RUN_FAILED,
                                     b"unknown function " + r["fn"]))
                    continue
                self.jobs[(job.id, job.attempt)] = job
                self.jobq.put(job)
            if release:
                self.link.send_msg("RELEASE", records=release)
        elif t == _proto.KILL:
            for r in m.records:
                job = self.jobs.get((r["id"], r["attempt"]))
                if job is not None:
                    job.killed = True
        elif t == _proto.QUIET:  # `taskq worker quiet`: no new tasks (DRAIN tells the master)
            if not self.quiet and not self.draining:
                self.quiet = True
                _log("quiet at the master's request: taking no new tasks")
                self.link.send_msg("DRAIN")
        elif t == _proto.STOP:  # `taskq worker stop`: as a first stop()
            if not self.w._stops:
                _log("stop at the master's request")
                self.w.stop()
        elif t == _proto.WELCOME:
            self.link.welcome(m.body or {})
            self.registered = True
            if self.draining or self.quiet:
                self.link.send_msg("DRAIN")
            return True
        elif t == _proto.ERROR:
            e = error_body(m)
            if e["code"] == _proto.ERR_NOT_REGISTERED:
                if self.registered:
                    _log("master at %s does not know us (restarted?); saying HELLO again"
                         % self.w.endpoint)
                    self._hello()
            else:
                _log("master says (code %d): %s" % (e["code"], e["message"]))
        return False

    def _flush(self) -> None:
        """Send finished outcomes and freed credit in RESULTs (1024 records / 4 MiB each)."""
        while self.out or self.credit:
            batch: List[Tuple[int, int, int, bytes]] = []
            size = 0
            while self.out and len(batch) < _proto.MAX_BATCH and size < _proto.SEND_BYTES:
                batch.append(self.out.popleft())
                size += len(batch[-1][3])
            credit = min(self.credit, _proto.MAX_SLOTS)
            self.credit -= credit
            self.link.send(_proto.encode("RESULT", fields={"credit": credit},
                                         records=[(i, a, s) for i, a, s, _ in batch],
                                         data=[d for _, _, _, d in batch],
                                         packed=self.link.packed))

    # ---- drain -------------------------------------------------------------

    def _start_drain(self) -> None:
        self.draining = True
        self.drain_deadline = time.monotonic() + self.w.drain_timeout
        _log("draining: %d task(s) held" % len(self.jobs))
        if self.registered:
            self.link.send_msg("DRAIN")
        # Tasks not started yet go back to the master at once.
        release = [k for k, j in self.jobs.items() if j.state == "queued"]
        for k in release:
            self.jobs.pop(k).killed = True
        if release and self.registered:
            self.link.send_msg("RELEASE", records=release)

    def _drain_over(self, now: float) -> bool:
        return (not self.jobs and not self.out) or self.w._stops > 1 or now >= self.drain_deadline

    def _finish_drain(self) -> int:
        if self.registered:
            self._flush()
            left = list(self.jobs)
            for k in left:
                self.jobs[k].killed = True
            for i in range(0, len(left), _proto.MAX_BATCH):
                self.link.send_msg("RELEASE", records=left[i:i + _proto.MAX_BATCH])
            self.link.send_msg("BYE")
        _log("drained; exiting")
        return EXIT_OK
