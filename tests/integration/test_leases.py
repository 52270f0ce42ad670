"""Issue 12, points 9 and 10: leases end (--lease-timeout) and results
are fenced by the worker that holds the attempt, not only the attempt.

9: a worker that heartbeats but never answers held its tasks forever
   when they had no run timeout. With --lease-timeout the lease is taken
   back (KILL to the holder) and the task requeued as a lost lease, so
   --max-attempts ends a poison task as dead.
10: a RESULT for (id, attempt) was taken from any worker once the lease
   was lost (task queued again at that attempt): a worker that never got
   the task could set its result. Only the worker instance that holds,
   or last held, the attempt may; a worker riding through a reconnect or
   a master restart keeps that identity (HELLO "instance")."""

import json
import os
import queue
import re
import signal
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqmsgs  # noqa: E402
from tqharness import (  # noqa: E402
    EXIT_TASK_FAILED, EXIT_USAGE, HB_FLAGS, MASTER_BIN, T_DISPATCH, T_ERROR, T_HEARTBEAT, T_HELLO,
    T_KILL, T_WELCOME, RawClient, TQTestCase, head, key_bytes_from_file, main, msg_result,
    wait_until)

RUN_OK = 0


def hello_worker(name, functions=("echo",), slots=1, instance=None):
    j = {"role": "worker", "name": name, "slots": slots, "functions": list(functions)}
    if instance is not None:
        j["instance"] = instance
    return [head(T_HELLO) + json.dumps(j).encode()]


def decode_dispatch(frames):
    """[(id, attempt, timeout_ms, fn, payload)] of a DISPATCH (read with
    the table-driven codec, tqmsgs)."""
    name, _fixed, recs = tqmsgs.decode(frames)
    assert name == "DISPATCH", name
    return [(r["id"], r["attempt"], r["timeout_ms"], r["fn"].decode(), r["payload"])
            for r in recs]


def decode_kill(frames):
    """[(id, attempt)] of a KILL."""
    body = frames[0][4:]
    (n,) = struct.unpack_from("<H", body, 0)
    return [struct.unpack_from("<QI", body, 2 + 12 * k) for k in range(n)]


