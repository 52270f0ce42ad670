"""Issue 4 on the master side: fencing of stale attempts, retry backoff
with jitter, poison tasks that go dead after --max-attempts, per-queue
run timeouts, delayed tasks (SUBMIT flag 0x0004), the ADMIN message's
errors, and a quick clean SIGTERM of the master."""

import json
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (  # noqa: E402
    E_BAD_NAME, E_MALFORMED, EXIT_OK, EXIT_TASK_FAILED, MASTER_BIN, T_ADMIN, T_ADMIN_REPLY,
    T_DISPATCH, T_ERROR, T_HEARTBEAT, T_KILL, T_RESULTS, T_SUBMIT, T_SUBMIT_ACK, T_WELCOME, RawClient,
    TQTestCase, decode_error, decode_results, decode_submit_ack, head, key_bytes_from_file, main,
    msg_hello_worker, msg_result, str8, wait_until)
FLAG_SUBSCRIBE = 0x0001
FLAG_NOT_BEFORE = 0x0004


def decode_dispatch(frames):
    """[(id, attempt, timeout_ms, fn, payload)] of a DISPATCH."""
    b = frames[0]
    assert b[:4] == head(T_DISPATCH), b[:4]
    (count,) = struct.unpack_from("<H", b, 4)
    off, out = 6, []
    for n in range(count):
        i, a, t = struct.unpack_from("<QII", b, off)
        off += 16
        fl = b[off]
        fn = b[off + 1:off + 1 + fl].decode()
        off += 1 + fl
        out.append((i, a, t, fn, frames[1 + n]))
    return out


def submit_delayed(payload, not_before_ms, fn="echo", req=1):
    body = struct.pack("<IHH", req, FLAG_SUBSCRIBE | FLAG_NOT_BEFORE, 1)
    body += str8(fn) + str8("") + str8("") + struct.pack("<iIHQ", 0, 0, 0, not_before_ms)
    return [head(T_SUBMIT) + body, payload]


