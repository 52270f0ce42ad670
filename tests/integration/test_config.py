#!/usr/bin/env python3
"""Config files (issue 15 point 2): --config FILE for master and worker,
--check-config (configuration OK, or every error as FILE:LINE: message,
exit 2), precedence file < environment < flags, and the client's
~/.config/taskq/config."""
import os
import unittest

from tqharness import (CLIENT_BIN, MASTER_BIN, WORKER_BIN, TQTestCase, free_port, main,
                       tail, wait_until)


class ConfigTest(TQTestCase):
    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_good_file(self):
        path = self.write("master.conf", "# annotated\n; also a comment\n"
                          "fsync = always\nmax-attempts = 7\n"
                          "queue-timeout = a=5\nqueue-timeout = b=6\nrepair = yes\n"
                          "log-level = debug   ; inline comment\n")
        r = self.run_prog([MASTER_BIN, "--config", path, "--data-dir", self.data_dir,
                           "--check-config"])
        self.assertEqual((r.rc, r.out.strip()), (0, "configuration OK"), r)
        self.assertFalse(os.path.exists(self.data_dir), "check-config touched the data dir")
        wpath = self.write("worker.conf", "concurrency = 3\nfn = up=tr a-z A-Z\n"
                           "drain-timeout = 2.5\nname = w-conf\n")
        r = self.run_prog([WORKER_BIN, "--config", wpath, "--check-config"])
        self.assertEqual((r.rc, r.out.strip()), (0, "configuration OK"), r)

    def test_check_bad_file_reports_every_line(self):
        path = self.write("bad.conf", "fsync = sometimes\n"        # 1
                          "nonsense line\n"                          # 2
                          "frobnicate = 1\n"                         # 3
                          "[master]\n"                               # 4
                          "max-attempts = 0\n"                       # 5
                          "heartbeat-interval = 2\n"                 # 6
                          "heartbeat-interval = 3\n"                 # 7
                          "config = other.conf\n"                    # 8
                          "max-payload = " + "9" * 300 + "\n"        # 9
                          "repair = perhaps\n")                      # 10
        r = self.run_prog([MASTER_BIN, "--config", path, "--data-dir", self.data_dir,
                           "--check-config"])
        self.assertEqual(r.rc, 2, r)
        self.assertNotIn("configuration OK", r.out)
        lines = [l for l in r.err.splitlines() if l.startswith(path + ":")]
        got = {int(l[len(path) + 1:].split(":", 1)[0]) for l in lines}
        self.assertEqual(got, {1, 2, 3, 4, 5, 7, 8, 9, 10}, r.err)
        self.assertIn("%s:1: fsync: 'sometimes' is not one of always|interval|off" % path, r.err)
        self.assertIn("%s:3: unknown setting 'frobnicate'" % path, r.err)
        self.assertIn("%s:7: 'heartbeat-interval' is set twice (first on line 6)" % path, r.err)
        # A normal start refuses the same file, with the same messages.
        r2 = self.run_prog([MASTER_BIN, "--config", path, "--data-dir", self.data_dir])
        self.assertEqual(r2.rc, 2, r2)
        self.assertIn("%s:5: max-attempts: 0 is out of range (1..1000)" % path, r2.err)
        self.assertFalse(os.path.exists(self.data_dir))
        # The worker too.
        wpath = self.write("bad-worker.conf", "concurrency = lots\ndata-dir = /tmp\n")
        r3 = self.run_prog([WORKER_BIN, "--config", wpath, "--check-config"])
        self.assertEqual(r3.rc, 2, r3)
        self.assertIn("%s:1: concurrency: 'lots' is not a number" % wpath, r3.err)
        self.assertIn("%s:2: unknown setting 'data-dir'" % wpath, r3.err)

    def test_missing_file(self):
        for prog in (MASTER_BIN, WORKER_BIN):
            r = self.run_prog([prog, "--config", os.path.join(self.tmp, "nope.conf"),
                               "--data-dir", self.data_dir, "--check-config"])
            self.assertEqual(r.rc, 2, r)
            self.assertIn("nope.conf: No such file or directory", r.err)

    def listening_on(self, argv, env=None):
        """Start a master, return the endpoint it says it listens on."""
        m = self.start("master%d" % len(self.procs), argv, env=env)
        line = wait_until(lambda: [l for l in m.output().splitlines() if "listening on" in l]
                          or (not m.alive() and self.fail(tail(m.log_path))),
                          30, what="listening on")
        m.stop()
        return line[0].split("listening on ", 1)[1].split(",")[0]

    def test_precedence_file_env_flags(self):
        p1, p2, p3 = free_port(), free_port(), free_port()
        path = self.write("m.conf", "bind = tcp://127.0.0.1:%d\nauthkey-file = %s\n"
                          "data-dir = %s\n" % (p1, self.key, self.data_dir))
        base = [MASTER_BIN, "--config", path]
        self.assertEqual(self.listening_on(base), "tcp://127.0.0.1:%d" % p1)
        env = {"TASKQ_BIND": "tcp://127.0.0.1:%d" % p2}
        self.assertEqual(self.listening_on(base, env), "tcp://127.0.0.1:%d" % p2)
        self.assertEqual(self.listening_on(base + ["--bind", "tcp://127.0.0.1:%d" % p3], env),
                         "tcp://127.0.0.1:%d" % p3)
        # TASKQ_CONFIG names the file when --config is absent.
        self.assertEqual(self.listening_on([MASTER_BIN], {"TASKQ_CONFIG": path}),
                         "tcp://127.0.0.1:%d" % p1)

    def test_worker_file_and_flags(self):
        self.start_master()
        path = self.write("w.conf", "connect = %s\nauthkey-file = %s\nname = from-file\n"
                          "concurrency = 3\n" % (self.endpoint, self.key))
        w = self.start("wfile", [WORKER_BIN, "--config", path, "--concurrency", "2"])
        got = wait_until(lambda: [x for x in self.status()["workers"] if x["name"] == "from-file"],
                         30, what="worker from the file to join")
        self.assertEqual(got[0]["slots"], 2, got)  # the flag wins over the file
        w.stop()

    def test_client_reads_home_config(self):
        self.start_master()
        home = os.path.join(self.tmp, "home")
        os.makedirs(os.path.join(home, ".config", "taskq"))
        with open(os.path.join(home, ".config", "taskq", "config"), "w") as f:
            f.write("connect = %s\nauthkey-file = %s\n" % (self.endpoint, self.key))
        r = self.run_prog([CLIENT_BIN, "status", "--json"], env={"HOME": home})
        self.assertEqual(r.rc, 0, r)
        # The environment wins over the file.
        bad = "tcp://127.0.0.1:%d" % free_port()
        r = self.run_prog([CLIENT_BIN, "--connect-timeout", "0.3", "status"],
                          env={"HOME": home, "TASKQ_CONNECT": bad})
        self.assertEqual(r.rc, 3, r)
        # Without the file, no key.
        r = self.run_prog([CLIENT_BIN, "status"], env={"HOME": self.tmp})
        self.assertEqual(r.rc, 2, r)
        self.assertIn("no authkey", r.err)


if __name__ == "__main__":
    main()
