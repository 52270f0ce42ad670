"""Issue 15 (svca): running taskq as a service. SIGHUP reloads and never
stops a daemon; --version/-V on every program; the master honours
TASKQ_LOG_LEVEL; honest counters and status; workers listed, quieted and
stopped through the master; a CLI that forgives (short options, help,
suggestions, "--", negative numbers as payloads)."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import (  # noqa: E402
    CLIENT_BIN, MASTER_BIN, WORKER_BIN, RawClient, TQTestCase, key_bytes_from_file, main,
    msg_result, wait_until)


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

    def test_restart_logs_no_spurious_warnings(self):
        m = self.start_master()
        w = self.start_worker(concurrency=2)
        time.sleep(5.5)  # past the worker's 5 s "cannot reach master" period
        ids = self.submit("--fn", "sleep", "1.5")
        wait_until(lambda: self.status()["totals"]["running"] == 1, 20, what="task to run")
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0)
        m2 = self.start_master(name="master2")
        self.tq_ok("wait", "--timeout", "30", ids[0])
        wait_until(lambda: "connected to master" in w.output().split("reconnecting")[-1], 20,
                   what="worker to reconnect")
        self.assertNotIn("before HELLO", m2.output())  # was: WARN ... RESULT before HELLO
        self.assertNotIn("cannot reach master", w.output())

    @unittest.skipIf(h.zmq is None, "pyzmq not available")
    def test_result_of_an_earlier_master_is_not_a_warning(self):
        # A worker of the master before a restart sends its RESULT before
        # it learns (ERROR not registered) that it must say HELLO again.
        m = self.start_master()
        c = RawClient(self.endpoint, key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.send(msg_result([(1, 1, 0, b"x")]))
        fr = c.recv_type(h.T_ERROR, 5)
        self.assertIsNotNone(fr)
        self.assertEqual(h.decode_error(fr)["code"], h.E_NOT_REGISTERED)
        self.assertNotIn("before HELLO", m.output())  # was: WARN ... RESULT before HELLO

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


class HonestStatus(TQTestCase):
    def test_totals_after_restart_count_this_process_only(self):
        m = self.start_master()
        self.start_worker()
        self.tq_ok("map", "--fn", "square", "1", "2", "3")
        self.assertEqual(self.status()["totals"]["done"], 3)
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0)
        self.start_master()
        st = self.status()
        # was: "3 done" (and a done/s rate) from journal replay alone
        self.assertEqual(st["totals"]["done"], 0, st["totals"])
        self.assertEqual(st["totals"]["submitted"], 0, st["totals"])
        self.assertEqual(st["rates"]["done_per_s"], 0, st["rates"])

    def test_dead_task_counted_once(self):
        self.start_master("--max-attempts", "1")
        w = self.start_worker()
        self.assertEqual(self.tq("map", "--fn", "fail", "x", timeout=30).rc, 1)
        self.submit("--fn", "sleep", "30")
        wait_until(lambda: self.status()["totals"]["running"] == 1, 20, what="task to run")
        w.signal(signal.SIGKILL)  # its lease is lost; one attempt allowed: dead
        wait_until(lambda: self.status()["totals"]["dead"] == 1, 20, what="task to die")
        st = self.status()
        t = st["totals"]
        self.assertEqual(t["failed"], 1, t)  # was 2: the dead task counted as failed too
        self.assertEqual(t["died"], 1, t)
        q = [x for x in st["queues"] if x["name"] == "default"][0]
        self.assertEqual((q["failed"], q["dead"]), (1, 1), q)
        r = self.tq_ok("status")
        self.assertIn("1 failed", r.out)
        self.assertIn("1 dead", r.out)

    def test_dead_listing_does_not_create_a_queue(self):
        self.start_master()
        r = self.tq("dead", "--queue", "typo")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("no dead tasks", r.out)
        names = [q["name"] for q in self.status()["queues"]]
        self.assertNotIn("typo", names)  # was: the queue 'typo' was created

    def test_status_shows_oldest_queued_age(self):
        self.start_master()
        self.submit("--queue", "slow", "--fn", "nobody", "1")
        time.sleep(1.2)
        st = self.status()
        q = [x for x in st["queues"] if x["name"] == "slow"][0]
        self.assertGreaterEqual(q["oldest_age_ms"], 1000, q)
        r = self.tq_ok("status")
        self.assertIn("OLDEST", r.out)
        row = [ln for ln in r.out.splitlines() if ln.startswith("slow ")][0]
        self.assertRegex(row, r" \d+s", row)

    def test_status_shows_journal_error_and_exits_9(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        mnt = os.path.join(self.tmp, "small")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount tmpfs: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        self.start_master(data_dir=os.path.join(mnt, "data"))
        argv = [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file", self.key, "submit",
                "--fn", "echo"]
        for i in range(400):
            try:
                p = subprocess.run(argv + ["p" * 4000 + str(i)], capture_output=True, text=True,
                                   timeout=5)
            except subprocess.TimeoutExpired:
                continue
            if p.returncode != 0:
                break
        self.assertEqual(self.status()["journal"]["error"], "No space left on device")
        r = self.tq("status")
        self.assertEqual(r.rc, 9, r)  # was 0, and no word of the error
        self.assertIn("journal: ERROR No space left on device", r.out)
        self.assertEqual(self.tq("status", "--json").rc, 0)  # the document says it
        subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
        wait_until(lambda: self.status()["journal"]["error"] is None, 10,
                   what="journal error to clear")
        self.assertEqual(self.tq("status").rc, 0)


class OperateWorkers(TQTestCase):
    def test_workers_quiet_and_stop(self):
        self.start_master()
        w = self.start_worker("--name", "alpha", concurrency=2)
        r = self.tq_ok("workers")
        self.assertIn("alpha", r.out)
        wid = json.loads(self.tq_ok("workers", "--json").out)[0]["id"]
        self.assertRegex(wid, r"^[0-9a-f]{16}$")
        self.assertIn(wid, r.out)
        slow = self.submit("--fn", "sleep", "1.5")
        wait_until(lambda: self.status()["totals"]["running"] == 1, 20, what="task to run")
        r = self.tq_ok("worker", "quiet", "alpha")
        self.assertIn("worker alpha (id %s) quiet" % wid, r.out)
        wait_until(lambda: "quiet at the master's request" in w.output(), 10,
                   what="the worker to hear it")
        self.assertEqual(self.worker_status("alpha")["state"], "quiet")
        more = self.submit("--fn", "square", "7")
        r = self.tq("wait", "--timeout", "1", more[0])
        self.assertEqual(r.rc, 4, r)  # a quiet worker takes no new task
        self.assertTrue(w.alive())
        r = self.tq_ok("wait", "--timeout", "30", slow[0])  # its running task finishes
        r = self.tq_ok("worker", "stop", wid)
        self.assertIn("stopping", r.out)
        self.assertEqual(w.wait(20), 0, w.output())  # drained and exited
        self.start_worker()
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", more[0]).out, "7 * 7 = 49\n")
        m = self.master.output()
        self.assertIn("admin: quieting worker alpha", m)
        self.assertIn("admin: stopping worker alpha", m)

    def test_admin_actions_name_the_requester(self):
        self.start_master("--max-attempts", "1")
        self.tq_ok("pause", "mail")
        self.tq_ok("resume", "mail")
        ids = self.submit("--queue", "mail", "--fn", "nobody", "x")
        self.tq("cancel", ids[0])
        self.tq("retry", "--all")
        self.tq("purge", "--all")
        m = self.master.output()
        by = r" at the request of \S+:\d+ \(127\.0\.0\.1\)"  # the client's HELLO name, address
        self.assertRegex(m, r"admin: queue mail paused" + by)
        self.assertRegex(m, r"admin: queue mail resumed" + by)
        self.assertRegex(m, r"cancel of 1 task \(the first %s\): 1 cancelled," % ids[0] + by)
        self.assertRegex(m, r"admin: retried 0 dead or failed tasks" + by)
        self.assertRegex(m, r"admin: purged 0 dead or failed tasks" + by)

    def test_worker_op_unknown_name(self):
        self.start_master()
        r = self.tq("worker", "stop", "nobody")
        self.assertEqual(r.rc, 6, r)
        self.assertIn("no worker named or with id 'nobody'", r.err)
        self.assertEqual(self.tq("worker", "frob", "x").rc, 2)


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
