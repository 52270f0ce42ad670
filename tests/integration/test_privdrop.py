#!/usr/bin/env python3
"""Least privilege (docs/security.md): --user on master and worker drops
root for good after the key is read and the sockets are bound; the
worker's task processes run in --task-dir, as --task-user, with only the
--task-env variables. Needs root (CI runs as root): skipped otherwise."""
import os
import pwd
import subprocess
import unittest

from tqharness import TQTestCase, BUILD, MASTER_BIN, WORKER_BIN, free_port, wait_until

NOBODY = "nobody"
CRASH_SO = os.path.join(BUILD, "tests", "crash_plugin.so")


def ids(pid):
    """{thread id: (uids, gids, groups, no_new_privs)} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        f = {}
        with open("/proc/%d/task/%s/status" % (pid, tid)) as fh:
            for line in fh:
                k, _, v = line.partition(":")
                f[k] = v.split()
        out[tid] = (f["Uid"], f["Gid"], f["Groups"], f.get("NoNewPrivs", ["?"])[0])
    return out


@unittest.skipUnless(os.geteuid() == 0, "needs root (dropping privileges)")
class UserFlag(TQTestCase):
    def setUp(self):
        super().setUp()
        self.nobody = pwd.getpwnam(NOBODY)
        os.chmod(self.tmp, 0o755)  # nobody reaches its data dir and task dir

    def assert_dropped(self, pid):
        uid, gid = str(self.nobody.pw_uid), str(self.nobody.pw_gid)
        threads = ids(pid)
        self.assertGreater(len(threads), 1)  # ZeroMQ's threads, the actors
        for tid, (uids, gids, groups, nnp) in threads.items():
            self.assertEqual(uids, [uid] * 4, "thread %s" % tid)
            self.assertEqual(gids, [gid] * 4, "thread %s" % tid)
            self.assertNotIn("0", groups, "thread %s" % tid)
            self.assertEqual(nnp, "1", "thread %s" % tid)

    def test_master_drops_after_binding_a_low_port(self):
        # a port below 1024 needs root to bind: bound before the drop
        port = None
        for p in range(900, 1000):
            s = __import__("socket").socket()
            try:
                s.bind(("127.0.0.1", p))
                port = p
                break
            except OSError:
                continue
            finally:
                s.close()
        self.assertIsNotNone(port)
        self.port = port
        self.endpoint = "tcp://127.0.0.1:%d" % port
        m = self.start_master("--user", NOBODY, "--metrics-listen", "127.0.0.1:%d" % free_port())
        self.assertIn("running as user nobody", m.output())
        self.assert_dropped(m.pid)
        # the data dir and what the journal writes belong to the user
        st = os.stat(self.data_dir)
        self.assertEqual(st.st_uid, self.nobody.pw_uid)
        jdir = os.path.join(self.data_dir, "journal")
        for f in os.listdir(jdir):
            self.assertEqual(os.stat(os.path.join(jdir, f)).st_uid, self.nobody.pw_uid, f)
        # and it works: a task round trip, then a restart replays it
        self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "square", "7")
        self.assertEqual(r.out.strip(), "7 * 7 = 49")
        tid = self.tq_ok("submit", "--queue", "later", "3").out.strip()
        self.master.stop()
        self.start_master("--user", NOBODY)
        r = self.tq_ok("wait", tid)
        self.assertEqual(r.out.strip(), "3 * 3 = 9")

    def test_worker_drops_and_its_tasks_run_as_the_user(self):
        self.start_master()
        w = self.start_worker("--user", NOBODY,
                              fns=["who=sh -c 'id -u; id -G'"], concurrency=2)
        self.assertIn("running as user nobody", w.output())
        self.assert_dropped(w.pid)
        r = self.tq_ok("map", "--fn", "who", "x")
        self.assertEqual(r.out.split(), [str(self.nobody.pw_uid), str(self.nobody.pw_gid)])

    def test_prefork_and_spawn_children_run_as_the_user(self):
        # They come from the fork server, which drops root as the worker
        # does (workerlib/forkserver.h).
        self.start_master()
        w = self.start_worker("--user", NOBODY, "--plugin", CRASH_SO,
                              "--fn-mode", "crashy=prefork", "--fn-mode", "square=spawn",
                              concurrency=1)
        r = self.tq_ok("map", "--fn", "crashy", "a")
        pid = int(r.out.split()[2])
        uids, gids, groups, nnp = ids(pid)[str(pid)]
        self.assertEqual(uids, [str(self.nobody.pw_uid)] * 4)
        self.assertEqual(gids, [str(self.nobody.pw_gid)] * 4)
        self.assertEqual(nnp, "1")
        self.assertEqual(self.tq_ok("map", "--fn", "square", "5").out, "5 * 5 = 25\n")
        self.assert_dropped(w.pid)

    def test_refusals(self):
        d = os.path.join(self.tmp, "d")
        cases = [
            ([MASTER_BIN, "--data-dir", d, "--user", "no-such-user-tq"],
             "--user no-such-user-tq: no such user"),
            ([MASTER_BIN, "--data-dir", d, "--user", "root"], "--user root: is root"),
            ([WORKER_BIN, "--authkey-file", self.key, "--user", "no-such-user-tq"],
             "--user no-such-user-tq: no such user"),
            ([WORKER_BIN, "--authkey-file", self.key, "--user", NOBODY, "--task-user", NOBODY],
             "give --user or --task-user, not both"),
            ([WORKER_BIN, "--authkey-file", self.key, "--task-user", "no-such-user-tq"],
             "task user no-such-user-tq: no such user"),
            ([WORKER_BIN, "--authkey-file", self.key, "--task-dir", "/no/such/dir"],
             "task directory /no/such/dir: No such file or directory"),
            ([WORKER_BIN, "--authkey-file", self.key, "--task-env", "PATH,A B"],
             "'A B' is not a variable name"),
        ]
        for argv, want in cases:
            r = self.run_prog(argv, timeout=30)
            self.assertEqual(r.rc, 2, (argv, r))
            self.assertIn(want, r.err, argv)
        # not root: only root can change user
        for prog in (MASTER_BIN, WORKER_BIN):
            argv = [prog, "--user", NOBODY, "--authkey-file", self.key, "--data-dir", d]
            if prog == WORKER_BIN:
                argv = argv[:-2]
            r = self.run_prog(["setpriv", "--reuid=%d" % self.nobody.pw_uid,
                               "--regid=%d" % self.nobody.pw_gid, "--clear-groups"] + argv,
                              timeout=30)
            self.assertEqual(r.rc, 2, r)
            self.assertIn("only root can change user", r.err)
        # a data dir that belongs to someone else than --user
        os.mkdir(d, 0o700)
        r = self.run_prog([MASTER_BIN, "--data-dir", d, "--user", NOBODY,
                           "--bind", "tcp://127.0.0.1:%d" % free_port()], timeout=30)
        self.assertEqual(r.rc, 8, r)
        self.assertIn("--user nobody (uid %d) runs the master and must own it" %
                      self.nobody.pw_uid, r.err)

    def test_task_process_dir_user_and_environment(self):
        self.start_master()
        tdir = os.path.join(self.tmp, "tasks")
        os.mkdir(tdir, 0o755)
        script = "id -u; pwd; env | sort"
        self.start_worker("--task-user", NOBODY, "--task-dir", tdir,
                          "--task-env", "PATH,LC_*,TQ_KEEP_*",
                          fns=["env=sh -c '%s'" % script, "readkey=cat %s" % self.key],
                          concurrency=1, wait=False, name="w")
        w = self.procs[-1]
        wait_until(lambda: any(x.get("state") == "active" for x in self.status()["workers"]),
                   30, what="worker to join")
        r = self.tq_ok("map", "--fn", "env", "x")
        lines = r.out.splitlines()
        self.assertEqual(lines[0], str(self.nobody.pw_uid))
        self.assertEqual(lines[1], tdir)
        env = dict(l.split("=", 1) for l in lines[2:] if "=" in l)
        self.assertEqual(env.get("USER"), NOBODY)
        self.assertEqual(env.get("HOME"), self.nobody.pw_dir)
        self.assertIn("PATH", env)
        self.assertIn("LC_ALL", env)  # the harness sets it: kept by LC_*
        # nothing else of the worker's environment (its key path, HOME...)
        allowed = {"PATH", "LC_ALL", "USER", "LOGNAME", "HOME", "PWD", "SHLVL", "_"}
        self.assertFalse(set(env) - allowed - {k for k in env if k.startswith("LC_")},
                         env)
        # the task user cannot read the worker's key file
        r = self.tq("map", "--fn", "readkey", "x")
        self.assertNotEqual(r.rc, 0, r)
        self.assertIn("Permission denied", r.err)
        # the worker itself is still root (it changes user per task)
        self.assertEqual(ids(w.pid)[str(w.pid)][0][0], "0")

    def test_prefork_child_runs_as_the_task_user(self):
        self.start_master()
        tdir = os.path.join(self.tmp, "tasks")
        os.mkdir(tdir, 0o755)
        w = self.start_worker("--task-user", NOBODY, "--task-dir", tdir, "--plugin", CRASH_SO,
                              "--fn-mode", "crashy=prefork", concurrency=1)
        r = self.tq_ok("map", "--fn", "crashy", "a")
        pid = int(r.out.split()[2])
        self.assertEqual(ids(pid)[str(pid)][0], [str(self.nobody.pw_uid)] * 4)
        self.assertEqual(os.readlink("/proc/%d/cwd" % pid), tdir)
        self.assertEqual(ids(w.pid)[str(w.pid)][0][0], "0")


if __name__ == "__main__":
    unittest.main()
