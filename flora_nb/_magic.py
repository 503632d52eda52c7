"""The ``%flora`` / ``%%flora`` magics: parse, call ``Flora``, display. No HTTP, no SQL here."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, Tuple, Unicode

from ._errors import FloraError, NotFoundError
from ._look import say
from ._magic_parse import SIM_ONLY, Command, HelpShown, expand, parse

if TYPE_CHECKING:
    from ._session import Flora

__all__ = ["FloraMagics", "in_magic_terms", "load_ipython_extension"]

# Errors are written for Python callers; inside the magic their hints must name the magic's
# options. Every hint of the package that names a Python spelling has its magic spelling here
# (tests/test_newuser.py scans the package for hints this table misses).
_MAGIC_TERMS: tuple[tuple[str, str], ...] = (
    (r"\bFlora\(workspace='ws_\.\.\.'\)", "%flora connect --workspace ws_..."),
    (r"\bFlora\(budget=\.\.\.\)", "%flora connect --budget USD"),
    (r"\bFlora\.simulated\(persist=False\) or another name=\.\.\.", "%flora connect --sim --no-persist"),
    (r"\b(?:flora_nb\.)?Flora\.simulated\(\)", "%flora connect --sim"),
    (r"\(or pass api_key=\.\.\.\)", "(then %flora connect again)"),
    (r"\bpass api_key=\.\.\., ", ""),
    (r"\bpass api_key=\.\.\.", "set FLORA_API_KEY"),
    (r"\b(?:fl\.|sweep\.)?(techniques|workspaces|resume|runs|costs|history|wait|stop|sweeps)\(\)", r"%flora \1"),
    (r"\(Flora\(budget=None\)\)", "(%flora connect without --budget)"),
    (r"\bbudget=(?=[,.\s]|$)", "--budget"),
    (r"\breuse=True\b", "--reuse"),
    (r"\bmax_concurrency\b", "--max-concurrency"),
    (r"\brepeat must\b", "--repeat must"),
    (r"\bzip lists\b", "--zip lists"),
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

HELP = """Run FLORA techniques from a notebook. Runs keep polling in the background.

  %flora                                   the session's status card (fl = %flora gives the session,
                                           the same as flora_nb.session() in Python)
  %flora connect [--sim [--speed S] [--seed N] [--credits USD] [--no-persist] ...] [--base-url URL]
                 [--workspace ws_...] [--budget USD]
                                           (session budget; the current session stays if this fails)
  %flora workspaces | techniques [QUERY] | show TECH
  %flora run TECH key=value ... [--label k=v] [--workspace ws] [--wait] [-o VAR]
  %%flora run TECH [options]               cell body: JSON, `key: value` lines, or the prompt text
  %flora sweep TECH key=[a,b] key2=v ... [--zip] [--repeat N] [--max-concurrency N]
                                           [--budget USD] [--dry-run] [--reuse] [-o VAR]
  %flora sweep --resume SWEEP_ID [--budget USD] | --retry-failed SWEEP_ID   continue a sweep (spends)
  %flora sweeps                            every sweep in the ledger: counts, spent, budget
  %flora runs [--sweep ID] [--status S] [--last N] | costs [--by COL] [--detail] | history [--status S]
  %flora form TECH | wait [ID] | stop [SWEEP] | resume      (ID / SWEEP: any sweep in the ledger)

Values are Python literals when they parse as one (5, "text", [1, 2]) and plain text otherwise;
$var and {expr} expand from your namespace to exactly one value, whatever it holds (spaces,
quotes, newlines); a list stays a list. Each command has its own help: %flora run -h.

Examples:
  %flora connect --sim
  %flora run poster-studio prompt="a lighthouse at dusk" -o r
  %%flora run poster-studio
  a lighthouse at dusk, risograph print
  %flora sweep jingle-writer prompt=[sea,city] style=[jazz,punk] --budget 1 -o s
  %flora costs --by technique_name,status

