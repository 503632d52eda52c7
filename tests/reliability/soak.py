"""The soak: one sweep under every simulator fault at once, checked against the server's records.

Used by ``tests/reliability/test_soak.py`` (a few hundred runs) and ``benchmarks/soak.py`` (more).
Invariants (all against ``sim.run_records()`` / ``sim.stats()`` / ``sim.requests()``):

1. every server run is in the ledger exactly once (``lost`` counts those missing);
2. each is bound to its own row: same idempotency key, technique and inputs (``wrong_bindings``);
3. no logical start was sent twice: one server run per variation at most, and every start POST
   the server saw carries the key of one ledger row (``duplicates``);
4. every row ends terminal or skipped (``unfinished`` counts the others, listed in ``stuck``);
5. the ledger's charges equal the server's, run by run and in total, to the cent (``cost_mismatch``);
6. the poller is alive, and its fault counts are shown by ``fl.status()``;
7. the key appears nowhere: ledger bytes, log records, reprs, status, DataFrames (``key_occurrences``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flora_nb import Flora
from flora_nb.sim import Faults
from tests.waiting import until

SLUG = "poster-studio"


def soak_faults(runs: int, cost: float) -> Faults:
    """Every fault at once; credits for about 80% of the runs (failed runs are refunded), so they run out near the end."""
    return Faults(error_rate=0.03, error_after_create_rate=0.03, drop_rate=0.03, latency=0.002,
                  rate_limit=20.0, run_failure_rate=0.1, credits=round(runs * cost * 0.8, 2),
                  max_concurrent_runs=24)


@dataclass
class SoakReport:
    """Figures of one soak."""

    runs_planned: int
    server_runs: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    duplicates: int = 0
    wrong_bindings: int = 0
    grouped: int = 0  # runs bound as part of a group of starts told apart only together (pairing unknown)
    lost: int = 0
    unfinished: int = 0
    stuck: list[str] = field(default_factory=list)
    cost_mismatch: float = 0.0
    charged_ledger: float = 0.0
    charged_server: float = 0.0
    key_occurrences: int = 0
    poller_alive: bool = False
    poller: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def problems(self) -> list[str]:
        """Each broken invariant, in words (empty when all hold)."""
        checks = [
            (self.lost == 0, f"{self.lost} server run(s) missing from the ledger"),
            (self.wrong_bindings == 0, f"{self.wrong_bindings} run(s) bound to the wrong row"),
            (self.duplicates == 0, f"{self.duplicates} start(s) sent twice"),
            (self.unfinished == 0, f"{self.unfinished} row(s) neither terminal nor skipped: {self.stuck[:5]}"),
            (self.cost_mismatch < 0.005, f"ledger and server charges differ by ${self.cost_mismatch:.4f}"),
            (self.key_occurrences == 0, f"the key appeared {self.key_occurrences} time(s)"),
            (self.poller_alive, "the poller thread is not running"),
        ]
        return [text for ok, text in checks if not ok]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage() + (str(record.exc_info[1]) if record.exc_info else ""))


def run_soak(runs: int, home: Path, *, seed: int = 0, speed: float = 400.0, timeout: float = 240.0) -> SoakReport:
    """Sweep ``runs`` variations under every fault, wait for the dust to settle, check everything."""
    report = SoakReport(runs_planned=runs)
    capture = _Capture()
    logger = logging.getLogger("flora_nb")
    logger.addHandler(capture)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    began = time.monotonic()
    try:
        with Flora.simulated(speed=speed, faults=Faults(), seed=seed, ledger_path=home / "ledger.sqlite", persist=False,
                             max_retries=3, confirm_above=None) as fl:  # a scripted soak means to spend
            tech = fl.technique(SLUG)
            fl.simulator.faults = soak_faults(runs, tech.run_cost or 0.0)
            sweep = fl.sweep(tech.technique_id, grid={"prompt": [f"soak {i}" for i in range(runs)]},
                             max_concurrency=24)
            sweep.wait(timeout)
            _settle(fl, time.monotonic() + timeout)
            fl.simulator.faults = Faults()  # the checks below read the server without faults
            _check(fl, report, capture)
            report.seconds = round(time.monotonic() - began, 1)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    return report


def _settle(fl: Flora, deadline: float) -> None:
    """Until nothing is tracked or being reconciled (final charges known), or the deadline (the checks say what is left)."""
    until(lambda: not (fl.poller.tracked or fl.poller.pending_intents), max(0.0, deadline - time.monotonic()),
          "nothing tracked or being reconciled", interval=0.05, fail=False)


def _check(fl: Flora, report: SoakReport, capture: _Capture) -> None:
    sim = fl.simulator
    records, stats = sim.run_records(), sim.stats()
    rows = fl.ledger.rows(fl.endpoint)
    by_run = {}
    for row in rows:
        if row.run_id is not None:
            by_run.setdefault(row.run_id, []).append(row)
    report.server_runs = len(records)
    report.requests = stats["requests_total"]
    for row in rows:
        report.rows[row.status] = report.rows.get(row.status, 0) + 1
    report.faults = _fault_counts(stats, rows)
    _check_bindings(report, records, by_run, rows)
    _check_duplicates(report, records, rows, sim.requests())
    _check_rows(report, rows)
    _check_costs(report, records, by_run, stats)
    status = fl.status()
    report.poller_alive = bool(status["poller_running"] and fl.poller._thread and fl.poller._thread.is_alive())
    report.poller = {k: status[k] for k in ("poller_cycles", "poller_errors", "requests_batch", "requests_single",
                                            "reconciled", "batch_fallbacks", "invalid_answers")}
    report.key_occurrences = _key_count(fl, capture, status)


def _fault_counts(stats: dict[str, Any], rows: list[Any]) -> dict[str, int]:
    return {
        "500_before_create": stats["errors_injected"],
        "500_after_create": stats["errors_after_create"],
        "dropped_answers": stats["drops"],
        "429_rate_limited": stats["rate_limited"],
        "slowed_requests": stats["requests_total"],
        "runs_failed_by_server": stats["runs_by_status"].get("failed", 0),
        "insufficient_credits": sum(1 for r in rows if r.error_code == "insufficient_credits"),
    }


def _check_bindings(report: SoakReport, records: list[dict], by_run: dict[str, list], rows: list[Any]) -> None:
    groups: dict[str, list[Any]] = {}
    for record in records:
        bound = by_run.get(record["run_id"], [])
        if not bound:
            report.lost += 1
            continue
        row = bound[0]
        report.duplicates += len(bound) - 1
        if (row.pairing or "").startswith("unknown"):  # told apart only as a group: checked as one below
            groups.setdefault(row.pairing, []).append(row)
            continue
        same = (row.idempotency_key == record["idempotency_key"] and row.technique_id == record["technique_id"]
                and {k: str(v) for k, v in row.inputs.items()} == record["inputs"])
        report.wrong_bindings += 0 if same else 1
    by_key = {r["idempotency_key"]: r for r in records}
    for pairing, members in groups.items():  # right when the group holds exactly the runs its starts made
        report.grouped += len(members)
        ids = set(pairing.split("ids ", 1)[1].split(" ", 1)[0].split(","))
        group = [row for row in rows if str(row.local_id) in ids]
        made = sorted(by_key[row.idempotency_key]["run_id"] for row in group if row.idempotency_key in by_key)
        held = sorted(row.run_id for row in group if row.run_id is not None)
        report.wrong_bindings += 0 if made == held else len(members)


def _check_duplicates(report: SoakReport, records: list[dict], rows: list[Any], requests: list[dict]) -> None:
    per_prompt: dict[str, int] = {}
    for record in records:
        prompt = record["inputs"].get("prompt", "")
        per_prompt[prompt] = per_prompt.get(prompt, 0) + 1
    report.duplicates += sum(n - 1 for n in per_prompt.values() if n > 1)
    keys = {row.idempotency_key for row in rows}
    posted = {r["idempotency_key"] for r in requests if r["method"] == "POST" and r["path"].endswith("/runs/technique")}
    report.duplicates += len(posted - keys)  # a start resent under a new key would show here


def _check_rows(report: SoakReport, rows: list[Any]) -> None:
    for row in rows:
        if row.status not in ("completed", "failed", "skipped"):
            report.unfinished += 1
            report.stuck.append(f"local {row.local_id}: {row.status} {row.error_code or ''} key={row.idempotency_key}")


def _check_costs(report: SoakReport, records: list[dict], by_run: dict[str, list], stats: dict[str, Any]) -> None:
    mismatch = 0.0
    for record in records:
        for row in by_run.get(record["run_id"], [])[:1]:
            mismatch += abs((row.charged_cost or 0.0) - (record["charged_cost"] or 0.0))  # unknown counts
    report.charged_ledger = round(sum(rows[0].charged_cost or 0.0 for rows in by_run.values()), 6)
    report.charged_server = round(stats["total_charged"], 6)
    report.cost_mismatch = round(max(mismatch, abs(report.charged_ledger - report.charged_server)), 6)


def _key_count(fl: Flora, capture: _Capture, status: dict[str, Any]) -> int:
    key = fl.simulator.api_key
    texts = capture.texts + [repr(fl), json.dumps(status, default=str), fl.runs().to_csv(), repr(fl.client)]
    found = sum(t.count(key) for t in texts)
    for path in fl.ledger.path.parent.glob(fl.ledger.path.name + "*"):
        found += path.read_bytes().count(key.encode())
    return found
