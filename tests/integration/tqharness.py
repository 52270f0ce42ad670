"""tqharness - start the real taskq programs on loopback and talk to them.

Every test gets a temp dir (removed afterwards unless TQ_KEEP_TMP is set),
a fresh loopback port and a mode-0600 authkey file. Programs run as
subprocesses with their output in log files in the temp dir. A cleanup sends
SIGTERM to everything still running, then SIGKILL after a bound, so no
process outlives its test even when the test fails; on failure the tails
of all logs are printed.

It also holds a pyzmq CURVE client with keys derived in Python exactly as
common/tq_authkey.h says (this proves the derivation is reproducible
outside C), and encoders/decoders for the proto/PROTOCOL.md messages.

Only the standard library and pyzmq are used. Run a test file alone with:
    TQ_BUILD_DIR=build-itest /usr/bin/python3 tests/integration/test_x.py
"""

import atexit
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqmsgs  # noqa: E402  (the message table, proto/tq_msgs.def)

try:
    import zmq
    import zmq.utils.z85
except ImportError:  # raw-socket tests skip themselves
    zmq = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def build_dir():
    d = os.environ.get("TQ_BUILD_DIR")
    if d:
        return os.path.abspath(d)
    for cand in ("build-itest", "build"):
        p = os.path.join(REPO, cand)
        if os.path.exists(os.path.join(p, "client", "taskq")):
            return p
    return os.path.join(REPO, "build")


BUILD = build_dir()
MASTER_BIN = os.path.join(BUILD, "master", "taskq-master")
WORKER_BIN = os.path.join(BUILD, "worker", "taskq-worker")
CLIENT_BIN = os.path.join(BUILD, "client", "taskq")

# Exit statuses, common/tq_exit.h
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_CANCELLED = 5
EXIT_NOT_FOUND = 6
EXIT_REFUSED = 7
EXIT_ENV = 8

# Fast failure detection for every program the harness starts.
HB_FLAGS = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1"]

KEY_TEXT = "itest-secret-3c1f9a7e5b2d4c6f8a0b1d3e5f7a9c2e"


# Every started program and temp dir still alive, so that an interrupted
# run (meson's timeout sends SIGTERM, Ctrl-C) leaves nothing behind.
_LIVE_PROCS = set()
_LIVE_DIRS = set()


def _kill_everything():
    for p in list(_LIVE_PROCS):
        for target in (lambda: os.killpg(p.pid, signal.SIGKILL),
                       lambda: os.kill(p.pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
    if not os.environ.get("TQ_KEEP_TMP"):
        for d in list(_LIVE_DIRS):
            shutil.rmtree(d, ignore_errors=True)


def _on_term(signum, _frame):
    _kill_everything()
    os._exit(128 + signum)


atexit.register(_kill_everything)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_term)

_libc = None


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if this test process dies, even
    by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


_ports_given = set()


def free_port():
    """A loopback TCP port that was free a moment ago (bind port 0), and
    not one this process was given before: a test that takes two ports
    before binding either (the master's, then its --http-listen) must
    not get the same one twice (CI: the HTTP server's bind failed with
    'Address already in use' on the master's own port)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports_given:
            break
    _ports_given.add(port)
    return port


def clean_env(extra=None):
    """The environment without any TASKQ_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value or timeout seconds pass.
    Returns the value; raises AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001 - report the last failure
            last = None
            err = e
        else:
            err = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" %
                                 (timeout, what, (" (last error: %r)" % err) if err else ""))
        time.sleep(interval)


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "VALGRIND-ERROR-BEGIN")

# TQ_VALGRIND=1: the master and the worker started by Proc run under
# valgrind's memcheck (a plain build; not with a sanitizer build). Any
# error it finds, a definite leak at exit included, is marked in the
# program's log and fails the test like a sanitizer report.
VALGRIND = os.environ.get("TQ_VALGRIND") == "1"
VALGRIND_ARGV = ["valgrind", "--tool=memcheck", "-q", "--leak-check=full",
                 "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                 "--error-markers=VALGRIND-ERROR-BEGIN,VALGRIND-ERROR-END",
                 "--child-silent-after-fork=yes", "--trace-children=no"]


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def sanitizer_report(text):
    """The first sanitizer report in text (some lines of it), or ""."""
    for mark in SANITIZER_MARKS:
        i = text.find(mark)
        if i >= 0:
            start = text.rfind("\n", 0, max(i - 200, 0)) + 1
            return text[start:i + 3000]
    return ""


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])


