"""Lone surrogates ("\\ud800": valid JSON, a valid Python str, not UTF-8) from the server and from the user.

Server text is made storable where it is parsed (U+FFFD) and one bad row never blocks the poller's
batch write; user text holding one is refused with ``InputError`` before anything is written or sent.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._ledger import Ledger

from .hostile import KEY, TECH, WS, FakeFlora, Reply, run_json

BAD = "\ud800"  # json.dumps spells it \ud800 in the body: valid JSON that no UTF-8 text can hold


@pytest.fixture
def api():
    server = FakeFlora()
    yield server
    server.close()


def session_of(api: FakeFlora, tmp_path: Path) -> Flora:
    return Flora(api_key=KEY, base_url=api.base_url, workspace=WS, ledger_path=tmp_path / "ledger.sqlite",
                 resume=False, poll_interval=(0.05, 0.2), max_retries=0)


# ------------------------------------------------------------------ server text


def _listing_with_one_bad_message(api: FakeFlora) -> None:
    """Single polls say nothing new; the history listing says every run is final, run 2 failed with a lone
    surrogate in its message: only the batch write can make the runs final."""
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, status="running"))

    def listing(req):
        items = [run_json(f"run_{n:04d}", status="failed", error_code="gpu", error_message=f"GPU {BAD} lost")
                 if n == 2 else run_json(f"run_{n:04d}") for n in range(api.started, 0, -1)]
        return Reply(200, {"technique_runs": items, "meta": {}})
    api.on_list = listing


def test_a_lone_surrogate_in_one_failed_runs_message_never_blocks_the_batch(api, tmp_path):
    _listing_with_one_bad_message(api)
    assert b'"GPU \\ud800 lost"' in Reply(200, run_json("r", error_message=f"GPU {BAD} lost")).payload()
    with session_of(api, tmp_path) as fl:
        runs = [fl.run(TECH, {"prompt": f"p{n}"}) for n in range(5)]
        for run in runs:
            run.wait(10)  # before: the batch write failed every cycle and every run stayed running
        assert [r.status for r in runs] == ["completed", "failed", "completed", "completed", "completed"]
        assert runs[1].error_message == "GPU \ufffd lost" and runs[1].error_code == "gpu"
        rows = {r.run_id: r for r in fl.ledger.rows(fl.endpoint)}
        assert rows["run_0002"].error_message == "GPU \ufffd lost" and rows["run_0002"].status == "failed"
        assert all(rows[f"run_{n:04d}"].charged_cost == 0.25 for n in (1, 3, 4, 5))
        assert fl.ledger.rows_not_written == 0 and fl.status()["poller_errors"] == 0  # before: one per cycle


def test_write_back_writes_every_other_row_when_one_cannot_be_stored(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ids = ledger.add_intents([{"endpoint": "e", "workspace_id": "ws", "idempotency_key": f"k{n}", "technique_id": "t",
                               "status": "running", "run_id": f"run_{n}"} for n in range(4)])
    rows = [ledger.get(i) for i in ids]
    # Text the parser did not see (e.g. an error envelope), and a number SQLite cannot hold at all.
    changes = [(rows[0], {"status": "completed", "charged_cost": 0.04}),
               (rows[1], {"status": "failed", "error_message": f"boom {BAD}", "outputs": [{"url": BAD}]}),
               (rows[2], {"status": "completed", "progress": 2 ** 70}),
               (rows[3], {"status": "completed", "charged_cost": 0.05})]
    written = ledger.write_back(changes)
    assert sorted(written) == [ids[0], ids[1], ids[3]] and written == {i: ledger.get(i) for i in written}
    assert ledger.get(ids[1]).error_message == "boom \ufffd" and ledger.get(ids[1]).outputs == [{"url": "\ufffd"}]
    assert [ledger.get(i).status for i in ids] == ["completed", "failed", "running", "completed"]
    assert ledger.rows_not_written == 1 and ledger.total_charged("e") == pytest.approx(0.09)
    assert [e["status"] for e in ledger.events(ids[1])] == ["running", "failed"]


def test_server_text_is_made_storable_where_it_is_parsed():
    from flora_nb._models import RunState, Technique

    state = RunState.from_api({"run_id": "r", "status": "failed", "error_code": f"c{BAD}", "error_message": BAD,
                               "technique": {"technique_id": "t", "name": f"T{BAD}"}, "odd": {f"k{BAD}": [BAD]}})
    assert (state.error_code, state.error_message, state.technique_name) == ("c\ufffd", "\ufffd", "T\ufffd")
    assert state.extra == {"odd": {"k\ufffd": ["\ufffd"]}}
    tech = Technique.from_api({"technique_id": "t", "name": BAD, "description": f"a {BAD}",
                               "inputs": [{"id": "prompt", "description": BAD}]})
    assert (tech.name, tech.description, tech.inputs[0].description) == ("\ufffd", "a \ufffd", "\ufffd")
    with pytest.raises(fnb.InvalidResponseError, match="run_id"):  # an id is no text to mend: refused as before
        RunState.from_api({"run_id": f"run{BAD}", "status": "completed"})
    pair = json.loads('"\\ud83d\\ude00"')  # a whole pair is one character once parsed: kept as it is
    assert pair == "😀" and RunState.from_api({"run_id": "r", "error_message": pair}).error_message == "😀"


# ------------------------------------------------------------------ user text


def _nothing_sent(sim, fl: Flora) -> None:
    assert sim.run_records() == [] and fl.ledger.rows() == []


@pytest.mark.parametrize("call, what", [
    (lambda fl: fl.run("tech_a1poster", {"prompt": f"a fox {BAD}"}), "input 'prompt'"),
    (lambda fl: fl.run("tech_a1poster", {"prompt": "a fox"}, labels={"tag": "x\udcff"}), "labels"),
    (lambda fl: fl.run("tech_a1poster", {"prompt": "a fox"}, workspace=f"ws{BAD}"), "workspace_id"),
    (lambda fl: fl.sweep("tech_a1poster", grid={"prompt": ["a", f"b{BAD}"]}), "input 'prompt'"),
    (lambda fl: fl.sweep("tech_a1poster", grid={"prompt": ["a", "b"]}, labels={BAD: 1}), "labels"),
], ids=["prompt", "label", "workspace", "sweep-input", "sweep-label-key"])
def test_user_text_with_a_lone_surrogate_is_refused_before_anything_is_written_or_sent(sim, tmp_path, call, what):
    with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite", resume=False) as fl:
        with pytest.raises(fnb.InputError, match="surrogate") as info:
            call(fl)
        assert what in str(info.value) and "\\ud" in str(info.value)  # the character shown escaped, printable
        _nothing_sent(sim, fl)
        assert fl.ledger.sweep_summaries(fl.endpoint) == []


def test_a_note_with_a_lone_surrogate_is_refused_and_the_old_note_kept(sim, tmp_path):
    with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite", resume=False) as fl:
        run = fl.run("tech_a1poster", {"prompt": "a fox"}).wait(30)
        run.rate(4, note="nice")
        with pytest.raises(fnb.InputError, match="note.*surrogate"):  # before: a raw UnicodeEncodeError
            run.rate(5, note=f"nicer {BAD}")
        stored = fl.ledger.get(run.local_id)
        assert (run.rating, run.note) == (stored.rating, stored.note) == (4.0, "nice")


def test_lookups_with_a_lone_surrogate_are_input_errors_never_unicode_errors(sim, tmp_path):
    with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite", resume=False) as fl:
        for lookup in (lambda: fl.get_sweep(f"swp_{BAD}"), lambda: list(fl.ledger.iter_raw(technique=BAD)),
                       lambda: fl.ledger.rows(sweep_id=BAD), lambda: fl.find_run(f"run_{BAD}")):
            with pytest.raises(fnb.InputError, match="surrogate"):
                lookup()
    assert sqlite3.connect(tmp_path / "l.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
