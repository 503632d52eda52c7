"""Parsing ``%flora`` / ``%%flora`` text into a Command. Pure: no session, no HTTP, no display.

Every user mistake becomes an IPython ``UsageError`` with one clear line and a hint. The whole line
is read before anything is decided: an unclosed quote or bracket, a value of the wrong shape or an
unknown option is refused naming its column, so a typo never swallows the options after it
(``prompt=[a,b --dry-run`` once started a paid run with ``[a,b --dry-run`` as its prompt).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from IPython.core.error import UsageError

from ._ranges import Range, problem
from ._states import SERVER_STATUSES, STATUSES

__all__ = ["COMMANDS", "HELP", "SIM_ONLY", "SUMMARIES", "Command", "HelpShown", "expand", "parse", "parse_cell_inputs", "parse_value"]

# One line per command: how it is written, and what it does (the %flora help list).
SUMMARIES: tuple[tuple[str, str, str], ...] = (
    ("status", "%flora", "the session's status card (fl = %flora: the session)"),
    ("connect", "%flora connect [--sim [--account NAME]] ...", "connect to FLORA, or to the built-in simulator"),
    ("workspaces", "%flora workspaces", "the workspaces your key can see"),
    ("techniques", "%flora techniques [QUERY]", "the technique catalog, or those matching QUERY"),
    ("show", "%flora show TECH | RUN_ID", "a technique's card (inputs, price), or a run"),
    ("run", "%flora run TECH key=value ...", "start one run (%%flora run TECH: inputs in the cell)"),
    ("sweep", "%flora sweep TECH key=[a,b] ...", "start a sweep over list values, or continue one"),
    ("sweeps", "%flora sweeps", "every sweep in the ledger: counts, spent, budget"),
    ("failures", "%flora failures [SWEEP_ID]", "a sweep's failed runs, by what retrying can do"),
    ("runs", "%flora runs [--status S] [--last N]", "the runs of the ledger as a table"),
    ("costs", "%flora costs [--by COL] [--detail]", "what was spent, per technique or column, and total"),
    ("history", "%flora history [--status S]", "the runs FLORA itself has on record"),
    ("limit", "%flora limit USD|none [--period day|month]", "set or remove a spend limit kept in the ledger"),
    ("limits", "%flora limits", "every spend limit: limit, spent, held, left"),
    ("form", "%flora form TECH", "a form to fill in, price and start runs and sweeps"),
    ("wait", "%flora wait [ID]", "wait until a run or sweep (default: all) is done"),
    ("stop", "%flora stop [SWEEP_ID ...]", "stop launching a sweep's runs (default: the last)"),
    ("resume", "%flora resume", "track again runs the ledger has not seen finish"),
    ("help", "%flora help [COMMAND]", "this list, or a command's options and examples"),
)
_WIDTH = 47  # where the one-line descriptions start


def _summary_lines() -> str:
    return "\n".join(f"  {usage:<{_WIDTH - 2}} {line}" if len(usage) < _WIDTH - 2 else f"  {usage}  {line}"
                     for _, usage, line in SUMMARIES)


HELP = f"""Run FLORA techniques from a notebook. Runs keep polling in the background.

Commands (each has its options and examples: %flora COMMAND -h, or %flora help COMMAND):
{_summary_lines()}

Options that spend money, or save it:
  --yes        run/sweep: start even when the price is above confirm_above (asked, else nothing is sent)
  --again      run: pay for a new run although one with the same inputs already completed
  --reuse      sweep: take completed runs with the same inputs instead of paying for them again
  --codes A,B  sweep --retry-failed: retry the failures with these error codes, whatever their hint
  --budget USD sweep: its runs together never spend more; connect: the whole session's

Values are Python literals when they parse as one (5, "text", [1, 2]) and plain text otherwise;
$var and {{expr}} expand from your namespace to exactly one value, whatever it holds (spaces,
quotes, newlines); a list stays a list.

Examples:
  %flora connect --sim
  %flora run poster-studio prompt="a lighthouse at dusk" -o r
  %%flora run poster-studio
  a lighthouse at dusk, risograph print
  %flora sweep jingle-writer prompt=[sea,city] style=[jazz,punk] --budget 1 -o s
  %flora limit 5 --period day
  %flora costs --by technique_name,status

