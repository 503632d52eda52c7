"""Callbacks that misbehave (hardening round 2, item 3): ``run.on_change`` listeners are told from the
session's listener thread, so one that exits, blocks, or starts a run and waits for it never stops,
delays or deadlocks the poller; and ``status()`` says whether the poller's thread is alive."""

from __future__ import annotations

import sys
import threading

import pytest

from flora_nb import Flora

from .waiting import until

POSTER = "tech_a1poster"


@pytest.fixture
def fl(tmp_path):
    # Speed 20: a run takes about half a second, so a listener is in place before its run changes.
    with Flora.simulated(speed=20.0, seed=5, ledger_path=tmp_path / "l.sqlite", poll_interval=(0.05, 0.2)) as session:
        yield session


def test_a_listener_that_calls_sys_exit_stops_nothing(fl):
    called = threading.Event()

    def leave(run):
        called.set()
        sys.exit("a listener that ends the program")

    first = fl.run(POSTER, {"prompt": "first"})
    first.on_change(leave)
    first.wait(60)
    assert called.wait(60)
    # Once, this SystemExit ended the poller's thread silently while status() said it was running.
    later = [fl.run(POSTER, {"prompt": f"later {i}"}) for i in range(3)]
    for run in later:
        run.wait(60)
    status = fl.status()
    assert [r.status for r in later] == ["completed"] * 3
    assert status["poller_alive"] and status["poller_running"] and status["listener_errors"] >= 1
    assert "updates: running" in fl.status_text().replace("  ", "")


def test_a_blocked_listener_delays_no_other_run(fl):
    entered, release = threading.Event(), threading.Event()

    def block(run):
        if run.done:  # told when a poll saw it finish (once, on the poller's own thread)
            entered.set()
            release.wait(300)  # a listener stuck on something (a slow widget, a lock) until the test ends

    stuck = fl.run(POSTER, {"prompt": "stuck"})
    stuck.on_change(block)
    try:
        assert entered.wait(60)
        others = [fl.run(POSTER, {"prompt": f"other {i}"}) for i in range(3)]
        for run in others:
            run.wait(30)  # polled and finished while the listener is still blocked
        assert [r.status for r in others] == ["completed"] * 3 and not release.is_set()
        assert stuck.status == "completed" and fl.status()["poller_alive"]
    finally:
        release.set()
    told = threading.Event()
    others[0].on_change(lambda run: told.set())
    others[0].rate(5)  # from the main thread: told at once
    assert told.is_set()


def test_a_listener_can_start_the_next_run_and_wait_for_it(fl):
    chain: list = []

    def then_b(run):
        if run.done and not chain:
            chain.append(run.status)
            chain.append(fl.run(POSTER, {"prompt": "b, after a"}).wait(60))  # once this deadlocked the poller

    a = fl.run(POSTER, {"prompt": "a"})
    a.on_change(then_b)
    until(lambda: len(chain) == 2, what=lambda: f"run b to be started and waited for from a's listener: {chain}")
    b = chain[1]
    assert chain[0] == "completed" and b.status == "completed" and b.id != a.id
    assert fl.status()["listener_errors"] == 0


def test_a_listener_can_start_a_sweep_and_wait_for_it(fl):
    """A sweep counts its runs in flight from their changes: those are told at once, never queued behind
    the listener that waits for the sweep (once this deadlocked: the sweep never freed a slot)."""
    chain: list = []

    def then_sweep(run):
        if run.done and not chain:
            chain.append(fl.sweep(POSTER, grid={"prompt": [f"next {i}" for i in range(4)]}, max_concurrency=1).wait(60))

    a = fl.run(POSTER, {"prompt": "first"})
    a.on_change(then_sweep)
    until(lambda: chain, what="the sweep started and waited for from a's listener")
    assert [r.status for r in chain[0].runs] == ["completed"] * 4


def test_the_poller_survives_a_system_exit_from_its_own_cycle(fl, monkeypatch):
    record = fl.engine.record
    raised = []

    def exit_once(pairs):
        if not raised:
            raised.append(True)
            raise SystemExit("from inside a poll cycle")
        record(pairs)

    monkeypatch.setattr(fl.engine, "record", exit_once)
    run = fl.run(POSTER, {"prompt": "x"}).wait(60)
    status = fl.status()
    assert raised and run.status == "completed"
    assert status["poller_alive"] and status["poller_errors"] >= 1 and "SystemExit" in status["poller_last_error"]


def test_status_says_when_the_poller_thread_has_ended(fl):
    assert fl.status()["poller_alive"]
    fl.poller.stop()
    status = fl.status()
    assert not status["poller_alive"] and not status["poller_running"]
