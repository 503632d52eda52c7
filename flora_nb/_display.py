"""Every live display: run and sweep panels, the gallery, star ratings, output widgets, the status card.

They share one style sheet and one formatter for money and time (``_look``) and one throttle: a
panel's live part is ONE HTML widget redrawn through a trailing-edge ``Throttle``, at most
``MAX_UPDATES_PER_SECOND`` comm messages per panel however many runs change, and the last change is
always drawn; a gallery cell redraws through the same throttle. Media is fetched through the kernel
(``RunOutput.fetch``) off the poller thread, so it shows on remote kernels such as Binder.

Displays sit below the handles they show: they read a ``Run`` or ``Sweep`` by its public
properties and never import them (the handles call ``display_live`` and ``build_gallery``).
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

import ipywidgets as w

from ._look import (
    STYLE,
    bar_html,
    charged_so_far,
    closed,
    colour,
    doubt_html,
    duration,
    elapsed,
    estimated_progress,
    eta_text,
    health_note,
    phase,
    run_cost,
    run_line_html,
    say,
    sweep_line_html,
    usd,
)
from ._states import ACTIVE, COMPLETED, DONE, FAILED, SKIPPED, WORKING

if TYPE_CHECKING:
    from ._run import Run, RunOutput
    from ._sweep import Sweep

__all__ = [
    "MAX_UPDATES_PER_SECOND", "STYLE", "RatingWidget", "RunPanel", "SweepPanel", "Throttle", "build_gallery",
    "display_live", "fetch_later", "output_widget", "outputs_widgets", "panel_for", "rating_widget", "say", "settle",
    "summary_html", "summary_widget", "text_widget", "usd", "widgets_available",
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

def widgets_available() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook 7, VS Code) with ipywidgets importable."""
    shell = sys.modules.get("IPython") and _shell()
    return shell is not None and hasattr(shell, "kernel")


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
_SHOWN: weakref.WeakSet[Any] = weakref.WeakSet()  # runs and sweeps that have a live panel in this kernel


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
        panel.finish()  # a panel the poller has not told yet starts its download now
    deadline = time.monotonic() + timeout
    while True:
        with _FETCHING_LOCK:
            pending = list(_FETCHING)
        if not pending or time.monotonic() >= deadline:
            break
        concurrent.futures.wait(pending, max(0.0, deadline - time.monotonic()))
    for panel in finished:
        panel.show_outputs()  # cached files: no new download


# ---------------------------------------------------------------- outputs


def text_widget(text: str, limit: int = _EXCERPT_CHARS) -> w.Widget:
    """Text shown in full when short; an excerpt cut at a word with a "more" / "less" toggle when long."""
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
    try:
        return [output_widget(o, width) for o in run.outputs]
    except Exception as exc:  # one unreachable file must not break the display
        return [w.HTML(f"<span class='flora-error'>could not fetch output: {html.escape(str(exc))}</span>")]


# ---------------------------------------------------------------- panels


class RunPanel:
    """A run's live panel: bar + status + elapsed + cost + error; then its outputs and a rating."""

    def __init__(self, run: Run, *, clock: Clock = time.monotonic, schedule: Schedule = _TIMERS,
                 wall: Callable[[], float] = time.time):
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
        _SHOWN.add(run)
        self.throttle = Throttle(self.draw, clock=clock, schedule=schedule)
        run.on_change(self._changed)
        if run.done:
            self.finish()
        else:
            _TICKER.add(lambda: not run.done and not closed(run), self.throttle)

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
                f"{doubt_html(run)}{health_note(run)}")

    def draw(self) -> None:
        if not closed(self.run):  # a closed session has nothing new to show (and no ledger to read)
            self.live.value = self.render()

    def _changed(self, run: Run) -> None:
        self.throttle()
        if run.done and not self._finished:
            self.finish()

    def finish(self) -> None:
        """Outputs are fetched off the poller thread: a slow file never stalls tracking."""
        with self._finishing:  # once, whichever thread sees the run done first
            if self._finished:
                return
            self._finished = True
            if self.run.status == COMPLETED:
                self.fetched = fetch_later(self.show_outputs)

    def show_outputs(self) -> None:
        self.outputs.children = tuple(outputs_widgets(self.run, width="256px"))
        self.extra.children = (rating_widget(self.run),)


