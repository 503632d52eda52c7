"""One request throttle per client: a token bucket, a global 429 pause, and the server's rate learnt from its 429s.

Without ``rate_limit=`` the client sends as fast as it is asked to until FLORA answers 429. Then it
measures how many requests it sent in the seconds before (the server let most of them through, so
that is about the server's rate plus its burst), and from then on spaces requests out to a little
under it (and under one request per wait asked for, when the server asks for less than a second:
a token bucket asks for about one token's time). Every further 429 lowers that rate by 20 % (twice a
second at most); after a long quiet
spell the rate is raised a little, so a limit the server lifted is found again at the cost of one
429 now and then.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

__all__ = ["Throttle"]


WINDOW = 5.0  # seconds of sending measured when a 429 comes: long, so the server's burst counts little
MARGIN = 0.85  # the rate learnt is this share of what was sent (the burst inflates it by ~1/WINDOW)
MIN_RATE = 0.2  # requests/s: never learn a rate so low that a poll waits minutes
CUT = 0.8  # a 429 while a learnt rate is in force lowers it by 20 % ...
CUT_GAP = 0.5  # ... twice a second at most (429s of requests already in flight count once)
PROBE_AFTER = 30.0  # seconds and ...
PROBE_REQUESTS = 500  # ... requests without a 429 before the learnt rate is raised (one 429 per probe at most) ...
PROBE_STEP = 1.1  # ... by this factor


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
        self._stamp_learned = self._cut_at = 0.0
        self.learn = True  # False: 429s only pause (as before the rate was learnt)
        self.learned: float | None = None  # requests/s learnt from the server's 429s (None: none seen yet)
        self.rate_limited = 0  # 429s seen
        self._sent: deque[float] = deque()  # when recent requests went out (only WINDOW seconds kept)
        self._quiet = 0  # requests since the last 429 or the last raise of the learnt rate

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        with self._lock:
            wait = self._reserve(self._clock())
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    @property
    def effective_rate(self) -> float | None:
        """Requests/s this client sends at most: the user's rate or the one learnt, whichever is lower."""
        rates = [r for r in (self.rate, self.learned) if r is not None]
        return min(rates) if rates else None

    def _reserve(self, now: float) -> float:
        start = max(now, self._paused_until)
        self._probe(now)
        rate = self.effective_rate
        if rate is None:
            self._note_sent(start)
            return start - now
        self._tokens = min(self._burst_for(rate), self._tokens + (start - self._stamp) * rate)
        self._stamp = start
        self._tokens -= 1.0
        deficit = -self._tokens / rate if self._tokens < 0 else 0.0
        self._note_sent(start + deficit)
        return start - now + deficit

    def _burst_for(self, rate: float) -> float:
        return self.burst if rate == self.rate else max(1.0, rate - 1.0)

    def _note_sent(self, at: float) -> None:
        self._sent.append(at)
        while self._sent and self._sent[0] < at - WINDOW:
            self._sent.popleft()

    def _probe(self, now: float) -> None:
        if self.learned is None:
            return
        self._quiet += 1
        if self._quiet >= PROBE_REQUESTS and now - self._stamp_learned >= PROBE_AFTER:
            self.learned *= PROBE_STEP
            self._stamp_learned, self._quiet = now, 0

    def limited(self, seconds: float) -> None:
        """The server answered 429 and asked for ``seconds`` of quiet: pause, and learn its rate."""
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))
            recent = [t for t in self._sent if now - WINDOW <= t <= now]
            if not recent or not self.learn:  # nothing of ours went out lately: another client used the quota up
                return
            span = max(now - recent[0], 1.0)
            measured = max(MIN_RATE, MARGIN * len(recent) / span)
            if 0.0 < seconds < 1.0:  # a token bucket asks for about one token's time: at most 1/seconds per s
                measured = min(measured, max(MIN_RATE, 1.0 / seconds))
            if self.learned is None:
                self.learned, self._cut_at = measured, now
            elif now - self._cut_at >= CUT_GAP:  # the server's burst inflates what was measured:
                self.learned = max(MIN_RATE, min(measured, self.learned * CUT))  # each later 429 cuts 10 %
                self._cut_at = now
            self._stamp_learned, self._quiet = now, 0
            self._tokens = min(self._tokens, 0.0)  # no burst right after a 429

    def pause(self, seconds: float) -> None:
        """Hold every request of this client for ``seconds`` (the server said 429)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())
