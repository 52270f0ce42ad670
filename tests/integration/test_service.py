"""Issue 15 (svca): running taskq as a service. SIGHUP reloads and never
stops a daemon; --version/-V on every program; the master honours
TASKQ_LOG_LEVEL; honest counters and status; workers listed, quieted and
stopped through the master; a CLI that forgives (short options, help,
suggestions, "--", negative numbers as payloads)."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (  # noqa: E402
    CLIENT_BIN, MASTER_BIN, WORKER_BIN, TQTestCase, main, wait_until)


class Signals(TQTestCase):
    def test_sighup_does_not_stop_the_master(self):
        m = self.start_master()
        m.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: nothing to reload" in m.output(), 10,
                   what="the master to log the reload")
        self.assertTrue(m.alive(), m.output())
        self.assertEqual(self.status()["master"]["pid"], m.pid)
        m.signal(signal.SIGHUP)  # and again
        wait_until(lambda: m.output().count("SIGHUP received") == 2, 10, what="second SIGHUP")
        self.assertTrue(m.alive(), m.output())
        self.start_worker()
        self.assertEqual(self.tq_ok("map", "--fn", "square", "3").out, "3 * 3 = 9\n")
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0, m.output())

    def test_sighup_does_not_stop_the_worker(self):
        self.start_master()
        w = self.start_worker()
        w.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: nothing to reload" in w.output(), 10,
                   what="the worker to log the reload")
        self.assertTrue(w.alive(), w.output())
        self.assertEqual(self.tq_ok("map", "--fn", "square", "4").out, "4 * 4 = 16\n")
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(15), 0, w.output())

    def test_master_honours_taskq_log_level(self):
        m = self.start("master", [MASTER_BIN, "--bind", self.endpoint, "--data-dir",
                                  self.data_dir, "--authkey-file", self.key],
                       env={"TASKQ_LOG_LEVEL": "warn"})
        self.master = m
        self.wait_master_ready(m)
        self.assertNotIn("INFO", m.output())
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0)
        self.assertNotIn("INFO", m.output())

    def test_version_everywhere(self):
        for prog, flags in ((MASTER_BIN, ("--version", "-V")), (WORKER_BIN, ("--version", "-V")),
                            (CLIENT_BIN, ("--version", "-V"))):
            for f in flags:
                r = self.run_prog([prog, f])
                self.assertEqual(r.rc, 0, r)
                self.assertRegex(r.out, r"^taskq(-master|-worker)? \d+\.\d+", r)

    def test_help_short_everywhere(self):
        for prog in (MASTER_BIN, WORKER_BIN, CLIENT_BIN):
            r = self.run_prog([prog, "-h"])
            self.assertEqual(r.rc, 0, r)
            self.assertIn("usage:", r.out)

    def test_data_dir_lock(self):
        self.start_master()
        m2 = self.start("master2", [MASTER_BIN, "--bind", "tcp://127.0.0.1:0", "--data-dir",
                                    self.data_dir, "--authkey-file", self.key])
        self.assertEqual(m2.wait(20), 8)
        self.assertIn("another taskq-master (pid %d) is using --data-dir" % self.master.pid,
                      m2.output())


class ForgivingCli(TQTestCase):
    def test_short_options_and_negative_payloads(self):
        self.start_master()
        self.start_worker()
        ids = self.submit("-q", "foo", "1")
        self.assertEqual(len(ids), 1, ids)  # was: three tasks "-q", "foo", "1"
        st = self.status()
        self.assertIn("foo", [q["name"] for q in st["queues"]])
        r = self.tq_ok("map", "--fn", "square", "-5")
        self.assertEqual(r.out, "-5 * -5 = 25\n")
        r = self.tq_ok("map", "-f", "echo", "-p", "-3", "--", "-h", "-q")
        self.assertEqual(r.out, "-h\n-q\n")
        r = self.tq_ok("wait", "-j", ids[0])
        self.assertEqual(json.loads(r.out)["id"], int(ids[0]))

    def test_suggestions_and_help(self):
        r = self.tq("stauts")
        self.assertEqual(r.rc, 2, r)
        self.assertIn("unknown command 'stauts'; did you mean 'status'?", r.err)
        r = self.tq("submit", "--queu", "x", "1")
        self.assertEqual(r.rc, 2, r)
        self.assertIn("unknown option --queu; did you mean --queue?", r.err)
        r = self.tq("submit", "-x", "1")
        self.assertEqual(r.rc, 2, r)
        self.assertIn("unknown option -x", r.err)
        r = self.tq_ok("help")
        self.assertIn("commands:", r.out)
        r = self.tq_ok("help", "status")
        self.assertIn("usage: taskq [OPTIONS] status", r.out)
        r = self.tq_ok("status", "-h")
        self.assertIn("usage: taskq [OPTIONS] status", r.out)
        r = self.tq("help", "stauts")
        self.assertEqual(r.rc, 2, r)
        self.assertIn("did you mean 'status'?", r.err)
        r = self.run_prog([MASTER_BIN, "--bnd", "x"])
        self.assertEqual(r.rc, 2, r)
        self.assertIn("did you mean --bind?", r.err)


if __name__ == "__main__":
    main()
