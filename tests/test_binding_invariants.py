"""The binding promise under every fault we can simulate, checked against the server's own records.

Each test ends with ``invariants.check``: 0 wrong bindings, 0 duplicate starts, 0 server runs
missing from the ledger, charges equal to the server's to the cent, and no row left non-terminal
after ``resume()`` and a wait. Where a client process is killed, the simulator lives in a
process of its own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flora_nb import Flora
from flora_nb._ledger import Ledger
from flora_nb.sim import Faults, FloraSimulator
from tests.invariants import SimProcess, check
from tests.waiting import until

POSTER = "tech_a1poster"

# A kernel that resumes what the ledger holds, then sweeps; it prints its sweep id and runs until killed.
KERNEL = textwrap.dedent("""
    import sys, threading
    from flora_nb import Flora
    key, base, ledger, tag = sys.argv[1:5]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05), reconcile_grace=1.0)
    fl.client.timeout = (1.0, 2.0)  # FLORA acts on a start within 3 s or never: a killed start's window is short
    sweep = fl.sweep("tech_a1poster", grid={"prompt": [f"{tag}-{i:02d}" for i in range(12)]}, max_concurrency=6)
    print(sweep.sweep_id, flush=True)
    if "wait" in sys.argv[5:]:
        sweep.wait(120)
        print("done", flush=True)
        fl.close()
    else:
        threading.Event().wait()
""")


def _kernel(sim: SimProcess, ledger: Path, tag: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KERNEL, sim.api_key, sim.base_url, str(ledger), tag, *extra],
                            stdout=subprocess.PIPE, text=True)


def _started(ledger: Path, sweep_id: str | None = None, *, answered: bool = False) -> int:
    """Rows past "queued" (of one sweep; with ``answered``, only starts FLORA's answer has bound to a run)."""
    store = Ledger(ledger)
    try:
        return sum(1 for row in store.rows(sweep_id=sweep_id)
                   if row.status != "queued" and (row.run_id is not None or not answered))
    finally:
        store.close()


def _settle(sim: SimProcess, ledger: Path, timeout: float = 90.0):
    """A new session resumes the ledger and waits until every row is terminal (or the timeout)."""
    with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.02, 0.05),
               reconcile_grace=1.0) as fl:
        fl.resume()
        until(lambda: _all_final(fl), timeout, "every row to be final", interval=0.1, fail=False)  # check() says what is not
    return check(ledger, sim.records(), sim.stats())


def _all_final(fl: Flora) -> bool:
    """Every row of the session's ledger terminal, with its charge known unless it never started."""
    return all(r.status in ("completed", "failed", "skipped") and (r.status == "skipped" or r.charged_cost is not None)
               for r in fl.ledger.rows(fl.endpoint))


def test_sigkill_at_random_moments_during_sweeps_then_resume_and_sweep_again(tmp_path, ledger_at):
    """8 kernels in a row on one ledger, each resuming the last one's dead starts, sweeping the same
    technique and killed at a random moment; some answers dropped. Then one session settles everything."""
    rng = random.Random(5)
    ledger = ledger_at("ledger")
    with SimProcess(speed=50.0, seed=9, faults={"latency": 0.01, "drop_rate": 0.1}) as sim:
        for kill in range(8):
            kernel = _kernel(sim, ledger, f"k{kill}")
            while not (sweep_id := kernel.stdout.readline().strip()).startswith("swp_"):  # recorded and launching
                pass
            # Killed once 1-10 of its own starts have their answer, while the sweep's next ones are in flight.
            # (Counting every row past "queued" counted the rows of the last kernel that this one's resume
            # marked interrupted: it was killed at once, and some runs got no start to FLORA at all.)
            target = rng.randint(1, 10)
            until(lambda target=target, kernel=kernel, sweep_id=sweep_id:
                  _started(ledger, sweep_id, answered=True) >= target or kernel.poll() is not None,
                  what=f"{target} answered starts of kernel {kill}", interval=0.005)
            assert kernel.poll() is None, f"kernel {kill} ended on its own"
            os.kill(kernel.pid, signal.SIGKILL)
            kernel.wait(10)
        report = _settle(sim, ledger)
    assert report.ok, report
    assert report.server_runs >= 8 and report.rows == 8 * 12