Configure with %config FloraMagics.<option>: default_workspace, poll_interval, short_errors,
default_max_concurrency, default_budget, simulator_speed, confirm_above (USD; None never asks).
"""


class HelpShown(Exception):
    """``-h`` was given: the help text was produced instead of a command."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def ranged(name: str, kind: type = float, allowed: Range | None = None) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` in ``name``'s allowed range (``_ranges``), else a usage error.

    Text that is no number at all is refused with the range too (``--repeat two``: "must be a whole number").
    """
    def convert(text: str) -> Any:
        try:
            value: Any = kind(text)
        except ValueError:
            value = text
        wrong = problem(name, value) if allowed is None else (
            None if allowed.admits(value) else f"{name} must be {allowed.words()}, got {value!r}")
        if wrong:
            # argparse names the flag ("argument --speed: ..."): say only what is allowed
            raise argparse.ArgumentTypeError(wrong.removeprefix(f"{name} ").replace(f"got {value!r}", f"got {text}"))
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (\S+): (must be|takes)", r"\1 \2", message)  # "--speed must be ..."
        message = re.sub(r"^argument (\S+): invalid choice: '?(.*?)'? \(choose from (.*)\)$",
                         lambda m: f"{m[1]} takes one of {m[3].replace(chr(39), '')}; got {m[2]}", message)
        raise UsageError(f"%flora {self.prog.split()[-1]}: {message}. See %flora {self.prog.split()[-1]} -h")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise HelpShown(self.format_help())

    def print_help(self, file: Any = None) -> None:
        raise HelpShown(self.format_help())

    def read(self, words: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """Options and ``key=value`` words in any order; what no argument takes comes back apart."""
        if self.usage is None:  # the intermixed parse %-formats a usage of its own: escape the % of %flora
            self.usage = self.format_usage().removeprefix("usage: ").rstrip("\n").replace("%", "%%")
        return self.parse_known_intermixed_args(words)

    def flags(self) -> list[str]:
        """Every option this command takes (``--dry-run``, ``-o`` ...)."""
        return [flag for action in self._actions for flag in action.option_strings]


@dataclass
class Command:
    """A parsed ``%flora`` command: its name, options, and ``key=value`` inputs."""

    name: str
    options: argparse.Namespace
    inputs: dict[str, Any] = field(default_factory=dict)


def _new(name: str, help_text: str, examples: tuple[str, ...]) -> _Parser:
    # No abbreviations: ``--dry`` is an unknown option, never a guess at ``--dry-run``. The description is
    # wrapped here and the examples kept line by line (argparse's raw-description formatter keeps both as given).
    epilog = "Examples:\n" + "\n".join(f"  {line}" for line in examples)
    p = _Parser(prog=f"%flora {name}", description=textwrap.fill(help_text, 78), epilog=epilog, add_help=False,
                allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action="help", help="show this help: every option, and examples")
    return p


def _h(text: str) -> str:
    """A help text as argparse wants it (it %-formats help texts: %flora is written %%flora)."""
    return text.replace("%", "%%")


def _add_output(p: _Parser) -> None:
    p.add_argument("-o", "--output", metavar="VAR", help="store the result in this variable of your "
                   "namespace instead of showing it (a run or sweep is still shown live)")


_TECH_HELP = "the technique: its slug (poster-studio) or id (tech_...); %flora techniques lists them"
_PAIRS_HELP = "the inputs, key=value; values are Python literals (5, [a,b]) or plain text; quote text with spaces"
_LABEL_HELP = "a label kept with the run in the ledger (a label.K column of %flora runs); repeatable"
_WORKSPACE_HELP = "the workspace to run in (default: the session's); %flora workspaces lists them"


def _run_parser() -> _Parser:
    p = _new("run", "Start one run; returns its live display at once. Inputs are key=value.", (
        '%flora run poster-studio prompt="a red fox" -o r',
        "%flora run poster-studio prompt=fox --label project=autumn --wait",
        "%flora run image-to-motion prompt=storm --workspace ws_team --yes",
        "%flora run poster-studio prompt=fox --again",
        "%%flora run poster-studio            (the cell body is the prompt, or key: value lines, or JSON)",
    ))
    p.add_argument("technique", help=_h(_TECH_HELP))
    p.add_argument("pairs", nargs="*", metavar="key=value", help=_h(_PAIRS_HELP))
    p.add_argument("--label", action="append", default=[], metavar="k=v", help=_h(_LABEL_HELP))
    p.add_argument("--workspace", metavar="ws_...", help=_h(_WORKSPACE_HELP))
    p.add_argument("--wait", action="store_true", help="block until the run ends (Ctrl-C stops waiting only)")
    _add_yes(p)
    p.add_argument("--again", action="store_true",
                   help="pay for a new run although one with exactly these inputs already completed")
    _add_output(p)
    return p


def _add_yes(p: _Parser) -> None:
    p.add_argument("--yes", action="store_true", help="start even when the price is above confirm_above "
                   "(%%config FloraMagics.confirm_above); without it such a start is refused, nothing sent")


def _codes(text: str) -> list[str]:
    """``--codes A,B``: FLORA error codes, comma-separated (any case)."""
    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes or not all(_CODE.match(c) for c in codes):
        raise argparse.ArgumentTypeError(f"takes FLORA error codes separated by commas, such as "
                                         f"GENERATION_NO_RESULT,GPU_PROVIDER_ERROR; got {text}")
    return codes


def _statuses(text: str) -> list[str]:
    """``--status failed,skipped``: statuses a run of the ledger can have, comma-separated."""
    asked = [s.strip() for s in text.split(",") if s.strip()]
    if not asked or any(s not in STATUSES for s in asked):
        raise argparse.ArgumentTypeError(f"takes one or more of {', '.join(STATUSES)}, separated by commas; "
                                         f"got {text}")
    return asked


def _account(text: str) -> str:
    """``--account NAME``: a simulated account's name (it names a file: letters, digits, - and _)."""
    if not _ACCOUNT.match(text):
        raise argparse.ArgumentTypeError(f"takes a name of letters, digits, - or _ (such as tutorial-02); got {text}")
    return text


