"""`%load_ext flora_nb` cost in a fresh process, against IPython's own start-up in the same process.

Each sample is a new interpreter that creates an IPython InteractiveShell (the baseline: what
every notebook kernel pays anyway) and then runs `%load_ext flora_nb` (what we add). Target: the
extension loads in under 200 ms. Usage: python benchmarks/bench_magic.py [--samples N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t1 = time.perf_counter()
shell.run_line_magic("load_ext", "flora_nb")
t2 = time.perf_counter()
heavy = [m for m in ("pandas", "ipywidgets", "requests") if m in sys.modules]
print(json.dumps({"ipython": t1 - t0, "load_ext": t2 - t1, "heavy": heavy}))
"""


def sample() -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    sample()  # warm the OS file cache
    runs = [sample() for _ in range(args.samples)]
    ipython = statistics.median(r["ipython"] for r in runs)
    load = statistics.median(r["load_ext"] for r in runs)
    print(f"IPython start-up (InteractiveShell) : {ipython * 1e3:7.1f} ms (baseline, median of {args.samples})")
    print(f"%load_ext flora_nb                  : {load * 1e3:7.1f} ms   (target < 200 ms)")
    print(f"ratio load_ext / IPython start-up   : {load / ipython:7.2f}")
    print(f"heavy modules loaded by %load_ext   : {runs[-1]['heavy']}   (pandas/ipywidgets load on first use)")


if __name__ == "__main__":
    main()