class SweepPanel:
    """A sweep's live panel: one stacked bar, "12 / 30 done · $0.48 spent · ETA 1 min", one square per run."""

    def __init__(self, sweep: Sweep, *, clock: Clock = time.monotonic, schedule: Schedule = _TIMERS):
        self.sweep = sweep
        self.live = w.HTML(self.render())
        self.stop_button = w.Button(description="Stop launching", icon="stop",
                                    tooltip="queued variations are not started; runs already on FLORA keep going",
                                    layout=w.Layout(width="auto", height="26px", display="none" if sweep.done else ""))
        self.stop_button.on_click(lambda _: self.stop())
        self.stopped = w.HTML()
        self.widget = w.VBox([w.HTML(STYLE), self.live, w.HBox([self.stop_button, self.stopped])])
        self.widget.add_class("flora-card")
        _SHOWN.add(sweep)
        self.throttle = Throttle(self.draw, clock=clock, schedule=schedule)
        for run in sweep.runs:
            run.on_change(self.throttle)
        if not sweep.done:
            _TICKER.add(lambda: not sweep.done and not closed(sweep), self.throttle)

    def stop(self) -> None:
        """The panel's Stop: no more launches; the line beside it says what that leaves (and costs)."""
        try:
            self.sweep.stop(quiet=True)
            text, kind = self.sweep.stop_summary(), "flora-muted"
        except Exception as exc:  # a closed session or a locked ledger: say so here, never in a traceback
            text, kind = f"Could not stop: {exc}", "flora-error"
        self.stop_button.disabled = True
        self.stop_button.layout.display = "none"
        self.stopped.value = f"<span class='{kind}'>{html.escape(text)}</span>"

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
                 f"{charged_so_far(sweep.spent, sweep.pending_charges)} spent"]
        if counts.get(FAILED):
            parts.append(f"<span class='flora-error'>{counts['failed']} failed</span>")
        if counts.get(SKIPPED):
            parts.append(f"{counts['skipped']} not started")
        eta = sweep.eta_seconds
        if done < total and eta is not None:
            parts.append("ETA " + eta_text(eta))
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
        if not closed(self.sweep):  # a closed session has nothing new to show (and no ledger to read)
            self.live.value = self.render()
            if self.sweep.done and not self.stop_button.disabled:
                self.stop_button.disabled = True  # nothing left to stop
                self.stop_button.layout.display = "none"


def _run_widget(run: Run) -> w.Widget:
    """A run's live panel widget (``children[1]`` is its live HTML line)."""
    return RunPanel(run).widget


def panel_for(obj: Any, **options: Any) -> RunPanel | SweepPanel:
    """The live panel of a Run or a Sweep."""
    # Duck-typed: a sweep has runs, a run does not (displays never import the handles they show).
    return SweepPanel(obj, **options) if hasattr(obj, "runs") else RunPanel(obj, **options)


def display_live(obj: Any) -> None:
    """Show a Run or Sweep that keeps itself up to date (a widget), or one text line if no widgets.

    A run or sweep that already has a live panel in this kernel is shown as one line instead:
    ``run.wait()`` returns the run and its cell displays it, but the panel above already shows it
    (and keeps showing it), so the wait's cell says how it ended rather than drawing a second panel.
    """
    from IPython.display import display

    if not widgets_available():
        # No widgets (terminal IPython): one line now, nothing per poll; repr(obj) tells more later.
        say(repr(obj))
    elif obj in _SHOWN:
        display(summary_widget(obj))
    else:
        display(panel_for(obj).widget)


def summary_html(obj: Any) -> str:
    """One line for a run or sweep whose live panel is shown elsewhere (escaped, with the style sheet)."""
    if hasattr(obj, "runs"):
        return STYLE + sweep_line_html(obj)
    return STYLE + run_line_html(obj)


