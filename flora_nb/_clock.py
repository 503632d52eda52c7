"""What we know of the server's clock: bounds on (server time - local time), learnt from starts.

A start sent at local time ``s`` and answered at ``r`` made a run whose server ``created_at`` is
``c``, so the offset lies in ``[c - r, c - s]``. Intersecting those intervals over recent starts
pins the offset down; lost starts are then matched to runs by time without guessing.
"""

from __future__ import annotations

import threading

__all__ = ["ClockOffset"]

_MS = 0.001  # server timestamps are whole milliseconds


class ClockOffset:
    """Thread-safe bounds on the server-minus-local clock offset, in seconds."""

    def __init__(self, unknown_slack: float):
        self._slack = unknown_slack
        self._low: float | None = None
        self._high: float | None = None
        self._lock = threading.Lock()

    def observe(self, sent: float, answered: float, created: float) -> None:
        """One start: sent and answered on our clock, created on the server's."""
        low, high = created - answered - _MS, created - sent + _MS
        with self._lock:
            if self._low is None or self._high is None:
                self._low, self._high = low, high
                return
            new_low, new_high = max(self._low, low), min(self._high, high)
            # Bounds that cross mean the clock moved (NTP step): start again from this start.
            self._low, self._high = (new_low, new_high) if new_low <= new_high else (low, high)

    def bounds(self) -> tuple[float, float]:
        """(low, high); wide (± the unknown slack) until a start has been observed."""
        with self._lock:
            if self._low is None or self._high is None:
                return -self._slack, self._slack
            return self._low, self._high
