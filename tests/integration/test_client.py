"""The taskq client's promises from docs/cli.md that only show under load
or on a terminal: map runs in bounded memory (--window), the progress bar
is drawn on a terminal and only there, and submissions go to the master
in pipelined batches of up to 1024 tasks (checked against a fake master
written here in Python)."""

import ctypes
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, CLIENT_BIN, clean_env, die_with_parent,  # noqa: E402
                       derive_keys, key_bytes_from_file, head, zmq,
                       T_HELLO, T_WELCOME, T_HEARTBEAT, T_BYE, T_SUBMIT, T_SUBMIT_ACK)

MIB_KB = 1024  # ru_maxrss is in KiB on Linux


def _line(i):
    """Input line i: 128 bytes, so that holding 90,000 of them (or their
    results) at once costs well over 8 MiB."""
    s = "line-%d-" % i
    return s + "x" * (127 - len(s)) + "\n"


def _asan_env():
    """Under ASan, freed memory sits in a quarantine (256 MiB by default),
    which would make peak RSS grow with the total allocated rather than
    with what is live. Keep the quarantine small for the RSS runs."""
    # Set it always: a program built without ASan ignores the variable, and
    # a sanitizer build run by hand (no ASAN_OPTIONS exported) needs it too.
    a = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (a + ":" if a else "") + "quarantine_size_mb=1"}


