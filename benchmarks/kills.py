"""Long kill run (not in `make bench`: minutes): the binding promise across many SIGKILLed kernels.

K kernels (default 100) run one after another on one ledger against a simulator living in a
process of its own (speed 50, latency 10 ms, 10% of start answers dropped). Each kernel resumes
what the ledger holds (the last kernel's dead starts among them), sweeps 12 variations of one
technique with 6 concurrent starts, and is SIGKILLed once a random 1-10 more of its starts were
marked; every 10 kills a checking session resumes and settles the ledger. At the end one session
settles everything and the ledger is checked against the server's own records (run_records,
stats): wrong bindings, duplicate starts, server runs missing from the ledger, charged totals,
rows left non-terminal, and how many runs were bound exactly vs as a group (pairing unknown).

Usage: python benchmarks/kills.py [--kills K] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.invariants import SimProcess
from tests.test_binding_invariants import _kernel, _settle, _started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ledger = Path(tempfile.mkdtemp(prefix="flora-kills-")) / "ledger.sqlite"
    began = time.monotonic()
    with SimProcess(speed=50.0, seed=args.seed, faults={"latency": 0.01, "drop_rate": 0.1}) as sim:
        for kill in range(args.kills):
            before = _started(ledger) if ledger.exists() else 0
            kernel = _kernel(sim, ledger, f"k{kill}")
            while not kernel.stdout.readline().startswith("swp_"):
                pass
            target = before + rng.randint(1, 10)
            while _started(ledger) < target and kernel.poll() is None:
                time.sleep(0.005)
            os.kill(kernel.pid, signal.SIGKILL)
            kernel.wait(10)
            if (kill + 1) % 10 == 0:
                _settle(sim, ledger, timeout=60)
        report = _settle(sim, ledger, timeout=180)
    seconds = time.monotonic() - began
    print(f"kills: {args.kills}   rows: {report.rows}   server runs: {report.server_runs}   wall: {seconds:.0f} s")
    print(f"wrong bindings: {len(report.wrong_bindings)}   duplicate starts: {report.duplicate_starts}   "
          f"server runs missing from the ledger: {len(report.missing)}   rows not terminal: {len(report.not_terminal)}")
    print(f"charged: ledger ${report.charged_ledger:.2f} vs server ${report.charged_server:.2f}")
    print(f"lost starts resolved: {report.exact} exact, {report.grouped} as a group (pairing unknown), "
          f"{report.not_received} proved never received")
    if not report.ok:
        print("INVARIANTS BROKEN:", report.wrong_bindings[:5], report.missing[:5], report.not_terminal[:5])
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
