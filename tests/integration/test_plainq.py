"""Plain put/get queues (PROTOCOL.md PUT, GET, GOT, TAKE_ACK): FIFO items
apart from task queues, a GET that waits with a timeout, items that are
gone only once taken for good (TAKE_ACK), and all of it across a master
restart."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqmsgs  # noqa: E402
from tqharness import (TQTestCase, main, RawClient, key_bytes_from_file,  # noqa: E402
                       decode_error)

T_PUT_ACK, T_GOT, T_ERROR = 0x18, 0x1A, 0x04


class PlainQueues(TQTestCase):
    def client(self):
        c = RawClient(self.endpoint, key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        return c

    def put(self, c, queue, items, req=1):
        c.send(tqmsgs.encode("PUT", {"req": req},
                             [{"queue": queue, "data": d} for d in items]))
        fr = c.recv_type(T_PUT_ACK, 10)
        self.assertIsNotNone(fr, "no PUT_ACK")
        self.assertEqual(fr[0][3], T_PUT_ACK, decode_error(fr) if fr[0][3] == T_ERROR else fr)
        name, fixed, recs = tqmsgs.decode(fr)
        self.assertEqual(fixed["req"], req)
        return [r["id"] for r in recs]

    def get(self, c, queues, timeout_ms=0, mx=1, req=2, wait=10):
        c.send(tqmsgs.encode("GET", {"req": req, "timeout_ms": timeout_ms, "max": mx},
                             [{"queue": q} for q in queues]))
        fr = c.recv_type(T_GOT, wait)
        self.assertIsNotNone(fr, "no GOT")
        self.assertEqual(fr[0][3], T_GOT, decode_error(fr) if fr[0][3] == T_ERROR else fr)
        name, fixed, recs = tqmsgs.decode(fr)
        self.assertEqual(fixed["req"], req)
        return [(r["id"], r["data"]) for r in recs]

    def take_ack(self, c, ids):
        c.send(tqmsgs.encode("TAKE_ACK", {"req": 9}, [{"id": i} for i in ids]))

    def test_fifo_put_get_take_ack(self):
        self.start_master()
        c = self.client()
        ids = self.put(c, b"jobs", [b"one", b"two", b"three"])
        self.assertEqual(len(set(ids)), 3)
        got = self.get(c, [b"jobs"], mx=2)
        self.assertEqual([d for _, d in got], [b"one", b"two"])
        self.take_ack(c, [i for i, _ in got])
        self.assertEqual([d for _, d in self.get(c, [b"other", b"jobs"], mx=5)], [b"three"])
        self.assertEqual(self.get(c, [b"jobs"]), [])  # empty: at once with timeout 0

    def test_get_times_out_empty_and_waits_for_put(self):
        self.start_master()
        c = self.client()
        t0 = time.monotonic()
        self.assertEqual(self.get(c, [b"q"], timeout_ms=500), [])
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        c.send(tqmsgs.encode("GET", {"req": 5, "timeout_ms": 20000, "max": 1}, [{"queue": b"q"}]))
        time.sleep(0.3)
        p = self.client()
        self.put(p, b"q", [b"late"])
        fr = c.recv_type(T_GOT, 10)
        self.assertIsNotNone(fr)
        _, fixed, recs = tqmsgs.decode(fr)
        self.assertEqual((fixed["req"], [r["data"] for r in recs]), (5, [b"late"]))

    def test_unacked_items_come_back_when_the_client_goes(self):
        self.start_master()
        c = self.client()
        self.put(c, b"q", [b"a", b"b"])
        self.assertEqual([d for _, d in self.get(c, [b"q"], mx=1)], [b"a"])
        c.send(tqmsgs.encode("BYE"))
        c2 = self.client()
        self.assertEqual([d for _, d in self.get(c2, [b"q"], mx=5, timeout_ms=3000)],
                         [b"a", b"b"])

    def test_items_survive_restart_and_take_ack_is_durable(self):
        self.start_master()
        c = self.client()
        self.put(c, b"q", [b"a", b"b", b"c"])
        got = self.get(c, [b"q"], mx=1)
        self.take_ack(c, [got[0][0]])
        got = self.get(c, [b"q"], mx=1)  # b: taken, not acked
        self.assertEqual(got[0][1], b"b")
        time.sleep(0.5)  # the TAKE_ACK is journaled (no answer to wait for)
        self.master.stop()
        self.start_master(name="master2")
        c2 = self.client()
        self.assertEqual([d for _, d in self.get(c2, [b"q"], mx=5, timeout_ms=3000)],
                         [b"b", b"c"])

    def test_bad_get_is_refused(self):
        self.start_master()
        c = self.client()
        c.send(tqmsgs.encode("GET", {"req": 3, "timeout_ms": 86400001, "max": 1},
                             [{"queue": b"q"}]))
        fr = c.recv_type(T_GOT, 5)
        self.assertEqual(fr[0][3], T_ERROR)
        self.assertEqual(decode_error(fr)["code"], 1)
        c.send(tqmsgs.encode("GET", {"req": 4, "timeout_ms": 0, "max": 0}, [{"queue": b"q"}]))
        fr = c.recv_type(T_GOT, 5)
        self.assertEqual(decode_error(fr)["code"], 1)

    def test_cli_put_and_get(self):
        self.start_master()
        self.tq_ok("put", "jobs", "a b", "c")
        self.tq_ok("put", "jobs", "-", input="d\ne\n")
        r = self.tq_ok("get", "--count", "3", "jobs")
        self.assertEqual(r.out, "a b\nc\nd\n")
        self.assertEqual(self.tq_ok("get", "jobs").out, "e\n")
        r = self.tq("get", "--timeout", "0.3", "jobs")
        self.assertEqual(r.rc, 4, r)
        self.assertIn("empty", r.err)
        r = self.tq("put", "bad name", "x")
        self.assertEqual(r.rc, 2, r)


if __name__ == "__main__":
    main()
