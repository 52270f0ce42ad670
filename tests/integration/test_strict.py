"""Issue 12 point 12: small lies, each now either refused or made true.

- A duration below 1 ms ("--timeout 0.0004") truncated to 0, which means
  "no timeout": now any positive duration is at least 1 ms.
- "--bind tcp://127.0.0.1:99999" listened on 34463 (ZeroMQ keeps the low
  16 bits) and logged 99999: now a usage error naming --bind; and the
  log names the endpoint actually bound (a port 0 resolved).
- ADMIN with more than 1024 ids answered ERROR 5 where PROTOCOL.md said
  1: the code (5, TOO_MANY, as for every other count over its limit)
  and the document now agree."""

import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
from tqharness import TQTestCase, main, RawClient, head, wait_until, REPO  # noqa: E402


class SubMillisecond(TQTestCase):
    def test_timeout_below_1ms_is_not_none(self):
        self.start_master()
        self.start_worker(fns=["sleepy=sleep 3"])
        tid = self.submit("--fn", "sleepy", "--timeout", "0.0004", "x")[0]
        r = self.tq("wait", "--timeout", "30", tid, timeout=60)
        self.assertEqual(r.rc, h.EXIT_TASK_FAILED, r)
        self.assertIn("timed out after 0.001 s", r.err)

    def test_wait_timeout_below_1ms_is_not_forever(self):
        self.start_master()
        tid = self.submit("--fn", "nobody", "x")[0]
        r = self.tq("wait", "--timeout", "0.0004", tid, timeout=20)
        self.assertEqual(r.rc, h.EXIT_TIMEOUT, r)


class BindPort(TQTestCase):
    def master_argv(self, bind):
        return [h.MASTER_BIN, "--bind", bind, "--data-dir", self.data_dir,
                "--authkey-file", self.key] + h.HB_FLAGS

    def test_port_over_65535_is_a_usage_error(self):
        for bad in ("tcp://127.0.0.1:99999", "tcp://127.0.0.1:65536",
                    "tcp://127.0.0.1:99999999999999999999999"):
            m = self.start(re.sub(r"\W", "_", bad), self.master_argv(bad))
            rc = m.wait(20)
            out = m.output()
            self.assertEqual(rc, h.EXIT_USAGE, "%s: %s" % (bad, out))
            self.assertIn("--bind", out)
            self.assertNotIn("listening", out)

    def test_log_names_the_port_bound(self):
        m = self.start("master0", self.master_argv("tcp://127.0.0.1:0"))
        line = wait_until(lambda: re.search(r"listening on (tcp://\S+),", m.output()), 30,
                          what="the listening line")
        ep = line.group(1)
        port = int(ep.rsplit(":", 1)[1])
        self.assertNotEqual(port, 0, ep)
        self.assertEqual(ep, "tcp://127.0.0.1:%d" % port)
        # The logged endpoint is the one that answers.
        self.endpoint = ep
        self.assertTrue(self.status()["workers"] == [])
        # 65535 is a valid port: it listens there (or, if something else
        # holds that port, cannot bind), but it is no usage error.
        argv = self.master_argv("tcp://127.0.0.1:65535")
        argv[argv.index("--data-dir") + 1] = os.path.join(self.tmp, "data2")
        m2 = self.start("master65535", argv)
        wait_until(lambda: not m2.alive() or "listening on" in m2.output(), 30,
                   what="master on port 65535 to listen or exit")
        if m2.alive():
            self.assertIn("listening on tcp://127.0.0.1:65535,", m2.output())
        else:
            self.assertEqual(m2.p.returncode, h.EXIT_ENV, m2.output())
            self.assertIn("cannot bind", m2.output())

    def test_connect_port_over_65535_is_a_usage_error(self):
        # The same lie on the other side: the worker and the client would
        # connect to port 34463 when told 99999.
        for bad in ("tcp://127.0.0.1:99999", "tcp://127.0.0.1:65536"):
            r = self.tq("status", endpoint=bad, timeout=20)
            self.assertEqual(r.rc, h.EXIT_USAGE, "%s: %s" % (bad, r))
            self.assertIn("--connect: port", r.err)
            w = self.start("worker" + re.sub(r"\W", "_", bad),
                           [h.WORKER_BIN, "--connect", bad, "--authkey-file", self.key])
            self.assertEqual(w.wait(20), h.EXIT_USAGE, w.output())
            self.assertIn("--connect: port", w.output())


@unittest.skipIf(h.zmq is None, "pyzmq not available")
class AdminTooManyIds(TQTestCase):
    def test_code_and_protocol_md_agree(self):
        self.start_master()
        c = RawClient(self.endpoint, h.key_bytes_from_file(self.key))
        try:
            c.hello()
            req = {"req": 9, "op": "retry", "ids": list(range(1, 1026))}
            c.send([head(h.T_ADMIN) + json.dumps(req).encode()])
            fr = c.recv_type(h.T_ADMIN_REPLY, timeout=10)
        finally:
            c.close()
        err = h.decode_error(fr)
        self.assertIsNotNone(err, fr)
        self.assertEqual(err.get("ref"), 9, err)
        with open(os.path.join(REPO, "proto", "PROTOCOL.md"), encoding="utf-8") as f:
            doc = f.read()
        sec = doc[doc.index("### ADMIN (0x09)"):]
        sec = sec[:sec.index("\n## ")]
        said = re.search(r"(\d+) for more than 1024\s+ids", sec)
        self.assertIsNotNone(said, "PROTOCOL.md's ADMIN section does not say which ERROR "
                                   "code more than 1024 ids get")
        self.assertEqual(int(said.group(1)), err["code"], (said.group(0), err))
        self.assertEqual(err["code"], h.E_TOO_MANY, err)


if __name__ == "__main__":
    main()
