#!/usr/bin/env python3
"""The HTTP API of --http-listen (issue 16 points 2 and 3, docs/http.md):
the JSON API runs the ADMIN ops of the wire; safe by default (loopback
unless an auth file is given, roles, CSRF token on every POST, payloads
hidden, security headers, actions logged with who asked); bad requests
get 4xx with a JSON message and never take the master down (a fuzz test);
/metrics is served on the same server."""
import base64
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request

from tqharness import EXIT_ENV, EXIT_OK, EXIT_USAGE, MASTER_BIN, TQTestCase, free_port, main, \
    wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READER_TOKEN = "reader-token-0123456789abcdef"


class HTTPBase(TQTestCase):
    def start_http(self, *extra, auth=False):
        self.hport = free_port()
        args = ["--http-listen", "127.0.0.1:%d" % self.hport]
        if auth:
            path = os.path.join(self.tmp, "http-users")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# name role secret\nops admin %s\nviewer read %s\n" %
                        (ADMIN_TOKEN, READER_TOKEN))
            args += ["--http-auth-file", path]
        self.start_master(*args, *extra)
        # the first snapshot comes within a second
        wait_until(lambda: self.req("GET", "/api/v1/status", token=ADMIN_TOKEN)[0] == 200, 20,
                   interval=0.1, what="the first snapshot")

    def req(self, method, path, body=None, token=None, headers=None, basic=None, raw=None):
        """(status, headers, parsed JSON or text)."""
        c = http.client.HTTPConnection("127.0.0.1", self.hport, timeout=20)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if basic:
            h["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read()
        c.close()
        ctype = r.getheader("Content-Type") or ""
        if ctype.startswith("application/json"):
            return r.status, r, json.loads(text)
        return r.status, r, text.decode("utf-8", "replace")

    def csrf(self, token=None):
        st, _, j = self.req("GET", "/api/v1/session", token=token)
        self.assertEqual(st, 200, j)
        return j["csrf"]

    def post(self, op, body, token=None, csrf=None):
        csrf = csrf if csrf is not None else self.csrf(token)
        return self.req("POST", "/api/v1/ops/" + op, body, token=token,
                        headers={"X-CSRF-Token": csrf})


class LocalTest(HTTPBase):
    """Loopback without an auth file: one user, "local", admin."""

    def test_status_ops_and_metrics(self):
        self.start_http()
        self.submit("--queue", "hq", "--fn", "square", "1", "2", "3")
        st, r, j = self.req("GET", "/api/v1/session")
        self.assertEqual((st, j["user"], j["role"], j["show_payloads"]), (200, "local", "admin", False))
        # security headers on every response
        for path in ("/api/v1/session", "/", "/app.js", "/nope", "/metrics"):
            st, r, _ = self.req("GET", path)
            csp = r.getheader("Content-Security-Policy")
            self.assertIn("frame-ancestors 'none'", csp, path)
            self.assertIn("script-src 'self'", csp, path)
            self.assertNotIn("unsafe-inline", csp, path)
            self.assertEqual(r.getheader("X-Content-Type-Options"), "nosniff", path)
            self.assertEqual(r.getheader("Referrer-Policy"), "no-referrer", path)
        # the page has no inline script or style
        st, _, page = self.req("GET", "/")
        self.assertEqual(st, 200)
        self.assertNotIn("<script>", page)
        self.assertNotIn("style=", page)
        self.assertNotIn("<style", page)
        self.assertIn('<script src="/app.js"', page)
        # the chart library is built in, not from a CDN
        st, r, js = self.req("GET", "/chart.js")
        self.assertEqual(st, 200)
        self.assertNotIn("http://", page.replace("http://www.w3.org", ""))
        # the snapshot moves with the work
        wait_until(lambda: [q for q in self.req("GET", "/api/v1/status")[2]["queues"]
                            if q["name"] == "hq" and q["queued"] == 3] or None, 20, interval=0.1,
                   what="3 queued in the snapshot")
        st, _, h = self.req("GET", "/api/v1/history?since=0")
        self.assertEqual(st, 200)
        wait_until(lambda: sum(p[1] for p in self.req("GET", "/api/v1/history")[2]["points"]) == 3,
                   20, interval=0.2, what="3 submitted in the history")
        self.assertEqual(h["fields"], ["t", "submitted", "done", "failed", "wait_ms"])
        # the metrics on the same server
        st, r, text = self.req("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertIn('taskq_tasks{queue="hq",state="queued"} 3', text)
        # an op that reads, by GET; the same op by POST
        st, _, j = self.req("GET", "/api/v1/ops/dead?limit=10")
        self.assertEqual((st, j["tasks"], j["more"], j["ok"]), (200, [], False, True))
        # pause by POST with the token: the same op as `taskq pause`
        st, _, j = self.post("pause", {"queue": "hq"})
        self.assertEqual((st, j["paused"], j["changed"]), (200, True, True), j)
        self.assertTrue([q for q in self.status()["queues"] if q["name"] == "hq"][0]["paused"])
        self.assertIn('http: local (127.0.0.1:', self.master.output())
        self.assertIn('asks pause: {\\"queue\\":\\"hq\\",\\"op\\":\\"pause\\"}', self.master.output())
        st, _, j = self.post("resume", {"queue": "hq"})
        self.assertEqual((st, j["paused"]), (200, False), j)
        # a change by GET is refused (405), unknown op 404
        st, _, j = self.req("GET", "/api/v1/ops/pause?queue=hq")
        self.assertEqual(st, 405, j)
        self.assertIn("POST", j["error"])
        st, _, j = self.req("GET", "/api/v1/ops/nosuch")
        self.assertEqual(st, 404, j)
        # an op's own error: 400 with its message
        st, _, j = self.post("pause", {})
        self.assertEqual((st, j["ok"]), (400, False), j)
        self.assertIn('"queue" is required', j["error"])
        st, _, j = self.post("retry", {"ids": [123]})
        self.assertEqual((st, j["items"][0]["outcome"]), (200, "unknown"), j)

    def test_pause_answered_once_durable(self):
        """A pause over HTTP is answered when the journal holds it, as its
        ADMIN_REPLY is: with --fsync always and each sync 1.5 s slow (test
        hook), the POST takes that long; GETs of the snapshot are served
        meanwhile (they never wait for the loop)."""
        self.hport = free_port()
        argv = [MASTER_BIN, "--bind", self.endpoint, "--data-dir", self.data_dir,
                "--authkey-file", self.key, "--fsync", "always",
                "--http-listen", "127.0.0.1:%d" % self.hport]
        self.master = self.start("master", argv, env={"TASKQ_TEST_SYNC_DELAY_MS": "1500"})
        self.wait_master_ready(self.master)
        wait_until(lambda: self.req("GET", "/api/v1/status")[0] == 200, 20, interval=0.1,
                   what="the first snapshot")
        csrf = self.csrf()
        out = {}

        def pause():
            t0 = time.monotonic()
            out["r"] = self.post("pause", {"queue": "slowq"}, csrf=csrf)
            out["took"] = time.monotonic() - t0
        t = threading.Thread(target=pause)
        t.start()
        time.sleep(0.3)
        t1 = time.monotonic()
        self.assertEqual(self.req("GET", "/api/v1/status")[0], 200)
        get_took = time.monotonic() - t1
        t.join(30)
        st, _, j = out["r"]
        self.assertEqual((st, j["paused"]), (200, True), j)
        self.assertGreaterEqual(out["took"], 1.4, "answered before the journal held the pause")
        self.assertLess(get_took, 1.0, "a GET of the snapshot waited for the journal")

    def test_csrf(self):
        self.start_http()
        # no token, wrong token, another user's token: 403, nothing done
        for csrf in ("", "0" * 64, "x"):
            st, _, j = self.post("pause", {"queue": "c"}, csrf=csrf)
            self.assertEqual(st, 403, j)
            self.assertIn("CSRF", j["error"])
        st, _, j = self.req("POST", "/api/v1/ops/pause", {"queue": "c"})
        self.assertEqual(st, 403, j)
        # a form post (not JSON) with the right token: 415
        st, _, j = self.req("POST", "/api/v1/ops/pause", raw=b"queue=c",
                            headers={"X-CSRF-Token": self.csrf(),
                                     "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 415, j)
        self.assertFalse([q for q in self.status()["queues"] if q["name"] == "c"])
        # the token changes with each start of the master
        t1 = self.csrf()
        self.master.stop()
        self.start_master("--http-listen", "127.0.0.1:%d" % self.hport)
        wait_until(lambda: self.req("GET", "/api/v1/session")[0] == 200, 20, interval=0.1,
                   what="http up again")
        self.assertNotEqual(t1, self.csrf())
        st, _, j = self.post("pause", {"queue": "c"}, csrf=t1)
        self.assertEqual(st, 403, j)

    def test_host_and_origin(self):
        """Without an auth file only a loopback Host is served (a page whose
        name was rebound to 127.0.0.1 cannot read the API, DNS rebinding),
        and a POST whose Origin is another site is refused."""
        self.start_http()
        for host in ("evil.example", "evil.example:%d" % self.hport, "10.0.0.1", "[::2]:80"):
            st, _, j = self.req("GET", "/api/v1/session", headers={"Host": host})
            self.assertEqual(st, 403, (host, j))
            self.assertIn("loopback Host", j["error"])
        for host in ("localhost:%d" % self.hport, "127.0.0.1", "127.1.2.3:9", "[::1]:%d" % self.hport,
                     "LOCALHOST"):
            st, _, j = self.req("GET", "/api/v1/session", headers={"Host": host})
            self.assertEqual(st, 200, (host, j))
        csrf = self.csrf()
        st, _, j = self.req("POST", "/api/v1/ops/pause", {"queue": "o"},
                            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        self.assertEqual(st, 403, j)
        self.assertIn("another origin", j["error"])
        st, _, j = self.req("POST", "/api/v1/ops/pause", {"queue": "o"},
                            headers={"X-CSRF-Token": csrf,
                                     "Origin": "http://127.0.0.1:%d" % self.hport})
        self.assertEqual(st, 200, j)

    def test_payloads_hidden_unless_asked(self):
        """Payload and result bytes are left out of API replies without
        --http-show-payloads, and there with it (on the show op of the
        inspection point)."""
        for show in (False, True):
            with self.subTest(show=show):
                if show:
                    self.master.stop()
                self.start_http(*(["--http-show-payloads"] if show else []))
                st, _, j = self.req("GET", "/api/v1/session")
                self.assertEqual(j["show_payloads"], show)
                if self.req("GET", "/api/v1/ops/show")[0] == 404:
                    self.skipTest("no show op in this build (issue 16 point 1)")
                [tid] = self.submit("--fn", "echo", "secret-payload-bytes")
                self.start_worker() if not show else None
                self.tq_ok("wait", "--timeout", "20", tid)
                st, _, j = self.req("GET", "/api/v1/ops/show?ids=%s&payload=true" % tid)
                self.assertEqual(st, 200, j)
                text = json.dumps(j)
                if show:
                    self.assertIn("secret-payload-bytes", text)
                else:
                    self.assertNotIn("secret-payload-bytes", text)
                    self.assertIn("payloads_hidden", text)

    def test_garbage_gets_4xx(self):
        self.start_http()
        cases = [
            ("GET", "/api/v1/nosuch", None, 404),
            ("GET", "/api/v1/ops/", None, 404),
            ("GET", "/api/v1/ops/DEAD", None, 404),
            ("GET", "/api/v1/ops/dead?limit=abc", None, 400),
            ("GET", "/api/v1/ops/dead?limit=0", None, 400),
            ("GET", "/api/v1/ops/dead?after=-1", None, 400),
            ("GET", "/api/v1/ops/dead?op=retry", None, 400),
            ("GET", "/api/v1/ops/dead?ids=1,x", None, 400),
            ("GET", "/api/v1/ops/dead?queue=" + "q" * 2000, None, 400),
            ("GET", "/api/v1/history?since=x", None, 400),
            ("PUT", "/api/v1/status", None, 405),
            ("DELETE", "/", None, 405),
            ("POST", "/", b"{}", 405),
            ("POST", "/api/v1/status", b"{}", 405),
        ]
        csrf = self.csrf()
        for method, path, raw, want in cases:
            h = {"X-CSRF-Token": csrf} if method == "POST" else {}
            st, r, j = self.req(method, path, raw=raw, headers=h)
            self.assertEqual(st, want, (method, path, j))
            if path.startswith("/api/"):
                self.assertEqual(j["ok"], False, (method, path, j))
                self.assertTrue(j["error"], (method, path))
        posts = [(b"[]", 400), (b"not json", 400), (b'{"queue": 5}', 400), (b"\xff\xfe", 400),
                 (b'{"queue":"' + b"a" * 300 + b'"}', 400),
                 (b'{"ids": "1"}', 400), (b'{"ids": [0]}', 400), (b'{"ids": [1.5]}', 400),
                 (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400)]
        for raw, want in posts:
            op = "retry" if b"ids" in raw else "pause"
            st, _, j = self.req("POST", "/api/v1/ops/" + op, raw=raw, headers={"X-CSRF-Token": csrf})
            self.assertEqual(st, want, (raw[:40], j))
        # a body over the cap: 413 before it is read
        st, _, j = self.req("POST", "/api/v1/ops/pause", raw=b"{" + b" " * (70 * 1024) + b"}",
                            headers={"X-CSRF-Token": csrf})
        self.assertEqual(st, 413, j)
        self.assertEqual(self.req("GET", "/api/v1/session")[0], 200)

    def test_fuzz(self):
        """Thousands of random and malformed requests: every answer is a
        well-formed HTTP response below 500 (or the connection is closed
        for a request line HTTP itself rejects), and the master stays up
        and keeps serving both HTTP and the wire."""
        self.start_http()
        csrf = self.csrf()
        rnd = random.Random(int(os.environ.get("TQ_FUZZ_SEED", "16")))
        ops = ["dead", "retry", "purge", "pause", "resume", "quiet", "stop", "show", "list",
               "failed", "empty", "x", "", "../etc"]
        fields = ["queue", "ids", "all", "worker", "after", "limit", "op", "req", "state", "fn",
                  "id", "set", "payload"]
        values = [0, -1, 1, 2 ** 53, 2 ** 64, 1.5, "", "q", "a" * 200, "\u00e9", None, True, False,
                  [], [1], [1, "x"], {}, {"a": 1}, "../../", "%00", "<script>"]
        n, t0 = 0, time.monotonic()
        statuses = {}
        deadline = t0 + 25
        while n < 3000 and time.monotonic() < deadline:
            n += 1
            kind = rnd.random()
            op = rnd.choice(ops)
            if kind < 0.35:  # POST with a random JSON object
                body = {rnd.choice(fields): rnd.choice(values) for _ in range(rnd.randint(0, 4))}
                raw = json.dumps(body).encode()
                if rnd.random() < 0.2:
                    cut = rnd.randint(0, len(raw))
                    raw = raw[:cut] + bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 8)))
                st, _, j = self.req("POST", "/api/v1/ops/" + op, raw=raw,
                                    headers={"X-CSRF-Token": csrf if rnd.random() < 0.9 else "x"})
            elif kind < 0.7:  # GET with random query arguments
                q = "&".join("%s=%s" % (rnd.choice(fields), urllib.request.quote(str(rnd.choice(values))))
                             for _ in range(rnd.randint(0, 5)))
                st, _, j = self.req("GET", "/api/v1/ops/%s?%s" % (urllib.request.quote(op), q))
            else:  # raw bytes on a socket: broken request lines and headers
                st = self.raw_garbage(rnd)
                if st is None:
                    continue
            statuses[st] = statuses.get(st, 0) + 1
            self.assertLess(st, 500, (op, st))
            self.assertTrue(self.master.alive())
        self.assertGreater(n, 500)
        self.assertEqual(self.req("GET", "/api/v1/session")[0], 200)
        self.assertTrue(self.status())
        print("fuzz: %d requests in %.1f s, statuses %s" % (n, time.monotonic() - t0,
                                                          sorted(statuses.items())))

    def raw_garbage(self, rnd):
        """Send a mangled request on a raw socket; the status, or None when
        the server closed without one (allowed for bytes that are not
        HTTP at all)."""
        lines = [b"GET /api/v1/status HTTP/1.1", b"Host: x", b"X-CSRF-Token: y",
                 b"Content-Length: 5", b"Transfer-Encoding: chunked", b"Authorization: Bearer",
                 b"Authorization: Basic ????", b"Content-Length: -1", b"Content-Length: 99999999999"]
        req = b"\r\n".join(rnd.choice(lines) for _ in range(rnd.randint(1, 5)))
        if rnd.random() < 0.5:
            req = bytes(b ^ (rnd.randint(0, 255) if rnd.random() < 0.05 else 0) for b in req)
        req += b"\r\n\r\n" + bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 20)))
        s = socket.create_connection(("127.0.0.1", self.hport), timeout=10)
        try:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            return None
        finally:
            s.close()
        if not data.startswith(b"HTTP/1."):
            return None
        return int(data.split()[1])


