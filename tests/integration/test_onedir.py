"""Issue 12 point 2: one master per --data-dir.

Before the fix nothing locked the data dir: a second master replayed the
first one's journal, ran its tasks again, and its compaction deleted the
first one's open segment. Now the first holds an flock on DATA_DIR/lock;
a second exits 8 (TQ_EXIT_ENV) naming the holder's pid and the dir, and a
lock left by a killed master does not block the next start."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, free_port  # noqa: E402


class OneMasterPerDataDir(TQTestCase):
    def test_second_master_refused_then_lock_freed_by_kill(self):
        first = self.start_master()
        tid = self.submit("--fn", "nobody", "x")[0]
        journal = os.path.join(self.data_dir, "journal")
        before = sorted(os.listdir(journal))

        # Same data dir, another port: refused before it reads anything.
        second = self.start_master(port=free_port(), wait=False, name="second")
        rc = second.wait(30)
        out = second.output()
        self.assertEqual(rc, h.EXIT_ENV, out)
        self.assertIn("pid %d" % first.pid, out)
        self.assertIn(self.data_dir, out)
        self.assertTrue(first.alive())
        self.assertEqual(sorted(os.listdir(journal)), before)
        self.assertNotIn("recovered", out)

        # kill -9 leaves the lock file (with the dead pid) behind; the lock
        # itself went with the process, so the next master starts.
        first.signal(signal.SIGKILL)
        first.wait(10)
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "lock")))
        third = self.start_master(name="third")
        self.assertTrue(third.alive())
        st = self.status()
        self.assertEqual(st["totals"]["queued"], 1, st["totals"])
        with open(os.path.join(self.data_dir, "lock")) as f:
            self.assertEqual(f.read().strip(), str(third.pid))
        r = self.tq("cancel", tid)
        self.assertEqual(r.rc, 0, r)

        # A clean stop releases it too.
        third.signal(signal.SIGTERM)
        self.assertEqual(third.wait(30), 0)
        self.start_master(name="fourth")


if __name__ == "__main__":
    main()
