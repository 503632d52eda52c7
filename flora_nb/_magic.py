"""The ``%flora`` / ``%%flora`` magics: parse, call ``Flora``, display. No HTTP, no SQL here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Float, Int, Tuple, Unicode

from ._errors import FloraError, NotFoundError
from ._magic_parse import Command, HelpShown, parse

if TYPE_CHECKING:
    from ._session import Flora

__all__ = ["FloraMagics", "load_ipython_extension"]

HELP = """Run FLORA techniques from a notebook. Runs keep polling in the background.

  %flora                                   status: endpoint, workspace, runs tracked, spend, poller
  %flora connect [--sim] [--speed S] [--base-url URL] [--workspace ws_...] [--budget USD (session budget)]
  %flora workspaces | techniques [QUERY] | show TECH
  %flora run TECH key=value ... [--label k=v] [--workspace ws] [--wait] [-o VAR]
  %%flora run TECH [options]               cell body: JSON, `key: value` lines, or the prompt text
  %flora sweep TECH key=[a,b] key2=v ... [--zip] [--repeat N] [--max-concurrency N]
                                           [--budget USD] [--dry-run] [--reuse] [-o VAR]
  %flora sweep --resume SWEEP_ID [--budget USD] | --retry-failed SWEEP_ID   continue a sweep (spends)
  %flora sweeps                            every sweep in the ledger: counts, spent, budget
  %flora runs [--sweep ID] [--status S] [--last N] | costs [--by COL] | history [--status S]
  %flora form TECH | wait [ID] | stop [SWEEP] | resume      (ID / SWEEP: any sweep in the ledger)

Values are Python literals when they parse as one (5, "text", [1, 2]) and plain text otherwise;
$var and {expr} expand from your namespace. Each command has its own help: %flora run -h.

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
        self.session: Flora | None = None
        self.budget: float | None = None
        self.sweeps: dict[str, Any] = {}

    @line_cell_magic
    def flora(self, line: str, cell: str | None = None) -> Any:
        try:
            command = parse(line, cell)
        except HelpShown as shown:
            print(shown.text)
            return None
        try:
            result = _COMMANDS[command.name](self, command)
        except FloraError as exc:
            if not self.short_errors:
                raise
            raise UsageError(f"{type(exc).__name__}: {exc}") from None
        return self._deliver(command, result)

    flora.__doc__ = HELP

    def _deliver(self, command: Command, result: Any) -> Any:
        name = getattr(command.options, "output", None)
        if name:
            self.shell.user_ns[name] = result
            if command.name in ("run", "sweep") and hasattr(result, "_ipython_display_"):
                result._ipython_display_()  # still show it live, as without -o
            return None
        return result

    # ---------------------------------------------------------------- session

    def fl(self) -> Flora:
        """The session, created on first use from the environment."""
        if self.session is None:
            from ._session import Flora

            try:
                self.session = Flora(workspace=self.default_workspace or None, poll_interval=self.poll_interval)
            except FloraError as exc:
                raise UsageError(f"{exc} Or run: %flora connect --sim") from None
        return self.session

    def connect(self, c: Command) -> Flora:
        o = c.options
        from ._session import Flora

        if self.session is not None:
            self.session.close()
            self.session = None
        workspace = o.workspace or self.default_workspace or None
        if o.sim:
            self.session = Flora.simulated(speed=o.speed or self.simulator_speed, workspace=workspace, budget=o.budget)
        else:
            self.session = Flora(base_url=o.base_url, workspace=workspace, poll_interval=self.poll_interval,
                                 budget=o.budget)
        self.budget = o.budget
        try:
            self.session.workspace_id  # resolve now, so the status line below shows it
        except FloraError as exc:
            print(f"Connected; choose a workspace with --workspace: {exc}")
        return self.session


def _status(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    status = fl.status()
    try:
        status["workspace_id"] = fl.workspace_id
    except FloraError as exc:
        status["workspace_id"] = f"not chosen ({exc})"
    for key, value in status.items():
        print(f"{key:>20}: {value}")
    return None


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
        repeat=o.repeat, max_concurrency=o.max_concurrency or m.default_max_concurrency,
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
        print("Stopped waiting; the run keeps being tracked in the background.")
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
    by = [b.strip() for b in c.options.by.split(",") if b.strip()]
    try:
        return m.fl().costs(by=by[0] if len(by) == 1 else by)
    except KeyError as exc:
        raise UsageError(f"%flora costs: {exc.args[0]}") from None


def _history(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    technique = fl.technique(c.options.technique).technique_id if c.options.technique else None
    return fl.history(status=c.options.status, technique_id=technique)


def _show(m: FloraMagics, c: Command) -> Any:
    return m.fl().technique(c.options.technique)


def _form(m: FloraMagics, c: Command) -> Any:
    fl = m.fl()
    if not hasattr(fl, "form"):
        raise UsageError("%flora form: the ipywidgets form is not available in this version yet; "
                         f"use %flora show {c.options.technique} and %flora run instead.")
    return fl.form(c.options.technique)


def _wait_command(m: FloraMagics, c: Command) -> Any:
    fl, target = m.fl(), c.options.target
    if target is None:
        try:
            for run in fl.tracked_runs():
                run.wait(c.options.timeout)
        except KeyboardInterrupt:
            print("Stopped waiting; the runs keep being tracked in the background.")
        return None
    if target in m.sweeps or target.startswith("swp_"):
        return _wait(_sweep_named(m, target), c.options.timeout)
    run = fl.find_run(target)
    if run is None:
        raise UsageError(f"%flora wait: no run or sweep {target!r} in this session; see %flora runs.")
    return _wait(run, c.options.timeout)


def _stop(m: FloraMagics, c: Command) -> Any:
    name = c.options.sweep or next(reversed(m.sweeps), None)
    if name is None:
        raise UsageError("%flora stop: no sweep started in this session; name one: %flora stop SWEEP_ID "
                         "(see %flora sweeps).")
    sweep = _sweep_named(m, name)
    sweep.stop()
    print(f"Stopped launching {sweep.sweep_id}; runs already started keep running (FLORA cannot cancel them).")
    return None


def _resume(m: FloraMagics, c: Command) -> Any:
    runs = m.fl().resume()
    print(f"Tracking {len(runs)} unfinished run(s).")
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
