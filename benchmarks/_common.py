"""Helpers shared by the benchmark scripts (not a benchmark itself).

- ``private_home()``: a temp ``FLORA_NB_HOME`` so nothing lands in ``~/.flora_nb``;
- ``catalog()``: a one-technique simulator catalog (text prompt in, image out) of a given duration;
- ``sim_process()``: a simulator in a child process, so its CPU and memory are not the session's;
- ``pct()``: a percentile without numpy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

TECH = "tech_bench"
# Benchmarks are scripts that mean to spend (on the simulator): no "confirm above $10" question.
os.environ.setdefault("FLORA_NB_CONFIRM_ABOVE", "none")


@contextmanager
def private_home() -> Iterator[Path]:
    """Point FLORA_NB_HOME at a fresh temp dir (and drop FLORA_* settings) for the block."""
    saved = {k: os.environ.get(k) for k in ("FLORA_NB_HOME", "FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID")}
    with tempfile.TemporaryDirectory(prefix="flora_bench_") as home:
        os.environ["FLORA_NB_HOME"] = home
        for key in saved:
            if key != "FLORA_NB_HOME":
                os.environ.pop(key, None)
        try:
            yield Path(home)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def catalog(duration_seconds: float, run_cost: float = 0.04) -> list[dict[str, Any]]:
    """One text-prompt technique that takes ``duration_seconds`` FLORA seconds."""
    return [{
        "technique_id": TECH, "slug": "bench", "name": "Bench Poster", "description": "benchmark technique",
        "run_cost": run_cost, "duration_seconds": duration_seconds,
        "inputs": [{"id": "prompt", "name": "Prompt", "type": "text", "description": "prompt"}],
        "outputs": [{"id": "image", "name": "Image", "type": "imageUrl", "description": "image"}],
    }]


def scaled_poll_interval(speed: float) -> tuple[float, float]:
    """FLORA's 2-5 s poll rhythm divided by ``speed`` (what Flora.simulated() uses)."""
    return max(0.02, 2.0 / speed), max(0.05, 5.0 / speed)


_SIM_CODE = """
import json, sys
from flora_nb.sim import Faults, FloraSimulator
cfg = json.loads(sys.argv[1])
sim = FloraSimulator(speed=cfg["speed"], seed=cfg["seed"], catalog=cfg["catalog"], faults=Faults(**cfg["faults"]))
sim.start()
print(json.dumps({"base_url": sim.base_url, "api_key": sim.api_key}), flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
sim.stop()
"""


@contextmanager
def sim_process(speed: float, techniques: list[dict[str, Any]], faults: dict[str, Any] | None = None,
                seed: int = 0) -> Iterator[tuple[str, str]]:
    """Serve a FloraSimulator from a child process; yields (base_url, api_key)."""
    cfg = json.dumps({"speed": speed, "seed": seed, "catalog": techniques, "faults": faults or {}})
    proc = subprocess.Popen([sys.executable, "-c", _SIM_CODE, cfg], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield info["base_url"], info["api_key"]
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; NaN when empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