def test_two_processes_on_one_ledger_with_dropped_answers(tmp_path, ledger_at):
    ledger = ledger_at("ledger")
    with SimProcess(speed=50.0, seed=4, faults={"latency": 0.01, "drop_rate": 0.3}) as sim:
        kernels = [_kernel(sim, ledger, tag, "wait") for tag in ("a", "b")]
        for kernel in kernels:
            lines = [line.strip() for line in kernel.stdout]
            assert lines[-1] == "done" and any(line.startswith("swp_") for line in lines), lines
            kernel.wait(30)
        stats = sim.stats()
        report = _settle(sim, ledger)
    assert stats["drops"] > 0, "some start answers were dropped"
    assert report.ok, report
    assert report.server_runs == 24 and report.rows == 24


@pytest.mark.parametrize("offset", [-1.0, 1.0, 5.0])
def test_server_clock_off_and_every_start_answer_lost(tmp_path, offset, ledger_at):
    """No start answer ever arrives, so nothing but Date headers tells the server's clock: still no guess."""
    with FloraSimulator(speed=50.0, seed=2, clock_offset=offset, faults=Faults(drop_rate=1.0)) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger_at("l"),
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"c{i}" for i in range(10)]}, max_concurrency=5)
            sweep.wait(120)
            assert fl.clock.bounds()[0] <= offset <= fl.clock.bounds()[1]
        report = check(ledger_at("l"), sim.run_records(), sim.stats())
    assert report.ok, report
    assert report.server_runs == 10 and report.exact + report.grouped == 10


def test_drops_and_errors_with_twenty_concurrent_starts(tmp_path, ledger_at):
    faults = Faults(drop_rate=0.3, error_rate=0.2)
    with FloraSimulator(speed=50.0, seed=6, faults=faults) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger_at("l"),
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"e{i:02d}" for i in range(40)]}, max_concurrency=20)
            sweep.wait(180)
            sim.faults = Faults()
            fl.resume()
            until(lambda: _all_final(fl), 60, "every row to be final", interval=0.1, fail=False)  # check() says what is not
        stats = sim.stats()
        report = check(ledger_at("l"), sim.run_records(), stats)
    assert stats["drops"] > 0 and stats["errors_injected"] + stats["errors_after_create"] > 0
    assert report.ok, report
    assert report.rows == 40


CTRL_C = textwrap.dedent("""
    import json, sys
    from flora_nb import Flora, FloraClient
    key, base, ledger = sys.argv[1:4]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05), reconcile_grace=1.0)
    fl.client.timeout = (1.0, 3.0)
    fl.technique("tech_a1poster"), fl.workspace_id
    send_once = FloraClient._send_once
    def announce(self, method, url, *args, **kwargs):
        if method == "POST":
            print("posting", flush=True)  # the parent interrupts us now, in the middle of this POST
        return send_once(self, method, url, *args, **kwargs)
    FloraClient._send_once = announce
    try:
        fl.run("tech_a1poster", {"prompt": "interrupted"})
        print("not interrupted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    FloraClient._send_once = send_once
    [row] = fl.ledger.rows(fl.endpoint)
    print(json.dumps([row.status, row.error_code, row.window_low, row.window_high]), flush=True)
    [run] = list(fl.engine._runs.values())  # the interrupted start (done or being reconciled)
    try:
        run.wait(60)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
    print("settled", flush=True)
    fl.close()
""")


def test_ctrl_c_in_the_middle_of_a_slow_start_never_loses_the_run(tmp_path, ledger_at):
    import json

    ledger = ledger_at("l")
    with SimProcess(speed=50.0, seed=1) as sim:
        child = subprocess.Popen([sys.executable, "-c", CTRL_C, sim.api_key, sim.base_url, str(ledger)],
                                 stdout=subprocess.PIPE, text=True)
        sim.set_faults(latency=0.5)  # every request now takes half a second: the POST is slow
        assert child.stdout.readline().strip() == "posting"
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "interrupted"
        status, code, low, high = json.loads(child.stdout.readline())
        assert (status, code) == ("starting", "start_lost") and low <= high < low + 10  # a finite window
        sim.set_faults()
        lines = [line.strip() for line in child.stdout]  # the wait's error, if it raised one, then "settled"
        child.wait(30)
        report = _settle(sim, ledger)
    assert lines[-1] == "settled"
    assert report.ok, report
    assert report.rows == 1 and report.server_runs + report.not_received == 1