def recv_alive(c, mtype, timeout):
    """recv_type that keeps the raw peer registered: a HEARTBEAT every
    0.2 s (the harness's master forgets a peer silent for 1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.send([head(T_HEARTBEAT)])
        fr = c.recv_type(mtype, min(0.2, max(deadline - time.monotonic(), 0)))
        if fr is not None:
            return fr
    return None


class Lifecycle(TQTestCase):
    def raw(self, hello=False):
        """A raw peer: hello=False says HELLO as a client, None says
        nothing, else the HELLO frames to send (WELCOME expected)."""
        c = RawClient(self.endpoint, key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        if hello is None:
            return c
        if hello is False:
            c.hello()
        else:
            c.send(hello)
            fr = c.recv_type(T_WELCOME, 5)
            self.assertIsNotNone(fr)
            self.assertEqual(fr[0][3], T_WELCOME, fr[0][:200])
        return c

    # ---- fencing ------------------------------------------------------------

    def test_stale_attempt_is_fenced_and_the_client_sees_one_result(self):
        """Worker A gets attempt 1 and goes silent; the master gives up on
        it and dispatches attempt 2 to B. A comes back and reports attempt
        1: it is counted as late and ignored, B's result is the task's."""
        self.start_master("--retry-backoff", "0")
        a = self.raw(msg_hello_worker("rawA:1", 1, ["echo"]))
        tid = self.submit("--fn", "echo", "payload")[0]
        fr = a.recv_type(T_DISPATCH, 5)
        self.assertIsNotNone(fr, "A got no DISPATCH")
        (i, att, _t, _fn, pay), = decode_dispatch(fr)
        self.assertEqual((str(i), att, pay), (tid, 1, b"payload"))
        # A is silent: after the heartbeat timeout (1 s) the lease is lost.
        wait_until(lambda: not any(w["name"] == "rawA:1" for w in self.status()["workers"]),
                   10, what="master to forget silent worker A")
        b = self.raw(msg_hello_worker("rawB:1", 1, ["echo"]))
        fr = b.recv_type(T_DISPATCH, 5)
        self.assertIsNotNone(fr, "B got no DISPATCH")
        (i2, att2, _t, _fn, _p), = decode_dispatch(fr)
        self.assertEqual((i2, att2), (i, 2))
        before = self.status()["totals"]["late_results"]
        # A says HELLO again and reports its stale attempt 1.
        a.send(msg_hello_worker("rawA:1", 1, ["echo"]))
        self.assertIsNotNone(a.recv_type(T_WELCOME, 5))
        a.send(msg_result([(i, 1, 0, b"from A")]))
        wait_until(lambda: self.status()["totals"]["late_results"] == before + 1, 5,
                   what="A's stale result counted as late")
        self.assertEqual(self.status()["totals"]["done"], 0)
        b.send(msg_result([(i, 2, 0, b"from B")]))
        r = self.tq_ok("wait", "--json", "--timeout", "10", tid)
        outs = [json.loads(x) for x in r.out.splitlines()]
        self.assertEqual(len(outs), 1, r)
        self.assertEqual((outs[0]["status"], outs[0]["result"], outs[0]["attempts"]),
                         ("done", "from B", 2))
        # A late result after the task finished is fenced too.
        a.send(msg_result([(i, 1, 0, b"from A again")]))
        wait_until(lambda: self.status()["totals"]["late_results"] == before + 2, 5,
                   what="second stale result counted")
        r = self.tq_ok("wait", "--timeout", "10", tid)
        self.assertEqual(r.out, "from B\n")

    def test_hello_busy_slots_get_no_credit(self):
        """A worker that says HELLO again while its slots still run tasks
        of its old connection announces them as busy: the master gives
        it credit only for the free ones, and the rest as they finish."""
        self.start_master()
        w = self.raw(None)
        w.send([head(0x01) + json.dumps({"role": "worker", "name": "rawW:1", "slots": 2,
                                         "busy": 2, "functions": ["echo"]}).encode()])
        self.assertEqual(w.recv_type(T_WELCOME, 5)[0][3], T_WELCOME)
        self.submit("--fn", "echo", "a", "b")
        st = [x for x in self.status()["workers"] if x["name"] == "rawW:1"][0]
        self.assertEqual((st["slots"], st["credit"]), (2, 0), st)
        self.assertIsNone(recv_alive(w, T_DISPATCH, 1.0), "dispatched to a busy slot")
        w.send(msg_result([], credit=1))  # one old run ended
        fr = recv_alive(w, T_DISPATCH, 5)
        self.assertIsNotNone(fr)
        self.assertEqual(len(decode_dispatch(fr)), 1)
        for bad in (-1, 3, 1.5, "1"):
            c = self.raw(None)
            c.send([head(0x01) + json.dumps({"role": "worker", "name": "x:1", "slots": 2,
                                             "busy": bad, "functions": ["echo"]}).encode()])
            e = decode_error(c.recv_type(T_WELCOME, 5))
            self.assertEqual(e["code"], E_MALFORMED, (bad, e))
            self.assertIn("busy", e["message"])

    def test_silent_worker_lease_expires_with_kill(self):
        """A worker that stays connected (heartbeats) but never reports a
        task with a run timeout: the master expires the lease at timeout
        + 2 heartbeats, sends KILL for that attempt, and the task fails
        as timed out (no retry left)."""
        self.start_master()
        w = self.raw(msg_hello_worker("rawS:1", 1, ["echo"]))
        t0 = time.monotonic()
        tid = self.submit("--fn", "echo", "--timeout", "1", "x")[0]
        (i, att, tmo, _fn, _p), = decode_dispatch(recv_alive(w, T_DISPATCH, 5))
        self.assertEqual((str(i), att, tmo), (tid, 1, 1000))
        fr = recv_alive(w, T_KILL, 10)
        self.assertIsNotNone(fr, "no KILL")
        took = time.monotonic() - t0
        body = fr[0][4:]
        (n,) = struct.unpack_from("<H", body, 0)
        self.assertEqual(struct.unpack_from("<QI", body, 2), (i, 1))
        self.assertEqual(n, 1)
        self.assertGreaterEqual(took, 1.0 + 2 * 0.2 - 0.05)
        r = self.tq("wait", "--timeout", "10", tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("timed out: no result from worker rawS:1", r.err)
        # the worker's late report of that attempt is fenced
        w.send(msg_result([(i, 1, 0, b"too late")]))
        wait_until(lambda: self.status()["totals"]["late_results"] == 1, 5,
                   what="the late report counted")
        self.assertEqual(self.tq("wait", tid).rc, EXIT_TASK_FAILED)

    # ---- retries and backoff --------------------------------------------------

    def run_failing_task(self, *master_flags):
        """A command that logs the time of each run and fails; 2 retries.
        Returns the gaps between the 3 runs in seconds."""
        self.start_master(*master_flags)
        log = os.path.join(self.tmp, "runs.log")
        self.start_worker(concurrency=1, fns=[
            "flaky=sh -c 'date +%%s.%%N >> %s; echo boom >&2; exit 3'" % log])
        tid = self.submit("--fn", "flaky", "--retries", "2", "x")[0]
        r = self.tq("wait", "--timeout", "60", tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("exit status 3", r.err)
        with open(log) as f:
            runs = [float(x) for x in f.read().split()]
        self.assertEqual(len(runs), 3, runs)
        st = self.status()["totals"]
        self.assertEqual(st["retried"], 2, st)
        return [runs[1] - runs[0], runs[2] - runs[1]]

    def test_retries_back_off_exponentially_with_jitter(self):
        gaps = self.run_failing_task("--retry-backoff", "0.6", "--retry-backoff-max", "30")
        # equal jitter: the n-th delay is in [d/2, d] with d = 0.6 * 2^(n-1)
        self.assertGreaterEqual(gaps[0], 0.3, gaps)
        self.assertGreaterEqual(gaps[1], 0.6, gaps)
        self.assertLess(gaps[0], 0.6 + 2.0, gaps)
        self.assertLess(gaps[1], 1.2 + 2.0, gaps)

    def test_backoff_cap_and_off(self):
        gaps = self.run_failing_task("--retry-backoff", "0")
        # no backoff: re-dispatched at once. The default (1 s, doubling)
        # would make the two gaps at least 0.5 + 1.0 s; each run only
        # starts a shell.
        self.assertLess(sum(gaps), 1.0, gaps)
        r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir, "--retry-backoff", "2",
                           "--retry-backoff-max", "1"])
        self.assertEqual(r.rc, 2, r)
        self.assertIn("--retry-backoff-max", r.err)

    # ---- poison tasks --------------------------------------------------------

    def test_poison_task_goes_dead_and_others_still_run(self):
        """A task that kills the worker running it is re-queued without
        using a retry, and after --max-attempts lost leases it is dead;
        workers started again keep serving the other tasks."""
        self.start_master("--max-attempts", "3", "--retry-backoff", "0.2")
        fns = ["poison=sh -c 'kill -9 $PPID'", "ok=echo fine"]
        poison = self.submit("--fn", "poison", "--retries", "5", "p")[0]
        # A worker dies as soon as it gets the task, maybe before the
        # harness saw it join: start them without waiting, one more each
        # time the last one died.
        workers = [self.start_worker(concurrency=1, fns=fns, wait=False)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.status()["totals"]["dead"] == 0:
            if not workers[-1].alive():
                workers.append(self.start_worker(concurrency=1, fns=fns, wait=False))
            time.sleep(0.1)
        self.assertEqual(self.status()["totals"]["dead"], 1)
        # exactly the 3 that got the task died (the master noticed each)
        wait_until(lambda: sum(not w.alive() for w in workers) >= 3, 10,
                   what="3 workers killed by the poison task")
        time.sleep(0.5)
        self.assertEqual(sum(not w.alive() for w in workers), 3)
        if not workers[-1].alive():
            self.start_worker(concurrency=1, fns=fns)
        r = self.tq("wait", "--json", "--timeout", "10", poison)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual((o["status"], o["attempts"]), ("dead", 3), o)
        self.assertIn("gave up after 3 attempts: worker lost", o["error"])
        good = self.submit("--fn", "ok", "a", "b")
        r = self.tq_ok("wait", "--timeout", "20", *good)
        self.assertEqual(r.out, "fine\nfine\n")
        st = self.status()["totals"]
        self.assertEqual(st["retried"], 0, st)  # lost leases use no retry

    # ---- per-queue run timeouts ------------------------------------------------

    def test_queue_default_timeout(self):
        self.start_master("--queue-timeout", "slow=1", "--retry-backoff", "0")
        self.start_worker(concurrency=2)
        t0 = time.monotonic()
        slow = self.submit("--queue", "slow", "--fn", "sleep", "30")[0]
        r = self.tq("wait", "--json", "--timeout", "20", slow)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertIn("timed out", json.loads(r.out)["error"])
        # an explicit --timeout wins; other queues have none
        a = self.submit("--queue", "slow", "--timeout", "10", "--fn", "sleep", "1.5")[0]
        b = self.submit("--fn", "sleep", "1.5")[0]
        r = self.tq_ok("wait", "--timeout", "20", a, b)
        self.assertEqual(r.out, "slept 1.5\nslept 1.5\n")
        for bad in ("slow", "=1", "q=abc", "q=0", "bad name=1"):
            r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir,
                               "--queue-timeout", bad])
            self.assertEqual(r.rc, 2, (bad, r))
            self.assertIn("--queue-timeout", r.err)

    # ---- delayed tasks -------------------------------------------------------------

    def test_delayed_task_waits_then_runs(self):
        self.start_master()
        self.start_worker(concurrency=1, fns=["stamp=date +%s.%N"])
        c = self.raw()
        t0 = time.time()
        c.send(submit_delayed(b"", int((t0 + 1.5) * 1000), fn="stamp"))
        fr = c.recv_type(T_SUBMIT_ACK, 5)
        _req, (tid,) = decode_submit_ack(fr)
        st = self.status()
        self.assertEqual(st["totals"]["delayed"], 1, st["totals"])
        self.assertEqual(st["queues"][0]["delayed"], 1, st["queues"])
        fr = recv_alive(c, T_RESULTS, 10)
        self.assertIsNotNone(fr, "no result")
        (i, status, attempts, data), = decode_results(fr)
        self.assertEqual((i, status, attempts), (tid, 1, 1))
        ran = float(data.decode().strip())
        self.assertGreaterEqual(ran, t0 + 1.5 - 0.01)
        self.assertEqual(self.status()["totals"]["delayed"], 0)
        # a time in the past, or 0, is at once
        c.send(submit_delayed(b"now", 1, req=2))
        self.assertIsNotNone(c.recv_type(T_SUBMIT_ACK, 5))
        r = c.recv_type(T_RESULTS, 5)
        self.assertEqual(decode_results(r)[0][3], b"now")

    def test_delayed_task_survives_restart_and_can_be_cancelled(self):
        self.start_master()
        c = self.raw()
        t0 = time.time()
        c.send(submit_delayed(b"later", int((t0 + 4) * 1000)))
        _req, (tid,) = decode_submit_ack(c.recv_type(T_SUBMIT_ACK, 5))
        c.send(submit_delayed(b"gone", int((t0 + 4) * 1000), req=2))
        _req, (tid2,) = decode_submit_ack(c.recv_type(T_SUBMIT_ACK, 5))
        c.close()
        r = self.tq_ok("cancel", str(tid2))
        self.assertEqual(r.out, "%d cancelled\n" % tid2)
        self.master.signal(signal.SIGTERM)
        self.assertEqual(self.master.wait(10), 0)
        self.start_master()
        self.start_worker(concurrency=1)
        self.assertEqual(self.status()["totals"]["delayed"], 1)
        r = self.tq_ok("wait", "--timeout", "20", str(tid))
        self.assertEqual(r.out, "later\n")
        self.assertGreaterEqual(time.time(), t0 + 4 - 0.01)
        r = self.tq("wait", str(tid2))
        self.assertIn("cancelled", r.err)

    def test_not_before_past_year_9999_is_refused(self):
        self.start_master()
        c = self.raw()
        c.send(submit_delayed(b"x", 253402300799001))
        fr = c.recv_type(T_SUBMIT_ACK, 5)
        err = decode_error(fr)
        self.assertIsNotNone(err, fr)
        self.assertEqual(err["code"], E_MALFORMED)
        self.assertIn("not_before_ms", err["message"])

    # ---- ADMIN errors -------------------------------------------------------------

    def admin(self, c, req):
        c.send([head(T_ADMIN) + json.dumps(req).encode()])
        fr = c.recv_type(T_ADMIN_REPLY, 5)
        self.assertIsNotNone(fr, "no answer to %r" % req)
        if fr[0][3] == T_ERROR:
            return decode_error(fr)
        return json.loads(fr[0][4:].decode())

    def test_admin_requests_are_checked(self):
        self.start_master()
        c = self.raw()
        bad = [({"req": 5, "op": "frobnicate"}, E_MALFORMED),
               ({"req": 6, "op": "pause"}, E_MALFORMED),
               ({"req": 7, "op": "pause", "queue": "no spaces"}, E_BAD_NAME),
               ({"req": 8, "op": "retry"}, E_MALFORMED),
               ({"req": 9, "op": "retry", "ids": [1], "all": True}, E_MALFORMED),
               ({"req": 10, "op": "purge", "ids": [0]}, E_MALFORMED),
               ({"req": 11, "op": "purge", "ids": ["1"]}, E_MALFORMED),
               ({"req": 12, "op": "dead", "limit": 0}, E_MALFORMED),
               ({"req": 13, "op": "dead", "after": 2.5}, E_MALFORMED),
               ({"req": 14, "op": "retry", "ids": list(range(1, 1026))}, 5),
               ({"req": 15, "op": "retry", "ids": [1], "queue": "q1"}, E_MALFORMED)]
        for req, code in bad:
            e = self.admin(c, req)
            self.assertEqual((e.get("code"), e.get("ref")), (code, req["req"]), (req, e))
        e = self.admin(c, {"req": -1, "op": "dead"})
        self.assertEqual(e["code"], E_MALFORMED)
        ok = self.admin(c, {"req": 20, "op": "dead"})
        self.assertEqual(ok, {"req": 20, "ok": True, "tasks": [], "more": False})
        ok = self.admin(c, {"req": 21, "op": "retry", "ids": [12345]})
        self.assertEqual(ok["items"], [{"id": 12345, "outcome": "unknown"}])
        self.assertEqual(ok["count"], 0)
        ok = self.admin(c, {"req": 22, "op": "pause", "queue": "q1"})
        self.assertEqual((ok["paused"], ok["changed"]), (True, True))
        ok = self.admin(c, {"req": 23, "op": "pause", "queue": "q1"})
        self.assertEqual(ok["changed"], False)
        # the journal holds the paused set: no DATA_DIR/paused any more
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "paused")))
        q = [x for x in self.status()["queues"] if x["name"] == "q1"]
        self.assertEqual(q[0]["paused"], True)
        ok = self.admin(c, {"req": 24, "op": "resume", "queue": "q1"})
        self.assertEqual((ok["paused"], ok["changed"]), (False, True))
        q = [x for x in self.status()["queues"] if x["name"] == "q1"]
        self.assertEqual(q[0]["paused"], False)

    def test_bad_paused_file_refuses_start(self):
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.data_dir, "paused"), "w") as f:
            f.write("good\nbad name\n")
        m = self.start_master(wait=False)
        self.assertEqual(m.wait(10), 8)
        self.assertIn("paused line 2", m.output())

    def test_paused_file_of_an_earlier_version_moves_to_the_journal(self):
        """An earlier version kept the paused set in DATA_DIR/paused: it
        is read once, journaled and deleted; the queues stay paused across
        later restarts, including one without a clean shutdown."""
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.data_dir, "paused")
        with open(path, "w") as f:
            f.write("old1\n\nold2\n")

        def paused():
            return sorted(q["name"] for q in self.status()["queues"] if q.get("paused"))
        self.start_master()
        self.assertEqual(paused(), ["old1", "old2"])
        self.master.stop()
        self.assertFalse(os.path.exists(path), "the paused file was not deleted")
        self.start_master()
        self.assertEqual(paused(), ["old1", "old2"])
        self.assertEqual(self.tq_ok("resume", "old1").out, "queue old1 resumed\n")
        os.kill(self.master.pid, signal.SIGKILL)
        self.master.wait(10)
        self.start_master()
        self.assertEqual(paused(), ["old2"])

    # ---- master shutdown --------------------------------------------------------------

    def test_sigterm_master_exits_within_5s_and_keeps_tasks(self):
        self.start_master()
        w = self.start_worker(concurrency=2)
        running = self.submit("--fn", "sleep", "30", "30")
        queued = self.submit("--fn", "echo", *["q%d" % i for i in range(2000)])
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 2, 10, what="tasks running")
        w.signal(signal.SIGSTOP)  # the tasks stay leased to a worker that says nothing
        try:
            t0 = time.monotonic()
            self.master.signal(signal.SIGTERM)
            rc = self.master.wait(10)
            took = time.monotonic() - t0
        finally:
            w.signal(signal.SIGKILL)
        self.assertEqual(rc, EXIT_OK)
        self.assertLess(took, 5.0)
        self.start_master()
        st = self.status()["totals"]
        self.assertEqual(st["queued"], 2002, st)
        self.start_worker(concurrency=4)
        r = self.tq_ok("wait", "--timeout", "60", *queued)
        self.assertEqual(len(r.out.splitlines()), 2000)
        self.tq_ok("cancel", *running)


if __name__ == "__main__":
    main()
