"""taskq.Pool and taskq.Executor: the multiprocessing.Pool and
concurrent.futures shapes over a taskq cluster.

Functions are named (the name a worker registered), not Python callables:
the work runs on the cluster's workers. An argument is a ``str``,
``bytes``, ``int`` or ``float`` (numbers travel as their decimal text);
results are ``str`` (``bytes`` for a ``bytes`` argument)::

    with taskq.Pool() as p:
        r = p.apply_async("square", ("7",))
        print(r.get(timeout=10))                    # 7 * 7 = 49
        print(p.map("square", range(10)))
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

from .client import Client, Handle, Payload
from .errors import TaskqError, Timeout


def _arg(args: Any) -> Payload:
    """The payload of one task from apply_async's args (or a map item)."""
    if isinstance(args, tuple):
        if len(args) != 1:
            raise TypeError("a taskq task takes exactly one argument (its payload), got %d"
                            % len(args))
        args = args[0]
    if isinstance(args, (str, bytes)):
        return args
    if isinstance(args, (int, float)) and not isinstance(args, bool):
        return str(args)
    raise TypeError("a taskq payload is str, bytes, int or float, not %s" % type(args).__name__)


def _fn_name(func: Any) -> str:
    """A function name, or a callable standing for the function a worker
    registered under its name (``@worker.function`` sets ``__taskq_name__``;
    otherwise ``__name__``), so ``p.apply_async(long_time_task, (i,))`` works."""
    if isinstance(func, str):
        return func
    name = getattr(func, "__taskq_name__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise TypeError("give a function name (str) or a named function, not %r" % (func,))
    return name


class AsyncResult:
    """multiprocessing.pool.AsyncResult for one task."""

    def __init__(self, handle: Handle, callback: Optional[Callable[[Any], None]] = None,
                 error_callback: Optional[Callable[[BaseException], None]] = None) -> None:
        self.handle = handle
        if callback or error_callback:
            def done(h: Handle) -> None:
                e = h.exception()
                if e is None:
                    if callback:
                        callback(h.result())
                elif error_callback:
                    error_callback(e)
            handle.add_done_callback(done)

    def get(self, timeout: Optional[float] = None) -> Payload:
        """The result; raises the task's error (TaskFailed, ...) or
        multiprocessing's TimeoutError after ``timeout`` seconds."""
        try:
            return self.handle.result(timeout)
        except Timeout:
            import multiprocessing
            raise multiprocessing.TimeoutError() from None

    def wait(self, timeout: Optional[float] = None) -> None:
        concurrent.futures.wait([self.handle.future], timeout)

    def ready(self) -> bool:
        return self.handle.done()

    def successful(self) -> bool:
        """True if the task succeeded; ValueError while it is not ready."""
        if not self.ready():
            raise ValueError("%r not ready" % self)
        return self.handle.exception() is None


class Pool:
    """``multiprocessing.Pool`` over a taskq master: ``apply_async``,
    ``apply``, ``map``, ``imap``, ``imap_unordered``, ``close``, ``join``,
    ``terminate``; a context manager. ``processes`` is accepted for
    compatibility and ignored: the cluster's workers decide how many
    tasks run at once; ``window`` bounds the tasks imap/map keep in flight."""

    def __init__(self, processes: Optional[int] = None, *, connect: Optional[str] = None,
                 authkey_file: Optional[str] = None, client: Optional[Client] = None,
                 window: int = 1000, **client_kw: Any) -> None:
        self._own = client is None
        self.client = client or Client(connect, authkey_file, **client_kw)
        self.window = window
        self._closed = False
        self._lock = threading.Lock()
        self._outstanding: "set[Handle]" = set()

    def _check(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    def _track(self, h: Handle) -> Handle:
        with self._lock:
            self._outstanding.add(h)
        h.add_done_callback(self._untrack)
        return h

    def _untrack(self, h: Handle) -> None:
        with self._lock:
            self._outstanding.discard(h)

    def apply_async(self, func: Any, args: Any = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable[[Any], None]] = None,
                    error_callback: Optional[Callable[[BaseException], None]] = None,
                    **submit_kw: Any) -> AsyncResult:
        """Run ``func`` (a function name, or a function whose name a worker
        serves) on ``args`` (one payload) on the cluster."""
        self._check()
        if kwds:
            raise TypeError("taskq tasks take no keyword arguments")
        return AsyncResult(self._track(self.client.submit(_fn_name(func), _arg(args), **submit_kw)),
                           callback, error_callback)

    def apply(self, func: Any, args: Any = (), kwds: Optional[dict] = None) -> Payload:
        return self.apply_async(func, args, kwds).get()

    def map(self, func: Any, iterable: Iterable[Any], chunksize: Optional[int] = None,
            **submit_kw: Any) -> List[Payload]:
        """Results of ``func`` on every item, in order (as a list)."""
        return list(self.imap(func, iterable, **submit_kw))

    def imap(self, func: Any, iterable: Iterable[Any], chunksize: int = 1,
             **submit_kw: Any) -> Iterator[Payload]:
        """Results in input order, as they come; bounded memory (window)."""
        self._check()
        return self.client.map(_fn_name(func), (_arg(x) for x in iterable), window=self.window,
                               **submit_kw)

    def imap_unordered(self, func: Any, iterable: Iterable[Any], chunksize: int = 1,
                       **submit_kw: Any) -> Iterator[Payload]:
        """Results in the order tasks finish; bounded memory (window)."""
        self._check()
        return self.client.map_unordered(_fn_name(func), (_arg(x) for x in iterable),
                                         window=self.window,
                                         **submit_kw)

    def starmap(self, func: Any, iterable: Iterable[Sequence[Any]]) -> List[Payload]:
        return self.map(func, (tuple(a) for a in iterable))

    def close(self) -> None:
        """No more tasks; join() then waits for the outstanding ones."""
        self._closed = True

    def join(self) -> None:
        if not self._closed:
            raise ValueError("Pool is still running")
        with self._lock:
            hs = list(self._outstanding)
        concurrent.futures.wait([h.future for h in hs])
        if self._own:
            self.client.close()

    def terminate(self) -> None:
        """Cancel outstanding tasks at the master and close."""
        self._closed = True
        with self._lock:
            hs = list(self._outstanding)
        for h in hs:
            try:
                h.cancel()
            except TaskqError:
                pass
        if self._own:
            self.client.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        # multiprocessing.Pool's __exit__ terminates; ours lets submitted
        # tasks stay at the master (they run anyway) and closes the link.
        self._closed = True
        if self._own:
            self.client.close()


class Executor(concurrent.futures.Executor):
    """A concurrent.futures.Executor over a taskq master:
    ``submit(fn_name, payload)`` returns a Future; ``map`` and
    ``shutdown`` as the standard library's."""

    def __init__(self, connect: Optional[str] = None, authkey_file: Optional[str] = None, *,
                 client: Optional[Client] = None, **client_kw: Any) -> None:
        self._own = client is None
        self.client = client or Client(connect, authkey_file, **client_kw)
        self._shutdown = False
        self._futures: "set[concurrent.futures.Future]" = set()
        self._lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        h = self.client.submit(_fn_name(fn), _arg(args), **kwargs)
        f = h.future
        with self._lock:
            self._futures.add(f)
        f.add_done_callback(self._discard)
        return f

    def _discard(self, f: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(f)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if wait:
            with self._lock:
                fs = list(self._futures)
            concurrent.futures.wait(fs)
        if self._own:
            self.client.close()
