"""What we know of the server's clock: bounds on (server time - local time), never a guess.

Two kinds of observation bound the offset, each a request sent at local time ``s`` and
answered at ``r``: a start whose run the server stamped ``created_at = c`` puts the offset in
``[c - r, c - s]``; any answer's ``Date`` header (whole seconds, ``D``) puts it in
``[D - r, D + 1 - s]``. Intersecting them pins the offset down.

"Our clock" is never the wall clock itself: a laptop waking or NTP fixing a VM steps the wall clock
(an hour back, say), and a send window measured across the step would be inverted or misplaced.
``LocalClock`` is monotonic (counting a suspended laptop's sleep), anchored to the wall clock once:
durations on it are true whatever the wall clock does, and ``step()`` says how far the wall clock
has moved away from it since. Sessions sharing a ledger on one boot share one anchor (kept in the
ledger), so a step between two kernels' starts cannot misplace one's windows for the other. Until one has been seen the
offset is unknown (``bounds()`` is None) and no lost start is matched by time. ``probe_times``
plans requests that straddle the server's next second boundaries, so a session whose start
answers were all lost still learns the offset to a few milliseconds from ``Date`` alone.
"""

from __future__ import annotations

import math
import threading
import time
from email.utils import parsedate_tz
from typing import Callable

__all__ = ["ClockOffset", "LocalClock", "boot_id", "date_seconds"]

_MS = 0.001  # server timestamps are whole milliseconds


def date_seconds(value: str | None) -> float | None:
    """An HTTP ``Date`` header as unix seconds (always a whole second), or None if unreadable."""
    if not value:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    from calendar import timegm

    try:
        return float(timegm(parsed[:6]) - (parsed[9] or 0))
    except (OverflowError, ValueError, TypeError):
        return None


def _since_boot() -> float:
    """Seconds since boot, counting suspended time (a laptop's sleep), where the system tells them."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        pass
    try:  # macOS: CLOCK_MONOTONIC goes on counting while the machine sleeps (time.monotonic() does not)
        return time.clock_gettime(time.CLOCK_MONOTONIC)
    except (AttributeError, OSError):
        return time.monotonic()


def _wall_now() -> float:
    return time.time()  # looked up at each call, so a test's stepped wall clock is the one read


def boot_id() -> str | None:
    """This boot of this machine (processes of one boot can share one ``LocalClock`` anchor), or None."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


class LocalClock:
    """Unix seconds on a line no wall-clock step moves: ``monotonic() + anchor``, anchored once.

    ``anchor`` may be given (processes that share a ledger on one boot share one, so their windows
    agree); ``wall`` and ``monotonic`` are the clocks read (tests pass fakes)."""

    def __init__(self, anchor: float | None = None, *, wall: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = _since_boot) -> None:
        self._wall, self._monotonic = wall or _wall_now, monotonic
        self.anchor = self._wall() - monotonic() if anchor is None else float(anchor)

    def now(self) -> float:
        return self._monotonic() + self.anchor

    def step(self) -> float:
        """How far the wall clock has moved from this clock since it was anchored (0 when no step)."""
        return self._wall() - self.now()


class ClockOffset:
    """Thread-safe bounds on the server-minus-local clock offset, in seconds; ``now()`` is our clock."""

    def __init__(self, local: LocalClock | None = None) -> None:
        self.local = local or LocalClock()
        self._low: float | None = None
        self._high: float | None = None
        self._lock = threading.Lock()

    def observe(self, sent: float, answered: float, created: float) -> None:
        """One start: sent and answered on our clock, its run created on the server's."""
        self._narrow(created - answered - _MS, created - sent + _MS)

    def observe_date(self, sent: float, answered: float, date: float) -> None:
        """Any answer: its ``Date`` header (whole seconds) was written between ``sent`` and ``answered``."""
        self._narrow(date - answered, date + 1.0 - sent)

    def _narrow(self, low: float, high: float) -> None:
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            return
        with self._lock:
            if self._low is None or self._high is None:
                self._low, self._high = low, high
                return
            new_low, new_high = max(self._low, low), min(self._high, high)
            # Bounds that cross mean a clock moved (NTP step): start again from this observation.
            self._low, self._high = (new_low, new_high) if new_low <= new_high else (low, high)

    def now(self) -> float:
        """Our clock (see ``LocalClock``): every send window and observation is measured on it."""
        return self.local.now()

    def bounds(self) -> tuple[float, float] | None:
        """(low, high), or None while nothing has been observed (then nothing is matched by time)."""
        with self._lock:
            if self._low is None or self._high is None:
                return None
            return self._low, self._high

    @property
    def width(self) -> float:
        found = self.bounds()
        return math.inf if found is None else found[1] - found[0]

    def probe_times(self, now: float, count: int = 8) -> list[float]:
        """Local times at which ``count`` requests would split the current bounds evenly across the
        server's next whole second (each answer's ``Date`` says on which side it fell)."""
        found = self.bounds()
        if found is None:
            return []
        low, high = found
        boundary = math.ceil(now + high + 0.05)  # a server second that has certainly not begun yet
        step = (high - low) / (count + 1)
        return [boundary - (high - step * (i + 1)) for i in range(count)]
