"""A client that reads slowly loses none of its results or replies.

The master queues at most --peer-queue messages for one peer; when a
subscribed client's queue is full, the outcomes not yet sent must stay
pending and go out later (a subscribed client never asks again)."""

import json
import os
import struct
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main  # noqa: E402

SUBSCRIBE = 0x0001
TASKS_PER_BATCH = 100
BATCHES = 3
PAYLOAD = 32 * 1024


class SlowClient(TQTestCase):
    def test_results_survive_a_full_peer_queue(self):
        self.start_master("--peer-queue", "2", hb=False)
        self.start_worker(concurrency=4)
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key),
                        sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)])
        self.addCleanup(c.close)
        c.hello()
        sent = {}
        for b in range(BATCHES):
            tasks = []
            for i in range(TASKS_PER_BATCH):
                n = b * TASKS_PER_BATCH + i
                tasks.append(({"fn": "echo"}, b"%06d" % n + b"x" * (PAYLOAD - 6)))
            c.send(h.msg_submit(tasks, req=b + 1, flags=SUBSCRIBE))
            sent[b + 1] = tasks
        # Read nothing while every task runs: the master's queue to us
        # fills. Keep sending heartbeats (the master's timeout is 1 s here)
        # so that we stay a live, registered client.
        beat = [h.head(h.T_HEARTBEAT)]
        for _ in range(15):
            c.send(beat)
            time.sleep(0.2)
        ids, outcomes = [], {}
        deadline = time.monotonic() + 30
        while (len(ids) < BATCHES * TASKS_PER_BATCH or len(outcomes) < len(ids)) and \
                time.monotonic() < deadline:
            c.send(beat)
            fr = c.recv(timeout=0.2)
            if fr is None:
                continue
            t = fr[0][3]
            if t == h.T_SUBMIT_ACK:
                ids.extend(h.decode_submit_ack(fr)[1])
            elif t == h.T_RESULTS:
                for i, status, _attempts, data in h.decode_results(fr):
                    self.assertNotIn(i, outcomes, "outcome %d delivered twice" % i)
                    outcomes[i] = (status, data)
            else:
                self.fail("unexpected message %r" % fr[0][:80])
        self.assertEqual(len(ids), BATCHES * TASKS_PER_BATCH)
        self.assertEqual(sorted(outcomes), sorted(ids),
                         "%d of %d outcomes arrived" % (len(outcomes), len(ids)))
        for n, i in enumerate(ids):
            status, data = outcomes[i]
            self.assertEqual(status, 1)  # done
            self.assertEqual(data[:6], b"%06d" % n)
            self.assertEqual(len(data), PAYLOAD)


    def test_acks_survive_a_full_peer_queue(self):
        """SUBMIT_ACKs (and every other one-frame reply) are deferred, not
        dropped, when the client's queue is full: a lost ack would leave
        the client waiting for it forever."""
        # Default heartbeats (5 s timeout), not the harness's fast 1 s: this
        # test is about queues, and on a loaded CI machine a 1 s silence
        # of this Python client is not a fault of the master.
        self.start_master("--peer-queue", "2", hb=False)
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key),
                        sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)])
        self.addCleanup(c.close)
        c.hello()
        n = 3000
        beat = [h.head(h.T_HEARTBEAT)]
        for req in range(1, n + 1):
            c.send(h.msg_submit([({"fn": "echo"}, b"p%d" % req)], req=req))
            if req % 500 == 0:
                c.send(beat)
        for _ in range(10):  # read nothing for a while, stay alive
            c.send(beat)
            time.sleep(0.2)
        acked = {}
        deadline = time.monotonic() + 30
        while len(acked) < n and time.monotonic() < deadline:
            c.send(beat)
            fr = c.recv(timeout=0.2)
            if fr is None:
                continue
            self.assertEqual(fr[0][3], h.T_SUBMIT_ACK, fr[0][:80])
            req, ids = h.decode_submit_ack(fr)
            self.assertNotIn(req, acked, "SUBMIT %d acknowledged twice" % req)
            acked[req] = ids
        self.assertEqual(sorted(acked), list(range(1, n + 1)),
                         "%d of %d SUBMITs acknowledged" % (len(acked), n))
        self.assertEqual(self.status()["totals"]["submitted"], n)

    def test_submit_from_fast_stdin(self):
        """A producer faster than the master's replies (this hung once:
        thousands of 1-task SUBMITs, and a dropped ack)."""
        self.start_master("--peer-queue", "2")
        n = 50000
        data = "".join("%d\n" % i for i in range(n))
        r = self.tq_ok("submit", "--fn", "echo", "-", input=data, timeout=120)
        ids = r.out.split()
        self.assertEqual(len(ids), n)
        self.assertEqual(len(set(ids)), n)
        self.assertEqual(self.status()["totals"]["submitted"], n)