def summary_widget(obj: Any) -> w.Widget:
    """That line as a widget: drawn once if done, else redrawn (throttled) until it is."""
    line = w.HTML(summary_html(obj))
    line.add_class("flora-summary")
    if not obj.done:
        def draw() -> None:
            if not closed(obj):
                line.value = summary_html(obj)

        throttle = Throttle(draw)
        for run in getattr(obj, "runs", [obj]):
            run.on_change(throttle)
    return line


# ---------------------------------------------------------------- gallery and ratings

_CELL_WIDTH = "220px"
_FULL, _EMPTY = "\u2605", "\u2606"


class RatingWidget(w.HBox):
    """Five stars and a short note for one run; every click and note goes to ``run.rate``."""

    def __init__(self, run: Run):
        self.run = run
        self.stars = [self._star(n) for n in range(1, 6)]
        self.note = w.Text(placeholder="note", continuous_update=False,
                           layout=w.Layout(flex="1 1 auto", min_width="150px", max_width="240px", height="26px"))
        self.note.value = getattr(run, "note", None) or ""
        self.message = w.HTML()
        # Wraps: the note sits beside the stars in a panel and under them in a narrow gallery cell.
        super().__init__([*self.stars, self.note, self.message],
                         layout=w.Layout(align_items="center", flex_flow="row wrap"))
        self.add_class("flora-rating")
        self.note.observe(self._noted, names="value")
        self._paint()
        run.on_change(lambda _: self._paint())

    def _star(self, n: int) -> w.Button:
        star = w.Button(description=_EMPTY, tooltip=f"{n} star{'s' if n > 1 else ''}",
                        layout=w.Layout(width="22px", height="26px", padding="0", flex="none"))
        star.add_class("flora-star")
        star.on_click(lambda _: self._rate(n))
        return star

    @property
    def value(self) -> int | None:
        rating = getattr(self.run, "rating", None)
        return None if rating is None else int(rating)

    def _rate(self, n: int) -> None:
        # Clicking the current rating again clears it, as in most star widgets.
        self._safely(lambda: self.run.rate(None if self.value == n else n, note=self.note.value or None))

    def _noted(self, change: dict[str, Any]) -> None:
        if self.value is None:
            self.message.value = "<span class='flora-muted'>click a star to keep the note</span>"
            return
        self._safely(lambda: self.run.rate(self.value, note=change["new"] or ""))

    def _safely(self, action: Any) -> None:
        """A bad note or a locked ledger shows here; it never escapes the click."""
        try:
            action()
            self.message.value = ""
        except Exception as exc:
            self.message.value = f"<span class='flora-error'>{html.escape(str(exc))}</span>"
        self._paint()

    def _paint(self) -> None:
        value = self.value or 0
        for n, star in enumerate(self.stars, start=1):
            star.description = _FULL if n <= value else _EMPTY
            star.style.text_color = "var(--jp-warn-color1, #f5a623)" if n <= value else "var(--jp-ui-font-color3, #9e9e9e)"


def rating_widget(run: Run) -> w.Widget:
    """The 1-5 star rating and note of one run (``run.rate`` underneath)."""
    return RatingWidget(run)


def _caption(run: Run, varied: Sequence[str]) -> w.HTML:
    shown = {k: run.inputs.get(k) for k in varied} if varied else {"variation": run.variation}
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    if run.status == SKIPPED:
        money = "not started · $0"
    elif run.status == COMPLETED:
        money = usd(run.charged_cost) if run.charged_cost is not None else "charge not final yet"
    else:
        money = f"{run.status} · {run_cost(run)}"
    extra = " (reused)" if run.reused_from else ""
    doubt = ("<br><span class='flora-doubt' style='color:var(--jp-warn-color0, #b26b00)' title='the answers of several "
             "starts were lost together; FLORA cannot say which run came from which'>&#9888; may be another "
             "variation&#39;s outputs</span>") if run.pairing_doubtful else ""
    return w.HTML(f"<div class='flora-muted'>{html.escape(text)}<br><b>{html.escape(money + extra)}</b>{doubt}</div>")


