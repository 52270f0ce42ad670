"""libtaskq rides through a lost master: the CLI reconnects after the
master was stopped (SIGSTOP), killed or restarted, re-sends what was not
acknowledged, and prints every result exactly once. Also the session keys
that make re-sent batches safe (TQ_SUBMIT_SCOPED_KEYS), the ACKs of
delivered results, and a SUBMIT refused with ERROR 12 (unavailable)."""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import (TQTestCase, main, wait_until, head, derive_keys,  # noqa: E402
                       key_bytes_from_file, EXIT_OK, EXIT_CONNECT, EXIT_NOT_FOUND,
                       EXIT_REFUSED, T_HELLO, T_WELCOME, T_HEARTBEAT, T_ERROR, T_BYE,
                       T_SUBMIT, T_SUBMIT_ACK, T_RESULTS)

try:
    import zmq
except ImportError:
    zmq = None

T_ACK = 0x16
F_SUBSCRIBE, F_SCOPED_KEYS = 0x1, 0x2
E_UNAVAILABLE = 12
E_NOT_REGISTERED = 6
LOST = "lost connection to master at"
RECONNECTED = "reconnected to master at"


def squares(nums):
    return "".join("%d * %d = %d\n" % (n, n, n * n) for n in nums)


class BackgroundTaskq:
    """`taskq ARGS` running in the background with stdin on a pipe and
    stdout/stderr in files, so that the test can stop the master meanwhile."""

    def __init__(self, tc, *args):
        self.out_path = os.path.join(tc.tmp, "bg%d.out" % id(self))
        self.err_path = os.path.join(tc.tmp, "bg%d.err" % id(self))
        self.argv = [h.CLIENT_BIN, "--connect", tc.endpoint, "--authkey-file", tc.key] + list(args)
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=self.out,
                                  stderr=self.err, env=h.clean_env(), start_new_session=True,
                                  preexec_fn=h.die_with_parent)
        tc.addCleanup(self.kill)

    def write(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def close_stdin(self):
        self.p.stdin.close()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def finish(self, timeout):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not finish within %ss; stderr: %s" %
                                 (" ".join(self.argv), timeout, self.stderr()[-2000:]))
        return rc, self.stdout(), self.stderr()

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(5)
        for f in (self.out, self.err):
            f.close()
        if self.p.stdin and not self.p.stdin.closed:
            try:
                self.p.stdin.close()
            except BrokenPipeError:
                pass


