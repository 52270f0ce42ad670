"""Authentication: wrong key, key file modes, the key never printed,
the generated default key, unreachable master."""

import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, wait_until, free_port, KEY_TEXT,  # noqa: E402
                       CLIENT_BIN, EXIT_CONNECT, EXIT_ENV)

WRONG_TEXT = "wrong-key-0123456789abcdef-not-the-real-one"


class Security(TQTestCase):
    def assert_no_key_text(self, *texts):
        for t in texts:
            self.assertNotIn(KEY_TEXT, t)
            self.assertNotIn(WRONG_TEXT, t)
        for p in self.procs:
            out = p.output()
            self.assertNotIn(KEY_TEXT, out, p.name)
            self.assertNotIn(WRONG_TEXT, out, p.name)

    def test_wrong_key_client_and_worker(self):
        m = self.start_master()
        wrong = self.make_key("wrongkey", WRONG_TEXT)
        r = self.tq("status", key=wrong, timeout=5)
        self.assertEqual(r.rc, EXIT_CONNECT, r)
        self.assertIn("authentication failed", r.err)
        w = self.start_worker(key=wrong, wait=False)
        try:
            rc = w.wait(5)
        except Exception:
            self.fail("worker with a wrong key still running after 5 s:\n" + w.output())
        self.assertEqual(rc, EXIT_CONNECT, w.output())
        self.assertIn("authentication failed", w.output())
        # the master logs the refused peer's address
        own = "127.0.0.1:%d" % self.port  # the master's own listening line

        def refused_logged():
            return [ln for ln in m.output().splitlines()
                    if "127.0.0.1" in ln and own not in ln]
        wait_until(refused_logged, 5, what="master log naming the refused peer's address")
        # and keeps serving the right key
        self.assertEqual(self.status()["workers"], [])
        self.assert_no_key_text(r.out, r.err)

    def test_port_probe_is_not_an_authentication_failure(self):
        """A bare TCP connect and close (a health check, a port scan) is
        not logged as a wrong authkey; a wrong key still is."""
        import socket
        m = self.start_master()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                pass
        self.status()  # the master has handled the probes' events by now
        time.sleep(0.5)
        self.assertNotIn("authentication failed", m.output())
        wrong = self.make_key("wrongkey", WRONG_TEXT)
        r = self.tq("status", key=wrong, timeout=5)
        self.assertEqual(r.rc, EXIT_CONNECT, r)
        wait_until(lambda: "authentication failed for peer" in m.output(), 5,
                   what="the wrong key logged")

    def test_key_mode_0644_refused_everywhere(self):
        loose = self.make_key("loosekey", KEY_TEXT, mode=0o644)
        m = self.start_master(key=loose, wait=False)
        rc = m.wait(10)
        out = m.output()
        self.assertEqual(rc, EXIT_ENV, out)
        self.assertIn(loose, out)
        self.assertIn("chmod 600", out)
        # worker and client, against a proper master
        self.start_master(name="master2")
        w = self.start_worker(key=loose, wait=False)
        rc = w.wait(10)
        out = w.output()
        self.assertEqual(rc, EXIT_ENV, out)
        self.assertIn(loose, out)
        self.assertIn("chmod 600", out)
        r = self.tq("status", key=loose, timeout=10)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn(loose, r.err)
        self.assertIn("chmod 600", r.err)
        self.assert_no_key_text(r.out, r.err)

    def test_key_from_environment(self):
        self.start_master()
        r = self.run_prog([CLIENT_BIN, "--connect", self.endpoint, "status", "--json"],
                          env={"TASKQ_AUTHKEY_FILE": self.key}, timeout=10)
        self.assertEqual(r.rc, 0, r)
        r = self.run_prog([CLIENT_BIN, "status", "--json"],
                          env={"TASKQ_AUTHKEY_FILE": self.key, "TASKQ_CONNECT": self.endpoint},
                          timeout=10)
        self.assertEqual(r.rc, 0, r)

    def test_missing_and_short_key_file(self):
        missing = os.path.join(self.tmp, "nokey")
        r = self.tq("status", key=missing, timeout=10)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn(missing, r.err)
        short = self.make_key("shortkey", "abc")
        m = self.start_master(key=short, wait=False)
        self.assertEqual(m.wait(10), EXIT_ENV, m.output())
        self.assertIn(short, m.output())

    def test_key_never_printed(self):
        self.start_master()
        self.start_worker(concurrency=1)
        self.tq_ok("map", "--fn", "square", "2")
        r = self.tq_ok("status")
        wrong = self.make_key("wrongkey", WRONG_TEXT)
        r2 = self.tq("status", key=wrong, timeout=5)
        self.assertEqual(r2.rc, EXIT_CONNECT, r2)
        for p in self.procs:
            with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                self.assertNotIn(KEY_TEXT.encode(), f.read())
        self.assert_no_key_text(r.out, r.err, r2.out, r2.err)

    def test_generated_default_key(self):
        data = os.path.join(self.tmp, "gen-data")
        m = self.start_master(key="", data_dir=data, wait=False)
        keyfile = os.path.join(data, "authkey")
        wait_until(lambda: os.path.exists(keyfile), 10, what="DATA_DIR/authkey created")
        mode = stat.S_IMODE(os.stat(keyfile).st_mode)
        self.assertEqual(mode, 0o600, oct(mode))
        wait_until(lambda: keyfile in m.output() or "authkey" in m.output(), 5,
                   what="master saying where the key is")
        self.assertIn(keyfile, m.output())
        with open(keyfile) as f:
            gen = f.read().strip()
        self.assertGreaterEqual(len(gen), 32)
        self.assertNotIn(gen, m.output())
        # the generated key works for clients and workers
        self.key = keyfile
        self.wait_master_ready(m)
        self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "square", "3")
        self.assertEqual(r.out, "3 * 3 = 9\n")
        # a restart keeps the same key (never overwritten)
        m.stop()
        self.start_master(key="", data_dir=data, name="master-again")
        with open(keyfile) as f:
            self.assertEqual(f.read().strip(), gen)

    def test_unreachable_master(self):
        port = free_port()
        ep = "tcp://127.0.0.1:%d" % port
        t0 = time.monotonic()
        r = self.tq("status", endpoint=ep, connect_timeout=1, timeout=10)
        self.assertEqual(r.rc, EXIT_CONNECT, r)
        self.assertIn("cannot connect to %s" % ep, r.err)
        self.assertLess(time.monotonic() - t0, 10)
        r = self.tq("map", "--fn", "square", "1", endpoint=ep, connect_timeout=1, timeout=10)
        self.assertEqual(r.rc, EXIT_CONNECT, r)
        self.assertIn("cannot connect to %s" % ep, r.err)


if __name__ == "__main__":
    main()
