"""Live displays of runs and sweeps: one panel per run or sweep in a kernel, quiet text elsewhere.

A panel's live part is ONE HTML widget (its bar, status, elapsed time, cost and error), redrawn
through a trailing-edge throttle: at most ``MAX_UPDATES_PER_SECOND`` comm messages per panel,
however many runs change, and the last change is always drawn. Colours come from JupyterLab's
CSS variables, so the panels read well in light and dark themes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import heapq
import html
import itertools
import logging
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ._states import ACTIVE, CLOSED, COMPLETED, DONE, FAILED, SKIPPED, STARTING, UNSTARTED, WORKING

if TYPE_CHECKING:
    import ipywidgets as w

    from ._run import Run, RunOutput
    from ._sweep import Sweep

__all__ = [
    "MAX_UPDATES_PER_SECOND", "RunPanel", "SweepPanel", "Throttle", "display_live", "health_note", "output_widget",
    "panel_for", "say", "text_widget", "widgets_available",
]

log = logging.getLogger("flora_nb.display")

MAX_UPDATES_PER_SECOND = 10
_TICK_SECONDS = 0.5  # how often a live bar moves on the clock between polls
_EXCERPT_CHARS = 280
# A sweep panel draws one square per run; past these sizes the squares lose their hover text, then
# disappear (the bar and the counts remain), so that one redraw stays a small message.
_STRIP_TITLES = 400
_STRIP_MAX = 2000

Clock = Callable[[], float]
Schedule = Callable[[float, Callable[[], None]], None]

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
.flora-inputs {{ color: {COLOURS['muted']}; font-size: var(--jp-ui-font-size1, 13px); margin-top: 2px;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 640px; }}
</style>"""


def widgets_available() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook 7, VS Code) with ipywidgets importable."""
    shell = sys.modules.get("IPython") and _shell()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _shell() -> Any:
    from IPython import get_ipython

    return get_ipython()


# ---------------------------------------------------------------- throttle and timers


class _Timers:
    """One daemon thread that runs delayed calls: the trailing edge of every panel's throttle."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="flora_nb-display-timers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a broken display must not stop the others; never print from here
                log.warning("flora_nb: a display update failed", exc_info=True)


_TIMERS = _Timers()


class Throttle:
    """Calls ``draw`` at most ``rate`` times a second; a call inside the window is drawn at its end.

    Leading edge: the first change is drawn at once. Trailing edge: changes that arrive during
    the window are coalesced into one draw when it closes, which reads the newest state, so the
    last change is always drawn. Thread-safe; ``draw`` never runs twice at the same time.
    """

    def __init__(self, draw: Callable[[], None], rate: float = MAX_UPDATES_PER_SECOND, *,
                 clock: Clock = time.monotonic, schedule: Schedule = _TIMERS):
        self._draw = draw
        self._interval = 1.0 / rate
        self._clock = clock
        self._schedule = schedule
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._busy = False  # a draw is running or scheduled
        self._dirty = False
        self.draws = 0

    def __call__(self, *_: Any) -> None:
        with self._lock:
            self._dirty = True
            if self._busy:
                return  # the scheduled (or running) draw will pick this change up
            self._busy = True
            wait = self._last + self._interval - self._clock()
        if wait > 0:
            self._schedule(wait, self._fire)
        else:
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            self._dirty = False
            self._last = self._clock()
            self.draws += 1
        try:
            self._draw()
        finally:
            with self._lock:
                self._busy = False
                again = self._dirty
            if again:  # changed while drawing: draw once more, at the next window
                self()


class _Ticker:
    """One daemon thread that moves every live bar on the clock between polls."""

    def __init__(self) -> None:
        self._items: list[tuple[Callable[[], bool], Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, alive: Callable[[], bool], tick: Callable[[], None]) -> None:
        with self._lock:
            self._items.append((alive, tick))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="flora_nb-display", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK_SECONDS)
            with self._lock:
                self._items = [(a, t) for a, t in self._items if a()]
                live = list(self._items)
            for _, tick in live:
                try:
                    tick()
                except Exception:
                    log.warning("flora_nb: a live display tick failed", exc_info=True)


