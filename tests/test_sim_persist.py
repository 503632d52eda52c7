"""The simulator's saved account (issue 20, item 12): written at most about once a second, off the world's lock.

The account's file is rewritten whole, so writing it on every start made a long sweep on
``Flora.simulated()`` quadratic. A saver thread now writes it when it changed and a second has
passed since its last write, and always on ``stop()``. Time here is a fake clock (the saver's
``monotonic``), so "once a second" is counted exactly; nothing sleeps to hit a moment.
"""

from __future__ import annotations

import threading

import pytest

import flora_nb as fnb
from flora_nb import FloraClient
from flora_nb.sim import Faults, FloraSimulator, _persist
from flora_nb.sim._persist import StateFile
from tests.waiting import TIMEOUT, FakeClock, until

POSTER = "tech_a1poster"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The saver's clock; it moves only when the test says so."""
    fake = FakeClock(1000.0)
    monkeypatch.setattr(_persist, "monotonic", fake)
    return fake


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every full write of an account file."""
    seen: list[str] = []
    real = StateFile.save

    def counted(self: StateFile, data: dict) -> bool:
        seen.append(threading.current_thread().name)
        return real(self, data)

    monkeypatch.setattr(StateFile, "save", counted)
    return seen


def start(client: FloraClient, sim: FloraSimulator, i: int) -> str:
    return client.start_technique_run(POSTER, sim.workspace_id, {"prompt": f"poster {i}"},
                                      idempotency_key=f"persist-key-{i:06d}").run_id


def test_what_was_created_survives_stop_and_reopen(tmp_path, clock, writes):
    state = tmp_path / "acct.json"
    with FloraSimulator(speed=100.0, faults=Faults(credits=1.0), state_path=state) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        made = [start(client, sim, i) for i in range(5)]  # the clock stands still: only stop() writes these
        until(lambda: sim.stats()["runs_by_status"]["completed"] == 5)
        before = sim.stats()
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("flora-sim-save"))
    assert len(writes) <= 2  # on start (nothing yet), and on stop
    with FloraSimulator(speed=100.0, state_path=state) as again, \
            FloraClient(api_key=again.api_key, base_url=again.base_url) as client:
        assert [r["run_id"] for r in again.run_records()] == made
        stats = again.stats()
        assert stats["credits_remaining"] == before["credits_remaining"] == pytest.approx(1.0 - 5 * 0.04)
        assert stats["total_charged"] == pytest.approx(before["total_charged"])
        with pytest.raises(fnb.IdempotencyDuplicateError):
            start(client, again, 3)


def test_full_writes_do_not_grow_with_starts_while_the_clock_stands_still(tmp_path, clock, writes):
    state = tmp_path / "acct.json"
    with FloraSimulator(speed=100.0, state_path=state) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        for i in range(500):
            start(client, sim, i)
        during = len(writes)
    assert during <= 1 and len(writes) <= 2, writes  # one when it started, one on stop: not one per start
    with FloraSimulator(speed=100.0, state_path=state) as again:
        assert again.stats()["runs_created"] == 500


def test_about_one_full_write_per_second_of_starts(tmp_path, clock, writes):
    with FloraSimulator(speed=100.0, state_path=tmp_path / "acct.json") as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        until(lambda: len(writes) == 1, what="the write when the simulator started")
        for i in range(20):
            clock.advance(1.0)
            start(client, sim, i)
            until(lambda n=i + 2: len(writes) == n, what=f"write {i + 2}, after second {i + 1} of starts")
        for i in range(20, 60):  # four starts a second: one write a second
            clock.advance(0.25)
            start(client, sim, i)
        assert len(writes) <= 21 + 10
        assert all(name.startswith("flora-sim-save") for name in writes)  # never in a request's thread
    assert len(writes) <= 21 + 10 + 1


def test_no_write_holds_the_world_lock(tmp_path, clock, monkeypatch):
    sims: list[FloraSimulator] = []
    free: list[bool] = []
    real = StateFile.save

    def probed(self: StateFile, data: dict) -> bool:
        # Another thread must be able to take the world's lock while the file is written.
        lock = sims[0]._world.lock
        got: list[bool] = []

        def take() -> None:
            got.append(lock.acquire(timeout=TIMEOUT))
            if got[0]:
                lock.release()  # an RLock is released by the thread that took it

        probe = threading.Thread(target=take)
        probe.start()
        probe.join()
        free.append(got[0])
        return real(self, data)

    monkeypatch.setattr(StateFile, "save", probed)
    sims.append(FloraSimulator(speed=100.0, state_path=tmp_path / "acct.json"))
    with sims[0] as sim, FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        for i in range(3):
            before = len(free)
            start(client, sim, i)
            clock.advance(1.0)  # the next write is due (a run's later changes may be written with it, or after)
            until(lambda n=before: len(free) > n, what="a write after a start")
    assert free and all(free), free


def test_a_new_simulator_of_the_account_in_this_process_continues_its_latest_changes(tmp_path, clock):
    state = tmp_path / "acct.json"
    first = FloraSimulator(speed=100.0, state_path=state).start()
    try:
        with FloraClient(api_key=first.api_key, base_url=first.base_url) as client:
            made = [start(client, first, i) for i in range(3)]  # not written yet: the clock stands still
        second = FloraSimulator(speed=100.0, state_path=state)  # reads the account: the first writes it first
    finally:
        first.stop()  # taken over: it writes nothing now
    with second, FloraClient(api_key=second.api_key, base_url=second.base_url) as client:
        assert [r["run_id"] for r in second.run_records()] == made
        made.append(start(client, second, 3))
    with FloraSimulator(speed=100.0, state_path=state) as third:
        assert [r["run_id"] for r in third.run_records()] == made


def test_a_failed_write_is_quiet_and_stop_writes_what_is_left(tmp_path, clock, monkeypatch, capfd):
    failing = [True]
    failed: list[str] = []
    real = StateFile.save

    def flaky(self: StateFile, data: dict) -> bool:
        if failing[0]:
            failed.append(threading.current_thread().name)
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(StateFile, "save", flaky)
    state = tmp_path / "acct.json"
    with FloraSimulator(speed=100.0, state_path=state) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        made = start(client, sim, 0)
        until(lambda: failed, what="a failed write in the saver's thread")
        failing[0] = False  # the disk has room again
    assert failed[0].startswith("flora-sim-save")
    out, err = capfd.readouterr()
    assert out == "" and "Traceback" not in err and "No space" not in err
    with FloraSimulator(speed=100.0, state_path=state) as again:
        assert [r["run_id"] for r in again.run_records()] == [made]


def test_a_new_simulator_of_the_account_in_this_process_takes_its_port_over(tmp_path, clock):
    """``%flora connect --sim`` again: the new simulator serves where the old one did (URLs other kernels
    sharing the account hold stay valid), with the old one's latest changes; the old one stops serving."""
    state = tmp_path / "acct.json"
    first = FloraSimulator(speed=100.0, state_path=state).start()
    with FloraClient(api_key=first.api_key, base_url=first.base_url) as client:
        made = [start(client, first, i) for i in range(2)]  # not written yet: the clock stands still
        second = FloraSimulator(speed=100.0, state_path=state).start()
        try:
            assert second.base_url == first.base_url and not first.running
            assert [r["run_id"] for r in second.run_records()] == made
            assert client.get_run(made[0]).run_id == made[0]  # the same URL, answered by the new one
            assert _persist.read_address(state.with_suffix(".address.json"))["port"] == second._port
        finally:
            first.stop()  # taken over: it neither writes nor lets the account go
            assert _persist.read_address(state.with_suffix(".address.json")) is not None
            second.stop()
    assert not state.with_suffix(".address.json").exists()  # nobody serves it now
