"""Polling benchmark: HTTP requests per run and completion-detection lag of a Flora session.

N runs (default 200) of a 20 FLORA-second technique are started together on the in-process
simulator (speed 10, so a run takes ~2 s real) and tracked until done. Each run takes 0.7-1.3 x
its estimate (Faults(duration_jitter=0.3), --jitter): an exact estimate would flatter a poller
that looks at the estimate. Medians of --samples (>= 3) fresh runs of each. Measured:
- requests per run: sim.stats()["requests_total"] / N (starts and catalog look-ups included);
- detection lag: the ledger event time at which the run became completed/failed minus the
  server's completed_at (run_records), p50/p95, in real and in FLORA seconds (x speed).
Baseline, same run, fresh simulator: a naive FloraClient that starts the same N runs and
polls each run's poll_url every 2 FLORA s (2/speed real) until terminal, from 16 threads.
Targets: ours <= 1.5 requests/run; ours p95 lag <= the session's max poll interval (5 FLORA s).

Usage: python benchmarks/bench_polling.py [--runs N] [--speed S] [--duration FLORA_SECONDS]
"""

from __future__ import annotations

import argparse
import heapq
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _common import TECH, catalog, pct, private_home

from flora_nb import Flora, FloraClient
from flora_nb.sim import Faults, FloraSimulator

TERMINAL = ("completed", "failed")
NAIVE_THREADS = 16


@dataclass
class Result:
    requests: int
    by_route: dict[str, int]
    lags: list[float]  # real seconds, client-seen minus server completion


def server_completion(sim: FloraSimulator) -> dict[str, float]:
    return {r["run_id"]: r["completed_at"] / 1000.0 for r in sim.run_records() if r["completed_at"] is not None}


def ours(n: int, speed: float, duration: float, home: Path, jitter: float = 0.0, seed: int = 0) -> Result:
    fl = Flora.simulated(speed=speed, seed=seed, catalog=catalog(duration), ledger_path=home / f"ours{seed}.sqlite",
                         persist=False, faults=Faults(duration_jitter=jitter))
    try:
        runs = [fl.run(TECH, inputs={"prompt": f"poster {i}"}) for i in range(n)]
        deadline = time.monotonic() + 30 + 3 * duration / speed
        for run in runs:
            run.wait(timeout=max(0.1, deadline - time.monotonic()))
        while fl.poller.tracked and time.monotonic() < deadline:  # let final charges settle
            time.sleep(0.05)
        assert fl.simulator is not None
        stats, done_at = fl.simulator.stats(), server_completion(fl.simulator)
        lags = []
        for run in runs:
            seen = next(e["at"] for e in fl.ledger.events(run.local_id) if e["status"] in TERMINAL)
            lags.append(seen - done_at[run.id])
        return Result(stats["requests_total"], stats["requests_by_route"], lags)
    finally:
        fl.close()


def naive(n: int, speed: float, duration: float, jitter: float = 0.0, seed: int = 0) -> Result:
    interval = 2.0 / speed
    with FloraSimulator(speed=speed, seed=seed, catalog=catalog(duration), faults=Faults(duration_jitter=jitter)) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        started = []
        for i in range(n):
            start = client.start_technique_run(TECH, sim.workspace_id, {"prompt": f"poster {i}"})
            started.append((time.monotonic() + interval, start.run_id, start.poll_url))
        seen: dict[str, float] = {}

        def worker(queue: list[tuple[float, str, str]]) -> None:  # while not done: sleep(2); poll
            heapq.heapify(queue)
            while queue:
                due, run_id, poll_url = heapq.heappop(queue)
                time.sleep(max(0.0, due - time.monotonic()))
                state = client.get_run(run_id, poll_url)
                if state.status in TERMINAL:
                    seen[run_id] = time.time()
                else:
                    heapq.heappush(queue, (time.monotonic() + interval, run_id, poll_url))

        threads = [threading.Thread(target=worker, args=(started[k::NAIVE_THREADS],)) for k in range(NAIVE_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats, done_at = sim.stats(), server_completion(sim)
        return Result(stats["requests_total"], stats["requests_by_route"], [seen[r] - done_at[r] for r in seen])


def median_result(results: list[Result]) -> Result:
    """The sample with the median requests total."""
    return sorted(results, key=lambda r: r.requests)[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs started together")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator speed (FLORA s per real s)")
    parser.add_argument("--duration", type=float, default=20.0, help="technique duration in FLORA seconds")
    parser.add_argument("--jitter", type=float, default=0.3, help="estimate error (simulator duration_jitter)")
    parser.add_argument("--samples", type=int, default=3, help="fresh runs of each (median reported, >= 3)")
    args = parser.parse_args()
    n, speed, k = args.runs, args.speed, max(3, args.samples)
    with private_home() as home:
        bases = [naive(n, speed, args.duration, args.jitter, s) for s in range(k)]
        mines = [ours(n, speed, args.duration, home, args.jitter, s) for s in range(k)]
    base, mine = median_result(bases), median_result(mines)
    print(f"requests/run per sample: naive {', '.join(f'{r.requests / n:.2f}' for r in bases)}; "
          f"ours {', '.join(f'{r.requests / n:.2f}' for r in mines)} (the median sample is shown)")
    max_poll = max(0.05, 5.0 / speed)  # the session's poll_interval max on the simulator
    print(f"{n} runs of a {args.duration:g} FLORA-s technique taking {1 - args.jitter:g}-{1 + args.jitter:g} x the "
          f"estimate, speed {speed:g} (1 real s = {speed:g} FLORA s)")
    rb, ro = base.requests / n, mine.requests / n
    print(f"naive client, poll every 2 FLORA s : {rb:6.2f} requests/run (baseline)  {base.by_route}")
    ideal = 1 + math.ceil((args.duration + 1.0) / 2.0)  # start + polls over pending (1 FLORA s) + duration
    if rb < ideal - 0.5:
        print(f"  (naive ideal is {ideal} requests/run: it could not keep its 2 FLORA s cadence on this machine)")
    verdict = "met" if ro <= 1.5 else "MISSED"
    print(f"Flora session                      : {ro:6.2f} requests/run   (target <= 1.5: {verdict})  {mine.by_route}")
    print(f"requests ratio ours/naive          : {ro / rb:6.3f}")
    for name, res in (("naive", base), ("ours ", mine)):
        p50, p95 = pct(res.lags, 50), pct(res.lags, 95)
        print(f"detection lag {name} p50 {p50:6.3f} s ({p50 * speed:5.2f} FLORA s)  "
              f"p95 {p95:6.3f} s ({p95 * speed:5.2f} FLORA s)  "
              f"min/max {min(res.lags) * speed:5.2f}/{max(res.lags) * speed:5.2f} FLORA s"
              f"  [{len(res.lags)} runs]")
    b95, o95 = pct(base.lags, 95), pct(mine.lags, 95)
    print(f"lag p95 ratio ours/naive           : {o95 / b95:6.2f}   (target: ours p95 <= {max_poll:.2f} s real"
          f" = {max_poll * speed:g} FLORA s: {'met' if o95 <= max_poll else 'MISSED'})")


if __name__ == "__main__":
    main()
