"""A real Jupyter kernel starts a sweep under faults and is SIGKILLed part way; a new kernel opens
the same ledger against the same simulator (which lives in this process, so it survives the
kernel), resumes, and the invariants of the soak hold against the server's records."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest

from flora_nb._ledger import Ledger
from flora_nb.sim import Faults, FloraSimulator
from tests.waiting import until

from .soak import SoakReport, _check_bindings, _check_costs, _check_duplicates

jupyter_client = pytest.importorskip("jupyter_client")

RUNS = 60

FIRST = textwrap.dedent("""
    from flora_nb import Flora
    fl = Flora(api_key={key!r}, base_url={base!r}, ledger_path={ledger!r}, poll_interval=(0.05, 0.2))
    # a start in flight at the kill may be acted on until its attempt's longest end (connect + read
    # timeouts): the resumed session waits that out before binding; short timeouts keep the wait short
    fl.client.timeout = (2.0, 5.0)
    sweep = fl.sweep("poster-studio", grid={{"prompt": [f"kill {{i}}" for i in range({runs})]}}, max_concurrency=4)
    print("sweep", sweep.sweep_id, flush=True)
""")

SECOND = textwrap.dedent("""
    import json, time
    from flora_nb import Flora
    fl = Flora(api_key={key!r}, base_url={base!r}, ledger_path={ledger!r}, poll_interval=(0.05, 0.2),
               reconcile_grace=2.0)
    deadline = time.monotonic() + 90
    while (fl.poller.tracked or fl.poller.pending_intents) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = fl.status()
    print("STATUS", json.dumps({{k: status[k] for k in ("poller_running", "poller_errors", "tracked",
                                                        "unconfirmed_starts", "reconciled")}}), flush=True)
    fl.close()
""")


def _kernel(tmp_path):
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path), env=dict(os.environ))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def _execute(client, code: str, timeout: float = 120.0) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR " + "\n".join(msg["content"]["traceback"]))
    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    return text


def test_kernel_sigkilled_mid_sweep_then_resumed(tmp_path):
    ledger = str(tmp_path / "ledger.sqlite")
    faults = Faults(error_rate=0.03, error_after_create_rate=0.03, drop_rate=0.03, run_failure_rate=0.1,
                    latency=0.005)
    with FloraSimulator(speed=40.0, faults=faults, seed=5) as sim:
        args = dict(key=sim.api_key, base=sim.base_url, ledger=ledger, runs=RUNS)
        manager, client = _kernel(tmp_path)
        try:
            assert "sweep swp" in _execute(client, FIRST.format(**args))
            until(lambda: len(sim.run_records()) >= 12, what="12 runs on the server")
            os.kill(manager.provisioner.process.pid, signal.SIGKILL)
            manager.provisioner.process.wait(10)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
        started_before_kill = len(sim.run_records())
        assert 12 <= started_before_kill < RUNS, "the kernel died part way through the sweep"

        manager, client = _kernel(tmp_path)
        try:
            text = _execute(client, SECOND.format(**args))
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
        status = json.loads(text.split("STATUS", 1)[1])
        sim.faults = Faults()
        records, stats, requests = sim.run_records(), sim.stats(), sim.requests()

    store = Ledger(ledger)
    rows = store.rows()
    store.close()
    report = SoakReport(runs_planned=RUNS)
    by_run: dict[str, list] = {}
    for row in rows:
        if row.run_id is not None:
            by_run.setdefault(row.run_id, []).append(row)
    _check_bindings(report, records, by_run, rows)
    _check_duplicates(report, records, rows, requests)
    _check_costs(report, records, by_run, stats)
    server_keys = {r["idempotency_key"] for r in records}
    assert status["poller_running"] and status["tracked"] == 0 and status["unconfirmed_starts"] == 0, status
    assert (report.lost, report.wrong_bindings, report.duplicates) == (0, 0, 0), report
    assert report.cost_mismatch < 0.005 and report.charged_server > 0, report
    assert len(rows) == RUNS
    for row in rows:
        if row.status in ("completed", "failed", "skipped"):
            continue
        # A start in flight when the kernel died that never reached the server: shown as
        # unconfirmed, never sent again (the server has no run under its key).
        assert row.error_code == "start_unconfirmed" and row.idempotency_key not in server_keys, row
    assert any(r.status == "skipped" and r.error_code == "interrupted" for r in rows)  # the rest of the sweep
