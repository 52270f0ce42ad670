"""Scheduling: routing by function, priorities, credit, fair spread."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main, wait_until  # noqa: E402


class Sched(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()

    def test_routing_by_function(self):
        up = self.start_worker("--functions", "echo", concurrency=2, fns=["up=tr a-z A-Z"])
        ws = self.worker_status(up.wname)
        self.assertIn("up", ws["functions"])
        self.assertNotIn("square", ws["functions"])
        ids = self.submit("--fn", "square", "6")
        r = self.tq_ok("map", "--fn", "up", "abc")
        self.assertEqual(r.out, "ABC\n")
        # The square task stays queued while only the 'up' worker exists.
        time.sleep(1.0)
        st = self.status()
        self.assertEqual(st["totals"]["queued"], 1, st["totals"])
        self.assertEqual(self.worker_status(up.wname)["busy"], 0)
        self.start_worker(concurrency=1)
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "6 * 6 = 36\n")
        self.assertEqual(self.worker_status(up.wname)["done"], 1)

    def test_priority_order(self):
        order = os.path.join(self.tmp, "order")
        w = self.start_worker(concurrency=1, fns=[
            "rec=sh -c 'cat >> %s; echo >> %s'" % (order, order)])
        busy = self.submit("--fn", "sleep", "1.5")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker busy with the sleep task")
        low = self.submit("--fn", "rec", "--priority", "1", "low")
        mid = self.submit("--fn", "rec", "mid")  # default priority 0
        high = self.submit("--fn", "rec", "--priority", "10", "high")
        self.tq_ok("wait", "--timeout", "30", *(busy + low + mid + high))
        with open(order) as f:
            self.assertEqual(f.read().split(), ["high", "low", "mid"])

    def test_fifo_within_priority(self):
        order = os.path.join(self.tmp, "order")
        w = self.start_worker(concurrency=1, fns=[
            "rec=sh -c 'cat >> %s; echo >> %s'" % (order, order)])
        busy = self.submit("--fn", "sleep", "1")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker busy with the sleep task")
        ids = []
        for word in ("a", "b", "c", "d"):
            ids += self.submit("--fn", "rec", word)
        self.tq_ok("wait", "--timeout", "30", *(busy + ids))
        with open(order) as f:
            self.assertEqual(f.read().split(), ["a", "b", "c", "d"])

    def test_credit_never_exceeded(self):
        w = self.start_worker(concurrency=2)
        ids = self.submit("--fn", "sleep", *(["0.4"] * 10))
        seen_two = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = self.status()
            for x in st["workers"]:
                self.assertLessEqual(x["busy"], x["slots"], x)
            self.assertLessEqual(st["totals"]["running"], 2, st["totals"])
            ws = self.worker_status(w.wname)
            self.assertEqual(ws["slots"], 2)
            if st["totals"]["running"] == 2 and st["totals"]["queued"] >= 1:
                seen_two = True
            if st["totals"]["queued"] == 0 and st["totals"]["running"] == 0:
                break
            time.sleep(0.05)
        self.assertTrue(seen_two, "never saw exactly 2 running with tasks queued")
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "slept 0.4\n" * 10)

    def test_fair_spread(self):
        a = self.start_worker(concurrency=2)
        b = self.start_worker(concurrency=2)
        words = ["w%d" % i for i in range(200)]
        r = self.tq_ok("map", "--fn", "echo", *words)
        self.assertEqual(r.out, "".join(w + "\n" for w in words))
        da = self.worker_status(a.wname)["done"]
        db = self.worker_status(b.wname)["done"]
        self.assertGreater(da, 0)
        self.assertGreater(db, 0)
        self.assertEqual(da + db, 200)


if __name__ == "__main__":
    main()
