"""Sweeps that outlive their session: the plan in the ledger, get_sweep, resume, retry_failed, stop, reuse, late charges."""

from __future__ import annotations

import collections

import pandas as pd
import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._poller import SETTLE_POLLS
from flora_nb.sim import Faults, FloraSimulator
from tests.waiting import until

POSTER = "tech_a1poster"
JINGLE = "tech_h8jingle"


def _session(sim: FloraSimulator, ledger, **options) -> Flora:
    options.setdefault("poll_interval", (0.02, 0.05))
    options.setdefault("reconcile_grace", 2.0)
    return Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, **options)


def _server_inputs(sim: FloraSimulator) -> collections.Counter:
    return collections.Counter(tuple(sorted(r["inputs"].items())) for r in sim.run_records())


def test_get_sweep_in_a_later_session_compares_like_the_original(tmp_path, ledger_at):
    ledger = ledger_at("l")
    with FloraSimulator(speed=100.0, seed=3) as sim:
        with _session(sim, ledger) as fl:
            empty = fl.sweeps()
            assert len(empty) == 0 and "spent" in empty and empty["created"].dtype == "datetime64[ns, UTC]"
            sweep = fl.sweep(JINGLE, grid={"prompt": ["sea", "city"], "style": ["jazz", "punk"]}, repeat=2,
                             budget=1.0, max_concurrency=3, labels={"study": "j"}).wait(60)
            before = sweep.compare(aggfunc="sum")
            costs_before = sweep.costs()
            assert fl.get_sweep(sweep.sweep_id) is sweep  # this session's own handle
        with _session(sim, ledger) as later:
            again = later.get_sweep(sweep.sweep_id)
            assert again is not sweep and again.done and again.counts == {"completed": 8}
            assert (again.technique.technique_id, again.budget, again.max_concurrency) == (JINGLE, 1.0, 3)
            assert again.varied == ["prompt", "style"] and again.plan.repeat_index == [0, 1] * 4
            pd.testing.assert_frame_equal(again.compare(aggfunc="sum"), before)
            pd.testing.assert_frame_equal(again.costs(), costs_before)
            assert again.to_dataframe()["label.study"].eq("j").all()
            assert again.spent == pytest.approx(sim.stats()["total_charged"])
            assert again.wait(5) is again
            frame = later.sweeps()
            assert list(frame.columns[:2]) == ["sweep_id", "technique"]
            row = frame.set_index("sweep_id").loc[sweep.sweep_id]
            assert (row["variations"], row["completed"], row["failed"], row["skipped"], row["queued"]) == (4, 8, 0, 0, 0)
            assert row["spent"] == pytest.approx(sim.stats()["total_charged"]) and row["budget"] == 1.0
            assert frame["created"].dtype == "datetime64[ns, UTC]"
            with pytest.raises(fnb.InputError, match="no sweep 'swp_nope'.*fl.sweeps"):
                later.get_sweep("swp_nope")


def test_stop_from_another_session_then_resume_there(tmp_path, ledger_at):
    ledger = ledger_at("l")
    prompts = [f"p{i}" for i in range(8)]
    with FloraSimulator(speed=20.0, seed=5) as sim:
        with _session(sim, ledger) as a, _session(sim, ledger, resume=False) as b:
            sweep = a.sweep(POSTER, grid={"prompt": prompts}, max_concurrency=1)
            until(lambda: sim.stats()["runs_created"] >= 1)
            b.get_sweep(sweep.sweep_id).stop()  # another kernel: through the ledger
            sweep.wait(60)
            started = sim.stats()["runs_created"]
            assert 1 <= started < 8 and sweep.stop_reason == "stopped"
            assert {r.error_code for r in sweep.runs if r.status == "skipped"} == {"stopped"}
            resumed = b.get_sweep(sweep.sweep_id).resume().wait(60)
            assert resumed.counts == {"completed": 8}
        assert _server_inputs(sim) == collections.Counter((("prompt", p),) for p in prompts)  # each once


def test_resume_stays_within_what_is_left_of_the_budget(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0, seed=6) as sim, _session(sim, ledger_at("l")) as fl:
        fl.sweep(POSTER, grid={"prompt": ["w1", "w2", "w3"]}).wait(60)  # the price is known: 1.0x
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(6)]}, budget=0.24, max_concurrency=1)
        until(lambda: sim.stats()["runs_created"] >= 3 + 4)
        sweep.stop().wait(60)
        done = sweep.counts["completed"]
        assert sweep.resume().wait(60).counts == {"completed": 6}  # 6 x $0.04 = the budget
        assert done >= 4 and sim.stats()["runs_created"] == 3 + 6


