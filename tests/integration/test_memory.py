"""What one peer with the key can make the master hold (issue 12, 6a/6c).

- A WAIT naming one id many times is answered once.
- Outcomes sent to a client that does not read are bounded in bytes
  (--peer-queue-bytes): the rest wait in the master as task ids, and go
  out once the client ACKs what it read.
- Queue and function names nothing uses any more are freed (65,536
  distinct names no longer lock out new queues and workers until a
  restart), and one connection may create only so many new names.
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


class NameTable(TQTestCase):
    """65,536 distinct names used to fill the master's name table until a
    restart; now names nothing uses are freed, and one connection may
    create only so many."""

    TABLE = 65536

    def submit_queues(self, c, names, req):
        """SUBMIT one task of fn nofn (no worker has it) per queue name;
        returns (ids, error dict or None)."""
        c.send(h.msg_submit([({"fn": "nofn", "queue": q}, b"") for q in names], req=req))
        fr = c.recv_type(h.T_SUBMIT_ACK, timeout=30)
        self.assertIsNotNone(fr, "no answer to SUBMIT")
        err = h.decode_error(fr)
        return ([] if err else h.decode_submit_ack(fr)[1]), err

    def test_names_nothing_uses_are_freed(self):
        # The raw clients here send no HEARTBEAT while they wait for an
        # ack; on a loaded machine (the ASan build, CI) an ack can wait
        # over a second for the journal (a segment is started only once
        # the one before is durable), and a peer silent for the
        # harness's 1 s would be forgotten with the ack it is owed.
        self.start_master("--unfetched-ttl", "0", "--result-ttl", "0",
                          "--heartbeat-interval", "1", "--heartbeat-timeout", "60", hb=False)
        ids, n, full = [], 0, None
        # Fill the table, 1,000 new names per connection.
        for conn in range(80):
            c = raw_client(self)
            names = ["q%05d" % i for i in range(n, n + 1000)]
            got, err = self.submit_queues(c, names, req=conn + 1)
            c.close()
            if err:
                full = err
                break
            ids.extend(got)
            n += 1000
        self.assertIsNotNone(full, "the name table never filled")
        self.assertEqual(full["code"], h.E_TOO_MANY, full)
        self.assertIn("name", full["message"])
        # Cancel every task: nothing uses those queues any more once the
        # cancelled tasks expire (--unfetched-ttl 0).
        c = raw_client(self)
        for i in range(0, len(ids), 1024):
            c.send(h.msg_ids(h.T_CANCEL, ids[i:i + 1024], req=i + 1))
            self.assertIsNotNone(c.recv_type(h.T_CANCEL_ACK, timeout=30))

        def new_queue_ok():
            _ids, err = self.submit_queues(raw_client(self), ["fresh-queue"], req=9)
            return err is None
        h.wait_until(new_queue_ok, 30, interval=0.5,
                     what="a new queue to be accepted after the old ones were emptied")
        self.start_worker(fns=["fresh-fn=cat"])
        h.wait_until(lambda: self.status()["totals"]["names"] < 100, 30, interval=0.5,
                     what="the unused names to be freed")

    def test_one_connection_cannot_create_a_flood_of_names(self):
        self.start_master()
        c = raw_client(self)
        t0 = time.monotonic()
        created, refused = 0, None
        for b in range(20):
            names = ["flood%06d" % i for i in range(created, created + 500)]
            _ids, err = self.submit_queues(c, names, req=b + 1)
            if err:
                refused = err
                break
            created += 500
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(refused, "%d new names from one connection were all accepted"
                             % created)
        self.assertEqual(refused["code"], h.E_TOO_MANY, refused)
        self.assertIn("new queue and function names from this connection", refused["message"])
        self.assertLessEqual(created, 1024 + 100 * (elapsed + 1))
        # That connection still works with names it made, and others are served.
        _ids, err = self.submit_queues(c, ["flood000001"], req=99)
        self.assertIsNone(err, err)
        other = self.submit("--queue", "another-queue", "--fn", "echo", "x")
        self.assertTrue(other)

    def test_a_worker_saying_hello_again_does_not_reset_its_budget(self):
        self.start_master()
        w = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(w.close)
        refused = None
        for n in range(12):
            fns = ["fn%d_%d" % (n, i) for i in range(256)]
            w.send(h.msg_hello_worker(name="w:%d" % n, functions=fns))
            fr = w.recv_type(h.T_WELCOME, timeout=10)
            self.assertIsNotNone(fr, "no answer to HELLO")
            refused = h.decode_error(fr)
            if refused:
                break
        self.assertIsNotNone(refused, "12 HELLOs of 256 new functions each were all accepted")
        self.assertEqual(refused["code"], h.E_TOO_MANY, refused)
        self.assertIn("new queue and function names", refused["message"])
        self.assertLessEqual(n, 6)


if __name__ == "__main__":
    main()
