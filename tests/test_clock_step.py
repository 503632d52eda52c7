"""The client's wall clock steps (a laptop waking, NTP fixing a VM) while start answers are lost.

Send windows are measured on ``LocalClock`` (monotonic, anchored once to the wall clock), so a step
cannot invert or misplace them; a resend answered "duplicate key" proves FLORA made the run, so such
a start is never declared "not received" (which would say $0 and invite a paid re-run).
Checked against the simulator's own records.
"""

from __future__ import annotations

import time

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._clock import LocalClock
from flora_nb._matching import Candidate, Start, bind
from flora_nb._states import NOT_RECEIVED, UNCONFIRMED
from flora_nb.sim import Faults, FloraSimulator
from tests.invariants import check
from tests.waiting import until

POSTER = "tech_a1poster"
HOUR = 3600.0


class SteppingWall:
    """``time.time`` that jumps by ``step`` seconds once ``jump()`` has been called."""

    def __init__(self, step: float):
        self.real, self.step, self.jumped = time.time, step, False

    def __call__(self) -> float:
        return self.real() + (self.step if self.jumped else 0.0)

    def jump(self) -> None:
        self.jumped = True


def test_local_clock_ignores_wall_steps():
    wall, mono = [1_000_000.0], [50.0]
    clock = LocalClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock.now() == 1_000_000.0 and clock.step() == 0.0
    mono[0] += 2.0
    wall[0] += 2.0 - HOUR  # two seconds pass while the wall clock is set back an hour
    assert clock.now() == 1_000_002.0
    assert clock.step() == -HOUR


@pytest.mark.parametrize("step", [-HOUR, HOUR])
def test_wall_clock_step_while_every_start_answer_is_lost(tmp_path, monkeypatch, step):
    """The wall clock jumps while the first start is out; every answer is lost: every run is still found."""
    wall = SteppingWall(step)
    send_once = fnb.FloraClient._send_once

    def stepping(self, method, url, *args, **kwargs):
        try:
            return send_once(self, method, url, *args, **kwargs)
        finally:
            if method == "POST":
                wall.jump()

    with FloraSimulator(speed=50.0, seed=3, faults=Faults(drop_rate=1.0)) as sim:
        monkeypatch.setattr(time, "time", wall)
        monkeypatch.setattr(fnb.FloraClient, "_send_once", stepping)
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite",
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"s{i}" for i in range(6)]}, max_concurrency=3)
            sweep.wait(120)
            until(lambda: all(r.done and r.charged_cost is not None for r in sweep.runs), 60,
                  "every run final and charged", interval=0.05, fail=False)  # check() says what is not
            rows = fl.ledger.rows()
        report = check(tmp_path / "l.sqlite", sim.run_records(), sim.stats())
    assert wall.jumped
    assert not [r for r in rows if r.error_code == NOT_RECEIVED], "a run FLORA made was called not received"
    assert report.ok, report
    assert report.server_runs == 6 and report.exact + report.grouped == 6


def test_a_made_start_is_never_declared_not_received():
    """The rule: a start FLORA said it made a run for is left undecided, never given "none"."""
    made = Start(1, 100.0, 101.0, made=True)
    plain = Start(1, 100.0, 101.0)
    assert [b.run_id for b in bind([plain], [], (0.0, 0.01), listed_at=200.0)] == [None]
    assert bind([made], [], (0.0, 0.01), listed_at=200.0) == []
    # With a run that only it can have made, it is bound as usual.
    assert [b.run_id for b in bind([made], [Candidate("run_x", 100.5)], (0.0, 0.01), 200.0)] == ["run_x"]
    # Two starts, one run both fit: the made one cannot be the one without a run, so it is exact.
    other = Start(2, 100.0, 101.0)
    found = {b.local_id: (b.run_id, b.exact) for b in bind([made, other], [Candidate("run_x", 100.5)], (0.0, 0.01), 200.0)}
    assert found == {1: ("run_x", True), 2: (None, True)}
    # Two made starts, one run: no assignment gives both a run; wait for the other run to be listed.
    assert bind([made, Start(2, 100.0, 101.0, made=True)], [Candidate("run_x", 100.5)], (0.0, 0.01), 200.0) == []


def test_a_resend_answered_duplicate_is_never_not_received(tmp_path):
    """A lost start whose recorded window is wrong (written on a clock an hour ahead, so its run seems
    to predate it) is resent with its key; FLORA answers "duplicate key": the run exists and was
    charged, so the row is never ``not received``: it stays unconfirmed, saying it was charged."""
    with FloraSimulator(speed=50.0, seed=5) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite",
                   poll_interval=(0.02, 0.05), reconcile_grace=0.5) as fl:
            sim.faults = Faults(credits=0.0)  # the first start is refused (402): a row with its key, no run
            sweep = fl.sweep(POSTER, grid={"prompt": ["w0"]}).wait(60)
            run = sweep.runs[0]
            sim.faults = Faults()
            # Its first attempt made the run, and its answer was lost on a clock an hour ahead.
            made_at = fl.clock.now()
            fl.client.start_technique_run(run.technique_id, run.workspace_id, run.inputs,
                                          idempotency_key=run.idempotency_key)
            fl.engine.update(run, status="starting", error_code=UNCONFIRMED, error_message=None, charged_cost=None,
                             window_low=made_at + HOUR, window_high=made_at + HOUR + 5.0)
            sweep.resume()
            until(lambda: run.error_code in (UNCONFIRMED, NOT_RECEIVED), 60, "the resend's lookup to decide")
            events, row = fl.ledger.events(run.local_id), fl.ledger.get(run.local_id)
        records = sim.run_records()
    assert len(records) == 1 and records[0]["idempotency_key"] == row.idempotency_key
    assert any("idempotency_duplicate" in (e["note"] or "") for e in events), events
    assert (row.status, row.error_code) == ("starting", UNCONFIRMED), (row.status, row.error_code, events)
    assert "charged" in row.error_message and "do not start it again" in row.error_message


def test_a_key_that_only_the_wall_clock_calls_fresh_is_not_resent(tmp_path):
    """The wall clock was set back: by it an unconfirmed start looks minutes old, but it was first sent
    nearly two hours ago on the session's monotonic clock, so its key may be forgotten: never resent."""
    with FloraSimulator(speed=50.0, seed=6) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite",
                   poll_interval=(0.02, 0.05), reconcile_grace=0.5) as fl:
            sim.faults = Faults(credits=0.0)  # a row with its key and no run
            sweep = fl.sweep(POSTER, grid={"prompt": ["old"]}).wait(60)
            run = sweep.runs[0]
            sim.faults = Faults()
            fl.engine.update(run, status="starting", error_code=UNCONFIRMED, error_message=None, charged_cost=None,
                             window_low=fl.clock.now() - 6900.0, window_high=fl.clock.now() - 6890.0)
            posts = sim.stats()["requests_by_route"].get("POST /runs/technique", 0)
            sweep.resume().wait(30)
            assert sim.stats()["requests_by_route"].get("POST /runs/technique", 0) == posts
        assert sim.stats()["runs_created"] == 0
