"""Fault switches for the simulator: every default means "behave like a healthy FLORA"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_SHARES = ("error_rate", "drop_rate", "run_failure_rate", "error_after_create_rate")


@dataclass(frozen=True)
class Faults:
    """Faults the simulator injects; assign a new one to ``FloraSimulator.faults`` at any time."""

    error_rate: float = 0.0
    drop_rate: float = 0.0
    latency: float = 0.0
    rate_limit: float | None = None
    run_failure_rate: float = 0.0
    credits: float | None = None
    max_concurrent_runs: int | None = None
    # Share of run starts answered 500 AFTER the run was created and its key stored (the case a
    # client must reconcile, never resend). Last, so positional Faults(...) calls keep working.
    error_after_create_rate: float = 0.0
    # Estimate error, as real techniques have: each run takes its estimate x a factor drawn uniformly
    # from [1 - j, 1 + j] (0.3: runs end up to 30% early or late). estimated_seconds stays the estimate.
    duration_jitter: float = 0.0
    # Deterministic failures by input, whatever the seed: {text: code} or {text: (code, message)}. A
    # run any of whose input values contains ``text`` (in any case) fails with that code every time,
    # as a moderated prompt is moderated again; the message is the simulator's usual one for the
    # code unless given. The first matching text wins; it draws nothing from the seeded stream.
    input_failures: Mapping[str, str | tuple[str, str]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_input_failures(self.input_failures)
        object.__setattr__(self, "input_failures", MappingProxyType(dict(self.input_failures)))
        for name in _SHARES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if not 0.0 <= self.duration_jitter < 1.0:
            raise ValueError(f"duration_jitter must be >= 0 and < 1, got {self.duration_jitter!r}")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency!r}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {self.rate_limit!r}")
        if self.credits is not None and self.credits < 0:
            raise ValueError(f"credits must be >= 0 or None, got {self.credits!r}")
        if self.max_concurrent_runs is not None and self.max_concurrent_runs < 1:
            raise ValueError(
                f"max_concurrent_runs must be >= 1 or None, got {self.max_concurrent_runs!r}"
            )


def _check_input_failures(failures: object) -> None:
    if not isinstance(failures, Mapping):
        raise ValueError(f"input_failures must map input text to an error code, got {failures!r}")
    for text, what in failures.items():
        pair = (what, "") if isinstance(what, str) else what
        ok = (isinstance(text, str) and bool(text) and isinstance(pair, tuple) and len(pair) == 2
              and isinstance(pair[0], str) and bool(pair[0]) and isinstance(pair[1], str))
        if not ok:
            raise ValueError(f"input_failures: {text!r} -> {what!r}; give non-empty text -> a code or (code, message)")
