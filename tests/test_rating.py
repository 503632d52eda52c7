"""Rating runs: kept in the ledger only, shown in the frames and in compare(), never overwritten by polls."""

from __future__ import annotations

import math

import pytest

import flora_nb as fnb
from flora_nb import Flora

POSTER = "tech_a1poster"  # one required text input "prompt", $0.04, image output


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, seed=3, ledger_path=tmp_path / "l.sqlite") as session:
        yield session


def test_rate_round_trips_through_ledger_frames_and_compare(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": ["cat", "dog", "owl"]}, repeat=2).wait(timeout=60)
    by_prompt = {}
    for run in sweep.runs:
        by_prompt.setdefault(run.inputs["prompt"], []).append(run)
    by_prompt["cat"][0].rate(5, note="  the winner ")
    by_prompt["cat"][1].rate(3)
    by_prompt["dog"][0].rate(2.0)
    assert by_prompt["cat"][0].rating == 5.0 and by_prompt["cat"][0].note == "the winner"
    assert by_prompt["owl"][0].rating is None and by_prompt["owl"][0].note is None

    stored = fl.ledger.get(by_prompt["cat"][0].local_id)
    assert stored.rating == 5.0 and stored.note == "the winner"

    frame = sweep.to_dataframe()
    assert str(frame["rating"].dtype) == "float64" and str(frame["note"].dtype) == "string"
    rated = frame.set_index("run_id")
    assert rated.loc[by_prompt["cat"][0].id, "rating"] == 5.0
    assert rated.loc[by_prompt["cat"][0].id, "note"] == "the winner"
    assert math.isnan(rated.loc[by_prompt["owl"][0].id, "rating"])
    assert rated.loc[by_prompt["owl"][0].id, "note"] is fnb_na()

    runs_frame = fl.runs()
    assert runs_frame["rating"].notna().sum() == 3
    assert list(runs_frame.columns).index("rating") < list(runs_frame.columns).index("input.prompt")

    pivot = sweep.compare(values="rating")["rating"]
    assert pivot.loc["cat"] == 4.0  # mean over the two repeats
    assert pivot.loc["dog"] == 2.0
    assert math.isnan(pivot.loc["owl"])


def fnb_na():
    import pandas as pd

    return pd.NA


def test_rating_survives_polls_and_a_new_session(tmp_path):
    path = tmp_path / "l.sqlite"
    with Flora.simulated(speed=100.0, seed=4, ledger_path=path) as fl:
        run = fl.run(POSTER, {"prompt": "a poster"})
        run.rate(4, note="rated while running")  # the poller keeps writing status after this
        run.wait(timeout=60)
        assert run.status == "completed"
        run.refresh()  # one more poll, through the same path the poller uses
        assert fl.ledger.get(run.local_id).rating == 4.0 and run.note == "rated while running"
        run_id = run.id
        events = [e["note"] for e in fl.ledger.events(run.local_id)]
        assert "rated while running" not in events  # a rating is not a status event
        base_url, sim = fl.endpoint, fl.simulator
        fl.simulator = None  # keep the simulator up for the next session
    try:
        with Flora(api_key=sim.api_key, base_url=base_url, ledger_path=path) as again:
            found = again.find_run(run_id)
            assert found is not None and found.rating == 4.0 and found.note == "rated while running"
            found.rate(5)  # note kept when not given
            assert found.rating == 5.0 and found.note == "rated while running"
            assert again.runs().set_index("run_id").loc[run_id, "rating"] == 5.0
            found.rate(None)
            assert found.rating is None and found.note is None
            assert again.runs()["rating"].isna().all()
    finally:
        sim.stop()


def test_rating_of_a_finished_sweep_run_and_bad_stars(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}).wait(timeout=60)
    run = sweep.runs[1]
    for bad in (0, 6, 3.5, "4", True, float("nan"), [4]):
        with pytest.raises(fnb.InputError, match="whole number of stars from 1 to 5"):
            run.rate(bad)
    with pytest.raises(fnb.InputError, match="note is text"):
        run.rate(3, note=5)
    with pytest.raises(fnb.InputError, match="at most"):
        run.rate(3, note="x" * 5000)
    assert run.rating is None  # nothing was stored by the refused calls
    run.rate(1, note="too dark")
    run.rate(None, note="kept without stars")
    assert run.rating is None and run.note == "kept without stars"
    run.rate(2, note="")
    assert run.rating == 2.0 and run.note is None
    seen = []
    run.on_change(lambda r: seen.append(r.rating))
    run.rate(3)
    assert seen == [3.0]  # live displays hear about a rating like any other change
    # Nothing about ratings ever reaches FLORA.
    routes = fl.simulator.stats()["requests_by_route"]
    assert set(routes) <= {"GET /workspaces", "GET /techniques/{technique_id}", "POST /runs/technique",
                           "GET /technique-runs", "GET /runs/{run_id}"}


def test_a_poll_read_before_a_rating_but_applied_after_it_keeps_the_rating(fl):
    run = fl.run(POSTER, {"prompt": "race"}).wait(timeout=60)
    stale = fl.ledger.get(run.local_id)  # what a poller thread read just before the rating was written
    run.rate(4, note="mine")
    run.apply_row(stale)  # ... and applies only now
    assert run.rating == 4.0 and run.note == "mine" and run.status == "completed"
    assert fl.ledger.get(run.local_id).rating == 4.0
