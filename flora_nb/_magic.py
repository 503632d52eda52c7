"""The ``%flora`` / ``%%flora`` magics: parse, call ``Flora``, display. No HTTP, no SQL here."""

from __future__ import annotations

import contextlib
import io
import re
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, Tuple, Unicode

from ._budget import limit_words
from ._errors import FloraError
from ._look import run_cost, say
from ._magic_parse import HELP, SIM_ONLY, Command, HelpShown, expand, parse

if TYPE_CHECKING:
    from ._session import Flora

__all__ = ["FloraMagics", "in_magic_terms", "load_ipython_extension"]

# Errors are written for Python callers; inside the magic their hints must name the magic's
# options. Every hint of the package that names a Python spelling has its magic spelling here
# (tests/test_newuser.py scans the package for hints this table misses).
def _lengths(match: re.Match[str]) -> str:
    """``got {'prompt': 2, 'style': 1}`` as words: ``got 2 prompt values, 1 style value``."""
    pairs = re.findall(r"'([^']*)': (\d+)", match.group(0))
    return "got " + ", ".join(f"{n} {key} value{'s' if n != '1' else ''}" for key, n in pairs)


_MAGIC_TERMS: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"\bFlora\(workspace='ws_\.\.\.'\)", "%flora connect --workspace ws_..."),
    (r"\bFlora\(budget=\.\.\.\)", "%flora connect --budget USD"),
    (r"\bFlora\.simulated\(persist=False\) or another name=\.\.\.", "%flora connect --sim --no-persist"),
    (r"\b(?:flora_nb\.)?Flora\.simulated\(\)", "%flora connect --sim"),
    (r"\(or pass api_key=\.\.\.\)", "(then %flora connect again)"),
    (r"\bpass api_key=\.\.\., ", ""),
    (r"\bpass api_key=\.\.\.", "set FLORA_API_KEY"),
    (r"\bledger=\.\.\. \(a path or postgresql://\.\.\.\) or ledger_path=\.\.\., not both", "--ledger PATH|URL, once"),
    (r"\b(?:fl\.)?spend_limits\(\)", "%flora limits"),
    (r"\b(?:fl\.)?set_spend_limit\([^)]*\)", "%flora limit USD"),
    (r"\b(?:sweep\.)?failures\(\)", "%flora failures SWEEP_ID"),
    (r"\bretry_failed with their codes starts them anyway", "--retry-failed SWEEP_ID --codes A,B starts them anyway"),
    (r"\b(?:sweep\.)?retry_failed\(codes=\[\.\.\.\]\)", "--retry-failed SWEEP_ID --codes A,B"),
    (r"\b(?:sweep\.)?retry_failed\(\)", "%flora sweep --retry-failed SWEEP_ID"),
    (r"\bcodes must be a list of FLORA error codes", "--codes takes FLORA error codes"),
    (r"\b(?:fl\.|sweep\.)?(techniques|workspaces|resume|runs|costs|history|wait|stop|sweeps)\(\)", r"%flora \1"),
    (r"\bpass confirm=True \(in %flora: --yes\)", "add --yes"),
    (r"\b(?:pass )?confirm=True\b", "--yes"),
    (r"\bwith confirm_above \(None never asks\)", "with %config FloraMagics.confirm_above = USD (None never asks)"),
    (r"(?<![.\w])confirm_above=", "%config FloraMagics.confirm_above = "),
    (r"\(Flora\(budget=None\)\)", "(%flora connect without --budget)"),
    (r"\bbudget=(?=[,.\s]|$)", "--budget"),
    (r"\breuse=True\b", "--reuse"),
    (r"\bmax_concurrency\b", "--max-concurrency"),
    (r"\brepeat must\b", "--repeat must"),
    (r"\bzip lists\b", "--zip lists"),
    (r"\bgot \{(?:'[^']*': \d+(?:, )?)+\}", _lengths),
    (r"\bUse grid= for every combination", "Drop --zip for every combination"),
    (r"\bgrid/zip/variations\b", "two key= lists"),
    (r"\bpass url=\.\.\. instead", "give its https:// URL as the input value instead"),
    (r"\burl=\.\.\.", "a URL"),
    (r"pass content_type='image/png' \(or the right type\) or a file_name with its extension",
     "give the file's local path, with its extension"),
    (r"\bupload\(\) takes a file path \(str or pathlib\.Path\) or bytes", "a media input takes a file path"),
    (r"look at it later with get_asset\(\), or upload again", "run the cell again later: the same file is "
                                                                "not uploaded twice"),
    (r"\bUse upload_asset\(\)(?: \(or Flora\.upload\(\)\))?, which [^.]*\.", "Give the file's local path as the input value: larger files then go "
                                        "through FLORA's signed-URL flow."),
    (r"\bworkspace=", "--workspace "),
)


