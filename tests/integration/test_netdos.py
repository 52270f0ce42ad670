"""Denial of service on the master's port (issue 12, points 5 and 6b).

Point 5, without the key: a flood of idle TCP connections must not use up
the master's file descriptors (after which libzmq's I/O thread spins on a
listener it cannot accept from, nobody can connect and the journal cannot
open its next segment). The master caps its connections, refuses the
excess, closes connections that never finish the CURVE handshake, and
keeps serving a client and a worker with the key throughout.

Point 6(b), with the key: what one message may make the master buffer.
ZMQ_MAXMSGSIZE follows --max-payload (a frame larger than a message may be
is refused by libzmq as it arrives), and a message with too many frames is
answered with ERROR 5 without the master keeping its frames.

Floods go to loopback only and stay small (a few hundred sockets)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main  # noqa: E402

PRLIMIT = shutil.which("prlimit")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kb(pid):
    """VmHWM: the most resident memory the process ever had."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def established(port):
    """Established TCP connections whose local port is port (the master's
    side of its peers' connections), from /proc/net/tcp and tcp6: unlike
    a count of the master's descriptors, journal files opening and
    closing meanwhile do not change it."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except FileNotFoundError:
            pass
    return n


def is_closed(s):
    """1 if the master closed (or reset) this connection. Reads what the
    master sent (its ZMTP greeting) to see the end behind it."""
    while True:
        try:
            d = s.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError:
            return 1
        if d == b"":
            return 1


def idle_connections(port, n, burst=50, pause=0.05):
    """n idle TCP connections to port, opened in bursts of 50 (a larger
    burst overflows the kernel's accept queue: those connections look
    open to us until the kernel retries them, whatever the master does).
    Non-blocking sockets; the caller closes them."""
    socks = []
    for i in range(n):
        if i and i % burst == 0:
            time.sleep(pause)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


class ConnectionFlood(TQTestCase):
    def start_limited_master(self, nofile, *extra):
        """The master with soft and hard RLIMIT_NOFILE = nofile."""
        if not PRLIMIT:
            self.skipTest("prlimit(1) not found (util-linux)")
        argv = [PRLIMIT, "--nofile=%d:%d" % (nofile, nofile), "--", h.MASTER_BIN,
                "--bind", self.endpoint, "--data-dir", self.data_dir,
                "--authkey-file", self.key] + h.HB_FLAGS + list(extra)
        m = self.start("master", argv)
        self.master = m
        self.wait_master_ready(m)
        return m

    def flood(self, n):
        socks = idle_connections(self.port, n)
        self.addCleanup(lambda: [s.close() for s in socks])
        return socks

    def test_idle_flood_is_capped_and_good_clients_are_served(self):
        m = self.start_limited_master(160)
        self.start_worker(concurrency=2)
        log0 = m.output()
        socks = self.flood(400)
        time.sleep(0.5)
        # (b) the master does not spin on a listener it cannot accept from
        c0 = cpu_seconds(m.pid)
        time.sleep(2.0)
        used = cpu_seconds(m.pid) - c0
        self.assertLess(used, 0.5, "master used %.2f s of CPU in 2 s during the flood" % used)
        # (c) the excess was refused: the master keeps within its fd limit
        closed = sum(is_closed(s) for s in socks)
        self.assertGreater(closed, 400 - 160, "only %d of 400 flood connections closed" % closed)
        self.assertLess(open_fds(m.pid), 160)
        # (a) a client and a worker with the key are served during the flood
        r = self.tq_ok("map", "--fn", "square", "1", "2", "3", timeout=30)
        self.assertEqual(r.out, "1 * 1 = 1\n2 * 2 = 4\n3 * 3 = 9\n")
        ids = self.submit("--fn", "echo", "during-flood", timeout=30)
        r = self.tq_ok("wait", "--timeout", "20", *ids, timeout=30)
        self.assertEqual(r.out, "during-flood\n")
        self.assertRegex(log0, r"file descriptors: 160 ")
        self.assertRegex(log0, r"max-connections 96 ")
        # (d) the log says so in a summary line, not one line per connection
        h.wait_until(lambda: "closed over --max-connections" in m.output()[len(log0):], 8,
                     what="a summary of the refused connections in the log")
        new = m.output()[len(log0):]
        self.assertLess(len(new.splitlines()), 40, new[-4000:])
        # the worker, which talks, was never the connection cut
        self.assertNotIn("lost", new)
        # the journal can still open files: a submit is acknowledged
        self.submit("--fn", "echo", "after-flood", timeout=30)

    def test_max_connections_flag(self):
        m = self.start_limited_master(1024, "--max-connections", "20", "--handshake-timeout", "5")
        self.assertIn("max-connections 20", m.output())
        w = self.start_worker(concurrency=1)
        socks = self.flood(60)
        time.sleep(1.0)
        closed = sum(is_closed(s) for s in socks)
        self.assertGreaterEqual(closed, 60 - 20, "only %d of 60 closed with a cap of 20" % closed)
        r = self.tq_ok("map", "--fn", "square", "7", timeout=30)
        self.assertEqual(r.out, "7 * 7 = 49\n")
        self.assertTrue(w.alive())
        self.assertNotIn("lost", m.output())

    def test_handshake_that_stalls_is_closed(self):
        m = self.start_limited_master(1024, "--handshake-timeout", "1")
        log0 = m.output()
        fd0 = open_fds(m.pid)
        # silent connections, and one that sends half a ZMTP greeting
        socks = self.flood(100)
        b = socket.create_connection(("127.0.0.1", self.port))
        b.sendall(b"\xff" + b"\x00" * 8 + b"\x7f\x03")
        self.addCleanup(b.close)
        t0 = time.monotonic()
        b.settimeout(10)
        try:
            while b.recv(4096):
                pass
        except OSError:
            pass
        self.assertLess(time.monotonic() - t0, 8)
        h.wait_until(lambda: sum(is_closed(s) for s in socks) == len(socks), 10,
                     what="every silent connection to be closed")
        h.wait_until(lambda: open_fds(m.pid) <= fd0 + 2, 5,
                     what="the master to close their descriptors")
        # one summary line for them all, not one line per connection
        h.wait_until(lambda: "closed before finishing the handshake" in m.output()[len(log0):],
                     8, what="the summary line")
        def counted():
            return sum(int(n) for n in re.findall(
                r"(\d+) closed before finishing the handshake \(limit 1 s\)",
                m.output()[len(log0):]))
        h.wait_until(lambda: counted() >= 101, 8, what="all 101 connections counted")
        new = m.output()[len(log0):]
        self.assertLess(len(new.splitlines()), 5, new)
        self.assertEqual(counted(), 101, new)

    def test_peer_that_stops_answering_is_closed(self):
        """After the handshake, ZMTP heartbeats: a peer process that stops
        (SIGSTOP: its libzmq answers no PING, its TCP stays up) loses its
        connection after three heartbeat timeouts (3 s here), so it does not
        keep a descriptor in the master for ever."""
        self.start_master()
        code = ("import sys, time; sys.path.insert(0, %r); import tqharness as h; "
                "c = h.RawClient(%r, h.key_bytes_from_file(%r)); c.hello(); "
                "print('ready', flush=True); time.sleep(60)"
                % (os.path.dirname(os.path.abspath(__file__)), self.endpoint, self.key))
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             env=h.clean_env(None))
        self.addCleanup(lambda: (p.kill(), p.wait(), p.stdout.close()))
        self.assertEqual(p.stdout.readline().strip(), b"ready")
        port = int(self.endpoint.rsplit(":", 1)[1])
        h.wait_until(lambda: established(port) == 1, 5, what="the peer's connection")
        os.kill(p.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(p.pid, signal.SIGCONT))
        h.wait_until(lambda: established(port) == 0, 10,
                     what="the master to close the stopped peer's connection")

    def test_limits_are_logged_and_flag_is_checked(self):
        r = self.run_prog([h.MASTER_BIN, "--data-dir", self.data_dir, "--max-connections", "0"])
        self.assertEqual(r.rc, h.EXIT_USAGE, r)
        if PRLIMIT:
            r = self.run_prog([PRLIMIT, "--nofile=50:50", "--", h.MASTER_BIN,
                               "--data-dir", self.data_dir, "--bind", self.endpoint])
            self.assertEqual(r.rc, h.EXIT_ENV, r)
            self.assertIn("the file descriptor limit (50, ulimit -n) is too low", r.err)
            self.assertFalse(os.path.exists(self.data_dir))
        m = self.start_limited_master(1024)
        out = m.output()
        self.assertRegex(out, r"file descriptors: \d+ \(soft limit")
        self.assertRegex(out, r"max-connections \d+")

    def test_io_threads(self):
        # two ZeroMQ I/O threads by default, N with --io-threads N
        # (docs/master.md: a handshake flood is then shared between them)
        def io_threads(pid):
            names = []
            for tid in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    names.append(f.read().strip())
            return sorted(n for n in names if n.startswith("ZMQbg/IO/"))
        m = self.start_master()
        self.assertEqual(io_threads(m.pid), ["ZMQbg/IO/0", "ZMQbg/IO/1"])
        self.assertEqual(self.tq_ok("status").rc, 0)
        m.stop()
        m = self.start_master("--io-threads", "3")
        self.assertEqual(io_threads(m.pid), ["ZMQbg/IO/0", "ZMQbg/IO/1", "ZMQbg/IO/2"])
        self.start_worker(concurrency=1)
        self.assertEqual(self.tq_ok("map", "--fn", "square", "3").out, "3 * 3 = 9\n")
        for bad in ("0", "65", "two"):
            r = self.run_prog([h.MASTER_BIN, "--data-dir", self.data_dir, "--io-threads", bad])
            self.assertEqual(r.rc, h.EXIT_USAGE, r)
            self.assertIn("--io-threads", r.err)


class MessageBounds(TQTestCase):
    """Point 6(b): what one message from a peer with the key may hold."""

    def test_big_frames_over_max_payload_do_not_grow_the_master(self):
        m = self.start_master("--max-payload", "4K")
        rss0 = peak_rss_kb(m.pid)
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key),
                        sockopts=((h.zmq.SNDHWM, 0),))
        self.addCleanup(c.close)
        c.hello()
        big = b"\x00" * (64 << 20)
        f0 = h.msg_submit([({"fn": "echo"}, b"")])[0]
        c.send([f0, big, big, big, big])
        time.sleep(3)
        rss1 = peak_rss_kb(m.pid)
        self.assertLess(rss1 - rss0, 48 * 1024,
                        "master peak RSS grew from %d to %d KiB on four 64 MiB frames "
                        "with --max-payload 4K" % (rss0, rss1))
        # the master still serves others
        self.assertTrue(m.alive())
        self.tq_ok("status")

    def test_many_frames_get_an_error(self):
        m = self.start_master()
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        rss0 = peak_rss_kb(m.pid)
        f0 = h.msg_submit([({"fn": "echo"}, b"")])[0]
        c.send([f0] + [b"x" * 1000] * 20000)
        fr = c.recv_type(h.T_ERROR, timeout=20)
        self.assertIsNotNone(fr, "no answer to a message of 20,001 frames")
        e = h.decode_error(fr)
        self.assertEqual(e["code"], 5, e)
        self.assertIn("frames", e["message"])
        rss1 = peak_rss_kb(m.pid)
        self.assertLess(rss1 - rss0, 64 * 1024, "peak RSS %d -> %d KiB" % (rss0, rss1))
        self.tq_ok("status")

    def test_message_over_its_byte_cap_gets_an_error(self):
        # With --max-payload 4K a message may carry 4K + 5 MiB: each 3 MiB
        # frame passes ZMQ_MAXMSGSIZE, their sum does not, and the master
        # lets go of them as it reads them.
        m = self.start_master("--max-payload", "4K")
        c = h.RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        self.addCleanup(c.close)
        c.hello()
        recs = [({"fn": "echo"}, b"y" * (3 << 20)) for _ in range(3)]
        c.send(h.msg_submit(recs))
        fr = c.recv_type(h.T_ERROR, timeout=20)
        self.assertIsNotNone(fr, "no answer to a 9 MiB SUBMIT")
        e = h.decode_error(fr)
        self.assertEqual(e["code"], 4, e)
        self.assertIn("SUBMIT message carries more than", e["message"])
        self.assertTrue(m.alive())
        # a message within the cap is still served
        c.send(h.msg_submit([({"fn": "echo"}, b"fine")], req=2))
        fr = c.recv_type(h.T_SUBMIT_ACK, timeout=10)
        self.assertIsNotNone(fr)
        self.assertEqual(fr[0][3], h.T_SUBMIT_ACK, h.decode_error(fr))


if __name__ == "__main__":
    main()
