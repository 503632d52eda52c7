"""SweepPlan: a large dry run's plan, each planned run built only when it is read.

``fl.sweep(..., dry_run=True)`` returns the plan as a DataFrame up to ``FRAME_UP_TO`` runs; past
that, a ``SweepPlan``: a sequence of ``PlannedRun`` computed from the grid on demand, with its
totals (runs, estimated cost, reusable runs), ``head()``, ``to_dataframe(start, stop)`` and whole
columns by name (``plan["reusable"].sum()``), so a million variations cost what their grid costs.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence, overload

from ._look import card_html, usd
from ._models import Technique
from ._plan import Plan, Reuse, Shape
from ._states import COMPLETED, QUEUED

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FRAME_UP_TO", "PlannedRun", "SweepPlan"]

FRAME_UP_TO = 100_000  # a dry run up to this many runs is a DataFrame (about 0.1 GB at most); past it, a SweepPlan
_CHUNK = 50_000  # runs per DataFrame built while a whole column is asked for


class PlannedRun(NamedTuple):
    """One planned run of a dry run (nothing has started)."""

    variation: int
    repeat: int
    inputs: dict[str, Any]
    status: str  # queued, or completed when reuse=True takes a completed run of the ledger
    estimated_cost: float | None  # USD; 0 when reused, None when the price is unknown
    reusable: bool  # a completed run of the ledger has exactly these inputs
    reused_from: str | None


class SweepPlan(Sequence[PlannedRun]):
    """A dry run's plan, built on demand: ``len()``, ``plan[i]``, iteration, ``head(n)``, ``to_dataframe()``.

    ``plan["reusable"]`` (any column of the dry-run DataFrame) is that whole column as a Series.
    """

    def __init__(self, shape: Shape, tech: Technique, workspace_id: str, reuse: Reuse, take: bool):
        self.shape = shape
        self.technique = tech
        self.workspace_id = workspace_id
        self.take = take  # reuse=True: a reusable run is taken (completed, $0) instead of started
        self.reuse = reuse

    # ---------------------------------------------------------------- totals

    @property
    def variations(self) -> int:
        return self.shape.variations

    @property
    def repeat(self) -> int:
        return self.shape.repeat

    @property
    def varied(self) -> list[str]:
        return list(self.shape.varied)

    @property
    def fixed(self) -> dict[str, Any]:
        return dict(self.shape.fixed)

    @property
    def reusable_runs(self) -> int:
        """Planned runs a completed run of the ledger could serve (``reuse=True`` takes them)."""
        return self.reuse.count

    @property
    def runs_to_pay(self) -> int:
        return len(self) - (self.reuse.count if self.take else 0)

    @property
    def estimated_total(self) -> float | None:
        """USD the runs to start would cost at the listed price (None: the price is unknown)."""
        price = self.technique.run_cost
        return None if price is None else self.runs_to_pay * price

    @property
    def columns(self) -> list[str]:
        """The columns of ``to_dataframe()`` (one input column per input any variation has)."""
        from ._frames import plan_frame

        probe = Plan([dict.fromkeys(self.shape.keys)], [0], [0], self.varied, self.fixed)
        return list(plan_frame(probe, self.technique, self.workspace_id, [None], [False]).columns)

    # ---------------------------------------------------------------- the sequence

    def __len__(self) -> int:
        return self.shape.runs

    @overload
    def __getitem__(self, index: int) -> PlannedRun: ...

    @overload
    def __getitem__(self, index: slice) -> list[PlannedRun]: ...

    @overload
    def __getitem__(self, index: str) -> pd.Series: ...

    def __getitem__(self, index: int | slice | str) -> PlannedRun | list[PlannedRun] | pd.Series:
        if isinstance(index, str):
            return self.column(index)
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return list(self._runs(start, stop))
            return [self._run(i) for i in range(start, stop, step)]
        try:
            number = operator.index(index)
        except TypeError:
            raise TypeError(f"a SweepPlan is indexed by run number, slice or column name, not "
                            f"{type(index).__name__}") from None
        number += len(self) if number < 0 else 0
        if not 0 <= number < len(self):
            raise IndexError(f"run {index} out of range for a plan of {len(self):,} runs")
        return self._run(number)

    def __iter__(self) -> Iterator[PlannedRun]:
        return self._runs(0, len(self))

    def _window(self, start: int, stop: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(variation, repeat, inputs) of runs ``start`` to ``stop``: each variation built once, a dict per run."""
        repeat, left = self.repeat, stop - start
        if left <= 0:
            return
        variation, first = divmod(start, repeat)
        for inputs in self.shape.walk(variation):
            for r in range(first, repeat):
                yield variation, r, inputs if r == repeat - 1 else dict(inputs)
                left -= 1
                if not left:
                    return
            variation, first = variation + 1, 0

    def _runs(self, start: int, stop: int) -> Iterator[PlannedRun]:
        for index, (variation, r, inputs) in enumerate(self._window(start, stop), start):
            yield self._made(index, variation, r, inputs)

    def _run(self, index: int) -> PlannedRun:
        variation, r = divmod(index, self.repeat)
        return self._made(index, variation, r, self.shape.inputs(variation))

    def _made(self, index: int, variation: int, r: int, inputs: dict[str, Any]) -> PlannedRun:
        found = self.reuse.taken(index) if self.reuse.hits else None
        taken = found if self.take else None
        cost = 0.0 if taken else self.technique.run_cost
        return PlannedRun(variation, r, inputs, COMPLETED if taken else QUEUED, cost, found is not None, taken)

    def _found(self, start: int, stop: int) -> list[str | None]:
        if not self.reuse.hits:
            return [None] * (stop - start)
        return [self.reuse.taken(i) for i in range(start, stop)]

    # ---------------------------------------------------------------- frames

    def head(self, n: int = 10) -> pd.DataFrame:
        """The first ``n`` planned runs as the dry-run DataFrame."""
        return self.to_dataframe(0, max(0, min(n, len(self))))

    def to_dataframe(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Planned runs ``start`` to ``stop`` (all by default: mind the size) as the dry-run DataFrame."""
        first, last, _ = slice(start, stop).indices(len(self))
        return self._frame(first, max(first, last), inputs=True)

    def _frame(self, start: int, stop: int, inputs: bool) -> pd.DataFrame:
        from ._frames import plan_frame

        if inputs:
            rows = list(self._window(start, stop))
            plan = Plan([i for _, _, i in rows], [v for v, _, _ in rows], [r for _, r, _ in rows], self.varied,
                        self.fixed)
        else:  # every column but the inputs
            numbers = range(start, stop)
            plan = Plan([{}] * len(numbers), [i // self.repeat for i in numbers], [i % self.repeat for i in numbers],
                        [], self.fixed)
        found = self._found(start, stop)
        frame = plan_frame(plan, self.technique, self.workspace_id, found if self.take else [None] * len(found),
                           [f is not None for f in found])
        frame.index = range(start, stop)
        return frame

    def column(self, name: str) -> pd.Series:
        """One column of the dry-run DataFrame, for every planned run (its other columns are not built)."""
        import pandas as pd

        if len(self) <= _CHUNK:
            return self.to_dataframe()[name]
        if name.startswith("input."):
            key, repeat = name[len("input."):], self.repeat
            if key not in self.shape.keys:
                raise KeyError(name)
            values = [inputs.get(key, math.nan) for inputs in self.shape for _ in range(repeat)]
            return pd.Series(values, name=name)  # inferred as the frame's from_records infers it
        return pd.concat([self._frame(at, min(at + _CHUNK, len(self)), inputs=False)[name]
                          for at in range(0, len(self), _CHUNK)])

    # ---------------------------------------------------------------- display

    def _summary_rows(self) -> list[tuple[str, str]]:
        tech = self.technique
        rows = [
            ("technique", f"{tech.name} ({tech.technique_id})"), ("workspace", self.workspace_id),
            ("runs", f"{len(self):,} ({self.variations:,} variations x {self.repeat})"),
            ("varied", ", ".join(self.varied) or "nothing (repeats)"),
            ("estimated cost", usd(self.estimated_total) + f" for {self.runs_to_pay:,} runs to start"),
        ]
        if self.reusable_runs:
            rows.append(("reusable", f"{self.reusable_runs:,} runs already completed with the same inputs"
                                     + (" (taken)" if self.take else "; reuse=True takes them")))
        rows.append(("started", "nothing (dry run); head(n) or to_dataframe(start, stop) shows runs"))
        return rows

    def __repr__(self) -> str:
        return "<SweepPlan " + "; ".join(f"{k}: {v}" for k, v in self._summary_rows()) + ">"

    def _repr_html_(self) -> str:
        return card_html(self._summary_rows(), "flora-sweep-plan") + self.head(5).to_html()
