"""The Run handle's own state: waiting and listeners (a run's Condition is made when first needed)."""

from __future__ import annotations

import dataclasses
import threading

from flora_nb._ledger import Ledger
from flora_nb._run import Run


class _Session:
    def __init__(self) -> None:
        self.failed: list = []

    def _listener_failed(self, callback) -> None:
        self.failed.append(callback)

    listener_failed = _listener_failed  # the name the run engine gives it


def _runs(tmp_path, n: int) -> list[Run]:
    ledger = Ledger(tmp_path / "l.sqlite")
    session = _Session()
    return [Run(session, ledger.get(ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key=f"k{i}",
                                                      technique_id="t", status="running"))) for i in range(n)]


def _with(run: Run, **changes) -> None:
    run.apply_row(dataclasses.replace(run._row, updated_at=run._row.updated_at + 1, **changes))


def test_a_wait_returns_for_its_own_run_not_for_another_runs_change(tmp_path):
    a, b = _runs(tmp_path, 2)
    order: list[str] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        a.wait(timeout=30)
        order.append("a returned")

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    _with(b, status="completed")  # b had no Condition yet: made on first use, never shared with a
    order.append("a applied")
    _with(a, status="completed")
    thread.join(30)
    assert order == ["a applied", "a returned"] and a.done and b.done
    assert a._cond is not None and b._cond is None  # only the run waited on paid for a Condition


def test_listeners_are_per_run_and_one_added_during_a_change_sees_the_next(tmp_path):
    a, b = _runs(tmp_path, 2)
    seen: list[tuple[str, float]] = []
    a.on_change(lambda run: seen.append(("first", run.progress)))
    a.on_change(lambda run: run.on_change(lambda r: seen.append(("late", r.progress))) if run.progress == 10 else None)
    _with(a, progress=10.0)
    _with(b, progress=99.0)  # another run's listeners are its own (none)
    _with(a, progress=20.0)
    assert seen == [("first", 10.0), ("first", 20.0), ("late", 20.0)] and b.progress == 99.0
    assert Run._listeners == ()  # the shared empty default was never changed in place
