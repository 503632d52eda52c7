"""What reached the server: request counters and a bounded log (never the key itself)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

MEDIA_ROUTE = "GET /media"
REQUEST_LOG_SIZE = 20000


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it; ``auth_header`` says a header was sent, not its value."""

    at: int
    method: str
    path: str
    route: str
    status: int
    request_id: str
    idempotency_key: str | None
    user_agent: str | None
    authorized: bool
    auth_header: bool
    outcome: str  # "ok", "error", "rate_limited", "injected_error", "dropped",
    #                "error_after_create"


class Traffic:
    """Counters and the recent-request deque, behind their own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every counted request (runs are untouched)."""
        with self._lock:
            self._log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
            self._routes: Counter[str] = Counter()
            self._statuses: Counter[str] = Counter()
            self._outcomes: Counter[str] = Counter()
            self._media_with_auth = 0
            self._internal_errors: list[str] = []

    def record(self, rec: RequestRecord) -> None:
        """Count one finished (or dropped) request."""
        with self._lock:
            self._log.append(rec)
            self._routes[rec.route] += 1
            self._statuses[str(rec.status)] += 1
            self._outcomes[rec.outcome] += 1
            if rec.route == MEDIA_ROUTE and rec.auth_header:
                self._media_with_auth += 1

    def internal_error(self, description: str) -> None:
        """Note a simulator bug (an exception in a route) so tests can fail on it."""
        with self._lock:
            self._internal_errors.append(description)

    def records(self) -> list[dict[str, Any]]:
        """The recent requests, oldest first."""
        with self._lock:
            return [asdict(rec) for rec in self._log]

    def stats(self) -> dict[str, Any]:
        """Request counters for FloraSimulator.stats()."""
        with self._lock:
            return {
                "requests_total": sum(self._routes.values()),
                "requests_by_route": dict(self._routes),
                "responses_by_status": dict(self._statuses),
                "rate_limited": self._outcomes["rate_limited"],
                "errors_injected": self._outcomes["injected_error"],
                "drops": self._outcomes["dropped"],
                "errors_after_create": self._outcomes["error_after_create"],
                "idempotency_duplicates": self._statuses["409"],
                "media_requests": self._routes[MEDIA_ROUTE],
                "media_requests_with_auth": self._media_with_auth,
                "internal_errors": len(self._internal_errors),
                "internal_error_details": list(self._internal_errors[-5:]),
            }