class AuthTest(HTTPBase):
    def test_roles(self):
        self.start_http(auth=True)
        # nothing without credentials, pages included; the browser is asked for them
        for path in ("/", "/api/v1/status", "/metrics", "/app.js"):
            st, r, _ = self.req("GET", path)
            self.assertEqual(st, 401, path)
            self.assertIn("Basic", r.getheader("WWW-Authenticate"))
        st, _, _ = self.req("GET", "/api/v1/status", token="wrong-token-0123456789")
        self.assertEqual(st, 401)
        st, _, _ = self.req("GET", "/api/v1/status", basic="ops:" + READER_TOKEN)
        self.assertEqual(st, 401)  # another user's secret
        self.assertIn("not authenticated", self.master.output())
        # the reader: reads, cannot act
        st, _, j = self.req("GET", "/api/v1/session", token=READER_TOKEN)
        self.assertEqual((st, j["user"], j["role"]), (200, "viewer", "read"))
        st, _, j = self.req("GET", "/api/v1/ops/dead", basic="viewer:" + READER_TOKEN)
        self.assertEqual(st, 200, j)
        st, _, j = self.post("pause", {"queue": "rq"}, token=READER_TOKEN)
        self.assertEqual(st, 403, j)
        self.assertIn("admin role", j["error"])
        self.assertIn("viewer (127.0.0.1:", self.master.output())
        self.assertFalse([q for q in self.status()["queues"] if q["name"] == "rq"])
        # the admin acts, with its own CSRF token (not the reader's)
        st, _, j = self.post("pause", {"queue": "rq"}, token=ADMIN_TOKEN,
                             csrf=self.csrf(READER_TOKEN))
        self.assertEqual(st, 403, j)
        st, _, j = self.post("pause", {"queue": "rq"}, token=ADMIN_TOKEN)
        self.assertEqual((st, j["paused"]), (200, True), j)
        self.assertIn("http: ops (127.0.0.1:", self.master.output())
        st, _, j = self.post("resume", {"queue": "rq"}, token=None, csrf="x")
        self.assertEqual(st, 401)
        st, _, j = self.req("GET", "/api/v1/session", basic="ops:" + ADMIN_TOKEN)
        self.assertEqual((st, j["role"]), (200, "admin"))
        # with credentials any Host is served (behind a proxy, on a LAN name)
        st, _, j = self.req("GET", "/api/v1/session", token=ADMIN_TOKEN,
                            headers={"Host": "taskq.example"})
        self.assertEqual(st, 200, j)