def _body(run: Run) -> list[w.Widget]:
    if run.status == COMPLETED:
        return [*outputs_widgets(run), rating_widget(run)]
    if run.status == SKIPPED:
        return [w.HTML(f"<i class='flora-muted'>{html.escape(run.error_message or 'not started')}</i>")]
    if run.done:
        message = f"{run.error_code or 'failed'}: {run.error_message or ''}"
        return [w.HTML(f"<i class='flora-error'>{html.escape(message)}</i>")]
    return [w.HTML(f"<i class='flora-muted'>{html.escape(_word(run))}</i>")]


def _word(run: Run) -> str:
    """A cell says what a run is doing; the panel above it shows how far (fewer redraws per cell)."""
    return "in progress" if run.status in WORKING else run.status


def _fill(cell: w.VBox, run: Run, varied: Sequence[str]) -> None:
    cell.children = (*_body(run), _caption(run, varied))


def _cell(run: Run, varied: Sequence[str]) -> w.VBox:
    cell = w.VBox(layout=w.Layout(width=_CELL_WIDTH, padding="6px"))
    cell.add_class("flora-card")
    _fill(cell, run, varied)
    state = {"seen": _word(run), "charged": run.charged_cost}

    def draw() -> None:
        seen, charged = _word(run), run.charged_cost
        if seen != state["seen"]:  # redraw on what a cell shows, not on every poll
            state["seen"], state["charged"] = seen, charged
            if run.done:  # downloads happen off the poller thread: a slow file never stalls tracking
                fetch_later(_fill, cell, run, varied)
            else:
                _fill(cell, run, varied)
        elif run.done and charged != state["charged"] and cell.children:  # the final charge came later
            state["charged"] = charged
            cell.children = (*cell.children[:-1], _caption(run, varied))

    if not run.done or run.charged_cost is None:
        run.on_change(Throttle(draw))  # the panels' throttle: the newest state, at most 10 draws a second
    return cell


def _label(text: Any, width: str | None = None) -> w.HTML:
    layout = w.Layout(width=width) if width else w.Layout()
    return w.HTML(f"<b>{html.escape(str(text))}</b>", layout=layout)


def build_gallery(sweep: Sweep, columns: int | None = None) -> w.Widget:
    """A grid: rows by the first varied input, columns by the second; else wrapped cells."""
    varied = sweep.varied
    runs = sorted(sweep.runs, key=lambda r: (r.variation or 0, r.local_id))
    title = w.HTML(f"<b>{html.escape(sweep.technique.name)}</b> &middot; "
                   f"<span class='flora-muted'>sweep {html.escape(sweep.sweep_id)}</span>")
    if len(varied) >= 2:
        grid = _two_axes(runs, varied)
    else:
        n = columns or min(4, max(1, len(runs)))
        grid = w.GridBox([_cell(r, varied) for r in runs],
                         layout=w.Layout(grid_template_columns=f"repeat({n}, {_CELL_WIDTH})", grid_gap="8px"))
    box = w.VBox([w.HTML(STYLE), title, grid])
    box.add_class("flora-gallery")
    return box


def _two_axes(runs: Sequence[Run], varied: Sequence[str]) -> w.Widget:
    row_key, col_key = varied[0], varied[1]
    row_values = _unique(r.inputs.get(row_key) for r in runs)
    col_values = _unique(r.inputs.get(col_key) for r in runs)
    header = [_label(f"{row_key} \\ {col_key}")] + [_label(v, _CELL_WIDTH) for v in col_values]
    body: list[w.Widget] = []
    for rv in row_values:
        body.append(_label(rv))
        for cv in col_values:
            here = [r for r in runs if r.inputs.get(row_key) == rv and r.inputs.get(col_key) == cv]
            body.append(w.HBox([_cell(r, varied[2:] or varied) for r in here]) if here else w.HTML(""))
    # The label column is as wide as its longest label (capped), not as wide as a cell.
    template = f"fit-content(16em) repeat({len(col_values)}, max-content)"
    return w.GridBox(header + body, layout=w.Layout(grid_template_columns=template, grid_gap="8px",
                                                    align_items="flex-start"))


def _unique(values: Any) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen
