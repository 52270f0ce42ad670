"""Execution modes per function (taskq-worker --fn-mode NAME=MODE):
thread (a crash takes the worker down, the master re-runs its tasks
elsewhere), prefork (a crash fails that task only, the child is
restarted), spawn (a process per task), coprocess (a long-lived program
speaking the length-prefixed framing of docs/workers.md), and the child
resource limits (--task-memory, --task-cpu-seconds)."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, BUILD, REPO, WORKER_BIN,  # noqa: E402
                       EXIT_TASK_FAILED, EXIT_USAGE)

CRASH_SO = os.path.join(BUILD, "tests", "crash_plugin.so")
COPROC_SQUARE = os.path.join(REPO, "examples", "coprocess_square.py")
PY = "/usr/bin/python3"

# A test coprocess: "die" exits 3 in the middle of its task, "hog"
# allocates 512 MiB, "garbage" answers with a bad status byte, anything
# else is answered "PID:PAYLOAD".
TEST_COPROC = r'''
import os, struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def reply(status, data):
    out.write(struct.pack(">BI", status, len(data)) + data)
    out.flush()
while True:
    head = inp.read(4)
    if len(head) < 4:
        sys.exit(0)
    payload = inp.read(struct.unpack(">I", head)[0])
    if payload == b"die":
        sys.exit(3)
    if payload == b"garbage":
        out.write(b"\x07\x00\x00\x00\x00")
        out.flush()
        continue
    if payload == b"hog":
        try:
            b = bytearray(512 << 20)
            reply(0, b"hog: allocated %d" % len(b))
        except MemoryError:
            reply(1, b"hog: MemoryError")
        continue
    reply(0, b"%d:%s" % (os.getpid(), payload))
'''


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def fork_server(worker_pid):
    """The pid of the worker's fork server (a child named taskq-forks)."""
    for tid in os.listdir("/proc/%d/task" % worker_pid):
        with open("/proc/%d/task/%s/children" % (worker_pid, tid)) as f:
            for pid in f.read().split():
                try:
                    if proc_status(int(pid))["Name"] == "taskq-forks":
                        return int(pid)
                except OSError:
                    pass
    return None


def results(r):
    return [json.loads(line) for line in r.out.splitlines()]


