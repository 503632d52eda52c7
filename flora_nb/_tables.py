"""How flora_nb's DataFrames read on screen: money as money, time as time, the columns that matter in view.

``FloraFrame`` is a pandas DataFrame whose data stays numbers (``fl.costs()["charged_usd"].sum()``
works) while its text and HTML displays show ``$1.20``, ``3 min 05 s`` and ``+4.0%``, chosen by the
column's name (``*_usd``, ``usd_*``, ``*_cost``, ``spent``... money; ``*_seconds`` time; ``*_pct`` a share), or
for a ``compare()`` table by what its cells hold. A frame too wide for ``display.max_columns`` shows
the columns that matter first and names those left out, instead of pandas' ``...`` in the middle.
Imported by ``_frames`` only, so ``import flora_nb`` stays light.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ._look import duration, usd

__all__ = ["MONEY", "PLAIN", "SECONDS", "FloraFrame", "display_cells", "shown_frame", "with_cells"]

# Long text (a technique's description, a prompt) wraps at a readable width instead of being squeezed
# into a sliver; a table wider than the output scrolls sideways.
_FRAME_STYLE = ("<style>table.flora-frame { width: max-content; max-width: none; }"
                " table.flora-frame td { max-width: 28em; }</style>")
MONEY, SECONDS, PLAIN = "usd", "seconds", "plain"  # PLAIN: cells shown as pandas shows them
# money columns whose name says nothing of USD
_MONEY_NAMES = frozenset({"spent", "budget", "limit", "held", "left"})
# columns that matter, in the order a too-wide frame shows them (input.* and label.* where "input." stands)
_FIRST = ("run_id", "sweep_id", "variation", "repeat", "technique_name", "technique", "status", "input.",
          "label.", "charged_cost", "estimated_cost", "run_seconds", "total_seconds", "rating", "error_code",
          "error_message", "created_at", "completed_at")
# the cost tables' per-row count of charges still to come, and their columns a pending charge changes
_PENDING = ("pending_charges", "unknown_cost_runs")
_PER_COMPLETED = ("usd_per_completed", "cost_per_completed_usd")
_TERMINAL_COLUMNS = 20  # in a terminal (max_columns 0): as many as pandas shows elsewhere, wrapped to the width
_ROWS_FORMATTED = 60  # at least this many rows at each end are formatted when pandas shows only some


class FloraFrame(pd.DataFrame):
    """A DataFrame shown with money as ``$1.20`` and seconds as ``3 min 05 s``; its data stay numbers.

    Slices, copies and arithmetic keep the display (pandas' ``_constructor``); a pickle holds a
    plain DataFrame, readable where flora_nb is not installed.
    """

    _metadata = ["flora_cells"]
    flora_cells: str | None = None  # what every value cell holds (a compare() table), else None

    @property
    def _constructor(self) -> Callable[..., FloraFrame]:
        return FloraFrame

    def __reduce_ex__(self, protocol: Any) -> Any:
        return pd.DataFrame, (pd.DataFrame(self),)

    def __repr__(self) -> str:
        from pandas.io.formats.format import get_dataframe_repr_params

        shown, hidden = shown_frame(self)
        params = get_dataframe_repr_params()
        params["max_cols"] = None  # the columns are chosen already: wrapped to the width, none hidden mid-table
        return shown.to_string(**params) + (f"\n{_hidden_note(hidden)}" if hidden else "")

    def _repr_html_(self) -> str | None:
        if not pd.get_option("display.notebook_repr_html"):
            return None
        shown, hidden = shown_frame(self)
        table = _FRAME_STYLE + shown.to_html(notebook=True, max_rows=_html_rows(len(shown)), max_cols=None,
                                             show_dimensions=pd.get_option("display.show_dimensions"),
                                             classes="flora-frame")
        if not hidden:
            return table
        return f"{table}<p style=\"margin-top:2px;opacity:.75\">{html.escape(_hidden_note(hidden))}</p>"


def with_cells(frame: pd.DataFrame, cells: str | None) -> FloraFrame:
    """``frame`` as a FloraFrame whose every value cell is money (``MONEY``), seconds (``SECONDS``) or as is."""
    out = frame if isinstance(frame, FloraFrame) else FloraFrame(frame)
    out.flora_cells = cells
    return out


def kind_of(name: Any, cells: str | None = None) -> str | None:
    """``MONEY``, ``SECONDS``, ``"pct"`` or None: how a column of this name reads."""
    if cells is not None:
        return None if cells == PLAIN else cells
    if not isinstance(name, str):
        return None
    if name.endswith(("_usd", "_cost")) or name.startswith("usd_") or name in _MONEY_NAMES:
        return MONEY
    if name.endswith("_seconds"):
        return SECONDS
    return "pct" if name.endswith("_pct") else None


def money(value: Any) -> str:
    """``$1.20``, ``-$0.02``, ``$0.0035``, ``$0.00``; ``-`` when unknown."""
    if value is None or pd.isna(value):
        return "-"
    number = float(value)
    if abs(number) < 1e-12:
        return "$0.00"  # as the other cells of its column, not the status card's "$0"
    return f"-{usd(-number)}" if number < 0 else usd(number)


def seconds(value: Any) -> str:
    """``4.2 s``, ``3 min 05 s``; ``-`` when unknown."""
    if value is None or pd.isna(value):
        return "-"
    return duration(float(value)) or f"{float(value):g} s"


def share(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):+.1f}%"


_FORMAT: dict[str, Callable[[Any], str]] = {MONEY: money, SECONDS: seconds, "pct": share}


def display_cells(frame: pd.DataFrame, rows: np.ndarray | None = None) -> pd.DataFrame:
    """A plain DataFrame of ``frame`` with its money, time and share columns as text (``rows``: only those).

    A cost table's charges still to come read ``$0.04 + 2 pending`` / ``pending``, never ``$0``.
    """
    cells = getattr(frame, "flora_cells", None)
    shown = pd.DataFrame(frame, copy=True)
    pending = _pending_counts(frame)
    for i, name in enumerate(frame.columns):
        kind = kind_of(name, cells)
        column = frame.iloc[:, i]
        if kind is None or not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            continue
        values = column.to_numpy()
        out = np.full(len(values), "", dtype=object)
        at = list(range(len(values))) if rows is None else rows.tolist()
        if pending is not None and kind == MONEY:
            out[at] = [_cost_cell(name, values[j], pending[j], frame, j) for j in at]
        else:
            out[at] = [_FORMAT[kind](values[j]) for j in at]
        shown.isetitem(i, out)
    return shown


def _pending_counts(frame: pd.DataFrame) -> np.ndarray | None:
    name = next((n for n in _PENDING if n in frame.columns), None)
    return None if name is None else frame[name].fillna(0).to_numpy(dtype="int64")


def _cost_cell(column: str, value: Any, pending: int, frame: pd.DataFrame, row: int) -> str:
    """A cost table's money: what is known, and how many charges are still to come."""
    known = "" if pd.isna(value) else money(value)
    if not pending or column not in ("charged_usd", *_PER_COMPLETED):
        return known or "-"
    if column == "charged_usd":
        return f"{known} + {pending} pending" if known else f"{pending} pending"
    completed = frame["completed"].iloc[row] if "completed" in frame.columns else 1
    return "pending" if completed else known or "-"


def shown_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Any]]:
    """What the display shows (text cells, the columns that matter when too wide) and the columns left out."""
    columns, hidden = _columns_shown(frame)
    part = frame if columns == list(frame.columns) else frame.iloc[:, [frame.columns.get_loc(c) for c in columns]]
    return display_cells(part, _rows_shown(len(frame))), hidden


