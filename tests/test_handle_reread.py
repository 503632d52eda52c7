"""A handle whose row another session binds (hardening round 2, item 8b): ``Run.wait()`` and
``Run.done`` read a start's row again now and then, so a run bound and finished elsewhere ends
the wait instead of hanging it; ``done`` reads the ledger at most once every half second."""

from __future__ import annotations

import pytest

import flora_nb._run as run_module
from flora_nb import Flora
from flora_nb.sim import FloraSimulator

from .waiting import FakeClock

POSTER = "tech_a1poster"


@pytest.fixture
def sim():
    with FloraSimulator(speed=20.0, seed=8) as server:
        yield server


def _session(sim: FloraSimulator, tmp_path) -> Flora:
    return Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "shared.sqlite", resume=False,
                 poll_interval=(0.05, 0.2))


def _start_held_elsewhere(binder: Flora, holder: Flora):
    """A start written by ``binder`` (not sent yet), and ``holder``'s handle of its row: ``holder``
    neither sends it nor looks for its run."""
    tech = binder.technique(POSTER)
    [theirs] = binder.engine.queue(tech, binder.workspace_id, [{"inputs": {"prompt": "bound elsewhere"},
                                                                "labels": {}}], status="starting")
    mine = holder.engine.adopt(holder.ledger.get(theirs.local_id))
    assert mine is not theirs and mine.status == "starting" and mine.id is None
    return tech, theirs, mine


def test_a_run_another_session_binds_and_finishes_ends_this_sessions_wait(sim, tmp_path):
    with _session(sim, tmp_path) as holder, _session(sim, tmp_path) as binder:
        tech, theirs, mine = _start_held_elsewhere(binder, holder)
        assert not mine.done and holder.status()["tracked"] == 0
        binder.engine.launch(theirs, tech)  # the other session sends it, binds its run id and polls it
        theirs.wait(60)
        mine.wait(30)  # was: "still starting after 30 s" (nothing here ever looked at the row again)
        assert mine.done and mine.status == "completed" and mine.id == theirs.id


def test_a_run_another_session_binds_is_tracked_here_until_it_finishes(sim, tmp_path):
    with _session(sim, tmp_path) as holder, _session(sim, tmp_path) as binder:
        tech, theirs, mine = _start_held_elsewhere(binder, holder)
        binder.poller.stop()  # the binder binds its run id, then never looks again: this session polls it
        binder.engine.launch(theirs, tech)
        assert theirs.id is not None and not theirs.done
        mine.wait(30)
        assert mine.status == "completed" and holder.status()["requests_single"] + holder.status()["requests_batch"] > 0


def test_done_reads_the_ledger_at_most_every_half_second(sim, tmp_path, monkeypatch):
    clock = FakeClock(100.0)
    monkeypatch.setattr(run_module, "_monotonic", clock)
    with _session(sim, tmp_path) as holder, _session(sim, tmp_path) as binder:
        _, _, mine = _start_held_elsewhere(binder, holder)
        reads: list[int] = []
        reread = holder.engine.reread
        monkeypatch.setattr(holder.engine, "reread", lambda run: (reads.append(run.local_id), reread(run)))
        assert not any(mine.done for _ in range(1000)) and len(reads) == 1
        clock.advance(0.4)
        assert not mine.done and len(reads) == 1
        clock.advance(0.1)
        assert not any(mine.done for _ in range(1000)) and len(reads) == 2
