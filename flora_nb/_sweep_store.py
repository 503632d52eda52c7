"""A sweep's life in the ledger: planning and recording a new sweep, rebuilding one in a later kernel."""

from __future__ import annotations

import collections
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

from ._budget import is_money
from ._errors import BudgetExceededError, InputError
from ._ledger import LedgerRow
from ._look import usd
from ._models import Technique
from ._plan import Plan, reuse_of, shape_of, validate, varied_keys
from ._ranges import problem
from ._states import COMPLETED, SKIPPED
from ._sweep import Sweep, check_price
from ._sweep_plan import FRAME_UP_TO, SweepPlan
from ._uploads import MEDIA_TYPES

if TYPE_CHECKING:
    from ._engine import RunEngine
    from ._uploads import Uploader

__all__ = ["load_sweep", "start_sweep"]


def start_sweep(engine: RunEngine, uploads: Uploader, technique: str, *, grid: Any, zip: Any, fixed: Any, variations: Any,
                repeat: int, max_concurrency: int, budget: float | None, labels: Any, reuse: bool,
                dry_run: bool, workspace: str | None) -> Any:
    """Plan, validate, price and (unless ``dry_run``) record and queue a sweep (``sweep.start()`` launches it).

    Everything up to the refusals is read from the grid's shape, never from built variations: a dry
    run past ``FRAME_UP_TO`` runs returns a ``SweepPlan`` that builds each run only when it is read.
    """
    wrong = problem("max_concurrency", max_concurrency) or (None if isinstance(max_concurrency, int) else
                                                          f"max_concurrency must be a whole number, got {max_concurrency!r}")
    if wrong:
        raise InputError(f"{wrong}.")
    if budget is not None and not is_money(budget):
        raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no budget.")
    shape = shape_of(grid, zip, variations, fixed, repeat)  # counted (at most MAX_RUNS) and checked: nothing built
    tech = engine.catalog.technique(technique)
    check_price(tech, budget, engine.budget)
    if not reuse and not dry_run:
        _check_spend(engine, tech, shape.runs, budget)  # priced from the count, before anything is built or sent
    validate(shape, tech)
    workspace = workspace or engine.catalog.workspace_id
    # Each distinct local file is uploaded once, before anything is queued (a dry run sends nothing).
    media = {i.id for i in tech.inputs if i.type in MEDIA_TYPES}
    shape = shape.resolved(lambda parts: uploads.resolve(tech, parts, workspace, upload=not dry_run), media)
    done = engine.ledger.completed_inputs(engine.endpoint, workspace, tech.technique_id)
    planned = SweepPlan(shape, tech, workspace, reuse_of(shape, done), take=reuse)
    if dry_run:
        return planned if len(planned) > FRAME_UP_TO else planned.to_dataframe()
    if reuse:
        _check_spend(engine, tech, planned.runs_to_pay, budget)
    plan = shape.expand()
    taken = [planned.reuse.taken(i) for i in range(len(plan))]
    sweep_id = f"swp_{uuid.uuid4().hex[:12]}"
    labels = dict(labels or {})
    _record(engine, sweep_id, tech, workspace, plan, budget=budget, max_concurrency=max_concurrency, labels=labels,
            reuse=reuse, spec={"grid": grid, "zip": zip, "variations": variations})
    runs = engine.queue(tech, workspace, _planned_rows(engine, plan, sweep_id, labels, taken if reuse else
                                                       [None] * len(plan)))
    sweep = Sweep(engine, tech, plan, runs, sweep_id, max_concurrency, budget, workspace)
    sweep.reusable = planned.reusable_runs
    return sweep


def _check_spend(engine: RunEngine, tech: Technique, to_pay: int, budget: float | None) -> None:
    """BudgetExceededError when ``to_pay`` runs at the listed price do not fit the sweep's or the session's budget."""
    cost = tech.run_cost or 0.0
    if budget is not None:
        _check_budget(to_pay * cost, budget, to_pay, tech)
    if engine.budget is not None:  # every start must fit the session budget: say so before any
        left = max(0.0, engine.budget - engine.exposure(owner=engine.owner).committed)
        _check_budget(to_pay * cost, left, to_pay, tech, f"what is left of the session budget of "
                                                          f"${engine.budget:.2f} (${left:.2f})")


def _check_budget(estimate: float, budget: float, runs: int, tech: Technique, what: str = "") -> None:
    if estimate > budget + 1e-9:
        raise BudgetExceededError(
            f"This sweep would cost about {usd(estimate)} ({runs:,} runs x {usd(tech.run_cost or 0)}), over "
            f"{what or f'the budget of {usd(budget)}'}. Nothing was started. Raise budget=, trim the grid, "
            "or use reuse=True.",
            estimate=estimate, budget=budget,
        )