Configure with %config FloraMagics.<option>: default_workspace, poll_interval, short_errors,
default_max_concurrency, default_budget, simulator_speed.
"""


@magics_class
class FloraMagics(Magics):
    """The %flora magics; options are traitlets (``%config FloraMagics.short_errors = False``)."""

    default_workspace = Unicode("", help="workspace for new sessions (else FLORA_WORKSPACE_ID)").tag(config=True)
    poll_interval = Tuple(Float(), Float(), default_value=(2.0, 5.0), help="min/max seconds between polls").tag(config=True)
    short_errors = Bool(True, help="show user and API errors as one line, without a traceback").tag(config=True)
    default_max_concurrency = Int(4, help="runs in flight per sweep").tag(config=True)
    default_budget = Float(None, allow_none=True, help="default sweep budget in USD").tag(config=True)
    simulator_speed = Float(20.0, help="speed of %flora connect --sim").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.sweeps: dict[str, Any] = {}

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
            raise UsageError(in_magic_terms(f"{type(exc).__name__}: {exc}")) from None
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
            return Flora(workspace=self.default_workspace or None, poll_interval=self.poll_interval)

        try:
            return current_session(factory=new)
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
            raise UsageError(in_magic_terms(f"%flora connect failed, {kept}: {type(exc).__name__}: {exc}")) from None
        current_session(new)
        if old is not None and old is not new:
            old.close()
        return new

    def _new_session(self, o: Any) -> Flora:
        from ._session import Flora

        workspace = o.workspace or self.default_workspace or None
        if o.sim:
            return Flora.simulated(speed=o.speed if o.speed is not None else self.simulator_speed, seed=o.seed or 0, faults=_faults(o),
                                   persist=False if o.no_persist else None, workspace=workspace, budget=o.budget)
        new = Flora(base_url=o.base_url, workspace=workspace, poll_interval=self.poll_interval, budget=o.budget)
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
    run = fl.run(c.options.technique, inputs, workspace=c.options.workspace, labels=c.options.labels)
    return _wait(run) if c.options.wait else run


def _sweep(m: FloraMagics, c: Command) -> Any:
    fl, o = m.fl(), c.options
    if o.resume or o.retry_failed:
        return _continue_sweep(m, fl, o)
    inputs = _inputs_for(fl, o.technique, c.inputs)
    varying = {k: v for k, v in inputs.items() if isinstance(v, list)}
    fixed = {k: v for k, v in inputs.items() if not isinstance(v, list)}
    sweep = fl.sweep(
        o.technique, grid=None if o.zip else varying, zip=varying if o.zip else None, fixed=fixed,
        repeat=o.repeat, max_concurrency=_first(o.max_concurrency, m.default_max_concurrency),
        budget=_first(o.budget, m.default_budget), labels=o.labels, reuse=o.reuse,
        dry_run=o.dry_run, workspace=o.workspace,
    )
    if not o.dry_run:
        m.sweeps[sweep.sweep_id] = sweep
    return sweep


def _continue_sweep(m: FloraMagics, fl: Flora, o: Any) -> Any:
    sweep = fl.get_sweep(o.resume or o.retry_failed)
    if o.resume:
        sweep = sweep.resume(budget=o.budget) if o.budget is not None else sweep.resume()
    else:
        sweep = sweep.retry_failed()
    m.sweeps[sweep.sweep_id] = sweep
    return sweep


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
    return m.fl().techniques(" ".join(c.options.query) or None)


def _runs(m: FloraMagics, c: Command) -> Any:
    o, fl = c.options, m.fl()
    technique = o.technique
    if technique:
        try:
            technique = fl.technique(technique).technique_id  # a slug or id; names match as they are
        except NotFoundError:
            pass
    frame = fl.runs(status=o.status, technique=technique, sweep_id=o.sweep)
    return frame.tail(o.last).reset_index(drop=True) if o.last else frame


def _costs(m: FloraMagics, c: Command) -> Any:
    from ._frames import money_table

    by = [b.strip() for b in c.options.by.split(",") if b.strip()]
    try:
        table = m.fl().costs(by=by[0] if len(by) == 1 else by, detail=c.options.detail)
    except KeyError as exc:
        raise UsageError(f"%flora costs: {exc.args[0]}") from None
    return table if c.options.detail else money_table(table)


def _history(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    technique = fl.technique(c.options.technique).technique_id if c.options.technique else None
    return fl.history(status=c.options.status, technique_id=technique)


def _show(m: FloraMagics, c: Command) -> Any:
    return m.fl().technique(c.options.technique)


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
    name = c.options.sweep or next(reversed(m.sweeps), None)
    if name is None:
        raise UsageError("%flora stop: no sweep started in this session; name one: %flora stop SWEEP_ID "
                         "(see %flora sweeps).")
    sweep = _sweep_named(m, name)
    if sweep.done:
        say(f"Sweep {sweep.sweep_id} had already finished ({_counts(sweep)}); nothing to stop.")
        return None
    sweep.stop()
    say(f"Stopped launching {sweep.sweep_id}; runs already started keep running (FLORA cannot cancel them).")
    return None


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
