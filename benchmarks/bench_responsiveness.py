"""Responsiveness benchmark: main-thread scheduling jitter while a Flora session tracks 500 runs.

The main thread runs ``time.sleep(0.001)`` in a loop for ~3 s; jitter = actual - 0.001 s,
p50/p99 in ms. Baseline: the same loop with no session, in the same process, measured first.
With a session: N runs (default 500) of a 40 FLORA-s technique at speed 10 (estimate 4 s real),
each taking 0.5-1.5 x its estimate (Faults(duration_jitter=0.5)), all running at once: during the
measurement the poller writes progress and completions for most of them (the count of rows
written during the loop is printed), the busy case rather than 500 runs waiting unchanged.
Two set-ups: the simulator in a child process (the session's own cost, as against live FLORA)
and in-process (Flora.simulated(), what the demo and notebooks on the simulator do; the
simulator's HTTP threads then share the GIL too). Target: p99 under 20 ms.

Usage: python benchmarks/bench_responsiveness.py [--runs N] [--seconds S] [--mode both|subprocess|inproc]
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path

from _common import TECH, catalog, pct, private_home, scaled_poll_interval, sim_process

from flora_nb import Flora
from flora_nb.sim import Faults

SPEED = 10.0
DURATION = 40.0  # FLORA seconds
JITTER = 0.5


def jitter_ms(seconds: float) -> list[float]:
    """Oversleep of each time.sleep(0.001) in a loop lasting ``seconds``, in ms."""
    out = []
    end = time.perf_counter() + seconds
    while (began := time.perf_counter()) < end:
        time.sleep(0.001)
        out.append((time.perf_counter() - began - 0.001) * 1e3)
    return out


def with_session(mode: str, n: int, seconds: float, home: Path) -> tuple[list[float], str]:
    faults = {"duration_jitter": JITTER}
    with ExitStack() as stack:
        if mode == "inproc":
            fl = Flora.simulated(speed=SPEED, seed=0, catalog=catalog(DURATION), faults=Faults(**faults),
                                 ledger_path=home / f"{mode}.sqlite", persist=False)
        else:
            base_url, key = stack.enter_context(sim_process(SPEED, catalog(DURATION), faults))
            fl = Flora(api_key=key, base_url=base_url, ledger_path=home / f"{mode}.sqlite",
                       poll_interval=scaled_poll_interval(SPEED), reconcile_grace=max(2.0, 60.0 / SPEED))
        stack.callback(fl.close)
        began = time.monotonic()
        for i in range(n):
            fl.run(TECH, inputs={"prompt": f"poster {i}"})
        start_secs = time.monotonic() - began
        time.sleep(max(0.0, began + 0.4 * DURATION / SPEED - time.monotonic()))  # the earliest runs near their end
        before = fl.status()
        loop_began = time.time()
        samples = jitter_ms(seconds)
        loop_ended = time.time()
        after = fl.status()
        changed = sum(1 for row in fl.ledger.iter_raw(None, ("updated_at",)) if loop_began <= row[0] <= loop_ended)
        polls = (after["requests_batch"] + after["requests_single"]
                 - before["requests_batch"] - before["requests_single"])
        note = (f"{n} starts took {start_secs:.1f} s; during the loop: {changed} of {n} rows written, "
                f"tracked {after['tracked']}, "
                f"poller cycles {after['poller_cycles'] - before['poller_cycles']}, poll requests {polls}, "
                f"poller errors {after['poller_errors']}")
        return samples, note


def line(name: str, samples: list[float]) -> str:
    return (f"{name:<34}: p50 {pct(samples, 50):6.3f} ms  p99 {pct(samples, 99):7.3f} ms  "
            f"max {max(samples):7.2f} ms  [{len(samples)} sleeps]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs tracked by the session")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each sleep loop")
    parser.add_argument("--mode", choices=("both", "subprocess", "inproc"), default="both")
    args = parser.parse_args()
    modes = ("subprocess", "inproc") if args.mode == "both" else (args.mode,)
    with private_home() as home:
        base = jitter_ms(args.seconds)
        print(line("no session (baseline)", base))
        b99 = pct(base, 99)
        for mode in modes:
            samples, note = with_session(mode, args.runs, args.seconds, home)
            p99 = pct(samples, 99)
            print(line(f"session, {args.runs} runs, sim {mode}", samples))
            print(f"{'':<34}  p99 ratio vs baseline {p99 / b99:6.2f}   (target p99 < 20 ms: "
                  f"{'met' if p99 < 20 else 'MISSED'})")
            print(f"{'':<34}  {note}")


if __name__ == "__main__":
    main()