def test_resume_after_the_budget_ran_out_sends_nothing_until_it_is_raised(tmp_path, ledger_at):
    with FloraSimulator(speed=300.0, seed=1) as sim, _session(sim, ledger_at("l")) as fl:
        sweep = fl.sweep("image-to-motion", grid={"prompt": [f"wave {i}" for i in range(4)]}, budget=3.60).wait(60)
        assert sweep.counts == {"completed": 3, "skipped": 1} and sweep.stop_reason == "budget"
        assert "budget of $3.60" in next(r.error_message for r in sweep.runs if r.status == "skipped")
        assert sweep.resume().wait(60).counts == {"completed": 3, "skipped": 1}  # what is left does not fit
        assert sim.stats()["runs_created"] == 3
        assert sweep.resume(budget=5.0).wait(60).counts == {"completed": 4}  # a raised budget
        assert fl.get_sweep(sweep.sweep_id).budget == 5.0
        assert fl.ledger.get_sweep(fl.endpoint, sweep.sweep_id)["budget"] == 5.0
        assert sim.stats()["runs_created"] == 4 and sim.stats()["total_charged"] <= 5.0


def test_retry_failed_starts_new_runs_with_new_keys(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0, seed=8, faults=Faults(run_failure_rate=0.5)) as sim:
        with _session(sim, ledger_at("l")) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(10)]}).wait(60)
            failed = [r for r in sweep.runs if r.status == "failed"]
            assert failed, "seed 8 fails some runs"
            sim.faults = Faults()
            sweep.retry_failed(codes=[r.error_code for r in failed]).wait(60)  # every code, moderated ones too
            assert sweep.counts == {"completed": 10}
            assert sorted(r.variation for r in sweep.runs) == list(range(10))
            records = sim.run_records()
            assert len(records) == 10 + len(failed)
            keys = [r["idempotency_key"] for r in records]
            assert len(set(keys)) == len(keys)  # every retry is a new start with its own key
            frame = sweep.to_dataframe()
            assert len(frame) == 10 and set(frame["status"]) == {"completed"}
            assert len(fl.runs(sweep_id=sweep.sweep_id)) == 10 + len(failed)  # the failures stay in the ledger
            summary = fl.sweeps().set_index("sweep_id").loc[sweep.sweep_id]
            assert (summary["completed"], summary["failed"], summary["runs"]) == (10, 0, 10)
            assert sweep.retry_failed().wait(10).counts == {"completed": 10}  # nothing failed: nothing sent
            assert len(sim.run_records()) == 10 + len(failed)


def test_reuse_with_repeat_takes_distinct_runs(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0, seed=9) as sim, _session(sim, ledger_at("l")) as fl:
        first = fl.sweep(POSTER, grid={"prompt": ["a"]}, repeat=3).wait(60)
        originals = {r.id for r in first.runs}
        plan = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}, repeat=3, reuse=True, dry_run=True)
        assert plan["reusable"].tolist() == [True] * 3 + [False] * 3
        assert set(plan["reused_from"].dropna()) == originals
        again = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}, repeat=3, reuse=True).wait(60)
        reused = [r.reused_from for r in again.runs if r.reused_from]
        assert sorted(reused) == sorted(originals)  # three distinct runs, not one three times
        assert sim.stats()["runs_created"] == 3 + 3
        four = fl.sweep(POSTER, grid={"prompt": ["a"]}, repeat=4, reuse=True).wait(60)
        assert sum(1 for r in four.runs if r.reused_from) == 3 and sim.stats()["runs_created"] == 7


def test_a_late_charge_is_picked_up_after_the_settle_window(tmp_path, ledger_at):
    ledger = ledger_at("l")
    with FloraSimulator(speed=100.0, seed=10, cost_lag=4.0) as sim:
        with _session(sim, ledger) as fl:
            run = fl.run(POSTER, {"prompt": "slow bill"}).wait(30)
            assert run.charged_cost is None
            until(lambda: run.charged_cost is not None)
            assert run.charged_cost == pytest.approx(0.04)
            polls = sim.stats()["requests_by_route"]["GET /runs/{run_id}"]
            assert polls > SETTLE_POLLS  # it outlived the settle window ...
            assert polls < SETTLE_POLLS + 25  # ... and was then checked at a low cadence
            sweep = fl.sweep(POSTER, grid={"prompt": ["x", "y"]}).wait(30)
            sweep_id = sweep.sweep_id
        with _session(sim, ledger, resume=False) as later:  # not re-attached on open: resume() looks again
            again = later.get_sweep(sweep_id)
            assert later.poller.tracked == 0
            again.resume()
            until(lambda: all(r.charged_cost is not None for r in again.runs))
            assert again.spent == pytest.approx(0.08) and sim.stats()["runs_created"] == 3


def test_skipped_runs_cost_nothing_and_old_ledgers_are_migrated(tmp_path):
    import sqlite3

    from flora_nb._ledger import _MIGRATIONS, Ledger

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for script in _MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("INSERT INTO runs (endpoint, workspace_id, idempotency_key, technique_id, status, intent_at, updated_at,"
               " sweep_id, variation, inputs) VALUES ('e', 'ws', 'k', 'tech_a', 'skipped', 1, 1, 'swp_old', 0, '{}')")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    ledger = Ledger(path)
    [row] = ledger.rows("e")
    assert row.charged_cost == 0.0 and row.retry_of is None
    [summary] = ledger.sweep_summaries("e")  # a sweep from before plans were kept is still listed
    assert summary["sweep_id"] == "swp_old" and summary["counts"] == {"skipped": 1}


