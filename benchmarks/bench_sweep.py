"""Sweep benchmark: sweep wall time against the server's limits, and the cost of planning a big grid.

1. Throughput: N runs (default 300) of a D FLORA-s technique (default 20) on the simulator at
   speed S (default 20), Faults(max_concurrent_runs=10, rate_limit=8.0): the rate limit binds
   (N / 8 s of starts alone is more than the waves take). Lower bound, real s:
   max(ceil(N/10) * D / S, N / 8), also shown with the 1 FLORA s each run spends `pending`
   counted per wave. Ours: Flora.simulated(..., rate_limit=8.0), then fl.sweep(...,
   max_concurrency=C).wait() for each C (default 10 and 20), and once more with no rate_limit=
   (the client learns the server's rate from its 429s); wall / bound (target <= 1.2), 429s (server
   stats) and requests per run, medians of --samples (>= 3). Baselines, same run,
   fresh simulator each, plain FloraClient without a client rate limit:
   (a) sequential: start one, poll its poll_url every 2 FLORA s until done, then the next; measured
       on the first K runs (default 15) and extrapolated linearly to N;
   (b) all at once: start all N, then poll each poll_url every 2 FLORA s from 16 threads (a poll
       still answered 429 after the client's own retries is tried again one interval later).
2. Planning: fl.sweep(tech, grid=G x G over two text inputs, dry_run=True), G=100 -> 10,000
   variations, on a ledger that already holds 100,000 completed runs (--history); median of R
   calls after a warm-up; target < 1 s. Baselines: itertools.product into a list of dicts, and
   pandas.DataFrame of that list.
3. Saved account (issue 20): a sweep of N runs (--cpu-runs, default 300 and 4,000) of a 1 FLORA-s
   technique at speed 100, max_concurrency=50, no server limits, on Flora.simulated() as every
   tutorial and demo uses it: its account saved to disk (in a temp FLORA_NB_HOME). Process CPU
   (this process: the session and its in-process simulator) per run and wall time, from the
   first start to the last run seen done; and how often the account's file was written. Baseline,
   same run: the same sweep with persist=False. Target: what saving adds stays flat from 300 to
   4,000 runs (the saved/unsaved CPU ratio at 4,000 within 1.2x of the ratio at 300; before the
   fix it went from 2.4 to 6.6). The unsaved CPU per run grows with the sweep on its own (the
   session, not the saving).

Usage: python benchmarks/bench_sweep.py [--runs N] [--prefix K] [--speed S] [--duration D]
       [--concurrency 10,20] [--grid G] [--repeat R] [--cpu-runs 300,4000] [--parts tps]
   e.g. a quick pass: --runs 60 --prefix 5 --grid 30 --cpu-runs 100,500
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from _common import TECH, catalog, median_seconds, private_home

from flora_nb import Flora, FloraClient, RateLimitError
from flora_nb.sim import Faults, FloraSimulator

SLOTS, RATE = 10, 8.0  # the server's max_concurrent_runs and requests/s per workspace (the rate binds)
PENDING = 1.0  # FLORA s the simulator keeps every run pending before it can take a slot
NAIVE_THREADS = 16
TERMINAL = ("completed", "failed")
PLAN_TECH = "tech_bench2"


@dataclass
class Outcome:
    wall: float  # real seconds, first start to last run seen done
    runs: int
    stats: dict[str, Any]  # server stats()
    span: float  # server: first run created -> last run completed, real s

    @property
    def per_run(self) -> float:
        return self.stats["requests_total"] / self.runs


def server_faults() -> Faults:
    return Faults(max_concurrent_runs=SLOTS, rate_limit=RATE)


def outcome(wall: float, runs: int, sim: FloraSimulator) -> Outcome:
    recs = sim.run_records()
    done = [r["completed_at"] for r in recs if r["completed_at"] is not None]
    span = (max(done) - min(r["created_at"] for r in recs)) / 1000.0 if done else float("nan")
    return Outcome(wall, runs, sim.stats(), span)


def ours(n: int, speed: float, duration: float, concurrency: int, home: Path, seed: int = 0,
         rate_limit: float | None = RATE) -> Outcome:
    fl = Flora.simulated(speed=speed, faults=server_faults(), seed=seed, catalog=catalog(duration),
                         ledger_path=home / f"ours_{concurrency}_{seed}_{rate_limit}.sqlite", rate_limit=rate_limit,
                         persist=False)
    try:
        began = time.perf_counter()
        sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(n)]}, max_concurrency=concurrency)
        sweep.wait(timeout=60 + 10 * n * duration / speed)
        wall = time.perf_counter() - began
        assert sweep.counts == {"completed": n}, sweep.counts
        assert fl.simulator is not None
        return outcome(wall, n, fl.simulator)
    finally:
        fl.close()


def patient(call: Callable[[], Any], interval: float) -> Any:
    """Call until it is not refused with 429 (the client already retried 3 times itself)."""
    while True:
        try:
            return call()
        except RateLimitError as exc:
            time.sleep(exc.retry_after or interval)


def naive_sequential(k: int, speed: float, duration: float) -> Outcome:
    interval = 2.0 / speed
    with FloraSimulator(speed=speed, faults=server_faults(), seed=0, catalog=catalog(duration)) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        began = time.perf_counter()
        for i in range(k):
            start = client.start_technique_run(TECH, sim.workspace_id, {"prompt": f"poster {i}"})
            while True:
                time.sleep(interval)
                if client.get_run(start.run_id, start.poll_url).status in TERMINAL:
                    break
        return outcome(time.perf_counter() - began, k, sim)


def naive_parallel(n: int, speed: float, duration: float) -> Outcome:
    interval = 2.0 / speed
    with FloraSimulator(speed=speed, faults=server_faults(), seed=0, catalog=catalog(duration)) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        began = time.perf_counter()
        started = []
        for i in range(n):
            start = patient(lambda: client.start_technique_run(TECH, sim.workspace_id, {"prompt": f"poster {i}"}),
                            interval)
            started.append((time.monotonic() + interval, start.run_id, start.poll_url))

        def worker(queue: list[tuple[float, str, str]]) -> None:  # while not done: sleep(2 FLORA s); poll
            heapq.heapify(queue)
            while queue:
                due, run_id, poll_url = heapq.heappop(queue)
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if client.get_run(run_id, poll_url).status in TERMINAL:
                        continue
                except RateLimitError:
                    pass
                heapq.heappush(queue, (time.monotonic() + interval, run_id, poll_url))

        threads = [threading.Thread(target=worker, args=(started[j::NAIVE_THREADS],)) for j in range(NAIVE_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcome(time.perf_counter() - began, n, sim)


def planning(size: int, repeat: int, home: Path, history: int = 100_000) -> None:
    tech = [{
        "technique_id": PLAN_TECH, "slug": "bench2", "name": "Bench Pair", "description": "two text inputs",
        "run_cost": 0.04, "duration_seconds": 20.0,
        "inputs": [{"id": "subject", "name": "Subject", "type": "text", "description": "subject"},
                   {"id": "style", "name": "Style", "type": "text", "description": "style"}],
        "outputs": [{"id": "image", "name": "Image", "type": "imageUrl", "description": "image"}],
    }]
    grid = {"subject": [f"subject {i}" for i in range(size)], "style": [f"style {j}" for j in range(size)]}
    fl = Flora.simulated(catalog=tech, ledger_path=home / "plan.sqlite", persist=False)
    try:
        fill_history(fl, history)
        began = time.perf_counter()
        plan = fl.sweep(PLAN_TECH, grid=grid, dry_run=True)  # also looks up the technique and workspace
        cold = time.perf_counter() - began
        assert len(plan) == size * size and (plan["status"] == "queued").all()
        mine = median_seconds(lambda: fl.sweep(PLAN_TECH, grid=grid, dry_run=True), repeat)
    finally:
        fl.close()

    def dicts() -> list[dict[str, Any]]:
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]

    base = median_seconds(dicts, repeat)
    frame = median_seconds(lambda: pd.DataFrame(dicts()), repeat)
    print(f"\nPlanning: dry-run sweep of a {size}x{size} grid = {size * size:,} variations (median of {repeat}),"
          f" ledger holding {history:,} completed runs")
    print(f"  itertools.product -> list of dicts      : {base:7.4f} s (baseline)")
    print(f"  ... + pandas.DataFrame of them          : {frame:7.4f} s (baseline)")
    print(f"  fl.sweep(dry_run=True)                  : {mine:7.4f} s   = {mine / base:5.1f}x dicts, "
          f"{mine / frame:5.1f}x dicts+DataFrame   (target < 1 s: {'met' if mine < 1.0 else 'MISSED'})")
    print(f"  first call (technique + workspace look-ups): {cold:.4f} s")


def fill_history(fl: Flora, n: int) -> None:
    """n completed runs of PLAN_TECH in the session's ledger, as earlier sweeps leave them."""
    ids = [fl.ledger.add_intent(endpoint=fl.endpoint, workspace_id="ws_sim_demo", idempotency_key=f"hist{i:08d}",
                                technique_id=PLAN_TECH, technique_name="Bench Pair", estimated_cost=0.04,
                                inputs={"subject": f"subject {i % 300}", "style": f"style {i % 7}"},
                                labels={"seed": i}) for i in range(n)]
    now = time.time()
    fl.ledger.update_many([(lid, {"run_id": f"run_h{lid:019x}", "status": "completed", "charged_cost": 0.04,
                                  "created_at": now, "started_at": now, "completed_at": now, "progress": 100.0,
                                  "outputs": [{"output_id": "image", "type": "imageUrl",
                                               "url": f"http://127.0.0.1:9/media/{lid}.png"}]}) for lid in ids])


def throughput(n: int, k: int, speed: float, duration: float, concurrencies: list[int], home: Path,
               samples: int = 3) -> None:
    waves = math.ceil(n / SLOTS)
    bound = max(waves * duration / speed, n / RATE)
    bound_pending = max(waves * (duration + PENDING) / speed, n / RATE)
    print(f"Throughput: {n} runs of a {duration:g} FLORA-s technique, speed {speed:g}; server: "
          f"max_concurrent_runs={SLOTS}, rate_limit={RATE:g} req/s")
    print(f"  bound = max({waves} waves x {duration:g} FLORA s, {n} starts / {RATE:g} req/s) = {bound:.2f} s real;"
          f" with {PENDING:g} FLORA s pending per wave: {bound_pending:.2f} s\n"
          f"  (pending per wave binds a client keeping only {SLOTS} in flight; a primed server queue pays it"
          f" once: {max((PENDING + waves * duration) / speed, n / RATE):.2f} s)")

    def show(name: str, res: Outcome, note: str = "") -> None:
        print(f"  {name:<34}: {res.wall:7.2f} s  ratio {res.wall / bound:5.2f}"
              f" (w/ pending {res.wall / bound_pending:5.2f})  429s {res.stats['rate_limited']:5d}"
              f"  req/run {res.per_run:5.2f}{note}")

    seq = naive_sequential(k, speed, duration)
    est = Outcome(seq.wall * n / k, k, seq.stats, seq.span)  # 429s and requests/run: of the k runs done
    show("(a) sequential, poll every 2 FLORA s", est,
         f"   EXTRAPOLATED: {k} runs took {seq.wall:.2f} s, x {n}/{k}")
    par = naive_parallel(n, speed, duration)
    show("(b) start all, poll every 2 FLORA s", par, f"   server busy {par.span:.2f} s")
    configs = [(f"ours, max_concurrency={c}", c, RATE) for c in concurrencies]
    configs.append((f"ours, max_concurrency={concurrencies[-1]}, no rate_limit=", concurrencies[-1], None))
    for name, c, rate in configs:
        runs = [ours(n, speed, duration, c, home, seed, rate) for seed in range(samples)]
        res = sorted(runs, key=lambda r: r.wall)[len(runs) // 2]  # the median sample
        verdict = "met" if res.wall <= 1.2 * bound else "MISSED"
        show(name, res, f"   server busy {res.span:.2f} s  (target <= 1.2: {verdict})  [walls "
                        f"{', '.join(f'{r.wall:.1f}' for r in runs)}; 429s {', '.join(str(r.stats['rate_limited']) for r in runs)}]")
        print(f"      speed-up vs (a) x{est.wall / res.wall:.1f}, vs (b) x{par.wall / res.wall:.2f};"
              f" requests {res.stats['requests_by_route']}")


def saved_sweep(n: int, persist: bool, home: Path, seed: int = 0) -> tuple[float, float, int]:
    """(process CPU s, wall s, file writes) of an n-run sweep on Flora.simulated(persist=persist)."""
    name = f"cpu_{n}_{seed}_{int(persist)}"
    fl = Flora.simulated(speed=100.0, seed=seed, catalog=catalog(1.0), persist=persist, name=name,
                         ledger_path=home / f"{name}.sqlite")
    try:
        assert fl.simulator is not None and (fl.simulator.state_path is not None) == persist
        cpu, began = time.process_time(), time.perf_counter()
        sweep = fl.sweep(TECH, grid={"prompt": [f"poster {i}" for i in range(n)]}, max_concurrency=50)
        sweep.wait(timeout=600 + n)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        assert sweep.counts == {"completed": n}, sweep.counts
        saver = fl.simulator._saver  # how often the account's file was written (None: not saved)
        return cpu, wall, saver.writes if saver is not None else 0
    finally:
        fl.close()


def saved_account(sizes: list[int], home: Path) -> None:
    print("\nSaved account: sweeps of 1 FLORA-s runs, speed 100, max_concurrency=50, on Flora.simulated();"
          " process CPU (session + in-process simulator) per run")
    ratio: dict[int, float] = {}
    for n in sizes:
        base_cpu, base_wall, _ = saved_sweep(n, False, home)
        cpu, wall, writes = saved_sweep(n, True, home)
        ratio[n] = cpu / base_cpu
        print(f"  {n:>6,} runs  unsaved (persist=False, baseline): {base_cpu / n * 1000:6.2f} ms/run, wall {base_wall:6.1f} s")
        print(f"  {n:>6,} runs  saved (the default)              : {cpu / n * 1000:6.2f} ms/run, wall {wall:6.1f} s"
              f"   ratio saved/unsaved: CPU {cpu / base_cpu:4.2f}, wall {wall / base_wall:4.2f}"
              f"   file written {writes} times")
    first, last = sizes[0], sizes[-1]
    growth = ratio[last] / ratio[first]
    print(f"  what saving adds, saved/unsaved CPU ratio: {ratio[first]:4.2f} at {first:,} runs, {ratio[last]:4.2f} at"
          f" {last:,}: growth {growth:4.2f}   (target flat, <= 1.2: {'met' if growth <= 1.2 else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="variations in the throughput sweep")
    parser.add_argument("--prefix", type=int, default=15, help="runs the sequential baseline really does")
    parser.add_argument("--speed", type=float, default=20.0, help="simulator speed (FLORA s per real s)")
    parser.add_argument("--duration", type=float, default=20.0, help="technique duration in FLORA seconds")
    parser.add_argument("--concurrency", default="10,20", help="comma-separated max_concurrency values")
    parser.add_argument("--grid", type=int, default=100, help="values per input in the planning grid")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats of each planning step")
    parser.add_argument("--parts", default="tps", help="t = throughput, p = planning, s = saved account")
    parser.add_argument("--cpu-runs", default="300,4000", help="comma-separated sweep sizes of the saved-account part")
    parser.add_argument("--samples", type=int, default=3, help="samples of each of our configurations (>= 3)")
    parser.add_argument("--history", type=int, default=100_000, help="completed runs in the planning ledger")
    args = parser.parse_args()
    with private_home() as home:
        if "t" in args.parts:
            throughput(args.runs, min(args.prefix, args.runs), args.speed, args.duration,
                       [int(c) for c in args.concurrency.split(",")], home, max(3, args.samples))
        if "p" in args.parts:
            planning(args.grid, args.repeat, home, args.history)
        if "s" in args.parts:
            saved_account([int(n) for n in args.cpu_runs.split(",")], home)


if __name__ == "__main__":
    main()
