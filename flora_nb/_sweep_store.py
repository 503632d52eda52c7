"""A sweep's life in the ledger: planning and recording a new sweep, rebuilding one in a later kernel."""

from __future__ import annotations

import collections
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

from ._budget import is_money
from ._errors import BudgetExceededError, InputError
from ._ledger import LedgerRow, canonical_json
from ._models import Technique
from ._plan import Plan, _varied
from ._states import COMPLETED, SKIPPED
from ._sweep import Sweep, check_price

if TYPE_CHECKING:
    from ._session import Flora

__all__ = ["load_sweep", "start_sweep"]


def start_sweep(session: Flora, technique: str, *, grid: Any, zip: Any, fixed: Any, variations: Any,
                repeat: int, max_concurrency: int, budget: float | None, labels: Any, reuse: bool,
                dry_run: bool, workspace: str | None) -> Any:
    """Plan, validate, price and (unless ``dry_run``) record, queue and launch a sweep."""
    from ._plan import expand, validate

    if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
        raise InputError(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}.")
    if budget is not None and not is_money(budget):
        raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no budget.")
    tech = session.technique(technique)
    plan = expand(grid=grid, zip=zip, variations=variations, fixed=fixed, repeat=repeat)
    validate(plan, tech)
    check_price(tech, budget, session)
    cost = tech.run_cost or 0.0
    if budget is not None and not reuse and not dry_run:
        _check_budget(len(plan) * cost, budget, len(plan), tech)  # before any request at all
    workspace = workspace or session.workspace_id
    # Each distinct local file is uploaded once, before anything is queued (a dry run sends nothing).
    plan.inputs = session.uploads.resolve(tech, plan.inputs, workspace, upload=not dry_run)
    taken = _reuse_per_run(session, tech, workspace, [canonical_json(i) for i in plan.inputs])
    if dry_run:
        from ._frames import plan_frame

        return plan_frame(plan, tech, workspace, taken if reuse else [None] * len(plan), [t is not None for t in taken])
    chosen = taken if reuse else [None] * len(plan)
    to_pay = sum(1 for t in chosen if t is None)
    if budget is not None:
        _check_budget(to_pay * cost, budget, to_pay, tech)
    if session.budget is not None:  # every start must fit the session budget: say so before any
        left = max(0.0, session.budget - session.exposure(owner=session.owner).committed)
        _check_budget(to_pay * cost, left, to_pay, tech, f"what is left of the session budget of "
                                                          f"${session.budget:.2f} (${left:.2f})")
    sweep_id = f"swp_{uuid.uuid4().hex[:12]}"
    labels = dict(labels or {})
    _record(session, sweep_id, tech, workspace, plan, budget=budget, max_concurrency=max_concurrency, labels=labels,
            reuse=reuse, spec={"grid": grid, "zip": zip, "variations": variations})
    runs = session.engine.queue(tech, workspace, _planned_rows(session, plan, sweep_id, labels, chosen))
    sweep = Sweep(session, tech, plan, runs, sweep_id, max_concurrency, budget, workspace)
    sweep.reusable = sum(1 for t in taken if t is not None)
    with session._lock:
        session._sweeps[sweep_id] = sweep
    return sweep.start()


def _check_budget(estimate: float, budget: float, runs: int, tech: Technique, what: str = "") -> None:
    if estimate > budget + 1e-9:
        raise BudgetExceededError(
            f"This sweep would cost about ${estimate:.2f} ({runs} runs x ${tech.run_cost or 0:.4f}), over "
            f"{what or f'the budget of ${budget:.2f}'}. Nothing was started. Raise budget=, trim the grid, "
            "or use reuse=True.",
            estimate=estimate, budget=budget,
        )


def _reuse_per_run(session: Flora, tech: Technique, workspace: str, keys: Sequence[str]) -> list[str | None]:
    """Per planned run, a completed ledger run with identical inputs it could take; each used once."""
    done = session.ledger.completed_inputs(session.endpoint, workspace, tech.technique_id)
    used: collections.Counter[str] = collections.Counter()
    taken: list[str | None] = []
    for key in keys:
        pool = done.get(key, [])
        if used[key] < len(pool):
            taken.append(pool[used[key]])
            used[key] += 1
        else:
            taken.append(None)
    return taken


def _record(session: Flora, sweep_id: str, tech: Technique, workspace: str, plan: Plan, *, budget: float | None,
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
    session.ledger.add_sweep(sweep_id=sweep_id, endpoint=session.endpoint, workspace_id=workspace,
                             technique_id=tech.technique_id, technique_name=tech.name, created_at=time.time(),
                             budget=budget, max_concurrency=max_concurrency, owner=session.owner, plan=record)


def _planned_rows(session: Flora, plan: Plan, sweep_id: str, labels: dict[str, Any],
                  reuse: Sequence[str | None]) -> list[dict[str, Any]]:
    rows = []
    for inputs, number, source in zip(plan.inputs, plan.variation, reuse):
        row: dict[str, Any] = {"inputs": inputs, "labels": labels, "sweep_id": sweep_id, "variation": number}
        if source is not None:
            row.update(_reused_columns(session, source))
        rows.append(row)
    return rows


def _reused_columns(session: Flora, run_id: str) -> dict[str, Any]:
    """A completed run's results, credited to the sweep without paying again."""
    original = session.ledger.find_run(session.endpoint, run_id)
    assert original is not None
    return {
        "status": COMPLETED, "reused_from": run_id, "progress": 100.0, "estimated_cost": 0.0,
        "charged_cost": 0.0, "outputs": original.outputs, "project_id": original.project_id,
        "created_at": original.created_at, "started_at": original.started_at,
        "completed_at": original.completed_at, "estimated_seconds": original.estimated_seconds,
    }


# ---------------------------------------------------------------------------- rebuilding


def load_sweep(session: Flora, sweep_id: str) -> Sweep:
    """This session's handle of the sweep, else one rebuilt from the ledger (plan, runs, budget)."""
    with session._lock:
        found = session._sweeps.get(sweep_id)
    if found is not None:
        return found
    record = session.ledger.get_sweep(session.endpoint, sweep_id)
    if record is None and not session.ledger.rows(session.endpoint, sweep_id=sweep_id):
        raise InputError(f"no sweep {sweep_id!r} in the ledger {session.ledger.path} for {session.endpoint}; "
                         "fl.sweeps() lists the sweeps it holds.")
    session.engine.skip_orphans()  # runs queued by a kernel that died will not start by themselves
    rows = current_rows(session.ledger.rows(session.endpoint, sweep_id=sweep_id))
    runs = [session.engine.adopt(row) for row in rows]
    plan_record = (record or {}).get("plan") or {}
    sweep = Sweep(session, _technique(plan_record, rows), _plan(plan_record, rows), runs, sweep_id,
                  int((record or {}).get("max_concurrency") or 4), (record or {}).get("budget"),
                  (record or {}).get("workspace_id") or (rows[0].workspace_id if rows else None))
    sweep.stop_reason = next((r.error_code for r in rows if r.status == SKIPPED), None)
    with session._lock:
        return session._sweeps.setdefault(sweep_id, sweep)


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
    return Plan(inputs, numbers, repeats, list(varied) if varied is not None else _varied(variations),
                dict(record.get("fixed") or {}))
