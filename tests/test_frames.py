"""The runs DataFrame built column-wise from raw ledger rows: the fixed schema on odd rows."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from flora_nb._frames import FRAME_COLUMNS, RUN_COLUMNS, _json_fields, runs_frame
from flora_nb._ledger import COLUMNS, PACKED, PACKED_COLUMNS, Ledger

ENDPOINT = "http://127.0.0.1:9/api/v1"
DTYPES = {
    "run_id": "string", "sweep_id": "string", "technique_id": "string", "technique_name": "string",
    "workspace_id": "string", "project_id": "string", "status": "category", "progress": "float64",
    "estimated_cost": "float64", "charged_cost": "float64", "estimated_seconds": "float64",
    "created_at": "datetime64[ns, UTC]", "started_at": "datetime64[ns, UTC]", "completed_at": "datetime64[ns, UTC]",
    "queue_seconds": "float64", "run_seconds": "float64", "total_seconds": "float64", "error_code": "string",
    "error_message": "string", "output_urls": "object", "output_types": "object", "rating": "float64",
    "note": "string",
}


def _odd_ledger(path) -> tuple[Ledger, list[int]]:
    """Rows with NULLs everywhere they may be, nested and non-ASCII JSON, keys missing on some rows."""
    ledger = Ledger(path)
    ids = ledger.add_intents([
        {"endpoint": ENDPOINT, "workspace_id": "ws", "idempotency_key": "k0", "technique_id": "t",
         "technique_name": "Pöster ✨", "inputs": {"prompt": "café 東京", "size": 256, "flag": True},
         "labels": {"exp": "a"}},
        {"endpoint": ENDPOINT, "workspace_id": "ws", "idempotency_key": "k1", "technique_id": "t",
         "inputs": {"prompt": "x", "mask": {"url": "http://m"}, "steps": [1, 2]}, "sweep_id": "swp_1", "variation": 3},
        {"endpoint": ENDPOINT, "workspace_id": "ws", "idempotency_key": "k2", "technique_id": "t", "status": "queued"},
    ])
    ledger.update_many([
        (ids[0], {"run_id": "run_é", "status": "completed", "charged_cost": 0.04, "created_at": 100.0,
                  "started_at": 101.0, "completed_at": 103.5, "estimated_cost": 0.05, "progress": 100.0,
                  "outputs": [{"output_id": "image", "type": "imageUrl", "url": "http://x/ä.png"},
                              {"output_id": "caption", "type": "text", "url": "légende"}]}),
        (ids[1], {"run_id": "run_b", "status": "failed", "error_code": "GENERATION_GENERIC_ERROR",
                  "error_message": "échec", "created_at": 100.0, "charged_cost": 0.0}),
    ])
    ledger.set_rating(ids[0], 4.0, "très bien")
    return ledger, ids


def test_the_frame_keeps_the_fixed_schema_and_values_on_odd_rows(tmp_path):
    ledger, ids = _odd_ledger(tmp_path / "l.sqlite")
    frame = runs_frame(ledger.iter_raw(ENDPOINT, FRAME_COLUMNS), FRAME_COLUMNS)
    assert list(frame.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    assert {c: str(frame[c].dtype) for c in DTYPES} == DTYPES
    assert list(frame["local_id"]) == ids and str(frame["variation"].dtype) == "Int64"
    assert frame["run_id"].tolist() == ["run_é", "run_b", pd.NA]
    assert frame["technique_name"].tolist() == ["Pöster ✨", pd.NA, pd.NA]
    assert frame["status"].tolist() == ["completed", "failed", "queued"]
    assert frame["output_urls"].tolist() == [["http://x/ä.png", "légende"], [], []]
    assert frame["output_types"].tolist() == [["imageUrl", "text"], [], []]
    assert frame["error_message"].tolist() == [pd.NA, "échec", pd.NA]
    assert frame["rating"].tolist()[0] == 4.0 and np.isnan(frame["rating"].tolist()[1])
    assert frame["note"].tolist() == ["très bien", pd.NA, pd.NA]
    assert frame.loc[0, "run_seconds"] == 2.5 and pd.isna(frame.loc[1, "run_seconds"])
    assert frame["created_at"].tolist()[0] == pd.Timestamp(100.0, unit="s", tz="UTC")
    assert pd.isna(frame.loc[2, "created_at"])
    # input columns in first-seen key order (keys sorted within a row as the ledger stores them)
    assert [c for c in frame.columns if c.startswith("input.")] == [
        "input.flag", "input.prompt", "input.size", "input.mask", "input.steps"]
    assert _cells(frame["input.prompt"]) == ["café 東京", "x", None] and str(frame["input.prompt"].dtype) == "str"
    assert _cells(frame["input.size"]) == [256, None, None] and str(frame["input.size"].dtype) == "float64"
    assert frame["input.mask"].tolist() == [None, {"url": "http://m"}, None]
    assert frame["input.steps"].tolist() == [None, [1, 2], None]
    assert frame["input.flag"].tolist() == [True, None, None]
    assert _cells(frame["label.exp"]) == ["a", None, None]
    assert frame["variation"].tolist() == [pd.NA, 3, pd.NA]


def _cells(column: pd.Series) -> list:
    """A column's values with every missing marker (None, NaN, <NA>) as None."""
    return [v if isinstance(v, (list, dict)) or not pd.isna(v) else None for v in column.tolist()]


