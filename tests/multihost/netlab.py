"""netlab - a throw-away multi-host network built from Linux network
namespaces, and programs started inside it.

A Lab is a star: one "hub" host (the master) and spoke hosts (workers, the
client), each spoke joined to the hub by its own veth pair with its own /24
(10.213.K.0/24, hub side .1, spoke side .2). Namespace and interface names
carry a per-run prefix `tqmh<pid>` so two runs never collide, and
`sweep_leftovers()` removes what an earlier run whose pid is gone left
behind (a SIGKILLed test cannot clean up after itself).

Everything this module creates is remembered in a registry and removed by
`cleanup_all()`, which runs from try/finally in the tests, from atexit,
and from the SIGTERM/SIGHUP handler (meson's timeout sends SIGTERM):
processes first (SIGKILL to their whole session), then the namespaces
(deleting a namespace deletes the veth ends inside it and, with them,
their peers).

Needs root, iproute2 and network namespaces; `usable()` says why not.
Standard library only.
"""

import atexit
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
PREFIX = "tqmh%d" % os.getpid()
_LEFTOVER_RE = re.compile(r"^tqmh(\d+)")
# Bound on every ip/tc command: they are local and quick.
CMD_TIMEOUT = 15

_LIVE_PROCS = set()      # Proc objects still running
_LIVE_NETNS = set()      # namespace names created by this run
_LIVE_LINKS = set()      # root-namespace links created by this run
_LIVE_CALLBACKS = []     # extra cleanups (e.g. temp dirs)
_cleanup_lock = threading.RLock()


def log(msg):
    sys.stderr.write("[netlab %.3f] %s\n" % (time.monotonic(), msg))
    sys.stderr.flush()


def run(argv, check=True, timeout=CMD_TIMEOUT):
    """Run a short command; returns CompletedProcess (text). check=True
    raises RuntimeError with the command's stderr on failure."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        raise RuntimeError("%s: no answer within %ss" % (" ".join(argv), timeout))
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                (r.stderr or r.stdout).strip()))
    return r


def ip(*args, check=True):
    return run([IP] + list(args), check=check)


def usable():
    """None if we can build namespaces here, else the reason we cannot."""
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_NET_ADMIN/CAP_SYS_ADMIN)"
    if not os.path.exists(IP):
        return "iproute2 `ip` not found"
    probe = "%s-probe" % PREFIX
    try:
        ip("netns", "add", probe)
        _LIVE_NETNS.add(probe)
        ip("-n", probe, "link", "set", "lo", "up")
    except RuntimeError as e:
        return "`ip netns` is not usable here: %s" % e
    finally:
        ip("netns", "del", probe, check=False)
        _LIVE_NETNS.discard(probe)
    return None


# ---- processes ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """preexec_fn: SIGKILL this child when the test process dies (even by
    SIGKILL); the ip-netns-exec'd program keeps it across exec."""
    try:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


