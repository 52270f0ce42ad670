"""status --json has every field of the documented schema; status text."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main  # noqa: E402

MASTER_KEYS = {"version", "endpoint", "uptime_ms", "pid"}
TOTALS_KEYS = {"submitted", "dispatched", "done", "failed", "cancelled", "requeued",
               "late_results", "queued", "running", "stored_results", "tasks"}
RATES_KEYS = {"submitted_per_s", "done_per_s"}
QUEUE_KEYS = {"name", "queued", "running", "done", "failed", "cancelled"}
WORKER_KEYS = {"name", "address", "slots", "busy", "credit", "functions", "state",
               "idle_ms", "done"}


class Status(TQTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.start_master()
        self.w = self.start_worker(concurrency=3)

    def test_json_schema(self):
        self.tq_ok("map", "--fn", "square", "1", "2")
        self.submit("--fn", "fail", "x")
        self.submit("--fn", "echo", "--queue", "other", "q")
        st = self.status()
        for k in ("master", "totals", "rates", "queues", "workers", "clients"):
            self.assertIn(k, st)
        self.assertTrue(MASTER_KEYS <= set(st["master"]), st["master"])
        self.assertEqual(st["master"]["pid"], self.m.pid)
        self.assertEqual(st["master"]["version"], "0.1.0")
        self.assertIn(str(self.port), st["master"]["endpoint"])
        self.assertTrue(TOTALS_KEYS <= set(st["totals"]), st["totals"])
        self.assertTrue(RATES_KEYS <= set(st["rates"]), st["rates"])
        for k in TOTALS_KEYS:
            self.assertIsInstance(st["totals"][k], int, k)
        self.assertGreaterEqual(st["totals"]["submitted"], 4)
        self.assertIsInstance(st["clients"], int)
        names = [q["name"] for q in st["queues"]]
        self.assertIn("default", names)
        self.assertIn("other", names)
        for q in st["queues"]:
            self.assertTrue(QUEUE_KEYS <= set(q), q)
        self.assertEqual(len(st["workers"]), 1)
        w = st["workers"][0]
        self.assertTrue(WORKER_KEYS <= set(w), w)
        self.assertEqual(w["address"], "127.0.0.1")
        self.assertEqual(w["slots"], 3)
        self.assertEqual(w["state"], "active")
        for fn in ("square", "echo", "sleep", "fail"):
            self.assertIn(fn, w["functions"])
        self.assertIn(":", w["name"])

    def test_counts_follow_tasks(self):
        self.tq_ok("map", "--fn", "square", "1", "2", "3")
        st = self.status()
        self.assertEqual(st["totals"]["submitted"], 3)
        self.assertEqual(st["totals"]["done"], 3)
        self.assertEqual(st["totals"]["failed"], 0)
        self.assertEqual(st["totals"]["queued"], 0)
        self.assertEqual(st["totals"]["running"], 0)
        self.assertEqual(self.worker_status(self.w.wname)["done"], 3)

    def test_text(self):
        self.tq_ok("map", "--fn", "echo", "x")
        r = self.tq_ok("status")
        self.assertIn("default", r.out)
        self.assertIn(self.w.wname, r.out)


if __name__ == "__main__":
    main()
