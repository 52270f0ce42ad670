"""The master stops cleanly on SIGTERM; workers reconnect to a restarted
master and serve new tasks."""

import os
import signal
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main, wait_until, EXIT_CONNECT  # noqa: E402


class Restart(TQTestCase):
    def test_master_sigterm_exits_0(self):
        m = self.start_master()
        self.start_worker(concurrency=1)
        self.tq_ok("map", "--fn", "square", "2")
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0, m.output())

    def test_worker_survives_master_restart(self):
        m = self.start_master()
        w = self.start_worker(concurrency=2)
        r = self.tq_ok("map", "--fn", "square", "4")
        self.assertEqual(r.out, "4 * 4 = 16\n")
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0, m.output())
        self.assertTrue(w.alive())
        self.start_master(name="master2")
        wait_until(lambda: len(self.status()["workers"]) == 1, 20,
                   what="worker to reconnect to the new master")
        self.assertTrue(w.alive(), w.output())
        r = self.tq_ok("map", "--fn", "square", "5", "6", timeout=30)
        self.assertEqual(r.out, "5 * 5 = 25\n6 * 6 = 36\n")

    def test_worker_survives_master_kill9(self):
        m = self.start_master()
        w = self.start_worker(concurrency=1)
        m.signal(signal.SIGKILL)
        m.wait(5)
        self.start_master(name="master2")
        wait_until(lambda: len(self.status()["workers"]) == 1, 20,
                   what="worker to reconnect to the new master")
        r = self.tq_ok("map", "--fn", "echo", "back", timeout=30)
        self.assertEqual(r.out, "back\n")
        self.assertTrue(w.alive())

    def test_client_exits_3_when_master_gone(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "nobody")  # no worker: wait blocks
        out = {}

        def run():
            try:
                # heartbeat timeout is 1 s: 30 s is a generous bound
                out["r"] = self.tq("--reconnect-timeout", "0", "wait", *ids, timeout=30)
            except AssertionError as e:
                out["e"] = e
        t = threading.Thread(target=run)
        t.start()
        wait_until(lambda: self.status()["clients"] >= 2, 10,
                   what="the waiting client to be connected")
        m.signal(signal.SIGKILL)
        m.wait(5)
        t.join(40)
        if "e" in out:
            raise out["e"]
        r = out["r"]
        self.assertEqual(r.rc, EXIT_CONNECT, r)
        self.assertIn(self.endpoint, r.err)

    def test_queued_tasks_survive_master_restart(self):
        m = self.start_master()
        ids = self.submit("--fn", "echo", "durable1", "durable2")
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0, m.output())
        self.start_master(name="master2")
        self.start_worker(concurrency=1)
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "durable1\ndurable2\n")


if __name__ == "__main__":
    main()