class Proc:
    """A program started in a namespace (or the root namespace if ns is
    None), in its own session, output to a log file (or to pipes)."""

    def __init__(self, name, ns, argv, log_path=None, stdin=None, stdout=None,
                 env=None):
        self.name = name
        self.ns = ns
        self.argv = list(argv)
        full = ([IP, "netns", "exec", ns] if ns else []) + self.argv
        self.log_path = log_path
        self.logf = open(log_path, "wb") if log_path else None
        out = stdout if stdout is not None else self.logf
        err = self.logf if self.logf else subprocess.PIPE
        self.p = subprocess.Popen(full, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=out, stderr=err, env=env,
                                  start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self.p.pid
        self.close_stdout = True
        with _cleanup_lock:
            _LIVE_PROCS.add(self)

    def alive(self):
        return self.p.poll() is None

    def kill9(self):
        """SIGKILL, like a crash (and reap it)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace=3.0):
        """SIGTERM, SIGKILL after grace seconds, then SIGKILL to its session."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.p.poll() is None:
            self.kill9()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with _cleanup_lock:
            _LIVE_PROCS.discard(self)
        # Pipes we opened (stdout is left to whoever reads it).
        if self.p.stdin:
            try:
                self.p.stdin.close()
            except OSError:
                pass
        if self.p.stdout and self.close_stdout:
            self.p.stdout.close()
        if self.logf:
            self.logf.close()
            self.logf = None

    def output(self):
        if not self.log_path:
            return ""
        if self.logf:
            self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def tail(text, n=30):
    return "\n".join(text.splitlines()[-n:])


# ---- the topology ------------------------------------------------------------

class Lab:
    """hub namespace + spokes. lab.ns(host) is a namespace name,
    lab.hub_addr(host) the hub's address on that host's link (what the host
    connects to), lab.hub_dev(host)/lab.spoke_dev(host) the veth ends."""

    def __init__(self, hub, spokes, net="10.213"):
        self.hub = hub
        self.spokes = list(spokes)
        self.net = net
        self.index = {h: i + 1 for i, h in enumerate(self.spokes)}

    def ns(self, host):
        return "%s-%s" % (PREFIX, host)

    def hub_dev(self, host):
        return "%s%sh" % (PREFIX, host)

    def spoke_dev(self, host):
        return "%s%s" % (PREFIX, host)

    def hub_addr(self, host):
        return "%s.%d.1" % (self.net, self.index[host])

    def spoke_addr(self, host):
        return "%s.%d.2" % (self.net, self.index[host])

    def create(self):
        for h in [self.hub] + self.spokes:
            assert len(self.hub_dev(h)) <= 15, "interface name too long"
            n = self.ns(h)
            ip("netns", "add", n)
            _LIVE_NETNS.add(n)
            ip("-n", n, "link", "set", "lo", "up")
        hub_ns = self.ns(self.hub)
        for h in self.spokes:
            a, b = self.hub_dev(h), self.spoke_dev(h)
            # Create both ends directly in their namespaces: nothing is
            # ever left in the root namespace.
            ip("link", "add", a, "netns", hub_ns, "type", "veth",
               "peer", "name", b, "netns", self.ns(h))
            ip("-n", hub_ns, "addr", "add", "%s/24" % self.hub_addr(h), "dev", a)
            ip("-n", self.ns(h), "addr", "add", "%s/24" % self.spoke_addr(h), "dev", b)
            ip("-n", hub_ns, "link", "set", a, "up")
            ip("-n", self.ns(h), "link", "set", b, "up")

    def link(self, host, up):
        """Cut (up=False) or heal a spoke's link, on the hub side."""
        ip("-n", self.ns(self.hub), "link", "set", "dev", self.hub_dev(host),
           "up" if up else "down")

    def destroy(self):
        destroy_netns([self.ns(h) for h in [self.hub] + self.spokes])


def destroy_netns(names):
    for n in names:
        kill_ns_pids(n)
        ip("netns", "del", n, check=False)
        with _cleanup_lock:
            _LIVE_NETNS.discard(n)


def kill_ns_pids(n):
    r = ip("netns", "pids", n, check=False)
    for tok in (r.stdout or "").split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers():
    """Remove namespaces and root-namespace links named tqmh<pid>... whose
    run (pid) is gone. Returns what was removed."""
    removed = []
    r = ip("netns", "list", check=False)
    for line in (r.stdout or "").splitlines():
        name = line.split()[0] if line.split() else ""
        m = _LEFTOVER_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            destroy_netns([name])
            removed.append(name)
    r = ip("-o", "link", "show", check=False)
    for line in (r.stdout or "").splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = _LEFTOVER_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    if removed:
        log("removed leftovers of earlier runs: %s" % ", ".join(removed))
    return removed


def on_cleanup(fn):
    _LIVE_CALLBACKS.append(fn)


def cleanup_all():
    """Kill every process, delete every namespace this run made. Safe to
    call more than once and from a signal handler."""
    with _cleanup_lock:
        for p in list(_LIVE_PROCS):
            for target in (lambda: os.killpg(p.pid, signal.SIGKILL),
                           lambda: os.kill(p.pid, signal.SIGKILL)):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                p.p.wait(timeout=5)
            except Exception:  # noqa: BLE001
                pass
            _LIVE_PROCS.discard(p)
        for n in list(_LIVE_NETNS):
            destroy_netns([n])
        for name in list(_LIVE_LINKS):
            ip("link", "del", name, check=False)
            _LIVE_LINKS.discard(name)
        while _LIVE_CALLBACKS:
            fn = _LIVE_CALLBACKS.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001
                pass


def _on_signal(signum, _frame):
    try:
        cleanup_all()
    finally:
        os._exit(128 + signum)


atexit.register(cleanup_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)
