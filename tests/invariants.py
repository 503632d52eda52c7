"""The engine's invariants, checked against the server's own records (shared by tests and benchmarks).

A simulator in a process of its own (``SimProcess``) outlives any client process a test kills.
``check()`` compares a ledger with the server's run records and stats: no wrong binding, no
duplicate start, no server run missing from the ledger, charges equal to the cent, every row
terminal. A row bound as part of a group (``pairing`` "unknown among ...") is right when its
group as a whole holds exactly the runs its starts made.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flora_nb._ledger import Ledger, canonical_json

SIMULATOR = textwrap.dedent("""
    import json, sys
    from flora_nb.sim import Faults, FloraSimulator
    options = json.loads(sys.argv[1])
    faults = Faults(**options.pop("faults", {}))
    sim = FloraSimulator(faults=faults, **options).start()
    print(json.dumps({"base_url": sim.base_url, "api_key": sim.api_key}), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "records":
            print(json.dumps(sim.run_records()), flush=True)
        elif command == "stats":
            print(json.dumps(sim.stats()), flush=True)
        elif command == "faults":
            sim.faults = Faults(**json.loads(arg))
            print("{}", flush=True)
        else:
            break
    sim.stop()
""")


class SimProcess:
    """A FloraSimulator in a child process: ``records()``, ``stats()``, ``set_faults(**f)``."""

    def __init__(self, **options: Any):
        self._proc = subprocess.Popen([sys.executable, "-c", SIMULATOR, json.dumps(options)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(self._proc.stdout.readline())  # type: ignore[union-attr]
        self.base_url, self.api_key = info["base_url"], info["api_key"]

    def _ask(self, line: str) -> Any:
        self._proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        self._proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._proc.stdout.readline())  # type: ignore[union-attr]

    def records(self) -> list[dict[str, Any]]:
        return self._ask("records")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def set_faults(self, **faults: Any) -> None:
        self._ask("faults " + json.dumps(faults))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.write("stop\n")  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
            self._proc.wait(10)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Report:
    rows: int = 0
    server_runs: int = 0
    wrong_bindings: list[str] = field(default_factory=list)
    duplicate_starts: int = 0
    missing: list[str] = field(default_factory=list)
    charged_ledger: float = 0.0
    charged_server: float = 0.0
    not_terminal: list[str] = field(default_factory=list)
    exact: int = 0
    grouped: int = 0
    not_received: int = 0

    @property
    def ok(self) -> bool:
        return not (self.wrong_bindings or self.duplicate_starts or self.missing or self.not_terminal
                    or abs(self.charged_ledger - self.charged_server) >= 0.005)


def check(ledger_path: str | Path, records: list[dict[str, Any]], stats: dict[str, Any]) -> Report:
    """Every invariant of the engine, for one ledger against the server's records."""
    ledger = Ledger(ledger_path)
    try:
        rows = ledger.rows()
    finally:
        ledger.close()
    report = Report(rows=len(rows), server_runs=len(records))
    keys = [r["idempotency_key"] for r in records]
    report.duplicate_starts = len(keys) - len(set(keys))
    by_run = {row.run_id: row for row in rows if row.run_id is not None}
    by_key = {r["idempotency_key"]: r for r in records}
    groups: dict[str, list[Any]] = {}
    for record in records:
        row = by_run.get(record["run_id"])
        if row is None:
            report.missing.append(record["run_id"])
        elif row.pairing and row.pairing.startswith("unknown"):
            groups.setdefault(row.pairing, []).append(row)
        elif row.idempotency_key != record["idempotency_key"] or canonical_json(row.inputs) != canonical_json(
                record["inputs"]):
            report.wrong_bindings.append(f"row {row.local_id} holds {record['run_id']} of another start")
    for pairing, members in groups.items():  # a group is right when it holds exactly its own starts' runs
        ids = {int(i) for i in pairing.split("ids ", 1)[1].split(" ", 1)[0].split(",")}
        group_rows = [r for r in rows if r.local_id in ids]
        made = sorted(canonical_json(by_key[r.idempotency_key]["inputs"]) for r in group_rows if r.idempotency_key in by_key)
        held = sorted(canonical_json(by_run_record["inputs"]) for by_run_record in records
                      if by_run_record["run_id"] in {r.run_id for r in group_rows})
        if made != held:
            report.wrong_bindings.append(f"group {sorted(ids)} holds runs its starts did not make")
        report.grouped += len(members)
    for row in rows:
        if row.status not in ("completed", "failed", "skipped"):
            report.not_terminal.append(f"row {row.local_id}: {row.status} {row.error_code}")
        if row.error_code == "start_not_received":
            report.not_received += 1
            if row.idempotency_key in by_key and not (row.pairing or "").startswith("unknown"):
                report.wrong_bindings.append(f"row {row.local_id} said not received, but FLORA made its run")
        if row.pairing == "exact":
            report.exact += 1
    report.charged_ledger = round(sum(row.charged_cost or 0.0 for row in rows), 6)
    report.charged_server = round(stats["total_charged"], 6)
    return report
