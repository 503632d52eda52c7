"""Building pandas DataFrames from ledger rows and API models (pandas is imported here only)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ._ledger import COLUMNS
from ._models import RunState, Technique

__all__ = [
    "RUN_COLUMNS",
    "STATUSES",
    "cost_summary",
    "history_frame",
    "models_frame",
    "runs_frame",
    "select_runs",
    "techniques_frame",
]

STATUSES = ["queued", "starting", "pending", "running", "completed", "failed", "skipped"]
_STRINGS = ["run_id", "sweep_id", "technique_id", "technique_name", "workspace_id", "project_id",
            "error_code", "error_message"]
_FLOATS = ["progress", "estimated_cost", "charged_cost", "estimated_seconds"]
_TIMES = ["created_at", "started_at", "completed_at"]
_DERIVED = ["queue_seconds", "run_seconds", "total_seconds"]
RUN_COLUMNS = (["run_id", "sweep_id", "technique_id", "technique_name", "workspace_id", "project_id",
                "status"] + _FLOATS + _TIMES + _DERIVED + ["error_code", "error_message", "output_urls",
                                                            "output_types"])


def runs_frame(raw_rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """The runs DataFrame (fixed schema, then ``input.*`` and ``label.*`` columns) from ledger rows."""
    raw = pd.DataFrame.from_records(list(raw_rows), columns=list(COLUMNS))
    frame = pd.DataFrame(index=raw.index)
    for name in ("run_id", "sweep_id", "technique_id", "technique_name", "workspace_id", "project_id"):
        frame[name] = raw[name].astype("string")
    frame["status"] = pd.Categorical(raw["status"], categories=STATUSES)
    for name in _FLOATS:
        frame[name] = pd.to_numeric(raw[name], errors="coerce").astype("float64")
    for name in _TIMES:
        frame[name] = pd.to_datetime(raw[name].astype("float64"), unit="s", utc=True).astype("datetime64[ns, UTC]")
    _add_durations(frame)
    for name in ("error_code", "error_message"):
        frame[name] = raw[name].astype("string")
    outputs = [json.loads(text) for text in raw["outputs"]]
    frame["output_urls"] = pd.Series([[o.get("url") for o in outs] for outs in outputs], index=raw.index, dtype=object)
    frame["output_types"] = pd.Series([[o.get("type") for o in outs] for outs in outputs], index=raw.index, dtype=object)
    extras = [_prefixed(raw["inputs"], "input."), _prefixed(raw["labels"], "label.")]
    frame = pd.concat([frame, *extras], axis=1)
    frame["local_id"] = raw["local_id"].astype("int64")
    frame["reused_from"] = raw["reused_from"].astype("string")
    frame["variation"] = pd.array(raw["variation"], dtype="Int64")
    return frame


def _add_durations(frame: pd.DataFrame) -> None:
    def seconds(later: str, earlier: str) -> pd.Series:
        return (frame[later] - frame[earlier]).dt.total_seconds().astype("float64")

    frame["queue_seconds"] = seconds("started_at", "created_at")
    frame["run_seconds"] = seconds("completed_at", "started_at")
    frame["total_seconds"] = seconds("completed_at", "created_at")


def _prefixed(texts: pd.Series, prefix: str) -> pd.DataFrame:
    records = [json.loads(t) for t in texts]
    part = pd.DataFrame.from_records(records, index=texts.index) if records else pd.DataFrame(index=texts.index)
    part.columns = [f"{prefix}{c}" for c in part.columns]
    return part


def select_runs(frame: pd.DataFrame, *, status: str | Sequence[str] | None = None, technique: str | None = None,
                sweep_id: str | None = None, since: Any = None) -> pd.DataFrame:
    """Filter a runs frame; ``technique`` matches the id or the name."""
    keep = pd.Series(True, index=frame.index)
    if status is not None:
        keep &= frame["status"].isin([status] if isinstance(status, str) else list(status))
    if technique is not None:
        keep &= (frame["technique_id"] == technique).fillna(False) | (frame["technique_name"] == technique).fillna(False)
    if sweep_id is not None:
        keep &= (frame["sweep_id"] == sweep_id).fillna(False)
    if since is not None:
        stamp = pd.Timestamp(since)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        keep &= (frame["created_at"] >= stamp).fillna(False)
    return frame[keep.astype(bool)].reset_index(drop=True)


def cost_summary(frame: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """Per group: runs, completed, failed, estimated and charged totals, unknown-cost runs."""
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise KeyError(f"cannot group costs by {missing}; columns include {sorted(frame.columns)[:12]}...")
    work = frame.assign(
        _completed=frame["status"].eq("completed"), _failed=frame["status"].eq("failed"),
        _unknown=frame["status"].isin(["completed", "failed"]) & frame["charged_cost"].isna(),
    )
    grouped = work.groupby(keys, dropna=False, observed=True)
    out = pd.DataFrame({
        "runs": grouped.size(),
        "completed": grouped["_completed"].sum(),
        "failed": grouped["_failed"].sum(),
        "unknown_cost_runs": grouped["_unknown"].sum(),
        "estimated_usd": grouped["estimated_cost"].sum(min_count=1),
        "charged_usd": grouped["charged_cost"].sum(min_count=1),
        "mean_run_seconds": grouped["run_seconds"].mean(),
    })
    out["cost_per_completed_usd"] = out["charged_usd"] / out["completed"].replace(0, np.nan)
    return out


def history_frame(states: Iterable[RunState]) -> pd.DataFrame:
    """Runs as FLORA reports them (``GET /technique-runs``) in the runs frame's core columns."""
    records = [_history_record(s) for s in states]
    frame = pd.DataFrame.from_records(records, columns=[
        "run_id", "technique_id", "technique_name", "workspace_id", "project_id", "status", "progress",
        "charged_cost", "created_at", "started_at", "completed_at", "error_code", "error_message",
        "output_urls", "output_types"])
    for name in ("run_id", "technique_id", "technique_name", "workspace_id", "project_id", "error_code", "error_message"):
        frame[name] = frame[name].astype("string")
    frame["status"] = pd.Categorical(frame["status"], categories=STATUSES)
    for name in ("progress", "charged_cost"):
        frame[name] = frame[name].astype("float64")
    for name in _TIMES:
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    _add_durations(frame)
    return frame


