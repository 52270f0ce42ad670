"""Logs under attack (issue 12, point 7): a peer looping HELLO/BYE cannot
fill the disk with join/leave lines (they are rate-limited, with a
summary of what was held back), and text a peer sends is escaped, so it
cannot forge log lines or send terminal escapes."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, wait_until, RawClient, read_text  # noqa: E402


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class Logs(TQTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.start_master()
        self.authkey = h.key_bytes_from_file(self.key)

    def log(self):
        return read_text(self.m.log_path)

    def test_hello_bye_flood_is_rate_limited(self):
        # the flood comes from 127.0.0.2, a good worker from 127.0.0.1
        c = RawClient("tcp://127.0.0.2:0;127.0.0.1:%d" % self.port, self.authkey)
        self.addCleanup(c.close)
        hello = h.msg_hello_worker(name="flood:1")
        bye = [h.head(h.T_BYE)]
        counts = {"sent": 0}

        def flood():
            end = time.monotonic() + 3
            while time.monotonic() < end:
                for _ in range(100):
                    c.sock.send_multipart(hello)
                    c.sock.send_multipart(bye)
                    counts["sent"] += 1
                try:  # read the WELCOMEs so that nothing backs up
                    while True:
                        c.sock.recv_multipart(h.zmq.NOBLOCK)
                except h.zmq.Again:
                    pass
        t = threading.Thread(target=flood)
        t.start()
        try:
            time.sleep(1)
            w = self.start_worker(concurrency=1)
        finally:
            t.join()
        sent = counts["sent"]
        self.assertGreater(sent, 1000)
        # one host's flood does not use up the others' budget
        self.assertIn("worker %s joined" % w.wname, self.log())
        self.assertIn("worker flood:1 joined (address 127.0.0.2", self.log())
        self.status()  # the master has read the flood
        size = os.path.getsize(self.m.log_path)
        self.assertLess(size, 1 << 20, "master log grew to %d bytes for %d HELLO/BYE pairs"
                        % (size, sent))
        # the summary comes from a timer, when the flood has stopped too
        wait_until(lambda: "lines about peers joining or leaving not logged" in self.log(), 10,
                   what="a summary of the join/leave lines not logged")
        joined = self.log().count("worker flood:1 joined")
        self.assertGreater(joined, 0)
        self.assertLess(joined, sent)
        # and the master still serves
        self.status()

    def test_peer_error_text_is_escaped(self):
        c = RawClient(self.endpoint, self.authkey)
        self.addCleanup(c.close)
        c.hello()
        forged = "2026-12-07T09:00:00.000Z master INFO forged"
        text = "boom\n" + forged + "\x1b[2J\x1b]0;owned\x07\r\x7fBAD"
        # and a byte that is not UTF-8, raw in the JSON string
        body = h.json.dumps({"code": 1, "message": text, "ref": 0}).encode().replace(b"BAD",
                                                                                    b"\xff")
        c.send([h.head(h.T_ERROR) + body])
        wait_until(lambda: "sent ERROR: boom" in self.log(), 10, what="the ERROR logged")
        with open(self.m.log_path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1b", raw)
        self.assertNotIn(b"\x07", raw)
        self.assertNotIn(b"\r", raw)
        self.assertNotIn(b"\x7f", raw)
        lines = raw.decode("utf-8").splitlines()
        self.assertFalse([ln for ln in lines if ln.startswith(forged)], lines)
        line = [ln for ln in lines if "sent ERROR: boom" in ln]
        self.assertEqual(len(line), 1, lines)
        self.assertIn("sent ERROR: boom\\x0a" + forged + "\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x7f\\xff",
                      line[0])


if __name__ == "__main__":
    main()