class Proc:
    """One started program, its log file and its argv."""

    def __init__(self, name, argv, log_path, env):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "wb")
        if VALGRIND and os.path.basename(argv[0]) in ("taskq-master", "taskq-worker"):
            argv = VALGRIND_ARGV + list(argv)
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.p.pid
        _LIVE_PROCS.add(self)

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Exit status, or raise subprocess.TimeoutExpired."""
        return self.p.wait(timeout=timeout)

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, grace=3.0):
        """SIGTERM, then SIGKILL after grace seconds. Also kills the
        process group (children of --fn commands)."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in its session (e.g. a command a killed worker ran).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _LIVE_PROCS.discard(self)
        self.log.close()

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


class Result:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed

    def __repr__(self):
        return "<taskq %s rc=%s out=%r err=%r>" % (" ".join(self.argv[1:]), self.rc,
                                                   self.out[:2000], self.err[:2000])


class TQTestCase(unittest.TestCase):
    """Base class: per-test temp dir, port, key; start/stop helpers."""

    def setUp(self):
        for b in (MASTER_BIN, WORKER_BIN, CLIENT_BIN):
            if not os.path.exists(b):
                self.fail("program not built: %s (set TQ_BUILD_DIR)" % b)
        self.tmp = tempfile.mkdtemp(prefix="tq-itest-")
        _LIVE_DIRS.add(self.tmp)
        self.procs = []
        self.outputs = []  # (label, text) of taskq runs, for failure reports
        self.port = free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.key = self.make_key("authkey", KEY_TEXT)
        self.data_dir = os.path.join(self.tmp, "data")
        self.master = None
        self._nworkers = 0
        # A cleanup, not tearDown: cleanups also run when setUp fails
        # half-way (a worker that never joined), so the programs are
        # stopped and their logs shown in that case too.
        self.addCleanup(self._stop_all)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if not getattr(outcome, "success", True):
            return True
        # Python 3.11 records failures straight into the result and leaves
        # outcome.success True: look there for this test.
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.failures) + list(result.errors))

    def _stop_all(self):
        failed = self._failed()
        for p in reversed(self.procs):
            p.stop()
        # A sanitizer report in a daemon's log fails the test even when the
        # behaviour looked right (a leak at exit, undefined behaviour that
        # did not crash): in the ASan/UBSan build that is the whole point.
        reports = []
        for p in self.procs:
            excerpt = sanitizer_report(read_text(p.log_path))
            if excerpt:
                reports.append("%s (%s):\n%s" % (p.name, p.log_path, excerpt))
        if failed:
            sys.stderr.write("\n==== %s failed; temp dir %s ====\n" % (self.id(), self.tmp))
            for p in self.procs:
                sys.stderr.write("---- %s (%s) rc=%s log tail:\n%s\n" %
                                 (p.name, " ".join(p.argv), p.p.returncode, tail(p.log_path)))
            for label, text in self.outputs[-6:]:
                sys.stderr.write("---- %s\n%s\n" % (label, text[-3000:]))
        if os.environ.get("TQ_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        _LIVE_DIRS.discard(self.tmp)
        if reports:
            raise AssertionError("sanitizer report in a program's log:\n" + "\n".join(reports))

    # ---- files -------------------------------------------------------------

    def make_key(self, name, text, mode=0o600):
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(path, mode)
        return path

    # ---- programs ----------------------------------------------------------

    def start(self, name, argv, env=None):
        log = os.path.join(self.tmp, "%s.log" % name)
        p = Proc(name, argv, log, clean_env(env))
        self.procs.append(p)
        return p

    def start_master(self, *extra, key=None, port=None, data_dir=None, hb=True,
                     wait=True, name=None):
        """Start taskq-master on loopback; by default wait until it answers
        `taskq status`."""
        port = port or self.port
        argv = [MASTER_BIN, "--bind", "tcp://127.0.0.1:%d" % port,
                "--data-dir", data_dir or self.data_dir]
        key = self.key if key is None else key
        if key:
            argv += ["--authkey-file", key]
        if hb:
            argv += HB_FLAGS
        argv += list(extra)
        m = self.start(name or "master", argv)
        self.master = m
        if wait:
            self.wait_master_ready(m)
        return m

    def wait_master_ready(self, m=None, timeout=30):
        m = m or self.master

        def ready():
            if m is not None and not m.alive():
                raise AssertionError("master exited with %s:\n%s" % (m.p.returncode,
                                                                    tail(m.log_path)))
            r = self.tq("status", "--json", timeout=5, connect_timeout=0.5, record=False)
            return r.rc == 0
        wait_until(ready, timeout, interval=0.1, what="master to answer status")

    def start_worker(self, *extra, concurrency=None, fns=(), key=None,
                     wait=True, name=None):
        """Start taskq-worker; fns are --fn NAME=COMMAND values. By default
        waits until the master lists one more worker. (Workers take their
        heartbeat settings from the master's WELCOME.)"""
        self._nworkers += 1
        name = name or "worker%d" % self._nworkers
        argv = [WORKER_BIN, "--connect", self.endpoint,
                "--authkey-file", key or self.key]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        for f in fns:
            argv += ["--fn", f]
        argv += list(extra)
        before = None
        if wait:
            before = {w["name"] for w in self.status()["workers"]}
        w = self.start(name, argv)
        if wait:
            def joined():
                if not w.alive():
                    raise AssertionError("worker exited with %s:\n%s" % (w.p.returncode,
                                                                        tail(w.log_path)))
                for x in self.status()["workers"]:
                    if x["name"] not in before and x.get("state") == "active":
                        return x
                return None
            w.info = wait_until(joined, 30, interval=0.1, what="worker %s to join" % name)
            w.wname = w.info["name"]
        return w

    # ---- the client --------------------------------------------------------

    def tq(self, *args, input=None, timeout=60, key=None, endpoint=None,
           connect_timeout=None, record=True, env=None):
        """Run `taskq` with the test's endpoint and key; returns Result.
        A run that exceeds timeout is killed and fails the test."""
        argv = [CLIENT_BIN, "--connect", endpoint or self.endpoint,
                "--authkey-file", key or self.key]
        if connect_timeout is not None:
            argv += ["--connect-timeout", str(connect_timeout)]
        argv += list(args)
        return self.run_prog(argv, input=input, timeout=timeout, record=record, env=env)

    def run_prog(self, argv, input=None, timeout=60, record=True, env=None):
        t0 = time.monotonic()
        if isinstance(input, str):
            input = input.encode()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=clean_env(env), start_new_session=True,
                             preexec_fn=die_with_parent)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            res = Result(argv, None, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"), time.monotonic() - t0)
            self.outputs.append((repr(res), ""))
            raise AssertionError("%s did not finish within %ss: %r" %
                                 (os.path.basename(argv[0]), timeout, res))
        res = Result(argv, p.returncode, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"), time.monotonic() - t0)
        if record:
            self.outputs.append((repr(res), ""))
        excerpt = sanitizer_report(res.err)
        if excerpt:
            raise AssertionError("sanitizer report from %s:\n%s" % (" ".join(argv), excerpt))
        return res

    def tq_ok(self, *args, **kw):
        r = self.tq(*args, **kw)
        self.assertEqual(r.rc, 0, r)
        return r

    def status(self):
        # A readiness probe, not a timing assertion: generous bounds, so a
        # loaded CI machine (a cold process start, the CURVE handshake under
        # ASan) is not mistaken for a master that does not answer.
        r = self.tq("status", "--json", timeout=20, connect_timeout=5, record=False)
        if r.rc != 0:
            raise AssertionError("taskq status failed: %r" % r)
        return json.loads(r.out)

    def submit(self, *args, **kw):
        """`taskq submit ARGS`; returns the list of ids."""
        r = self.tq_ok("submit", *args, **kw)
        ids = r.out.split()
        self.assertTrue(ids, r)
        return ids

    def worker_status(self, wname):
        for w in self.status()["workers"]:
            if w["name"] == wname:
                return w
        return None


# ---- keys and the wire protocol, in Python --------------------------------

def derive_keys(authkey: bytes):
    """(server_public, server_secret, client_public, client_secret) as Z85
    bytes, derived as common/tq_authkey.h specifies."""
    k = hashlib.blake2b(authkey, digest_size=32).digest()
    out = []
    for ctx in (b"taskq/v1/curve/server", b"taskq/v1/curve/client"):
        seed = hashlib.blake2b(ctx, key=k, digest_size=32).digest()
        secret = hashlib.sha512(seed).digest()[:32]
        secret_z85 = zmq.utils.z85.encode(secret)
        public_z85 = zmq.curve_public(secret_z85)
        out += [public_z85, secret_z85]
    return tuple(out)


def key_bytes_from_file(path):
    with open(path, "rb") as f:
        data = f.read()
    if data.endswith(b"\n"):
        data = data[:-1]
    return data


# Message types and codecs come from proto/tq_msgs.def (tqmsgs.py):
# T_HELLO = 0x01 ... T_KILL = 0x23.
for _m in tqmsgs.MSGS.values():
    globals()["T_" + _m.name] = _m.code

E_MALFORMED, E_VERSION, E_UNKNOWN_TYPE, E_TOO_LARGE, E_TOO_MANY, E_NOT_REGISTERED, \
    E_BAD_NAME, E_WRONG_ROLE, E_FULL, E_SIGNATURE = range(1, 11)


def head(mtype, version=1):
    return b"TQ" + bytes([version, mtype])


def msg_hello_client(name="itest:1"):
    return [head(T_HELLO) + json.dumps({"role": "client", "name": name}).encode()]


def msg_hello_worker(name="itest:2", slots=1, functions=("square",)):
    return [head(T_HELLO) + json.dumps({"role": "worker", "name": name, "slots": slots,
                                        "functions": list(functions)}).encode()]


def msg_status():
    return [head(T_STATUS) + b"{}"]


def str8(b):
    if isinstance(b, str):
        b = b.encode()
    return bytes([len(b)]) + b


def submit_record(fn="echo", queue="", key="", priority=0, timeout_ms=0, retries=0):
    return tqmsgs.encode_record("SUBMIT", dict(fn=fn, queue=queue, key=key, priority=priority,
                                               timeout_ms=timeout_ms, retries=retries))


def msg_submit(tasks, req=1, flags=0, count=None):
    """tasks: list of (record_kwargs dict, payload bytes)."""
    return tqmsgs.encode("SUBMIT", {"req": req, "flags": flags},
                         [dict(kw, payload=p) for kw, p in tasks], count=count)


def msg_ids(mtype, ids, req=1):
    return tqmsgs.encode(tqmsgs.BY_CODE[mtype].name, {"req": req}, [{"id": i} for i in ids])


def msg_result(items, credit=1):
    """items: list of (id, attempt, status, data)."""
    return tqmsgs.encode("RESULT", {"credit": credit},
                         [dict(id=i, attempt=a, status=s, data=d) for i, a, s, d in items])


def decode_submit_ack(frames):
    name, fixed, recs = tqmsgs.decode(frames)
    assert name == "SUBMIT_ACK", name
    return fixed["req"], [r["id"] for r in recs]


def decode_results(frames):
    name, _, recs = tqmsgs.decode(frames)
    assert name == "RESULTS", name
    return [(r["id"], r["status"], r["attempts"], r["data"]) for r in recs]


def decode_error(frames):
    """The ERROR JSON dict, or None if frames are not an ERROR."""
    b = frames[0]
    if len(b) < 4 or b[:2] != b"TQ" or b[3] != T_ERROR:
        return None
    return json.loads(b[4:].decode())


class RawClient:
    """A DEALER with CURVE keys derived in Python; sends and receives raw
    multipart frames."""

    def __init__(self, endpoint, authkey: bytes, ctx=None, sockopts=()):
        """sockopts: (option, value) pairs set before connecting."""
        self.ctx = ctx or zmq.Context.instance()
        spub, _ssec, cpub, csec = derive_keys(authkey)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        for opt, val in sockopts:
            s.setsockopt(opt, val)
        s.setsockopt(zmq.CURVE_SERVERKEY, spub)
        s.setsockopt(zmq.CURVE_PUBLICKEY, cpub)
        s.setsockopt(zmq.CURVE_SECRETKEY, csec)
        s.setsockopt(zmq.SNDTIMEO, 5000)
        s.connect(endpoint)
        self.sock = s

    def send(self, frames):
        self.sock.send_multipart(frames)

    def recv(self, timeout=3.0, skip=(T_HEARTBEAT,)):
        """Next message whose type is not in skip, or None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            frames = self.sock.recv_multipart()
            b = frames[0]
            if len(b) >= 4 and b[:2] == b"TQ" and b[3] in skip:
                continue
            return frames

    def recv_type(self, mtype, timeout=3.0):
        """Next message of type mtype (others except ERROR are skipped);
        returns frames or None. An ERROR is returned as is."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            fr = self.recv(max(left, 0))
            if fr is None:
                return None
            if fr[0][3:4] == bytes([mtype]) or fr[0][3:4] == bytes([T_ERROR]):
                return fr

    def hello(self, timeout=5.0):
        """HELLO as a client; returns the WELCOME JSON."""
        self.send(msg_hello_client())
        fr = self.recv_type(T_WELCOME, timeout)
        if fr is None:
            raise AssertionError("no WELCOME within %ss" % timeout)
        if fr[0][3] != T_WELCOME:
            raise AssertionError("HELLO answered with %r" % fr[0][:200])
        return json.loads(fr[0][4:].decode())

    def close(self):
        self.sock.close(0)


def main():
    unittest.main(verbosity=2)