def _limit_usd(text: str) -> float | None:
    """``%flora limit``'s amount: USD >= 0, or ``none`` to remove the limit."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not Range(0.0).admits(value):
        raise argparse.ArgumentTypeError(f"must be a number of USD >= 0, or none to remove the limit; got {text}")
    return value


def _sweep_parser() -> _Parser:
    p = _new("sweep", "Start a sweep: list values vary (every combination, or --zip), scalars are fixed. "
                      "Or continue one from the ledger: --resume / --retry-failed SWEEP_ID.", (
        "%flora sweep jingle-writer prompt=[sea,city] style=[jazz,punk] --budget 1 -o s",
        "%flora sweep poster-studio prompt=[fox,owl] style=[ink,risograph] --zip --repeat 3",
        "%flora sweep poster-studio prompt=[fox,owl,heron] --max-concurrency 2 --label project=autumn",
        "%flora sweep poster-studio prompt=[fox,owl] --dry-run        (the plan and its price; nothing starts)",
        "%flora sweep poster-studio prompt=[fox,owl] --reuse --workspace ws_team --yes",
        "%flora sweep --resume swp_...  --budget 2",
        "%flora sweep --retry-failed swp_... --codes GENERATION_NO_RESULT",
    ))
    p.add_argument("technique", nargs="?", help=_h(_TECH_HELP + " (not with --resume / --retry-failed)"))
    p.add_argument("pairs", nargs="*", metavar="key=value", help=_h("the inputs: a list value varies "
                   "(prompt=[a,b]), any other is the same in every run"))
    p.add_argument("--zip", action="store_true", help="pair the lists element by element instead of every combination")
    p.add_argument("--repeat", type=ranged("repeat", int), default=1, metavar="N",
                   help="run every variation N times (default 1): samples of the same inputs")
    p.add_argument("--max-concurrency", type=ranged("max_concurrency", int), default=None, metavar="N",
                   help=_h("runs in flight at once (default 4: %config FloraMagics.default_max_concurrency)"))
    p.add_argument("--budget", type=ranged("budget"), default=None, metavar="USD",
                   help="the sweep's runs together never spend more than this")
    p.add_argument("--dry-run", action="store_true", help="price and plan only; start nothing")
    p.add_argument("--reuse", action="store_true", help="do not pay again for identical completed runs: take them")
    p.add_argument("--label", action="append", default=[], metavar="k=v", help=_h(_LABEL_HELP))
    p.add_argument("--workspace", metavar="ws_...", help=_h(_WORKSPACE_HELP))
    p.add_argument("--resume", metavar="SWEEP_ID", help="launch the variations of a sweep never started (spends)")
    p.add_argument("--retry-failed", metavar="SWEEP_ID", help="start again a sweep's failed variations that "
                   "can succeed, by FLORA's hint (spends); %%flora failures SWEEP_ID lists them")
    p.add_argument("--codes", type=_codes, metavar="A,B", help="with --retry-failed: retry the failures with "
                   "these error codes instead, whatever their hint")
    _add_yes(p)
    _add_output(p)
    return p


def _limit_parser() -> _Parser:
    p = _new("limit", "Set a spend limit kept in the ledger: every session and kernel using it stays within it "
                      "(a start that does not fit is refused before anything is sent).", (
        "%flora limit 5                                 (USD 5 in all, every technique)",
        "%flora limit 2 --period day --technique poster-studio",
        "%flora limit none --period month -o limits      (remove it; the limits left in a variable)",
    ))
    p.add_argument("usd", type=_limit_usd, metavar="USD", help="the limit in USD, or none to remove it")
    p.add_argument("--period", choices=("day", "month"), default=None,
                   help="count what was started this UTC day or month (default: everything ever started)")
    p.add_argument("--technique", metavar="T", help="only this technique (id or slug; default: all techniques)")
    _add_output(p)
    return p


def _simple(name: str, help_text: str, examples: tuple[str, ...],
            *args: tuple[tuple[str, ...], dict[str, Any]]) -> _Parser:
    p = _new(name, help_text, examples)
    for flags, kwargs in args:
        p.add_argument(*flags, **kwargs)
    _add_output(p)
    return p


# connect options that configure the built-in simulator: meaningless (a usage error) without --sim
SIM_ONLY: dict[str, tuple[str, Any, str]] = {
    "account": ("--account", _account, "the simulated account to use; each tutorial uses its own (NAME: "
                                       "letters, digits, - or _; default: default)"),
    "speed": ("--speed", float, "divide every simulated duration by this"),
    "seed": ("--seed", int, "seed of the simulator's random faults"),
    "error_rate": ("--error-rate", float, "share of requests answered 500"),
    "drop_rate": ("--drop-rate", float, "share of starts whose answer is dropped"),
    "latency": ("--latency", float, "seconds added to every request"),
    "rate_limit": ("--rate-limit", float, "requests per second per workspace"),
    "run_failure_rate": ("--run-failure-rate", float, "share of runs that fail"),
    "credits": ("--credits", float, "set the simulated account's USD balance (without it, it keeps its own)"),
    "max_concurrent_runs": ("--max-concurrent-runs", int, "runs at once per workspace"),
    "no_persist": ("--no-persist", None, "a throwaway simulated account (not kept for later kernels)"),
}
_METAVARS = {"account": "NAME", "speed": "S", "seed": "N", "latency": "SECONDS", "rate_limit": "PER_SECOND",
             "credits": "USD", "max_concurrent_runs": "N"}


def _connect_parser() -> _Parser:
    p = _new("connect", "(Re)configure the session; the current one is kept if the new one fails.", (
        "%flora connect --sim                        (the built-in simulator: offline, no money spent)",
        "%flora connect --sim --account tutorial-02  (a simulated account of its own)",
        "%flora connect --sim --speed 50 --seed 7 --credits 5 --no-persist",
        "%flora connect --sim --error-rate 0.1 --drop-rate 0.05 --latency 0.2 --rate-limit 5",
        "%flora connect --sim --run-failure-rate 0.2 --max-concurrent-runs 2",
        "%flora connect --workspace ws_team --budget 20 -o fl    (FLORA itself: set FLORA_API_KEY first)",
        "%flora connect --base-url https://app.flora.ai/api/v1",
        "%flora connect --sim --ledger postgresql://ana@db.studio.internal/flora   (a team's ledger)",
    ))
    p.add_argument("--sim", action="store_true", help="start the built-in simulator (its account is kept "
                   "in $FLORA_NB_HOME/sim, so a later kernel continues it)")
    for dest, (flag, kind, text) in SIM_ONLY.items():
        if kind is None:
            p.add_argument(flag, dest=dest, action="store_true", help=f"{text} (with --sim)")
        else:
            convert = kind if kind is _account else ranged(dest, kind)
            p.add_argument(flag, dest=dest, type=convert, default=None, metavar=_METAVARS.get(dest, "SHARE"),
                           help=f"{text} (with --sim)")
    p.add_argument("--base-url", metavar="URL", help="FLORA's API address (default: FLORA_BASE_URL, else "
                   "https://app.flora.ai/api/v1)")
    p.add_argument("--workspace", metavar="ws_...", help="the workspace runs go to (default: "
                   "FLORA_WORKSPACE_ID, else your only one)")
    p.add_argument("--budget", type=ranged("budget"), metavar="USD",
                   help="session budget: every start of the session must fit it")
    p.add_argument("--ledger", metavar="PATH|URL", help="where runs are recorded: a file, or a team's "
                   "postgresql://USER@HOST/DB (default: %%config FloraMagics.ledger, FLORA_NB_LEDGER, else "
                   "~/.flora_nb/ledger.sqlite); a password is best kept in PGPASSWORD or ~/.pgpass")
    _add_output(p)
    return p


_SWEEP_ID = {"nargs": "?", "metavar": "SWEEP_ID", "help": "any sweep of the ledger (default: the last one "
             "started here); %%flora sweeps lists them"}


def _runs_parser() -> _Parser:
    return _simple(
        "runs", "The runs of the ledger as a table (one row per run), oldest first.", (
            "%flora runs --last 5",
            "%flora runs --status failed,skipped --technique poster-studio",
            "%flora runs --sweep swp_... --columns status,input.prompt,charged_cost -o r",
            "%flora runs --user ana,ben --status completed",
        ),
        (("--sweep",), {"metavar": "SWEEP_ID", "help": _h("only this sweep's runs; %flora sweeps lists them")}),
        (("--status",), {"type": _statuses, "metavar": "S[,S]",
                         "help": f"only runs with these statuses: {', '.join(STATUSES)}"}),
        (("--technique",), {"metavar": "T", "help": "only this technique's runs (its slug, id or name)"}),
        (("--user",), {"metavar": "U[,U]", "help": "only runs these users started (a team ledger's `user` column)"}),
        (("--last",), {"type": ranged("last", int, Range(1, whole=True)), "metavar": "N",
                       "help": "only the last N runs"}),
        (("--columns",), {"metavar": "COL[,COL]", "help": "show only these columns (status, charged_cost, "
                          "input.prompt...)"}),
    )


def _parsers() -> dict[str, _Parser]:
    return {
        "status": _simple("status", "A short status: endpoint, workspace, runs tracked, spend, poller health.",
                          ("%flora", "%flora status -o card")),
        "connect": _connect_parser(),
        "workspaces": _simple("workspaces", "The workspaces your key can see.",
                              ("%flora workspaces", "%flora workspaces -o ws")),
        "techniques": _simple("techniques", "The technique catalog, or the techniques matching a query.",
                              ("%flora techniques", "%flora techniques poster -o found"),
                              (("query",), {"nargs": "*", "help": "words to look for in the techniques' names, "
                                            "slugs and descriptions (default: all)"})),
        "show": _simple("show", "A technique card (inputs, types, required, cost), or a run of the ledger.",
                        ("%flora show poster-studio", "%flora show run_... -o r"),
                        (("technique",), {"metavar": "TECH|RUN_ID", "help": "a technique's slug or id, or a "
                                          "run id of the ledger"})),
        "run": _run_parser(),
        "sweep": _sweep_parser(),
        "sweeps": _simple("sweeps", "The sweeps in the ledger: counts, spent, budget.",
                          ("%flora sweeps", "%flora sweeps -o all_sweeps")),
        "failures": _simple("failures", "A sweep's failed runs (default: the last one), grouped by FLORA's retry "
                            "hint; %flora sweep --retry-failed SWEEP_ID retries those that can succeed.",
                            ("%flora failures", "%flora failures swp_... -o failed"), (("sweep",), _SWEEP_ID)),
        "runs": _runs_parser(),
        "costs": _simple("costs", "What was spent, with a total row: runs, outcomes, charged, still to come, "
                         "per completed run (USD).", (
                             "%flora costs", "%flora costs --by technique_name,status",
                             "%flora costs --by input.style --detail -o c"),
                         (("--by",), {"default": "technique_name", "metavar": "COL[,COL]",
                                      "help": "group by these columns (default technique_name; also status, "
                                              "sweep_id, input.ID, label.KEY)"}),
                         (("--detail",), {"action": "store_true", "help": "every column (estimates, drift, "
                                          "mean run time), without the total row"})),
        "history": _simple(
            "history", "The runs FLORA itself has on record (every page, newest first).", (
                "%flora history", "%flora history --status failed --technique poster-studio -o h"),
            (("--status",), {"choices": SERVER_STATUSES, "metavar": "S",
                             "help": f"only runs FLORA reports as: {', '.join(SERVER_STATUSES)}"}),
            (("--technique",), {"metavar": "T", "help": "only this technique's runs (its slug or id)"}),
        ),
        "limit": _limit_parser(),
        "limits": _simple("limits", "Every spend limit of the ledger: limit, spent, held for runs whose charge is "
                          "not known yet, left (USD), pending runs.", ("%flora limits", "%flora limits -o l")),
        "form": _simple("form", "A form for a technique: fill in its inputs, see the price, start runs and sweeps.",
                        ("%flora form poster-studio", "%flora form poster-studio -o f"),
                        (("technique",), {"help": _h(_TECH_HELP)})),
        "wait": _simple("wait", "Block until a run or sweep (default: everything tracked) is done.",
                        ("%flora wait", "%flora wait swp_... --timeout 120", "%flora wait run_... -o r"),
                        (("target",), {"nargs": "?", "metavar": "ID", "help": "a run or sweep id (default: every "
                                       "run of this session still going)"}),
                        (("--timeout",), {"type": ranged("timeout"), "default": None, "metavar": "SECONDS",
                                          "help": "stop waiting after this long (the runs go on)"})),
        "stop": _simple("stop", "Stop launching sweeps (default: the last one; any sweep in the ledger); says "
                        "what was never started and what still runs on FLORA.",
                        ("%flora stop", "%flora stop swp_... swp_...", "%flora stop -o nothing"),
                        (("sweep",), {"nargs": "*", "metavar": "SWEEP_ID",
                                      "help": "sweeps of the ledger to stop (default: the last one started here)"})),
        "resume": _simple("resume", "Re-attach to runs the ledger has not seen finish.",
                          ("%flora resume", "%flora resume -o nothing")),
    }


COMMANDS = tuple(_parsers())
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HELP_WORDS = ("help", "-h", "--help")
_PAIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")
# $name and {expr} as IPython expands them, but into one value each; $$, {{ and }} are a literal
# $, { and } (markers too, so that an escaped brace is never read as an open one).
_EXPANSION = re.compile(r"\$\$|\{\{|\}\}|\$([A-Za-z_][A-Za-z0-9_]*)|\{([^{}\n]+)\}")
_MARK = re.compile("\ue000[0-9]+\ue001")
_OPENERS = {"[": "]", "(": ")", "{": "}"}
_CLOSERS = {"]": "[", ")": "(", "}": "{"}
# An option inside a value: after a space, a bracket or a comma, outside quotes (``prompt=--wait`` is text).
_FLAG_INSIDE = re.compile(r"(?:(?<=\s)|(?<=[\[(,]))(--[A-Za-z][\w-]*|-[oh])(?=$|[\s,\])}])")
_QUOTED = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", re.S)
_MAX_NESTING = 100
_SHOWN = 48  # characters of a token shown in an error


class Expansions(dict[str, Any]):
    """The values of the markers ``expand`` put in a line, and (``sources``) the text each replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}


