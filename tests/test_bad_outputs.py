"""One malformed output never holds a run hostage: the run keeps its status and charge, the bad output is
marked (a bad id) or dropped (nothing usable), and the parsed state says so in ``problems``."""

from __future__ import annotations

from pathlib import Path

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._models import RunState

from .hostile import KEY, TECH, WS, FakeFlora, Reply, run_json


@pytest.fixture
def api():
    server = FakeFlora()
    yield server
    server.close()


def session_of(api: FakeFlora, tmp_path: Path) -> Flora:
    return Flora(api_key=KEY, base_url=api.base_url, workspace=WS, ledger_path=tmp_path / "ledger.sqlite",
                 resume=False, poll_interval=(0.05, 0.2), max_retries=0)


def outputs_of(api: FakeFlora) -> list:
    media = api.base_url + "/media"
    return [{"output_id": "image", "type": "imageUrl", "url": f"{media}/a.png"},
            {"output_id": "img\x00nul", "type": "imageUrl", "url": f"{media}/b.png"},  # an id with a NUL byte
            None,
            {"output_id": "caption", "type": "text", "url": {"not": "text"}}]


def test_a_run_with_one_malformed_output_keeps_its_status_and_charge(api, tmp_path):
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, outputs=outputs_of(api)))
    api.on_other = lambda req: Reply(200, b"\x89PNG fake", {"Content-Type": "image/png"})
    with session_of(api, tmp_path) as fl:
        run = fl.run(TECH, {"prompt": "a fox"}).wait(10)  # before: every poll was refused, the run stayed pending
        assert (run.status, run.charged_cost) == ("completed", 0.25)
        assert [(o.output_id, o.url.rsplit("/", 1)[-1]) for o in run.outputs] == [("image", "a.png"),
                                                                                 ("img\ufffdnul", "b.png")]
        stored = fl.ledger.get(run.local_id)
        assert (stored.status, stored.charged_cost, len(stored.outputs)) == ("completed", 0.25, 2)
        assert run.error_message.startswith("Some outputs FLORA sent were malformed") and "img" in run.error_message
        saved = run.outputs[1].save(tmp_path)  # the marked id still names a safe file in the folder
        assert saved.parent == tmp_path and "\x00" not in saved.name and saved.read_bytes() == b"\x89PNG fake"
        state = fl.client.get_run(run.id)  # what the poll parsed says what it dropped and marked
        assert [p.split(":", 1)[1].split(" (")[0] for p in state.problems] == [
            " outputs[1].output_id is not an id", " outputs[2] is not an object", " outputs[3].url is not a string"]
        assert ["kept as 'img\ufffdnul'" in p for p in state.problems] == [True, False, False]
    assert len(api.hits("/api/v1/runs/run_0001")) <= 3  # one answer is enough; before: refused without end


def test_the_batch_listing_keeps_runs_whose_outputs_are_partly_malformed(api, tmp_path):
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, status="running"))  # single polls: no news
    api.on_list = lambda req: Reply(200, {"technique_runs": [run_json(f"run_{n:04d}", outputs=outputs_of(api))
                                                             for n in range(api.started, 0, -1)], "meta": {}})
    with session_of(api, tmp_path) as fl:
        runs = [fl.run(TECH, {"prompt": p}) for p in ("a", "b", "c")]
        for run in runs:
            run.wait(10)
        assert [(r.status, r.charged_cost, len(r.outputs)) for r in runs] == [("completed", 0.25, 2)] * 3
        assert fl.status()["invalid_answers"] == 0  # no item of the page was thrown away


def test_malformed_outputs_entries_are_marked_or_dropped_the_rest_kept():
    state = RunState.from_api({"run_id": "r", "status": "completed", "charged_cost": 0.5, "outputs": [
        {"id": "x" * 300, "type": "imageUrl", "url": "u1"},  # too long: cut, kept
        {"output_id": 7, "type": "imageUrl", "url": "u2"},  # not text: kept without an id
        {"output_id": "ok", "type": ["imageUrl"], "url": "u3"},  # its type is unusable: dropped
        "a string"]})
    assert (state.status, state.charged_cost) == ("completed", 0.5)
    assert [(o.output_id, o.url) for o in state.outputs] == [("x" * 256, "u1"), ("", "u2")]
    assert len(state.problems) == 4 and all(p.startswith("FLORA sent a malformed answer: outputs[") for p in state.problems)
    with pytest.raises(fnb.InvalidResponseError, match="outputs"):  # the list itself malformed: still refused whole
        RunState.from_api({"run_id": "r", "status": "completed", "outputs": "not a list"})
    assert RunState.from_api({"run_id": "r", "status": "completed", "outputs": []}).problems == ()
