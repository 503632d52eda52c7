"""Sweep: many variations of one technique, priced first, capped, launched in the background."""

from __future__ import annotations

import collections
import html
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ._errors import (
    APIError,
    BudgetExceededError,
    FloraError,
    FloraTimeout,
    InputError,
    InsufficientCreditsError,
)
from ._files import output_path
from ._ledger import canonical_json
from ._models import Technique
from ._plan import Plan
from ._run import Run

if TYPE_CHECKING:
    import pandas as pd

    from ._session import Flora

__all__ = ["Sweep", "start_sweep"]

log = logging.getLogger("flora_nb.sweep")


class Sweep:
    """A running sweep: counts, spend, ETA, ``wait()``, ``stop()`` and comparison helpers.

    FLORA has no way to cancel a run: ``stop()`` stops launching; runs already started keep
    being tracked (and charged) until they end.
    """

    def __init__(self, session: Flora, tech: Technique, plan: Plan, runs: list[Run], sweep_id: str,
                 max_concurrency: int, budget: float | None):
        self._session = session
        self.technique = tech
        self.plan = plan
        self.runs = runs
        self.sweep_id = sweep_id
        self.max_concurrency = max_concurrency
        self.budget = budget
        self.varied = list(plan.varied)
        self.stop_reason: str | None = None
        self.reusable = 0  # variations a ledger run could have served (see reuse=True)
        self.launch_error: str | None = None
        self._stop = threading.Event()
        self._slot = threading.Condition()
        self._thread = threading.Thread(target=self._launch_all, name=f"flora_nb-sweep-{sweep_id}", daemon=True)
        for run in runs:
            run.on_change(self._notify)

    def start(self) -> Sweep:
        self._thread.start()
        return self

    # ---------------------------------------------------------------- launching

    def _notify(self, _run: Run | None = None) -> None:
        with self._slot:
            self._slot.notify_all()

    def _in_flight(self) -> int:
        return sum(1 for r in self.runs if r.status in ("starting", "pending", "running") and not r.unconfirmed)

    def _committed(self) -> float:
        """Spend the launched runs may reach: the final charge when known, else the estimate."""
        total = 0.0
        for run in self.runs:
            if run.status in ("queued", "skipped") or run.reused_from:
                continue
            cost = run.charged_cost if run.charged_cost is not None else run.estimated_cost
            total += cost or 0.0
        return total

    def _wait_for_slot(self) -> bool:
        with self._slot:
            while self._in_flight() >= self.max_concurrency:
                if self._stop.is_set():
                    return False
                self._slot.wait(0.1)
        return not self._stop.is_set()

    def _launch_all(self) -> None:
        queued = [r for r in self.runs if r.status == "queued"]
        try:
            for index, run in enumerate(queued):
                if not self._wait_for_slot():
                    return self._skip(queued[index:], "stopped", "The sweep was stopped before this run started.")
                if self.budget is not None and self._committed() + (run.estimated_cost or 0.0) > self.budget + 1e-9:
                    return self._skip(queued[index:], "budget_exceeded",
                                      f"Starting it could take spending past the budget of ${self.budget:.2f}.")
                try:
                    self._session._launch(run, self.technique)
                except InsufficientCreditsError as exc:
                    return self._skip(queued[index + 1:], "insufficient_credits", exc.message)
                except APIError as exc:  # recorded as failed by _launch; the next variation may be fine
                    log.info("flora_nb sweep %s: variation %s rejected: %s", self.sweep_id, run.variation, exc)
        except Exception as exc:  # never leave runs queued forever without saying why
            self.launch_error = f"{type(exc).__name__}: {exc}"
            log.warning("flora_nb sweep %s stopped launching: %s", self.sweep_id, self.launch_error,
                        exc_info=not isinstance(exc, FloraError))
            self._skip([r for r in queued if r.status == "queued"], "launch_error", self.launch_error)

    def _skip(self, runs: Sequence[Run], code: str, message: str) -> None:
        self.stop_reason = self.stop_reason or code
        todo = [r for r in runs if r.status == "queued"]
        self._session._update_many(todo, status="skipped", error_code=code, error_message=message)

    # ---------------------------------------------------------------- control

    def stop(self) -> Sweep:
        """Stop launching; runs already started keep being tracked (FLORA cannot cancel a run)."""
        self._stop.set()
        self._notify()
        return self

    def wait(self, timeout: float | None = None) -> Sweep:
        """Block until every run is done or skipped; FloraTimeout at the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._thread.join(0.1)
            if not self._thread.is_alive() and all(r.done for r in self.runs):
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise FloraTimeout(f"sweep {self.sweep_id} is not done after {timeout} s: {self.counts}; "
                                   "it keeps running, call wait() again.")
            with self._slot:
                self._slot.wait(0.1)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() and all(r.done for r in self.runs)

    # ---------------------------------------------------------------- numbers

    @property
    def counts(self) -> dict[str, int]:
        """Runs by status (reused runs count as completed)."""
        return dict(collections.Counter(r.status for r in self.runs))

    @property
    def spent(self) -> float:
        """Final charges known so far (USD)."""
        return sum(r.charged_cost or 0.0 for r in self.runs)

    @property
    def estimated_remaining(self) -> float:
        """Estimated cost of runs not finished yet (USD)."""
        return sum(r.estimated_cost or 0.0 for r in self.runs if not r.done)

    @property
    def eta_seconds(self) -> float | None:
        """Rough seconds until done: waves of ``max_concurrency`` runs of the estimated duration."""
        durations = [r.estimated_seconds for r in self.runs if r.estimated_seconds is not None]
        if self.done:
            return 0.0
        if not durations:
            return None
        per_run = sum(durations) / len(durations)
        waiting = sum(1 for r in self.runs if r.status == "queued")
        return per_run * (1 + waiting / max(1, self.max_concurrency))

    # ---------------------------------------------------------------- frames

    def to_dataframe(self) -> pd.DataFrame:
        """The runs schema plus ``variation``, ``repeat`` and ``reused``, varied inputs first."""
        from ._frames import sweep_frame

        return sweep_frame(self._session.runs(sweep_id=self.sweep_id), self.varied)

    def compare(self, values: str = "charged_cost", index: str | Sequence[str] | None = None,
                columns: str | Sequence[str] | None = None, aggfunc: str | Callable[..., Any] | None = None) -> pd.DataFrame:
        """A pivot of ``values`` over the varied inputs (defaults chosen from what varies)."""
        from ._frames import compare_frame

        return compare_frame(self.to_dataframe(), self.varied, values, index, columns, aggfunc)

    def costs(self, by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Cost summary of this sweep, by the varied inputs unless ``by`` is given."""
        from ._frames import cost_summary

        frame = self.to_dataframe()
        keys = by or ([f"input.{k}" for k in self.varied] or "technique_name")
        return cost_summary(frame, keys)

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Save every output, named by variation and varied inputs; returns the paths written."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        repeats: collections.Counter[int] = collections.Counter()
        taken: set[Path] = set()
        for run in self.runs:
            number = run.variation or 0
            stem = f"v{number:03d}_r{repeats[number]}_{_slug(run.inputs, self.varied)}"
            repeats[number] += 1
            for out in run.outputs if run.status == "completed" else []:
                paths.append(out.save(output_path(folder, [stem, out.output_id], out.extension, taken)))
        return paths

    def gallery(self, columns: int | None = None) -> Any:
        """Outputs side by side in an ipywidgets grid laid out by the varied inputs."""
        from ._gallery import build_gallery

        return build_gallery(self, columns=columns)

    # ---------------------------------------------------------------- display

    def _summary_rows(self) -> list[tuple[str, str]]:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        eta = self.eta_seconds
        rows = [
            ("sweep", self.sweep_id), ("technique", f"{self.technique.name} ({self.technique.technique_id})"),
            ("varied", ", ".join(self.varied) or "nothing (repeats)"), ("runs", f"{len(self.runs)}: {counts}"),
            ("spent", f"${self.spent:.4f}"), ("estimated remaining", f"${self.estimated_remaining:.4f}"),
            ("ETA", "done" if self.done else ("unknown" if eta is None else f"~{eta:.0f} s")),
        ]
        if self.budget is not None:
            rows.append(("budget", f"${self.budget:.2f}"))
        if self.stop_reason:
            rows.append(("stopped launching", self.stop_reason))
        if self.reusable and not any(r.reused_from for r in self.runs):
            saving = self.reusable * (self.technique.run_cost or 0.0)
            rows.append(("could reuse", f"{self.reusable} runs already in the ledger; reuse=True would save ${saving:.2f}"))
        return rows

    def __repr__(self) -> str:
        return "<Sweep " + "; ".join(f"{k}: {v}" for k, v in self._summary_rows()) + ">"

    def _ipython_display_(self) -> None:
        from ._display import display_live

        display_live(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th><td>{esc(v)}</td></tr>"
                       for k, v in self._summary_rows())
        return f"<table>{body}</table>"


