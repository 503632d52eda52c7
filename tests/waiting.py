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
from dataclasses import dataclass, field
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

    The simulator offers no clock of its own to pass in (see the report: ``FloraSimulator(clock=...)``
    would make this class a one-liner), so this is the one place tests reach into it. Runs keep the
    simulator's real clock; only what happens per request moves to the fake one, which starts at
    the server's current time.
    """

    def __init__(self, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from flora_nb.sim import _server

        app = sim._app  # the request handler shared by the server's threads
        super().__init__(app.clock())
        monkeypatch.setattr(app, "clock", self)
        monkeypatch.setattr(_server, "time", _FakeTime(self))


@dataclass
class Window(Generic[T]):
    """What a ``PollerTime`` saw: ``seen`` is ``snapshot()`` taken when the window's time was up."""

    seen: T | None = None
    closed: threading.Event = field(default_factory=threading.Event)


class PollerTime:
    """Runs a live poller on virtual time: its clock is fake and each of its sleeps passes at once.

    Every ``wait(timeout)`` the poller's loop makes advances the clock by ``timeout`` and returns
    at once, unless something woke the poller (a new run to track, ``stop()``): that wait returns
    at once too, as it would. So the number of cycles, requests and errors in a stretch of the
    poller's own time depends only on the waits it chooses, never on how busy the machine is.

    ``window(seconds, snapshot, start_when)``: once ``start_when()`` holds, let ``seconds`` of
    poller time pass, then record ``snapshot()`` (in the poller's thread, before the wait that
    crosses the end) and hand the poller back to real time (the clock goes on from there).
    """

    def __init__(self, poller: Any) -> None:
        self._poller = poller
        self._event = poller._wake  # no hook to pass a clock or a wait to a session's poller: see the report
        self._real_wait = self._event.wait
        self._virtual = time.monotonic()
        self._switched_at: float | None = None  # real monotonic time when handed back to real time
        self._lock = threading.Lock()
        self._window: tuple[float, Callable[[], Any], Callable[[], bool], Window[Any]] | None = None
        self._started_at: float | None = None
        poller._clock = self.clock
        self._event.wait = self._wait

    def clock(self) -> float:
        with self._lock:
            if self._switched_at is None:
                return self._virtual
            return self._virtual + (time.monotonic() - self._switched_at)

    def window(self, seconds: float, snapshot: Callable[[], T],
               start_when: Callable[[], bool] = lambda: True) -> Window[T]:
        found: Window[T] = Window()
        with self._lock:
            self._window = (seconds, snapshot, start_when, found)
        return found

    def _wait(self, timeout: float | None = None) -> bool:
        if self._switched_at is not None or timeout is None or self._event.is_set():
            return self._real_wait(timeout)
        with self._lock:
            window = self._window
        if window is not None:
            seconds, snapshot, start_when, found = window
            if self._started_at is None and start_when():
                self._started_at = self._virtual
            end = None if self._started_at is None else self._started_at + seconds
            if end is not None and self._virtual + timeout >= end:
                found.seen = snapshot()
                with self._lock:
                    left = self._virtual + timeout - end
                    self._virtual = end
                    self._switched_at = time.monotonic()
                found.closed.set()
                return self._real_wait(left)
        with self._lock:
            self._virtual += timeout
        return False