class Reconnect(TQTestCase):
    def test_map_2000_through_master_sigstop(self):
        m = self.start_master()
        self.start_worker(concurrency=4)
        nums = list(range(1, 2001))
        bg = BackgroundTaskq(self, "map", "--fn", "square", "-")
        bg.write("".join("%d\n" % n for n in nums[:1000]))
        time.sleep(0.5)
        m.signal(signal.SIGSTOP)  # heartbeat timeout is 1 s
        try:
            wait_until(lambda: LOST in bg.stderr(), 15, what="the client to notice the loss")
            # Input that arrives while reconnecting is submitted afterwards.
            bg.write("".join("%d\n" % n for n in nums[1000:]))
            bg.close_stdin()
            time.sleep(2)
        finally:
            m.signal(signal.SIGCONT)
        rc, out, err = bg.finish(90)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out, squares(nums), "every result exactly once, in input order")
        self.assertIn("reconnecting (up to 60 s)", err)
        self.assertIn(RECONNECTED + " " + self.endpoint, err)

    def test_wait_through_long_master_sigstop(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "-",
                          input="".join("r%d\n" % i for i in range(500)))
        self.assertEqual(len(ids), 500)
        bg = BackgroundTaskq(self, "wait", "-")
        bg.write("\n".join(ids) + "\n")
        bg.close_stdin()
        wait_until(lambda: self.status()["clients"] >= 2, 10,
                   what="the waiting client to be connected")
        m.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: LOST in bg.stderr(), 15, what="the client to notice the loss")
            time.sleep(4)  # several reconnect attempts while it is stopped
        finally:
            m.signal(signal.SIGCONT)
        wait_until(lambda: RECONNECTED in bg.stderr(), 20, what="the client to reconnect")
        self.start_worker(concurrency=4)
        rc, out, err = bg.finish(60)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(out, "".join("r%d\n" % i for i in range(500)))
        self.assertEqual(err.count(RECONNECTED), 1, err)

    def test_master_kill9_and_restart_reconnects(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "survivor")
        bg = BackgroundTaskq(self, "wait", *ids)
        bg.close_stdin()
        wait_until(lambda: self.status()["clients"] >= 2, 10,
                   what="the waiting client to be connected")
        m.signal(signal.SIGKILL)
        m.wait(5)
        wait_until(lambda: LOST in bg.stderr(), 15, what="the client to notice the loss")
        self.start_master(name="master2")
        wait_until(lambda: RECONNECTED in bg.stderr(), 20, what="the client to reconnect")
        self.start_worker(concurrency=1)
        rc, out, err = bg.finish(30)
        # A master with a journal still has the task; one without answers
        # "unknown". Either way the client came back and finished.
        if rc == EXIT_OK:
            self.assertEqual(out, "survivor\n")
        else:
            self.assertEqual(rc, EXIT_NOT_FOUND, err)
            self.assertIn("unknown", err)

    def test_master_gone_for_good_exits_3_after_budget(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "nobody")  # no worker: wait blocks
        bg = BackgroundTaskq(self, "--reconnect-timeout", "2", "wait", *ids)
        bg.close_stdin()
        wait_until(lambda: self.status()["clients"] >= 2, 10,
                   what="the waiting client to be connected")
        m.signal(signal.SIGKILL)
        m.wait(5)
        # Within 30 s, so well before the default budget of 60 s.
        rc, out, err = bg.finish(30)
        self.assertEqual(rc, EXIT_CONNECT, err)
        self.assertIn("%s %s; reconnecting (up to 2 s)" % (LOST, self.endpoint), err)
        self.assertTrue(err.rstrip().endswith("taskq: %s %s" % (LOST, self.endpoint)), err)
        self.assertNotIn(RECONNECTED, err)

    def test_reconnect_timeout_0_fails_at_once(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "nobody")
        bg = BackgroundTaskq(self, "--reconnect-timeout", "0", "wait", *ids)
        bg.close_stdin()
        wait_until(lambda: self.status()["clients"] >= 2, 10,
                   what="the waiting client to be connected")
        m.signal(signal.SIGKILL)
        m.wait(5)
        rc, out, err = bg.finish(30)
        self.assertEqual(rc, EXIT_CONNECT, err)
        self.assertEqual(err, "taskq: %s %s\n" % (LOST, self.endpoint))

    def test_reconnect_timeout_flag_bounds(self):
        r = self.tq("--reconnect-timeout", "-1", "status")
        self.assertEqual(r.rc, h.EXIT_USAGE, r)
        self.assertIn("reconnect-timeout", r.err)
        r = self.tq_ok("--help")
        self.assertIn("--reconnect-timeout", r.out)


