"""Flora: the notebook-facing session that owns one client, one ledger and one poller."""

from __future__ import annotations

import atexit
import difflib
import html
import logging
import os
import re
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ._budget import Exposure, is_money, reserve_ratio, summarize
from ._client import FloraClient, new_idempotency_key, setting
from ._errors import (
    APIError,
    BudgetExceededError,
    ConfigError,
    FloraConnectionError,
    FloraError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    InvalidResponseError,
    LedgerConflict,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._ledger import ACTIVE, Ledger, LedgerRow, canonical_json, default_home
from ._matching import Binding, Start
from ._models import Asset, RunStart, RunState, Technique, Workspace
from ._owner import STALE_SECONDS, is_alive, new_owner, retire
from ._poller import Poller
from ._run import Run
from ._uploads import Uploader
from ._validation import check_inputs

if TYPE_CHECKING:
    import pandas as pd

    from .sim import FloraSimulator

__all__ = ["Flora", "current_session"]

log = logging.getLogger("flora_nb.session")

_SESSIONS: weakref.WeakSet[Flora] = weakref.WeakSet()
_CURRENT: Flora | None = None  # the session the %flora magics use (flora_nb.session())
_CURRENT_LOCK = threading.Lock()
_SIM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

LOST = "start_lost"  # the answer to a start never came: reconciling
UNCONFIRMED = "start_unconfirmed"  # reconciling could not decide within the grace period (resume() looks again)
NOT_RECEIVED = "start_not_received"  # reconciling proved FLORA made no run for this start: nothing was charged
NOT_RECEIVED_MESSAGE = ("FLORA never received this start: it made no run for it and charged nothing. "
                        "sweep.resume() sends it again with its own key; a single run: call fl.run(...) again.")
LEASE_MARGIN = 1.0  # seconds a start's recorded window reaches past its current attempt's longest end
RATE_LIMIT_PATIENCE = 60.0  # seconds a single run's start keeps trying through 429s (sweeps: while running)


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


def current_session(use: Flora | None = None, factory: Any = None) -> Flora:
    """The magics' session: ``use`` when given, else the open one, else a new one (``factory()`` or env)."""
    global _CURRENT
    with _CURRENT_LOCK:
        if use is not None:
            _CURRENT = use
        elif _CURRENT is None or _CURRENT.closed:
            _CURRENT = factory() if factory is not None else Flora()
        return _CURRENT


def _persist_default() -> bool:
    return os.environ.get("FLORA_NB_SIM_PERSIST", "1").strip().lower() not in ("0", "false", "no", "off")


def _same_origin(url: str, base_url: str) -> bool:
    from ._client import _origin

    return _origin(url) == _origin(base_url)


@atexit.register
def _close_all() -> None:
    for session in list(_SESSIONS):
        session.close()


class Flora:
    """A FLORA session for a notebook: start runs, track them in the background, analyse them.

    Settings: arguments, then ``FLORA_API_KEY`` / ``FLORA_BASE_URL`` / ``FLORA_WORKSPACE_ID``,
    then defaults. The ledger lives at ``$FLORA_NB_HOME/ledger.sqlite`` (``~/.flora_nb``).
    ``budget`` (USD) is a session budget: every start of the session must fit it (see ``check_budget``).
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
        budget: float | None = None,
        _simulator: FloraSimulator | None = None,
        _endpoint: str | None = None,
    ):
        if budget is not None and not is_money(budget):
            raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no session budget.")
        self.budget = None if budget is None else float(budget)
        self.simulator = _simulator
        self.client = FloraClient(api_key, base_url, rate_limit=rate_limit, max_retries=max_retries)
        # Ledger rows are keyed by the endpoint: the base URL, or a stable name (``sim://default``)
        # for a simulator whose port changes from one kernel to the next.
        self.endpoint = _endpoint or self.client.base_url
        self._workspace_arg = setting(workspace, "FLORA_WORKSPACE_ID")
        self._workspace: str | None = None
        self.ledger = Ledger(ledger_path)
        self.owner = new_owner()
        # Media cache beside the ledger (a demo's temporary ledger keeps its files with it).
        self.cache_dir = self.ledger.path.parent / "cache" if ledger_path is not None else default_home() / "cache"
        self._techniques: dict[str, Technique] = {}
        self._runs: dict[int, Run] = {}
        self._sweeps: dict[str, Any] = {}  # sweep id -> the Sweep handle of this session
        self.rate_limited_starts = 0  # start attempts FLORA answered 429 to, after the client's own retries
        self._lock = threading.RLock()
        self._closed = False
        self.clock = self.client.clock  # the server's clock against ours (bounds; None until learnt)
        self._start_windows: dict[int, tuple[float, float]] = {}  # local id -> when its start was sent
        self._budget_lock = threading.Lock()  # budget check + "starting": one start at a time; POSTs run in parallel
        self.poller = Poller(self.client, self, interval=poll_interval, grace=reconcile_grace)
        self.poller.start()
        _SESSIONS.add(self)
        if resume:
            self._resume_on_open()

    @classmethod
    def simulated(cls, speed: float = 20.0, faults: Any = None, seed: int = 0, *, persist: bool | None = None,
                  name: str = "default", **options: Any) -> Flora:
        """A session on the built-in simulator, started in this process (``fl.simulator``).

        With ``persist`` (default: on, unless ``FLORA_NB_SIM_PERSIST=0``) the simulated account
        (runs, credits, assets) lives in ``$FLORA_NB_HOME/sim/<name>.json``, so a later kernel
        continues it; its ledger rows are kept under the endpoint ``sim://<name>``.
        """
        from .sim import FloraSimulator
        from .sim._persist import StateBusy

        persist = _persist_default() if persist is None else persist
        if not _SIM_NAME.match(name):
            raise InputError(f"simulator name must be letters, digits, - or _; got {name!r}.")
        sim_keys = ("cost_lag", "catalog", "poll_url_style", "asset_processing_seconds")
        sim_options = {k: options.pop(k) for k in sim_keys if k in options}
        state = default_home() / "sim" / f"{name}.json" if persist else None
        sim = FloraSimulator(speed=speed, faults=faults, seed=seed, state_path=state, **sim_options)
        try:
            sim.start()
        except StateBusy as exc:
            raise ConfigError(f"{exc}. Close that session, or use a throwaway account: "
                              "Flora.simulated(persist=False) or another name=...") from None
        # Durations are already scaled by the simulator; poll at FLORA's 2-5 s rhythm, scaled too.
        options.setdefault("poll_interval", (max(0.02, 2.0 / speed), max(0.05, 5.0 / speed)))
        options.setdefault("reconcile_grace", max(2.0, 60.0 / speed))
        endpoint = f"sim://{name}" if persist else None
        try:
            return cls(api_key=sim.api_key, base_url=sim.base_url, _simulator=sim, _endpoint=endpoint, **options)
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

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        kind = "simulator" if self.simulator is not None else "live"
        workspace = self._workspace or self._workspace_arg or "?"
        return f"<Flora {kind} {self.endpoint} workspace={workspace} tracked={self.poller.tracked}>"

    def _card_rows(self) -> list[tuple[str, str]]:
        """The status card's rows: the essentials of ``status()``, poller counters on one line."""
        st = self.status()
        workspace = st["workspace_id"]
        if workspace is None and not self._closed:
            try:
                workspace = self.workspace_id
            except FloraError as exc:
                workspace = f"not chosen ({exc})"
        poller = (f"{'running' if st['poller_running'] else 'stopped'}, {st['poller_cycles']} cycles, "
                  f"{st['poller_errors']} errors, requests {st['requests_batch']} batch / {st['requests_single']} "
                  f"single, {st['reconciled']} reconciled")
        rows = [("endpoint", f"{st['endpoint']}{' (simulator)' if st['simulator'] else ''}"),
                ("workspace", str(workspace)), ("health", st["health"]),
                ("runs", f"{st['tracked']} tracked, {st['unconfirmed_starts']} starts being confirmed"),
                ("spent", f"${st['spent_usd']:,.4f} charged"), ("poller", poller)]
        if st["poller_last_error"] and st["health"] != "ok":
            rows.append(("last error", st["poller_last_error"]))
        return rows + [("ledger", st["ledger"])]

    def _repr_html_(self) -> str:
        """The status card: one table of endpoint, workspace, runs, spend and poller health."""
        esc = html.escape
        rows = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>{esc(v)}</td></tr>"
                       for k, v in self._card_rows())
        return f"<table class='flora-status'>{rows}</table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self.status_text())

    def status_text(self) -> str:
        """The status card as aligned text (terminal IPython, logs)."""
        return "\n".join(f"{k:>20}: {v}" for k, v in self._card_rows())

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
            try:
                cached = self.client.technique(key)
            except NotFoundError as exc:
                raise self._not_found(key, exc) from None
            self._remember(cached, alias=key)
        return cached

    def _not_found(self, key: str, exc: NotFoundError) -> NotFoundError:
        """Say which technique was not found and which ones are close (by slug, id or name)."""
        try:
            catalog = list(self.client.techniques(workspace_id=self._workspace_arg))
        except FloraError:
            catalog = []
        names = {}
        for tech in catalog:
            shown = tech.slug or tech.technique_id
            for alias in (tech.slug, tech.technique_id, tech.name):
                if alias:
                    names.setdefault(alias.lower(), shown)
        close = dict.fromkeys(names[m] for m in difflib.get_close_matches(key.lower(), list(names), n=3, cutoff=0.6))
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        return NotFoundError(f"No technique {key!r} in the catalog{hint} See fl.techniques() for the list.",
                             status=exc.status, code=exc.code, request_id=exc.request_id)

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
        space = workspace or self.workspace_id
        [values] = self.uploads.resolve(tech, [values], space)  # local files become asset URLs
        return self._start(tech, values, space, dict(labels or {}))

    @property
    def uploads(self) -> Uploader:
        """This session's uploader (local files to assets, cached by content in the ledger)."""
        with self._lock:
            uploader = self.__dict__.get("_uploader")
            if uploader is None:
                uploader = self.__dict__["_uploader"] = Uploader(self)
        return uploader

    def upload(self, source: str | os.PathLike[str] | bytes, *, file_name: str | None = None,
               content_type: str | None = None, workspace: str | None = None) -> Asset:
        """Upload a local file (path or bytes) as a FLORA asset, once per content; returns it ready.

        Up to 4 MB goes in one multipart request, larger files (up to 50 MB) through FLORA's
        signed-URL flow. A type or size FLORA refuses raises InputError before any request.
        """
        return self.uploads.upload(source, file_name=file_name, content_type=content_type, workspace=workspace)

    def _start(self, tech: Technique, inputs: dict[str, Any], workspace: str, labels: dict[str, Any]) -> Run:
        self.check_budget(tech.technique_id, tech.run_cost, tech.name)  # refused: not even a ledger row
        [run] = self._queue(tech, workspace, [{"inputs": inputs, "labels": labels}], status="starting")
        try:
            self._launch(run, tech)
        except BudgetExceededError as exc:  # another thread's start took the room meanwhile
            self._update(run, status="skipped", error_code="budget", error_message=str(exc), charged_cost=0.0)
            raise
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

    def _launch(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None = None,
                since: float | None = None) -> None:
        """Send one queued start; a lost answer is reconciled, a rejection is recorded and raised.

        The session budget is checked first (``BudgetExceededError``, nothing sent, row untouched).
        A 429 is "not now": the same start is tried again with the same key while ``keep_trying()``
        says so (a sweep: until it is stopped), or for ``RATE_LIMIT_PATIENCE`` seconds; a start that
        never got past 429 is ``skipped`` (``rate_limited``), never ``failed``. ``since``: the start
        was sent before (a resent unconfirmed start), so a run it made may date from then.
        """
        self._begin_start(run, tech, since)
        self._send_start(run, tech, keep_trying, resent=since is not None)

    def _begin_start(self, run: Run, tech: Technique, since: float | None = None) -> None:
        """Check the budget and mark the row ``starting`` with the start of its send window (nothing sent)."""
        with self._budget_lock:  # two starts never both take the budget's last room
            self.check_budget(tech.technique_id, run.estimated_cost, tech.name, exclude=run.local_id)
            now = time.time()
            # window_high is a lease while we live: the server cannot act on this start after it
            # unless we extend it first (each attempt does); if we die, it is the window's end.
            self._update(run, status="starting", window_low=now if since is None else since,
                         window_high=now + self.client.attempt_seconds + LEASE_MARGIN)

    def _send_start(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None = None,
                    resent: bool = False) -> None:
        """POST a start marked ``starting`` (no lock held: starts go out in parallel) and record the answer.
        ``resent``: its key was sent before (an earlier attempt may have made a run)."""
        sent = self._post(run, tech, keep_trying, resent)
        if sent is None:
            return
        start, sent_at = sent
        changes = {"run_id": start.run_id, "status": "pending", "poll_url": start.poll_url,
                   "estimated_seconds": start.estimated_seconds, "project_id": start.project_id}
        if is_money(start.charged_cost) and tech.run_cost is None:
            changes["estimated_cost"] = start.charged_cost
        self._update(run, note="started", **changes)
        self._start_windows[run.local_id] = (sent_at, time.time())
        self.poller.track(run)

    def _extend_window(self, run: Run, at: float) -> None:
        """An attempt goes out at ``at``: make sure the row's window covers what FLORA may do with it."""
        needed = at + self.client.attempt_seconds
        if run.window_high is None or run.window_high < needed:
            self._update(run, window_high=needed + LEASE_MARGIN)

    def _post(self, run: Run, tech: Technique, keep_trying: Callable[[], bool] | None,
              resent: bool = False) -> tuple[RunStart, float] | None:
        """POST the start: its answer and when the answered attempt went out; None when the answer
        was lost (then it is being reconciled). Ctrl-C during it leaves a lost start, then goes on."""
        first = run.window_low if run.window_low is not None else time.time()
        patience = time.monotonic() + RATE_LIMIT_PATIENCE
        while True:
            sent_at = time.time()
            try:
                return self.client.start_technique_run(
                    tech.technique_id, run.workspace_id, run.inputs, idempotency_key=run.idempotency_key,
                    on_attempt=lambda at: self._extend_window(run, at)), sent_at
            except FloraConnectionError as exc:  # the server closed the connection: done with it
                self._lost(run, exc, (first, time.time()))
            except FloraTimeout as exc:  # the server may still be working on it for a while
                self._lost(run, exc, (first, time.time() + _read_timeout(self.client)))
            except RateLimitError as exc:
                if _maybe_started(exc):
                    self._lost(run, exc, (first, time.time()))
                elif keep_trying() if keep_trying is not None else time.monotonic() < patience:
                    self._hold_off(exc)  # the window keeps its start: a 5xx the client retried may have made the run
                    continue
                else:
                    self._update(run, status="skipped", error_code=exc.code, charged_cost=0.0,
                                 error_message="FLORA kept answering 429 (rate limited); this run was not started.")
                    raise
            except APIError as exc:
                if _maybe_started(exc):
                    self._lost(run, exc, (first, time.time()))
                else:
                    self._update(run, status="failed", error_code=exc.code, error_message=exc.message,
                                 charged_cost=0.0)
                    raise
            except BaseException as exc:  # Ctrl-C (or a bug) mid-POST: FLORA may still act on what was sent
                if not self._closed:
                    self._lost(run, exc, (first, time.time() + self.client.attempt_seconds))
                raise
            return None

    def _hold_off(self, exc: RateLimitError) -> None:
        """A 429 after the client's own retries: hold every request of this client as FLORA asked."""
        self.rate_limited_starts += 1
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        self.client.throttle.pause(min(max(wait, 0.05), self.client.max_retry_wait))

    # ---------------------------------------------------------------- budget

    def reserve_ratio(self, technique_id: str) -> float:
        """What a run's estimate is multiplied by while its charge is unknown (see the budget rule);
        a slug this session has looked up is accepted too."""
        with self._lock:
            known = self._techniques.get(technique_id)
        technique_id = known.technique_id if known is not None else technique_id
        return reserve_ratio(*self.ledger.charge_ratios(self.endpoint, technique_id))

    def reserve(self, technique_id: str, estimate: float | None) -> float:
        """The USD a run of this technique holds against a budget until its charge is known."""
        return (estimate or 0.0) * self.reserve_ratio(technique_id)

    def exposure(self, *, sweep_id: str | None = None, owner: str | None = None,
                 exclude: int | None = None) -> Exposure:
        """Charges known plus reserves of launched runs (a sweep's, or one session's)."""
        groups = self.ledger.exposure(self.endpoint, sweep_id=sweep_id, owner=owner, exclude=exclude)
        return summarize(groups, self.reserve_ratio)

    def check_budget(self, technique_id: str, estimate: float | None, name: str = "",
                     exclude: int | None = None) -> None:
        """Raise BudgetExceededError unless a run of this price fits the session budget now."""
        if self.budget is None:
            return
        if estimate is None:
            raise InputError(f"{name or technique_id} has no known price (run_cost), so the session budget of "
                             f"${self.budget:.2f} cannot be enforced for it; run it from a session without a budget "
                             "(Flora(budget=None)).")
        spent = self.exposure(owner=self.owner, exclude=exclude)
        reserve = self.reserve(technique_id, estimate)
        if not spent.fits(reserve, self.budget):
            raise BudgetExceededError(
                f"The session budget of ${self.budget:.2f} has ${max(0.0, self.budget - spent.committed):.2f} left "
                f"(${spent.charged:.2f} charged, ${spent.reserved:.2f} held for {spent.pending} run(s) whose charge "
                f"is not known yet); this run holds ${reserve:.2f} until charged. Nothing was sent.",
                estimate=reserve, budget=self.budget)

    def _lost(self, run: Run, exc: BaseException, window: tuple[float, float]) -> None:
        """FLORA may have created this run without our hearing of it: record the start's finite send
        window (a resumed start keeps it) and look for the run; never resend."""
        self._update(run, note=f"start answer lost: {type(exc).__name__}", error_code=LOST,
                     window_low=window[0], window_high=window[1],
                     error_message="The start's answer was lost; flora_nb is looking for the run on FLORA "
                                   "(it never starts a run twice).")
        self.poller.reconcile(run)

    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: bool = False,
              workspace: str | None = None) -> Any:
        """Run every variation of ``technique``: priced and validated before anything starts.

        Returns a running ``Sweep``, or with ``dry_run=True`` the plan as a DataFrame.
        """
        from ._sweep_store import start_sweep

        return start_sweep(self, technique, grid=grid, zip=zip, fixed=fixed, variations=variations,
                           repeat=repeat, max_concurrency=max_concurrency, budget=budget, labels=labels,
                           reuse=reuse, dry_run=dry_run, workspace=workspace)

    def sweeps(self) -> pd.DataFrame:
        """The sweeps in the ledger for this endpoint: id, technique, created, counts, spent, budget."""
        from ._frames import sweeps_frame

        return sweeps_frame(self.ledger.sweep_summaries(self.endpoint))

    def get_sweep(self, sweep_id: str) -> Any:
        """A sweep of this endpoint by id: this session's handle, or one rebuilt from the ledger."""
        from ._sweep_store import load_sweep

        return load_sweep(self, str(sweep_id).strip())

    def form(self, technique: str, **options: Any) -> Any:
        """An ipywidgets form (``flora_nb.Form``) that starts runs and sweeps of ``technique``."""
        from ._form import Form

        return Form(self, technique, **options)

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
        rows = self.ledger.write_back([(run._row, ch) for run, ch in batch])  # rows as written: no read per run
        for run, _ in batch:
            if run.local_id in rows:
                run._apply(rows[run.local_id])

    def unresolved_starts(self, workspace: str, technique: str) -> list[Start]:
        """Every start of this endpoint's ledger (any session, any process) not yet bound to a run."""
        now = time.time()
        return [self._as_start(row, now) for row in self.ledger.open_starts(self.endpoint, workspace, technique)]

    def _as_start(self, row: LedgerRow, now: float) -> Start:
        low = row.window_low if row.window_low is not None else self._began(row)
        if row.error_code is None and _owner_busy(row, now):
            high = float("inf")  # its session lives and may still be sending it
        elif row.window_high is not None:
            high = row.window_high  # recorded when it was lost, or its last lease if its session died
        else:
            high = low + self._send_budget()  # a row from before windows were kept
        return Start(row.local_id, low, high, canonical_json(row.inputs))

    def _send_budget(self) -> float:
        """The longest one start can keep sending: every attempt, the waits between them, and FLORA's time."""
        client = self.client
        return (client.max_retries + 1) * client.attempt_seconds + client.max_retries * (8.0 + client.max_retry_wait)

    def resolve(self, bindings: Sequence[Binding], states: Mapping[str, RunState]) -> set[int]:
        """Write what the binding rule decided, in one transaction; returns the local ids written."""
        from ._states import changes_for

        items = []
        for binding in bindings:
            row = self.ledger.get(binding.local_id)
            if row is None or row.run_id is not None or row.status != "starting":
                continue  # another session of this ledger resolved it first
            items.append((binding.local_id, {"run_id": None, "status": "starting"},
                          _resolution(row, binding, states.get(binding.run_id or ""), changes_for)))
        try:
            taken = set(self.ledger.claim(items, note="reconciled"))
        except LedgerConflict:  # one of those runs was bound meanwhile: the next look decides again
            return set()
        for local_id in sorted(taken):
            self.settled(self._adopt(self.ledger.get(local_id)))
        return taken

    def settled(self, run: Run) -> None:
        """A lost start was resolved (here or in another session): refresh it, and track its run."""
        row = self.ledger.get(run.local_id)
        if row is None:
            return
        run._apply(row)
        if row.run_id is not None and (not run.done or run.charged_cost is None):
            self.poller.track(run, first_poll_in=self.poller.interval[0])

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

    def clock_bounds(self) -> tuple[float, float] | None:
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
            if row.run_id is None and row.error_code is None and _owner_busy(row, now):
                continue  # in flight in a live session (this one included): its answer is on its way
            run = self._adopt(row)
            if row.run_id is None:  # lost, unconfirmed, or in flight when its session died: look (again)
                start = self._as_start(row, now)  # not in flight anywhere: its window is finite
                self._lost(run, RuntimeError("resumed"), (start.low, start.high))
            else:
                self._forget_foreign_poll_urls(row)
                run._apply(self.ledger.get(row.local_id))
                self.poller.track(run, first_poll_in=0.0)
            runs.append(run)
        for row in self.ledger.rows(self.endpoint, statuses=("completed", "failed")):
            if row.charged_cost is None and row.run_id is not None:
                self._forget_foreign_poll_urls(row)
                run = self._adopt(self.ledger.get(row.local_id))
                self.poller.track(run, first_poll_in=0.0)
                runs.append(run)
        self._skip_orphans()
        return runs

    def _began(self, row: LedgerRow) -> float:
        """When a row without a recorded window turned ``starting`` (its first POST cannot be earlier)."""
        events = self.ledger.events(row.local_id)
        return max((e["at"] for e in events if e["status"] == "starting" and e["note"] in (None, "intent")),
                   default=row.intent_at)

    def start_window_low(self, run: Run) -> float:
        """The earliest moment this start's POST may have gone out (a resend keeps it)."""
        row = self.ledger.get(run.local_id) or run._row
        return row.window_low if row.window_low is not None else self._began(row)

    def _skip_orphans(self) -> None:
        """Queued runs of a session that is gone will never be launched: say so."""
        orphans = [self._adopt(row) for row in self.ledger.rows(self.endpoint, statuses=("queued",))
                   if is_alive(row.owner) is False]
        self._update_many(orphans, status="skipped", error_code="interrupted", charged_cost=0.0,
                          error_message="The session that queued this run ended before starting it; "
                                        "fl.get_sweep(sweep_id).resume() starts it.")

    def _forget_foreign_poll_urls(self, row: LedgerRow) -> None:
        """A poll URL from another port of the same named endpoint (a restarted simulator) is stale."""
        if row.poll_url and not _same_origin(row.poll_url, self.client.base_url):
            self.ledger.update(row.local_id, note="poll_url of an earlier server dropped", poll_url=None)

    def _resume_on_open(self) -> None:
        runs = self.resume()
        if runs:
            from ._display import say

            say(f"flora_nb: resumed tracking {len(runs)} unfinished run(s) from {self.ledger.path}")

    # ---------------------------------------------------------------- frames

    def runs(self, status: str | Sequence[str] | None = None, technique: str | None = None,
             sweep_id: str | None = None, since: Any = None, all_endpoints: bool = False) -> pd.DataFrame:
        """The ledger as a DataFrame (this endpoint only unless ``all_endpoints``)."""
        from ._frames import FRAME_COLUMNS, runs_frame, select_runs

        rows = self.ledger.iter_raw(None if all_endpoints else self.endpoint, FRAME_COLUMNS)
        with self._lock:  # a slug seen in this session means its technique id
            known = self._techniques.get(technique) if technique else None
        technique = known.technique_id if known else technique
        return select_runs(runs_frame(rows, FRAME_COLUMNS), status=status, technique=technique, sweep_id=sweep_id, since=since)

    def costs(self, by: str | Sequence[str] = "technique_name", detail: bool = False, **filters: Any) -> pd.DataFrame:
        """Cost summary per group with a ``total`` row; ``detail=True`` gives every column (no total)."""
        from ._frames import cost_summary, cost_table

        frame = self.runs(**filters)
        return cost_summary(frame, by) if detail else cost_table(frame, by)

    def plot_spend(self, ax: Any = None, **filters: Any) -> Any:
        """Cumulative charged USD over time as a step line (needs ``pip install 'flora_nb[plot]'``)."""
        from ._plots import plot_spend

        return plot_spend(self.spend(**filters), ax=ax)

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
            "health": self.health,
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

    @property
    def health(self) -> str:
        """``ok``, or what keeps the poller from FLORA (e.g. "FLORA unreachable, retrying")."""
        return "session closed" if self._closed else self.poller.stats.health

    def health_changed(self, health: str) -> None:
        """Poller sink: the health changed; tell the live displays of tracked runs (they read ``health``)."""
        for run in self.tracked_runs():
            row = self.ledger.get(run.local_id)
            if row is not None:
                run._apply(row)


def _pairing(binding: Binding) -> str:
    """What a lost start's row says about how it was bound."""
    if binding.exact:
        return "exact"
    ids = ",".join(str(i) for i in binding.group)
    if binding.same_inputs:
        return f"unknown among local ids {ids} (same inputs: which run id went with which start is unknown)"
    return f"unknown among local ids {ids} (inputs differ: this row's run may carry another row's inputs)"


def _resolution(row: LedgerRow, binding: Binding, state: RunState | None, changes_for: Any) -> dict[str, Any]:
    """The ledger changes that bind ``row`` to its run, or say FLORA never received it."""
    if binding.run_id is None or state is None:
        return {"status": "skipped", "error_code": NOT_RECEIVED, "error_message": NOT_RECEIVED_MESSAGE,
                "charged_cost": 0.0, "pairing": _pairing(binding)}
    changes = {"run_id": state.run_id, "poll_url": state.poll_url, "project_id": state.project_id,
               "error_code": None, "error_message": None, "pairing": _pairing(binding)}
    changes.update(changes_for(row, state))
    return changes
