"""Client bounds (issue 12, point 4, the client's half): a master that
stays connected but never answers (a SUBMIT caught in a failed journal
write) must not hang `taskq`: every request is bounded by --ack-timeout
and ends with exit 4 and a clear error."""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, EXIT_TIMEOUT, EXIT_REFUSED  # noqa: E402


class SilentMaster:
    """A CURVE ROUTER with the master's derived keys that says WELCOME to
    HELLO (with a long heartbeat timeout, so the client does not take it
    for lost) and answers nothing else."""

    def __init__(self, endpoint, authkey):
        spub, ssec, _, _ = h.derive_keys(authkey)
        self.ctx = h.zmq.Context()
        self.sock = self.ctx.socket(h.zmq.ROUTER)
        self.sock.curve_server = True
        self.sock.curve_publickey = spub
        self.sock.curve_secretkey = ssec
        self.sock.linger = 0
        self.sock.bind(endpoint)
        self.seen = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        welcome = h.head(h.T_WELCOME) + json.dumps({
            "version": 1, "heartbeat_ms": 1000, "heartbeat_timeout_ms": 120000,
            "max_payload": 1 << 20, "packed": False, "master": "silent"}).encode()
        poller = h.zmq.Poller()
        poller.register(self.sock, h.zmq.POLLIN)
        while not self.stop:
            if not poller.poll(100):
                continue
            fr = self.sock.recv_multipart()
            mtype = fr[1][3] if len(fr) > 1 and len(fr[1]) > 3 else None
            self.seen.append(mtype)
            if mtype == h.T_HELLO:
                self.sock.send_multipart([fr[0], welcome])

    def close(self):
        self.stop = True
        self.t.join(5)
        self.sock.close(0)
        self.ctx.term()


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class AckTimeout(TQTestCase):
    def setUp(self):
        super().setUp()
        self.silent = SilentMaster(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(self.silent.close)

    def bounded(self, *args, what):
        t0 = time.monotonic()
        r = self.tq("--ack-timeout", "1.5", *args, timeout=30)
        self.assertEqual(r.rc, EXIT_TIMEOUT, r)
        self.assertLess(time.monotonic() - t0, 20, r)
        self.assertIn(what, r.err)
        return r

    def test_submit_without_ack_times_out(self):
        r = self.bounded("submit", "--fn", "echo", "x",
                         what="no acknowledgement from master at %s within 1.5 s "
                              "(is its journal failing? see taskq status)" % self.endpoint)
        self.assertEqual(r.out, "")
        self.assertIn(h.T_SUBMIT, self.silent.seen)

    def test_map_without_ack_times_out(self):
        self.bounded("map", "--fn", "echo", "x", "y", what="no acknowledgement from master")

    def test_status_cancel_admin_time_out(self):
        self.bounded("status", what="no status reply")
        self.bounded("cancel", "7", what="no cancel reply")
        self.bounded("dead", what="no admin reply")
        self.bounded("pause", "q", what="no admin reply")


@unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs")
class FullDisk(TQTestCase):
    """The real master on a full disk: the SUBMIT whose journal write
    fails is never acknowledged (or, once the master answers it, refused);
    either way taskq does not hang."""

    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt, 0o700)
        rc = subprocess.call(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                              self.mnt], stderr=subprocess.DEVNULL)
        if rc != 0:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.call, ["umount", "-l", self.mnt])

    def test_submit_on_full_disk_is_bounded(self):
        # No --journal-reserve: the reserve would absorb this one write
        # (test_durable covers that); here the write must fail.
        self.start_master("--journal-reserve", "0", data_dir=os.path.join(self.mnt, "data"))
        fd = os.open(os.path.join(self.mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 65536) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        payload = b"p" * 200000 + b"\n"
        t0 = time.monotonic()
        r = self.tq("--ack-timeout", "3", "submit", "--fn", "echo", "-", input=payload,
                    timeout=40)
        self.assertLess(time.monotonic() - t0, 30, r)
        if r.rc == EXIT_TIMEOUT:
            self.assertIn("no acknowledgement from master", r.err)
        else:
            self.assertEqual(r.rc, EXIT_REFUSED, r)
            self.assertIn("journal", r.err)


if __name__ == "__main__":
    main()
