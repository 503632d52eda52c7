"""Parsing ``%flora`` / ``%%flora`` text into a Command. Pure: no session, no HTTP, no display.

Every user mistake becomes an IPython ``UsageError`` with one clear line and a hint.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from IPython.core.error import UsageError

from ._ranges import problem

__all__ = ["COMMANDS", "SIM_ONLY", "Command", "HelpShown", "expand", "parse", "parse_cell_inputs", "parse_value"]


class HelpShown(Exception):
    """``-h`` was given: the help text was produced instead of a command."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def ranged(name: str, kind: type = float) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` in ``name``'s allowed range (``_ranges``), else a usage error."""
    def convert(text: str) -> Any:
        value = kind(text)  # not a number: argparse says "invalid int value: 'two'"
        wrong = problem(name, value)
        if wrong:
            # argparse names the flag ("argument --speed: ..."): say only what is allowed
            raise argparse.ArgumentTypeError(wrong.removeprefix(f"{name} ").replace(f"got {value!r}", f"got {text}"))
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (--[\w-]+): must be", r"\1 must be", message)  # "--speed must be ..."
        raise UsageError(f"%flora {self.prog.split()[-1]}: {message}. See %flora {self.prog.split()[-1]} -h")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise HelpShown(self.format_help())

    def print_help(self, file: Any = None) -> None:
        raise HelpShown(self.format_help())


@dataclass
class Command:
    """A parsed ``%flora`` command: its name, options, and ``key=value`` inputs."""

    name: str
    options: argparse.Namespace
    inputs: dict[str, Any] = field(default_factory=dict)


def _new(name: str, help_text: str) -> _Parser:
    return _Parser(prog=f"%flora {name}", description=help_text, add_help=True)


def _add_output(p: _Parser) -> None:
    p.add_argument("-o", "--output", metavar="VAR", help="store the result in this variable")


def _run_parser() -> _Parser:
    p = _new("run", "Start one run; returns its live display at once. Inputs are key=value.")
    p.add_argument("technique", help="technique id (tech_...) or slug")
    p.add_argument("pairs", nargs="*", metavar="key=value", help="inputs; values are Python literals or plain text")
    p.add_argument("--label", action="append", default=[], metavar="k=v", help="a label (repeatable)")
    p.add_argument("--workspace", metavar="ws_...")
    p.add_argument("--wait", action="store_true", help="block until the run ends (Ctrl-C stops waiting only)")
    _add_output(p)
    return p


def _sweep_parser() -> _Parser:
    p = _new("sweep", "Start a sweep: list values vary (grid, or --zip), scalars are fixed. "
                      "Or continue one from the ledger: --resume / --retry-failed SWEEP_ID.")
    p.add_argument("technique", nargs="?")
    p.add_argument("pairs", nargs="*", metavar="key=value")
    p.add_argument("--zip", action="store_true", help="pair the lists element by element instead of a grid")
    p.add_argument("--repeat", type=ranged("repeat", int), default=1)
    p.add_argument("--max-concurrency", type=ranged("max_concurrency", int), default=None)
    p.add_argument("--budget", type=ranged("budget"), default=None, metavar="USD")
    p.add_argument("--dry-run", action="store_true", help="price and plan only; start nothing")
    p.add_argument("--reuse", action="store_true", help="do not pay again for identical completed runs")
    p.add_argument("--label", action="append", default=[], metavar="k=v")
    p.add_argument("--workspace", metavar="ws_...")
    p.add_argument("--resume", metavar="SWEEP_ID", help="launch the variations of a sweep never started (spends)")
    p.add_argument("--retry-failed", metavar="SWEEP_ID", help="start a sweep's failed variations again (spends)")
    _add_output(p)
    return p


def _simple(name: str, help_text: str, *args: tuple[tuple[str, ...], dict[str, Any]]) -> _Parser:
    p = _new(name, help_text)
    for flags, kwargs in args:
        p.add_argument(*flags, **kwargs)
    _add_output(p)
    return p


# connect options that configure the built-in simulator: meaningless (a usage error) without --sim
SIM_ONLY = {
    "speed": ("--speed", float, "divide every simulated duration by this"),
    "seed": ("--seed", int, "seed of the simulator's random faults"),
    "error_rate": ("--error-rate", float, "share of requests answered 500"),
    "drop_rate": ("--drop-rate", float, "share of starts whose answer is dropped"),
    "latency": ("--latency", float, "seconds added to every request"),
    "rate_limit": ("--rate-limit", float, "requests per second per workspace"),
    "run_failure_rate": ("--run-failure-rate", float, "share of runs that fail"),
    "credits": ("--credits", float, "USD balance of the simulated account"),
    "max_concurrent_runs": ("--max-concurrent-runs", int, "runs at once per workspace"),
    "no_persist": ("--no-persist", None, "a throwaway simulated account (not kept for later kernels)"),
}