def _set_subreaper(on):
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented
    to this process (so it can wait4 them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1 if on else 0, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class _Collector(threading.Thread):
    """Reads a file object to the end in the background."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f, self.data = f, b""
        self.start()

    def run(self):
        chunks = []
        while True:
            b = self.f.read(65536)
            if not b:
                break
            chunks.append(b)
        self.data = b"".join(chunks)


class _Feeder(threading.Thread):
    """Writes data to a pipe in the background, then closes it."""

    def __init__(self, f, data):
        super().__init__(daemon=True)
        self.f, self.data = f, data
        self.start()

    def run(self):
        try:
            self.f.write(self.data)
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                self.f.close()
            except OSError:
                pass


class MapMemory(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.start_worker(concurrency=2)
        self.start_worker(concurrency=2)

    def run_map_rss(self, n, timeout):
        """`taskq map --fn echo --window 100 -` over n lines; returns
        (exit status, stdout bytes, stderr bytes, peak RSS in KiB) of that
        process alone (os.wait4).

        The client is not forked from this test process: Linux carries the
        RSS high-water mark of the pre-exec image into ru_maxrss, so a
        child of Python would report Python's size (which grows with the
        test's own data). A small /bin/sh starts the client in the
        background and exits; with this process as child subreaper the
        client is then re-parented here and os.wait4 gets its rusage."""
        argv = [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                "map", "--fn", "echo", "--window", "100", "-"]
        data = "".join(_line(i) for i in range(n)).encode()
        rpid, wpid = os.pipe()
        self.assertNotEqual(wpid, 9)
        # An asynchronous list's stdin is /dev/null (dash applies that
        # before `<&0`), so hand the pipe over through fd 9.
        script = 'exec 9<&0; "$@" <&9 9<&- %d>&- & echo $! >&%d' % (wpid, wpid)
        _set_subreaper(1)
        try:
            sh = subprocess.Popen(["/bin/sh", "-c", script, "sh"] + argv,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=clean_env(_asan_env()),
                                  start_new_session=True, pass_fds=(wpid,))
            os.close(wpid)
            with os.fdopen(rpid, "rb") as f:
                pid_text = f.read()
            sh.wait(timeout=10)
            self.assertEqual(sh.returncode, 0, "launcher shell failed")
            pid = int(pid_text)
            feeder = _Feeder(sh.stdin, data)
            out, err = _Collector(sh.stdout), _Collector(sh.stderr)
            t0 = time.monotonic()

            def kill():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _pid, wstatus, ru = os.wait4(pid, 0)
            finally:
                timer.cancel()
        finally:
            _set_subreaper(0)
        rc = os.waitstatus_to_exitcode(wstatus)
        elapsed = time.monotonic() - t0
        feeder.join(5)
        out.join(10)
        err.join(10)
        sh.stdout.close()
        sh.stderr.close()
        self.outputs.append(("map %d lines: rc=%s %.1fs maxrss=%d KiB stderr=%r" %
                             (n, rc, elapsed, ru.ru_maxrss, err.data[-2000:]), ""))
        self.assertLess(elapsed, timeout, "map of %d lines killed after %ss" % (n, timeout))
        return rc, out.data, err.data, ru.ru_maxrss

    def test_map_window_bounds_memory(self):
        results = {}
        for n in (10000, 100000):
            rc, out, err, rss = self.run_map_rss(n, timeout=150)
            self.assertEqual(rc, 0, "map of %d lines: rc=%s stderr=%r" % (n, rc, err[-2000:]))
            want = "".join(_line(i) for i in range(n)).encode()
            if out != want:
                got = out.decode("utf-8", "replace").splitlines()
                self.fail("map of %d lines: %d lines out, first difference at line %s" %
                          (n, len(got), next((i for i, (a, b) in enumerate(
                              zip(got, want.decode().splitlines())) if a != b), min(len(got), n))))
            self.assertEqual(err, b"", "stderr is not a tty: no progress bar, no messages")
            results[n] = rss
        small, large = results[10000], results[100000]
        sys.stderr.write("\npeak RSS: 10,000 lines %d KiB, 100,000 lines %d KiB\n" % (small, large))
        self.assertLess(large, small + 8 * MIB_KB,
                        "peak RSS grew from %d KiB (10,000 lines) to %d KiB (100,000 lines) "
                        "with --window 100: results or input are buffered without bound"
                        % (small, large))


class ProgressBar(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.start_worker(concurrency=2)

    def test_progress_on_tty_only(self):
        nums = [str(i) for i in range(1, 51)]
        argv = [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                "map", "--fn", "echo"] + nums
        mfd, sfd = pty.openpty()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=sfd, env=clean_env(), start_new_session=True,
                                 preexec_fn=die_with_parent)
        finally:
            os.close(sfd)
        chunks = []

        def read_pty():
            while True:
                try:
                    b = os.read(mfd, 65536)
                except OSError:  # EIO once the child closed its end
                    break
                if not b:
                    break
                chunks.append(b)
        reader = threading.Thread(target=read_pty, daemon=True)
        reader.start()
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            self.fail("taskq map with a tty stderr did not finish in 60 s")
        reader.join(10)
        os.close(mfd)
        tty = b"".join(chunks).decode("utf-8", "replace")
        self.outputs.append(("map on a tty: rc=%s pty=%r" % (p.returncode, tty[-2000:]), ""))
        self.assertEqual(p.returncode, 0, tty)
        self.assertEqual(out.decode(), "".join(n + "\n" for n in nums))
        # `[####....] done/total  rate/s`, see client/cli.c progress_draw
        self.assertRegex(tty, r"\[[#.]+\] \d+/50\+?  [0-9.]+/s",
                         "no progress bar on the terminal")
        # erased at the end: the last thing written is \r + erase-line
        self.assertTrue(tty.endswith("\r\x1b[K"), "progress bar not erased at the end: %r"
                        % tty[-200:])

        # The same with stderr on a pipe: nothing at all on stderr.
        r = self.tq_ok("map", "--fn", "echo", *nums)
        self.assertEqual(r.out, "".join(n + "\n" for n in nums))
        self.assertEqual(r.err, "", "stderr is not a terminal: no progress bar")


class FakeMaster(threading.Thread):
    """A ROUTER with the derived CURVE server keys that answers HELLO with
    WELCOME and each SUBMIT with a SUBMIT_ACK of fresh ids; the first ack
    is held back for first_ack_delay seconds. Records every SUBMIT."""

    def __init__(self, endpoint, authkey, first_ack_delay=0.3):
        super().__init__(daemon=True)
        _spub, ssec, _cpub, _csec = derive_keys(authkey)
        self.ctx = zmq.Context()
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.CURVE_SERVER, 1)
        s.setsockopt(zmq.CURVE_SECRETKEY, ssec)
        s.bind(endpoint)
        self.sock = s
        self.delay = first_ack_delay
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.submits = []          # (time, req, count) in arrival order
        self.first_ack_time = None
        self.submits_before_first_ack = None
        self.next_id = 5000000001  # ids the client cannot guess from seq
        self.errors = []
        self.start()

    def run(self):
        pending = []  # [(send_at, frames)] acks not sent yet, in order
        last_send = {}
        try:
            while not self.stop_flag.is_set():
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, frames = pending.pop(0)
                    with self.lock:
                        if self.first_ack_time is None:
                            self.first_ack_time = now
                            self.submits_before_first_ack = len(self.submits)
                    self.sock.send_multipart(frames)
                    last_send[frames[0]] = now
                for rid, t in list(last_send.items()):
                    if now - t >= 0.5:
                        self.sock.send_multipart([rid, head(T_HEARTBEAT)])
                        last_send[rid] = now
                if not self.sock.poll(20):
                    continue
                frames = self.sock.recv_multipart()
                rid, f0 = frames[0], frames[1]
                t = f0[3] if len(f0) >= 4 and f0[:3] == b"TQ\x01" else None
                if t == T_HELLO:
                    w = {"version": 1, "heartbeat_ms": 1000, "heartbeat_timeout_ms": 5000,
                         "max_payload": 67108864, "master": "fake"}
                    self.sock.send_multipart([rid, head(T_WELCOME) + json.dumps(w).encode()])
                    last_send[rid] = time.monotonic()
                elif t == T_SUBMIT:
                    req, flags, count = struct.unpack_from("<IHH", f0, 4)
                    if len(frames) - 2 != count:
                        self.errors.append("SUBMIT req %d: count %d but %d data frames" %
                                           (req, count, len(frames) - 2))
                    with self.lock:
                        arrival = time.monotonic()
                        self.submits.append((arrival, req, count, [bytes(x) for x in frames[2:]]))
                        ids = list(range(self.next_id, self.next_id + count))
                        self.next_id += count
                        first = len(self.submits) == 1
                    ack = [rid, head(T_SUBMIT_ACK) + struct.pack("<IH", req, count) +
                           b"".join(struct.pack("<Q", i) for i in ids)]
                    send_at = arrival + (self.delay if first else 0)
                    if pending:  # keep acks in order behind the delayed first one
                        send_at = max(send_at, pending[-1][0])
                    pending.append((send_at, ack))
                elif t in (T_HEARTBEAT, T_BYE):
                    pass
                else:
                    self.errors.append("unexpected message %r" % f0[:16])
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append("fake master crashed: %r" % e)

    def close(self):
        self.stop_flag.set()
        self.join(5)
        self.sock.close(0)
        self.ctx.term()


class Pipelining(TQTestCase):
    def test_submit_5000_in_few_pipelined_batches(self):
        fake = FakeMaster(self.endpoint, key_bytes_from_file(self.key))
        try:
            n = 5000
            payloads = ["p%d" % i for i in range(n)]
            r = self.tq("submit", "--fn", "echo", "-",
                        input="".join(x + "\n" for x in payloads), timeout=60)
        finally:
            fake.close()
        self.assertEqual(fake.errors, [])
        self.assertEqual(r.rc, 0, r)
        subs = fake.submits
        # The fake master hands out ids from 5000000001 up in arrival order,
        # so the client's printed ids must be exactly that sequence.
        want_ids = [str(5000000001 + i) for i in range(n)]
        got = r.out.split("\n")
        self.assertEqual(got[-1], "", "output does not end with a newline")
        self.assertEqual(got[:-1], want_ids, "ids not printed once each, in input order")
        # Every payload arrived once, in order, in batches of <= 1024.
        sent = [p.decode() for s in subs for p in s[3]]
        self.assertEqual(sent, payloads)
        self.assertTrue(all(1 <= s[2] <= 1024 for s in subs), [s[2] for s in subs])
        self.assertLessEqual(len(subs), 10, "%d SUBMIT messages for %d tasks: not batched "
                             "(counts %s)" % (len(subs), n, [s[2] for s in subs]))
        self.assertEqual(len({s[1] for s in subs}), len(subs), "req ids reused")
        # Pipelined: more than one SUBMIT left before the first (delayed) ack.
        self.assertIsNotNone(fake.first_ack_time)
        self.assertGreater(fake.submits_before_first_ack, 1,
                           "the client waited for each SUBMIT_ACK before sending the next "
                           "SUBMIT (counts %s)" % [s[2] for s in subs])


if __name__ == "__main__":
    main()