def _slug(inputs: dict[str, Any], varied: Sequence[str]) -> str:
    return "_".join(_slug_text(str(inputs.get(k, ""))) for k in varied) or "run"


def _slug_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


def start_sweep(session: Flora, technique: str, *, grid: Any, zip: Any, fixed: Any, variations: Any,
                repeat: int, max_concurrency: int, budget: float | None, labels: Any, reuse: bool,
                dry_run: bool, workspace: str | None) -> Any:
    """Plan, validate, price and (unless ``dry_run``) queue and launch a sweep."""
    from ._plan import expand, validate

    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise InputError(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}.")
    tech = session.technique(technique)
    plan = expand(grid=grid, zip=zip, variations=variations, fixed=fixed, repeat=repeat)
    validate(plan, tech)
    if budget is not None and tech.run_cost is None:
        raise InputError(f"{tech.name} does not publish its run_cost, so a budget cannot be enforced before "
                         "runs start; drop budget= or price it with a small sweep first.")
    cost = tech.run_cost or 0.0
    if budget is not None and not reuse and not dry_run:
        _check_budget(len(plan) * cost, budget, len(plan), tech)  # before any request at all
    workspace = workspace or session.workspace_id
    keys = [canonical_json(i) for i in plan.inputs]  # what "identical inputs" means for reuse
    reusable = _reusable(session, tech, workspace, keys)
    if dry_run:
        from ._frames import plan_frame

        return plan_frame(plan, tech, workspace, keys, reusable if reuse else {}, reusable)
    to_pay = sum(1 for key in keys if not (reuse and key in reusable))
    if budget is not None:
        _check_budget(to_pay * cost, budget, to_pay, tech)
    sweep_id = f"swp_{uuid.uuid4().hex[:12]}"
    planned = _planned_rows(session, plan, keys, sweep_id, dict(labels or {}), reusable if reuse else {})
    runs = session._queue(tech, workspace, planned)
    sweep = Sweep(session, tech, plan, runs, sweep_id, max_concurrency, budget)
    sweep.reusable = sum(1 for key in keys if key in reusable)
    return sweep.start()