def _connect_parser() -> _Parser:
    p = _new("connect", "(Re)configure the session; the current one is kept if the new one fails.")
    p.add_argument("--sim", action="store_true", help="start the built-in simulator (its account is kept "
                   "in $FLORA_NB_HOME/sim, so a later kernel continues it)")
    for dest, (flag, kind, text) in SIM_ONLY.items():
        if kind is None:
            p.add_argument(flag, dest=dest, action="store_true", help=f"{text} (with --sim)")
        else:
            p.add_argument(flag, dest=dest, type=ranged(dest, kind), default=None, help=f"{text} (with --sim)")
    p.add_argument("--base-url", metavar="URL")
    p.add_argument("--workspace", metavar="ws_...")
    p.add_argument("--budget", type=ranged("budget"), metavar="USD",
                   help="session budget: every start of the session must fit it")
    _add_output(p)
    return p


def _parsers() -> dict[str, _Parser]:
    return {
        "status": _simple("status", "A short status: endpoint, workspace, runs tracked, spend, poller health."),
        "connect": _connect_parser(),
        "workspaces": _simple("workspaces", "The workspaces your key can see."),
        "techniques": _simple("techniques", "The technique catalog.", (("query",), {"nargs": "*"})),
        "show": _simple("show", "A technique card: inputs, types, required, cost.", (("technique",), {})),
        "run": _run_parser(),
        "sweep": _sweep_parser(),
        "sweeps": _simple("sweeps", "The sweeps in the ledger: counts, spent, budget."),
        "runs": _simple(
            "runs", "The ledger as a DataFrame.", (("--sweep",), {"metavar": "ID"}),
            (("--status",), {}), (("--technique",), {}), (("--last",), {"type": int, "metavar": "N"}),
        ),
        "costs": _simple("costs", "Cost summary with a total row, in USD.",
                         (("--by",), {"default": "technique_name", "metavar": "COL[,COL]"}),
                         (("--detail",), {"action": "store_true", "help": "every column, as numbers"})),
        "history": _simple(
            "history", "Run history from FLORA itself.", (("--status",), {}), (("--technique",), {}),
        ),
        "form": _simple("form", "An ipywidgets form for a technique.", (("technique",), {})),
        "wait": _simple("wait", "Block until a run or sweep (default: everything tracked) is done.",
                        (("target",), {"nargs": "?", "metavar": "ID"}),
                        (("--timeout",), {"type": ranged("timeout"), "default": None})),
        "stop": _simple("stop", "Stop launching a sweep (default: the last one; any sweep in the ledger).",
                        (("sweep",), {"nargs": "?"})),
        "resume": _simple("resume", "Re-attach to runs the ledger has not seen finish."),
    }


COMMANDS = tuple(_parsers())
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_PAIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")
# $name and {expr} as IPython expands them ($$, {{ and }} stay literal), but into one value each.
_EXPANSION = re.compile(r"\$\$|\{\{|\}\}|\$([A-Za-z_][A-Za-z0-9_]*)|\{([^{}\n]+)\}")
_MARK = re.compile("\ue000[0-9]+\ue001")


