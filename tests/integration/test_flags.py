"""Bad flags: every program refuses a bad value or an unknown option with
exit 2 and a message naming the flag."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, MASTER_BIN, WORKER_BIN, CLIENT_BIN,  # noqa: E402
                       EXIT_USAGE)


class Flags(TQTestCase):
    def master_argv(self, *extra):
        return [MASTER_BIN, "--bind", self.endpoint, "--data-dir", self.data_dir,
                "--authkey-file", self.key] + list(extra)

    def worker_argv(self, *extra):
        return [WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key] + list(extra)

    def client_argv(self, *extra):
        return [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file", self.key] + list(extra)

    def refused(self, argv, flag):
        r = self.run_prog(argv, timeout=10)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn(flag, r.err, r)
        return r

    def test_master(self):
        self.refused(self.master_argv("--heartbeat-interval", "abc"), "--heartbeat-interval")
        self.refused(self.master_argv("--heartbeat-timeout", "-1"), "--heartbeat-timeout")
        self.refused(self.master_argv("--max-payload", "999999G"), "--max-payload")
        self.refused(self.master_argv("--max-payload", "12Q"), "--max-payload")
        self.refused(self.master_argv("--frobnicate"), "--frobnicate")
        self.refused(self.master_argv("--heartbeat-interval"), "--heartbeat-interval")
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "authkey")))

    def test_worker(self):
        self.refused(self.worker_argv("--concurrency", "99999"), "--concurrency")
        self.refused(self.worker_argv("--concurrency", "-1"), "--concurrency")
        self.refused(self.worker_argv("--concurrency", "two"), "--concurrency")
        self.refused(self.worker_argv("--functions", "square,nosuch"), "--functions")
        self.refused(self.worker_argv("--drain-timeout", "x"), "--drain-timeout")
        self.refused(self.worker_argv("--fn", "noequals"), "--fn")
        self.refused(self.worker_argv("--fn", "bad name=cat"), "--fn")
        self.refused(self.worker_argv("--fn", "empty="), "--fn")
        self.refused(self.worker_argv("--fn", "q=sh -c 'unterminated"), "--fn")
        self.refused(self.worker_argv("--frobnicate"), "--frobnicate")

    def test_client(self):
        self.refused(self.client_argv("--frobnicate", "status"), "--frobnicate")
        self.refused(self.client_argv("--connect-timeout", "abc", "status"), "--connect-timeout")
        self.refused(self.client_argv("submit", "--priority", "high", "x"), "--priority")
        self.refused(self.client_argv("submit", "--retries", "-3", "x"), "--retries")
        self.refused(self.client_argv("wait", "--timeout", "soon", "1"), "--timeout")
        self.refused(self.client_argv("map", "--bogus", "1"), "--bogus")
        r = self.run_prog(self.client_argv("frobnicate"), timeout=10)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("frobnicate", r.err)
        r = self.run_prog(self.client_argv(), timeout=10)
        self.assertEqual(r.rc, EXIT_USAGE, r)

    def test_help_exits_0(self):
        for argv in ([MASTER_BIN, "--help"], [WORKER_BIN, "--help"], [CLIENT_BIN, "--help"]):
            r = self.run_prog(argv, timeout=10)
            self.assertEqual(r.rc, 0, r)
            self.assertIn("--", r.out)


if __name__ == "__main__":
    main()
