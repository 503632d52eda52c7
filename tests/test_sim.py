"""Conformance tests for flora_nb.sim over real loopback HTTP, using plain ``requests``.

The shapes asserted here are the ones in shared/flora-api.md (§2, §4, §5 and the decisions
table); the client is deliberately not used, so these tests pin the server on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import re
import signal
import struct
import subprocess
import sys
import wave
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from flora_nb.sim import Faults, FloraSimulator
from flora_nb.sim._catalog import BUILTIN_TECHNIQUES, Catalog
from flora_nb.sim._faults import Faults as FaultsClass
from flora_nb.sim._state import (
    FAILURES_BEFORE_START,
    FAILURES_WHILE_RUNNING,
    StartOrder,
    World,
)
from tests import waiting

SPEED = 200.0  # 1 s pending -> 5 ms; a 12 s technique -> 60 ms
TIMEOUT = 10.0
POSTER = "tech_a1poster"  # exactly one required text input "prompt"
RELIGHT = "tech_b2relight"  # imageUrl input
FOLEY = "tech_e5foley"  # videoUrl input
MOTION = "tech_d4motion"  # charge_jitter 0.25
BRANDBOOK = "tech_g7brandbook"  # documentUrl + imageUrl outputs
JINGLE = "tech_h8jingle"  # audioUrl + text outputs
CCTV = "tech_c3cctv"  # videoUrl output
FAILURE_CODES = {code for code, _ in FAILURES_WHILE_RUNNING + FAILURES_BEFORE_START}
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
PNG_URL = "https://example.com/photo.png"


class Api:
    """A requests.Session bound to one simulator; asserts request-id on every response."""

    def __init__(self, sim: FloraSimulator, key: str | None = None) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key or sim.api_key}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else self.sim.base_url + path
        resp = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        assert re.fullmatch(r"req_[0-9a-f]+", resp.headers.get("request-id", "")), resp.headers
        return resp

    def start(
        self, technique_id: str = POSTER, inputs: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        body = {
            "technique_id": technique_id,
            "workspace_id": self.sim.workspace_id,
            "inputs": {"prompt": "a red fox"} if inputs is None else inputs,
        }
        return self("POST", "/runs/technique", json=body, **kwargs)

    def wait(self, poll_url: str, until: tuple[str, ...] = ("completed", "failed")) -> list[dict]:
        """Poll until the status is in ``until``; returns every observation."""
        seen: list[dict] = []

        def reached() -> bool:
            resp = self("GET", poll_url)
            assert resp.status_code == 200, resp.text
            seen.append(resp.json())
            return seen[-1]["status"] in until

        waiting.until(reached, what=lambda: f"the run to reach {until} (last seen: {seen[-1:]})")
        return seen


def assert_error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_snake_case(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert SNAKE.match(key), f"not snake_case: {key}"
            assert_snake_case(item)
    elif isinstance(value, list):
        for item in value:
            assert_snake_case(item)


def assert_ms(value: Any) -> None:
    # Unix milliseconds: a 13-digit number in this century.
    assert isinstance(value, int) and 1_600_000_000_000 < value < 4_000_000_000_000, value


@pytest.fixture(scope="module")
def sim() -> Iterator[FloraSimulator]:
    with FloraSimulator(speed=SPEED, seed=0) as simulator:
        yield simulator
    assert simulator.stats()["internal_errors"] == 0


@pytest.fixture(scope="module")
def api(sim: FloraSimulator) -> Api:
    return Api(sim)


@pytest.fixture()
def make_sim() -> Iterator[Callable[..., tuple[FloraSimulator, Api]]]:
    """Fresh simulators for fault tests, stopped afterwards."""
    started: list[FloraSimulator] = []

    def make(**kwargs: Any) -> tuple[FloraSimulator, Api]:
        kwargs.setdefault("speed", SPEED)
        simulator = FloraSimulator(**kwargs).start()
        started.append(simulator)
        return simulator, Api(simulator)

    yield make
    for simulator in started:
        details = simulator.stats()["internal_error_details"]
        simulator.stop()
        assert not details, details


# -- workspaces and techniques -------------------------------------------------------------


def test_workspaces_lists_only_the_keys_workspaces(api: Api) -> None:
    resp = api("GET", "/workspaces")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert set(body) == {"workspaces"}
    assert [ws["workspace_id"] for ws in body["workspaces"]] == ["ws_sim_demo"]
    ws = body["workspaces"][0]
    assert ws["name"] == "Demo Studio" and ws["role"] == "owner"
    assert_ms(ws["created_at"])


def test_key_workspaces_grants_several_workspaces(make_sim: Callable) -> None:
    sim, _ = make_sim(api_keys=("k1",), key_workspaces={"k1": ["ws_team_a", "ws_sim_private"]})
    body = Api(sim, "k1")("GET", "/workspaces").json()
    assert [ws["workspace_id"] for ws in body["workspaces"]] == ["ws_team_a", "ws_sim_private"]
    assert sim.workspace_id == "ws_team_a"


def test_techniques_paginate_with_limit_2(api: Api, sim: FloraSimulator) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api("GET", "/techniques", params=params).json()
        assert set(body) == {"techniques", "meta"}
        assert 1 <= len(body["techniques"]) <= 2
        assert body["meta"]["total_estimate"] == len(BUILTIN_TECHNIQUES)
        seen += [t["technique_id"] for t in body["techniques"]]
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["technique_id"] for t in BUILTIN_TECHNIQUES]
    assert [t["technique_id"] for t in sim.techniques()] == seen


def test_technique_shape(api: Api) -> None:
    body = api("GET", "/techniques", params={"limit": 100}).json()
    assert body["meta"]["next_cursor"] is None
    for tech in body["techniques"]:
        assert_snake_case(tech)
        assert re.fullmatch(r"tech_[a-z0-9]+", tech["technique_id"])
        assert isinstance(tech["name"], str) and isinstance(tech["description"], str)
        assert isinstance(tech["run_cost"], float) and tech["run_cost"] > 0
        assert "duration_seconds" not in tech and "charge_jitter" not in tech
        for field in tech["inputs"] + tech["outputs"]:
            assert {"id", "name", "type"} <= set(field)
            assert field["type"] in ("imageUrl", "videoUrl", "audioUrl", "text", "documentUrl")
            assert isinstance(field.get("optional", False), bool)


def test_builtin_catalog_covers_every_type() -> None:
    outputs = {f["type"] for t in BUILTIN_TECHNIQUES for f in t["outputs"]}
    assert outputs == {"imageUrl", "videoUrl", "audioUrl", "text", "documentUrl"}
    inputs = {f["type"] for t in BUILTIN_TECHNIQUES for f in t["inputs"]}
    assert {"text", "imageUrl", "videoUrl"} <= inputs
    poster = next(t for t in BUILTIN_TECHNIQUES if t["technique_id"] == POSTER)
    assert [(f["id"], f["type"], f.get("optional")) for f in poster["inputs"]] == [
        ("prompt", "text", None)
    ]
    assert any(t.get("charge_jitter") for t in BUILTIN_TECHNIQUES)
    assert any(f.get("optional") for t in BUILTIN_TECHNIQUES for f in t["inputs"])
    assert len({t["run_cost"] for t in BUILTIN_TECHNIQUES}) >= 5


def test_technique_search_is_case_insensitive(api: Api) -> None:
    body = api("GET", "/techniques", params={"query": "VIDEO"}).json()
    names = {t["technique_id"] for t in body["techniques"]}
    assert names and {FOLEY, MOTION} <= names and POSTER not in names
    assert body["meta"]["total_estimate"] == len(names)
    assert api("GET", "/techniques", params={"query": "no such thing"}).json()["techniques"] == []


def test_technique_by_id_and_by_slug(api: Api) -> None:
    by_id = api("GET", f"/techniques/{POSTER}").json()
    by_slug = api("GET", f"/techniques/{by_id['slug']}").json()
    assert by_id == by_slug and by_id["technique_id"] == POSTER
    assert_error(api("GET", "/techniques/tech_nope"), 404, "not_found")


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "%%%garbage"}, "cursor"),
        ({"cursor": "eyJub3QiOjF9"}, "cursor"),
    ],
)
def test_bad_limit_or_cursor_is_400(api: Api, params: dict, field: str) -> None:
    for path in ("/techniques", "/technique-runs"):
        error = assert_error(api("GET", path, params=params), 400, "input_validation_error")
        assert [f["field"] for f in error["fields"]] == [field]


def test_cursor_accepts_padded_standard_base64(api: Api) -> None:
    # base64 of {"offset": 8} with padding: a client may hand-build cursors like this.
    body = api("GET", "/techniques", params={"cursor": "eyJvZmZzZXQiOiA4fQ==", "limit": 5}).json()
    assert [t["technique_id"] for t in body["techniques"]] == ["tech_i9storyboard"]


# -- starting and polling runs ---------------------------------------------------------------


def test_top_level_start_answers_runstart(api: Api, sim: FloraSimulator) -> None:
    resp = api.start()
    assert resp.status_code == 201
    body = resp.json()
    assert_snake_case(body)
    assert "status" not in body
    assert re.fullmatch(r"run_[0-9a-f]+", body["run_id"])
    assert body["type"] == "technique"
    assert body["charged_cost"] == 0.04
    assert body["estimated_seconds"] == pytest.approx(12 / SPEED)
    assert body["poll_url"] == f"{sim.base_url}/runs/{body['run_id']}"
    assert body["project_id"] == "prj_sim_demo"
    assert body["technique"] == {"name": "Poster Studio", "technique_id": POSTER}


def test_run_lifecycle_to_completed(api: Api) -> None:
    start = api.start(inputs={"prompt": "lifecycle"}).json()
    seen = api.wait(start["poll_url"])
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    assert {s["status"] for s in seen} <= {"pending", "running", "completed"}
    for s in seen:
        if s["status"] != "completed":
            assert "charged_cost" not in s and "outputs" not in s and "completed_at" not in s
    done = seen[-1]
    assert_snake_case(done)
    assert done["status"] == "completed" and done["progress"] == 100
    for key in ("created_at", "started_at", "completed_at"):
        assert_ms(done[key])
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]
    assert done["completed_at"] - done["started_at"] == pytest.approx(12 / SPEED * 1000, abs=2)
    assert done["charged_cost"] == 0.04
    assert done["outputs"] == [
        {"output_id": "image", "type": "imageUrl", "url": done["outputs"][0]["url"]}
    ]
    assert "error_code" not in done


def test_run_goes_through_pending_and_running(make_sim: Callable) -> None:
    _, api = make_sim(speed=20.0, pending_seconds=10.0)  # pending 0.5 s, Image to Motion 3 s
    start = api.start(MOTION, {"prompt": "slow pan"}).json()
    first = api("GET", start["poll_url"]).json()
    assert first["status"] == "pending" and first["progress"] == 0 and "started_at" not in first
    running = api.wait(start["poll_url"], until=("running",))[-1]
    assert_ms(running["started_at"])
    assert 0 <= running["progress"] < 100 and "completed_at" not in running


def test_nested_start_answers_runstatus(api: Api, sim: FloraSimulator) -> None:
    body = {"mode": "async", "inputs": [{"id": "prompt", "type": "text", "value": "coffee"}]}
    resp = api("POST", "/techniques/jingle-writer/runs", json=body)
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert_snake_case(run)
    assert run["status"] == "pending" and run["progress"] == 0
    assert_ms(run["created_at"])
    assert run["poll_url"] == f"{sim.base_url}/techniques/jingle-writer/runs/{run['run_id']}"
    done = api.wait(run["poll_url"])[-1]
    assert done["status"] == "completed"
    types = {o["output_id"]: o["type"] for o in done["outputs"]}
    assert types == {"audio": "audioUrl", "lyrics": "text"}
    lyrics = next(o["url"] for o in done["outputs"] if o["type"] == "text")
    assert "coffee" in lyrics and not lyrics.startswith("http")
    # The same run answers on the top-level route and on the nested route by tech_ id.
    assert api("GET", f"/runs/{run['run_id']}").json()["status"] == "completed"
    assert api("GET", f"/techniques/{JINGLE}/runs/{run['run_id']}").status_code == 200
    assert_error(api("GET", f"/techniques/{POSTER}/runs/{run['run_id']}"), 404, "not_found")
    assert sim.run_records()[-1]["workspace_id"] == "ws_sim_demo"


@pytest.mark.parametrize("spelling", ["imageUrl", "image_url", "IMAGE_URL"])
def test_nested_accepts_type_spellings(api: Api, spelling: str) -> None:
    body = {
        "mode": "stream",
        "inputs": [{"id": "product_image", "type": spelling, "value": PNG_URL}],
    }
    assert api("POST", f"/techniques/{RELIGHT}/runs", json=body).status_code == 201


def test_nested_rejects_mismatched_type_and_bad_mode(api: Api) -> None:
    body = {"mode": "sync", "inputs": [{"id": "product_image", "type": "text", "value": PNG_URL}]}
    error = assert_error(
        api("POST", f"/techniques/{RELIGHT}/runs", json=body), 400, "input_validation_error"
    )
    assert {f["field"] for f in error["fields"]} == {"mode"}
    body["mode"] = "async"
    error = assert_error(
        api("POST", f"/techniques/{RELIGHT}/runs", json=body), 400, "input_validation_error"
    )
    assert error["fields"] == [
        {"field": "product_image", "message": "Expected type imageUrl"}
    ]
    assert_error(api("POST", "/techniques/no-such/runs", json=body), 404, "not_found")


def test_unknown_run_is_404(api: Api) -> None:
    assert_error(api("GET", "/runs/run_doesnotexist"), 404, "not_found")
    assert_error(api("GET", f"/techniques/{POSTER}/runs/run_doesnotexist"), 404, "not_found")


def test_runs_in_other_workspaces_are_invisible(make_sim: Callable) -> None:
    sim, owner = make_sim(api_keys=("k_a", "k_b"), key_workspaces={"k_b": ["ws_other"]})
    run_id = owner.start().json()["run_id"]
    stranger = Api(sim, "k_b")
    assert_error(stranger("GET", f"/runs/{run_id}"), 404, "not_found")
    assert stranger("GET", "/technique-runs").json()["technique_runs"] == []
    assert owner("GET", f"/runs/{run_id}").status_code == 200


def test_poll_url_style_techniques(make_sim: Callable) -> None:
    sim, api = make_sim(poll_url_style="techniques")
    body = api.start().json()
    assert body["poll_url"] == f"{sim.base_url}/techniques/{POSTER}/runs/{body['run_id']}"
    assert api.wait(body["poll_url"])[-1]["status"] == "completed"


# -- run history ---------------------------------------------------------------------------


def test_technique_runs_lists_newest_first_with_filters(make_sim: Callable) -> None:
    sim, api = make_sim()
    ids = [api.start(inputs={"prompt": f"p{i}"}).json()["run_id"] for i in range(5)]
    relight = api.start(RELIGHT, {"product_image": PNG_URL}).json()["run_id"]
    waiting.until(lambda: sim.stats()["runs_by_status"]["completed"] == 6)
    listed: list[dict] = []
    cursor = None
    while True:
        params = {"technique_id": POSTER, "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api("GET", "/technique-runs", params=params).json()
        assert body["meta"]["total_estimate"] == 5
        listed += body["technique_runs"]
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
    assert [item["run_id"] for item in listed] == ids[::-1]
    item = listed[0]
    assert_snake_case(item)
    assert item["technique_run_id"] == item["run_id"]
    assert item["workspace_id"] == "ws_sim_demo" and item["project_id"] == "prj_sim_demo"
    assert item["technique"] == {"name": "Poster Studio", "technique_id": POSTER}
    assert item["status"] == "completed" and item["outputs"] and item["charged_cost"] == 0.04
    by_slug = api("GET", "/technique-runs", params={"technique_id": "product-relight"}).json()
    assert [i["run_id"] for i in by_slug["technique_runs"]] == [relight]
    filtered = api("GET", "/technique-runs", params={"status": "running"}).json()
    assert filtered["technique_runs"] == [] and filtered["meta"]["next_cursor"] is None
    scoped = api(
        "GET",
        "/technique-runs",
        params={"workspace_id": "ws_sim_demo", "project_id": "prj_sim_demo"},
    ).json()
    assert len(scoped["technique_runs"]) == 6


def test_technique_runs_rejects_bad_status(api: Api) -> None:
    error = assert_error(
        api("GET", "/technique-runs", params={"status": "done"}), 400, "input_validation_error"
    )
    assert error["fields"][0]["field"] == "status"


# -- errors --------------------------------------------------------------------------------


def test_invalid_json_is_400(api: Api) -> None:
    resp = api(
        "POST", "/runs/technique", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 400, "invalid_json")


def test_validation_lists_every_problem(api: Api) -> None:
    resp = api.start(RELIGHT, {"lighting": "", "colour": "red"})
    error = assert_error(resp, 400, "input_validation_error")
    assert error["fields"] == [
        {"field": "colour", "message": "Unknown input"},
        {"field": "product_image", "message": "Required"},
        {"field": "lighting", "message": "Must not be empty"},
    ]
    assert error["message"].startswith("colour: Unknown input")


def test_required_prompt_message_matches_docs(api: Api) -> None:
    error = assert_error(api.start(inputs={}), 400, "input_validation_error")
    assert error == {
        "code": "input_validation_error",
        "message": "prompt: Required",
        "fields": [{"field": "prompt", "message": "Required"}],
    }


def test_text_inputs_take_numbers_and_booleans(api: Api, sim) -> None:
    """The reference types inputs as map[unknown]: a number or boolean is a text input's JSON text."""
    for value, text in ((42, "42"), (1.5, "1.5"), (True, "true")):
        resp = api.start(POSTER, {"prompt": value})
        assert resp.status_code == 201, resp.text
        record = next(r for r in sim.run_records() if r["run_id"] == resp.json()["run_id"])
        assert record["inputs"] == {"prompt": text}


