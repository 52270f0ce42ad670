#!/usr/bin/python3
"""tunrelay - a userspace netem: a point-to-point IP link between two
network namespaces made of two TUN devices and this relay, which forwards
every packet after a fixed delay and drops a seeded random fraction.

Used by test_multihost.py when the kernel has no sch_netem (`tc qdisc add
... netem` fails with "Specified qdisc kind is unknown").

    tunrelay.py --seed S --delay-ms 50 --loss 0.02 \\
        NS_A:DEV_A:NS_B:DEV_B [...more pairs]

For each pair it opens /dev/net/tun twice, once inside each namespace
(setns(2) on /run/netns/NS before the open: a TUN device is created in the
namespace of the process that opens it), as IFF_TUN|IFF_NO_PI devices.
Addresses are the caller's business (`ip -n NS addr add A peer B dev DEV`).
It prints `ready` on stdout once every device exists, then relays both
directions until SIGTERM/SIGINT or until stdin closes (the test process
died); the devices vanish with it (they are not persistent). At exit it
prints one line of counters on stderr. Standard library only.
"""

import argparse
import collections
import ctypes
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536
# Packets read from one device per wake-up (fairness between devices).
READ_BURST = 64
# Packets waiting in one direction; beyond that the newest are dropped
# (a real queue has a limit too; netem's default is 1000).
QUEUE_LIMIT = 10000

libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


def open_tun(ns, dev):
    setns("/run/netns/%s" % ns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("pairs", nargs="+", help="NS_A:DEV_A:NS_B:DEV_B")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    delay = a.delay_ms / 1000.0

    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    peer = {}  # fd -> fd it forwards to
    for spec in a.pairs:
        ns_a, dev_a, ns_b, dev_b = spec.split(":")
        fa = open_tun(ns_a, dev_a)
        fb = open_tun(ns_b, dev_b)
        peer[fa], peer[fb] = fb, fa
    if libc.setns(home, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns back home")
    os.close(home)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    queues = {fd: collections.deque() for fd in peer}  # by output fd: (due, pkt)
    stats = collections.Counter()
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    stdin_fd = sys.stdin.fileno()
    rfds = list(peer) + [stdin_fd]
    while not stop:
        now = time.monotonic()
        for out_fd, q in queues.items():
            while q and q[0][0] <= now:
                _, pkt = q.popleft()
                try:
                    os.write(out_fd, pkt)
                    stats["sent"] += 1
                except OSError:
                    stats["write_errors"] += 1
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - time.monotonic()) if due else 0.5
        try:
            ready, _, _ = select.select(rfds, [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            if fd == stdin_fd:
                if not os.read(stdin_fd, 4096):
                    stop.append(1)
                continue
            for _ in range(READ_BURST):
                try:
                    pkt = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                except OSError:
                    stats["read_errors"] += 1
                    break
                stats["received"] += 1
                if rng.random() < a.loss:
                    stats["dropped"] += 1
                    continue
                q = queues[peer[fd]]
                if len(q) >= QUEUE_LIMIT:
                    stats["overflow"] += 1
                    continue
                q.append((now + delay, pkt))
    sys.stderr.write("tunrelay: seed=%d %s\n" % (a.seed, " ".join(
        "%s=%d" % kv for kv in sorted(stats.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