def expand(line: str, namespace: dict[str, Any]) -> tuple[str, Expansions]:
    """Replace ``$name`` / ``{expr}`` by markers that survive splitting; return the markers' values.

    A marker is one token whatever its value holds (spaces, quotes, ``=``, newlines), and a
    value given whole (``prompt=$p``) stays the object itself: a list still varies in a sweep.
    What cannot be evaluated stays as it was written, as in IPython.
    """
    values = Expansions()

    def substitute(match: re.Match[str]) -> str:
        text, name, expr = match.group(0), match.group(1), match.group(2)
        if name is None and expr is None:
            value: Any = text[0]  # $$ -> $, {{ -> {, }} -> }
        else:
            try:
                value = namespace[name] if name else eval(expr, namespace)  # the user's own namespace, as IPython does
            except Exception:
                return text
        mark = f"\ue000{len(values)}\ue001"
        values[mark] = value
        values.sources[mark] = text
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


@dataclass(frozen=True)
class _Token:
    """One word of the line and the index of its first character (in the expanded line)."""

    text: str
    at: int


class _Misread(Exception):
    """The line cannot be read as written: what, where (an index in the expanded line), what to do."""

    def __init__(self, problem: str, at: int, hint: str, token_at: int | None = None, token_end: int | None = None):
        super().__init__(problem)
        self.problem, self.at, self.hint = problem, at, hint
        self.token_at = at if token_at is None else token_at
        self.token_end = token_end  # None: to the end of the line