@pytest.mark.parametrize(
    "technique_id, inputs, field, message",
    [
        (POSTER, {"prompt": {"a": 1}}, "prompt", "Expected a string, number or boolean"),
        (POSTER, {"prompt": None}, "prompt", "Expected a string, number or boolean"),
        (RELIGHT, {"product_image": 42}, "product_image", "Expected a string"),
        (
            RELIGHT,
            {"product_image": "photo.png"},
            "product_image",
            "Expected an http(s) URL or an asset_ id",
        ),
        (
            RELIGHT,
            {"product_image": "asset_unknown"},
            "product_image",
            "Expected an http(s) URL or an asset_ id",
        ),
        (
            FOLEY,
            {"video": "ftp://example.com/a.mp4"},
            "video",
            "Expected an http(s) URL or an asset_ id",
        ),
    ],
)
def test_input_value_checks(
    api: Api, technique_id: str, inputs: dict, field: str, message: str
) -> None:
    error = assert_error(api.start(technique_id, inputs), 400, "input_validation_error")
    assert error["fields"] == [{"field": field, "message": message}]


def test_wrong_id_prefixes_are_400(api: Api) -> None:
    body = {"technique_id": "poster-studio", "workspace_id": "sim_demo", "inputs": {}}
    error = assert_error(api("POST", "/runs/technique", json=body), 400, "input_validation_error")
    assert [f["field"] for f in error["fields"]] == ["technique_id", "workspace_id"]
    error = assert_error(api("POST", "/runs/technique", json=[]), 400, "input_validation_error")
    assert error["fields"][0]["field"] == "body"


