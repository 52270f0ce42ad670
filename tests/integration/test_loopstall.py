"""One request must not hold the master's loop for long (issue 12, 8).

With some 60,000 queues, a STATUS used to build a document of every
queue on the loop thread (130 ms each): another client's round trips
waited behind it. Pause and resume wrote and fsynced DATA_DIR/paused on
the loop thread (now they are journal records, answered once durable)."""

import os
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main  # noqa: E402

NQUEUES = 60 * 1024
ASAN = "asan" in os.environ.get("TQ_BUILD_DIR", "")


def many_queues(tc, n):
    """n tasks, each in a queue of its own (no worker serves "nofn"). One
    connection may create 1024 new names at once: 1000 per connection."""
    req = 1
    for start in range(0, n, 1000):
        c = h.RawClient(tc.endpoint, h.key_bytes_from_file(tc.key))
        try:
            c.hello()
            tasks = [({"fn": "nofn", "queue": "q%06d" % i}, b"")
                     for i in range(start, min(n, start + 1000))]
            c.send(h.msg_submit(tasks, req=req))
            fr = c.recv_type(h.T_SUBMIT_ACK, timeout=30)
            tc.assertIsNotNone(fr, "no SUBMIT_ACK")
            tc.assertIsNone(h.decode_error(fr), fr[0][:200])
        finally:
            c.close()
        req += 1


def round_trips(tc, c, seconds):
    """Round-trip times (ms) of CANCELs of an unknown id for `seconds`."""
    out = []
    end = time.monotonic() + seconds
    req = 1000
    while time.monotonic() < end:
        t0 = time.monotonic()
        c.send(h.msg_ids(h.T_CANCEL, [12345], req=req))
        fr = c.recv_type(h.T_CANCEL_ACK, timeout=10)
        tc.assertIsNotNone(fr, "no CANCEL_ACK")
        out.append((time.monotonic() - t0) * 1000.0)
        req += 1
    return out


class LoopStall(TQTestCase):
    def test_status_with_many_queues_does_not_stall_other_clients(self):
        # default heartbeats (5 s): the Python clients are silent at times
        self.start_master(hb=False)
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        many_queues(self, NQUEUES)
        st = self.status()
        self.assertEqual(st.get("queues_total"), NQUEUES + 1 if any(
            q["name"] == "default" for q in st["queues"]) else NQUEUES, list(st)[:20])
        self.assertTrue(st.get("queues_truncated"))
        self.assertLessEqual(len(st["queues"]), 1000)
        # paging: the next rows
        s = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(s.close)
        s.hello()
        s.send([h.head(h.T_STATUS) + b'{"queue_offset": 1000}'])
        fr = s.recv_type(h.T_STATUS_REPLY, timeout=20)
        import json
        page = json.loads(fr[0][4:].decode())
        self.assertEqual(page["queue_offset"], 1000)
        self.assertTrue(page["queues"])
        self.assertNotEqual(page["queues"][0]["name"], st["queues"][0]["name"])
        # the human form says how many there are
        r = self.tq_ok("status")
        self.assertIn("of %d queues shown" % st["queues_total"], r.out)

        base = round_trips(self, c, 1.0)
        stop = threading.Event()
        nstatus = [0]
        errors, sizes = [], []

        def hammer():
            # three in flight, so the master always has one to build
            for _ in range(2):
                s.send(h.msg_status())
            while not stop.is_set():
                s.send(h.msg_status())
                fr = s.recv_type(h.T_STATUS_REPLY, timeout=20)
                if fr is None or fr[0][3] != h.T_STATUS_REPLY:
                    errors.append(fr and fr[0][:200])
                    return
                sizes.append(len(fr[0]))
                nstatus[0] += 1
        t = threading.Thread(target=hammer)
        t.start()
        try:
            time.sleep(0.2)
            during = round_trips(self, c, 3.0)
        finally:
            stop.set()
            t.join(30)
        p50 = statistics.median(during)
        print("round trip p50 %.2f ms alone, %.2f ms during %d STATUS of %d bytes (max %.1f ms)"
              % (statistics.median(base), p50, nstatus[0], max(sizes or [0]), max(during)),
              file=sys.stderr)
        self.assertEqual(errors, [])
        self.assertGreater(nstatus[0], 3)
        self.assertGreater(min(sizes), 50000)  # a page of 1000 queue rows
        self.assertLess(p50, 90 if ASAN else 30,
                        "another client's round trip p50 %.1f ms during repeated STATUS "
                        "with %d queues" % (p50, NQUEUES))

    def test_pause_and_resume_survive_a_restart(self):
        self.start_master()
        self.tq_ok("pause", "alpha")
        self.tq_ok("pause", "beta")
        self.tq_ok("pause", "gamma")
        self.tq_ok("resume", "beta")
        self.master.stop()
        self.start_master()
        st = {q["name"]: q.get("paused") for q in self.status()["queues"]}
        self.assertTrue(st.get("alpha"))
        self.assertTrue(st.get("gamma"))
        self.assertFalse(st.get("beta", False))
        # answered pauses survive a crash too (--fsync always: once durable)
        self.master.stop()
        self.start_master("--fsync", "always")
        self.tq_ok("pause", "delta")
        self.tq_ok("resume", "gamma")
        os.kill(self.master.pid, signal.SIGKILL)
        self.master.wait(10)
        self.start_master()
        st = {q["name"]: q.get("paused") for q in self.status()["queues"]}
        self.assertEqual(sorted(k for k, v in st.items() if v), ["alpha", "delta"])

    def test_a_slow_journal_sync_does_not_stall_the_loop_during_a_pause(self):
        """A pause is a journal record synced by the journal's own thread:
        with each sync 1.5 s slow (test hook) and --fsync always, `taskq
        pause` returns once its record is durable, and another client is
        served meanwhile."""
        argv = [h.MASTER_BIN, "--bind", "tcp://127.0.0.1:%d" % self.port,
                "--data-dir", self.data_dir, "--authkey-file", self.key, "--fsync", "always"]
        self.master = self.start("master", argv, env={"TASKQ_TEST_SYNC_DELAY_MS": "1500"})
        self.wait_master_ready(self.master)
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        result = {}

        def pause():
            result["r"] = self.tq("pause", "slowq")
        t = threading.Thread(target=pause)
        t0 = time.monotonic()
        t.start()
        time.sleep(0.3)
        during = round_trips(self, c, 0.8)
        t.join(30)
        took = time.monotonic() - t0
        self.assertEqual(result["r"].rc, 0, result["r"])
        self.assertGreaterEqual(took, 1.4, "the pause was answered before its record was durable")
        self.assertLess(max(during), 500,
                        "round trips took up to %.0f ms while the pause was synced"
                        % max(during))
        st = {q["name"]: q.get("paused") for q in self.status()["queues"]}
        self.assertTrue(st.get("slowq"))


if __name__ == "__main__":
    main()
