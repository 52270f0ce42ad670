"""Timeouts: a task's run timeout, retries after it, wait --timeout."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, EXIT_TIMEOUT,  # noqa: E402
                       EXIT_TASK_FAILED)


class Timeouts(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()

    def test_wait_timeout_exit_4(self):
        ids = self.submit("--fn", "echo", "nobody-serves-this-yet")  # no worker
        r = self.tq("wait", "--timeout", "0.5", *ids, timeout=15)
        self.assertEqual(r.rc, EXIT_TIMEOUT, r)
        self.assertEqual(r.out, "")
        # the task is still there and runs once a worker comes
        self.start_worker(concurrency=1)
        r = self.tq_ok("wait", "--timeout", "15", *ids)
        self.assertEqual(r.out, "nobody-serves-this-yet\n")

    def test_wait_timeout_partial(self):
        self.start_worker(concurrency=1, fns=["slow=sh -c 'sleep 20'"])
        done = self.submit("--fn", "echo", "quick")
        self.tq_ok("wait", "--timeout", "10", *done)
        slow = self.submit("--fn", "slow", "x")
        r = self.tq("wait", "--timeout", "0.5", done[0], slow[0], timeout=15)
        self.assertEqual(r.rc, EXIT_TIMEOUT, r)

    def test_run_timeout_builtin(self):
        w = self.start_worker(concurrency=1)
        ids = self.submit("--fn", "sleep", "--timeout", "0.5", "--retries", "0", "30")
        r = self.tq("wait", "--json", "--timeout", "20", *ids, timeout=30)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertIn(o["status"], ("failed", "dead"), o)
        self.assertIn("time", o.get("error", "").lower(), o)
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 0, 10,
                   what="worker slot free after the timeout")

    def test_run_timeout_command_killed(self):
        marker = os.path.join(self.tmp, "marker")
        w = self.start_worker(concurrency=1, fns=[
            "slow=sh -c 'sleep 4; touch %s'" % marker])
        ids = self.submit("--fn", "slow", "--timeout", "0.5", "--retries", "0", "x")
        r = self.tq("wait", "--timeout", "20", *ids, timeout=30)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("timed out", r.err)
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 0, 10,
                   what="worker slot free after the timeout")
        import time
        time.sleep(4.5)
        self.assertFalse(os.path.exists(marker), "timed-out command kept running")

    def test_run_timeout_retried(self):
        # first attempt times out, the retry succeeds
        flag = os.path.join(self.tmp, "first")
        self.start_worker(concurrency=1, fns=[
            "once=sh -c 'if [ -e %s ]; then echo second; else touch %s; sleep 30; fi'"
            % (flag, flag)])
        ids = self.submit("--fn", "once", "--timeout", "1", "--retries", "2", "x")
        r = self.tq_ok("wait", "--json", "--timeout", "30", *ids, timeout=40)
        o = json.loads(r.out)
        self.assertEqual(o["status"], "done", o)
        self.assertEqual(o["result"].strip(), "second")


if __name__ == "__main__":
    main()
