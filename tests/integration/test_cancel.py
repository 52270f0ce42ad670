"""cancel: queued, running, unknown."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, EXIT_CANCELLED,  # noqa: E402
                       EXIT_NOT_FOUND)


class Cancel(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()

    def test_cancel_queued(self):
        ids = self.submit("--fn", "echo", "never")  # no worker: stays queued
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--timeout", "10", *ids)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        st = self.status()
        self.assertEqual(st["totals"]["cancelled"], 1, st["totals"])
        self.assertEqual(st["totals"]["queued"], 0, st["totals"])
        # a worker joining later never runs it
        w = self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "echo", "after")
        self.assertEqual(r.out, "after\n")
        self.assertEqual(self.worker_status(w.wname)["done"], 1)

    def test_cancel_running_kills_it(self):
        w = self.start_worker(concurrency=1)
        ids = self.submit("--fn", "sleep", "30")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker running the sleep task")
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--timeout", "15", *ids)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        # the worker stopped the task and has its slot back well before 30 s
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 0, 10,
                   what="worker slot freed after cancel")
        r = self.tq_ok("map", "--fn", "echo", "next", timeout=15)
        self.assertEqual(r.out, "next\n")

    def test_cancel_running_command_kills_it(self):
        marker = os.path.join(self.tmp, "marker")
        w = self.start_worker(concurrency=1, fns=[
            "slow=sh -c 'sleep 5; touch %s'" % marker])
        ids = self.submit("--fn", "slow", "x")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker running the command")
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--timeout", "15", *ids)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 0, 10,
                   what="worker slot freed after cancel")
        import time
        time.sleep(5.5)
        self.assertFalse(os.path.exists(marker), "cancelled command kept running")

    def test_cancel_wait_json(self):
        ids = self.submit("--fn", "echo", "never")
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--json", "--timeout", "10", *ids)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        self.assertEqual(json.loads(r.out)["status"], "cancelled")

    def test_cancel_finished_is_not_an_error(self):
        self.start_worker(concurrency=1)
        ids = self.submit("--fn", "echo", "done")
        self.tq_ok("wait", "--timeout", "10", *ids)
        r = self.tq("cancel", *ids)
        self.assertNotIn(r.rc, (EXIT_CANCELLED, EXIT_NOT_FOUND), r)
        r = self.tq_ok("wait", "--timeout", "10", *ids)
        self.assertEqual(r.out, "done\n")

    def test_cancel_unknown(self):
        r = self.tq("cancel", "987654321")
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        r = self.tq("wait", "--timeout", "5", "987654321")
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)


if __name__ == "__main__":
    main()