def _history_record(s: RunState) -> dict[str, Any]:
    return {
        "run_id": s.run_id, "technique_id": s.technique_id, "technique_name": s.technique_name,
        "workspace_id": s.workspace_id, "project_id": s.project_id, "status": s.status,
        "progress": s.progress, "charged_cost": np.nan if s.charged_cost is None else s.charged_cost,
        "created_at": s.created_at, "started_at": s.started_at, "completed_at": s.completed_at,
        "error_code": s.error_code, "error_message": s.error_message,
        "output_urls": [o.url for o in s.outputs], "output_types": [o.type for o in s.outputs],
    }


def techniques_frame(techniques: Sequence[Technique]) -> pd.DataFrame:
    """One row per technique: id, name, cost, inputs (required ones marked *) and outputs."""
    rows = [{
        "technique_id": t.technique_id, "slug": t.slug, "name": t.name, "run_cost": t.run_cost,
        "inputs": ", ".join(f"{i.id}{'*' if i.required else ''}:{i.type}" for i in t.inputs),
        "outputs": ", ".join(f"{o.id}:{o.type}" for o in t.outputs), "description": t.description,
    } for t in techniques]
    frame = pd.DataFrame(rows, columns=["technique_id", "slug", "name", "run_cost", "inputs", "outputs", "description"])
    frame["run_cost"] = frame["run_cost"].astype("float64")
    return frame


def models_frame(items: Sequence[Any], model: type) -> pd.DataFrame:
    """A DataFrame of dataclass models (without their ``extra`` dicts)."""
    names = [f.name for f in dataclasses.fields(model) if f.name != "extra"]
    return pd.DataFrame([{n: getattr(i, n) for n in names} for i in items], columns=names)
