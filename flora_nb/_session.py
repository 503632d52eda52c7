"""Flora: the notebook-facing facade over one client, one ledger and one run engine (with its poller)."""

from __future__ import annotations

import atexit
import getpass
import logging
import os
import re
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, overload

from ._budget import Exposure, is_money
from ._client import FloraClient, setting
from ._clock import ClockOffset, LocalClock, boot_id
from ._engine import RunEngine
from ._errors import ConfigError, FloraError, InputError
from ._lease import Lease
from ._ledger import Ledger, default_home
from ._look import SEVERAL_WORKSPACES, StatusCard, card_html, card_text, connected_to, in_progress, say
from ._models import Asset, Technique, Workspace
from ._owner import new_owner, retire
from ._ranges import poll_interval_problem, problem
from ._run import Run
from ._starts import Starter
from ._sweep import Sweep
from ._uploads import Uploader
from ._validation import check_text

if TYPE_CHECKING:
    import pandas as pd

    from ._form import Form
    from ._sweep_plan import SweepPlan
    from .sim import FloraSimulator
    from .sim._shared import SharedSimulator

__all__ = ["Flora", "current_session", "open_session"]

log = logging.getLogger("flora_nb.session")

_SESSIONS: weakref.WeakSet[Flora] = weakref.WeakSet()
_CURRENT: Flora | None = None  # the session the %flora magics use (flora_nb.session())
_CURRENT_LOCK = threading.Lock()
_SIM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def current_session(use: Flora | None = None, factory: Any = None) -> Flora:
    """The magics' session: ``use`` when given, else the open one, else a new one (``factory()`` or env)."""
    global _CURRENT
    with _CURRENT_LOCK:
        if use is not None:
            _CURRENT = use
        elif _CURRENT is None or _CURRENT.closed:
            _CURRENT = factory() if factory is not None else Flora()
        return _CURRENT


def open_session() -> Flora | None:
    """The magics' session if one is open, else None (never makes one)."""
    with _CURRENT_LOCK:
        current = _CURRENT
    return current if current is not None and not current.closed else None


_FROM_ENV: Any = object()  # confirm_above not given: FLORA_NB_CONFIRM_ABOVE, else 10
DEFAULT_CONFIRM_ABOVE = 10.0


def _confirm_above(value: Any) -> float | None:
    """The confirm_above setting: argument, then FLORA_NB_CONFIRM_ABOVE ("none" never asks), then $10."""
    where = "confirm_above"
    if value is _FROM_ENV:
        text = os.environ.get("FLORA_NB_CONFIRM_ABOVE", "").strip()
        if not text:
            return DEFAULT_CONFIRM_ABOVE
        if text.lower() in ("none", "off", "never"):
            return None
        where = "FLORA_NB_CONFIRM_ABOVE"
        try:
            value = float(text)
        except ValueError:
            value = text
    if value is None:
        return None
    if not is_money(value):
        raise InputError(f"{where} must be a number of USD >= 0 (or none: never ask), got {value!r}.")
    return float(value)


def _check_options(**values: Any) -> None:
    """Every numeric option finite and in its range, else one InputError naming each range."""
    problems = [poll_interval_problem(v) if k == "poll_interval" else problem(k, v)
                for k, v in values.items() if v is not None]
    found = [p for p in problems if p]
    if found:
        raise InputError("; ".join(found) + ". Nothing was started.")


def _check_users(user: str | Sequence[str], frame: pd.DataFrame) -> None:
    """A user filter naming nobody who started a run here is an error naming who did (never an empty table)."""
    asked = [user] if isinstance(user, str) else list(user)
    known = sorted(str(u) for u in frame["user"].dropna().unique())
    unknown = [str(u) for u in asked if u not in known]
    if unknown:
        raise InputError(f"no runs started by {', '.join(unknown)} in this ledger; users with runs: "
                         f"{', '.join(known) or 'none yet'}.")


