"""The master does what proto/PROTOCOL.md says where they used to
disagree (issue 13 point 5): the ref of an ERROR about a message refused
as a whole, an empty ACK, the cap on a credit-only RESULT, STATUS's req,
and a worker's credit after a second HELLO on its connection."""

import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
import tqmsgs  # noqa: E402
from tqharness import TQTestCase, main, RawClient  # noqa: E402


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class ProtocolAgrees(TQTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.start_master()
        self.authkey = h.key_bytes_from_file(self.key)
        self.peers = []

    def tearDown(self):
        for c in self.peers:
            c.close()
        super().tearDown()

    def peer(self, hello=None):
        c = RawClient(self.endpoint, self.authkey)
        self.peers.append(c)
        if hello is None:
            c.hello()
        else:
            c.send([tqmsgs.head("HELLO") + json.dumps(hello).encode()])
            fr = c.recv_type(h.T_WELCOME, 5)
            self.assertIsNotNone(fr, "no WELCOME")
            self.assertEqual(fr[0][3], h.T_WELCOME, fr[0][:200])
        return c

    def error_for(self, c, frames):
        c.send(frames)
        fr = c.recv_type(h.T_ERROR, 5)
        self.assertIsNotNone(fr, "no ERROR")
        err = h.decode_error(fr)
        self.assertIsNotNone(err, fr[0][:100])
        return err

    def worker_row(self, name):
        rows = [w for w in self.status()["workers"] if w["name"] == name]
        self.assertEqual(len(rows), 1, rows)
        return rows[0]

    # ---- ERROR ref: the req of a message refused as a whole ------------------

    def test_too_many_frames_error_carries_req(self):
        c = self.peer()
        frames = tqmsgs.encode("SUBMIT", {"req": 41}, [{"fn": "echo", "payload": b"x"}])
        err = self.error_for(c, frames + [b"f"] * 1100)
        self.assertEqual(err["code"], h.E_TOO_MANY, err)
        self.assertEqual(err["ref"], 41, err)

    def test_packed_submit_then_data_frame_error_carries_req(self):
        c = self.peer()
        one = tqmsgs.pack(tqmsgs.encode("SUBMIT", {"req": 42}, [{"fn": "echo", "payload": b"x"}]))
        err = self.error_for(c, one + [b"stray"])
        self.assertEqual(err["code"], h.E_MALFORMED, err)
        self.assertIn("packed SUBMIT message has 1 data frames", err["message"])
        self.assertEqual(err["ref"], 42, err)
        # a broken pack too
        bad = one[0][:-4] + (1 << 30).to_bytes(4, "little")
        err = self.error_for(c, [bad])
        self.assertEqual(err["ref"], 42, err)
        self.assertEqual(self.status()["totals"]["submitted"], 0)

    # ---- ACK: 1..1024 ids ----------------------------------------------------

    def test_empty_ack_is_malformed(self):
        c = self.peer()
        err = self.error_for(c, tqmsgs.encode("ACK", {"req": 43}, []))
        self.assertEqual(err["code"], h.E_MALFORMED, err)
        self.assertEqual(err["ref"], 43, err)
        self.assertIn("ACK: count is 0", err["message"])
        # an ACK with ids is still fine (no answer), and the client is served
        c.send(tqmsgs.encode("ACK", {"req": 44}, [{"id": 12345}]))
        c.send(h.msg_status())
        fr = c.recv(5)
        self.assertEqual(fr[0][3], h.T_STATUS_REPLY, fr[0][:200])

    # ---- RESULT: a credit-only RESULT is capped at slots + prefetch ----------

    def test_credit_only_result_capped_at_slots_plus_prefetch(self):
        w = self.peer({"role": "worker", "name": "cap:1", "slots": 1, "prefetch": 2,
                       "functions": ["nothing_here"]})
        self.assertEqual(self.worker_row("cap:1")["credit"], 3)
        w.send(h.msg_result([], credit=100))  # count 0: only credit
        self.assertIsNone(w.recv(0.5), "a credit-only RESULT is not answered")
        self.assertEqual(self.worker_row("cap:1")["credit"], 3)

    # ---- STATUS: req echoed --------------------------------------------------

    def test_status_req_echoed(self):
        c = self.peer()
        c.send([tqmsgs.head("STATUS") + b'{"req":7}'])
        fr = c.recv_type(h.T_STATUS_REPLY, 5)
        self.assertEqual(json.loads(fr[0][4:])["req"], 7)
        c.send([tqmsgs.head("STATUS") + b"{}"])
        fr = c.recv_type(h.T_STATUS_REPLY, 5)
        self.assertEqual(json.loads(fr[0][4:])["req"], 0)
        err = self.error_for(c, [tqmsgs.head("STATUS") + b'{"req":8,"queue_offset":-1}'])
        self.assertEqual(err["code"], h.E_MALFORMED, err)
        self.assertEqual(err["ref"], 8, err)
        self.assertIn("queue_offset", err["message"])

    # ---- a second HELLO: credit = slots + prefetch - busy --------------------

    def test_second_hello_credit(self):
        hello = {"role": "worker", "name": "again:1", "slots": 2, "prefetch": 1,
                 "functions": ["nothing_here"]}
        w = self.peer(hello)
        self.assertEqual(self.worker_row("again:1")["credit"], 3)
        w.send(h.msg_result([], credit=0))
        hello["busy"] = 2
        w.send([tqmsgs.head("HELLO") + json.dumps(hello).encode()])
        self.assertIsNotNone(w.recv_type(h.T_WELCOME, 5))
        self.assertEqual(self.worker_row("again:1")["credit"], 1)


class FakeMaster(threading.Thread):
    """A ROUTER that answers every HELLO with the WELCOME it was given."""

    def __init__(self, endpoint, authkey, welcome):
        super().__init__(daemon=True)
        _spub, ssec, _cpub, _csec = h.derive_keys(authkey)
        self.ctx = h.zmq.Context()
        s = self.ctx.socket(h.zmq.ROUTER)
        s.setsockopt(h.zmq.LINGER, 0)
        s.setsockopt(h.zmq.CURVE_SERVER, 1)
        s.setsockopt(h.zmq.CURVE_SECRETKEY, ssec)
        s.bind(endpoint)
        self.sock, self.welcome, self.hellos = s, welcome, 0
        self.stop = threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            rid, f0 = self.sock.recv_multipart()[:2]
            if f0[:4] == tqmsgs.head("HELLO"):
                self.hellos += 1
                self.sock.send_multipart([rid, tqmsgs.head("WELCOME") +
                                          json.dumps(self.welcome).encode()])

    def close(self):
        self.stop.set()
        self.join(5)
        self.sock.close(0)
        self.ctx.term()


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class OneWelcomeRule(TQTestCase):
    """The client and the worker take or refuse a WELCOME by the same
    rule (tq_welcome_decode): heartbeat_ms 1,000,000 was taken by the
    client (up to 3,600,000) and ignored by the worker (up to 600,000)."""

    def test_client_and_worker_refuse_the_same_welcome(self):
        welcome = {"version": 1, "heartbeat_ms": 1000000, "heartbeat_timeout_ms": 5000000,
                   "max_payload": 1048576, "master": "fake"}
        fake = FakeMaster(self.endpoint, h.key_bytes_from_file(self.key), welcome)
        self.addCleanup(fake.close)
        r = self.tq("status", "--json", connect_timeout=3, timeout=30)
        self.assertEqual(r.rc, h.EXIT_CONNECT, r)
        self.assertIn("bad WELCOME", r.err)
        self.assertIn("heartbeat_ms", r.err)
        w = self.start_worker(fns=["square=true"], wait=False)
        h.wait_until(lambda: "bad WELCOME" in w.output(), 20, what="the worker to refuse it")
        # (logfmt quotes the message: its '"' are written '\"')
        self.assertIn('"heartbeat_ms" must be an integer 10..600000',
                      w.output().replace('\\"', '"'))


if __name__ == "__main__":
    main()
