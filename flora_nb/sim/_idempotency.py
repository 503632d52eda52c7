"""Idempotency keys as FLORA behaves: stored after a 2xx; a repeat is a 409, never a replay."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# FIELD measurements: keys live two hours; the docs' 24 h replay behaviour is not what FLORA does.
DEFAULT_TTL_SECONDS = 7200.0


class IdempotencyStore:
    """Keys scoped by (workspace, route); not thread-safe, the world's lock guards it."""

    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self._ttl = ttl
        # Insertion order is time order, so expired keys are always at the front.
        self._stored: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def seen(self, workspace_id: str, route: str, key: str, now: float) -> bool:
        """Whether this key was committed in this scope within the TTL."""
        self._expire(now)
        return (workspace_id, route, key) in self._stored

    def store(self, workspace_id: str, route: str, key: str, now: float) -> None:
        """Remember a key whose request was committed with a 2xx."""
        scope = (workspace_id, route, key)
        self._stored.pop(scope, None)
        self._stored[scope] = now

    def snapshot(self) -> list[list[Any]]:
        """The stored keys as ``[workspace, route, key, stored_at]`` rows."""
        return [[*scope, at] for scope, at in self._stored.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Keys of an earlier snapshot (they expire as they would have)."""
        for workspace_id, route, key, at in rows:
            self._stored[(workspace_id, route, key)] = float(at)

    def _expire(self, now: float) -> None:
        while self._stored:
            scope, stored_at = next(iter(self._stored.items()))
            if stored_at + self._ttl > now:
                return
            del self._stored[scope]
