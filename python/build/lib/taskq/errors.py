"""Exceptions of the taskq package.

Every exception carries ``exit_status``, the number the taskq programs
exit with for the same condition (common/tq_exit.h), so a script can
``sys.exit(e.exit_status)``. Errors the master sent carry its protocol
``code`` (PROTOCOL.md section 10) and ``message``.
"""

from __future__ import annotations

import builtins
from typing import Optional

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_CANCELLED = 5
EXIT_NOT_FOUND = 6
EXIT_REFUSED = 7
EXIT_ENV = 8


class TaskqError(Exception):
    """Base class of every taskq exception."""

    exit_status = EXIT_TASK_FAILED


class KeyFileError(TaskqError):
    """The authkey file is missing, unreadable, too open or too short."""

    exit_status = EXIT_ENV


class ConnectionError(TaskqError, builtins.ConnectionError):
    """The master cannot be reached (after the connect timeout), or it
    went away and did not come back within the reconnect timeout."""

    exit_status = EXIT_CONNECT


class AuthenticationError(ConnectionError):
    """The master has another authkey (the CURVE handshake failed)."""


class Refused(TaskqError):
    """The master refused a request: ``code`` and ``message`` are its ERROR."""

    exit_status = EXIT_REFUSED

    def __init__(self, code: int, message: str) -> None:
        super().__init__("refused (code %d): %s" % (code, message))
        self.code = code
        self.message = message


class TaskFailed(TaskqError):
    """A task failed (or is dead): ``message`` is its error text,
    ``status`` "failed" or "dead", ``attempts`` the runs it took."""

    exit_status = EXIT_TASK_FAILED

    def __init__(self, task_id: int, status: str, attempts: int, message: str) -> None:
        super().__init__("task %d %s after %d attempts: %s" % (task_id, status, attempts, message))
        self.task_id = task_id
        self.status = status
        self.attempts = attempts
        self.message = message
        self.code = 2 if status == "failed" else 5


class TaskCancelled(TaskqError):
    """The task was cancelled."""

    exit_status = EXIT_CANCELLED

    def __init__(self, task_id: int) -> None:
        super().__init__("task %d cancelled" % task_id)
        self.task_id = task_id
        self.code = 3


class TaskUnknown(TaskqError):
    """The master does not know the task (never existed, or expired)."""

    exit_status = EXIT_NOT_FOUND

    def __init__(self, task_id: int) -> None:
        super().__init__("task %d unknown to the master" % task_id)
        self.task_id = task_id
        self.code = 4


class Timeout(TaskqError, TimeoutError):
    """A wait passed its timeout (the task goes on)."""

    exit_status = EXIT_TIMEOUT