def expand(line: str, namespace: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Replace ``$name`` / ``{expr}`` by markers that survive splitting; return the markers' values.

    A marker is one token whatever its value holds (spaces, quotes, ``=``, newlines), and a
    value given whole (``prompt=$p``) stays the object itself: a list still varies in a sweep.
    What cannot be evaluated stays as it was written, as in IPython.
    """
    values: dict[str, Any] = {}

    def substitute(match: re.Match[str]) -> str:
        text, name, expr = match.group(0), match.group(1), match.group(2)
        if name is None and expr is None:
            return text[0]
        try:
            value = namespace[name] if name else eval(expr, namespace)  # the user's own namespace, as IPython does
        except Exception:
            return text
        mark = f"\ue000{len(values)}\ue001"
        values[mark] = value
        return mark

    return _EXPANSION.sub(substitute, line), values


def _fill(value: Any, values: dict[str, Any]) -> Any:
    """Put expanded values back: a whole marker is the object, a marker inside text its ``str``."""
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if not isinstance(value, str) or not values:
        return value
    if value in values:
        return values[value]
    return _MARK.sub(lambda m: str(values.get(m.group(0), m.group(0))), value)


def _split(line: str) -> list[str]:
    """Split on spaces outside quotes and brackets, keeping the quotes (so "5" stays text).

    A ``#`` that begins a word outside quotes starts a comment, as in Python (``prompt=#f00`` is a value).
    """
    tokens: list[str] = []
    current, quote, depth = "", "", 0
    for char in line:
        if quote:
            quote = "" if char == quote else quote
        elif char == "#" and not current and depth == 0:
            break
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char.isspace() and depth == 0:
            if current:
                tokens.append(current)
            current = ""
            continue
        current += char
    if quote:
        raise UsageError(f"%flora: a {quote} quote is not closed; check your quotes.")
    return tokens + ([current] if current else [])


def parse_value(text: str) -> Any:
    """A Python literal when the text is one (numbers, quoted strings, lists), else the text."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    if text.startswith("[") and text.endswith("]"):  # [a, b] with bare words
        inner = text[1:-1].strip()
        return [parse_value(part) for part in inner.split(",")] if inner else []
    return text


def parse_pairs(pairs: list[str], what: str = "input", expanded: dict[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` tokens into a dict; a token without ``=`` is a usage error."""
    expanded = expanded or {}
    values: dict[str, Any] = {}
    for token in pairs:
        key, sep, raw = token.partition("=")
        if not sep or not _KEY.match(key):
            raise UsageError(f"%flora: expected {what} as key=value, got {token!r}. Quote values with spaces: "
                             f'prompt="a red fox".')
        if key in values:
            raise UsageError(f"%flora: {what} {key!r} is given twice.")
        values[key] = expanded[raw] if raw in expanded else _fill(parse_value(raw), expanded)
    return values


def parse(line: str, cell: str | None = None, expanded: dict[str, Any] | None = None) -> Command:
    """Parse a ``%flora`` line (and the ``%%flora`` cell body, if any) into a Command.

    ``expanded``: the values of the markers ``expand`` put in ``line``.
    """
    expanded = expanded or {}
    tokens = [t if _PAIR.match(t) else str(_fill(t, expanded)) for t in _split(line)]
    name = tokens[0] if tokens else "status"
    parsers = _parsers()
    if name not in parsers:
        close = [c for c in COMMANDS if c.startswith(name[:2])] or list(COMMANDS)
        raise UsageError(f"%flora: unknown command {name!r}. Did you mean: {', '.join(close)}? See %flora?")
    options = parsers[name].parse_args([_unquote_option(t) for t in tokens[1:]])
    try:
        inputs = parse_pairs(getattr(options, "pairs", []) or [], expanded=expanded)
    except RecursionError:
        raise UsageError("%flora: a value is nested too deeply; pass such data from Python instead.") from None
    if cell is not None and cell.strip():
        if name not in ("run", "sweep"):
            raise UsageError(f"%%flora {name} takes no cell body; only %%flora run and %%flora sweep do.")
        inputs = {**parse_cell_inputs(cell), **inputs}
    if name == "sweep":
        _check_sweep_target(options)
    options.labels = parse_pairs(getattr(options, "label", []) or [], "label", expanded)
    return Command(name, options, inputs)


def _check_sweep_target(options: argparse.Namespace) -> None:
    targets = [t for t in (options.technique, options.resume, options.retry_failed) if t]
    if not targets:
        raise UsageError("%flora sweep: give a technique, or --resume / --retry-failed SWEEP_ID. See %flora sweep -h")
    if options.resume and options.retry_failed:
        raise UsageError("%flora sweep: --resume and --retry-failed are separate steps; run one, then the other.")
    if (options.resume or options.retry_failed) and (options.technique or options.pairs):
        raise UsageError("%flora sweep --resume/--retry-failed continues a recorded sweep: its plan is in the "
                         "ledger, so give only the SWEEP_ID (and --budget to change its budget).")


def _unquote_option(token: str) -> str:
    # shlex(posix=False) keeps quotes; strip them from whole tokens that are not key=value inputs.
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"" and "=" not in token:
        return token[1:-1]
    return token


def parse_cell_inputs(cell: str) -> dict[str, Any]:
    """A cell body: a JSON object, ``key: value`` lines, or (marked ``_text``) free text."""
    body = cell.strip()
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise UsageError(f"%%flora: the cell looks like JSON but is not valid: {exc.msg} (line {exc.lineno}).") from None
        if not isinstance(data, dict):
            raise UsageError("%%flora: a JSON cell must be an object of inputs.")
        return data
    lines = [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    pairs = [re.match(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*:\s?(.*)$", ln) for ln in lines]
    if lines and all(pairs):
        return {m.group(1): parse_value(m.group(2)) for m in pairs if m}
    return {"_text": body}
