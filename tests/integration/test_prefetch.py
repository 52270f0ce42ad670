"""Worker prefetch, inline mode and packed data frames (issue 5): the
features that make batching pay, each checked through the real programs
and, for the wire format, through a raw CURVE peer written from
PROTOCOL.md."""

import json
import os
import signal
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, RawClient, head, wait_until  # noqa: E402

PACKED = 0x80


def packed(frames):
    """PROTOCOL.md 3.1: one frame = head (type | 0x80), body, the data
    frames as u32 length + bytes each, then the u32 length of those."""
    f0 = frames[0]
    pk = b"".join(struct.pack("<I", len(d)) + d for d in frames[1:])
    return f0[:3] + bytes([f0[3] | PACKED]) + f0[4:] + pk + struct.pack("<I", len(pk))


def unpacked(frame):
    """The plain frames of a packed message."""
    assert frame[3] & PACKED, frame[:4]
    (plen,) = struct.unpack_from("<I", frame, len(frame) - 4)
    end = len(frame) - 4 - plen
    out, off = [frame[:3] + bytes([frame[3] & ~PACKED]) + frame[4:end]], end
    while off < len(frame) - 4:
        (n,) = struct.unpack_from("<I", frame, off)
        out.append(frame[off + 4:off + 4 + n])
        off += 4 + n
    assert off == len(frame) - 4, "pack has trailing bytes"
    return out


class Prefetch(TQTestCase):
    def test_prefetch_fills_credit_beyond_the_slots(self):
        self.start_master()
        w = self.start_worker("--prefetch", "3", concurrency=1)
        info = self.worker_status(w.wname)
        self.assertEqual((info["slots"], info["prefetch"], info["credit"]), (1, 3, 4), info)
        ids = self.submit("--fn", "sleep", "2", "2", "2", "2", "2")
        # one runs, three wait in the worker, the fifth stays queued
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 4, 10,
                   what="4 tasks leased to the worker")
        st = self.status()
        self.assertEqual(st["totals"]["queued"], 1, st["totals"])
        self.assertEqual(self.worker_status(w.wname)["credit"], 0)
        r = self.tq_ok("wait", *ids, timeout=60)
        self.assertEqual(r.out.count("2"), 5, r.out)

    def test_tasks_with_a_timeout_are_not_prefetched(self):
        self.start_master()
        w = self.start_worker("--prefetch", "3", concurrency=1)
        ids = self.submit("--fn", "sleep", "--timeout", "30", "2", "2", "2")
        wait_until(lambda: self.worker_status(w.wname)["busy"] >= 1, 10,
                   what="the first task leased")
        # a lease of a timed task counts from dispatch: the others wait at
        # the master, not in the worker's prefetch
        for _ in range(5):
            info = self.worker_status(w.wname)
            self.assertEqual(info["busy"], 1, info)
            self.assertEqual(self.status()["totals"]["queued"], 2)
        self.tq_ok("wait", *ids, timeout=60)

    def test_prefetch_is_checked(self):
        self.start_master()
        r = self.run_prog([h.WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                           "--prefetch", "4097"])
        self.assertEqual(r.rc, 2, r)
        self.assertIn("--prefetch", r.err)
        r = self.run_prog([h.WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                           "--prefetch", "-1"])
        self.assertEqual(r.rc, 2, r)


class Inline(TQTestCase):
    def test_inline_and_thread_give_the_same_results(self):
        self.start_master()
        for mode in ("inline", "thread"):
            w = self.start_worker("--fn-mode", "square=" + mode, "--fn-mode", "echo=" + mode,
                                  "--prefetch", "16", concurrency=2)
            r = self.tq_ok("map", "--fn", "square", "-",
                           input="".join("%d\n" % i for i in range(1, 3001)))
            lines = r.out.splitlines()
            self.assertEqual(len(lines), 3000)
            for i, line in enumerate(lines, 1):
                self.assertEqual(line, "%d * %d = %d" % (i, i, i * i))
            r = self.tq("map", "--fn", "square", "-", input="x\n")
            self.assertNotEqual(r.rc, 0)
            self.assertIn("square: payload is not an integer", r.out + r.err)
            w.stop()
            wait_until(lambda: not self.status()["workers"], 10, what="worker gone")

    def test_blocking_builtin_cannot_be_inline(self):
        self.start_master()
        r = self.run_prog([h.WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                           "--fn-mode", "sleep=inline"])
        self.assertEqual(r.rc, 2, r)
        self.assertIn("built-in 'sleep' blocks: it cannot run inline", r.err)
        r = self.run_prog([h.WORKER_BIN, "--connect", self.endpoint, "--authkey-file", self.key,
                           "--fn", "up=tr a-z A-Z", "--fn-mode", "up=inline"])
        self.assertEqual(r.rc, 2, r)
        self.assertIn("is a command", r.err)


MANYW = os.path.join(h.BUILD, "tests", "bench_manyworkers")