def _columns_shown(frame: pd.DataFrame) -> tuple[list[Any], list[Any]]:
    """Every column, or (too many for ``display.max_columns``) the ones that matter first, up to it."""
    option = pd.get_option("display.max_columns")
    limit = None if option is None else int(option) or _TERMINAL_COLUMNS  # 0: a terminal, which pandas fits
    names = list(frame.columns)
    if limit is None or len(names) <= limit or not frame.columns.is_unique:
        return names, []
    first = [n for key in _FIRST for n in names if _matches(n, key)]
    ordered = list(dict.fromkeys(first + names))
    return ordered[:limit], ordered[limit:]


def _matches(name: Any, key: str) -> bool:
    return isinstance(name, str) and (name == key or (key.endswith(".") and name.startswith(key)))


def _rows_shown(n: int) -> np.ndarray | None:
    """The rows pandas may show (None: all): both ends, as many as ``display.max_rows`` shows."""
    limit = pd.get_option("display.max_rows")
    if not limit:
        return None
    keep = max(int(limit), int(pd.get_option("display.min_rows") or 0), _ROWS_FORMATTED)
    if n <= 2 * keep:
        return None
    return np.concatenate([np.arange(keep), np.arange(n - keep, n)])


def _html_rows(n: int) -> int | None:
    """The rows an HTML table shows, as pandas' own display: all, or ``min_rows`` of a longer frame."""
    limit = pd.get_option("display.max_rows")
    if not limit or n <= limit:
        return None
    return int(pd.get_option("display.min_rows") or limit)


def _hidden_note(hidden: Sequence[Any]) -> str:
    names = ", ".join(str(n) for n in hidden[:8]) + (", ..." if len(hidden) > 8 else "")
    word = "column" if len(hidden) == 1 else "columns"
    return (f"{len(hidden)} more {word} not shown: {names} "
            "(all are in the data; pd.set_option('display.max_columns', None) shows every one)")


def is_money_or_seconds(name: Any) -> str | None:
    """What a compared value holds, when it is money or seconds."""
    kind = kind_of(name)
    return kind if kind in (MONEY, SECONDS) else None

