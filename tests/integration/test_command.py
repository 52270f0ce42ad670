"""--fn NAME=COMMAND: external commands with the payload on stdin."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main, EXIT_TASK_FAILED  # noqa: E402


class Command(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.w = self.start_worker(concurrency=2, fns=[
            "up=tr a-z A-Z",
            "bad=sh -c 'echo oops-on-stderr >&2; exit 3'",
            """quoted=sh -c 'printf "%s|" "a b" c'""",
            "args=printf '[%s]' 'one two' three",
            "missing=/nonexistent/taskq-no-such-program --flag",
        ])

    def test_task_environment_has_no_taskq_variables(self):
        """A task child gets the worker's environment without TASKQ_*
        (the worker's endpoint and key file path); other variables pass."""
        from tqharness import WORKER_BIN
        env = {"TASKQ_AUTHKEY_FILE": self.key, "TASKQ_CONNECT": self.endpoint,
               "TQ_ENV_PROBE": "kept"}
        self.start("envworker", [WORKER_BIN, "--concurrency", "2", "--name", "envw",
                                 "--fn", "envs=env"], env=env)
        from tqharness import wait_until
        wait_until(lambda: any(w["name"] == "envw" for w in self.status()["workers"]), 30,
                   what="the env worker to join")
        r = self.tq_ok("wait", "--timeout", "20", *self.submit("--fn", "envs", "x"))
        self.assertIn("TQ_ENV_PROBE=kept", r.out)
        self.assertNotIn("TASKQ_", r.out)

    def test_uppercase(self):
        r = self.tq_ok("map", "--fn", "up", "hello", "World")
        self.assertEqual(r.out, "HELLO\nWORLD\n")

    def test_exit_status_and_stderr(self):
        r = self.tq("map", "--fn", "bad", "--json", "x")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual(o["status"], "failed")
        self.assertIn("exit status 3", o["error"])
        self.assertIn("oops-on-stderr", o["error"])
        # plain output: the error goes to stderr
        r = self.tq("map", "--fn", "bad", "y")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("exit status 3", r.err)
        self.assertIn("oops-on-stderr", r.err)

    def test_shell_like_splitting(self):
        r = self.tq_ok("map", "--fn", "quoted", "ignored")
        self.assertEqual(r.out, "a b|c|\n")
        r = self.tq_ok("map", "--fn", "args", "ignored")
        self.assertEqual(r.out, "[one two][three]\n")

    def test_no_shell_involved(self):
        # The payload is stdin, never part of a command line.
        r = self.tq_ok("map", "--fn", "up", "$(echo pwned); `id`")
        self.assertEqual(r.out, "$(ECHO PWNED); `ID`\n")

    def test_missing_command_fails_task_worker_survives(self):
        r = self.tq("map", "--fn", "missing", "--json", "x")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual(o["status"], "failed")
        self.assertTrue(o.get("error"), o)
        self.assertTrue(self.w.alive(), "worker died after a missing command")
        r = self.tq_ok("map", "--fn", "up", "still")
        self.assertEqual(r.out, "STILL\n")
        self.assertIsNotNone(self.worker_status(self.w.wname))

    def test_status_lists_command_functions(self):
        ws = self.worker_status(self.w.wname)
        for fn in ("up", "bad", "quoted", "missing"):
            self.assertIn(fn, ws["functions"])



class CommandOutputCap(TQTestCase):
    """A command's stdout is capped at the master's max payload."""

    def test_result_over_max_payload_fails_task(self):
        self.start_master("--max-payload", "1K")
        self.start_worker(concurrency=1, fns=[
            "big=head -c 5000 /dev/zero",
            "small=head -c 1000 /dev/zero",
        ])
        r = self.tq("map", "--fn", "big", "--json", "x")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual(o["status"], "failed")
        self.assertIn("result exceeds max payload (1024 bytes)", o["error"])
        # at the cap is fine, and the worker kept serving
        r = self.tq_ok("map", "--fn", "small", "--json", "x")
        o = json.loads(r.out)
        self.assertEqual(o["status"], "done")
        # NUL bytes are not JSON text: the result comes as base64
        self.assertEqual(base64.b64decode(o["result_base64"]), b"\0" * 1000)

if __name__ == "__main__":
    main()
