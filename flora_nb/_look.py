"""The one look of every display: theme colours, the shared style sheet, and money and time in words.

Pure strings (no widgets, no IPython): the live panels, the gallery, the status card, the form and
the frames' formatted views all take their colours and their "$0.04" / "2 min 5 s" from here.
Colours are JupyterLab's CSS variables, so everything reads well in light and dark themes.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from ._states import CLOSED, COMPLETED, FAILED, SKIPPED, STARTING, UNSTARTED, WORKING

__all__ = [
    "COLOURS",
    "SEVERAL_WORKSPACES",
    "STYLE",
    "StatusCard",
    "bar_html",
    "card_html",
    "card_text",
    "charged_so_far",
    "closed",
    "colour",
    "connected_to",
    "doubt_html",
    "duration",
    "elapsed",
    "estimated_progress",
    "eta_text",
    "health_note",
    "in_progress",
    "phase",
    "run_cost",
    "run_line_html",
    "say",
    "status_rows",
    "sweep_line_html",
    "usd",
]

# Colours: JupyterLab's theme variables, with light-theme fallbacks for other frontends.
COLOURS = {
    "track": "var(--jp-layout-color3, #e0e0e0)",
    "live": "var(--jp-brand-color1, #1976d2)",
    "completed": "var(--jp-success-color1, #388e3c)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "skipped": "var(--jp-ui-font-color3, #9e9e9e)",
    "text": "var(--jp-ui-font-color1, #212121)",
    "muted": "var(--jp-ui-font-color2, #616161)",
    "border": "var(--jp-border-color2, #e0e0e0)",
    "star": "var(--jp-warn-color1, #f5a623)",
}

STYLE = f"""<style>
.flora-card {{ border: 1px solid {COLOURS['border']}; border-radius: 8px; padding: 8px 12px;
  background: var(--jp-layout-color1, #fff); color: {COLOURS['text']}; max-width: 760px; }}
.flora-line {{ display: flex; align-items: center; gap: 10px; flex-wrap: wrap;
  font-family: var(--jp-ui-font-family, sans-serif); font-size: var(--jp-ui-font-size1, 13px); }}
.flora-bar {{ width: 180px; height: 8px; border-radius: 4px; background: {COLOURS['track']}; overflow: hidden;
  display: flex; flex: none; }}
.flora-bar > div {{ height: 100%; transition: width .45s linear; }}
.flora-muted {{ color: {COLOURS['muted']}; font-size: var(--jp-ui-font-size0, 11px); }}
.flora-error {{ color: {COLOURS['failed']}; }}
.flora-ok {{ color: {COLOURS['completed']}; }}
.flora-strip {{ display: flex; flex-wrap: wrap; gap: 2px; margin-top: 6px; max-width: 640px; }}
.flora-strip > span {{ width: 9px; height: 9px; border-radius: 2px; background: {COLOURS['track']}; }}
.flora-strip > span[data-status=completed] {{ background: {COLOURS['completed']}; }}
.flora-strip > span[data-status=failed] {{ background: {COLOURS['failed']}; }}
.flora-strip > span[data-status=skipped] {{ background: {COLOURS['skipped']}; }}
.flora-strip > span[data-status=starting], .flora-strip > span[data-status=pending],
.flora-strip > span[data-status=running] {{ background: {COLOURS['live']}; }}
.flora-text {{ white-space: pre-wrap; font-family: var(--jp-content-font-family, sans-serif);
  font-size: var(--jp-content-font-size1, 13px); color: {COLOURS['text']}; max-width: 640px; }}
.flora-star button, button.flora-star {{ background: transparent !important; box-shadow: none !important;
  border: none !important; padding: 0 1px !important; font-size: 18px !important; min-width: 0; }}
.flora-more {{ font-size: var(--jp-ui-font-size0, 11px) !important; }}
.flora-card .widget-html-content, .flora-form .widget-html-content, .flora-gallery .widget-html-content {{
  line-height: 1.45; }}
.flora-status, .flora-sweep {{ border: 1px solid {COLOURS['border']}; border-radius: 8px; border-collapse: separate;
  padding: 4px 8px; color: {COLOURS['text']}; font-family: var(--jp-ui-font-family, sans-serif); }}
.flora-status th, .flora-sweep th {{ color: {COLOURS['muted']}; font-weight: 500; }}
.flora-inputs {{ color: {COLOURS['muted']}; font-size: var(--jp-ui-font-size1, 13px); margin-top: 2px;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 640px; }}
</style>"""



# ---------------------------------------------------------------- words and numbers


def estimated_progress(run: Any, now: float | None = None) -> float:
    """Progress to show between polls: the last seen value, or the share of the estimate elapsed.

    The poller looks at a run when it should be done (that is what keeps polling cheap), so
    between polls the bar moves on the clock, and the status text says the figure is an estimate.
    """
    if run.done:
        return 100.0 if run.status == COMPLETED else run.progress
    if run.status not in WORKING:
        return 0.0
    began = run.began_at
    estimate = run.estimated_seconds
    if not estimate or began is None:
        return run.progress
    elapsed = (time.time() if now is None else now) - began
    return max(run.progress, min(95.0, 100.0 * elapsed / estimate))


def usd(value: float | None) -> str:
    """Money as people write it: $0.04, $1.20, $1,250.00; $0.0035 for tiny amounts, $0 for nothing."""
    if value is None:
        return "cost unknown"
    if abs(value) < 1e-12:
        return "$0"
    return f"${value:.4f}" if abs(value) < 0.01 else f"${value:,.2f}"


def duration(seconds: float | None) -> str:
    """Time as people read it: 4.2 s, 38 s, 3 min 05 s, 1 h 03 min ('' when unknown)."""
    if seconds is None or not 0 <= seconds < 1e9:
        return ""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def elapsed(run: Any, now: float | None = None) -> float | None:
    """Seconds since the start was sent (live), or from creation to the end (done)."""
    row = run.snapshot
    began = row.created_at or row.intent_at
    if began is None or run.status in UNSTARTED:
        return None
    if run.done:
        end = row.completed_at or row.updated_at
        return None if end is None else max(0.0, end - began)
    return max(0.0, (time.time() if now is None else now) - began)


def phase(run: Any, shown: float) -> str:
    """What the run is doing, in words that agree with the bar (``shown`` is the bar's value)."""
    if run.unconfirmed:
        return "start not confirmed"
    if run.status == SKIPPED:
        return "not started"
    if run.status == STARTING:
        return "confirming start" if run.error_code else "starting"
    if run.status in WORKING:
        estimate = "~" if shown > run.progress + 0.5 else ""
        return f"in progress · {estimate}{shown:.0f}%"
    return str(run.status)


def run_cost(run: Any) -> str:
    """Estimated while live, the charge once known, $0 for skipped and refunded runs.

    FLORA reports a charge late: a finished run whose charge has not come yet says "charge pending"
    (with its estimate), never $0.
    """
    if run.status in UNSTARTED:
        return "$0" if run.status == SKIPPED else f"est. {usd(run.estimated_cost)}"
    if not run.done:
        return f"est. {usd(run.estimated_cost)}" if run.estimated_cost is not None else "cost unknown"
    if run.charged_cost is None:
        if run.status == FAILED or run.estimated_cost is None:
            return "charge pending"
        return f"charge pending (est. {usd(run.estimated_cost)})"
    if run.status == FAILED and run.charged_cost == 0:
        return "$0 (refunded)"
    return usd(run.charged_cost)


def charged_so_far(charged: float | None, pending: int = 0) -> str:
    """A sum of charges in words: "$0.08", "$0.08 + 2 pending", "2 charges pending"; never $0 for money to come."""
    if not pending:
        return usd(charged if charged is not None else 0.0)
    if not charged:
        return f"{pending} charge{'s' if pending != 1 else ''} pending"
    return f"{usd(charged)} + {pending} pending"


def health_note(session: Any) -> str:
    """One escaped HTML line when the poller cannot reach FLORA ("FLORA unreachable, retrying"), else ''."""
    health = getattr(session, "health", "ok")
    if health == "ok":
        return ""
    return f"<div class='flora-health' style='color:var(--jp-warn-color0, #b26b00)'>&#9888; {html.escape(health)}</div>"


def colour(status: str) -> str:
    return COLOURS.get(status, COLOURS[SKIPPED] if status in UNSTARTED else COLOURS["live"])


def bar_html(segments: Sequence[tuple[float, str]], value: float) -> str:
    """One bar: coloured segments (percent, colour) on the theme's track; aria says the value."""
    parts = "".join(f"<div style='width:{max(0.0, p):.2f}%;background:{c}'></div>" for p, c in segments if p > 0)
    return (f"<div class='flora-bar' role='progressbar' aria-valuemin='0' aria-valuemax='100' "
            f"aria-valuenow='{value:.0f}'>{parts}</div>")


def closed(obj: Any) -> bool:
    """Has the session behind this run or sweep been closed?"""
    return getattr(obj, "health", "ok") == CLOSED


def eta_text(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def say(text: str, error: bool = False) -> None:
    """One line for the user, from the user's own call (the one place flora_nb prints); ``error``: to stderr."""
    print(text, file=sys.stderr if error else sys.stdout)


DOUBT = ("&#9888; these outputs may come from another start of its group: the answers of several starts "
         "were lost together and FLORA's run history carries no inputs to tell their runs apart")


def doubt_html(run: Any) -> str:
    """The mark of a row whose run may carry another start's inputs (``Run.pairing_doubtful``), else ''."""
    if not getattr(run, "pairing_doubtful", False):
        return ""
    return f"<div class='flora-doubt' style='color:var(--jp-warn-color0, #b26b00)'>{DOUBT}</div>"


def card_html(rows: Sequence[tuple[str, str]], kind: str) -> str:
    """A static card (the session's status, a sweep's summary): one escaped table in the panels' style."""
    esc = html.escape
    body = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{esc(k)}</th>"
                   f"<td style='text-align:left'>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table class='{esc(kind)}'>{body}</table>{STYLE}"


# ---------------------------------------------------------------- the session's status card


def connected_to(endpoint: str, simulated: bool, short: bool = False) -> str:
    """Where a session's runs go, in words: the built-in simulator (which account), or FLORA at its URL."""
    if not simulated:
        return f"FLORA at {endpoint}"
    name = endpoint[len("sim://"):] if endpoint.startswith("sim://") else None
    account = "" if name in (None, "default") else f", account {name}"
    if name is None:
        account = ", a throwaway account"
    return f"the built-in simulator{account}" + ("" if short else " (offline, no money spent)")


def in_progress(count: int) -> str:
    """'none in progress', '1 in progress', '3 in progress'."""
    return "none in progress" if not count else f"{count} in progress"


def _workspace_words(st: Mapping[str, Any]) -> str:
    if st.get("workspace_id"):
        return str(st["workspace_id"])
    if st.get("closed"):
        return "not chosen (the session is closed)"
    problem = st.get("workspace_problem")
    if problem == SEVERAL_WORKSPACES:
        return ("not chosen yet: your key sees several workspaces; set FLORA_WORKSPACE_ID, "
                "or choose one when you connect")
    return f"not known yet ({problem})" if problem else "not chosen yet (the only one your key sees is used)"


def _updates_words(st: Mapping[str, Any]) -> str:
    if st.get("closed"):
        return "stopped (the session is closed)"
    if not (st.get("poller_running") and st.get("poller_alive")):
        return "stopped: connect again to restart them"
    health = st.get("health") or "ok"
    return "running in the background" if health == "ok" else f"running, but {health}"


def status_rows(st: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The status card's rows, in plain words, from ``Flora.status()``'s data."""
    simulated = bool(st.get("simulator"))
    rows = [("connected to", connected_to(str(st.get("endpoint")), simulated)),
            ("workspace", _workspace_words(st))]
    if st.get("simulator_shared"):  # another kernel serves this simulated account
        rows.append(("shared", " ".join(filter(None, ["with another kernel (its runs are in this account too).",
                                                      st.get("simulator_note")]))))
    if simulated and "credits_remaining" in st:  # a simulator's credit (FLORA itself does not tell a balance)
        credit = st["credits_remaining"]
        rows.append(("balance", "unlimited simulated credit" if credit is None else f"{usd(credit)} of simulated credit"))
    if st.get("budget_usd") is not None:
        rows.append(("budget", f"{usd(st['budget_usd'])} for this session"))
    runs = in_progress(int(st.get("tracked") or 0))
    waiting = int(st.get("unconfirmed_starts") or 0)
    if waiting:
        runs += f"; {waiting} start{'s' if waiting != 1 else ''} waiting for FLORA's answer"
    spent = charged_so_far(st.get("spent_usd"), int(st.get("pending_charges") or 0))
    if st.get("spent_usd") is None and st.get("closed"):
        spent, simulated = "not known (the session is closed)", False
    rows += [("runs", runs), ("spent", spent + (" of simulated money" if simulated else "")),
             ("updates", _updates_words(st))]
    if st.get("poller_last_error") and (st.get("health") or "ok") != "ok":
        rows.append(("last error", str(st["poller_last_error"])))
    return rows + [("ledger", _ledger_words(st))]


def _ledger_words(st: Mapping[str, Any]) -> str:
    """Where runs are recorded; a team's database says so, who you are in it, and trouble with the lease."""
    where = str(st.get("ledger"))
    if not st.get("ledger_shared"):
        return where
    words = f"{where} (a team ledger, shared by every kernel using it; you are {st.get('user')})"
    return f"{words}; {st['ledger_lease']}" if st.get("ledger_lease") else words


def card_text(rows: Sequence[tuple[str, str]]) -> str:
    """A card as aligned text (terminal IPython, logs)."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:>{width}}: {v}" for k, v in rows)


SEVERAL_WORKSPACES = "several"  # Flora.status()'s workspace_problem when the key sees several workspaces


class StatusCard(dict[str, Any]):
    """``Flora.status()``: the figures as a dict (raw numbers), shown as the status card in words.

    ``lookup(data)`` (optional) gives what only the card shows (the workspace when not known yet, a
    simulator's credit), called when the card is first shown: asking for the data sends no request.
    """

    def __init__(self, data: Mapping[str, Any], lookup: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None):
        super().__init__(data)
        self._lookup = lookup

    def rows(self) -> list[tuple[str, str]]:
        """The card's rows (looking up what only the card shows first, once)."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            self.update(lookup(self))
        return status_rows(self)

    def _repr_html_(self) -> str:
        return card_html(self.rows(), "flora-status")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(card_text(self.rows()))


# ---------------------------------------------------------------- one-line summaries


def _mark(status: str) -> str:
    """A status mark in its theme colour: a check, a cross, a dash, or a dot while live."""
    sign = {COMPLETED: "&#10003;", FAILED: "&#10007;", SKIPPED: "&#8211;"}.get(status, "&#9679;")
    return f"<span style='color:{colour(status)};font-weight:600'>{sign}</span>"


def run_line_html(run: Any, note: str = "") -> str:
    """A run in one escaped line: mark, name, what it is doing, time, cost, id (and ``note``, muted)."""
    esc = html.escape
    words = [run.technique_name or run.technique_id, phase(run, estimated_progress(run)),
             duration(elapsed(run)), run_cost(run)]
    line = " · ".join(esc(str(x)) for x in words if x)
    extra = f" · {esc(note)}" if note else ""
    error = (f"<div class='flora-error'>{esc(run.error_code or 'failed')}: {esc(run.error_message)}</div>"
             if run.error_message and run.status != COMPLETED else "")
    return (f"<div class='flora-line flora-summary'>{_mark(run.status if run.done else 'live')}<span>{line}</span>"
            f"<span class='flora-muted'>{esc(run.id or 'not started yet')}{extra}</span></div>{error}")


def sweep_line_html(sweep: Any, note: str = "") -> str:
    """A sweep in one escaped line: mark, name, "12 / 12 done", spent, failures, id (and ``note``, muted)."""
    esc = html.escape
    runs = sweep.runs
    counts = sweep.counts
    done = sum(1 for r in runs if r.done)
    words = [sweep.technique.name, f"{done} / {len(runs)} done", f"{charged_so_far(sweep.spent, sweep.pending_charges)} spent"]
    if counts.get(FAILED):
        words.append(f"{counts[FAILED]} failed")
    if counts.get(SKIPPED):
        words.append(f"{counts[SKIPPED]} not started")
    status = (FAILED if counts.get(FAILED) else COMPLETED) if sweep.done else "live"
    extra = f" · {esc(note)}" if note else ""
    return (f"<div class='flora-line flora-summary'>{_mark(status)}<span>{esc(' · '.join(words))}</span>"
            f"<span class='flora-muted'>{esc(sweep.sweep_id)}{extra}</span></div>")
