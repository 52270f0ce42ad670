#!/usr/bin/env python3
"""Logs (issue 15 point 4): logfmt lines by default (ts= level= role=
msg="..."), --log-format json, syslog priority prefixes when stderr is the
journal (JOURNAL_STREAM), the master honours TASKQ_LOG_LEVEL and logs its
version, pid and settings at start-up; and no key, secret or payload
ever reaches a log, even at debug level (a grep for planted ones)."""
import binascii
import hashlib
import json
import os
import re
import subprocess

import tqharness as h
from tqharness import MASTER_BIN, TQTestCase, clean_env, free_port, main, wait_until

LOGFMT = re.compile(r'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(error|warn|info|debug) '
                    r'role=(master|worker|taskq) msg="((?:[^"\\]|\\.)*)"$')


class LogFormatTest(TQTestCase):
    def test_logfmt_default(self):
        self.start_master()
        w = self.start_worker()
        self.submit("--fn", "square", "3")
        self.master.stop()
        w.stop()
        for p, role in ((self.master, "master"), (w, "worker")):
            lines = h.read_text(p.log_path).splitlines()
            self.assertTrue(lines)
            for line in lines:
                m = LOGFMT.match(line)
                self.assertTrue(m, "not logfmt: %r" % line)
                self.assertEqual(m.group(2), role)
        out = h.read_text(self.master.log_path)
        self.assertRegex(out, r'msg="taskq-master \S+ starting: pid %d, bind tcp://127.0.0.1:%d, '
                         r'data dir %s, fsync interval, max-tasks \d+'
                         % (self.master.pid, self.port, re.escape(self.data_dir)))
        self.assertIn('msg="listening on tcp://127.0.0.1:%d' % self.port, out)

    def test_json_and_level_from_env(self):
        m = self.start("master", [MASTER_BIN, "--bind", self.endpoint, "--data-dir",
                                  self.data_dir, "--authkey-file", self.key,
                                  "--log-format", "json"] + h.HB_FLAGS,
                       env={"TASKQ_LOG_LEVEL": "debug"})
        self.master = m
        self.wait_master_ready(m)
        self.start_worker("--log-format", "json")
        m.stop()
        levels = set()
        for line in h.read_text(m.log_path).splitlines():
            doc = json.loads(line)
            self.assertEqual(sorted(doc), ["level", "msg", "role", "ts"], line)
            self.assertEqual(doc["role"], "master")
            levels.add(doc["level"])
        self.assertIn("debug", levels)  # TASKQ_LOG_LEVEL=debug is honoured
        for line in h.read_text(self.procs[-1].log_path).splitlines():
            self.assertEqual(json.loads(line)["role"], "worker")

    def test_journal_priority_prefix(self):
        path = os.path.join(self.tmp, "journal.log")
        with open(path, "wb") as f:
            st = os.fstat(f.fileno())
            env = clean_env({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
            p = subprocess.Popen([MASTER_BIN, "--bind", self.endpoint, "--data-dir",
                                  self.data_dir, "--authkey-file", self.key], stdout=f,
                                 stderr=f, env=env)
            try:
                wait_until(lambda: "listening on" in open(path).read(), 30, what="start")
            finally:
                p.terminate()
                p.wait(10)
        lines = open(path).read().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[3467]>ts=")
        self.assertTrue([l for l in lines if l.startswith("<6>") and "listening on" in l])
        # A JOURNAL_STREAM that is not our stderr (inherited) changes nothing.
        r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir, "--max-attempts", "0"],
                          env={"JOURNAL_STREAM": "1:1"})
        self.assertEqual(r.rc, 2)

    def test_worker_logs_task_outcomes(self):
        self.start_master()
        w = self.start_worker("--log-level", "debug")
        ids = self.submit("--fn", "fail", "boom\x1b[31m red")
        r = self.tq("wait", "--timeout", "30", ids[0])
        self.assertEqual(r.rc, 1, r)
        ok = self.submit("--fn", "square", "3")
        self.tq_ok("wait", "--timeout", "30", ok[0])
        wait_until(lambda: "done in" in w.output(), 10, what="the done line")
        fail = [l for l in w.output().splitlines() if "task %s attempt 1" % ids[0] in l]
        self.assertEqual(len(fail), 1, w.output())
        # info, with the function, the run time and the error text escaped
        self.assertIn("level=info", fail[0])
        self.assertRegex(fail[0], r"\(fail\) failed after [0-9.]+ ms: boom\\\\x1b\[31m red")
        done = [l for l in w.output().splitlines() if "task %s attempt 1" % ok[0] in l]
        self.assertEqual(len(done), 1, w.output())
        self.assertIn("level=debug", done[0])
        self.assertRegex(done[0], r"\(square\) done in [0-9.]+ ms")

    def test_planted_secrets_never_logged(self):
        secret_text = "itest-PLANTED-authkey-7f3e9a1c5b2d4e6f8a0c2e4a6b8d0f1e"
        key = self.key = self.make_key("planted-key", secret_text)
        payload = "PLANTED-PAYLOAD-d41d8cd98f00b204"
        self.start_master("--log-level", "debug", key=key)
        w = self.start_worker("--log-level", "debug", key=key)
        r = self.tq("map", "--fn", "echo", payload, payload + "-2", key=key,
                    env={"TASKQ_LOG_LEVEL": "debug"})
        self.assertEqual(r.rc, 0, r)
        self.assertIn(payload, r.out)  # the result is the payload
        self.tq("submit", "--fn", "echo", "--queue", "q2", payload + "-3", key=key)
        # A client with a wrong key that sends a planted payload too.
        bad = self.make_key("bad-key", "itest-PLANTED-wrongkey-0a1b2c3d4e5f60718293a4b5c6d7e8f9")
        self.tq("--connect-timeout", "1", "submit", payload + "-4", key=bad)
        self.master.stop()
        w.stop()
        with open(key, "rb") as f:
            raw_key = f.read().strip()
        planted = [secret_text, payload, "wrongkey-0a1b2c3d"]
        # the derived CURVE secret keys (common/tq_authkey.h), as hex and Z85
        k = hashlib.blake2b(raw_key, digest_size=32).digest()
        planted.append(binascii.hexlify(k).decode())
        for ctx in (b"taskq/v1/curve/server", b"taskq/v1/curve/client"):
            seed = hashlib.blake2b(ctx, key=k, digest_size=32).digest()
            secret = hashlib.sha512(seed).digest()[:32]
            planted.append(binascii.hexlify(secret).decode())
            if h.zmq is not None:
                planted.append(h.zmq.utils.z85.encode(secret).decode())
        logs = "\n".join(h.read_text(p.log_path) for p in self.procs) + r.err
        for needle in planted:
            self.assertNotIn(needle, logs, "a secret or payload in the logs")
        self.assertIn("listening on", logs)  # the logs are there


if __name__ == "__main__":
    main()
