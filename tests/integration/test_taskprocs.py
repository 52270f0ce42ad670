"""Task processes that escape their task (issue 12, point 11): a --fn
grandchild that calls setsid leaves the task's process group; the worker
is its subreaper and kills (and reaps) it when the task ends, times out,
is cancelled, or the worker stops."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, EXIT_CANCELLED,  # noqa: E402
                       EXIT_TASK_FAILED)


def escaper(pidfile, then):
    """A --fn command whose grandchild setsids, writes its pid to pidfile
    and sleeps 300 s; the command itself waits for the pid file, then
    runs `then`."""
    return ("sh -c 'setsid sh -c \"echo \\$\\$ > %s.tmp; mv %s.tmp %s; exec sleep 300\" "
            "</dev/null >/dev/null 2>&1 & while [ ! -s %s ]; do sleep 0.05; done; %s'"
            % (pidfile, pidfile, pidfile, pidfile, then))


def read_pid(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def gone(pid):
    """True once pid no longer exists (a zombie still exists: reaped too)."""
    return not os.path.exists("/proc/%d" % pid)


class EscapedProcesses(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.pidfile = os.path.join(self.tmp, "grandchild.pid")
        self.pids = []
        self.addCleanup(self._kill_leftovers)

    def _kill_leftovers(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def grandchild(self):
        pid = wait_until(lambda: read_pid(self.pidfile), 15, what="grandchild's pid file")
        self.pids.append(pid)
        return pid

    def assert_gone(self, pid, what):
        wait_until(lambda: gone(pid), 5, what="escaped grandchild %d gone after %s" % (pid, what))

    def test_normal_end(self):
        self.start_worker(concurrency=1, fns=["esc=" + escaper(self.pidfile, "echo started")])
        r = self.tq_ok("map", "--fn", "esc", "x", timeout=30)
        self.assertEqual(r.out, "started\n")
        self.assert_gone(self.grandchild(), "the task ended")

    def test_timeout(self):
        self.start_worker(concurrency=1, fns=["hang=" + escaper(self.pidfile, "sleep 300")])
        ids = self.submit("--fn", "hang", "--timeout", "1", "--retries", "0", "x")
        pid = self.grandchild()
        r = self.tq("wait", "--timeout", "20", *ids, timeout=30)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assert_gone(pid, "the task timed out")

    def test_cancel(self):
        w = self.start_worker(concurrency=1, fns=["hang=" + escaper(self.pidfile, "sleep 300")])
        ids = self.submit("--fn", "hang", "x")
        pid = self.grandchild()
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 10,
                   what="worker running the task")
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--timeout", "15", *ids, timeout=30)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        self.assert_gone(pid, "the task was cancelled")

    def test_worker_stops(self):
        w = self.start_worker("--drain-timeout", "1", concurrency=1,
                              fns=["hang=" + escaper(self.pidfile, "sleep 300")])
        self.submit("--fn", "hang", "x")
        pid = self.grandchild()
        w.signal(signal.SIGTERM)
        w.wait(20)
        self.assert_gone(pid, "the worker stopped")

    def test_other_running_task_keeps_its_processes(self):
        """A process that a still-running task started (and that left its
        group) is not killed when another task ends."""
        other_pid = os.path.join(self.tmp, "other.pid")
        self.start_worker(concurrency=2, fns=[
            "hang=" + escaper(other_pid, "sleep 300"),
            "quick=sh -c 'echo done'"])
        ids = self.submit("--fn", "hang", "x")
        pid = wait_until(lambda: read_pid(other_pid), 15, what="hang's grandchild")
        self.pids.append(pid)
        r = self.tq_ok("map", "--fn", "quick", "y", timeout=30)
        self.assertEqual(r.out, "done\n")
        time.sleep(0.5)
        self.assertFalse(gone(pid), "a running task's process was killed when another task ended")
        self.tq_ok("cancel", *ids)
        self.assert_gone(pid, "its task was cancelled")


if __name__ == "__main__":
    main()
