"""The sweep gallery: outputs side by side in an ipywidgets grid laid out by the varied inputs.

Media is fetched through the kernel (``RunOutput.fetch``), so it shows on remote kernels such
as Binder where the browser cannot reach the output URLs. Cells fill in as runs finish.
"""

from __future__ import annotations

import base64
import concurrent.futures
import html
from typing import TYPE_CHECKING, Any, Sequence

import ipywidgets as w

from ._run import Run, RunOutput

if TYPE_CHECKING:
    from ._sweep import Sweep

__all__ = ["build_gallery", "output_widget"]

_MEDIA = {"imageUrl": (w.Image, "png"), "videoUrl": (w.Video, "mp4"), "audioUrl": (w.Audio, "wav")}
_CELL_WIDTH = "220px"


def output_widget(out: RunOutput) -> w.Widget:
    """One output as a widget: image, playable video or audio, text, or a document link."""
    if out.text is not None:
        return w.HTML(f"<div style='white-space:pre-wrap;max-height:160px;overflow:auto'>{html.escape(out.text)}</div>")
    data = out.fetch()
    if out.type in _MEDIA:
        cls, default_format = _MEDIA[out.type]
        fmt = out.extension.lstrip(".") or default_format
        options = {} if cls is w.Image else {"autoplay": False, "loop": False}
        return cls(value=data, format=fmt, layout=w.Layout(width="100%"), **options)
    href = f"data:{out.mime_type};base64,{base64.b64encode(data).decode()}"
    name = html.escape(f"{out.output_id}{out.extension}")
    return w.HTML(f"<a download='{name}' href='{html.escape(href, quote=True)}' target='_blank'>"
                  f"&#128196; {name}</a> ({len(data) / 1024:.1f} KB)")


def _caption(run: Run, varied: Sequence[str]) -> w.HTML:
    shown = {k: run.inputs.get(k) for k in varied} if varied else {"variation": run.variation}
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    cost = "cost unknown" if run.charged_cost is None else f"${run.charged_cost:.4f}"
    extra = " (reused)" if run.reused_from else ""
    status = "" if run.status == "completed" else f" &middot; {html.escape(run.status)}"
    if run.error_code:
        status += f" &middot; {html.escape(run.error_code)}"
    return w.HTML(f"<small>{html.escape(text)}<br>{html.escape(cost + extra)}{status}</small>")


def _fill(cell: w.VBox, run: Run, varied: Sequence[str]) -> None:
    if run.status == "completed":
        try:
            media = [output_widget(o) for o in run.outputs]
        except Exception as exc:  # one unreachable file must not break the whole gallery
            media = [w.HTML(f"<i>could not fetch output: {html.escape(str(exc))}</i>")]
    elif run.done:
        media = [w.HTML(f"<i>{html.escape(run.error_message or run.status)}</i>")]
    else:
        media = [w.HTML(f"<i>{html.escape(run.status)} {run.progress:.0f}%</i>")]
    cell.children = (*media, _caption(run, varied))


_FETCHER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="flora_nb-gallery")


def _cell(run: Run, varied: Sequence[str]) -> w.VBox:
    cell = w.VBox(layout=w.Layout(width=_CELL_WIDTH, border="1px solid #ddd", padding="4px"))
    _fill(cell, run, varied)
    if not run.done:
        state = {"done": False}

        def update(r: Run) -> None:
            if not state["done"]:
                state["done"] = r.done
                if r.done:  # downloads happen off the poller thread: a slow file never stalls tracking
                    _FETCHER.submit(_fill, cell, r, varied)
                else:
                    _fill(cell, r, varied)

        run.on_change(update)
    return cell


def _label(text: Any) -> w.HTML:
    return w.HTML(f"<b>{html.escape(str(text))}</b>", layout=w.Layout(width=_CELL_WIDTH))


def build_gallery(sweep: Sweep, columns: int | None = None) -> w.Widget:
    """A grid: rows by the first varied input, columns by the second; else wrapped cells."""
    varied = sweep.varied
    runs = sorted(sweep.runs, key=lambda r: (r.variation or 0, r.local_id))
    title = w.HTML(f"<b>{html.escape(sweep.technique.name)}</b> &middot; sweep {html.escape(sweep.sweep_id)}")
    if len(varied) >= 2:
        grid = _two_axes(runs, varied)
    else:
        n = columns or min(4, max(1, len(runs)))
        grid = w.GridBox([_cell(r, varied) for r in runs],
                         layout=w.Layout(grid_template_columns=f"repeat({n}, {_CELL_WIDTH})", grid_gap="6px"))
    return w.VBox([title, grid])


def _two_axes(runs: Sequence[Run], varied: Sequence[str]) -> w.Widget:
    row_key, col_key = varied[0], varied[1]
    row_values = _unique(r.inputs.get(row_key) for r in runs)
    col_values = _unique(r.inputs.get(col_key) for r in runs)
    header = [_label(f"{row_key} \\ {col_key}")] + [_label(v) for v in col_values]
    body: list[w.Widget] = []
    for rv in row_values:
        body.append(_label(rv))
        for cv in col_values:
            here = [r for r in runs if r.inputs.get(row_key) == rv and r.inputs.get(col_key) == cv]
            body.append(w.HBox([_cell(r, varied[2:] or varied) for r in here]) if here else w.HTML(""))
    template = f"auto repeat({len(col_values)}, auto)"
    return w.GridBox(header + body, layout=w.Layout(grid_template_columns=template, grid_gap="6px"))


def _unique(values: Any) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen
