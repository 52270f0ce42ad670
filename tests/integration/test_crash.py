"""kill -9 the master at ten random moments of a 100,000-task `taskq map`
with two workers, restarting it each time: every result is printed exactly
once and is correct. Once with --fsync always, once with interval."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, main, CLIENT_BIN, clean_env, read_text  # noqa: E402

N = 100000
KILLS = 10


class Crash(TQTestCase):
    def crash_map(self, mode):
        seed = int(os.environ.get("TQ_SEED", time.time_ns() % 1000000))
        rng = random.Random(seed)
        sys.stderr.write("\n  %s: seed %d (TQ_SEED=%d reproduces the kill times)\n" %
                         (mode, seed, seed))
        m = self.start_master("--fsync", mode)
        self.start_worker(concurrency=1)
        self.start_worker(concurrency=1)
        inp = "".join("%d\n" % i for i in range(1, N + 1)).encode()
        out_path = os.path.join(self.tmp, "map.out")
        err_path = os.path.join(self.tmp, "map.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen([CLIENT_BIN, "--connect", self.endpoint, "--authkey-file",
                                  self.key, "map", "--fn", "square", "-"],
                                 stdin=subprocess.PIPE, stdout=out, stderr=err,
                                 env=clean_env(), start_new_session=True)
            self.addCleanup(lambda: p.poll() is None and p.kill())
            # feed stdin from a thread: map reads its input as it goes.
            # Paced (at least 2 s in all), so the map outlasts the ten
            # kills however fast the workers are (adaptive prefetch made
            # the default workers about ten times faster).

            # The last step of the input waits for the tenth kill: the
            # marks stop at 95 % of the output, and a client that prints
            # in bursts (a whole window once the master is back) could
            # otherwise finish between the last mark and its kill.
            all_killed = threading.Event()
            self.addCleanup(all_killed.set)

            def feed():
                step = len(inp) // 200 + 1
                for off in range(0, len(inp), step):
                    if off + step >= len(inp):
                        all_killed.wait(300)
                    p.stdin.write(inp[off:off + step])
                    p.stdin.flush()
                    time.sleep(0.01)
                p.stdin.close()
            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            # ten random moments: when this many results have been printed
            marks = sorted(rng.sample(range(N // 100, N * 95 // 100), KILLS))
            kills = []
            for k, mark in enumerate(marks):
                while p.poll() is None and os.path.getsize(out_path) < mark * 20:
                    time.sleep(0.01)
                if p.poll() is not None:
                    break
                time.sleep(rng.uniform(0, 0.05))
                done = sum(1 for _ in open(out_path, "rb"))
                m.signal(signal.SIGKILL)
                m.wait(10)
                kills.append(done)
                m = self.start_master("--fsync", mode, name="master-%d" % (k + 2))
            all_killed.set()
            rc = p.wait(600)
            feeder.join(10)
        out = read_text(out_path)
        err = read_text(err_path)
        sys.stderr.write("  %s: killed at %s results printed; rc %s\n" % (mode, kills, rc))
        self.assertEqual(len(kills), KILLS,
                         "the map finished after %d kills: %s" % (len(kills), err[-2000:]))
        self.assertEqual(rc, 0, err[-3000:])
        lines = out.splitlines()
        expect = ["%d * %d = %d" % (i, i, i * i) for i in range(1, N + 1)]
        self.assertEqual(len(lines), N, "printed %d lines for %d tasks" % (len(lines), N))
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(lines, expect)) if a != b]
        self.assertEqual(bad[:5], [], "%d wrong lines" % len(bad))
        st = self.status()
        sys.stderr.write("  %s: master totals after the run: %s\n" % (mode, st["totals"]))

    def test_kill9_ten_times_during_map_fsync_always(self):
        self.crash_map("always")

    def test_kill9_ten_times_during_map_fsync_interval(self):
        self.crash_map("interval")


if __name__ == "__main__":
    main()
