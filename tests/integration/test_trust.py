"""Secrets and trust (issue 12, point 13): a data dir or key file that
another user owns or can write is refused (exit 8, naming it); trivial
keys are refused; all three programs are non-dumpable; workers and
clients do not hold the server's secret key in memory."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import (TQTestCase, main, wait_until, EXIT_ENV, KEY_TEXT,  # noqa: E402
                       MASTER_BIN, WORKER_BIN, CLIENT_BIN, HB_FLAGS)

NOBODY = 65534
IS_ROOT = os.geteuid() == 0


def as_nobody():
    h.die_with_parent()
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# Mappings larger than this are skipped (a sanitizer's shadow memory:
# terabytes reserved, never a key); the rest is read in chunks.
MAX_MAPPING = 1 << 30
CHUNK = 16 << 20


def memory_holds(pid, needle):
    """True if needle occurs in a readable mapping of pid (needs root)."""
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > MAX_MAPPING:
                continue
            tail = b""
            for off in range(start, end, CHUNK):
                try:
                    mem.seek(off)
                    data = tail + mem.read(min(CHUNK, end - off))
                except (OSError, ValueError, OverflowError):
                    break
                if needle in data:
                    return True
                tail = data[-(len(needle) - 1):]
    return False


class Trust(TQTestCase):
    def expect_master_refused(self, what, **kw):
        m = self.start_master(wait=False, **kw)
        rc = m.wait(15)
        out = m.output()
        self.assertEqual(rc, EXIT_ENV, out)
        self.assertIn(what, out)
        return out

    def test_data_dir_writable_by_others_refused(self):
        os.mkdir(self.data_dir)
        os.chmod(self.data_dir, 0o777)
        self.expect_master_refused("--data-dir %s: writable by group or others (mode 0777)"
                                   % self.data_dir)
        os.chmod(self.data_dir, 0o770)
        self.expect_master_refused("--data-dir %s: writable by group or others (mode 0770)"
                                   % self.data_dir)
        os.chmod(self.data_dir, 0o755)
        self.start_master()

    @unittest.skipUnless(IS_ROOT, "needs root to chown")
    def test_data_dir_of_another_user_refused(self):
        # another user pre-creates the data dir with its own key in it
        os.mkdir(self.data_dir, 0o700)
        with open(os.path.join(self.data_dir, "authkey"), "w") as f:
            f.write("someone-elses-key-0123456789abcdef\n")
        os.chmod(os.path.join(self.data_dir, "authkey"), 0o600)
        os.chown(os.path.join(self.data_dir, "authkey"), NOBODY, NOBODY)
        os.chown(self.data_dir, NOBODY, NOBODY)
        self.expect_master_refused("--data-dir %s: owned by uid %d" % (self.data_dir, NOBODY),
                                   key="")
        # our data dir, but the authkey in it planted by another user
        os.chown(self.data_dir, 0, 0)
        self.expect_master_refused("authkey file %s/authkey is owned by uid %d"
                                   % (self.data_dir, NOBODY), key="")

    @unittest.skipUnless(IS_ROOT, "needs root to chown")
    def test_key_file_of_another_user_refused_everywhere(self):
        theirs = self.make_key("theirkey", KEY_TEXT)
        os.chown(theirs, NOBODY, NOBODY)
        what = "authkey file %s is owned by uid %d" % (theirs, NOBODY)
        self.expect_master_refused(what, key=theirs)
        self.start_master(name="master2")
        w = self.start_worker(key=theirs, wait=False)
        self.assertEqual(w.wait(15), EXIT_ENV, w.output())
        self.assertIn(what, w.output())
        r = self.tq("status", key=theirs, timeout=15)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn(what, r.err)

    def test_trivial_key_refused_everywhere(self):
        for text, n in (("a" * 44, 1), ("\0" * 32, 1), ("01" * 20, 2)):
            trivial = self.make_key("trivial", text)
            what = "authkey in %s is trivial (%d distinct byte value" % (trivial, n)
            self.expect_master_refused(what, key=trivial)
            r = self.tq("status", key=trivial, timeout=15)
            self.assertEqual(r.rc, EXIT_ENV, r)
            self.assertIn(what, r.err)
        self.start_master(name="master2")
        w = self.start_worker(key=trivial, wait=False)
        self.assertEqual(w.wait(15), EXIT_ENV, w.output())
        self.assertIn("is trivial", w.output())

    @unittest.skipUnless(IS_ROOT, "needs root to run the programs as another user")
    def test_programs_are_not_dumpable(self):
        """Run master, worker and a waiting client as nobody: a process
        that is not dumpable has its /proc/PID files (not the directory)
        owned by root."""
        os.chmod(self.tmp, 0o711)
        home = os.path.join(self.tmp, "nobody")
        os.mkdir(home, 0o700)
        os.chown(home, NOBODY, NOBODY)
        key = os.path.join(home, "authkey")
        with open(key, "w") as f:
            f.write(KEY_TEXT + "\n")
        os.chmod(key, 0o600)
        os.chown(key, NOBODY, NOBODY)
        procs = []

        def start(name, argv):
            log = open(os.path.join(self.tmp, name + ".log"), "wb")
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=h.clean_env(),
                                 preexec_fn=as_nobody)
            procs.append((p, log))
            return p

        def stop():
            for p, log in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
                log.close()
        self.addCleanup(stop)
        m = start("nobody-master", [MASTER_BIN, "--bind", self.endpoint, "--data-dir",
                                    os.path.join(home, "data"), "--authkey-file", key] + HB_FLAGS)
        # the root test client needs a key file of its own (root's): self.key
        self.wait_master_ready(None)
        w = start("nobody-worker", [WORKER_BIN, "--connect", self.endpoint, "--authkey-file", key])
        wait_until(lambda: self.status()["workers"], 20, what="the worker to join")
        ids = self.submit("--fn", "nothing-serves-this", "x")
        c = start("nobody-client", [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file", key,
                                    "wait", "--timeout", "60"] + ids)
        # connected: the master counts it beside the status query's client
        wait_until(lambda: self.status()["clients"] >= 2, 20, what="the client to connect")
        for p, what in ((m, "master"), (w, "worker"), (c, "client")):
            self.assertIsNone(p.poll(), "%s exited" % what)
            st = os.stat("/proc/%d/environ" % p.pid)
            self.assertEqual(st.st_uid, 0, "%s (uid %d) is dumpable: /proc/%d/environ owned by "
                             "uid %d, not root" % (what, NOBODY, p.pid, st.st_uid))

    @unittest.skipUnless(IS_ROOT and h.zmq is not None, "needs root (/proc/PID/mem) and pyzmq")
    def test_peers_hold_no_server_secret(self):
        self.start_master()
        w = self.start_worker(concurrency=1)
        ids = self.submit("--fn", "nothing-serves-this", "x")
        c = self.start("client", [CLIENT_BIN, "--connect", self.endpoint, "--authkey-file",
                                  self.key, "wait", "--timeout", "60"] + ids)
        spub, ssec, cpub, csec = h.derive_keys(KEY_TEXT.encode())
        ssec_raw = h.zmq.utils.z85.decode(ssec)
        csec_raw = h.zmq.utils.z85.decode(csec)
        # connected: the master counts it beside the status query's client
        wait_until(lambda: self.status()["clients"] >= 2, 20, what="the client to connect")
        for p, what in ((w, "worker"), (c, "client")):
            self.assertTrue(p.alive(), "%s exited:\n%s" % (what, p.output()))
            # the scan works: the client secret key is there
            self.assertTrue(memory_holds(p.pid, csec_raw), what)
            self.assertFalse(memory_holds(p.pid, ssec_raw),
                             "%s holds the server's secret key" % what)
            self.assertFalse(memory_holds(p.pid, ssec),
                             "%s holds the server's secret key (Z85)" % what)


if __name__ == "__main__":
    main()
