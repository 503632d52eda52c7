"""The poller: one background thread per session that keeps every tracked run fresh.

It refreshes many runs with one ``GET /technique-runs`` request (paging back only as far as
the oldest run it still needs), falls back to single polls, schedules each run's next look
from its estimate, and reconciles starts whose response was lost. It never prints and
survives any exception (they are logged and counted in ``stats``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from ._errors import (
    AuthenticationError,
    FloraConnectionError,
    FloraError,
    FloraTimeout,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from ._matching import Start
from ._models import RunState
from ._states import RUNNING
from ._transitions import unknown_to_simulator

if TYPE_CHECKING:
    from ._client import FloraClient
    from ._run import Run

__all__ = ["Poller", "PollerStats"]

log = logging.getLogger("flora_nb.poller")

SETTLE_POLLS = 30  # polls of a terminal run at the usual rhythm while its final charged_cost is unknown
LATE_CHARGE_FACTOR = 12  # then it is checked every 12 x the longest poll interval (60 s) until FLORA reports it
# A lost start is matched only once the server's clock is known (never assumed to agree with ours):
# when nothing pins it closer than this, Date headers are sampled across second boundaries.
CLOCK_TARGET = 0.004
CLOCK_PROBES = 8  # requests per sampling round; each round divides the uncertainty by CLOCK_PROBES + 1
CLOCK_ROUNDS = 3
HISTORY_MARGIN = 30.0  # batch polls page back this far past the oldest due run (clocks may differ)
PAGE_SIZE = 100
BATCH_MAX_PAGES = 50  # a batch poll pages back at most this far, then single polls take over
# A batch poll that fails (too slow, cut off, an error, a malformed page) is not retried: single polls take
# over at once, and the batch route of that workspace is left alone for a while (doubling up to the longest).
BATCH_BACKOFF = (30.0, 600.0)
# Cadence, as shares of the poll interval's low end (2 s against FLORA): a run past its predicted end
# is looked at every FAST_SHARE x 2 s = 1 s (one batch covers them all, so the lag stays under a
# second at the cost of one request per second per workspace, not per run); while it runs, a long
# run is looked at every WATCH_SHARE of its estimate (54 s of an hour) so a failure shows early,
# but no more often than WATCH_MIN_FACTOR x 2 s: a short run is simply looked at near its end.
FAST_SHARE = 0.5
RATE_SHARE_BEATS = 4.0  # under a rate limit of R requests/s the beat is at least 4 / R s: polls keep to ~1/4 of it
FIRST_LOOK_SHARE = 0.5  # the first look is halfway through the estimate; ...
PACE_SHARE = 0.25  # ... the next a quarter of it later: the progress between them tells when the run will end
WATCH_SHARE = 0.015
WATCH_MIN_FACTOR = 10.0


@dataclass
class PollerStats:
    """What the poller has done; shown by ``Flora.status()``."""

    cycles: int = 0
    batch_requests: int = 0
    single_requests: int = 0
    batch_fallbacks: int = 0  # batch polls given up (slow, failed, endless or malformed pages): single polls instead
    reconciled: int = 0
    errors: int = 0
    listener_errors: int = 0
    last_error: str | None = None
    running: bool = False
    failing: int = 0  # errors since the last request that worked; 0 means healthy
    trouble: str | None = None  # what the last error means for the user, while failing

    @property
    def health(self) -> str:
        """One line any display can show: ``ok``, or what is wrong and what the poller does about it."""
        if not self.running and self.cycles:
            return "poller stopped"
        return "ok" if not self.failing else f"{self.trouble} ({self.failing} failed polls)"


def _trouble(exc: BaseException) -> str:
    """What a poll error means for the user, in words a status card or a live display can show."""
    if isinstance(exc, (FloraConnectionError, FloraTimeout)):
        return "FLORA unreachable, retrying"
    if isinstance(exc, AuthenticationError):
        return "FLORA refuses the API key (401), retrying; check FLORA_API_KEY"
    if isinstance(exc, PermissionDeniedError):
        return "FLORA refuses access to the workspace (403), retrying"
    if isinstance(exc, FloraError):
        return f"FLORA answers with errors ({type(exc).__name__}), retrying"
    return f"poller error ({type(exc).__name__}), retrying"


@dataclass(slots=True)
class _Entry:
    run: Run
    due: float
    settle_polls: int = 0
    ends: float = 0.0  # when the estimate says it should end (clock)
    seen: tuple[float, float] | None = None  # (clock, progress) of the first look that saw it run with progress


@dataclass(slots=True)
class _Intent:
    run: Run
    give_up_at: float
    attempts: int = 0  # searches made; never give up on an intent that was not searched for


@dataclass
class _Cycle:
    """Runs due now, grouped by workspace."""

    by_workspace: dict[str, list[_Entry]] = field(default_factory=dict)


class Sink(Protocol):
    """Where the poller sends what it learns (the session, which owns the ledger)."""

    def record(self, pairs: Sequence[tuple[Run, RunState]]) -> None: ...

    def unresolved_starts(self, workspace: str, technique: str) -> list[Start]:
        """Every start of the ledger (any session) not yet bound to a run, with its window."""
        ...

    def bind_listed(self, starts: Sequence[Start], listed: Sequence[RunState], listed_at: float,
                    late: bool) -> tuple[set[int], int]:
        """Decide which listed run belongs to which start and write it (one transaction): the local
        ids written, and how many were bound to a run. The decision is the sink's, not the poller's."""
        ...

    def settled(self, run: Run) -> None:
        """A start this poller looked for was resolved (here or by another session): refresh it."""
        ...

    def give_up(self, run: Run) -> None: ...


class Poller:
    """Keeps tracked runs fresh from one daemon thread."""

    def __init__(self, client: FloraClient, sink: Sink, interval: tuple[float, float] = (2.0, 5.0),
                 grace: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._clock = clock  # monotonic seconds; the scheduling tests pass a fake one
        self._sink = sink
        self.interval = (float(interval[0]), float(max(interval)))
        self.grace = grace
        # The server is the built-in simulator: a run it answers 404 for was lost by a restart of it, and ends
        # failed (uncharged) instead of being polled forever. Against FLORA a 404 stays a poll error, retried.
        self.on_simulator = False
        self.stats = PollerStats()
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._intents: dict[int, _Intent] = {}
        self._sharpened = float("inf")  # the clock's uncertainty after the last sampling by Date headers
        self._batch_off: dict[str, tuple[float, float]] = {}  # workspace -> (batch route left alone until, backoff)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- public

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="flora_nb-poller", daemon=True)
            self.stats.running = True
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (idempotent), ending any request it waits for; runs stay in the ledger."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._client.abort(self._thread.ident)
            self._thread.join(timeout)
        self.stats.running = False

    def track(self, run: Run, first_poll_in: float | None = None) -> None:
        """Poll ``run`` until it is terminal and its charge is known."""
        now, estimate = self._clock(), run.estimated_seconds or 0.0
        # An explicit first_poll_in is kept to the moment; a computed first look goes on the beat.
        due = self._tick(now + self._first_delay(run)) if first_poll_in is None else now + first_poll_in
        ends = now + estimate * (1.0 - min(float(run.progress or 0.0), 100.0) / 100.0)
        with self._lock:
            self._entries[_run_id(run)] = _Entry(run, due, ends=ends)
        self._wake.set()

    def reconcile(self, run: Run, grace: float | None = None) -> None:
        """Look for the server-side run of a start whose answer was lost (its window is in the ledger).

        It is given up on (``unconfirmed``) only ``grace`` seconds (the poller's unless given) after its
        window has closed; until then starts lost together are bound as a group only if nothing better comes.
        """
        window_left = max(0.0, (run.window_high or 0.0) - self._client.clock.now())
        wait = self.grace if grace is None else min(grace, self.grace)
        with self._lock:
            self._intents[run.local_id] = _Intent(run, self._clock() + window_left + wait)
        self._wake.set()

    @property
    def alive(self) -> bool:
        """Is the poller's thread running (started and not ended)?"""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def tracked(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def pending_intents(self) -> int:
        with self._lock:
            return len(self._intents)

    # ------------------------------------------------------------- loop

    def _loop(self) -> None:
        self._client.cancel_with(self._stop)  # close() ends a request of this thread at once
        try:
            while not self._stop.is_set():
                try:
                    self._cycle()
                except BaseException as exc:  # never die (a SystemExit raised in a cycle neither): count it, go on
                    self._failed(exc)
                    self._wake.wait(self.interval[1])  # and never spin on a failure that repeats
                self._sleep_until_due()
        finally:
            self.stats.running = False  # status() and health say so, whatever ended the thread

    def _failed(self, exc: BaseException) -> None:
        # Shown by status() and the live displays; the log record reaches only handlers the user
        # added (flora_nb's logger has a NullHandler, so Python never prints it on its own).
        self.stats.errors += 1
        self.stats.failing += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        trouble = _trouble(exc)
        if trouble != self.stats.trouble:
            self.stats.trouble = trouble
            self._health_changed()
        log.warning("flora_nb poller: %s", self.stats.last_error, exc_info=not isinstance(exc, FloraError))

    def _worked(self) -> None:
        if self.stats.failing:
            self.stats.failing, self.stats.trouble = 0, None
            self._health_changed()

    def _health_changed(self) -> None:
        notify = getattr(self._sink, "health_changed", None)
        if notify is not None:
            try:
                notify(self.stats.health)
            except Exception:
                log.warning("flora_nb: a health listener raised", exc_info=True)

    def _sleep_until_due(self) -> None:
        with self._lock:
            now = self._clock()
            dues = [e.due for e in self._entries.values()]
            if self._intents:
                dues.append(now + self.interval[0])
        pause = self._client.throttle.paused_for
        wait = max(min(dues) - now, pause, 0.005) if dues else None
        self._wake.wait(wait)
        self._wake.clear()

    def _cycle(self) -> None:
        self.stats.cycles += 1
        due = self._due_now()
        for workspace, entries in due.by_workspace.items():
            if self._stop.is_set():
                return
            self._poll_workspace(workspace, entries)
        self._reconcile_intents()

    def _due_now(self) -> _Cycle:
        now = self._clock()
        cycle = _Cycle()
        with self._lock:
            for entry in self._entries.values():
                if entry.due <= now:
                    cycle.by_workspace.setdefault(entry.run.workspace_id, []).append(entry)
        return cycle

    # ------------------------------------------------------------- polling

    def _poll_workspace(self, workspace: str, due: list[_Entry]) -> None:
        # Late charges are looked up one by one: paging history back to an old run would cost more.
        fresh = [e for e in due if e.settle_polls < SETTLE_POLLS]
        seen: dict[str, RunState] = {}
        failed = False
        try:
            if fresh and (len(due) > 1 or self._tracked_in(workspace) > 1) and self._batch_open(workspace):
                seen = self._batch_or_nothing(workspace, fresh)
            for entry in due:
                if entry.run.id not in seen and not self._stop.is_set():
                    seen[_run_id(entry.run)] = self._single(entry.run)
        except Exception as exc:  # network, a bad answer, a locked ledger: try the others later
            failed = True
            self._failed(exc)
        if not failed:
            self._worked()
        try:
            self._observe(list(seen.values()))
        finally:
            # Whatever was not seen (a failed poll, an answer about no run) waits a full interval:
            # a run is never polled again at once, so a bad answer cannot make the poller spin.
            self._postpone([e for e in due if e.run.id not in seen])

    def _batch_or_nothing(self, workspace: str, due: list[_Entry]) -> dict[str, RunState]:
        """A batch poll; when it fails in any way but a rate limit, nothing (single polls take over)."""
        try:
            seen = self._batch(workspace, due)
        except RateLimitError:
            raise  # single polls would only add to it: the whole cycle waits as FLORA asked
        except FloraError as exc:  # too slow (a trickling proxy), cut off, refused, endless or malformed pages
            self.stats.batch_fallbacks += 1
            self._back_off(workspace)
            self._failed(exc)
            return {}
        self._batch_off.pop(workspace, None)
        return seen

    def _batch_open(self, workspace: str) -> bool:
        """Is the batch route of ``workspace`` worth a try (not backed off after a failure)?"""
        until, _ = self._batch_off.get(workspace, (0.0, 0.0))
        return self._clock() >= until

    def _back_off(self, workspace: str) -> None:
        _, last = self._batch_off.get(workspace, (0.0, 0.0))
        backoff = min(last * 2, BATCH_BACKOFF[1]) if last else BATCH_BACKOFF[0]
        self._batch_off[workspace] = (self._clock() + backoff, backoff)

    def _tracked_in(self, workspace: str) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.run.workspace_id == workspace)

    def _batch(self, workspace: str, due: list[_Entry]) -> dict[str, RunState]:
        """One pass over run history, newest first, back to the oldest due run."""
        wanted = {e.run.id for e in due}
        oldest = min(_created(e.run) for e in due) - HISTORY_MARGIN
        with self._lock:
            tracked = set(self._entries)
        seen: dict[str, RunState] = {}
        pages_before = self.stats.batch_requests
        pages = min(self._client.max_pages, BATCH_MAX_PAGES)
        # A page that gets no answer in time (a slow proxy) is not tried again: single polls take over at once.
        history = self._client.technique_runs(page_size=PAGE_SIZE, max_pages=pages, retry_unanswered=False,
                                              workspace_id=workspace)
        for index, state in enumerate(history):
            if index % PAGE_SIZE == 0:
                self.stats.batch_requests += 1
            if state.run_id in tracked:
                seen[state.run_id] = state
                wanted.discard(state.run_id)
            created = state.created_at.timestamp() if state.created_at else None
            if not wanted or (created is not None and created < oldest):
                break
        if self.stats.batch_requests == pages_before:
            self.stats.batch_requests += 1  # an empty history still cost one request
        return seen

    def _single(self, run: Run) -> RunState:
        self.stats.single_requests += 1
        try:
            return self._client.get_run(_run_id(run), run.poll_url)
        except NotFoundError:
            if not self.on_simulator:
                raise
            return unknown_to_simulator(_run_id(run))

    def _observe(self, states: list[RunState]) -> None:
        pairs = []
        with self._lock:
            for state in states:
                entry = self._entries.get(state.run_id)
                if entry is not None:
                    pairs.append((entry.run, state))
        try:
            if pairs:
                self._sink.record(pairs)
        finally:
            self._reschedule([run for run, _ in pairs])

    def _reschedule(self, runs: list[Run]) -> None:
        now = self._clock()
        with self._lock:
            for run in runs:
                entry = self._entries.get(_run_id(run))
                if entry is None:
                    continue
                if run.done and run.charged_cost is not None:
                    del self._entries[_run_id(run)]
                    continue
                if run.done:
                    entry.settle_polls += 1
                late = entry.settle_polls >= SETTLE_POLLS
                entry.due = now + self.interval[1] * LATE_CHARGE_FACTOR if late else self._tick(now + self._next_delay(entry, now))

    def _postpone(self, entries: list[_Entry]) -> None:
        later = self._clock() + max(self.interval[1], self._client.throttle.paused_for)
        with self._lock:
            for entry in entries:
                entry.due = later

    @property
    def _fast(self) -> float:
        """The beat: FAST_SHARE of the interval, slower when a known rate limit would let polls crowd out starts."""
        rate = getattr(self._client.throttle, "effective_rate", None)
        return max(self.interval[0] * FAST_SHARE, RATE_SHARE_BEATS / rate if rate else 0.0)

    def _tick(self, at: float) -> float:
        """``at`` rounded up to the poller's beat, so runs that end close together share one batch."""
        step = self._fast
        return math.ceil(at / step) * step if step > 0 else at

    def _watch(self, estimate: float) -> float:
        """How often a run is looked at while it runs: a small share of its estimate, not too often."""
        return max(estimate * WATCH_SHARE, self.interval[0] * WATCH_MIN_FACTOR)

    def _first_delay(self, run: Run) -> float:
        """First look: halfway through the estimate (its progress then tells when it will really end)."""
        estimate = run.estimated_seconds
        if estimate is None:
            return self.interval[0]
        return max(self._fast, min(estimate * FIRST_LOOK_SHARE, self._watch(estimate)))

    def _next_delay(self, entry: _Entry, now: float) -> float:
        """Next look: at the run's predicted end (from its progress rate), then every second past it."""
        run, low, high = entry.run, self.interval[0], self.interval[1]
        estimate = run.estimated_seconds
        if run.done or estimate is None:
            return high if run.done else low
        if run.status != RUNNING:  # pending or queued behind the server's concurrency cap
            return min(max(estimate, self._fast), high)
        left = self._time_left(entry, now, estimate)
        return max(self._fast, min(left, self._watch(estimate)))

    def _time_left(self, entry: _Entry, now: float, estimate: float) -> float:
        """Seconds until the run should end: measured from its progress rate, else from the estimate."""
        progress = float(entry.run.progress or 0.0)
        by_estimate = estimate * (1.0 - min(progress, 100.0) / 100.0) if progress > 0 else entry.ends - now
        if entry.seen is None:
            if progress > 0:
                entry.seen = (now, progress)
            return min(by_estimate, estimate * PACE_SHARE)  # look again soon: two looks measure its pace
        then, before = entry.seen
        if progress <= before or now <= then:  # no visible progress since: trust the estimate
            return by_estimate
        return (100.0 - min(progress, 100.0)) * (now - then) / (progress - before)

    # ------------------------------------------------------------- reconciliation

    def _reconcile_intents(self) -> None:
        with self._lock:
            intents = sorted(self._intents.values(), key=lambda i: i.run.local_id)
        groups: dict[tuple[str, str], list[_Intent]] = {}
        for intent in intents:
            groups.setdefault((intent.run.workspace_id, intent.run.technique_id), []).append(intent)
        for (workspace, technique), group in groups.items():
            try:
                self._match(workspace, technique, group)
            except Exception as exc:
                self._failed(exc)
        self._expire_intents()

    def _match(self, workspace: str, technique: str, group: list[_Intent]) -> None:
        """Bind the ledger's unresolved starts of this technique (every session's) by the binding rule."""
        starts = self._sink.unresolved_starts(workspace, technique)
        self._forget_settled(group, {s.local_id for s in starts})
        if not starts:
            return
        listed_at = self._client.clock.now()
        listed = self._history(workspace, technique, min(s.low for s in starts))
        self._worked()
        self._sharpen_clock(workspace)
        now = self._clock()
        # A look counts towards giving up only once the start's window has closed and no start of the
        # technique is in flight anywhere (until then nothing may be decided: it waits, never guesses).
        in_flight = any(s.high == float("inf") for s in starts)
        for intent in group:
            if listed_at > (intent.run.window_high or 0.0) and not in_flight:
                intent.attempts += 1
        late = any(i.give_up_at <= now for i in group)  # groups of unequal inputs: only once nothing better came
        done, bound = self._sink.bind_listed(starts, listed, listed_at, late)
        self.stats.reconciled += bound
        if done:
            self._forget_settled(group, {s.local_id for s in starts} - done)

    def _history(self, workspace: str, technique: str, oldest_start: float) -> list[RunState]:
        """The technique's runs back to a little before the oldest start (either clock may be ahead)."""
        bounds = self._client.clock.bounds()
        oldest = oldest_start + (bounds[0] if bounds else -HISTORY_MARGIN) - 1.0
        listed: list[RunState] = []
        self.stats.batch_requests += 1
        history = self._client.technique_runs(workspace_id=workspace, technique_id=technique,
                                              max_pages=min(self._client.max_pages, BATCH_MAX_PAGES))
        for state in history:
            created = state.created_at.timestamp() if state.created_at else 0.0
            if created < oldest:
                break
            listed.append(state)
        return listed

    def _sharpen_clock(self, workspace: str) -> None:
        """Pin the server's clock down from ``Date`` headers when nothing better has: a few cheap
        requests timed to straddle the server's next second boundaries (see ``ClockOffset``)."""
        clock = self._client.clock
        if self._sharpened * 0.9 <= clock.width <= self._sharpened * 1.5:
            return  # sampling already brought it here (round trips bound it); it restarts if the clock moves
        for _ in range(CLOCK_ROUNDS):
            if clock.width <= CLOCK_TARGET or self._stop.is_set():
                break
            for at in clock.probe_times(clock.now(), CLOCK_PROBES):
                if self._stop.wait(max(0.0, at - clock.now())):
                    return
                self.stats.batch_requests += 1
                self._client.request("GET", "/technique-runs", params={"workspace_id": workspace, "limit": 1},
                                     deadline=self._client.poll_deadline)
        self._sharpened = clock.width

    def _forget_settled(self, group: list[_Intent], unresolved: set[int]) -> None:
        """Intents whose row is no longer an unresolved start (bound here or by another session)."""
        settled = [i for i in group if i.run.local_id not in unresolved]
        with self._lock:
            for intent in settled:
                self._intents.pop(intent.run.local_id, None)
        for intent in settled:
            self._sink.settled(intent.run)

    def _expire_intents(self) -> None:
        now = self._clock()
        with self._lock:
            expired = [i for i in self._intents.values() if i.give_up_at <= now and i.attempts >= 2]
            for intent in expired:
                del self._intents[intent.run.local_id]
        for intent in expired:  # its row stays an unresolved start in the ledger: it still claims its window
            self._sink.give_up(intent.run)


def _run_id(run: Run) -> str:
    """A tracked run's FLORA id: only runs whose start was confirmed (or bound) are polled."""
    if run.id is None:
        raise ValueError(f"run {run.local_id} has no FLORA id yet and cannot be polled")
    return run.id


def _created(run: Run) -> float:
    row = run.snapshot
    return row.created_at or row.intent_at
