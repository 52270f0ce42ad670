"""Adaptive prefetch (issue 14): a worker started with default flags holds
enough short tasks to cover the round trip, none beyond its slots for
long ones, and long tasks never wait in one worker's prefetch while a
slot of another worker is free (the mixed-load fairness rule). Timings
are only generous bounds where the bound is the behaviour; the figures
are scripts/bench's."""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, wait_until, read_text  # noqa: E402

PREFETCH_LINE = re.compile(r"prefetch now (\d+) \(")


def prefetch_said(w):
    """The prefetch values a worker's log announced, in order."""
    return [int(x) for x in PREFETCH_LINE.findall(read_text(w.log_path))]


class Adaptive(TQTestCase):
    def test_default_worker_prefetches_short_tasks(self):
        """Microsecond tasks: the default worker asks for more tasks than
        its slots (HELLO adaptive, prefetch = its cap), and the results
        are all there, in order."""
        self.start_master()
        w = self.start_worker(concurrency=2)
        info = self.worker_status(w.wname)
        # the master starts an adaptive worker at its free slots
        self.assertEqual((info["slots"], info["prefetch"], info["credit"]), (2, 62, 2), info)
        n = 5000
        r = self.tq_ok("map", "--fn", "square", "-",
                       input="".join("%d\n" % i for i in range(1, n + 1)), timeout=120)
        lines = r.out.splitlines()
        self.assertEqual(len(lines), n)
        self.assertEqual(lines[-1], "%d * %d = %d" % (n, n, n * n))
        said = wait_until(lambda: prefetch_said(w) or None, 10, what="a 'prefetch now' line")
        self.assertGreater(max(said), 0, said)

    def test_fixed_and_no_prefetch_are_not_adaptive(self):
        """--prefetch N is today's fixed credit; --prefetch 0 none."""
        self.start_master()
        w = self.start_worker("--prefetch", "0", concurrency=1)
        info = self.worker_status(w.wname)
        self.assertEqual((info["prefetch"], info["credit"]), (0, 1), info)
        w2 = self.start_worker("--prefetch", "5", concurrency=1)
        info = self.worker_status(w2.wname)
        self.assertEqual((info["prefetch"], info["credit"]), (5, 6), info)
        r = self.tq_ok("map", "--fn", "square", "-", input="".join("%d\n" % i for i in range(1, 501)))
        self.assertEqual(len(r.out.splitlines()), 500)
        self.assertEqual(prefetch_said(w) + prefetch_said(w2), [])

    def test_long_tasks_do_not_wait_in_the_worker(self):
        """After short tasks have raised the prefetch, long tasks arrive:
        the worker hands back the ones waiting behind its busy slots, and
        once their run times are measured the prefetch drops to 0: the
        master, not the worker, holds the waiting ones."""
        self.start_master()
        w = self.start_worker(concurrency=2)
        self.tq_ok("map", "--fn", "square", "-", input="".join("%d\n" % i for i in range(1, 3001)))
        wait_until(lambda: any(x > 0 for x in prefetch_said(w)), 10, what="prefetch above 0")
        ids = self.submit("--fn", "sleep", *(["0.6"] * 8))

        def settled():
            st = self.status()
            info = [x for x in st["workers"] if x["name"] == w.wname][0]
            return (info["busy"] <= 2 and st["totals"]["queued"] >= 2) and info
        info = wait_until(settled, 10, interval=0.1,
                          what="2 long tasks running on the worker, the rest at the master")
        self.assertLessEqual(info["busy"], 2, info)
        r = self.tq_ok("wait", *ids, timeout=60)
        self.assertEqual(r.out.count("0.6"), 8, r.out)
        wait_until(lambda: prefetch_said(w)[-1] == 0, 10, what="the prefetch to drop to 0")


