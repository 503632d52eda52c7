"""The one look of every display: theme colours, the shared style sheet, and money and time in words.

Pure strings (no widgets, no IPython): the live panels, the gallery, the status card, the form and
the frames' formatted views all take their colours and their "$0.04" / "2 min 5 s" from here.
Colours are JupyterLab's CSS variables, so everything reads well in light and dark themes.
"""

from __future__ import annotations

import html
import time
from typing import Any, Sequence

from ._states import CLOSED, COMPLETED, FAILED, SKIPPED, STARTING, UNSTARTED, WORKING

__all__ = [
    "COLOURS",
    "STYLE",
    "bar_html",
    "card_html",
    "charged_so_far",
    "closed",
    "colour",
    "doubt_html",
    "duration",
    "elapsed",
    "estimated_progress",
    "eta_text",
    "health_note",
    "phase",
    "run_cost",
    "say",
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
    """$0.04, $0.0035 for tiny amounts, $0 for nothing."""
    if value is None:
        return "cost unknown"
    if abs(value) < 1e-12:
        return "$0"
    return f"${value:.4f}" if abs(value) < 0.01 else f"${value:.2f}"


def duration(seconds: float | None) -> str:
    """4.2 s, 38 s, 2 min 5 s, 1 h 3 min."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


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


def say(text: str) -> None:
    """One line for the user, from the user's own call (the one place flora_nb prints)."""
    print(text)


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