DEAD_START = textwrap.dedent("""
    import sys, threading
    from flora_nb import Flora, FloraClient
    key, base, ledger = sys.argv[1:4]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05))
    fl.client.timeout = (1.0, 2.0)
    fl.technique("tech_a1poster"), fl.workspace_id
    send_once = FloraClient._send_once
    def announce(self, method, url, *args, **kwargs):
        if method == "POST":
            print("posting", flush=True)  # killed now, in the middle of this POST
            threading.Event().wait()
        return send_once(self, method, url, *args, **kwargs)
    FloraClient._send_once = announce
    fl.run("tech_a1poster", {"prompt": "dead"})
""")


def test_a_resumed_dead_start_followed_by_a_sweep_of_the_same_technique(tmp_path, ledger_at):
    """The dead row never reached FLORA; a new session resumes it and sweeps at once, answers dropped."""
    ledger = ledger_at("l")
    with SimProcess(speed=50.0, seed=8, faults={"latency": 0.01}) as sim:
        child = subprocess.Popen([sys.executable, "-c", DEAD_START, sim.api_key, sim.base_url, str(ledger)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "posting"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        sim.set_faults(latency=0.01, drop_rate=0.3)
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.02, 0.05),
                   reconcile_grace=1.0) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"s{i:02d}" for i in range(12)]}, max_concurrency=6)
            sweep.wait(120)
        report = _settle(sim, ledger)
    assert report.ok, report
    assert report.rows == 13 and report.server_runs == 12 and report.not_received == 1


# Two live kernels at once: several techniques, identical inputs repeated, mixed durations, 40% of answers lost.
LIVE_KERNEL = textwrap.dedent("""
    import json, sys
    from flora_nb import Flora
    key, base, ledger, tag = sys.argv[1:5]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05), reconcile_grace=1.0)
    fl.client.timeout = (1.0, 2.0)
    print("ready", flush=True)
    sys.stdin.readline()  # both kernels start sweeping at one signal
    sweeps = [
        fl.sweep("tech_a1poster", grid={"prompt": [f"{tag}-p{i}" for i in range(5)]}, repeat=2, max_concurrency=4),
        fl.sweep("tech_h8jingle", grid={"prompt": ["same", "same again"]}, repeat=3, max_concurrency=3),
        fl.sweep("tech_g7brandbook", grid={"brand_name": ["Acme"]}, repeat=3, max_concurrency=2),
    ]
    for sweep in sweeps:
        sweep.wait(120)
    stuck = [r.local_id for s in sweeps for r in s.runs if not r.done]
    print(json.dumps({"sweeps_done": [s.done for s in sweeps], "stuck": stuck}), flush=True)
    fl.close()
""")


def test_two_live_kernels_sweeping_several_techniques_with_lost_answers(tmp_path, ledger_at):
    """No handle is left behind: each kernel's own sweeps and runs end done, whichever kernel bound them."""
    ledger = ledger_at("ledger")
    with SimProcess(speed=50.0, seed=11, faults={"latency": 0.01, "drop_rate": 0.4, "duration_jitter": 0.5}) as sim:
        kernels = [subprocess.Popen([sys.executable, "-c", LIVE_KERNEL, sim.api_key, sim.base_url, str(ledger), tag],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for tag in ("a", "b")]
        for kernel in kernels:
            assert kernel.stdout.readline().strip() == "ready"
        for kernel in kernels:
            kernel.stdin.write("go\n")
            kernel.stdin.flush()
        results = [json.loads(kernel.stdout.readline()) for kernel in kernels]
        for kernel in kernels:
            kernel.wait(30)
        stats = sim.stats()
        report = _settle(sim, ledger)
    assert stats["drops"] > 0, "some start answers were dropped"
    for result in results:
        assert result == {"sweeps_done": [True, True, True], "stuck": []}, result
    assert report.ok, report
    assert report.rows == 2 * (10 + 6 + 3) == report.server_runs
