"""Live displays of runs and sweeps: ipywidgets in a kernel, quiet text elsewhere."""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any, Callable

__all__ = ["display_live", "widgets_available"]

_MIN_UPDATE_SECONDS = 0.25  # a widget is redrawn at most 4 times a second, whatever the poll rate


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


class _Throttled:
    """Calls ``update`` at most every ``_MIN_UPDATE_SECONDS``, and always for the final state."""

    def __init__(self, update: Callable[[], None], finished: Callable[[], bool]):
        self._update = update
        self._finished = finished
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, *_: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._finished() and now - self._last < _MIN_UPDATE_SECONDS:
                self._trail(self._last + _MIN_UPDATE_SECONDS - now)
                return
            self._last = now
        self._update()

    def _trail(self, delay: float) -> None:
        """A skipped change is drawn a moment later, so the last one (a health change) is never lost."""
        if getattr(self, "_timer", None) is None:
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        self._timer = None
        self()


def estimated_progress(run: Any, now: float | None = None) -> float:
    """Progress to show between polls: the last seen value, or the share of the estimate elapsed.

    The poller looks at a run when it should be done (that is what keeps polling cheap), so
    between polls the bar moves on the clock; the status text always shows what FLORA said.
    """
    if run.done:
        return 100.0 if run.status == "completed" else run.progress
    began = run._row.started_at or run._row.created_at or run._row.intent_at
    estimate = run.estimated_seconds
    if not estimate or began is None:
        return run.progress
    elapsed = (time.time() if now is None else now) - began
    return max(run.progress, min(95.0, 100.0 * elapsed / estimate))


class _Ticker:
    """One daemon thread that moves every live progress bar between polls."""

    def __init__(self) -> None:
        self._bars: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, run: Any, bar: Any) -> None:
        with self._lock:
            self._bars.append((run, bar))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="flora_nb-display", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            with self._lock:
                self._bars = [(r, b) for r, b in self._bars if not r.done]
                live = list(self._bars)
            for run, bar in live:
                bar.value = estimated_progress(run)


_TICKER = _Ticker()


def health_note(session: Any) -> str:
    """One escaped HTML line when the poller cannot reach FLORA ("FLORA unreachable, retrying"), else ''."""
    health = getattr(session, "health", "ok")
    if health == "ok":
        return ""
    return f"<div class='flora-health' style='color:var(--jp-warn-color0, #b26b00)'>&#9888; {html.escape(health)}</div>"


def _run_widget(run: Any) -> Any:
    import ipywidgets as w

    bar = w.FloatProgress(min=0, max=100, value=estimated_progress(run), layout=w.Layout(width="160px"))
    label = w.HTML()

    def update() -> None:
        bar.value = estimated_progress(run)
        bar.bar_style = {"completed": "success", "failed": "danger", "skipped": "warning"}.get(run.status, "")
        label.value = run._repr_html_() + health_note(run._session)

    update()
    run.on_change(_Throttled(update, lambda: run.done))
    if not run.done:
        _TICKER.add(run, bar)
    return w.HBox([bar, label])


def _sweep_widget(sweep: Any) -> Any:
    import ipywidgets as w

    done = sum(1 for r in sweep.runs if r.done)
    bar = w.IntProgress(min=0, max=max(1, len(sweep.runs)), value=done, layout=w.Layout(width="220px"))
    table = w.HTML()

    def update() -> None:
        bar.value = sum(1 for r in sweep.runs if r.done)
        table.value = sweep._repr_html_() + health_note(sweep._session)

    update()
    throttled = _Throttled(update, lambda: sweep.done)
    for run in sweep.runs:
        run.on_change(throttled)
    return w.VBox([bar, table])


def display_live(obj: Any) -> None:
    """Show a Run or Sweep that keeps itself up to date (a widget), or one text line if no widgets."""
    from IPython.display import display

    if widgets_available():
        from ._run import Run

        display(_run_widget(obj) if isinstance(obj, Run) else _sweep_widget(obj))
    else:
        # No widgets (terminal IPython): one line now, nothing per poll; repr(obj) tells more later.
        print(repr(obj))
