"""How tests wait: for a condition (``until``), or on a fake clock (``FakeClock``, ``SimClock``, ``PollerTime``).

No test sleeps to hit a moment and no test asserts on wall-clock time:

- ``until(predicate)`` polls a condition that other threads or processes bring about (a run
  finishing, a row appearing) and fails saying what it waited for. The timeout is a safety net
  for a hang, never part of what is checked.
- ``FakeClock`` is a clock whose ``sleep`` passes at once; ``SimClock`` puts a simulator's request
  handling (its rate limiter, its ``Faults(latency=...)`` pause, its ``Date`` header) on one;
  ``PollerTime`` puts a live poller's clock and sleeps on virtual time. A promise about time
  ("waits the 0.5 s the server asked", "fewer than 40 cycles a second") is then checked exactly.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, TypeVar

import pytest

T = TypeVar("T")

TIMEOUT = 60.0  # a safety net for a hang: on a healthy run every wait ends long before it


def until(predicate: Callable[[], T], timeout: float = TIMEOUT, what: str | Callable[[], str] | None = None, *,
          interval: float = 0.01, fail: bool = True) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    After ``timeout`` seconds the test fails, naming ``what`` it waited for (a string, or a function
    giving one, to show the state at that point) and the last value seen
    (with ``fail=False`` the last, falsy, value is returned instead, for callers that report
    themselves, such as the reliability checks shared with the benchmarks).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if not fail:
                return value
            said = what() if callable(what) else what
            pytest.fail(f"gave up after {timeout:g} s waiting for {said or _describe(predicate)} "
                        f"(last value: {value!r})", pytrace=False)
        time.sleep(interval)


def _describe(predicate: Callable[..., Any]) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return f"{getattr(predicate, '__qualname__', 'a condition')} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"


class FakeClock:
    """Seconds that move only when something sleeps on them (or the test calls ``advance``).

    Used from one thread, a sleep passes at once. Threads that run side by side on it each say so
    (``with clock.taking_part():``): a sleep then lasts until the clock reaches its end, and the clock
    jumps to the earliest end only once every taking part thread sleeps (or has left), as time would
    pass for threads sleeping at the same time. Threads not taking part must not sleep on it then.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self.slept: list[float] = []
        self._lock = threading.Condition()
        self._taking_part = 0
        self._ends: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            if not self._taking_part:
                self.now += max(0.0, seconds)
                return
            end = self.now + max(0.0, seconds)
            self._ends.append(end)
            self._move()
            while self.now < end:
                self._lock.wait()
            self._ends.remove(end)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self._lock.notify_all()

    @contextmanager
    def taking_part(self) -> Iterator[None]:
        with self._lock:
            self._taking_part += 1
        try:
            yield
        finally:
            with self._lock:
                self._taking_part -= 1
                self._move()

    def _move(self) -> None:
        """Every taking part thread asleep: on to the earliest end (called with the lock held)."""
        if self._ends and len(self._ends) >= self._taking_part:
            self.now = max(self.now, min(self._ends))
            self._lock.notify_all()


class _FakeTime:
    """The ``time`` module as the simulator's request handler sees it: its sleeps pass on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class SimClock(FakeClock):
    """A simulator whose request handling runs on this fake clock: rate limiter, latency, ``Date``.

    The simulator takes no clock from outside (a ``FloraSimulator(clock=...)`` hook would make this
    class a one-liner), so this is the one place tests reach into it. Runs keep the simulator's real
    clock; only what happens per request moves to the fake one, which starts at the server's current
    time. For the test's length every simulator in the process pauses for latency on this clock.
    """

    def __init__(self, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from flora_nb.sim import _server

        app = sim._app  # the request handler shared by the server's threads
        super().__init__(app.clock())
        monkeypatch.setattr(app, "clock", self)
        monkeypatch.setattr(_server, "time", _FakeTime(self))


class PollerTime(Generic[T]):
    """A stretch of a live poller's own time, run on virtual time; ``seen`` is what ``snapshot()`` gave at its end.

    The poller's clock is replaced by a virtual one, and every ``wait(timeout)`` its loop makes
    advances that clock by ``timeout`` and returns at once, unless something woke the poller (a new
    run to track, ``stop()``): that wait returns at once too, as it would. So what the poller does in
    a stretch of its own time (cycles, requests, errors) depends only on the waits it chooses, never
    on how busy the machine is.

    Once ``start_when()`` holds, ``seconds`` of poller time pass; then ``snapshot()`` is taken (in the
    poller's thread, before the wait that crosses the end), ``closed`` is set, and the poller is
    handed back to real time (its clock goes on from there).
    """

    def __init__(self, poller: Any, seconds: float, snapshot: Callable[[], T],
                 start_when: Callable[[], bool] = lambda: True) -> None:
        self.seen: T | None = None
        self.closed = threading.Event()
        self._seconds, self._snapshot, self._start_when = seconds, snapshot, start_when
        # A session's poller takes no clock or wait from outside (a product hook would replace these two lines).
        self._event = poller._wake
        self._real_wait = self._event.wait
        self._virtual = time.monotonic()
        self._started_at: float | None = None
        self._switched_at: float | None = None  # real monotonic time when handed back to real time
        self._lock = threading.Lock()
        poller._clock = self.clock
        self._event.wait = self._wait

    def clock(self) -> float:
        with self._lock:
            if self._switched_at is None:
                return self._virtual
            return self._virtual + (time.monotonic() - self._switched_at)

    def _wait(self, timeout: float | None = None) -> bool:
        if self._switched_at is not None or timeout is None or self._event.is_set():
            return self._real_wait(timeout)
        if self._started_at is None and self._start_when():
            self._started_at = self._virtual
        end = None if self._started_at is None else self._started_at + self._seconds
        if end is not None and self._virtual + timeout >= end:
            self.seen = self._snapshot()
            with self._lock:
                left = self._virtual + timeout - end
                self._virtual = end
                self._switched_at = time.monotonic()
            self.closed.set()
            return self._real_wait(left)
        with self._lock:
            self._virtual += timeout
        return False
