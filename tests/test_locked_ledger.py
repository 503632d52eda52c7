"""A start whose answer cannot be written: another process holds the ledger's write lock while the POST is out.

FLORA answers 201 and charges; the answer must not be dropped. The error names the run and says it
was started and is tracked; the answer is written as soon as the ledger lets it; later lost starts
of the technique are still reconciled. Checked against the simulator's own records.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._ledger import Ledger
from flora_nb.sim import Faults, FloraSimulator
from tests.invariants import check
from tests.waiting import until

POSTER = "tech_a1poster"

HOLDER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # the write lock, held until told
    print("held", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
""")


class LockHolder:
    """A second process that takes the ledger's write lock and holds it until ``release()``."""

    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0


def test_an_answer_the_locked_ledger_refuses_is_kept_written_and_tracked(tmp_path, monkeypatch):
    monkeypatch.setattr("flora_nb._sql.BUSY_SECONDS", 0.2)  # the lock outlasts the busy timeout at once
    path = tmp_path / "l.sqlite"
    holder: list[LockHolder] = []
    send_once = fnb.FloraClient._send_once

    def lock_while_answered(self, method, url, *args, **kwargs):
        response = send_once(self, method, url, *args, **kwargs)
        if method == "POST" and not holder:
            holder.append(LockHolder(path))  # FLORA has answered; the ledger is now locked by another process
        return response

    with FloraSimulator(speed=50.0, seed=8) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=path,
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0) as fl:
            tech = fl.technique(POSTER)
            monkeypatch.setattr(fnb.FloraClient, "_send_once", lock_while_answered)
            with pytest.raises(fnb.LedgerError) as caught:
                fl.run(tech.technique_id, {"prompt": "locked"})
            monkeypatch.setattr(fnb.FloraClient, "_send_once", send_once)
            (record,) = sim.run_records()
            message = str(caught.value)
            assert record["run_id"] in message and "started" in message and "Do not start it again" in message
            run = fl.find_run(record["run_id"])
            assert run is not None and run.id == record["run_id"]  # the handle knows its run at once
            holder[0].release()
            run.wait(60)
            # A later start of the technique whose answer is lost is still reconciled.
            sim.faults = Faults(drop_rate=1.0)
            second = fl.run(tech.technique_id, {"prompt": "after"})
            sim.faults = Faults()
            second.wait(60)
            until(lambda: run.charged_cost is not None and second.charged_cost is not None, 30, "both charges")
        store = Ledger(path)
        try:
            row = store.get(run.local_id)
            events = store.events(run.local_id)
        finally:
            store.close()
        report = check(path, sim.run_records(), sim.stats())
    assert row.run_id == record["run_id"] and row.status == "completed"
    assert any("written late" in (e["note"] or "") for e in events), events
    assert report.ok and report.server_runs == 2 and report.rows == 2, report