def test_unknown_technique_is_404(api: Api) -> None:
    assert_error(api.start("tech_doesnotexist"), 404, "not_found")


@pytest.mark.parametrize("header", [None, "Bearer", "Token sk_sim_demo", "Bearer sk_wrong"])
def test_bad_auth_is_401(sim: FloraSimulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    resp = requests.get(sim.base_url + "/workspaces", headers=headers, timeout=TIMEOUT)
    error = assert_error(resp, 401, "unauthorized")
    assert error["message"] == "Invalid API key."
    assert resp.headers["request-id"].startswith("req_")


def test_private_workspace_is_403(api: Api) -> None:
    body = {"technique_id": POSTER, "workspace_id": "ws_sim_private", "inputs": {"prompt": "x"}}
    error = assert_error(api("POST", "/runs/technique", json=body), 403, "forbidden")
    assert error["message"] == "Forbidden."
    for path in ("/techniques", "/technique-runs"):
        assert_error(api("GET", path, params={"workspace_id": "ws_sim_private"}), 403, "forbidden")
    asset = {"source": PNG_URL, "workspace_id": "ws_sim_private"}
    assert_error(api("POST", "/assets", json=asset), 403, "forbidden")


def test_unknown_paths_are_404(api: Api, sim: FloraSimulator) -> None:
    assert_error(api("GET", "/nothing/here"), 404, "not_found")
    assert_error(api("DELETE", "/workspaces"), 404, "not_found")
    resp = requests.get(sim.origin + "/favicon.ico", timeout=TIMEOUT)
    assert_error(resp, 404, "not_found")
    assert resp.headers["request-id"].startswith("req_")
    assert_error(
        requests.get(sim.origin + "/media/run_x/image.png", timeout=TIMEOUT), 404, "not_found"
    )


def test_idempotency_key_repeat_is_409_without_a_new_run(make_sim: Callable) -> None:
    sim, api = make_sim()
    assert api.start(headers={"Idempotency-Key": "k-1"}).status_code == 201
    error = assert_error(
        api.start(headers={"Idempotency-Key": "k-1"}), 409, "idempotency_duplicate"
    )
    assert error["message"] == "Duplicate idempotency key."
    assert sim.stats()["runs_created"] == 1
    assert sim.run_records()[0]["idempotency_key"] == "k-1"
    # A failed request does not store its key.
    assert api.start(inputs={}, headers={"Idempotency-Key": "k-2"}).status_code == 400
    assert api.start(headers={"Idempotency-Key": "k-2"}).status_code == 201
    # Keys are scoped per route; the nested route also takes a body key.
    nested = {
        "mode": "async",
        "idempotency_key": "k-1",
        "inputs": [{"id": "prompt", "type": "text", "value": "x"}],
    }
    assert api("POST", f"/techniques/{POSTER}/runs", json=nested).status_code == 201
    assert_error(
        api("POST", f"/techniques/{POSTER}/runs", json=nested), 409, "idempotency_duplicate"
    )
    stats = sim.stats()
    assert stats["runs_created"] == 3 and stats["idempotency_duplicates"] == 2


def test_insufficient_credits_is_402_and_creates_nothing(make_sim: Callable) -> None:
    sim, api = make_sim(faults=Faults(credits=0.1))
    assert api.start().status_code == 201
    assert api.start().status_code == 201
    error = assert_error(api.start(), 402, "insufficient_credits")
    assert error["message"] == "Insufficient credits."
    assert api.start(headers={"Idempotency-Key": "after-402"}).status_code == 402
    stats = sim.stats()
    assert stats["runs_created"] == 2
    assert stats["credits_remaining"] == pytest.approx(0.02)
    assert api.start(JINGLE, {"prompt": "cheap enough?"}).status_code == 402  # 0.06 > 0.02
    assert not any(r["idempotency_key"] == "after-402" for r in sim.run_records())


def test_failed_runs_are_refunded(make_sim: Callable) -> None:
    sim, api = make_sim(faults=Faults(run_failure_rate=1.0, credits=1.0))
    polls = [api.start(inputs={"prompt": f"f{i}"}).json()["poll_url"] for i in range(6)]
    snapshot = sim.stats()  # each live run holds its reservation; a failed one was refunded already
    live = snapshot["runs_by_status"]["pending"] + snapshot["runs_by_status"]["running"]
    assert snapshot["credits_remaining"] == pytest.approx(1.0 - live * 0.04)
    for poll in polls:
        done = api.wait(poll)[-1]
        assert done["status"] == "failed"
        assert done["error_code"] in FAILURE_CODES and done["error_message"]
        assert done["progress"] == 100 and done["charged_cost"] == 0
        assert_ms(done["completed_at"])
        assert "outputs" not in done
    stats = sim.stats()
    assert stats["credits_remaining"] == pytest.approx(1.0)
    assert stats["runs_by_status"] == {"pending": 0, "running": 0, "completed": 0, "failed": 6}
    assert stats["total_charged"] == 0


def test_rate_limit_is_429_with_retry_after(make_sim: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    sim, api = make_sim(faults=Faults(rate_limit=1.0))  # burst 1, one token per second
    clock = waiting.SimClock(sim, monkeypatch)  # the bucket refills only when the test says time has passed
    assert api("GET", "/workspaces").status_code == 200
    limited = api("GET", "/workspaces")
    error = assert_error(limited, 429, "rate_limited")
    assert error["message"] == "Rate limit exceeded."
    assert int(limited.headers["Retry-After"]) >= 1
    assert 0 < int(limited.headers["retry-after-ms"]) <= 1000
    assert sim.stats()["rate_limited"] == 1
    clock.advance(int(limited.headers["retry-after-ms"]) / 1000 + 0.05)  # wait as long as the server asked
    assert api("GET", "/workspaces").status_code == 200


def test_rate_limit_is_keyed_to_the_request_workspace(make_sim: Callable) -> None:
    keys = {"sk_two": ["ws_one", "ws_two"]}
    sim, api = make_sim(api_keys=("sk_two",), key_workspaces=keys, faults=Faults(rate_limit=0.01))
    assert api("GET", "/technique-runs", params={"workspace_id": "ws_one"}).status_code == 200
    assert_error(api("GET", "/technique-runs", params={"workspace_id": "ws_one"}), 429, "rate_limited")
    # the other workspace of the same key has its own bucket
    assert api("GET", "/technique-runs", params={"workspace_id": "ws_two"}).status_code == 200
    assert sim.stats()["rate_limited"] == 1


def test_error_after_create_fault_creates_the_run_then_answers_500(make_sim: Callable) -> None:
    sim, api = make_sim(faults=Faults(error_after_create_rate=1.0))
    assert Faults(0.0, 0.0, 0.0, None, 0.0, None, None) == Faults()  # positional use still works
    body = {"technique_id": POSTER, "workspace_id": sim.workspace_id, "inputs": {"prompt": "x"}}
    error = assert_error(api("POST", "/runs/technique", json=body, headers={"Idempotency-Key": "k1"}),
                         500, "unknown_error")
    assert error["message"] == "An unknown error occurred."
    stats = sim.stats()
    assert stats["runs_created"] == 1 and stats["errors_after_create"] == 1 and stats["errors_injected"] == 0
    assert sim.run_records()[0]["idempotency_key"] == "k1"
    sim.faults = Faults()
    retry = api("POST", "/runs/technique", json=body, headers={"Idempotency-Key": "k1"})
    assert retry.status_code in (201, 409) and sim.stats()["runs_created"] == 1  # never a second run


def test_error_rate_1_answers_500_without_side_effects(make_sim: Callable) -> None:
    sim, api = make_sim()
    done = api.wait(api.start().json()["poll_url"])[-1]
    sim.faults = Faults(error_rate=1.0)
    error = assert_error(api.start(), 500, "unknown_error")
    assert error["message"] == "An unknown error occurred."
    assert_error(api("GET", "/workspaces"), 500, "unknown_error")
    # Media is public and outside the API: no injected errors there.
    assert requests.get(done["outputs"][0]["url"], timeout=TIMEOUT).status_code == 200
    stats = sim.stats()
    assert stats["runs_created"] == 1 and stats["errors_injected"] == 2
    sim.faults = Faults()
    assert api("GET", "/workspaces").status_code == 200


def test_drop_rate_1_creates_the_run_but_closes_the_connection(make_sim: Callable) -> None:
    sim, api = make_sim(faults=Faults(drop_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        api.start(headers={"Idempotency-Key": "dropped-1"})
    records = sim.run_records()
    assert len(records) == 1 and records[0]["idempotency_key"] == "dropped-1"
    # The key was stored because the server committed the start.
    sim.faults = Faults()
    assert_error(api.start(headers={"Idempotency-Key": "dropped-1"}), 409, "idempotency_duplicate")
    assert sim.stats()["drops"] == 1
    assert (
        api("GET", "/technique-runs").json()["technique_runs"][0]["run_id"] == records[0]["run_id"]
    )


def test_max_concurrent_runs_keeps_the_rest_pending(make_sim: Callable) -> None:
    sim, api = make_sim(speed=20.0, faults=Faults(max_concurrent_runs=1))  # poster: 600 ms
    polls = [api.start(inputs={"prompt": f"c{i}"}).json()["poll_url"] for i in range(3)]
    api.wait(polls[0], until=("running",))
    assert [api("GET", p).json()["status"] for p in polls[1:]] == ["pending", "pending"]
    for poll in polls:
        api.wait(poll)
    records = sim.run_records()
    for earlier, later in itertools.pairwise(records):
        # The next run starts exactly when the slot frees, not when somebody polled.
        assert later["started_at"] == earlier["completed_at"]
    assert all(r["status"] == "completed" for r in records)


def test_raising_max_concurrent_runs_starts_waiting_runs(make_sim: Callable) -> None:
    sim, api = make_sim(speed=2.0, faults=Faults(max_concurrent_runs=1))  # poster: 6 s
    polls = [api.start(inputs={"prompt": f"r{i}"}).json()["poll_url"] for i in range(2)]
    api.wait(polls[0], until=("running",))
    assert api("GET", polls[1]).json()["status"] == "pending"
    sim.faults = Faults()
    assert api("GET", polls[1]).json()["status"] == "running"


def test_latency_delays_each_request(make_sim: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    sim, api = make_sim(faults=Faults(latency=0.2))
    clock = waiting.SimClock(sim, monkeypatch)  # the server's pause passes on a fake clock, exactly
    started = clock()
    assert api("GET", "/workspaces").status_code == 200
    assert clock() - started >= 0.2 and clock.slept == [0.2]
    assert api("GET", "/workspaces").status_code == 200
    assert clock() - started >= 0.4  # each request, not only the first


def test_cost_lag_hides_charged_cost_for_a_while(make_sim: Callable) -> None:
    sim, api = make_sim(cost_lag=1.0)
    poll = api.start().json()["poll_url"]
    done = api.wait(poll)[-1]
    assert "charged_cost" not in done  # terminal, but the cost has not settled yet
    waiting.until(lambda: "charged_cost" in api("GET", poll).json())
    assert api("GET", poll).json()["charged_cost"] == 0.04
    assert sim.run_records()[0]["charged_cost"] == 0.04


def test_charge_jitter_is_deterministic_and_bounded(make_sim: Callable) -> None:
    sim, api = make_sim(speed=1000.0)
    prompts = ["a", "b", "c", "d", "a"]
    for prompt in prompts:
        api.start(MOTION, {"prompt": prompt})
    waiting.until(lambda: sim.stats()["runs_by_status"]["completed"] == len(prompts))
    charges = [r["charged_cost"] for r in sim.run_records()]
    assert all(0.9 * 0.75 - 1e-9 <= c <= 0.9 * 1.25 + 1e-9 for c in charges)
    assert charges[0] == charges[4] and len(set(charges)) > 1
    assert sim.stats()["total_charged"] == pytest.approx(sum(charges))


def _all_terminal(sim: FloraSimulator) -> bool:
    by_status = sim.stats()["runs_by_status"]
    return by_status["pending"] == 0 and by_status["running"] == 0


def test_same_seed_same_behaviour(make_sim: Callable) -> None:
    outcomes = []
    for _ in range(2):
        sim, api = make_sim(seed=7, faults=Faults(run_failure_rate=0.5))
        for i in range(12):
            api.start(inputs={"prompt": f"s{i}"})
        waiting.until(functools.partial(_all_terminal, sim))
        outcomes.append([(r["status"], r["charged_cost"]) for r in sim.run_records()])
    assert outcomes[0] == outcomes[1]
    assert {status for status, _ in outcomes[0]} == {"completed", "failed"}


# -- media ---------------------------------------------------------------------------------


def _outputs(api: Api, technique_id: str, inputs: dict[str, str]) -> dict[str, requests.Response]:
    done = api.wait(api.start(technique_id, inputs).json()["poll_url"])[-1]
    assert done["status"] == "completed"
    return {
        o["type"]: requests.get(o["url"], timeout=TIMEOUT)
        for o in done["outputs"]
        if o["type"] != "text"
    }


def test_media_files_are_valid(api: Api, sim: FloraSimulator) -> None:
    image = _outputs(api, POSTER, {"prompt": "valid png"})["imageUrl"]
    assert image.headers["Content-Type"] == "image/png"
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n" and image.content[12:16] == b"IHDR"
    assert struct.unpack(">II", image.content[16:24]) == (256, 256)
    assert image.url.startswith(sim.origin + "/media/") and "/api/v1" not in image.url

    audio = _outputs(api, JINGLE, {"prompt": "valid wav"})["audioUrl"]
    assert audio.headers["Content-Type"] == "audio/wav"
    assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
    with wave.open(io.BytesIO(audio.content)) as wav:
        assert wav.getnframes() / wav.getframerate() == pytest.approx(1.0)

    video = _outputs(api, CCTV, {"scene_image": PNG_URL})["videoUrl"]
    assert video.headers["Content-Type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp" and len(video.content) < 50_000

    files = _outputs(api, BRANDBOOK, {"brand_name": "Acme (Pty) Ltd"})
    document = files["documentUrl"].content
    assert files["documentUrl"].headers["Content-Type"] == "application/pdf"
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    assert b"Acme \\(Pty\\) Ltd" in document
    _assert_pdf_xref(document)
    _assert_png_decodes(files["imageUrl"].content)


def _assert_pdf_xref(document: bytes) -> None:
    startxref = int(document.rsplit(b"startxref", 1)[1].split()[0])
    assert document[startxref:].startswith(b"xref")
    entries = document[startxref:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry.split()[0])
        assert document[offset:].startswith(b"%d 0 obj" % number)


def _assert_png_decodes(data: bytes) -> None:
    idat = b""
    pos = 8
    while pos < len(data):
        length, tag = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(
            tag + chunk
        )
        idat += chunk if tag == b"IDAT" else b""
        pos += 12 + length
    assert len(zlib.decompress(idat)) == 256 * (1 + 256 * 3)


def test_media_is_deterministic_and_input_dependent(api: Api, make_sim: Callable) -> None:
    fox = _outputs(api, POSTER, {"prompt": "a red fox"})["imageUrl"].content
    again = _outputs(api, POSTER, {"prompt": "a red fox"})["imageUrl"].content
    owl = _outputs(api, POSTER, {"prompt": "an owl at dusk"})["imageUrl"].content
    assert fox == again and fox != owl
    _, other = make_sim(seed=0)
    assert _outputs(other, POSTER, {"prompt": "a red fox"})["imageUrl"].content == fox
    _, reseeded = make_sim(seed=1)
    assert _outputs(reseeded, POSTER, {"prompt": "a red fox"})["imageUrl"].content != fox


def test_media_needs_no_auth_and_counts_auth_headers(make_sim: Callable) -> None:
    sim, api = make_sim()
    done = api.wait(api.start().json()["poll_url"])[-1]
    url = done["outputs"][0]["url"]
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    assert api("GET", url).status_code == 200  # sent with the session's Authorization
    stats = sim.stats()
    assert stats["media_requests"] == 2 and stats["media_requests_with_auth"] == 1
    assert stats["requests_by_route"]["GET /media"] == 2


# -- assets --------------------------------------------------------------------------------


def test_multipart_asset_upload_round_trip(api: Api, sim: FloraSimulator) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    resp = api(
        "POST",
        "/assets",
        files={"file": ("photo.png", data, "image/png")},
        data={"workspace_id": sim.workspace_id},
    )
    assert resp.status_code == 201, resp.text
    asset = resp.json()
    assert_snake_case(asset)
    assert re.fullmatch(r"asset_[0-9a-f]+", asset["asset_id"])
    assert asset["status"] == "ready" and asset["uploaded_via"] == "direct"
    assert asset["visibility"] == "workspace" and asset["workspace_id"] == sim.workspace_id
    assert asset["content_type"] == "image/png" and asset["file_name"] == "photo.png"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", asset["created_at"])
    served = requests.get(asset["url"], timeout=TIMEOUT)
    assert served.content == data and served.headers["Content-Type"] == "image/png"
    assert api("GET", f"/assets/{asset['asset_id']}").json() == asset
    # A known asset id is a valid imageUrl input.
    assert api.start(RELIGHT, {"product_image": asset["asset_id"]}).status_code == 201


def test_url_asset(api: Api, sim: FloraSimulator) -> None:
    body = {"source": "https://example.com/clips/dance.mp4", "workspace_id": sim.workspace_id}
    asset = api("POST", "/assets", json=body).json()
    assert asset["uploaded_via"] == "url" and asset["url"] == body["source"]
    assert asset["content_type"] == "video/mp4" and asset["file_name"] == "dance.mp4"
    assert api.start(FOLEY, {"video": asset["asset_id"]}).status_code == 201


def test_asset_errors(api: Api, sim: FloraSimulator) -> None:
    big = b"\0" * (4 * 1024 * 1024 + 1)
    resp = api(
        "POST",
        "/assets",
        files={"file": ("big.png", big, "image/png")},
        data={"workspace_id": sim.workspace_id},
    )
    assert assert_error(resp, 400, "input_validation_error")["fields"][0]["field"] == "file"
    resp = api("POST", "/assets", files={"other": ("a.png", b"x", "image/png")}, data={})
    fields = {f["field"] for f in assert_error(resp, 400, "input_validation_error")["fields"]}
    assert fields == {"file", "workspace_id"}
    resp = api("POST", "/assets", json={"source": "not a url", "workspace_id": "ws_sim_demo"})
    assert assert_error(resp, 400, "input_validation_error")["fields"][0]["field"] == "source"
    assert_error(api("GET", "/assets/asset_nope"), 404, "not_found")


# -- stats, request log, lifecycle -----------------------------------------------------------


def test_stats_count_requests_by_route(make_sim: Callable) -> None:
    sim, api = make_sim()
    polls = [api.start(inputs={"prompt": f"st{i}"}).json()["poll_url"] for i in range(3)]
    api("GET", "/technique-runs")
    outputs = [api.wait(poll)[-1]["outputs"][0]["url"] for poll in polls]
    requests.get(outputs[0], timeout=TIMEOUT)
    stats = sim.stats()
    polls_made = stats["requests_by_route"]["GET /runs/{run_id}"]
    assert polls_made >= 3
    assert stats["requests_by_route"] == {
        "POST /runs/technique": 3,
        "GET /technique-runs": 1,
        "GET /runs/{run_id}": polls_made,
        "GET /media": 1,
    }
    assert stats["requests_total"] == 5 + polls_made
    assert stats["runs_created"] == 3
    assert stats["runs_by_status"] == {"pending": 0, "running": 0, "completed": 3, "failed": 0}
    assert stats["total_charged"] == pytest.approx(0.12)
    assert stats["credits_remaining"] is None
    for key in (
        "rate_limited",
        "errors_injected",
        "drops",
        "idempotency_duplicates",
        "media_requests_with_auth",
    ):
        assert stats[key] == 0
    sim.reset_stats()
    assert sim.stats()["requests_total"] == 0 and sim.stats()["runs_created"] == 3


def test_request_log_never_holds_the_key(make_sim: Callable) -> None:
    sim, api = make_sim(api_keys=("sk_secret_value_123",))
    api.start(headers={"Idempotency-Key": "log-1", "User-Agent": "flora_nb/test"})
    requests.get(
        sim.base_url + "/workspaces",
        headers={"Authorization": "Bearer sk_wrong_456"},
        timeout=TIMEOUT,
    )
    log = sim.requests()
    assert "sk_secret_value_123" not in repr(log) and "sk_wrong_456" not in repr(log)
    first, second = log
    assert first["method"] == "POST" and first["path"] == "/api/v1/runs/technique"
    assert first["route"] == "POST /runs/technique" and first["status"] == 201
    assert first["idempotency_key"] == "log-1" and first["user_agent"] == "flora_nb/test"
    assert first["authorized"] is True
    assert second["status"] == 401 and second["authorized"] is False
    assert "sk_secret" not in repr(sim)


def test_start_and_stop_are_idempotent() -> None:
    sim = FloraSimulator(speed=SPEED)
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    sim.start()
    base = sim.base_url
    sim.start()
    assert sim.base_url == base
    api = Api(sim)
    assert api("GET", "/workspaces").status_code == 200
    sim.stop()
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        api("GET", "/workspaces")  # the pooled keep-alive connection was cut too
    with sim:
        assert sim.base_url == base  # same port, so handed-out poll_urls stay valid
        assert Api(sim)("GET", "/workspaces").status_code == 200
    assert not sim.running


def test_custom_catalog_replaces_builtin(make_sim: Callable) -> None:
    catalog = [
        {
            "technique_id": "tech_custom1",
            "slug": "custom",
            "name": "Custom",
            "run_cost": 0.5,
            "duration_seconds": 2,
            "charge_jitter": 0.0,
            "inputs": [{"id": "text", "name": "Text", "type": "text"}],
            "outputs": [{"id": "doc", "name": "Doc", "type": "documentUrl"}],
        }
    ]
    _, api = make_sim(catalog=catalog)
    listed = api("GET", "/techniques").json()["techniques"]
    assert [t["technique_id"] for t in listed] == ["tech_custom1"]
    assert "duration_seconds" not in listed[0]
    start = api.start("tech_custom1", {"text": "hello"}).json()
    assert start["estimated_seconds"] == pytest.approx(2 / SPEED)
    assert start["charged_cost"] == 0.5


def test_faults_validate_their_values() -> None:
    assert Faults is FaultsClass
    for bad in (
        {"error_rate": 1.5},
        {"rate_limit": 0},
        {"max_concurrent_runs": 0},
        {"credits": -1},
        {"latency": -0.1},
    ):
        with pytest.raises(ValueError):
            Faults(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Faults().error_rate = 0.5  # type: ignore[misc]


def test_cli_prints_exports_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flora_nb.sim._cli import main; raise SystemExit(main())",
            "--speed",
            "5",
            "--api-key",
            "sk_cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        exports = dict(line.strip().removeprefix("export ").split("=", 1) for line in lines[1:])
        assert exports["FLORA_API_KEY"] == "sk_cli"
        assert exports["FLORA_WORKSPACE_ID"] == "ws_sim_demo"
        resp = requests.get(
            exports["FLORA_BASE_URL"] + "/workspaces",
            timeout=TIMEOUT,
            headers={"Authorization": "Bearer sk_cli"},
        )
        assert resp.status_code == 200
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in stderr


# -- the world's scheduler on a fake clock ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _order(spec: Any, i: int) -> StartOrder:
    return StartOrder(
        spec,
        "ws_sim_demo",
        "prj_sim_demo",
        {"prompt": f"w{i}"},
        "POST /runs/technique",
        None,
        lambda run_id: run_id,
    )


def test_scheduler_chains_many_runs_through_a_concurrency_limit() -> None:
    clock = FakeClock()
    world = World(
        faults=Faults(max_concurrent_runs=3), seed=0, speed=1.0, pending_seconds=1.0, clock=clock
    )
    spec = Catalog().get(POSTER)  # 12 s
    runs = [world.start(_order(spec, i)) for i in range(3000)]
    clock.now += 12.0 * 1000 + 1.5  # 1000 waves of three
    world.advance()
    assert world.stats()["runs_by_status"] == {
        "pending": 0,
        "running": 0,
        "completed": 3000,
        "failed": 0,
    }
    starts = sorted(run.started_at for run in runs)
    assert starts[:3] == pytest.approx([clock.now - 12000 - 0.5] * 3)
    for i, run in enumerate(sorted(runs, key=lambda r: r.started_at)[3:], start=3):
        assert run.started_at == pytest.approx(starts[i - 3] + 12.0)


def test_duration_jitter_makes_runs_end_early_and_late_around_an_unchanged_estimate() -> None:
    clock = FakeClock()
    world = World(faults=Faults(duration_jitter=0.3), seed=0, speed=1.0, pending_seconds=0.0, clock=clock)
    spec = Catalog().get(POSTER)  # 12 s
    runs = [world.start(_order(spec, i)) for i in range(400)]
    clock.now += 12.0 * 1.3 + 0.01
    world.advance()
    durations = [run.completed_at - run.started_at for run in runs]
    assert all(12.0 * 0.7 <= d <= 12.0 * 1.3 for d in durations)
    assert min(durations) < 12.0 * 0.75 and max(durations) > 12.0 * 1.25  # both tails are reached
    assert {run.estimate for run in runs} == {12.0}


def test_no_duration_jitter_keeps_every_run_exact_and_other_draws_unchanged() -> None:
    def durations_and_failures(faults: Faults) -> list[tuple[float, bool]]:
        clock = FakeClock()
        world = World(faults=faults, seed=5, speed=1.0, pending_seconds=0.0, clock=clock)
        spec = Catalog().get(POSTER)
        return [(run.duration, run.failure is None) for run in (world.start(_order(spec, i)) for i in range(50))]

    exact = durations_and_failures(Faults(run_failure_rate=0.3))
    jittered = durations_and_failures(Faults(run_failure_rate=0.3, duration_jitter=0.3))
    assert {d for d, _ in exact} == {12.0}
    assert [ok for _, ok in exact] == [ok for _, ok in jittered]  # jitter draws from its own stream
    assert len({d for d, _ in jittered}) > 40


def test_duration_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="duration_jitter"):
        Faults(duration_jitter=1.0)


def test_estimated_seconds_is_the_estimate_not_the_jittered_duration(make_sim: Callable) -> None:
    sim, api = make_sim(faults=Faults(duration_jitter=0.5))
    body = api.start(POSTER).json()
    record = sim.run_records()[0]
    assert body["estimated_seconds"] == round(12.0 / sim.speed, 3)
    assert record["run_id"] == body["run_id"]


# -- natural spread of run times (issue 21, item 5) -------------------------------------------

STORYBOARD = "tech_i9storyboard"  # 24 s, duration_spread 0.25


def _same_inputs(spec: Any, i: int) -> StartOrder:
    return dataclasses.replace(_order(spec, 0), inputs={"script": "a heron lands", "style": "noir"})


def _durations(seed: int, count: int = 40) -> list[float]:
    world = World(faults=Faults(), seed=seed, speed=1.0, pending_seconds=0.0, clock=FakeClock())
    spec = Catalog().get(STORYBOARD)
    return [world.start(_same_inputs(spec, i)).duration for i in range(count)]


def test_repeats_of_the_same_inputs_take_their_own_time_around_an_unchanged_estimate() -> None:
    world = World(faults=Faults(), seed=3, speed=2.0, pending_seconds=0.0, clock=FakeClock())
    spec = Catalog().get(STORYBOARD)
    runs = [world.start(_same_inputs(spec, i)) for i in range(200)]
    durations = [run.duration for run in runs]
    assert len(set(durations)) == len(durations)  # every repeat is its own sample
    assert all(12.0 * 0.75 <= d <= 12.0 * 1.25 for d in durations)
    assert min(durations) < 12.0 * 0.8 and max(durations) > 12.0 * 1.2  # the whole spread is used
    assert {run.estimate for run in runs} == {12.0}  # estimated_seconds stays the catalog's figure


def test_run_times_follow_the_seed() -> None:
    assert _durations(seed=8) == _durations(seed=8)
    assert _durations(seed=8) != _durations(seed=9)


def test_variations_take_different_times_in_the_servers_records(make_sim: Callable) -> None:
    sim, api = make_sim(speed=1000.0)
    for style in ("noir", "pencil sketch", "watercolour", "linocut"):
        api.start(STORYBOARD, {"script": "a heron lands", "style": style})
    waiting.until(lambda: sim.stats()["runs_by_status"]["completed"] == 4)
    took = [r["completed_at"] - r["started_at"] for r in sim.run_records()]
    assert len(set(took)) > 1, took


def test_duration_spread_is_hidden_and_checked() -> None:
    assert all("duration_spread" not in spec.view() for spec in Catalog().search(None))
    assert Catalog().get(POSTER).duration_spread == 0.0  # the timing tests' fixed yardstick
    entry = {**BUILTIN_TECHNIQUES[0], "technique_id": "tech_spread", "duration_spread": 1.5}
    with pytest.raises(ValueError, match="duration_spread"):
        Catalog([entry])