_CLOSE_HINT = "Close it before the options, or quote text that holds brackets."
_QUOTE_HINT = "Close it; text with an apostrophe takes the other quotes: prompt=\"it's\"."
_STRAY_HINT = "Quote text that holds brackets: prompt=\"[draft] a fox\"."


def _split(line: str) -> list[_Token]:
    """Split on spaces outside quotes and brackets, keeping the quotes (so "5" stays text).

    The whole line is read first: an unclosed quote or bracket, or a closing bracket that closes
    nothing, is refused where it is (it would swallow the options after it). A ``#`` that begins a
    word outside quotes starts a comment, as in Python (``prompt=#f00`` is a value).
    """
    tokens: list[_Token] = []
    start: int | None = None
    quote, quote_at, escaped = "", 0, False
    opened: list[tuple[str, int]] = []
    for i, char in enumerate(line):
        if quote:
            escaped, quote = (False, quote) if escaped else (char == "\\", "" if char == quote else quote)
            continue
        if char.isspace() and not opened:
            if start is not None:
                tokens.append(_Token(line[start:i], start))
            start = None
            continue
        if start is None:
            if char == "#":
                break
            start = i
        if char in "'\"":
            quote, quote_at = char, i
        elif char in _OPENERS:
            opened.append((char, i))
        elif char in _CLOSERS:
            _close(opened, char, i, start, line)
    if quote:
        raise _Misread(f"a {quote} quote is not closed", quote_at, _QUOTE_HINT, start)
    if opened:
        raise _Misread(f"a {opened[0][0]} is not closed", opened[0][1], _CLOSE_HINT, start)
    return tokens + ([_Token(line[start:], start)] if start is not None else [])