def _ledger_target(ledger: str | os.PathLike[str] | None,
                   ledger_path: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """Where the session's ledger lives: ``ledger=``, else ``ledger_path=``, else ``FLORA_NB_LEDGER``,
    else the default file; a path, ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB``."""
    if ledger is not None and ledger_path is not None:
        raise InputError("give the ledger once: ledger=... (a path or postgresql://...) or ledger_path=..., not both.")
    return ledger if ledger is not None else ledger_path if ledger_path is not None else setting(None, "FLORA_NB_LEDGER")


def _user(user: str | None) -> str:
    """Who starts runs and rates them: ``user=``, else ``FLORA_NB_USER``, else the operating system's user."""
    chosen = setting(user, "FLORA_NB_USER")
    if chosen is None:
        try:
            chosen = getpass.getuser()
        except Exception:  # no user name in the environment nor the password database (a bare container)
            chosen = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    check_text("the user", chosen)
    return chosen


def _persist_default() -> bool:
    return os.environ.get("FLORA_NB_SIM_PERSIST", "1").strip().lower() not in ("0", "false", "no", "off")


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
        confirm_above: float | object | None = _FROM_ENV,
        ledger: str | os.PathLike[str] | None = None,
        user: str | None = None,
        _simulator: FloraSimulator | SharedSimulator | None = None,
        _endpoint: str | None = None,
    ):
        if budget is not None and not is_money(budget):
            raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no session budget.")
        _check_options(poll_interval=poll_interval, rate_limit=rate_limit, max_retries=max_retries,
                       reconcile_grace=reconcile_grace)
        self.simulator = _simulator
        self.client = FloraClient(api_key, base_url, rate_limit=rate_limit, max_retries=max_retries)
        # Ledger rows are keyed by the endpoint: the base URL, or a stable name (``sim://default``)
        # for a simulator whose port changes from one kernel to the next.
        self.endpoint = _endpoint or self.client.base_url
        self.user = _user(user)
        self.ledger = Ledger(_ledger_target(ledger, ledger_path))
        self._share_clock(self.client.clock)
        self.owner = new_owner()
        # Several hosts share a team ledger: a lease, renewed while this session lives, says it lives.
        try:
            self._lease = Lease(self.ledger, self.owner, self.user) if self.ledger.shared else None
        except BaseException:  # the first renewal failed: leave no connection open
            self.ledger.close()
            raise
        # Media cache beside the ledger (a demo's temporary ledger keeps its files with it).
        path = self.ledger.path
        cache_dir = path.parent / "cache" if path is not None and (ledger or ledger_path) else default_home() / "cache"
        self.engine = RunEngine(self.client, self.ledger, self.endpoint, self.owner, user=self.user,
                                budget=None if budget is None else float(budget), cache_dir=cache_dir,
                                poll_interval=poll_interval, reconcile_grace=reconcile_grace,
                                workspace=setting(workspace, "FLORA_WORKSPACE_ID"))
        # runs, sweeps and uploads (the form uses it too), asking first above confirm_above
        self.starter = Starter(self.engine, _confirm_above(confirm_above))
        self.poller = self.engine.poller
        self.clock = self.engine.clock  # the server's clock against ours (bounds; None until learnt)
        _SESSIONS.add(self)
        if resume:
            self._resume_on_open()

    def _share_clock(self, clock: ClockOffset) -> None:
        """Measure send windows on the anchor every session of this ledger on this boot uses (before any request)."""
        boot = boot_id()
        if boot is not None:
            clock.local = LocalClock(self.ledger.clock_anchor(boot, clock.local.anchor))

    @property
    def budget(self) -> float | None:
        """The session budget in USD (None: no session budget)."""
        return self.engine.budget

    @budget.setter
    def budget(self, budget: float | None) -> None:
        if budget is not None and not is_money(budget):
            raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no session budget.")
        self.engine.budget = None if budget is None else float(budget)

    @property
    def confirm_above(self) -> float | None:
        """USD: a run, sweep or form click that may cost more asks first (ConfirmationRequired); None never asks."""
        return self.starter.confirm_above

    @confirm_above.setter
    def confirm_above(self, usd: float | None) -> None:
        self.starter.confirm_above = _confirm_above(usd)

    @property
    def cache_dir(self) -> Path:
        """Where fetched run outputs are cached."""
        return self.engine.cache_dir

    @cache_dir.setter
    def cache_dir(self, path: str | os.PathLike[str]) -> None:
        self.engine.cache_dir = Path(path)

    def check_budget(self, technique: str, estimate: float | None, name: str = "") -> None:
        """Raise BudgetExceededError unless a run of this price fits the session budget now."""
        self.engine.check_budget(technique, estimate, name)

    def reserve(self, technique: str, estimate: float | None) -> float:
        """The USD a run of this technique holds against a budget until its charge is known."""
        return self.engine.reserve(technique, estimate)

    @property
    def rate_limited_starts(self) -> int:
        """Start attempts FLORA answered 429 to, after the client's own retries."""
        return self.engine.rate_limited_starts

    @classmethod
    def simulated(cls, speed: float = 20.0, faults: Any = None, seed: int = 0, *, persist: bool | None = None,
                  name: str = "default", **options: Any) -> Flora:
        """A session on the built-in simulator (``fl.simulator``).

        With ``persist`` (default: on, unless ``FLORA_NB_SIM_PERSIST=0``) the simulated account
        (runs, credits, assets) lives in ``$FLORA_NB_HOME/sim/<name>.json``, so a later kernel
        continues it; its ledger rows are kept under the endpoint ``sim://<name>``. The first process
        to open the account serves it; any other process (kernel) opening it meanwhile uses that
        simulator (``fl.simulator.shared``; its options win, ``fl.simulator.not_applied`` says which of
        yours differ) and takes it over, on the same port, when the serving process ends.
        """
        from .sim import FloraSimulator
        from .sim._persist import StateBusy
        from .sim._shared import SharedSimulator, open_account

        _check_options(speed=speed, seed=seed)
        persist = _persist_default() if persist is None else persist
        if not _SIM_NAME.match(name):
            raise InputError(f"simulator name must be letters, digits, - or _; got {name!r}.")
        sim_keys = ("cost_lag", "catalog", "poll_url_style", "asset_processing_seconds")
        sim_options = {k: options.pop(k) for k in sim_keys if k in options}
        state = default_home() / "sim" / f"{name}.json" if persist else None
        sim = FloraSimulator(speed=speed, faults=faults, seed=seed, state_path=state, **sim_options)
        asked = {"speed": speed, "faults": faults, "seed": seed, **sim_options}
        try:
            served = sim.start() if state is None else open_account(sim, asked)
        except StateBusy as exc:
            raise ConfigError(f"{exc}. Close that session, or use a throwaway account: "
                              "Flora.simulated(persist=False) or another name=...") from None
        # Durations are already scaled by the simulator; poll at FLORA's 2-5 s rhythm, scaled too.
        speed = served.speed  # the running simulator's, when another process serves the account
        options.setdefault("poll_interval", (max(0.02, 2.0 / speed), max(0.05, 5.0 / speed)))
        options.setdefault("reconcile_grace", max(2.0, 60.0 / speed))
        endpoint = f"sim://{name}" if persist else None
        try:
            session = cls(api_key=served.api_key, base_url=served.base_url, _simulator=served,
                          _endpoint=endpoint, **options)
        except BaseException:
            served.stop()
            raise
        session.poller.on_simulator = True  # a run a restarted simulator lost ends failed, not pending forever
        if isinstance(served, SharedSimulator):
            served.on_moved = session.client.move_to  # its server had to move to another port: follow it
        return session

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the poller, close the ledger and the simulator (if this session started it).

        A simulated account other processes share goes on: one of them serves it from then on.
        """
        if self.engine.closed:
            return
        self.engine.close()
        retire(self.owner)
        if self._lease is not None:
            self._lease.stop()
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
        return self.engine.closed

    def __repr__(self) -> str:
        workspace = self.engine.catalog.known_workspace  # never a request from a repr: shown once known
        parts = [f"Flora on {connected_to(self.endpoint, self._simulated, short=True)}",
                 *([f"workspace {workspace}"] if workspace else []),
                 "closed" if self.closed else f"runs {in_progress(self.poller.tracked)}"]
        return "<" + " · ".join(parts) + ">"

    @property
    def _simulated(self) -> bool:
        """Runs go to the built-in simulator (started here, or a named simulated account)."""
        return self.simulator is not None or self.endpoint.startswith("sim://")

    def _card_rows(self) -> list[tuple[str, str]]:
        """The status card's rows: ``status()`` in plain words (the workspace looked up if not known yet)."""
        return self.status().rows()

    def _card_facts(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """What only the card shows, looked up when it is shown: the workspace if not known yet (asks
        FLORA at most once) and a simulated account's credit left."""
        facts: dict[str, Any] = {}
        if not known.get("workspace_id"):
            try:
                facts["workspace_id"] = self.workspace_id
            except ConfigError:
                facts["workspace_problem"] = SEVERAL_WORKSPACES
            except FloraError as exc:
                facts["workspace_problem"] = str(exc)
        if self.simulator is not None:
            try:
                stats = self.simulator.stats()
            except Exception as exc:  # a simulator that stopped, or a shared one that cannot be asked now
                log.debug("flora_nb: the card shows no simulated balance: %s", exc)
            else:
                facts["credits_remaining"] = stats.get("credits_remaining")
        return facts

    def _repr_html_(self) -> str:
        """The status card: where runs go, workspace, balance, runs, spend, background updates, ledger."""
        return card_html(self._card_rows(), "flora-status")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self.status_text())

    def status_text(self) -> str:
        """The status card as aligned text (terminal IPython, logs)."""
        return card_text(self._card_rows())

    # ---------------------------------------------------------------- catalog

    @property
    def workspace_id(self) -> str:
        """The default workspace: argument, FLORA_WORKSPACE_ID, else the only one the key sees."""
        return self.engine.catalog.workspace_id

    def workspaces(self) -> pd.DataFrame:
        """The workspaces this key can see, as a DataFrame."""
        from ._frames import models_frame

        return models_frame(self.engine.catalog.workspaces(), Workspace)

    def techniques(self, query: str | None = None) -> pd.DataFrame:
        """The technique catalog (all pages), as a DataFrame."""
        from ._frames import techniques_frame

        return techniques_frame(self.engine.catalog.techniques(query))

    def technique(self, id_or_slug: str) -> Technique:
        """One technique by id or slug (cached for the session)."""
        return self.engine.catalog.technique(id_or_slug)

    # ---------------------------------------------------------------- runs

    def run(self, technique: str, inputs: Mapping[str, Any] | None = None, workspace: str | None = None,
            labels: Mapping[str, Any] | None = None, confirm: bool = False, **more_inputs: Any) -> Run:
        """Start one run and return at once; the poller keeps it fresh in the background.

        A run whose price is above ``confirm_above`` raises ConfirmationRequired unless ``confirm=True``.
        """
        return self.starter.run(technique, inputs, workspace, labels, confirm=confirm, **more_inputs)

    @property
    def uploads(self) -> Uploader:
        """This session's uploader (local files to assets, cached by content in the ledger)."""
        return self.starter.uploads

    def upload(self, source: str | os.PathLike[str] | bytes, *, file_name: str | None = None,
               content_type: str | None = None, workspace: str | None = None) -> Asset:
        """Upload a local file (path or bytes) as a FLORA asset, once per content; returns it ready.

        Up to 4 MB goes in one multipart request, larger files (up to 50 MB) through FLORA's
        signed-URL flow. A type or size FLORA refuses raises InputError before any request.
        """
        return self.starter.upload(source, file_name=file_name, content_type=content_type, workspace=workspace)

    @overload
    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: Literal[False] = False,
              workspace: str | None = None, confirm: bool = False) -> Sweep: ...

    @overload
    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, *, dry_run: Literal[True],
              workspace: str | None = None, confirm: bool = False) -> pd.DataFrame | SweepPlan: ...

    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: bool = False,
              workspace: str | None = None, confirm: bool = False) -> Sweep | pd.DataFrame | SweepPlan:
        """Run every variation of ``technique``: priced and validated before anything starts.

        Returns a running ``Sweep``, or with ``dry_run=True`` the plan: a DataFrame up to 100,000 runs,
        past that a ``SweepPlan`` (each planned run built when read: ``len``, ``plan[i]``, ``head(n)``,
        ``to_dataframe(start, stop)``, ``plan["reusable"]``). A sweep is counted from its grid first:
        more than 1,000,000 runs is an InputError. A sweep whose worst-case price is above
        ``confirm_above`` raises ConfirmationRequired unless ``confirm=True``.
        """
        return self.starter.sweep(technique, grid=grid, zip=zip, fixed=fixed, variations=variations,
                                  repeat=repeat, max_concurrency=max_concurrency, budget=budget, labels=labels,
                                  reuse=reuse, dry_run=dry_run, workspace=workspace, confirm=confirm)

    def sweeps(self) -> pd.DataFrame:
        """The sweeps in the ledger for this endpoint: id, technique, created, counts, spent, budget."""
        from ._frames import sweeps_frame

        return sweeps_frame(self.ledger.sweep_summaries(self.endpoint))

    def get_sweep(self, sweep_id: str) -> Sweep:
        """A sweep of this endpoint by id: this session's handle, or one rebuilt from the ledger."""
        return self.starter.get_sweep(sweep_id)

    def form(self, technique: str, **options: Any) -> Form:
        """An ipywidgets form (``flora_nb.Form``) that starts runs and sweeps of ``technique``."""
        from ._form import Form  # ipywidgets only when a form is made

        return Form(self.starter, technique, **options)

    def resume(self) -> list[Run]:
        """Re-attach every unfinished run of this endpoint and look again for lost starts.

        Starts another live session is still sending are left to it; sweeps queued by a
        session that has died are marked ``skipped`` (``interrupted``).
        """
        return self.engine.resume()

    def tracked_runs(self) -> list[Run]:
        """Runs of this session that are not done yet."""
        return self.engine.tracked_runs()

    def find_run(self, run_id: str) -> Run | None:
        """A run of this endpoint by FLORA run id (from this session or the ledger)."""
        return self.engine.find_run(run_id)

    def exposure(self, *, sweep_id: str | None = None, owner: str | None = None,
                 exclude: int | None = None) -> Exposure:
        """Charges known plus reserves of launched runs (a sweep's, or one session's)."""
        return self.engine.exposure(sweep_id=sweep_id, owner=owner, exclude=exclude)

    def set_spend_limit(self, usd: float | None, period: str | None = None, technique: str | None = None) -> None:
        """Cap spending in the ledger, for every session and process that uses it (None removes the limit).

        ``period``: None (everything ever started), ``"day"`` or ``"month"`` (UTC); ``technique``: one
        technique (id or slug) or None for all. A start is checked and its worst-case price held in one
        ledger transaction, so kernels racing each other never exceed a limit together.
        """
        self.engine.set_spend_limit(usd, period, technique)

    def spend_limits(self) -> pd.DataFrame:
        """Every spend limit of this endpoint: technique, period, limit, spent, held, left (USD), pending runs."""
        from ._frames import limits_frame

        return limits_frame(self.engine.spend_limits())

    def reserve_ratio(self, technique: str) -> float:
        """What a run's estimate of ``technique`` (id or slug) is held at against a budget until charged."""
        return self.engine.reserve_ratio(technique)

    def _resume_on_open(self) -> None:
        runs = self.resume()
        if runs:
            say(f"flora_nb: resumed tracking {len(runs)} unfinished run(s) from {self.ledger.location}")

    # ---------------------------------------------------------------- frames

    def runs(self, status: str | Sequence[str] | None = None, technique: str | None = None,
             sweep_id: str | None = None, since: Any = None, all_endpoints: bool = False,
             user: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The ledger as a DataFrame (this endpoint only unless ``all_endpoints``); ``user``: runs started by
        that user (or users) only.

        A technique, sweep or user the filter names that neither the ledger nor FLORA knows is an error naming
        what to use instead, never an empty table (a known technique with no runs yet gives one).
        """
        from ._frames import ledger_runs, select_runs

        everything = ledger_runs(self.ledger, None if all_endpoints else self.endpoint)
        if technique:
            technique = self._technique_filter(technique, everything)
        if sweep_id and not everything["sweep_id"].eq(sweep_id).any() and (
                all_endpoints or self.ledger.get_sweep(self.endpoint, sweep_id) is None):
            raise InputError(f"no sweep {sweep_id} in the ledger; fl.sweeps() lists them.")
        if user is not None:
            _check_users(user, everything)
        return select_runs(everything, status=status, technique=technique, sweep_id=sweep_id, since=since, user=user)

    def _technique_filter(self, technique: str, frame: pd.DataFrame) -> str:
        """What a technique filter matches: a name or id of the ledger's runs, else FLORA's id for it
        (an unknown one raises ``NotFoundError`` naming close ones)."""
        if frame["technique_id"].eq(technique).any() or frame["technique_name"].eq(technique).any():
            return technique
        return self.technique(technique).technique_id

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

    @property
    def health(self) -> str:
        """``ok``, or what keeps the poller from FLORA (e.g. "FLORA unreachable, retrying")."""
        return self.engine.health

    def _pending_charges(self) -> int:
        """Runs FLORA finished whose charge is not reported yet (0 once the session is closed)."""
        if self.engine.closed:
            return 0
        exposure = self.engine.exposure()
        return max(0, exposure.pending - exposure.active)

    def status(self) -> StatusCard:
        """Where runs go, workspace, runs tracked, spend and poller health: a dict shown as the status card."""
        stats = self.poller.stats
        closed = self.engine.closed
        spent = None if closed else round(self.ledger.total_charged(self.endpoint), 6)  # a closed ledger: unknown
        return StatusCard({
            "endpoint": self.endpoint,
            "health": self.health,
            "simulator": self._simulated,
            "simulator_shared": bool(self.simulator is not None and self.simulator.shared),
            "simulator_note": None if self.simulator is None else self.simulator.note,
            "closed": closed,
            "workspace_id": self.engine.catalog.known_workspace,
            "workspace_problem": None,  # why the workspace is not known, once the card looked it up
            "budget_usd": self.budget,
            "tracked": self.poller.tracked,
            "unconfirmed_starts": self.poller.pending_intents,
            "spent_usd": spent,
            "pending_charges": self._pending_charges(),
            "poller_running": stats.running,
            "poller_alive": self.poller.alive,  # its thread, seen now (False once it ended, whatever ended it)
            "poller_cycles": stats.cycles,
            "poller_errors": stats.errors,
            "poller_last_error": stats.last_error,
            "listener_errors": stats.listener_errors,
            "requests_batch": stats.batch_requests,
            "requests_single": stats.single_requests,
            "batch_fallbacks": stats.batch_fallbacks,
            "invalid_answers": self.client.invalid_answers,
            "reconciled": stats.reconciled,
            "ledger": self.ledger.location,  # a connection string shows no password
            "ledger_shared": self.ledger.shared,
            "user": self.user,
            "ledger_lease": None if self._lease is None else self._lease.trouble,
        }, lookup=None if closed else self._card_facts)
