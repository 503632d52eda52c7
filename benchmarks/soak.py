"""Soak benchmark: the reliability soak with a bigger N and several seeds, printing its figures.

Each seed runs one sweep of N variations (default 1000) of poster-studio on the simulator under
every fault at once (tests/reliability/soak.py: 500s before and after create, dropped answers,
429 bursts from a 20 req/s limit, 2 ms latency on every request, 10% failed runs, credits for
80% of the runs), then checks the invariants against the simulator's own records. It also runs
the hostile-server tests (tests/test_hostile.py) and counts the hostile answers they try.

Figures printed: runs, faults injected of each kind, hostile answers tried, duplicates, wrong
bindings, runs lost, rows unfinished, cost mismatch (USD), key occurrences, wall time. Exit
status 1 if any invariant broke (the report says which, and the seed reproduces it).

Usage: python benchmarks/soak.py [--runs N] [--seeds 1,2,3] [--no-hostile]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import private_home  # noqa: E402
from tests.reliability.soak import run_soak  # noqa: E402


def hostile_tests() -> tuple[int, int]:
    """(passed, failed) of tests/test_hostile.py, run in a child interpreter."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hostile.py"],
                         cwd=ROOT, capture_output=True, text=True)
    passed = re.search(r"(\d+) passed", out.stdout)
    failed = re.search(r"(\d+) failed", out.stdout)
    return int(passed.group(1)) if passed else 0, int(failed.group(1)) if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--no-hostile", action="store_true")
    args = parser.parse_args()
    totals: dict[str, float] = {}
    broken = []
    with private_home():
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="flora_soak_") as tmp:
                report = run_soak(args.runs, Path(tmp), seed=seed, timeout=600.0)
            print(f"seed {seed}: " + json.dumps(report.as_dict()), flush=True)
            broken += [f"seed {seed}: {p}" for p in report.problems()]
            figures = {"runs planned": report.runs_planned, "server runs": report.server_runs,
                       "requests": report.requests, **report.faults, "reconciled starts": report.poller["reconciled"],
                       "duplicates": report.duplicates, "wrong bindings": report.wrong_bindings,
                       "runs lost": report.lost, "rows unfinished": report.unfinished,
                       "key occurrences": report.key_occurrences, "seconds": report.seconds}
            for name, value in figures.items():
                totals[name] = totals.get(name, 0) + value
            totals["cost mismatch USD"] = max(totals.get("cost mismatch USD", 0.0), report.cost_mismatch)
            totals["charged USD (server)"] = totals.get("charged USD (server)", 0.0) + report.charged_server
    if not args.no_hostile:
        began = time.monotonic()
        passed, failed = hostile_tests()
        totals["hostile answers tried"] = passed + failed
        totals["hostile answers held"] = passed
        totals["hostile seconds"] = round(time.monotonic() - began, 1)
        if failed:
            broken.append(f"{failed} hostile-server test(s) failed")
    print(f"\nTotals over seeds {args.seeds}, {args.runs} runs each:")
    for name, value in totals.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {name:28s} {shown}")
    print("\nINVARIANTS HELD" if not broken else "\nBROKEN:\n  " + "\n  ".join(broken))
    return 0 if not broken else 1


if __name__ == "__main__":
    raise SystemExit(main())
