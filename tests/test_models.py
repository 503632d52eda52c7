"""Tolerant parsing of FLORA responses into typed models."""

from __future__ import annotations

import datetime as dt
import html

import pytest

import flora_nb as fnb
from flora_nb._models import RunStart, RunState, Technique, parse_timestamp


def test_run_state_accepts_camel_case_and_keeps_extras():
    state = RunState.from_api({
        "runId": "run_1", "status": "FAILED", "progress": 100, "createdAt": 1_700_000_000_000,
        "completedAt": 1_700_000_005_000, "chargedCost": 0, "errorCode": "GPU_PROVIDER_ERROR",
        "errorMessage": "boom", "pollUrl": "http://x/runs/run_1", "somethingNew": 7,
    })
    assert (state.run_id, state.status, state.terminal) == ("run_1", "failed", True)
    assert state.charged_cost == 0.0 and state.error_code == "GPU_PROVIDER_ERROR"
    assert state.completed_at - state.created_at == dt.timedelta(seconds=5)
    assert state.poll_url == "http://x/runs/run_1" and state.extra == {"something_new": 7}


def test_unknown_cost_stays_none_never_zero():
    assert RunState.from_api({"run_id": "r", "status": "completed"}).charged_cost is None
    assert RunStart.from_api({"run_id": "r"}).charged_cost is None


def test_list_item_shape():
    state = RunState.from_api({
        "technique_run_id": "run_9", "status": "running", "progress": 40.5, "created_at": 1,
        "project_id": "prj_1", "workspace_id": "ws_1", "technique": {"name": "T", "technique_id": "tech_t"},
    })
    assert (state.run_id, state.technique_id, state.technique_name) == ("run_9", "tech_t", "T")
    assert state.progress == 40.5 and not state.terminal


def test_run_start_shape():
    start = RunStart.from_api({
        "run_id": "run_1", "type": "technique", "charged_cost": 0.05, "estimated_seconds": 12,
        "poll_url": "u", "project_id": "prj", "technique": {"name": "N", "technique_id": "tech_1"},
    })
    assert (start.charged_cost, start.estimated_seconds, start.technique_id) == (0.05, 12.0, "tech_1")


def test_timestamps():
    ms = parse_timestamp(1_700_000_000_123)
    s = parse_timestamp(1_700_000_000)
    assert ms.tzinfo is dt.timezone.utc and abs((ms - s).total_seconds() - 0.123) < 1e-6
    assert parse_timestamp("2026-11-28T10:00:00Z") == dt.datetime(2026, 11, 28, 10, tzinfo=dt.timezone.utc)
    assert parse_timestamp(None) is None
    with pytest.raises(fnb.InvalidResponseError, match="created_at"):  # malformed is an error, never a guess
        parse_timestamp("garbage", "created_at")


def test_technique_html_is_escaped():
    tech = Technique.from_api({
        "technique_id": "tech_x", "name": "<script>alert(1)</script>", "run_cost": 0.1,
        "inputs": [{"id": "p", "name": "Prompt", "type": "text", "description": "<b>x</b>"}],
        "outputs": [{"id": "o", "name": "Out", "type": "imageUrl"}],
    })
    page = tech._repr_html_()
    assert "<script>" not in page and html.escape("<script>") in page
    assert "<b>x</b>" not in page
    assert [i.id for i in tech.required_inputs] == ["p"]
