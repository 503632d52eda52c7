"""Turning what a poll saw (RunState) into ledger changes for one run."""

from __future__ import annotations

from typing import Any

from ._ledger import LedgerRow
from ._models import RunState
from ._states import FAILED, SERVER_STATUSES, TERMINAL

__all__ = ["RESTARTED", "RESTARTED_MESSAGE", "changes_for", "unknown_to_simulator"]

# A run the built-in simulator answers 404 for: a restart of the simulator lost it (its last changes were not
# saved, or it keeps nothing). It never ran there, so nothing was charged. A real FLORA's 404 is not this.
RESTARTED = "simulator_restarted"
RESTARTED_MESSAGE = ("The simulator was restarted and has no record of this run; nothing was charged. "
                     "Start it again if you still need it.")


def unknown_to_simulator(run_id: str) -> RunState:
    """What a poll of a run the (restarted) simulator does not know means: it ended, failed, uncharged."""
    return RunState(run_id=run_id, status=FAILED, charged_cost=0.0, error_code=RESTARTED, error_message=RESTARTED_MESSAGE)


def _status(row: LedgerRow, state: RunState) -> str:
    if state.status not in SERVER_STATUSES:
        return row.status  # an unknown status teaches us nothing
    if row.status in TERMINAL:
        return row.status  # terminal is final: a stale page or a conflicting poll never flips it
    return state.status


def _progress(row: LedgerRow, state: RunState, status: str) -> float:
    if status == "completed":
        return 100.0
    return max(row.progress, min(100.0, max(0.0, state.progress)))


def changes_for(row: LedgerRow, state: RunState) -> dict[str, Any]:
    """The columns that differ between ``row`` and what ``state`` says (empty if nothing new)."""
    status = _status(row, state)
    new: dict[str, Any] = {"status": status, "progress": _progress(row, state, status)}
    agrees = state.status == status  # a poll that contradicts a final status teaches nothing else
    for name in ("created_at", "started_at", "completed_at"):
        value = getattr(state, name)
        if value is not None:
            new[name] = value.timestamp()
    # A charge that is not a finite amount >= 0 never gets here: the model keeps it unknown (None).
    if status in TERMINAL and agrees and state.charged_cost is not None:
        new["charged_cost"] = state.charged_cost  # the final charge; the start's figure was a quote
    if status == "failed" and agrees:
        new["error_code"] = state.error_code or row.error_code or "unknown"
        new["error_message"] = state.error_message or row.error_message
    if state.outputs and agrees:
        new["outputs"] = [{"output_id": o.output_id, "type": o.type, "url": o.url} for o in state.outputs]
    if state.problems and agrees and status != "failed":  # said on the run: its outputs are not all as FLORA sent them
        new["error_message"] = "Some outputs FLORA sent were malformed: " + " ".join(state.problems)
    for name in ("poll_url", "project_id"):
        if getattr(row, name) is None and getattr(state, name):
            new[name] = getattr(state, name)
    if state.technique_name and not row.technique_name:
        new["technique_name"] = state.technique_name
    return {k: v for k, v in new.items() if getattr(row, k) != v}
