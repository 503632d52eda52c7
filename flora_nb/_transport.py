"""The socket layer under FloraClient: one total deadline per request, and a way to abort one.

A read timeout bounds each socket read, not the request: a server that trickles one byte a
second never trips it. Here every request runs under a ``Deadline``; when it passes (or the
request is aborted, e.g. by ``Flora.close()``) the connection's socket is shut down, which wakes
any blocked read at once. The pooled connections tell the deadline of their thread which socket
is theirs, so the connect, the headers and every body read are all covered.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Deadline", "DeadlineAdapter"]

_current = threading.local()


class _Watchdog:
    """One daemon thread that expires every deadline of the process when its time comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flora_nb-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:  # only an earlier deadline needs the watchdog awake
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][2].finished:
                    if self._heap:
                        heapq.heappop(self._heap)  # done in time: forget it
                    else:
                        self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline.expire()


_WATCHDOG = _Watchdog()


class Deadline:
    """A total time limit for one request on this thread; ``abort()`` ends it early."""

    def __init__(self, seconds: float, cancel: threading.Event | None = None):
        self.seconds = seconds
        self.at = time.monotonic() + max(seconds, 0.0)
        self.expired = False
        self.aborted = False
        self.finished = False
        self._cancel = cancel
        self._conn: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> Deadline:
        _current.deadline = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
        with self._lock:
            self.finished = True
            self._conn = None

    @property
    def over(self) -> bool:
        return self.expired or self.aborted or bool(self._cancel and self._cancel.is_set())

    def bind(self, conn: Any) -> None:
        """The connection this request uses (called by the connection itself)."""
        with self._lock:
            self._conn = conn
            if self.over:
                self._shut()

    def abort(self) -> None:
        """End the request now (from any thread)."""
        with self._lock:
            self.aborted = True
            self._shut()

    def expire(self) -> None:
        """The time is up (called by the watchdog thread)."""
        with self._lock:
            if not self.finished:
                self.expired = True
                self._shut()

    def _shut(self) -> None:
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed: nothing left to wake
                pass


def _bind(conn: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.bind(conn)


class _Bound:
    """Mixin for urllib3 connections: tell this thread's deadline which socket to shut."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _bind(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _bind(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _Conn(_Bound, HTTPConnection):
    pass


class _SConn(_Bound, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _SPool(HTTPSConnectionPool):
    ConnectionCls = _SConn


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections obey the ``Deadline`` of the thread using them."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _SPool}
