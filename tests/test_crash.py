"""A kernel killed with SIGKILL in the middle of 20 starts loses nothing and starts nothing twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from typing import Callable

import pytest

from flora_nb import Flora, FloraClient
from flora_nb.sim import Faults, FloraSimulator
from tests.hostile import Front, Req
from tests.waiting import until

CHILD = textwrap.dedent("""
    import sys
    from flora_nb import Flora
    key, base, ledger, tech = sys.argv[1:5]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.05, 0.1), resume=False)
    fl.client.timeout = (1.0, 2.0)  # a start killed mid-POST: FLORA acts on it within 3 s or never
    for i in range(20):
        fl.run(tech, {"prompt": f"crash {i}"})
        print(i, flush=True)
    print("all started", flush=True)
""")


def _text_technique(sim: FloraSimulator) -> tuple[str, str]:
    with FloraClient(api_key=sim.api_key, base_url=sim.base_url) as c:
        for tech in c.techniques():
            if [(i.id, i.type) for i in tech.required_inputs] == [("prompt", "text")]:
                return tech.technique_id, tech.name
    raise AssertionError("the catalog has a technique whose one required input is a text 'prompt'")


def _nth_start(n: int) -> Callable[[Req], bool]:
    """True for the ``n``-th ``POST /runs/technique`` a front passes on (1-based)."""
    starts = itertools.count(1)
    return lambda req: req.method == "POST" and req.path.endswith("/runs/technique") and next(starts) == n


@pytest.mark.parametrize("reached", [True, False], ids=["flora-made-the-run", "post-never-reached-flora"])
def test_sigkill_mid_starts_then_resume(tmp_path, reached, ledger_at):
    ledger = ledger_at("ledger")
    with FloraSimulator(speed=50.0, faults=Faults(latency=0.03), seed=7) as sim, Front(sim.origin) as front:
        tech_id, _ = _text_technique(sim)
        front.hold = _nth_start(11)  # the kernel talks to FLORA through the front
        front.hold_before = not reached
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, sim.api_key, front.origin + "/api/v1", str(ledger), tech_id],
            stdout=subprocess.DEVNULL,
        )
        # Killed inside the 11th start's POST: FLORA has made its run and its answer is on the way back,
        # or the request has not reached FLORA yet. (Both, every time: a sleep landed on one or the other.)
        assert front.held.wait(60), "the kernel sent its 11th start"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        front.release.set()

        with Flora(api_key=sim.api_key, base_url=front.origin + "/api/v1", ledger_path=ledger,  # the kernel's endpoint
                   poll_interval=(0.05, 0.1), reconcile_grace=2.0) as fl:
            for run in fl.resume():
                until(lambda run=run: run.done, what=f"resumed run {run.local_id} to end")
            rows = fl.ledger.rows(fl.endpoint)
            records = sim.run_records()

    assert 10 <= len(rows) < 20, "the child was killed in the middle of its starts"
    server_keys = [r["idempotency_key"] for r in records]
    assert len(server_keys) == len(set(server_keys)), "no start was sent twice"
    ledger_by_key = {row.idempotency_key: row for row in rows}
    for record in records:  # every run the server created is in the ledger, bound to its own row
        row = ledger_by_key[record["idempotency_key"]]
        assert row.run_id == record["run_id"], (row.status, row.error_code, record)
    assert len(records) == 11 if reached else 10
    for row in rows:
        if row.idempotency_key in set(server_keys):
            assert row.status in ("completed", "failed"), row
        else:  # the POST never reached the server: proved so from its finite window, never re-sent
            assert row.status == "skipped" and row.error_code == "start_not_received", row
