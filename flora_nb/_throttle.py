"""One request throttle per client: an optional token bucket plus a global 429 pause."""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["Throttle"]


class Throttle:
    """Spaces requests out to ``rate`` per second (None = no limit) and honours server pauses.

    Thread-safe. Callers reserve a slot under the lock and sleep outside it, so waiting
    threads are served in order and none holds the lock while it sleeps.
    """

    def __init__(
        self,
        rate: float | None = None,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive requests per second, or None for no limit")
        self.rate = rate
        # One token of headroom by default: the server's bucket starts when our first request
        # *arrives* (after the connection is opened), so a full-size burst overruns it by one.
        self.burst = float(burst if burst is not None else max(1.0, (rate or 2.0) - 1.0))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        with self._lock:
            wait = self._reserve(self._clock())
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def _reserve(self, now: float) -> float:
        start = max(now, self._paused_until)
        if self.rate is None:
            return start - now
        self._tokens = min(self.burst, self._tokens + (start - self._stamp) * self.rate)
        self._stamp = start
        self._tokens -= 1.0
        deficit = -self._tokens / self.rate if self._tokens < 0 else 0.0
        return start - now + deficit

    def pause(self, seconds: float) -> None:
        """Hold every request of this client for ``seconds`` (the server said 429)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())
