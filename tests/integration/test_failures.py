"""Failures: a worker killed, a worker frozen past its heartbeat timeout,
a worker drained with SIGTERM."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main, wait_until  # noqa: E402


class Failures(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()

    def test_worker_killed_tasks_requeued(self):
        a = self.start_worker(concurrency=2)
        ids = self.submit("--fn", "sleep", "1", "1.2")
        wait_until(lambda: self.worker_status(a.wname)["busy"] == 2, 10,
                   what="worker A holding both tasks")
        a.signal(signal.SIGKILL)
        a.wait(5)
        b = self.start_worker(concurrency=2)
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "slept 1\nslept 1.2\n")
        st = self.status()
        self.assertGreaterEqual(st["totals"]["requeued"], 2, st["totals"])
        self.assertEqual(st["totals"]["done"], 2, st["totals"])
        self.assertEqual(self.worker_status(b.wname)["done"], 2)
        self.assertFalse(any(w["name"] == a.wname for w in st["workers"]), st["workers"])
        # --json: each id exactly once
        r = self.tq_ok("wait", "--json", "--timeout", "10", *ids)
        self.assertEqual(len(r.out.splitlines()), 2)

    def test_frozen_worker_result_fenced(self):
        a = self.start_worker(concurrency=1, fns=["who=sh -c 'sleep 2; echo A'"])
        ids = self.submit("--fn", "who", "x")
        wait_until(lambda: self.worker_status(a.wname)["busy"] == 1, 10,
                   what="worker A running the task")
        a.signal(signal.SIGSTOP)
        try:
            self.start_worker(concurrency=1, fns=["who=echo B"])
            r = self.tq_ok("wait", "--timeout", "30", *ids)
            self.assertEqual(r.out.strip(), "B")
            before = self.status()["totals"]
        finally:
            a.signal(signal.SIGCONT)
        # A's command has finished by now (its child was not stopped); give
        # A time to come back and report its stale attempt.
        time.sleep(3)
        r = self.tq_ok("wait", "--timeout", "10", *ids)
        self.assertEqual(r.out.strip(), "B")
        after = self.status()["totals"]
        self.assertEqual(after["done"], 1, after)
        self.assertGreaterEqual(after["late_results"], before["late_results"])
        self.assertGreaterEqual(after["requeued"], 1, after)

    def test_drain_finishes_running_task(self):
        w = self.start_worker(concurrency=1)
        ids = self.submit("--fn", "sleep", "2")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker running the task")
        w.signal(signal.SIGTERM)
        wait_until(lambda: (self.worker_status(w.wname) or {}).get("state") == "draining", 5,
                   interval=0.05, what="worker shown as draining")
        self.assertEqual(w.wait(15), 0, w.output())
        r = self.tq_ok("wait", "--timeout", "10", *ids)
        self.assertEqual(r.out, "slept 2\n")
        st = self.status()
        self.assertEqual(st["totals"]["requeued"], 0, st["totals"])

    def test_drain_timeout_hands_task_back(self):
        w = self.start_worker("--drain-timeout", "0.5", concurrency=1,
                              fns=["job=sh -c 'sleep 30; echo first'"])
        ids = self.submit("--fn", "job", "x")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker running the task")
        t0 = time.monotonic()
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(10), 0, w.output())
        self.assertLess(time.monotonic() - t0, 10)
        self.start_worker(concurrency=1, fns=["job=echo second"])
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out.strip(), "second")

    def test_drain_idle_worker_exits_0(self):
        w = self.start_worker(concurrency=1)
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(10), 0, w.output())
        wait_until(lambda: not self.status()["workers"], 5, what="worker gone from status")


if __name__ == "__main__":
    main()