class StartTest(TQTestCase):
    def run_master(self, *args):
        return self.run_prog([MASTER_BIN, "--data-dir", os.path.join(self.tmp, "d"),
                              "--authkey-file", self.key, "--bind", self.endpoint] + list(args),
                             timeout=30)

    def test_non_loopback_needs_auth(self):
        for addr in ("0.0.0.0:%d" % free_port(), "[::]:%d" % free_port(), "192.0.2.1:1"):
            r = self.run_master("--http-listen", addr)
            self.assertEqual(r.rc, EXIT_USAGE, r)
            self.assertIn("needs --http-auth-file", r.err)
            r = self.run_master("--http-listen", addr, "--check-config")
            self.assertEqual(r.rc, EXIT_USAGE, r)
        for bad in ("nothing", "127.0.0.1:99999", "host.example:80", ""):
            r = self.run_master("--http-listen", bad, "--check-config")
            self.assertEqual(r.rc, EXIT_USAGE if bad else EXIT_OK, (bad, r))

    def test_auth_file_checked(self):
        port = free_port()
        path = os.path.join(self.tmp, "users")

        def write(text, mode=0o600):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, mode)

        for text, mode, msg in [
                ("a admin %s\n" % ADMIN_TOKEN, 0o644, "group or others"),
                ("a admin short\n", 0o600, "16..256"),
                ("a root %s\n" % ADMIN_TOKEN, 0o600, "read or admin"),
                ("a admin %s\na read %s\n" % (ADMIN_TOKEN, READER_TOKEN), 0o600, "twice"),
                ("a admin\n", 0o600, "NAME ROLE SECRET"),
                ("# nobody\n", 0o600, "no users")]:
            write(text, mode)
            r = self.run_master("--http-listen", "0.0.0.0:%d" % port, "--http-auth-file", path)
            self.assertEqual(r.rc, EXIT_ENV, (text, r))
            self.assertIn(msg, r.err, text)
        r = self.run_master("--http-listen", "0.0.0.0:%d" % port, "--http-auth-file",
                            os.path.join(self.tmp, "missing"))
        self.assertEqual(r.rc, EXIT_ENV, r)
        # a good file: it starts, on every address, and wants credentials
        write("a admin %s\n" % ADMIN_TOKEN)
        self.start_master("--http-listen", "0.0.0.0:%d" % port, "--http-auth-file", path)
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/api/v1/status" % port, timeout=10)
            self.fail("no 401")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 401)

    def test_metrics_listen_unchanged_and_shared(self):
        """--metrics-listen alone works as before; with --http-listen on the
        same address there is one server serving both."""
        mport = free_port()
        self.start_master("--metrics-listen", "127.0.0.1:%d" % mport,
                          "--http-listen", "127.0.0.1:%d" % mport)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
            self.assertIn(b"taskq_build_info", r.read())
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/session" % mport, timeout=10) as r:
            self.assertEqual(json.loads(r.read())["user"], "local")
        self.assertIn("metrics on http://127.0.0.1:%d/metrics" % mport, self.master.output())


if __name__ == "__main__":
    main()
