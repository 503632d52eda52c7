"""A kernel killed with SIGKILL in the middle of 20 starts loses nothing and starts nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from flora_nb import Flora, FloraClient
from flora_nb.sim import Faults, FloraSimulator

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


def test_sigkill_mid_starts_then_resume(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    with FloraSimulator(speed=50.0, faults=Faults(latency=0.03), seed=7) as sim:
        tech_id, _ = _text_technique(sim)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, sim.api_key, sim.base_url, str(ledger), tech_id],
            stdout=subprocess.PIPE, text=True,
        )
        for line in child.stdout:
            if line.strip() == "9":
                time.sleep(0.045)  # land inside the next start's POST
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)

        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger,
                   poll_interval=(0.05, 0.1), reconcile_grace=2.0) as fl:
            for run in fl.resume():
                _settle(run)
            rows = fl.ledger.rows(fl.endpoint)
            records = sim.run_records()

    assert 10 <= len(rows) < 20, "the child was killed in the middle of its starts"
    server_keys = [r["idempotency_key"] for r in records]
    assert len(server_keys) == len(set(server_keys)), "no start was sent twice"
    ledger_by_key = {row.idempotency_key: row for row in rows}
    for record in records:  # every run the server created is in the ledger, bound to its own row
        assert ledger_by_key[record["idempotency_key"]].run_id == record["run_id"], (ledger_by_key[record["idempotency_key"]].status, ledger_by_key[record["idempotency_key"]].error_code, record)
    for row in rows:
        if row.idempotency_key in set(server_keys):
            assert row.status in ("completed", "failed"), row
        else:  # the POST never reached the server: proved so from its finite window, never re-sent
            assert row.status == "skipped" and row.error_code == "start_not_received", row


def _settle(run, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.done:
            return
        time.sleep(0.05)
