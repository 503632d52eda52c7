"""Engine benchmark (issue 9): noticing completion and failure, sweeps against their bound, launch cost.

Every figure is the median of --samples (>= 3) runs and is printed beside a baseline measured in
the same run. The simulator makes runs end early and late (Faults(duration_jitter=...)), as real
techniques do: an exact estimate is the best case for a poller that looks at the estimate.

p) requests per run and completion-detection lag (FLORA s: real s x speed), two shapes:
   together: 200 runs of a 20 s technique started at once, each taking 0.7-1.3 x its estimate;
   mixed:    a 200-run sweep (max_concurrency=50) whose runs take 0.5-1.5 x the estimate.
   Targets: together <= 1.2 requests/run, mixed <= 1.5; lag under about a second past the estimate.
   Baseline: the same session polling as v1 did (first look at the estimate, then every 2 s).
f) failure-detection lag on long runs: 20 runs of a 3,600 s technique that all fail (at 20-90 %
   of the run, or before starting), speed 200. Target: under a minute (p95). Baseline: v1 cadence.
s) sweeps against the concurrency bound, speed 1: 60 runs of 6 s, 20 concurrent allowed, every
   request taking 200 ms (Faults(latency=0.2)); the same with no latency (short waves). Bound =
   waves x (duration + the 1 s each run spends pending) / speed (also shown: against waves x
   duration alone, the bound issue 9 quoted). Target: <= 1.2 x the bound, no 429s.
   These ratios depend on how fast starts go out (parallel starts are built on the `engine` branch).
r) a 1,000-run sweep under a binding server limit (Faults(rate_limit=50)), no rate_limit= given:
   the share of requests answered 429 (target < 1 %). Baseline: the same with the rate not learnt.
l) launch cost per start while launching a sweep of 10, 1,000 and 10,000 variations (the 300 starts
   after the first 50; simulator in a child process). Target: the same at every size (ratio ~1).

Usage: python benchmarks/bench_engine.py [--parts pfsrl] [--samples 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from _common import TECH, catalog, pct, private_home, sim_process

import flora_nb._poller as poller_module
from flora_nb import Flora
from flora_nb.sim import Faults, FloraSimulator

TERMINAL = ("completed", "failed")


@dataclass
class Sample:
    per_run: float = float("nan")
    lag_p50: float = float("nan")  # FLORA seconds
    lag_p95: float = float("nan")
    wall: float = float("nan")
    share_429: float = float("nan")
    r429: int = 0


def med(samples: list[Sample], name: str) -> float:
    return statistics.median(getattr(s, name) for s in samples)


@contextlib.contextmanager
def v1_cadence() -> Iterator[None]:
    """The poller as v1 scheduled it: first look at the estimate, then every 2 s, no looks while running."""
    saved = (poller_module.FAST_SHARE, poller_module.WATCH_MIN_FACTOR)
    poller_module.FAST_SHARE, poller_module.WATCH_MIN_FACTOR = 1.0, 1e12
    try:
        yield
    finally:
        poller_module.FAST_SHARE, poller_module.WATCH_MIN_FACTOR = saved


def lags(fl: Flora, sim: FloraSimulator, speed: float) -> list[float]:
    done_at = {r["run_id"]: r["completed_at"] / 1000.0 for r in sim.run_records() if r["completed_at"]}
    out = []
    for row in fl.ledger.iter_raw(None, ("local_id", "run_id")):
        seen = next((e["at"] for e in fl.ledger.events(row[0]) if e["status"] in TERMINAL), None)
        if seen is not None and row[1] in done_at:
            out.append((seen - done_at[row[1]]) * speed)
    return out


def settle(fl: Flora, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while fl.poller.tracked and time.monotonic() < deadline:  # final charges
        time.sleep(0.05)


def polling_together(home: Path, speed: float, seed: int) -> Sample:
    n, duration = 200, 20.0
    fl = Flora.simulated(speed=speed, seed=seed, catalog=catalog(duration), faults=Faults(duration_jitter=0.3),
                         ledger_path=home / f"t{seed}.sqlite", persist=False)
    try:
        runs = [fl.run(TECH, inputs={"prompt": f"poster {i}"}) for i in range(n)]
        for run in runs:
            run.wait(timeout=60 + 3 * duration / speed)
        settle(fl, 30)
        assert fl.simulator is not None
        found = lags(fl, fl.simulator, speed)
        return Sample(fl.simulator.stats()["requests_total"] / n, pct(found, 50), pct(found, 95))
    finally:
        fl.close()


def polling_mixed(home: Path, speed: float, seed: int) -> Sample:
    n, duration = 200, 20.0
    fl = Flora.simulated(speed=speed, seed=seed, catalog=catalog(duration), faults=Faults(duration_jitter=0.5),
                         ledger_path=home / f"m{seed}.sqlite", persist=False)
    try:
        sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(n)]}, max_concurrency=50)
        sweep.wait(timeout=120 + 10 * n * duration / speed)
        settle(fl, 30)
        assert fl.simulator is not None
        found = lags(fl, fl.simulator, speed)
        return Sample(fl.simulator.stats()["requests_total"] / n, pct(found, 50), pct(found, 95))
    finally:
        fl.close()


def failure_lag(home: Path, speed: float, seed: int) -> Sample:
    n = 20
    fl = Flora.simulated(speed=speed, seed=seed, catalog=catalog(3600.0), faults=Faults(run_failure_rate=1.0),
                         ledger_path=home / f"f{seed}.sqlite", persist=False)
    try:
        runs = [fl.run(TECH, inputs={"prompt": f"poster {i}"}) for i in range(n)]
        for run in runs:
            run.wait(timeout=60 + 2 * 3600.0 / speed)
        assert fl.simulator is not None
        found = lags(fl, fl.simulator, speed)
        return Sample(fl.simulator.stats()["requests_total"] / n, pct(found, 50), pct(found, 95))
    finally:
        fl.close()


def sweep_wall(home: Path, n: int, duration: float, slots: int, latency: float, speed: float, seed: int,
               **faults: Any) -> Sample:
    fl = Flora.simulated(speed=speed, seed=seed, catalog=catalog(duration), ledger_path=home / f"s{seed}{n}.sqlite",
                         faults=Faults(latency=latency, max_concurrent_runs=slots, **faults), persist=False)
    try:
        began = time.perf_counter()
        sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(n)]}, max_concurrency=slots)
        sweep.wait(timeout=600)
        wall = time.perf_counter() - began
        assert sweep.counts == {"completed": n}, sweep.counts
        assert fl.simulator is not None
        stats = fl.simulator.stats()
        return Sample(stats["requests_total"] / n, wall=wall, r429=stats["rate_limited"],
                      share_429=stats["rate_limited"] / stats["requests_total"])
    finally:
        fl.close()


def rate_learnt(home: Path, seed: int, learn: bool, n: int = 1000, rate: float = 50.0) -> Sample:
    fl = Flora.simulated(speed=100.0, seed=seed, catalog=catalog(5.0), ledger_path=home / f"r{seed}{learn}.sqlite",
                         faults=Faults(rate_limit=rate), persist=False)
    try:
        fl.client.throttle.learn = learn
        began = time.perf_counter()
        sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(n)]}, max_concurrency=50)
        sweep.wait(timeout=900)
        wall = time.perf_counter() - began
        assert fl.simulator is not None
        stats = fl.simulator.stats()
        return Sample(stats["requests_total"] / n, wall=wall, r429=stats["rate_limited"],
                      share_429=stats["rate_limited"] / stats["requests_total"])
    finally:
        fl.close()


def launch_cost(home: Path, variations: int, seed: int, skip: int = 50, timed: int = 300) -> float:
    """Seconds per start over starts skip+1 .. skip+timed of a sweep of ``variations``."""
    with sim_process(1000.0, catalog(1.0), seed=seed) as (base_url, key):
        path = home / f"l{variations}_{seed}.sqlite"
        fl = Flora(api_key=key, base_url=base_url, ledger_path=path, poll_interval=(0.02, 0.05), resume=False)
        watch = sqlite3.connect(path)
        try:
            sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(variations)]},
                             max_concurrency=variations)
            target = min(variations, skip + timed)
            marks: dict[int, float] = {}
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                started = watch.execute("SELECT COUNT(*) FROM runs WHERE run_id IS NOT NULL").fetchone()[0]
                for mark in (min(skip, target // 5), target):
                    if started >= mark and mark not in marks:
                        marks[mark] = time.perf_counter()
                if started >= target:
                    break
                time.sleep(0.005)
            sweep.stop()
            first, last = min(skip, target // 5), target
            return (marks[last] - marks[first]) / (last - first)
        finally:
            watch.close()
            fl.close()


def samples(fn: Callable[[int], Sample | float], k: int) -> list[Any]:
    return [fn(seed) for seed in range(k)]


def part_p(home: Path, k: int) -> None:
    speed = 5.0
    print(f"p) polling, speed {speed:g}, medians of {k} samples; lag in FLORA s (completion seen - server completion)")
    for name, fn, target in (("together", polling_together, 1.2), ("mixed", polling_mixed, 1.5)):
        ours = samples(lambda s: fn(home, speed, s), k)
        with v1_cadence():
            base = samples(lambda s: fn(home, speed, 100 + s), k)
        for label, res in (("v1 cadence (baseline)", base), ("ours", ours)):
            print(f"   {name:<8} {label:<22}: {med(res, 'per_run'):5.2f} requests/run   lag p50 {med(res, 'lag_p50'):5.2f}"
                  f"  p95 {med(res, 'lag_p95'):5.2f} FLORA s   [per sample req/run: "
                  f"{', '.join(f'{s.per_run:.2f}' for s in res)}]")
        verdict = "met" if med(ours, "per_run") <= target else "MISSED"
        print(f"   {name:<8} ratio ours/v1: requests {med(ours, 'per_run') / med(base, 'per_run'):4.2f}, lag p95 "
              f"{med(ours, 'lag_p95') / med(base, 'lag_p95'):4.2f}   (target <= {target} requests/run: {verdict})")


def part_f(home: Path, k: int) -> None:
    speed = 200.0
    ours = samples(lambda s: failure_lag(home, speed, s), k)
    with v1_cadence():
        base = samples(lambda s: failure_lag(home, speed, 100 + s), k)
    print(f"f) failure lag, 20 runs of 3,600 FLORA s failing early to late, speed {speed:g}, medians of {k}")
    for label, res in (("v1 cadence (baseline)", base), ("ours", ours)):
        print(f"   {label:<22}: lag p50 {med(res, 'lag_p50'):7.1f}  p95 {med(res, 'lag_p95'):7.1f} FLORA s"
              f"   {med(res, 'per_run'):5.2f} requests/run")
    p95 = med(ours, "lag_p95")
    print(f"   ratio ours/v1 p95: {p95 / med(base, 'lag_p95'):5.3f}   (target p95 < 60 s: {'met' if p95 < 60 else 'MISSED'})")


def part_s(home: Path, k: int) -> None:
    n, duration, slots, speed = 60, 6.0, 20, 1.0
    waves = -(-n // slots)
    bound = waves * (duration + 1.0) / speed
    cap_only = waves * duration / speed
    print(f"s) {n} runs of {duration:g} s, {slots} concurrent allowed, speed {speed:g}: bound {waves} waves x "
          f"({duration:g} s + 1 s pending) = {bound:.1f} s (the cap alone, no pending: {cap_only:.1f} s); "
          f"medians of {k}")
    for latency in (0.2, 0.0):
        res = samples(lambda s: sweep_wall(home, n, duration, slots, latency, speed, s), k)
        wall = med(res, "wall")
        print(f"   latency {latency:g} s: wall {wall:6.2f} s = {wall / bound:4.2f} x the bound "
              f"({wall / cap_only:4.2f} x the cap alone)   "
              f"{med(res, 'per_run'):4.2f} requests/run, 429s {max(s.r429 for s in res)}   [walls "
              f"{', '.join(f'{s.wall:.1f}' for s in res)}]   (target <= 1.2: {'met' if wall <= 1.2 * bound else 'MISSED'})")


def part_r(home: Path, k: int) -> None:
    print(f"r) 1,000-run sweep under a server limit of 50 requests/s, no rate_limit= given; medians of {k}")
    for label, learn in (("rate not learnt (baseline)", False), ("rate learnt from 429s", True)):
        res = samples(lambda s: rate_learnt(home, s, learn), k)
        share = med(res, "share_429")
        print(f"   {label:<27}: {share * 100:5.2f} % of requests answered 429 ({int(med(res, 'r429'))} 429s), "
              f"{med(res, 'per_run'):4.2f} requests/run, wall {med(res, 'wall'):5.1f} s")
    print(f"   (target < 1 %: {'met' if share < 0.01 else 'MISSED'})")


def part_l(home: Path, k: int) -> None:
    print(f"l) launch cost per start (starts 51-350 of the sweep), simulator in a child process; medians of {k}")
    costs = {v: statistics.median(samples(lambda s: launch_cost(home, v, s), k)) for v in (10, 1000, 10000)}
    for v, c in costs.items():
        print(f"   {v:>6} variations: {c * 1000:6.2f} ms per start   ratio to 10 variations {c / costs[10]:5.2f}"
              f"{'   (baseline)' if v == 10 else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default="pfsrl")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    k = max(3, args.samples)
    parts = {"p": part_p, "f": part_f, "s": part_s, "r": part_r, "l": part_l}
    with private_home() as home:
        for key in args.parts:
            parts[key](home, k)


if __name__ == "__main__":
    main()
