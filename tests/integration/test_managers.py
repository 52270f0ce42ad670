"""taskq.managers.BaseManager: the tutorial's distributed-process scripts
(tests/integration/tutorial/, the tutorial's text changed only in the
import line) run against a taskq master that manager.start() runs, and
print ten correct squares; a worker with another authkey fails clearly;
queue proxies raise queue.Empty on a timeout and refuse what JSON cannot
carry."""

import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.join(h.REPO, "python")
TUTORIAL = os.path.join(HERE, "tutorial")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
    try:
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Managers(h.TQTestCase):
    def env(self):
        return {"PYTHONPATH": PYDIR, "TASKQ_MASTER": h.MASTER_BIN}

    def script(self, name, workdir, authkey=None):
        with open(os.path.join(TUTORIAL, name)) as f:
            src = f.read()
        if authkey:
            src = src.replace("authkey=b'abc'", "authkey=%r" % authkey)
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
            f.write(src)
        return path

    def popen(self, path):
        p = subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=h.clean_env(self.env()),
                             start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    @unittest.skipUnless(port_free(5000), "the tutorial's port 5000 is taken")
    def test_tutorial_scripts_print_ten_squares(self):
        master = self.popen(self.script("task_master.py", self.tmp))
        time.sleep(1.0)  # the tutorial starts the worker after the master
        worker = self.popen(self.script("task_worker.py", self.tmp))
        wout, werr = worker.communicate(timeout=120)
        mout, merr = master.communicate(timeout=60)
        mout, wout = mout.decode(), wout.decode()
        self.outputs.append(("master", mout + merr.decode()))
        self.outputs.append(("worker", wout + werr.decode()))
        self.assertEqual(master.returncode, 0, merr.decode())
        self.assertEqual(worker.returncode, 0, werr.decode())
        put = [int(x) for x in re.findall(r"^Put task (\d+)\.\.\.$", mout, re.M)]
        self.assertEqual(len(put), 10, mout)
        results = re.findall(r"^Result: (\d+) \* (\d+) = (\d+)$", mout, re.M)
        self.assertEqual([int(a) for a, _, _ in results], put)
        for a, b, c in results:
            self.assertEqual(int(a) * int(b), int(c))
        self.assertTrue(mout.rstrip().endswith("master exit."), mout)
        self.assertEqual(len(re.findall(r"^run task \d+ \* \d+\.\.\.$", wout, re.M)), 10)
        self.assertTrue(wout.rstrip().endswith("worker exit."), wout)

    def test_wrong_authkey_fails_clearly(self):
        sys.path.insert(0, PYDIR)
        os.environ["TASKQ_MASTER"] = h.MASTER_BIN
        from taskq.managers import BaseManager
        port = h.free_port()

        class M(BaseManager):
            pass
        M.register("q")
        m = M(address=("127.0.0.1", port), authkey=b"abc")
        m.start()
        self.addCleanup(m.shutdown)
        with open(os.path.join(TUTORIAL, "task_worker.py")) as f:
            src = f.read()
        src = src.replace("authkey=b'abc'", "authkey=b'abd'").replace("5000", str(port))
        path = os.path.join(self.tmp, "w.py")
        with open(path, "w") as f:
            f.write(src)
        t0 = time.monotonic()
        p = self.popen(path)
        out, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.outputs.append(("worker", err.decode()))
        self.assertIn("AuthenticationError", err.decode())
        self.assertLess(time.monotonic() - t0, 30)

    def test_queue_proxy_empty_typeerror_and_restart(self):
        sys.path.insert(0, PYDIR)
        import queue
        from taskq.managers import BaseManager
        self.start_master()
        key = h.key_bytes_from_file(self.key)

        class M(BaseManager):
            pass
        M.register("jobs")
        m = M(address=("127.0.0.1", self.port), authkey=key)
        m.connect()
        self.addCleanup(m.shutdown)
        q = m.jobs()
        t0 = time.monotonic()
        with self.assertRaises(queue.Empty):
            q.get(timeout=0.5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        with self.assertRaises(queue.Empty):
            q.get(block=False)
        with self.assertRaises(TypeError):
            q.put(object())
        q.put({"n": [1, 2.5, "x", None, True]})
        q.put(7)
        self.assertEqual(q.get(), {"n": [1, 2.5, "x", None, True]})
        # The take is acknowledged (TAKE_ACK) after get() returns; a
        # master stopped before it reads that message gives the item back
        # (at least once, as documented). A round trip on the same
        # connection comes after it, so once it is answered the take is
        # in the journal, and the clean stop below keeps it.
        m._connected().status()
        # a master restart keeps what was put and not taken
        self.master.stop()
        self.start_master(name="master2")
        self.assertEqual(q.get(timeout=20), 7)
        # the CLI sees the same queue
        q.put("from python")
        self.assertEqual(self.tq_ok("get", "jobs").out, '"from python"\n')


if __name__ == "__main__":
    h.main()
