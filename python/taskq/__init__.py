"""taskq: a Python client, worker and Pool for a taskq master.

Pure Python (standard library + pyzmq). Speaks proto/PROTOCOL.md v1::

    import taskq
    with taskq.Client("tcp://127.0.0.1:7070", "~/.taskq/authkey") as c:
        print(c.submit("square", "7").result())          # 7 * 7 = 49
        for r in c.map("square", (str(i) for i in range(10))):
            print(r)

See docs/python.md.
"""

from .errors import (AuthenticationError, ConnectionError, Fail, KeyFileError, Refused,
                     TaskCancelled, TaskFailed, TaskqError, TaskUnknown, Timeout)
from ._auth import derive_keys, read_authkey
from .client import Client, Handle

__version__ = "0.1.0"

__all__ = ["Client", "Handle", "Worker", "Pool", "AsyncResult", "Executor",
           "TaskqError", "TaskFailed", "TaskCancelled", "TaskUnknown", "Refused",
           "AuthenticationError", "ConnectionError", "KeyFileError", "Timeout", "Fail",
           "derive_keys", "read_authkey"]


def __getattr__(name: str):
    # Worker and Pool load on first use, so a client-only program stays small.
    if name == "Worker":
        from .worker import Worker
        return Worker
    if name in ("Pool", "AsyncResult", "Executor"):
        from . import pool
        return getattr(pool, name)
    raise AttributeError("module 'taskq' has no attribute %r" % name)