class Prefork(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.w = self.start_worker("--plugin", CRASH_SO, "--fn-mode", "crashy=prefork",
                                   "--fn-mode", "square=prefork", concurrency=1)

    def run1(self, payload, *extra):
        r = self.tq("map", "--fn", "crashy", "--json", *extra, payload)
        return results(r)[0]

    def ok_pid(self, payload):
        o = self.run1(payload)
        self.assertEqual(o["status"], "done", o)
        # "PAYLOAD pid P init I slot S": runs in a child, where slot_init ran
        words = o["result"].split()
        self.assertEqual(words[0], payload)
        pid, init = int(words[2]), int(words[4])
        self.assertNotEqual(pid, self.w.pid)
        self.assertEqual(pid, init, o)
        return pid

    def test_crash_fails_that_task_only(self):
        p1 = self.ok_pid("a")
        self.assertEqual(self.ok_pid("b"), p1)  # the same long-lived child
        o = self.run1("crash")
        self.assertEqual(o["status"], "failed", o)
        self.assertEqual(o["error"], "worker child died: signal 11 (Segmentation fault)")
        p2 = self.ok_pid("c")
        self.assertNotEqual(p2, p1)  # restarted
        o = self.run1("abort")
        self.assertEqual((o["status"], o["error"]),
                         ("failed", "worker child died: signal 6 (Aborted)"), o)
        o = self.run1("exit")
        self.assertEqual((o["status"], o["error"]), ("failed", "worker child died: exit status 7"))
        self.ok_pid("d")
        # the worker itself never went away
        self.assertTrue(self.w.alive())
        st = self.worker_status(self.w.wname)
        self.assertIsNotNone(st)
        self.assertEqual(st["name"], self.w.wname)
        r = self.tq_ok("map", "--fn", "square", "12")
        self.assertEqual(r.out, "12 * 12 = 144\n")

    def test_timeout_and_kill_restart_the_child(self):
        p1 = self.ok_pid("a")
        t0 = time.monotonic()
        o = self.run1("spin", "--timeout", "1")
        self.assertEqual((o["status"], o["error"]), ("failed", "timed out after 1 s"), o)
        self.assertLess(time.monotonic() - t0, 10)
        p2 = self.ok_pid("b")
        self.assertNotEqual(p1, p2)
        with self.assertRaises(OSError):
            os.kill(p1, 0)  # gone (and reaped)
        # KILL (cancel) of a running task kills the child too
        tid = self.submit("--fn", "crashy", "spin")[0]
        time.sleep(1)  # dispatched and running in the child p2
        self.tq_ok("cancel", tid)
        wait_until(lambda: self._gone(p2), 10, what="the child to be killed")
        self.assertNotEqual(self.ok_pid("c"), p2)
        self.assertTrue(self.w.alive())

    def _gone(self, pid):
        try:
            os.kill(pid, 0)
            return False
        except OSError:
            return True

    def test_children_end_with_the_worker(self):
        pid = self.ok_pid("a")
        server = fork_server(self.w.pid)
        self.w.stop()
        wait_until(lambda: self._gone(pid), 10, what="the prefork child to exit")
        wait_until(lambda: self._gone(server), 10, what="the fork server to exit")

    def test_children_are_the_workers_and_come_from_the_fork_server(self):
        # The fork server is the worker's child; the prefork child it
        # started was handed to the worker (workerlib/forkserver.h).
        server = fork_server(self.w.pid)
        self.assertIsNotNone(server)
        pid = self.ok_pid("a")
        self.assertEqual(proc_status(pid)["PPid"], str(self.w.pid))
        self.assertNotEqual(pid, server)
        # a crash and a kill still reach the worker as its child's death
        o = self.run1("crash")
        self.assertEqual(o["error"], "worker child died: signal 11 (Segmentation fault)")
        self.assertNotEqual(self.ok_pid("b"), pid)

    def test_kill_9_of_the_worker_takes_the_children_along(self):
        pid = self.ok_pid("a")
        server = fork_server(self.w.pid)
        self.w.signal(9)
        self.w.wait(10)
        wait_until(lambda: self._gone(pid), 10, what="the prefork child to die")
        wait_until(lambda: self._gone(server), 10, what="the fork server to die")

    def test_a_dead_fork_server_fails_new_children_clearly(self):
        server = fork_server(self.w.pid)
        os.kill(server, 9)
        o = self.run1("a", "--retries", "0")
        self.assertEqual(o["status"], "failed", o)
        self.assertEqual(o["error"], "crashy: cannot start a worker child: the fork server "
                         "(pid %d) has exited" % server, o)
        self.assertIn("the fork server (pid %d) has exited" % server, self.w.output())
        self.assertTrue(self.w.alive())
        # thread-mode functions are not affected
        self.assertEqual(self.tq_ok("map", "--fn", "echo", "hi").out, "hi\n")


class Spawn(TQTestCase):
    def test_a_process_per_task(self):
        self.start_master()
        w = self.start_worker("--plugin", CRASH_SO, "--fn-mode", "crashy=spawn",
                              "--fn-mode", "square=spawn", concurrency=2)
        r = self.tq_ok("map", "--fn", "crashy", "--json", "a", "b", "c", "d")
        pids = [int(o["result"].split()[2]) for o in results(r)]
        self.assertEqual(len(set(pids)), 4, pids)
        self.assertNotIn(w.pid, pids)
        r = self.tq("map", "--fn", "crashy", "--json", "crash", "e")
        o = results(r)
        self.assertEqual(o[0]["error"], "worker child died: signal 11 (Segmentation fault)")
        self.assertEqual(o[1]["status"], "done")
        r = self.tq_ok("map", "--fn", "square", "-3", "4")
        self.assertEqual(r.out, "-3 * -3 = 9\n4 * 4 = 16\n")
        self.assertTrue(w.alive())


class ThreadCrash(TQTestCase):
    def test_thread_crash_takes_the_worker_down(self):
        """In thread mode the crash kills the worker; the master gives the
        task to another worker (which dies too) and after --max-attempts 2
        it is dead. The other worker's tasks are re-run elsewhere."""
        self.start_master("--max-attempts", "2", "--retry-backoff", "0.2")
        w1 = self.start_worker("--plugin", CRASH_SO, concurrency=1)
        w2 = self.start_worker("--plugin", CRASH_SO, concurrency=1)
        tid = self.submit("--fn", "crashy", "--retries", "5", "crash")[0]
        wait_until(lambda: not w1.alive() and not w2.alive(), 30, what="both workers to crash")
        self.assertEqual(w1.p.returncode, -11, w1.output()[-2000:])
        self.assertEqual(w2.p.returncode, -11)
        w3 = self.start_worker("--plugin", CRASH_SO, concurrency=1)
        r = self.tq("wait", "--json", "--timeout", "20", tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual((o["status"], o["attempts"]), ("dead", 2), o)
        self.assertIn("worker lost", o["error"])
        # the other tasks still run
        self.assertEqual(self.tq_ok("map", "--fn", "crashy", "x").out.split()[0], "x")
        self.assertTrue(w3.alive())


class Coprocess(TQTestCase):
    def test_python_coprocess_serves_10000_tasks(self):
        self.start_master()
        self.start_worker("--fn", "sq=%s %s" % (PY, COPROC_SQUARE), "--fn-mode", "sq=coprocess",
                          concurrency=2)
        n = 10000
        inp = "".join("%d\n" % i for i in range(1, n + 1))
        r = self.tq_ok("map", "--fn", "sq", "-", input=inp, timeout=120)
        lines = r.out.splitlines()
        self.assertEqual(len(lines), n)
        for i, line in enumerate(lines, 1):
            if line != "%d * %d = %d" % (i, i, i * i):
                self.fail("line %d: %r" % (i, line))
        r = self.tq("map", "--fn", "sq", "--json", "abc", "5")
        o = results(r)
        self.assertEqual(o[0]["status"], "failed")
        self.assertEqual(o[0]["error"], "square: payload is not an integer: 'abc'")
        self.assertEqual(o[1]["result"], "5 * 5 = 25")

    def _start(self, *extra, concurrency=1):
        script = os.path.join(self.tmp, "coproc.py")
        with open(script, "w") as f:
            f.write(TEST_COPROC)
        return self.start_worker("--fn", "co=%s %s" % (PY, script), "--fn-mode", "co=coprocess",
                                 *extra, concurrency=concurrency)

    def test_dying_coprocess_fails_its_task_and_restarts(self):
        self.start_master()
        w = self._start()
        o = results(self.tq_ok("map", "--fn", "co", "--json", "a", "b"))
        p1 = {x["result"].split(":")[0] for x in o}
        self.assertEqual(len(p1), 1)  # one long-lived process served both
        p1 = int(p1.pop())
        self.assertNotEqual(p1, w.pid)
        o = results(self.tq("map", "--fn", "co", "--json", "die"))[0]
        self.assertEqual((o["status"], o["error"]), ("failed", "coprocess died: exit status 3"))
        o = results(self.tq_ok("map", "--fn", "co", "--json", "c"))[0]
        p2, payload = o["result"].split(":")
        self.assertEqual(payload, "c")
        self.assertNotEqual(int(p2), p1)
        o = results(self.tq("map", "--fn", "co", "--json", "garbage"))[0]
        self.assertEqual(o["status"], "failed")
        self.assertIn("coprocess broke the framing: reply status byte 7", o["error"])
        self.assertEqual(results(self.tq_ok("map", "--fn", "co", "--json", "d"))[0]["result"]
                         .split(":")[1], "d")
        self.assertTrue(w.alive())

    def test_retries_apply_to_a_dying_coprocess(self):
        self.start_master("--retry-backoff", "0.1")
        self._start()
        r = self.tq("map", "--fn", "co", "--json", "--retries", "2", "die")
        o = results(r)[0]
        self.assertEqual((o["status"], o["attempts"]), ("failed", 3), o)

    def test_timeout_kills_the_coprocess(self):
        self.start_master()
        script = os.path.join(self.tmp, "slow.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(script, 0o755)
        self.start_worker("--fn", "slow=%s" % script, "--fn-mode", "slow=coprocess",
                          concurrency=1)
        t0 = time.monotonic()
        o = results(self.tq("map", "--fn", "slow", "--json", "--timeout", "1", "x"))[0]
        self.assertEqual((o["status"], o["error"]), ("failed", "timed out after 1 s"))
        self.assertLess(time.monotonic() - t0, 10)


class Limits(TQTestCase):
    def test_memory_limit(self):
        self.start_master()
        script = os.path.join(self.tmp, "coproc.py")
        with open(script, "w") as f:
            f.write(TEST_COPROC)
        self.start_worker("--fn", "co=%s %s" % (PY, script), "--fn-mode", "co=coprocess",
                          "--fn", "big=%s -c 'bytearray(512 << 20)'" % PY,
                          "--task-memory", "64M", concurrency=1)
        o = results(self.tq("map", "--fn", "co", "--json", "hog", "ok"))
        self.assertEqual((o[0]["status"], o[0]["error"]), ("failed", "hog: MemoryError"))
        self.assertEqual(o[1]["status"], "done")
        o = results(self.tq("map", "--fn", "big", "--json", "x"))[0]
        self.assertEqual(o["status"], "failed")
        self.assertTrue(o["error"].startswith("exit status 1: "), o)
        self.assertIn("MemoryError", o["error"])

    def test_memory_limit_in_prefork(self):
        # A fork starts with the worker's address space (about 230 MiB of
        # mostly reserved memory in a release build): 512M leaves it no
        # room for 512 MiB more. (An ASan build reserves terabytes of
        # shadow, so a limit cannot apply to its forks.)
        with open(WORKER_BIN, "rb") as f:
            if b"__asan_init" in f.read():
                self.skipTest("ASan build: forks start with terabytes of shadow memory")
        self.start_master()
        self.start_worker("--plugin", CRASH_SO, "--fn-mode", "crashy=prefork",
                          "--task-memory", "512M", concurrency=1)
        o = results(self.tq("map", "--fn", "crashy", "--json", "hog", "a"))
        self.assertEqual((o[0]["status"], o[0]["error"]), ("failed", "hog: out of memory"))
        self.assertEqual(o[1]["status"], "done")

    def test_without_limit_the_allocation_works(self):
        self.start_master()
        self.start_worker("--fn", "big=%s -c 'bytearray(512 << 20)'" % PY, concurrency=1)
        self.assertEqual(self.tq_ok("map", "--fn", "big", "x").out, "\n")

    def test_cpu_limit(self):
        self.start_master()
        self.start_worker("--fn", "burn=sh -c 'while :; do :; done'", "--task-cpu-seconds", "1",
                          concurrency=1)
        t0 = time.monotonic()
        o = results(self.tq("map", "--fn", "burn", "--json", "x"))[0]
        self.assertEqual(o["status"], "failed")
        self.assertTrue(o["error"].startswith("killed by signal 24 (SIGXCPU)"), o)
        self.assertLess(time.monotonic() - t0, 15)


class Flags(TQTestCase):
    def test_bad_modes(self):
        base = [WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key]
        cases = [
            (["--fn-mode", "square=coprocess"], "coprocess is for --fn NAME=COMMAND"),
            (["--fn", "c=cat", "--fn-mode", "c=thread"], "its mode is spawn or coprocess"),
            (["--fn", "c=cat", "--fn-mode", "c=prefork"], "its mode is spawn or coprocess"),
            (["--fn-mode", "nosuch=prefork"], "function 'nosuch' is not registered"),
            (["--fn-mode", "square=fast"], "'fast' is not thread, prefork, spawn or coprocess"),
            (["--fn-mode", "square"], "is not NAME=MODE"),
            (["--task-memory", "1K"], "less than"),
            (["--task-cpu-seconds", "-1"], "--task-cpu-seconds"),
        ]
        for extra, msg in cases:
            r = self.run_prog(base + extra, timeout=10)
            self.assertEqual(r.rc, EXIT_USAGE, r)
            self.assertIn(msg, r.err, r)


if __name__ == "__main__":
    main()
