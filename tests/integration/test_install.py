#!/usr/bin/env python3
"""Install (issue 15 point 1): `meson install` into a DESTDIR puts every
file in place (programs, library, header, taskq.pc, man pages generated
from the settings tables, systemd units, sysusers.d, example configs,
bash completion, LICENSE); a small program builds against the installed
library through pkg-config and runs; taskq.pc gives consumers only -I and
-l taskq; the example configs pass --check-config; `systemd-analyze
verify` accepts the units (skipped when it is missing)."""
import json
import os
import re
import shutil
import subprocess
import unittest

from tqharness import BUILD, TQTestCase, main

PROGRAM = r'''
#include <stdio.h>
#include <string.h>
#include <taskq.h>

int main(void)
{
    taskq_worker_opts_t o = TASKQ_WORKER_OPTS_INIT;
    (void)o;
    const char *b = taskq_worker_builtin(0);
    printf("builtin0=%s\n", b ? b : "(none)");
    return b && strlen(b) > 0 ? 0 : 1;
}
'''


def run(argv, env=None, **kw):
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, **kw)


class InstallTest(TQTestCase):
    def setUp(self):
        super().setUp()
        opts = json.loads(run(["meson", "introspect", "--buildoptions", BUILD]).stdout)
        self.opt = {o["name"]: o["value"] for o in opts}
        self.dest = os.path.join(self.tmp, "dest")
        r = run(["meson", "install", "-C", BUILD, "--destdir", self.dest, "--no-rebuild",
                 "--quiet"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.prefix = self.opt["prefix"]
        self.root = self.dest + self.prefix
        # installed programs find the installed library (no rpath after install)
        self.libenv = dict(os.environ, LD_LIBRARY_PATH=self.path(self.opt["libdir"]))

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def test_every_file(self):
        o = self.opt
        libdir, bindir = o["libdir"], o["bindir"]
        want = [
            (bindir, "taskq"), (bindir, "taskq-master"), (bindir, "taskq-worker"),
            (o["includedir"], "taskq.h"),
            (libdir, "libtaskq.so"), (libdir, "libtaskq.a"),
            (libdir, "pkgconfig", "taskq.pc"),
            ("lib", "systemd", "system", "taskq-master.service"),
            ("lib", "systemd", "system", "taskq-worker@.service"),
            ("lib", "sysusers.d", "taskq.conf"),
            (o["datadir"], "doc", "taskq", "LICENSE"),
            (o["datadir"], "doc", "taskq", "examples", "master.conf"),
            (o["datadir"], "doc", "taskq", "examples", "worker.conf"),
            (o["datadir"], "doc", "taskq", "examples", "client.conf"),
            (o["datadir"], "bash-completion", "completions", "taskq"),
            (o["datadir"], "bash-completion", "completions", "taskq-master"),
            (o["datadir"], "bash-completion", "completions", "taskq-worker"),
        ]
        pages = [("man1", "taskq.1"), ("man8", "taskq-master.8"), ("man8", "taskq-worker.8"),
                 ("man5", "taskq.conf.5")]
        if shutil.which("scdoc"):
            want += [(o["mandir"], d, p) for d, p in pages]
        for parts in want:
            p = self.path(*parts)
            self.assertTrue(os.path.isfile(p), "not installed: %s" % p)
            self.assertGreater(os.path.getsize(p), 0, p)
        with open(self.path(o["datadir"], "doc", "taskq", "LICENSE")) as f:
            self.assertIn("MIT License", f.read())  # as meson.build declares
        # The units name the installed programs and the documented key.
        with open(self.path("lib", "systemd", "system", "taskq-master.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=%s/taskq-master --config /etc/taskq/master.conf"
                      % os.path.join(self.prefix, bindir), unit)
        for line in ("Type=notify", "StateDirectory=taskq", "ProtectSystem=strict",
                     "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                     "RestrictAddressFamilies="):
            self.assertIn(line, unit)
        with open(self.path("lib", "systemd", "system", "taskq-worker@.service")) as f:
            wunit = f.read()
        # SIGTERM to the worker only, so its running tasks drain; SIGKILL
        # to what is left once it exited (control-group would SIGTERM the
        # task processes too, failing their tasks at once)
        self.assertIn("KillMode=mixed", wunit)
        stop = int(re.search(r"^TimeoutStopSec=(\d+)$", wunit, re.M).group(1))
        self.assertGreater(stop, 30)  # above the default --drain-timeout
        r = run(["bash", "-n", self.path(o["datadir"], "bash-completion", "completions",
                                          "taskq")])
        self.assertEqual(r.returncode, 0, r.stderr)

    @unittest.skipUnless(shutil.which("scdoc") and shutil.which("man"), "scdoc or man missing")
    def test_man_pages_list_every_flag(self):
        env = dict(os.environ, MANWIDTH="200", LC_ALL="C")
        bindir = self.path(self.opt["bindir"])
        for prog, page, sec in (("taskq-master", "taskq-master.8", "man8"),
                                ("taskq-worker", "taskq-worker.8", "man8"),
                                ("taskq", "taskq.1", "man1")):
            text = run(["man", "-l", self.path(self.opt["mandir"], sec, page)], env=env).stdout
            helptext = run([os.path.join(bindir, prog), "--help"], env=self.libenv).stdout
            flags = set(re.findall(r"^  (--[a-z0-9-]+)", helptext, re.M))
            self.assertGreater(len(flags), 3, helptext)
            for flag in flags:
                self.assertIn(flag, text, "%s(%s) lacks %s" % (prog, sec, flag))
        conf = run(["man", "-l", self.path(self.opt["mandir"], "man5", "taskq.conf.5")],
                   env=env).stdout
        self.assertIn("file < environment < flags", conf)
        self.assertIn("--metrics-listen", conf)

    def test_pkg_config_program(self):
        if not shutil.which("cc") or not shutil.which("pkg-config"):
            self.skipTest("no cc or pkg-config")
        pcdir = self.path(self.opt["libdir"], "pkgconfig")
        env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_SYSROOT_DIR=self.dest)
        cflags = run(["pkg-config", "--cflags", "taskq"], env=env)
        self.assertEqual(cflags.returncode, 0, cflags.stderr)
        # Only what taskq.h needs: its own include directory.
        self.assertEqual(cflags.stdout.split(), ["-I" + self.path(self.opt["includedir"])])
        libs = run(["pkg-config", "--libs", "taskq"], env=env).stdout.split()
        self.assertIn("-ltaskq", libs)
        self.assertFalse([f for f in libs if "zmq" in f or "sodium" in f], libs)
        src = os.path.join(self.tmp, "prog.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        exe = os.path.join(self.tmp, "prog")
        # a sanitizer build's library needs the program built alike
        san = self.opt.get("b_sanitize", "none")
        san = ",".join(san) if isinstance(san, list) else san
        extra = ["-fsanitize=" + san] if san and san != "none" else []
        r = run(["cc", "-std=c11", "-Wall", "-Werror", "-o", exe, src] + extra
                + cflags.stdout.split() + libs)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run([exe], env=dict(os.environ, LD_LIBRARY_PATH=self.path(self.opt["libdir"])))
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "builtin0=square"), r)
        # It uses the installed library, not the build tree's.
        r = run(["ldd", exe], env=dict(os.environ, LD_LIBRARY_PATH=self.path(self.opt["libdir"])))
        self.assertIn(self.path(self.opt["libdir"], "libtaskq.so"), r.stdout)

    def test_example_configs_check(self):
        ex = self.path(self.opt["datadir"], "doc", "taskq", "examples")
        bindir = self.path(self.opt["bindir"])
        for prog, conf in (("taskq-master", "master.conf"), ("taskq-worker", "worker.conf")):
            r = run([os.path.join(bindir, prog), "--config", os.path.join(ex, conf),
                     "--check-config"], env=self.libenv)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "configuration OK"),
                             prog + ": " + r.stderr)
        # The client's example: its keys are the client's global options.
        with open(os.path.join(ex, "client.conf")) as f:
            keys = re.findall(r"^([a-z-]+)\s*=", f.read(), re.M)
        helptext = run([os.path.join(bindir, "taskq"), "--help"], env=self.libenv).stdout
        for k in keys:
            self.assertIn("--" + k, helptext)

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze missing")
    def test_systemd_analyze_verify(self):
        # verify checks that ExecStart exists: point it at the DESTDIR copy.
        units = os.path.join(self.tmp, "units")
        os.makedirs(units)
        bindir = os.path.join(self.prefix, self.opt["bindir"])
        for u, name in (("taskq-master.service", "taskq-master.service"),
                        ("taskq-worker@.service", "taskq-worker@test.service")):
            with open(self.path("lib", "systemd", "system", u)) as f:
                text = f.read().replace(bindir + "/", self.dest + bindir + "/")
            with open(os.path.join(units, name), "w") as f:
                f.write(text)
        env = dict(os.environ, MANPATH=self.path(self.opt["mandir"]))
        if not shutil.which("man") or not shutil.which("scdoc"):
            env["SYSTEMD_MAN"] = "0"
        r = run(["systemd-analyze", "verify", "taskq-master.service",
                 "taskq-worker@test.service"] + ([] if shutil.which("man") else ["--man=no"]),
                cwd=units, env=env)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))


if __name__ == "__main__":
    main()
