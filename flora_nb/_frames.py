"""Building pandas DataFrames from ledger rows and API models (pandas is imported here only)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ._errors import InputError
from ._ledger import COLUMNS, PACKED, PACKED_COLUMNS, Ledger
from ._models import RunState, Technique
from ._states import ACTIVE, COMPLETED, INPUTS_DIFFER, OPEN, QUEUED, TERMINAL
from ._states import STATUSES as _STATES
from ._tables import PLAIN, FloraFrame, display_cells, is_money_or_seconds, with_cells

__all__ = [
    "RUN_COLUMNS",
    "STATUSES",
    "check_statuses",
    "compare_frame",
    "cost_summary",
    "history_frame",
    "ledger_runs",
    "limits_frame",
    "models_frame",
    "plan_frame",
    "runs_frame",
    "select_runs",
    "spend_series",
    "sweep_frame",
    "sweeps_frame",
    "techniques_frame",
]

STATUSES = list(_STATES)  # the category order of the status column
_STRINGS = ["run_id", "sweep_id", "technique_id", "technique_name", "workspace_id", "project_id",
            "error_code", "error_message"]
_FLOATS = ["progress", "estimated_cost", "charged_cost", "estimated_seconds"]
_TIMES = ["created_at", "started_at", "completed_at"]
_DERIVED = ["queue_seconds", "run_seconds", "total_seconds"]
# The ledger columns runs_frame reads (the others, e.g. idempotency keys and poll URLs, it never shows).
FRAME_COLUMNS = tuple(c for c in COLUMNS if c not in ("endpoint", "idempotency_key", "intent_at", "poll_url",
                                                       "updated_at", "owner", "retry_of", "window_low",
                                                       "window_high", *PACKED_COLUMNS)) + (PACKED,)
RUN_COLUMNS = (["run_id", "sweep_id", "technique_id", "technique_name", "workspace_id", "project_id",
                "status"] + _FLOATS + _TIMES + _DERIVED + ["error_code", "error_message", "output_urls",
                                                            "output_types", "rating", "note", "rated_by",
                                                            "user", "host"])


def runs_frame(raw_rows: Iterable[Sequence[Any]], columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """The runs DataFrame (fixed schema, then ``input.*`` and ``label.*`` columns) from ledger rows.

    ``columns`` names the fields of each row (``FRAME_COLUMNS`` are all it reads: select only those).
    """
    with _gc_paused():
        return _runs_frame(raw_rows, columns)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while building: the frame's 100,000s of fresh (acyclic) objects made it scan half the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _runs_frame(raw_rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    rows = raw_rows if isinstance(raw_rows, list) else list(raw_rows)
    n = len(rows)
    # Column by column (one transposition of the fetched rows), every column built by numpy or pandas
    # in C from its values, all into one DataFrame at the end: no per-row Python work but the JSON's.
    raw: dict[str, Sequence[Any]] = dict(zip(columns, zip(*rows))) if n else {c: () for c in columns}
    text = _packed(raw[PACKED]) if PACKED in raw else {c: _text_column(c, raw[c]) for c in PACKED_COLUMNS}
    out: dict[str, Any] = {"run_id": _strings(raw["run_id"])}
    for name in ("sweep_id", "technique_id", "technique_name", "workspace_id", "project_id", "status"):
        out[name] = text[name]
    for name in _FLOATS:
        out[name] = _floats(raw[name])
    for name in _TIMES:
        out[name] = _stamps(raw[name])
    _add_durations(out)
    out["error_code"] = text["error_code"]
    out["error_message"] = text["error_message"]
    out["output_urls"], out["output_types"] = _output_lists(raw["outputs"])
    out["rating"] = _floats(raw["rating"])
    out["note"] = text["note"]
    out["rated_by"] = text["rated_by"]  # who rated it (a team ledger has many raters)
    out["user"], out["host"] = text["user_name"], text["host"]  # who started it, and on which machine
    out.update(_json_fields(raw["inputs"], "input."))
    out.update(_json_fields(raw["labels"], "label."))
    out["local_id"] = np.array(raw["local_id"], dtype="int64")
    out["reused_from"] = text["reused_from"]
    out["variation"] = pd.array(raw["variation"], dtype="Int64")
    out["pairing"] = text["pairing"]  # how a lost start was bound: <NA> (answered), exact, or unknown among a group
    out["outputs_doubtful"] = _doubtful(text["pairing"])
    return FloraFrame(out, index=pd.RangeIndex(n), copy=False)


def _doubtful(pairing: Any) -> Any:
    """True where a row's run may carry another start's inputs (bound in a group whose inputs differ)."""
    series = pd.Series(pairing, dtype="string")
    return (series.str.startswith("unknown") & series.str.contains(INPUTS_DIFFER, regex=False)).fillna(False).to_numpy(bool)



def _text_column(name: str, values: Sequence[Any]) -> Any:
    return _statuses(values) if name == "status" else _strings(values)


_ALL_NULL = json.dumps([None] * len(PACKED_COLUMNS))


def _packed(texts: Sequence[str]) -> dict[str, Any]:
    """The ``PACKED_COLUMNS`` from their JSON arrays: each distinct array decoded once, spread by codes."""
    codes, unique = pd.factorize(_objects(_texts(texts, _ALL_NULL)))
    parts = list(zip(*_parse_all(list(unique)))) if len(unique) else [()] * len(PACKED_COLUMNS)
    columns = {}
    for name, values in zip(PACKED_COLUMNS, parts):
        if name == "status":
            columns[name] = pd.Categorical.from_codes(_status_codes(values)[codes], categories=STATUSES)
        else:
            columns[name] = _strings(values).take(codes)
    return columns


def _strings(values: Sequence[Any]) -> Any:
    """A ``string`` column (None is <NA>); NULLs are spread by a take, pandas turns None to <NA> slowly."""
    column = _objects(values)
    missing = np.equal(column, None)  # type: ignore[call-overload]  # element-wise 'is None' on objects
    if not missing.any():
        return pd.array(column, dtype="string")
    present = ~missing
    where = np.full(len(column), -1, dtype=np.intp)
    where[present] = np.arange(int(present.sum()))
    return pd.array(column[present], dtype="string").take(where, allow_fill=True)


_STATUS_CODES = {status: code for code, status in enumerate(STATUSES)}


def _statuses(values: Sequence[Any]) -> pd.Categorical:
    """The ``status`` category by codes (a status outside STATUSES is NaN, as ``Categorical`` makes it)."""
    return pd.Categorical.from_codes(_status_codes(values), categories=STATUSES)


def _status_codes(values: Sequence[Any]) -> np.ndarray:
    return np.fromiter(map(_STATUS_CODES.get, values, itertools.repeat(-1)), dtype="int8", count=len(values))


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A float64 column (None is NaN); text that is not a number also becomes NaN, as before."""
    try:
        return np.array(values, dtype="float64")  # numpy turns None into NaN itself
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype="float64")


