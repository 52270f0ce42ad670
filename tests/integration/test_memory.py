"""What one peer with the key can make the master hold (issue 12, 6a/6c).

- A WAIT naming one id many times is answered once.
- Outcomes sent to a client that does not read are bounded in bytes
  (--peer-queue-bytes): the rest wait in the master as task ids, and go
  out once the client ACKs what it read.
"""

import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main  # noqa: E402

MIB = 1024 * 1024
T_ACK = 0x16


def raw_client(tc, **kw):
    # A client that reads nothing must not buffer on its own side either:
    # one message in its queue, a small kernel buffer.
    c = h.RawClient(tc.endpoint, h.key_bytes_from_file(tc.key),
                    sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 65536)], **kw)
    tc.addCleanup(c.close)
    c.hello()
    return c


def submit_one(tc, c, payload, req=1, queue=""):
    c.send(h.msg_submit([({"fn": "echo", "queue": queue}, payload)], req=req))
    fr = c.recv_type(h.T_SUBMIT_ACK, timeout=10)
    tc.assertIsNotNone(fr, "no SUBMIT_ACK")
    tc.assertIsNone(h.decode_error(fr), fr[0][:200])
    return h.decode_submit_ack(fr)[1][0]


def wait_done(tc, tid, timeout=30):
    r = tc.tq("wait", "--timeout", str(timeout), str(tid), timeout=timeout + 30)
    tc.assertEqual(r.rc, 0, r)
    return r


class WaitDedup(TQTestCase):
    def test_one_wait_naming_an_id_1024_times_is_answered_once(self):
        self.start_master()
        self.start_worker(concurrency=1)
        c = raw_client(self)
        tid = submit_one(self, c, b"small result")
        wait_done(self, tid)
        c.send(h.msg_ids(h.T_WAIT, [tid] * 1024, req=7))
        got = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            fr = c.recv(timeout=0.3)
            if fr is None:
                continue
            self.assertEqual(fr[0][3], h.T_RESULTS, fr[0][:100])
            got.extend(h.decode_results(fr))
        self.assertEqual([g[0] for g in got], [tid],
                         "a WAIT naming one id 1024 times got %d outcomes" % len(got))


class PeerQueueBytes(TQTestCase):
    WAITS = 150

    def test_a_client_that_does_not_read_holds_bounded_bytes(self):
        self.start_master("--peer-queue-bytes", "4M", "--max-payload", "2M", hb=False)
        self.start_worker(concurrency=1)
        c = raw_client(self)
        big = submit_one(self, c, b"r" * MIB)
        wait_done(self, big)
        time.sleep(0.5)
        before = self.master.rss_kb()
        # Each WAIT names the finished 1 MiB task once: without a byte
        # bound, every answer is a 1 MiB RESULTS in ZeroMQ's queue.
        for i in range(self.WAITS):
            c.send(h.msg_ids(h.T_WAIT, [big], req=100 + i))
        beat = [h.head(h.T_HEARTBEAT)]
        peak = before
        for _ in range(10):
            c.send(beat)
            time.sleep(0.2)
            peak = max(peak, self.master.rss_kb())
        grown_mib = (peak - before) / 1024.0
        # A well-behaved client is served meanwhile.
        small = self.submit("--fn", "echo", "still served")[0]
        r = wait_done(self, small)
        self.assertIn("still served", r.out)
        self.assertLess(grown_mib, 64,
                        "master RSS grew %.0f MiB for %d WAITs of a 1 MiB result that "
                        "the client did not read (--peer-queue-bytes 4M)"
                        % (grown_mib, self.WAITS))
        # Now read, ACKing what arrives: every answer comes, none is lost.
        got = 0
        deadline = time.monotonic() + 60
        while got < self.WAITS and time.monotonic() < deadline:
            fr = c.recv(timeout=0.5)
            if fr is None:
                c.send(beat)
                continue
            if fr[0][3] != h.T_RESULTS:
                continue
            res = h.decode_results(fr)
            for i, status, _a, data in res:
                self.assertEqual((i, status, len(data)), (big, 1, MIB))
            got += len(res)
            c.send(h.msg_ids(T_ACK, [r[0] for r in res], req=1))
        self.assertEqual(got, self.WAITS, "outcomes after reading and ACKing")


if __name__ == "__main__":
    main()