def test_an_empty_ledger_gives_the_fixed_columns():
    frame = runs_frame([], FRAME_COLUMNS)
    assert list(frame.columns) == RUN_COLUMNS + ["local_id", "reused_from", "variation", "pairing", "outputs_doubtful"] and len(frame) == 0
    assert {c: str(frame[c].dtype) for c in DTYPES} == DTYPES


@pytest.mark.parametrize("columns", [FRAME_COLUMNS, COLUMNS])
def test_a_status_the_frame_does_not_know_and_an_empty_json_text_are_read_as_before(columns):
    row = dict.fromkeys(columns)
    text = {"workspace_id": "ws", "technique_id": "t", "status": "paused", "technique_name": "Ünï"}
    row.update(text, local_id=1, progress=0.0, outputs="", inputs=None, labels="{}")
    if PACKED in row:
        row[PACKED] = json.dumps([text.get(c) for c in PACKED_COLUMNS])
    frame = runs_frame([tuple(row[c] for c in columns)], columns)
    assert pd.isna(frame.loc[0, "status"]) and frame.loc[0, "output_urls"] == []
    assert frame["technique_name"].tolist() == ["Ünï"] and frame["project_id"].isna().all()
    assert not [c for c in frame.columns if c.startswith(("input.", "label."))]
    assert {c: str(frame[c].dtype) for c in DTYPES} == DTYPES


def test_a_ledger_row_with_bytes_where_text_belongs_still_gives_a_frame(tmp_path):
    ledger, ids = _odd_ledger(tmp_path / "l.sqlite")
    db = sqlite3.connect(ledger.path)  # json_array() refuses a BLOB: the packed column is built in Python then
    db.execute("UPDATE runs SET project_id = ? WHERE local_id = ?", (b"\x00prj", ids[2]))
    db.commit()
    frame = runs_frame(ledger.iter_raw(ENDPOINT, FRAME_COLUMNS), FRAME_COLUMNS)
    assert frame["project_id"].tolist()[2] == str(b"\x00prj")
    assert frame["status"].tolist() == ["completed", "failed", "queued"]
    assert frame["technique_name"].tolist() == ["Pöster ✨", pd.NA, pd.NA]


@pytest.mark.parametrize("repeat", [True, False])
def test_json_fields_equal_a_plain_per_row_reading(repeat):
    # Repeated texts take the parse-once path, distinct ones the parse-all path: same columns either way.
    records = [{"prompt": f"p{i % 3 if repeat else i}", "ü": [i % 2] if i % 4 else None,
                **({"k": i} if i == 7 else {})} for i in range(3000)]
    texts = [json.dumps(r, sort_keys=True) for r in records]
    got = _json_fields(texts, "input.")
    keys = list(dict.fromkeys(k for r in records for k in sorted(r)))
    assert got == {f"input.{k}": [r.get(k) for r in records] for k in keys}


def test_filters_done_by_sqlite_give_the_rows_select_runs_keeps(tmp_path):
    from flora_nb._frames import select_runs

    ledger, _ids = _odd_ledger(tmp_path / "l.sqlite")
    everything = runs_frame(ledger.iter_raw(ENDPOINT, FRAME_COLUMNS), FRAME_COLUMNS)
    since = pd.Timestamp(100.0, unit="s", tz="UTC")
    for filters, sql in [
        ({"status": ["completed", "failed"]}, {"statuses": ["completed", "failed"]}),
        ({"status": "queued"}, {"statuses": ["queued"]}),
        ({"technique": "Pöster ✨"}, {"technique": "Pöster ✨"}), ({"technique": "t"}, {"technique": "t"}),
        ({"sweep_id": "swp_1"}, {"sweep_id": "swp_1"}), ({"since": since}, {"created_since": 100.0}),
        ({"since": since + pd.Timedelta(seconds=1)}, {"created_since": 101.0}),
    ]:
        expected = select_runs(everything, **filters)
        frame = runs_frame(ledger.iter_raw(ENDPOINT, FRAME_COLUMNS, **sql), FRAME_COLUMNS)
        assert frame["local_id"].tolist() == expected["local_id"].tolist(), filters
        # the same rows and values; input./label. columns are only those the kept rows have (dtypes of theirs)
        fixed = [c for c in frame.columns if not c.startswith(("input.", "label."))]
        pd.testing.assert_frame_equal(select_runs(frame, **filters)[fixed], expected[fixed])
        for column in set(frame.columns) - set(fixed):
            assert _cells(frame[column]) == _cells(expected[column]), (filters, column)
        assert all(expected[c].isna().all() for c in set(expected.columns) - set(frame.columns))


def test_costs_grouped_by_an_input_some_runs_lack_name_that_group_not_nan(tmp_path):
    from flora_nb._frames import NOT_SET, cost_summary, cost_table

    ledger = Ledger(tmp_path / "l.sqlite")
    for i, inputs in enumerate([{"style": "noir"}, {"style": "noir"}, {"prompt": "no style here"}]):
        local = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key=f"k{i}", technique_id="t",
                                  estimated_cost=0.1, inputs=inputs)
        ledger.update(local, run_id=f"r{i}", status="completed", charged_cost=0.1 * (i + 1))
    frame = runs_frame(ledger.iter_raw("e"))
    table = cost_table(frame, "style")
    assert table.index.tolist() == [NOT_SET, "noir", "total"]
    assert table.loc[NOT_SET, "charged_usd"] == pytest.approx(0.3) and table.loc["noir", "runs"] == 2
    assert not cost_summary(frame, "style").index.isna().any()
    assert frame["input.style"].isna().sum() == 1  # the data keeps its missing value; only the grouping names it