def _close(opened: list[tuple[str, int]], char: str, at: int, start: int, line: str) -> None:
    end = next((j for j in range(at, len(line)) if line[j].isspace()), len(line))
    if not opened:
        raise _Misread(f"a {char} closes nothing", at, _STRAY_HINT, start, end)
    opener, _ = opened.pop()
    if _OPENERS[opener] != char:
        raise _Misread(f"a {char} stands where the {opener} before it needs a {_OPENERS[opener]}", at,
                       _STRAY_HINT, start, end)


def _closing(text: str) -> int:
    """The index of the bracket that closes ``text[0]``, or -1 when none does (or another kind does)."""
    opened: list[str] = []
    quote, escaped = "", False
    for i, char in enumerate(text):
        if quote:
            escaped, quote = (False, quote) if escaped else (char == "\\", "" if char == quote else quote)
        elif char in "'\"":
            quote = char
        elif char in _OPENERS:
            opened.append(char)
        elif char in _CLOSERS:
            if not opened or opened.pop() != _CLOSERS[char]:
                return -1
            if not opened:
                return i
    return -1


def _items(inner: str) -> list[tuple[str, int]]:
    """A list's inside split at its own commas (not those in quotes or nested brackets), with offsets."""
    items, start, depth, quote, escaped = [], 0, 0, "", False
    for i, char in enumerate(inner):
        if quote:
            escaped, quote = (False, quote) if escaped else (char == "\\", "" if char == quote else quote)
        elif char in "'\"":
            quote = char
        elif char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            items.append((inner[start:i], start))
            start = i + 1
    return items + [(inner[start:], start)]