def in_magic_terms(text: str) -> str:
    """A message written for Python, with its hints spelled as the magic's options."""
    for pattern, replacement in _MAGIC_TERMS:
        text = re.sub(pattern, replacement, text)
    return text


class _NotedFloat(Float):
    """A Float trait that notes every time it is set, even to the value it holds: traitlets tells
    observers of changes only, and ``%config FloraMagics.confirm_above = None`` is no change."""

    def set(self, obj: Any, value: Any) -> None:
        super().set(obj, value)
        obj.__dict__.setdefault("_traits_set", set()).add(self.name)
        noted = getattr(obj, "_trait_set", None)
        if noted is not None:
            noted(self.name)


class _Hidden(str):
    """A connection string whose repr (what ``%config FloraMagics`` prints) shows no password."""

    def __repr__(self) -> str:
        from ._sql import is_database_url, redact_url

        return repr(redact_url(self) if is_database_url(self) else str(self))


class _LedgerSetting(Unicode):
    """The ``ledger`` setting: kept as text whose repr hides a password."""

    def validate(self, obj: Any, value: Any) -> Any:
        return _Hidden(super().validate(obj, value))


@magics_class
class FloraMagics(Magics):
    """The %flora magics; options are traitlets (``%config FloraMagics.short_errors = False``)."""

    default_workspace = Unicode("", help="workspace for new sessions (else FLORA_WORKSPACE_ID)").tag(config=True)
    poll_interval = Tuple(Float(), Float(), default_value=(2.0, 5.0), help="min/max seconds between polls").tag(config=True)
    short_errors = Bool(True, help="show user and API errors as one line, without a traceback").tag(config=True)
    default_max_concurrency = Int(4, help="runs in flight per sweep").tag(config=True)
    default_budget = Float(None, allow_none=True, help="default sweep budget in USD").tag(config=True)
    simulator_speed = Float(20.0, help="speed of %flora connect --sim").tag(config=True)
    ledger = _LedgerSetting("", help="the ledger new sessions use: a file path, sqlite:///PATH or a team's "
                              "postgresql://USER@HOST/DB (default: FLORA_NB_LEDGER, else ~/.flora_nb/ledger.sqlite)"
                     ).tag(config=True)
    confirm_above = _NotedFloat(
        None, allow_none=True, min=0.0,
        help="USD: a start that may spend more asks for --yes (None: never asks); applied to the session the "
             "magics use, and to each later one; unset, a session keeps its own (FLORA_NB_CONFIRM_ABOVE, else 10)",
    ).tag(config=True)

    # the session the confirm_above setting was last applied to, and the value applied
    _applied_to: weakref.ref[Flora] | None = None
    _applied_value: float | None = None

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.sweeps: dict[str, Any] = {}

    def _trait_set(self, name: str) -> None:
        if name == "confirm_above":
            session = self.session
            if session is not None:
                self._apply_settings(session, force=True)

    def _apply_settings(self, fl: Flora, force: bool = False) -> Flora:
        """Put the confirm_above the user set (``%config``) on this session, once per session and value:
        a later ``fl.confirm_above = ...`` in Python holds until the setting is set again. Unset: untouched."""
        if "confirm_above" not in self.__dict__.get("_traits_set", ()):
            return fl
        same = self._applied_to is not None and self._applied_to() is fl and self._applied_value == self.confirm_above
        if force or not same:
            fl.confirm_above = self.confirm_above
            self._applied_to, self._applied_value = weakref.ref(fl), self.confirm_above
        return fl

    @property
    def session(self) -> Flora | None:
        """The open session the magics use (``flora_nb.session()``), or None before the first command."""
        from ._session import open_session

        return open_session()

    @no_var_expand
    @line_cell_magic
    def flora(self, line: str, cell: str | None = None) -> Any:
        try:
            text, values = self._expanded(line)
            command = parse(text, cell, values)
        except HelpShown as shown:
            say(shown.text)
            return None
        try:
            result = _COMMANDS[command.name](self, command)
        except FloraError as exc:
            if not self.short_errors:
                raise
            # the command's name leads, as in every usage error: no class names (short_errors off shows them)
            raise UsageError(in_magic_terms(f"%flora {command.name}: {exc}")) from None
        return self._deliver(command, result)

    def _expanded(self, line: str) -> tuple[str, dict[str, Any]]:
        namespace = dict(self.shell.user_ns) if self.shell is not None else {}
        text, values = expand(line, namespace)
        return text, values

    flora.__doc__ = HELP

    def _deliver(self, command: Command, result: Any) -> Any:
        name = getattr(command.options, "output", None)
        if name and self.shell is not None:
            self.shell.user_ns[name] = result
            from ._run import Run  # the handles (and ipywidgets) load only once something is shown
            from ._sweep import Sweep

            if isinstance(result, (Run, Sweep)):  # still show it live, as without -o
                from ._display import display_live

                display_live(result)
            return None
        return result

    # ---------------------------------------------------------------- session

    def fl(self) -> Flora:
        """The session (``flora_nb.session()``), created on first use from the environment."""
        from ._session import Flora, current_session

        def new() -> Flora:
            return Flora(workspace=self.default_workspace or None, poll_interval=self.poll_interval,
                         ledger=self.ledger or None)

        try:
            return self._apply_settings(current_session(factory=new))
        except FloraError as exc:
            if not self.short_errors:
                raise
            text = in_magic_terms(str(exc))
            raise UsageError(text if "--sim" in text else f"{text} Or run: %flora connect --sim") from None

    def connect(self, c: Command) -> Flora:
        """Build the new session first; the current one is replaced only once the new one works."""
        from ._session import current_session

        o = c.options
        misplaced = [flag for dest, (flag, _, _) in SIM_ONLY.items() if getattr(o, dest) not in (None, False)]
        if misplaced and not o.sim:
            raise UsageError(f"%flora connect: {', '.join(misplaced)} only with --sim (they configure the "
                             "built-in simulator); nothing was changed.")
        old = self.session
        try:
            new = self._new_session(o)
        except FloraError as exc:
            if not self.short_errors:
                raise
            kept = "kept the current session" if old is not None else "no session was opened"
            raise UsageError(in_magic_terms(f"%flora connect failed, {kept}: {exc}")) from None
        current_session(self._apply_settings(new))
        if old is not None and old is not new:
            old.close()
        return new

    def _new_session(self, o: Any) -> Flora:
        from ._session import Flora

        workspace = o.workspace or self.default_workspace or None
        ledger = o.ledger or self.ledger or None
        if o.sim:
            return Flora.simulated(speed=o.speed if o.speed is not None else self.simulator_speed, seed=o.seed or 0,
                                   faults=_faults(o), persist=False if o.no_persist else None,
                                   name=o.account or "default", workspace=workspace, budget=o.budget, ledger=ledger)
        new = Flora(base_url=o.base_url, workspace=workspace, poll_interval=self.poll_interval, budget=o.budget,
                    ledger=ledger)
        try:
            new.client.workspaces()  # the key and the URL work, or the current session stays
        except BaseException:
            new.close()
            raise
        try:
            _ = new.workspace_id  # resolve now, so the status card shows it
        except FloraError as exc:
            say(in_magic_terms(f"Connected; choose a workspace with --workspace: {exc}"))
        return new


