#!/usr/bin/env python3
"""Hostile peers (issue 18, point 5): while one attacks, a good client's
one-at-a-time round trips (SUBMIT of one echo task, its RESULTS, ACK)
keep their p99 within a generous bound of the quiet p99, the master's
memory (VmRSS) and descriptors stay bounded, and nothing is lost.

Each attack runs in a process of its own (python3 this-file --attack
NAME ...), so it does not share the interpreter with the probe. Bounded:
every attack lasts a few seconds, on loopback only. The figures go to
stderr as "hostile NAME: ..." lines (the precise ones belong in the
issue's note; the assertions are generous on purpose: 2 shared cores,
sanitizer builds).

Existing coverage not repeated here: test_netdos.py (an idle flood past
the fd limit, a stalled handshake, a peer that stops answering, frame and
message caps), test_slow_client.py (a full peer queue loses nothing)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main  # noqa: E402
from test_netdos import idle_connections, open_fds as nfds  # noqa: E402

import zmq  # noqa: E402

SUBSCRIBE = 0x0001
PROBES = 200           # quiet round trips: about as many as during an attack
PACE_S = 0.02          # between probes, quiet and during alike (an idle gap
                       # makes the next round trip slower: unpaced quiet
                       # probes made the quiet p99 look better than it is)
# The bound during an attack: 3x the quiet p99 plus this much slack (the
# machine is shared), three times as much in a sanitizer build (several
# times slower).
SLACK_S = 0.5
# TQ_HOSTILE_ATTACKER=idle runs each attacker at SCHED_IDLE: it gets a
# core only when nothing else wants one, as if its CPU were on another
# machine, as a remote attacker's is (scripts/bench reports both). The
# kernel's share of the attack (loopback TCP) still runs on these cores.
ATTACKER_IDLE = os.environ.get("TQ_HOSTILE_ATTACKER") == "idle"


def attacker_priority():
    if ATTACKER_IDLE:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def sanitizer_slack_kb(pid):
    """Memory a sanitizer runtime adds to a process's VmRSS on its own:
    ASan keeps up to 256 MiB of freed memory in quarantine, and TSan's
    shadow grows with the heap. 0 in a plain build."""
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    return 320 * 1024 if ("libasan" in maps or "libtsan" in maps) else 0


def p99(samples):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


class Prober:
    """The good client: one echo task at a time, timed from SUBMIT to its
    RESULTS."""

    def __init__(self, endpoint, key):
        self.c = h.RawClient(endpoint, h.key_bytes_from_file(key))
        self.c.hello()
        self.req = 0

    def once(self, timeout=20.0):
        self.req += 1
        t0 = time.monotonic()
        self.c.send(h.msg_submit([({"fn": "echo"}, b"probe-%d" % self.req)], req=self.req,
                                 flags=SUBSCRIBE))
        tid = None
        seen = {}  # a result may come before the SUBMIT_ACK (gated on the journal)
        deadline = t0 + timeout
        beat = time.monotonic()
        while time.monotonic() < deadline:
            # a live client beats (the master forgets one silent for
            # --heartbeat-timeout: 1 s in the tests)
            if time.monotonic() - beat > 0.2:
                self.c.send([h.head(h.T_HEARTBEAT)])
                beat = time.monotonic()
            fr = self.c.recv(timeout=min(0.2, max(deadline - time.monotonic(), 0)))
            if fr is None:
                continue
            t = fr[0][3]
            if t == h.T_SUBMIT_ACK:
                tid = h.decode_submit_ack(fr)[1][0]
            elif t == h.T_RESULTS:
                for i, status, _a, data in h.decode_results(fr):
                    seen[i] = data
            if tid is not None and tid in seen:
                self.c.send(h.msg_ids(h.T_ACK, [tid], req=self.req))
                assert seen[tid] == b"probe-%d" % self.req, seen[tid]
                return time.monotonic() - t0
        raise AssertionError("probe %d: no result within %ss" % (self.req, timeout))

    def run(self, n=PROBES, pace=0.0, until=None):
        out = []
        while len(out) < n or (until is not None and time.monotonic() < until):
            out.append(self.once())
            if pace:
                time.sleep(pace)
        return out

    def close(self):
        self.c.close()


class Hostile(TQTestCase):
    def setUp(self):
        super().setUp()
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 8192 and hard >= 8192:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))

    def start_attack(self, *args):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--attack"] +
                             [str(a) for a in args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=h.clean_env(None), start_new_session=True,
                             preexec_fn=attacker_priority)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        line = p.stdout.readline().decode().strip()  # "started" once under way
        self.assertEqual(line, "started", p.stderr.read().decode()[-2000:] if not line else line)
        return p

    def measure(self, name, attack_args, settle=0.5, extra_check=None):
        """Quiet p99, then p99 while the attack runs, with the master's
        VmRSS and fds sampled; asserts the bounds; returns the figures."""
        m = self.master
        probe = Prober(self.endpoint, self.key)
        self.addCleanup(probe.close)
        probe.run(10)  # warm up
        quiet = probe.run(pace=PACE_S)
        rss0, fd0 = m.rss_kb(), nfds(m.pid)
        att = self.start_attack(*attack_args)
        time.sleep(settle)
        during, rss_max, fd_max = [], rss0, fd0
        while att.poll() is None:
            during.append(probe.once())
            rss_max = max(rss_max, m.rss_kb())
            fd_max = max(fd_max, nfds(m.pid))
            time.sleep(PACE_S)
        out, err = att.communicate()
        self.assertEqual(att.returncode, 0, err.decode()[-2000:])
        self.assertGreaterEqual(len(during), 20, "too few probes during the attack")
        q, d = p99(quiet), p99(during)
        figures = dict(name=name, quiet_p99_ms=round(q * 1000, 2), during_p99_ms=round(d * 1000, 2),
                       probes=len(during), rss_kb_before=rss0, rss_kb_max=rss_max,
                       fds_before=fd0, fds_max=fd_max,
                       attacker="idle" if ATTACKER_IDLE else "normal")
        sys.stderr.write("hostile %s: %s\n" % (name, json.dumps(figures)))
        figures["attack"] = out.decode().strip()  # what the attacker reports
        sanitized = sanitizer_slack_kb(m.pid) > 0
        self.assertLess(d, 3 * q + SLACK_S * (3 if sanitized else 1), figures)
        self.assertTrue(m.alive(), "the master died")
        figures["rss_slack_kb"] = sanitizer_slack_kb(m.pid)
        return figures

    def wait_fds_back(self, fd0, slack=16, timeout=20):
        h.wait_until(lambda: nfds(self.master.pid) <= fd0 + slack, timeout,
                     what="the master's descriptors to come back to %d" % fd0)

    def metric(self, port, name):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    # ---- the attacks ---------------------------------------------------------

    def test_handshake_flood_5000(self):
        """5,000 TCP connections that send half a ZMTP greeting and stop."""
        self.start_master("--handshake-timeout", "2")
        self.start_worker(concurrency=2)
        fd0 = nfds(self.master.pid)
        f = self.measure("handshake-flood", ["handshake", self.port, 5000])
        # capped: descriptors never beyond the connections a flood of 5000
        # can hold, and back to normal once they are cut
        self.assertLess(f["fds_max"], fd0 + 5000 + 64, f)
        self.assertLess(f["rss_kb_max"] - f["rss_kb_before"], 256 * 1024 + f["rss_slack_kb"], f)
        self.wait_fds_back(fd0)
        self.assertEqual(self.tq_ok("map", "--fn", "square", "4").out, "4 * 4 = 16\n")

    def test_wrong_key_1000_per_second(self):
        """Connections with a wrong key at 1,000 a second for 10 s."""
        mport = h.free_port()
        self.start_master("--metrics-listen", "127.0.0.1:%d" % mport)
        self.start_worker(concurrency=2)
        fd0 = nfds(self.master.pid)
        f = self.measure("wrong-key", ["wrongkey", self.endpoint, 1000, 10])
        self.assertLess(f["rss_kb_max"] - f["rss_kb_before"], 128 * 1024 + f["rss_slack_kb"], f)
        self.wait_fds_back(fd0)
        failures = self.metric(mport, "taskq_auth_failures_total")
        self.assertGreater(failures, 1000, "the master counted %s failed handshakes" % failures)

    def test_client_that_submits_and_never_reads(self):
        """A client submits 300 tasks of 64 KiB with results pushed to it
        and reads nothing: its results wait in the master (bounded by
        --peer-queue-bytes), not in memory without end; a later reader
        gets every one of them."""
        self.start_master("--peer-queue-bytes", "1M")
        self.start_worker(concurrency=2)
        self.start_worker("--functions", "echo", fns=["bulk=cat"], concurrency=2)
        f = self.measure("submit-never-read", ["noread", self.endpoint, self.key, 300, 65536, 6])
        ids = [int(x) for x in f["attack"].split()]
        self.assertEqual(len(ids), 300)
        # 300 x 64 KiB payloads and as many results are stored: about
        # 40 MB; the master must not hold much more than that
        self.assertLess(f["rss_kb_max"] - f["rss_kb_before"], 160 * 1024 + f["rss_slack_kb"], f)
        # nothing lost: every result is there for a client that reads
        r = self.tq_ok("wait", "--timeout", "60", *[str(i) for i in ids], timeout=90)
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 300)
        self.assertTrue(all(len(l) == 65536 for l in lines))

    def test_worker_that_takes_tasks_and_never_answers(self):
        """A worker with the key takes tasks of its function and never
        answers (but keeps its heartbeats): it holds what its credit allows,
        other work flows, and its tasks are run by a real worker once it
        is gone."""
        self.start_master("--lease-timeout", "3")
        self.start_worker(concurrency=2)
        ids = self.submit("--fn", "hole", *["t%d" % i for i in range(40)])
        f = self.measure("worker-never-answers", ["blackhole", self.endpoint, self.key, 8])
        self.assertGreater(int(f["attack"]), 0, "the hostile worker took nothing")
        self.assertLess(f["rss_kb_max"] - f["rss_kb_before"], 64 * 1024 + f["rss_slack_kb"], f)
        # nothing lost: a real worker for "hole" runs all 40
        self.start_worker(fns=["hole=cat"], concurrency=4)
        r = self.tq_ok("wait", "--timeout", "60", *ids, timeout=90)
        self.assertEqual(sorted(r.out.split()), sorted("t%d" % i for i in range(40)))

    def test_peers_that_trickle_bytes(self):
        """300 connections trickle a ZMTP greeting one byte at a time (one
        byte every 100 ms each): each is closed at --handshake-timeout, the
        master spends no descriptor on them for longer, and good peers are
        served."""
        self.start_master("--handshake-timeout", "1")
        self.start_worker(concurrency=2)
        fd0 = nfds(self.master.pid)
        f = self.measure("trickle", ["trickle", self.port, 300, 6])
        closed = int(f["attack"])
        self.assertGreaterEqual(closed, 290, f)  # cut by the master, not by us
        self.wait_fds_back(fd0)


# ---- attack processes --------------------------------------------------------

def attack_handshake(port, n):
    port, n = int(port), int(n)
    print("started", flush=True)
    socks = idle_connections(port, n, burst=100, pause=0.02)
    time.sleep(0.5)
    for s in socks:
        try:
            s.send(b"\xff" + b"\x00" * 8 + b"\x7f\x03")  # half a ZMTP greeting
        except OSError:
            pass
    time.sleep(3)  # past --handshake-timeout: the master cuts them
    print(len(socks))
    for s in socks:
        s.close()


def attack_wrongkey(endpoint, rate, seconds):
    rate, seconds = int(rate), float(seconds)
    ctx = zmq.Context(io_threads=2)
    ctx.setsockopt(zmq.MAX_SOCKETS, 4096)
    spub, _ssec, cpub, csec = h.derive_keys(b"a wrong key, not the master's 0123456789")
    live = []
    made = 0
    print("started", flush=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate)
        while made < due:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.CURVE_SERVERKEY, spub)
            s.setsockopt(zmq.CURVE_PUBLICKEY, cpub)
            s.setsockopt(zmq.CURVE_SECRETKEY, csec)
            s.setsockopt(zmq.RECONNECT_IVL, -1)
            s.connect(endpoint)
            live.append((time.monotonic(), s))
            made += 1
        now = time.monotonic()
        while live and now - live[0][0] > 0.3:  # long enough to attempt
            live.pop(0)[1].close(0)
        time.sleep(0.005)
    for _, s in live:
        s.close(0)
    ctx.term()
    print(made)


def attack_noread(endpoint, key, n, size, seconds):
    n, size, seconds = int(n), int(size), float(seconds)
    c = h.RawClient(endpoint, h.key_bytes_from_file(key),
                    sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)])
    c.hello()
    print("started", flush=True)
    # a queue and a worker of their own: the good client's tasks do not
    # wait behind these (that would measure the backlog, not the non-reader)
    batch = [({"fn": "bulk", "queue": "bulk"}, os.urandom(size // 2).hex().encode()[:size])
             for _ in range(50)]
    for b in range(n // 50):
        c.send(h.msg_submit(batch, req=b + 1, flags=SUBSCRIBE))
    # read only the SUBMIT_ACKs' worth at the end: until then nothing
    t0 = time.monotonic()
    beat = [h.head(h.T_HEARTBEAT)]
    while time.monotonic() - t0 < seconds:
        c.send(beat)
        time.sleep(0.2)
    ids = []
    deadline = time.monotonic() + 30
    while len(ids) < n and time.monotonic() < deadline:
        fr = c.recv(timeout=1)
        if fr is not None and fr[0][3] == h.T_SUBMIT_ACK:
            ids.extend(h.decode_submit_ack(fr)[1])
    c.close()
    print(" ".join(str(i) for i in ids))


def attack_blackhole(endpoint, key, seconds):
    seconds = float(seconds)
    c = h.RawClient(endpoint, h.key_bytes_from_file(key))
    c.send(h.msg_hello_worker(name="blackhole:1", slots=4, functions=("hole",)))
    if c.recv_type(h.T_WELCOME, 5) is None:
        sys.exit("no WELCOME")
    print("started", flush=True)
    taken = 0
    beat = [h.head(h.T_HEARTBEAT)]
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        c.send(beat)
        fr = c.recv(timeout=0.2)
        if fr is not None and fr[0][3] == h.T_DISPATCH:
            taken += len(fr) - 1 if len(fr) > 1 else 1
    c.close()
    print(taken)


def attack_trickle(port, n, seconds):
    port, n, seconds = int(port), int(n), float(seconds)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\x00") + \
        b"\x00" * 32
    socks = []
    print("started", flush=True)
    for i in range(n):
        if i and i % 50 == 0:
            time.sleep(0.02)
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass
    for s in socks:
        s.setblocking(False)
    closed = set()
    t0 = time.monotonic()
    pos = 0
    while time.monotonic() - t0 < seconds:
        for k, s in enumerate(socks):
            if k in closed:
                continue
            try:
                s.send(greeting[pos % len(greeting):pos % len(greeting) + 1])
                d = s.recv(4096)
                if d == b"":
                    closed.add(k)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(k)
        pos += 1
        time.sleep(0.1)
    for s in socks:
        s.close()
    print(len(closed))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--attack":
        globals()["attack_" + sys.argv[2]](*sys.argv[3:])
    else:
        main()
