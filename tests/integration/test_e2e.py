"""End to end: master + workers + taskq, the built-in functions, map,
submit/wait, --json output, stdin input."""

import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, EXIT_TASK_FAILED  # noqa: E402


class E2E(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.start_worker(concurrency=2)
        self.start_worker(concurrency=2)

    def test_map_square_tutorial(self):
        r = self.tq_ok("map", "--fn", "square", "1", "2", "3")
        self.assertEqual(r.out, "1 * 1 = 1\n2 * 2 = 4\n3 * 3 = 9\n")

    def test_map_2000_from_stdin_in_order(self):
        nums = list(range(1, 2001))
        r = self.tq_ok("map", "--fn", "square", "-",
                       input="".join("%d\n" % n for n in nums), timeout=90)
        want = "".join("%d * %d = %d\n" % (n, n, n * n) for n in nums)
        self.assertEqual(r.out, want)

    def test_map_json(self):
        r = self.tq_ok("map", "--fn", "square", "--json", "4", "5")
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 2, r)
        objs = [json.loads(x) for x in lines]
        for o, n in zip(objs, (4, 5)):
            self.assertIn("id", o)
            self.assertEqual(o["status"], "done")
            self.assertEqual(o["result"], "%d * %d = %d" % (n, n, n * n))
        self.assertNotEqual(objs[0]["id"], objs[1]["id"])

    def test_submit_then_wait_in_id_order(self):
        ids = self.submit("--fn", "echo", "alpha", "beta", "gamma")
        self.assertEqual(len(ids), 3)
        self.assertEqual(len(set(ids)), 3)
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "alpha\nbeta\ngamma\n")
        # ids given in another order: results follow the ids given
        r = self.tq_ok("wait", "--timeout", "30", ids[2], ids[0])
        self.assertEqual(r.out, "gamma\nalpha\n")

    def test_submit_piped_into_wait_stdin(self):
        r = self.tq_ok("submit", "--fn", "square", "4", "5", "6")
        w = self.tq_ok("wait", "-", input=r.out)
        self.assertEqual(w.out, "4 * 4 = 16\n5 * 5 = 25\n6 * 6 = 36\n")
        bad = self.tq("wait", "-", input=r.out.split()[0] + " abc\n")
        self.assertEqual(bad.rc, 2, bad)
        self.assertIn("stdin line 1: 'abc' is not a task id", bad.err)
        empty = self.tq("wait", "-", input="")
        self.assertEqual(empty.rc, 2, empty)

    def test_wait_json(self):
        ids = self.submit("--fn", "square", "7")
        r = self.tq_ok("wait", "--json", "--timeout", "30", *ids)
        o = json.loads(r.out)
        self.assertEqual(str(o["id"]), ids[0])
        self.assertEqual(o["status"], "done")
        self.assertEqual(o["result"], "7 * 7 = 49")

    def test_echo_sleep(self):
        r = self.tq_ok("map", "--fn", "echo", "hello world")
        self.assertEqual(r.out, "hello world\n")
        r = self.tq_ok("map", "--fn", "sleep", "0.2")
        self.assertEqual(r.out, "slept 0.2\n")

    def test_fail_builtin(self):
        ids = self.submit("--fn", "fail", "boom-text")
        r = self.tq("wait", "--timeout", "30", *ids)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("boom-text", r.err)
        r = self.tq("map", "--fn", "fail", "kaput")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("kaput", r.err)
        r = self.tq("map", "--fn", "fail", "--json", "kaput2")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual(o["status"], "failed")
        self.assertIn("kaput2", o["error"])

    def test_mixed_success_and_failure_exit_1(self):
        a = self.submit("--fn", "echo", "ok")
        b = self.submit("--fn", "fail", "bad")
        r = self.tq("wait", "--timeout", "30", a[0], b[0])
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("ok", r.out)
        self.assertIn("bad", r.err)

    def test_submit_stdin(self):
        ids = self.submit("--fn", "echo", "-", input="one\ntwo\nthree\n")
        self.assertEqual(len(ids), 3)
        r = self.tq_ok("wait", "--timeout", "30", *ids)
        self.assertEqual(r.out, "one\ntwo\nthree\n")

    def test_submit_json(self):
        r = self.tq_ok("submit", "--fn", "echo", "--json", "x", "y")
        objs = [json.loads(x) for x in r.out.splitlines()]
        self.assertEqual(len(objs), 2)
        for o in objs:
            self.assertIn("id", o)
            self.assertIn("status", o)



class OversizedInput(TQTestCase):
    """A payload over the master's limit stops the input, but every task
    already queued still gets its id (submit) or result (map) printed:
    nothing is queued behind the user's back."""

    def setUp(self):
        super().setUp()
        self.start_master("--max-payload", "1K")
        self.start_worker(concurrency=2)

    def test_submit_stops_at_oversized_line(self):
        r = self.tq("submit", "--fn", "echo", "-", input="small\n" + "a" * 5000 + "\nafter\n")
        self.assertEqual(r.rc, 7, r)
        self.assertIn("stdin line 2: payload too large", r.err)
        ids = r.out.split()
        self.assertEqual(len(ids), 1, r)
        self.assertEqual(self.status()["totals"]["submitted"], 1)
        self.assertEqual(self.tq_ok("wait", ids[0]).out, "small\n")

    def test_map_prints_results_before_the_oversized_payload(self):
        r = self.tq("map", "--fn", "square", "3", "4", "9" * 2000, "5")
        self.assertEqual(r.rc, 7, r)
        self.assertEqual(r.out, "3 * 3 = 9\n4 * 4 = 16\n")
        self.assertIn("PAYLOAD 3: payload too large (2000 bytes", r.err)
        self.assertEqual(self.status()["totals"]["submitted"], 2)

def _ipv6_loopback():
    """True if this host can bind ::1 (some CI sandboxes have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class IPv6(TQTestCase):
    @unittest.skipUnless(_ipv6_loopback(), "no IPv6 loopback on this host")
    def test_map_over_ipv6_loopback(self):
        self.endpoint = "tcp://[::1]:%d" % self.port
        self.master = self.start("master", [h.MASTER_BIN, "--bind", self.endpoint,
                                            "--data-dir", self.data_dir,
                                            "--authkey-file", self.key] + h.HB_FLAGS)
        self.wait_master_ready()
        self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "square", "1", "2", "3")
        self.assertEqual(r.out, "1 * 1 = 1\n2 * 2 = 4\n3 * 3 = 9\n")
        self.assertEqual(self.status()["workers"][0]["address"], "::1")

if __name__ == "__main__":
    main()