def _check_budget(estimate: float, budget: float, runs: int, tech: Technique) -> None:
    if estimate > budget + 1e-9:
        raise BudgetExceededError(
            f"This sweep would cost about ${estimate:.2f} ({runs} runs x ${tech.run_cost or 0:.4f}), over the "
            f"budget of ${budget:.2f}. Nothing was started. Raise budget=, trim the grid, or use reuse=True.",
            estimate=estimate, budget=budget,
        )


def _reusable(session: Flora, tech: Technique, workspace: str, keys: Sequence[str]) -> dict[str, str]:
    done = session.ledger.completed_inputs(session.endpoint, workspace, tech.technique_id)
    if not done:
        return {}
    wanted = set(keys)
    return {k: v for k, v in done.items() if k in wanted}


def _planned_rows(session: Flora, plan: Plan, keys: Sequence[str], sweep_id: str, labels: dict[str, Any],
                  reuse: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for inputs, number, key in zip(plan.inputs, plan.variation, keys):
        row: dict[str, Any] = {"inputs": inputs, "labels": labels, "sweep_id": sweep_id, "variation": number}
        source = reuse.get(key)
        if source is not None:
            row.update(_reused_columns(session, source))
        rows.append(row)
    return rows


def _reused_columns(session: Flora, run_id: str) -> dict[str, Any]:
    """A completed run's results, credited to the sweep without paying again."""
    original = session.ledger.find_run(session.endpoint, run_id)
    assert original is not None
    return {
        "status": "completed", "reused_from": run_id, "progress": 100.0, "estimated_cost": 0.0,
        "charged_cost": 0.0, "outputs": original.outputs, "project_id": original.project_id,
        "created_at": original.created_at, "started_at": original.started_at,
        "completed_at": original.completed_at, "estimated_seconds": original.estimated_seconds,
    }