def _record(engine: RunEngine, sweep_id: str, tech: Technique, workspace: str, plan: Plan, *, budget: float | None,
            max_concurrency: int, labels: dict[str, Any], reuse: bool, spec: dict[str, Any]) -> None:
    """Keep the plan, so a later kernel rebuilds a Sweep that behaves like this one."""
    per_variation: dict[int, dict[str, Any]] = {}
    for inputs, number in zip(plan.inputs, plan.variation):
        per_variation.setdefault(number, inputs)
    record = {
        "technique": {"technique_id": tech.technique_id, "name": tech.name, "run_cost": tech.run_cost},
        "varied": plan.varied, "fixed": plan.fixed, "repeat": len(plan) // max(1, len(per_variation)),
        "variations": [per_variation[n] for n in sorted(per_variation)], "labels": labels, "reuse": reuse,
        "spec": spec,
    }
    engine.ledger.add_sweep(sweep_id=sweep_id, endpoint=engine.endpoint, workspace_id=workspace,
                             technique_id=tech.technique_id, technique_name=tech.name, created_at=time.time(),
                             budget=budget, max_concurrency=max_concurrency, owner=engine.owner, user_name=engine.user,
                             plan=record)


def _planned_rows(engine: RunEngine, plan: Plan, sweep_id: str, labels: dict[str, Any],
                  reuse: Sequence[str | None]) -> list[dict[str, Any]]:
    rows = []
    for inputs, number, source in zip(plan.inputs, plan.variation, reuse):
        row: dict[str, Any] = {"inputs": inputs, "labels": labels, "sweep_id": sweep_id, "variation": number}
        if source is not None:
            row.update(_reused_columns(engine, source))
        rows.append(row)
    return rows


def _reused_columns(engine: RunEngine, run_id: str) -> dict[str, Any]:
    """A completed run's results, credited to the sweep without paying again."""
    original = engine.ledger.find_run(engine.endpoint, run_id)
    assert original is not None
    return {
        "status": COMPLETED, "reused_from": run_id, "progress": 100.0, "estimated_cost": 0.0,
        "charged_cost": 0.0, "outputs": original.outputs, "project_id": original.project_id,
        "created_at": original.created_at, "started_at": original.started_at,
        "completed_at": original.completed_at, "estimated_seconds": original.estimated_seconds,
    }


# ---------------------------------------------------------------------------- rebuilding


def load_sweep(engine: RunEngine, sweep_id: str) -> Sweep:
    """A sweep rebuilt from the ledger (plan, runs, budget)."""
    record = engine.ledger.get_sweep(engine.endpoint, sweep_id)
    if record is None and not engine.ledger.rows(engine.endpoint, sweep_id=sweep_id):
        raise InputError(f"no sweep {sweep_id!r} in the ledger {engine.ledger.location} for {engine.endpoint}; "
                         "fl.sweeps() lists the sweeps it holds.")
    engine.skip_orphans()  # runs queued by a kernel that died will not start by themselves
    rows = current_rows(engine.ledger.rows(engine.endpoint, sweep_id=sweep_id))
    runs = [engine.adopt(row) for row in rows]
    plan_record = (record or {}).get("plan") or {}
    sweep = Sweep(engine, _technique(plan_record, rows), _plan(plan_record, rows), runs, sweep_id,
                  int((record or {}).get("max_concurrency") or 4), (record or {}).get("budget"),
                  (record or {}).get("workspace_id") or (rows[0].workspace_id if rows else None))
    sweep.stop_reason = next((r.error_code for r in rows if r.status == SKIPPED), None)
    return sweep


def current_rows(rows: Sequence[LedgerRow]) -> list[LedgerRow]:
    """A sweep's current attempts: failed runs tried again give way to their retry, in plan order."""
    by_id = {r.local_id: r for r in rows}
    retried = {r.retry_of for r in rows if r.retry_of is not None}

    def root(row: LedgerRow) -> int:
        while row.retry_of is not None and row.retry_of in by_id:
            row = by_id[row.retry_of]
        return row.local_id

    current = [r for r in rows if r.local_id not in retried]
    return sorted(current, key=lambda r: (r.variation if r.variation is not None else -1, root(r)))


def _technique(record: dict[str, Any], rows: Sequence[LedgerRow]) -> Technique:
    """The technique as the plan priced it (the catalog is asked again before anything is launched)."""
    known = record.get("technique") or {}
    first = rows[0] if rows else None
    cost = known.get("run_cost", first.estimated_cost if first else None)
    return Technique(technique_id=known.get("technique_id") or (first.technique_id if first else ""),
                     name=known.get("name") or (first.technique_name if first else "") or "",
                     run_cost=cost if is_money(cost) else None)


def _plan(record: dict[str, Any], rows: Sequence[LedgerRow]) -> Plan:
    inputs = [dict(r.inputs) for r in rows]
    numbers = [r.variation if r.variation is not None else 0 for r in rows]
    seen: collections.Counter[int] = collections.Counter()
    repeats = []
    for number in numbers:
        repeats.append(seen[number])
        seen[number] += 1
    variations = record.get("variations") or inputs
    varied = record.get("varied")
    return Plan(inputs, numbers, repeats, list(varied) if varied is not None else varied_keys(variations),
                dict(record.get("fixed") or {}))
