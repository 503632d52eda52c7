"""Per-workspace token buckets (FIELD: FLORA throttles by workspace, not by key)."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets with ``rate`` tokens/s and burst ``max(1, rate)``, one per workspace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, workspace_id: str, rate: float | None, now: float) -> float:
        """Take a token; returns 0.0 on success, else the seconds until one is available."""
        if rate is None:
            return 0.0
        burst = max(1.0, rate)
        with self._lock:
            if rate != self._rate:
                # A new limit starts every workspace with a full bucket.
                self._rate, self._buckets = rate, {}
            bucket = self._buckets.setdefault(workspace_id, _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate
