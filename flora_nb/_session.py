"""Flora: the notebook-facing session that owns one client, one ledger and one poller."""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ._client import FloraClient, new_idempotency_key, setting
from ._clock import ClockOffset
from ._errors import (
    APIError,
    ConfigError,
    FloraConnectionError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    InvalidResponseError,
    ServerError,
)
from ._ledger import ACTIVE, Ledger, LedgerRow, default_home
from ._models import RunState, Technique, Workspace
from ._owner import STALE_SECONDS, is_alive, new_owner, retire
from ._poller import CLOCK_SLACK, Poller
from ._run import Run
from ._validation import check_inputs

if TYPE_CHECKING:
    import pandas as pd

    from .sim import FloraSimulator

__all__ = ["Flora"]

log = logging.getLogger("flora_nb.session")

_SESSIONS: weakref.WeakSet[Flora] = weakref.WeakSet()

START_GAP = 0.002  # seconds between two starts of a session
LOST = "start_lost"  # the answer to a start never came: reconciling
UNCONFIRMED = "start_unconfirmed"  # reconciling found nothing within the grace period


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


def _owner_busy(row: LedgerRow, now: float) -> bool:
    """Is the session that wrote this start still alive (so the start may still be in flight)?"""
    alive = is_alive(row.owner)
    return alive if alive is not None else now - row.intent_at < STALE_SECONDS


@atexit.register
def _close_all() -> None:
    for session in list(_SESSIONS):
        session.close()


class Flora:
    """A FLORA session for a notebook: start runs, track them in the background, analyse them.

    Settings: arguments, then ``FLORA_API_KEY`` / ``FLORA_BASE_URL`` / ``FLORA_WORKSPACE_ID``,
    then defaults. The ledger lives at ``$FLORA_NB_HOME/ledger.sqlite`` (``~/.flora_nb``).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        workspace: str | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        poll_interval: tuple[float, float] = (2.0, 5.0),
        *,
        rate_limit: float | None = None,
        max_retries: int = 3,
        reconcile_grace: float = 60.0,
        resume: bool = True,
        _simulator: FloraSimulator | None = None,
    ):
        self.simulator = _simulator
        self.client = FloraClient(api_key, base_url, rate_limit=rate_limit, max_retries=max_retries)
        self.endpoint = self.client.base_url
        self._workspace_arg = setting(workspace, "FLORA_WORKSPACE_ID")
        self._workspace: str | None = None
        self.ledger = Ledger(ledger_path)
        self.owner = new_owner()
        # Media cache beside the ledger (a demo's temporary ledger keeps its files with it).
        self.cache_dir = self.ledger.path.parent / "cache" if ledger_path is not None else default_home() / "cache"
        self._techniques: dict[str, Technique] = {}
        self._runs: dict[int, Run] = {}
        self._lock = threading.RLock()
        self._closed = False
        self.clock = ClockOffset(unknown_slack=CLOCK_SLACK)
        self._start_windows: dict[int, tuple[float, float]] = {}  # local id -> when its start was sent
        self._start_lock = threading.Lock()
        self.poller = Poller(self.client, self, interval=poll_interval, grace=reconcile_grace)
        self.poller.start()
        _SESSIONS.add(self)
        if resume:
            self._resume_on_open()

    @classmethod
    def simulated(cls, speed: float = 20.0, faults: Any = None, seed: int = 0, **options: Any) -> Flora:
        """A session on the built-in simulator, started in this process (``fl.simulator``)."""
        from .sim import FloraSimulator

        sim_options = {k: options.pop(k) for k in ("cost_lag", "catalog", "poll_url_style") if k in options}
        sim = FloraSimulator(speed=speed, faults=faults, seed=seed, **sim_options)
        sim.start()
        # Durations are already scaled by the simulator; poll at FLORA's 2-5 s rhythm, scaled too.
        options.setdefault("poll_interval", (max(0.02, 2.0 / speed), max(0.05, 5.0 / speed)))
        options.setdefault("reconcile_grace", max(2.0, 60.0 / speed))
        try:
            return cls(api_key=sim.api_key, base_url=sim.base_url, _simulator=sim, **options)
        except BaseException:
            sim.stop()
            raise

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the poller, close the ledger and the simulator (if this session started it)."""
        if self._closed:
            return
        self._closed = True
        retire(self.owner)
        self.poller.stop()
        self.client.close()
        self.ledger.close()
        if self.simulator is not None:
            self.simulator.stop()

    def __enter__(self) -> Flora:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "simulator" if self.simulator is not None else "live"
        return f"<Flora {kind} {self.endpoint} workspace={self._workspace or '?'} tracked={self.poller.tracked}>"

    # ---------------------------------------------------------------- catalog

    @property
    def workspace_id(self) -> str:
        """The default workspace: argument, FLORA_WORKSPACE_ID, else the only one the key sees."""
        if self._workspace is None:
            self._workspace = self._workspace_arg or self._only_workspace()
        return self._workspace

    def _only_workspace(self) -> str:
        spaces = self.client.workspaces()
        if len(spaces) == 1:
            return spaces[0].workspace_id
        names = ", ".join(f"{w.workspace_id} ({w.name})" for w in spaces) or "none"
        raise ConfigError(
            f"Your key can see {len(spaces)} workspaces: {names}. Choose one with "
            "Flora(workspace='ws_...') or the FLORA_WORKSPACE_ID environment variable."
        )

    def workspaces(self) -> pd.DataFrame:
        """The workspaces this key can see, as a DataFrame."""
        from ._frames import models_frame

        return models_frame(self.client.workspaces(), Workspace)

    def techniques(self, query: str | None = None) -> pd.DataFrame:
        """The technique catalog (all pages), as a DataFrame."""
        from ._frames import techniques_frame

        techniques = list(self.client.techniques(query=query, workspace_id=self._workspace_arg))
        for tech in techniques:
            self._remember(tech)
        return techniques_frame(techniques)

    def technique(self, id_or_slug: str) -> Technique:
        """One technique by id or slug (cached for the session)."""
        key = str(id_or_slug).strip()
        with self._lock:
            cached = self._techniques.get(key)
        if cached is None:
            cached = self.client.technique(key)
            self._remember(cached, alias=key)
        return cached

    def _remember(self, tech: Technique, alias: str | None = None) -> None:
        with self._lock:
            for name in (tech.technique_id, tech.slug, alias):
                if name:
                    self._techniques[name] = tech

    # ---------------------------------------------------------------- runs

    def run(self, technique: str, inputs: Mapping[str, Any] | None = None, workspace: str | None = None,
            labels: Mapping[str, Any] | None = None, **more_inputs: Any) -> Run:
        """Start one run and return at once; the poller keeps it fresh in the background."""
        tech = self.technique(technique)
        values = {**dict(inputs or {}), **more_inputs}
        problems = check_inputs(tech, values)
        if problems:
            raise InputError(f"{tech.name} ({tech.technique_id}): " + "; ".join(problems))
        return self._start(tech, values, workspace or self.workspace_id, dict(labels or {}))

    def _start(self, tech: Technique, inputs: dict[str, Any], workspace: str, labels: dict[str, Any]) -> Run:
        [run] = self._queue(tech, workspace, [{"inputs": inputs, "labels": labels}], status="starting")
        self._launch(run, tech)
        return run

    def _queue(self, tech: Technique, workspace: str, planned: Sequence[Mapping[str, Any]],
               status: str = "queued") -> list[Run]:
        """Write planned starts to the ledger (one transaction) and return their Run handles."""
        intents = [{
            "endpoint": self.endpoint, "workspace_id": workspace, "idempotency_key": new_idempotency_key(),
            "owner": self.owner,
            "technique_id": tech.technique_id, "technique_name": tech.name, "estimated_cost": tech.run_cost,
            "status": status, **plan,
        } for plan in planned]
        return [self._adopt(self.ledger.get(i)) for i in self.ledger.add_intents(intents)]

    def _launch(self, run: Run, tech: Technique) -> None:
        """Send one queued start; a lost answer is reconciled, a rejection is recorded and raised."""
        if run.status != "starting":
            self._update(run, status="starting")
        with self._start_lock:  # one start at a time, so each start's time window is its own
            sent_at = time.time()
            try:
                start = self.client.start_technique_run(
                    tech.technique_id, run.workspace_id, run.inputs, idempotency_key=run.idempotency_key)
            except FloraConnectionError as exc:  # the server closed the connection: done with it
                return self._lost(run, exc, (sent_at, time.time()))
            except FloraTimeout as exc:  # the server may still be working on it for a while
                return self._lost(run, exc, (sent_at, time.time() + _read_timeout(self.client)))
            except APIError as exc:
                if _maybe_started(exc):
                    return self._lost(run, exc, (sent_at, time.time()))
                self._update(run, status="failed", error_code=exc.code, error_message=exc.message, charged_cost=0.0)
                raise
            finally:
                time.sleep(START_GAP)  # server timestamps are milliseconds: keep windows apart
        changes = {"run_id": start.run_id, "status": "pending", "poll_url": start.poll_url,
                   "estimated_seconds": start.estimated_seconds, "project_id": start.project_id}
        if start.charged_cost is not None and tech.run_cost is None:
            changes["estimated_cost"] = start.charged_cost
        self._update(run, note="started", **changes)
        self._start_windows[run.local_id] = (sent_at, time.time())
        self.poller.track(run)

    def _lost(self, run: Run, exc: Exception, window: tuple[float, float] | None = None) -> None:
        """FLORA may have created this run without our hearing of it: look for it, never resend."""
        self._update(run, note=f"start answer lost: {type(exc).__name__}", error_code=LOST,
                     error_message="The start's answer was lost; flora_nb is looking for the run on FLORA "
                                   "(it never starts a run twice).")
        self.poller.reconcile(run, window)

    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: bool = False,
              workspace: str | None = None) -> Any:
        """Run every variation of ``technique``: priced and validated before anything starts.

        Returns a running ``Sweep``, or with ``dry_run=True`` the plan as a DataFrame.
        """
        from ._sweep import start_sweep

        return start_sweep(self, technique, grid=grid, zip=zip, fixed=fixed, variations=variations,
                           repeat=repeat, max_concurrency=max_concurrency, budget=budget, labels=labels,
                           reuse=reuse, dry_run=dry_run, workspace=workspace)

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
            found = self._adopt(row) if row is not None else None
        return found

    def _adopt(self, row: LedgerRow | None) -> Run:
        assert row is not None
        with self._lock:
            run = self._runs.get(row.local_id)
            if run is None:
                run = self._runs[row.local_id] = Run(self, row)
        return run

    def _update(self, run: Run, note: str | None = None, **changes: Any) -> None:
        self.ledger.update(run.local_id, note=note, **changes)
        run._apply(self.ledger.get(run.local_id))

    def _update_many(self, runs: Sequence[Run], **changes: Any) -> None:
        """The same change to many runs, in one ledger transaction."""
        if not runs:
            return
        self.ledger.update_many([(run.local_id, changes) for run in runs])
        for run in runs:
            run._apply(self.ledger.get(run.local_id))

    def _refresh(self, run: Run) -> None:
        if run.id is None:
            raise InputError("this run's start is not confirmed yet; call fl.resume() to look for it.")
        self.record([(run, self.client.get_run(run.id, run.poll_url))])

    # ---------------------------------------------------------------- poller sink

    def record(self, pairs: Sequence[tuple[Run, RunState]]) -> None:
        """Write what polls saw (one transaction), then update the Run handles."""
        from ._states import changes_for

        self._learn_clock(pairs)
        batch = [(run, changes_for(run._row, state)) for run, state in pairs]
        batch = [(run, ch) for run, ch in batch if ch]
        if not batch:
            return
        self.ledger.update_many([(run.local_id, ch) for run, ch in batch])
        for run, _ in batch:
            run._apply(self.ledger.get(run.local_id))

    def attach(self, run: Run, state: RunState) -> bool:
        """A lost start was found on the server: bind it to its ledger row and track it."""
        from ._states import changes_for

        row = self.ledger.get(run.local_id)
        if row is None or row.run_id is not None:
            return False  # another session of this ledger found it first
        changes = {"run_id": state.run_id, "poll_url": state.poll_url, "project_id": state.project_id,
                   "error_code": None, "error_message": None}
        changes.update(changes_for(row, state))
        try:
            self._update(run, note="reconciled", **changes)
        except sqlite3.IntegrityError:  # that run is bound to another row already: look again
            self.poller.reconcile(run)
            return False
        if not run.done or run.charged_cost is None:
            self.poller.track(run, first_poll_in=self.poller.interval[0])
        return True

    def give_up(self, run: Run) -> None:
        """A lost start was not found within the grace period: say so, keep it for resume()."""
        row = self.ledger.get(run.local_id)
        if row is None or row.run_id is not None:
            return
        self._update(
            run, note="unconfirmed", error_code=UNCONFIRMED,
            error_message="The start's answer was lost and no matching run was found on FLORA; "
                          "fl.resume() looks again. It was never started twice.",
        )

    def known_run_ids(self) -> set[str]:
        return self.ledger.known_run_ids(self.endpoint)

    def clock_bounds(self) -> tuple[float, float]:
        return self.clock.bounds()

    def _learn_clock(self, pairs: Sequence[tuple[Run, RunState]]) -> None:
        for run, state in pairs:
            window = self._start_windows.pop(run.local_id, None)
            if window is not None and state.created_at is not None:
                self.clock.observe(window[0], window[1], state.created_at.timestamp())

    def starts_in_flight(self, workspace: str, technique: str) -> bool:
        """Is any session (this one included) still waiting for a start's answer?"""
        now = time.time()
        for row in self.ledger.open_starts(self.endpoint, workspace, technique):
            if row.error_code is None and _owner_busy(row, now):
                return True
        return False

    def _listener_failed(self, callback: Any) -> None:
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
            if row.run_id is None and row.error_code is None and _owner_busy(row, now) and row.owner != self.owner:
                continue
            run = self._adopt(row)
            if row.run_id is None and row.error_code == LOST:
                self.poller.reconcile(run, self._send_window(row))
            elif row.run_id is None:  # in flight when its session died, or unconfirmed: look again
                self._lost(run, RuntimeError("resumed"), self._send_window(row))
            else:
                self.poller.track(run, first_poll_in=0.0)
            runs.append(run)
        for row in self.ledger.rows(self.endpoint, statuses=("completed", "failed")):
            if row.charged_cost is None and row.run_id is not None:
                run = self._adopt(row)
                self.poller.track(run, first_poll_in=0.0)
                runs.append(run)
        self._skip_orphans()
        return runs

    def _send_window(self, row: LedgerRow) -> tuple[float, float]:
        """From when the row turned ``starting`` on: a start whose session died may still have
        been on its way, or in the server's hands, when the session ended, so no end is assumed."""
        events = self.ledger.events(row.local_id)
        began = max((e["at"] for e in events if e["status"] == "starting" and e["note"] in (None, "intent")),
                    default=row.intent_at)
        return began, float("inf")

    def _skip_orphans(self) -> None:
        """Queued runs of a session that is gone will never be launched: say so."""
        orphans = [self._adopt(row) for row in self.ledger.rows(self.endpoint, statuses=("queued",))
                   if is_alive(row.owner) is False]
        self._update_many(orphans, status="skipped", error_code="interrupted",
                          error_message="The session that queued this run ended before starting it.")

    def _resume_on_open(self) -> None:
        runs = self.resume()
        if runs:
            print(f"flora_nb: resumed tracking {len(runs)} unfinished run(s) from {self.ledger.path}")

    # ---------------------------------------------------------------- frames

    def runs(self, status: str | Sequence[str] | None = None, technique: str | None = None,
             sweep_id: str | None = None, since: Any = None, all_endpoints: bool = False) -> pd.DataFrame:
        """The ledger as a DataFrame (this endpoint only unless ``all_endpoints``)."""
        from ._frames import runs_frame, select_runs

        rows = self.ledger.iter_raw(None if all_endpoints else self.endpoint)
        with self._lock:  # a slug seen in this session means its technique id
            known = self._techniques.get(technique) if technique else None
        technique = known.technique_id if known else technique
        return select_runs(runs_frame(rows), status=status, technique=technique, sweep_id=sweep_id, since=since)

    def costs(self, by: str | Sequence[str] = "technique_name", **filters: Any) -> pd.DataFrame:
        """Cost summary: runs, completed, failed, estimated and charged totals, per completed run."""
        from ._frames import cost_summary

        return cost_summary(self.runs(**filters), by)

    def spend(self, **filters: Any) -> pd.Series:
        """Cumulative charged USD over completion time (known charges only), ready for ``.plot()``."""
        from ._frames import spend_series

        return spend_series(self.runs(**filters))

    def history(self, **filters: Any) -> pd.DataFrame:
        """Run history from FLORA itself (``GET /technique-runs``, all pages) as a DataFrame."""
        from ._frames import history_frame

        filters.setdefault("workspace_id", self.workspace_id)
        return history_frame(self.client.technique_runs(**filters))

    def status(self) -> dict[str, Any]:
        """Endpoint, workspace, runs tracked, spend and poller health."""
        stats = self.poller.stats
        spent = self.ledger.total_charged(self.endpoint)
        return {
            "endpoint": self.endpoint,
            "simulator": self.simulator is not None,
            "workspace_id": self._workspace or self._workspace_arg,
            "tracked": self.poller.tracked,
            "unconfirmed_starts": self.poller.pending_intents,
            "spent_usd": round(spent, 6),
            "poller_running": stats.running,
            "poller_cycles": stats.cycles,
            "poller_errors": stats.errors,
            "poller_last_error": stats.last_error,
            "listener_errors": stats.listener_errors,
            "requests_batch": stats.batch_requests,
            "requests_single": stats.single_requests,
            "batch_fallbacks": stats.batch_fallbacks,
            "invalid_answers": self.client.invalid_answers,
            "reconciled": stats.reconciled,
            "ledger": str(self.ledger.path),
        }
