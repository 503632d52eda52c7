"""The run engine: starts, lost starts, updates, refresh, resume and reconciliation; the poller's sink.

``RunEngine`` owns what happens to runs between the facade (``Flora``) and the wire: it writes
every start to the ledger before it is sent, sends starts in parallel, records what polls see, and
binds lost starts to FLORA's runs by the rule in ``_matching``. It knows nothing of pandas or
IPython. ``Run`` and ``Sweep`` talk to it through its public methods; nothing else reads ledger rows.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ._budget import PERIODS, Exposure, is_money, limit_words, period_start, reserve_ratio, summarize
from ._catalog import Catalog
from ._client import FloraClient, new_idempotency_key
from ._errors import (
    APIError,
    BudgetExceededError,
    FloraConnectionError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    InvalidResponseError,
    LedgerConflict,
    LedgerError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._ledger import Ledger, LedgerRow, canonical_json
from ._matching import Binding, Candidate, Start, bind
from ._models import RunStart, RunState, Technique
from ._owner import STALE_SECONDS
from ._poller import Poller
from ._run import Run
from ._states import (
    ACTIVE,
    CLOSED,
    FAILED,
    INPUTS_DIFFER,
    LOST,
    NOT_RECEIVED,
    NOT_RECEIVED_IN_GROUP_MESSAGE,
    NOT_RECEIVED_MESSAGE,
    PENDING,
    QUEUED,
    SKIPPED,
    STARTING,
    TERMINAL,
    UNCONFIRMED,
    UNCONFIRMED_MESSAGE,
)
from ._transitions import changes_for, unknown_to_simulator
from ._window import StartWindow

__all__ = ["LEASE_MARGIN", "RATE_LIMIT_PATIENCE", "RESUME_GRACE", "RunEngine"]

log = logging.getLogger("flora_nb.session")

LEASE_MARGIN = 1.0  # seconds a start's recorded window reaches past its current attempt's longest end
RESUME_GRACE = 3.0  # seconds a resumed dead start waits for a better (exact) binding before a group one
RATE_LIMIT_PATIENCE = 60.0  # seconds a single run's start keeps trying through 429s (sweeps: while running)
MADE_NOTE = "FLORA made this start's run (it answered idempotency_duplicate)"  # an event note: proof kept in the ledger
MADE_MESSAGE = ("FLORA said this start made a run (it answered a resend with 'duplicate key'), but which of its "
                "runs it is has not been found yet; it was charged. fl.resume() looks again: do not start it again.")


def _maybe_started(exc: APIError) -> bool:
    """Could FLORA have created the run although this start ended in an error?"""
    # A duplicate key means it did; a 5xx may come after the run was made; and any error that
    # follows an unanswered attempt may hide a run that attempt created. An answer we cannot
    # read (no run_id, not JSON, too large) came after the server acted: its outcome is unknown.
    if isinstance(exc, InvalidResponseError) and exc.code != "redirect":  # a redirect never reached FLORA
        return True
    return isinstance(exc, (IdempotencyDuplicateError, ServerError)) or exc.unanswered_attempt


def _read_timeout(client: FloraClient) -> float:
    timeout = client.timeout
    return float(timeout[1] if isinstance(timeout, tuple) else timeout)


def _owner_busy(ledger: Ledger, row: LedgerRow, now: float) -> bool:
    """Is the session that wrote this start still alive (so the start may still be in flight)?"""
    alive = ledger.owner_alive(row.owner)
    return alive if alive is not None else now - row.intent_at < STALE_SECONDS


class RunEngine:
    """Runs of one endpoint: start them (in parallel), keep them fresh, find lost starts' runs.

    ``budget`` (USD or None) is the session budget every start must fit (``check_budget``);
    ``owner`` names this process's session in the rows it writes; ``workspace`` is the user's
    choice of default workspace (``catalog.workspace_id`` resolves it). It is the ``RunHost`` of
    every ``Run`` it makes and the poller's ``Sink``.
    """

    def __init__(self, client: FloraClient, ledger: Ledger, endpoint: str, owner: str, *,
                 budget: float | None = None, cache_dir: Path, poll_interval: tuple[float, float] = (2.0, 5.0),
                 reconcile_grace: float = 60.0, workspace: str | None = None, user: str | None = None):
        self.client, self.ledger, self.endpoint, self.owner = client, ledger, endpoint, owner
        self.user, self.host = user, socket.gethostname()  # who starts runs here, and from where
        self.budget = budget
        self.cache_dir = cache_dir  # where run outputs are cached when fetched
        self.clock = client.clock  # the server's clock against ours (bounds; None until learnt)
        self.catalog = Catalog(client, workspace)  # techniques and the default workspace, looked up once
        self.rate_limited_starts = 0  # start attempts FLORA answered 429 to, after the client's own retries
        self.closed = False
        self._runs: dict[int, Run] = {}
        self._lock = threading.RLock()
        self._start_windows: dict[int, tuple[float, float]] = {}  # local id -> when its start was sent
        # local id -> (changes, note): what FLORA answered that the ledger could not take yet (locked by
        # another process): shown on the handle at once, written as soon as the ledger lets us.
        self._kept: dict[int, tuple[dict[str, Any], str]] = {}
        self._windows: dict[tuple[str, str], StartWindow] = {}  # (workspace, technique) -> starts out at once
        self._budget_lock = threading.Lock()  # budget check + "starting": one start at a time; POSTs run in parallel
        self.poller = Poller(client, self, interval=poll_interval, grace=reconcile_grace)
        self.poller.start()

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the poller; no start is sent after this (the facade closes client and ledger)."""
        self.closed = True
        self.poller.stop()
        self.write_kept()  # a last try: answers the ledger refused while it was locked
        if self._kept:
            log.warning("flora_nb: %d run answer(s) could not be written to the ledger %s before closing; "
                        "fl.resume() in a new session finds their runs", len(self._kept), self.ledger.location)

    @property
    def health(self) -> str:
        """``ok``, or what keeps the poller from FLORA (e.g. "FLORA unreachable, retrying")."""
        return CLOSED if self.closed else self.poller.stats.health

    @property
    def rate_limit_wait(self) -> float:
        """Seconds FLORA's last 429 asks every request to wait (0 when not rate limited)."""
        return self.client.throttle.paused_for

    def track(self, run: Run, first_poll_in: float = 0.0) -> None:
        """Have the poller keep ``run`` fresh (first look after ``first_poll_in`` seconds)."""
        self.poller.track(run, first_poll_in=first_poll_in)

    def fetch_media_to(self, url: str, handle: Any) -> None:
        """Stream one output's bytes into ``handle`` (through the client: its origin rules apply)."""
        self.client.fetch_media_to(url, handle)

    def save_rating(self, local_id: int, rating: float | None, note: str | None) -> LedgerRow | None:
        """Write a run's rating and note; the row as it is now."""
        self.ledger.set_rating(local_id, rating, note, by=self.user)
        return self.ledger.get(local_id)

    def reload(self, run: Run) -> None:
        """Take the run's row as the ledger has it now (another session may have written it)."""
        row = self.ledger.get(run.local_id)
        if row is not None:
            run.apply_row(row)

    def claim(self, items: Sequence[tuple[Run, Mapping[str, Any], Mapping[str, Any]]], note: str) -> list[Run]:
        """Apply each ``(run, expected, changes)`` only where its row still has the ``expected`` values
        (one transaction: two sessions never take the same row); returns the runs taken, refreshed."""
        taken = set(self.ledger.claim([(run.local_id, expected, changes) for run, expected, changes in items],
                                      note=note))
        runs = [run for run, _, _ in items if run.local_id in taken]
        for run in runs:
            self.reload(run)
        return runs

    def sync(self, sweep_id: str) -> None:
        """Take a sweep's rows that another session wrote since (it may be running or resuming it)."""
        for row in self.ledger.rows(self.endpoint, sweep_id=sweep_id):
            run = self.run_for(row.local_id)
            # Newer rows only, and never a finished run back to unfinished (this session's poller
            # may have written meanwhile): a later poll or sync brings anything still missing.
            if run is not None and row.updated_at > run.updated_at and not (run.done and row.status in ACTIVE):
                run.apply_row(row)

    def run_for(self, local_id: int) -> Run | None:
        """This session's handle of a ledger row, if it made one."""
        with self._lock:
            return self._runs.get(local_id)

    # ---------------------------------------------------------------- starts

    def start(self, tech: Technique, inputs: dict[str, Any], workspace: str, labels: dict[str, Any]) -> Run:
        """Start one run now: written to the ledger, then sent; returns its Run (the poller keeps it fresh)."""
        self._check_room(tech, tech.run_cost, None)  # refused: not even a ledger row
        [run] = self.queue(tech, workspace, [{"inputs": inputs, "labels": labels}], status=STARTING)
        try:
            self.launch(run, tech)
        except BudgetExceededError as exc:  # another thread's start took the room meanwhile
            self.update(run, status=SKIPPED, error_code="budget", error_message=str(exc), charged_cost=0.0)
            raise
        return run

    def queue(self, tech: Technique, workspace: str, planned: Sequence[Mapping[str, Any]],
               status: str = QUEUED) -> list[Run]:
        """Write planned starts to the ledger (one transaction) and return their Run handles."""
        intents = [{
            "endpoint": self.endpoint, "workspace_id": workspace, "idempotency_key": new_idempotency_key(),
            "owner": self.owner, "user_name": self.user, "host": self.host,
            "technique_id": tech.technique_id, "technique_name": tech.name, "estimated_cost": tech.run_cost,
            "status": status, **plan,
        } for plan in planned]
        return [self.adopt(self.ledger.get(i)) for i in self.ledger.add_intents(intents)]

    def launch(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None = None,
                since: float | None = None) -> None:
        """Send one queued start; a lost answer is reconciled, a rejection is recorded and raised.

        The session budget is checked first (``BudgetExceededError``, nothing sent, row untouched).
        A 429 is "not now": the same start is tried again with the same key while ``keep_trying()``
        says so (a sweep: until it is stopped), or for ``RATE_LIMIT_PATIENCE`` seconds; a start that
        never got past 429 is ``skipped`` (``rate_limited``), never ``failed``. ``since``: the start
        was sent before (a resent unconfirmed start), so a run it made may date from then.
        """
        self.begin_start(run, tech, since)
        self.send_start(run, tech, keep_trying, resent=since is not None)

    def begin_start(self, run: Run, tech: Technique, since: float | None = None) -> None:
        """Check the budget and the spend limits and mark the row ``starting`` with the start of its send
        window, in one ledger transaction (nothing sent): racing sessions never both take the last room."""
        with self._budget_lock:  # two starts of this session never both take the budget's last room
            now = self.clock.now()
            # window_high is a lease while we live: the server cannot act on this start after it
            # unless we extend it first (each attempt does); if we die, it is the window's end.
            changes = {"status": STARTING, "window_low": now if since is None else since,
                       "window_high": now + self.client.attempt_seconds + LEASE_MARGIN}
            self.ledger.admit(run.local_id, changes, lambda: self._check_room(tech, run.estimated_cost, run.local_id))
            run.apply_row(self._stored_row(run.local_id))

    def _check_room(self, tech: Technique, estimate: float | None, exclude: int | None) -> None:
        self.check_budget(tech.technique_id, estimate, tech.name, exclude=exclude)
        self.check_limits(tech.technique_id, estimate, tech.name, exclude=exclude)

    def send_start(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None = None,
                    resent: bool = False) -> None:
        """POST a start marked ``starting`` (no lock held: starts go out in parallel) and record the answer.
        ``resent``: its key was sent before (an earlier attempt may have made a run).

        The technique's start window says how many starts may be out without an answer (``_window``):
        a start waits for room first, and its outcome opens or closes the window."""
        window = self._window(run.workspace_id, tech.technique_id)
        if not self._take_room(run, window, resent):
            return
        try:
            sent = self._post(run, tech, keep_trying, resent, window)
        finally:
            lost = run.id is None and run.error_code == LOST
            window.lost() if lost else window.answered()
        if sent is None:
            return
        start, sent_at = sent
        changes = {"run_id": start.run_id, "status": PENDING, "poll_url": start.poll_url,
                   "estimated_seconds": start.estimated_seconds, "project_id": start.project_id}
        if is_money(start.charged_cost) and tech.run_cost is None:
            changes["estimated_cost"] = start.charged_cost
        refused = self.keep(run, "started", changes)
        self._start_windows[run.local_id] = (sent_at, self.clock.now())
        self.poller.track(run)
        if refused is not None:
            raise LedgerError(
                f"FLORA started run {start.run_id} (ledger row {run.local_id}) and may charge for it, but the ledger "
                f"could not record it yet: {refused} flora_nb keeps the answer, writes it as soon as the ledger "
                f"lets it and tracks the run meanwhile: fl.find_run({start.run_id!r}) is its handle. Do not start "
                "it again: that would pay twice.") from refused

    def _window(self, workspace: str, technique_id: str) -> StartWindow:
        with self._lock:
            return self._windows.setdefault((workspace, technique_id), StartWindow())

    def _take_room(self, run: Run, window: StartWindow, resent: bool) -> bool:
        """Wait for room in the start window; False if the session closed meanwhile (nothing sent)."""
        try:
            waited = window.take(lambda: self.closed)
        except BaseException:  # Ctrl-C while waiting: this start was never sent
            self.update(run, status=SKIPPED, error_code="interrupted", charged_cost=0.0,
                         error_message="Interrupted before it was sent: nothing was started or charged.")
            raise
        if waited is None:
            return False
        if waited and not resent:  # its POST goes out only now: a lost answer's window starts here
            try:
                self.update(run, window_low=self.clock.now())
            except BaseException:  # nothing was sent: give the room back, or the technique's starts wait forever
                window.answered()
                raise
        return True

    def _extend_window(self, run: Run, at: float) -> None:
        """An attempt goes out at ``at``: make sure the row's window covers what FLORA may do with it."""
        needed = at + self.client.attempt_seconds
        if run.window_high is None or run.window_high < needed:
            self.update(run, window_high=needed + LEASE_MARGIN)

    def _post(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None,
              resent: bool = False, window: StartWindow | None = None) -> tuple[RunStart, float] | None:
        """POST the start: its answer and when the answered attempt went out; None when the answer
        was lost (then it is being reconciled). Ctrl-C during it leaves a lost start, then goes on."""
        first = run.window_low if run.window_low is not None else self.clock.now()
        patience = time.monotonic() + RATE_LIMIT_PATIENCE
        while True:
            sent_at = self.clock.now()
            try:
                return self.client.start_technique_run(
                    tech.technique_id, run.workspace_id, run.inputs, idempotency_key=run.idempotency_key,
                    on_attempt=lambda at: self._extend_window(run, at),
                    on_unanswered=window.shrink if window is not None else None), sent_at
            except FloraConnectionError as exc:  # the server closed the connection: done with it
                self.lost(run, exc, (first, self.clock.now()))
            except FloraTimeout as exc:  # the server may still be working on it for a while
                self.lost(run, exc, (first, self.clock.now() + _read_timeout(self.client)))
            except RateLimitError as exc:
                if _maybe_started(exc):
                    self.lost(run, exc, (first, self.clock.now()))
                elif keep_trying() if keep_trying is not None else time.monotonic() < patience:
                    self._hold_off(exc)  # the window keeps its start: a 5xx the client retried may have made the run
                    continue
                else:
                    self.update(run, status=SKIPPED, error_code=exc.code, charged_cost=0.0,
                                 error_message="FLORA kept answering 429 (rate limited); this run was not started.")
                    raise
            except APIError as exc:
                if _maybe_started(exc):  # a duplicate key: made (kept as proof); its window is the first send's
                    self.lost(run, exc, (first, self.clock.now()))
                else:
                    self.update(run, status=FAILED, error_code=exc.code, error_message=exc.message,
                                 charged_cost=0.0)
                    raise
            except BaseException as exc:  # Ctrl-C (or a bug) mid-POST: FLORA may still act on what was sent
                if not self.closed:
                    self.lost(run, exc, (first, self.clock.now() + self.client.attempt_seconds))
                raise
            return None

    def _hold_off(self, exc: RateLimitError) -> None:
        """A 429 after the client's own retries: hold every request of this client as FLORA asked."""
        self.rate_limited_starts += 1
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        self.client.throttle.pause(min(max(wait, 0.05), self.client.max_retry_wait))

    def lost(self, run: Run, exc: BaseException, window: tuple[float, float], grace: float | None = None) -> None:
        """FLORA may have created this run without our hearing of it: record the start's finite send
        window (a resumed start keeps it) and look for the run; never resend. ``grace``: see ``Poller.reconcile``."""
        note = MADE_NOTE if isinstance(exc, IdempotencyDuplicateError) else f"start answer lost: {type(exc).__name__}"
        self.update(run, note=note, error_code=LOST,
                     window_low=window[0], window_high=window[1],
                     error_message="The start's answer was lost; flora_nb is looking for the run on FLORA "
                                   "(it never starts a run twice).")
        self.poller.reconcile(run, grace)

    # ---------------------------------------------------------------- budget

    def reserve_ratio(self, technique_id: str) -> float:
        """What a run's estimate is multiplied by while its charge is unknown (see the budget rule);
        a slug this session has looked up is accepted too."""
        technique_id = self.catalog.technique_id(technique_id)
        return reserve_ratio(*self.ledger.charge_ratios(self.endpoint, technique_id))

    def reserve(self, technique_id: str, estimate: float | None, exclude: int | None = None) -> float:
        """The USD a run of this technique holds against a budget until its charge is known.

        Its estimate times the reserve ratio, and never less than the highest charge FLORA reported
        for the technique (a listed price can be too low). A technique with no price evidence (listed
        at $0 or not at all, never charged) holds nothing for one run, and everything (infinity) while
        another of its runs waits for a charge: such runs start one at a time until a charge is known.
        """
        technique_id = self.catalog.technique_id(technique_id)
        highest, waiting = self.ledger.price_evidence(self.endpoint, technique_id, exclude)
        base = (estimate or 0.0) * self.reserve_ratio(technique_id)
        if highest is not None:
            return max(base, highest)
        if estimate:
            return base
        return math.inf if waiting else 0.0

    def worst_price(self, tech: Technique) -> float | None:
        """The most one run of ``tech`` may cost: its listed price, or the highest charge seen if higher."""
        highest, _ = self.ledger.price_evidence(self.endpoint, tech.technique_id)
        known = [p for p in (tech.run_cost, highest) if p is not None]
        return max(known) if known else None

    def _highest_charge(self, technique_id: str) -> float:
        return self.ledger.price_evidence(self.endpoint, technique_id)[0] or 0.0

    def exposure(self, *, sweep_id: str | None = None, owner: str | None = None,
                 exclude: int | None = None) -> Exposure:
        """Charges known plus reserves of launched runs (a sweep's, or one session's)."""
        groups = self.ledger.exposure(self.endpoint, sweep_id=sweep_id, owner=owner, exclude=exclude)
        return summarize(groups, self.reserve_ratio, self._highest_charge)

    def check_budget(self, technique_id: str, estimate: float | None, name: str = "",
                     exclude: int | None = None) -> None:
        """Raise BudgetExceededError unless a run of this price fits the session budget now."""
        if self.budget is None:
            return
        reserve = self.reserve(technique_id, estimate, exclude)
        if estimate is None and (reserve == 0.0 or math.isinf(reserve)):  # no listed price and no charge seen
            raise InputError(f"{name or technique_id} has no known price (run_cost), so the session budget of "
                             f"${self.budget:.2f} cannot be enforced for it; run it from a session without a budget "
                             "(Flora(budget=None)).")
        if math.isinf(reserve):
            raise BudgetExceededError(
                f"{name or technique_id} has no known price yet (listed at $0 and never charged), so under the "
                f"session budget of ${self.budget:.2f} its runs start one at a time until FLORA reports a charge; "
                "another of its runs is still waiting for one. Nothing was sent.", estimate=None, budget=self.budget)
        spent = self.exposure(owner=self.owner, exclude=exclude)
        if not spent.fits(reserve, self.budget):
            raise BudgetExceededError(
                f"The session budget of ${self.budget:.2f} has ${max(0.0, self.budget - spent.committed):.2f} left "
                f"(${spent.charged:.2f} charged, ${spent.reserved:.2f} held for {spent.pending} run(s) whose charge "
                f"is not known yet); this run holds ${reserve:.2f} until charged. Nothing was sent.",
                estimate=reserve, budget=self.budget)

    # ---------------------------------------------------------------- spend limits

    def set_spend_limit(self, usd: float | None, period: str | None = None, technique: str | None = None) -> None:
        """Set the limit of one scope in the ledger (every session of it enforces it); ``usd=None`` removes it."""
        if usd is not None and not is_money(usd):
            raise InputError(f"a spend limit is a number of USD >= 0, got {usd!r}; or None to remove it.")
        if period not in PERIODS:
            raise InputError(f"period must be None (in all), 'day' or 'month'; got {period!r}.")
        technique_id = self.catalog.technique(technique).technique_id if technique else None
        self.ledger.set_spend_limit(self.endpoint, None if usd is None else float(usd), period, technique_id, by=self.user)

    def spend_limits(self, technique_id: str | None = None, exclude: int | None = None,
                     ) -> list[tuple[str | None, str | None, float, Exposure]]:
        """Each spend limit (covering ``technique_id`` when given): technique, period, USD, what counts now."""
        found, now = [], time.time()
        for technique, period, usd in self.ledger.spend_limits(self.endpoint):
            if technique_id is not None and technique not in (None, technique_id):
                continue
            groups = self.ledger.exposure(self.endpoint, exclude=exclude, technique_id=technique,
                                          since=period_start(period, now))
            found.append((technique, period, usd, summarize(groups, self.reserve_ratio, self._highest_charge)))
        return found

    def check_limits(self, technique_id: str, estimate: float | None, name: str = "",
                     exclude: int | None = None) -> None:
        """Raise BudgetExceededError unless a run of this price fits every spend limit that covers it."""
        limits = self.spend_limits(technique_id, exclude)
        if not limits:
            return
        reserve = self.reserve(technique_id, estimate, exclude)
        for technique, period, usd, spent in limits:
            if spent.fits(reserve, usd):
                continue
            holds = "its price is not known yet" if math.isinf(reserve) else f"it holds ${reserve:,.2f} until charged"
            words = limit_words(technique, period, usd)
            raise BudgetExceededError(
                f"{words[0].upper()}{words[1:]} has ${max(0.0, usd - spent.committed):,.2f} left: "
                f"${spent.charged:,.2f} spent and ${spent.reserved:,.2f} held for {spent.pending} run(s) whose charge "
                f"is not known yet, and this run of {name or technique_id} does not fit ({holds}). Nothing was sent. "
                "fl.spend_limits() shows every limit; fl.set_spend_limit(...) changes one.",
                estimate=None if math.isinf(reserve) else reserve, budget=usd)

    # ---------------------------------------------------------------- runs and their rows

    def tracked_runs(self) -> list[Run]:
        """Runs of this session that are not done yet."""
        with self._lock:
            return [r for r in self._runs.values() if not r.done]

    def find_run(self, run_id: str) -> Run | None:
        """A run of this endpoint by FLORA run id (from this session or the ledger)."""
        with self._lock:
            found = next((r for r in self._runs.values() if r.id == run_id), None)
        if found is None:
            row = self.ledger.find_run(self.endpoint, run_id)
            found = self.adopt(row) if row is not None else None
        return found

    def _stored_row(self, local_id: int) -> LedgerRow:
        """A row this engine wrote or read: rows are never deleted, so it is there."""
        row = self.ledger.get(local_id)
        if row is None:
            raise LookupError(f"ledger row {local_id} is missing from {self.ledger.location}")
        return row

    def adopt(self, row: LedgerRow | None) -> Run:
        """The one Run handle of a ledger row in this session (made on first sight)."""
        assert row is not None
        with self._lock:
            run = self._runs.get(row.local_id)
            if run is None:
                run = self._runs[row.local_id] = Run(self, row)
        return run

    def update(self, run: Run, note: str | None = None, **changes: Any) -> None:
        """Write changes to a run's row (one transaction, an event when its status changes); refresh the Run."""
        self.ledger.update(run.local_id, note=note, **changes)
        run.apply_row(self._stored_row(run.local_id))

    def update_many(self, runs: Sequence[Run], **changes: Any) -> None:
        """The same change to many runs, in one ledger transaction."""
        if not runs:
            return
        self.ledger.update_many([(run.local_id, changes) for run in runs])
        for run in runs:
            run.apply_row(self._stored_row(run.local_id))

    def keep(self, run: Run, note: str, changes: Mapping[str, Any]) -> LedgerError | None:
        """Write what FLORA answered for a run; if the ledger refuses it now (another process holds its lock
        past the busy timeout), keep it: the handle shows it at once and ``write_kept`` writes it later.
        Returns the refusal, or None when it was written."""
        with self._lock:
            waiting = run.local_id in self._kept
        if not waiting:
            try:
                self.update(run, note=note, **changes)
                return None
            except LedgerError as exc:
                refused = exc
        else:
            refused = LedgerError("an earlier answer for this run is still waiting for the ledger.")
        with self._lock:
            kept, first_note = self._kept.get(run.local_id, ({}, note))
            self._kept[run.local_id] = ({**kept, **changes}, first_note)
        run.apply_row(replace(run.snapshot, **changes, updated_at=time.time()))
        return refused

    def write_kept(self) -> None:
        """Write the answers the ledger refused before, oldest first; stop at the first refusal (still locked)."""
        with self._lock:
            kept = sorted(self._kept.items())
        for local_id, (changes, note) in kept:
            try:
                self.ledger.update(local_id, note=f"{note} (written late: the ledger was locked)", **changes)
            except LedgerError:
                return
            with self._lock:
                if self._kept.get(local_id, (None,))[0] is changes:
                    del self._kept[local_id]
            run = self._runs.get(local_id)
            if run is not None:
                run.apply_row(self._stored_row(local_id))

    def kept_run_ids(self) -> set[str]:
        with self._lock:
            return {c["run_id"] for c, _ in self._kept.values() if c.get("run_id")}

    def reread(self, run: Run) -> None:
        """Bring a handle up to date from the ledger (another session may have bound or finished its row);
        a run another session bound is tracked here from now on."""
        self.settled(run)

    def refresh(self, run: Run) -> None:
        """Poll FLORA for one run now and record what it says."""
        if run.id is None:
            raise InputError("this run's start is not confirmed yet; call fl.resume() to look for it.")
        try:
            state = self.client.get_run(run.id, run.poll_url)
        except NotFoundError:
            if not self.poller.on_simulator:
                raise
            state = unknown_to_simulator(run.id)  # a restarted simulator lost it: it ends, uncharged
        self.record([(run, state)])

    # ---------------------------------------------------------------- poller sink

    def record(self, pairs: Sequence[tuple[Run, RunState]]) -> None:
        """Write what polls saw (one transaction), then update the Run handles."""
        self._learn_clock(pairs)
        self.write_kept()
        batch = [(run, changes_for(run.snapshot, state)) for run, state in pairs]
        batch = [(run, ch) for run, ch in batch if ch]
        with self._lock:
            waiting = [(run, ch) for run, ch in batch if run.local_id in self._kept]
        for run, ch in waiting:  # written after what is still waiting for the ledger, never before it
            self.keep(run, "polled", ch)
        batch = [(run, ch) for run, ch in batch if (run, ch) not in waiting]
        if not batch:
            return
        rows = self.ledger.write_back([(run.snapshot, ch) for run, ch in batch])  # rows as written: no read per run
        for run, _ in batch:
            if run.local_id in rows:
                run.apply_row(rows[run.local_id])

    def unresolved_starts(self, workspace: str, technique: str) -> list[Start]:
        """Every start of this endpoint's ledger (any session, any process) not yet bound to a run."""
        self.write_kept()
        now = time.time()
        with self._lock:
            answered = set(self._kept)  # their run is known here: never in flight, never a start to bind
        rows = self.ledger.open_starts(self.endpoint, workspace, technique)
        return [self._as_start(row, now) for row in rows if row.local_id not in answered]

    def _as_start(self, row: LedgerRow, now: float) -> Start:
        low = row.window_low if row.window_low is not None else self._began(row)
        if row.error_code is None and _owner_busy(self.ledger, row, now):
            high = float("inf")  # its session lives and may still be sending it
        elif row.window_high is not None:
            high = row.window_high  # recorded when it was lost, or its last lease if its session died
        else:
            high = low + self._send_budget()  # a row from before windows were kept
        return Start(row.local_id, low, high, canonical_json(row.inputs), made=self._made(row))

    def _made(self, row: LedgerRow) -> bool:
        """Did FLORA say this start made a run (a duplicate-key answer to a resend, kept as an event)?"""
        return any(e["note"] == MADE_NOTE for e in self.ledger.events(row.local_id))

    def _send_budget(self) -> float:
        """The longest one start can keep sending: every attempt, the waits between them, and FLORA's time."""
        client = self.client
        return (client.max_retries + 1) * client.attempt_seconds + client.max_retries * (8.0 + client.max_retry_wait)

    def bind_listed(self, starts: Sequence[Start], listed: Sequence[RunState], listed_at: float,
                    late: bool) -> tuple[set[int], int]:
        """Decide which listed FLORA run belongs to which unresolved start (the rule in ``_matching``)
        and write it; returns the local ids written and how many of them were bound to a run.
        ``late``: a start's grace is over, so groups of unequal inputs may be bound too."""
        known = self.known_run_ids()  # read after listing: a start that landed meanwhile counts
        states = {s.run_id: s for s in listed if s.run_id not in known and s.created_at is not None}
        candidates = [Candidate(r, s.created_at.timestamp()) for r, s in states.items() if s.created_at is not None]
        bindings = bind(starts, candidates, self.clock.bounds(), listed_at, groups=late)
        if not bindings:
            return set(), 0
        done = self.resolve(bindings, states)
        return done, sum(1 for b in bindings if b.local_id in done and b.run_id is not None)

    def resolve(self, bindings: Sequence[Binding], states: Mapping[str, RunState]) -> set[int]:
        """Write what the binding rule decided, in one transaction; returns the local ids written."""
        items = []
        for binding in bindings:
            row = self.ledger.get(binding.local_id)
            if row is None or row.run_id is not None or row.status != STARTING:
                continue  # another session of this ledger resolved it first
            items.append((binding.local_id, {"run_id": None, "status": STARTING},
                          _resolution(row, binding, states.get(binding.run_id or ""), changes_for)))
        try:
            taken = set(self.ledger.claim(items, note="reconciled"))
        except LedgerConflict:  # one of those runs was bound meanwhile: the next look decides again
            return set()
        for local_id in sorted(taken):
            self.settled(self.adopt(self.ledger.get(local_id)))
        return taken

    def settled(self, run: Run) -> None:
        """A lost start was resolved (here or in another session): refresh it, and track its run."""
        row = self.ledger.get(run.local_id)
        if row is None:
            return
        run.apply_row(row)
        if row.run_id is not None and (not run.done or run.charged_cost is None):
            self.poller.track(run, first_poll_in=self.poller.interval[0])

    def give_up(self, run: Run) -> None:
        """A lost start was not found within the grace period: say so, keep it for resume()."""
        row = self.ledger.get(run.local_id)
        if row is None or row.run_id is not None or row.status != STARTING:
            self.settled(run)  # another session of this ledger bound it meanwhile: bring the handle up to date
            return
        self.update(run, note="unconfirmed", error_code=UNCONFIRMED,
                    error_message=MADE_MESSAGE if self._made(row) else UNCONFIRMED_MESSAGE)

    def known_run_ids(self) -> set[str]:
        """FLORA run ids some row of this endpoint already holds (any session)."""
        return self.ledger.known_run_ids(self.endpoint) | self.kept_run_ids()

    def clock_bounds(self) -> tuple[float, float] | None:
        """Bounds on the server's clock minus ours (None until learnt)."""
        return self.clock.bounds()

    def _learn_clock(self, pairs: Sequence[tuple[Run, RunState]]) -> None:
        for run, state in pairs:
            window = self._start_windows.pop(run.local_id, None)
            if window is not None and state.created_at is not None:
                self.clock.observe(window[0], window[1], state.created_at.timestamp())

    def starts_in_flight(self, workspace: str, technique: str) -> bool:
        """Is any session (this one included) still waiting for a start's answer?"""
        now = time.time()
        with self._lock:
            answered = set(self._kept)
        rows = self.ledger.open_starts(self.endpoint, workspace, technique)
        return any(row.error_code is None and row.local_id not in answered and _owner_busy(self.ledger, row, now) for row in rows)

    def health_changed(self, health: str) -> None:
        """Poller sink: the health changed; tell the live displays of tracked runs (they read ``health``)."""
        for run in self.tracked_runs():
            row = self.ledger.get(run.local_id)
            if row is not None:
                run.apply_row(row)


    def listener_failed(self, callback: Any) -> None:
        """A run's change listener raised: count it, log it; tracking goes on."""
        self.poller.stats.listener_errors += 1
        log.warning("flora_nb: a run listener raised", exc_info=True)

    # ---------------------------------------------------------------- resume

    def resume(self) -> list[Run]:
        """Re-attach every unfinished run of this endpoint and look again for lost starts.

        Starts another live session is still sending are left to it; sweeps queued by a
        session that has died are marked ``skipped`` (``interrupted``).
        """
        runs, now = [], time.time()
        for row in self.ledger.rows(self.endpoint, statuses=ACTIVE):
            if row.run_id is None and row.error_code is None and _owner_busy(self.ledger, row, now):
                continue  # in flight in a live session (this one included): its answer is on its way
            run = self.adopt(row)
            if row.run_id is None:  # lost, unconfirmed, or in flight when its session died: look (again)
                start = self._as_start(row, now)  # not in flight anywhere: its window is finite
                # Its window closed long ago and its session is gone: waiting longer cannot make a binding
                # more certain than the clock bounds already do, so decide within seconds, not a full grace.
                self.lost(run, RuntimeError("resumed"), (start.low, start.high), grace=RESUME_GRACE)
            else:
                self._forget_foreign_poll_urls(row)
                run.apply_row(self._stored_row(row.local_id))
                self.poller.track(run, first_poll_in=0.0)
            runs.append(run)
        for row in self.ledger.rows(self.endpoint, statuses=TERMINAL):
            if row.charged_cost is None and row.run_id is not None:
                self._forget_foreign_poll_urls(row)
                run = self.adopt(self.ledger.get(row.local_id))
                self.poller.track(run, first_poll_in=0.0)
                runs.append(run)
        self.skip_orphans()
        return runs

    def _began(self, row: LedgerRow) -> float:
        """When a row without a recorded window turned ``starting`` (its first POST cannot be earlier)."""
        events = self.ledger.events(row.local_id)
        return max((e["at"] for e in events if e["status"] == STARTING and e["note"] in (None, "intent")),
                   default=row.intent_at)

    def start_window_low(self, run: Run) -> float:
        """The earliest moment this start's POST may have gone out (a resend keeps it)."""
        row = self.ledger.get(run.local_id) or run.snapshot
        return row.window_low if row.window_low is not None else self._began(row)

    def skip_orphans(self) -> None:
        """Queued runs of a session that is gone will never be launched: say so."""
        orphans = [self.adopt(row) for row in self.ledger.rows(self.endpoint, statuses=(QUEUED,))
                   if self.ledger.owner_alive(row.owner) is False]
        self.update_many(orphans, status=SKIPPED, error_code="interrupted", charged_cost=0.0,
                          error_message="The session that queued this run ended before starting it; "
                                        "fl.get_sweep(sweep_id).resume() starts it.")

    def _forget_foreign_poll_urls(self, row: LedgerRow) -> None:
        """A poll URL from another port of the same named endpoint (a restarted simulator) is stale."""
        if row.poll_url and not self.client.same_origin(row.poll_url):
            self.ledger.update(row.local_id, note="poll_url of an earlier server dropped", poll_url=None)


def _pairing(binding: Binding) -> str:
    """What a lost start's row says about how it was bound."""
    if binding.exact:
        return "exact"
    ids = ",".join(str(i) for i in binding.group)
    if binding.same_inputs:
        return f"unknown among local ids {ids} (same inputs: which run id went with which start is unknown)"
    return f"unknown among local ids {ids} ({INPUTS_DIFFER}: this row's run may carry another row's inputs)"


def _resolution(row: LedgerRow, binding: Binding, state: RunState | None, changes_for: Any) -> dict[str, Any]:
    """The ledger changes that bind ``row`` to its run, or say FLORA never received it."""
    if binding.run_id is None or state is None:
        message = NOT_RECEIVED_MESSAGE if binding.exact else NOT_RECEIVED_IN_GROUP_MESSAGE.format(
            ids=", ".join(str(i) for i in binding.group))
        return {"status": SKIPPED, "error_code": NOT_RECEIVED, "error_message": message,
                "charged_cost": 0.0, "pairing": _pairing(binding)}
    changes = {"run_id": state.run_id, "poll_url": state.poll_url, "project_id": state.project_id,
               "error_code": None, "error_message": None, "pairing": _pairing(binding)}
    changes.update(changes_for(row, state))
    return changes
