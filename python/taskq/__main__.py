"""python -m taskq: the common commands of the `taskq` program, in Python.

    python -m taskq [--connect E] [--authkey-file F] [--connect-timeout S]
                    submit|wait|map|status|cancel|dead|retry|purge|pause|resume ...

Same defaults (TASKQ_CONNECT, TASKQ_AUTHKEY_FILE), output and exit
statuses as `taskq` (docs/cli.md) for what it offers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Iterator, List, Optional

from . import errors
from .client import Client
from .errors import TaskqError


def _payloads(args: List[str]) -> Iterator[str]:
    if args == ["-"]:
        for line in sys.stdin:
            yield line[:-1] if line.endswith("\n") else line
    else:
        yield from args


def _print_result(r: str) -> None:
    sys.stdout.write(r if r.endswith("\n") else r + "\n")


def _outcome_status(e: BaseException) -> int:
    if isinstance(e, errors.TaskFailed):
        print("taskq: task %d failed: %s" % (e.task_id, e.message.rstrip("\n").replace("\n", "?")),
              file=sys.stderr)
    elif isinstance(e, errors.TaskCancelled):
        print("taskq: task %d cancelled" % e.task_id, file=sys.stderr)
    elif isinstance(e, errors.TaskUnknown):
        print("taskq: task %d unknown" % e.task_id, file=sys.stderr)
    else:
        raise e
    return getattr(e, "exit_status", 1)


def _worst(a: int, b: int) -> int:
    order = {0: 0, errors.EXIT_CANCELLED: 1, errors.EXIT_NOT_FOUND: 2, errors.EXIT_TASK_FAILED: 3}
    return a if order.get(a, 9) >= order.get(b, 9) else b


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m taskq", description=__doc__.split("\n")[0])
    p.add_argument("--connect")
    p.add_argument("--authkey-file")
    p.add_argument("--key", dest="key_file", help="key-pair mode: this client's NAME.key")
    p.add_argument("--master-key", dest="master_key_file",
                   help="key-pair mode: the master's public key (.pub)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--reconnect-timeout", type=float, default=60.0)
    p.add_argument("--version", action="version", version="taskq (python) 0.1.0")
    sub = p.add_subparsers(dest="cmd", required=True)

    def task_opts(s: argparse.ArgumentParser) -> None:
        s.add_argument("--fn", default="square")
        s.add_argument("--queue", default="")
        s.add_argument("--priority", type=int, default=0)
        s.add_argument("--timeout", type=float, default=0)
        s.add_argument("--retries", type=int, default=0)
        s.add_argument("--delay", type=float, default=0)
        s.add_argument("payloads", nargs="+")

    s = sub.add_parser("submit", help="queue tasks, print their ids")
    task_opts(s)
    s.add_argument("--key")
    s = sub.add_parser("map", help="run tasks, print results in input order")
    task_opts(s)
    s.add_argument("--window", type=int, default=10000)
    s = sub.add_parser("wait", help="print the results of tasks")
    s.add_argument("--timeout", type=float, default=0)
    s.add_argument("ids", nargs="+")
    s = sub.add_parser("status", help="the master's status")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("cancel", help="cancel tasks")
    s.add_argument("ids", nargs="+")
    s = sub.add_parser("dead", help="list dead tasks")
    s.add_argument("--queue")
    for name in ("retry", "purge"):
        s = sub.add_parser(name, help="%s dead tasks" % name)
        s.add_argument("--all", action="store_true")
        s.add_argument("--queue")
        s.add_argument("ids", nargs="*", type=int)
    for name in ("pause", "resume"):
        s = sub.add_parser(name, help="%s a queue" % name)
        s.add_argument("queue")
    return p


def _ids(args: List[str]) -> List[int]:
    out = []
    for a in (" ".join(sys.stdin.read().split()).split() if args == ["-"] else args):
        if not a.isdigit() or int(a) == 0:
            raise SystemExit("taskq: '%s' is not a task id" % a) from None
        out.append(int(a))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    a = _parser().parse_args(argv)
    try:
        ids = _ids(a.ids) if a.cmd in ("wait", "cancel") else []
    except SystemExit as e:
        print(e, file=sys.stderr)
        return errors.EXIT_USAGE
    try:
        c = Client(a.connect, a.authkey_file, key_file=a.key_file,
                   master_key_file=a.master_key_file, connect_timeout=a.connect_timeout,
                   reconnect_timeout=a.reconnect_timeout)
    except TaskqError as e:
        print("taskq: %s" % e, file=sys.stderr)
        return e.exit_status
    try:
        with c:
            return _run(c, a, ids)
    except TaskqError as e:
        print("taskq: %s" % e, file=sys.stderr)
        return e.exit_status
    except BrokenPipeError:
        return 0


def _run(c: Client, a: argparse.Namespace, ids: List[int]) -> int:
    if a.cmd in ("submit", "map"):
        kw = dict(queue=a.queue, priority=a.priority, timeout=a.timeout, retries=a.retries,
                  delay=a.delay)
        if a.cmd == "submit":
            if a.key is not None:
                hs = [c.submit(a.fn, p, key=a.key, **kw) for p in _payloads(a.payloads)]
            else:
                hs = c.submit_many(a.fn, list(_payloads(a.payloads)), **kw)
            for h in hs:
                print(h.id)
            return 0
        rc = 0
        # Client.map raises at the first failure; the CLI prints every line.
        for h in _map_outcomes(c, a.fn, a.payloads, a.window, kw):
            e = h.exception()
            if e is None:
                _print_result(h.result())
            else:
                rc = _worst(rc, _outcome_status(e))
        return rc
    if a.cmd == "wait":
        rc = 0
        hs = [c.task(i, text=True) for i in ids]
        end = time.monotonic() + a.timeout if a.timeout else None
        for n, h in enumerate(hs):
            try:
                _print_result(h.result(None if end is None else max(0.0, end - time.monotonic())))
            except errors.Timeout:
                print("taskq: timed out waiting for task %d (%d of %d results not printed)"
                      % (h.id, len(hs) - n, len(hs)), file=sys.stderr)
                return errors.EXIT_TIMEOUT
            except TaskqError as e:
                rc = _worst(rc, _outcome_status(e))
        return rc
    if a.cmd == "status":
        st = c.status()
        if a.json:
            print(json.dumps(st))
        else:
            t = st["totals"]
            print("master %s at %s: %d queued, %d running, %d done, %d failed, %d dead; "
                  "%d worker(s), %d client(s)" % (st["master"]["version"], st["master"]["endpoint"],
                                                  t["queued"], t["running"], t["done"],
                                                  t["failed"], t["dead"], st["workers_total"],
                                                  st["clients"]))
        return 0
    if a.cmd == "cancel":
        rc = 0
        for tid, outcome in c.cancel_many(ids):
            print("%d %s" % (tid, "already finished" if outcome == "finished" else outcome))
            if outcome == "unknown":
                rc = errors.EXIT_NOT_FOUND
        return rc
    if a.cmd == "dead":
        for t in c.dead(a.queue):
            print(json.dumps(t))
        return 0
    if a.cmd in ("retry", "purge"):
        f = c.retry if a.cmd == "retry" else c.purge
        n = f(a.ids or None, all=a.all, queue=a.queue) if (a.ids or a.all) else None
        if n is None:
            print("taskq: give ids or --all", file=sys.stderr)
            return errors.EXIT_USAGE
        print(n)
        return 0
    if a.cmd in ("pause", "resume"):
        (c.pause if a.cmd == "pause" else c.resume)(a.queue)
        return 0
    return errors.EXIT_USAGE


def _map_outcomes(c: Client, fn: str, payloads: List[str], window: int, kw: dict):
    """Handles in input order with at most ``window`` in flight."""
    import collections
    import itertools
    it = iter(_payloads(payloads))
    pending: "collections.deque" = collections.deque()
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            chunk = list(itertools.islice(it, min(1024, window - len(pending))))
            if not chunk:
                exhausted = True
                break
            pending.extend(c.submit_many(fn, chunk, **kw))
        if not pending:
            return
        h = pending.popleft()
        h.exception()
        yield h


if __name__ == "__main__":
    sys.exit(main())