class MixedLoad(TQTestCase):
    def test_long_tasks_move_to_a_free_slot_of_another_worker(self):
        """Mixed load on the same queue and workers. Two default workers
        have been moving microsecond tasks (so both hold a large
        prefetch); then 4 tasks of 1.5 s and 4 of 0.1 s arrive, spread
        one at a time over the two workers, so one worker gets every
        long task: 2 run, 2 wait in its prefetch. Those 2 must go to
        the other worker's slots when its short tasks are done, not run
        after the first 2 (2 x 1.5 s = 3 s): all done well under 3 s,
        and microsecond tasks submitted meanwhile still flow."""
        self.start_master()
        w1 = self.start_worker(concurrency=2)
        w2 = self.start_worker(concurrency=2)
        self.tq_ok("map", "--fn", "square", "-", input="".join("%d\n" % i for i in range(1, 20001)),
                   timeout=120)
        for w in (w1, w2):
            wait_until(lambda: any(x > 0 for x in prefetch_said(w)), 10, what="prefetch above 0")
        t0 = time.monotonic()
        ids = self.submit("--fn", "sleep", "1.5", "0.1", "1.5", "0.1", "1.5", "0.1", "1.5", "0.1")
        # microsecond tasks beside the long ones, on the same workers
        r = self.tq_ok("map", "--fn", "square", "-",
                       input="".join("%d\n" % i for i in range(1, 2001)), timeout=60)
        self.assertEqual(len(r.out.splitlines()), 2000)
        r = self.tq_ok("wait", *ids, timeout=60)
        took = time.monotonic() - t0
        self.assertEqual(r.out.count("1.5"), 4, r.out)
        # 1.5 s is the ideal (4 long tasks over 4 slots); 3 s is what
        # hoarding costs. The bound between is generous for a loaded CI.
        self.assertLess(took, 2.6, "the 8 tasks took %.2f s: long tasks waited in a "
                                   "worker's prefetch while another worker's slot was free"
                        % took)
        done = sorted(x["done"] for x in self.status()["workers"])
        self.assertGreater(done[0], 0, done)


    def test_inline_tasks_keep_their_prefetch_while_slots_run_long_tasks(self):
        """Every slot of the only worker runs a long task; microsecond
        tasks (built-in square: inline, on the connection thread, no slot)
        keep flowing with their prefetch, not one round trip at a time
        (the rule that drops the prefetch when every slot is stuck looked
        at the slots only and took the inline runs for no progress: the
        bench's mixed row fell to 0.46 of alone). Bound: the same map
        with the slots busy takes at most 3 times as long as alone, plus
        a second; one task per round trip took 20 times as long here."""
        self.start_master()
        w = self.start_worker(concurrency=2)
        n = 20000
        data = "".join("%d\n" % i for i in range(1, n + 1))
        self.tq_ok("map", "--fn", "square", "-", input=data, timeout=120)  # warm: prefetch up
        t0 = time.monotonic()
        self.tq_ok("map", "--fn", "square", "-", input=data, timeout=120)
        alone = time.monotonic() - t0
        ids = self.submit("--fn", "sleep", "4", "4")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 2, 10, interval=0.05,
                   what="both slots on the long tasks")
        t0 = time.monotonic()
        r = self.tq_ok("map", "--fn", "square", "-", input=data, timeout=120)
        mixed = time.monotonic() - t0
        self.assertEqual(len(r.out.splitlines()), n)
        self.assertLess(mixed, 3 * alone + 1.0,
                        "%d inline tasks took %.2f s beside 2 long ones on the busy slots, "
                        "%.2f s alone" % (n, mixed, alone))
        self.assertEqual(self.worker_status(w.wname)["busy"], 2,
                         "the long tasks ended before the map: the test measured nothing")
        self.tq_ok("wait", *ids, timeout=30)


class MapWindow(TQTestCase):
    def test_default_window_grows_to_the_workers_total_credit(self):
        """3 workers of credit 4,097 each (12,291 > the default window of
        10,000): `taskq map -` with the default window keeps them all
        fed, so more than 10,000 tasks are in flight at once."""
        self.start_master()
        for _ in range(3):
            self.start_worker("--prefetch", "4096", concurrency=1)
        cmd = "yes 30 | head -n 12500 | %s --connect %s --authkey-file %s map --fn sleep -" % (
            h.CLIENT_BIN, self.endpoint, self.key)
        self.start("map", ["sh", "-c", cmd])

        def in_flight():
            st = self.status()
            n = st["totals"]["queued"] + sum(w["busy"] for w in st["workers"])
            return n >= 12000 and n
        wait_until(in_flight, 60, interval=0.2, what="more than the default window in flight")


if __name__ == "__main__":
    main()