_TICKER = _Ticker()
_FETCHER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="flora_nb-fetch")
_FETCHING: set[concurrent.futures.Future[Any]] = set()  # downloads the displays have not finished
_FETCHING_LOCK = threading.Lock()
_PANELS: weakref.WeakSet[RunPanel] = weakref.WeakSet()


def fetch_later(work: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
    """Run a display's download off the poller thread (a slow file never stalls tracking)."""
    future = _FETCHER.submit(work, *args)
    with _FETCHING_LOCK:
        _FETCHING.add(future)
    future.add_done_callback(_fetched)
    return future


def _fetched(future: concurrent.futures.Future[Any]) -> None:
    with _FETCHING_LOCK:
        _FETCHING.discard(future)


def settle(timeout: float = 60.0) -> None:
    """Finish the downloads of the live displays, then draw every finished run's outputs again from
    this thread. A notebook executed top to bottom (nbclient) calls this last: a widget a download
    thread made between two cells belongs to no cell, so it would be missing from the saved file."""
    finished = [panel for panel in list(_PANELS) if panel.run.done and panel.run.status == COMPLETED]
    for panel in finished:
        panel._finish()  # a panel the poller has not told yet starts its download now
    deadline = time.monotonic() + timeout
    while True:
        with _FETCHING_LOCK:
            pending = list(_FETCHING)
        if not pending or time.monotonic() >= deadline:
            break
        concurrent.futures.wait(pending, max(0.0, deadline - time.monotonic()))
    for panel in finished:
        panel._show_outputs()  # cached files: no new download


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
    minutes, secs = divmod(int(round(seconds)), 60)
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
    """Estimated while live, the charge once known, $0 for skipped and refunded runs."""
    if run.status in UNSTARTED:
        return "$0" if run.status == SKIPPED else f"est. {usd(run.estimated_cost)}"
    if not run.done:
        return f"est. {usd(run.estimated_cost)}" if run.estimated_cost is not None else "cost unknown"
    if run.charged_cost is None:
        return "charge not final yet"
    if run.status == FAILED and run.charged_cost == 0:
        return "$0 (refunded)"
    return usd(run.charged_cost)


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


# ---------------------------------------------------------------- outputs


def text_widget(text: str, limit: int = _EXCERPT_CHARS) -> w.Widget:
    """Text shown in full when short; an excerpt cut at a word with a "more" / "less" toggle when long."""
    import ipywidgets as w

    full = f"<div class='flora-text'>{html.escape(text)}</div>"
    if len(text) <= limit:
        return w.HTML(full)
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    short = f"<div class='flora-text'>{html.escape(cut.rstrip())}&hellip;</div>"
    body = w.HTML(short)
    toggle = w.Button(description="more", tooltip="show the whole text",
                      layout=w.Layout(width="auto", height="24px", align_self="flex-start"))
    toggle.add_class("flora-more")

    def flip(_: Any) -> None:
        expanded = toggle.description == "more"
        body.value = full if expanded else short
        toggle.description = "less" if expanded else "more"

    toggle.on_click(flip)
    return w.VBox([body, toggle])


def output_widget(out: RunOutput, width: str = "100%") -> w.Widget:
    """One output as a widget: image, playable video or audio, text with "more", or a document link."""
    import ipywidgets as w

    if out.text is not None:
        return text_widget(out.text)
    data = out.fetch()
    media = {"imageUrl": (w.Image, "png"), "videoUrl": (w.Video, "mp4"), "audioUrl": (w.Audio, "wav")}
    if out.type in media:
        cls, default_format = media[out.type]
        fmt = out.extension.lstrip(".") or default_format
        options = {} if cls is w.Image else {"autoplay": False, "loop": False}
        layout = w.Layout(width=width, max_width="100%") if out.type != "audioUrl" else w.Layout(width=width)
        return cls(value=data, format=fmt, layout=layout, **options)
    href = f"data:{out.mime_type};base64,{base64.b64encode(data).decode()}"
    name = html.escape(f"{out.output_id}{out.extension}")
    return w.HTML(f"<a download='{name}' href='{html.escape(href, quote=True)}' target='_blank'>"
                  f"&#128196; {name}</a> <span class='flora-muted'>({len(data) / 1024:.1f} KB)</span>")


def outputs_widgets(run: Run, width: str = "100%") -> list[w.Widget]:
    """Every output of a finished run; a file that cannot be fetched says so instead."""
    import ipywidgets as w

    try:
        return [output_widget(o, width) for o in run.outputs]
    except Exception as exc:  # one unreachable file must not break the display
        return [w.HTML(f"<span class='flora-error'>could not fetch output: {html.escape(str(exc))}</span>")]


# ---------------------------------------------------------------- panels


class RunPanel:
    """A run's live panel: bar + status + elapsed + cost + error; then its outputs and a rating."""

    def __init__(self, run: Run, *, clock: Clock = time.monotonic, schedule: Schedule = _TIMERS,
                 wall: Callable[[], float] = time.time):
        import ipywidgets as w

        self.run = run
        self._wall = wall
        self.live = w.HTML(self.render())
        self.outputs = w.VBox(layout=w.Layout(margin="6px 0 0 0"))
        self.extra = w.VBox()
        self.widget = w.VBox([w.HTML(STYLE), self.live, self.outputs, self.extra])
        self.widget.add_class("flora-card")
        self._finished = False
        self._finishing = threading.Lock()
        self.fetched: concurrent.futures.Future[None] | None = None
        _PANELS.add(self)
        self.throttle = Throttle(self.draw, clock=clock, schedule=schedule)
        run.on_change(self._changed)
        if run.done:
            self._finish()
        else:
            _TICKER.add(lambda: not run.done and not _closed(run), self.throttle)

    def render(self) -> str:
        """The live part as HTML (bar, words, numbers), escaped."""
        run, esc = self.run, html.escape
        shown = estimated_progress(run, self._wall())
        status = "live" if not run.done else run.status
        bar = bar_html([(shown if run.status != SKIPPED else 0.0, colour(status))], shown)
        took = duration(elapsed(run, self._wall()))
        words = [run.technique_name or run.technique_id, phase(run, shown), took, run_cost(run)]
        line = " · ".join(esc(str(x)) for x in words if x)
        ident = esc(run.id or "not started yet")
        error = (f"<div class='flora-error'>{esc(run.error_code or '')}: {esc(run.error_message)}</div>"
                 if run.error_message and run.status != COMPLETED else "")
        inputs = " · ".join(f"{k}: {v}" for k, v in run.inputs.items())
        return (f"<div class='flora-line'>{bar}<span class='flora-status-{esc(run.status)}'>{line}</span>"
                f"<span class='flora-muted'>{ident}</span></div>"
                f"<div class='flora-inputs' title='{esc(inputs, quote=True)}'>{esc(inputs)}</div>{error}"
                f"{health_note(run)}")

    def draw(self) -> None:
        if not _closed(self.run):  # a closed session has nothing new to show (and no ledger to read)
            self.live.value = self.render()

    def _changed(self, run: Run) -> None:
        self.throttle()
        if run.done and not self._finished:
            self._finish()

    def _finish(self) -> None:
        """Outputs are fetched off the poller thread: a slow file never stalls tracking."""
        with self._finishing:  # once, whichever thread sees the run done first
            if self._finished:
                return
            self._finished = True
            if self.run.status == COMPLETED:
                self.fetched = fetch_later(self._show_outputs)

    def _show_outputs(self) -> None:
        from ._gallery import rating_widget

        self.outputs.children = tuple(outputs_widgets(self.run, width="256px"))
        self.extra.children = (rating_widget(self.run),)


class SweepPanel:
    """A sweep's live panel: one stacked bar, "12 / 30 done · $0.48 spent · ETA 1 min", one square per run."""

    def __init__(self, sweep: Sweep, *, clock: Clock = time.monotonic, schedule: Schedule = _TIMERS):
        import ipywidgets as w

        self.sweep = sweep
        self.live = w.HTML(self.render())
        self.widget = w.VBox([w.HTML(STYLE), self.live])
        self.widget.add_class("flora-card")
        self.throttle = Throttle(self.draw, clock=clock, schedule=schedule)
        for run in sweep.runs:
            run.on_change(self.throttle)
        if not sweep.done:
            _TICKER.add(lambda: not sweep.done and not _closed(sweep), self.throttle)

    def render(self) -> str:
        sweep, esc = self.sweep, html.escape
        runs = sweep.runs
        total = max(1, len(runs))
        counts = sweep.counts
        done = sum(1 for r in runs if r.done)
        segments = [(100.0 * counts.get(s, 0) / total, colour(s)) for s in DONE]
        live = sum(1 for r in runs if r.status in ACTIVE)
        segments.append((100.0 * live / total, "var(--jp-brand-color3, #90caf9)"))
        bar = bar_html(segments, 100.0 * done / total)
        head = f"{esc(sweep.technique.name)} · {self._counts_html(done, len(runs), counts)}"
        titled = len(runs) <= _STRIP_TITLES
        strip = "".join(self._square(r, titled) for r in runs) if len(runs) <= _STRIP_MAX else ""
        problems = self._problems()
        return (f"<div class='flora-line'>{bar}<span>{head}</span><span class='flora-muted'>{esc(sweep.sweep_id)}"
                f"</span></div><div class='flora-strip'>{strip}</div>{problems}{health_note(sweep)}")

    def _counts_html(self, done: int, total: int, counts: dict[str, int]) -> str:
        sweep = self.sweep
        all_ok = done == total and counts.get(COMPLETED, 0) == total
        parts = [f"<span class='{'flora-ok' if all_ok else ''}'>{done} / {total} done</span>",
                 f"{usd(sweep.spent)} spent"]
        if counts.get(FAILED):
            parts.append(f"<span class='flora-error'>{counts['failed']} failed</span>")
        if counts.get(SKIPPED):
            parts.append(f"{counts['skipped']} not started")
        eta = sweep.eta_seconds
        if done < total and eta is not None:
            parts.append("ETA " + _eta(eta))
        return " · ".join(parts)

    def _square(self, run: Run, titled: bool) -> str:
        """One run: its colour comes from its status (CSS above), its inputs and state on hover."""
        title = ""
        if titled:
            inputs = ", ".join(f"{k}={run.inputs.get(k)}" for k in self.sweep.varied)
            text = f"#{run.variation} {inputs}: {phase(run, estimated_progress(run))} · {run_cost(run)}"
            title = f" title='{html.escape(text, quote=True)}'"
        return f"<span data-run='{run.local_id}' data-status='{html.escape(run.status)}'{title}></span>"

    def _problems(self) -> str:
        """Each distinct failure message once, with how many runs it hit."""
        seen: dict[str, int] = {}
        for run in self.sweep.runs:
            if run.status == FAILED and run.error_message:
                key = f"{run.error_code or 'failed'}: {run.error_message}"
                seen[key] = seen.get(key, 0) + 1
        lines = "".join(f"<div>{n} × {html.escape(k)}</div>" for k, n in list(seen.items())[:5])
        return f"<div class='flora-error'>{lines}</div>" if lines else ""

    def draw(self) -> None:
        if not _closed(self.sweep):  # a closed session has nothing new to show (and no ledger to read)
            self.live.value = self.render()


def _closed(obj: Any) -> bool:
    """Has the session behind this run or sweep been closed?"""
    return getattr(obj, "health", "ok") == CLOSED


def _eta(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def _run_widget(run: Run) -> w.Widget:
    """A run's live panel widget (``children[1]`` is its live HTML line)."""
    return RunPanel(run).widget


def panel_for(obj: Any, **options: Any) -> RunPanel | SweepPanel:
    """The live panel of a Run or a Sweep."""
    from ._run import Run

    return RunPanel(obj, **options) if isinstance(obj, Run) else SweepPanel(obj, **options)


def display_live(obj: Any) -> None:
    """Show a Run or Sweep that keeps itself up to date (a widget), or one text line if no widgets."""
    from IPython.display import display

    if widgets_available():
        display(panel_for(obj).widget)
    else:
        # No widgets (terminal IPython): one line now, nothing per poll; repr(obj) tells more later.
        say(repr(obj))


def say(text: str) -> None:
    """One line for the user, from the user's own call (the one place flora_nb prints)."""
    print(text)
