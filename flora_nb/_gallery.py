"""The sweep gallery and ratings: outputs side by side, laid out by the varied inputs, with stars.

Media is fetched through the kernel (``RunOutput.fetch``), so it shows on remote kernels such
as Binder where the browser cannot reach the output URLs. Cells fill in as runs finish. Each
finished run gets a 1-5 star rating and a short note (``Run.rate``), kept in the local ledger.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Sequence

import ipywidgets as w

from ._display import STYLE, fetch_later, outputs_widgets, output_widget, run_cost, usd
from ._run import Run
from ._states import COMPLETED, SKIPPED, WORKING

if TYPE_CHECKING:
    from ._sweep import Sweep

__all__ = ["RatingWidget", "build_gallery", "output_widget", "rating_widget"]

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
            self.message.value = f"<span class='flora-error'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
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
    return w.HTML(f"<div class='flora-muted'>{html.escape(text)}<br><b>{html.escape(money + extra)}</b></div>")


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

    def update(r: Run) -> None:
        seen, charged = _word(r), r.charged_cost
        if seen != state["seen"]:  # redraw on what a cell shows, not on every poll
            state["seen"], state["charged"] = seen, charged
            if r.done:  # downloads happen off the poller thread: a slow file never stalls tracking
                fetch_later(_fill, cell, r, varied)
            else:
                _fill(cell, r, varied)
        elif r.done and charged != state["charged"] and cell.children:  # the final charge came later
            state["charged"] = charged
            cell.children = (*cell.children[:-1], _caption(r, varied))

    if not run.done or run.charged_cost is None:
        run.on_change(update)
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
