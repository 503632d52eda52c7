"""The simulated world: runs, their lifecycle on an event heap, credits and idempotency keys.

Nothing ticks in the background. Every request (and ``stats()``) first calls
``World.advance(now)``, which replays the due events in time order, so a run starts at the
exact moment a concurrency slot frees even if nobody asked at that moment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import json
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._states import SERVER_STATUSES as STATUSES
from .._states import TERMINAL
from ._catalog import TechniqueSpec
from ._faults import Faults
from ._idempotency import IdempotencyStore

_READY, _FINISH = 0, 1
# Share of failing runs that fail before they start (FIELD: pending -> failed happens, rarely).
_FAIL_BEFORE_START = 0.15

# Codes from flora-api.md §5.5 (FIELD), with messages in the style FLORA returns.
FAILURES_WHILE_RUNNING = (
    ("GENERATION_PROVIDER_TIMEOUT", "The provider did not answer in time."),
    ("GPU_PROVIDER_ERROR", "Request rejected by the safety system. safety_violations=[violence]"),
    ("GENERATION_GENERIC_ERROR", "The generation failed."),
    ("GENERATION_NO_RESULT", "The provider returned no result."),
    ("GENERATION_DOWNSTREAM_SERVICE_ERROR", "A downstream service failed; try again later."),
    ("GENERATION_PROMPT_MODERATED", "The prompt was blocked by moderation."),
    ("provider_error", "The provider failed to complete the generation."),
)
FAILURES_BEFORE_START = (
    ("GENERATION_FAILED_TO_START", "The generation failed to start."),
    ("GENERATION_QUEUE_NOT_MOVING", "The provider queue is not moving; try again later."),
)
# Messages for codes only Faults.input_failures produces (the codes above keep their own).
_MORE_MESSAGES = (
    ("GENERATION_CANCELLED", "The generation was cancelled."),
    ("BILLING_NOT_ENOUGH_CREDITS", "Not enough credits to complete the generation."),
    ("LLM_REFUSAL", "The model refused the request."),
    ("GENERATION_INVALID_PARAMS", "The parameters are not valid for this generation."),
)
MESSAGES = dict(FAILURES_WHILE_RUNNING + FAILURES_BEFORE_START + _MORE_MESSAGES)
_BEFORE_START_CODES = frozenset(code for code, _ in FAILURES_BEFORE_START)


class DuplicateIdempotencyKey(Exception):
    """The idempotency key was already committed in this scope."""


class InsufficientCredits(Exception):
    """The balance does not cover the run's cost."""


class Clock:
    """Wall-clock seconds that never jump backwards (monotonic, anchored once to time.time)."""

    def __init__(self, shift: float = 0.0) -> None:
        # ``shift``: how far the server's clock is off the client's (FloraSimulator(clock_offset=...))
        self._offset = time.time() - time.monotonic() + shift

    def __call__(self) -> float:
        return time.monotonic() + self._offset


def to_ms(seconds: float) -> int:
    """Unix seconds -> unix milliseconds, the unit every simulator timestamp uses."""
    return round(seconds * 1000)


@dataclass(frozen=True)
class Failure:
    """How and when a run will fail, decided when it is created."""

    code: str
    message: str
    before_start: bool
    at_fraction: float


@dataclass(frozen=True)
class StartOrder:
    """What a route asks the world to start."""

    spec: TechniqueSpec
    workspace_id: str
    project_id: str
    inputs: dict[str, str]
    route: str
    idempotency_key: str | None
    poll_url: Callable[[str], str]


@dataclass
class Run:
    """One technique run; times are unix seconds."""

    run_id: str
    spec: TechniqueSpec
    workspace_id: str
    project_id: str
    inputs: dict[str, str]
    poll_url: str
    idempotency_key: str | None
    created_at: float
    duration: float
    quote: float
    final_cost: float
    failure: Failure | None
    reserved: float = 0.0
    credit_epoch: int = 0
    estimate: float | None = None  # what estimated_seconds reports (None: the exact duration)
    status: str = "pending"
    started_at: float | None = None
    completed_at: float | None = None

    def progress_at(self, now: float) -> float:
        """0..100, rising linearly while running; floored so it never runs ahead of status."""
        if self.status in TERMINAL:
            return 100.0
        if self.status == "pending" or self.started_at is None or self.duration <= 0:
            return 0.0
        share = min(1.0, max(0.0, (now - self.started_at) / self.duration))
        return int(share * 1000) / 10.0

    def charged_cost(self) -> float | None:
        """The final charge once terminal (refunded failures are 0), else None."""
        if self.status == "completed":
            return self.final_cost
        return 0.0 if self.status == "failed" else None


def canonical_inputs(technique_id: str, inputs: dict[str, str], seed: int) -> bytes:
    """Bytes that identify a run's request; seeds every derived value (charge, media)."""
    return json.dumps([seed, technique_id, inputs], sort_keys=True).encode()


def jittered_cost(spec: TechniqueSpec, inputs: dict[str, str], seed: int) -> float:
    """run_cost (or the catalog's ``charge``), or a value within ±charge_jitter (a fraction) of it, fixed per inputs."""
    base = spec.run_cost if spec.charge is None else spec.charge
    if spec.charge_jitter <= 0:
        return base
    digest = hashlib.sha256(canonical_inputs(spec.technique_id, inputs, seed)).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64 * 2 - 1
    return round(max(0.0, base * (1 + spec.charge_jitter * unit)), 6)


@dataclass
class _Ledger:
    """Counters kept incrementally so stats() stays O(1) with many runs."""

    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    charged_total: float = 0.0
    balance: float | None = None
    credit_epoch: int = 0


class World:
    """All run state behind one lock; callers hold ``lock`` around advance + read/write."""

    def __init__(
        self,
        *,
        faults: Faults,
        seed: int,
        speed: float,
        pending_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.seed = seed
        self.speed = speed
        self.idempotency = IdempotencyStore()
        self._pending = pending_seconds / speed
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(f"{seed}:duration")  # its own stream: jitter leaves other draws alone
        self._faults = faults
        self._runs: dict[str, Run] = {}
        self._order: list[Run] = []
        self._events: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._waiting: dict[str, deque[Run]] = {}
        self._running: dict[str, int] = {}
        self._ledger = _Ledger(balance=faults.credits)
        self.on_change: Callable[[], None] | None = None  # called under the lock after each change to keep

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Swap faults now; a changed ``credits`` value resets the balance to it."""
        with self.lock:
            now = self.advance()
            if faults.credits != self._faults.credits:
                self._ledger.balance = faults.credits
                self._ledger.credit_epoch += 1
            self._faults = faults
            for workspace_id in list(self._waiting):
                self._fill_slots(workspace_id, now)
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def chance(self, share: float) -> bool:
        """A seeded coin flip; draws nothing for 0 or 1 so fault-free runs stay reproducible."""
        if share <= 0.0:
            return False
        if share >= 1.0:
            return True
        with self.lock:
            return self._rng.random() < share

    def advance(self, now: float | None = None) -> float:
        """Apply every transition due by ``now`` (default: the clock); returns ``now``."""
        with self.lock:
            now = self.clock() if now is None else now
            while self._events and self._events[0][0] <= now:
                at, _, kind, run_id = heapq.heappop(self._events)
                run = self._runs[run_id]
                if kind == _READY:
                    self._on_ready(run, at)
                else:
                    self._on_finish(run, at)
            return now

    def start(self, order: StartOrder) -> Run:
        """Create a pending run now, or raise DuplicateIdempotencyKey / InsufficientCredits."""
        with self.lock:
            now = self.advance()
            key = order.idempotency_key
            if key is not None and self.idempotency.seen(order.workspace_id, order.route, key, now):
                raise DuplicateIdempotencyKey(key)
            balance = self._ledger.balance
            if balance is not None and balance + 1e-9 < order.spec.run_cost:
                raise InsufficientCredits(order.spec.technique_id)
            run = self._new_run(order, now)
            if balance is not None:
                run.reserved = order.spec.run_cost
                run.credit_epoch = self._ledger.credit_epoch
                self._ledger.balance = round(balance - run.reserved, 9)
            if key is not None:
                self.idempotency.store(order.workspace_id, order.route, key, now)
            self._runs[run.run_id] = run
            self._order.append(run)
            self._ledger.by_status["pending"] += 1
            self._push(now + self._pending, _READY, run.run_id)
            self._changed()
            return run

    def get(self, run_id: str) -> Run | None:
        """The run with this id, or None."""
        return self._runs.get(run_id)

    def newest_first(self, keep: Callable[[Run], bool]) -> list[Run]:
        """Runs passing ``keep``, newest first (creation order reversed)."""
        with self.lock:
            return [run for run in reversed(self._order) if keep(run)]

    def stats(self) -> dict[str, Any]:
        """Server-side run truth; advances to now first."""
        with self.lock:
            self.advance()
            ledger = self._ledger
            balance = ledger.balance
            return {
                "runs_created": len(self._runs),
                "runs_by_status": dict(ledger.by_status),
                "total_charged": round(ledger.charged_total, 6),
                "credits_remaining": None if balance is None else round(balance, 6),
            }

    def records(self) -> list[dict[str, Any]]:
        """One dict per run, oldest first; advances to now first."""
        with self.lock:
            now = self.advance()
            return [_record(run, now) for run in self._order]

    # -- persistence -------------------------------------------------------------------

    def snapshot(self, encoded: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Everything needed to continue this world later (JSON-ready); advances to now first.

        A run found in ``encoded`` (JSON text by run id: terminal runs, which never change, as the
        saver encoded them before) is given as that text, so a snapshot under the lock stays cheap.
        """
        encoded = encoded or {}
        with self.lock:
            now = self.advance()
            ledger = self._ledger
            return {
                "saved_at": now, "pending_seconds": self._pending, "credits_setting": self._faults.credits,
                "balance": ledger.balance, "credit_epoch": ledger.credit_epoch, "charged_total": ledger.charged_total,
                "rng": _jsonable(self._rng.getstate()),
                "runs": [encoded.get(run.run_id) or _run_state(run) for run in self._order],
                "idempotency": self.idempotency.snapshot(),
            }

    def restore(self, data: dict[str, Any], spec_for: Callable[[str], TechniqueSpec | None]) -> None:
        """Continue a snapshot: its runs, balance and keys; what was due since then happens on the next advance."""
        with self.lock:
            saved_at, pending = float(data["saved_at"]), float(data.get("pending_seconds", self._pending))
            for item in data.get("runs", []):
                spec = spec_for(item["technique_id"])
                if spec is not None:  # a technique gone from the catalog takes its runs with it
                    self._restore_run(_run_from(item, spec), saved_at, pending)
            self._restore_credits(data)
            self._ledger.charged_total = float(data.get("charged_total", 0.0))
            if data.get("rng"):
                self._rng.setstate(_tupled(data["rng"]))
            self.idempotency.restore(data.get("idempotency", []))

    def _restore_credits(self, data: dict[str, Any]) -> None:
        """Without a credits value the account keeps its balance (and its setting); a given value sets it.

        Runs reserved before a new value was set settle against the old balance, not the new one.
        """
        epoch = int(data.get("credit_epoch", 0))
        if self._faults.credits is not None:
            self._ledger.balance, self._ledger.credit_epoch = self._faults.credits, epoch + 1
            return
        balance, setting = data.get("balance"), data.get("credits_setting")
        self._ledger.balance = None if balance is None else float(balance)
        self._ledger.credit_epoch = epoch
        if setting is not None:
            self._faults = dataclasses.replace(self._faults, credits=float(setting))

    def _restore_run(self, run: Run, saved_at: float, pending: float) -> None:
        self._runs[run.run_id] = run
        self._order.append(run)
        self._ledger.by_status[run.status] += 1
        if run.status == "pending":
            ready = run.created_at + pending
            if ready > saved_at:
                self._push(ready, _READY, run.run_id)
            else:  # it was waiting for a concurrency slot
                self._waiting.setdefault(run.workspace_id, deque()).append(run)
        elif run.status == "running":
            self._running[run.workspace_id] = self._running.get(run.workspace_id, 0) + 1
            share = run.failure.at_fraction if run.failure is not None else 1.0
            self._push((run.started_at or saved_at) + run.duration * share, _FINISH, run.run_id)

    def rebase(self, old_origin: str, new_origin: str) -> None:
        """Poll URLs handed out by an earlier server of this account now point here."""
        with self.lock:
            for run in self._order:
                if run.poll_url.startswith(old_origin):
                    run.poll_url = new_origin + run.poll_url[len(old_origin):]

    # -- lifecycle ---------------------------------------------------------------------

    def _new_run(self, order: StartOrder, now: float) -> Run:
        run_id = "run_" + secrets.token_hex(10)
        spec = order.spec
        return Run(
            run_id=run_id,
            spec=spec,
            workspace_id=order.workspace_id,
            project_id=order.project_id,
            inputs=dict(order.inputs),
            poll_url=order.poll_url(run_id),
            idempotency_key=order.idempotency_key,
            created_at=now,
            duration=spec.duration_seconds / self.speed * self._duration_factor(spec, order.inputs),
            estimate=spec.duration_seconds / self.speed,
            quote=spec.run_cost,
            final_cost=jittered_cost(spec, order.inputs, self.seed),
            failure=self._input_failure(order.inputs, self._draw_failure()),
        )

    def _duration_factor(self, spec: TechniqueSpec, inputs: dict[str, str]) -> float:
        """This run's duration over its estimate: the technique's own spread, times Faults.duration_jitter."""
        factor = 1.0
        if spec.duration_spread:
            # Drawn from the seed, the inputs and the run's place in the account: the same requests in the
            # same order take the same times, and a repeat of the same inputs is a new sample.
            material = canonical_inputs(spec.technique_id, inputs, self.seed) + b"#%d" % len(self._order)
            unit = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") / 2**64 * 2 - 1
            factor += spec.duration_spread * unit
        jitter = self._faults.duration_jitter
        return factor * (1.0 + self._jitter_rng.uniform(-jitter, jitter)) if jitter else factor

    def _draw_failure(self) -> Failure | None:
        rng = self._rng
        if not self.chance(self._faults.run_failure_rate):
            return None
        before = rng.random() < _FAIL_BEFORE_START
        code, message = rng.choice(FAILURES_BEFORE_START if before else FAILURES_WHILE_RUNNING)
        return Failure(code, message, before, 0.2 + 0.7 * rng.random())

    def _input_failure(self, inputs: dict[str, str], drawn: Failure | None) -> Failure | None:
        """Faults.input_failures: a run whose inputs contain a listed text fails with its code, every
        time (the seeded draw is made anyway, so other runs fare as they would without the switch)."""
        values = [str(value).lower() for value in inputs.values()]
        for text, what in self._faults.input_failures.items():
            if any(text.lower() in value for value in values):
                code, message = (what, "") if isinstance(what, str) else what
                message = message or MESSAGES.get(code, "The generation failed.")
                return Failure(code, message, code in _BEFORE_START_CODES, 0.5)
        return drawn

    def _push(self, at: float, kind: int, run_id: str) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, run_id))

    def _on_ready(self, run: Run, at: float) -> None:
        if run.failure is not None and run.failure.before_start:
            self._terminate(run, at)
        elif self._has_slot(run.workspace_id):
            self._begin(run, at)
        else:
            self._waiting.setdefault(run.workspace_id, deque()).append(run)

    def _has_slot(self, workspace_id: str) -> bool:
        limit = self._faults.max_concurrent_runs
        return limit is None or self._running.get(workspace_id, 0) < limit

    def _begin(self, run: Run, at: float) -> None:
        self._set_status(run, "running")
        run.started_at = at
        self._running[run.workspace_id] = self._running.get(run.workspace_id, 0) + 1
        share = run.failure.at_fraction if run.failure is not None else 1.0
        self._push(at + run.duration * share, _FINISH, run.run_id)

    def _on_finish(self, run: Run, at: float) -> None:
        self._running[run.workspace_id] -= 1
        self._terminate(run, at)
        self._fill_slots(run.workspace_id, at)

    def _fill_slots(self, workspace_id: str, at: float) -> None:
        waiting = self._waiting.get(workspace_id)
        while waiting and self._has_slot(workspace_id):
            self._begin(waiting.popleft(), at)

    def _terminate(self, run: Run, at: float) -> None:
        self._set_status(run, "failed" if run.failure is not None else "completed")
        run.completed_at = at
        charge = run.charged_cost() or 0.0
        ledger = self._ledger
        ledger.charged_total += charge
        # The reservation was the quote; settle the difference (a failure refunds all of it).
        if run.reserved and ledger.balance is not None and run.credit_epoch == ledger.credit_epoch:
            ledger.balance = round(ledger.balance + run.reserved - charge, 9)

    def _set_status(self, run: Run, status: str) -> None:
        self._ledger.by_status[run.status] -= 1
        self._ledger.by_status[status] += 1
        run.status = status


_RUN_FIELDS = ("run_id", "workspace_id", "project_id", "inputs", "poll_url", "idempotency_key", "created_at",
               "duration", "estimate", "quote", "final_cost", "reserved", "credit_epoch", "status", "started_at", "completed_at")


def _run_state(run: Run) -> dict[str, Any]:
    data = {name: getattr(run, name) for name in _RUN_FIELDS}
    data["inputs"] = dict(run.inputs)  # encoded outside the lock: a copy, not the run's own dict
    data["technique_id"] = run.spec.technique_id
    data["failure"] = None if run.failure is None else vars(run.failure).copy()
    return data


def _run_from(data: dict[str, Any], spec: TechniqueSpec) -> Run:
    failure = data.get("failure")
    fields = {name: data[name] for name in _RUN_FIELDS if name in data}
    return Run(spec=spec, failure=Failure(**failure) if failure else None, **fields)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _record(run: Run, now: float) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "technique_id": run.spec.technique_id,
        "workspace_id": run.workspace_id,
        "project_id": run.project_id,
        "status": run.status,
        "progress": run.progress_at(now),
        "created_at": to_ms(run.created_at),
        "started_at": None if run.started_at is None else to_ms(run.started_at),
        "completed_at": None if run.completed_at is None else to_ms(run.completed_at),
        "charged_cost": run.charged_cost(),
        "inputs": dict(run.inputs),
        "idempotency_key": run.idempotency_key,
    }