class SharedContext(TQTestCase):
    def test_workers_sharing_one_context(self):
        """taskq_worker_set_context: 20 workers in one process, one ZeroMQ
        context (their inproc endpoints must not clash), all serving."""
        self.start_master()
        w = self.start("manyw", [MANYW, self.endpoint, self.key, "20", "shared", "4"])
        wait_until(lambda: len([x for x in self.status()["workers"]
                                if x["name"].startswith("shared-")]) == 20, 30,
                   what="20 workers to join")
        ws = [x for x in self.status()["workers"] if x["name"].startswith("shared-")]
        self.assertEqual({(x["slots"], x["prefetch"]) for x in ws}, {(1, 4)})
        r = self.tq_ok("map", "--fn", "square", "-",
                       input="".join("%d\n" % i for i in range(1, 2001)))
        lines = r.out.splitlines()
        self.assertEqual(lines, ["%d * %d = %d" % (i, i, i * i) for i in range(1, 2001)])
        done = [x["done"] for x in self.status()["workers"] if x["name"].startswith("shared-")]
        self.assertEqual(sum(done), 2000)
        self.assertGreater(min(done), 0, done)
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 0, h.tail(w.log_path))


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class Packed(TQTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.start_master()
        self.authkey = h.key_bytes_from_file(self.key)
        self.peers = []

    def tearDown(self):
        for c in self.peers:
            c.close()
        super().tearDown()

    def peer(self, hello):
        c = RawClient(self.endpoint, self.authkey)
        self.peers.append(c)
        c.send([head(h.T_HELLO) + json.dumps(hello).encode()])
        fr = c.recv_type(h.T_WELCOME, 5)
        self.assertIsNotNone(fr)
        self.assertEqual(fr[0][3], h.T_WELCOME, fr)
        return c, json.loads(fr[0][4:].decode())

    def test_packed_both_ways_and_plain_peers_unchanged(self):
        # a worker that asks for packed messages gets DISPATCH packed
        w, welcome = self.peer({"role": "worker", "name": "raw:w", "slots": 4, "packed": True,
                                "functions": ["echo"]})
        self.assertIs(welcome.get("packed"), True, welcome)
        c, _ = self.peer({"role": "client", "name": "raw:c", "packed": True})
        payloads = [b"alpha", b"", b"\x00\xffbinary"]
        tasks = [({"fn": "echo"}, p) for p in payloads]
        # the client may send packed: the master said so in WELCOME
        c.send([packed(h.msg_submit(tasks, req=7, flags=1))])  # subscribe
        req, ids = h.decode_submit_ack(c.recv_type(h.T_SUBMIT_ACK))
        self.assertEqual((req, len(ids)), (7, 3))
        fr = w.recv_type(h.T_DISPATCH | PACKED, 5)
        self.assertIsNotNone(fr, "no packed DISPATCH")
        self.assertEqual(fr[0][3], h.T_DISPATCH | PACKED, fr[0][:8])
        self.assertEqual(len(fr), 1, "a packed message is one frame")
        fr = unpacked(fr[0])
        self.assertEqual(fr[1:], payloads)
        # count, then (id, attempt, timeout, fn) per record
        (count,) = struct.unpack_from("<H", fr[0], 4)
        off, got = 6, []
        for _ in range(count):
            i, a, _t = struct.unpack_from("<QII", fr[0], off)
            off += 16
            off += 1 + fr[0][off]
            got.append((i, a))
        self.assertEqual([i for i, _ in got], ids)
        # results back packed; the client gets RESULTS packed
        items = [(i, a, 1, p.upper()) for (i, a), p in zip(got, payloads)]
        w.send([packed(h.msg_result(items, credit=3))])
        fr = c.recv_type(h.T_RESULTS | PACKED, 5)
        self.assertIsNotNone(fr, "no packed RESULTS")
        self.assertEqual(len(fr), 1)
        outs = h.decode_results(unpacked(fr[0]))
        self.assertEqual(sorted((i, d) for i, _s, _a, d in outs),
                         sorted(zip(ids, (p.upper() for p in payloads))))
        # a plain client (no "packed") gets plain frames, one per record
        p, _ = self.peer({"role": "client", "name": "raw:plain"})
        p.send(h.msg_ids(h.T_WAIT, ids, req=9))
        fr = p.recv_type(h.T_RESULTS, 5)
        self.assertIsNotNone(fr)
        self.assertEqual(fr[0][3], h.T_RESULTS)
        self.assertEqual(len(fr), 4)

    def test_malformed_packs_are_refused_by_name(self):
        c, _ = self.peer({"role": "client", "name": "raw:bad", "packed": True})
        good = packed(h.msg_submit([({"fn": "echo"}, b"x"), ({"fn": "echo"}, b"y")], req=3))
        (plen,) = struct.unpack_from("<I", good, len(good) - 4)
        body = good[:len(good) - 4 - plen]
        one = packed(h.msg_submit([({"fn": "echo"}, b"x")], req=3, count=2))
        cases = [
            ([body + struct.pack("<I", 50) + b"short" + struct.pack("<I", 9)],
             "record 0 runs past the end"),
            ([body + struct.pack("<I", 1 << 20)], "pack length at the end of frame 0"),
            ([good, b"x"], "1 data frames, expected none"),
            ([one], "count is 2 but 1 data frames"),
        ]
        for frames, text in cases:
            c.send(frames)
            fr = c.recv_type(h.T_SUBMIT_ACK, 5)
            self.assertIsNotNone(fr, text)
            err = h.decode_error(fr)
            self.assertIsNotNone(err, "expected an ERROR for %r" % text)
            self.assertEqual(err["code"], h.E_MALFORMED, err)
            self.assertIn(text, err["message"])
        self.assertEqual(self.status()["totals"]["submitted"], 0)
        self.assertTrue(self.m.alive())

    def test_hello_packed_must_be_boolean(self):
        c = RawClient(self.endpoint, self.authkey)
        self.peers.append(c)
        c.send([head(h.T_HELLO) + json.dumps({"role": "client", "name": "x", "packed": 1}).encode()])
        err = h.decode_error(c.recv_type(h.T_WELCOME, 5))
        self.assertIsNotNone(err)
        self.assertIn('"packed" must be true or false', err["message"])


if __name__ == "__main__":
    main()
