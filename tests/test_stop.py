"""Stop means stop, and says what it costs: FLORA cannot cancel a run, so the line says what still runs."""

from __future__ import annotations

import pytest

from flora_nb import Flora
from flora_nb._display import SweepPanel

POSTER = "poster-studio"


@pytest.fixture
def slow(tmp_path):
    with Flora.simulated(speed=1.0, ledger_path=tmp_path / "l.sqlite", confirm_above=None) as fl:  # 12 s runs
        yield fl


def test_sweep_stop_says_what_was_not_started_and_what_will_still_be_charged(slow, capsys):
    sweep = slow.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(10)]}, max_concurrency=2)
    from tests.waiting import until

    until(lambda: sum(1 for r in sweep.runs if r.id) == 2, 30, "two runs on FLORA")
    sweep.stop()
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0, line
    assert "8 variation(s) never started ($0.32 not spent)" in line, line
    assert "2 already sent to FLORA keep running and will be charged (about $0.08)" in line and "cannot cancel" in line
    until(lambda: not sweep.launching, 30, "launching to end")
    assert sum(1 for r in sweep.runs if r.status == "skipped") == 8 and slow.simulator.stats()["runs_created"] == 2


def test_the_form_and_the_panel_have_a_stop_that_says_it_in_place(slow):
    form = slow.form(POSTER)
    assert form.stop_button.disabled  # nothing to stop yet
    form.vary("prompt", [f"p{i}" for i in range(6)])
    form.run_button.click()
    assert form.sweep is not None and not form.stop_button.disabled
    form.stop_button.click()
    assert form.stop_button.disabled and "never started" in form.message.value and "not spent" in form.message.value
    assert slow.simulator.stats()["runs_created"] <= 4  # the sweep's default concurrency: the rest never went

    other = slow.sweep(POSTER, grid={"prompt": [f"q{i}" for i in range(6)]}, max_concurrency=1)
    panel = SweepPanel(other)
    panel.stop_button.click()
    assert panel.stop_button.disabled and "never started" in panel.stopped.value


def test_ctrl_c_in_wait_stops_waiting_not_the_runs_in_one_line(slow, capsys):
    run = slow.run(POSTER, prompt="fox")
    sweep = slow.sweep(POSTER, grid={"prompt": ["a", "b"]})

    def ctrl_c(timeout=None):
        raise KeyboardInterrupt  # what Ctrl-C does to the main thread inside a wait slice

    run._changed.wait = ctrl_c  # only these handles' waits are interrupted, not the poller's
    sweep._slot.wait = ctrl_c
    assert run.wait() is run and sweep.wait() is sweep  # they return: no traceback
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("Stopped waiting for run") and out[1].startswith("Stopped waiting for sweep")
    assert not run.done and slow.engine.poller.stats.running  # still running and tracked


def test_a_stop_while_the_launcher_is_about_to_start_a_run_says_what_really_happens(slow, monkeypatch, capsys):
    """The launcher has a free slot and is checking the budget of its next run when stop() comes: that run
    is either sent (and said to be running) or never started (and said so), as the server's records show."""
    import threading

    from flora_nb._sweep import Sweep

    checking, go = threading.Event(), threading.Event()
    real = Sweep._wait_for_budget

    def paused(self, run):  # the launcher, between its stop check and marking the run starting
        if run.variation == 1:
            checking.set()
            go.wait(30)
        return real(self, run)

    monkeypatch.setattr(Sweep, "_wait_for_budget", paused)
    sweep = slow.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}, max_concurrency=2)
    assert checking.wait(30)
    sweep.stop()
    line = capsys.readouterr().out.strip()
    go.set()
    sweep.wait(60)
    created = slow.simulator.stats()["runs_created"]
    skipped = sum(1 for r in sweep.runs if r.status == "skipped")
    assert f"{skipped} variation(s) never started" in line, line
    assert created == 3 - skipped and created == 1, (line, created)  # variation 0 only; 1 and 2 never sent
