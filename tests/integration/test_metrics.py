#!/usr/bin/env python3
"""Prometheus metrics (issue 15 point 5): --metrics-listen serves the text
format over HTTP (libmicrohttpd) from a snapshot the loop publishes; the
values move with the work; off by default; bad addresses are refused."""
import os
import re
import socket
import urllib.error
import urllib.request

from tqharness import MASTER_BIN, TQTestCase, free_port, main, wait_until


def parse(text):
    """{'name{labels}': value} of a Prometheus text page; checks each
    sample has a # TYPE before it."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
        assert m, "not a sample line: %r" % line
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in typed or family in typed, "no # TYPE for %s" % m.group(1)
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


class MetricsTest(TQTestCase):
    def scrape(self, port, path="/metrics"):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return parse(r.read().decode())

    def wait_metric(self, port, name, pred, what):
        return wait_until(lambda: pred(self.scrape(port).get(name)), 20, interval=0.2,
                          what=what)

    def test_values_move(self):
        mport = free_port()
        self.start_master("--metrics-listen", ":%d" % mport)  # loopback by default
        self.assertIn("metrics on http://127.0.0.1:%d/metrics" % mport, self.master.output())
        m = self.scrape(mport)
        self.assertEqual(m["taskq_tasks_submitted_total"], 0)
        self.assertEqual(m["taskq_workers"], 0)
        self.assertEqual(m['taskq_build_info{version="0.1.0"}'], 1)
        # Tasks with no worker: queued, by queue.
        self.submit("--queue", "mq", "--fn", "square", "1", "2", "3", "4", "5")
        self.wait_metric(mport, 'taskq_tasks{queue="mq",state="queued"}', lambda v: v == 5,
                         "5 queued tasks in the metrics")
        m = self.scrape(mport)
        self.assertEqual(m["taskq_tasks_submitted_total"], 5)
        self.assertGreaterEqual(m["taskq_clients"] + m["taskq_connections"], 0)
        # A worker runs them.
        self.start_worker(concurrency=3)
        self.wait_metric(mport, "taskq_tasks_done_total", lambda v: v == 5, "5 done")
        m = self.scrape(mport)
        self.assertEqual(m["taskq_workers"], 1)
        self.assertEqual(m["taskq_worker_slots"], 3)
        self.assertEqual(m["taskq_tasks_dispatched_total"], 5)
        self.assertEqual(m['taskq_tasks{queue="mq",state="queued"}'], 0)
        self.assertGreater(m["taskq_journal_bytes"], 0)
        self.assertEqual(m["taskq_journal_error"], 0)
        self.assertGreaterEqual(m["taskq_connections"], 1)
        # Histograms: wait (submit -> first dispatch) and run (dispatch ->
        # lease end), by queue; the tasks waited for the worker to come.
        m = self.wait_metric(mport, 'taskq_task_run_seconds_count{queue="mq"}',
                             lambda v: v == 5, "5 runs in the histogram") and self.scrape(mport)
        self.assertEqual(m['taskq_queue_wait_seconds_count{queue="mq"}'], 5)
        self.assertEqual(m['taskq_queue_wait_seconds_bucket{queue="mq",le="+Inf"}'], 5)
        self.assertEqual(m['taskq_queue_wait_seconds_bucket{queue="mq",le="0.005"}'], 0)
        self.assertGreater(m['taskq_queue_wait_seconds_sum{queue="mq"}'], 0.005 * 5)
        self.assertEqual(m['taskq_task_run_seconds_bucket{queue="mq",le="+Inf"}'], 5)
        buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                         if k.startswith('taskq_task_run_seconds_bucket{queue="mq"')
                         and "+Inf" not in k)
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))  # cumulative
        # A failing task.
        self.tq("map", "--fn", "fail", "x")
        self.wait_metric(mport, "taskq_tasks_failed_total", lambda v: v == 1, "1 failed")
        # A wrong key is an authentication failure.
        bad = self.make_key("badkey", "itest-wrong-secret-9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a")
        self.tq("--connect-timeout", "1", "status", key=bad)
        self.wait_metric(mport, "taskq_auth_failures_total", lambda v: v and v >= 1,
                         "an auth failure counted")
        # Only GET /metrics is served.
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=10)
        self.assertEqual(cm.exception.code, 404)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % mport, data=b"x",
                                     method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(cm.exception.code, 405)
        # The master still answers after all that, and a restart keeps
        # the gauges (state after replay) and restarts the counters.
        self.master.stop()
        self.start_master("--metrics-listen", "127.0.0.1:%d" % mport)
        m = self.wait_metric(mport, "taskq_tasks_stored", lambda v: v is not None, "scrape")
        m = self.scrape(mport)
        self.assertEqual(m["taskq_auth_failures_total"], 0)

    def test_fsync_histogram_and_oldest_age_move(self):
        mport = free_port()
        self.start_master("--metrics-listen", ":%d" % mport, "--fsync", "always")
        m = self.scrape(mport)
        self.assertEqual(m["taskq_journal_write_errors_total"], 0)
        before = m["taskq_journal_fsync_seconds_count"]
        self.submit("--queue", "aged", "--fn", "square", "1")
        self.submit("--queue", "aged", "--fn", "square", "2")
        # each acknowledged submit was fsynced first (--fsync always)
        m = self.wait_metric(mport, "taskq_journal_fsync_seconds_count",
                             lambda v: v is not None and v >= before + 2,
                             "two more fsync rounds") and self.scrape(mport)
        n = m["taskq_journal_fsync_seconds_count"]
        self.assertEqual(m['taskq_journal_fsync_seconds_bucket{le="+Inf"}'], n)
        self.assertGreater(m["taskq_journal_fsync_seconds_sum"], 0)
        buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                         if k.startswith("taskq_journal_fsync_seconds_bucket")
                         and "+Inf" not in k)
        self.assertEqual(len(buckets), 14)
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertLessEqual(buckets[-1][1], n)
        # the oldest queued task ages while no worker serves it
        self.wait_metric(mport, 'taskq_queue_oldest_age_seconds{queue="aged"}',
                         lambda v: v is not None and v >= 1.0, "the oldest task to age 1 s")
        self.start_worker()
        self.wait_metric(mport, 'taskq_queue_oldest_age_seconds{queue="aged"}',
                         lambda v: v == 0, "the age to drop to 0 once served")

    def test_off_by_default(self):
        self.start_master()
        self.assertNotIn("metrics on", self.master.output())

    def test_bad_address(self):
        for addr, rc in (("nonsense:1", 2), ("127.0.0.1:99999", 2), ("[::1", 2),
                         ("", None)):
            if rc is None:
                continue
            r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir, "--metrics-listen", addr,
                               "--check-config"])
            self.assertEqual(r.rc, rc, r)
            self.assertIn("--metrics-listen", r.err)
        # A port in use: the master does not start (exit 8).
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        try:
            r = self.run_prog([MASTER_BIN, "--data-dir", self.data_dir, "--bind",
                               "tcp://127.0.0.1:%d" % free_port(), "--metrics-listen",
                               "127.0.0.1:%d" % port])
        finally:
            s.close()
        self.assertEqual(r.rc, 8, r)
        self.assertIn("--metrics-listen 127.0.0.1:%d: cannot listen there" % port, r.err)


if __name__ == "__main__":
    main()
