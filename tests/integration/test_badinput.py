"""Hostile input through a real CURVE socket (keys derived in Python):
every malformed message gets a clear ERROR or is dropped, the master never
crashes, and its memory stays bounded."""

import json
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, RawClient, head  # noqa: E402


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class BadInput(TQTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.start_master("--max-payload", "1K")
        self.authkey = h.key_bytes_from_file(self.key)
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def client(self, hello=True):
        c = RawClient(self.endpoint, self.authkey)
        self.clients.append(c)
        if hello:
            welcome = c.hello()
            self.assertEqual(welcome["version"], 1, welcome)
            self.assertIn("max_payload", welcome)
        return c

    def expect_error(self, frames, codes, hello=True, required=True):
        """Send frames on a fresh connection; the reply must be an ERROR
        with a code in codes (or, if not required, nothing at all)."""
        c = self.client(hello)
        c.send(frames)
        reply = c.recv(timeout=3)
        if reply is None:
            if required:
                self.fail("no reply to %r" % [f[:40] for f in frames[:3]])
            return None
        err = h.decode_error(reply)
        self.assertIsNotNone(err, "expected ERROR, got %r" % reply[0][:100])
        self.assertIn(err["code"], codes, err)
        self.assertTrue(err.get("message"), err)
        self.assertTrue(self.m.alive(), "master died")
        return err

    def assert_still_serving(self):
        self.assertTrue(self.m.alive(), "master died:\n" + self.m.output()[-3000:])
        c = self.client()
        c.send(h.msg_status())
        fr = c.recv_type(h.T_STATUS_REPLY, 5)
        self.assertIsNotNone(fr, "no STATUS_REPLY")
        self.assertEqual(fr[0][:4], head(h.T_STATUS_REPLY))
        json.loads(fr[0][4:].decode())

    # ---- the key derivation is reproducible outside C ---------------------

    def test_python_derived_keys_work(self):
        c = self.client()
        c.send(h.msg_status())
        fr = c.recv_type(h.T_STATUS_REPLY, 5)
        self.assertIsNotNone(fr)
        st = json.loads(fr[0][4:].decode())
        self.assertIn("totals", st)
        # submit + subscribe round trip with a real worker
        self.start_worker(concurrency=1)
        c.send(h.msg_submit([({"fn": "square"}, b"12")], req=77, flags=1))
        fr = c.recv_type(h.T_SUBMIT_ACK, 5)
        self.assertIsNotNone(fr)
        req, ids = h.decode_submit_ack(fr)
        self.assertEqual(req, 77)
        self.assertEqual(len(ids), 1)
        fr = c.recv_type(h.T_RESULTS, 10)
        self.assertIsNotNone(fr)
        res = h.decode_results(fr)
        self.assertEqual(res[0][0], ids[0])
        self.assertEqual(res[0][1], 1)
        self.assertEqual(res[0][3], b"12 * 12 = 144")

    # ---- malformed messages ----------------------------------------------

    def test_before_hello(self):
        self.expect_error(h.msg_status(), {h.E_NOT_REGISTERED}, hello=False)
        self.expect_error(h.msg_submit([({"fn": "echo"}, b"x")]), {h.E_NOT_REGISTERED},
                          hello=False)
        self.assert_still_serving()

    def test_empty_short_signature(self):
        self.expect_error([b""], {h.E_MALFORMED, h.E_SIGNATURE}, required=False)
        self.expect_error([b"TQ"], {h.E_MALFORMED, h.E_SIGNATURE}, required=False)
        self.expect_error([b"TQ\x01"], {h.E_MALFORMED, h.E_SIGNATURE}, required=False)
        self.expect_error([b"XY\x01\x06{}"], {h.E_SIGNATURE, h.E_MALFORMED}, required=False)
        self.expect_error([b"GET / HTTP/1.1\r\n\r\n"], {h.E_SIGNATURE, h.E_MALFORMED},
                          required=False)
        self.assert_still_serving()

    def test_wrong_version_readable(self):
        err = self.expect_error([head(h.T_STATUS, version=2) + b"{}"], {h.E_VERSION})
        self.assertTrue(err["message"])
        err = self.expect_error([head(h.T_HELLO, version=99) + b"{}"], {h.E_VERSION},
                                hello=False)
        self.assert_still_serving()

    def test_unknown_type(self):
        self.expect_error([head(0x7f)], {h.E_UNKNOWN_TYPE})
        self.expect_error([head(0x00)], {h.E_UNKNOWN_TYPE})
        self.assert_still_serving()

    def test_truncated_and_trailing(self):
        full = h.msg_submit([({"fn": "echo"}, b"x")])
        body = full[0]
        for cut in (5, 8, 10, 12, len(body) - 1):
            self.expect_error([body[:cut], b"x"], {h.E_MALFORMED})
        self.expect_error([body + b"\x00junk", b"x"], {h.E_MALFORMED})
        # str8 length running past the end
        bad = head(h.T_SUBMIT) + struct.pack("<IHH", 1, 0, 1) + b"\xff" + b"echo"
        self.expect_error([bad, b"x"], {h.E_MALFORMED})
        # trailing bytes on WAIT / CANCEL / STATUS JSON
        self.expect_error([h.msg_ids(h.T_WAIT, [1])[0] + b"\x01"], {h.E_MALFORMED})
        self.expect_error([h.msg_ids(h.T_CANCEL, [1])[0][:-3]], {h.E_MALFORMED})
        self.expect_error([head(h.T_STATUS) + b"{not json"], {h.E_MALFORMED})
        self.expect_error([head(h.T_HELLO) + b"[1,2"], {h.E_MALFORMED}, hello=False)
        self.assert_still_serving()

    def test_count_frame_mismatch(self):
        two = h.msg_submit([({"fn": "echo"}, b"a"), ({"fn": "echo"}, b"b")])
        self.expect_error(two[:2], {h.E_MALFORMED, h.E_TOO_MANY})  # one payload missing
        self.expect_error(two + [b"extra"], {h.E_MALFORMED, h.E_TOO_MANY})
        zero = [head(h.T_SUBMIT) + struct.pack("<IHH", 1, 0, 0)]
        self.expect_error(zero, {h.E_MALFORMED})
        self.assert_still_serving()

    def test_count_over_batch_limit(self):
        tasks = [({"fn": "echo"}, b"x")] * 1025
        self.expect_error(h.msg_submit(tasks), {h.E_TOO_MANY, h.E_MALFORMED})
        self.expect_error(h.msg_ids(h.T_WAIT, list(range(1, 1026))), {h.E_TOO_MANY,
                                                                       h.E_MALFORMED})
        self.assert_still_serving()

    def test_too_many_frames(self):
        frames = h.msg_submit([({"fn": "echo"}, b"x")]) + [b"f"] * 2000
        self.expect_error(frames, {h.E_TOO_MANY, h.E_MALFORMED})
        self.assert_still_serving()

    def test_invalid_names(self):
        for fn in ("", "bad name", "semi;colon", "x" * 65, "\x00nul", "sl/ash"):
            self.expect_error(h.msg_submit([({"fn": fn}, b"x")]),
                              {h.E_BAD_NAME, h.E_MALFORMED, h.E_TOO_LARGE})
        self.expect_error(h.msg_submit([({"fn": "echo", "queue": "q q"}, b"x")]),
                          {h.E_BAD_NAME, h.E_MALFORMED, h.E_TOO_LARGE})
        st = self.status()
        self.assertEqual(st["totals"]["submitted"], 0, st["totals"])
        self.assert_still_serving()

    def test_payload_over_max(self):
        err = self.expect_error(h.msg_submit([({"fn": "echo"}, b"p" * 2000)]), {h.E_TOO_LARGE})
        self.assertTrue(err["message"])
        # a payload at the limit is accepted
        c = self.client()
        c.send(h.msg_submit([({"fn": "echo"}, b"p" * 1000)], req=5))
        fr = c.recv_type(h.T_SUBMIT_ACK, 5)
        self.assertIsNotNone(fr)
        self.assertEqual(fr[0][:4], head(h.T_SUBMIT_ACK), fr[0][:200])
        # and through the command line: refused with exit 7
        r = self.tq("submit", "--fn", "echo", "q" * 2000)
        self.assertEqual(r.rc, h.EXIT_REFUSED, r)

    def test_client_sending_worker_messages(self):
        self.expect_error(h.msg_result([(1, 1, 0, b"forged")]), {h.E_WRONG_ROLE})
        rel = [head(h.T_RELEASE) + struct.pack("<HQI", 1, 1, 1)]
        self.expect_error(rel, {h.E_WRONG_ROLE})
        self.expect_error([head(h.T_DRAIN)], {h.E_WRONG_ROLE})
        self.assert_still_serving()

    def test_worker_sending_forged_results(self):
        # a registered worker reporting tasks it was never given: ignored
        self.start_worker(concurrency=1, fns=["slow=sh -c 'sleep 1; cat'"])
        ids = self.submit("--fn", "slow", "real")
        c = self.client(hello=False)
        c.send(h.msg_hello_worker(slots=1, functions=["nothing"]))
        self.assertIsNotNone(c.recv_type(h.T_WELCOME, 5))
        c.send(h.msg_result([(int(ids[0]), 1, 0, b"forged"), (int(ids[0]), 99, 0, b"forged")]))
        r = self.tq_ok("wait", "--timeout", "15", *ids)
        self.assertEqual(r.out, "real\n")

    def test_junk_flood_memory_bounded(self):
        payload_junk = [
            [b""], [b"TQ"], [b"XY\x01\x01"], [head(h.T_STATUS, 9)], [head(0x55)],
            h.msg_submit([({"fn": "echo"}, b"x")])[:1],
            h.msg_submit([({"fn": "bad name"}, b"x")]),
            h.msg_submit([({"fn": "echo"}, b"z" * 2000)]),
            h.msg_result([(1, 1, 0, b"forged")]),
            [head(h.T_SUBMIT) + b"\xff" * 200],
        ]
        c = self.client()
        sent = 0
        for i in range(20000):
            c.send(payload_junk[i % len(payload_junk)])
            sent += 1
            if i % 500 == 0:  # drain replies so neither side piles up
                while c.sock.poll(0):
                    c.sock.recv_multipart()
        # many short-lived connections too
        for i in range(200):
            x = RawClient(self.endpoint, self.authkey)
            x.send([b"junk"])
            x.close()
        self.assertEqual(sent, 20000)
        self.assert_still_serving()
        rss = self.m.rss_kb()
        self.assertLess(rss, 200 * 1024, "master RSS %d kB" % rss)
        self.start_worker(concurrency=2)
        r = self.tq_ok("map", "--fn", "square", "1", "2", "3")
        self.assertEqual(r.out, "1 * 1 = 1\n2 * 2 = 4\n3 * 3 = 9\n")


if __name__ == "__main__":
    main()