class Keys(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.start_worker(concurrency=4)

    def test_user_key_twice_same_id(self):
        a = self.submit("--fn", "echo", "--key", "order-42", "x")
        b = self.submit("--fn", "echo", "--key", "order-42", "x")
        self.assertEqual(a, b)
        c = self.submit("--fn", "echo", "--key", "order-43", "x")
        self.assertNotEqual(a, c)

    def test_two_concurrent_maps_do_not_collide(self):
        a_nums = list(range(1, 501))
        b_nums = list(range(1001, 1501))
        res = {}

        def run(name, nums):
            try:
                res[name] = self.tq("map", "--fn", "square", "-",
                                    input="".join("%d\n" % n for n in nums), timeout=90)
            except AssertionError as e:
                res[name] = e
        ts = [threading.Thread(target=run, args=("a", a_nums)),
              threading.Thread(target=run, args=("b", b_nums))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        for name, nums in (("a", a_nums), ("b", b_nums)):
            r = res[name]
            if isinstance(r, Exception):
                raise r
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(r.out, squares(nums))


def parse_submit(frames):
    """(req, flags, [(fn, key, payload)]) of a SUBMIT."""
    b = frames[0]
    req, flags, count = struct.unpack_from("<IHH", b, 4)
    off = 12
    recs = []
    for i in range(count):
        strs = []
        for _ in range(3):
            n = b[off]
            strs.append(bytes(b[off + 1:off + 1 + n]))
            off += 1 + n
        off += 10  # priority i32, timeout u32, retries u16
        recs.append((strs[0], strs[2], bytes(frames[1 + i])))
    return req, flags, recs


class FakeMaster(threading.Thread):
    """A CURVE ROUTER speaking just enough of the protocol: WELCOME, a
    SUBMIT_ACK with one id per key (the same key gets the same id), the
    RESULTS of subscribed tasks at once (echo), and it records SUBMITs
    (decoded, and their frames as sent) and ACKs. With refuse set, every
    SUBMIT gets ERROR 12 instead; the first `forget` SUBMITs get ERROR 6
    not registered (as from a master that restarted)."""

    def __init__(self, endpoint, authkey, refuse=None, forget=0):
        super().__init__(daemon=True)
        _spub, ssec, _cpub, _csec = derive_keys(authkey)
        self.ctx = zmq.Context()
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.CURVE_SERVER, 1)
        s.setsockopt(zmq.CURVE_SECRETKEY, ssec)
        s.bind(endpoint)
        self.sock = s
        self.refuse = refuse
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.submits = []  # (flags, [(fn, key, payload)])
        self.raw_submits = []  # [frame bytes] of each SUBMIT
        self.forget = forget
        self.hellos = 0
        self.acked = []    # ids in ACK messages
        self.byes = 0
        self.ids = {}
        self.errors = []
        self.start()

    def run(self):
        peers = {}
        try:
            while not self.stop_flag.is_set():
                now = time.monotonic()
                for rid, t in list(peers.items()):
                    if now - t >= 0.2:
                        self.sock.send_multipart([rid, head(T_HEARTBEAT)])
                        peers[rid] = now
                if not self.sock.poll(20):
                    continue
                frames = self.sock.recv_multipart()
                rid, f0 = frames[0], frames[1]
                t = f0[3] if len(f0) >= 4 and f0[:3] == b"TQ\x01" else None
                if t == T_HELLO:
                    with self.lock:
                        self.hellos += 1
                    w = {"version": 1, "heartbeat_ms": 200, "heartbeat_timeout_ms": 1000,
                         "max_payload": 1048576, "master": "fake"}
                    self.sock.send_multipart([rid, head(T_WELCOME) + json.dumps(w).encode()])
                    peers[rid] = time.monotonic()
                elif t == T_SUBMIT:
                    req, flags, recs = parse_submit(frames[1:])
                    with self.lock:
                        self.submits.append((flags, recs))
                        self.raw_submits.append([bytes(f) for f in frames[1:]])
                    if self.forget > 0:
                        self.forget -= 1
                        e = {"code": E_NOT_REGISTERED, "ref": 0,
                             "message": "not registered: send HELLO first"}
                        self.sock.send_multipart([rid, head(T_ERROR) + json.dumps(e).encode()])
                        continue
                    if self.refuse:
                        e = {"code": E_UNAVAILABLE, "ref": req, "message": self.refuse}
                        self.sock.send_multipart([rid, head(T_ERROR) + json.dumps(e).encode()])
                        continue
                    ids = []
                    for _fn, key, _p in recs:
                        if key not in self.ids:
                            self.ids[key] = 7000000001 + len(self.ids)
                        ids.append(self.ids[key])
                    self.sock.send_multipart([rid, head(T_SUBMIT_ACK) +
                                              struct.pack("<IH", req, len(ids)) +
                                              b"".join(struct.pack("<Q", i) for i in ids)])
                    if flags & F_SUBSCRIBE:
                        body = struct.pack("<H", len(ids)) + b"".join(
                            struct.pack("<QBI", i, 1, 1) for i in ids)
                        self.sock.send_multipart([rid, head(T_RESULTS) + body] +
                                                 [p for _f, _k, p in recs])
                elif t == T_ACK:
                    _req, count = struct.unpack_from("<IH", f0, 4)
                    with self.lock:
                        self.acked += [struct.unpack_from("<Q", f0, 10 + 8 * i)[0]
                                       for i in range(count)]
                elif t == T_BYE:
                    with self.lock:
                        self.byes += 1
                elif t != T_HEARTBEAT:
                    self.errors.append("unexpected message %r" % bytes(f0[:16]))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append("fake master crashed: %r" % e)

    def close(self):
        self.stop_flag.set()
        self.join(5)
        self.sock.close(0)
        self.ctx.term()


@unittest.skipIf(zmq is None, "needs pyzmq")
class WireBehaviour(TQTestCase):
    def fake(self, **kw):
        f = FakeMaster(self.endpoint, key_bytes_from_file(self.key), **kw)
        self.addCleanup(f.close)
        return f

    def test_automatic_session_keys_and_acks(self):
        fake = self.fake()
        r = self.tq_ok("map", "--fn", "echo", "a", "b", "c")
        self.assertEqual(r.out, "a\nb\nc\n")
        wait_until(lambda: fake.byes >= 1, 5, what="BYE")
        self.assertEqual(fake.errors, [])
        recs = [x for flags, rs in fake.submits for x in rs]
        self.assertTrue(all(flags & F_SCOPED_KEYS for flags, _ in fake.submits), fake.submits)
        keys = [k for _fn, k, _p in recs]
        self.assertEqual([len(k) for k in keys], [24, 24, 24])
        self.assertEqual(len({k[:16] for k in keys}), 1, "one session id per handle")
        self.assertEqual([struct.unpack("<Q", k[16:])[0] for k in keys], [1, 2, 3])
        # Every delivered result was acknowledged, once, before BYE.
        self.assertEqual(sorted(fake.acked), sorted(fake.ids.values()))

        # Another run has another session id.
        self.tq_ok("submit", "--fn", "echo", "d")
        k2 = fake.submits[-1][1][0][1]
        self.assertNotEqual(k2[:16], keys[0][:16])

    def test_resend_after_rehello_sends_the_same_bytes(self):
        # The master forgets us when the batch arrives: the client says
        # HELLO again and, once welcomed, sends the batch as it was
        # encoded (same request id, same session keys, same payloads).
        fake = self.fake(forget=1)
        r = self.tq_ok("map", "--fn", "echo", "a", "bb", "ccc")
        self.assertEqual(r.out, "a\nbb\nccc\n")
        self.assertEqual(fake.errors, [])
        self.assertEqual(fake.hellos, 2, "one HELLO again for the forgotten batch")
        self.assertEqual(len(fake.raw_submits), 2, fake.submits)
        self.assertEqual(fake.raw_submits[0], fake.raw_submits[1])

    def test_user_key_travels_without_scoped_flag(self):
        fake = self.fake()
        r = self.tq_ok("submit", "--fn", "echo", "--key", "order-42", "x")
        self.assertEqual(fake.submits[-1][0] & F_SCOPED_KEYS, 0)
        self.assertEqual(fake.submits[-1][1][0][1], b"order-42")
        r2 = self.tq_ok("submit", "--fn", "echo", "--key", "order-42", "x")
        self.assertEqual(r.out, r2.out)
        self.assertEqual(fake.acked, [], "submit hands out no results, so ACKs nothing")

    def test_submit_refused_unavailable_shows_master_message(self):
        msg = "journal write failed: No space left on device"
        self.fake(refuse=msg)
        r = self.tq("submit", "--fn", "echo", "x", "y")
        self.assertEqual(r.rc, EXIT_REFUSED, r)
        self.assertEqual(r.out, "")
        self.assertIn("master refused tasks 1..2 of the input: " + msg, r.err)
        r = self.tq("map", "--fn", "echo", "x")
        self.assertEqual(r.rc, EXIT_REFUSED, r)
        self.assertIn(msg, r.err)


if __name__ == "__main__":
    main()