def _literal(text: str) -> Any:
    """``ast.literal_eval`` of the text, or ``_Misread`` (as the class itself) when it is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, TypeError):
        return _Misread


def _read_value(raw: str, at: int, depth: int = 0) -> Any:
    """A value as written in the line: a Python literal, a list of bare words, or text.

    ``at`` is where ``raw`` starts in the line. A list is the whole value, its items are not empty,
    and no option hides inside it (``prompt=[a, b --dry-run]``): each is refused where it is.
    """
    if depth == 0:
        masked = _QUOTED.sub(lambda m: " " * len(m.group(0)), raw)
        flag = _FLAG_INSIDE.search(masked)
        if flag:
            raise _Misread(f"{flag.group(1)} is inside a value", at + flag.start(1),
                           "Close the value before the options, or quote text that holds it.", token_end=None)
    value = _literal(raw)
    if value is not _Misread:
        return value
    if not raw.startswith("["):
        return raw
    if depth >= _MAX_NESTING:
        raise RecursionError
    end = _closing(raw)
    if end < 0:  # only in a cell body: a line's brackets were all checked by _split
        raise _Misread("a [ is not closed", at, _CLOSE_HINT)
    if end != len(raw) - 1:
        raise _Misread("text follows the list's closing ]", at + end + 1,
                       "A list is the whole value: prompt=[a, b]. Quote text that holds brackets.")
    items = _items(raw[1:end]) if raw[1:end].strip() else []
    if len(items) > 1 and not items[-1][0].strip():
        items.pop()  # a trailing comma, as Python allows
    values = []
    for text, offset in items:
        item, lead = text.strip(), len(text) - len(text.lstrip())
        if not item:
            raise _Misread("a list has an empty item", at + 1 + offset,
                           "Remove the extra comma, or give empty text as \"\".")
        values.append(_read_value(item, at + 1 + offset + lead, depth + 1))
    return values


def parse_value(text: str) -> Any:
    """A Python literal when the text is one (numbers, quoted strings, lists), else the text (never refused)."""
    text = text.strip()
    try:
        return _read_value(text, 0, depth=1)  # depth 1: a cell's line may hold "--" as text
    except (_Misread, RecursionError):
        return text


def parse_pairs(pairs: list[str] | list[_Token], what: str = "input", expanded: dict[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` tokens into a dict; a token without ``=`` or a value of the wrong shape is refused."""
    expanded = expanded or {}
    sources: dict[str, str] = getattr(expanded, "sources", {})
    values: dict[str, Any] = {}
    for item in pairs:
        token = item if isinstance(item, _Token) else _Token(item, 0)
        key, sep, raw = token.text.partition("=")
        end = token.at + len(token.text)
        if not sep or not _KEY.match(key):
            raise _Misread(f"expected {what} as key=value, got {_shown(token.text, sources)!r}", token.at,
                           'Quote values with spaces: prompt="a red fox".', token_end=end)
        if key in values:
            raise _Misread(f"{what} {key!r} is given twice", token.at, "Give each once.", token_end=end)
        if raw in expanded:
            values[key] = expanded[raw]
            continue
        try:
            values[key] = _fill(_read_value(raw, token.at + len(key) + 1), expanded)
        except _Misread as misread:
            misread.token_at, misread.token_end = token.at, end
            raise
    return values


def _shown(text: str, sources: dict[str, Any]) -> str:
    """Text of the expanded line as it was typed (markers back to ``$name`` / ``{expr}``), shortened."""
    typed = _MARK.sub(lambda m: str(sources.get(m.group(0), m.group(0))), text)
    return typed if len(typed) <= _SHOWN else typed[:_SHOWN - 3] + "..."


def _column(line: str, at: int, sources: dict[str, str]) -> int:
    """The index ``at`` of the expanded line as an index of the line as typed."""
    return at + sum(len(sources.get(m.group(0), m.group(0))) - len(m.group(0)) for m in _MARK.finditer(line, 0, at))


def _refusal(name: str, misread: _Misread, line: str, sources: dict[str, str], prefix: int) -> UsageError:
    """One line: what is wrong, its column (counted from the % of %flora) and token, what to do."""
    column = prefix + _column(line, misread.at, sources) + 1
    shown = _shown(line[misread.token_at:misread.token_end], sources)
    where = f"column {column}: {shown}" if shown else f"column {column}"
    return UsageError(f"%flora{' ' + name if name else ''}: {misread.problem} ({where}); nothing was sent. {misread.hint}")


