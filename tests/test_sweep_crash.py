"""A sweep whose kernel is SIGKILLed part way is rebuilt in a new process, compared, resumed and finished:
every variation runs exactly once on a simulator living in a process of its own."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd

from flora_nb import Flora
from tests.waiting import until

SIMULATOR = textwrap.dedent("""
    import json, sys
    from flora_nb.sim import Faults, FloraSimulator
    sim = FloraSimulator(speed=20.0, faults=Faults(latency=0.02), seed=3).start()
    print(json.dumps({"base_url": sim.base_url, "api_key": sim.api_key}), flush=True)
    for line in sys.stdin:
        if line.strip() == "records":
            print(json.dumps(sim.run_records()), flush=True)
        else:
            break
    sim.stop()
""")

KERNEL = textwrap.dedent("""
    import sys, threading
    from flora_nb import Flora
    key, base, ledger = sys.argv[1:4]
    fl = Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05), resume=False)
    sweep = fl.sweep("tech_a1poster", grid={"prompt": [f"k{i:02d}" for i in range(24)]}, max_concurrency=3)
    print(sweep.sweep_id, flush=True)
    threading.Event().wait()
""")

PROMPTS = [f"k{i:02d}" for i in range(24)]


def _started(ledger) -> int:
    if str(ledger).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(ledger), autocommit=True) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM runs WHERE run_id IS NOT NULL").fetchone()[0]
            except psycopg.errors.UndefinedTable:  # the table is not there yet
                return 0
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE run_id IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()


def _records(sim: subprocess.Popen) -> list[dict]:
    sim.stdin.write("records\n")
    sim.stdin.flush()
    return json.loads(sim.stdout.readline())


def test_sweep_killed_with_its_kernel_is_finished_in_a_new_process(tmp_path, ledger_at):
    ledger = ledger_at("ledger")
    sim = subprocess.Popen([sys.executable, "-c", SIMULATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        server = json.loads(sim.stdout.readline())
        kernel = subprocess.Popen([sys.executable, "-c", KERNEL, server["api_key"], server["base_url"], str(ledger)],
                                  stdout=subprocess.PIPE, text=True)
        sweep_id = kernel.stdout.readline().strip()
        # the event: six runs started, the sweep part way
        until(lambda: _started(ledger) >= 6 or kernel.poll() is not None, what="six starts in the ledger", interval=0.005)
        assert kernel.poll() is None, "the kernel died before six runs started"
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.wait(10)
        killed_at = len(_records(sim))
        assert 6 <= killed_at < 24, "the kernel died part way through the sweep"

        with Flora(api_key=server["api_key"], base_url=server["base_url"], ledger_path=ledger,
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0) as fl:
            sweep = fl.get_sweep(sweep_id)
            assert len(sweep.runs) == 24 and sweep.technique.technique_id == "tech_a1poster"
            assert isinstance(sweep.compare(values="status"), pd.DataFrame)
            assert "skipped" in sweep.counts  # never started: waiting for resume(), which spends
            sweep.resume().wait(90)
            table = sweep.compare(values="status")
            counts = sweep.counts
            rows = fl.ledger.rows(fl.endpoint, sweep_id=sweep_id)
            listed = fl.sweeps().set_index("sweep_id").loc[sweep_id]
        records = _records(sim)
    finally:
        sim.stdin.write("quit\n")
        sim.stdin.flush()
        sim.wait(10)
    assert counts == {"completed": 24}
    assert list(table.index) == PROMPTS and set(table.iloc[:, 0]) == {"completed"}
    assert collections.Counter(r["inputs"]["prompt"] for r in records) == collections.Counter(PROMPTS)
    keys = [r["idempotency_key"] for r in records]
    assert len(keys) == len(set(keys)) == 24  # no start sent twice
    by_key = {row.idempotency_key: row for row in rows}
    for record in records:  # every server run is in the ledger, bound to the row of its own start
        assert by_key[record["idempotency_key"]].run_id == record["run_id"]
        assert by_key[record["idempotency_key"]].inputs == record["inputs"]
    assert (listed["completed"], listed["skipped"], listed["queued"]) == (24, 0, 0)
