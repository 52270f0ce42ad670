"""C workers on libtaskq's worker API: taskq-worker --plugin, the example
plugin and program in examples/, the API's edges (errors, timeouts,
KILL, drain, per-slot state), plugin load errors, and the example built
against the installed library (meson install --destdir + pkg-config)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, BUILD, REPO, WORKER_BIN,  # noqa: E402
                       EXIT_TASK_FAILED, EXIT_ENV, EXIT_CANCELLED, EXIT_USAGE)

SQUARE_SO = os.path.join(BUILD, "examples", "plugin_square.so")
CUBE_WORKER = os.path.join(BUILD, "examples", "cube_worker")
API_SO = os.path.join(BUILD, "tests", "api_plugin.so")


def plugin(name):
    return os.path.join(BUILD, "tests", name + ".so")


class ExamplePlugin(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.w = self.start_worker("--plugin", SQUARE_SO, concurrency=3)

    def test_cube(self):
        r = self.tq_ok("map", "--fn", "cube", "3", "-2", " 10\n")
        self.assertEqual(r.out, "3 * 3 * 3 = 27\n-2 * -2 * -2 = -8\n10 * 10 * 10 = 1000\n")
        # built-ins are still served next to the plugin's functions
        r = self.tq_ok("map", "--fn", "square", "7")
        self.assertEqual(r.out, "7 * 7 = 49\n")
        fns = self.worker_status(self.w.wname)["functions"]
        for f in ("square", "echo", "sleep", "fail", "cube", "tally"):
            self.assertIn(f, fns)

    def test_cube_errors_fail_the_task_only(self):
        r = self.tq("map", "--fn", "cube", "--json", "abc", "9999999")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        outs = [json.loads(line) for line in r.out.splitlines()]
        self.assertEqual(outs[0]["status"], "failed")
        self.assertEqual(outs[0]["error"], "cube: payload is not an integer: 'abc'")
        self.assertIn("out of range", outs[1]["error"])
        self.assertTrue(self.w.alive())
        self.assertEqual(self.tq_ok("map", "--fn", "cube", "2").out, "2 * 2 * 2 = 8\n")

    def test_per_slot_state_and_slot_fini(self):
        n = 60
        r = self.tq_ok("map", "--fn", "tally", *(["ab"] * n))
        per_slot = {}
        for line in r.out.splitlines():
            # "slot S: task N, B bytes"
            head, rest = line.split(": task ")
            slot = int(head.split()[1])
            task, nbytes = rest.split(", ")
            per_slot.setdefault(slot, []).append((int(task), int(nbytes.split()[0])))
        self.assertEqual(sum(len(v) for v in per_slot.values()), n)
        for slot, seen in per_slot.items():
            self.assertIn(slot, range(3))
            # each slot counts its own tasks 1, 2, 3, ... and its own bytes
            self.assertEqual(sorted(t for t, _ in seen), list(range(1, len(seen) + 1)), seen)
            self.assertEqual(sorted(b for _, b in seen), [2 * k for k in range(1, len(seen) + 1)])
        # on stop every initialised slot's slot_fini runs on its thread
        self.w.signal(signal.SIGTERM)
        self.assertEqual(self.w.wait(15), 0)
        log = self.w.output()
        total = 0
        for slot in per_slot:
            line = [x for x in log.splitlines() if x.startswith("plugin_square: slot %d ran" % slot)]
            self.assertEqual(len(line), 1, log)
            total += int(line[0].split()[4])
        self.assertEqual(total, n, log)


class ApiEdges(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master("--max-payload", "1K")
        self.w = self.start_worker("--plugin", API_SO, "--drain-timeout", "0.5",
                                   concurrency=1)

    def test_outcomes(self):
        r = self.tq_ok("map", "--fn", "empty", "x")
        self.assertEqual(r.out, "\n")
        r = self.tq("map", "--fn", "rc7", "--json", "x")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertEqual(json.loads(r.out)["error"], "rc7: failed (returned 7)")
        r = self.tq_ok("map", "--fn", "big", "1000")
        self.assertEqual(r.out, "x" * 1000 + "\n")
        r = self.tq("map", "--fn", "big", "--json", "5000")
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertEqual(json.loads(r.out)["error"], "result exceeds max payload (1024 bytes)")
        ids = self.submit("--fn", "whoami", "x")
        r = self.tq_ok("wait", *ids)
        self.assertEqual(r.out, "task %s attempt 1 slot 0\n" % ids[0])

    def test_run_timeout(self):
        ids = self.submit("--fn", "spin", "--timeout", "0.5", "--retries", "0", "x")
        r = self.tq("wait", "--timeout", "20", "--json", *ids)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertIn("timed out after 0.5 s", json.loads(r.out)["error"])
        self.assertEqual(self.tq_ok("map", "--fn", "empty", "next").out, "\n")

    def test_kill_cancels_running_function(self):
        ids = self.submit("--fn", "spin", "x")
        wait_until(lambda: self.worker_status(self.w.wname)["busy"] == 1, 10,
                   what="worker running spin")
        self.tq_ok("cancel", *ids)
        r = self.tq("wait", "--timeout", "15", *ids)
        self.assertEqual(r.rc, EXIT_CANCELLED, r)
        wait_until(lambda: self.worker_status(self.w.wname)["busy"] == 0, 10,
                   what="slot freed after cancel")
        self.assertEqual(self.tq_ok("map", "--fn", "empty", "next", timeout=15).out, "\n")

    def test_drain_hands_back_a_running_function(self):
        ids = self.submit("--fn", "spin", "x")
        wait_until(lambda: self.worker_status(self.w.wname)["busy"] == 1, 10,
                   what="worker running spin")
        self.w.signal(signal.SIGTERM)
        self.assertEqual(self.w.wait(15), 0)
        self.assertIn("handed back", self.w.output())
        # the task is queued again, not failed: another worker gets it
        w2 = self.start_worker("--plugin", API_SO, concurrency=1)
        wait_until(lambda: self.worker_status(w2.wname)["busy"] == 1, 15,
                   what="second worker running the handed-back task")
        self.tq_ok("cancel", *ids)


class LoadErrors(TQTestCase):
    """A plugin that cannot be used stops the worker at start-up with exit
    8 and a message naming the file."""

    def worker(self, *args):
        return self.run_prog([WORKER_BIN, "--connect", "tcp://127.0.0.1:1",
                              "--authkey-file", self.key] + list(args), timeout=20)

    def test_missing_file(self):
        path = os.path.join(self.tmp, "nope.so")
        r = self.worker("--plugin", path)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("taskq-worker: --plugin: plugin %s: cannot load: " % path, r.err)

    def test_not_a_shared_object(self):
        path = os.path.join(self.tmp, "text.so")
        with open(path, "w") as f:
            f.write("not ELF\n")
        r = self.worker("--plugin", path)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("plugin %s: cannot load: " % path, r.err)

    def test_no_entry_point(self):
        r = self.worker("--plugin", plugin("no_init"))
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("plugin %s: no taskq_plugin_init symbol (not a taskq plugin?)"
                      % plugin("no_init"), r.err)

    def test_no_abi_symbol(self):
        # any shared object without taskq_plugin_abi, e.g. libtaskq itself
        libs = [p for p in glob.glob(os.path.join(BUILD, "client", "libtaskq.so*"))
                if os.path.isfile(p)]
        self.assertTrue(libs)
        r = self.worker("--plugin", libs[0])
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("no taskq_plugin_abi symbol (not a taskq plugin?)", r.err)

    def test_wrong_abi(self):
        r = self.worker("--plugin", plugin("bad_abi"))
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("plugin %s: built for worker ABI 42, this worker has ABI 1"
                      % plugin("bad_abi"), r.err)

    def test_init_fails(self):
        r = self.worker("--plugin", plugin("init_fails"))
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("plugin %s: taskq_plugin_init failed: no database at /nonexistent"
                      % plugin("init_fails"), r.err)

    def test_name_clash_with_builtin(self):
        # a plugin function may not silently replace a built-in or another
        # plugin's function: loading the same plugin twice clashes
        r = self.worker("--plugin", API_SO, "--plugin", API_SO)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("function 'spin' is already registered", r.err)

    def test_usage_errors_still_come_first(self):
        r = self.worker("--plugin", plugin("bad_abi"), "--fn", "x")
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("--fn: 'x' is not NAME=COMMAND", r.err)


class ExampleProgram(TQTestCase):
    def test_cube_worker_serves_and_drains(self):
        self.start_master()
        w = self.start("cube_worker", [CUBE_WORKER, self.endpoint, self.key, "2"])
        wait_until(lambda: any(x["name"] == "cube-worker" and x.get("state") == "active"
                               for x in self.status()["workers"]), 30,
                   what="cube_worker to join")
        r = self.tq_ok("map", "--fn", "cube", "4", "-3")
        self.assertEqual(r.out, "4^3 = 64\n-3^3 = -27\n")
        r = self.tq("map", "--fn", "cube", "--json", "x")
        self.assertEqual(json.loads(r.out)["error"], "cube: payload is not a small integer: 'x'")
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(15), 0)

    def test_cube_worker_bad_key_file(self):
        r = self.run_prog([CUBE_WORKER, self.endpoint, os.path.join(self.tmp, "nokey")],
                          timeout=20)
        self.assertEqual(r.rc, EXIT_ENV, r)


class InstalledLibrary(TQTestCase):
    """The example plugin and program build against the installed header,
    library and taskq.pc alone, and the plugin runs in taskq-worker."""

    def test_build_example_against_install(self):
        meson = shutil.which("meson")
        cc = shutil.which("cc")
        pkgconf = shutil.which("pkg-config")
        if not (meson and cc and pkgconf):
            self.skipTest("needs meson, cc and pkg-config")
        dest = os.path.join(self.tmp, "dest")
        r = self.run_prog([meson, "install", "-C", BUILD, "--no-rebuild", "--quiet",
                           "--destdir", dest], timeout=120)
        self.assertEqual(r.rc, 0, r)
        pcs = glob.glob(os.path.join(dest, "**", "taskq.pc"), recursive=True)
        self.assertEqual(len(pcs), 1, pcs)
        env = {"PKG_CONFIG_PATH": os.path.dirname(pcs[0]), "PKG_CONFIG_SYSROOT_DIR": dest}
        r = self.run_prog([pkgconf, "--cflags", "--libs", "taskq"], env=env)
        self.assertEqual(r.rc, 0, r)
        flags = r.out.split()
        self.assertTrue(any(f.startswith("-I" + dest) for f in flags), flags)
        so = os.path.join(self.tmp, "plugin_square.so")
        r = self.run_prog([cc, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                           "-shared", "-fPIC", "-o", so,
                           os.path.join(REPO, "examples", "plugin_square.c")] + flags, env=env)
        self.assertEqual(r.rc, 0, r)
        prog = os.path.join(self.tmp, "cube_worker")
        r = self.run_prog([cc, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                           "-D_POSIX_C_SOURCE=200809L", "-o", prog,
                           os.path.join(REPO, "examples", "cube_worker.c")] + flags, env=env)
        self.assertEqual(r.rc, 0, r)
        libdir = [f[2:] for f in flags if f.startswith("-L")]
        libs = [p for d in libdir for p in glob.glob(os.path.join(d, "libtaskq.so*"))
                if os.path.isfile(p)]
        self.assertTrue(libs, libdir)
        with open(libs[0], "rb") as f:
            sanitized = b"libasan.so" in f.read()
        if not sanitized:  # a sanitizer build's library needs its runtime first
            r = self.run_prog([prog], env={"LD_LIBRARY_PATH": ":".join(libdir)})
            self.assertEqual(r.rc, EXIT_USAGE, r)
        # the separately built plugin runs in the worker
        self.start_master()
        self.start_worker("--plugin", so, concurrency=1)
        r = self.tq_ok("map", "--fn", "cube", "5")
        self.assertEqual(r.out, "5 * 5 * 5 = 125\n")


if __name__ == "__main__":
    main()
