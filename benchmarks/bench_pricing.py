"""Pricing and refusing a 1,000,000-variation sweep: counted from the grid's shape, never built.

Ours: ``fl.sweep(grid=1000 x 1000)`` refused by ``confirm_above`` (ConfirmationRequired), and with
``confirm=True, budget=$1`` refused by the budget (BudgetExceededError): both price from the count.
Baseline, measured in the same run: building the input dicts the way a sweep plan does
(``_plan.expand``), which is what pricing cost before it was counted from the shape; measured on
100,000 variations (a tenth: the million takes minutes under tracemalloc) and scaled by 10 (it is linear).
Targets: under 2 s and 500 MB each (peak traced memory).
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import private_home

import flora_nb as fnb
from flora_nb._plan import expand

GRID = {"prompt": [f"p{i}" for i in range(1000)], "style": [f"s{i}" for i in range(1000)]}


def measured(work) -> tuple[float, float]:
    """Seconds and peak traced MB of one call."""
    tracemalloc.start()
    began = time.perf_counter()
    try:
        work()
    except fnb.FloraError:
        pass
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak


def main() -> int:
    with private_home() as home, fnb.Flora.simulated(speed=100.0, ledger_path=home / "l.sqlite",
                                                      confirm_above=10.0) as fl:
        fl.technique("poster-studio")  # the catalog lookup is not what is measured
        asked = measured(lambda: fl.sweep("poster-studio", grid=GRID))
        budget = measured(lambda: fl.sweep("poster-studio", grid=GRID, budget=1.0, confirm=True))
        sent = fl.simulator.stats()["runs_created"]
    tenth = {"prompt": GRID["prompt"], "style": GRID["style"][:100]}
    secs, mb = measured(lambda: expand(grid=tenth))
    base = (secs * 10, mb * 10)
    print("1,000,000-variation sweep, priced and refused (target: < 2 s and < 500 MB each)")
    print(f"  baseline: building the variations (x10)  : {base[0]:9.4f} s  {base[1]:8.2f} MB")
    for label, (secs, mb) in (("refused by confirm_above", asked), ("refused by budget=$1", budget)):
        print(f"  {label:<40} : {secs:9.4f} s  {mb:8.2f} MB   time ratio {secs / base[0]:.5f}, "
              f"memory ratio {mb / base[1]:.5f}  ({'met' if secs < 2 and mb < 500 else 'MISSED'})")
    print(f"  runs created on the server: {sent} (must be 0)")
    return 0 if sent == 0 and max(asked[0], budget[0]) < 2 and max(asked[1], budget[1]) < 500 else 1


if __name__ == "__main__":
    raise SystemExit(main())