def _stamps(values: Sequence[Any]) -> Any:
    """UTC timestamps from float seconds, to the microsecond (float seconds carry ~100 ns of noise)."""
    stamps = pd.to_datetime(_floats(values), unit="s", utc=True).astype("datetime64[ns, UTC]")
    return stamps.round("us")


def _objects(values: Sequence[Any]) -> np.ndarray:
    """An object column holding each value as it is (lists stay lists: no shape discovery)."""
    try:
        return np.fromiter(values, dtype=object, count=len(values))
    except ValueError:  # numpy < 1.23 makes no object arrays from iterators
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column


def _texts(values: Sequence[Any], empty: str) -> list[str]:
    """A JSON column's texts, a NULL or empty one read as ``empty``."""
    return list(values) if all(values) else [v or empty for v in values]


def _parse_all(texts: list[str]) -> list[Any]:
    """Every JSON text of a column, parsed in one call (100,000 small json.loads calls cost 10x more)."""
    return json.loads("[" + ",".join(texts) + "]") if texts else []


def _output_lists(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``output_urls`` and ``output_types``: a fresh list per row (every run's outputs are its own)."""
    outputs = _parse_all(_texts(values, "[]"))
    # most runs have one output: its list is built without a comprehension of its own
    urls = [[] if not outs else [outs[0].get("url")] if len(outs) == 1 else [o.get("url") for o in outs]
            for outs in outputs]
    types = [[] if not outs else [outs[0].get("type")] if len(outs) == 1 else [o.get("type") for o in outs]
             for outs in outputs]
    return _objects(urls), _objects(types)


def _add_durations(out: dict[str, Any] | pd.DataFrame) -> None:
    def seconds(later: str, earlier: str) -> np.ndarray:
        diff = out[later] - out[earlier]
        diff = diff.dt if isinstance(diff, pd.Series) else diff
        return diff.total_seconds().to_numpy(dtype="float64")

    out["queue_seconds"] = seconds("started_at", "created_at")
    out["run_seconds"] = seconds("completed_at", "started_at")
    out["total_seconds"] = seconds("completed_at", "created_at")


def _json_fields(values: Sequence[Any], prefix: str) -> dict[str, list[Any]]:
    """``prefix + key`` -> that key's value on every row (None where a row lacks it), keys in first-seen order.

    Texts that repeat (a sweep's inputs) are parsed once: each key is read from the distinct records
    and spread to the rows by their codes, in C. Mostly distinct texts (a seed per run) are all parsed.
    """
    texts = _texts(values, "{}")
    sample = texts[:_SAMPLE]
    if len(set(sample)) > len(sample) * 0.9:  # only picks the faster path: both give the same columns
        records = _parse_all(texts)
        return {f"{prefix}{key}": [r.get(key) for r in records] for key in _keys(records)}
    codes, unique = pd.factorize(_objects(_texts(texts, _ALL_NULL)))
    records = _parse_all(list(unique))  # in order of first appearance, so keys keep their first-seen order
    return {f"{prefix}{key}": _objects([r.get(key) for r in records])[codes].tolist() for key in _keys(records)}


_SAMPLE = 2000


def _keys(records: list[dict[str, Any]]) -> dict[str, None]:
    return dict.fromkeys(itertools.chain.from_iterable(records))


def ledger_runs(ledger: Ledger, endpoint: str | None, **filters: Any) -> pd.DataFrame:
    """The runs frame of one endpoint's ledger rows (every endpoint's with ``endpoint=None``), filtered."""
    return select_runs(runs_frame(ledger.iter_raw(endpoint, FRAME_COLUMNS), FRAME_COLUMNS), **filters)


def select_runs(frame: pd.DataFrame, *, status: str | Sequence[str] | None = None, technique: str | None = None,
                sweep_id: str | None = None, since: Any = None, user: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Filter a runs frame; ``technique`` matches the id or the name. An unknown status is an ``InputError``."""
    if status is None and technique is None and sweep_id is None and since is None and user is None:
        return frame  # nothing to filter: no copy of every column
    keep = pd.Series(True, index=frame.index)
    if user is not None:
        keep &= frame["user"].isin([user] if isinstance(user, str) else list(user)).fillna(False)
    if status is not None:
        keep &= frame["status"].isin(check_statuses(status))
    if technique is not None:
        keep &= (frame["technique_id"] == technique).fillna(False) | (frame["technique_name"] == technique).fillna(False)
    if sweep_id is not None:
        keep &= (frame["sweep_id"] == sweep_id).fillna(False)
    if since is not None:
        keep &= (frame["created_at"] >= _since(since)).fillna(False)
    return frame[keep.astype(bool)].reset_index(drop=True)


def check_statuses(status: str | Sequence[str]) -> list[str]:
    """The statuses asked for, or an ``InputError`` naming the ones a run can have."""
    asked = [status] if isinstance(status, str) else list(status)
    unknown = [s for s in asked if s not in _STATUS_CODES]
    if unknown or not asked:
        given = ", ".join(str(s) for s in unknown) or "nothing"
        raise InputError(f"unknown status {given}; a run's status is one of: {', '.join(STATUSES)}.")
    return asked


def _since(since: Any) -> pd.Timestamp:
    """``since`` as a UTC time; an ``InputError`` when it is not a date or time."""
    try:
        stamp = pd.Timestamp(since)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise InputError(f"since must be a date or time, such as '2025-05-01' or '2025-05-01 14:30'; got {since!r}.")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def cost_summary(frame: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """Per group: runs, outcomes, estimated vs charged totals and drift; unknown costs apart.

    Runs served from the ledger by ``reuse=True`` cost nothing and are counted in ``reused`` only.
    ``unknown_cost_runs`` are finished runs whose charge FLORA has not reported yet: ``charged_usd``
    is what is known, and ``cost_per_completed_usd`` stays NaN until every charge of the group is.
    """
    keys = _cost_keys(frame, by)
    frame = _labelled(frame, keys)
    reused = frame["reused_from"].notna() if "reused_from" in frame else pd.Series(False, index=frame.index)
    terminal = frame["status"].isin(TERMINAL)
    known = terminal & frame["charged_cost"].notna() & ~reused
    work = frame.assign(
        _paid=~reused, _reused=reused,
        _completed=frame["status"].eq("completed") & ~reused, _failed=frame["status"].eq("failed"),
        _skipped=frame["status"].eq("skipped"), _unknown=terminal & frame["charged_cost"].isna(),
        _est=frame["estimated_cost"].where(~reused & ~frame["status"].eq("skipped")),
        _est_known=frame["estimated_cost"].where(known), _charged=frame["charged_cost"].where(~reused),
    )
    g = work.groupby(keys, dropna=False, observed=True)
    out = FloraFrame({
        "runs": g["_paid"].sum(), "completed": g["_completed"].sum(), "failed": g["_failed"].sum(),
        "skipped": g["_skipped"].sum(), "reused": g["_reused"].sum(), "unknown_cost_runs": g["_unknown"].sum(),
        "estimated_usd": g["_est"].sum(min_count=1), "charged_usd": g["_charged"].sum(min_count=1),
        "estimated_known_usd": g["_est_known"].sum(min_count=1), "mean_run_seconds": g["run_seconds"].mean(),
    })
    out["drift_usd"] = out["charged_usd"] - out["estimated_known_usd"]
    out["drift_pct"] = 100.0 * out["drift_usd"] / out["estimated_known_usd"].replace(0, np.nan)
    per_completed = out["charged_usd"] / out["completed"].replace(0, np.nan)
    out["cost_per_completed_usd"] = per_completed.where(out["unknown_cost_runs"].eq(0))  # not a share of a sum
    return out


COST_COLUMNS = ["runs", "completed", "failed", "charged_usd", "pending_charges", "open_estimate_usd",
                "usd_per_completed"]
_COUNTS = ("runs", "completed", "failed", "pending_charges")


def cost_table(frame: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """The essentials of ``cost_summary`` with a ``total`` row: runs, outcomes, charged, pending, still open, per run.

    ``pending_charges`` counts finished runs whose charge FLORA has not reported yet (their USD is in
    no sum); ``open_estimate_usd`` is the estimate of what may still be charged: runs not finished,
    and completed runs whose charge is pending. ``usd_per_completed`` is NaN while a charge is pending.
    """
    full = cost_summary(frame, by)
    keys = _cost_keys(frame, by)
    frame = _labelled(frame, keys)
    reused = frame["reused_from"].notna() if "reused_from" in frame else pd.Series(False, index=frame.index)
    to_come = frame["status"].isin(OPEN) | (frame["status"].eq(COMPLETED) & frame["charged_cost"].isna())
    open_est = frame["estimated_cost"].where(to_come & ~reused)
    grouped = frame.assign(_open=open_est).groupby(keys, dropna=False, observed=True)["_open"].sum()
    table = full[["runs", "completed", "failed", "charged_usd"]].copy()
    table["pending_charges"] = full["unknown_cost_runs"]
    table["open_estimate_usd"] = grouped.reindex(table.index)
    table["usd_per_completed"] = full["cost_per_completed_usd"]
    total: dict[str, Any] = {c: int(table[c].sum()) for c in _COUNTS}
    total["charged_usd"] = table["charged_usd"].sum(min_count=1)
    total["open_estimate_usd"] = table["open_estimate_usd"].sum()
    per_run = total["charged_usd"] / total["completed"] if total["completed"] else np.nan
    total["usd_per_completed"] = np.nan if total["pending_charges"] else per_run
    label = "total" if len(keys) == 1 else ("total",) + ("",) * (len(keys) - 1)
    table.index = table.index.astype(object) if len(keys) == 1 else table.index
    table.loc[label, :] = pd.Series(total)
    for column in _COUNTS:
        table[column] = table[column].astype("int64")
    return table[COST_COLUMNS]


def money_table(table: pd.DataFrame) -> pd.DataFrame:
    """The cost table as its display shows it: USD as ``$0.04`` text, a charge still to come "pending", never $0.

    ``charged_usd`` reads ``$0.04 + 2 pending`` (or ``2 pending``) while charges are pending, and
    ``usd_per_completed`` ``pending``; ``-`` is a figure with nothing behind it. The numbers stay in ``table``
    (whose own display is this one: ``_tables.FloraFrame``).
    """
    return display_cells(table)


def _cost_keys(frame: pd.DataFrame, by: str | Sequence[str]) -> list[str]:
    """The columns to group costs by (a bare input id is its ``input.`` column), or an ``InputError``."""
    keys = [by] if isinstance(by, str) else list(by)
    keys = [k if k in frame.columns or f"input.{k}" not in frame.columns else f"input.{k}" for k in keys]
    missing = [str(k) for k in keys if k not in frame.columns]
    if missing or not keys:
        what = ", ".join(missing) or "nothing"
        raise InputError(f"cannot group costs by {what}; choose from: {', '.join(_groupable(frame))}.")
    return keys


NOT_SET = "(not set)"  # the group of runs without a value in a grouping column (an input another technique lacks)


def _labelled(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``frame`` with a missing value of a grouping column shown as ``NOT_SET``, never as a "NaN" group."""
    missing = [k for k in keys if not isinstance(frame[k].dtype, pd.CategoricalDtype) and frame[k].isna().any()]
    if not missing:
        return frame
    return frame.assign(**{k: frame[k].astype(object).where(frame[k].notna(), NOT_SET) for k in missing})


def _groupable(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c in ("technique_name", "technique_id", "status", "sweep_id", "workspace_id",
                                              "user", "host") or c.startswith(("input.", "label."))]


def spend_series(frame: pd.DataFrame) -> pd.Series:
    """Cumulative charged USD over completion time (known charges only), ready for ``.plot()``."""
    paid = frame[frame["charged_cost"].notna() & frame["completed_at"].notna()]
    if "reused_from" in paid:
        paid = paid[paid["reused_from"].isna()]
    series = paid.set_index("completed_at")["charged_cost"].sort_index().cumsum()
    series.name = "cumulative_usd"
    return series


def sweep_frame(frame: pd.DataFrame, varied: Sequence[str]) -> pd.DataFrame:
    """A sweep's runs: ``variation``, ``repeat``, the varied inputs, then the runs schema."""
    frame = frame.sort_values(["variation", "local_id"], kind="stable").reset_index(drop=True)
    frame["repeat"] = frame.groupby("variation").cumcount().astype("int64")
    frame["reused"] = frame["reused_from"].notna()
    first = ["variation", "repeat"] + [f"input.{k}" for k in varied if f"input.{k}" in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def compare_frame(frame: pd.DataFrame, varied: Sequence[str], values: str, index: Any, columns: Any,
                  aggfunc: Any) -> pd.DataFrame:
    """Pivot ``values`` over varied inputs; bare input ids are accepted for ``input.<id>``."""
    def col(name: str) -> str:
        return name if name in frame.columns or f"input.{name}" not in frame.columns else f"input.{name}"

    def cols(spec: Any) -> list[str]:
        return [] if spec is None else [col(spec)] if isinstance(spec, str) else [col(s) for s in spec]

    axes = [f"input.{k}" for k in varied]
    rows, across = _known_columns(frame, cols(index), "index"), _known_columns(frame, cols(columns), "columns")
    if not rows and not across:
        rows, across = (axes[:1] + axes[2:], axes[1:2]) if axes else (["variation"], [])
    elif not rows:
        rows = [a for a in axes if a not in across] or ["variation"]
    elif not across:
        across = [a for a in axes if a not in rows][:1]
    value = col(values)
    if value not in frame.columns:
        raise InputError(f"no column {values!r} to compare; try charged_cost, rating, run_seconds, total_seconds, "
                         f"status, or one of: {', '.join(_comparable(frame))}.")
    if "outputs_doubtful" in frame.columns and frame["outputs_doubtful"].any():
        # A row whose run may carry another variation's inputs would put its figures under the wrong cell.
        frame = frame[~frame["outputs_doubtful"]]
    numeric = pd.api.types.is_numeric_dtype(frame[value])
    agg = aggfunc or ("mean" if numeric else "first")
    table = with_cells(frame.pivot_table(index=rows, columns=across or None, values=value, aggfunc=agg,
                                         observed=True, dropna=False), _cells(value, agg))

    def in_sweep_order(labels: pd.Index, keys: list[str]) -> list[int]:
        # pivot_table sorts its labels; lay them out as the gallery does, in the order the sweep first ran them
        if "variation" in frame.columns:
            seen = frame.sort_values("variation", kind="stable")[keys].drop_duplicates()
        else:
            seen = frame[keys].drop_duplicates()
        rank = {key if len(keys) > 1 else key[0]: i for i, key in enumerate(seen.itertuples(index=False, name=None))}
        return sorted(range(len(labels)), key=lambda i: rank.get(labels[i], len(rank)))

    table = table.iloc[in_sweep_order(table.index, rows)]
    return table.iloc[:, in_sweep_order(table.columns, across)] if across else table


def _known_columns(frame: pd.DataFrame, names: list[str], what: str) -> list[str]:
    """``names`` when every one is a column of the sweep's frame, else an ``InputError`` naming those that are."""
    unknown = [n for n in names if n not in frame.columns]
    if unknown:
        raise InputError(f"no column {', '.join(map(repr, unknown))} to lay out as {what}; choose from: "
                         f"{', '.join(_comparable(frame))}.")
    return names


def _comparable(frame: pd.DataFrame) -> list[str]:
    """The columns a sweep's table is usually compared by or over (varied inputs, labels, figures)."""
    return [c for c in frame.columns if c.startswith(("input.", "label.")) or c in (
        "variation", "repeat", "status", "charged_cost", "estimated_cost", "rating", "run_seconds",
        "total_seconds", "queue_seconds", "progress", "error_code")]


def _cells(value: str, agg: Any) -> str:
    """What a compare table's cells hold: money or seconds when ``value`` is and the aggregate keeps its unit."""
    keeps_unit = agg in ("mean", "sum", "min", "max", "median", "first", "last")
    return (is_money_or_seconds(value) if keeps_unit else None) or PLAIN  # a count of charges is no money


def plan_frame(plan: Any, tech: Technique, workspace: str, reuse: Sequence[str | None],
               reusable: Sequence[bool]) -> pd.DataFrame:
    """A dry run: one row per planned run (``queued``, or ``completed`` when reused); nothing started.

    ``reuse`` is, per planned run, the completed run it takes (or None); ``reusable`` whether one could.
    """
    n = len(plan.inputs)
    inputs = pd.DataFrame.from_records(plan.inputs)
    inputs.columns = [f"input.{c}" for c in inputs.columns]
    frame = FloraFrame({
        "variation": np.asarray(plan.variation, dtype="int64"), "repeat": np.asarray(plan.repeat_index, dtype="int64"),
        "technique_id": pd.array([tech.technique_id] * n, dtype="string"),
        "technique_name": pd.array([tech.name] * n, dtype="string"),
        "workspace_id": pd.array([workspace] * n, dtype="string"),
        "status": pd.Categorical([COMPLETED if r else QUEUED for r in reuse], categories=STATUSES),
        "estimated_cost": np.asarray([0.0 if r else (np.nan if tech.run_cost is None else tech.run_cost)
                                      for r in reuse], dtype="float64"),
        "reusable": np.asarray(list(reusable), dtype=bool),
        "reused_from": pd.array(list(reuse), dtype="string"),
    })
    first = ["variation", "repeat"] + [f"input.{k}" for k in plan.varied]
    frame = pd.concat([frame, inputs], axis=1)
    return frame[first + [c for c in frame.columns if c not in first]]


def history_frame(states: Iterable[RunState]) -> pd.DataFrame:
    """Runs as FLORA reports them (``GET /technique-runs``) in the runs frame's core columns."""
    records = [_history_record(s) for s in states]
    frame = FloraFrame.from_records(records, columns=[
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
    frame = FloraFrame(rows, columns=["technique_id", "slug", "name", "run_cost", "inputs", "outputs", "description"])
    frame["run_cost"] = frame["run_cost"].astype("float64")
    return frame


def models_frame(items: Sequence[Any], model: type) -> pd.DataFrame:
    """A DataFrame of dataclass models (without their ``extra`` dicts)."""
    names = [f.name for f in dataclasses.fields(model) if f.name != "extra"]
    return pd.DataFrame([{n: getattr(i, n) for n in names} for i in items], columns=names)


SWEEP_COLUMNS = ["sweep_id", "technique", "technique_id", "created", "variations", "runs", "completed", "failed",
                 "skipped", "queued", "in_flight", "spent", "budget"]


def sweeps_frame(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per sweep in the ledger (``Ledger.sweep_summaries``); counts are of current attempts."""
    rows = []
    for s in summaries:
        counts = s["counts"]
        rows.append({
            "sweep_id": s["sweep_id"], "technique": s["technique_name"], "technique_id": s["technique_id"],
            "created": s["created_at"], "variations": s["variations"], "runs": s["runs"],
            "completed": counts.get("completed", 0), "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0), "queued": counts.get("queued", 0),
            "in_flight": sum(counts.get(k, 0) for k in ACTIVE),
            "spent": s["spent"], "budget": np.nan if s["budget"] is None else s["budget"],
        })
    frame = FloraFrame(rows, columns=SWEEP_COLUMNS)
    for name in ("sweep_id", "technique", "technique_id"):
        frame[name] = frame[name].astype("string")
    created = pd.to_datetime(frame["created"].astype("float64"), unit="s", utc=True).astype("datetime64[ns, UTC]")
    frame["created"] = created.dt.round("us")
    for name in ("variations", "runs", "completed", "failed", "skipped", "queued", "in_flight"):
        frame[name] = frame[name].astype("int64")
    for name in ("spent", "budget"):
        frame[name] = frame[name].astype("float64")
    return frame


def limits_frame(limits: Sequence[tuple[str | None, str | None, float, Any]]) -> pd.DataFrame:
    """One row per spend limit: technique ("all"), period ("in all"), limit, spent, held, left, pending."""
    rows = [{"technique": technique or "all", "period": period or "in all", "limit": usd,
             "spent": spent.charged, "held": spent.reserved, "left": max(0.0, usd - spent.committed),
             "pending": spent.pending} for technique, period, usd, spent in limits]
    columns = ["technique", "period", "limit", "spent", "held", "left", "pending"]
    return FloraFrame(rows, columns=columns)
