"""Pricing, refusing and dry-running a 1,000,000-variation sweep: counted from the grid's shape, never built.

Ours, on a 1000 x 1000 grid of jingle-writer ($0.06 a run), each timed with its peak traced memory:
``fl.sweep`` refused by ``confirm_above`` (ConfirmationRequired); with ``confirm=True`` refused by
``budget=$1`` and by a session budget of $5, the latter also with ``reuse=True`` (which validates
the grid and matches the ledger first); ``repeat=10**12`` with ``dry_run=True`` (InputError: over
1,000,000 runs); and the dry run itself, a ``SweepPlan`` read with ``head(10)``, ``plan[999_999]``
and its totals. Then the dry run again in a fresh process, by peak RSS growth (VmHWM, Linux).

Baseline, measured in the same run: building the variations as dicts (``itertools.product`` into
dicts, the least any plan that builds them does; the dry run did that and more before it was
lazy). Traced: 100,000 variations, scaled by 10 (linear; a million under tracemalloc takes long).
By RSS: the full 1,000,000 in a fresh process, set up like ours.
Targets: under 2 s and 500 MB each.

Usage: python benchmarks/bench_pricing.py
"""

from __future__ import annotations

import gc
import itertools
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import private_home

import flora_nb as fnb

TECH = "jingle-writer"  # prompt + style, both text, $0.06
GRID = {"prompt": [f"p{i}" for i in range(1000)], "style": [f"s{i}" for i in range(1000)]}


def measured(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Seconds and peak traced MB of one call, and what it returned (or the FloraError it raised)."""
    tracemalloc.start()
    began = time.perf_counter()
    try:
        result = work()
    except fnb.FloraError as exc:
        result = exc
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak, result


def build_dicts(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]


def read_plan(plan: Any) -> Any:
    """What a user reads of a large dry run: the first rows, the last run, the totals."""
    return plan.head(10), plan[len(plan) - 1], plan.estimated_total, plan.reusable_runs


def ours(home: Path) -> tuple[list[tuple[str, float, float]], int, Any]:
    import pandas  # noqa: F401  (loaded before measuring, as a notebook has it)

    rows = []
    with fnb.Flora.simulated(speed=100.0, ledger_path=home / "l.sqlite", confirm_above=10.0) as fl, \
            fnb.Flora.simulated(speed=100.0, ledger_path=home / "m.sqlite", budget=5.0) as capped:
        fl.technique(TECH)  # the catalog lookups are not what is measured
        capped.technique(TECH)
        cases: list[tuple[str, Callable[[], Any], type]] = [
            ("refused by confirm_above", lambda: fl.sweep(TECH, grid=GRID), fnb.ConfirmationRequired),
            ("refused by budget=$1", lambda: fl.sweep(TECH, grid=GRID, budget=1.0, confirm=True),
             fnb.BudgetExceededError),
            ("refused by the session budget of $5", lambda: capped.sweep(TECH, grid=GRID, confirm=True),
             fnb.BudgetExceededError),
            ("the same, reuse=True (validated, ledger matched)",
             lambda: capped.sweep(TECH, grid=GRID, confirm=True, reuse=True), fnb.BudgetExceededError),
            ("repeat=10**12, dry_run=True: refused",
             lambda: fl.sweep(TECH, grid={"prompt": ["a", "b"]}, repeat=10**12, dry_run=True), fnb.InputError),
        ]
        for label, work, expected in cases:
            secs, mb, result = measured(work)
            assert isinstance(result, expected), f"{label}: {result!r}"
            rows.append((label, secs, mb))
        secs, mb, plan = measured(lambda: fl.sweep(TECH, grid=GRID, dry_run=True))
        rows.append((f"dry run -> {type(plan).__name__} of {len(plan):,} runs", secs, mb))
        secs, mb, _ = measured(lambda: read_plan(plan))
        rows.append(("  then head(10), plan[999_999], totals", secs, mb))
        sent = sum(s.simulator.stats()["runs_created"] for s in (fl, capped))
    return rows, sent, plan


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process, MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def rss_child(what: str) -> None:
    """In a fresh process: peak RSS growth (MB) and seconds of the baseline or of our dry run, set up alike.

    The peak is VmHWM after resetting it (``/proc/self/clear_refs``), minus the RSS before: setting
    up (the simulator, pandas) may have peaked higher than what is measured, hiding it from ru_maxrss.
    """
    with private_home() as home, fnb.Flora.simulated(speed=100.0, ledger_path=home / "l.sqlite") as fl:
        fl.technique(TECH)
        import pandas  # noqa: F401  (loaded before measuring, as a notebook has it)

        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_mb("VmRSS")
        began = time.perf_counter()
        kept = build_dicts(GRID) if what == "baseline" else read_plan(fl.sweep(TECH, grid=GRID, dry_run=True))
        seconds = time.perf_counter() - began
        print(json.dumps({"seconds": seconds, "mb": _status_mb("VmHWM") - before, "kept": len(kept)}))


def in_child(what: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--rss", what], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    with private_home() as home:
        rows, sent, plan = ours(home)
    tenth = {"prompt": GRID["prompt"], "style": GRID["style"][:100]}
    secs, mb, _ = measured(lambda: build_dicts(tenth))
    base = (secs * 10, mb * 10)
    print(f"1,000,000-variation sweep ({TECH}, 1000 x 1000 grid): priced, refused, planned "
          "(target: < 2 s and < 500 MB each)")
    print(f"  {'baseline: the variations built as dicts (x10)':<52} : {base[0]:9.4f} s  {base[1]:9.2f} MB traced")
    met = True
    for label, secs, mb in rows:
        ok = secs < 2 and mb < 500
        met = met and ok
        print(f"  {label:<52} : {secs:9.4f} s  {mb:9.2f} MB traced   time ratio {secs / base[0]:.5f}, "
              f"memory ratio {mb / base[1]:.5f}  ({'met' if ok else 'MISSED'})")
    child_base, child_ours = in_child("baseline"), in_child("dry_run")
    ok = child_ours["seconds"] < 2 and child_ours["mb"] < 500
    met = met and ok
    print("  fresh processes, peak RSS growth (VmHWM reset before, minus VmRSS before):")
    print(f"  {'baseline: 1,000,000 variations built as dicts':<52} : {child_base['seconds']:9.4f} s  "
          f"{child_base['mb']:9.2f} MB")
    print(f"  {'dry run -> SweepPlan, head(10), last run, totals':<52} : {child_ours['seconds']:9.4f} s  "
          f"{child_ours['mb']:9.2f} MB      time ratio {child_ours['seconds'] / child_base['seconds']:.5f}, "
          f"memory ratio {child_ours['mb'] / max(child_base['mb'], 1e-9):.5f}  ({'met' if ok else 'MISSED'})")
    print(f"  runs created on the server: {sent} (must be 0); the plan: {plan!r}")
    return 0 if sent == 0 and met else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss":
        rss_child(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