class SlowWorker(TQTestCase):
    def test_dispatches_to_a_full_worker_queue_wait_in_order(self):
        """A worker that reads nothing for a while: DISPATCHes that do not
        fit its queue wait in the master, in order (issue 13: they used to
        be leased, then undone with a REQUEUE record). Once it reads, it
        gets every task exactly once, at attempt 1, with its payload whole,
        and its results are taken."""
        self.start_master("--peer-queue", "2", "--log-level", "debug", hb=False)
        ntasks, size = 96, 256 * 1024  # 16 per DISPATCH (4 MiB): 6 messages
        w = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key),
                        sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)])
        self.addCleanup(w.close)
        hello = {"role": "worker", "name": "slowworker:1", "slots": ntasks,
                 "functions": ["echo"]}
        w.send([h.head(h.T_HELLO) + json.dumps(hello).encode()])
        self.assertIsNotNone(w.recv_type(h.T_WELCOME, 10), "no WELCOME")
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        tasks = [({"fn": "echo"}, b"%06d" % n + b"y" * (size - 6)) for n in range(ntasks)]
        c.send(h.msg_submit(tasks, req=1, flags=SUBSCRIBE))
        ack = c.recv_type(h.T_SUBMIT_ACK, 10)
        self.assertIsNotNone(ack, "no SUBMIT_ACK")
        ids = h.decode_submit_ack(ack)[1]
        beat = [h.head(h.T_HEARTBEAT)]
        for _ in range(10):  # read nothing for 2 s
            w.send(beat)
            time.sleep(0.2)
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < ntasks and time.monotonic() < deadline:
            w.send(beat)
            fr = w.recv(timeout=0.2)
            if fr is None or fr[0][3] != h.T_DISPATCH:
                continue
            (count,) = struct.unpack_from("<H", fr[0], 4)
            off = 6
            for k in range(count):
                i, a, _t = struct.unpack_from("<QII", fr[0], off)
                off += 16
                off += 1 + fr[0][off]
                self.assertNotIn(i, got, "task %d dispatched twice" % i)
                got[i] = (a, fr[1 + k])
        self.assertEqual(sorted(got), sorted(ids), "%d of %d tasks arrived" % (len(got), ntasks))
        for n, i in enumerate(ids):
            a, payload = got[i]
            self.assertEqual(a, 1, "task %d at attempt %d" % (i, a))
            self.assertEqual(len(payload), size)
            self.assertEqual(payload[:6], b"%06d" % n)
        items = [(i, 1, 0, b"r%d" % i) for i in ids]
        for k in range(0, ntasks, 32):
            w.send(h.msg_result(items[k:k + 32], credit=32))
        outcomes = {}
        deadline = time.monotonic() + 30
        while len(outcomes) < ntasks and time.monotonic() < deadline:
            w.send(beat)
            fr = c.recv(timeout=0.2)
            if fr is not None and fr[0][3] == h.T_RESULTS:
                for i, status, attempts, data in h.decode_results(fr):
                    outcomes[i] = (status, attempts, data)
        self.assertEqual(sorted(outcomes), sorted(ids))
        for i in ids:
            self.assertEqual(outcomes[i], (1, 1, b"r%d" % i))
        # the path under test was taken
        self.assertIn("a DISPATCH of", self.master.output())


if __name__ == "__main__":
    main()