def _faults(o: Any) -> Any:
    """The simulator's faults from the connect options (None when none is given)."""
    from .sim import Faults

    given = {k: getattr(o, k) for k in ("error_rate", "drop_rate", "latency", "rate_limit", "run_failure_rate",
                                        "credits", "max_concurrent_runs") if getattr(o, k) is not None}
    try:
        return Faults(**given) if given else None
    except ValueError as exc:
        raise UsageError(f"%flora connect: {exc}") from None


def _status(m: FloraMagics, c: Command) -> Any:
    return m.fl()  # shown as its status card (HTML table in Jupyter, text in a terminal)


def _run(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    inputs = _inputs_for(fl, c.options.technique, c.inputs)
    if any(isinstance(v, list) for v in inputs.values()):
        raise UsageError("%flora run: a list value starts several runs; use %flora sweep for that.")
    if not c.options.again:
        _refuse_paying_twice(fl, c.options.technique, inputs, c.options.workspace)
    run = fl.run(c.options.technique, inputs, workspace=c.options.workspace, labels=c.options.labels,
                 confirm=c.options.yes)
    return _wait(run) if c.options.wait else run


def _refuse_paying_twice(fl: Flora, technique: str, inputs: dict[str, Any], workspace: str | None) -> None:
    """A UsageError (nothing sent) when a completed, paid run of the ledger had exactly these inputs."""
    tech = fl.technique(technique)
    # local files as the ledger knows them (their asset URL once uploaded); nothing is uploaded here
    [resolved] = fl.starter.uploads.resolve(tech, [inputs], workspace or fl.workspace_id, upload=False)
    earlier = fl.starter.completed_before(technique, resolved, workspace)
    if not earlier:
        return
    last = earlier[-1]
    when = f" on {last.completed_at:%Y-%m-%d at %H:%M} UTC" if last.completed_at is not None else ""
    more = f" (and {len(earlier) - 1} more before it)" if len(earlier) > 1 else ""
    raise UsageError(f"%flora run: {tech.name or tech.technique_id} already ran with exactly these inputs: run "
                     f"{last.id} completed{when}, {run_cost(last)}{more}. Nothing was sent. "
                     f"`%flora run ... --again` pays for a new one; `%flora show {last.id}` shows the earlier one.")


def _sweep(m: FloraMagics, c: Command) -> Any:
    fl, o = m.fl(), c.options
    if o.resume or o.retry_failed:
        return _continue_sweep(m, fl, o)
    inputs = _inputs_for(fl, o.technique, c.inputs)
    varying = {k: v for k, v in inputs.items() if isinstance(v, list)}
    fixed = {k: v for k, v in inputs.items() if not isinstance(v, list)}
    spec = dict(grid=None if o.zip else varying, zip=varying if o.zip else None, fixed=fixed, repeat=o.repeat,
                workspace=o.workspace)
    budget = _first(o.budget, m.default_budget)
    if not (o.reuse or o.dry_run):
        _say_paid_before(fl, o.technique, spec, budget, o.yes)
    sweep = fl.sweep(o.technique, **spec, max_concurrency=_first(o.max_concurrency, m.default_max_concurrency),
                     budget=budget, labels=o.labels, reuse=o.reuse, dry_run=o.dry_run, confirm=o.yes)
    if not o.dry_run:
        m.sweeps[sweep.sweep_id] = sweep
    return sweep


def _say_paid_before(fl: Flora, technique: str, spec: dict[str, Any], budget: float | None, confirm: bool) -> None:
    """One line before a sweep starts when some of its runs already completed with the same inputs."""
    from ._plan import plan_size

    # the price question first, as the sweep asks it: a sweep refused for its size is never planned twice
    runs = plan_size(spec["grid"], spec["zip"], None, spec["repeat"])
    fl.starter.confirm_spend(fl.technique(technique), runs, confirm,
                             budgeted=budget is not None or fl.budget is not None)
    plan = fl.sweep(technique, **spec, dry_run=True)  # sends nothing, uploads nothing
    paid = int(plan["reusable"].sum())
    if paid:
        say(f"{paid} of the {len(plan)} runs of this sweep already completed with the same inputs (paid for "
            "before); starting anyway, paying again. --reuse takes them instead.")


def _continue_sweep(m: FloraMagics, fl: Flora, o: Any) -> Any:
    sweep = fl.get_sweep(o.resume or o.retry_failed)
    if o.resume:
        sweep = sweep.resume(budget=o.budget) if o.budget is not None else sweep.resume()
    else:
        with _lines_in_magic_terms():
            sweep = sweep.retry_failed(codes=o.codes)
    m.sweeps[sweep.sweep_id] = sweep
    return sweep


@contextlib.contextmanager
def _lines_in_magic_terms() -> Iterator[None]:
    """What a Python call says (written for Python callers) said again with the magic's spellings."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            yield
    finally:
        for line in said.getvalue().splitlines():
            say(in_magic_terms(line))


def _sweep_named(m: FloraMagics, name: str) -> Any:
    """A sweep of this session, or any sweep of the ledger (rebuilt from its plan)."""
    if name in m.sweeps:
        return m.sweeps[name]
    return m.fl().get_sweep(name)


def _inputs_for(fl: Flora, technique: str, given: dict[str, Any]) -> dict[str, Any]:
    """Resolve a free-text cell body and stringify scalars (FLORA inputs are text or URLs)."""
    tech = fl.technique(technique)
    given = dict(given)
    text = given.pop("_text", None)
    if text is not None:
        required_text = [i for i in tech.required_inputs if i.type == "text"]
        if len(tech.required_inputs) != 1 or len(required_text) != 1:
            raise UsageError(f"%%flora: {tech.name} takes {len(tech.required_inputs)} required inputs; "
                             "give them as `key: value` lines or a JSON object.")
        given.setdefault(required_text[0].id, text)
    return {k: _text(v) for k, v in given.items()}


def _text(value: Any) -> Any:
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value if isinstance(value, str) else str(value)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _wait(target: Any, timeout: float | None = None) -> Any:
    try:
        return target.wait(timeout)
    except KeyboardInterrupt:
        say("Stopped waiting; the run keeps being tracked in the background.")
        return target


def _frame(method: str, **fixed: Any) -> Callable[[FloraMagics, Command], Any]:
    def command(m: FloraMagics, c: Command) -> Any:
        return getattr(m.fl(), method)(**fixed)

    return command


def _techniques(m: FloraMagics, c: Command) -> Any:
    query = " ".join(c.options.query) or None
    found = m.fl().techniques(query)
    if query and found.empty:
        say(f"No technique matches {query}; %flora techniques lists them all.")
        return None
    return found


def _runs(m: FloraMagics, c: Command) -> Any:

    o = c.options
    users = [u.strip() for u in o.user.split(",") if u.strip()] if o.user else None
    frame = m.fl().runs(status=o.status, technique=o.technique, sweep_id=o.sweep, user=users)
    frame = frame.tail(o.last).reset_index(drop=True) if o.last else frame
    return _columns(frame, o.columns) if o.columns is not None else frame


def _columns(frame: Any, text: str) -> Any:
    """``--columns a,b``: only these columns (a bare input id means its ``input.`` column)."""
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    names = [w if w in frame.columns or f"input.{w}" not in frame.columns else f"input.{w}" for w in wanted]
    unknown = [w for w, name in zip(wanted, names) if name not in frame.columns]
    if unknown or not wanted:
        raise UsageError(f"%flora runs: no column {', '.join(unknown) or 'given'} in the runs table; choose from: "
                         f"{', '.join(map(str, frame.columns))}.")
    return frame[names]


def _costs(m: FloraMagics, c: Command) -> Any:
    by = [b.strip() for b in c.options.by.split(",") if b.strip()]
    # money reads as money in its display; the numbers stay numbers (c["charged_usd"].sum() works)
    return m.fl().costs(by=by[0] if len(by) == 1 else by, detail=c.options.detail)


def _history(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    technique = fl.technique(c.options.technique).technique_id if c.options.technique else None
    return fl.history(status=c.options.status, technique_id=technique)


def _show(m: FloraMagics, c: Command) -> Any:
    fl, name = m.fl(), c.options.technique
    run = fl.find_run(name)  # a run of the ledger by its id, else a technique
    if run is None and name.startswith("run_"):
        raise UsageError(f"%flora show: no run {name} in the ledger of this session's endpoint; "
                         "%flora runs lists them.")
    return run if run is not None else fl.technique(name)


def _form(m: FloraMagics, c: Command) -> Any:
    return m.fl().form(c.options.technique)


def _wait_command(m: FloraMagics, c: Command) -> Any:
    fl, target = m.fl(), c.options.target
    if target is None:
        pending = fl.tracked_runs()
        if not pending:
            say("Nothing to wait for: every run of this session has finished (see %flora runs).")
            return None
        try:
            for run in pending:
                run.wait(c.options.timeout)
        except KeyboardInterrupt:
            say("Stopped waiting; the runs keep being tracked in the background.")
        return None
    if target in m.sweeps or target.startswith("swp_"):
        return _wait(_sweep_named(m, target), c.options.timeout)
    found = fl.find_run(target)
    if found is None:
        raise UsageError(f"%flora wait: no run or sweep {target!r} in this session; see %flora runs.")
    return _wait(found, c.options.timeout)


def _stop(m: FloraMagics, c: Command) -> Any:
    names = c.options.sweep or [_last_sweep(m, "stop")]
    sweeps = [_sweep_named(m, name) for name in dict.fromkeys(names)]  # every name found before any stops
    for sweep in sweeps:
        if sweep.done:
            say(f"Sweep {sweep.sweep_id} had already finished ({_counts(sweep)}); nothing to stop.")
        else:
            say(sweep.stop(quiet=True).stop_summary())  # one line: never started, still running on FLORA
    return None


def _last_sweep(m: FloraMagics, command: str) -> str:
    name = next(reversed(m.sweeps), None)
    if name is None:
        raise UsageError(f"%flora {command}: no sweep started in this session; name one: %flora {command} "
                         "SWEEP_ID (see %flora sweeps).")
    return name


def _failures(m: FloraMagics, c: Command) -> Any:
    return _sweep_named(m, c.options.sweep or _last_sweep(m, "failures")).failures()


def _limit(m: FloraMagics, c: Command) -> Any:
    fl, o = m.fl(), c.options
    if o.usd is not None:
        fl.set_spend_limit(o.usd, period=o.period, technique=o.technique)
        say(f"Set {limit_words(o.technique, o.period, o.usd)}, for every session using this ledger: a start "
            "that does not fit is refused before anything is sent.")
    else:
        scope = fl.technique(o.technique).technique_id if o.technique else "all"
        table = fl.spend_limits()
        found = table[(table["technique"] == scope) & (table["period"] == (o.period or "in all"))]
        if found.empty:
            raise UsageError(f"%flora limit none: there is no spend limit{_per(o.period)} for "
                             f"{o.technique or 'every technique'}; nothing changed. %flora limits shows them.")
        fl.set_spend_limit(None, period=o.period, technique=o.technique)
        say(f"Removed {limit_words(o.technique, o.period, float(found['limit'].iloc[0]))}.")
    return _limits(m, c, quiet=True)


def _per(period: str | None) -> str:
    return {"day": " a day (UTC)", "month": " a month (UTC)"}.get(period or "", " in all")


def _limits(m: FloraMagics, c: Command, quiet: bool = False) -> Any:
    table = m.fl().spend_limits()
    if table.empty:
        if not quiet:
            say("No spend limit is set; %flora limit USD [--period day|month] [--technique T] sets one.")
        return None
    return table  # money shown as money, as %flora costs shows it; the numbers stay numbers


def _counts(sweep: Any) -> str:
    return ", ".join(f"{n} {status}" for status, n in sweep.counts.items() if n)


def _resume(m: FloraMagics, c: Command) -> Any:
    runs = m.fl().resume()
    say(f"Tracking {len(runs)} unfinished run(s).")
    return None


_COMMANDS: dict[str, Callable[[FloraMagics, Command], Any]] = {
    "status": _status,
    "connect": lambda m, c: m.connect(c),
    "workspaces": _frame("workspaces"),
    "techniques": _techniques,
    "show": _show,
    "run": _run,
    "sweep": _sweep,
    "sweeps": _frame("sweeps"),
    "failures": _failures,
    "limit": _limit,
    "limits": _limits,
    "runs": _runs,
    "costs": _costs,
    "history": _history,
    "form": _form,
    "wait": _wait_command,
    "stop": _stop,
    "resume": _resume,
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flora_nb``: register the magics (the session starts on first use)."""
    ipython.register_magics(FloraMagics(shell=ipython))
