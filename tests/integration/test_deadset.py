"""The dead set (dead, retry, purge), paused queues (pause, resume) and
delayed tasks (submit/map --delay, --at), through the taskq command
against a real master: what each prints, its exit status, and that each
state survives a master restart."""

import datetime
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_TASK_FAILED,  # noqa: E402
                       EXIT_TIMEOUT, EXIT_USAGE, TQTestCase, main, wait_until)

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# A task that dies: its worker is killed while it runs this.
SLOW = "job=sleep 30"
# The same function on a fresh worker, done at once.
FAST = "job=echo second"


class DeadSet(TQTestCase):
    """Tasks die when their worker is lost --max-attempts times (1 here)."""

    MASTER_FLAGS = ("--max-attempts", "1")

    def setUp(self):
        super().setUp()
        self.start_master(*self.MASTER_FLAGS)

    def restart_master(self):
        """SIGTERM the master, then start it again on the same port and
        --data-dir."""
        self.master.signal(signal.SIGTERM)
        self.assertEqual(self.master.wait(15), 0, self.master.output())
        self.start_master(*self.MASTER_FLAGS, name="master2")

    def dead_json(self, *args):
        r = self.tq_ok("dead", "--json", *args)
        return [json.loads(line) for line in r.out.splitlines()]

    def make_dead(self, queues=("default",)):
        """One task per queue in queues, each killed with its worker:
        returns their ids once `taskq dead` lists all of them."""
        w = self.start_worker(concurrency=len(queues), fns=[SLOW])
        ids = []
        for q in queues:
            ids += self.submit("--fn", "job", "--queue", q, "x")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == len(queues), 10,
                   what="worker running every task")
        w.signal(signal.SIGKILL)
        w.wait(5)
        wait_until(lambda: sorted(str(t["id"]) for t in self.dead_json()) == sorted(ids), 20,
                   interval=0.1, what="tasks %s in the dead set" % ids)
        return ids

    def test_dead_listed_then_retried(self):
        t_before = time.time()
        [tid] = self.make_dead()
        # wait reports the dead outcome: exit 1, status "dead"
        r = self.tq("wait", "--json", "--timeout", "10", tid)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        o = json.loads(r.out)
        self.assertEqual((str(o["id"]), o["status"], o["attempts"]), (tid, "dead", 1), o)

        # text: a header, then ID QUEUE FN ATTEMPTS DIED ERROR
        r = self.tq_ok("dead")
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 2, r)
        self.assertEqual(lines[0].split(), ["ID", "QUEUE", "FN", "ATTEMPTS", "DIED", "ERROR"])
        f = lines[1].split(None, 5)
        self.assertEqual(f[:4], [tid, "default", "job", "1"], r)
        self.assertRegex(f[4], RFC3339_UTC)
        died = datetime.datetime.strptime(f[4], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertTrue(t_before - 1 <= died <= time.time() + 1, (t_before, f[4]))
        self.assertIn("worker lost", f[5])

        # --json: the master's object, one per line
        [d] = self.dead_json()
        self.assertEqual((str(d["id"]), d["queue"], d["fn"], d["attempts"]),
                         (tid, "default", "job", 1), d)
        self.assertIn("worker lost", d["error"])
        self.assertEqual(d["payload_bytes"], 1)
        self.assertTrue((t_before - 1) * 1000 <= d["finished_ms"] <= (time.time() + 1) * 1000, d)
        self.assertEqual(self.tq_ok("dead", "--queue", "default").out, r.out)
        self.assertEqual(self.tq_ok("dead", "--queue", "other").out, "no dead tasks\n")
        totals = self.status()["totals"]
        self.assertEqual(totals["dead"], 1, totals)
        self.assertIn(", 1 dead", self.tq_ok("status").out)

        # retry: back in the queue as if new; a fresh worker runs it
        self.start_worker(concurrency=1, fns=[FAST])
        r = self.tq_ok("retry", tid)
        self.assertEqual(r.out, "%s retried\n" % tid)
        r = self.tq_ok("wait", "--timeout", "30", tid)
        self.assertEqual(r.out, "second\n")
        self.assertEqual(self.tq_ok("dead").out, "no dead tasks\n")
        self.assertEqual(self.tq_ok("dead", "--json").out, "")

        # not dead any more: 7; unknown: 6 (and unknown wins over not dead)
        r = self.tq("retry", tid)
        self.assertEqual((r.rc, r.out), (EXIT_REFUSED, "%s not dead\n" % tid), r)
        r = self.tq("retry", tid, "999999")
        self.assertEqual((r.rc, r.out), (EXIT_NOT_FOUND, "%s not dead\n999999 unknown\n" % tid),
                         r)

    def test_purge(self):
        [tid] = self.make_dead()
        r = self.tq_ok("purge", "-", input="%s\n" % tid)
        self.assertEqual(r.out, "%s purged\n" % tid)
        r = self.tq("wait", "--timeout", "10", tid)
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        self.assertIn("task %s unknown" % tid, r.err)
        r = self.tq("purge", tid)
        self.assertEqual((r.rc, r.out), (EXIT_NOT_FOUND, "%s unknown\n" % tid), r)
        self.assertEqual(self.tq_ok("dead").out, "no dead tasks\n")
        self.assertEqual(self.status()["totals"]["dead"], 0)

    def test_all_and_queue(self):
        ida, idb = self.make_dead(queues=("qa", "qb"))
        self.assertEqual([str(t["id"]) for t in self.dead_json("--queue", "qb")], [idb])
        r = self.tq_ok("retry", "--all", "--queue", "qa")
        self.assertEqual(r.out, "1 task(s) retried\n")
        self.assertEqual([str(t["id"]) for t in self.dead_json()], [idb])
        r = self.tq_ok("purge", "--all")
        self.assertEqual(r.out, "1 task(s) purged\n")
        self.assertEqual(self.tq_ok("purge", "--all").out, "0 task(s) purged\n")
        self.start_worker(concurrency=1, fns=[FAST])
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", ida).out, "second\n")
        r = self.tq("wait", "--timeout", "10", idb)
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        # --all with ids is a usage error, before connecting
        r = self.tq("retry", "--all", ida)
        self.assertEqual(r.rc, EXIT_USAGE, r)

    def test_many_ids_in_chunks(self):
        """More ids than one ADMIN request may carry (1024): sent in
        chunks, one line per id in order."""
        ids = [str(i) for i in range(900001, 902101)]
        r = self.tq("purge", "-", input="\n".join(ids) + "\n")
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        self.assertEqual(r.out, "".join("%s unknown\n" % i for i in ids))

    def test_dead_survives_restart(self):
        [tid] = self.make_dead()
        self.restart_master()
        [d] = self.dead_json()
        self.assertEqual((str(d["id"]), d["attempts"]), (tid, 1), d)
        self.assertIn("worker lost", d["error"])
        r = self.tq("wait", "--json", "--timeout", "10", tid)
        self.assertEqual(json.loads(r.out)["status"], "dead", r)
        self.start_worker(concurrency=1, fns=[FAST])
        self.assertEqual(self.tq_ok("retry", "--all").out, "1 task(s) retried\n")
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", tid).out, "second\n")


class Paused(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()

    def queue_status(self, name):
        for q in self.status()["queues"]:
            if q["name"] == name:
                return q
        return None

    def test_pause_stops_dispatch_until_resume(self):
        w = self.start_worker(concurrency=1)
        r = self.tq_ok("pause", "mail")
        self.assertEqual(r.out, "queue mail paused\n")
        self.assertEqual(self.tq_ok("pause", "mail").out, "queue mail was already paused\n")
        self.assertTrue(self.queue_status("mail")["paused"])  # created by pause
        [tid] = self.submit("--fn", "echo", "--queue", "mail", "hi")
        # other queues still run while mail is paused
        self.assertEqual(self.tq_ok("map", "--fn", "echo", "other").out, "other\n")
        time.sleep(2)
        q = self.queue_status("mail")
        self.assertEqual((q["queued"], q["running"], q["paused"]), (1, 0, True), q)
        self.assertEqual(self.worker_status(w.wname)["busy"], 0)
        r = self.tq("wait", "--timeout", "0.5", tid)
        self.assertEqual(r.rc, EXIT_TIMEOUT, r)
        text = self.tq_ok("status").out
        self.assertRegex(text, r"(?m)^mail .* paused$")
        self.assertRegex(text, r"(?m)^default .* active$")

        self.assertEqual(self.tq_ok("resume", "mail").out, "queue mail resumed\n")
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", tid).out, "hi\n")
        self.assertEqual(self.tq_ok("resume", "mail").out, "queue mail was not paused\n")
        self.assertFalse(self.queue_status("mail")["paused"])

    def test_bad_queue_name_is_usage_error(self):
        for cmd in ("pause", "resume"):
            r = self.tq(cmd, "no/such")
            self.assertEqual(r.rc, EXIT_USAGE, r)
            self.assertIn("'no/such' is not a valid queue name", r.err)

    def test_pause_survives_restart(self):
        self.tq_ok("pause", "mail")
        self.master.signal(signal.SIGTERM)
        self.assertEqual(self.master.wait(15), 0, self.master.output())
        self.start_master(name="master2")
        self.assertTrue(self.queue_status("mail")["paused"])
        self.start_worker(concurrency=1)
        [tid] = self.submit("--fn", "echo", "--queue", "mail", "late")
        r = self.tq("wait", "--timeout", "1.5", tid)
        self.assertEqual(r.rc, EXIT_TIMEOUT, r)
        self.assertEqual(self.tq_ok("resume", "mail").out, "queue mail resumed\n")
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", tid).out, "late\n")


class Delayed(TQTestCase):
    """Delays are measured from before the submit command started, so a
    slow machine can only make them look longer, never shorter."""

    def setUp(self):
        super().setUp()
        self.start_master()

    def test_submit_delay(self):
        self.start_worker(concurrency=1)
        t0 = time.monotonic()
        [tid] = self.submit("--fn", "echo", "--delay", "2", "later")
        r = self.tq("wait", "--timeout", "1", tid)
        if time.monotonic() - t0 < 1.9:  # only meaningful before the delay passed
            self.assertEqual(r.rc, EXIT_TIMEOUT, r)
            self.assertEqual(self.status()["totals"]["delayed"], 1)
        r = self.tq_ok("wait", "--timeout", "30", tid)
        self.assertEqual(r.out, "later\n")
        self.assertGreaterEqual(time.monotonic() - t0, 2.0)
        self.assertEqual(self.status()["totals"]["delayed"], 0)

    def test_delay_zero_runs_at_once(self):
        self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "echo", "--delay", "0", "now")
        self.assertEqual(r.out, "now\n")

    def test_map_delay(self):
        self.start_worker(concurrency=2)
        t0 = time.monotonic()
        r = self.tq_ok("map", "--fn", "echo", "--delay", "1.5", "a", "b")
        self.assertEqual(r.out, "a\nb\n")
        self.assertGreaterEqual(time.monotonic() - t0, 1.5)

    def test_submit_at(self):
        self.start_worker(concurrency=1)
        # 2 s ahead, written with an offset and a fraction
        t0 = time.time()
        tz = datetime.timezone(datetime.timedelta(hours=1))
        at = datetime.datetime.fromtimestamp(t0 + 2, tz)
        text = at.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d+01:00" % (at.microsecond // 1000)
        [tid] = self.submit("--fn", "echo", "--at", text, "timed")
        r = self.tq_ok("wait", "--timeout", "30", tid)
        self.assertEqual(r.out, "timed\n")
        self.assertGreaterEqual(time.time() - t0, 1.95)  # at is ms-precise

    def test_at_in_the_past_runs_at_once(self):
        self.start_worker(concurrency=1)
        r = self.tq_ok("map", "--fn", "echo", "--at", "2001-01-01T00:00:00z", "old")
        self.assertEqual(r.out, "old\n")

    def test_bad_delay_and_at(self):
        for args, needle in ((("--delay", "-1"), "--delay: '-1'"),
                             (("--delay", "2h"), "--delay: '2h'"),
                             (("--at", "2026-11-22 10:00:00Z"), "--at: '2026-11-22 10:00:00Z'"),
                             (("--at", "2026-02-30T10:00:00Z"), "--at: '2026-02-30T10:00:00Z'"),
                             (("--delay", "1", "--at", "2030-01-01T00:00:00Z"),
                              "cannot be used together")):
            r = self.tq("submit", "--fn", "echo", *args, "x")
            self.assertEqual(r.rc, EXIT_USAGE, r)
            self.assertIn(needle, r.err)
            self.assertEqual(r.out, "")

    def test_delayed_survives_restart(self):
        t0 = time.monotonic()
        [tid] = self.submit("--fn", "echo", "--delay", "3", "kept")
        self.master.signal(signal.SIGTERM)
        self.assertEqual(self.master.wait(15), 0, self.master.output())
        self.start_master(name="master2")
        self.start_worker(concurrency=1)
        r = self.tq_ok("wait", "--timeout", "30", tid)
        self.assertEqual(r.out, "kept\n")
        self.assertGreaterEqual(time.monotonic() - t0, 3.0)


if __name__ == "__main__":
    main()
