"""The allowed range of every numeric option, in one place: Python arguments and magic flags alike.

``problem(name, value)`` says what is wrong with a value (None when it is fine) in words that name
the allowed range; ``Flora(...)`` raises it as ``InputError``, the magic as a one-line usage error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["RANGES", "Range", "poll_interval_problem", "problem"]


@dataclass(frozen=True)
class Range:
    """A finite number from ``low`` (excluded when ``low_open``) to ``high``; whole when ``whole``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    whole: bool = False

    def words(self) -> str:
        kind = "a whole number" if self.whole else "a finite number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return f"{kind} {' and '.join(parts)}".strip()

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        number = float(value)
        if not math.isfinite(number) or (self.whole and not number.is_integer()):
            return False
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return self.high is None or number <= self.high


SHARE = Range(0.0, 1.0)
RANGES: dict[str, Range] = {
    "speed": Range(0.0, 1e6, low_open=True),
    "seed": Range(0, whole=True),
    "error_rate": SHARE, "drop_rate": SHARE, "run_failure_rate": SHARE,
    "latency": Range(0.0, 600.0),
    "rate_limit": Range(0.0, low_open=True),
    "credits": Range(0.0),
    "max_concurrent_runs": Range(1, whole=True),
    "budget": Range(0.0),
    "repeat": Range(1, whole=True),
    "max_concurrency": Range(1, 1000, whole=True),
    "max_retries": Range(0, 20, whole=True),
    "reconcile_grace": Range(0.0, 86400.0),
    "poll_interval": Range(0.0, 3600.0, low_open=True),
    "timeout": Range(0.0, low_open=True),
}


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for option ``name`` (None when it is in range)."""
    allowed = RANGES[name]
    if allowed.admits(value):
        return None
    return f"{name} must be {allowed.words()}, got {value!r}"


def poll_interval_problem(value: Any) -> str | None:
    """``poll_interval`` is (shortest, longest) seconds between polls, 0 < shortest <= longest."""
    try:
        low, high = value
    except (TypeError, ValueError):
        return f"poll_interval must be two numbers of seconds (shortest, longest), e.g. (2, 5); got {value!r}"
    for part in (low, high):
        if problem("poll_interval", part):
            return f"poll_interval must be two numbers of seconds, each {RANGES['poll_interval'].words()}; got {value!r}"
    if float(low) > float(high):
        return f"poll_interval is (shortest, longest): the first must not exceed the second; got {value!r}"
    return None
