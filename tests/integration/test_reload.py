#!/usr/bin/env python3
"""Issue 15 point 3: SIGHUP re-reads the config file and applies live what
can change (log level, result TTLs, limits, retry settings, queue
timeouts), logs each change as `setting X changed from A to B`, refuses
with a log line what cannot change while running (--fsync, ...), and
never stops the daemon."""
import json
import os
import signal

from tqharness import TQTestCase, main, wait_until


class ReloadCase(TQTestCase):
    CONF = "taskq.conf"

    def write_conf(self, text):
        """(Re)write the config file the daemon under test reads."""
        path = os.path.join(self.tmp, self.CONF)
        with open(path, "w") as f:
            f.write(text)
        return path


class MasterReload(ReloadCase):
    CONF = "master.conf"

    def test_sighup_applies_the_config_file(self):
        conf = self.write_conf("max-tasks = 100\nresult-ttl = 3600\nlog-level = info\n"
                               "queue-timeout = slow=30\nmax-attempts = 5\n")
        m = self.start_master("--config", conf)
        self.start_worker(concurrency=2)
        self.submit("--queue", "parked", "--fn", "nobody", "a", "b")
        self.write_conf("max-tasks = 4\nresult-ttl = 1\nlog-level = debug\n"
                        "queue-timeout = fast=1\nmax-attempts = 2\nfsync = always\n")
        m.signal(signal.SIGHUP)
        want = ["SIGHUP: setting max-tasks changed from 100 to 4",
                "SIGHUP: setting result-ttl changed from 3600 to 1",
                "SIGHUP: setting log-level changed from info to debug",
                "SIGHUP: setting queue-timeout changed from slow=30 to fast=1",
                "SIGHUP: setting max-attempts changed from 5 to 2",
                "SIGHUP: setting fsync changed from interval to always in the configuration "
                "but cannot change while running: restart to apply it; fsync stays interval"]
        wait_until(lambda: all(w in m.output() for w in want), 10,
                   what="the master to log every change")
        self.assertTrue(m.alive(), m.output())
        self.assertNotIn("nothing to reload", m.output())
        # max-tasks 4: two parked tasks, one finished (counted until its
        # result expires) and one more fit; a fifth does not.
        ids = self.submit("--fn", "square", "5")
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", ids[0]).out, "5 * 5 = 25\n")
        self.submit("--queue", "parked", "--fn", "nobody", "c")
        r = self.tq("submit", "--queue", "parked", "--fn", "nobody", "d")
        self.assertEqual(r.rc, 7, r)
        self.assertIn("--max-tasks 4", r.err)
        # result-ttl 1 s: the delivered result is gone soon after (was 3600).
        wait_until(lambda: json.loads(self.tq("wait", "--json", "--timeout", "5",
                                              ids[0]).out)["status"] == "unknown",
                   15, interval=0.3, what="the result to expire after the new TTL")
        # queue-timeout fast=1: a task there without --timeout is stopped
        # after 1 s (was: no timeout).
        ids = self.submit("--queue", "fast", "--fn", "sleep", "20")
        r = self.tq("wait", "--json", "--timeout", "30", ids[0])
        self.assertEqual(json.loads(r.out)["status"], "failed", r)
        self.assertIn("timed out after 1 s", r.out)
        # the new log level is in force
        self.assertIn("level=debug", m.output())
        # nothing changed since: a second SIGHUP says so, and still the
        # refused setting is reported again
        m.signal(signal.SIGHUP)
        wait_until(lambda: m.output().count("fsync stays interval") == 2, 10,
                   what="the second reload")
        self.assertTrue(m.alive())
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(10), 0, m.output())

    def test_sighup_with_a_broken_file_changes_nothing(self):
        conf = self.write_conf("max-attempts = 5\n")
        m = self.start_master("--config", conf)
        self.write_conf("max-attempts = 0\nretry-backoff = 10\nretry-backoff-max = 1\n")
        m.signal(signal.SIGHUP)
        wait_until(lambda: "nothing changed" in m.output(), 10, what="the refusal")
        self.assertIn("max-attempts: 0 is out of range", m.output())
        self.assertNotIn("setting max-attempts changed", m.output())
        self.write_conf("retry-backoff = 10\nretry-backoff-max = 1\n")
        m.signal(signal.SIGHUP)
        wait_until(lambda: "must not be less than --retry-backoff" in m.output(), 10,
                   what="the cross-check")
        self.assertNotIn("setting retry-backoff changed", m.output())
        self.assertTrue(m.alive())
        self.assertEqual(self.status()["master"]["pid"], m.pid)


class WorkerReload(ReloadCase):
    CONF = "worker.conf"

    def running(self):
        return self.status()["totals"]["running"]

    def test_sighup_changes_concurrency_without_dropping_tasks(self):
        m = self.start_master()
        conf = self.write_conf("concurrency = 1\nprefetch = 0\n")
        w = self.start_worker("--config", conf, "--name", "wre")
        self.assertEqual(self.worker_status("wre")["slots"], 1)
        ids = self.submit("--fn", "sleep", *(["3"] * 4))
        wait_until(lambda: self.running() == 1, 20, what="one task to run")
        # grow to 4: the three waiting tasks start while the first runs on
        self.write_conf("concurrency = 4\nprefetch = 0\ndrain-timeout = 5\n")
        w.signal(signal.SIGHUP)
        wait_until(lambda: "setting concurrency changed from 1 to 4" in w.output(), 10,
                   what="the worker to log the change")
        self.assertIn("setting drain-timeout changed from 30 to 5 in the configuration but "
                      "cannot change while running", w.output())
        wait_until(lambda: self.running() == 4, 10, what="four tasks to run")
        wait_until(lambda: self.worker_status("wre")["slots"] == 4, 10,
                   what="the master to see 4 slots")
        self.assertIn("worker wre now has 4 slots (was 1)", m.output())
        # shrink to 2 while four run: none is stopped or run twice
        self.write_conf("concurrency = 2\nprefetch = 0\n")
        w.signal(signal.SIGHUP)
        wait_until(lambda: "concurrency changed from 4 to 2 slots" in w.output(), 10,
                   what="the shrink")
        for i in ids:
            r = self.tq("wait", "--json", "--timeout", "30", i)
            self.assertEqual(json.loads(r.out)["status"], "done", r)
            self.assertEqual(json.loads(r.out)["attempts"], 1, r)
        self.assertEqual(self.worker_status("wre")["slots"], 2)
        st = self.status()["totals"]
        self.assertEqual(st["requeued"], 0, st)
        # now at most two run at once
        more = self.submit("--fn", "sleep", *(["1"] * 4))
        peak = 0
        def all_done():
            nonlocal peak
            peak = max(peak, self.running())
            return self.status()["totals"]["queued"] == 0 and self.running() == 0
        wait_until(all_done, 30, interval=0.1, what="the next four tasks")
        self.assertLessEqual(peak, 2)
        for i in more:
            self.assertEqual(json.loads(self.tq("wait", "--json", i).out)["status"], "done")
        self.assertTrue(w.alive())
        self.assertNotIn("re-registered", m.output())
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(15), 0, w.output())


if __name__ == "__main__":
    main()