class Peer:
    """A raw worker that stays registered: a thread owns its socket,
    sends a HEARTBEAT every 0.1 s (the harness's master forgets a peer
    silent for 1 s), sends what the test queues, and collects what the
    master sends (but HEARTBEATs)."""

    def __init__(self, tc, hello):
        self.c = RawClient(tc.endpoint, key_bytes_from_file(tc.key))
        self.c.send(hello)
        fr = self.c.recv_type(T_WELCOME, 10)
        tc.assertIsNotNone(fr, "no WELCOME")
        tc.assertEqual(fr[0][3], T_WELCOME, fr[0][:200])
        self.inbox, self.outbox = queue.Queue(), queue.Queue()
        self.quiet = threading.Event()  # stop heartbeats: let the master forget us
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
        tc.addCleanup(self.close)

    def run(self):
        while not self.stop.is_set():
            if not self.quiet.is_set():
                self.c.send([head(T_HEARTBEAT)])
            while not self.outbox.empty():
                self.c.send(self.outbox.get())
            fr = self.c.recv(0.1)
            if fr is not None:
                self.inbox.put(fr)

    def send(self, frames):
        self.outbox.put(frames)

    def expect(self, mtype, timeout):
        """The next message of type mtype (others but ERROR skipped), or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                fr = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if fr[0][3] in (mtype, T_ERROR):
                return fr

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.c.close()


class Leases(TQTestCase):
    def late(self):
        return self.status()["totals"]["late_results"]

    def wait_json(self, tid, timeout=30):
        r = self.tq("wait", "--json", "--timeout", str(timeout), tid, timeout=timeout + 30)
        return r, json.loads(r.out.splitlines()[0]) if r.out.strip() else None

    # ---- 9: --lease-timeout ---------------------------------------------------

    def test_silent_worker_lease_expires_task_runs_on_another(self):
        """A worker heartbeats but never answers a task without a run
        timeout: after --lease-timeout it gets a KILL for that attempt and
        the task runs (attempt 2) on a real worker."""
        m = self.start_master("--lease-timeout", "1", "--retry-backoff", "0")
        s = Peer(self, hello_worker("silent:1"))
        t0 = time.monotonic()
        tid = self.submit("--fn", "echo", "hello")[0]
        fr = s.expect(T_DISPATCH, 10)
        self.assertIsNotNone(fr, "the silent worker got no DISPATCH")
        (i, att, tmo, _fn, _p), = decode_dispatch(fr)
        self.assertEqual((str(i), att, tmo), (tid, 1, 0))
        fr = s.expect(T_KILL, 15)
        self.assertIsNotNone(fr, "no KILL after --lease-timeout 1")
        self.assertGreaterEqual(time.monotonic() - t0, 1.0 - 0.05)
        self.assertEqual(decode_kill(fr), [(i, 1)])
        # the silent worker is still registered: it was not forgotten
        self.assertIn("silent:1", [w["name"] for w in self.status()["workers"]])
        self.start_worker(concurrency=1)
        r, o = self.wait_json(tid)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((o["status"], o["result"], o["attempts"]), ("done", "hello", 2), o)
        self.assertRegex(m.output(), r"lease expired after 1 s without a result")
        self.assertEqual(self.status()["totals"]["retried"], 0)  # a lost lease, not a retry

    def test_lease_expiries_count_toward_max_attempts(self):
        """A task whose every lease expires is dead after --max-attempts,
        with the documented error; each attempt got its KILL."""
        self.start_master("--lease-timeout", "1", "--max-attempts", "2", "--retry-backoff", "0")
        s = Peer(self, hello_worker("silent:2"))
        tid = self.submit("--fn", "echo", "--retries", "3", "poison")[0]
        for attempt in (1, 2):
            fr = s.expect(T_DISPATCH, 15)
            self.assertIsNotNone(fr, "no DISPATCH of attempt %d" % attempt)
            (i, att, _t, _fn, _p), = decode_dispatch(fr)
            self.assertEqual((str(i), att), (tid, attempt))
            fr = s.expect(T_KILL, 15)
            self.assertIsNotNone(fr, "no KILL of attempt %d" % attempt)
            self.assertEqual(decode_kill(fr), [(i, attempt)])
            s.send(msg_result([], credit=1))  # the killed run's slot is free
        r, o = self.wait_json(tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertEqual((o["status"], o["attempts"]), ("dead", 2), o)
        self.assertIn("gave up after 2 attempts: lease expired after 1 s without a result",
                      o["error"])
        self.assertIsNone(s.expect(T_DISPATCH, 0.5), "a dead task was dispatched again")

    def test_run_timeout_keeps_its_rule_and_zero_means_no_limit(self):
        """A task with a run timeout expires at timeout + 2 heartbeats even
        when --lease-timeout is shorter; --lease-timeout 0 holds a lease
        without a run timeout for as long as its worker lives."""
        self.start_master("--lease-timeout", "0.5", "--retry-backoff", "0")
        s = Peer(self, hello_worker("silent:3"))
        t0 = time.monotonic()
        tid = self.submit("--fn", "echo", "--timeout", "2", "x")[0]
        self.assertIsNotNone(s.expect(T_DISPATCH, 10))
        fr = s.expect(T_KILL, 15)
        self.assertIsNotNone(fr, "no KILL")
        self.assertGreaterEqual(time.monotonic() - t0, 2.0 + 2 * 0.2 - 0.05)
        r = self.tq("wait", "--timeout", "10", tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("timed out: no result from worker silent:3", r.err)
        s.close()

        self.master.stop()
        self.start_master("--lease-timeout", "0", name="master0")
        s = Peer(self, hello_worker("silent:4"))
        tid = self.submit("--fn", "echo", "y")[0]
        self.assertIsNotNone(s.expect(T_DISPATCH, 10))
        self.assertIsNone(s.expect(T_KILL, 2.5), "a KILL with --lease-timeout 0")
        self.assertEqual(self.status()["totals"]["requeued"], 0)

    def test_lease_timeout_flag(self):
        r = self.run_prog([MASTER_BIN, "--help"])
        self.assertIn("--lease-timeout", r.out + r.err)
        for bad in ("-1", "abc", "100000000"):
            r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir, "--lease-timeout", bad])
            self.assertEqual(r.rc, EXIT_USAGE, (bad, r))
            self.assertIn("--lease-timeout", r.err)

    # ---- 10: results only from the holder --------------------------------------

    def test_result_from_a_worker_that_never_held_the_attempt_is_refused(self):
        """A holds attempt 1. B (never given the task) reports (id, 1)
        while A holds the lease, and again after A was lost and the task
        is queued at attempt 1: neither counts. A comes back (a new
        connection, the same instance) and its result is the task's."""
        self.start_master("--retry-backoff", "30")  # keep the lost task queued
        a = Peer(self, hello_worker("rawA:1", instance="a1a1a1a1a1a1a1a1"))
        b = Peer(self, hello_worker("rawB:1", functions=["other"], instance="b2b2b2b2b2b2b2b2"))
        tid = self.submit("--fn", "echo", "payload")[0]
        fr = a.expect(T_DISPATCH, 10)
        self.assertIsNotNone(fr, "A got no DISPATCH")
        (i, att, _t, _fn, _p), = decode_dispatch(fr)
        self.assertEqual((str(i), att), (tid, 1))
        late = self.late()
        b.send(msg_result([(i, 1, RUN_OK, b"forged while leased")]))
        wait_until(lambda: self.late() == late + 1, 10, what="B's result counted as late")
        # A is lost (silent past the heartbeat timeout): its lease is lost,
        # the task is queued again at attempt 1 (backoff 30 s).
        a.quiet.set()
        wait_until(lambda: "rawA:1" not in [w["name"] for w in self.status()["workers"]], 10,
                   what="master to forget A")
        b.send(msg_result([(i, 1, RUN_OK, b"forged after the loss")]))
        wait_until(lambda: self.late() == late + 2 or self.status()["totals"]["done"], 10,
                   what="B's second result handled")
        st = self.status()["totals"]
        self.assertEqual(st["done"], 0, "B's forged result was taken: %s" % st)
        self.assertEqual(self.late(), late + 2)
        # A (the same worker, a new connection) reports its run: taken.
        a.close()
        a2 = Peer(self, hello_worker("rawA:1", instance="a1a1a1a1a1a1a1a1"))
        a2.send(msg_result([(i, 1, RUN_OK, b"from A")]))
        r, o = self.wait_json(tid)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((o["status"], o["result"], o["attempts"]), ("done", "from A", 1), o)
        self.assertEqual(self.late(), late + 2)
        self.assertRegex(self.master.output(), r"not dispatched to this worker: ignored")

    def test_hello_instance_is_checked(self):
        self.start_master()
        for bad in ("", "a1", "A1A1A1A1A1A1A1A1", "g1a1a1a1a1a1a1a1", "0000000000000000",
                    "a1a1a1a1a1a1a1a1a", 12, None):
            c = RawClient(self.endpoint, key_bytes_from_file(self.key))
            self.addCleanup(c.close)
            j = {"role": "worker", "name": "x:1", "slots": 1, "functions": ["echo"],
                 "instance": bad}
            c.send([head(T_HELLO) + json.dumps(j).encode()])
            fr = c.recv_type(T_WELCOME, 5)
            self.assertIsNotNone(fr)
            self.assertEqual(fr[0][3], T_ERROR, (bad, fr[0][:200]))
            self.assertIn("instance", fr[0][4:].decode(), bad)

    def test_worker_result_taken_after_master_restart(self):
        """A real worker runs a task while the master is killed and
        restarted: its result (same instance id, attempt 1) is taken, the
        task is not run again."""
        log = os.path.join(self.tmp, "runs.log")
        m = self.start_master()
        self.start_worker(concurrency=1, fns=[
            "slow=sh -c 'echo run >> %s; sleep 3; echo finished'" % log])
        tid = self.submit("--fn", "slow", "x")[0]
        wait_until(lambda: os.path.exists(log), 20, what="the task to start")
        m.signal(signal.SIGKILL)
        m.wait(10)
        self.start_master(name="master2")
        r, o = self.wait_json(tid, timeout=60)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((o["status"], o["result"], o["attempts"]), ("done", "finished\n", 1), o)
        with open(log) as f:
            self.assertEqual(f.read(), "run\n")


if __name__ == "__main__":
    main()
