"""Inspection (issue 16, point 1) through the taskq command against a
real master: show, list (paging, every state filter), the failed set
(failed, retry, purge, kept across a restart), the per-function status
rows and the warning for a function no worker serves, the running task
ids of `taskq workers`, and queue empty / delete. Each with --json."""

import json
import os
import re
import signal
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import (EXIT_NOT_FOUND, EXIT_REFUSED,  # noqa: E402
                       EXIT_TASK_FAILED, EXIT_USAGE, RawClient, TQTestCase, free_port, head,
                       main, wait_until)

UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def jlines(text):
    return [json.loads(line) for line in text.splitlines()]


class Inspect(TQTestCase):

    MASTER_FLAGS = ("--max-attempts", "1", "--retry-backoff", "0")

    def setUp(self):
        super().setUp()
        self.start_master(*self.MASTER_FLAGS)

    def restart_master(self):
        self.master.signal(signal.SIGTERM)
        self.assertEqual(self.master.wait(15), 0, self.master.output())
        self.start_master(*self.MASTER_FLAGS, name="master2")

    def show(self, *ids, payload=False):
        args = ["show", "--json"] + (["--payload"] if payload else []) + list(ids)
        r = self.tq("show", *args[1:])
        return r, jlines(r.out)

    def list_json(self, *args):
        return jlines(self.tq_ok("list", "--json", "--limit", "1000", *args).out)

    # ---- show --------------------------------------------------------------

    def test_show_queued_then_done(self):
        t0 = time.time() * 1000
        [tid] = self.submit("--fn", "job", "--queue", "mail", "--priority", "3", "--retries", "2",
                            "--key", "order-17", "hello")
        r, [o] = self.show(tid, payload=True)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((str(o["id"]), o["state"], o["queue"], o["fn"], o["priority"],
                          o["attempts"], o["retries"], o["worker"], o["key"], o["payload"]),
                         (tid, "queued", "mail", "job", 3, 0, 2, None, "order-17", "hello"), o)
        self.assertTrue(t0 - 1000 <= o["submitted_ms"] <= time.time() * 1000 + 1000, o)
        self.assertIsNone(o["started_ms"])
        self.assertIsNone(o["finished_ms"])
        # text: a block per task
        out = self.tq_ok("show", tid).out
        self.assertIn("task %s\n" % tid, out)
        self.assertRegex(out, r"state:\s+queued\n")
        self.assertRegex(out, r"queue:\s+mail\n")
        self.assertRegex(out, r"key:\s+order-17\n")
        self.assertRegex(out, r"worker:\s+-\n")

        w = self.start_worker(concurrency=1, fns=["job=echo done-it"])
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", tid).out, "done-it\n")
        r, [o] = self.show(tid, payload=True)
        self.assertEqual((o["state"], o["attempts"], o["result"], o["worker"]["name"],
                          o["worker"]["connected"]), ("done", 1, "done-it\n", w.wname, True), o)
        self.assertEqual(o["worker"]["id"], self.worker_status(w.wname)["id"])
        self.assertTrue(o["submitted_ms"] <= o["started_ms"] <= o["finished_ms"], o)
        self.assertIsNone(o["payload"])  # not kept once done
        self.assertEqual(o["payload_bytes"], 0)
        out = self.tq_ok("show", tid).out
        self.assertRegex(out, r"worker:\s+%s \(id [0-9a-f]{16}\)\n" % re.escape(w.wname))
        for field in ("submitted", "started", "finished"):
            m = re.search(r"\n  %s\s+(\S+)\n" % field, out)
            self.assertTrue(m and UTC.match(m.group(1)), (field, out))
        self.assertRegex(out, r"result:\s+done-it\n")

        # unknown ids: on stderr, exit 6; the known one still shown
        r = self.tq("show", tid, "999999")
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        self.assertIn("task 999999 unknown", r.err)
        self.assertIn("task %s\n" % tid, r.out)
        r, objs = self.show("999999")
        self.assertEqual((r.rc, objs), (EXIT_NOT_FOUND, [{"id": 999999, "state": "unknown"}]))
        r = self.tq("show")
        self.assertEqual(r.rc, EXIT_USAGE, r)

    # ---- list ----------------------------------------------------------------

    def make_every_state(self):
        """Tasks in each state; returns {state: [ids]}."""
        ids = {}
        # dead: its worker is killed while it runs (--max-attempts 1)
        w = self.start_worker(concurrency=1, fns=["slow=sleep 30"])
        ids["dead"] = self.submit("--fn", "slow", "--queue", "d", "x")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 1, 20, what="slow running")
        w.signal(signal.SIGKILL)
        w.wait(5)
        wait_until(lambda: "dead" in self.tq_ok("show", ids["dead"][0]).out, 20,
                   what="task dead")
        # done, failed, running
        self.start_worker(concurrency=2, fns=["ok=echo fine", "bad=false", "hang=sleep 60"])
        ids["done"] = self.submit("--fn", "ok", "--queue", "a", "1", "2")
        ids["failed"] = self.submit("--fn", "bad", "--queue", "a", "3")
        ids["running"] = self.submit("--fn", "hang", "--queue", "b", "4")
        self.tq("wait", "--timeout", "30", *(ids["done"] + ids["failed"]))
        # queued (nobody serves "idle"), delayed, cancelled
        ids["queued"] = self.submit("--fn", "idle", "--queue", "a", *map(str, range(25)))
        ids["delayed"] = self.submit("--fn", "idle", "--queue", "b", "--delay", "3600", "z")
        ids["cancelled"] = self.submit("--fn", "idle", "--queue", "b", "c")
        self.tq("cancel", *ids["cancelled"])
        wait_until(lambda: self.status()["totals"]["running"] == 1, 20, what="hang running")
        return ids

    def test_list_filters_and_paging(self):
        ids = self.make_every_state()
        every = [str(o["id"]) for o in self.list_json()]
        self.assertEqual(every, sorted(every, key=int))
        self.assertEqual(sorted(every, key=int),
                         sorted(sum(ids.values(), []), key=int))
        for state, want in ids.items():
            got = self.list_json("--state", state)
            self.assertEqual([str(o["id"]) for o in got], want, state)
            self.assertTrue(all(o["state"] == state for o in got), got)
        # filters combine
        got = self.list_json("--queue", "a", "--fn", "idle")
        self.assertEqual([str(o["id"]) for o in got], ids["queued"])
        self.assertEqual(self.list_json("--queue", "nosuch"), [])
        self.assertEqual(self.tq_ok("list", "--fn", "nosuch").out, "no tasks\n")
        [f] = self.list_json("--state", "failed")
        self.assertIn("error", f)
        [r] = self.list_json("--state", "running")
        self.assertTrue(r["worker"]["name"], r)

        # paging: --limit cuts, --after continues, in queue (id) order
        out = self.tq_ok("list", "--state", "queued", "--limit", "10").out.splitlines()
        self.assertEqual(out[0].split()[:4], ["ID", "STATE", "QUEUE", "FN"])
        self.assertEqual([l.split()[0] for l in out[1:11]], ids["queued"][:10])
        self.assertEqual(out[11], "(more: taskq list --after %s ...)" % ids["queued"][9])
        page2 = self.list_json("--state", "queued", "--after", ids["queued"][9], "--limit", "10")
        self.assertEqual([str(o["id"]) for o in page2], ids["queued"][10:20])
        r = self.tq("list", "--state", "bogus")
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("--state", r.err)

    # ---- the failed set --------------------------------------------------------

    def test_failed_set_retry_purge_and_restart(self):
        flag = os.path.join(self.tmp, "ok-now")
        self.start_worker(concurrency=2, fns=[
            "job=sh -c 'test -f %s && echo recovered || { echo not yet >&2; exit 3; }'" % flag])
        a, b = self.submit("--fn", "job", "--retries", "1", "p1", "p2")
        r = self.tq("wait", "--timeout", "30", a, b)
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)  # the error reached the client, and ACKed
        out = self.tq_ok("failed").out.splitlines()
        self.assertEqual(out[0].split(), ["ID", "QUEUE", "FN", "ATTEMPTS", "FAILED", "ERROR"])
        self.assertEqual([l.split()[0] for l in out[1:]], [a, b])
        self.assertIn("not yet", out[1])
        fj = jlines(self.tq_ok("failed", "--json").out)
        self.assertEqual([(str(o["id"]), o["attempts"], o["payload_bytes"]) for o in fj],
                         [(a, 2, 2), (b, 2, 2)])
        _, [o] = self.show(a, payload=True)
        self.assertEqual((o["state"], o["payload"]), ("failed", "p1"), o)

        # kept across a restart (delivered and ACKed: the journal keeps it)
        self.restart_master()
        self.assertEqual([str(o["id"]) for o in jlines(self.tq_ok("failed", "--json").out)],
                         [a, b])
        _, [o] = self.show(a, payload=True)
        self.assertEqual((o["state"], o["payload"]), ("failed", "p1"), o)

        # retry runs it again as new; purge deletes the other
        open(flag, "w").close()
        self.assertEqual(self.tq_ok("retry", a).out, "%s retried\n" % a)
        self.assertEqual(self.tq_ok("wait", "--timeout", "30", a).out, "recovered\n")
        self.assertEqual(self.tq_ok("purge", b).out, "%s purged\n" % b)
        r = self.tq("show", b)
        self.assertEqual(r.rc, EXIT_NOT_FOUND, r)
        self.assertEqual(self.tq_ok("failed").out, "no failed tasks\n")
        r = self.tq("retry", a)
        self.assertEqual((r.rc, r.out), (EXIT_REFUSED, "%s not dead\n" % a), r)
        self.restart_master()
        self.assertEqual(self.tq_ok("failed").out, "no failed tasks\n")

    def test_failed_set_all(self):
        self.start_worker(concurrency=2, fns=["bad=false"])
        xs = self.submit("--fn", "bad", "--queue", "x", "1", "2", "3")
        [y] = self.submit("--fn", "bad", "--queue", "y", "4")
        self.tq("wait", "--timeout", "30", *(xs + [y]))
        self.assertEqual(self.tq_ok("purge", "--all", "--failed", "--queue", "x").out,
                         "3 task(s) purged\n")
        self.assertEqual([str(o["id"]) for o in jlines(self.tq_ok("failed", "--json").out)],
                         [y])
        self.assertEqual(self.tq_ok("retry", "--all", "--failed").out, "1 task(s) retried\n")
        r = self.tq("wait", "--timeout", "30", y)  # it fails again
        self.assertEqual(r.rc, EXIT_TASK_FAILED, r)
        self.assertEqual(self.tq_ok("dead").out, "no dead tasks\n")  # --failed left it alone
        r = self.tq("retry", "--failed", y)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("--failed goes with --all", r.err)

    def test_failed_set_expires_with_result_ttl(self):
        self.master.signal(signal.SIGTERM)
        self.master.wait(15)
        self.start_master(*self.MASTER_FLAGS, "--result-ttl", "1", name="master2")
        self.start_worker(concurrency=1, fns=["bad=false"])
        [t] = self.submit("--fn", "bad", "x")
        self.tq("wait", "--timeout", "30", t)
        wait_until(lambda: self.tq_ok("failed").out == "no failed tasks\n", 20,
                   what="failed task expired after --result-ttl")

    # ---- status: functions, unserved warning; workers' running ids -----------

    def test_function_rows_and_unserved_warning(self):
        ids = self.submit("--fn", "nobody", "1", "2", "3")
        st = self.status()
        rows = {f["name"]: f for f in st["functions"]}
        self.assertEqual(rows["nobody"], {"name": "nobody", "queued": 3, "running": 0,
                                          "workers": 0, "unserved": True})
        out = self.tq_ok("status").out
        self.assertIn("warning: 3 task(s) wait for function nobody, which no connected worker "
                      "serves\n", out)
        self.assertRegex(out, r"\nFUNCTION\s+QUEUED\s+RUNNING\s+WORKERS\n")
        self.assertTrue([q for q in st["queues"] if q["name"] == "default"][0]["oldest_age_ms"]
                        is not None)
        self.start_worker(concurrency=1, fns=["nobody=echo here"])
        self.tq_ok("wait", "--timeout", "30", *ids)
        st = self.status()
        rows = {f["name"]: f for f in st["functions"]}
        self.assertEqual((rows["nobody"]["workers"], rows["nobody"]["unserved"]), (1, False))
        self.assertNotIn("warning:", self.tq_ok("status").out)

    def test_function_metrics(self):
        self.master.signal(signal.SIGTERM)
        self.master.wait(15)
        mport = free_port()
        self.start_master(*self.MASTER_FLAGS, "--metrics-listen", "127.0.0.1:%d" % mport,
                          name="master2")
        self.submit("--fn", "nobody", "--queue", "mq", "1", "2")

        def page():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
                return r.read().decode()
        wait_until(lambda: 'taskq_function_queued{fn="nobody"} 2\n' in page(), 10,
                   what="function rows in the metrics")
        text = page()
        self.assertIn('taskq_function_workers{fn="nobody"} 0\n', text)
        self.assertIn("taskq_functions_unserved 1\n", text)
        self.assertRegex(text, r'taskq_queue_oldest_age_seconds\{queue="mq"\} \d+\.\d+\n')

    def test_workers_running_ids(self):
        w = self.start_worker(concurrency=2, fns=["hang=sleep 60"])
        ids = self.submit("--fn", "hang", "a", "b")
        wait_until(lambda: self.worker_status(w.wname)["busy"] == 2, 20, what="both running")
        ws = jlines(self.tq_ok("workers", "--json").out)[0]
        self.assertEqual(sorted(str(i) for i in ws[0]["running"]), sorted(ids))
        self.assertFalse(ws[0]["running_truncated"])
        out = self.tq_ok("workers").out.splitlines()
        self.assertEqual(out[0].split()[-1], "RUNNING")
        self.assertEqual(sorted(out[1].split()[-1].split(",")), sorted(ids))
        rows = {f["name"]: f for f in self.status()["functions"]}
        self.assertEqual((rows["hang"]["running"], rows["hang"]["workers"]), (2, 1))

    # ---- queue empty / delete ----------------------------------------------------

    def test_queue_empty_and_delete(self):
        ids = self.submit("--fn", "idle", "--queue", "q", *map(str, range(5)))
        [late] = self.submit("--fn", "idle", "--queue", "q", "--delay", "3600", "x")
        self.tq_ok("pause", "q")
        r = self.tq("queue", "delete", "q")
        self.assertEqual(r.rc, EXIT_REFUSED, r)
        self.assertIn("queue q is not empty (6 queued, 0 running)", r.err)
        r = self.tq_ok("queue", "empty", "q")
        self.assertEqual(r.out, "queue q: 6 queued task(s) cancelled\n")
        _, objs = self.show(*ids)
        self.assertEqual({o["state"] for o in objs}, {"cancelled"})
        self.assertEqual(self.list_json("--queue", "q", "--state", "cancelled")[-1]["id"],
                         int(late))
        r = self.tq_ok("queue", "--json", "empty", "q")
        self.assertEqual(json.loads(r.out), {"queue": "q", "cancelled": 0})
        # kept across a restart: the cancels are journaled
        self.restart_master()
        self.assertEqual(len(self.list_json("--queue", "q", "--state", "cancelled")), 6)
        r = self.tq_ok("queue", "--json", "delete", "q")
        o = json.loads(r.out)
        self.assertEqual((o["deleted"], o["queue"]), (True, "q"), o)
        q = [x for x in self.status()["queues"] if x["name"] == "q"]
        self.assertTrue(not q or q[0]["paused"] is False, q)  # its pause went with it
        r = self.tq("queue", "delete", "nosuchqueue")
        self.assertEqual(r.rc, EXIT_REFUSED, r)
        self.assertIn("no queue named nosuchqueue", r.err)
        r = self.tq("queue", "drop", "q")
        self.assertEqual(r.rc, EXIT_USAGE, r)


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class InspectBadRequests(TQTestCase):
    """Every field of the new ADMIN ops is checked: a bad one gets ERROR
    with the request's ref, and the master goes on serving."""

    def admin(self, c, req):
        c.send([head(h.T_ADMIN) + json.dumps(req).encode()])
        fr = c.recv_type(h.T_ADMIN_REPLY, timeout=10)
        self.assertIsNotNone(fr, "no answer to %r" % req)
        if fr[0][3] == h.T_ERROR:
            return h.decode_error(fr)
        return json.loads(fr[0][4:].decode())

    def test_bad_fields(self):
        self.start_master()
        c = RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        try:
            c.hello()
            M, N, T = h.E_MALFORMED, h.E_BAD_NAME, h.E_TOO_MANY
            bad = [({"op": "show"}, M), ({"op": "show", "ids": []}, M),
                   ({"op": "show", "ids": "1"}, M), ({"op": "show", "ids": [0]}, M),
                   ({"op": "show", "ids": [-1]}, M), ({"op": "show", "ids": [1.5]}, M),
                   ({"op": "show", "ids": list(range(1, 102))}, T),
                   ({"op": "show", "ids": [1], "payload": 1}, M),
                   ({"op": "list", "state": "sleeping"}, M), ({"op": "list", "state": 3}, M),
                   ({"op": "list", "limit": 0}, M), ({"op": "list", "limit": 1001}, M),
                   ({"op": "list", "after": -1}, M), ({"op": "list", "after": "x"}, M),
                   ({"op": "list", "queue": "a b"}, N), ({"op": "list", "queue": 7}, M),
                   ({"op": "list", "fn": "x" * 65}, N),
                   ({"op": "failed", "state": "failed"}, M),
                   ({"op": "queue_empty"}, M), ({"op": "queue_empty", "queue": "a/b"}, N),
                   ({"op": "queue_empty", "queue": "nosuch"}, N),
                   ({"op": "queue_delete", "queue": ["q"]}, M)]
            for i, (req, code) in enumerate(bad):
                req["req"] = 100 + i
                e = self.admin(c, req)
                self.assertEqual((e.get("code"), e.get("ref")), (code, req["req"]), (req, e))
            ok = self.admin(c, {"req": 1, "op": "list", "queue": "never-made"})
            self.assertEqual((ok["tasks"], ok["more"]), ([], False), ok)
            ok = self.admin(c, {"req": 2, "op": "show", "ids": [2 ** 53]})
            self.assertEqual(ok["tasks"][0]["state"], "unknown", ok)
            ok = self.admin(c, {"req": 3, "op": "list", "after": 2 ** 60})
            self.assertEqual((ok["tasks"], ok["more"]), ([], False), ok)
            # a query made no queue
            names = [q["name"] for q in self.status()["queues"]]
            self.assertNotIn("never-made", names)
        finally:
            c.close()


if __name__ == "__main__":
    main()
