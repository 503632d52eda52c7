"""Starter: what starts runs and sweeps on one engine, for the facade and the form alike.

It checks inputs, turns local files into assets, prices and queues sweeps (``_sweep_store``) and
keeps this session's sweep handles, so that ``fl.get_sweep(id)`` returns the very handle that is
launching. The form talks to a ``Starter``, never to the facade.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, overload

from ._budget import confirmation_needed
from ._errors import ConfirmationRequired, InputError
from ._ledger import canonical_json
from ._models import Asset, Technique, Workspace
from ._plan import plan_size
from ._run import Run
from ._sweep import Sweep
from ._sweep_store import load_sweep, start_sweep
from ._uploads import Uploader
from ._validation import check_inputs

if TYPE_CHECKING:
    import pandas as pd

    from ._engine import RunEngine
    from ._sweep_plan import SweepPlan

__all__ = ["Starter"]


class Starter:
    """Starts runs and sweeps of one engine (uploading local files first) and keeps its sweeps' handles."""

    def __init__(self, engine: RunEngine, confirm_above: float | None = 10.0):
        self.engine = engine
        self.confirm_above = confirm_above  # USD: a start whose worst case is above it asks first (None: never)
        self.uploads = Uploader(engine)  # local files to assets, cached by content in the ledger
        self._sweeps: dict[str, Sweep] = {}  # sweep id -> the handle of this session
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- what a form shows

    def technique(self, id_or_slug: str) -> Technique:
        """One technique by id or slug (cached for the session)."""
        return self.engine.catalog.technique(id_or_slug)

    def workspaces(self) -> list[Workspace]:
        """The workspaces the key can see."""
        return self.engine.catalog.workspaces()

    @property
    def workspace_id(self) -> str:
        """The default workspace runs are billed to."""
        return self.engine.catalog.workspace_id

    # ---------------------------------------------------------------- starting

    def run(self, technique: str, inputs: Mapping[str, Any] | None = None, workspace: str | None = None,
            labels: Mapping[str, Any] | None = None, confirm: bool = False, **more_inputs: Any) -> Run:
        """Check the inputs and the price, upload local files, then start one run (returns at once)."""
        tech = self.technique(technique)
        self.confirm_spend(tech, 1, confirm, budgeted=self.engine.budget is not None)
        values = {**dict(inputs or {}), **more_inputs}
        problems = check_inputs(tech, values)
        if problems:
            raise InputError(f"{tech.name} ({tech.technique_id}): " + "; ".join(problems))
        space = workspace or self.workspace_id
        [values] = self.uploads.resolve(tech, [values], space)  # local files become asset URLs
        return self.engine.start(tech, values, space, dict(labels or {}))

    @overload
    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: Literal[False] = False,
              workspace: str | None = None, confirm: bool = False) -> Sweep: ...

    @overload
    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, *, dry_run: Literal[True],
              workspace: str | None = None, confirm: bool = False) -> pd.DataFrame | SweepPlan: ...

    @overload
    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: bool = False,
              workspace: str | None = None, confirm: bool = False) -> Sweep | pd.DataFrame | SweepPlan: ...

    def sweep(self, technique: str, grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None, variations: Sequence[Mapping[str, Any]] | None = None,
              repeat: int = 1, max_concurrency: int = 4, budget: float | None = None,
              labels: Mapping[str, Any] | None = None, reuse: bool = False, dry_run: bool = False,
              workspace: str | None = None, confirm: bool = False) -> Sweep | pd.DataFrame | SweepPlan:
        """Price and validate every variation, then launch them (``dry_run``: the plan, as a DataFrame up to
        ``FRAME_UP_TO`` runs, else as a ``SweepPlan`` built on demand)."""
        if not dry_run:  # counted from the grid's shape: a huge sweep is refused before it is built
            self.confirm_spend(self.technique(technique), plan_size(grid, zip, variations, repeat), confirm,
                               budgeted=budget is not None or self.engine.budget is not None)
        made = start_sweep(self.engine, self.uploads, technique, grid=grid, zip=zip, fixed=fixed,
                           variations=variations, repeat=repeat, max_concurrency=max_concurrency, budget=budget,
                           labels=labels, reuse=reuse, dry_run=dry_run, workspace=workspace)
        if not isinstance(made, Sweep):
            return made  # the dry run's plan
        with self._lock:
            self._sweeps[made.sweep_id] = made
        return made.start()

    def completed_before(self, technique: str, inputs: Mapping[str, Any], workspace: str | None = None) -> list[Run]:
        """Completed, paid runs of this ledger with exactly these inputs (same technique and workspace),
        oldest first: starting them again pays twice for the same thing (``reuse=True`` takes one)."""
        tech = self.technique(technique)
        space = workspace or self.workspace_id
        done = self.engine.ledger.completed_inputs(self.engine.endpoint, space, tech.technique_id)
        found = (self.engine.find_run(run_id) for run_id in done.get(canonical_json(dict(inputs)), []))
        return [run for run in found if run is not None]

    def worst_price(self, tech: Technique) -> float | None:
        """The most one run of ``tech`` may cost (listed price, or the highest charge seen); None: unknown."""
        return self.engine.worst_price(tech)

    def confirm_spend(self, tech: Technique, runs: int, confirm: bool = False, budgeted: bool = False) -> None:
        """ConfirmationRequired (nothing sent) when ``runs`` runs of ``tech`` may cost more than ``confirm_above``.

        An unknown price under a budget is left to the budget rule, which refuses it in its own words.
        """
        price = self.worst_price(tech)
        if confirm or (price is None and budgeted):
            return
        why = confirmation_needed(tech.name or tech.technique_id, runs, price, self.confirm_above)
        if why:
            raise ConfirmationRequired(
                f"{why} Nothing was sent. To start it anyway pass confirm=True (in %flora: --yes), "
                "or change the threshold with confirm_above (None never asks).",
                price=None if price is None else runs * price, runs=runs, threshold=self.confirm_above)

    def get_sweep(self, sweep_id: str) -> Sweep:
        """This session's handle of a sweep, else one rebuilt from the ledger."""
        key = str(sweep_id).strip()
        with self._lock:
            found = self._sweeps.get(key)
        if found is not None:
            return found
        loaded = load_sweep(self.engine, key)
        with self._lock:
            return self._sweeps.setdefault(key, loaded)

    def upload(self, source: str | os.PathLike[str] | bytes, *, file_name: str | None = None,
               content_type: str | None = None, workspace: str | None = None, input_type: str | None = None) -> Asset:
        """Upload a local file (path or bytes) once per content; returns the ready asset."""
        return self.uploads.upload(source, file_name=file_name, content_type=content_type, workspace=workspace,
                                   input_type=input_type)