def test_resume_resends_an_unconfirmed_start_with_its_own_key(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0, seed=11) as sim, _session(sim, ledger_at("l"), reconcile_grace=0.5,
                                                               max_retries=0) as fl:
        fl.technique(POSTER), fl.workspace_id  # known before FLORA goes away
        sim.stop()  # the start never reaches FLORA: its answer is lost, no run exists
        sweep = fl.sweep(POSTER, grid={"prompt": ["lost", "fine"]}, max_concurrency=1)
        until(lambda: sweep.runs[0].error_code == "start_lost")
        sim.start()
        sweep.wait(60)
        lost, fine = sweep.runs
        # proved never received (no run in its finite window on the server): skipped at $0, not guessed
        assert lost.status == "skipped" and lost.error_code == "start_not_received" and lost.charged_cost == 0.0
        assert fine.status == "completed" and sim.stats()["runs_created"] == 1
        sweep.resume().wait(60)
        assert lost.status == "completed" and lost.id is not None
        records = {r["idempotency_key"]: r for r in sim.run_records()}
        assert len(records) == 2 and records[lost.idempotency_key]["run_id"] == lost.id  # the same key, once
        assert records[lost.idempotency_key]["inputs"] == {"prompt": "lost"}


# ------------------------------------------------------------------ the magic

from IPython.core.error import UsageError  # noqa: E402

from tests import test_magic  # noqa: E402
from tests.test_magic import cell, session  # noqa: E402

ip = test_magic.ip  # the magic test's shell fixture


def test_magic_sweeps_resume_retry_wait_and_stop_any_ledger_sweep(ip, capsys):
    fl = session(ip)
    sweep = cell(ip, "%flora sweep poster-studio prompt=[a,b,c,d,e,f] --max-concurrency 1")
    cell(ip, "%flora stop")
    cell(ip, f"%flora wait {sweep.sweep_id}")
    assert sweep.counts.get("skipped", 0) >= 1
    frame = cell(ip, "%flora sweeps")
    assert sweep.sweep_id in frame["sweep_id"].tolist()
    resumed = cell(ip, f"%flora sweep --resume {sweep.sweep_id} --budget 1")
    cell(ip, f"%flora wait {sweep.sweep_id}")
    assert resumed is sweep and sweep.counts == {"completed": 6} and sweep.budget == 1.0

    fl.simulator.faults = Faults(run_failure_rate=1.0)
    cell(ip, "%flora sweep poster-studio prompt=[x,y] -o s_fail")
    failing = ip.user_ns["s_fail"].wait(30)
    assert failing.counts == {"failed": 2}
    fl.simulator.faults = Faults()
    cell(ip, f"%flora sweep --retry-failed {failing.sweep_id}")
    cell(ip, f"%flora wait {failing.sweep_id}")
    assert failing.counts == {"completed": 2}

    with Flora(api_key=fl.simulator.api_key, base_url=fl.endpoint, ledger_path=fl.ledger.path,
               poll_interval=(0.02, 0.05), resume=False) as other:  # another kernel on the same ledger
        elsewhere = other.sweep("poster-studio", grid={"prompt": ["p", "q"]})
        waited = cell(ip, f"%flora wait {elsewhere.sweep_id}")  # rebuilt from the ledger here
        assert waited is not elsewhere and waited.counts == {"completed": 2}
        capsys.readouterr()
        cell(ip, f"%flora stop {elsewhere.sweep_id}")
        assert "had already finished (2 completed); nothing to stop" in capsys.readouterr().out
        assert not other.ledger.stop_requested(elsewhere.sweep_id)  # nothing left to stop
    with pytest.raises(UsageError, match="give a technique, or --resume"):
        cell(ip, "%flora sweep")
    with pytest.raises(UsageError, match="only the SWEEP_ID"):
        cell(ip, f"%flora sweep poster-studio --resume {sweep.sweep_id}")
    with pytest.raises(UsageError, match="no sweep 'swp_gone'"):
        cell(ip, "%flora stop swp_gone")


def test_magic_connect_budget_is_the_session_budget(ip):
    fl = cell(ip, "%flora connect --sim --speed 100 --budget 0.05")
    assert fl.budget == 0.05
    cell(ip, "%flora run poster-studio prompt=a --wait")  # holds $0.05 until charged $0.04
    with pytest.raises(UsageError, match="^%flora run: The session budget of \\$0.05"):
        cell(ip, "%flora run poster-studio prompt=b")
    assert fl.simulator.stats()["runs_created"] == 1


def test_resume_while_a_lost_start_is_being_looked_for_never_sends_it_again(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0, seed=12, faults=Faults(drop_rate=1.0)) as sim, \
            _session(sim, ledger_at("l"), max_retries=0) as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": ["dropped"]})  # FLORA makes the run, its answer is lost
        until(lambda: sim.stats()["runs_created"] == 1)
        sim.faults = Faults()
        sweep.resume().wait(60)  # the lost start is found (or awaited), never resent
        [run] = sweep.runs
        assert run.status == "completed" and run.id == sim.run_records()[0]["run_id"]
        assert sim.stats()["runs_created"] == 1
        assert sim.stats()["requests_by_route"]["POST /runs/technique"] == 1
