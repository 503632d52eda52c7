"""Import benchmark: `import flora_nb` in a fresh process must stay light.

Checks with ``python -X importtime -c "import flora_nb"`` which top-level packages the import
loads, and lists the heavy ones among them (pandas, numpy, ipywidgets, IPython, requests,
urllib3; the design forbids pandas and ipywidgets, and IPython would defeat a fast %load_ext).
Times the import as the median wall time of fresh processes running ``import flora_nb``
against ``python -c "pass"`` (the baseline), interleaved. Target: no heavy module loaded.

Usage: python benchmarks/bench_import.py [--processes N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "numpy", "ipywidgets", "IPython", "requests", "urllib3")
FORBIDDEN = ("pandas", "ipywidgets", "IPython")


def run(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)


def imported(stderr: str) -> dict[str, int]:
    """Module -> cumulative microseconds, from -X importtime output."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            found[name.strip()] = int(cumulative)
    return found


def wall(code: str) -> float:
    began = time.perf_counter()
    run(code)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=7, help="fresh processes per measurement")
    args = parser.parse_args()
    startup = imported(run("pass", "-X", "importtime").stderr)
    modules = {m: us for m, us in imported(run("import flora_nb", "-X", "importtime").stderr).items()
               if m not in startup}
    tops = sorted({m.split(".")[0] for m in modules})
    heavy = [h for h in HEAVY if h in tops]
    ours_tree = {m: us for m, us in modules.items() if m == "flora_nb" or m.startswith("flora_nb.")}
    run("pass"), run("import flora_nb")  # warm the OS file cache
    base, ours = [], []
    for _ in range(args.processes):
        base.append(wall("pass"))
        ours.append(wall("import flora_nb"))
    b, o = statistics.median(base), statistics.median(ours)
    print(f"modules added by import flora_nb  : {len(modules)} (beyond interpreter start-up): {tops}")
    print(f"flora_nb modules (cumulative us)  : {ours_tree}")
    print(f"heavy modules loaded              : {heavy}   (target []: "
          f"{'met' if not heavy else 'MISSED'}; forbidden by design: {list(FORBIDDEN)})")
    print(f"python -c pass                    : {b * 1e3:7.1f} ms (baseline, median of {args.processes})")
    print(f"python -c 'import flora_nb'       : {o * 1e3:7.1f} ms   (+{(o - b) * 1e3:.1f} ms)")
    print(f"ratio                             : {o / b:7.2f}")


if __name__ == "__main__":
    main()