def parse(line: str, cell: str | None = None, expanded: dict[str, Any] | None = None) -> Command:
    """Parse a ``%flora`` line (and the ``%%flora`` cell body, if any) into a Command.

    ``expanded``: the values of the markers ``expand`` put in ``line``. The whole line is read
    before anything is decided; a mistake anywhere in it is a ``UsageError`` naming its column.
    """
    expanded = expanded or {}
    sources: dict[str, str] = getattr(expanded, "sources", {})
    prefix = len("%%flora " if cell is not None else "%flora ")
    first = line.split(maxsplit=1)[0] if line.split() else "status"
    name = first if first in COMMANDS else ""
    try:
        command = _parse(line, cell, expanded)
    except _Misread as misread:
        raise _refusal(name, misread, line, sources, prefix) from None
    except RecursionError:
        raise UsageError("%flora: a value is nested too deeply; pass such data from Python instead.") from None
    return command


def _parse(line: str, cell: str | None, expanded: dict[str, Any]) -> Command:
    tokens = _split(line)
    args = [t.text if _PAIR.match(t.text) else str(_fill(t.text, expanded)) for t in tokens]
    name = args[0] if args else "status"
    parsers = _parsers()
    if name in _HELP_WORDS:
        _help(parsers, args[1:])
    if name not in parsers:
        close = [c for c in COMMANDS if c.startswith(name[:2])] or list(COMMANDS)
        raise UsageError(f"%flora: unknown command {name!r}. Did you mean: {', '.join(close)}? See %flora help")
    parser = parsers[name]
    words = [_unquote_option(a) for a in args[1:]]
    options, extras = parser.read(words)
    if extras:
        raise _unexpected(parser, name, extras[0], tokens[1 + words.index(extras[0])])
    inputs = parse_pairs(_located(options.pairs, tokens[1:], words), expanded=expanded) \
        if getattr(options, "pairs", None) else {}
    if cell is not None and cell.strip():
        if name not in ("run", "sweep"):
            raise UsageError(f"%%flora {name} takes no cell body; only %%flora run and %%flora sweep do.")
        inputs = {**parse_cell_inputs(cell), **inputs}
    if name == "sweep":
        _check_sweep_target(options)
    labels = getattr(options, "label", []) or []
    options.labels = parse_pairs(_located(labels, tokens[1:], words), "label", expanded)
    return Command(name, options, inputs)


def _help(parsers: dict[str, _Parser], args: list[str]) -> NoReturn:
    """``%flora help``, ``%flora --help``: the whole help; ``%flora help run``: that command's."""
    if not args:
        raise HelpShown(HELP)
    if len(args) > 1 or args[0] not in parsers:
        raise UsageError(f"%flora help: give one command of {', '.join(COMMANDS)}; got {' '.join(args)}.")
    raise HelpShown(parsers[args[0]].format_help())


def _located(texts: list[str], tokens: list[_Token], words: list[str]) -> list[_Token]:
    """The tokens argparse gave back as ``texts``, in order (so an error can name their column)."""
    found, i = [], 0
    for text in texts:
        while i < len(words) and words[i] != text:
            i += 1
        found.append(tokens[i] if i < len(words) else _Token(text, 0))
        i += 1
    return found


def _unexpected(parser: _Parser, name: str, extra: str, token: _Token) -> _Misread:
    if not extra.startswith("-"):
        return _Misread(f"{extra!r} is not expected here", token.at, f"See %flora {name} -h",
                        token_end=token.at + len(token.text))
    close = difflib.get_close_matches(extra.split("=", 1)[0], parser.flags(), n=1, cutoff=0.6)
    hint = f"Did you mean {close[0]}? See %flora {name} -h" if close else f"See %flora {name} -h"
    return _Misread(f"unknown option {extra}", token.at, hint, token_end=token.at + len(token.text))


def _check_sweep_target(options: argparse.Namespace) -> None:
    targets = [t for t in (options.technique, options.resume, options.retry_failed) if t]
    if not targets:
        raise UsageError("%flora sweep: give a technique, or --resume / --retry-failed SWEEP_ID. See %flora sweep -h")
    if options.resume and options.retry_failed:
        raise UsageError("%flora sweep: --resume and --retry-failed are separate steps; run one, then the other.")
    if (options.resume or options.retry_failed) and (options.technique or options.pairs):
        raise UsageError("%flora sweep --resume/--retry-failed continues a recorded sweep: its plan is in the "
                         "ledger, so give only the SWEEP_ID (and --budget to change its budget).")
    if options.codes and not options.retry_failed:
        raise UsageError("%flora sweep: --codes chooses which failures --retry-failed SWEEP_ID starts again; "
                         "give both (%flora failures SWEEP_ID lists the codes).")


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
